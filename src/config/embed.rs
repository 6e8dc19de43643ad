//! `[embed]`: how `pipeline embed` turns one prompt per domain into LLM token
//! states (model, template, adapter method and its training).

use crate::llm::adapters::{LoraConfig, PrefixConfig};
pub use crate::models::probe::ProbeHead;
use crate::models::probe::ProbeSettings;
use crate::pool::Query;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The frozen LLM as is (the zero-training baseline).
    None,
    Lora,
    Ptuning,
    /// A frozen sentence encoder (`embed.encoder`, all-MiniLM-L6-v2 by default)
    /// instead of the decoder LLM: the mean of its last-layer token states over
    /// the prompt (the baseline an LLM embedding must beat).
    Encoder,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::Lora => "lora",
            Method::Ptuning => "ptuning",
            Method::Encoder => "encoder",
        }
    }
}

/// `embed.layer`: one hidden-state index, or a list whose states are averaged.
/// Index k is the output of the k-th decoder block (0: the token embeddings;
/// the number of layers: the last block, as without the key). Every chosen
/// layer's states go through the model's final RMS norm, as the last layer's
/// always did, so layers of different scales average and pool alike.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LayerChoice {
    One(usize),
    Many(Vec<usize>),
}

impl LayerChoice {
    pub fn list(&self) -> Vec<usize> {
        match self {
            LayerChoice::One(k) => vec![*k],
            LayerChoice::Many(v) => v.clone(),
        }
    }
}

/// `[embed]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EmbedConfig {
    /// A .gguf file, a Hugging Face checkpoint folder, or a Hub id.
    /// Default `data/models/SmolLM2-135M-Instruct.Q4_1.gguf`.
    pub model: String,
    /// `none`, `lora` or `ptuning`. Default `lora`.
    pub method: Method,
    /// Prompt template. Default `prompts/stats.txt`.
    pub template: PathBuf,
    pub lora: LoraConfig,
    pub ptuning: PrefixConfig,
    /// Query of the parameterless pooling: `last`, `mean` or `name` (the mean of
    /// the domain-name tokens). Default `last`.
    pub query: Query,
    /// Which hidden states are written and pooled: an index 0..=layers (0 the
    /// token embeddings, `layers` the last block) or a list of them, averaged.
    /// Default: the last layer.
    pub layer: Option<LayerChoice>,
    /// `method = "encoder"`: the sentence encoder, a BERT checkpoint folder
    /// (`config.json`, `tokenizer.json`, safetensors). Default
    /// `data/models/all-MiniLM-L6-v2` (`pipeline data fetch minilm`).
    pub encoder: String,
    /// Probe: field embedding size. Default 16.
    pub probe_dim: usize,
    /// Probe hidden layers. Default [32].
    pub probe_hidden: Vec<usize>,
    /// Probe features: `drop` (default) leaves the recipe's domain-defining
    /// field(s) out, so the only domain information the probe's objective can
    /// use (and push into the adapters) comes through the domain embedding;
    /// `keep` feeds them as features too.
    pub probe_domain_fields: crate::models::config::DomainFields,
    /// Probe head: `gated` (default) scales each field's embedding by a gate
    /// unit on the domain embedding (EPNet-style), so the domain can change how
    /// every feature counts; `concat` only appends it to the features.
    pub probe_head: ProbeHead,
    /// Learning rate of the adapters. Default 1e-3.
    pub lr: f64,
    /// Learning rate of the probe. Default 1e-3.
    pub probe_lr: f64,
    /// CTR batch size. Default 1024.
    pub batch_size: usize,
    /// CTR batches whose domain-matrix gradients are summed per LLM backward. Default 20.
    pub batches_per_llm_step: usize,
    /// Epochs over the train split. Default 8.
    pub epochs: usize,
    /// Early stopping patience on probe valid AUC. Default 2.
    pub patience: usize,
    /// Default 1.
    pub seed: u64,
    /// Longest prompt in tokens (longer ones are an error). Default 512.
    pub max_prompt_tokens: usize,
    /// Where the LLM (weights, adapters, forward and backward) runs: `cpu`, `cuda`
    /// (GPU 0) or `cuda:N`; the probe stays on the CPU. CUDA needs a build with
    /// `--features cuda`. An execution setting: runs made on another device are
    /// reused. Default `cpu`.
    pub device: String,
    /// Background names: a text file, one name per line (`#` starts a
    /// comment), e.g. prompts/background/occupations.txt. Each is rendered with
    /// the template as a domain of its own (the template may then use only
    /// `{dataset}`, `{domain}` and `{category_name}`) and run through the model
    /// (with the adapters of the best epoch); their token states go to
    /// `background_states.safetensors`, for `pool.normalize_on = "background"`.
    /// Default none.
    pub background: Option<PathBuf>,
    /// Episodes: the share of the training domains left out of the probe's
    /// updates in each epoch (a new random subset per epoch, from the seed).
    /// Their rows still send the adapters their gradient, through a probe that
    /// did not fit them that epoch, so the adapters are pushed towards
    /// embeddings a head can read for domains it has not trained on. Each epoch
    /// logs the probe's valid AUC on those domains and on the others. Needs
    /// `lora` or `ptuning`. Left out of written configs when 0. Default 0 (off).
    #[serde(skip_serializing_if = "is_zero")]
    pub episodes: f64,
    /// Runs go to `<runs_dir>/<run name>/`. Default `runs`.
    pub runs_dir: PathBuf,
    /// Default `embed-<method>-<recipe>-<template>[-layer…][-bg-…][-ep<percent>][-holdout-…]-seed<seed>`.
    pub run_name: Option<String>,
}

