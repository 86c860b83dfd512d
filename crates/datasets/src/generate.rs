//! Default data sets: generation settings and create-or-load.

use std::path::Path;

use crate::error::{DatasetError, Result};
use crate::mcmc::{metropolis, MetropolisConfig};
use crate::particles::{ParticleDataset, Source};
use crate::splits::Splits;
use crate::system::System;

/// Validation samples of the default data sets (the paper's DW4 rule).
pub const N_VAL: usize = 1000;
/// Test samples of the default data sets (the paper's DW4 rule).
pub const N_TEST: usize = 1000;
/// Largest training-set size of the Table 1 DW4 sweep.
pub const DW4_MAX_TRAIN: usize = 100_000;

/// Metropolis settings of the default DW4 data set: 102,000 samples (100,000 training + 1,000
/// validation + 1,000 test, enough for the whole Table 1 sweep).
///
/// Measured with `cargo run --release -p enf-datasets --example dw4_pilot` (2-core AMD EPYC):
///
/// - `proposal_std = 0.5`, the literature's setting: 4.7% of proposals accepted. Of 0.15, 0.25,
///   0.35 and 0.5 it also gives the shortest autocorrelation of the slow mode below.
/// - Integrated autocorrelation times at equilibrium (Sokal window, pooled over 200 chains):
///   energy τ ≈ 190–205 steps; the slow mode, the balance between configurations with two and
///   with four pairs in the short well (mean pair distance, fraction of short pairs),
///   τ ≈ 2,050–2,150 steps.
/// - `burn_in = 20,000` steps (≈ 9 τ of the slow mode) from `init_std = 1.5` (initial mean pair
///   distance ≈ 2.7): the mean pair distance over 1,000 chains reaches its equilibrium value
///   (4.04) only after ≈ 3,000 steps; at 1,000–2,000 steps it is still 3.94–3.98.
/// - `thin = 1,000` steps between samples of a chain (≈ 5 τ of the energy, ≈ 0.5 τ of the slow
///   mode): in samples of one chain the energy has τ = 1.08, the slow mode τ ≈ 2.4. Chains are
///   interleaved, so the first 1,000 training samples come from 1,000 different chains and
///   are independent.
/// - `n_chains = 1,000`: 102 samples per chain.
///
/// Cost: 1,000 × 20,000 + 102,000 × 1,000 = 122 million energy evaluations
/// ([`MetropolisConfig::total_steps`]): 12 s in release, single-threaded.
///
/// Result: mean energy −22.531 (std 1.908), mean pair distance 4.043, fraction of short pairs
/// 0.495, in agreement with the equilibrium values computed without MCMC (importance sampling:
/// −22.536 ± 0.010, 4.0415 ± 0.0027, 0.4958 ± 0.0009). The literature's reference samples
/// (`train_split_DW4.npy`: −22.477, 3.974, 0.520) are not fully equilibrated in the slow mode;
/// they match chains stopped after 1,000–2,000 steps (see `tests/dw4_statistics.rs`).
pub fn default_dw4_config() -> MetropolisConfig {
    MetropolisConfig {
        n_chains: 1000,
        n_samples: DW4_MAX_TRAIN + N_VAL + N_TEST,
        burn_in: 20_000,
        thin: 1000,
        proposal_std: 0.5,
        init_std: 1.5,
        seed: 20210521,
    }
}

/// Largest training-set size of the Table 1 LJ13 sweep.
pub const LJ13_MAX_TRAIN: usize = 10_000;

