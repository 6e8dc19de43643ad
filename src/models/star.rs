//! STAR (Sheng et al., "One Model to Serve All: Star Topology Adaptive Recommender
//! for Multi-Domain CTR Prediction", CIKM 2021):
//! - partitioned normalisation: each domain normalised with its own batch
//!   statistics in training and its own running statistics at test, scaled by
//!   (γ ⊙ γ_d) and shifted by (β + β_d). The domain's own input slot (id or
//!   fixed embedding), a constant within a domain, is left out: its batch
//!   variance is zero, so normalising would erase it in training and blow up a
//!   domain scored with another domain's statistics (an unseen domain);
//! - star-topology FCN: layer weights W ⊙ W_d and biases b + b_d, shared ⊙ domain;
//! - an auxiliary network on the domain embedding whose logit is added.

use super::config::ModelConfig;
use super::{CtrModel, InputSpec, Inputs, Model, Output};
use crate::checks::Checks;
use crate::nn::linear::{Linear, Mlp};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;

struct StarLayer {
    shared: Linear,
    /// Per domain: multiplicative weights (init 1) and additive biases (init 0).
    w: Vec<Tensor>,
    b: Vec<Tensor>,
}

pub struct Star {
    gamma: Tensor,
    beta: Tensor,
    gamma_d: Vec<Tensor>,
    beta_d: Vec<Tensor>,
    /// Running mean and variance per domain (not trained; saved in checkpoints).
    running: RefCell<Vec<(Vec<f32>, Vec<f32>)>>,
    momentum: f64,
    /// Width of the normalised part of the input (every slot but the domain's).
    normed: usize,
    layers: Vec<StarLayer>,
    aux: Option<Mlp>,
}

const PN_EPS: f64 = 1e-5;

impl Star {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let c = &cfg.star;
        let w = spec.width();
        let normed = w - if spec.has_domain { spec.dim } else { 0 };
        let gamma = ps.fill("star.pn.gamma", &[normed], 1.0)?;
        let beta = ps.fill("star.pn.beta", &[normed], 0.0)?;
        let mut gamma_d = Vec::new();
        let mut beta_d = Vec::new();
        for d in 0..spec.domains {
            gamma_d.push(ps.fill(format!("star.d{d}.pn.gamma"), &[normed], 1.0)?);
            beta_d.push(ps.fill(format!("star.d{d}.pn.beta"), &[normed], 0.0)?);
        }
        let mut layers = Vec::new();
        let mut d_in = w;
        let sizes: Vec<usize> = c.hidden.iter().copied().chain(std::iter::once(1)).collect();
        for (i, &h) in sizes.iter().enumerate() {
            let shared = Linear::new(ps, &format!("star.fcn.{i}"), d_in, h, rng)?;
            let mut wd = Vec::new();
            let mut bd = Vec::new();
            for d in 0..spec.domains {
                wd.push(ps.fill(format!("star.d{d}.fcn.{i}.weight"), &[d_in, h], 1.0)?);
                bd.push(ps.fill(format!("star.d{d}.fcn.{i}.bias"), &[h], 0.0)?);
            }
            layers.push(StarLayer {
                shared,
                w: wd,
                b: bd,
            });
            d_in = h;
        }
        let aux = if spec.has_domain {
            Some(Mlp::new(
                ps,
                "star.aux",
                spec.dim,
                &c.aux_hidden,
                Some(1),
                cfg.dropout,
                rng,
            )?)
        } else {
            None
        };
        Ok(Star {
            gamma,
            beta,
            gamma_d,
            beta_d,
            running: RefCell::new(vec![(vec![0.0; normed], vec![1.0; normed]); spec.domains]),
            momentum: c.pn_momentum,
            normed,
            layers,
            aux,
        })
    }

    fn partitioned_norm(&self, x: &Tensor, d: usize, train: bool) -> Result<Tensor> {
        let (mean, var) = if train {
            let mean = x.mean_keepdim(0)?;
            let var = x.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
            let mut run = self.running.borrow_mut();
            let (rm, rv) = &mut run[d];
            let m = self.momentum as f32;
            let bm = mean
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            let bv = var
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?;
            for i in 0..rm.len() {
                rm[i] = (1.0 - m) * rm[i] + m * bm[i];
                rv[i] = (1.0 - m) * rv[i] + m * bv[i];
            }
            (mean, var)
        } else {
            let run = self.running.borrow();
            let w = run[d].0.len();
            let mean = Tensor::from_slice(&run[d].0, (1, w), x.device())?.to_dtype(x.dtype())?;
            let var = Tensor::from_slice(&run[d].1, (1, w), x.device())?.to_dtype(x.dtype())?;
            (mean, var)
        };
        let xn = x
            .broadcast_sub(&mean)?
            .broadcast_div(&(var + PN_EPS)?.sqrt()?)?;
        let scale = (&self.gamma * &self.gamma_d[d])?;
        let shift = (&self.beta + &self.beta_d[d])?;
        xn.broadcast_mul(&scale)?.broadcast_add(&shift)
    }
}

