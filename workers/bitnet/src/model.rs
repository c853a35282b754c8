//! The LLaMA-compatible BitNet b1.58 decoder in burn.
//!
//! Parameters are plain tensors named exactly as Hugging Face LLaMA names them
//! (`model.layers.3.self_attn.q_proj.weight`, …): [`BitnetModel::visit_params`] and
//! [`BitnetModel::map_params`] are the one place those names are spelled, and checkpoints, the
//! optimizer and the exporters all go through them.

use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::ModelConfig;
use crate::quant::{activation_ste, ternary_ste};
use crate::rng::SplitMix64;

/// Reads every parameter by name.
pub trait ParamVisitor {
    /// Called once per parameter, in a fixed order.
    fn visit<const D: usize>(&mut self, name: &str, param: &Tensor<D>);
}

/// Replaces every parameter by name.
pub trait ParamMapper {
    /// Called once per parameter, in the same order as [`ParamVisitor::visit`].
    fn map<const D: usize>(&mut self, name: &str, param: Tensor<D>) -> Tensor<D>;
}

/// A projection: BitLinear (ternary weights, int8 activations, STE) or plain linear.
#[derive(Clone, Debug)]
pub struct BitLinear {
    /// Latent f32 weight, `[out, in]` (HF layout).
    pub weight: Tensor<2>,
    /// Quantize in forward (BitLinear) or not (full-precision twin).
    pub ternary: bool,
}

impl BitLinear {
    /// `y = Q_a(x) · Q_w(W)^T`.
    ///
    /// # Shapes
    /// - x: `[rows, in]` → `[rows, out]`
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        if self.ternary {
            activation_ste(x).matmul(ternary_ste(self.weight.clone()).transpose())
        } else {
            x.matmul(self.weight.clone().transpose())
        }
    }
}

/// `x / sqrt(mean(x^2) + eps) * w` over the last dimension.
///
/// # Shapes
/// - x: `[rows, d]`, w: `[d]` → `[rows, d]`
pub fn rms_norm(x: Tensor<2>, w: &Tensor<1>, eps: f64) -> Tensor<2> {
    let inv = (x.clone().square().mean_dim(1) + eps).sqrt().recip(); // [rows, 1]
    x * inv * w.clone().unsqueeze::<2>()
}

/// One decoder block.
#[derive(Clone, Debug)]
pub struct Block {
    /// Pre-attention RMSNorm weight `[d]`.
    pub input_layernorm: Tensor<1>,
    /// Query projection `[h·hd, d]`.
    pub q_proj: BitLinear,
    /// Key projection `[kv·hd, d]`.
    pub k_proj: BitLinear,
    /// Value projection `[kv·hd, d]`.
    pub v_proj: BitLinear,
    /// Output projection `[d, h·hd]`.
    pub o_proj: BitLinear,
    /// Pre-MLP RMSNorm weight `[d]`.
    pub post_attention_layernorm: Tensor<1>,
    /// SwiGLU gate `[i, d]`.
    pub gate_proj: BitLinear,
    /// SwiGLU up `[i, d]`.
    pub up_proj: BitLinear,
    /// SwiGLU down `[d, i]`.
    pub down_proj: BitLinear,
}

/// RoPE tables (HF rotate_half layout) and the causal mask for one sequence length.
struct Positional {
    cos: Tensor<4>,  // [1, 1, s, hd]
    sin: Tensor<4>,  // [1, 1, s, hd]
    mask: Tensor<4>, // [1, 1, s, s], 0 on and below the diagonal, -1e9 above
}

