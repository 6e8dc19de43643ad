//! The layers of the user-level mixture-of-experts family (MOE, Bias,
//! UserInput, UserLoss, UserCluster, UserSparseExpert, UserPerExpert), after
//! the CTR code this project grew from (DSXiangLi/CTR as extended in
//! Qingfeng-Yao/Code-Repository, `recommendation_system/CTR`, commit a13883c):
//!
//! - [`Attention`]: layer-normalised, scaled dot-product attention with ReLU
//!   projections: q = LN(ReLU(Wq·query)), k = LN(ReLU(Wk·key)),
//!   v = ReLU(Wv·key), softmax(q·k / √width) over the unmasked keys. (DIN's
//!   activation unit is a different computation and stays in `din.rs`.)
//! - [`Backbone`]: `fc` = [field embeddings; attention of the target item over
//!   the history's items; of the target's category over the history's
//!   categories]. The reference's fields are user, item and category; here they
//!   are the run's features (`model.features`), every one embedded at
//!   `model.embedding_dim`.
//! - [`ExpertBank`]: E experts of one shape, run as batched matrix products.
//! - [`MoeHead`]: experts on `fc`, a gate (an MLP, then any `[model.gate]` kind),
//!   an MLP from the mixture to the logit.
//! - [`UserMoe`]: backbone + head, with the optional bias tower (a second logit
//!   from `fc`), group tower (a third, from [domain input; fc]) and per-domain
//!   loss weights: MOE, Bias, UserInput, UserLoss and UserSparseExpert are this
//!   with different settings.

use super::config::ModelConfig;
use super::gates::{Gate, GateConfig};
use super::{Compact, InputSpec, Inputs, Output, add_aux};
use crate::checks::Checks;
use crate::nn::linear::{LayerNorm, Linear, Mlp};
use crate::nn::ops::{dropout, softmax};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};

/// `f`, a map of rows, on the last dimension of `x` (any leading dimensions).
fn on_last_dim(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let d = *dims.last().unwrap_or(&1);
    let y = f(&x.reshape((x.elem_count() / d.max(1), d))?)?;
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = y.dim(1)?;
    }
    y.reshape(out)
}

/// `lin` on the last dimension of `x` (any leading dimensions).
pub fn apply(lin: &Linear, x: &Tensor) -> Result<Tensor> {
    on_last_dim(x, |m| lin.forward(m))
}

/// ReLU(`lin`) on the last dimension of `x` (any leading dimensions).
pub fn apply_relu(lin: &Linear, x: &Tensor) -> Result<Tensor> {
    on_last_dim(x, |m| lin.forward_relu(m))
}

/// Layer-normalised scaled dot-product attention (one head).
pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    ln_q: LayerNorm,
    ln_k: LayerNorm,
    width: usize,
}

