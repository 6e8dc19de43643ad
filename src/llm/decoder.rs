//! A Llama-family decoder (Touvron et al., "LLaMA", 2023) that can be trained
//! through: grouped-query attention, rotary embeddings in both layouts, RMS norm,
//! SwiGLU, tied embeddings, Qwen2-style q/k/v biases. Only differentiable ops are
//! used (candle's fused `rms_norm`, `rope`, `softmax_last_dim`, `sdpa` drop
//! gradients silently). The base weights are plain tensors, never trained. On the
//! CPU the frozen projections (with their LoRA terms), the frozen MLP, attention,
//! RMS norm and SwiGLU are single graph nodes with analytic backward passes that
//! compute only what the adapters need (`frozen.rs`, `crate::nn::attention`,
//! `crate::nn::fused`); elsewhere they are composed of candle ops.

use super::adapters::{Adapters, PrefixKv, Target};
use super::config::{Act, LlamaConfig, RopeLayout};
use super::frozen::{frozen_linear, frozen_mlp};
use crate::nn::attention::{Dims, attention};
use crate::nn::fused::swiglu;
use crate::nn::rng::Rng;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// A frozen projection: weight stored transposed, (in, out), and an optional bias.
pub struct Proj {
    pub wt: Tensor,
    pub bias: Option<Tensor>,
}

impl Proj {
    /// `w` in the checkpoint's (out, in) layout.
    fn new(w: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Ok(Proj {
            wt: w.t()?.contiguous()?,
            bias,
        })
    }
}

pub struct Layer {
    pub q: Proj,
    pub k: Proj,
    pub v: Proj,
    pub o: Proj,
    pub gate: Proj,
    pub up: Proj,
    pub down: Proj,
    pub attn_norm: Tensor,
    pub ffn_norm: Tensor,
    /// Qwen3's RMS norms over each head's queries and keys, (head_dim) each.
    pub qk_norm: Option<(Tensor, Tensor)>,
}

pub struct Decoder {
    pub cfg: LlamaConfig,
    pub rope: RopeLayout,
    pub embed: Tensor,
    pub layers: Vec<Layer>,
    pub norm: Tensor,
    /// None when the output layer is tied to the embeddings.
    pub lm_head: Option<Tensor>,
    pub device: Device,
    /// Run the layers as one graph node on the CPU (`stack.rs`); false composes
    /// per-block nodes (what other devices do; tests compare the two).
    pub stack_op: bool,
    /// The MLP's gate activation.
    pub act: Act,
    /// Gemma multiplies the token embeddings by sqrt(hidden).
    pub embed_scale: Option<f64>,
    /// Rotary inverse frequencies of one head (scaled as the config says).
    inv_freq: Vec<f32>,
}

/// RMS norm, x · rsqrt(mean(x²) + eps) · w, w frozen: one fused node with an
/// analytic backward on CPU (composed ops elsewhere).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    crate::nn::fused::rms_norm(x, w, eps)
}

