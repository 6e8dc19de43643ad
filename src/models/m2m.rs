//! M2M (Zhang et al., "Leaving No One Behind: A Multi-Scenario Multi-Task Meta
//! Learning Approach for Advertiser Modeling", WSDM 2022), for one task: shared
//! experts over the features, one gate over [features; e_d] shared by every
//! domain, and a tower whose weights are generated from the domain vector e_d
//! ([`GeneratedMlp`], low rank). No network belongs to one domain, so a domain
//! never seen in training is scored from its vector alone. Without a domain input
//! the gate reads the features and the tower is its shared W₀ part.

use super::conditioning::GeneratedMlp;
use super::config::ModelConfig;
use super::experts::Experts;
use super::gates::Gate;
use super::{CtrModel, InputSpec, Inputs, Model, Output};
use crate::checks::Checks;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::Result;
use serde::{Deserialize, Serialize};

pub struct M2m {
    experts: Experts,
    gate: Gate,
    tower: GeneratedMlp,
    /// Feature slots (every slot but the domain's).
    fields: usize,
}

impl M2m {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let c = &cfg.m2m;
        let fields = spec.slots - usize::from(spec.has_domain);
        let experts = Experts::new(
            ps,
            "m2m.experts",
            fields * spec.dim,
            c.experts,
            &c.expert_hidden,
            cfg.dropout,
            rng,
        )?;
        let gate = Gate::new(ps, "m2m.gate", spec.width(), c.experts, &cfg.gate, rng)?;
        let tower = GeneratedMlp::new(
            ps,
            "m2m.tower",
            spec.dim,
            experts.out_dim(),
            &c.tower,
            c.rank,
            cfg.dropout,
            rng,
        )?;
        Ok(M2m {
            experts,
            gate,
            tower,
            fields,
        })
    }
}

impl CtrModel for M2m {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let n = inp.x.dim(0)?;
        let dim = inp.fields.dim(2)?;
        let feat = inp
            .fields
            .narrow(1, 0, self.fields)?
            .reshape((n, self.fields * dim))?;
        let ex = self.experts.forward(&feat, train, rng)?; // (n, E, h)
        let (h, aux) = self.gate.mix(&inp.x, &ex, train, rng)?;
        let logits = self
            .tower
            .forward(&h, inp.domain.as_ref(), &inp.segments, train, rng)?
            .squeeze(1)?;
        Ok(Output { logits, aux })
    }

    fn per_domain(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct M2mConfig {
    /// Shared experts. Default 4.
    pub experts: usize,
    /// Each expert's hidden layers. Default [128].
    pub expert_hidden: Vec<usize>,
    /// The generated tower's hidden layers. Default [64].
    pub tower: Vec<usize>,
    /// Rank of each generated weight update A(e_d)·B(e_d). Default 4.
    pub rank: usize,
}

impl Default for M2mConfig {
    fn default() -> Self {
        M2mConfig {
            experts: 4,
            expert_hidden: vec![128],
            tower: vec![64],
            rank: 4,
        }
    }
}

impl Model for M2m {
    type Settings = M2mConfig;
    const ABOUT: &'static str = "M2M (Zhang et al., WSDM 2022), one task: shared experts over the features, one\ngate over [features; domain vector] for every domain, and a tower whose weights\nare generated from the domain vector (W0 + A(e)·B(e), rank 4). No network belongs\nto one domain: an unseen domain is scored from its vector alone.";
    const GATED: bool = true;
    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        c.at_least_one(&format!("{key}.experts"), s.experts);
        c.widths(&format!("{key}.expert_hidden"), &s.expert_hidden, true);
        c.widths(&format!("{key}.tower"), &s.tower, false);
        c.at_least_one(&format!("{key}.rank"), s.rank);
    }

    #[cfg(test)]
    fn shrink(s: &mut Self::Settings) {
        s.experts = 2;
        s.expert_hidden = vec![4];
        s.tower = vec![3];
        s.rank = 2;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::M2m);
    }
}
