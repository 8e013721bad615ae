//! The KV cache: per layer and KV head, keys in dimension-major blocks of [`KEY_BLOCK`] tokens
//! and values row by row, as f32, f16, or int8 with one scale per row of `head_dim` values.

use half::f16;
use tern_pack::spec::ModelSpec;

use super::{Dims, KEY_BLOCK, KvElem};
use crate::kernels::{Isa, prefetch_l2_raw};

/// Prefetches elements `from .. to` of `v`'s allocation into L2, written or not (those past its
/// length within its capacity: the rows a coming append writes).
#[inline(always)]
fn prefetch_spare<T>(v: &Vec<T>, from: usize, to: usize) {
    let to = to.min(v.capacity());
    if from < to {
        let p = v.as_ptr().wrapping_add(from).cast();
        prefetch_l2_raw(p, (to - from) * std::mem::size_of::<T>());
    }
}

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvDtype {
    /// Half precision: half the memory and half the bytes read per token (the default, as in
    /// llama.cpp).
    #[default]
    F16,
    /// Single precision (bit-for-bit agreement tests).
    F32,
    /// Int8, each key and value row (one token of one head) with its own f32 scale
    /// (`absmax / 127`, codes rounded to nearest), like llama.cpp's `q8_0` cache with one block
    /// per row: about half the bytes of f16, for long contexts where the cache dominates.
    Q8,
}

impl KvDtype {
    /// Parses `f16` / `f32` / `q8`.
    pub fn from_name(s: &str) -> Option<KvDtype> {
        match s {
            "f16" => Some(KvDtype::F16),
            "f32" => Some(KvDtype::F32),
            "q8" => Some(KvDtype::Q8),
            _ => None,
        }
    }

    /// The name [`KvDtype::from_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            KvDtype::F16 => "f16",
            KvDtype::F32 => "f32",
            KvDtype::Q8 => "q8",
        }
    }

    /// Bytes of one cached row of `head_dim` values (a key or a value of one head), its scale
    /// included.
    pub fn row_bytes(self, head_dim: usize) -> usize {
        let element = match self {
            KvDtype::F16 => 2,
            KvDtype::F32 => 4,
            KvDtype::Q8 => 1,
        };
        element * head_dim + self.scale_bytes()
    }

    /// Bytes of a row's scale (none for the float types).
    fn scale_bytes(self) -> usize {
        match self {
            KvDtype::Q8 => 4,
            KvDtype::F16 | KvDtype::F32 => 0,
        }
    }
}

/// Per layer, per KV head: that head's rows, reserved for the capacity.
type Heads<T> = Vec<Vec<Vec<T>>>;

/// [`Heads`] of `per_head` elements' capacity each, its spare capacity written once with zeros
/// so that every page is faulted in here, as llama.cpp clears its cache buffer, rather than by
/// the appends of the steps: those run between parallel regions, where a page fault (about 1.5
/// per layer and token on the 700M shape) holds up every thread. Faulted in by the appends, a
/// 700M decode layer's appends took about 20,000 cycles instead of 12,000 (`rdtsc`, two
/// threads, `-p 128 -n 64`), about 1 % of a step; the decode roofline of alternated
/// `tern bench` runs moved by less than their noise (medians 0.819 and 0.821, eight each). The
/// time to first token includes this (`tern bench` creates the cache inside it).
fn heads<T: Copy + Default>(spec: &ModelSpec, per_head: usize) -> Heads<T> {
    (0..spec.num_layers)
        .map(|_| {
            (0..spec.num_kv_heads)
                .map(|_| {
                    let mut rows = Vec::with_capacity(per_head);
                    rows.spare_capacity_mut()
                        .fill(std::mem::MaybeUninit::new(T::default()));
                    rows
                })
                .collect()
        })
        .collect()
}

/// The cache in one element type.
struct Store<T> {
    /// Keys, per head `[blocks, hd, KEY_BLOCK]`.
    k: Heads<T>,
    /// Values, per head `[tokens, hd]`.
    v: Heads<T>,
    /// The scale of each key and value row, per head `[tokens]`; per layer no heads at all
    /// unless `T::SCALED` (what `attention_scaled` takes for an unscaled element type).
    k_scale: Heads<f32>,
    v_scale: Heads<f32>,
}

