//! AVX-512 ternary kernels: one 512-bit register holds a block of two packed groups.
//!
//! Activations are scattered into block order (`layout.rs`, two lanes), so digit plane `p` of a
//! block meets the 64 contiguous activations at `64p` of the block, and the row tail is one more
//! zero-padded block read with a masked load.
//!
//! * **2-bit digits**: `(q >> 2p) & 3`. For one token the shift is skipped: plane `p` is kept as
//!   `q & (3 << 2p)` = `4^p · d` (at most 128, still a valid unsigned byte) in its own
//!   accumulator, shifted back once per row (exact: every lane is a multiple of `4^p`).
//! * **1.6-bit digits**, with VBMI ([`Isa::Avx512Vnni`](super::Isa)): two 256-entry byte
//!   tables (`vpermi2b` on the low 7 bits twice, blended on the top bit) turn each byte into the
//!   2-bit layout of digits 0..4 plus digit 4 alone: 7 instructions for 5 planes, after which
//!   the 2-bit rules apply. Prefill looks up only digits 1..4 (of `3q mod 256`) and compares
//!   for digit 0 instead, which spends fewer shuffles ([`Bits16Lut`]). Without VBMI
//!   ([`Isa::Avx512`](super::Isa)): `m_p = 3^p · q mod 256` by byte adds and
//!   `d_p = (m_p > 85) + (m_p > 170)` from two unsigned compares.
//! * **Dot products**: `vpdpbusd` with VNNI, else `vpmaddubsw` + `vpmaddwd`.
//!
//! Several tokens (prefill) share each decoded register: `NB` accumulators, one per token.

use std::arch::x86_64::*;

use tern_pack::codec::{Codec, bits1_6};

use super::avx512_prefill as prefill;
use super::layout::{Arranged, Blocks};

/// Bytes in one block (two groups).
pub(super) const BLOCK: usize = 64;
/// How far ahead of the block being decoded each row's weight stream is prefetched, in bytes,
/// and into which cache (L2). Measured on Zen 4: the hardware prefetchers alone reach only half
/// the DRAM bandwidth of a plain streaming loop; this restores most of it.
pub(super) const PREFETCH: usize = 8192;
pub(super) const HINT: i32 = _MM_HINT_T1;
/// The hint for a weight stream that one token reads once (a decode step), when the
/// [`super::StreamHint`] in force is non-temporal: the stream does not evict into L3 the norms,
/// activations and KV rows that the step reads again. Measured on Zen 4 on a core of its own,
/// in one process choosing each step's variant at random (`tern bench --model <700M, 2 bits>
/// -p 128 -n 256`): the ternary decode with it took 6.3–6.7 % less time per step at one thread
/// and 4.5–4.8 % less at two; with the dense head's and the KV cache's streams non-temporal too
/// ([`super::prefetch_stream_raw`]), 9.6–10.4 % and 7.0–8.5 %.
pub(super) const ONCE: i32 = _MM_HINT_NTA;

/// Prefetches the line `PREFETCH` bytes past `p` of a weight stream: non-temporally with `nta`
/// (a stream one token reads, from [`super::nta`]; see [`ONCE`]), else into L2.
#[inline(always)]
pub(super) unsafe fn prefetch_ahead(p: *const u8, nta: bool) {
    let p = p.wrapping_add(PREFETCH).cast();
    unsafe {
        if nta {
            _mm_prefetch::<ONCE>(p);
        } else {
            _mm_prefetch::<HINT>(p);
        }
    }
}

/// `acc += Σ u·s` over each 4-byte lane: unsigned bytes `u` (at most 128 here) × signed `s`.
pub(super) trait Dot {
    unsafe fn dot(acc: __m512i, u: __m512i, s: __m512i) -> __m512i;
}

/// VNNI: one `vpdpbusd`.
pub(super) struct Vnni;

impl Dot for Vnni {
    #[inline(always)]
    unsafe fn dot(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
        unsafe { _mm512_dpbusd_epi32(acc, u, s) }
    }
}

