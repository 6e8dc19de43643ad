//! The training loop: batches grouped by domain, Adam/AdamW, early stopping on
//! valid AUC, a checkpoint after every epoch (weights, optimiser moments, running
//! statistics, counters), exact `--resume`, metrics per epoch as JSON lines and a
//! final `metrics.json` at the best valid epoch.
//!
//! Every random draw of epoch e comes from generators derived from (seed, e), so a
//! run resumed after any epoch ends exactly as the uninterrupted run.

use super::data::{Dataset, SplitData};
use super::optim::{AdamConfig, DenseAdam};
use crate::config::{Config, Stage, check_reusable};
use crate::fingerprint;
use crate::fsutil::write_atomic;
use crate::metrics::{self, Report};
use crate::models::config::{DomainFields, DomainInput};
use crate::models::embedding::{EmbeddingTable, Layout};
use crate::models::{self, CtrModel, InputSpec, Inputs, Segment};
use crate::nn::linear::Linear;
use crate::nn::ops::{bce_with_logits, sigmoid};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One epoch's line in `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub valid_auc: Option<f64>,
    pub valid_logloss: f64,
    pub seconds: f64,
    /// The training part of `seconds` (without scoring valid).
    #[serde(default)]
    pub train_seconds: f64,
}

/// `metrics.json`: test metrics at the best valid epoch.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FinalMetrics {
    pub model: String,
    pub recipe: String,
    pub seed: u64,
    pub best_epoch: usize,
    pub epochs_run: usize,
    pub valid_auc: Option<f64>,
    pub test: Report,
    /// User-weighted AUC over the test rows: the AUC of each user's rows, for
    /// users with both classes, weighted by their rows (`null` without `user_id`).
    #[serde(default)]
    pub test_gauc: Option<f64>,
    /// Mean AUC of the 7 domains with the fewest rows (defined AUCs only).
    pub tail_auc: Option<f64>,
    pub tail_domains: Vec<String>,
    /// AUC over the test rows of the held-out domains together (unseen domains).
    #[serde(default)]
    pub unseen_auc: Option<f64>,
    #[serde(default)]
    pub unseen_domains: Vec<String>,
    pub train_seconds: f64,
}

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

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
struct Progress {
    epochs_done: usize,
    step: u64,
    best_auc: Option<f64>,
    best_epoch: usize,
    bad_epochs: usize,
    history: Vec<EpochMetrics>,
    seconds: f64,
    /// Where a streamed epoch stands, in a checkpoint written between buffers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<StreamPos>,
}

/// A streamed epoch between two buffers: enough to continue it exactly.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StreamPos {
    epoch: usize,
    buffers_done: usize,
    loss_sum: f64,
    rows: usize,
    /// The epoch's dropout and noise generator, as it stands.
    rng: Rng,
    seconds: f64,
}

/// A held-out domain and the kernel weight of each seen domain, (domain, weight).
pub type UnseenWeights = (usize, Vec<(usize, f64)>);

pub struct Trainer {
    pub cfg: Config,
    pub ds: Dataset,
    pub run_dir: PathBuf,
    device: Device,
    layout: Layout,
    /// Slot of each feature, then the domain-id slot if any.
    slots: usize,
    domain_slot: bool,
    item_slot: Option<usize>,
    table: EmbeddingTable,
    first: Option<EmbeddingTable>,
    ps: ParamStore,
    model: Box<dyn CtrModel>,
    /// Master copies and moments of the dense parameters.
    dense: DenseAdam,
    fixed: Option<(Tensor, Linear)>,
    adam: AdamConfig,
    progress: Progress,
    /// Stop after this many buffers of a streamed train split (counted over the
    /// whole call of [`Trainer::run`]), as a kill would: for tests of resuming
    /// mid-epoch.
    pub stop_after_buffers: Option<usize>,
}

/// A batch ready for the model, and what the optimiser needs after backward.
struct Prepared {
    inputs: Inputs,
    labels: Tensor,
    domains: Vec<u32>,
    /// The split's row of each prepared row (grouped by domain).
    rows: Vec<usize>,
    unique: Vec<u32>,
    var: candle_core::Var,
    first_var: Option<candle_core::Var>,
}

