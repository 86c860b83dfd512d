//! The journal of a QM9 likelihood evaluation: one JSON line per finished batch, so that an
//! evaluation that takes hours (the whole test split, or the exact trace) can be interrupted and
//! resumed without losing more than the batch in progress.
//!
//! Layout (JSON lines): the first line is a [`JournalHeader`] naming everything that decides the
//! numbers (the model by digest, the data source, the molecules, the trace, the batch size, the
//! seed and the solver); every further line is a [`BatchRecord`] with the per-molecule
//! values of one batch, in batch order. Lines are appended and synced to disk one at a time; a
//! last line cut short by a kill is dropped on resume. A journal whose header differs from the
//! evaluation asked for is refused, never overwritten.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};

use flow::TraceEstimator;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ExperimentError;

/// The journal format written by this version.
pub const JOURNAL_VERSION: u32 = 2;

/// What decides an evaluation's numbers; a journal is resumed only under the same header.
/// (Not recorded: libtorch's thread count and the CPU, which can change the last bits of
/// reductions; a resumed evaluation on other hardware is consistent to round-off only.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalHeader {
    /// Format version of the journal ([`JOURNAL_VERSION`]).
    pub version: u32,
    /// SHA-256 of the model ([`model_digest`]): its parameters, its configuration, p(M) and how
    /// it takes traces.
    #[serde(default)]
    pub model_digest: String,
    /// SHA-256 of the source the data set was made from (`Qm9Dataset::source_sha256`).
    #[serde(default)]
    pub data_digest: String,
    /// SHA-256 of the evaluated rows in evaluation order (little-endian u64 each).
    #[serde(default)]
    pub rows_digest: String,
    /// Number of molecules.
    #[serde(default)]
    pub n_molecules: usize,
    /// The trace estimator.
    pub trace: TraceEstimator,
    /// Molecules per batch.
    #[serde(default)]
    pub batch_size: usize,
    /// Seed of the dequantization noise and the probes (each batch draws from its own stream).
    #[serde(default)]
    pub seed: u64,
    /// The ODE solver: method and every option (tolerances, controller, limits), as its `Debug`
    /// form.
    #[serde(default)]
    pub solver: String,
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

/// An open journal: the file that finished batches are appended to, locked (an exclusive
/// advisory lock, released when the journal is dropped) so that no second process appends to it.
#[derive(Debug)]
pub struct EvaluationJournal {
    path: PathBuf,
    file: File,
}

impl EvaluationJournal {
    /// Opens the journal at `path` for the evaluation described by `header`: creates it (with its
    /// header line; a new file is linked into place whole, an empty one gets the line under the
    /// lock) if it does not exist or is empty, otherwise reads its
    /// finished batches. A last line without its newline (a write cut short by a kill) is removed
    /// from the file and its batch evaluated again. One process at a time may use a journal: it
    /// is locked until the returned journal is dropped.
    ///
    /// Returns the journal and the records already in it (the finished batches, in batch order).
    ///
    /// Errors: [`ExperimentError::Io`] for the file; [`ExperimentError::Config`] (key `journal`) when the file was written for
    /// another evaluation (names the first setting that differs), its header line is incomplete,
    /// a complete line is malformed, its batches are out of order, or another process holds it
    /// open.
    pub fn open(
        path: &Path,
        header: &JournalHeader,
    ) -> Result<(Self, Vec<BatchRecord>), ExperimentError> {
        let io = |e| ExperimentError::io(path, e);
        let refuse = |message: String| ExperimentError::Config {
            key: "journal".into(),
            message: format!("{}: {message}", path.display()),
        };
        let mut line = serde_json::to_string(header).map_err(|e| refuse(e.to_string()))?;
        line.push('\n');
        if !path.exists() {
            create_with(path, &line)?;
        }
        // Writes go through this handle, locked first: the lines read below cannot change
        // under us, and a second process is refused instead of appending the same batches.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        if !crate::run_lock::try_lock_exclusive(&file, path)? {
            return Err(refuse(
                "in use by another process (it is locked); wait for that evaluation or choose \
                 another journal"
                    .into(),
            ));
        }
        if file.metadata().map_err(io)?.len() == 0 {
            // An empty file (made by hand): the header goes in under the lock.
            (&file)
                .write_all(line.as_bytes())
                .and_then(|()| file.sync_data())
                .and_then(|()| (&file).seek(std::io::SeekFrom::Start(0)))
                .map_err(io)?;
        }
        let mut reader = BufReader::new(&file);
        let (mut done, mut good_len, mut first) = (Vec::new(), 0u64, true);
        loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).map_err(io)?;
            if n == 0 {
                break;
            }
            let complete = line.ends_with('\n');
            if first {
                if !complete {
                    return Err(refuse("its header line is incomplete".into()));
                }
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
        if file.metadata().map_err(io)?.len() != good_len {
            tracing::warn!(
                "{}: dropping a last line cut short (the batch is evaluated again)",
                path.display()
            );
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let journal = EvaluationJournal {
            path: path.to_path_buf(),
            file,
        };
        Ok((journal, done))
    }

    /// Appends a finished batch and syncs it to disk.
    ///
    /// Errors: [`ExperimentError::Io`].
    pub fn append(&self, record: &BatchRecord) -> Result<(), ExperimentError> {
        crate::results::write_json_line(&self.file, &self.path, record)
    }
}

