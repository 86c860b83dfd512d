//! The continuous normalizing flow: a dynamics model, an ODE solver and a prior.

use crate::error::{expect_positions, FlowError};
use crate::prior::{CentredGaussian, StandardGaussian};
use crate::trace::{exact_from_replicas, hutchinson_with_vjp, unit_probes, Probes, TraceEstimator};
use egnn::{Dynamics, Masks, Velocity};
use ode::{adjoint_gradients, AdjointOptions, OdeError, OdeRhs, OdeSolver, SolveStats};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Whether a solve records what training needs to backpropagate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientMode {
    /// Build the autograd graph through every accepted solver step (the trace estimate is made
    /// differentiable too), so `loss.backward()` gives parameter gradients.
    Backprop,
    /// No parameter gradients (evaluation, sampling): nothing is kept between evaluations.
    NoGrad,
}

/// The result of encoding data into the latent space.
#[derive(Debug)]
pub struct Encoded {
    /// Latent positions z = f(x) at t = 1, `[batch, nodes, dims]`, centred.
    pub z: Tensor,
    /// Latent features `[batch, nodes, nf]` of a flow over positions and features
    /// ([`Cnf::encode_features`]), zero at padded nodes; `None` for positions alone.
    pub z_h: Option<Tensor>,
    /// The ODE regulariser `integral over t of ||v||^2 + ||eps^T dv/ds||^2` `[batch]` when asked
    /// for ([`Cnf::encode_regularised`], [`Cnf::encode_features_regularised`]), else `None`.
    pub regulariser: Option<Tensor>,
    /// `log |det dz/dx|` = the integral of the trace over t in [0, 1], `[batch]`.
    pub log_det: Tensor,
    /// Solver statistics.
    pub stats: SolveStats,
}

/// The result of [`Cnf::log_likelihood_adjoint`] and its regularised and feature variants:
/// values without autograd history and the gradients of the loss, computed by the adjoint
/// method.
#[derive(Debug)]
pub struct AdjointLikelihood {
    /// The loss `L(log p)` or `L(log p, regulariser)` (a scalar tensor).
    pub loss: Tensor,
    /// `log p(x)` in nats, `[batch]`.
    pub log_likelihood: Tensor,
    /// The ODE regulariser `[batch]` when it was integrated
    /// ([`Cnf::log_likelihood_adjoint_regularised`], or `regularise` of
    /// [`Cnf::log_likelihood_features_adjoint`]); `None` otherwise.
    pub regulariser: Option<Tensor>,
    /// `dL/dtheta` for each parameter passed in, `None` for frozen ones.
    pub param_grads: Vec<Option<Tensor>>,
    /// `dL/dx`, `[batch, nodes, dims]` (through the centring of `x`).
    pub grad_x: Tensor,
    /// `dL/dh`, `[batch, nodes, nf]`, for a flow over features
    /// ([`Cnf::log_likelihood_features_adjoint`]); `None` otherwise.
    pub grad_h: Option<Tensor>,
    /// Statistics of the forward solve.
    pub forward: SolveStats,
    /// Statistics of the backward (adjoint) solve.
    pub backward: SolveStats,
}

/// An E(n) equivariant (if its dynamics are) continuous normalizing flow over positions, and
/// optionally node features (QM9: the dequantized atom types and charges).
///
/// With features the ODE state is the concatenation `[x, h]` `[batch, nodes, dims + nf]`
/// (as in the reference), so the trace (exact or Hutchinson) is taken over both blocks of the
/// Jacobian; the positions stay centred, the features are free.
#[derive(Debug)]
pub struct Cnf<D> {
    /// The velocity field.
    pub dynamics: D,
    /// The ODE solver used for density evaluation and sampling.
    pub solver: OdeSolver,
    /// Options of the backward solve of [`Cnf::log_likelihood_adjoint`].
    pub adjoint: AdjointOptions,
    /// The base density of the latent positions.
    pub prior: CentredGaussian,
    /// Compute the trace from the dynamics' forward-mode derivative ([`Dynamics::velocity_jvp`])
    /// when they have one (default `true`): Hutchinson's estimate from `J eps`, the exact trace
    /// from `J e_k` for every unit vector. The values are those of autograd's vector-Jacobian
    /// products `eps^T J` (the reference's way), up to round-off, and so are their gradients.
    /// This applies to every solve with Hutchinson's estimate and to the exact trace without
    /// gradients: evaluation ([`GradientMode::NoGrad`]) then builds no autograd graph at all;
    /// backpropagation through the solver ([`GradientMode::Backprop`]) differentiates the
    /// forward-mode pass once, instead of differentiating a vector-Jacobian product taken with a
    /// graph (a second backward pass); both solves of the adjoint method use it too. Measured
    /// (docs/results/ode-benchmarks.md, tenth session; batch 100, one thread, means of two runs,
    /// forward against reverse mode): DW4 forward solve 26 against 37 ms, LJ13 246 against 283
    /// ms; backprop training step DW4 119 against 141 ms, LJ13 1.13 against 1.36 s; adjoint step
    /// DW4 195 against 237 ms, LJ13 2.70 against 3.11 s; peak memory within about 12% either
    /// way (less for DW4 on one worker, more for the trained models on two).
    /// `false`: the vector-Jacobian product everywhere. The exact trace under backprop and the
    /// ODE regulariser (its Frobenius term) always use `eps^T J`.
    pub forward_mode_trace: bool,
}

