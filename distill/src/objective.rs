//! The distillation objective: the student's loss is a weighted sum of cross-entropy on the
//! data, KL to the teacher's logits, relation distillation and hidden-state MSE, with the
//! teacher's forward on the same batch in the same step.

use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor};
use tern_pack::spec::{HfConfig, ModelSpec, ScaleKind, TernQuantConfig, WeightKind};
use tern_train::config::TrainConfig;
use tern_train::error::{Result, TrainError};
use tern_train::model::{QuantMode, Taps, Transformer, cross_entropy};
use tern_train::params::{self, HostTensor};
use tern_train::run::{Batch, Objective, Prepared};

use crate::config::{DistillConfig, Init};
use crate::losses::{hidden_mse, kl_div, relation_kl};
use crate::teacher::Teacher;

/// `tern distill`'s [`Objective`].
pub struct Distill {
    cfg: DistillConfig,
    teacher: Teacher,
    /// The teacher's device (plain, no autodiff).
    device: Device,
    /// Resolved (teacher, student) layers of the relation and hidden terms.
    layers: (usize, usize),
}

/// The teacher's shape made ternary: the student of `student.config` = absent.
pub fn student_shape(teacher: &HfConfig, cfg: &DistillConfig) -> HfConfig {
    let mut c = teacher.clone();
    let bitnet = c.model_type == "bitnet";
    c.tern = Some(TernQuantConfig {
        weights: WeightKind::Ternary,
        weight_scale: ScaleKind::Tensor,
        weight_shards: None,
        activations: cfg.student.activations,
        sub_norms: (!bitnet && cfg.student.sub_norms).then_some(true),
    });
    c.extra.remove("quantization_config");
    c
}

/// A layer index of a config (negative: from the end).
fn layer(index: i64, layers: usize, field: &str) -> Result<usize> {
    let i = if index < 0 {
        layers as i64 + index
    } else {
        index
    };
    if i < 0 || i >= layers as i64 {
        return Err(TrainError::Config(format!(
            "{field} = {index} is outside a model of {layers} layers"
        )));
    }
    Ok(i as usize)
}

impl Distill {
    pub fn new(cfg: DistillConfig, teacher: Teacher, device: Device) -> Distill {
        Distill {
            cfg,
            teacher,
            device,
            layers: (0, 0),
        }
    }

    fn taps(&self, student: bool) -> Taps {
        let d = &self.cfg.distill;
        let l = if student {
            self.layers.1
        } else {
            self.layers.0
        };
        Taps {
            hidden: (d.hidden_weight > 0.0).then_some(l),
            qkv: (d.relation_weight > 0.0).then_some(l),
        }
    }

    /// Checks that the student can learn from this teacher: same vocabulary and tokenizer,
    /// layers in range, widths that the relation heads divide, equal widths for hidden MSE.
    fn check_compatible(&mut self, spec: &ModelSpec, data: &Prepared) -> Result<()> {
        let t = &self.teacher;
        let tdir = t.dir.display();
        if spec.vocab_size != t.spec.vocab_size {
            return Err(TrainError::Teacher(format!(
                "the teacher ({tdir}) has vocab_size {} but the student has {}: the student \
                 must share the teacher's vocabulary and tokenizer",
                t.spec.vocab_size, spec.vocab_size
            )));
        }
        if data.tokenizer.get_vocab(true) != t.tokenizer.get_vocab(true) {
            return Err(TrainError::Teacher(format!(
                "the run's tokenizer differs from the teacher's ({tdir}/tokenizer.json); the \
                 student must use the teacher's tokenizer (start a new run directory)"
            )));
        }
        let d = &self.cfg.distill;
        self.layers = (
            layer(d.teacher_layer, t.spec.num_layers, "distill.teacher_layer")?,
            layer(d.student_layer, spec.num_layers, "distill.student_layer")?,
        );
        if d.relation_weight > 0.0 {
            let widths = |s: &ModelSpec| {
                [
                    s.num_heads * s.head_dim,
                    s.num_kv_heads * s.head_dim,
                    s.num_kv_heads * s.head_dim,
                ]
            };
            for (who, s) in [("teacher", &t.spec), ("student", spec)] {
                if let Some(w) = widths(s).iter().find(|w| *w % d.relation_heads != 0) {
                    return Err(TrainError::Config(format!(
                        "distill.relation_heads = {} does not divide the {who}'s q/k/v width {w}",
                        d.relation_heads
                    )));
                }
            }
        }
        if d.hidden_weight > 0.0 && spec.hidden_size != t.spec.hidden_size {
            return Err(TrainError::Config(format!(
                "distill.hidden_weight needs equal widths; the teacher's hidden_size is {} and \
                 the student's {}",
                t.spec.hidden_size, spec.hidden_size
            )));
        }
        Ok(())
    }
}

