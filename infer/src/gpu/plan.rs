//! The recorded dispatches of a [`super::GpuSession`]: which kernel runs on which buffers, with
//! which static parameters, and how its grid follows the batch. Built once per session; a
//! forward pass only writes the `Step` uniform and replays them.

use tern_pack::quant::ABSMAX_EPS;
use tern_pack::spec::Activation;

use super::TOKENS_PER_WORKGROUP;
use super::dispatch::{Kernel, Params, Tile};
use super::model::{DenseMatrix, GpuModel, Layer, Matrix};
use super::ops::WORKGROUP;
use super::session::Buffers;
use super::ternary::row_block_grid;

/// Which count of tokens a dispatch covers.
#[derive(Clone, Copy)]
pub(crate) enum Count {
    /// The batch (`step.n`).
    N,
    /// The logits rows (`step.m`).
    M,
}

/// How a dispatch's grid follows the batch.
#[derive(Clone, Copy)]
pub(crate) enum Grid {
    /// `(x, count, 1)`.
    PerToken(u32, Count),
    /// `(x, y, ceil(count / 8))`: the matrix kernels' row blocks and token tiles.
    /// (`count == 1` runs the single-token variant, whose one tile is the same grid.)
    Tiles(u32, u32, Count),
    /// `(1, 1, 1)`.
    One,
}

impl Grid {
    /// Tokens the dispatch covers.
    pub(crate) fn count(self, n: u32, m: u32) -> u32 {
        let c = |c: Count| match c {
            Count::N => n,
            Count::M => m,
        };
        match self {
            Grid::PerToken(_, count) | Grid::Tiles(_, _, count) => c(count),
            Grid::One => 1,
        }
    }

    pub(crate) fn size(self, n: u32, m: u32) -> [u32; 3] {
        let count = self.count(n, m);
        match self {
            Grid::PerToken(x, _) => [x, count, 1],
            Grid::Tiles(x, y, _) => [x, y, count.div_ceil(TOKENS_PER_WORKGROUP as u32)],
            Grid::One => [1, 1, 1],
        }
    }
}

/// One recorded dispatch.
pub(crate) struct Op {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) bind: wgpu::BindGroup,
    pub(crate) grid: Grid,
    /// The single-token variant of a matrix kernel and its bind group (auto layouts are per
    /// pipeline), run when the dispatch covers one token.
    pub(crate) single: Option<(wgpu::ComputePipeline, wgpu::BindGroup)>,
}

impl Op {
    /// The pipeline and bind group for a pass of `n` tokens and `m` logits rows.
    pub(crate) fn choose(&self, n: u32, m: u32) -> (&wgpu::ComputePipeline, &wgpu::BindGroup) {
        match &self.single {
            Some((p, b)) if self.grid.count(n, m) == 1 => (p, b),
            _ => (&self.pipeline, &self.bind),
        }
    }
}

/// Where a matrix reads its input.
#[derive(Clone, Copy)]
pub(crate) enum Input<'b> {
    /// `[batch, stride]` floats.
    F32(&'b wgpu::Buffer, usize),
    /// `[batch, stride / 4]` words of int8 codes and per-token `(x_scale, sum)`.
    I8(&'b wgpu::Buffer, &'b wgpu::Buffer, usize),
}

/// Where a matrix writes.
pub(crate) struct Out<'b> {
    pub(crate) buf: &'b wgpu::Buffer,
    pub(crate) stride: usize,
    pub(crate) accumulate: bool,
    pub(crate) bias: Option<&'b wgpu::Buffer>,
    pub(crate) count: Count,
}

/// The normed input of some matrices, in the forms they read.
pub(crate) struct NormOut<'b> {
    f32: Option<Input<'b>>,
    i8: Option<Input<'b>>,
}

impl<'b> NormOut<'b> {
    pub(crate) fn pick(&self, m: &Matrix) -> Input<'b> {
        if m.wants_i8() {
            self.i8.expect("an int8 reader was planned")
        } else {
            self.float()
        }
    }
    pub(crate) fn float(&self) -> Input<'b> {
        self.f32.expect("a float reader was planned")
    }
}

