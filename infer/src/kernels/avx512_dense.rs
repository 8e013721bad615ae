//! AVX-512 dense kernels: int8 × int8 (the 8-bit LM head) and float weights × f32.
//!
//! * **Int8 with VNNI**: `vpdpbusd` multiplies unsigned by signed bytes, so activations are
//!   offset to `x + 128` (unsigned, once per call) and `Σ w·x = Σ w·(x + 128) − 128 · Σ w`, with
//!   `Σ w` from one more `vpdpbusd` by ones per weight register (shared by every token). Every
//!   partial sum stays below `255 · 128 · MAX_K < 2^31`: exact, −128 included.
//! * **Int8 without VNNI**: both operands widened to 16 bits, `vpmaddwd` (exact).
//! * **Float**: weights widened once per register (`vcvtph2ps` for f16, a shift for bf16) and
//!   reused by up to `MAX_NB` tokens; FMA with several accumulators.
//!
//! Row tails use masked loads (zeros past `k`); weights are prefetched ahead of use (the float
//! tiles prefetch the matching rows of the next tile, which beat a fixed distance by ~20 %).

use std::arch::x86_64::*;

use super::DenseWeights;
use super::avx512::{PREFETCH, prefetch_ahead};
use super::prefetch_stream_raw;

/// Most tokens sharing one weight register.
const MAX_NB: usize = 8;

/// Runs `f::<NB>(i0)` over `n` tokens in blocks of at most `MAX_NB`.
macro_rules! token_blocks {
    ($n:expr, $f:ident, $($arg:expr),*) => {{
        let mut i0 = 0;
        while i0 < $n {
            let nb = ($n - i0).min(MAX_NB);
            match nb {
                8 => $f::<8>(i0, $($arg),*),
                7 => $f::<7>(i0, $($arg),*),
                6 => $f::<6>(i0, $($arg),*),
                5 => $f::<5>(i0, $($arg),*),
                4 => $f::<4>(i0, $($arg),*),
                3 => $f::<3>(i0, $($arg),*),
                2 => $f::<2>(i0, $($arg),*),
                _ => $f::<1>(i0, $($arg),*),
            }
            i0 += nb;
        }
    }};
}

/// Mask of the first `len` (< 64) bytes or 16-bit / 32-bit lanes.
#[inline(always)]
fn first(len: usize) -> u64 {
    (1u64 << len) - 1
}

/// Dense int8 with VNNI.
///
/// # Safety
/// The CPU runs AVX-512 F/BW/VNNI; lengths as checked by `kernels::dense_gemm_i8`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn dense_gemm_i8_vnni(w: &[i8], k: usize, xs: &[i8], n: usize, out: &mut [i32]) {
    // Activations + 128 as unsigned bytes, each token padded with zeros to whole registers.
    let kp = k.next_multiple_of(64);
    let mut xu = vec![0u8; n * kp];
    for (dst, x) in xu.chunks_exact_mut(kp).zip(xs.chunks_exact(k)) {
        for (d, &v) in dst.iter_mut().zip(x) {
            *d = (v as u8) ^ 0x80;
        }
    }
    assert_eq!(w.len() % k, 0);
    assert_eq!(out.len(), w.len() / k * n);
    unsafe { token_blocks!(n, i8_vnni_block, w, k, kp, &xu, n, out) }
}

#[inline(always)]
unsafe fn i8_vnni_block<const NB: usize>(
    i0: usize,
    w: &[i8],
    k: usize,
    kp: usize,
    xu: &[u8],
    n: usize,
    out: &mut [i32],
) {
    let nta = super::nta(n == 1);
    assert!(xu.len() >= (i0 + NB) * kp);
    unsafe {
        let ones = _mm512_set1_epi8(1);
        let x0 = xu.as_ptr().add(i0 * kp);
        for (row, o) in w.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
            let mut acc = [_mm512_setzero_si512(); NB];
            let mut sw = _mm512_setzero_si512();
            for c in (0..k).step_by(64) {
                let p = row.as_ptr().add(c);
                prefetch_ahead(p.cast(), nta);
                let wv = if c + 64 <= k {
                    _mm512_loadu_si512(p.cast())
                } else {
                    _mm512_maskz_loadu_epi8(first(k - c), p)
                };
                sw = _mm512_dpbusd_epi32(sw, ones, wv);
                for (t, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm512_loadu_si512(x0.add(t * kp + c).cast());
                    *acc = _mm512_dpbusd_epi32(*acc, xv, wv);
                }
            }
            let offset = _mm512_reduce_add_epi32(sw).wrapping_mul(128);
            for (t, acc) in acc.iter().enumerate() {
                o[i0 + t] = _mm512_reduce_add_epi32(*acc).wrapping_sub(offset);
            }
        }
    }
}

