//! The training loop: batches grouped by domain, Adam/AdamW, early stopping on
//! valid AUC, a checkpoint after every epoch (weights, optimiser moments, running
//! statistics, counters), exact `--resume`, metrics per epoch as JSON lines and a
//! final `metrics.json` at the best valid epoch.
//!
//! Every random draw of epoch e comes from generators derived from (seed, e), so a
//! run resumed after any epoch ends exactly as the uninterrupted run.
//!
//! Here: building the model, the step and the loop. Apart: batch assembly
//! ([`batch`]), scoring ([`predict`]), unseen domains ([`unseen`]), weights and
//! checkpoints ([`checkpoint`]) and `report.md` ([`report`]).

use crate::config::{Config, Stage, check_reusable};
use crate::data::dataset::Dataset;
use crate::dist::{Collective, Single};
use crate::fingerprint;
use crate::fsutil::write_atomic;
use crate::metrics::{self, Report};
use crate::models::config::{DomainFields, DomainInput};
use crate::models::embedding::{EmbeddingTable, Layout};
use crate::models::{self, CtrModel, InputSpec};
use crate::nn::linear::Linear;
use crate::nn::ops::{bce_with_logits, sigmoid};
use crate::nn::optim::{AdamConfig, DenseAdam};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use crate::runs::holdout_suffix;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

mod batch;
mod checkpoint;
mod parallel;
mod predict;
mod report;
mod unseen;

pub use predict::{Predictions, Which};

pub use report::report_md;
pub use unseen::UnseenWeights;

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
    /// `cate_id` among the features: the history's categories are looked up there.
    cate_slot: Option<usize>,
    /// The model reads the compact history tables ([`models::Model::HISTORY_TABLES`]).
    history_tables: bool,
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
    /// The other ranks of a data-parallel run ([`crate::dist`]); [`Single`] alone.
    comm: Rc<dyn Collective>,
}

