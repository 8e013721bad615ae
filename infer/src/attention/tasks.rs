//! The tasks of an attention call: the shapes they share ([`Call`]), the head each one reads,
//! and the decode path whose tasks append their own head's keys and values first.

use super::{Ahead, Block, Dims, Isa, KvElem, MAX_QUERIES, attention_scaled, block, cache};
use crate::team::{self, OutPtr};

/// Appends the new tokens' keys and values (`kv`, each `[n, kv_heads · hd]`) to every head's
/// cache (keys `k`, values `v` and, for a scaled element type, their row scales), then attends as
/// [`attention_scaled`].
///
/// When one task covers a head's queries (a decode step), each task appends its own head's
/// rows first: the appends run in parallel, inside the region, instead of on the caller alone
/// between two regions while the other threads wait, and each head's newest key block is
/// written just before the task reads it. The serial appends took about 11,000 cycles per
/// layer of the 700M shape at two threads (`rdtsc`, `tern bench -p 128 -n 64`). Time per
/// decode step of the serial appends against these, in one process alternating the two step
/// by step (`-p 128 -n 256`): 700M 2-bit at two threads +1.7, +2.7, +3.4, +0.7 %; at one
/// thread +1.4, +2.0 %; 2B4T at two threads +2.9, +1.2, -0.9 %. Otherwise (a prefill, several
/// tasks per head) the appends run first, in a region of their own ([`append_all`]).
pub(in crate::attention) fn append_and_attend<T: KvElem>(
    isa: Isa,
    (k, v): (&mut [Vec<T>], &mut [Vec<T>]),
    scales: (&mut [Vec<f32>], &mut [Vec<f32>]),
    kv: (&[f32], &[f32]),
    q: &[f32],
    out: &mut [f32],
    d: Dims,
) {
    let c = Call::new::<T>(q, k.len(), v.len(), scales.0.len(), scales.1.len(), out, d);
    let hd = d.head_dim;
    if c.blocks > 1 {
        append_all(isa, (k, v), (scales.0, scales.1), kv, hd, d.start);
        let scales = (&scales.0[..], &scales.1[..]);
        return attention_scaled(isa, q, k, v, scales, out, d);
    }
    assert!(
        kv.0.len() == c.n * d.kv_heads * hd && kv.1.len() == kv.0.len(),
        "appended keys and values"
    );
    // Taken before any append: a later task's keys grow meanwhile, but are only prefetched.
    let ahead: Vec<Ahead> = k.iter().map(|h| Ahead::of(h.as_slice())).collect();
    let heads = HeadsMut::new((k, v), scales);
    team::for_each(d.kv_heads, |g| {
        // SAFETY: `g < kv_heads` = the lengths of `k` and `v` (and of the scales when scaled,
        // checked by `Call::new`); task `g` alone touches head `g`, and the region ends
        // before this call's borrows do.
        let (hk, hv, mut ks, mut vs) = unsafe { heads.head(g, T::SCALED) };
        let keys = cache::head_rows(kv.0, d.kv_heads, g, hd);
        cache::append_head_keys(isa, hk, ks.as_deref_mut(), keys, hd, d.start);
        let values = cache::head_rows(kv.1, d.kv_heads, g, hd);
        cache::append_head(isa, hv, vs.as_deref_mut(), values);
        let head = HeadView {
            k: hk,
            v: hv,
            k_scale: ks.map_or(&[], |s| s),
            v_scale: vs.map_or(&[], |s| s),
        };
        c.task(isa, g, head, &ahead, q);
    });
}

