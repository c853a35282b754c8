//! The training loop: AdamW with decoupled weight decay (two stages), a warmup-stable-decay
//! learning-rate schedule, global-norm gradient clipping, gradient accumulation, validation on a
//! schedule, JSON-lines metrics, safetensors checkpoints with exact resume.
//!
//! Everything random (init, batch choice) derives from `seed` and the step number, never from the
//! backend RNG, and the optimizer state is checkpointed bit for bit: training N steps equals
//! training k steps, resuming, and training N − k more.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{F32Tensor, TensorFile};
use crate::config::ModelConfig;
use crate::data::{self, DataConfig, Split, TokenShards};
use crate::model::{tokens_tensor, BitnetModel, ParamMapper, ParamVisitor};

/// Compute backend. The same code runs on each; only the device differs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// burn's pure-Rust CPU backend (default).
    #[default]
    Flex,
    /// wgpu (Vulkan / Metal / DX12): build with `--features wgpu`.
    Wgpu,
    /// CUDA: build with `--features cuda`.
    Cuda,
}

impl Backend {
    /// The (non-autodiff) device of this backend.
    pub fn device(self) -> anyhow::Result<Device> {
        match self {
            Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => Ok(Device::wgpu(Default::default())),
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => {
                bail!("backend wgpu: this binary was built without the `wgpu` feature")
            }
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0)),
            #[cfg(not(feature = "cuda"))]
            Backend::Cuda => {
                bail!("backend cuda: this binary was built without the `cuda` feature")
            }
        }
    }
}

/// Which model to train (`[model]` in train.toml).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ModelSpec {
    /// Preset name (`tiny`, `small`, `genkidama_363m`, `genkidama_618m`).
    pub preset: String,
    /// BitLinear projections (true) or the full-precision twin (false).
    pub ternary: bool,
    /// A complete shape instead of the preset (vocab is still taken from the tokenizer).
    pub config: Option<ModelConfig>,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            preset: "tiny".into(),
            ternary: true,
            config: None,
        }
    }
}

/// Everything a run needs (`magnet-worker train --config train.toml`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TrainConfig {
    /// Checkpoint, metrics and export directory.
    pub out_dir: PathBuf,
    /// Tokenizer + shards directory (default `<out_dir>/data`); runs may share one.
    pub data_dir: Option<PathBuf>,
    /// Compute backend.
    pub backend: Backend,
    /// Seed of init and batch order.
    pub seed: u64,
    /// Model choice.
    pub model: ModelSpec,
    /// Data preparation.
    pub data: DataConfig,
    /// Optimizer steps in the whole run (the schedule spans these).
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// WSD: fraction of steps warming up linearly.
    pub warmup_frac: f64,
    /// WSD: fraction at the peak.
    pub stable_frac: f64,
    /// WSD: fraction decaying linearly to `min_lr_ratio · lr`.
    pub decay_frac: f64,
    /// AdamW β1.
    pub beta1: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// Decoupled weight decay of matrices in stage 1.
    pub weight_decay: f64,
    /// Weight decay in stage 2 (BitNet b1.58 turns it off for the cooldown).
    pub weight_decay_stage2: f64,
    /// Fraction of steps where stage 2 starts (default: where the decay phase starts).
    pub stage2_start_frac: Option<f64>,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Log training metrics every N steps.
    pub log_every: u64,
    /// Validation every N steps (0 = only at the end).
    pub val_every: u64,
    /// Batches per validation.
    pub val_batches: u64,
    /// Checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Continue from `<out_dir>/checkpoint.safetensors` when present.
    pub resume: bool,
    /// Draw a progress bar.
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            out_dir: PathBuf::from("runs/bitnet"),
            data_dir: None,
            backend: Backend::Flex,
            seed: 42,
            model: ModelSpec::default(),
            data: DataConfig::default(),
            steps: 200,
            batch_size: 8,
            seq_len: 64,
            grad_accum: 1,
            lr: 3e-3,
            min_lr_ratio: 0.1,
            warmup_frac: 0.05,
            stable_frac: 0.75,
            decay_frac: 0.2,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
            weight_decay_stage2: 0.0,
            stage2_start_frac: None,
            grad_clip: 1.0,
            log_every: 10,
            val_every: 50,
            val_batches: 4,
            checkpoint_every: 0,
            resume: false,
            progress: true,
        }
    }
}

