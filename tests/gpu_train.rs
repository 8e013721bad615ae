//! `tern train --device gpu` (built with `--features wgpu`): a few steps of a tiny model on
//! whatever adapter wgpu finds — in CI the lavapipe software Vulkan device — and the loss falls.
#![cfg(feature = "wgpu")]

mod common;

use common::{fixture, s, tern};
use tern_train::metrics::{Record, read};

#[test]
fn training_on_the_gpu_lowers_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus.txt");
    let out = tern(&["data", "synth", "--out", s(&corpus), "--bytes", "100K"]);
    assert!(out.status.success());
    let run = tmp.path().join("run");
    let out = tern(&[
        "train",
        "--config",
        s(&fixture("train/tiny-train.toml")),
        "--corpus",
        s(&corpus),
        "--out",
        s(&run),
        "--steps",
        "12",
        "--device",
        "gpu",
        "--set",
        "run.eval_every=0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let losses: Vec<f64> = read(&run.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Train { loss, .. } => Some(loss),
            _ => None,
        })
        .collect();
    assert_eq!(losses.len(), 12);
    let first: f64 = losses[..3].iter().sum::<f64>() / 3.0;
    let last: f64 = losses[9..].iter().sum::<f64>() / 3.0;
    assert!(last < first - 0.3, "the loss did not fall: {losses:?}");
}
