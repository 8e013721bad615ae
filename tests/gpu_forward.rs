//! The whole forward pass on the GPU (`tern_infer::gpu::GpuSession`) against the CPU engine
//! (`tern_infer::Model`) on the tiny fixtures of `scripts/make_fixtures.py`, packed at 2 and
//! 1.6 bits: BitNet (int8 activations, SubLN, relu², tied head), TriLM-style Llama (float
//! activations, row shards; f32 and f16 sharded checkpoints) and Qwen2 (q/k/v biases).
//!
//! * every prompt logit of one batched prefill, of a prefill in several passes, and of a
//!   prefill followed by single-token steps (the KV cache path), within a named budget of the
//!   CPU's;
//! * 32 greedy tokens, chosen on the device by argmax, identical to the CPU's.
//!
//! * `tern infer --device gpu` prints the CPU's greedy tokens, and `tern bench --device gpu
//!   --json` reports the GPU fields.
//!
//! Needs a GPU adapter: on Linux any Vulkan driver (lavapipe from `mesa-vulkan-drivers` is a
//! software one). Lives in the root package behind the `wgpu` feature, like `gpu_kernels.rs`:
//! `cargo test --release --features wgpu --test gpu_forward`.
#![cfg(feature = "wgpu")]

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::{fixture, s, tern};

use tern_infer::generate::{GenerateOptions, generate};
use tern_infer::gpu::{GpuContext, GpuError, GpuModel, GpuSession, Output, Want};
use tern_infer::sample::SamplingParams;
use tern_infer::{ActivationFormat, HeadFormat, KvCache, KvDtype, LoadOptions, Logits, Model};
use tern_pack::Codec;
use tern_pack::checkpoint::PackedCheckpoint;
use tern_pack::convert::{PackOptions, pack_checkpoint};
use tern_pack::init::SplitMix64;

/// Largest |GPU − CPU| of any logit, relative to the largest |logit| of the CPU, with float
/// activations. The two differ by summation order and WGSL's 2.5-ulp division, exp and sqrt.
/// Observed on lavapipe: 1.2e-7 to 2.3e-7 on every fixture and packing.
const GPU_CPU_FLOAT_REL_BUDGET: f32 = 2e-6;

/// Same, with BitNet's int8 activations: a last-ulp difference upstream may move one activation
/// code by one step (1/127 of the token's absmax), which moves logits by up to ~1e-3 of their
/// scale on these tiny models. Observed on lavapipe: 1.5e-7 (no code moved).
const GPU_CPU_INT8_REL_BUDGET: f32 = 2e-3;

const GREEDY_STEPS: usize = 32;
const PROMPT_TOKENS: usize = 11;

fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| GpuContext::new().expect("a GPU adapter (install mesa-vulkan-drivers)"))
}

