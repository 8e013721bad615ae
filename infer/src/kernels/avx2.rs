//! AVX2 kernels: one 256-bit register holds one packed group (a block of one lane).
//!
//! * **Ternary × int8**: 2-bit digits are `(q >> 2p) & 3`; 1.6-bit digits come from
//!   `m_p = 3^p · q mod 256` by byte adds, kept offset by 128 (`m ^ 0x80` follows the same
//!   recurrence, since `3 · 128 ≡ 128 mod 256`) so that two *signed* compares give
//!   `d_p = (m_p > 85) + (m_p > 170)`. `vpmaddubsw` multiplies digits by activations (at most
//!   `2 · 2 · 128` per pair: no saturation) and the planes of a block add up in 16 bits before
//!   one `vpmaddwd`. Up to `MAX_NB` tokens share each decoded block.
//! * **Dense int8**: both operands widened to 16 bits and `vpmaddwd` (exact for −128 × −128,
//!   which the `vpmaddubsw` sign trick is not).
//! * **Float**: FMA on 8 lanes, F16C for half weights.

use std::arch::x86_64::*;

use tern_pack::codec::Codec;

use super::avx512::{self, prefetch_ahead};
use super::layout::{Arranged, Blocks};
use super::{DenseWeights, generic, prefetch_stream_raw};

/// Bytes in one block (one group).
const BLOCK: usize = 32;
/// Most tokens sharing one decoded block (16 registers: planes, accumulators, constants).
const MAX_NB: usize = 4;
/// Prefetch distance (bytes) and target cache (L2) of the weight stream; one token's stream is
/// prefetched as the [`super::StreamHint`] in force says ([`avx512::ONCE`] when non-temporal).
const PREFETCH: usize = avx512::PREFETCH;
const HINT: i32 = _MM_HINT_T1;

/// Loads block `b` of a packed row, zero-filling past the row's end (rows are whole 4-byte words).
///
/// # Safety
/// AVX2; `b < lay.blocks` and `row.len() == lay.row_bytes`.
#[inline(always)]
unsafe fn load_block(row: &[u8], b: usize) -> __m256i {
    unsafe {
        let start = b * BLOCK;
        debug_assert!(start < row.len() && row.len().is_multiple_of(4));
        let p = row.as_ptr().add(start);
        let words = (row.len() - start) / 4;
        if words >= BLOCK / 4 {
            _mm256_loadu_si256(p.cast())
        } else {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(words as i32), lane);
            _mm256_maskload_epi32(p.cast(), mask)
        }
    }
}

/// `v`, hidden from the optimizer: it keeps the 1.6-bit recurrence as written, two byte adds
/// per plane. Seeing `m_p = 3^p · q`, the compiler otherwise builds each `m_p` from 16-bit
/// multiplies (five operations for the last planes).
#[target_feature(enable = "avx2")]
#[inline]
fn opaque(mut v: __m256i) -> __m256i {
    // SAFETY: an empty template: no instruction, no memory, no flags.
    unsafe {
        std::arch::asm!("/* {0} */", inout(ymm_reg) v, options(pure, nomem, nostack, preserves_flags))
    };
    v
}

/// The digit planes of one 32-byte group.
#[inline(always)]
unsafe fn planes<const T: usize>(q: __m256i) -> [__m256i; T] {
    unsafe {
        let mut d = [_mm256_setzero_si256(); T];
        if T == 4 {
            let three = _mm256_set1_epi8(3);
            d[0] = _mm256_and_si256(q, three);
            d[1] = _mm256_and_si256(_mm256_srli_epi16::<2>(q), three);
            d[2] = _mm256_and_si256(_mm256_srli_epi16::<4>(q), three);
            d[3] = _mm256_and_si256(_mm256_srli_epi16::<6>(q), three);
        } else {
            // Offset by 128: m > 85 is m ^ 0x80 > -43 signed, m > 170 is m ^ 0x80 > 42.
            let (t1, t2) = (_mm256_set1_epi8(-43), _mm256_set1_epi8(42));
            let mut m = _mm256_xor_si256(q, _mm256_set1_epi8(-128));
            for d in d.iter_mut() {
                let (c1, c2) = (_mm256_cmpgt_epi8(m, t1), _mm256_cmpgt_epi8(m, t2));
                *d = _mm256_sub_epi8(_mm256_sub_epi8(_mm256_setzero_si256(), c1), c2);
                m = _mm256_add_epi8(m, _mm256_add_epi8(m, m));
                m = opaque(m);
            }
        }
        d
    }
}

