//! Text in, text out: the tokenizer (`tokenizer.json` through the `tokenizers` crate), stop
//! tokens, the prefill + decode loop and streaming detokenization.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tern_pack::spec::{HfConfig, ModelSpec};

use crate::attention::{KvCache, KvDtype};
use crate::error::{Error, Result};
use crate::model::{Logits, Model};
use crate::sample::{Sampler, SamplingParams, argmax};

/// The model's tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl TextTokenizer {
    /// Loads `dir/tokenizer.json`.
    pub fn load(dir: &Path) -> Result<TextTokenizer> {
        TextTokenizer::load_file(&dir.join("tokenizer.json"))
    }

    /// Loads a `tokenizer.json` file.
    pub fn load_file(path: &Path) -> Result<TextTokenizer> {
        let path = path.to_path_buf();
        if !path.is_file() {
            return Err(Error::Tokenizer {
                path,
                reason: "not found: text prompts need the model's tokenizer.json (pass --tokenizer FILE if it lives elsewhere)".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| Error::Tokenizer {
            path: path.clone(),
            reason: format!("cannot be read: {e}"),
        })?;
        Ok(TextTokenizer { inner, path })
    }

    /// Token ids of `text`, with the special tokens the tokenizer adds (BOS, ...).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| Error::Tokenizer {
                path: self.path.clone(),
                reason: format!("cannot encode the prompt: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            reason: format!("cannot decode: {e}"),
        })
    }

    /// Largest id the tokenizer knows, plus one.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

/// Emits text as tokens arrive, holding back bytes of an unfinished UTF-8 character (the
/// prefix/read offsets scheme of text-generation-inference).
pub struct TextStream<'t> {
    tok: &'t TextTokenizer,
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl<'t> TextStream<'t> {
    pub fn new(tok: &'t TextTokenizer) -> Self {
        TextStream {
            tok,
            ids: Vec::new(),
            prefix: 0,
            read: 0,
        }
    }

    /// Adds a token; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let piece = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// Text still held back at the end (an unfinished character comes out as U+FFFD).
    pub fn finish(&mut self) -> Result<String> {
        let before = self.tok.decode(&self.ids[self.prefix..self.read])?;
        let now = self.tok.decode(&self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now
            .strip_prefix(before.as_str())
            .unwrap_or_default()
            .to_string())
    }
}

