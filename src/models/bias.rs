//! Bias (the user-level expert family, after DSXiangLi/CTR): MOE plus a bias
//! tower, an MLP [80, 40] on the same `fc` whose logit is added to the
//! mixture's.

use super::config::ModelConfig;
use super::sequence::{Extras, user_moe_impl, user_moe_model, user_moe_settings};

user_moe_settings! {
    /// `[model.bias]`: MOE's, with a bias tower [80, 40].
    BiasConfig { experts: 50, gate_hidden: vec![80, 40], bias_tower: vec![80, 40] }
}

user_moe_model!(Bias, bias, |cfg: &ModelConfig, _| Extras {
    group_tower: None,
    gate: cfg.gate.clone(),
    loss_weights: None,
});

user_moe_impl! {
    Bias: BiasConfig,
    about: "Bias (the user-level expert family, after DSXiangLi/CTR): MOE + a bias tower,\nan MLP [80, 40] on fc whose logit is added.",
    gated: true,
    validate(s, key, c) {}
    shrink(s) {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Bias);
    }
}
