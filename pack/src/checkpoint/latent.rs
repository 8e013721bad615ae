//! Reading latent (unpacked) checkpoints: a Hugging Face model directory with `config.json` and
//! either `model.safetensors` or shards listed in `model.safetensors.index.json`.
//!
//! Linear weights come in one of two forms, told apart per tensor:
//! * floating point `[out, in]` (F32, BF16, F16, F64): quantized by [`crate::quant`];
//! * Hugging Face BitNet packed: U8 `[out/4, in]` plus `<module>.weight_scale` `[1]`, as
//!   `transformers`' BitNet integration writes it: packed row `r` holds rows `r + i·out/4` in
//!   bits `2i..2i+2`, each as `trit + 1`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::checkpoint::packed::scale_name;
use crate::error::{Error, IoContext, Result};
use crate::quant::{ScaleGranularity, Ternary, quantize_ternary};
use crate::safetensors::{Dtype, SafetensorsFile, TensorInfo, to_f32};
use crate::spec::{HfConfig, ModelSpec, TensorSpec, is_ignorable_tensor};

/// Largest index file we read.
const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// An opened latent checkpoint: its config and every tensor's location.
#[derive(Debug)]
pub struct LatentCheckpoint {
    pub dir: PathBuf,
    pub config: HfConfig,
    files: Vec<SafetensorsFile>,
    /// Tensor name → (file index, entry).
    tensors: BTreeMap<String, (usize, TensorInfo)>,
}

/// Where a linear weight comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearSource {
    /// Floating-point latent weights.
    Latent(Dtype),
    /// Hugging Face BitNet packed uint8 with `weight_scale`.
    HfPacked,
}

impl LatentCheckpoint {
    /// Opens `dir`, reading `config.json` and every safetensors header (no tensor data).
    pub fn open(dir: &Path) -> Result<LatentCheckpoint> {
        if !dir.is_dir() {
            return Err(Error::Usage(format!(
                "{} is not a checkpoint directory",
                dir.display()
            )));
        }
        let config = HfConfig::load(dir)?;
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut files = Vec::new();
        let mut tensors = BTreeMap::new();
        if index.exists() {
            let weight_map = read_index(&index)?;
            let mut file_ids: BTreeMap<String, usize> = BTreeMap::new();
            for shard in weight_map.values().collect::<BTreeSet<_>>() {
                if shard.contains('/') || shard.contains('\\') || shard.starts_with('.') {
                    return Err(Error::config(
                        &index,
                        format!("shard name `{shard}` is not a plain file name"),
                    ));
                }
                file_ids.insert(shard.clone(), files.len());
                files.push(SafetensorsFile::open(&dir.join(shard))?);
            }
            for (name, shard) in &weight_map {
                let id = file_ids[shard];
                let info =
                    files[id]
                        .header
                        .get(name)
                        .cloned()
                        .ok_or_else(|| Error::MissingTensor {
                            path: files[id].path.clone(),
                            tensor: name.clone(),
                        })?;
                tensors.insert(name.clone(), (id, info));
            }
            for f in &files {
                for t in &f.header.tensors {
                    if !tensors.contains_key(&t.name) {
                        return Err(Error::tensor(
                            &f.path,
                            &t.name,
                            format!("present in the shard but not listed in {}", index.display()),
                        ));
                    }
                }
            }
        } else if single.exists() {
            let f = SafetensorsFile::open(&single)?;
            for t in &f.header.tensors {
                tensors.insert(t.name.clone(), (0, t.clone()));
            }
            files.push(f);
        } else {
            return Err(Error::Usage(format!(
                "{}: neither model.safetensors nor model.safetensors.index.json found",
                dir.display()
            )));
        }
        Ok(LatentCheckpoint {
            dir: dir.to_path_buf(),
            config,
            files,
            tensors,
        })
    }

    /// The validated spec of the config (errors name `config.json`).
    pub fn spec(&self) -> Result<ModelSpec> {
        ModelSpec::from_config(&self.config)
            .map_err(|e| Error::config(self.dir.join("config.json"), e.to_string()))
    }

