//! Pilot runs behind the LJ13 default sampler settings (`datasets::default_lj13_config`).
//!
//! 1. Relaxation from the initial state: mean energy and mean pair distance over the chains
//!    against the step, to choose the burn-in.
//! 2. Integrated autocorrelation times at equilibrium (every 100th step recorded), to choose the
//!    thinning.
//! 3. The default settings against the literature's reference samples
//!    (`val_split_LJ13-1000.npy`): mean energy, mean pair distance, distance histogram.
//!
//! Run: `cargo run --release -p enf-datasets --example lj13_pilot [-- <reference dir>]`.

use std::path::PathBuf;
use std::time::Instant;

use datasets::stats::{
    energies, integrated_autocorrelation_time_chains, mean_pair_distances, mean_std,
    pair_distances, per_chain, total_variation_noise, Histogram,
};
use datasets::{
    default_lj13_config, metropolis, read_npy_positions, LennardJones, MetropolisConfig,
};

fn main() -> Result<(), datasets::DatasetError> {
    let energy = LennardJones::lj13();
    let base = default_lj13_config();

    // 1. Relaxation.
    let relax = MetropolisConfig {
        n_chains: 500,
        n_samples: 500 * 40,
        burn_in: 0,
        thin: 1000,
        ..base.clone()
    };
    let t = Instant::now();
    let s = metropolis(&energy, &relax)?;
    println!(
        "1. relaxation, {} chains from N(0, {}^2), proposal std {}: {:.1} s, acceptance {:.4}",
        relax.n_chains,
        relax.init_std,
        relax.proposal_std,
        t.elapsed().as_secs_f64(),
        s.acceptance_rate
    );
    let d = mean_pair_distances(&s.positions, 13, 3)?;
    for round in [0usize, 1, 2, 4, 9, 14, 19, 24, 29, 34, 39] {
        let r = round * relax.n_chains..(round + 1) * relax.n_chains;
        println!(
            "   step {:>6}: mean E {:>9.3}  mean d {:.4}",
            (round + 1) * relax.thin,
            mean_std(&s.energies[r.clone()]).0,
            mean_std(&d[r]).0
        );
    }

    // 2. Equilibrium autocorrelation.
    let every_100 = MetropolisConfig {
        n_chains: 200,
        n_samples: 200 * 400,
        thin: 100,
        ..base.clone()
    };
    let s = metropolis(&energy, &every_100)?;
    let d = mean_pair_distances(&s.positions, 13, 3)?;
    let tau_e = integrated_autocorrelation_time_chains(&per_chain(&s.energies, 200));
    let tau_d = integrated_autocorrelation_time_chains(&per_chain(&d, 200));
    println!(
        "2. at equilibrium (after {} steps), in steps: energy tau = {:.0}, mean pair distance tau = {:.0}",
        base.burn_in,
        tau_e * 100.0,
        tau_d * 100.0
    );

    // 3. The default settings against the reference.
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared/data/reference-mcmc"));
    let reference = read_npy_positions(dir.join("val_split_LJ13-1000.npy"), 13, 3)?;
    let config = MetropolisConfig {
        n_samples: 10_000,
        ..base.clone()
    };
    let t = Instant::now();
    let g = metropolis(&energy, &config)?;
    println!(
        "3. {} samples with the default settings ({} steps): {:.1} s, acceptance {:.4}",
        g.len(),
        config.total_steps(),
        t.elapsed().as_secs_f64(),
        g.acceptance_rate
    );
    let ref_energy = energies(&energy, &reference);
    let (gd, rd) = (
        mean_pair_distances(&g.positions, 13, 3)?,
        mean_pair_distances(&reference, 13, 3)?,
    );
    for (name, a, b) in [
        ("energy", &g.energies, &ref_energy),
        ("mean pair distance", &gd, &rd),
    ] {
        let (ma, sa) = mean_std(a);
        let (mb, sb) = mean_std(b);
        let tau = integrated_autocorrelation_time_chains(&per_chain(a, config.n_chains)).max(1.0);
        let se = (sa * sa * tau / a.len() as f64 + sb * sb / b.len() as f64).sqrt();
        println!(
            "   {name}: generated {ma:.4} (std {sa:.3}, tau {tau:.2} samples), reference {mb:.4} (std {sb:.3}), z = {:.2}",
            (ma - mb) / se
        );
    }
    let all_g = pair_distances(&g.positions, 13, 3)?;
    let all_r = pair_distances(&reference, 13, 3)?;
    let hg = Histogram::new(&all_g, 0.5, 4.0, 70)?;
    let hr = Histogram::new(&all_r, 0.5, 4.0, 70)?;
    // Counting samples, not their 78 correlated pair distances, as independent values: a
    // conservative noise level.
    let noise = total_variation_noise(
        &hr.probabilities(),
        g.len() as f64,
        reference.len() as f64 / 39.0,
    );
    println!(
        "   pair-distance histogram: total variation {:.4} (expected from noise alone about {:.4})",
        hg.total_variation(&hr)?,
        noise
    );
    Ok(())
}
