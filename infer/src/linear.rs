//! Linear layers behind one trait, so the model is written once whatever the weight format:
//! packed ternary (2-bit or 1.6-bit, int8 or f32 activations), dense f32/f16/bf16, and the
//! 8-bit LM head.
//!
//! Every layer computes `out[i, r] = Σ_j W[r, j] · x[i, j]` for `n` tokens `x` (`[n, k]`, row
//! major) into `out` (`[n, rows]`). Work is split over output rows on the threads of the
//! current rayon pool (through [`crate::team`]); each chunk calls a single-threaded kernel of
//! [`crate::kernels`].

use std::borrow::Cow;
use std::sync::OnceLock;

use half::{bf16, f16};
use rayon::prelude::*;
use tern_pack::codec::Codec;
use tern_pack::quant::quantize_activations_i8;

use crate::kernels::{self, DenseWeights, I8Activations, Isa};
use crate::team::{self, OutPtr};

mod token;
pub use token::forward_token;
pub(crate) use token::token_loop;
use token::token_region;

/// The activations entering a layer, with their int8 quantization when some layer wants it.
///
/// BitNet quantizes activations per token to int8 (absmax); q/k/v (and gate/up) read the same
/// input, so the model quantizes once and hands the same [`Input`] to each of them.
pub struct Input<'x> {
    /// Kernels for the quantizer.
    pub isa: Isa,
    /// Tokens in this batch.
    pub n: usize,
    /// Features per token.
    pub k: usize,
    /// `[n, k]` floats.
    pub x: &'x [f32],
    /// The int8 form, when computed.
    pub q: Option<QuantizedRows>,
    /// The int8 form arranged for the ternary kernels, once the first ternary layer asked.
    arranged: OnceLock<I8Activations>,
}

/// Per-token int8 activations (BitNet's absmax quantizer), with what the kernels need.
#[derive(Clone)]
pub struct QuantizedRows {
    /// `[n, k]` int8 codes.
    pub codes: Vec<i8>,
    /// Per token, the multiplier `x_scale` (`x ≈ code / x_scale`).
    pub scales: Vec<f32>,
    /// Per token, `Σ_j code_j`.
    pub sums: Vec<i32>,
}

impl QuantizedRows {
    /// Quantizes `[n, k]` floats token by token (a prefill's tokens spread over the team).
    pub fn new(isa: Isa, x: &[f32], n: usize, k: usize) -> QuantizedRows {
        assert_eq!(x.len(), n * k, "activation shape");
        let mut codes = vec![0i8; n * k];
        let mut stats = vec![(0f32, 0i32); n];
        team::for_token_rows2((&mut codes, k), (&mut stats, 1), |first, codes, stats| {
            let x = &x[first * k..];
            for ((xi, qi), s) in x.chunks_exact(k).zip(codes.chunks_exact_mut(k)).zip(stats) {
                *s = crate::attention::quantize_i8(isa, xi, qi);
            }
        });
        let (scales, sums) = stats.into_iter().unzip();
        QuantizedRows {
            codes,
            scales,
            sums,
        }
    }
}

impl<'x> Input<'x> {
    /// Floats only.
    pub fn float(isa: Isa, x: &'x [f32], n: usize, k: usize) -> Input<'x> {
        assert_eq!(x.len(), n * k, "activation shape");
        Input {
            isa,
            n,
            k,
            x,
            q: None,
            arranged: OnceLock::new(),
        }
    }

    /// Floats plus their int8 quantization when `quantize` is set.
    pub fn new(isa: Isa, x: &'x [f32], n: usize, k: usize, quantize: bool) -> Input<'x> {
        let mut input = Input::float(isa, x, n, k);
        if quantize {
            input.q = Some(QuantizedRows::new(isa, x, n, k));
        }
        input
    }

    fn quantized(&self) -> Cow<'_, QuantizedRows> {
        match &self.q {
            Some(q) => Cow::Borrowed(q),
            None => Cow::Owned(QuantizedRows::new(self.isa, self.x, self.n, self.k)),
        }
    }

    /// `q`, arranged for `isa`'s ternary kernels of `codec`: once per input when the int8 form
    /// is kept (q/k/v, and gate/up, share it), else for this call.
    fn arranged(&self, q: &QuantizedRows, isa: Isa, codec: Codec) -> Cow<'_, I8Activations> {
        let arrange = || I8Activations::new(isa, codec, &q.codes, &q.sums, self.k, self.n);
        if self.q.is_some() {
            let a = self.arranged.get_or_init(arrange);
            if a.fits(isa, codec) {
                return Cow::Borrowed(a);
            }
        }
        Cow::Owned(arrange())
    }
}

