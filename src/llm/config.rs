//! The decoder's configuration, read from a checkpoint's own `config.json` (so a
//! new Llama-family checkpoint needs no code) or from GGUF metadata.

use anyhow::Context;
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
    /// The keys by which the families differ (rotary scaling, sliding windows,
    /// activations, …): read so that a checkpoint the decoder cannot compute is
    /// refused by [`LlamaConfig::validate`], never silently run as a plain Llama.
    #[serde(flatten)]
    pub arch: ArchKeys,
}

/// The config keys that change what a decoder computes. Absent keys keep the
/// Llama meaning.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ArchKeys {
    /// transformers 4: `{"type" | "rope_type": ..., "factor": ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
    /// transformers 5: `{"rope_type", "rope_theta", "factor", "partial_rotary_factor", ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_rotary_factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    /// Qwen2 / Qwen3: the window applies only when this is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Gemma's name for the MLP activation (it wins over `hidden_act`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_activation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_logit_softcapping: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_logit_softcapping: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_pre_attn_scalar: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_bidirectional_attention: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
}

/// The families whose computation the decoder implements (`model_type`).
pub const FAMILIES: [&str; 6] = ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma"];

/// The MLP's gate activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// SwiGLU (`silu`, `swish`).
    Silu,
    /// GeGLU with the tanh approximation (`gelu_pytorch_tanh`, `gelu_new`).
    GeluTanh,
    /// GeGLU with the exact erf form (`gelu`).
    GeluErf,
}

/// How rotary frequencies are scaled.
#[derive(Clone, Copy, Debug, PartialEq)]
enum RopeScaling {
    None,
    /// Positions divided by `factor` (`rope_type = "linear"`).
    Linear {
        factor: f64,
    },
    /// Llama 3's band-wise scaling (`rope_type = "llama3"`).
    Llama3 {
        factor: f64,
        low: f64,
        high: f64,
        original: f64,
    },
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
    /// The family, `llama` when the config does not say.
    pub fn family(&self) -> &str {
        self.model_type.as_deref().unwrap_or("llama")
    }

    /// The rotary base: `rope_theta`, or transformers 5's `rope_parameters.rope_theta`.
    pub fn theta(&self) -> f64 {
        self.arch
            .rope_parameters
            .as_ref()
            .and_then(|p| p.get("rope_theta"))
            .and_then(|v| v.as_f64())
            .unwrap_or(self.rope_theta)
    }

    /// The rotary scaling object: `rope_parameters` (transformers 5) or
    /// `rope_scaling` (transformers 4), with the key it came from.
    fn scaling_object(
        &self,
    ) -> Option<(&'static str, &serde_json::Map<String, serde_json::Value>)> {
        let a = &self.arch;
        a.rope_parameters
            .as_ref()
            .and_then(|v| v.as_object())
            .map(|o| ("rope_parameters", o))
            .or_else(|| {
                a.rope_scaling
                    .as_ref()
                    .and_then(|v| v.as_object())
                    .map(|o| ("rope_scaling", o))
            })
    }

