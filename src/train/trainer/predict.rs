//! Scores of a split (in memory, or shard by shard when streamed) and of rows
//! from outside the prepared dataset, in row order.

use super::Trainer;
use crate::data::dataset::SplitData;
use crate::metrics::{self, Report};
use crate::nn::ops::sigmoid;
use crate::nn::rng::Rng;
use anyhow::{Result, bail};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A split's scores in row order (from [`Trainer::predict`]): each one's split
/// row, probability, label, domain and, when the dataset has `user_id`, user.
#[derive(Default)]
pub struct Predictions {
    pub rows: Vec<usize>,
    pub probs: Vec<f32>,
    pub labels: Vec<f32>,
    pub domains: Vec<u32>,
    pub users: Option<Vec<u32>>,
    /// Rows of the split they score (the next part's rows start here).
    pub n: usize,
}

impl Predictions {
    /// Sorted by split row.
    pub fn by_row(self) -> Predictions {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        order.sort_unstable_by_key(|&i| self.rows[i]);
        let pick = |v: &[f32]| order.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        Predictions {
            probs: pick(&self.probs),
            labels: pick(&self.labels),
            domains: order.iter().map(|&i| self.domains[i]).collect(),
            users: self
                .users
                .as_ref()
                .map(|u| order.iter().map(|&i| u[i]).collect()),
            rows: order.iter().map(|&i| self.rows[i]).collect(),
            n: self.n,
        }
    }

    /// The scores of the next rows of the split (a streamed split's next shard).
    pub fn append(mut self, next: Predictions) -> Predictions {
        if next.n == 0 {
            return self;
        }
        if self.n == 0 {
            return next;
        }
        self.rows.extend(next.rows.iter().map(|r| r + self.n));
        self.probs.extend(next.probs);
        self.labels.extend(next.labels);
        self.domains.extend(next.domains);
        self.users = match (self.users, next.users) {
            (Some(mut a), Some(b)) => {
                a.extend(b);
                Some(a)
            }
            _ => None,
        };
        self.n += next.n;
        self
    }

    /// Save as safetensors, sorted by row: `row` (U32), `domain` (U32), `label`
    /// (U8), `score` (F32) — enough to recompute any metric or paired test.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut order: Vec<usize> = (0..self.rows.len()).collect();
        order.sort_by_key(|&i| self.rows[i]);
        let dev = &Device::Cpu;
        let n = order.len();
        let u32s = |v: Vec<u32>| Tensor::from_vec(v, n, dev);
        let mut t = HashMap::new();
        t.insert(
            "row".to_string(),
            u32s(order.iter().map(|&i| self.rows[i] as u32).collect())?,
        );
        t.insert(
            "domain".to_string(),
            u32s(order.iter().map(|&i| self.domains[i]).collect())?,
        );
        t.insert(
            "label".to_string(),
            Tensor::from_vec(
                order
                    .iter()
                    .map(|&i| self.labels[i] as u8)
                    .collect::<Vec<u8>>(),
                n,
                dev,
            )?,
        );
        t.insert(
            "score".to_string(),
            Tensor::from_vec(
                order.iter().map(|&i| self.probs[i]).collect::<Vec<f32>>(),
                n,
                dev,
            )?,
        );
        crate::fsutil::save_tensors_atomic(&t, path)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Train,
    Valid,
    Test,
}

impl Which {
    /// The split's folder name.
    pub fn name(self) -> &'static str {
        match self {
            Which::Train => "train",
            Which::Valid => "valid",
            Which::Test => "test",
        }
    }
}

