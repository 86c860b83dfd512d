//! The journal of a QM9 likelihood evaluation: one JSON line per finished batch, so that an
//! evaluation that takes hours (the whole test split, or the exact trace) can be interrupted and
//! resumed without losing more than the batch in progress.
//!
//! Layout (JSON lines): the first line is a [`JournalHeader`] naming everything that decides the
//! numbers (the model's parameters by digest, the molecules, the trace, the batch size, the seed
//! and the solver's tolerances); every further line is a [`BatchRecord`] with the per-molecule
//! values of one batch, in batch order. Lines are appended and synced to disk one at a time; a
//! last line cut short by a kill is dropped on resume. A journal whose header differs from the
//! evaluation asked for is refused, never overwritten.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use flow::TraceEstimator;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ExperimentError;

/// What decides an evaluation's numbers; a journal is resumed only under the same header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalHeader {
    /// Format version of the journal (1).
    pub version: u32,
    /// SHA-256 of the model's parameters ([`parameter_digest`]).
    pub model_digest: String,
    /// SHA-256 of the evaluated rows in evaluation order (little-endian u64 each).
    pub rows_digest: String,
    /// Number of molecules.
    pub n_molecules: usize,
    /// The trace estimator.
    pub trace: TraceEstimator,
    /// Molecules per batch.
    pub batch_size: usize,
    /// Seed of the dequantization noise and the probes (each batch draws from its own stream).
    pub seed: u64,
    /// The solver's relative tolerance.
    pub rtol: f64,
    /// The solver's absolute tolerance.
    pub atol: f64,
}

/// The values of one finished batch; every vector has one entry per molecule of the batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// Index of the batch in the evaluation (0-based).
    pub batch: usize,
    /// The data set's rows of its molecules.
    pub rows: Vec<usize>,
    /// `-log p(x, h, M)`, nats.
    pub nll: Vec<f64>,
    /// `log p_Z`, nats.
    pub log_pz: Vec<f64>,
    /// `log |det|` (ActNorm + flow), nats.
    pub log_det: Vec<f64>,
    /// `log q(v | x, h)`, nats.
    pub log_q: Vec<f64>,
    /// `log p(M)`, nats.
    pub log_p_m: Vec<f64>,
    /// Function evaluations of the batch's solve.
    pub nfe: usize,
    /// Wall time of the batch, seconds.
    pub seconds: f64,
}

/// An open journal: the records already written and a handle to append more.
#[derive(Debug)]
pub struct EvaluationJournal {
    path: PathBuf,
    file: File,
    /// Records found when the journal was opened (resumed batches), in batch order.
    pub done: Vec<BatchRecord>,
}