/// How a solve computes the trace, with what it needs prepared once per solve.
enum TraceWork {
    /// Hutchinson's estimator with its probes `[batch, nodes, dims]`.
    Hutchinson(Tensor),
    /// The exact trace, with the masks of the batch replicated nodes x dims times.
    Exact(Masks),
}

/// The augmented right-hand side `[s, log det] -> [v, tr(dv/ds)]`, with `s` the positions or the
/// positions and features `[x, h]`.
struct DensityRhs<'a, D> {
    dynamics: &'a D,
    masks: &'a Masks,
    trace: TraceWork,
    create_graph: bool,
    layout: StateLayout,
    /// Integrate the ODE regulariser as a third state component.
    regularise: bool,
    /// Use the dynamics' forward-mode derivative for the trace when they have one (see
    /// [`Cnf::forward_mode_trace`] for when).
    forward_mode: bool,
}

/// How the first ODE state tensor is laid out.
#[derive(Debug, Clone, Copy)]
struct StateLayout {
    /// Number of position dimensions n (the first n channels of the state).
    n_dims: i64,
    /// Whether the remaining channels are node features.
    features: bool,
}

impl StateLayout {
    /// Splits a state `[batch, nodes, n + nf]` into its positions and (with features) its
    /// features.
    fn split(self, s: &Tensor) -> (Tensor, Option<Tensor>) {
        if !self.features {
            return (s.shallow_clone(), None);
        }
        let nf = s.size()[2] - self.n_dims;
        (
            s.narrow(-1, 0, self.n_dims),
            Some(s.narrow(-1, self.n_dims, nf)),
        )
    }

    /// The velocity of state `s`: `v_x`, or `[v_x, v_h]` concatenated for a state with features.
    fn velocity<D: Dynamics>(
        self,
        dynamics: &D,
        t: f64,
        s: &Tensor,
        masks: &Masks,
    ) -> Result<Tensor, FlowError> {
        let (x, h) = self.split(s);
        let v = dynamics.velocity(t, &x, h.as_ref(), masks)?;
        self.join(v, h.as_ref())
    }

    /// The state's velocity from the dynamics' `v`: `v_x`, or `[v_x, v_h]` for a state with
    /// features `h`.
    ///
    /// Errors: [`FlowError::Shape`] when dynamics over features return no feature velocity.
    fn join(self, v: Velocity, h: Option<&Tensor>) -> Result<Tensor, FlowError> {
        let Some(h) = h else {
            return Ok(v.x);
        };
        let vh = v.h.ok_or_else(|| FlowError::Shape {
            what: "feature velocity",
            expected: format!("{:?} from dynamics over features", h.size()),
            got: vec![],
        })?;
        Ok(Tensor::cat(&[&v.x, &vh], -1))
    }
}

