//! Errors of the geometry crate.

/// What went wrong in a geometric operation.
#[derive(Debug, thiserror::Error)]
pub enum GeometryError {
    /// A tensor did not have the shape the operation needs.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape {
        /// Which argument.
        what: &'static str,
        /// The expected shape, in words (e.g. "[batch, nodes, dims]").
        expected: &'static str,
        /// The shape received.
        got: Vec<i64>,
    },
    /// An error reported by libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Checks that `t` has `rank` dimensions, naming `what` and `expected` in the error.
pub(crate) fn expect_rank(
    t: &tch::Tensor,
    rank: usize,
    what: &'static str,
    expected: &'static str,
) -> Result<(), GeometryError> {
    let got = t.size();
    if got.len() == rank {
        Ok(())
    } else {
        Err(GeometryError::Shape {
            what,
            expected,
            got,
        })
    }
}
