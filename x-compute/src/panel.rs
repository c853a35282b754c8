//! Notary panel, data registration and research jobs: the pure arithmetic the chain
//! applies when a dispute closes, a data record is confirmed or a job settles.
//! Integer math only; every unit of a fee or an escrow is accounted for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ComputeError, ComputeResult};
use crate::math::{mul_div, PPM};

const PPM_U128: u128 = PPM as u128;

/// How a closed dispute came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Quorum reached and a strict majority of votes upheld the challenge: the accused loses.
    Upheld,
    /// Quorum reached and the challenge did not win a strict majority: the challenger loses.
    Rejected,
    /// Too few notaries voted: nobody is penalised, deposits come back, the target stands.
    NoQuorum,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Upheld => "upheld",
            Verdict::Rejected => "rejected",
            Verdict::NoQuorum => "no_quorum",
        }
    }
}

/// Tallies a dispute: `panel` notaries could vote, `uphold` + `reject` did.
/// Quorum: `(uphold + reject) · 10^6 ≥ quorum_ppm · panel` (and at least one vote);
/// then the challenge wins only by a strict majority (a tie keeps the status quo).
pub fn tally(panel: u64, uphold: u64, reject: u64, quorum_ppm: u64) -> Verdict {
    let voted = u128::from(uphold).saturating_add(u128::from(reject));
    let needed = u128::from(quorum_ppm).saturating_mul(u128::from(panel));
    if voted == 0 || voted.saturating_mul(PPM_U128) < needed {
        return Verdict::NoQuorum;
    }
    if uphold > reject {
        Verdict::Upheld
    } else {
        Verdict::Rejected
    }
}

/// Shares of a confirmed data record's registration fee, in ppm; they sum to 1_000_000.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFeeSplit {
    /// Shared equally by the notary panel (to the treasury when the panel is empty).
    pub notaries_ppm: u64,
    pub treasury_ppm: u64,
    pub burn_ppm: u64,
}

impl Default for DataFeeSplit {
    fn default() -> Self {
        DataFeeSplit {
            notaries_ppm: 500_000,
            treasury_ppm: 300_000,
            burn_ppm: 200_000,
        }
    }
}

impl DataFeeSplit {
    pub fn validate(&self) -> Result<(), String> {
        let sum = u128::from(self.notaries_ppm)
            .saturating_add(u128::from(self.treasury_ppm))
            .saturating_add(u128::from(self.burn_ppm));
        if sum != PPM_U128 {
            return Err(format!(
                "param data_fee_split: expected shares summing to {PPM} ppm, got {} + {} + {} = {sum}",
                self.notaries_ppm, self.treasury_ppm, self.burn_ppm
            ));
        }
        Ok(())
    }
}

/// Where a confirmed record's fee goes: `Σ per_notary·n + treasury + burn == fee`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeeShares {
    pub per_notary: u128,
    pub treasury: u128,
    pub burn: u128,
}

/// Splits `fee` among `notaries` (equal shares), the treasury and burn. Rounding dust
/// and the notaries' share when the panel is empty go to the treasury.
pub fn split_data_fee(fee: u128, notaries: u64, split: &DataFeeSplit) -> ComputeResult<FeeShares> {
    let burn = mul_div(fee, u128::from(split.burn_ppm), PPM_U128)?;
    let notary_pot = mul_div(fee, u128::from(split.notaries_ppm), PPM_U128)?;
    let per_notary = if notaries == 0 {
        0
    } else {
        notary_pot.checked_div(u128::from(notaries)).unwrap_or(0)
    };
    let paid = per_notary
        .checked_mul(u128::from(notaries))
        .and_then(|n| n.checked_add(burn))
        .ok_or_else(|| ComputeError::Overflow("data fee split".into()))?;
    let treasury = fee.checked_sub(paid).ok_or_else(|| {
        ComputeError::Overflow(format!("data fee split: paid {paid} exceeds fee {fee}"))
    })?;
    Ok(FeeShares {
        per_notary,
        treasury,
        burn,
    })
}

/// Consensus score of one result: the lower median of the evaluators' scores
/// (robust to a minority of outliers, integer, order independent).
pub fn consensus_score(scores: &[u64]) -> Option<u64> {
    if scores.is_empty() {
        return None;
    }
    let mut s = scores.to_vec();
    s.sort_unstable();
    s.get(s.len().saturating_sub(1) / 2).copied()
}

/// How a research job's escrow settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPayout {
    /// Paid to each contributor, ordered by address.
    pub payouts: BTreeMap<String, u128>,
    /// Returned to the requester: rounding dust, or the whole budget when nobody scored.
    pub refund: u128,
}

