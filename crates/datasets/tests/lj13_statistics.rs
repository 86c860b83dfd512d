//! Generated LJ13 samples against the literature's reference samples
//! (`../shared/data/reference-mcmc/val_split_LJ13-1000.npy`, 10,000 samples): mean energy, mean
//! pair distance and the pair-distance histogram agree within statistical error.
//!
//! Figures are printed with `eprintln!` (run with `-- --nocapture` to see them).

mod common;

use datasets::stats::{
    energies, integrated_autocorrelation_time_chains, mean_pair_distances, mean_std,
    pair_distances, per_chain, total_variation_noise, Histogram,
};
use datasets::{default_lj13_config, metropolis, read_npy_positions, LennardJones};

#[test]
fn generated_lj13_matches_the_reference_samples() {
    let Some(path) = common::reference_file("val_split_LJ13-1000.npy") else {
        return;
    };
    let reference = read_npy_positions(&path, 13, 3).unwrap();
    let lj = LennardJones::lj13();
    // The default burn-in with fewer chains and denser thinning than the default data set
    // (about 10 million energy evaluations instead of 100 million).
    let config = datasets::MetropolisConfig {
        n_chains: 200,
        n_samples: 1000,
        thin: 2000,
        ..default_lj13_config()
    };
    let t = std::time::Instant::now();
    let g = metropolis(&lj, &config).unwrap();
    eprintln!(
        "generated {} LJ13 samples ({} steps) in {:.1} s, acceptance {:.4}",
        g.len(),
        config.total_steps(),
        t.elapsed().as_secs_f64(),
        g.acceptance_rate
    );
    assert!((0.05..0.10).contains(&g.acceptance_rate));

    let ref_energy = energies(&lj, &reference);
    let (gd, rd) = (
        mean_pair_distances(&g.positions, 13, 3).unwrap(),
        mean_pair_distances(&reference, 13, 3).unwrap(),
    );
    for (name, a, b) in [
        ("mean energy", &g.energies, &ref_energy),
        ("mean pair distance", &gd, &rd),
    ] {
        let (ma, sa) = mean_std(a);
        let (mb, sb) = mean_std(b);
        // Our samples' standard error uses the chains' integrated autocorrelation time; the
        // reference is taken as independent samples (its own correlations would only widen it).
        let tau = integrated_autocorrelation_time_chains(&per_chain(a, config.n_chains)).max(1.0);
        let se = (sa * sa * tau / a.len() as f64 + sb * sb / b.len() as f64).sqrt();
        let z = (ma - mb) / se;
        eprintln!(
            "{name}: generated {ma:.4} (std {sa:.3}, tau {tau:.2} samples), reference {mb:.4} \
             (std {sb:.3}), z = {z:.2}"
        );
        assert!(z.abs() < 3.0, "{name}: z = {z}");
        // Same spread too (the unordered-pair energy would give a 25% wider cluster).
        assert!((sa / sb - 1.0).abs() < 0.1, "{name}: std {sa} against {sb}");
    }

    let hg = Histogram::new(&pair_distances(&g.positions, 13, 3).unwrap(), 0.5, 4.0, 70).unwrap();
    let hr = Histogram::new(&pair_distances(&reference, 13, 3).unwrap(), 0.5, 4.0, 70).unwrap();
    let tv = hg.total_variation(&hr).unwrap();
    // Counting samples, not their 78 correlated pair distances, as independent: conservative.
    let noise = total_variation_noise(&hr.probabilities(), g.len() as f64, rd.len() as f64);
    eprintln!("pair-distance histogram: total variation {tv:.4} (noise about {noise:.4})");
    assert!(tv < noise, "total variation {tv} against noise {noise}");
}
