//! Training with the paper's protocol (FACTS.md section 3): AdamW with AMSGrad, validation every
//! `eval_every` epochs, the best-validation parameters kept, their test NLL reported.
//!
//! A run directory holds `config.toml`, `metrics.jsonl` (one line per epoch), `best.safetensors`
//! (best validation so far), `last.safetensors` (parameters and optimiser state at the end of the
//! last finished epoch) and, once finished, `result.json`. Checkpoints, the configuration and the
//! result are written atomically and `metrics.jsonl` is appended one complete line per epoch, so
//! an interrupted or failed run leaves the last good checkpoint and every finished epoch's metrics
//! intact.
//!
//! Training the same configuration into a directory that holds an unfinished run resumes it
//! from `last.safetensors`: at most the interrupted epoch is lost, and since batch order, trace
//! probes and augmentations are seeded per epoch and step, the resumed run computes what the
//! uninterrupted one would have. A checkpoint that cannot be read (truncated, corrupt, from
//! another model) is reported and the run restarts from epoch 1. While a run trains, its
//! directory is locked (`.lock`, [`crate::run_lock`]): a second process asked to train it is
//! refused instead of interleaving its metrics and checkpoints with the first's.

use crate::checkpoint;
use crate::clip::GradientClipper;
use crate::config::{RunConfig, TrainingConfig};
use crate::data::TensorBatch;
use crate::error::ExperimentError;
use crate::evaluate::{evaluate_nll, Evaluation};
use crate::model::EnfModel;
use crate::optim::AdamW;
use crate::parallel;
use crate::results::{EpochMetrics, RunResult};
use datasets::atomic::write_atomic as atomic_write;
use datasets::{MiniBatches, ParticleDataset, SplitName};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use tch::Kind;

/// File names inside a run directory.
pub mod files {
    /// The run's configuration.
    pub const CONFIG: &str = "config.toml";
    /// Per-epoch metrics, JSON lines.
    pub const METRICS: &str = "metrics.jsonl";
    /// Parameters with the best validation NLL.
    pub const BEST: &str = "best.safetensors";
    /// Parameters at the end of the last finished epoch.
    pub const LAST: &str = "last.safetensors";
    /// The final result.
    pub const RESULT: &str = "result.json";
}

/// The mini-batches of a run: its first `data.n_train` training samples, shuffled per epoch with
/// `training.seed`, in batches of `training.batch_size`.
///
/// Errors: [`ExperimentError::Data`] when the data set has fewer training samples or the batch size
/// is invalid.
pub fn training_schedule(
    config: &RunConfig,
    dataset: &ParticleDataset,
) -> Result<MiniBatches, ExperimentError> {
    let t = &config.training;
    let train_idx = dataset.splits.first_train(config.data.n_train)?.to_vec();
    Ok(MiniBatches::new(train_idx, t.batch_size, t.seed)?)
}

/// The samples of split `name` a run evaluates: the first `first` of them, or all (`None`).
///
/// Errors: [`ExperimentError::Data`] when the split has fewer than `first` samples.
pub fn evaluation_batch(
    dataset: &ParticleDataset,
    name: SplitName,
    first: Option<usize>,
    device: tch::Device,
) -> Result<TensorBatch, ExperimentError> {
    let indices = dataset.splits.get(name);
    let n = first.unwrap_or(indices.len());
    let chosen = indices
        .get(..n)
        .ok_or_else(|| datasets::DatasetError::TooFewSamples {
            what: format!("{} samples", name.as_str()),
            needed: n,
            available: indices.len(),
        })?;
    let batch = datasets::Batch::gather(dataset, chosen)?;
    Ok(TensorBatch::from_batch(&batch, Kind::Float, device))
}

/// The paper's optimiser for `model`: AdamW with the learning rate, weight decay and AMSGrad
/// setting of `training`.
pub fn optimiser(model: &EnfModel, training: &TrainingConfig) -> AdamW {
    AdamW::new(&model.vs, training)
}

/// The seed of libtorch's generator (Hutchinson probes) for epoch `epoch` of a run seeded with
/// `seed`; epoch `epochs + 1` is the final test evaluation.
pub fn epoch_seed(seed: u64, epoch: usize) -> i64 {
    (seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64) & (i64::MAX as u64)) as i64
}

