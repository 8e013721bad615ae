//! AVX-512 attention of a block of queries against one KV head, for head widths that are a
//! whole number of 16-lane registers (64, 96, 128, ...; others take the generic body), and
//! the per-token int8 activation quantizer.
//!
//! * **Scores**: a key block is `[hd, 16]` (dimension-major), so one register holds dimension
//!   `d` of sixteen keys, widened straight from the cache and multiplied by the broadcast query
//!   value: queries go four at a time, each in its own register; a lone query (decode without
//!   GQA) splits the dimensions over four registers instead, so that no chain of `hd`
//!   dependent multiply-adds forms.
//! * **Values**: each value row is widened once per pass and feeds every query of the pass;
//!   the outputs stay in registers for the whole pass (`Q` queries × `C` registers of 16).
//! * Each head's keys and values are prefetched into L2 `KV_AHEAD` bytes ahead (and the next
//!   head's first `KV_AHEAD` bytes of keys by the caller): they are short streams that the weight
//!   stream of the previous layer has evicted to DRAM. Into L2 rather than L1 (which has too
//!   few miss buffers for a stream of DRAM reads), and with the next head's start: on the 700M
//!   shape at one thread, attention fell from 0.17 to 0.11 of the time a plain stream of the
//!   step's weight bytes takes (8 prompt tokens, 200 generated).
//! * A phase ahead as well: a key block's value rows are requested while its scores are
//!   computed, and the next head's keys while this head's values are read ([`Pass::next_k`]).
//! * The softmax numerators are vectorized here ([`softmax_numerators`]); the compiler left
//!   the shared scalar ones scalar, a third of the kernel's time in cache.
//! * Both together, on the 700M shape at one thread with 64 prompt tokens and 200 generated:
//!   attention went from 0.18–0.21 to 0.14–0.15 of a plain stream of the step's weight bytes,
//!   and `tern bench -p 128 -n 64`'s decode roofline from 0.71 to 0.73–0.75.

use std::arch::x86_64::*;

use super::{
    Block, EXP_FLOOR, EXP_LN2_HI, EXP_LN2_LO, EXP_POLY, EXP_ROUND, KEY_BLOCK, KV_AHEAD, KvElem,
    LANES, MAX_QUERIES, prefetch_l2,
};

/// Queries `j0 .. j0 + 4`, the missing ones (past `m`) replaced by the last: they are computed
/// but never stored.
#[inline(always)]
fn quad(j0: usize, m: usize) -> [usize; 4] {
    [0, 1, 2, 3].map(|u| (j0 + u).min(m - 1))
}

/// Attention of one [`Block`] (`lens.len()` queries, `q` `[m, hd]`, against one KV head), as
/// `super::block_body` computes it. Returns `false` (and does nothing) when the head width is
/// not one this kernel handles.
///
/// # Safety
/// The CPU runs AVX-512F; `k` holds `ceil(max lens / 16)` key blocks and `v` `max lens` rows.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn block<T: KvElem>(b: Block<'_, T>, out: &mut [f32]) -> bool {
    let hd = b.q.len() / b.lens.len().max(1);
    unsafe {
        match hd {
            64 => run::<T, 4>(b, out),
            80 => run::<T, 5>(b, out),
            96 => run::<T, 6>(b, out),
            128 => run::<T, 8>(b, out),
            _ => return false,
        }
    }
    true
}