/// Builds the recorded dispatches of a session.
pub(crate) struct Planner<'p> {
    pub(crate) model: &'p GpuModel,
    pub(crate) b: &'p Buffers,
    pub(crate) eps: f32,
    pub(crate) batch: usize,
    pub(crate) capacity: usize,
}

impl<'p> Planner<'p> {
    fn device(&self) -> &wgpu::Device {
        &self.model.ctx.inner.device
    }

    pub(crate) fn uniform(&self, label: &str, words: &[u32]) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(words),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    pub(crate) fn op(
        &self,
        pipeline: &wgpu::ComputePipeline,
        label: &str,
        bound: &[(u32, &wgpu::Buffer)],
        grid: Grid,
    ) -> Op {
        let entries: Vec<wgpu::BindGroupEntry<'_>> = bound
            .iter()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: *i,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind = self.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Op {
            pipeline: pipeline.clone(),
            bind,
            grid,
            single: None,
        }
    }

    /// [`Self::op`] for a matrix kernel compiled for both token tiles.
    fn tiled(
        &self,
        [batch, single]: [&wgpu::ComputePipeline; 2],
        label: &str,
        bound: &[(u32, &wgpu::Buffer)],
        grid: Grid,
    ) -> Op {
        let one = self.op(single, label, bound, grid);
        Op {
            single: Some((one.pipeline, one.bind)),
            ..self.op(batch, label, bound, grid)
        }
    }

    pub(crate) fn embed(&self) -> Op {
        let e = &self.model.embed;
        let params = self.uniform("embed", &[e.cols as u32, e.format, 0, 0]);
        self.op(
            &self.model.ctx.inner.ops.embed,
            "embed",
            &[
                (0, &self.b.tokens),
                (1, &e.buffer),
                (2, &self.b.x),
                (3, &params),
                (4, &self.b.step),
            ],
            Grid::PerToken((e.cols as u32).div_ceil(WORKGROUP), Count::N),
        )
    }

