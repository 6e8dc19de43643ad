//! Scoring domains the run never trained on: from their own domain input
//! (models whose networks every domain shares), or as the kernel-weighted mixture
//! of the seen domains' networks (models with per-domain experts, gates or
//! towers); and adding such a domain to a finished run (`pipeline predict`).

use super::{Predictions, Trainer, Which};
use crate::data::dataset::SplitData;
use crate::metrics;
use crate::nn::ops::sigmoid;
use crate::nn::rng::Rng;
use anyhow::{Context, Result, bail};
use candle_core::Tensor;

/// A held-out domain and the kernel weight of each seen domain, (domain, weight).
pub type UnseenWeights = (usize, Vec<(usize, f64)>);

impl Trainer {
    /// Kernel weights of the seen domains (those with train rows) for each
    /// held-out domain: a Gaussian kernel between the fixed domain embeddings,
    /// softmax_j(−½‖(e_u − e_j)·w‖²) with w from `train.unseen_kernel`. Without LLM
    /// embeddings every domain is equally far from every other (one-hot), so the
    /// weights are uniform.
    pub fn unseen_weights(&self) -> Result<Vec<UnseenWeights>> {
        // Domains with train rows: the others' experts, gates and towers are untrained.
        let seen = self.ds.seen_domains();
        if seen.is_empty() {
            bail!("no domain has train rows to score the held-out domains with");
        }
        let mat = match &self.fixed {
            Some((m, _)) => Some(m.to_vec2::<f32>()?),
            None => None,
        };
        let scale = match (&mat, self.cfg.train.unseen_kernel) {
            (Some(m), crate::config::train::UnseenKernel::Median) => {
                crate::pool::median_scale(m, &seen)
            }
            _ => None,
        };
        Ok(self
            .ds
            .holdout
            .iter()
            .map(|&u| {
                let w = match &mat {
                    Some(m) => crate::pool::kernel_weights(
                        &m[u],
                        &seen.iter().map(|&j| m[j].as_slice()).collect::<Vec<_>>(),
                        scale,
                    ),
                    None => vec![1.0 / seen.len() as f64; seen.len()],
                };
                (u, seen.iter().copied().zip(w).collect())
            })
            .collect())
    }

    /// AUC over the test rows of the held-out domains, and the mean perplexity
    /// (effective number of seen domains) of their kernel weights — NaN for a
    /// model that scores held-out domains directly and never uses the kernel.
    pub fn unseen_auc(&mut self) -> Result<(Option<f64>, f64)> {
        let Predictions {
            probs: p,
            labels: y,
            domains: d,
            ..
        } = self.predict(Which::Test)?;
        let held = &self.ds.holdout;
        let (mut up, mut uy) = (Vec::new(), Vec::new());
        for i in 0..d.len() {
            if held.contains(&(d[i] as usize)) {
                up.push(p[i]);
                uy.push(y[i]);
            }
        }
        if !self.model.per_domain() {
            return Ok((metrics::auc(&up, &uy), f64::NAN));
        }
        let ws = self.unseen_weights()?;
        let ppl: f64 = ws
            .iter()
            .map(|(_, w)| crate::pool::perplexity(&w.iter().map(|&(_, a)| a).collect::<Vec<_>>()))
            .sum::<f64>()
            / ws.len().max(1) as f64;
        Ok((metrics::auc(&up, &uy), ppl))
    }

    /// Probabilities of rows of held-out domains: the mixture, weighted by
    /// [`Trainer::unseen_weights`], of the seen domains' predictions (their
    /// specific experts, gate and tower), each row keeping its own domain input.
    pub(super) fn unseen_probs(&mut self, split: &SplitData, rows: &[usize]) -> Result<Vec<f32>> {
        let weights = self.unseen_weights()?;
        let mut out = vec![0f64; rows.len()];
        let mut rng = Rng::new(0);
        for (u, ws) in weights {
            let idx: Vec<usize> = (0..rows.len())
                .filter(|&i| split.domains[rows[i]] as usize == u)
                .collect();
            let mine: Vec<usize> = idx.iter().map(|&i| rows[i]).collect();
            for (j, a) in ws {
                if a < 1e-12 {
                    continue;
                }
                let mut k = 0;
                for chunk in mine.chunks(self.cfg.train.eval_batch_size.max(1)) {
                    // One routed domain: the prepared order is the input order.
                    let p = self.prepare(split, chunk, Some(j as u32))?;
                    let pr = sigmoid(&self.model.forward(&p.inputs, false, &mut rng)?.logits)?
                        .to_vec1::<f32>()?;
                    for v in pr {
                        out[idx[k]] += a * v as f64;
                        k += 1;
                    }
                }
            }
        }
        Ok(out.into_iter().map(|v| v as f32).collect())
    }

