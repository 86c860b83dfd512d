//! Gradients of a solve by the adjoint sensitivity method (Chen, Rubanova, Bettencourt & Duvenaud
//! 2018, "Neural ordinary differential equations", section 2 and appendix B, algorithm 1).
//!
//! For `dy/dt = f(t, y, theta)` solved forwards through the output times `t_0, ..., t_K` and a loss
//! `L(y(t_0), ..., y(t_K))`, the adjoint `a(t) = dL/dy(t)` and the parameter gradient `g(t)` solve,
//! backwards from `t_K` to `t_0`,
//!
//! ```text
//! dy/dt = f(t, y, theta),   da/dt = -a^T df/dy,   dg/dt = -a^T df/dtheta,
//! ```
//!
//! starting from `y(t_K)`, `a(t_K) = dL/dy(t_K)`, `g(t_K) = 0`; at every earlier output time the
//! loss's own gradient `dL/dy(t_i)` is added to `a` and `y` is reset to the forward solution (as
//! torchdiffeq does). At the end `a(t_0) = dL/dy(t_0)` and `g(t_0) = dL/dtheta`.
//!
//! The vector-Jacobian products `a^T df/dy` and `a^T df/dtheta` come from one libtorch backward pass
//! per evaluation of the augmented dynamics, on a graph built for that evaluation alone and freed
//! after it: memory does not grow with the number of steps. The right-hand side may differentiate
//! internally (a Hutchinson trace estimator does): it only has to build its outputs with autograd
//! history when called with grad mode on and a state that requires gradients.
//!
//! The backward solve has its own solver (method and tolerances). Its error norm covers the whole
//! augmented state by default (torchdiffeq's default, with each parameter tensor its own component
//! of [`ErrorNorm::MixedRms`](crate::ErrorNorm), although the parameter gradients are integrated as
//! one flat tensor: see [`OdeRhs::norm_parts`]); `seminorm` restricts it to `(y, a)` (Kidger, Chen
//! & Lyons 2021, "Hey, that's not an ODE"), which usually takes fewer steps.

use crate::error::OdeError;
use crate::solver::{OdeSolver, SolveStats};
use crate::stepper::check_components;
use crate::OdeRhs;
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Options of the backward (adjoint) solve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdjointOptions {
    /// The solver of the augmented backward ODE (its own method and tolerances).
    pub solver: OdeSolver,
    /// Leave the parameter gradients out of the backward solve's error norm.
    pub seminorm: bool,
}

impl AdjointOptions {
    /// The backward solve for a forward `solver`: its method and tolerances with torchdiffeq's
    /// classic step-size controller (`pi_beta = 0`, growth allowed after a rejection) over the whole
    /// augmented state, i.e. what the reference's `odeint_adjoint` does by default. The classic
    /// controller takes fewer backward steps than the PI one here: on an initialised DW4 E-NF
    /// (batch 100) 20 against 26 evaluations, on a trained one 186 against 198 (3 batches); the
    /// seminorm takes fewer still (14; 150) but is not what the paper trained with.
    pub fn for_forward(solver: &OdeSolver) -> Self {
        let mut solver = solver.clone();
        solver.options.pi_beta = 0.0;
        solver.options.no_growth_after_reject = false;
        AdjointOptions {
            solver,
            seminorm: false,
        }
    }
}

impl Default for AdjointOptions {
    /// [`AdjointOptions::for_forward`] of the default solver (dopri5 at rtol = atol = 1e-4).
    fn default() -> Self {
        AdjointOptions::for_forward(&OdeSolver::default())
    }
}

/// What the adjoint method returns.
#[derive(Debug)]
pub struct AdjointGradients {
    /// `dL/dy(t_0)`, one tensor per state component, shaped as the component.
    pub y0: Vec<Tensor>,
    /// `dL/dtheta` per parameter, in the order given and shaped as the parameter (views into one
    /// flat tensor); `None` for a parameter that does not require gradients (frozen), which the
    /// backward solve skips entirely.
    pub params: Vec<Option<Tensor>>,
    /// Statistics of the backward solves, summed over the output intervals.
    pub stats: SolveStats,
}

