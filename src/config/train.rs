//! `[train]`: the optimisation recipe. Defaults: Adam, lr 1e-3, weight decay 1e-5
//! (L2), batch 1024, up to 50 epochs, early stopping on valid AUC with patience 4
//! after at least 20 epochs.

use crate::nn::optim::OptimizerKind;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seed of initialisation, shuffling, dropout and gate noise. Default 1.
    pub seed: u64,
    /// Training batch size. Default 1024.
    pub batch_size: usize,
    /// Evaluation batch size. Default 8192.
    pub eval_batch_size: usize,
    /// Maximum epochs. Default 50.
    pub epochs: usize,
    /// Stop after this many epochs without a better valid AUC. Default 4.
    pub patience: usize,
    /// Never stop early before this many epochs (or `epochs`, if fewer); the best
    /// valid epoch is still chosen among all of them. Default 20: with patience 4
    /// alone, M2M and CGC runs stopped on the early plateau of the valid AUC
    /// (results/capacity/README.md).
    pub min_epochs: usize,
    /// `adam` (L2 in the gradient) or `adamw` (decoupled). Default `adam`.
    pub optimizer: OptimizerKind,
    /// Default 1e-3.
    pub lr: f64,
    /// Default 1e-5.
    pub weight_decay: f64,
    /// Runs are written to `<runs_dir>/<run name>/`. Default `runs`.
    pub runs_dir: PathBuf,
    /// Default `<model>-<recipe>-seed<seed>`.
    pub run_name: Option<String>,
    /// Bandwidth of the Gaussian kernel that mixes the seen domains for a held-out
    /// one: `pooling` (w = 1/√h, the pooling's default) or `median` (w = 1/√m, m
    /// the median squared distance between the seen domains' embeddings). Default
    /// `pooling`.
    pub unseen_kernel: UnseenKernel,
    /// Stream the train split instead of loading it: each epoch reads its shards
    /// in a seeded order, this many at a time, shuffles the rows of those shards
    /// together and trains on them, so memory holds one buffer, not the split.
    /// A checkpoint is written after every buffer, so `--resume` continues
    /// mid-epoch. A buffer holding every shard reproduces the in-memory run
    /// exactly. Default 0: load the whole split.
    #[serde(skip_serializing_if = "crate::checks::is_zero")]
    pub stream_shards: usize,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UnseenKernel {
    Pooling,
    Median,
}

impl TrainConfig {
    /// Ranges of every `[train]` key (see [`crate::config::Config::validate`]).
    pub(crate) fn validate(&self, c: &mut crate::checks::Checks) {
        c.at_least_one("train.batch_size", self.batch_size);
        c.at_least_one("train.eval_batch_size", self.eval_batch_size);
        c.at_least_one("train.epochs", self.epochs);
        c.at_least_one("train.patience", self.patience);
        c.positive("train.lr", self.lr);
        c.non_negative("train.weight_decay", self.weight_decay);
        c.dir("train.runs_dir", &self.runs_dir);
        c.run_name("train.run_name", self.run_name.as_deref());
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 1,
            batch_size: 1024,
            eval_batch_size: 8192,
            epochs: 50,
            patience: 4,
            min_epochs: 20,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 1e-5,
            runs_dir: "runs".into(),
            run_name: None,
            unseen_kernel: UnseenKernel::Pooling,
            stream_shards: 0,
        }
    }
}
