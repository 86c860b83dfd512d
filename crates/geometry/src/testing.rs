//! Determinism for tests that use libtorch's global random generator.
//!
//! `cargo test` runs tests on several threads of one process, and libtorch has one global
//! generator: two tests that seed it and draw from it at the same time interleave their draws, so
//! neither is reproducible. Tests that draw from it hold [`seeded`]'s guard for their duration.

use std::sync::{Mutex, MutexGuard};

static TORCH_RNG: Mutex<()> = Mutex::new(());

/// Takes the process-wide lock on libtorch's generator, seeds it with `seed`, and flushes
/// denormals on this thread. Hold the returned guard while drawing; a test that panicked while
/// holding it does not poison the next one.
pub fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    let guard = TORCH_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    crate::flush_denormals();
    tch::manual_seed(seed);
    guard
}
