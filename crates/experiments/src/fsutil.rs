//! Writing files so that nothing already written is lost or half-written.

use crate::error::ExperimentError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` atomically: into `<path>.partial`, flushed to disk, then renamed over
/// `path`. A crash leaves either the old file or the new one, never a truncated mix.
///
/// Errors: [`ExperimentError::Io`] naming the file.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), ExperimentError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    }
    let mut partial = PathBuf::from(path);
    partial.as_mut_os_string().push(".partial");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&partial, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        ExperimentError::io(path, e)
    })
}