impl<D: Dynamics> DensityRhs<'_, D> {
    fn eval_inner(&self, t: f64, x: &Tensor) -> Result<Vec<Tensor>, FlowError> {
        tch::with_grad(|| {
            // Differentiate with respect to the stage input itself: inside a training graph it
            // already requires gradients; otherwise make it a fresh leaf.
            let x_in = if self.create_graph && x.requires_grad() {
                x.shallow_clone()
            } else {
                x.detach().set_requires_grad(true)
            };
            let closed_form = if self.layout.features {
                None
            } else {
                self.dynamics.velocity_and_divergence(t, &x_in, self.masks)
            };
            let mut frobenius = None;
            let (v, tr) = match (closed_form, &self.trace) {
                (Some(result), _) => result?,
                (None, TraceWork::Hutchinson(eps)) => match self.hutchinson_by_jvp(t, x, eps) {
                    Some(result) => result?,
                    None => {
                        let v = self.layout.velocity(self.dynamics, t, &x_in, self.masks)?;
                        let (tr, vjp) = hutchinson_with_vjp(&v, &x_in, eps, self.create_graph)?;
                        if self.regularise {
                            frobenius = Some(vjp.square().sum_dim_intlist(
                                &[1i64, 2][..],
                                false,
                                v.kind(),
                            ));
                        }
                        (v, tr)
                    }
                },
                (None, TraceWork::Exact(masks_rep)) => {
                    let size = x.size();
                    let x_rep = x_in.repeat([size[1] * size[2], 1, 1]);
                    match self.exact_by_jvp(t, &x_rep, masks_rep) {
                        Some(result) => result?,
                        None => {
                            let v_rep =
                                self.layout.velocity(self.dynamics, t, &x_rep, masks_rep)?;
                            let tr = exact_from_replicas(&v_rep, &x_rep, self.create_graph)?;
                            (v_rep.narrow(0, 0, size[0]), tr)
                        }
                    }
                }
            };
            let mut out = vec![v, tr];
            if self.regularise {
                // ||v||^2 plus, with Hutchinson probes, the Frobenius estimate ||eps^T J||^2 (with
                // the exact trace or a closed-form divergence only ||v||^2).
                let kinetic = out[0]
                    .square()
                    .sum_dim_intlist(&[1i64, 2][..], false, out[0].kind());
                out.push(match frobenius {
                    Some(f) => kinetic + f,
                    None => kinetic,
                });
            }
            Ok(if self.create_graph {
                out
            } else {
                out.into_iter().map(|t| t.detach()).collect()
            })
        })
    }
}

impl<D: Dynamics> DensityRhs<'_, D> {
    /// The state velocity `v [batch, nodes, channels]` at `s` and its forward-mode derivative
    /// `J u` along the tangent `u` (of `s`'s shape), from [`Dynamics::velocity_jvp`] in one pass:
    /// without a training graph no autograd graph is built at all. `None` when forward mode is not
    /// to be used here ([`Cnf::forward_mode_trace`], or the ODE regulariser, which needs
    /// `eps^T J` itself) or the dynamics have no forward-mode derivative.
    fn velocity_jvp(
        &self,
        t: f64,
        s: &Tensor,
        u: &Tensor,
        masks: &Masks,
    ) -> Option<Result<(Tensor, Tensor), FlowError>> {
        if self.regularise || !self.forward_mode {
            return None;
        }
        let run = || {
            let s = if self.create_graph {
                s.shallow_clone()
            } else {
                s.detach()
            };
            let (x, h) = self.layout.split(&s);
            let (ux, uh) = self.layout.split(u);
            let result = self
                .dynamics
                .velocity_jvp(t, &x, h.as_ref(), &ux, uh.as_ref(), masks)?;
            Some(result.map_err(FlowError::from).and_then(|(v, dv)| {
                Ok((
                    self.layout.join(v, h.as_ref())?,
                    self.layout.join(dv, h.as_ref())?,
                ))
            }))
        };
        if self.create_graph {
            run()
        } else {
            tch::no_grad(run)
        }
    }

    /// `(v, eps^T J eps)` from `J eps` ([`DensityRhs::velocity_jvp`]): the reverse-mode
    /// estimate for the same probe (`eps^T (J eps) = (eps^T J) eps`), up to round-off.
    fn hutchinson_by_jvp(
        &self,
        t: f64,
        s: &Tensor,
        eps: &Tensor,
    ) -> Option<Result<(Tensor, Tensor), FlowError>> {
        let result = self.velocity_jvp(t, s, eps, self.masks)?;
        Some(result.map(|(v, dv)| {
            let tr = (dv * eps).sum_dim_intlist(&[1i64, 2][..], false, v.kind());
            (v, tr)
        }))
    }

    /// `(v, tr J)` exactly from `J e_k` for the D = nodes x channels unit vectors `e_k`: the
    /// batch replicated D times (`s_rep [D * batch, nodes, channels]`, copy k = rows `k * batch ..
    /// (k + 1) * batch`), copy k pushed along `e_k` ([`DensityRhs::velocity_jvp`] with
    /// `masks_rep`), and the k-th entry of its tangent summed over k. Only for solves without a
    /// graph (evaluation): the exact trace is not used for training, and differentiating D
    /// tangents is what the reverse-mode path already does.
    fn exact_by_jvp(
        &self,
        t: f64,
        s_rep: &Tensor,
        masks_rep: &Masks,
    ) -> Option<Result<(Tensor, Tensor), FlowError>> {
        if self.regularise || !self.forward_mode || self.create_graph {
            return None;
        }
        let size = s_rep.size();
        let d = size[1] * size[2];
        let b = size[0] / d.max(1);
        let probes = unit_probes(d, s_rep.kind(), s_rep.device()); // [D, 1, D]
        let tangent = probes.expand([d, b, d], false).reshape(&size[..]);
        let result = self.velocity_jvp(t, s_rep, &tangent, masks_rep)?;
        Some(result.map(|(v, dv)| {
            let tr =
                (dv.reshape([d, b, d]) * probes).sum_dim_intlist(&[0i64, 2][..], false, v.kind());
            (v.narrow(0, 0, b), tr)
        }))
    }
}

