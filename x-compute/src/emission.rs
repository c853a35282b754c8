//! Emission: the annual schedule released epoch by epoch, under a per-UTC-day cap.
//!
//! Each epoch releases `annual_emission · elapsed / YEAR` for the block time elapsed since
//! the last release, the fraction below one umag carried so the schedule never drifts. The
//! release is then cut to what is left of `daily_cap` for the UTC day of the epoch's end
//! (`day = time / 86400`). What the cap cuts is gone: it is never minted later, so no
//! sequence of block times, however bursty, mints more than `daily_cap` in any day.

use serde::{Deserialize, Serialize};

use crate::error::{ComputeError, ComputeResult};
use crate::math::mul_div_rem;
use crate::params::ComputeParams;

/// Seconds in an emission year: 365 days of block time (no leap years in consensus).
pub const SECONDS_PER_YEAR: u64 = 365 * SECONDS_PER_DAY;

/// Seconds in a UTC day; days are numbered `unix_time / SECONDS_PER_DAY`.
pub const SECONDS_PER_DAY: u64 = 86_400;

/// Emission state carried from block to block (stored by the chain, read back verbatim).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmissionSchedule {
    /// Block time up to which emission has been accounted.
    last_time: u64,
    /// UTC day that `minted_today` refers to.
    day: u64,
    /// Umag minted so far in `day`.
    minted_today: u128,
    /// `(annual_emission · elapsed) mod YEAR` not yet released: always < SECONDS_PER_YEAR.
    carry_numerator: u128,
    /// Umag minted since genesis.
    total_minted: u128,
}

impl EmissionSchedule {
    /// A schedule that starts accruing at `genesis_time` (unix seconds).
    pub fn new(genesis_time: u64) -> Self {
        Self {
            last_time: genesis_time,
            day: genesis_time / SECONDS_PER_DAY,
            minted_today: 0,
            carry_numerator: 0,
            total_minted: 0,
        }
    }

    /// Mints and returns the reward pool of the epoch ending at `epoch_end_time`.
    ///
    /// Refuses a time before the last one seen; on any error the state is unchanged.
    pub fn pool_for_epoch(
        &mut self,
        epoch_end_time: u64,
        params: &ComputeParams,
    ) -> ComputeResult<u128> {
        let elapsed = epoch_end_time.checked_sub(self.last_time).ok_or_else(|| {
            ComputeError::TimeWentBackwards(format!(
                "expected a block time >= {}, got {epoch_end_time}",
                self.last_time
            ))
        })?;
        let year = u128::from(SECONDS_PER_YEAR);
        let (accrued, carry) = match mul_div_rem(params.annual_emission, elapsed.into(), year) {
            Ok((whole, frac)) => {
                // Both fractions are < year, so their sum fits and splits into at most one unit.
                let frac = frac.saturating_add(self.carry_numerator);
                let extra = u128::from(frac >= year);
                (
                    whole.saturating_add(extra),
                    frac.checked_rem(year).unwrap_or(0),
                )
            }
            // More than 2^128 umag accrued: far beyond any cap, which cuts it below.
            Err(_) => (u128::MAX, 0),
        };
        let day = epoch_end_time / SECONDS_PER_DAY;
        let minted_before = if day == self.day {
            self.minted_today
        } else {
            0
        };
        let room = params.daily_cap.saturating_sub(minted_before);
        let pool = accrued.min(room);
        let total_minted = self.total_minted.checked_add(pool).ok_or_else(|| {
            ComputeError::Overflow(format!(
                "total minted would exceed 2^128-1: is {}, minting {pool}",
                self.total_minted
            ))
        })?;
        // pool <= room = cap - minted_before, so this cannot overflow.
        let minted_today = minted_before.saturating_add(pool);
        *self = Self {
            last_time: epoch_end_time,
            day,
            minted_today,
            carry_numerator: carry,
            total_minted,
        };
        Ok(pool)
    }

    /// Block time up to which emission has been accounted.
    pub fn last_time(&self) -> u64 {
        self.last_time
    }

    /// Umag minted in the UTC day of the last release.
    pub fn minted_today(&self) -> u128 {
        self.minted_today
    }

