//! The frozen teacher: a full-precision model read from a checkpoint directory into Burn on the
//! plain (non-autodiff) device, so its forward records nothing for the backward pass.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor};
use tern_pack::spec::{HfConfig, ModelSpec, WeightKind};
use tern_train::data::tokenize::load_tokenizer;
use tern_train::error::{Result, TrainError};
use tern_train::export::read_latent;
use tern_train::model::{Outputs, QuantMode, Taps, Transformer};
use tern_train::params;
use tokenizers::Tokenizer;

/// A loaded teacher.
pub struct Teacher {
    pub dir: PathBuf,
    pub config: HfConfig,
    pub spec: ModelSpec,
    pub model: Transformer,
    /// How the teacher runs: full precision unless asked to quantize a ternary teacher.
    pub mode: QuantMode,
    pub tokenizer: Tokenizer,
}

impl Teacher {
    /// Reads `dir` (`config.json`, safetensors weights in f32, f16 or bf16, `tokenizer.json`);
    /// `quantize` runs a ternary teacher with its fake-quantization.
    pub fn load(dir: &Path, quantize: bool, device: &Device) -> Result<Teacher> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(TrainError::Teacher(format!(
                "{} has no config.json; teacher.dir must be a model directory (a Hugging Face \
                 checkpoint or the model/ directory of a tern train run)",
                dir.display()
            )));
        }
        let config = HfConfig::load(dir)?;
        let spec = ModelSpec::from_config(&config)
            .map_err(|e| TrainError::Teacher(format!("{}: {e}", config_path.display())))?;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(TrainError::Teacher(format!(
                "{} has no tokenizer.json; the student is trained with the teacher's tokenizer",
                dir.display()
            )));
        }
        let tokenizer = load_tokenizer(&tok_path)?;
        let tensors = read_latent(dir, &spec)?;
        let model = Transformer::init(&spec, 0, 0.02, device);
        let model = params::load(model, &tensors, &dir.display().to_string())?;
        let mode = if quantize && spec.quant.weights == WeightKind::Ternary {
            QuantMode::ON
        } else {
            QuantMode::OFF
        };
        Ok(Teacher {
            dir: dir.to_path_buf(),
            config,
            spec,
            model,
            mode,
            tokenizer,
        })
    }

    /// The teacher's forward on `tokens` `[B, T]` (on the teacher's device).
    pub fn forward(&self, tokens: Tensor<2, Int>, taps: Taps) -> Outputs {
        self.model.forward_with(tokens, self.mode, taps)
    }
}
