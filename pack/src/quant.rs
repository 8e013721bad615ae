//! The ternary weight quantizer and the int8 activation quantizer: the arithmetic every tern
//! implementation (Burn model, CPU engine, GPU path) agrees on.
//!
//! # Convention
//! A ternary tensor is stored as trits `t ∈ {-1, 0, 1}` and, per scale group, one f32
//! `weight_scale` `s` *by which the trits are divided*: `W ≈ t / s`. This is the convention of
//! BitNet b1.58 and of `transformers`' BitNet integration (`y = (t·x_q) / (s · x_scale)`), so a
//! Hugging Face packed checkpoint imports with no rounding at all.
//!
//! The quantizer is BitNet's `WeightQuant`: `s = 1 / max(mean|W|, 1e-5)`,
//! `t = clamp(round_half_even(W · s), -1, 1)`, with `mean|W|` accumulated in f64 and rounded once
//! to f32 (PyTorch's f32 reduction may differ from it by an ulp; the fixtures' script computes
//! the same f64 mean). TriLM-style models use one scale per *shard*: the rows
//! (output channels) split into `n` equal contiguous blocks.

/// The smallest absmean the quantizer divides by (BitNet's clamp).
pub const ABSMEAN_EPS: f32 = 1e-5;

/// The smallest absmax the activation quantizer divides by.
pub const ABSMAX_EPS: f32 = 1e-5;

/// How many scales a ternary tensor has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleGranularity {
    /// One scale for the whole tensor (BitNet).
    Tensor,
    /// One scale for each of `n` equal row blocks (TriLM/Spectra).
    Shards(usize),
}

impl ScaleGranularity {
    /// Number of scales for a tensor of `rows` rows.
    pub fn count(self) -> usize {
        match self {
            ScaleGranularity::Tensor => 1,
            ScaleGranularity::Shards(n) => n,
        }
    }
}

/// A weight that is not a finite number, found by the quantizer.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("value {value} at flat index {index} is not finite")]
pub struct NonFinite {
    /// Flat (row-major) index of the value.
    pub index: usize,
    /// The value itself (NaN or ±Inf).
    pub value: f32,
}

/// Trits and their scales, as produced by [`quantize_ternary`].
#[derive(Debug, Clone, PartialEq)]
pub struct Ternary {
    /// Row-major trits, one per weight.
    pub trits: Vec<i8>,
    /// One divisor per scale group (`W ≈ t / s`).
    pub scales: Vec<f32>,
}

/// Quantizes a row-major `[rows, cols]` latent matrix to ternary.
///
/// A shard whose values are already exactly `{-a, 0, a}` (a checkpoint written by
/// `tern pack --unpack`, say) keeps `t = sign(W)` and gets the `s` with `1/s == a` where one
/// exists, so pack → unpack → pack is lossless.
///
/// # Panics
/// If `w.len() != rows * cols` or the shard count does not divide `rows` (callers validate
/// shapes against the model spec first).
pub fn quantize_ternary(
    w: &[f32],
    rows: usize,
    cols: usize,
    granularity: ScaleGranularity,
) -> Result<Ternary, NonFinite> {
    assert_eq!(w.len(), rows * cols, "matrix length");
    let shards = granularity.count();
    assert!(
        shards > 0 && rows.is_multiple_of(shards),
        "shards must divide rows"
    );
    if let Some(index) = w.iter().position(|v| !v.is_finite()) {
        return Err(NonFinite {
            index,
            value: w[index],
        });
    }
    let shard_len = rows / shards * cols;
    let mut trits = vec![0i8; w.len()];
    let mut scales = Vec::with_capacity(shards);
    for (src, dst) in w
        .chunks(shard_len.max(1))
        .zip(trits.chunks_mut(shard_len.max(1)))
    {
        scales.push(quantize_shard(src, dst));
    }
    Ok(Ternary { trits, scales })
}

fn quantize_shard(w: &[f32], trits: &mut [i8]) -> f32 {
    if let Some(a) = exact_ternary_magnitude(w)
        && let Some(s) = reciprocal_of(a)
    {
        for (t, &v) in trits.iter_mut().zip(w) {
            *t = if v > 0.0 {
                1
            } else if v < 0.0 {
                -1
            } else {
                0
            };
        }
        return s;
    }
    let sum: f64 = w.iter().map(|v| v.abs() as f64).sum();
    let mean = ((sum / w.len().max(1) as f64) as f32).max(ABSMEAN_EPS);
    let s = 1.0f32 / mean;
    for (t, &v) in trits.iter_mut().zip(w) {
        *t = (v * s).round_ties_even().clamp(-1.0, 1.0) as i8;
    }
    s
}

/// `Some(a)` if every value is `-a`, `0` or `a` for one `a > 0`.
fn exact_ternary_magnitude(w: &[f32]) -> Option<f32> {
    let a = w.iter().map(|v| v.abs()).find(|&m| m > 0.0)?;
    w.iter().all(|&v| v == 0.0 || v.abs() == a).then_some(a)
}

