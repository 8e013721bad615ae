//! The training config: a commented TOML file (`configs/train/*.toml`) with four sections,
//! every field of which a `--set section.field=value` flag can override.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, TrainError};
use crate::optim::Schedule;

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub run: RunSection,
}

/// What model to train.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A model shape: Hugging Face `config.json` fields, as `.toml` or `.json`.
    pub config: PathBuf,
    /// `false` trains the full-precision model (no fake-quantization): the baseline and a
    /// teacher. Default: quantize when the shape's `[tern]` section says ternary.
    #[serde(default)]
    pub quantize: Option<bool>,
    /// Start from this latent checkpoint (e.g. a full-precision model) instead of random
    /// weights: ternary fine-tuning.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Quantization warm-up: `λ` rises from 0 to 1 over this many steps.
    #[serde(default)]
    pub quant_warmup_steps: u64,
    /// Standard deviation of the random initial weights.
    #[serde(default = "default_init_std")]
    pub init_std: f32,
}

/// Where the text comes from and how it becomes sequences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// A text file, a directory of text files, or a `.jsonl` file.
    pub corpus: PathBuf,
    /// `"text"` or `"jsonl"`; by extension when absent.
    #[serde(default)]
    pub format: Option<String>,
    /// The JSONL field holding the text.
    #[serde(default = "default_text_field")]
    pub text_field: String,
    /// A `tokenizer.json` to use; when absent, a byte-level BPE is learned from the corpus
    /// with the model's vocabulary size.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Tokens per training sequence.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Fraction of documents held out for validation (0 to 0.5).
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
}

/// The optimization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    /// Optimizer updates.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per update (gradient accumulation).
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub schedule: Schedule,
    /// Linear learning-rate warm-up steps.
    pub warmup_steps: u64,
    /// The final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// AdamW weight decay (matrices only).
    pub weight_decay: f64,
    /// Two-stage schedule: where stage 2 starts, as a fraction of `steps`.
    pub stage2_at: f64,
    /// Two-stage schedule: stage 2's learning rate as a fraction of the peak.
    pub stage2_lr_ratio: f64,
    /// Global gradient-norm clipping (0: off).
    pub clip: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// Seeds the initial weights and the data order.
    pub seed: u64,
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            steps: 1000,
            batch_size: 8,
            grad_accum: 1,
            lr: 1.5e-3,
            schedule: Schedule::Cosine,
            warmup_steps: 50,
            min_lr_ratio: 0.1,
            weight_decay: 0.1,
            stage2_at: 0.5,
            stage2_lr_ratio: 0.4,
            clip: 1.0,
            beta1: 0.9,
            beta2: 0.95,
            adam_eps: 1e-8,
            seed: 0,
        }
    }
}

/// Where the run lives and what it writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// The run directory: metrics, plot, checkpoints and the exported model.
    pub dir: PathBuf,
    /// `"cpu"` or `"gpu"`.
    pub device: String,
    /// Steps between metric lines.
    pub log_every: u64,
    /// Steps between validations (and plot updates); 0: only at the end.
    pub eval_every: u64,
    /// At most this many validation batches per evaluation (0: all).
    pub eval_batches: usize,
    /// Steps between checkpoints (0: only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept on disk.
    pub keep_checkpoints: usize,
    /// Also pack the exported model: any of `"2"` and `"1.6"`.
    pub pack: Vec<String>,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            dir: PathBuf::from("runs/train"),
            device: "cpu".into(),
            log_every: 10,
            eval_every: 100,
            eval_batches: 16,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            pack: Vec::new(),
        }
    }
}

fn default_init_std() -> f32 {
    0.02
}
fn default_text_field() -> String {
    "text".into()
}
fn default_seq_len() -> usize {
    128
}
fn default_val_fraction() -> f64 {
    0.05
}

impl TrainConfig {
    /// Reads `path`, applies `overrides` (`section.field=value`, the value parsed as TOML and
    /// taken as a string when it does not parse) and resolves relative paths against the
    /// config file's directory.
    pub fn load(path: &Path, overrides: &[String]) -> Result<TrainConfig> {
        let text = std::fs::read_to_string(path).at(path)?;
        let mut cfg = Self::parse(&text, overrides, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new(""));
        cfg.resolve_paths(base);
        Ok(cfg)
    }

    /// Parses TOML text with overrides (paths are left as written).
    pub fn parse(text: &str, overrides: &[String], origin: &str) -> Result<TrainConfig> {
        let mut value: toml::Table =
            toml::from_str(text).map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        for o in overrides {
            apply_override(&mut value, o)?;
        }
        let cfg: TrainConfig = toml::Value::Table(value)
            .try_into()
            .map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        cfg.validate()
            .map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        Ok(cfg)
    }

