//! The generic kernels: plain Rust written so that the compiler vectorizes it (the path of every
//! machine without a native kernel, ARM included), and the twin every native kernel is tested
//! against besides `tern_pack::dot`.

use std::hint::black_box;
use std::time::Instant;

use half::slice::HalfFloatSliceExt;
use tern_pack::codec::{Codec, GROUP_BYTES};

use super::DenseWeights;
use super::layout::{Arranged, Blocks};

/// Digit planes of one 32-byte group (`32 · T` digits, plane `p` at `32p`), by the rules of
/// `tern_pack::codec::{bits2, bits1_6}`.
#[inline(always)]
pub(crate) fn decode_group<const T: usize>(q: &[u8; GROUP_BYTES], d: &mut [u8; 160]) {
    if T == 4 {
        for p in 0..4 {
            for (o, &b) in d[32 * p..32 * p + 32].iter_mut().zip(q) {
                *o = (b >> (2 * p)) & 3;
            }
        }
    } else {
        // m_p = q · 3^p mod 256; digit p = (3 · m_p) >> 8.
        let mut m = *q;
        for p in 0..5 {
            for (o, m) in d[32 * p..32 * p + 32].iter_mut().zip(m.iter_mut()) {
                let t = *m as u16 * 3;
                *o = (t >> 8) as u8;
                *m = t as u8;
            }
        }
    }
}

#[inline(always)]
fn dot_u8_i8(d: &[u8], x: &[i8]) -> i32 {
    // 16-bit lanes: each adds one product (|d·x| <= 256) per plane, at most 5 planes a block.
    debug_assert!(d.len() <= 5 * GROUP_BYTES);
    let mut acc = [0i16; GROUP_BYTES];
    for (dc, xc) in d.chunks_exact(GROUP_BYTES).zip(x.chunks_exact(GROUP_BYTES)) {
        for l in 0..GROUP_BYTES {
            acc[l] += dc[l] as i16 * xc[l] as i16;
        }
    }
    acc.iter().map(|&a| a as i32).sum()
}

#[inline(always)]
fn dot_i8_i8(w: &[i8], x: &[i8]) -> i32 {
    w.iter().zip(x).map(|(&a, &b)| a as i32 * b as i32).sum()
}

pub(crate) fn ternary_gemm_i8(codec: Codec, x: Arranged<'_>, packed: &[u8], out: &mut [i32]) {
    match codec {
        Codec::Bits2 => ternary_i8::<4>(x, packed, out),
        Codec::Bits1_6 => ternary_i8::<5>(x, packed, out),
    }
}

fn ternary_i8<const T: usize>(x: Arranged<'_>, packed: &[u8], out: &mut [i32]) {
    let Arranged { lay, xp, sums } = x;
    let n = sums.len();
    assert_eq!(lay.lanes, 1);
    let (te, be) = (lay.token_elems(), lay.block_elems());
    let mut acc = vec![0i32; n];
    let (mut q, mut d) = ([0u8; GROUP_BYTES], [0u8; 160]);
    for (row, o) in packed
        .chunks_exact(lay.row_bytes)
        .zip(out.chunks_exact_mut(n))
    {
        acc.fill(0);
        for b in 0..lay.blocks {
            lay.copy_block(row, b, &mut q);
            decode_group::<T>(&q, &mut d);
            for (a, x) in acc.iter_mut().zip(xp.chunks_exact(te)) {
                *a += dot_u8_i8(&d[..be], &x[b * be..(b + 1) * be]);
            }
        }
        // Σ t·x = Σ d·x − Σ x.
        for ((o, a), s) in o.iter_mut().zip(&acc).zip(sums) {
            *o = a - s;
        }
    }
}

/// Lanes of the float accumulators: wide enough for a 512-bit register.
const LANES: usize = 16;

#[inline(always)]
fn reduce(acc: &[f32; LANES]) -> f32 {
    let mut a = *acc;
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            a[l] += a[l + w];
        }
        w /= 2;
    }
    a[0]
}

/// `acc += ±x` by digit (0: −x, 1: nothing, 2: +x): a sign-bit xor and a select on the float's
/// bits, no multiplication (branch-free, so it vectorizes).
#[inline(always)]
fn signed_sum(d: &[u8], x: &[f32], acc: &mut [f32; LANES]) {
    for (dc, xc) in d.chunks_exact(LANES).zip(x.chunks_exact(LANES)) {
        for l in 0..LANES {
            let t = dc[l] as i32 - 1;
            let flipped = xc[l].to_bits() ^ ((t as u32) & 0x8000_0000);
            acc[l] += f32::from_bits(if t != 0 { flipped } else { 0 });
        }
    }
}

#[inline(always)]
pub(crate) fn ternary_gemm_f32(
    codec: Codec,
    packed: &[u8],
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    match codec {
        Codec::Bits2 => ternary_f32::<4>(codec, packed, k, xs, n, out),
        Codec::Bits1_6 => ternary_f32::<5>(codec, packed, k, xs, n, out),
    }
}