    /// Add a domain the run never saw, to be scored as a held-out domain: with a
    /// fixed domain input from `embedding` (its row of the domain-embedding
    /// matrix), with no domain input as any held-out domain. Returns its id. A
    /// run with a domain-id input has no id row for it: an error.
    pub fn add_unseen_domain(&mut self, name: &str, embedding: Option<&[f32]>) -> Result<u32> {
        if self.ds.domain_names.iter().any(|d| d == name) {
            bail!("{name:?} is already a domain of this run");
        }
        if self.domain_slot {
            bail!(
                "this run takes the domain as an id (model.domain_input = \"id\"): a domain it \
                 was not trained on has no id to give; score it with a run on fixed domain \
                 embeddings (or one with no domain input)"
            );
        }
        match (&mut self.fixed, embedding) {
            (Some((mat, _)), Some(e)) => {
                let row = embedding_row(mat, e, &self.device)?;
                *mat = Tensor::cat(&[&*mat, &row], 0)?;
            }
            (Some(_), None) => bail!(
                "this run reads fixed domain embeddings (model.domain_input = \"fixed\"): a new \
                 domain needs its embedding"
            ),
            (None, Some(_)) => bail!(
                "this run takes no domain input (model.domain_input = \"none\"): an embedding \
                 for the new domain would not be used"
            ),
            (None, None) => {}
        }
        self.ds.domain_names.push(name.to_string());
        let id = self.ds.domain_names.len() - 1;
        self.ds.holdout.push(id);
        Ok(id as u32)
    }

    /// Give a domain the run held out of training another fixed embedding (a
    /// new description of it): its rows are then scored as with any unseen
    /// domain's embedding. A domain the model trained on keeps its own.
    pub fn set_held_out_embedding(&mut self, name: &str, embedding: &[f32]) -> Result<()> {
        let id = self
            .ds
            .domain_names
            .iter()
            .position(|d| d == name)
            .with_context(|| format!("{name:?} is not a domain of this run"))?;
        if !self.ds.holdout.contains(&id) {
            bail!(
                "{name:?} is a domain this run trained on: a new embedding applies to a new \
                 domain or one the run held out (data.holdout_domains)"
            );
        }
        let Some((mat, _)) = &mut self.fixed else {
            bail!(
                "this run reads no fixed domain embeddings: an embedding for {name:?} would not be used"
            );
        };
        let row = embedding_row(mat, embedding, &self.device)?;
        let n = mat.dim(0)?;
        let mut parts = Vec::with_capacity(3);
        if id > 0 {
            parts.push(mat.narrow(0, 0, id)?);
        }
        parts.push(row);
        if id + 1 < n {
            parts.push(mat.narrow(0, id + 1, n - id - 1)?);
        }
        *mat = Tensor::cat(&parts, 0)?;
        Ok(())
    }
}

/// `e` as one row (1, h) of the domain-embedding matrix `mat`: as wide, finite.
fn embedding_row(mat: &Tensor, e: &[f32], device: &candle_core::Device) -> Result<Tensor> {
    let h = mat.dim(1)?;
    if e.len() != h {
        bail!(
            "the new domain's embedding has {} values, the run's domain embeddings {h}",
            e.len()
        );
    }
    if let Some(i) = e.iter().position(|v| !v.is_finite()) {
        bail!("the new domain's embedding holds {} at position {i}", e[i]);
    }
    Ok(Tensor::from_slice(e, (1, h), device)?)
}
