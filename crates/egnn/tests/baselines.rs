//! The GNF and simple-dynamics baselines of Table 1 (in f64): GNF dynamics are permutation
//! equivariant but not rotation equivariant, and the geometry crate's check says so; simple
//! dynamics are E(n) equivariant and their closed-form divergence equals the exact trace by
//! autograd; padded nodes change neither.

use egnn::testing::{padding_effect, randomise_parameters, trace_by_columns};
use egnn::{Dynamics, EgnnConfig, EgnnError, GnnDynamics, Masks, SimpleConfig, SimpleDynamics};
use geometry::{max_deviation, Covariance, EquivarianceReport, Graphs, Transform};
use rand::{rngs::StdRng, SeedableRng};
use tch::{nn::VarStore, Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn var_store() -> VarStore {
    let mut vs = VarStore::new(Device::Cpu);
    vs.set_kind(Kind::Double);
    vs
}

/// GNF dynamics in f64 with parameters drawn from N(0, 0.2^2) (larger weights make the residual
/// sums over 12 neighbours grow to 1e6 by the third layer).
fn gnf(attention: bool, n_dims: i64, seed: i64) -> (VarStore, GnnDynamics) {
    tch::manual_seed(seed);
    let vs = var_store();
    let config = EgnnConfig {
        attention,
        ..Default::default()
    };
    let d = GnnDynamics::new(vs.root(), &config, n_dims).unwrap();
    randomise_parameters(&vs, 0.2);
    (vs, d)
}

/// Simple dynamics in f64 with parameters drawn from N(0, 0.5^2).
fn simple(config: &SimpleConfig, seed: i64) -> (VarStore, SimpleDynamics) {
    tch::manual_seed(seed);
    let vs = var_store();
    let d = SimpleDynamics::new(vs.root(), config).unwrap();
    randomise_parameters(&vs, 0.5);
    (vs, d)
}

fn graphs(batch: i64, nodes: i64, dims: i64, seed: i64) -> Graphs {
    tch::manual_seed(seed);
    Graphs {
        positions: Tensor::randn([batch, nodes, dims], F64) * 1.5,
        features: None,
        node_mask: Tensor::ones([batch, nodes], F64),
    }
}

/// The largest deviation from equivariance of `d`'s velocity over `transforms`.
fn deviations(
    d: &impl Dynamics,
    input: &Graphs,
    transforms: &[Transform],
) -> Vec<EquivarianceReport> {
    let velocity = |g: &Graphs| -> Result<Tensor, EgnnError> {
        let masks = Masks::from_node_mask(&g.node_mask);
        Ok(d.velocity(0.4, &g.positions, None, &masks)?.x)
    };
    transforms
        .iter()
        .map(|g| max_deviation(velocity, input, g, Covariance::Vector).unwrap())
        .collect()
}

/// Random elements of E(n) x S_M, and the same permutations alone (identity rotation, no
/// translation).
fn transforms(nodes: i64, dims: i64, seed: u64) -> (Vec<Transform>, Vec<Transform>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let full: Vec<Transform> = (0..6)
        .map(|_| Transform::random(nodes, dims, 3.0, &mut rng))
        .collect();
    let permutations = full
        .iter()
        .map(|g| Transform {
            permutation: g.permutation.clone(),
            ..Transform::identity(nodes, dims)
        })
        .collect();
    (full, permutations)
}

#[test]
fn gnf_dynamics_are_permutation_but_not_rotation_equivariant() {
    let _rng = geometry::testing::seeded(51);
    for (attention, nodes, dims) in [(false, 4, 2), (true, 13, 3)] {
        let (_vs, d) = gnf(attention, dims, 52);
        let input = graphs(3, nodes, dims, 53);
        let (full, permutations) = transforms(nodes, dims, 54);
        for report in deviations(&d, &input, &permutations) {
            assert!(report.max_abs_output > 1e-2, "{report:?}");
            // Permuting only reorders the same sums: f64 round-off, ~1e-15 relative.
            assert!(
                report.max_abs_deviation < 1e-12 * report.max_abs_output,
                "{report:?}"
            );
        }
        // Rotations and translations change the velocity by O(1): the check must see it.
        for report in deviations(&d, &input, &full) {
            assert!(
                report.max_abs_deviation > 1e-2 * report.max_abs_output,
                "GNF is not E(n) equivariant, the check must detect it: {report:?}"
            );
        }
    }
}

#[test]
fn gnf_velocity_is_centred_and_padding_changes_nothing() {
    let _rng = geometry::testing::seeded(61);
    let (_vs, d) = gnf(true, 2, 62);
    let x = graphs(1, 4, 2, 63).positions;
    let full = Masks::full(1, 4, Kind::Double, Device::Cpu);
    let v = d.velocity(0.3, &x, None, &full).unwrap().x;
    let com = v.sum_dim_intlist(&[1i64][..], false, Kind::Double);
    let scale = v.abs().max().double_value(&[]);
    assert!(com.abs().max().double_value(&[]) < 1e-14 * scale, "{com:?}");
    let (moved, pad, _) = padding_effect(&d, 0.3, &x, 2).unwrap();
    assert!(moved < 1e-14 * scale && pad == 0.0, "{moved} {pad}");
}

#[test]
fn simple_dynamics_are_equivariant() {
    let _rng = geometry::testing::seeded(71);
    let (_vs, d) = simple(&SimpleConfig::default(), 72);
    for (nodes, dims) in [(4, 2), (13, 3)] {
        let input = graphs(3, nodes, dims, 73);
        let (full, _) = transforms(nodes, dims, 74);
        assert!(
            full.iter().any(|g| g.determinant() < 0.0),
            "include a reflection"
        );
        for report in deviations(&d, &input, &full) {
            assert!(report.max_abs_output > 1e-2, "{report:?}");
            assert!(report.max_abs_deviation < 1e-9, "{report:?}");
        }
    }
}

#[test]
fn simple_dynamics_closed_form_divergence_equals_the_exact_trace() {
    let _rng = geometry::testing::seeded(81);
    for (nodes, dims) in [(4, 2), (13, 3)] {
        let (_vs, d) = simple(&SimpleConfig::default(), 82);
        let x = graphs(3, nodes, dims, 83).positions;
        let masks = Masks::full(3, nodes, Kind::Double, Device::Cpu);
        let (v, div) = d.velocity_and_divergence(0.5, &x, &masks).unwrap().unwrap();
        let v_alone = d.velocity(0.5, &x, None, &masks).unwrap().x;
        assert!((&v - v_alone).abs().max().double_value(&[]) < 1e-14);
        let exact = trace_by_columns(&d, 0.5, &x, &masks).unwrap();
        let scale = exact.abs().max().double_value(&[]);
        assert!(scale > 1e-2, "the Jacobian must not be trivial: {scale}");
        let err = (div - &exact).abs().max().double_value(&[]);
        // Both are exact up to round-off of sums over 156 pairs: ~1e-13 relative.
        assert!(err < 1e-10 * scale.max(1.0), "{nodes}x{dims}: {err}");
    }
}

#[test]
fn simple_dynamics_is_minus_the_gradient_of_a_pair_potential() {
    // Circulation test: a gradient field has a symmetric Jacobian.
    let _rng = geometry::testing::seeded(91);
    let (_vs, d) = simple(&SimpleConfig::default(), 92);
    let x = graphs(1, 4, 2, 93).positions.set_requires_grad(true);
    let masks = Masks::full(1, 4, Kind::Double, Device::Cpu);
    let v = d.velocity(0.0, &x, None, &masks).unwrap().x.flatten(0, -1);
    let rows: Vec<Tensor> = (0..8)
        .map(|k| {
            Tensor::run_backward(&[v.get(k)], &[&x], true, false)
                .remove(0)
                .flatten(0, -1)
        })
        .collect();
    let jac = Tensor::stack(&rows, 0);
    let asym = (&jac - jac.transpose(0, 1)).abs().max().double_value(&[]);
    assert!(jac.abs().max().double_value(&[]) > 1e-2);
    assert!(asym < 1e-12, "Jacobian asymmetry {asym}");
}

#[test]
fn simple_dynamics_padding_changes_nothing() {
    let _rng = geometry::testing::seeded(95);
    let (_vs, d) = simple(&SimpleConfig::default(), 96);
    let x = graphs(1, 4, 2, 97).positions;
    let (v, pad, div) = padding_effect(&d, 0.2, &x, 2).unwrap();
    assert!(v < 1e-12 && pad == 0.0 && div < 1e-12, "{v} {pad} {div}");
}

#[test]
fn bad_inputs_are_typed_errors() {
    let vs = VarStore::new(Device::Cpu);
    let bad = SimpleConfig {
        width: 0.0,
        ..Default::default()
    };
    assert!(matches!(
        SimpleDynamics::new(vs.root(), &bad),
        Err(EgnnError::Config(_))
    ));
    let g = GnnDynamics::new(vs.root() / "gnf", &EgnnConfig::default(), 2).unwrap();
    let masks = Masks::full(2, 4, Kind::Float, Device::Cpu);
    let x3 = Tensor::zeros([2, 4, 3], (Kind::Float, Device::Cpu));
    assert!(matches!(
        g.velocity(0.0, &x3, None, &masks),
        Err(EgnnError::Shape { .. })
    ));
    let s = SimpleDynamics::new(vs.root() / "simple", &SimpleConfig::default()).unwrap();
    let h = Tensor::zeros([2, 4, 1], (Kind::Float, Device::Cpu));
    let x = Tensor::zeros([2, 4, 2], (Kind::Float, Device::Cpu));
    assert!(matches!(
        s.velocity(0.0, &x, Some(&h), &masks),
        Err(EgnnError::Shape { .. })
    ));
}