/// [`block`] for `hd = 16 · C`.
#[inline(always)]
unsafe fn run<T: KvElem, const C: usize>(b: Block<'_, T>, out: &mut [f32]) {
    let Block {
        q,
        lens,
        k,
        v,
        k_scale,
        v_scale,
        next_k,
        scale,
    } = b;
    let (m, hd) = (lens.len(), 16 * C);
    let longest = lens.iter().copied().max().unwrap_or(0);
    let blocks = longest.div_ceil(KEY_BLOCK);
    assert!(
        m <= MAX_QUERIES
            && q.len() == m * hd
            && out.len() == q.len()
            && k.len() >= blocks * KEY_BLOCK * hd
            && v.len() >= longest * hd
            && (k_scale.is_empty() || k_scale.len() >= longest)
            && (v_scale.is_empty() || v_scale.len() >= longest),
        "attention block shapes"
    );
    let size = std::mem::size_of::<T>();
    let (kb, ahead) = (KEY_BLOCK * hd, KV_AHEAD / size);
    // Softmax weights, `[m, longest]`, zero past each query's length.
    let mut p = vec![0f32; m * longest];
    unsafe {
        prefetch_l2(&k[..(blocks * kb).min(ahead)]);
        for b in 0..blocks {
            let kp = k.as_ptr().add(b * kb);
            let at = b * kb + ahead;
            if at < k.len() {
                prefetch_l2(&k[at..(at + kb).min(k.len())]);
            }
            // This block's value rows, a whole phase before they are read.
            let (r0, r1) = (b * KEY_BLOCK, ((b + 1) * KEY_BLOCK).min(longest));
            prefetch_l2(&v[r0 * hd..r1 * hd]);
            let t0 = b * KEY_BLOCK;
            // The keys' row scales of this block (an int8 cache), multiplied after `scale`.
            let row_scales = (!k_scale.is_empty()).then(|| {
                let live = ((1u32 << (longest - t0).min(KEY_BLOCK)) - 1) as u16;
                _mm512_maskz_loadu_ps(live, k_scale.as_ptr().add(t0))
            });
            let mut store = |j: usize, s: __m512| {
                let live = lens[j].saturating_sub(t0).min(KEY_BLOCK);
                let dst = p.as_mut_ptr().add(j * longest + t0);
                let s = match row_scales {
                    Some(r) => _mm512_mul_ps(s, r),
                    None => s,
                };
                _mm512_mask_storeu_ps(dst, ((1u32 << live) - 1) as u16, s);
            };
            if m == 1 {
                let mut a = [_mm512_setzero_ps(); 4];
                for d in (0..hd).step_by(4) {
                    for (u, a) in a.iter_mut().enumerate() {
                        let kd = T::load16(kp.add((d + u) * KEY_BLOCK));
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(q[d + u]), kd, *a);
                    }
                }
                let s = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
                store(0, _mm512_mul_ps(s, _mm512_set1_ps(scale)));
                continue;
            }
            for j0 in (0..m).step_by(4) {
                let js = quad(j0, m);
                let mut a = [_mm512_setzero_ps(); 4];
                for d in 0..hd {
                    let kd = T::load16(kp.add(d * KEY_BLOCK));
                    for (a, &j) in a.iter_mut().zip(&js) {
                        *a = _mm512_fmadd_ps(_mm512_set1_ps(q[j * hd + d]), kd, *a);
                    }
                }
                for (u, a) in a.iter().enumerate().take(m - j0) {
                    store(j0 + u, _mm512_mul_ps(*a, _mm512_set1_ps(scale)));
                }
            }
        }
        for (j, &len) in lens.iter().enumerate() {
            let row = &mut p[j * longest..j * longest + len];
            let inv = 1.0 / softmax_numerators(row);
            for w in row.iter_mut() {
                *w *= inv;
            }
            // The values' row scales (an int8 cache) folded into the weights.
            for (w, s) in row.iter_mut().zip(v_scale) {
                *w *= s;
            }
        }
        if m == 1 {
            let pass = Pass {
                p: &p,
                longest,
                js: [0; 4],
                v,
                next_k,
            };
            values::<T, C, 1>(pass, out);
        } else {
            for j0 in (0..m).step_by(4) {
                let js = quad(j0, m);
                let mut o = [0f32; 4 * 128];
                // The next head's keys are prefetched by the first pass only.
                let next_k = if j0 == 0 { next_k } else { &[] };
                let pass = Pass {
                    p: &p,
                    longest,
                    js,
                    v,
                    next_k,
                };
                if C <= 4 {
                    values::<T, C, 4>(pass, &mut o[..4 * hd]);
                } else {
                    // Two passes of half the registers each: 4 × 8 outputs would not fit.
                    values_half::<T, C>(pass, &mut o[..4 * hd]);
                }
                for u in 0..(m - j0).min(4) {
                    out[(j0 + u) * hd..(j0 + u + 1) * hd].copy_from_slice(&o[u * hd..(u + 1) * hd]);
                }
            }
        }
    }
}

/// The inputs of a pass over a head's values: the softmax weights `p` (`[m, longest]`), the
/// queries `js` of the pass, the values `v` (`[longest, hd]`), and the next head's keys to
/// prefetch meanwhile (empty for none).
#[derive(Clone, Copy)]
struct Pass<'a, T> {
    p: &'a [f32],
    longest: usize,
    js: [usize; 4],
    v: &'a [T],
    next_k: &'a [T],
}

