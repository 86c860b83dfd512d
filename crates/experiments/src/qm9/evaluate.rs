//! Evaluation of a QM9 E-NF: the negative log-likelihood of test molecules (Table 2's NLL column)
//! and the stability of sampled molecules (Table 2's stability columns).

use std::time::Instant;

use datasets::qm9::{Molecule, Qm9Dataset, StabilitySummary};
use flow::{GradientMode, TraceEstimator};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::Kind;

use super::batch::Qm9Batch;
use super::model::Qm9Model;
use crate::error::ExperimentError;

/// A seeded random subset of `n` of `rows` (all of them when `n >= rows.len()`), sorted.
pub fn seeded_subset(rows: &[usize], n: usize, seed: u64) -> Vec<usize> {
    let mut v = rows.to_vec();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    v.shuffle(&mut rng);
    v.truncate(n);
    v.sort_unstable();
    v
}

/// The NLL of a set of molecules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NllEvaluation {
    /// Number of molecules.
    pub n_molecules: usize,
    /// Mean of `-log p(x, h, M)` over the molecules, nats per molecule.
    pub nll: f64,
    /// Standard error of that mean (sample standard deviation / sqrt(n)).
    pub nll_std_err: f64,
    /// Means of the terms: `log p_Z`, `log |det|`, `log q`, `log p(M)`.
    pub mean_log_pz: f64,
    /// Mean `log |det|` (ActNorm + flow).
    pub mean_log_det: f64,
    /// Mean `log q(v | x, h)`.
    pub mean_log_q: f64,
    /// Mean `log p(M)`.
    pub mean_log_p_m: f64,
    /// The trace estimator used.
    pub trace: TraceEstimator,
    /// Molecules per batch.
    pub batch_size: usize,
    /// Mean function evaluations per batch solve.
    pub nfe_per_batch: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Throughput, molecules per second.
    pub molecules_per_second: f64,
}

/// `-log p(x, h, M)` of the molecules `rows` of `ds`, in batches of `batch_size` molecules of
/// similar size (rows sorted by atom count: less padding; the sorting also decides which noise
/// draws each molecule gets, and the batch shares one adaptive solve, so values differ from
/// another batching by the estimators' noise and the solver tolerance), with libtorch's
/// generator seeded by `seed` for the dequantization noise and the Hutchinson probes. `progress(done)` is called after each batch.
///
/// Errors: [`ExperimentError::Flow`] for a failed solve; [`ExperimentError::NonFiniteNll`] when
/// a molecule's NLL is not finite (naming its row).
pub fn evaluate_nll(
    model: &Qm9Model,
    ds: &Qm9Dataset,
    rows: &[usize],
    batch_size: usize,
    trace: TraceEstimator,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<NllEvaluation, ExperimentError> {
    if rows.is_empty() || batch_size == 0 {
        return Err(ExperimentError::Config {
            key: "evaluation".into(),
            message: "needs at least one molecule and a batch size of at least 1".into(),
        });
    }
    tch::manual_seed(seed as i64);
    let mut order = rows.to_vec();
    order.sort_by_key(|&r| (ds.n_atoms.get(r).copied().unwrap_or(0), r));
    let start = Instant::now();
    let device = model.vs.device();
    let (mut values, mut sums, mut nfe, mut batches) = (Vec::new(), [0f64; 4], 0usize, 0usize);
    for chunk in order.chunks(batch_size) {
        let batch = Qm9Batch::gather(ds, chunk, Kind::Float, device)?;
        let ll = model.log_likelihood(&batch, trace, GradientMode::NoGrad)?;
        let to_vec = |t: &tch::Tensor| -> Result<Vec<f64>, ExperimentError> {
            Ok(t.to_kind(Kind::Double)
                .to_device(tch::Device::Cpu)
                .try_into()?)
        };
        let lp = to_vec(&ll.log_p)?;
        if let Some((i, v)) = lp.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ExperimentError::NonFiniteNll {
                context: format!("QM9 row {}", chunk[i]),
                value: -v,
            });
        }
        for (k, t) in [&ll.log_pz, &ll.log_det, &ll.log_q, &ll.log_p_m]
            .into_iter()
            .enumerate()
        {
            sums[k] += to_vec(t)?.iter().sum::<f64>();
        }
        values.extend(lp.iter().map(|v| -v));
        nfe += ll.stats.nfe;
        batches += 1;
        progress(values.len());
    }
    let seconds = start.elapsed().as_secs_f64();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    Ok(NllEvaluation {
        n_molecules: values.len(),
        nll: mean,
        nll_std_err: (var / n).sqrt(),
        mean_log_pz: sums[0] / n,
        mean_log_det: sums[1] / n,
        mean_log_q: sums[2] / n,
        mean_log_p_m: sums[3] / n,
        trace,
        batch_size,
        nfe_per_batch: nfe as f64 / batches as f64,
        seconds,
        molecules_per_second: n / seconds,
    })
}

/// Stability of sampled molecules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleEvaluation {
    /// Stable atoms and molecules over all samples (non-finite samples count as unstable).
    pub stability: StabilitySummary,
    /// Samples whose positions were not finite (the reference replaces them by zeros).
    pub non_finite: usize,
    /// Mean function evaluations per batch solve.
    pub nfe_per_batch: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Molecules per second.
    pub molecules_per_second: f64,
}

/// Samples `n` molecules (atom counts from p(M), seeded by `seed` with libtorch's generator
/// seeded too) in batches of `batch_size`, checks their stability, and returns them.
///
/// Errors: [`ExperimentError::Flow`] for a failed solve.
pub fn sample_molecules(
    model: &Qm9Model,
    n: usize,
    batch_size: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Result<(Vec<Molecule>, SampleEvaluation), ExperimentError> {
    tch::manual_seed(seed as i64);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut counts: Vec<usize> = (0..n).map(|_| model.node_counts.sample(&mut rng)).collect();
    // Similar sizes together: less padding; the draws themselves are unchanged.
    counts.sort_unstable();
    let start = Instant::now();
    let (mut molecules, mut nfe, mut batches) = (Vec::with_capacity(n), 0usize, 0usize);
    for chunk in counts.chunks(batch_size.max(1)) {
        let (m, stats) = model.sample(chunk, Kind::Float)?;
        molecules.extend(m);
        nfe += stats.nfe;
        batches += 1;
        progress(molecules.len());
    }
    let seconds = start.elapsed().as_secs_f64();
    let mut stability = StabilitySummary::default();
    let mut non_finite = 0;
    for m in &molecules {
        match m.stability() {
            Ok(s) => stability.add(s),
            Err(_) => {
                non_finite += 1;
                stability.add(datasets::qm9::MoleculeStability {
                    stable_atoms: 0,
                    n_atoms: m.n_atoms(),
                });
            }
        }
    }
    Ok((
        molecules,
        SampleEvaluation {
            stability,
            non_finite,
            nfe_per_batch: nfe as f64 / batches.max(1) as f64,
            seconds,
            molecules_per_second: n as f64 / seconds,
        },
    ))
}
