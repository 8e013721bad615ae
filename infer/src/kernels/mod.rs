//! CPU compute kernels: packed ternary × int8 and × f32, dense int8 × int8, dense float × f32.
//!
//! Every kernel computes `out[r · n + i] = Σ_j w[r, j] · xs[i, j]` for `rows` weight rows and `n`
//! activation vectors (`xs` row-major `[n, k]`), on one thread: the caller splits rows across
//! threads and calls a kernel on each row range, so any `rows >= 0`, `n >= 1` and
//! `1 <= k <= MAX_K` is accepted. Inconsistent lengths panic before any unsafe code runs.
//!
//! * Integer kernels are **exact**: they equal `tern_pack::dot::dot_i8` (ternary) or the plain
//!   i32 sum (dense) bit for bit.
//! * Float kernels sum in their own order and stay within `tern_pack::dot::dot_f32_error_budget`.
//!
//! # Dispatch
//! [`Isa::detect`] picks the best instruction set once per process; every entry point takes the
//! [`Isa`] explicitly (so tests and benchmarks run every path) and falls back to the generic path,
//! plain Rust that the compiler vectorizes (the only path off x86, ARM included), for anything
//! without a native version. What each instruction set runs:
//!
//! | kernel | `Avx512Vnni` | `Avx512` | `Avx2` |
//! | --- | --- | --- | --- |
//! | ternary × int8 | `vpdpbusd`; 1.6-bit by `vpermi2b` tables | `vpmaddubsw`; 1.6-bit by compares | `vpmaddubsw`; 1.6-bit by compares |
//! | ternary × f32 | masked adds (`avx512.rs`) | same | generic body, AVX2 codegen |
//! | dense int8 | `vpdpbusd`, `x + 128` offset | 16-bit `vpmaddwd` | 16-bit `vpmaddwd` |
//! | dense float | FMA, 4 × 4 tiles | same | FMA, 4 × 2 tiles |
//!
//! Files: `generic.rs`, `avx2.rs`, `avx512.rs` (ternary), `avx512_prefill.rs` (its prefill),
//! `avx512_dense.rs`, `peak.rs`.
//!
//! # Ternary kernels
//! Packed digits are `d = t + 1` in {0, 1, 2}, so the int8 kernels compute `Σ d·x` with unsigned ×
//! signed byte dot products and subtract `Σ x`. Activations are first copied into the order of
//! the packed row's register blocks (`layout.rs`), once per input ([`I8Activations`]): the tail
//! then reads like a zero-padded group and needs no scalar code. Weights are read once per call
//! for one token; with several (prefill), each decoded register serves up to 8 tokens (4 on AVX2).
//! The engine's prefill takes its outputs finished ([`ternary_gemm_i8_scaled`]): scaled to
//! floats and token-major, stored from the registers on AVX-512.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_dense;
#[cfg(target_arch = "x86_64")]
mod avx512_prefill;
mod generic;
mod layout;
#[cfg(target_arch = "x86_64")]
mod peak;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use tern_pack::codec::Codec;

/// How the decode prefetches the streams that one step reads once: its weights, the LM head
/// and the KV cache. (A prefill's streams, which its tokens read again, always go to L2.)
///
/// Neither is the faster everywhere; which one is depends on what shares the core's caches.
/// Measured on Zen 4 (`tern bench --model <700M, 2 bits> -p 128 -n 256`, in one process
/// choosing each step's hint at random): on a core of its own, non-temporal took 6–10 % less
/// time per step (the streams do not evict into L3 what the step reads again); on a day when
/// the same machine kind ran the int8 dot products at half its usual rate (its core shared),
/// L2 took 15–24 % less, and a kernel reading its activations from L1 beside a non-temporal
/// stream read 0.52–0.62 of the memory's rate against 0.98–1.02 into L2 (the prefetched lines
/// are lost before their use). Hence [`crate::model::Prefetch::Auto`], which measures both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamHint {
    /// `prefetchnta`: into L1 only, not kept in L2 or L3 afterwards.
    #[default]
    NonTemporal,
    /// `prefetcht1`: into L2, and from there into L3 as any line.
    L2,
}