/// Metropolis settings of the default LJ13 data set: 12,000 samples (10,000 training + 1,000
/// validation + 1,000 test, enough for the whole Table 1 sweep).
///
/// Measured with `cargo run --release -p enf-datasets --example lj13_pilot` (2-core AMD EPYC):
///
/// - `proposal_std = 0.05` (FACTS.md section 2): 6.7-7.4% of whole-configuration proposals
///   accepted.
/// - Relaxation from `init_std = 1.0` over 500 chains: the mean energy is -41.7 after 10,000 steps,
///   -42.9 after 20,000 and levels off at -43.0 to -43.2 from 25,000 steps on (mean pair distance
///   1.663, 1.642, 1.637-1.639). `burn_in = 40,000` steps.
/// - Integrated autocorrelation times at equilibrium (200 chains, every 100th step): energy about
///   4,300 steps, mean pair distance about 5,500 steps. `thin = 5,000` steps between the samples of
///   a chain (about one autocorrelation time; chains are interleaved, so the first 1,000 training
///   samples come from 1,000 different chains and are independent).
///
/// Cost: 1,000 x 40,000 + 12,000 x 5,000 = 100 million energy evaluations, about 2 minutes
/// single-threaded (1.2 us per LJ13 energy).
///
/// Result (`enf generate-data --system lj13`): 6.67% accepted; mean energy -43.03 (std 6.90),
/// mean pair distance 1.6411 (std 0.098); between successive samples of a chain the
/// autocorrelation time is 1.3-1.4 samples, an effective sample size of 8,600-9,200 of the 12,000.
/// The reference `val_split_LJ13-1000.npy`: -43.00 (std 7.10), 1.6413 (std 0.101), so z = -0.3
/// and -0.1. With the earlier trial settings (20,000 burn-in,
/// thinning 1,000) 10,000 samples already matched the reference `val_split_LJ13-1000.npy`: mean
/// energy -42.90 against -43.00 (z = 0.7), mean pair distance 1.6424 against 1.6413 (z = 0.5),
/// pair-distance histogram total variation 0.004 (sampling noise about 0.04).
pub fn default_lj13_config() -> MetropolisConfig {
    MetropolisConfig {
        n_chains: 1000,
        n_samples: LJ13_MAX_TRAIN + N_VAL + N_TEST,
        burn_in: 40_000,
        thin: 5000,
        proposal_std: 0.05,
        init_std: 1.0,
        seed: 20210522,
    }
}

/// The default generation settings of `system`.
///
/// # Errors
/// [`DatasetError::InvalidConfig`] for [`System::Qm9Positional`], which is cut from QM9
/// ([`crate::qm9::ensure_qm9_positional`]), not sampled.
pub fn default_config(system: System) -> Result<MetropolisConfig> {
    match system {
        System::Dw4 => Ok(default_dw4_config()),
        System::Lj13 => Ok(default_lj13_config()),
        System::Qm9Positional => Err(not_sampled(system)),
    }
}

fn not_sampled(system: System) -> DatasetError {
    DatasetError::InvalidConfig(format!(
        "{system} has no energy function to sample by MCMC: it is cut from QM9 \
         (datasets::qm9::ensure_qm9_positional)"
    ))
}

/// Samples `system` with `config` and splits the result by the paper's tail rule
/// (`Splits::tail(n_samples, N_VAL, N_TEST)`).
///
/// # Errors
/// As [`metropolis`]; [`DatasetError::TooFewSamples`] when `config.n_samples ≤ 2,000`.
pub fn generate(system: System, config: &MetropolisConfig) -> Result<ParticleDataset> {
    let energy = system.energy().ok_or_else(|| not_sampled(system))?;
    let splits = Splits::tail(config.n_samples, N_VAL, N_TEST)?;
    let samples = metropolis(energy.as_ref(), config)?;
    ParticleDataset::from_samples(system, samples, splits)
}

/// Loads the default data set of `system` from `path`, generating it first when needed:
/// [`ensure_dataset_with`] with [`default_config`]`(system)`. Generating DW4 takes about 12 s in
/// release. QM9 positional is cut from `qm9.h5` beside `path` instead
/// ([`crate::qm9::ensure_qm9_positional`], which makes QM9 first when needed).
///
/// # Errors
/// As [`ensure_dataset_with`] and [`crate::qm9::ensure_qm9_positional`].
pub fn ensure_dataset(path: impl AsRef<Path>, system: System) -> Result<ParticleDataset> {
    if system == System::Qm9Positional {
        let path = path.as_ref();
        return crate::qm9::ensure_qm9_positional(path, path.with_file_name("qm9.h5"), None);
    }
    let config = default_config(system)?;
    ensure_dataset_with(path, system, &config)
}

