//! Training checkpoints: `RUN/checkpoints/step-NNNNNNNN/` holds
//!
//! * `model.safetensors`: every parameter in f32 under its Hugging Face name;
//! * `optimizer.safetensors`: AdamW's moments (`exp_avg.NAME`, `exp_avg_sq.NAME`);
//! * `state.json`: the step, the data position (epoch and batch; the order of an epoch is a
//!   function of the seed, so no other random state exists), tokens seen, elapsed time;
//! * `train.json`: the run's config.
//!
//! Each directory is written under a temporary name and renamed into place, then
//! `RUN/checkpoints/latest` (one line: the directory name) is replaced atomically. A run killed
//! at any moment therefore leaves `latest` naming a complete checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tern_pack::fsutil::{StagedDir, write_atomic};
use tern_pack::safetensors::{Dtype, SafetensorsFile, SafetensorsWriter, TensorEntry, from_f32};

use crate::data::tokenize::DataPosition;
use crate::error::{IoContext, Result, TrainError};
use crate::params::HostTensor;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer updates done.
    pub step: u64,
    /// The next batch.
    pub position: DataPosition,
    /// Training tokens consumed.
    pub tokens: u64,
    /// Seconds of training so far (all sessions).
    pub elapsed_s: f64,
}

/// File names inside a checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";
const LATEST: &str = "latest";

/// The checkpoints directory of a run.
pub fn dir(run: &Path) -> PathBuf {
    run.join("checkpoints")
}

/// Writes one f32 safetensors file (to `path`, which the caller stages).
pub fn write_tensors(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    let entries = tensors
        .iter()
        .map(|(name, t)| TensorEntry {
            name: name.clone(),
            dtype: Dtype::F32,
            shape: t.shape.clone(),
        })
        .collect();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut w = SafetensorsWriter::create(path, entries, &meta)?;
    for (_, t) in tensors {
        w.write(&from_f32(Dtype::F32, &t.data).expect("f32 encodes"))?;
    }
    w.finish()?;
    Ok(())
}

/// Reads every tensor of a safetensors file as f32.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let file = SafetensorsFile::open(path)?;
    let mut out = BTreeMap::new();
    for info in &file.header.tensors {
        let data = file.read_f32(info)?;
        out.insert(
            info.name.clone(),
            HostTensor {
                shape: info.shape.clone(),
                data,
            },
        );
    }
    Ok(out)
}

/// Saves a checkpoint and makes it the latest; removes all but the newest `keep`.
pub fn save(
    run: &Path,
    state: &RunState,
    model: &[(String, HostTensor)],
    optimizer: &[(String, HostTensor)],
    config_json: &str,
    keep: usize,
) -> Result<PathBuf> {
    let root = dir(run);
    let name = format!("step-{:08}", state.step);
    let stage = StagedDir::create(&root.join(&name), true)?;
    write_tensors(&stage.path().join(MODEL_FILE), model)?;
    write_tensors(&stage.path().join(OPTIMIZER_FILE), optimizer)?;
    let json = serde_json::to_string_pretty(state).expect("state serializes");
    write_atomic(&stage.path().join(STATE_FILE), json.as_bytes())?;
    write_atomic(&stage.path().join("train.json"), config_json.as_bytes())?;
    let path = stage.commit()?;
    write_atomic(&root.join(LATEST), format!("{name}\n").as_bytes())?;
    prune(&root, keep)?;
    Ok(path)
}

fn prune(root: &Path, keep: usize) -> Result<()> {
    let mut steps: Vec<PathBuf> = std::fs::read_dir(root)
        .at(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    steps.sort();
    let excess = steps.len().saturating_sub(keep);
    for p in &steps[..excess] {
        std::fs::remove_dir_all(p).at(p)?;
    }
    Ok(())
}

/// A loaded checkpoint.
pub struct Loaded {
    pub path: PathBuf,
    pub state: RunState,
    pub model: BTreeMap<String, HostTensor>,
    pub optimizer: BTreeMap<String, HostTensor>,
}

/// The latest checkpoint of a run, if any.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    let pointer = dir(run).join(LATEST);
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer).at(&pointer)?;
    let path = dir(run).join(name.trim());
    if !path.is_dir() {
        return Err(TrainError::Checkpoint(format!(
            "{} names {}, which does not exist",
            pointer.display(),
            path.display()
        )));
    }
    Ok(Some(path))
}

/// Loads the checkpoint in `path`.
pub fn load(path: &Path) -> Result<Loaded> {
    let state_path = path.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).at(&state_path)?;
    let state: RunState = serde_json::from_str(&text)
        .map_err(|e| TrainError::Checkpoint(format!("{}: {e}", state_path.display())))?;
    Ok(Loaded {
        path: path.to_path_buf(),
        state,
        model: read_tensors(&path.join(MODEL_FILE))?,
        optimizer: read_tensors(&path.join(OPTIMIZER_FILE))?,
    })
}