impl TrainConfig {
    /// Parses a train.toml.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let cfg: Self = toml::from_str(text).context("parse train config")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects settings that cannot train.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.steps == 0 || self.batch_size == 0 || self.seq_len == 0 || self.grad_accum == 0 {
            bail!("steps, batch_size, seq_len and grad_accum must be > 0");
        }
        let fr = [self.warmup_frac, self.stable_frac, self.decay_frac];
        if fr.iter().any(|f| !(0.0..=1.0).contains(f))
            || (fr.iter().sum::<f64>() - 1.0).abs() > 1e-6
        {
            bail!(
                "warmup_frac + stable_frac + decay_frac must be fractions summing to 1, got {fr:?}"
            );
        }
        if self.lr.is_nan() || self.lr <= 0.0 || !(0.0..=1.0).contains(&self.min_lr_ratio) {
            bail!("lr must be > 0 and min_lr_ratio in [0, 1]");
        }
        if !(0.0..1.0).contains(&self.beta1)
            || !(0.0..1.0).contains(&self.beta2)
            || self.eps.is_nan()
            || self.eps <= 0.0
        {
            bail!("betas must be in [0, 1) and eps > 0");
        }
        Ok(())
    }

    /// Where tokenizer and shards live.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| self.out_dir.join("data"))
    }

    /// Tokens consumed per optimizer step.
    pub fn tokens_per_step(&self) -> u64 {
        (self.batch_size * self.seq_len * self.grad_accum) as u64
    }

    /// The model shape for a vocabulary size.
    pub fn model_config(&self, vocab_size: usize) -> anyhow::Result<ModelConfig> {
        let base = match &self.model.config {
            Some(c) => c.clone(),
            None => ModelConfig::preset(&self.model.preset)?,
        };
        let c = base.with_vocab(vocab_size).with_ternary(self.model.ternary);
        if self.seq_len > c.max_position_embeddings {
            bail!(
                "seq_len {} exceeds max_position_embeddings {}",
                self.seq_len,
                c.max_position_embeddings
            );
        }
        c.validate()?;
        Ok(c)
    }
}

/// Warmup-stable-decay learning rate at `step` (0-based) of `total`.
pub fn wsd_lr(cfg: &TrainConfig, step: u64) -> f64 {
    let total = cfg.steps as f64;
    let warm = (cfg.warmup_frac * total).round();
    let decay = (cfg.decay_frac * total).round();
    let decay_start = total - decay;
    let s = step as f64;
    let min = cfg.lr * cfg.min_lr_ratio;
    if s < warm {
        cfg.lr * (s + 1.0) / warm
    } else if s < decay_start || decay <= 0.0 {
        cfg.lr
    } else {
        let p = ((s - decay_start + 1.0) / decay).min(1.0);
        cfg.lr + (min - cfg.lr) * p
    }
}

/// Weight decay at `step`: stage 1 until `stage2_start_frac` (default: the decay phase), then stage 2.
pub fn weight_decay_at(cfg: &TrainConfig, step: u64) -> f64 {
    let start = cfg.stage2_start_frac.unwrap_or(1.0 - cfg.decay_frac);
    if (step as f64) < (start * cfg.steps as f64).round() {
        cfg.weight_decay
    } else {
        cfg.weight_decay_stage2
    }
}

/// AdamW moments of one parameter, flattened.
#[derive(Clone)]
struct Moments {
    m: Tensor<1>,
    v: Tensor<1>,
}

/// Hyper-parameters of one optimizer step.
#[derive(Clone, Copy, Debug)]
pub struct StepParams {
    /// Learning rate.
    pub lr: f64,
    /// Decoupled weight decay (matrices only).
    pub weight_decay: f64,
    /// Global-norm clip (0 = off).
    pub grad_clip: f64,
    /// AdamW β1.
    pub beta1: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
}

/// What one optimizer step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean loss over the micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Model + optimizer state + step counter.
pub struct Trainer {
    /// Parameters as gradient-tracking leaves on the autodiff device.
    pub model: BitnetModel,
    moments: BTreeMap<String, Moments>,
    /// Optimizer steps taken.
    pub step: u64,
    device: Device,
}

impl Trainer {
    /// A fresh model from `seed` on `device` (autodiff is enabled here).
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> anyhow::Result<Self> {
        let ad = device.clone().autodiff();
        let model = BitnetModel::init(config, seed, device)?.to_device(&ad, true);
        Ok(Self {
            model,
            moments: BTreeMap::new(),
            step: 0,
            device: ad,
        })
    }

