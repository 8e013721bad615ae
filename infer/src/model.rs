//! One transformer for every family of the model spec (BitNet b1.58, TriLM-style ternary Llama,
//! full-precision Llama/Qwen2). The weight format is behind [`Linear`]; the block layout is
//! chosen by the spec (SubLN norms, relu² or SiLU gate, biases).

use tern_pack::spec::ModelSpec;

use crate::attention::{Dims, KEY_BLOCK, KvCache};
use crate::error::{Error, Result};
use crate::kernels::Isa;
use crate::linear::{DenseLinear, Input, Linear, forward_token};
use crate::team;

mod decode;
mod ops;
mod prefetch;

pub use prefetch::{Prefetch, Trial, Tuner};

use ops::{add_to, gate, rms_norm, rms_norm_in_place, rope};

/// A linear layer and its optional bias.
pub struct Proj<'a> {
    pub w: Box<dyn Linear + 'a>,
    pub bias: Option<Vec<f32>>,
}

impl Proj<'_> {
    /// `[n, rows]` outputs of `input` into `out` (resized; every element written), bias added.
    fn forward_into(&self, input: &Input<'_>, out: &mut Vec<f32>) {
        let rows = self.w.rows();
        out.resize(input.n * rows, 0.0);
        self.w.forward(input, out);
        self.add_bias(out);
    }

    /// [`Proj::forward_into`] of several projections of the same input; one token's in one
    /// parallel region ([`forward_token`]).
    fn forward_all<const N: usize>(
        projs: [&Proj<'_>; N],
        input: &Input<'_>,
        mut outs: [&mut Vec<f32>; N],
    ) {
        if input.n != 1 {
            for (p, out) in projs.iter().zip(outs) {
                p.forward_into(input, out);
            }
            return;
        }
        for (p, out) in projs.iter().zip(outs.iter_mut()) {
            out.resize(p.w.rows(), 0.0);
        }
        let layers = projs.map(|p| &*p.w);
        let mut slices = outs.each_mut().map(|o| o.as_mut_slice());
        forward_token(input, &layers, &mut slices);
        for (p, out) in projs.iter().zip(outs) {
            p.add_bias(out);
        }
    }

    /// Tells the team that the region after the next one reads these projections' weights.
    fn prime(projs: &[&Proj<'_>]) {
        prime(projs.iter().flat_map(|p| p.w.weight_regions()));
    }

    fn add_bias(&self, out: &mut [f32]) {
        for o in out.chunks_exact_mut(self.w.rows()) {
            self.add_bias_rows(0, o);
        }
    }

    /// Adds the bias of rows `first .. first + out.len()` to `out`.
    fn add_bias_rows(&self, first: usize, out: &mut [f32]) {
        if let Some(b) = &self.bias {
            for (v, bv) in out.iter_mut().zip(&b[first..]) {
                *v += bv;
            }
        }
    }
}

/// [`team::prime_next`] of `regions`, when there are threads to prime.
fn prime<'a>(regions: impl IntoIterator<Item = &'a [u8]>) {
    if rayon::current_num_threads() > 1 {
        team::prime_next(&regions.into_iter().collect::<Vec<_>>());
    }
}

/// The activations of one forward, allocated once and reused by every layer (per layer, the
/// allocations and their zeroing were about 0.02 of a 700M decode step at one thread). Each
/// use resizes its buffer and overwrites every element it reads back.
#[derive(Default)]
struct Buffers {
    /// Normed input of a sublayer, `[n, hidden]`.
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output, `[n, heads · hd]`.
    attn: Vec<f32>,
    /// Output of `o_proj` or `down_proj`, `[n, hidden]`.
    out: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
}

/// One decoder block.
pub struct Layer<'a> {
    pub input_norm: Vec<f32>,
    pub q: Proj<'a>,
    pub k: Proj<'a>,
    pub v: Proj<'a>,
    pub o: Proj<'a>,
    /// BitNet's SubLN before `o_proj` (`[heads · head_dim]`).
    pub attn_sub_norm: Option<Vec<f32>>,
    pub post_norm: Vec<f32>,
    pub gate: Proj<'a>,
    pub up: Proj<'a>,
    pub down: Proj<'a>,
    /// BitNet's SubLN before `down_proj` (`[intermediate]`).
    pub ffn_sub_norm: Option<Vec<f32>>,
}