/// The concrete form of a [`Linear`], for code that moves weights elsewhere (the GPU path).
pub enum LinearView<'l, 'a> {
    Ternary(&'l TernaryLinear<'a>),
    Dense(&'l DenseLinear<'a>),
    Q8(&'l Q8Linear),
}

/// A linear layer `[rows, cols]` in some weight format.
pub trait Linear: Send + Sync {
    /// The layer's concrete form.
    fn view(&self) -> LinearView<'_, '_>;
    /// Output features.
    fn rows(&self) -> usize;
    /// Input features.
    fn cols(&self) -> usize;
    /// Whether the layer reads int8 activations (so the model should quantize once for it).
    fn wants_i8(&self) -> bool {
        false
    }
    /// Bytes of weights (and scales) one forward reads.
    fn weight_bytes(&self) -> usize;
    /// The weight bytes themselves, in the memory one forward reads (scales left out): what the
    /// benchmark streams to measure the read bandwidth of exactly these pages.
    fn weight_regions(&self) -> Vec<&[u8]>;
    /// `out[i, r] = Σ_j W[r, j] · x[i, j]`, `out` is `[n, rows]`: one token through
    /// [`Linear::token_rows`] (as [`forward_token`] runs it), a batch through
    /// [`Linear::forward_batch`].
    fn forward(&self, input: &Input<'_>, out: &mut [f32]) {
        if input.n == 1 {
            assert_eq!(out.len(), self.rows(), "output shape");
            token_region(&[self.token_rows(input)], &mut [out]);
        } else {
            self.forward_batch(input, out);
        }
    }
    /// [`Linear::forward`] of a batch (`input.n > 1`: prefill).
    fn forward_batch(&self, input: &Input<'_>, out: &mut [f32]);
    /// For one token (`input.n == 1`): the kernel of a range of rows (see [`RowKernel`]), with
    /// what every range shares (the input's int8 form, arranged for the kernels) prepared once.
    fn token_rows<'s>(&'s self, input: &'s Input<'_>) -> RowKernel<'s>;
}

/// One token's outputs over a range of rows: `kernel(first, out)` writes the finished outputs
/// of rows `first .. first + out.len()` into `out`.
pub type RowKernel<'s> = Box<dyn Fn(usize, &mut [f32]) + Sync + 's>;

/// Rows per parallel task: enough tasks to balance the current pool's threads, few enough to
/// stay cheap.
fn rows_per_task(rows: usize, n: usize) -> usize {
    rows_per_task_on(rows, n, rayon::current_num_threads().max(1))
}

/// [`rows_per_task`] for `threads` threads.
fn rows_per_task_on(rows: usize, n: usize, threads: usize) -> usize {
    if threads == 1 {
        return rows.max(1);
    }
    // Small chunks balance well; larger batches have more work per row. A decode step's
    // matrices are cut finer: each thread takes a contiguous run of tasks (`team`), so a task
    // boundary costs one claim, not a cold stream, and the last task of a region, which one
    // thread waits on, is short. 32 per thread rather than 8: at two threads on the 700M shape,
    // decode 88.4 → 91.6 tok/s (medians of six alternated runs).
    let tasks = threads * if n > 1 { 4 } else { 32 };
    rows.div_ceil(tasks).max(16)
}

/// Runs `kernel(first_row, rows_in_chunk, out_chunk)` over row chunks in parallel, where each
/// chunk writes `[rows_in_chunk, n]` into its slice of a `[rows, n]` buffer, finishes each row
/// through `finish(row, accumulators, outputs)` (`n` of each), then scatters the result into
/// `out` (`[n, rows]`). For several tokens (one token's layers go through [`forward_token`]).
///
/// A row is finished whole, over its tokens, so that the scaling vectorizes: one division per
/// element and call, with a per-token scale loaded each time, was about 0.11 of a 700M
/// prefill's samples at two threads (`perf record`, `-p 256 -n 2`), over a third of the
/// ternary kernels' own.
fn par_rows<T, K, F>(rows: usize, n: usize, out: &mut [f32], kernel: K, finish: F)
where
    T: bytemuck::Pod + Default + Send + Sync,
    K: Fn(usize, usize, &mut [T]) + Sync,
    F: Fn(usize, &[T], &mut [f32]) + Sync,
{
    assert_eq!(out.len(), rows * n, "output shape");
    if rows == 0 {
        return;
    }
    let chunk = rows_per_task(rows, n);
    // Each task transposes its own `[rows_in_chunk, n]` block while it is still in cache, eight
    // rows at a time: each token's eight outputs are one contiguous write.
    let dst = OutPtr(out.as_mut_ptr());
    let tasks = rows.div_ceil(chunk);
    team::for_each(tasks, |c| {
        let first = c * chunk;
        let rc = chunk.min(rows - first);
        let mut acc = vec![T::default(); rc * n];
        kernel(first, rc, &mut acc);
        let mut done = vec![0f32; rc * n];
        for (r, (a, d)) in acc
            .chunks_exact(n)
            .zip(done.chunks_exact_mut(n))
            .enumerate()
        {
            finish(first + r, a, d);
        }
        for r0 in (0..rc).step_by(8) {
            let r1 = (r0 + 8).min(rc);
            let rows8 = &done[r0 * n..r1 * n];
            for i in 0..n {
                let mut tile = [0f32; 8];
                for (t, row) in tile.iter_mut().zip(rows8.chunks_exact(n)) {
                    *t = row[i];
                }
                // SAFETY: `i < n` and `first + r1 <= rows`, so the slice is inside `out`
                // (`rows · n` long); tasks own disjoint row ranges, so no two tasks write
                // the same element, and `out` outlives the parallel loop.
                let o = unsafe { dst.slice(i * rows + first + r0, r1 - r0) };
                // Element by element: `copy_from_slice` of a length unknown here was a call
                // to `memmove` per token.
                for (o, t) in o.iter_mut().zip(tile) {
                    *o = t;
                }
            }
        }
    });
}

/// How a ternary layer treats its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TernaryActivations {
    /// BitNet: per-token int8 absmax, integer dot products.
    Int8,
    /// TriLM: floating-point activations, add/subtract of floats.
    Float,
}

