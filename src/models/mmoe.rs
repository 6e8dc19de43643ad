//! MMoE (Ma et al., "Modeling Task Relationships in Multi-task Learning with
//! Multi-gate Mixture-of-Experts", KDD 2018): shared experts, one gate and one
//! tower per domain; a sample uses its own domain's gate and tower.

use super::config::ModelConfig;
use super::experts::Experts;
use super::gates::Gate;
use super::{CtrModel, InputSpec, Inputs, Model, Output, add_aux};
use crate::checks::Checks;
use crate::nn::linear::Mlp;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::Result;
use serde::{Deserialize, Serialize};

pub struct Mmoe {
    experts: Experts,
    gates: Vec<Gate>,
    towers: Vec<Mlp>,
}

impl Mmoe {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let c = &cfg.mmoe;
        let w = spec.width();
        let experts = Experts::new(
            ps,
            "mmoe.experts",
            w,
            c.experts,
            &c.expert_hidden,
            cfg.dropout,
            rng,
        )?;
        let mut gates = Vec::new();
        let mut towers = Vec::new();
        for d in 0..spec.domains {
            gates.push(Gate::new(
                ps,
                &format!("mmoe.d{d}.gate"),
                w,
                c.experts,
                &cfg.gate,
                rng,
            )?);
            towers.push(Mlp::new(
                ps,
                &format!("mmoe.d{d}.tower"),
                experts.out_dim(),
                &c.tower,
                Some(1),
                cfg.dropout,
                rng,
            )?);
        }
        Ok(Mmoe {
            experts,
            gates,
            towers,
        })
    }
}

impl CtrModel for Mmoe {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let ex = self.experts.forward(&inp.x, train, rng)?; // (n, E, h)
        let mut aux = None;
        let mut parts = Vec::with_capacity(inp.segments.len());
        for s in &inp.segments {
            let x = inp.x.narrow(0, s.start, s.len)?;
            let e = ex.narrow(0, s.start, s.len)?;
            let (h, a) = self.gates[s.domain].mix(&x, &e, train, rng)?;
            aux = add_aux(aux, a)?;
            parts.push(self.towers[s.domain].forward(&h, train, rng)?);
        }
        let logits = candle_core::Tensor::cat(&parts, 0)?.squeeze(1)?;
        Ok(Output { logits, aux })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MmoeConfig {
    /// Shared experts. Default 3.
    pub experts: usize,
    /// Expert hidden layers. Default [16].
    pub expert_hidden: Vec<usize>,
    /// Per-domain tower hidden layers. Default [8].
    pub tower: Vec<usize>,
}

impl Default for MmoeConfig {
    fn default() -> Self {
        MmoeConfig {
            experts: 3,
            expert_hidden: vec![16],
            tower: vec![8],
        }
    }
}

impl Model for Mmoe {
    type Settings = MmoeConfig;
    const ABOUT: &'static str =
        "MMoE (Ma et al., KDD 2018): 3 shared experts, a gate and a tower per domain.";
    const GATED: bool = true;
    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        c.at_least_one(&format!("{key}.experts"), s.experts);
        c.widths(&format!("{key}.expert_hidden"), &s.expert_hidden, true);
        c.widths(&format!("{key}.tower"), &s.tower, false);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Mmoe);
    }
}