#[inline(always)]
fn ternary_f32<const T: usize>(
    codec: Codec,
    packed: &[u8],
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let lay = Blocks::new(codec, k, 1);
    let (te, be) = (lay.token_elems(), lay.block_elems());
    let xp = lay.scatter_all(xs, n, 0.0f32);
    let xp = xp.as_slice();
    let mut acc = vec![[0.0f32; LANES]; n];
    let (mut q, mut d) = ([0u8; GROUP_BYTES], [0u8; 160]);
    for (row, o) in packed
        .chunks_exact(lay.row_bytes)
        .zip(out.chunks_exact_mut(n))
    {
        acc.fill([0.0; LANES]);
        for b in 0..lay.blocks {
            lay.copy_block(row, b, &mut q);
            decode_group::<T>(&q, &mut d);
            for (a, x) in acc.iter_mut().zip(xp.chunks_exact(te)) {
                signed_sum(&d[..be], &x[b * be..(b + 1) * be], a);
            }
        }
        for (o, a) in o.iter_mut().zip(&acc) {
            *o = reduce(a);
        }
    }
}

pub(crate) fn dense_gemm_i8(w: &[i8], k: usize, xs: &[i8], n: usize, out: &mut [i32]) {
    for (w, o) in w.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        for (x, o) in xs.chunks_exact(k).zip(o.iter_mut()) {
            *o = dot_i8_i8(w, x);
        }
    }
}

/// Whether the build target always has fused multiply-add (so `mul_add` is one instruction).
const TARGET_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// `a · b + c`, fused when `FMA` (only where the instruction exists: a library call otherwise).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA { a.mul_add(b, c) } else { a * b + c }
}

#[inline(always)]
fn dot_f32<const FMA: bool>(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (wc, xc) = (w.chunks_exact(LANES), x.chunks_exact(LANES));
    let (wr, xr) = (wc.remainder(), xc.remainder());
    for (wc, xc) in wc.zip(xc) {
        for l in 0..LANES {
            acc[l] = madd::<FMA>(wc[l], xc[l], acc[l]);
        }
    }
    let mut s = reduce(&acc);
    for (&a, &b) in wr.iter().zip(xr) {
        s = madd::<FMA>(a, b, s);
    }
    s
}

/// Widens one row of half weights into `dst`.
#[inline(always)]
fn widen_row(w: &DenseWeights<'_>, r: usize, k: usize, dst: &mut [f32]) {
    match w {
        DenseWeights::F32(w) => dst.copy_from_slice(&w[r * k..(r + 1) * k]),
        DenseWeights::F16(w) => w[r * k..(r + 1) * k].convert_to_f32_slice(dst),
        DenseWeights::Bf16(w) => {
            for (d, s) in dst.iter_mut().zip(&w[r * k..(r + 1) * k]) {
                *d = f32::from_bits((s.to_bits() as u32) << 16);
            }
        }
    }
}

pub(crate) fn dense_gemm_f32(w: DenseWeights<'_>, k: usize, xs: &[f32], n: usize, out: &mut [f32]) {
    dense_f32::<TARGET_FMA>(w, k, xs, n, out)
}

/// The dense float body; `FMA` only where the instruction is enabled.
#[inline(always)]
fn dense_f32<const FMA: bool>(
    w: DenseWeights<'_>,
    k: usize,
    xs: &[f32],
    n: usize,
    out: &mut [f32],
) {
    let mut row = vec![0.0f32; k];
    for (r, o) in out.chunks_exact_mut(n).enumerate() {
        let wr: &[f32] = match w {
            DenseWeights::F32(w) => &w[r * k..(r + 1) * k],
            _ => {
                widen_row(&w, r, k, &mut row);
                &row
            }
        };
        for (x, o) in xs.chunks_exact(k).zip(o.iter_mut()) {
            *o = dot_f32::<FMA>(wr, x);
        }
    }
}

/// Int8 multiply-accumulates per second of the vectorized [`dot_u8_i8`] of the generic ternary
/// kernel (one 160-weight block, L1-resident, repeated).
pub(crate) fn peak_macs_per_s(millis: u64) -> f64 {
    const LEN: usize = 5 * GROUP_BYTES;
    let d = [1u8; LEN];
    let x = [1i8; LEN];
    let start = Instant::now();
    let mut macs = 0u64;
    let mut sink = 0i32;
    while start.elapsed().as_millis() < millis as u128 {
        for _ in 0..1024 {
            sink = sink.wrapping_add(dot_u8_i8(black_box(&d), black_box(&x)));
        }
        macs += 1024 * LEN as u64;
    }
    black_box(sink);
    macs as f64 / start.elapsed().as_secs_f64()
}
