//! Causal grouped-query attention over the KV cache, and the per-token int8 activation
//! quantizer, with their small float loops compiled once generically and once more for AVX2 or
//! AVX-512 (the same Rust body under `#[target_feature]`, picked by the model's [`Isa`]).

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use tern_pack::spec::ModelSpec;

use crate::kernels::Isa;

/// Lanes of the independent accumulators of [`dot`] (enough for one AVX-512 register).
const LANES: usize = 16;

// The bodies below use index loops only: closures passed to iterator adapters are compiled as
// functions of their own, without the caller's `#[target_feature]`, and would not vectorize.

#[inline(always)]
fn dot_body(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let full = n - n % LANES;
    let mut acc = [0f32; LANES];
    let mut i = 0;
    while i < full {
        for j in 0..LANES {
            acc[j] += a[i + j] * b[i + j];
        }
        i += LANES;
    }
    let mut s = 0f32;
    for v in acc {
        s += v;
    }
    for j in full..n {
        s += a[j] * b[j];
    }
    s
}

#[inline(always)]
fn axpy_body(w: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    for j in 0..n {
        y[j] += w * x[j];
    }
}

/// An element type of the KV cache.
pub trait KvElem: Copy + Default + Send + Sync + 'static {
    /// Widens `src` into `dst` (same length), with the instructions of `isa`.
    fn widen(isa: Isa, src: &[Self], dst: &mut [f32]);
    /// Narrows `src` onto the end of `dst`.
    fn extend(dst: &mut Vec<Self>, src: &[f32]);
}

