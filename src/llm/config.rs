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

    /// The shape of every weight the decoder reads, by Hugging Face name.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, v, i) = (self.hidden_size, self.vocab_size, self.intermediate_size);
        let q = self.num_attention_heads * self.head_dim();
        let kv = self.kv_heads() * self.head_dim();
        let mut out = vec![
            ("model.embed_tokens.weight".to_string(), vec![v, h]),
            ("model.norm.weight".to_string(), vec![h]),
        ];
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut put = |name: &str, shape: Vec<usize>| out.push((format!("{p}.{name}"), shape));
            put("self_attn.q_proj.weight", vec![q, h]);
            put("self_attn.k_proj.weight", vec![kv, h]);
            put("self_attn.v_proj.weight", vec![kv, h]);
            put("self_attn.o_proj.weight", vec![h, q]);
            if self.qkv_bias() {
                put("self_attn.q_proj.bias", vec![q]);
                put("self_attn.k_proj.bias", vec![kv]);
                put("self_attn.v_proj.bias", vec![kv]);
            }
            put("mlp.gate_proj.weight", vec![i, h]);
            put("mlp.up_proj.weight", vec![i, h]);
            put("mlp.down_proj.weight", vec![h, i]);
            put("input_layernorm.weight", vec![h]);
            put("post_attention_layernorm.weight", vec![h]);
        }
        out
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for (key, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("vocab_size", self.vocab_size),
        ] {
            if v == 0 {
                anyhow::bail!("config: {key} = 0 must be at least 1");
            }
        }
        for (key, v) in [
            ("rms_norm_eps", self.rms_norm_eps),
            ("rope_theta", self.rope_theta),
        ] {
            if !(v.is_finite() && v > 0.0) {
                anyhow::bail!("config: {key} = {v} must be a finite number > 0");
            }
        }
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        if h == 0 || kv == 0 || h % kv != 0 {
            anyhow::bail!("config: {h} attention heads is not a multiple of {kv} key/value heads");
        }
        if self.head_dim() == 0 || !self.head_dim().is_multiple_of(2) {
            anyhow::bail!(
                "config: head dim {} must be even for rotary embeddings",
                self.head_dim()
            );
        }
        Ok(())
    }
}