impl<D: Dynamics> OdeRhs for DensityRhs<'_, D> {
    fn eval(&self, t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
        self.eval_inner(t, &y[0]).map_err(|e| OdeError::rhs(t, e))
    }
}

/// The velocity alone, for sampling.
struct VelocityRhs<'a, D> {
    dynamics: &'a D,
    masks: &'a Masks,
    layout: StateLayout,
}

impl<D: Dynamics> OdeRhs for VelocityRhs<'_, D> {
    fn eval(&self, t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
        let v = self
            .layout
            .velocity(self.dynamics, t, &y[0], self.masks)
            .map_err(|e| OdeError::rhs(t, e))?;
        Ok(vec![v])
    }
}

impl<D: Dynamics> Cnf<D> {
    /// A flow with the given dynamics and solver and the centre-of-mass-free Gaussian prior; the
    /// adjoint's backward solve is [`AdjointOptions::for_forward`] of that solver (as the
    /// reference's `odeint_adjoint` does by default).
    pub fn new(dynamics: D, solver: OdeSolver) -> Self {
        Cnf {
            dynamics,
            adjoint: AdjointOptions::for_forward(&solver),
            solver,
            prior: CentredGaussian,
            forward_mode_trace: true,
        }
    }

    fn run<T>(mode: GradientMode, f: impl FnOnce() -> T) -> T {
        match mode {
            GradientMode::Backprop => f(),
            GradientMode::NoGrad => tch::no_grad(f),
        }
    }

    /// Encodes positions `x [batch, nodes, dims]` (centred here over the real nodes) into the
    /// latent space by integrating from t = 0 to t = 1, with the trace computed by `trace`.
    /// Hutchinson probes are drawn once for this solve from the libtorch generator. Dynamics with
    /// a closed-form divergence ([`Dynamics::velocity_and_divergence`], e.g. kernel dynamics) use
    /// it instead, whatever `trace` says: it is exact and cheaper.
    ///
    /// Errors: [`FlowError::Shape`] for non-rank-3 positions; [`FlowError::Ode`] when the solve
    /// fails (with the time: non-finite state, step-size underflow, too many steps).
    pub fn encode(
        &self,
        x: &Tensor,
        masks: &Masks,
        trace: TraceEstimator,
        mode: GradientMode,
    ) -> Result<Encoded, FlowError> {
        expect_positions(x)?;
        let probes = trace.probes(&x.size(), &masks.node, x.kind(), x.device());
        self.encode_with_probes(x, masks, probes, mode)
    }

    /// [`Cnf::encode`] with probes drawn by the caller ([`TraceEstimator::probes`]), e.g. once for
    /// a batch that is then split across threads.
    ///
    /// Errors: as [`Cnf::encode`], and [`FlowError::Shape`] if the probes do not match `x`.
    pub fn encode_with_probes(
        &self,
        x: &Tensor,
        masks: &Masks,
        probes: Probes,
        mode: GradientMode,
    ) -> Result<Encoded, FlowError> {
        self.encode_state(x, None, masks, probes, mode, false)
    }

    /// [`Cnf::encode_with_probes`] that also integrates the ODE regulariser (Finlay et al. 2020):
    /// per graph, the integral over t of `||v||^2 + ||eps^T dv/dx||^2`, in
    /// [`Encoded::regulariser`] `[batch]`. The Frobenius term needs Hutchinson probes; with the
    /// exact trace or a closed-form divergence (kernel and simple dynamics) only `||v||^2` is
    /// integrated.
    ///
    /// Errors: as [`Cnf::encode_with_probes`].
    pub fn encode_regularised(
        &self,
        x: &Tensor,
        masks: &Masks,
        probes: Probes,
        mode: GradientMode,
    ) -> Result<Encoded, FlowError> {
        self.encode_state(x, None, masks, probes, mode, true)
    }

