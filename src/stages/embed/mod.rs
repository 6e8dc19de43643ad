//! Stage `embed`: domain embeddings from a frozen decoder LLM.
//!
//! One prompt per domain is rendered from a template and run through the frozen
//! LLM with LoRA, P-Tuning v2 or no adapters. The adapters are trained on the CTR
//! task of all domains together: a small probe (field embeddings ⊕ projected
//! domain vector → logit) learns jointly, BCE on the train split, early stopping
//! on valid AUC. The domain vector is the parameterless Gaussian pooling of the
//! domain's token states.
//! `method = "encoder"` runs a sentence encoder instead (no training).
//!
//! The parts: [`prompts`] (templates → token ids), [`adapters`] (the training
//! loop), [`checkpoint`] (resume), [`encoder`] (the sentence-encoder run).

mod adapters;
mod checkpoint;
pub mod encoder;
pub mod prompts;

use crate::config::Config;
use crate::data::dataset::Dataset;
use crate::data::meta::Catalog;
use crate::device::parse_device;
use crate::fingerprint::Inputs;
use crate::fsutil::{save_tensors_atomic, write_atomic};
use crate::pool;
use crate::stages::prepare::prepare;
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

pub use crate::config::embed::{EmbedConfig, LayerChoice, Method, ProbeHead};
pub use adapters::prompt_states;
use prompts::save_token_states;
pub use prompts::{
    BACKGROUND_FILE, Prompts, background_names, render_prompts, render_prompts_with, require_names,
    template_catalog,
};

/// The prepared dataset with the probe's features (`embed.probe_domain_fields`).
pub(crate) fn probe_dataset(cfg: &Config, dir: &Path) -> Result<Dataset> {
    let f = crate::train::trainer::kept_features(cfg, dir, &[], cfg.embed.probe_domain_fields)
        .context("embed.probe_domain_fields")?;
    Dataset::load(dir, &f, 0)
}