/// Ternary × int8 (AVX2, FMA and F16C enabled).
///
/// # Safety
/// The CPU runs AVX2; lengths as checked by `kernels::ternary_gemm_i8`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn ternary_gemm_i8(
    codec: Codec,
    x: Arranged<'_>,
    packed: &[u8],
    out: &mut [i32],
) {
    unsafe {
        match codec {
            Codec::Bits2 => ternary_i8::<4>(x, packed, out),
            Codec::Bits1_6 => ternary_i8::<5>(x, packed, out),
        }
    }
}

#[inline(always)]
unsafe fn ternary_i8<const T: usize>(x: Arranged<'_>, packed: &[u8], out: &mut [i32]) {
    let Arranged { lay, xp, sums } = x;
    let n = sums.len();
    assert_eq!((lay.lanes, lay.block_elems()), (1, BLOCK * T));
    assert_eq!(xp.len(), n * lay.token_elems());
    assert_eq!(out.len() * lay.row_bytes, packed.len() * n);
    let mut i0 = 0;
    while i0 < n {
        let nb = (n - i0).min(MAX_NB);
        let run = Tokens {
            lay,
            xp,
            sums,
            n,
            i0,
        };
        unsafe {
            match nb {
                4 => gemm::<T, 4>(&run, packed, out),
                3 => gemm::<T, 3>(&run, packed, out),
                2 => gemm::<T, 2>(&run, packed, out),
                _ => gemm::<T, 1>(&run, packed, out),
            }
        }
        i0 += nb;
    }
}

/// The tokens `i0 .. i0 + NB` of a call.
struct Tokens<'a> {
    lay: &'a Blocks,
    xp: &'a [i8],
    sums: &'a [i32],
    n: usize,
    i0: usize,
}

/// `NB` tokens against every row.
#[inline(always)]
unsafe fn gemm<const T: usize, const NB: usize>(run: &Tokens<'_>, packed: &[u8], out: &mut [i32]) {
    let nta = super::nta(run.n == 1);
    let (lay, n, i0) = (run.lay, run.n, run.i0);
    let (be, te) = (lay.block_elems(), lay.token_elems());
    assert!(i0 + NB <= n && run.xp.len() == n * te);
    unsafe {
        let ones = _mm256_set1_epi16(1);
        let x0 = run.xp.as_ptr().add(i0 * te);
        for (row, o) in packed
            .chunks_exact(lay.row_bytes)
            .zip(out.chunks_exact_mut(n))
        {
            let mut acc = [_mm256_setzero_si256(); NB];
            for b in 0..lay.blocks {
                prefetch_ahead(row.as_ptr().wrapping_add(b * BLOCK), nta);
                let d = planes::<T>(load_block(row, b));
                let x = x0.add(b * be);
                for (t, acc) in acc.iter_mut().enumerate() {
                    // |Σ over planes| <= T · 2 · 2 · 128: fits 16 bits.
                    let mut s16 = _mm256_setzero_si256();
                    for (p, &d) in d.iter().enumerate() {
                        let xv = _mm256_loadu_si256(x.add(t * te + BLOCK * p).cast());
                        s16 = _mm256_add_epi16(s16, _mm256_maddubs_epi16(d, xv));
                    }
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(s16, ones));
                }
            }
            for (t, acc) in acc.iter().enumerate() {
                o[i0 + t] = hsum_epi32(*acc) - run.sums[i0 + t];
            }
        }
    }
}

