//! The distillation config (`configs/distill/*.toml`): the sections of a training config
//! (`data`, `train`, `run`) plus `teacher`, `student` and `distill` (the loss weights). Every
//! field takes a `--set section.field=value` override, as in `tern train`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tern_pack::spec::ActivationQuant;
use tern_train::config::{
    DataSection, ModelSection, RunSection, TrainConfig, TrainSection, apply_override, resolve_path,
};
use tern_train::error::{IoContext, Result, TrainError};

/// A whole distillation run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    pub teacher: TeacherSection,
    #[serde(default)]
    pub student: StudentSection,
    pub data: DataSection,
    #[serde(default)]
    pub distill: LossSection,
    #[serde(default)]
    pub train: TrainSection,
    #[serde(default)]
    pub run: RunSection,
}

/// The frozen teacher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherSection {
    /// A model directory: `config.json`, safetensors weights (one file or an index with
    /// shards; f32, f16 or bf16) and `tokenizer.json`. A Hugging Face `llama`, `qwen2` or
    /// `bitnet` checkpoint, or the `model/` directory of a `tern train` run.
    pub dir: PathBuf,
    /// Run the teacher with the fake-quantization its config asks for (a ternary teacher).
    /// Default: full precision, whatever the config says.
    #[serde(default)]
    pub quantize: bool,
}

/// How the student starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Init {
    /// Random weights (`init_std`).
    Scratch,
    /// The teacher's weights (the shapes must match): the ternary conversion of the teacher.
    Teacher,
}

/// The ternary student.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudentSection {
    /// A model shape (Hugging Face `config.json` fields, `.toml` or `.json`). Absent: the
    /// teacher's own shape, made ternary (`activations`, `sub_norms`).
    pub config: Option<PathBuf>,
    /// `"teacher"` or `"scratch"`.
    pub init: Init,
    /// With the teacher's shape: insert SubLN before `o_proj` and `down_proj` (BitDistill's
    /// modeling refinement; BitNet teachers have it already).
    pub sub_norms: bool,
    /// With the teacher's shape: `"int8"` (per-token absmax, BitNet b1.58) or `"none"`
    /// (TriLM-style floating-point activations).
    pub activations: ActivationQuant,
    /// Quantization warm-up: `λ` rises from 0 to 1 over this many steps.
    pub quant_warmup_steps: u64,
    /// Standard deviation of random initial weights.
    pub init_std: f32,
}

impl Default for StudentSection {
    fn default() -> Self {
        StudentSection {
            config: None,
            init: Init::Teacher,
            sub_norms: true,
            activations: ActivationQuant::Int8,
            quant_warmup_steps: 0,
            init_std: 0.02,
        }
    }
}

/// The loss: a weighted sum of the terms below (a weight of 0 turns a term off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossSection {
    /// Next-token cross-entropy on the data.
    pub ce_weight: f64,
    /// KL(teacher ‖ student) of the logits at `temperature`, scaled by `temperature²`.
    pub kl_weight: f64,
    /// Softens both distributions for the KL term.
    pub temperature: f64,
    /// MiniLM-style relation distillation of the q, k and v states of one layer.
    pub relation_weight: f64,
    /// Relation heads: q, k and v widths of both models are split into this many heads.
    pub relation_heads: usize,
    /// MSE between the teacher's and the student's residual stream after one layer (the
    /// widths must match).
    pub hidden_weight: f64,
    /// The teacher layer for the relation and hidden terms (negative: from the end).
    pub teacher_layer: i64,
    /// The student layer it is mapped to (negative: from the end).
    pub student_layer: i64,
}

impl Default for LossSection {
    fn default() -> Self {
        LossSection {
            ce_weight: 1.0,
            kl_weight: 1.0,
            temperature: 1.0,
            relation_weight: 0.0,
            relation_heads: 4,
            hidden_weight: 0.0,
            teacher_layer: -1,
            student_layer: -1,
        }
    }
}

impl DistillConfig {
    /// Reads `path`, applies `overrides` and resolves relative paths against the config
    /// file's directory.
    pub fn load(path: &Path, overrides: &[String]) -> Result<DistillConfig> {
        let text = std::fs::read_to_string(path).at(path)?;
        let mut cfg = Self::parse(&text, overrides, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new(""));
        resolve_path(&mut cfg.teacher.dir, base);
        if let Some(c) = &mut cfg.student.config {
            resolve_path(c, base);
        }
        resolve_path(&mut cfg.data.corpus, base);
        if let Some(t) = &mut cfg.data.tokenizer {
            resolve_path(t, base);
        }
        Ok(cfg)
    }