/// Dense int8 without VNNI: 16-bit products.
///
/// # Safety
/// The CPU runs AVX-512 F/BW; lengths as checked by `kernels::dense_gemm_i8`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn dense_gemm_i8_bw(w: &[i8], k: usize, xs: &[i8], n: usize, out: &mut [i32]) {
    let kp = k.next_multiple_of(32);
    let mut x16 = vec![0i16; n * kp];
    for (dst, x) in x16.chunks_exact_mut(kp).zip(xs.chunks_exact(k)) {
        for (d, &v) in dst.iter_mut().zip(x) {
            *d = v as i16;
        }
    }
    assert_eq!(out.len(), w.len() / k * n);
    unsafe { token_blocks!(n, i8_bw_block, w, k, kp, &x16, n, out) }
}

#[inline(always)]
unsafe fn i8_bw_block<const NB: usize>(
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
            let mut acc = [_mm512_setzero_si512(); NB];
            for c in (0..k).step_by(32) {
                let p = row.as_ptr().add(c);
                prefetch_ahead(p.cast(), nta);
                let w8 = if c + 32 <= k {
                    _mm256_loadu_si256(p.cast())
                } else {
                    _mm256_maskz_loadu_epi8(first(k - c) as u32, p)
                };
                let wv = _mm512_cvtepi8_epi16(w8);
                for (t, acc) in acc.iter_mut().enumerate() {
                    let xv = _mm512_loadu_si512(x0.add(t * kp + c).cast());
                    *acc = _mm512_add_epi32(*acc, _mm512_madd_epi16(wv, xv));
                }
            }
            for (t, acc) in acc.iter().enumerate() {
                o[i0 + t] = _mm512_reduce_add_epi32(*acc);
            }
        }
    }
}

/// Sixteen weights from `w[at..]` (column `c` of a row), widened to f32 (zeros past `k`);
/// prefetches the same columns `ahead` elements on, the matching row of the next tile.
#[inline(always)]
unsafe fn load_w<W: Wide>(w: &[W], at: usize, c: usize, k: usize, ahead: usize) -> __m512 {
    unsafe {
        let m = if c + 16 <= k {
            0xffff
        } else {
            first(k - c) as u16
        };
        let p = w.as_ptr().add(at);
        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(ahead).cast());
        W::load16(p, m)
    }
}

/// Dense float weights × f32: tiles of up to 4 rows × 4 tokens, so that each widened weight
/// register feeds up to 4 FMAs and each activation register up to 4; one token takes [`gemv`].
///
/// # Safety
/// The CPU runs AVX-512 F/BW; lengths as checked by `kernels::dense_gemm_f32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,fma,f16c")]
pub(super) unsafe fn dense_gemm_f32(
    w: DenseWeights<'_>,
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    // SAFETY: as for this function.
    unsafe {
        match w {
            DenseWeights::F32(w) => gemm::<f32>(w, k, xs, n, out),
            DenseWeights::F16(w) => gemm::<half::f16>(w, k, xs, n, out),
            DenseWeights::Bf16(w) => gemm::<half::bf16>(w, k, xs, n, out),
        }
    }
}