    /// Entry and file of `name`, or a missing-tensor error.
    pub fn entry(&self, name: &str) -> Result<(&SafetensorsFile, &TensorInfo)> {
        let (id, info) = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.dir.clone(),
            tensor: name.to_string(),
        })?;
        Ok((&self.files[*id], info))
    }

    /// Checks that every tensor in the files belongs to `spec` (or is a known buffer).
    pub fn check_no_unknown(&self, spec: &ModelSpec) -> Result<()> {
        let mut known: BTreeSet<String> = BTreeSet::new();
        for t in spec.tensors() {
            if let Some(module) = t.name.strip_suffix(".weight") {
                known.insert(format!("{module}.weight_scale"));
            }
            known.insert(t.name);
        }
        for (name, (id, _)) in &self.tensors {
            if !known.contains(name) && !is_ignorable_tensor(name) {
                return Err(Error::UnknownTensor {
                    path: self.files[*id].path.clone(),
                    tensor: name.clone(),
                    model_type: self.config.model_type.clone(),
                });
            }
        }
        Ok(())
    }

    /// Which form the linear weight `t` is stored in, checking its shape.
    pub fn linear_source(&self, t: &TensorSpec) -> Result<LinearSource> {
        let (file, info) = self.entry(&t.name)?;
        let (out, k) = (t.shape[0], t.shape[1]);
        match info.dtype {
            d if d.is_float() && info.shape == t.shape => Ok(LinearSource::Latent(d)),
            Dtype::U8 if out % 4 == 0 && info.shape == [out / 4, k] => Ok(LinearSource::HfPacked),
            d => Err(Error::tensor(
                &file.path,
                &t.name,
                format!(
                    "{d} {:?} is neither a float [{out}, {k}] weight nor a BitNet packed U8 [{}, {k}] one",
                    info.shape,
                    out / 4
                ),
            )),
        }
    }

    /// The trits and scales of linear weight `t`, quantizing latent weights with `granularity`.
    pub fn ternary(&self, t: &TensorSpec, granularity: ScaleGranularity) -> Result<Ternary> {
        let (file, info) = self.entry(&t.name)?;
        let (rows, cols) = (t.shape[0], t.shape[1]);
        match self.linear_source(t)? {
            LinearSource::Latent(dtype) => {
                let w = file.read_f32(info)?;
                let scale_name = scale_name(&t.name);
                if self.tensors.contains_key(&scale_name) {
                    // Written by `tern pack --unpack`: the scales are given, the values must be
                    // ternary multiples of them.
                    let (sfile, sinfo) = self.entry(&scale_name)?;
                    let scales = sfile.read_f32(sinfo)?;
                    if scales.len() != granularity.count() {
                        return Err(Error::tensor(
                            &sfile.path,
                            &scale_name,
                            format!(
                                "{} scales, but the config asks for {}",
                                scales.len(),
                                granularity.count()
                            ),
                        ));
                    }
                    check_scales(&sfile.path, &scale_name, &scales)?;
                    let trits = trits_with_scales(&w, &scales, dtype)
                        .map_err(|reason| Error::tensor(&file.path, &t.name, reason))?;
                    return Ok(Ternary { trits, scales });
                }
                quantize_ternary(&w, rows, cols, granularity)
                    .map_err(|e| Error::tensor(&file.path, &t.name, e.to_string()))
            }
            LinearSource::HfPacked => {
                let packed = file.read(info)?;
                let trits = unpack_hf_bitnet(&packed, rows, cols)
                    .map_err(|reason| Error::tensor(&file.path, &t.name, reason))?;
                let scale_name = scale_name(&t.name);
                let (sfile, sinfo) = self.entry(&scale_name)?;
                let scales = sfile.read_f32(sinfo)?;
                if scales.len() != 1 {
                    return Err(Error::tensor(
                        &sfile.path,
                        &scale_name,
                        format!("expected one scale, found shape {:?}", sinfo.shape),
                    ));
                }
                if granularity != ScaleGranularity::Tensor {
                    return Err(Error::tensor(
                        &sfile.path,
                        &scale_name,
                        "a BitNet packed weight has one scale per tensor, but the config asks for shards",
                    ));
                }
                check_scales(&sfile.path, &scale_name, &scales)?;
                Ok(Ternary { trits, scales })
            }
        }
    }

    /// Streams the bytes of a non-ternary tensor in chunks of at most `chunk` bytes.
    pub fn stream_raw(
        &self,
        name: &str,
        chunk: usize,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let (file, info) = self.entry(name)?;
        let mut buf = vec![0u8; chunk.min(info.len as usize).max(1)];
        let mut done = 0u64;
        while done < info.len {
            let n = (info.len - done).min(buf.len() as u64) as usize;
            file.read_range(info, done, &mut buf[..n])?;
            if info.dtype.is_float()
                && let Some(vals) = to_f32(info.dtype, &buf[..n])
                && let Some(i) = vals.iter().position(|v| !v.is_finite())
            {
                return Err(Error::tensor(
                    &file.path,
                    name,
                    format!(
                        "value {} at flat index {} is not finite",
                        vals[i],
                        done as usize / info.dtype.size() + i
                    ),
                ));
            }
            sink(&buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Files beside the weights that travel with a checkpoint (tokenizer, generation config).
    pub fn companion_files(&self) -> Vec<PathBuf> {
        COMPANION_FILES
            .iter()
            .map(|f| self.dir.join(f))
            .filter(|p| p.is_file())
            .collect()
    }
}

/// Files copied alongside the weights by pack and unpack.
pub const COMPANION_FILES: [&str; 4] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
];

/// Trits of latent values that promise to be `t / s` per shard, within the rounding of `dtype`.
fn trits_with_scales(w: &[f32], scales: &[f32], dtype: Dtype) -> Result<Vec<i8>, String> {
    let tolerance = match dtype {
        Dtype::F32 | Dtype::F64 => 1e-5,
        Dtype::F16 => 2e-3,
        _ => 1e-2,
    };
    let shard = w.len() / scales.len();
    let mut trits = vec![0i8; w.len()];
    for (i, (&v, t)) in w.iter().zip(trits.iter_mut()).enumerate() {
        let x = v * scales[i / shard.max(1)];
        let q = x.round_ties_even();
        if !(q.abs() <= 1.0 && (x - q).abs() <= tolerance) {
            return Err(format!(
                "value {v} at flat index {i} is not a ternary multiple of its weight_scale (value × scale = {x})"
            ));
        }
        *t = q as i8;
    }
    Ok(trits)
}

/// A non-ternary tensor must be floating point and shaped as the config says.
pub(crate) fn check_float_tensor(path: &Path, t: &TensorSpec, info: &TensorInfo) -> Result<()> {
    if !info.dtype.is_float() || info.shape != t.shape {
        return Err(Error::tensor(
            path,
            &t.name,
            format!(
                "expected a float tensor {:?} (from config.json), found {} {:?}",
                t.shape, info.dtype, info.shape
            ),
        ));
    }
    Ok(())
}

/// Scales must be finite and positive (they divide).
pub(crate) fn check_scales(path: &Path, name: &str, scales: &[f32]) -> Result<()> {
    match scales.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        Some(i) => Err(Error::tensor(
            path,
            name,
            format!(
                "scale {} at index {i} is not a finite positive number",
                scales[i]
            ),
        )),
        None => Ok(()),
    }
}

