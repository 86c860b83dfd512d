//! A QM9 training run in a directory: `config.json` (the [`Qm9RunConfig`]), `metrics.jsonl`
//! (one line per step), `last.safetensors` (parameters, optimiser state, and in the metadata the
//! step count and the gradient clipper's record), written atomically every
//! `checkpoint_every` steps and at the end. Re-running the same configuration (with any number
//! of steps) in the same directory resumes from the last checkpoint and computes what the
//! uninterrupted run would have (batch order keyed by seed and epoch, libtorch's generator
//! re-seeded at every step, GNF-att-aug's rotations keyed by seed and step); a directory of another configuration is refused untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use datasets::qm9::Qm9Dataset;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::Kind;

use super::batch::Qm9Batch;
use super::model::{training_node_counts, Qm9Model, Qm9ModelConfig};
use super::train::{
    qm9_optimizer, qm9_train_step, GradientClipper, Qm9StepReport, Qm9TrainOptions,
};
use crate::checkpoint;
use crate::error::ExperimentError;

/// Everything that decides a QM9 training run's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Qm9RunConfig {
    /// The model.
    pub model: Qm9ModelConfig,
    /// The optimisation.
    pub train: Qm9TrainOptions,
    /// Molecules per batch. The paper used 128 with the adjoint method
    /// (`train.gradients = "adjoint"`); with backpropagation through the solver (the default)
    /// memory grows with the batch and the NFE: 16 molecules of the 6 x 64 model peaked at
    /// 15.8 GB at 32 NFE on the development machine, so the default is 8.
    pub batch_size: usize,
    /// Use a seeded random subset of this many training molecules (`None`: all 100,000).
    pub n_train: Option<usize>,
    /// Optimiser steps in all.
    pub steps: usize,
    /// Seed of the initial parameters, the batch order and every noise draw.
    pub seed: u64,
    /// dopri5 rtol = atol (1e-4).
    pub tol: f64,
    /// Write the checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
}

impl Default for Qm9RunConfig {
    fn default() -> Self {
        Qm9RunConfig {
            model: Qm9ModelConfig::default(),
            train: Qm9TrainOptions::default(),
            batch_size: 8,
            n_train: None,
            steps: 100,
            seed: 0,
            tol: 1e-4,
            checkpoint_every: 10,
        }
    }
}