impl StreamHint {
    /// Both hints.
    pub const ALL: [StreamHint; 2] = [StreamHint::NonTemporal, StreamHint::L2];

    /// `nta` or `l2`.
    pub fn name(self) -> &'static str {
        match self {
            StreamHint::NonTemporal => "nta",
            StreamHint::L2 => "l2",
        }
    }

    /// The other hint.
    pub fn other(self) -> StreamHint {
        match self {
            StreamHint::NonTemporal => StreamHint::L2,
            StreamHint::L2 => StreamHint::NonTemporal,
        }
    }
}

/// The process's [`StreamHint`]: `true` for [`StreamHint::L2`]. One for the process, as the
/// caches it answers to are the machine's; a hint never changes a result, only its speed.
static STREAMS_TO_L2: AtomicBool = AtomicBool::new(false);

/// Sets how the decode kernels prefetch their read-once streams from their next call on.
pub fn set_stream_hint(hint: StreamHint) {
    STREAMS_TO_L2.store(hint == StreamHint::L2, Ordering::Relaxed);
}

/// Whether a stream is prefetched non-temporally: it is read `once` (a decode step's) and the
/// hint in force says so. Kernels ask once per call, outside their loops.
#[inline(always)]
pub(crate) fn nta(once: bool) -> bool {
    once && !STREAMS_TO_L2.load(Ordering::Relaxed)
}

/// Prefetches every line of `bytes` bytes from `p`: into L2, or non-temporally with `ONCE`. A
/// prefetch never faults and reads nothing, so `p` may point to memory that is unmapped or not
/// initialized.
#[inline(always)]
fn prefetch_lines<const ONCE: bool>(p: *const i8, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_NTA, _MM_HINT_T1, _mm_prefetch};
        for off in (0..bytes).step_by(64) {
            let line = p.wrapping_add(off);
            // SAFETY: a prefetch never faults and dereferences nothing.
            unsafe {
                if ONCE {
                    _mm_prefetch::<_MM_HINT_NTA>(line);
                } else {
                    _mm_prefetch::<_MM_HINT_T1>(line);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, bytes);
}

/// Prefetches every line of `bytes` bytes from `p` into L2 (`p` may point anywhere).
#[inline(always)]
pub(crate) fn prefetch_l2_raw(p: *const i8, bytes: usize) {
    prefetch_lines::<false>(p, bytes);
}

/// Prefetches every line of `bytes` bytes from `p` for one read soon: non-temporally with
/// `nta` (from [`nta`]: the lines do not go on to evict what the step reads again), else into
/// L2. Like [`prefetch_l2_raw`], `p` may point anywhere.
#[inline(always)]
pub(crate) fn prefetch_stream_raw(p: *const i8, bytes: usize, nta: bool) {
    if nta {
        prefetch_lines::<true>(p, bytes);
    } else {
        prefetch_lines::<false>(p, bytes);
    }
}

/// The longest row any kernel accepts: every i32 partial sum stays exact below it.
pub const MAX_K: usize = 1 << 16;

/// Instruction set picked at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, vectorized by the compiler for the build target.
    Generic,
    /// AVX2 with FMA and F16C.
    Avx2,
    /// AVX-512 F, BW and VL (and the AVX2 set).
    Avx512,
    /// [`Isa::Avx512`] with VNNI (`vpdpbusd`) and VBMI (`vpermi2b`): Ice Lake, Sapphire Rapids,
    /// Zen 4 and later. (Cascade Lake, VNNI without VBMI, runs [`Isa::Avx512`].)
    Avx512Vnni,
}

impl Isa {
    /// Every instruction set, worst first.
    pub const ALL: [Isa; 4] = [Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Avx512Vnni];

    /// The best instruction set this CPU runs (detected once).
    pub fn detect() -> Isa {
        *Isa::available().last().unwrap_or(&Isa::Generic)
    }