/// The generator of the random rotations of training step `step` of `epoch` (GNF-att-aug): a
/// function of the seed and the step alone, so a resumed run draws the same rotations. (QM9
/// runs, which count steps rather than epochs, use epoch 0.)
pub(crate) fn augmentation_rng(seed: u64, epoch: usize, step: usize) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let key = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(((epoch as u64) << 32) | step as u64);
    rand::rngs::StdRng::seed_from_u64(key)
}

/// One optimiser step on a batch (every sample randomly rotated first for GNF-att-aug): NLL with
/// the training trace estimator (probes drawn once for the batch) plus the weighted ODE
/// regulariser when `training.ode_regularization > 0`, gradients by `training.gradients`
/// (backpropagation through the solver or the adjoint method) on `training.workers` shards,
/// clipped by `clipper` when `training.clip_grad` (otherwise `clipper` is untouched), AdamW.
/// Returns the batch's mean NLL and the mean NFE of the shards' solves (the forward solve's,
/// plus the backward solve's with the adjoint).
///
/// Errors: [`ExperimentError::Flow`] if a solve fails, [`ExperimentError::NonFiniteLoss`],
/// [`ExperimentError::NonFiniteGradient`] (then the parameters are left as they were).
pub fn train_step(
    model: &EnfModel,
    opt: &mut AdamW,
    clipper: &mut GradientClipper,
    batch: &TensorBatch,
    config: &RunConfig,
    epoch: usize,
    step: usize,
) -> Result<(f64, f64), ExperimentError> {
    let t = &config.training;
    let rotated;
    let batch = if config.model.method.augments_rotations() {
        rotated = batch.randomly_rotated(&mut augmentation_rng(t.seed, epoch, step));
        &rotated
    } else {
        batch
    };
    let x = &batch.positions;
    let probes = t
        .train_trace
        .probes(&x.size(), &batch.masks.node, x.kind(), x.device());
    let context = format!("training epoch {epoch}, step {step}");
    let (nll_sum, mut grads, nfe) = parallel::nll_gradients(
        model,
        opt.parameters(),
        batch,
        &probes,
        t.gradients,
        t.ode_regularization,
        t.workers,
        &context,
    )?;
    let value = nll_sum / batch.len() as f64;
    if !value.is_finite() {
        return Err(ExperimentError::NonFiniteLoss { epoch, step, value });
    }
    if let Some(parameter) = opt.first_non_finite(&grads) {
        return Err(ExperimentError::NonFiniteGradient {
            epoch,
            step,
            parameter,
        });
    }
    if t.clip_grad {
        clipper.clip(&mut grads);
    }
    opt.step(&grads)?;
    Ok((value, nfe))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// What a run directory holds of an unfinished attempt at the same run.
struct Progress {
    /// Epochs finished.
    epoch: usize,
    /// Best validation so far, by epoch.
    best: Option<(usize, Evaluation)>,
    /// Metrics of the finished epochs.
    metrics: Vec<EpochMetrics>,
    /// Wall time spent so far, seconds.
    elapsed: f64,
    /// The gradient clipper with its record of norms (the default without clipping).
    clipper: GradientClipper,
}

/// Why an unfinished run cannot be resumed.
enum ResumeError {
    /// `last.safetensors` is unreadable (truncated, corrupt, not a resumable checkpoint of this
    /// model): the run restarts from epoch 1.
    Unreadable(ExperimentError),
    /// The checkpoint is fine but the other files disagree with it, or cannot be read: an error,
    /// nothing is deleted.
    Inconsistent(ExperimentError),
}

/// Reads the unfinished run in `run_dir` into `model` and `opt`: `last.safetensors` (parameters,
/// optimiser state, finished epochs), the metrics of those epochs and the best checkpoint. A best
/// checkpoint older than the metrics say (the process died between writing `last` and `best` of
/// an improving epoch) is rewritten from `last`. `Ok(None)` when there is nothing to resume.
///
/// Errors: [`ResumeError`]; after one, `model` and `opt` may hold part of the checkpoint:
/// rebuild them.
fn read_progress(
    run_dir: &Path,
    model: &mut EnfModel,
    opt: &mut AdamW,
) -> Result<Option<Progress>, ResumeError> {
    use ResumeError::{Inconsistent, Unreadable};
    let last = run_dir.join(files::LAST);
    if !last.exists() {
        return Ok(None);
    }
    let bad = |path: &Path, message: String| ExperimentError::Checkpoint {
        path: path.to_path_buf(),
        message,
    };
    let contents = checkpoint::read(&last).map_err(Unreadable)?;
    let number = |key: &str| -> Result<f64, ResumeError> {
        contents
            .metadata
            .get(key)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| Unreadable(bad(&last, format!("no number {key} in the metadata"))))
    };
    let epoch = number("epoch")? as usize;
    let steps = number("optimiser_steps")? as u64;
    let elapsed = number("elapsed_seconds")?;
    let clipper = GradientClipper::from_metadata(&contents.metadata)
        .map_err(|message| Unreadable(bad(&last, message)))?;
    checkpoint::restore(&mut model.vs, &contents, &last).map_err(Unreadable)?;
    opt.load_state(&contents.tensors, steps)
        .map_err(|e| Unreadable(bad(&last, e.to_string())))?;

    let metrics_path = run_dir.join(files::METRICS);
    let text = std::fs::read_to_string(&metrics_path)
        .map_err(|e| Inconsistent(ExperimentError::io(&metrics_path, e)))?;
    let metrics: Vec<EpochMetrics> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<EpochMetrics>(line).ok())
        .filter(|m| m.epoch <= epoch)
        .collect();
    if metrics.iter().map(|m| m.epoch).ne(1..=epoch) {
        return Err(Inconsistent(bad(
            &metrics_path,
            format!(
                "does not hold the metrics of epochs 1 to {epoch}, which {} has",
                last.display()
            ),
        )));
    }
    let mut best: Option<(usize, Evaluation)> = None;
    for m in &metrics {
        if let Some(v) = m.validation {
            if best.as_ref().is_none_or(|(_, b)| v.nll < b.nll) {
                best = Some((m.epoch, v));
            }
        }
    }
    if let Some((best_epoch, eval)) = best {
        let path = run_dir.join(files::BEST);
        let saved = checkpoint::read(&path)
            .ok()
            .and_then(|c| c.metadata.get("epoch").cloned());
        if saved != Some(best_epoch.to_string()) {
            if best_epoch != epoch {
                return Err(Inconsistent(bad(
                    &path,
                    format!("is not the checkpoint of epoch {best_epoch}, the best validation"),
                )));
            }
            // Killed between writing `last` and `best` of this epoch: same parameters.
            save_best(model, best_epoch, &eval, &path).map_err(Inconsistent)?;
        }
    }
    Ok(Some(Progress {
        epoch,
        best,
        metrics,
        elapsed,
        clipper,
    }))
}

