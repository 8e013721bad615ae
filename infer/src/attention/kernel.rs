//! The x86 attention kernel of a block of queries against one KV head, written once over a
//! 16-lane float vector ([`Lanes`]): one AVX-512 register, or two AVX2 registers. For head
//! widths that are a whole number of vectors (64, 80, 96, 128); others take the generic body.
//!
//! * **Scores**: a key block is `[hd, 16]` (dimension-major), so one vector holds dimension
//!   `d` of sixteen keys, widened straight from the cache and multiplied by the broadcast query
//!   value: queries go four at a time, each in its own vector; a lone query (decode without
//!   GQA) splits the dimensions over four vectors instead, so that no chain of `hd` dependent
//!   multiply-adds forms.
//! * **Values**: each value row is widened once per pass and feeds every query of the pass; the
//!   outputs stay in registers for the whole pass (`Q` queries × `G` vectors). A row takes as
//!   many passes as the registers require ([`Lanes::parts`]).
//! * Each head's keys and values are prefetched `KV_AHEAD` bytes ahead (and the next head's
//!   first `KV_AHEAD` bytes of keys by the caller): they are short streams that the weight
//!   stream of the previous layer has evicted to DRAM. Into L2 (a decode step's as the
//!   read-once [`crate::kernels::StreamHint`] says, see [`prefetch_kv`]) rather than L1 (which has too few miss buffers for a
//!   stream of DRAM reads), and with the next head's start: on the 700M
//!   shape at one thread (AVX-512), attention fell from 0.17 to 0.11 of the time a plain stream
//!   of the step's weight bytes takes (8 prompt tokens, 200 generated).
//! * A phase ahead as well: a key block's value rows are requested while its scores are
//!   computed, and the next head's keys while this head's values are read ([`Pass::next_k`]).
//! * The softmax numerators are vectorized per instruction set ([`Lanes::softmax`]), bit for
//!   bit the scalar ones, which the compiler leaves scalar.
//! * Both together, on the 700M shape at one thread (AVX-512) with 64 prompt tokens and 200
//!   generated: attention went from 0.18–0.21 to 0.14–0.15 of a plain stream of the step's
//!   weight bytes, and `tern bench -p 128 -n 64`'s decode roofline from 0.71 to 0.73–0.75.
//! * A lone query spreads its block's prefetches (the keys ahead, the block's value rows) over
//!   its loop, each four dimensions requesting the bytes they read, instead of requesting the
//!   whole block first (a burst of about a hundred prefetches, which likely waits on the
//!   core's miss buffers). Measured in one process, each decode step's variant chosen at
//!   random (`tern bench --model <700M, 2 bits> -p 128 -n 256`): 1.0–3.9 % less time per step
//!   at one thread, and 1.6–2.2 % at two (an earlier cut of the same change). Several queries
//!   keep the burst: on 2B4T, spread over their loop, they measured no faster. Each step's few
//!   lines, and the values pass's per-row prefetches, are requested a line at a time (a compare
//!   and a prefetch each; `Ahead::line`) rather than through the clipped range loop, whose
//!   scalar work stood out in `perf annotate`: another −1.7 to +0.1 % (six runs) and −0.1 to
//!   −0.9 % (four runs) per step at one thread.

use super::{Ahead, Block, KEY_BLOCK, KV_AHEAD, KvElem, MAX_QUERIES, prefetch_kv};

