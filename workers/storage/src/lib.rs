//! magnet-storage: erasure-coded object storage for MAGNET workers (paper §12).
//!
//! Objects are split by Reed-Solomon 4+2 ([`erasure`]) into content-addressed, checksummed shards,
//! kept on disk by each storage node ([`store`]), served over the signed TLS transport of
//! `magnet-p2p` ([`node`]), and kept whole by a repair daemon ([`daemon`]). [`provision`] measures
//! the SSD a worker offers for a storage tier.
pub mod cli;
pub mod erasure;
pub mod store;
