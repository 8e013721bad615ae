//! `tern infer --model DIR --prompt TEXT`: generate text, streamed to stdout.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use tern_infer::KvDtype;
use tern_infer::generate::{
    CpuDecoder, Decoder, GenerateOptions, StopReason, TextStream, TextTokenizer, capacity_for,
    check_prompt, generate_with, stop_tokens,
};
use tern_infer::sample::SamplingParams;

use super::serve::{Device, EngineArgs, Opened, gpu_model, parse_kv};

/// Arguments of `tern infer`.
#[derive(Debug, clap::Args)]
pub struct InferArgs {
    /// Model directory: a packed checkpoint (`tern pack`), or a float one (served in full
    /// precision). Needs `tokenizer.json` for text prompts.
    #[arg(long, short)]
    model: PathBuf,
    /// The prompt text. Without --prompt or --prompt-file, the prompt is read from stdin.
    #[arg(long, short, conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from this UTF-8 file.
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// The tokenizer (default: MODEL/tokenizer.json).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// New tokens at most.
    #[arg(long, short = 'n', default_value_t = 256)]
    max_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sample among the K most likely tokens only (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Sample from the smallest set of tokens whose probability reaches P.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Penalise tokens already in the text (1: off; 1.1–1.3 is typical).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Extra stop token ids (the config's eos_token_id always stops unless --ignore-eos).
    #[arg(long, value_delimiter = ',')]
    stop_token: Vec<u32>,
    /// Do not stop at the end-of-sequence token.
    #[arg(long)]
    ignore_eos: bool,
    /// KV cache element type on the CPU: f16 (default), f32, or q8 (int8 with a scale per
    /// row: about half the memory of f16, for long contexts). The GPU path keeps f32.
    #[arg(long, default_value = "f16", value_parser = parse_kv)]
    kv: KvDtype,
    /// Print generated token ids instead of text (one per line).
    #[arg(long)]
    ids: bool,
    /// Print timings to stderr at the end.
    #[arg(long)]
    stats: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

fn read_prompt(a: &InferArgs) -> anyhow::Result<String> {
    let (bytes, origin) = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => return Ok(p.clone()),
        (None, Some(f)) => (
            std::fs::read(f)
                .with_context(|| format!("cannot read the prompt file {}", f.display()))?,
            f.display().to_string(),
        ),
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read the prompt from stdin")?;
            (buf, "stdin".to_string())
        }
    };
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{origin}: the prompt is not valid UTF-8 (bad byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

pub fn run(a: InferArgs) -> anyhow::Result<()> {
    let (opts, pool) = a.engine.setup()?;
    pool.install(|| run_in_pool(a, opts))
}

fn run_in_pool(a: InferArgs, opts: tern_infer::LoadOptions) -> anyhow::Result<()> {
    let prompt = read_prompt(&a)?;
    if prompt.is_empty() {
        bail!("the prompt is empty: pass --prompt TEXT, --prompt-file FILE or text on stdin");
    }
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
    };
    sampling.validate()?;
    let opened = Opened::open(&a.model)?;
    let tokenizer = match &a.tokenizer {
        Some(t) => TextTokenizer::load_file(t)?,
        None => TextTokenizer::load(&a.model)?,
    };
    let model = opened
        .model(opts)
        .with_context(|| format!("cannot load {}", a.model.display()))?;
    let ids = tokenizer.encode(&prompt)?;
    let mut stop = a.stop_token.clone();
    if !a.ignore_eos {
        stop.extend(stop_tokens(&a.model, opened.config()));
    }
    let gen_opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling,
        stop_tokens: stop,
        kv: a.kv,
    };
    let capacity = capacity_for(&model.spec, ids.len(), gen_opts.max_tokens);
    // Before any GPU upload (generate_with checks it again, cheaply).
    check_prompt(&model, &ids)?;
    // The GPU model must outlive the session that borrows it.
    #[cfg(feature = "wgpu")]
    let (gpu, mut gpu_session);
    let mut cpu_decoder;
    let decoder: &mut dyn Decoder = match a.engine.device {
        Device::Cpu => {
            cpu_decoder = CpuDecoder::new(&model, capacity, gen_opts.kv);
            &mut cpu_decoder
        }
        #[cfg(feature = "wgpu")]
        Device::Gpu => {
            gpu = gpu_model(&model)?;
            gpu_session = tern_infer::gpu::GpuSession::new(&gpu, capacity, false)?;
            &mut gpu_session
        }
        #[cfg(not(feature = "wgpu"))]
        Device::Gpu => match gpu_model(&model)? {},
    };
    let mut stream = TextStream::new(&tokenizer);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let print_ids = a.ids;
    let result = generate_with(decoder, &ids, &gen_opts, &mut |t| {
        let write = if print_ids {
            writeln!(out, "{t}")
        } else {
            match stream.push(t)? {
                Some(piece) => write!(out, "{piece}"),
                None => Ok(()),
            }
        };
        write
            .and_then(|_| out.flush())
            .map_err(|err| tern_infer::Error::Io {
                path: "stdout".into(),
                err,
            })
    })?;
    if !print_ids {
        writeln!(out, "{}", stream.finish()?)?;
    }
    if a.stats {
        let why = match result.stop {
            StopReason::MaxTokens => "max tokens",
            StopReason::Stop => "stop token",
            StopReason::Context => "context full",
        };
        eprintln!(
            "prompt {} tokens · generated {} ({why}) · time to first token {:.1} ms · prefill {:.1} tok/s · decode {:.1} tok/s · {} threads · {}",
            result.prompt_tokens,
            result.tokens.len(),
            result.ttft.as_secs_f64() * 1e3,
            result.prefill_tok_s(),
            result.decode_tok_s(),
            rayon::current_num_threads(),
            match a.engine.device {
                Device::Cpu => model.isa.name(),
                Device::Gpu => "gpu",
            },
        );
    }
    Ok(())
}
