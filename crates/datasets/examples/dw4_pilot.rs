//! Pilot runs behind the DW4 default sampler settings (`datasets::default_dw4_config`).
//!
//! 1. Relaxation from the initial state: mean energy, pair distance and short-pair fraction
//!    over 1,000 chains against the step, to choose the burn-in.
//! 2. Integrated autocorrelation times at equilibrium, to choose the thinning: of the energy
//!    (every step recorded) and of the slow observables, the mean pair distance and the fraction
//!    of pairs in the short well (every 10th step recorded).
//! 3. The default data set: generation time, acceptance, autocorrelation left between
//!    successive samples of a chain.
//! 4. With the argument `exact`: equilibrium expectations without MCMC, by self-normalised
//!    importance sampling (2e8 draws, about half a minute), the figures the tests compare with.
//!
//! Run: `cargo run --release -p enf-datasets --example dw4_pilot [-- exact]`.

use std::time::Instant;

use datasets::stats::{
    integrated_autocorrelation_time_chains, mean_std, pair_distances, per_chain,
};
use datasets::{default_dw4_config, generate, metropolis, DoubleWell, Energy, MetropolisConfig};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Per-sample mean pair distance and fraction of pairs shorter than d0 = 4.
fn slow_observables(positions: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let d = pair_distances(positions, 4, 2).expect("DW4 positions");
    let mean = d
        .chunks_exact(6)
        .map(|p| p.iter().sum::<f64>() / 6.0)
        .collect();
    let short = d
        .chunks_exact(6)
        .map(|p| p.iter().filter(|&&x| x < 4.0).count() as f64 / 6.0)
        .collect();
    (mean, short)
}

fn main() -> Result<(), datasets::DatasetError> {
    let energy = DoubleWell::dw4();
    let base = default_dw4_config();

    // 1. Relaxation.
    let relax = MetropolisConfig {
        n_chains: 1000,
        n_samples: 1000 * 200,
        burn_in: 0,
        thin: 100,
        ..base.clone()
    };
    let s = metropolis(&energy, &relax)?;
    let (d, short) = slow_observables(&s.positions);
    println!(
        "1. relaxation, {} chains from N(0, {}^2):",
        relax.n_chains, relax.init_std
    );
    for round in [0usize, 1, 4, 9, 19, 29, 49, 99, 149, 199] {
        let r = round * 1000..(round + 1) * 1000;
        println!(
            "   step {:>6}: mean E {:>8.3}  mean d {:.3}  short fraction {:.3}",
            (round + 1) * relax.thin,
            mean_std(&s.energies[r.clone()]).0,
            mean_std(&d[r.clone()]).0,
            mean_std(&short[r]).0
        );
    }

    // 2. Equilibrium autocorrelation.
    let every_step = MetropolisConfig {
        n_chains: 200,
        n_samples: 200 * 5000,
        burn_in: 30_000,
        thin: 1,
        ..base.clone()
    };
    let s = metropolis(&energy, &every_step)?;
    let tau_e = integrated_autocorrelation_time_chains(&s.energies_by_chain());
    println!(
        "2. equilibrium: acceptance {:.4}; tau_int(E) = {:.0} steps",
        s.acceptance_rate, tau_e
    );
    let every_10 = MetropolisConfig {
        thin: 10,
        n_samples: 200 * 4000,
        ..every_step
    };
    let s = metropolis(&energy, &every_10)?;
    let (d, short) = slow_observables(&s.positions);
    let c = every_10.n_chains;
    println!(
        "   tau_int(E) = {:.0}, tau_int(mean d) = {:.0}, tau_int(short fraction) = {:.0} steps",
        10.0 * integrated_autocorrelation_time_chains(&s.energies_by_chain()),
        10.0 * integrated_autocorrelation_time_chains(&per_chain(&d, c)),
        10.0 * integrated_autocorrelation_time_chains(&per_chain(&short, c)),
    );

    // 3. The default data set.
    let t = Instant::now();
    let ds = generate(datasets::System::Dw4, &base)?;
    let secs = t.elapsed().as_secs_f64();
    let energies = ds.energies.as_deref().unwrap_or_default();
    let (d, short) = slow_observables(&ds.positions);
    let c = base.n_chains;
    let acc = match &ds.source {
        datasets::Source::Metropolis {
            acceptance_rate, ..
        } => *acceptance_rate,
        _ => f64::NAN,
    };
    println!(
        "3. default data set: {} samples, {} steps, {:.1} s, acceptance {:.4}",
        ds.len(),
        base.total_steps(),
        secs,
        acc
    );
    println!(
        "   mean E {:.4} (std {:.3}), mean d {:.4}, short fraction {:.4}",
        mean_std(energies).0,
        mean_std(energies).1,
        mean_std(&d).0,
        mean_std(&short).0
    );
    println!(
        "   tau_int in samples of a chain (thin {}): E {:.2}, mean d {:.2}, short fraction {:.2}",
        base.thin,
        integrated_autocorrelation_time_chains(&per_chain(energies, c)),
        integrated_autocorrelation_time_chains(&per_chain(&d, c)),
        integrated_autocorrelation_time_chains(&per_chain(&short, c)),
    );

    // 4. Exact expectations by importance sampling.
    if std::env::args().any(|a| a == "exact") {
        exact(&energy);
    }
    Ok(())
}

/// Self-normalised importance sampling of exp(-E): particle 0 at the origin (translation
/// integrated out), particles 1..3 from q = N(0, 3^2 I_6); weights exp(-E) / q. Standard errors
/// from 20 batch means.
fn exact(energy: &DoubleWell) {
    let (scale, n_batches, per_batch) = (3.0f64, 20, 10_000_000);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let mut x = [0f64; 8];
    let (mut tw, mut tw2) = (0.0, 0.0);
    let mut batches: Vec<[f64; 3]> = Vec::new();
    for _ in 0..n_batches {
        let (mut w_sum, mut we, mut wd, mut ws) = (0.0, 0.0, 0.0, 0.0);
        for _ in 0..per_batch {
            let mut log_q = 0.0;
            for v in x.iter_mut().skip(2) {
                let z: f64 = rng.sample(StandardNormal);
                *v = scale * z;
                log_q -= 0.5 * z * z;
            }
            let e = energy.energy(&x);
            let w = (-e - log_q).exp();
            let p: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let (d, short) = slow_observables(&p);
            w_sum += w;
            tw += w;
            tw2 += w * w;
            we += w * e;
            wd += w * d[0];
            ws += w * short[0];
        }
        batches.push([we / w_sum, wd / w_sum, ws / w_sum]);
    }
    println!(
        "4. importance sampling, {} draws, effective sample size {:.0}:",
        n_batches * per_batch,
        tw * tw / tw2
    );
    for (q, name) in ["mean E", "mean pair distance", "short-pair fraction"]
        .iter()
        .enumerate()
    {
        let v: Vec<f64> = batches.iter().map(|b| b[q]).collect();
        let (m, sd) = mean_std(&v);
        println!("   {name}: {m:.4} ± {:.4}", sd / (n_batches as f64).sqrt());
    }
}
