//! Training with the paper's protocol (FACTS.md section 3): AdamW with AMSGrad, validation every
//! `eval_every` epochs, the best-validation parameters kept, their test NLL reported.
//!
//! A run directory holds `config.toml`, `metrics.jsonl` (one line per epoch), `best.safetensors`
//! (best validation so far), `last.safetensors` (end of the last epoch) and, once finished,
//! `result.json`. Checkpoints, the configuration and the result are written atomically and
//! `metrics.jsonl` is appended one complete line per epoch, so an interrupted or failed run leaves
//! the last good checkpoint and every finished epoch's metrics intact.

use crate::checkpoint;
use crate::config::{RunConfig, TrainingConfig};
use crate::data::TensorBatch;
use crate::error::ExperimentError;
use crate::evaluate::{evaluate_nll, Evaluation};
use crate::model::EnfModel;
use crate::parallel;
use crate::results::{EpochMetrics, RunResult};
use datasets::atomic::write_atomic as atomic_write;
use datasets::{MiniBatches, ParticleDataset, SplitName};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
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

/// The paper's optimiser for `model`: AdamW with the learning rate, weight decay and AMSGrad
/// setting of `training`.
///
/// Errors: [`ExperimentError::Torch`] if libtorch cannot create it.
pub fn optimiser(
    model: &EnfModel,
    training: &TrainingConfig,
) -> Result<nn::Optimizer, ExperimentError> {
    Ok(nn::AdamW {
        wd: training.weight_decay,
        amsgrad: training.amsgrad,
        ..Default::default()
    }
    .build(&model.vs, training.lr)?)
}

/// The generator of the random rotations of training step `step` of `epoch` (GNF-att-aug): a
/// function of the seed and the step alone, so a resumed run draws the same rotations.
fn augmentation_rng(seed: u64, epoch: usize, step: usize) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let key = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(((epoch as u64) << 32) | step as u64);
    rand::rngs::StdRng::seed_from_u64(key)
}

/// One optimiser step on a batch (every sample randomly rotated first for GNF-att-aug): NLL with the training trace estimator (probes drawn once for
/// the batch), gradients by `training.gradients` (backpropagation through the solver or the
/// adjoint method) on `training.workers` shards, AdamW. Returns the batch's mean NLL and the mean
/// NFE of the shards' solves (the forward solve's, plus the backward solve's with the adjoint).
///
/// Errors: [`ExperimentError::Flow`] if a solve fails, [`ExperimentError::NonFiniteLoss`].
pub fn train_step(
    model: &EnfModel,
    opt: &mut nn::Optimizer,
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
    let params = model.vs.trainable_variables();
    let context = format!("training epoch {epoch}, step {step}");
    let (nll_sum, grads, nfe) = parallel::nll_gradients(
        model,
        &params,
        batch,
        &probes,
        t.gradients,
        t.workers,
        &context,
    )?;
    let value = nll_sum / batch.len() as f64;
    if !value.is_finite() {
        return Err(ExperimentError::NonFiniteLoss { epoch, step, value });
    }
    opt.zero_grad();
    parallel::set_gradients(&params, &grads)?;
    opt.step();
    Ok((value, nfe))
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Trains one run of `config` on `dataset`, writing into `run_dir`, and evaluates the test NLL of
/// the best-validation parameters. `show_progress` draws a progress bar with the running NLL.
///
/// Errors: configuration, data, solver and I/O errors, each naming what failed; files already
/// written stay intact.
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
    atomic_write(&run_dir.join(files::CONFIG), config.to_toml().as_bytes())?;

    tch::manual_seed(t.seed as i64);
    let mut model = EnfModel::for_run(config, device)?;
    let mut opt = optimiser(&model, t)?;

    let schedule = training_schedule(config, dataset)?;
    let val = TensorBatch::from_batch(&dataset.split_batch(SplitName::Val)?, Kind::Float, device);
    let test = TensorBatch::from_batch(&dataset.split_batch(SplitName::Test)?, Kind::Float, device);

    let metrics_path = run_dir.join(files::METRICS);
    let mut metrics_file =
        std::fs::File::create(&metrics_path).map_err(|e| ExperimentError::io(&metrics_path, e))?;
    let steps_per_epoch = schedule.n_batches();
    let bar = if show_progress {
        let bar = ProgressBar::new((t.epochs * steps_per_epoch) as u64);
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut best: Option<(usize, Evaluation)> = None;
    let mut step_seconds = Vec::with_capacity(t.epochs * steps_per_epoch);
    let mut total_nfe = 0.0;
    let mut running = f64::NAN;
    for epoch in 1..=t.epochs {
        let (mut epoch_nll, mut epoch_nfe, epoch_start) = (0.0, 0.0, Instant::now());
        for (step, batch) in schedule.epoch(dataset, epoch as u64)?.enumerate() {
            let step_start = Instant::now();
            let batch = TensorBatch::from_batch(&batch, Kind::Float, device);
            let (nll, nfe) = train_step(&model, &mut opt, &batch, config, epoch, step)?;
            step_seconds.push(step_start.elapsed().as_secs_f64());
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
        let validation = if epoch % t.eval_every == 0 || epoch == t.epochs {
            let eval = evaluate_nll(
                &model,
                &val,
                t,
                t.eval_trace,
                &format!("validation after epoch {epoch}"),
            )?;
            if best.as_ref().is_none_or(|(_, b)| eval.nll < b.nll) {
                let meta = HashMap::from([
                    ("epoch".to_string(), epoch.to_string()),
                    ("validation_nll".to_string(), eval.nll.to_string()),
                ]);
                checkpoint::save(&model.vs, &meta, &run_dir.join(files::BEST))?;
                best = Some((epoch, eval));
            }
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
            seconds_per_step: epoch_start.elapsed().as_secs_f64() / steps_per_epoch as f64,
            validation,
        };
        let line = serde_json::to_string(&record).unwrap_or_default();
        writeln!(metrics_file, "{line}").map_err(|e| ExperimentError::io(&metrics_path, e))?;
        let meta = HashMap::from([("epoch".to_string(), epoch.to_string())]);
        checkpoint::save(&model.vs, &meta, &run_dir.join(files::LAST))?;
    }
    bar.finish_and_clear();

    let (best_epoch, validation) = best.ok_or_else(|| ExperimentError::Config {
        key: "training.epochs".into(),
        message: "no validation was run".into(),
    })?;
    checkpoint::load(&mut model.vs, &run_dir.join(files::BEST))?;
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
        wall_seconds: start.elapsed().as_secs_f64(),
        config: config.clone(),
    };
    result.write(&run_dir.join(files::RESULT))?;
    Ok(result)
}
