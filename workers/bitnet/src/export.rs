//! Export to Hugging Face (`config.json` + `model.safetensors` + `tokenizer.json`) and to GGUF
//! (llama architecture, TQ2_0 ternary projections), and re-import of the HF directory.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};
use burn::tensor::Device;
use serde_json::json;

use crate::checkpoint::{F32Tensor, TensorFile};
use crate::config::ModelConfig;
use crate::gguf::{pack_tq2_0, write_gguf, GgmlType, GgufTensor, Value, TQ2_BLOCK};
use crate::model::{is_projection, BitnetModel, ModelError};
use crate::quant::{ternary_code, weight_scale_slice};

/// The HF `config.json` of a model.
pub fn hf_config_json(c: &ModelConfig) -> serde_json::Value {
    let mut v = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "vocab_size": c.vocab_size,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": c.tie_word_embeddings,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "hidden_act": "silu",
        "torch_dtype": "float32",
    });
    if c.ternary {
        v["magnet_quant"] = json!("bitnet_b158");
    }
    v
}

/// Reads a model config back from an HF `config.json`.
pub fn model_config_from_hf(v: &serde_json::Value) -> anyhow::Result<ModelConfig> {
    let u = |k: &str| -> anyhow::Result<usize> {
        let n = v
            .get(k)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("config.json: missing integer {k}"))?;
        usize::try_from(n).with_context(|| format!("config.json: {k} too large"))
    };
    let f = |k: &str, d: f64| v.get(k).and_then(serde_json::Value::as_f64).unwrap_or(d);
    let c = ModelConfig {
        vocab_size: u("vocab_size")?,
        hidden_size: u("hidden_size")?,
        intermediate_size: u("intermediate_size")?,
        num_hidden_layers: u("num_hidden_layers")?,
        num_attention_heads: u("num_attention_heads")?,
        num_key_value_heads: u("num_key_value_heads").or_else(|_| u("num_attention_heads"))?,
        max_position_embeddings: u("max_position_embeddings")?,
        rms_norm_eps: f("rms_norm_eps", 1e-5),
        rope_theta: f("rope_theta", 10_000.0),
        tie_word_embeddings: v
            .get("tie_word_embeddings")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
        ternary: v.get("magnet_quant").and_then(serde_json::Value::as_str) == Some("bitnet_b158"),
        bos_token_id: u("bos_token_id").unwrap_or(0) as u32,
        eos_token_id: u("eos_token_id").unwrap_or(0) as u32,
        init_std: 0.02,
    };
    c.validate()?;
    Ok(c)
}

/// Writes `config.json`, `model.safetensors` (f32 latent weights, HF LLaMA names) and
/// `tokenizer.json` into `out_dir`.
pub fn export_hf(model: &BitnetModel, tokenizer_json: &Path, out_dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out_dir).with_context(|| format!("create {}", out_dir.display()))?;
    fs::write(
        out_dir.join("config.json"),
        serde_json::to_vec_pretty(&hf_config_json(&model.config))?,
    )?;
    let mut f = TensorFile::default();
    for (name, shape, values) in model.named_f32() {
        f.tensors.insert(name, F32Tensor { shape, values });
    }
    f.metadata.insert("format".into(), "pt".into());
    f.save(&out_dir.join("model.safetensors"))?;
    fs::copy(tokenizer_json, out_dir.join("tokenizer.json"))
        .with_context(|| format!("copy {}", tokenizer_json.display()))?;
    Ok(())
}

/// Loads an HF export (ours, or any f32 LLaMA safetensors with the same names).
pub fn load_hf(dir: &Path, device: &Device) -> anyhow::Result<BitnetModel> {
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join("config.json")).context("read config.json")?)?;
    let config = model_config_from_hf(&cfg)?;
    let file = TensorFile::load(&dir.join("model.safetensors"))?;
    Ok(BitnetModel::from_fn(&config, device, |name, shape| {
        let t = file
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::Missing(name.to_string()))?;
        if t.shape != shape {
            return Err(ModelError::Shape {
                name: name.into(),
                expected: shape.to_vec(),
                got: t.shape.clone(),
            });
        }
        Ok(t.values.clone())
    })?)
}

/// llama.cpp's name for an HF tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(n) = fixed {
        return Some(n.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, tail) = rest.split_once('.')?;
    let part = match tail {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{part}.weight"))
}

/// Reorders the rows of a q/k weight `[heads·hd, in]` the way llama.cpp's HF converter does, so that
/// ggml's interleaved (pairs 2i, 2i+1) RoPE equals HF rotate_half (pairs i, i + hd/2):
/// new row `h·hd + 2i + j` = old row `h·hd + j·hd/2 + i`.
pub fn permute_qk_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + j * half + i;
                let dst = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Inverse of [`permute_qk_rows`].
pub fn unpermute_qk_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let dst = h * hd + j * half + i;
                let src = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// `tokenizer.ggml.*` metadata from a HF byte-level BPE `tokenizer.json`.
