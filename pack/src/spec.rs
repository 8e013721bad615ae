//! The model spec: Hugging Face `config.json` as it is on disk ([`HfConfig`]), and the validated
//! runtime view every tern crate builds from ([`ModelSpec`]), including the list of tensors a
//! checkpoint of that model must hold.
//!
//! Families: `bitnet` (BitNet b1.58, the 2B4T layout: SubLN before `o_proj` and `down_proj`,
//! squared-ReLU gated FFN, GQA, RoPE), `llama` (Llama-family full-precision models and
//! TriLM-style ternary ones) and `qwen2` (Llama with q/k/v biases). tern's own quantization
//! fields live in a `"tern"` object of the config, which `transformers` keeps and ignores.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::quant::ScaleGranularity;

/// Upper bounds that keep every size computation far from overflow.
pub mod limits {
    /// Largest hidden, intermediate or vocabulary size accepted.
    pub const MAX_DIM: usize = 1 << 22;
    /// Largest layer count accepted.
    pub const MAX_LAYERS: usize = 1024;
    /// Largest head count accepted.
    pub const MAX_HEADS: usize = 1024;
}

/// tern's quantization fields (`"tern": {..}` in `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TernQuantConfig {
    /// `"ternary"` for ternary linear layers, `"full"` for a full-precision model.
    pub weights: WeightKind,
    /// `"tensor"` (one scale per weight matrix, BitNet) or `"shard"` (TriLM).
    #[serde(default = "default_scale_kind")]
    pub weight_scale: ScaleKind,
    /// Number of row blocks with their own scale when `weight_scale` is `"shard"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_shards: Option<usize>,
    /// `"int8"`: activations quantized per token to int8 absmax (BitNet); `"none"`: kept in
    /// floating point (TriLM).
    #[serde(default = "default_activations")]
    pub activations: ActivationQuant,
    /// SubLN norms before `o_proj` and `down_proj` (`attn_sub_norm`, `ffn_sub_norm`); by
    /// default only BitNet has them. `true` on a Llama or Qwen2 model is the BitDistill
    /// student layout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_norms: Option<bool>,
}

fn default_scale_kind() -> ScaleKind {
    ScaleKind::Tensor
}
fn default_activations() -> ActivationQuant {
    ActivationQuant::None
}

/// Whether the linear layers are ternary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightKind {
    Ternary,
    Full,
}

/// Scale granularity as spelled in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleKind {
    Tensor,
    Shard,
}

/// Activation quantization of ternary layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationQuant {
    /// Per-token absmax int8 (BitNet b1.58).
    Int8,
    /// Floating-point activations (TriLM).
    None,
}

/// A Hugging Face `config.json`, with the fields tern reads; every other field is kept in
/// `extra` so that a config is written back as it came.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HfConfig {
    /// `bitnet`, `llama` or `qwen2`.
    pub model_type: String,
    /// Vocabulary size (rows of the embedding and the head).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// FFN width.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); defaults to `num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// `silu` (Llama, SwiGLU) or `relu2` (BitNet, squared ReLU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Longest context the model was trained for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position_embeddings: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rms_norm_eps: Option<f64>,
    /// RoPE base (transformers v4 spelling; v5 puts it in `rope_parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Whether the head shares the embedding matrix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tie_word_embeddings: Option<bool>,
    /// Biases on q/k/v/o (Llama).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    /// Biases on the FFN projections (Llama).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// tern's quantization fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tern: Option<TernQuantConfig>,
    /// Everything else (architectures, token ids, dtype, quantization_config, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl HfConfig {
    /// Reads `config.json` (a file, or a directory holding one). A file ending in `.toml` is
    /// read as TOML with the same fields (so shapes under `configs/` can carry comments).
    pub fn load(path: &Path) -> Result<HfConfig> {
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).at(&file)?;
        if file.extension().is_some_and(|e| e == "toml") {
            let value: toml::Value =
                toml::from_str(&text).map_err(|e| Error::config(&file, e.to_string()))?;
            let json =
                serde_json::to_value(value).map_err(|e| Error::config(&file, e.to_string()))?;
            return serde_json::from_value(json).map_err(|e| Error::config(&file, e.to_string()));
        }
        Self::parse(&file, &text)
    }

    /// Parses config text; `path` is for errors.
    pub fn parse(path: &Path, text: &str) -> Result<HfConfig> {
        serde_json::from_str(text).map_err(|e| Error::config(path, e.to_string()))
    }

    /// Writes the config as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes") + "\n"
    }

    /// The RoPE base from either spelling.
    fn rope_theta_any(&self) -> Option<f64> {
        self.rope_theta.or_else(|| {
            self.extra
                .get("rope_parameters")
                .and_then(|r| r.get("rope_theta"))
                .and_then(|t| t.as_f64())
        })
    }

    /// The `quantization_config.quant_method`, if any.
    pub fn quant_method(&self) -> Option<&str> {
        self.extra
            .get("quantization_config")?
            .get("quant_method")?
            .as_str()
    }
}