    /// The model without autodiff (evaluation, export).
    pub fn eval_model(&self) -> BitnetModel {
        struct Inner;
        impl ParamMapper for Inner {
            fn map<const D: usize>(&mut self, _: &str, p: Tensor<D>) -> Tensor<D> {
                p.inner()
            }
        }
        self.model.clone().map_params(&mut Inner)
    }

    /// One optimizer step over `micro` batches of `(inputs, targets)`, each `rows × seq`.
    pub fn train_step(
        &mut self,
        micro: &[(Vec<u32>, Vec<u32>)],
        rows: usize,
        seq: usize,
        p: StepParams,
    ) -> anyhow::Result<StepStats> {
        if micro.is_empty() {
            bail!("a step needs at least one micro-batch");
        }
        let n = micro.len() as f64;
        let mut acc: BTreeMap<String, Tensor<1>> = BTreeMap::new();
        let mut loss_sum = 0.0;
        for (x, y) in micro {
            let loss = self.model.loss(
                tokens_tensor(x, rows, seq, &self.device),
                tokens_tensor(y, rows, seq, &self.device),
            );
            loss_sum += f64::from(loss.clone().inner().into_scalar::<f32>());
            let grads = (loss / n).backward();
            struct Accumulate<'a> {
                grads: &'a burn::tensor::Gradients,
                acc: &'a mut BTreeMap<String, Tensor<1>>,
            }
            impl ParamVisitor for Accumulate<'_> {
                fn visit<const D: usize>(&mut self, name: &str, p: &Tensor<D>) {
                    if let Some(g) = p.grad(self.grads) {
                        let len = g.shape().num_elements();
                        let g = g.reshape([len]);
                        let sum = match self.acc.remove(name) {
                            Some(prev) => prev + g,
                            None => g,
                        };
                        self.acc.insert(name.to_string(), sum);
                    }
                }
            }
            self.model.visit_params(&mut Accumulate {
                grads: &grads,
                acc: &mut acc,
            });
        }
        let sq: f64 = acc
            .values()
            .map(|g| f64::from(g.clone().square().sum().into_scalar::<f32>()))
            .sum();
        let grad_norm = sq.sqrt();
        let clip = if p.grad_clip > 0.0 && grad_norm > p.grad_clip {
            p.grad_clip / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.step = self.step.saturating_add(1);
        let t = self.step as i32;
        let mut update = AdamWUpdate {
            grads: acc,
            moments: &mut self.moments,
            p,
            clip,
            bc1: 1.0 - p.beta1.powi(t),
            bc2: 1.0 - p.beta2.powi(t),
        };
        self.model = self.model.clone().map_params(&mut update);
        Ok(StepStats {
            loss: loss_sum / n,
            grad_norm,
        })
    }

    /// Mean loss of the model over batches (no gradients).
    pub fn evaluate(&self, batches: &[(Vec<u32>, Vec<u32>)], rows: usize, seq: usize) -> f64 {
        let model = self.eval_model();
        let device = self.device.clone().inner();
        let total: f64 = batches
            .iter()
            .map(|(x, y)| {
                f64::from(
                    model
                        .loss(
                            tokens_tensor(x, rows, seq, &device),
                            tokens_tensor(y, rows, seq, &device),
                        )
                        .into_scalar::<f32>(),
                )
            })
            .sum();
        total / batches.len().max(1) as f64
    }

    /// Checkpoint: latent weights (HF names), AdamW moments (`optim.m.*`, `optim.v.*`), step and
    /// configs in the metadata.
    pub fn checkpoint(
        &self,
        train: &TrainConfig,
        extra: &[(&str, String)],
    ) -> anyhow::Result<TensorFile> {
        let mut f = TensorFile::default();
        for (name, shape, values) in self.model.named_f32() {
            f.tensors.insert(name, F32Tensor { shape, values });
        }
        for (name, mom) in &self.moments {
            for (kind, t) in [("m", &mom.m), ("v", &mom.v)] {
                let values = t
                    .to_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                f.tensors.insert(
                    format!("optim.{kind}.{name}"),
                    F32Tensor {
                        shape: vec![values.len()],
                        values,
                    },
                );
            }
        }
        f.metadata
            .insert("format".into(), "magnet-bitnet-checkpoint-v1".into());
        f.metadata.insert("step".into(), self.step.to_string());
        f.metadata.insert(
            "model_config".into(),
            serde_json::to_string(&self.model.config)?,
        );
        f.metadata
            .insert("train_config".into(), serde_json::to_string(train)?);
        for (k, v) in extra {
            f.metadata.insert((*k).to_string(), v.clone());
        }
        Ok(f)
    }

    /// Restores a trainer from a checkpoint file on `device`.
    pub fn restore(file: &TensorFile, device: &Device) -> anyhow::Result<Self> {
        let config: ModelConfig = serde_json::from_str(
            file.metadata
                .get("model_config")
                .context("checkpoint lacks model_config")?,
        )?;
        let step: u64 = file
            .metadata
            .get("step")
            .context("checkpoint lacks step")?
            .parse()?;
        let model = BitnetModel::from_fn(&config, device, |name, shape| {
            let t = file
                .tensors
                .get(name)
                .ok_or_else(|| crate::model::ModelError::Missing(name.to_string()))?;
            if t.shape != shape {
                return Err(crate::model::ModelError::Shape {
                    name: name.into(),
                    expected: shape.to_vec(),
                    got: t.shape.clone(),
                });
            }
            Ok(t.values.clone())
        })?;
        let ad = device.clone().autodiff();
        let model = model.to_device(&ad, true);
        let mut moments = BTreeMap::new();
        for (name, t) in &file.tensors {
            if let Some(param) = name.strip_prefix("optim.m.") {
                let v = file
                    .tensors
                    .get(&format!("optim.v.{param}"))
                    .with_context(|| format!("checkpoint lacks optim.v.{param}"))?;
                let mk = |x: &F32Tensor| {
                    Tensor::<1>::from_data(
                        TensorData::new(x.values.clone(), [x.values.len()]),
                        device,
                    )
                };
                moments.insert(param.to_string(), Moments { m: mk(t), v: mk(v) });
            }
        }
        Ok(Self {
            model,
            moments,
            step,
            device: ad,
        })
    }
}