impl EvaluationJournal {
    /// Opens the journal at `path` for the evaluation described by `header`: creates it (with its
    /// header line) if it does not exist, otherwise reads its finished batches. A last line cut
    /// short (no newline, not valid JSON) is removed from the file.
    ///
    /// Errors: [`ExperimentError::Io`]; [`ExperimentError::Config`] (key `journal`) when the file
    /// was written for another evaluation (names the first setting that differs), or is malformed
    /// before its last line, or its batches are out of order.
    pub fn open(path: &Path, header: &JournalHeader) -> Result<Self, ExperimentError> {
        let io = |e| ExperimentError::io(path, e);
        let refuse = |message: String| ExperimentError::Config {
            key: "journal".into(),
            message: format!("{}: {message}", path.display()),
        };
        if !path.exists() {
            datasets::atomic::ensure_parent_dir(path)?;
            let mut line = serde_json::to_string(header).map_err(|e| refuse(e.to_string()))?;
            line.push('\n');
            // The header is written whole or not at all, so a new journal is never half made.
            datasets::atomic::write_atomic(path, line.as_bytes())?;
        }
        let mut reader = BufReader::new(File::open(path).map_err(io)?);
        let (mut done, mut good_len, mut first) = (Vec::new(), 0u64, true);
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            let complete = line.ends_with('\n');
            if first {
                let found: JournalHeader = serde_json::from_str(line.trim_end())
                    .map_err(|e| refuse(format!("the first line is not a journal header ({e})")))?;
                if let Some(what) = header_difference(&found, header) {
                    return Err(refuse(format!(
                        "written by another evaluation ({what}); delete it or choose another \
                         journal"
                    )));
                }
                first = false;
            } else {
                if !complete {
                    // A line cut short by a kill (only the last line can be): dropped, and its
                    // batch evaluated again.
                    break;
                }
                let r: BatchRecord = serde_json::from_str(line.trim_end())
                    .map_err(|e| refuse(format!("line {} is malformed ({e})", done.len() + 2)))?;
                if r.batch != done.len() {
                    return Err(refuse(format!(
                        "batch {} found where batch {} was expected",
                        r.batch,
                        done.len()
                    )));
                }
                done.push(r);
            }
            good_len += n as u64;
        }
        let file = OpenOptions::new().append(true).open(path).map_err(io)?;
        if file.metadata().map_err(io)?.len() != good_len {
            tracing::warn!(
                "{}: dropping a last line cut short (the batch is evaluated again)",
                path.display()
            );
            file.set_len(good_len).map_err(io)?;
        }
        Ok(EvaluationJournal {
            path: path.to_path_buf(),
            file,
            done,
        })
    }

    /// Appends a finished batch and syncs it to disk.
    ///
    /// Errors: [`ExperimentError::Io`].
    pub fn append(&mut self, record: &BatchRecord) -> Result<(), ExperimentError> {
        let io = |e| ExperimentError::io(&self.path, e);
        let mut line = serde_json::to_string(record).map_err(|e| ExperimentError::Config {
            key: "journal".into(),
            message: e.to_string(),
        })?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

/// The first setting in which `found` differs from `wanted`, said in words.
fn header_difference(found: &JournalHeader, wanted: &JournalHeader) -> Option<String> {
    let pairs = [
        (
            "version",
            found.version.to_string(),
            wanted.version.to_string(),
        ),
        (
            "model parameters",
            found.model_digest.clone(),
            wanted.model_digest.clone(),
        ),
        (
            "molecules",
            format!("{} rows, digest {}", found.n_molecules, found.rows_digest),
            format!("{} rows, digest {}", wanted.n_molecules, wanted.rows_digest),
        ),
        (
            "trace",
            format!("{:?}", found.trace),
            format!("{:?}", wanted.trace),
        ),
        (
            "batch size",
            found.batch_size.to_string(),
            wanted.batch_size.to_string(),
        ),
        ("seed", found.seed.to_string(), wanted.seed.to_string()),
        (
            "rtol, atol",
            format!("{}, {}", found.rtol, found.atol),
            format!("{}, {}", wanted.rtol, wanted.atol),
        ),
    ];
    pairs
        .into_iter()
        .find(|(_, f, w)| f != w)
        .map(|(what, f, w)| format!("{what}: {f} in the journal, {w} now"))
}

/// SHA-256 of a set of named parameters: each name, shape and its values as little-endian f64,
/// in name order, so it does not depend on the parameters' dtype or device.
///
/// Errors: [`ExperimentError::Torch`] if a tensor cannot be read.
pub fn parameter_digest(vs: &tch::nn::VarStore) -> Result<String, ExperimentError> {
    let mut named: Vec<(String, tch::Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hasher = Sha256::new();
    for (name, t) in named {
        hasher.update(name.as_bytes());
        for d in t.size() {
            hasher.update(d.to_le_bytes());
        }
        let values: Vec<f64> = t
            .detach()
            .to_kind(tch::Kind::Double)
            .to_device(tch::Device::Cpu)
            .flatten(0, -1)
            .try_into()?;
        for v in values {
            hasher.update(v.to_le_bytes());
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// SHA-256 of row indices in order (little-endian u64 each).
pub fn rows_digest(rows: &[usize]) -> String {
    let mut hasher = Sha256::new();
    for &r in rows {
        hasher.update((r as u64).to_le_bytes());
    }
    format!("{:x}", hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow::Noise;

    fn header(seed: u64) -> JournalHeader {
        JournalHeader {
            version: 1,
            model_digest: "m".into(),
            rows_digest: rows_digest(&[3, 1, 2]),
            n_molecules: 3,
            trace: TraceEstimator::Hutchinson(Noise::Gaussian),
            batch_size: 2,
            seed,
            rtol: 1e-4,
            atol: 1e-4,
        }
    }

    fn record(batch: usize) -> BatchRecord {
        BatchRecord {
            batch,
            rows: vec![batch],
            nll: vec![-1.5 - batch as f64],
            log_pz: vec![0.1],
            log_det: vec![0.2],
            log_q: vec![0.3],
            log_p_m: vec![0.4],
            nfe: 14,
            seconds: 0.5,
        }
    }

    #[test]
    fn records_survive_reopening_and_a_cut_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/eval.jsonl");
        let mut j = EvaluationJournal::open(&path, &header(0)).unwrap();
        assert!(j.done.is_empty());
        j.append(&record(0)).unwrap();
        j.append(&record(1)).unwrap();
        drop(j);
        // A kill in the middle of writing batch 2: half a line, no newline.
        let line = serde_json::to_string(&record(2)).unwrap();
        let full_len = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
        drop(f);
        let mut j = EvaluationJournal::open(&path, &header(0)).unwrap();
        assert_eq!(j.done, vec![record(0), record(1)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full_len);
        j.append(&record(2)).unwrap();
        drop(j);
        let j = EvaluationJournal::open(&path, &header(0)).unwrap();
        assert_eq!(j.done, vec![record(0), record(1), record(2)]);
    }

    #[test]
    fn another_evaluation_or_a_corrupt_line_is_refused_and_the_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.jsonl");
        let mut j = EvaluationJournal::open(&path, &header(0)).unwrap();
        j.append(&record(0)).unwrap();
        drop(j);
        let before = std::fs::read(&path).unwrap();
        let err = EvaluationJournal::open(&path, &header(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("seed: 0 in the journal, 1 now"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);

        // A malformed line before the last one, and batches out of order.
        let text = String::from_utf8(before).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        let bad = [lines[0], "{not json", lines[1]].join("\n") + "\n";
        std::fs::write(&path, &bad).unwrap();
        let err = EvaluationJournal::open(&path, &header(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2 is malformed"), "{err}");
        lines.push(lines[1]);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let err = EvaluationJournal::open(&path, &header(0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch 0 found where batch 1 was expected"),
            "{err}"
        );
    }
}
