//! DNN: an MLP over all field embeddings (the domain is one of the fields when the
//! config gives it). One tower for all domains.

use super::config::ModelConfig;
use super::{CtrModel, InputSpec, Inputs, Model, Output};
use crate::checks::Checks;
use crate::nn::linear::Mlp;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::Result;
use serde::{Deserialize, Serialize};

pub struct Dnn {
    mlp: Mlp,
}

impl Dnn {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(Dnn {
            mlp: Mlp::new(
                ps,
                "dnn.mlp",
                spec.width(),
                &cfg.dnn.hidden,
                Some(1),
                cfg.dropout,
                rng,
            )?,
        })
    }
}

impl CtrModel for Dnn {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let logits = self.mlp.forward(&inp.x, train, rng)?.squeeze(1)?;
        Ok(Output { logits, aux: None })
    }

    /// One network for every domain (the domain, if any, is one of the fields).
    fn per_domain(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DnnConfig {
    /// Hidden layers. Default [256, 128].
    pub hidden: Vec<usize>,
}

impl Default for DnnConfig {
    fn default() -> Self {
        DnnConfig {
            hidden: vec![256, 128],
        }
    }
}

impl Model for Dnn {
    type Settings = DnnConfig;
    const ABOUT: &'static str =
        "DNN: an MLP over all field embeddings (the domain id is one of them), one tower.";

    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        c.widths(&format!("{key}.hidden"), &s.hidden, false);
    }

    #[cfg(test)]
    fn shrink(s: &mut Self::Settings) {
        s.hidden = vec![5];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Dnn);
    }
}
