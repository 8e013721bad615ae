//! Export: the trained parameters become a latent checkpoint in the Hugging Face layout
//! (`config.json`, `model.safetensors` in f32, `tokenizer.json`) that `tern pack` and
//! `tern infer` read; and the reverse, reading a latent checkpoint to initialise a model.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tern_pack::checkpoint::latent::LatentCheckpoint;
use tern_pack::codec::Codec;
use tern_pack::convert::{
    Destination, PackOptions, WeightSource, pack_checkpoint, write_latent as pack_write_latent,
};
use tern_pack::error::Error as PackError;
use tern_pack::quant::{ScaleGranularity, Ternary, quantize_ternary};
use tern_pack::safetensors::{Dtype, from_f32};
use tern_pack::spec::{HfConfig, ModelSpec, TensorSpec, WeightKind};

use crate::error::{Result, TrainError};
use crate::params::HostTensor;

/// Host tensors as a `tern_pack` weight source (f32).
struct HostSource<'a>(HashMap<&'a str, &'a HostTensor>);

impl HostSource<'_> {
    fn get(&self, t: &TensorSpec) -> tern_pack::error::Result<&HostTensor> {
        let h = self.0.get(t.name.as_str()).ok_or_else(|| {
            PackError::Usage(format!("the trained model has no tensor {}", t.name))
        })?;
        if h.shape != t.shape {
            return Err(PackError::Usage(format!(
                "tensor {} has shape {:?}, the spec says {:?}",
                t.name, h.shape, t.shape
            )));
        }
        Ok(h)
    }
}

impl WeightSource for HostSource<'_> {
    fn ternary(
        &self,
        t: &TensorSpec,
        granularity: ScaleGranularity,
    ) -> tern_pack::error::Result<Ternary> {
        let h = self.get(t)?;
        quantize_ternary(&h.data, t.shape[0], t.shape[1], granularity)
            .map_err(|e| PackError::Usage(format!("{}: {e}", t.name)))
    }

    fn dtype(&self, _: &TensorSpec) -> tern_pack::error::Result<Dtype> {
        Ok(Dtype::F32)
    }

    fn stream(
        &self,
        t: &TensorSpec,
        sink: &mut dyn FnMut(&[u8]) -> tern_pack::error::Result<()>,
    ) -> tern_pack::error::Result<()> {
        let h = self.get(t)?;
        for chunk in h.data.chunks(1 << 20) {
            sink(&from_f32(Dtype::F32, chunk).expect("f32 encodes"))?;
        }
        Ok(())
    }
}

/// Writes the latent checkpoint of a trained model into `out` (replacing it). `quantized`:
/// whether it was trained with fake-quantization (else the config says full precision, and
/// `tern infer` serves it in floating point).
pub fn write_latent(
    tensors: &[(String, HostTensor)],
    config: &HfConfig,
    spec: &ModelSpec,
    quantized: bool,
    eos: u32,
    tokenizer: &Path,
    out: &Path,
) -> Result<()> {
    let mut config = config.clone();
    let mut spec = spec.clone();
    if !quantized && spec.quant.weights == WeightKind::Ternary {
        spec.quant.weights = WeightKind::Full;
    }
    config.tern = Some(spec.tern_config());
    config
        .extra
        .insert("eos_token_id".into(), serde_json::json!(eos));
    config
        .extra
        .insert("torch_dtype".into(), serde_json::json!("float32"));
    let source = HostSource(tensors.iter().map(|(n, t)| (n.as_str(), t)).collect());
    let companions = [tokenizer.to_path_buf()];
    pack_write_latent(
        &source,
        &config,
        &spec,
        Destination {
            dir: out,
            overwrite: true,
            companions: &companions,
        },
        false,
        &mut |_| {},
    )?;
    Ok(())
}

/// Reads every tensor of the latent checkpoint in `dir` as f32, checking it against `spec`'s
/// shapes (the checkpoint may come from `tern train` or from Hugging Face).
pub fn read_latent(dir: &Path, spec: &ModelSpec) -> Result<BTreeMap<String, HostTensor>> {
    let ck = LatentCheckpoint::open(dir)?;
    let mut out = BTreeMap::new();
    for t in spec.tensors() {
        let (file, info) = ck.entry(&t.name)?;
        if info.shape != t.shape {
            return Err(TrainError::Checkpoint(format!(
                "{}: tensor {} has shape {:?}, the model needs {:?}",
                file.path.display(),
                t.name,
                info.shape,
                t.shape
            )));
        }
        let data = file.read_f32(info)?;
        out.insert(
            t.name.clone(),
            HostTensor {
                shape: t.shape.clone(),
                data,
            },
        );
    }
    Ok(out)
}

/// Packs the latent checkpoint `model` into `out` at `bits` ("2" or "1.6").
pub fn pack(model: &Path, out: &Path, bits: &str) -> Result<()> {
    let codec = Codec::from_bits(bits)
        .ok_or_else(|| TrainError::Config(format!("cannot pack at {bits} bits (2 or 1.6)")))?;
    pack_checkpoint(
        model,
        out,
        &PackOptions {
            codec,
            overwrite: true,
            quant: None,
            tokenizer: None,
        },
        &mut |_| {},
    )?;
    Ok(())
}