/// Loads a data set of `system` from `path`, generating it with `config` first when needed.
///
/// If `path` exists and [`ParticleDataset::read`] accepts it, the stored data set is returned
/// when it was generated by the Metropolis sampler with exactly `config`, or imported from
/// someone else's samples ([`Source::Imported`], or any other provenance: the user put it
/// there). Otherwise (absent, truncated, corrupt or invalid) the data set is generated by
/// [`generate`] and written atomically to `path` (parent directories are created), replacing any
/// unreadable file.
///
/// # Errors
/// [`DatasetError::SystemMismatch`] when `path` holds a valid data set of another system, and
/// [`DatasetError::SettingsMismatch`] when it holds Metropolis samples drawn with other settings
/// (an earlier version's defaults, say: training on them would silently give other numbers than
/// a fresh clone); neither file is overwritten. [`DatasetError::Io`] when the parent directory
/// cannot be created; otherwise as [`generate`] and [`ParticleDataset::write`].
pub fn ensure_dataset_with(
    path: impl AsRef<Path>,
    system: System,
    config: &MetropolisConfig,
) -> Result<ParticleDataset> {
    let path = path.as_ref();
    if path.exists() {
        if let Ok(ds) = ParticleDataset::read(path) {
            check_system(&ds, path, system)?;
            match &ds.source {
                Source::Metropolis { config: stored, .. } if stored != config => {
                    return Err(DatasetError::SettingsMismatch {
                        path: path.to_path_buf(),
                        differences: settings_differences(stored, config),
                    });
                }
                _ => {}
            }
            return Ok(ds);
        }
    }
    crate::atomic::ensure_parent_dir(path)?;
    let ds = generate(system, config)?;
    ds.write(path)?;
    Ok(ds)
}

/// Reads the data set of `system` in `path` whatever generated it (this project's sampler with
/// any settings, an import, another tool): for a file the user chose, unlike
/// [`ensure_dataset_with`], which insists on its settings.
///
/// # Errors
/// As [`ParticleDataset::read`] (a missing, truncated or invalid file names `path`);
/// [`DatasetError::SystemMismatch`] when the file holds another system.
pub fn read_dataset(path: impl AsRef<Path>, system: System) -> Result<ParticleDataset> {
    let path = path.as_ref();
    let ds = ParticleDataset::read(path)?;
    check_system(&ds, path, system)?;
    Ok(ds)
}

/// [`DatasetError::SystemMismatch`] unless `ds` (read from `path`) holds `system`.
fn check_system(ds: &ParticleDataset, path: &Path, system: System) -> Result<()> {
    if ds.system != system.name()
        || ds.n_particles != system.n_particles()
        || ds.n_dims != system.n_dims()
    {
        return Err(DatasetError::SystemMismatch {
            path: path.to_path_buf(),
            expected: system.name().into(),
            found: format!(
                "{} ({} particles in {}D)",
                ds.system, ds.n_particles, ds.n_dims
            ),
        });
    }
    Ok(())
}

/// The sampler settings in which `stored` differs from `requested`, as
/// `name stored -> requested`, comma-separated; empty when they are equal.
fn settings_differences(stored: &MetropolisConfig, requested: &MetropolisConfig) -> String {
    let pairs = [
        (
            "n_chains",
            stored.n_chains.to_string(),
            requested.n_chains.to_string(),
        ),
        (
            "n_samples",
            stored.n_samples.to_string(),
            requested.n_samples.to_string(),
        ),
        (
            "burn_in",
            stored.burn_in.to_string(),
            requested.burn_in.to_string(),
        ),
        ("thin", stored.thin.to_string(), requested.thin.to_string()),
        (
            "proposal_std",
            stored.proposal_std.to_string(),
            requested.proposal_std.to_string(),
        ),
        (
            "init_std",
            stored.init_std.to_string(),
            requested.init_std.to_string(),
        ),
        ("seed", stored.seed.to_string(), requested.seed.to_string()),
    ];
    pairs
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(name, a, b)| format!("{name} {a} -> {b}"))
        .collect::<Vec<_>>()
        .join(", ")
}
