//! UserInput (the user-level expert family, after DSXiangLi/CTR): Bias plus a
//! third tower, an MLP [80, 40] on [group input; fc], its logit added. The
//! group input is the run's domain input: the domain id (the reference's user
//! group embedding), a fixed embedding (an LLM's embedding of the group's
//! description), or none (the tower then reads fc alone). It reads the domain
//! input there only: `fc` leaves it out.

use super::config::ModelConfig;
use super::sequence::{Extras, user_moe_impl, user_moe_model, user_moe_settings};

user_moe_settings! {
    /// `[model.user_input]`: Bias's, with the group tower.
    UserInputConfig {
        experts: 50,
        gate_hidden: vec![80, 40],
        bias_tower: vec![80, 40],
        /// The group tower on [group input; fc]. Default [80, 40].
        group_tower: Vec<usize> = vec![80, 40],
    }
}

user_moe_model!(
    UserInput,
    user_input,
    |cfg: &ModelConfig, s: &UserInputConfig| Extras {
        group_tower: Some(s.group_tower.clone()),
        gate: cfg.gate.clone(),
        loss_weights: None,
    }
);

user_moe_impl! {
    UserInput: UserInputConfig,
    about: "UserInput (the user-level expert family, after DSXiangLi/CTR): Bias + a group tower,\nan MLP [80, 40] on [group input; fc] whose logit is added; the group input is the\ndomain input (id, or a fixed LLM embedding of the group's description).",
    gated: true,
    validate(s, key, c) {
        c.widths(&format!("{key}.group_tower"), &s.group_tower, true);
    }
    shrink(s) {
        s.group_tower = vec![3];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::UserInput);
    }
}
