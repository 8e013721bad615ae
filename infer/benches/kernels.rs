//! Kernel throughput for every instruction set this CPU runs (single thread).
//!
//! * decode (one token): packed weight bytes per second (`Throughput::Bytes`), the figure to
//!   compare with memory bandwidth;
//! * prefill (16 tokens): multiply-accumulates per second (`Throughput::Elements`), to compare
//!   with `int8_peak_macs_per_s`, printed once at the start.
//!
//! Shapes are those of a 2B-parameter BitNet: a 6912 × 2560 FFN projection and an 8192 × 2560
//! int8 head; `ternary_i8_decode_resident` takes the 700M shape's 4096 × 1536 gate/up. A single
//! matrix of 1.5–4.4 MB stays in a large L3; DRAM-bound figures need several matrices in
//! rotation (see the engine's own `tern bench`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tern_infer::attention::{Dims, KEY_BLOCK, attention as attend};
use tern_infer::kernels::{
    DenseWeights, Isa, dense_gemm_f32, dense_gemm_i8, int8_peak_macs_per_s, ternary_gemm_f32,
    ternary_gemm_i8,
};
use tern_pack::codec::Codec;

const ROWS: usize = 6912;
const K: usize = 2560;
const HEAD_ROWS: usize = 8192;
const PREFILL: usize = 16;

/// Deterministic pseudo-random bytes (SplitMix64).
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (s ^ (s >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            ((z ^ (z >> 27)) >> 32) as u8
        })
        .collect()
}

fn trits(len: usize) -> Vec<i8> {
    bytes(len, 1)
        .into_iter()
        .map(|b| (b % 3) as i8 - 1)
        .collect()
}

fn activations(n: usize) -> (Vec<i8>, Vec<i32>) {
    let xs: Vec<i8> = bytes(n * K, 2).into_iter().map(|b| b as i8).collect();
    let sums = xs
        .chunks(K)
        .map(|x| x.iter().map(|&v| v as i32).sum())
        .collect();
    (xs, sums)
}

fn quick<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    g
}

fn ternary(c: &mut Criterion) {
    for isa in Isa::available() {
        println!(
            "int8 peak, {isa}: {:.1} GMAC/s per core",
            int8_peak_macs_per_s(isa, 200) / 1e9
        );
    }
    let t = trits(ROWS * K);
    for (name, n, bytes_throughput) in [
        ("ternary_i8_decode", 1, true),
        ("ternary_i8_prefill16", PREFILL, false),
    ] {
        let (xs, sums) = activations(n);
        let mut g = quick(c, name);
        for codec in Codec::ALL {
            let packed = codec.encode_matrix(&t, K).unwrap();
            g.throughput(if bytes_throughput {
                Throughput::Bytes(packed.len() as u64)
            } else {
                Throughput::Elements((ROWS * K * n) as u64)
            });
            let mut out = vec![0i32; ROWS * n];
            for isa in Isa::available() {
                g.bench_function(BenchmarkId::new(codec.bits_label(), isa), |b| {
                    b.iter(|| {
                        ternary_gemm_i8(isa, codec, black_box(&packed), K, &xs, &sums, n, &mut out)
                    })
                });
            }
        }
        g.finish();
    }
    // The 700M shape's gate/up (4096 × 1536, 1.5 MB, from L2/L3): rows short enough that the
    // AVX-512 decode keeps the token in registers at 2 bits.
    let (rows, k) = (4096, 1536);
    let t_short = trits(rows * k);
    let x: Vec<i8> = bytes(k, 2).into_iter().map(|b| b as i8).collect();
    let sum = [x.iter().map(|&v| i32::from(v)).sum::<i32>()];
    let mut g = quick(c, "ternary_i8_decode_resident");
    for codec in Codec::ALL {
        let packed = codec.encode_matrix(&t_short, k).unwrap();
        g.throughput(Throughput::Bytes(packed.len() as u64));
        let mut out = vec![0i32; rows];
        for isa in Isa::available() {
            g.bench_function(BenchmarkId::new(codec.bits_label(), isa), |b| {
                b.iter(|| ternary_gemm_i8(isa, codec, black_box(&packed), k, &x, &sum, 1, &mut out))
            });
        }
    }
    g.finish();
    let xf: Vec<f32> = activations(1).0.into_iter().map(f32::from).collect();
    let mut g = quick(c, "ternary_f32_decode");
    for codec in Codec::ALL {
        let packed = codec.encode_matrix(&t, K).unwrap();
        g.throughput(Throughput::Bytes(packed.len() as u64));
        let mut out = vec![0f32; ROWS];
        for isa in Isa::available() {
            g.bench_function(BenchmarkId::new(codec.bits_label(), isa), |b| {
                b.iter(|| ternary_gemm_f32(isa, codec, black_box(&packed), K, &xf, 1, &mut out))
            });
        }
    }
    g.finish();
}

