//! The real QM9 file: `ensure_qm9` makes `data/qm9.h5` from the pinned qm9pack wheel (downloaded
//! once into the per-user cache) and the figures of FACTS.md section 2 hold on it.

use std::path::PathBuf;
use std::sync::OnceLock;

use datasets::qm9::{
    ensure_qm9, legacy_permutation, Qm9Dataset, QM9_MOLECULES, QM9_TEST, QM9_TRAIN, QM9_VAL,
};

/// The data set, made or read once per test binary.
fn qm9() -> &'static Qm9Dataset {
    static QM9: OnceLock<Qm9Dataset> = OnceLock::new();
    QM9.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/qm9.h5");
        ensure_qm9(path, None).expect("QM9 data set")
    })
}

#[test]
fn qm9_file_counts_split_elements_and_stability() {
    let ds = qm9();
    assert!(ds.is_complete());
    assert_eq!(ds.len(), QM9_MOLECULES);
    assert_eq!(
        (
            ds.splits.train.len(),
            ds.splits.val.len(),
            ds.splits.test.len()
        ),
        (QM9_TRAIN, QM9_VAL, QM9_TEST)
    );
    // The split is the numpy-legacy permutation with seed 0, each part sorted.
    let p = legacy_permutation(QM9_MOLECULES, 0).unwrap();
    assert_eq!(&p[..5], &[130195, 68784, 7957, 25911, 20168]);
    let mut train = p[..QM9_TRAIN].to_vec();
    train.sort_unstable();
    assert_eq!(ds.splits.train, train);
    // Every molecule is in exactly one split.
    let mut all: Vec<usize> = [&ds.splits.train, &ds.splits.val, &ds.splits.test]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    all.sort_unstable();
    assert!(all.iter().enumerate().all(|(i, &r)| i == r));

    // Atom counts 3..=29, none with 28, mean 18.03.
    let hist = ds.atom_count_histogram(0..ds.len()).unwrap();
    assert_eq!(hist[..3].iter().sum::<u64>(), 0);
    assert!(hist[3] > 0 && hist[29] > 0);
    assert_eq!(hist[28], 0);
    let atoms: usize = ds.n_atoms.iter().map(|&m| m as usize).sum();
    assert!((atoms as f64 / ds.len() as f64 - 18.03).abs() < 0.005);

    assert_eq!(
        ds.element_counts(0..ds.len()).unwrap(),
        [1_208_486, 831_925, 132_498, 183_265, 3_036]
    );

    // Positional subset: the 19-atom molecules of each split.
    assert_eq!(
        (
            ds.positional.train.len(),
            ds.positional.val.len(),
            ds.positional.test.len()
        ),
        (13_832, 2_501, 1_813)
    );

    // Stability of the data itself: 99.36% atoms, 95.28% molecules; train 99.36 / 95.29, test
    // 99.34 / 95.22 (FACTS.md section 2, percentages to 2 decimals).
    let pct = |x: f64| (x * 10_000.0).round() / 100.0;
    let all = ds.stability(0..ds.len()).unwrap();
    assert_eq!(
        (pct(all.atom_fraction()), pct(all.molecule_fraction())),
        (99.36, 95.28)
    );
    let train = ds.stability(ds.splits.train.iter().copied()).unwrap();
    assert_eq!(
        (pct(train.atom_fraction()), pct(train.molecule_fraction())),
        (99.36, 95.29)
    );
    let test = ds.stability(ds.splits.test.iter().copied()).unwrap();
    assert_eq!(
        (pct(test.atom_fraction()), pct(test.molecule_fraction())),
        (99.34, 95.22)
    );
}

#[test]
fn qm9_geometry_extremes() {
    let ds = qm9();
    // Largest |coordinate| 10.18 A, shortest interatomic distance 0.959 A.
    let max = ds.positions.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!((max - 10.18).abs() < 0.005, "{max}");
    let mut shortest = f64::INFINITY;
    for row in 0..ds.len() {
        let x = ds.molecule_positions(row).unwrap();
        let m = x.len() / 3;
        for i in 0..m {
            for j in i + 1..m {
                let d2: f64 = (0..3)
                    .map(|k| f64::from(x[3 * i + k] - x[3 * j + k]).powi(2))
                    .sum();
                shortest = shortest.min(d2.sqrt());
            }
        }
    }
    assert!((shortest - 0.959).abs() < 0.0005, "{shortest}");
}

#[test]
fn a_truncated_qm9_file_is_rebuilt_not_used() {
    let reference = qm9();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qm9.h5");
    std::fs::write(&path, b"half a file").unwrap();
    let rebuilt = ensure_qm9(&path, None).unwrap();
    assert_eq!(&rebuilt, reference);
    assert_eq!(&Qm9Dataset::read(&path).unwrap(), reference);
}

#[test]
fn qm9_positional_particle_dataset_is_the_19_atom_subset() {
    let qm9 = qm9();
    let ds = datasets::qm9::positional_dataset(qm9).unwrap();
    assert_eq!(ds.system, datasets::System::Qm9Positional.name());
    assert_eq!((ds.n_particles, ds.n_dims, ds.len()), (19, 3, 18_146));
    assert_eq!(
        (
            ds.splits.train.len(),
            ds.splits.val.len(),
            ds.splits.test.len()
        ),
        (13_832, 2_501, 1_813)
    );
    // Row k of the particle set is the k-th positional molecule, train then val then test.
    let rows: Vec<usize> = qm9
        .positional
        .train
        .iter()
        .chain(&qm9.positional.val)
        .chain(&qm9.positional.test)
        .copied()
        .collect();
    for k in [0, 13_831, 13_832, 18_145] {
        assert_eq!(
            ds.sample(k).unwrap(),
            qm9.molecule_positions(rows[k]).unwrap()
        );
    }
    assert!(ds.energies.is_none());

    // ensure_* writes it next to a QM9 file and reads it back; a truncated file is remade.
    let dir = tempfile::tempdir().unwrap();
    let qm9_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/qm9.h5");
    let path = dir.path().join("qm9_positional.h5");
    let made = datasets::qm9::ensure_qm9_positional(&path, &qm9_path, None).unwrap();
    assert_eq!(made, ds);
    assert_eq!(datasets::ParticleDataset::read(&path).unwrap(), ds);
    std::fs::write(&path, b"half a file").unwrap();
    let remade = datasets::qm9::ensure_qm9_positional(&path, &qm9_path, None).unwrap();
    assert_eq!(remade, ds);
}
