//! `pipeline run CONFIG`: the whole pipeline from one config: prepare → embed (the
//! configured method) → pool (the configured mode) → CGC with the pooled domain
//! embeddings as a fixed input → report. A stage whose run directory already
//! holds its finished result, made with the same settings, is reused; an
//! interrupted one is resumed.

use crate::config::{Config, Stage, check_reusable};
use crate::data::fetch::{AssetName, fetch};
use crate::fingerprint::{Freshness, Inputs, set_aside};
use crate::models::config::DomainInput;
use crate::stages::embed::{EmbedResult, embed};
use crate::stages::pool::{PoolResult, pool};
use crate::stages::prepare::prepare;
use crate::train::trainer::{FinalMetrics, holdout_suffix};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct RunSummary {
    pub embed: EmbedResult,
    pub pool: PoolResult,
    pub cgc: FinalMetrics,
    pub cgc_dir: PathBuf,
    pub report: PathBuf,
    pub seconds: f64,
    /// Whether embed, pool and train-cgc were computed now or reused.
    pub origins: [Origin; 3],
}

/// Whether a stage was computed now or reused from disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Computed,
    Reused,
}

fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    serde_json::from_slice(&std::fs::read(p)?)
        .with_context(|| format!("cannot parse {}", p.display()))
}

/// Make `dir` fit to stand in for a run of `cfg`: a finished or interrupted run
/// made with other settings is an error; one made from inputs that have changed
/// since (`inputs`, hashed only when there is such a run) is set aside, to be
/// recomputed.
fn settle(
    dir: &Path,
    cfg: &Config,
    stage: Stage,
    inputs: impl FnOnce() -> Result<Inputs>,
) -> Result<()> {
    let started = ["result.json", "metrics.json", "checkpoint.json"]
        .iter()
        .any(|f| dir.join(f).is_file());
    if !started {
        return Ok(());
    }
    check_reusable(dir, cfg, stage)?;
    if let Freshness::Changed(what) = inputs()?.compare(dir)? {
        set_aside(dir, &what)?;
    }
    Ok(())
}

/// The embed run `cfg` names, reused when finished with the same settings and
/// inputs, resumed when interrupted.
pub fn ensure_embed(cfg: &Config) -> Result<(EmbedResult, Origin)> {
    let e = &cfg.embed;
    let defaults = crate::stages::embed::EmbedConfig::default();
    if e.method == crate::stages::embed::Method::Encoder {
        if e.encoder == defaults.encoder && !Path::new(&defaults.encoder).is_dir() {
            fetch(
                &[AssetName::Minilm],
                &cfg.data.raw_dir,
                &cfg.data.models_dir,
            )
            .context("fetching all-MiniLM-L6-v2 (or set embed.encoder to a local checkpoint)")?;
        }
    } else if e.model == defaults.model && !Path::new(&defaults.model).is_file() {
        fetch(
            &[AssetName::Smollm2],
            &cfg.data.raw_dir,
            &cfg.data.models_dir,
        )
        .context("fetching SmolLM2-135M-Instruct (or set embed.model to a local checkpoint)")?;
    }
    let prepared = prepare(cfg, false)?;
    let dir = e
        .runs_dir
        .join(e.run_name(&prepared.meta.recipe, &cfg.data.holdout_domains));
    settle(&dir, cfg, Stage::Embed, || {
        crate::stages::embed::inputs(cfg, &prepared.dir)
    })?;
    if dir.join("result.json").is_file() {
        return Ok((read_json(&dir.join("result.json"))?, Origin::Reused));
    }
    let resume = dir.join("checkpoint.json").is_file();
    let r = embed(cfg, resume, None)?.context("embed stopped early")?;
    Ok((r, Origin::Computed))
}

