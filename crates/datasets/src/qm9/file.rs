//! HDF5 storage of [`Qm9Dataset`] (documented for h5py users in `docs/data-format.md`):
//!
//! ```text
//! /index                  uint32  [N]          QM9 molecule index, strictly increasing
//! /n_atoms                uint8   [N]          real atoms per molecule, 1..29
//! /atomic_numbers         uint8   [N, 29]      H 1, C 6, N 7, O 8, F 9; 0 = padding
//! /positions              float32 [N, 29, 3]   Angstrom, not centred; 0 = padding
//! /splits/{train,val,test}      uint64         row indices of the standard split
//! /positional/{train,val,test}  uint64         the 19-atom rows of each split (Table 3)
//! root attributes: format_version (u64), dataset = "QM9", source = "qm9pack==1.0.3",
//!                  source_sha256 (str), max_atoms = 29, split_seed = 0
//! ```

use std::path::Path;

use hdf5::types::TypeDescriptor;

use super::{Qm9Dataset, MAX_ATOMS};
use crate::error::{DatasetError, Result};
use crate::h5::{Reader, Writer};
use crate::splits::{SplitName, Splits};

/// Version of the QM9 layout written by [`Qm9Dataset::write`]; [`Qm9Dataset::read`] accepts
/// exactly this version.
pub const QM9_FORMAT_VERSION: u64 = 1;

impl Qm9Dataset {
    /// Writes the data set to `path` atomically (`<path>.partial.<pid>.<thread>`, flushed, renamed); on
    /// error the partial file is removed and an existing file is untouched.
    ///
    /// # Errors
    /// As [`Qm9Dataset::validate_for`] before anything is written; [`DatasetError::Hdf5`],
    /// [`DatasetError::Io`].
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.validate_for(path)?;
        crate::atomic::write_atomic_with(path, |partial| self.write_hdf5(partial))
    }

    fn write_hdf5(&self, target: &Path) -> Result<()> {
        let file = hdf5::File::create(target).map_err(|source| DatasetError::Hdf5 {
            path: target.to_path_buf(),
            action: "creating the file".into(),
            source,
        })?;
        let w = Writer {
            file: &file,
            target,
        };
        let n = self.len();
        w.dataset(&file, "index", "/index", &[n], &self.index)?;
        w.dataset(&file, "n_atoms", "/n_atoms", &[n], &self.n_atoms)?;
        w.dataset(
            &file,
            "atomic_numbers",
            "/atomic_numbers",
            &[n, MAX_ATOMS],
            &self.atomic_numbers,
        )?;
        w.dataset(
            &file,
            "positions",
            "/positions",
            &[n, MAX_ATOMS, 3],
            &self.positions,
        )?;
        for (group_name, splits) in [("splits", &self.splits), ("positional", &self.positional)] {
            let group = file
                .create_group(group_name)
                .map_err(|source| DatasetError::Hdf5 {
                    path: target.to_path_buf(),
                    action: format!("creating /{group_name}"),
                    source,
                })?;
            for name in SplitName::ALL {
                let idx: Vec<u64> = splits.get(name).iter().map(|&i| i as u64).collect();
                let full = format!("/{group_name}/{}", name.as_str());
                w.dataset(&group, name.as_str(), &full, &[idx.len()], &idx)?;
            }
        }
        w.u64_attr("format_version", QM9_FORMAT_VERSION)?;
        w.string_attr("dataset", "QM9")?;
        w.string_attr("source", super::source::QM9PACK_REQUIREMENT)?;
        w.string_attr("source_sha256", &self.source_sha256)?;
        w.u64_attr("max_atoms", MAX_ATOMS as u64)?;
        w.u64_attr("split_seed", u64::from(super::split::QM9_SPLIT_SEED))?;
        file.close().map_err(|source| DatasetError::Hdf5 {
            path: target.to_path_buf(),
            action: "closing the file".into(),
            source,
        })
    }

    /// Reads and validates a file written by [`Qm9Dataset::write`].
    ///
    /// # Errors
    /// [`DatasetError::Io`] when `path` does not exist; [`DatasetError::NotHdf5`] when it is not
    /// readable HDF5; [`DatasetError::UnsupportedFormatVersion`],
    /// [`DatasetError::MissingAttribute`], [`DatasetError::MissingDataset`],
    /// [`DatasetError::WrongDtype`], [`DatasetError::WrongShape`], [`DatasetError::InvalidValue`]
    /// (e.g. `dataset` is not "QM9"), and the errors of [`Qm9Dataset::validate_for`], each naming
    /// the file and the object.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = crate::h5::open_hdf5(path)?;
        let r = Reader { file: &file, path };
        r.expect_format_version(QM9_FORMAT_VERSION)?;
        let kind = r.string_attr("dataset")?;
        if kind != "QM9" {
            return Err(DatasetError::InvalidValue {
                path: path.to_path_buf(),
                object: "@dataset".into(),
                value: kind,
                reason: "expected \"QM9\"".into(),
            });
        }
        let source_sha256 = r.string_attr("source_sha256")?;

        let index_ds = r.dataset(&file, "index", "/index")?;
        r.expect_shape_1d(&index_ds, "/index", None)?;
        let n = index_ds.shape()[0];
        let index: Vec<u32> = read_int(&r, &index_ds, "/index", &[n])?;
        let n_atoms: Vec<u8> = read_int(
            &r,
            &r.dataset(&file, "n_atoms", "/n_atoms")?,
            "/n_atoms",
            &[n],
        )?;
        let atomic_numbers: Vec<u8> = read_int(
            &r,
            &r.dataset(&file, "atomic_numbers", "/atomic_numbers")?,
            "/atomic_numbers",
            &[n, MAX_ATOMS],
        )?;
        let pos = r.dataset(&file, "positions", "/positions")?;
        r.expect_float(&pos, "/positions")?;
        expect_shape(&r, &pos, "/positions", &[n, MAX_ATOMS, 3])?;
        let positions: Vec<f32> = r.read_raw(&pos, "/positions", n)?;

        let mut split_sets = Vec::new();
        for group_name in ["splits", "positional"] {
            if !file.link_exists(group_name) {
                return Err(DatasetError::MissingDataset {
                    path: path.to_path_buf(),
                    dataset: format!("/{group_name}/train"),
                });
            }
            let group = file
                .group(group_name)
                .map_err(r.hdf5_err(format!("opening group /{group_name}")))?;
            let mut s = Splits::default();
            for name in SplitName::ALL {
                let full = format!("/{group_name}/{}", name.as_str());
                let ds = r.dataset(&group, name.as_str(), &full)?;
                let idx = r.indices(&ds, &full, n)?;
                match name {
                    SplitName::Train => s.train = idx,
                    SplitName::Val => s.val = idx,
                    SplitName::Test => s.test = idx,
                }
            }
            split_sets.push(s);
        }
        let positional = split_sets.pop().unwrap_or_default();
        let splits = split_sets.pop().unwrap_or_default();
        let ds = Qm9Dataset {
            index,
            n_atoms,
            atomic_numbers,
            positions,
            splits,
            positional,
            source_sha256,
        };
        ds.validate_for(path)?;
        Ok(ds)
    }
}