    fn rope_scaling(&self) -> anyhow::Result<RopeScaling> {
        let kind_of = |v: &serde_json::Value| {
            v.get("rope_type")
                .or_else(|| v.get("type"))
                .and_then(|t| t.as_str())
                .unwrap_or("default")
                .to_string()
        };
        if let (Some(p), Some(s)) = (&self.arch.rope_parameters, &self.arch.rope_scaling)
            && !s.is_null()
            && (kind_of(p) != kind_of(s) || p.get("factor") != s.get("factor"))
        {
            anyhow::bail!(
                "config: rope_parameters ({p}) and rope_scaling ({s}) disagree: keep one of them"
            );
        }
        let Some((key, o)) = self.scaling_object() else {
            if let Some(v) = self.arch.rope_scaling.as_ref().filter(|v| !v.is_null()) {
                anyhow::bail!("config: rope_scaling = {v} is not an object");
            }
            return Ok(RopeScaling::None);
        };
        let kind = o
            .get("rope_type")
            .or_else(|| o.get("type"))
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let num = |k: &str| -> anyhow::Result<f64> {
            let v = o
                .get(k)
                .and_then(|v| v.as_f64())
                .with_context(|| format!("config: {key}.{k} is missing (rope_type {kind:?})"))?;
            if !(v.is_finite() && v > 0.0) {
                anyhow::bail!("config: {key}.{k} = {v} must be a finite number > 0");
            }
            Ok(v)
        };
        if let Some(f) = o.get("partial_rotary_factor").and_then(|v| v.as_f64())
            && f != 1.0
        {
            anyhow::bail!(
                "config: {key}.partial_rotary_factor = {f}: the decoder rotates every dimension of a head (only 1.0 is supported)"
            );
        }
        Ok(match kind {
            "default" => RopeScaling::None,
            "linear" => RopeScaling::Linear {
                factor: num("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: num("factor")?,
                low: num("low_freq_factor")?,
                high: num("high_freq_factor")?,
                original: num("original_max_position_embeddings")?,
            },
            other => anyhow::bail!(
                "config: {key}.rope_type = {other:?} is not supported (the decoder implements \"default\", \"linear\" and \"llama3\")"
            ),
        })
    }

    /// The rotary inverse frequencies of one head, (head_dim / 2), with the
    /// config's scaling applied as transformers applies it.
    pub fn inv_freq(&self) -> anyhow::Result<Vec<f64>> {
        let hd = self.head_dim();
        let theta = self.theta();
        let base: Vec<f64> = (0..hd / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f64 / hd as f64))
            .collect();
        Ok(match self.rope_scaling()? {
            RopeScaling::None => base,
            RopeScaling::Linear { factor } => base.iter().map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low,
                high,
                original,
            } => {
                let (low_wl, high_wl) = (original / low, original / high);
                base.iter()
                    .map(|&f| {
                        let wl = 2.0 * std::f64::consts::PI / f;
                        if wl < high_wl {
                            f
                        } else if wl > low_wl {
                            f / factor
                        } else {
                            let s = (original / wl - low) / (high - low);
                            (1.0 - s) * f / factor + s * f
                        }
                    })
                    .collect()
            }
        })
    }

    /// The MLP activation (`hidden_activation`, else `hidden_act`; SiLU when absent).
    pub fn act(&self) -> anyhow::Result<Act> {
        let a = &self.arch;
        let (key, name) = match (&a.hidden_activation, &a.hidden_act) {
            (Some(n), _) => ("hidden_activation", n.as_str()),
            (None, Some(n)) => ("hidden_act", n.as_str()),
            (None, None) => return Ok(Act::Silu),
        };
        Ok(match name {
            "silu" | "swish" => Act::Silu,
            "gelu_pytorch_tanh" | "gelu_new" => Act::GeluTanh,
            "gelu" => Act::GeluErf,
            other => anyhow::bail!(
                "config: {key} = {other:?} is not supported (silu, gelu, gelu_pytorch_tanh)"
            ),
        })
    }

    /// The attention window that binds, if any: Qwen2 / Qwen3 apply
    /// `sliding_window` only with `use_sliding_window`.
    pub fn window(&self) -> Option<usize> {
        let a = &self.arch;
        match self.family() {
            "qwen2" | "qwen3" if !a.use_sliding_window.unwrap_or(false) => None,
            _ => a.sliding_window,
        }
    }

    /// Qwen3's per-head RMS norms on queries and keys.
    pub fn qk_norm(&self) -> bool {
        self.family() == "qwen3"
    }

    /// Gemma: (1 + w) RMS norms and embeddings scaled by sqrt(hidden).
    pub fn gemma(&self) -> bool {
        self.family() == "gemma"
    }

    /// The output projection carries a bias (`attention_bias` outside Qwen2,
    /// whose biases are on q, k and v only).
    pub fn o_bias(&self) -> bool {
        self.attention_bias && self.family() != "qwen2"
    }

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
            if self.o_bias() {
                put("self_attn.o_proj.bias", vec![h]);
            }
            if self.qk_norm() {
                put("self_attn.q_norm.weight", vec![self.head_dim()]);
                put("self_attn.k_norm.weight", vec![self.head_dim()]);
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
        let family = self.family();
        if !FAMILIES.contains(&family) {
            anyhow::bail!(
                "config: model_type = {family:?} is not supported: the decoder computes {} \
                 (its layers differ in ways this decoder does not implement)",
                FAMILIES.join(", ")
            );
        }
        let a = &self.arch;
        let refuse = |key: &str, v: &dyn std::fmt::Display, why: &str| -> anyhow::Result<()> {
            anyhow::bail!("config: {key} = {v} is not supported: {why}")
        };
        if let Some(v) = a.attn_logit_softcapping {
            refuse(
                "attn_logit_softcapping",
                &v,
                "attention logits are not soft-capped here",
            )?;
        }
        if let Some(v) = a.final_logit_softcapping {
            refuse(
                "final_logit_softcapping",
                &v,
                "output logits are not soft-capped here",
            )?;
        }
        if let Some(v) = a.query_pre_attn_scalar {
            refuse(
                "query_pre_attn_scalar",
                &v,
                "attention is scaled by 1/sqrt(head_dim) here",
            )?;
        }
        if a.mlp_bias == Some(true) {
            refuse("mlp_bias", &true, "the MLP projections carry no bias here")?;
        }
        if a.use_bidirectional_attention == Some(true) {
            refuse(
                "use_bidirectional_attention",
                &true,
                "attention is causal here",
            )?;
        }
        if let Some(f) = a.partial_rotary_factor
            && f != 1.0
        {
            refuse(
                "partial_rotary_factor",
                &f,
                "every dimension of a head is rotated here (1.0)",
            )?;
        }
        if let Some(t) = &a.layer_types
            && let Some(other) = t
                .iter()
                .find(|t| *t != "full_attention" && *t != "sliding_attention")
        {
            refuse(
                "layer_types",
                &format!("[.., {other:?}, ..]"),
                "only full and sliding attention",
            )?;
        }
        self.rope_scaling()?;
        self.act()?;
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
            ("rope_theta", self.theta()),
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
