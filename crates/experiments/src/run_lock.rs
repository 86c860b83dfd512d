//! An exclusive lock on a training run's directory, so that two processes (a second terminal, a
//! second task of a job array given the same shard) never train the same run at once: both would
//! append to its metrics and overwrite each other's checkpoints.
//!
//! The lock is an advisory file lock (`flock` on Unix) on the file `.lock` in the run directory,
//! held while the returned [`RunLock`] lives and released by the operating system when the
//! process ends, however it ends: a killed run leaves no stale lock behind. The empty file stays
//! in the directory.

use crate::ExperimentError;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

/// The file locked in a run directory.
pub const LOCK_FILE: &str = ".lock";

/// Held while a run is being trained; dropping it releases the directory.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Locks `run_dir` (which must exist) for the calling process.
///
/// Errors: [`ExperimentError::Config`] naming the directory when another process holds the lock
/// (training it now); [`ExperimentError::Io`] when the lock file cannot be created or locked.
pub fn lock_run_dir(run_dir: &Path) -> Result<RunLock, ExperimentError> {
    let path = run_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| ExperimentError::io(&path, e))?;
    if try_lock_exclusive(&file, &path)? {
        Ok(RunLock { _file: file })
    } else {
        Err(ExperimentError::Config {
            key: run_dir.display().to_string(),
            message: "the run is being trained by another process (its directory is locked); \
                      wait for it or choose another run directory"
                .into(),
        })
    }
}

/// Takes the exclusive advisory lock of `file` (opened from `path`) without waiting, as the run
/// directories and the QM9 evaluation journals do: `Ok(true)` when taken (released when the file
/// is closed), `Ok(false)` when another open file description holds it (another process, or
/// another open of the same file in this one).
///
/// Errors: [`ExperimentError::Io`] naming `path` when the lock cannot be taken for another reason.
pub(crate) fn try_lock_exclusive(file: &File, path: &Path) -> Result<bool, ExperimentError> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(ExperimentError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_run_directory_is_refused_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_run_dir(dir.path()).unwrap();
        // A second lock (another open file description, as another process would have) fails.
        match lock_run_dir(dir.path()) {
            Err(ExperimentError::Config { key, message }) => {
                assert_eq!(key, dir.path().display().to_string());
                assert!(message.contains("another process"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        drop(held);
        lock_run_dir(dir.path()).expect("released with its holder");
        assert!(dir.path().join(LOCK_FILE).exists());
    }

    #[test]
    fn a_missing_run_directory_is_an_io_error_naming_the_lock_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        match lock_run_dir(&missing) {
            Err(e @ ExperimentError::Io { .. }) => {
                assert!(e.to_string().contains(LOCK_FILE), "{e}")
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
    }
}
