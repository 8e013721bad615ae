//! Packed ternary matrices on the GPU: upload once, multiply many times, one dispatch per call.
//!
//! # Workgroup design
//! A decode step (`n = 1`) reads every weight byte once and does a few operations per byte, so it
//! is bound by memory bandwidth; the design aims at wide, contiguous reads of the packed rows.
//!
//! * A workgroup is 256 threads: [`ROWS_PER_WORKGROUP`] (8) rows × [`THREADS_PER_ROW`] (32)
//!   lanes. Lane `l` of a row reads the row's u32 words `l, l + 32, l + 64, ...`, so the 32 lanes
//!   together read 128 contiguous bytes per step (one coalesced transaction), and the 8 rows of a
//!   workgroup are 8 consecutive rows of the buffer.
//! * Per word a thread decodes the `T` digit planes (4 or 5) in registers (`common.wgsl`); plane
//!   `p` of the word's 4 bytes meets 4 *contiguous* activations (the codec's plane layout), read
//!   as one `vec4<f32>` or one packed word of 4 int8 codes. Each thread keeps one accumulator per
//!   token of its tile of [`TOKENS_PER_WORKGROUP`] (8) tokens, so a decoded word serves up to 8
//!   tokens; the grid's z dimension walks the tiles (prefill re-reads the weights once per tile,
//!   mostly from cache).
//! * The 32 partial sums of a row are added in workgroup memory (5 tree steps), and lane 0
//!   applies the scales and writes `out[i, r]`.
//! * The grid is `(x, y, z)`: `y · x_count + x` numbers the blocks of 8 rows (`y > 1` only past
//!   [`MAX_GROUPS_PER_DIMENSION`] blocks), `z` the token tiles.
//!
//! Activations are uploaded per token in the packed row's slot order with zeros past `k`
//! (`row_bytes · T` slots), so padding slots add nothing and the shader has no bounds checks
//! inside a row. Weights are uploaded as stored: pack pads every row to 4 bytes, so word `w` of
//! row `r` is word `r · row_bytes / 4 + w` of the buffer.
//!
//! # Arithmetic (the same as [`crate::linear::TernaryLinear`])
//! * Float: `out[i, r] = (Σ_j t[r, j] · x[i, j]) / s(r)`, the sum in the kernel's own order.
//! * Int8: the host quantizes each token with the CPU engine's quantizer
//!   ([`QuantizedRows`]); the kernel sums `t · q` exactly in i32 and writes
//!   `acc as f32 / (x_scale[i] · s(r))`.

use tern_pack::checkpoint::PackedTensor;
use tern_pack::checkpoint::packed::validate_packed;
use tern_pack::codec::{Codec, GROUP_BYTES};

use super::dispatch::{Call, Kernel, Params, dispatch};
use super::{GpuContext, GpuError, Result, scoped};
use crate::kernels::{Isa, MAX_K};
use crate::linear::{QuantizedRows, TernaryActivations};

/// Threads that share one row (`LANES` in `common.wgsl`).
pub const THREADS_PER_ROW: usize = 32;
/// Rows per workgroup (`ROWS_PER_WG`).
pub const ROWS_PER_WORKGROUP: usize = 8;
/// Tokens per workgroup (`TILE`).
pub const TOKENS_PER_WORKGROUP: usize = 8;
/// Workgroups per grid dimension this code uses: WebGPU's guaranteed minimum, so that the row
/// blocks fold into a second dimension past the same row count (524,280) on every device.
pub const MAX_GROUPS_PER_DIMENSION: usize = 65_535;

/// A packed ternary matrix `[rows, cols]` resident on the GPU, with its scales.
pub struct GpuTernaryMatrix {
    ctx: GpuContext,
    name: String,
    codec: Codec,
    rows: usize,
    cols: usize,
    scale_count: usize,
    activations: TernaryActivations,
    weights: wgpu::Buffer,
    scales: wgpu::Buffer,
}