/// A packed ternary matrix (zero-copy over the checkpoint's memory map).
pub struct TernaryLinear<'a> {
    pub isa: Isa,
    pub codec: Codec,
    pub rows: usize,
    pub cols: usize,
    /// `rows · codec.row_bytes(cols)` bytes.
    pub data: &'a [u8],
    /// Divisors, one per row shard (`W = t / s`).
    pub scales: Vec<f32>,
    pub activations: TernaryActivations,
}

impl TernaryLinear<'_> {
    #[inline(always)]
    fn scale(&self, r: usize) -> f32 {
        if self.scales.len() == 1 {
            return self.scales[0];
        }
        self.scales[r / (self.rows / self.scales.len())]
    }

    /// Calls `f(run, scale)` on each run of `out` (the rows from `first`) that shares one
    /// weight scale: one run per shard, so that the finishing loops hold their divisor by value
    /// and vectorize (a scalar division per row, and an integer one for its shard, took 2 % of
    /// a TriLM-style 700M decode step).
    fn by_scale(&self, first: usize, out: &mut [f32], mut f: impl FnMut(&mut [f32], f32)) {
        let per = self.rows / self.scales.len();
        let mut at = 0;
        while at < out.len() {
            let shard = (first + at) / per;
            let end = ((shard + 1) * per - first).min(out.len());
            f(&mut out[at..end], self.scales[shard]);
            at = end;
        }
    }

    /// A prefill through the int8 kernels: each task takes a range of rows and writes its
    /// columns of `out` (`[n, rows]`) finished, in place ([`kernels::ternary_gemm_i8_scaled`]).
    fn int8_batch(&self, x: &I8Activations, x_scales: &[f32], out: &mut [f32]) {
        let (rows, n, rb) = (self.rows, x.n(), self.codec.row_bytes(self.cols));
        assert_eq!(out.len(), rows * n, "output shape");
        let chunk = rows_per_task(rows, n);
        let dst = OutPtr(out.as_mut_ptr());
        team::for_each(rows.div_ceil(chunk), |c| {
            let first = c * chunk;
            let rc = chunk.min(rows - first);
            let w_scales: Vec<f32> = (first..first + rc).map(|r| self.scale(r)).collect();
            let data = &self.data[first * rb..(first + rc) * rb];
            // SAFETY: element `i · rows + first + r` (`i < n`, `r < rc`) is inside `out`
            // (`n · rows` long, checked above); tasks own disjoint row ranges, so no two write
            // the same element, and `out` outlives the region.
            unsafe {
                let at = dst.get().add(first);
                kernels::ternary_gemm_i8_scaled_raw(data, x, x_scales, &w_scales, at, rows);
            }
        });
    }
}

