//! magnet-storage: erasure-coded object storage for MAGNET workers (paper §12).
//!
//! Objects are split by Reed-Solomon 4+2 ([`erasure`]) into content-addressed, checksummed shards,
//! kept on disk by each storage node ([`store`]), served over the signed TLS transport of
//! `magnet-p2p` ([`node`]), placed and read back by [`client`], and kept whole by the repair
//! [`daemon`]. [`provision`] measures the SSD a worker offers for a storage tier.
#![allow(clippy::arithmetic_side_effects)] // sizes and counters bounded by config; peer-supplied values are checked

pub mod bench;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod erasure;
pub mod node;
pub mod provision;
pub mod store;