/// Two [`values`] passes over registers `0..C/2` and `C/2..C` of every row.
#[inline(always)]
unsafe fn values_half<T: KvElem, const C: usize>(pass: Pass<'_, T>, out: &mut [f32]) {
    // The next head's keys are prefetched by the first half's pass.
    let second = Pass {
        next_k: &[],
        ..pass
    };
    let hd = 16 * C;
    let (lo, hi) = (C / 2, C - C / 2);
    let mut a = vec![0f32; 4 * 16 * lo];
    let mut b = vec![0f32; 4 * 16 * hi];
    unsafe {
        match (lo, hi) {
            (4, 4) => {
                values_at::<T, 4, 4>(pass, hd, 0, &mut a);
                values_at::<T, 4, 4>(second, hd, 64, &mut b);
            }
            (3, 3) => {
                values_at::<T, 3, 4>(pass, hd, 0, &mut a);
                values_at::<T, 3, 4>(second, hd, 48, &mut b);
            }
            (2, 3) => {
                values_at::<T, 2, 4>(pass, hd, 0, &mut a);
                values_at::<T, 3, 4>(second, hd, 32, &mut b);
            }
            _ => unreachable!("C is 5, 6 or 8 here"),
        }
    }
    for u in 0..4 {
        out[u * hd..u * hd + 16 * lo].copy_from_slice(&a[u * 16 * lo..(u + 1) * 16 * lo]);
        out[u * hd + 16 * lo..(u + 1) * hd].copy_from_slice(&b[u * 16 * hi..(u + 1) * 16 * hi]);
    }
}

/// `out[u] = Σ_t p[js[u], t] · v[t]` for the `Q` queries `js[..Q]` (`out` is `[Q, 16 · C]`).
#[inline(always)]
unsafe fn values<T: KvElem, const C: usize, const Q: usize>(pass: Pass<'_, T>, out: &mut [f32]) {
    unsafe { values_at::<T, C, Q>(pass, 16 * C, 0, out) }
}

/// [`values`] over the `C` registers of each row from dimension `d0` (rows `hd` wide).
#[inline(always)]
unsafe fn values_at<T: KvElem, const C: usize, const Q: usize>(
    pass: Pass<'_, T>,
    hd: usize,
    d0: usize,
    out: &mut [f32],
) {
    let Pass {
        p,
        longest,
        js,
        v,
        next_k,
    } = pass;
    assert!(out.len() >= Q * 16 * C && d0 + 16 * C <= hd && v.len() >= longest * hd);
    assert!(js[..Q].iter().all(|&j| (j + 1) * longest <= p.len()));
    let size = std::mem::size_of::<T>();
    let ahead = KV_AHEAD / size / hd;
    unsafe {
        let vp = v.as_ptr();
        if d0 == 0 {
            prefetch_l2(&v[..(ahead * hd).min(longest * hd)]);
        }
        let mut acc = [[_mm512_setzero_ps(); C]; Q];
        for t in 0..longest {
            if d0 == 0 && t + ahead < longest {
                prefetch_l2(&v[(t + ahead) * hd..(t + ahead + 1) * hd]);
            }
            if (t + 1) * hd <= next_k.len() {
                prefetch_l2(&next_k[t * hd..(t + 1) * hd]);
            }
            let row = vp.add(t * hd + d0);
            let mut w = [_mm512_setzero_ps(); Q];
            for (w, &j) in w.iter_mut().zip(&js) {
                *w = _mm512_set1_ps(*p.get_unchecked(j * longest + t));
            }
            for c in 0..C {
                let x = T::load16(row.add(16 * c));
                for (acc, w) in acc.iter_mut().zip(&w) {
                    acc[c] = _mm512_fmadd_ps(*w, x, acc[c]);
                }
            }
        }
        for (u, acc) in acc.iter().enumerate() {
            for (c, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(out.as_mut_ptr().add(u * 16 * C + 16 * c), *a);
            }
        }
    }
}

