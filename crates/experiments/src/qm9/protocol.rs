//! The reference's training protocol for a QM9 flow (`main_qm9.py` of the authors' code): train
//! epoch by epoch, evaluate the NLL of validation molecules after every epoch, and keep the
//! parameters of the best-validation epoch, whose test NLL and samples are reported.
//!
//! A run directory of [`train_with_validation`] is a [`super::run`] directory plus
//! `validated.json` (the [`ValidatedRunConfig`]), `validation.jsonl` (one [`ValidationLine`] per finished epoch, appended and synced) and
//! `best.safetensors` (the best epoch's checkpoint, written atomically before its line). An
//! interrupted run re-run with the same settings resumes its training from the last checkpoint
//! and its validation from the first epoch without a line, and ends with the result an
//! uninterrupted run gives (every noise draw is keyed by seed, epoch, step or batch).

use std::path::Path;

use datasets::qm9::Qm9Dataset;
use flow::{Noise, TraceEstimator};
use serde::{Deserialize, Serialize};

use super::evaluate::{evaluate_nll, seeded_subset};
use super::model::Qm9Model;
use super::run::{files, train_qm9, Qm9RunConfig, Qm9StepLine};
use super::train::Qm9StepReport;
use crate::checkpoint;
use crate::error::ExperimentError;

/// File names a validated run adds to a [`super::run`] directory.
pub mod validated_files {
    /// One [`super::ValidationLine`] per finished epoch.
    pub const VALIDATION: &str = "validation.jsonl";
    /// The best-validation epoch's checkpoint.
    pub const BEST: &str = "best.safetensors";
    /// The [`super::ValidatedRunConfig`] (its `epochs` may grow on a re-run).
    pub const SETTINGS: &str = "validated.json";
}

/// How a validated QM9 run trains and selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatedRunConfig {
    /// The training run (model, optimiser, batch size, training subset, seed, tolerance);
    /// its `steps` is set epoch by epoch and ignored here.
    pub run: Qm9RunConfig,
    /// Training epochs (the reference: 100).
    pub epochs: usize,
    /// Validation molecules: a seeded random subset of this many of the validation split
    /// (`None`: all 17,748, as the reference).
    pub n_val: Option<usize>,
    /// Molecules per validation batch.
    pub val_batch_size: usize,
}

/// The validation of one epoch: a line of `validation.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ValidationLine {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Optimiser steps taken by the end of the epoch.
    pub step: usize,
    /// Mean `-log p(x, h, M)` of the validation molecules, nats per molecule (Hutchinson,
    /// Gaussian probes, the same probes and dequantization noise at every epoch).
    pub nll: f64,
    /// Its standard error over the molecules.
    pub nll_std_err: f64,
    /// Seconds the validation took.
    pub seconds: f64,
}

/// What a validated run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidatedRun {
    /// The epoch whose parameters were kept (1-based).
    pub best_epoch: usize,
    /// Its validation NLL, nats per molecule.
    pub best_val_nll: f64,
    /// Every epoch's validation.
    pub history: Vec<ValidationLine>,
    /// Optimiser steps in all.
    pub steps: usize,
    /// Mean function evaluations per training step (`metrics.jsonl`).
    pub nfe_per_step: f64,
    /// Training time summed over the steps, seconds (every session of a resumed run).
    pub train_seconds: f64,
    /// Validation time summed over the epochs, seconds.
    pub validation_seconds: f64,
}

/// Training steps per epoch of `config` on `ds`: the training molecules (all of the split or
/// the run's subset) in batches of `config.batch_size`, the last one smaller.
pub fn steps_per_epoch(config: &Qm9RunConfig, ds: &Qm9Dataset) -> usize {
    let n = config
        .n_train
        .map_or(ds.splits.train.len(), |n| n.min(ds.splits.train.len()));
    n.div_ceil(config.batch_size.max(1)).max(1)
}

/// The validation lines of `path` that continue epochs 1, 2, ...: a truncated last line (a run
/// killed while writing it) and anything after a gap are dropped.
fn read_validation(path: &Path) -> Result<Vec<ValidationLine>, ExperimentError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
    Ok(text
        .lines()
        .map_while(|l| serde_json::from_str::<ValidationLine>(l).ok())
        .enumerate()
        .take_while(|(k, v)| v.epoch == k + 1)
        .map(|(_, v)| v)
        .collect())
}

/// The step count stored in a run's last checkpoint (0 when there is none).
fn checkpoint_step(path: &Path) -> Result<usize, ExperimentError> {
    if !path.exists() {
        return Ok(0);
    }
    let contents = checkpoint::read(path)?;
    contents
        .metadata
        .get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ExperimentError::Checkpoint {
            path: path.to_path_buf(),
            message: "no step count in its metadata".into(),
        })
}