/// AVX-512BW: `vpmaddubsw` (pairs, no saturation since `u <= 128`) then `vpmaddwd` by ones.
pub(super) struct Bw;

impl Dot for Bw {
    #[inline(always)]
    unsafe fn dot(acc: __m512i, u: __m512i, s: __m512i) -> __m512i {
        unsafe {
            let pairs = _mm512_maddubs_epi16(u, s);
            _mm512_add_epi32(acc, _mm512_madd_epi16(pairs, _mm512_set1_epi16(1)))
        }
    }
}

/// How a codec's packed block turns into digit planes.
pub(super) trait Planes<const T: usize> {
    /// The digit planes of a 64-byte block. With `scaled`, plane `p` may hold `d << shift(p)`
    /// instead (see [`Planes::shifts`]); every value stays at most 128.
    unsafe fn planes(&self, q: __m512i, scaled: bool) -> [__m512i; T];
    /// The left shift of each plane in `planes(q, scaled)`.
    fn shifts(scaled: bool) -> [u32; T];
    /// The longest row, in blocks, whose token the one-token kernel keeps in registers (`T`
    /// per block): the registers left once the decoder's own constants are counted.
    const RESIDENT: usize;
    /// Per plane, a register whose bytes hold that plane's digit in bits `2s..2s+2` (the 2-bit
    /// layout), and `s`.
    unsafe fn two_bit(&self, q: __m512i) -> [(__m512i, u32); T];
}

/// The four 2-bit digits of each byte of `q` (plane `p` in bits `2p..2p+2`).
#[inline(always)]
unsafe fn two_bit_planes(q: __m512i, scaled: bool) -> [__m512i; 4] {
    unsafe {
        let three = _mm512_set1_epi8(3);
        if scaled {
            [
                _mm512_and_si512(q, three),
                _mm512_and_si512(q, _mm512_set1_epi8(3 << 2)),
                _mm512_and_si512(q, _mm512_set1_epi8(3 << 4)),
                _mm512_and_si512(q, _mm512_set1_epi8((3u8 << 6) as i8)),
            ]
        } else {
            [
                _mm512_and_si512(q, three),
                _mm512_and_si512(_mm512_srli_epi16::<2>(q), three),
                _mm512_and_si512(_mm512_srli_epi16::<4>(q), three),
                _mm512_and_si512(_mm512_srli_epi16::<6>(q), three),
            ]
        }
    }
}

/// The four 128-bit quarters of a register.
#[inline(always)]
unsafe fn quarters(v: __m512i) -> [__m128i; 4] {
    unsafe {
        [
            _mm512_castsi512_si128(v),
            _mm512_extracti32x4_epi32::<1>(v),
            _mm512_extracti32x4_epi32::<2>(v),
            _mm512_extracti32x4_epi32::<3>(v),
        ]
    }
}

/// The 2-bit codec.
pub(super) struct Bits2;

impl Planes<4> for Bits2 {
    #[inline(always)]
    unsafe fn planes(&self, q: __m512i, scaled: bool) -> [__m512i; 4] {
        unsafe { two_bit_planes(q, scaled) }
    }
    fn shifts(scaled: bool) -> [u32; 4] {
        if scaled { [0, 2, 4, 6] } else { [0; 4] }
    }
    /// 24 registers of activations, 4 accumulators, the block and its masks.
    const RESIDENT: usize = 6;
    #[inline(always)]
    unsafe fn two_bit(&self, q: __m512i) -> [(__m512i, u32); 4] {
        [(q, 0), (q, 1), (q, 2), (q, 3)]
    }
}

/// `LOW4[q]`: digits 0..4 of the 1.6-bit byte `q` in the 2-bit layout.
static LOW4: [u8; 256] = digit_table(false);
/// `DIGIT4[q]`: digit 4 of the 1.6-bit byte `q`.
static DIGIT4: [u8; 256] = digit_table(true);

const fn digit_table(fourth: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut q = 0;
    while q < 256 {
        let b = q as u8;
        t[q] = if fourth {
            bits1_6::digit(b, 4)
        } else {
            bits1_6::digit(b, 0)
                | bits1_6::digit(b, 1) << 2
                | bits1_6::digit(b, 2) << 4
                | bits1_6::digit(b, 3) << 6
        };
        q += 1;
    }
    t
}

