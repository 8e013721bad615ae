//! The machinery under [`super::GpuTernaryMatrix`]: compiled pipelines, reused per-call buffers,
//! one dispatch and its read-back.

use tern_pack::codec::Codec;

use super::{GpuError, Inner, Result, scoped};

pub(crate) const STEP_WGSL: &str = include_str!("step.wgsl");
const COMMON_WGSL: &str = include_str!("common.wgsl");
const F32_WGSL: &str = include_str!("ternary_f32.wgsl");
const I8_WGSL: &str = include_str!("ternary_i8.wgsl");

/// The uniform `Params` of `common.wgsl`, field by field (see there).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Params {
    pub rows: u32,
    pub row_words: u32,
    pub full_words: u32,
    pub tail_words: u32,
    pub x_stride: u32,
    pub rows_per_scale: u32,
    pub groups_x: u32,
    pub dequantize: u32,
    pub out_stride: u32,
    pub accumulate: u32,
    pub has_bias: u32,
    pub use_m: u32,
}
pub(crate) const PARAMS_BYTES: u64 = 48;
/// The uniform `Step` of `common.wgsl`: `n, start, first, m`.
pub(crate) const STEP_BYTES: u64 = 16;

impl Params {
    pub fn words(self) -> [u32; 12] {
        [
            self.rows,
            self.row_words,
            self.full_words,
            self.tail_words,
            self.x_stride,
            self.rows_per_scale,
            self.groups_x,
            self.dequantize,
            self.out_stride,
            self.accumulate,
            self.has_bias,
            self.use_m,
        ]
    }
}

/// Which kernel a call runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// `ternary_f32.wgsl`: bindings weights, scales, xs, out, params, step, bias.
    Float,
    /// `ternary_i8.wgsl`: bindings weights, scales, codes, tokens, out, params, step, bias.
    Int8,
}

/// Token tiles the kernels are compiled for: the whole tile of [`super::TOKENS_PER_WORKGROUP`]
/// for batches, and a single token for decode steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tile {
    Batch,
    Single,
}

impl Tile {
    /// The tile for a batch of `n` tokens.
    pub fn for_tokens(n: usize) -> Tile {
        if n == 1 { Tile::Single } else { Tile::Batch }
    }

    /// Tokens per workgroup.
    pub fn tokens(self) -> u32 {
        match self {
            Tile::Batch => super::TOKENS_PER_WORKGROUP as u32,
            Tile::Single => 1,
        }
    }

    fn index(self) -> usize {
        match self {
            Tile::Batch => 0,
            Tile::Single => 1,
        }
    }
}

/// A kernel's source with its token tile set (`const TILE: u32 = 8u;` in the source).
pub(crate) fn with_tile(src: &str, tile: Tile) -> String {
    let line = "const TILE: u32 = 8u;";
    debug_assert!(src.contains(line), "a tiled kernel declares TILE");
    src.replace(line, &format!("const TILE: u32 = {}u;", tile.tokens()))
}

/// The compiled pipelines: {batch, single-token tile} × {2-bit, 1.6-bit} × {f32, int8}.
pub(crate) struct Kernels {
    f32: [[wgpu::ComputePipeline; 2]; 2],
    i8: [[wgpu::ComputePipeline; 2]; 2],
}

impl Kernels {
    pub fn new(device: &wgpu::Device) -> Kernels {
        let module = |label: &str, body: &str, tile: Tile| {
            let src = with_tile(&format!("{STEP_WGSL}\n{COMMON_WGSL}\n{body}"), tile);
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            })
        };
        let pipeline = |module: &wgpu::ShaderModule, codec: Codec| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(codec.name()),
                layout: None,
                module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &[("TRITS", codec.trits_per_byte() as f64)],
                    // Every workgroup word is written before it is read.
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
        };
        let tiles = |body: &str, label: &str| {
            [Tile::Batch, Tile::Single].map(|t| {
                let m = module(label, body, t);
                Codec::ALL.map(|c| pipeline(&m, c))
            })
        };
        Kernels {
            f32: tiles(F32_WGSL, "tern ternary x f32"),
            i8: tiles(I8_WGSL, "tern ternary x i8"),
        }
    }

    pub fn get(&self, kernel: Kernel, codec: Codec, tile: Tile) -> &wgpu::ComputePipeline {
        let c = match codec {
            Codec::Bits2 => 0,
            Codec::Bits1_6 => 1,
        };
        match kernel {
            Kernel::Float => &self.f32[tile.index()][c],
            Kernel::Int8 => &self.i8[tile.index()][c],
        }
    }
}

/// Per-call buffers, reused while large enough.
pub(crate) struct Scratch {
    params: wgpu::Buffer,
    step: wgpu::Buffer,
    /// Bound where a kernel has no bias.
    no_bias: wgpu::Buffer,
    xs: Option<wgpu::Buffer>,
    tokens: Option<wgpu::Buffer>,
    out: Option<wgpu::Buffer>,
    readback: Option<wgpu::Buffer>,
}

