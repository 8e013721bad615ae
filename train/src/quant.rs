//! Fake quantizers with straight-through gradients: the arithmetic of `tern_pack::quant`,
//! written in Burn tensors so that training sees the function the engines serve.
//!
//! * Weights: ternary absmean, one scale per tensor or per block of rows ("shard"):
//!   `s = 1 / max(mean|W|, 1e-5)`, `Wq = clamp(round(W·s), -1, 1) / s` (round half to even).
//! * Activations: int8 absmax per token (row): `k = 127 / max(max|x|, 1e-5)`,
//!   `xq = clamp(round(x·k), -128, 127) / k`.
//!
//! Both return `v + λ·(q(v) − v).detach()`: the forward value is `q(v)` at `λ = 1` (and blends
//! latent and quantized values during a warm-up), while the gradient is the identity — the
//! straight-through estimator. The golden values of `scripts/make_ste_golden.py` pin this down.

use burn::tensor::Tensor;

/// The smallest absmean / absmax the quantizers divide by (as in `tern_pack::quant`).
pub const EPS: f64 = 1e-5;

/// Ternary absmean fake-quantization of a `[rows, cols]` weight with `shards` row blocks.
///
/// # Panics
/// If `shards` does not divide `rows` (the model spec guarantees it).
pub fn fake_ternary(w: Tensor<2>, shards: usize, lambda: f64) -> Tensor<2> {
    let [rows, cols] = w.dims();
    assert!(shards > 0 && rows % shards == 0, "shards must divide rows");
    let blocks = w.clone().reshape([shards, rows / shards * cols]);
    let mean = blocks.clone().abs().mean_dim(1).clamp_min(EPS);
    let s = mean.recip();
    let q = (blocks * s.clone()).round().clamp(-1.0, 1.0) / s;
    let q = q.reshape([rows, cols]);
    blend(w, q, lambda)
}

/// Int8 absmax fake-quantization of activations `[tokens, features]`, per token.
pub fn fake_int8(x: Tensor<2>, lambda: f64) -> Tensor<2> {
    let absmax = x.clone().abs().max_dim(1).clamp_min(EPS);
    // `127 / absmax` as one division, as `tern_pack::quant::quantize_activations_i8` does.
    let k = absmax.ones_like().mul_scalar(127.0) / absmax;
    let q = (x.clone() * k.clone()).round().clamp(-128.0, 127.0) / k;
    blend(x, q, lambda)
}

/// `v + λ·(q − v).detach()`.
fn blend(v: Tensor<2>, q: Tensor<2>, lambda: f64) -> Tensor<2> {
    let delta = (q - v.clone()).detach();
    if lambda == 1.0 {
        v + delta
    } else {
        v + delta.mul_scalar(lambda)
    }
}

/// The quantization warm-up: `λ` rises linearly from 0 to 1 over `warmup` steps (1 from the
/// start when `warmup` is 0).
pub fn warmup_lambda(step: u64, warmup: u64) -> f64 {
    if warmup == 0 {
        1.0
    } else {
        (step as f64 / warmup as f64).min(1.0)
    }
}
