//! Training loop: loss falls on `tiny`, resume is bit-exact, schedules have the documented shape.

#![allow(clippy::arithmetic_side_effects)]

use std::path::Path;

use magnet_bitnet::checkpoint::TensorFile;
use magnet_bitnet::data::{DataConfig, TextSource};
use magnet_bitnet::train::{train, train_until, weight_decay_at, wsd_lr, TrainConfig};

fn tiny_config(out: &Path, data: &Path, steps: u64) -> TrainConfig {
    TrainConfig {
        out_dir: out.to_path_buf(),
        data_dir: Some(data.to_path_buf()),
        data: DataConfig {
            source: TextSource::Generated,
            max_bytes: 150_000,
            vocab_size: 320,
            shard_tokens: 20_000,
            ..DataConfig::default()
        },
        steps,
        batch_size: 8,
        seq_len: 32,
        lr: 4e-3,
        warmup_frac: 0.1,
        stable_frac: 0.7,
        decay_frac: 0.2,
        log_every: 1,
        val_every: 0,
        val_batches: 2,
        progress: false,
        ..TrainConfig::default()
    }
}

#[test]
fn tiny_bitnet_validation_loss_falls_on_generated_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = tiny_config(&dir.path().join("run"), &dir.path().join("data"), 60);
    let report = train(&cfg).expect("train");
    assert_eq!(report.step, 60);
    let first = report.val_losses.first().expect("initial val").1;
    let last = report.val_losses.last().expect("final val").1;
    assert!(last < first - 1.0, "val loss {first} -> {last}");
    let test = report.test_loss.expect("test loss");
    assert!(test.is_finite() && test < first, "test loss {test}");
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).expect("metrics");
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.iter().filter(|v| v["event"] == "train").count(), 60);
    assert!(lines.iter().any(|v| v["event"] == "test"));
    assert!(dir.path().join("run/tokenizer.json").exists());
}

#[test]
fn resume_is_bit_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut straight = tiny_config(&dir.path().join("a"), &data, 6);
    straight.grad_accum = 2;
    straight.steps = 6;
    let mut resumed = straight.clone();
    resumed.out_dir = dir.path().join("b");
    resumed.resume = true;

    train(&straight).expect("straight run");
    let half = train_until(&resumed, Some(3)).expect("first half");
    assert_eq!(half.step, 3);
    let mid = TensorFile::load(&resumed.out_dir.join("checkpoint.safetensors")).expect("mid");
    assert_eq!(mid.metadata["step"], "3");
    let rest = train(&resumed).expect("second half");
    assert_eq!(rest.step, 6);

    let a = TensorFile::load(&straight.out_dir.join("checkpoint.safetensors")).expect("a");
    let b = TensorFile::load(&resumed.out_dir.join("checkpoint.safetensors")).expect("b");
    assert_eq!(a.tensors.len(), b.tensors.len());
    assert!(a.tensors.keys().any(|k| k.starts_with("optim.m.")));
    for (name, t) in &a.tensors {
        let u = &b.tensors[name];
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(
            bits(&t.values) == bits(&u.values),
            "{name} differs after resume"
        );
    }
    // And the weights moved: the comparison is not between two untouched inits.
    let init = mid.tensors["model.layers.0.self_attn.q_proj.weight"]
        .values
        .clone();
    assert_ne!(
        init,
        a.tensors["model.layers.0.self_attn.q_proj.weight"].values
    );
    assert_eq!(a.metadata["step"], "6");
}

#[test]
fn wsd_schedule_and_two_stage_weight_decay() {
    let cfg = TrainConfig {
        steps: 100,
        lr: 1.0,
        min_lr_ratio: 0.1,
        warmup_frac: 0.1,
        stable_frac: 0.6,
        decay_frac: 0.3,
        weight_decay: 0.1,
        weight_decay_stage2: 0.0,
        ..TrainConfig::default()
    };
    assert!((wsd_lr(&cfg, 0) - 0.1).abs() < 1e-12);
    assert!((wsd_lr(&cfg, 9) - 1.0).abs() < 1e-12);
    assert_eq!(wsd_lr(&cfg, 10), 1.0);
    assert_eq!(wsd_lr(&cfg, 69), 1.0);
    assert!(wsd_lr(&cfg, 70) < 1.0);
    assert!((wsd_lr(&cfg, 99) - 0.1).abs() < 1e-12);
    for s in 70..99 {
        assert!(wsd_lr(&cfg, s + 1) < wsd_lr(&cfg, s));
    }
    assert_eq!(weight_decay_at(&cfg, 69), 0.1);
    assert_eq!(weight_decay_at(&cfg, 70), 0.0);
    let bad = TrainConfig {
        decay_frac: 0.5,
        ..cfg.clone()
    };
    assert!(bad.validate().is_err());
    let parsed = TrainConfig::from_toml(
        "steps = 10\nseq_len = 16\n[model]\npreset = \"tiny\"\nternary = false\n[data]\nsource = \"generated\"\n",
    )
    .expect("toml");
    assert_eq!(parsed.steps, 10);
    assert!(!parsed.model.ternary);
    assert_eq!(parsed.data.source, TextSource::Generated);
}
