//! The Burn model's parameter paths are the checkpoint names of the model spec, for every
//! layout the spec covers (BitNet with SubLN and a tied head; Llama with an untied head; Qwen2
//! with q/k/v biases).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::Device;
use tern_pack::spec::{HfConfig, ModelSpec};
use tern_train::model::Transformer;
use tern_train::params::collect_shapes;

fn spec_of(text: &str) -> ModelSpec {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.toml");
    std::fs::write(&path, text).unwrap();
    ModelSpec::from_config(&HfConfig::load(&path).unwrap()).unwrap()
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/train")
        .join(name);
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn parameter_paths_are_the_specs_tensor_names() {
    let qwen = fixture("tiny-llama.toml")
        .replace("model_type = \"llama\"", "model_type = \"qwen2\"")
        .replace("[tern]", "attention_bias = true\n[tern]");
    for text in [fixture("tiny-model.toml"), fixture("tiny-llama.toml"), qwen] {
        let spec = spec_of(&text);
        let model = Transformer::init(&spec, 0, 0.02, &Device::flex());
        let got: BTreeMap<String, Vec<usize>> = collect_shapes(&model).into_iter().collect();
        let want: BTreeMap<String, Vec<usize>> = spec
            .tensors()
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        assert_eq!(got, want, "{:?}", spec.family);
    }
}
