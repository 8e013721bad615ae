//! The wgpu ternary kernels against the scalar references of `tern_pack::dot` and the CPU engine
//! (`TernaryLinear`), on deterministic data: both codecs × float and int8 activations × odd
//! shapes × 1, 3 and 9 tokens (9 crosses a token tile) × per-tensor and per-shard scales.
//!
//! Needs a GPU adapter: on Linux, any Vulkan driver (lavapipe from `mesa-vulkan-drivers` is a
//! software one). Run with `cargo test --release --features wgpu --test gpu_kernels`.
//!
//! It lives in the root package, behind the root `wgpu` feature (which turns on
//! `tern-infer/gpu`), so that CI's one release build with `--features wgpu` serves this test,
//! the GPU training test and the demos.
#![cfg(feature = "wgpu")]

use std::sync::OnceLock;

use tern_infer::gpu::{
    GpuContext, GpuError, GpuTernaryMatrix, MAX_GROUPS_PER_DIMENSION, ROWS_PER_WORKGROUP,
};
use tern_infer::kernels::Isa;
use tern_infer::linear::{Input, Linear, QuantizedRows, TernaryActivations, TernaryLinear};
use tern_pack::checkpoint::PackedTensor;
use tern_pack::codec::Codec;
use tern_pack::dot::{dot_f32, dot_f32_error_budget, dot_i8};
use tern_pack::init::SplitMix64;

/// Output features: one row, a partial workgroup of 8 rows, and several workgroups plus one row.
const ROWS: [usize; 4] = [1, 3, 65, 257];
/// Input features: a lone tail, whole groups of neither codec, and model-sized rows.
const KS: [usize; 5] = [5, 64, 255, 1000, 2560];
/// Tokens: decode, a small batch, and more than one tile of 8 tokens.
const NS: [usize; 3] = [1, 3, 9];

/// The int8 path, after its exact integer sum, computes `acc as f32 / (x_scale · s)`: `acc` is
/// exact in f32 (`|acc| < 2^24`), the product is correctly rounded on both sides, and WGSL (like
/// Vulkan) allows 2.5 ulp for an f32 division where the CPU rounds correctly. So the outputs may
/// differ by at most 3 ulp of the result: a relative difference of `3 · ε`. Before
/// dequantization the sums are compared for equality.
const GPU_INT8_REL_BUDGET: f32 = 3.0 * f32::EPSILON;

/// Ulps of the final division by the scale allowed on the float path (2.5 on the GPU, 0.5 for
/// the CPU reference), on top of `tern_pack::dot::dot_f32_error_budget` for the sum (the contract
/// of every kernel that adds in its own order).
const GPU_F32_DIV_ULPS: f64 = 3.0;

/// A tighter, statistical check of the float path:
/// `|gpu − ref| <= GPU_F32_SQRT_K_ULPS · ε · sqrt(k) · ‖x_i‖₂ / s(r)`.
///
/// The contract above is the worst case, linear in `k`. Rounding errors of a sum of random terms
/// add like a random walk instead: the reference adds left to right, so its partial sums grow to
/// about `‖x‖₂` and its `k` roundings to about `ε · sqrt(k) · ‖x‖₂`; the GPU adds 4 × 32 short
/// lane sums and a tree, several times more accurately (measured against an f64 sum while writing
/// this test: at k = 2560 the GPU is within 0.09 of this yardstick, the reference within 0.78).
/// `‖x‖₂ / s` is the natural size of an output (a row of random trits gives outputs of RMS
/// `0.82 · ‖x‖₂ / s`); an output itself can be arbitrarily small by cancellation, so it cannot be
/// the yardstick. The division's 3 ulp fit in it too (`|y| <= sqrt(k) · ‖x‖₂ / s`). A wrong or
/// missing term moves an output by about `‖x‖₂ / (s · sqrt(k))`, thousands of times the budget.
const GPU_F32_SQRT_K_ULPS: f64 = 4.0;

fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = GpuContext::new().unwrap_or_else(|e| panic!("{e}"));
        eprintln!("GPU kernels on {}", ctx.describe());
        ctx
    })
}

/// A random `[rows, k]` ternary matrix, packed, with a few all-(+1) and all-(−1) rows.
fn packed_matrix(rng: &mut SplitMix64, codec: Codec, rows: usize, k: usize) -> Vec<u8> {
    let mut trits: Vec<i8> = (0..rows * k).map(|_| rng.below(3) as i8 - 1).collect();
    for (r, row) in trits.chunks_exact_mut(k).enumerate() {
        match r % 16 {
            1 => row.fill(1),
            2 => row.fill(-1),
            _ => {}
        }
    }
    codec.encode_matrix(&trits, k).unwrap()
}

