//! Causal grouped-query attention over the KV cache, and the per-token int8 activation
//! quantizer, with their small float loops compiled once generically and once more for AVX2 or
//! AVX-512 (the same Rust body under `#[target_feature]`, picked by the model's [`Isa`]).

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::kernels::{Isa, nta, prefetch_l2_raw, prefetch_stream_raw};
use crate::team;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod cache;
#[cfg(target_arch = "x86_64")]
mod kernel;
mod tasks;

pub use cache::{KvCache, KvDtype};
use tasks::append_and_attend;
use tasks::{Call, HeadView};

/// Lanes of the softmax numerators' independent partial sums (one AVX-512 register).
const LANES: usize = 16;

// The bodies below use index loops only: closures passed to iterator adapters are compiled as
// functions of their own, without the caller's `#[target_feature]`, and would not vectorize.

#[inline(always)]
fn axpy_body(w: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    for j in 0..n {
        y[j] += w * x[j];
    }
}

/// How far ahead of its use the x86 kernel (`attention/kernel.rs`) prefetches each KV head's
/// stream, in bytes. A head's keys and values are short streams (a few KB to a few hundred KB)
/// that the weight stream of the previous layer has evicted to DRAM: the hardware prefetchers
/// barely ramp up on them.
const KV_AHEAD: usize = 4096;

/// Rows of the cache prefetched ahead of the one being read (each head's rows are one
/// contiguous stream, but short: a few hundred bytes per row).
const AHEAD: usize = 6;

