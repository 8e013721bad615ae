//! `tern distill` end to end: a teacher from `tern train` or from Hugging Face, a ternary
//! student that is exported, packed and served like a trained model, resume, and teachers
//! that do not fit the student refused before anything is written.

mod common;
mod served;

use std::path::{Path, PathBuf};

use common::{fixture, s, tern};
use tern_pack::spec::HfConfig;
use tern_train::metrics::{Record, read};

/// Resumed losses against the uninterrupted run (as for `tern train`).
const RESUME_LOSS_BUDGET: f64 = 1e-5;

fn ok(args: &[&str]) -> String {
    let out = tern(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "tern {}\n{err}", args.join(" "));
    err
}

fn fails(args: &[&str]) -> String {
    let out = tern(args);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "tern {}\n{err}", args.join(" "));
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn synth(dir: &Path, bytes: &str) -> PathBuf {
    let corpus = dir.join("corpus.txt");
    ok(&["data", "synth", "--out", s(&corpus), "--bytes", bytes]);
    corpus
}

/// A full-precision teacher trained by `tern train` on `corpus`.
fn train_teacher(dir: &Path, corpus: &Path) -> PathBuf {
    let run = dir.join("teacher");
    ok(&[
        "train",
        "--config",
        s(&fixture("train/tiny-train.toml")),
        "--corpus",
        s(corpus),
        "--out",
        s(&run),
        "--steps",
        "30",
        "--full-precision",
    ]);
    run.join("model")
}

fn distill_args<'a>(teacher: &'a Path, corpus: &'a Path, run: &'a Path) -> Vec<&'a str> {
    vec![
        "distill",
        "--config",
        s(fixture_path()),
        "--teacher",
        s(teacher),
        "--corpus",
        s(corpus),
        "--out",
        s(run),
    ]
}

fn fixture_path() -> &'static Path {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| fixture("distill/tiny-distill.toml"))
}

fn prompt(run: &Path, corpus: &Path) -> Vec<u32> {
    let tok = tokenizers::Tokenizer::from_file(run.join("tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(corpus).unwrap();
    tok.encode(&text[..80], false).unwrap().get_ids()[..12].to_vec()
}

#[test]
fn tern_teacher_distils_into_a_served_student_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = synth(tmp.path(), "200K");
    let teacher = train_teacher(tmp.path(), &corpus);
    let run = tmp.path().join("run");
    let mut args = distill_args(&teacher, &corpus, &run);
    args.extend(["--pack", "2", "--pack", "1.6"]);
    let log = ok(&args);
    assert!(log.contains("ternary distillation from"), "{log}");

    // Every loss term is logged, and the validation KL to the teacher.
    let records = read(&run.join("metrics.jsonl")).unwrap();
    let train: Vec<(u64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Train {
                step, loss, extra, ..
            } => {
                for k in ["ce", "kl", "rel", "mse"] {
                    assert!(extra[k].is_finite(), "step {step}: {k} = {extra:?}");
                }
                Some((*step, *loss))
            }
            _ => None,
        })
        .collect();
    assert_eq!(train.len(), 20);
    let evals: Vec<f64> = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval { extra, .. } => Some(extra["kl_to_teacher"]),
            _ => None,
        })
        .collect();
    assert_eq!(evals.len(), 2, "{records:?}");
    assert!(
        evals.iter().all(|k| k.is_finite() && *k >= 0.0),
        "{evals:?}"
    );

    // The student is exported, packed and served like a trained model.
    served::check_served(&run, &["2", "1.6"], &prompt(&run, &corpus), "distilled");

    // Resume from the step-10 checkpoint: the last 10 losses come out the same.
    std::fs::write(run.join("checkpoints/latest"), "step-00000010\n").unwrap();
    std::fs::remove_dir_all(run.join("checkpoints/step-00000020")).unwrap();
    let mut args = distill_args(&teacher, &corpus, &run);
    args.push("--resume");
    let log = ok(&args);
    assert!(log.contains("resumed from"), "{log}");
    let resumed: Vec<(u64, f64)> = read(&run.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Train { step, loss, .. } => Some((step, loss)),
            _ => None,
        })
        .collect();
    assert_eq!(resumed.len(), 20);
    for ((s1, a), (s2, b)) in train.iter().zip(&resumed) {
        assert_eq!(s1, s2);
        assert!(
            (a - b).abs() <= RESUME_LOSS_BUDGET,
            "step {s1}: {a} uninterrupted, {b} resumed"
        );
    }
}

#[test]
fn hugging_face_qwen2_becomes_a_served_ternary_qwen2_with_subln() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = synth(tmp.path(), "100K");
    let teacher = fixture("qwen2-f32");
    let run = tmp.path().join("run");
    let mut args = distill_args(&teacher, &corpus, &run);
    args.extend(["--steps", "10", "--pack", "2"]);
    ok(&args);
    let config = HfConfig::load(&run.join("model/config.json")).unwrap();
    assert_eq!(config.model_type, "qwen2");
    let tern = config.tern.as_ref().unwrap();
    assert_eq!(tern.sub_norms, Some(true));
    served::check_served(&run, &["2"], &prompt(&run, &corpus), "qwen2 student");
}

#[test]
fn teachers_that_do_not_fit_the_student_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = synth(tmp.path(), "50K");
    let teacher = fixture("qwen2-f32");
    let run = tmp.path().join("run");
    let base = distill_args(&teacher, &corpus, &run);
    let student = format!(
        "student.config=\"{}\"",
        s(&fixture("train/tiny-model.toml"))
    );
    let other_tok = format!(
        "data.tokenizer=\"{}\"",
        s(&tmp.path().join("other-tokenizer.json"))
    );
    ok(&[
        "tokenizer",
        "train",
        "--corpus",
        s(&corpus),
        "--vocab-size",
        "320",
        "--out",
        s(&tmp.path().join("other-tokenizer.json")),
    ]);
    let cases: [(&[&str], &str); 4] = [
        // tiny-model has vocab 512; the teacher 320.
        (
            &["--set", &student],
            "vocab_size 320 but the student has 512",
        ),
        (&["--set", &other_tok], "differs from the teacher's"),
        (
            &["--set", "distill.relation_heads=3"],
            "distill.relation_heads = 3 does not divide",
        ),
        (
            &["--set", "distill.teacher_layer=5"],
            "distill.teacher_layer = 5 is outside a model of 2 layers",
        ),
    ];
    for (extra, want) in cases {
        let mut args = base.clone();
        args.extend_from_slice(extra);
        let err = fails(&args);
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!run.exists(), "{extra:?} created the run directory");
    }
    let err = fails(&[
        "distill",
        "--config",
        s(fixture_path()),
        "--teacher",
        s(&tmp.path().join("nowhere")),
        "--corpus",
        s(&corpus),
        "--out",
        s(&run),
    ]);
    assert!(err.contains("no config.json"), "{err}");
}