impl Linear for TernaryLinear<'_> {
    fn view(&self) -> LinearView<'_, '_> {
        LinearView::Ternary(self)
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn wants_i8(&self) -> bool {
        self.activations == TernaryActivations::Int8
    }
    fn weight_bytes(&self) -> usize {
        self.data.len() + 4 * self.scales.len()
    }
    fn weight_regions(&self) -> Vec<&[u8]> {
        vec![self.data]
    }

    fn token_rows<'s>(&'s self, input: &'s Input<'_>) -> RowKernel<'s> {
        assert!(
            input.k == self.cols && input.n == 1,
            "ternary layer input shape"
        );
        let (k, rb) = (self.cols, self.codec.row_bytes(self.cols));
        match self.activations {
            TernaryActivations::Int8 => {
                let q = input.quantized();
                let x = input.arranged(&q, self.isa, self.codec);
                // transformers' BitLinear: y = acc / (x_scale · w_scale), one divisor per
                // shard (`by_scale`; reloaded per row, it was a scalar division per row: 1 % of
                // a 700M decode step).
                let x_scale = q.scales[0];
                Box::new(move |first, out| {
                    let data = &self.data[first * rb..(first + out.len()) * rb];
                    // The accumulators go straight into the output's bytes, then are finished
                    // in place.
                    kernels::ternary_gemm_i8_arranged(data, &x, bytemuck::cast_slice_mut(out));
                    let acc = |v: &f32| bytemuck::cast::<f32, i32>(*v) as f32;
                    self.by_scale(first, out, |run, w_scale| {
                        let d = x_scale * w_scale;
                        run.iter_mut().for_each(|v| *v = acc(v) / d);
                    });
                })
            }
            TernaryActivations::Float => Box::new(move |first, out| {
                let data = &self.data[first * rb..(first + out.len()) * rb];
                kernels::ternary_gemm_f32(self.isa, self.codec, data, k, input.x, 1, out);
                self.by_scale(first, out, |run, s| run.iter_mut().for_each(|v| *v /= s));
            }),
        }
    }

    fn forward_batch(&self, input: &Input<'_>, out: &mut [f32]) {
        assert_eq!(input.k, self.cols, "ternary layer input width");
        let (n, k, rb) = (input.n, self.cols, self.codec.row_bytes(self.cols));
        match self.activations {
            TernaryActivations::Int8 => {
                let q = input.quantized();
                // Arranged once, for every row range (and, through `input`, every matrix).
                let x = input.arranged(&q, self.isa, self.codec);
                // transformers' BitLinear: y = acc / (x_scale · w_scale), in the kernels.
                self.int8_batch(&x, &q.scales, out);
            }
            TernaryActivations::Float => par_rows::<f32, _, _>(
                self.rows,
                n,
                out,
                |first, rows, acc| {
                    let data = &self.data[first * rb..(first + rows) * rb];
                    kernels::ternary_gemm_f32(self.isa, self.codec, data, k, input.x, n, acc);
                },
                |r, acc, out| {
                    let w_scale = self.scale(r);
                    for (o, &a) in out.iter_mut().zip(acc) {
                        *o = a / w_scale;
                    }
                },
            ),
        }
    }
}

