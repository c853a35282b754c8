//! `magnet-chain`: the MAGNET chain application (`magnetd`).
//!
//! An ABCI++ app for CometBFT v0.38 ([`app`], [`server`]) whose state lives in
//! RocksDB behind a Jellyfish Merkle tree (cnidarium); the JMT root is the app hash.
//! Transactions are Cosmos SDK `TxRaw`s signed in SIGN_MODE_DIRECT with secp256k1
//! ([`tx`], [`auth`]); [`bank`] holds balances and supply. [`client`] builds and
//! signs txs with cosmrs and talks to nodes over CometBFT RPC; [`home`] implements
//! the operator commands (init, gentx, collect, export).

// Tests may unwrap and do plain arithmetic; the lints guard consensus code.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::arithmetic_side_effects))]

pub mod app;
pub mod auth;
pub mod bank;
pub mod client;
pub mod compute;
pub mod error;
pub mod genesis;
pub mod gov;
pub mod home;
pub mod panel;
pub mod params;
pub mod query;
pub mod rewards;
pub mod server;
pub mod state_key;
pub mod tx;

pub use app::App;
pub use error::{TxError, TxResult};