/// A 256-entry byte table in four registers.
#[derive(Clone, Copy)]
struct Table([__m512i; 4]);

impl Table {
    #[inline(always)]
    unsafe fn load(t: &[u8; 256]) -> Table {
        let p = t.as_ptr();
        unsafe {
            Table([
                _mm512_loadu_si512(p.cast()),
                _mm512_loadu_si512(p.add(64).cast()),
                _mm512_loadu_si512(p.add(128).cast()),
                _mm512_loadu_si512(p.add(192).cast()),
            ])
        }
    }

    /// `t[q]` for every byte; `high` is the mask of bytes >= 128. Two `vpermi2b`, no blend: the
    /// first looks up the low half and leaves high bytes as they were (it merges from its index
    /// register), the second looks those up in the high half.
    #[inline(always)]
    unsafe fn lookup(&self, q: __m512i, high: u64) -> __m512i {
        unsafe {
            let lo = _mm512_mask2_permutex2var_epi8(self.0[0], q, !high, self.0[1]);
            _mm512_mask2_permutex2var_epi8(self.0[2], lo, high, self.0[3])
        }
    }
}

/// The 1.6-bit codec by VBMI table lookups: each block becomes four digits in the 2-bit layout
/// plus one digit alone.
///
/// * `ONE_TABLE = false` (decode): `LOW4[q]` holds digits 0..3 and `DIGIT4[q]` digit 4.
/// * `ONE_TABLE = true` (prefill): digit `p` of `q` is digit 0 of `m_p = 3^p · q mod 256` (the
///   multiply-shift rule), so `LOW4[3q mod 256]` holds digits 1..4, and digit 0 is
///   `(q > 85) + (q > 170)`: half the shuffles for a few more simple byte operations. Measured
///   on Zen 4 (`cargo bench -p tern-infer --bench kernels -- ternary_i8`): 16-token prefill 175
///   vs 163 G MAC/s, where the shuffles compete with `vpdpbusd` for ports; decode 16.0 vs
///   18.2 GiB/s, where every operation counts once per block, so decode keeps two tables.
#[derive(Clone, Copy)]
pub(super) struct Bits16Lut<const ONE_TABLE: bool> {
    low4: Table,
    digit4: Table,
}

impl<const ONE_TABLE: bool> Bits16Lut<ONE_TABLE> {
    #[inline(always)]
    pub(super) unsafe fn new() -> Self {
        unsafe {
            Bits16Lut {
                low4: Table::load(&LOW4),
                digit4: Table::load(&DIGIT4),
            }
        }
    }

    /// The four digits in the 2-bit layout, and the lone one (digit 0 or digit 4).
    #[inline(always)]
    unsafe fn split(&self, q: __m512i) -> (__m512i, __m512i) {
        unsafe {
            if ONE_TABLE {
                let m1 = _mm512_add_epi8(q, _mm512_add_epi8(q, q));
                let one = _mm512_maskz_mov_epi8(
                    _mm512_cmpgt_epu8_mask(q, _mm512_set1_epi8(85)),
                    _mm512_set1_epi8(1),
                );
                let d0 = _mm512_mask_mov_epi8(
                    one,
                    _mm512_cmpgt_epu8_mask(q, _mm512_set1_epi8(170u8 as i8)),
                    _mm512_set1_epi8(2),
                );
                (self.low4.lookup(m1, _mm512_movepi8_mask(m1)), d0)
            } else {
                let high = _mm512_movepi8_mask(q);
                (self.low4.lookup(q, high), self.digit4.lookup(q, high))
            }
        }
    }

    /// The lone digit's plane among the five.
    #[inline(always)]
    fn place<V>(four: [V; 4], lone: V) -> [V; 5] {
        let [a, b, c, d] = four;
        if ONE_TABLE {
            [lone, a, b, c, d]
        } else {
            [a, b, c, d, lone]
        }
    }
}

