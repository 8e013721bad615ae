//! Every kernel of every instruction set this CPU runs, against the scalar references.
//!
//! The integer paths (`ternary_gemm_i8`, `dense_gemm_i8`) must be EXACT: they are compared with
//! `tern_pack::dot::dot_i8` and an i64 sum by `assert_eq!`. The float paths are compared with an
//! f64 sum within named error budgets.

use proptest::prelude::*;
use tern_infer::kernels::{
    DenseWeights, I8Activations, Isa, dense_gemm_f32, dense_gemm_i8, int8_peak_macs_per_s,
    ternary_gemm_f32, ternary_gemm_i8, ternary_gemm_i8_arranged, ternary_gemm_i8_scaled,
};
use tern_pack::codec::Codec;
use tern_pack::dot::{DOT_F32_ULPS_PER_TERM, dot_f32_error_budget, dot_i8};

/// Row lengths around group, tail and register boundaries of both codecs, and around the
/// longest rows whose token the AVX-512 decode holds in registers (2-bit: 1536 in, 1537 out;
/// 1.6-bit: 960 in, 961 out).
const KS: [usize; 22] = [
    1, 5, 31, 32, 127, 128, 129, 159, 160, 161, 255, 256, 257, 320, 639, 640, 960, 961, 1536, 1537,
    2560, 4096,
];
/// Activation counts: decode, small prefill blocks and their remainders, two full blocks.
const NS: [usize; 8] = [1, 2, 3, 4, 5, 8, 9, 16];
/// Rows per test matrix: crosses the row pairs and 4-row tiles of the kernels, plus a remainder.
const ROWS: usize = 5;

/// Budget of the dense float kernels: `DOT_F32_ULPS_PER_TERM · k · ε · Σ|w_j · x_j|`, the bound
/// `tern_pack::dot` names for ternary weights, with the weight magnitudes included.
fn dense_f32_error_budget(w: &[f32], x: &[f32]) -> f64 {
    let sum_abs: f64 = w
        .iter()
        .zip(x)
        .map(|(&a, &b)| (a as f64 * b as f64).abs())
        .sum();
    DOT_F32_ULPS_PER_TERM * w.len() as f64 * f32::EPSILON as f64 * sum_abs
}

/// SplitMix64: a tiny deterministic generator, so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn trits(&mut self, len: usize) -> Vec<i8> {
        (0..len).map(|_| (self.next() % 3) as i8 - 1).collect()
    }
    fn i8s(&mut self, len: usize) -> Vec<i8> {
        (0..len).map(|_| self.next() as i8).collect()
    }
    fn f32s(&mut self, len: usize) -> Vec<f32> {
        (0..len)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    }
}

/// Activation patterns: random, and the extremes that expose saturation and offset bugs.
fn activations(rng: &mut Rng, n: usize, k: usize) -> Vec<(&'static str, Vec<i8>)> {
    vec![
        ("random", rng.i8s(n * k)),
        ("all -128", vec![-128; n * k]),
        ("all 127", vec![127; n * k]),
    ]
}

fn check_ternary_i8(
    isa: Isa,
    codec: Codec,
    trits: &[i8],
    k: usize,
    xs: &[i8],
    n: usize,
    what: &str,
) {
    let packed = codec.encode_matrix(trits, k).unwrap();
    let rb = codec.row_bytes(k);
    let rows = packed.len() / rb;
    let sums: Vec<i32> = xs
        .chunks(k)
        .map(|x| x.iter().map(|&v| v as i32).sum())
        .collect();
    // Outputs start as garbage: kernels assign every element (the engine hands them dirty buffers).
    let mut out = vec![i32::MIN; rows * n];
    ternary_gemm_i8(isa, codec, &packed, k, xs, &sums, n, &mut out);
    for r in 0..rows {
        for i in 0..n {
            let want = dot_i8(
                codec,
                &packed[r * rb..(r + 1) * rb],
                &xs[i * k..(i + 1) * k],
            );
            assert_eq!(
                out[r * n + i],
                want,
                "{isa} {codec} k={k} n={n} row {r} token {i} ({what})"
            );
        }
    }
}

