//! Test fixtures: a tiny BitLinear LLaMA written exactly in the trainer's HF export format
//! (config.json, f32 latent safetensors, a BPE tokenizer.json trained here), and a naive f32
//! reference forward of the shared BitLinear semantics (fake quantization, full recompute).
#![allow(dead_code, clippy::unwrap_used, clippy::arithmetic_side_effects)]

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

pub const CORPUS: &[&str] = &[
    "the quick brown fox jumps over the lazy dog",
    "a ternary model packs weights at two bits",
    "magnet trains small language models together",
    "hello world, hello magnet, hello ternary engine",
    "integer dot products make the logits bit exact",
];

/// Trains a byte-level BPE on [`CORPUS`] with `<eos>` as token 0.
pub fn train_tokenizer(vocab: usize) -> Tokenizer {
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::default()));
    tok.with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .min_frequency(1)
        .show_progress(false)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .special_tokens(vec![AddedToken::from("<eos>", true)])
        .build()
        .into();
    tok.train(&mut trainer, CORPUS.iter()).unwrap();
    tok
}

#[derive(Clone)]
pub struct Spec {
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub tied: bool,
    pub max_pos: usize,
}

impl Spec {
    /// Widths that are not multiples of the 256-weight block, GQA 3:1.
    pub fn tiny() -> Spec {
        Spec {
            hidden: 96,
            inter: 160,
            layers: 2,
            heads: 6,
            kv_heads: 2,
            tied: false,
            max_pos: 128,
        }
    }
}

pub type Tensors = BTreeMap<String, (Vec<f32>, Vec<usize>)>;

