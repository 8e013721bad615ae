//! Activations rearranged to the register blocks of a packed row.
//!
//! A packed row (see `tern_pack::codec`) is a run of 32-byte groups and a tail of `nb <= 32`
//! bytes. Every kernel here walks a row in *blocks* of `lanes` groups (1 for 32-byte registers,
//! 2 for AVX-512), treating the tail as one more group whose missing bytes are zero. A zero byte
//! decodes to the digit 0 in every plane of both codecs, so a zero-padded byte adds nothing to
//! `Σ d·x` once its activations are zero too.
//!
//! [`Blocks::scatter`] copies one activation vector into that order, once per call: for block
//! `b`, plane `p` and lane `l`, the 32 activations met by digit plane `p` of group `lanes·b + l`
//! sit at `b·block_elems + p·32·lanes + 32·l`. A kernel then loads plane `p` of a whole block
//! with one contiguous load, whatever the lane count, and never handles a tail. Activations of
//! padding slots (past `k`) and of missing groups are zero.

use tern_pack::codec::{Codec, GROUP_BYTES};

/// How one packed row of `k` weights splits into register blocks of `lanes` groups.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Blocks {
    /// Trits per byte (4 or 5): digit planes per group.
    pub trits: usize,
    /// Groups per block.
    pub lanes: usize,
    /// Weights per row.
    pub k: usize,
    /// Bytes per packed row.
    pub row_bytes: usize,
    /// Full groups per row.
    pub full: usize,
    /// Bytes of the tail (0 when `k` is a multiple of the group).
    pub tail: usize,
    /// Blocks per row, the tail included.
    pub blocks: usize,
}

impl Blocks {
    pub fn new(codec: Codec, k: usize, lanes: usize) -> Blocks {
        let full = codec.full_groups(k);
        let tail = codec.tail_bytes(k);
        let groups = full + usize::from(tail > 0);
        Blocks {
            trits: codec.trits_per_byte(),
            lanes,
            k,
            row_bytes: codec.row_bytes(k),
            full,
            tail,
            blocks: groups.div_ceil(lanes),
        }
    }

    /// Packed bytes of one block: `32 · lanes`.
    pub const fn block_bytes(&self) -> usize {
        GROUP_BYTES * self.lanes
    }

    /// Activations of one block: `32 · trits · lanes`.
    pub const fn block_elems(&self) -> usize {
        GROUP_BYTES * self.trits * self.lanes
    }

    /// Activations of one token once scattered: `blocks · block_elems`.
    pub const fn token_elems(&self) -> usize {
        self.blocks * self.block_elems()
    }

    /// Copies block `b` of `row` into `dst` (`block_bytes` long), zero-padded past the row end.
    #[inline]
    pub fn copy_block(&self, row: &[u8], b: usize, dst: &mut [u8]) {
        let start = b * self.block_bytes();
        let end = (start + self.block_bytes()).min(self.row_bytes);
        let len = end - start;
        dst[..len].copy_from_slice(&row[start..end]);
        dst[len..].fill(0);
    }

    /// Writes one token's activations `x` (`k` long) into `dst` (`token_elems` long) in block
    /// order (see the module documentation).
    pub fn scatter<T: Copy>(&self, x: &[T], zero: T, dst: &mut [T]) {
        assert_eq!(x.len(), self.k);
        assert_eq!(dst.len(), self.token_elems());
        let (g32, be, t) = (GROUP_BYTES, self.block_elems(), self.trits);
        dst.fill(zero);
        let place = |g: usize, p: usize| {
            (g / self.lanes) * be + p * g32 * self.lanes + g32 * (g % self.lanes)
        };
        for g in 0..self.full {
            for p in 0..t {
                let src = g * g32 * t + p * g32;
                let at = place(g, p);
                dst[at..at + g32].copy_from_slice(&x[src..src + g32]);
            }
        }
        if self.tail > 0 {
            let base = self.full * g32 * t;
            for p in 0..t {
                let start = base + p * self.tail;
                if start >= self.k {
                    break;
                }
                let len = self.tail.min(self.k - start);
                let at = place(self.full, p);
                dst[at..at + len].copy_from_slice(&x[start..start + len]);
            }
        }
    }

    /// Scatters `n` tokens (`xs` is `[n, k]`) into one 64-byte aligned buffer of
    /// `n · token_elems`, token `i` at `i · token_elems`.
    pub fn scatter_all<T: Copy>(&self, xs: &[T], n: usize, zero: T) -> Scattered<T> {
        let te = self.token_elems();
        let extra = 64 / std::mem::size_of::<T>();
        let mut buf = vec![zero; n * te + extra];
        let off = buf.as_ptr().align_offset(64);
        let off = if off <= extra { off } else { 0 };
        let dst = &mut buf[off..off + n * te];
        for (x, dst) in xs
            .chunks_exact(self.k)
            .zip(dst.chunks_exact_mut(te))
            .take(n)
        {
            self.scatter(x, zero, dst);
        }
        Scattered {
            buf,
            off,
            len: n * te,
        }
    }
}

/// One call's int8 activations, arranged: their layout, the `n` tokens in block order
/// (`n · token_elems`) and each token's `Σ x`.
#[derive(Clone, Copy)]
pub(crate) struct Arranged<'a> {
    pub lay: &'a Blocks,
    pub xp: &'a [i8],
    pub sums: &'a [i32],
}

/// Activations in block order, aligned to 64 bytes where the allocator allows.
#[derive(Clone)]
pub(crate) struct Scattered<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

impl<T> Scattered<T> {
    pub fn as_slice(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }
}
