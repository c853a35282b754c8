//! The LLaMA decoder with BitLinear projections: RMSNorm, RoPE (rotate-half), GQA attention over
//! a KV cache, SwiGLU MLP; batched prefill (every projection is one GEMM over all prompt tokens).

use std::path::Path;

use rayon::prelude::*;

use crate::config::ModelConfig;
use crate::kernels::Isa;
use crate::matrix::{Exec, QuantActs, RowTable, TernaryMatrix};
use crate::sampling::{Sampler, SamplingParams};

/// How the LM head is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadFormat {
    /// f32 when the head has at most 16M weights, int8 above (where it would dominate traffic).
    Auto,
    /// Full f32 (exact).
    F32,
    /// Int8 with one scale per row; activations quantized per token to int8.
    Int8,
}

/// Load-time choices.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Worker threads (0 = all cores).
    pub threads: usize,
    /// Kernel path (`None` = best detected).
    pub isa: Option<Isa>,
    /// LM head storage.
    pub head: HeadFormat,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 0,
            isa: None,
            head: HeadFormat::Auto,
        }
    }
}

impl HeadFormat {
    pub(crate) fn table(self, w: Vec<f32>, rows: usize, cols: usize) -> anyhow::Result<RowTable> {
        let int8 = match self {
            HeadFormat::Auto => rows * cols > 16 << 20,
            HeadFormat::F32 => false,
            HeadFormat::Int8 => true,
        };
        if int8 {
            Ok(RowTable::Int8(crate::matrix::Int8Matrix::from_f32(
                &w, rows, cols,
            )?))
        } else {
            anyhow::ensure!(
                w.len() == rows * cols,
                "table has {} values, expected {rows}x{cols}",
                w.len()
            );
            Ok(RowTable::F32 {
                rows,
                cols,
                data: w,
            })
        }
    }
}

/// One decoder layer.
#[derive(Clone)]
pub struct Layer {
    /// RMSNorm weight before attention.
    pub attn_norm: Vec<f32>,
    /// q, k and v projections stacked (`[q_dim + 2·kv_dim, hidden]`).
    pub qkv: TernaryMatrix,
    /// Output projection.
    pub o: TernaryMatrix,
    /// RMSNorm weight before the MLP.
    pub ffn_norm: Vec<f32>,
    /// gate and up projections stacked (`[2·intermediate, hidden]`).
    pub gate_up: TernaryMatrix,
    /// Down projection.
    pub down: TernaryMatrix,
}

/// A loaded model, immutable and shareable; per-conversation state lives in [`Session`].
pub struct Model {
    /// Hyper-parameters.
    pub config: ModelConfig,
    pub(crate) embed: RowTable,
    /// `None` when tied to the embedding.
    pub(crate) lm_head: Option<RowTable>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) final_norm: Vec<f32>,
    /// Tokenizer, when the checkpoint has one.
    pub tokenizer: Option<tokenizers::Tokenizer>,
    pub(crate) exec: Exec,
    inv_freq: Vec<f32>,
}

/// KV cache and position of one sequence.
pub struct Session {
    /// `[layer][kv_head]` → `[position][head_dim]`: each head's history is contiguous, so
    /// attention streams it sequentially.
    k: Vec<Vec<Vec<f32>>>,
    v: Vec<Vec<Vec<f32>>>,
    pos: usize,
}

impl Session {
    /// Tokens already processed.
    pub fn len(&self) -> usize {
        self.pos
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-sequence token.
    Stop,
    /// The token limit.
    Length,
}

impl FinishReason {
    /// OpenAI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// Tokens produced by [`Model::generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    /// New tokens (without the prompt; the stop token excluded).
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub finish: FinishReason,
}

/// f32 dot product with 16 fixed partial sums combined in a fixed order: vectorisable, and the
/// same bits whatever the SIMD width the compiler picks (the association is spelled out).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let mut acc = [0f32; L];
    let n = a.len().min(b.len());
    let (ca, cb) = (a[..n].chunks_exact(L), b[..n].chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] += x[i] * y[i];
        }
    }
    for (i, (x, y)) in ra.iter().zip(rb).enumerate() {
        acc[i] += x * y;
    }
    let mut s = 0f32;
    for v in acc {
        s += v;
    }
    s
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xt, ot) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = xt.iter().fold(0f32, |a, v| a + v * v) / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in ot.iter_mut().zip(xt).zip(w) {
            *o = v * inv * g;
        }
    }
}