    /// Encodes positions `x [batch, nodes, dims]` (centred here over the real nodes) and node
    /// features `h [batch, nodes, nf]` (zero at padded nodes) together: the flow of a model over
    /// both (QM9), whose dynamics return a feature velocity. Probes, when Hutchinson, have the
    /// shape of the joint state `[batch, nodes, dims + nf]` ([`TraceEstimator::probes`] of that
    /// shape); the exact trace takes `nodes * (dims + nf)` vector-Jacobian products.
    ///
    /// Errors: as [`Cnf::encode_with_probes`], and [`FlowError::Shape`] when `h` does not fit `x`.
    pub fn encode_features(
        &self,
        x: &Tensor,
        h: &Tensor,
        masks: &Masks,
        probes: Probes,
        mode: GradientMode,
    ) -> Result<Encoded, FlowError> {
        self.encode_state(x, Some(h), masks, probes, mode, false)
    }

    /// [`Cnf::encode_features`] that also integrates the ODE regulariser of the E-NF's QM9
    /// training (FACTS.md 1; Finlay et al. 2020): per graph, the integral over t of `||v||^2 +
    /// ||eps^T dv/ds||^2` (the second term with Hutchinson probes only), in
    /// [`Encoded::regulariser`].
    ///
    /// Errors: as [`Cnf::encode_features`].
    pub fn encode_features_regularised(
        &self,
        x: &Tensor,
        h: &Tensor,
        masks: &Masks,
        probes: Probes,
        mode: GradientMode,
    ) -> Result<Encoded, FlowError> {
        self.encode_state(x, Some(h), masks, probes, mode, true)
    }

    fn encode_state(
        &self,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
        probes: Probes,
        mode: GradientMode,
        regularise: bool,
    ) -> Result<Encoded, FlowError> {
        let (mut rhs, mut y0) =
            self.density_problem(x, h, masks, probes, mode == GradientMode::Backprop)?;
        if regularise {
            rhs.regularise = true;
            y0.push(y0[1].zeros_like());
        }
        let (mut y, stats) = Self::run(mode, || self.solver.solve(&rhs, 0.0, 1.0, &y0))?;
        let regulariser = if regularise { y.pop() } else { None };
        let log_det = y.pop().unwrap_or_else(Tensor::new);
        let (z, z_h) = rhs.layout.split(&y.pop().unwrap_or_else(Tensor::new));
        Ok(Encoded {
            z,
            z_h,
            log_det,
            regulariser,
            stats,
        })
    }

    /// Log-likelihood `log p(x) = log p_Z(f(x)) + log |det df/dx|` in nats, `[batch]`, of positions
    /// `x [batch, nodes, dims]` (Chen et al. 2018, theorem 1; E-NF eq. 11).
    ///
    /// Errors: as [`Cnf::encode`].
    pub fn log_likelihood(
        &self,
        x: &Tensor,
        masks: &Masks,
        trace: TraceEstimator,
        mode: GradientMode,
    ) -> Result<(Tensor, SolveStats), FlowError> {
        let enc = self.encode(x, masks, trace, mode)?;
        self.log_likelihood_of(enc, masks)
    }

    /// [`Cnf::log_likelihood`] with probes drawn by the caller (see [`Cnf::encode_with_probes`]).
    ///
    /// Errors: as [`Cnf::encode_with_probes`].
    pub fn log_likelihood_with_probes(
        &self,
        x: &Tensor,
        masks: &Masks,
        probes: Probes,
        mode: GradientMode,
    ) -> Result<(Tensor, SolveStats), FlowError> {
        let enc = self.encode_with_probes(x, masks, probes, mode)?;
        self.log_likelihood_of(enc, masks)
    }

