//! `tern init CONFIG --out DIR [--bits 2|1.6]`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use tern_pack::Codec;
use tern_pack::init::{RandomSource, config_dtype, init_checkpoint};
use tern_pack::spec::HfConfig;

use super::progress::TensorBar;

/// Arguments of `tern init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Model config: a Hugging Face `config.json`, a directory holding one, or a TOML file with
    /// the same fields (see configs/models/).
    config: PathBuf,
    /// Output directory (written atomically).
    #[arg(long, short)]
    out: PathBuf,
    /// Write a packed checkpoint at 2 or 1.6 bits instead of a latent one.
    #[arg(long, value_parser = |s: &str| Codec::from_bits(s).ok_or_else(|| format!("`{s}`: use 2 or 1.6")))]
    bits: Option<Codec>,
    /// Seed of the random values (same seed, same bytes on every machine).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Standard deviation of weights and embeddings.
    #[arg(long, default_value_t = 0.02)]
    std: f32,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
}

pub fn run(a: InitArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let config = HfConfig::load(&a.config)?;
    let source = RandomSource {
        seed: a.seed,
        std: a.std,
        dtype: config_dtype(&config).with_context(|| a.config.display().to_string())?,
    };
    let bar = TensorBar::new("init");
    let report = init_checkpoint(&config, &a.out, a.bits, &source, a.force, &mut |p| {
        bar.update(p)
    })
    .with_context(|| {
        format!(
            "cannot initialise {} from {}",
            a.out.display(),
            a.config.display()
        )
    })?;
    bar.finish();
    match report {
        Some(r) => eprintln!(
            "wrote packed {} checkpoint {} ({:.4} bits/weight, {:.1} MiB) in {:.1?}",
            r.codec,
            r.out_dir.display(),
            r.bits_per_weight(),
            r.file_bytes as f64 / (1 << 20) as f64,
            start.elapsed()
        ),
        None => eprintln!(
            "wrote latent checkpoint {} in {:.1?}",
            a.out.display(),
            start.elapsed()
        ),
    }
    Ok(())
}
