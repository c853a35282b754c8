//! magnet-infer
pub mod cli;
