//! x-compute parameters: tiers, bonds, emission, slashing and the commit-reveal clock.
//! All are genesis params, governance-updatable, and checked by [`ComputeParams::validate`].

use serde::{Deserialize, Serialize};

use crate::emission::SECONDS_PER_DAY;
use crate::math::PPM;
use crate::slashing::Offense;
use crate::tier::{PerTier, Tier};

/// 1 MAG in umag (the chain's base unit).
pub const UMAG_PER_MAG: u128 = 1_000_000;

/// Lowest slashing rate any offense may carry (0.1, paper §13.4).
pub const MIN_SLASH_RATE_PPM: u64 = 100_000;

/// Largest tier multiplier accepted (100x): keeps `T_i · C_i` far from u128 overflow.
pub const MAX_TIER_MULTIPLIER_PPM: u64 = 100_000_000;

/// What happens to the rounding remainder of an epoch's settlement. Never minted again:
/// `Carry` adds it to the next epoch's pool, `Burn` destroys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemainderPolicy {
    Carry,
    Burn,
}

/// Slashing rate per offense, in ppm of the bond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlashRates {
    pub missed_reveal: u64,
    pub mismatched_reveal: u64,
    pub fabricated_compute: u64,
    pub bad_data: u64,
    pub fraudulent_approval: u64,
}

