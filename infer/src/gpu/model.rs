//! The whole forward pass on the GPU: a [`GpuModel`] holds every weight on the device (uploaded
//! once from a loaded [`Model`], packed ternary matrices as stored), and a [`GpuSession`] holds
//! the KV cache and the activations of one generation. A forward pass of a batch of tokens is
//! one command buffer and one submission: embedding lookup, per layer RMSNorm (fused with the
//! int8 quantizer for BitNet), q/k/v, RoPE and the cache append, attention, o (added to the
//! residual in the kernel), the FFN, then the final norm, the head and, for greedy decoding,
//! argmax. Only the chosen token (4 bytes) or the wanted logits come back.
//!
//! The arithmetic follows the CPU engine's ([`crate::model`]) step by step, so that the two
//! agree within a float budget and pick the same greedy tokens (`tests/gpu_forward.rs`).
//!
//! Activation buffers hold `[batch, stride]` floats (or int8 codes, 4 per word) where the
//! stride of a width is the most slots any matrix reading it needs (a packed row's digits,
//! padding included); the float kernels ignore the padding slots, the quantizer writes zeros
//! there. The KV cache is f32, one buffer per layer and per k/v.

use tern_pack::checkpoint::PackedTensor;
use tern_pack::spec::ModelSpec;

use super::{GpuContext, GpuError, GpuTernaryMatrix, Result, scoped};
use crate::linear::{DenseLinear, DenseStore, Linear, LinearView, TernaryActivations};
use crate::model::{Head, Model};

/// A dense f32 / f16 / bf16 matrix on the device, stored as the checkpoint stores it.
pub(crate) struct DenseMatrix {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    /// `values.wgsl`'s format code.
    pub(crate) format: u32,
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) bytes: usize,
}

impl DenseMatrix {
    fn upload(ctx: &GpuContext, name: &str, d: &DenseLinear<'_>) -> Result<DenseMatrix> {
        let (format, bytes): (u32, &[u8]) = match &d.weights {
            DenseStore::F32(w) => (0, bytemuck::cast_slice(w)),
            DenseStore::F16(w) => (1, bytemuck::cast_slice(w)),
            DenseStore::Bf16(w) => (2, bytemuck::cast_slice(w)),
        };
        if d.weights.len() != d.rows * d.cols {
            return Err(GpuError::shape(
                name,
                format!("{} values for [{}, {}]", d.weights.len(), d.rows, d.cols),
            ));
        }
        let buffer = storage_init(ctx, name, bytes)?;
        Ok(DenseMatrix {
            rows: d.rows,
            cols: d.cols,
            format,
            buffer,
            bytes: bytes.len(),
        })
    }
}

/// A matrix of the model on the device.
pub(crate) enum Matrix {
    Ternary(GpuTernaryMatrix),
    Dense(DenseMatrix),
}

impl Matrix {
    fn upload(ctx: &GpuContext, name: &str, w: &dyn Linear) -> Result<Matrix> {
        match w.view() {
            LinearView::Ternary(t) => {
                let packed = PackedTensor {
                    codec: t.codec,
                    rows: t.rows,
                    cols: t.cols,
                    data: t.data,
                    scales: &t.scales,
                };
                Ok(Matrix::Ternary(GpuTernaryMatrix::upload(
                    ctx,
                    name,
                    &packed,
                    t.activations,
                )?))
            }
            LinearView::Dense(d) => Ok(Matrix::Dense(DenseMatrix::upload(ctx, name, d)?)),
            LinearView::Q8(_) => Err(GpuError::Unsupported {
                what: name.to_string(),
                reason: "the 8-bit head runs on the CPU only; serve the native head on the GPU \
                         (--head native)"
                    .into(),
            }),
        }
    }

    fn rows(&self) -> usize {
        match self {
            Matrix::Ternary(t) => t.rows(),
            Matrix::Dense(d) => d.rows,
        }
    }

    fn cols(&self) -> usize {
        match self {
            Matrix::Ternary(t) => t.cols(),
            Matrix::Dense(d) => d.cols,
        }
    }