impl std::fmt::Debug for GpuTernaryMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTernaryMatrix")
            .field("name", &self.name)
            .field("codec", &self.codec)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("scales", &self.scale_count)
            .field("activations", &self.activations)
            .finish()
    }
}

impl GpuTernaryMatrix {
    /// Validates a packed matrix (shape, every byte, every scale) and uploads it to `ctx`.
    /// `name` labels errors and GPU buffers; `activations` picks what [`Self::forward`] runs.
    pub fn upload(
        ctx: &GpuContext,
        name: &str,
        t: &PackedTensor<'_>,
        activations: TernaryActivations,
    ) -> Result<GpuTernaryMatrix> {
        let (rows, cols) = (t.rows, t.cols);
        if rows == 0 || !(1..=MAX_K).contains(&cols) {
            return Err(GpuError::shape(
                name,
                format!("[{rows}, {cols}]: rows must be >= 1 and columns in 1..={MAX_K}"),
            ));
        }
        let rb = t.codec.row_bytes(cols);
        if rows.checked_mul(rb) != Some(t.data.len()) {
            return Err(GpuError::shape(
                name,
                format!(
                    "[{rows}, {cols}] in {} needs {rows} x {rb} bytes, got {}",
                    t.codec,
                    t.data.len()
                ),
            ));
        }
        let n_scales = t.scales.len();
        if n_scales == 0 || !rows.is_multiple_of(n_scales) {
            return Err(GpuError::shape(
                name,
                format!("{n_scales} scales do not split {rows} rows into equal shards"),
            ));
        }
        if let Some(i) = t.scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(GpuError::format(
                name,
                format!("scale {i} is {}, not a positive finite number", t.scales[i]),
            ));
        }
        validate_packed(t.codec, t.data, rows, cols).map_err(|e| GpuError::format(name, e))?;

