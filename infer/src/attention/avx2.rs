//! AVX2 for attention: the 16-lane vector of the shared kernel (`kernel.rs`) as two
//! registers, and the softmax numerators (`super::softmax_numerators`) bit for bit: the
//! compiler leaves the scalar ones unvectorized (the NaN rules of `f32::max` and the
//! saturating cast in `exp_le0`).

use std::arch::x86_64::*;

use super::kernel::{self, Lanes};
use super::{Block, EXP_FLOOR, EXP_LN2_HI, EXP_LN2_LO, EXP_POLY, EXP_ROUND, KvElem, LANES};

/// Two AVX2 registers: lanes 0..8 and 8..16.
#[derive(Clone, Copy)]
pub(super) struct Ymm2([__m256; 2]);

impl Ymm2 {
    /// Per half, the integer mask of the lanes below `live` (all ones where written).
    #[inline(always)]
    unsafe fn first(live: usize) -> [__m256i; 2] {
        unsafe {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let live = live as i32;
            [
                _mm256_cmpgt_epi32(_mm256_set1_epi32(live), lane),
                _mm256_cmpgt_epi32(_mm256_set1_epi32(live - 8), lane),
            ]
        }
    }
}

impl Lanes for Ymm2 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { Ymm2([_mm256_setzero_ps(); 2]) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        unsafe { Ymm2([_mm256_set1_ps(v); 2]) }
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        unsafe {
            Ymm2([
                _mm256_fmadd_ps(a.0[0], b.0[0], c.0[0]),
                _mm256_fmadd_ps(a.0[1], b.0[1], c.0[1]),
            ])
        }
    }
    #[inline(always)]
    unsafe fn mul(a: Self, b: Self) -> Self {
        unsafe { Ymm2([_mm256_mul_ps(a.0[0], b.0[0]), _mm256_mul_ps(a.0[1], b.0[1])]) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        unsafe { Ymm2([_mm256_add_ps(a.0[0], b.0[0]), _mm256_add_ps(a.0[1], b.0[1])]) }
    }
    #[inline(always)]
    unsafe fn load<T: KvElem>(p: *const T) -> Self {
        unsafe { Ymm2([T::load8(p), T::load8(p.add(8))]) }
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, live: usize) -> Self {
        unsafe {
            let [m0, m1] = Self::first(live);
            Ymm2([_mm256_maskload_ps(p, m0), _mm256_maskload_ps(p.add(8), m1)])
        }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: Self) {
        unsafe {
            _mm256_storeu_ps(p, v.0[0]);
            _mm256_storeu_ps(p.add(8), v.0[1]);
        }
    }
    #[inline(always)]
    unsafe fn store_first(p: *mut f32, v: Self, live: usize) {
        unsafe {
            let [m0, m1] = Self::first(live);
            _mm256_maskstore_ps(p, m0, v.0[0]);
            _mm256_maskstore_ps(p.add(8), m1, v.0[1]);
        }
    }
    #[inline(always)]
    unsafe fn softmax(s: &mut [f32]) -> f32 {
        unsafe { softmax_numerators(s) }
    }
    fn parts(c: usize, q: usize) -> &'static [usize] {
        // 16 registers: a lone query keeps up to 6 vectors (12 registers) of a row, four
        // queries one vector each (8 registers, beside 4 weights and the row's vector).
        match (c, q) {
            (4, 1) => &[4],
            (5, 1) => &[5],
            (6, 1) => &[6],
            (8, 1) => &[4, 4],
            (4, _) => &[1; 4],
            (5, _) => &[1; 5],
            (6, _) => &[1; 6],
            _ => &[1; 8],
        }
    }
}

/// The shared kernel on pairs of AVX2 registers (see `kernel::block`).
///
/// # Safety
/// The CPU runs AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn block<T: KvElem>(b: Block<'_, T>, out: &mut [f32]) -> bool {
    unsafe { kernel::block::<Ymm2, T>(b, out) }
}

/// `e^x` for `x <= 0` on eight lanes: `super::exp_le0`'s operations in its order (no fused
/// multiply-adds), so every lane equals it bit for bit.
#[inline(always)]
unsafe fn exp_le0(x: __m256) -> __m256 {
    let c = _mm256_set1_ps;
    let (mul, add, sub) = (_mm256_mul_ps, _mm256_add_ps, _mm256_sub_ps);
    unsafe {
        let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x, c(EXP_FLOOR));
        // `maxps` returns its second operand when either is NaN, as `f32::max(NaN, floor)` does.
        let x = _mm256_max_ps(x, c(EXP_FLOOR));
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
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_andnot_ps(under, mul(e, _mm256_castsi256_ps(bits)))
    }
}

/// `super::softmax_numerators` on two registers of eight lanes: the same sixteen partial sums,
/// added in the same order; the tail past the last sixteen runs the scalar code itself.
///
/// # Safety
/// The CPU runs AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn softmax_numerators(s: &mut [f32]) -> f32 {
    let full = s.len() - s.len() % LANES;
    let p = s.as_mut_ptr();
    unsafe {
        let mut max = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
        for i in (0..full).step_by(LANES) {
            for (h, m) in max.iter_mut().enumerate() {
                // A NaN lane is skipped, as by `f32::max`.
                *m = _mm256_max_ps(_mm256_loadu_ps(p.add(i + 8 * h)), *m);
            }
        }
        let mut lanes = [0f32; LANES];
        _mm256_storeu_ps(lanes.as_mut_ptr(), max[0]);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), max[1]);
        let top = s[full..]
            .iter()
            .chain(&lanes)
            .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let top8 = _mm256_set1_ps(top);
        let mut acc = [_mm256_setzero_ps(); 2];
        for i in (0..full).step_by(LANES) {
            for (h, a) in acc.iter_mut().enumerate() {
                let at = p.add(i + 8 * h);
                let e = exp_le0(_mm256_sub_ps(_mm256_loadu_ps(at), top8));
                _mm256_storeu_ps(at, e);
                *a = _mm256_add_ps(*a, e);
            }
        }
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
        let mut sum = lanes.iter().fold(0f32, |s, &v| s + v);
        for v in &mut s[full..] {
            *v = super::exp_le0(*v - top);
            sum += *v;
        }
        sum
    }
}
