//! Errors of the flow crate.

/// What went wrong in a density evaluation or a sample.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// An input had the wrong shape.
    #[error("{what}: expected {expected}, got shape {got:?}")]
    Shape {
        /// Which input.
        what: &'static str,
        /// The expected shape, in words.
        expected: String,
        /// The shape received.
        got: Vec<i64>,
    },
    /// The ODE solve failed (step-size underflow, non-finite state, too many steps, ...).
    #[error("ODE solve failed: {0}")]
    Ode(#[from] ode::OdeError),
    /// The dynamics failed.
    #[error(transparent)]
    Dynamics(#[from] egnn::EgnnError),
    /// A geometric operation failed.
    #[error(transparent)]
    Geometry(#[from] geometry::GeometryError),
    /// A data-initialised layer was used before it was initialised.
    #[error("not initialised: {0}")]
    Uninitialized(&'static str),
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Checks that `node_mask` is `[batch, nodes]` for `t [batch, nodes, ...]`.
pub(crate) fn expect_mask(t: &tch::Tensor, node_mask: &tch::Tensor) -> Result<(), FlowError> {
    let (size, mask) = (t.size(), node_mask.size());
    if mask.len() == 2 && size.len() >= 2 && size[..2] == mask[..] {
        Ok(())
    } else {
        Err(FlowError::Shape {
            what: "node mask",
            expected: format!("the first two dimensions of {size:?}"),
            got: mask,
        })
    }
}

pub(crate) fn expect_positions(x: &tch::Tensor) -> Result<(), FlowError> {
    if x.dim() == 3 {
        Ok(())
    } else {
        Err(FlowError::Shape {
            what: "positions",
            expected: "[batch, nodes, dims]".into(),
            got: x.size(),
        })
    }
}
