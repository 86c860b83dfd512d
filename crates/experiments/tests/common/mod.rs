//! Fixtures shared by the experiments crate's integration tests.

use datasets::{metropolis, MetropolisConfig, ParticleDataset, Splits, System};

/// A small DW4 data set from a short Metropolis run seeded by `seed`: 400 samples, the last 100
/// for test, the 100 before for validation, 200 for training.
pub fn small_dw4(seed: u64) -> ParticleDataset {
    let config = MetropolisConfig {
        n_chains: 100,
        n_samples: 400,
        burn_in: 2_000,
        thin: 50,
        proposal_std: 0.5,
        init_std: 1.5,
        seed,
    };
    let samples = metropolis(&datasets::DoubleWell::dw4(), &config).unwrap();
    ParticleDataset::from_samples(System::Dw4, samples, Splits::tail(400, 100, 100).unwrap())
        .unwrap()
}
