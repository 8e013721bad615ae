//! The AVX-512 ternary × int8 prefill: up to eight tokens share each decoded register, rows go
//! in pairs, and the sixteen sums of a pair × eight tokens leave in one register, either as
//! exact integers (`[rows, n]`, the kernels' common contract) or finished as the engine's
//! outputs ([`Scaled`]: scaled to floats, token-major, written into the layer's own output).

use std::arch::x86_64::*;

use super::avx512::{BLOCK, Dot, HINT, PREFETCH, Planes, load_block};
use super::layout::Arranged;

/// Most tokens sharing one decoded block.
const MAX_NB: usize = 8;

/// Where a prefill call's sums go. `r` counts rows of the call's `packed`, `i` its tokens; the
/// token sums are already subtracted (the values are `Σ_j t[r, j] · x[i, j]`).
pub(super) trait Sink {
    /// Rows `r, r + 1` × tokens `i0 .. i0 + 8`: lanes `0..8` are row `r`, lanes `8..16` row
    /// `r + 1`.
    unsafe fn pair8(&mut self, r: usize, i0: usize, v: __m512i);
    /// Row `r`, token `i`.
    unsafe fn one(&mut self, r: usize, i: usize, v: i32);
}

/// `out[r · n + i]`, exact.
pub(super) struct RowMajor<'o> {
    pub out: &'o mut [i32],
    pub n: usize,
}

impl Sink for RowMajor<'_> {
    #[inline(always)]
    unsafe fn pair8(&mut self, r: usize, i0: usize, v: __m512i) {
        let n = self.n;
        let (lo, hi) = (r * n + i0, (r + 1) * n + i0);
        unsafe {
            _mm256_storeu_si256(
                self.out[lo..lo + 8].as_mut_ptr().cast(),
                _mm512_castsi512_si256(v),
            );
            let v1 = _mm512_extracti64x4_epi64::<1>(v);
            _mm256_storeu_si256(self.out[hi..hi + 8].as_mut_ptr().cast(), v1);
        }
    }
    #[inline(always)]
    unsafe fn one(&mut self, r: usize, i: usize, v: i32) {
        self.out[r * self.n + i] = v;
    }
}

/// `out[i · ld + r] = v as f32 / (x_scales[i] · w_scales[r])`, the formula of
/// `TernaryLinear` (transformers' BitLinear), bit for bit: the product and the quotient are
/// single IEEE operations in both forms.
pub(super) struct Scaled<'s> {
    /// Token `i`'s row of the output starts at `out + i · ld`.
    pub out: *mut f32,
    pub ld: usize,
    pub x_scales: &'s [f32],
    pub w_scales: &'s [f32],
}

impl Sink for Scaled<'_> {
    #[inline(always)]
    unsafe fn pair8(&mut self, r: usize, i0: usize, v: __m512i) {
        let (xs, ws) = (&self.x_scales[i0..i0 + 8], &self.w_scales[r..r + 2]);
        unsafe {
            let x8 = _mm256_castps_pd(_mm256_loadu_ps(xs.as_ptr()));
            let x16 = _mm512_castpd_ps(_mm512_broadcast_f64x4(x8));
            let w16 = _mm512_mask_blend_ps(0xff00, _mm512_set1_ps(ws[0]), _mm512_set1_ps(ws[1]));
            let y = _mm512_div_ps(_mm512_cvtepi32_ps(v), _mm512_mul_ps(x16, w16));
            // Token `t`'s two rows side by side: 64-bit lane `t`.
            let idx = _mm512_set_epi32(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0);
            let z = _mm512_permutexvar_ps(idx, y);
            let quarters = [
                _mm512_castps512_ps128(z),
                _mm512_extractf32x4_ps::<1>(z),
                _mm512_extractf32x4_ps::<2>(z),
                _mm512_extractf32x4_ps::<3>(z),
            ];
            let at = |t: usize| self.out.add((i0 + t) * self.ld + r).cast::<f64>();
            for (q, v) in quarters.into_iter().enumerate() {
                _mm_storel_pd(at(2 * q), _mm_castps_pd(v));
                _mm_storeh_pd(at(2 * q + 1), _mm_castps_pd(v));
            }
        }
    }
    #[inline(always)]
    unsafe fn one(&mut self, r: usize, i: usize, v: i32) {
        let y = v as f32 / (self.x_scales[i] * self.w_scales[r]);
        unsafe { *self.out.add(i * self.ld + r) = y };
    }
}

/// Every row of `packed` against every token of `x` (`n > 1`), into `sink`.
///
/// # Safety
/// As `avx512::ternary_i8`; `sink` takes every `r < rows` and `i < n`.
#[inline(always)]
pub(super) unsafe fn gemm<D: Dot, P: Planes<T>, const T: usize, S: Sink>(
    pl: &P,
    x: Arranged<'_>,
    packed: &[u8],
    sink: &mut S,
) {
    let n = x.sums.len();
    assert_eq!((x.lay.lanes, x.lay.block_elems()), (2, BLOCK * T));
    assert_eq!(x.xp.len(), n * x.lay.token_elems());
    assert_eq!(packed.len() % x.lay.row_bytes, 0);
    let mut i0 = 0;
    while i0 < n {
        let nb = (n - i0).min(MAX_NB);
        let run = Tokens { x: &x, n, i0 };
        unsafe {
            match nb {
                8 => tokens::<D, P, T, 8, S>(pl, &run, packed, sink),
                7 => tokens::<D, P, T, 7, S>(pl, &run, packed, sink),
                6 => tokens::<D, P, T, 6, S>(pl, &run, packed, sink),
                5 => tokens::<D, P, T, 5, S>(pl, &run, packed, sink),
                4 => tokens::<D, P, T, 4, S>(pl, &run, packed, sink),
                3 => tokens::<D, P, T, 3, S>(pl, &run, packed, sink),
                2 => tokens::<D, P, T, 2, S>(pl, &run, packed, sink),
                _ => tokens::<D, P, T, 1, S>(pl, &run, packed, sink),
            }
        }
        i0 += nb;
    }
}

