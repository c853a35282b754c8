//! Hugging Face export dir: `config.json`, `model.safetensors` (f32 latent weights, quantized
//! here with the trainer's absmean rule) and `tokenizer.json`.

use std::path::Path;

use anyhow::Context;
use safetensors::{Dtype, SafeTensors};

use crate::config::ModelConfig;
use crate::matrix::TernaryMatrix;
use crate::model::{Layer, LoadOptions, Model};

/// Tensor `name` as f32 with its shape (F32, F16 or BF16 on disk).
pub(crate) fn tensor_f32(
    st: &SafeTensors<'_>,
    name: &str,
) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
    let t = st
        .tensor(name)
        .with_context(|| format!("tensor {name} missing from model.safetensors"))?;
    let bytes = t.data();
    let vals: Vec<f32> = match t.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => anyhow::bail!(
            "tensor {name}: dtype {other:?} not supported (expected F32, F16 or BF16)"
        ),
    };
    Ok((vals, t.shape().to_vec()))
}

fn matrix(st: &SafeTensors<'_>, name: &str, rows: usize, cols: usize) -> anyhow::Result<Vec<f32>> {
    let (v, shape) = tensor_f32(st, name)?;
    anyhow::ensure!(
        shape == [rows, cols],
        "tensor {name}: shape {shape:?}, expected [{rows}, {cols}]"
    );
    Ok(v)
}

fn vector(st: &SafeTensors<'_>, name: &str, len: usize) -> anyhow::Result<Vec<f32>> {
    let (v, shape) = tensor_f32(st, name)?;
    anyhow::ensure!(
        shape == [len],
        "tensor {name}: shape {shape:?}, expected [{len}]"
    );
    Ok(v)
}

fn ternary(
    st: &SafeTensors<'_>,
    name: &str,
    rows: usize,
    cols: usize,
) -> anyhow::Result<TernaryMatrix> {
    TernaryMatrix::from_latent(&matrix(st, name, rows, cols)?, rows, cols)
}

/// Loads an HF export dir.
pub(crate) fn load_hf_dir(dir: &Path, opts: &LoadOptions) -> anyhow::Result<Model> {
    let cfg_path = dir.join("config.json");
    let config: ModelConfig = serde_json::from_slice(
        &std::fs::read(&cfg_path).with_context(|| format!("reading {}", cfg_path.display()))?,
    )
    .with_context(|| format!("parsing {}", cfg_path.display()))?;
    config.validate()?;
    anyhow::ensure!(
        config.magnet_quant.as_deref() == Some("bitnet_b158"),
        "{}: magnet_quant is {:?}; this engine serves BitLinear (bitnet_b158) models only",
        cfg_path.display(),
        config.magnet_quant
    );
    let st_path = dir.join("model.safetensors");
    let bytes =
        std::fs::read(&st_path).with_context(|| format!("reading {}", st_path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("parsing {}", st_path.display()))?;

    let d = config.hidden_size;
    let inter = config.intermediate_size;
    let kv_dim = config.kv_heads() * config.head_dim();
    let vocab = config.vocab_size;
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let q = ternary(&st, &format!("{p}.self_attn.q_proj.weight"), d, d)?;
        let k = ternary(&st, &format!("{p}.self_attn.k_proj.weight"), kv_dim, d)?;
        let v = ternary(&st, &format!("{p}.self_attn.v_proj.weight"), kv_dim, d)?;
        let gate = ternary(&st, &format!("{p}.mlp.gate_proj.weight"), inter, d)?;
        let up = ternary(&st, &format!("{p}.mlp.up_proj.weight"), inter, d)?;
        layers.push(Layer {
            attn_norm: vector(&st, &format!("{p}.input_layernorm.weight"), d)?,
            qkv: TernaryMatrix::concat(vec![q, k, v])?,
            o: ternary(&st, &format!("{p}.self_attn.o_proj.weight"), d, d)?,
            ffn_norm: vector(&st, &format!("{p}.post_attention_layernorm.weight"), d)?,
            gate,
            up,
            down: ternary(&st, &format!("{p}.mlp.down_proj.weight"), d, inter)?,
        });
    }
    let embed_w = matrix(&st, "model.embed_tokens.weight", vocab, d)?;
    let (embed, lm_head) = if config.tie_word_embeddings {
        (opts.head.table(embed_w, vocab, d, true)?, None)
    } else {
        let head = matrix(&st, "lm_head.weight", vocab, d)?;
        (
            crate::matrix::RowTable::F32 {
                rows: vocab,
                cols: d,
                data: embed_w,
            },
            Some(opts.head.table(head, vocab, d, false)?),
        )
    };
    let final_norm = vector(&st, "model.norm.weight", d)?;
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = if tok_path.exists() {
        Some(
            tokenizers::Tokenizer::from_file(&tok_path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", tok_path.display()))?,
        )
    } else {
        None
    };
    Model::from_parts(config, embed, lm_head, layers, final_norm, tokenizer, opts)
}
