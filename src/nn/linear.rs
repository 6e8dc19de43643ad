//! Linear layers and multi-layer perceptrons.

use super::ops::dropout;
use super::params::ParamStore;
use super::rng::Rng;
use candle_core::{Result, Tensor};

/// y = x·W + b, W of shape (in, out). Initialised as PyTorch's `nn.Linear`:
/// W and b uniform in ±1/√in.
#[derive(Clone)]
pub struct Linear {
    pub w: Tensor,
    pub b: Tensor,
}

impl Linear {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        d_in: usize,
        d_out: usize,
        rng: &mut Rng,
    ) -> Result<Self> {
        let bound = 1.0 / (d_in as f64).sqrt();
        Ok(Linear {
            w: ps.uniform(format!("{name}.weight"), &[d_in, d_out], bound, rng)?,
            b: ps.uniform(format!("{name}.bias"), &[d_out], bound, rng)?,
        })
    }

    /// x: (n, in) → (n, out).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::fused::bias_add(&x.matmul(&self.w)?, &self.b)
    }

    /// ReLU(x·W + b): [`Linear::forward`] then a ReLU, the bias and the ReLU
    /// one graph node (the same digits).
    pub fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        super::fused::bias_relu(&x.matmul(&self.w)?, &self.b)
    }
}

/// Linear → ReLU (→ dropout) for each hidden size, then an optional output layer
/// without activation.
#[derive(Clone)]
pub struct Mlp {
    hidden: Vec<Linear>,
    out: Option<Linear>,
    dropout: f64,
}

impl Mlp {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        d_in: usize,
        hidden: &[usize],
        d_out: Option<usize>,
        dropout: f64,
        rng: &mut Rng,
    ) -> Result<Self> {
        let mut layers = Vec::new();
        let mut d = d_in;
        for (i, &h) in hidden.iter().enumerate() {
            layers.push(Linear::new(ps, &format!("{name}.{i}"), d, h, rng)?);
            d = h;
        }
        let out = match d_out {
            Some(o) => Some(Linear::new(ps, &format!("{name}.out"), d, o, rng)?),
            None => None,
        };
        Ok(Mlp {
            hidden: layers,
            out,
            dropout,
        })
    }

    pub fn out_dim(&self) -> usize {
        match (&self.out, self.hidden.last()) {
            (Some(o), _) => o.b.dim(0).unwrap_or(0),
            (None, Some(h)) => h.b.dim(0).unwrap_or(0),
            (None, None) => 0,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<Tensor> {
        let mut h = x.clone();
        for l in &self.hidden {
            h = l.forward_relu(&h)?;
            if train && self.dropout > 0.0 {
                h = dropout(&h, self.dropout, rng)?;
            }
        }
        match &self.out {
            Some(o) => o.forward(&h),
            None => Ok(h),
        }
    }
}

/// Layer normalisation over the last dimension, with a learned gain (1) and
/// bias (0): (x − mean) / √(var + 1e-6) · g + b.
#[derive(Clone)]
pub struct LayerNorm {
    pub g: Tensor,
    pub b: Tensor,
}

impl LayerNorm {
    pub fn new(ps: &mut ParamStore, name: &str, d: usize) -> Result<Self> {
        Ok(LayerNorm {
            g: ps.fill(format!("{name}.gain"), &[d], 1.0)?,
            b: ps.fill(format!("{name}.bias"), &[d], 0.0)?,
        })
    }

    /// x: (…, d) → (…, d).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        use candle_core::D;
        let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + 1e-6)?.sqrt()?)?
            .broadcast_mul(&self.g)?
            .broadcast_add(&self.b)
    }
}
