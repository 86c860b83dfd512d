//! The trace by forward mode (`J eps` for Hutchinson, `J e_k` for the exact trace; the default
//! where it applies) and by reverse mode (`eps^T J`, `Cnf::forward_mode_trace = false`) give the
//! same flow, in f64 with fixed probes: the same log-likelihood and solver steps without
//! gradients (Hutchinson's and the exact trace), and the same gradients with Hutchinson's trace
//! by backpropagation through the solver (which then differentiates the forward-mode pass) and by
//! the adjoint method (whose backward solve does), for a particle system and for a padded batch
//! with node features. A counting wrapper checks that
//! each mode really took its path.

use egnn::testing::randomise_parameters;
use egnn::{Dynamics, EgnnConfig, EgnnDynamics, EgnnError, Masks, Velocity};
use flow::{Cnf, GradientMode, Noise, Probes};
use ode::OdeSolver;
use std::cell::Cell;
use tch::{nn::VarStore, Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
}

/// E-NF dynamics that count the calls of each derivative path.
struct Counting {
    inner: EgnnDynamics,
    velocity: Cell<usize>,
    jvp: Cell<usize>,
}

impl Dynamics for Counting {
    fn velocity(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<Velocity, EgnnError> {
        self.velocity.set(self.velocity.get() + 1);
        self.inner.velocity(t, x, h, masks)
    }

    fn velocity_jvp(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        dx: &Tensor,
        dh: Option<&Tensor>,
        masks: &Masks,
    ) -> Option<Result<(Velocity, Velocity), EgnnError>> {
        self.jvp.set(self.jvp.get() + 1);
        self.inner.velocity_jvp(t, x, h, dx, dh, masks)
    }
}

/// What one mode gives: the log-likelihood `[batch]` and NFE of solves without gradients with
/// Hutchinson's and with the exact trace, and the adjoint method's log-likelihood, gradients with
/// respect to the input positions and every parameter (name order), and backward NFE, with
/// Hutchinson's trace.
struct Outcome {
    ll: Vec<Tensor>,
    nfe: Vec<usize>,
    adjoint_ll: Tensor,
    grads: Vec<Tensor>,
    backward_nfe: usize,
    backprop_ll: Tensor,
    backprop_grads: Vec<Tensor>,
}

fn outcome(
    cnf: &mut Cnf<Counting>,
    vs: &VarStore,
    forward_mode: bool,
    x: &Tensor,
    h: Option<&Tensor>,
    masks: &Masks,
    eps: &Tensor,
) -> Outcome {
    cnf.forward_mode_trace = forward_mode;
    cnf.dynamics.velocity.set(0);
    cnf.dynamics.jvp.set(0);
    let hutchinson = || Probes::Hutchinson(eps.shallow_clone());
    let (mut ll, mut nfe) = (vec![], vec![]);
    for probes in [hutchinson(), Probes::Exact] {
        let (l, stats) = match h {
            None => cnf.log_likelihood_with_probes(x, masks, probes, GradientMode::NoGrad),
            Some(h) => cnf.log_likelihood_features(x, h, masks, probes, GradientMode::NoGrad),
        }
        .unwrap();
        ll.push(l);
        nfe.push(stats.nfe);
    }
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
    // Weights of both signs, so that no cancellation hides a wrong cotangent.
    let w = Tensor::from_slice(&[1.0f64, 0.5, -0.25]);
    // Backpropagation through the solver steps, with respect to the positions and parameters.
    let x_leaf = x.detach().set_requires_grad(true);
    let (backprop_ll, _) = match h {
        None => {
            cnf.log_likelihood_with_probes(&x_leaf, masks, hutchinson(), GradientMode::Backprop)
        }
        Some(h) => {
            cnf.log_likelihood_features(&x_leaf, h, masks, hutchinson(), GradientMode::Backprop)
        }
    }
    .unwrap();
    let mut inputs = vec![&x_leaf];
    inputs.extend(&params);
    let backprop_grads = Tensor::run_backward(
        &[(&backprop_ll * &w).sum(Kind::Double)],
        &inputs,
        false,
        false,
    );
    let adj = match h {
        None => cnf.log_likelihood_adjoint(x, masks, hutchinson(), &params, |ll| {
            (ll * &w).sum(Kind::Double)
        }),
        Some(h) => cnf.log_likelihood_features_adjoint(
            x,
            h,
            masks,
            hutchinson(),
            &params,
            false,
            |ll, _| (ll * &w).sum(Kind::Double),
        ),
    }
    .unwrap();
    let mut grads = vec![adj.grad_x];
    grads.extend(adj.param_grads.into_iter().map(|g| g.expect("trainable")));
    // Every evaluation took the path of its mode.
    let (velocity, jvp) = (cnf.dynamics.velocity.get(), cnf.dynamics.jvp.get());
    if forward_mode {
        assert!(velocity == 0 && jvp > 0, "velocity {velocity}, jvp {jvp}");
    } else {
        assert!(velocity > 0 && jvp == 0, "velocity {velocity}, jvp {jvp}");
    }
    Outcome {
        ll,
        nfe,
        adjoint_ll: adj.log_likelihood,
        grads,
        backward_nfe: adj.backward.nfe,
        backprop_ll: backprop_ll.detach(),
        backprop_grads,
    }
}

/// Both modes compute the same integrand up to round-off (1e-15 relative, `tests/jvp.rs` of the
/// egnn crate); the solver at 1e-8 takes the same steps, so the results agree to round-off
/// amplified by the solve: 1e-10 relative is generous, a wrong trace is off by O(1).
fn assert_same(
    cnf: &mut Cnf<Counting>,
    vs: &VarStore,
    x: &Tensor,
    h: Option<&Tensor>,
    masks: &Masks,
    eps: &Tensor,
) {
    let f = outcome(cnf, vs, true, x, h, masks, eps);
    let r = outcome(cnf, vs, false, x, h, masks, eps);
    for (k, trace) in ["Hutchinson", "exact"].iter().enumerate() {
        assert_eq!(f.nfe[k], r.nfe[k], "{trace}: different solver steps");
        let e = rel(&f.ll[k], &r.ll[k]);
        assert!(e < 1e-10, "{trace} log-likelihood: {e:e}");
    }
    assert_eq!(f.backward_nfe, r.backward_nfe, "different adjoint steps");
    let e = rel(&f.adjoint_ll, &r.adjoint_ll);
    assert!(e < 1e-10, "adjoint's log-likelihood: {e:e}");
    assert_eq!(f.grads.len(), r.grads.len());
    for (i, (a, b)) in f.grads.iter().zip(&r.grads).enumerate() {
        let e = rel(a, b);
        assert!(e < 1e-10, "gradient {i}: {e:e}");
    }
    let e = rel(&f.backprop_ll, &r.backprop_ll);
    assert!(e < 1e-10, "backprop's log-likelihood: {e:e}");
    assert_eq!(f.backprop_grads.len(), f.grads.len());
    for (i, (a, b)) in f.backprop_grads.iter().zip(&r.backprop_grads).enumerate() {
        // A parameter the velocity does not depend on (the last layer's feature update without
        // node features) has no gradient in either mode; the adjoint's is exactly zero.
        assert_eq!(a.defined(), b.defined(), "backprop gradient {i}");
        if a.defined() {
            let e = rel(a, b);
            assert!(e < 1e-10, "backprop gradient {i}: {e:e}");
        } else {
            assert_eq!(
                f.grads[i].abs().max().double_value(&[]),
                0.0,
                "gradient {i}"
            );
        }
    }
    let reached = f.backprop_grads.iter().filter(|g| g.defined()).count();
    assert!(
        reached * 4 > f.backprop_grads.len() * 3,
        "{reached} gradients defined"
    );
    let scale = f.backprop_grads[0].abs().max().double_value(&[]);
    assert!(scale > 1e-3, "trivial backprop gradient {scale}");
    let scale = f.grads[0].abs().max().double_value(&[]);
    assert!(scale > 1e-3, "trivial gradient {scale}");
}

/// A flow with E-NF dynamics (`node_nf` features) in f64, parameters from N(0, 0.1^2).
fn flow(node_nf: i64) -> (VarStore, Cnf<Counting>) {
    let mut vs = VarStore::new(Device::Cpu);
    let inner = EgnnDynamics::new(vs.root(), &EgnnConfig::default(), node_nf).unwrap();
    vs.set_kind(Kind::Double);
    randomise_parameters(&vs, 0.1);
    let dynamics = Counting {
        inner,
        velocity: Cell::new(0),
        jvp: Cell::new(0),
    };
    (vs, Cnf::new(dynamics, OdeSolver::dopri5(1e-8, 1e-8)))
}

#[test]
fn forward_and_reverse_mode_traces_agree_on_a_dw4_flow() {
    let _rng = geometry::testing::seeded(21);
    let (vs, mut cnf) = flow(0);
    let x = geometry::centre(&(Tensor::randn([3, 4, 2], F64) * 1.5), None).unwrap();
    let masks = Masks::full(3, 4, Kind::Double, Device::Cpu);
    let eps = Noise::Rademacher.sample(&[3, 4, 2], &masks.node, Kind::Double, Device::Cpu);
    assert_same(&mut cnf, &vs, &x, None, &masks, &eps);
}

#[test]
fn forward_and_reverse_mode_traces_agree_on_a_padded_flow_with_features() {
    let _rng = geometry::testing::seeded(22);
    let (vs, mut cnf) = flow(2);
    // Graphs of 5, 3 and 4 nodes padded to 5.
    let node_mask = Tensor::from_slice(&[
        1.0f64, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0,
    ])
    .view([3, 5]);
    let masks = Masks::from_node_mask(&node_mask);
    let node = node_mask.unsqueeze(-1);
    let x = Tensor::randn([3, 5, 3], F64) * 1.5 * &node;
    let h = Tensor::randn([3, 5, 2], F64) * &node;
    let eps = Noise::Gaussian.sample(&[3, 5, 5], &masks.node, Kind::Double, Device::Cpu);
    assert_same(&mut cnf, &vs, &x, Some(&h), &masks, &eps);
}
