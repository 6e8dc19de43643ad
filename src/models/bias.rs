//! Bias (the user-level expert family, after DSXiangLi/CTR): MOE plus a bias
//! tower, an MLP [80, 40] on the same `fc` whose logit is added to the
//! mixture's.

use super::config::ModelConfig;
use super::sequence::{Extras, UserMoe, user_moe_settings};
use super::{CtrModel, InputSpec, Inputs, Model, Output};
use crate::checks::Checks;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::Result;

user_moe_settings! {
    /// `[model.bias]`: MOE's, with a bias tower [80, 40].
    BiasConfig { experts: 50, gate_hidden: vec![80, 40], bias_tower: vec![80, 40] }
}

pub struct Bias(UserMoe);

impl Bias {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let extras = Extras {
            group_tower: None,
            gate: &cfg.gate,
            loss_weights: None,
        };
        Ok(Bias(UserMoe::new(
            "bias",
            &cfg.bias.shape(),
            extras,
            cfg,
            spec,
            ps,
            rng,
        )?))
    }
}

impl CtrModel for Bias {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        self.0.forward(inp, train, rng)
    }

    fn per_domain(&self) -> bool {
        false
    }
}

impl Model for Bias {
    type Settings = BiasConfig;
    const ABOUT: &'static str = "Bias (the user-level expert family, after DSXiangLi/CTR): MOE + a bias tower,\nan MLP [80, 40] on fc whose logit is added.";
    const HISTORY: bool = true;
    const GATED: bool = true;
    fn history(s: &Self::Settings) -> usize {
        s.history
    }
    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        s.check_shared(key, c);
    }
    #[cfg(test)]
    fn shrink(s: &mut Self::Settings) {
        s.shrink_shared();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Bias);
    }
}