/// Creates the journal `path` holding `header_line`, whole or not at all: the line is written to
/// a private file that is then hard-linked to `path`, which fails if another process created
/// `path` first (that journal is then used, so two processes never write to two files under
/// one name). Parent directories are created.
///
/// Errors: [`ExperimentError::Io`] naming the file.
fn create_with(path: &Path, header_line: &str) -> Result<(), ExperimentError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("journal");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let private = path.with_file_name(format!(".{name}.{}.{nanos}.new", std::process::id()));
    let written = File::create(&private)
        .and_then(|mut f| {
            f.write_all(header_line.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| ExperimentError::io(&private, e))
        .and_then(|()| match std::fs::hard_link(&private, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                Err(ExperimentError::io(path, e))
            }
            _ => Ok(()),
        });
    let _ = std::fs::remove_file(&private);
    written
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
            "model",
            found.model_digest.clone(),
            wanted.model_digest.clone(),
        ),
        (
            "data source",
            found.data_digest.clone(),
            wanted.data_digest.clone(),
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
        ("solver", found.solver.clone(), wanted.solver.clone()),
    ];
    pairs
        .into_iter()
        .find(|(_, f, w)| f != w)
        .map(|(what, f, w)| format!("{what}: {f} in the journal, {w} now"))
}

/// SHA-256 of what a model computes with: each parameter's name (in name order), shape and values
/// as little-endian f64 (so it does not depend on dtype or device), then `context` (the model's
/// configuration, p(M) and trace mode, in words).
///
/// Errors: [`ExperimentError::Torch`] if a tensor cannot be read.
pub fn model_digest(vs: &tch::nn::VarStore, context: &str) -> Result<String, ExperimentError> {
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
    hasher.update(context.as_bytes());
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
    use std::io::Write;

    fn header(seed: u64) -> JournalHeader {
        JournalHeader {
            version: JOURNAL_VERSION,
            model_digest: "m".into(),
            data_digest: "d".into(),
            rows_digest: rows_digest(&[3, 1, 2]),
            n_molecules: 3,
            trace: TraceEstimator::Hutchinson(Noise::Gaussian),
            batch_size: 2,
            seed,
            solver: "dopri5".into(),
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
        let (j, done) = EvaluationJournal::open(&path, &header(0)).unwrap();
        assert!(done.is_empty());
        j.append(&record(0)).unwrap();
        j.append(&record(1)).unwrap();
        drop(j);
        // A kill in the middle of writing batch 2: half a line, no newline.
        let line = serde_json::to_string(&record(2)).unwrap();
        let full_len = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
        drop(f);
        let (j, done) = EvaluationJournal::open(&path, &header(0)).unwrap();
        assert_eq!(done, vec![record(0), record(1)]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), full_len);
        j.append(&record(2)).unwrap();
        drop(j);
        let (_, done) = EvaluationJournal::open(&path, &header(0)).unwrap();
        assert_eq!(done, vec![record(0), record(1), record(2)]);
    }

    #[test]
    fn a_journal_in_use_is_refused_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.jsonl");
        let (j, _) = EvaluationJournal::open(&path, &header(0)).unwrap();
        j.append(&record(0)).unwrap();
        let err = EvaluationJournal::open(&path, &header(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("in use by another process"), "{err}");
        j.append(&record(1)).unwrap();
        drop(j);
        let (_, done) = EvaluationJournal::open(&path, &header(0)).unwrap();
        assert_eq!(done, vec![record(0), record(1)]);
    }

    #[test]
    fn another_evaluation_or_a_corrupt_line_is_refused_and_the_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.jsonl");
        let (j, _) = EvaluationJournal::open(&path, &header(0)).unwrap();
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

    #[test]
    fn an_empty_file_gets_a_header_and_an_older_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("eval.jsonl");
        std::fs::write(&path, "").unwrap();
        let (j, _) = EvaluationJournal::open(&path, &header(0)).unwrap();
        j.append(&record(0)).unwrap();
        drop(j);
        assert_eq!(
            EvaluationJournal::open(&path, &header(0)).unwrap().1,
            vec![record(0)]
        );
        // A journal of format 1 (its header had rtol/atol instead of the solver).
        let v1 = r#"{"version":1,"model_digest":"m","rows_digest":"r","n_molecules":3,"trace":{"kind":"exact"},"batch_size":2,"seed":0,"rtol":0.0001,"atol":0.0001}"#;
        std::fs::write(&path, format!("{v1}\n")).unwrap();
        let err = EvaluationJournal::open(&path, &header(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("version: 1 in the journal, 2 now"), "{err}");
        // A header line without its newline is refused, not appended to.
        let line = serde_json::to_string(&header(0)).unwrap();
        std::fs::write(&path, &line).unwrap();
        let err = EvaluationJournal::open(&path, &header(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("header line is incomplete"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), line);
    }
}
