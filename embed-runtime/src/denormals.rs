//! Flush-to-zero for training: subnormal floats (below 1.2e-38) are treated as zero while a
//! [`FlushDenormals`] guard lives, on the calling thread and on every thread of the rayon pool
//! the matrix multiplies run on.
//!
//! Why: a backward pass through a model that already ranks its pairs well (a small loss)
//! carries gradients small enough to be subnormal, and Intel cores execute an AVX-512 FMA with a
//! subnormal operand through a microcode assist — about 60× slower (`scripts/bench/denormals.c`:
//! 6.45 s against 0.11 s for the same FMAs on an Intel Xeon; AMD Zen has no such penalty). On
//! the man pages' chunk positives a full fine-tuning step took 280 s instead of a few seconds.
//! PyTorch offers the same switch (`torch.set_flush_denormal(True)`); values that small carry
//! nothing an update of size ~1e-4 could use.
//!
//! The MXCSR register is per thread: the guard sets its FTZ and DAZ bits on each thread and
//! clears them again on drop (where they were clear before), so code after training runs as
//! it did.
#![allow(unsafe_code)]

/// FTZ (bit 15) and DAZ (bit 6) of MXCSR.
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 0x8040;

/// While alive, subnormals are flushed to zero on this thread and on the current rayon pool's.
#[derive(Debug)]
pub(crate) struct FlushDenormals {
    /// Whether the bits were already set on the calling thread (then nothing is undone).
    already: bool,
}

impl FlushDenormals {
    /// Sets FTZ and DAZ here and on every thread of the current rayon pool.
    pub(crate) fn new() -> Self {
        let already = set(true);
        if !already {
            rayon::broadcast(|_| {
                set(true);
            });
        }
        Self { already }
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        if !self.already {
            set(false);
            rayon::broadcast(|_| {
                set(false);
            });
        }
    }
}

/// Sets (or clears) FTZ and DAZ on this thread; returns whether both were set before.
#[cfg(target_arch = "x86_64")]
fn set(on: bool) -> bool {
    #[allow(deprecated)] // `_mm_getcsr`/`_mm_setcsr`: the only stable way to reach MXCSR.
    // SAFETY: reading and writing MXCSR's FTZ/DAZ bits has no memory effects; SSE is part of
    // the x86-64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
        let before = _mm_getcsr();
        let after = if on {
            before | FTZ_DAZ
        } else {
            before & !FTZ_DAZ
        };
        _mm_setcsr(after);
        before & FTZ_DAZ == FTZ_DAZ
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn set(_on: bool) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subnormal survives a multiply without the guard and is flushed with it.
    #[test]
    fn subnormals_are_zero_while_the_guard_lives() {
        let tiny = std::hint::black_box(1e-39_f32);
        let one = std::hint::black_box(1.0_f32);
        assert!(tiny * one > 0.0);
        {
            let _guard = FlushDenormals::new();
            let flushed = std::hint::black_box(tiny) * std::hint::black_box(one);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(flushed, 0.0);
            let on_pool = rayon::broadcast(|_| std::hint::black_box(tiny) * one);
            #[cfg(target_arch = "x86_64")]
            assert!(on_pool.iter().all(|&x| x == 0.0), "{on_pool:?}");
            let _ = (flushed, on_pool);
        }
        assert!(std::hint::black_box(tiny) * std::hint::black_box(one) > 0.0);
        let after = rayon::broadcast(|_| std::hint::black_box(tiny) * one);
        assert!(after.iter().all(|&x| x > 0.0));
    }
}
