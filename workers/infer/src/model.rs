//! The LLaMA decoder with BitLinear projections: RMSNorm, RoPE (rotate-half), GQA attention over
//! a KV cache, SwiGLU MLP; batched prefill (every projection is one GEMM over all prompt tokens).

use std::path::Path;

use std::sync::OnceLock;

use crate::config::ModelConfig;
use crate::kernels::{self, Isa, Packing};
use crate::matrix::{quantize_token, Acts, Exec, HeadInput, HeadScratch, RowTable, TernaryMatrix};
use crate::par::{self, Shared, Team};
use crate::sampling::{Sampler, SamplingParams};
use crate::vecf32::{attend, attend_f32, narrow, rmsnorm, widen};
use half::f16;

/// Bytes of its next weights a thread prefetches while it waits at a barrier.
const WARM_BYTES: usize = 32 << 10;

/// The packed rows of `m` a team thread computes for a single token (none for a prompt: those
/// rows are claimed dynamically).
fn my_codes<'m>(team: &Team, n: usize, m: &'m TernaryMatrix) -> &'m [u8] {
    if n == 1 {
        m.codes_of_rows(team.share(m.rows(), kernels::ROW_GROUP))
    } else {
        &[]
    }
}

/// One token's int8 activations, private to a team thread.
struct OwnActs {
    data: Vec<i8>,
    sum: i32,
    scale: f32,
}

/// The activations of the next matmul: a thread's own buffer for one token, the team's shared
/// buffers for a prompt.
///
/// # Safety
/// For a prompt, no thread may write the shared buffers while the result is in use.
#[allow(unsafe_code)]
unsafe fn acts_of<'b>(
    n: usize,
    kp: usize,
    own: &'b OwnActs,
    (qd, qs, qg): (&'b Shared<i8>, &'b Shared<i32>, &'b Shared<f32>),
) -> Acts<'b> {
    if n == 1 {
        return Acts {
            n_tok: 1,
            k_pad: kp,
            data: &own.data[..kp],
            sums: std::slice::from_ref(&own.sum),
            scale: std::slice::from_ref(&own.scale),
        };
    }
    // SAFETY: no writers, by the caller's contract.
    unsafe {
        Acts {
            n_tok: n,
            k_pad: kp,
            data: qd.get(0..n * kp),
            sums: qs.get(0..n),
            scale: qg.get(0..n),
        }
    }
}

/// `layers` with every ternary matrix in `packing` (matrices already so packed are moved, not
/// copied; the others are repacked on `threads` threads, one layer per task).
fn repack_layers(layers: Vec<Layer>, packing: Packing, threads: usize) -> Vec<Layer> {
    let repack = |mut l: Layer| {
        for m in [&mut l.qkv, &mut l.o, &mut l.gate, &mut l.up, &mut l.down] {
            if m.packing() != packing {
                let old = std::mem::replace(m, TernaryMatrix::zeros(0, 0, 1.0));
                *m = old.repack(packing);
            }
        }
        l
    };
    if layers.iter().all(|l| {
        [&l.qkv, &l.o, &l.gate, &l.up, &l.down]
            .iter()
            .all(|m| m.packing() == packing)
    }) {
        return layers;
    }
    let slots: Vec<std::sync::Mutex<Option<Layer>>> = layers
        .into_iter()
        .map(|l| std::sync::Mutex::new(Some(l)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        while let Some(slot) = slots.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
            let mut g = slot.lock().unwrap_or_else(|e| e.into_inner());
            *g = g.take().map(repack);
        }
    };
    std::thread::scope(|s| {
        // Helpers that cannot start are simply missing: the caller's loop takes their layers.
        for _ in 1..threads.min(slots.len()) {
            let _ = std::thread::Builder::new().spawn_scoped(s, work);
        }
        work();
    });
    slots
        .into_iter()
        .filter_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// How the LM head is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadFormat {
    /// f32 when the head has at most 16M weights. Above that, where the head would dominate
    /// memory traffic: int4 when it is tied to the embedding (llama.cpp stores the token
    /// embedding of TQ2_0 models as Q4_K, 4.5 bits), int8 when it is a separate matrix.
    Auto,
    /// Full f32 (exact).
    F32,
    /// Int8 with one scale per row; activations quantized per token to int8.
    Int8,
    /// Int4 with one scale per row and group of 128 columns (4.25 bits per weight).
    Int4,
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
    /// Packing of the ternary layers (`None` = [`Packing::detect`]).
    pub packing: Option<Packing>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 0,
            isa: None,
            head: HeadFormat::Auto,
            packing: None,
        }
    }
}