/// Writes config.json, model.safetensors and tokenizer.json into `dir`; returns the tensors.
pub fn write_checkpoint(dir: &Path, spec: &Spec, seed: u64) -> (serde_json::Value, Tensors) {
    let tok = train_tokenizer(300);
    let vocab = tok.get_vocab_size(true);
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    let hd = spec.hidden / spec.heads;
    let kv = spec.kv_heads * hd;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": spec.hidden, "intermediate_size": spec.inter,
        "num_hidden_layers": spec.layers, "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads, "vocab_size": vocab,
        "max_position_embeddings": spec.max_pos, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": spec.tied, "bos_token_id": 0, "eos_token_id": 0,
        "torch_dtype": "float32", "magnet_quant": "bitnet_b158"
    });
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    let mut rng = Rng(seed);
    let mut t = Tensors::new();
    let mat = |t: &mut Tensors, rng: &mut Rng, name: String, rows: usize, cols: usize, amp: f32| {
        let v: Vec<f32> = (0..rows * cols).map(|_| rng.sym() * amp).collect();
        t.insert(name, (v, vec![rows, cols]));
    };
    mat(
        &mut t,
        &mut rng,
        "model.embed_tokens.weight".into(),
        vocab,
        spec.hidden,
        1.0,
    );
    if !spec.tied {
        mat(
            &mut t,
            &mut rng,
            "lm_head.weight".into(),
            vocab,
            spec.hidden,
            0.1,
        );
    }
    for i in 0..spec.layers {
        let p = format!("model.layers.{i}");
        mat(
            &mut t,
            &mut rng,
            format!("{p}.self_attn.q_proj.weight"),
            spec.hidden,
            spec.hidden,
            // Large enough that attention is peaked (scores of order 10), so that a wrong q/k
            // row order or RoPE layout changes the logits.
            0.6,
        );
        mat(
            &mut t,
            &mut rng,
            format!("{p}.self_attn.k_proj.weight"),
            kv,
            spec.hidden,
            // Large enough that attention is peaked (scores of order 10), so that a wrong q/k
            // row order or RoPE layout changes the logits.
            0.6,
        );
        mat(
            &mut t,
            &mut rng,
            format!("{p}.self_attn.v_proj.weight"),
            kv,
            spec.hidden,
            0.05,
        );
        mat(
            &mut t,
            &mut rng,
            format!("{p}.self_attn.o_proj.weight"),
            spec.hidden,
            spec.hidden,
            0.02,
        );
        mat(
            &mut t,
            &mut rng,
            format!("{p}.mlp.gate_proj.weight"),
            spec.inter,
            spec.hidden,
            0.05,
        );
        mat(
            &mut t,
            &mut rng,
            format!("{p}.mlp.up_proj.weight"),
            spec.inter,
            spec.hidden,
            0.05,
        );
        mat(
            &mut t,
            &mut rng,
            format!("{p}.mlp.down_proj.weight"),
            spec.hidden,
            spec.inter,
            0.02,
        );
        for n in ["input_layernorm", "post_attention_layernorm"] {
            let v: Vec<f32> = (0..spec.hidden).map(|_| 1.0 + 0.2 * rng.sym()).collect();
            t.insert(format!("{p}.{n}.weight"), (v, vec![spec.hidden]));
        }
    }
    let v: Vec<f32> = (0..spec.hidden).map(|_| 1.0 + 0.2 * rng.sym()).collect();
    t.insert("model.norm.weight".into(), (v, vec![spec.hidden]));
    let bytes: BTreeMap<String, (Vec<u8>, Vec<usize>)> = t
        .iter()
        .map(|(k, (v, s))| {
            (
                k.clone(),
                (v.iter().flat_map(|x| x.to_le_bytes()).collect(), s.clone()),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(k, (b, s))| {
            (
                k.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let st = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), st).unwrap();
    (config, t)
}

// ---------------------------------------------------------------------------------------------
// Naive reference (what the trainer's burn model computes in its quantized forward).

fn bitlinear(x: &[f32], w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let s = (w.iter().map(|v| f64::from(v.abs())).sum::<f64>() / w.len() as f64) as f32;
    let s = s.max(1e-5);
    let wq: Vec<f32> = w.iter().map(|v| (v / s).round().clamp(-1.0, 1.0)).collect();
    let mut out = Vec::new();
    for xt in x.chunks(cols) {
        let g = xt.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-5);
        let xq: Vec<f32> = xt
            .iter()
            .map(|v| (v * 127.0 / g).round().clamp(-128.0, 127.0))
            .collect();
        for r in 0..rows {
            let dot: f64 = (0..cols)
                .map(|k| f64::from(wq[r * cols + k]) * f64::from(xq[k]))
                .sum();
            out.push(dot as f32 * s * g / 127.0);
        }
    }
    out
}

fn rmsnorm(x: &[f32], w: &[f32]) -> Vec<f32> {
    let d = w.len();
    let mut out = Vec::new();
    for xt in x.chunks(d) {
        let ms = xt.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        out.extend(xt.iter().zip(w).map(|(v, g)| v * inv * g));
    }
    out
}

fn rope(v: &mut [f32], hd: usize, pos: usize) {
    let half = hd / 2;
    for head in v.chunks_mut(hd) {
        for i in 0..half {
            let f = 1.0 / 10000f32.powf((2 * i) as f32 / hd as f32);
            let a = pos as f32 * f;
            let (x1, x2) = (head[i], head[i + half]);
            head[i] = x1 * a.cos() - x2 * a.sin();
            head[i + half] = x2 * a.cos() + x1 * a.sin();
        }
    }
}

/// Logits `[n, vocab]` of the whole sequence, recomputed from scratch in f32.
pub fn reference_logits(spec: &Spec, t: &Tensors, tokens: &[u32]) -> Vec<Vec<f32>> {
    let d = spec.hidden;
    let hd = d / spec.heads;
    let kvd = spec.kv_heads * hd;
    let n = tokens.len();
    let emb = &t["model.embed_tokens.weight"].0;
    let vocab = emb.len() / d;
    let mut x: Vec<f32> = tokens
        .iter()
        .flat_map(|&id| emb[id as usize * d..(id as usize + 1) * d].to_vec())
        .collect();
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        let w = |n: &str| &t[&format!("{p}.{n}.weight")].0;
        let h = rmsnorm(&x, w("input_layernorm"));
        let mut q = bitlinear(&h, w("self_attn.q_proj"), d, d);
        let mut k = bitlinear(&h, w("self_attn.k_proj"), kvd, d);
        let v = bitlinear(&h, w("self_attn.v_proj"), kvd, d);
        for i in 0..n {
            rope(&mut q[i * d..(i + 1) * d], hd, i);
            rope(&mut k[i * kvd..(i + 1) * kvd], hd, i);
        }
        let mut att = vec![0f32; n * d];
        let group = spec.heads / spec.kv_heads;
        for i in 0..n {
            for hh in 0..spec.heads {
                let kh = hh / group;
                let qv = &q[i * d + hh * hd..i * d + (hh + 1) * hd];
                let sc: Vec<f32> = (0..=i)
                    .map(|j| {
                        qv.iter()
                            .zip(&k[j * kvd + kh * hd..])
                            .map(|(a, b)| a * b)
                            .sum::<f32>()
                            / (hd as f32).sqrt()
                    })
                    .collect();
                let m = sc.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = sc.iter().map(|s| (s - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for (j, ej) in e.iter().enumerate() {
                    for c in 0..hd {
                        att[i * d + hh * hd + c] += ej / z * v[j * kvd + kh * hd + c];
                    }
                }
            }
        }
        let o = bitlinear(&att, w("self_attn.o_proj"), d, d);
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        let h = rmsnorm(&x, w("post_attention_layernorm"));
        let g = bitlinear(&h, w("mlp.gate_proj"), spec.inter, d);
        let u = bitlinear(&h, w("mlp.up_proj"), spec.inter, d);
        let a: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        let dn = bitlinear(&a, w("mlp.down_proj"), d, spec.inter);
        x.iter_mut().zip(&dn).for_each(|(a, b)| *a += b);
    }
    let h = rmsnorm(&x, &t["model.norm.weight"].0);
    let head = if spec.tied {
        emb
    } else {
        &t["lm_head.weight"].0
    };
    h.chunks(d)
        .map(|ht| {
            (0..vocab)
                .map(|r| {
                    head[r * d..(r + 1) * d]
                        .iter()
                        .zip(ht)
                        .map(|(a, b)| a * b)
                        .sum()
                })
                .collect()
        })
        .collect()
}

/// Largest |a - b| over all logits, and the largest |b|.
pub fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f32, f32) {
    let mut diff = 0f32;
    let mut scale = 0f32;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(y) {
            diff = diff.max((p - q).abs());
            scale = scale.max(q.abs());
        }
    }
    (diff, scale)
}

