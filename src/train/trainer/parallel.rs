//! The data-parallel step (see [`crate::dist`]): this rank's slice of the global
//! batch, gradients summed over the ranks, the same update on every replica.

use super::Trainer;
use crate::dist::{digest, merge_rows, slice_of};
use crate::nn::optim::DenseAdam;
use crate::nn::rng::Rng;
use anyhow::{Result, bail};

impl Trainer {
    /// One step of a data-parallel run on the global batch `rows` (every rank
    /// passes the same rows). The rank's loss is its rows' summed loss over the
    /// global batch size, so the summed gradients are the global batch's mean.
    pub(super) fn train_step_parallel(&mut self, rows: &[usize], rng: &mut Rng) -> Result<f64> {
        let local = &rows[slice_of(rows.len(), self.comm.rank(), self.comm.size())];
        let dim = self.table.dim;
        let mut value = 0.0;
        let mut dense: Vec<Option<Vec<f32>>> = vec![None; self.ps.params().len()];
        let (mut unique, mut g, mut g_first) = (Vec::new(), Vec::new(), Vec::new());
        if !local.is_empty() {
            let split = std::mem::take(&mut self.ds.train);
            let p = self.prepare(&split, local, None);
            self.ds.train = split;
            let p = p?;
            let before = rng.clone();
            let out = self.model.forward(&p.inputs, true, rng)?;
            if *rng != before {
                bail!(
                    "{} draws random numbers per row in training (dropout or gate noise), so its \
                     result would depend on how a batch is split over ranks: set model.dropout = 0 \
                     and turn gate noise off to train it on several ranks",
                    self.cfg.model.label()
                );
            }
            if out.aux.is_some() {
                bail!(
                    "{} adds a batch-level auxiliary loss (expert balance), which does not split \
                     over ranks: turn it off (balance weight 0) to train on several ranks",
                    self.cfg.model.label()
                );
            }
            let sum = match self.row_weights(&p.domains)? {
                Some(w) => {
                    crate::nn::ops::bce_with_logits_weighted_sum(&out.logits, &p.labels, &w)?
                }
                None => crate::nn::ops::bce_with_logits_sum(&out.logits, &p.labels)?,
            };
            let loss = (sum / rows.len() as f64)?;
            value = loss.to_scalar::<f32>()? as f64;
            let grads = loss.backward()?;
            dense = DenseAdam::gradients(&self.ps, &grads)?;
            if let Some(t) = grads.get(p.var.as_tensor()) {
                g = t.flatten_all()?.to_vec1::<f32>()?;
                unique = p.unique.clone();
                if let Some(v) = &p.first_var
                    && let Some(t) = grads.get(v.as_tensor())
                {
                    g_first = t.flatten_all()?.to_vec1::<f32>()?;
                }
            }
        }
        let value = self.comm.sum_f64(value)?;
        if !value.is_finite() {
            bail!(
                "non-finite loss ({value}) at step {}",
                self.progress.step + 1
            );
        }
        let dense = self.sum_dense(dense)?;
        let rows_all = self.comm.all_gather_u32(&unique)?;
        let (rows_m, g_m) = merge_rows(&rows_all, &self.comm.all_gather_f32(&g)?, dim);
        let first = match &self.first {
            Some(_) => {
                let g1 = self.comm.all_gather_f32(&g_first)?;
                if g1.len() != rows_all.len() {
                    bail!(
                        "step {}: the ranks sent {} first-order gradients for {} rows",
                        self.progress.step + 1,
                        g1.len(),
                        rows_all.len()
                    );
                }
                Some(merge_rows(&rows_all, &g1, 1).1)
            }
            None => None,
        };
        self.progress.step += 1;
        let t = self.progress.step;
        self.dense.apply(&self.ps, &dense, &self.adam, t)?;
        if !rows_m.is_empty() {
            self.table.step(&rows_m, &g_m, &self.adam, t);
        }
        if let (Some(f), Some(g1)) = (&mut self.first, first) {
            f.step(&rows_m, &g1, &self.adam, t);
        }
        Ok(value)
    }

    /// Dense gradients summed over the ranks, in one message: the values (zeros
    /// where a rank has none), then one flag per parameter. A parameter no rank
    /// used stays without gradient, as in one process.
    fn sum_dense(&self, grads: Vec<Option<Vec<f32>>>) -> Result<Vec<Option<Vec<f32>>>> {
        let sizes: Vec<usize> = self
            .ps
            .params()
            .iter()
            .map(|p| p.var.elem_count())
            .collect();
        let total: usize = sizes.iter().sum();
        let mut flat = Vec::with_capacity(total + sizes.len());
        for (g, &n) in grads.iter().zip(&sizes) {
            match g {
                Some(g) => flat.extend_from_slice(g),
                None => flat.resize(flat.len() + n, 0.0),
            }
        }
        flat.extend(grads.iter().map(|g| f32::from(u8::from(g.is_some()))));
        self.comm.all_reduce_sum(&mut flat)?;
        let mut out = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for (i, &n) in sizes.iter().enumerate() {
            out.push((flat[total + i] > 0.0).then(|| flat[at..at + n].to_vec()));
            at += n;
        }
        Ok(out)
    }

    /// Fail when the replicas' weights differ (they must stay bit-identical:
    /// every rank applies the same summed gradients).
    pub(super) fn check_replicas(&self) -> Result<()> {
        if self.comm.size() == 1 {
            return Ok(());
        }
        let mut h = digest(&self.table.weight, 0xcbf2_9ce4_8422_2325);
        if let Some(f) = &self.first {
            h = digest(&f.weight, h);
        }
        for (w, _) in &self.dense.state {
            h = digest(w, h);
        }
        let all = self.comm.all_gather_u32(&[(h >> 32) as u32, h as u32])?;
        if all.chunks(2).any(|c| c != &all[..2]) {
            bail!(
                "the ranks' weights differ after epoch {} (digests {all:?}): the replicas \
                 diverged",
                self.progress.epochs_done + 1
            );
        }
        Ok(())
    }
}
