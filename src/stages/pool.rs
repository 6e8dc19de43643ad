//! Stage `pool`: one vector per domain from an embed run's token states, by
//! Gaussian attention pooling (see [`crate::pool`]).
//!
//! Before pooling, the token states may be standardised or whitened
//! (`pool.normalize`, [`crate::geometry`]), estimated on the training domains'
//! tokens only (the held-out domains' prompts are not used).
//!
//! `plain` takes the query itself as the domain vector (the last token's state,
//! the mean of all tokens, or the mean of the domain-name tokens: no kernel);
//! `parameterless` computes f(q) with fixed w; `parametric` learns w (and,
//! optionally, a query offset) with the probe objective of `embed` — a fresh probe,
//! BCE on the train split, early stopping on valid AUC — on the cached token
//! states, so no LLM runs in this loop and a run takes seconds. Runs are short,
//! so an interrupted one starts again; outputs are written atomically.

pub use crate::config::pool::{PoolConfig, PoolMode};

use crate::config::Config;
use crate::config::pool::NormalizeOn;
use crate::data::dataset::Dataset;
use crate::fingerprint::Inputs;
use crate::fsutil::{save_tensors_atomic, write_atomic};
use crate::geometry::Normalizer;
use crate::models::probe::Probe;
use crate::nn::optim::{AdamConfig, DenseAdam, OptimizerKind};
use crate::nn::params::ParamStore;
use crate::nn::rng::Rng;
use crate::pool::{self as pooling, Parametric, Query, Tokens};
use crate::stages::prepare::prepare;
use crate::tensor_io::{check_finite, load_safetensors};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// One epoch of parametric pooling, a line of `metrics.jsonl`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PoolEpoch {
    pub epoch: usize,
    pub probe_train_loss: f64,
    pub probe_valid_auc: Option<f64>,
    pub seconds: f64,
}

/// `result.json` of a pool run.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PoolResult {
    pub mode: String,
    pub from: String,
    pub best_epoch: usize,
    /// Parametric only: probe valid AUC at the best epoch.
    pub probe_valid_auc: Option<f64>,
    /// Of the pooled domain embeddings (see [`pooling::kernel_perplexity`]).
    #[serde(default)]
    pub kernel_perplexity: Option<pooling::KernelPerplexity>,
    pub wall_seconds: f64,
    pub run_dir: String,
}

/// What a pool run reads: the prepared dataset and the embed run's token
/// states (and its background prompts' states when normalised on them).
pub fn inputs(
    prepared: &Path,
    from: &Path,
    pc: &crate::config::pool::PoolConfig,
) -> Result<Inputs> {
    let i = Inputs::default()
        .prepared(prepared)?
        .file("token states", &from.join("token_states.safetensors"))?;
    if pc.normalize_on == NormalizeOn::Background {
        return i.file("background token states", &background_file(from)?);
    }
    Ok(i)
}

/// The embed run's background states file; an error saying how to make it when
/// it is missing.
fn background_file(from: &Path) -> Result<std::path::PathBuf> {
    let file = from.join(crate::stages::embed::BACKGROUND_FILE);
    if !file.is_file() {
        bail!(
            "pool.normalize_on = \"background\": {} is missing; make the embed run with embed.background (a file of names, e.g. prompts/background/occupations.txt)",
            file.display()
        );
    }
    Ok(file)
}

/// Tensor `k` of the safetensors file `file` (loaded as `t`), as f32, finite.
fn named_f32(t: &HashMap<String, Tensor>, file: &Path, k: &str) -> Result<Tensor> {
    let x = t
        .get(k)
        .with_context(|| format!("{} has no tensor `{k}`", file.display()))?
        .to_dtype(DType::F32)?;
    check_finite(&x, file, k)?;
    Ok(x)
}