impl Trainer {
    /// Build the model for `cfg` on the prepared dataset in `dataset_dir`.
    pub fn new(cfg: &Config, dataset_dir: &Path) -> Result<Trainer> {
        let m = &cfg.model;
        let t = &cfg.train;
        cfg.validate()?;
        let history = if m.name.needs_history() {
            m.din.history
        } else {
            0
        };
        let features = features(cfg, dataset_dir)?;
        let bags = bag_fields(cfg, dataset_dir)?;
        let mut ds =
            Dataset::load_with(dataset_dir, &features, &bags, history, t.stream_shards > 0)?;
        ds.hold_out(&cfg.data.holdout_domains)?;
        let device = Device::Cpu;
        let mut rng = Rng::new(t.seed);
        let domain_slot = m.domain_input == DomainInput::Id;
        let mut cards = ds.cards.clone();
        if domain_slot {
            cards.push(ds.domain_names.len() as u32);
        }
        // Bags take the last layout slots, so that a run without them keeps the
        // table rows (and initialisation) it had before bags existed.
        cards.extend(&ds.bag_cards);
        let layout = Layout::new(&cards, m.hash_buckets);
        let total = layout.total_rows();
        let table = EmbeddingTable::new(
            total,
            m.embedding_dim,
            m.embedding_init_std,
            m.embedding_update,
            &mut rng,
        );
        let first = m.name.needs_first_order().then(|| {
            EmbeddingTable::new(total, 1, m.embedding_init_std, m.embedding_update, &mut rng)
        });
        let mut ps = ParamStore::new(DType::F32, &device);
        let fixed = match m.domain_input {
            DomainInput::Fixed => {
                let path = m
                    .domain_embeddings
                    .as_ref()
                    .context("model.domain_input = \"fixed\" needs model.domain_embeddings (a safetensors file)")?;
                let all = crate::config::load_safetensors(path)
                    .context("model.domain_embeddings: cannot read the domain embeddings")?;
                let name = &m.domain_embeddings_tensor;
                let mat = all
                    .get(name)
                    .with_context(|| {
                        format!(
                            "{} has no tensor `{name}` (model.domain_embeddings_tensor)",
                            path.display()
                        )
                    })?
                    .to_dtype(DType::F32)?;
                let domains = ds.domain_names.len();
                let h = match *mat.dims() {
                    [d, h] if d == domains && h > 0 => h,
                    _ => bail!(
                        "{}: tensor `{name}` is {:?}, expected ({domains}, h): one row per domain",
                        path.display(),
                        mat.dims()
                    ),
                };
                crate::config::check_finite(&mat, path, name)?;
                let proj = Linear::new(&mut ps, "domain_proj", h, m.embedding_dim, &mut rng)?;
                Some((mat, proj))
            }
            _ => None,
        };
        let slots = ds.features.len()
            + ds.bags.len()
            + usize::from(domain_slot)
            + usize::from(fixed.is_some());
        let spec = InputSpec {
            slots,
            dim: m.embedding_dim,
            domains: ds.domain_names.len(),
            has_domain: domain_slot || fixed.is_some(),
            held_out: ds.holdout.clone(),
        };
        let model = models::build(m, &spec, &mut ps, &mut rng)?;
        let dense = DenseAdam::new(&ps)?;
        let item_slot = ds.features.iter().position(|f| f == "item_id");
        if m.name.needs_history() && item_slot.is_none() {
            bail!("DIN needs item_id among model.features");
        }
        Ok(Trainer {
            run_dir: run_dir(cfg, &ds.meta.recipe),
            adam: AdamConfig {
                kind: t.optimizer,
                lr: t.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: t.weight_decay,
            },
            cfg: cfg.clone(),
            ds,
            device,
            layout,
            slots,
            domain_slot,
            item_slot,
            table,
            first,
            ps,
            model,
            dense,
            fixed,
            progress: Progress::default(),
            stop_after_buffers: None,
        })
    }

    /// The embedding table in one line: rows per field (hashed ones marked),
    /// and the memory of its weights and of the optimiser's two moments.
    pub fn table_summary(&self) -> String {
        let mut names = self.ds.features.clone();
        if self.domain_slot {
            names.push("domain".into());
        }
        names.extend(self.ds.bags.iter().map(|b| format!("{b} (bag)")));
        let fields: Vec<String> = names
            .iter()
            .zip(self.layout.rows.iter().zip(&self.layout.hashed))
            .map(|(n, (r, h))| format!("{n} {r}{}", if *h { " (hashed)" } else { "" }))
            .collect();
        let mib = |n: usize| n as f64 * 4.0 / (1024.0 * 1024.0);
        let w = self.table.weight.len() + self.first.as_ref().map_or(0, |f| f.weight.len());
        format!(
            "embedding table {} rows × {} ({}): {:.1} MiB of weights, {:.1} MiB of Adam moments, {} updates",
            self.table.rows,
            self.table.dim,
            fields.join(", "),
            mib(w),
            mib(2 * w),
            if self.table.sparse {
                "row-sparse"
            } else {
                "dense"
            }
        )
    }

    pub fn param_count(&self) -> usize {
        self.ps.count()
            + self.table.weight.len()
            + self.first.as_ref().map_or(0, |f| f.weight.len())
    }

