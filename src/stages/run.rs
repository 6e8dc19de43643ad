//! `pipeline run CONFIG`: the whole pipeline from one config: prepare → embed (the
//! configured method) → pool (the configured mode) → CGC with the pooled domain
//! embeddings as a fixed input → report. A stage whose run directory already
//! holds its finished result, made with the same settings, is reused; an
//! interrupted one is resumed.

use crate::config::{Config, Stage, check_reusable};
use crate::data::fetch::{AssetName, fetch};
use crate::fingerprint::{Freshness, Inputs, set_aside};
use crate::models::config::DomainInput;
use crate::runs::holdout_suffix;
use crate::stages::embed::{EmbedResult, embed};
use crate::stages::pool::{PoolResult, pool};
use crate::stages::prepare::prepare;
use crate::train::trainer::FinalMetrics;
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
        crate::stages::pool::inputs(&prepared.dir, &cfg.pool.source(cfg, recipe), &cfg.pool)
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

/// What [`ensure_train`] returns.
pub type Trained = (FinalMetrics, PathBuf, Origin);

/// [`ensure_train`] for every config, `workers` at a time: each worker trains
/// on one thread of its own (a rayon pool of one), so the cores are shared by
/// runs rather than split inside one. A run's digits do not depend on the
/// number of threads it is given (tested), so this changes wall time only.
/// Results come in the configs' order; the first error (in that order) is
/// returned once the others have finished. Above one worker it sets
/// RAYON_NUM_THREADS=1 for the process while they train: call it so only
/// where no other thread uses the environment.
pub fn ensure_trains(cfgs: &[Config], workers: usize) -> Result<Vec<Trained>> {
    let workers = workers.min(cfgs.len());
    if workers <= 1 {
        return cfgs.iter().map(ensure_train).collect();
    }
    // Every dataset prepared (or found reusable) first, one after the other:
    // two workers preparing the same recipe at once would race to move it
    // into place.
    for c in cfgs {
        prepare(c, false)?;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let slots: Vec<std::sync::Mutex<Option<Result<Trained>>>> =
        cfgs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    // candle's matrix products read RAYON_NUM_THREADS at every call: left at
    // the core count, each one-thread worker would still split its products
    // into tasks for absent threads (measured 4.5× slower than 1).
    let before = std::env::var_os("RAYON_NUM_THREADS");
    // SAFETY: set here, on the calling thread, before any worker starts, and
    // put back after every worker has joined; meanwhile the workers only read
    // it, and the caller's process runs nothing else that touches the
    // environment (`run.workers` above 1 is for the `run` command; the test
    // of this function has a binary of its own).
    unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= cfgs.len() {
                        break;
                    }
                    let r = match &pool {
                        Ok(p) => p.install(|| ensure_train(&cfgs[i])),
                        Err(e) => Err(anyhow::anyhow!("cannot start a training thread: {e}")),
                    };
                    if let Ok(mut slot) = slots[i].lock() {
                        *slot = Some(r);
                    }
                }
            });
        }
    });
    // SAFETY: as above; every worker has joined.
    unsafe {
        match before {
            Some(v) => std::env::set_var("RAYON_NUM_THREADS", v),
            None => std::env::remove_var("RAYON_NUM_THREADS"),
        }
    }
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err(anyhow::anyhow!("a training thread stopped")))
        })
        .collect()
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