impl Objective for Distill {
    fn shape(&self, cfg: &TrainConfig) -> Result<HfConfig> {
        match &self.cfg.student.config {
            Some(_) => Ok(HfConfig::load(&cfg.model.config)?),
            None => Ok(student_shape(&self.teacher.config, &self.cfg)),
        }
    }

    fn check(&mut self, data: &Prepared) -> Result<()> {
        let spec = data.spec.clone();
        self.check_compatible(&spec, data)
    }

    fn initial_weights(
        &self,
        _spec: &ModelSpec,
    ) -> Result<Option<(BTreeMap<String, HostTensor>, String)>> {
        if self.cfg.student.init != Init::Teacher {
            return Ok(None);
        }
        let tensors = params::collect(&self.teacher.model).into_iter().collect();
        Ok(Some((
            tensors,
            format!("the teacher {}", self.teacher.dir.display()),
        )))
    }

    fn loss(
        &self,
        model: &Transformer,
        batch: &Batch,
        q: QuantMode,
    ) -> (Tensor<1>, Vec<(String, f64)>) {
        let d = &self.cfg.distill;
        let device = model.model.embed_tokens.weight.device();
        let student = model.forward_with(batch.tokens(&device), q, self.taps(true));
        let [b, t] = batch.shape;
        let mut terms: Vec<(&str, f64, Tensor<1>)> = Vec::new();
        if d.ce_weight > 0.0 {
            let ce = cross_entropy(student.logits.clone(), batch.target_ids(&device));
            terms.push(("ce", d.ce_weight, ce));
        }
        // Cross-entropy alone (QAT from the teacher's weights) needs no teacher forward.
        if d.kl_weight > 0.0 || d.relation_weight > 0.0 || d.hidden_weight > 0.0 {
            let teacher = self
                .teacher
                .forward(batch.tokens(&self.device), self.taps(false));
            if d.kl_weight > 0.0 {
                let kl = kl_div(student.logits, teacher.logits, d.temperature);
                terms.push(("kl", d.kl_weight, kl));
            }
            if let (Some(s), Some(tq)) = (&student.qkv, &teacher.qkv) {
                let rel = relation_kl(s, tq, b, t, d.relation_heads);
                terms.push(("rel", d.relation_weight, rel));
            }
            if let (Some(s), Some(th)) = (student.hidden, teacher.hidden) {
                terms.push(("mse", d.hidden_weight, hidden_mse(s, th)));
            }
        }
        let mut parts = Vec::with_capacity(terms.len());
        let mut total: Option<Tensor<1>> = None;
        for (name, w, term) in terms {
            parts.push((name.to_string(), term.clone().into_scalar::<f32>() as f64));
            let weighted = term.mul_scalar(w);
            total = Some(match total {
                None => weighted,
                Some(acc) => acc + weighted,
            });
        }
        (total.expect("validate: one weight is positive"), parts)
    }

    fn eval_metrics(&self, logits: Tensor<2>, batch: &Batch) -> Vec<(String, f64)> {
        let teacher = self
            .teacher
            .forward(batch.tokens(&self.device), Taps::default())
            .logits;
        let kl = kl_div(logits, teacher.clone(), 1.0).into_scalar::<f32>() as f64;
        let ce = cross_entropy(teacher, batch.target_ids(&self.device)).into_scalar::<f32>() as f64;
        vec![
            ("kl_to_teacher".to_string(), kl),
            ("teacher_loss".to_string(), ce),
        ]
    }

    fn describe(&self, _quantize: bool) -> String {
        let d = &self.cfg.distill;
        let terms: Vec<String> = [
            ("ce", d.ce_weight),
            ("kl", d.kl_weight),
            ("relation", d.relation_weight),
            ("hidden", d.hidden_weight),
        ]
        .iter()
        .filter(|(_, w)| *w > 0.0)
        .map(|(n, w)| format!("{n}×{w}"))
        .collect();
        format!(
            "ternary distillation from {} ({}, τ = {}, student init: {})",
            self.teacher.dir.display(),
            terms.join(" + "),
            d.temperature,
            match self.cfg.student.init {
                Init::Teacher => "teacher",
                Init::Scratch => "scratch",
            }
        )
    }
}
