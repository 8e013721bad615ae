//! `tern infer` and `tern bench` end to end on the fixtures: the greedy tokens of
//! `transformers`, streamed text, and clear errors (non-zero exit, no panic) on bad prompts and
//! bad checkpoints.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{fixture, s, tern};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Packs the HF BitNet fixture at `bits` into `dir`.
fn packed(dir: &Path, bits: &str) -> PathBuf {
    packed_fixture("bitnet-packed", dir, bits)
}

/// Packs fixture `name` at `bits` into `dir`.
fn packed_fixture(name: &str, dir: &Path, bits: &str) -> PathBuf {
    let out = dir.join(format!("{name}-{bits}"));
    let o = tern(&["pack", s(&fixture(name)), "--out", s(&out), "--bits", bits]);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

/// The fixture's 32 greedy tokens (after its 8-token prompt), from expected.safetensors.
fn expected_greedy() -> Vec<u32> {
    let f = tern_pack::safetensors::SafetensorsFile::open(
        &fixture("bitnet-packed").join("expected.safetensors"),
    )
    .unwrap();
    let bytes = f.read(f.header.get("greedy").unwrap()).unwrap();
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .skip(8)
        .collect()
}

#[test]
fn infer_prints_the_greedy_tokens_of_transformers_at_both_widths() {
    let dir = tempfile::tempdir().unwrap();
    // The fixture prompt: the first 8 tokens of this sentence.
    let tok =
        tokenizers::Tokenizer::from_file(fixture("bitnet-packed").join("tokenizer.json")).unwrap();
    let ids = tok
        .encode("The quick brown fox jumps over the lazy dog.", true)
        .unwrap()
        .get_ids()[..8]
        .to_vec();
    let prompt = tok.decode(&ids, false).unwrap();
    for bits in ["2", "1.6"] {
        let m = packed(dir.path(), bits);
        let o = tern(&[
            "infer",
            "--model",
            s(&m),
            "--prompt",
            &prompt,
            "-n",
            "32",
            "--ignore-eos",
            "--ids",
            "--kv",
            "f32",
            "--threads",
            "2",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let got: Vec<u32> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(got, expected_greedy(), "{bits} bits");

        // Text mode streams the same tokens as text.
        let o = tern(&[
            "infer",
            "--model",
            s(&m),
            "--prompt",
            &prompt,
            "-n",
            "32",
            "--ignore-eos",
            "--stats",
            "--kv",
            "f32",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = String::from_utf8(o.stdout.clone()).unwrap();
        assert_eq!(
            text.trim_end_matches('\n'),
            tok.decode(&expected_greedy(), true).unwrap()
        );
        assert!(stderr(&o).contains("decode"), "{}", stderr(&o));
    }
}

#[test]
fn prompt_from_stdin_and_sampling_with_a_seed_repeat() {
    let dir = tempfile::tempdir().unwrap();
    let m = packed(dir.path(), "2");
    let run = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args([
                "infer",
                "--model",
                s(&m),
                "-n",
                "12",
                "--temperature",
                "0.8",
                "--top-k",
                "40",
                "--top-p",
                "0.95",
                "--repetition-penalty",
                "1.1",
                "--seed",
                "7",
                "--ids",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"She sells sea shells")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let (a, b) = (run(), run());
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(a.stdout, b.stdout);
    assert!(!a.stdout.is_empty());
}

#[test]
fn bad_prompts_and_checkpoints_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let m = packed(dir.path(), "2");
    let check = |o: Output, needle: &str| {
        assert!(!o.status.success());
        let e = stderr(&o);
        assert!(e.contains(needle), "expected `{needle}` in: {e}");
        assert!(!e.contains("panicked"), "{e}");
    };
    check(tern(&["infer", "--model", s(&m), "--prompt", ""]), "empty");

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, b"caf\xc3").unwrap();
    check(
        tern(&["infer", "--model", s(&m), "--prompt-file", s(&bad)]),
        "not valid UTF-8",
    );

    // The fixture's context is 128 tokens.
    let long = "the rain in spain ".repeat(200);
    check(
        tern(&["infer", "--model", s(&m), "--prompt", &long]),
        "context",
    );

    check(
        tern(&["infer", "--model", s(&m), "--prompt", "hi", "--top-p", "0"]),
        "--top-p",
    );

    // A truncated weights file.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(m.join(f), broken.join(f)).unwrap();
    }
    let bytes = std::fs::read(m.join("model.safetensors")).unwrap();
    std::fs::write(broken.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    check(
        tern(&["infer", "--model", s(&broken), "--prompt", "hi"]),
        "model.safetensors",
    );

    // No tokenizer.
    std::fs::write(broken.join("model.safetensors"), &bytes).unwrap();
    std::fs::remove_file(broken.join("tokenizer.json")).unwrap();
    check(
        tern(&["infer", "--model", s(&broken), "--prompt", "hi"]),
        "tokenizer.json",
    );
}

#[test]
fn bench_json_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let m = packed(dir.path(), "1.6");
    let o = tern(&[
        "bench",
        "--model",
        s(&m),
        "-p",
        "16",
        "-n",
        "8",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in [
        "prefill_tok_s",
        "decode_tok_s",
        "ttft_ms",
        "peak_rss_bytes",
        "weight_bytes_per_token",
        "measured_bandwidth_gb_s",
        "roofline_fraction",
    ] {
        assert!(
            j[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {}",
            j[key]
        );
    }
    assert_eq!(j["format"], "ternary-1.6bit");
    // 14 ternary matrices at 1.6 bits plus the tied f16... bf16 head of 320 x 64.
    assert!(j["weight_bytes_per_token"].as_u64().unwrap() > 320 * 64 * 2);
    // The 7 decode steps attend to 17..=23 tokens (20 on average), reading 20 value rows and
    // the two 16-token key blocks whole (32 keys) per head; the cache ends with 23 of each.
    let kv_read = j["kv_bytes_per_token"].as_u64().unwrap();
    assert_eq!(
        kv_read * 46,
        j["kv_cache_bytes"].as_u64().unwrap() * (32 + 20)
    );
    let (all, weights) = (
        j["read_roofline_fraction"].as_f64(),
        j["roofline_fraction"].as_f64(),
    );
    assert!(all > weights, "{all:?} vs {weights:?}");
    // One thread: no hand-off between threads to time, before or after.
    for key in ["thread_round_trip_ns", "thread_round_trip_before_ns"] {
        assert!(j[key].is_null(), "{key}: {}", j[key]);
    }
}

#[test]
fn the_int8_kv_cache_is_served_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let m = packed(dir.path(), "2");
    let bench = |kv: &str| -> serde_json::Value {
        let args = ["bench", "--model", s(&m), "-p", "16", "-n", "8", "--json"];
        let o = tern(&[&args[..], &["--threads", "1", "--kv", kv]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (q8, f16) = (bench("q8"), bench("f16"));
    assert_eq!(
        (q8["kv"].as_str(), f16["kv"].as_str()),
        (Some("q8"), Some("f16"))
    );
    // A row of `head_dim` values: `head_dim` bytes and a 4-byte scale, against 2 · head_dim.
    let (b8, b16) = (
        q8["kv_cache_bytes"].as_u64().unwrap(),
        f16["kv_cache_bytes"].as_u64().unwrap(),
    );
    assert!(b8 > b16 / 2 && b8 < b16, "q8 {b8} vs f16 {b16} bytes");

    let o = tern(&[
        "infer",
        "--model",
        s(&m),
        "--prompt",
        "hi",
        "-n",
        "4",
        "--ignore-eos",
        "--ids",
        "--kv",
        "q8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 4);

    let o = tern(&["infer", "--model", s(&m), "--prompt", "hi", "--kv", "q4"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("use f16, f32 or q8"), "{}", stderr(&o));
}

/// `--activations int8` serves a float-activation (TriLM-style) checkpoint through the int8
/// kernels and says so; a float checkpoint (full precision) and an unknown value are refused.
#[test]
fn int8_activations_are_served_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let m = packed_fixture("llama-f32", dir.path(), "2");
    let bench = |model: &Path, act: &str| -> Output {
        let args = ["bench", "--model", s(model), "-p", "8", "-n", "4", "--json"];
        tern(&[&args[..], &["--threads", "1", "--activations", act]].concat())
    };
    let json = |o: Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (int8, native) = (json(bench(&m, "int8")), json(bench(&m, "native")));
    assert_eq!(
        (int8["activations"].as_str(), native["activations"].as_str()),
        (Some("int8"), Some("float"))
    );
    // The int8 peak fraction is reported for int8 activations only.
    assert!(int8["prefill_int8_peak_fraction"].as_f64().unwrap() > 0.0);
    assert!(native["prefill_int8_peak_fraction"].is_null());

    let o = bench(&fixture("llama-f32"), "int8");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("int8 activations are for ternary (packed) checkpoints"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    let o = bench(&m, "int4");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("use native or int8"), "{}", stderr(&o));
}

/// `--prefetch` fixes the decode's stream hint or leaves it to the tuner, and the report says
/// which; the greedy tokens never depend on it.
#[test]
fn prefetch_hints_are_chosen_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let m = packed(dir.path(), "2");
    for (pf, mode) in [("nta", "nta"), ("l2", "l2"), ("auto", "auto")] {
        let args = ["bench", "--model", s(&m), "-p", "8", "-n", "4", "--json"];
        let o = tern(&[&args[..], &["--threads", "1", "--prefetch", pf]].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["prefetch"].as_str(), Some(mode));
        let hint = j["prefetch_hint"].as_str().unwrap();
        let switches = j["prefetch_switches"].as_u64().unwrap();
        if pf == "auto" {
            assert!(["nta", "l2"].contains(&hint), "{hint}");
        } else {
            assert_eq!((hint, switches), (pf, 0));
        }
    }
    let infer = ["infer", "--model", s(&m), "--prompt", "hi"];
    let ids = |pf: &str| {
        let o = tern(
            &[
                &infer[..],
                &["-n", "12", "--ignore-eos", "--ids", "--prefetch", pf],
            ]
            .concat(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        o.stdout
    };
    let nta = ids("nta");
    assert_eq!(nta.iter().filter(|&&b| b == b'\n').count(), 12);
    assert_eq!(ids("l2"), nta);
    assert_eq!(ids("auto"), nta);
    let o = tern(&[&infer[..], &["--prefetch", "t0"]].concat());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("use auto, nta or l2"), "{}", stderr(&o));
}

#[test]
fn bench_of_a_config_compares_with_f32() {
    let o = tern(&[
        "bench",
        "--config",
        s(&fixture("llama-f32")),
        "--bits",
        "2",
        "-p",
        "8",
        "-n",
        "4",
        "--threads",
        "1",
        "--json",
        "--compare-f32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["f32"]["format"], "f32");
    assert!(j["decode_speedup_vs_f32"].as_f64().unwrap() > 0.0);
    assert!(j["memory_ratio_f32_over_ours"].as_f64().unwrap() > 0.0);
}

#[cfg(not(feature = "wgpu"))]
#[test]
fn gpu_device_without_the_gpu_build_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let m = packed(dir.path(), "2");
    let o = tern(&[
        "infer",
        "--model",
        s(&m),
        "--prompt",
        "hi",
        "--device",
        "gpu",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--features wgpu"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}
