//! Randomly initialised checkpoints of any config (`tern init`), so that benchmarks and tests of
//! real shapes need no download.
//!
//! Values come from a seeded SplitMix64 stream per tensor (seeded by the run seed and the
//! tensor's name), so the same config and seed give the same bytes on every machine, and
//! tensors can be generated independently and streamed.
//! Linear weights and embeddings are N(0, `std`²) (Box–Muller); norms are 1; biases are 0.

use std::path::Path;

use crate::codec::Codec;
use crate::convert::{Destination, PackReport, Progress, WeightSource, pack_source, write_latent};
use crate::error::{Error, Result};
use crate::quant::{ScaleGranularity, Ternary, quantize_ternary};
use crate::safetensors::{Dtype, from_f32};
use crate::spec::{HfConfig, ModelSpec, TensorRole, TensorSpec};

/// Elements generated per chunk when streaming.
const CHUNK: usize = 1 << 20;

/// SplitMix64: small, fast, and identical everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Exactly uniform in `0..n` (Lemire's multiply-shift with rejection); `n > 0`. Integer
    /// only, so the same on every platform.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform in (0, 1].
    pub fn next_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Two independent standard normals.
    pub fn next_normal_pair(&mut self) -> (f64, f64) {
        let r = (-2.0 * self.next_unit().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.next_unit();
        (r * theta.cos(), r * theta.sin())
    }

    /// Fills `out` with N(0, std²) values.
    pub fn fill_normal(&mut self, out: &mut [f32], std: f32) {
        for pair in out.chunks_mut(2) {
            let (a, b) = self.next_normal_pair();
            pair[0] = a as f32 * std;
            if let Some(x) = pair.get_mut(1) {
                *x = b as f32 * std;
            }
        }
    }
}

/// FNV-1a, to derive a per-tensor seed from its name.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A source of random tensors for a spec.
#[derive(Debug, Clone)]
pub struct RandomSource {
    pub seed: u64,
    /// Standard deviation of weights and embeddings.
    pub std: f32,
    /// Dtype of every tensor (ternary layers are packed regardless).
    pub dtype: Dtype,
}

impl RandomSource {
    fn rng(&self, name: &str) -> SplitMix64 {
        SplitMix64::new(self.seed ^ fnv1a(name))
    }

    fn constant(t: &TensorSpec) -> Option<f32> {
        match t.role {
            TensorRole::Norm => Some(1.0),
            TensorRole::Bias => Some(0.0),
            _ => None,
        }
    }
}

impl WeightSource for RandomSource {
    fn ternary(&self, t: &TensorSpec, granularity: ScaleGranularity) -> Result<Ternary> {
        let mut w = vec![0f32; t.shape.iter().product()];
        self.rng(&t.name).fill_normal(&mut w, self.std);
        if self.dtype != Dtype::F32 {
            // Quantize what a latent checkpoint in this dtype would hold.
            let bytes = from_f32(self.dtype, &w).expect("float dtype");
            w = crate::safetensors::to_f32(self.dtype, &bytes).expect("float dtype");
        }
        quantize_ternary(&w, t.shape[0], t.shape[1], granularity)
            .map_err(|e| Error::Spec(format!("{}: {e}", t.name)))
    }

    fn dtype(&self, _: &TensorSpec) -> Result<Dtype> {
        Ok(self.dtype)
    }

    fn stream(&self, t: &TensorSpec, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let n: usize = t.shape.iter().product();
        let mut rng = self.rng(&t.name);
        let mut buf = vec![0f32; CHUNK.min(n).max(1)];
        let mut done = 0;
        while done < n {
            let len = (n - done).min(buf.len());
            match Self::constant(t) {
                Some(c) => buf[..len].fill(c),
                None => rng.fill_normal(&mut buf[..len], self.std),
            }
            sink(&from_f32(self.dtype, &buf[..len]).expect("float dtype"))?;
            done += len;
        }
        Ok(())
    }
}

/// The dtype named by a config (`dtype` or `torch_dtype`), F32 when absent.
pub fn config_dtype(config: &HfConfig) -> Result<Dtype> {
    let name = config
        .extra
        .get("dtype")
        .or_else(|| config.extra.get("torch_dtype"))
        .and_then(|v| v.as_str())
        .unwrap_or("float32");
    Ok(match name {
        "float32" => Dtype::F32,
        "bfloat16" => Dtype::BF16,
        "float16" => Dtype::F16,
        other => {
            return Err(Error::Spec(format!(
                "dtype `{other}` is not float32, bfloat16 or float16"
            )));
        }
    })
}

/// Writes a random checkpoint of `config` to `out`: latent when `codec` is `None`, else packed.
pub fn init_checkpoint(
    config: &HfConfig,
    out: &Path,
    codec: Option<Codec>,
    source: &RandomSource,
    overwrite: bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Option<PackReport>> {
    let spec = ModelSpec::from_config(config)?;
    match codec {
        Some(codec) => {
            if !spec.is_ternary() {
                return Err(Error::Spec(
                    "a packed checkpoint needs ternary weights: add a `tern` section with \"weights\": \"ternary\"".into(),
                ));
            }
            pack_source(source, config, out, codec, overwrite, progress).map(Some)
        }
        None => {
            let dest = Destination {
                dir: out,
                overwrite,
                companions: &[],
            };
            write_latent(source, config, &spec, dest, false, progress)?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_the_reference_sequence() {
        // First outputs of SplitMix64 seeded with 1234567 (Vigna's reference implementation).
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
    }

    #[test]
    fn normals_have_the_right_moments() {
        let mut r = SplitMix64::new(7);
        let mut v = vec![0f32; 200_000];
        r.fill_normal(&mut v, 0.5);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "{var}");
    }
}