    /// Group `rows` by domain (stable) and embed them. With `route`, every row
    /// runs through that domain's experts, gate and tower, while its domain input
    /// (id or fixed embedding) stays its own.
    fn prepare(
        &mut self,
        split: &SplitData,
        rows: &[usize],
        route: Option<u32>,
    ) -> Result<Prepared> {
        let n_dom = self.ds.domain_names.len();
        let seg = |d: u32| route.unwrap_or(d) as usize;
        let mut counts = vec![0usize; n_dom];
        for &r in rows {
            counts[seg(split.domains[r])] += 1;
        }
        let mut starts = vec![0usize; n_dom];
        let mut segments = Vec::new();
        let mut acc = 0;
        for d in 0..n_dom {
            starts[d] = acc;
            if counts[d] > 0 {
                segments.push(Segment {
                    domain: d,
                    start: acc,
                    len: counts[d],
                });
            }
            acc += counts[d];
        }
        let mut ordered = vec![0usize; rows.len()];
        let mut fill = starts.clone();
        for &r in rows {
            let d = seg(split.domains[r]);
            ordered[fill[d]] = r;
            fill[d] += 1;
        }
        let n = ordered.len();
        let nf = self.ds.features.len();
        let id_slots = nf + usize::from(self.domain_slot);
        let hl = if split.history.is_some() {
            self.ds.history_len
        } else {
            0
        };
        let mut ids = Vec::with_capacity(n * (id_slots + hl));
        for &r in &ordered {
            for (s, col) in split.cols.iter().enumerate() {
                ids.push(self.layout.row(s, col[r]));
            }
            if self.domain_slot {
                ids.push(self.layout.row(nf, split.domains[r]));
            }
        }
        if let (Some(h), Some(item)) = (&split.history, self.item_slot) {
            for &r in &ordered {
                for k in 0..hl {
                    ids.push(self.layout.row(item, h[r * hl + k]));
                }
            }
        }
        // Bags: every value of every row, then its mean per (row, bag).
        let nb = self.ds.bags.len();
        let bag_start = ids.len();
        let (mut bag_target, mut bag_weight) = (Vec::new(), Vec::new());
        for (i, &r) in ordered.iter().enumerate() {
            for (b, (off, vals)) in split.bags.iter().enumerate() {
                let v = &vals[off[r] as usize..off[r + 1] as usize];
                for &x in v {
                    ids.push(self.layout.row(id_slots + b, x));
                    bag_target.push((i * nb + b) as u32);
                    bag_weight.push(1.0 / v.len() as f32);
                }
            }
        }
        if split.bags.len() != nb {
            bail!(
                "these rows carry {} of the run's {nb} multi-hot fields (model.bags)",
                split.bags.len()
            );
        }
        let g = self.table.gather_ids(&ids);
        let var = self.table.rows_var(&g.unique, &self.device, DType::F32)?;
        let local = Tensor::from_vec(g.local, ids.len(), &self.device)?;
        let emb = var.as_tensor().index_select(&local, 0)?;
        let dim = self.table.dim;
        let mut fields = emb
            .narrow(0, 0, n * id_slots)?
            .reshape((n, id_slots, dim))?;
        let bag_mean = |values: &Tensor, width: usize| -> Result<Tensor> {
            let zeros = Tensor::zeros((n * nb, width), DType::F32, &self.device)?;
            if bag_target.is_empty() {
                return Ok(zeros);
            }
            let k = bag_target.len();
            let w = Tensor::from_slice(&bag_weight, (k, 1), &self.device)?;
            let t = Tensor::from_slice(&bag_target, k, &self.device)?;
            Ok(zeros.index_add(&t, &values.broadcast_mul(&w)?, 0)?)
        };
        if nb > 0 {
            let vals = emb.narrow(0, bag_start, bag_target.len())?;
            let bagged = bag_mean(&vals, dim)?.reshape((n, nb, dim))?;
            let (nf, rest) = (self.ds.features.len(), id_slots - self.ds.features.len());
            let mut parts = vec![fields.narrow(1, 0, nf)?, bagged];
            if rest > 0 {
                parts.push(fields.narrow(1, nf, rest)?);
            }
            fields = Tensor::cat(&parts, 1)?;
        }
        let domains: Vec<u32> = ordered.iter().map(|&r| split.domains[r]).collect();
        if let Some((mat, proj)) = &self.fixed {
            let idx = Tensor::from_slice(&domains, n, &self.device)?;
            let d = proj.forward(mat)?.index_select(&idx, 0)?.unsqueeze(1)?;
            fields = Tensor::cat(&[&fields, &d], 1)?;
        }
        let history = if hl > 0 {
            let hist = emb.narrow(0, n * id_slots, n * hl)?.reshape((n, hl, dim))?;
            let h = split.history.as_ref().map(|h| {
                ordered
                    .iter()
                    .flat_map(|&r| {
                        h[r * hl..(r + 1) * hl]
                            .iter()
                            .map(|&i| f32::from(u8::from(i != 0)))
                    })
                    .collect::<Vec<f32>>()
            });
            let mask = Tensor::from_vec(h.unwrap_or_default(), (n, hl), &self.device)?;
            Some((hist, mask))
        } else {
            None
        };
        let first_var = match &self.first {
            Some(f) => Some(f.rows_var(&g.unique, &self.device, DType::F32)?),
            None => None,
        };
        let first_order = match &first_var {
            Some(v) => {
                // The first-order table shares the gathered rows: same local indices.
                let idx = local.narrow(0, 0, n * id_slots)?;
                let mut fo = v
                    .as_tensor()
                    .index_select(&idx, 0)?
                    .reshape((n, id_slots))?;
                if nb > 0 {
                    let bl = local.narrow(0, bag_start, bag_target.len())?;
                    let vals = v.as_tensor().index_select(&bl, 0)?;
                    let bagged = bag_mean(&vals, 1)?.reshape((n, nb))?;
                    let (nf, rest) = (self.ds.features.len(), id_slots - self.ds.features.len());
                    let mut parts = vec![fo.narrow(1, 0, nf)?, bagged];
                    if rest > 0 {
                        parts.push(fo.narrow(1, nf, rest)?);
                    }
                    fo = Tensor::cat(&parts, 1)?;
                }
                if self.fixed.is_some() {
                    fo = Tensor::cat(&[&fo, &Tensor::zeros((n, 1), DType::F32, &self.device)?], 1)?;
                }
                Some(fo)
            }
            None => None,
        };
        let x = fields.reshape((n, self.slots * dim))?;
        let domain = if self.domain_slot || self.fixed.is_some() {
            Some(fields.narrow(1, self.slots - 1, 1)?.squeeze(1)?)
        } else {
            None
        };
        let item = match self.item_slot {
            Some(i) if hl > 0 => Some(fields.narrow(1, i, 1)?.squeeze(1)?),
            _ => None,
        };
        let labels: Vec<f32> = ordered.iter().map(|&r| split.labels[r]).collect();
        Ok(Prepared {
            inputs: Inputs {
                x,
                fields,
                first_order,
                domain,
                item,
                history,
                segments,
            },
            labels: Tensor::from_vec(labels, n, &self.device)?,
            domains,
            rows: ordered,
            unique: g.unique,
            var,
            first_var,
        })
    }