impl EmbedConfig {
    /// The probe's settings: `probe_dim`, `probe_hidden`, `probe_lr`, `probe_head`.
    pub fn probe(&self) -> ProbeSettings {
        ProbeSettings {
            dim: self.probe_dim,
            hidden: self.probe_hidden.clone(),
            lr: self.probe_lr,
            head: self.probe_head,
        }
    }

    /// Ranges of every `[embed]` key, LoRA and P-Tuning included (see
    /// [`crate::config::Config::validate`]).
    pub(crate) fn validate(&self, c: &mut crate::checks::Checks) {
        if self.model.trim().is_empty() {
            c.bad(
                "embed.model",
                "\"\"",
                "must be a .gguf file, a checkpoint folder or a Hub id",
            );
        }
        c.file("embed.template", &self.template);
        if let Some(b) = &self.background {
            c.file("embed.background", b);
        }
        let l = &self.lora;
        c.at_least_one("embed.lora.r", l.r);
        c.positive("embed.lora.alpha", l.alpha);
        c.fraction("embed.lora.dropout", l.dropout);
        if l.targets.is_empty() {
            c.bad(
                "embed.lora.targets",
                "[]",
                "name at least one projection (q, k, v, o, gate, up, down)",
            );
        }
        let p = &self.ptuning;
        c.at_least_one("embed.ptuning.virtual_tokens", p.virtual_tokens);
        c.at_least_one("embed.ptuning.projection_hidden", p.projection_hidden);
        c.non_negative("embed.ptuning.init_std", p.init_std);
        c.at_least_one("embed.probe_dim", self.probe_dim);
        c.widths("embed.probe_hidden", &self.probe_hidden, false);
        c.positive("embed.lr", self.lr);
        c.positive("embed.probe_lr", self.probe_lr);
        c.at_least_one("embed.batch_size", self.batch_size);
        c.at_least_one("embed.batches_per_llm_step", self.batches_per_llm_step);
        c.at_least_one("embed.epochs", self.epochs);
        c.at_least_one("embed.patience", self.patience);
        c.at_least_one("embed.max_prompt_tokens", self.max_prompt_tokens);
        if let Some(l) = &self.layer {
            let v = l.list();
            if v.is_empty() {
                c.bad("embed.layer", "[]", "name at least one layer");
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(k) = v.iter().find(|k| !seen.insert(**k)) {
                c.bad(
                    "embed.layer",
                    format!("{v:?}"),
                    format!("layer {k} is named twice"),
                );
            }
        }
        if self.encoder.trim().is_empty() {
            c.bad(
                "embed.encoder",
                "\"\"",
                "must be a BERT checkpoint folder (config.json, tokenizer.json, safetensors)",
            );
        }
        if let Err(e) = crate::device::DeviceSpec::parse(&self.device) {
            c.bad("embed.device", format!("{:?}", self.device), e);
        }
        if !(0.0..1.0).contains(&self.episodes) {
            c.bad(
                "embed.episodes",
                self.episodes,
                "must be a share of the training domains in [0, 1)",
            );
        } else if self.episodes > 0.0 && !matches!(self.method, Method::Lora | Method::Ptuning) {
            c.bad(
                "embed.episodes",
                self.episodes,
                format!(
                    "episodes train adapters; method `{}` has none (use lora or ptuning, or 0)",
                    self.method.as_str()
                ),
            );
        }
        c.dir("embed.runs_dir", &self.runs_dir);
        c.run_name("embed.run_name", self.run_name.as_deref());
    }

    /// `-ep<percent>` when episodes are on (`-ep25`, `-ep12.5`), else empty.
    pub fn episodes_suffix(&self) -> String {
        if self.episodes > 0.0 {
            // Rounded to 1e-6 percent, so 0.07 reads `7`, not `7.000000000000001`.
            let pct = (self.episodes * 1e8).round() / 1e6;
            format!("-ep{pct}")
        } else {
            String::new()
        }
    }

    /// The template's file stem (`stats` for prompts/stats.txt).
    pub fn template_stem(&self) -> String {
        self.template
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The run directory's name: `run_name`, or
    /// `embed-<method>-<recipe>-<template>[-layer<k>[+<k>…]][-bg-<background>][-holdout-<domains>]-seed<seed>`.
    pub fn run_name(&self, recipe: &str, holdout: &[String]) -> String {
        self.run_name.clone().unwrap_or_else(|| {
            format!(
                "embed-{}-{recipe}-{}{}{}{}{}-seed{}",
                self.method.as_str(),
                self.template_stem(),
                self.layer_suffix(),
                self.background.as_ref().map_or(String::new(), |b| format!(
                    "-bg-{}",
                    b.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )),
                self.episodes_suffix(),
                crate::runs::holdout_suffix(holdout),
                self.seed
            )
        })
    }

    /// `-layer<k>[+<k>…]` when `embed.layer` is set, else empty.
    pub fn layer_suffix(&self) -> String {
        match &self.layer {
            Some(l) => format!(
                "-layer{}",
                l.list()
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join("+")
            ),
            None => String::new(),
        }
    }

    /// The hidden-state indices to read from a decoder of `n` layers, sorted:
    /// `embed.layer`, or the last layer.
    pub fn layers(&self, n: usize) -> Result<Vec<usize>> {
        let mut v = self.layer.as_ref().map_or(vec![n], LayerChoice::list);
        v.sort_unstable();
        v.dedup();
        if let Some(k) = v.iter().find(|&&k| k > n) {
            bail!(
                "embed.layer = {k}: the model has {n} layers, so a layer is 0 (the token embeddings) to {n} (the last block)"
            );
        }
        if v.is_empty() {
            bail!("embed.layer = []: name at least one layer");
        }
        Ok(v)
    }
}

impl Default for EmbedConfig {
    fn default() -> Self {
        EmbedConfig {
            model: "data/models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            method: Method::Lora,
            template: "prompts/stats.txt".into(),
            lora: LoraConfig::default(),
            ptuning: PrefixConfig::default(),
            query: Query::Last,
            layer: None,
            encoder: "data/models/all-MiniLM-L6-v2".into(),
            probe_dim: 16,
            probe_hidden: vec![32],
            probe_domain_fields: crate::models::config::DomainFields::Drop,
            probe_head: ProbeHead::Gated,
            lr: 1e-3,
            probe_lr: 1e-3,
            batch_size: 1024,
            batches_per_llm_step: 20,
            epochs: 8,
            patience: 2,
            seed: 1,
            max_prompt_tokens: 512,
            device: "cpu".into(),
            background: None,
            episodes: 0.0,
            runs_dir: "runs".into(),
            run_name: None,
        }
    }
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episode_suffixes_keep_the_share() {
        let with = |x: f64| {
            EmbedConfig {
                episodes: x,
                ..EmbedConfig::default()
            }
            .episodes_suffix()
        };
        assert_eq!(with(0.0), "");
        assert_eq!(with(0.25), "-ep25");
        assert_eq!(with(0.07), "-ep7");
        assert_eq!(with(0.125), "-ep12.5");
        assert_ne!(with(0.25), with(0.251));
    }
}
