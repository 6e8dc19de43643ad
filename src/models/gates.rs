//! Gates that mix experts: softmax (default), the noisy top-k sparse gate
//! (Shazeer et al., "Outrageously Large Neural Networks", ICLR 2017) with its
//! importance and load losses, and DSelect-k (Hazimeh et al., "DSelect-k:
//! Differentiable Selection in the Mixture of Experts", NeurIPS 2021), static or
//! per-example.

use crate::nn::linear::Linear;
use crate::nn::ops::{softmax, softplus};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// `softmax`, `noisy_topk`, `dselect_k` (per-example) or `dselect_k_static`.
    pub kind: GateKind,
    /// Experts kept by `noisy_topk`; selectors of `dselect_k`. Default 2.
    pub k: usize,
    /// Weight of each of the importance and load losses of `noisy_topk`. Default 0.01.
    pub balance_weight: f64,
    /// Smooth-step width γ of `dselect_k`. Default 1.0.
    pub gamma: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            kind: GateKind::Softmax,
            k: 2,
            balance_weight: 0.01,
            gamma: 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GateKind {
    Softmax,
    NoisyTopk,
    DselectK,
    DselectKStatic,
}

/// Mixture weights (n, experts), and an auxiliary loss to add to the objective.
pub struct GateOut {
    pub weights: Tensor,
    pub aux: Option<Tensor>,
}

#[derive(Clone)]
pub struct Gate {
    cfg: GateConfig,
    experts: usize,
    logits: Option<Linear>,
    noise: Option<Linear>,
    /// DSelect-k: per-example selector logits (in → k·m) and selector weights (in → k).
    z_lin: Option<Linear>,
    alpha_lin: Option<Linear>,
    /// DSelect-k static: (k, m) and (k).
    z: Option<Tensor>,
    alpha: Option<Tensor>,
    /// Binary code of each expert: (m, experts), 0/1.
    codes: Option<Tensor>,
    bits: usize,
}

