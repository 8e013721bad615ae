//! Attention and quantizer tests: against an f64 reference, across instruction sets.

use super::cache::{append, append_keys};
use super::*;
use super::{append_and_attend, attention_scaled};
use tern_pack::init::SplitMix64;
use tern_pack::quant::quantize_activations_i8;

/// The largest absolute difference between two equally long vectors.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn f16_widening_is_exact_for_every_value() {
    for h in 0..=u16::MAX {
        let (want, got) = (f16::from_bits(h).to_f32(), widen_f16(h));
        assert!(
            want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()),
            "{h:#06x}"
        );
    }
}

#[test]
fn quantizer_codes_infinities_and_huge_values_as_the_reference() {
    for x in [
        vec![f32::INFINITY, 1.0, -2.0, f32::NAN],
        vec![f32::MAX, -f32::MAX, 1e30, -1e-30, 0.0],
        vec![0.0; 19],
        vec![f32::NAN; 17],
    ] {
        let mut want = vec![0i8; x.len()];
        let s = quantize_activations_i8(&x, &mut want);
        for isa in Isa::available() {
            let mut got = vec![0i8; x.len()];
            let (gs, sum) = quantize_i8(isa, &x, &mut got);
            assert_eq!((gs, &got), (s, &want), "{isa:?} {x:?}");
            assert_eq!(sum, want.iter().map(|&c| c as i32).sum::<i32>());
        }
    }
}

#[test]
fn quantizer_equals_the_reference_on_every_isa() {
    let mut rng = SplitMix64::new(3);
    for k in [1, 7, 64, 1000, 2560] {
        let mut x = vec![0f32; k];
        rng.fill_normal(&mut x, 1.5);
        // Values exactly on rounding ties of the scale.
        x[0] = 3.0;
        if k > 64 {
            // A NaN (skipped by the maximum, coded 0) and a value on the maximum's tie.
            x[k / 2] = f32::NAN;
            x[k - 1] = -x.iter().fold(0f32, |m, v| m.max(v.abs()));
        }
        let mut want = vec![0i8; k];
        let s = quantize_activations_i8(&x, &mut want);
        for isa in Isa::available() {
            let mut got = vec![0i8; k];
            let (gs, sum) = quantize_i8(isa, &x, &mut got);
            assert_eq!((gs, &got), (s, &want), "{isa:?} k={k}");
            assert_eq!(sum, want.iter().map(|&c| c as i32).sum::<i32>());
        }
    }
}

/// Float budget of attention outputs between instruction sets (summation order only).
const ATTENTION_ABS_BUDGET: f32 = 1e-5;
/// With an f16 cache (unit values: f16 keeps ~3 decimal digits).
const F16_KV_ABS_BUDGET: f32 = 1e-2;

/// Token-major `[tokens, kv_heads · hd]` rows split into the cache's per-head streams.
fn split<T: KvElem>(x: &[f32], kv_heads: usize, hd: usize) -> Vec<Vec<T>> {
    split_scaled(x, kv_heads, hd).0
}

/// The same, keys in the cache's block layout.
fn split_keys<T: KvElem>(x: &[f32], kv_heads: usize, hd: usize) -> Vec<Vec<T>> {
    split_keys_scaled(x, kv_heads, hd).0
}

/// [`split`] with each head's row scales (empty unless `T::SCALED`).
fn split_scaled<T: KvElem>(x: &[f32], kv_heads: usize, hd: usize) -> (Vec<Vec<T>>, Vec<Vec<f32>>) {
    let (mut heads, mut scales) = (vec![Vec::new(); kv_heads], vec![Vec::new(); kv_heads]);
    append(Isa::Generic, &mut heads, &mut scales, x, hd);
    scales.retain(|_| T::SCALED);
    (heads, scales)
}