/// The sum of the eight i32 lanes.
#[inline(always)]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// Ternary × f32: the generic body compiled for AVX2 (its selects vectorize to 8 lanes).
///
/// # Safety
/// The CPU runs AVX2; lengths as checked by `kernels::ternary_gemm_f32`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn ternary_gemm_f32(
    codec: Codec,
    packed: &[u8],
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    generic::ternary_gemm_f32(codec, packed, k, xs, n, out)
}

/// Eight weights of a row from `at`, widened to f32 (F16C for f16, a shift for bf16).
#[inline(always)]
unsafe fn load_w(w: &DenseWeights<'_>, at: usize) -> __m256 {
    unsafe {
        match w {
            DenseWeights::F32(w) => {
                let p = w.as_ptr().add(at);
                _mm_prefetch::<HINT>(p.wrapping_add(PREFETCH / 4).cast());
                _mm256_loadu_ps(p)
            }
            DenseWeights::F16(w) => {
                let p = w.as_ptr().add(at);
                _mm_prefetch::<HINT>(p.wrapping_add(PREFETCH / 2).cast());
                _mm256_cvtph_ps(_mm_loadu_si128(p.cast()))
            }
            DenseWeights::Bf16(w) => {
                let p = w.as_ptr().add(at);
                _mm_prefetch::<HINT>(p.wrapping_add(PREFETCH / 2).cast());
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
            }
        }
    }
}

/// Weight `at` widened to f32 (for the row tails).
#[inline(always)]
fn weight(w: &DenseWeights<'_>, at: usize) -> f32 {
    match w {
        DenseWeights::F32(w) => w[at],
        DenseWeights::F16(w) => w[at].to_f32(),
        DenseWeights::Bf16(w) => w[at].to_f32(),
    }
}

/// Dense float × f32 with FMA: tiles of up to 4 rows × 2 tokens (8 accumulators of 16); one
/// token takes [`gemv`].
///
/// # Safety
/// The CPU runs AVX2, FMA and F16C; lengths as checked by `kernels::dense_gemm_f32`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dense_gemm_f32(
    w: DenseWeights<'_>,
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    assert_eq!(xs.len(), n * k);
    let rows = w.len() / k;
    assert_eq!(out.len(), rows * n);
    if n == 1 {
        // SAFETY: shapes asserted above; the CPU runs AVX2, FMA and F16C.
        unsafe {
            match w {
                DenseWeights::F32(w) => gemv(w, k, xs, out),
                DenseWeights::F16(w) => gemv(w, k, xs, out),
                DenseWeights::Bf16(w) => gemv(w, k, xs, out),
            }
        }
        return;
    }
    let mut r = 0;
    while r < rows {
        let nr = (rows - r).min(4);
        let mut i0 = 0;
        while i0 < n {
            let nb = if nr == 4 { (n - i0).min(2) } else { 1 };
            unsafe {
                match (nr, nb) {
                    (4, 2) => f32_tile::<4, 2>(&w, r, i0, k, xs, n, out),
                    (4, _) => f32_tile::<4, 1>(&w, r, i0, k, xs, n, out),
                    (3, _) => f32_tile::<3, 1>(&w, r, i0, k, xs, n, out),
                    (2, _) => f32_tile::<2, 1>(&w, r, i0, k, xs, n, out),
                    _ => f32_tile::<1, 1>(&w, r, i0, k, xs, n, out),
                }
            }
            i0 += nb;
        }
        r += nr;
    }
}

/// A float weight type, widened to f32 eight at a time.
trait Wide: Copy {
    /// Whether [`Wide::load16`] returns the even-indexed weights, then the odd-indexed ones
    /// (instead of the first eight, then the next): activations must be paired alike.
    const EVEN_ODD: bool = false;
    /// Eight weights from `p`.
    unsafe fn load8(p: *const Self) -> __m256;
    /// Sixteen weights from `p` in two registers (see [`Wide::EVEN_ODD`]).
    #[inline(always)]
    unsafe fn load16(p: *const Self) -> [__m256; 2] {
        unsafe { [Self::load8(p), Self::load8(p.add(8))] }
    }
    /// One weight, widened.
    fn get(self) -> f32;
}

