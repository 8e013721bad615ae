//! `tern data synth`, `tern train` and the path from a trained model to `tern infer`:
//! the exported and packed model computes what the Burn model computes, resume after SIGKILL
//! reproduces an uninterrupted run, and bad input is refused before anything is written.

mod common;
mod served;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, s, tern};
use tern_train::metrics::{Record, read};

/// Resumed losses against the uninterrupted run (the bound).
const RESUME_LOSS_BUDGET: f64 = 1e-5;

fn synth(dir: &Path, bytes: &str) -> PathBuf {
    let corpus = dir.join("corpus.txt");
    let out = tern(&["data", "synth", "--out", s(&corpus), "--bytes", bytes]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    corpus
}

fn train_args<'a>(corpus: &'a Path, run: &'a Path, steps: &'a str) -> Vec<String> {
    [
        "train",
        "--config",
        s(&fixture("train/tiny-train.toml")),
        "--corpus",
        s(corpus),
        "--out",
        s(run),
        "--steps",
        steps,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

fn run_ok(args: &[String]) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tern(&a);
    assert!(
        out.status.success(),
        "tern {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Trains `model_config` briefly, packs it at both widths and checks logits and 16 greedy
/// tokens of `tern_infer` against the Burn model rebuilt from the exported checkpoint.
fn check_train_infer(model_config: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = synth(tmp.path(), "200K");
    let run = tmp.path().join("run");
    let mut args = train_args(&corpus, &run, "30");
    args.extend(
        [
            "--set",
            &format!("model.config=\"{}\"", s(&fixture(model_config))),
            "--pack",
            "2",
            "--pack",
            "1.6",
        ]
        .map(String::from),
    );
    run_ok(&args);

    let tok = tokenizers::Tokenizer::from_file(run.join("tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(&corpus).unwrap();
    let prompt: Vec<u32> = tok.encode(&text[..80], false).unwrap().get_ids()[..12].to_vec();
    served::check_served(&run, &["2", "1.6"], &prompt, model_config);
}

#[test]
fn bitnet_trained_packed_and_served_agree_with_burn() {
    check_train_infer("train/tiny-model.toml");
}

#[test]
fn trilm_llama_trained_packed_and_served_agree_with_burn() {
    check_train_infer("train/tiny-llama.toml");
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    read(&run.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Train { step, loss, .. } => Some((step, loss)),
            _ => None,
        })
        .collect()
}

#[test]
fn resume_after_sigkill_reproduces_the_uninterrupted_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = synth(tmp.path(), "200K");
    let whole = tmp.path().join("whole");
    run_ok(&train_args(&corpus, &whole, "40"));
    let reference = losses(&whole);
    assert_eq!(reference.len(), 40);

    let killed = tmp.path().join("killed");
    let args = train_args(&corpus, &killed, "40");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let latest = killed.join("checkpoints/latest");
    let start = Instant::now();
    while !latest.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before a kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at: u64 = std::fs::read_to_string(&latest).unwrap().trim()["step-".len()..]
        .parse()
        .unwrap();
    assert!(
        at <= 20,
        "killed after step {at}: too late to compare 20 steps"
    );

    let mut resume = args.clone();
    resume.push("--resume".into());
    run_ok(&resume);
    let resumed = losses(&killed);
    let after: Vec<_> = resumed.iter().filter(|(s, _)| *s > at).take(20).collect();
    assert_eq!(after.len(), 20);
    for (step, loss) in after {
        let want = reference[*step as usize - 1];
        assert_eq!(want.0, *step);
        assert!(
            (loss - want.1).abs() <= RESUME_LOSS_BUDGET,
            "step {step}: resumed loss {loss} vs uninterrupted {}",
            want.1
        );
    }
}

/// Runs `tern train` expecting failure; checks the message and that nothing was written.
fn refused(args: &[String], needle: &str, run: &Path) {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tern(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{needle}: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!run.exists(), "{needle}: {} was written", run.display());
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");

    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "  \n\n").unwrap();
    refused(&train_args(&empty, &run, "5"), "empty", &run);

    let binary = tmp.path().join("binary.txt");
    std::fs::write(&binary, b"good text \xff\xfe more").unwrap();
    refused(&train_args(&binary, &run, "5"), "binary.txt", &run);

    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "the cat sleeps.\n").unwrap();
    refused(&train_args(&short, &run, "5"), "tokens", &run);

    let corpus = synth(tmp.path(), "100K");
    let mut bad_lr = train_args(&corpus, &run, "5");
    bad_lr.extend(["--set".into(), "train.lr=-1".into()]);
    refused(&bad_lr, "train.lr", &run);

    // A model with 300 token ids cannot take a 320-token tokenizer.
    let small = tmp.path().join("small-vocab.toml");
    let shape = std::fs::read_to_string(fixture("train/tiny-model.toml")).unwrap();
    std::fs::write(
        &small,
        shape.replace("vocab_size = 512", "vocab_size = 300"),
    )
    .unwrap();
    let tok = fixture("bitnet-bf16/tokenizer.json");
    let mut big = train_args(&corpus, &run, "5");
    big.extend([
        "--tokenizer".into(),
        s(&tok).into(),
        "--set".into(),
        format!("model.config=\"{}\"", s(&small)),
    ]);
    refused(&big, "vocab_size", &run);
}

#[test]
fn a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = synth(tmp.path(), "100K");
    let run = tmp.path().join("run");
    let mut args = train_args(&corpus, &run, "40");
    // A learning rate no model survives: the weights overflow within a few updates.
    args.extend(
        [
            "--lr",
            "1e30",
            "--set",
            "train.clip=0",
            "--set",
            "train.warmup_steps=0",
            "--set",
            "run.checkpoint_every=1",
        ]
        .map(String::from),
    );
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tern(&a);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not finite") && err.contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The checkpoint named by `latest` is complete.
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let dir = run.join("checkpoints").join(latest.trim());
    for f in [
        "model.safetensors",
        "optimizer.safetensors",
        "state.json",
        "train.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing in {}", dir.display());
    }
}
