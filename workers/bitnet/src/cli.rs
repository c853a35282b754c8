//! `magnet-worker` subcommands owned by magnet-bitnet: `train`, `bench-train`, `export-model`, `score-text`,
//! `plot-metrics`.

use std::path::PathBuf;

use anyhow::Context;

use crate::train::{bench_train, load_checkpoint_model, train, Backend, TrainConfig};

/// Subcommands of magnet-bitnet (flattened into `magnet-worker`).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Train a BitNet b1.58 (or full-precision) model as described by a TOML file.
    Train {
        /// train.toml (see workers/bitnet/README.md).
        #[arg(long)]
        config: PathBuf,
        /// Continue from the run's checkpoint.
        #[arg(long)]
        resume: bool,
        /// Override the number of steps of the schedule.
        #[arg(long)]
        steps: Option<u64>,
        /// Override the output directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Train the full-precision twin instead (plain linear projections).
        #[arg(long)]
        full_precision: bool,
        /// Skip the Hugging Face / GGUF export at the end.
        #[arg(long)]
        no_export: bool,
    },
    /// Print training tokens/s (forward + backward + AdamW) for a preset and backend.
    BenchTrain {
        /// tiny, small, genkidama_363m, genkidama_618m.
        #[arg(long, default_value = "small")]
        preset: String,
        /// flex (CPU), wgpu, cuda.
        #[arg(long, value_enum, default_value_t = Backend::Flex)]
        backend: Backend,
        /// Sequences per step.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 128)]
        seq: usize,
        /// Timed steps (after one warm-up step).
        #[arg(long, default_value_t = 3)]
        steps: u64,
        /// Plain linear projections instead of BitLinear.
        #[arg(long)]
        full_precision: bool,
    },
    /// Export a checkpoint to Hugging Face format and/or GGUF.
    ExportModel {
        /// checkpoint.safetensors written by `train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// tokenizer.json (default: beside the checkpoint).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Output directory for config.json + model.safetensors + tokenizer.json.
        #[arg(long)]
        hf: Option<PathBuf>,
        /// Output GGUF file (TQ2_0 projections).
        #[arg(long)]
        gguf: Option<PathBuf>,
    },
    /// Mean loss of a checkpoint over consecutive windows of a data split (more batches than the
    /// in-training validation uses).
    EvalSplit {
        /// checkpoint.safetensors written by `train`.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Directory with the token shards (the run's `data_dir`).
        #[arg(long)]
        data_dir: PathBuf,
        /// val or test.
        #[arg(long, value_enum, default_value_t = crate::data::Split::Val)]
        split: crate::data::Split,
        /// Sequences per batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 128)]
        seq: usize,
        /// Batches (default: the whole split once).
        #[arg(long)]
        batches: Option<u64>,
    },
    /// Mean next-token loss of a text under an HF export (our burn forward, the reference).
    ScoreText {
        /// HF export directory (config.json, model.safetensors, tokenizer.json).
        #[arg(long)]
        hf: PathBuf,
        /// Text to score.
        #[arg(long)]
        text: String,
    },
    /// Plot validation/training loss of runs into an SVG.
    PlotMetrics {
        /// `label=path/to/metrics.jsonl`, repeatable.
        #[arg(long = "run", required = true)]
        runs: Vec<String>,
        /// Output SVG.
        #[arg(long)]
        out: PathBuf,
        /// Plot title.
        #[arg(long, default_value = "validation loss")]
        title: String,
    },
}