impl SlashRates {
    pub fn get(&self, offense: Offense) -> u64 {
        match offense {
            Offense::MissedReveal => self.missed_reveal,
            Offense::MismatchedReveal => self.mismatched_reveal,
            Offense::FabricatedCompute => self.fabricated_compute,
            Offense::BadData => self.bad_data,
            Offense::FraudulentApproval => self.fraudulent_approval,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeParams {
    /// Reward multiplier `T_i` per tier, in ppm (1_000_000 = 1.0x).
    pub tier_multiplier_ppm: PerTier<u64>,
    /// Minimum bond per tier, in umag.
    pub min_bond: PerTier<u128>,
    /// Length of a reward epoch, in seconds of block time.
    pub epoch_length_secs: u64,
    /// Emission per 365-day year of block time, in umag, released pro rata by elapsed time.
    pub annual_emission: u128,
    /// Most umag minted in one UTC day (`block_time / 86400`), whatever the block times.
    pub daily_cap: u128,
    /// Slashing rate per offense, each in [0.1, 1.0].
    pub slash_rate_ppm: SlashRates,
    /// Fate of the settlement rounding remainder.
    pub remainder_policy: RemainderPolicy,
    /// Seconds after a job opens during which commitments are accepted.
    pub commit_window_secs: u64,
    /// Seconds after the commit window closes during which reveals are accepted.
    pub reveal_window_secs: u64,
    /// Seconds between an unbond request and the release of the bond (slashable meanwhile).
    pub unbonding_delay_secs: u64,
    /// A worker not heard from for this many seconds of block time is stale.
    pub heartbeat_stale_secs: u64,
    /// Split of x402 API revenue (contributors / serving node / treasury / burn).
    #[serde(default)]
    pub revenue_split: crate::revenue::RevenueSplit,
    /// Minimum bond to sit on the notary panel, in umag.
    #[serde(default = "d_notary_min_bond")]
    pub notary_min_bond: u128,
    /// Deposit a challenger locks with a challenge, in umag (returned if upheld or no quorum).
    #[serde(default = "d_challenge_deposit")]
    pub challenge_deposit: u128,
    /// How long notaries may vote on a dispute, in seconds of block time.
    #[serde(default = "d_window")]
    pub dispute_window_secs: u64,
    /// Share of the panel that must vote for a verdict, in ppm.
    #[serde(default = "d_quorum")]
    pub notary_quorum_ppm: u64,
    /// Fee to register a data record, in umag.
    #[serde(default = "d_data_fee")]
    pub data_registration_fee: u128,
    /// How long a data record can be challenged before it is confirmed, in seconds.
    #[serde(default = "d_window")]
    pub data_challenge_window_secs: u64,
    /// Where a confirmed record's fee goes.
    #[serde(default)]
    pub data_fee_split: crate::panel::DataFeeSplit,
    /// Data-quality contribution units credited per MiB of confirmed data.
    #[serde(default = "d_data_units")]
    pub data_units_per_mib: u128,
}

fn d_notary_min_bond() -> u128 {
    1_000 * UMAG_PER_MAG
}
fn d_challenge_deposit() -> u128 {
    100 * UMAG_PER_MAG
}
fn d_window() -> u64 {
    600
}
fn d_quorum() -> u64 {
    500_000
}
fn d_data_fee() -> u128 {
    10 * UMAG_PER_MAG
}
fn d_data_units() -> u128 {
    1_000_000_000
}

impl Default for ComputeParams {
    fn default() -> Self {
        Self {
            tier_multiplier_ppm: PerTier {
                orchestrator: 3_000_000,
                gpu_compute: 1_000_000,
                storage_node: 300_000,
                cpu_only: 300_000,
                mobile_light: 100_000,
            },
            min_bond: PerTier {
                orchestrator: 10_000 * UMAG_PER_MAG,
                gpu_compute: 1_000 * UMAG_PER_MAG,
                storage_node: 500 * UMAG_PER_MAG,
                cpu_only: 100 * UMAG_PER_MAG,
                mobile_light: 10 * UMAG_PER_MAG,
            },
            epoch_length_secs: 600,
            // 36.5M MAG a year = 100k MAG a day on average (≈ 694 MAG per 10-minute epoch).
            annual_emission: 36_500_000 * UMAG_PER_MAG,
            // Twice the average day: after a chain halt at most one extra day is caught up.
            daily_cap: 200_000 * UMAG_PER_MAG,
            slash_rate_ppm: SlashRates {
                missed_reveal: 100_000,
                mismatched_reveal: 300_000,
                fabricated_compute: 500_000,
                bad_data: 300_000,
                fraudulent_approval: 1_000_000,
            },
            remainder_policy: RemainderPolicy::Carry,
            commit_window_secs: 360,
            reveal_window_secs: 180,
            // 21 days, as Cosmos staking: long enough for any dispute window to close.
            unbonding_delay_secs: 21 * SECONDS_PER_DAY,
            heartbeat_stale_secs: 120,
            revenue_split: crate::revenue::RevenueSplit::default(),
            notary_min_bond: d_notary_min_bond(),
            challenge_deposit: d_challenge_deposit(),
            dispute_window_secs: d_window(),
            notary_quorum_ppm: d_quorum(),
            data_registration_fee: d_data_fee(),
            data_challenge_window_secs: d_window(),
            data_fee_split: crate::panel::DataFeeSplit::default(),
            data_units_per_mib: d_data_units(),
        }
    }
}

fn in_range<T: PartialOrd + std::fmt::Display>(
    name: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), String> {
    if v < lo || v > hi {
        return Err(format!("param {name}: expected in [{lo}, {hi}], got {v}"));
    }
    Ok(())
}

impl ComputeParams {
    /// Checks every field; the error names the field, the expected range and the value seen.
    pub fn validate(&self) -> Result<(), String> {
        for tier in Tier::ALL {
            in_range(
                &format!("tier_multiplier_ppm.{tier}"),
                *self.tier_multiplier_ppm.get(tier),
                1,
                MAX_TIER_MULTIPLIER_PPM,
            )?;
            in_range(
                &format!("min_bond.{tier}"),
                *self.min_bond.get(tier),
                1,
                u128::MAX,
            )?;
        }
        in_range(
            "epoch_length_secs",
            self.epoch_length_secs,
            1,
            SECONDS_PER_DAY,
        )?;
        // A cap below the average day would silently lower the annual schedule; a cap
        // above the annual emission means no cap at all.
        let average_day = self.annual_emission.div_ceil(365);
        in_range(
            "daily_cap",
            self.daily_cap,
            average_day,
            self.annual_emission.max(average_day),
        )?;
        for offense in Offense::ALL {
            in_range(
                &format!("slash_rate_ppm.{offense}"),
                self.slash_rate_ppm.get(offense),
                MIN_SLASH_RATE_PPM,
                PPM,
            )?;
        }
        in_range("commit_window_secs", self.commit_window_secs, 1, u64::MAX)?;
        in_range("reveal_window_secs", self.reveal_window_secs, 1, u64::MAX)?;
        // All of an epoch's reveals must be in before the epoch settles.
        let windows = self
            .commit_window_secs
            .checked_add(self.reveal_window_secs)
            .ok_or_else(|| {
                "param reveal_window_secs: expected commit + reveal windows below 2^64, got an overflow"
                    .to_string()
            })?;
        if windows > self.epoch_length_secs {
            return Err(format!(
                "param reveal_window_secs: expected commit_window_secs + reveal_window_secs <= epoch_length_secs ({}), got {} + {} = {windows}",
                self.epoch_length_secs, self.commit_window_secs, self.reveal_window_secs
            ));
        }
        // A worker must stay slashable until every reveal it owes is due.
        in_range(
            "unbonding_delay_secs",
            self.unbonding_delay_secs,
            windows,
            u64::MAX,
        )?;
        in_range(
            "heartbeat_stale_secs",
            self.heartbeat_stale_secs,
            1,
            u64::MAX,
        )?;
        self.revenue_split.validate()?;
        in_range("notary_min_bond", self.notary_min_bond, 1, u128::MAX)?;
        in_range("challenge_deposit", self.challenge_deposit, 1, u128::MAX)?;
        in_range(
            "dispute_window_secs",
            self.dispute_window_secs,
            1,
            SECONDS_PER_DAY,
        )?;
        // Below one half a minority could decide; above 1.0 no verdict is possible.
        in_range("notary_quorum_ppm", self.notary_quorum_ppm, PPM / 2, PPM)?;
        in_range(
            "data_registration_fee",
            self.data_registration_fee,
            1,
            u128::MAX,
        )?;
        in_range(
            "data_challenge_window_secs",
            self.data_challenge_window_secs,
            1,
            SECONDS_PER_DAY,
        )?;
        self.data_fee_split.validate()?;
        // 2^64 units per MiB keeps a record of any u64 size inside MAX_EPOCH_UNITS' reach.
        in_range(
            "data_units_per_mib",
            self.data_units_per_mib,
            1,
            1u128 << 40,
        )?;
        // A disputed worker must still be slashable when the verdict comes.
        in_range(
            "unbonding_delay_secs",
            self.unbonding_delay_secs,
            self.dispute_window_secs
                .saturating_add(self.data_challenge_window_secs),
            u64::MAX,
        )?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn default_params_are_valid() {
        assert_eq!(ComputeParams::default().validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named_with_expected_and_got() {
        let d = ComputeParams::default;
        let cases: Vec<(ComputeParams, &str)> = vec![
            (
                ComputeParams {
                    tier_multiplier_ppm: PerTier {
                        mobile_light: 0,
                        ..d().tier_multiplier_ppm
                    },
                    ..d()
                },
                "tier_multiplier_ppm.mobile_light: expected in [1, 100000000], got 0",
            ),
            (
                ComputeParams {
                    min_bond: PerTier {
                        gpu_compute: 0,
                        ..d().min_bond
                    },
                    ..d()
                },
                "min_bond.gpu_compute",
            ),
            (
                ComputeParams {
                    epoch_length_secs: 0,
                    ..d()
                },
                "epoch_length_secs",
            ),
            (
                ComputeParams {
                    daily_cap: 1,
                    ..d()
                },
                "daily_cap: expected in [100000000000, 36500000000000], got 1",
            ),
            (
                ComputeParams {
                    slash_rate_ppm: SlashRates {
                        bad_data: 99_999,
                        ..d().slash_rate_ppm
                    },
                    ..d()
                },
                "slash_rate_ppm.bad_data: expected in [100000, 1000000], got 99999",
            ),
            (
                ComputeParams {
                    slash_rate_ppm: SlashRates {
                        fraudulent_approval: 1_000_001,
                        ..d().slash_rate_ppm
                    },
                    ..d()
                },
                "slash_rate_ppm.fraudulent_approval",
            ),
            (
                ComputeParams {
                    reveal_window_secs: 500,
                    ..d()
                },
                "got 360 + 500 = 860",
            ),
            (
                ComputeParams {
                    commit_window_secs: 0,
                    ..d()
                },
                "commit_window_secs",
            ),
            (
                ComputeParams {
                    unbonding_delay_secs: 10,
                    ..d()
                },
                "unbonding_delay_secs: expected in [540,",
            ),
            (
                ComputeParams {
                    heartbeat_stale_secs: 0,
                    ..d()
                },
                "heartbeat_stale_secs",
            ),
        ];
        for (params, needle) in cases {
            let err = params.validate().unwrap_err();
            assert!(err.contains(needle), "expected {needle:?} in {err:?}");
        }
    }
}
