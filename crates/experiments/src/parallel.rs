//! Data parallelism over the cores of one machine.
//!
//! The paper's DW4 and LJ13 batches are too small for libtorch's intra-op threads to pay off (each
//! op is a few tens of microseconds), so instead a batch is split into contiguous shards solved
//! concurrently on scoped threads, each running its ops with the caller's libtorch thread count
//! (`training.threads`, 1 by default, so ops run inline). Everything
//! random is drawn on the calling thread before the split and the shards' gradients are summed in
//! shard order, so a run is reproducible for given `workers` and `threads`. Each shard is its own
//! adaptive solve: the step sizes (and so the last digits of the result) depend on the number of
//! workers, which is therefore part of a run's configuration.

use crate::config::GradientMethod;
use crate::data::TensorBatch;
use crate::error::ExperimentError;
use crate::model::EnfModel;
use egnn::Masks;
use flow::{FlowError, GradientMode, Probes};
use ode::SolveStats;
use tch::{Kind, Tensor};

/// A shared reference to the model or its parameter list that may cross threads.
///
/// SAFETY of the `Sync` impls (for [`EnfModel`] and `[Tensor]` only): the workers only read the
/// parameters (forward passes and `autograd.grad` with explicit inputs, which accumulates nothing
/// into `.grad`) and call no method that mutates a shared tensor (`set_requires_grad`, in-place
/// ops); each builds its own autograd graph, which libtorch supports from several threads at once;
/// nothing writes the parameters until every worker has been joined by `std::thread::scope`.
struct Shared<'a, T: ?Sized>(&'a T);
unsafe impl Sync for Shared<'_, EnfModel> {}
unsafe impl Sync for Shared<'_, [Tensor]> {}

impl<T: ?Sized> Shared<'_, T> {
    /// The reference (a method, so that closures capture the whole wrapper, not its field).
    fn get(&self) -> &T {
        self.0
    }
}

/// Contiguous shards `(start, len)` of `n` rows over at most `workers` workers, sizes differing by
/// at most one, no empty shard.
pub fn shard_ranges(n: i64, workers: usize) -> Vec<(i64, i64)> {
    let k = (workers.max(1) as i64).min(n.max(1));
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = base + i64::from(i < extra);
            let range = (start, len);
            start += len;
            range
        })
        .filter(|&(_, len)| len > 0)
        .collect()
}

/// Runs `work` on every shard of `batch` (with its rows of `probes`), concurrently when there is
/// more than one shard, and returns the shards' results in shard order.
fn map_shards<R: Send>(
    batch: &TensorBatch,
    probes: &Probes,
    workers: usize,
    context: &str,
    work: impl Fn(TensorBatch, Probes) -> Result<R, ExperimentError> + Sync,
) -> Result<Vec<R>, ExperimentError> {
    let ranges = shard_ranges(batch.len(), workers);
    let shard = |(start, len): (i64, i64)| {
        let part = TensorBatch {
            positions: batch.positions.narrow(0, start, len),
            masks: Masks::from_node_mask(&batch.masks.node.narrow(0, start, len)),
        };
        (part, probes.narrow(start, len))
    };
    if ranges.len() == 1 {
        let (part, probes) = shard(ranges[0]);
        return Ok(vec![work(part, probes)?]);
    }
    let work = &work;
    // libtorch's OpenMP thread count is per thread: a new thread would start a team of one
    // thread per core (whose idle members spin), so each worker takes the caller's setting.
    let threads = tch::get_num_threads();
    std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .into_iter()
            .map(|range| {
                let (part, probes) = shard(range);
                scope.spawn(move || {
                    geometry::flush_denormals();
                    tch::set_num_threads(threads);
                    work(part, probes)
                })
            })
            .collect();
        // Join every worker before looking at any result, so that no thread is left running.
        let joined: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        joined
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|_| {
                    Err(ExperimentError::Model(format!(
                        "{context}: a worker thread panicked"
                    )))
                })
            })
            .collect()
    })
}

/// The negative log-likelihood of every row of `batch` (`[batch]`, nats), without gradients,
/// computed on `workers` shards; plus the solver statistics summed over shards.
///
/// Errors: [`ExperimentError::Flow`] with `context` when a shard's solve fails.
pub fn nll_no_grad(
    model: &EnfModel,
    batch: &TensorBatch,
    probes: &Probes,
    workers: usize,
    context: &str,
) -> Result<(Vec<f64>, SolveStats), ExperimentError> {
    let shared = Shared(model);
    let results = map_shards(batch, probes, workers, context, |part, probes| {
        let model = shared.get();
        let (logp, stats) = model
            .flow
            .log_likelihood_with_probes(&part.positions, &part.masks, probes, GradientMode::NoGrad)
            .map_err(|source| ExperimentError::Flow {
                context: context.to_string(),
                source,
            })?;
        let nll = Vec::<f64>::try_from((-logp).to_kind(Kind::Double).to_device(tch::Device::Cpu))?;
        Ok((nll, stats))
    })?;
    let mut all = Vec::with_capacity(batch.len() as usize);
    let mut total = SolveStats::default();
    for (nll, stats) in results {
        all.extend(nll);
        total += stats;
    }
    Ok((all, total))
}