/// Runs one subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Train {
            config,
            resume,
            steps,
            out_dir,
            full_precision,
            no_export,
        } => {
            let text = std::fs::read_to_string(&config)
                .with_context(|| format!("read {}", config.display()))?;
            let mut cfg = TrainConfig::from_toml(&text)?;
            cfg.resume |= resume;
            if let Some(s) = steps {
                cfg.steps = s;
            }
            if let Some(d) = out_dir {
                cfg.out_dir = d;
            }
            if full_precision {
                cfg.model.ternary = false;
            }
            cfg.validate()?;
            let report = train(&cfg)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !no_export && report.step >= cfg.steps {
                export_run(&cfg)?;
            }
            Ok(())
        }
        Command::BenchTrain {
            preset,
            backend,
            batch,
            seq,
            steps,
            full_precision,
        } => {
            let r = bench_train(&preset, !full_precision, backend, batch, seq, steps)?;
            println!(
                "bench-train preset={} backend={:?} ternary={} params={} batch={}x{} steps={}: {:.3} s/step, {:.1} tokens/s",
                r.preset, r.backend, !full_precision, r.params, r.batch_size, r.seq_len, r.steps, r.seconds_per_step, r.tokens_per_s
            );
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::ExportModel {
            checkpoint,
            tokenizer,
            hf,
            gguf,
        } => {
            let device = burn::tensor::Device::flex();
            let model = load_checkpoint_model(&checkpoint, &device)?;
            let tok = tokenizer.unwrap_or_else(|| checkpoint.with_file_name("tokenizer.json"));
            if let Some(dir) = hf {
                crate::export::export_hf(&model, &tok, &dir)?;
                println!("wrote {}", dir.display());
            }
            if let Some(file) = gguf {
                crate::export::export_gguf(&model, &tok, &file)?;
                println!("wrote {}", file.display());
            }
            Ok(())
        }
        Command::EvalSplit {
            checkpoint,
            data_dir,
            split,
            batch,
            seq,
            batches,
        } => {
            let device = burn::tensor::Device::flex();
            let model = load_checkpoint_model(&checkpoint, &device)?;
            let shards = crate::data::TokenShards::open(&data_dir, split)?;
            let whole = shards.len() / ((batch * (seq + 1)) as u64);
            let n = batches.unwrap_or(whole).clamp(1, whole.max(1));
            let mut total = 0.0f64;
            for i in 0..n {
                let (x, y) = shards.eval_batch(batch, seq, i)?;
                let loss = model.loss(
                    crate::model::tokens_tensor(&x, batch, seq, &device),
                    crate::model::tokens_tensor(&y, batch, seq, &device),
                );
                total += f64::from(loss.into_scalar::<f32>());
            }
            let mean = total / n as f64;
            println!(
                "{} {:?} loss {mean:.4} nats/token over {} tokens ({n} batches of {batch}x{seq})",
                checkpoint.display(),
                split,
                n * (batch * seq) as u64
            );
            Ok(())
        }
        Command::ScoreText { hf, text } => {
            let device = burn::tensor::Device::flex();
            let model = crate::export::load_hf(&hf, &device)?;
            let tok = crate::data::load_tokenizer(&hf.join("tokenizer.json"))?;
            let ids = tok
                .encode(text.as_str(), false)
                .map_err(|e| anyhow::anyhow!("tokenize: {e}"))?
                .get_ids()
                .to_vec();
            println!("tokens: {ids:?}");
            if ids.len() < 2 {
                anyhow::bail!("need at least two tokens to score, got {}", ids.len());
            }
            let n = ids.len() - 1;
            let x = crate::model::tokens_tensor(&ids[..n], 1, n, &device);
            let y = crate::model::tokens_tensor(&ids[1..], 1, n, &device);
            let loss = model.loss(x, y).into_scalar::<f32>();
            println!(
                "loss {loss:.4} nats/token over {n} predictions (uniform {:.3})",
                (model.config.vocab_size as f64).ln()
            );
            Ok(())
        }
        Command::PlotMetrics { runs, out, title } => {
            let mut curves = Vec::new();
            for r in &runs {
                let (label, path) = r
                    .split_once('=')
                    .with_context(|| format!("--run {r}: expected label=path"))?;
                curves.push(crate::plot::read_metrics(
                    label,
                    std::path::Path::new(path),
                )?);
            }
            std::fs::write(&out, crate::plot::loss_svg(&curves, &title))
                .with_context(|| format!("write {}", out.display()))?;
            for c in &curves {
                let v = c.val.last().map(|p| p.1);
                println!(
                    "{}: last val {:?} at {:?} tokens, test {:?}",
                    c.label,
                    v,
                    c.val.last().map(|p| p.0),
                    c.test
                );
            }
            // Gap of every run to the first one at the largest token count both validated at.
            if let Some((first, rest)) = curves.split_first() {
                for c in rest {
                    let common =
                        first.val.iter().rev().find_map(|a| {
                            c.val.iter().find(|b| b.0 == a.0).map(|b| (a.0, a.1, b.1))
                        });
                    if let Some((tokens, a, b)) = common {
                        println!(
                            "at {tokens} tokens: {} val {a:.4}, {} val {b:.4}, gap {:+.4} nats ({:+.2}%)",
                            first.label, c.label, a - b, (a - b) / b * 100.0
                        );
                    }
                }
            }
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

fn export_run(cfg: &TrainConfig) -> anyhow::Result<()> {
    let device = burn::tensor::Device::flex();
    let ckpt = cfg.out_dir.join("checkpoint.safetensors");
    let model = load_checkpoint_model(&ckpt, &device)?;
    let tok = cfg.out_dir.join("tokenizer.json");
    let hf = cfg.out_dir.join("hf");
    crate::export::export_hf(&model, &tok, &hf)?;
    println!("wrote {}", hf.display());
    let gguf = cfg.out_dir.join("model.gguf");
    match crate::export::export_gguf(&model, &tok, &gguf) {
        Ok(()) => println!("wrote {}", gguf.display()),
        Err(e) => println!("no GGUF: {e}"),
    }
    Ok(())
}