impl Trainer {
    /// Probabilities, labels and domains of a split, in row order. Rows of a
    /// held-out domain are scored by [`Trainer::unseen_probs`] when the model has
    /// per-domain networks, else directly from their own domain input.
    pub fn predict(&mut self, which: Which) -> Result<Predictions> {
        let name = which.name();
        let split = std::mem::take(self.split_mut(which));
        let result = if self.ds.streamed && split.labels.len() != split.n {
            // Not in memory: score it shard by shard.
            let shards = self.ds.split_meta(name)?.shards.len();
            (0..shards)
                .try_fold(None, |acc: Option<Predictions>, i| {
                    let part = self.ds.read_shards(name, &[i])?;
                    let p = self.predict_rows(&part)?;
                    Ok::<_, anyhow::Error>(Some(match acc {
                        None => p,
                        Some(a) => a.append(p),
                    }))
                })
                .map(|p| p.unwrap_or_default())
        } else {
            self.predict_rows(&split)
        };
        *self.split_mut(which) = split;
        // In row order: the metrics' sums then run in one order whether the split
        // was scored whole or shard by shard.
        result.map(Predictions::by_row)
    }

    /// [`Trainer::predict`] on rows in memory.
    pub(super) fn predict_rows(&mut self, split: &SplitData) -> Result<Predictions> {
        let mut rows = Vec::with_capacity(split.n);
        let mut probs = Vec::with_capacity(split.n);
        let mut labels = Vec::with_capacity(split.n);
        let mut domains = Vec::with_capacity(split.n);
        let held = if self.model.per_domain() {
            self.ds.holdout.clone()
        } else {
            Vec::new()
        };
        let (unseen, seen): (Vec<usize>, Vec<usize>) =
            (0..split.n).partition(|&r| held.contains(&(split.domains[r] as usize)));
        let mut rng = Rng::new(0);
        // In a data-parallel run each rank scores every size-th chunk.
        let (rank, size) = (self.comm.rank(), self.comm.size());
        for (c, chunk) in seen
            .chunks(self.cfg.train.eval_batch_size.max(1))
            .enumerate()
        {
            if c % size != rank {
                continue;
            }
            let p = self.prepare(split, chunk, None)?;
            let out = self.model.forward(&p.inputs, false, &mut rng)?;
            probs.extend(sigmoid(&out.logits)?.to_vec1::<f32>()?);
            labels.extend(p.labels.to_vec1::<f32>()?);
            domains.extend(p.domains);
            rows.extend(p.rows);
        }
        if size > 1 {
            let mine: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
            rows = self
                .comm
                .all_gather_u32(&mine)?
                .into_iter()
                .map(|r| r as usize)
                .collect();
            probs = self.comm.all_gather_f32(&probs)?;
            labels = rows.iter().map(|&r| split.labels[r]).collect();
            domains = rows.iter().map(|&r| split.domains[r]).collect();
        }
        if !unseen.is_empty() {
            probs.extend(self.unseen_probs(split, &unseen)?);
            labels.extend(unseen.iter().map(|&r| split.labels[r]));
            domains.extend(unseen.iter().map(|&r| split.domains[r]));
            rows.extend(&unseen);
        }
        let users =
            (!split.users.is_empty()).then(|| rows.iter().map(|&r| split.users[r]).collect());
        Ok(Predictions {
            rows,
            probs,
            labels,
            domains,
            users,
            n: split.n,
        })
    }

    /// Score rows outside the prepared dataset (`pipeline predict --input`)
    /// exactly as [`Trainer::predict`] scores test rows: `split` stands in for
    /// the test split during the call.
    pub fn predict_split(&mut self, split: SplitData) -> Result<Predictions> {
        if self.ds.history_len > 0 {
            bail!(
                "DIN scores a row from its user's history in the prepared train split: new rows have none"
            );
        }
        let saved = std::mem::replace(&mut self.ds.test, split);
        let out = self.predict(Which::Test);
        self.ds.test = saved;
        out
    }

    pub(super) fn split_mut(&mut self, which: Which) -> &mut SplitData {
        match which {
            Which::Train => &mut self.ds.train,
            Which::Valid => &mut self.ds.valid,
            Which::Test => &mut self.ds.test,
        }
    }

    pub fn evaluate(&mut self, which: Which) -> Result<Report> {
        let p = self.predict(which)?;
        Ok(metrics::report(
            &p.probs,
            &p.labels,
            &p.domains,
            &self.ds.domain_names,
        ))
    }
}