    /// Log-likelihood of `x [batch, nodes, dims]` with the gradients of a scalar loss of it by the
    /// adjoint method (Chen et al. 2018), as the E-NF paper trained: the forward solve keeps no
    /// graph, `loss(log p [batch])` is differentiated with respect to the solve's output, and the
    /// adjoint ODE is integrated backwards with [`Cnf::adjoint`]'s solver, with the same trace
    /// `probes` (so the Hutchinson estimate differentiated is the one that was evaluated).
    /// Memory is flat in the number of solver steps; the backward solve costs extra evaluations.
    ///
    /// `params` are the dynamics' parameters (frozen ones, not requiring gradients, are skipped);
    /// nothing is accumulated into their `.grad`: the gradients are returned.
    ///
    /// Errors: as [`Cnf::encode_with_probes`], and [`FlowError::Ode`] for a failing backward solve
    /// or [`FlowError::Torch`] if the loss cannot be differentiated.
    pub fn log_likelihood_adjoint(
        &self,
        x: &Tensor,
        masks: &Masks,
        probes: Probes,
        params: &[Tensor],
        loss: impl FnOnce(&Tensor) -> Tensor,
    ) -> Result<AdjointLikelihood, FlowError> {
        self.adjoint_solve(x, None, masks, probes, params, false, |ll, _| loss(ll))
    }

    /// [`Cnf::log_likelihood_adjoint`] of a loss that also depends on the ODE regulariser
    /// ([`Cnf::encode_regularised`]): the regulariser is integrated as a third state component
    /// in the forward solve and its cotangent carried by the adjoint, so the parameter gradients
    /// are those of `loss(log p [batch], regulariser [batch])` at flat memory (the E-NF's
    /// QM9-positional training at batch 128). The regulariser is returned in
    /// [`AdjointLikelihood::regulariser`].
    ///
    /// Errors: as [`Cnf::log_likelihood_adjoint`].
    pub fn log_likelihood_adjoint_regularised(
        &self,
        x: &Tensor,
        masks: &Masks,
        probes: Probes,
        params: &[Tensor],
        loss: impl FnOnce(&Tensor, &Tensor) -> Tensor,
    ) -> Result<AdjointLikelihood, FlowError> {
        self.adjoint_solve(x, None, masks, probes, params, true, |ll, reg| match reg {
            Some(reg) => loss(ll, reg),
            None => loss(ll, &ll.zeros_like()),
        })
    }

    /// The adjoint method for a flow over positions `x [batch, nodes, dims]` and features
    /// `h [batch, nodes, nf]` together (QM9; probes as [`Cnf::encode_features`]): `log p(x, h) =
    /// log p_Z(z_x) + log N(z_h; 0, I) + log |det|` `[batch]` and, with `regularise`, the ODE
    /// regulariser `[batch]` are handed to `loss` (the regulariser as `None` otherwise); returns
    /// the dynamics' parameter gradients and `dL/dx` (through the centring) and `dL/dh` in
    /// [`AdjointLikelihood::grad_h`], so that the caller can carry the gradient on into
    /// whatever produced `x` and `h` (the dequantizer and ActNorm of the QM9 E-NF). Memory is
    /// flat in the number of solver steps.
    ///
    /// Errors: as [`Cnf::encode_features`] and [`Cnf::log_likelihood_adjoint`].
    #[allow(clippy::too_many_arguments)]
    pub fn log_likelihood_features_adjoint(
        &self,
        x: &Tensor,
        h: &Tensor,
        masks: &Masks,
        probes: Probes,
        params: &[Tensor],
        regularise: bool,
        loss: impl FnOnce(&Tensor, Option<&Tensor>) -> Tensor,
    ) -> Result<AdjointLikelihood, FlowError> {
        self.adjoint_solve(x, Some(h), masks, probes, params, regularise, loss)
    }