impl Decoder {
    /// Build from tensors named as in Hugging Face Llama checkpoints.
    pub fn from_tensors(
        cfg: LlamaConfig,
        rope: RopeLayout,
        mut t: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut take = |name: &str| -> Result<Tensor> {
            let x = t
                .remove(name)
                .with_context(|| format!("checkpoint has no tensor `{name}`"))?;
            Ok(x.to_dtype(DType::F32)?.to_device(device)?)
        };
        let embed = take("model.embed_tokens.weight")?;
        let (vocab, hidden) = embed.dims2()?;
        if hidden != cfg.hidden_size {
            bail!(
                "embed_tokens is {vocab}×{hidden}, config says hidden size {}",
                cfg.hidden_size
            );
        }
        let bias = cfg.qkv_bias();
        let o_bias = cfg.o_bias();
        // Gemma's norms multiply by (1 + w): stored so, the norm is the usual one.
        let gemma = cfg.gemma();
        let norm_weight = |w: Tensor| -> Result<Tensor> { Ok(if gemma { (w + 1.0)? } else { w }) };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut proj = |name: &str, with_bias: bool| -> Result<Proj> {
                let w = take(&format!("{p}.{name}.weight"))?;
                let b = if with_bias {
                    Some(take(&format!("{p}.{name}.bias"))?)
                } else {
                    None
                };
                Proj::new(w, b)
            };
            let q = proj("self_attn.q_proj", bias)?;
            let k = proj("self_attn.k_proj", bias)?;
            let v = proj("self_attn.v_proj", bias)?;
            let o = proj("self_attn.o_proj", o_bias)?;
            let gate = proj("mlp.gate_proj", false)?;
            let up = proj("mlp.up_proj", false)?;
            let down = proj("mlp.down_proj", false)?;
            let qk_norm = if cfg.qk_norm() {
                Some((
                    take(&format!("{p}.self_attn.q_norm.weight"))?,
                    take(&format!("{p}.self_attn.k_norm.weight"))?,
                ))
            } else {
                None
            };
            layers.push(Layer {
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                attn_norm: norm_weight(take(&format!("{p}.input_layernorm.weight"))?)?,
                ffn_norm: norm_weight(take(&format!("{p}.post_attention_layernorm.weight"))?)?,
                qk_norm,
            });
        }
        let norm = norm_weight(take("model.norm.weight")?)?;
        // Untied checkpoints must carry their output layer; GGUF files without
        // `output.weight` are tied (the loader sets tie_word_embeddings).
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(take("lm_head.weight")?)
        };
        let act = cfg.act()?;
        let embed_scale = gemma.then(|| (cfg.hidden_size as f64).sqrt());
        let inv_freq = cfg.inv_freq()?.into_iter().map(|f| f as f32).collect();
        Ok(Decoder {
            cfg,
            rope,
            embed,
            layers,
            norm,
            lm_head,
            device: device.clone(),
            stack_op: true,
            act,
            embed_scale,
            inv_freq,
        })
    }

    /// The layers are plain Llama blocks (SwiGLU, no q/k norms, no output
    /// bias): what the one-node CPU stack (`stack.rs`) computes.
    pub fn plain_blocks(&self) -> bool {
        self.act == Act::Silu && !self.cfg.qk_norm() && !self.cfg.o_bias()
    }

    /// Token embeddings of `ids` (b, t) → (b, t, h).
    pub fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let x = self.embed.index_select(&ids.flatten_all()?, 0)?.reshape((
            b,
            t,
            self.cfg.hidden_size,
        ))?;
        Ok(match self.embed_scale {
            // transformers rounds sqrt(hidden) to the states' dtype first.
            Some(s) => (x * f64::from(s as f32))?,
            None => x,
        })
    }

    /// cos and sin tables for positions offset..offset+t: (t, head_dim / 2).
    fn rope_tables(&self, t: usize, offset: usize) -> Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim();
        let mut ang = Vec::with_capacity(t * hd / 2);
        for p in offset..offset + t {
            for f in &self.inv_freq {
                ang.push(p as f32 * f);
            }
        }
        let a = Tensor::from_vec(ang, (t, hd / 2), &self.device)?;
        Ok((a.cos()?, a.sin()?))
    }

    #[allow(clippy::too_many_arguments)]
    fn proj(
        &self,
        layer: usize,
        target: Target,
        p: &Proj,
        x: &Tensor,
        ad: &Adapters,
        train: bool,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let lora = ad.lora_part(layer, target, x.elem_count(), train, rng);
        let y = frozen_linear(x, &p.wt, lora)?;
        Ok(match &p.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }

    /// Run layers `from..` on hidden states x (b, t, h); returns (b, t, h) before
    /// the final norm. `ad` supplies LoRA deltas and prefixes.
    pub fn forward_layers(
        &self,
        x: &Tensor,
        from: usize,
        ad: &Adapters,
        train: bool,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        self.forward_range(x, from, self.layers.len(), ad, train, rng)
    }

    /// Every layer's prefix keys and values, (kv_heads, plen, head_dim) each, with
    /// the keys in this model's rotary layout: prefixes are stored in Hugging
    /// Face's (PEFT's) head-dim order, and a GGUF model keeps llama.cpp's permuted
    /// Q/K order, so its prefix keys are permuted alike.
    pub fn prefix_kv(&self, ad: &Adapters) -> Result<PrefixKv> {
        let mut prefix = ad.prefix_kv(self.layers.len())?;
        if self.rope == RopeLayout::Interleaved {
            let hd = self.cfg.head_dim();
            for (pk, _) in prefix.iter_mut().flatten() {
                let (nkv, plen, _) = pk.dims3()?;
                *pk = pk
                    .reshape((nkv, plen, 2, hd / 2))?
                    .transpose(2, 3)?
                    .reshape((nkv, plen, hd))?;
            }
        }
        Ok(prefix)
    }

    /// Run layers `from..to` only (to cache the layers below the lowest adapter).
    pub fn forward_range(
        &self,
        x: &Tensor,
        from: usize,
        to: usize,
        ad: &Adapters,
        train: bool,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let (b, t, hsz) = x.dims3()?;
        let p = ad.prefix_len();
        if let Some(w) = self.cfg.window()
            && p + t > w
        {
            bail!(
                "config: sliding_window = {w}, and the prompt has {} tokens{}: the decoder computes \
                 full attention only, so a prompt longer than the window is refused (shorten it)",
                p + t,
                if p > 0 { " with the prefix" } else { "" }
            );
        }
        let prefix = self.prefix_kv(ad)?;
        // Real tokens sit after the prefix (Hugging Face positions with past keys).
        let (cos, sin) = self.rope_tables(t, p)?;
        if self.stack_op
            && self.plain_blocks()
            && let Some(y) =
                super::stack::forward(self, x, (from, to), ad, &prefix, train, rng, (&cos, &sin))?
        {
            return Ok(y);
        }
        let eps = self.cfg.rms_norm_eps;
        // Tokens as rows, (b·t, h), through every layer.
        let mut h = x.reshape((b * t, hsz))?;
        for (l, layer) in self.layers.iter().enumerate().take(to).skip(from) {
            let x2 = rms_norm(&h, &layer.attn_norm, eps)?;
            let mut q = self.proj(l, Target::Q, &layer.q, &x2, ad, train, rng)?;
            let mut k = self.proj(l, Target::K, &layer.k, &x2, ad, train, rng)?;
            let v = self.proj(l, Target::V, &layer.v, &x2, ad, train, rng)?;
            if let Some((qn, kn)) = &layer.qk_norm {
                let hd = self.cfg.head_dim();
                let per_head = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
                    let (rows, width) = x.dims2()?;
                    Ok(rms_norm(&x.reshape((rows * width / hd, hd))?, w, eps)?
                        .reshape((rows, width))?)
                };
                q = per_head(&q, qn)?;
                k = per_head(&k, kn)?;
            }
            let att = self.attention(&q, &k, &v, prefix[l].as_ref(), &cos, &sin, (b, t))?;
            h = (h + self.proj(l, Target::O, &layer.o, &att, ad, train, rng)?)?;

            let x2 = rms_norm(&h, &layer.ffn_norm, eps)?;
            let mlp = if self.act != Act::Silu
                || ad.adapts(l, &[Target::Gate, Target::Up, Target::Down])
            {
                let g = self.proj(l, Target::Gate, &layer.gate, &x2, ad, train, rng)?;
                let u = self.proj(l, Target::Up, &layer.up, &x2, ad, train, rng)?;
                let act = match self.act {
                    Act::Silu => swiglu(&g, &u)?,
                    Act::GeluTanh => (g.gelu()? * u)?,
                    Act::GeluErf => (g.gelu_erf()? * u)?,
                };
                self.proj(l, Target::Down, &layer.down, &act, ad, train, rng)?
            } else {
                frozen_mlp(&x2, &layer.gate.wt, &layer.up.wt, &layer.down.wt)?
            };
            h = (h + mlp)?;
        }
        Ok(h.reshape((b, t, hsz))?)
    }

    /// Self-attention of one layer on projections q (b·t, heads·hd) and k, v
    /// (b·t, kv_heads·hd), with this layer's P-Tuning prefix if any.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        prefix: Option<&(Tensor, Tensor)>,
        cos: &Tensor,
        sin: &Tensor,
        (b, t): (usize, usize),
    ) -> Result<Tensor> {
        let (nkv, hd) = (self.cfg.kv_heads(), self.cfg.head_dim());
        let kvd = nkv * hd;
        let mut dims = Dims {
            b,
            t,
            plen: 0,
            heads: self.cfg.num_attention_heads,
            kv_heads: nkv,
            head_dim: hd,
            interleaved: self.rope == RopeLayout::Interleaved,
        };
        let (k, v) = match prefix {
            None => (k.clone(), v.clone()),
            Some((pk, pv)) => {
                let plen = pk.dim(1)?;
                dims.plen = plen;
                // (kv_heads, plen, hd) → each sequence's first plen rows.
                let with_prefix = |p: &Tensor, x: &Tensor| -> Result<Tensor> {
                    let rows = p
                        .transpose(0, 1)?
                        .reshape((1, plen, kvd))?
                        .broadcast_as((b, plen, kvd))?;
                    Ok(Tensor::cat(&[&rows, &x.reshape((b, t, kvd))?], 1)?
                        .reshape((b * (plen + t), kvd))?)
                };
                (with_prefix(pk, k)?, with_prefix(pv, v)?)
            }
        };
        Ok(attention(
            q,
            &k,
            &v,
            cos,
            sin,
            dims,
            1.0 / (hd as f64).sqrt(),
        )?)
    }

    pub fn final_norm(&self, h: &Tensor) -> Result<Tensor> {
        Ok(rms_norm(h, &self.norm, self.cfg.rms_norm_eps)?)
    }

    /// Last-layer token states after the final norm, (b, t, h).
    pub fn hidden_states(
        &self,
        ids: &Tensor,
        ad: &Adapters,
        train: bool,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let x = self.embed_ids(ids)?;
        self.final_norm(&self.forward_layers(&x, 0, ad, train, rng)?)
    }

    /// Logits (b, t, vocab) from normed states.
    pub fn logits(&self, normed: &Tensor) -> Result<Tensor> {
        let (b, t, h) = normed.dims3()?;
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(normed
            .reshape((b * t, h))?
            .matmul(&w.t()?)?
            .reshape((b, t, w.dim(0)?))?)
    }

    /// Fold LoRA into the base weights (W + scale · B·A) for inference.
    pub fn merge_lora(&mut self, ad: &Adapters) -> Result<()> {
        let scale = ad.scale();
        for m in &ad.lora {
            let layer = &mut self.layers[m.layer];
            let p = match m.target {
                Target::Q => &mut layer.q,
                Target::K => &mut layer.k,
                Target::V => &mut layer.v,
                Target::O => &mut layer.o,
                Target::Gate => &mut layer.gate,
                Target::Up => &mut layer.up,
                Target::Down => &mut layer.down,
            };
            // wt is (in, out): add scale · (B·A)ᵀ = scale · Aᵀ·Bᵀ.
            let delta = (m.a.as_tensor().t()?.matmul(&m.b.as_tensor().t()?)? * scale)?;
            p.wt = (&p.wt + delta)?.contiguous()?;
        }
        Ok(())
    }

    /// FNV-1a of every base weight's bytes: proves training left them untouched.
    pub fn checksum(&self) -> Result<u64> {
        let mut all: Vec<&Tensor> = vec![&self.embed, &self.norm];
        for l in &self.layers {
            all.extend([
                &l.q.wt,
                &l.k.wt,
                &l.v.wt,
                &l.o.wt,
                &l.gate.wt,
                &l.up.wt,
                &l.down.wt,
                &l.attn_norm,
                &l.ffn_norm,
            ]);
            for p in [&l.q, &l.k, &l.v, &l.o] {
                if let Some(b) = &p.bias {
                    all.push(b);
                }
            }
            if let Some((qn, kn)) = &l.qk_norm {
                all.extend([qn, kn]);
            }
        }
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for t in all {
            for v in t.flatten_all()?.to_vec1::<f32>()? {
                for byte in v.to_le_bytes() {
                    h ^= u64::from(byte);
                    h = h.wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
        }
        Ok(h)
    }
}
