//! CTR models, built from a few shared layers. A batch arrives with its rows
//! grouped by domain ([`Segment`]s), so a domain-aware model runs each domain's own
//! experts, gate and tower on that domain's rows only — never every domain's
//! experts on every sample.

/// The registry of CTR models: one line each — its `ModelName` variant, its name
/// in configs (and its `[model.<name>]` table), the type implementing [`Model`].
/// A new model is its file plus its line here (and its `pub mod`).
macro_rules! for_each_model {
    ($then:ident) => {
        $then! {
            Dnn dnn crate::models::dnn::Dnn;
            Deepfm deepfm crate::models::deepfm::DeepFm;
            SharedBottom shared_bottom crate::models::shared_bottom::SharedBottom;
            Mmoe mmoe crate::models::mmoe::Mmoe;
            Cgc cgc crate::models::ple::Cgc;
            Ple ple crate::models::ple::Ple;
            Star star crate::models::star::Star;
            Din din crate::models::din::Din;
            Pepnet pepnet crate::models::pepnet::Pepnet;
            M2m m2m crate::models::m2m::M2m;
            Moe moe crate::models::moe::Moe;
            Bias bias crate::models::bias::Bias;
            UserInput user_input crate::models::user_input::UserInput;
            UserLoss user_loss crate::models::user_loss::UserLoss;
            UserCluster user_cluster crate::models::user_cluster::UserCluster;
            UserSparseExpert user_sparse_expert crate::models::user_sparse_expert::UserSparseExpert;
            UserPerExpert user_per_expert crate::models::user_per_expert::UserPerExpert;
        }
    };
}
pub(crate) use for_each_model;

pub mod bias;
pub mod conditioning;
pub mod config;
pub mod deepfm;
pub mod din;
pub mod dnn;
pub mod embedding;
pub mod experts;
pub mod gates;
pub mod m2m;
pub mod mmoe;
pub mod moe;
pub mod pepnet;
pub mod ple;
pub mod probe;
pub mod sequence;
pub mod shared_bottom;
pub mod star;
pub mod user_cluster;
pub mod user_input;
pub mod user_loss;
pub mod user_per_expert;
pub mod user_sparse_expert;

use crate::checks::Checks;
#[cfg(test)]
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};
pub use config::build;
#[cfg(test)]
use config::{ModelConfig, ModelName};

/// Rows `start..start + len` of a batch belong to `domain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub domain: usize,
    pub start: usize,
    pub len: usize,
}

/// What a model sees of a batch.
pub struct Inputs {
    /// Every slot's embedding, concatenated: (n, slots · dim).
    pub x: Tensor,
    /// The same, per slot: (n, slots, dim).
    pub fields: Tensor,
    /// First-order weights per slot (n, slots), for models that ask for them.
    pub first_order: Option<Tensor>,
    /// The domain's embedding (n, dim), when the config gives the model one.
    pub domain: Option<Tensor>,
    /// DIN: the target item (n, dim), the history (n, L, dim) and its mask (n, L).
    pub item: Option<Tensor>,
    pub history: Option<(Tensor, Tensor)>,
    /// The target item's category (n, dim) and the history's categories
    /// (n, L, dim, same mask), where the features hold `cate_id`.
    pub item_cate: Option<Tensor>,
    pub history_cats: Option<Tensor>,
    /// The same histories as ids into small tables of their distinct
    /// embeddings ([`Compact`]), where the batch gives them: attention then
    /// projects each distinct item once.
    pub compact_items: Option<Compact>,
    pub compact_cats: Option<Compact>,
    pub segments: Vec<Segment>,
}

/// A history as `table` (u, dim), its distinct embeddings, and `idx` (n, L, u32):
/// position l of row i is `table[idx[i, l]]` (padding points at the padding id's row).
pub struct Compact {
    pub table: Tensor,
    pub idx: Tensor,
}

/// Logits (n) and an auxiliary loss (gate balancing) to add to the objective.
pub struct Output {
    pub logits: Tensor,
    pub aux: Option<Tensor>,
}

/// Sizes a model is built for.
#[derive(Clone, Debug)]
pub struct InputSpec {
    pub slots: usize,
    pub dim: usize,
    pub domains: usize,
    pub has_domain: bool,
    /// Domains held out of training (no rows in the train split): a model with
    /// networks of each domain's own must not use theirs, which never trained.
    pub held_out: Vec<usize>,
}

impl InputSpec {
    pub fn width(&self) -> usize {
        self.slots * self.dim
    }
}