/// The pool run `cfg` names, reused when finished with the same settings and inputs.
pub fn ensure_pool(cfg: &Config) -> Result<(PoolResult, Origin)> {
    let prepared = prepare(cfg, false)?;
    let recipe = &prepared.meta.recipe;
    let dir = cfg.pool.run_dir(cfg, recipe);
    settle(&dir, cfg, Stage::Pool, || {
        crate::stages::pool::inputs(&prepared.dir, &cfg.pool.source(cfg, recipe))
    })?;
    if dir.join("result.json").is_file() {
        return Ok((read_json(&dir.join("result.json"))?, Origin::Reused));
    }
    Ok((pool(cfg)?, Origin::Computed))
}

/// The training run `cfg` names (train.run_name or the model's default name),
/// reused when finished with the same settings and inputs, resumed when interrupted.
pub fn ensure_train(cfg: &Config) -> Result<(FinalMetrics, PathBuf, Origin)> {
    let prepared = prepare(cfg, false)?;
    let dir = crate::train::trainer::run_dir(cfg, &prepared.meta.recipe);
    settle(&dir, cfg, Stage::Train, || {
        crate::train::trainer::inputs(cfg, &prepared.dir)
    })?;
    let done = dir.join("metrics.json");
    if done.is_file() {
        return Ok((read_json(&done)?, dir, Origin::Reused));
    }
    let resume = dir.join("checkpoint.json").is_file();
    let m = crate::stages::train::train(cfg, resume, None)?
        .with_context(|| format!("run {} stopped early", dir.display()))?;
    Ok((m, dir, Origin::Computed))
}

/// `cfg` set up to train its model (`model.name`; CGC by default, in its
/// domain-conditioned form) on the fixed domain embeddings of a pool run.
pub fn llm_head(cfg: &Config, pooled: &Path, run_name: String) -> Config {
    let mut c = cfg.clone();
    c.model.domain_input = DomainInput::Fixed;
    c.model.domain_embeddings = Some(pooled.join("domain_embeddings.safetensors"));
    c.model.domain_embeddings_tensor = "domain_embeddings".into();
    c.train.run_name = Some(run_name);
    c
}

/// The name of a model's run on LLM embeddings: `<model>-llm-<method>-…`.
pub fn llm_run_name(cfg: &Config) -> String {
    format!(
        "{}-llm-{}-{}-{}-{}{}-seed{}",
        cfg.model.label(),
        cfg.embed.method.as_str(),
        cfg.data.recipe,
        cfg.embed.template_stem(),
        cfg.pool.mode.as_str(),
        holdout_suffix(&cfg.data.holdout_domains),
        cfg.train.seed
    )
}

fn reusing(o: Origin) -> &'static str {
    match o {
        Origin::Reused => "reusing ",
        Origin::Computed => "",
    }
}

pub fn run(cfg: &Config) -> Result<RunSummary> {
    let start = Instant::now();
    let prepared = prepare(cfg, false)?;
    eprintln!(
        "data: {} ({} domains)",
        prepared.dir.display(),
        prepared.meta.domains.len()
    );
    let (embedded, oe) = ensure_embed(cfg)?;
    eprintln!("embed: {}{}", reusing(oe), embedded.run_dir);
    let mut pc = cfg.clone();
    pc.pool.from = Some(PathBuf::from(&embedded.run_dir));
    let (pooled, op) = ensure_pool(&pc)?;
    eprintln!("pool: {}{}", reusing(op), pooled.run_dir);
    let mut c = llm_head(&pc, Path::new(&pooled.run_dir), String::new());
    c.train.run_name = Some(llm_run_name(&c));
    let (cgc, dir, ot) = ensure_train(&c)?;
    eprintln!("train-cgc: {}{}", reusing(ot), dir.display());
    let report = crate::report::report(&dir)?;
    Ok(RunSummary {
        embed: embedded,
        pool: pooled,
        cgc,
        cgc_dir: dir,
        report,
        seconds: start.elapsed().as_secs_f64(),
        origins: [oe, op, ot],
    })
}