fn read_index(index: &Path) -> Result<BTreeMap<String, String>> {
    let len = std::fs::metadata(index).at(index)?.len();
    if len > MAX_INDEX_BYTES {
        return Err(Error::config(
            index,
            format!("{len} bytes is larger than any real index"),
        ));
    }
    let text = std::fs::read_to_string(index).at(index)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::config(index, e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::config(index, "no `weight_map` object"))?;
    map.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|s| (k.clone(), s.to_string()))
                .ok_or_else(|| Error::config(index, format!("`weight_map.{k}` is not a string")))
        })
        .collect()
}

/// Decodes `transformers`' BitNet packing: `packed[r, c]` holds rows `r + i·rows/4`, `i` in 0..4,
/// in bits `2i..2i+2` as `trit + 1`. Returns row-major `[rows, cols]` trits.
pub fn unpack_hf_bitnet(packed: &[u8], rows: usize, cols: usize) -> Result<Vec<i8>, String> {
    let quarter = rows / 4;
    if !rows.is_multiple_of(4) || packed.len() != quarter * cols {
        return Err(format!(
            "packed length {} does not fit [{rows}, {cols}]",
            packed.len()
        ));
    }
    let mut trits = vec![0i8; rows * cols];
    for (r, src) in packed.chunks_exact(cols.max(1)).enumerate() {
        for (c, &byte) in src.iter().enumerate() {
            for i in 0..4 {
                let code = (byte >> (2 * i)) & 3;
                if code == 3 {
                    return Err(format!(
                        "packed byte {byte:#04x} at [{r}, {c}] holds the code 3, which is not ternary"
                    ));
                }
                trits[(r + i * quarter) * cols + c] = code as i8 - 1;
            }
        }
    }
    Ok(trits)
}

/// The inverse of [`unpack_hf_bitnet`] (for fixtures and export).
pub fn pack_hf_bitnet(trits: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    assert!(rows.is_multiple_of(4) && trits.len() == rows * cols);
    let quarter = rows / 4;
    let mut out = vec![0u8; quarter * cols];
    for (j, &t) in trits.iter().enumerate() {
        let (row, c) = (j / cols, j % cols);
        out[(row % quarter) * cols + c] |= ((t + 1) as u8) << (2 * (row / quarter));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_bitnet_packing_round_trips_and_matches_the_docstring_example() {
        // transformers' unpack_weights docstring: [[0b10100001, 0b00011000], [0b10010000, 0b00001010]]
        // unpacks to rows [0,-1],[-1,1],[-1,1],[-1,1],[1,0],[0,-1],[1,-1],[1,-1].
        let packed = [0b1010_0001u8, 0b0001_1000, 0b1001_0000, 0b0000_1010];
        let trits = unpack_hf_bitnet(&packed, 8, 2).unwrap();
        assert_eq!(
            trits,
            vec![0, -1, -1, 1, -1, 1, -1, 1, 1, 0, 0, -1, 1, -1, 1, -1]
        );
        assert_eq!(pack_hf_bitnet(&trits, 8, 2), packed);
        assert!(
            unpack_hf_bitnet(&[0xff, 0, 0, 0], 8, 2)
                .unwrap_err()
                .contains("code 3")
        );
    }
}
