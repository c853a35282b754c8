//! magnet-bitnet: BitNet b1.58 (a LLaMA-compatible decoder with ternary BitLinear projections) in
//! burn — model and presets ([`config`], [`model`], [`quant`]), the training loop ([`train`]) over a
//! BPE tokenizer and sharded token files ([`data`]), safetensors checkpoints with exact resume
//! ([`checkpoint`]), and Hugging Face / GGUF export ([`export`], [`gguf`]). CPU (burn's pure-Rust
//! `flex` backend) by default, GPU with the `wgpu` or `cuda` feature.
// Tensor math is overloaded arithmetic on floats (and sizes derived from validated configs); the
// workspace's checked-math lint is for consensus code, which this crate is not.
#![allow(clippy::arithmetic_side_effects)]

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod export;
pub mod gguf;
pub mod model;
pub mod plot;
pub mod quant;
pub mod rng;
pub mod train;

pub use config::ModelConfig;
pub use export::{export_gguf, export_hf, load_hf};
pub use model::BitnetModel;
pub use train::{train, TrainConfig};
