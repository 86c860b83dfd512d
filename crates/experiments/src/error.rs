//! Errors of the experiments crate.

use std::path::{Path, PathBuf};

/// What went wrong in a run.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A configuration key with a bad value (or an unknown key).
    #[error("configuration {key}: {message}")]
    Config {
        /// The key (or the file, for parse errors that carry their own location).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A checkpoint is missing tensors, has wrong shapes, or is not a safetensors file.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The data set could not be read, generated or converted.
    #[error("data: {0}")]
    Data(#[from] datasets::DatasetError),
    /// Model construction failed.
    #[error("model: {0}")]
    Model(String),
    /// A density evaluation or ODE solve failed; `context` says where (epoch, split).
    #[error("{context}: {source}")]
    Flow {
        /// Where it happened.
        context: String,
        /// The cause.
        source: flow::FlowError,
    },
    /// The loss became NaN or infinite.
    #[error(
        "non-finite loss {value} at epoch {epoch}, step {step}; the last good checkpoint is kept"
    )]
    NonFiniteLoss {
        /// Epoch (1-based).
        epoch: usize,
        /// Optimiser step within the epoch.
        step: usize,
        /// The value.
        value: f64,
    },
    /// A parameter's gradient had NaN or infinite entries (the update is not applied).
    #[error(
        "non-finite gradient of {parameter} at epoch {epoch}, step {step}; the parameters were not updated and the last good checkpoint is kept"
    )]
    NonFiniteGradient {
        /// Epoch (1-based).
        epoch: usize,
        /// Optimiser step within the epoch.
        step: usize,
        /// The parameter's name.
        parameter: String,
    },
    /// An evaluation gave a NaN or infinite NLL; `context` says which split and samples.
    #[error("{context}: non-finite NLL {value}")]
    NonFiniteNll {
        /// Where it happened.
        context: String,
        /// The value.
        value: f64,
    },
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl ExperimentError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ExperimentError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
