//! Application genesis: the `app_state` object inside CometBFT's `genesis.json`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::params::ChainParams;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisCoin {
    pub denom: String,
    /// Decimal string, as in Cosmos JSON: u128 does not fit a JSON number.
    pub amount: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisAccount {
    pub address: String,
    pub coins: Vec<GenesisCoin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AppGenesis {
    #[serde(default)]
    pub params: ChainParams,
    #[serde(default)]
    pub accounts: Vec<GenesisAccount>,
    /// x-compute parameters (tiers, bonds, emission, slashing, windows).
    #[serde(default)]
    pub compute: magnet_x_compute::ComputeParams,
    /// Governance params and the validator operators who vote.
    #[serde(default)]
    pub gov: crate::gov::GovGenesis,
}

impl AppGenesis {
    /// Checks everything InitChain relies on, so a bad genesis fails before any block.
    pub fn validate(&self) -> Result<(), String> {
        self.params.validate()?;
        self.compute
            .validate()
            .map_err(|e| format!("compute params: {e}"))?;
        self.gov.params.validate()?;
        let mut ops = BTreeSet::new();
        for v in &self.gov.validators {
            crate::auth::validate_address(&v.operator).map_err(|e| e.to_string())?;
            if !ops.insert(v.operator.as_str()) {
                return Err(format!(
                    "gov validator {}: expected each operator once, got it twice",
                    v.operator
                ));
            }
        }
        let mut seen = BTreeSet::new();
        let mut supply: std::collections::BTreeMap<&str, u128> = Default::default();
        for acc in &self.accounts {
            let addr = crate::auth::validate_address(&acc.address).map_err(|e| e.to_string())?;
            if !seen.insert(addr) {
                return Err(format!(
                    "genesis account {}: expected each address once, got it twice",
                    acc.address
                ));
            }
            let protos: Vec<_> = acc
                .coins
                .iter()
                .map(|c| cosmrs::proto::cosmos::base::v1beta1::Coin {
                    denom: c.denom.clone(),
                    amount: c.amount.clone(),
                })
                .collect();
            let coins = crate::bank::parse_coins(&protos)
                .map_err(|e| format!("genesis account {}: {e}", acc.address))?;
            for c in &acc.coins {
                let amount = coins.get(&c.denom).copied().unwrap_or(0);
                let entry = supply.entry(c.denom.as_str()).or_insert(0);
                *entry = entry.checked_add(amount).ok_or_else(|| {
                    format!("genesis supply of {}: expected < 2^128, overflows", c.denom)
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(addr: &str, amount: &str) -> GenesisAccount {
        GenesisAccount {
            address: addr.into(),
            coins: vec![GenesisCoin {
                denom: "umag".into(),
                amount: amount.into(),
            }],
        }
    }

    #[test]
    fn genesis_refuses_duplicates_overflow_and_bad_amounts() {
        let a = crate::auth::module_address("a");
        let b = crate::auth::module_address("b");
        let ok = AppGenesis {
            accounts: vec![acct(&a, "5"), acct(&b, "7")],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let dup = AppGenesis {
            accounts: vec![acct(&a, "5"), acct(&a, "7")],
            ..Default::default()
        };
        assert!(dup.validate().unwrap_err().contains("twice"));
        let max = u128::MAX.to_string();
        let over = AppGenesis {
            accounts: vec![acct(&a, &max), acct(&b, "1")],
            ..Default::default()
        };
        assert!(over.validate().unwrap_err().contains("overflows"));
        let neg = AppGenesis {
            accounts: vec![acct(&a, "-1")],
            ..Default::default()
        };
        assert!(neg.validate().is_err());
    }
}

#[cfg(test)]
mod template_tests {
    /// The documented template must not drift from the defaults `magnetd init` writes.
    #[test]
    fn genesis_template_params_match_defaults() {
        let raw = include_str!("../../genesis/app_state.template.json");
        let v: serde_json::Value = serde_json::from_str(raw).expect("template is JSON");
        let params: crate::params::ChainParams =
            serde_json::from_value(v["params"].clone()).expect("template params parse");
        assert_eq!(params, crate::params::ChainParams::default());
    }
}
