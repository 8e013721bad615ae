//! What `tern infer` and `tern bench` share: opening a model directory, threads, kernel choice.

use std::path::Path;

use anyhow::{Context, bail};
use tern_infer::kernels::Isa;
use tern_infer::{ActivationFormat, HeadFormat, KvDtype, LoadOptions, Model, Prefetch};
use tern_pack::checkpoint::packed::{FORMAT, WEIGHTS_FILE};
use tern_pack::checkpoint::{LatentCheckpoint, PackedCheckpoint};
use tern_pack::safetensors::SafetensorsFile;

/// Kernel and head options common to `infer` and `bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct EngineArgs {
    /// Worker threads (default: every core).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// LM head format: `native` (as stored: f16/bf16/f32) or `q8` (int8 per row, half the
    /// bytes of f16; activations quantized to int8 for it).
    #[arg(long, default_value = "native", value_parser = |s: &str| HeadFormat::from_name(s).ok_or_else(|| format!("`{s}`: use native or q8")))]
    pub head: HeadFormat,
    /// Activations of the ternary layers: `native` (as the model was trained: int8 for BitNet,
    /// floats for TriLM-style models) or `int8` (per-token absmax int8 and integer dot products
    /// for every ternary layer; for a float-activation model an approximation, as llama.cpp's
    /// TQ1_0/TQ2_0 make, and several times faster on the CPU).
    #[arg(long, default_value = "native", value_parser = |s: &str| ActivationFormat::from_name(s).ok_or_else(|| format!("`{s}`: use native or int8")))]
    pub activations: ActivationFormat,
    /// Kernels: auto (best this CPU runs), generic, avx2, avx512, avx512-vnni.
    #[arg(long, default_value = "auto")]
    pub isa: String,
    /// How decode steps prefetch what they read once (weights, head, KV cache): `nta`
    /// (non-temporally, sparing the caches), `l2` (into L2, safe from a neighbour on the same
    /// core), or `auto` (both measured as the steps run, the faster held).
    #[arg(long, default_value = "auto", value_parser = |s: &str| Prefetch::from_name(s).ok_or_else(|| format!("`{s}`: use auto, nta or l2")))]
    pub prefetch: Prefetch,
    /// Where the model runs: cpu, or gpu (the WGSL kernels through wgpu: Vulkan, Metal or
    /// DX12; needs a build with `--features wgpu`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: Device,
}

/// `--device` of `infer` and `bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    Cpu,
    Gpu,
}

/// `--kv`'s parser (for `tern infer` and `tern bench`).
pub fn parse_kv(s: &str) -> Result<KvDtype, String> {
    KvDtype::from_name(s).ok_or_else(|| format!("`{s}`: use f16, f32 or q8"))
}

/// Uploads `model` to the first GPU adapter wgpu finds, saying which on stderr.
#[cfg(feature = "wgpu")]
pub fn gpu_model(model: &Model<'_>) -> anyhow::Result<tern_infer::gpu::GpuModel> {
    let ctx = tern_infer::gpu::GpuContext::new()?;
    eprintln!("GPU: {}", ctx.describe());
    Ok(tern_infer::gpu::GpuModel::upload(&ctx, model)?)
}

/// Without the GPU path compiled in, `--device gpu` says how to get it.
#[cfg(not(feature = "wgpu"))]
pub fn gpu_model(_: &Model<'_>) -> anyhow::Result<std::convert::Infallible> {
    bail!(
        "--device gpu: this tern was built without the GPU path; build it with \
         `cargo build --release --features wgpu`"
    )
}

impl EngineArgs {
    /// Builds the thread pool and the load options. Callers run their whole command inside
    /// `pool.install`, so the sequential parts of a forward run on a worker and the parallel
    /// parts split without waking an extra thread per layer.
    pub fn setup(&self) -> anyhow::Result<(LoadOptions, rayon::ThreadPool)> {
        let threads = match self.threads {
            Some(0) => bail!("--threads must be at least 1"),
            Some(t) => t,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("cannot start the thread pool")?;
        let isa = if self.isa == "auto" {
            Isa::detect()
        } else {
            let isa = Isa::from_name(&self.isa).with_context(|| {
                format!(
                    "--isa `{}`: use auto, generic, avx2, avx512 or avx512-vnni",
                    self.isa
                )
            })?;
            if !Isa::available().contains(&isa) {
                bail!("--isa {}: this CPU does not support it", isa.name());
            }
            isa
        };
        Ok((
            LoadOptions {
                isa,
                head: self.head,
                activations: self.activations,
                prefetch: self.prefetch,
            },
            pool,
        ))
    }
}

/// A model directory opened for serving: packed (memory-mapped) or float (read into memory).
pub enum Opened {
    Packed(PackedCheckpoint),
    Float(LatentCheckpoint),
}

impl Opened {
    /// Opens `dir`, telling a tern packed checkpoint from a float one by its metadata.
    pub fn open(dir: &Path) -> anyhow::Result<Opened> {
        let single = dir.join(WEIGHTS_FILE);
        let packed = single.is_file()
            && SafetensorsFile::open(&single)?
                .header
                .metadata
                .get("format")
                .is_some_and(|f| f == FORMAT);
        Ok(if packed {
            Opened::Packed(PackedCheckpoint::open(dir)?)
        } else {
            Opened::Float(LatentCheckpoint::open(dir)?)
        })
    }

    /// The model over this checkpoint.
    pub fn model(&self, opts: LoadOptions) -> anyhow::Result<Model<'_>> {
        Ok(match self {
            Opened::Packed(p) => Model::from_packed(p, opts)?,
            Opened::Float(l) => {
                let spec = l.spec()?;
                l.check_no_unknown(&spec)?;
                Model::from_float(&spec, l, &l.dir, opts)?
            }
        })
    }

    /// `ternary-2bit`, `ternary-1.6bit` or `float`, and the size of the weights.
    pub fn describe(&self) -> (String, u64) {
        match self {
            Opened::Packed(p) => (p.codec.name().to_string(), p.file_size()),
            Opened::Float(l) => {
                let bytes = std::fs::read_dir(&l.dir)
                    .map(|d| {
                        d.filter_map(|e| e.ok())
                            .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                            .filter_map(|e| e.metadata().ok())
                            .map(|m| m.len())
                            .sum()
                    })
                    .unwrap_or(0);
                ("float".to_string(), bytes)
            }
        }
    }

    pub fn config(&self) -> &tern_pack::spec::HfConfig {
        match self {
            Opened::Packed(p) => &p.config,
            Opened::Float(l) => &l.config,
        }
    }
}
