//! Interrupted runs: a training process killed mid-epoch and run again resumes from its last
//! checkpoint and ends with the result the uninterrupted run gets; an unreadable checkpoint is
//! reported and the run restarts from epoch 1; a directory another process is training is
//! refused without being touched.

use datasets::{ParticleDataset, System};
use experiments::train::{files, train};
use experiments::{checkpoint, RunConfig, RunResult};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

/// The small DW4 data set (seed 5), also written to HDF5 under `dir` for the `enf` binary.
fn small_dw4(dir: &Path) -> (ParticleDataset, PathBuf) {
    let ds = common::small_dw4(5);
    let path = dir.join("dw4-small.h5");
    ds.write(&path).unwrap();
    (ds, path)
}

/// Four epochs of ten steps with a small E-NF, validating every epoch, with Table 3's ODE
/// regulariser and adaptive gradient clipping (whose record of norms a resumed run restores).
fn config(data: &Path) -> RunConfig {
    let mut c = RunConfig::paper_cell(System::Dw4, 100, 0).unwrap();
    c.data.path = Some(data.to_path_buf());
    c.data.n_train = 200;
    c.model.egnn.hidden_nf = 16;
    c.model.egnn.n_layers = 2;
    c.training.epochs = 4;
    c.training.eval_every = 1;
    c.training.batch_size = 20;
    c.training.eval_batch_size = 100;
    c.training.ode_regularization = 1e-3;
    c.training.clip_grad = true;
    c
}

/// The gradient clipper's record in a run's last checkpoint.
fn clipper_norms(run_dir: &Path) -> Vec<f64> {
    let meta = checkpoint::read(&run_dir.join(files::LAST))
        .unwrap()
        .metadata;
    serde_json::from_str(&meta["clipper_norms"]).unwrap()
}

/// The epoch of the run's last checkpoint, if one can be read.
fn checkpointed_epoch(run_dir: &Path) -> Option<usize> {
    checkpoint::read(&run_dir.join(files::LAST))
        .ok()?
        .metadata
        .get("epoch")?
        .parse()
        .ok()
}

fn metrics_epochs(run_dir: &Path) -> Vec<usize> {
    std::fs::read_to_string(run_dir.join(files::METRICS))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<experiments::results::EpochMetrics>(l)
                .unwrap()
                .epoch
        })
        .collect()
}

fn assert_same_result(a: &RunResult, b: &RunResult) {
    assert_eq!(a.best_epoch, b.best_epoch);
    assert_eq!(a.train_steps, b.train_steps);
    assert_eq!(a.config, b.config);
    // The same computation in the same order: equal up to the last bits at most.
    for (x, y) in [
        (a.test.nll, b.test.nll),
        (a.validation.nll, b.validation.nll),
        (a.mean_train_nfe, b.mean_train_nfe),
    ] {
        assert!((x - y).abs() <= 1e-9 * x.abs(), "{x} vs {y}");
    }
}

