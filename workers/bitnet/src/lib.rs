//! magnet-bitnet
pub mod cli;
