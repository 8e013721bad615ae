//! The transformer in Burn, configured by `tern_pack`'s model spec: BitNet b1.58 (SubLN,
//! relu² gated FFN, int8 activations) and Llama / TriLM (SwiGLU, float activations), with GQA
//! and RoPE in both. Every linear layer is a [`BitLinear`]: latent f32 weights, fake-quantized in
//! the forward when the spec says ternary and [`QuantMode::enabled`] is set.
//!
//! Struct and field names follow the Hugging Face layout, so a parameter's module path *is* its
//! checkpoint name (`model.layers.0.self_attn.q_proj.weight`); see [`crate::params`].

use burn::module::{Module, Param};
use burn::tensor::activation::{relu, silu, softmax};
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};
use tern_pack::init::SplitMix64;
use tern_pack::quant::ScaleGranularity;
use tern_pack::spec::{Activation, ActivationQuant, ModelSpec, WeightKind};

use crate::quant::{fake_int8, fake_ternary};

/// Whether the forward fake-quantizes, and how far into the warm-up it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantMode {
    /// Quantize the layers the spec marks ternary (off: the full-precision model).
    pub enabled: bool,
    /// Warm-up blend `λ` in `[0, 1]`: `v + λ·(q(v) − v)`.
    pub lambda: f64,
}

impl QuantMode {
    /// The quantized forward the engines serve.
    pub const ON: QuantMode = QuantMode {
        enabled: true,
        lambda: 1.0,
    };
    /// No fake-quantization at all.
    pub const OFF: QuantMode = QuantMode {
        enabled: false,
        lambda: 0.0,
    };
}

/// A linear layer `y = x·Wᵀ (+ b)`, ternary-aware.
#[derive(Module, Debug)]
pub struct BitLinear {
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// The spec makes this layer ternary.
    ternary: bool,
    /// Row blocks with their own scale.
    shards: usize,
    /// Inputs are fake-quantized to int8 per token (BitNet).
    act_int8: bool,
}

impl BitLinear {
    /// `x`: `[tokens, in]` → `[tokens, out]`.
    pub fn forward(&self, x: Tensor<2>, q: QuantMode) -> Tensor<2> {
        let quantize = q.enabled && self.ternary;
        let x = if quantize && self.act_int8 {
            fake_int8(x, q.lambda)
        } else {
            x
        };
        let w = self.weight.val();
        let w = if quantize {
            fake_ternary(w, self.shards, q.lambda)
        } else {
            w
        };
        let y = x.matmul(w.transpose());
        match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim(0),
            None => y,
        }
    }
}

/// RMSNorm with a learned gain.
#[derive(Module, Debug)]
pub struct RmsNorm {
    pub weight: Param<Tensor<1>>,
    eps: f64,
}

impl RmsNorm {
    /// Normalizes the last dimension of `[tokens, d]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let rms = (x.clone().square().mean_dim(1) + self.eps).sqrt();
        (x / rms) * self.weight.val().unsqueeze_dim(0)
    }
}

/// The token embedding table.
#[derive(Module, Debug)]
pub struct Embedding {
    pub weight: Param<Tensor<2>>,
}

/// Self-attention with GQA and RoPE (and BitNet's SubLN before `o_proj`).
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: BitLinear,
    pub k_proj: BitLinear,
    pub v_proj: BitLinear,
    pub o_proj: BitLinear,
    pub attn_sub_norm: Option<RmsNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// The gated FFN: `down(act(gate(x)) · up(x))` (and BitNet's SubLN before `down_proj`).
#[derive(Module, Debug)]
pub struct Mlp {
    pub gate_proj: BitLinear,
    pub up_proj: BitLinear,
    pub down_proj: BitLinear,
    pub ffn_sub_norm: Option<RmsNorm>,
    relu2: bool,
}

/// One pre-norm decoder block.
#[derive(Module, Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

/// Embeddings, blocks and final norm (`model.*` in the checkpoint).
#[derive(Module, Debug)]
pub struct Body {
    pub embed_tokens: Embedding,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
}

/// The LM head when it is not tied to the embeddings.
#[derive(Module, Debug)]
pub struct Head {
    pub weight: Param<Tensor<2>>,
}

/// A causal language model of a [`ModelSpec`].
#[derive(Module, Debug)]
pub struct Transformer {
    pub model: Body,
    pub lm_head: Option<Head>,
    rope_theta: f64,
}

/// Position tables for one forward: `cos`, `sin` as `[T, head_dim]` (HF's `rotate_half` layout)
/// and the additive causal mask `[T, T]`.
struct Positions {
    cos: Tensor<2>,
    sin: Tensor<2>,
    mask: Tensor<2>,
}

