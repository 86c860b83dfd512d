//! The mathematics of the flow, in f64: prior, traces, invariance of the likelihood, inversion,
//! and finiteness at degenerate configurations.

use egnn::testing::{random_dynamics, trace_by_columns};
use egnn::{Dynamics, EgnnConfig, EgnnDynamics, Masks};
use flow::trace::{exact_from_replicas, hutchinson};
use flow::{CentredGaussian, Cnf, GradientMode, Noise, TraceEstimator};
use geometry::{max_deviation, Covariance, Graphs, Transform};
use ode::OdeSolver;
use rand::{rngs::StdRng, SeedableRng};
use tch::{nn::VarStore, Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// Every test holds libtorch's generator for its whole duration (see `geometry::testing`).
fn dynamics(seed: i64, std: f64) -> (VarStore, EgnnDynamics) {
    random_dynamics(&EgnnConfig::default(), seed, std, Kind::Double).unwrap()
}

fn dw4_batch(batch: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed); // the caller holds the generator's lock
    geometry::centre(&(Tensor::randn([batch, 4, 2], F64) * 1.5), None).unwrap()
}

#[test]
fn centred_gaussian_equals_a_standard_normal_on_the_subspace() {
    let _rng = geometry::testing::seeded(0);
    // Coordinates in an orthonormal basis of the zero-mean subspace (eigenvectors of the centring
    // projector with eigenvalue 1) must be standard normal with (M - 1) n degrees of freedom.
    let (m, n) = (5i64, 3i64);
    tch::manual_seed(3);
    let z = geometry::centre(&Tensor::randn([2, m, n], F64), None).unwrap();
    let projector = Tensor::eye(m, F64) - Tensor::ones([m, m], F64) / m as f64;
    let (eigenvalues, vectors) = Tensor::linalg_eigh(&projector, "L");
    let basis = vectors.index_select(1, &eigenvalues.gt(0.5).nonzero().squeeze_dim(1)); // [m, m-1]
    assert_eq!(basis.size(), [m, m - 1]);
    let coords = basis.tr().matmul(&z); // [2, m-1, n]
    let dof = ((m - 1) * n) as f64;
    let expected = coords
        .square()
        .sum_dim_intlist(&[1i64, 2][..], false, Kind::Double)
        * -0.5
        - dof * 0.5 * (2.0 * std::f64::consts::PI).ln();
    let mask = Tensor::ones([2, m], F64);
    let got = CentredGaussian.log_prob(&z, &mask).unwrap();
    let err = (got - expected).abs().max().double_value(&[]);
    assert!(err < 1e-12, "{err}");
}

#[test]
fn batched_exact_trace_equals_the_jacobian_trace_column_by_column() {
    let _rng = geometry::testing::seeded(0);
    let (_vs, dynamics) = dynamics(1, 0.5);
    let x = dw4_batch(3, 4);
    let masks = Masks::full(3, 4, Kind::Double, Device::Cpu);
    let reference = trace_by_columns(&dynamics, 0.3, &x, &masks).unwrap();
    let x_rep = x.repeat([8, 1, 1]).set_requires_grad(true);
    let v_rep = dynamics
        .velocity(0.3, &x_rep, None, &masks.repeat(8))
        .unwrap()
        .x;
    let exact = exact_from_replicas(&v_rep, &x_rep, false).unwrap();
    let scale = reference.abs().max().double_value(&[]);
    assert!(scale > 1e-2, "the Jacobian must not be trivial: {scale}");
    let err = (exact - &reference).abs().max().double_value(&[]);
    assert!(err < 1e-10 * scale.max(1.0), "{err}");
}

#[test]
fn hutchinson_mean_matches_the_exact_trace_within_three_standard_errors() {
    let _rng = geometry::testing::seeded(0);
    let (_vs, dynamics) = dynamics(2, 0.5);
    let x = dw4_batch(1, 5);
    let masks1 = Masks::full(1, 4, Kind::Double, Device::Cpu);
    let exact = trace_by_columns(&dynamics, 0.3, &x, &masks1)
        .unwrap()
        .double_value(&[0]);
    for noise in [Noise::Rademacher, Noise::Gaussian] {
        // 4,000 independent probes of the same point, as one batch.
        let k = 4000;
        tch::manual_seed(6);
        let xs = x.repeat([k, 1, 1]).set_requires_grad(true);
        let masks = Masks::full(k, 4, Kind::Double, Device::Cpu);
        let v = dynamics.velocity(0.3, &xs, None, &masks).unwrap().x;
        let eps = noise.sample(&[k, 4, 2], &masks.node, Kind::Double, Device::Cpu);
        let est = hutchinson(&v, &xs, &eps, false).unwrap();
        let mean = est.mean(Kind::Double).double_value(&[]);
        let se = est.std(true).double_value(&[]) / (k as f64).sqrt();
        assert!(
            (mean - exact).abs() < 3.0 * se,
            "{noise:?}: mean {mean}, exact {exact}, standard error {se}"
        );
        assert!(se > 0.0);
    }
}