        let limits = ctx.inner.device.limits();
        let bytes = t.data.len() as u64;
        let max_bind = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        if bytes > max_bind || bytes / 4 > u32::MAX as u64 {
            return Err(GpuError::limit(
                name,
                format!("{bytes} packed bytes exceed this device's storage binding of {max_bind}"),
            ));
        }
        let blocks = rows.div_ceil(ROWS_PER_WORKGROUP) as u64;
        let per_dim = (limits.max_compute_workgroups_per_dimension as u64)
            .min(MAX_GROUPS_PER_DIMENSION as u64);
        if blocks > per_dim * per_dim {
            return Err(GpuError::limit(
                name,
                format!("{rows} rows need too many workgroups"),
            ));
        }
        use wgpu::util::DeviceExt;
        let device = &ctx.inner.device;
        let (weights, scales) = scoped(device, &format!("uploading {name}"), || {
            let init = |label: String, contents: &[u8]| {
                device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(&label),
                    contents,
                    usage: wgpu::BufferUsages::STORAGE,
                })
            };
            (
                init(format!("{name} packed"), t.data),
                init(format!("{name} scales"), bytemuck::cast_slice(t.scales)),
            )
        })?;
        Ok(GpuTernaryMatrix {
            ctx: ctx.clone(),
            name: name.to_string(),
            codec: t.codec,
            rows,
            cols,
            scale_count: n_scales,
            activations,
            weights,
            scales,
        })
    }

    /// The name given at upload.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The packing of the weights.
    pub fn codec(&self) -> Codec {
        self.codec
    }
    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input features (`k`).
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// What [`Self::forward`] does with its input.
    pub fn activations(&self) -> TernaryActivations {
        self.activations
    }
    /// Bytes of weights and scales resident on the device (what one call reads).
    pub fn weight_bytes(&self) -> usize {
        self.rows * self.codec.row_bytes(self.cols) + 4 * self.scale_count
    }

    /// `out[i, r] = Σ_j W[r, j] · xs[i, j]` for `n` tokens (`xs` is `[n, cols]`, `out` is
    /// `[n, rows]`), as [`crate::linear::TernaryLinear`]'s `forward` computes it: floats
    /// ([`TernaryActivations::Float`]) or int8 codes from the CPU engine's quantizer.
    pub fn forward(&self, xs: &[f32], n: usize) -> Result<Vec<f32>> {
        self.check_tokens(xs.len(), n, "activations")?;
        match self.activations {
            TernaryActivations::Float => {
                let xs = self.to_slots(xs, n, 0.0f32);
                let out = self.run(Kernel::Float, bytemuck::cast_slice(&xs), &[], n, false)?;
                Ok(bits_to_f32(&out))
            }
            TernaryActivations::Int8 => {
                let q = QuantizedRows::new(Isa::detect(), xs, n, self.cols);
                self.forward_quantized(&q)
            }
        }
    }

    /// The int8 path on activations already quantized (`q.codes` `[n, cols]`, one scale and sum
    /// per token): `out[i, r] = (Σ_j t[r, j] · q[i, j]) as f32 / (x_scale[i] · s(r))`.
    pub fn forward_quantized(&self, q: &QuantizedRows) -> Result<Vec<f32>> {
        let n = q.scales.len();
        self.check_tokens(q.codes.len(), n, "int8 codes")?;
        if q.sums.len() != n {
            return Err(GpuError::shape(
                &self.name,
                format!("{} code sums for {n} tokens", q.sums.len()),
            ));
        }
        let tokens: Vec<u32> = q
            .scales
            .iter()
            .zip(&q.sums)
            .flat_map(|(s, &sum)| [s.to_bits(), sum as u32])
            .collect();
        let codes = self.to_slots(&q.codes, n, 0i8);
        let out = self.run(Kernel::Int8, bytemuck::cast_slice(&codes), &tokens, n, true)?;
        Ok(bits_to_f32(&out))
    }

    /// The exact integer sums `out[i, r] = Σ_j t[r, j] · codes[i, j]` (`codes` is `[n, cols]`,
    /// any int8 values, −128 included): what `tern_pack::dot::dot_i8` computes, bit for bit.
    pub fn dot_i8(&self, codes: &[i8], n: usize) -> Result<Vec<i32>> {
        self.check_tokens(codes.len(), n, "int8 codes")?;
        let tokens: Vec<u32> = codes
            .chunks_exact(self.cols)
            .flat_map(|x| {
                [
                    1.0f32.to_bits(),
                    x.iter().map(|&v| v as i32).sum::<i32>() as u32,
                ]
            })
            .collect();
        let slots = self.to_slots(codes, n, 0i8);
        let out = self.run(
            Kernel::Int8,
            bytemuck::cast_slice(&slots),
            &tokens,
            n,
            false,
        )?;
        Ok(out.into_iter().map(|b| b as i32).collect())
    }

    fn check_tokens(&self, len: usize, n: usize, what: &str) -> Result<()> {
        if n == 0 || n.checked_mul(self.cols) != Some(len) {
            return Err(GpuError::shape(
                &self.name,
                format!(
                    "{len} {what} are not [n >= 1, {}] (n = {n}) for a [{}, {}] matrix",
                    self.cols, self.rows, self.cols
                ),
            ));
        }
        Ok(())
    }

    /// Activation slots per token: every digit slot of a packed row, padding included.
    pub(crate) fn slots(&self) -> usize {
        self.codec.row_bytes(self.cols) * self.codec.trits_per_byte()
    }

    /// `[n, cols]` values laid out as `[n, slots]`, zero past `cols`. The slot of weight `j` is
    /// `j` itself (the codec numbers the weights of a row in order, padding last).
    fn to_slots<T: Copy>(&self, xs: &[T], n: usize, zero: T) -> Vec<T> {
        let s = self.slots();
        let mut out = vec![zero; n * s];
        for (src, dst) in xs.chunks_exact(self.cols).zip(out.chunks_exact_mut(s)) {
            dst[..self.cols].copy_from_slice(src);
        }
        out
    }

    /// Checks a batch of `n` tokens against the device limits, dispatches once, and reads back
    /// `[n, rows]` words.
    fn run(
        &self,
        kernel: Kernel,
        xs: &[u8],
        tokens: &[u32],
        n: usize,
        dequantize: bool,
    ) -> Result<Vec<u32>> {
        let limits = self.ctx.inner.device.limits();
        let max_bind = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size)
            .min(u32::MAX as u64);
        let (x_bytes, out_bytes) = (xs.len() as u64, (n * self.rows * 4) as u64);
        let tiles = n.div_ceil(TOKENS_PER_WORKGROUP) as u64;
        let per_dim = (limits.max_compute_workgroups_per_dimension as u64)
            .min(MAX_GROUPS_PER_DIMENSION as u64);
        if x_bytes > max_bind || out_bytes > max_bind || tiles > per_dim {
            return Err(GpuError::limit(
                &self.name,
                format!(
                    "{n} tokens need {x_bytes} activation and {out_bytes} output bytes and \
                     {tiles} token tiles; this device binds at most {max_bind} bytes and \
                     dispatches {per_dim} workgroups per dimension"
                ),
            ));
        }
        let (groups_x, groups_y) = self.grid_xy();
        let params = Params {
            x_stride: (self.slots() / 4) as u32,
            dequantize: dequantize as u32,
            out_stride: self.rows as u32,
            ..self.layout_params(groups_x)
        };
        let what = format!("{} x {n} tokens", self.name);
        dispatch(
            &self.ctx.inner,
            Call {
                what: &what,
                kernel,
                codec: self.codec,
                weights: &self.weights,
                scales: &self.scales,
                xs,
                tokens,
                n: n as u32,
                params,
                grid: [groups_x, groups_y, tiles as u32],
                out_bytes,
            },
        )
    }
}