/// [`split_keys`] with each head's row scales (empty unless `T::SCALED`).
fn split_keys_scaled<T: KvElem>(
    x: &[f32],
    kv_heads: usize,
    hd: usize,
) -> (Vec<Vec<T>>, Vec<Vec<f32>>) {
    let (mut heads, mut scales) = (vec![Vec::new(); kv_heads], vec![Vec::new(); kv_heads]);
    append_keys(Isa::Generic, &mut heads, &mut scales, x, hd, 0);
    scales.retain(|_| T::SCALED);
    (heads, scales)
}

/// Unit normal queries (`n` tokens) and keys and values (`start + n` tokens) of shape `d`,
/// token-major.
fn random_qkv(rng: &mut SplitMix64, d: Dims, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut q = vec![0f32; n * d.heads * d.head_dim];
    let mut k = vec![0f32; (d.start + n) * d.kv_heads * d.head_dim];
    let mut v = k.clone();
    rng.fill_normal(&mut q, 1.0);
    rng.fill_normal(&mut k, 1.0);
    rng.fill_normal(&mut v, 1.0);
    (q, k, v)
}

/// Attention in f64 with a two-pass softmax: the reference of every instruction set.
fn reference(q: &[f32], k: &[f32], v: &[f32], d: Dims) -> Vec<f32> {
    let hd = d.head_dim;
    let (qd, kd) = (d.heads * hd, d.kv_heads * hd);
    let group = d.heads / d.kv_heads;
    let n = q.len() / qd;
    let mut out = vec![0f32; q.len()];
    for i in 0..n {
        for h in 0..d.heads {
            let qi = &q[i * qd + h * hd..][..hd];
            let off = (h / group) * hd;
            let len = d.start + i + 1;
            let s: Vec<f64> = (0..len)
                .map(|t| {
                    let kt = &k[t * kd + off..][..hd];
                    qi.iter()
                        .zip(kt)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for c in 0..hd {
                let acc: f64 = (0..len).map(|t| e[t] * v[t * kd + off + c] as f64).sum();
                out[i * qd + h * hd + c] = (acc / sum) as f32;
            }
        }
    }
    out
}

#[test]
fn exp_is_within_two_ulp_of_the_library() {
    let mut x = 0f32;
    while x > -87.0 {
        let (want, got) = (x.exp(), exp_le0(x));
        let ulp = (want.to_bits() as i64 - got.to_bits() as i64).abs();
        assert!(ulp <= 2, "exp({x}) = {got}, want {want}");
        x -= 0.000_731;
    }
    assert_eq!(exp_le0(-100.0), 0.0);
    assert_eq!(exp_le0(0.0), 1.0);
}

/// The select form equals `exp_le0` bit for bit, NaN and infinities included.
#[test]
fn exp_select_equals_exp_le0() {
    let mut xs = vec![f32::NAN, -f32::NAN, f32::NEG_INFINITY, f32::INFINITY, -0.0];
    let mut x = 0f32;
    while x > -100.0 {
        xs.push(x);
        x -= 0.000_917;
    }
    for x in xs {
        assert_eq!(
            exp_le0_select(x).to_bits(),
            exp_le0(x).to_bits(),
            "exp({x})"
        );
    }
    assert_eq!(exp_le0_select(f32::NEG_INFINITY), 0.0);
}

/// The AVX-512 softmax numerators equal the scalar ones bit for bit: every length up to a few
/// registers, random scores and rows with infinities, NaN and signed zeros.
#[cfg(target_arch = "x86_64")]
#[test]
fn vector_softmax_numerators_equal_the_scalar_ones() {
    /// The AVX-512 entry point, with the feature it needs enabled for it to inline into.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(s: &mut [f32]) -> f32 {
        unsafe { avx512::softmax_numerators(s) }
    }
    type Vector = unsafe fn(&mut [f32]) -> f32;
    let mut versions: Vec<(&str, Vector)> = Vec::new();
    if std::arch::is_x86_feature_detected!("avx512f") {
        versions.push(("avx512", avx512));
    }
    if std::arch::is_x86_feature_detected!("avx2") {
        versions.push(("avx2", avx2::softmax_numerators));
    }
    let mut rng = SplitMix64::new(7);
    let mut rows: Vec<Vec<f32>> = (0..=50)
        .map(|n| {
            (0..n)
                .map(|_| (rng.next_unit() as f32 - 0.5) * 200.0)
                .collect()
        })
        .collect();
    rows.push(vec![f32::NEG_INFINITY; 17]);
    rows.push(vec![
        -0.0,
        0.0,
        f32::NAN,
        -90.0,
        3.0,
        f32::NEG_INFINITY,
        -86.9,
    ]);
    rows.push(vec![f32::INFINITY, 1.0, -1.0]);
    for row in rows {
        let mut want = row.clone();
        let ws = softmax_numerators(&mut want);
        for (name, vector) in &versions {
            let mut got = row.clone();
            // SAFETY: each version's instruction set was detected above.
            let gs = unsafe { vector(&mut got) };
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                (ws.to_bits(), bits(&want)),
                (gs.to_bits(), bits(&got)),
                "{name}: {row:?}"
            );
        }
    }
}

