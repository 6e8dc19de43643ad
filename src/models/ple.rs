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
//!
//! Conditioned (`conditioning = "domain"`, or `"auto"` on fixed LLM embeddings) the domain reaches the shared parameters: each
//! level has one gate over [x; e_d] (x holds the domain slot) for all domains,
//! and one tower generated from e_d ([`GeneratedMlp`]) replaces the per-domain
//! towers; the specific experts stay per domain. A domain held out of training
//! has no trained specific experts, so its rows go through the shared experts
//! alone, with the gate's weights on them renormalised; in training a domain's
//! rows take that path at the rate `shared_only`, so the shared path learns to
//! stand alone.

use super::conditioning::GeneratedMlp;
use super::config::ModelConfig;
use super::experts::Experts;
use super::gates::Gate;
use super::{CtrModel, InputSpec, Inputs, Model, Output, add_aux};
use crate::checks::Checks;
use crate::nn::linear::Mlp;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

struct Level {
    shared: Experts,
    specific: Vec<Experts>,
    /// One gate per domain, or (conditioned) one for all.
    gates: Vec<Gate>,
    /// The shared path's gate (all levels but the last).
    shared_gate: Option<Gate>,
}

enum Towers {
    PerDomain(Vec<Mlp>),
    Generated(GeneratedMlp),
}

pub struct Ple {
    levels: Vec<Level>,
    towers: Towers,
    /// Conditioned: the rate of shared-only segments in training.
    shared_only: Option<f64>,
    held_out: Vec<usize>,
}

/// Mix with the gate's weights on the last `shared` experts only, renormalised:
/// the path of a domain without (trained) specific experts.
fn mix_shared(
    gate: &Gate,
    x: &Tensor,
    shared: &Tensor,
    train: bool,
    rng: &mut Rng,
) -> Result<(Tensor, Option<Tensor>)> {
    let g = gate.forward(x, train, rng)?;
    let k = shared.dim(1)?;
    let all = g.weights.dim(1)?;
    let w = g.weights.narrow(1, all - k, k)?;
    let w = w.broadcast_div(&(w.sum_keepdim(1)? + 1e-12)?)?;
    Ok((crate::nn::fused::mix(shared, &w)?, g.aux))
}

