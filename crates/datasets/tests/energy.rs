//! Energies at hand-computed configurations, and their symmetries.

use approx::assert_relative_eq;
use datasets::{DoubleWell, Energy, LennardJones, System};

#[test]
fn dw4_pair_energy_closed_form() {
    let dw = DoubleWell::dw4();
    // d = d0: barrier top, c = 0.
    assert_relative_eq!(dw.pair_energy(4.0), 0.0);
    // d = 5: s = 1, 0.9 - 4 = -3.1.
    assert_relative_eq!(dw.pair_energy(5.0), -3.1, epsilon = 1e-12);
    // Minima at d0 ± sqrt(-b / 2a) with depth -b^2 / 4a = -16 / 3.6.
    let dmin = 4.0 + (4.0f64 / 1.8).sqrt();
    assert_relative_eq!(dw.pair_energy(dmin), -16.0 / 3.6, epsilon = 1e-12);
    assert_relative_eq!(dw.pair_energy(8.0 - dmin), -16.0 / 3.6, epsilon = 1e-12);
}

#[test]
fn dw4_energy_at_hand_computed_configurations() {
    let dw = DoubleWell::dw4();
    // Four particles on a line at 0, 5, 10, 15: three pairs at 5 (-3.1 each), two at 10
    // (s = 36: 0.9 * 1296 - 4 * 36 = 1022.4), one at 15 (s = 121: 0.9 * 14641 - 484 = 12692.9).
    let line = [0.0, 0.0, 5.0, 0.0, 10.0, 0.0, 15.0, 0.0];
    assert_relative_eq!(dw.energy(&line), 14728.4, epsilon = 1e-9);

    // Square of side 4: four sides at the barrier top (0) and two diagonals at 4 sqrt 2,
    // s = (4 sqrt 2 - 4)^2 = 48 - 32 sqrt 2.
    let square = [0.0, 0.0, 4.0, 0.0, 0.0, 4.0, 4.0, 4.0];
    let s = 48.0 - 32.0 * 2f64.sqrt();
    assert_relative_eq!(
        dw.energy(&square),
        2.0 * (0.9 * s * s - 4.0 * s),
        epsilon = 1e-12
    );

    // All particles at one point: six pairs at d = 0, s = 16: 0.9 * 256 - 64 = 166.4.
    assert_relative_eq!(dw.energy(&[1.5; 8]), 6.0 * 166.4, epsilon = 1e-9);
}

#[test]
fn dw4_energy_is_invariant_under_rotation_translation_permutation() {
    let dw = DoubleWell::dw4();
    let x = [0.3, -1.2, 2.9, 0.4, -0.7, 3.1, 4.4, 2.2];
    let e = dw.energy(&x);
    let (c, s) = (0.6f64.cos(), 0.6f64.sin());
    let mut moved = [0.0; 8];
    for i in 0..4 {
        let (px, py) = (x[2 * i], x[2 * i + 1]);
        moved[2 * i] = c * px - s * py + 10.0;
        moved[2 * i + 1] = s * px + c * py - 3.0;
    }
    assert_relative_eq!(dw.energy(&moved), e, epsilon = 1e-9);
    let permuted = [x[4], x[5], x[0], x[1], x[6], x[7], x[2], x[3]];
    assert_relative_eq!(dw.energy(&permuted), e, epsilon = 1e-12);
}

#[test]
fn lennard_jones_two_particles_closed_form() {
    // Two particles at distance r_m = 1: the unordered pair gives -1, ordered pairs -2; each
    // particle is 0.5 from the mean: harmonic 0.5 * (0.25 + 0.25) = 0.25.
    let lj = LennardJones {
        n_particles: 2,
        ..LennardJones::lj13()
    };
    assert_relative_eq!(
        lj.energy(&[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
        -1.75,
        epsilon = 1e-12
    );
    // Distance 2: (1/2)^12 - 2 (1/2)^6 = 1/4096 - 1/32, twice; harmonic 0.5 * (1 + 1) = 1.
    let e = lj.energy(&[0.0, 0.0, -1.0, 0.0, 0.0, 1.0]);
    assert_relative_eq!(e, 2.0 * (1.0 / 4096.0 - 1.0 / 32.0) + 1.0, epsilon = 1e-12);
}

#[test]
fn lj13_is_translation_invariant_and_infinite_at_contact() {
    let lj = LennardJones::lj13();
    assert_eq!((lj.n_particles(), lj.n_dims()), (13, 3));
    let x: Vec<f64> = (0..39).map(|i| ((i * 37 % 11) as f64) * 0.4).collect();
    let shifted: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(i, v)| v + [1.0, -2.0, 0.5][i % 3])
        .collect();
    assert_relative_eq!(lj.energy(&x), lj.energy(&shifted), max_relative = 1e-10);
    let mut contact = x.clone();
    contact[3..6].copy_from_slice(&x[0..3]);
    assert_eq!(lj.energy(&contact), f64::INFINITY);
}

#[test]
fn wrong_length_gives_nan_not_panic() {
    assert!(DoubleWell::dw4().energy(&[0.0; 7]).is_nan());
    assert!(LennardJones::lj13().energy(&[]).is_nan());
}

#[test]
fn system_names_round_trip() {
    for s in [System::Dw4, System::Lj13] {
        assert_eq!(s.name().parse::<System>().unwrap(), s);
        let energy = s.energy().unwrap();
        assert_eq!(energy.n_particles(), s.n_particles());
        assert_eq!(energy.n_dims(), s.n_dims());
    }
    assert_eq!("dw4".parse::<System>().unwrap(), System::Dw4);
    let q = System::Qm9Positional;
    assert_eq!(q.name().parse::<System>().unwrap(), q);
    assert_eq!("qm9_positional".parse::<System>().unwrap(), q);
    assert_eq!((q.n_particles(), q.n_dims()), (19, 3));
    assert!(
        q.energy().is_none(),
        "QM9 positional has no energy function"
    );
    assert!(datasets::default_config(q).is_err());
    assert!(matches!(
        "DW5".parse::<System>(),
        Err(datasets::DatasetError::UnknownSystem(_))
    ));
}
