//! Teachers read from Hugging Face checkpoints give transformers' logits (the fixtures'
//! `expected.safetensors`, made by `scripts/make_fixtures.py`), and unusable teachers are
//! refused with a clear error.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use tern_distill::teacher::Teacher;
use tern_pack::safetensors::SafetensorsFile;
use tern_train::model::Taps;
use tern_train::params::to_host;

/// Largest logit difference allowed, relative to the largest |logit| of transformers' f32
/// forward: Burn's f32 matmuls sum in another order (a few ulps per layer).
const TEACHER_REL_BUDGET: f32 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

#[test]
fn llama_and_qwen2_teachers_match_transformers() {
    let device = Device::flex();
    // llama-f16-sharded: f16 weights over three shards; qwen2-f32: q/k/v biases;
    // bitnet-bf16: SubLN and relu², in full precision.
    for name in ["llama-f32", "llama-f16-sharded", "qwen2-f32", "bitnet-bf16"] {
        let dir = fixture(name);
        let teacher = Teacher::load(&dir, false, &device).expect("teacher loads");
        let f = SafetensorsFile::open(&dir.join("expected.safetensors")).unwrap();
        let want = f.read_f32(f.header.get("logits").unwrap()).unwrap();
        let ids: Vec<i64> = {
            let info = f.header.get("prompt_ids").unwrap();
            f.read(info)
                .unwrap()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        let n = ids.len();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
        let got = to_host(teacher.forward(tokens, Taps::default()).logits);
        assert_eq!(got.data.len(), want.len(), "{name}: logits shape");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .data
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() / scale)
            .fold(0f32, f32::max);
        eprintln!("{name}: relative logit error {worst:.2e}");
        assert!(
            worst <= TEACHER_REL_BUDGET,
            "{name}: relative logit error {worst:e} over the budget {TEACHER_REL_BUDGET:e}"
        );
    }
}

#[test]
fn unusable_teachers_are_refused_with_the_reason() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let err = |dir: &Path| match Teacher::load(dir, false, &device) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    };
    // Not a model directory.
    let e = err(tmp.path());
    assert!(e.contains("no config.json"), "{e}");
    // No tokenizer.
    let d = tmp.path().join("no-tok");
    std::fs::create_dir(&d).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("llama-f32").join(f), d.join(f)).unwrap();
    }
    let e = err(&d);
    assert!(e.contains("no tokenizer.json"), "{e}");
    // A truncated weights file names the file.
    std::fs::copy(
        fixture("llama-f32").join("tokenizer.json"),
        d.join("tokenizer.json"),
    )
    .unwrap();
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let e = err(&d);
    assert!(e.contains("model.safetensors"), "{e}");
}
