//! UserLoss (the user-level expert family, after DSXiangLi/CTR): Bias with 2
//! experts, each training row's loss weighted by its group (domain): fixed
//! weights, one per domain (the reference's are 2, 2 and 0.2 for the short,
//! medium and long history groups, as configs/experiments/nextitem/family.toml
//! sets them; by default every domain weighs 1, so the model runs on any
//! recipe). The weights apply to training only; valid and test are scored
//! unweighted. The domain input (none / id / fixed) is one of
//! the fields, as in MOE.

use super::config::ModelConfig;
use super::sequence::{Extras, user_moe_impl, user_moe_model, user_moe_settings};

user_moe_settings! {
    /// `[model.user_loss]`: Bias's with 2 experts, and the weights.
    UserLossConfig {
        experts: 2,
        gate_hidden: vec![80, 40],
        bias_tower: vec![80, 40],
        /// One loss weight per domain, in the dataset's domain order; empty: 1 each.
        /// Default empty (the reference's history groups: [2, 2, 0.2]).
        group_weights: Vec<f32> = vec![],
    }
}

user_moe_model!(
    UserLoss,
    user_loss,
    |cfg: &ModelConfig, s: &UserLossConfig| Extras {
        group_tower: None,
        gate: cfg.gate.clone(),
        loss_weights: (!s.group_weights.is_empty()).then(|| s.group_weights.clone()),
    }
);

user_moe_impl! {
    UserLoss: UserLossConfig,
    about: "UserLoss (the user-level expert family, after DSXiangLi/CTR): Bias with 2 experts;\neach training row's loss weighted by its domain (`group_weights`, one per domain;\nthe reference's history groups: 2, 2, 0.2).",
    gated: true,
    validate(s, key, c) {
        for (i, w) in s.group_weights.iter().enumerate() {
            c.non_negative(&format!("{key}.group_weights[{i}]"), f64::from(*w));
        }
    }
    shrink(s) {
        s.group_weights = vec![2.0, 1.0, 0.5, 0.2];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::UserLoss);
    }
}