#[test]
fn attention_equals_the_f64_reference_on_every_isa() {
    let mut rng = SplitMix64::new(7);
    // MHA (blocks of 16 tokens), GQA groups of 4 (2B4T), a group of 16 (one token per
    // block); prefills of 1..40 tokens after 0 or 9 cached ones. Every width of the shared
    // x86 kernel (64, 80, 96, 128) with a lone query (MHA decode) and with groups.
    for (heads, kv_heads, hd) in [
        (3, 3, 24),
        (8, 2, 40),
        (16, 1, 16),
        (2, 2, 96),
        (8, 2, 128),
        (12, 3, 64),
        (5, 1, 80),
        (2, 2, 128),
        (2, 2, 80),
        (2, 2, 64),
    ] {
        for (start, n) in [(0, 1), (0, 37), (9, 1), (9, 40)] {
            let d = Dims {
                heads,
                kv_heads,
                head_dim: hd,
                start,
            };
            let (q, k, v) = random_qkv(&mut rng, d, n);
            let want = reference(&q, &k, &v, d);
            for isa in Isa::available() {
                let mut got = vec![0f32; q.len()];
                let (ks, vs) = (
                    split_keys::<f32>(&k, kv_heads, hd),
                    split::<f32>(&v, kv_heads, hd),
                );
                attention(isa, &q, &ks, &vs, &mut got, d);
                let err = max_abs_diff(&got, &want);
                assert!(
                    err <= ATTENTION_ABS_BUDGET,
                    "{isa:?} heads {heads}/{kv_heads} start {start} n {n}: {err}"
                );
            }
        }
    }
}

#[test]
fn attention_agrees_across_isas() {
    let mut rng = SplitMix64::new(5);
    // Widths the shared x86 kernel takes (64, 128) and one it leaves to the generic body (40).
    for hd in [40, 64, 128] {
        let d = Dims {
            heads: 4,
            kv_heads: 2,
            head_dim: hd,
            start: 9,
        };
        let (q, k, v) = random_qkv(&mut rng, d, 3);
        let mut want = vec![0f32; q.len()];
        let (k16, v16) = (split_keys::<f16>(&k, 2, hd), split::<f16>(&v, 2, hd));
        let (k, v) = (split_keys::<f32>(&k, 2, hd), split::<f32>(&v, 2, hd));
        attention(Isa::Generic, &q, &k, &v, &mut want, d);
        let mut want16 = vec![0f32; q.len()];
        attention(Isa::Generic, &q, &k16, &v16, &mut want16, d);
        for isa in Isa::available() {
            let mut got = vec![0f32; q.len()];
            attention(isa, &q, &k, &v, &mut got, d);
            let err = max_abs_diff(&got, &want);
            assert!(err <= ATTENTION_ABS_BUDGET, "{isa:?} hd {hd}: {err}");
            // f16 keys and values: rounding of the cache dominates the distance to the f32
            // cache; against the generic body on the same f16 cache, only the order of
            // the sums differs.
            attention(isa, &q, &k16, &v16, &mut got, d);
            let err = max_abs_diff(&got, &want);
            assert!(err <= F16_KV_ABS_BUDGET, "{isa:?} hd {hd} f16: {err}");
            let err = max_abs_diff(&got, &want16);
            assert!(
                err <= ATTENTION_ABS_BUDGET,
                "{isa:?} hd {hd} f16 vs generic: {err}"
            );
        }
    }
}