/// Appends the new tokens' keys and values (`kv`, each `[n, kv_heads · hd]`, the first at
/// position `start`) to every head's cache, one task per head and kind on the team. On the
/// caller alone, a prefill's appends took about 0.035 of a 700M prefill at two threads (`-p
/// 128`) while the other threads waited. In one process alternating the two prefill by prefill
/// (eight each, `-p 128`, two threads), time per prefill with these: 700M 2-bit -3.3, -1.8,
/// -3.9 %; 1.6-bit -2.3 %; 2B4T 2-bit -1.3, -0.5 %.
fn append_all<T: KvElem>(
    isa: Isa,
    (k, v): (&mut [Vec<T>], &mut [Vec<T>]),
    scales: (&mut [Vec<f32>], &mut [Vec<f32>]),
    kv: (&[f32], &[f32]),
    hd: usize,
    start: usize,
) {
    let kv_heads = k.len();
    let n_scales = if T::SCALED { kv_heads } else { 0 };
    assert!(
        v.len() == kv_heads && scales.0.len() == n_scales && scales.1.len() == n_scales,
        "KV heads"
    );
    let heads = HeadsMut::new((k, v), scales);
    // Keys and values alternate, so that each thread's share has as many of each.
    team::for_each(2 * kv_heads, |t| {
        let g = t / 2;
        if t % 2 == 0 {
            // SAFETY: `g < kv_heads` (the lengths checked above); task `2g` alone touches head
            // `g`'s keys, and the region ends before this call's borrows do.
            let (head, s) = unsafe { heads.keys(g, T::SCALED) };
            let rows = cache::head_rows(kv.0, kv_heads, g, hd);
            cache::append_head_keys(isa, head, s, rows, hd, start);
        } else {
            // SAFETY: as above, task `2g + 1` and head `g`'s values.
            let (head, s) = unsafe { heads.values(g, T::SCALED) };
            cache::append_head(isa, head, s, cache::head_rows(kv.1, kv_heads, g, hd));
        }
    });
}

/// One KV head's cache, read by an attention task.
pub(super) struct HeadView<'a, T> {
    pub k: &'a [T],
    pub v: &'a [T],
    pub k_scale: &'a [f32],
    pub v_scale: &'a [f32],
}

/// Every KV head's cache of one layer, for tasks that each write one head.
struct HeadsMut<T> {
    k: *mut Vec<T>,
    v: *mut Vec<T>,
    k_scale: *mut Vec<f32>,
    v_scale: *mut Vec<f32>,
}

// SAFETY: tasks use disjoint heads (see `head`).
unsafe impl<T: Send> Sync for HeadsMut<T> {}

impl<T> HeadsMut<T> {
    fn new(
        (k, v): (&mut [Vec<T>], &mut [Vec<T>]),
        scales: (&mut [Vec<f32>], &mut [Vec<f32>]),
    ) -> HeadsMut<T> {
        HeadsMut {
            k: k.as_mut_ptr(),
            v: v.as_mut_ptr(),
            k_scale: scales.0.as_mut_ptr(),
            v_scale: scales.1.as_mut_ptr(),
        }
    }

    /// Head `g`'s keys, values and (when `scaled`) their scales.
    ///
    /// # Safety
    /// `g` is in bounds of all four slices (of the scales only when `scaled`), no other live
    /// reference reaches head `g`, and the slices outlive the returned borrows.
    #[allow(clippy::type_complexity, clippy::mut_from_ref)]
    unsafe fn head<'a>(
        &self,
        g: usize,
        scaled: bool,
    ) -> (
        &'a mut Vec<T>,
        &'a mut Vec<T>,
        Option<&'a mut Vec<f32>>,
        Option<&'a mut Vec<f32>>,
    ) {
        unsafe {
            let (k, ks) = self.keys(g, scaled);
            let (v, vs) = self.values(g, scaled);
            (k, v, ks, vs)
        }
    }

    /// Head `g`'s keys and (when `scaled`) their scales.
    ///
    /// # Safety
    /// As [`HeadsMut::head`], for these two only.
    unsafe fn keys<'a>(&self, g: usize, scaled: bool) -> Stream<'a, T> {
        unsafe { stream((self.k, self.k_scale), g, scaled) }
    }

    /// Head `g`'s values and (when `scaled`) their scales.
    ///
    /// # Safety
    /// As [`HeadsMut::head`], for these two only.
    unsafe fn values<'a>(&self, g: usize, scaled: bool) -> Stream<'a, T> {
        unsafe { stream((self.v, self.v_scale), g, scaled) }
    }
}

