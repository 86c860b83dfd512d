//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use datasets::{ParticleDataset, Source, Splits};

/// `../shared/data/reference-mcmc/<name>` relative to the repository root, if present.
pub fn reference_file(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/reference-mcmc")
        .join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: reference file {} not found", p.display());
        None
    }
}

/// A small valid DW4-shaped data set with `n` samples: positions `x[s, i, k] = s + 0.25 i - 0.5 k`,
/// energies `-s`, splits train = 0..n-2, val = [n-2], test = [n-1].
pub fn small_dataset(n: usize) -> ParticleDataset {
    let positions = (0..n * 8)
        .map(|f| {
            let (s, i, k) = (f / 8, f % 8 / 2, f % 2);
            s as f32 + 0.25 * i as f32 - 0.5 * k as f32
        })
        .collect();
    ParticleDataset::new(
        "DW4",
        4,
        2,
        positions,
        Some((0..n).map(|s| -(s as f64)).collect()),
        Splits::tail(n, 1, 1).unwrap(),
        Source::Imported {
            file_name: "synthetic.npy".into(),
        },
    )
    .unwrap()
}
