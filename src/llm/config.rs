//! The decoder's configuration, read from a checkpoint's own `config.json` (so a
//! new Llama-family checkpoint needs no code) or from GGUF metadata.

use serde::{Deserialize, Serialize};

/// How rotary embeddings pair dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeLayout {
    /// Hugging Face checkpoints: dimension i pairs with i + d/2.
    HalfSplit,
    /// llama.cpp GGUF files (Q and K permuted by the converter): 2i pairs with 2i + 1.
    Interleaved,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Qwen2-style biases on q, k and v.
    #[serde(default)]
    pub attention_bias: bool,
    /// Qwen2 configs say so through `model_type`.
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-6
}
fn default_max_pos() -> usize {
    8192
}
fn default_theta() -> f64 {
    10_000.0
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// q, k, v carry biases (explicit `attention_bias`, or a Qwen2 checkpoint).
    pub fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type.as_deref() == Some("qwen2")
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        if h == 0 || kv == 0 || h % kv != 0 {
            anyhow::bail!("config: {h} attention heads is not a multiple of {kv} key/value heads");
        }
        if !self.head_dim().is_multiple_of(2) {
            anyhow::bail!(
                "config: head dim {} must be even for rotary embeddings",
                self.head_dim()
            );
        }
        Ok(())
    }
}
