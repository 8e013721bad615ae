//! The packed checkpoint: a directory with `config.json` (with its `"tern"` section),
//! `model.safetensors` and, when given, `tokenizer.json`.
//!
//! In `model.safetensors`:
//! * each ternary linear weight `<module>.weight` is U8 `[out, row_bytes(in)]` in the codec
//!   named by the metadata (layout in [`crate::codec`]);
//! * its scales `<module>.weight_scale` are F32 `[n]` (one per tensor or shard), divisors:
//!   `W = t / s` (see [`crate::quant`]);
//! * every other tensor (embeddings, norms, head, biases) is kept in its own dtype and shape;
//! * `__metadata__` holds `format = "tern-packed"`, `format_version = "1"` and `codec`.
//!
//! Tensors are ordered so each starts aligned to its element size and every packed row to
//! 4 bytes, with no gaps (so any safetensors reader can open the file).
//!
//! [`PackedCheckpoint::open`] memory-maps the file and validates everything — metadata, every
//! tensor's dtype and shape against the config, every scale, every packed byte — before
//! handing out zero-copy views.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::checkpoint::latent::{check_float_tensor, check_scales};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::safetensors::{Dtype, SafetensorsFile, TensorInfo};
use crate::spec::{HfConfig, ModelSpec, TensorRole};

/// `format` metadata value of a packed checkpoint.
pub const FORMAT: &str = "tern-packed";
/// `format_version` this build writes and reads.
pub const FORMAT_VERSION: &str = "1";
/// The weights file inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The metadata of a packed checkpoint written with `codec`.
pub fn metadata(codec: Codec) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("codec".to_string(), codec.name().to_string()),
    ])
}

/// Name of the scale tensor of a linear weight.
pub fn scale_name(weight: &str) -> String {
    match weight.strip_suffix(".weight") {
        Some(module) => format!("{module}.weight_scale"),
        None => format!("{weight}_scale"),
    }
}

/// A zero-copy view of one packed ternary matrix.
#[derive(Debug, Clone, Copy)]
pub struct PackedTensor<'a> {
    pub codec: Codec,
    /// Output channels.
    pub rows: usize,
    /// Input features (`k`).
    pub cols: usize,
    /// `rows · codec.row_bytes(cols)` bytes.
    pub data: &'a [u8],
    /// One divisor per scale group (`W = t / s`).
    pub scales: &'a [f32],
}

impl PackedTensor<'_> {
    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.codec.row_bytes(self.cols)
    }

    /// The packed bytes of row `r`.
    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// The scale that applies to row `r`.
    pub fn scale_for_row(&self, r: usize) -> f32 {
        self.scales[r / (self.rows / self.scales.len())]
    }
}

/// An opened, validated packed checkpoint.
#[derive(Debug)]
pub struct PackedCheckpoint {
    pub dir: PathBuf,
    pub path: PathBuf,
    pub config: HfConfig,
    pub spec: ModelSpec,
    pub codec: Codec,
    tensors: BTreeMap<String, TensorInfo>,
    /// Linear weight → (input features, scales copied out of the file).
    linears: BTreeMap<String, (usize, Vec<f32>)>,
    map: Mmap,
}

