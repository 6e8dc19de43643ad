//! UserSparseExpert (the user-level expert family, after DSXiangLi/CTR): Bias
//! whose gate, on `fc`, keeps k of n experts: the noisy top-k gate (Shazeer et
//! al., ICLR 2017: 50 of 60, with the importance and load losses at 0.01) or
//! DSelect-k (Hazimeh et al., NeurIPS 2021; static or per-example), the gates
//! every gated model here uses. The reference zero-initialises the gate's
//! weights; here they start as every linear layer does.

use super::gates::{GateConfig, GateKind};
use super::sequence::{Extras, user_moe_impl, user_moe_model, user_moe_settings};

user_moe_settings! {
    /// `[model.user_sparse_expert]`: Bias's with 60 experts and its own gate.
    UserSparseExpertConfig {
        experts: 60,
        gate_hidden: vec![],
        bias_tower: vec![80, 40],
        /// `noisy_topk`, `dselect_k` (per-example) or `dselect_k_static`. Default `noisy_topk`.
        gate: GateKind = GateKind::NoisyTopk,
        /// Experts kept (noisy top-k) or selectors (DSelect-k). Default 50.
        k: usize = 50,
        /// Weight of each of the importance and load losses of noisy top-k. Default 0.01.
        balance_weight: f64 = 0.01,
        /// DSelect-k's smooth-step width. Default 1.
        gamma: f64 = 1.0,
    }
}

impl UserSparseExpertConfig {
    fn gate_config(&self) -> GateConfig {
        GateConfig {
            kind: self.gate,
            k: self.k,
            balance_weight: self.balance_weight,
            gamma: self.gamma,
        }
    }
}

user_moe_model!(
    UserSparseExpert,
    user_sparse_expert,
    |_, s: &UserSparseExpertConfig| Extras {
        group_tower: None,
        gate: s.gate_config(),
        loss_weights: None,
    }
);

user_moe_impl! {
    UserSparseExpert: UserSparseExpertConfig,
    about: "UserSparseExpert (the user-level expert family, after DSXiangLi/CTR): Bias with a\nsparse gate on fc: noisy top-k (50 of 60 experts, balance losses 0.01) or\nDSelect-k (`gate = \"dselect_k\"` or \"dselect_k_static\").",
    gated: false,
    validate(s, key, c) {
        if s.gate == GateKind::Softmax {
            c.bad(
                &format!("{key}.gate"),
                "\"softmax\"",
                "noisy_topk, dselect_k or dselect_k_static (a softmax gate is the Bias model)",
            );
        }
        c.at_least_one(&format!("{key}.k"), s.k);
        if s.gate == GateKind::NoisyTopk && s.k > s.experts {
            c.bad(
                &format!("{key}.k"),
                s.k,
                format!("at most {key}.experts = {}", s.experts),
            );
        }
        c.non_negative(&format!("{key}.balance_weight"), s.balance_weight);
        c.positive(&format!("{key}.gamma"), s.gamma);
    }
    shrink(s) {
        // Every expert kept: each gets a gradient in the check.
        s.k = s.experts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::config::ModelName;

    #[test]
    fn gradients() {
        crate::models::testutil::gradcheck(ModelName::UserSparseExpert);
    }

    #[test]
    fn dselect_gradients() {
        for kind in [GateKind::DselectK, GateKind::DselectKStatic] {
            crate::models::testutil::gradcheck_edit(ModelName::UserSparseExpert, |c| {
                c.user_sparse_expert.gate = kind;
                c.user_sparse_expert.k = 2;
            });
        }
    }
}