impl Ple {
    /// PLE (or CGC, by `name`) with settings `c`.
    pub fn with_settings<L: DefaultLevels>(
        name: &str,
        c: &PleConfig<L>,
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
        let conditioned = cfg.conditioned(c.conditioning);
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
                if !conditioned {
                    gates.push(Gate::new(
                        ps,
                        &format!("{p}.d{d}.gate"),
                        d_in,
                        n_exp,
                        &cfg.gate,
                        rng,
                    )?);
                }
            }
            if conditioned {
                // Above the first level the gate reads the level's input and
                // the domain vector.
                let width = if l > 0 && spec.has_domain {
                    d_in + spec.dim
                } else {
                    d_in
                };
                gates.push(Gate::new(
                    ps,
                    &format!("{p}.gate"),
                    width,
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
        let towers = if conditioned {
            Towers::Generated(GeneratedMlp::new(
                ps,
                &format!("{name}.tower"),
                spec.dim,
                d_in,
                &c.tower,
                c.rank,
                cfg.dropout,
                rng,
            )?)
        } else {
            Towers::PerDomain(
                (0..spec.domains)
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
                    .collect::<Result<_>>()?,
            )
        };
        Ok(Ple {
            levels,
            towers,
            shared_only: conditioned.then_some(c.shared_only),
            held_out: spec.held_out.clone(),
        })
    }
}

impl CtrModel for Ple {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let mut own = inp.x.clone();
        let mut shared_in = inp.x.clone();
        let mut aux = None;
        // Conditioned: which segments take the shared experts alone (held out of
        // training, or drawn at the rate `shared_only` in training), decided once
        // for every level.
        let alone: Vec<bool> = inp
            .segments
            .iter()
            .map(|s| match self.shared_only {
                None => false,
                // Held out of training, or added after it (`pipeline predict`
                // on a new domain): no specific experts of its own.
                Some(rate) => {
                    self.held_out.contains(&s.domain)
                        || s.domain >= self.levels[0].specific.len()
                        || (train && rng.uniform() < rate)
                }
            })
            .collect();
        for (li, level) in self.levels.iter().enumerate() {
            let sh = level.shared.forward(&shared_in, train, rng)?; // (n, S_sh, h)
            let mut own_parts = Vec::with_capacity(inp.segments.len());
            let mut shared_parts = Vec::new();
            for (s, &alone) in inp.segments.iter().zip(&alone) {
                let x_d = own.narrow(0, s.start, s.len)?;
                let sh_d = sh.narrow(0, s.start, s.len)?;
                let (gate, gate_in) = if self.shared_only.is_some() {
                    let g_in = match (&inp.domain, li) {
                        (Some(e), l) if l > 0 => {
                            Tensor::cat(&[&x_d, &e.narrow(0, s.start, s.len)?], 1)?
                        }
                        _ => x_d.clone(),
                    };
                    (&level.gates[0], g_in)
                } else {
                    (&level.gates[s.domain], x_d.clone())
                };
                let ex = if alone {
                    let (h, a) = mix_shared(gate, &gate_in, &sh_d, train, rng)?;
                    aux = add_aux(aux, a)?;
                    own_parts.push(h);
                    None
                } else {
                    let spec = level.specific[s.domain].forward(&x_d, train, rng)?; // (len, S_sp, h)
                    let ex = Tensor::cat(&[spec, sh_d.clone()], 1)?;
                    let (h, a) = gate.mix(&gate_in, &ex, train, rng)?;
                    aux = add_aux(aux, a)?;
                    own_parts.push(h);
                    Some(ex)
                };
                if let Some(g) = &level.shared_gate {
                    let sx = shared_in.narrow(0, s.start, s.len)?;
                    let (h, a) = match ex {
                        Some(ex) => g.mix(&sx, &ex, train, rng)?,
                        None => mix_shared(g, &sx, &sh_d, train, rng)?,
                    };
                    aux = add_aux(aux, a)?;
                    shared_parts.push(h);
                }
            }
            own = Tensor::cat(&own_parts, 0)?;
            if !shared_parts.is_empty() {
                shared_in = Tensor::cat(&shared_parts, 0)?;
            }
        }
        let logits = match &self.towers {
            Towers::PerDomain(towers) => {
                let mut parts = Vec::with_capacity(inp.segments.len());
                for s in &inp.segments {
                    parts.push(towers[s.domain].forward(
                        &own.narrow(0, s.start, s.len)?,
                        train,
                        rng,
                    )?);
                }
                Tensor::cat(&parts, 0)?
            }
            Towers::Generated(t) => {
                t.forward(&own, inp.domain.as_ref(), &inp.segments, train, rng)?
            }
        };
        Ok(Output {
            logits: logits.squeeze(1)?,
            aux,
        })
    }

    fn per_domain(&self) -> bool {
        self.shared_only.is_none()
    }
}

/// `[model.cgc]` and `[model.ple]`: CGC is PLE with one level (`L` gives the
/// default of `levels`: [`OneLevel`] for CGC, [`TwoLevels`] for PLE).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, bound = "")]
pub struct PleConfig<L: DefaultLevels> {
    /// Extraction levels. Default 1 for CGC, 2 for PLE.
    pub levels: usize,
    /// Specific experts per domain. Default 2.
    pub specific_experts: usize,
    /// Shared experts. Default 1.
    pub shared_experts: usize,
    /// Expert hidden layers. Default [16].
    pub expert_hidden: Vec<usize>,
    /// Tower hidden layers (per domain, or the one generated tower). Default [8].
    pub tower: Vec<usize>,
    /// `auto` (default: `domain` on fixed LLM embeddings, else `none`), `none`
    /// (classic) or `domain` (shared gate and generated tower).
    pub conditioning: Conditioning,
    /// `domain` only: the rate at which, in training, a domain's rows go through
    /// the shared experts alone (as an unseen domain's do, having no specific
    /// experts trained). Default 0.2.
    pub shared_only: f64,
    /// `domain` only: rank of the generated tower's weight updates. Default 4.
    pub rank: usize,
    #[serde(skip)]
    default_levels: std::marker::PhantomData<L>,
}

/// The default number of PLE levels, as a type.
pub trait DefaultLevels: Clone + std::fmt::Debug + PartialEq {
    const LEVELS: usize;
}

/// CGC: one level.
#[derive(Clone, Debug, PartialEq)]
pub struct OneLevel;
impl DefaultLevels for OneLevel {
    const LEVELS: usize = 1;
}

/// PLE: two levels.
#[derive(Clone, Debug, PartialEq)]
pub struct TwoLevels;
impl DefaultLevels for TwoLevels {
    const LEVELS: usize = 2;
}

impl<L: DefaultLevels> Default for PleConfig<L> {
    fn default() -> Self {
        PleConfig {
            levels: L::LEVELS,
            specific_experts: 2,
            shared_experts: 1,
            expert_hidden: vec![16],
            tower: vec![8],
            conditioning: Conditioning::Auto,
            shared_only: 0.2,
            rank: 4,
            default_levels: std::marker::PhantomData,
        }
    }
}

/// How CGC/PLE see the domain: `none` (classic: a gate and a tower per domain),
/// `domain` (one gate over [x; e_d] and one tower generated from e_d, shared by
/// every domain; the specific experts stay per domain), or `auto`: `domain` on
/// fixed (LLM) domain embeddings, `none` on the id or without a domain input.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Conditioning {
    Auto,
    None,
    Domain,
}