/// The background prompts' token states and mask of the embed run `from`, for
/// `pool.normalize_on = "background"`, checked against the domains' width `h`.
fn background_states(from: &Path, h: usize) -> Result<(Tensor, Tensor)> {
    let file = background_file(from)?;
    let t = load_safetensors(&file)?;
    let get = |k: &str| named_f32(&t, &file, k);
    let (states, mask) = (get("states")?, get("mask")?);
    let (b, tn, hb) = states.dims3().with_context(|| {
        format!(
            "{}: tensor `states` must be (prompts, tokens, h)",
            file.display()
        )
    })?;
    if hb != h || mask.dims() != [b, tn] {
        bail!(
            "{}: tensors `states` {:?} and `mask` {:?} do not fit the domains' width {h}",
            file.display(),
            states.dims(),
            mask.dims()
        );
    }
    Ok((states, mask))
}

/// Run the stage.
pub fn pool(cfg: &Config) -> Result<PoolResult> {
    let pc = &cfg.pool;
    cfg.validate()?;
    let start = Instant::now();
    let prepared = prepare(cfg, false)?;
    let mut ds = crate::stages::embed::probe_dataset(cfg, &prepared.dir)?;
    ds.hold_out(&cfg.data.holdout_domains)?;
    let from = pc.source(cfg, &ds.meta.recipe);
    let file = from.join("token_states.safetensors");
    let dev = Device::Cpu;
    if !file.is_file() {
        bail!(
            "cannot read {}: no such file (run `pipeline embed` first, or set pool.from)",
            file.display()
        );
    }
    let t = load_safetensors(&file)?;
    let get = |k: &str| named_f32(&t, &file, k);
    let (states, mask) = (get("states")?, get("mask")?);
    // Written by embed runs since domain names were recorded; older files lack it.
    let names = if t.contains_key("name_mask") {
        Some(get("name_mask")?)
    } else {
        None
    };
    let (d, tn, h) = states.dims3().with_context(|| {
        format!(
            "{}: tensor `states` is {:?}, expected (domains, tokens, h)",
            file.display(),
            states.dims()
        )
    })?;
    if d != ds.domain_names.len() || mask.dims() != [d, tn] {
        bail!(
            "{}: tensors `states` {:?} and `mask` {:?} do not fit the {} domains of {}: expected ({}, tokens, h) and ({}, tokens)",
            file.display(),
            states.dims(),
            mask.dims(),
            ds.domain_names.len(),
            prepared.dir.display(),
            ds.domain_names.len(),
            ds.domain_names.len()
        );
    }
    if let Some(nm) = &names
        && nm.dims() != [d, tn]
    {
        bail!(
            "{}: tensor `name_mask` is {:?}; it must match `mask` {:?}",
            file.display(),
            nm.dims(),
            mask.dims()
        );
    }
    let real = mask.to_vec2::<f32>()?;
    if let Some(nm) = &names {
        for (i, row) in nm.to_vec2::<f32>()?.iter().enumerate() {
            if let Some(j) = row
                .iter()
                .enumerate()
                .position(|(j, &m)| (m != 0.0 && m != 1.0) || (m == 1.0 && real[i][j] == 0.0))
            {
                bail!(
                    "{}: tensor `name_mask` holds {} at index [{i}, {j}]; it is 0 or 1, and 1 only on real tokens",
                    file.display(),
                    row[j]
                );
            }
            if pc.query == Query::Name && !row.contains(&1.0) {
                bail!(
                    "{}: domain {:?} has no domain-name token, so the query `name` has nothing to pool (does the template use {{domain}}?)",
                    file.display(),
                    ds.domain_names[i]
                );
            }
        }
    } else if pc.query == Query::Name {
        bail!(
            "{} records no domain-name tokens (tensor `name_mask`): it was written by an older `pipeline embed`; run embed again to use pool.query = \"name\"",
            file.display()
        );
    }
    // The mask is 1 on real tokens, 0 on padding, and every prompt has a real token.
    for (i, row) in real.iter().enumerate() {
        if let Some(j) = row.iter().position(|&m| m != 0.0 && m != 1.0) {
            bail!(
                "{}: tensor `mask` holds {} at index [{i}, {j}]; a mask is 0 or 1",
                file.display(),
                row[j]
            );
        }
        if !row.contains(&1.0) {
            bail!(
                "{}: tensor `mask` row {i} (domain {:?}) has no real token",
                file.display(),
                ds.domain_names[i]
            );
        }
    }
    let names_file = from.join("domains.json");
    if let Ok(bytes) = std::fs::read(&names_file) {
        let names: Vec<String> = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a list of domain names", names_file.display()))?;
        if names != ds.domain_names {
            bail!(
                "{} lists the domains of another dataset than {} (data.recipe = {:?})",
                names_file.display(),
                prepared.dir.display(),
                cfg.data.recipe
            );
        }
    }
    let dir = pc.run_dir(cfg, &ds.meta.recipe);
    if dir.join("result.json").is_file() {
        bail!(
            "{} already holds a finished pool run: choose another run name",
            dir.display()
        );
    }
    let inputs = inputs(&prepared.dir, &from, pc)?;
    std::fs::create_dir_all(&dir)?;
    write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    inputs.save(&dir)?;
    let mut params = HashMap::new();
    // Geometry from the training domains' tokens only, or from the background
    // prompts' tokens.
    let seen: Vec<usize> = (0..d).filter(|i| !ds.holdout.contains(i)).collect();
    let fitted = match pc.normalize_on {
        NormalizeOn::Domains => Normalizer::fit(pc.normalize, &states, &mask, &seen, pc.shrinkage)
            .map(|n| (n, format!("{} training domains", seen.len()))),
        NormalizeOn::Background => {
            let (bs, bm) = background_states(&from, h)?;
            let all: Vec<usize> = (0..bs.dim(0)?).collect();
            Normalizer::fit(pc.normalize, &bs, &bm, &all, pc.shrinkage)
                .map(|n| (n, format!("{} background prompts", all.len())))
        }
    };
    let raw_states = states.clone();
    let states =
        match fitted.with_context(|| format!("pool.normalize = \"{}\"", pc.normalize.as_str()))? {
            (Some(n), on) => {
                let (mean, m) = n.tensors()?;
                params.insert("normalize_mean".to_string(), mean);
                params.insert("normalize_matrix".to_string(), m);
                tracing::info!(
                    "pool: {} estimated on {} tokens of {on}",
                    pc.normalize.as_str(),
                    n.tokens,
                );
                n.apply(&states)?
            }
            (None, _) => states,
        };
    let tok = Tokens::new(&mask, names.as_ref());
    let (best_epoch, best_auc) = match pc.mode {
        PoolMode::Plain => (0, None),
        PoolMode::Parameterless => {
            let s = pc.scale.unwrap_or(1.0 / (h as f64).sqrt());
            params.insert("w".to_string(), Tensor::full(s as f32, h, &dev)?);
            (0, None)
        }
        PoolMode::Parametric => train_parametric(cfg, &ds, &states, tok, &dir, &mut params)?,
    };
    // The written vectors are the saved parameters applied to the embed run's
    // states: what `predict` computes for a new domain's prompt.
    let dm = apply(pc, &params, &raw_states, tok)?;
    let ppl = pooling::kernel_perplexities(&dm)?;
    tracing::info!("pool {}: {ppl}", pc.mode.as_str());
    let mut de = HashMap::new();
    de.insert("domain_embeddings".to_string(), dm);
    save_tensors_atomic(&de, &dir.join("domain_embeddings.safetensors"))?;
    save_tensors_atomic(&params, &dir.join("pool_params.safetensors"))?;
    write_atomic(
        &dir.join("domains.json"),
        serde_json::to_string_pretty(&ds.domain_names)?.as_bytes(),
    )?;
    let r = PoolResult {
        mode: pc.mode.as_str().into(),
        from: from.display().to_string(),
        best_epoch,
        probe_valid_auc: best_auc,
        kernel_perplexity: Some(ppl),
        wall_seconds: start.elapsed().as_secs_f64(),
        run_dir: dir.display().to_string(),
    };
    write_atomic(
        &dir.join("result.json"),
        serde_json::to_string_pretty(&r)?.as_bytes(),
    )?;
    Ok(r)
}

