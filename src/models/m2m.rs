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
use super::{CtrModel, InputSpec, Inputs, Output};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::Result;

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

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::M2m);
    }
}