/// The tokens `i0 .. i0 + NB` of a prefill call.
struct Tokens<'a> {
    x: &'a Arranged<'a>,
    n: usize,
    i0: usize,
}

/// `NB` tokens against every row: each decoded plane feeds `NB` dot products, and rows go in
/// pairs so that each activation load feeds two (long rows overflow L1 with `NB` tokens).
#[inline(always)]
unsafe fn tokens<D: Dot, P: Planes<T>, const T: usize, const NB: usize, S: Sink>(
    pl: &P,
    run: &Tokens<'_>,
    packed: &[u8],
    sink: &mut S,
) {
    let (rb, i0, sums) = (run.x.lay.row_bytes, run.i0, run.x.sums);
    let mut pairs = packed.chunks_exact(2 * rb);
    unsafe {
        // Eight tokens' sums, for both rows of a pair.
        let sums8 = (NB == 8).then(|| {
            let s = _mm256_loadu_si256(sums[i0..i0 + 8].as_ptr().cast());
            _mm512_broadcast_i64x4(s)
        });
        for (pair, rows) in (&mut pairs).enumerate() {
            let acc = rows_acc::<D, P, T, NB, 2>(pl, run, [&rows[..rb], &rows[rb..]]);
            if let Some(sums8) = sums8 {
                // One tree of shuffles for all sixteen sums instead of a reduction each: 9 %
                // less time per 700M prefill at one thread, 8 % at two.
                let all = sum16(std::array::from_fn(|j| acc[j / 8][j % 8]));
                sink.pair8(2 * pair, i0, _mm512_sub_epi32(all, sums8));
                continue;
            }
            for (r, acc) in acc.iter().enumerate() {
                for (t, acc) in acc.iter().enumerate() {
                    let v = _mm512_reduce_add_epi32(*acc) - sums[i0 + t];
                    sink.one(2 * pair + r, i0 + t, v);
                }
            }
        }
        let row = pairs.remainder();
        if !row.is_empty() {
            let r = packed.len() / rb - 1;
            let [acc] = rows_acc::<D, P, T, NB, 1>(pl, run, [row]);
            for (t, acc) in acc.iter().enumerate() {
                sink.one(r, i0 + t, _mm512_reduce_add_epi32(*acc) - sums[i0 + t]);
            }
        }
    }
}

/// Lane `j` of the result is the sum of the sixteen lanes of `v[j]`: a tree of 15 adds and 30
/// shuffles, where sixteen separate reductions take about 130 instructions. Also the one-token
/// kernel's, over sixteen rows (`avx512::matvec`).
#[inline(always)]
pub(super) unsafe fn sum16(v: [__m512i; 16]) -> __m512i {
    unsafe {
        // Per 128-bit lane of the pair (a, b): [a0 + a2, b0 + b2, a1 + a3, b1 + b3].
        let l1: [__m512i; 8] = std::array::from_fn(|i| {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
        });
        // Per 128-bit lane: the lane's sum of each of four inputs.
        let l2: [__m512i; 4] = std::array::from_fn(|i| {
            let (c, d) = (l1[2 * i], l1[2 * i + 1]);
            _mm512_add_epi32(_mm512_unpacklo_epi64(c, d), _mm512_unpackhi_epi64(c, d))
        });
        // 128-bit lane `h` of a fold holds half `h % 2` of inputs `4 · (h / 2) ..` (+ 4).
        let fold = |e: __m512i, f: __m512i| {
            let even = _mm512_shuffle_i32x4::<0b10_00_10_00>(e, f);
            let odd = _mm512_shuffle_i32x4::<0b11_01_11_01>(e, f);
            _mm512_add_epi32(even, odd)
        };
        let (g, h) = (fold(l2[0], l2[1]), fold(l2[2], l2[3]));
        fold(g, h)
    }
}

/// `Σ d·x` accumulators of `R` rows × `NB` tokens.
#[inline(always)]
unsafe fn rows_acc<D: Dot, P: Planes<T>, const T: usize, const NB: usize, const R: usize>(
    pl: &P,
    run: &Tokens<'_>,
    rows: [&[u8]; R],
) -> [[__m512i; NB]; R] {
    let lay = run.x.lay;
    let (be, te) = (lay.block_elems(), lay.token_elems());
    assert!(run.i0 + NB <= run.n && run.x.xp.len() == run.n * te);
    unsafe {
        let x0 = run.x.xp.as_ptr().add(run.i0 * te);
        let mut acc = [[_mm512_setzero_si512(); NB]; R];
        for b in 0..lay.blocks {
            let mut d = [[_mm512_setzero_si512(); T]; R];
            for (d, row) in d.iter_mut().zip(rows) {
                _mm_prefetch::<HINT>(row.as_ptr().wrapping_add(b * BLOCK + PREFETCH).cast());
                *d = pl.planes(load_block(row, b, lay), false);
            }
            let x = x0.add(b * be);
            for p in 0..T {
                for t in 0..NB {
                    let xv = _mm512_loadu_si512(x.add(t * te + BLOCK * p).cast());
                    for (acc, d) in acc.iter_mut().zip(&d) {
                        acc[t] = D::dot(acc[t], d[p], xv);
                    }
                }
            }
        }
        acc
    }
}
