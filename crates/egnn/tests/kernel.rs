//! Kernel dynamics (the Table 1 baseline, in f64): the closed-form divergence equals the exact
//! trace of the Jacobian by autograd, the velocity is E(n) and permutation equivariant and centred,
//! and padded nodes change nothing.

use egnn::testing::{padding_effect, trace_by_columns};
use egnn::{Dynamics, EgnnError, KernelConfig, KernelDynamics, Masks};
use geometry::{max_deviation, Covariance, Graphs, Transform};
use rand::{rngs::StdRng, SeedableRng};
use tch::{nn::VarStore, Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// Kernel dynamics in f64 with weights drawn from N(0, 1) (they start at zero).
fn dynamics(config: &KernelConfig, seed: i64) -> (VarStore, KernelDynamics) {
    tch::manual_seed(seed);
    let mut vs = VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    let d = KernelDynamics::new(vs.root(), config).unwrap();
    tch::no_grad(|| {
        for (name, mut v) in vs.variables() {
            if name == "weights" {
                v.copy_(&Tensor::randn(v.size(), F64));
            }
        }
    });
    (vs, d)
}

#[test]
fn closed_form_divergence_equals_the_exact_trace() {
    let _rng = geometry::testing::seeded(21);
    for (nodes, dims, learn_widths) in [(4, 2, false), (13, 3, true)] {
        let config = KernelConfig {
            max_distance: if dims == 2 { 8.0 } else { 3.0 },
            learn_widths,
            ..Default::default()
        };
        let (_vs, d) = dynamics(&config, 22);
        tch::manual_seed(23);
        let x = Tensor::randn([3, nodes, dims], F64) * 1.5;
        let masks = Masks::full(3, nodes, Kind::Double, Device::Cpu);
        for t in [0.0, 0.37, 1.0] {
            let (_, div) = d.velocity_and_divergence(t, &x, &masks).unwrap().unwrap();
            let exact = trace_by_columns(&d, t, &x, &masks).unwrap();
            let scale = exact.abs().max().double_value(&[]);
            assert!(scale > 1e-2, "the Jacobian must not be trivial: {scale}");
            let err = (div - &exact).abs().max().double_value(&[]);
            assert!(
                err < 1e-10 * scale.max(1.0),
                "{nodes}x{dims}, t = {t}: {err}"
            );
        }
    }
}

#[test]
fn kernel_dynamics_are_equivariant_and_centred() {
    let _rng = geometry::testing::seeded(31);
    let (_vs, d) = dynamics(&KernelConfig::default(), 32);
    tch::manual_seed(33);
    let input = Graphs {
        positions: Tensor::randn([3, 4, 2], F64) * 2.0,
        features: None,
        node_mask: Tensor::ones([3, 4], F64),
    };
    let velocity = |g: &Graphs| -> Result<Tensor, EgnnError> {
        let masks = Masks::from_node_mask(&g.node_mask);
        Ok(d.velocity(0.6, &g.positions, None, &masks)?.x)
    };
    let mut rng = StdRng::seed_from_u64(34);
    let mut reflections = 0;
    for _ in 0..8 {
        let g = Transform::random(4, 2, 3.0, &mut rng);
        reflections += usize::from(g.determinant() < 0.0);
        let report = max_deviation(velocity, &input, &g, Covariance::Vector).unwrap();
        assert!(report.max_abs_output > 1e-3, "{report:?}");
        assert!(report.max_abs_deviation < 1e-9, "{report:?}");
    }
    assert!(reflections > 0);
    let v = velocity(&input).unwrap();
    let com = v
        .sum_dim_intlist(&[1i64][..], false, Kind::Double)
        .abs()
        .max()
        .double_value(&[]);
    assert!(com < 1e-12, "sum of the velocities: {com}");
}

#[test]
fn padded_nodes_change_nothing() {
    let _rng = geometry::testing::seeded(41);
    let (_vs, d) = dynamics(&KernelConfig::default(), 42);
    tch::manual_seed(43);
    let x = Tensor::randn([1, 4, 2], F64);
    let (v, pad, div) = padding_effect(&d, 0.2, &x, 2).unwrap();
    assert!(v < 1e-12 && pad == 0.0 && div < 1e-12, "{v} {pad} {div}");
}

#[test]
fn features_and_bad_configurations_are_typed_errors() {
    let vs = VarStore::new(Device::Cpu);
    let bad = KernelConfig {
        n_time_kernels: 1,
        ..Default::default()
    };
    assert!(matches!(
        KernelDynamics::new(vs.root(), &bad),
        Err(EgnnError::Config(_))
    ));
    let d = KernelDynamics::new(vs.root() / "ok", &KernelConfig::default()).unwrap();
    let x = Tensor::zeros([2, 4, 2], (Kind::Float, Device::Cpu));
    let h = Tensor::zeros([2, 4, 1], (Kind::Float, Device::Cpu));
    let masks = Masks::full(2, 4, Kind::Float, Device::Cpu);
    assert!(matches!(
        d.velocity(0.0, &x, Some(&h), &masks),
        Err(EgnnError::Shape { .. })
    ));
    // All particles at the origin: finite velocity and divergence.
    let (v, div) = d.velocity_and_divergence(0.5, &x, &masks).unwrap().unwrap();
    assert!(v.isfinite().all().int64_value(&[]) == 1 && div.isfinite().all().int64_value(&[]) == 1);
}
