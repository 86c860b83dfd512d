//! The record of a finished run, written as JSON next to its checkpoints, and its one-line summary.

use crate::config::RunConfig;
use crate::error::ExperimentError;
use crate::evaluate::Evaluation;
use datasets::atomic::write_atomic as atomic_write;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One evaluation during training (a line of `metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Mean training NLL over the epoch's steps (Hutchinson estimate), nats.
    pub train_nll: f64,
    /// Mean NFE per training step over the epoch (forward solve only).
    pub train_nfe_per_step: f64,
    /// Mean seconds per training step over the epoch (the steps alone, validation excluded).
    /// Wall time: a process suspended during the epoch (SIGSTOP, a laptop's sleep) counts the
    /// pause in the step it interrupted.
    pub seconds_per_step: f64,
    /// Median seconds of the epoch's training steps (the upper median for an even count). A
    /// single pause lands in one step, so unlike [`EpochMetrics::seconds_per_step`], which it can
    /// move without bound, it moves this at most to a neighbouring step's time in an epoch of
    /// three or more steps. Absent in lines written before commit 18b0fb6 (a resumed run's file
    /// may hold both kinds) and for an epoch without steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_seconds_per_step: Option<f64>,
    /// Validation evaluation, on evaluation epochs.
    pub validation: Option<Evaluation>,
}

/// The result of one run: one seed of one cell of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Method name as in the paper ("E-NF").
    pub method: String,
    /// System name ("DW4").
    pub system: String,
    /// Training samples.
    pub n_train: usize,
    /// Seed.
    pub seed: u64,
    /// Epoch of the best validation NLL, whose parameters give the test NLL.
    pub best_epoch: usize,
    /// Validation NLL at the best epoch.
    pub validation: Evaluation,
    /// Test NLL of the best-validation parameters.
    pub test: Evaluation,
    /// Optimiser steps taken.
    pub train_steps: usize,
    /// Mean NFE per training step (forward solve).
    pub mean_train_nfe: f64,
    /// Median seconds per training step. The steps of this process are counted one by one; the
    /// epochs an earlier process trained (a resumed run) each count as their steps' median
    /// ([`EpochMetrics::median_seconds_per_step`], or their mean in older lines) repeated once
    /// per step, so for a resumed run this approximates the median of all steps.
    pub median_step_seconds: f64,
    /// Wall time of the whole run, seconds.
    pub wall_seconds: f64,
    /// The configuration.
    pub config: RunConfig,
    /// [`datasets::ParticleDataset::digest`] of the data set the run trained and was evaluated
    /// on; absent in results written before it was recorded (2026-11-30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_digest: Option<String>,
}

impl RunResult {
    /// Checks that this finished run (read from `path`) was trained on the data set whose
    /// [`datasets::ParticleDataset::digest`] is `digest`; a result that records no digest
    /// (written before digests were recorded) passes.
    ///
    /// Errors: [`ExperimentError::Config`] naming `path` and both digests when they differ (the
    /// data file was regenerated or replaced since): the result is not reused, and left as it is.
    pub fn check_data(&self, digest: &str, path: &Path) -> Result<(), ExperimentError> {
        match &self.data_digest {
            Some(d) if d != digest => Err(ExperimentError::Config {
                key: path.display().to_string(),
                message: format!(
                    "holds a run finished on other data (digest {}...) than the data set now \
                     holds ({}...); move the run directory away to train it again",
                    &d[..d.len().min(12)],
                    &digest[..digest.len().min(12)]
                ),
            }),
            _ => Ok(()),
        }
    }

    /// Writes the result as pretty JSON, atomically.
    ///
    /// Errors: [`ExperimentError::Io`].
    pub fn write(&self, path: &Path) -> Result<(), ExperimentError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| ExperimentError::Config {
            key: "result".into(),
            message: e.to_string(),
        })?;
        Ok(atomic_write(path, text.as_bytes())?)
    }

    /// Reads a result written by [`RunResult::write`].
    ///
    /// Errors: [`ExperimentError::Io`] if unreadable, [`ExperimentError::Config`] if malformed.
    pub fn read(path: &Path) -> Result<Self, ExperimentError> {
        let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| ExperimentError::Config {
            key: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// A human-readable line: `E-NF DW4 n=1000 seed 0: test NLL 8.12 +- 0.05 nats (best epoch 295) ...`.
    pub fn summary(&self) -> String {
        format!(
            "{} {} n={} seed {}: test NLL {:.3} +- {:.3} nats (best epoch {}, validation {:.3}), {} steps, {:.1} NFE/step, {:.3} s/step, {:.0} s",
            self.method,
            self.system,
            self.n_train,
            self.seed,
            self.test.nll,
            self.test.nll_std_err,
            self.best_epoch,
            self.validation.nll,
            self.train_steps,
            self.mean_train_nfe,
            self.median_step_seconds,
            self.wall_seconds
        )
    }
}

/// Writes a reproduced table as `<dir>/<stem>.md` (its `markdown`) and `<dir>/<stem>.json`
/// (`table` serialised), each atomically; returns the markdown path.
///
/// Errors: [`ExperimentError::Io`]; [`ExperimentError::Config`] naming `stem` if the table
/// cannot be serialised.
pub fn write_table(
    dir: &Path,
    stem: &str,
    markdown: &str,
    table: &impl Serialize,
) -> Result<PathBuf, ExperimentError> {
    let md = dir.join(format!("{stem}.md"));
    atomic_write(&md, markdown.as_bytes())?;
    let json = serde_json::to_string_pretty(table).map_err(|e| ExperimentError::Config {
        key: format!("{stem}.json"),
        message: e.to_string(),
    })?;
    atomic_write(&dir.join(format!("{stem}.json")), json.as_bytes())?;
    Ok(md)
}

/// Appends `value` as one JSON line to `path` (created if missing) and syncs it to disk, so a
/// kill leaves at most the line being written incomplete.
///
/// Errors: [`ExperimentError::Io`]; [`ExperimentError::Config`] (key `json`) if `value` cannot
/// be serialised.
pub fn append_json_line(path: &Path, value: &impl Serialize) -> Result<(), ExperimentError> {
    let text = json_line(value)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ExperimentError::io(path, e))?;
    write_line(&f, path, &text)
}

/// Replaces `path` (atomically) with one JSON line per value: how a resumed run keeps exactly
/// the records of its finished epochs before appending new ones.
///
/// Errors: as [`append_json_line`]; [`ExperimentError::Data`] when the file cannot be written.
pub fn write_json_lines<T: Serialize>(path: &Path, values: &[T]) -> Result<(), ExperimentError> {
    let text = values
        .iter()
        .map(json_line)
        .collect::<Result<String, _>>()?;
    Ok(datasets::atomic::write_atomic(path, text.as_bytes())?)
}

/// `value` as one line of JSON, newline included.
fn json_line(value: &impl Serialize) -> Result<String, ExperimentError> {
    let mut text = serde_json::to_string(value).map_err(|e| ExperimentError::Config {
        key: "json".into(),
        message: e.to_string(),
    })?;
    text.push('\n');
    Ok(text)
}

/// Writes `text` in one write and syncs it to disk.
fn write_line(mut file: &std::fs::File, path: &Path, text: &str) -> Result<(), ExperimentError> {
    use std::io::Write;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| ExperimentError::io(path, e))
}

/// Writes `value` as one JSON line to `file` (opened for appending; `path` names it in errors)
/// in one write and syncs it to disk.
///
/// Errors: as [`append_json_line`].
pub fn write_json_line(
    file: &std::fs::File,
    path: &Path,
    value: &impl Serialize,
) -> Result<(), ExperimentError> {
    write_line(file, path, &json_line(value)?)
}

#[cfg(test)]
mod tests {
    /// A value serde_json's default (fast) float parser reads back one ulp off: results must
    /// round-trip exactly, so the workspace enables serde_json's `float_roundtrip`.
    #[test]
    fn json_floats_round_trip_exactly() {
        for x in [1.2467723529999999f64, 0.1, 18.17728332519531, 1e-300] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x}");
        }
    }
}
