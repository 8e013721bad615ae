//! The float work between the matrix products (norms, residuals, the gated activation, RoPE),
//! written once as plain Rust and compiled for each instruction set.
//!
//! The crate is built for the target's baseline (SSE2 on x86-64), so the compiler vectorized
//! these loops four floats wide. Each op here is also compiled inside a function that enables
//! AVX-512 or AVX2 and picked by the model's [`Isa`] at run time. No op fuses a multiply and an
//! add (Rust never contracts them) and each sums in a fixed order, so every version gives the
//! same bits (tested below, and by the decode's lockstep-against-regions test).
//!
//! Measured on Zen 4 in one process choosing each decode step's variant at random (`tern bench
//! --model <700M, 2 bits> -p 128 -n 256`): against the SSE2 build, 0.3–1.0 % less time per step
//! at one thread (four runs); at two, −0.1 to +0.8 % (three runs, placed near), within that
//! placement's noise. A scratch timer put the gate and sub-norm before the down projection at
//! 1.8 µs against 2.6.

use tern_pack::spec::Activation;

use crate::kernels::Isa;

/// Defines `fn name(isa: Isa, args..)` running `body` compiled for `isa`: the body is inlined
/// into one function per instruction set, each with its target features enabled.
macro_rules! per_isa {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$doc])*
        $vis fn $name(isa: Isa, $($arg: $ty),*) {
            #[inline(always)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    body($($arg),*)
                }
                match isa {
                    // SAFETY: `isa` is one the CPU runs (`Isa::available`).
                    Isa::Avx512 | Isa::Avx512Vnni => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Generic => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = isa;
            body($($arg),*)
        }
    };
}

per_isa! {
    /// `out = x / rms(x) · gain` per token (`[n, d]`), in f32 like transformers' RMSNorm.
    pub(super) fn rms_norm(x: &[f32], gain: &[f32], eps: f32, out: &mut [f32]) {
        let d = gain.len();
        for (xi, oi) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            let inv = rms_inverse(xi, eps);
            for ((o, v), g) in oi.iter_mut().zip(xi).zip(gain) {
                *o = g * (v * inv);
            }
        }
    }
}

per_isa! {
    /// [`rms_norm`] of `x` into itself.
    pub(super) fn rms_norm_in_place(x: &mut [f32], gain: &[f32], eps: f32) {
        let d = gain.len();
        for xi in x.chunks_exact_mut(d) {
            let inv = rms_inverse(xi, eps);
            for (v, g) in xi.iter_mut().zip(gain) {
                *v = g * (*v * inv);
            }
        }
    }
}

/// `1 / sqrt(mean(x²) + eps)`. The squares are summed in sixteen independent lanes, so the
/// sum vectorizes (a single running sum is a chain of dependent adds: one per element, about
/// 1.5 % of a 700M decode step).
#[inline(always)]
fn rms_inverse(x: &[f32], eps: f32) -> f32 {
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let sum = acc.iter().sum::<f32>() + tail.iter().map(|v| v * v).sum::<f32>();
    1.0 / (sum / x.len() as f32 + eps).sqrt()
}

per_isa! {
    /// The residual: `x += y`, element by element (`y` at least as long).
    pub(super) fn add_to(x: &mut [f32], y: &[f32]) {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    }
}

per_isa! {
    /// The gated activation `g = act(g) · u`, element by element (`u` at least as long).
    pub(super) fn gate(act: Activation, g: &mut [f32], u: &[f32]) {
        match act {
            // `a · σ(a)`, σ from `z = e^-|a|` (never overflows): `1 / (1 + z)` for `a >= 0`,
            // `z / (1 + z)` below. A loop that vectorizes, where `f32::exp` was a call per
            // element (5 % of a TriLM-style 700M decode step at one thread).
            Activation::Silu => g.iter_mut().zip(u).for_each(|(a, b)| {
                let z = crate::attention::exp_le0_select(-a.abs());
                let s = if *a >= 0.0 { 1.0 } else { z } / (1.0 + z);
                *a = *a * s * b;
            }),
            Activation::Relu2 => g.iter_mut().zip(u).for_each(|(a, b)| {
                // `max(a, 0)`, NaN included, as a select that vectorizes (`f32::max` does not).
                let r = if *a > 0.0 { *a } else { 0.0 };
                *a = r * r * b;
            }),
        }
    }
}

per_isa! {
    /// Rotates every head of `v` (`[heads · head_dim]`) by `(cos, sin)` (rotate-half layout).
    pub(super) fn rope(v: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
        let half = hd / 2;
        for head in v.chunks_exact_mut(hd) {
            for i in 0..half {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * cos[i] - b * sin[i];
                head[i + half] = b * cos[i] + a * sin[i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic floats of both signs, some large, some tiny.
    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                let z = (i ^ seed).wrapping_mul(2_654_435_761).rotate_left(13);
                (z as i32 as f32) / (1u32 << 28) as f32 * if i % 7 == 0 { 9.0 } else { 1.0 }
            })
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// SiLU against the formula transformers computes, `x / (1 + e^-x)` with the library's
    /// `exp`: within 4 ulp (absolute 1e-35 where `e^x` is flushed to zero below -87), and the
    /// infinities and NaN as the formula gives them.
    #[test]
    fn silu_follows_the_library_formula() {
        let silu = |x: f32| {
            let mut g = [x];
            gate(Isa::Generic, Activation::Silu, &mut g, &[1.0]);
            g[0]
        };
        let mut x = -100f32;
        while x < 100.0 {
            let (got, want) = (silu(x), x / (1.0 + (-x).exp()));
            let tol = 4.0 * f32::EPSILON * want.abs() + 1e-35;
            assert!((got - want).abs() <= tol, "silu({x}) = {got}, want {want}");
            x += 0.001_37;
        }
        assert_eq!(silu(f32::INFINITY), f32::INFINITY);
        assert!(silu(f32::NEG_INFINITY).is_nan() && silu(f32::NAN).is_nan());
        assert_eq!(silu(0.0), 0.0);
    }

    /// Every op compiled for every instruction set this CPU runs gives the generic build's
    /// bits, on rows of odd and even lengths, one token and several.
    #[test]
    fn every_isa_gives_the_generic_bits() {
        for d in [1, 15, 16, 17, 96, 1539] {
            for n in [1, 3] {
                let (x, gain, u) = (data(n * d, 1), data(d, 2), data(n * d, 3));
                let (cos, sin) = (data(d, 4), data(d, 5));
                let run = |isa: Isa| {
                    let mut normed = vec![0f32; n * d];
                    rms_norm(isa, &x, &gain, 1e-5, &mut normed);
                    let mut in_place = x.clone();
                    rms_norm_in_place(isa, &mut in_place, &gain, 1e-6);
                    let mut sum = x.clone();
                    add_to(isa, &mut sum, &u);
                    let gated = [Activation::Silu, Activation::Relu2].map(|act| {
                        let mut g = x.clone();
                        g[0] = f32::NAN;
                        gate(isa, act, &mut g, &u);
                        bits(&g)
                    });
                    let mut rotated = x.clone();
                    if d % 2 == 0 {
                        rope(isa, &mut rotated, d, &cos[..d / 2], &sin[..d / 2]);
                    }
                    (
                        bits(&normed),
                        bits(&in_place),
                        bits(&sum),
                        gated,
                        bits(&rotated),
                    )
                };
                let want = run(Isa::Generic);
                for isa in Isa::available() {
                    assert!(run(isa) == want, "{} differs at d {d}, n {n}", isa.name());
                }
            }
        }
    }
}
