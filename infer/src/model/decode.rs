//! A decode step (one token) as one lockstep job ([`team::lockstep`]): every thread walks the
//! layers, computing the serial work between two parallel loops itself (the norms, the
//! residuals, the gate, the int8 quantizer) on its own copy of the hidden state, while the
//! loops' outputs (q/k/v, the attention, o, gate/up, down) are shared. The region-by-region
//! step ([`Model::layers_regions`]) is the reference, and the path when no lockstep job can
//! run.
//!
//! * Each attention task rotates its own head's queries and key (RoPE) before it appends and
//!   attends, so that the step has five loops per layer, as it had regions.
//! * Measured in one process alternating the two paths step by step (`tern bench -p 128 -n
//!   192 --threads 2`), time per step of the regions against this: 700M 2-bit 1.003 to 1.080 in
//!   ten runs, all slower (median 1.016; 1.003–1.080 in the six with the CPUs placed far
//!   apart, 1.007–1.039 in the four near); 700M 1.6-bit 0.991, 1.018; 2B4T 2-bit 0.967, 1.031,
//!   0.996, 1.012, whose longer regions leave less to save. The order of the two within a
//!   pair moved the ratio by about 2 %, and the runs alternated it.

use super::{Model, Proj, add_to, gate, rms_norm, rms_norm_in_place, rope};
use crate::attention::KvCache;
use crate::linear::{Input, RowKernel, token_loop};
use crate::team::{self, OutPtr};

/// Offsets of a step's shared outputs in one buffer.
struct Shared {
    q: usize,
    k: usize,
    v: usize,
    attn: usize,
    out: usize,
    gate: usize,
    up: usize,
    len: usize,
}

impl Shared {
    fn new(q_dim: usize, kv_dim: usize, hidden: usize, inter: usize) -> Shared {
        let sizes = [q_dim, kv_dim, kv_dim, q_dim, hidden, inter, inter];
        let mut at = [0; 8];
        for (i, s) in sizes.iter().enumerate() {
            at[i + 1] = at[i] + s;
        }
        Shared {
            q: at[0],
            k: at[1],
            v: at[2],
            attn: at[3],
            out: at[4],
            gate: at[5],
            up: at[6],
            len: at[7],
        }
    }
}