impl<const ONE_TABLE: bool> Planes<5> for Bits16Lut<ONE_TABLE> {
    #[inline(always)]
    unsafe fn planes(&self, q: __m512i, scaled: bool) -> [__m512i; 5] {
        unsafe {
            let (four, lone) = self.split(q);
            Self::place(two_bit_planes(four, scaled), lone)
        }
    }
    /// 15 registers of activations beside the decoder's tables and 5 accumulators.
    const RESIDENT: usize = 3;
    fn shifts(scaled: bool) -> [u32; 5] {
        if scaled {
            Self::place([0, 2, 4, 6], 0)
        } else {
            [0; 5]
        }
    }
    #[inline(always)]
    unsafe fn two_bit(&self, q: __m512i) -> [(__m512i, u32); 5] {
        unsafe {
            let (four, lone) = self.split(q);
            Self::place([(four, 0), (four, 1), (four, 2), (four, 3)], (lone, 0))
        }
    }
}

/// `v`, hidden from the optimizer: it keeps the 1.6-bit recurrence as written, two byte adds
/// per plane (as in the AVX2 kernel, the compiler otherwise builds each `m_p = 3^p · q` from
/// 16-bit multiplies).
#[target_feature(enable = "avx512f")]
#[inline]
fn opaque(mut v: __m512i) -> __m512i {
    // SAFETY: an empty template: no instruction, no memory, no flags.
    unsafe {
        std::arch::asm!("/* {0} */", inout(zmm_reg) v, options(pure, nomem, nostack, preserves_flags))
    };
    v
}

/// The 1.6-bit codec by byte adds and unsigned compares (AVX-512BW only).
#[derive(Clone, Copy)]
pub(super) struct Bits16Cmp;

impl Planes<5> for Bits16Cmp {
    #[inline(always)]
    unsafe fn planes(&self, q: __m512i, _scaled: bool) -> [__m512i; 5] {
        unsafe {
            let (t1, t2) = (_mm512_set1_epi8(85), _mm512_set1_epi8(170u8 as i8));
            let one = _mm512_set1_epi8(1);
            let mut d = [_mm512_setzero_si512(); 5];
            let mut m = q;
            for d in d.iter_mut() {
                // Digit p = (m_p > 85) + (m_p > 170), m_{p+1} = 3 · m_p mod 256.
                let low = _mm512_maskz_mov_epi8(_mm512_cmpgt_epu8_mask(m, t1), one);
                *d = _mm512_mask_add_epi8(low, _mm512_cmpgt_epu8_mask(m, t2), low, one);
                m = opaque(_mm512_add_epi8(m, _mm512_add_epi8(m, m)));
            }
            d
        }
    }
    /// 15 registers of activations beside the compares' constants and 5 accumulators
    /// (measured as for the tables: +13 % from cache at two blocks).
    const RESIDENT: usize = 3;
    fn shifts(_scaled: bool) -> [u32; 5] {
        [0; 5]
    }
    #[inline(always)]
    unsafe fn two_bit(&self, q: __m512i) -> [(__m512i, u32); 5] {
        unsafe {
            let [a, b, c, d, e] = self.planes(q, false);
            [(a, 0), (b, 0), (c, 0), (d, 0), (e, 0)]
        }
    }
}

/// Loads block `b` of a packed row, zero-filling past the row's end.
///
/// # Safety
/// `b < lay.blocks` and `row.len() == lay.row_bytes`.
#[inline(always)]
pub(super) unsafe fn load_block(row: &[u8], b: usize, lay: &Blocks) -> __m512i {
    unsafe {
        let start = b * BLOCK;
        debug_assert!(start < row.len() && row.len() == lay.row_bytes);
        let p = row.as_ptr().add(start);
        let left = row.len() - start;
        if left >= BLOCK {
            _mm512_loadu_si512(p.cast())
        } else {
            _mm512_maskz_loadu_epi8((1u64 << left) - 1, p.cast())
        }
    }
}