/// Pool token states (n, T, h) with a pool run's fitted parameters `params`
/// (`pool_params.safetensors`: `normalize_mean` and `normalize_matrix` when
/// normalised, `w` unless plain, `query_offset` when learned): one vector per
/// prompt, (n, h). The stage writes its domains' vectors with it; `predict`
/// pools a new domain's prompt with it.
pub fn apply(
    pc: &PoolConfig,
    params: &HashMap<String, Tensor>,
    states: &Tensor,
    tok: Tokens,
) -> Result<Tensor> {
    let get = |k: &str| {
        params
            .get(k)
            .or_else(|| params.get(&format!("pool.{k}")))
            .map(|t| t.to_dtype(DType::F32))
            .transpose()
    };
    let states = match (get("normalize_mean")?, get("normalize_matrix")?) {
        (Some(m), Some(a)) => Normalizer::from_tensors(&m, &a)?.apply(states)?,
        (None, None) if pc.normalize == crate::geometry::Normalize::None => states.clone(),
        _ => bail!(
            "the pool parameters hold no fitted normalisation (pool.normalize = \"{}\")",
            pc.normalize.as_str()
        ),
    };
    let mut q = pooling::query(&states, tok, pc.query)?;
    if pc.mode == PoolMode::Plain {
        return Ok(q);
    }
    let w = get("w")?.context("the pool parameters hold no kernel weights `w`")?;
    if let Some(o) = get("query_offset")? {
        q = q.broadcast_add(&o)?;
    }
    Ok(pooling::gaussian_pool(&states, tok.mask, &q, &w)?)
}

