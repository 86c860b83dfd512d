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
pub use super::run::steps_per_epoch;
use super::run::{
    check_run_dir, check_settings_file, files, last_checkpoint_step, train_qm9_logged,
    Qm9RunConfig, Qm9StepLine,
};
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
    /// Optimiser steps of the epochs asked for (`epochs x` [`steps_per_epoch`]).
    pub steps: usize,
    /// Mean function evaluations per training step (`metrics.jsonl`).
    pub nfe_per_step: f64,
    /// Training time summed over the steps, seconds (every session of a resumed run).
    pub train_seconds: f64,
    /// Validation time summed over the epochs, seconds.
    pub validation_seconds: f64,
}

/// The validation lines of `path` that continue epochs 1, 2, ...: a truncated last line (a run
/// killed while writing it) is dropped.
///
/// Errors: [`ExperimentError::Io`]; [`ExperimentError::Config`] naming the file when a complete
/// line is not the next epoch's validation.
fn read_validation(path: &Path) -> Result<Vec<ValidationLine>, ExperimentError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
    let mut lines = Vec::new();
    for (k, line) in text.split_inclusive('\n').enumerate() {
        if !line.ends_with('\n') {
            break; // cut short by a kill: that epoch is validated again
        }
        match serde_json::from_str::<ValidationLine>(line.trim_end()) {
            Ok(v) if v.epoch == k + 1 => lines.push(v),
            _ => {
                return Err(ExperimentError::Config {
                    key: path.display().to_string(),
                    message: format!("line {} is not the validation of epoch {}", k + 1, k + 1),
                })
            }
        }
    }
    Ok(lines)
}

/// The epoch with the lowest validation NLL (the first of equals).
fn best_of(history: &[ValidationLine]) -> Option<ValidationLine> {
    history
        .iter()
        .fold(None, |best: Option<ValidationLine>, v| match best {
            Some(b) if b.nll <= v.nll => Some(b),
            _ => Some(*v),
        })
}