/// Dense float weights, borrowed from a memory map or owned.
pub enum DenseStore<'a> {
    F32(Cow<'a, [f32]>),
    F16(Cow<'a, [f16]>),
    Bf16(Cow<'a, [bf16]>),
}

impl DenseStore<'_> {
    /// Bytes per value.
    pub fn elem_bytes(&self) -> usize {
        match self {
            DenseStore::F32(_) => 4,
            DenseStore::F16(_) | DenseStore::Bf16(_) => 2,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            DenseStore::F32(w) => w.len(),
            DenseStore::F16(w) => w.len(),
            DenseStore::Bf16(w) => w.len(),
        }
    }

    /// Whether it holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values `start..start + out.len()` as f32.
    pub fn read_f32(&self, start: usize, out: &mut [f32]) {
        let end = start + out.len();
        match self {
            DenseStore::F32(w) => out.copy_from_slice(&w[start..end]),
            DenseStore::F16(w) => {
                for (o, v) in out.iter_mut().zip(&w[start..end]) {
                    *o = v.to_f32();
                }
            }
            DenseStore::Bf16(w) => {
                for (o, v) in out.iter_mut().zip(&w[start..end]) {
                    *o = v.to_f32();
                }
            }
        }
    }

    /// The `[rows, cols]` sub-matrix of rows `first..first + rows`, for the kernels.
    fn rows_view(&self, first: usize, rows: usize, cols: usize) -> DenseWeights<'_> {
        let r = first * cols..(first + rows) * cols;
        match self {
            DenseStore::F32(w) => DenseWeights::F32(&w[r]),
            DenseStore::F16(w) => DenseWeights::F16(&w[r]),
            DenseStore::Bf16(w) => DenseWeights::Bf16(&w[r]),
        }
    }
}

/// A dense float matrix `[rows, cols]`.
pub struct DenseLinear<'a> {
    pub isa: Isa,
    pub rows: usize,
    pub cols: usize,
    pub weights: DenseStore<'a>,
}

impl Linear for DenseLinear<'_> {
    fn view(&self) -> LinearView<'_, '_> {
        LinearView::Dense(self)
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn weight_bytes(&self) -> usize {
        self.weights.len() * self.weights.elem_bytes()
    }
    fn weight_regions(&self) -> Vec<&[u8]> {
        vec![match &self.weights {
            DenseStore::F32(w) => bytemuck::cast_slice(w),
            DenseStore::F16(w) => bytemuck::cast_slice(w),
            DenseStore::Bf16(w) => bytemuck::cast_slice(w),
        }]
    }
    fn token_rows<'s>(&'s self, input: &'s Input<'_>) -> RowKernel<'s> {
        assert!(
            input.k == self.cols && input.n == 1,
            "dense layer input shape"
        );
        Box::new(move |first, out| {
            let w = self.weights.rows_view(first, out.len(), self.cols);
            kernels::dense_gemm_f32(self.isa, w, self.cols, input.x, 1, out);
        })
    }

    fn forward_batch(&self, input: &Input<'_>, out: &mut [f32]) {
        assert_eq!(input.k, self.cols, "dense layer input width");
        let (n, k) = (input.n, self.cols);
        par_rows::<f32, _, _>(
            self.rows,
            n,
            out,
            |first, rows, acc| {
                let w = self.weights.rows_view(first, rows, k);
                kernels::dense_gemm_f32(self.isa, w, k, input.x, n, acc);
            },
            |_, acc, out| out.copy_from_slice(acc),
        );
    }
}