    /// RMSNorm of `src` (`(buffer, width, stride)`) with `gain` (none: pass through) into the
    /// forms `readers` need, float in `xn` and/or int8 in `codes`, at `stride`. With
    /// `logits_rows` the rows are the logits rows (`step.first ..`, `step.m` of them).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn norm(
        &self,
        label: &str,
        src: (&'p wgpu::Buffer, usize, usize),
        gain: Option<&wgpu::Buffer>,
        readers: &[&Matrix],
        stride: usize,
        logits_rows: bool,
        ops: &mut Vec<Op>,
    ) -> NormOut<'p> {
        let (buf, k, in_stride) = src;
        let want_i8 = readers.iter().any(|m| m.wants_i8());
        // The tied head (no reader listed) reads floats.
        let want_f32 = readers.is_empty() || readers.iter().any(|m| !m.wants_i8());
        let count = if logits_rows { Count::M } else { Count::N };
        let ops_ = &self.model.ctx.inner.ops;
        let gain_buf = gain.unwrap_or(&self.model.none);
        let mut out = NormOut {
            f32: None,
            i8: None,
        };
        let params = |out_stride: usize| {
            self.uniform(
                label,
                &[
                    k as u32,
                    in_stride as u32,
                    out_stride as u32,
                    gain.is_some() as u32,
                    self.eps.to_bits(),
                    logits_rows as u32,
                    ABSMAX_EPS.to_bits(),
                    0,
                ],
            )
        };
        if want_f32 {
            let p = params(stride);
            ops.push(self.op(
                &ops_.norm_f32,
                label,
                &[
                    (0, buf),
                    (1, gain_buf),
                    (2, &self.b.xn),
                    (5, &p),
                    (6, &self.b.step),
                ],
                Grid::PerToken(1, count),
            ));
            out.f32 = Some(Input::F32(&self.b.xn, stride));
        }
        if want_i8 {
            let p = params(stride / 4);
            ops.push(self.op(
                &ops_.norm_i8,
                label,
                &[
                    (0, buf),
                    (1, gain_buf),
                    (3, &self.b.codes),
                    (4, &self.b.tokq),
                    (5, &p),
                    (6, &self.b.step),
                ],
                Grid::PerToken(1, count),
            ));
            out.i8 = Some(Input::I8(&self.b.codes, &self.b.tokq, stride));
        }
        out
    }

    /// `out = W · input` (+ bias, or added to `out`) for a model matrix.
    pub(crate) fn matmul(&self, label: &str, m: &Matrix, input: Input<'_>, out: Out<'_>) -> Op {
        match m {
            Matrix::Dense(d) => match input {
                Input::F32(..) => self.dense(label, d, input, out),
                Input::I8(..) => unreachable!("dense matrices read floats"),
            },
            Matrix::Ternary(t) => {
                let (kernel, stride) = match input {
                    Input::F32(_, s) => (Kernel::Float, s),
                    Input::I8(_, _, s) => (Kernel::Int8, s),
                };
                let (gx, gy) = t.grid_xy();
                let params = Params {
                    x_stride: (stride / 4) as u32,
                    dequantize: 1,
                    out_stride: out.stride as u32,
                    accumulate: out.accumulate as u32,
                    has_bias: out.bias.is_some() as u32,
                    use_m: matches!(out.count, Count::M) as u32,
                    ..t.layout_params(gx)
                };
                let params = self.uniform(label, &params.words());
                let k = &self.model.ctx.inner.kernels;
                let pipelines =
                    [Tile::Batch, Tile::Single].map(|tile| k.get(kernel, t.codec(), tile));
                let bias = out.bias.unwrap_or(&self.model.none);
                let (w, s) = t.buffers();
                let bound: Vec<(u32, &wgpu::Buffer)> = match input {
                    Input::F32(x, _) => vec![
                        (0, w),
                        (1, s),
                        (2, x),
                        (3, out.buf),
                        (4, &params),
                        (5, &self.b.step),
                        (6, bias),
                    ],
                    Input::I8(codes, tokq, _) => vec![
                        (0, w),
                        (1, s),
                        (2, codes),
                        (3, tokq),
                        (4, out.buf),
                        (5, &params),
                        (6, &self.b.step),
                        (7, bias),
                    ],
                };
                self.tiled(pipelines, label, &bound, Grid::Tiles(gx, gy, out.count))
            }
        }
    }

    pub(crate) fn dense(&self, label: &str, d: &DenseMatrix, input: Input<'_>, out: Out<'_>) -> Op {
        let Input::F32(x, stride) = input else {
            unreachable!("dense matrices read floats")
        };
        let (gx, gy) = row_block_grid(&self.device().limits(), d.rows);
        let params = self.uniform(
            label,
            &[
                d.rows as u32,
                d.cols as u32,
                stride as u32,
                out.stride as u32,
                gx,
                out.accumulate as u32,
                out.bias.is_some() as u32,
                matches!(out.count, Count::M) as u32,
                d.format,
                0,
                0,
                0,
            ],
        );
        let [batch, single] = &self.model.ctx.inner.ops.dense;
        self.tiled(
            [batch, single],
            label,
            &[
                (0, &d.buffer),
                (1, x),
                (2, out.buf),
                (3, &params),
                (4, &self.b.step),
                (5, out.bias.unwrap_or(&self.model.none)),
            ],
            Grid::Tiles(gx, gy, out.count),
        )
    }

    /// The dispatches of decoder layer `l`.
    pub(crate) fn layer(
        &self,
        l: usize,
        layer: &'p Layer,
        (s_h, s_q, s_i): (usize, usize, usize),
        ops: &mut Vec<Op>,
    ) {
        let spec = &self.model.spec;
        let b = self.b;
        let (h, hd) = (spec.hidden_size, spec.head_dim);
        let (heads, kv_heads) = (spec.num_heads, spec.num_kv_heads);
        let (qd, kvd, inter) = (heads * hd, kv_heads * hd, spec.intermediate_size);
        let name = |s: &str| format!("layer {l} {s}");
        let to = |buf, stride, bias: &'p Option<wgpu::Buffer>| Out {
            buf,
            stride,
            accumulate: false,
            bias: bias.as_ref(),
            count: Count::N,
        };
        let residual = |bias: &'p Option<wgpu::Buffer>| Out {
            buf: &b.x,
            stride: h,
            accumulate: true,
            bias: bias.as_ref(),
            count: Count::N,
        };

        // Attention.
        let readers = [&layer.q.m, &layer.k.m, &layer.v.m];
        let xin = self.norm(
            &name("input norm"),
            (&b.x, h, h),
            Some(&layer.input_norm),
            &readers,
            s_h,
            false,
            ops,
        );
        for (p, out, w) in [
            (&layer.q, &b.q, qd),
            (&layer.k, &b.k, kvd),
            (&layer.v, &b.v, kvd),
        ] {
            ops.push(self.matmul(&name("qkv"), &p.m, xin.pick(&p.m), to(out, w, &p.bias)));
        }
        let ops_ = &self.model.ctx.inner.ops;
        let rope = self.uniform(
            &name("rope"),
            &[
                heads as u32,
                kv_heads as u32,
                hd as u32,
                qd as u32,
                kvd as u32,
                (self.batch * (hd / 2)) as u32,
                0,
                0,
            ],
        );
        let jobs = (heads * hd / 2 + kv_heads * hd / 2 + kvd) as u32;
        ops.push(self.op(
            &ops_.rope_kv,
            &name("rope"),
            &[
                (0, &b.q),
                (1, &b.k),
                (2, &b.v),
                (3, &b.rope),
                (4, &b.k_cache[l]),
                (5, &b.v_cache[l]),
                (6, &rope),
                (7, &b.step),
            ],
            Grid::PerToken(jobs.div_ceil(WORKGROUP), Count::N),
        ));
        let attn = self.uniform(
            &name("attention"),
            &[
                heads as u32,
                kv_heads as u32,
                hd as u32,
                self.capacity as u32,
                qd as u32,
                s_q as u32,
                (1.0 / (hd as f32).sqrt()).to_bits(),
                0,
            ],
        );
        ops.push(self.op(
            &ops_.attention,
            &name("attention"),
            &[
                (0, &b.q),
                (1, &b.k_cache[l]),
                (2, &b.v_cache[l]),
                (3, &b.scores),
                (4, &b.attn),
                (5, &attn),
                (6, &b.step),
            ],
            Grid::PerToken(heads as u32, Count::N),
        ));
        let o_in = self.sub_norm(
            &name("attention sub-norm"),
            (&b.attn, qd, s_q),
            layer.attn_sub_norm.as_ref(),
            &layer.o.m,
            ops,
        );
        ops.push(self.matmul(&name("o"), &layer.o.m, o_in, residual(&layer.o.bias)));

        // Feed-forward.
        let readers = [&layer.gate.m, &layer.up.m];
        let xin = self.norm(
            &name("post-attention norm"),
            (&b.x, h, h),
            Some(&layer.post_norm),
            &readers,
            s_h,
            false,
            ops,
        );
        for (p, out) in [(&layer.gate, &b.gate), (&layer.up, &b.up)] {
            ops.push(self.matmul(
                &name("gate/up"),
                &p.m,
                xin.pick(&p.m),
                to(out, s_i, &p.bias),
            ));
        }
        let act = match spec.activation {
            Activation::Silu => 0,
            Activation::Relu2 => 1,
        };
        let params = self.uniform(&name("ffn"), &[inter as u32, s_i as u32, act, 0]);
        ops.push(self.op(
            &ops_.ffn_act,
            &name("ffn"),
            &[(0, &b.gate), (1, &b.up), (2, &params), (3, &b.step)],
            Grid::PerToken((inter as u32).div_ceil(WORKGROUP), Count::N),
        ));
        let d_in = self.sub_norm(
            &name("ffn sub-norm"),
            (&b.gate, inter, s_i),
            layer.ffn_sub_norm.as_ref(),
            &layer.down.m,
            ops,
        );
        ops.push(self.matmul(
            &name("down"),
            &layer.down.m,
            d_in,
            residual(&layer.down.bias),
        ));
    }

    /// The input of o or down: `src` through its SubLN and/or the int8 quantizer when the
    /// model has one or the reader wants int8, else `src` itself.
    fn sub_norm(
        &self,
        label: &str,
        src: (&'p wgpu::Buffer, usize, usize),
        gain: Option<&wgpu::Buffer>,
        reader: &Matrix,
        ops: &mut Vec<Op>,
    ) -> Input<'p> {
        let (buf, _, stride) = src;
        if gain.is_none() && !reader.wants_i8() {
            return Input::F32(buf, stride);
        }
        self.norm(label, src, gain, &[reader], stride, false, ops)
            .pick(reader)
    }
}
