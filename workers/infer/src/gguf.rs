//! GGUF v3 reader: `llama` architecture, ternary projections in TQ2_0 (ggml type 35) or
//! bitnet.cpp's I2_S (type 36 in its ggml fork), norms F32, embedding/output F16 or F32,
//! byte-level BPE tokenizer from `tokenizer.ggml.*`.
//!
//! Q and K rows were permuted by llama.cpp's HF converter (so ggml's interleaved RoPE equals HF
//! rotate-half); the reader undoes it and keeps the HF layout and RoPE.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, ensure, Context};

use crate::config::ModelConfig;
use crate::kernels::BLOCK;
use crate::matrix::{RowTable, TernaryMatrix};
use crate::model::{Layer, LoadOptions, Model};

/// ggml type ids the reader understands.
const GGML_F32: u32 = 0;
const GGML_F16: u32 = 1;
const GGML_TQ2_0: u32 = 35;
/// bitnet.cpp's I2_S (x86 layout): the whole tensor as 2-bit codes in blocks of 128 values, then
/// one f32 scale (and 28 bytes of padding). Files written by an ARM build (blocks of 64) use the
/// same type id and cannot be told apart; they would load as wrong weights.
const GGML_I2_S: u32 = 36;
/// TQ2_0 block: 64 bytes of codes + f16 scale.
const TQ2_BLOCK_BYTES: usize = 66;
/// I2_S block: 128 values in 32 bytes; byte `p` holds values `p`, `32+p`, `64+p`, `96+p` in bits
/// 6–7, 4–5, 2–3, 0–1, each as `w + 1`.
const I2S_BLOCK: usize = 128;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any integer type.
    Int(i128),
    /// f32 / f64.
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array.
    Array(Vec<Value>),
}