    #[allow(clippy::too_many_arguments)]
    fn adjoint_solve(
        &self,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
        probes: Probes,
        params: &[Tensor],
        regularise: bool,
        loss: impl FnOnce(&Tensor, Option<&Tensor>) -> Tensor,
    ) -> Result<AdjointLikelihood, FlowError> {
        let h = h.map(Tensor::detach);
        let (mut forward_rhs, mut y0) =
            self.density_problem(&x.detach(), h.as_ref(), masks, probes, false)?;
        if regularise {
            forward_rhs.regularise = true;
            y0.push(y0[1].zeros_like());
        }
        let (y1, forward) = tch::no_grad(|| self.solver.solve(&forward_rhs, 0.0, 1.0, &y0))?;

        // dL/dz, dL/d(log det) (and dL/d(regulariser)) from the loss of log p_Z(z) + log det.
        let outputs: Vec<Tensor> = y1
            .iter()
            .map(|v| v.detach().set_requires_grad(true))
            .collect();
        let layout = forward_rhs.layout;
        let (loss_value, log_likelihood, cotangents) = tch::with_grad(|| {
            let (z, z_h) = layout.split(&outputs[0]);
            let mut ll = self.prior.log_prob(&z, &masks.node)? + &outputs[1];
            if let Some(z_h) = &z_h {
                ll += StandardGaussian.log_prob(z_h, &masks.node)?;
            }
            let l = loss(&ll, outputs.get(2));
            let grads = Tensor::f_run_backward(&[&l], &outputs, false, false)?;
            let grads: Vec<Tensor> = grads
                .into_iter()
                .zip(&outputs)
                .map(|(g, v)| if g.defined() { g } else { v.zeros_like() })
                .collect();
            Ok::<_, FlowError>((l.detach(), ll.detach(), grads))
        })?;
        let regulariser = regularise.then(|| y1[2].detach());

        let backward_rhs = DensityRhs {
            create_graph: true,
            forward_mode: self.forward_mode_trace,
            ..forward_rhs
        };
        let zeros: Vec<Tensor> = y0.iter().map(|v| v.zeros_like()).collect();
        let grads = adjoint_gradients(
            &self.adjoint,
            &backward_rhs,
            params,
            &[0.0, 1.0],
            &[y0, y1],
            &[zeros, cotangents],
        )?;
        // x0 = centre(x) is a linear projection; its adjoint is the same projection.
        let node_mask = (!masks.all_real).then_some(&masks.node);
        let (grad_x0, grad_h) = layout.split(&grads.y0[0]);
        let grad_x = geometry::centre(&grad_x0, node_mask)?;
        // Padded features are not inputs of the flow: their gradient is exactly zero.
        let grad_h = grad_h.map(|g| g * masks.node.unsqueeze(-1));
        Ok(AdjointLikelihood {
            loss: loss_value,
            log_likelihood,
            regulariser,
            grad_h,
            param_grads: grads.params,
            grad_x,
            forward,
            backward: grads.stats,
        })
    }

