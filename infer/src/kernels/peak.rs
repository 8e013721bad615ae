//! The int8 dot-product peak of one core, measured with register-only instruction loops.
//!
//! Each loop body is one `asm!` block of `CHAINS` independent accumulator chains (more chains
//! than the instruction's latency × throughput, so only throughput bounds it) repeated
//! `UNROLL` times; the compiler cannot remove or reorder anything in it. The loop runs until
//! `millis` ms have passed; peak = MACs done / seconds elapsed.

use std::arch::asm;
use std::time::Instant;

/// Runs `body` (which performs `macs_per_call` MACs) for about `millis` ms; returns MACs/s.
fn measure(millis: u64, macs_per_call: u64, mut body: impl FnMut()) -> f64 {
    body(); // warm up the vector unit
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed().as_millis() < millis as u128 {
        for _ in 0..256 {
            body();
        }
        calls += 256;
    }
    (calls * macs_per_call) as f64 / start.elapsed().as_secs_f64()
}

/// `vpdpbusd zmm`: 64 MACs per instruction, 10 independent accumulators, 10 rounds per call.
///
/// # Safety
/// The CPU runs AVX-512F and AVX-512 VNNI.
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn vnni_zmm(millis: u64) -> f64 {
    measure(millis, 10 * 10 * 64, || unsafe {
        asm!(
            "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3", "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
            "vpxord zmm6, zmm6, zmm6", "vpxord zmm7, zmm7, zmm7", "vpxord zmm8, zmm8, zmm8",
            "vpxord zmm9, zmm9, zmm9",
            "mov {i}, 10",
            "2:",
            "vpdpbusd zmm0, zmm10, zmm11", "vpdpbusd zmm1, zmm10, zmm11", "vpdpbusd zmm2, zmm10, zmm11",
            "vpdpbusd zmm3, zmm10, zmm11", "vpdpbusd zmm4, zmm10, zmm11", "vpdpbusd zmm5, zmm10, zmm11",
            "vpdpbusd zmm6, zmm10, zmm11", "vpdpbusd zmm7, zmm10, zmm11", "vpdpbusd zmm8, zmm10, zmm11",
            "vpdpbusd zmm9, zmm10, zmm11",
            "dec {i}",
            "jnz 2b",
            i = out(reg) _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
            out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _, out("zmm9") _,
            out("zmm10") _, out("zmm11") _,
            options(nostack, nomem),
        );
    })
}

/// `vpmaddubsw` + `vpmaddwd` + `vpaddd` on zmm: 64 MACs per triple, 6 chains, 10 rounds.
///
/// # Safety
/// The CPU runs AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn bw_zmm(millis: u64) -> f64 {
    measure(millis, 10 * 6 * 64, || unsafe {
        asm!(
            "vpxord zmm0, zmm0, zmm0", "vpxord zmm1, zmm1, zmm1", "vpxord zmm2, zmm2, zmm2",
            "vpxord zmm3, zmm3, zmm3", "vpxord zmm4, zmm4, zmm4", "vpxord zmm5, zmm5, zmm5",
            "mov {i}, 10",
            "2:",
            "vpmaddubsw zmm12, zmm10, zmm11", "vpmaddubsw zmm13, zmm10, zmm11", "vpmaddubsw zmm14, zmm10, zmm11",
            "vpmaddubsw zmm15, zmm10, zmm11", "vpmaddubsw zmm16, zmm10, zmm11", "vpmaddubsw zmm17, zmm10, zmm11",
            "vpmaddwd zmm12, zmm12, zmm9", "vpmaddwd zmm13, zmm13, zmm9", "vpmaddwd zmm14, zmm14, zmm9",
            "vpmaddwd zmm15, zmm15, zmm9", "vpmaddwd zmm16, zmm16, zmm9", "vpmaddwd zmm17, zmm17, zmm9",
            "vpaddd zmm0, zmm0, zmm12", "vpaddd zmm1, zmm1, zmm13", "vpaddd zmm2, zmm2, zmm14",
            "vpaddd zmm3, zmm3, zmm15", "vpaddd zmm4, zmm4, zmm16", "vpaddd zmm5, zmm5, zmm17",
            "dec {i}",
            "jnz 2b",
            i = out(reg) _,
            out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
            out("zmm5") _, out("zmm9") _, out("zmm10") _, out("zmm11") _, out("zmm12") _,
            out("zmm13") _, out("zmm14") _, out("zmm15") _, out("zmm16") _, out("zmm17") _,
            options(nostack, nomem),
        );
    })
}

/// `vpmaddubsw` + `vpaddw` on ymm: 32 MACs per pair, 8 chains, 10 rounds. The AVX2 kernels sum
/// a block's planes in 16 bits and widen once per block (`vpmaddwd`), so a pair is what each
/// 32 MACs cost them; a triple with `vpmaddwd` and `vpaddd` per 32 MACs read below what their
/// prefill reached (2B4T 2-bit at one thread: 105 % of it).
///
/// # Safety
/// The CPU runs AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn avx2_ymm(millis: u64) -> f64 {
    measure(millis, 10 * 8 * 32, || unsafe {
        asm!(
            "vpxor ymm0, ymm0, ymm0", "vpxor ymm1, ymm1, ymm1",
            "vpxor ymm2, ymm2, ymm2", "vpxor ymm3, ymm3, ymm3",
            "vpxor ymm4, ymm4, ymm4", "vpxor ymm5, ymm5, ymm5",
            "vpxor ymm6, ymm6, ymm6", "vpxor ymm7, ymm7, ymm7",
            "mov {i}, 10",
            "2:",
            "vpmaddubsw ymm8, ymm10, ymm11", "vpmaddubsw ymm9, ymm10, ymm11",
            "vpmaddubsw ymm12, ymm10, ymm11", "vpmaddubsw ymm13, ymm10, ymm11",
            "vpaddw ymm0, ymm0, ymm8", "vpaddw ymm1, ymm1, ymm9",
            "vpaddw ymm2, ymm2, ymm12", "vpaddw ymm3, ymm3, ymm13",
            "vpmaddubsw ymm8, ymm10, ymm11", "vpmaddubsw ymm9, ymm10, ymm11",
            "vpmaddubsw ymm12, ymm10, ymm11", "vpmaddubsw ymm13, ymm10, ymm11",
            "vpaddw ymm4, ymm4, ymm8", "vpaddw ymm5, ymm5, ymm9",
            "vpaddw ymm6, ymm6, ymm12", "vpaddw ymm7, ymm7, ymm13",
            "dec {i}",
            "jnz 2b",
            i = out(reg) _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _, out("ymm4") _,
            out("ymm5") _, out("ymm6") _, out("ymm7") _, out("ymm8") _, out("ymm9") _,
            out("ymm10") _, out("ymm11") _, out("ymm12") _, out("ymm13") _,
            options(nostack, nomem),
        );
    })
}