struct AdamWUpdate<'a> {
    grads: BTreeMap<String, Tensor<1>>,
    moments: &'a mut BTreeMap<String, Moments>,
    p: StepParams,
    clip: f64,
    bc1: f64,
    bc2: f64,
}

impl ParamMapper for AdamWUpdate<'_> {
    fn map<const D: usize>(&mut self, name: &str, param: Tensor<D>) -> Tensor<D> {
        let dims = param.dims();
        let inner = param.inner();
        let Some(g) = self.grads.remove(name) else {
            return inner.autodiff().require_grad();
        };
        let g = if self.clip < 1.0 { g * self.clip } else { g };
        let len = g.dims()[0];
        let (b1, b2) = (self.p.beta1, self.p.beta2);
        let (m, v) = match self.moments.remove(name) {
            Some(s) => (
                s.m * b1 + g.clone() * (1.0 - b1),
                s.v * b2 + g.square() * (1.0 - b2),
            ),
            None => (g.clone() * (1.0 - b1), g.square() * (1.0 - b2)),
        };
        let update = (m.clone() / self.bc1) / ((v.clone() / self.bc2).sqrt() + self.p.eps);
        // Decoupled decay on matrices only: norms (rank 1) are never decayed.
        let decay = if D >= 2 { self.p.weight_decay } else { 0.0 };
        let flat = inner.reshape([len]);
        let flat = if decay > 0.0 {
            flat * (1.0 - self.p.lr * decay)
        } else {
            flat
        };
        let next = flat - update * self.p.lr;
        self.moments.insert(name.to_string(), Moments { m, v });
        next.reshape(dims).autodiff().require_grad()
    }
}

/// What a run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainReport {
    /// Optimizer steps completed.
    pub step: u64,
    /// Training tokens seen.
    pub tokens: u64,
    /// Last logged training loss.
    pub train_loss: f64,
    /// (step, validation loss) pairs of this run.
    pub val_losses: Vec<(u64, f64)>,
    /// Held-out test loss at the end (when the run reached `steps`).
    pub test_loss: Option<f64>,
    /// Training throughput of this run.
    pub tokens_per_s: f64,
    /// Model parameters.
    pub params: usize,
    /// Checkpoint path.
    pub checkpoint: PathBuf,
}

/// Trains as configured (resuming when asked) until `cfg.steps`.
pub fn train(cfg: &TrainConfig) -> anyhow::Result<TrainReport> {
    train_until(cfg, None)
}

