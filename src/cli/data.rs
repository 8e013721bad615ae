//! `tern data synth`: the deterministic synthetic corpus of tern's demo and tests.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use tern_train::data::synth::{SynthOptions, generate};

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write a synthetic text corpus from a small probabilistic grammar (agreement, facts,
    /// arithmetic), with its exact entropy in FILE.synth.json.
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
pub struct SynthArgs {
    /// The text file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Size in bytes (accepts suffixes: 500K, 2M).
    #[arg(long, default_value = "2M", value_parser = parse_size)]
    pub bytes: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `2M`, `500K`, `1000`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 2M, 500K, 4096)"))?;
    if !(n.is_finite() && n >= 1.0) {
        return Err(format!("{s:?}: the size must be at least 1 byte"));
    }
    Ok((n * mult as f64) as usize)
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Synth(a) => synth(&a).map(|_| ()),
    }
}

/// Writes the corpus and its sidecar; returns the corpus's nats per byte.
pub fn synth(a: &SynthArgs) -> anyhow::Result<f64> {
    let c = generate(SynthOptions {
        bytes: a.bytes,
        seed: a.seed,
    });
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    tern_pack::fsutil::write_atomic(&a.out, c.text.as_bytes())?;
    let mut side = a.out.as_os_str().to_owned();
    side.push(".synth.json");
    let meta = serde_json::json!({
        "generator": "tern data synth",
        "seed": a.seed,
        "bytes": c.text.len(),
        "documents": c.documents,
        "sentences": c.sentences,
        "entropy_nats": c.entropy_nats,
        "nats_per_byte": c.nats_per_byte(),
    });
    tern_pack::fsutil::write_atomic(
        &PathBuf::from(side),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )?;
    eprintln!(
        "wrote {} ({} bytes, {} documents, {} sentences; entropy {:.4} nats/byte: the best \
         achievable loss is this times bytes per token)",
        a.out.display(),
        c.text.len(),
        c.documents,
        c.sentences,
        c.nats_per_byte()
    );
    Ok(c.nats_per_byte())
}
