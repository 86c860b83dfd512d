//! Writing files so that nothing already written is lost or half-written: everything goes to
//! `<path>.partial.<pid>.<thread>`, is flushed to disk, then renamed over `path`. A crash leaves either the old
//! file or the new one, never a truncated mix. Used for data sets here and for checkpoints and
//! results by the experiments crate.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{DatasetError, Result};

/// Maps an I/O error of `action` on `path` to [`DatasetError::Io`].
fn io(action: &str, path: &Path) -> impl FnOnce(std::io::Error) -> DatasetError {
    let (action, path) = (action.to_string(), path.to_path_buf());
    move |source| DatasetError::Io {
        path,
        action,
        source,
    }
}

/// `<path>.partial.<process id>.<thread number>`: where this thread's atomic write of `path` goes
/// before it is renamed into place. Per process, so that several processes writing the same file
/// (such as the shards of a cluster job generating a data set) never write into one partial
/// file, and per thread (a number given to each thread on first use), so that two threads of one
/// process (parallel tests) do not either. The same thread always gets the same path.
pub fn partial_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static THREAD: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    let thread = THREAD.with(|t| *t);
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(format!(".partial.{}.{thread}", std::process::id()));
    PathBuf::from(s)
}

/// Flushes `partial` to disk and renames it to `path`, then syncs the directory (best effort).
///
/// # Errors
/// [`DatasetError::Io`] naming the file when syncing or renaming fails.
pub fn finish_atomic(partial: &Path, path: &Path) -> Result<()> {
    std::fs::File::open(partial)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing the partial file", partial))?;
    std::fs::rename(partial, path).map_err(io("renaming the partial file into place", path))?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Creates the parent directory of `path` (and its ancestors) if it has one and it is missing.
///
/// # Errors
/// [`DatasetError::Io`] naming the directory.
pub fn ensure_parent_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("creating the directory", dir))?;
    }
    Ok(())
}

/// Writes `path` atomically with `write`, which creates and fills the file it is given (the
/// partial file): on success the partial file is flushed and renamed over `path`; on any error it
/// is removed and an existing file at `path` is untouched.
///
/// # Errors
/// `write`'s error, or [`DatasetError::Io`] when syncing or renaming fails.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let partial = partial_path(path);
    let result = write(&partial).and_then(|()| finish_atomic(&partial, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Writes `bytes` to `path` atomically, creating the parent directory if needed. On error the
/// partial file is removed and an existing file at `path` is untouched.
///
/// # Errors
/// [`DatasetError::Io`] naming the file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    ensure_parent_dir(path)?;
    write_atomic_with(path, |partial| {
        std::fs::File::create(partial)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(io("writing the partial file", partial))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_partial() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("out.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        assert!(!partial_path(&path).exists());
    }
}