fn flow(seed: i64, std: f64, tol: f64) -> (VarStore, Cnf<EgnnDynamics>) {
    let (vs, d) = dynamics(seed, std);
    (vs, Cnf::new(d, OdeSolver::dopri5(tol, tol)))
}

#[test]
fn log_likelihood_is_invariant_to_rotations_reflections_translations_and_permutations() {
    let _rng = geometry::testing::seeded(0);
    // Moderate weights keep the ODE non-stiff; tolerances 1e-8 make the solver error ~1e-7.
    let (_vs, cnf) = flow(7, 0.15, 1e-8);
    let input = Graphs {
        positions: dw4_batch(4, 8),
        features: None,
        node_mask: Tensor::ones([4, 4], F64),
    };
    let mut rng = StdRng::seed_from_u64(9);
    let log_p = |g: &Graphs| -> Result<Tensor, flow::FlowError> {
        let masks = Masks::from_node_mask(&g.node_mask);
        Ok(cnf
            .log_likelihood(
                &g.positions,
                &masks,
                TraceEstimator::Exact,
                GradientMode::NoGrad,
            )?
            .0)
    };
    for _ in 0..3 {
        let g = Transform::random(4, 2, 2.0, &mut rng);
        let r = max_deviation(log_p, &input, &g, Covariance::Invariant).unwrap();
        // Different inputs take different adaptive steps: the deviation is the solver's error.
        assert!(r.max_abs_deviation < 1e-5, "{r:?}");
    }
}

#[test]
fn sampling_then_encoding_returns_the_latent_draw() {
    let _rng = geometry::testing::seeded(0);
    let (_vs, cnf) = flow(10, 0.15, 1e-8);
    let masks = Masks::full(5, 4, Kind::Double, Device::Cpu);
    tch::manual_seed(11);
    let (x, z, stats) = cnf.sample(&masks, 2, Kind::Double).unwrap();
    assert!(stats.nfe > 0);
    let moved = (&x - &z).abs().max().double_value(&[]);
    assert!(moved > 1e-3, "the flow must move the samples: {moved}");
    let enc = cnf
        .encode(&x, &masks, TraceEstimator::Exact, GradientMode::NoGrad)
        .unwrap();
    let err = (enc.z - &z).abs().max().double_value(&[]);
    assert!(err < 1e-6, "round trip error {err}");
}

#[test]
fn coincident_particles_give_finite_dynamics_traces_and_gradients() {
    let _rng = geometry::testing::seeded(0);
    let (vs, cnf) = flow(12, 0.15, 1e-4);
    // Graph 0: all particles at the origin; graph 1: particles 0 and 1 at the same position.
    let x = Tensor::from_slice(&[
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, -1.0, 0.5, -1.0, -2.5,
    ])
    .to_kind(Kind::Double)
    .view([2, 4, 2]);
    let masks = Masks::full(2, 4, Kind::Double, Device::Cpu);
    let v = cnf.dynamics.velocity(0.5, &x, None, &masks).unwrap().x;
    assert!(v.isfinite().all().int64_value(&[]) == 1);
    for trace in [
        TraceEstimator::Exact,
        TraceEstimator::Hutchinson(Noise::Rademacher),
    ] {
        let (log_p, _) = cnf
            .log_likelihood(&x, &masks, trace, GradientMode::Backprop)
            .unwrap();
        assert!(
            log_p.isfinite().all().int64_value(&[]) == 1,
            "{trace:?}: {log_p:?}"
        );
        let loss = -log_p.sum(Kind::Double);
        for v in vs.trainable_variables() {
            v.grad().defined().then(|| v.grad().zero_());
        }
        loss.backward();
        for (name, v) in vs.variables() {
            let g = v.grad();
            // The last layer's feature update and the output embedding do not reach the position
            // velocity of a particle system (as in the reference): they get no gradient.
            let dead = name.contains("layers.2.node_mlp") || name.contains("embedding_out");
            assert_eq!(
                g.defined(),
                !dead,
                "{name}: gradient defined = {}",
                g.defined()
            );
            if !dead {
                assert!(
                    g.isfinite().all().int64_value(&[]) == 1,
                    "{trace:?}: gradient of {name} is not finite"
                );
            }
        }
    }
}

