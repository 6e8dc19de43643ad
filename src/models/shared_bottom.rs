//! Shared-bottom multi-task model (Caruana 1997): one MLP shared by all domains,
//! then each domain's own tower.

use super::config::ModelConfig;
use super::{CtrModel, InputSpec, Inputs, Model, Output, per_domain};
use crate::checks::Checks;
use crate::nn::linear::Mlp;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::Result;
use serde::{Deserialize, Serialize};

pub struct SharedBottom {
    bottom: Mlp,
    towers: Vec<Mlp>,
}

impl SharedBottom {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let c = &cfg.shared_bottom;
        let bottom = Mlp::new(
            ps,
            "shared_bottom.bottom",
            spec.width(),
            &c.bottom,
            None,
            cfg.dropout,
            rng,
        )?;
        let h = bottom.out_dim();
        let towers = (0..spec.domains)
            .map(|d| {
                Mlp::new(
                    ps,
                    &format!("shared_bottom.d{d}.tower"),
                    h,
                    &c.tower,
                    Some(1),
                    cfg.dropout,
                    rng,
                )
            })
            .collect::<Result<_>>()?;
        Ok(SharedBottom { bottom, towers })
    }
}

impl CtrModel for SharedBottom {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let h = self.bottom.forward(&inp.x, train, rng)?;
        let logits = per_domain(&inp.segments, &h, |s, h| {
            self.towers[s.domain].forward(h, train, rng)
        })?;
        Ok(Output {
            logits: logits.squeeze(1)?,
            aux: None,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SharedBottomConfig {
    /// Shared bottom. Default [128].
    pub bottom: Vec<usize>,
    /// Per-domain tower hidden layers. Default [8].
    pub tower: Vec<usize>,
}

impl Default for SharedBottomConfig {
    fn default() -> Self {
        SharedBottomConfig {
            bottom: vec![128],
            tower: vec![8],
        }
    }
}

impl Model for SharedBottom {
    type Settings = SharedBottomConfig;
    const ABOUT: &'static str = "Shared-bottom: one shared MLP, a tower per domain.";

    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        c.widths(&format!("{key}.bottom"), &s.bottom, false);
        c.widths(&format!("{key}.tower"), &s.tower, false);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::SharedBottom);
    }
}