impl HeadFormat {
    /// The storage [`HeadFormat::Auto`] resolves to for a `rows × cols` head.
    pub fn resolve(self, rows: usize, cols: usize, tied: bool) -> HeadFormat {
        match self {
            HeadFormat::Auto if rows * cols <= 16 << 20 => HeadFormat::F32,
            HeadFormat::Auto if tied => HeadFormat::Int4,
            HeadFormat::Auto => HeadFormat::Int8,
            other => other,
        }
    }

    pub(crate) fn table(
        self,
        w: Vec<f32>,
        rows: usize,
        cols: usize,
        tied: bool,
    ) -> anyhow::Result<RowTable> {
        anyhow::ensure!(
            w.len() == rows * cols,
            "table has {} values, expected {rows}x{cols}",
            w.len()
        );
        Ok(match self.resolve(rows, cols, tied) {
            HeadFormat::Int8 => {
                RowTable::Int8(crate::matrix::Int8Matrix::from_f32(&w, rows, cols)?)
            }
            HeadFormat::Int4 => RowTable::Int4(crate::int4::Int4Matrix::from_f32(&w, rows, cols)?),
            _ => RowTable::F32 {
                rows,
                cols,
                data: w,
            },
        })
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
    /// Gate projection (`[intermediate, hidden]`).
    pub gate: TernaryMatrix,
    /// Up projection (`[intermediate, hidden]`).
    pub up: TernaryMatrix,
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
    /// Packing of every ternary layer.
    packing: Packing,
    inv_freq: Vec<f32>,
}

/// KV cache and position of one sequence.
pub struct Session {
    /// Keys and values in f16 (as llama.cpp's default cache; half the bytes attention streams),
    /// each one buffer `[layer][kv_head][cap][head_dim]`: a head's history is contiguous
    /// (attention streams it), and the whole cache is one allocation (huge pages).
    k: Vec<f16>,
    v: Vec<f16>,
    /// Positions each head slot holds.
    cap: usize,
    /// `layers × kv_heads` slots.
    slots: usize,
    head_dim: usize,
    pos: usize,
}

impl Session {
    /// Elements of slot `slot` (`layer * kv_heads + kv_head`) holding positions `p0..p1`.
    fn span(&self, slot: usize, p0: usize, p1: usize) -> std::ops::Range<usize> {
        let base = slot * self.cap * self.head_dim;
        base + p0 * self.head_dim..base + p1 * self.head_dim
    }