impl Value {
    fn as_usize(&self) -> Option<usize> {
        match self {
            Value::Int(i) => usize::try_from(*i).ok(),
            _ => None,
        }
    }
    fn as_f32(&self) -> Option<f32> {
        match self {
            Value::Float(f) => Some(*f as f32),
            Value::Int(i) => Some(*i as f32),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct TensorInfo {
    dims: Vec<usize>,
    ty: u32,
    offset: usize,
}

/// A parsed GGUF file (borrowing its bytes).
pub struct Gguf<'a> {
    /// Metadata.
    pub meta: HashMap<String, Value>,
    tensors: HashMap<String, TensorInfo>,
    data: &'a [u8],
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .context("GGUF truncated")?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn len(&mut self) -> anyhow::Result<usize> {
        let n = usize::try_from(self.u64()?)?;
        ensure!(n <= self.b.len(), "GGUF length {n} larger than the file");
        Ok(n)
    }
    fn string(&mut self) -> anyhow::Result<String> {
        let n = self.len()?;
        Ok(String::from_utf8(self.take(n)?.to_vec())?)
    }
    fn value(&mut self, ty: u32, depth: usize) -> anyhow::Result<Value> {
        Ok(match ty {
            0 => Value::Int(i128::from(self.arr::<1>()?[0])),
            1 => Value::Int(i128::from(i8::from_le_bytes(self.arr()?))),
            2 => Value::Int(i128::from(u16::from_le_bytes(self.arr()?))),
            3 => Value::Int(i128::from(i16::from_le_bytes(self.arr()?))),
            4 => Value::Int(i128::from(self.u32()?)),
            5 => Value::Int(i128::from(i32::from_le_bytes(self.arr()?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.arr()?))),
            7 => Value::Bool(self.arr::<1>()?[0] != 0),
            8 => Value::Str(self.string()?),
            9 => {
                ensure!(depth < 4, "GGUF arrays nested too deeply");
                let et = self.u32()?;
                let n = self.len()?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(et, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::Int(i128::from(self.u64()?)),
            11 => Value::Int(i128::from(i64::from_le_bytes(self.arr()?))),
            12 => Value::Float(f64::from_le_bytes(self.arr()?)),
            other => bail!("GGUF metadata type {other} unknown"),
        })
    }
}

impl<'a> Gguf<'a> {
    /// Parses the header, metadata and tensor table.
    pub fn parse(b: &'a [u8]) -> anyhow::Result<Gguf<'a>> {
        let mut r = Reader { b, pos: 0 };
        ensure!(r.take(4)? == b"GGUF", "not a GGUF file (bad magic)");
        let version = r.u32()?;
        ensure!(
            version == 3 || version == 2,
            "GGUF version {version} not supported (expected 3)"
        );
        let n_tensors = r.len()?;
        let n_kv = r.len()?;
        let mut meta = HashMap::new();
        for _ in 0..n_kv {
            let k = r.string()?;
            let ty = r.u32()?;
            meta.insert(k, r.value(ty, 0)?);
        }
        let mut tensors = HashMap::new();
        for _ in 0..n_tensors {
            let name = r.string()?;
            let nd = r.u32()? as usize;
            ensure!(nd <= 4, "tensor {name}: {nd} dimensions");
            let mut dims = Vec::with_capacity(nd);
            for _ in 0..nd {
                dims.push(r.len()?);
            }
            let ty = r.u32()?;
            let offset = usize::try_from(r.u64()?)?;
            tensors.insert(name, TensorInfo { dims, ty, offset });
        }
        let align = meta
            .get("general.alignment")
            .and_then(Value::as_usize)
            .unwrap_or(32)
            .max(1);
        let start = r.pos.div_ceil(align) * align;
        // A file without tensor data is fine until a tensor is read (bounds-checked there).
        Ok(Gguf {
            meta,
            tensors,
            data: b.get(start..).unwrap_or(&[]),
        })
    }

    fn raw(&self, name: &str) -> anyhow::Result<(&TensorInfo, &'a [u8])> {
        let t = self
            .tensors
            .get(name)
            .with_context(|| format!("tensor {name} missing from GGUF"))?;
        let n = t
            .dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .with_context(|| format!("tensor {name}: dims {:?} overflow", t.dims))?;
        let bytes = match t.ty {
            GGML_F32 | GGML_F16 => n
                .checked_mul(if t.ty == GGML_F32 { 4 } else { 2 })
                .with_context(|| format!("tensor {name} too large"))?,
            GGML_TQ2_0 => {
                ensure!(
                    n.is_multiple_of(BLOCK),
                    "tensor {name}: {n} values is not whole TQ2_0 blocks"
                );
                n / BLOCK * TQ2_BLOCK_BYTES
            }
            GGML_I2_S => {
                ensure!(
                    n.is_multiple_of(I2S_BLOCK),
                    "tensor {name}: {n} values is not whole I2_S blocks of {I2S_BLOCK}"
                );
                // Codes, then the f32 scale (the 28 bytes of padding after it are not needed).
                n / 4 + 4
            }
            other => {
                bail!("tensor {name}: ggml type {other} not supported (F32, F16, TQ2_0, I2_S)")
            }
        };
        let end = t
            .offset
            .checked_add(bytes)
            .filter(|&e| e <= self.data.len())
            .with_context(|| format!("tensor {name} runs past the end of the file"))?;
        Ok((t, &self.data[t.offset..end]))
    }

    /// A float tensor (F32 or F16) and its dims (ggml order: fastest first).
    pub fn f32(&self, name: &str) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
        let (t, b) = self.raw(name)?;
        let v = match t.ty {
            GGML_F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            GGML_F16 => b
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => bail!("tensor {name}: expected F32 or F16"),
        };
        Ok((v, t.dims.clone()))
    }

    /// A TQ2_0 tensor as ternary values (flat, row-major) and its single scale. Blocks whose
    /// codes are all zero may carry any scale; all others must share one (the trainer writes one
    /// per tensor).
    pub fn ternary(&self, name: &str) -> anyhow::Result<(Vec<i8>, f32, Vec<usize>)> {
        let (t, b) = self.raw(name)?;
        if t.ty == GGML_I2_S {
            let (vals, scale) = decode_i2_s(name, b)?;
            return Ok((vals, scale, t.dims.clone()));
        }
        ensure!(
            t.ty == GGML_TQ2_0,
            "tensor {name}: expected TQ2_0 or I2_S, found ggml type {}",
            t.ty
        );
        let mut vals = Vec::with_capacity(b.len() / TQ2_BLOCK_BYTES * BLOCK);
        let mut scale: Option<f32> = None;
        for blk in b.chunks_exact(TQ2_BLOCK_BYTES) {
            let start = vals.len();
            let mut q = [0i8; BLOCK];
            for (i, &byte) in blk[..64].iter().enumerate() {
                let (half, l) = (i / 32, i % 32);
                for m in 0..4 {
                    q[half * 128 + l + 32 * m] = ((byte >> (2 * m)) & 3) as i8 - 1;
                }
            }
            vals.extend_from_slice(&q);
            let d = half::f16::from_le_bytes([blk[64], blk[65]]).to_f32();
            if vals[start..].iter().any(|&v| v != 0) {
                match scale {
                    None => scale = Some(d),
                    Some(s) if s == d => {}
                    Some(s) => bail!("tensor {name}: TQ2_0 blocks with different scales ({s} and {d}); only one scale per tensor is supported"),
                }
            }
        }
        Ok((vals, scale.unwrap_or(1.0), t.dims.clone()))
    }

    fn usize_key(&self, key: &str) -> anyhow::Result<usize> {
        self.meta
            .get(key)
            .and_then(Value::as_usize)
            .with_context(|| format!("GGUF metadata {key} missing or not an integer"))
    }
}

/// Ternary values and scale of an I2_S tensor (`b`: codes then the f32 scale).
fn decode_i2_s(name: &str, b: &[u8]) -> anyhow::Result<(Vec<i8>, f32)> {
    let (codes, scale) = b.split_at(b.len().saturating_sub(4));
    let scale = f32::from_le_bytes(
        scale
            .try_into()
            .with_context(|| format!("tensor {name}: I2_S scale missing"))?,
    );
    ensure!(
        scale.is_finite(),
        "tensor {name}: I2_S scale {scale} is not finite"
    );
    let mut vals = vec![0i8; codes.len() * 4];
    for (blk, out) in codes
        .chunks_exact(I2S_BLOCK / 4)
        .zip(vals.chunks_exact_mut(I2S_BLOCK))
    {
        for (p, &byte) in blk.iter().enumerate() {
            for g in 0..4 {
                let q = (byte >> (6 - 2 * g)) & 3;
                ensure!(q != 3, "tensor {name}: invalid I2_S code 3");
                out[g * 32 + p] = q as i8 - 1;
            }
        }
    }
    Ok((vals, scale))
}

/// llama.cpp's q/k row order → HF order: HF row `h·hd + j·hd/2 + i` is GGUF row `h·hd + 2i + j`.
fn unpermute_rows(vals: &[i8], rows: usize, cols: usize, heads: usize) -> Vec<i8> {
    let hd = rows / heads.max(1);
    let half = hd / 2;
    let mut out = vec![0i8; vals.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let dst = h * hd + j * half + i;
                let src = h * hd + 2 * i + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&vals[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn ternary_matrix(
    g: &Gguf<'_>,
    name: &str,
    rows: usize,
    cols: usize,
    qk_heads: Option<usize>,
) -> anyhow::Result<TernaryMatrix> {
    let (vals, scale, dims) = g.ternary(name)?;
    ensure!(
        dims == [cols, rows],
        "tensor {name}: dims {dims:?}, expected [{cols}, {rows}]"
    );
    let vals = match qk_heads {
        Some(h) => unpermute_rows(&vals, rows, cols, h),
        None => vals,
    };
    let mut m = TernaryMatrix::zeros(rows, cols, scale);
    for r in 0..rows {
        m.set_row(r, &vals[r * cols..(r + 1) * cols]);
    }
    Ok(m)
}

fn float_matrix(g: &Gguf<'_>, name: &str, rows: usize, cols: usize) -> anyhow::Result<Vec<f32>> {
    let (v, dims) = g.f32(name)?;
    ensure!(
        dims == [cols, rows],
        "tensor {name}: dims {dims:?}, expected [{cols}, {rows}]"
    );
    Ok(v)
}

fn float_vector(g: &Gguf<'_>, name: &str, len: usize) -> anyhow::Result<Vec<f32>> {
    let (v, dims) = g.f32(name)?;
    ensure!(
        dims == [len],
        "tensor {name}: dims {dims:?}, expected [{len}]"
    );
    Ok(v)
}

/// Builds a HF `tokenizer.json` (byte-level BPE, GPT-2 pre-tokenizer) from `tokenizer.ggml.*`.
fn tokenizer(g: &Gguf<'_>) -> anyhow::Result<Option<tokenizers::Tokenizer>> {
    let Some(Value::Array(tokens)) = g.meta.get("tokenizer.ggml.tokens") else {
        return Ok(None);
    };
    let model = g
        .meta
        .get("tokenizer.ggml.model")
        .and_then(Value::as_str)
        .unwrap_or("");
    ensure!(
        model == "gpt2",
        "tokenizer.ggml.model {model:?} not supported (expected gpt2 byte-level BPE)"
    );
    let types: Vec<usize> = match g.meta.get("tokenizer.ggml.token_type") {
        Some(Value::Array(t)) => t.iter().map(|v| v.as_usize().unwrap_or(1)).collect(),
        _ => Vec::new(),
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        let s = t
            .as_str()
            .context("tokenizer.ggml.tokens holds a non-string")?;
        vocab.insert(s.to_string(), serde_json::json!(id));
        if types.get(id) == Some(&3) {
            added.push(
                serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true}),
            );
        }
    }
    let merges: Vec<String> = match g.meta.get("tokenizer.ggml.merges") {
        Some(Value::Array(m)) => m
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    let byte_level = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": byte_level, "post_processor": null, "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges}
    });
    let tok: tokenizers::Tokenizer = json
        .to_string()
        .parse()
        .map_err(|e| anyhow::anyhow!("tokenizer from GGUF metadata: {e}"))?;
    Ok(Some(tok))
}

/// Loads a `.gguf` model.
pub(crate) fn load_gguf(path: &Path, opts: &LoadOptions) -> anyhow::Result<Model> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let g = Gguf::parse(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let arch = g
        .meta
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("");
    ensure!(
        arch == "llama",
        "GGUF architecture {arch:?} not supported (expected llama)"
    );
    let d = g.usize_key("llama.embedding_length")?;
    let heads = g.usize_key("llama.attention.head_count")?;
    let kv_heads = g
        .meta
        .get("llama.attention.head_count_kv")
        .and_then(Value::as_usize)
        .unwrap_or(heads);
    let (embd, embd_dims) = g.f32("token_embd.weight")?;
    ensure!(
        embd_dims.len() == 2 && embd_dims[0] == d,
        "token_embd.weight dims {embd_dims:?}"
    );
    let vocab = embd_dims[1];
    let tied = !g.tensors.contains_key("output.weight");
    let config = ModelConfig {
        hidden_size: d,
        intermediate_size: g.usize_key("llama.feed_forward_length")?,
        num_hidden_layers: g.usize_key("llama.block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        vocab_size: vocab,
        max_position_embeddings: g.usize_key("llama.context_length")?,
        rms_norm_eps: g
            .meta
            .get("llama.attention.layer_norm_rms_epsilon")
            .and_then(Value::as_f32)
            .unwrap_or(1e-5),
        rope_theta: g
            .meta
            .get("llama.rope.freq_base")
            .and_then(Value::as_f32)
            .unwrap_or(10000.0),
        tie_word_embeddings: tied,
        bos_token_id: g
            .meta
            .get("tokenizer.ggml.bos_token_id")
            .and_then(Value::as_usize)
            .and_then(|v| u32::try_from(v).ok()),
        eos_token_id: g
            .meta
            .get("tokenizer.ggml.eos_token_id")
            .and_then(Value::as_usize)
            .map(|v| serde_json::json!(v)),
        magnet_quant: Some("bitnet_b158".into()),
    };
    config.validate()?;
    let inter = config.intermediate_size;
    let kv_dim = kv_heads * config.head_dim();
    let mut layers = Vec::with_capacity(config.num_hidden_layers);
    for i in 0..config.num_hidden_layers {
        let n = |p: &str| format!("blk.{i}.{p}.weight");
        let q = ternary_matrix(&g, &n("attn_q"), d, d, Some(heads))?;
        let k = ternary_matrix(&g, &n("attn_k"), kv_dim, d, Some(kv_heads))?;
        let v = ternary_matrix(&g, &n("attn_v"), kv_dim, d, None)?;
        let gate = ternary_matrix(&g, &n("ffn_gate"), inter, d, None)?;
        let up = ternary_matrix(&g, &n("ffn_up"), inter, d, None)?;
        layers.push(Layer {
            attn_norm: float_vector(&g, &n("attn_norm"), d)?,
            qkv: TernaryMatrix::concat(vec![q, k, v])?,
            o: ternary_matrix(&g, &n("attn_output"), d, d, None)?,
            ffn_norm: float_vector(&g, &n("ffn_norm"), d)?,
            gate,
            up,
            down: ternary_matrix(&g, &n("ffn_down"), d, inter, None)?,
        });
    }
    let (embed, head) = if tied {
        (opts.head.table(embd, vocab, d, true)?, None)
    } else {
        let out = float_matrix(&g, "output.weight", vocab, d)?;
        (
            RowTable::F32 {
                rows: vocab,
                cols: d,
                data: embd,
            },
            Some(opts.head.table(out, vocab, d, false)?),
        )
    };
    let final_norm = float_vector(&g, "output_norm.weight", d)?;
    let tok = tokenizer(&g)?;
    Model::from_parts(config, embed, head, layers, final_norm, tok, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i2_s_blocks_decode_in_bitnet_cpp_order() {
        // Value j of a 128-block sits in byte j % 32 at bits 6 - 2·(j / 32), as w + 1.
        let w: Vec<i8> = (0..256)
            .map(|j| [(-1i8), 0, 1][(j * 7 + j / 5) % 3])
            .collect();
        let mut b = vec![0u8; 64];
        for (j, &v) in w.iter().enumerate() {
            let (blk, k) = (j / 128, j % 128);
            b[blk * 32 + k % 32] |= ((v + 1) as u8) << (6 - 2 * (k / 32));
        }
        b.extend_from_slice(&0.25f32.to_le_bytes());
        let (vals, s) = decode_i2_s("t", &b).unwrap();
        assert_eq!(vals, w);
        assert_eq!(s, 0.25);
        // Code 3 and a missing scale are errors, not panics.
        let mut bad = b.clone();
        bad[0] = 0xff;
        assert!(decode_i2_s("t", &bad).is_err());
        assert!(decode_i2_s("t", &[1, 2]).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Gguf::parse(b"").is_err());
        assert!(Gguf::parse(b"GGUF").is_err());
        assert!(Gguf::parse(b"GGML\x03\0\0\0").is_err());
        let mut b = b"GGUF\x03\0\0\0".to_vec();
        b.extend(u64::MAX.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        assert!(Gguf::parse(&b).is_err());
        // Every truncation of a valid header fails cleanly.
        let mut ok = b"GGUF\x03\0\0\0".to_vec();
        ok.extend(0u64.to_le_bytes());
        ok.extend(1u64.to_le_bytes());
        ok.extend(3u64.to_le_bytes());
        ok.extend(b"abc");
        ok.extend(8u32.to_le_bytes());
        ok.extend(2u64.to_le_bytes());
        ok.extend(b"hi");
        assert_eq!(
            Gguf::parse(&ok).unwrap().meta["abc"],
            Value::Str("hi".into())
        );
        for n in 0..ok.len() {
            assert!(Gguf::parse(&ok[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn unpermute_inverts_the_llama_cpp_permutation() {
        let (heads, hd, cols) = (3usize, 8usize, 2usize);
        let rows = heads * hd;
        let orig: Vec<i8> = (0..rows * cols).map(|i| (i % 127) as i8).collect();
        // llama.cpp: new row h·hd + 2i + j = old row h·hd + j·hd/2 + i.
        let mut perm = vec![0i8; orig.len()];
        for h in 0..heads {
            for i in 0..hd / 2 {
                for j in 0..2 {
                    let (src, dst) = (h * hd + j * hd / 2 + i, h * hd + 2 * i + j);
                    perm[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&orig[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_eq!(unpermute_rows(&perm, rows, cols, heads), orig);
    }
}