/// Sixteen f32 lanes in the registers of one instruction set. Every method is only called
/// from a function compiled for that instruction set (`#[target_feature]`).
pub(super) trait Lanes: Copy {
    /// All lanes zero.
    unsafe fn zero() -> Self;
    /// Every lane `v`.
    unsafe fn splat(v: f32) -> Self;
    /// `a · b + c`, fused.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
    unsafe fn mul(a: Self, b: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    /// Sixteen cache elements from `p`, widened.
    unsafe fn load<T: KvElem>(p: *const T) -> Self;
    /// The first `live` (at most 16) floats from `p`, the other lanes zero (nothing else read).
    unsafe fn load_first(p: *const f32, live: usize) -> Self;
    /// Sixteen floats to `p`.
    unsafe fn store(p: *mut f32, v: Self);
    /// The first `live` (at most 16) lanes to `p` (nothing else written).
    unsafe fn store_first(p: *mut f32, v: Self, live: usize);
    /// `super::softmax_numerators`, bit for bit.
    unsafe fn softmax(s: &mut [f32]) -> f32;
    /// The vectors per value row (`C`) that each pass of `Q` (1 or 4) queries covers, in
    /// order: as many as its registers hold.
    fn parts(c: usize, q: usize) -> &'static [usize];
}

/// Queries `j0 .. j0 + 4`, the missing ones (past `m`) replaced by the last: they are computed
/// but never stored.
#[inline(always)]
fn quad(j0: usize, m: usize) -> [usize; 4] {
    [0, 1, 2, 3].map(|u| (j0 + u).min(m - 1))
}

/// Attention of one [`Block`] (`lens.len()` queries, `q` `[m, hd]`, against one KV head), as
/// `super::block_body` computes it. Returns `false` (and does nothing) when the head width is
/// not one this kernel handles.
///
/// # Safety
/// The CPU runs the instruction set of `V`.
#[inline(always)]
pub(super) unsafe fn block<V: Lanes, T: KvElem>(b: Block<'_, T>, out: &mut [f32]) -> bool {
    let hd = b.q.len() / b.lens.len().max(1);
    unsafe {
        match hd {
            64 => run::<V, T, 4>(b, out),
            80 => run::<V, T, 5>(b, out),
            96 => run::<V, T, 6>(b, out),
            128 => run::<V, T, 8>(b, out),
            _ => return false,
        }
    }
    true
}

/// [`block`] for `hd = 16 · C`.
#[inline(always)]
unsafe fn run<V: Lanes, T: KvElem, const C: usize>(b: Block<'_, T>, out: &mut [f32]) {
    let Block {
        q,
        lens,
        k,
        v,
        k_scale,
        v_scale,
        next_k,
        scale,
    } = b;
    let (m, hd) = (lens.len(), 16 * C);
    let longest = lens.iter().copied().max().unwrap_or(0);
    let blocks = longest.div_ceil(KEY_BLOCK);
    assert!(
        m <= MAX_QUERIES
            && q.len() == m * hd
            && out.len() == q.len()
            && k.len() >= blocks * KEY_BLOCK * hd
            && v.len() >= longest * hd
            && (k_scale.is_empty() || k_scale.len() >= longest)
            && (v_scale.is_empty() || v_scale.len() >= longest),
        "attention block shapes"
    );
    let size = std::mem::size_of::<T>();
    let (kb, ahead) = (KEY_BLOCK * hd, KV_AHEAD / size);
    // A decode step's queries (one per head of the group) take one pass over the values.
    let once = m <= 4;
    // Softmax weights, `[m, longest]`, zero past each query's length.
    let mut p = vec![0f32; m * longest];
    unsafe {
        prefetch_kv(&k[..(blocks * kb).min(ahead)], once);
        for b in 0..blocks {
            let kp = k.as_ptr().add(b * kb);
            // The keys `KV_AHEAD` bytes on, and this block's value rows (a whole phase before
            // they are read): as many elements as the block, prefetched a step at a time
            // alongside its reads.
            let at = b * kb + ahead;
            let k_ahead = if at < k.len() {
                Ahead::of(&k[at..(at + kb).min(k.len())])
            } else {
                Ahead::NONE
            };
            let (r0, r1) = (b * KEY_BLOCK, ((b + 1) * KEY_BLOCK).min(longest));
            let v_ahead = Ahead::of(&v[r0 * hd..r1 * hd]);
            // A line at a time: the few lines of a step (`len` is a constant there) unroll
            // into a compare and a prefetch each.
            let spread = |from: usize, len: usize| {
                for at in (from..from + len).step_by(64) {
                    k_ahead.line(at, once);
                    v_ahead.line(at, once);
                }
            };
            let t0 = b * KEY_BLOCK;
            // The keys' row scales of this block (an int8 cache), multiplied after `scale`.
            let row_scales = (!k_scale.is_empty())
                .then(|| V::load_first(k_scale.as_ptr().add(t0), (longest - t0).min(KEY_BLOCK)));
            let mut store = |j: usize, s: V| {
                let live = lens[j].saturating_sub(t0).min(KEY_BLOCK);
                let dst = p.as_mut_ptr().add(j * longest + t0);
                let s = match row_scales {
                    Some(r) => V::mul(s, r),
                    None => s,
                };
                V::store_first(dst, s, live);
            };
            if m > 1 {
                // Several queries: the block's prefetches at once (spread over the queries'
                // loop, they measured no faster on 2B4T).
                spread(0, kb * size);
            } else {
                let mut a = [V::zero(); 4];
                for d in (0..hd).step_by(4) {
                    spread(d * KEY_BLOCK * size, 4 * KEY_BLOCK * size);
                    for (u, a) in a.iter_mut().enumerate() {
                        let kd = V::load(kp.add((d + u) * KEY_BLOCK));
                        *a = V::fmadd(V::splat(q[d + u]), kd, *a);
                    }
                }
                let s = V::add(V::add(a[0], a[1]), V::add(a[2], a[3]));
                store(0, V::mul(s, V::splat(scale)));
                continue;
            }
            for j0 in (0..m).step_by(4) {
                let js = quad(j0, m);
                let mut a = [V::zero(); 4];
                for d in 0..hd {
                    let kd = V::load(kp.add(d * KEY_BLOCK));
                    for (a, &j) in a.iter_mut().zip(&js) {
                        *a = V::fmadd(V::splat(q[j * hd + d]), kd, *a);
                    }
                }
                for (u, a) in a.iter().enumerate().take(m - j0) {
                    store(j0 + u, V::mul(*a, V::splat(scale)));
                }
            }
        }
        for (j, &len) in lens.iter().enumerate() {
            let row = &mut p[j * longest..j * longest + len];
            let inv = 1.0 / V::softmax(row);
            for w in row.iter_mut() {
                *w *= inv;
            }
            // The values' row scales (an int8 cache) folded into the weights.
            for (w, s) in row.iter_mut().zip(v_scale) {
                *w *= s;
            }
        }
        if m == 1 {
            let pass = Pass {
                p: &p,
                once,
                longest,
                js: [0; 4],
                v,
                next_k,
            };
            values::<V, T, 1>(pass, hd, V::parts(C, 1), out);
        } else {
            let mut o = [0f32; 4 * 128];
            for j0 in (0..m).step_by(4) {
                // The next head's keys are prefetched by the first pass only.
                let next_k = if j0 == 0 { next_k } else { Ahead::NONE };
                let pass = Pass {
                    p: &p,
                    once,
                    longest,
                    js: quad(j0, m),
                    v,
                    next_k,
                };
                values::<V, T, 4>(pass, hd, V::parts(C, 4), &mut o[..4 * hd]);
                for u in 0..(m - j0).min(4) {
                    out[(j0 + u) * hd..(j0 + u + 1) * hd].copy_from_slice(&o[u * hd..(u + 1) * hd]);
                }
            }
        }
    }
}

/// The inputs of a pass over a head's values: the softmax weights `p` (`[m, longest]`), the
/// queries `js` of the pass, the values `v` (`[longest, hd]`), and the next head's keys to
/// prefetch meanwhile ([`Ahead::NONE`] for none).
#[derive(Clone, Copy)]
struct Pass<'a, T> {
    p: &'a [f32],
    /// Prefetch the values as a read-once stream ([`prefetch_kv`]).
    once: bool,
    longest: usize,
    js: [usize; 4],
    v: &'a [T],
    next_k: Ahead,
}

