//! Writing checkpoints: pack (latent → packed), unpack (packed → latent) and the shared
//! streaming writers that `tern init` also uses.
//!
//! Memory stays bounded: the header is computed from shapes alone, then tensors are produced
//! and written one at a time — one ternary matrix (latent f32, trits, packed bytes) or one chunk
//! of a copied tensor is alive at once. Output goes to a staged directory renamed into place
//! at the end, so a failure leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::latent::{COMPANION_FILES, LatentCheckpoint, check_float_tensor};
use crate::checkpoint::packed::{self, PackedCheckpoint, WEIGHTS_FILE, scale_name};
use crate::codec::Codec;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{StagedDir, write_atomic};
use crate::quant::{ScaleGranularity, Ternary, dequantize};
use crate::safetensors::{Dtype, SafetensorsWriter, TensorEntry, from_f32};
use crate::spec::{HfConfig, ModelSpec, QuantSpec, TensorRole, TensorSpec, TernQuantConfig};

/// Bytes moved per read when copying a tensor.
const COPY_CHUNK: usize = 16 << 20;

/// A provider of a model's tensors: an opened checkpoint, or the random generator of `init`.
pub trait WeightSource {
    /// Trits and scales of linear weight `t`.
    fn ternary(&self, t: &TensorSpec, granularity: ScaleGranularity) -> Result<Ternary>;
    /// Only the scales of linear weight `t` (sources that store them override this).
    fn scales(&self, t: &TensorSpec, granularity: ScaleGranularity) -> Result<Vec<f32>> {
        Ok(self.ternary(t, granularity)?.scales)
    }
    /// The dtype a tensor is stored in.
    fn dtype(&self, t: &TensorSpec) -> Result<Dtype>;
    /// The tensor's little-endian bytes in [`WeightSource::dtype`], in chunks.
    fn stream(&self, t: &TensorSpec, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()>;
}

impl WeightSource for LatentCheckpoint {
    fn ternary(&self, t: &TensorSpec, granularity: ScaleGranularity) -> Result<Ternary> {
        LatentCheckpoint::ternary(self, t, granularity)
    }

    fn dtype(&self, t: &TensorSpec) -> Result<Dtype> {
        let (file, info) = self.entry(&t.name)?;
        check_float_tensor(&file.path, t, info)?;
        Ok(info.dtype)
    }

    fn stream(&self, t: &TensorSpec, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.stream_raw(&t.name, COPY_CHUNK, sink)
    }
}

/// One step of a long write, for progress display.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    /// 1-based index of the tensor being written.
    pub index: usize,
    /// Number of tensors in the file.
    pub total: usize,
    /// Its name.
    pub name: &'a str,
}

/// What a pack produced.
#[derive(Debug, Clone)]
pub struct PackReport {
    pub out_dir: PathBuf,
    pub codec: Codec,
    pub tensors: usize,
    /// Ternary weights packed.
    pub ternary_weights: u64,
    /// Bytes of packed rows and scales.
    pub ternary_bytes: u64,
    /// Size of `model.safetensors`.
    pub file_bytes: u64,
}

impl PackReport {
    /// Bits per ternary weight, padding and scales included.
    pub fn bits_per_weight(&self) -> f64 {
        self.ternary_bytes as f64 * 8.0 / self.ternary_weights.max(1) as f64
    }
}

/// Where a writer puts its checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Destination<'a> {
    /// The output directory (appears only when complete).
    pub dir: &'a Path,
    /// Replace an existing directory.
    pub overwrite: bool,
    /// Files copied beside the weights (tokenizer, generation config).
    pub companions: &'a [PathBuf],
}

/// Options of [`pack_checkpoint`].
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub codec: Codec,
    /// Replace an existing output directory.
    pub overwrite: bool,
    /// Quantization to use instead of the config's (for configs without a `tern` section).
    pub quant: Option<QuantSpec>,
    /// A `tokenizer.json` to include (else the input's, if any).
    pub tokenizer: Option<PathBuf>,
}