    pub(crate) fn wants_i8(&self) -> bool {
        matches!(self, Matrix::Ternary(t) if t.activations() == TernaryActivations::Int8)
    }

    /// Activation slots per token the matrix reads.
    fn slots(&self) -> usize {
        match self {
            Matrix::Ternary(t) => t.slots(),
            Matrix::Dense(d) => d.cols,
        }
    }

    fn weight_bytes(&self) -> usize {
        match self {
            Matrix::Ternary(t) => t.weight_bytes(),
            Matrix::Dense(d) => d.bytes,
        }
    }
}

/// A projection and its optional bias.
pub(crate) struct Proj {
    pub(crate) m: Matrix,
    pub(crate) bias: Option<wgpu::Buffer>,
}

impl Proj {
    fn upload(ctx: &GpuContext, name: &str, p: &crate::model::Proj<'_>) -> Result<Proj> {
        let m = Matrix::upload(ctx, &format!("{name}.weight"), p.w.as_ref())?;
        let bias = match &p.bias {
            Some(b) => Some(storage_init(
                ctx,
                &format!("{name}.bias"),
                bytemuck::cast_slice(b),
            )?),
            None => None,
        };
        Ok(Proj { m, bias })
    }
}

pub(crate) struct Layer {
    pub(crate) input_norm: wgpu::Buffer,
    pub(crate) q: Proj,
    pub(crate) k: Proj,
    pub(crate) v: Proj,
    pub(crate) o: Proj,
    pub(crate) attn_sub_norm: Option<wgpu::Buffer>,
    pub(crate) post_norm: wgpu::Buffer,
    pub(crate) gate: Proj,
    pub(crate) up: Proj,
    pub(crate) down: Proj,
    pub(crate) ffn_sub_norm: Option<wgpu::Buffer>,
}

/// A model resident on the GPU.
pub struct GpuModel {
    pub(crate) ctx: GpuContext,
    pub(crate) spec: ModelSpec,
    pub(crate) embed: DenseMatrix,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: wgpu::Buffer,
    /// `None`: tied to the embedding.
    pub(crate) head: Option<Matrix>,
    pub(crate) inv_freq: Vec<f32>,
    /// Bound where a kernel has no bias or gain.
    pub(crate) none: wgpu::Buffer,
    pub(crate) resident_bytes: u64,
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuModel")
            .field("adapter", &self.ctx.describe())
            .field("layers", &self.layers.len())
            .field("resident_bytes", &self.resident_bytes)
            .finish()
    }
}

fn storage_init(ctx: &GpuContext, name: &str, bytes: &[u8]) -> Result<wgpu::Buffer> {
    let limits = ctx.inner.device.limits();
    let max = limits
        .max_storage_buffer_binding_size
        .min(limits.max_buffer_size);
    if bytes.len() as u64 > max {
        return Err(GpuError::limit(
            name,
            format!(
                "{} bytes exceed this device's storage binding of {max}",
                bytes.len()
            ),
        ));
    }
    use wgpu::util::DeviceExt;
    let device = &ctx.inner.device;
    // A binding holds at least one word.
    let padded;
    let contents = if bytes.len() < 4 {
        padded = [0u8; 4];
        &padded[..]
    } else {
        bytes
    };
    scoped(device, &format!("uploading {name}"), || {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(name),
            contents,
            usage: wgpu::BufferUsages::STORAGE,
        })
    })
}