fn expect_shape(r: &Reader<'_>, ds: &hdf5::Dataset, full: &str, shape: &[usize]) -> Result<()> {
    if ds.shape() == shape {
        return Ok(());
    }
    Err(DatasetError::WrongShape {
        path: r.path.to_path_buf(),
        object: full.into(),
        expected: format!("{shape:?} (N from /index)"),
        found: ds.shape().iter().map(|&s| s as u64).collect(),
    })
}

/// Reads an integer dataset of `shape` as `T` (HDF5 converts between integer widths).
fn read_int<T: hdf5::H5Type>(
    r: &Reader<'_>,
    ds: &hdf5::Dataset,
    full: &str,
    shape: &[usize],
) -> Result<Vec<T>> {
    match r.dtype(ds, full)? {
        TypeDescriptor::Unsigned(_) | TypeDescriptor::Integer(_) => {}
        other => return Err(r.wrong_dtype(full.into(), "an integer type", &other)),
    }
    expect_shape(r, ds, full, shape)?;
    r.read_raw(ds, full, shape[0])
}

#[cfg(test)]
mod tests {
    use super::super::RawMolecule;
    use super::*;

    fn small() -> Qm9Dataset {
        let molecules = vec![
            RawMolecule {
                index: 5,
                atomic_numbers: vec![8, 1, 1],
                positions: vec![[0.0, 0.0, 0.1], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
            },
            RawMolecule {
                index: 2,
                atomic_numbers: vec![6, 1, 1, 1, 1],
                positions: vec![[0.5; 3]; 5],
            },
        ];
        let splits = Splits {
            train: vec![0],
            val: vec![],
            test: vec![1],
        };
        Qm9Dataset::from_molecules(molecules, Some(splits), "abc").unwrap()
    }

    #[test]
    fn round_trip_sorted_and_padded() {
        let ds = small();
        assert_eq!(ds.index, vec![2, 5]);
        assert_eq!(ds.molecule_atomic_numbers(1).unwrap(), &[8, 1, 1]);
        assert_eq!(ds.atomic_numbers[MAX_ATOMS + 3], 0);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("qm9.h5");
        ds.write(&p).unwrap();
        let back = Qm9Dataset::read(&p).unwrap();
        assert_eq!(back, ds);
        assert!(!back.is_complete());
    }

    #[test]
    fn truncated_or_foreign_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("qm9.h5");
        small().write(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        assert!(Qm9Dataset::read(&p).is_err());
        std::fs::write(&p, b"not hdf5").unwrap();
        assert!(matches!(
            Qm9Dataset::read(&p),
            Err(DatasetError::NotHdf5 { .. })
        ));
        let mut bad = small();
        bad.atomic_numbers[2] = 3;
        assert!(bad.write(&p).is_err());
    }
}