/// With the int8 cache (unit normal keys and values, rows of 16–128): each row is rounded to
/// steps of `absmax / 127`, so a value is off by up to `absmax / 254` (about 0.015 here).
/// Observed: at most 2.1e-2 against the f64 reference.
const Q8_KV_ABS_BUDGET: f32 = 4e-2;

#[test]
fn int8_rows_round_to_nearest_within_half_a_step() {
    let mut rng = SplitMix64::new(11);
    let mut x = vec![0f32; 96];
    rng.fill_normal(&mut x, 3.0);
    let absmax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    for isa in Isa::available() {
        let mut codes = Vec::new();
        let scale = i8::extend(isa, &mut codes, &x);
        assert!(
            (scale - absmax / 127.0).abs() <= 1e-6 * scale,
            "{isa:?}: {scale}"
        );
        assert!(codes.iter().any(|&c| c.unsigned_abs() == 127));
        for (&c, &v) in codes.iter().zip(&x) {
            let err = (c as f32 * scale - v).abs();
            assert!(err <= scale * (0.5 + 1e-5), "{isa:?}: {v} -> {c}");
        }
        // An all-zero row: codes 0 (no division by zero).
        let mut zeros = Vec::new();
        assert!(i8::extend(isa, &mut zeros, &[0.0; 16]).is_finite());
        assert!(zeros.iter().all(|&c| c == 0));
    }
}

#[test]
fn attention_with_an_int8_cache_stays_within_its_budget_on_every_isa() {
    let mut rng = SplitMix64::new(13);
    // Widths the shared x86 kernel takes (64, 96, 128) and ones it leaves to the generic body.
    for (heads, kv_heads, hd) in [(3, 3, 24), (2, 2, 96), (8, 2, 128), (12, 3, 64), (4, 2, 40)] {
        for (start, n) in [(0, 1), (0, 37), (9, 1), (40, 3)] {
            let d = Dims {
                heads,
                kv_heads,
                head_dim: hd,
                start,
            };
            let (q, k, v) = random_qkv(&mut rng, d, n);
            let want = reference(&q, &k, &v, d);
            let (k8, ks) = split_keys_scaled::<i8>(&k, kv_heads, hd);
            let (v8, vs) = split_scaled::<i8>(&v, kv_heads, hd);
            let mut generic = vec![0f32; q.len()];
            attention_scaled(Isa::Generic, &q, &k8, &v8, (&ks, &vs), &mut generic, d);
            for isa in Isa::available() {
                let mut got = vec![0f32; q.len()];
                attention_scaled(isa, &q, &k8, &v8, (&ks, &vs), &mut got, d);
                let what = format!("{isa:?} heads {heads}/{kv_heads} hd {hd} start {start} n {n}");
                let err = max_abs_diff(&got, &want);
                assert!(err <= Q8_KV_ABS_BUDGET, "{what}: {err} from the reference");
                // On the same int8 cache, instruction sets differ only in summation order.
                let err = max_abs_diff(&got, &generic);
                assert!(
                    err <= ATTENTION_ABS_BUDGET,
                    "{what}: {err} from the generic body"
                );
            }
        }
    }
}

/// One cache state: every head's keys, values and (scaled types) row scales.
type Cache<T> = (Vec<Vec<T>>, Vec<Vec<T>>, Vec<Vec<f32>>, Vec<Vec<f32>>);