impl Gate {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        d_in: usize,
        experts: usize,
        cfg: &GateConfig,
        rng: &mut Rng,
    ) -> Result<Self> {
        let mut g = Gate {
            cfg: cfg.clone(),
            experts,
            logits: None,
            noise: None,
            z_lin: None,
            alpha_lin: None,
            z: None,
            alpha: None,
            codes: None,
            bits: 0,
        };
        match cfg.kind {
            GateKind::Softmax => {
                g.logits = Some(Linear::new(
                    ps,
                    &format!("{name}.logits"),
                    d_in,
                    experts,
                    rng,
                )?)
            }
            GateKind::NoisyTopk => {
                if cfg.k == 0 || cfg.k > experts {
                    candle_core::bail!("gate {name}: k = {} must be in 1..={experts}", cfg.k);
                }
                g.logits = Some(Linear::new(
                    ps,
                    &format!("{name}.logits"),
                    d_in,
                    experts,
                    rng,
                )?);
                g.noise = Some(Linear::new(
                    ps,
                    &format!("{name}.noise"),
                    d_in,
                    experts,
                    rng,
                )?);
            }
            GateKind::DselectK | GateKind::DselectKStatic => {
                if cfg.k == 0 {
                    candle_core::bail!("gate {name}: k must be at least 1");
                }
                let bits = (usize::BITS - (experts.max(2) - 1).leading_zeros()) as usize;
                g.bits = bits;
                let mut codes = vec![0f64; bits * experts];
                for j in 0..experts {
                    for l in 0..bits {
                        codes[l * experts + j] = ((j >> l) & 1) as f64;
                    }
                }
                g.codes =
                    Some(Tensor::from_vec(codes, (bits, experts), &ps.device)?.to_dtype(ps.dtype)?);
                let k = cfg.k;
                if cfg.kind == GateKind::DselectK {
                    g.z_lin = Some(Linear::new(ps, &format!("{name}.z"), d_in, k * bits, rng)?);
                    g.alpha_lin = Some(Linear::new(ps, &format!("{name}.alpha"), d_in, k, rng)?);
                } else {
                    g.z = Some(ps.uniform(
                        format!("{name}.z"),
                        &[k, bits],
                        cfg.gamma / 100.0,
                        rng,
                    )?);
                    g.alpha = Some(ps.uniform(format!("{name}.alpha"), &[k], 0.05, rng)?);
                }
            }
        }
        Ok(g)
    }

    pub fn forward(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<GateOut> {
        match self.cfg.kind {
            GateKind::Softmax => Ok(GateOut {
                weights: softmax(&self.lin(&self.logits)?.forward(x)?)?,
                aux: None,
            }),
            GateKind::NoisyTopk => self.noisy_topk(x, train, rng),
            GateKind::DselectK | GateKind::DselectKStatic => self.dselect(x),
        }
    }

    fn lin<'a>(&self, l: &'a Option<Linear>) -> Result<&'a Linear> {
        l.as_ref()
            .ok_or_else(|| candle_core::Error::Msg("gate layer missing".into()))
    }

    fn noisy_topk(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<GateOut> {
        let (n, e, k) = (x.dim(0)?, self.experts, self.cfg.k);
        let clean = self.lin(&self.logits)?.forward(x)?;
        let (h, std) = if train {
            let std = (softplus(&self.lin(&self.noise)?.forward(x)?)? + 1e-2)?;
            let eps: Vec<f32> = (0..n * e).map(|_| rng.normal() as f32).collect();
            let eps = Tensor::from_vec(eps, (n, e), x.device())?.to_dtype(x.dtype())?;
            ((&clean + (eps * &std)?)?, Some(std))
        } else {
            (clean.clone(), None)
        };
        // Top-k per row (indices need no gradient), and for the load loss the
        // threshold each expert must beat: the k-th largest of the other experts.
        let hv = h.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
        let mut mask = vec![0f64; n * e];
        // Column of h holding each expert's threshold: the k-th largest noisy logit
        // among the other experts (the (k+1)-th overall for a selected expert).
        let mut thresh_col = vec![0u32; n * e];
        for (r, row) in hv.iter().enumerate() {
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            for &j in &order[..k] {
                mask[r * e + j] = 1.0;
            }
            let next = order[k.min(e - 1)];
            for j in 0..e {
                let sel = mask[r * e + j] == 1.0;
                thresh_col[r * e + j] = if sel { next } else { order[k - 1] } as u32;
            }
        }
        let mask_t = Tensor::from_vec(mask, (n, e), x.device())?.to_dtype(x.dtype())?;
        let masked = (&h + ((&mask_t - 1.0)? * 1e9)?)?;
        let weights = softmax(&masked)?;
        let aux = match std {
            // With k = experts every expert is always chosen: nothing to balance.
            Some(std) if self.cfg.balance_weight > 0.0 && k < e => {
                let importance = weights.sum(0)?;
                // P(expert j in top-k) = Φ((clean_j − threshold_j) / std_j).
                let idx = Tensor::from_vec(thresh_col, (n, e), x.device())?;
                let t = h.gather(&idx, 1)?;
                let z = ((&clean - t)? / std)?;
                let p = ((z * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)? * 0.5;
                let load = p?.sum(0)?;
                let w = self.cfg.balance_weight;
                Some(((cv_squared(&importance)? * w)? + (cv_squared(&load)? * w)?)?)
            }
            _ => None,
        };
        Ok(GateOut { weights, aux })
    }

    /// Smooth step: 0 below −γ/2, 1 above γ/2, a cubic in between.
    fn smooth_step(&self, t: &Tensor) -> Result<Tensor> {
        let g = self.cfg.gamma;
        let t = t.clamp(-g / 2.0, g / 2.0)?;
        let cubic = (t.powf(3.0)? * (-2.0 / g.powi(3)))?;
        (cubic + (t * (1.5 / g))?)? + 0.5
    }

    fn dselect(&self, x: &Tensor) -> Result<GateOut> {
        let (n, k, m, e) = (x.dim(0)?, self.cfg.k, self.bits, self.experts);
        let codes = self
            .codes
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("codes".into()))?;
        // z: (n, k, m); alpha: (n, k).
        let (z, alpha) = match (&self.z_lin, &self.alpha_lin, &self.z, &self.alpha) {
            (Some(zl), Some(al), _, _) => (zl.forward(x)?.reshape((n, k, m))?, al.forward(x)?),
            (_, _, Some(z), Some(a)) => (
                z.unsqueeze(0)?.broadcast_as((n, k, m))?,
                a.unsqueeze(0)?.broadcast_as((n, k))?,
            ),
            _ => candle_core::bail!("dselect gate is missing its parameters"),
        };
        let s = self.smooth_step(&z)?;
        // r[n, i, j] = Π_l (code_lj · s_il + (1 − code_lj)(1 − s_il)).
        let mut r: Option<Tensor> = None;
        for l in 0..m {
            let s_l = s.narrow(2, l, 1)?; // (n, k, 1)
            let c = codes.narrow(0, l, 1)?.unsqueeze(0)?; // (1, 1, e)
            let term = (s_l.broadcast_mul(&c)?
                + (s_l.neg()? + 1.0)?.broadcast_mul(&(c.neg()? + 1.0)?)?)?;
            r = Some(match r {
                None => term,
                Some(r) => (r * term)?,
            });
        }
        let r = r.ok_or_else(|| candle_core::Error::Msg("no bits".into()))?;
        // Codes beyond the last expert are unused: renormalise over the real experts.
        let r = (&r + 1e-12)?.broadcast_div(&(r.sum_keepdim(2)? + 1e-12 * e as f64)?)?;
        let a = softmax(&alpha)?.unsqueeze(2)?; // (n, k, 1)
        let weights = r.broadcast_mul(&a)?.sum(1)?; // (n, e)
        Ok(GateOut { weights, aux: None })
    }
}

