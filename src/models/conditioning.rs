//! Shared parameters that are a function of the domain vector e_d. A domain
//! vector fed into a network of its own domain is a constant there (a bias); it
//! pays off through parameters shared by all domains and conditioned on it, so
//! that similar domains share what they learn and an unseen domain gets its
//! parameters from its vector alone.
//!
//! - [`GateUnit`]: the gate neural unit of EPNet/PPNet (Chang et al., "PEPNet:
//!   Parameter and Embedding Personalized Network for Infusing with Personalized
//!   Prior Information", KDD 2023): 2·σ(MLP(c)), one scale per unit of the gated
//!   layer, exactly 1 at initialisation (its output layer starts at zero), so a
//!   gated network starts as the ungated one.

use crate::nn::linear::{Linear, Mlp};
use crate::nn::ops::sigmoid;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};

/// 2·σ(MLP(c)): (n, c_in) → (n, out), in (0, 2), 1 at initialisation.
pub struct GateUnit {
    hidden: Mlp,
    out: Linear,
}

impl GateUnit {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        c_in: usize,
        hidden: usize,
        out: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let hidden_mlp = Mlp::new(
            ps,
            &format!("{name}.hidden"),
            c_in,
            &[hidden],
            None,
            0.0,
            rng,
        )?;
        let out = Linear {
            w: ps.fill(format!("{name}.out.weight"), &[hidden, out], 0.0)?,
            b: ps.fill(format!("{name}.out.bias"), &[out], 0.0)?,
        };
        Ok(GateUnit {
            hidden: hidden_mlp,
            out,
        })
    }

    pub fn forward(&self, c: &Tensor, rng: &mut Rng) -> Result<Tensor> {
        let h = self.hidden.forward(c, false, rng)?;
        sigmoid(&self.out.forward(&h)?)? * 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn the_gate_is_identity_at_initialisation_and_has_exact_gradients() {
        let dev = Device::Cpu;
        let mut ps = ParamStore::new(DType::F64, &dev);
        let mut rng = Rng::new(3);
        let g = GateUnit::new(&mut ps, "g", 4, 5, 3, &mut rng).unwrap();
        let c = Tensor::randn(0f64, 1.0, (6, 4), &dev).unwrap();
        let out = g.forward(&c, &mut rng).unwrap().to_vec2::<f64>().unwrap();
        assert!(out.iter().flatten().all(|&v| v == 1.0), "{out:?}");
        // Away from the initial point (the output layer is zero there, which
        // leaves the hidden layer without gradient), against finite differences.
        for p in ps.params() {
            let v = Tensor::randn(0f64, 0.5, p.var.shape(), &dev).unwrap();
            p.var.set(&v).unwrap();
        }
        let w = Tensor::randn(0f64, 1.0, (6, 3), &dev).unwrap();
        let f = || (g.forward(&c, &mut Rng::new(0))? * &w)?.sum_all();
        let (err, dead) = crate::nn::gradcheck::check(&ps, 6, 1e-6, &f).unwrap();
        assert!(dead.is_empty(), "{dead:?}");
        assert!(err < 1e-6, "relative error {err}");
    }
}