impl<T: KvElem> Store<T> {
    fn new(spec: &ModelSpec, capacity: usize) -> Self {
        let rows = capacity.next_multiple_of(KEY_BLOCK) * spec.head_dim;
        let scales = || {
            if T::SCALED {
                heads(spec, capacity)
            } else {
                vec![Vec::new(); spec.num_layers]
            }
        };
        Store {
            k: heads(spec, rows),
            v: heads(spec, rows),
            k_scale: scales(),
            v_scale: scales(),
        }
    }

    fn clear(&mut self) {
        let Store {
            k,
            v,
            k_scale,
            v_scale,
        } = self;
        k.iter_mut().chain(v).flatten().for_each(Vec::clear);
        k_scale
            .iter_mut()
            .chain(v_scale)
            .flatten()
            .for_each(Vec::clear);
    }

    fn prefetch_append(&self, l: usize, start: usize, n: usize, hd: usize) {
        for (k, v) in self.k[l].iter().zip(&self.v[l]) {
            prefetch_head_append((k, v), start, n, hd);
        }
    }

    fn append_and_attend(
        &mut self,
        isa: Isa,
        l: usize,
        kv: (&[f32], &[f32]),
        q: &[f32],
        out: &mut [f32],
        d: Dims,
    ) {
        let scales = (&mut self.k_scale[l][..], &mut self.v_scale[l][..]);
        let heads = (&mut self.k[l][..], &mut self.v[l][..]);
        super::append_and_attend(isa, heads, scales, kv, q, out, d);
    }
}

/// Prefetches into L2 the lines of one head's keys `k` and values `v` that appending `n`
/// tokens at position `start` writes (see [`KvCache::prefetch_append`]).
fn prefetch_head_append<T>((k, v): (&Vec<T>, &Vec<T>), start: usize, n: usize, hd: usize) {
    let (b0, b1) = (start / KEY_BLOCK, (start + n).div_ceil(KEY_BLOCK));
    prefetch_spare(k, b0 * KEY_BLOCK * hd, b1 * KEY_BLOCK * hd);
    prefetch_spare(v, start * hd, (start + n) * hd);
}

/// Head `g`'s rows of `src` (`[n, heads · hd]`), each `hd` long.
pub(super) fn head_rows(
    src: &[f32],
    heads: usize,
    g: usize,
    hd: usize,
) -> impl Iterator<Item = &[f32]> {
    src.chunks_exact(heads * hd)
        .map(move |row| &row[g * hd..(g + 1) * hd])
}

/// Appends the rows of `src` (`[n, kv_heads · hd]`) to each head's stream (and, for a scaled
/// element type, their scales to `scales`). The serial reference of the appends in the
/// attention's tasks.
#[cfg(test)]
pub(super) fn append<T: KvElem>(
    isa: Isa,
    dst: &mut [Vec<T>],
    scales: &mut [Vec<f32>],
    src: &[f32],
    hd: usize,
) {
    let heads = dst.len();
    for (g, head) in dst.iter_mut().enumerate() {
        let rows = head_rows(src, heads, g, hd);
        append_head(isa, head, scales.get_mut(g).filter(|_| T::SCALED), rows);
    }
}

/// Appends `rows` (each `hd` long) to one head's values, and their scales to `scales` (`Some`
/// for a scaled element type).
pub(super) fn append_head<'a, T: KvElem>(
    isa: Isa,
    head: &mut Vec<T>,
    mut scales: Option<&mut Vec<f32>>,
    rows: impl Iterator<Item = &'a [f32]>,
) {
    for row in rows {
        let s = T::extend(isa, head, row);
        if let Some(scales) = scales.as_deref_mut() {
            scales.push(s);
        }
    }
}

/// Appends the keys of `src` (`[n, kv_heads · hd]`, the first at position `start`) to each
/// head's blocks (`[blocks, hd, KEY_BLOCK]`; a new block is zero-filled when a token starts it),
/// and their scales as [`append`] does. The serial reference of the appends in the attention's
/// tasks.
#[cfg(test)]
pub(super) fn append_keys<T: KvElem>(
    isa: Isa,
    dst: &mut [Vec<T>],
    scales: &mut [Vec<f32>],
    src: &[f32],
    hd: usize,
    start: usize,
) {
    let heads = dst.len();
    for (g, head) in dst.iter_mut().enumerate() {
        let rows = head_rows(src, heads, g, hd);
        let scales = scales.get_mut(g).filter(|_| T::SCALED);
        append_head_keys(isa, head, scales, rows, hd, start);
    }
}