#[test]
fn ternary_i8_is_exact_for_every_isa_codec_and_shape() {
    let mut rng = Rng(1);
    for isa in Isa::available() {
        for codec in Codec::ALL {
            for &k in &KS {
                let trits = rng.trits(ROWS * k);
                for &n in &NS {
                    for (what, xs) in activations(&mut rng, n, k) {
                        check_ternary_i8(isa, codec, &trits, k, &xs, n, what);
                    }
                }
            }
        }
    }
}

#[test]
fn ternary_i8_one_token_is_exact_over_batches_of_rows() {
    // One token's kernel sums the lanes of 16 rows at a time (AVX-512): one, two and three whole
    // batches, each with and without a remainder of rows summed one by one.
    let mut rng = Rng(3);
    for isa in Isa::available() {
        for codec in Codec::ALL {
            for k in [161, 1536] {
                for rows in [15, 16, 17, 32, 37, 48] {
                    let trits = rng.trits(rows * k);
                    for (what, xs) in activations(&mut rng, 1, k) {
                        check_ternary_i8(isa, codec, &trits, k, &xs, 1, what);
                    }
                }
            }
        }
    }
}

#[test]
fn ternary_i8_extreme_weights() {
    // Rows of all +1 and all -1 against ±128 activations: the largest sums in magnitude.
    for isa in Isa::available() {
        for codec in Codec::ALL {
            for k in [160, 161, 4096] {
                let trits: Vec<i8> = (0..2 * k).map(|j| if j < k { 1 } else { -1 }).collect();
                for (what, x) in [("-128", -128i8), ("127", 127)] {
                    check_ternary_i8(isa, codec, &trits, k, &vec![x; 3 * k], 3, what);
                }
            }
        }
    }
}

#[test]
fn arranged_activations_serve_every_row_range() {
    // The engine arranges a layer's input once and runs every row range of every matrix that
    // reads it on that one arrangement: each range must equal the scalar reference.
    let mut rng = Rng(7);
    let (k, rows) = (1536 + 37, 23);
    let trits = rng.trits(rows * k);
    for isa in Isa::available() {
        for codec in Codec::ALL {
            let packed = codec.encode_matrix(&trits, k).unwrap();
            let rb = codec.row_bytes(k);
            for n in [1, 3, 9] {
                let xs = rng.i8s(n * k);
                let sums: Vec<i32> = xs
                    .chunks(k)
                    .map(|x| x.iter().map(|&v| v as i32).sum())
                    .collect();
                let x = I8Activations::new(isa, codec, &xs, &sums, k, n);
                assert!(x.fits(isa, codec) && (x.k(), x.n()) == (k, n));
                let other = if codec == Codec::Bits2 {
                    Codec::Bits1_6
                } else {
                    Codec::Bits2
                };
                assert!(!x.fits(isa, other));
                // Ranges of 0, 1, 2, 3, 5 and 12 rows, in order and from the same `x`.
                let mut first = 0;
                for len in [0, 1, 2, 3, 5, 12] {
                    let mut out = vec![i32::MIN; len * n];
                    ternary_gemm_i8_arranged(&packed[first * rb..(first + len) * rb], &x, &mut out);
                    for r in 0..len {
                        let row = &packed[(first + r) * rb..(first + r + 1) * rb];
                        for i in 0..n {
                            let want = dot_i8(codec, row, &xs[i * k..(i + 1) * k]);
                            assert_eq!(
                                out[r * n + i],
                                want,
                                "{isa} {codec} n={n} row {}",
                                first + r
                            );
                        }
                    }
                    first += len;
                }
                assert_eq!(first, rows);
            }
        }
    }
}