// ---------------------------------------------------------------------------------------------
// GGUF v3 writer following the shared format (llama arch, TQ2_0 projections, q/k rows permuted
// like llama.cpp's converter, F32 norms, F16 embedding, byte-level BPE tokenizer metadata).

enum Meta {
    U32(u32),
    F32(f32),
    Str(String),
    Bool(bool),
    StrArr(Vec<String>),
    I32Arr(Vec<i32>),
}

fn put_str(o: &mut Vec<u8>, s: &str) {
    o.extend((s.len() as u64).to_le_bytes());
    o.extend(s.as_bytes());
}

fn put_meta(o: &mut Vec<u8>, k: &str, v: &Meta) {
    put_str(o, k);
    match v {
        Meta::U32(x) => {
            o.extend(4u32.to_le_bytes());
            o.extend(x.to_le_bytes());
        }
        Meta::F32(x) => {
            o.extend(6u32.to_le_bytes());
            o.extend(x.to_le_bytes());
        }
        Meta::Bool(b) => {
            o.extend(7u32.to_le_bytes());
            o.push(u8::from(*b));
        }
        Meta::Str(s) => {
            o.extend(8u32.to_le_bytes());
            put_str(o, s);
        }
        Meta::StrArr(a) => {
            o.extend(9u32.to_le_bytes());
            o.extend(8u32.to_le_bytes());
            o.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|s| put_str(o, s));
        }
        Meta::I32Arr(a) => {
            o.extend(9u32.to_le_bytes());
            o.extend(5u32.to_le_bytes());
            o.extend((a.len() as u64).to_le_bytes());
            a.iter().for_each(|x| o.extend(x.to_le_bytes()));
        }
    }
}

