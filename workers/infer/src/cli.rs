//! `magnet-worker` subcommands owned by magnet-infer: `serve`, `bench-infer`, `generate`.

use std::io::Write;
use std::path::PathBuf;

use crate::kernels::{Isa, Packing};
use crate::model::{HeadFormat, LoadOptions, Model};
use crate::sampling::SamplingParams;
use crate::synth::Shape;

/// Options shared by the commands that load a model.
#[derive(clap::Args, Debug, Clone)]
pub struct EngineArgs {
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Kernel path: auto, scalar, avx2, avx512.
    #[arg(long, default_value = "auto")]
    pub isa: String,
    /// LM head storage: auto (f32 up to 16M weights; above, int4 when tied to the embedding
    /// and int8 when not), f32, int8, int4.
    #[arg(long, default_value = "auto")]
    pub head: String,
    /// Ternary weight packing: auto (= 2bit), 2bit, 5trit (1.6 bits per weight; decoded fast
    /// with AVX-512 VBMI, slowly elsewhere).
    #[arg(long, default_value = "auto")]
    pub pack: String,
}

impl EngineArgs {
    /// Load options from the flags.
    pub fn load_options(&self) -> anyhow::Result<LoadOptions> {
        let packing = Packing::parse(&self.pack).map_err(anyhow::Error::msg)?;
        let isa = Isa::parse(&self.isa).map_err(anyhow::Error::msg)?;
        if packing == Packing::Trit5
            && (isa != Isa::Avx512Vnni || !Packing::trit5_kernel_available())
        {
            eprintln!(
                "warning: --pack 5trit without the AVX-512 VBMI kernel (CPU or --isa): the portable \
                 kernel decodes 5-trit weights far more slowly than 2-bit ones stream (--pack 2bit \
                 is faster here)"
            );
        }
        Ok(LoadOptions {
            threads: self.threads,
            isa: Some(isa),
            head: parse_head(&self.head)?,
            packing: Some(packing),
        })
    }
}

fn parse_head(name: &str) -> anyhow::Result<HeadFormat> {
    Ok(match name {
        "auto" => HeadFormat::Auto,
        "f32" => HeadFormat::F32,
        "int8" => HeadFormat::Int8,
        "int4" => HeadFormat::Int4,
        other => anyhow::bail!("unknown --head {other:?} (auto|f32|int8|int4)"),
    })
}

