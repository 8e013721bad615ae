//! A trained (or distilled) model as exported, packed and served: `tern_infer` against the
//! Burn model rebuilt from the exported latent checkpoint.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use tern_infer::{KvCache, KvDtype, LoadOptions, Logits, Model};
use tern_pack::checkpoint::packed::PackedCheckpoint;
use tern_pack::spec::{HfConfig, ModelSpec};
use tern_train::export::read_latent;
use tern_train::model::{QuantMode, Transformer};

/// `tern infer`'s logits against the Burn model's quantized forward, relative to the largest
/// logit. The arithmetic is the same; the sums run in different orders, and an activation
/// that lands within an ulp of an int8 rounding boundary can round the other way.
pub const TRAIN_INFER_REL_BUDGET: f32 = 2e-3;

fn burn_logits(model: &Transformer, tokens: &[u32], device: &Device) -> Vec<f32> {
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let t = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, tokens.len()]), device);
    let logits = model.forward(t, QuantMode::ON);
    tern_train::params::to_host(logits).data
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0 as u32
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// Checks that each packed model of `run` (`model-{bits}bit`) gives the logits of the Burn
/// model rebuilt from `run/model` within [`TRAIN_INFER_REL_BUDGET`], and the same 16 greedy
/// tokens after `prompt`.
pub fn check_served(run: &Path, bits: &[&str], prompt: &[u32], what: &str) {
    let config = HfConfig::load(&run.join("model/config.json")).unwrap();
    let spec = ModelSpec::from_config(&config).unwrap();
    let device = Device::flex();
    let tensors = read_latent(&run.join("model"), &spec).unwrap();
    let model = Transformer::init(&spec, 0, 0.02, &device);
    let model = tern_train::params::load(model, &tensors, "model").unwrap();
    let want = burn_logits(&model, prompt, &device);

    let mut burn_greedy = prompt.to_vec();
    for _ in 0..16 {
        let l = burn_logits(&model, &burn_greedy, &device);
        let last = &l[l.len() - spec.vocab_size..];
        burn_greedy.push(argmax(last));
    }
    for bits in bits {
        let ckpt = PackedCheckpoint::open(&run.join(format!("model-{bits}bit"))).unwrap();
        let engine = Model::from_packed(&ckpt, LoadOptions::default()).unwrap();
        let mut cache = KvCache::new(&engine.spec, prompt.len() + 16, KvDtype::F32);
        let got = engine.forward(prompt, &mut cache, Logits::All).unwrap();
        let d = max_rel_diff(&got, &want);
        assert!(
            d <= TRAIN_INFER_REL_BUDGET,
            "{what} at {bits} bits: logits differ by {d:e} of the largest"
        );
        let mut ids = prompt.to_vec();
        let mut last = got[got.len() - spec.vocab_size..].to_vec();
        for _ in 0..16 {
            let next = argmax(&last);
            ids.push(next);
            last = engine.forward(&[next], &mut cache, Logits::Last).unwrap();
        }
        assert_eq!(ids, burn_greedy, "{what} at {bits} bits: greedy tokens");
    }
}
