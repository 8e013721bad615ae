//! One token's projections (a decode step): the row ranges of a parallel region, on the
//! team's regions ([`forward_token`]) or as one loop of a lockstep job ([`token_loop`]).

use super::{Input, Linear, RowKernel, rows_per_task_on};
use crate::team::{self, OutPtr};

/// One token (`input.n == 1`) through every layer of `layers` (all reading `input`) in one
/// parallel region, layer `i` writing `outs[i]` (`[rows]`).
///
/// A decode step's matrices are small (a 700M q/k/v projection is 0.6 MB, some tens of
/// microseconds at two threads), and each region costs a start (the workers join, each thread's
/// stream starts cold) and an end (one thread waits for the other's last task). Layers that read
/// the same input (q, k and v; gate and up) share one region: its tasks are row ranges of
/// equal size, taken in order across the layers, so each thread streams on from one matrix into
/// the next.
pub fn forward_token(input: &Input<'_>, layers: &[&dyn Linear], outs: &mut [&mut [f32]]) {
    assert_eq!(input.n, 1, "one token");
    assert_eq!(layers.len(), outs.len(), "one output per layer");
    for (l, o) in layers.iter().zip(outs.iter()) {
        assert_eq!(o.len(), l.rows(), "output shape");
    }
    let kernels: Vec<RowKernel<'_>> = layers.iter().map(|l| l.token_rows(input)).collect();
    token_region(&kernels, outs);
}

/// One parallel region running `kernels[i]` over every row of `outs[i]` (its layer's output).
pub(super) fn token_region(kernels: &[RowKernel<'_>], outs: &mut [&mut [f32]]) {
    let threads = rayon::current_num_threads().max(1);
    let tasks = RowTasks::new(outs.iter().map(|o| o.len()), threads);
    let dst: Vec<(OutPtr, usize)> = outs
        .iter_mut()
        .map(|o| (OutPtr(o.as_mut_ptr()), o.len()))
        .collect();
    team::for_each(tasks.len(), |t| {
        let (i, first, len) = tasks.task(t, &dst);
        // SAFETY: `first + len <= rows`, the length of output `i` (`RowTasks::task`); tasks
        // own disjoint row ranges, and the outputs outlive the region.
        let o = unsafe { dst[i].0.slice(first, len) };
        kernels[i](first, o);
    });
}

/// [`token_region`] as one loop of a lockstep job (every thread of `lock` calls it with its own
/// kernels, over the same outputs): `kernels[i]` writes rows of `outs[i]` (pointer, rows),
/// then `finish(i, first, rows)` runs on them (a bias). `next`: what the job's next loop reads
/// (see [`team::Lock::for_each`]).
///
/// # Safety
/// Each `outs[i]` is `rows` long, outlives the loop, and no thread reads or writes it during
/// the loop but through this call.
pub(crate) unsafe fn token_loop(
    lock: &team::Lock<'_>,
    kernels: &[RowKernel<'_>],
    outs: &[(OutPtr, usize)],
    finish: impl Fn(usize, usize, &mut [f32]),
    next: &[&[u8]],
) {
    assert_eq!(kernels.len(), outs.len(), "one output per kernel");
    let tasks = RowTasks::new(outs.iter().map(|o| o.1), lock.threads());
    let run = |t: usize| {
        let (i, first, len) = tasks.task(t, outs);
        // SAFETY: inside output `i` (`RowTasks::task`), which the caller lends to this loop;
        // tasks own disjoint row ranges.
        let o = unsafe { outs[i].0.slice(first, len) };
        kernels[i](first, o);
        finish(i, first, o);
    };
    lock.for_each(tasks.len(), run, next);
}

/// The tasks of one token's region over several outputs: row ranges of one size, taken in
/// order across the outputs.
struct RowTasks {
    chunk: usize,
    /// Task `t` of output `i` is `t - first[i]`'s row range of it.
    first: Vec<usize>,
}

impl RowTasks {
    fn new(rows: impl Iterator<Item = usize> + Clone, threads: usize) -> RowTasks {
        let chunk = rows_per_task_on(rows.clone().max().unwrap_or(0), 1, threads);
        let mut first = vec![0];
        for r in rows {
            first.push(first.last().unwrap_or(&0) + r.div_ceil(chunk));
        }
        RowTasks { chunk, first }
    }

    fn len(&self) -> usize {
        *self.first.last().unwrap_or(&0)
    }

    /// Task `t`'s output, first row and rows (`outs` as given to `new`).
    fn task(&self, t: usize, outs: &[(OutPtr, usize)]) -> (usize, usize, usize) {
        let i = self.first.partition_point(|&f| f <= t) - 1;
        let first = (t - self.first[i]) * self.chunk;
        assert!(first < outs[i].1, "task {t}");
        (i, first, self.chunk.min(outs[i].1 - first))
    }
}