/// Like [`train`] but stops (with a checkpoint) after step `stop_at` when given.
pub fn train_until(cfg: &TrainConfig, stop_at: Option<u64>) -> anyhow::Result<TrainReport> {
    cfg.validate()?;
    fs::create_dir_all(&cfg.out_dir)
        .with_context(|| format!("create {}", cfg.out_dir.display()))?;
    let data_dir = cfg.data_dir();
    let manifest = data::prepare(&cfg.data, &data_dir, cfg.seed)?;
    let tokenizer_src = data_dir.join("tokenizer.json");
    fs::copy(&tokenizer_src, cfg.out_dir.join("tokenizer.json"))
        .context("copy tokenizer beside the model")?;
    let model_cfg = cfg.model_config(manifest.vocab_size)?;
    let device = cfg.backend.device()?;
    let ckpt_path = cfg.out_dir.join("checkpoint.safetensors");
    let mut trainer = if cfg.resume && ckpt_path.exists() {
        let file = TensorFile::load(&ckpt_path)?;
        let t = Trainer::restore(&file, &device)?;
        if t.model.config != model_cfg {
            bail!("checkpoint model config differs from the configured one");
        }
        t
    } else {
        Trainer::new(&model_cfg, cfg.seed, &device)?
    };
    fs::write(cfg.out_dir.join("train.toml"), toml::to_string(cfg)?)
        .context("save train config")?;
    let metrics_path = cfg.out_dir.join("metrics.jsonl");
    let mut metrics = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(trainer.step > 0)
        .truncate(trainer.step == 0)
        .open(&metrics_path)
        .with_context(|| format!("open {}", metrics_path.display()))?;
    let train_split = TokenShards::open(&data_dir, Split::Train)?;
    let val_split = TokenShards::open(&data_dir, Split::Val)?;
    let test_split = TokenShards::open(&data_dir, Split::Test)?;
    let (rows, seq) = (cfg.batch_size, cfg.seq_len);
    let val_batches: Vec<_> = (0..cfg.val_batches.max(1))
        .map(|i| val_split.eval_batch(rows, seq, i))
        .collect::<Result<_, _>>()?;
    let end = stop_at.unwrap_or(cfg.steps).min(cfg.steps);
    let bar = progress_bar(cfg, trainer.step, end);
    let started = Instant::now();
    let first_step = trainer.step;
    let mut report = TrainReport {
        step: trainer.step,
        tokens: trainer.step * cfg.tokens_per_step(),
        train_loss: f64::NAN,
        val_losses: Vec::new(),
        test_loss: None,
        tokens_per_s: 0.0,
        params: model_cfg.num_params(),
        checkpoint: ckpt_path.clone(),
    };
    let mut log = |v: serde_json::Value| -> anyhow::Result<()> {
        writeln!(metrics, "{v}").context("write metrics")?;
        Ok(())
    };
    log(
        serde_json::json!({"event": "start", "step": trainer.step, "params": report.params, "ternary": model_cfg.ternary,
        "vocab_size": model_cfg.vocab_size, "data_source": manifest.source, "tokens_per_step": cfg.tokens_per_step()}),
    )?;
    if trainer.step == 0 {
        let val = trainer.evaluate(&val_batches, rows, seq);
        report.val_losses.push((0, val));
        log(serde_json::json!({"event": "val", "step": 0, "tokens": 0, "val_loss": val}))?;
    }
    while trainer.step < end {
        let step = trainer.step;
        let micro: Vec<_> = (0..cfg.grad_accum as u64)
            .map(|m| train_split.random_batch(rows, seq, cfg.seed, step, m))
            .collect::<Result<_, _>>()?;
        let p = StepParams {
            lr: wsd_lr(cfg, step),
            weight_decay: weight_decay_at(cfg, step),
            grad_clip: cfg.grad_clip,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
        };
        let stats = trainer.train_step(&micro, rows, seq, p)?;
        if !stats.loss.is_finite() {
            bail!("loss diverged at step {step}: {}", stats.loss);
        }
        let done = trainer.step;
        report.step = done;
        report.tokens = done * cfg.tokens_per_step();
        report.train_loss = stats.loss;
        let elapsed = started.elapsed().as_secs_f64();
        report.tokens_per_s =
            ((done - first_step) * cfg.tokens_per_step()) as f64 / elapsed.max(1e-9);
        bar.set_position(done);
        bar.set_message(format!(
            "loss {:.3} | {:.0} tok/s",
            stats.loss, report.tokens_per_s
        ));
        if done % cfg.log_every.max(1) == 0 || done == end {
            log(
                serde_json::json!({"event": "train", "step": done, "tokens": report.tokens, "loss": stats.loss,
                "lr": p.lr, "weight_decay": p.weight_decay, "grad_norm": stats.grad_norm,
                "tokens_per_s": report.tokens_per_s, "elapsed_s": elapsed}),
            )?;
        }
        if (cfg.val_every > 0 && done % cfg.val_every == 0) || done == cfg.steps {
            let val = trainer.evaluate(&val_batches, rows, seq);
            report.val_losses.push((done, val));
            log(
                serde_json::json!({"event": "val", "step": done, "tokens": report.tokens, "val_loss": val}),
            )?;
            bar.println(format!("step {done}: val loss {val:.4}"));
        }
        if cfg.checkpoint_every > 0 && done % cfg.checkpoint_every == 0 && done != end {
            trainer.checkpoint(cfg, &[])?.save(&ckpt_path)?;
        }
    }
    trainer.checkpoint(cfg, &[])?.save(&ckpt_path)?;
    if trainer.step >= cfg.steps {
        let batches =
            (test_split.len() / ((rows * (seq + 1)) as u64)).clamp(1, cfg.val_batches.max(1));
        let test: Vec<_> = (0..batches)
            .map(|i| test_split.eval_batch(rows, seq, i))
            .collect::<Result<_, _>>()?;
        let loss = trainer.evaluate(&test, rows, seq);
        report.test_loss = Some(loss);
        log(serde_json::json!({"event": "test", "step": trainer.step, "test_loss": loss}))?;
    }
    bar.finish_and_clear();
    Ok(report)
}

