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

/// GNF dynamics over positions and `nf` node features (the QM9 baselines), f64, parameters
/// drawn from N(0, 0.2^2).
fn gnf_with_features(nf: i64, seed: i64) -> (VarStore, GnnDynamics) {
    tch::manual_seed(seed);
    let vs = var_store();
    let d = GnnDynamics::with_features(vs.root(), &EgnnConfig::default(), 3, nf).unwrap();
    randomise_parameters(&vs, 0.2);
    (vs, d)
}

#[test]
fn gnf_over_features_is_permutation_but_not_rotation_equivariant_and_masks_padding() {
    let _rng = geometry::testing::seeded(65);
    let nf = 6;
    let (_vs, d) = gnf_with_features(nf, 66);
    tch::manual_seed(67);
    let input = Graphs {
        features: Some(Tensor::randn([2, 5, nf], F64)),
        ..graphs(2, 5, 3, 67)
    };
    let (full, permutations) = transforms(5, 3, 68);
    let d = &d;
    let part = |take_x: bool| {
        move |g: &Graphs| -> Result<Tensor, EgnnError> {
            let masks = Masks::from_node_mask(&g.node_mask);
            let v = d.velocity(0.4, &g.positions, g.features.as_ref(), &masks)?;
            Ok(if take_x {
                v.x
            } else {
                v.h.expect("feature velocity")
            })
        }
    };
    for g in &permutations {
        for (take_x, cov) in [
            (true, Covariance::Vector),
            (false, Covariance::NodeFeatures),
        ] {
            let r = max_deviation(part(take_x), &input, g, cov).unwrap();
            assert!(r.max_abs_output > 1e-2, "{r:?}");
            // Permuting only reorders the same sums: f64 round-off.
            assert!(r.max_abs_deviation < 1e-12 * r.max_abs_output, "{r:?}");
        }
    }
    // Rotations and translations change both parts by O(1): the check must see it.
    for g in &full {
        for (take_x, cov) in [
            (true, Covariance::Vector),
            (false, Covariance::NodeFeatures),
        ] {
            let r = max_deviation(part(take_x), &input, g, cov).unwrap();
            assert!(r.max_abs_deviation > 1e-2 * r.max_abs_output, "{r:?}");
        }
    }
    // Padding: a padded copy of graph 0 (two extra nodes holding junk) gives the same velocity
    // on the real nodes, centred over them, and exactly zero at the padded ones.
    let x = input.positions.narrow(0, 0, 1);
    let h = input.features.as_ref().unwrap().narrow(0, 0, 1);
    let alone = d
        .velocity(
            0.4,
            &x,
            Some(&h),
            &Masks::full(1, 5, Kind::Double, Device::Cpu),
        )
        .unwrap();
    let junk = Tensor::randn([1, 2, 3], F64) * 7.0;
    let junk_h = Tensor::randn([1, 2, nf], F64) * 7.0;
    let node_mask = Tensor::cat(&[Tensor::ones([1, 5], F64), Tensor::zeros([1, 2], F64)], 1);
    let padded = d
        .velocity(
            0.4,
            &Tensor::cat(&[&x, &junk], 1),
            Some(&Tensor::cat(&[&h, &junk_h], 1)),
            &Masks::from_node_mask(&node_mask),
        )
        .unwrap();
    let vh = padded.h.unwrap();
    let scale = alone.x.abs().max().double_value(&[]);
    let dx = (padded.x.narrow(1, 0, 5) - &alone.x)
        .abs()
        .max()
        .double_value(&[]);
    let dh = (vh.narrow(1, 0, 5) - alone.h.unwrap())
        .abs()
        .max()
        .double_value(&[]);
    assert!(dx < 1e-12 * scale && dh < 1e-12 * scale, "{dx} {dh}");
    assert_eq!(padded.x.narrow(1, 5, 2).abs().max().double_value(&[]), 0.0);
    assert_eq!(vh.narrow(1, 5, 2).abs().max().double_value(&[]), 0.0);
    let com = alone.x.sum_dim_intlist(&[1i64][..], false, Kind::Double);
    assert!(com.abs().max().double_value(&[]) < 1e-12 * scale);
    // Features of the wrong width, or none, are typed errors.
    let masks = Masks::full(1, 5, Kind::Double, Device::Cpu);
    assert!(matches!(
        d.velocity(0.4, &x, None, &masks),
        Err(EgnnError::Shape { .. })
    ));
    assert!(matches!(
        d.velocity(0.4, &x, Some(&h.narrow(-1, 0, 5)), &masks),
        Err(EgnnError::Shape { .. })
    ));
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
        Err(EgnnError::Shape { ref expected, .. }) if expected == "[batch, nodes, 2]"
    ));
    let s = SimpleDynamics::new(vs.root() / "simple", &SimpleConfig::default()).unwrap();
    let h = Tensor::zeros([2, 4, 1], (Kind::Float, Device::Cpu));
    let x = Tensor::zeros([2, 4, 2], (Kind::Float, Device::Cpu));
    assert!(matches!(
        s.velocity(0.0, &x, Some(&h), &masks),
        Err(EgnnError::Shape { .. })
    ));
}