/// Ternary × int8 over every row, for one codec (`T` planes) and one dot product.
///
/// # Safety
/// The CPU runs AVX-512 F/BW/VL, and VNNI when `D` is [`Vnni`]; lengths are as checked by
/// `kernels::ternary_gemm_i8`.
#[inline(always)]
pub(super) unsafe fn ternary_i8<D: Dot, P: Planes<T>, const T: usize>(
    pl: &P,
    x: Arranged<'_>,
    packed: &[u8],
    out: &mut [i32],
) {
    let Arranged { lay, xp, sums } = x;
    let n = sums.len();
    assert_eq!((lay.lanes, lay.block_elems()), (2, BLOCK * T));
    assert_eq!(xp.len(), n * lay.token_elems());
    assert_eq!(out.len() * lay.row_bytes, packed.len() * n);
    unsafe {
        if n == 1 {
            // One row per pass (one weight stream per thread), both codecs, as measured on Zen
            // 4 in one process running the variants step by step (`tern bench -p 128`), in
            // turn for 2-bit and in a random order for 1.6-bit. 2-bit: four rows beat two by 10 % from L3, but lost 12 % of the 2B4T
            // decode's roofline from DRAM; against two, one row took less time per step in all
            // 15 runs (700M two threads -1.1 to -4.6 %, one thread -0.9, -2.7 %; 2B4T two
            // threads -5.6 to -11.5 %, one thread -1.3, -1.9 %). 1.6-bit, against three rows
            // (which beat two by 4 % from L3): 700M -0.3, -3.3, -0.6, -3.3 % at two threads,
            // -0.8, -0.4 % at one; 2B4T -1.2, -5.5 % at two, -3.6, -2.0 % at one.
            let sum = sums[0];
            return match lay.blocks {
                1 => matvec::<D, P, T, 1>(pl, lay, packed, xp, sum, out),
                2 => matvec::<D, P, T, 2>(pl, lay, packed, xp, sum, out),
                3 => matvec::<D, P, T, 3>(pl, lay, packed, xp, sum, out),
                4 if P::RESIDENT >= 4 => matvec::<D, P, T, 4>(pl, lay, packed, xp, sum, out),
                5 if P::RESIDENT >= 5 => matvec::<D, P, T, 5>(pl, lay, packed, xp, sum, out),
                6 if P::RESIDENT >= 6 => matvec::<D, P, T, 6>(pl, lay, packed, xp, sum, out),
                _ => matvec::<D, P, T, 0>(pl, lay, packed, xp, sum, out),
            };
        }
        prefill::gemm::<D, P, T, _>(pl, x, packed, &mut prefill::RowMajor { out, n });
    }
}

/// Rows whose totals one tree of shuffles ([`prefill::sum16`]) sums across lanes together.
const BATCH: usize = 16;