impl Wide for f32 {
    #[inline(always)]
    unsafe fn load8(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    fn get(self) -> f32 {
        self
    }
}

impl Wide for half::f16 {
    #[inline(always)]
    unsafe fn load8(p: *const half::f16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    fn get(self) -> f32 {
        self.to_f32()
    }
}

impl Wide for half::bf16 {
    /// As in the AVX-512 kernel: one 256-bit load holds sixteen weights, the even ones widened
    /// by a shift, the odd ones by a mask.
    const EVEN_ODD: bool = true;
    #[inline(always)]
    unsafe fn load8(p: *const half::bf16) -> __m256 {
        unsafe {
            let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
        }
    }
    #[inline(always)]
    unsafe fn load16(p: *const half::bf16) -> [__m256; 2] {
        unsafe {
            let v = _mm256_loadu_si256(p.cast());
            [
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v)),
                _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(-65536))),
            ]
        }
    }
    fn get(self) -> f32 {
        self.to_f32()
    }
}

/// One token (decode, the LM head): one row at a time, so that the weights are read as a
/// single sequential stream, 32 weights per step on four accumulators, prefetched as the
/// AVX-512 `gemv` is, by the [`super::StreamHint`] in force (none at all measured best before
/// the ternary streams went non-temporal). Against the 4-row tiles with a prefetch per
/// load that decode used before, at one thread with `tern bench --isa avx2 -p 128` on Zen 4:
/// the f16 head of the 700M shape went from 0.55 to 0.39 of a plain stream of the step's
/// weight bytes (decode roofline 0.55–0.56 → 0.61–0.62), and 2B4T (bf16 head) from a decode
/// roofline of 0.59 to 0.75.
#[inline(always)]
unsafe fn gemv<W: Wide>(w: &[W], k: usize, x: &[f32], out: &mut [f32]) {
    let nta = super::nta(true);
    let full = k - k % 32;
    // The activations of the full 32-weight steps in the lane order of `load16` (for bf16: a
    // copy, each sixteen as the even ones then the odd ones).
    let mut paired: Vec<f32>;
    let xp = if W::EVEN_ODD {
        paired = x.to_vec();
        for (dst, c) in paired[..full].chunks_exact_mut(16).zip(x.chunks_exact(16)) {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = c[(2 * i) % 16 + i / 8];
            }
        }
        paired.as_ptr()
    } else {
        x.as_ptr()
    };
    unsafe {
        for (row, o) in w.chunks_exact(k).zip(out.iter_mut()) {
            let p = row.as_ptr();
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut c = 0;
            while c < full {
                let ahead = p.add(c).cast::<i8>().wrapping_add(PREFETCH);
                prefetch_stream_raw(ahead, 32 * std::mem::size_of::<W>(), nta);
                for h in 0..2 {
                    let wv = W::load16(p.add(c + 16 * h));
                    for (j, wv) in wv.into_iter().enumerate() {
                        let xv = _mm256_loadu_ps(xp.add(c + 16 * h + 8 * j));
                        acc[2 * h + j] = _mm256_fmadd_ps(wv, xv, acc[2 * h + j]);
                    }
                }
                c += 32;
            }
            while c + 8 <= k {
                acc[0] = _mm256_fmadd_ps(W::load8(p.add(c)), _mm256_loadu_ps(xp.add(c)), acc[0]);
                c += 8;
            }
            let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
            let mut s = hsum_ps(s);
            for (wc, xc) in row[c..].iter().zip(&x[c..]) {
                s = wc.get().mul_add(*xc, s);
            }
            *o = s;
        }
    }
}

