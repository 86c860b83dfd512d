//! HDF5 storage of [`ParticleDataset`] (layout version [`FORMAT_VERSION`], documented for h5py
//! users in `docs/data-format.md`).
//!
//! ```text
//! /positions        float32 [N, M, n]   not centred, reduced units
//! /energies         float64 [N]         optional
//! /splits/train     uint64  [N_train]   indices into [0, N)
//! /splits/val       uint64  [N_val]
//! /splits/test      uint64  [N_test]
//! root attributes:  format_version (u64), system (str), n_particles (u64), n_dims (u64),
//!                   source (str: "metropolis" | "imported:<file name>" | other);
//!                   when source = "metropolis" also proposal_std, init_std, acceptance_rate (f64),
//!                   n_chains, burn_in, thin, seed (u64)
//! ```
//!
//! Readers are lenient where nothing is lost: any float type for `/positions` and `/energies`,
//! any integer type for the splits and integer attributes, variable-length ASCII or UTF-8
//! strings. Everything else that deviates is a typed [`DatasetError`] naming the file and object.

use std::path::Path;

use hdf5::types::{TypeDescriptor, VarLenAscii, VarLenUnicode};

use crate::error::{DatasetError, Result};
use crate::mcmc::MetropolisConfig;
use crate::particles::{ParticleDataset, Source};
use crate::splits::{SplitName, Splits};

/// Version of the layout written by [`ParticleDataset::write`]; [`ParticleDataset::read`]
/// accepts exactly this version.
pub const FORMAT_VERSION: u64 = 1;

