//! `tern bench --model DIR | --config CFG`: prefill/decode speed, memory and roofline.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use tern_infer::bench::{BenchOptions, BenchReport, run as run_bench};
use tern_infer::{KvDtype, Model};
use tern_pack::Codec;
use tern_pack::init::{RandomSource, init_checkpoint};
use tern_pack::safetensors::Dtype;
use tern_pack::spec::{HfConfig, ModelSpec, WeightKind};

use super::serve::{Device, EngineArgs, Opened, gpu_model, parse_kv};

/// Arguments of `tern bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A model directory (packed, or float).
    #[arg(
        long,
        short,
        conflicts_with = "config",
        required_unless_present = "config"
    )]
    model: Option<PathBuf>,
    /// Instead of --model: a config (see configs/models/); a random checkpoint of that shape is
    /// written to a temporary directory (as `tern init --bits` does) and served.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Packing of the random checkpoint made for --config.
    #[arg(long, default_value = "2", value_parser = |s: &str| Codec::from_bits(s).ok_or_else(|| format!("`{s}`: use 2 or 1.6")))]
    bits: Codec,
    /// Serve the same shape in full precision (f32 weights, random) through the same engine.
    #[arg(long)]
    f32: bool,
    /// Also run the f32 twin in a child process and print the speedups and memory ratio.
    #[arg(long, conflicts_with = "f32")]
    compare_f32: bool,
    /// Prompt tokens (random ids) for the prefill.
    #[arg(short = 'p', long, default_value_t = 128)]
    prompt_tokens: usize,
    /// Tokens to decode.
    #[arg(short = 'n', long, default_value_t = 64)]
    gen_tokens: usize,
    /// Seed of the prompt and of random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// KV cache element type on the CPU: f16 (default), f32, or q8 (int8 with a scale per
    /// row: about half the bytes of f16). The GPU path keeps f32.
    #[arg(long, default_value = "f16", value_parser = parse_kv)]
    kv: KvDtype,
    #[command(flatten)]
    engine: EngineArgs,
}

fn config_of(a: &BenchArgs) -> anyhow::Result<HfConfig> {
    match (&a.model, &a.config) {
        (Some(m), _) => Ok(HfConfig::load(m)?),
        (None, Some(c)) => Ok(HfConfig::load(c)?),
        (None, None) => bail!("pass --model DIR or --config FILE"),
    }
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let (opts, pool) = a.engine.setup()?;
    pool.install(|| run_in_pool(a, opts))
}