/// [`dense_gemm_f32`] for one weight type.
#[inline(always)]
unsafe fn gemm<W: Wide>(w: &[W], k: usize, xs: &[f32], n: usize, out: &mut [f32]) {
    assert_eq!(xs.len(), n * k);
    let rows = w.len() / k;
    assert_eq!(out.len(), rows * n);
    if n == 1 {
        // SAFETY: shapes asserted above.
        return unsafe { gemv(w, k, xs, out) };
    }
    let mut r = 0;
    while r < rows {
        let nr = (rows - r).min(4);
        let mut i0 = 0;
        while i0 < n {
            let nb = (n - i0).min(4);
            unsafe {
                match (nr, nb) {
                    (4, 4) => f32_tile::<W, 4, 4>(w, r, i0, k, xs, n, out),
                    (4, 3) => f32_tile::<W, 4, 3>(w, r, i0, k, xs, n, out),
                    (4, 2) => f32_tile::<W, 4, 2>(w, r, i0, k, xs, n, out),
                    (4, _) => f32_tile::<W, 4, 1>(w, r, i0, k, xs, n, out),
                    (3, _) => f32_tile::<W, 3, 1>(w, r, i0, k, xs, n, out),
                    (2, _) => f32_tile::<W, 2, 1>(w, r, i0, k, xs, n, out),
                    _ => f32_tile::<W, 1, 1>(w, r, i0, k, xs, n, out),
                }
            }
            i0 += if nr == 4 { nb } else { 1 };
        }
        r += nr;
    }
}

/// Rows `r0 .. r0 + R` × tokens `i0 .. i0 + NB`.
#[inline(always)]
unsafe fn f32_tile<W: Wide, const R: usize, const NB: usize>(
    w: &[W],
    r0: usize,
    i0: usize,
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    assert!((r0 + R) * k <= w.len() && (i0 + NB) * k <= xs.len());
    unsafe {
        let x0 = xs.as_ptr().add(i0 * k);
        let mut acc = [[_mm512_setzero_ps(); NB]; R];
        for c in (0..k).step_by(16) {
            let m = if c + 16 <= k {
                0xffff
            } else {
                first(k - c) as u16
            };
            let mut wv = [_mm512_setzero_ps(); R];
            for (i, wv) in wv.iter_mut().enumerate() {
                *wv = load_w(w, (r0 + i) * k + c, c, k, R * k);
            }
            for t in 0..NB {
                let xv = _mm512_maskz_loadu_ps(m, x0.add(t * k + c));
                for (acc, wv) in acc.iter_mut().zip(&wv) {
                    acc[t] = _mm512_fmadd_ps(*wv, xv, acc[t]);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (t, acc) in acc.iter().enumerate() {
                out[(r0 + i) * n + i0 + t] = _mm512_reduce_add_ps(*acc);
            }
        }
    }
}

/// A float weight type, widened to f32 sixteen at a time.
trait Wide: Copy {
    /// Whether [`Wide::load32`] returns the even-indexed weights, then the odd-indexed ones
    /// (instead of the first sixteen, then the next): activations must be paired alike.
    const EVEN_ODD: bool = false;
    /// Sixteen weights from `p`, the lanes of `m` only (the others zero).
    unsafe fn load16(p: *const Self, m: u16) -> __m512;
    /// Thirty-two weights from `p` in two registers (see [`Wide::EVEN_ODD`]).
    #[inline(always)]
    unsafe fn load32(p: *const Self) -> [__m512; 2] {
        unsafe { [Self::load16(p, 0xffff), Self::load16(p.add(16), 0xffff)] }
    }
}

impl Wide for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32, m: u16) -> __m512 {
        unsafe { _mm512_maskz_loadu_ps(m, p) }
    }
}

impl Wide for half::f16 {
    #[inline(always)]
    unsafe fn load16(p: *const half::f16, m: u16) -> __m512 {
        unsafe { _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p.cast())) }
    }
}

impl Wide for half::bf16 {
    /// A bf16 is the top half of an f32: one 512-bit load holds 32 weights, the even ones
    /// widened by a shift, the odd ones by a mask. Measured on Zen 4 against zero-extending
    /// sixteen at a time: 50 vs 40 GB/s from L2, and the LM head of 2B4T (bf16, 657 MB) went
    /// from 0.72 to 0.90–0.94 of the read bandwidth of its own bytes.
    const EVEN_ODD: bool = true;
    #[inline(always)]
    unsafe fn load32(p: *const half::bf16) -> [__m512; 2] {
        unsafe {
            let v = _mm512_loadu_si512(p.cast());
            [
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)),
                _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(-65536))),
            ]
        }
    }
    #[inline(always)]
    unsafe fn load16(p: *const half::bf16, m: u16) -> __m512 {
        unsafe {
            let h = _mm256_maskz_loadu_epi16(m, p.cast());
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        }
    }
}

