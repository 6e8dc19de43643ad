//! PEPNet (Chang et al., "PEPNet: Parameter and Embedding Personalized Network for
//! Infusing with Personalized Prior Information", KDD 2023) over one shared DNN:
//! - EPNet: a [`GateUnit`] on [e_d; stop_grad(x)] scales each field's embedding;
//! - PPNet: a gate unit per hidden layer, on the same input, scales its units.
//!
//! One network serves every domain; the domain vector e_d (id embedding or fixed
//! LLM embedding through its projection) reaches it only through the gates, and
//! is not itself a feature of the DNN. So similar domains share what they learn,
//! and a domain never seen in training is scored from its vector alone. Without
//! a domain input the gates read the fields only.

use super::conditioning::GateUnit;
use super::config::ModelConfig;
use super::{CtrModel, InputSpec, Inputs, Model, Output};
use crate::checks::Checks;
use crate::nn::linear::Linear;
use crate::nn::ops::dropout;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

pub struct Pepnet {
    epnet: GateUnit,
    layers: Vec<(Linear, GateUnit)>,
    out: Linear,
    /// Feature slots (every slot but the domain's).
    fields: usize,
    dropout: f64,
}

impl Pepnet {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let c = &cfg.pepnet;
        let fields = spec.slots - usize::from(spec.has_domain);
        let width = fields * spec.dim;
        // The gates' input: the domain vector and the (gradient-stopped) fields.
        let cond = spec.width();
        let epnet = GateUnit::new(ps, "pepnet.epnet", cond, c.gate_hidden, fields, rng)?;
        let mut layers = Vec::new();
        let mut d_in = width;
        for (i, &h) in c.hidden.iter().enumerate() {
            let l = Linear::new(ps, &format!("pepnet.mlp.{i}"), d_in, h, rng)?;
            let g = GateUnit::new(
                ps,
                &format!("pepnet.ppnet.{i}"),
                cond,
                c.gate_hidden,
                h,
                rng,
            )?;
            layers.push((l, g));
            d_in = h;
        }
        let out = Linear::new(ps, "pepnet.out", d_in, 1, rng)?;
        Ok(Pepnet {
            epnet,
            layers,
            out,
            fields,
            dropout: cfg.dropout,
        })
    }
}

impl CtrModel for Pepnet {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let (n, _, dim) = inp.fields.dims3()?;
        let feat = inp.fields.narrow(1, 0, self.fields)?;
        let flat = feat.reshape((n, self.fields * dim))?;
        let cond = match &inp.domain {
            Some(d) => Tensor::cat(&[d, &flat.detach()], 1)?,
            None => flat.detach(),
        };
        // Each field's scale, repeated over its dim units.
        let z = self
            .epnet
            .logits(&cond, rng)?
            .unsqueeze(2)?
            .broadcast_as((n, self.fields, dim))?
            .reshape((n, self.fields * dim))?;
        let mut h = crate::nn::fused::gated(&feat.reshape((n, self.fields * dim))?, &z)?;
        for (l, g) in &self.layers {
            h = g.apply(&l.forward_relu(&h)?, &cond, rng)?;
            if train && self.dropout > 0.0 {
                h = dropout(&h, self.dropout, rng)?;
            }
        }
        let logits = self.out.forward(&h)?.squeeze(1)?;
        Ok(Output { logits, aux: None })
    }

    fn per_domain(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PepnetConfig {
    /// Hidden layers of the shared DNN, each with a PPNet gate. Default [256, 128].
    pub hidden: Vec<usize>,
    /// Hidden width of each gate unit (EPNet and PPNet). Default 64.
    pub gate_hidden: usize,
}

impl Default for PepnetConfig {
    fn default() -> Self {
        PepnetConfig {
            hidden: vec![256, 128],
            gate_hidden: 64,
        }
    }
}

impl Model for Pepnet {
    type Settings = PepnetConfig;
    const ABOUT: &'static str = "PEPNet (Chang et al., KDD 2023): one shared DNN whose field embeddings (EPNet) and\nhidden units (PPNet) are scaled by gate units on the domain vector, so the domain\nenters only through shared, domain-conditioned parameters and an unseen domain is\nscored from its vector alone.";

    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        c.widths(&format!("{key}.hidden"), &s.hidden, false);
        c.at_least_one(&format!("{key}.gate_hidden"), s.gate_hidden);
    }

    #[cfg(test)]
    fn shrink(s: &mut Self::Settings) {
        s.hidden = vec![5, 4];
        s.gate_hidden = 3;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Pepnet);
    }
}