fn run_in_pool(a: BenchArgs, opts: tern_infer::LoadOptions) -> anyhow::Result<()> {
    let bench = BenchOptions {
        prompt_tokens: a.prompt_tokens,
        gen_tokens: a.gen_tokens,
        seed: a.seed,
        kv: a.kv,
        ..BenchOptions::default()
    };
    let name = a
        .model
        .as_ref()
        .or(a.config.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let report = if a.f32 {
        // Same shape, full precision, random f32 weights built in memory.
        let mut config = config_of(&a)?;
        config.tern = None;
        let mut spec = ModelSpec::from_config(&config)?;
        spec.quant.weights = WeightKind::Full;
        let source = RandomSource {
            seed: a.seed,
            std: 0.02,
            dtype: Dtype::F32,
        };
        eprintln!("building random f32 weights in memory...");
        let model = Model::from_float(&spec, &source, std::path::Path::new(&name), opts)?;
        measure(&a, &model, &name, "f32", 0, &bench)?
    } else if let Some(dir) = &a.model {
        let opened = Opened::open(dir)?;
        let model = opened.model(opts)?;
        let (format, bytes) = opened.describe();
        measure(&a, &model, &name, &format, bytes, &bench)?
    } else {
        let config = config_of(&a)?;
        let tmp = tempfile::Builder::new()
            .prefix("tern-bench-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        let dir = tmp.path().join("model");
        let source = RandomSource {
            seed: a.seed,
            std: 0.02,
            dtype: tern_pack::init::config_dtype(&config)?,
        };
        eprintln!(
            "writing a random {}-bit checkpoint of {name} to {}...",
            a.bits.bits_label(),
            dir.display()
        );
        init_checkpoint(&config, &dir, Some(a.bits), &source, false, &mut |_| {})?;
        let opened = Opened::open(&dir)?;
        let model = opened.model(opts)?;
        let (format, bytes) = opened.describe();
        measure(&a, &model, &name, &format, bytes, &bench)?
    };
    let twin = if a.compare_f32 {
        Some(run_f32_twin(&a)?)
    } else {
        None
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(t) = &twin {
            v["f32"] = serde_json::to_value(t)?;
            v["decode_speedup_vs_f32"] = (report.decode_tok_s / t.decode_tok_s).into();
            v["ttft_speedup_vs_f32"] = (t.ttft_ms / report.ttft_ms).into();
            if let (Some(a), Some(b)) = (report.peak_rss_bytes, t.peak_rss_bytes) {
                v["memory_ratio_f32_over_ours"] = (b as f64 / a as f64).into();
            }
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print_report(&report);
        if let Some(t) = &twin {
            println!("\n-- f32 twin (same shape, same engine) --");
            print_report(t);
            println!(
                "\nspeedup over f32: decode {:.1}x, time to first token {:.1}x; peak memory f32/ours {:.1}x",
                report.decode_tok_s / t.decode_tok_s,
                t.ttft_ms / report.ttft_ms,
                match (report.peak_rss_bytes, t.peak_rss_bytes) {
                    (Some(a), Some(b)) => b as f64 / a as f64,
                    _ => f64::NAN,
                }
            );
        }
    }
    Ok(())
}

/// Benchmarks `model` on the device `--device` names.
fn measure(
    a: &BenchArgs,
    model: &Model<'_>,
    name: &str,
    format: &str,
    file_bytes: u64,
    bench: &BenchOptions,
) -> anyhow::Result<BenchReport> {
    Ok(match a.engine.device {
        Device::Cpu => run_bench(model, name, format, file_bytes, bench)?,
        #[cfg(feature = "wgpu")]
        Device::Gpu => {
            let gpu = gpu_model(model)?;
            tern_infer::bench::run_gpu(&gpu, name, format, file_bytes, bench)?
        }
        #[cfg(not(feature = "wgpu"))]
        Device::Gpu => match gpu_model(model)? {},
    })
}

/// Runs `tern bench --f32 --json` with the same shape and settings in a child process, so that
/// its peak memory is its own.
fn run_f32_twin(a: &BenchArgs) -> anyhow::Result<BenchReport> {
    let exe = std::env::current_exe().context("cannot find the tern executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("bench").arg("--f32").arg("--json");
    if let Some(m) = &a.model {
        cmd.arg("--model").arg(m);
    }
    if let Some(c) = &a.config {
        cmd.arg("--config").arg(c);
    }
    cmd.args([
        "-p",
        &a.prompt_tokens.to_string(),
        "-n",
        &a.gen_tokens.to_string(),
    ]);
    cmd.args(["--seed", &a.seed.to_string(), "--isa", &a.engine.isa]);
    cmd.args(["--kv", a.kv.name()]);
    if a.engine.device == Device::Gpu {
        cmd.args(["--device", "gpu"]);
    }
    if let Some(t) = a.engine.threads {
        cmd.args(["--threads", &t.to_string()]);
    }
    let out = cmd.output().context("cannot run the f32 twin")?;
    if !out.status.success() {
        bail!(
            "the f32 twin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("the f32 twin printed no report")
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn print_report(r: &BenchReport) {
    if r.device == "cpu" {
        println!(
            "model              {} ({}, {} activations, {} thread{}, {})",
            r.model,
            r.format,
            r.activations,
            r.threads,
            if r.threads == 1 { "" } else { "s" },
            r.isa
        );
    } else {
        println!(
            "model              {} ({}, {} activations, {})",
            r.model, r.format, r.activations, r.device
        );
    }
    println!(
        "prefill            {:.1} tok/s ({} tokens), time to first token {:.1} ms",
        r.prefill_tok_s, r.prompt_tokens, r.ttft_ms
    );
    println!(
        "decode             {:.2} tok/s ({} tokens)",
        r.decode_tok_s, r.generated_tokens
    );
    println!(
        "weights per token  {:.1} MiB read, {:.2} GB/s effective",
        r.weight_bytes_per_token as f64 / (1 << 20) as f64,
        r.effective_gb_s
    );
    println!(
        "roofline           {:.1}% of the measured {:.2} GB/s {}",
        100.0 * r.roofline_fraction,
        r.measured_bandwidth_gb_s,
        if r.device == "cpu" {
            "read bandwidth"
        } else {
            "device copy bandwidth (read + write)"
        }
    );
    println!(
        "with the KV cache  {:.1} MiB more read per token ({}), {:.1}% of the bandwidth",
        r.kv_bytes_per_token as f64 / (1 << 20) as f64,
        r.kv,
        100.0 * r.read_roofline_fraction
    );
    if let (Some(f), Some(peak)) = (r.prefill_int8_peak_fraction, r.int8_peak_gmacs) {
        println!(
            "prefill compute    {:.1}% of the measured int8 peak ({peak:.1} GMAC/s)",
            100.0 * f,
        );
    }
    match (r.thread_round_trip_before_ns, r.thread_round_trip_ns) {
        (Some(before), Some(after)) => println!(
            "threads            {before:.0} ns round trip between two of them before the prefill, \
             {after:.0} ns after the decode"
        ),
        (None, Some(ns)) => {
            println!("threads            {ns:.0} ns round trip between two of them")
        }
        _ => {}
    }
    if let (Some(mode), Some(hint)) = (&r.prefetch, &r.prefetch_hint) {
        let switches = r.prefetch_switches.unwrap_or(0);
        if mode == "auto" {
            println!(
                "prefetch           auto: {hint} at the end ({switches} change{})",
                if switches == 1 { "" } else { "s" }
            );
        } else {
            println!("prefetch           {hint}");
        }
    }
    if let Some(g) = r.gpu_memory_bytes {
        println!("GPU memory         {} allocated", gib(g));
    }
    println!(
        "memory             peak RSS {}, weights file {}, KV cache {} ({})",
        r.peak_rss_bytes.map_or("n/a".into(), gib),
        gib(r.file_bytes),
        gib(r.kv_cache_bytes),
        r.kv
    );
    if let Some(h) = r.weights_huge_page_fraction {
        println!(
            "huge pages         {:.0}% of the resident weights{}",
            h * 100.0,
            if h < 0.5 {
                " (the file is cached in small pages: see the README's \"Huge pages\")"
            } else {
                ""
            }
        );
    }
}
