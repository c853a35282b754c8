//! Token sampling: greedy, temperature, top-k, top-p, with a seeded RNG (same seed, same tokens).

use serde::{Deserialize, Serialize};

/// How the next token is chosen.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p` (1 = all).
    pub top_p: f32,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// SplitMix64.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Stateful sampler (owns the RNG of one generation).
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    /// New sampler.
    pub fn new(params: SamplingParams) -> Sampler {
        let rng = Rng::new(params.seed);
        Sampler { params, rng }
    }

    /// Picks a token from logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature <= 0.0 || self.params.top_k == 1 {
            return argmax(logits);
        }
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        // Descending logit, ascending index on ties: a total order, so the result is deterministic.
        idx.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        if self.params.top_k > 0 {
            idx.truncate(self.params.top_k);
        }
        let t = f64::from(self.params.temperature);
        let max = f64::from(logits[idx[0] as usize]);
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| ((f64::from(logits[i as usize]) - max) / t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.params.top_p < 1.0 {
            let mut cum = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= f64::from(self.params.top_p) {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            idx.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        let u = self.rng.next_f64();
        let mut cum = 0.0;
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if u < cum {
                return idx[i];
            }
        }
        idx[idx.len() - 1]
    }
}

/// Index of the largest logit (lowest index on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplingParams::default());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.5, 0.2, 2.0, 1.9];
        for seed in 0..20 {
            let mut s = Sampler::new(SamplingParams {
                temperature: 1.0,
                top_k: 1,
                top_p: 1.0,
                seed,
            });
            assert_eq!(s.sample(&logits), 2);
            let mut s = Sampler::new(SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.01,
                seed,
            });
            assert_eq!(s.sample(&logits), 2);
        }
    }

    #[test]
    fn top_k_restricts_and_temperature_spreads() {
        let logits = [1.0, 0.9, 0.8, -5.0, 0.7];
        let mut seen = [0usize; 5];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_k: 3,
            top_p: 1.0,
            seed: 3,
        });
        for _ in 0..600 {
            seen[s.sample(&logits) as usize] += 1;
        }
        assert_eq!(
            seen[3] + seen[4],
            0,
            "tokens outside the top 3 were drawn: {seen:?}"
        );
        assert!(seen[0] > 100 && seen[1] > 100 && seen[2] > 100, "{seen:?}");
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let params = SamplingParams {
            temperature: 0.8,
            top_k: 20,
            top_p: 0.9,
            seed: 42,
        };
        let (mut a, mut b) = (Sampler::new(params.clone()), Sampler::new(params));
        let xa: Vec<u32> = (0..100).map(|_| a.sample(&logits)).collect();
        let xb: Vec<u32> = (0..100).map(|_| b.sample(&logits)).collect();
        assert_eq!(xa, xb);
        assert!(
            xa.iter().any(|&t| t != xa[0]),
            "temperature sampling should vary"
        );
    }
}