impl PackOptions {
    /// Packing with `codec`, the config's quantization and the input's tokenizer, into a new
    /// directory.
    pub fn new(codec: Codec) -> PackOptions {
        PackOptions {
            codec,
            overwrite: false,
            quant: None,
            tokenizer: None,
        }
    }
}

/// Packs the latent checkpoint in `input` into `out`.
pub fn pack_checkpoint(
    input: &Path,
    out: &Path,
    opts: &PackOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<PackReport> {
    let ck = LatentCheckpoint::open(input)?;
    let mut config = ck.config.clone();
    if let Some(q) = opts.quant {
        let sub_norms = config.tern.as_ref().and_then(|t| t.sub_norms);
        config.tern = Some(TernQuantConfig {
            sub_norms,
            ..q.to_config()
        });
    }
    let spec = ModelSpec::from_config(&config)
        .map_err(|e| Error::config(input.join("config.json"), e.to_string()))?;
    if !spec.is_ternary() {
        return Err(Error::config(
            input.join("config.json"),
            "the `tern` section declares full-precision weights; nothing to pack",
        ));
    }
    ck.check_no_unknown(&spec)?;
    let mut companions = ck.companion_files();
    if let Some(tok) = &opts.tokenizer {
        companions.retain(|p| !p.ends_with("tokenizer.json"));
        companions.push(tok.clone());
    }
    let dest = Destination {
        dir: out,
        overwrite: opts.overwrite,
        companions: &companions,
    };
    write_packed(&ck, &config, &spec, dest, opts.codec, progress)
}

/// Where the bytes of an output tensor come from.
enum Part<'a> {
    Packed(&'a TensorSpec),
    Scales(&'a TensorSpec),
    Copy(&'a TensorSpec),
}

/// Alignment class: 8-byte types first, then packed rows, then 4-, 2- and 1-byte types, so each
/// tensor starts aligned to its element size with no gaps.
fn order_key(part: &Part<'_>, dtype: Dtype) -> u8 {
    match (part, dtype.size()) {
        (Part::Packed(_), _) => 1,
        (_, 8) => 0,
        (_, 4) => 2,
        (_, 2) => 3,
        _ => 4,
    }
}

/// Writes a packed checkpoint of `spec` from `source` into `out`.
pub fn write_packed(
    source: &dyn WeightSource,
    config: &HfConfig,
    spec: &ModelSpec,
    dest: Destination<'_>,
    codec: Codec,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<PackReport> {
    let tensors = spec.tensors();
    let n_scales = spec.quant.scale.count();
    let mut parts: Vec<(u8, Part<'_>, TensorEntry)> = Vec::new();
    for t in &tensors {
        if t.role == TensorRole::Linear {
            let (rows, cols) = (t.shape[0], t.shape[1]);
            let packed = TensorEntry {
                name: t.name.clone(),
                dtype: Dtype::U8,
                shape: vec![rows, codec.row_bytes(cols)],
            };
            let scales = TensorEntry {
                name: scale_name(&t.name),
                dtype: Dtype::F32,
                shape: vec![n_scales],
            };
            parts.push((
                order_key(&Part::Packed(t), Dtype::U8),
                Part::Packed(t),
                packed,
            ));
            parts.push((
                order_key(&Part::Scales(t), Dtype::F32),
                Part::Scales(t),
                scales,
            ));
        } else {
            let dtype = source.dtype(t)?;
            let entry = TensorEntry {
                name: t.name.clone(),
                dtype,
                shape: t.shape.clone(),
            };
            parts.push((order_key(&Part::Copy(t), dtype), Part::Copy(t), entry));
        }
    }
    parts.sort_by_key(|(k, _, _)| *k);

    let stage = StagedDir::create(dest.dir, dest.overwrite)?;
    let weights = stage.path().join(WEIGHTS_FILE);
    let entries = parts.iter().map(|(_, _, e)| e.clone()).collect();
    let mut writer = SafetensorsWriter::create(&weights, entries, &packed::metadata(codec))?;
    let mut scales: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    let (mut ternary_weights, mut ternary_bytes) = (0u64, 0u64);
    let total = parts.len();
    for (index, (_, part, entry)) in parts.iter().enumerate() {
        progress(Progress {
            index: index + 1,
            total,
            name: &entry.name,
        });
        match part {
            Part::Packed(t) => {
                let q = source.ternary(t, spec.quant.scale)?;
                let bytes = codec.encode_matrix(&q.trits, t.shape[1])?;
                ternary_weights += q.trits.len() as u64;
                ternary_bytes += bytes.len() as u64 + 4 * q.scales.len() as u64;
                writer.write(&bytes)?;
                scales.insert(&t.name, q.scales);
            }
            Part::Scales(t) => {
                let s = scales
                    .remove(t.name.as_str())
                    .expect("packed tensors precede their scales");
                writer.write(&from_f32(Dtype::F32, &s).expect("f32 encodes"))?;
            }
            Part::Copy(t) => source.stream(t, &mut |b| writer.write(b))?,
        }
    }
    writer.finish()?;

    let mut out_config = config.clone();
    out_config.tern = Some(spec.tern_config());
    out_config.extra.remove("quantization_config");
    write_atomic(
        &stage.path().join("config.json"),
        out_config.to_json().as_bytes(),
    )?;
    copy_companions(dest.companions, stage.path())?;
    let file_bytes = std::fs::metadata(&weights).at(&weights)?.len();
    let out_dir = stage.commit()?;
    Ok(PackReport {
        out_dir,
        codec,
        tensors: total,
        ternary_weights,
        ternary_bytes,
        file_bytes,
    })
}

fn copy_companions(files: &[PathBuf], dir: &Path) -> Result<()> {
    for src in files {
        let name = src
            .file_name()
            .ok_or_else(|| Error::Usage(format!("{} is not a file", src.display())))?;
        let name = if COMPANION_FILES.iter().any(|c| name == *c) {
            name.to_os_string()
        } else {
            "tokenizer.json".into()
        };
        std::fs::copy(src, dir.join(&name)).at(src)?;
    }
    Ok(())
}

/// Writes a latent (Hugging Face layout) checkpoint of `spec` from `source`, every tensor in
/// the dtype the source reports.
pub fn write_latent(
    source: &dyn WeightSource,
    config: &HfConfig,
    spec: &ModelSpec,
    dest: Destination<'_>,
    with_scales: bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<PathBuf> {
    let tensors = spec.tensors();
    let mut parts: Vec<(Part<'_>, TensorEntry)> = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let entry = TensorEntry {
            name: t.name.clone(),
            dtype: source.dtype(t)?,
            shape: t.shape.clone(),
        };
        parts.push((Part::Copy(t), entry));
        if with_scales && t.role == TensorRole::Linear {
            let entry = TensorEntry {
                name: scale_name(&t.name),
                dtype: Dtype::F32,
                shape: vec![spec.quant.scale.count()],
            };
            parts.push((Part::Scales(t), entry));
        }
    }
    // Larger elements first keeps every tensor aligned.
    parts.sort_by_key(|(_, e)| std::cmp::Reverse(e.dtype.size()));
    let stage = StagedDir::create(dest.dir, dest.overwrite)?;
    let weights = stage.path().join(WEIGHTS_FILE);
    let entries = parts.iter().map(|(_, e)| e.clone()).collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut writer = SafetensorsWriter::create(&weights, entries, &meta)?;
    let total = parts.len();
    for (n, (part, e)) in parts.iter().enumerate() {
        progress(Progress {
            index: n + 1,
            total,
            name: &e.name,
        });
        match part {
            Part::Scales(t) => {
                let scales = source.scales(t, spec.quant.scale)?;
                writer.write(&from_f32(Dtype::F32, &scales).expect("f32 encodes"))?;
            }
            Part::Copy(t) | Part::Packed(t) => source.stream(t, &mut |b| writer.write(b))?,
        }
    }
    writer.finish()?;
    write_atomic(
        &stage.path().join("config.json"),
        config.to_json().as_bytes(),
    )?;
    copy_companions(dest.companions, stage.path())?;
    stage.commit()
}

/// A packed checkpoint seen as a source of latent tensors (ternary weights dequantized).
struct Unpacked<'a> {
    ck: &'a PackedCheckpoint,
    dtype: Dtype,
}

impl WeightSource for Unpacked<'_> {
    fn ternary(&self, t: &TensorSpec, _: ScaleGranularity) -> Result<Ternary> {
        let p = self.ck.ternary(&t.name)?;
        let trits = p.codec.decode_matrix(p.data, p.rows, p.cols)?;
        Ok(Ternary {
            trits,
            scales: p.scales.to_vec(),
        })
    }

    fn scales(&self, t: &TensorSpec, _: ScaleGranularity) -> Result<Vec<f32>> {
        Ok(self.ck.ternary(&t.name)?.scales.to_vec())
    }

    fn dtype(&self, t: &TensorSpec) -> Result<Dtype> {
        Ok(if t.role == TensorRole::Linear {
            self.dtype
        } else {
            self.ck.raw(&t.name)?.0
        })
    }

    fn stream(&self, t: &TensorSpec, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        if t.role != TensorRole::Linear {
            return self
                .ck
                .raw(&t.name)?
                .2
                .chunks(COPY_CHUNK)
                .try_for_each(sink);
        }
        let p = self.ck.ternary(&t.name)?;
        let mut trits = vec![0i8; p.cols];
        let mut latent = vec![0f32; p.cols];
        for r in 0..p.rows {
            p.codec.decode_row(p.row(r), &mut trits)?;
            let s = p.scale_for_row(r);
            for (l, &q) in latent.iter_mut().zip(&trits) {
                *l = dequantize(q, s);
            }
            sink(&from_f32(self.dtype, &latent).expect("float dtype"))?;
        }
        Ok(())
    }
}

/// Writes the packed checkpoint in `input` back as a latent checkpoint in `out`: ternary weights
/// as `t / s` in `dtype`, each with its F32 `weight_scale` beside it, so that packing the result
/// again gives back exactly the same trits and scales (`transformers` loads the weights and
/// reports the scales as unused).
pub fn unpack_checkpoint(
    input: &Path,
    out: &Path,
    dtype: Dtype,
    overwrite: bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<PathBuf> {
    if !dtype.is_float() {
        return Err(Error::Usage(format!(
            "cannot unpack to {dtype}: choose f32, bf16 or f16"
        )));
    }
    let ck = PackedCheckpoint::open(input)?;
    let companions: Vec<PathBuf> = COMPANION_FILES
        .iter()
        .map(|f| input.join(f))
        .filter(|p| p.is_file())
        .collect();
    let source = Unpacked { ck: &ck, dtype };
    let dest = Destination {
        dir: out,
        overwrite,
        companions: &companions,
    };
    write_latent(&source, &ck.config, &ck.spec, dest, true, progress)
}

/// Packs any source straight into a packed checkpoint (used by `tern init --bits`).
pub fn pack_source(
    source: &dyn WeightSource,
    config: &HfConfig,
    out: &Path,
    codec: Codec,
    overwrite: bool,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<PackReport> {
    let spec = ModelSpec::from_config(config).map_err(|e| Error::Spec(e.to_string()))?;
    let dest = Destination {
        dir: out,
        overwrite,
        companions: &[],
    };
    write_packed(source, config, &spec, dest, codec, progress)
}
