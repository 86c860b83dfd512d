//! Explicit Runge-Kutta ODE solvers over states made of several libtorch tensors, with gradients
//! by backpropagation or by the adjoint method.
//!
//! The right-hand side is a trait ([`OdeRhs`]); a solver is a value ([`OdeSolver`]) holding a
//! method and its [`SolverOptions`]; every solve returns [`SolveStats`] (function evaluations,
//! accepted and rejected steps, last step size). Each method is a Butcher tableau ([`tableau`]),
//! data driven by one generic stepper ([`stepper`]) for fixed and adaptive steps alike; adaptive
//! step-size control and error norms are separate small pieces ([`control`]).
//!
//! - Methods ([`Method`]): euler, midpoint, rk4 (fixed step); bosh3 (3(2)), dopri5 (5(4), the
//!   default and the reference's) and tsit5 (5(4), Tsitouras 2011), all FSAL, adaptive.
//! - Error control: per entry the error is scaled by `atol + rtol * max(|y0|, |y1|)`; the scaled
//!   error of a state made of several tensors is reduced by [`ErrorNorm::MixedRms`] by default
//!   (the largest of the components' root-mean-square norms, torchdiffeq's norm for tuple states)
//!   or [`ErrorNorm::Rms`] (one RMS over all entries, SciPy's and Hairer's). A step is accepted
//!   when that norm is at most 1. The first step is Hairer-Norsett-Wanner's heuristic; the step
//!   update is Hairer's PI controller by default (`pi_beta = 0` gives the classic one).
//! - Output at requested times: [`OdeSolver::solve_at`] lands exactly on each time of `t_eval`.
//! - Errors ([`OdeError`]) are typed and carry the time: step-size underflow (with h), too many
//!   steps, a non-finite state, derivative or error estimate, a failing right-hand side. Solvers
//!   never write into the caller's tensors.
//!
//! Gradients, chosen per solve:
//! - backpropagation through the solver: the solver is written in differentiable tensor
//!   operations, so gradients flow through the accepted steps by ordinary autograd (step-size
//!   decisions are not differentiated, as in torchdiffeq). No extra evaluations; memory grows
//!   with the number of steps.
//! - the adjoint method ([`adjoint`], Chen et al. 2018): solve forwards without a graph, then
//!   integrate the adjoint ODE backwards ([`adjoint_gradients`]) with its own solver. Memory is
//!   flat in the number of steps; the backward solve costs its own evaluations.

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

    /// `Some(sizes)`: state component `component` is the concatenation of parts of these numbers
    /// of entries (in order, over its flattened entries), which the error norm measures as
    /// separate components, e.g. the adjoint's parameter gradients, kept as one flat tensor so that
    /// a step costs the same number of tensor operations however many parameter tensors there
    /// are, but controlled per parameter tensor as torchdiffeq does. `None` (the default): the
    /// component is one part. Sizes that are negative or do not add up to the component's entries
    /// make the solve fail with [`OdeError::InvalidOptions`]; components beyond
    /// [`OdeRhs::error_components`] are never measured.
    fn norm_parts(&self, component: usize) -> Option<&[i64]> {
        let _ = component;
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
