//! GGUF (TQ2_0, F16/F32, llama.cpp q/k permutation, tokenizer metadata) against the HF dir of the
//! same weights.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]

mod common;

use common::{max_diff, write_checkpoint, write_gguf, write_gguf_as, Spec};
use magnet_infer::{LoadOptions, Model, SamplingParams};

#[test]
fn gguf_model_matches_the_hf_dir_of_the_same_weights() {
    for tied in [false, true] {
        // Widths that are whole 256-weight blocks, as ggml's TQ2_0 rows require.
        let spec = Spec {
            hidden: 256,
            inter: 512,
            heads: 4,
            kv_heads: 2,
            tied,
            ..Spec::tiny()
        };
        let dir = tempfile::tempdir().unwrap();
        let (_, tensors) = write_checkpoint(dir.path(), &spec, 31);
        let gguf = dir.path().join("model.gguf");
        write_gguf(&gguf, &spec, &tensors, &dir.path().join("tokenizer.json"));
        let hf = Model::load(dir.path()).unwrap();
        let gg = Model::load_with(&gguf, &LoadOptions::default()).unwrap();
        assert_eq!(gg.config.num_key_value_heads, Some(2));
        assert_eq!(gg.config.tie_word_embeddings, tied);
        let tokens: Vec<u32> = vec![5, 40, 41, 42, 100, 7, 8, 9, 250, 1];
        let (diff, scale) = max_diff(
            &gg.forward_logits(&tokens).unwrap(),
            &hf.forward_logits(&tokens).unwrap(),
        );
        // The GGUF holds the scale in f16 and the embedding in f16: 1 % of the largest logit.
        assert!(
            diff <= 0.01 * scale,
            "tied={tied}: max |diff| {diff} vs max |logit| {scale}"
        );

        // The tokenizer rebuilt from tokenizer.ggml.* round-trips text, and the model generates.
        let text = "hello magnet, the quick brown fox";
        let ids = gg.encode(text).unwrap();
        assert!(ids.len() > 3 && ids.len() < text.len(), "{ids:?}");
        assert_eq!(gg.decode(&ids).unwrap(), text);
        let out = gg
            .generate(&ids, 5, &SamplingParams::default(), |_| true)
            .unwrap();
        assert!(out.tokens.len() <= 5);
    }
}

#[test]
fn i2_s_gguf_gives_the_same_ternary_weights_as_tq2_0() {
    // bitnet.cpp's I2_S and ggml's TQ2_0 of the same checkpoint, with the same (f16-rounded)
    // scales: the same weights, so the same logits to the bit; any slip in the I2_S bit order
    // would change them.
    let spec = Spec {
        hidden: 256,
        inter: 384,
        heads: 4,
        kv_heads: 2,
        ..Spec::tiny()
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, tensors) = write_checkpoint(dir.path(), &spec, 17);
    let tok = dir.path().join("tokenizer.json");
    let (tq, i2) = (dir.path().join("tq.gguf"), dir.path().join("i2.gguf"));
    write_gguf_as(&tq, &spec, &tensors, &tok, false);
    write_gguf_as(&i2, &spec, &tensors, &tok, true);
    let tokens: Vec<u32> = vec![3, 14, 15, 92, 65, 35, 89, 79];
    let bits = |l: Vec<Vec<f32>>| -> Vec<Vec<u32>> {
        l.iter()
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    let a = Model::load(&tq).unwrap().forward_logits(&tokens).unwrap();
    let b = Model::load(&i2).unwrap().forward_logits(&tokens).unwrap();
    let hf = Model::load(dir.path())
        .unwrap()
        .forward_logits(&tokens)
        .unwrap();
    let (d, scale) = max_diff(&b, &hf);
    assert!(d <= 0.01 * scale, "I2_S vs HF: max |diff| {d} vs {scale}");
    assert!(
        bits(a) == bits(b),
        "I2_S and TQ2_0 of the same weights differ"
    );
    // A corrupted I2_S code is refused with an error.
    let mut bytes = std::fs::read(&i2).unwrap();
    let at = bytes.len() - 40;
    bytes[at] = 0xff;
    std::fs::write(&i2, &bytes).unwrap();
    let _ = Model::load(&i2); // any outcome but a panic (the byte may fall in padding)
}

#[test]
fn corrupt_gguf_files_are_errors() {
    let spec = Spec {
        hidden: 256,
        inter: 256,
        heads: 4,
        kv_heads: 4,
        ..Spec::tiny()
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, tensors) = write_checkpoint(dir.path(), &spec, 1);
    let path = dir.path().join("m.gguf");
    write_gguf(&path, &spec, &tensors, &dir.path().join("tokenizer.json"));
    let good = std::fs::read(&path).unwrap();
    for cut in [10usize, 100, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..cut]).unwrap();
        assert!(Model::load(&path).is_err(), "truncated at {cut}");
    }
}