    /// Resolves relative paths that do not exist from the working directory against `base`
    /// (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| resolve_path(p, base);
        fix(&mut self.model.config);
        fix(&mut self.data.corpus);
        if let Some(t) = &mut self.data.tokenizer {
            fix(t);
        }
        if let Some(i) = &mut self.model.init_from {
            fix(i);
        }
    }

    /// Checks every value's range; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let t = &self.train;
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        let checks: [(bool, &str); 16] = [
            (t.steps > 0, "train.steps must be at least 1"),
            (t.batch_size > 0, "train.batch_size must be at least 1"),
            (t.grad_accum > 0, "train.grad_accum must be at least 1"),
            (finite_pos(t.lr), "train.lr must be a positive number"),
            (
                t.warmup_steps <= t.steps,
                "train.warmup_steps must not exceed train.steps",
            ),
            (
                (0.0..=1.0).contains(&t.min_lr_ratio),
                "train.min_lr_ratio must be in [0, 1]",
            ),
            (
                t.weight_decay.is_finite() && t.weight_decay >= 0.0,
                "train.weight_decay must be >= 0",
            ),
            (
                t.stage2_at > 0.0 && t.stage2_at < 1.0,
                "train.stage2_at must be in (0, 1)",
            ),
            (
                (0.0..=1.0).contains(&t.stage2_lr_ratio),
                "train.stage2_lr_ratio must be in [0, 1]",
            ),
            (
                t.clip.is_finite() && t.clip >= 0.0,
                "train.clip must be >= 0",
            ),
            (
                (0.0..1.0).contains(&t.beta1) && (0.0..1.0).contains(&t.beta2),
                "train.beta1 and train.beta2 must be in [0, 1)",
            ),
            (finite_pos(t.adam_eps), "train.adam_eps must be positive"),
            (self.data.seq_len >= 2, "data.seq_len must be at least 2"),
            (
                (0.0..=0.5).contains(&self.data.val_fraction),
                "data.val_fraction must be in [0, 0.5]",
            ),
            (
                self.model.init_std.is_finite() && self.model.init_std > 0.0,
                "model.init_std must be positive",
            ),
            (
                matches!(self.run.device.as_str(), "cpu" | "gpu"),
                "run.device must be \"cpu\" or \"gpu\"",
            ),
        ];
        if let Some((_, msg)) = checks.iter().find(|(ok, _)| !ok) {
            return Err(msg.to_string());
        }
        if let Some(f) = &self.data.format
            && !matches!(f.as_str(), "text" | "jsonl")
        {
            return Err(format!(
                "data.format must be \"text\" or \"jsonl\", not {f:?}"
            ));
        }
        if let Some(p) = self
            .run
            .pack
            .iter()
            .find(|p| !matches!(p.as_str(), "2" | "1.6"))
        {
            return Err(format!(
                "run.pack entries must be \"2\" or \"1.6\", not {p:?}"
            ));
        }
        if self.run.keep_checkpoints == 0 {
            return Err("run.keep_checkpoints must be at least 1".into());
        }
        Ok(())
    }

    /// The config as TOML-compatible JSON (saved in the run directory).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }
}

/// A relative path that does not exist from the working directory but does from `base` (a
/// config file's directory) is taken relative to `base`.
pub fn resolve_path(p: &mut PathBuf, base: &Path) {
    if p.is_relative() && !p.exists() && base.join(&*p).exists() {
        *p = base.join(&*p);
    }
}

/// `section.field=value` into the table (the `--set` flag).
pub fn apply_override(table: &mut toml::Table, o: &str) -> Result<()> {
    let bad = |why: &str| TrainError::Config(format!("--set {o}: {why}"));
    let (key, raw) = o.split_once('=').ok_or_else(|| bad("expected KEY=VALUE"))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(bad("the key must be SECTION.FIELD, e.g. train.lr"));
    }
    let value = parse_value(raw.trim());
    let section = table
        .entry(parts[0].to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(section) = section else {
        return Err(bad("not a section"));
    };
    section.insert(parts[1].to_string(), value);
    Ok(())
}

/// A TOML value (`1e-3`, `true`, `["2", "1.6"]`), or a bare string.
fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[model]
config = "m.toml"
[data]
corpus = "c.txt"
"#;

    #[test]
    fn defaults_and_overrides() {
        let c = TrainConfig::parse(BASE, &[], "t").unwrap();
        assert_eq!(c.train.steps, 1000);
        let c = TrainConfig::parse(
            BASE,
            &[
                "train.lr=3e-4".into(),
                "run.dir=out/x".into(),
                "run.pack=[\"2\", \"1.6\"]".into(),
                "train.schedule=two-stage".into(),
            ],
            "t",
        )
        .unwrap();
        assert_eq!(c.train.lr, 3e-4);
        assert_eq!(c.run.dir, PathBuf::from("out/x"));
        assert_eq!(c.run.pack, vec!["2", "1.6"]);
        assert_eq!(c.train.schedule, Schedule::TwoStage);
    }

    #[test]
    fn bad_values_name_the_field() {
        for (o, needle) in [
            ("train.lr=-1", "train.lr"),
            ("train.steps=0", "train.steps"),
            ("data.val_fraction=0.9", "data.val_fraction"),
            ("run.device=tpu", "run.device"),
            ("run.pack=[\"3\"]", "run.pack"),
            ("train.bogus=1", "bogus"),
            ("nodot=1", "SECTION.FIELD"),
        ] {
            let e = TrainConfig::parse(BASE, &[o.into()], "t.toml").unwrap_err();
            assert!(e.to_string().contains(needle), "{o}: {e}");
        }
    }
}