/// v(x) = a * centre(x): z = e^a x, and tr(dv/dx) = a (M - 1) n over the M real nodes.
struct LinearDynamics {
    a: f64,
}

impl Dynamics for LinearDynamics {
    fn velocity(
        &self,
        _t: f64,
        x: &Tensor,
        _h: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<egnn::Velocity, egnn::EgnnError> {
        Ok(egnn::Velocity {
            x: geometry::centre(x, Some(&masks.node))? * self.a,
            h: None,
        })
    }
}

#[test]
fn log_likelihood_of_a_linear_flow_matches_the_closed_form_with_padding() {
    let _rng = geometry::testing::seeded(0);
    let a = 0.7;
    // Two graphs of up to 5 particles in 3D; the second has 4 real particles.
    let mask = Tensor::from_slice(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
        .to_kind(Kind::Double)
        .view([2, 5]);
    let x = geometry::centre(&Tensor::randn([2, 5, 3], F64), Some(&mask)).unwrap();
    let masks = Masks::from_node_mask(&mask);
    let cnf = Cnf::new(LinearDynamics { a }, OdeSolver::dopri5(1e-10, 1e-10));
    let (log_p, _) = cnf
        .log_likelihood(&x, &masks, TraceEstimator::Exact, GradientMode::NoGrad)
        .unwrap();
    let log_2pi = (2.0 * std::f64::consts::PI).ln();
    for (b, m) in [(0i64, 5.0f64), (1, 4.0)] {
        let z = x.get(b) * a.exp();
        let dof = (m - 1.0) * 3.0;
        let expected =
            -0.5 * z.square().sum(Kind::Double).double_value(&[]) - 0.5 * dof * log_2pi + a * dof;
        let got = log_p.double_value(&[b]);
        assert!(
            (got - expected).abs() < 1e-7,
            "graph {b}: {got} vs closed form {expected}"
        );
    }
}

#[test]
fn a_padded_node_changes_neither_the_real_nodes_velocity_nor_the_likelihood() {
    let _rng = geometry::testing::seeded(0);
    let (_vs, cnf) = flow(13, 0.15, 1e-8);
    let x4 = dw4_batch(1, 14);
    // The same graph with a fifth, padded node at an arbitrary position.
    let x5 = Tensor::cat(&[&x4, &Tensor::full([1, 1, 2], 7.5, F64)], 1);
    let masks4 = Masks::full(1, 4, Kind::Double, Device::Cpu);
    let masks5 = Masks::from_node_mask(
        &Tensor::from_slice(&[1.0, 1.0, 1.0, 1.0, 0.0])
            .to_kind(Kind::Double)
            .view([1, 5]),
    );
    let v4 = cnf.dynamics.velocity(0.4, &x4, None, &masks4).unwrap().x;
    let v5 = cnf.dynamics.velocity(0.4, &x5, None, &masks5).unwrap().x;
    assert!((v5.narrow(1, 0, 4) - &v4).abs().max().double_value(&[]) < 1e-12);
    assert_eq!(v5.narrow(1, 4, 1).abs().max().double_value(&[]), 0.0);
    let lp = |x: &Tensor, m: &Masks| {
        cnf.log_likelihood(x, m, TraceEstimator::Exact, GradientMode::NoGrad)
            .unwrap()
            .0
            .double_value(&[0])
    };
    let (a, b) = (lp(&x4, &masks4), lp(&x5, &masks5));
    assert!((a - b).abs() < 1e-6, "{a} vs {b}");
}

#[test]
fn masks_that_do_not_fit_the_positions_are_a_typed_error() {
    let _rng = geometry::testing::seeded(0);
    let (_vs, cnf) = flow(15, 0.15, 1e-4);
    let x = dw4_batch(3, 16);
    let masks = Masks::full(2, 4, Kind::Double, Device::Cpu);
    let e = cnf
        .log_likelihood(&x, &masks, TraceEstimator::Exact, GradientMode::NoGrad)
        .unwrap_err();
    assert!(
        matches!(e, flow::FlowError::Dynamics(egnn::EgnnError::Shape { .. })),
        "{e}"
    );
}