impl KvElem for f32 {
    #[inline(always)]
    fn widen(_: Isa, src: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    fn extend(dst: &mut Vec<f32>, src: &[f32]) {
        dst.extend_from_slice(src);
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
    fn extend(dst: &mut Vec<f16>, src: &[f32]) {
        let start = dst.len();
        dst.resize(start + src.len(), f16::ZERO);
        dst[start..].convert_from_f32_slice(src);
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

/// Scores, softmax and the weighted sum of values for one query head. `k`, `v` start at the
/// head's first element; row `t` is at `t · stride`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn head_body<T: KvElem>(
    isa: Isa,
    q: &[f32],
    k: &[T],
    v: &[T],
    stride: usize,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let hd = q.len();
    let mut row = vec![0f32; hd];
    let mut scores = vec![0f32; len];
    let mut max = f32::NEG_INFINITY;
    for t in 0..len {
        T::widen(isa, &k[t * stride..t * stride + hd], &mut row);
        let s = dot_body(q, &row) * scale;
        scores[t] = s;
        max = max.max(s);
    }
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    out.fill(0.0);
    for t in 0..len {
        T::widen(isa, &v[t * stride..t * stride + hd], &mut row);
        axpy_body(scores[t] / sum, &row, out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn head_avx2<T: KvElem>(
    isa: Isa,
    q: &[f32],
    k: &[T],
    v: &[T],
    stride: usize,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    head_body(isa, q, k, v, stride, len, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn head_avx512<T: KvElem>(
    isa: Isa,
    q: &[f32],
    k: &[T],
    v: &[T],
    stride: usize,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    head_body(isa, q, k, v, stride, len, scale, out)
}

#[allow(clippy::too_many_arguments)]
fn head<T: KvElem>(
    isa: Isa,
    q: &[f32],
    k: &[T],
    v: &[T],
    stride: usize,
    len: usize,
    scale: f32,
    out: &mut [f32],
) {
    let need = (len.max(1) - 1) * stride + q.len();
    assert!(
        need <= k.len() && need <= v.len() && q.len() == out.len(),
        "attention shapes"
    );
    match isa {
        // SAFETY: an `Isa` other than Generic is only constructed for CPUs that run it
        // (`Isa::available`), and the bodies are safe Rust.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe {
            head_avx512(isa, q, k, v, stride, len, scale, out)
        },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { head_avx2(isa, q, k, v, stride, len, scale, out) },
        _ => head_body(isa, q, k, v, stride, len, scale, out),
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

/// Causal grouped-query attention of `n` queries against the cache, in parallel over
/// (token, head). `q`, `out`: `[n, heads · hd]`; `k`, `v`: `[start + n, kv_heads · hd]`.
pub fn attention<T: KvElem>(isa: Isa, q: &[f32], k: &[T], v: &[T], out: &mut [f32], d: Dims) {
    let hd = d.head_dim;
    let kv_dim = d.kv_heads * hd;
    let group = d.heads / d.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd).enumerate().for_each(|(c, o)| {
        let (i, h) = (c / d.heads, c % d.heads);
        let off = (h / group) * hd;
        let len = d.start + i + 1;
        head(
            isa,
            &q[c * hd..(c + 1) * hd],
            &k[off..],
            &v[off..],
            kv_dim,
            len,
            scale,
            o,
        );
    });
}

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    /// Half precision: half the memory and half the bytes read per token (the default, as in
    /// llama.cpp).
    #[default]
    F16,
    /// Single precision (bit-for-bit agreement tests).
    F32,
}

impl KvDtype {
    /// Parses `f16` / `f32`.
    pub fn from_name(s: &str) -> Option<KvDtype> {
        match s {
            "f16" => Some(KvDtype::F16),
            "f32" => Some(KvDtype::F32),
            _ => None,
        }
    }

    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
        }
    }
}

enum KvData {
    F32(Vec<Vec<f32>>, Vec<Vec<f32>>),
    F16(Vec<Vec<f16>>, Vec<Vec<f16>>),
}

/// Keys and values of the tokens seen so far, per layer: `[tokens, kv_heads · head_dim]`.
pub struct KvCache {
    capacity: usize,
    len: usize,
    dtype: KvDtype,
    data: KvData,
}

impl KvCache {
    /// A cache for `capacity` tokens of `spec` (allocated as it fills).
    pub fn new(spec: &ModelSpec, capacity: usize, dtype: KvDtype) -> KvCache {
        let layers = spec.num_layers;
        let data = match dtype {
            KvDtype::F32 => KvData::F32(vec![Vec::new(); layers], vec![Vec::new(); layers]),
            KvDtype::F16 => KvData::F16(vec![Vec::new(); layers], vec![Vec::new(); layers]),
        };
        KvCache {
            capacity,
            len: 0,
            dtype,
            data,
        }
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of keys and values for `tokens` tokens of `spec`.
    pub fn bytes_for(spec: &ModelSpec, tokens: usize, dtype: KvDtype) -> usize {
        2 * spec.num_layers * tokens * spec.num_kv_heads * spec.head_dim * dtype.size()
    }

    /// Bytes held now.
    pub fn bytes(&self, spec: &ModelSpec) -> usize {
        KvCache::bytes_for(spec, self.len, self.dtype)
    }

    /// Forgets every token.
    pub fn clear(&mut self) {
        self.len = 0;
        match &mut self.data {
            KvData::F32(k, v) => k.iter_mut().chain(v.iter_mut()).for_each(Vec::clear),
            KvData::F16(k, v) => k.iter_mut().chain(v.iter_mut()).for_each(Vec::clear),
        }
    }

    /// Marks `n` more tokens as cached (after every layer appended them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Appends layer `l`'s keys and values of the new tokens, then attends the queries `q`
    /// (`[n, heads · hd]`) to everything cached, writing `out`.
    pub(crate) fn append_and_attend(
        &mut self,
        isa: Isa,
        l: usize,
        kv: (&[f32], &[f32]),
        q: &[f32],
        out: &mut [f32],
        d: Dims,
    ) {
        match &mut self.data {
            KvData::F32(k, v) => {
                f32::extend(&mut k[l], kv.0);
                f32::extend(&mut v[l], kv.1);
                attention(isa, q, &k[l], &v[l], out, d);
            }
            KvData::F16(k, v) => {
                f16::extend(&mut k[l], kv.0);
                f16::extend(&mut v[l], kv.1);
                attention(isa, q, &k[l], &v[l], out, d);
            }
        }
    }
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
fn quantize_avx512(x: &[f32], out: &mut [i8]) -> (f32, i32) {
    quantize_body(x, out)
}

/// BitNet's per-token int8 quantizer (exactly `tern_pack::quant::quantize_activations_i8`),
/// returning `(x_scale, Σ codes)`.
pub fn quantize_i8(isa: Isa, x: &[f32], out: &mut [i8]) -> (f32, i32) {
    assert_eq!(x.len(), out.len(), "activation length");
    match isa {
        // SAFETY: as in `head`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 | Isa::Avx512Vnni => unsafe { quantize_avx512(x, out) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { quantize_avx2(x, out) },
        _ => quantize_body(x, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_pack::init::SplitMix64;
    use tern_pack::quant::quantize_activations_i8;

    #[test]
    fn f16_widening_is_exact_for_every_value() {
        for h in 0..=u16::MAX {
            let (want, got) = (f16::from_bits(h).to_f32(), widen_f16(h));
            assert!(
                want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()),
                "{h:#06x}"
            );
        }
    }

    #[test]
    fn quantizer_equals_the_reference_on_every_isa() {
        let mut rng = SplitMix64::new(3);
        for k in [1, 7, 64, 1000, 2560] {
            let mut x = vec![0f32; k];
            rng.fill_normal(&mut x, 1.5);
            // Values exactly on rounding ties of the scale.
            x[0] = 3.0;
            let mut want = vec![0i8; k];
            let s = quantize_activations_i8(&x, &mut want);
            for isa in Isa::available() {
                let mut got = vec![0i8; k];
                let (gs, sum) = quantize_i8(isa, &x, &mut got);
                assert_eq!((gs, &got), (s, &want), "{isa:?} k={k}");
                assert_eq!(sum, want.iter().map(|&c| c as i32).sum::<i32>());
            }
        }
    }

    /// Float budget of attention outputs between instruction sets (summation order only).
    const ATTENTION_ABS_BUDGET: f32 = 1e-5;
    /// With an f16 cache (unit values: f16 keeps ~3 decimal digits).
    const F16_KV_ABS_BUDGET: f32 = 1e-2;

    #[test]
    fn attention_agrees_across_isas() {
        let mut rng = SplitMix64::new(5);
        let d = Dims {
            heads: 4,
            kv_heads: 2,
            head_dim: 40,
            start: 9,
        };
        let n = 3;
        let mut q = vec![0f32; n * 4 * 40];
        let mut k = vec![0f32; (9 + n) * 2 * 40];
        let mut v = k.clone();
        rng.fill_normal(&mut q, 1.0);
        rng.fill_normal(&mut k, 1.0);
        rng.fill_normal(&mut v, 1.0);
        let mut want = vec![0f32; q.len()];
        attention(Isa::Generic, &q, &k, &v, &mut want, d);
        let (mut k16, mut v16) = (Vec::new(), Vec::new());
        f16::extend(&mut k16, &k);
        f16::extend(&mut v16, &v);
        for isa in Isa::available() {
            let mut got = vec![0f32; q.len()];
            attention(isa, &q, &k, &v, &mut got, d);
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= ATTENTION_ABS_BUDGET, "{isa:?}: {err}");
            // f16 keys and values: rounding of the cache dominates.
            attention(isa, &q, &k16, &v16, &mut got, d);
            let err = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err <= F16_KV_ABS_BUDGET, "{isa:?} f16: {err}");
        }
    }
}