/// An 8-bit matrix: per-row absmax int8 codes (`W[r, j] ≈ code · row_scale[r]`), used for the LM
/// head. Activations are quantized per token to int8 too, so logits come from exact integer dot
/// products and two scales.
pub struct Q8Linear {
    pub isa: Isa,
    pub rows: usize,
    pub cols: usize,
    pub codes: Vec<i8>,
    /// Per row, `absmax / 127`.
    pub row_scales: Vec<f32>,
}

impl Q8Linear {
    /// Quantizes a dense matrix row by row (in parallel).
    pub fn quantize(isa: Isa, rows: usize, cols: usize, w: &DenseStore<'_>) -> Q8Linear {
        let mut codes = crate::hugemem::zeroed::<i8>(rows * cols);
        let mut row_scales = vec![0f32; rows];
        codes
            .par_chunks_mut(cols.max(1))
            .zip(row_scales.par_iter_mut())
            .enumerate()
            .for_each_init(
                || vec![0f32; cols],
                |buf, (r, (c, s))| {
                    w.read_f32(r * cols, buf);
                    let x_scale = quantize_activations_i8(buf, c);
                    *s = 1.0 / x_scale;
                },
            );
        Q8Linear {
            isa,
            rows,
            cols,
            codes,
            row_scales,
        }
    }
}

