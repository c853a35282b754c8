//! Differentiated slashing: each offense burns a fixed share of the offender's bond.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::ComputeError;
use crate::math::{mul_div, PPM};
use crate::params::ComputeParams;

/// A slashable offense. The string names are part of the wire format: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Offense {
    /// A commitment was never revealed within the reveal window.
    MissedReveal,
    /// A reveal did not hash to its commitment.
    MismatchedReveal,
    /// Claimed compute that was not done (found by re-running or checkpoint mismatch).
    FabricatedCompute,
    /// Registered data judged inaccurate or malicious by the notaries.
    BadData,
    /// A notary approved something the panel found fraudulent.
    FraudulentApproval,
}

impl Offense {
    /// Every offense, in a fixed order.
    pub const ALL: [Offense; 5] = [
        Offense::MissedReveal,
        Offense::MismatchedReveal,
        Offense::FabricatedCompute,
        Offense::BadData,
        Offense::FraudulentApproval,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Offense::MissedReveal => "missed_reveal",
            Offense::MismatchedReveal => "mismatched_reveal",
            Offense::FabricatedCompute => "fabricated_compute",
            Offense::BadData => "bad_data",
            Offense::FraudulentApproval => "fraudulent_approval",
        }
    }
}

impl fmt::Display for Offense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Offense {
    type Err = ComputeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Offense::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Offense::ALL.iter().map(|o| o.as_str()).collect();
                ComputeError::UnknownOffense(format!("expected one of {names:?}, got {s:?}"))
            })
    }
}

/// Amount slashed from `bond` for `offense`: `floor(bond · rate / 10^6)`, never more than `bond`.
///
/// The rate is clamped to 1.0 first, so even unvalidated params cannot slash beyond the bond,
/// and with rate <= 10^6 the quotient is <= bond and cannot overflow.
pub fn slash_amount(bond: u128, offense: Offense, params: &ComputeParams) -> u128 {
    let rate = params.slash_rate_ppm.get(offense).min(PPM);
    mul_div(bond, u128::from(rate), u128::from(PPM))
        .unwrap_or(bond)
        .min(bond)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::params::SlashRates;
    use proptest::prelude::*;

    fn offense() -> impl Strategy<Value = Offense> {
        prop::sample::select(Offense::ALL.to_vec())
    }

    #[test]
    fn fraudulent_approval_takes_the_whole_bond_by_default() {
        let p = ComputeParams::default();
        assert_eq!(
            slash_amount(12_345, Offense::FraudulentApproval, &p),
            12_345
        );
        assert_eq!(slash_amount(12_345, Offense::MissedReveal, &p), 1_234);
        assert_eq!(
            slash_amount(u128::MAX, Offense::FraudulentApproval, &p),
            u128::MAX
        );
        for o in Offense::ALL {
            assert_eq!(o.as_str().parse::<Offense>(), Ok(o));
        }
        assert!("theft"
            .parse::<Offense>()
            .unwrap_err()
            .to_string()
            .contains("got \"theft\""));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn slash_never_exceeds_bond_even_with_unvalidated_rates(
            bond in any::<u128>(),
            o in offense(),
            rate in any::<u64>(),
        ) {
            let p = ComputeParams {
                slash_rate_ppm: SlashRates {
                    missed_reveal: rate,
                    mismatched_reveal: rate,
                    fabricated_compute: rate,
                    bad_data: rate,
                    fraudulent_approval: rate,
                },
                ..ComputeParams::default()
            };
            prop_assert!(slash_amount(bond, o, &p) <= bond);
        }

        #[test]
        fn slash_is_the_exact_floor_of_bond_times_rate(bond in any::<u64>(), o in offense()) {
            let p = ComputeParams::default();
            let rate = u128::from(p.slash_rate_ppm.get(o));
            let s = slash_amount(u128::from(bond), o, &p);
            prop_assert_eq!(s, u128::from(bond) * rate / 1_000_000);
            // Within [0.1, 1.0] of the bond, up to rounding.
            prop_assert!(s * 10 + 10 > u128::from(bond));
        }

        #[test]
        fn slash_is_monotone_in_bond(a in any::<u128>(), b in any::<u128>(), o in offense()) {
            let p = ComputeParams::default();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(slash_amount(lo, o, &p) <= slash_amount(hi, o, &p));
        }
    }
}
