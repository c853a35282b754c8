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
            0.05,
        );
        mat(
            &mut t,
            &mut rng,
            format!("{p}.self_attn.k_proj.weight"),
            kv,
            spec.hidden,
            0.05,
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