/// Prefetches row `t` (`len` values from `t · len`) of `s` into L1, if it exists.
#[inline(always)]
fn prefetch_row<T>(s: &[T], t: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let (start, bytes) = (t * len, len * std::mem::size_of::<T>());
        if start + len <= s.len() {
            let p = s[start..].as_ptr().cast::<i8>();
            for off in (0..bytes).step_by(64) {
                // SAFETY: a prefetch never faults; the address is inside the row anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (s, t, len);
}

/// Prefetches every line of `s` (the KV streams' prefetches): for a decode step (`once`: its
/// queries read each row in one pass, and the step reads the weights and the other heads' rows
/// meanwhile) as the [`crate::kernels::StreamHint`] in force says, else into L2 (into L1 they
/// stall on its few miss buffers).
/// Measured on Zen 4 beside the non-temporal weight streams, in one process choosing each
/// step's variant at random (`tern bench --model <700M, 2 bits> -p 128 -n 256`): 0.6–1.0 %
/// less time per step at one thread, 2.5–3.5 % at two.
#[inline(always)]
fn prefetch_kv<T>(s: &[T], once: bool) {
    prefetch_range(s.as_ptr().cast(), std::mem::size_of_val(s), once);
}

/// Prefetches the lines of `bytes` bytes from `p`: as a stream read `once` (as the
/// [`crate::kernels::StreamHint`] in force says), or into L2.
#[inline(always)]
fn prefetch_range(p: *const i8, bytes: usize, once: bool) {
    if once {
        prefetch_stream_raw(p, bytes, nta(true));
    } else {
        prefetch_l2_raw(p, bytes);
    }
}

/// The keys of the head a thread attends next, as an address range to prefetch while this
/// head is attended: only prefetched, never read, so they may be written meanwhile (the task
/// of that head appends to them).
#[derive(Clone, Copy)]
struct Ahead {
    addr: usize,
    bytes: usize,
}

impl Ahead {
    const NONE: Ahead = Ahead { addr: 0, bytes: 0 };

    /// The elements of `s`.
    fn of<T>(s: &[T]) -> Ahead {
        Ahead {
            addr: s.as_ptr() as usize,
            bytes: std::mem::size_of_val(s),
        }
    }

    /// Prefetches the line at byte `at`, if it is in the range, as [`prefetch_kv`] does.
    #[inline(always)]
    fn line(self, at: usize, once: bool) {
        if at < self.bytes {
            prefetch_range((self.addr + at) as *const i8, 1, once);
        }
    }

    /// Prefetches bytes `from .. from + len`, those that are in the range, as [`prefetch_kv`]
    /// does.
    #[inline(always)]
    fn lines(self, from: usize, len: usize, once: bool) {
        let to = from.saturating_add(len).min(self.bytes);
        if from < to {
            prefetch_range((self.addr + from) as *const i8, to - from, once);
        }
    }

    /// Prefetches the first `KV_AHEAD` bytes into L2.
    #[inline(always)]
    fn prefetch_start(self) {
        self.lines(0, KV_AHEAD, false);
    }
}

/// An element type of the KV cache.
pub trait KvElem: Copy + Default + Send + Sync + 'static {
    /// Widens `src` into `dst` (same length), with the instructions of `isa`.
    fn widen(isa: Isa, src: &[Self], dst: &mut [f32]);
    /// Whether each stored row (`head_dim` values) has a scale of its own: a value is then its
    /// element times the row's scale.
    const SCALED: bool = false;
    /// Narrows one row `src` onto the end of `dst` (with the instructions of `isa`); returns its
    /// scale (1 unless `SCALED`).
    fn extend(isa: Isa, dst: &mut Vec<Self>, src: &[f32]) -> f32;
    /// Sixteen values from `p`, widened (the shared kernel's load with AVX-512).
    ///
    /// # Safety
    /// The CPU runs AVX-512F (and F16C); sixteen values are readable from `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
    /// Eight values from `p`, widened (the AVX2 kernel's load).
    ///
    /// # Safety
    /// The CPU runs AVX2 and F16C; eight values are readable from `p`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(p: *const Self) -> std::arch::x86_64::__m256;
}

impl KvElem for f32 {
    #[inline(always)]
    fn widen(_: Isa, src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn extend(_: Isa, dst: &mut Vec<f32>, src: &[f32]) -> f32 {
        dst.extend_from_slice(src);
        1.0
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
        unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> std::arch::x86_64::__m256 {
        unsafe { std::arch::x86_64::_mm256_loadu_ps(p) }
    }
}

impl KvElem for f16 {
    #[inline(always)]
    fn widen(isa: Isa, src: &[f16], dst: &mut [f32]) {
        match isa {
            // SAFETY: AVX2-class instruction sets include F16C (`Isa::available`).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { widen_f16c(src, dst) },
            // SAFETY: AVX-512 instruction sets include AVX-512F.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Avx512Vnni => unsafe { widen_f16_avx512(src, dst) },
            _ => {
                let n = src.len().min(dst.len());
                for j in 0..n {
                    dst[j] = widen_f16(src[j].to_bits());
                }
            }
        }
    }
    fn extend(_: Isa, dst: &mut Vec<f16>, src: &[f32]) -> f32 {
        let start = dst.len();
        dst.resize(start + src.len(), f16::ZERO);
        dst[start..].convert_from_f32_slice(src);
        1.0
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::{_mm256_loadu_si256, _mm512_cvtph_ps};
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::{_mm_loadu_si128, _mm256_cvtph_ps};
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
}

/// Int8 with a scale per row, coded by BitNet's activation quantizer ([`quantize_i8`]): codes
/// `round(x · 127 / absmax)`, scale `absmax / 127`, so `|x − code · scale| <= scale / 2`.
impl KvElem for i8 {
    const SCALED: bool = true;
    #[inline(always)]
    fn widen(_: Isa, src: &[i8], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        for j in 0..n {
            dst[j] = src[j] as f32;
        }
    }
    fn extend(isa: Isa, dst: &mut Vec<i8>, src: &[f32]) -> f32 {
        let start = dst.len();
        dst.resize(start + src.len(), 0);
        let (x_scale, _) = quantize_i8(isa, src, &mut dst[start..]);
        1.0 / x_scale
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16(p: *const i8) -> std::arch::x86_64::__m512 {
        use std::arch::x86_64::{_mm_loadu_si128, _mm512_cvtepi8_epi32, _mm512_cvtepi32_ps};
        unsafe { _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))) }
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(p: *const i8) -> std::arch::x86_64::__m256 {
        use std::arch::x86_64::{_mm_loadl_epi64, _mm256_cvtepi8_epi32, _mm256_cvtepi32_ps};
        unsafe { _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.cast()))) }
    }
}

/// One f16 value (bits) as f32, exactly: magnitude bits shifted into place and rescaled by
/// 2^112 (which also normalises subnormals), infinities and NaNs patched, sign restored.
#[inline(always)]
fn widen_f16(h: u16) -> f32 {
    let h = h as u32;
    let em = h & 0x7fff;
    let scaled = f32::from_bits(em << 13) * f32::from_bits(0x7780_0000); // × 2^112
    let special = f32::from_bits((em << 13) | 0x7f80_0000);
    let mag = if em >= 0x7c00 { special } else { scaled };
    f32::from_bits(mag.to_bits() | ((h & 0x8000) << 16))
}

