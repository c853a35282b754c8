//! Hugging Face export → reload is bit-exact; the GGUF file parses back with every header field
//! and every dequantized weight as intended.

#![allow(clippy::arithmetic_side_effects)]

use std::path::Path;

use burn::tensor::Device;
use half::f16;
use magnet_bitnet::config::ModelConfig;
use magnet_bitnet::data::{prepare, DataConfig, TextSource};
use magnet_bitnet::export::{
    export_gguf, export_hf, gguf_name, load_hf, permute_qk_rows, unpermute_qk_rows,
};
use magnet_bitnet::gguf::{GgmlType, GgufFile, Value};
use magnet_bitnet::model::{is_projection, tokens_tensor};
use magnet_bitnet::quant::{ternary_code, weight_scale_slice};
use magnet_bitnet::train::{StepParams, Trainer};
use magnet_bitnet::BitnetModel;

fn tokenizer(dir: &Path, vocab: usize) -> std::path::PathBuf {
    let cfg = DataConfig {
        source: TextSource::Generated,
        max_bytes: 60_000,
        vocab_size: vocab,
        ..DataConfig::default()
    };
    prepare(&cfg, dir, 3).expect("prepare");
    dir.join("tokenizer.json")
}

/// A model that has taken a few optimizer steps (so weights are not just the init).
fn trained(config: &ModelConfig) -> BitnetModel {
    let device = Device::flex();
    let mut t = Trainer::new(config, 5, &device).expect("trainer");
    let ids: Vec<u32> = (0..4 * 16)
        .map(|i| (i * 31 % config.vocab_size) as u32)
        .collect();
    let tgt: Vec<u32> = ids
        .iter()
        .map(|i| (i + 1) % config.vocab_size as u32)
        .collect();
    let p = StepParams {
        lr: 1e-2,
        weight_decay: 0.1,
        grad_clip: 1.0,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
    };
    for _ in 0..2 {
        t.train_step(&[(ids.clone(), tgt.clone())], 4, 16, p)
            .expect("step");
    }
    t.eval_model()
}

#[test]
fn hf_export_reloads_bit_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tok = tokenizer(&dir.path().join("data"), 300);
    for (ternary, tied) in [(true, true), (false, false)] {
        let mut config = ModelConfig::tiny().with_vocab(300).with_ternary(ternary);
        config.tie_word_embeddings = tied;
        let model = trained(&config);
        let out = dir.path().join(format!("hf-{ternary}-{tied}"));
        export_hf(&model, &tok, &out).expect("export");
        let cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("config.json")).expect("read"))
                .expect("json");
        assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
        assert_eq!(cfg["model_type"], "llama");
        assert_eq!(cfg["torch_dtype"], "float32");
        assert_eq!(cfg["num_key_value_heads"], 2);
        assert_eq!(cfg["tie_word_embeddings"], tied);
        assert_eq!(cfg.get("magnet_quant").is_some(), ternary);
        assert!(out.join("tokenizer.json").exists());

        let device = Device::flex();
        let back = load_hf(&out, &device).expect("reload");
        assert_eq!(back.config, model.config);
        let a = model.named_f32();
        let b = back.named_f32();
        assert_eq!(a.len(), b.len());
        assert_eq!(a.iter().any(|x| x.0 == "lm_head.weight"), !tied);
        for ((na, sa, va), (nb, sb, vb)) in a.iter().zip(&b) {
            assert_eq!((na, sa), (nb, sb));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert!(bits(va) == bits(vb), "{na} differs");
        }
        let ids: Vec<u32> = (0..12).map(|i| i * 17 % 300).collect();
        let la = model
            .logits(tokens_tensor(&ids, 1, 12, &device))
            .into_data();
        let lb = back.logits(tokens_tensor(&ids, 1, 12, &device)).into_data();
        assert_eq!(la, lb, "same weights, same logits");
    }
}

