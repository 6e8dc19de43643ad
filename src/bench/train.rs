//! `pipeline bench train`: training and inference samples/s, step time and peak
//! memory of every model, each measured in a child process of its own.

use super::machine;
use crate::config::Config;
use crate::stages::prepare;
use crate::stats::median;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Models (default: all). `cgc` is timed classic and domain-conditioned.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub models: Vec<crate::models::config::ModelName>,
    /// Settings to measure with (model sizes, features, domain input); each
    /// model's own section applies. Without it, the defaults: every field of
    /// the recipe as a feature.
    #[command(flatten)]
    pub config: crate::config::ConfigArg,
    /// Recipe to measure on (default: the config's, else ml100k-occupation).
    #[arg(long)]
    pub recipe: Option<String>,
    /// Warm-up batches before timing.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Timed training batches per repetition.
    #[arg(long, default_value_t = 60)]
    pub steps: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Batch size for training and inference.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Embedding table sizes for the O(batch) step check (CGC, sparse updates).
    #[arg(long, value_delimiter = ',', default_values_t = vec![10_000usize, 1_000_000])]
    pub table_rows: Vec<usize>,
    /// Internal: measure one configuration and print one JSON line.
    #[arg(long, hide = true)]
    pub one: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct TrainFigures {
    label: String,
    train_samples_per_s: f64,
    infer_samples_per_s: f64,
    step_ms: f64,
    peak_rss_mib: f64,
}

/// Measure one model (`label` = model name, or `cgc@ROWS[:dense]` for the table check).
fn train_one(args: &TrainBenchArgs, label: &str) -> Result<TrainFigures> {
    use crate::models::config::ModelName;
    use crate::nn::rng::Rng;
    let (name, rows, dense) = match label.split_once('@') {
        Some((m, r)) => {
            let (r, d) = r.split_once(':').map_or((r, false), |(r, _)| (r, true));
            (m.to_string(), Some(r.parse::<usize>()?), d)
        }
        None => (label.to_string(), None, false),
    };
    // `cgc_cond` / `ple_cond`: the domain-conditioned form.
    let (base, conditioned) = match name.strip_suffix("_cond") {
        Some(b) => (b.to_string(), true),
        None => (name.clone(), false),
    };
    let model = ModelName::ALL
        .into_iter()
        .find(|m| {
            m.as_str() == base && (!conditioned || matches!(m, ModelName::Cgc | ModelName::Ple))
        })
        .with_context(|| format!("unknown model {name}"))?;
    let mut cfg = base_config(args)?;
    cfg.model.name = model;
    if conditioned {
        cfg.model.cgc.conditioning = crate::models::config::Conditioning::Domain;
        cfg.model.ple.conditioning = crate::models::config::Conditioning::Domain;
    }
    cfg.train.batch_size = args.batch;
    let prepared = prepare::prepare(&cfg, false)?;
    let mut t = crate::train::trainer::Trainer::new(&cfg, &prepared.dir)?;
    let mut rng = Rng::new(7);
    if let Some(r) = rows {
        t.pad_table(r, !dense, &mut rng);
    }
    let n = t.ds.train.n;
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let batches: Vec<&[usize]> = order
        .chunks(args.batch)
        .filter(|c| c.len() == args.batch)
        .collect();
    if batches.is_empty() {
        bail!(
            "the train split of {} has {n} rows, fewer than one batch of {}: give a smaller --batch",
            cfg.data.recipe,
            args.batch
        );
    }
    let mut k = 0;
    for _ in 0..args.warmup {
        t.bench_step(batches[k % batches.len()], &mut rng)?;
        k += 1;
    }
    let mut train_rates = Vec::new();
    let mut step_ms = Vec::new();
    for _ in 0..args.reps {
        let start = Instant::now();
        for _ in 0..args.steps {
            t.bench_step(batches[k % batches.len()], &mut rng)?;
            k += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        train_rates.push((args.steps * args.batch) as f64 / secs);
        step_ms.push(secs * 1000.0 / args.steps as f64);
    }
    let test: Vec<usize> = (0..t.ds.test.n).collect();
    let mut infer_rates = Vec::new();
    for _ in 0..args.reps {
        let start = Instant::now();
        for c in test.chunks(args.batch) {
            t.bench_infer(c)?;
        }
        infer_rates.push(test.len() as f64 / start.elapsed().as_secs_f64());
    }
    Ok(TrainFigures {
        label: label.to_string(),
        train_samples_per_s: median(&train_rates).unwrap_or(f64::NAN),
        infer_samples_per_s: median(&infer_rates).unwrap_or(f64::NAN),
        step_ms: median(&step_ms).unwrap_or(f64::NAN),
        peak_rss_mib: crate::fsutil::peak_rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0),
    })
}

