//! Keeping freed tensor memory in the process instead of handing it back to the kernel.
//!
//! libtorch allocates every intermediate tensor with the C library's `malloc`. A training step of
//! an E-NF makes tens of thousands of tensors of 0.1-10 MB (edge tensors `[batch, nodes, nodes -
//! 1, hidden]`) and frees them all when the step ends. With glibc's defaults that memory goes
//! back to the kernel (sizes above the dynamic `mmap` threshold are unmapped, the heap's top is
//! trimmed, and the per-thread arenas of training workers delete whole heaps once they are free),
//! so every step faults its pages in again and the kernel zeroes them. Measured on the 2-core
//! development machine: 20-27% of the CPU time of the LJ13 training run and of the QM9 exact
//! evaluation was the kernel's (`/proc/<pid>/stat`; `perf record` of a DW4 step:
//! `clear_page` 23%), with 1.5 million page faults a minute in the LJ13 run (2 workers); with
//! [`tune_allocator`], none after the first step (12 page faults in a minute). How often glibc's
//! dynamic threshold adapts on its own varies from run to run, which also made timings noisy.

/// The `mmap` threshold set by [`tune_allocator`]: allocations up to 32 MiB (glibc's largest
/// allowed value on 64-bit) come from the heap and are reused.
pub const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;
/// The top pad set by [`tune_allocator`]: 256 MiB, more than glibc's largest per-thread heap
/// (64 MiB), so that a per-thread arena never deletes a heap that became free.
pub const TOP_PAD_BYTES: i32 = 256 << 20;

/// The allocator settings of [`tune_allocator`]: `(mallopt option, value, environment variable
/// and glibc tunable that override it)`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const SETTINGS: [(libc::c_int, libc::c_int, &str, &str); 3] = [
    // Never trim the main heap (-1: glibc's documented value for "disabled").
    (
        libc::M_TRIM_THRESHOLD,
        -1,
        "MALLOC_TRIM_THRESHOLD_",
        "glibc.malloc.trim_threshold",
    ),
    // glibc's heap_trim deletes a free heap of a per-thread arena only when the free top of the
    // heap below it plus that heap's unused reserve exceed the top pad: with a pad above the
    // largest heap size it never does. (Shrinking a heap respects the trim threshold.)
    (
        libc::M_TOP_PAD,
        TOP_PAD_BYTES,
        "MALLOC_TOP_PAD_",
        "glibc.malloc.top_pad",
    ),
    (
        libc::M_MMAP_THRESHOLD,
        MMAP_THRESHOLD_BYTES,
        "MALLOC_MMAP_THRESHOLD_",
        "glibc.malloc.mmap_threshold",
    ),
];

/// Tells glibc's `malloc` to keep freed memory for reuse: no trimming of the heap
/// (`M_TRIM_THRESHOLD = -1`), a top pad of [`TOP_PAD_BYTES`] (`M_TOP_PAD`: the heaps of the
/// training workers' per-thread arenas are kept too; the pad is address space reserved when a
/// heap grows, resident only once used), and allocations up to [`MMAP_THRESHOLD_BYTES`] from the
/// heap (`M_MMAP_THRESHOLD`; larger ones, such as the exact trace's replicated batches can be,
/// are still mapped and unmapped each time). Call it at the start of `main`, beside
/// [`crate::flush_denormals`]; the `enf` binary, the experiments' examples and the benchmarks
/// do. A setting given in the environment (`MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`,
/// `MALLOC_MMAP_THRESHOLD_`, or the same tunables in `GLIBC_TUNABLES`) is left as it is. (One
/// arena for all threads, `MALLOC_ARENA_MAX=1`, also stops the faults, but its lock made the
/// 2-worker DW4 step 20-60% slower.)
///
/// The cost: the resident size stays at its high-water mark for the life of the process (a
/// training run's peak, e.g. about 11 GB for LJ13 at batch 100 by backpropagation through the
/// solver) instead of shrinking between steps. The peak did not grow in our measurements (DW4
/// and LJ13 training, QM9 evaluation), though memory freed in one thread's arena is not reused
/// by another's.
///
/// Returns whether every setting not overridden was accepted: `false` on other C libraries and
/// systems, where it does nothing. Never fails.
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let mut accepted = true;
        for (option, value, env, tunable) in SETTINGS {
            if std::env::var_os(env).is_none() && !tunables.contains(tunable) {
                // SAFETY: mallopt only changes one of glibc's allocation parameters; it takes
                // plain integers and is safe to call at any time.
                accepted &= unsafe { libc::mallopt(option, value) } == 1;
            }
        }
        accepted
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings() {
        // glibc refuses an mmap threshold above half its heap size (32 MiB on 64-bit): the value
        // chosen is the largest it accepts, and mallopt reports success. (Huge-page tunables
        // lower that limit: then there is nothing to check.)
        if std::env::var_os("GLIBC_TUNABLES").is_none() {
            assert!(super::tune_allocator());
        }
    }
}