/// Model family: decides the block layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BitNet b1.58 (SubLN, relu², ternary, int8 activations by default).
    BitNet,
    /// Llama (full precision, or TriLM-style ternary).
    Llama,
    /// Qwen2 (Llama with q/k/v biases).
    Qwen2,
}

/// FFN activation (the gate's non-linearity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) * up` (SwiGLU).
    Silu,
    /// `relu(gate)^2 * up`.
    Relu2,
}

/// Quantization of the model's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantSpec {
    pub weights: WeightKind,
    pub scale: ScaleGranularity,
    pub activations: ActivationQuant,
}

impl QuantSpec {
    /// The spelling in `config.json`.
    pub fn to_config(self) -> TernQuantConfig {
        let (weight_scale, weight_shards) = match self.scale {
            ScaleGranularity::Tensor => (ScaleKind::Tensor, None),
            ScaleGranularity::Shards(n) => (ScaleKind::Shard, Some(n)),
        };
        TernQuantConfig {
            weights: self.weights,
            weight_scale,
            weight_shards,
            activations: self.activations,
            sub_norms: None,
        }
    }
}

/// The validated model spec.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub activation: Activation,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub tie_word_embeddings: bool,
    /// Biases on q, k, v.
    pub qkv_bias: bool,
    /// Bias on o.
    pub o_bias: bool,
    /// Biases on gate, up, down.
    pub mlp_bias: bool,
    /// SubLN norms (`attn_sub_norm`, `ffn_sub_norm`).
    pub sub_norms: bool,
    pub quant: QuantSpec,
}

/// What a tensor is, which decides how `pack` treats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorRole {
    /// A linear layer's weight `[out, in]`: ternary when the spec says so.
    Linear,
    /// Token embeddings `[vocab, hidden]`.
    Embedding,
    /// The LM head `[vocab, hidden]` (absent when tied).
    Head,
    /// An RMSNorm gain.
    Norm,
    /// A bias vector.
    Bias,
}

/// One tensor a checkpoint of the spec holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: TensorRole,
}