/// The LM head: the tied embedding matrix, or a matrix of its own (possibly 8-bit).
pub enum Head<'a> {
    Tied,
    Own(Box<dyn Linear + 'a>),
}

/// A loaded model.
pub struct Model<'a> {
    pub spec: ModelSpec,
    pub isa: Isa,
    /// `[vocab, hidden]`; also the head when tied.
    pub embed: DenseLinear<'a>,
    pub layers: Vec<Layer<'a>>,
    pub norm: Vec<f32>,
    pub head: Head<'a>,
    /// RoPE inverse frequencies, `[head_dim / 2]`.
    pub inv_freq: Vec<f32>,
    /// How its decode steps prefetch the streams they read once.
    pub prefetch: Tuner,
}

/// Most prompt tokens one pass through the layers takes; longer prompts go in pieces, each
/// attending to the cache the previous ones filled. Measured on the 700M shape with a 1024-token
/// prompt at two threads (`tern bench -p 1024 -n 8`): peak RSS 505 MiB in one piece (weights
/// 256 + KV cache 145 MiB: over the 10 % margin), 461 / 436 / 424 MiB in pieces of 512 / 256 /
/// 128 tokens, and prefill 273–275 tok/s in one piece against 280–330 in pieces.
pub const PREFILL_CHUNK: usize = 256;

/// Which logits a forward returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (tests, scoring).
    All,
}

/// [`rms_norm`] of a batch, its tokens spread over the team ([`team::for_tokens`]).
fn norm_batch(isa: Isa, x: &[f32], gain: &[f32], eps: f32, out: &mut [f32]) {
    let d = gain.len();
    team::for_token_rows(out, d, |first, o| {
        rms_norm(isa, &x[first * d..first * d + o.len()], gain, eps, o)
    });
}

impl<'a> Model<'a> {
    /// RoPE inverse frequencies of a spec (`1 / θ^(2i / d)`, in f32 as transformers computes them).
    pub fn rope_inv_freq(spec: &ModelSpec) -> Vec<f32> {
        let d = spec.head_dim;
        (0..d / 2)
            .map(|i| (1.0 / spec.rope_theta.powf((2 * i) as f64 / d as f64)) as f32)
            .collect()
    }

    /// Largest context the model serves.
    pub fn max_context(&self) -> usize {
        self.spec.max_position_embeddings
    }