pub trait CtrModel {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output>;
    /// Non-trainable state saved in checkpoints (running statistics).
    fn state(&self) -> Vec<(String, Vec<f32>)> {
        Vec::new()
    }
    fn load_state(&self, _state: &[(String, Vec<f32>)]) -> Result<()> {
        Ok(())
    }
    /// Whether the model has networks of each domain's own (experts, gates,
    /// towers, normalisation): a domain absent from training then has none, and
    /// is scored by a mixture of the seen domains' networks. A model whose
    /// networks are shared by all domains scores it directly, from its own
    /// domain input.
    fn per_domain(&self) -> bool {
        true
    }
    /// A weight per domain on each training row's loss (UserLoss); None: 1.
    fn loss_weights(&self) -> Option<&[f32]> {
        None
    }
}

/// A CTR model as the registry sees it: its settings table and what it reads.
/// Implemented in the model's own file, next to its layers; the registry
/// builds it with its `new(cfg, spec, ps, rng)`.
pub trait Model {
    /// The `[model.<name>]` table: defaults from `Default`, unknown keys refused.
    type Settings: Clone
        + std::fmt::Debug
        + PartialEq
        + Default
        + serde::Serialize
        + serde::de::DeserializeOwned;
    /// What it is, with its reference: the comment heading its recipe file
    /// (`configs/models/<name>.toml`), one line per line.
    const ABOUT: &'static str;
    /// Reads the first-order weights of the fields.
    const FIRST_ORDER: bool = false;
    /// Reads the user's history of items.
    const HISTORY: bool = false;
    /// Also reads the history's categories and the compact history tables
    /// (`Inputs::history_cats`, `compact_items`, `compact_cats`; the user-level
    /// family's attention); without it the batch skips gathering them.
    const HISTORY_TABLES: bool = false;
    /// How many of the most recent history items it reads (with `HISTORY`).
    fn history(_s: &Self::Settings) -> usize {
        0
    }
    /// Mixes experts through `[model.gate]`.
    const GATED: bool = false;
    /// The ranges of its settings; `key` is `model.<name>`.
    fn validate(s: &Self::Settings, key: &str, c: &mut Checks);
    /// Settings small enough for a gradient check (finite differences on every
    /// parameter); the defaults when they already are.
    #[cfg(test)]
    fn shrink(_s: &mut Self::Settings) {}
}