/// Per-tensor scales, and per-shard ones with as many shards as a small divisor of `rows` allows.
fn scale_sets(rng: &mut SplitMix64, rows: usize) -> [Vec<f32>; 2] {
    let shards = [5, 3, 2]
        .into_iter()
        .find(|d| rows.is_multiple_of(*d) && rows > *d)
        .unwrap_or(rows);
    let mut scale = || 0.5 + 40.0 * rng.next_unit() as f32;
    [vec![scale()], (0..shards).map(|_| scale()).collect()]
}

fn for_each_shape(mut f: impl FnMut(Codec, usize, usize, &mut SplitMix64)) {
    let mut rng = SplitMix64::new(0x7e57);
    for codec in Codec::ALL {
        for rows in ROWS {
            for k in KS {
                f(codec, rows, k, &mut rng);
            }
        }
    }
}

fn upload(t: &PackedTensor<'_>, activations: TernaryActivations) -> GpuTernaryMatrix {
    GpuTernaryMatrix::upload(ctx(), "test.weight", t, activations).unwrap()
}

#[test]
fn integer_sums_equal_the_scalar_reference_exactly() {
    for_each_shape(|codec, rows, k, rng| {
        let packed = packed_matrix(rng, codec, rows, k);
        let t = PackedTensor {
            codec,
            rows,
            cols: k,
            data: &packed,
            scales: &[1.0],
        };
        let m = upload(&t, TernaryActivations::Int8);
        for n in NS {
            // Full int8 range (−128 included), then the extremes of both signs.
            let mut codes: Vec<i8> = (0..n * k).map(|_| rng.next_u64() as i8).collect();
            if n > 1 {
                codes[..k].fill(127);
                codes[k..2 * k].fill(-128);
            }
            let got = m.dot_i8(&codes, n).unwrap();
            for (i, x) in codes.chunks_exact(k).enumerate() {
                for r in 0..rows {
                    let want = dot_i8(codec, t.row(r), x);
                    assert_eq!(
                        got[i * rows + r],
                        want,
                        "{codec} [{rows}, {k}] n={n} token {i} row {r}"
                    );
                }
            }
        }
    });
}

