//! A group of parallel experts (MLPs with the same shape). One-layer experts run
//! as a single fused matrix product; deeper ones one by one.

use crate::nn::linear::{Linear, Mlp};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};

#[derive(Clone)]
pub struct Experts {
    count: usize,
    out: usize,
    fused: Option<Linear>,
    mlps: Vec<Mlp>,
}

impl Experts {
    pub fn new(
        ps: &mut ParamStore,
        name: &str,
        d_in: usize,
        count: usize,
        hidden: &[usize],
        dropout: f64,
        rng: &mut Rng,
    ) -> Result<Self> {
        let out = *hidden.last().ok_or_else(|| {
            candle_core::Error::Msg(format!("{name}: experts need a hidden layer"))
        })?;
        if hidden.len() == 1 && dropout == 0.0 {
            // Same initialisation as `count` separate Linear(d_in, out) layers.
            let fused = Linear::new(ps, name, d_in, count * out, rng)?;
            return Ok(Experts {
                count,
                out,
                fused: Some(fused),
                mlps: Vec::new(),
            });
        }
        let mlps = (0..count)
            .map(|e| Mlp::new(ps, &format!("{name}.{e}"), d_in, hidden, None, dropout, rng))
            .collect::<Result<_>>()?;
        Ok(Experts {
            count,
            out,
            fused: None,
            mlps,
        })
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn out_dim(&self) -> usize {
        self.out
    }

    /// x: (n, in) → (n, count, out).
    pub fn forward(&self, x: &Tensor, train: bool, rng: &mut Rng) -> Result<Tensor> {
        let n = x.dim(0)?;
        if let Some(f) = &self.fused {
            return f.forward_relu(x)?.reshape((n, self.count, self.out));
        }
        let outs = self
            .mlps
            .iter()
            .map(|m| m.forward(x, train, rng)?.unsqueeze(1))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&outs, 1)
    }
}