impl Positional {
    fn new(config: &ModelConfig, seq: usize, device: &Device) -> Self {
        let hd = config.head_dim();
        let half = hd / 2;
        let mut cos = Vec::with_capacity(seq * hd);
        let mut sin = Vec::with_capacity(seq * hd);
        for pos in 0..seq {
            for i in 0..hd {
                let j = i % half;
                let inv_freq = 1.0 / config.rope_theta.powf((2 * j) as f64 / hd as f64);
                let angle = pos as f64 * inv_freq;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        let mut mask = vec![0f32; seq * seq];
        for r in 0..seq {
            for c in r + 1..seq {
                mask[r * seq + c] = -1e9;
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos, [1, 1, seq, hd]), device),
            sin: Tensor::from_data(TensorData::new(sin, [1, 1, seq, hd]), device),
            mask: Tensor::from_data(TensorData::new(mask, [1, 1, seq, seq]), device),
        }
    }

    /// `x·cos + rotate_half(x)·sin`, rotate_half pairing i with i + hd/2.
    fn rope(&self, x: Tensor<4>) -> Tensor<4> {
        let hd = x.dims()[3];
        let half = hd / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

impl Block {
    /// # Shapes
    /// - x: `[b·s, d]` → `[b·s, d]`
    fn forward(
        &self,
        x: Tensor<2>,
        config: &ModelConfig,
        b: usize,
        s: usize,
        pos: &Positional,
    ) -> Tensor<2> {
        let (h, kv, hd) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim(),
        );
        let eps = config.rms_norm_eps;
        let normed = rms_norm(x.clone(), &self.input_layernorm, eps);
        let q = self
            .q_proj
            .forward(normed.clone())
            .reshape([b, s, h, hd])
            .swap_dims(1, 2); // [b, h, s, hd]
        let k = self
            .k_proj
            .forward(normed.clone())
            .reshape([b, s, kv, hd])
            .swap_dims(1, 2); // [b, kv, s, hd]
        let v = self
            .v_proj
            .forward(normed)
            .reshape([b, s, kv, hd])
            .swap_dims(1, 2); // [b, kv, s, hd]
        let q = pos.rope(q);
        let k = pos.rope(k);
        let rep = h / kv;
        let (k, v) = if rep == 1 {
            (k, v)
        } else {
            let widen = |t: Tensor<4>| {
                t.reshape([b, kv, 1, s, hd])
                    .repeat_dim(2, rep)
                    .reshape([b, h, s, hd])
            };
            (widen(k), widen(v))
        };
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt()) + pos.mask.clone(); // [b, h, s, s]
        let attn = softmax(scores, 3).matmul(v); // [b, h, s, hd]
        let attn = attn.swap_dims(1, 2).reshape([b * s, h * hd]);
        let x = x + self.o_proj.forward(attn);
        let normed = rms_norm(x.clone(), &self.post_attention_layernorm, eps);
        let gated = silu(self.gate_proj.forward(normed.clone())) * self.up_proj.forward(normed); // [b·s, i]
        x + self.down_proj.forward(gated)
    }
}

/// The decoder: embedding, blocks, final norm, LM head (tied or not).
#[derive(Clone, Debug)]
pub struct BitnetModel {
    /// Shape and numerics.
    pub config: ModelConfig,
    /// `[vocab, d]`.
    pub embed_tokens: Tensor<2>,
    /// Decoder blocks.
    pub layers: Vec<Block>,
    /// Final RMSNorm `[d]`.
    pub norm: Tensor<1>,
    /// `[vocab, d]`, `None` when tied to the embedding.
    pub lm_head: Option<Tensor<2>>,
}

/// Shape of every parameter by name, in visiting order.
pub fn param_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let d = config.hidden_size;
    let kvd = config.num_key_value_heads * config.head_dim();
    let hd_all = config.num_attention_heads * config.head_dim();
    let i = config.intermediate_size;
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![config.vocab_size, d],
    )];
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        out.push((format!("{p}.input_layernorm.weight"), vec![d]));
        out.push((format!("{p}.self_attn.q_proj.weight"), vec![hd_all, d]));
        out.push((format!("{p}.self_attn.k_proj.weight"), vec![kvd, d]));
        out.push((format!("{p}.self_attn.v_proj.weight"), vec![kvd, d]));
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![d, hd_all]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![d]));
        out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, d]));
        out.push((format!("{p}.mlp.up_proj.weight"), vec![i, d]));
        out.push((format!("{p}.mlp.down_proj.weight"), vec![d, i]));
    }
    out.push(("model.norm.weight".to_string(), vec![d]));
    if !config.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![config.vocab_size, d]));
    }
    out
}

