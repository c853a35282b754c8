//! The trainer and the inference engine agree: a `tiny` model trained by magnet-bitnet
//! (burn, BitLinear with STE) and exported in Hugging Face format loads in magnet-infer
//! without conversion, its logits match burn's quantized forward within a stated
//! tolerance, and greedy generation is deterministic.

#![allow(clippy::arithmetic_side_effects, clippy::unwrap_used)]

use magnet_bitnet::train::{train, TrainConfig};

/// Largest |engine − burn| logit difference accepted, relative to the largest |logit|.
/// Both quantize weights to the same ternary values; activations are int8 in both, but
/// burn computes the fake-quantized products in f32 in another order, so a value on a
/// rounding boundary can land one int8 step apart.
const REL_TOLERANCE: f32 = 0.05;

#[test]
fn worker_trained_tiny_model_serves_from_the_inference_engine() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        r#"
out_dir = "{}"
steps = 40
batch_size = 8
seq_len = 64
lr = 4e-3
val_every = 20
progress = false

[model]
preset = "tiny"

[data]
source = "generated"
max_bytes = 200000
vocab_size = 512
"#,
        dir.path().join("run").display()
    );
    let cfg = TrainConfig::from_toml(&toml).unwrap();
    let report = train(&cfg).unwrap();
    let (first, last) = (
        report.val_losses.first().unwrap().1,
        report.val_losses.last().unwrap().1,
    );
    assert!(last < first, "validation loss fell: {first} -> {last}");
    // Export the checkpoint as `magnet-worker train` does at the end of a run.
    let device = burn::tensor::Device::flex();
    let run = dir.path().join("run");
    let hf = run.join("hf");
    let trained = magnet_bitnet::train::load_checkpoint_model(&report.checkpoint, &device).unwrap();
    magnet_bitnet::export::export_hf(&trained, &run.join("tokenizer.json"), &hf).unwrap();

    // The engine loads the trainer's export as it is.
    let engine = magnet_infer::Model::load(&hf).unwrap();
    let ids = engine.encode("fn main() { let x = 1; }").unwrap();
    assert!(ids.len() >= 4, "{ids:?}");
    let ours = engine.forward_logits(&ids).unwrap();

    // The trainer's forward on the same tokens (burn, flex CPU backend).
    let model = magnet_bitnet::export::load_hf(&hf, &device).unwrap();
    let x = magnet_bitnet::model::tokens_tensor(&ids, 1, ids.len(), &device);
    let theirs: Vec<f32> = model.forward(x).into_data().try_to_vec::<f32>().unwrap();
    let vocab = ours[0].len();
    assert_eq!(theirs.len(), ids.len() * vocab);
    let mut agree = 0;
    for (pos, row) in ours.iter().enumerate() {
        let reference = &theirs[pos * vocab..(pos + 1) * vocab];
        let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = row
            .iter()
            .zip(reference)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= REL_TOLERANCE * scale,
            "position {pos}: max |Δlogit| {worst} above {REL_TOLERANCE} × {scale}"
        );
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |b, (i, x)| if *x > b.1 { (i, *x) } else { b },
                )
                .0
        };
        agree += usize::from(argmax(row) == argmax(reference));
    }
    assert!(
        agree * 10 >= ours.len() * 9,
        "argmax agrees at {agree}/{} positions",
        ours.len()
    );

    // Greedy generation from the trained checkpoint: real tokens, identical on a rerun.
    let params = magnet_infer::SamplingParams::default();
    let a = engine.generate(&ids, 16, &params, |_| true).unwrap();
    let b = engine.generate(&ids, 16, &params, |_| true).unwrap();
    assert!(!a.tokens.is_empty());
    assert_eq!(a.tokens, b.tokens, "greedy decoding is deterministic");
    assert!(a.tokens.iter().all(|t| (*t as usize) < vocab));
}
