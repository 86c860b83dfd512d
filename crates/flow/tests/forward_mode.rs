//! Hutchinson's estimate by forward mode (`J eps`, the default where it applies) and by reverse
//! mode (`eps^T J`, `Cnf::forward_mode_trace = false`) give the same flow, in f64 with fixed
//! probes: the same log-likelihood and solver steps without gradients (Hutchinson's and the exact
//! trace, which forward mode takes from `J e_k` for every unit vector), and the same gradients by
//! the adjoint method (whose backward solve differentiates the forward-mode pass), for a particle
//! system and for a padded batch with node features.

use egnn::testing::randomise_parameters;
use egnn::{EgnnConfig, EgnnDynamics, Masks};
use flow::{Cnf, GradientMode, Noise, Probes};
use ode::OdeSolver;
use tch::{nn::VarStore, Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1e-300)
}

/// What one mode gives: the log-likelihood `[batch]` and NFE of a solve without gradients, and
/// the adjoint method's log-likelihood, gradients with respect to the input positions and every
/// parameter (name order), and backward NFE.
struct Outcome {
    ll: Tensor,
    nfe: usize,
    exact_ll: Tensor,
    adjoint_ll: Tensor,
    grads: Vec<Tensor>,
    backward_nfe: usize,
}

fn outcome(
    cnf: &mut Cnf<EgnnDynamics>,
    vs: &VarStore,
    forward_mode: bool,
    x: &Tensor,
    h: Option<&Tensor>,
    masks: &Masks,
    eps: &Tensor,
) -> Outcome {
    cnf.forward_mode_trace = forward_mode;
    let probes = || Probes::Hutchinson(eps.shallow_clone());
    let (ll, stats) = match h {
        None => cnf.log_likelihood_with_probes(x, masks, probes(), GradientMode::NoGrad),
        Some(h) => cnf.log_likelihood_features(x, h, masks, probes(), GradientMode::NoGrad),
    }
    .unwrap();
    let (exact_ll, _) = match h {
        None => cnf.log_likelihood_with_probes(x, masks, Probes::Exact, GradientMode::NoGrad),
        Some(h) => cnf.log_likelihood_features(x, h, masks, Probes::Exact, GradientMode::NoGrad),
    }
    .unwrap();
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let params: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
    // Weights of both signs, so that no cancellation hides a wrong cotangent.
    let w = Tensor::from_slice(&[1.0f64, 0.5, -0.25]);
    let adj = match h {
        None => cnf.log_likelihood_adjoint(x, masks, probes(), &params, |ll| {
            (ll * &w).sum(Kind::Double)
        }),
        Some(h) => {
            cnf.log_likelihood_features_adjoint(x, h, masks, probes(), &params, false, |ll, _| {
                (ll * &w).sum(Kind::Double)
            })
        }
    }
    .unwrap();
    let mut grads = vec![adj.grad_x];
    grads.extend(adj.param_grads.into_iter().map(|g| g.expect("trainable")));
    Outcome {
        ll,
        nfe: stats.nfe,
        exact_ll,
        adjoint_ll: adj.log_likelihood,
        grads,
        backward_nfe: adj.backward.nfe,
    }
}

/// Both modes compute the same integrand up to round-off (1e-15 relative, `tests/jvp.rs` of the
/// egnn crate); the solver at 1e-8 takes the same steps, so the results agree to round-off
/// amplified by the solve: 1e-10 relative is generous, a wrong trace is off by O(1).
fn assert_same(
    cnf: &mut Cnf<EgnnDynamics>,
    vs: &VarStore,
    x: &Tensor,
    h: Option<&Tensor>,
    masks: &Masks,
    eps: &Tensor,
) {
    let f = outcome(cnf, vs, true, x, h, masks, eps);
    let r = outcome(cnf, vs, false, x, h, masks, eps);
    assert_eq!(f.nfe, r.nfe, "different solver steps");
    assert_eq!(f.backward_nfe, r.backward_nfe, "different adjoint steps");
    for (what, a, b) in [
        ("log-likelihood", &f.ll, &r.ll),
        ("exact trace's", &f.exact_ll, &r.exact_ll),
        ("adjoint's", &f.adjoint_ll, &r.adjoint_ll),
    ] {
        let e = rel(a, b);
        assert!(e < 1e-10, "{what}: {e:e}");
    }
    assert_eq!(f.grads.len(), r.grads.len());
    for (i, (a, b)) in f.grads.iter().zip(&r.grads).enumerate() {
        let e = rel(a, b);
        assert!(e < 1e-10, "gradient {i}: {e:e}");
    }
    assert!(
        f.grads[0].abs().max().double_value(&[]) > 1e-3,
        "trivial gradient"
    );
}

#[test]
fn forward_and_reverse_mode_traces_agree_on_a_dw4_flow() {
    let _rng = geometry::testing::seeded(21);
    let mut vs = VarStore::new(Device::Cpu);
    let dynamics = EgnnDynamics::new(vs.root(), &EgnnConfig::default(), 0).unwrap();
    vs.set_kind(Kind::Double);
    randomise_parameters(&vs, 0.1);
    let mut cnf = Cnf::new(dynamics, OdeSolver::dopri5(1e-8, 1e-8));
    let x = geometry::centre(&(Tensor::randn([3, 4, 2], F64) * 1.5), None).unwrap();
    let masks = Masks::full(3, 4, Kind::Double, Device::Cpu);
    let eps = Noise::Rademacher.sample(&[3, 4, 2], &masks.node, Kind::Double, Device::Cpu);
    assert_same(&mut cnf, &vs, &x, None, &masks, &eps);
}

#[test]
fn forward_and_reverse_mode_traces_agree_on_a_padded_flow_with_features() {
    let _rng = geometry::testing::seeded(22);
    let mut vs = VarStore::new(Device::Cpu);
    let dynamics = EgnnDynamics::new(vs.root(), &EgnnConfig::default(), 2).unwrap();
    vs.set_kind(Kind::Double);
    randomise_parameters(&vs, 0.1);
    let mut cnf = Cnf::new(dynamics, OdeSolver::dopri5(1e-8, 1e-8));
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
