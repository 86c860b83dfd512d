//! The E-NF dynamics are E(n) equivariant and permutation equivariant (checked in f64).

use egnn::testing::random_dynamics;
use egnn::{Dynamics, EgnnConfig, EgnnError, Masks};
use geometry::{max_deviation, Covariance, Graphs, Transform};
use rand::{rngs::StdRng, SeedableRng};
use tch::{Device, Kind, Tensor};

fn check(n_nodes: i64, n_dims: i64, seed: u64) {
    let _rng = geometry::testing::seeded(seed as i64);
    let (_vs, dynamics) =
        random_dynamics(&EgnnConfig::default(), seed as i64, 0.5, Kind::Double).unwrap();
    tch::manual_seed(seed as i64 + 100);
    let input = Graphs {
        positions: Tensor::randn([3, n_nodes, n_dims], (Kind::Double, Device::Cpu)) * 2.0,
        features: None,
        node_mask: Tensor::ones([3, n_nodes], (Kind::Double, Device::Cpu)),
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let velocity = |g: &Graphs| -> Result<Tensor, EgnnError> {
        let masks = Masks::from_node_mask(&g.node_mask);
        Ok(dynamics.velocity(0.37, &g.positions, None, &masks)?.x)
    };
    let mut reflections = 0;
    for _ in 0..8 {
        let g = Transform::random(n_nodes, n_dims, 3.0, &mut rng);
        reflections += usize::from(g.determinant() < 0.0);
        let report = max_deviation(velocity, &input, &g, Covariance::Vector).unwrap();
        // Velocities are O(1-10); f64 round-off through 3 layers is ~1e-13.
        assert!(
            report.max_abs_output > 1e-3,
            "the network must not be trivial: {report:?}"
        );
        assert!(report.max_abs_deviation < 1e-9, "{report:?}");
    }
    assert!(reflections > 0, "the draws should include a reflection");
}

#[test]
fn dw4_dynamics_are_equivariant_to_rotations_reflections_translations_permutations() {
    check(4, 2, 11);
}

#[test]
fn lj13_sized_dynamics_are_equivariant() {
    check(13, 3, 12);
}

#[test]
fn velocity_is_centred() {
    let _rng = geometry::testing::seeded(5);
    let (_vs, dynamics) = random_dynamics(&EgnnConfig::default(), 5, 0.5, Kind::Double).unwrap();
    let x = Tensor::randn([4, 5, 3], (Kind::Double, Device::Cpu));
    let masks = Masks::full(4, 5, Kind::Double, Device::Cpu);
    let v = dynamics.velocity(0.5, &x, None, &masks).unwrap().x;
    let com = v
        .mean_dim(&[1i64][..], false, Kind::Double)
        .abs()
        .max()
        .double_value(&[]);
    assert!(com < 1e-12, "centre of mass of the velocity: {com}");
}

#[test]
fn a_wrong_shape_is_a_typed_error() {
    let _rng = geometry::testing::seeded(5);
    let (_vs, dynamics) = random_dynamics(&EgnnConfig::default(), 5, 0.5, Kind::Double).unwrap();
    let masks = Masks::full(4, 5, Kind::Double, Device::Cpu);
    let x = Tensor::randn([4, 15], (Kind::Double, Device::Cpu));
    assert!(matches!(
        dynamics.velocity(0.5, &x, None, &masks),
        Err(EgnnError::Shape { .. })
    ));
    let h = Tensor::randn([4, 5, 2], (Kind::Double, Device::Cpu));
    let x = Tensor::randn([4, 5, 3], (Kind::Double, Device::Cpu));
    assert!(matches!(
        dynamics.velocity(0.5, &x, Some(&h), &masks),
        Err(EgnnError::Shape { .. })
    ));
}