/// `out[u] = Σ_t p[js[u], t] · v[t]` for the `Q` queries `js[..Q]` (`out` is `[Q, hd]`), in
/// passes over `parts` vectors of each row at a time. The first pass prefetches (the values
/// ahead, the next head's keys); later ones read rows it brought in.
#[inline(always)]
unsafe fn values<V: Lanes, T: KvElem, const Q: usize>(
    pass: Pass<'_, T>,
    hd: usize,
    parts: &[usize],
    out: &mut [f32],
) {
    assert!(out.len() >= Q * hd && parts.iter().sum::<usize>() * 16 == hd);
    let mut o = [0f32; 4 * 128];
    let mut d0 = 0;
    for (i, &g) in parts.iter().enumerate() {
        let pass = if i == 0 {
            pass
        } else {
            Pass {
                next_k: Ahead::NONE,
                ..pass
            }
        };
        let o = &mut o[..Q * 16 * g];
        unsafe {
            match g {
                1 => values_at::<V, T, 1, Q>(pass, hd, d0, o),
                2 => values_at::<V, T, 2, Q>(pass, hd, d0, o),
                3 => values_at::<V, T, 3, Q>(pass, hd, d0, o),
                4 => values_at::<V, T, 4, Q>(pass, hd, d0, o),
                5 => values_at::<V, T, 5, Q>(pass, hd, d0, o),
                6 => values_at::<V, T, 6, Q>(pass, hd, d0, o),
                8 => values_at::<V, T, 8, Q>(pass, hd, d0, o),
                _ => unreachable!("parts of 1-6 or 8 vectors"),
            }
        }
        for (u, part) in o.chunks_exact(16 * g).enumerate() {
            out[u * hd + d0..u * hd + d0 + 16 * g].copy_from_slice(part);
        }
        d0 += 16 * g;
    }
}