impl Attention {
    /// Queries of size `dq`, keys of `dk`, values read from inputs of `dv_in`
    /// and projected to `dv`; `width`: the query/key projection.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        dq: usize,
        dk: usize,
        dv_in: usize,
        dv: usize,
        width: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(Attention {
            q: Linear::new(ps, &format!("{name}.q"), dq, width, rng)?,
            k: Linear::new(ps, &format!("{name}.k"), dk, width, rng)?,
            v: Linear::new(ps, &format!("{name}.v"), dv_in, dv, rng)?,
            ln_q: LayerNorm::new(ps, &format!("{name}.ln_q"), width)?,
            ln_k: LayerNorm::new(ps, &format!("{name}.ln_k"), width)?,
            width,
        })
    }

    pub fn query(&self, x: &Tensor) -> Result<Tensor> {
        self.ln_q.forward(&apply_relu(&self.q, x)?)
    }

    pub fn key(&self, x: &Tensor) -> Result<Tensor> {
        self.ln_k.forward(&apply_relu(&self.k, x)?)
    }

    pub fn value(&self, x: &Tensor) -> Result<Tensor> {
        apply_relu(&self.v, x)
    }

    /// Weights (n, m, L) of queries (n, m, width) over keys (n, L, width);
    /// `mask` (n, L): 1 = a key, 0 = padding, which gets weight 0 (a row with
    /// no key at all gets zeros).
    pub fn weights(&self, q: &Tensor, k: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let s = (q.matmul(&k.transpose(1, 2)?.contiguous()?)? / (self.width as f64).sqrt())?;
        match mask {
            None => softmax(&s),
            Some(m) => {
                let m = m.unsqueeze(1)?.broadcast_as(s.shape())?;
                let w = softmax(&(&s + ((&m - 1.0)? * 1e9)?)?)?;
                w * m
            }
        }
    }

    /// The target `query` (n, dq) over `keys` (n, L, dk): (n, dv).
    pub fn target(&self, query: &Tensor, keys: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let q = self.query(&query.unsqueeze(1)?)?;
        let w = self.weights(&q, &self.key(keys)?, Some(mask))?;
        w.matmul(&self.value(keys)?)?.squeeze(1)
    }

    /// [`Attention::target`] over keys given compactly: each distinct key is
    /// projected once. On the CPU in f32 the scores, softmax and weighted sum
    /// visit each row's positions in one fused op ([`crate::nn::gathered`]);
    /// elsewhere every query is scored against every distinct key by one
    /// (n, u) product and the weights of a row's positions are summed per key.
    pub fn target_compact(&self, query: &Tensor, keys: &Compact, mask: &Tensor) -> Result<Tensor> {
        let q = self.query(query)?; // (n, w)
        let k = self.key(&keys.table)?; // (u, w)
        let scale = 1.0 / (self.width as f64).sqrt();
        if crate::nn::gathered::fits(&[&q, &k, mask]) {
            // One graph node visiting each row's positions (nn::gathered).
            let idx = keys.idx.flatten_all()?.to_vec1::<u32>()?;
            let m = mask.flatten_all()?.to_vec1::<f32>()?;
            let v = self.value(&keys.table)?;
            return crate::nn::gathered::gathered_attention(&q, &k, &v, idx, m, scale);
        }
        let all = (q.matmul(&k.t()?)? / (self.width as f64).sqrt())?; // (n, u)
        let (n, u) = all.dims2()?;
        let l = keys.idx.dim(1)?;
        // Row-major positions in (n, u): row · u + idx. Gathered and summed with
        // index_select / index_add on the flat tensor (candle 0.11's backward of
        // scatter_add fails on these shapes).
        let rows = Tensor::arange(0u32, n as u32, keys.idx.device())?
            .affine(u as f64, 0.0)?
            .unsqueeze(1)?;
        let flat = keys.idx.broadcast_add(&rows)?.flatten_all()?;
        let s = all.flatten_all()?.index_select(&flat, 0)?.reshape((n, l))?;
        let w = (softmax(&(&s + ((mask - 1.0)? * 1e9)?)?)? * mask)?;
        let per_key = Tensor::zeros(n * u, w.dtype(), w.device())?
            .index_add(&flat, &w.flatten_all()?, 0)?
            .reshape((n, u))?;
        per_key.matmul(&self.value(&keys.table)?)
    }
}

/// What the backbone computes for a batch.
pub struct Seq {
    /// [fields; item attention; category attention]: (n, width).
    pub fc: Tensor,
    /// The target item and its category (zeros without `cate_id`): (n, dim).
    pub item: Tensor,
    pub cate: Tensor,
    /// The two attention outputs: (n, dim).
    pub item_att: Tensor,
    pub cate_att: Tensor,
    /// The history's items and categories (n, L, dim), and its mask (n, L).
    pub history: Tensor,
    pub history_cats: Tensor,
    pub mask: Tensor,
}

/// Field embeddings and target attention over the history (items and categories).
pub struct Backbone {
    item: Attention,
    cate: Attention,
    dim: usize,
    slots: usize,
    /// The domain input's slot stays among the fields.
    keep_domain: bool,
}

