//! STAR (Sheng et al., "One Model to Serve All: Star Topology Adaptive Recommender
//! for Multi-Domain CTR Prediction", CIKM 2021):
//! - partitioned normalisation: each domain normalised with its own batch
//!   statistics in training and its own running statistics at test, scaled by
//!   (γ ⊙ γ_d) and shifted by (β + β_d);
//! - star-topology FCN: layer weights W ⊙ W_d and biases b + b_d, shared ⊙ domain;
//! - an auxiliary network on the domain embedding whose logit is added.

use super::config::ModelConfig;
use super::{CtrModel, InputSpec, Inputs, Output};
use crate::nn::linear::{Linear, Mlp};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};
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
        let gamma = ps.fill("star.pn.gamma", &[w], 1.0)?;
        let beta = ps.fill("star.pn.beta", &[w], 0.0)?;
        let mut gamma_d = Vec::new();
        let mut beta_d = Vec::new();
        for d in 0..spec.domains {
            gamma_d.push(ps.fill(format!("star.d{d}.pn.gamma"), &[w], 1.0)?);
            beta_d.push(ps.fill(format!("star.d{d}.pn.beta"), &[w], 0.0)?);
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
            running: RefCell::new(vec![(vec![0.0; w], vec![1.0; w]); spec.domains]),
            momentum: c.pn_momentum,
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
        for s in &inp.segments {
            let mut h =
                self.partitioned_norm(&inp.x.narrow(0, s.start, s.len)?, s.domain, train)?;
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

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Star);
    }
}