impl PackedCheckpoint {
    /// Opens and validates the packed checkpoint in `dir`.
    pub fn open(dir: &Path) -> Result<PackedCheckpoint> {
        let config = HfConfig::load(dir)?;
        let config_path = dir.join("config.json");
        let spec = ModelSpec::from_config(&config)
            .map_err(|e| Error::config(&config_path, e.to_string()))?;
        if !spec.is_ternary() {
            return Err(Error::config(
                &config_path,
                "the `tern` section says the weights are full precision; this is not a packed checkpoint",
            ));
        }
        let path = dir.join(WEIGHTS_FILE);
        let file = SafetensorsFile::open(&path)?;
        let meta = &file.header.metadata;
        match meta.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            other => {
                return Err(Error::header(
                    &path,
                    format!(
                        "metadata `format` is {other:?}, not \"{FORMAT}\": not a tern packed checkpoint (a latent one? use `tern pack` first)"
                    ),
                ));
            }
        }
        match meta.get("format_version").map(String::as_str) {
            Some(FORMAT_VERSION) => {}
            other => {
                return Err(Error::header(
                    &path,
                    format!(
                        "format_version {other:?} is not supported by this build (reads \"{FORMAT_VERSION}\")"
                    ),
                ));
            }
        }
        let codec_name = meta.get("codec").map(String::as_str).unwrap_or("");
        let codec = Codec::from_name(codec_name)
            .ok_or_else(|| Error::header(&path, format!("unknown codec `{codec_name}`")))?;
        // SAFETY: the map is read-only; tern never writes a checkpoint in place (writes go to a
        // temporary directory renamed over the old one), so the mapped file does not change
        // under us unless another program truncates it, which no checkpoint format can defend
        // against.
        let map = unsafe { Mmap::map(file.file()) }.map_err(|e| Error::io(&path, e))?;
        // Pages read from disk from now on come in 2 MiB folios, which the map then takes as
        // huge pages (see `fsutil::HugePageWriter` for what that saves a decode). Advice only:
        // a kernel without transparent huge pages refuses it, and nothing changes.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        if (map.len() as u64) < file.header.tensors.last().map_or(0, |t| t.offset + t.len) {
            return Err(Error::header(&path, "file shrank while being opened"));
        }
        let tensors: BTreeMap<String, TensorInfo> = file
            .header
            .tensors
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect();
        let mut ck = PackedCheckpoint {
            dir: dir.to_path_buf(),
            path,
            config,
            spec,
            codec,
            tensors,
            linears: BTreeMap::new(),
            map,
        };
        ck.validate()?;
        Ok(ck)
    }

    fn validate(&mut self) -> Result<()> {
        let path = self.path.clone();
        let mut expected: BTreeMap<String, ()> = BTreeMap::new();
        let n_scales = self.spec.quant.scale.count();
        for t in self.spec.tensors() {
            expected.insert(t.name.clone(), ());
            let info = self.info(&t.name)?.clone();
            if t.role == TensorRole::Linear {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                let want = [rows, self.codec.row_bytes(cols)];
                if info.dtype != Dtype::U8 || info.shape != want {
                    return Err(Error::tensor(
                        &path,
                        &t.name,
                        format!(
                            "expected packed U8 {want:?} for a [{rows}, {cols}] weight, found {} {:?}",
                            info.dtype, info.shape
                        ),
                    ));
                }
                let bytes = &self.map[info.offset as usize..(info.offset + info.len) as usize];
                validate_packed(self.codec, bytes, rows, cols)
                    .map_err(|e| Error::tensor(&path, &t.name, e.to_string()))?;
                let sname = scale_name(&t.name);
                expected.insert(sname.clone(), ());
                let sinfo = self.info(&sname)?.clone();
                if sinfo.dtype != Dtype::F32 || sinfo.shape != [n_scales] {
                    return Err(Error::tensor(
                        &path,
                        &sname,
                        format!(
                            "expected F32 [{n_scales}], found {} {:?}",
                            sinfo.dtype, sinfo.shape
                        ),
                    ));
                }
                let raw = &self.map[sinfo.offset as usize..(sinfo.offset + sinfo.len) as usize];
                let scales: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect();
                check_scales(&path, &sname, &scales)?;
                self.linears.insert(t.name.clone(), (cols, scales));
            } else {
                check_float_tensor(&path, &t, &info)?;
            }
        }
        if let Some(extra) = self.tensors.keys().find(|n| !expected.contains_key(*n)) {
            return Err(Error::UnknownTensor {
                path,
                tensor: extra.clone(),
                model_type: self.config.model_type.clone(),
            });
        }
        Ok(())
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
        })
    }

    /// The packed matrix of linear weight `name`.
    pub fn ternary(&self, name: &str) -> Result<PackedTensor<'_>> {
        let info = self.info(name)?;
        let (cols, scales) = self
            .linears
            .get(name)
            .ok_or_else(|| Error::tensor(&self.path, name, "is not a ternary linear weight"))?;
        Ok(PackedTensor {
            codec: self.codec,
            rows: info.shape[0],
            cols: *cols,
            data: self.bytes(info),
            scales,
        })
    }

    /// A non-ternary tensor: its dtype, shape and raw little-endian bytes.
    pub fn raw(&self, name: &str) -> Result<(Dtype, &[usize], &[u8])> {
        let info = self.info(name)?;
        Ok((info.dtype, &info.shape, self.bytes(info)))
    }

    /// A non-ternary float tensor converted to f32.
    pub fn float(&self, name: &str) -> Result<Vec<f32>> {
        let (dtype, _, bytes) = self.raw(name)?;
        crate::safetensors::to_f32(dtype, bytes)
            .ok_or_else(|| Error::tensor(&self.path, name, format!("{dtype} is not a float type")))
    }

    fn bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.map[info.offset as usize..(info.offset + info.len) as usize]
    }

    /// Size of the weights file in bytes.
    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    /// Every tensor entry, in name order.
    pub fn entries(&self) -> impl Iterator<Item = &TensorInfo> {
        self.tensors.values()
    }
}

/// Checks that every byte of a packed matrix is a valid code and every padding slot is zero.
pub fn validate_packed(codec: Codec, bytes: &[u8], rows: usize, cols: usize) -> Result<()> {
    let rb = codec.row_bytes(cols);
    if bytes.len() != rows * rb {
        return Err(Error::Codec(format!(
            "{} bytes for {rows} rows of {rb}",
            bytes.len()
        )));
    }
    let full = codec.full_groups(cols) * crate::codec::GROUP_BYTES;
    for (r, row) in bytes.chunks_exact(rb.max(1)).enumerate() {
        if let Some(i) = row[..full]
            .iter()
            .position(|&b| codec.decode_byte(b).is_none())
        {
            return Err(Error::Codec(format!(
                "row {r}, byte {i}: {:#04x} is not a valid {} code",
                row[i],
                codec.name()
            )));
        }
        if full < rb {
            codec
                .check_tail(row, cols)
                .map_err(|e| Error::Codec(format!("row {r}: {e}")))?;
        }
    }
    Ok(())
}
