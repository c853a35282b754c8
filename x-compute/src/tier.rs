//! Worker tiers: what a bonded worker offers the network and the reward multiplier it earns.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::error::ComputeError;
use crate::params::ComputeParams;

/// A worker's tier. The string names are part of the wire and genesis format: never rename one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Research orchestration + training + storage (the paper's `claude_session`).
    Orchestrator,
    /// GPU training and evaluation.
    GpuCompute,
    /// Erasure-coded shard storage (requires a passing SSD provisioning report).
    StorageNode,
    /// CPU inference and evaluation.
    CpuOnly,
    /// Phones and small devices; also where failing storage nodes are demoted to.
    MobileLight,
}

impl Tier {
    /// Every tier, in a fixed order.
    pub const ALL: [Tier; 5] = [
        Tier::Orchestrator,
        Tier::GpuCompute,
        Tier::StorageNode,
        Tier::CpuOnly,
        Tier::MobileLight,
    ];

    /// The stable name used in messages, genesis and queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Orchestrator => "orchestrator",
            Tier::GpuCompute => "gpu_compute",
            Tier::StorageNode => "storage_node",
            Tier::CpuOnly => "cpu_only",
            Tier::MobileLight => "mobile_light",
        }
    }

    /// Reward multiplier `T_i` in ppm (1_000_000 = 1.0x).
    pub fn multiplier_ppm(self, params: &ComputeParams) -> u64 {
        *params.tier_multiplier_ppm.get(self)
    }

    /// Minimum bond, in umag, a worker of this tier must post.
    pub fn min_bond(self, params: &ComputeParams) -> u128 {
        *params.min_bond.get(self)
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = ComputeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Tier::ALL.iter().map(|t| t.as_str()).collect();
                ComputeError::UnknownTier(format!("expected one of {names:?}, got {s:?}"))
            })
    }
}

/// One value per tier, serialized with the tiers' stable names as field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerTier<T> {
    pub orchestrator: T,
    pub gpu_compute: T,
    pub storage_node: T,
    pub cpu_only: T,
    pub mobile_light: T,
}

impl<T> PerTier<T> {
    pub fn get(&self, tier: Tier) -> &T {
        match tier {
            Tier::Orchestrator => &self.orchestrator,
            Tier::GpuCompute => &self.gpu_compute,
            Tier::StorageNode => &self.storage_node,
            Tier::CpuOnly => &self.cpu_only,
            Tier::MobileLight => &self.mobile_light,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>(), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        let err = "claude_session".parse::<Tier>().unwrap_err();
        assert!(err.to_string().contains("got \"claude_session\""), "{err}");
    }

    #[test]
    fn default_multipliers_follow_the_design() {
        let p = ComputeParams::default();
        let got: Vec<u64> = Tier::ALL.iter().map(|t| t.multiplier_ppm(&p)).collect();
        assert_eq!(got, vec![3_000_000, 1_000_000, 300_000, 300_000, 100_000]);
    }
}
