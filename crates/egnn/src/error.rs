//! Errors of the egnn crate.

/// What went wrong when building or evaluating a network.
#[derive(Debug, thiserror::Error)]
pub enum EgnnError {
    /// An input tensor had the wrong shape.
    #[error("{what}: expected {expected}, got shape {got:?}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// The expected shape, in words.
        expected: String,
        /// The shape received.
        got: Vec<i64>,
    },
    /// A configuration value out of its range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A geometric operation failed.
    #[error(transparent)]
    Geometry(#[from] geometry::GeometryError),
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