impl ModelSpec {
    /// Validates a config (the caller names the file in its error).
    pub fn from_config(cfg: &HfConfig) -> Result<ModelSpec> {
        let spec_err = |m: String| Error::Spec(m);
        let family = match cfg.model_type.as_str() {
            "bitnet" => Family::BitNet,
            "llama" => Family::Llama,
            "qwen2" => Family::Qwen2,
            other => {
                return Err(spec_err(format!(
                    "model_type `{other}` is not served (bitnet, llama, qwen2)"
                )));
            }
        };
        let nonzero = |name: &str, v: usize, max: usize| -> Result<usize> {
            if v == 0 || v > max {
                Err(spec_err(format!("{name} = {v} is outside 1..={max}")))
            } else {
                Ok(v)
            }
        };
        use limits::*;
        let vocab_size = nonzero("vocab_size", cfg.vocab_size, MAX_DIM)?;
        let hidden_size = nonzero("hidden_size", cfg.hidden_size, MAX_DIM)?;
        let intermediate_size = nonzero("intermediate_size", cfg.intermediate_size, MAX_DIM)?;
        let num_layers = nonzero("num_hidden_layers", cfg.num_hidden_layers, MAX_LAYERS)?;
        let num_heads = nonzero("num_attention_heads", cfg.num_attention_heads, MAX_HEADS)?;
        let num_kv_heads = nonzero(
            "num_key_value_heads",
            cfg.num_key_value_heads.unwrap_or(num_heads),
            MAX_HEADS,
        )?;
        if num_heads % num_kv_heads != 0 {
            return Err(spec_err(format!(
                "num_key_value_heads = {num_kv_heads} does not divide num_attention_heads = {num_heads}"
            )));
        }
        let head_dim = match cfg.head_dim {
            Some(d) => nonzero("head_dim", d, MAX_DIM)?,
            None => {
                if hidden_size % num_heads != 0 {
                    return Err(spec_err(format!(
                        "num_attention_heads = {num_heads} does not divide hidden_size = {hidden_size}"
                    )));
                }
                hidden_size / num_heads
            }
        };
        if head_dim % 2 != 0 {
            return Err(spec_err(format!(
                "head_dim = {head_dim} must be even for RoPE"
            )));
        }
        if num_heads * head_dim > MAX_DIM {
            return Err(spec_err(
                "num_attention_heads × head_dim is too large".into(),
            ));
        }
        let default_act = if family == Family::BitNet {
            "relu2"
        } else {
            "silu"
        };
        let activation = match cfg.hidden_act.as_deref().unwrap_or(default_act) {
            "silu" | "swish" => Activation::Silu,
            "relu2" => Activation::Relu2,
            other => {
                return Err(spec_err(format!(
                    "hidden_act `{other}` is not supported (silu, relu2)"
                )));
            }
        };
        let rms_norm_eps = cfg.rms_norm_eps.unwrap_or(1e-6);
        if !(rms_norm_eps.is_finite() && rms_norm_eps > 0.0 && rms_norm_eps < 1.0) {
            return Err(spec_err(format!(
                "rms_norm_eps = {rms_norm_eps} must lie in (0, 1)"
            )));
        }
        let rope_theta = cfg.rope_theta_any().unwrap_or(10_000.0);
        if !(rope_theta.is_finite() && rope_theta > 1.0) {
            return Err(spec_err(format!(
                "rope_theta = {rope_theta} must be finite and > 1"
            )));
        }
        let max_position_embeddings = nonzero(
            "max_position_embeddings",
            cfg.max_position_embeddings.unwrap_or(2048),
            1 << 24,
        )?;
        let attention_bias = cfg.attention_bias.unwrap_or(false);
        let quant = Self::quant_from(cfg, family)?;
        let spec = ModelSpec {
            family,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_layers,
            num_heads,
            num_kv_heads,
            head_dim,
            activation,
            max_position_embeddings,
            rms_norm_eps,
            rope_theta,
            tie_word_embeddings: cfg.tie_word_embeddings.unwrap_or(false),
            qkv_bias: attention_bias || family == Family::Qwen2,
            o_bias: attention_bias && family != Family::Qwen2,
            mlp_bias: cfg.mlp_bias.unwrap_or(false),
            sub_norms: cfg
                .tern
                .as_ref()
                .and_then(|t| t.sub_norms)
                .unwrap_or(family == Family::BitNet),
            quant,
        };
        if let ScaleGranularity::Shards(n) = spec.quant.scale {
            for t in spec
                .tensors()
                .iter()
                .filter(|t| t.role == TensorRole::Linear)
            {
                if t.shape[0] % n != 0 {
                    return Err(spec_err(format!(
                        "weight_shards = {n} does not divide the {} rows of `{}`",
                        t.shape[0], t.name
                    )));
                }
            }
        }
        Ok(spec)
    }

    fn quant_from(cfg: &HfConfig, family: Family) -> Result<QuantSpec> {
        let Some(t) = &cfg.tern else {
            return Ok(match family {
                Family::BitNet => QuantSpec {
                    weights: WeightKind::Ternary,
                    scale: ScaleGranularity::Tensor,
                    activations: ActivationQuant::Int8,
                },
                _ => QuantSpec {
                    weights: WeightKind::Full,
                    scale: ScaleGranularity::Tensor,
                    activations: ActivationQuant::None,
                },
            });
        };
        let scale = match (t.weight_scale, t.weight_shards) {
            (ScaleKind::Tensor, None | Some(1)) => ScaleGranularity::Tensor,
            (ScaleKind::Tensor, Some(n)) => {
                return Err(Error::Spec(format!(
                    "tern.weight_shards = {n} needs tern.weight_scale = \"shard\""
                )));
            }
            (ScaleKind::Shard, Some(n)) if (1..=4096).contains(&n) => ScaleGranularity::Shards(n),
            (ScaleKind::Shard, n) => {
                return Err(Error::Spec(format!(
                    "tern.weight_scale = \"shard\" needs tern.weight_shards in 1..=4096, got {n:?}"
                )));
            }
        };
        Ok(QuantSpec {
            weights: t.weights,
            scale,
            activations: t.activations,
        })
    }

