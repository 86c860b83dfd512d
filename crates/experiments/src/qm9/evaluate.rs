//! Evaluation of a QM9 E-NF: the negative log-likelihood of test molecules (Table 2's NLL column)
//! and the stability of sampled molecules (Table 2's stability columns).

use std::path::Path;
use std::time::Instant;

use datasets::qm9::{Molecule, Qm9Dataset, StabilitySummary};
use flow::{GradientMode, TraceEstimator};
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::Kind;

use super::batch::Qm9Batch;
use super::journal::{
    model_digest, rows_digest, BatchRecord, EvaluationJournal, JournalHeader, JOURNAL_VERSION,
};
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
    /// Evaluation time, seconds (the sum over batches, of every session of a resumed journal).
    pub seconds: f64,
    /// Throughput, molecules per second.
    pub molecules_per_second: f64,
    /// Batches taken from the evaluation's journal rather than evaluated in this session.
    #[serde(default)]
    pub resumed_batches: usize,
}

/// `-log p(x, h, M)` of the molecules `rows` of `ds`, in batches of `batch_size` molecules of
/// similar size (rows sorted by atom count: less padding; the batch shares one adaptive solve, so
/// values differ from another batching by the estimators' noise and the solver tolerance). Batch
/// `k` seeds libtorch's generator with [`batch_seed`]`(seed, k)` for its dequantization noise and
/// Hutchinson probes, so a batch's values do not depend on the batches before it.
/// `progress(done)` is called after each batch.
///
/// With a `journal` path ([`EvaluationJournal`]) every finished batch is appended to that file,
/// and the batches it already holds are taken from it instead of being evaluated again: an
/// interrupted evaluation resumes where it stopped and ends with the values an uninterrupted one
/// would have given (on the same hardware and thread count; elsewhere to round-off). `seconds`
/// then counts the time of all sessions, and `progress` starts at the molecules read back.
///
/// Errors: [`ExperimentError::Config`] for no molecules, a row outside the data set, a zero
/// batch size, or a journal written for another evaluation or whose batches do not match this
/// one's; [`ExperimentError::Io`] and [`ExperimentError::Data`] for the journal's file;
/// [`ExperimentError::Torch`] for tensors that cannot be read back; [`ExperimentError::Flow`] for
/// a failed solve; [`ExperimentError::NonFiniteNll`] when a molecule's NLL is not finite (naming
/// its row; the batches before it stay in the journal).
#[allow(clippy::too_many_arguments)]
pub fn evaluate_nll(
    model: &Qm9Model,
    ds: &Qm9Dataset,
    rows: &[usize],
    batch_size: usize,
    trace: TraceEstimator,
    seed: u64,
    journal: Option<&Path>,
    mut progress: impl FnMut(usize),
) -> Result<NllEvaluation, ExperimentError> {
    if rows.is_empty() || batch_size == 0 {
        return Err(ExperimentError::Config {
            key: "evaluation".into(),
            message: "needs at least one molecule and a batch size of at least 1".into(),
        });
    }
    if let Some(&r) = rows.iter().find(|&&r| r >= ds.len()) {
        return Err(ExperimentError::Config {
            key: "evaluation".into(),
            message: format!("row {r} is outside the data set ({} molecules)", ds.len()),
        });
    }
    let mut order = rows.to_vec();
    order.sort_by_key(|&r| (ds.n_atoms[r], r));
    let n_batches = order.len().div_ceil(batch_size);
    let (journal, mut records) = match journal {
        Some(path) => {
            let context = format!(
                "{:?}; {:?}; forward_mode_trace {}",
                model.config, model.node_counts, model.flow.forward_mode_trace
            );
            let header = JournalHeader {
                version: JOURNAL_VERSION,
                model_digest: model_digest(&model.vs, &context)?,
                data_digest: ds.source_sha256.clone(),
                rows_digest: rows_digest(&order),
                n_molecules: order.len(),
                trace,
                batch_size,
                seed,
                solver: format!("{:?}", model.flow.solver),
            };
            let (j, done) = EvaluationJournal::open(path, &header)?;
            check_records(&done, &order, batch_size, path)?;
            (Some(j), done)
        }
        None => (None, Vec::new()),
    };
    let resumed_batches = records.len();
    let mut done: usize = records.iter().map(|r| r.rows.len()).sum();
    if resumed_batches > 0 {
        tracing::info!("resuming: {resumed_batches} of {n_batches} batches already in the journal");
        progress(done);
    }
    let device = model.vs.device();
    for (k, chunk) in order.chunks(batch_size).enumerate().skip(resumed_batches) {
        let start = Instant::now();
        tch::manual_seed(batch_seed(seed, k));
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
        let record = BatchRecord {
            batch: k,
            rows: chunk.to_vec(),
            nll: lp.iter().map(|v| -v).collect(),
            log_pz: to_vec(&ll.log_pz)?,
            log_det: to_vec(&ll.log_det)?,
            log_q: to_vec(&ll.log_q)?,
            log_p_m: to_vec(&ll.log_p_m)?,
            nfe: ll.stats.nfe,
            seconds: start.elapsed().as_secs_f64(),
        };
        if let Some(j) = &journal {
            j.append(&record)?;
        }
        done += record.rows.len();
        records.push(record);
        progress(done);
    }
    Ok(summarise(&records, trace, batch_size, resumed_batches))
}