impl Backbone {
    /// With `keep_domain` false the domain input (when the run gives one) is
    /// left out of `fc` (a model that reads it elsewhere).
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        spec: &InputSpec,
        width: usize,
        keep_domain: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let d = spec.dim;
        let slots = if spec.has_domain && !keep_domain {
            spec.slots - 1
        } else {
            spec.slots
        };
        Ok(Backbone {
            item: Attention::new(
                ps,
                &format!("{name}.item_attention"),
                d,
                d,
                d,
                d,
                width,
                rng,
            )?,
            cate: Attention::new(
                ps,
                &format!("{name}.cate_attention"),
                d,
                d,
                d,
                d,
                width,
                rng,
            )?,
            dim: d,
            slots,
            keep_domain,
        })
    }

    /// Width of `fc`.
    pub fn width(&self) -> usize {
        (self.slots + 2) * self.dim
    }

    /// The fields `fc` reads: (n, slots, dim).
    pub fn fields(&self, inp: &Inputs) -> Result<Tensor> {
        if self.keep_domain {
            Ok(inp.fields.clone())
        } else {
            inp.fields.narrow(1, 0, self.slots)
        }
    }

    pub fn forward(&self, inp: &Inputs) -> Result<Seq> {
        let missing = || {
            candle_core::Error::Msg(
                "this model reads the target item and the user's history (item_id among the \
                 features)"
                    .into(),
            )
        };
        let item = inp.item.as_ref().ok_or_else(missing)?;
        let (history, mask) = inp.history.as_ref().ok_or_else(missing)?;
        let zeros = || item.zeros_like();
        let cate = inp.item_cate.clone().map_or_else(zeros, Ok)?;
        let history_cats = inp
            .history_cats
            .clone()
            .map_or_else(|| history.zeros_like(), Ok)?;
        let item_att = match &inp.compact_items {
            Some(c) => self.item.target_compact(item, c, mask)?,
            None => self.item.target(item, history, mask)?,
        };
        let cate_att = match &inp.compact_cats {
            Some(c) => self.cate.target_compact(&cate, c, mask)?,
            None => self.cate.target(&cate, &history_cats, mask)?,
        };
        let n = item.dim(0)?;
        let f = self.fields(inp)?.reshape((n, self.slots * self.dim))?;
        Ok(Seq {
            fc: Tensor::cat(&[&f, &item_att, &cate_att], 1)?,
            item: item.clone(),
            cate,
            item_att,
            cate_att,
            history: history.clone(),
            history_cats,
            mask: mask.clone(),
        })
    }
}

/// E experts, each an MLP with ReLU after every layer (`hidden`), run as one
/// matrix product per layer: the first on a shared input is one (in, E·h)
/// product; the others are batched over the experts.
pub struct ExpertBank {
    first: Option<Linear>,
    /// (E, in, out) weights and (E, 1, out) biases.
    layers: Vec<(Tensor, Tensor)>,
    count: usize,
    dims: Vec<usize>,
    dropout: f64,
}

impl ExpertBank {
    /// Experts on one input `d_in` shared by all (`shared`), or on one input each.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        d_in: usize,
        count: usize,
        hidden: &[usize],
        dropout: f64,
        shared: bool,
        rng: &mut Rng,
    ) -> Result<Self> {
        let Some(&h0) = hidden.first() else {
            candle_core::bail!("{name}: experts need a hidden layer");
        };
        let mut first = None;
        let mut layers = Vec::new();
        let mut d = d_in;
        for (i, &h) in hidden.iter().enumerate() {
            if i == 0 && shared {
                first = Some(Linear::new(ps, &format!("{name}.0"), d, count * h0, rng)?);
            } else {
                // Initialised as `count` PyTorch Linear(d, h) layers.
                let bound = 1.0 / (d as f64).sqrt();
                let w = ps.uniform(format!("{name}.{i}.weight"), &[count, d, h], bound, rng)?;
                let b = ps.uniform(format!("{name}.{i}.bias"), &[count, 1, h], bound, rng)?;
                layers.push((w, b));
            }
            d = h;
        }
        Ok(ExpertBank {
            first,
            layers,
            count,
            dims: hidden.to_vec(),
            dropout,
        })
    }

    pub fn out_dim(&self) -> usize {
        *self.dims.last().unwrap_or(&0)
    }

    /// x: (n, in) when shared, (n, E, in) otherwise → (n, E, out).
    pub fn forward(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<Tensor> {
        let n = x.dim(0)?;
        let drop = |h: Tensor, rng: &mut Rng| {
            if train && self.dropout > 0.0 {
                dropout(&h, self.dropout, rng)
            } else {
                Ok(h)
            }
        };
        // (E, n, ·) between layers.
        let mut h = match &self.first {
            Some(f) => {
                let y = f.forward_relu(x)?.reshape((n, self.count, self.dims[0]))?;
                drop(y, rng)?.transpose(0, 1)?.contiguous()?
            }
            None => x.transpose(0, 1)?.contiguous()?,
        };
        for (w, b) in &self.layers {
            h = drop(crate::nn::fused::bias_relu(&h.matmul(w)?, b)?, rng)?;
        }
        h.transpose(0, 1)?.contiguous()
    }
}