impl ParticleDataset {
    /// Writes the data set to the HDF5 file `path` atomically: validates, writes
    /// `<path>.partial.<pid>.<thread>`, flushes it to disk, then renames it over `path`. On error the partial
    /// file is removed and an existing file at `path` is left untouched. The parent directory
    /// must exist.
    ///
    /// # Errors
    /// As [`ParticleDataset::validate_for`] (labelled with `path`) before anything is written;
    /// [`DatasetError::Hdf5`] when the HDF5 library fails; [`DatasetError::Io`] when syncing or
    /// renaming fails; [`DatasetError::InvalidValue`] for a `system` or `source` string with an
    /// interior NUL.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.validate_for(path)?;
        crate::atomic::write_atomic_with(path, |partial| self.write_hdf5(partial))
    }

    /// Reads and validates a data set written by [`ParticleDataset::write`] (or by h5py
    /// following `docs/data-format.md`).
    ///
    /// # Errors
    /// [`DatasetError::Io`] when `path` does not exist; [`DatasetError::NotHdf5`] when it is
    /// not a readable HDF5 file (truncated, garbage); [`DatasetError::MissingAttribute`],
    /// [`DatasetError::MissingDataset`], [`DatasetError::WrongDtype`],
    /// [`DatasetError::WrongShape`] (e.g. `/positions` not `[N, n_particles, n_dims]`),
    /// [`DatasetError::UnsupportedFormatVersion`], [`DatasetError::InvalidValue`],
    /// [`DatasetError::SplitIndexOutOfRange`], [`DatasetError::NonFinite`] (NaN or infinite
    /// positions or energies), each naming the file and the object; [`DatasetError::Hdf5`] for
    /// other library failures.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = open_hdf5(path)?;
        let r = Reader { file: &file, path };
        r.expect_format_version(FORMAT_VERSION)?;
        let system = r.string_attr("system")?;
        let n_particles = r.usize_attr("n_particles")?;
        let n_dims = r.usize_attr("n_dims")?;
        crate::particles::check_counts(path, n_particles, n_dims)?;
        let source = r.source()?;

        let pos = r.dataset(&file, "positions", "/positions")?;
        r.expect_float(&pos, "/positions")?;
        let shape = pos.shape();
        let n = match shape.as_slice() {
            [n, m, d] if *m == n_particles && *d == n_dims => *n,
            _ => {
                return Err(DatasetError::WrongShape {
                    path: path.to_path_buf(),
                    object: "/positions".into(),
                    expected: format!(
                        "[N, {n_particles}, {n_dims}] (n_particles, n_dims from the attributes)"
                    ),
                    found: shape.iter().map(|&s| s as u64).collect(),
                })
            }
        };
        let positions: Vec<f32> = r.read_raw(&pos, "/positions", n)?;

        let energies = if file.link_exists("energies") {
            let ds = r.dataset(&file, "energies", "/energies")?;
            r.expect_float(&ds, "/energies")?;
            r.expect_shape_1d(&ds, "/energies", Some(n))?;
            Some(r.read_raw::<f64>(&ds, "/energies", 1)?)
        } else {
            None
        };

        if !file.link_exists("splits") {
            return Err(DatasetError::MissingDataset {
                path: path.to_path_buf(),
                dataset: "/splits/train".into(),
            });
        }
        let group = file.group("splits").map_err(|source| DatasetError::Hdf5 {
            path: path.to_path_buf(),
            action: "opening group /splits".into(),
            source,
        })?;
        let mut splits = Splits::default();
        for name in SplitName::ALL {
            let full = format!("/splits/{}", name.as_str());
            let ds = r.dataset(&group, name.as_str(), &full)?;
            let idx = r.indices(&ds, &full, n)?;
            match name {
                SplitName::Train => splits.train = idx,
                SplitName::Val => splits.val = idx,
                SplitName::Test => splits.test = idx,
            }
        }

        let source = match source {
            Source::Metropolis {
                mut config,
                acceptance_rate,
            } => {
                config.n_samples = n;
                Source::Metropolis {
                    config,
                    acceptance_rate,
                }
            }
            s => s,
        };
        let ds = ParticleDataset {
            system,
            n_particles,
            n_dims,
            positions,
            energies,
            splits,
            source,
        };
        ds.validate_for(path)?;
        Ok(ds)
    }

    /// Writes all datasets and attributes into a fresh file at `target` (truncating it).
    fn write_hdf5(&self, target: &Path) -> Result<()> {
        let h = |action: &str| {
            let target = target.to_path_buf();
            let action = action.to_string();
            move |source| DatasetError::Hdf5 {
                path: target,
                action,
                source,
            }
        };
        let file = hdf5::File::create(target).map_err(h("creating the file"))?;
        let n = self.len();

        let pos = file
            .new_dataset::<f32>()
            .shape([n, self.n_particles, self.n_dims])
            .create("positions")
            .map_err(h("creating /positions"))?;
        if n > 0 {
            pos.write_raw(&self.positions)
                .map_err(h("writing /positions"))?;
        }
        if let Some(e) = &self.energies {
            let ds = file
                .new_dataset::<f64>()
                .shape([e.len()])
                .create("energies")
                .map_err(h("creating /energies"))?;
            if !e.is_empty() {
                ds.write_raw(e).map_err(h("writing /energies"))?;
            }
        }
        let group = file.create_group("splits").map_err(h("creating /splits"))?;
        for name in SplitName::ALL {
            let idx: Vec<u64> = self.splits.get(name).iter().map(|&i| i as u64).collect();
            let full = format!("/splits/{}", name.as_str());
            let ds = group
                .new_dataset::<u64>()
                .shape([idx.len()])
                .create(name.as_str())
                .map_err(h(&format!("creating {full}")))?;
            if !idx.is_empty() {
                ds.write_raw(&idx).map_err(h(&format!("writing {full}")))?;
            }
        }

        let w = Writer {
            file: &file,
            target,
        };
        w.u64_attr("format_version", FORMAT_VERSION)?;
        w.string_attr("system", &self.system)?;
        w.u64_attr("n_particles", self.n_particles as u64)?;
        w.u64_attr("n_dims", self.n_dims as u64)?;
        w.string_attr("source", &self.source.attribute())?;
        if let Source::Metropolis {
            config,
            acceptance_rate,
        } = &self.source
        {
            w.f64_attr("proposal_std", config.proposal_std)?;
            w.f64_attr("init_std", config.init_std)?;
            w.f64_attr("acceptance_rate", *acceptance_rate)?;
            w.u64_attr("n_chains", config.n_chains as u64)?;
            w.u64_attr("burn_in", config.burn_in as u64)?;
            w.u64_attr("thin", config.thin as u64)?;
            w.u64_attr("seed", config.seed)?;
        }
        file.close().map_err(h("closing the file"))
    }
}