impl GpuModel {
    /// Uploads every weight of `model` (as loaded for the CPU: packed matrices zero-copy from
    /// the memory map) to `ctx`'s device.
    pub fn upload(ctx: &GpuContext, model: &Model<'_>) -> Result<GpuModel> {
        let f32s = |name: String, v: &[f32]| storage_init(ctx, &name, bytemuck::cast_slice(v));
        let embed = DenseMatrix::upload(ctx, "model.embed_tokens.weight", &model.embed)?;
        let mut layers = Vec::with_capacity(model.layers.len());
        for (l, layer) in model.layers.iter().enumerate() {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            let proj = |s: &str, w| Proj::upload(ctx, &p(s), w);
            let opt = |s: &str, g: &Option<Vec<f32>>| -> Result<Option<wgpu::Buffer>> {
                g.as_ref().map(|g| f32s(p(s), g)).transpose()
            };
            layers.push(Layer {
                input_norm: f32s(p("input_layernorm.weight"), &layer.input_norm)?,
                q: proj("self_attn.q_proj", &layer.q)?,
                k: proj("self_attn.k_proj", &layer.k)?,
                v: proj("self_attn.v_proj", &layer.v)?,
                o: proj("self_attn.o_proj", &layer.o)?,
                attn_sub_norm: opt("self_attn.attn_sub_norm.weight", &layer.attn_sub_norm)?,
                post_norm: f32s(p("post_attention_layernorm.weight"), &layer.post_norm)?,
                gate: proj("mlp.gate_proj", &layer.gate)?,
                up: proj("mlp.up_proj", &layer.up)?,
                down: proj("mlp.down_proj", &layer.down)?,
                ffn_sub_norm: opt("mlp.ffn_sub_norm.weight", &layer.ffn_sub_norm)?,
            });
        }
        let head = match &model.head {
            Head::Tied => None,
            Head::Own(h) => Some(Matrix::upload(ctx, "lm_head.weight", h.as_ref())?),
        };
        let norm = f32s("model.norm.weight".into(), &model.norm)?;
        let none = storage_init(ctx, "tern none", &[0u8; 16])?;
        let mut gpu = GpuModel {
            ctx: ctx.clone(),
            spec: model.spec.clone(),
            embed,
            layers,
            norm,
            head,
            inv_freq: model.inv_freq.clone(),
            none,
            resident_bytes: 0,
        };
        let norms: usize = model
            .layers
            .iter()
            .map(|l| {
                l.input_norm.len()
                    + l.post_norm.len()
                    + l.attn_sub_norm.as_ref().map_or(0, Vec::len)
                    + l.ffn_sub_norm.as_ref().map_or(0, Vec::len)
            })
            .sum::<usize>()
            + model.norm.len();
        gpu.resident_bytes = (gpu.embed.bytes
            + gpu.head.as_ref().map_or(0, Matrix::weight_bytes)
            + gpu.layer_weight_bytes()
            + 4 * norms) as u64;
        Ok(gpu)
    }

    /// Multiply-accumulates of the linear layers per token.
    pub fn linear_macs_per_token(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .map(|p| (p.m.rows() * p.m.cols()) as u64)
            .sum()
    }

    fn layer_weight_bytes(&self) -> usize {
        self.layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .map(|p| p.m.weight_bytes())
            .sum()
    }

    /// The model's shape.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// The device it lives on.
    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Bytes of weights on the device.
    pub fn resident_bytes(&self) -> u64 {
        self.resident_bytes
    }

    /// What the linear layers read, as [`crate::Model::activations`] says.
    pub fn activations(&self) -> &'static str {
        if self.layers.first().is_some_and(|l| l.q.m.wants_i8()) {
            "int8"
        } else {
            "float"
        }
    }

    /// Bytes of weights read per decoded token: every linear layer and the head (as
    /// [`Model::weight_bytes_per_token`] counts them).
    pub fn weight_bytes_per_token(&self) -> u64 {
        let head = match &self.head {
            Some(h) => h.weight_bytes(),
            None => self.embed.bytes,
        };
        (self.layer_weight_bytes() + head) as u64
    }

    pub(crate) fn head(&self) -> HeadRef<'_> {
        match &self.head {
            Some(m) => HeadRef::Own(m),
            None => HeadRef::Tied(&self.embed),
        }
    }

    /// The activation stride for inputs of `width` features read by `readers`: the most slots
    /// any of them reads, in whole words.
    pub(crate) fn stride(width: usize, readers: &[&Matrix]) -> usize {
        readers
            .iter()
            .map(|m| m.slots())
            .fold(width, usize::max)
            .next_multiple_of(4)
    }
}

pub(crate) enum HeadRef<'m> {
    Own(&'m Matrix),
    Tied(&'m DenseMatrix),
}