/// f16 → f32 eight at a time with F16C (`vcvtph2ps`), exact.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
fn widen_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
    let n = src.len().min(dst.len());
    let full = n - n % 8;
    let mut j = 0;
    while j < full {
        // SAFETY: j + 8 <= n <= both lengths; unaligned loads and stores.
        unsafe {
            let h = _mm_loadu_si128(src.as_ptr().add(j) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(j), _mm256_cvtph_ps(h));
        }
        j += 8;
    }
    for j in full..n {
        dst[j] = widen_f16(src[j].to_bits());
    }
}

/// f16 → f32 sixteen at a time (`vcvtph2ps zmm`), exact. Whole-register stores matter: the
/// dot product reads the row back in 64-byte loads, which two 32-byte stores could not forward.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,f16c")]
fn widen_f16_avx512(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm512_cvtph_ps, _mm512_storeu_ps};
    let n = src.len().min(dst.len());
    let full = n - n % 16;
    let mut j = 0;
    while j < full {
        // SAFETY: j + 16 <= n <= both lengths; unaligned loads and stores.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr().add(j) as *const __m256i);
            _mm512_storeu_ps(dst.as_mut_ptr().add(j), _mm512_cvtph_ps(h));
        }
        j += 16;
    }
    for j in full..n {
        dst[j] = widen_f16(src[j].to_bits());
    }
}

/// Tokens per block of the key cache (stored `[hd, KEY_BLOCK]`, dimension-major).
pub const KEY_BLOCK: usize = 16;

/// Most queries attended together: they share every widened key and value row (the heads of
/// one KV group, times a block of prompt tokens).
const MAX_QUERIES: usize = 16;

// `exp_le0`'s constants, shared with its AVX-512 twin (which must equal it bit for bit).
/// Below this, `e^x` is flushed to zero.
const EXP_FLOOR: f32 = -87.0;
/// `ln 2` split in two (Cody–Waite): `HI` has trailing zero bits, so `n · HI` is exact.
const EXP_LN2_HI: f32 = 0.693_359_4;
const EXP_LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2^23: adding and subtracting it rounds to an integer.
const EXP_ROUND: f32 = 12_582_912.0;
/// Cephes' polynomial for `e^r`, highest degree first.
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `e^x` for `x <= 0` (softmax after subtracting the maximum), in plain float and integer
/// operations that vectorize: `x = n·ln2 + r` (Cody–Waite), Cephes' degree-6 polynomial for
/// `e^r`, and `2^n` built in the exponent bits. Within 2 ulp of `f32::exp` on `[-87, 0]`;
/// below that the result is flushed to zero (a softmax weight under 1e-38).
#[inline(always)]
fn exp_le0(x: f32) -> f32 {
    exp_clamped(x.max(EXP_FLOOR), x < EXP_FLOOR)
}

/// [`exp_le0`] with the floor applied by a select instead of `f32::max`, so that a loop of it
/// vectorizes. Equal to it for every `x`: NaN is taken to the floor (not below it) as
/// `f32::max` takes it, so the result is never NaN, and a caller's NaN input keeps its own bits
/// on every ISA.
#[inline(always)]
pub(crate) fn exp_le0_select(x: f32) -> f32 {
    exp_clamped(if x >= EXP_FLOOR { x } else { EXP_FLOOR }, x < EXP_FLOOR)
}

/// `exp_le0`'s body for `x` in `[EXP_FLOOR, 0]` (`0` when `under`).
#[inline(always)]
fn exp_clamped(x: f32, under: bool) -> f32 {
    use std::f32::consts::LOG2_E;
    let t = x * LOG2_E + EXP_ROUND;
    let n = t - EXP_ROUND;
    let r = x - n * EXP_LN2_HI - n * EXP_LN2_LO;
    let mut p = EXP_POLY[0];
    for k in &EXP_POLY[1..] {
        p = p * r + k;
    }
    let e = p * r * r + r + 1.0;
    // `t` is a whole number in `EXP_ROUND`'s binade, whose ulp is 1: its bits past those of
    // `EXP_ROUND` are `n` (in [-126, 0]). No saturating cast, which would keep a loop scalar.
    let n = t.to_bits() as i32 - EXP_ROUND.to_bits() as i32;
    let two_n = f32::from_bits(((n + 127) << 23) as u32);
    if under { 0.0 } else { e * two_n }
}