impl Positions {
    fn new(t: usize, head_dim: usize, theta: f64, device: &Device) -> Positions {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32)
            .collect();
        let mut cos = Vec::with_capacity(t * head_dim);
        let mut sin = Vec::with_capacity(t * head_dim);
        for p in 0..t {
            for _ in 0..2 {
                for f in &inv {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        let mut mask = vec![0f32; t * t];
        for i in 0..t {
            mask[i * t + i + 1..(i + 1) * t].fill(f32::NEG_INFINITY);
        }
        let tensor = |v: Vec<f32>, shape: [usize; 2]| {
            Tensor::<2>::from_data(TensorData::new(v, shape), device)
        };
        Positions {
            cos: tensor(cos, [t, head_dim]),
            sin: tensor(sin, [t, head_dim]),
            mask: tensor(mask, [t, t]),
        }
    }
}

/// `x·cos + rotate_half(x)·sin` for `x`: `[B, H, T, D]`.
fn rope(x: Tensor<4>, pos: &Positions) -> Tensor<4> {
    let [b, h, t, d] = x.dims();
    let half = d / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    let cos = pos.cos.clone().reshape([1, 1, t, d]).expand([b, h, t, d]);
    let sin = pos.sin.clone().reshape([1, 1, t, d]).expand([b, h, t, d]);
    x * cos + rotated * sin
}

impl Attention {
    /// The attention output, and with `tap` the q, k, v projections (before RoPE, `[B·T, width]`).
    fn forward(
        &self,
        x: Tensor<2>,
        b: usize,
        t: usize,
        pos: &Positions,
        q: QuantMode,
        tap: bool,
    ) -> (Tensor<2>, Option<[Tensor<2>; 3]>) {
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let qp = self.q_proj.forward(x.clone(), q);
        let kp = self.k_proj.forward(x.clone(), q);
        let vp = self.v_proj.forward(x, q);
        let taps = tap.then(|| [qp.clone(), kp.clone(), vp.clone()]);
        let split = |y: Tensor<2>, heads: usize| y.reshape([b, t, heads, d]).swap_dims(1, 2);
        let qs = rope(split(qp, h), pos);
        let ks = rope(split(kp, kvh), pos);
        let vs = split(vp, kvh);
        let (ks, vs) = if kvh == h {
            (ks, vs)
        } else {
            let rep = h / kvh;
            let widen = |y: Tensor<4>| {
                y.reshape([b, kvh, 1, t, d])
                    .expand([b, kvh, rep, t, d])
                    .reshape([b, h, t, d])
            };
            (widen(ks), widen(vs))
        };
        let scores = qs
            .matmul(ks.swap_dims(2, 3))
            .mul_scalar(1.0 / (d as f64).sqrt());
        let scores = scores + pos.mask.clone().reshape([1, 1, t, t]);
        let p = softmax(scores, 3);
        let out = p.matmul(vs).swap_dims(1, 2).reshape([b * t, h * d]);
        let out = match &self.attn_sub_norm {
            Some(n) => n.forward(out),
            None => out,
        };
        (self.o_proj.forward(out, q), taps)
    }
}

impl Mlp {
    fn forward(&self, x: Tensor<2>, q: QuantMode) -> Tensor<2> {
        let gate = self.gate_proj.forward(x.clone(), q);
        let gate = if self.relu2 {
            relu(gate).square()
        } else {
            silu(gate)
        };
        let y = gate * self.up_proj.forward(x, q);
        let y = match &self.ffn_sub_norm {
            Some(n) => n.forward(y),
            None => y,
        };
        self.down_proj.forward(y, q)
    }
}

impl Transformer {
    /// A model of `spec` with weights drawn from N(0, `std`²) by a seeded generator on the host
    /// (the same values on every device), norms at 1 and biases at 0.
    pub fn init(spec: &ModelSpec, seed: u64, std: f32, device: &Device) -> Transformer {
        let mut rng = SplitMix64::new(seed);
        let normal = |rng: &mut SplitMix64, shape: [usize; 2]| {
            let mut v = vec![0f32; shape[0] * shape[1]];
            rng.fill_normal(&mut v, std);
            Param::from_tensor(Tensor::<2>::from_data(TensorData::new(v, shape), device))
        };
        let ones = |n: usize| Param::from_tensor(Tensor::<1>::ones([n], device));
        let zeros = |n: usize| Param::from_tensor(Tensor::<1>::zeros([n], device));
        let ternary = spec.quant.weights == WeightKind::Ternary;
        let shards = match spec.quant.scale {
            ScaleGranularity::Tensor => 1,
            ScaleGranularity::Shards(n) => n,
        };
        let act_int8 = spec.quant.activations == ActivationQuant::Int8;
        let eps = spec.rms_norm_eps;
        let norm = |n: usize| RmsNorm {
            weight: ones(n),
            eps,
        };
        let (hd, q_out, kv_out) = (
            spec.head_dim,
            spec.num_heads * spec.head_dim,
            spec.num_kv_heads * spec.head_dim,
        );
        let (h, i) = (spec.hidden_size, spec.intermediate_size);
        let linear = |rng: &mut SplitMix64, out: usize, inp: usize, bias: bool| BitLinear {
            weight: normal(rng, [out, inp]),
            bias: bias.then(|| zeros(out)),
            ternary,
            shards,
            act_int8,
        };
        let embed_tokens = Embedding {
            weight: normal(&mut rng, [spec.vocab_size, h]),
        };
        let layers = (0..spec.num_layers)
            .map(|_| Block {
                input_layernorm: norm(h),
                self_attn: Attention {
                    q_proj: linear(&mut rng, q_out, h, spec.qkv_bias),
                    k_proj: linear(&mut rng, kv_out, h, spec.qkv_bias),
                    v_proj: linear(&mut rng, kv_out, h, spec.qkv_bias),
                    o_proj: linear(&mut rng, h, q_out, spec.o_bias),
                    attn_sub_norm: spec.sub_norms.then(|| norm(q_out)),
                    heads: spec.num_heads,
                    kv_heads: spec.num_kv_heads,
                    head_dim: hd,
                },
                post_attention_layernorm: norm(h),
                mlp: Mlp {
                    gate_proj: linear(&mut rng, i, h, spec.mlp_bias),
                    up_proj: linear(&mut rng, i, h, spec.mlp_bias),
                    down_proj: linear(&mut rng, h, i, spec.mlp_bias),
                    ffn_sub_norm: spec.sub_norms.then(|| norm(i)),
                    relu2: spec.activation == Activation::Relu2,
                },
            })
            .collect();
        let lm_head = (!spec.tie_word_embeddings).then(|| Head {
            weight: normal(&mut rng, [spec.vocab_size, h]),
        });
        Transformer {
            model: Body {
                embed_tokens,
                layers,
                norm: norm(h),
            },
            lm_head,
            rope_theta: spec.rope_theta,
        }
    }

    /// Logits `[B·T, vocab]` for token ids `[B, T]`.
    pub fn forward(&self, tokens: Tensor<2, Int>, q: QuantMode) -> Tensor<2> {
        self.forward_with(tokens, q, Taps::default()).logits
    }

    /// Blocks in the model.
    pub fn num_layers(&self) -> usize {
        self.model.layers.len()
    }

    /// The forward with the intermediate states `taps` asks for (distillation).
    pub fn forward_with(&self, tokens: Tensor<2, Int>, q: QuantMode, taps: Taps) -> Outputs {
        let [b, t] = tokens.dims();
        let embed = self.model.embed_tokens.weight.val();
        let device = embed.device();
        let [_, hidden] = embed.dims();
        let mut x = embedding(embed.clone(), tokens).reshape([b * t, hidden]);
        let head_dim = self
            .model
            .layers
            .first()
            .map_or(2, |l| l.self_attn.head_dim);
        let pos = Positions::new(t, head_dim, self.rope_theta, &device);
        let (mut hidden_tap, mut qkv_tap) = (None, None);
        for (i, layer) in self.model.layers.iter().enumerate() {
            let (a, qkv) = layer.self_attn.forward(
                layer.input_layernorm.forward(x.clone()),
                b,
                t,
                &pos,
                q,
                taps.qkv == Some(i),
            );
            qkv_tap = qkv_tap.or(qkv);
            x = x + a;
            let m = layer
                .mlp
                .forward(layer.post_attention_layernorm.forward(x.clone()), q);
            x = x + m;
            if taps.hidden == Some(i) {
                hidden_tap = Some(x.clone());
            }
        }
        let x = self.model.norm.forward(x);
        let head = match &self.lm_head {
            Some(h) => h.weight.val(),
            None => embed,
        };
        Outputs {
            logits: x.matmul(head.transpose()),
            hidden: hidden_tap,
            qkv: qkv_tap,
        }
    }
}

/// Intermediate states a forward returns besides the logits (block indices from 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taps {
    /// The residual stream after this block, `[B·T, hidden]`.
    pub hidden: Option<usize>,
    /// This block's q, k and v projections before RoPE, `[B·T, width]` each.
    pub qkv: Option<usize>,
}

/// What [`Transformer::forward_with`] returns.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// `[B·T, vocab]`.
    pub logits: Tensor<2>,
    pub hidden: Option<Tensor<2>>,
    pub qkv: Option<[Tensor<2>; 3]>,
}

/// Mean cross-entropy of `logits` `[N, vocab]` against `targets` `[N]`.
pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let logp = burn::tensor::activation::log_softmax(logits, 1);
    let picked = logp.gather(1, targets.reshape([n, 1]));
    picked.mean().neg()
}
