//! Epoch settlement (paper eq. 5): `R_i = floor(R_pool · T_i·C_i / Σ_j T_j·C_j)`.
//!
//! Integer math throughout: each share is an exact floor through a 256-bit intermediate, and
//! what the floors leave over is the remainder, carried or burned by [`RemainderPolicy`],
//! never minted: `Σ R_i + remainder = R_pool` exactly.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::error::{ComputeError, ComputeResult};
use crate::math::mul_div;
use crate::params::{ComputeParams, RemainderPolicy};
use crate::tier::Tier;

/// A worker's identity in settlement (its `node-…` id).
pub type WorkerId = String;

/// The outcome of one epoch's settlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// Reward per worker; workers with a zero reward are left out.
    pub rewards: BTreeMap<WorkerId, u128>,
    /// `pool − Σ rewards`: the rounding remainder, or the whole pool when nobody contributed.
    pub remainder: u128,
}

/// Where the remainder goes under a [`RemainderPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemainderDisposition {
    /// Added to the next epoch's pool (already minted: does not count against the daily cap).
    pub carry: u128,
    /// Destroyed: total supply shrinks by this much.
    pub burn: u128,
}

impl Settlement {
    /// Splits the remainder as `policy` says; `carry + burn == remainder`.
    pub fn dispose_remainder(&self, policy: RemainderPolicy) -> RemainderDisposition {
        match policy {
            RemainderPolicy::Carry => RemainderDisposition {
                carry: self.remainder,
                burn: 0,
            },
            RemainderPolicy::Burn => RemainderDisposition {
                carry: 0,
                burn: self.remainder,
            },
        }
    }
}