#[test]
fn int8_path_matches_the_cpu_engine() {
    let mut worst = 0f32;
    for_each_shape(|codec, rows, k, rng| {
        let packed = packed_matrix(rng, codec, rows, k);
        for scales in scale_sets(rng, rows) {
            let t = PackedTensor {
                codec,
                rows,
                cols: k,
                data: &packed,
                scales: &scales,
            };
            let m = upload(&t, TernaryActivations::Int8);
            let cpu = TernaryLinear {
                isa: Isa::Generic,
                codec,
                rows,
                cols: k,
                data: &packed,
                scales: scales.clone(),
                activations: TernaryActivations::Int8,
            };
            for n in NS {
                let mut xs = vec![0f32; n * k];
                rng.fill_normal(&mut xs, 1.0);
                let got = m.forward(&xs, n).unwrap();
                let mut engine = vec![0f32; n * rows];
                cpu.forward(&Input::float(Isa::Generic, &xs, n, k), &mut engine);
                let q = QuantizedRows::new(Isa::Generic, &xs, n, k);
                for i in 0..n {
                    let x = &q.codes[i * k..(i + 1) * k];
                    for r in 0..rows {
                        let acc = dot_i8(codec, t.row(r), x);
                        let want = acc as f32 / (q.scales[i] * t.scale_for_row(r));
                        let (g, at) = (got[i * rows + r], i * rows + r);
                        assert_eq!(engine[at], want, "CPU engine, {codec} row {r}");
                        let err = (g - want).abs();
                        worst = worst.max(err / want.abs().max(f32::MIN_POSITIVE));
                        assert!(
                            err <= GPU_INT8_REL_BUDGET * want.abs(),
                            "{codec} [{rows}, {k}] n={n} token {i} row {r}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    });
    eprintln!("int8 path: worst relative error {worst:e} (budget {GPU_INT8_REL_BUDGET:e})");
}

#[test]
fn float_path_matches_the_scalar_reference() {
    let (mut worst_contract, mut worst_rel) = (0f64, 0f64);
    for_each_shape(|codec, rows, k, rng| {
        let packed = packed_matrix(rng, codec, rows, k);
        for scales in scale_sets(rng, rows) {
            let t = PackedTensor {
                codec,
                rows,
                cols: k,
                data: &packed,
                scales: &scales,
            };
            let m = upload(&t, TernaryActivations::Float);
            for n in NS {
                let mut xs = vec![0f32; n * k];
                rng.fill_normal(&mut xs, 1.0);
                let got = m.forward(&xs, n).unwrap();
                for (i, x) in xs.chunks_exact(k).enumerate() {
                    let want: Vec<f32> = (0..rows)
                        .map(|r| dot_f32(codec, t.row(r), x) / t.scale_for_row(r))
                        .collect();
                    let norm = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
                    for (r, &w) in want.iter().enumerate() {
                        let g = got[i * rows + r];
                        let err = (g as f64 - w as f64).abs();
                        let contract = dot_f32_error_budget(x) / t.scale_for_row(r) as f64
                            + GPU_F32_DIV_ULPS * f32::EPSILON as f64 * w.abs() as f64;
                        let walk = (k as f64).sqrt() * f32::EPSILON as f64 * norm
                            / t.scale_for_row(r) as f64;
                        let rel = GPU_F32_SQRT_K_ULPS * walk;
                        worst_contract = worst_contract.max(err / contract);
                        worst_rel = worst_rel.max(err / walk);
                        assert!(
                            err <= contract && err <= rel,
                            "{codec} [{rows}, {k}] n={n} token {i} row {r}: {g} vs {w} \
                             (budgets {contract:e}, {rel:e})"
                        );
                    }
                }
            }
        }
    });
    eprintln!(
        "float path: worst error {worst_rel:.3} ε·sqrt(k)·‖x‖₂/s (budget {GPU_F32_SQRT_K_ULPS}), \
         {worst_contract:.3} of the dot_f32 contract"
    );
}

#[test]
fn rows_past_one_grid_dimension_fold_into_the_second() {
    // 65,537 blocks of 8 rows: the grid is 65,535 × 2, and the second row of the grid holds two
    // blocks, the last one partial.
    let rows = MAX_GROUPS_PER_DIMENSION * ROWS_PER_WORKGROUP + 13;
    let (codec, k) = (Codec::Bits1_6, 5);
    let mut rng = SplitMix64::new(11);
    let packed = packed_matrix(&mut rng, codec, rows, k);
    let t = PackedTensor {
        codec,
        rows,
        cols: k,
        data: &packed,
        scales: &[1.0],
    };
    let m = upload(&t, TernaryActivations::Int8);
    let codes: Vec<i8> = (0..2 * k).map(|_| rng.next_u64() as i8).collect();
    let got = m.dot_i8(&codes, 2).unwrap();
    for (i, x) in codes.chunks_exact(k).enumerate() {
        for r in 0..rows {
            assert_eq!(
                got[i * rows + r],
                dot_i8(codec, t.row(r), x),
                "token {i} row {r}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut rng = SplitMix64::new(9);
    let (codec, rows, k) = (Codec::Bits2, 6, 70);
    let packed = packed_matrix(&mut rng, codec, rows, k);
    let t = PackedTensor {
        codec,
        rows,
        cols: k,
        data: &packed,
        scales: &[2.0, 3.0],
    };
    let m = upload(&t, TernaryActivations::Float);
    let shape = |r: Result<Vec<f32>, GpuError>| matches!(r, Err(GpuError::Shape { .. }));
    assert!(shape(m.forward(&vec![0.5; 2 * k - 1], 2)));
    assert!(shape(m.forward(&[], 0)));
    assert!(matches!(m.dot_i8(&[1; 3], 1), Err(GpuError::Shape { .. })));
    let q = QuantizedRows::new(Isa::Generic, &vec![0.5; k], 1, k);
    let mut short = q.clone();
    short.sums.clear();
    assert!(shape(m.forward_quantized(&short)));
    assert!(m.forward_quantized(&q).is_ok());

    let upload_err = |t: &PackedTensor<'_>| {
        GpuTernaryMatrix::upload(ctx(), "bad.weight", t, TernaryActivations::Int8).unwrap_err()
    };
    let e = upload_err(&PackedTensor {
        scales: &[1.0; 4],
        ..t
    });
    assert!(matches!(e, GpuError::Shape { .. }), "{e}");
    let e = upload_err(&PackedTensor {
        scales: &[1.0, -1.0],
        ..t
    });
    assert!(matches!(e, GpuError::Format { .. }), "{e}");
    let e = upload_err(&PackedTensor { cols: k + 20, ..t });
    assert!(matches!(e, GpuError::Shape { .. }), "{e}");
    assert!(e.to_string().contains("bad.weight"), "{e}");
    // 0b11 is no 2-bit digit; a padding slot (the tail's last digit plane) must hold trit 0.
    let mut bad = packed.clone();
    bad[3] = 0xff;
    let e = upload_err(&PackedTensor { data: &bad, ..t });
    assert!(matches!(e, GpuError::Format { .. }), "{e}");
    let mut bad = packed.clone();
    let rb = codec.row_bytes(k);
    bad[rb - 1] = 0b1001_0101;
    let e = upload_err(&PackedTensor { data: &bad, ..t });
    assert!(matches!(e, GpuError::Format { .. }), "{e}");
}

#[test]
fn the_no_adapter_error_says_what_was_searched_and_how_to_fix_it() {
    let e = GpuError::NoAdapter {
        backends: "Vulkan, Metal, DX12".into(),
    };
    let msg = e.to_string();
    assert!(
        msg.contains("Vulkan, Metal, DX12") && msg.contains("mesa-vulkan-drivers"),
        "{msg}"
    );
}
