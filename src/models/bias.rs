//! Bias (the user-level expert family, after DSXiangLi/CTR): MOE plus a bias
//! tower, an MLP [80, 40] on the same `fc` whose logit is added to the
//! mixture's.

use super::Model;
use super::config::ModelConfig;
use super::sequence::{Extras, user_moe_model, user_moe_settings};
use crate::checks::Checks;

user_moe_settings! {
    /// `[model.bias]`: MOE's, with a bias tower [80, 40].
    BiasConfig { experts: 50, gate_hidden: vec![80, 40], bias_tower: vec![80, 40] }
}

user_moe_model!(Bias, bias, |cfg: &ModelConfig, _| Extras {
    group_tower: None,
    gate: cfg.gate.clone(),
    loss_weights: None,
});

impl Model for Bias {
    type Settings = BiasConfig;
    const ABOUT: &'static str = "Bias (the user-level expert family, after DSXiangLi/CTR): MOE + a bias tower,\nan MLP [80, 40] on fc whose logit is added.";
    const HISTORY: bool = true;
    const HISTORY_TABLES: bool = true;
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