/// [`values`] over the `G` vectors of each row from dimension `d0` (rows `hd` wide), into
/// `out` (`[Q, 16 · G]`).
#[inline(always)]
unsafe fn values_at<V: Lanes, T: KvElem, const G: usize, const Q: usize>(
    pass: Pass<'_, T>,
    hd: usize,
    d0: usize,
    out: &mut [f32],
) {
    let Pass {
        p,
        once,
        longest,
        js,
        v,
        next_k,
    } = pass;
    assert!(out.len() >= Q * 16 * G && d0 + 16 * G <= hd && v.len() >= longest * hd);
    assert!(js[..Q].iter().all(|&j| (j + 1) * longest <= p.len()));
    let size = std::mem::size_of::<T>();
    let ahead = KV_AHEAD / size / hd;
    unsafe {
        let vp = v.as_ptr();
        if d0 == 0 {
            prefetch_kv(&v[..(ahead * hd).min(longest * hd)], once);
        }
        let mut acc = [[V::zero(); G]; Q];
        // The first pass prefetches the rows `ahead` on; every row, the next head's keys as
        // far into them (into L2), a line at a time.
        let rows = if d0 == 0 {
            Ahead::of(&v[..longest * hd])
        } else {
            Ahead::NONE
        };
        let row_bytes = hd * size;
        for t in 0..longest {
            let (soon, now) = ((t + ahead) * row_bytes, t * row_bytes);
            for o in (0..row_bytes).step_by(64) {
                rows.line(soon + o, once);
                next_k.line(now + o, false);
            }
            let row = vp.add(t * hd + d0);
            let mut w = [V::zero(); Q];
            for (w, &j) in w.iter_mut().zip(&js) {
                *w = V::splat(*p.get_unchecked(j * longest + t));
            }
            for c in 0..G {
                let x = V::load(row.add(16 * c));
                for (acc, w) in acc.iter_mut().zip(&w) {
                    acc[c] = V::fmadd(*w, x, acc[c]);
                }
            }
        }
        for (u, acc) in acc.iter().enumerate() {
            for (c, a) in acc.iter().enumerate() {
                V::store(out.as_mut_ptr().add(u * 16 * G + 16 * c), *a);
            }
        }
    }
}