    /// The augmented problem of a density solve: its right-hand side and initial state
    /// `[centre(x), 0]` (or `[[centre(x), h], 0]` with features), after checking the positions,
    /// the features, the masks and the probes.
    fn density_problem<'a>(
        &'a self,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &'a Masks,
        probes: Probes,
        create_graph: bool,
    ) -> Result<(DensityRhs<'a, D>, Vec<Tensor>), FlowError> {
        expect_positions(x)?;
        masks.check_fits(x)?;
        let size = x.size();
        let node_mask = (!masks.all_real).then_some(&masks.node);
        let x0 = geometry::centre(x, node_mask)?;
        let s0 = match h {
            None => x0,
            Some(h) => Tensor::cat(&[&x0, &checked_features(h, &size, masks)?], -1),
        };
        let trace = self.trace_work(probes, &s0.size(), masks)?;
        let log_det0 = Tensor::zeros([size[0]], (x.kind(), x.device()));
        let rhs = DensityRhs {
            dynamics: &self.dynamics,
            masks,
            trace,
            create_graph,
            regularise: false,
            forward_mode: self.forward_mode_trace,
            layout: StateLayout {
                n_dims: size[2],
                features: h.is_some(),
            },
        };
        Ok((rhs, vec![s0, log_det0]))
    }

    /// The trace work of a solve on positions of `size`, checking the probes' shape.
    fn trace_work(
        &self,
        probes: Probes,
        size: &[i64],
        masks: &Masks,
    ) -> Result<TraceWork, FlowError> {
        match probes {
            Probes::Hutchinson(eps) if eps.size() != size => Err(FlowError::Shape {
                what: "Hutchinson probes",
                expected: format!("{size:?}"),
                got: eps.size(),
            }),
            Probes::Hutchinson(eps) => Ok(TraceWork::Hutchinson(eps)),
            Probes::Exact => Ok(TraceWork::Exact(masks.repeat(size[1] * size[2]))),
        }
    }

    fn log_likelihood_of(
        &self,
        enc: Encoded,
        masks: &Masks,
    ) -> Result<(Tensor, SolveStats), FlowError> {
        Ok((self.log_prior(&enc, masks)? + &enc.log_det, enc.stats))
    }

    /// The base density of an encoding, `[batch]` in nats: `log p_Z(z)` of the latent positions,
    /// plus `log N(z_h; 0, I)` of the latent features when there are any (E-NF section 4).
    ///
    /// Errors: [`FlowError::Shape`] when the latents do not fit the node mask.
    pub fn log_prior(&self, enc: &Encoded, masks: &Masks) -> Result<Tensor, FlowError> {
        let log_pz = self.prior.log_prob(&enc.z, &masks.node)?;
        Ok(match &enc.z_h {
            Some(z_h) => log_pz + StandardGaussian.log_prob(z_h, &masks.node)?,
            None => log_pz,
        })
    }

    /// Log-likelihood `log p(x, h) = log p_Z(z_x) + log N(z_h; 0, I) + log |det|` in nats,
    /// `[batch]`, of positions `x [batch, nodes, dims]` and features `h [batch, nodes, nf]` (E-NF
    /// eq. 11 with the feature prior of section 4), probes as [`Cnf::encode_features`].
    ///
    /// Errors: as [`Cnf::encode_features`].
    pub fn log_likelihood_features(
        &self,
        x: &Tensor,
        h: &Tensor,
        masks: &Masks,
        probes: Probes,
        mode: GradientMode,
    ) -> Result<(Tensor, SolveStats), FlowError> {
        let enc = self.encode_features(x, h, masks, probes, mode)?;
        self.log_likelihood_of(enc, masks)
    }

    /// Maps latent positions `z [batch, nodes, dims]` back to data space by integrating the
    /// velocity from t = 1 to t = 0.
    ///
    /// Errors: [`FlowError::Shape`], [`FlowError::Ode`].
    pub fn decode(
        &self,
        z: &Tensor,
        masks: &Masks,
        mode: GradientMode,
    ) -> Result<(Tensor, SolveStats), FlowError> {
        expect_positions(z)?;
        masks.check_fits(z)?;
        let layout = StateLayout {
            n_dims: z.size()[2],
            features: false,
        };
        let (s, stats) = self.decode_state(z.shallow_clone(), masks, layout, mode)?;
        Ok((s, stats))
    }

    /// Maps latent positions `z_x [batch, nodes, dims]` and features `z_h [batch, nodes, nf]`
    /// back to data space (t = 1 to 0) for a flow over both. Returns `(x, h, stats)`.
    ///
    /// Errors: [`FlowError::Shape`], [`FlowError::Ode`].
    pub fn decode_features(
        &self,
        z_x: &Tensor,
        z_h: &Tensor,
        masks: &Masks,
        mode: GradientMode,
    ) -> Result<(Tensor, Tensor, SolveStats), FlowError> {
        expect_positions(z_x)?;
        masks.check_fits(z_x)?;
        let size = z_x.size();
        let s = Tensor::cat(&[z_x, &checked_features(z_h, &size, masks)?], -1);
        let layout = StateLayout {
            n_dims: size[2],
            features: true,
        };
        let (s, stats) = self.decode_state(s, masks, layout, mode)?;
        let (x, h) = layout.split(&s);
        Ok((x, h.unwrap_or_else(Tensor::new), stats))
    }

    fn decode_state(
        &self,
        s: Tensor,
        masks: &Masks,
        layout: StateLayout,
        mode: GradientMode,
    ) -> Result<(Tensor, SolveStats), FlowError> {
        let rhs = VelocityRhs {
            dynamics: &self.dynamics,
            masks,
            layout,
        };
        let (mut y, stats) = Self::run(mode, || self.solver.solve(&rhs, 1.0, 0.0, &[s]))?;
        Ok((y.pop().unwrap_or_else(Tensor::new), stats))
    }

    /// Draws positions `[batch, nodes, n_dims]` for the graphs of `masks`: z from the prior, then
    /// [`Cnf::decode`]. Uses the libtorch generator. Returns the samples and the latent draws.
    ///
    /// Errors: [`FlowError::Ode`] when the backward solve fails.
    pub fn sample(
        &self,
        masks: &Masks,
        n_dims: i64,
        kind: Kind,
    ) -> Result<(Tensor, Tensor, SolveStats), FlowError> {
        let z = self
            .prior
            .sample(&masks.node, n_dims, kind, masks.node.device())?;
        let (x, stats) = self.decode(&z, masks, GradientMode::NoGrad)?;
        Ok((x, z, stats))
    }
}

/// Checks that features `h` are `[batch, nodes, nf]` for positions of `size`; returns them with
/// padded nodes set to exactly 0 (so that padding never enters the prior or the dynamics).
fn checked_features(h: &Tensor, size: &[i64], masks: &Masks) -> Result<Tensor, FlowError> {
    let hs = h.size();
    if hs.len() != 3 || hs[..2] != size[..2] {
        return Err(FlowError::Shape {
            what: "node features",
            expected: format!("[{}, {}, nf]", size[0], size[1]),
            got: hs,
        });
    }
    Ok(if masks.all_real {
        h.shallow_clone()
    } else {
        h * masks.node.to_kind(h.kind()).unsqueeze(-1)
    })
}