/// Subcommands of magnet-infer (flattened into `magnet-worker`).
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Serves a model over an OpenAI-compatible HTTP API.
    Serve {
        /// HF export dir (config.json + model.safetensors + tokenizer.json) or .gguf file.
        #[arg(long)]
        model: PathBuf,
        /// Name clients use in `model` (default: the file/dir name).
        #[arg(long)]
        model_name: Option<String>,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Largest `max_tokens` a request may ask for.
        #[arg(long, default_value_t = 1024)]
        max_tokens_limit: usize,
        /// Requests waiting beyond this many are refused with 503.
        #[arg(long, default_value_t = 64)]
        queue: usize,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Benchmarks decode/prefill on synthetic ~700M and ~2B ternary models (or `--model`) vs the
    /// bandwidth bound.
    BenchInfer {
        /// Shapes to run.
        #[arg(long, value_delimiter = ',', default_value = "700m,2b")]
        shapes: Vec<Shape>,
        /// A .gguf file or HF export dir to benchmark instead of the synthetic shapes (which are
        /// then ignored); one copy is loaded per packing.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Thread counts (0 = all cores).
        #[arg(long, value_delimiter = ',', default_value = "1,0")]
        threads: Vec<usize>,
        /// Tokens decoded after a short prompt.
        #[arg(long, default_value_t = 64)]
        decode_tokens: usize,
        /// Prompt length for prefill.
        #[arg(long, default_value_t = 128)]
        prefill_tokens: usize,
        /// Repeats per figure.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Kernel path: auto, scalar, avx2, avx512.
        #[arg(long, default_value = "auto")]
        isa: String,
        /// LM head storage: auto (700M untied: int8; 2B tied: int4), int8, int4.
        #[arg(long, default_value = "auto")]
        head: String,
        /// Ternary weight packings, comma-separated (auto, 2bit, 5trit), run interleaved and
        /// compared; `all`: 2bit, and 5trit where its AVX-512 VBMI kernel runs.
        #[arg(long, default_value = "all", value_delimiter = ',')]
        pack: Vec<String>,
    },
    /// Generates text from a prompt on the command line.
    Generate {
        /// HF export dir or .gguf file.
        #[arg(long)]
        model: PathBuf,
        /// Prompt text.
        #[arg(long)]
        prompt: String,
        /// Tokens to generate at most.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// 0 = off.
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// 1 = off.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

/// Runs one subcommand.
pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve {
            model,
            model_name,
            listen,
            max_tokens_limit,
            queue,
            engine,
        } => {
            let name = model_name.unwrap_or_else(|| {
                model.file_name().map_or_else(
                    || "model".to_string(),
                    |n| n.to_string_lossy().trim_end_matches(".gguf").to_string(),
                )
            });
            let m = Model::load_with(&model, &engine.load_options()?)?;
            eprintln!(
                "loaded {} ({} layers, hidden {}, kernel path {}, {} ternary packing, {} threads)",
                model.display(),
                m.config.num_hidden_layers,
                m.config.hidden_size,
                m.isa().name(),
                m.packing().name(),
                m.threads()
            );
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&listen).await?;
                eprintln!("serving {name} on http://{}", listener.local_addr()?);
                let cfg = crate::server::ServerConfig {
                    model_name: name,
                    max_tokens_limit,
                    queue,
                };
                crate::server::serve(listener, m, cfg).await
            })
        }
        Command::BenchInfer {
            shapes,
            model,
            threads,
            decode_tokens,
            prefill_tokens,
            repeats,
            isa,
            head,
            pack,
        } => {
            anyhow::ensure!(
                !threads.is_empty() && !shapes.is_empty() && !pack.is_empty(),
                "need at least one shape, thread count and packing"
            );
            crate::bench::run(&crate::bench::BenchOptions {
                shapes,
                model,
                bandwidth_bytes: 1 << 30,
                threads,
                decode_tokens,
                prefill_tokens,
                repeats: repeats.max(1),
                isa: Isa::parse(&isa).map_err(anyhow::Error::msg)?,
                head: parse_head(&head)?,
                packings: if pack == ["all"] {
                    let mut all = vec![Packing::Tq2];
                    if Packing::trit5_kernel_available() {
                        all.push(Packing::Trit5);
                    }
                    all
                } else {
                    pack.iter()
                        .map(|p| Packing::parse(p).map_err(anyhow::Error::msg))
                        .collect::<anyhow::Result<_>>()?
                },
            })
        }
        Command::Generate {
            model,
            prompt,
            max_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            engine,
        } => {
            let m = Model::load_with(&model, &engine.load_options()?)?;
            let ids = m.encode(&prompt)?;
            anyhow::ensure!(!ids.is_empty(), "prompt encodes to no tokens");
            let params = SamplingParams {
                temperature,
                top_k,
                top_p,
                seed,
            };
            let mut out = std::io::stdout();
            write!(out, "{prompt}")?;
            let mut shown = String::new();
            let mut toks = Vec::new();
            let t = std::time::Instant::now();
            let g = m.generate(&ids, max_tokens, &params, |tok| {
                toks.push(tok);
                // Print newly completed text; hold back an incomplete UTF-8 sequence (U+FFFD).
                if let Ok(text) = m.decode(&toks) {
                    if !text.ends_with('\u{FFFD}') {
                        if let Some(new) = text.strip_prefix(shown.as_str()) {
                            let _ = write!(out, "{new}");
                            let _ = out.flush();
                            shown = text;
                        }
                    }
                }
                true
            })?;
            let dt = t.elapsed().as_secs_f64();
            let text = m.decode(&g.tokens)?;
            writeln!(out, "{}", text.strip_prefix(shown.as_str()).unwrap_or(""))?;
            eprintln!(
                "[{} tokens, finish: {}, {:.1} tok/s incl. prefill of {} tokens]",
                g.tokens.len(),
                g.finish.as_str(),
                g.tokens.len() as f64 / dt,
                ids.len()
            );
            Ok(())
        }
    }
}
