//! `config.json` of a Hugging Face LLaMA export (the keys the trainer writes).

use serde::{Deserialize, Serialize};

/// Model hyper-parameters (LLaMA keys).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); defaults to `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest context (KV cache capacity).
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f32,
    /// RoPE base.
    #[serde(default = "default_theta")]
    pub rope_theta: f32,
    /// LM head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence token(s): a number or a list, as in HF configs.
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// `"bitnet_b158"` for BitLinear models.
    #[serde(default)]
    pub magnet_quant: Option<String>,
}

fn default_max_positions() -> usize {
    2048
}
fn default_eps() -> f32 {
    1e-5
}
fn default_theta() -> f32 {
    10000.0
}

impl ModelConfig {
    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// End-of-sequence ids.
    pub fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .into_iter()
                .collect(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Checks the shape invariants the engine relies on.
    pub fn validate(&self) -> anyhow::Result<()> {
        let h = self.num_attention_heads;
        let kv = self.kv_heads();
        anyhow::ensure!(
            self.hidden_size > 0 && self.intermediate_size > 0,
            "hidden/intermediate size must be > 0"
        );
        anyhow::ensure!(
            self.vocab_size > 0 && self.num_hidden_layers > 0,
            "vocab size and layer count must be > 0"
        );
        anyhow::ensure!(
            h > 0 && self.hidden_size.is_multiple_of(h),
            "hidden_size {} not divisible by {h} heads",
            self.hidden_size
        );
        anyhow::ensure!(
            kv > 0 && h.is_multiple_of(kv),
            "{h} attention heads not divisible by {kv} kv heads"
        );
        anyhow::ensure!(
            self.head_dim().is_multiple_of(2),
            "head_dim {} must be even for RoPE",
            self.head_dim()
        );
        anyhow::ensure!(
            self.max_position_embeddings > 0,
            "max_position_embeddings must be > 0"
        );
        Ok(())
    }
}