/// End-of-sequence ids named by `config.json` and `generation_config.json` (`eos_token_id`,
/// a number or a list).
pub fn stop_tokens(dir: &Path, config: &HfConfig) -> Vec<u32> {
    let mut out = Vec::new();
    let mut take = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::Number(n)) => out.extend(n.as_u64().map(|n| n as u32)),
        Some(serde_json::Value::Array(a)) => {
            out.extend(a.iter().filter_map(|n| n.as_u64()).map(|n| n as u32))
        }
        _ => {}
    };
    take(config.extra.get("eos_token_id"));
    if let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json"))
        && let Ok(serde_json::Value::Object(g)) = serde_json::from_str(&text)
    {
        take(g.get("eos_token_id"));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// New tokens at most.
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Generation stops after emitting one of these (it is not printed).
    pub stop_tokens: Vec<u32>,
    /// Element type of the KV cache.
    pub kv: KvDtype,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_tokens` reached.
    MaxTokens,
    /// A stop token.
    Stop,
    /// The model's context is full.
    Context,
}

/// The result of [`generate`], with timings.
#[derive(Debug, Clone)]
pub struct Generation {
    /// New tokens (a final stop token included).
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    /// Prefill of the prompt plus the first sample: time to first token.
    pub ttft: Duration,
    /// The decode steps after the first token.
    pub decode: Duration,
    pub stop: StopReason,
}

impl Generation {
    /// Prefill throughput.
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.ttft.as_secs_f64()
    }

    /// Decode throughput (tokens after the first, per second).
    pub fn decode_tok_s(&self) -> f64 {
        let steps = self.tokens.len().saturating_sub(1);
        if steps == 0 {
            return 0.0;
        }
        steps as f64 / self.decode.as_secs_f64()
    }
}

/// A model with the state of one generation (its KV cache): what [`generate_with`] drives. The
/// CPU engine's is [`CpuDecoder`]; the GPU path's is `gpu::GpuSession`.
pub trait Decoder {
    /// The model's shape.
    fn spec(&self) -> &ModelSpec;
    /// Tokens the cache holds at most (prompt and generated).
    fn capacity(&self) -> usize;
    /// Tokens cached so far.
    fn cached(&self) -> usize;
    /// Runs `tokens` after the cached ones and returns the last one's logits (`[vocab]`).
    fn last_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// Runs `tokens` and returns the greedy next token (the first of equal maxima).
    fn argmax(&mut self, tokens: &[u32]) -> Result<u32> {
        Ok(argmax(&self.last_logits(tokens)?))
    }
}

/// The CPU engine as a [`Decoder`].
pub struct CpuDecoder<'m, 'a> {
    pub model: &'m Model<'a>,
    pub cache: KvCache,
}

impl<'m, 'a> CpuDecoder<'m, 'a> {
    /// A decoder with room for `capacity` tokens in a KV cache of `kv` elements.
    pub fn new(model: &'m Model<'a>, capacity: usize, kv: KvDtype) -> Self {
        CpuDecoder {
            model,
            cache: KvCache::new(&model.spec, capacity, kv),
        }
    }
}

impl Decoder for CpuDecoder<'_, '_> {
    fn spec(&self) -> &ModelSpec {
        &self.model.spec
    }
    fn capacity(&self) -> usize {
        self.cache.capacity()
    }
    fn cached(&self) -> usize {
        self.cache.len()
    }
    fn last_logits(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.model.forward(tokens, &mut self.cache, Logits::Last)
    }
}

/// Checks a prompt against the model before any work: non-empty, known ids, fits the context.
pub fn check_prompt(model: &Model<'_>, prompt: &[u32]) -> Result<()> {
    check_prompt_for(&model.spec, prompt)
}

/// [`check_prompt`] against a model's shape.
pub fn check_prompt_for(spec: &ModelSpec, prompt: &[u32]) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::Prompt(
            "the prompt is empty (no tokens after tokenization)".into(),
        ));
    }
    let ctx = spec.max_position_embeddings;
    if prompt.len() >= ctx {
        return Err(Error::Prompt(format!(
            "the prompt has {} tokens but the model's context (max_position_embeddings) is {ctx}: shorten it",
            prompt.len()
        )));
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= spec.vocab_size) {
        return Err(Error::Prompt(format!(
            "token id {bad} is outside the model's vocabulary (size {})",
            spec.vocab_size
        )));
    }
    Ok(())
}

/// Tokens a generation needs room for: the prompt and `max_tokens`, within the context.
pub fn capacity_for(spec: &ModelSpec, prompt: usize, max_tokens: usize) -> usize {
    (prompt + max_tokens).min(spec.max_position_embeddings)
}

/// Prefills `prompt` as one batch, then decodes token by token on the CPU engine, calling
/// `on_token` for each new token as soon as it is chosen.
pub fn generate(
    model: &Model<'_>,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    // Before the cache is allocated (generate_with checks it again, cheaply).
    check_prompt(model, prompt)?;
    let capacity = capacity_for(&model.spec, prompt.len(), opts.max_tokens);
    let mut dec = CpuDecoder::new(model, capacity, opts.kv);
    generate_with(&mut dec, prompt, opts, on_token)
}

/// [`generate`] on any [`Decoder`] with an empty cache (`opts.kv` is the decoder's business).
/// Greedy decoding without a repetition penalty asks the decoder for the token only.
pub fn generate_with(
    dec: &mut dyn Decoder,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    check_prompt_for(dec.spec(), prompt)?;
    let mut sampler = Sampler::new(opts.sampling)?;
    let capacity = dec.capacity();
    let mut history = prompt.to_vec();
    let mut tokens = Vec::new();
    let t0 = Instant::now();
    let mut ttft = Duration::ZERO;
    let mut stop = StopReason::MaxTokens;
    let mut next_input: Vec<u32> = prompt.to_vec();
    while tokens.len() < opts.max_tokens {
        if dec.cached() + next_input.len() > capacity {
            stop = StopReason::Context;
            break;
        }
        let t = if sampler.is_argmax() {
            dec.argmax(&next_input)?
        } else {
            let mut logits = dec.last_logits(&next_input)?;
            sampler.sample(&mut logits, &history)
        };
        if tokens.is_empty() {
            ttft = t0.elapsed();
        }
        tokens.push(t);
        history.push(t);
        if opts.stop_tokens.contains(&t) {
            stop = StopReason::Stop;
            break;
        }
        on_token(t)?;
        next_input = vec![t];
    }
    if tokens.is_empty() {
        ttft = t0.elapsed();
    }
    Ok(Generation {
        tokens,
        prompt_tokens: prompt.len(),
        ttft,
        decode: t0.elapsed().saturating_sub(ttft),
        stop,
    })
}
