//! Builders for the ABCI requests that in-process tests send to [`magnet_chain::App`],
//! so every whole-app test drives the app with the same consensus params and block shape.

use bytes::Bytes;
use magnet_chain::genesis::AppGenesis;
use tendermint::abci::types::CommitInfo;
use tendermint::v0_38::abci::request;

/// CometBFT's default consensus params (Ed25519 validators, 21 MiB blocks).
pub fn consensus_params() -> tendermint::consensus::Params {
    magnet_chain::params::cometbft_default_consensus_params()
}

/// A block time `unix_secs` seconds after the epoch.
pub fn time(unix_secs: i64) -> tendermint::Time {
    tendermint::Time::from_unix_timestamp(unix_secs, 0).expect("block time in range")
}

pub fn init_chain_request(
    chain_id: &str,
    genesis_time: i64,
    genesis: &AppGenesis,
) -> request::InitChain {
    request::InitChain {
        time: time(genesis_time),
        chain_id: chain_id.to_string(),
        consensus_params: consensus_params(),
        validators: vec![],
        app_state_bytes: serde_json::to_vec(genesis).expect("genesis json").into(),
        initial_height: 1u32.into(),
    }
}

pub fn finalize_request(height: u64, block_time: i64, txs: Vec<Bytes>) -> request::FinalizeBlock {
    request::FinalizeBlock {
        txs,
        decided_last_commit: CommitInfo {
            round: Default::default(),
            votes: vec![],
        },
        misbehavior: vec![],
        hash: tendermint::Hash::None,
        height: height.try_into().expect("height"),
        time: time(block_time),
        next_validators_hash: tendermint::Hash::None,
        proposer_address: tendermint::account::Id::new([7; 20]),
    }
}