/// Train [`Parametric`] with a fresh probe; returns the best valid epoch and
/// its AUC, and puts w (and the query offset) of that epoch into `params`.
fn train_parametric(
    cfg: &Config,
    ds: &Dataset,
    states: &Tensor,
    tok: Tokens,
    dir: &std::path::Path,
    params: &mut HashMap<String, Tensor>,
) -> Result<(usize, Option<f64>)> {
    let pc = &cfg.pool;
    let h = states.dim(2)?;
    let base = Rng::new(pc.seed);
    let mut rng = base.fork(1);
    let mut ps = ParamStore::new(DType::F32, &Device::Cpu);
    let layer = Parametric::new(&mut ps, h, pc.query, pc.learned_query)?;
    let mut dense = DenseAdam::new(&ps)?;
    let mut probe = Probe::new(ds, h, &cfg.embed.probe(), &mut rng)?;
    let adam = AdamConfig {
        kind: OptimizerKind::Adam,
        lr: pc.lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let bs = cfg.embed.batch_size.max(1);
    let (mut step, mut bad) = (0u64, 0usize);
    let mut best: Option<(f64, usize)> = None;
    let mut history = Vec::new();
    for epoch in 1..=pc.epochs {
        if bad >= pc.patience {
            break;
        }
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..ds.train.n).collect();
        base.fork(100 + epoch as u64).shuffle(&mut order);
        let (mut sum, mut count) = (0.0, 0usize);
        for group in order.chunks(bs * pc.batches_per_step.max(1)) {
            let dm = layer.forward(states, tok)?;
            let (loss, g) = probe.steps(&ds.train, group, bs, &dm, true)?;
            sum += loss;
            count += group.len();
            if let Some(g) = g {
                let grads = (dm * g)?.sum_all()?.backward()?;
                step += 1;
                dense.step(&ps, &grads, &adam, step)?;
            }
        }
        let dm = layer.forward(states, tok)?.detach();
        let valid = probe.evaluate(&ds.valid, &dm, &ds.domain_names)?;
        let e = PoolEpoch {
            epoch,
            probe_train_loss: sum / count.max(1) as f64,
            probe_valid_auc: valid.auc,
            seconds: t0.elapsed().as_secs_f64(),
        };
        tracing::info!(
            "pool epoch {epoch}: probe loss {:.4}, valid AUC {}, {:.1}s",
            e.probe_train_loss,
            valid.auc.map_or("n/a".into(), |a| format!("{a:.4}")),
            e.seconds
        );
        history.push(e);
        let lines: String = history
            .iter()
            .map(|h| serde_json::to_string(h).unwrap_or_default() + "\n")
            .collect();
        write_atomic(&dir.join("metrics.jsonl"), lines.as_bytes())?;
        match (valid.auc, &best) {
            (Some(a), b) if b.as_ref().is_none_or(|(x, _)| a > *x) => {
                best = Some((a, epoch));
                bad = 0;
                for p in ps.params() {
                    let name = p.name.trim_start_matches("pool.").to_string();
                    params.insert(name, p.var.as_tensor().copy()?);
                }
            }
            _ => bad += 1,
        }
    }
    let Some((auc, epoch)) = best else {
        bail!("no pooling epoch produced a valid AUC (does the valid split hold both classes?)");
    };
    Ok((epoch, Some(auc)))
}

