//! magnet-infer: a ternary (BitNet b1.58) CPU inference engine and an OpenAI-compatible server.
//!
//! Weights are packed at 2 bits, activations quantized per token to int8, and every ternary
//! matmul is an exact integer dot product on the best SIMD path of the CPU ([`kernels`]).
//! [`Model`] loads a Hugging Face export dir (safetensors latent weights) or a GGUF file.
// Numerical code: index and size arithmetic is bounded by tensor shapes validated at load time.
#![allow(clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod bench;
pub mod cli;
pub mod config;
mod gguf;
pub mod int4;
pub mod kernels;
mod load;
pub mod matrix;
pub mod mem;
mod model;
pub mod par;
pub mod sampling;
pub mod server;
pub mod synth;
pub mod vecf32;

pub use config::ModelConfig;
pub use kernels::Isa;
pub use model::{FinishReason, Generation, HeadFormat, Layer, LoadOptions, Model, Session};
pub use sampling::SamplingParams;