impl Scratch {
    pub fn new(device: &wgpu::Device) -> Scratch {
        Scratch {
            params: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tern params"),
                size: PARAMS_BYTES,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            step: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tern step"),
                size: STEP_BYTES,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            no_bias: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("tern no bias"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            }),
            xs: None,
            tokens: None,
            out: None,
            readback: None,
        }
    }
}

/// The buffer in `slot`, replaced by one of `size` bytes if it is smaller.
fn grow(
    device: &wgpu::Device,
    slot: &mut Option<wgpu::Buffer>,
    size: u64,
    usage: wgpu::BufferUsages,
    label: &str,
) -> wgpu::Buffer {
    match slot {
        Some(b) if b.size() >= size => b.clone(),
        _ => {
            let b = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            });
            *slot = Some(b.clone());
            b
        }
    }
}

/// One call: the matrix's resident buffers and the per-call inputs, already checked against the
/// device limits by the caller.
pub(crate) struct Call<'a> {
    /// Names the call in errors.
    pub what: &'a str,
    pub kernel: Kernel,
    pub codec: Codec,
    /// Packed weights and scales.
    pub weights: &'a wgpu::Buffer,
    pub scales: &'a wgpu::Buffer,
    /// Activations (f32 or int8) in slot order, a multiple of 4 bytes.
    pub xs: &'a [u8],
    /// Int8 only: `(x_scale bits, code sum)` per token.
    pub tokens: &'a [u32],
    /// Tokens in the batch.
    pub n: u32,
    pub params: Params,
    /// Workgroups along x, y, z.
    pub grid: [u32; 3],
    /// Bytes of the output, `[n, rows]` words.
    pub out_bytes: u64,
}

/// Writes the call's inputs, dispatches once, and reads the output back.
pub(crate) fn dispatch(inner: &Inner, call: Call<'_>) -> Result<Vec<u32>> {
    let device = &inner.device;
    if let Some(e) = inner.uncaptured.lock().ok().and_then(|mut e| e.take()) {
        return Err(GpuError::device(call.what, format!("earlier error: {e}")));
    }
    let mut scratch = inner
        .scratch
        .lock()
        .map_err(|_| GpuError::device(call.what, "a previous call panicked"))?;
    let s = &mut *scratch;
    use wgpu::BufferUsages as U;
    let read = scoped(device, call.what, || {
        let q = &inner.queue;
        let input = U::STORAGE | U::COPY_DST;
        let xs = grow(device, &mut s.xs, call.xs.len() as u64, input, "tern xs");
        q.write_buffer(&xs, 0, call.xs);
        q.write_buffer(&s.params, 0, bytemuck::cast_slice(&call.params.words()));
        q.write_buffer(&s.step, 0, bytemuck::cast_slice(&[call.n, 0, 0, call.n]));
        let mut bound = vec![call.weights.clone(), call.scales.clone(), xs];
        if call.kernel == Kernel::Int8 {
            let bytes = (call.tokens.len() * 4) as u64;
            let tokens = grow(device, &mut s.tokens, bytes, input, "tern tokens");
            q.write_buffer(&tokens, 0, bytemuck::cast_slice(call.tokens));
            bound.push(tokens);
        }
        let (size, output) = (call.out_bytes, U::STORAGE | U::COPY_SRC);
        let out = grow(device, &mut s.out, size, output, "tern out");
        let readback = U::MAP_READ | U::COPY_DST;
        let readback = grow(device, &mut s.readback, size, readback, "tern readback");
        bound.extend([
            out.clone(),
            s.params.clone(),
            s.step.clone(),
            s.no_bias.clone(),
        ]);

        let tile = Tile::for_tokens(call.n as usize);
        let pipeline = inner.kernels.get(call.kernel, call.codec, tile);
        let entries: Vec<wgpu::BindGroupEntry<'_>> = bound
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(call.what),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        let mut enc = device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind_group, &[]);
            let [x, y, z] = call.grid;
            pass.dispatch_workgroups(x, y, z);
        }
        enc.copy_buffer_to_buffer(&out, 0, &readback, 0, size);
        q.submit([enc.finish()]);
        read_back(device, &readback, size)
    })?;
    read.map_err(|e| GpuError::device(call.what, e))
}

/// Maps the first `bytes` of `buffer` once the queue is idle, and copies them out.
pub(crate) fn read_back(
    device: &wgpu::Device,
    buffer: &wgpu::Buffer,
    bytes: u64,
) -> Result<Vec<u32>, String> {
    let slice = buffer.slice(..bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| e.to_string())?;
    rx.recv()
        .map_err(|_| "the mapping callback never ran".to_string())?
        .map_err(|e| e.to_string())?;
    let words = {
        let view = slice.get_mapped_range().map_err(|e| e.to_string())?;
        bytemuck::pod_collect_to_vec::<u8, u32>(&view)
    };
    buffer.unmap();
    Ok(words)
}