fn pack(name: &str, codec: Codec, dir: &Path) -> PackedCheckpoint {
    let out = dir.join(format!("{name}-{}", codec.bits_label()));
    pack_checkpoint(&fixture(name), &out, &PackOptions::new(codec), &mut |_| {}).unwrap();
    PackedCheckpoint::open(&out).unwrap()
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn logits(out: Output) -> Vec<f32> {
    match out {
        Output::Logits(l) => l,
        Output::Token(t) => panic!("asked for logits, got token {t}"),
    }
}

fn token(out: Output) -> u32 {
    match out {
        Output::Token(t) => t,
        Output::Logits(_) => panic!("asked for a token, got logits"),
    }
}

fn check(name: &str) {
    check_with(name, ActivationFormat::Native);
}

fn check_with(name: &str, activations: ActivationFormat) {
    let tmp = tempfile::tempdir().unwrap();
    for codec in Codec::ALL {
        let ckpt = pack(name, codec, tmp.path());
        let opts = LoadOptions {
            activations,
            ..LoadOptions::default()
        };
        let model = Model::from_packed(&ckpt, opts).unwrap();
        let int8 = model.layers[0].q.w.wants_i8();
        let budget = if int8 {
            GPU_CPU_INT8_REL_BUDGET
        } else {
            GPU_CPU_FLOAT_REL_BUDGET
        };
        let what = format!("{name} {} bits", codec.bits_label());
        let gpu = GpuModel::upload(ctx(), &model).unwrap();
        let vocab = model.spec.vocab_size;
        let mut rng = SplitMix64::new(7);
        let prompt: Vec<u32> = (0..PROMPT_TOKENS)
            .map(|_| (rng.next_u64() % vocab as u64) as u32)
            .collect();

        // One batched prefill, every token's logits.
        let mut cache = KvCache::new(&model.spec, prompt.len(), KvDtype::F32);
        let want = model.forward(&prompt, &mut cache, Logits::All).unwrap();
        let mut s = GpuSession::new(&gpu, prompt.len(), true).unwrap();
        let got = logits(s.forward(&prompt, Want::Logits(Logits::All)).unwrap());
        let d = max_rel_diff(&got, &want);
        eprintln!("{what}: prefill logits within {d:.2e}");
        assert!(d <= budget, "{what}: prefill logits differ by {d}");

        // A short prefill, then one token at a time through the KV cache.
        let mut s = GpuSession::new(&gpu, prompt.len(), false).unwrap();
        let first = 4;
        let mut rows = logits(
            s.forward(&prompt[..first], Want::Logits(Logits::Last))
                .unwrap(),
        );
        for &t in &prompt[first..] {
            rows.extend(logits(s.forward(&[t], Want::Logits(Logits::Last)).unwrap()));
        }
        let d = max_rel_diff(&rows, &want[(first - 1) * vocab..]);
        eprintln!("{what}: decode-step logits within {d:.2e}");
        assert!(d <= budget, "{what}: decode-step logits differ by {d}");

        // A prompt longer than the session's batch runs in several passes.
        let mut s = GpuSession::with_max_batch(&gpu, prompt.len(), true, 4).unwrap();
        let got = logits(s.forward(&prompt, Want::Logits(Logits::All)).unwrap());
        let d = max_rel_diff(&got, &want);
        assert!(
            d <= budget,
            "{what}: prefill in passes of 4: logits differ by {d}"
        );
        let mut s = GpuSession::with_max_batch(&gpu, prompt.len(), false, 4).unwrap();
        let last = logits(s.forward(&prompt, Want::Logits(Logits::Last)).unwrap());
        let d = max_rel_diff(&last, &want[(prompt.len() - 1) * vocab..]);
        assert!(
            d <= budget,
            "{what}: last logits after passes of 4 differ by {d}"
        );

        // Greedy decoding: argmax on the device, against the CPU's generate.
        let opts = GenerateOptions {
            max_tokens: GREEDY_STEPS,
            sampling: SamplingParams::default(),
            stop_tokens: vec![],
            kv: KvDtype::F32,
        };
        let cpu = generate(&model, &prompt, &opts, &mut |_| Ok(()))
            .unwrap()
            .tokens;
        let mut s = GpuSession::new(&gpu, prompt.len() + GREEDY_STEPS, false).unwrap();
        let mut next = token(s.forward(&prompt, Want::Argmax).unwrap());
        let mut tokens = vec![next];
        while tokens.len() < GREEDY_STEPS {
            next = token(s.forward(&[next], Want::Argmax).unwrap());
            tokens.push(next);
        }
        assert_eq!(tokens, cpu, "{what}: greedy tokens");
    }
}

#[test]
fn bitnet_int8_activations_sub_norms_tied_head() {
    check("bitnet-bf16");
}

#[test]
fn trilm_llama_float_activations_row_shards() {
    check("llama-f32");
}

/// `--activations int8` on a float-activation model: the int8 kernels with two scale shards.
#[test]
fn trilm_llama_int8_activations_row_shards() {
    check_with("llama-f32", ActivationFormat::Int8);
}

#[test]
fn trilm_llama_f16_sharded() {
    check("llama-f16-sharded");
}

#[test]
fn qwen2_qkv_biases() {
    check("qwen2-f32");
}

#[test]
fn bad_requests_are_refused_with_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = pack("llama-f32", Codec::Bits2, tmp.path());
    let opts = LoadOptions::default();
    let model = Model::from_packed(&ckpt, opts).unwrap();
    let gpu = GpuModel::upload(ctx(), &model).unwrap();
    let mut s = GpuSession::new(&gpu, 4, false).unwrap();
    let err = s.forward(&[1, 2, 3, 4, 5], Want::Argmax).unwrap_err();
    assert!(err.to_string().contains("do not fit the context"), "{err}");
    let err = s
        .forward(&[model.spec.vocab_size as u32], Want::Argmax)
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
    let err = s.forward(&[1], Want::Logits(Logits::All)).unwrap_err();
    assert!(
        err.to_string().contains("last token's logits only"),
        "{err}"
    );
    assert!(s.is_empty(), "a refused call must not advance the cache");

    let opts = LoadOptions {
        head: HeadFormat::Q8,
        ..LoadOptions::default()
    };
    let q8 = Model::from_packed(&ckpt, opts).unwrap();
    match GpuModel::upload(ctx(), &q8) {
        Err(e @ GpuError::Unsupported { .. }) => {
            assert!(e.to_string().contains("lm_head"), "{e}")
        }
        other => panic!("the 8-bit head must be refused, got {other:?}"),
    }
}

