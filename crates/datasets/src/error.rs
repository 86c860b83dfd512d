//! The crate's error type.
//!
//! Every variant that concerns a file names it (`path`), and every variant that concerns an HDF5
//! object names it too (`dataset`, an absolute HDF5 path such as `/positions`, or `attribute`, a
//! root attribute name). Library code returns these errors instead of panicking on bad input.

use std::path::PathBuf;

/// Errors returned by this crate.
///
/// Variants about in-memory data that has no file yet (for example
/// [`ParticleDataset::validate`](crate::ParticleDataset::validate)) use the placeholder path
/// [`IN_MEMORY`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// A file-system operation (open, create, rename, remove, sync) failed.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done, e.g. "renaming the finished file into place".
        action: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The file exists but HDF5 cannot open it (truncated, corrupt, or not HDF5 at all).
    #[error("{}: not a readable HDF5 file: {source}", path.display())]
    NotHdf5 {
        /// The file concerned.
        path: PathBuf,
        /// The HDF5 library's error.
        #[source]
        source: hdf5::Error,
    },

    /// An HDF5 call failed on a file that did open (read or write of a dataset or attribute).
    #[error("{}: HDF5 error while {action}: {source}", path.display())]
    Hdf5 {
        /// The file concerned.
        path: PathBuf,
        /// What was being done, e.g. "reading /positions".
        action: String,
        /// The HDF5 library's error.
        #[source]
        source: hdf5::Error,
    },

    /// A required HDF5 dataset is absent.
    #[error("{}: missing dataset {dataset}", path.display())]
    MissingDataset {
        /// The file concerned.
        path: PathBuf,
        /// The absent dataset's HDF5 path, e.g. `/splits/test`.
        dataset: String,
    },

    /// A required root attribute is absent.
    #[error("{}: missing root attribute `{attribute}`", path.display())]
    MissingAttribute {
        /// The file concerned.
        path: PathBuf,
        /// The attribute's name.
        attribute: String,
    },

    /// A dataset or attribute has an element type other than the one the format prescribes.
    #[error("{}: {object} has element type {found}, expected {expected}", path.display())]
    WrongDtype {
        /// The file concerned.
        path: PathBuf,
        /// The dataset path (e.g. `/positions`) or attribute name (e.g. `@n_particles`).
        object: String,
        /// The element type(s) the format allows, e.g. "float32".
        expected: String,
        /// The element type found.
        found: String,
    },

    /// A dataset, array or attribute has the wrong rank or shape.
    #[error("{}: {object} has shape {found:?}, expected {expected}", path.display())]
    WrongShape {
        /// The file concerned.
        path: PathBuf,
        /// The dataset path, attribute name, or (for `.npy` files) `array`.
        object: String,
        /// The shape(s) the format allows, in words, e.g. "[N, 4, 2] (N >= 1)".
        expected: String,
        /// The shape found.
        found: Vec<u64>,
    },

    /// An attribute holds a value outside its allowed range (e.g. `n_particles` = 0).
    #[error("{}: {object} = {value}: {reason}", path.display())]
    InvalidValue {
        /// The file concerned.
        path: PathBuf,
        /// The attribute or dataset.
        object: String,
        /// The offending value, formatted.
        value: String,
        /// Why it is not allowed.
        reason: String,
    },

    /// A split holds a sample index that is not below the number of samples.
    #[error(
        "{}: {dataset} holds index {index} at position {position}, but there are only {n_samples} samples",
        path.display()
    )]
    SplitIndexOutOfRange {
        /// The file concerned.
        path: PathBuf,
        /// The split's dataset path, e.g. `/splits/train`.
        dataset: String,
        /// Position of the offending entry inside the split.
        position: usize,
        /// The offending index (negative indices of signed files are reported as out of range too,
        /// reinterpreted as `u64`).
        index: u64,
        /// Number of samples N in `/positions`.
        n_samples: usize,
    },

    /// A value that must be finite is NaN or infinite.
    #[error("{}: {dataset} element {index} (flat, row-major) is not finite", path.display())]
    NonFinite {
        /// The file concerned.
        path: PathBuf,
        /// The dataset path (`/positions`, `/energies`) or `array` for `.npy` files.
        dataset: String,
        /// Flat row-major index of the first offending element.
        index: usize,
    },

    /// The file's `format_version` attribute is newer (or older) than this crate reads.
    #[error("{}: format_version {found} is not supported (this crate reads version {supported})", path.display())]
    UnsupportedFormatVersion {
        /// The file concerned.
        path: PathBuf,
        /// The version found.
        found: u64,
        /// The version this crate reads and writes.
        supported: u64,
    },

    /// A `.npy` file cannot be parsed, or its element type is neither float32 nor float64.
    #[error("{}: cannot import .npy: {reason}", path.display())]
    Npy {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },

    /// The file holds a valid data set of another system than the one asked for.
    #[error("{}: holds system {found}, expected {expected}", path.display())]
    SystemMismatch {
        /// The file concerned.
        path: PathBuf,
        /// The system asked for.
        expected: String,
        /// The system the file holds.
        found: String,
    },

    /// The file holds samples of the Metropolis sampler drawn with other settings than the ones
    /// asked for (typically a data set generated by an earlier version with other defaults).
    /// The file is left untouched.
    #[error(
        "{}: generated by the Metropolis sampler with other settings ({differences}) than \
         requested; delete the file to have it generated again with the requested settings, or \
         keep it and give the data set another path",
        path.display()
    )]
    SettingsMismatch {
        /// The file concerned.
        path: PathBuf,
        /// The settings that differ, `name stored -> requested`, comma-separated.
        differences: String,
    },

    /// A sampler or loader setting is invalid (zero chains, zero batch size, non-positive
    /// proposal standard deviation, ...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// [`Splits::tail`](crate::Splits::tail) or
    /// [`Splits::first_train`](crate::Splits::first_train) was asked for more samples than there
    /// are.
    #[error("too few samples: {needed} needed ({what}), {available} available")]
    TooFewSamples {
        /// What the samples were needed for, in words.
        what: String,
        /// Number of samples needed.
        needed: usize,
        /// Number of samples available.
        available: usize,
    },

    /// An index passed to a gather or batch function is not below the number of samples.
    #[error("sample index {index} out of range: the data set has {n_samples} samples")]
    IndexOutOfRange {
        /// The offending index.
        index: usize,
        /// Number of samples in the data set.
        n_samples: usize,
    },

    /// No default generation settings exist for this system yet.
    #[error("no default data generation for system {0}")]
    UnsupportedSystem(String),

    /// A download (by `pip download`) could not be made or did not produce the expected file.
    #[error("downloading {what} failed: {reason}")]
    Download {
        /// What was being downloaded, e.g. `qm9pack==1.0.3`.
        what: String,
        /// What went wrong, in words (pip's exit status, a missing file ...).
        reason: String,
    },

    /// A file's SHA-256 digest is not the pinned one (a corrupt, truncated or substituted
    /// download). The file is removed before this error is returned.
    #[error("{}: SHA-256 {found} does not match the expected {expected}", path.display())]
    ChecksumMismatch {
        /// The file concerned.
        path: PathBuf,
        /// The pinned digest, lowercase hex.
        expected: String,
        /// The digest of the file, lowercase hex.
        found: String,
    },

    /// A zip archive (a Python wheel) cannot be read, or lacks a member.
    #[error("{}: cannot read the archive: {reason}", path.display())]
    Archive {
        /// The archive concerned.
        path: PathBuf,
        /// What is wrong, in words.
        reason: String,
    },

    /// A CSV record of a source file cannot be parsed.
    #[error("{file}, record {record}: {reason}")]
    Csv {
        /// The CSV file, as named inside its archive (e.g. `qm9pack/data/qm9_part1.csv`).
        file: String,
        /// The 1-based record number (the header is record 0), or 0 for the header itself.
        record: u64,
        /// What is wrong, in words, naming the column.
        reason: String,
    },

    /// A system name could not be parsed.
    #[error("unknown system name {0:?} (known: DW4, LJ13)")]
    UnknownSystem(String),
}

/// Placeholder path used in errors about data that is not (yet) in a file.
pub const IN_MEMORY: &str = "<in memory>";

/// Result alias with [`DatasetError`].
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;