impl CtrModel for Star {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let mut parts = Vec::with_capacity(inp.segments.len());
        let width = inp.x.dim(1)?;
        for s in &inp.segments {
            let x = inp.x.narrow(0, s.start, s.len)?;
            // The domain slot is the last one (see [`Inputs`]); it skips the norm.
            let normed = self.partitioned_norm(&x.narrow(1, 0, self.normed)?, s.domain, train)?;
            let mut h = if self.normed < width {
                let dom = x.narrow(1, self.normed, width - self.normed)?;
                Tensor::cat(&[&normed, &dom], 1)?
            } else {
                normed
            };
            let last = self.layers.len() - 1;
            for (i, l) in self.layers.iter().enumerate() {
                let w = (&l.shared.w * &l.w[s.domain])?;
                let b = (&l.shared.b + &l.b[s.domain])?;
                h = h.matmul(&w)?.broadcast_add(&b)?;
                if i < last {
                    h = h.relu()?;
                }
            }
            parts.push(h);
        }
        let mut logits = Tensor::cat(&parts, 0)?.squeeze(1)?;
        if let (Some(aux), Some(dom)) = (&self.aux, &inp.domain) {
            logits = (logits + aux.forward(dom, train, rng)?.squeeze(1)?)?;
        }
        Ok(Output { logits, aux: None })
    }

    fn state(&self) -> Vec<(String, Vec<f32>)> {
        let run = self.running.borrow();
        let mut out = Vec::new();
        for (d, (m, v)) in run.iter().enumerate() {
            out.push((format!("star.d{d}.pn.running_mean"), m.clone()));
            out.push((format!("star.d{d}.pn.running_var"), v.clone()));
        }
        out
    }

    fn load_state(&self, state: &[(String, Vec<f32>)]) -> Result<()> {
        let mut run = self.running.borrow_mut();
        for (d, (m, v)) in run.iter_mut().enumerate() {
            for (name, target) in [("running_mean", &mut *m), ("running_var", &mut *v)] {
                let key = format!("star.d{d}.pn.{name}");
                match state.iter().find(|(n, _)| *n == key) {
                    Some((_, vals)) if vals.len() == target.len() => target.copy_from_slice(vals),
                    _ => candle_core::bail!("checkpoint lacks {key}"),
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StarConfig {
    /// Star-topology layers. Default [128, 64, 32].
    pub hidden: Vec<usize>,
    /// Auxiliary network on the domain embedding. Default [32].
    pub aux_hidden: Vec<usize>,
    /// Momentum of the per-domain running statistics of partitioned normalisation. Default 0.1.
    pub pn_momentum: f64,
}

impl Default for StarConfig {
    fn default() -> Self {
        StarConfig {
            hidden: vec![128, 64, 32],
            aux_hidden: vec![32],
            pn_momentum: 0.1,
        }
    }
}

impl Model for Star {
    type Settings = StarConfig;
    const ABOUT: &'static str = "STAR (Sheng et al., CIKM 2021): partitioned normalisation, star-topology FCN,\nauxiliary network on the domain embedding.";

    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        c.widths(&format!("{key}.hidden"), &s.hidden, false);
        c.widths(&format!("{key}.aux_hidden"), &s.aux_hidden, false);
        if !(s.pn_momentum > 0.0 && s.pn_momentum <= 1.0) {
            c.bad(
                &format!("{key}.pn_momentum"),
                s.pn_momentum,
                "must be in (0, 1]",
            );
        }
    }

    #[cfg(test)]
    fn shrink(s: &mut Self::Settings) {
        s.hidden = vec![6, 4];
        s.aux_hidden = vec![3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::Segment;
    use candle_core::{DType, Device};

    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Star);
    }

    /// The domain slot reaches the network as it is: after training-mode steps
    /// have shrunk domain 0's running variance of that slot to ~0, scoring rows
    /// with another domain vector under domain 0's statistics (an unseen domain)
    /// moves the logits by a bounded amount, not by one divided by √ε.
    #[test]
    fn the_domain_slot_is_not_normalised() {
        let dev = Device::Cpu;
        let mut cfg = ModelConfig::default();
        cfg.star.pn_momentum = 0.9;
        let spec = InputSpec {
            slots: 2,
            dim: 3,
            domains: 2,
            has_domain: true,
            held_out: Vec::new(),
        };
        let mut ps = ParamStore::new(DType::F32, &dev);
        let mut rng = Rng::new(1);
        let star = Star::new(&cfg, &spec, &mut ps, &mut rng).unwrap();
        let inputs = |feat: &Tensor, dom: &[f32]| {
            let n = feat.dim(0).unwrap();
            let d = Tensor::from_slice(dom, (1, 3), &dev)
                .unwrap()
                .broadcast_as((n, 3))
                .unwrap()
                .contiguous()
                .unwrap();
            let x = Tensor::cat(&[feat, &d], 1).unwrap();
            Inputs {
                fields: x.reshape((n, 2, 3)).unwrap(),
                x,
                first_order: None,
                domain: Some(d),
                item: None,
                history: None,
                item_cate: None,
                history_cats: None,
                compact_items: None,
                compact_cats: None,
                segments: vec![Segment {
                    domain: 0,
                    start: 0,
                    len: n,
                }],
            }
        };
        let feat = rng.normal_tensor((64, 3), 1.0, DType::F32, &dev).unwrap();
        for _ in 0..20 {
            star.forward(&inputs(&feat, &[0.5, -0.5, 0.25]), true, &mut rng)
                .unwrap();
        }
        let mut logits = |dom: &[f32]| {
            star.forward(&inputs(&feat, dom), false, &mut rng)
                .unwrap()
                .logits
                .to_vec1::<f32>()
                .unwrap()
        };
        let seen = logits(&[0.5, -0.5, 0.25]);
        let moved = logits(&[1.5, -0.5, 0.25]);
        let change = |v: &[f32]| {
            v.iter()
                .zip(&seen)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max)
        };
        // For scale: the same unit shift applied to a (normalised) feature column.
        let feat_moved = {
            let shift = Tensor::new(&[[1f32, 0.0, 0.0]], &dev).unwrap();
            let f = feat.broadcast_add(&shift).unwrap();
            star.forward(&inputs(&f, &[0.5, -0.5, 0.25]), false, &mut rng)
                .unwrap()
                .logits
                .to_vec1::<f32>()
                .unwrap()
        };
        let (by_domain, by_feature) = (change(&moved), change(&feat_moved));
        assert!(
            by_domain.is_finite() && by_domain > 1e-6,
            "the slot must matter"
        );
        assert!(
            by_domain < 20.0 * by_feature,
            "a unit shift of the domain slot moved the logits by {by_domain}, of a feature by {by_feature}"
        );
    }
}