/// `e^x` for `x <= 0` on sixteen lanes: `super::exp_le0`'s operations in its order (no fused
/// multiply-adds), so every lane equals it bit for bit.
#[inline(always)]
unsafe fn exp_le0(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    let (mul, add, sub) = (_mm512_mul_ps, _mm512_add_ps, _mm512_sub_ps);
    unsafe {
        let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, c(EXP_FLOOR));
        // `maxps` returns its second operand when either is NaN, as `f32::max(NaN, floor)` does.
        let x = _mm512_max_ps(x, c(EXP_FLOOR));
        let n = sub(
            add(mul(x, c(std::f32::consts::LOG2_E)), c(EXP_ROUND)),
            c(EXP_ROUND),
        );
        let r = sub(sub(x, mul(n, c(EXP_LN2_HI))), mul(n, c(EXP_LN2_LO)));
        let mut p = c(EXP_POLY[0]);
        for k in &EXP_POLY[1..] {
            p = add(mul(p, r), c(*k));
        }
        let e = add(add(mul(mul(p, r), r), r), c(1.0));
        // `n` is a whole number in [-126, 0] here: the conversion is exact.
        let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        ));
        _mm512_maskz_mul_ps(!under, e, _mm512_castsi512_ps(bits))
    }
}

/// `super::softmax_numerators` on sixteen lanes, bit for bit: the same per-lane partial sums,
/// added in the same order (the compiler leaves the scalar one unvectorized, for the NaN rules
/// of `f32::max` and the saturating cast in `exp_le0`).
#[inline(always)]
pub(super) unsafe fn softmax_numerators(s: &mut [f32]) -> f32 {
    let n = s.len();
    let full = n - n % LANES;
    let tail = ((1u32 << (n - full)) - 1) as u16;
    let p = s.as_mut_ptr();
    unsafe {
        let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(LANES) {
            // A NaN lane is skipped, as by `f32::max`.
            max = _mm512_max_ps(_mm512_loadu_ps(p.add(i)), max);
        }
        max = _mm512_mask_max_ps(max, tail, _mm512_maskz_loadu_ps(tail, p.add(full)), max);
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max));
        let mut acc = _mm512_setzero_ps();
        for i in (0..full).step_by(LANES) {
            let e = exp_le0(_mm512_sub_ps(_mm512_loadu_ps(p.add(i)), max));
            _mm512_storeu_ps(p.add(i), e);
            acc = _mm512_add_ps(acc, e);
        }
        let mut lanes = [0f32; LANES];
        _mm512_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut sum = lanes.iter().fold(0f32, |s, &v| s + v);
        let e = exp_le0(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, p.add(full)), max));
        _mm512_mask_storeu_ps(p.add(full), tail, e);
        for v in &s[full..] {
            sum += *v;
        }
        sum
    }
}

/// BitNet's per-token int8 quantizer, exactly as `super::quantize_body` computes it (which the
/// compiler does not vectorize: its `max` and saturating casts have NaN rules of their own).
/// NaN lanes are skipped by the maximum and coded 0, as `f32::max` and `as i8` do.
///
/// # Safety
/// The CPU runs AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    let n = x.len().min(out.len());
    let tail = |at: usize| -> u16 { (((1u32 << (n - at).min(16)) - 1) & 0xffff) as u16 };
    unsafe {
        let abs_mask = _mm512_set1_epi32(0x7fff_ffff);
        let mut absmax = _mm512_setzero_ps();
        for at in (0..n).step_by(16) {
            let v = _mm512_maskz_loadu_ps(tail(at), x.as_ptr().add(at));
            let a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask));
            // `maxps` returns its second operand when either is NaN: a NaN lane is skipped.
            absmax = _mm512_max_ps(a, absmax);
        }
        let absmax = _mm512_reduce_max_ps(absmax);
        let x_scale = 127.0 / absmax.max(tern_pack::quant::ABSMAX_EPS);
        let (scale, lo, hi) = (
            _mm512_set1_ps(x_scale),
            _mm512_set1_ps(-128.0),
            _mm512_set1_ps(127.0),
        );
        let mut sum = _mm512_setzero_si512();
        for at in (0..n).step_by(16) {
            let m = tail(at);
            let v = _mm512_maskz_loadu_ps(m, x.as_ptr().add(at));
            let r = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(v, scale),
            );
            let ordered = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(r, r);
            let c = _mm512_maskz_cvtps_epi32(ordered, _mm512_min_ps(_mm512_max_ps(r, lo), hi));
            sum = _mm512_add_epi32(sum, c);
            _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().add(at).cast(), m, c);
        }
        (x_scale, _mm512_reduce_add_epi32(sum))
    }
}
