//! Synthetic ternary models for benchmarks, generated directly in packed form from a seeded RNG
//! (never as f32): the shapes of BitNet b1.58-large (~700M) and BitNet b1.58 2B-4T.

use crate::config::ModelConfig;
use crate::int4::Int4Matrix;
use crate::kernels::Packing;
use crate::matrix::{Int8Matrix, RowTable, TernaryMatrix};
use crate::model::{HeadFormat, Layer, LoadOptions, Model};
use crate::sampling::Rng;

/// Benchmark shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// hidden 1536, 24 layers, 16/16 heads, intermediate 4096, vocab 32000, untied.
    #[value(name = "700m")]
    B700M,
    /// hidden 2560, 30 layers, 20/5 heads, intermediate 6912, vocab 128256, tied.
    #[value(name = "2b")]
    B2B,
}

impl Shape {
    /// Hyper-parameters of the shape.
    pub fn config(self) -> ModelConfig {
        let (hidden, layers, heads, kv, inter, vocab, tied) = match self {
            Shape::B700M => (1536, 24, 16, 16, 4096, 32000, false),
            Shape::B2B => (2560, 30, 20, 5, 6912, 128256, true),
        };
        ModelConfig {
            hidden_size: hidden,
            intermediate_size: inter,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: Some(kv),
            vocab_size: vocab,
            max_position_embeddings: 4096,
            rms_norm_eps: 1e-5,
            rope_theta: 500000.0,
            tie_word_embeddings: tied,
            bos_token_id: Some(1),
            eos_token_id: None,
            magnet_quant: Some("bitnet_b158".into()),
        }
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::B700M => "700M",
            Shape::B2B => "2B",
        }
    }
}

/// A random ternary matrix in `packing`: codes uniform over {-1, 0, 1}, scale keeping
/// activations O(1).
fn ternary(rng: &mut Rng, rows: usize, cols: usize, packing: Packing) -> TernaryMatrix {
    // Every valid byte: four 2-bit fields each 0, 1 or 2, or five base-3 digits.
    let table: Vec<u8> = match packing {
        Packing::Tq2 => (0..81u32)
            .map(|i| ((i % 3) | (i / 3 % 3) << 2 | (i / 9 % 3) << 4 | (i / 27 % 3) << 6) as u8)
            .collect(),
        Packing::Trit5 => (0..243u32).map(|i| i as u8).collect(),
    };
    let s = 1.0 / ((2.0 / 3.0) * cols as f32).sqrt();
    let mut m = TernaryMatrix::zeros_packed(rows, cols, s, packing);
    // Random codes everywhere (the padding of rows is never read against non-zero activations).
    for chunk in m.codes_mut().chunks_mut(4) {
        let mut bits = rng.next_u64();
        for b in chunk.iter_mut() {
            *b = table[(bits & 0xffff) as usize % table.len()];
            bits >>= 16;
        }
    }
    m
}

fn int8_table(rng: &mut Rng, rows: usize, cols: usize) -> Int8Matrix {
    let mut m = Int8Matrix::zeros(rows, cols);
    let mut q = vec![0i8; cols];
    for r in 0..rows {
        for chunk in q.chunks_mut(8) {
            let mut bits = rng.next_u64();
            for v in chunk.iter_mut() {
                *v = (bits & 0xff) as u8 as i8;
                bits >>= 8;
            }
        }
        m.set_row(r, &q, 0.02 / 127.0);
    }
    m
}

/// Builds a random model of `shape` (deterministic in `seed`); the LM head/embedding are int8
/// or int4 as `opts.head` resolves for the shape.
pub fn synthetic_model(shape: Shape, seed: u64, opts: &LoadOptions) -> anyhow::Result<Model> {
    let cfg = shape.config();
    let mut rng = Rng::new(seed);
    let d = cfg.hidden_size;
    let kv = cfg.kv_heads() * cfg.head_dim();
    let inter = cfg.intermediate_size;
    let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
    // Generated in the packing the model will use (no repacking at load).
    let p = opts.packing.unwrap_or_else(Packing::detect);
    for _ in 0..cfg.num_hidden_layers {
        let qkv = TernaryMatrix::concat(vec![
            ternary(&mut rng, d, d, p),
            ternary(&mut rng, kv, d, p),
            ternary(&mut rng, kv, d, p),
        ])?;
        let gate = ternary(&mut rng, inter, d, p);
        let up = ternary(&mut rng, inter, d, p);
        layers.push(Layer {
            attn_norm: vec![1.0; d],
            qkv,
            o: ternary(&mut rng, d, d, p),
            ffn_norm: vec![1.0; d],
            gate,
            up,
            down: ternary(&mut rng, d, inter, p),
        });
    }
    let vocab = cfg.vocab_size;
    let table = |rng: &mut Rng, tied: bool| -> anyhow::Result<RowTable> {
        Ok(match opts.head.resolve(vocab, d, tied) {
            HeadFormat::Int4 => {
                RowTable::Int4(Int4Matrix::random(vocab, d, rng.next_u64(), 0.02 / 7.0))
            }
            HeadFormat::Int8 => RowTable::Int8(int8_table(rng, vocab, d)),
            other => anyhow::bail!("synthetic models have int8 or int4 heads, not {other:?}"),
        })
    };
    let embed = table(&mut rng, cfg.tie_word_embeddings)?;
    let head = if cfg.tie_word_embeddings {
        None
    } else {
        Some(table(&mut rng, false)?)
    };
    Model::from_parts(cfg, embed, head, layers, vec![1.0; d], None, opts)
}