/// Runs `tern ARGS`, asserting success, and returns stdout.
fn tern_ok(args: &[&str]) -> String {
    let o = tern(args);
    assert!(
        o.status.success(),
        "tern {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn infer_on_the_gpu_prints_the_cpu_greedy_tokens() {
    let dir = tempfile::tempdir().unwrap();
    for bits in ["2", "1.6"] {
        let m = dir.path().join(format!("m{bits}"));
        let src = fixture("bitnet-packed");
        tern_ok(&["pack", s(&src), "--out", s(&m), "--bits", bits]);
        let run = |device: &str| {
            tern_ok(&[
                "infer",
                "--model",
                s(&m),
                "--prompt",
                "The quick brown fox",
                "-n",
                "24",
                "--ignore-eos",
                "--ids",
                "--kv",
                "f32",
                "--device",
                device,
            ])
        };
        let (cpu, gpu) = (run("cpu"), run("gpu"));
        assert_eq!(gpu.lines().count(), 24, "{bits} bits: {gpu}");
        assert_eq!(gpu, cpu, "{bits} bits: GPU and CPU greedy tokens");
    }
}

#[test]
fn bench_on_the_gpu_reports_device_memory_and_bandwidth() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    tern_ok(&[
        "pack",
        s(&fixture("bitnet-packed")),
        "--out",
        s(&m),
        "--bits",
        "1.6",
    ]);
    let out = tern_ok(&[
        "bench",
        "--model",
        s(&m),
        "-p",
        "16",
        "-n",
        "8",
        "--device",
        "gpu",
        "--json",
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "prefill_tok_s",
        "decode_tok_s",
        "ttft_ms",
        "gpu_memory_bytes",
        "kv_cache_bytes",
        "weight_bytes_per_token",
        "effective_gb_s",
        "measured_bandwidth_gb_s",
        "roofline_fraction",
    ] {
        assert!(
            j[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {}",
            j[key]
        );
    }
    assert_ne!(j["device"], "cpu");
    assert!(j["gpu_memory_bytes"].as_u64() > j["weight_bytes_per_token"].as_u64());
}

/// Linux only: it hides the Vulkan drivers through the loader's environment variables.
#[cfg(target_os = "linux")]
#[test]
fn without_an_adapter_infer_says_what_it_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    tern_ok(&[
        "pack",
        s(&fixture("bitnet-packed")),
        "--out",
        s(&m),
        "--bits",
        "2",
    ]);
    // The Vulkan loader finds no driver: wgpu finds no adapter.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "infer",
            "--model",
            s(&m),
            "--prompt",
            "hi",
            "--device",
            "gpu",
        ])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no GPU adapter") && err.contains("Vulkan"),
        "{err}"
    );
    assert!(
        err.contains("mesa-vulkan-drivers") && !err.contains("panicked"),
        "{err}"
    );
}