/// ggml's quantize_row_tq2_0_ref on already-ternary values with one scale.
pub fn pack_tq2_0(vals: &[i8], d: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for blk in vals.chunks(256) {
        let mut qs = [0u8; 64];
        for j in [0usize, 128] {
            for m in 0..32 {
                let mut q = 0u8;
                for n in 0..4 {
                    q |= ((blk[j + m + n * 32] + 1) as u8) << (2 * n);
                }
                qs[j / 4 + m] = q;
            }
        }
        out.extend(qs);
        out.extend(half::f16::from_f32(d).to_le_bytes());
    }
    out
}

fn permute_rows(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let mut out = vec![0f32; w.len()];
    for h in 0..heads {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let (src, dst) = (h * hd + j * hd / 2 + i, h * hd + 2 * i + j);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// bitnet.cpp's quantize_i2_s layout on already-ternary values with one scale: blocks of 128
/// values in 32 bytes (value j of a block in byte j % 32, bits 6 - 2·(j / 32), as w + 1), then the
/// f32 scale and 28 bytes of padding.
pub fn pack_i2_s(vals: &[i8], d: f32) -> Vec<u8> {
    assert_eq!(vals.len() % 128, 0);
    let mut out = vec![0u8; vals.len() / 4];
    for (j, &v) in vals.iter().enumerate() {
        let (blk, k) = (j / 128, j % 128);
        out[blk * 32 + k % 32] |= ((v + 1) as u8) << (6 - 2 * (k / 32));
    }
    out.extend_from_slice(&d.to_le_bytes());
    out.extend_from_slice(&[0u8; 28]);
    out
}

/// Writes `tensors` (HF names, latent f32) and the tokenizer in `dir` as a GGUF file (ternary
/// projections in TQ2_0).
pub fn write_gguf(path: &Path, spec: &Spec, t: &Tensors, tokenizer_json: &Path) {
    write_gguf_as(path, spec, t, tokenizer_json, false)
}

/// [`write_gguf`] with the projections in TQ2_0 or (`i2_s`) bitnet.cpp's I2_S.
pub fn write_gguf_as(path: &Path, spec: &Spec, t: &Tensors, tokenizer_json: &Path, i2_s: bool) {
    let tj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tokenizer_json).unwrap()).unwrap();
    let vocab_map = tj["model"]["vocab"].as_object().unwrap();
    let vocab = t["model.embed_tokens.weight"].0.len() / spec.hidden;
    let mut tokens = vec![String::new(); vocab];
    for (k, v) in vocab_map {
        tokens[v.as_u64().unwrap() as usize] = k.clone();
    }
    let mut types = vec![1i32; vocab];
    for a in tj["added_tokens"].as_array().unwrap() {
        let id = a["id"].as_u64().unwrap() as usize;
        tokens[id] = a["content"].as_str().unwrap().to_string();
        types[id] = 3;
    }
    let merges: Vec<String> = tj["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(p) => {
                format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap())
            }
            _ => panic!("bad merge"),
        })
        .collect();
    let meta: Vec<(&str, Meta)> = vec![
        ("general.architecture", Meta::Str("llama".into())),
        ("general.alignment", Meta::U32(32)),
        ("llama.context_length", Meta::U32(spec.max_pos as u32)),
        ("llama.embedding_length", Meta::U32(spec.hidden as u32)),
        ("llama.block_count", Meta::U32(spec.layers as u32)),
        ("llama.feed_forward_length", Meta::U32(spec.inter as u32)),
        ("llama.attention.head_count", Meta::U32(spec.heads as u32)),
        (
            "llama.attention.head_count_kv",
            Meta::U32(spec.kv_heads as u32),
        ),
        (
            "llama.rope.dimension_count",
            Meta::U32((spec.hidden / spec.heads) as u32),
        ),
        ("llama.rope.freq_base", Meta::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
        ("llama.vocab_size", Meta::U32(vocab as u32)),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str("default".into())),
        ("tokenizer.ggml.tokens", Meta::StrArr(tokens)),
        ("tokenizer.ggml.token_type", Meta::I32Arr(types)),
        ("tokenizer.ggml.merges", Meta::StrArr(merges)),
        ("tokenizer.ggml.bos_token_id", Meta::U32(0)),
        ("tokenizer.ggml.eos_token_id", Meta::U32(0)),
        ("tokenizer.ggml.add_bos_token", Meta::Bool(false)),
    ];
    // (gguf name, ggml type, dims (fastest first), data)
    let mut ts: Vec<(String, u32, Vec<u64>, Vec<u8>)> = Vec::new();
    for (hf, (v, shape)) in t {
        let name = if hf == "model.embed_tokens.weight" {
            "token_embd.weight".to_string()
        } else if hf == "lm_head.weight" {
            "output.weight".to_string()
        } else if hf == "model.norm.weight" {
            "output_norm.weight".to_string()
        } else {
            let rest = hf.strip_prefix("model.layers.").unwrap();
            let (i, part) = rest.split_once('.').unwrap();
            let g = match part {
                "input_layernorm.weight" => "attn_norm",
                "post_attention_layernorm.weight" => "ffn_norm",
                "self_attn.q_proj.weight" => "attn_q",
                "self_attn.k_proj.weight" => "attn_k",
                "self_attn.v_proj.weight" => "attn_v",
                "self_attn.o_proj.weight" => "attn_output",
                "mlp.gate_proj.weight" => "ffn_gate",
                "mlp.up_proj.weight" => "ffn_up",
                "mlp.down_proj.weight" => "ffn_down",
                other => panic!("{other}"),
            };
            format!("blk.{i}.{g}.weight")
        };
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        if hf.contains("_proj") {
            let s = (v.iter().map(|x| f64::from(x.abs())).sum::<f64>() / v.len() as f64) as f32;
            let s = s.max(1e-5);
            let v = if hf.contains("q_proj") {
                permute_rows(v, shape[0], shape[1], spec.heads)
            } else if hf.contains("k_proj") {
                permute_rows(v, shape[0], shape[1], spec.kv_heads)
            } else {
                v.clone()
            };
            let q: Vec<i8> = v
                .iter()
                .map(|x| (x / s).round().clamp(-1.0, 1.0) as i8)
                .collect();
            if i2_s {
                // The f16-rounded scale TQ2_0 stores, so both files hold the same weights.
                let d = half::f16::from_f32(s).to_f32();
                ts.push((name, 36, dims, pack_i2_s(&q, d)));
            } else {
                ts.push((name, 35, dims, pack_tq2_0(&q, s)));
            }
        } else if hf == "model.embed_tokens.weight" {
            ts.push((
                name,
                1,
                dims,
                v.iter()
                    .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
                    .collect(),
            ));
        } else {
            ts.push((
                name,
                0,
                dims,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            ));
        }
    }
    let mut o = b"GGUF".to_vec();
    o.extend(3u32.to_le_bytes());
    o.extend((ts.len() as u64).to_le_bytes());
    o.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in &meta {
        put_meta(&mut o, k, v);
    }
    let mut offset = 0u64;
    for (name, ty, dims, data) in &ts {
        put_str(&mut o, name);
        o.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| o.extend(d.to_le_bytes()));
        o.extend(ty.to_le_bytes());
        o.extend(offset.to_le_bytes());
        offset += (data.len() as u64).div_ceil(32) * 32;
    }
    while !o.len().is_multiple_of(32) {
        o.push(0);
    }
    for (_, _, _, data) in &ts {
        o.extend(data);
        while !o.len().is_multiple_of(32) {
            o.push(0);
        }
    }
    std::fs::write(path, o).unwrap();
}