fn dense(c: &mut Criterion) {
    let w: Vec<i8> = bytes(HEAD_ROWS * K, 3)
        .into_iter()
        .map(|b| b as i8)
        .collect();
    let (xs, _) = activations(1);
    let mut g = quick(c, "dense_i8_head_decode");
    g.throughput(Throughput::Bytes(w.len() as u64));
    let mut out = vec![0i32; HEAD_ROWS];
    for isa in Isa::available() {
        g.bench_function(BenchmarkId::from_parameter(isa), |b| {
            b.iter(|| dense_gemm_i8(isa, black_box(&w), K, &xs, 1, &mut out))
        });
    }
    g.finish();

    let wh: Vec<half::f16> = w
        .iter()
        .map(|&v| half::f16::from_f32(v as f32 / 64.0))
        .collect();
    let xf: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
    let mut g = quick(c, "dense_f16_head_decode");
    g.throughput(Throughput::Bytes(2 * wh.len() as u64));
    let mut out = vec![0f32; HEAD_ROWS];
    for isa in Isa::available() {
        g.bench_function(BenchmarkId::from_parameter(isa), |b| {
            b.iter(|| dense_gemm_f32(isa, DenseWeights::F16(black_box(&wh)), K, &xf, 1, &mut out))
        });
    }
    g.finish();
}

/// Decode attention (one new token) over an f16 cache of `CONTEXT` tokens, in the shapes of the
/// ~700M model (16 KV heads of 96, MHA) and of 2B4T (5 KV heads of 128, 4 queries each). The
/// cache is hot (a few hundred KB); in a real decode the weight stream evicts it between
/// layers. Throughput: cache bytes read.
fn attention(c: &mut Criterion) {
    const CONTEXT: usize = 160;
    let mut g = quick(c, "attention_f16_decode");
    for (name, heads, kv_heads, hd) in [("700m", 16, 16, 96), ("2b4t", 20, 5, 128)] {
        let blocks = CONTEXT.div_ceil(KEY_BLOCK);
        let cache = |len: usize, seed: u64| -> Vec<Vec<half::f16>> {
            (0..kv_heads)
                .map(|h| {
                    bytes(len, seed + h as u64)
                        .into_iter()
                        .map(|b| half::f16::from_f32((b as f32 - 128.0) / 64.0))
                        .collect()
                })
                .collect()
        };
        let (k, v) = (cache(blocks * KEY_BLOCK * hd, 10), cache(CONTEXT * hd, 50));
        let q: Vec<f32> = bytes(heads * hd, 4)
            .into_iter()
            .map(|b| (b as f32 - 128.0) / 32.0)
            .collect();
        let mut out = vec![0f32; q.len()];
        let d = Dims {
            heads,
            kv_heads,
            head_dim: hd,
            start: CONTEXT - 1,
        };
        g.throughput(Throughput::Bytes((4 * kv_heads * CONTEXT * hd) as u64));
        for isa in Isa::available() {
            g.bench_function(BenchmarkId::new(name, isa), |b| {
                b.iter(|| attend(isa, black_box(&q), &k, &v, &mut out, d))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, ternary, dense, attention);
criterion_main!(benches);