impl Model {
    /// Loads a Hugging Face export dir (config.json + model.safetensors + tokenizer.json) or a
    /// `.gguf` file, with default options.
    pub fn load(path: impl AsRef<Path>) -> anyhow::Result<Model> {
        Model::load_with(path, &LoadOptions::default())
    }

    /// [`Model::load`] with options.
    pub fn load_with(path: impl AsRef<Path>, opts: &LoadOptions) -> anyhow::Result<Model> {
        let path = path.as_ref();
        if path.is_dir() {
            crate::load::load_hf_dir(path, opts)
        } else {
            crate::gguf::load_gguf(path, opts)
        }
    }

    /// Assembles a model from parts (loaders and synthetic generators).
    pub(crate) fn from_parts(
        config: ModelConfig,
        embed: RowTable,
        lm_head: Option<RowTable>,
        layers: Vec<Layer>,
        final_norm: Vec<f32>,
        tokenizer: Option<tokenizers::Tokenizer>,
        opts: &LoadOptions,
    ) -> anyhow::Result<Model> {
        config.validate()?;
        let d = config.hidden_size;
        let hd = config.head_dim();
        let q_dim = d;
        let kv_dim = config.kv_heads() * hd;
        anyhow::ensure!(
            embed.rows() == config.vocab_size && embed.cols() == d,
            "embedding shape mismatch"
        );
        if let Some(h) = &lm_head {
            anyhow::ensure!(
                h.rows() == config.vocab_size && h.cols() == d,
                "lm_head shape mismatch"
            );
        }
        anyhow::ensure!(
            layers.len() == config.num_hidden_layers,
            "expected {} layers, got {}",
            config.num_hidden_layers,
            layers.len()
        );
        anyhow::ensure!(
            final_norm.len() == d,
            "final norm has {} values, expected {d}",
            final_norm.len()
        );
        for (i, l) in layers.iter().enumerate() {
            anyhow::ensure!(
                l.qkv.rows() == q_dim + 2 * kv_dim
                    && l.qkv.cols() == d
                    && l.o.rows() == d
                    && l.o.cols() == q_dim
                    && l.gate_up.rows() == 2 * config.intermediate_size
                    && l.gate_up.cols() == d
                    && l.down.rows() == d
                    && l.down.cols() == config.intermediate_size
                    && l.attn_norm.len() == d
                    && l.ffn_norm.len() == d,
                "layer {i}: projection shapes do not match the config"
            );
        }
        let isa = opts.isa.unwrap_or_else(Isa::detect);
        let exec = Exec::new(opts.threads, isa)?;
        // HF: inv_freq = 1 / theta^(2i/d), in f32.
        let inv_freq = (0..hd / 2)
            .map(|i| 1.0 / config.rope_theta.powf((2 * i) as f32 / hd as f32))
            .collect();
        Ok(Model {
            config,
            embed,
            lm_head,
            layers,
            final_norm,
            tokenizer,
            exec,
            inv_freq,
        })
    }

    /// Changes the worker thread count (0 = all cores) and kernel path.
    pub fn set_exec(&mut self, threads: usize, isa: Isa) -> anyhow::Result<()> {
        self.exec = Exec::new(threads, isa)?;
        Ok(())
    }

    /// SIMD path in use.
    pub fn isa(&self) -> Isa {
        self.exec.isa
    }

    /// Worker threads in use.
    pub fn threads(&self) -> usize {
        self.exec.threads()
    }