    fn train_step(&mut self, rows: &[usize], rng: &mut Rng) -> Result<f64> {
        let split = std::mem::take(&mut self.ds.train);
        let p = self.prepare(&split, rows, None);
        self.ds.train = split;
        let p = p?;
        let out = self.model.forward(&p.inputs, true, rng)?;
        let bce = bce_with_logits(&out.logits, &p.labels)?;
        let loss = match out.aux {
            Some(a) => (&bce + a)?,
            None => bce.clone(),
        };
        let value = loss.to_scalar::<f32>()? as f64;
        if !value.is_finite() {
            bail!(
                "non-finite loss ({value}) at step {}",
                self.progress.step + 1
            );
        }
        let grads = loss.backward()?;
        self.progress.step += 1;
        let t = self.progress.step;
        self.dense.step(&self.ps, &grads, &self.adam, t)?;
        if let Some(g) = grads.get(p.var.as_tensor()) {
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            self.table.step(&p.unique, &g, &self.adam, t);
        }
        if let (Some(f), Some(v)) = (&mut self.first, &p.first_var)
            && let Some(g) = grads.get(v.as_tensor())
        {
            let g = g.flatten_all()?.to_vec1::<f32>()?;
            f.step(&p.unique, &g, &self.adam, t);
        }
        Ok(value)
    }

    /// One training step on train rows `rows` (for benchmarks).
    pub fn bench_step(&mut self, rows: &[usize], rng: &mut Rng) -> Result<f64> {
        self.train_step(rows, rng)
    }

    /// Forward pass only on test rows `rows` (for benchmarks).
    pub fn bench_infer(&mut self, rows: &[usize]) -> Result<()> {
        let split = std::mem::take(&mut self.ds.test);
        let r = (|| {
            let p = self.prepare(&split, rows, None)?;
            let out = self.model.forward(&p.inputs, false, &mut Rng::new(0))?;
            sigmoid(&out.logits)?.to_vec1::<f32>()?;
            Ok(())
        })();
        self.ds.test = split;
        r
    }