/// Distributes `pool` over the workers in proportion to `T_i · C_i`.
///
/// `contributions` maps each worker to its tier and verified contribution score. Errors only
/// when `Σ T_j·C_j` does not fit in u128 (scores that large are refused, not wrapped).
pub fn settle_epoch(
    pool: u128,
    contributions: &BTreeMap<WorkerId, (Tier, u128)>,
    params: &ComputeParams,
) -> ComputeResult<Settlement> {
    let mut weights: Vec<(&WorkerId, u128)> = Vec::with_capacity(contributions.len());
    let mut total_weight: u128 = 0;
    for (worker, &(tier, contribution)) in contributions {
        let multiplier = tier.multiplier_ppm(params);
        let weight = contribution
            .checked_mul(u128::from(multiplier))
            .ok_or_else(|| {
                ComputeError::Overflow(format!(
                    "weight of {worker}: expected contribution · multiplier below 2^128, got {contribution} · {multiplier}"
                ))
            })?;
        total_weight = total_weight.checked_add(weight).ok_or_else(|| {
            ComputeError::Overflow(format!(
                "total weight: expected Σ T·C below 2^128, got more after adding {worker}"
            ))
        })?;
        weights.push((worker, weight));
    }
    if total_weight == 0 {
        return Ok(Settlement {
            rewards: BTreeMap::new(),
            remainder: pool,
        });
    }
    let mut rewards = BTreeMap::new();
    let mut distributed: u128 = 0;
    for (worker, weight) in weights {
        // weight <= total_weight, so the share is <= pool: no overflow, and Σ shares <= pool.
        let reward = mul_div(pool, weight, total_weight)?;
        if reward > 0 {
            distributed = distributed.checked_add(reward).ok_or_else(|| {
                ComputeError::Overflow(format!(
                    "expected Σ rewards <= pool {pool}, got more after {worker}"
                ))
            })?;
            rewards.insert(worker.clone(), reward);
        }
    }
    let remainder = pool.checked_sub(distributed).ok_or_else(|| {
        ComputeError::Overflow(format!(
            "expected Σ rewards <= pool {pool}, got {distributed}"
        ))
    })?;
    Ok(Settlement { rewards, remainder })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tier() -> impl Strategy<Value = Tier> {
        prop::sample::select(Tier::ALL.to_vec())
    }

    fn contributions() -> impl Strategy<Value = BTreeMap<WorkerId, (Tier, u128)>> {
        prop::collection::btree_map(
            "node-[0-9a-f]{4}",
            (
                tier(),
                prop_oneof![Just(0u128), 0u128..1_000, 0u128..=1u128 << 100],
            ),
            0..40,
        )
    }

    fn total(s: &Settlement) -> u128 {
        s.rewards.values().sum::<u128>() + s.remainder
    }

    #[test]
    fn shares_follow_tier_times_contribution() {
        let p = ComputeParams::default();
        let c: BTreeMap<WorkerId, (Tier, u128)> = [
            ("node-a".to_string(), (Tier::Orchestrator, 10)),
            ("node-b".to_string(), (Tier::GpuCompute, 30)),
            ("node-c".to_string(), (Tier::MobileLight, 0)),
        ]
        .into();
        // Weights 30 : 30 → half each of 1001, one unit left over.
        let s = settle_epoch(1001, &c, &p).expect("test value");
        assert_eq!(s.rewards.get("node-a"), Some(&500));
        assert_eq!(s.rewards.get("node-b"), Some(&500));
        assert_eq!(s.rewards.get("node-c"), None);
        assert_eq!(s.remainder, 1);
        assert_eq!(s.dispose_remainder(RemainderPolicy::Burn).burn, 1);
        assert_eq!(s.dispose_remainder(RemainderPolicy::Carry).carry, 1);
    }

    #[test]
    fn nobody_contributing_leaves_the_whole_pool_as_remainder() {
        let p = ComputeParams::default();
        let c: BTreeMap<WorkerId, (Tier, u128)> =
            [("node-a".to_string(), (Tier::GpuCompute, 0))].into();
        for contributions in [BTreeMap::new(), c] {
            let s = settle_epoch(u128::MAX, &contributions, &p).expect("test value");
            assert!(s.rewards.is_empty());
            assert_eq!(s.remainder, u128::MAX);
        }
    }

    #[test]
    fn an_overflowing_total_weight_is_refused() {
        let p = ComputeParams::default();
        let c: BTreeMap<WorkerId, (Tier, u128)> = [
            (
                "node-a".to_string(),
                (Tier::GpuCompute, u128::MAX / 1_000_000),
            ),
            (
                "node-b".to_string(),
                (Tier::GpuCompute, u128::MAX / 1_000_000),
            ),
        ]
        .into();
        assert!(matches!(
            settle_epoch(1, &c, &p),
            Err(ComputeError::Overflow(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn rewards_plus_remainder_is_exactly_the_pool(
            pool in prop_oneof![any::<u128>(), 0u128..1_000_000],
            c in contributions(),
        ) {
            let s = settle_epoch(pool, &c, &ComputeParams::default()).expect("test value");
            prop_assert_eq!(total(&s), pool);
            // Each floor loses less than one unit, so with any weight at all the remainder is
            // below the number of weighted workers; with none, it is the whole pool.
            let weighted = c.values().filter(|(_, contribution)| *contribution > 0).count() as u128;
            if weighted > 0 {
                prop_assert!(s.remainder < weighted, "remainder {} with {} weighted", s.remainder, weighted);
            } else {
                prop_assert_eq!(s.remainder, pool);
            }
            prop_assert!(s.rewards.keys().all(|k| c.contains_key(k)));
        }

        #[test]
        fn splitting_an_identity_does_not_pay(
            pool in prop_oneof![any::<u128>(), 0u128..1_000_000_000],
            others in contributions(),
            t in tier(),
            parts in prop::collection::vec(0u128..=1u128 << 90, 1..8),
        ) {
            let p = ComputeParams::default();
            let whole: u128 = parts.iter().sum();
            let k = parts.len() as u128;

            let mut unsplit = others.clone();
            unsplit.insert("sybil".to_string(), (t, whole));
            let mut split = others.clone();
            for (i, part) in parts.iter().enumerate() {
                split.insert(format!("sybil-{i}"), (t, *part));
            }
            let a = settle_epoch(pool, &unsplit, &p).expect("test value");
            let b = settle_epoch(pool, &split, &p).expect("test value");

            let alone = a.rewards.get("sybil").copied().unwrap_or(0);
            let together: u128 = (0..parts.len())
                .map(|i| b.rewards.get(&format!("sybil-{i}")).copied().unwrap_or(0))
                .sum();
            // Splitting never gains, and loses at most k-1 units of rounding.
            prop_assert!(together <= alone, "split {} > unsplit {}", together, alone);
            prop_assert!(alone - together < k, "lost {} with k = {}", alone - together, k);
            // Σ T·C is the same either way, so every other worker is paid exactly the same.
            for id in others.keys() {
                prop_assert_eq!(a.rewards.get(id), b.rewards.get(id));
            }
        }

        #[test]
        fn a_bigger_contribution_never_earns_less(
            pool in any::<u128>(),
            others in contributions(),
            t in tier(),
            c in 0u128..=1u128 << 90,
            extra in 0u128..=1u128 << 90,
        ) {
            let p = ComputeParams::default();
            let mut small = others.clone();
            small.insert("me".to_string(), (t, c));
            let mut big = others;
            big.insert("me".to_string(), (t, c + extra));
            let r = |s: &Settlement| s.rewards.get("me").copied().unwrap_or(0);
            prop_assert!(r(&settle_epoch(pool, &big, &p).expect("test value")) >= r(&settle_epoch(pool, &small, &p).expect("test value")));
        }
    }
}