/// Is this parameter a projection (quantized in BitNet models)?
pub fn is_projection(name: &str) -> bool {
    name.contains("_proj.")
}

/// Errors building a model from stored tensors.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model config is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A tensor is missing from the source.
    #[error("missing tensor {0}")]
    Missing(String),
    /// A tensor has the wrong shape or length.
    #[error("tensor {name}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Shape the config implies.
        expected: Vec<usize>,
        /// Shape found.
        got: Vec<usize>,
    },
}

impl BitnetModel {
    /// A freshly initialised model: N(0, init_std) matrices, unit norms, from `seed` only.
    pub fn init(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self, ModelError> {
        let mut rng = SplitMix64::new(seed);
        Self::from_fn(config, device, |_, shape| {
            let n: usize = shape.iter().product();
            Ok(if shape.len() == 1 {
                vec![1.0; n]
            } else {
                rng.normal_vec(n, config.init_std)
            })
        })
    }

    /// A model whose parameters come from `source(name, shape)` (checkpoints, HF import).
    pub fn from_fn(
        config: &ModelConfig,
        device: &Device,
        mut source: impl FnMut(&str, &[usize]) -> Result<Vec<f32>, ModelError>,
    ) -> Result<Self, ModelError> {
        config.validate()?;
        let mut take = |name: &str, shape: &[usize]| -> Result<TensorData, ModelError> {
            let v = source(name, shape)?;
            let n: usize = shape.iter().product();
            if v.len() != n {
                return Err(ModelError::Shape {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    got: vec![v.len()],
                });
            }
            Ok(TensorData::new(v, shape.to_vec()))
        };
        let shapes = param_shapes(config);
        let mut tensors1 = Vec::new();
        let mut tensors2 = Vec::new();
        for (name, shape) in &shapes {
            let data = take(name, shape)?;
            if shape.len() == 1 {
                tensors1.push(Tensor::<1>::from_data(data, device));
            } else {
                tensors2.push(Tensor::<2>::from_data(data, device));
            }
        }
        let mut t1 = tensors1.into_iter();
        let mut t2 = tensors2.into_iter();
        let missing = || ModelError::Missing("parameter".into());
        let ternary = config.ternary;
        let proj = |w: Tensor<2>| BitLinear { weight: w, ternary };
        let embed_tokens = t2.next().ok_or_else(missing)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for _ in 0..config.num_hidden_layers {
            let input_layernorm = t1.next().ok_or_else(missing)?;
            let q_proj = proj(t2.next().ok_or_else(missing)?);
            let k_proj = proj(t2.next().ok_or_else(missing)?);
            let v_proj = proj(t2.next().ok_or_else(missing)?);
            let o_proj = proj(t2.next().ok_or_else(missing)?);
            let post_attention_layernorm = t1.next().ok_or_else(missing)?;
            let gate_proj = proj(t2.next().ok_or_else(missing)?);
            let up_proj = proj(t2.next().ok_or_else(missing)?);
            let down_proj = proj(t2.next().ok_or_else(missing)?);
            layers.push(Block {
                input_layernorm,
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                post_attention_layernorm,
                gate_proj,
                up_proj,
                down_proj,
            });
        }
        let norm = t1.next().ok_or_else(missing)?;
        let lm_head = if config.tie_word_embeddings {
            None
        } else {
            Some(t2.next().ok_or_else(missing)?)
        };
        Ok(Self {
            config: config.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }

    /// Visits every parameter with its Hugging Face name (order of [`param_shapes`]).
    pub fn visit_params<V: ParamVisitor>(&self, v: &mut V) {
        v.visit("model.embed_tokens.weight", &self.embed_tokens);
        for (l, b) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{l}");
            v.visit(&format!("{p}.input_layernorm.weight"), &b.input_layernorm);
            v.visit(&format!("{p}.self_attn.q_proj.weight"), &b.q_proj.weight);
            v.visit(&format!("{p}.self_attn.k_proj.weight"), &b.k_proj.weight);
            v.visit(&format!("{p}.self_attn.v_proj.weight"), &b.v_proj.weight);
            v.visit(&format!("{p}.self_attn.o_proj.weight"), &b.o_proj.weight);
            v.visit(
                &format!("{p}.post_attention_layernorm.weight"),
                &b.post_attention_layernorm,
            );
            v.visit(&format!("{p}.mlp.gate_proj.weight"), &b.gate_proj.weight);
            v.visit(&format!("{p}.mlp.up_proj.weight"), &b.up_proj.weight);
            v.visit(&format!("{p}.mlp.down_proj.weight"), &b.down_proj.weight);
        }
        v.visit("model.norm.weight", &self.norm);
        if let Some(head) = &self.lm_head {
            v.visit("lm_head.weight", head);
        }
    }

    /// Replaces every parameter (same names and order as [`Self::visit_params`]).
    pub fn map_params<M: ParamMapper>(mut self, m: &mut M) -> Self {
        self.embed_tokens = m.map("model.embed_tokens.weight", self.embed_tokens);
        for (l, b) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{l}");
            let lin = |m: &mut M, name: String, w: &mut BitLinear| {
                let t = w.weight.clone();
                w.weight = m.map(&name, t);
            };
            b.input_layernorm = m.map(
                &format!("{p}.input_layernorm.weight"),
                b.input_layernorm.clone(),
            );
            lin(m, format!("{p}.self_attn.q_proj.weight"), &mut b.q_proj);
            lin(m, format!("{p}.self_attn.k_proj.weight"), &mut b.k_proj);
            lin(m, format!("{p}.self_attn.v_proj.weight"), &mut b.v_proj);
            lin(m, format!("{p}.self_attn.o_proj.weight"), &mut b.o_proj);
            b.post_attention_layernorm = m.map(
                &format!("{p}.post_attention_layernorm.weight"),
                b.post_attention_layernorm.clone(),
            );
            lin(m, format!("{p}.mlp.gate_proj.weight"), &mut b.gate_proj);
            lin(m, format!("{p}.mlp.up_proj.weight"), &mut b.up_proj);
            lin(m, format!("{p}.mlp.down_proj.weight"), &mut b.down_proj);
        }
        self.norm = m.map("model.norm.weight", self.norm);
        self.lm_head = self.lm_head.map(|h| m.map("lm_head.weight", h));
        self
    }

    /// Moves every parameter to `device` as a gradient-tracking leaf (training) or not.
    pub fn to_device(self, device: &Device, require_grad: bool) -> Self {
        struct Move<'a>(&'a Device, bool);
        impl ParamMapper for Move<'_> {
            fn map<const D: usize>(&mut self, _: &str, p: Tensor<D>) -> Tensor<D> {
                let t = Tensor::from_data(p.into_data(), self.0);
                if self.1 {
                    t.require_grad()
                } else {
                    t
                }
            }
        }
        self.map_params(&mut Move(device, require_grad))
    }

    /// Every parameter as (name, shape, f32 values), in visiting order.
    pub fn named_f32(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        struct Collect(Vec<(String, Vec<usize>, Vec<f32>)>);
        impl ParamVisitor for Collect {
            fn visit<const D: usize>(&mut self, name: &str, p: &Tensor<D>) {
                let data = p.to_data();
                let shape = data.shape().to_vec();
                // Parameters are created as f32 and stay f32.
                let values = data
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap_or_default();
                self.0.push((name.to_string(), shape, values));
            }
        }
        let mut c = Collect(Vec::new());
        self.visit_params(&mut c);
        c.0
    }

    /// Logits for a batch of token ids.
    ///
    /// # Shapes
    /// - tokens: `[b, s]` with s ≤ max_position_embeddings → `[b·s, vocab]`
    pub fn logits(&self, tokens: Tensor<2, Int>) -> Tensor<2> {
        let [b, s] = tokens.dims();
        let device = tokens.device();
        let pos = Positional::new(&self.config, s, &device);
        let ids = tokens.reshape([b * s]);
        let mut x = self.embed_tokens.clone().select(0, ids); // [b·s, d]
        for block in &self.layers {
            x = block.forward(x, &self.config, b, s, &pos);
        }
        let x = rms_norm(x, &self.norm, self.config.rms_norm_eps);
        let head = self
            .lm_head
            .clone()
            .unwrap_or_else(|| self.embed_tokens.clone());
        x.matmul(head.transpose()) // [b·s, vocab]
    }

    /// Logits shaped `[b, s, vocab]`.
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [b, s] = tokens.dims();
        self.logits(tokens).reshape([b, s, self.config.vocab_size])
    }

    /// Mean next-token cross-entropy (nats).
    ///
    /// # Shapes
    /// - inputs, targets: `[b, s]` → `[1]`
    pub fn loss(&self, inputs: Tensor<2, Int>, targets: Tensor<2, Int>) -> Tensor<1> {
        let [b, s] = targets.dims();
        let logp = log_softmax(self.logits(inputs), 1); // [b·s, vocab]
        let picked = logp.gather(1, targets.reshape([b * s, 1])); // [b·s, 1]
        picked.mean().neg()
    }
}

