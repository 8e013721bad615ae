//! `tern pack IN --out OUT --bits 2|1.6`, and `tern pack --unpack`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use tern_pack::Codec;
use tern_pack::convert::{PackOptions, pack_checkpoint, unpack_checkpoint};
use tern_pack::quant::ScaleGranularity;
use tern_pack::safetensors::Dtype;
use tern_pack::spec::{ActivationQuant, HfConfig, QuantSpec, WeightKind};

use super::progress::TensorBar;

/// Arguments of `tern pack`.
#[derive(Debug, clap::Args)]
pub struct PackArgs {
    /// Input checkpoint directory: latent (f32/bf16/f16 safetensors, single or sharded, or a
    /// Hugging Face BitNet packed checkpoint); with --unpack, a tern packed checkpoint.
    input: PathBuf,
    /// Output directory (written atomically: it appears only when complete).
    #[arg(long, short)]
    out: PathBuf,
    /// Bits per ternary weight: 2 (4 weights per byte) or 1.6 (5 weights per byte).
    #[arg(long, default_value = "2", value_parser = parse_codec)]
    bits: Codec,
    /// Write the packed checkpoint back as a latent one that `transformers` loads.
    #[arg(long)]
    unpack: bool,
    /// Dtype of unpacked weights: f32 (exact), bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: Dtype,
    /// Weight scale granularity when the config has no `tern` section: `tensor` or `shard:N`.
    #[arg(long, value_parser = parse_scale)]
    scale: Option<ScaleGranularity>,
    /// Activation quantization when the config has no `tern` section: `int8` or `none`.
    #[arg(long, value_parser = parse_activations)]
    activations: Option<ActivationQuant>,
    /// A tokenizer.json to include (default: the input's own, if present).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

fn parse_codec(s: &str) -> Result<Codec, String> {
    Codec::from_bits(s).ok_or_else(|| format!("`{s}` is not a supported width: use 2 or 1.6"))
}

fn parse_dtype(s: &str) -> Result<Dtype, String> {
    match s.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(Dtype::F32),
        "bf16" | "bfloat16" => Ok(Dtype::BF16),
        "f16" | "float16" => Ok(Dtype::F16),
        _ => Err(format!("`{s}`: use f32, bf16 or f16")),
    }
}

fn parse_scale(s: &str) -> Result<ScaleGranularity, String> {
    match s.split_once(':') {
        None if s == "tensor" => Ok(ScaleGranularity::Tensor),
        Some(("shard", n)) => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .map(ScaleGranularity::Shards)
            .ok_or_else(|| format!("`{n}` is not a positive shard count")),
        _ => Err(format!("`{s}`: use `tensor` or `shard:N`")),
    }
}

fn parse_activations(s: &str) -> Result<ActivationQuant, String> {
    match s {
        "int8" => Ok(ActivationQuant::Int8),
        "none" => Ok(ActivationQuant::None),
        _ => Err(format!("`{s}`: use int8 or none")),
    }
}

/// The quantization to pack with: the config's, adjusted by the flags.
fn quant_for(a: &PackArgs) -> anyhow::Result<Option<QuantSpec>> {
    let cfg = HfConfig::load(&a.input)?;
    let declared = cfg.tern.is_some() || cfg.model_type == "bitnet";
    if declared && a.scale.is_none() && a.activations.is_none() {
        return Ok(None);
    }
    let base = tern_pack::spec::ModelSpec::from_config(&cfg)
        .with_context(|| format!("{}", a.input.join("config.json").display()))?
        .quant;
    if !declared {
        eprintln!(
            "note: {} has no `tern` section; packing its linear layers as ternary \
             (TriLM-style: {} scale, {} activations)",
            a.input.join("config.json").display(),
            if a.scale.is_some() {
                "the given"
            } else {
                "per-tensor"
            },
            if a.activations == Some(ActivationQuant::Int8) {
                "int8"
            } else {
                "floating-point"
            },
        );
    }
    Ok(Some(QuantSpec {
        weights: WeightKind::Ternary,
        scale: a.scale.unwrap_or(if declared {
            base.scale
        } else {
            ScaleGranularity::Tensor
        }),
        activations: a.activations.unwrap_or(base.activations),
    }))
}

pub fn run(a: PackArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let bar = TensorBar::new(if a.unpack { "unpacking" } else { "packing" });
    if a.unpack {
        if a.scale.is_some() || a.activations.is_some() || a.tokenizer.is_some() {
            bail!("--scale, --activations and --tokenizer apply to packing, not to --unpack");
        }
        let out = unpack_checkpoint(&a.input, &a.out, a.dtype, a.force, &mut |p| bar.update(p))
            .with_context(|| format!("cannot unpack {}", a.input.display()))?;
        bar.finish();
        eprintln!(
            "unpacked to {} ({} weights) in {:.1?}",
            out.display(),
            a.dtype,
            start.elapsed()
        );
        return Ok(());
    }
    let opts = PackOptions {
        codec: a.bits,
        overwrite: a.force,
        quant: quant_for(&a)?,
        tokenizer: a.tokenizer.clone(),
    };
    let r = pack_checkpoint(&a.input, &a.out, &opts, &mut |p| bar.update(p))
        .with_context(|| format!("cannot pack {}", a.input.display()))?;
    bar.finish();
    eprintln!(
        "packed {} ternary weights at {} → {} ({:.4} bits/weight with scales and padding; file {:.1} MiB) in {:.1?}",
        r.ternary_weights,
        r.codec,
        r.out_dir.display(),
        r.bits_per_weight(),
        r.file_bytes as f64 / (1 << 20) as f64,
        start.elapsed()
    );
    Ok(())
}
