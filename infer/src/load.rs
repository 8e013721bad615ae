//! Building a [`Model`] from a packed checkpoint (zero-copy over its memory map) or from any
//! float [`WeightSource`] (a latent checkpoint, or random weights for benchmarks).

use std::borrow::Cow;
use std::path::Path;

use half::{bf16, f16};
use tern_pack::checkpoint::PackedCheckpoint;
use tern_pack::convert::WeightSource;
use tern_pack::safetensors::Dtype;
use tern_pack::spec::{ActivationQuant, ModelSpec, TensorRole, TensorSpec};

use crate::error::{Error, Result};
use crate::hugemem;
use crate::kernels::Isa;
use crate::linear::{DenseLinear, DenseStore, Linear, Q8Linear, TernaryActivations, TernaryLinear};
use crate::model::{Head, Layer, Model, Prefetch, Proj, Tuner};

/// How the LM head is kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadFormat {
    /// As stored (f16/bf16/f32), read through the float kernels.
    #[default]
    Native,
    /// Quantized at load to int8 per row (absmax), with int8 activations: half the bytes of f16.
    Q8,
}

impl HeadFormat {
    /// Parses `native` / `q8`.
    pub fn from_name(s: &str) -> Option<HeadFormat> {
        match s {
            "native" | "f16" | "bf16" | "f32" => Some(HeadFormat::Native),
            "q8" | "8" | "int8" => Some(HeadFormat::Q8),
            _ => None,
        }
    }
}

/// The activations the ternary layers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ActivationFormat {
    /// As the model's config says: int8 for BitNet, floats for TriLM-style models (exact).
    #[default]
    Native,
    /// Int8 for every ternary layer (BitNet's per-token absmax quantizer and the integer
    /// kernels), also where the model was trained with float activations: an approximation
    /// there, as llama.cpp's TQ1_0/TQ2_0 quantize activations to 8 bits.
    Int8,
}

impl ActivationFormat {
    /// Parses `native` / `int8`.
    pub fn from_name(s: &str) -> Option<ActivationFormat> {
        match s {
            "native" => Some(ActivationFormat::Native),
            "int8" | "i8" | "q8" => Some(ActivationFormat::Int8),
            _ => None,
        }
    }
}

/// Options for loading a model.
#[derive(Debug, Clone, Copy)]
pub struct LoadOptions {
    /// Kernels to use ([`Isa::detect`] by default).
    pub isa: Isa,
    pub head: HeadFormat,
    /// What the ternary layers read (the model's own by default).
    pub activations: ActivationFormat,
    /// How decode steps prefetch the streams they read once (measured as they run, by default).
    pub prefetch: Prefetch,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            isa: Isa::detect(),
            head: HeadFormat::Native,
            activations: ActivationFormat::Native,
            prefetch: Prefetch::Auto,
        }
    }
}

/// Where tensors come from while a model is assembled.
trait Tensors<'a> {
    fn linear(&self, t: &TensorSpec, isa: Isa) -> Result<Box<dyn Linear + 'a>>;
    fn dense(&self, t: &TensorSpec) -> Result<DenseStore<'a>>;
    fn vector(&self, t: &TensorSpec) -> Result<Vec<f32>>;
}

/// A typed view of little-endian bytes: borrowed when aligned, copied otherwise.
fn typed<'a, T: bytemuck::Pod>(bytes: Cow<'a, [u8]>) -> Cow<'a, [T]> {
    match bytes {
        Cow::Borrowed(b) => match bytemuck::try_cast_slice(b) {
            Ok(v) => Cow::Borrowed(v),
            Err(_) => Cow::Owned(hugemem::copied(b)),
        },
        Cow::Owned(b) => Cow::Owned(hugemem::copied(&b)),
    }
}