/// Run `f` on each domain's rows of `x` and put the results back in row order.
pub fn per_domain(
    segments: &[Segment],
    x: &Tensor,
    mut f: impl FnMut(&Segment, &Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(segments.len());
    for s in segments {
        parts.push(f(s, &x.narrow(0, s.start, s.len)?)?);
    }
    Tensor::cat(&parts, 0)
}

/// Sum of optional auxiliary losses.
pub fn add_aux(a: Option<Tensor>, b: Option<Tensor>) -> Result<Option<Tensor>> {
    Ok(match (a, b) {
        (Some(a), Some(b)) => Some((a + b)?),
        (a, None) => a,
        (None, b) => b,
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A small random batch for model tests, in f64.
    use super::*;
    use candle_core::{DType, Device};

    pub fn batch(spec: &InputSpec, n: usize, seed: u64) -> Inputs {
        let dev = Device::Cpu;
        let mut rng = Rng::new(seed);
        let mut t = |shape: &[usize]| {
            let k: usize = shape.iter().product();
            let v: Vec<f64> = (0..k).map(|_| rng.normal() * 0.5).collect();
            Tensor::from_vec(v, shape, &dev).unwrap()
        };
        let fields = t(&[n, spec.slots, spec.dim]);
        let x = fields.reshape((n, spec.slots * spec.dim)).unwrap();
        let first_order = Some(t(&[n, spec.slots]));
        let domain = Some(
            fields
                .narrow(1, spec.slots - 1, 1)
                .unwrap()
                .squeeze(1)
                .unwrap(),
        );
        let item = Some(fields.narrow(1, 1, 1).unwrap().squeeze(1).unwrap());
        // Histories drawn from small tables, given both densely and compactly.
        let mut pick = Rng::new(seed + 100);
        let mut draw = |u: usize| {
            let table = t(&[u, spec.dim]);
            let idx: Vec<u32> = (0..n * 4).map(|_| pick.below(u) as u32).collect();
            let idx = Tensor::from_vec(idx, (n, 4), &dev).unwrap();
            let dense = table
                .index_select(&idx.flatten_all().unwrap(), 0)
                .unwrap()
                .reshape((n, 4, spec.dim))
                .unwrap();
            (dense, Compact { table, idx })
        };
        let (hist, compact_items) = draw(7);
        let (hist_cats, compact_cats) = draw(3);
        let item_cate = Some(fields.narrow(1, 2, 1).unwrap().squeeze(1).unwrap());
        let mask: Vec<f64> = (0..n * 4)
            .map(|i| if i % 4 < 1 + (i / 4) % 4 { 1.0 } else { 0.0 })
            .collect();
        let mask = Tensor::from_vec(mask, (n, 4), &dev).unwrap();
        // Rows grouped by domain: sizes 2, 3, 0 (absent), rest.
        let mut segments = Vec::new();
        let mut start = 0;
        for (d, len) in [(0usize, 2usize), (1, 3), (3, n - 5)] {
            segments.push(Segment {
                domain: d,
                start,
                len,
            });
            start += len;
        }
        let _ = DType::F64;
        Inputs {
            x,
            fields,
            first_order,
            domain,
            item,
            history: Some((hist, mask)),
            item_cate,
            history_cats: Some(hist_cats),
            compact_items: Some(compact_items),
            compact_cats: Some(compact_cats),
            segments,
        }
    }

    /// Every parameter gets a finite non-zero gradient and matches finite differences.
    pub fn gradcheck(name: ModelName) {
        gradcheck_with(name, false)
    }

    /// With `conditioned`, CGC and PLE in their domain-conditioned form.
    pub fn gradcheck_with(name: ModelName, conditioned: bool) {
        gradcheck_full(name, conditioned, |_| {})
    }

    /// With settings changed by `edit` after the shrink.
    pub fn gradcheck_edit(name: ModelName, edit: impl FnOnce(&mut ModelConfig)) {
        gradcheck_full(name, false, edit)
    }

    fn gradcheck_full(name: ModelName, conditioned: bool, edit: impl FnOnce(&mut ModelConfig)) {
        let spec = InputSpec {
            slots: 4,
            dim: 3,
            domains: 4,
            has_domain: true,
            held_out: if conditioned { vec![1] } else { Vec::new() },
        };
        let mut ps = ParamStore::new(DType::F64, &Device::Cpu);
        let mut cfg = ModelConfig {
            name,
            ..ModelConfig::default()
        };
        cfg.shrink();
        if conditioned {
            cfg.cgc.conditioning = config::Conditioning::Domain;
            cfg.cgc.tower = vec![3];
            cfg.cgc.rank = 2;
            cfg.ple.conditioning = config::Conditioning::Domain;
            // Checked on a fixed path: domain 1 is held out (the shared experts
            // alone), the others use their own specific experts.
            cfg.cgc.shared_only = 0.0;
            cfg.ple.shared_only = 0.0;
        }
        edit(&mut cfg);
        let model = build(&cfg, &spec, &mut ps, &mut Rng::new(9)).unwrap();
        // Checked away from the initial point, where some layers start at zero
        // (gate units' output layers) and leave what feeds them without gradient.
        let mut noise = Rng::new(11);
        for p in ps.params() {
            let v: Vec<f64> = p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let v: Vec<f64> = v.into_iter().map(|x| x + 0.1 * noise.normal()).collect();
            let t = Tensor::from_vec(v, p.var.shape(), &Device::Cpu).unwrap();
            p.var.set(&t).unwrap();
        }
        let inp = batch(&spec, 10, 4);
        let w: Vec<f64> = (0..10).map(|i| (i as f64 * 0.37 + 0.5).sin()).collect();
        let w = Tensor::from_vec(w, 10, &candle_core::Device::Cpu).unwrap();
        let f = || {
            let out = model.forward(&inp, true, &mut Rng::new(2))?;
            let l = (out.logits * &w)?.sum_all()?;
            match out.aux {
                Some(a) => l + a,
                None => Ok(l),
            }
        };
        // Step 1e-5: at 1e-6 the differences' rounding error reached 3e-5 of
        // PEPNet's smaller gradients; at 1e-4 a ReLU kink falls inside a step of PLE.
        let (err, dead) = crate::nn::gradcheck::check(&ps, 6, 1e-5, &f).unwrap();
        // Parameters of domain 2 (absent from the batch) get no gradient, by design.
        // So do a held-out domain's (1, when conditioned) specific experts.
        let dead: Vec<String> = dead
            .into_iter()
            .filter(|n| !(n.contains(".d2.") || conditioned && n.contains(".d1.")))
            .collect();
        assert!(dead.is_empty(), "{name:?}: no gradient for {dead:?}");
        assert!(err < 1e-4, "{name:?}: relative error {err}");
    }
}
