//! `tern quickstart`: the whole pipeline on a fresh machine, with nothing downloaded —
//! synthesize a corpus, learn a tokenizer, train a small ternary model on the CPU, pack it at
//! 2 and 1.6 bits, generate text and benchmark it.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, Parser};
use tern_train::config::TrainConfig;

use super::data::{SynthArgs, parse_size, synth};
use super::train::{print_summary, run_config};

/// The run config and model shape, embedded so that the binary needs no files.
const TRAIN_CONFIG: &str = include_str!("../../configs/train/quickstart.toml");
const MODEL_CONFIG: &str = include_str!("../../configs/models/quickstart.toml");

#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Where everything goes (replaced on each run).
    #[arg(long, default_value = "runs/quickstart")]
    pub dir: PathBuf,
    /// Size of the synthetic corpus.
    #[arg(long, default_value = "2M", value_parser = parse_size)]
    pub corpus_bytes: usize,
    /// Override any training field, e.g. --set train.steps=100 (repeatable).
    #[arg(long = "set", value_name = "SECTION.FIELD=VALUE")]
    pub set: Vec<String>,
    /// The prompt of the generation step.
    #[arg(long, default_value = "the capital of france is")]
    pub prompt: String,
}

fn header(n: usize, what: &str) {
    eprintln!("\n[{n}/5] {what}");
}

pub fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = &args.dir;
    std::fs::create_dir_all(dir)?;

    header(1, "synthesizing the demo corpus (tern data synth)");
    let corpus = dir.join("data/corpus.txt");
    synth(&SynthArgs {
        out: corpus.clone(),
        bytes: args.corpus_bytes,
        seed: 0,
    })?;

    header(
        2,
        "learning a BPE tokenizer and training a ternary BitNet on the CPU (tern train)",
    );
    let model_cfg = dir.join("model-config.toml");
    tern_pack::fsutil::write_atomic(&model_cfg, MODEL_CONFIG.as_bytes())?;
    let quote = |p: &PathBuf| serde_json::to_string(&p.display().to_string()).expect("string");
    let mut overrides = vec![
        format!("model.config={}", quote(&model_cfg)),
        format!("data.corpus={}", quote(&corpus)),
        format!("run.dir={}", quote(&dir.join("train"))),
    ];
    overrides.extend(args.set.iter().cloned());
    let cfg = TrainConfig::parse(TRAIN_CONFIG, &overrides, "configs/train/quickstart.toml")?;
    eprintln!(
        "{} steps of {} sequences x {} tokens; metrics in {}, loss curve in {}",
        cfg.train.steps,
        cfg.train.batch_size,
        cfg.data.seq_len,
        cfg.run.dir.join("metrics.jsonl").display(),
        cfg.run.dir.join("loss.svg").display()
    );
    let summary = run_config(&cfg, false, true)?;

    header(3, "packed at 2 and 1.6 bits per weight (tern pack)");
    print_summary(&summary);
    let packed2 = summary
        .packed
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the quickstart config packs nothing"))?;

    header(4, "generating text from the 2-bit model (tern infer)");
    eprintln!("prompt: {:?}", args.prompt);
    let m = packed2.display().to_string();
    super::run(super::Cli::try_parse_from([
        "tern",
        "infer",
        "--model",
        &m,
        "--prompt",
        &args.prompt,
        "--max-tokens",
        "48",
        "--stats",
    ])?)?;

    header(5, "benchmarking both packings (tern bench)");
    for p in &summary.packed {
        let m = p.display().to_string();
        super::run(super::Cli::try_parse_from([
            "tern", "bench", "--model", &m, "-p", "64", "-n", "64",
        ])?)?;
    }
    eprintln!(
        "\nquickstart finished in {:.0} s. Next: tern infer --model {} --prompt \"...\"",
        started.elapsed().as_secs_f64(),
        packed2.display()
    );
    Ok(())
}
