//! AVX-512 for attention: the 16-lane vector of the shared kernel (`kernel.rs`) as one
//! register, the softmax numerators, and the per-token int8 activation quantizer.

use std::arch::x86_64::*;

use super::kernel::{self, Lanes};
use super::{Block, EXP_FLOOR, EXP_LN2_HI, EXP_LN2_LO, EXP_POLY, EXP_ROUND, KvElem, LANES};

/// One AVX-512 register.
#[derive(Clone, Copy)]
pub(super) struct Zmm(__m512);

/// The mask of the first `live` (at most 16) lanes.
#[inline(always)]
fn first(live: usize) -> u16 {
    ((1u32 << live) - 1) as u16
}

impl Lanes for Zmm {
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { Zmm(_mm512_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        unsafe { Zmm(_mm512_set1_ps(v)) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        unsafe { Zmm(_mm512_fmadd_ps(a.0, b.0, c.0)) }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        unsafe { Zmm(_mm512_mul_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        unsafe { Zmm(_mm512_add_ps(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn load<T: KvElem>(p: *const T) -> Self {
        Zmm(unsafe { T::load16(p) })
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, live: usize) -> Self {
        Zmm(unsafe { _mm512_maskz_loadu_ps(first(live), p) })
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        unsafe { _mm512_storeu_ps(p, v.0) }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: Self, live: usize) {
        unsafe { _mm512_mask_storeu_ps(p, first(live), v.0) }
    }
    #[inline(always)]
    unsafe fn softmax(s: &mut [f32]) -> f32 {
        unsafe { softmax_numerators(s) }
    }
    fn parts(c: usize, q: usize) -> &'static [usize] {
        // 32 registers: a lone query keeps a whole row (up to 8), four queries half a row
        // when 4 × 8 outputs would not fit.
        match (c, q) {
            (4, _) => &[4],
            (5, 1) => &[5],
            (6, 1) => &[6],
            (8, 1) => &[8],
            (5, _) => &[2, 3],
            (6, _) => &[3, 3],
            _ => &[4, 4],
        }
    }
}

/// The shared kernel on AVX-512 registers (see `kernel::block`).
///
/// # Safety
/// The CPU runs AVX-512F; `k` holds `ceil(max lens / 16)` key blocks and `v` `max lens` rows.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(super) unsafe fn block<T: KvElem>(b: Block<'_, T>, out: &mut [f32]) -> bool {
    unsafe { kernel::block::<Zmm, T>(b, out) }
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