/// An f32 `s` with `1 / s == a` exactly (searched a few ulps around `1 / a`), if any.
fn reciprocal_of(a: f32) -> Option<f32> {
    let guess = 1.0f32 / a;
    if !guess.is_normal() {
        return None;
    }
    let bits = guess.to_bits() as i64;
    (-4i64..=4)
        .map(|d| f32::from_bits((bits + d) as u32))
        .find(|&s| 1.0f32 / s == a)
}

/// The latent value of a trit under scale `s` (what `tern pack --unpack` writes).
#[inline]
pub fn dequantize(t: i8, s: f32) -> f32 {
    t as f32 / s
}

/// BitNet's per-token int8 activation quantizer: `x_scale = 127 / max(max|x|, 1e-5)`,
/// `q = clamp(round_half_even(x · x_scale), -128, 127)`. Returns `x_scale` (a multiplier:
/// `x ≈ q / x_scale`). Non-finite inputs give unspecified (but in-range) codes.
pub fn quantize_activations_i8(x: &[f32], out: &mut [i8]) -> f32 {
    assert_eq!(x.len(), out.len(), "activation length");
    let absmax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let x_scale = 127.0 / absmax.max(ABSMAX_EPS);
    for (q, &v) in out.iter_mut().zip(x) {
        *q = (v * x_scale).round_ties_even().clamp(-128.0, 127.0) as i8;
    }
    x_scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitnet_formula_on_a_small_matrix() {
        // mean|W| = (0.5 + 0.1 + 1.0 + 0.2 + 0.3 + 0.9) / 6 = 0.5, s = 2:
        // W·s = [1.0, -0.2, 2.0, -0.4, 0.6, -1.8] -> [1, 0, 1, 0, 1, -1].
        let w = [0.5, -0.1, 1.0, -0.2, 0.3, -0.9];
        let q = quantize_ternary(&w, 2, 3, ScaleGranularity::Tensor).unwrap();
        assert_eq!(q.trits, vec![1, 0, 1, 0, 1, -1]);
        assert_eq!(q.scales, vec![2.0]);
    }

    #[test]
    fn rounding_is_half_to_even() {
        // mean = 0.5 -> s = 2; 0.25·2 = 0.5 rounds to 0, not 1 (PyTorch's round).
        let w = [0.25, -0.25, 0.75, 1.0];
        let q = quantize_ternary(&w, 1, 4, ScaleGranularity::Tensor).unwrap();
        assert_eq!(q.trits, vec![0, 0, 1, 1]);
    }

    #[test]
    fn shards_get_their_own_scale() {
        let w = [1.0, -1.0, 0.0, 0.0, 4.0, 0.0, -2.0, 2.0];
        let q = quantize_ternary(&w, 4, 2, ScaleGranularity::Shards(2)).unwrap();
        // Shard 0 is exactly {-1, 0, 1}: s = 1. Shard 1: mean = 2, s = 0.5, W·s = [2, 0, -1, 1].
        assert_eq!(q.scales, vec![1.0, 0.5]);
        assert_eq!(q.trits, vec![1, -1, 0, 0, 1, 0, -1, 1]);
    }

    #[test]
    fn exact_ternary_input_is_kept_exactly() {
        let a = 0.037_f32;
        let w: Vec<f32> = [1, 0, -1, 1, 0, 0, -1, 1]
            .iter()
            .map(|&t| t as f32 * a)
            .collect();
        let q = quantize_ternary(&w, 2, 4, ScaleGranularity::Tensor).unwrap();
        assert_eq!(q.trits, vec![1, 0, -1, 1, 0, 0, -1, 1]);
        assert_eq!(dequantize(1, q.scales[0]), a);
    }

    #[test]
    fn non_finite_is_reported_with_its_index() {
        let w = [0.1, f32::NAN, 0.3, 0.4];
        let err = quantize_ternary(&w, 2, 2, ScaleGranularity::Tensor).unwrap_err();
        assert_eq!(err.index, 1);
    }

    #[test]
    fn all_zero_tensor_uses_the_eps_clamp() {
        let q = quantize_ternary(&[0.0; 4], 2, 2, ScaleGranularity::Tensor).unwrap();
        assert_eq!(q.trits, vec![0; 4]);
        assert_eq!(q.scales, vec![1.0 / ABSMEAN_EPS]);
    }

    #[test]
    fn activation_quantizer_matches_bitnet() {
        let x = [0.5, -1.0, 0.25, 0.003];
        let mut q = [0i8; 4];
        let s = quantize_activations_i8(&x, &mut q);
        assert_eq!(s, 127.0);
        // 63.5 rounds to 64 (even), 31.75 -> 32, 0.381 -> 0.
        assert_eq!(q, [64, -127, 32, 0]);
    }
}