#[test]
fn a_run_killed_mid_epoch_resumes_and_ends_as_the_uninterrupted_run() {
    let _rng = geometry::testing::seeded(0);
    let dir = tempfile::tempdir().unwrap();
    let (ds, data) = small_dw4(dir.path());
    let config = config(&data);
    let whole = train(&config, &ds, &dir.path().join("whole"), false).unwrap();

    // The same run as a process, killed once its first epoch is checkpointed.
    let run_dir = dir.path().join("killed");
    std::fs::create_dir_all(&run_dir).unwrap();
    let config_file = dir.path().join("config.toml");
    std::fs::write(&config_file, config.to_toml()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_enf"))
        .args(["train", "--config"])
        .arg(&config_file)
        .arg("--run-dir")
        .arg(&run_dir)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let start = Instant::now();
    while checkpointed_epoch(&run_dir).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint after 300 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = checkpointed_epoch(&run_dir).unwrap();
    assert!(
        done < config.training.epochs,
        "killed after the last epoch: the test proves nothing"
    );
    assert!(!run_dir.join(files::RESULT).exists());

    // Running it again loses at most the interrupted epoch and ends as the whole run did.
    let resumed = train(&config, &ds, &run_dir, false).unwrap();
    assert_same_result(&whole, &resumed);
    assert_eq!(metrics_epochs(&run_dir), vec![1, 2, 3, 4]);
    // The clipper's record went through the restart: the initial 3000 and one norm per step.
    let norms = clipper_norms(&run_dir);
    assert_eq!(norms.len(), 41);
    let whole_norms = clipper_norms(&dir.path().join("whole"));
    for (a, b) in norms.iter().zip(&whole_norms) {
        assert!((a - b).abs() <= 1e-9 * b.abs(), "{a} vs {b}");
    }
    assert_eq!(
        RunResult::read(&run_dir.join(files::RESULT)).unwrap(),
        resumed
    );
}

#[test]
fn a_corrupt_checkpoint_is_reported_and_the_run_restarts_cleanly() {
    let _rng = geometry::testing::seeded(1);
    let dir = tempfile::tempdir().unwrap();
    let (ds, data) = small_dw4(dir.path());
    let mut config = config(&data);
    config.training.epochs = 2;
    let run_dir = dir.path().join("run");
    let first = train(&config, &ds, &run_dir, false).unwrap();

    // As if the run had been killed while its file system lost half of the last checkpoint.
    std::fs::remove_file(run_dir.join(files::RESULT)).unwrap();
    let last = run_dir.join(files::LAST);
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() / 2]).unwrap();
    let e = checkpoint::read(&last).unwrap_err();
    assert!(
        e.to_string().contains("last.safetensors") && e.to_string().contains("safetensors"),
        "the error must name the file: {e}"
    );

    let again = train(&config, &ds, &run_dir, false).unwrap();
    assert_same_result(&first, &again);
    // The unreadable file is kept aside for inspection, not deleted.
    let aside = run_dir.join(format!("{}.unreadable", files::LAST));
    assert_eq!(std::fs::read(aside).unwrap(), &bytes[..bytes.len() / 2]);
    assert_eq!(metrics_epochs(&run_dir), vec![1, 2]);
    assert_eq!(checkpointed_epoch(&run_dir), Some(2));
}

#[test]
fn a_directory_of_another_run_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (ds, data) = small_dw4(dir.path());
    let config = config(&data);
    let mut other = config.clone();
    other.training.seed = 9;
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::write(run_dir.join(files::CONFIG), other.to_toml()).unwrap();
    let e = train(&config, &ds, &run_dir, false).unwrap_err();
    assert!(e.to_string().contains("another run"), "{e}");
    assert_eq!(
        RunConfig::from_file(&run_dir.join(files::CONFIG)).unwrap(),
        other
    );
}

#[test]
fn a_directory_another_process_is_training_is_refused_untouched() {
    // Trains: holds the global RNG like the other training tests.
    let _rng = geometry::testing::seeded(3);
    let dir = tempfile::tempdir().unwrap();
    let (ds, data) = small_dw4(dir.path());
    let config = config(&data);
    let run_dir = dir.path().join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    // The lock as another process would hold it (a separate open file description).
    let held = experiments::run_lock::lock_run_dir(&run_dir).unwrap();
    let e = train(&config, &ds, &run_dir, false).unwrap_err();
    assert!(e.to_string().contains("another process"), "{e}");
    assert!(!run_dir.join(files::CONFIG).exists(), "nothing written");
    drop(held);
    let mut short = config.clone();
    short.training.epochs = 1;
    train(&short, &ds, &run_dir, false).expect("trains once the lock is released");
}

#[test]
fn a_run_killed_between_its_last_and_best_checkpoints_is_reconciled() {
    let _rng = geometry::testing::seeded(2);
    let dir = tempfile::tempdir().unwrap();
    let (ds, data) = small_dw4(dir.path());
    let mut one = config(&data);
    one.training.epochs = 1;
    let mut two = config(&data);
    two.training.epochs = 2;
    let first = dir.path().join("one");
    let run = dir.path().join("two");
    train(&one, &ds, &first, false).unwrap();
    let whole = train(&two, &ds, &run, false).unwrap();
    assert_eq!(whole.best_epoch, 2, "the test needs epoch 2 to improve");
    // The state after `last` of epoch 2 was written and the process died before `best` was:
    // `best` still holds epoch 1 (the same epoch 1 as the one-epoch run's).
    std::fs::remove_file(run.join(files::RESULT)).unwrap();
    std::fs::copy(first.join(files::BEST), run.join(files::BEST)).unwrap();
    let resumed = train(&two, &ds, &run, false).unwrap();
    assert_same_result(&whole, &resumed);
    let best = checkpoint::read(&run.join(files::BEST)).unwrap();
    assert_eq!(best.metadata["epoch"], "2");
}
