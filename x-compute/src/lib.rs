//! `magnet-x-compute`: the x-compute incentive module as a pure state machine (paper §10.2, §13).
//!
//! Worker [`tier`]s and their reward multipliers; the [`emission`] schedule, released per
//! epoch under a daily cap no block sequence can exceed; epoch [`settlement`] by `T_i·C_i`
//! with exact integer shares (Σ rewards + remainder = pool); differentiated [`slashing`]
//! (slash ≤ bond); [`commit_reveal`] proofs and windows; worker [`identity`]; and the
//! [`incentive`] inequality of eq. 6 for checking a parameter set. No I/O, no clock, no
//! floats: every validator computes the same numbers. All parameters live in [`params`].

pub mod commit_reveal;
pub mod emission;
pub mod error;
pub mod identity;
pub mod incentive;
mod math;
pub mod panel;
pub mod params;
pub mod revenue;
pub mod settlement;
pub mod slashing;
pub mod tier;

pub use commit_reveal::{check_reveal_time, commitment, verify_reveal, Commitment, RevealWindows};
pub use emission::EmissionSchedule;
pub use error::{ComputeError, ComputeResult, CODESPACE};
pub use identity::node_id;
pub use incentive::{attack_cost, incentive_compatible};
pub use math::{mul_div, PPM};
pub use panel::{
    consensus_score, settle_job, split_data_fee, tally, DataFeeSplit, FeeShares, JobPayout, Verdict,
};
pub use params::{ComputeParams, RemainderPolicy, SlashRates};
pub use revenue::{split_revenue, RevenueShares, RevenueSplit};
pub use settlement::{settle_epoch, Settlement, WorkerId};
pub use slashing::{slash_amount, Offense};
pub use tier::{PerTier, Tier};