    /// The `tern` section of `config.json` that describes this spec (quantization, and SubLN
    /// where the family does not imply it).
    pub fn tern_config(&self) -> TernQuantConfig {
        let default_sub_norms = self.family == Family::BitNet;
        TernQuantConfig {
            sub_norms: (self.sub_norms != default_sub_norms).then_some(self.sub_norms),
            ..self.quant.to_config()
        }
    }

    /// Whether linear layers are ternary.
    pub fn is_ternary(&self) -> bool {
        self.quant.weights == WeightKind::Ternary
    }

    /// Every tensor of a checkpoint of this model, in a stable order.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let q_out = self.num_heads * self.head_dim;
        let kv_out = self.num_kv_heads * self.head_dim;
        let mut out = Vec::new();
        let mut push =
            |name: String, shape: Vec<usize>, role| out.push(TensorSpec { name, shape, role });
        push(
            "model.embed_tokens.weight".into(),
            vec![v, h],
            TensorRole::Embedding,
        );
        for l in 0..self.num_layers {
            let p = format!("model.layers.{l}");
            push(
                format!("{p}.input_layernorm.weight"),
                vec![h],
                TensorRole::Norm,
            );
            for (name, out_dim, in_dim) in [
                ("q_proj", q_out, h),
                ("k_proj", kv_out, h),
                ("v_proj", kv_out, h),
                ("o_proj", h, q_out),
            ] {
                push(
                    format!("{p}.self_attn.{name}.weight"),
                    vec![out_dim, in_dim],
                    TensorRole::Linear,
                );
                let biased = if name == "o_proj" {
                    self.o_bias
                } else {
                    self.qkv_bias
                };
                if biased {
                    push(
                        format!("{p}.self_attn.{name}.bias"),
                        vec![out_dim],
                        TensorRole::Bias,
                    );
                }
            }
            if self.sub_norms {
                push(
                    format!("{p}.self_attn.attn_sub_norm.weight"),
                    vec![q_out],
                    TensorRole::Norm,
                );
            }
            push(
                format!("{p}.post_attention_layernorm.weight"),
                vec![h],
                TensorRole::Norm,
            );
            for (name, out_dim, in_dim) in
                [("gate_proj", i, h), ("up_proj", i, h), ("down_proj", h, i)]
            {
                push(
                    format!("{p}.mlp.{name}.weight"),
                    vec![out_dim, in_dim],
                    TensorRole::Linear,
                );
                if self.mlp_bias {
                    push(
                        format!("{p}.mlp.{name}.bias"),
                        vec![out_dim],
                        TensorRole::Bias,
                    );
                }
            }
            if self.sub_norms {
                push(
                    format!("{p}.mlp.ffn_sub_norm.weight"),
                    vec![i],
                    TensorRole::Norm,
                );
            }
        }
        push("model.norm.weight".into(), vec![h], TensorRole::Norm);
        if !self.tie_word_embeddings {
            push("lm_head.weight".into(), vec![v, h], TensorRole::Head);
        }
        out
    }

    /// Total parameters (tied head counted once).
    pub fn num_parameters(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum()
    }

    /// Parameters of the linear layers (ternary when the spec says so).
    pub fn num_linear_parameters(&self) -> u64 {
        self.tensors()
            .iter()
            .filter(|t| t.role == TensorRole::Linear)
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum()
    }
}

