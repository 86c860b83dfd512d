//! Gradients of an E-NF's log-likelihood, in f64 at DW4 size with the Hutchinson probes fixed: the
//! adjoint method, backpropagation through the solver and central finite differences agree.

use egnn::testing::random_dynamics;
use egnn::{EgnnConfig, Masks};
use flow::{Cnf, GradientMode, Noise, Probes, TraceEstimator};
use ode::OdeSolver;
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);
/// Tight tolerances make the solver's error (and its step-size jumps) far smaller than the
/// finite-difference step's effect (1e-11 against 1e-4 * gradient).
const TOL: f64 = 1e-11;
const FD_STEP: f64 = 1e-4;

/// The weighted loss of the test: both signs, so that no cancellation hides a wrong cotangent.
fn loss(ll: &Tensor) -> Tensor {
    let w = Tensor::from_slice(&[1.0f64, 0.5, -0.25]);
    -(ll * w).sum(Kind::Double)
}

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
}

#[test]
fn adjoint_backprop_and_finite_differences_agree_on_a_dw4_flow() {
    let _rng = geometry::testing::seeded(0);
    let (vs, dynamics) = random_dynamics(&EgnnConfig::default(), 11, 0.1, Kind::Double).unwrap();
    let cnf = Cnf::new(dynamics, OdeSolver::dopri5(TOL, TOL));
    tch::manual_seed(12);
    let x = geometry::centre(&(Tensor::randn([3, 4, 2], F64) * 1.5), None).unwrap();
    let masks = Masks::full(3, 4, Kind::Double, Device::Cpu);
    let eps = TraceEstimator::Hutchinson(Noise::Rademacher).probes(
        &x.size(),
        &masks.node,
        Kind::Double,
        Device::Cpu,
    );
    let Probes::Hutchinson(eps) = eps else {
        unreachable!()
    };
    let probes = || Probes::Hutchinson(eps.shallow_clone());
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();

    // Backpropagation through the solver steps.
    let x_leaf = x.detach().set_requires_grad(true);
    let (ll, stats) = cnf
        .log_likelihood_with_probes(&x_leaf, &masks, probes(), GradientMode::Backprop)
        .unwrap();
    let mut inputs: Vec<&Tensor> = vec![&x_leaf];
    inputs.extend(params.iter());
    let backprop = Tensor::run_backward(&[loss(&ll)], &inputs, false, false);

    // The adjoint method.
    let adj = cnf
        .log_likelihood_adjoint(&x, &masks, probes(), &params, loss)
        .unwrap();
    assert!(rel(&adj.log_likelihood, &ll.detach()) < 1e-9);
    let err_x = rel(&adj.grad_x, &backprop[0]);
    assert!(err_x < 1e-5, "dL/dx: adjoint against backprop {err_x}");
    let mut worst = (0.0f64, String::new());
    for ((name, _), (a, b)) in named.iter().zip(adj.param_grads.iter().zip(&backprop[1..])) {
        let a = a.as_ref().expect("every parameter requires gradients");
        if b.defined() {
            let e = rel(a, b);
            if e > worst.0 {
                worst = (e, name.clone());
            }
        } else {
            assert_eq!(a.abs().max().double_value(&[]), 0.0, "{name}");
        }
    }
    assert!(worst.0 < 1e-5, "worst parameter {}: {}", worst.1, worst.0);

    // Central finite differences of the loss, for the input and three parameters, each at the
    // entry with the largest gradient.
    let loss_at = || -> f64 {
        let (ll, _) = cnf
            .log_likelihood_with_probes(&x, &masks, probes(), GradientMode::NoGrad)
            .unwrap();
        loss(&ll).double_value(&[])
    };
    let checks = [
        "egnn.layers.0.edge_mlp.linear_in.source.weight",
        "egnn.layers.1.coord_mlp.linear_in.weight",
        "egnn.layers.1.node_mlp.linear_out.bias",
    ];
    let mut targets: Vec<(String, Tensor, Tensor)> =
        vec![("x".into(), x.shallow_clone(), adj.grad_x.shallow_clone())];
    for name in checks {
        let i = named
            .iter()
            .position(|(n, _)| n.ends_with(name))
            .unwrap_or_else(|| {
                panic!(
                    "no parameter {name} among {:?}",
                    named.iter().map(|n| &n.0).collect::<Vec<_>>()
                )
            });
        targets.push((
            name.into(),
            params[i].shallow_clone(),
            adj.param_grads[i].as_ref().unwrap().shallow_clone(),
        ));
    }
    for (name, tensor, grad) in targets {
        let flat = grad.flatten(0, -1);
        let k = flat.abs().argmax(0, false).int64_value(&[]);
        let g = flat.double_value(&[k]);
        let nudge = |delta: f64| {
            tch::no_grad(|| {
                let view = tensor.view(-1);
                let _ = view.get(k).f_add_scalar_(delta).unwrap();
            })
        };
        nudge(FD_STEP);
        let up = loss_at();
        nudge(-2.0 * FD_STEP);
        let down = loss_at();
        nudge(FD_STEP);
        let fd = (up - down) / (2.0 * FD_STEP);
        assert!(
            g.abs() > 1e-3,
            "{name}: the gradient must not be trivial ({g})"
        );
        let e = (fd - g).abs() / g.abs();
        eprintln!("{name}[{k}]: finite differences {fd:.10e}, adjoint {g:.10e}, relative {e:.1e}");
        assert!(
            e < 1e-5,
            "{name}[{k}]: finite differences {fd}, adjoint {g}, relative {e}"
        );
    }
    eprintln!(
        "forward {} NFE, backward {} NFE, worst parameter error {:e} ({})",
        stats.nfe, adj.backward.nfe, worst.0, worst.1
    );
}