/// Experts on `fc`, a gate over them, an MLP from the mixture to the logit.
pub struct MoeHead {
    experts: ExpertBank,
    gate_mlp: Option<Mlp>,
    gate: Gate,
    tower: Mlp,
}

impl MoeHead {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        d_in: usize,
        shape: &Shape,
        gate: &GateConfig,
        dropout: f64,
        rng: &mut Rng,
    ) -> Result<Self> {
        let experts = ExpertBank::new(
            ps,
            &format!("{name}.experts"),
            d_in,
            shape.experts,
            shape.expert_hidden,
            dropout,
            true,
            rng,
        )?;
        let (gate_mlp, gate_in) = match shape.gate_hidden {
            [] => (None, d_in),
            h => (
                Some(Mlp::new(
                    ps,
                    &format!("{name}.gate_mlp"),
                    d_in,
                    h,
                    None,
                    dropout,
                    rng,
                )?),
                h[h.len() - 1],
            ),
        };
        let gate = Gate::new(
            ps,
            &format!("{name}.gate"),
            gate_in,
            shape.experts,
            gate,
            rng,
        )?;
        let tower = Mlp::new(
            ps,
            &format!("{name}.tower"),
            experts.out_dim(),
            shape.hidden,
            Some(1),
            dropout,
            rng,
        )?;
        Ok(MoeHead {
            experts,
            gate_mlp,
            gate,
            tower,
        })
    }

    /// Logits (n) and the gate's auxiliary loss.
    pub fn forward(
        &self,
        x: &Tensor,
        train: bool,
        rng: &mut Rng,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let e = self.experts.forward(x, train, rng)?;
        let g = match &self.gate_mlp {
            Some(m) => m.forward(x, train, rng)?,
            None => x.clone(),
        };
        let (mix, aux) = self.gate.mix(&g, &e, train, rng)?;
        Ok((self.tower.forward(&mix, train, rng)?.squeeze(1)?, aux))
    }
}

/// The sizes shared by the family's settings.
pub struct Shape<'a> {
    pub attention: usize,
    pub experts: usize,
    pub expert_hidden: &'a [usize],
    pub gate_hidden: &'a [usize],
    pub hidden: &'a [usize],
    pub bias_tower: &'a [usize],
}

/// A model's `[model.<name>]` settings: the family's shared keys, with this
/// model's defaults, then its own keys.
macro_rules! user_moe_settings {
    (
        $(#[$doc:meta])*
        $name:ident {
            experts: $experts:expr,
            gate_hidden: $gate_hidden:expr,
            bias_tower: $bias:expr
            $(, $(#[$fdoc:meta])* $field:ident: $ty:ty = $value:expr)* $(,)?
        }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            /// Most recent history items attended over. Default 50.
            pub history: usize,
            /// Width of the attentions' query and key projections. Default 80.
            pub attention: usize,
            /// Number of experts.
            pub experts: usize,
            /// Each expert's layers. Default [80, 40].
            pub expert_hidden: Vec<usize>,
            /// The gate's MLP before its logits (empty: the gate reads fc).
            pub gate_hidden: Vec<usize>,
            /// MLP from the mixture to the logit. Default [80, 40].
            pub hidden: Vec<usize>,
            /// The bias tower: an MLP on fc whose logit is added (empty: none).
            pub bias_tower: Vec<usize>,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    history: 50,
                    attention: 80,
                    experts: $experts,
                    expert_hidden: vec![80, 40],
                    gate_hidden: $gate_hidden,
                    hidden: vec![80, 40],
                    bias_tower: $bias,
                    $($field: $value,)*
                }
            }
        }

        impl $name {
            pub fn shape(&self) -> $crate::models::sequence::Shape<'_> {
                $crate::models::sequence::Shape {
                    attention: self.attention,
                    experts: self.experts,
                    expert_hidden: &self.expert_hidden,
                    gate_hidden: &self.gate_hidden,
                    hidden: &self.hidden,
                    bias_tower: &self.bias_tower,
                }
            }

            /// The shared keys' ranges.
            pub fn check_shared(&self, key: &str, c: &mut $crate::checks::Checks) {
                $crate::models::sequence::check_shape(&self.shape(), self.history, key, c);
            }

            /// Sizes small enough for a gradient check.
            #[cfg(test)]
            pub fn shrink_shared(&mut self) {
                self.attention = 8;
                self.experts = 3;
                self.expert_hidden = vec![6, 5];
                self.gate_hidden = if self.gate_hidden.is_empty() { vec![] } else { vec![3] };
                self.hidden = vec![5];
                self.bias_tower = if self.bias_tower.is_empty() { vec![] } else { vec![5] };
            }
        }
    };
}
pub(crate) use user_moe_settings;