fn store<'a>(
    path: &Path,
    name: &str,
    dtype: Dtype,
    bytes: Cow<'a, [u8]>,
) -> Result<DenseStore<'a>> {
    Ok(match dtype {
        Dtype::F32 => DenseStore::F32(typed::<f32>(bytes)),
        Dtype::F16 => DenseStore::F16(typed::<f16>(bytes)),
        Dtype::BF16 => DenseStore::Bf16(typed::<bf16>(bytes)),
        other => {
            return Err(Error::tensor(
                path,
                name,
                format!("{other} is not a float type (f32, f16, bf16)"),
            ));
        }
    })
}

struct Packed<'a> {
    ckpt: &'a PackedCheckpoint,
    activations: TernaryActivations,
}

impl<'a> Tensors<'a> for Packed<'a> {
    fn linear(&self, t: &TensorSpec, isa: Isa) -> Result<Box<dyn Linear + 'a>> {
        let p = self.ckpt.ternary(&t.name)?;
        Ok(Box::new(TernaryLinear {
            isa,
            codec: p.codec,
            rows: p.rows,
            cols: p.cols,
            data: p.data,
            scales: p.scales.to_vec(),
            activations: self.activations,
        }))
    }

    fn dense(&self, t: &TensorSpec) -> Result<DenseStore<'a>> {
        let (dtype, _, bytes) = self.ckpt.raw(&t.name)?;
        store(&self.ckpt.path, &t.name, dtype, Cow::Borrowed(bytes))
    }

    fn vector(&self, t: &TensorSpec) -> Result<Vec<f32>> {
        Ok(self.ckpt.float(&t.name)?)
    }
}

struct Float<'s> {
    source: &'s dyn WeightSource,
    origin: &'s Path,
}

impl Float<'_> {
    fn read(&self, t: &TensorSpec) -> Result<(Dtype, Vec<u8>)> {
        let dtype = self.source.dtype(t)?;
        let mut bytes = Vec::with_capacity(t.shape.iter().product::<usize>() * dtype.size());
        self.source.stream(t, &mut |chunk| {
            bytes.extend_from_slice(chunk);
            Ok(())
        })?;
        Ok((dtype, bytes))
    }
}

impl<'s> Tensors<'static> for Float<'s> {
    fn linear(&self, t: &TensorSpec, isa: Isa) -> Result<Box<dyn Linear + 'static>> {
        Ok(Box::new(DenseLinear {
            isa,
            rows: t.shape[0],
            cols: t.shape[1],
            weights: self.dense(t)?,
        }))
    }

    fn dense(&self, t: &TensorSpec) -> Result<DenseStore<'static>> {
        let (dtype, bytes) = self.read(t)?;
        store(self.origin, &t.name, dtype, Cow::Owned(bytes))
    }

    fn vector(&self, t: &TensorSpec) -> Result<Vec<f32>> {
        let (dtype, bytes) = self.read(t)?;
        tern_pack::safetensors::to_f32(dtype, &bytes).ok_or_else(|| {
            Error::tensor(self.origin, &t.name, format!("{dtype} is not a float type"))
        })
    }
}

impl<'a> Model<'a> {
    /// Serves a packed checkpoint: ternary layers read straight from its memory map.
    pub fn from_packed(ckpt: &'a PackedCheckpoint, opts: LoadOptions) -> Result<Model<'a>> {
        let activations = match (ckpt.spec.quant.activations, opts.activations) {
            (ActivationQuant::Int8, _) | (_, ActivationFormat::Int8) => TernaryActivations::Int8,
            (ActivationQuant::None, ActivationFormat::Native) => TernaryActivations::Float,
        };
        assemble(&ckpt.spec, &Packed { ckpt, activations }, opts)
    }
}

impl Model<'static> {
    /// Serves float weights in full precision (the baseline, and the verifier of ternary
    /// models): every linear layer is dense, whatever the config's `tern` section says.
    /// `origin` names the source in errors.
    pub fn from_float(
        spec: &ModelSpec,
        source: &dyn WeightSource,
        origin: &Path,
        opts: LoadOptions,
    ) -> Result<Model<'static>> {
        if opts.activations == ActivationFormat::Int8 {
            return Err(Error::Usage(format!(
                "int8 activations are for ternary (packed) checkpoints; {} is served in full \
                 precision",
                origin.display()
            )));
        }
        assemble(spec, &Float { source, origin }, opts)
    }
}