/// The augmented dynamics `[y, a, g] -> [f, -a^T df/dy, -a^T df/dtheta]`, with `g` the
/// gradients of all trainable parameters flattened and concatenated into one tensor `[P]` (P =
/// their total number of entries): a step's arithmetic then costs the same number of tensor
/// operations however many parameter tensors the dynamics have, while the error norm still
/// measures each parameter tensor's part separately ([`OdeRhs::norm_parts`]).
struct AugmentedRhs<'a> {
    rhs: &'a dyn OdeRhs,
    /// The parameters that require gradients.
    params: Vec<Tensor>,
    /// Their numbers of entries, in order: the parts of `g`.
    param_sizes: Vec<i64>,
    /// Number of state components.
    n: usize,
    seminorm: bool,
}

impl AugmentedRhs<'_> {
    fn vjp(&self, t: f64, aug: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
        let (y, rest) = aug.split_at(self.n);
        let a = &rest[..self.n];
        tch::with_grad(|| {
            let y_leaf: Vec<Tensor> = y
                .iter()
                .map(|v| v.detach().set_requires_grad(true))
                .collect();
            let f = self.rhs.eval(t, &y_leaf)?;
            check_components(&f, &y_leaf, t)?;
            // a^T f as one scalar; components whose f has no graph contribute nothing.
            let terms: Vec<Tensor> = f
                .iter()
                .zip(a)
                .filter(|(fi, _)| fi.requires_grad())
                .map(|(fi, ai)| (fi * ai).sum(fi.kind()))
                .collect();
            let inputs: Vec<&Tensor> = y_leaf.iter().chain(&self.params).collect();
            let grads: Vec<Option<Tensor>> = if terms.is_empty() {
                inputs.iter().map(|_| None).collect()
            } else {
                let s = Tensor::stack(&terms, 0).sum(terms[0].kind());
                Tensor::f_run_backward(&[s], &inputs, false, false)?
                    .into_iter()
                    .map(|g| g.defined().then_some(g))
                    .collect()
            };
            // Undefined gradients (an input f does not depend on) are zeros.
            let mut grads = grads
                .into_iter()
                .zip(&inputs)
                .map(|(g, x)| g.unwrap_or_else(|| x.zeros_like()).detach());
            let mut out: Vec<Tensor> = f.iter().map(|fi| fi.detach()).collect();
            out.extend(grads.by_ref().take(self.n).map(|g| -g));
            out.push(-flat_concat(&grads.collect::<Vec<_>>(), &y[0]));
            Ok(out)
        })
    }
}

impl OdeRhs for AugmentedRhs<'_> {
    fn eval(&self, t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
        self.vjp(t, y)
    }

    fn error_components(&self) -> Option<usize> {
        self.seminorm.then_some(2 * self.n)
    }

    fn norm_parts(&self, component: usize) -> Option<&[i64]> {
        (component == 2 * self.n).then_some(self.param_sizes.as_slice())
    }
}

/// The tensors flattened and concatenated into one `[sum of numel]` tensor (an empty tensor of
/// `like`'s kind and device when there are none).
fn flat_concat(tensors: &[Tensor], like: &Tensor) -> Tensor {
    if tensors.is_empty() {
        return Tensor::zeros([0], (like.kind(), like.device()));
    }
    let flat: Vec<Tensor> = tensors.iter().map(|t| t.reshape([-1])).collect();
    Tensor::cat(&flat, 0)
}