/// Opens an existing HDF5 file for reading.
///
/// Errors: [`DatasetError::Io`] when `path` does not exist or cannot be read;
/// [`DatasetError::NotHdf5`] when it is not a readable HDF5 file (truncated, garbage).
pub(crate) fn open_hdf5(path: &Path) -> Result<hdf5::File> {
    std::fs::metadata(path).map_err(|source| DatasetError::Io {
        path: path.to_path_buf(),
        action: "opening the data set".into(),
        source,
    })?;
    hdf5::File::open(path).map_err(|source| DatasetError::NotHdf5 {
        path: path.to_path_buf(),
        source,
    })
}

/// Attribute writers for one file (shared with the QM9 file format).
pub(crate) struct Writer<'a> {
    pub(crate) file: &'a hdf5::File,
    pub(crate) target: &'a Path,
}

impl Writer<'_> {
    fn err(&self, name: &str) -> impl FnOnce(hdf5::Error) -> DatasetError {
        let path = self.target.to_path_buf();
        let action = format!("writing attribute {name}");
        move |source| DatasetError::Hdf5 {
            path,
            action,
            source,
        }
    }

    pub(crate) fn u64_attr(&self, name: &str, v: u64) -> Result<()> {
        self.file
            .new_attr::<u64>()
            .create(name)
            .and_then(|a| a.write_scalar(&v))
            .map_err(self.err(name))
    }

    pub(crate) fn f64_attr(&self, name: &str, v: f64) -> Result<()> {
        self.file
            .new_attr::<f64>()
            .create(name)
            .and_then(|a| a.write_scalar(&v))
            .map_err(self.err(name))
    }

    /// Creates dataset `name` of `group` (`full` = its absolute path, for messages) with `shape`
    /// and writes `data` (row-major; nothing is written when it is empty).
    pub(crate) fn dataset<T: hdf5::H5Type>(
        &self,
        group: &hdf5::Group,
        name: &str,
        full: &str,
        shape: &[usize],
        data: &[T],
    ) -> Result<()> {
        let path = self.target.to_path_buf();
        let h = |action: String| {
            move |source| DatasetError::Hdf5 {
                path,
                action,
                source,
            }
        };
        let ds = group
            .new_dataset::<T>()
            .shape(shape.to_vec())
            .create(name)
            .map_err(h(format!("creating {full}")))?;
        if !data.is_empty() {
            ds.write_raw(data).map_err(|source| DatasetError::Hdf5 {
                path: self.target.to_path_buf(),
                action: format!("writing {full}"),
                source,
            })?;
        }
        Ok(())
    }

    pub(crate) fn string_attr(&self, name: &str, v: &str) -> Result<()> {
        let s: VarLenUnicode = v.parse().map_err(|_| DatasetError::InvalidValue {
            path: self.target.to_path_buf(),
            object: format!("@{name}"),
            value: format!("{v:?}"),
            reason: "strings must not contain NUL".into(),
        })?;
        self.file
            .new_attr::<VarLenUnicode>()
            .create(name)
            .and_then(|a| a.write_scalar(&s))
            .map_err(self.err(name))
    }
}

/// Validating readers for one open file (shared with the QM9 file format).
pub(crate) struct Reader<'a> {
    pub(crate) file: &'a hdf5::File,
    pub(crate) path: &'a Path,
}