/// Where [`gemv`]'s paired bf16 activations start: this many bytes past a 64-byte boundary.
/// Measured on Zen 4 (2B4T, whose head is bf16, `tern bench -p 8 -n 24 --threads 1`, the
/// head's own GB/s; two `tern init` files whose head starts 32 and 16 bytes into a line, two
/// rounds each): 0 → 26.1, 25.6 and 26.3, 27.4 GB/s; 16 → 20.7, 20.9 and 22.3, 22.1; 32 and
/// 48 → 21.2–22.3 (the machine's plain stream of the step's weights: 27–31 GB/s). An earlier
/// series on the same machine kind found 16 the best (its head's share of a pass: 0 → 1.08,
/// 16 → 0.64, 32 → 1.01, 48 → 0.81) with loops aligned to 64 bytes as now; what moved the
/// optimum is not known. The f16 head reads the activations where they are (copied to any of
/// the four offsets, the 700M head's GB/s over the plain stream's moved by 4–7 %, within the
/// noise of one round).
const PAIRED_OFFSET: usize = 0;

/// One token (decode, the LM head): one row at a time, so the weights are read as a single
/// sequential stream (the hardware prefetchers' best case: several interleaved row streams
/// reached only 60–75 % of the rate), 64 weights per step on four accumulators, prefetched
/// `PREFETCH` ahead as the [`super::StreamHint`] in force says (on a core of its own,
/// non-temporally read 93 % of a plain stream's rate and into L2 78 %; on a shared core, 0.67
/// of the probe's rate against 1.11).
#[inline(always)]
unsafe fn gemv<W: Wide>(w: &[W], k: usize, x: &[f32], out: &mut [f32]) {
    let nta = super::nta(true);
    let full = k - k % 64;
    // The activations, those of the full 64-weight steps in the lane order of `load32` (for
    // bf16: a copy that starts `PAIRED_OFFSET` bytes past a cache line).
    let mut paired: Vec<f32>;
    let x = if W::EVEN_ODD {
        paired = vec![0f32; k + 32];
        let at = paired.as_ptr().align_offset(64) + PAIRED_OFFSET / 4;
        let dst = &mut paired[at..at + k];
        dst[full..].copy_from_slice(&x[full..]);
        for (dst, c) in dst.chunks_exact_mut(32).zip(x[..full].chunks_exact(32)) {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = c[(2 * i) % 32 + i / 16];
            }
        }
        paired[at..].as_ptr()
    } else {
        x.as_ptr()
    };
    unsafe {
        for (row, o) in w.chunks_exact(k).zip(out.iter_mut()) {
            let p = row.as_ptr();
            let mut acc = [_mm512_setzero_ps(); 4];
            let mut c = 0;
            while c < full {
                let ahead = p.add(c).cast::<i8>().wrapping_add(PREFETCH);
                prefetch_stream_raw(ahead, 64 * std::mem::size_of::<W>(), nta);
                for h in 0..2 {
                    let wv = W::load32(p.add(c + 32 * h));
                    for (j, wv) in wv.into_iter().enumerate() {
                        let xv = _mm512_loadu_ps(x.add(c + 32 * h + 16 * j));
                        acc[2 * h + j] = _mm512_fmadd_ps(wv, xv, acc[2 * h + j]);
                    }
                }
                c += 64;
            }
            while c < k {
                let m = if c + 16 <= k {
                    0xffff
                } else {
                    first(k - c) as u16
                };
                let xv = _mm512_maskz_loadu_ps(m, x.add(c));
                acc[0] = _mm512_fmadd_ps(W::load16(p.add(c), m), xv, acc[0]);
                c += 16;
            }
            let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
            *o = _mm512_reduce_add_ps(s);
        }
    }
}
