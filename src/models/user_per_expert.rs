//! UserPerExpert (the user-level expert family, after DSXiangLi/CTR; virtual
//! kernel experts, MVKE, Xu et al., "Mixture of Virtual-Kernel Experts for
//! Multi-Objective User Profile Modeling", KDD 2022): K learned kernel vectors
//! each attend over the field embeddings (the run's fields and the two target
//! attention outputs), each feeding its own expert MLP [80, 40]; a gate attends
//! from the target item over the kernels, mixing the experts' outputs
//! (projected back to the embedding size); the mixture → MLP [80, 40] → logit,
//! plus a bias tower on the fields.

use super::config::ModelConfig;
use super::sequence::{Attention, Backbone, ExpertBank};
use super::{CtrModel, InputSpec, Inputs, Model, Output};
use crate::checks::Checks;
use crate::nn::linear::Mlp;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UserPerExpertConfig {
    /// Most recent history items attended over. Default 50.
    pub history: usize,
    /// Width of the attentions' query and key projections. Default 80.
    pub attention: usize,
    /// Kernels, one expert each. Default 50.
    pub kernels: usize,
    /// Standard deviation of the kernels' initialisation. Default 0.001.
    pub kernel_std: f64,
    /// Each expert's layers. Default [80, 40].
    pub expert_hidden: Vec<usize>,
    /// MLP from the mixture to the logit. Default [80, 40].
    pub hidden: Vec<usize>,
    /// The bias tower on the fields (empty: none). Default [80, 40].
    pub bias_tower: Vec<usize>,
}

impl Default for UserPerExpertConfig {
    fn default() -> Self {
        UserPerExpertConfig {
            history: 50,
            attention: 80,
            kernels: 50,
            kernel_std: 0.001,
            expert_hidden: vec![80, 40],
            hidden: vec![80, 40],
            bias_tower: vec![80, 40],
        }
    }
}

pub struct UserPerExpert {
    backbone: Backbone,
    kernels: Tensor,
    kernel_attention: Attention,
    experts: ExpertBank,
    gate: Attention,
    tower: Mlp,
    bias: Option<Mlp>,
}

impl UserPerExpert {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let s = &cfg.user_per_expert;
        let name = "user_per_expert";
        let d = spec.dim;
        let backbone = Backbone::new(ps, name, spec, s.attention, true, rng)?;
        let kernels = ps.normal(
            format!("{name}.kernels"),
            &[s.kernels, d],
            s.kernel_std,
            rng,
        )?;
        let kernel_attention = Attention::new(
            ps,
            &format!("{name}.kernel_attention"),
            d,
            d,
            d,
            d,
            s.attention,
            rng,
        )?;
        let experts = ExpertBank::new(
            ps,
            &format!("{name}.experts"),
            d,
            s.kernels,
            &s.expert_hidden,
            cfg.dropout,
            false,
            rng,
        )?;
        let gate = Attention::new(
            ps,
            &format!("{name}.gate"),
            d,
            d,
            experts.out_dim(),
            d,
            s.attention,
            rng,
        )?;
        let tower = Mlp::new(
            ps,
            &format!("{name}.tower"),
            d,
            &s.hidden,
            Some(1),
            cfg.dropout,
            rng,
        )?;
        let bias = match s.bias_tower.as_slice() {
            [] => None,
            h => Some(Mlp::new(
                ps,
                &format!("{name}.bias_tower"),
                backbone.width(),
                h,
                Some(1),
                cfg.dropout,
                rng,
            )?),
        };
        Ok(UserPerExpert {
            backbone,
            kernels,
            kernel_attention,
            experts,
            gate,
            tower,
            bias,
        })
    }
}

impl CtrModel for UserPerExpert {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let seq = self.backbone.forward(inp)?;
        let fields = Tensor::cat(
            &[
                &self.backbone.fields(inp)?,
                &seq.item_att.unsqueeze(1)?,
                &seq.cate_att.unsqueeze(1)?,
            ],
            1,
        )?; // (n, F, d)
        let n = fields.dim(0)?;
        let per_row = |t: Tensor| -> Result<Tensor> {
            let (a, b) = t.dims2()?;
            t.unsqueeze(0)?.broadcast_as((n, a, b))?.contiguous()
        };
        let att = &self.kernel_attention;
        let q = per_row(att.query(&self.kernels)?)?; // (n, K, w)
        let w = att.weights(&q, &att.key(&fields)?, None)?; // (n, K, F)
        let z = w.matmul(&att.value(&fields)?)?; // (n, K, d)
        let e = self.experts.forward(&z, train, rng)?; // (n, K, h)
        let gq = self.gate.query(&seq.item.unsqueeze(1)?)?; // (n, 1, w)
        let gk = per_row(self.gate.key(&self.kernels)?)?; // (n, K, w)
        let gw = self.gate.weights(&gq, &gk, None)?; // (n, 1, K)
        let mix = gw.matmul(&self.gate.value(&e)?)?.squeeze(1)?; // (n, d)
        let mut logits = self.tower.forward(&mix, train, rng)?.squeeze(1)?;
        if let Some(b) = &self.bias {
            logits = (logits + b.forward(&seq.fc, train, rng)?.squeeze(1)?)?;
        }
        Ok(Output { logits, aux: None })
    }

    fn per_domain(&self) -> bool {
        false
    }
}

impl Model for UserPerExpert {
    type Settings = UserPerExpertConfig;
    const ABOUT: &'static str = "UserPerExpert (the user-level expert family, after DSXiangLi/CTR; MVKE): 50 kernel\nvectors attend over the fields, one expert [80, 40] each; a gate attends from the\ntarget item over the kernels; the mixture -> MLP [80, 40] -> logit, + a bias tower.";
    const HISTORY: bool = true;
    const HISTORY_TABLES: bool = true;
    fn history(s: &Self::Settings) -> usize {
        s.history
    }
    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        c.at_least_one(&format!("{key}.history"), s.history);
        c.at_least_one(&format!("{key}.attention"), s.attention);
        c.at_least_one(&format!("{key}.kernels"), s.kernels);
        c.widths(&format!("{key}.expert_hidden"), &s.expert_hidden, true);
        c.widths(&format!("{key}.hidden"), &s.hidden, false);
        c.widths(&format!("{key}.bias_tower"), &s.bias_tower, false);
        c.positive(&format!("{key}.kernel_std"), s.kernel_std);
    }
    #[cfg(test)]
    fn shrink(s: &mut Self::Settings) {
        s.attention = 8;
        s.kernels = 3;
        s.kernel_std = 0.5;
        s.expert_hidden = vec![4, 3];
        s.hidden = vec![3];
        s.bias_tower = vec![5];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::UserPerExpert);
    }
}