/// The keys of one head (what the test-only `append_keys` does for each): `rows` are its keys
/// of positions `start ..`.
pub(super) fn append_head_keys<'a, T: KvElem>(
    isa: Isa,
    head: &mut Vec<T>,
    mut scales: Option<&mut Vec<f32>>,
    rows: impl Iterator<Item = &'a [f32]>,
    hd: usize,
    start: usize,
) {
    // Each key narrowed at once (one vector conversion), then scattered down its block.
    let mut narrow = Vec::with_capacity(hd);
    for (i, row) in rows.enumerate() {
        let (b, lane) = ((start + i) / KEY_BLOCK, (start + i) % KEY_BLOCK);
        if head.len() < (b + 1) * KEY_BLOCK * hd {
            head.resize((b + 1) * KEY_BLOCK * hd, T::default());
        }
        narrow.clear();
        let s = T::extend(isa, &mut narrow, row);
        if let Some(scales) = scales.as_deref_mut() {
            scales.push(s);
        }
        let block = &mut head[b * KEY_BLOCK * hd..];
        for (d, &x) in narrow.iter().enumerate() {
            block[d * KEY_BLOCK + lane] = x;
        }
    }
}

enum KvData {
    F32(Store<f32>),
    F16(Store<f16>),
    Q8(Store<i8>),
}

/// `$body` with `$s` bound to the cache's [`Store`], whatever its element type.
macro_rules! each_store {
    ($data:expr, $s:ident => $body:expr) => {
        match $data {
            KvData::F32($s) => $body,
            KvData::F16($s) => $body,
            KvData::Q8($s) => $body,
        }
    };
}

/// Keys and values of the tokens seen so far, per layer and KV head.
pub struct KvCache {
    capacity: usize,
    len: usize,
    dtype: KvDtype,
    data: KvData,
}

impl KvCache {
    /// A cache for `capacity` tokens of `spec`.
    pub fn new(spec: &ModelSpec, capacity: usize, dtype: KvDtype) -> KvCache {
        let data = match dtype {
            KvDtype::F32 => KvData::F32(Store::new(spec, capacity)),
            KvDtype::F16 => KvData::F16(Store::new(spec, capacity)),
            KvDtype::Q8 => KvData::Q8(Store::new(spec, capacity)),
        };
        KvCache {
            capacity,
            len: 0,
            dtype,
            data,
        }
    }

    /// Tokens cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Its element type.
    pub fn dtype(&self) -> KvDtype {
        self.dtype
    }

    /// Bytes of keys and values (scales included) for `tokens` tokens of `spec`.
    pub fn bytes_for(spec: &ModelSpec, tokens: usize, dtype: KvDtype) -> usize {
        2 * spec.num_layers * tokens * spec.num_kv_heads * dtype.row_bytes(spec.head_dim)
    }

    /// Bytes one decode step reads attending to `tokens` cached tokens: [`Self::bytes_for`],
    /// plus the unused tail of each head's last key block, which the attention reads whole
    /// (keys are stored in [`KEY_BLOCK`]-token blocks).
    pub fn read_bytes_for(spec: &ModelSpec, tokens: usize, dtype: KvDtype) -> usize {
        let padding = tokens.next_multiple_of(KEY_BLOCK) - tokens;
        let elem = dtype.row_bytes(spec.head_dim) - dtype.scale_bytes();
        KvCache::bytes_for(spec, tokens, dtype)
            + spec.num_layers * spec.num_kv_heads * padding * elem
    }

    /// Bytes held now.
    pub fn bytes(&self, spec: &ModelSpec) -> usize {
        KvCache::bytes_for(spec, self.len, self.dtype)
    }

    /// Forgets every token.
    pub fn clear(&mut self) {
        self.len = 0;
        each_store!(&mut self.data, s => s.clear());
    }