    /// Makes room for `len` positions (capacity doubles; the history is moved once per growth).
    fn reserve(&mut self, len: usize) {
        if len <= self.cap {
            return;
        }
        let cap = len.next_power_of_two().max(64);
        let hd = self.head_dim;
        let mut k = crate::mem::huge_vec(self.slots * cap * hd, f16::ZERO);
        let mut v = crate::mem::huge_vec(self.slots * cap * hd, f16::ZERO);
        let used = self.pos * hd;
        for slot in 0..self.slots {
            let (src, dst) = (slot * self.cap * hd, slot * cap * hd);
            k[dst..dst + used].copy_from_slice(&self.k[src..src + used]);
            v[dst..dst + used].copy_from_slice(&self.v[src..src + used]);
        }
        (self.k, self.v, self.cap) = (k, v, cap);
    }

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
                    && l.gate.rows() == config.intermediate_size
                    && l.gate.cols() == d
                    && l.up.rows() == config.intermediate_size
                    && l.up.cols() == d
                    && l.down.rows() == d
                    && l.down.cols() == config.intermediate_size
                    && l.attn_norm.len() == d
                    && l.ffn_norm.len() == d,
                "layer {i}: projection shapes do not match the config"
            );
        }
        let isa = opts.isa.unwrap_or_else(Isa::detect);
        let exec = Exec::new(opts.threads, isa)?;
        let packing = opts.packing.unwrap_or_else(Packing::detect);
        let mut layers = repack_layers(layers, packing, exec.threads());
        // All ternary weights in one arena on huge pages, in the order decode streams them.
        crate::mem::into_arena(layers.iter_mut().flat_map(|l| {
            [&mut l.qkv, &mut l.o, &mut l.gate, &mut l.up, &mut l.down]
                .map(TernaryMatrix::storage_mut)
        }));
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
            packing,
            inv_freq,
        })
    }

    /// Packing of the ternary layers.
    pub fn packing(&self) -> Packing {
        self.packing
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
                    + l.gate.bytes()
                    + l.up.bytes()
                    + l.down.bytes()
                    + 4 * (l.attn_norm.len() + l.ffn_norm.len())
            })
            .sum();
        let head = self.lm_head.as_ref().unwrap_or(&self.embed).bytes();
        layers + head + 8 * self.config.hidden_size
    }

    /// The table the LM head reads (the embedding when tied).
    pub fn head_table(&self) -> &RowTable {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Empty KV cache.
    pub fn new_session(&self) -> Session {
        let n = self.config.num_hidden_layers;
        let kvh = self.config.kv_heads();
        Session {
            k: Vec::new(),
            v: Vec::new(),
            cap: 0,
            slots: n * kvh,
            head_dim: self.config.head_dim(),
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
        self.forward_team(session, tokens, all)
    }

    // The team writes shared buffers in disjoint parts between barriers (`par::Shared`); every
    // `unsafe` block below states which part is whose.
    #[allow(unsafe_code)]
    fn forward_team(
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
        let kvh = cfg.kv_heads();
        anyhow::ensure!(
            session.slots == self.layers.len() * kvh && session.head_dim == hd,
            "session was made by a model of another shape"
        );
        let n_heads = cfg.num_attention_heads;
        let group = n_heads / kvh;
        let kv_dim = kvh * hd;
        let q_dim = d;
        let inter = cfg.intermediate_size;
        let eps = cfg.rms_norm_eps;
        let vocab = cfg.vocab_size;
        let nl = self.layers.len();
        let isa = self.exec.isa;
        let packing = self.packing;
        let permute = packing.permutes_acts();
        let nth = self.exec.threads();

        let mut x = Vec::with_capacity(n * d);
        for &t in tokens {
            let row = self
                .embed
                .row(t as usize)
                .ok_or_else(|| anyhow::anyhow!("token id {t} outside vocabulary of {vocab}"))?;
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
        let rope = |src: &[f32], dst: &mut [f32], t: usize| {
            for i in 0..half {
                let (c, s) = (cos[t * half + i], sin[t * half + i]);
                let (a, b) = (src[i], src[i + half]);
                dst[i] = a * c - b * s;
                dst[i + half] = b * c + a * s;
            }
        };
        // Room in the KV cache for the new positions (written by the team below).
        session.reserve(pos0 + n);
        let spans: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> = (0..nl * kvh)
            .map(|slot| {
                (
                    session.span(slot, pos0, pos0 + n),
                    session.span(slot, 0, pos0 + n),
                )
            })
            .collect();

        let k_max = [d, q_dim, inter]
            .iter()
            .map(|&k| packing.padded_len(k))
            .max()
            .unwrap_or(0);
        let qkv_w = q_dim + 2 * kv_dim;
        let first = if all { 0 } else { n - 1 };
        let m = n - first;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        let (mut qdata, mut qsums, mut qscale) =
            (vec![0i8; n * k_max], vec![0i32; n], vec![0f32; n]);
        let mut qkv = vec![0f32; n * qkv_w];
        let mut attn = vec![0f32; n * q_dim];
        let mut act = vec![0f32; n * inter];
        let mut logits = vec![0f32; m * vocab];
        let head_in: OnceLock<HeadInput> = OnceLock::new();
        {
            let xs = Shared::new(&mut x);
            let (qd, qs, qg) = (
                Shared::new(&mut qdata),
                Shared::new(&mut qsums),
                Shared::new(&mut qscale),
            );
            let qkv = Shared::new(&mut qkv);
            let attn = Shared::new(&mut attn);
            let act = Shared::new(&mut act);
            let logits = Shared::new(&mut logits);
            let kc = Shared::new(&mut session.k);
            let vc = Shared::new(&mut session.v);
            let scale = 1.0 / (hd as f32).sqrt();
            // Rows per dynamically claimed chunk: two per thread for one token (little
            // overhead, some balance), eight per thread for a prompt.
            let chunk = |rows: usize| {
                let parts = nth * if n == 1 { 2 } else { 8 };
                rows.div_ceil(parts.max(1))
                    .next_multiple_of(kernels::ROW_GROUP)
                    .max(kernels::ROW_GROUP)
            };

            par::run(nth, 10 * nl + 4, |team: &Team| {
                let mut raw = Vec::new();
                let mut fbuf = Vec::new();
                let mut tmp = Vec::new();
                let mut hbuf = vec![0f32; d.max(inter)];
                let mut gbuf: Vec<f32> = Vec::new();
                let mut qrot = vec![0f32; hd];
                let mut krot = vec![0f32; hd];
                let mut kvrow = vec![0f32; crate::vecf32::ATTEND_ROWS * hd];
                // A prompt's attention: the cache slot whose keys/values this thread holds
                // widened to f32 (all of the slot's positions), reused by the slot's queries.
                let (mut wide_slot, mut wk, mut wv) = (None, Vec::new(), Vec::new());
                let mut scores: Vec<f32> = Vec::new();
                // Quantizes `n` rows of `k` values of `src` (after RMSNorm with `norm`) into
                // the shared activation buffer, then waits for the team.
                // Quantizes `n` rows of `k` values of `src` (after RMSNorm with `norm`). One
                // token: every thread quantizes it into its own buffer `own` (no barrier; the
                // source was completed before the last one). A prompt: the rows are split over
                // the team into the shared buffers, then the team waits.
                let quant = |src: &Shared<f32>,
                             k: usize,
                             norm: Option<&[f32]>,
                             tmp: &mut Vec<i8>,
                             hbuf: &mut [f32],
                             own: &mut OwnActs| {
                    let kp = packing.padded_len(k);
                    // The row to quantize: `xt` itself, or its RMSNorm in `hbuf`.
                    let norm_row = |xt: &'_ [f32], hbuf: &'_ mut [f32]| -> bool {
                        if let Some(w) = norm {
                            rmsnorm(xt, w, eps, &mut hbuf[..k]);
                        }
                        norm.is_some()
                    };
                    if n == 1 {
                        // SAFETY: `src` is read-only in this step.
                        let xt = unsafe { src.get(0..k) };
                        let h = if norm_row(xt, hbuf) { &hbuf[..k] } else { xt };
                        (own.sum, own.scale) = quantize_token(h, permute, tmp, &mut own.data[..kp]);
                        return;
                    }
                    team.chunks(n, 1, |tr| {
                        for t in tr {
                            // SAFETY: `src` is read-only in this step (written before the last
                            // barrier); row `t` of the activation buffers is this thread's.
                            unsafe {
                                let xt = src.get(t * k..(t + 1) * k);
                                let h = if norm_row(xt, hbuf) { &hbuf[..k] } else { xt };
                                let (s, g) =
                                    quantize_token(h, permute, tmp, qd.part(t * kp..(t + 1) * kp));
                                qs.set(t, s);
                                qg.set(t, g);
                            }
                        }
                    });
                    team.barrier();
                };
                // A barrier during which this thread pulls the start of its next weights into
                // L2 (one token; for a prompt the rows are not known ahead).
                let warm_barrier = |next: [&[u8]; 2]| {
                    let (mut part, mut off) = (0, 0);
                    team.barrier_while(|| {
                        while part < 2 && off >= next[part].len().min(WARM_BYTES) {
                            (part, off) = (part + 1, 0);
                        }
                        if part == 2 {
                            return false;
                        }
                        kernels::prefetch_line(next[part], off);
                        off += 64;
                        true
                    });
                };
                // Rows of a matrix this thread computes: for one token, its own share first
                // (known ahead, so it can be prefetched) then what is left of the others'; for a
                // prompt, dynamic chunks.
                let rows_of = |total: usize, mut f: &mut dyn FnMut(std::ops::Range<usize>)| {
                    if n == 1 {
                        team.owned_chunks(total, kernels::ROW_GROUP, 2, &mut f);
                    } else {
                        team.chunks(total, chunk(total), &mut f);
                    }
                };
                let mine = |m| my_codes(team, n, m);
                let mut own = OwnActs {
                    data: vec![0i8; k_max],
                    sum: 0,
                    scale: 0.0,
                };
                for (li, layer) in self.layers.iter().enumerate() {
                    // Attention block.
                    quant(
                        &xs,
                        d,
                        Some(&layer.attn_norm),
                        &mut tmp,
                        &mut hbuf,
                        &mut own,
                    );
                    // SAFETY: the shared activations (prompt) were written before the last barrier.
                    let a = unsafe { acts_of(n, packing.padded_len(d), &own, (&qd, &qs, &qg)) };
                    rows_of(qkv_w, &mut |rr| {
                        layer
                            .qkv
                            .matmul_rows(isa, a, rr, &mut raw, &mut fbuf, |t, r0, y| {
                                let at = t * qkv_w + r0;
                                // SAFETY: rows of this chunk are this thread's.
                                unsafe { qkv.part(at..at + y.len()) }.copy_from_slice(y)
                            })
                    });
                    warm_barrier([mine(&layer.o), &[]]);
                    // Writes token `t`'s key (after RoPE) and value of kv head `h` to the cache.
                    // (Rounded to f16 to nearest-even; `krot` is scratch.)
                    let store_kv = |t: usize, h: usize, krot: &mut [f32]| {
                        let (new, _) = &spans[li * kvh + h];
                        let at = new.start + t * hd;
                        let row = t * qkv_w + q_dim + h * hd;
                        // SAFETY: `qkv` is read-only in this step; the cache rows of (t, h) at
                        // the new positions are this task's.
                        unsafe {
                            rope(qkv.get(row..row + hd), krot, t);
                            narrow(krot, kc.part(at..at + hd));
                            narrow(
                                qkv.get(row + kv_dim..row + kv_dim + hd),
                                vc.part(at..at + hd),
                            );
                        }
                    };
                    // One token's attention, query head `head`, over the f16 cache.
                    let attend_one =
                        |head: usize, qrot: &mut [f32], scratch: (&mut Vec<f32>, &mut [f32])| {
                            let (t, (_, all)) = (0, &spans[li * kvh + head / group]);
                            let ctx = all.start..all.start + (pos0 + t + 1) * hd;
                            let row = t * qkv_w + head * hd;
                            // SAFETY: `qkv` and the cache are read-only in this step (the cache
                            // rows were written by this thread just before); the output slice of
                            // (0, head) is this task's.
                            unsafe {
                                rope(qkv.get(row..row + hd), qrot, t);
                                let o =
                                    attn.part(t * q_dim + head * hd..t * q_dim + (head + 1) * hd);
                                attend(
                                    qrot,
                                    kc.get(ctx.clone()),
                                    vc.get(ctx),
                                    hd,
                                    scale,
                                    scratch,
                                    o,
                                );
                            }
                        };
                    if n == 1 {
                        // One token: each thread takes whole kv heads (with their query heads),
                        // stores their new key/value and attends, with no barrier in between.
                        for h in team.share(kvh, 1) {
                            let (_, all) = &spans[li * kvh + h];
                            // SAFETY: read-only prefetch hints of this head's history.
                            // (At most the first 128 KiB of each: enough for the contexts where
                            // the misses dominate; beyond that it would only evict L1/L2.)
                            let head = all.start..all.end.min(all.start + (64 << 10));
                            unsafe {
                                kernels::prefetch_all(kc.get(head.clone()));
                                kernels::prefetch_all(vc.get(head));
                            }
                            store_kv(0, h, &mut krot);
                            for head in h * group..(h + 1) * group {
                                attend_one(head, &mut qrot, (&mut scores, &mut kvrow));
                            }
                        }
                    } else {
                        team.chunks(n * kvh, 1, |tasks| {
                            for i in tasks {
                                store_kv(i / kvh, i % kvh, &mut krot);
                            }
                        });
                        team.barrier();
                        // Tasks ordered kv head first, so that a thread's consecutive tasks
                        // mostly share the widened cache of one slot.
                        team.chunks(n * n_heads, 1, |tasks| {
                            for i in tasks {
                                let (h, r) = (i / (n * group), i % (n * group));
                                let (t, head) = (r / group, h * group + r % group);
                                let slot = li * kvh + h;
                                let (_, all) = &spans[slot];
                                if wide_slot != Some(slot) {
                                    wk.resize(all.len(), 0.0);
                                    wv.resize(all.len(), 0.0);
                                    // SAFETY: the cache is read-only in this step (written
                                    // before the last barrier).
                                    unsafe {
                                        widen(kc.get(all.clone()), &mut wk);
                                        widen(vc.get(all.clone()), &mut wv);
                                    }
                                    wide_slot = Some(slot);
                                }
                                let len = (pos0 + t + 1) * hd;
                                let row = t * qkv_w + head * hd;
                                // SAFETY: `qkv` is read-only in this step; the output slice of
                                // (t, head) is this task's.
                                unsafe {
                                    rope(qkv.get(row..row + hd), &mut qrot, t);
                                    let o = attn
                                        .part(t * q_dim + head * hd..t * q_dim + (head + 1) * hd);
                                    attend_f32(
                                        &qrot,
                                        &wk[..len],
                                        &wv[..len],
                                        hd,
                                        scale,
                                        &mut scores,
                                        o,
                                    );
                                }
                            }
                        });
                    }
                    warm_barrier([mine(&layer.o), &[]]);
                    quant(&attn, q_dim, None, &mut tmp, &mut hbuf, &mut own);
                    // SAFETY: the shared activations (prompt) were written before the last barrier.
                    let a = unsafe { acts_of(n, packing.padded_len(q_dim), &own, (&qd, &qs, &qg)) };
                    rows_of(d, &mut |rr| {
                        layer
                            .o
                            .matmul_rows(isa, a, rr, &mut raw, &mut fbuf, |t, r0, y| {
                                let at = t * d + r0;
                                // SAFETY: rows of this chunk are this thread's.
                                let xt = unsafe { xs.part(at..at + y.len()) };
                                xt.iter_mut().zip(y).for_each(|(a, b)| *a += b);
                            })
                    });
                    warm_barrier([mine(&layer.gate), mine(&layer.up)]);

                    // MLP block.
                    quant(&xs, d, Some(&layer.ffn_norm), &mut tmp, &mut hbuf, &mut own);
                    // SAFETY: the shared activations (prompt) were written before the last barrier.
                    let a = unsafe { acts_of(n, packing.padded_len(d), &own, (&qd, &qs, &qg)) };
                    rows_of(inter, &mut |rr| {
                        let nr = rr.len();
                        gbuf.clear();
                        gbuf.resize(nr * n, 0.0);
                        let r0 = rr.start;
                        // gbuf[t * nr + i]: gate of row r0 + i for token t.
                        layer.gate.matmul_rows(
                            isa,
                            a,
                            rr.clone(),
                            &mut raw,
                            &mut fbuf,
                            |t, _, y| gbuf[t * nr..(t + 1) * nr].copy_from_slice(y),
                        );
                        layer
                            .up
                            .matmul_rows(isa, a, rr, &mut raw, &mut fbuf, |t, _, u| {
                                let at = t * inter + r0;
                                // SAFETY: rows of this chunk are this thread's.
                                let out = unsafe { act.part(at..at + nr) };
                                let g = &gbuf[t * nr..(t + 1) * nr];
                                for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
                                    *o = g / (1.0 + (-g).exp()) * u;
                                }
                            });
                    });
                    warm_barrier([mine(&layer.down), &[]]);
                    quant(&act, inter, None, &mut tmp, &mut hbuf, &mut own);
                    // SAFETY: the shared activations (prompt) were written before the last barrier.
                    let a = unsafe { acts_of(n, packing.padded_len(inter), &own, (&qd, &qs, &qg)) };
                    rows_of(d, &mut |rr| {
                        layer
                            .down
                            .matmul_rows(isa, a, rr, &mut raw, &mut fbuf, |t, r0, y| {
                                let at = t * d + r0;
                                // SAFETY: rows of this chunk are this thread's.
                                let xt = unsafe { xs.part(at..at + y.len()) };
                                xt.iter_mut().zip(y).for_each(|(a, b)| *a += b);
                            })
                    });
                    warm_barrier([
                        self.layers.get(li + 1).map_or(&[][..], |l| mine(&l.qkv)),
                        &[],
                    ]);
                }
                // LM head over the last `m` positions.
                if team.tid() == 0 {
                    let mut hf = vec![0f32; m * d];
                    // SAFETY: `x` is read-only from here on.
                    let xf = unsafe { xs.get(first * d..n * d) };
                    for (xt, ht) in xf.chunks_exact(d).zip(hf.chunks_exact_mut(d)) {
                        rmsnorm(xt, &self.final_norm, eps, ht);
                    }
                    let _ = head_in.set(head.prepare(&hf, m));
                }
                team.barrier();
                if let Some(hin) = head_in.get() {
                    let mut hscratch = HeadScratch::default();
                    let parts = nth * 4;
                    team.chunks(vocab, vocab.div_ceil(parts).max(64), |rr| {
                        head.logits_rows(isa, hin, rr, &mut hscratch, |t, r0, y| {
                            let at = t * vocab + r0;
                            // SAFETY: rows of this chunk are this thread's.
                            unsafe { logits.part(at..at + y.len()) }.copy_from_slice(y)
                        })
                    });
                }
            })
            .map_err(|e| anyhow::anyhow!("could not start an inference thread: {e}"))?;
        }
        session.pos += n;
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
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