fn progress_bar(cfg: &TrainConfig, start: u64, end: u64) -> indicatif::ProgressBar {
    if !cfg.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(end);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg} (eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(start);
    bar
}

/// Loads the latest checkpoint of a run as an evaluation model.
pub fn load_checkpoint_model(path: &Path, device: &Device) -> anyhow::Result<BitnetModel> {
    let file = TensorFile::load(path)?;
    Ok(Trainer::restore(&file, device)?.eval_model())
}

/// Training throughput of full optimizer steps (forward, backward, AdamW) on random tokens.
#[derive(Clone, Debug, Serialize)]
pub struct BenchResult {
    /// Preset name.
    pub preset: String,
    /// Backend.
    pub backend: Backend,
    /// Parameters.
    pub params: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Timed steps.
    pub steps: u64,
    /// Seconds per step (mean over timed steps).
    pub seconds_per_step: f64,
    /// Training tokens per second.
    pub tokens_per_s: f64,
}

/// Times `steps` training steps after one warm-up step.
pub fn bench_train(
    preset: &str,
    ternary: bool,
    backend: Backend,
    batch_size: usize,
    seq_len: usize,
    steps: u64,
) -> anyhow::Result<BenchResult> {
    let config = ModelConfig::preset(preset)?.with_ternary(ternary);
    if seq_len > config.max_position_embeddings {
        bail!(
            "seq_len {seq_len} exceeds the preset's context {}",
            config.max_position_embeddings
        );
    }
    let device = backend.device()?;
    let mut trainer = Trainer::new(&config, 1, &device)?;
    let mut rng = crate::rng::SplitMix64::new(7);
    let vocab = config.vocab_size as u64;
    let mut batch = || {
        let n = batch_size * seq_len;
        let x: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
        let y: Vec<u32> = (0..n).map(|_| rng.below(vocab) as u32).collect();
        (x, y)
    };
    let p = StepParams {
        lr: 1e-3,
        weight_decay: 0.1,
        grad_clip: 1.0,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
    };
    trainer.train_step(&[batch()], batch_size, seq_len, p)?;
    let start = Instant::now();
    for _ in 0..steps {
        trainer.train_step(&[batch()], batch_size, seq_len, p)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = steps.max(1) as f64;
    Ok(BenchResult {
        preset: preset.into(),
        backend,
        params: config.num_params(),
        batch_size,
        seq_len,
        steps,
        seconds_per_step: secs / n,
        tokens_per_s: (batch_size * seq_len) as f64 * n / secs.max(1e-9),
    })
}
