//! magnet-storage
pub mod cli;