    /// Bytes of weights streamed from memory per decoded token (ternary layers + LM head;
    /// norms and one embedding row are negligible but counted).
    pub fn weight_bytes_per_token(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.bytes()
                    + l.o.bytes()
                    + l.gate_up.bytes()
                    + l.down.bytes()
                    + 4 * (l.attn_norm.len() + l.ffn_norm.len())
            })
            .sum();
        let head = self.lm_head.as_ref().unwrap_or(&self.embed).bytes();
        layers + head + 8 * self.config.hidden_size
    }

    /// Empty KV cache.
    pub fn new_session(&self) -> Session {
        let n = self.config.num_hidden_layers;
        let kvh = self.config.kv_heads();
        Session {
            k: vec![vec![Vec::new(); kvh]; n],
            v: vec![vec![Vec::new(); kvh]; n],
            pos: 0,
        }
    }

    /// Logits for every position of `tokens` from an empty cache (one batched prefill).
    pub fn forward_logits(&self, tokens: &[u32]) -> anyhow::Result<Vec<Vec<f32>>> {
        let mut s = self.new_session();
        self.forward(&mut s, tokens, true)
    }

    /// Runs `tokens` through the model after what `session` holds. Returns the logits of every
    /// new position (`all`) or only of the last one.
    pub fn forward(
        &self,
        session: &mut Session,
        tokens: &[u32],
        all: bool,
    ) -> anyhow::Result<Vec<Vec<f32>>> {
        // Run the whole pass on a pool thread: the matmuls' fork-joins are then in-pool (cheap)
        // instead of each handing work to the pool and sleeping until it is done.
        self.exec
            .install(|| self.forward_in_pool(session, tokens, all))
    }

    fn forward_in_pool(
        &self,
        session: &mut Session,
        tokens: &[u32],
        all: bool,
    ) -> anyhow::Result<Vec<Vec<f32>>> {
        let cfg = &self.config;
        let n = tokens.len();
        anyhow::ensure!(n > 0, "no tokens to process");
        let pos0 = session.pos;
        anyhow::ensure!(
            pos0 + n <= cfg.max_position_embeddings,
            "context of {} tokens exceeds max_position_embeddings {}",
            pos0 + n,
            cfg.max_position_embeddings
        );
        let d = cfg.hidden_size;
        let hd = cfg.head_dim();
        let kv_dim = cfg.kv_heads() * hd;
        let q_dim = d;
        let inter = cfg.intermediate_size;
        let eps = cfg.rms_norm_eps;

        let mut x = Vec::with_capacity(n * d);
        for &t in tokens {
            let row = self.embed.row(t as usize).ok_or_else(|| {
                anyhow::anyhow!("token id {t} outside vocabulary of {}", cfg.vocab_size)
            })?;
            x.extend_from_slice(&row);
        }
        // cos/sin per new position, shared by all heads and layers.
        let half = hd / 2;
        let mut cos = vec![0f32; n * half];
        let mut sin = vec![0f32; n * half];
        for t in 0..n {
            let p = (pos0 + t) as f32;
            for (i, f) in self.inv_freq.iter().enumerate() {
                let a = p * f;
                cos[t * half + i] = a.cos();
                sin[t * half + i] = a.sin();
            }
        }
        let rope = |v: &mut [f32], t: usize| {
            for head in v.chunks_exact_mut(hd) {
                for i in 0..half {
                    let (c, s) = (cos[t * half + i], sin[t * half + i]);
                    let (a, b) = (head[i], head[i + half]);
                    head[i] = a * c - b * s;
                    head[i + half] = b * c + a * s;
                }
            }
        };

        let mut h = vec![0f32; n * d];
        let qkv_w = q_dim + 2 * kv_dim;
        let mut qkv = vec![0f32; n * qkv_w];
        let mut attn = vec![0f32; n * q_dim];
        let mut proj = vec![0f32; n * d];
        let mut gu = vec![0f32; n * 2 * inter];
        let mut act = vec![0f32; n * inter];
        for (li, layer) in self.layers.iter().enumerate() {
            rmsnorm(&x, &layer.attn_norm, eps, &mut h);
            layer
                .qkv
                .matmul(&self.exec, &QuantActs::for_ternary(&h, n, d), &mut qkv);
            for t in 0..n {
                let row = &mut qkv[t * qkv_w..(t + 1) * qkv_w];
                let (q, rest) = row.split_at_mut(q_dim);
                let (k, v) = rest.split_at_mut(kv_dim);
                rope(q, t);
                rope(k, t);
                for (h, (kh, vh)) in k.chunks_exact(hd).zip(v.chunks_exact(hd)).enumerate() {
                    session.k[li][h].extend_from_slice(kh);
                    session.v[li][h].extend_from_slice(vh);
                }
            }
            self.attention(&session.k[li], &session.v[li], &qkv, pos0, &mut attn);
            layer.o.matmul(
                &self.exec,
                &QuantActs::for_ternary(&attn, n, q_dim),
                &mut proj,
            );
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);

            rmsnorm(&x, &layer.ffn_norm, eps, &mut h);
            layer
                .gate_up
                .matmul(&self.exec, &QuantActs::for_ternary(&h, n, d), &mut gu);
            for t in 0..n {
                let row = &gu[t * 2 * inter..(t + 1) * 2 * inter];
                let (g, u) = row.split_at(inter);
                for ((o, &g), &u) in act[t * inter..(t + 1) * inter].iter_mut().zip(g).zip(u) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            }
            layer.down.matmul(
                &self.exec,
                &QuantActs::for_ternary(&act, n, inter),
                &mut proj,
            );
            x.iter_mut().zip(&proj).for_each(|(a, b)| *a += b);
        }
        session.pos += n;

        let first = if all { 0 } else { n - 1 };
        let m = n - first;
        let mut hf = vec![0f32; m * d];
        rmsnorm(&x[first * d..], &self.final_norm, eps, &mut hf);
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let logits = head.logits(&self.exec, &hf, m);
        Ok(logits
            .chunks_exact(cfg.vocab_size)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Causal GQA attention of the `n` new queries (inside `qkv` rows) over the cache; one task
    /// per (token, head), each a sequential f32 computation (same bits for any thread count).
    fn attention(
        &self,
        kc: &[Vec<f32>],
        vc: &[Vec<f32>],
        qkv: &[f32],
        pos0: usize,
        out: &mut [f32],
    ) {
        let cfg = &self.config;
        let hd = cfg.head_dim();
        let n_heads = cfg.num_attention_heads;
        let kv_dim = cfg.kv_heads() * hd;
        let group = n_heads / cfg.kv_heads();
        let qkv_w = cfg.hidden_size + 2 * kv_dim;
        let scale = 1.0 / (hd as f32).sqrt();
        self.exec.install(|| {
            out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
                let (t, head) = (i / n_heads, i % n_heads);
                let q = &qkv[t * qkv_w + head * hd..t * qkv_w + (head + 1) * hd];
                let kvh = head / group;
                let len = pos0 + t + 1;
                let mut scores = Vec::with_capacity(len);
                let mut max = f32::NEG_INFINITY;
                for j in 0..len {
                    let k = &kc[kvh][j * hd..(j + 1) * hd];
                    let s = dot(q, k) * scale;
                    max = max.max(s);
                    scores.push(s);
                }
                let mut sum = 0f32;
                for s in scores.iter_mut() {
                    *s = (*s - max).exp();
                    sum += *s;
                }
                o.fill(0.0);
                for (j, p) in scores.iter().enumerate() {
                    let v = &vc[kvh][j * hd..(j + 1) * hd];
                    let w = p / sum;
                    o.iter_mut().zip(v).for_each(|(a, b)| *a += w * b);
                }
            })
        });
    }

    /// Generates up to `max_tokens` after `prompt`; `on_token` sees each new token and may stop
    /// early by returning `false`.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_tokens: usize,
        params: &SamplingParams,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> anyhow::Result<Generation> {
        let eos = self.config.eos_ids();
        let mut session = self.new_session();
        let mut sampler = Sampler::new(params.clone());
        let mut tokens = Vec::new();
        if max_tokens == 0 {
            return Ok(Generation {
                tokens,
                finish: FinishReason::Length,
            });
        }
        let mut logits = self.forward(&mut session, prompt, false)?;
        loop {
            let last = logits
                .pop()
                .ok_or_else(|| anyhow::anyhow!("forward returned no logits"))?;
            let next = sampler.sample(&last);
            if eos.contains(&next) {
                return Ok(Generation {
                    tokens,
                    finish: FinishReason::Stop,
                });
            }
            tokens.push(next);
            if !on_token(next) || tokens.len() >= max_tokens {
                return Ok(Generation {
                    tokens,
                    finish: FinishReason::Length,
                });
            }
            if session.len() >= self.config.max_position_embeddings {
                return Ok(Generation {
                    tokens,
                    finish: FinishReason::Length,
                });
            }
            logits = self.forward(&mut session, &[next], false)?;
        }
    }

    /// Tokenizes text (errors without a tokenizer).
    pub fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("model has no tokenizer"))?;
        let enc = tok
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Detokenizes ids.
    pub fn decode(&self, ids: &[u32]) -> anyhow::Result<String> {
        let tok = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("model has no tokenizer"))?;
        tok.decode(ids, true)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))
    }
}
