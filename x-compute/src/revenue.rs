//! x402 API revenue: a paid inference call's amount split between the model's
//! contributors (by weight), the serving node, the treasury and burn, per params.
//! Integer math; every unit is accounted for (rounding dust goes to the treasury).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ComputeError, ComputeResult};
use crate::math::mul_div;

/// 1.0 in parts per million, as u128 for the products here.
const PPM: u128 = crate::math::PPM as u128;

/// Shares of a paid call, in ppm; they sum to exactly 1_000_000.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevenueSplit {
    pub contributors_ppm: u64,
    pub serving_node_ppm: u64,
    pub treasury_ppm: u64,
    pub burn_ppm: u64,
}

impl Default for RevenueSplit {
    fn default() -> Self {
        // Most of the revenue rewards the people whose data and compute built the model.
        RevenueSplit {
            contributors_ppm: 600_000,
            serving_node_ppm: 250_000,
            treasury_ppm: 100_000,
            burn_ppm: 50_000,
        }
    }
}

impl RevenueSplit {
    pub fn validate(&self) -> Result<(), String> {
        // Four u64 values summed in u128 cannot overflow; saturation is unreachable.
        let sum = [
            self.contributors_ppm,
            self.serving_node_ppm,
            self.treasury_ppm,
            self.burn_ppm,
        ]
        .iter()
        .fold(0u128, |acc, v| acc.saturating_add(u128::from(*v)));
        if sum != PPM {
            return Err(format!(
                "param revenue_split: expected shares summing to {PPM} ppm, got {} + {} + {} + {} = {sum}",
                self.contributors_ppm, self.serving_node_ppm, self.treasury_ppm, self.burn_ppm
            ));
        }
        Ok(())
    }
}

/// Where one paid call's amount goes. `Σ contributors + serving_node + treasury + burn == amount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevenueShares {
    pub contributors: BTreeMap<String, u128>,
    pub serving_node: u128,
    pub treasury: u128,
    pub burn: u128,
}

/// Splits `amount`. Contributors share their part by `weights` (floor); all rounding
/// dust, and the contributors' part when there are no (positive) weights, goes to the treasury.
pub fn split_revenue(
    amount: u128,
    split: &RevenueSplit,
    weights: &BTreeMap<String, u128>,
) -> ComputeResult<RevenueShares> {
    split.validate().map_err(ComputeError::InvalidParams)?;
    let serving_node = mul_div(amount, u128::from(split.serving_node_ppm), PPM)?;
    let burn = mul_div(amount, u128::from(split.burn_ppm), PPM)?;
    let contributors_part = mul_div(amount, u128::from(split.contributors_ppm), PPM)?;
    let total_weight = weights
        .values()
        .try_fold(0u128, |acc, w| acc.checked_add(*w))
        .ok_or_else(|| {
            ComputeError::Overflow("contributor weights: expected a sum below 2^128".into())
        })?;
    let mut contributors = BTreeMap::new();
    let mut paid = 0u128;
    if total_weight > 0 {
        for (who, w) in weights {
            let share = mul_div(contributors_part, *w, total_weight)?;
            if share > 0 {
                contributors.insert(who.clone(), share);
                paid = paid
                    .checked_add(share)
                    .ok_or_else(|| ComputeError::Overflow("contributor shares".into()))?;
            }
        }
    }
    // Each part is a floor of amount · ppm / 10^6 with Σ ppm = 10^6, so their sum ≤ amount.
    let treasury = amount
        .checked_sub(serving_node)
        .and_then(|r| r.checked_sub(burn))
        .and_then(|r| r.checked_sub(paid))
        .ok_or_else(|| ComputeError::Overflow("revenue parts exceed the amount".into()))?;
    Ok(RevenueShares {
        contributors,
        serving_node,
        treasury,
        burn,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_unit_is_accounted_for(
            amount in prop_oneof![0u128..1_000_000, any::<u128>()],
            weights in proptest::collection::btree_map("[a-d]", 0u128..1_000_000_000, 0..4),
            a in 0u64..=1_000_000, b in 0u64..=1_000_000, c in 0u64..=1_000_000,
        ) {
            // Random valid split: three cut points of [0, 10^6].
            let mut cuts = [a, b, c];
            cuts.sort_unstable();
            let split = RevenueSplit {
                contributors_ppm: cuts[0],
                serving_node_ppm: cuts[1] - cuts[0],
                treasury_ppm: cuts[2] - cuts[1],
                burn_ppm: 1_000_000 - cuts[2],
            };
            let s = split_revenue(amount, &split, &weights).expect("valid split");
            let total = s.contributors.values().sum::<u128>() + s.serving_node + s.treasury + s.burn;
            prop_assert_eq!(total, amount);
            prop_assert!(s.burn <= amount / 1_000_000 * u128::from(split.burn_ppm) + u128::from(split.burn_ppm));
            // Contributors are paid in proportion to weight: a heavier weight never earns less.
            for (x, wx) in &weights {
                for (y, wy) in &weights {
                    if wx >= wy {
                        prop_assert!(s.contributors.get(x).copied().unwrap_or(0) >= s.contributors.get(y).copied().unwrap_or(0));
                    }
                }
            }
        }
    }

    #[test]
    fn default_split_of_a_round_amount_is_exact() {
        let w: BTreeMap<String, u128> = [("a".to_string(), 1), ("b".to_string(), 3)].into();
        let s = split_revenue(1_000_000, &RevenueSplit::default(), &w).expect("valid split");
        assert_eq!(
            (s.serving_node, s.treasury, s.burn),
            (250_000, 100_000, 50_000)
        );
        assert_eq!(
            s.contributors,
            [("a".to_string(), 150_000), ("b".to_string(), 450_000)].into()
        );
        let none = split_revenue(1_000_000, &RevenueSplit::default(), &BTreeMap::new())
            .expect("valid split");
        assert_eq!(
            none.treasury, 700_000,
            "no contributors: their part goes to the treasury"
        );
        let bad = RevenueSplit {
            burn_ppm: 60_000,
            ..RevenueSplit::default()
        };
        assert!(bad.validate().unwrap_err().contains("1000000"));
    }
}