    /// Parses TOML text with overrides (paths are left as written).
    pub fn parse(text: &str, overrides: &[String], origin: &str) -> Result<DistillConfig> {
        let bad = |e: String| TrainError::Config(format!("{origin}: {e}"));
        let mut table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for o in overrides {
            apply_override(&mut table, o)?;
        }
        let has_dir = table
            .get("run")
            .and_then(|r| r.as_table())
            .is_some_and(|r| r.contains_key("dir"));
        let mut cfg: DistillConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| bad(e.to_string()))?;
        if !has_dir {
            cfg.run.dir = PathBuf::from("runs/distill");
        }
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    /// Checks every value's range; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.to_train().validate()?;
        let d = &self.distill;
        let weight = |v: f64| v.is_finite() && v >= 0.0;
        let checks: [(bool, &str); 7] = [
            (weight(d.ce_weight), "distill.ce_weight must be >= 0"),
            (weight(d.kl_weight), "distill.kl_weight must be >= 0"),
            (
                weight(d.relation_weight),
                "distill.relation_weight must be >= 0",
            ),
            (
                weight(d.hidden_weight),
                "distill.hidden_weight must be >= 0",
            ),
            (
                d.ce_weight + d.kl_weight + d.relation_weight + d.hidden_weight > 0.0,
                "at least one of distill.{ce,kl,relation,hidden}_weight must be positive",
            ),
            (
                d.temperature.is_finite() && d.temperature > 0.0,
                "distill.temperature must be positive",
            ),
            (
                d.relation_heads > 0,
                "distill.relation_heads must be at least 1",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, msg)) => Err(msg.to_string()),
            None => Ok(()),
        }
    }

    /// The training config the loop runs: the student as `model` (its shape is supplied by
    /// the objective when it derives from the teacher), the teacher's tokenizer.
    pub fn to_train(&self) -> TrainConfig {
        TrainConfig {
            model: ModelSection {
                config: self
                    .student
                    .config
                    .clone()
                    .unwrap_or_else(|| self.teacher.dir.clone()),
                quantize: Some(true),
                init_from: None,
                quant_warmup_steps: self.student.quant_warmup_steps,
                init_std: self.student.init_std,
            },
            data: DataSection {
                tokenizer: Some(self.teacher.dir.join("tokenizer.json")),
                ..self.data.clone()
            },
            train: self.train.clone(),
            run: self.run.clone(),
        }
    }

    /// The config as TOML-compatible JSON (saved in the run directory).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[teacher]
dir = "t"
[data]
corpus = "c.txt"
"#;

    #[test]
    fn defaults_overrides_and_the_training_config() {
        let c = DistillConfig::parse(BASE, &[], "d").unwrap();
        assert_eq!(c.run.dir, PathBuf::from("runs/distill"));
        assert_eq!(c.student.init, Init::Teacher);
        let t = c.to_train();
        assert_eq!(t.model.config, PathBuf::from("t"));
        assert_eq!(t.data.tokenizer, Some(PathBuf::from("t/tokenizer.json")));
        let c = DistillConfig::parse(
            BASE,
            &[
                "distill.relation_weight=2".into(),
                "student.init=scratch".into(),
                "student.config=m.toml".into(),
                "run.dir=x".into(),
            ],
            "d",
        )
        .unwrap();
        assert_eq!(c.distill.relation_weight, 2.0);
        assert_eq!(c.student.init, Init::Scratch);
        assert_eq!(c.to_train().model.config, PathBuf::from("m.toml"));
        assert_eq!(c.run.dir, PathBuf::from("x"));
    }

    #[test]
    fn bad_values_name_the_field() {
        for (o, needle) in [
            ("distill.temperature=0", "distill.temperature"),
            ("distill.kl_weight=-1", "distill.kl_weight"),
            ("distill.relation_heads=0", "distill.relation_heads"),
            ("train.lr=-1", "train.lr"),
            ("student.init=random", "unknown variant"),
            ("distill.bogus=1", "bogus"),
        ] {
            let e = DistillConfig::parse(BASE, &[o.into()], "d.toml").unwrap_err();
            assert!(e.to_string().contains(needle), "{o}: {e}");
        }
        let none = [
            "distill.ce_weight=0".to_string(),
            "distill.kl_weight=0".to_string(),
        ];
        let e = DistillConfig::parse(BASE, &none, "d.toml").unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
    }
}
