//! CTR models, built from a few shared layers. A batch arrives with its rows
//! grouped by domain ([`Segment`]s), so a domain-aware model runs each domain's own
//! experts, gate and tower on that domain's rows only — never every domain's
//! experts on every sample.

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
pub mod pepnet;
pub mod ple;
pub mod probe;
pub mod shared_bottom;
pub mod star;

use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};
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
    pub segments: Vec<Segment>,
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
}

impl ModelName {
    /// DeepFM needs a first-order weight per id; DIN a history.
    pub fn needs_first_order(self) -> bool {
        self == ModelName::Deepfm
    }
    pub fn needs_history(self) -> bool {
        self == ModelName::Din
    }
}

pub fn build(
    cfg: &ModelConfig,
    spec: &InputSpec,
    ps: &mut ParamStore,
    rng: &mut Rng,
) -> Result<Box<dyn CtrModel>> {
    Ok(match cfg.name {
        ModelName::Dnn => Box::new(dnn::Dnn::new(cfg, spec, ps, rng)?),
        ModelName::Deepfm => Box::new(deepfm::DeepFm::new(cfg, spec, ps, rng)?),
        ModelName::SharedBottom => Box::new(shared_bottom::SharedBottom::new(cfg, spec, ps, rng)?),
        ModelName::Mmoe => Box::new(mmoe::Mmoe::new(cfg, spec, ps, rng)?),
        ModelName::Cgc => Box::new(ple::Ple::new("cgc", &cfg.cgc, cfg, spec, ps, rng)?),
        ModelName::Ple => Box::new(ple::Ple::new("ple", &cfg.ple, cfg, spec, ps, rng)?),
        ModelName::Star => Box::new(star::Star::new(cfg, spec, ps, rng)?),
        ModelName::Din => Box::new(din::Din::new(cfg, spec, ps, rng)?),
        ModelName::Pepnet => Box::new(pepnet::Pepnet::new(cfg, spec, ps, rng)?),
        ModelName::M2m => Box::new(m2m::M2m::new(cfg, spec, ps, rng)?),
    })
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
        let hist = t(&[n, 4, spec.dim]);
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
            segments,
        }
    }

    /// Every parameter gets a finite non-zero gradient and matches finite differences.
    pub fn gradcheck(name: ModelName) {
        gradcheck_with(name, false)
    }

    /// With `conditioned`, CGC and PLE in their domain-conditioned form.
    pub fn gradcheck_with(name: ModelName, conditioned: bool) {
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
        cfg.dnn.hidden = vec![5];
        cfg.deepfm.hidden = vec![5];
        cfg.star.hidden = vec![6, 4];
        cfg.star.aux_hidden = vec![3];
        cfg.din.attention = vec![4];
        cfg.din.hidden = vec![5];
        cfg.ple.levels = 2;
        cfg.pepnet.hidden = vec![5, 4];
        cfg.pepnet.gate_hidden = 3;
        cfg.m2m.experts = 2;
        cfg.m2m.expert_hidden = vec![4];
        cfg.m2m.tower = vec![3];
        cfg.m2m.rank = 2;
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
