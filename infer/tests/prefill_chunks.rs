//! A prompt longer than one prefill chunk goes through the layers in pieces: the same logits as
//! when the caller feeds it in pieces of its own.

use std::path::Path;

use tern_infer::model::PREFILL_CHUNK;
use tern_infer::{KvCache, KvDtype, LoadOptions, Logits, Model};
use tern_pack::init::{RandomSource, SplitMix64};
use tern_pack::safetensors::Dtype;
use tern_pack::spec::{HfConfig, ModelSpec};

/// Largest |a − b| over the largest |b|: both sides compute in f32, and the pieces change only
/// which tokens share a kernel call (summation order in a few kernels).
const REL_BUDGET: f32 = 1e-5;

#[test]
fn long_prompts_are_prefilled_in_chunks_with_the_same_logits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/llama-f32");
    let mut config = HfConfig::load(&dir).unwrap();
    let n = PREFILL_CHUNK + 44;
    config.max_position_embeddings = Some(n + 1);
    let spec = ModelSpec::from_config(&config).unwrap();
    let source = RandomSource {
        seed: 3,
        std: 0.02,
        dtype: Dtype::F32,
    };
    let opts = LoadOptions::default();
    let model = Model::from_float(&spec, &source, &dir, opts).unwrap();
    let mut rng = SplitMix64::new(9);
    let tokens: Vec<u32> = (0..n)
        .map(|_| (rng.next_u64() % spec.vocab_size as u64) as u32)
        .collect();

    let mut cache = KvCache::new(&spec, n, KvDtype::F32);
    let whole = model.forward(&tokens, &mut cache, Logits::All).unwrap();
    assert_eq!(cache.len(), n);

    // The caller's pieces: 100 + 150 + the rest, none on a chunk boundary.
    let mut cache = KvCache::new(&spec, n, KvDtype::F32);
    let mut pieces = Vec::new();
    for part in [&tokens[..100], &tokens[100..250], &tokens[250..]] {
        pieces.extend(model.forward(part, &mut cache, Logits::All).unwrap());
    }
    let d = max_rel_diff(&whole, &pieces);
    assert!(d <= REL_BUDGET, "logits differ by {d} (relative)");

    // `Logits::Last` is the last row of `Logits::All` (the head takes one row alone).
    let mut cache = KvCache::new(&spec, n, KvDtype::F32);
    let last = model.forward(&tokens, &mut cache, Logits::Last).unwrap();
    let d = max_rel_diff(&last, &whole[(n - 1) * spec.vocab_size..]);
    assert!(d <= REL_BUDGET, "last logits differ by {d} (relative)");
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}