/// One loop of projections that read the same input `x` (one token): projection `i` writes its
/// rows at `buf + offsets[i]`, its bias added. `next`: what the loop after it reads.
///
/// # Safety
/// Each projection's rows at its offset lie inside `buf`'s buffer, which outlives the loop, and
/// no thread touches them during the loop but through this call.
unsafe fn project(
    lock: &team::Lock<'_>,
    isa: crate::kernels::Isa,
    (projs, offsets): (&[&Proj<'_>], &[usize]),
    x: &[f32],
    buf: OutPtr,
    next: &[&[u8]],
) {
    let i8 = projs.iter().any(|p| p.w.wants_i8());
    let input = Input::new(isa, x, 1, x.len(), i8);
    let kernels: Vec<RowKernel<'_>> = projs.iter().map(|p| p.w.token_rows(&input)).collect();
    let dst: Vec<(OutPtr, usize)> = projs
        .iter()
        .zip(offsets)
        .map(|(p, &at)| (OutPtr(buf.get().wrapping_add(at)), p.w.rows()))
        .collect();
    let bias = |i: usize, first: usize, o: &mut [f32]| projs[i].add_bias_rows(first, o);
    // SAFETY: the caller's promise.
    unsafe { token_loop(lock, &kernels, &dst, bias, next) };
}

impl Model<'_> {
    /// The final hidden state of `token` at position `cache.len()`, through every layer in one
    /// lockstep job, its keys and values appended to `cache` (and its length advanced); `None`,
    /// having done nothing, when no lockstep job can run (one thread, or the team busy with
    /// another caller's job).
    pub(super) fn layers_lockstep(&self, token: u32, cache: &mut KvCache) -> Option<Vec<f32>> {
        if rayon::current_num_threads() < 2 {
            return None;
        }
        let spec = &self.spec;
        let (h, hd, inter) = (spec.hidden_size, spec.head_dim, spec.intermediate_size);
        let (heads, kv_heads) = (spec.num_heads, spec.num_kv_heads);
        let (q_dim, group) = (heads * hd, heads / kv_heads);
        let (isa, eps) = (self.isa, spec.rms_norm_eps as f32);
        let (cos, sin) = self.rope_table(cache.len(), 1);
        let at = Shared::new(q_dim, kv_heads * hd, h, inter);
        let mut shared = vec![0f32; at.len];
        let buf = OutPtr(shared.as_mut_ptr());
        let mut hidden = vec![0f32; h];
        let result = OutPtr(hidden.as_mut_ptr());
        // What each loop's early threads prefetch: the weights of the loop after it.
        fn weights<'m>(p: &[&'m Proj<'_>]) -> Vec<&'m [u8]> {
            p.iter().flat_map(|p| p.w.weight_regions()).collect()
        }
        let primes: Vec<[Vec<&[u8]>; 4]> = (0..self.layers.len())
            .map(|l| {
                let layer = &self.layers[l];
                let after = match self.layers.get(l + 1) {
                    Some(n) => weights(&[&n.q, &n.k, &n.v]),
                    None => self.head().weight_regions(),
                };
                [
                    weights(&[&layer.o]),
                    weights(&[&layer.gate, &layer.up]),
                    weights(&[&layer.down]),
                    after,
                ]
            })
            .collect();
        let steps = cache.step(kv_heads, hd);
        let ran = team::lockstep(|lock| {
            // SAFETY (every `buf.slice` below): inside `shared` (`at.len` long, which outlives
            // the job); a loop's outputs are written by its tasks alone, each its own rows or
            // head, and read by every thread only after the loop's barrier, and rewritten
            // only in a later loop, whose barrier needs every thread to have read them.
            let read = |off: usize, len: usize| -> &[f32] { unsafe { buf.slice(off, len) } };
            let mut x = vec![0f32; h];
            self.embed.weights.read_f32(token as usize * h, &mut x);
            let (mut xn, mut wide) = (vec![0f32; h], vec![0f32; q_dim.max(inter)]);
            for (l, layer) in self.layers.iter().enumerate() {
                let [prime_o, prime_ffn, prime_down, prime_after] = &primes[l];
                if lock.me() == 0 {
                    // SAFETY: layer `l`'s appends come in its attention loop, after the q/k/v
                    // loop's barrier, which this thread has not reached.
                    unsafe { steps.prefetch_append(l) };
                }
                // q, k, v.
                rms_norm(isa, &x, &layer.input_norm, eps, &mut xn);
                let qkv = ([&layer.q, &layer.k, &layer.v], [at.q, at.k, at.v]);
                // SAFETY (each `project`): the outputs' rows are inside `shared`, as for `read`.
                unsafe { project(lock, isa, (&qkv.0, &qkv.1), &xn, buf, &[]) };
                // Attention: each KV head's task rotates its queries and key, appends, attends.
                lock.for_each(
                    kv_heads,
                    |g| {
                        let q = unsafe { buf.slice(at.q + g * group * hd, group * hd) };
                        let k = unsafe { buf.slice(at.k + g * hd, hd) };
                        rope(isa, q, hd, &cos, &sin);
                        rope(isa, k, hd, &cos, &sin);
                        let v = read(at.v + g * hd, hd);
                        let out = unsafe { buf.slice(at.attn + g * group * hd, group * hd) };
                        // SAFETY: task `g` alone reaches head `g` of layer `l`.
                        unsafe { steps.attend_head(isa, l, g, (k, v), q, out) };
                    },
                    prime_o,
                );
                let a = &mut wide[..q_dim];
                a.copy_from_slice(read(at.attn, q_dim));
                if let Some(g) = &layer.attn_sub_norm {
                    rms_norm_in_place(isa, a, g, eps);
                }
                unsafe { project(lock, isa, (&[&layer.o], &[at.out]), a, buf, prime_ffn) };
                // The residual, and the feed-forward's norm of it.
                add_to(isa, &mut x, read(at.out, h));
                rms_norm(isa, &x, &layer.post_norm, eps, &mut xn);
                // Feed-forward.
                let gu = ([&layer.gate, &layer.up], [at.gate, at.up]);
                unsafe { project(lock, isa, (&gu.0, &gu.1), &xn, buf, prime_down) };
                let g = &mut wide[..inter];
                g.copy_from_slice(read(at.gate, inter));
                gate(isa, spec.activation, g, read(at.up, inter));
                if let Some(gain) = &layer.ffn_sub_norm {
                    rms_norm_in_place(isa, g, gain, eps);
                }
                unsafe { project(lock, isa, (&[&layer.down], &[at.out]), g, buf, prime_after) };
                add_to(isa, &mut x, read(at.out, h));
            }
            if lock.me() == 0 {
                // SAFETY: `hidden` is `h` long, outlives the job, and only thread 0 writes it.
                unsafe { result.slice(0, h) }.copy_from_slice(&x);
            }
        });
        drop(steps);
        if !ran {
            return None;
        }
        cache.advance(1);
        Some(hidden)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use tern_pack::Codec;
    use tern_pack::checkpoint::{LatentCheckpoint, PackedCheckpoint};
    use tern_pack::convert::{PackOptions, pack_checkpoint};

    use crate::attention::{KvCache, KvDtype};
    use crate::kernels::Isa;
    use crate::load::LoadOptions;
    use crate::model::Model;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    fn pack(name: &str, codec: Codec, dir: &Path) -> PackedCheckpoint {
        let out = dir.join(format!("{name}-{}", codec.bits_label()));
        pack_checkpoint(&fixture(name), &out, &PackOptions::new(codec), &mut |_| {}).unwrap();
        PackedCheckpoint::open(&out).unwrap()
    }

    /// Each step's final hidden state through the lockstep job and region by region, from
    /// the same prompt, into two caches; the lockstep job retried while another test holds
    /// the team.
    fn both_paths(model: &Model<'_>, kv: KvDtype, threads: usize) -> (Vec<u32>, Vec<u32>) {
        const PROMPT: usize = 19;
        const STEPS: usize = 6;
        let vocab = model.spec.vocab_size as u32;
        let tokens: Vec<u32> = (0..(PROMPT + STEPS) as u32)
            .map(|i| (i * 37 + 5) % vocab)
            .collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let new = || KvCache::new(&model.spec, PROMPT + STEPS, kv);
            let (mut a, mut b) = (new(), new());
            model.layers_regions(&tokens[..PROMPT], &mut a);
            model.layers_regions(&tokens[..PROMPT], &mut b);
            let (mut xa, mut xb) = (Vec::new(), Vec::new());
            for &t in &tokens[PROMPT..] {
                let x = loop {
                    if let Some(x) = model.layers_lockstep(t, &mut a) {
                        break x;
                    }
                    std::thread::yield_now();
                };
                xa.extend(x.iter().map(|v| v.to_bits()));
                xb.extend(
                    model
                        .layers_regions(&[t], &mut b)
                        .iter()
                        .map(|v| v.to_bits()),
                );
            }
            assert_eq!((a.len(), b.len()), (PROMPT + STEPS, PROMPT + STEPS));
            (xa, xb)
        })
    }

    /// A decode step as one lockstep job against the same step region by region: the same
    /// kernels on the same rows, and the serial work the same operations on every thread, so
    /// the hidden states are equal bit for bit, step after step (each attending to the keys
    /// and values the job appended), on 2 and 3 threads, for every kernel set, KV element type
    /// and block layout: BitNet's SubLN and relu², TriLM's float activations with row shards,
    /// Qwen2's biases, the float baseline.
    #[test]
    fn lockstep_steps_equal_region_steps_bit_for_bit() {
        let tmp = tempfile::tempdir().unwrap();
        let packed = [
            ("bitnet-packed", Codec::Bits2),
            ("bitnet-packed", Codec::Bits1_6),
            ("qwen2-f32", Codec::Bits2),
            ("llama-f16-sharded", Codec::Bits1_6),
        ]
        .map(|(name, codec)| {
            (
                format!("{name} {}", codec.bits_label()),
                pack(name, codec, tmp.path()),
            )
        });
        let float = LatentCheckpoint::open(&fixture("llama-f32")).unwrap();
        let spec = float.spec().unwrap();
        for isa in Isa::available() {
            let opts = LoadOptions {
                isa,
                ..LoadOptions::default()
            };
            let mut models: Vec<(String, Model<'_>)> = packed
                .iter()
                .map(|(what, c)| (what.clone(), Model::from_packed(c, opts).unwrap()))
                .collect();
            let f = Model::from_float(&spec, &float, &float.dir, opts).unwrap();
            models.push(("llama-f32 float".into(), f));
            for (what, model) in &models {
                for kv in [KvDtype::F32, KvDtype::F16, KvDtype::Q8] {
                    for threads in [2, 3] {
                        let (a, b) = both_paths(model, kv, threads);
                        assert!(
                            a == b,
                            "{what}, {} kernels, {} KV, {threads} threads: hidden states differ",
                            isa.name(),
                            kv.name()
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod hint_tests {
    use std::path::Path;

    use tern_pack::Codec;
    use tern_pack::checkpoint::PackedCheckpoint;
    use tern_pack::convert::{PackOptions, pack_checkpoint};

    use crate::attention::{KvCache, KvDtype};
    use crate::kernels::{Isa, StreamHint};
    use crate::load::LoadOptions;
    use crate::model::{Logits, Model, Prefetch};

    /// A stream hint changes only how a decode step prefetches: every step's logits are the
    /// same bits under both (and under the tuner, which mixes them), for every kernel set, both
    /// widths, one thread and two.
    #[test]
    fn stream_hints_leave_every_logit_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/bitnet-packed");
        for codec in Codec::ALL {
            let out = tmp.path().join(codec.bits_label());
            pack_checkpoint(&fixture, &out, &PackOptions::new(codec), &mut |_| {}).unwrap();
            let ckpt = PackedCheckpoint::open(&out).unwrap();
            for isa in Isa::available() {
                for threads in [1, 2] {
                    let run = |prefetch: Prefetch| -> Vec<u32> {
                        let opts = LoadOptions {
                            isa,
                            prefetch,
                            ..LoadOptions::default()
                        };
                        let model = Model::from_packed(&ckpt, opts).unwrap();
                        let pool = rayon::ThreadPoolBuilder::new()
                            .num_threads(threads)
                            .build()
                            .unwrap();
                        pool.install(|| {
                            let mut cache = KvCache::new(&model.spec, 40, KvDtype::F16);
                            let prompt: Vec<u32> = (0..9).map(|i| i * 31 + 2).collect();
                            let mut bits = Vec::new();
                            let mut next = prompt.clone();
                            for step in 0..24u32 {
                                let l = model.forward(&next, &mut cache, Logits::Last).unwrap();
                                bits.extend(l.iter().map(|v| v.to_bits()));
                                next = vec![(step * 7 + 3) % model.spec.vocab_size as u32];
                            }
                            bits
                        })
                    };
                    let nta = run(Prefetch::Fixed(StreamHint::NonTemporal));
                    let what = format!("{} {} {threads}T", codec.bits_label(), isa.name());
                    assert!(run(Prefetch::Fixed(StreamHint::L2)) == nta, "{what}: l2");
                    assert!(run(Prefetch::Auto) == nta, "{what}: auto");
                }
            }
        }
    }
}
