//! `bench-infer`: decode and prefill throughput on synthetic ternary models (or a model file),
//! against the memory-bandwidth bound (bandwidth / weight bytes streamed per token).

use std::path::PathBuf;
use std::time::Instant;

use crate::kernels::{Isa, Packing};
use crate::model::{HeadFormat, LoadOptions, Model};
use crate::sampling::argmax;
use crate::synth::{synthetic_model, Shape};

/// Benchmark settings.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Shapes to run (synthetic models).
    pub shapes: Vec<Shape>,
    /// A model file or HF export dir to run instead of the synthetic shapes.
    pub model: Option<PathBuf>,
    /// Thread counts (0 = all cores).
    pub threads: Vec<usize>,
    /// Size of the buffer the bandwidth probe reads (far beyond the caches: 1 GiB by default).
    pub bandwidth_bytes: usize,
    /// Tokens decoded after the short prompt.
    pub decode_tokens: usize,
    /// Prompt length of the prefill measurement.
    pub prefill_tokens: usize,
    /// Repeats per measurement (best and median reported).
    pub repeats: usize,
    /// Kernel path.
    pub isa: Isa,
    /// LM head storage.
    pub head: HeadFormat,
    /// Ternary weight packings to compare (runs interleaved).
    pub packings: Vec<Packing>,
}

/// Read bandwidth (bytes/s) over a buffer much larger than the caches, with `threads` threads.
pub fn measure_bandwidth(threads: usize, bytes: usize, repeats: usize) -> anyhow::Result<f64> {
    let words = bytes / 8;
    // On huge pages like the weights (crate::mem), so the bound is measured the same way.
    let mut buf: Vec<u64> = crate::mem::huge_vec(words, 0);
    for (i, w) in buf.iter_mut().enumerate() {
        *w = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    let mut best = 0f64;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        // The same thread team as the forward pass, each thread reading its share.
        crate::par::run(threads, 0, |team| {
            // Eight independent lanes so the reduction vectorises and is not latency-bound.
            let mut acc = [0u64; 8];
            for w in buf[team.share(words, 8)].chunks_exact(8) {
                for i in 0..8 {
                    acc[i] = acc[i].wrapping_add(w[i]);
                }
            }
            std::hint::black_box(acc);
        })?;
        best = best.max((words * 8) as f64 / t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let min = v.first().copied().unwrap_or(0.0);
    let max = v.last().copied().unwrap_or(0.0);
    let med = v.get(v.len() / 2).copied().unwrap_or(0.0);
    (min, med, max)
}

/// Decode tokens/s: a 4-token prompt, then `n` greedy steps, timed.
fn decode_rate(model: &Model, n: usize) -> anyhow::Result<f64> {
    let mut s = model.new_session();
    let mut logits = model.forward(&mut s, &[1, 2, 3, 4], false)?;
    let t = Instant::now();
    for _ in 0..n {
        let next = logits.last().map_or(0, |l| argmax(l));
        logits = model.forward(&mut s, &[next], false)?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Prefill tokens/s of an `n`-token prompt (logits of the last position only).
fn prefill_rate(model: &Model, n: usize) -> anyhow::Result<f64> {
    let prompt: Vec<u32> = (0..n as u32)
        .map(|i| (i * 7919 + 13) % model.config.vocab_size as u32)
        .collect();
    let mut s = model.new_session();
    let t = Instant::now();
    model.forward(&mut s, &prompt, false)?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// What one section of the report runs on.
#[derive(Clone, Copy)]
enum Subject<'a> {
    Synthetic(Shape),
    File(&'a PathBuf),
}

/// Runs the benchmark and prints a report.
pub fn run(opts: &BenchOptions) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    println!(
        "cpu: {cpu} ({cores} cores), kernel path: {}",
        opts.isa.name()
    );
    let threads: Vec<usize> = opts
        .threads
        .iter()
        .map(|&t| if t == 0 { cores } else { t })
        .collect();
    let mut bw = Vec::new();
    for &t in &threads {
        let b = measure_bandwidth(t, opts.bandwidth_bytes, opts.repeats.max(3))?;
        println!("memory read bandwidth, {t} thread(s): {:.1} GB/s", b / 1e9);
        bw.push(b);
    }
    let subjects: Vec<Subject> = match &opts.model {
        Some(path) => vec![Subject::File(path)],
        None => opts
            .shapes
            .iter()
            .copied()
            .map(Subject::Synthetic)
            .collect(),
    };
    for subject in subjects {
        // One model per packing; their runs are interleaved below, so that every packing
        // sees the same machine conditions (memory bandwidth here swings by ±15 % with the
        // neighbours, more than the packings differ).
        let mut models = Vec::new();
        for &packing in &opts.packings {
            let t0 = Instant::now();
            let lo = LoadOptions {
                threads: threads[0],
                isa: Some(opts.isa),
                head: opts.head,
                packing: Some(packing),
            };
            let model = match subject {
                Subject::Synthetic(shape) => synthetic_model(shape, 42, &lo)?,
                Subject::File(path) => Model::load_with(path, &lo)?,
            };
            models.push((model, t0.elapsed().as_secs_f64()));
        }
        let Some((first, _)) = models.first() else {
            anyhow::bail!("no packing to benchmark");
        };
        let c = &first.config;
        println!(
            "\n{} (hidden {}, {} layers, {}/{} heads, intermediate {}, vocab {}, {})",
            match subject {
                Subject::Synthetic(shape) => shape.name().to_string(),
                Subject::File(path) => path.display().to_string(),
            },
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.kv_heads(),
            c.intermediate_size,
            c.vocab_size,
            if c.tie_word_embeddings {
                "tied"
            } else {
                "untied"
            },
        );
        for (model, secs) in &models {
            println!(
                "  ternary packed {}: {:.1} MB of weights read per token ({} LM head of {:.1} MB); built in {secs:.1}s",
                model.packing().name(),
                model.weight_bytes_per_token() as f64 / 1e6,
                model.head_table().format(),
                model.head_table().bytes() as f64 / 1e6
            );
        }
        for (&t, &b) in threads.iter().zip(&bw) {
            let mut dec = vec![Vec::new(); models.len()];
            let mut pre = vec![Vec::new(); models.len()];
            for (model, _) in models.iter_mut() {
                model.set_exec(t, opts.isa)?;
                decode_rate(model, 4)?; // warm-up
            }
            for _ in 0..opts.repeats {
                for (i, (model, _)) in models.iter().enumerate() {
                    dec[i].push(decode_rate(model, opts.decode_tokens)?);
                    pre[i].push(prefill_rate(model, opts.prefill_tokens)?);
                }
            }
            for (i, (model, _)) in models.iter().enumerate() {
                let bytes = model.weight_bytes_per_token();
                let (dmin, dmed, dmax) = stats(std::mem::take(&mut dec[i]));
                let (pmin, pmed, pmax) = stats(std::mem::take(&mut pre[i]));
                let bound = b / bytes as f64;
                println!(
                    "  {t} thread(s), {}: decode {dmed:.1} tok/s (min {dmin:.1}, max {dmax:.1}; {} tokens), prefill {pmed:.1} tok/s (min {pmin:.1}, max {pmax:.1}; {} tokens)",
                    model.packing().name(),
                    opts.decode_tokens,
                    opts.prefill_tokens
                );
                println!(
                    "      bandwidth bound {bound:.1} tok/s ({:.1} GB/s / {:.1} MB), decode at {:.0} % of it",
                    b / 1e9,
                    bytes as f64 / 1e6,
                    100.0 * dmed / bound
                );
            }
        }
    }
    Ok(())
}
