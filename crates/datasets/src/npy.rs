//! Import of the literature's `.npy` sample files (e.g. the DEM repository's
//! `train_split_DW4.npy`, float32 `[100000, 8]`).

use std::path::Path;

use npyz::{NpyFile, Order, TypeChar};

use crate::error::{DatasetError, Result};
use crate::particles::{ParticleDataset, Source};
use crate::splits::Splits;
use crate::system::System;

/// Reads positions from a `.npy` file of `n_particles` particles in `n_dims` dimensions.
///
/// Accepted: element type float32 or float64 (either byte order), shape `[N, M * n]`
/// (coordinates flattened particle-major: `x0, y0, x1, y1, …`) or `[N, M, n]`, C or Fortran
/// order. Returns float32 `[N, M, n]` row-major (float64 input is rounded to nearest), positions
/// unchanged (not centred).
///
/// # Errors
/// [`DatasetError::Io`] when the file cannot be opened; [`DatasetError::Npy`] when it is not a
/// parseable `.npy` file, its element type is not float32/float64, or its data is truncated;
/// [`DatasetError::WrongShape`] (object `array`) for any other shape;
/// [`DatasetError::NonFinite`] (dataset `array`) for NaN or infinite values.
pub fn read_npy_positions(
    path: impl AsRef<Path>,
    n_particles: usize,
    n_dims: usize,
) -> Result<Vec<f32>> {
    let path = path.as_ref();
    let npy_err = |reason: String| DatasetError::Npy {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        action: "opening the .npy file".into(),
        source,
    })?;
    let npy = NpyFile::new(std::io::BufReader::new(file))
        .map_err(|e| npy_err(format!("unreadable header: {e}")))?;

    let shape: Vec<u64> = npy.shape().to_vec();
    let (m, n) = (n_particles as u64, n_dims as u64);
    let n_samples = match shape.as_slice() {
        [rows, cols] if *cols == m * n && m * n > 0 => *rows,
        [rows, a, b] if *a == m && *b == n && m * n > 0 => *rows,
        _ => {
            return Err(DatasetError::WrongShape {
                path: path.to_path_buf(),
                object: "array".into(),
                expected: format!("[N, {}] or [N, {m}, {n}]", m * n),
                found: shape.clone(),
            })
        }
    };
    let n_samples = usize::try_from(n_samples)
        .map_err(|_| npy_err(format!("{n_samples} rows do not fit in memory")))?;

    let dtype = npy.dtype();
    let type_str = match &dtype {
        npyz::DType::Plain(t) => t.clone(),
        _ => {
            return Err(npy_err(format!(
                "element type {} is not float32/float64",
                dtype.descr()
            )))
        }
    };
    // Check the size before reading, so that a corrupt header cannot make us allocate wildly.
    let item_size = type_str.size_field();
    let file_len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let data_bytes = (n_samples as u128) * (m * n) as u128 * item_size as u128;
    if data_bytes > file_len as u128 {
        return Err(npy_err(format!(
            "truncated: the header promises {data_bytes} bytes of data, the file has {file_len} bytes"
        )));
    }
    let fortran = npy.order() == Order::Fortran;
    let data: Vec<f32> = match (type_str.type_char(), type_str.size_field()) {
        (TypeChar::Float, 4) => npy.into_vec::<f32>(),
        (TypeChar::Float, 8) => npy
            .into_vec::<f64>()
            .map(|v| v.into_iter().map(|x| x as f32).collect()),
        _ => {
            return Err(npy_err(format!(
                "element type {type_str} is not float32/float64"
            )))
        }
    }
    .map_err(|e| npy_err(format!("reading the data: {e}")))?;
    let per = n_particles * n_dims;
    if data.len() != n_samples * per {
        return Err(npy_err(format!(
            "data holds {} values, the header promises {}",
            data.len(),
            n_samples * per
        )));
    }
    let data = if fortran {
        match shape.as_slice() {
            [_, cols] => fortran_to_c(&data, n_samples, *cols as usize, 1),
            _ => fortran_to_c(&data, n_samples, n_particles, n_dims),
        }
    } else {
        data
    };
    if let Some(index) = data.iter().position(|v| !v.is_finite()) {
        return Err(DatasetError::NonFinite {
            path: path.to_path_buf(),
            dataset: "array".into(),
            index,
        });
    }
    Ok(data)
}

/// Reorders a Fortran-order array of shape `[rows, a, b]` (a 2-D `[rows, a]` file is passed as
/// `b = 1`) to C order. Fortran order puts element `(r, i, j)` at `r + rows * (i + a * j)`; C
/// order at `(r * a + i) * b + j`.
fn fortran_to_c(data: &[f32], rows: usize, a: usize, b: usize) -> Vec<f32> {
    let mut out = vec![0f32; data.len()];
    for r in 0..rows {
        for i in 0..a {
            for j in 0..b {
                out[(r * a + i) * b + j] = data[r + rows * (i + a * j)];
            }
        }
    }
    out
}

impl ParticleDataset {
    /// Imports a literature `.npy` file of `system` samples: positions via
    /// [`read_npy_positions`], energies recomputed with the system's energy function (float64 on
    /// the float32 positions; none for a system without one), splits by the paper's tail rule (`Splits::tail(N, 1000, 1000)`),
    /// source `imported:<file name>`.
    ///
    /// # Errors
    /// As [`read_npy_positions`]; [`DatasetError::TooFewSamples`] when the file has fewer than
    /// 2,001 samples (use [`read_npy_positions`] and [`ParticleDataset::new`] for other splits).
    pub fn import_npy(path: impl AsRef<Path>, system: System) -> Result<Self> {
        let path = path.as_ref();
        let positions = read_npy_positions(path, system.n_particles(), system.n_dims())?;
        let n = positions.len() / (system.n_particles() * system.n_dims());
        let splits = Splits::tail(n, 1000, 1000)?;
        let file_name = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut ds = ParticleDataset::new(
            system.name(),
            system.n_particles(),
            system.n_dims(),
            positions,
            None,
            splits,
            Source::Imported { file_name },
        )?;
        if let Some(energy) = system.energy() {
            ds.compute_energies(energy.as_ref())?;
        }
        Ok(ds)
    }
}
