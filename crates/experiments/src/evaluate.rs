//! Negative log-likelihood of a data split under a trained flow.

use crate::config::TrainingConfig;
use crate::data::TensorBatch;
use crate::error::ExperimentError;
use crate::model::EnfModel;
use crate::parallel::nll_no_grad;
use flow::TraceEstimator;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// NLL of a split: mean over samples, in nats per sample (per graph, not per dimension, as in the
/// paper's tables).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean negative log-likelihood, nats.
    pub nll: f64,
    /// Standard error of the mean over samples.
    pub nll_std_err: f64,
    /// Samples evaluated.
    pub n_samples: usize,
    /// Right-hand-side evaluations summed over the batches' solves.
    pub nfe: usize,
    /// Accepted solver steps summed over the batches' solves.
    pub accepted_steps: usize,
    /// Rejected solver steps summed over the batches' solves.
    pub rejected_steps: usize,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Evaluates the NLL of every sample of `data` with `trace`, without parameter gradients, in
/// batches of `training.eval_batch_size` each split over `training.workers` threads. Hutchinson
/// probes are drawn once per batch on the calling thread (libtorch's generator).
///
/// Errors: [`ExperimentError::Flow`] (with `context`) when a solve fails;
/// [`ExperimentError::NonFiniteNll`] when a sample's NLL is NaN or infinite (a diverged model);
/// [`ExperimentError::Config`] for an empty data set.
pub fn evaluate_nll(
    model: &EnfModel,
    data: &TensorBatch,
    training: &TrainingConfig,
    trace: TraceEstimator,
    context: &str,
) -> Result<Evaluation, ExperimentError> {
    let start = Instant::now();
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    let mut total = ode::SolveStats::default();
    let n = data.len();
    if n == 0 {
        return Err(ExperimentError::Config {
            key: context.to_string(),
            message: "no samples to evaluate".into(),
        });
    }
    let mut first = 0;
    while first < n {
        let len = (training.eval_batch_size as i64).min(n - first);
        let part = data.slice(first, len);
        let x = &part.positions;
        let probes = trace.probes(&x.size(), &part.masks.node, x.kind(), x.device());
        let context = format!("{context}, samples {first}..{}", first + len);
        let (nll, stats) = nll_no_grad(model, &part, &probes, training.workers, &context)?;
        if let Some(bad) = nll.iter().find(|v| !v.is_finite()) {
            return Err(ExperimentError::NonFiniteNll {
                context,
                value: *bad,
            });
        }
        sum += nll.iter().sum::<f64>();
        sum_sq += nll.iter().map(|v| v * v).sum::<f64>();
        total += stats;
        first += len;
    }
    let count = n.max(1) as f64;
    let mean = sum / count;
    let var = (sum_sq / count - mean * mean).max(0.0) * count / (count - 1.0).max(1.0);
    Ok(Evaluation {
        nll: mean,
        nll_std_err: (var / count).sqrt(),
        n_samples: n as usize,
        nfe: total.nfe,
        accepted_steps: total.accepted,
        rejected_steps: total.rejected,
        seconds: start.elapsed().as_secs_f64(),
    })
}