    /// Every instruction set this CPU runs, [`Isa::Generic`] first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|&isa| isa.is_supported())
            .collect()
    }

    /// Whether this CPU runs `self` (detected once).
    pub fn is_supported(self) -> bool {
        static SUPPORTED: OnceLock<[bool; 4]> = OnceLock::new();
        SUPPORTED.get_or_init(detect_all)[self as usize]
    }

    /// The name used on the command line and in benchmark reports.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Vnni => "avx512-vnni",
        }
    }

    /// Parses an [`Isa::name`].
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == s)
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn detect_all() -> [bool; 4] {
    use std::arch::is_x86_feature_detected as has;
    let avx2 = has!("avx2") && has!("fma") && has!("f16c");
    let avx512 = avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl");
    let vnni = avx512 && has!("avx512vnni") && has!("avx512vbmi");
    [true, avx2, avx512, vnni]
}

#[cfg(not(target_arch = "x86_64"))]
fn detect_all() -> [bool; 4] {
    [true, false, false, false]
}

/// Dense float weights, row-major `[rows, k]`.
#[derive(Clone, Copy, Debug)]
pub enum DenseWeights<'a> {
    /// Single precision.
    F32(&'a [f32]),
    /// IEEE half precision, widened on the fly.
    F16(&'a [half::f16]),
    /// bfloat16, widened on the fly (a shift).
    Bf16(&'a [half::bf16]),
}

impl DenseWeights<'_> {
    /// Number of weights.
    pub fn len(&self) -> usize {
        match self {
            DenseWeights::F32(w) => w.len(),
            DenseWeights::F16(w) => w.len(),
            DenseWeights::Bf16(w) => w.len(),
        }
    }

    /// Whether there are no weights.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks the shapes shared by every kernel and returns the number of rows.
fn check_shapes(
    isa: Isa,
    w_len: usize,
    row_len: usize,
    k: usize,
    xs_len: usize,
    n: usize,
    out_len: usize,
) -> usize {
    assert!(
        isa.is_supported(),
        "instruction set {isa} is not supported by this CPU"
    );
    assert!((1..=MAX_K).contains(&k), "k = {k} outside 1..={MAX_K}");
    assert!(n >= 1, "n = 0 activation vectors");
    assert_eq!(
        w_len % row_len,
        0,
        "weights are not whole rows of {row_len}"
    );
    let rows = w_len / row_len;
    assert_eq!(
        Some(xs_len),
        n.checked_mul(k),
        "activations are not [n = {n}, k = {k}]"
    );
    assert_eq!(
        Some(out_len),
        rows.checked_mul(n),
        "output is not [rows = {rows}, n = {n}]"
    );
    rows
}

/// Ternary × int8, exact: `out[r · n + i] = Σ_j t[r, j] · xs[i, j]`.
///
/// `packed` holds `rows = packed.len() / codec.row_bytes(k)` packed rows; `xs` is `[n, k]`;
/// `x_sums[i]` is `Σ_j xs[i, j]`. It arranges the activations and calls
/// [`ternary_gemm_i8_arranged`]; callers that run several row ranges or matrices on the same
/// activations arrange them once with [`I8Activations::new`] instead.
///
/// # Panics
/// On inconsistent lengths, `k` outside `1..=MAX_K`, `n == 0`, or an `isa` this CPU lacks.
#[allow(clippy::too_many_arguments)]
pub fn ternary_gemm_i8(
    isa: Isa,
    codec: Codec,
    packed: &[u8],
    k: usize,
    xs: &[i8],
    x_sums: &[i32],
    n: usize,
    out: &mut [i32],
) {
    check_shapes(
        isa,
        packed.len(),
        codec.row_bytes(k),
        k,
        xs.len(),
        n,
        out.len(),
    );
    if out.is_empty() {
        return;
    }
    ternary_gemm_i8_arranged(
        packed,
        &I8Activations::new(isa, codec, xs, x_sums, k, n),
        out,
    );
}

/// Int8 activations in the register-block order of one instruction set's ternary kernels and
/// one codec (`layout.rs`), with each token's sum.
///
/// Arranging costs a copy of the activations into a fresh buffer; a decode step's matrices are
/// split into many row ranges (32 per thread, `linear.rs`), and arranging once per input
/// instead of once per range and matrix saves that copy on every one of them.
#[derive(Clone)]
pub struct I8Activations {
    isa: Isa,
    codec: Codec,
    lay: layout::Blocks,
    xp: layout::Scattered<i8>,
    sums: Vec<i32>,
}

impl I8Activations {
    /// Arranges `xs` (`[n, k]`, with `x_sums[i] = Σ_j xs[i, j]`) for `isa`'s kernels of `codec`.
    ///
    /// # Panics
    /// On inconsistent lengths, `k` outside `1..=MAX_K`, `n == 0`, or an `isa` this CPU lacks.
    pub fn new(
        isa: Isa,
        codec: Codec,
        xs: &[i8],
        x_sums: &[i32],
        k: usize,
        n: usize,
    ) -> I8Activations {
        check_shapes(isa, 0, codec.row_bytes(k), k, xs.len(), n, 0);
        assert_eq!(x_sums.len(), n, "x_sums length");
        debug_assert!(
            xs.chunks_exact(k)
                .zip(x_sums)
                .all(|(x, &s)| x.iter().map(|&v| v as i32).sum::<i32>() == s),
            "x_sums are not the sums of xs"
        );
        // AVX-512 reads two 32-byte groups per register; the others one.
        let lanes = if matches!(isa, Isa::Avx512Vnni | Isa::Avx512) {
            2
        } else {
            1
        };
        let lay = layout::Blocks::new(codec, k, lanes);
        let xp = lay.scatter_all(xs, n, 0i8);
        I8Activations {
            isa,
            codec,
            lay,
            xp,
            sums: x_sums.to_vec(),
        }
    }

    /// Whether these activations are arranged for `isa`'s kernels of `codec`.
    pub fn fits(&self, isa: Isa, codec: Codec) -> bool {
        (self.isa, self.codec) == (isa, codec)
    }

    /// Weights per token.
    pub fn k(&self) -> usize {
        self.lay.k
    }

    /// Tokens.
    pub fn n(&self) -> usize {
        self.sums.len()
    }
}

/// [`ternary_gemm_i8`] on activations arranged beforehand: `packed` holds whole rows of
/// `x.k()` weights in the codec they were arranged for, and `out` is `[rows, x.n()]`.
///
/// # Panics
/// On inconsistent lengths.
pub fn ternary_gemm_i8_arranged(packed: &[u8], x: &I8Activations, out: &mut [i32]) {
    let (rb, n) = (x.lay.row_bytes, x.n());
    assert_eq!(packed.len() % rb, 0, "weights are not whole rows of {rb}");
    assert_eq!(
        Some(out.len()),
        (packed.len() / rb).checked_mul(n),
        "output is not [rows = {}, n = {n}]",
        packed.len() / rb
    );
    if out.is_empty() {
        return;
    }
    let a = layout::Arranged {
        lay: &x.lay,
        xp: x.xp.as_slice(),
        sums: &x.sums,
    };
    match x.isa {
        // SAFETY: `I8Activations::new` checked that the CPU runs `isa` and arranged them for it;
        // the lengths are checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::ternary_gemm_i8_vnni(x.codec, a, packed, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::ternary_gemm_i8_bw(x.codec, a, packed, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::ternary_gemm_i8(x.codec, a, packed, out) },
        _ => generic::ternary_gemm_i8(x.codec, a, packed, out),
    }
}

/// The finished outputs of a ternary × int8 layer (BitNet's BitLinear, as transformers computes
/// it) over the tokens of `x`, token-major: `out[i · ld + r] = acc[r, i] as f32 / (x_scales[i] ·
/// w_scales[r])`, where `acc` is what [`ternary_gemm_i8_arranged`] computes, `x_scales` holds
/// one multiplier per token and `w_scales` one divisor per row of `packed`. Elements of `out`
/// in columns `rows .. ld` are left as they were.
///
/// A prefill's row ranges run on several threads at once and each writes its columns of the
/// layer's `[n, rows]` output in place (through this function's crate-private raw-pointer
/// twin); with AVX-512 and several tokens the sums are scaled and stored straight from the
/// registers, with no `[rows, n]` buffer to finish and transpose afterwards.
///
/// # Panics
/// On inconsistent lengths: `x_scales` not one per token, `w_scales` not one per row, or `out`
/// shorter than `(n - 1) · ld + rows`, or `ld < rows`.
pub fn ternary_gemm_i8_scaled(
    packed: &[u8],
    x: &I8Activations,
    x_scales: &[f32],
    w_scales: &[f32],
    out: &mut [f32],
    ld: usize,
) {
    let rows = packed.len() / x.lay.row_bytes;
    let need = (x.n() - 1)
        .checked_mul(ld)
        .and_then(|v| v.checked_add(rows));
    assert!(ld >= rows, "row stride {ld} below the {rows} rows");
    assert!(
        need.is_some_and(|need| out.len() >= need),
        "output of {} floats is not [n = {}, ld = {ld}]",
        out.len(),
        x.n()
    );
    // SAFETY: checked above: every `i · ld + r` with `i < n`, `r < rows` is inside `out`, which
    // this call borrows mutably.
    unsafe { ternary_gemm_i8_scaled_raw(packed, x, x_scales, w_scales, out.as_mut_ptr(), ld) }
}

/// [`ternary_gemm_i8_scaled`] into memory that other calls write at the same time (their own
/// columns).
///
/// # Safety
/// `out.add(i · ld + r)` for every token `i < x.n()` and row `r` of `packed` is valid for
/// writes, and no other thread reads or writes those elements during the call.
///
/// # Panics
/// As [`ternary_gemm_i8_scaled`], except for the length of `out`, which it cannot see.
pub(crate) unsafe fn ternary_gemm_i8_scaled_raw(
    packed: &[u8],
    x: &I8Activations,
    x_scales: &[f32],
    w_scales: &[f32],
    out: *mut f32,
    ld: usize,
) {
    let (rb, n) = (x.lay.row_bytes, x.n());
    assert_eq!(packed.len() % rb, 0, "weights are not whole rows of {rb}");
    let rows = packed.len() / rb;
    assert_eq!(x_scales.len(), n, "one activation scale per token");
    assert_eq!(w_scales.len(), rows, "one weight scale per row");
    assert!(ld >= rows, "row stride {ld} below the {rows} rows");
    if rows == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if n > 1 && matches!(x.isa, Isa::Avx512Vnni | Isa::Avx512) {
        let a = layout::Arranged {
            lay: &x.lay,
            xp: x.xp.as_slice(),
            sums: &x.sums,
        };
        let mut sink = avx512_prefill::Scaled {
            out,
            ld,
            x_scales,
            w_scales,
        };
        // SAFETY: `I8Activations::new` checked that the CPU runs `isa` and arranged them for
        // it; the lengths are checked above, and the caller vouches for `out`.
        return unsafe {
            match x.isa {
                Isa::Avx512Vnni => {
                    avx512::ternary_prefill_scaled_vnni(x.codec, a, packed, &mut sink)
                }
                _ => avx512::ternary_prefill_scaled_bw(x.codec, a, packed, &mut sink),
            }
        };
    }
    // Elsewhere: the exact sums, then scaled and transposed eight rows at a time (each token's
    // eight outputs one contiguous write).
    let mut acc = vec![0i32; rows * n];
    ternary_gemm_i8_arranged(packed, x, &mut acc);
    for r0 in (0..rows).step_by(8) {
        let r1 = (r0 + 8).min(rows);
        for (i, &xs) in x_scales.iter().enumerate() {
            for r in r0..r1 {
                let y = acc[r * n + i] as f32 / (xs * w_scales[r]);
                // SAFETY: `i < n`, `r < rows`: the caller vouches for the element.
                unsafe { *out.add(i * ld + r) = y };
            }
        }
    }
}

/// Ternary × f32 (the TriLM path): `out[r · n + i] = Σ_j t[r, j] · xs[i, j]` within
/// `tern_pack::dot::dot_f32_error_budget(xs_i)`, by selects and adds only.
///
/// # Panics
/// As [`ternary_gemm_i8`].
pub fn ternary_gemm_f32(
    isa: Isa,
    codec: Codec,
    packed: &[u8],
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    check_shapes(
        isa,
        packed.len(),
        codec.row_bytes(k),
        k,
        xs.len(),
        n,
        out.len(),
    );
    if out.is_empty() {
        return;
    }
    match isa {
        // SAFETY: `check_shapes` verified the lengths and that the CPU runs `isa`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512::ternary_gemm_f32_vbmi(codec, packed, k, xs, n, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::ternary_gemm_f32_bw(codec, packed, k, xs, n, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::ternary_gemm_f32(codec, packed, k, xs, n, out) },
        _ => generic::ternary_gemm_f32(codec, packed, k, xs, n, out),
    }
}

/// Dense int8 × int8 (the 8-bit LM head), exact: `w` is `[rows, k]`, `out` is `[rows, n]`.
///
/// # Panics
/// As [`ternary_gemm_i8`].
pub fn dense_gemm_i8(isa: Isa, w: &[i8], k: usize, xs: &[i8], n: usize, out: &mut [i32]) {
    check_shapes(isa, w.len(), k, k, xs.len(), n, out.len());
    if out.is_empty() {
        return;
    }
    match isa {
        // SAFETY: `check_shapes` verified the lengths and that the CPU runs `isa`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { avx512_dense::dense_gemm_i8_vnni(w, k, xs, n, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512_dense::dense_gemm_i8_bw(w, k, xs, n, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dense_gemm_i8(w, k, xs, n, out) },
        _ => generic::dense_gemm_i8(w, k, xs, n, out),
    }
}

/// Dense float weights × f32: `w` is `[rows, k]`, `out` is `[rows, n]`, within
/// `tern_pack::dot::dot_f32_error_budget(xs_i · widened row)` (FMA allowed).
///
/// # Panics
/// As [`ternary_gemm_i8`].
pub fn dense_gemm_f32(
    isa: Isa,
    w: DenseWeights<'_>,
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    check_shapes(isa, w.len(), k, k, xs.len(), n, out.len());
    if out.is_empty() {
        return;
    }
    match isa {
        // SAFETY: `check_shapes` verified the lengths and that the CPU runs `isa`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni | Isa::Avx512 => unsafe { avx512_dense::dense_gemm_f32(w, k, xs, n, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::dense_gemm_f32(w, k, xs, n, out) },
        _ => generic::dense_gemm_f32(w, k, xs, n, out),
    }
}

/// The int8 dot-product peak of one core, measured, in multiply-accumulates per second.
///
/// Runs a register-only `asm!` loop of the int8 dot instruction of `isa` on the calling thread
/// for about `millis` ms and returns MACs done / seconds elapsed:
///
/// * [`Isa::Avx512Vnni`]: `vpdpbusd zmm` on 10 independent accumulators, 64 MACs each;
/// * [`Isa::Avx512`]: `vpmaddubsw` + `vpmaddwd` + `vpaddd` on zmm, 6 chains, 64 MACs per triple;
/// * [`Isa::Avx2`]: the same triple on ymm, 4 chains, 32 MACs per triple;
/// * [`Isa::Generic`]: the compiler-vectorized block dot product of the generic kernels.
///
/// Enough independent chains hide the latency, so the figure is the instruction's throughput.
/// (The ternary kernels without VNNI sum several `vpmaddubsw` in 16 bits before one `vpmaddwd`,
/// so they can exceed the `Avx2` / `Avx512` figure.)
///
/// # Panics
/// If this CPU lacks `isa`.
pub fn int8_peak_macs_per_s(isa: Isa, millis: u64) -> f64 {
    assert!(
        isa.is_supported(),
        "instruction set {isa} is not supported by this CPU"
    );
    match isa {
        // SAFETY: the CPU runs `isa` (asserted above).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Vnni => unsafe { peak::vnni_zmm(millis) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { peak::bw_zmm(millis) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { peak::avx2_ymm(millis) },
        _ => generic::peak_macs_per_s(millis),
    }
}