/// A new embed run's directory with what it was made from: `config.toml`,
/// `inputs.json`, and `prompts.json` (each domain's prompt and token count).
pub(crate) fn start_run(
    dir: &Path,
    cfg: &Config,
    inputs: &crate::fingerprint::Inputs,
    ds: &Dataset,
    p: &Prompts,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    inputs.save(dir)?;
    let prompts_json: Vec<_> = ds
        .meta
        .domains
        .iter()
        .zip(&p.texts)
        .zip(&p.lens)
        .map(|((d, t), n)| serde_json::json!({"domain": d.name, "tokens": n, "prompt": t}))
        .collect();
    write_atomic(
        &dir.join("prompts.json"),
        serde_json::to_string_pretty(&prompts_json)?.as_bytes(),
    )
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct EmbedEpoch {
    pub epoch: usize,
    pub probe_train_loss: f64,
    pub probe_valid_auc: Option<f64>,
    pub llm_steps: usize,
    pub seconds: f64,
    /// Episodes: the training domains the probe was not updated on this epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub episode_held_out: Vec<String>,
    /// Episodes: the probe's valid AUC on those domains and on the other
    /// training domains (per-domain AUCs weighted by their valid rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_valid_auc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_valid_auc: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct EmbedResult {
    pub method: String,
    pub recipe: String,
    pub template: String,
    pub model: String,
    pub best_epoch: usize,
    pub probe_valid_auc: Option<f64>,
    pub llm_steps: usize,
    pub wall_seconds: f64,
    pub base_checksum_before: String,
    pub base_checksum_after: String,
    pub run_dir: String,
    /// The hidden states read (averaged when several); empty for the encoder
    /// (its last layer) and for runs made before the setting existed.
    #[serde(default)]
    pub layers: Vec<usize>,
    /// Of the domain embeddings written (see [`pool::kernel_perplexity`]).
    #[serde(default)]
    pub kernel_perplexity: Option<pool::KernelPerplexity>,
    /// With adapters: how far they moved the domain embeddings from the
    /// frozen model's (the same prompts and pooling, no adapters).
    #[serde(default)]
    pub adapter_shift: Option<pool::AdapterShift>,
    /// How many background prompts were embedded (`embed.background`).
    #[serde(default)]
    pub background: Option<usize>,
}

/// The token states, their mask and domain-name mask (`token_states.safetensors`),
/// the domain embeddings (`domain_embeddings.safetensors`) and `domains.json`.
pub(crate) fn save_outputs(
    dir: &Path,
    states: &Tensor,
    p: &Prompts,
    dm: &Tensor,
    names: &[String],
) -> Result<()> {
    let cpu = Device::Cpu;
    save_token_states(&dir.join("token_states.safetensors"), states, p)?;
    let mut de = HashMap::new();
    de.insert("domain_embeddings".to_string(), dm.to_device(&cpu)?);
    save_tensors_atomic(&de, &dir.join("domain_embeddings.safetensors"))?;
    write_atomic(
        &dir.join("domains.json"),
        serde_json::to_string_pretty(&names)?.as_bytes(),
    )
}

/// What an embed run reads: the prepared dataset, the prompt template, the model
/// (the sentence encoder's files for `method = "encoder"`).
pub fn inputs(cfg: &Config, prepared: &Path) -> Result<Inputs> {
    let mut i = Inputs::default()
        .prepared(prepared)?
        .file("prompt template", &cfg.embed.template)?;
    if template_catalog(&cfg.embed.template, prepared)?.is_some() {
        i = i.file("catalogue statistics", &prepared.join(Catalog::FILE))?;
    }
    if let Some(b) = &cfg.embed.background {
        i = i.file("background names", b)?;
    }
    match cfg.embed.method {
        Method::Encoder => i.model(&cfg.embed.encoder),
        _ => i.model(&cfg.embed.model),
    }
}

/// Run the stage; `resume` continues an interrupted run from its last epoch;
/// `stop_after` stops (resumably) once that many epochs are done.
pub fn embed(cfg: &Config, resume: bool, stop_after: Option<usize>) -> Result<Option<EmbedResult>> {
    let e = &cfg.embed;
    cfg.validate()?;
    let start = Instant::now();
    // The LLM's device; the probe, checkpoints and outputs stay on the CPU.
    let device = parse_device(&e.device).context("embed.device")?;
    let prepared = prepare(cfg, false)?;
    let mut ds = probe_dataset(cfg, &prepared.dir)?;
    ds.hold_out(&cfg.data.holdout_domains)?;
    if e.method == Method::Encoder {
        return encoder::embed(cfg, &prepared.dir, &ds, &device, start).map(Some);
    }
    adapters::train(cfg, &prepared.dir, &ds, &device, start, resume, stop_after)
}

/// `pipeline embed`: the config file, these flags (each sets the config key it
/// names), then `--set` (e.g. `--set embed.layer=[10,15,20] --set
/// embed.background=prompts/background/occupations.txt --set embed.episodes=0.25`).
#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArg,
    #[command(flatten)]
    pub settings: crate::config::SetArg,
    /// none, lora, ptuning or encoder (embed.method).
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// last, mean or name: the query of the pooling the probe sees (embed.query).
    #[arg(long, value_enum)]
    pub query: Option<pool::Query>,
    /// Recipe (data.recipe).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Prompt template file (embed.template).
    #[arg(long)]
    pub template: Option<std::path::PathBuf>,
    /// .gguf file, checkpoint folder or Hub id (embed.model).
    #[arg(long)]
    pub model: Option<String>,
    /// Maximum epochs (embed.epochs).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Where the LLM runs: cpu, cuda or cuda:N (embed.device; CUDA needs a build
    /// with --features cuda).
    #[arg(long)]
    pub device: Option<String>,
    /// Seed (embed.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run name under embed.runs_dir (embed.run_name).
    #[arg(long)]
    pub run_name: Option<String>,
    /// Held-out domains (repeatable; data.holdout_domains): their rows leave the
    /// probe's train and valid data.
    #[arg(long = "holdout-domain")]
    pub holdout_domains: Vec<String>,
    /// Runs folder (embed.runs_dir).
    #[arg(long)]
    pub runs_dir: Option<std::path::PathBuf>,
    /// Continue the run from its last checkpoint (one per epoch).
    #[arg(long)]
    pub resume: bool,
    /// Stop (resumably) after this many epochs.
    #[arg(long)]
    pub stop_after_epochs: Option<usize>,
}

/// Runs `pipeline embed` and prints the run and its kernel perplexity.
pub fn command(args: &EmbedArgs) -> Result<()> {
    let cfg = crate::config::Flags::default()
        .key("embed.method", args.method)
        .key("embed.query", args.query)
        .key("data.recipe", args.recipe.as_ref())
        .key("embed.template", args.template.as_ref())
        .key("embed.model", args.model.as_ref())
        .key("embed.epochs", args.epochs)
        .key("embed.device", args.device.as_ref())
        .key("embed.seed", args.seed)
        .key("embed.run_name", args.run_name.as_ref())
        .key(
            "data.holdout_domains",
            (!args.holdout_domains.is_empty()).then_some(&args.holdout_domains),
        )
        .key("embed.runs_dir", args.runs_dir.as_ref())
        .resolve(args.config.config.as_deref(), &args.settings.set)?;
    let Some(r) = embed(&cfg, args.resume, args.stop_after_epochs)? else {
        println!("stopped; continue with --resume");
        return Ok(());
    };
    println!(
        "embed {} on {}: probe valid AUC {} (best epoch {}), {} LLM steps, {:.0} s; outputs in {}",
        r.method,
        r.recipe,
        r.probe_valid_auc
            .map_or("n/a".into(), |a| format!("{a:.4}")),
        r.best_epoch,
        r.llm_steps,
        r.wall_seconds,
        r.run_dir
    );
    if let Some(k) = r.kernel_perplexity {
        println!("{k}");
    }
    Ok(())
}