/// Rows `r0 .. r0 + R` × tokens `i0 .. i0 + NB`.
#[inline(always)]
unsafe fn f32_tile<const R: usize, const NB: usize>(
    w: &DenseWeights<'_>,
    r0: usize,
    i0: usize,
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    assert!((r0 + R) * k <= w.len() && (i0 + NB) * k <= xs.len());
    let whole = k / 8 * 8;
    unsafe {
        let x0 = xs.as_ptr().add(i0 * k);
        let mut acc = [[_mm256_setzero_ps(); NB]; R];
        for c in (0..whole).step_by(8) {
            let mut wv = [_mm256_setzero_ps(); R];
            for (i, wv) in wv.iter_mut().enumerate() {
                *wv = load_w(w, (r0 + i) * k + c);
            }
            for t in 0..NB {
                let xv = _mm256_loadu_ps(x0.add(t * k + c));
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    acc[t] = _mm256_fmadd_ps(*wv, xv, acc[t]);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (t, acc) in acc.iter().enumerate() {
                let x = &xs[(i0 + t) * k..(i0 + t + 1) * k];
                let mut s = hsum_ps(*acc);
                for (c, &x) in x.iter().enumerate().skip(whole) {
                    s = weight(w, (r0 + i) * k + c).mul_add(x, s);
                }
                out[(r0 + i) * n + i0 + t] = s;
            }
        }
    }
}

/// The sum of the eight f32 lanes.
#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// Dense int8: 16-bit products by `vpmaddwd`, up to `MAX_NB` tokens per weight register.
///
/// # Safety
/// The CPU runs AVX2; lengths as checked by `kernels::dense_gemm_i8`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dense_gemm_i8(w: &[i8], k: usize, xs: &[i8], n: usize, out: &mut [i32]) {
    let kp = k.next_multiple_of(16);
    let mut x16 = vec![0i16; n * kp];
    for (dst, x) in x16.chunks_exact_mut(kp).zip(xs.chunks_exact(k)) {
        for (d, &v) in dst.iter_mut().zip(x) {
            *d = v as i16;
        }
    }
    assert_eq!(out.len(), w.len() / k * n);
    let mut i0 = 0;
    while i0 < n {
        let nb = (n - i0).min(MAX_NB);
        unsafe {
            match nb {
                4 => dense_i8_block::<4>(i0, w, k, kp, &x16, n, out),
                3 => dense_i8_block::<3>(i0, w, k, kp, &x16, n, out),
                2 => dense_i8_block::<2>(i0, w, k, kp, &x16, n, out),
                _ => dense_i8_block::<1>(i0, w, k, kp, &x16, n, out),
            }
        }
        i0 += nb;
    }
}

#[inline(always)]
unsafe fn dense_i8_block<const NB: usize>(
    i0: usize,
    w: &[i8],
    k: usize,
    kp: usize,
    x16: &[i16],
    n: usize,
    out: &mut [i32],
) {
    let nta = super::nta(n == 1);
    assert!(x16.len() >= (i0 + NB) * kp);
    unsafe {
        let x0 = x16.as_ptr().add(i0 * kp);
        for (row, o) in w.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
            let mut acc = [_mm256_setzero_si256(); NB];
            let whole = k / 16 * 16;
            for c in (0..whole).step_by(16) {
                let p = row.as_ptr().add(c);
                if c % 64 == 0 {
                    prefetch_ahead(p.cast(), nta);
                }
                let wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.cast()));
                for (t, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_si256(x0.add(t * kp + c).cast());
                    *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(wv, xv));
                }
            }
            for (t, acc) in acc.iter().enumerate() {
                let x = &x16[(i0 + t) * kp..(i0 + t) * kp + k];
                let tail: i32 = row[whole..]
                    .iter()
                    .zip(&x[whole..])
                    .map(|(&a, &b)| a as i32 * b as i32)
                    .sum();
                o[i0 + t] = hsum_epi32(*acc) + tail;
            }
        }
    }
}