impl Reader<'_> {
    pub(crate) fn hdf5_err(&self, action: String) -> impl FnOnce(hdf5::Error) -> DatasetError {
        let path = self.path.to_path_buf();
        move |source| DatasetError::Hdf5 {
            path,
            action,
            source,
        }
    }

    /// Opens root attribute `name`, checks it holds exactly one element, returns it and its type.
    fn attr(&self, name: &str) -> Result<(hdf5::Attribute, TypeDescriptor)> {
        let names = self
            .file
            .attr_names()
            .map_err(self.hdf5_err("listing root attributes".into()))?;
        if !names.iter().any(|n| n == name) {
            return Err(DatasetError::MissingAttribute {
                path: self.path.to_path_buf(),
                attribute: name.into(),
            });
        }
        let a = self
            .file
            .attr(name)
            .map_err(self.hdf5_err(format!("opening attribute {name}")))?;
        if a.size() != 1 {
            return Err(DatasetError::WrongShape {
                path: self.path.to_path_buf(),
                object: format!("@{name}"),
                expected: "a scalar".into(),
                found: a.shape().iter().map(|&s| s as u64).collect(),
            });
        }
        let t = a
            .dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(self.hdf5_err(format!("reading the type of attribute {name}")))?;
        Ok((a, t))
    }

    pub(crate) fn wrong_dtype(
        &self,
        object: String,
        expected: &str,
        found: &TypeDescriptor,
    ) -> DatasetError {
        DatasetError::WrongDtype {
            path: self.path.to_path_buf(),
            object,
            expected: expected.into(),
            found: found.to_string(),
        }
    }

    pub(crate) fn u64_attr(&self, name: &str) -> Result<u64> {
        let (a, t) = self.attr(name)?;
        let read = self.hdf5_err(format!("reading attribute {name}"));
        match t {
            TypeDescriptor::Unsigned(_) => Ok(a.read_raw::<u64>().map_err(read)?[0]),
            TypeDescriptor::Integer(_) => {
                let v = a.read_raw::<i64>().map_err(read)?[0];
                u64::try_from(v).map_err(|_| DatasetError::InvalidValue {
                    path: self.path.to_path_buf(),
                    object: format!("@{name}"),
                    value: v.to_string(),
                    reason: "must not be negative".into(),
                })
            }
            other => Err(self.wrong_dtype(format!("@{name}"), "an integer type", &other)),
        }
    }

    /// Checks the root attribute `format_version` equals `supported`.
    pub(crate) fn expect_format_version(&self, supported: u64) -> Result<()> {
        let found = self.u64_attr("format_version")?;
        if found != supported {
            return Err(DatasetError::UnsupportedFormatVersion {
                path: self.path.to_path_buf(),
                found,
                supported,
            });
        }
        Ok(())
    }

    pub(crate) fn usize_attr(&self, name: &str) -> Result<usize> {
        let v = self.u64_attr(name)?;
        usize::try_from(v).map_err(|_| DatasetError::InvalidValue {
            path: self.path.to_path_buf(),
            object: format!("@{name}"),
            value: v.to_string(),
            reason: "does not fit in usize".into(),
        })
    }

    pub(crate) fn f64_attr(&self, name: &str) -> Result<f64> {
        let (a, t) = self.attr(name)?;
        match t {
            TypeDescriptor::Float(_) => Ok(a
                .read_raw::<f64>()
                .map_err(self.hdf5_err(format!("reading attribute {name}")))?[0]),
            other => Err(self.wrong_dtype(format!("@{name}"), "a float type", &other)),
        }
    }

    pub(crate) fn string_attr(&self, name: &str) -> Result<String> {
        let (a, t) = self.attr(name)?;
        let read = self.hdf5_err(format!("reading attribute {name}"));
        match t {
            TypeDescriptor::VarLenUnicode => Ok(a.read_raw::<VarLenUnicode>().map_err(read)?[0]
                .as_str()
                .to_string()),
            TypeDescriptor::VarLenAscii => Ok(a.read_raw::<VarLenAscii>().map_err(read)?[0]
                .as_str()
                .to_string()),
            other => Err(self.wrong_dtype(format!("@{name}"), "a variable-length string", &other)),
        }
    }

    fn source(&self) -> Result<Source> {
        let s = self.string_attr("source")?;
        if s == "metropolis" {
            let config = MetropolisConfig {
                n_chains: self.usize_attr("n_chains")?,
                n_samples: 0, // set from /positions by the caller
                burn_in: self.usize_attr("burn_in")?,
                thin: self.usize_attr("thin")?,
                proposal_std: self.f64_attr("proposal_std")?,
                init_std: self.f64_attr("init_std")?,
                seed: self.u64_attr("seed")?,
            };
            let acceptance_rate = self.f64_attr("acceptance_rate")?;
            Ok(Source::Metropolis {
                config,
                acceptance_rate,
            })
        } else if let Some(file_name) = s.strip_prefix("imported:") {
            Ok(Source::Imported {
                file_name: file_name.to_string(),
            })
        } else {
            Ok(Source::Other(s))
        }
    }

    /// Opens dataset `name` of `group`, `full` being its absolute path for messages.
    pub(crate) fn dataset(
        &self,
        group: &hdf5::Group,
        name: &str,
        full: &str,
    ) -> Result<hdf5::Dataset> {
        if !group.link_exists(name) {
            return Err(DatasetError::MissingDataset {
                path: self.path.to_path_buf(),
                dataset: full.into(),
            });
        }
        group
            .dataset(name)
            .map_err(self.hdf5_err(format!("opening dataset {full}")))
    }

    pub(crate) fn dtype(&self, ds: &hdf5::Dataset, full: &str) -> Result<TypeDescriptor> {
        ds.dtype()
            .and_then(|t| t.to_descriptor())
            .map_err(self.hdf5_err(format!("reading the type of {full}")))
    }

    pub(crate) fn expect_float(&self, ds: &hdf5::Dataset, full: &str) -> Result<()> {
        match self.dtype(ds, full)? {
            TypeDescriptor::Float(_) => Ok(()),
            other => Err(self.wrong_dtype(full.into(), "float32 (any float type is read)", &other)),
        }
    }

    pub(crate) fn expect_shape_1d(
        &self,
        ds: &hdf5::Dataset,
        full: &str,
        len: Option<usize>,
    ) -> Result<()> {
        let shape = ds.shape();
        match (shape.as_slice(), len) {
            ([_], None) => Ok(()),
            ([l], Some(n)) if *l == n => Ok(()),
            _ => Err(DatasetError::WrongShape {
                path: self.path.to_path_buf(),
                object: full.into(),
                expected: match len {
                    Some(n) => format!("[{n}] (N from /positions)"),
                    None => "rank 1".into(),
                },
                found: shape.iter().map(|&s| s as u64).collect(),
            }),
        }
    }

    /// Reads a whole dataset as `T`; `nonempty_if` is the leading dimension (0 = empty, read
    /// nothing: HDF5 reads of empty selections are skipped).
    pub(crate) fn read_raw<T: hdf5::H5Type>(
        &self,
        ds: &hdf5::Dataset,
        full: &str,
        nonempty_if: usize,
    ) -> Result<Vec<T>> {
        if nonempty_if == 0 || ds.size() == 0 {
            return Ok(Vec::new());
        }
        ds.read_raw::<T>()
            .map_err(self.hdf5_err(format!("reading {full}")))
    }

    /// Reads a split: rank 1, integer type, every entry in `[0, n)`.
    pub(crate) fn indices(&self, ds: &hdf5::Dataset, full: &str, n: usize) -> Result<Vec<usize>> {
        self.expect_shape_1d(ds, full, None)?;
        let raw: Vec<u64> = match self.dtype(ds, full)? {
            TypeDescriptor::Unsigned(_) => self.read_raw::<u64>(ds, full, 1)?,
            // Negative entries become huge u64 values and are reported as out of range below.
            TypeDescriptor::Integer(_) => self
                .read_raw::<i64>(ds, full, 1)?
                .into_iter()
                .map(|v| v as u64)
                .collect(),
            other => {
                return Err(self.wrong_dtype(
                    full.into(),
                    "uint64 (any integer type is read)",
                    &other,
                ))
            }
        };
        raw.into_iter()
            .enumerate()
            .map(|(position, index)| {
                usize::try_from(index)
                    .ok()
                    .filter(|&i| i < n)
                    .ok_or_else(|| DatasetError::SplitIndexOutOfRange {
                        path: self.path.to_path_buf(),
                        dataset: full.into(),
                        position,
                        index,
                        n_samples: n,
                    })
            })
            .collect()
    }
}
