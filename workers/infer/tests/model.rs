//! Engine vs the shared BitLinear semantics on a checkpoint written in the trainer's HF format.
#![allow(clippy::unwrap_used, clippy::arithmetic_side_effects)]

mod common;

use common::{max_diff, reference_logits, write_checkpoint, Spec};
use magnet_infer::kernels::Packing;
use magnet_infer::{HeadFormat, Isa, LoadOptions, Model, SamplingParams};

fn bits(l: &[Vec<f32>]) -> Vec<Vec<u32>> {
    l.iter()
        .map(|r| r.iter().map(|v| v.to_bits()).collect())
        .collect()
}

#[test]
fn logits_match_the_reference_forward_within_tolerance() {
    for tied in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            tied,
            ..Spec::tiny()
        };
        let (_, tensors) = write_checkpoint(dir.path(), &spec, 5);
        let model = Model::load(dir.path()).unwrap();
        let tokens = model.encode("hello magnet, the quick brown fox").unwrap();
        assert!(tokens.len() >= 5, "tokenizer produced {tokens:?}");
        let got = model.forward_logits(&tokens).unwrap();
        let want = reference_logits(&spec, &tensors, &tokens);
        assert_eq!(got.len(), tokens.len());
        let (diff, scale) = max_diff(&got, &want);
        // Stated tolerance: 1e-3 of the largest logit (float order differs; int dot is exact).
        assert!(
            diff <= 1e-3 * scale.max(1.0),
            "tied={tied}: max |diff| {diff} vs max |logit| {scale}"
        );
    }
}

#[test]
fn kv_cache_decode_gives_the_same_bits_as_batched_prefill() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _) = write_checkpoint(dir.path(), &Spec::tiny(), 9);
    let model = Model::load(dir.path()).unwrap();
    let tokens: Vec<u32> = vec![3, 17, 42, 5, 99, 100, 7, 250];
    let batched = model.forward_logits(&tokens).unwrap();
    let mut s = model.new_session();
    let mut stepped = Vec::new();
    stepped.extend(model.forward(&mut s, &tokens[..3], true).unwrap());
    for &t in &tokens[3..] {
        stepped.extend(model.forward(&mut s, &[t], false).unwrap());
    }
    assert_eq!(bits(&batched), bits(&stepped));
}

#[test]
fn decode_across_kv_cache_growth_matches_prefill_for_any_thread_count_and_simd_path() {
    // The cache starts at 64 positions per head and doubles; 100 positions cross that, with
    // single-token steps (the barrier-free per-kv-head attention path) on 1-3 threads, and on 2
    // threads with every SIMD path.
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        heads: 4,
        kv_heads: 2,
        ..Spec::tiny()
    };
    write_checkpoint(dir.path(), &spec, 31);
    let tokens: Vec<u32> = (0..100).map(|i| (i * 53 % 250) as u32).collect();
    let mut want = None;
    let runs = [1, 2, 3]
        .into_iter()
        .flat_map(|t| [Packing::Tq2, Packing::Trit5].map(|p| (t, Isa::detect(), p)))
        .chain(
            Isa::available()
                .into_iter()
                .flat_map(|isa| [Packing::Tq2, Packing::Trit5].map(|p| (2, isa, p))),
        );
    for (threads, isa, packing) in runs {
        let model = Model::load_with(
            dir.path(),
            &LoadOptions {
                threads,
                isa: Some(isa),
                packing: Some(packing),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(model.packing(), packing);
        let batched = bits(&model.forward_logits(&tokens).unwrap());
        let mut s = model.new_session();
        let mut stepped = bits(&model.forward(&mut s, &tokens[..10], true).unwrap());
        for &t in &tokens[10..] {
            stepped.extend(bits(&model.forward(&mut s, &[t], false).unwrap()));
        }
        assert_eq!(s.len(), 100);
        assert!(
            batched == stepped,
            "{threads} threads, {isa:?}, {packing:?}: stepped decode differs"
        );
        match &want {
            None => want = Some(batched),
            Some(w) => assert!(*w == batched, "{threads} threads differ from 1"),
        }
    }
}

#[test]
fn logits_are_bit_identical_across_threads_simd_paths_and_packings() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        hidden: 320,
        inter: 544,
        heads: 5,
        kv_heads: 5,
        ..Spec::tiny()
    };
    write_checkpoint(dir.path(), &spec, 13);
    let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % 250) as u32).collect();
    let mut runs = Vec::new();
    for isa in Isa::available() {
        for threads in [1, 2, 3] {
            for head in [HeadFormat::F32, HeadFormat::Int8, HeadFormat::Int4] {
                for packing in [Packing::Tq2, Packing::Trit5] {
                    let opts = LoadOptions {
                        threads,
                        isa: Some(isa),
                        head,
                        packing: Some(packing),
                    };
                    let m = Model::load_with(dir.path(), &opts).unwrap();
                    runs.push((
                        (isa, threads, head, packing),
                        bits(&m.forward_logits(&tokens).unwrap()),
                    ));
                }
            }
        }
    }
    // The packing only changes how the same ternary values are stored: the integer sums, and
    // so the logits, are the same for both.
    for head in [HeadFormat::F32, HeadFormat::Int8, HeadFormat::Int4] {
        let same: Vec<_> = runs.iter().filter(|r| r.0 .2 == head).collect();
        for r in &same[1..] {
            assert!(r.1 == same[0].1, "{:?} differs from {:?}", r.0, same[0].0);
        }
    }
}