/// One token, a row at a time: a scaled accumulator per plane, and the lanes of every
/// [`BATCH`] rows' totals summed together (the rows past the last whole batch one by one).
///
/// Against a horizontal sum per row, measured on Zen 4 in one process choosing each decode
/// step's variant at random (`tern bench -p 128 -n 256`): at 1.6 bits, where the decode is
/// bound by the decoder's instructions, 3.6–3.8 % less time per step on 700M at one thread,
/// 1.3–2.7 % at two, 2.7 % on 2B4T; at 2 bits, −2.3 to +0.8 %. From L3 (`cargo bench --bench
/// kernels` with its shape set to 4096 × 1536), the 1.6-bit decode read 29.5–30.7 GiB/s
/// against 27.0–28.1.
///
/// `NB > 0`: the row has `NB` blocks (at most [`Planes::RESIDENT`]), and the token's `NB · T`
/// activation registers are loaded once for all rows instead of once per row, which leaves one
/// load per 64 weight bytes instead of `1 + T`: the loads were what bound the kernel. Measured
/// on Zen 4 from L2/L3 (`cargo bench --bench kernels -- ternary_i8_decode_resident`, 4096 ×
/// 1536), the 2-bit decode read 80.7 GiB/s against 46.0; the 1.6-bit decoder, bound by its
/// shuffles, gained 12 % at two blocks and lost 3 % at four, hence its smaller
/// [`Planes::RESIDENT`]. `NB == 0`: the token from memory, any length.
#[inline(always)]
unsafe fn matvec<D: Dot, P: Planes<T>, const T: usize, const NB: usize>(
    pl: &P,
    lay: &Blocks,
    packed: &[u8],
    xp: &[i8],
    sum: i32,
    out: &mut [i32],
) {
    let rb = lay.row_bytes;
    let whole = out.len() / BATCH * BATCH;
    let be = lay.block_elems();
    assert!(xp.len() >= lay.token_elems() && (NB == 0 || NB == lay.blocks));
    unsafe {
        let mut xr = [[_mm512_setzero_si512(); T]; NB];
        for (b, planes) in xr.iter_mut().enumerate() {
            for (p, v) in planes.iter_mut().enumerate() {
                *v = _mm512_loadu_si512(xp.as_ptr().add(b * be + BLOCK * p).cast());
            }
        }
        let sums = _mm512_set1_epi32(sum);
        let mut t = [_mm512_setzero_si512(); BATCH];
        let nta = super::nta(true);
        for (r, row) in packed.chunks_exact(rb).enumerate() {
            let resident = (NB > 0).then_some(&xr[..]);
            let total = row_total::<D, P, T>(pl, lay, row, xp, resident, nta);
            if r >= whole {
                out[r] = _mm512_reduce_add_epi32(total) - sum;
                continue;
            }
            t[r % BATCH] = total;
            if r % BATCH == BATCH - 1 {
                // Rows `r + 1 - BATCH ..= r`, all below `whole <= out.len()`.
                let o = out.as_mut_ptr().add(r + 1 - BATCH);
                _mm512_storeu_si512(o.cast(), _mm512_sub_epi32(prefill::sum16(t), sums));
            }
        }
    }
}

/// `Σ d·x` of one row against one scattered token, in the lanes of a register. With
/// `resident = xr`, the row's `xr.len()` blocks meet the token held in registers (plane `p` of
/// block `b` in `xr[b][p]`); without, each plane is loaded from `xp` where it is used. The
/// row is prefetched non-temporally with `nta`.
#[inline(always)]
unsafe fn row_total<D: Dot, P: Planes<T>, const T: usize>(
    pl: &P,
    lay: &Blocks,
    row: &[u8],
    xp: &[i8],
    resident: Option<&[[__m512i; T]]>,
    nta: bool,
) -> __m512i {
    let be = lay.block_elems();
    let shifts = P::shifts(true);
    unsafe {
        let mut acc = [_mm512_setzero_si512(); T];
        let blocks = resident.map_or(lay.blocks, <[_]>::len);
        for b in 0..blocks {
            let x = xp.as_ptr().add(b * be);
            prefetch_ahead(row.as_ptr().wrapping_add(b * BLOCK), nta);
            let d = pl.planes(load_block(row, b, lay), true);
            for p in 0..T {
                let xv = match resident {
                    Some(xr) => xr[b][p],
                    None => _mm512_loadu_si512(x.add(BLOCK * p).cast()),
                };
                acc[p] = D::dot(acc[p], d[p], xv);
            }
        }
        let mut tot = _mm512_setzero_si512();
        for p in 0..T {
            let s = _mm512_srav_epi32(acc[p], _mm512_set1_epi32(shifts[p] as i32));
            tot = _mm512_add_epi32(tot, s);
        }
        tot
    }
}

/// Ternary × int8 with VNNI and VBMI.
///
/// # Safety
/// The CPU runs AVX-512 F/BW/VL/VNNI/VBMI; lengths as checked by `kernels::ternary_gemm_i8`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) unsafe fn ternary_gemm_i8_vnni(
    codec: Codec,
    x: Arranged<'_>,
    packed: &[u8],
    out: &mut [i32],
) {
    unsafe {
        match codec {
            Codec::Bits2 => ternary_i8::<Vnni, Bits2, 4>(&Bits2, x, packed, out),
            Codec::Bits1_6 if x.sums.len() == 1 => {
                ternary_i8::<Vnni, _, 5>(&Bits16Lut::<false>::new(), x, packed, out)
            }
            Codec::Bits1_6 => ternary_i8::<Vnni, _, 5>(&Bits16Lut::<true>::new(), x, packed, out),
        }
    }
}