    /// Marks `n` more tokens as cached (after every layer appended them).
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Prefetches into L2 the lines of layer `l` that appending `n` tokens will write: each
    /// head's key block of those positions and their value rows. A token's key is spread over
    /// `head_dim / 2` lines (f16) of its block (dimension-major), which the previous step's weight
    /// stream has evicted to DRAM: written cold, the stores waited for their lines, 0.015–0.024
    /// of a plain stream of the step's weight bytes (700M shape, one thread, `-p 128 -n 64`).
    /// Prefetched a phase early (before the Q/K/V projections), that wait is gone; the burst of
    /// prefetches itself costs about 0.01, so the decode roofline gained about one point
    /// (0.769 vs 0.759, four alternated runs of one build).
    pub(crate) fn prefetch_append(&self, l: usize, n: usize, head_dim: usize) {
        let start = self.len;
        each_store!(&self.data, s => s.prefetch_append(l, start, n, head_dim));
    }

    /// Appends layer `l`'s keys and values of the new tokens, then attends the queries `q`
    /// (`[n, heads · hd]`) to everything cached, writing `out`.
    pub(crate) fn append_and_attend(
        &mut self,
        isa: Isa,
        l: usize,
        kv: (&[f32], &[f32]),
        q: &[f32],
        out: &mut [f32],
        d: Dims,
    ) {
        each_store!(&mut self.data, s => s.append_and_attend(isa, l, kv, q, out, d));
    }
}

/// Every head's cache of every layer, for the tasks of a decode step's lockstep job
/// ([`crate::team::lockstep`]): each task appends and attends one head, on whichever thread
/// takes it. Made from the cache before the job (its heads' next-key ranges too, taken before
/// any append, as [`super::append_and_attend`] takes them); the cache's length is advanced
/// after it.
pub(crate) struct StepCache<'c> {
    data: StepData,
    kv_heads: usize,
    head_dim: usize,
    start: usize,
    _cache: std::marker::PhantomData<&'c mut KvCache>,
}

// SAFETY: tasks reach disjoint heads (see `StepCache::attend_head`), and the cache is borrowed
// mutably for the view's life.
unsafe impl Sync for StepCache<'_> {}

enum StepData {
    F32(HeadPtrs<f32>),
    F16(HeadPtrs<f16>),
    Q8(HeadPtrs<i8>),
}

/// Per layer and KV head (`[layers · kv_heads]`): its keys, values, their scales (empty for an
/// unscaled element type) and its keys' range to prefetch.
struct HeadPtrs<T> {
    k: Vec<*mut Vec<T>>,
    v: Vec<*mut Vec<T>>,
    k_scale: Vec<*mut Vec<f32>>,
    v_scale: Vec<*mut Vec<f32>>,
    ahead: Vec<super::Ahead>,
}

impl<T: KvElem> HeadPtrs<T> {
    fn new(s: &mut Store<T>) -> HeadPtrs<T> {
        let ahead =
            s.k.iter()
                .flatten()
                .map(|h| super::Ahead::of(h.as_slice()))
                .collect();
        let ptrs = |h: &mut Heads<T>| h.iter_mut().flatten().map(|v| v as *mut Vec<T>).collect();
        let scales = |h: &mut Heads<f32>| h.iter_mut().flatten().map(|v| v as *mut _).collect();
        HeadPtrs {
            k: ptrs(&mut s.k),
            v: ptrs(&mut s.v),
            k_scale: scales(&mut s.k_scale),
            v_scale: scales(&mut s.v_scale),
            ahead,
        }
    }

