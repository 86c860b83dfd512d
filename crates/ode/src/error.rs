//! Errors of an ODE solve. On error the caller's tensors are untouched: solvers never write in place.

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum OdeError {
    /// The adaptive step size fell below the minimum (or below the resolution of t).
    #[error("step size underflow at t = {t}: h = {h:e} (the problem may be stiff or the state ill-behaved)")]
    StepSizeUnderflow {
        /// Time reached.
        t: f64,
        /// The step size that was too small.
        h: f64,
    },
    /// The solve used up its step budget.
    #[error("too many steps: {max_steps} steps taken and t = {t} has not reached the end")]
    TooManySteps {
        /// Time reached.
        t: f64,
        /// The budget ([`crate::SolverOptions::max_steps`]).
        max_steps: usize,
    },
    /// The state or its derivative has a NaN or an infinite entry.
    #[error("non-finite {what} at t = {t}")]
    NonFinite {
        /// "state" or "derivative" or "error estimate".
        what: &'static str,
        /// Time of the step in which it appeared.
        t: f64,
    },
    /// Options out of range or an inconsistent call.
    #[error("invalid solver options: {0}")]
    InvalidOptions(String),
    /// The right-hand side failed.
    #[error("right-hand side failed at t = {t}: {source}")]
    Rhs {
        /// Time of the failing evaluation.
        t: f64,
        /// The model's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl OdeError {
    /// Wraps a model's error raised at time `t`.
    pub fn rhs(t: f64, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        OdeError::Rhs {
            t,
            source: Box::new(source),
        }
    }
}