/// The settings every model is measured with: the config file's (or the
/// defaults), with `--recipe` over its recipe.
fn base_config(args: &TrainBenchArgs) -> Result<Config> {
    let mut cfg = Config::load(args.config.config.as_deref())?;
    if let Some(r) = &args.recipe {
        cfg.data.recipe = r.clone();
    }
    Ok(cfg)
}

pub fn train(args: &TrainBenchArgs) -> Result<()> {
    if let Some(label) = &args.one {
        println!("{}", serde_json::to_string(&train_one(args, label)?)?);
        return Ok(());
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset (all cores)".into());
    println!("machine: {}; RAYON_NUM_THREADS={threads}", machine());
    let recipe = base_config(args)?.data.recipe;
    let settings = args
        .config
        .config
        .as_ref()
        .map_or("the defaults".to_string(), |p| p.display().to_string());
    println!(
        "build: {}; batch {}, {} warm-up + {} timed steps, median of {} repetitions; recipe {}; settings {}",
        if cfg!(debug_assertions) {
            "debug (figures not representative)"
        } else {
            "release"
        },
        args.batch,
        args.warmup,
        args.steps,
        args.reps,
        recipe,
        settings
    );
    let models = if args.models.is_empty() {
        crate::models::config::ModelName::ALL.to_vec()
    } else {
        args.models.clone()
    };
    // CGC is timed in both forms: classic and domain-conditioned.
    let mut labels: Vec<String> = Vec::new();
    for m in &models {
        labels.push(m.as_str().to_string());
        if *m == crate::models::config::ModelName::Cgc {
            labels.push("cgc_cond".into());
        }
    }
    for r in &args.table_rows {
        labels.push(format!("cgc@{r}"));
        labels.push(format!("cgc@{r}:dense"));
    }
    let exe = std::env::current_exe()?;
    println!(
        "\n| model | train samples/s | inference samples/s | ms per training step | peak RSS MiB |\n| --- | --- | --- | --- | --- |"
    );
    for label in labels {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["bench", "train", "--recipe", &recipe, "--one", &label]);
        if let Some(c) = &args.config.config {
            cmd.arg("--config").arg(c);
        }
        let out = cmd
            .args([
                "--warmup",
                &args.warmup.to_string(),
                "--steps",
                &args.steps.to_string(),
            ])
            .args([
                "--reps",
                &args.reps.to_string(),
                "--batch",
                &args.batch.to_string(),
            ])
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("benchmark of {label} failed");
        }
        let f: TrainFigures = serde_json::from_slice(out.stdout.trim_ascii())?;
        let shown = match label.split_once('@') {
            Some((m, r)) => {
                let (rows, mode) = r
                    .split_once(':')
                    .map_or((r, "sparse"), |(r, _)| (r, "dense"));
                format!("{m}, table of {rows} rows, {mode} updates")
            }
            None => label.clone(),
        };
        println!(
            "| {shown} | {:.0} | {:.0} | {:.2} | {:.0} |",
            f.train_samples_per_s, f.infer_samples_per_s, f.step_ms, f.peak_rss_mib
        );
    }
    Ok(())
}
