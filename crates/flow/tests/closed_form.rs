//! A flow over dynamics with a closed-form divergence (kernel dynamics) uses it: the
//! log-likelihood equals the one computed with the exact trace by autograd, whatever trace
//! estimator is asked for, and the adjoint works through it.

use egnn::{Dynamics, EgnnError, KernelConfig, KernelDynamics, Masks, Velocity};
use flow::{Cnf, GradientMode, Noise, TraceEstimator};
use ode::OdeSolver;
use tch::{nn::VarStore, Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// The same dynamics with the closed form hidden, so the flow falls back to autograd traces.
struct WithoutClosedForm<'a>(&'a KernelDynamics);

impl Dynamics for WithoutClosedForm<'_> {
    fn velocity(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<Velocity, EgnnError> {
        self.0.velocity(t, x, h, masks)
    }
}

#[test]
fn closed_form_divergence_gives_the_exact_log_likelihood() {
    let _rng = geometry::testing::seeded(51);
    tch::manual_seed(52);
    let mut vs = VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    let kernel = KernelDynamics::new(vs.root(), &KernelConfig::default()).unwrap();
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            if name == "weights" {
                v.copy_(&(Tensor::randn(v.size(), F64) * 0.3));
            }
        }
    });
    let x = geometry::centre(&(Tensor::randn([5, 4, 2], F64) * 1.5), None).unwrap();
    let masks = Masks::full(5, 4, Kind::Double, Device::Cpu);
    let solver = OdeSolver::dopri5(1e-9, 1e-9);
    let closed = Cnf::new(kernel, solver.clone());
    let hutchinson = TraceEstimator::Hutchinson(Noise::Rademacher);
    let ll = |trace| {
        closed
            .log_likelihood(&x, &masks, trace, GradientMode::NoGrad)
            .unwrap()
            .0
    };
    let (ll_h, ll_e) = (ll(hutchinson), ll(TraceEstimator::Exact));
    assert_eq!((ll_h - &ll_e).abs().max().double_value(&[]), 0.0);

    let autograd = Cnf::new(WithoutClosedForm(&closed.dynamics), solver);
    let (ll_ref, _) = autograd
        .log_likelihood(&x, &masks, TraceEstimator::Exact, GradientMode::NoGrad)
        .unwrap();
    let err = (&ll_e - &ll_ref).abs().max().double_value(&[]);
    let change = (&ll_ref - closed.prior.log_prob(&x, &masks.node).unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert!(change > 0.1, "the flow must move the density: {change}");
    assert!(err < 1e-8, "closed form against autograd: {err}");

    // The adjoint differentiates through the closed form.
    let params = vs.trainable_variables();
    let probes = hutchinson.probes(&x.size(), &masks.node, Kind::Double, Device::Cpu);
    let out = closed
        .log_likelihood_adjoint(&x, &masks, probes, &params, |ll| -ll.sum(Kind::Double))
        .unwrap();
    let g = out.param_grads[0].as_ref().unwrap();
    assert!(g.isfinite().all().int64_value(&[]) == 1 && g.abs().max().double_value(&[]) > 0.0);
}
