//! DIN (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction",
//! KDD 2018): an attention unit scores each history item against the target item
//! from [q, k, q − k, q ⊙ k]; the history is pooled with those (unnormalised)
//! scores and joins the field embeddings in an MLP. History: the user's most
//! recent positively rated train items strictly earlier in time.

use super::config::ModelConfig;
use super::{CtrModel, InputSpec, Inputs, Model, Output};
use crate::checks::Checks;
use crate::nn::linear::Mlp;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

pub struct Din {
    attention: Mlp,
    mlp: Mlp,
}

impl Din {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let c = &cfg.din;
        Ok(Din {
            attention: Mlp::new(
                ps,
                "din.attention",
                4 * spec.dim,
                &c.attention,
                Some(1),
                0.0,
                rng,
            )?,
            mlp: Mlp::new(
                ps,
                "din.mlp",
                spec.width() + spec.dim,
                &c.hidden,
                Some(1),
                cfg.dropout,
                rng,
            )?,
        })
    }
}

impl CtrModel for Din {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let missing = || candle_core::Error::Msg("DIN needs the target item and a history".into());
        let q = inp.item.as_ref().ok_or_else(missing)?;
        let (k, mask) = inp.history.as_ref().ok_or_else(missing)?;
        let (n, l, d) = k.dims3()?;
        let qb = q.unsqueeze(1)?.broadcast_as((n, l, d))?.contiguous()?;
        let feats = Tensor::cat(&[&qb, k, &(&qb - k)?, &(&qb * k)?], 2)?; // (n, l, 4d)
        let score = self
            .attention
            .forward(&feats.reshape((n * l, 4 * d))?, train, rng)?
            .reshape((n, l))?;
        let w = (score * mask)?; // padded positions contribute nothing
        let pooled = k.broadcast_mul(&w.unsqueeze(2)?)?.sum(1)?; // (n, d)
        let x = Tensor::cat(&[&inp.x, &pooled], 1)?;
        Ok(Output {
            logits: self.mlp.forward(&x, train, rng)?.squeeze(1)?,
            aux: None,
        })
    }

    /// One network for every domain (the domain, if any, is one of the fields).
    fn per_domain(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DinConfig {
    /// Most recent positively rated train items, strictly earlier in time. Default 20.
    pub history: usize,
    /// Attention unit hidden layers. Default [80, 40].
    pub attention: Vec<usize>,
    /// Prediction MLP. Default [200, 80].
    pub hidden: Vec<usize>,
}

impl Default for DinConfig {
    fn default() -> Self {
        DinConfig {
            history: 20,
            attention: vec![80, 40],
            hidden: vec![200, 80],
        }
    }
}

impl Model for Din {
    type Settings = DinConfig;
    const ABOUT: &'static str = "DIN (Zhou et al., KDD 2018): attention over the user's 20 most recent positively\nrated train items strictly earlier in time.";
    const HISTORY: bool = true;
    fn history(s: &Self::Settings) -> usize {
        s.history
    }
    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        c.at_least_one(&format!("{key}.history"), s.history);
        c.widths(&format!("{key}.attention"), &s.attention, false);
        c.widths(&format!("{key}.hidden"), &s.hidden, false);
    }

    #[cfg(test)]
    fn shrink(s: &mut Self::Settings) {
        s.attention = vec![4];
        s.hidden = vec![5];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Din);
    }
}