impl Qm9RunConfig {
    /// The run's model (parameters from libtorch's generator) with p(M) from `ds`'s training
    /// split and dopri5 at the run's tolerance, on the CPU.
    ///
    /// Errors: [`ExperimentError::Model`] for invalid hyper-parameters; as
    /// [`training_node_counts`].
    pub fn build_model(&self, ds: &Qm9Dataset) -> Result<Qm9Model, ExperimentError> {
        Qm9Model::new(
            &self.model,
            training_node_counts(ds)?,
            ode::OdeSolver::dopri5(self.tol, self.tol),
            tch::Device::Cpu,
        )
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Qm9StepLine {
    /// Step (1-based).
    pub step: usize,
    /// Epoch (0-based) the step belongs to.
    pub epoch: usize,
    /// The step's report.
    #[serde(flatten)]
    pub report: Qm9StepReport,
    /// Seconds the step took.
    pub seconds: f64,
}

/// Files of a run directory.
pub mod files {
    /// The configuration.
    pub const CONFIG: &str = "config.json";
    /// Per-step metrics.
    pub const METRICS: &str = "metrics.jsonl";
    /// The last checkpoint.
    pub const LAST: &str = "last.safetensors";
}

/// The training rows of a run: all of the split, or a seeded subset.
fn training_rows(ds: &Qm9Dataset, config: &Qm9RunConfig) -> Vec<usize> {
    // As many rows as steps_per_epoch counts.
    match config.n_train {
        Some(n) => super::evaluate::seeded_subset(&ds.splits.train, n, config.seed),
        None => ds.splits.train.clone(),
    }
}

/// The rows of step `step` (0-based): epoch `step / batches_per_epoch` shuffles the rows with a
/// generator keyed by (seed, epoch); the step takes its slice.
fn batch_rows(rows: &[usize], config: &Qm9RunConfig, step: usize) -> (usize, Vec<usize>) {
    let per_epoch = rows.len().div_ceil(config.batch_size).max(1);
    let (epoch, k) = (step / per_epoch, step % per_epoch);
    let mut order = rows.to_vec();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    rng.set_stream(epoch as u64 + 1);
    order.shuffle(&mut rng);
    let start = k * config.batch_size;
    let end = (start + config.batch_size).min(order.len());
    (epoch, order[start..end].to_vec())
}

/// Training steps per epoch of `config` on `ds`: the training molecules (all of the split or
/// the run's subset) in batches of `config.batch_size`, the last one smaller.
pub fn steps_per_epoch(config: &Qm9RunConfig, ds: &Qm9Dataset) -> usize {
    let n = config
        .n_train
        .map_or(ds.splits.train.len(), |n| n.min(ds.splits.train.len()));
    n.div_ceil(config.batch_size.max(1)).max(1)
}

/// Checks that `run_dir` holds no run of another configuration than `config` (the same run
/// with another number of steps is the same run); reads only.
///
/// Errors: [`ExperimentError::Config`] naming `config.json` when it holds another
/// configuration or cannot be parsed; [`ExperimentError::Io`] when it cannot be read.
pub fn check_run_dir(config: &Qm9RunConfig, run_dir: &Path) -> Result<(), ExperimentError> {
    check_settings_file(
        &run_dir.join(files::CONFIG),
        |c: Qm9RunConfig| {
            Qm9RunConfig {
                steps: config.steps,
                ..c
            } == *config
        },
        "the directory holds a run of another configuration; use another --run-dir",
    )
}

/// Checks that the JSON settings file `path`, if there is one, parses and holds settings that
/// `same` accepts; reads only.
///
/// Errors: [`ExperimentError::Config`] naming `path` with `refusal` when it does not;
/// [`ExperimentError::Io`] when it cannot be read.
pub(crate) fn check_settings_file<T: serde::de::DeserializeOwned>(
    path: &Path,
    same: impl FnOnce(T) -> bool,
    refusal: &str,
) -> Result<(), ExperimentError> {
    if !path.exists() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
    if serde_json::from_str::<T>(&text).is_ok_and(same) {
        Ok(())
    } else {
        Err(ExperimentError::Config {
            key: path.display().to_string(),
            message: refusal.into(),
        })
    }
}

/// The step count in a run checkpoint's metadata.
///
/// Errors: [`ExperimentError::Checkpoint`] naming `path` when it has none.
fn step_of(contents: &checkpoint::Contents, path: &Path) -> Result<usize, ExperimentError> {
    contents
        .metadata
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ExperimentError::Checkpoint {
            path: path.to_path_buf(),
            message: "no step count in its metadata".into(),
        })
}

/// The step count of the last checkpoint in `run_dir` (0 when there is none).
///
/// Errors: checkpoint errors naming the file (unreadable, or no step count).
pub fn last_checkpoint_step(run_dir: &Path) -> Result<usize, ExperimentError> {
    let path = run_dir.join(files::LAST);
    if !path.exists() {
        return Ok(0);
    }
    step_of(&checkpoint::read(&path)?, &path)
}

/// Trains (or resumes) the run in `run_dir` on `ds`; `progress(step, report)` after each step.
/// Returns the model and the last step's report.
///
/// Errors: [`ExperimentError::Config`] when `run_dir` holds another configuration, is being
/// trained by another process ([`crate::run_lock`]; its checks are repeated under the lock) or
/// the configuration is invalid; checkpoint, I/O and training errors.
pub fn train_qm9(
    config: &Qm9RunConfig,
    ds: &Qm9Dataset,
    run_dir: &Path,
    progress: impl FnMut(usize, &Qm9StepReport),
) -> Result<(Qm9Model, Option<Qm9StepReport>), ExperimentError> {
    // Refused before anything is written, so the directory stays free for a valid run.
    check_run_config(config)?;
    check_run_dir(config, run_dir)?;
    std::fs::create_dir_all(run_dir).map_err(|e| ExperimentError::io(run_dir, e))?;
    // Held until the run returns: no second process trains this directory meanwhile.
    let _lock = crate::run_lock::lock_run_dir(run_dir)?;
    train_qm9_logged(config, ds, run_dir, progress, true)
}

/// Checks a run's settings: batch size and checkpoint interval at least 1, a positive
/// tolerance, a method QM9 training supports. Reads nothing.
///
/// Errors: [`ExperimentError::Config`] naming what is wrong.
fn check_run_config(config: &Qm9RunConfig) -> Result<(), ExperimentError> {
    if config.batch_size == 0
        || config.checkpoint_every == 0
        || config.tol.is_nan()
        || config.tol <= 0.0
    {
        return Err(ExperimentError::Config {
            key: "qm9 run".into(),
            message: "batch_size and checkpoint_every must be >= 1 and tol > 0".into(),
        });
    }
    config.model.check_method()
}

/// [`train_qm9`] without taking the run directory's lock (the caller holds it), logging the
/// resumption from a checkpoint only when `log_resume` (a validated run continues its own
/// checkpoint at every epoch and logs its resumption once).
pub(crate) fn train_qm9_logged(
    config: &Qm9RunConfig,
    ds: &Qm9Dataset,
    run_dir: &Path,
    mut progress: impl FnMut(usize, &Qm9StepReport),
    log_resume: bool,
) -> Result<(Qm9Model, Option<Qm9StepReport>), ExperimentError> {
    check_run_config(config)?;
    check_run_dir(config, run_dir)?;
    std::fs::create_dir_all(run_dir).map_err(|e| ExperimentError::io(run_dir, e))?;
    let config_path = run_dir.join(files::CONFIG);
    let text = serde_json::to_string_pretty(config).map_err(|e| ExperimentError::Config {
        key: "qm9 run".into(),
        message: e.to_string(),
    })?;
    datasets::atomic::write_atomic(&config_path, text.as_bytes())?;
    tch::manual_seed(config.seed as i64);
    let mut model = config.build_model(ds)?;
    let mut opt = qm9_optimizer(&model, &config.train);
    let mut clipper = GradientClipper::default();
    let last = run_dir.join(files::LAST);
    let mut done = 0usize;
    if last.exists() {
        let contents = checkpoint::read(&last)?;
        checkpoint::restore(&mut model.vs, &contents, &last)?;
        done = step_of(&contents, &last)?;
        opt.load_state(&contents.tensors, done as u64)?;
        clipper = GradientClipper::from_metadata(&contents.metadata).map_err(|message| {
            ExperimentError::Checkpoint {
                path: last.clone(),
                message,
            }
        })?;
        if log_resume {
            tracing::info!("resuming {} after step {done}", run_dir.display());
        }
    }
    let rows = training_rows(ds, config);
    let metrics_path = run_dir.join(files::METRICS);
    let mut report = None;
    for step in done..config.steps {
        let start = Instant::now();
        tch::manual_seed(
            (config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(step as u64)) as i64,
        );
        let (epoch, batch_rows) = batch_rows(&rows, config, step);
        let mut batch = Qm9Batch::gather(ds, &batch_rows, Kind::Float, tch::Device::Cpu)?;
        if config.model.method.augments_rotations() {
            let mut rng = crate::train::augmentation_rng(config.seed, 0, step);
            batch = batch.randomly_rotated(&mut rng);
        }
        let r = qm9_train_step(&model, &mut opt, &mut clipper, &batch, &config.train)?;
        let line = Qm9StepLine {
            step: step + 1,
            epoch,
            report: r,
            seconds: start.elapsed().as_secs_f64(),
        };
        crate::results::append_json_line(&metrics_path, &line)?;
        progress(step + 1, &r);
        report = Some(r);
        if (step + 1) % config.checkpoint_every == 0 || step + 1 == config.steps {
            save(&model, &opt, &clipper, step + 1, &last)?;
        }
    }
    Ok((model, report))
}

fn save(
    model: &Qm9Model,
    opt: &crate::optim::AdamW,
    clipper: &GradientClipper,
    step: usize,
    path: &Path,
) -> Result<(), ExperimentError> {
    let mut meta = HashMap::new();
    meta.insert("step".to_string(), step.to_string());
    let (key, value) = clipper.to_metadata();
    meta.insert(key, value);
    checkpoint::save_with(&model.vs, &opt.state_tensors(), &meta, path)
}

/// Loads a trained run's model (its `config.json` and `last.safetensors`) with p(M) from `ds`.
///
/// Errors: I/O, configuration and checkpoint errors naming the file.
pub fn load_trained(run_dir: &Path, ds: &Qm9Dataset) -> Result<Qm9Model, ExperimentError> {
    let config_path: PathBuf = run_dir.join(files::CONFIG);
    let text =
        std::fs::read_to_string(&config_path).map_err(|e| ExperimentError::io(&config_path, e))?;
    let config: Qm9RunConfig =
        serde_json::from_str(&text).map_err(|e| ExperimentError::Config {
            key: config_path.display().to_string(),
            message: e.to_string(),
        })?;
    let mut model = config.build_model(ds)?;
    checkpoint::load(&mut model.vs, &run_dir.join(files::LAST))?;
    Ok(model)
}