/// Trains `config` in `run_dir` with validation after every epoch (resuming whatever an earlier
/// run of the same configuration left there) and returns the model with the best-validation
/// parameters and the run's record. `progress(step, report)` is called after each training
/// step, `on_epoch(line)` after each validation.
///
/// Errors: [`ExperimentError::Config`] for zero epochs or validation batch size, a directory of
/// another configuration, or a directory whose last checkpoint is past the first epoch without
/// validation (its `validation.jsonl` was removed: the epoch's parameters are gone, use a new
/// directory); checkpoint, I/O, training and evaluation errors as [`train_qm9`] and
/// [`evaluate_nll`].
pub fn train_with_validation(
    config: &ValidatedRunConfig,
    ds: &Qm9Dataset,
    run_dir: &Path,
    mut progress: impl FnMut(usize, &Qm9StepReport),
    mut on_epoch: impl FnMut(&ValidationLine),
) -> Result<(Qm9Model, ValidatedRun), ExperimentError> {
    if config.epochs == 0 || config.val_batch_size == 0 {
        return Err(ExperimentError::Config {
            key: "validated run".into(),
            message: "epochs and val_batch_size must be >= 1".into(),
        });
    }
    // The settings first: a directory of another validated run is refused untouched (more or
    // fewer epochs of the same run are the same run).
    let settings_path = run_dir.join(validated_files::SETTINGS);
    if settings_path.exists() {
        let text = std::fs::read_to_string(&settings_path)
            .map_err(|e| ExperimentError::io(&settings_path, e))?;
        let same = serde_json::from_str::<ValidatedRunConfig>(&text).is_ok_and(|c| {
            ValidatedRunConfig {
                epochs: config.epochs,
                run: Qm9RunConfig {
                    steps: config.run.steps,
                    ..c.run
                },
                ..c
            } == *config
        });
        if !same {
            return Err(ExperimentError::Config {
                key: settings_path.display().to_string(),
                message: "the directory holds a validated run of other settings; use another \
                          directory"
                    .into(),
            });
        }
    }
    let text = serde_json::to_string_pretty(config).map_err(|e| ExperimentError::Config {
        key: "json".into(),
        message: e.to_string(),
    })?;
    datasets::atomic::write_atomic(&settings_path, text.as_bytes())?;
    let per_epoch = steps_per_epoch(&config.run, ds);
    let validation_path = run_dir.join(validated_files::VALIDATION);
    let best_path = run_dir.join(validated_files::BEST);
    let mut history = read_validation(&validation_path)?;
    history.truncate(config.epochs);
    if !history.is_empty() && !best_path.exists() {
        return Err(ExperimentError::Config {
            key: best_path.display().to_string(),
            message: "missing, though validation.jsonl records finished epochs; use a new \
                      directory"
                .into(),
        });
    }
    // validation.jsonl holds exactly the finished epochs, then one line per new epoch.
    let kept: String = history
        .iter()
        .map(|v| serde_json::to_string(v).map(|s| s + "\n"))
        .collect::<Result<_, _>>()
        .map_err(|e| ExperimentError::Config {
            key: "json".into(),
            message: e.to_string(),
        })?;
    datasets::atomic::write_atomic(&validation_path, kept.as_bytes())?;
    let val_rows = seeded_subset(
        &ds.splits.val,
        config.n_val.unwrap_or(ds.splits.val.len()),
        config.run.seed,
    );
    let last_path = run_dir.join(files::LAST);
    for epoch in history.len() + 1..=config.epochs {
        let steps = epoch * per_epoch;
        let at = checkpoint_step(&last_path)?;
        if at > steps {
            return Err(ExperimentError::Config {
                key: validation_path.display().to_string(),
                message: format!(
                    "the last checkpoint is at step {at}, past epoch {epoch} (step {steps}), \
                     which has no validation; use a new directory"
                ),
            });
        }
        let run = Qm9RunConfig {
            steps,
            ..config.run.clone()
        };
        let (model, _) = train_qm9(&run, ds, run_dir, &mut progress)?;
        let v = evaluate_nll(
            &model,
            ds,
            &val_rows,
            config.val_batch_size,
            TraceEstimator::Hutchinson(Noise::Gaussian),
            config.run.seed,
            None,
            |_| {},
        )?;
        let line = ValidationLine {
            epoch,
            step: steps,
            nll: v.nll,
            nll_std_err: v.nll_std_err,
            seconds: v.seconds,
        };
        if history.iter().all(|h| line.nll < h.nll) {
            let bytes =
                std::fs::read(&last_path).map_err(|e| ExperimentError::io(&last_path, e))?;
            datasets::atomic::write_atomic(&best_path, &bytes)?;
        }
        crate::results::append_json_line(&validation_path, &line)?;
        on_epoch(&line);
        history.push(line);
    }
    let best = history
        .iter()
        .min_by(|a, b| a.nll.total_cmp(&b.nll))
        .copied()
        .ok_or_else(|| ExperimentError::Config {
            key: "validated run".into(),
            message: "no epoch was validated".into(),
        })?;
    let mut model = config.run.build_model(ds)?;
    checkpoint::load(&mut model.vs, &best_path)?;
    let (nfe_per_step, train_seconds) = step_totals(&run_dir.join(files::METRICS))?;
    Ok((
        model,
        ValidatedRun {
            best_epoch: best.epoch,
            best_val_nll: best.nll,
            validation_seconds: history.iter().map(|v| v.seconds).sum(),
            history,
            steps: config.epochs * per_epoch,
            nfe_per_step,
            train_seconds,
        },
    ))
}

/// Mean NFE per step and summed seconds of the steps in a run's `metrics.jsonl` (the last line
/// for a step counts, as a resumed run may have re-run the steps after its last checkpoint).
fn step_totals(path: &Path) -> Result<(f64, f64), ExperimentError> {
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
    let mut by_step = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Ok(l) = serde_json::from_str::<Qm9StepLine>(line) {
            by_step.insert(l.step, (l.report.nfe as f64, l.seconds));
        }
    }
    let n = by_step.len().max(1) as f64;
    let nfe: f64 = by_step.values().map(|v| v.0).sum();
    let seconds: f64 = by_step.values().map(|v| v.1).sum();
    Ok((nfe / n, seconds))
}