/// The name of a model's run on LLM embeddings:
/// `<model>-llm-<method>-<recipe>-<template>[-layer<k>]-<pool mode>[-<query>][-<normalize>][-holdout-…]-seed<seed>`.
pub fn llm_run_name(cfg: &Config) -> String {
    format!(
        "{}-llm-{}-{}-{}{}-{}{}{}-seed{}",
        cfg.model.label(),
        cfg.embed.method.as_str(),
        cfg.data.recipe,
        cfg.embed.template_stem(),
        cfg.embed.layer_suffix(),
        cfg.pool.mode.as_str(),
        cfg.pool.options_suffix(),
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

/// The LLM arm of a config: embed → pool → its head on the pooled embeddings,
/// once per `run.seeds`, each stage reused when finished.
pub struct LlmArm {
    pub embed: EmbedResult,
    pub pool: PoolResult,
    /// The head's config on the pooled embeddings (seed and run name unset).
    pub head: Config,
    pub runs: Vec<FinalMetrics>,
    pub dirs: Vec<PathBuf>,
    /// Whether embed, pool and the first seed's training were computed now.
    pub origins: [Origin; 3],
}

impl LlmArm {
    /// `<model> on the LLM embeddings (<method> / <template> / <pool mode>)`
    /// (`sentence-encoder embeddings` for the encoder method).
    pub fn label(&self) -> String {
        Self::describe(&self.head)
    }

    /// The label of the arm whose head config is `head`.
    pub fn describe(head: &Config) -> String {
        let what = match head.embed.method {
            crate::stages::embed::Method::Encoder => "sentence-encoder",
            _ => "LLM",
        };
        format!(
            "{} on the {what} embeddings ({} / {} / {})",
            head.model.label(),
            head.embed.method.as_str(),
            head.embed.template_stem(),
            head.pool.mode.as_str()
        )
    }
}

/// The embed and pool runs of a config's LLM arm (reused when finished) and
/// the config of its head on the pooled embeddings (seed and run name unset).
fn llm_inputs(cfg: &Config) -> Result<(EmbedResult, PoolResult, Config, [Origin; 2])> {
    let (embedded, oe) = ensure_embed(cfg)?;
    tracing::info!("embed: {}{}", reusing(oe), embedded.run_dir);
    let mut pc = cfg.clone();
    pc.pool.from = Some(PathBuf::from(&embedded.run_dir));
    let (pooled, op) = ensure_pool(&pc)?;
    tracing::info!("pool: {}{}", reusing(op), pooled.run_dir);
    let head = llm_head(&pc, Path::new(&pooled.run_dir), String::new());
    Ok((embedded, pooled, head, [oe, op]))
}

/// The head's config for each seed, named by [`llm_run_name`].
fn seed_configs(head: &Config, seeds: &[u64]) -> Vec<Config> {
    seeds
        .iter()
        .map(|&seed| {
            let mut c = head.clone();
            c.train.seed = seed;
            c.train.run_name = Some(llm_run_name(&c));
            c
        })
        .collect()
}

/// Train (or reuse) `configs`, `run.workers` at a time, and log each.
fn train_all(cfg: &Config, configs: &[(String, Config)]) -> Result<Vec<Trained>> {
    let cs: Vec<Config> = configs.iter().map(|(_, c)| c.clone()).collect();
    let out = ensure_trains(&cs, cfg.run.worker_count())?;
    for ((what, c), (_, dir, o)) in configs.iter().zip(&out) {
        tracing::info!(
            "{what}, seed {}: {}{}",
            c.train.seed,
            reusing(*o),
            dir.display()
        );
    }
    Ok(out)
}

pub fn llm_arm(cfg: &Config) -> Result<LlmArm> {
    let (embedded, pooled, head, [oe, op]) = llm_inputs(cfg)?;
    let what = format!("{} on the LLM embeddings", head.model.label());
    let configs: Vec<(String, Config)> = seed_configs(&head, &cfg.run.seeds)
        .into_iter()
        .map(|c| (what.clone(), c))
        .collect();
    let trained = train_all(cfg, &configs)?;
    let ot = trained.first().map(|t| t.2).context("run.seeds is empty")?;
    let (runs, dirs) = trained.into_iter().map(|(m, d, _)| (m, d)).unzip();
    Ok(LlmArm {
        embed: embedded,
        pool: pooled,
        head,
        runs,
        dirs,
        origins: [oe, op, ot],
    })
}

pub fn run(cfg: &Config) -> Result<RunSummary> {
    let start = Instant::now();
    let prepared = prepare(cfg, false)?;
    tracing::info!(
        "data: {} ({} domains)",
        prepared.dir.display(),
        prepared.meta.domains.len()
    );
    let seeds = &cfg.run.seeds;
    anyhow::ensure!(!seeds.is_empty(), "run.seeds is empty");
    // Every embedding first, then every training run, `run.workers` at a time.
    let (embedded, pooled, head, [oe, op]) = llm_inputs(cfg)?;
    let llm_label = LlmArm::describe(&head);
    let mut arms: Vec<(String, Vec<Config>)> = vec![(llm_label, seed_configs(&head, seeds))];
    if cfg.run.compare {
        arms.extend(comparison_configs(&head, seeds)?);
        if let Some(file) = &cfg.run.best {
            let mut b = Config::load(Some(file))
                .with_context(|| format!("run.best = {}", file.display()))?;
            b.run.seeds = seeds.clone();
            let (_, _, best_head, _) = llm_inputs(&b)?;
            arms.push((
                format!(
                    "best configuration found on valid: {}",
                    LlmArm::describe(&best_head)
                ),
                seed_configs(&best_head, seeds),
            ));
        }
    }
    let flat: Vec<(String, Config)> = arms
        .iter()
        .flat_map(|(name, cs)| cs.iter().map(move |c| (name.clone(), c.clone())))
        .collect();
    let mut trained = train_all(cfg, &flat)?.into_iter();
    let mut all = Vec::new();
    let mut llm_dirs = Vec::new();
    let mut ot = Origin::Reused;
    for (i, (name, cs)) in arms.into_iter().enumerate() {
        let mut runs = Vec::new();
        for (j, (m, dir, o)) in trained.by_ref().take(cs.len()).enumerate() {
            if i == 0 {
                llm_dirs.push(dir);
                if j == 0 {
                    ot = o;
                }
            }
            runs.push(m);
        }
        all.push((name, runs));
    }
    let dir = llm_dirs[0].clone();
    let cgc = all[0].1[0].clone();
    let report = crate::report::report(&dir)?;
    if cfg.run.compare {
        let table = comparison_md(&all);
        let md = std::fs::read_to_string(&report)?;
        crate::fsutil::write_atomic(&report, format!("{table}\n{md}").as_bytes())?;
        let arms: Vec<crate::report::Arm> = all
            .iter()
            .map(|(name, runs)| crate::report::Arm {
                name: name.clone(),
                runs: runs.iter().collect(),
            })
            .collect();
        crate::report::domain_auc_plot(
            &dir.join("comparison_domain_auc.svg"),
            &format!("{}: test AUC per domain, every arm", prepared.meta.recipe),
            &arms,
            None,
        )?;
    }
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

/// The comparison arms of `pipeline run`, on the LLM head's split and features,
/// each trained (or reused) for every seed: the same model on the domain id,
/// without a domain input and on a random vector per domain with the
/// embedding's per-dimension mean and spread (the conditioned form kept, so the
/// arms differ in the domain input alone), and the DNN with the
/// domain-defining field kept (the plain model of the literature).
pub fn comparison_arms(head: &Config, seeds: &[u64]) -> Result<Vec<(String, Vec<FinalMetrics>)>> {
    let arms = comparison_configs(head, seeds)?;
    let flat: Vec<(String, Config)> = arms
        .iter()
        .flat_map(|(name, cs)| cs.iter().map(move |c| (name.clone(), c.clone())))
        .collect();
    let mut trained = train_all(head, &flat)?.into_iter();
    Ok(arms
        .into_iter()
        .map(|(name, cs)| {
            let runs = trained.by_ref().take(cs.len()).map(|t| t.0).collect();
            (name, runs)
        })
        .collect())
}

/// The configs of [`comparison_arms`]: (arm name, one config per seed).
fn comparison_configs(head: &Config, seeds: &[u64]) -> Result<Vec<(String, Vec<Config>)>> {
    use crate::models::config::{Conditioning, DomainFields, ModelName};
    let pin = |c: &mut Config| {
        let m = &mut c.model;
        let cgc = m.conditioned(m.cgc.conditioning);
        let ple = m.conditioned(m.ple.conditioning);
        m.cgc.conditioning = if cgc {
            Conditioning::Domain
        } else {
            Conditioning::None
        };
        m.ple.conditioning = if ple {
            Conditioning::Domain
        } else {
            Conditioning::None
        };
    };
    let mut base = head.clone();
    pin(&mut base);
    base.model.domain_embeddings = None;
    // The random control's runs are named after the pool run they stand in for.
    let random = match &head.model.domain_embeddings {
        Some(f) => Some((
            crate::stages::lodo::random_control(
                f,
                &head.model.domain_embeddings_tensor,
                &head.train.runs_dir,
            )?,
            f.parent()
                .and_then(|p| p.file_name())
                .map_or("embeddings".into(), |n| n.to_string_lossy().into_owned()),
        )),
        None => None,
    };
    type Set = Box<dyn Fn(&mut Config)>;
    let mut arms: Vec<(&str, &str, Set)> = vec![
        (
            "domain id",
            "id",
            Box::new(|c: &mut Config| c.model.domain_input = DomainInput::Id),
        ),
        (
            "no domain input",
            "none",
            Box::new(|c: &mut Config| c.model.domain_input = DomainInput::None),
        ),
    ];
    let random_tag = random.as_ref().map(|(_, from)| format!("random-{from}"));
    if let Some((r, _)) = random {
        arms.push((
            "random vector per domain",
            random_tag.as_deref().unwrap_or("random"),
            Box::new(move |c: &mut Config| {
                c.model.domain_input = DomainInput::Fixed;
                c.model.domain_embeddings = Some(r.clone());
                c.model.domain_embeddings_tensor = "domain_embeddings".into();
            }),
        ));
    }
    arms.push((
        "dnn, domain field kept",
        "keep",
        Box::new(|c: &mut Config| {
            c.model.name = ModelName::Dnn;
            c.model.domain_input = DomainInput::None;
            c.model.domain_fields = DomainFields::Keep;
        }),
    ));
    let mut out = Vec::new();
    for (name, tag, set) in arms {
        let mut cs = Vec::new();
        for &seed in seeds {
            let mut c = base.clone();
            set(&mut c);
            c.train.seed = seed;
            c.train.run_name = Some(if tag.starts_with("random-") {
                format!("{}-{tag}-seed{seed}", c.model.label())
            } else {
                format!(
                    "{}-{tag}-{}{}-seed{seed}",
                    c.model.label(),
                    c.data.recipe,
                    holdout_suffix(&c.data.holdout_domains)
                )
            });
            cs.push(c);
        }
        out.push((name.to_string(), cs));
    }
    Ok(out)
}

/// The report's opening: one row per arm (mean ± sd over seeds), the paired
/// per-seed differences of the first arm (the LLM head) against each other,
/// and a one-line verdict.
pub fn comparison_md(arms: &[(String, Vec<FinalMetrics>)]) -> String {
    let stat = |v: &[f64]| -> (f64, f64) {
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n.max(1.0);
        let sd = if v.len() > 1 {
            (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            f64::NAN
        };
        (m, sd)
    };
    let pm = |v: &[f64]| -> String {
        if v.is_empty() {
            return "n/a".into();
        }
        let (m, sd) = stat(v);
        if sd.is_nan() {
            format!("{m:.4}")
        } else {
            format!("{m:.4} ± {sd:.4}")
        }
    };
    let get = |runs: &[FinalMetrics], f: &dyn Fn(&FinalMetrics) -> Option<f64>| -> Vec<f64> {
        runs.iter().filter_map(f).collect()
    };
    let unseen = arms
        .iter()
        .any(|(_, r)| r.iter().any(|m| m.unseen_auc.is_some()));
    let seeds: Vec<String> = arms
        .first()
        .map(|(_, r)| r.iter().map(|m| m.seed.to_string()).collect())
        .unwrap_or_default();
    let mut md = format!(
        "# Does the LLM embedding help?\n\nSeeds {}; test split; mean ± sample sd over seeds. \
         Δ: the embedding arm (first row) minus the arm, per seed, then averaged (+/−: seeds where the embedding \
         arm is higher/lower).\n\n| arm | test AUC | tail AUC (7 smallest) |{} Δ test AUC (+/−) |\n| --- | --- | --- |{} --- |\n",
        seeds.join(", "),
        if unseen { " unseen AUC |" } else { "" },
        if unseen { " --- |" } else { "" },
    );
    let llm = &arms[0].1;
    let mut verdicts = Vec::new();
    for (i, (name, runs)) in arms.iter().enumerate() {
        let auc = get(runs, &|m| m.test.auc);
        let diff = if i == 0 {
            "—".to_string()
        } else {
            let d: Vec<f64> = llm
                .iter()
                .zip(runs)
                .filter_map(|(a, b)| Some(a.test.auc? - b.test.auc?))
                .collect();
            let pos = d.iter().filter(|x| **x > 0.0).count();
            let neg = d.iter().filter(|x| **x < 0.0).count();
            let (m, _) = stat(&d);
            // No "-0.0000": a mean that rounds to zero is printed as +0.0000.
            let m = if m.abs() < 5e-5 { 0.0 } else { m };
            let consistent = !d.is_empty() && (pos == d.len() || neg == d.len());
            verdicts.push(format!(
                "{m:+.4} against {name} ({})",
                if d.len() < 2 {
                    "one seed: no spread to compare with".to_string()
                } else if consistent {
                    format!("same sign in all {} seeds", d.len())
                } else {
                    "within the seed-to-seed spread".to_string()
                }
            ));
            format!("{m:+.4} ({pos}/{neg})")
        };
        md.push_str(&format!(
            "| {name} | {} | {} |{} {diff} |\n",
            pm(&auc),
            pm(&get(runs, &|m| m.tail_auc)),
            if unseen {
                format!(" {} |", pm(&get(runs, &|m| m.unseen_auc)))
            } else {
                String::new()
            }
        ));
    }
    md.push_str(&format!(
        "\n**Verdict:** the embedding arm's test AUC is {}: {}. Same sign in every seed is \
         not significance (3 seeds: a sign test's p is 0.25); `pipeline lodo` gives paired tests \
         over domains.\n",
        pm(&get(llm, &|m| m.test.auc)),
        verdicts.join("; ")
    ));
    md
}

/// `pipeline run CONFIG` and `pipeline ablate CONFIG`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The run's config file (configs/default.toml is the default run).
    pub config: std::path::PathBuf,
}

/// Runs `pipeline run` and prints each stage's result and the report's path.
pub fn command(args: &RunArgs) -> Result<()> {
    let cfg = Config::load(Some(&args.config))?;
    // candle's element-wise kernels share one process-wide pool of helper
    // threads, sized at its first use, that takes a lock per call: two training
    // workers queue on it (an epoch of the conditioned CGC took 2.5 s in a
    // worker against 0.9 s alone). With several workers that pool gets no
    // helper thread; the matrix products and the fused kernels keep their
    // threads (the embed stage: 43.8 s against 44.3 s), and the digits are the
    // same (docs/benchmarks.md). Set before the first candle operation.
    if cfg.run.worker_count() > 1 && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: at the start of the command, before any other thread exists.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let s = run(&cfg)?;
    println!(
        "embed {}: probe valid AUC {} ({} LLM steps) in {}",
        s.embed.method,
        s.embed
            .probe_valid_auc
            .map_or("n/a".into(), |a| format!("{a:.4}")),
        s.embed.llm_steps,
        s.embed.run_dir
    );
    println!(
        "pool {}: {}{}",
        s.pool.mode,
        s.pool.run_dir,
        s.pool
            .probe_valid_auc
            .map_or(String::new(), |a| format!(" (probe valid AUC {a:.4})"))
    );
    crate::stages::train::print_final(Some(&s.cgc));
    println!("done in {:.0} s; report: {}", s.seconds, s.report.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs on embeddings made with other layers, queries or normalisations get
    /// other names, so they never collide (and default names stay as they were).
    #[test]
    fn llm_run_names_carry_the_embedding_choices() {
        let mut c = Config::default();
        c.model.domain_input = DomainInput::Fixed;
        let plain = llm_run_name(&c);
        assert!(plain.starts_with("cgc_cond-llm-"), "{plain}");
        assert!(!plain.contains("-layer"), "{plain}");
        c.embed.layer = Some(crate::stages::embed::LayerChoice::Many(vec![10, 15]));
        c.pool.query = crate::pool::Query::Name;
        c.pool.normalize = crate::geometry::Normalize::Standardize;
        let other = llm_run_name(&c);
        assert!(
            other.contains("-layer10+15-") && other.contains("-name-standardize-"),
            "{other}"
        );
    }
}