    /// # Safety
    /// As [`StepCache::attend_head`]; `i = l · kv_heads + g`, `next` the head after it.
    #[allow(clippy::too_many_arguments)]
    unsafe fn attend(
        &self,
        isa: Isa,
        (i, next): (usize, super::Ahead),
        (key, value): (&[f32], &[f32]),
        q: &[f32],
        out: &mut [f32],
        hd: usize,
        start: usize,
    ) {
        // SAFETY: in bounds (`StepCache::attend_head` checks `l` and `g`); the caller alone
        // reaches this head.
        let (hk, hv) = unsafe { (&mut *{ self.k[i] }, &mut *{ self.v[i] }) };
        let (mut ks, mut vs) = match T::SCALED {
            // SAFETY: as above; a scaled type has one scale stream per head.
            true => unsafe {
                (
                    Some(&mut *{ self.k_scale[i] }),
                    Some(&mut *{ self.v_scale[i] }),
                )
            },
            false => (None, None),
        };
        append_head_keys(isa, hk, ks.as_deref_mut(), std::iter::once(key), hd, start);
        append_head(isa, hv, vs.as_deref_mut(), std::iter::once(value));
        let lens = [start + 1; super::MAX_QUERIES];
        next.prefetch_start();
        let b = super::Block {
            q,
            lens: &lens[..q.len() / hd],
            k: hk,
            v: hv,
            k_scale: ks.map_or(&[], |s| s),
            v_scale: vs.map_or(&[], |s| s),
            next_k: next,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        super::block(isa, b, out);
    }
}

impl KvCache {
    /// The view of a decode step's lockstep job (one token, at position `len()`, of a model
    /// with `kv_heads` heads of `head_dim`, as the cache was made for).
    pub(crate) fn step(&mut self, kv_heads: usize, head_dim: usize) -> StepCache<'_> {
        assert!(self.len < self.capacity, "a full cache");
        let start = self.len;
        let heads = each_store!(&self.data, s => s.k.first().map_or(kv_heads, Vec::len));
        assert_eq!(heads, kv_heads, "KV heads of the cache");
        let data = match &mut self.data {
            KvData::F32(s) => StepData::F32(HeadPtrs::new(s)),
            KvData::F16(s) => StepData::F16(HeadPtrs::new(s)),
            KvData::Q8(s) => StepData::Q8(HeadPtrs::new(s)),
        };
        StepCache {
            data,
            kv_heads,
            head_dim,
            start,
            _cache: std::marker::PhantomData,
        }
    }
}

impl StepCache<'_> {
    /// Appends the new token's `key` and `value` (`head_dim` each) to head `g` of layer `l`,
    /// then attends the queries of its group `q` (`[group, head_dim]`, rotated) to the head's
    /// cache, writing `out` (as `q`).
    ///
    /// # Safety
    /// No other thread reaches head `g` of layer `l` meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn attend_head(
        &self,
        isa: Isa,
        l: usize,
        g: usize,
        kv: (&[f32], &[f32]),
        q: &[f32],
        out: &mut [f32],
    ) {
        let (hd, kvh) = (self.head_dim, self.kv_heads);
        let i = l * kvh + g;
        assert!(
            g < kvh
                && kv.0.len() == hd
                && kv.1.len() == hd
                && q.len().is_multiple_of(hd)
                && (1..=super::MAX_QUERIES).contains(&(q.len() / hd))
                && out.len() == q.len(),
            "attention head shapes"
        );
        let start = self.start;
        macro_rules! go {
            ($p:expr) => {{
                assert!(i < $p.k.len(), "layer {l}");
                let next = $p.ahead.get(i + 1).copied().filter(|_| g + 1 < kvh);
                let next = next.unwrap_or(super::Ahead::NONE);
                // SAFETY: the caller's promise.
                unsafe { $p.attend(isa, (i, next), kv, q, out, hd, start) }
            }};
        }
        match &self.data {
            StepData::F32(p) => go!(p),
            StepData::F16(p) => go!(p),
            StepData::Q8(p) => go!(p),
        }
    }

    /// Prefetches layer `l`'s lines that the step's appends write (see
    /// [`KvCache::prefetch_append`]).
    ///
    /// # Safety
    /// No thread appends to layer `l` meanwhile.
    pub(crate) unsafe fn prefetch_append(&self, l: usize) {
        let (hd, start, kvh) = (self.head_dim, self.start, self.kv_heads);
        macro_rules! go {
            ($p:expr) => {{
                for i in l * kvh..((l + 1) * kvh).min($p.k.len()) {
                    // SAFETY: the caller's promise; only read.
                    let (k, v) = unsafe { (&*$p.k[i], &*$p.v[i]) };
                    prefetch_head_append((k, v), start, 1, hd);
                }
            }};
        }
        match &self.data {
            StepData::F32(p) => go!(p),
            StepData::F16(p) => go!(p),
            StepData::Q8(p) => go!(p),
        }
    }
}