impl GpuTernaryMatrix {
    /// Workgroups along x and y: blocks of 8 rows, numbered `y · groups_x + x` (upload checked
    /// that they fit in two dimensions).
    pub(crate) fn grid_xy(&self) -> (u32, u32) {
        row_block_grid(&self.ctx.inner.device.limits(), self.rows)
    }

    /// The fields of `Params` that describe the matrix (the rest zero).
    pub(crate) fn layout_params(&self, groups_x: u32) -> Params {
        Params {
            rows: self.rows as u32,
            row_words: (self.codec.row_bytes(self.cols) / 4) as u32,
            full_words: (self.codec.full_groups(self.cols) * GROUP_BYTES / 4) as u32,
            tail_words: (self.codec.tail_bytes(self.cols) / 4) as u32,
            rows_per_scale: (self.rows / self.scale_count) as u32,
            groups_x,
            ..Params::default()
        }
    }

    /// The packed weights and the scales.
    pub(crate) fn buffers(&self) -> (&wgpu::Buffer, &wgpu::Buffer) {
        (&self.weights, &self.scales)
    }
}

/// Workgroups along x and y for `rows` rows in blocks of [`ROWS_PER_WORKGROUP`], numbered
/// `y · groups_x + x` (the matrix kernels' row walk).
pub(crate) fn row_block_grid(limits: &wgpu::Limits, rows: usize) -> (u32, u32) {
    let per_dim =
        (limits.max_compute_workgroups_per_dimension as u64).min(MAX_GROUPS_PER_DIMENSION as u64);
    let blocks = rows.div_ceil(ROWS_PER_WORKGROUP) as u64;
    let groups_x = blocks.min(per_dim);
    (groups_x as u32, blocks.div_ceil(groups_x) as u32)
}

fn bits_to_f32(words: &[u32]) -> Vec<f32> {
    words.iter().map(|&b| f32::from_bits(b)).collect()
}