/// Ternary × int8 with AVX-512 F/BW/VL only.
///
/// # Safety
/// The CPU runs AVX-512 F/BW/VL; lengths as checked by `kernels::ternary_gemm_i8`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn ternary_gemm_i8_bw(
    codec: Codec,
    x: Arranged<'_>,
    packed: &[u8],
    out: &mut [i32],
) {
    unsafe {
        match codec {
            Codec::Bits2 => ternary_i8::<Bw, Bits2, 4>(&Bits2, x, packed, out),
            Codec::Bits1_6 => ternary_i8::<Bw, Bits16Cmp, 5>(&Bits16Cmp, x, packed, out),
        }
    }
}

/// A prefill (`n > 1`) of ternary × int8 with VNNI and VBMI, finished into `out`'s floats.
///
/// # Safety
/// As [`ternary_gemm_i8_vnni`]; `out` takes every row of `packed` and token of `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")]
pub(super) unsafe fn ternary_prefill_scaled_vnni(
    codec: Codec,
    x: Arranged<'_>,
    packed: &[u8],
    out: &mut prefill::Scaled<'_>,
) {
    unsafe {
        match codec {
            Codec::Bits2 => prefill::gemm::<Vnni, Bits2, 4, _>(&Bits2, x, packed, out),
            Codec::Bits1_6 => {
                prefill::gemm::<Vnni, _, 5, _>(&Bits16Lut::<true>::new(), x, packed, out)
            }
        }
    }
}

/// [`ternary_prefill_scaled_vnni`] with AVX-512 F/BW/VL only.
///
/// # Safety
/// As [`ternary_gemm_i8_bw`]; `out` takes every row of `packed` and token of `x`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn ternary_prefill_scaled_bw(
    codec: Codec,
    x: Arranged<'_>,
    packed: &[u8],
    out: &mut prefill::Scaled<'_>,
) {
    unsafe {
        match codec {
            Codec::Bits2 => prefill::gemm::<Bw, Bits2, 4, _>(&Bits2, x, packed, out),
            Codec::Bits1_6 => prefill::gemm::<Bw, Bits16Cmp, 5, _>(&Bits16Cmp, x, packed, out),
        }
    }
}

/// Ternary × f32: per plane and 16 weights, a mask of the non-zero trits selects activations
/// into a masked add, sign-flipped first (one `vpternlogd` on the digit's high bit) where the
/// trit is −1: no multiplication by weights.
///
/// # Safety
/// The CPU runs AVX-512 F/BW/VL, and VBMI when `P` is [`Bits16Lut`]; lengths as checked by
/// `kernels::ternary_gemm_f32`.
#[inline(always)]
pub(super) unsafe fn ternary_f32<P: Planes<T>, const T: usize>(
    pl: &P,
    codec: Codec,
    packed: &[u8],
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let lay = Blocks::new(codec, k, 2);
    assert_eq!(lay.block_elems(), BLOCK * T);
    let scattered = lay.scatter_all(xs, n, 0.0f32);
    let xp = scattered.as_slice();
    assert_eq!(xp.len(), n * lay.token_elems());
    assert_eq!(out.len() * lay.row_bytes, packed.len() * n);
    unsafe {
        if n == 1 {
            return f32_rows::<P, T, 1, 4>(pl, &lay, packed, xp, 0, n, out);
        }
        let mut i0 = 0;
        while i0 < n {
            let nb = (n - i0).min(4);
            match nb {
                4 => f32_rows::<P, T, 4, 1>(pl, &lay, packed, xp, i0, n, out),
                3 => f32_rows::<P, T, 3, 1>(pl, &lay, packed, xp, i0, n, out),
                2 => f32_rows::<P, T, 2, 2>(pl, &lay, packed, xp, i0, n, out),
                _ => f32_rows::<P, T, 1, 4>(pl, &lay, packed, xp, i0, n, out),
            }
            i0 += nb;
        }
    }
}

