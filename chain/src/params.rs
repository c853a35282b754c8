//! Chain parameters: the gas and fee model that bounds the work of every tx and block.

use serde::{Deserialize, Serialize};

/// Parts per million: the fixed-point unit for every ratio in consensus code.
pub const PPM: u128 = 1_000_000;

/// The chain's native denomination (1 MAG = 10^6 umag).
pub const BOND_DENOM: &str = "umag";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainParams {
    /// Largest accepted encoded tx, in bytes.
    pub max_tx_bytes: u64,
    /// Most messages in one tx.
    pub max_msgs_per_tx: u64,
    /// Longest memo, in bytes.
    pub max_memo_bytes: u64,
    /// Gas charged once per tx (covers decoding and one secp256k1 verification).
    pub gas_per_tx: u64,
    /// Gas per encoded byte of the tx.
    pub gas_per_byte: u64,
    /// Gas per message executed.
    pub gas_per_msg: u64,
    /// Largest gas limit a single tx may declare.
    pub max_gas_per_tx: u64,
    /// Sum of declared gas limits a block may carry (enforced in Prepare/ProcessProposal).
    pub max_gas_per_block: u64,
    /// Minimum fee per unit of gas, in millionths of a umag.
    pub min_gas_price_ppm: u64,
    /// Denomination fees must be paid in.
    pub fee_denom: String,
}

impl Default for ChainParams {
    fn default() -> Self {
        Self {
            max_tx_bytes: 64 * 1024,
            max_msgs_per_tx: 64,
            max_memo_bytes: 256,
            gas_per_tx: 20_000,
            gas_per_byte: 10,
            gas_per_msg: 10_000,
            max_gas_per_tx: 10_000_000,
            max_gas_per_block: 200_000_000,
            // 0.01 umag per gas: a plain send (≈ 33k gas) costs ≈ 330 umag.
            min_gas_price_ppm: 10_000,
            fee_denom: BOND_DENOM.to_string(),
        }
    }
}

impl ChainParams {
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_tx_bytes", self.max_tx_bytes),
            ("max_msgs_per_tx", self.max_msgs_per_tx),
            ("gas_per_tx", self.gas_per_tx),
            ("max_gas_per_tx", self.max_gas_per_tx),
            ("max_gas_per_block", self.max_gas_per_block),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("param {name}: expected > 0, got 0"));
            }
        }
        if self.max_gas_per_tx > self.max_gas_per_block {
            return Err(format!(
                "param max_gas_per_tx: expected <= max_gas_per_block ({}), got {}",
                self.max_gas_per_block, self.max_gas_per_tx
            ));
        }
        crate::bank::validate_denom(&self.fee_denom)
            .map_err(|e| format!("param fee_denom: {e}"))?;
        Ok(())
    }

    /// Fee required for a declared gas limit: ceil(gas_limit · price_ppm / 10^6).
    pub fn required_fee(&self, gas_limit: u64) -> u128 {
        // u64 × u64 always fits in u128: the fallback is unreachable.
        let num = u128::from(gas_limit).saturating_mul(u128::from(self.min_gas_price_ppm));
        num.div_ceil(PPM)
    }

    /// Gas a tx consumes: base + bytes + messages, saturating (a saturated value is
    /// always above `max_gas_per_tx`, so it is refused rather than wrapped).
    pub fn gas_used(&self, tx_bytes: usize, n_msgs: usize) -> u64 {
        let bytes = u64::try_from(tx_bytes).unwrap_or(u64::MAX);
        let msgs = u64::try_from(n_msgs).unwrap_or(u64::MAX);
        self.gas_per_tx
            .saturating_add(bytes.saturating_mul(self.gas_per_byte))
            .saturating_add(msgs.saturating_mul(self.gas_per_msg))
    }
}

/// CometBFT's default consensus params (Ed25519 validators, 21 MiB blocks).
pub fn cometbft_default_consensus_params() -> tendermint::consensus::Params {
    tendermint::consensus::Params {
        block: tendermint::block::Size {
            max_bytes: 22_020_096,
            max_gas: -1,
            time_iota_ms: 1_000,
        },
        evidence: tendermint::evidence::Params {
            max_age_num_blocks: 100_000,
            max_age_duration: tendermint::evidence::Duration(std::time::Duration::from_secs(
                172_800,
            )),
            max_bytes: 1_048_576,
        },
        validator: tendermint::consensus::params::ValidatorParams {
            pub_key_types: vec![tendermint::public_key::Algorithm::Ed25519],
        },
        version: Some(tendermint::consensus::params::VersionParams { app: 1 }),
        abci: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn required_fee_is_ceiling_of_exact_product(gas in any::<u64>(), price in any::<u64>()) {
            let p = ChainParams { min_gas_price_ppm: price, ..ChainParams::default() };
            let fee = p.required_fee(gas);
            let exact = u128::from(gas) * u128::from(price);
            // fee·10^6 >= exact and (fee-1)·10^6 < exact
            prop_assert!(fee * PPM >= exact);
            if fee > 0 { prop_assert!((fee - 1) * PPM < exact); }
        }

        #[test]
        fn gas_used_is_monotone(bytes in 0usize..1_000_000, msgs in 0usize..1000) {
            let p = ChainParams::default();
            prop_assert!(p.gas_used(bytes + 1, msgs) > p.gas_used(bytes, msgs));
            prop_assert!(p.gas_used(bytes, msgs + 1) > p.gas_used(bytes, msgs));
        }
    }

    #[test]
    fn default_params_are_valid_and_zero_limits_are_not() {
        assert_eq!(ChainParams::default().validate(), Ok(()));
        let bad = ChainParams {
            max_gas_per_tx: 0,
            ..ChainParams::default()
        };
        assert!(bad.validate().unwrap_err().contains("max_gas_per_tx"));
    }
}