impl Trainer {
    /// Build the model for `cfg` on the prepared dataset in `dataset_dir`.
    pub fn new(cfg: &Config, dataset_dir: &Path) -> Result<Trainer> {
        let m = &cfg.model;
        let t = &cfg.train;
        cfg.validate()?;
        let history = m.history_len();
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
                let all = crate::tensor_io::load_safetensors(path)
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
                crate::tensor_io::check_finite(&mat, path, name)?;
                crate::tensor_io::check_magnitude(&mat, path, name, 1e6)?;
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
        // The history's categories and compact tables only for a model that reads them.
        let history_tables = m.name.needs_history_tables();
        let cate_slot = ds
            .features
            .iter()
            .position(|f| f == "cate_id")
            .filter(|_| history_tables);
        if m.name.needs_history() && item_slot.is_none() {
            bail!(
                "model {} reads the user's history of items: it needs item_id among model.features",
                m.name.as_str()
            );
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
            cate_slot,
            history_tables,
            table,
            first,
            ps,
            model,
            dense,
            fixed,
            progress: Progress::default(),
            stop_after_buffers: None,
            comm: Rc::new(Single),
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

    /// Train as one rank of a data-parallel run: rank 0 writes every file, and
    /// each step and each scoring pass is shared with the other ranks.
    pub fn set_collective(&mut self, comm: Rc<dyn Collective>) -> Result<()> {
        if comm.size() > 1 {
            if self.cfg.model.name == models::config::ModelName::Star {
                bail!(
                    "STAR normalises with each batch's statistics, which do not split over ranks: \
                     train it in one process"
                );
            }
            if self.cfg.model.dropout > 0.0 {
                bail!(
                    "model.dropout = {}: dropout masks would depend on how a batch is split over \
                     ranks; set it to 0 to train on several ranks",
                    self.cfg.model.dropout
                );
            }
            if self.ds.history_len > 0 {
                bail!(
                    "{} reads the user's history, which does not train on several ranks yet: train it in one process",
                    self.cfg.model.label()
                );
            }
        }
        self.comm = comm;
        Ok(())
    }

    /// Each row's loss weight, from its domain, when the model weighs domains.
    fn row_weights(&self, domains: &[u32]) -> Result<Option<Tensor>> {
        let Some(w) = self.model.loss_weights() else {
            return Ok(None);
        };
        let v: Vec<f32> = domains.iter().map(|&d| w[d as usize]).collect();
        Ok(Some(Tensor::from_vec(v, domains.len(), &self.device)?))
    }

    /// Whether this process writes the run's files (rank 0, or the only one).
    fn writes(&self) -> bool {
        self.comm.rank() == 0
    }

    fn train_step(&mut self, rows: &[usize], rng: &mut Rng) -> Result<f64> {
        if self.comm.size() > 1 {
            return self.train_step_parallel(rows, rng);
        }
        let split = std::mem::take(&mut self.ds.train);
        let p = self.prepare(&split, rows, None);
        self.ds.train = split;
        let p = p?;
        let out = self.model.forward(&p.inputs, true, rng)?;
        let bce = match self.row_weights(&p.domains)? {
            Some(w) => {
                (crate::nn::ops::bce_with_logits_weighted_sum(&out.logits, &p.labels, &w)?
                    / rows.len() as f64)?
            }
            None => bce_with_logits(&out.logits, &p.labels)?,
        };
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
        // Every rank has read the run folder before rank 0 writes to it.
        self.comm.barrier()?;
        if self.writes() {
            std::fs::create_dir_all(&self.run_dir)?;
            write_atomic(
                &self.run_dir.join("config.toml"),
                self.cfg.to_toml().as_bytes(),
            )?;
            inputs.save(&self.run_dir)?;
        }
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
            let pb = if self.writes() {
                progress_bar(steps as u64, epoch, t.epochs)
            } else {
                indicatif::ProgressBar::hidden()
            };
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
                    if self.writes() {
                        self.save_checkpoint()?;
                    }
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
            self.check_replicas()?;
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
                if self.writes() {
                    self.save_weights(&self.run_dir.join("best.safetensors"), false)?;
                }
            } else {
                self.progress.bad_epochs += 1;
            }
            if self.writes() {
                self.save_checkpoint()?;
            }
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
        // Rank 0 has written the best weights every rank loads.
        self.comm.barrier()?;
        let best = self.run_dir.join("best.safetensors");
        if self.progress.best_epoch == 0 || !best.is_file() {
            bail!(
                "no epoch of {} gave a valid AUC (does the valid split hold both classes?)",
                self.run_dir.display()
            );
        }
        self.load_weights(&best, false)?;
        let pred = self.predict(Which::Test)?;
        if self.writes() {
            pred.save(&self.run_dir.join("predictions_test.safetensors"))?;
        }
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
        if self.writes() {
            write_atomic(
                &self.run_dir.join("metrics.json"),
                serde_json::to_string_pretty(&fm)?.as_bytes(),
            )?;
        }
        Ok(fm)
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
    let (_, drop) = domain_defining(cfg, dataset_dir)?;
    Ok(bags.iter().filter(|b| !drop.contains(b)).cloned().collect())
}

/// The prepared dataset's meta.json and its recipe's domain-defining fields.
fn domain_defining(
    cfg: &Config,
    dataset_dir: &Path,
) -> Result<(crate::data::meta::Meta, Vec<String>)> {
    let meta = crate::data::meta::Meta::read(dataset_dir)?;
    // A table records its own; a built-in recipe's name says them.
    if let Some(fields) = &meta.domain_fields {
        let drop = fields.clone();
        return Ok((meta, drop));
    }
    let recipe: crate::data::recipe::Recipe = meta
        .recipe
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let drop = recipe.domain_fields(&cfg.data.criteo.domain_field);
    Ok((meta, drop))
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
    let (meta, drop) = domain_defining(cfg, dataset_dir)?;
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