/// One head's keys or values, and their scales when scaled.
type Stream<'a, T> = (&'a mut Vec<T>, Option<&'a mut Vec<f32>>);

/// Element `g` of `rows` and (when `scaled`) of `scales`.
///
/// # Safety
/// As [`HeadsMut::head`].
unsafe fn stream<'a, T>(
    (rows, scales): (*mut Vec<T>, *mut Vec<f32>),
    g: usize,
    scaled: bool,
) -> Stream<'a, T> {
    unsafe { (&mut *rows.add(g), scaled.then(|| &mut *scales.add(g))) }
}

/// The shapes of one attention call, shared by its tasks.
pub(super) struct Call {
    d: Dims,
    /// Heads per KV group.
    group: usize,
    /// Tokens.
    n: usize,
    /// Tokens per task.
    tokens: usize,
    /// Tasks per KV head.
    pub blocks: usize,
    scale: f32,
    dst: OutPtr,
}

impl Call {
    pub(super) fn new<T: KvElem>(
        q: &[f32],
        k_heads: usize,
        v_heads: usize,
        k_scales: usize,
        v_scales: usize,
        out: &mut [f32],
        d: Dims,
    ) -> Call {
        let hd = d.head_dim;
        let q_dim = d.heads * hd;
        let group = d.heads / d.kv_heads;
        assert!(
            (1..=MAX_QUERIES).contains(&group)
                && out.len() == q.len()
                && k_heads == d.kv_heads
                && v_heads == d.kv_heads
                && k_scales == if T::SCALED { d.kv_heads } else { 0 }
                && v_scales == k_scales,
            "attention shapes"
        );
        let n = q.len() / q_dim;
        let tokens = (MAX_QUERIES / group).max(1);
        Call {
            d,
            group,
            n,
            tokens,
            blocks: n.div_ceil(tokens),
            scale: 1.0 / (hd as f32).sqrt(),
            dst: OutPtr(out.as_mut_ptr()),
        }
    }

    /// Task `t`: KV head `t % kv_heads` (`head`) and the tokens of its block `t / kv_heads`,
    /// into the rows of `out` it alone writes. `ahead`: every head's keys, to prefetch the next.
    pub(super) fn task<T: KvElem>(
        &self,
        isa: Isa,
        t: usize,
        head: HeadView<'_, T>,
        ahead: &[Ahead],
        q: &[f32],
    ) {
        let Call {
            d,
            group,
            n,
            tokens,
            ..
        } = *self;
        let (hd, q_dim) = (d.head_dim, d.heads * d.head_dim);
        let (g, i0) = (t % d.kv_heads, (t / d.kv_heads) * tokens);
        let i1 = (i0 + tokens).min(n);
        // Queries in (token, head) order.
        let mut qb = Vec::with_capacity((i1 - i0) * group * hd);
        let mut lens = Vec::with_capacity((i1 - i0) * group);
        for i in i0..i1 {
            let at = i * q_dim + g * group * hd;
            qb.extend_from_slice(&q[at..at + group * hd]);
            lens.extend(std::iter::repeat_n(d.start + i + 1, group));
        }
        // The next head's first lines, while this one computes (its stream starts cold).
        let next_k = ahead.get(g + 1).copied().unwrap_or(Ahead::NONE);
        next_k.prefetch_start();
        let mut ob = vec![0f32; qb.len()];
        let b = Block {
            q: &qb,
            lens: &lens,
            k: head.k,
            v: head.v,
            k_scale: head.k_scale,
            v_scale: head.v_scale,
            next_k,
            scale: self.scale,
        };
        block(isa, b, &mut ob);
        for (r, o) in ob.chunks_exact(group * hd).enumerate() {
            let at = (i0 + r) * q_dim + g * group * hd;
            // SAFETY: `at + group · hd <= n · q_dim = out.len()` (`Call::new`); task (g, i0)
            // alone writes these elements (its tokens' outputs of head group g), and `out`
            // outlives the region.
            unsafe { self.dst.slice(at, group * hd) }.copy_from_slice(o);
        }
    }
}