fn assemble<'a>(spec: &ModelSpec, src: &dyn Tensors<'a>, opts: LoadOptions) -> Result<Model<'a>> {
    let tensors = spec.tensors();
    let find = |name: &str| -> &TensorSpec {
        tensors
            .iter()
            .find(|t| t.name == name)
            .expect("the spec lists its own tensors")
    };
    let has = |name: &str| tensors.iter().any(|t| t.name == name);
    let proj = |name: &str| -> Result<Proj<'a>> {
        let w = src.linear(find(&format!("{name}.weight")), opts.isa)?;
        let bias_name = format!("{name}.bias");
        let bias = if has(&bias_name) {
            Some(src.vector(find(&bias_name))?)
        } else {
            None
        };
        Ok(Proj { w, bias })
    };
    let optional = |name: String| -> Result<Option<Vec<f32>>> {
        if has(&name) {
            Ok(Some(src.vector(find(&name))?))
        } else {
            Ok(None)
        }
    };
    let mut layers = Vec::with_capacity(spec.num_layers);
    for l in 0..spec.num_layers {
        let p = format!("model.layers.{l}");
        layers.push(Layer {
            input_norm: src.vector(find(&format!("{p}.input_layernorm.weight")))?,
            q: proj(&format!("{p}.self_attn.q_proj"))?,
            k: proj(&format!("{p}.self_attn.k_proj"))?,
            v: proj(&format!("{p}.self_attn.v_proj"))?,
            o: proj(&format!("{p}.self_attn.o_proj"))?,
            attn_sub_norm: optional(format!("{p}.self_attn.attn_sub_norm.weight"))?,
            post_norm: src.vector(find(&format!("{p}.post_attention_layernorm.weight")))?,
            gate: proj(&format!("{p}.mlp.gate_proj"))?,
            up: proj(&format!("{p}.mlp.up_proj"))?,
            down: proj(&format!("{p}.mlp.down_proj"))?,
            ffn_sub_norm: optional(format!("{p}.mlp.ffn_sub_norm.weight"))?,
        });
    }
    let embed_spec = find("model.embed_tokens.weight");
    let embed = DenseLinear {
        isa: opts.isa,
        rows: spec.vocab_size,
        cols: spec.hidden_size,
        weights: src.dense(embed_spec)?,
    };
    let head = match (spec.tie_word_embeddings, opts.head) {
        (true, HeadFormat::Native) => Head::Tied,
        (true, HeadFormat::Q8) => Head::Own(Box::new(Q8Linear::quantize(
            opts.isa,
            embed.rows,
            embed.cols,
            &embed.weights,
        ))),
        (false, format) => {
            let t = tensors
                .iter()
                .find(|t| t.role == TensorRole::Head)
                .expect("an untied spec lists lm_head");
            let w = src.dense(t)?;
            match format {
                HeadFormat::Native => Head::Own(Box::new(DenseLinear {
                    isa: opts.isa,
                    rows: spec.vocab_size,
                    cols: spec.hidden_size,
                    weights: w,
                })),
                HeadFormat::Q8 => Head::Own(Box::new(Q8Linear::quantize(
                    opts.isa,
                    spec.vocab_size,
                    spec.hidden_size,
                    &w,
                ))),
            }
        }
    };
    Ok(Model {
        spec: spec.clone(),
        isa: opts.isa,
        embed,
        layers,
        norm: src.vector(find("model.norm.weight"))?,
        head,
        inv_freq: Model::rope_inv_freq(spec),
        prefetch: Tuner::new(opts.prefetch),
    })
}