pub fn gguf_tokenizer_metadata(
    tokenizer_json: &serde_json::Value,
    vocab_size: usize,
    bos: u32,
    eos: u32,
) -> anyhow::Result<Vec<(String, Value)>> {
    let model = tokenizer_json
        .get("model")
        .context("tokenizer.json: no model")?;
    if model.get("type").and_then(serde_json::Value::as_str) != Some("BPE") {
        bail!("tokenizer.json: expected a BPE model");
    }
    let vocab = model
        .get("vocab")
        .and_then(serde_json::Value::as_object)
        .context("tokenizer.json: no vocab")?;
    let mut tokens = vec![String::new(); vocab_size];
    let mut types = vec![Value::I32(1); vocab_size];
    for (tok, id) in vocab {
        let id = id
            .as_u64()
            .and_then(|i| usize::try_from(i).ok())
            .context("tokenizer.json: bad id")?;
        if id >= vocab_size {
            bail!("tokenizer.json: token id {id} >= vocab_size {vocab_size}");
        }
        tokens[id] = tok.clone();
    }
    if let Some(added) = tokenizer_json
        .get("added_tokens")
        .and_then(serde_json::Value::as_array)
    {
        for a in added {
            let id = a
                .get("id")
                .and_then(serde_json::Value::as_u64)
                .and_then(|i| usize::try_from(i).ok());
            let content = a.get("content").and_then(serde_json::Value::as_str);
            if let (Some(id), Some(content)) = (id, content) {
                if id < vocab_size {
                    tokens[id] = content.to_string();
                    types[id] = Value::I32(3); // control
                }
            }
        }
    }
    // Unused ids (vocab rounded up) still need distinct strings.
    for (i, t) in tokens.iter_mut().enumerate() {
        if t.is_empty() {
            *t = format!("[PAD{i}]");
            types[i] = Value::I32(5); // unused
        }
    }
    let merges = model
        .get("merges")
        .and_then(serde_json::Value::as_array)
        .context("tokenizer.json: no merges")?;
    let merges: Vec<Value> = merges
        .iter()
        .filter_map(|m| match m {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(p) => {
                Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?))
            }
            _ => None,
        })
        .map(Value::String)
        .collect();
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        // "gpt-2" selects the GPT-2 pre-tokenizer regex in llama.cpp, the one HF ByteLevel uses.
        ("tokenizer.ggml.pre".into(), Value::String("gpt-2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(bos)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ])
}

/// llama.cpp's file type of a mostly-TQ2_0 model (LLAMA_FTYPE_MOSTLY_TQ2_0).
pub const FTYPE_MOSTLY_TQ2_0: u32 = 37;

/// The GGUF bytes of a model: llama metadata, tokenizer, projections as TQ2_0 (ternary models) or
/// F32 (full-precision ones), norms and embedding F32.
pub fn gguf_bytes(
    model: &BitnetModel,
    tokenizer_json: &serde_json::Value,
    name: &str,
) -> anyhow::Result<Vec<u8>> {
    let c = &model.config;
    if c.ternary {
        let widths = [c.hidden_size, c.intermediate_size];
        if let Some(w) = widths.iter().find(|w| *w % TQ2_BLOCK != 0) {
            bail!("TQ2_0 needs every projection's input width to be a multiple of {TQ2_BLOCK}, got {w}");
        }
    }
    let u = |x: usize| Value::U32(x as u32);
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String(name.into())),
        (
            "general.alignment".into(),
            Value::U32(crate::gguf::ALIGNMENT as u32),
        ),
        (
            "general.file_type".into(),
            Value::U32(if c.ternary { FTYPE_MOSTLY_TQ2_0 } else { 0 }),
        ),
        ("llama.context_length".into(), u(c.max_position_embeddings)),
        ("llama.embedding_length".into(), u(c.hidden_size)),
        ("llama.block_count".into(), u(c.num_hidden_layers)),
        ("llama.feed_forward_length".into(), u(c.intermediate_size)),
        (
            "llama.attention.head_count".into(),
            u(c.num_attention_heads),
        ),
        (
            "llama.attention.head_count_kv".into(),
            u(c.num_key_value_heads),
        ),
        ("llama.rope.dimension_count".into(), u(c.head_dim())),
        (
            "llama.rope.freq_base".into(),
            Value::F32(c.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(c.rms_norm_eps as f32),
        ),
        ("llama.vocab_size".into(), u(c.vocab_size)),
    ];
    meta.extend(gguf_tokenizer_metadata(
        tokenizer_json,
        c.vocab_size,
        c.bos_token_id,
        c.eos_token_id,
    )?);
    let mut tensors = Vec::new();
    for (hf, shape, values) in model.named_f32() {
        let gname = gguf_name(&hf).with_context(|| format!("no GGUF name for {hf}"))?;
        let dims: Vec<u64> = shape.iter().rev().map(|d| *d as u64).collect();
        // Scale of the tensor as trained (before the row permutation, which could only change the
        // summation order).
        let scale = weight_scale_slice(&values);
        let values = if hf.ends_with("q_proj.weight") {
            permute_qk_rows(&values, shape[0], shape[1], c.num_attention_heads)
        } else if hf.ends_with("k_proj.weight") {
            permute_qk_rows(&values, shape[0], shape[1], c.num_key_value_heads)
        } else {
            values
        };
        let (ty, data) = if c.ternary && is_projection(&hf) {
            let codes: Vec<i8> = values.iter().map(|w| ternary_code(*w, scale)).collect();
            (GgmlType::Tq2_0, pack_tq2_0(&codes, scale))
        } else {
            (
                GgmlType::F32,
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            )
        };
        tensors.push(GgufTensor {
            name: gname,
            dims,
            ty,
            data,
        });
    }
    Ok(write_gguf(&meta, &tensors))
}

/// Writes `model` as a GGUF file that llama.cpp loads, with the tokenizer from `tokenizer_json`.
pub fn export_gguf(model: &BitnetModel, tokenizer_json: &Path, out: &Path) -> anyhow::Result<()> {
    let tok: serde_json::Value = serde_json::from_slice(
        &fs::read(tokenizer_json).with_context(|| format!("read {}", tokenizer_json.display()))?,
    )?;
    let name = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("magnet-bitnet");
    let bytes = gguf_bytes(model, &tok, name)?;
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(out, bytes).with_context(|| format!("write {}", out.display()))?;
    Ok(())
}