    /// What the linear layers read: `int8` (per-token int8 activations: BitNet, or any ternary
    /// model loaded with [`crate::ActivationFormat::Int8`]) or `float`.
    pub fn activations(&self) -> &'static str {
        if self.layers.first().is_some_and(|l| l.q.w.wants_i8()) {
            "int8"
        } else {
            "float"
        }
    }

    /// Bytes of weights read per decoded token: every linear layer and the head (the
    /// embedding row looked up is negligible).
    pub fn weight_bytes_per_token(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|p| p.w.weight_bytes())
                    .sum::<usize>()
            })
            .sum();
        layers + self.head().weight_bytes()
    }

    /// The weight bytes one decoded token reads, in the memory it reads them from (see
    /// [`Linear::weight_regions`]).
    pub fn weight_regions(&self) -> Vec<&[u8]> {
        let mut regions: Vec<&[u8]> = self
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .flat_map(|p| p.w.weight_regions())
            .collect();
        regions.extend(self.head().weight_regions());
        regions
    }

    /// Bytes of the ternary (or dense) linear layers alone, and their multiply-accumulates per token.
    pub fn linear_macs_per_token(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .map(|p| (p.w.rows() * p.w.cols()) as u64)
            .sum()
    }

    fn head(&self) -> &dyn Linear {
        match &self.head {
            Head::Tied => &self.embed,
            Head::Own(h) => h.as_ref(),
        }
    }

    /// Runs `tokens` (at positions `cache.len()..`) through the model, appending to `cache`.
    /// Returns `[m, vocab]` logits, `m` being 1 or `tokens.len()` as `which` says. A long
    /// prompt goes through the layers [`PREFILL_CHUNK`] tokens at a time, so that its
    /// activations stay small beside the weights and the KV cache.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache, which: Logits) -> Result<Vec<f32>> {
        let spec = &self.spec;
        let (n, h) = (tokens.len(), spec.hidden_size);
        if n == 0 {
            return Err(Error::Prompt("no tokens to run".into()));
        }
        if cache.len() + n > cache.capacity() {
            return Err(Error::Prompt(format!(
                "{} tokens do not fit the context: {} cached, room for {}",
                n,
                cache.len(),
                cache.capacity()
            )));
        }
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= spec.vocab_size) {
            return Err(Error::Prompt(format!(
                "token id {t} is outside the vocabulary (size {})",
                spec.vocab_size
            )));
        }
        // A decode step runs with the hint the tuner picks, and is timed for it.
        let trial = (n == 1).then(|| self.prefetch.begin());
        // The final hidden states the head reads: `[m, hidden]`.
        let mut rows = Vec::new();
        for part in tokens.chunks(PREFILL_CHUNK) {
            let x = self.layers_forward(part, cache);
            match which {
                Logits::Last => rows = x,
                Logits::All => rows.extend_from_slice(&x),
            }
        }
        if which == Logits::Last {
            rows.drain(..rows.len() - h);
        }
        let m = rows.len() / h;
        let eps = spec.rms_norm_eps as f32;
        let mut normed = vec![0f32; m * h];
        rms_norm(self.isa, &rows, &self.norm, eps, &mut normed);
        let head = self.head();
        let input = Input::new(self.isa, &normed, m, h, head.wants_i8());
        let mut logits = vec![0f32; m * spec.vocab_size];
        // The next step starts with the first layer's q, k and v.
        if let Some(first) = self.layers.first() {
            Proj::prime(&[&first.q, &first.k, &first.v]);
        }
        head.forward(&input, &mut logits);
        if let Some(trial) = trial {
            self.prefetch.end(trial);
        }
        Ok(logits)
    }

    /// Every layer over `tokens` (checked: known ids, room in `cache`), appending them to
    /// `cache`; returns their final hidden states, `[n, hidden]`. A decode step on several
    /// threads runs as one lockstep job ([`Model::layers_lockstep`]), the rest region by region.
    fn layers_forward(&self, tokens: &[u32], cache: &mut KvCache) -> Vec<f32> {
        if let [token] = tokens
            && let Some(x) = self.layers_lockstep(*token, cache)
        {
            return x;
        }
        self.layers_regions(tokens, cache)
    }

    /// [`Model::layers_forward`] region by region: each parallel loop a region of the team,
    /// the work between them on the caller (a prefill's per-token work on the team).
    fn layers_regions(&self, tokens: &[u32], cache: &mut KvCache) -> Vec<f32> {
        let spec = &self.spec;
        let (n, h) = (tokens.len(), spec.hidden_size);
        let mut x = vec![0f32; n * h];
        for (&t, row) in tokens.iter().zip(x.chunks_exact_mut(h)) {
            self.embed.weights.read_f32(t as usize * h, row);
        }
        let step = Step {
            start: cache.len(),
            eps: spec.rms_norm_eps as f32,
            half: self.inv_freq.len(),
            rope: self.rope_table(cache.len(), n),
        };
        let mut buf = Buffers::default();
        for (l, layer) in self.layers.iter().enumerate() {
            self.layer_forward(layer, l, &mut x, &mut buf, &step, cache);
        }
        cache.advance(n);
        x
    }

    fn layer_forward(
        &self,
        layer: &Layer<'_>,
        l: usize,
        x: &mut [f32],
        buf: &mut Buffers,
        step: &Step,
        cache: &mut KvCache,
    ) {
        let (start, eps) = (step.start, step.eps);
        let spec = &self.spec;
        let (h, hd) = (spec.hidden_size, spec.head_dim);
        let n = x.len() / h;
        let (heads, kv_heads) = (spec.num_heads, spec.num_kv_heads);
        let q_dim = heads * hd;
        let isa = self.isa;

        // Attention.
        if n <= KEY_BLOCK {
            cache.prefetch_append(l, n, hd);
        }
        buf.xn.resize(n * h, 0.0);
        norm_batch(isa, x, &layer.input_norm, eps, &mut buf.xn);
        let i8 = layer.q.w.wants_i8() || layer.k.w.wants_i8();
        let input = Input::new(isa, &buf.xn, n, h, i8);
        let qkv = [&layer.q, &layer.k, &layer.v];
        team::prime_next(&[]);
        Proj::forward_all(qkv, &input, [&mut buf.q, &mut buf.k, &mut buf.v]);
        let kv_dim = kv_heads * hd;
        let (q_rows, k_rows) = ((&mut buf.q[..], q_dim), (&mut buf.k[..], kv_dim));
        team::for_token_rows2(q_rows, k_rows, |first, q, k| {
            let tokens = q.chunks_exact_mut(q_dim).zip(k.chunks_exact_mut(kv_dim));
            for (i, (q, k)) in tokens.enumerate() {
                let (cos, sin) = step.rope(first + i);
                rope(isa, q, hd, cos, sin);
                rope(isa, k, hd, cos, sin);
            }
        });
        let dims = Dims {
            heads,
            kv_heads,
            head_dim: hd,
            start,
        };
        buf.attn.resize(n * q_dim, 0.0);
        let kv = (buf.k.as_slice(), buf.v.as_slice());
        Proj::prime(&[&layer.o]);
        cache.append_and_attend(isa, l, kv, &buf.q, &mut buf.attn, dims);
        if let Some(g) = &layer.attn_sub_norm {
            team::for_token_rows(&mut buf.attn, q_dim, |_, a| {
                rms_norm_in_place(isa, a, g, eps)
            });
        }
        let i8 = layer.o.w.wants_i8();
        let input = Input::new(isa, &buf.attn, n, q_dim, i8);
        Proj::prime(&[&layer.gate, &layer.up]);
        layer.o.forward_into(&input, &mut buf.out);
        // The residual, and the feed-forward's norm of it.
        let (out, gain) = (&buf.out, &layer.post_norm);
        team::for_token_rows2((x, h), (&mut buf.xn, h), |first, x, xn| {
            add_to(isa, x, &out[first * h..]);
            rms_norm(isa, x, gain, eps, xn);
        });

        // Feed-forward.
        let i8 = layer.gate.w.wants_i8() || layer.up.w.wants_i8();
        let input = Input::new(isa, &buf.xn, n, h, i8);
        let gate_up = [&layer.gate, &layer.up];
        Proj::prime(&[&layer.down]);
        Proj::forward_all(gate_up, &input, [&mut buf.gate, &mut buf.up]);
        let inter = spec.intermediate_size;
        let (up, act, sub_norm) = (&buf.up, spec.activation, &layer.ffn_sub_norm);
        team::for_token_rows(&mut buf.gate, inter, |first, g| {
            gate(isa, act, g, &up[first * inter..]);
            if let Some(gain) = sub_norm {
                rms_norm_in_place(isa, g, gain, eps);
            }
        });
        let g = &buf.gate;
        let i8 = layer.down.w.wants_i8();
        let input = Input::new(isa, g, n, inter, i8);
        match self.layers.get(l + 1) {
            Some(next) => Proj::prime(&[&next.q, &next.k, &next.v]),
            None => prime(self.head().weight_regions()),
        }
        layer.down.forward_into(&input, &mut buf.out);
        let out = &buf.out;
        team::for_token_rows(x, h, |first, x| add_to(isa, x, &out[first * h..]));
    }

    /// RoPE `(cos, sin)` of positions `start .. start + n`, each `[n, head_dim / 2]`: computed
    /// once per forward and shared by every layer.
    fn rope_table(&self, start: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        (start..start + n)
            .flat_map(|pos| {
                self.inv_freq.iter().map(move |&f| {
                    let a = pos as f32 * f;
                    (a.cos(), a.sin())
                })
            })
            .unzip()
    }
}

/// What every layer of one forward shares.
struct Step {
    /// Position of the first token.
    start: usize,
    eps: f32,
    /// `head_dim / 2`.
    half: usize,
    /// RoPE `(cos, sin)`, `[n, head_dim / 2]` each.
    rope: (Vec<f32>, Vec<f32>),
}

impl Step {
    /// `(cos, sin)` of token `i` of the batch.
    fn rope(&self, i: usize) -> (&[f32], &[f32]) {
        let w = self.half;
        (
            &self.rope.0[i * w..(i + 1) * w],
            &self.rope.1[i * w..(i + 1) * w],
        )
    }
}