/// Writes the best checkpoint of `epoch` with its validation NLL in the metadata.
fn save_best(
    model: &EnfModel,
    epoch: usize,
    eval: &Evaluation,
    path: &Path,
) -> Result<(), ExperimentError> {
    let meta = HashMap::from([
        ("epoch".to_string(), epoch.to_string()),
        ("validation_nll".to_string(), eval.nll.to_string()),
    ]);
    checkpoint::save(&model.vs, &meta, path)
}

/// The seed of libtorch's generator for the final test evaluation of a run (Hutchinson probes
/// when the test trace is estimated): `enf evaluate` uses it too, so it repeats `result.json`.
pub fn test_seed(training: &TrainingConfig) -> i64 {
    epoch_seed(training.seed, training.epochs + 1)
}

/// Trains one run of `config` on `dataset`, writing into `run_dir`, and evaluates the test NLL of
/// the best-validation parameters. `show_progress` draws a progress bar with the running NLL.
/// An unfinished run of the same configuration in `run_dir` is resumed (see the module
/// documentation).
///
/// Errors: configuration, data, solver and I/O errors, each naming what failed; a `run_dir`
/// holding another configuration or being trained by another process
/// ([`ExperimentError::Config`]; nothing in it is touched, only an empty `.lock` is added, see
/// [`crate::run_lock`]). Files already written stay intact.
pub fn train(
    config: &RunConfig,
    dataset: &ParticleDataset,
    run_dir: &Path,
    show_progress: bool,
) -> Result<RunResult, ExperimentError> {
    geometry::flush_denormals();
    config.validate()?;
    let start = Instant::now();
    let t = &config.training;
    if t.threads > 0 {
        tch::set_num_threads(t.threads as i32);
    }
    let device = t.device.device()?;
    std::fs::create_dir_all(run_dir).map_err(|e| ExperimentError::io(run_dir, e))?;
    // Held until the run returns: no second process trains this directory meanwhile.
    let _lock = crate::run_lock::lock_run_dir(run_dir)?;
    let config_path = run_dir.join(files::CONFIG);
    if config_path.exists() {
        // Never mix two runs in one directory.
        let existing = RunConfig::from_file(&config_path)?;
        if !existing.same_run(config) {
            return Err(ExperimentError::Config {
                key: config_path.display().to_string(),
                message: "holds another run's configuration; choose another run directory".into(),
            });
        }
    }
    atomic_write(&config_path, config.to_toml().as_bytes())?;

    tch::manual_seed(t.seed as i64);
    let mut model = EnfModel::for_run(config, device)?;
    let mut opt = optimiser(&model, t);
    let progress = match read_progress(run_dir, &mut model, &mut opt) {
        Ok(progress) => progress,
        Err(ResumeError::Inconsistent(e)) => return Err(e),
        Err(ResumeError::Unreadable(e)) => {
            // Kept for inspection; the restarted run writes the other files anew.
            let last = run_dir.join(files::LAST);
            let aside = run_dir.join(format!("{}.unreadable", files::LAST));
            let _ = std::fs::rename(&last, &aside);
            tracing::warn!(
                "cannot resume {}: {e}; moved it to {} and restarting from epoch 1",
                run_dir.display(),
                aside.display()
            );
            tch::manual_seed(t.seed as i64);
            model = EnfModel::for_run(config, device)?;
            opt = optimiser(&model, t);
            None
        }
    };

    let schedule = training_schedule(config, dataset)?;
    let val = evaluation_batch(dataset, SplitName::Val, config.data.n_val, device)?;
    let test = evaluation_batch(dataset, SplitName::Test, config.data.n_test, device)?;
    let steps_per_epoch = schedule.n_batches();

    let mut clipper = progress
        .as_ref()
        .map(|p| p.clipper.clone())
        .unwrap_or_default();
    let (first_epoch, mut best, earlier) = match progress {
        Some(p) => {
            tracing::info!(
                "resuming {} after epoch {} of {}",
                run_dir.display(),
                p.epoch,
                t.epochs
            );
            (p.epoch + 1, p.best, Some((p.metrics, p.elapsed)))
        }
        None => (1, None, None),
    };
    let (earlier_metrics, earlier_seconds) = earlier.unwrap_or_default();
    // Earlier epochs' steps, for the run's statistics: each epoch's median stands for its steps
    // (the mean in metrics written before medians were recorded).
    let mut step_seconds: Vec<f64> = earlier_metrics
        .iter()
        .flat_map(|m| {
            let typical = m.median_seconds_per_step.unwrap_or(m.seconds_per_step);
            std::iter::repeat_n(typical, steps_per_epoch)
        })
        .collect();
    let mut total_nfe: f64 = earlier_metrics
        .iter()
        .map(|m| m.train_nfe_per_step * steps_per_epoch as f64)
        .sum();
    // metrics.jsonl holds exactly the finished epochs, then one line per new epoch.
    let metrics_path = run_dir.join(files::METRICS);
    crate::results::write_json_lines(&metrics_path, &earlier_metrics)?;

    let bar = if show_progress {
        let bar = ProgressBar::new((t.epochs * steps_per_epoch) as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(((first_epoch - 1) * steps_per_epoch) as u64);
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut running = f64::NAN;
    for epoch in first_epoch..=t.epochs {
        tch::manual_seed(epoch_seed(t.seed, epoch));
        let (mut epoch_nll, mut epoch_nfe) = (0.0, 0.0);
        let mut epoch_step_seconds = Vec::with_capacity(steps_per_epoch);
        for (step, batch) in schedule.epoch(dataset, epoch as u64)?.enumerate() {
            let step_start = Instant::now();
            let batch = TensorBatch::from_batch(&batch, Kind::Float, device);
            let (nll, nfe) =
                train_step(&model, &mut opt, &mut clipper, &batch, config, epoch, step)?;
            let seconds = step_start.elapsed().as_secs_f64();
            epoch_step_seconds.push(seconds);
            epoch_nll += nll;
            epoch_nfe += nfe;
            running = if running.is_nan() {
                nll
            } else {
                0.95 * running + 0.05 * nll
            };
            bar.set_message(format!(
                "epoch {epoch}/{} NLL {running:.3} NFE {nfe:.0}",
                t.epochs
            ));
            bar.inc(1);
        }
        total_nfe += epoch_nfe;
        let epoch_train_seconds: f64 = epoch_step_seconds.iter().sum();
        step_seconds.extend_from_slice(&epoch_step_seconds);
        let validation = if epoch % t.eval_every == 0 || epoch == t.epochs {
            let eval = evaluate_nll(
                &model,
                &val,
                t,
                t.eval_trace,
                &format!("validation after epoch {epoch}"),
            )?;
            let line = format!(
                "epoch {epoch}: train NLL {:.4} ({:.1} NFE/step), validation NLL {:.4} +- {:.4} ({:.1} s)",
                epoch_nll / steps_per_epoch as f64,
                epoch_nfe / steps_per_epoch as f64,
                eval.nll,
                eval.nll_std_err,
                eval.seconds,
            );
            if show_progress {
                bar.println(line);
            } else {
                tracing::info!("{line}");
            }
            Some(eval)
        } else {
            None
        };
        let record = EpochMetrics {
            epoch,
            train_nll: epoch_nll / steps_per_epoch as f64,
            train_nfe_per_step: epoch_nfe / steps_per_epoch as f64,
            seconds_per_step: epoch_train_seconds / steps_per_epoch as f64,
            median_seconds_per_step: (!epoch_step_seconds.is_empty())
                .then(|| median(epoch_step_seconds)),
            validation,
        };
        // Order matters for resuming: the metrics line (on disk), then `last`, then `best`; a
        // process killed in between leaves files that read_progress reconciles.
        crate::results::append_json_line(&metrics_path, &record)?;
        let meta = HashMap::from([
            ("epoch".to_string(), epoch.to_string()),
            ("optimiser_steps".to_string(), opt.steps_taken().to_string()),
            (
                "elapsed_seconds".to_string(),
                (earlier_seconds + start.elapsed().as_secs_f64()).to_string(),
            ),
            clipper.to_metadata(),
        ]);
        checkpoint::save_with(
            &model.vs,
            &opt.state_tensors(),
            &meta,
            &run_dir.join(files::LAST),
        )?;
        if let Some(eval) = validation {
            if best.as_ref().is_none_or(|(_, b)| eval.nll < b.nll) {
                save_best(&model, epoch, &eval, &run_dir.join(files::BEST))?;
                best = Some((epoch, eval));
            }
        }
    }
    bar.finish_and_clear();

    let (best_epoch, validation) = best.ok_or_else(|| ExperimentError::Config {
        key: "training.epochs".into(),
        message: "no validation was run".into(),
    })?;
    checkpoint::load(&mut model.vs, &run_dir.join(files::BEST))?;
    tch::manual_seed(test_seed(t));
    let test = evaluate_nll(&model, &test, t, t.test_trace, "test")?;
    let result = RunResult {
        method: config.model.method.paper_name().into(),
        system: config.data.system.name().into(),
        n_train: config.data.n_train,
        seed: t.seed,
        best_epoch,
        validation,
        test,
        train_steps: step_seconds.len(),
        mean_train_nfe: total_nfe / step_seconds.len().max(1) as f64,
        median_step_seconds: median(step_seconds),
        wall_seconds: earlier_seconds + start.elapsed().as_secs_f64(),
        config: config.clone(),
        data_digest: Some(dataset.digest()),
    };
    result.write(&run_dir.join(files::RESULT))?;
    Ok(result)
}
