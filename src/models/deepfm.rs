//! DeepFM (Guo et al., IJCAI 2017): first-order weights + factorisation-machine
//! pairwise interactions of the field embeddings + a DNN, summed into one logit.

use super::config::ModelConfig;
use super::{CtrModel, InputSpec, Inputs, Model, Output};
use crate::checks::Checks;
use crate::nn::linear::Mlp;
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use candle_core::{Result, Tensor};

pub struct DeepFm {
    mlp: Mlp,
    bias: Tensor,
}

impl DeepFm {
    pub fn new(
        cfg: &ModelConfig,
        spec: &InputSpec,
        ps: &mut ParamStore,
        rng: &mut Rng,
    ) -> Result<Self> {
        Ok(DeepFm {
            mlp: Mlp::new(
                ps,
                "deepfm.mlp",
                spec.width(),
                &cfg.deepfm.hidden,
                Some(1),
                cfg.dropout,
                rng,
            )?,
            bias: ps.fill("deepfm.bias", &[1], 0.0)?,
        })
    }
}

/// ½ Σ_k [(Σ_f e_fk)² − Σ_f e_fk²] for fields (n, F, d) → (n).
pub fn fm_interaction(fields: &Tensor) -> Result<Tensor> {
    let sum_sq = fields.sum(1)?.sqr()?;
    let sq_sum = fields.sqr()?.sum(1)?;
    (sum_sq - sq_sum)?.sum(1)? * 0.5
}

impl CtrModel for DeepFm {
    fn forward(&self, inp: &Inputs, train: bool, rng: &mut Rng) -> Result<Output> {
        let first = inp
            .first_order
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("DeepFM needs first-order weights".into()))?
            .sum(1)?;
        let deep = self.mlp.forward(&inp.x, train, rng)?.squeeze(1)?;
        let logits = ((first + fm_interaction(&inp.fields)?)? + deep)?.broadcast_add(&self.bias)?;
        Ok(Output { logits, aux: None })
    }

    /// One network for every domain (the domain, if any, is one of the fields).
    fn per_domain(&self) -> bool {
        false
    }
}

impl Model for DeepFm {
    type Settings = super::dnn::DnnConfig;
    const ABOUT: &'static str =
        "DeepFM (Guo et al., IJCAI 2017): first-order + FM interactions + DNN.";
    const FIRST_ORDER: bool = true;
    fn validate(s: &Self::Settings, key: &str, c: &mut Checks) {
        c.widths(&format!("{key}.hidden"), &s.hidden, false);
    }

    #[cfg(test)]
    fn shrink(s: &mut Self::Settings) {
        s.hidden = vec![5];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn fm_by_hand() {
        // Two fields, d = 2: e1 = (1, 2), e2 = (3, −1) → <e1, e2> = 3 − 2 = 1.
        let f = Tensor::new(&[[[1f64, 2.], [3., -1.]]], &Device::Cpu).unwrap();
        let v = fm_interaction(&f).unwrap().to_vec1::<f64>().unwrap();
        assert!((v[0] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn gradients() {
        super::super::testutil::gradcheck(super::super::config::ModelName::Deepfm);
    }
}
