//! Explicit Runge-Kutta ODE solvers over states made of several libtorch tensors.
//!
//! The right-hand side is a trait ([`OdeRhs`]); a solver is a value ([`OdeSolver`]) holding a
//! method and its [`SolverOptions`]; every solve returns [`SolveStats`] (function evaluations,
//! accepted and rejected steps, last step size). Each method is a Butcher tableau ([`tableau`]),
//! data driven by one generic stepper ([`stepper`]); adaptive step-size control and error norms are
//! separate small pieces ([`control`]).
//!
//! Gradients: the solver is written in differentiable tensor operations, so gradients flow through
//! the accepted steps by ordinary backpropagation (step-size decisions are not differentiated, as in
//! torchdiffeq). The adjoint method ([`adjoint`]) is the alternative: it integrates the adjoint ODE
//! backwards, so memory stays flat in the number of steps.

pub mod adjoint;
pub mod control;
pub mod error;
pub mod solver;
pub mod state;
pub mod stepper;
pub mod tableau;

pub use adjoint::{adjoint_gradients, AdjointGradients, AdjointOptions};
pub use control::ErrorNorm;
pub use error::OdeError;
pub use solver::{OdeSolver, Solution, SolveStats, SolverOptions};
pub use tableau::{ButcherTableau, Method};

use tch::Tensor;

/// The right-hand side f(t, y) of an ODE dy/dt = f(t, y) whose state y is a list of tensors.
pub trait OdeRhs {
    /// Evaluates f at time `t` on the state `y` (one tensor per state component); returns one
    /// derivative per component, each of its component's shape.
    ///
    /// Errors: whatever the model reports, wrapped in [`OdeError::Rhs`].
    fn eval(&self, t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError>;

    /// `Some(k)`: only the first `k` state components enter the adaptive error norm (a seminorm,
    /// e.g. for the adjoint's parameter gradients, which nothing downstream depends on). `None`
    /// (the default): all of them.
    fn error_components(&self) -> Option<usize> {
        None
    }
}

impl<F> OdeRhs for F
where
    F: Fn(f64, &[Tensor]) -> Result<Vec<Tensor>, OdeError>,
{
    fn eval(&self, t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
        self(t, y)
    }
}
