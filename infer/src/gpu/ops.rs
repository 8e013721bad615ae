//! The kernels of the whole forward pass besides the ternary matrices: embedding lookup,
//! RMSNorm (optionally fused with int8 quantization), RoPE with the KV-cache append, attention,
//! the FFN activation, dense matrices (head, float layers) and argmax. Each is one WGSL file
//! with the shared `Step` header; see those files for the arithmetic, which follows the CPU
//! engine's.

use super::dispatch::{STEP_WGSL, Tile, with_tile};

const VALUES_WGSL: &str = include_str!("values.wgsl");
const EMBED_WGSL: &str = include_str!("embed.wgsl");
const NORM_WGSL: &str = include_str!("norm.wgsl");
const ROPE_KV_WGSL: &str = include_str!("rope_kv.wgsl");
const ATTENTION_WGSL: &str = include_str!("attention.wgsl");
const FFN_ACT_WGSL: &str = include_str!("ffn_act.wgsl");
const DENSE_WGSL: &str = include_str!("dense.wgsl");
const ARGMAX_WGSL: &str = include_str!("argmax.wgsl");

/// Threads per workgroup of every kernel here.
pub(crate) const WORKGROUP: u32 = 256;

/// The compiled pipelines.
pub(crate) struct Ops {
    pub embed: wgpu::ComputePipeline,
    pub norm_f32: wgpu::ComputePipeline,
    pub norm_i8: wgpu::ComputePipeline,
    pub rope_kv: wgpu::ComputePipeline,
    pub attention: wgpu::ComputePipeline,
    pub ffn_act: wgpu::ComputePipeline,
    /// The batch and the single-token tiles (see `common.wgsl`).
    pub dense: [wgpu::ComputePipeline; 2],
    pub argmax: wgpu::ComputePipeline,
}

impl Ops {
    pub fn new(device: &wgpu::Device) -> Ops {
        let module = |label: &str, parts: &[&str]| {
            let mut src = String::from(STEP_WGSL);
            for p in parts {
                src.push('\n');
                src.push_str(p);
            }
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            })
        };
        let pipeline = |module: &wgpu::ShaderModule, label: &str, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[],
                    // Every workgroup word is written before it is read.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        };
        let norm = module("tern norm", &[NORM_WGSL]);
        Ops {
            embed: pipeline(
                &module("tern embed", &[VALUES_WGSL, EMBED_WGSL]),
                "tern embed",
                "main",
            ),
            norm_f32: pipeline(&norm, "tern norm f32", "norm_f32"),
            norm_i8: pipeline(&norm, "tern norm i8", "norm_i8"),
            rope_kv: pipeline(&module("tern rope", &[ROPE_KV_WGSL]), "tern rope", "main"),
            attention: pipeline(
                &module("tern attention", &[ATTENTION_WGSL]),
                "tern attention",
                "main",
            ),
            ffn_act: pipeline(&module("tern ffn act", &[FFN_ACT_WGSL]), "tern ffn", "main"),
            dense: [Tile::Batch, Tile::Single].map(|t| {
                let src = with_tile(DENSE_WGSL, t);
                pipeline(
                    &module("tern dense", &[VALUES_WGSL, &src]),
                    "tern dense",
                    "main",
                )
            }),
            argmax: pipeline(
                &module("tern argmax", &[ARGMAX_WGSL]),
                "tern argmax",
                "main",
            ),
        }
    }
}