/// `pipeline pool`: the config file, these flags (each sets the config key it
/// names), then `--set` (e.g. `--set pool.normalize=whiten --set
/// pool.normalize_on=background --set pool.shrinkage=0.5`).
#[derive(clap::Args, Debug)]
pub struct PoolArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArg,
    #[command(flatten)]
    pub settings: crate::config::SetArg,
    /// The embed run to pool (pool.from; default: the run [embed] names).
    #[arg(long)]
    pub from: Option<std::path::PathBuf>,
    /// plain, parameterless or parametric (pool.mode).
    #[arg(long, value_enum)]
    pub mode: Option<PoolMode>,
    /// last, mean or name (pool.query).
    #[arg(long, value_enum)]
    pub query: Option<Query>,
    /// Recipe (data.recipe).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Seed (pool.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Held-out domains (repeatable; data.holdout_domains).
    #[arg(long = "holdout-domain")]
    pub holdout_domains: Vec<String>,
    /// Run name under pool.runs_dir (pool.run_name).
    #[arg(long)]
    pub run_name: Option<String>,
    /// Runs folder (pool.runs_dir).
    #[arg(long)]
    pub runs_dir: Option<std::path::PathBuf>,
}

/// Runs `pipeline pool` and prints the run and its kernel perplexity.
pub fn command(args: &PoolArgs) -> Result<()> {
    let cfg = crate::config::Flags::default()
        .key("pool.from", args.from.as_ref())
        .key("pool.mode", args.mode)
        .key("pool.query", args.query)
        .key("data.recipe", args.recipe.as_ref())
        .key("pool.seed", args.seed)
        .key(
            "data.holdout_domains",
            (!args.holdout_domains.is_empty()).then_some(&args.holdout_domains),
        )
        .key("pool.run_name", args.run_name.as_ref())
        .key("pool.runs_dir", args.runs_dir.as_ref())
        .resolve(args.config.config.as_deref(), &args.settings.set)?;
    let r = pool(&cfg)?;
    println!(
        "pool {} of {}: {}{} in {:.1} s",
        r.mode,
        r.from,
        r.run_dir,
        r.probe_valid_auc.map_or(String::new(), |a| format!(
            " (probe valid AUC {a:.4}, epoch {})",
            r.best_epoch
        )),
        r.wall_seconds
    );
    if let Some(k) = r.kernel_perplexity {
        println!("{k}");
    }
    Ok(())
}