/// Checks that the records read back from a journal are this evaluation's batches: at most
/// as many, each with the rows of its batch and one value per row.
fn check_records(
    records: &[BatchRecord],
    order: &[usize],
    batch_size: usize,
    path: &Path,
) -> Result<(), ExperimentError> {
    let mut chunks = order.chunks(batch_size);
    for r in records {
        let lengths = [&r.nll, &r.log_pz, &r.log_det, &r.log_q, &r.log_p_m].map(Vec::len);
        let ok = chunks.next().is_some_and(|c| c == r.rows.as_slice())
            && lengths.iter().all(|&n| n == r.rows.len());
        if !ok {
            return Err(ExperimentError::Config {
                key: "journal".into(),
                message: format!(
                    "{}: batch {} (line {}) does not hold this evaluation's molecules",
                    path.display(),
                    r.batch,
                    r.batch + 2
                ),
            });
        }
    }
    Ok(())
}

/// The seed of libtorch's generator for batch `k` of an evaluation seeded by `seed`: the first
/// draw of ChaCha8 stream `k` seeded by `seed`, as a non-negative i64.
pub fn batch_seed(seed: u64, k: usize) -> i64 {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(k as u64);
    (rng.next_u64() >> 1) as i64
}

/// Means, standard error and throughput of the batches of an evaluation.
fn summarise(
    records: &[BatchRecord],
    trace: TraceEstimator,
    batch_size: usize,
    resumed_batches: usize,
) -> NllEvaluation {
    let values: Vec<f64> = records.iter().flat_map(|r| r.nll.iter().copied()).collect();
    let n = values.len() as f64;
    let mean_of = |f: fn(&BatchRecord) -> &Vec<f64>| {
        records.iter().flat_map(|r| f(r).iter()).sum::<f64>() / n
    };
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    let seconds: f64 = records.iter().map(|r| r.seconds).sum();
    NllEvaluation {
        n_molecules: values.len(),
        nll: mean,
        nll_std_err: (var / n).sqrt(),
        mean_log_pz: mean_of(|r| &r.log_pz),
        mean_log_det: mean_of(|r| &r.log_det),
        mean_log_q: mean_of(|r| &r.log_q),
        mean_log_p_m: mean_of(|r| &r.log_p_m),
        trace,
        batch_size,
        nfe_per_batch: records.iter().map(|r| r.nfe as f64).sum::<f64>() / records.len() as f64,
        seconds,
        molecules_per_second: n / seconds,
        resumed_batches,
    }
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
