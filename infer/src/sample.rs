//! Choosing the next token from logits: greedy, or temperature with top-k / top-p, a seed, and
//! a repetition penalty (as in transformers' `RepetitionPenaltyLogitsProcessor`).

use tern_pack::init::SplitMix64;

use crate::error::{Error, Result};

/// Sampling parameters. `temperature == 0` means greedy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1: all).
    pub top_p: f32,
    /// Divide positive (multiply negative) logits of tokens already seen by this (1: off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks the ranges, naming the bad option.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Usage(m));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(format!("--temperature {} must be >= 0", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("--top-p {} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!(
                "--repetition-penalty {} must be > 0",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// A sampler with its own random stream.
pub struct Sampler {
    params: SamplingParams,
    rng: SplitMix64,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        Ok(Sampler {
            params,
            rng: SplitMix64::new(params.seed),
        })
    }

    /// Whether [`Self::sample`] is plain argmax (greedy, no repetition penalty), so a decoder
    /// may pick the token itself without returning logits.
    pub fn is_argmax(&self) -> bool {
        self.params.temperature == 0.0 && self.params.repetition_penalty == 1.0
    }

    /// The next token given `logits` (`[vocab]`, modified in place) and the tokens so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = self.params;
        if p.repetition_penalty != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in history {
                if let Some(s) = seen.get_mut(t as usize) {
                    *s = true;
                }
            }
            for (l, _) in logits.iter_mut().zip(&seen).filter(|(_, s)| **s) {
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
        }
        if p.temperature == 0.0 {
            return argmax(logits);
        }
        // Candidates sorted by logit (descending; ties by id), cut by top-k.
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if p.top_k > 0 && p.top_k < idx.len() {
            idx.select_nth_unstable_by(p.top_k - 1, by_logit);
            idx.truncate(p.top_k);
        }
        idx.sort_unstable_by(by_logit);
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| (((logits[i as usize] - max) / p.temperature) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|q| *q /= total);
        if p.top_p < 1.0 {
            let mut cum = 0.0;
            let keep = probs
                .iter()
                .position(|q| {
                    cum += q;
                    cum >= p.top_p as f64
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let total: f64 = probs.iter().sum();
        let mut r = self.rng.next_unit() * total;
        for (i, q) in probs.iter().enumerate() {
            if r < *q {
                return idx[i];
            }
            r -= q;
        }
        idx[probs.len() - 1]
    }
}

/// Index of the largest logit (the first of equals, like `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&mut [0.1, 3.0, 3.0, -1.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_follows_transformers() {
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut s = Sampler::new(p).unwrap();
        // Token 0 (seen, positive) 3.0 -> 1.5 loses to token 1 (2.0).
        let mut logits = [3.0, 2.0, -1.0];
        assert_eq!(s.sample(&mut logits, &[0, 2]), 1);
        assert_eq!(logits, [1.5, 2.0, -2.0]);
    }

    #[test]
    fn top_k_one_is_greedy_and_seeds_repeat() {
        let logits = [0.5f32, 2.0, 1.9, -3.0, 1.0];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        let mut s = Sampler::new(p).unwrap();
        assert_eq!(s.sample(&mut logits.clone(), &[]), 1);
        let p = SamplingParams {
            temperature: 1.0,
            seed: 42,
            ..Default::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(SamplingParams { seed, ..p }).unwrap();
            (0..64)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        let d = draw(42);
        assert!(d.iter().all(|&t| t < 5));
        assert!(
            d.iter().any(|&t| t != d[0]),
            "temperature 1 should vary: {d:?}"
        );
    }

    #[test]
    fn top_p_keeps_the_smallest_nucleus() {
        // Probabilities ~ [0.665, 0.245, 0.09]: top_p 0.5 keeps only the first.
        let logits = [2.0f32, 1.0, 0.0];
        let p = SamplingParams {
            temperature: 1.0,
            top_p: 0.5,
            seed: 7,
            ..Default::default()
        };
        let mut s = Sampler::new(p).unwrap();
        for _ in 0..32 {
            assert_eq!(s.sample(&mut logits.clone(), &[]), 0);
        }
    }

    #[test]
    fn bad_parameters_are_named() {
        let p = SamplingParams {
            top_p: 0.0,
            ..Default::default()
        };
        assert!(
            Sampler::new(p)
                .err()
                .unwrap()
                .to_string()
                .contains("--top-p")
        );
    }
}