/// Replaces `s` by `e^(s - max s)` and returns the sum (sixteen partial sums, so it vectorizes).
#[inline(always)]
fn softmax_numerators(s: &mut [f32]) -> f32 {
    let mut max = f32::NEG_INFINITY;
    for &v in s.iter() {
        max = max.max(v);
    }
    let mut acc = [0f32; LANES];
    let full = s.len() - s.len() % LANES;
    let mut i = 0;
    while i < full {
        for j in 0..LANES {
            let e = exp_le0(s[i + j] - max);
            s[i + j] = e;
            acc[j] += e;
        }
        i += LANES;
    }
    let mut sum = 0f32;
    for v in acc {
        sum += v;
    }
    for v in &mut s[full..] {
        *v = exp_le0(*v - max);
        sum += *v;
    }
    sum
}

/// [`softmax_numerators`] with the instructions of `isa` (bit for bit the same).
#[inline(always)]
fn softmax(isa: Isa, s: &mut [f32]) -> f32 {
    match isa {
        // SAFETY: these instruction sets are only constructed for CPUs that run AVX2
        // (`Isa::available`).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 | Isa::Avx512Vnni => unsafe { avx2::softmax_numerators(s) },
        _ => softmax_numerators(s),
    }
}

/// One block of queries against one KV head: query `j` (`q[j·hd..]`) attends to the first
/// `lens[j]` cached tokens. `k`: the head's keys in [`KEY_BLOCK`]-token blocks,
/// `[blocks, hd, KEY_BLOCK]`; `v`: its values, `[tokens, hd]`.
#[derive(Clone, Copy)]
struct Block<'a, T> {
    q: &'a [f32],
    lens: &'a [usize],
    k: &'a [T],
    v: &'a [T],
    /// The scale of each key and value row (`[tokens]` each), or empty for unscaled elements.
    k_scale: &'a [f32],
    v_scale: &'a [f32],
    /// The keys of the head processed next on this thread ([`Ahead::NONE`] if none): prefetched
    /// while this head's values are read.
    next_k: Ahead,
    scale: f32,
}