/// Gradients of a loss of a forward solve by the adjoint method (see the module documentation).
///
/// - `rhs`: the forward problem's right-hand side; called with grad mode on and a state that
///   requires gradients, it must return derivatives with autograd history.
/// - `params`: the tensors `theta` the right-hand side depends on (any number, any shapes); those
///   that do not require gradients are skipped.
/// - `t_eval`: the forward solve's output times `t_0, ..., t_K` (K >= 1).
/// - `ys[i]`: the forward solution at `t_eval[i]` (only `i >= 1` is used).
/// - `grad_ys[i]`: `dL/dy(t_eval[i])`, one tensor per state component (zeros where the loss does
///   not depend on that output).
///
/// The forward solve's own output need not be kept in a graph: run it under `tch::no_grad`.
///
/// Errors: [`OdeError::InvalidOptions`] when the lengths of `t_eval`, `ys` and `grad_ys` or the
/// shapes of the cotangents disagree, the state has no components, or the trainable parameters
/// differ in kind or lie on another device than the state (their gradients are integrated as one
/// tensor beside it); any error of the backward solve (non-finite adjoint,
/// step-size underflow, too many steps, the right-hand side's errors), with the time it happened
/// at.
pub fn adjoint_gradients(
    options: &AdjointOptions,
    rhs: &dyn OdeRhs,
    params: &[Tensor],
    t_eval: &[f64],
    ys: &[Vec<Tensor>],
    grad_ys: &[Vec<Tensor>],
) -> Result<AdjointGradients, OdeError> {
    let k = t_eval.len();
    if k < 2 || ys.len() != k || grad_ys.len() != k {
        return Err(OdeError::InvalidOptions(format!(
            "adjoint: {k} output times, {} states, {} cotangents (need the same number, at least 2)",
            ys.len(),
            grad_ys.len()
        )));
    }
    let n = ys[0].len();
    if n == 0 {
        return Err(OdeError::InvalidOptions(
            "adjoint: the state has no components".into(),
        ));
    }
    for (i, (y, g)) in ys.iter().zip(grad_ys).enumerate() {
        let same =
            y.len() == n && g.len() == n && y.iter().zip(g).all(|(a, b)| a.size() == b.size());
        if !same {
            return Err(OdeError::InvalidOptions(format!(
                "adjoint: the cotangent at output {i} does not match the state's components"
            )));
        }
    }
    let trainable: Vec<usize> = (0..params.len())
        .filter(|&i| params[i].requires_grad())
        .collect();
    if let Some(&first) = trainable.first() {
        let (kind, device) = (params[first].kind(), ys[0][0].device());
        if let Some(&i) = trainable
            .iter()
            .find(|&&i| params[i].kind() != kind || params[i].device() != device)
        {
            return Err(OdeError::InvalidOptions(format!(
                "adjoint: trainable parameter {i} is {:?} on {:?}, parameter {first} {kind:?} and \
                 the state on {device:?} (the gradients are integrated as one tensor beside the \
                 state)",
                params[i].kind(),
                params[i].device()
            )));
        }
    }
    let aug_rhs = AugmentedRhs {
        rhs,
        params: trainable
            .iter()
            .map(|&i| params[i].shallow_clone())
            .collect(),
        param_sizes: trainable
            .iter()
            .map(|&i| params[i].numel() as i64)
            .collect(),
        n,
        seminorm: options.seminorm,
    };
    let detach = |v: &[Tensor]| v.iter().map(|t| t.detach()).collect::<Vec<_>>();
    let mut a = detach(&grad_ys[k - 1]);
    let total: i64 = aug_rhs.param_sizes.iter().sum();
    // g is one flat tensor in the parameters' kind and on their device (all trainable parameters
    // share them and the state's device, checked above; torchdiffeq's `zeros_like(param)`); the
    // state's kind when there are none.
    let like = &ys[k - 1][0];
    let mut g = match aug_rhs.params.first() {
        Some(p) => Tensor::zeros([total], (p.kind(), p.device())),
        None => Tensor::zeros([0], (like.kind(), like.device())),
    };
    let mut stats = SolveStats::default();
    for i in (1..k).rev() {
        let mut aug = detach(&ys[i]);
        aug.append(&mut a);
        aug.push(g);
        let (mut out, s) = tch::no_grad(|| {
            options
                .solver
                .solve(&aug_rhs, t_eval[i], t_eval[i - 1], &aug)
        })?;
        stats += s;
        g = out.pop().ok_or_else(|| {
            OdeError::InvalidOptions("the backward solve returned no parameter gradients".into())
        })?;
        // The loss's direct dependence on y(t_{i-1}) joins the adjoint there.
        a = out
            .split_off(n)
            .iter()
            .zip(&grad_ys[i - 1])
            .map(|(ai, gi)| ai + gi.detach())
            .collect();
    }
    let mut grads: Vec<Option<Tensor>> = params.iter().map(|_| None).collect();
    let pieces = g.split_with_sizes(&aug_rhs.param_sizes, 0);
    for (&i, gi) in trainable.iter().zip(pieces) {
        grads[i] = Some(gi.view_as(&params[i]));
    }
    Ok(AdjointGradients {
        y0: a,
        params: grads,
        stats,
    })
}