    /// Umag minted since genesis.
    pub fn total_minted(&self) -> u128 {
        self.total_minted
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::params::UMAG_PER_MAG;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    const GENESIS: u64 = 1_700_000_000;

    #[test]
    fn a_steady_day_of_ten_minute_epochs_mints_exactly_the_average_day() {
        let p = ComputeParams::default();
        // Start at a UTC midnight so the whole day falls in one cap window.
        let start = GENESIS / SECONDS_PER_DAY * SECONDS_PER_DAY;
        let mut s = EmissionSchedule::new(start);
        let mut pools = Vec::new();
        for i in 1..=144 {
            pools.push(s.pool_for_epoch(start + i * 600, &p).expect("test value"));
        }
        // 694.444… MAG per epoch: floors with the fraction carried, never drifting.
        assert_eq!(pools[0], 694_444_444);
        assert!(pools.iter().all(|&x| x == 694_444_444 || x == 694_444_445));
        assert_eq!(s.total_minted(), 100_000 * UMAG_PER_MAG);
        // The last epoch ends at the next midnight, so it belongs to the next day.
        assert_eq!(s.minted_today(), *pools.last().expect("test value"));
    }

    #[test]
    fn a_long_halt_releases_one_cap_and_the_rest_is_never_minted() {
        let p = ComputeParams::default();
        let mut s = EmissionSchedule::new(GENESIS);
        // Three days pass in one block: 300k MAG accrued, cut to the 200k cap.
        let t = GENESIS + 3 * SECONDS_PER_DAY;
        assert_eq!(s.pool_for_epoch(t, &p).expect("test value"), p.daily_cap);
        // Later epochs the same day get nothing, not the cut amount.
        assert_eq!(s.pool_for_epoch(t + 600, &p).expect("test value"), 0);
        assert_eq!(
            s.pool_for_epoch(t + 1, &p),
            Err(ComputeError::TimeWentBackwards(format!(
                "expected a block time >= {}, got {}",
                t + 600,
                t + 1
            )))
        );
    }

    #[test]
    fn a_refused_time_leaves_the_state_unchanged() {
        let p = ComputeParams::default();
        let mut s = EmissionSchedule::new(GENESIS);
        s.pool_for_epoch(GENESIS + 600, &p).expect("test value");
        let before = s.clone();
        let err = s.pool_for_epoch(GENESIS + 599, &p).unwrap_err();
        assert_eq!(err.code(), 3);
        assert_eq!(s, before);
    }

    fn params_strategy() -> impl Strategy<Value = ComputeParams> {
        (1u128..=1u128 << 120, 1u128..=365_000).prop_map(|(annual, cap_thousandths)| {
            let average_day = annual.div_ceil(365);
            // A cap from the average day up to ~the whole year, as validate() allows.
            let cap = average_day
                .saturating_add(average_day.saturating_mul(cap_thousandths) / 1000)
                .min(annual.max(average_day));
            ComputeParams {
                annual_emission: annual,
                daily_cap: cap,
                ..ComputeParams::default()
            }
        })
    }

    fn steps_strategy() -> impl Strategy<Value = Vec<u64>> {
        prop::collection::vec(
            prop_oneof![
                Just(0u64),
                1u64..=600,
                1u64..=SECONDS_PER_DAY,
                SECONDS_PER_DAY..=100 * SECONDS_PER_YEAR,
                Just(u64::MAX / 4),
            ],
            1..200,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn no_block_sequence_mints_more_than_the_daily_cap_in_a_day(
            params in params_strategy(),
            genesis in 0u64..=4_000_000_000,
            steps in steps_strategy(),
        ) {
            prop_assert_eq!(params.validate(), Ok(()));
            let mut s = EmissionSchedule::new(genesis);
            let mut t = genesis;
            let mut per_day: BTreeMap<u64, u128> = BTreeMap::new();
            let mut sum: u128 = 0;
            for step in steps {
                t = t.saturating_add(step);
                let pool = s.pool_for_epoch(t, &params).expect("test value");
                *per_day.entry(t / SECONDS_PER_DAY).or_default() += pool;
                sum += pool;
            }
            for (day, minted) in &per_day {
                prop_assert!(*minted <= params.daily_cap, "day {} minted {} > cap {}", day, minted, params.daily_cap);
            }
            prop_assert_eq!(s.total_minted(), sum);
        }

        #[test]
        fn below_the_cap_the_schedule_is_exactly_pro_rata(
            annual in 1u128..=1u128 << 100,
            steps in prop::collection::vec(0u64..=3600, 1..300),
        ) {
            // A cap of a whole year never binds when blocks are at most an hour apart.
            let params = ComputeParams { annual_emission: annual, daily_cap: annual, ..ComputeParams::default() };
            let mut s = EmissionSchedule::new(GENESIS);
            let mut t = GENESIS;
            for step in steps {
                t += step;
                s.pool_for_epoch(t, &params).expect("test value");
            }
            let elapsed = u128::from(t - GENESIS);
            let expected = crate::math::mul_div(annual, elapsed, u128::from(SECONDS_PER_YEAR)).expect("test value");
            prop_assert_eq!(s.total_minted(), expected);
        }

        #[test]
        fn decreasing_times_are_refused(genesis in 1u64..=u64::MAX, back in 1u64..=u64::MAX) {
            let mut s = EmissionSchedule::new(genesis);
            let t = genesis.saturating_sub(back);
            let res = s.pool_for_epoch(t, &ComputeParams::default());
            prop_assert!(matches!(res, Err(ComputeError::TimeWentBackwards(_))));
            prop_assert_eq!(s, EmissionSchedule::new(genesis));
        }
    }
}