impl Linear for Q8Linear {
    fn view(&self) -> LinearView<'_, '_> {
        LinearView::Q8(self)
    }
    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn wants_i8(&self) -> bool {
        true
    }
    fn weight_bytes(&self) -> usize {
        self.codes.len() + 4 * self.row_scales.len()
    }
    fn weight_regions(&self) -> Vec<&[u8]> {
        vec![bytemuck::cast_slice(&self.codes)]
    }
    fn token_rows<'s>(&'s self, input: &'s Input<'_>) -> RowKernel<'s> {
        assert!(
            input.k == self.cols && input.n == 1,
            "8-bit layer input shape"
        );
        let q = input.quantized();
        let k = self.cols;
        Box::new(move |first, out| {
            let w = &self.codes[first * k..(first + out.len()) * k];
            kernels::dense_gemm_i8(self.isa, w, k, &q.codes, 1, bytemuck::cast_slice_mut(out));
            for (r, v) in out.iter_mut().enumerate() {
                let acc = bytemuck::cast::<f32, i32>(*v);
                *v = acc as f32 * self.row_scales[first + r] / q.scales[0];
            }
        })
    }

    fn forward_batch(&self, input: &Input<'_>, out: &mut [f32]) {
        assert_eq!(input.k, self.cols, "8-bit layer input width");
        let (n, k) = (input.n, self.cols);
        let q = input.quantized();
        par_rows::<i32, _, _>(
            self.rows,
            n,
            out,
            |first, rows, acc| {
                let w = &self.codes[first * k..(first + rows) * k];
                kernels::dense_gemm_i8(self.isa, w, k, &q.codes, n, acc);
            },
            |r, acc, out| {
                let row_scale = self.row_scales[r];
                for ((o, &a), &x_scale) in out.iter_mut().zip(acc).zip(&q.scales) {
                    *o = a as f32 * row_scale / x_scale;
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_pack::dot::dot_i8;

    /// Deterministic values from a seed (xorshift).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn trits(&mut self, len: usize) -> Vec<i8> {
            (0..len).map(|_| (self.next() % 3) as i8 - 1).collect()
        }
        fn f32s(&mut self, len: usize) -> Vec<f32> {
            (0..len)
                .map(|_| (self.next() % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        }
    }

    #[test]
    fn one_token_through_several_layers_in_one_region_matches_the_scalar_reference() {
        let mut rng = Rng(7);
        // q, k, v of a grouped-query layer (k and v narrower), one of them sharded in scales;
        // a width that is not a multiple of any block.
        let (k, shapes) = (333, [(96, 1), (32, 4), (32, 1)]);
        let x = rng.f32s(k);
        for isa in Isa::available() {
            for codec in Codec::ALL {
                let packed: Vec<Vec<u8>> = shapes
                    .iter()
                    .map(|&(rows, _)| codec.encode_matrix(&rng.trits(rows * k), k).unwrap())
                    .collect();
                let layers: Vec<TernaryLinear<'_>> = shapes
                    .iter()
                    .zip(&packed)
                    .map(|(&(rows, shards), data)| TernaryLinear {
                        isa,
                        codec,
                        rows,
                        cols: k,
                        data,
                        scales: (0..shards).map(|s| 1.5 + s as f32).collect(),
                        activations: TernaryActivations::Int8,
                    })
                    .collect();
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let input = Input::new(isa, &x, 1, k, true);
                    // Dirty outputs: every element must be written.
                    let mut outs: Vec<Vec<f32>> = shapes
                        .iter()
                        .map(|&(rows, _)| vec![f32::NAN; rows])
                        .collect();
                    pool.install(|| {
                        let dyns: Vec<&dyn Linear> =
                            layers.iter().map(|l| l as &dyn Linear).collect();
                        let mut slices: Vec<&mut [f32]> =
                            outs.iter_mut().map(|o| o.as_mut_slice()).collect();
                        forward_token(&input, &dyns, &mut slices);
                    });
                    let q = input.q.as_ref().unwrap();
                    let rb = codec.row_bytes(k);
                    for (i, (layer, out)) in layers.iter().zip(&outs).enumerate() {
                        for (r, &got) in out.iter().enumerate() {
                            let acc = dot_i8(codec, &layer.data[r * rb..(r + 1) * rb], &q.codes);
                            let want = acc as f32 / (q.scales[0] * layer.scale(r));
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{isa} {codec}, {threads} threads, layer {i} row {r}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_prefill_batch_matches_the_scalar_reference_at_every_thread_count() {
        // Each task writes its columns of the token-major output in place: with 1, 2 and 3
        // threads, scale shards and a row count that does not split evenly, every element must
        // be the scalar formula's bits.
        let mut rng = Rng(9);
        let (k, rows, n) = (333, 150, 11);
        let x = rng.f32s(n * k);
        for isa in Isa::available() {
            for codec in Codec::ALL {
                let data = codec.encode_matrix(&rng.trits(rows * k), k).unwrap();
                let layer = TernaryLinear {
                    isa,
                    codec,
                    rows,
                    cols: k,
                    data: &data,
                    scales: vec![1.5, 2.5, 0.75],
                    activations: TernaryActivations::Int8,
                };
                for threads in [1, 2, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let input = Input::new(isa, &x, n, k, true);
                    let mut out = vec![f32::NAN; n * rows];
                    pool.install(|| layer.forward(&input, &mut out));
                    let q = input.q.as_ref().unwrap();
                    let rb = codec.row_bytes(k);
                    for i in 0..n {
                        for r in 0..rows {
                            let row = &data[r * rb..(r + 1) * rb];
                            let acc = dot_i8(codec, row, &q.codes[i * k..(i + 1) * k]);
                            let want = acc as f32 / (q.scales[i] * layer.scale(r));
                            let got = out[i * rows + r];
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{isa} {codec}, {threads} threads, token {i} row {r}"
                            );
                        }
                    }
                }
            }
        }
    }
}
