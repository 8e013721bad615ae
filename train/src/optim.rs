//! AdamW (decoupled weight decay, PyTorch's update), learning-rate schedules and global-norm
//! gradient clipping. The optimizer state is keyed by parameter name, so it is saved and
//! restored with the checkpoint exactly (see [`crate::checkpoint`]).

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::model::Transformer;
use crate::params::{HostTensor, MapByName, to_host};

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
        }
    }
}

/// AdamW with its moments by parameter name.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates applied so far (the bias-correction step).
    pub step: u64,
    moments: BTreeMap<String, (Tensor<1>, Tensor<1>)>,
}

/// Whether weight decay applies to a parameter: matrices (linear layers, embeddings, head),
/// not norm gains or biases.
pub fn decays(name: &str) -> bool {
    name.ends_with(".weight") && !name.contains("norm")
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> AdamW {
        AdamW {
            config,
            step: 0,
            moments: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient in `grads`:
    /// `p ← p − lr·wd·p` (matrices only), then the bias-corrected Adam step.
    pub fn update(
        &mut self,
        model: Transformer,
        mut grads: BTreeMap<String, Tensor<1>>,
        lr: f64,
        weight_decay: f64,
    ) -> Transformer {
        self.step += 1;
        let AdamWConfig { beta1, beta2, eps } = self.config;
        let c1 = 1.0 - beta1.powi(self.step as i32);
        let c2 = 1.0 - beta2.powi(self.step as i32);
        let moments = &mut self.moments;
        let mut mapper = MapByName::new(|name: &str, p: Tensor<1>| {
            let g = grads.remove(name)?;
            let (m, v) = match moments.remove(name) {
                Some((m, v)) => (
                    m.mul_scalar(beta1) + g.clone().mul_scalar(1.0 - beta1),
                    v.mul_scalar(beta2) + g.square().mul_scalar(1.0 - beta2),
                ),
                None => (
                    g.clone().mul_scalar(1.0 - beta1),
                    g.square().mul_scalar(1.0 - beta2),
                ),
            };
            let p = if decays(name) && weight_decay > 0.0 {
                p.mul_scalar(1.0 - lr * weight_decay)
            } else {
                p
            };
            let denom = v.clone().div_scalar(c2).sqrt().add_scalar(eps);
            let p = p - m.clone().div_scalar(c1).div(denom).mul_scalar(lr);
            moments.insert(name.to_string(), (m, v));
            Some(p.detach())
        });
        model.map(&mut mapper)
    }

    /// The moments on the host, as `exp_avg.NAME` / `exp_avg_sq.NAME`.
    pub fn state(&self) -> Vec<(String, HostTensor)> {
        let mut out = Vec::with_capacity(self.moments.len() * 2);
        for (name, (m, v)) in &self.moments {
            out.push((format!("exp_avg.{name}"), to_host(m.clone())));
            out.push((format!("exp_avg_sq.{name}"), to_host(v.clone())));
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`].
    pub fn restore(
        &mut self,
        step: u64,
        tensors: &BTreeMap<String, HostTensor>,
        device: &burn::tensor::Device,
    ) {
        self.step = step;
        self.moments.clear();
        for (key, m) in tensors {
            let Some(name) = key.strip_prefix("exp_avg.") else {
                continue;
            };
            let Some(v) = tensors.get(&format!("exp_avg_sq.{name}")) else {
                continue;
            };
            let t = |h: &HostTensor| {
                Tensor::<1>::from_data(
                    burn::tensor::TensorData::new(h.data.clone(), [h.data.len()]),
                    device,
                )
            };
            self.moments.insert(name.to_string(), (t(m), t(v)));
        }
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm` (0: no clipping).
/// Returns the norm before clipping.
pub fn clip_global_norm(grads: &mut BTreeMap<String, Tensor<1>>, max_norm: f64) -> f64 {
    let Some(total) = grads
        .values()
        .map(|g| g.clone().square().sum())
        .reduce(|a, b| a + b)
    else {
        return 0.0;
    };
    let norm = (total.into_scalar::<f32>() as f64).sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let k = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = g.clone().mul_scalar(k);
        }
    }
    norm
}

/// Learning-rate (and weight-decay) schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Linear warm-up, then cosine decay to `min_lr_ratio · lr`.
    Cosine,
    /// BitNet b1.58's two stages: linear warm-up, then linear decay from `lr`; at
    /// `stage2_at · steps` the learning rate drops to `stage2_lr_ratio · lr` (decaying
    /// linearly to `min_lr_ratio · lr`) and weight decay drops to 0.
    TwoStage,
}

/// Everything the schedule needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleParams {
    pub kind: Schedule,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    pub steps: u64,
    pub min_lr_ratio: f64,
    pub stage2_at: f64,
    pub stage2_lr_ratio: f64,
}

impl ScheduleParams {
    /// Learning rate and weight decay of update `step` (0-based).
    pub fn at(&self, step: u64) -> (f64, f64) {
        let s = step as f64;
        if step < self.warmup_steps {
            return (
                self.lr * (s + 1.0) / self.warmup_steps as f64,
                self.weight_decay,
            );
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((s - self.warmup_steps as f64) / span).clamp(0.0, 1.0);
        let min = self.min_lr_ratio * self.lr;
        match self.kind {
            Schedule::Cosine => {
                let c = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                (min + (self.lr - min) * c, self.weight_decay)
            }
            Schedule::TwoStage => {
                let boundary = (self.stage2_at * self.steps as f64).round() as u64;
                if step < boundary {
                    let b = boundary.saturating_sub(self.warmup_steps).max(1) as f64;
                    let f = (s - self.warmup_steps as f64) / b;
                    // Stage 1 decays linearly to half its peak at the boundary.
                    (self.lr * (1.0 - 0.5 * f), self.weight_decay)
                } else {
                    let hi = self.stage2_lr_ratio * self.lr;
                    let rest = self.steps.saturating_sub(boundary).max(1) as f64;
                    let f = ((s - boundary as f64) / rest).clamp(0.0, 1.0);
                    (hi + (min.min(hi) - hi) * f, 0.0)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kind: Schedule) -> ScheduleParams {
        ScheduleParams {
            kind,
            lr: 1e-3,
            weight_decay: 0.1,
            warmup_steps: 10,
            steps: 100,
            min_lr_ratio: 0.1,
            stage2_at: 0.5,
            stage2_lr_ratio: 0.3,
        }
    }

    #[test]
    fn cosine_warms_up_peaks_and_ends_at_the_floor() {
        let p = params(Schedule::Cosine);
        assert!((p.at(0).0 - 1e-4).abs() < 1e-12);
        assert!((p.at(9).0 - 1e-3).abs() < 1e-12);
        assert!((p.at(10).0 - 1e-3).abs() < 1e-12);
        assert!((p.at(100).0 - 1e-4).abs() < 1e-12);
        let mid = p.at(55).0;
        assert!((mid - 5.5e-4).abs() < 1e-9, "{mid}");
        assert!((1..100).all(|s| p.at(s).1 == 0.1));
    }

    #[test]
    fn two_stage_drops_lr_and_weight_decay_at_the_boundary() {
        let p = params(Schedule::TwoStage);
        let (before, wd_before) = p.at(49);
        let (after, wd_after) = p.at(50);
        assert!(before > 5e-4 && wd_before == 0.1);
        assert!((after - 3e-4).abs() < 1e-12 && wd_after == 0.0);
        assert!((p.at(100).0 - 1e-4).abs() < 1e-12);
    }

    #[test]
    fn only_matrices_decay() {
        assert!(decays("model.layers.0.self_attn.q_proj.weight"));
        assert!(decays("model.embed_tokens.weight"));
        assert!(!decays("model.layers.0.input_layernorm.weight"));
        assert!(!decays("model.layers.0.self_attn.attn_sub_norm.weight"));
        assert!(!decays("model.layers.0.self_attn.q_proj.bias"));
    }
}
