//! Flushing denormal floats to zero.
//!
//! The coordinate MLP of an EGNN starts with tiny weights (Xavier gain 0.001), so the first training
//! steps are full of denormal floats; on x86 they are about 100 times slower than normal ones
//! (FACTS.md section 6 measured 80-100 s per reference training step instead of 0.5 s). Call
//! [`flush_denormals`] at the start of `main`, before any libtorch call: threads created later
//! (libtorch's intra-op pool included) inherit the setting; threads created before do not, so tests
//! that train or integrate call it on their own thread too.

/// Sets flush-to-zero and denormals-are-zero for the calling thread's floating-point unit.
///
/// On x86-64 this sets the MXCSR bits FTZ (0x8000) and DAZ (0x0040); on aarch64 the FPCR FZ bit
/// (bit 24). On other architectures it does nothing. Idempotent and cheap; never fails.
pub fn flush_denormals() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reading and writing MXCSR only changes how this thread rounds tiny floats; the
    // operands are a valid stack slot.
    unsafe {
        let mut csr: u32 = 0;
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
        csr |= 0x8040;
        std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack));
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: setting FPCR.FZ only changes how this thread treats denormal floats.
    unsafe {
        let mut fpcr: u64;
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr);
        fpcr |= 1 << 24;
        std::arch::asm!("msr fpcr, {}", in(reg) fpcr);
    }
}

/// Whether flush-to-zero is on for the calling thread (x86-64 and aarch64; `false` elsewhere).
pub fn denormals_flushed() -> bool {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reading MXCSR into a valid stack slot.
    unsafe {
        let mut csr: u32 = 0;
        std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
        return csr & 0x8040 == 0x8040;
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reading FPCR.
    unsafe {
        let fpcr: u64;
        std::arch::asm!("mrs {}, fpcr", out(reg) fpcr);
        return fpcr & (1 << 24) != 0;
    }
    #[allow(unreachable_code)]
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn flushing_sets_the_bits_and_zeroes_denormal_products() {
        super::flush_denormals();
        assert!(
            super::denormals_flushed()
                || !cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
        );
        let tiny = std::hint::black_box(1e-300_f64);
        let product = std::hint::black_box(tiny * 1e-10);
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(product, 0.0);
        }
    }
}