/// Tensors that Hugging Face checkpoints may carry and that no model needs (buffers).
pub fn is_ignorable_tensor(name: &str) -> bool {
    name.ends_with(".rotary_emb.inv_freq")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> HfConfig {
        HfConfig::parse(Path::new("config.json"), json).unwrap()
    }

    const BITNET_2B4T: &str = r#"{
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
        "hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 30,
        "num_attention_heads": 20, "num_key_value_heads": 5, "vocab_size": 128256,
        "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
        "tie_word_embeddings": true, "torch_dtype": "bfloat16"
    }"#;

    #[test]
    fn bitnet_2b4t_parameter_count() {
        let spec = ModelSpec::from_config(&cfg(BITNET_2B4T)).unwrap();
        assert_eq!(spec.head_dim, 128);
        assert_eq!(spec.quant.activations, ActivationQuant::Int8);
        // 30 × (2560·(2560 + 2·640 + 2560) + 3·2560·6912) ternary weights.
        assert_eq!(
            spec.num_linear_parameters(),
            30 * (2560 * 6400 + 3 * 2560 * 6912)
        );
        assert_eq!(spec.tensors().len(), 1 + 30 * 11 + 1);
    }

    #[test]
    fn round_trips_unknown_fields() {
        let c = cfg(BITNET_2B4T);
        let back = cfg(&c.to_json());
        assert_eq!(back.extra["torch_dtype"], "bfloat16");
        assert_eq!(back.extra["architectures"][0], "BitNetForCausalLM");
    }

    #[test]
    fn rejects_inconsistent_shapes() {
        let cases = [
            (
                r#""num_key_value_heads": 3"#,
                "does not divide num_attention_heads",
            ),
            (
                r#""num_attention_heads": 15"#,
                "does not divide hidden_size",
            ),
            (r#""hidden_act": "gelu""#, "hidden_act"),
            (r#""hidden_size": 0"#, "hidden_size = 0"),
            (r#""rms_norm_eps": -1.0"#, "rms_norm_eps"),
        ];
        for (field, want) in cases {
            let mut v: serde_json::Value = serde_json::from_str(BITNET_2B4T).unwrap();
            let patch: serde_json::Value = serde_json::from_str(&format!("{{{field}}}")).unwrap();
            for (k, x) in patch.as_object().unwrap() {
                v[k] = x.clone();
            }
            let c: HfConfig = serde_json::from_value(v).unwrap();
            let err = ModelSpec::from_config(&c).unwrap_err().to_string();
            assert!(err.contains(want), "{field}: {err}");
        }
    }

    #[test]
    fn tern_section_selects_trilm_quantization() {
        let json = BITNET_2B4T
            .replace(r#""model_type": "bitnet""#, r#""model_type": "llama""#)
            .replace(
                r#""torch_dtype": "bfloat16""#,
                r#""tern": {"weights": "ternary", "weight_scale": "shard", "weight_shards": 4}"#,
            );
        let spec = ModelSpec::from_config(&cfg(&json)).unwrap();
        assert_eq!(spec.quant.scale, ScaleGranularity::Shards(4));
        assert_eq!(spec.quant.activations, ActivationQuant::None);
        let bad = json.replace(r#""weight_shards": 4"#, r#""weight_shards": 7"#);
        assert!(
            ModelSpec::from_config(&cfg(&bad))
                .unwrap_err()
                .to_string()
                .contains("does not divide")
        );
    }

    #[test]
    fn floats_survive_a_rewrite_exactly() {
        // Found by the `config` fuzz target: without serde_json's `float_roundtrip`, this value
        // parsed one ulp away from what its printed form parses to.
        let json = BITNET_2B4T.replace(
            r#""rms_norm_eps": 1e-05"#,
            r#""rms_norm_eps": 1.0000000000000001e-45"#,
        );
        let a = ModelSpec::from_config(&cfg(&json)).unwrap();
        let b = ModelSpec::from_config(&cfg(&cfg(&json).to_json())).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rope_theta_from_transformers_v5_rope_parameters() {
        let json = BITNET_2B4T.replace(
            r#""rope_theta": 500000.0"#,
            r#""rope_parameters": {"rope_theta": 250000.0, "rope_type": "default"}"#,
        );
        assert_eq!(
            ModelSpec::from_config(&cfg(&json)).unwrap().rope_theta,
            250000.0
        );
    }

    #[test]
    fn sub_norms_on_a_llama_round_trip_through_the_tern_section() {
        let json = BITNET_2B4T
            .replace(r#""model_type": "bitnet""#, r#""model_type": "qwen2""#)
            .replace(
                r#""torch_dtype": "bfloat16""#,
                r#""tern": {"weights": "ternary", "activations": "int8", "sub_norms": true}"#,
            );
        let spec = ModelSpec::from_config(&cfg(&json)).unwrap();
        assert!(spec.sub_norms && spec.qkv_bias);
        let names: Vec<String> = spec.tensors().into_iter().map(|t| t.name).collect();
        assert!(names.contains(&"model.layers.0.self_attn.attn_sub_norm.weight".to_string()));
        assert!(names.contains(&"model.layers.29.mlp.ffn_sub_norm.weight".to_string()));
        let mut c = cfg(&json);
        c.tern = Some(spec.tern_config());
        assert_eq!(c.tern.as_ref().unwrap().sub_norms, Some(true));
        assert_eq!(ModelSpec::from_config(&c).unwrap(), spec);
        // BitNet implies them, so its section does not spell them out.
        let bitnet = ModelSpec::from_config(&cfg(BITNET_2B4T)).unwrap();
        assert_eq!(bitnet.tern_config().sub_norms, None);
    }
}
