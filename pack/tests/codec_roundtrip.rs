//! Round-trip and reference-dot properties of both codecs, on the input widths of real models
//! and on odd sizes.

use proptest::prelude::*;
use tern_pack::Codec;
use tern_pack::dot::{dot_f32, dot_f32_error_budget, dot_i8, matvec_i8};
use tern_pack::init::SplitMix64;

/// Input widths of the models tern serves (hidden and FFN sizes of BitNet 2B4T, Llama, TriLM).
const REAL_WIDTHS: [usize; 8] = [1536, 2048, 2560, 3072, 4096, 6912, 8192, 11264];

fn random_trits(rng: &mut SplitMix64, n: usize) -> Vec<i8> {
    (0..n).map(|_| (rng.next_u64() % 3) as i8 - 1).collect()
}

fn random_i8(rng: &mut SplitMix64, n: usize) -> Vec<i8> {
    (0..n).map(|_| rng.next_u64() as i8).collect()
}

fn exact_dot(t: &[i8], x: &[f64]) -> f64 {
    t.iter().zip(x).map(|(&t, &x)| t as f64 * x).sum()
}

#[test]
fn real_widths_round_trip_and_meet_the_size_budgets() {
    // Row counts include ones that are not multiples of anything.
    let mut rng = SplitMix64::new(42);
    for codec in Codec::ALL {
        for k in REAL_WIDTHS {
            for rows in [1, 3, 17] {
                let trits = random_trits(&mut rng, rows * k);
                let packed = codec.encode_matrix(&trits, k).unwrap();
                assert_eq!(packed.len(), rows * codec.row_bytes(k));
                assert_eq!(
                    codec.decode_matrix(&packed, rows, k).unwrap(),
                    trits,
                    "{codec} k={k}"
                );
            }
            // Bits per weight of a full matrix of this width (2560 rows), one f32 scale included.
            let bpw = codec.bits_per_weight(2560, k, 1);
            match codec {
                Codec::Bits2 => assert!(bpw <= 2.02, "{codec} k={k}: {bpw}"),
                Codec::Bits1_6 => assert!(bpw <= 1.625, "{codec} k={k}: {bpw}"),
            }
        }
    }
}

#[test]
fn integer_dot_is_exact_on_real_widths() {
    let mut rng = SplitMix64::new(7);
    for codec in Codec::ALL {
        for k in REAL_WIDTHS {
            let rows = 4;
            let trits = random_trits(&mut rng, rows * k);
            let packed = codec.encode_matrix(&trits, k).unwrap();
            let x = random_i8(&mut rng, k);
            let mut y = vec![0i32; rows];
            matvec_i8(codec, &packed, &x, &mut y);
            for (r, &got) in y.iter().enumerate() {
                let row = &trits[r * k..(r + 1) * k];
                let want: i64 = row.iter().zip(&x).map(|(&t, &x)| t as i64 * x as i64).sum();
                assert_eq!(got as i64, want, "{codec} k={k} row {r}");
            }
        }
    }
}

#[test]
fn extreme_activations_do_not_overflow_the_integer_dot() {
    // All +1 weights against all -128 activations at the widest real width.
    let k = 11264;
    for codec in Codec::ALL {
        let packed = codec.encode_matrix(&vec![1i8; k], k).unwrap();
        assert_eq!(dot_i8(codec, &packed, &vec![-128i8; k]), -128 * k as i32);
    }
}

#[test]
fn invalid_values_and_bytes_are_rejected() {
    for codec in Codec::ALL {
        assert!(codec.encode_matrix(&[0, 2, 1, 0], 4).is_err());
        let k = 7;
        let mut packed = codec.encode_matrix(&[1; 7], k).unwrap();
        // Padding slots must hold zero: flip the last byte to an all-(+1) code.
        let last = packed.len() - 1;
        packed[last] = match codec {
            Codec::Bits2 => 0b1010_1010,
            Codec::Bits1_6 => tern_pack::codec::bits1_6::encode_byte([2; 5]),
        };
        assert!(codec.decode_matrix(&packed, 1, k).is_err(), "{codec}");
    }
    // A byte no encoder writes (2-bit: a digit 0b11; 1.6-bit: one of the 13 unused values).
    for codec in Codec::ALL {
        let invalid = (0..=255u8)
            .find(|&b| codec.decode_byte(b).is_none())
            .unwrap();
        let mut packed = codec.encode_matrix(&[0; 256], 256).unwrap();
        packed[5] = invalid;
        assert!(codec.decode_matrix(&packed, 1, 256).is_err(), "{codec}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_size_round_trips(k in 1usize..700, rows in 1usize..5, seed in any::<u64>()) {
        let mut rng = SplitMix64::new(seed);
        for codec in Codec::ALL {
            let trits = random_trits(&mut rng, rows * k);
            let packed = codec.encode_matrix(&trits, k).unwrap();
            prop_assert_eq!(packed.len() % 4, 0);
            prop_assert_eq!(codec.decode_matrix(&packed, rows, k).unwrap(), trits);
        }
    }

    #[test]
    fn dots_agree_with_f64(k in 1usize..1200, seed in any::<u64>()) {
        let mut rng = SplitMix64::new(seed);
        for codec in Codec::ALL {
            let trits = random_trits(&mut rng, k);
            let packed = codec.encode_matrix(&trits, k).unwrap();
            let xi = random_i8(&mut rng, k);
            let want = exact_dot(&trits, &xi.iter().map(|&v| v as f64).collect::<Vec<_>>());
            // Integer path: exact.
            prop_assert_eq!(dot_i8(codec, &packed, &xi) as f64, want);
            let mut xf = vec![0f32; k];
            rng.fill_normal(&mut xf, 3.0);
            let want = exact_dot(&trits, &xf.iter().map(|&v| v as f64).collect::<Vec<_>>());
            let got = dot_f32(codec, &packed, &xf) as f64;
            // Float path: within the named budget.
            prop_assert!((got - want).abs() <= dot_f32_error_budget(&xf), "{} vs {}", got, want);
        }
    }
}
