//! `tern inspect`: what a checkpoint holds — architecture, parameter counts, bits per weight,
//! sizes and the zero fraction of its ternary weights.

use std::path::Path;

use serde::Serialize;

use crate::checkpoint::latent::LatentCheckpoint;
use crate::checkpoint::packed::{FORMAT, PackedCheckpoint, WEIGHTS_FILE};
use crate::codec::Codec;
use crate::error::Result;
use crate::safetensors::SafetensorsFile;
use crate::spec::{ModelSpec, TensorRole};

/// A checkpoint's summary (also printed as JSON by `tern inspect --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// `packed` or `latent`.
    pub kind: String,
    pub model_type: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    /// `ternary` or `full`.
    pub weights: String,
    /// `int8` or `none`.
    pub activations: String,
    /// Scales per ternary matrix.
    pub scales_per_matrix: usize,
    pub parameters: u64,
    pub linear_parameters: u64,
    /// Codec of a packed checkpoint.
    pub codec: Option<String>,
    /// Bits per ternary weight, padding and scales included (packed only).
    pub ternary_bits_per_weight: Option<f64>,
    /// Bytes of packed rows and scales (packed only).
    pub ternary_bytes: Option<u64>,
    /// Bytes of everything else (embeddings, norms, head).
    pub other_bytes: u64,
    /// Size of the weight files.
    pub file_bytes: u64,
    /// Fraction of ternary weights that are zero (packed only).
    pub zero_fraction: Option<f64>,
}

/// Counts zero trits in every packed byte (table per codec).
fn zeros_in(codec: Codec, byte: u8) -> u32 {
    codec.decode_byte(byte).map_or(0, |t| {
        t[..codec.trits_per_byte()]
            .iter()
            .filter(|&&x| x == 0)
            .count() as u32
    })
}

/// Summarises the checkpoint in `dir` (packed or latent).
pub fn inspect(dir: &Path) -> Result<Summary> {
    let weights = dir.join(WEIGHTS_FILE);
    let is_packed = weights.is_file()
        && SafetensorsFile::open(&weights)?
            .header
            .metadata
            .get("format")
            .map(String::as_str)
            == Some(FORMAT);
    if is_packed {
        let ck = PackedCheckpoint::open(dir)?;
        let mut s = base(&ck.spec, "packed");
        let codec = ck.codec;
        let table: Vec<u32> = (0..=255u8).map(|b| zeros_in(codec, b)).collect();
        let (mut tbytes, mut tweights, mut zeros) = (0u64, 0u64, 0u64);
        for t in ck
            .spec
            .tensors()
            .iter()
            .filter(|t| t.role == TensorRole::Linear)
        {
            let p = ck.ternary(&t.name)?;
            tbytes += p.data.len() as u64 + 4 * p.scales.len() as u64;
            tweights += (p.rows * p.cols) as u64;
            zeros += p
                .data
                .iter()
                .map(|&b| table[b as usize] as u64)
                .sum::<u64>();
            // Padding slots are zero trits that are not weights.
            let slots = p.row_bytes() * codec.trits_per_byte();
            zeros -= ((slots - p.cols) * p.rows) as u64;
        }
        s.codec = Some(codec.name().to_string());
        s.ternary_bits_per_weight = Some(tbytes as f64 * 8.0 / tweights.max(1) as f64);
        s.ternary_bytes = Some(tbytes);
        s.file_bytes = ck.file_size();
        s.other_bytes = ck
            .entries()
            .filter(|e| e.dtype.is_float() && !e.name.ends_with("weight_scale"))
            .map(|e| e.len)
            .sum();
        s.zero_fraction = Some(zeros as f64 / tweights.max(1) as f64);
        Ok(s)
    } else {
        let ck = LatentCheckpoint::open(dir)?;
        let spec = ck.spec()?;
        let mut s = base(&spec, "latent");
        let mut other = 0u64;
        let mut total = 0u64;
        for t in spec.tensors() {
            let (_, info) = ck.entry(&t.name)?;
            total += info.len;
            if t.role != TensorRole::Linear {
                other += info.len;
            }
        }
        s.other_bytes = other;
        s.file_bytes = total;
        Ok(s)
    }
}

fn base(spec: &ModelSpec, kind: &str) -> Summary {
    Summary {
        kind: kind.to_string(),
        model_type: format!("{:?}", spec.family).to_lowercase(),
        hidden_size: spec.hidden_size,
        intermediate_size: spec.intermediate_size,
        num_layers: spec.num_layers,
        num_heads: spec.num_heads,
        num_kv_heads: spec.num_kv_heads,
        head_dim: spec.head_dim,
        vocab_size: spec.vocab_size,
        tie_word_embeddings: spec.tie_word_embeddings,
        weights: format!("{:?}", spec.quant.weights).to_lowercase(),
        activations: format!("{:?}", spec.quant.activations).to_lowercase(),
        scales_per_matrix: spec.quant.scale.count(),
        parameters: spec.num_parameters(),
        linear_parameters: spec.num_linear_parameters(),
        codec: None,
        ternary_bits_per_weight: None,
        ternary_bytes: None,
        other_bytes: 0,
        file_bytes: 0,
        zero_fraction: None,
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = |b: u64| {
            let units = ["B", "KiB", "MiB", "GiB", "TiB"];
            let e = ((b.max(1) as f64).log2() / 10.0).floor().min(4.0) as i32;
            format!("{:.2} {}", b as f64 / 1024f64.powi(e), units[e as usize])
        };
        let m = |n: u64| n as f64 / 1e6;
        writeln!(f, "checkpoint      {} ({})", self.kind, self.model_type)?;
        writeln!(
            f,
            "shape           hidden {} · ffn {} · {} layers · {} heads ({} kv, head_dim {}) · vocab {}{}",
            self.hidden_size,
            self.intermediate_size,
            self.num_layers,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.vocab_size,
            if self.tie_word_embeddings {
                " · tied head"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "quantization    weights {} ({} scale{} per matrix) · activations {}",
            self.weights,
            self.scales_per_matrix,
            if self.scales_per_matrix == 1 { "" } else { "s" },
            self.activations
        )?;
        writeln!(
            f,
            "parameters      {:.2} M total · {:.2} M in linear layers",
            m(self.parameters),
            m(self.linear_parameters)
        )?;
        if let (Some(codec), Some(bpw), Some(tb), Some(z)) = (
            &self.codec,
            self.ternary_bits_per_weight,
            self.ternary_bytes,
            self.zero_fraction,
        ) {
            writeln!(
                f,
                "codec           {codec} · {bpw:.4} bits per ternary weight (padding and scales included)"
            )?;
            writeln!(f, "ternary bytes   {} · zero fraction {:.4}", size(tb), z)?;
        }
        writeln!(
            f,
            "other bytes     {} (embeddings, norms, head)",
            size(self.other_bytes)
        )?;
        write!(
            f,
            "file size       {} ({} bytes)",
            size(self.file_bytes),
            self.file_bytes
        )
    }
}