/// Trains `config` in `run_dir` with validation after every epoch (resuming whatever an earlier
/// run of the same configuration left there) and returns the model with the best-validation
/// parameters and the run's record. `progress(step, report)` is called after each training
/// step, `on_epoch(line)` after each validation.
///
/// Errors, all before anything is written (but the directory and its empty `.lock`, see
/// [`crate::run_lock`]): [`ExperimentError::Config`] for zero epochs, a zero validation batch
/// size or `n_val = Some(0)`, a directory being trained by another process, a directory of
/// another configuration (of the training run or of its validation), a directory that records
/// more validated epochs than asked for, a `validation.jsonl` that is malformed or records
/// epochs without its `best.safetensors`, or whose last checkpoint is past the first epoch
/// without validation (the epoch's parameters are gone: use a new directory); then checkpoint,
/// I/O, training and evaluation errors as [`train_qm9`](super::run::train_qm9) and
/// [`evaluate_nll`] (a diverged model's non-finite validation NLL stops the run with
/// [`ExperimentError::NonFiniteNll`]).
pub fn train_with_validation(
    config: &ValidatedRunConfig,
    ds: &Qm9Dataset,
    run_dir: &Path,
    mut progress: impl FnMut(usize, &Qm9StepReport),
    mut on_epoch: impl FnMut(&ValidationLine),
) -> Result<(Qm9Model, ValidatedRun), ExperimentError> {
    let refuse = |key: &Path, message: String| ExperimentError::Config {
        key: key.display().to_string(),
        message,
    };
    if config.epochs == 0 || config.val_batch_size == 0 || config.n_val == Some(0) {
        return Err(ExperimentError::Config {
            key: "validated run".into(),
            message: "epochs, val_batch_size and n_val must be >= 1".into(),
        });
    }
    // Locked before anything in the directory is read, so that what the checks read cannot
    // change before the run writes; held until the run returns.
    std::fs::create_dir_all(run_dir).map_err(|e| ExperimentError::io(run_dir, e))?;
    let _lock = crate::run_lock::lock_run_dir(run_dir)?;
    // Every check reads only; the directory is written after all of them passed.
    let settings_path = run_dir.join(validated_files::SETTINGS);
    // More epochs of the same run are the same run (`run.steps` is set here).
    check_settings_file(
        &settings_path,
        |c: ValidatedRunConfig| {
            ValidatedRunConfig {
                epochs: config.epochs,
                run: Qm9RunConfig {
                    steps: config.run.steps,
                    ..c.run
                },
                ..c
            } == *config
        },
        "the directory holds a validated run of other settings; use another directory",
    )?;
    check_run_dir(&config.run, run_dir)?;
    let validation_path = run_dir.join(validated_files::VALIDATION);
    let best_path = run_dir.join(validated_files::BEST);
    let mut history = read_validation(&validation_path)?;
    if history.len() > config.epochs {
        return Err(refuse(
            &validation_path,
            format!(
                "records {} validated epochs; ask for at least that many (not {})",
                history.len(),
                config.epochs
            ),
        ));
    }
    if !history.is_empty() && !best_path.exists() {
        return Err(refuse(
            &best_path,
            "missing, though validation.jsonl records finished epochs; use a new directory".into(),
        ));
    }
    let per_epoch = steps_per_epoch(&config.run, ds);
    let at = last_checkpoint_step(run_dir)?;
    if at > (history.len() + 1) * per_epoch {
        return Err(refuse(
            &validation_path,
            format!(
                "the last checkpoint is at step {at}, past epoch {} (step {}), which has no \
                 validation; use a new directory",
                history.len() + 1,
                (history.len() + 1) * per_epoch
            ),
        ));
    }

    let text = serde_json::to_string_pretty(config).map_err(|e| ExperimentError::Config {
        key: "json".into(),
        message: e.to_string(),
    })?;
    datasets::atomic::write_atomic(&settings_path, text.as_bytes())?;
    // validation.jsonl holds exactly the finished epochs (a line cut short is dropped), then
    // one line per new epoch.
    crate::results::write_json_lines(&validation_path, &history)?;
    let val_rows = seeded_subset(
        &ds.splits.val,
        config.n_val.unwrap_or(ds.splits.val.len()),
        config.run.seed,
    );
    let last_path = run_dir.join(files::LAST);
    let mut best = best_of(&history);
    if at > 0 {
        tracing::info!(
            "resuming {} after step {at} ({} validated epochs)",
            run_dir.display(),
            history.len()
        );
    }
    for epoch in history.len() + 1..=config.epochs {
        let steps = epoch * per_epoch;
        let run = Qm9RunConfig {
            steps,
            ..config.run.clone()
        };
        let (model, _) = train_qm9_logged(&run, ds, run_dir, &mut progress, false)?;
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
        // The best checkpoint is in place before the line that makes it the best.
        if best.is_none_or(|b| line.nll < b.nll) {
            let bytes =
                std::fs::read(&last_path).map_err(|e| ExperimentError::io(&last_path, e))?;
            datasets::atomic::write_atomic(&best_path, &bytes)?;
            best = Some(line);
        }
        crate::results::append_json_line(&validation_path, &line)?;
        on_epoch(&line);
        history.push(line);
    }
    let best = best.ok_or_else(|| ExperimentError::Config {
        key: "validated run".into(),
        message: "no epoch was validated".into(),
    })?;
    let mut model = config.run.build_model(ds)?;
    checkpoint::load(&mut model.vs, &best_path)?;
    let steps = config.epochs * per_epoch;
    let (nfe_per_step, train_seconds) = step_totals(&run_dir.join(files::METRICS), steps)?;
    Ok((
        model,
        ValidatedRun {
            best_epoch: best.epoch,
            best_val_nll: best.nll,
            validation_seconds: history.iter().map(|v| v.seconds).sum(),
            history,
            steps,
            nfe_per_step,
            train_seconds,
        },
    ))
}

/// Mean NFE per step and summed seconds of steps 1 to `steps` in a run's `metrics.jsonl` (the
/// last line for a step counts, as a resumed run may have re-run the steps after its last
/// checkpoint).
fn step_totals(path: &Path, steps: usize) -> Result<(f64, f64), ExperimentError> {
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
    let mut by_step = std::collections::BTreeMap::new();
    for line in text.lines() {
        match serde_json::from_str::<Qm9StepLine>(line) {
            Ok(l) if l.step <= steps => {
                by_step.insert(l.step, (l.report.nfe as f64, l.seconds));
            }
            _ => {}
        }
    }
    let n = by_step.len().max(1) as f64;
    let nfe: f64 = by_step.values().map(|v| v.0).sum();
    let seconds: f64 = by_step.values().map(|v| v.1).sum();
    Ok((nfe / n, seconds))
}