/// Appends `kv` (each `[n, kv_heads · hd]`) and attends `q`, by [`append_and_attend`] on
/// `threads` threads (`fast`), or by the serial appends and [`attention_scaled`].
fn step<T: KvElem>(
    isa: Isa,
    c: &mut Cache<T>,
    kv: (&[f32], &[f32]),
    q: &[f32],
    d: Dims,
    fast: bool,
) -> Vec<f32> {
    let mut out = vec![0f32; q.len()];
    let (k, v, ks, vs) = c;
    if fast {
        append_and_attend(isa, (k, v), (ks, vs), kv, q, &mut out, d);
    } else {
        append_keys(isa, k, ks, kv.0, d.head_dim, d.start);
        append(isa, v, vs, kv.1, d.head_dim);
        attention_scaled(isa, q, k, v, (ks, vs), &mut out, d);
    }
    out
}

/// Fresh heads of one element type, with capacity reserved as the cache does.
fn empty<T: KvElem>(kv_heads: usize, tokens: usize, hd: usize) -> Cache<T> {
    let heads = || vec![Vec::with_capacity(tokens.next_multiple_of(KEY_BLOCK) * hd); kv_heads];
    let scales = || vec![Vec::new(); if T::SCALED { kv_heads } else { 0 }];
    (heads(), heads(), scales(), scales())
}

fn appends_in_the_tasks_equal_the_serial_appends<T: KvElem + PartialEq + std::fmt::Debug>() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut rng = SplitMix64::new(11);
    // Without GQA and with groups of four (2B4T); batches of one (decode), of several tokens
    // within one task, and of more tokens than a task takes (the appends in a region of their own,
    // one task per head and kind).
    for (heads, kv_heads, hd) in [(4, 4, 64), (8, 2, 96), (3, 1, 40)] {
        for isa in Isa::available() {
            let group = heads / kv_heads;
            let mut fast = empty::<T>(kv_heads, 64, hd);
            let mut slow = fast.clone();
            let mut start = 0;
            for n in [5, 1, 1, 12, 1, 20 / group + 1, 1] {
                let d = Dims {
                    heads,
                    kv_heads,
                    head_dim: hd,
                    start,
                };
                let (q, k, v) = random_qkv(&mut rng, Dims { start: 0, ..d }, n);
                let got = pool.install(|| step(isa, &mut fast, (&k, &v), &q, d, true));
                let want = step(isa, &mut slow, (&k, &v), &q, d, false);
                let at = format!("{isa:?} heads {heads}/{kv_heads} hd {hd} start {start} n {n}");
                assert_eq!(fast, slow, "cache, {at}");
                assert_eq!(
                    got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "outputs, {at}"
                );
                start += n;
            }
        }
    }
}

#[test]
fn appends_in_the_attention_tasks_equal_the_serial_appends() {
    appends_in_the_tasks_equal_the_serial_appends::<f32>();
    appends_in_the_tasks_equal_the_serial_appends::<f16>();
    appends_in_the_tasks_equal_the_serial_appends::<i8>();
}

/// A step's KV read counts each head's last key block whole (the attention reads it so), and
/// nothing more once the cached tokens fill their blocks.
#[test]
fn kv_read_bytes_count_the_last_key_block_whole() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama-f32");
    let cfg = tern_pack::spec::HfConfig::load(&dir.join("config.json")).unwrap();
    let spec = tern_pack::spec::ModelSpec::from_config(&cfg).unwrap();
    let heads = spec.num_layers * spec.num_kv_heads;
    for (dtype, elem) in [(KvDtype::F32, 4), (KvDtype::F16, 2), (KvDtype::Q8, 1)] {
        for blocks in 1..4 {
            let full = blocks * KEY_BLOCK;
            let read = KvCache::read_bytes_for(&spec, full, dtype);
            assert_eq!(
                read,
                KvCache::bytes_for(&spec, full, dtype),
                "{}",
                dtype.name()
            );
            for short in 1..KEY_BLOCK {
                let t = full - short;
                let padding = heads * short * spec.head_dim * elem;
                let want = KvCache::bytes_for(&spec, t, dtype) + padding;
                assert_eq!(
                    KvCache::read_bytes_for(&spec, t, dtype),
                    want,
                    "{}",
                    dtype.name()
                );
            }
        }
    }
}
