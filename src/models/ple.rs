//! PLE and CGC (Tang et al., "Progressive Layered Extraction (PLE): A Novel
//! Multi-Task Learning (MTL) Model for Personalized Recommendations", RecSys 2020).
//!
//! CGC (customized gate control) is one PLE level: each domain has its own specific
//! experts, all domains share some experts, and domain d's gate mixes [d's specific
//! experts + the shared experts] for d's tower. A sample runs through its own
//! domain's specific experts, gate and tower only.
//!
//! PLE stacks levels. Between levels the shared path has its own gate; here, since
//! a sample never runs other domains' experts, that shared gate mixes the sample's
//! own domain's specific experts and the shared experts (the paper's shared gate
//! mixes every domain's experts).

use super::config::{ModelConfig, PleConfig};
use super::experts::Experts;
use super::gates::Gate;
use super::{CtrModel, InputSpec, Inputs, Output, add_aux};
use crate::nn::linear::Mlp;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};

struct Level {
    shared: Experts,
    specific: Vec<Experts>,
    gates: Vec<Gate>,
    /// The shared path's gate (all levels but the last).
    shared_gate: Option<Gate>,
}

pub struct Ple {
    levels: Vec<Level>,
    towers: Vec<Mlp>,
}

impl Ple {
    pub fn new(
        name: &str,
        c: &PleConfig,
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        if c.levels == 0 || c.shared_experts == 0 || c.specific_experts == 0 {
            candle_core::bail!(
                "{name}: needs at least one level, one shared and one specific expert"
            );
        }
        let mut levels = Vec::new();
        let mut d_in = spec.width();
        let n_exp = c.specific_experts + c.shared_experts;
        for l in 0..c.levels {
            let p = format!("{name}.l{l}");
            let shared = Experts::new(
                ps,
                &format!("{p}.shared"),
                d_in,
                c.shared_experts,
                &c.expert_hidden,
                cfg.dropout,
                rng,
            )?;
            let mut specific = Vec::new();
            let mut gates = Vec::new();
            for d in 0..spec.domains {
                specific.push(Experts::new(
                    ps,
                    &format!("{p}.d{d}.specific"),
                    d_in,
                    c.specific_experts,
                    &c.expert_hidden,
                    cfg.dropout,
                    rng,
                )?);
                gates.push(Gate::new(
                    ps,
                    &format!("{p}.d{d}.gate"),
                    d_in,
                    n_exp,
                    &cfg.gate,
                    rng,
                )?);
            }
            let shared_gate = if l + 1 < c.levels {
                Some(Gate::new(
                    ps,
                    &format!("{p}.shared_gate"),
                    d_in,
                    n_exp,
                    &cfg.gate,
                    rng,
                )?)
            } else {
                None
            };
            d_in = shared.out_dim();
            levels.push(Level {
                shared,
                specific,
                gates,
                shared_gate,
            });
        }
        let towers = (0..spec.domains)
            .map(|d| {
                Mlp::new(
                    ps,
                    &format!("{name}.d{d}.tower"),
                    d_in,
                    &c.tower,
                    Some(1),
                    cfg.dropout,
                    rng,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Ple { levels, towers })
    }
}

impl CtrModel for Ple {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let mut own = inp.x.clone();
        let mut shared_in = inp.x.clone();
        let mut aux = None;
        for level in &self.levels {
            let sh = level.shared.forward(&shared_in, train, rng)?; // (n, S_sh, h)
            let mut own_parts = Vec::with_capacity(inp.segments.len());
            let mut shared_parts = Vec::new();
            for s in &inp.segments {
                let x_d = own.narrow(0, s.start, s.len)?;
                let spec = level.specific[s.domain].forward(&x_d, train, rng)?; // (len, S_sp, h)
                let ex = Tensor::cat(&[spec, sh.narrow(0, s.start, s.len)?], 1)?;
                let (h, a) = level.gates[s.domain].mix(&x_d, &ex, train, rng)?;
                aux = add_aux(aux, a)?;
                own_parts.push(h);
                if let Some(g) = &level.shared_gate {
                    let (h, a) = g.mix(&shared_in.narrow(0, s.start, s.len)?, &ex, train, rng)?;
                    aux = add_aux(aux, a)?;
                    shared_parts.push(h);
                }
            }
            own = Tensor::cat(&own_parts, 0)?;
            if !shared_parts.is_empty() {
                shared_in = Tensor::cat(&shared_parts, 0)?;
            }
        }
        let mut parts = Vec::with_capacity(inp.segments.len());
        for s in &inp.segments {
            parts.push(self.towers[s.domain].forward(
                &own.narrow(0, s.start, s.len)?,
                train,
                rng,
            )?);
        }
        Ok(Output {
            logits: Tensor::cat(&parts, 0)?.squeeze(1)?,
            aux,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::ModelName;
    use super::super::testutil::gradcheck;

    #[test]
    fn cgc_gradients() {
        gradcheck(ModelName::Cgc);
    }

    #[test]
    fn ple_gradients() {
        gradcheck(ModelName::Ple);
    }
}