/// Splits `budget` by consensus score: `pay_i = budget · s_i / Σ s`, the rest refunded.
/// `Σ pay_i + refund == budget` exactly.
pub fn settle_job(budget: u128, scores: &BTreeMap<String, u64>) -> ComputeResult<JobPayout> {
    let total: u128 = scores
        .values()
        .fold(0u128, |acc, s| acc.saturating_add(u128::from(*s)));
    let mut payouts = BTreeMap::new();
    let mut paid = 0u128;
    if total > 0 {
        for (who, s) in scores {
            let pay = mul_div(budget, u128::from(*s), total)?;
            if pay > 0 {
                payouts.insert(who.clone(), pay);
                paid = paid
                    .checked_add(pay)
                    .ok_or_else(|| ComputeError::Overflow("job payouts".into()))?;
            }
        }
    }
    let refund = budget.checked_sub(paid).ok_or_else(|| {
        ComputeError::Overflow(format!("job payouts {paid} exceed budget {budget}"))
    })?;
    Ok(JobPayout { payouts, refund })
}

#[cfg(test)]
#[allow(clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tally_needs_quorum_and_a_strict_majority() {
        // 5 notaries, quorum one half: 3 votes needed.
        assert_eq!(tally(5, 1, 1, 500_000), Verdict::NoQuorum);
        assert_eq!(tally(5, 2, 1, 500_000), Verdict::Upheld);
        assert_eq!(tally(5, 1, 2, 500_000), Verdict::Rejected);
        assert_eq!(
            tally(4, 1, 1, 500_000),
            Verdict::Rejected,
            "a tie keeps the status quo"
        );
        assert_eq!(
            tally(0, 0, 0, 0),
            Verdict::NoQuorum,
            "no votes is never a verdict"
        );
    }

    #[test]
    fn median_is_robust_to_one_outlier() {
        assert_eq!(consensus_score(&[900, 10, 880]), Some(880));
        assert_eq!(consensus_score(&[5, 1]), Some(1));
        assert_eq!(consensus_score(&[]), None);
    }

    #[test]
    fn empty_panel_sends_the_notary_share_to_the_treasury() {
        let s = split_data_fee(1_000, 0, &DataFeeSplit::default()).expect("split");
        assert_eq!(
            s,
            FeeShares {
                per_notary: 0,
                treasury: 800,
                burn: 200
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn data_fee_is_conserved(fee in 0u128..(1u128 << 100), n in 0u64..200, a in 0u64..=1_000_000, b in 0u64..=1_000_000) {
            let (a, b) = (a.min(1_000_000), b.min(1_000_000 - a.min(1_000_000)));
            let split = DataFeeSplit { notaries_ppm: a, treasury_ppm: 1_000_000 - a - b, burn_ppm: b };
            prop_assert!(split.validate().is_ok());
            let s = split_data_fee(fee, n, &split).expect("split");
            prop_assert_eq!(s.per_notary * u128::from(n) + s.treasury + s.burn, fee);
        }

        #[test]
        fn job_escrow_is_conserved_and_pay_follows_score(
            budget in 0u128..(1u128 << 100),
            scores in proptest::collection::btree_map("[a-h]{1,3}", 0u64..1_000_000, 0..12),
        ) {
            let out = settle_job(budget, &scores).expect("settle");
            let paid: u128 = out.payouts.values().sum();
            prop_assert_eq!(paid + out.refund, budget);
            // Nobody's pay exceeds their exact share, and a higher score never pays less.
            let total: u128 = scores.values().map(|s| u128::from(*s)).sum();
            for (a, sa) in &scores {
                let pa = out.payouts.get(a).copied().unwrap_or(0);
                if total > 0 { prop_assert!(pa * total <= budget * u128::from(*sa)); }
                for (b, sb) in &scores {
                    let pb = out.payouts.get(b).copied().unwrap_or(0);
                    if sa > sb { prop_assert!(pa >= pb); }
                }
            }
        }

        #[test]
        fn verdict_is_upheld_only_with_quorum_and_majority(panel in 0u64..100, up in 0u64..100, down in 0u64..100, q in 0u64..=1_000_000) {
            let v = tally(panel, up, down, q);
            let voted = up + down;
            let quorum = voted > 0 && u128::from(voted) * 1_000_000 >= u128::from(q) * u128::from(panel);
            prop_assert_eq!(v == Verdict::NoQuorum, !quorum);
            prop_assert_eq!(v == Verdict::Upheld, quorum && up > down);
        }
    }
}