fn validate_ple<L: DefaultLevels>(s: &PleConfig<L>, key: &str, c: &mut Checks) {
    c.at_least_one(&format!("{key}.levels"), s.levels);
    c.at_least_one(&format!("{key}.specific_experts"), s.specific_experts);
    c.at_least_one(&format!("{key}.shared_experts"), s.shared_experts);
    c.widths(&format!("{key}.expert_hidden"), &s.expert_hidden, true);
    c.widths(&format!("{key}.tower"), &s.tower, false);
    c.fraction(&format!("{key}.shared_only"), s.shared_only);
    c.at_least_one(&format!("{key}.rank"), s.rank);
}

/// CGC in the registry: PLE with its own settings table, one level by default.
pub struct Cgc;

impl Cgc {
    /// The registry builds every model by `new`; CGC's is a one-level [`Ple`].
    #[allow(clippy::new_ret_no_self)]
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Ple> {
        Ple::with_settings("cgc", &cfg.cgc, cfg, spec, ps, rng)
    }
}

impl Ple {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Ple> {
        Ple::with_settings("ple", &cfg.ple, cfg, spec, ps, rng)
    }
}

impl Model for Cgc {
    type Settings = PleConfig<OneLevel>;
    const ABOUT: &'static str = "CGC (Tang et al., RecSys 2020): 2 specific experts per domain + 1 shared.\nClassic form (on the domain id): a gate and a tower per domain. Conditioned form\n(`conditioning = \"domain\"`, and what \"auto\" picks on fixed LLM embeddings, e.g.\n`pipeline train-cgc --domain-embeddings FILE`): one gate over [x; domain vector]\nand one tower generated from the domain vector, shared by every domain; an\nunseen domain goes through the shared experts alone.";
    const GATED: bool = true;
    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        validate_ple(s, key, c);
    }
}

impl Model for Ple {
    type Settings = PleConfig<TwoLevels>;
    const ABOUT: &'static str = "PLE (Tang et al., RecSys 2020): two stacked CGC levels.";
    const GATED: bool = true;
    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        validate_ple(s, key, c);
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

    /// Conditioned PLE without a domain input: the upper levels' gates read the
    /// level's input alone.
    #[test]
    fn conditioned_ple_runs_without_a_domain_input() {
        use super::super::config::ModelConfig;
        use super::super::{InputSpec, build, testutil::batch};
        use super::Conditioning;
        use crate::nn::params::ParamStore;
        use crate::nn::rng::Rng;
        use candle_core::{DType, Device};
        let spec = InputSpec {
            slots: 4,
            dim: 3,
            domains: 4,
            has_domain: false,
            held_out: vec![1],
        };
        let mut cfg = ModelConfig {
            name: ModelName::Ple,
            ..ModelConfig::default()
        };
        cfg.ple.conditioning = Conditioning::Domain;
        let mut ps = ParamStore::new(DType::F64, &Device::Cpu);
        let model = build(&cfg, &spec, &mut ps, &mut Rng::new(1)).unwrap();
        let mut inp = batch(&spec, 10, 2);
        inp.domain = None;
        let out = model.forward(&inp, true, &mut Rng::new(3)).unwrap();
        assert_eq!(out.logits.dims(), &[10]);
    }

    #[test]
    fn conditioned_gradients() {
        super::super::testutil::gradcheck_with(ModelName::Cgc, true);
        super::super::testutil::gradcheck_with(ModelName::Ple, true);
    }
}