#[test]
fn quantized_lm_heads_stay_within_stated_tolerance_of_f32() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &Spec::tiny(), 21);
    let tokens: Vec<u32> = vec![1, 2, 3, 4, 5, 6, 7, 8];
    let load = |head| {
        Model::load_with(
            dir.path(),
            &LoadOptions {
                head,
                ..Default::default()
            },
        )
        .unwrap()
        .forward_logits(&tokens)
        .unwrap()
    };
    let f = load(HeadFormat::F32);
    // Stated tolerances: int8 head 2 %, int4 head (scale per 128 columns) 8 % of the largest
    // logit.
    for (head, tol) in [(HeadFormat::Int8, 0.02), (HeadFormat::Int4, 0.08)] {
        let q = load(head);
        let (diff, scale) = max_diff(&q, &f);
        assert!(diff > 0.0, "{head:?} head should not be exact");
        assert!(
            diff <= tol * scale,
            "{head:?} head: max |diff| {diff} vs max |logit| {scale}"
        );
        // The quantized head keeps the greedy choice at most positions.
        let agree = q
            .iter()
            .zip(&f)
            .filter(|(a, b)| magnet_infer::sampling::argmax(a) == magnet_infer::sampling::argmax(b))
            .count();
        assert!(
            agree * 4 >= tokens.len() * 3,
            "{head:?}: argmax agrees at {agree}/8"
        );
    }
}

#[test]
fn generation_is_reproducible_and_respects_limits() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &Spec::tiny(), 2);
    let model = Model::load(dir.path()).unwrap();
    let prompt = model.encode("hello world").unwrap();
    let greedy = SamplingParams::default();
    let a = model.generate(&prompt, 12, &greedy, |_| true).unwrap();
    let b = model.generate(&prompt, 12, &greedy, |_| true).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert!(a.tokens.len() <= 12);
    // Greedy generation equals argmax of a full forward over prompt + generated tokens.
    if a.tokens.len() >= 2 {
        let mut seq = prompt.clone();
        seq.extend(&a.tokens[..a.tokens.len() - 1]);
        let logits = model.forward_logits(&seq).unwrap();
        for (i, &t) in a.tokens.iter().enumerate() {
            assert_eq!(
                magnet_infer::sampling::argmax(&logits[prompt.len() - 1 + i]),
                t,
                "token {i}"
            );
        }
    }
    let hot = SamplingParams {
        temperature: 1.5,
        top_k: 50,
        top_p: 0.95,
        seed: 7,
    };
    let c = model.generate(&prompt, 10, &hot, |_| true).unwrap();
    let d = model.generate(&prompt, 10, &hot, |_| true).unwrap();
    assert_eq!(c.tokens, d.tokens, "same seed, same tokens");
    let mut seen = 0;
    let e = model.generate(&prompt, 10, &greedy, |_| {
        seen += 1;
        seen < 3
    });
    assert!(e.unwrap().tokens.len() <= 3);
    let text = model.decode(&a.tokens).unwrap();
    assert!(text.len() < 1000);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &Spec::tiny(), 3);
    let model = Model::load(dir.path()).unwrap();
    assert!(model.forward_logits(&[]).is_err());
    assert!(model.forward_logits(&[1_000_000]).is_err());
    assert!(
        model.forward_logits(&vec![1; 129]).is_err(),
        "longer than max_position_embeddings"
    );
    std::fs::write(dir.path().join("config.json"), b"{\"hidden_size\": 3}").unwrap();
    assert!(Model::load(dir.path()).is_err());
    assert!(Model::load(dir.path().join("missing.gguf")).is_err());
}

/// `bench-infer --model`: the benchmark runs on a model directory (every packing asked for), and
/// a path that is not a model is an error naming it.
#[test]
fn bench_runs_on_a_model_file_and_refuses_a_missing_one() {
    use magnet_infer::bench::{run, BenchOptions};
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &Spec::tiny(), 4);
    let opts = |model: std::path::PathBuf| BenchOptions {
        shapes: Vec::new(),
        model: Some(model),
        threads: vec![1, 2],
        bandwidth_bytes: 16 << 20,
        decode_tokens: 3,
        prefill_tokens: 5,
        repeats: 1,
        isa: Isa::detect(),
        head: HeadFormat::Auto,
        packings: vec![Packing::Tq2, Packing::Trit5],
    };
    run(&opts(dir.path().to_path_buf())).unwrap();
    let missing = dir.path().join("no-such-model.gguf");
    let err = format!("{:#}", run(&opts(missing)).unwrap_err());
    assert!(err.contains("no-such-model.gguf"), "{err}");
}