/// Attention of one [`Block`] into `out` (`[m, hd]`): each key and value is widened once and
/// used by every query of the block.
#[inline(always)]
fn block_body<T: KvElem>(isa: Isa, b: Block<'_, T>, out: &mut [f32]) {
    let Block {
        q,
        lens,
        k,
        v,
        k_scale,
        v_scale,
        scale,
        ..
    } = b;
    let m = lens.len();
    let hd = q.len() / m.max(1);
    let longest = lens.iter().copied().max().unwrap_or(0);
    let scaled = !k_scale.is_empty();
    let mut row = vec![0f32; hd];
    let mut scores = vec![0f32; m * longest];
    // Keys come in blocks of KEY_BLOCK tokens stored dimension-major, so the scores of a whole
    // block are KEY_BLOCK-wide multiply-adds by broadcast query values: no horizontal sums.
    // Each block is widened once; each query's sixteen sums stay in one register.
    let mut kt = vec![0f32; KEY_BLOCK * hd];
    for b in 0..longest.div_ceil(KEY_BLOCK) {
        T::widen(
            isa,
            &k[b * KEY_BLOCK * hd..(b + 1) * KEY_BLOCK * hd],
            &mut kt,
        );
        let t0 = b * KEY_BLOCK;
        for j in 0..m {
            let mut a = [0f32; KEY_BLOCK];
            for (&qd, kd) in q[j * hd..(j + 1) * hd]
                .iter()
                .zip(kt.chunks_exact(KEY_BLOCK))
            {
                for l in 0..KEY_BLOCK {
                    a[l] += qd * kd[l];
                }
            }
            let live = lens[j].saturating_sub(t0).min(KEY_BLOCK);
            for l in 0..live {
                let s = a[l] * scale;
                scores[j * longest + t0 + l] = if scaled { s * k_scale[t0 + l] } else { s };
            }
        }
    }
    let mut inv = [0f32; MAX_QUERIES];
    for j in 0..m {
        let sum = softmax(isa, &mut scores[j * longest..j * longest + lens[j]]);
        inv[j] = 1.0 / sum;
    }
    out.fill(0.0);
    for t in 0..longest {
        prefetch_row(v, t + AHEAD, hd);
        T::widen(isa, &v[t * hd..(t + 1) * hd], &mut row);
        for j in 0..m {
            if t < lens[j] {
                let w = scores[j * longest + t] * inv[j];
                let w = if scaled { w * v_scale[t] } else { w };
                axpy_body(w, &row, &mut out[j * hd..(j + 1) * hd]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
fn block_avx2<T: KvElem>(isa: Isa, b: Block<'_, T>, out: &mut [f32]) {
    block_body(isa, b, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
fn block_avx512<T: KvElem>(isa: Isa, b: Block<'_, T>, out: &mut [f32]) {
    block_body(isa, b, out)
}

fn block<T: KvElem>(isa: Isa, b: Block<'_, T>, out: &mut [f32]) {
    let Block {
        q,
        lens,
        k,
        v,
        k_scale,
        v_scale,
        ..
    } = b;
    let m = lens.len();
    let hd = q.len() / m.max(1);
    let longest = lens.iter().copied().max().unwrap_or(0);
    let need = longest * hd;
    assert!(
        m <= MAX_QUERIES && q.len() == m * hd && out.len() == q.len(),
        "attention block shapes"
    );
    assert!(
        longest.div_ceil(KEY_BLOCK) * KEY_BLOCK * hd <= k.len() && need <= v.len(),
        "attention cache shapes"
    );
    assert!(
        if T::SCALED {
            k_scale.len() >= longest && v_scale.len() >= longest
        } else {
            k_scale.is_empty() && v_scale.is_empty()
        },
        "attention cache scales"
    );
    match isa {
        // SAFETY: an `Isa` other than Generic is only constructed for CPUs that run it
        // (`Isa::available`); the bodies are safe Rust, and the shared kernel
        // (`kernel::block`) checks every shape before its first unsafe access.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => {
            // The shared kernel for the widths it takes, else the generic body.
            if !unsafe { avx512::block(b, out) } {
                unsafe { block_avx512(isa, b, out) }
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            if !unsafe { avx2::block(b, out) } {
                unsafe { block_avx2(isa, b, out) }
            }
        }
        _ => block_body(isa, b, out),
    }
}

/// Shapes of an attention call.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Position of the first query (tokens already cached before this batch).
    pub start: usize,
}

/// Causal grouped-query attention of `n` queries against the cache. `q`, `out`:
/// `[n, heads · hd]`; `k[g]`, `v[g]`: KV head `g`'s rows, `[start + n, hd]` (one contiguous
/// stream per head). Work is split into blocks of one KV head × the heads of its group × up to
/// `MAX_QUERIES / group` tokens, in parallel. For an unscaled element type (f32, f16).
pub fn attention<T: KvElem>(
    isa: Isa,
    q: &[f32],
    k: &[Vec<T>],
    v: &[Vec<T>],
    out: &mut [f32],
    d: Dims,
) {
    attention_scaled(isa, q, k, v, (&[], &[]), out, d)
}

/// [`attention`] with each head's key and value row scales (`[tokens]` per head; empty
/// slices for an unscaled element type).
pub fn attention_scaled<T: KvElem>(
    isa: Isa,
    q: &[f32],
    k: &[Vec<T>],
    v: &[Vec<T>],
    scales: (&[Vec<f32>], &[Vec<f32>]),
    out: &mut [f32],
    d: Dims,
) {
    let c = Call::new::<T>(q, k.len(), v.len(), scales.0.len(), scales.1.len(), out, d);
    let ahead: Vec<Ahead> = k.iter().map(|h| Ahead::of(h.as_slice())).collect();
    team::for_each(d.kv_heads * c.blocks, |t| {
        let g = t % d.kv_heads;
        let head = HeadView {
            k: &k[g],
            v: &v[g],
            k_scale: scales.0.get(g).map_or(&[], |s| s),
            v_scale: scales.1.get(g).map_or(&[], |s| s),
        };
        c.task(isa, t, head, &ahead, q);
    });
}

#[inline(always)]
fn quantize_body(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let n = x.len().min(out.len());
    let mut absmax = 0.0f32;
    for &v in &x[..n] {
        absmax = absmax.max(v.abs());
    }
    let x_scale = 127.0 / absmax.max(tern_pack::quant::ABSMAX_EPS);
    let mut sum = 0i32;
    for j in 0..n {
        let c = (x[j] * x_scale).round_ties_even().clamp(-128.0, 127.0) as i8;
        out[j] = c;
        sum += c as i32;
    }
    (x_scale, sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn quantize_avx2(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    quantize_body(x, out)
}

/// BitNet's per-token int8 quantizer (exactly `tern_pack::quant::quantize_activations_i8`),
/// returning `(x_scale, Σ codes)`.
pub fn quantize_i8(isa: Isa, x: &[f32], out: &mut [i8]) -> (f32, i32) {
    assert_eq!(x.len(), out.len(), "activation length");
    match isa {
        // SAFETY: as in `head`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe { avx512::quantize(x, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { quantize_avx2(x, out) },
        _ => quantize_body(x, out),
    }
}

#[cfg(test)]
mod tests;
