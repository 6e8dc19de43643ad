//! MOE (the user-level family's base; Jacobs et al., "Adaptive Mixtures of Local
//! Experts", 1991, as in the CTR code this project grew from): 50 experts, each
//! an MLP [80, 40] on `fc` (fields + target attention over the history), one
//! softmax gate from an MLP [80, 40] on `fc`, the mixture → MLP [80, 40] → logit.
//! The domain input (none / id / fixed embedding) is one of the fields.

use super::config::ModelConfig;
use super::sequence::{Extras, user_moe_impl, user_moe_model, user_moe_settings};

user_moe_settings! {
    /// `[model.moe]`: 50 experts, no bias tower.
    MoeConfig { experts: 50, gate_hidden: vec![80, 40], bias_tower: vec![] }
}

user_moe_model!(Moe, moe, |cfg: &ModelConfig, _| Extras {
    group_tower: None,
    gate: cfg.gate.clone(),
    loss_weights: None,
});

user_moe_impl! {
    Moe: MoeConfig,
    about: "MOE (the user-level expert family's base, after DSXiangLi/CTR): 50 experts [80, 40]\non fc = [fields; target attention over the history's items and categories],\na softmax gate from an MLP [80, 40] on fc, the mixture -> MLP [80, 40] -> logit.",
    gated: true,
    validate(s, key, c) {}
    shrink(s) {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Moe);
    }
}
