//! Incentive compatibility (paper §13.4, eq. 6): cheating must cost more than it gains,
//!
//! ```text
//! s · B_i  +  Σ_{t≥1} γ^t · R_i  >  G        i.e.   s · B_i + γ · R_i / (1 − γ) > G
//! ```
//!
//! with `s` the slashing rate, `B_i` the bond, `R_i` the honest per-epoch reward forfeited
//! after slashing and exclusion, `γ ∈ [0, 1)` the node's per-epoch discount factor, and `G`
//! the one-time gain of the attack. Used to check a parameter set, not by consensus.

use crate::error::{ComputeError, ComputeResult};
use crate::math::{mul_div, PPM};

/// The cost of an attack in umag, `floor(s·B) + floor(γ·R / (1 − γ))`, saturating at u128::MAX.
///
/// Both terms are rounded down, so the cost is never overstated: if it exceeds a gain, the
/// exact inequality holds too.
pub fn attack_cost(
    bond: u128,
    slash_rate_ppm: u64,
    reward_per_epoch: u128,
    discount_ppm: u64,
) -> ComputeResult<u128> {
    if slash_rate_ppm > PPM {
        return Err(ComputeError::InvalidParams(format!(
            "slash_rate_ppm: expected <= {PPM}, got {slash_rate_ppm}"
        )));
    }
    // γ = 1 makes the forfeited stream infinite: not a planning horizon, a modelling error.
    let one_minus_discount = PPM
        .checked_sub(discount_ppm)
        .filter(|&d| d > 0)
        .ok_or_else(|| {
            ComputeError::InvalidParams(format!(
                "discount_ppm: expected < {PPM}, got {discount_ppm}"
            ))
        })?;
    let bond_loss = mul_div(bond, slash_rate_ppm.into(), PPM.into())?;
    // Over 2^128 forfeited: the saturated value still exceeds any u128 gain but MAX.
    let forfeited = mul_div(
        reward_per_epoch,
        discount_ppm.into(),
        one_minus_discount.into(),
    )
    .unwrap_or(u128::MAX);
    Ok(bond_loss.saturating_add(forfeited))
}

/// Whether eq. 6 holds: the attack costs strictly more than `attack_gain`.
pub fn incentive_compatible(
    bond: u128,
    slash_rate_ppm: u64,
    reward_per_epoch: u128,
    discount_ppm: u64,
    attack_gain: u128,
) -> ComputeResult<bool> {
    Ok(attack_cost(bond, slash_rate_ppm, reward_per_epoch, discount_ppm)? > attack_gain)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::emission::EmissionSchedule;
    use crate::params::ComputeParams;
    use crate::settlement::{settle_epoch, WorkerId};
    use crate::slashing::Offense;
    use crate::tier::Tier;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// 0.99999 per 10-minute epoch ≈ a 41 % yearly discount: a very impatient node.
    const IMPATIENT_DISCOUNT_PPM: u64 = 999_990;

    /// The reward pool of a steady 10-minute epoch under `params`.
    fn steady_epoch_pool(params: &ComputeParams) -> u128 {
        let start = 1_700_006_400; // a UTC midnight
        let mut schedule = EmissionSchedule::new(start);
        schedule
            .pool_for_epoch(start + params.epoch_length_secs, params)
            .expect("test value")
    }

    /// The honest reward of a node of `tier` with contribution 1 among `n` gpu_compute peers
    /// of contribution 1, computed by settlement itself.
    fn honest_reward(tier: Tier, n: usize, pool: u128, params: &ComputeParams) -> u128 {
        let mut c: BTreeMap<WorkerId, (Tier, u128)> = (0..n)
            .map(|i| (format!("peer-{i:05}"), (Tier::GpuCompute, 1)))
            .collect();
        c.insert("me".into(), (tier, 1));
        settle_epoch(pool, &c, params)
            .expect("test value")
            .rewards
            .get("me")
            .copied()
            .unwrap_or(0)
    }

    #[test]
    fn default_params_deter_every_offense_in_every_tier_of_a_thousand_node_network() {
        // Worst-case gain: one fabricated claim captures a whole epoch's pool.
        let p = ComputeParams::default();
        let pool = steady_epoch_pool(&p);
        assert_eq!(pool, 694_444_444);
        for tier in Tier::ALL {
            let reward = honest_reward(tier, 1_000, pool, &p);
            for offense in Offense::ALL {
                let rate = p.slash_rate_ppm.get(offense);
                let bond = tier.min_bond(&p);
                let cost =
                    attack_cost(bond, rate, reward, IMPATIENT_DISCOUNT_PPM).expect("test value");
                assert!(
                    incentive_compatible(bond, rate, reward, IMPATIENT_DISCOUNT_PPM, pool)
                        .expect("test value"),
                    "{tier}/{offense}: cost {cost} <= gain {pool}"
                );
            }
        }
    }

    #[test]
    fn a_myopic_node_is_deterred_by_the_bond_alone_only_as_orchestrator() {
        // With γ = 0 only s·B counts: the minimum bonds at the lowest rate (0.1) cover a
        // whole epoch's pool only for orchestrators; the other tiers rely on future rewards.
        let p = ComputeParams::default();
        let pool = steady_epoch_pool(&p);
        let rate = p.slash_rate_ppm.get(Offense::MissedReveal);
        let deterred: Vec<Tier> = Tier::ALL
            .into_iter()
            .filter(|t| {
                incentive_compatible(t.min_bond(&p), rate, u128::MAX, 0, pool).expect("test value")
            })
            .collect();
        assert_eq!(deterred, vec![Tier::Orchestrator]);
    }

    #[test]
    fn the_forfeited_stream_starts_at_t_equals_one() {
        // γ = 0.5: Σ_{t≥1} 0.5^t · R = R, not 2R.
        assert_eq!(attack_cost(0, 100_000, 1_000, 500_000), Ok(1_000));
        assert_eq!(attack_cost(1_000, 250_000, 0, 0), Ok(250));
        assert!(attack_cost(1, 100_000, 1, PPM).is_err());
        assert!(attack_cost(1, PPM + 1, 1, 0).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_reported_compatibility_holds_exactly(
            bond in any::<u32>(),
            rate in 100_000u64..=PPM,
            reward in any::<u32>(),
            discount in 0u64..PPM,
            gain in any::<u32>(),
        ) {
            let (b, r, g) = (u128::from(bond), u128::from(reward), u128::from(gain));
            let (s, y, one) = (u128::from(rate), u128::from(discount), u128::from(PPM));
            // s·B/1e6 + γR/(1e6−γ) > G, multiplied through by 1e6·(1e6−γ): exact in u128 here.
            let exact = s * b * (one - y) + one * y * r > g * one * (one - y);
            let reported = incentive_compatible(b, rate, r, discount, g).expect("test value");
            prop_assert!(!reported || exact);
        }

        #[test]
        fn cost_grows_with_bond_reward_and_patience(
            bond in any::<u128>(),
            rate in 100_000u64..=PPM,
            reward in any::<u128>(),
            d1 in 0u64..PPM,
            d2 in 0u64..PPM,
        ) {
            let (lo, hi) = (d1.min(d2), d1.max(d2));
            let c = attack_cost(bond / 2, rate, reward / 2, lo).expect("test value");
            prop_assert!(attack_cost(bond, rate, reward / 2, lo).expect("test value") >= c);
            prop_assert!(attack_cost(bond / 2, rate, reward, lo).expect("test value") >= c);
            prop_assert!(attack_cost(bond / 2, rate, reward / 2, hi).expect("test value") >= c);
        }
    }
}
