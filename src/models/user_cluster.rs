//! UserCluster (the user-level expert family, after DSXiangLi/CTR): latent user
//! groups learned from the history. For each of the two sequences (items,
//! categories): the masked mean of the history is assigned softly to G groups
//! (softmax of a linear map); the group embedding table gives the hard group's
//! embedding (its argmax) and, through the soft assignment, a reconstruction
//! σ(W·(a·T)) pulled towards the attention output by a similarity loss
//! max(1 − mean cos, 0); a KL term keeps the batch's mean assignment near
//! uniform. The personal (attention) and group embeddings are mixed by a 2-way
//! softmax of their dot products with the target, and both mixtures join `fc`;
//! then Bias's experts, gate, tower and bias tower.
//!
//! Differences from the reference: the history is mean-pooled without its
//! residual dense stack, and the KL's target is the uniform distribution (the
//! reference draws an unnormalised random vector each step).

use super::config::ModelConfig;
use super::sequence::{Backbone, MoeHead, apply, apply_relu, user_moe_impl, user_moe_settings};
use super::{CtrModel, InputSpec, Inputs, Output, add_aux};
use crate::nn::linear::{Linear, Mlp};
use crate::nn::ops::{sigmoid, softmax};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{D, Result, Tensor};

user_moe_settings! {
    /// `[model.user_cluster]`: Bias's, and the groups.
    UserClusterConfig {
        experts: 50,
        gate_hidden: vec![80, 40],
        bias_tower: vec![80, 40],
        /// Latent user groups. Default 50.
        groups: usize = 50,
        /// Weight of the similarity loss (per sequence). Default 1.
        similarity_weight: f64 = 1.0,
        /// Weight of the KL cluster-balance loss (per sequence); 0: off. Default 1.
        cluster_weight: f64 = 1.0,
    }
}

/// One sequence's groups.
struct Groups {
    assign: Linear,
    table: Tensor,
    soft: Linear,
    personal: Linear,
    group: Linear,
}

impl Groups {
    fn new(ps: &mut ParamStore, name: &str, d: usize, g: usize, rng: &mut Rng) -> Result<Self> {
        Ok(Groups {
            assign: Linear::new(ps, &format!("{name}.assign"), d, g, rng)?,
            table: ps.normal(format!("{name}.table"), &[g, d], 0.1, rng)?,
            soft: Linear::new(ps, &format!("{name}.soft"), d, d, rng)?,
            personal: Linear::new(ps, &format!("{name}.personal"), d, d, rng)?,
            group: Linear::new(ps, &format!("{name}.group"), d, d, rng)?,
        })
    }

    /// The mixed embedding (n, d), the similarity loss and the KL term.
    fn forward(
        &self,
        hist: &Tensor,
        mask: &Tensor,
        att: &Tensor,
        target: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let m = mask.unsqueeze(2)?;
        let count = mask.sum_keepdim(1)?.maximum(1.0)?;
        let pooled = hist.broadcast_mul(&m)?.sum(1)?.broadcast_div(&count)?;
        let a = softmax(&apply(&self.assign, &pooled)?)?; // (n, G)
        let hard = self
            .table
            .index_select(&a.argmax(D::Minus1)?, 0)?
            .contiguous()?;
        let soft = sigmoid(&apply(&self.soft, &a.matmul(&self.table)?)?)?;
        let dot = (&soft * att)?.sum(1)?;
        // The 1e-8 inside the root: an all-zero attention output (every ReLU off)
        // would otherwise give the root an infinite derivative.
        let norms = ((soft.sqr()?.sum(1)? + 1e-8)? * (att.sqr()?.sum(1)? + 1e-8)?)?.sqrt()?;
        let cos = (dot / norms)?.mean_all()?;
        let similarity = (1.0 - cos)?.relu()?;
        let p = a.mean(0)?;
        let groups = p.dim(0)? as f64;
        let kl = (&p * (&p * groups)?.log()?)?.sum_all()?;
        let personal = apply_relu(&self.personal, att)?;
        let group = apply_relu(&self.group, &hard)?;
        let sp = (&personal * target)?.sum_keepdim(1)?;
        let sg = (&group * target)?.sum_keepdim(1)?;
        let w = softmax(&Tensor::cat(&[&sp, &sg], 1)?)?;
        let out = (personal.broadcast_mul(&w.narrow(1, 0, 1)?)?
            + group.broadcast_mul(&w.narrow(1, 1, 1)?)?)?;
        Ok((out, similarity, kl))
    }
}

pub struct UserCluster {
    backbone: Backbone,
    items: Groups,
    cates: Groups,
    head: MoeHead,
    bias: Option<Mlp>,
    similarity_weight: f64,
    cluster_weight: f64,
}

impl UserCluster {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        let s = &cfg.user_cluster;
        let name = "user_cluster";
        let backbone = Backbone::new(ps, name, spec, s.attention, true, rng)?;
        let d = spec.dim;
        let items = Groups::new(ps, &format!("{name}.items"), d, s.groups, rng)?;
        let cates = Groups::new(ps, &format!("{name}.cates"), d, s.groups, rng)?;
        let w = backbone.width() + 2 * d;
        let head = MoeHead::new(ps, name, w, &s.shape(), &cfg.gate, cfg.dropout, rng)?;
        let bias = match s.bias_tower.as_slice() {
            [] => None,
            h => Some(Mlp::new(
                ps,
                &format!("{name}.bias_tower"),
                w,
                h,
                Some(1),
                cfg.dropout,
                rng,
            )?),
        };
        Ok(UserCluster {
            backbone,
            items,
            cates,
            head,
            bias,
            similarity_weight: s.similarity_weight,
            cluster_weight: s.cluster_weight,
        })
    }
}

impl CtrModel for UserCluster {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let seq = self.backbone.forward(inp)?;
        let (gi, si, ki) = self
            .items
            .forward(&seq.history, &seq.mask, &seq.item_att, &seq.item)?;
        let (gc, sc, kc) =
            self.cates
                .forward(&seq.history_cats, &seq.mask, &seq.cate_att, &seq.cate)?;
        let fc = Tensor::cat(&[&seq.fc, &gi, &gc], 1)?;
        let (mut logits, aux) = self.head.forward(&fc, train, rng)?;
        if let Some(b) = &self.bias {
            logits = (logits + b.forward(&fc, train, rng)?.squeeze(1)?)?;
        }
        let mut extra = ((si + sc)? * self.similarity_weight)?;
        if self.cluster_weight > 0.0 {
            extra = (extra + ((ki + kc)? * self.cluster_weight)?)?;
        }
        Ok(Output {
            logits,
            aux: add_aux(aux, Some(extra))?,
        })
    }

    fn per_domain(&self) -> bool {
        false
    }
}

user_moe_impl! {
    UserCluster: UserClusterConfig,
    about: "UserCluster (the user-level expert family, after DSXiangLi/CTR): 50 latent user\ngroups from the mean-pooled history (items and categories), a similarity loss\nand a KL balance loss; personal and group embeddings mixed against the target\njoin fc; then Bias.",
    gated: true,
    validate(s, key, c) {
        c.at_least_one(&format!("{key}.groups"), s.groups);
        c.non_negative(&format!("{key}.similarity_weight"), s.similarity_weight);
        c.non_negative(&format!("{key}.cluster_weight"), s.cluster_weight);
    }
    shrink(s) {
        s.groups = 3;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::UserCluster);
    }
}