pub fn check_shape(s: &Shape, history: usize, key: &str, c: &mut Checks) {
    c.at_least_one(&format!("{key}.history"), history);
    c.at_least_one(&format!("{key}.attention"), s.attention);
    c.at_least_one(&format!("{key}.experts"), s.experts);
    c.widths(&format!("{key}.expert_hidden"), s.expert_hidden, true);
    c.widths(&format!("{key}.gate_hidden"), s.gate_hidden, false);
    c.widths(&format!("{key}.hidden"), s.hidden, false);
    c.widths(&format!("{key}.bias_tower"), s.bias_tower, false);
}

/// A member of the family built on [`UserMoe`]: the type (a `UserMoe`), its
/// `new(cfg, spec, ps, rng)` from its settings `cfg.<field>` and the
/// [`Extras`] that `extras(cfg, settings)` gives, and its `CtrModel`.
macro_rules! user_moe_model {
    ($(#[$doc:meta])* $ty:ident, $field:ident, $extras:expr) => {
        $(#[$doc])*
        pub struct $ty($crate::models::sequence::UserMoe);

        impl $ty {
            pub fn new(
                cfg: &$crate::models::config::ModelConfig,
                spec: &$crate::models::InputSpec,
                ps: &mut $crate::nn::params::ParamStore,
                rng: &mut $crate::nn::rng::Rng,
            ) -> candle_core::Result<Self> {
                let s = &cfg.$field;
                let extras: $crate::models::sequence::Extras = $extras(cfg, s);
                Ok($ty($crate::models::sequence::UserMoe::new(
                    stringify!($field),
                    &s.shape(),
                    extras,
                    cfg,
                    spec,
                    ps,
                    rng,
                )?))
            }
        }

        impl $crate::models::CtrModel for $ty {
            fn forward(
                &self,
                inp: &$crate::models::Inputs,
                train: bool,
                rng: &mut $crate::nn::rng::Rng,
            ) -> candle_core::Result<$crate::models::Output> {
                self.0.forward(inp, train, rng)
            }

            /// One network for every domain (the domain input is one of its inputs).
            fn per_domain(&self) -> bool {
                false
            }

            fn loss_weights(&self) -> Option<&[f32]> {
                self.0.loss_weights()
            }
        }
    };
}
pub(crate) use user_moe_model;

/// `impl Model` of a model whose settings come from [`user_moe_settings`]: it
/// reads `history` items and the history tables; `validate` runs the family's
/// shared checks, then `$vbody`; `shrink` the shared shrink, then `$sbody`.
macro_rules! user_moe_impl {
    (
        $ty:ident: $settings:ty,
        about: $about:expr,
        gated: $gated:expr,
        validate($s:ident, $key:ident, $c:ident) $vbody:block
        shrink($t:ident) $sbody:block
    ) => {
        impl $crate::models::Model for $ty {
            type Settings = $settings;
            const ABOUT: &'static str = $about;
            const HISTORY: bool = true;
            const HISTORY_TABLES: bool = true;
            const GATED: bool = $gated;
            fn history(s: &Self::Settings) -> usize {
                s.history
            }
            fn validate($s: &Self::Settings, $key: &str, $c: &mut $crate::checks::Checks) {
                $s.check_shared($key, $c);
                $vbody
            }
            #[cfg(test)]
            fn shrink($t: &mut Self::Settings) {
                $t.shrink_shared();
                $sbody
            }
        }
    };
}
pub(crate) use user_moe_impl;

/// Backbone and head, with the optional bias tower, group tower and
/// per-domain loss weights.
pub struct UserMoe {
    backbone: Backbone,
    head: MoeHead,
    bias: Option<Mlp>,
    /// On [domain input; fc]: UserInput.
    group: Option<Mlp>,
    weights: Option<Vec<f32>>,
}

/// What distinguishes the members of the family built on [`UserMoe`].
pub struct Extras {
    /// A group tower of these layers on [domain input; fc] (UserInput); the
    /// domain input then leaves fc.
    pub group_tower: Option<Vec<usize>>,
    /// The gate (`[model.gate]`, or the model's own).
    pub gate: GateConfig,
    /// A loss weight per domain (UserLoss).
    pub loss_weights: Option<Vec<f32>>,
}

impl UserMoe {
    pub fn new(
        name: &str,
        shape: &Shape,
        extras: Extras,
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let keep_domain = extras.group_tower.is_none();
        let group_tower = extras.group_tower.as_deref();
        let backbone = Backbone::new(ps, name, spec, shape.attention, keep_domain, rng)?;
        let w = backbone.width();
        let head = MoeHead::new(ps, name, w, shape, &extras.gate, cfg.dropout, rng)?;
        let tower = |ps: &mut ParamStore, rng: &mut Rng, part: &str, d_in: usize, h: &[usize]| {
            Mlp::new(
                ps,
                &format!("{name}.{part}"),
                d_in,
                h,
                Some(1),
                cfg.dropout,
                rng,
            )
        };
        let bias = match shape.bias_tower {
            [] => None,
            h => Some(tower(ps, rng, "bias_tower", w, h)?),
        };
        let group_in = w + if spec.has_domain { spec.dim } else { 0 };
        let group = match group_tower {
            Some(h) => Some(tower(ps, rng, "group_tower", group_in, h)?),
            None => None,
        };
        if let Some(lw) = &extras.loss_weights
            && lw.len() != spec.domains
        {
            candle_core::bail!(
                "model.{name}.group_weights has {} weights for {} domains: give one per domain, \
                 in the dataset's domain order",
                lw.len(),
                spec.domains
            );
        }
        Ok(UserMoe {
            backbone,
            head,
            bias,
            group,
            weights: extras.loss_weights,
        })
    }

    pub fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let seq = self.backbone.forward(inp)?;
        let (mut logits, aux) = self.head.forward(&seq.fc, train, rng)?;
        if let Some(b) = &self.bias {
            logits = (logits + b.forward(&seq.fc, train, rng)?.squeeze(1)?)?;
        }
        if let Some(g) = &self.group {
            let x = match &inp.domain {
                Some(d) => Tensor::cat(&[d, &seq.fc], 1)?,
                None => seq.fc.clone(),
            };
            logits = (logits + g.forward(&x, train, rng)?.squeeze(1)?)?;
        }
        Ok(Output {
            logits,
            aux: add_aux(aux, None)?,
        })
    }

    pub fn loss_weights(&self) -> Option<&[f32]> {
        self.weights.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use crate::models::config::{ModelConfig, ModelName};
    use crate::models::{InputSpec, build, testutil};
    use crate::nn::params::ParamStore;
    use crate::nn::rng::Rng;
    use candle_core::{DType, Device};

    /// The compact attention (distinct keys projected once) computes what the
    /// dense one does, for every model of the family.
    #[test]
    fn compact_histories_give_the_dense_result() {
        let spec = InputSpec {
            slots: 4,
            dim: 3,
            domains: 4,
            has_domain: true,
            held_out: Vec::new(),
        };
        for name in [
            ModelName::Moe,
            ModelName::UserInput,
            ModelName::UserCluster,
            ModelName::UserPerExpert,
        ] {
            let mut cfg = ModelConfig {
                name,
                ..ModelConfig::default()
            };
            cfg.shrink();
            let mut ps = ParamStore::new(DType::F64, &Device::Cpu);
            let model = build(&cfg, &spec, &mut ps, &mut Rng::new(1)).unwrap();
            let mut inp = testutil::batch(&spec, 10, 5);
            let run = |inp: &crate::models::Inputs| {
                let out = model.forward(inp, false, &mut Rng::new(0)).unwrap();
                out.logits.to_vec1::<f64>().unwrap()
            };
            let compact = run(&inp);
            inp.compact_items = None;
            inp.compact_cats = None;
            let dense = run(&inp);
            for (a, b) in compact.iter().zip(&dense) {
                assert!((a - b).abs() < 1e-10, "{name:?}: {a} vs {b}");
            }
        }
    }
}