/// Token ids `[b, s]` from a row-major slice.
pub fn tokens_tensor(ids: &[u32], b: usize, s: usize, device: &Device) -> Tensor<2, Int> {
    let v: Vec<i64> = ids.iter().map(|x| i64::from(*x)).collect();
    Tensor::from_data(TensorData::new(v, [b, s]), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_names_follow_hf_llama() {
        let device = Device::flex();
        let c = ModelConfig::tiny();
        let m = BitnetModel::init(&c, 1, &device).expect("init");
        let named = m.named_f32();
        let shapes = param_shapes(&c);
        assert_eq!(named.len(), shapes.len());
        for ((n, s, v), (en, es)) in named.iter().zip(&shapes) {
            assert_eq!((n, s), (en, es));
            assert_eq!(v.len(), s.iter().product::<usize>());
        }
        assert_eq!(
            named.iter().map(|x| x.2.len()).sum::<usize>(),
            c.num_params()
        );
        assert_eq!(named[2].0, "model.layers.0.self_attn.q_proj.weight");
        let ids: Vec<u32> = (0..2 * 10).map(|i| (i * 7 % 256) as u32).collect();
        let logits = m.forward(tokens_tensor(&ids, 2, 10, &device));
        assert_eq!(logits.dims(), [2, 10, 256]);
        let targets: Vec<u32> = ids.iter().map(|t| (t * 13 + 5) % 256).collect();
        let loss = m
            .loss(
                tokens_tensor(&ids, 2, 10, &device),
                tokens_tensor(&targets, 2, 10, &device),
            )
            .into_scalar::<f32>();
        // A random init predicts roughly uniformly: loss near ln(256) = 5.55.
        assert!((loss - (256f32).ln()).abs() < 0.5, "loss {loss}");
    }

    #[test]
    fn attention_is_causal() {
        let device = Device::flex();
        let m =
            BitnetModel::init(&ModelConfig::tiny().with_ternary(false), 2, &device).expect("init");
        let a: Vec<u32> = vec![1, 2, 3, 4, 5, 6];
        let mut b = a.clone();
        b[5] = 77;
        let la = m
            .logits(tokens_tensor(&a, 1, 6, &device))
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let lb = m
            .logits(tokens_tensor(&b, 1, 6, &device))
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let v = 256;
        assert_eq!(
            &la[..5 * v],
            &lb[..5 * v],
            "earlier positions ignore the future"
        );
        assert_ne!(&la[5 * v..], &lb[5 * v..]);
    }
}
