//! Gaussian attention pooling: Nadaraya–Watson kernel regression over a domain's
//! token states, f(q) = Σᵢ softmax_i(−½‖(q − kᵢ) ⊙ w‖²) · vᵢ with kᵢ = vᵢ the
//! token states. `parameterless`: w fixed (default 1/√h, so squared distances are
//! O(1)); the query is the last token's state or the mean state.
//! `parametric`: w learned per dimension (initialised at 1/√h), optionally a
//! learned query added to the chosen one ([`Parametric`]).

use crate::nn::ops::softmax;
use candle_core::{D, Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Query {
    /// The last (non-padding) token's state.
    Last,
    /// The mean of the token states.
    Mean,
}

/// The query of each domain: states (D, T, h), mask (D, T) of 1/0 → (D, h).
pub fn query(states: &Tensor, mask: &Tensor, q: Query) -> Result<Tensor> {
    let (dn, _t, h) = states.dims3()?;
    match q {
        Query::Mean => {
            let m = mask.unsqueeze(2)?;
            states
                .broadcast_mul(&m)?
                .sum(1)?
                .broadcast_div(&mask.sum_keepdim(1)?)
        }
        Query::Last => {
            // Index of the last real token of each row.
            let lens: Vec<u32> = mask
                .sum(1)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?
                .iter()
                .map(|&l| (l.max(1.0) as u32) - 1)
                .collect();
            let idx = Tensor::from_vec(lens, (dn, 1, 1), states.device())?
                .broadcast_as((dn, 1, h))?
                .contiguous()?;
            states.gather(&idx, 1)?.squeeze(1)
        }
    }
}

/// Pool states (D, T, h) with mask (D, T) around queries (D, h) with per-dimension
/// weights w (h) → (D, h). Padding positions get no weight.
pub fn gaussian_pool(states: &Tensor, mask: &Tensor, q: &Tensor, w: &Tensor) -> Result<Tensor> {
    let diff = states.broadcast_sub(&q.unsqueeze(1)?)?.broadcast_mul(w)?; // (D, T, h)
    let logits = (diff.sqr()?.sum(D::Minus1)? * -0.5)?; // (D, T)
    let neg = ((mask.ones_like()? - mask)? * -1e9)?;
    let a = softmax(&(logits + neg)?)?; // (D, T)
    a.unsqueeze(2)?.broadcast_mul(states)?.sum(1)
}

/// The parameterless pooling: w = scale (1/√h when None) in every dimension.
pub fn parameterless(
    states: &Tensor,
    mask: &Tensor,
    q: Query,
    scale: Option<f64>,
) -> Result<Tensor> {
    let h = states.dim(2)?;
    let s = scale.unwrap_or(1.0 / (h as f64).sqrt());
    let w = Tensor::full(s as f32, h, states.device())?.to_dtype(states.dtype())?;
    gaussian_pool(states, mask, &query(states, mask, q)?, &w)
}

/// Parametric Gaussian pooling: learned per-dimension weights w (initialised at
/// 1/√h) and, optionally, a learned offset added to the query.
pub struct Parametric {
    pub w: Tensor,
    pub query_offset: Option<Tensor>,
    pub query: Query,
}

impl Parametric {
    pub fn new(
        ps: &mut crate::nn::params::ParamStore,
        h: usize,
        query: Query,
        learned_query: bool,
    ) -> Result<Self> {
        let w = ps.fill("pool.w", &[h], 1.0 / (h as f64).sqrt())?;
        let query_offset = if learned_query {
            Some(ps.fill("pool.query_offset", &[h], 0.0)?)
        } else {
            None
        };
        Ok(Parametric {
            w,
            query_offset,
            query,
        })
    }

    /// States (D, T, h), mask (D, T) → (D, h).
    pub fn forward(&self, states: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let mut q = query(states, mask, self.query)?;
        if let Some(o) = &self.query_offset {
            q = q.broadcast_add(o)?;
        }
        gaussian_pool(states, mask, &q, &self.w)
    }
}

/// Gaussian kernel weights of `others` around `q`: softmax_j(−½‖(q − e_j)·w‖²)
/// with w = `scale` (1/√h when None) in every dimension — the pooling's kernel,
/// used to mix the seen domains for an unseen one.
pub fn kernel_weights(q: &[f32], others: &[&[f32]], scale: Option<f64>) -> Vec<f64> {
    let w = scale.unwrap_or(1.0 / (q.len().max(1) as f64).sqrt());
    let logits: Vec<f64> = others
        .iter()
        .map(|e| {
            let d2: f64 = q
                .iter()
                .zip(e.iter())
                .map(|(&a, &b)| ((a as f64 - b as f64) * w).powi(2))
                .sum();
            -0.5 * d2
        })
        .collect();
    let m = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_weights_by_hand() {
        // q = (0, 0); e0 = (1, 0) at d² 1, e1 = (0, 2) at d² 4, w = 1:
        // weights ∝ e^-0.5, e^-2.
        let w = super::kernel_weights(&[0., 0.], &[&[1., 0.], &[0., 2.]], Some(1.0));
        let a = (-0.5f64).exp() / ((-0.5f64).exp() + (-2f64).exp());
        assert!(
            (w[0] - a).abs() < 1e-12 && (w[1] - (1.0 - a)).abs() < 1e-12,
            "{w:?}"
        );
        // Equidistant (one-hot) vectors get equal weights.
        let w = super::kernel_weights(&[1., 0., 0.], &[&[0., 1., 0.], &[0., 0., 1.]], None);
        assert!((w[0] - 0.5).abs() < 1e-12);
    }

    use super::*;
    use candle_core::Device;

    #[test]
    fn parametric_starts_as_parameterless_and_matches_finite_differences() {
        use crate::nn::params::ParamStore;
        use crate::nn::rng::Rng;
        let d = Device::Cpu;
        let mut rng = Rng::new(4);
        let v: Vec<f64> = (0..3 * 5 * 4).map(|_| rng.normal()).collect();
        let states = Tensor::from_vec(v, (3, 5, 4), &d).unwrap();
        let mask = Tensor::new(
            &[
                [1f64, 1., 1., 1., 1.],
                [1., 1., 1., 0., 0.],
                [1., 0., 0., 0., 0.],
            ],
            &d,
        )
        .unwrap();
        for q in [Query::Last, Query::Mean] {
            let mut ps = ParamStore::new(candle_core::DType::F64, &d);
            let layer = Parametric::new(&mut ps, 4, q, true).unwrap();
            let a = layer.forward(&states, &mask).unwrap();
            let b = parameterless(&states, &mask, q, None).unwrap();
            let diff = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f64>()
                .unwrap();
            assert!(
                diff < 1e-12,
                "at initialisation it is the parameterless pooling"
            );
            // Move off the initial point so every gradient is generic, then check.
            ps.get("pool.w")
                .unwrap()
                .set(&Tensor::new(&[0.3f64, 0.7, 0.45, 0.9], &d).unwrap())
                .unwrap();
            ps.get("pool.query_offset")
                .unwrap()
                .set(&Tensor::new(&[0.1f64, -0.2, 0.05, 0.3], &d).unwrap())
                .unwrap();
            let probe = Tensor::from_vec(
                (0..12).map(|i| (i as f64 * 0.61).sin()).collect::<Vec<_>>(),
                (3, 4),
                &d,
            )
            .unwrap();
            let f = || (layer.forward(&states, &mask)? * &probe)?.sum_all();
            let (err, dead) = crate::nn::gradcheck::check(&ps, 4, 1e-6, &f).unwrap();
            assert!(dead.is_empty(), "{q:?}: no gradient for {dead:?}");
            assert!(err < 1e-5, "{q:?}: relative error {err}");
        }
    }

    #[test]
    fn hand_computed_example() {
        // One domain, three tokens in 2-D, the third is padding; w = 1.
        // q = last real token = (1, 0). Distances²: k0 = (0, 0) → 1, k1 = (1, 0) → 0.
        // Weights ∝ exp(−0.5), exp(0) → a0 = 1/(1+e^0.5), a1 = e^0.5/(1+e^0.5).
        // f = a0·(0,0) + a1·(1,0) = (a1, 0).
        let d = Device::Cpu;
        let states = Tensor::new(&[[[0f64, 0.], [1., 0.], [9., 9.]]], &d).unwrap();
        let mask = Tensor::new(&[[1f64, 1., 0.]], &d).unwrap();
        let out = parameterless(&states, &mask, Query::Last, Some(1.0))
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        let a1 = 0.5f64.exp() / (1.0 + 0.5f64.exp());
        assert!((out[0][0] - a1).abs() < 1e-12, "{:?}", out);
        assert!(out[0][1].abs() < 1e-12);
        // Mean query: q = (0.5, 0): both at distance² 0.25 → equal weights → (0.5, 0).
        let out = parameterless(&states, &mask, Query::Mean, Some(1.0))
            .unwrap()
            .to_vec2::<f64>()
            .unwrap();
        assert!((out[0][0] - 0.5).abs() < 1e-12 && out[0][1].abs() < 1e-12);
    }
}