/// Tokens `i0 .. i0 + NB` against every row, `J` accumulators per token.
#[inline(always)]
unsafe fn f32_rows<P: Planes<T>, const T: usize, const NB: usize, const J: usize>(
    pl: &P,
    lay: &Blocks,
    packed: &[u8],
    xp: &[f32],
    i0: usize,
    n: usize,
    out: &mut [f32],
) {
    let (be, te) = (lay.block_elems(), lay.token_elems());
    assert!(i0 + NB <= n && xp.len() == n * te);
    let nta = super::nta(n == 1);
    unsafe {
        let x0 = xp.as_ptr().add(i0 * te);
        let sign = _mm512_set1_epi32(i32::MIN);
        for (row, o) in packed
            .chunks_exact(lay.row_bytes)
            .zip(out.chunks_exact_mut(n))
        {
            let mut acc = [[_mm512_setzero_ps(); J]; NB];
            for b in 0..lay.blocks {
                prefetch_ahead(row.as_ptr().wrapping_add(b * BLOCK), nta);
                let planes = pl.two_bit(load_block(row, b, lay));
                let x = x0.add(b * be);
                for (p, &(reg, sh)) in planes.iter().enumerate() {
                    for (s, quarter) in quarters(reg).into_iter().enumerate() {
                        // Digit d = 2·b1 + b0 in bits 2sh, 2sh+1 (never 3). Trit 0 is b0 set;
                        // otherwise add x, sign-flipped where b1 is clear (trit −1).
                        let nz = _mm_testn_epi8_mask(quarter, _mm_set1_epi8(1 << (2 * sh)));
                        let b1 = _mm512_sllv_epi32(
                            _mm512_cvtepu8_epi32(quarter),
                            _mm512_set1_epi32(30 - 2 * sh as i32),
                        );
                        for (t, acc) in acc.iter_mut().enumerate() {
                            let xv = _mm512_castps_si512(_mm512_loadu_ps(
                                x.add(t * te + BLOCK * p + 16 * s),
                            ));
                            // x ^ (!b1 & sign)
                            let v = _mm512_castsi512_ps(_mm512_ternarylogic_epi32::<0xd2>(
                                xv, b1, sign,
                            ));
                            let j = (s + 4 * p) % J;
                            acc[j] = _mm512_mask_add_ps(acc[j], nz, acc[j], v);
                        }
                    }
                }
            }
            for (t, acc) in acc.iter().enumerate() {
                let mut s = acc[0];
                for a in &acc[1..] {
                    s = _mm512_add_ps(s, *a);
                }
                o[i0 + t] = _mm512_reduce_add_ps(s);
            }
        }
    }
}

/// Ternary × f32 with VBMI tables for the 1.6-bit codec.
///
/// # Safety
/// The CPU runs AVX-512 F/BW/VL/VBMI; lengths as checked by `kernels::ternary_gemm_f32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
pub(super) unsafe fn ternary_gemm_f32_vbmi(
    codec: Codec,
    packed: &[u8],
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    unsafe {
        match codec {
            Codec::Bits2 => ternary_f32::<Bits2, 4>(&Bits2, codec, packed, k, xs, n, out),
            Codec::Bits1_6 => {
                ternary_f32::<_, 5>(&Bits16Lut::<false>::new(), codec, packed, k, xs, n, out)
            }
        }
    }
}

/// Ternary × f32 with AVX-512 F/BW/VL only.
///
/// # Safety
/// The CPU runs AVX-512 F/BW/VL; lengths as checked by `kernels::ternary_gemm_f32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn ternary_gemm_f32_bw(
    codec: Codec,
    packed: &[u8],
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    unsafe {
        match codec {
            Codec::Bits2 => ternary_f32::<Bits2, 4>(&Bits2, codec, packed, k, xs, n, out),
            Codec::Bits1_6 => ternary_f32::<Bits16Cmp, 5>(&Bits16Cmp, codec, packed, k, xs, n, out),
        }
    }
}
