//! `pipeline run CONFIG`: the pipeline as far as it is built, from one config:
//! prepare → embed (the configured method) → CGC with the LLM's domain
//! embeddings as a fixed input. A stage whose run directory already holds its
//! finished result is reused, not recomputed.

use crate::config::Config;
use crate::data::fetch::{AssetName, fetch};
use crate::models::config::{DomainInput, ModelName};
use crate::stages::embed::{EmbedResult, embed};
use crate::stages::prepare::prepare;
use crate::train::trainer::FinalMetrics;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

pub struct RunSummary {
    pub embed: EmbedResult,
    pub cgc: FinalMetrics,
    pub cgc_dir: PathBuf,
    pub seconds: f64,
}

pub fn run(cfg: &Config) -> Result<RunSummary> {
    let start = Instant::now();
    let prepared = prepare(cfg, false)?;
    eprintln!(
        "data: {} ({} domains)",
        prepared.dir.display(),
        prepared.meta.domains.len()
    );
    let default_model = crate::stages::embed::EmbedConfig::default().model;
    if cfg.embed.model == default_model && !std::path::Path::new(&default_model).is_file() {
        fetch(
            &[AssetName::Smollm2],
            &cfg.data.raw_dir,
            &cfg.data.models_dir,
        )
        .context("fetching SmolLM2-135M-Instruct (or set embed.model to a local checkpoint)")?;
    }
    let e = &cfg.embed;
    let stem = e.template_stem();
    let name = e.run_name(&prepared.meta.recipe);
    let done = e.runs_dir.join(&name).join("result.json");
    let embedded: EmbedResult = if done.is_file() {
        crate::config::check_reusable(&e.runs_dir.join(&name), cfg)?;
        eprintln!("embed: reusing {}", done.display());
        serde_json::from_slice(&std::fs::read(&done)?)?
    } else {
        let resume = e.runs_dir.join(&name).join("checkpoint.json").is_file();
        embed(cfg, resume, None)?.context("embed stopped early")?
    };
    let mut c = cfg.clone();
    c.model.name = ModelName::Cgc;
    c.model.domain_input = DomainInput::Fixed;
    c.model.domain_embeddings =
        Some(PathBuf::from(&embedded.run_dir).join("domain_embeddings.safetensors"));
    c.train.run_name = Some(format!(
        "cgc-llm-{}-{}-{stem}-seed{}",
        e.method.as_str(),
        prepared.meta.recipe,
        c.train.seed
    ));
    let dir = c
        .train
        .runs_dir
        .join(c.train.run_name.as_deref().unwrap_or_default());
    let metrics = dir.join("metrics.json");
    let cgc: FinalMetrics = if metrics.is_file() {
        crate::config::check_reusable(&dir, &c)?;
        eprintln!("train-cgc: reusing {}", metrics.display());
        serde_json::from_slice(&std::fs::read(&metrics)?)?
    } else {
        let resume = dir.join("checkpoint.json").is_file();
        crate::stages::train::train(&c, resume, None)?.context("train-cgc stopped early")?
    };
    Ok(RunSummary {
        embed: embedded,
        cgc,
        cgc_dir: dir,
        seconds: start.elapsed().as_secs_f64(),
    })
}