#[test]
fn scaled_prefill_outputs_equal_the_scaled_reference_bit_for_bit() {
    // The engine's prefill path: each row range writes its columns of a token-major output,
    // finished as `acc / (x_scale · w_scale)`. The same two IEEE operations on the exact sum
    // must give the same bits, for every token count (the eight-token blocks of AVX-512 and
    // their remainders), odd row counts and a row stride wider than the rows.
    let mut rng = Rng(11);
    let sentinel = f32::from_bits(0x7fc0_1234);
    for isa in Isa::available() {
        for codec in Codec::ALL {
            for &k in &[31, 160, 257, 1536] {
                let rows = 7;
                let trits = rng.trits(rows * k);
                let packed = codec.encode_matrix(&trits, k).unwrap();
                let rb = codec.row_bytes(k);
                let w_scales: Vec<f32> = rng.f32s(rows).iter().map(|v| 0.5 + v.abs()).collect();
                for &n in NS.iter().chain(&[17]) {
                    let xs = rng.i8s(n * k);
                    let sums: Vec<i32> = xs
                        .chunks(k)
                        .map(|x| x.iter().map(|&v| v as i32).sum())
                        .collect();
                    let x_scales: Vec<f32> =
                        rng.f32s(n).iter().map(|v| 1.0 + 100.0 * v.abs()).collect();
                    let x = I8Activations::new(isa, codec, &xs, &sums, k, n);
                    let ld = rows + 3;
                    let mut out = vec![sentinel; n * ld];
                    ternary_gemm_i8_scaled(&packed, &x, &x_scales, &w_scales, &mut out, ld);
                    for i in 0..n {
                        for c in 0..ld {
                            let got = out[i * ld + c];
                            if c >= rows {
                                assert_eq!(got.to_bits(), sentinel.to_bits(), "column {c} written");
                                continue;
                            }
                            let row = &packed[c * rb..(c + 1) * rb];
                            let acc = dot_i8(codec, row, &xs[i * k..(i + 1) * k]);
                            let want = acc as f32 / (x_scales[i] * w_scales[c]);
                            assert_eq!(
                                got.to_bits(),
                                want.to_bits(),
                                "{isa} {codec} k={k} n={n} row {c} token {i}: {got} against {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "is not [n = 3, ld = 8]")]
fn scaled_prefill_rejects_a_short_output() {
    let (codec, k) = (Codec::Bits2, 64);
    let x = I8Activations::new(Isa::Generic, codec, &[1; 3 * 64], &[64; 3], k, 3);
    let packed = codec.encode_matrix(&[1; 8 * 64], k).unwrap();
    let mut out = vec![0f32; 2 * 8 + 7];
    ternary_gemm_i8_scaled(&packed, &x, &[1.0; 3], &[1.0; 8], &mut out, 8);
}

#[test]
#[should_panic(expected = "weights are not whole rows")]
fn arranged_activations_reject_partial_rows() {
    let (codec, k) = (Codec::Bits2, 64);
    let x = I8Activations::new(Isa::Generic, codec, &[1; 64], &[64], k, 1);
    let mut out = [0i32; 1];
    ternary_gemm_i8_arranged(&[0u8; 17], &x, &mut out);
}

#[test]
fn zero_rows_write_nothing() {
    for isa in Isa::available() {
        for codec in Codec::ALL {
            let mut out: [i32; 0] = [];
            ternary_gemm_i8(isa, codec, &[], 7, &[1; 14], &[7, 7], 2, &mut out);
            let mut outf: [f32; 0] = [];
            ternary_gemm_f32(isa, codec, &[], 7, &[1.0; 7], 1, &mut outf);
            dense_gemm_i8(isa, &[], 7, &[1; 7], 1, &mut out);
            dense_gemm_f32(isa, DenseWeights::F32(&[]), 7, &[1.0; 7], 1, &mut outf);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn ternary_i8_is_exact_for_random_shapes(k in 1usize..1200, rows in 0usize..5, n in 1usize..10, seed: u64) {
        let mut rng = Rng(seed);
        let trits = rng.trits(rows * k);
        let xs = rng.i8s(n * k);
        for isa in Isa::available() {
            for codec in Codec::ALL {
                if rows == 0 {
                    let mut out: [i32; 0] = [];
                    let sums: Vec<i32> = xs.chunks(k).map(|x| x.iter().map(|&v| v as i32).sum()).collect();
                    ternary_gemm_i8(isa, codec, &[], k, &xs, &sums, n, &mut out);
                } else {
                    check_ternary_i8(isa, codec, &trits, k, &xs, n, "proptest");
                }
            }
        }
    }
}

#[test]
fn ternary_f32_is_within_budget() {
    let mut rng = Rng(2);
    for isa in Isa::available() {
        for codec in Codec::ALL {
            for &k in &KS {
                let trits = rng.trits(ROWS * k);
                let packed = codec.encode_matrix(&trits, k).unwrap();
                for &n in &NS {
                    let xs = rng.f32s(n * k);
                    let mut out = vec![f32::NAN; ROWS * n];
                    ternary_gemm_f32(isa, codec, &packed, k, &xs, n, &mut out);
                    for r in 0..ROWS {
                        for i in 0..n {
                            let x = &xs[i * k..(i + 1) * k];
                            let t = &trits[r * k..(r + 1) * k];
                            let exact: f64 =
                                t.iter().zip(x).map(|(&t, &v)| t as f64 * v as f64).sum();
                            let err = (out[r * n + i] as f64 - exact).abs();
                            assert!(
                                err <= dot_f32_error_budget(x),
                                "{isa} {codec} k={k} n={n} row {r} token {i}: {} vs {exact}",
                                out[r * n + i]
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn dense_i8_is_exact() {
    let mut rng = Rng(3);
    for isa in Isa::available() {
        for &k in &KS {
            let mut w = rng.i8s(ROWS * k);
            w[..k].fill(-128); // row 0: the extreme that breaks offset tricks
            for &n in &NS {
                for (what, xs) in activations(&mut rng, n, k) {
                    let mut out = vec![i32::MIN; ROWS * n];
                    dense_gemm_i8(isa, &w, k, &xs, n, &mut out);
                    for r in 0..ROWS {
                        for i in 0..n {
                            let want: i64 = w[r * k..(r + 1) * k]
                                .iter()
                                .zip(&xs[i * k..(i + 1) * k])
                                .map(|(&a, &b)| a as i64 * b as i64)
                                .sum();
                            assert_eq!(
                                out[r * n + i] as i64,
                                want,
                                "{isa} k={k} n={n} row {r} token {i} ({what})"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn dense_f32_f16_bf16_are_within_budget() {
    let mut rng = Rng(4);
    for isa in Isa::available() {
        for &k in &KS {
            let w32 = rng.f32s(ROWS * k);
            let w16: Vec<half::f16> = w32.iter().map(|&v| half::f16::from_f32(v)).collect();
            let wb16: Vec<half::bf16> = w32.iter().map(|&v| half::bf16::from_f32(v)).collect();
            for &n in &NS {
                let xs = rng.f32s(n * k);
                for (name, w, wide) in [
                    ("f32", DenseWeights::F32(&w32), w32.clone()),
                    (
                        "f16",
                        DenseWeights::F16(&w16),
                        w16.iter().map(|v| v.to_f32()).collect(),
                    ),
                    (
                        "bf16",
                        DenseWeights::Bf16(&wb16),
                        wb16.iter().map(|v| v.to_f32()).collect(),
                    ),
                ] {
                    let mut out = vec![f32::NAN; ROWS * n];
                    dense_gemm_f32(isa, w, k, &xs, n, &mut out);
                    for r in 0..ROWS {
                        for i in 0..n {
                            let (w, x) = (&wide[r * k..(r + 1) * k], &xs[i * k..(i + 1) * k]);
                            let exact: f64 =
                                w.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
                            let err = (out[r * n + i] as f64 - exact).abs();
                            assert!(
                                err <= dense_f32_error_budget(w, x),
                                "{isa} {name} k={k} n={n} row {r} token {i}: {} vs {exact}",
                                out[r * n + i]
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "output is not")]
fn inconsistent_lengths_panic_before_any_work() {
    let packed = Codec::Bits2.encode_matrix(&[1i8; 256], 128).unwrap();
    let mut out = [0i32; 3]; // two rows × one token need 2
    ternary_gemm_i8(
        Isa::detect(),
        Codec::Bits2,
        &packed,
        128,
        &[1; 128],
        &[128],
        1,
        &mut out,
    );
}

#[test]
fn isa_names_round_trip_and_detect_is_available() {
    for isa in Isa::ALL {
        assert_eq!(Isa::from_name(isa.name()), Some(isa));
    }
    assert!(Isa::available().contains(&Isa::detect()));
    assert_eq!(Isa::available()[0], Isa::Generic);
}

#[test]
fn int8_peak_is_positive() {
    for isa in Isa::available() {
        let peak = int8_peak_macs_per_s(isa, 5);
        assert!(peak.is_finite() && peak > 1e8, "{isa}: {peak}");
    }
}