    /// Grow the embedding table to `rows` rows (the extra rows are never used):
    /// shows whether a step costs O(batch) or O(table).
    pub fn pad_table(&mut self, rows: usize, sparse: bool, rng: &mut Rng) {
        let dim = self.table.dim;
        let mode = if sparse {
            crate::models::embedding::UpdateMode::Sparse
        } else {
            crate::models::embedding::UpdateMode::Dense
        };
        let mut t = EmbeddingTable::new(rows.max(self.table.rows), dim, 1e-4, mode, rng);
        t.weight[..self.table.weight.len()].copy_from_slice(&self.table.weight);
        self.table = t;
    }

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
    fn predict_rows(&mut self, split: &SplitData) -> Result<Predictions> {
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
        for chunk in seen.chunks(self.cfg.train.eval_batch_size.max(1)) {
            let p = self.prepare(split, chunk, None)?;
            let out = self.model.forward(&p.inputs, false, &mut rng)?;
            probs.extend(sigmoid(&out.logits)?.to_vec1::<f32>()?);
            labels.extend(p.labels.to_vec1::<f32>()?);
            domains.extend(p.domains);
            rows.extend(p.rows);
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
            (Some(m), crate::train::config::UnseenKernel::Median) => {
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

    /// Load the best epoch's weights of a finished run (to score it again, e.g.
    /// with another `train.unseen_kernel`: training does not depend on it).
    pub fn load_best(&mut self) -> Result<()> {
        let best = self.run_dir.join("best.safetensors");
        self.load_weights(&best, false)
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
    fn unseen_probs(&mut self, split: &SplitData, rows: &[usize]) -> Result<Vec<f32>> {
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
                let row = Tensor::from_slice(e, (1, h), &self.device)?;
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

    fn split_mut(&mut self, which: Which) -> &mut SplitData {
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

    /// Train (or continue, with `resume`) to the end; write all outputs.
    pub fn run(&mut self, resume: bool, stop_after: Option<usize>) -> Result<Option<FinalMetrics>> {
        let ckpt = self.run_dir.join("checkpoint.json");
        let inputs = inputs(&self.cfg, &self.ds.dir)?;
        if resume && ckpt.is_file() {
            check_reusable(&self.run_dir, &self.cfg, Stage::Train)?;
            inputs.require_same(&self.run_dir)?;
            self.load_checkpoint()?;
            tracing::info!(
                "resuming {} after epoch {}",
                self.run_dir.display(),
                self.progress.epochs_done
            );
        } else if ckpt.is_file() {
            bail!(
                "{} already holds a run: pass --resume to continue it, or choose another run name",
                self.run_dir.display()
            );
        }
        std::fs::create_dir_all(&self.run_dir)?;
        write_atomic(
            &self.run_dir.join("config.toml"),
            self.cfg.to_toml().as_bytes(),
        )?;
        inputs.save(&self.run_dir)?;
        let t = self.cfg.train.clone();
        let base = Rng::new(t.seed);
        let mut done_now = 0;
        let mut buffers_now = 0;
        while self.progress.epochs_done < t.epochs
            && (self.progress.bad_epochs < t.patience || self.progress.epochs_done < t.min_epochs)
        {
            if stop_after.is_some_and(|s| done_now >= s) {
                return Ok(None);
            }
            let epoch = self.progress.epochs_done + 1;
            let start = Instant::now();
            let bs = t.batch_size.max(1);
            let groups = self.shard_groups(&base, epoch);
            let mut rng = base.fork(1_000_000 + epoch as u64);
            let (mut sum, mut count, mut first, mut earlier) = (0.0, 0usize, 0, 0.0);
            if let Some(p) = self.progress.stream.take()
                && p.epoch == epoch
            {
                (sum, count, first, earlier, rng) =
                    (p.loss_sum, p.rows, p.buffers_done, p.seconds, p.rng);
            }
            let steps = self.ds.train.n.div_ceil(bs);
            let pb = progress_bar(steps as u64, epoch, t.epochs);
            pb.set_position((count / bs) as u64);
            for (g, group) in groups.iter().enumerate().skip(first) {
                if self.ds.streamed {
                    self.ds.train = self.ds.read_shards("train", group)?;
                }
                let mut order: Vec<usize> = (0..self.ds.train.n).collect();
                // One buffer (or the split in memory) takes the epoch's own
                // permutation, so a buffer of every shard repeats the in-memory run.
                match groups.len() {
                    1 => base.fork(epoch as u64).shuffle(&mut order),
                    _ => base.fork(epoch as u64).fork(g as u64).shuffle(&mut order),
                }
                for chunk in order.chunks(bs) {
                    let l = self.train_step(chunk, &mut rng).map_err(|e| {
                        pb.abandon();
                        e.context(format!(
                            "training stopped in epoch {epoch}; the last good checkpoint (after epoch {}) is in {}",
                            self.progress.epochs_done,
                            self.run_dir.display()
                        ))
                    })?;
                    sum += l * chunk.len() as f64;
                    count += chunk.len();
                    pb.inc(1);
                    if pb.position().is_multiple_of(10) {
                        pb.set_message(format!("loss {:.4}", sum / count as f64));
                    }
                }
                if g + 1 < groups.len() {
                    self.progress.stream = Some(StreamPos {
                        epoch,
                        buffers_done: g + 1,
                        loss_sum: sum,
                        rows: count,
                        rng: rng.clone(),
                        seconds: earlier + start.elapsed().as_secs_f64(),
                    });
                    self.save_checkpoint()?;
                    self.progress.stream = None;
                    buffers_now += 1;
                    if self.stop_after_buffers.is_some_and(|s| buffers_now >= s) {
                        pb.abandon();
                        return Ok(None);
                    }
                }
            }
            if self.ds.streamed {
                self.ds.train = self.ds.stream_placeholder("train")?;
            }
            let trained = start.elapsed();
            pb.finish_and_clear();
            let valid = self.evaluate(Which::Valid)?;
            let train_secs = earlier + trained.as_secs_f64();
            let secs = earlier + start.elapsed().as_secs_f64();
            let em = EpochMetrics {
                train_seconds: train_secs,
                epoch,
                train_loss: sum / count.max(1) as f64,
                valid_auc: valid.auc,
                valid_logloss: valid.logloss,
                seconds: secs,
            };
            tracing::info!(
                "epoch {epoch}: train loss {:.4}, valid AUC {}, {:.1}s",
                em.train_loss,
                valid.auc.map_or("n/a".into(), |a| format!("{a:.4}")),
                secs
            );
            self.progress.history.push(em);
            self.progress.seconds += secs;
            self.progress.epochs_done = epoch;
            let better = match (valid.auc, self.progress.best_auc) {
                (Some(a), Some(b)) => a > b,
                (Some(_), None) => true,
                _ => false,
            };
            if better {
                self.progress.best_auc = valid.auc;
                self.progress.best_epoch = epoch;
                self.progress.bad_epochs = 0;
                self.save_weights(&self.run_dir.join("best.safetensors"), false)?;
            } else {
                self.progress.bad_epochs += 1;
            }
            self.save_checkpoint()?;
            done_now += 1;
        }
        self.finish().map(Some)
    }

    /// The train shards of each buffer of `epoch`, in order. In memory: one
    /// group, the split already loaded. Streamed: every shard in file order
    /// when the buffer holds them all, else the shards in a seeded order of the
    /// epoch, `train.stream_shards` at a time.
    fn shard_groups(&self, base: &Rng, epoch: usize) -> Vec<Vec<usize>> {
        let k = self.ds.meta.splits.train.shards.len();
        let b = self.cfg.train.stream_shards;
        if !self.ds.streamed || b >= k {
            return vec![(0..k).collect()];
        }
        let mut order: Vec<usize> = (0..k).collect();
        base.fork(2_000_000 + epoch as u64).shuffle(&mut order);
        order.chunks(b).map(<[usize]>::to_vec).collect()
    }

    fn finish(&mut self) -> Result<FinalMetrics> {
        let best = self.run_dir.join("best.safetensors");
        if self.progress.best_epoch == 0 || !best.is_file() {
            bail!(
                "no epoch of {} gave a valid AUC (does the valid split hold both classes?)",
                self.run_dir.display()
            );
        }
        self.load_weights(&best, false)?;
        let pred = self.predict(Which::Test)?;
        pred.save(&self.run_dir.join("predictions_test.safetensors"))?;
        let (p, y, d) = (&pred.probs, &pred.labels, &pred.domains);
        let test = metrics::report(p, y, d, &self.ds.domain_names);
        let test_gauc = pred.users.as_ref().and_then(|u| metrics::gauc(p, y, u));
        let (mut up, mut uy) = (Vec::new(), Vec::new());
        for i in 0..d.len() {
            if self.ds.holdout.contains(&(d[i] as usize)) {
                up.push(p[i]);
                uy.push(y[i]);
            }
        }
        let unseen_auc = metrics::auc(&up, &uy);
        let tail_ids = self.ds.smallest_domains(7);
        let tail: Vec<f64> = tail_ids
            .iter()
            .filter_map(|&d| test.domains[d].auc)
            .collect();
        let fm = FinalMetrics {
            model: self.cfg.model.label().into(),
            recipe: self.ds.meta.recipe.clone(),
            seed: self.cfg.train.seed,
            best_epoch: self.progress.best_epoch,
            epochs_run: self.progress.epochs_done,
            valid_auc: self.progress.best_auc,
            test,
            test_gauc,
            tail_auc: (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64),
            tail_domains: tail_ids
                .iter()
                .map(|&d| self.ds.domain_names[d].clone())
                .collect(),
            unseen_auc,
            unseen_domains: self
                .ds
                .holdout
                .iter()
                .map(|&d| self.ds.domain_names[d].clone())
                .collect(),
            train_seconds: self.progress.seconds,
        };
        write_atomic(
            &self.run_dir.join("metrics.json"),
            serde_json::to_string_pretty(&fm)?.as_bytes(),
        )?;
        crate::report::report(&self.run_dir)?;
        Ok(fm)
    }

    fn weights(&self, with_moments: bool) -> Result<HashMap<String, Tensor>> {
        let dev = &self.device;
        let mut out = HashMap::new();
        for (p, (w, mo)) in self.ps.params().iter().zip(&self.dense.state) {
            out.insert(
                format!("param/{}", p.name),
                Tensor::from_slice(w, w.len(), dev)?,
            );
            if with_moments {
                out.insert(
                    format!("adam_m/{}", p.name),
                    Tensor::from_slice(&mo.m, w.len(), dev)?,
                );
                out.insert(
                    format!("adam_v/{}", p.name),
                    Tensor::from_slice(&mo.v, w.len(), dev)?,
                );
            }
        }
        let tables = [
            ("embedding", Some(&self.table)),
            ("first_order", self.first.as_ref()),
        ];
        for (name, t) in tables {
            if let Some(t) = t {
                out.insert(
                    format!("table/{name}"),
                    Tensor::from_slice(&t.weight, t.weight.len(), dev)?,
                );
                if with_moments {
                    out.insert(
                        format!("adam_m/table/{name}"),
                        Tensor::from_slice(&t.moments.m, t.weight.len(), dev)?,
                    );
                    out.insert(
                        format!("adam_v/table/{name}"),
                        Tensor::from_slice(&t.moments.v, t.weight.len(), dev)?,
                    );
                }
            }
        }
        for (name, v) in self.model.state() {
            out.insert(
                format!("state/{name}"),
                Tensor::from_slice(&v, v.len(), dev)?,
            );
        }
        Ok(out)
    }

    fn save_weights(&self, path: &Path, with_moments: bool) -> Result<()> {
        crate::fsutil::save_tensors_atomic(&self.weights(with_moments)?, path)
    }

    fn load_weights(&mut self, path: &Path, with_moments: bool) -> Result<()> {
        let all = candle_core::safetensors::load(path, &self.device)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let get = |k: &str| -> Result<Vec<f32>> {
            all.get(k)
                .with_context(|| {
                    format!(
                        "{} lacks `{k}` (written by another model or config?)",
                        path.display()
                    )
                })?
                .to_vec1::<f32>()
                .map_err(Into::into)
        };
        let fill = |dst: &mut Vec<f32>, src: Vec<f32>, k: &str| -> Result<()> {
            if dst.len() != src.len() {
                bail!(
                    "{}: `{k}` has {} values, the model {}",
                    path.display(),
                    src.len(),
                    dst.len()
                );
            }
            *dst = src;
            Ok(())
        };
        for (p, (w, mo)) in self.ps.params().iter().zip(self.dense.state.iter_mut()) {
            fill(w, get(&format!("param/{}", p.name))?, &p.name)?;
            if with_moments {
                fill(&mut mo.m, get(&format!("adam_m/{}", p.name))?, &p.name)?;
                fill(&mut mo.v, get(&format!("adam_v/{}", p.name))?, &p.name)?;
            }
            p.var
                .set(&Tensor::from_slice(w, p.var.shape(), &self.device)?)?;
        }
        for (name, t) in [
            ("embedding", Some(&mut self.table)),
            ("first_order", self.first.as_mut()),
        ] {
            if let Some(t) = t {
                fill(&mut t.weight, get(&format!("table/{name}"))?, name)?;
                if with_moments {
                    fill(
                        &mut t.moments.m,
                        get(&format!("adam_m/table/{name}"))?,
                        name,
                    )?;
                    fill(
                        &mut t.moments.v,
                        get(&format!("adam_v/table/{name}"))?,
                        name,
                    )?;
                }
            }
        }
        let state: Vec<(String, Vec<f32>)> = self
            .model
            .state()
            .into_iter()
            .map(|(n, _)| -> Result<_> { Ok((n.clone(), get(&format!("state/{n}"))?)) })
            .collect::<Result<_>>()?;
        self.model.load_state(&state)?;
        Ok(())
    }

    fn save_checkpoint(&self) -> Result<()> {
        self.save_weights(&self.run_dir.join("checkpoint.safetensors"), true)?;
        let mut lines = String::new();
        for m in &self.progress.history {
            lines.push_str(&serde_json::to_string(m)?);
            lines.push('\n');
        }
        write_atomic(&self.run_dir.join("metrics.jsonl"), lines.as_bytes())?;
        // Written last: a checkpoint counts once this file names its epoch.
        write_atomic(
            &self.run_dir.join("checkpoint.json"),
            serde_json::to_string_pretty(&self.progress)?.as_bytes(),
        )
    }

    fn load_checkpoint(&mut self) -> Result<()> {
        let p = self.run_dir.join("checkpoint.json");
        self.progress = serde_json::from_slice(&std::fs::read(&p)?)
            .with_context(|| format!("{} is not a checkpoint", p.display()))?;
        let w = self.run_dir.join("checkpoint.safetensors");
        self.load_weights(&w, true)
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

fn progress_bar(steps: u64, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(steps);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "epoch {epoch}/{epochs} [{{bar:30}}] {{pos}}/{{len}} {{msg}} eta {{eta}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb
}

/// The feature fields `cfg` asks for (`model.features`, empty = all), less the
/// domain-defining ones when `model.domain_fields = "drop"`.
fn features(cfg: &Config, dataset_dir: &Path) -> Result<Vec<String>> {
    kept_features(
        cfg,
        dataset_dir,
        &cfg.model.features,
        cfg.model.domain_fields,
    )
    .context("model.domain_fields")
}

/// `model.bags`, less the recipe's domain-defining fields when
/// `model.domain_fields` is `drop`.
fn bag_fields(cfg: &Config, dataset_dir: &Path) -> Result<Vec<String>> {
    let bags = &cfg.model.bags;
    if bags.is_empty() || cfg.model.domain_fields == DomainFields::Keep {
        return Ok(bags.clone());
    }
    let meta = crate::data::meta::Meta::read(dataset_dir)?;
    let recipe: crate::data::recipe::Recipe = meta
        .recipe
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let drop = recipe.domain_fields(&cfg.data.criteo.domain_field);
    Ok(bags.iter().filter(|b| !drop.contains(b)).cloned().collect())
}

/// `requested` (empty = every categorical field), less the recipe's
/// domain-defining fields when `mode` is `drop`.
pub fn kept_features(
    cfg: &Config,
    dataset_dir: &Path,
    requested: &[String],
    mode: DomainFields,
) -> Result<Vec<String>> {
    if mode == DomainFields::Keep {
        return Ok(requested.to_vec());
    }
    let meta = crate::data::meta::Meta::read(dataset_dir)?;
    let recipe: crate::data::recipe::Recipe = meta
        .recipe
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let drop = recipe.domain_fields(&cfg.data.criteo.domain_field);
    let all = if requested.is_empty() {
        meta.categorical_fields()
    } else {
        requested.to_vec()
    };
    let kept: Vec<String> = all.into_iter().filter(|f| !drop.contains(f)).collect();
    if kept.is_empty() {
        bail!(
            "domain_fields = \"drop\" leaves no feature of model.features ({}) once {} is dropped",
            requested.join(", "),
            drop.join(", ")
        );
    }
    Ok(kept)
}

/// The directory of the training run `cfg` names: `train.run_name`, or
/// `<model>-<recipe>[-holdout-<domains>]-seed<seed>`, under `train.runs_dir`.
pub fn run_dir(cfg: &Config, recipe: &str) -> PathBuf {
    let t = &cfg.train;
    let name = t.run_name.clone().unwrap_or_else(|| {
        format!(
            "{}-{recipe}{}-seed{}",
            cfg.model.label(),
            holdout_suffix(&cfg.data.holdout_domains),
            t.seed
        )
    });
    t.runs_dir.join(name)
}

/// What a training run reads: the prepared dataset and, for a fixed domain
/// input, the domain-embedding file.
pub fn inputs(cfg: &Config, prepared: &Path) -> Result<fingerprint::Inputs> {
    let i = fingerprint::Inputs::default().prepared(prepared)?;
    match (&cfg.model.domain_input, &cfg.model.domain_embeddings) {
        (DomainInput::Fixed, Some(f)) => i.file("domain embeddings", f),
        _ => Ok(i),
    }
}

/// `-holdout-a+b` for held-out domains `a`, `b`; empty without.
pub fn holdout_suffix(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("-holdout-{}", names.join("+"))
    }
}

fn fmt(x: Option<f64>) -> String {
    x.map_or("n/a".into(), |v| format!("{v:.4}"))
}

pub fn report_md(m: &FinalMetrics, history: &[EpochMetrics]) -> String {
    let mut s = format!(
        "# {} on {} (seed {})\n\nBest valid epoch {} of {} (valid AUC {}).\n\n| test metric | value |\n| --- | --- |\n| AUC | {} |\n| logloss | {:.4} |\n| weighted domain AUC | {} |\n| AUC of the 7 smallest domains (mean) | {} |\n",
        m.model,
        m.recipe,
        m.seed,
        m.best_epoch,
        m.epochs_run,
        fmt(m.valid_auc),
        fmt(m.test.auc),
        m.test.logloss,
        fmt(m.test.weighted_domain_auc),
        fmt(m.tail_auc)
    );
    if !m.unseen_domains.is_empty() {
        s.push_str(&format!(
            "| AUC of the held-out (unseen) domains {} | {} |\n",
            m.unseen_domains.join(", "),
            fmt(m.unseen_auc)
        ));
    }
    s.push('\n');
    s.push_str("| domain | test rows | AUC |\n| --- | --- | --- |\n");
    for d in &m.test.domains {
        s.push_str(&format!("| {} | {} | {} |\n", d.domain, d.rows, fmt(d.auc)));
    }
    s.push_str("\n| epoch | train loss | valid AUC | valid logloss | seconds |\n| --- | --- | --- | --- | --- |\n");
    for e in history {
        s.push_str(&format!(
            "| {} | {:.4} | {} | {:.4} | {:.1} |\n",
            e.epoch,
            e.train_loss,
            fmt(e.valid_auc),
            e.valid_logloss,
            e.seconds
        ));
    }
    s
}