/// Squared coefficient of variation, var / mean², of a 1-D tensor.
fn cv_squared(x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_all()?;
    let var = x.broadcast_sub(&mean)?.sqr()?.mean_all()?;
    var / (mean.sqr()? + 1e-10)?
}

impl Gate {
    /// Mix `experts` (n, E, h) with this gate's weights for input `x` (n, in).
    pub fn mix(
        &self,
        x: &Tensor,
        experts: &Tensor,
        train: bool,
        rng: &mut Rng,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let g = self.forward(x, train, rng)?;
        Ok((crate::nn::fused::mix(experts, &g.weights)?, g.aux))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::gradcheck::check;
    use candle_core::{DType, Device};

    fn setup(kind: GateKind, k: usize) -> (ParamStore, Gate, Tensor) {
        let dev = Device::Cpu;
        let mut ps = ParamStore::new(DType::F64, &dev);
        let mut rng = Rng::new(3);
        let cfg = GateConfig {
            kind,
            k,
            ..Default::default()
        };
        let gate = Gate::new(&mut ps, "g", 6, 5, &cfg, &mut rng).unwrap();
        let x: Vec<f64> = (0..8 * 6).map(|_| rng.normal()).collect();
        (ps, gate, Tensor::from_vec(x, (8, 6), &dev).unwrap())
    }

    fn probe(n: usize) -> Tensor {
        let mut r = Rng::new(11);
        let v: Vec<f64> = (0..n * 5).map(|_| r.normal()).collect();
        Tensor::from_vec(v, (n, 5), &Device::Cpu).unwrap()
    }

    #[test]
    fn weights_are_distributions() {
        for (kind, k) in [
            (GateKind::Softmax, 1),
            (GateKind::NoisyTopk, 2),
            (GateKind::DselectK, 2),
            (GateKind::DselectKStatic, 3),
        ] {
            let (_ps, g, x) = setup(kind, k);
            for train in [false, true] {
                let w = g.forward(&x, train, &mut Rng::new(1)).unwrap().weights;
                for row in w.to_vec2::<f64>().unwrap() {
                    let s: f64 = row.iter().sum();
                    assert!((s - 1.0).abs() < 1e-9, "{kind:?}: sums to {s}");
                    assert!(row.iter().all(|v| *v >= 0.0));
                    if kind == GateKind::NoisyTopk {
                        assert_eq!(
                            row.iter().filter(|v| **v > 1e-12).count(),
                            2,
                            "top-2 keeps 2"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn softmax_gate_by_hand() {
        // One input, identity-like weights: softmax of W·x + b computed by hand.
        let dev = Device::Cpu;
        let mut ps = ParamStore::new(DType::F64, &dev);
        let g = Gate::new(&mut ps, "g", 2, 3, &GateConfig::default(), &mut Rng::new(0)).unwrap();
        ps.get("g.logits.weight")
            .unwrap()
            .set(&Tensor::new(&[[1f64, 0., -1.], [0., 2., 0.]], &dev).unwrap())
            .unwrap();
        ps.get("g.logits.bias")
            .unwrap()
            .set(&Tensor::new(&[0f64, 0., 1.], &dev).unwrap())
            .unwrap();
        let x = Tensor::new(&[[1f64, 0.5]], &dev).unwrap();
        let w = g
            .forward(&x, false, &mut Rng::new(0))
            .unwrap()
            .weights
            .to_vec2::<f64>()
            .unwrap();
        // logits: [1, 1, 0]
        let z = 2.0 * 1f64.exp() + 1.0;
        let want = [1f64.exp() / z, 1f64.exp() / z, 1.0 / z];
        for (a, b) in w[0].iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (kind, k, train) in [
            (GateKind::Softmax, 1, false),
            (GateKind::NoisyTopk, 2, true),
            (GateKind::DselectK, 2, false),
            (GateKind::DselectKStatic, 2, false),
        ] {
            let (ps, g, x) = setup(kind, k);
            let p = probe(8);
            let f = || {
                let out = g.forward(&x, train, &mut Rng::new(5))?;
                let mut l = (out.weights * &p)?.sum_all()?;
                if let Some(a) = out.aux {
                    l = (l + (a * 10.0)?)?;
                }
                Ok(l)
            };
            let (err, dead) = check(&ps, 12, 1e-6, &f).unwrap();
            assert!(dead.is_empty(), "{kind:?}: no gradient for {dead:?}");
            assert!(err < 1e-4, "{kind:?}: relative error {err}");
        }
    }

    #[test]
    fn noisy_topk_has_balance_loss_only_in_training() {
        let (_ps, g, x) = setup(GateKind::NoisyTopk, 2);
        assert!(g.forward(&x, true, &mut Rng::new(1)).unwrap().aux.is_some());
        assert!(
            g.forward(&x, false, &mut Rng::new(1))
                .unwrap()
                .aux
                .is_none()
        );
    }
}