#[test]
fn qk_permutation_is_llama_cpp_order_and_invertible() {
    // 2 heads of dim 4, 1 column: rows [h0: 0 1 2 3, h1: 4 5 6 7] -> [0 2 1 3, 4 6 5 7].
    let w: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let p = permute_qk_rows(&w, 8, 1, 2);
    assert_eq!(p, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
    assert_eq!(unpermute_qk_rows(&p, 8, 1, 2), w);
}

#[test]
fn gguf_parses_back_with_every_field_and_weight() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tok_path = tokenizer(&dir.path().join("data"), 300);
    let config = ModelConfig {
        hidden_size: 256,
        intermediate_size: 512,
        num_hidden_layers: 1,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        max_position_embeddings: 128,
        ..ModelConfig::tiny().with_vocab(300)
    };
    let model = trained(&config);
    let path = dir.path().join("model.gguf");
    export_gguf(&model, &tok_path, &path).expect("export");
    let bytes = std::fs::read(&path).expect("read");
    let g = GgufFile::parse(&bytes).expect("parse");
    assert_eq!(&bytes[0..4], b"GGUF");
    assert_eq!(g.version, 3);
    let u = |k: &str| match g.get(k) {
        Some(Value::U32(v)) => *v as usize,
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(
        g.get("general.architecture"),
        Some(&Value::String("llama".into()))
    );
    assert_eq!(u("general.alignment"), 32);
    assert_eq!(u("general.file_type"), 37);
    assert_eq!(u("llama.context_length"), 128);
    assert_eq!(u("llama.embedding_length"), 256);
    assert_eq!(u("llama.block_count"), 1);
    assert_eq!(u("llama.feed_forward_length"), 512);
    assert_eq!(u("llama.attention.head_count"), 4);
    assert_eq!(u("llama.attention.head_count_kv"), 2);
    assert_eq!(u("llama.rope.dimension_count"), 64);
    assert_eq!(u("llama.vocab_size"), 300);
    assert_eq!(g.get("llama.rope.freq_base"), Some(&Value::F32(10_000.0)));
    assert_eq!(
        g.get("llama.attention.layer_norm_rms_epsilon"),
        Some(&Value::F32(1e-5))
    );
    assert_eq!(
        g.get("tokenizer.ggml.model"),
        Some(&Value::String("gpt2".into()))
    );
    assert_eq!(
        g.get("tokenizer.ggml.pre"),
        Some(&Value::String("gpt-2".into()))
    );
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path).expect("tokenizer");
    match g.get("tokenizer.ggml.tokens") {
        Some(Value::Array(t)) => {
            assert_eq!(t.len(), 300);
            for (id, v) in t.iter().enumerate() {
                let want = tokenizer
                    .id_to_token(id as u32)
                    .unwrap_or_else(|| format!("[PAD{id}]"));
                assert_eq!(v, &Value::String(want));
            }
        }
        other => panic!("tokens: {other:?}"),
    }
    match (
        g.get("tokenizer.ggml.token_type"),
        g.get("tokenizer.ggml.merges"),
    ) {
        (Some(Value::Array(types)), Some(Value::Array(merges))) => {
            assert_eq!(types[0], Value::I32(3), "<|endoftext|> is a control token");
            assert!(types[1..].iter().all(|t| *t != Value::I32(3)));
            assert!(!merges.is_empty());
            assert!(merges
                .iter()
                .all(|m| matches!(m, Value::String(s) if s.split(' ').count() == 2)));
        }
        other => panic!("token types / merges: {other:?}"),
    }
    assert_eq!(g.get("tokenizer.ggml.eos_token_id"), Some(&Value::U32(0)));
    assert_eq!(g.get("tokenizer.ggml.bos_token_id"), Some(&Value::U32(0)));

    let named = model.named_f32();
    assert_eq!(g.order.len(), named.len());
    assert!(!g.tensors.contains_key("output.weight"), "tied head");
    for (hf, shape, values) in &named {
        let name = gguf_name(hf).expect("name");
        let (dims, ty, range) = &g.tensors[&name];
        let want_dims: Vec<u64> = shape.iter().rev().map(|d| *d as u64).collect();
        assert_eq!(dims, &want_dims, "{name} dims");
        assert_eq!(range.start % 32, 0, "{name} aligned");
        let got = g.tensor_f32(&bytes, &name).expect("tensor");
        if is_projection(hf) {
            assert_eq!(*ty, GgmlType::Tq2_0, "{name}");
            let heads = if hf.contains("q_proj") {
                Some(4)
            } else if hf.contains("k_proj") {
                Some(2)
            } else {
                None
            };
            let got = match heads {
                Some(h) => unpermute_qk_rows(&got, shape[0], shape[1], h),
                None => got,
            };
            let s = weight_scale_slice(values);
            let d = f16::from_f32(s).to_f32();
            for (i, (w, x)) in values.iter().zip(&got).enumerate() {
                let want = f32::from(ternary_code(*w, s)) * d;
                assert_eq!(*x, want, "{name}[{i}]");
            }
        } else {
            assert_eq!(*ty, GgmlType::F32, "{name}");
            assert_eq!(&got, values, "{name}");
        }
    }
    // Widths that are not a multiple of 256 cannot be TQ2_0: a clear error, not a bad file.
    let small = trained(&ModelConfig::tiny().with_vocab(300));
    let err = export_gguf(&small, &tok_path, &dir.path().join("bad.gguf")).expect_err("tiny");
    assert!(err.to_string().contains("multiple of 256"), "{err}");
}
