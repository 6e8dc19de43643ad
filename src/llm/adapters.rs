//! Adapters on the frozen decoder: LoRA (Hu et al., ICLR 2022) and P-Tuning v2 /
//! deep prefix tuning (Liu et al., ACL 2022; Li & Liang, ACL 2021). Their
//! variables are the only ones trained; names follow the Hugging Face PEFT
//! library so the saved files load there (see [`super::peft`]).

use super::config::LlamaConfig;
use super::frozen::Lora;
use crate::nn::ops::dropout_mask;
use crate::nn::rng::Rng;
use candle_core::{DType, Device, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// A projection LoRA can adapt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    /// Every projection LoRA can adapt.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The module name in Hugging Face checkpoints.
    pub fn module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    pub fn parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            _ => "mlp",
        }
    }

    pub fn from_module(m: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.module() == m)
    }

    /// (in, out) sizes of this projection.
    pub fn dims(self, c: &LlamaConfig) -> (usize, usize) {
        let (h, kv, q) = (
            c.hidden_size,
            c.kv_heads() * c.head_dim(),
            c.num_attention_heads * c.head_dim(),
        );
        match self {
            Target::Q => (h, q),
            Target::K | Target::V => (h, kv),
            Target::O => (q, h),
            Target::Gate | Target::Up => (h, c.intermediate_size),
            Target::Down => (c.intermediate_size, h),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank. Default 8.
    pub r: usize,
    /// Scale alpha / r. Default alpha 16.
    pub alpha: f64,
    /// Dropout on the adapter's input in training. Default 0.
    pub dropout: f64,
    /// Projections to adapt (q, k, v, o, gate, up, down). Default [q, v].
    pub targets: Vec<Target>,
    /// Layers to adapt; empty = all. Default empty.
    pub layers: Vec<usize>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec![Target::Q, Target::V],
            layers: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PrefixConfig {
    /// Virtual tokens per layer. Default 16.
    pub virtual_tokens: usize,
    /// Layers with prefixes; empty = all (the only layout PEFT can load). Default empty.
    pub layers: Vec<usize>,
    /// Reparameterise the prefixes through an MLP (P-Tuning v2's option). Default false.
    pub projection: bool,
    /// Hidden size of that MLP. Default 512.
    pub projection_hidden: usize,
    /// Standard deviation of the initial prefixes (PEFT uses 1.0). Default 0.02.
    pub init_std: f64,
}

impl Default for PrefixConfig {
    fn default() -> Self {
        PrefixConfig {
            virtual_tokens: 16,
            layers: Vec::new(),
            projection: false,
            projection_hidden: 512,
            init_std: 0.02,
        }
    }
}

pub struct LoraModule {
    pub layer: usize,
    pub target: Target,
    /// (r, in), uniform ±1/√in like PEFT's Kaiming init.
    pub a: Var,
    /// (out, r), zeros: the adapted model starts as the base model.
    pub b: Var,
}

pub enum PrefixParams {
    /// (virtual, layers · 2 · kv_dim), PEFT's `prompt_embeddings` layout.
    Direct(Var),
    /// embedding (virtual, kv_dim) → Linear → tanh → Linear → (virtual, layers · 2 · kv_dim).
    Projected {
        emb: Var,
        w1: Var,
        b1: Var,
        w2: Var,
        b2: Var,
    },
}

pub struct Prefix {
    pub cfg: PrefixConfig,
    pub layers: Vec<usize>,
    pub params: PrefixParams,
    kv_heads: usize,
    head_dim: usize,
}

pub struct Adapters {
    pub lora: Vec<LoraModule>,
    pub lora_cfg: Option<LoraConfig>,
    pub prefix: Option<Prefix>,
    index: std::collections::HashMap<(usize, Target), usize>,
}

/// Per-layer prefix keys and values, (kv_heads, virtual, head_dim) each.
pub type PrefixKv = Vec<Option<(Tensor, Tensor)>>;

fn layers_or_all(layers: &[usize], n: usize) -> Result<Vec<usize>> {
    if layers.is_empty() {
        return Ok((0..n).collect());
    }
    let mut l = layers.to_vec();
    l.sort_unstable();
    l.dedup();
    if let Some(bad) = l.iter().find(|&&x| x >= n) {
        candle_core::bail!("adapter layer {bad} does not exist (the model has {n} layers)");
    }
    Ok(l)
}

fn var(values: Vec<f32>, shape: &[usize], dev: &Device) -> Result<Var> {
    Var::from_tensor(&Tensor::from_vec(values, shape, dev)?)
}

impl Adapters {
    pub fn none() -> Self {
        Adapters {
            lora: Vec::new(),
            lora_cfg: None,
            prefix: None,
            index: Default::default(),
        }
    }

    pub fn lora(
        cfg: &LoraConfig,
        model: &LlamaConfig,
        dev: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        if cfg.r == 0 || cfg.targets.is_empty() {
            candle_core::bail!("lora: r must be at least 1 and targets non-empty");
        }
        let mut ad = Adapters::none();
        for layer in layers_or_all(&cfg.layers, model.num_hidden_layers)? {
            for &target in &cfg.targets {
                let (d_in, d_out) = target.dims(model);
                let bound = 1.0 / (d_in as f64).sqrt();
                let a = (0..cfg.r * d_in)
                    .map(|_| rng.uniform_in(-bound, bound) as f32)
                    .collect();
                let a = var(a, &[cfg.r, d_in], dev)?;
                let b = var(vec![0.0; d_out * cfg.r], &[d_out, cfg.r], dev)?;
                ad.index.insert((layer, target), ad.lora.len());
                ad.lora.push(LoraModule {
                    layer,
                    target,
                    a,
                    b,
                });
            }
        }
        ad.lora_cfg = Some(cfg.clone());
        Ok(ad)
    }

    pub fn prefix(
        cfg: &PrefixConfig,
        model: &LlamaConfig,
        dev: &Device,
        rng: &mut Rng,
    ) -> Result<Self> {
        if cfg.virtual_tokens == 0 {
            candle_core::bail!("ptuning: virtual_tokens must be at least 1");
        }
        let layers = layers_or_all(&cfg.layers, model.num_hidden_layers)?;
        let kv_dim = model.kv_heads() * model.head_dim();
        let n = cfg.virtual_tokens;
        let total = layers.len() * 2 * kv_dim;
        fn normal(rng: &mut Rng, k: usize, std: f64) -> Vec<f32> {
            (0..k).map(|_| (rng.normal() * std) as f32).collect()
        }
        fn uni(rng: &mut Rng, k: usize, b: f64) -> Vec<f32> {
            (0..k).map(|_| rng.uniform_in(-b, b) as f32).collect()
        }
        let params = if cfg.projection {
            let h = cfg.projection_hidden;
            let (b1, b2) = (1.0 / (kv_dim as f64).sqrt(), 1.0 / (h as f64).sqrt());
            let emb = normal(rng, n * kv_dim, cfg.init_std);
            let w1 = uni(rng, kv_dim * h, b1);
            let bb1 = uni(rng, h, b1);
            let w2 = uni(rng, h * total, b2);
            let bb2 = uni(rng, total, b2);
            PrefixParams::Projected {
                emb: var(emb, &[n, kv_dim], dev)?,
                w1: var(w1, &[kv_dim, h], dev)?,
                b1: var(bb1, &[h], dev)?,
                w2: var(w2, &[h, total], dev)?,
                b2: var(bb2, &[total], dev)?,
            }
        } else {
            PrefixParams::Direct(var(normal(rng, n * total, cfg.init_std), &[n, total], dev)?)
        };
        let mut ad = Adapters::none();
        ad.prefix = Some(Prefix {
            cfg: cfg.clone(),
            layers,
            params,
            kv_heads: model.kv_heads(),
            head_dim: model.head_dim(),
        });
        Ok(ad)
    }

    /// Rebuild the lookup index after loading LoRA modules from a file.
    pub fn from_parts(
        lora: Vec<LoraModule>,
        lora_cfg: Option<LoraConfig>,
        prefix: Option<Prefix>,
    ) -> Self {
        let index = lora
            .iter()
            .enumerate()
            .map(|(i, m)| ((m.layer, m.target), i))
            .collect();
        Adapters {
            lora,
            lora_cfg,
            prefix,
            index,
        }
    }

    pub fn scale(&self) -> f64 {
        self.lora_cfg.as_ref().map_or(0.0, |c| c.alpha / c.r as f64)
    }

    /// LoRA's part of projection `target` of `layer` (None if not adapted), for an
    /// input of `n` values: the factors, the scale and, when training with dropout,
    /// the keep-mask drawn from `rng`.
    pub fn lora_part(
        &self,
        layer: usize,
        target: Target,
        n: usize,
        train: bool,
        rng: &mut Rng,
    ) -> Option<Lora<'_>> {
        let &i = self.index.get(&(layer, target))?;
        let m = &self.lora[i];
        let p = self.lora_cfg.as_ref().map_or(0.0, |c| c.dropout);
        Some(Lora {
            a: m.a.as_tensor(),
            b: m.b.as_tensor(),
            scale: self.scale(),
            keep: if train { dropout_mask(n, p, rng) } else { None },
        })
    }

    /// Does `layer` adapt any of `targets`?
    pub fn adapts(&self, layer: usize, targets: &[Target]) -> bool {
        targets
            .iter()
            .any(|&t| self.index.contains_key(&(layer, t)))
    }

    /// The lowest layer an adapter touches (layers below it can be cached).
    pub fn lowest_layer(&self) -> Option<usize> {
        let l = self.lora.iter().map(|m| m.layer).min();
        let p = self.prefix.as_ref().and_then(|p| p.layers.first().copied());
        match (l, p) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The highest layer an adapter touches.
    pub fn highest_layer(&self) -> Option<usize> {
        let l = self.lora.iter().map(|m| m.layer).max();
        let p = self.prefix.as_ref().and_then(|p| p.layers.last().copied());
        l.max(p)
    }

    pub fn prefix_len(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.cfg.virtual_tokens)
    }

    /// The prefix tensor in PEFT's layout: (virtual, chosen layers · 2 · kv_dim).
    pub fn prompt_embeddings(&self) -> Result<Option<Tensor>> {
        let Some(p) = &self.prefix else {
            return Ok(None);
        };
        Ok(Some(match &p.params {
            PrefixParams::Direct(v) => v.as_tensor().clone(),
            PrefixParams::Projected {
                emb,
                w1,
                b1,
                w2,
                b2,
            } => emb
                .as_tensor()
                .matmul(w1.as_tensor())?
                .broadcast_add(b1.as_tensor())?
                .tanh()?
                .matmul(w2.as_tensor())?
                .broadcast_add(b2.as_tensor())?,
        }))
    }

    /// Keys and values of every layer's prefix (None for layers without one).
    pub fn prefix_kv(&self, n_layers: usize) -> Result<PrefixKv> {
        let mut out: PrefixKv = vec![None; n_layers];
        let (Some(p), Some(all)) = (&self.prefix, self.prompt_embeddings()?) else {
            return Ok(out);
        };
        let n = p.cfg.virtual_tokens;
        // (virtual, layers·2, kv_heads, head_dim) → per layer (kv_heads, virtual, head_dim).
        let all = all.reshape((n, p.layers.len() * 2, p.kv_heads, p.head_dim))?;
        for (j, &layer) in p.layers.iter().enumerate() {
            let k = all
                .narrow(1, 2 * j, 1)?
                .squeeze(1)?
                .transpose(0, 1)?
                .contiguous()?;
            let v = all
                .narrow(1, 2 * j + 1, 1)?
                .squeeze(1)?
                .transpose(0, 1)?
                .contiguous()?;
            out[layer] = Some((k, v));
        }
        Ok(out)
    }

    /// Every trainable variable with its PEFT name.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        for m in &self.lora {
            let base = format!(
                "base_model.model.model.layers.{}.{}.{}",
                m.layer,
                m.target.parent(),
                m.target.module()
            );
            out.push((format!("{base}.lora_A.weight"), m.a.clone()));
            out.push((format!("{base}.lora_B.weight"), m.b.clone()));
        }
        if let Some(p) = &self.prefix {
            match &p.params {
                PrefixParams::Direct(v) => out.push(("prompt_embeddings".into(), v.clone())),
                PrefixParams::Projected {
                    emb,
                    w1,
                    b1,
                    w2,
                    b2,
                } => {
                    out.push(("prompt_encoder.embedding.weight".into(), emb.clone()));
                    out.push(("prompt_encoder.transform.0.weight".into(), w1.clone()));
                    out.push(("prompt_encoder.transform.0.bias".into(), b1.clone()));
                    out.push(("prompt_encoder.transform.2.weight".into(), w2.clone()));
                    out.push(("prompt_encoder.transform.2.bias".into(), b2.clone()));
                }
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.lora.is_empty() && self.prefix.is_none()
    }

    pub fn dtype(&self) -> DType {
        DType::F32
    }
}

impl Prefix {
    pub fn from_direct(
        cfg: PrefixConfig,
        layers: Vec<usize>,
        emb: Var,
        kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        Prefix {
            cfg,
            layers,
            params: PrefixParams::Direct(emb),
            kv_heads,
            head_dim,
        }
    }
}