/// Gradients of the batch's training loss, the mean NLL plus `ode_regularization` times the mean
/// ODE regulariser ([`flow::Cnf::encode_regularised`]; a weight of 0 integrates no regulariser),
/// with respect to `params` (`None` where a parameter does not reach the loss), by
/// backpropagation through the solver or by the adjoint method, computed on `workers` shards
/// and summed in shard order; plus the summed NLL (nats) and the shards' mean number of function
/// evaluations per solve (forward, plus the backward solve's for the adjoint).
///
/// Errors: [`ExperimentError::Flow`] with `context` when a shard's solve fails.
#[allow(clippy::too_many_arguments)]
pub fn nll_gradients(
    model: &EnfModel,
    params: &[Tensor],
    batch: &TensorBatch,
    probes: &Probes,
    method: GradientMethod,
    ode_regularization: f64,
    workers: usize,
    context: &str,
) -> Result<(f64, Vec<Option<Tensor>>, f64), ExperimentError> {
    let n = batch.len() as f64;
    let shared = Shared(model);
    let shared_params = Shared(params);
    let flow_error = |source: FlowError| ExperimentError::Flow {
        context: context.to_string(),
        source,
    };
    let results = map_shards(batch, probes, workers, context, |part, probes| {
        let (model, params) = (shared.get(), shared_params.get());
        let (x, masks) = (&part.positions, &part.masks);
        let regularise = ode_regularization != 0.0;
        match method {
            GradientMethod::Backprop => {
                let enc = if regularise {
                    model
                        .flow
                        .encode_regularised(x, masks, probes, GradientMode::Backprop)
                } else {
                    model
                        .flow
                        .encode_with_probes(x, masks, probes, GradientMode::Backprop)
                }
                .map_err(flow_error)?;
                let logp = model.flow.log_prior(&enc, masks).map_err(flow_error)? + &enc.log_det;
                let nll_sum = -logp.sum(logp.kind());
                let loss = match &enc.regulariser {
                    Some(r) => (&nll_sum + r.sum(r.kind()) * ode_regularization) / n,
                    None => &nll_sum / n,
                };
                let grads = Tensor::f_run_backward(&[loss], params, false, false)
                    .map_err(|e| flow_error(FlowError::Torch(e)))?
                    .into_iter()
                    .map(|g| g.defined().then_some(g))
                    .collect::<Vec<_>>();
                Ok((nll_sum.double_value(&[]), grads, enc.stats.nfe))
            }
            GradientMethod::Adjoint => {
                let out = if regularise {
                    model.flow.log_likelihood_adjoint_regularised(
                        x,
                        masks,
                        probes,
                        params,
                        |ll, reg| {
                            (reg.sum(reg.kind()) * ode_regularization - ll.sum(ll.kind())) / n
                        },
                    )
                } else {
                    model
                        .flow
                        .log_likelihood_adjoint(x, masks, probes, params, |ll| {
                            -ll.sum(ll.kind()) / n
                        })
                }
                .map_err(flow_error)?;
                let nll_sum = -out.log_likelihood.sum(Kind::Double).double_value(&[]);
                Ok((nll_sum, out.param_grads, out.forward.nfe + out.backward.nfe))
            }
        }
    })?;
    let shards = results.len() as f64;
    let mut nll_sum = 0.0;
    let mut nfe = 0.0;
    let mut summed: Vec<Option<Tensor>> = params.iter().map(|_| None).collect();
    for (shard_nll, grads, shard_nfe) in results {
        nll_sum += shard_nll;
        nfe += shard_nfe as f64 / shards;
        for (acc, g) in summed.iter_mut().zip(grads) {
            if let Some(g) = g {
                *acc = Some(match acc.take() {
                    Some(a) => a + g,
                    None => g,
                });
            }
        }
    }
    Ok((nll_sum, summed, nfe))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_without_gaps() {
        assert_eq!(shard_ranges(100, 2), vec![(0, 50), (50, 50)]);
        assert_eq!(shard_ranges(7, 3), vec![(0, 3), (3, 2), (5, 2)]);
        assert_eq!(shard_ranges(1, 4), vec![(0, 1)]);
        assert_eq!(shard_ranges(5, 0), vec![(0, 5)]);
    }
}
