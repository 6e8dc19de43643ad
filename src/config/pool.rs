//! `[pool]`: how `pipeline pool` turns token states into one vector per domain.

use crate::config::Config;
use crate::geometry::Normalize;
use crate::pool::Query;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// No kernel: the domain vector is the query itself (`pool.query`: the last
    /// token's state, the mean state, or the mean of the domain-name tokens).
    Plain,
    /// w fixed (`scale`, default 1/√h); nothing is trained.
    Parameterless,
    /// w learned per dimension (and optionally a query offset) with the probe.
    Parametric,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Plain => "plain",
            PoolMode::Parameterless => "parameterless",
            PoolMode::Parametric => "parametric",
        }
    }
}

/// Where `pool.normalize` estimates its mean and scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NormalizeOn {
    /// The training domains' prompt tokens (a held-out domain's never).
    Domains,
    /// The tokens of the embed run's background prompts (`embed.background`).
    Background,
}

impl NormalizeOn {
    fn is_domains(&self) -> bool {
        *self == NormalizeOn::Domains
    }
}

/// `[pool]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// `plain`, `parameterless` or `parametric`. Default `parametric`.
    pub mode: PoolMode,
    /// The query: `last` (last real token's state), `mean` (of all the prompt's
    /// tokens) or `name` (of the domain-name tokens). Default `last`.
    pub query: Query,
    /// The token states' geometry before pooling: `none`, `standardize` (per
    /// dimension) or `whiten`, estimated on the training domains' tokens only.
    /// Default `none`.
    pub normalize: Normalize,
    /// Where `normalize` is estimated: `domains` (the training domains'
    /// tokens) or `background` (the background prompts' tokens, which the embed
    /// run must have made: `embed.background`). Default `domains`. Left out of
    /// the written config when default, so configs (and the grid's run names,
    /// which hash them) read as before the key existed.
    #[serde(skip_serializing_if = "NormalizeOn::is_domains")]
    pub normalize_on: NormalizeOn,
    /// `whiten`: shrinkage α ∈ (0, 1] of the correlation matrix towards the
    /// identity (1 = standardise only). Default 0.1.
    pub shrinkage: f64,
    /// Parametric: learn an offset added to the query. Default true.
    pub learned_query: bool,
    /// Parameterless: w in every dimension. Default 1/√h.
    pub scale: Option<f64>,
    /// Parametric: Adam learning rate of w and the query offset. Default 1e-3.
    pub lr: f64,
    /// Parametric: CTR batches whose gradients w.r.t. the pooled matrix are
    /// averaged per pooling step (the probe steps on every batch). Default 5.
    pub batches_per_step: usize,
    /// Parametric: maximum epochs over the train split. Default 10.
    pub epochs: usize,
    /// Parametric: early stopping patience on probe valid AUC. Default 2.
    pub patience: usize,
    /// Parametric: seed of the probe's initialisation and the shuffling. Default 1.
    pub seed: u64,
    /// The embed run whose `token_states.safetensors` are pooled. Default: the run
    /// that `[embed]` names.
    pub from: Option<PathBuf>,
    /// Runs go to `<runs_dir>/<run name>/`. Default `runs`.
    pub runs_dir: PathBuf,
    /// Default `pool-<mode>-<embed run>` (+ `-seed<seed>` when parametric).
    pub run_name: Option<String>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            mode: PoolMode::Parametric,
            query: Query::Last,
            normalize: Normalize::None,
            normalize_on: NormalizeOn::Domains,
            shrinkage: 0.1,
            learned_query: true,
            scale: None,
            lr: 1e-3,
            batches_per_step: 5,
            epochs: 10,
            patience: 2,
            seed: 1,
            from: None,
            runs_dir: "runs".into(),
            run_name: None,
        }
    }
}

impl PoolConfig {
    /// Ranges of every `[pool]` key (see [`crate::config::Config::validate`]).
    pub(crate) fn validate(&self, c: &mut crate::checks::Checks) {
        if let Some(s) = self.scale {
            c.positive("pool.scale", s);
        }
        if !(self.shrinkage > 0.0 && self.shrinkage <= 1.0) {
            c.bad("pool.shrinkage", self.shrinkage, "must be in (0, 1]");
        }
        if self.normalize_on == NormalizeOn::Background && self.normalize == Normalize::None {
            c.bad(
                "pool.normalize_on",
                "\"background\"",
                "needs pool.normalize = \"standardize\" or \"whiten\" (there is nothing to estimate)",
            );
        }
        c.positive("pool.lr", self.lr);
        c.at_least_one("pool.batches_per_step", self.batches_per_step);
        c.at_least_one("pool.epochs", self.epochs);
        c.at_least_one("pool.patience", self.patience);
        if let Some(f) = &self.from {
            c.dir("pool.from", f);
        }
        c.dir("pool.runs_dir", &self.runs_dir);
        c.run_name("pool.run_name", self.run_name.as_deref());
    }

    /// The embed run to pool.
    pub fn source(&self, cfg: &Config, recipe: &str) -> PathBuf {
        self.from.clone().unwrap_or_else(|| {
            cfg.embed
                .runs_dir
                .join(cfg.embed.run_name(recipe, &cfg.data.holdout_domains))
        })
    }

    /// The run directory: `run_name`, or
    /// `pool-<mode>[-<query>][-<normalize>]-<embed run>[-seed<seed>]`, the query
    /// and the normalisation named when not the defaults (`last`, `none`), the
    /// seed when parametric.
    /// `[-<query>][-<normalize>[-bg]]`, each when not the default (`last`,
    /// `none`; `-bg` when normalised on the background prompts).
    pub fn options_suffix(&self) -> String {
        let mut opts = String::new();
        if self.query != Query::Last {
            opts.push('-');
            opts.push_str(self.query.as_str());
        }
        if self.normalize != Normalize::None {
            opts.push('-');
            opts.push_str(self.normalize.as_str());
            if self.normalize_on == NormalizeOn::Background {
                opts.push_str("-bg");
            }
        }
        opts
    }

    pub fn run_dir(&self, cfg: &Config, recipe: &str) -> PathBuf {
        let name = self.run_name.clone().unwrap_or_else(|| {
            let from = self.source(cfg, recipe);
            let stem = from
                .file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let opts = self.options_suffix();
            match self.mode {
                PoolMode::Plain => format!("pool-plain{opts}-{stem}"),
                PoolMode::Parameterless => format!("pool-parameterless{opts}-{stem}"),
                PoolMode::Parametric => {
                    format!("pool-parametric{opts}-{stem}-seed{}", self.seed)
                }
            }
        });
        self.runs_dir.join(name)
    }
}
