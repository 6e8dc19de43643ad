//! `pipeline bench data`: measured figures for the data stage. Run from a release
//! build; the machine and thread count are printed with the figures.

use crate::config::Config;
use crate::data::split::fnv1a64;
use crate::stages::prepare;
use crate::stats::median;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub mod stream;

#[derive(Args, Debug)]
pub struct DataBenchArgs {
    /// Runs of the ml100k prepare (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Size of the generated Criteo-format TSV, in MB (10^6 bytes). 0 skips Criteo.
    #[arg(long, default_value_t = 1000)]
    pub criteo_mb: u64,
    /// Runs of the Criteo prepare (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub criteo_runs: usize,
    /// Work folder for generated data and outputs.
    #[arg(long, default_value = "target/bench-data")]
    pub work: PathBuf,
    /// Raw data folder holding ml-100k (fetched when missing).
    #[arg(long, default_value = "data/raw")]
    pub raw_dir: PathBuf,
}

/// The machine and build lines every benchmark prints first.
pub(crate) fn print_header() {
    println!("machine: {}", machine());
    println!(
        "build: {}",
        if cfg!(debug_assertions) {
            "debug (figures not representative)"
        } else {
            "release"
        }
    );
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores available")
}

#[derive(Args, Debug)]
pub struct TrainBenchArgs {
    /// Models (default: all). `cgc` is timed classic and domain-conditioned.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub models: Vec<crate::models::config::ModelName>,
    /// Recipe to measure on.
    #[arg(long, default_value = "ml100k-occupation")]
    pub recipe: String,
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
    let mut cfg = Config::default();
    cfg.data.recipe = args.recipe.clone();
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

pub fn train(args: &TrainBenchArgs) -> Result<()> {
    if let Some(label) = &args.one {
        println!("{}", serde_json::to_string(&train_one(args, label)?)?);
        return Ok(());
    }
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset (all cores)".into());
    println!("machine: {}; RAYON_NUM_THREADS={threads}", machine());
    println!(
        "build: {}; batch {}, {} warm-up + {} timed steps, median of {} repetitions; recipe {}",
        if cfg!(debug_assertions) {
            "debug (figures not representative)"
        } else {
            "release"
        },
        args.batch,
        args.warmup,
        args.steps,
        args.reps,
        args.recipe
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
        let out = std::process::Command::new(&exe)
            .args(["bench", "train", "--recipe", &args.recipe, "--one", &label])
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

#[derive(Args, Debug)]
pub struct LlmBenchArgs {
    /// The model (.gguf file, checkpoint folder or Hub id).
    #[arg(long, default_value = "data/models/SmolLM2-135M-Instruct.Q4_1.gguf")]
    pub model: String,
    /// Token windows to run: a JSON file with `ids` (n_seq × seq_len), as written
    /// by notebooks/reference/llm/peft_bench.py so both sides time the same input.
    #[arg(long, default_value = "notebooks/reference/llm/bench_ids.json")]
    pub ids: PathBuf,
    /// Warm-up runs before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Also time steps with adapters on the top N layers only (the lower layers
    /// cached, as `pipeline embed` does); 0 skips.
    #[arg(long, default_value_t = 8)]
    pub top_layers: usize,
    /// Where the LLM runs: cpu, cuda or cuda:N (CUDA needs a build with
    /// --features cuda; each timed run ends with a device synchronisation).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Internal: measure one thing (`forward`, `lora`, `ptuning`, `lora-top`,
    /// `ptuning-top`) and print one JSON line.
    #[arg(long, hide = true)]
    pub one: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LlmFigure {
    what: String,
    seconds: f64,
    tokens_per_s: f64,
    peak_rss_mib: f64,
}

fn llm_one(args: &LlmBenchArgs, what: &str) -> Result<LlmFigure> {
    use crate::llm::adapters::{Adapters, LoraConfig, PrefixConfig};
    use crate::nn::optim::{AdamConfig, Moments, OptimizerKind, adam_step};
    use crate::nn::rng::Rng;
    use candle_core::Tensor;
    let dev = crate::device::parse_device(&args.device)?;
    let l = crate::llm::load::load(&args.model, &dev)?;
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&args.ids).with_context(|| format!("cannot read {}", args.ids.display()))?,
    )?;
    let rows: Vec<Vec<u32>> = serde_json::from_value(v["ids"].clone())?;
    let (n, t) = (rows.len(), rows.first().map_or(0, Vec::len));
    let ids = Tensor::from_vec(rows.concat(), (n, t), &dev)?;
    let layers = l.decoder.cfg.num_hidden_layers;
    let top: Vec<usize> = (layers.saturating_sub(args.top_layers)..layers).collect();
    let mut rng = Rng::new(0);
    let ad = match what {
        "forward" => Adapters::none(),
        "lora" => Adapters::lora(&LoraConfig::default(), &l.decoder.cfg, &dev, &mut rng)?,
        "ptuning" => Adapters::prefix(&PrefixConfig::default(), &l.decoder.cfg, &dev, &mut rng)?,
        "lora-top" => Adapters::lora(
            &LoraConfig {
                layers: top.clone(),
                ..LoraConfig::default()
            },
            &l.decoder.cfg,
            &dev,
            &mut rng,
        )?,
        "ptuning-top" => Adapters::prefix(
            &PrefixConfig {
                layers: top.clone(),
                ..PrefixConfig::default()
            },
            &l.decoder.cfg,
            &dev,
            &mut rng,
        )?,
        _ => bail!("unknown measurement {what}"),
    };
    let h = l.decoder.cfg.hidden_size;
    let w: Vec<f32> = (0..h).map(|_| rng.normal() as f32).collect();
    let w = Tensor::from_vec(w, (h, 1), &dev)?;
    let from = ad.lowest_layer().unwrap_or(layers);
    let x0 = l.decoder.embed_ids(&ids)?;
    let cache = if what.ends_with("-top") {
        Some(
            l.decoder
                .forward_range(&x0, 0, from, &ad, false, &mut rng)?,
        )
    } else {
        None
    };
    let vars = ad.vars();
    let mut moments: Vec<Moments> = vars
        .iter()
        .map(|(_, v)| Moments::zeros(v.elem_count()))
        .collect();
    let adam = AdamConfig {
        kind: OptimizerKind::Adamw,
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut step = 0u64;
    let mut run = |rng: &mut Rng| -> Result<()> {
        if what == "forward" {
            l.decoder.hidden_states(&ids, &ad, false, rng)?;
            return Ok(());
        }
        let hs = match &cache {
            Some(c) => l
                .decoder
                .final_norm(&l.decoder.forward_layers(c, from, &ad, true, rng)?)?,
            None => l.decoder.hidden_states(&ids, &ad, true, rng)?,
        };
        let loss = hs.mean(1)?.matmul(&w)?.sum_all()?;
        let grads = loss.backward()?;
        step += 1;
        for ((_, v), mo) in vars.iter().zip(moments.iter_mut()) {
            if let Some(g) = grads.get(v.as_tensor()) {
                let mut p = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                adam_step(
                    &mut p,
                    Some(&g.flatten_all()?.to_vec1::<f32>()?),
                    mo,
                    &adam,
                    step,
                );
                v.set(&Tensor::from_vec(p, v.shape(), &dev)?)?;
            }
        }
        Ok(())
    };
    // GPU work is queued: a run is timed until the device has finished it (a no-op
    // on the CPU).
    for _ in 0..args.warmup {
        run(&mut rng)?;
        dev.synchronize()?;
    }
    let mut secs = Vec::new();
    for _ in 0..args.runs.max(1) {
        let s = Instant::now();
        run(&mut rng)?;
        dev.synchronize()?;
        secs.push(s.elapsed().as_secs_f64());
    }
    let med = median(&secs).unwrap_or(f64::NAN);
    Ok(LlmFigure {
        what: what.into(),
        seconds: med,
        tokens_per_s: (n * t) as f64 / med,
        peak_rss_mib: crate::fsutil::peak_rss_bytes().unwrap_or(0) as f64 / (1024.0 * 1024.0),
    })
}

pub fn llm(args: &LlmBenchArgs) -> Result<()> {
    if let Some(w) = &args.one {
        println!("{}", serde_json::to_string(&llm_one(args, w)?)?);
        return Ok(());
    }
    // A bad or unavailable device fails here, once, not in every child.
    crate::device::parse_device(&args.device)?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset (all cores)".into());
    let on = if args.device == "cpu" {
        String::new()
    } else {
        format!("; LLM on {}", args.device)
    };
    println!("machine: {}; RAYON_NUM_THREADS={threads}{on}", machine());
    println!(
        "build: {}; model {}; input {}; {} warm-up + median of {} runs; LoRA r=8 α=16 on q,v; P-Tuning v2 16 virtual tokens",
        if cfg!(debug_assertions) {
            "debug (figures not representative)"
        } else {
            "release"
        },
        args.model,
        args.ids.display(),
        args.warmup,
        args.runs
    );
    let mut list = vec!["forward", "lora", "ptuning"];
    if args.top_layers > 0 {
        list.extend(["lora-top", "ptuning-top"]);
    }
    println!("\n| measurement | seconds | tokens/s | peak RSS MiB |\n| --- | --- | --- | --- |");
    let exe = std::env::current_exe()?;
    for what in list {
        let out = std::process::Command::new(&exe)
            .args([
                "bench",
                "llm",
                "--one",
                what,
                "--model",
                &args.model,
                "--ids",
            ])
            .arg(&args.ids)
            .args([
                "--warmup",
                &args.warmup.to_string(),
                "--runs",
                &args.runs.to_string(),
            ])
            .args(["--top-layers", &args.top_layers.to_string()])
            .args(["--device", &args.device])
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !out.status.success() {
            bail!("benchmark of {what} failed");
        }
        let f: LlmFigure = serde_json::from_slice(out.stdout.trim_ascii())?;
        let label = match what {
            "forward" => "forward (no grad), all layers".to_string(),
            "lora" => "LoRA step, all 30 layers".to_string(),
            "ptuning" => "P-Tuning v2 step, all 30 layers".to_string(),
            "lora-top" => format!(
                "LoRA step, top {} layers (lower layers cached)",
                args.top_layers
            ),
            _ => format!(
                "P-Tuning v2 step, top {} layers (lower layers cached)",
                args.top_layers
            ),
        };
        println!(
            "| {label} | {:.3} | {:.0} | {:.0} |",
            f.seconds, f.tokens_per_s, f.peak_rss_mib
        );
    }
    Ok(())
}

pub fn data(args: &DataBenchArgs) -> Result<()> {
    if args.runs == 0 || args.criteo_runs == 0 {
        bail!("--runs and --criteo-runs must be at least 1");
    }
    print_header();
    std::fs::create_dir_all(&args.work)?;

    // ml100k from the parquet copy, every recipe variant's cost is the same reader.
    let mut cfg = Config::default();
    cfg.data.recipe = "ml100k-occupation".into();
    cfg.data.raw_dir = args.raw_dir.clone();
    cfg.data.prepared_dir = args.work.join("prepared");
    let mut secs = Vec::new();
    for _ in 0..args.runs {
        let p = prepare::prepare(&cfg, true)?;
        secs.push(p.seconds);
    }
    let (lo, hi) = (
        secs.iter().cloned().fold(f64::INFINITY, f64::min),
        secs.iter().cloned().fold(0.0, f64::max),
    );
    println!(
        "ml100k-occupation prepare: median {:.3} s over {} runs (min {lo:.3}, max {hi:.3})",
        median(&secs).unwrap_or(f64::NAN),
        args.runs
    );

    if args.criteo_mb == 0 {
        return Ok(());
    }
    let tsv = args.work.join(format!("criteo-{}mb.tsv", args.criteo_mb));
    let bytes = args.criteo_mb * 1_000_000;
    if std::fs::metadata(&tsv).map(|m| m.len()).unwrap_or(0) < bytes {
        let t = Instant::now();
        let lines = generate_criteo(&tsv, bytes)?;
        println!(
            "generated {} ({lines} lines) in {:.1} s",
            tsv.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let size = std::fs::metadata(&tsv)?.len();
    let config = args.work.join("criteo.toml");
    let out = args.work.join("prepared");
    std::fs::write(
        &config,
        format!(
            "[data]\nrecipe = \"criteo\"\nprepared_dir = {:?}\n[data.criteo]\nfile = {:?}\n",
            out.display().to_string(),
            tsv.display().to_string()
        ),
    )?;
    let exe = std::env::current_exe()?;
    let mut secs = Vec::new();
    let mut peak = 0u64;
    for _ in 0..args.criteo_runs {
        let t = Instant::now();
        let status = std::process::Command::new(&exe)
            .args(["data", "prepare", "--force", "--config"])
            .arg(&config)
            .status()
            .context("cannot run the pipeline binary for the Criteo benchmark")?;
        if !status.success() {
            bail!("criteo prepare failed: {status}");
        }
        secs.push(t.elapsed().as_secs_f64());
        peak = peak.max(children_peak_rss());
    }
    let med = median(&secs).unwrap_or(f64::NAN);
    println!(
        "criteo prepare of {:.0} MB (2 passes): median {med:.2} s over {} runs, {:.1} MB/s of input, peak RSS {:.0} MiB",
        size as f64 / 1e6,
        args.criteo_runs,
        size as f64 / 1e6 / med,
        peak as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// Largest peak resident memory of any waited-for child process, bytes.
pub(crate) fn children_peak_rss() -> u64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) == 0 {
            (u.ru_maxrss as u64) * 1024
        } else {
            0
        }
    }
}

/// splitmix64: a tiny deterministic generator for synthetic data.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Skewed draw in 0..n: the minimum of two uniforms favours small values.
    fn skewed(&mut self, n: u64) -> u64 {
        (self.next() % n).min(self.next() % n)
    }
}

/// Write a Criteo-format TSV of about `bytes` bytes: label, 13 integers (some
/// empty, a few negative), 26 hex categories with cardinalities from 4 to 2·10^5
/// (skewed: small values are drawn more often). The label depends on I1, C1, C3
/// and C4 through a logistic model, so that a trained model beats AUC 0.5.
pub fn generate_criteo(path: &Path, bytes: u64) -> Result<u64> {
    generate_criteo_until(path, |written, _| written >= bytes)
}

/// [`generate_criteo`] of exactly `lines` lines (the same generator: a file of
/// fewer lines is a prefix of one of more).
pub fn generate_criteo_lines(path: &Path, lines: u64) -> Result<u64> {
    generate_criteo_until(path, |_, n| n >= lines)
}

fn generate_criteo_until(path: &Path, done: impl Fn(u64, u64) -> bool) -> Result<u64> {
    // Written beside and renamed: a killed run leaves no short file in its place.
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Mix(42);
    let cards: Vec<u64> = (0..26).map(|j| [4u64, 30, 1_000, 200_000][j % 4]).collect();
    let (mut written, mut lines) = (0u64, 0u64);
    let mut line = String::with_capacity(512);
    let mut ints = String::with_capacity(128);
    let mut cats = String::with_capacity(256);
    while !done(written, lines) {
        // Features first; the label depends on a few of them (a click rate of
        // about 25%), so that a model has something to learn.
        ints.clear();
        cats.clear();
        let mut logit = -1.6f64;
        for k in 0..13 {
            ints.push('\t');
            let r = rng.next();
            if !r.is_multiple_of(10) {
                let v = (rng.skewed(5_000) as i64) - 3;
                if k == 0 {
                    logit += if v < 100 { 0.6 } else { -0.4 };
                }
                ints.push_str(&v.to_string());
            }
        }
        for (j, &card) in cards.iter().enumerate() {
            cats.push('\t');
            if !rng.next().is_multiple_of(20) {
                let v = rng.skewed(card);
                match j {
                    0 => logit += [0.8, 0.0, -0.5, 0.3][v as usize],
                    2 if v.is_multiple_of(7) => logit += 0.7,
                    3 if v.is_multiple_of(5) => logit -= 0.6,
                    _ => {}
                }
                let h = fnv1a64(format!("{j}:{v}").as_bytes()) as u32;
                cats.push_str(&format!("{h:08x}"));
            }
        }
        let p = 1.0 / (1.0 + (-logit).exp());
        let click = ((rng.next() >> 11) as f64 / (1u64 << 53) as f64) < p;
        line.clear();
        line.push(if click { '1' } else { '0' });
        line.push_str(&ints);
        line.push_str(&cats);
        line.push('\n');
        w.write_all(line.as_bytes())?;
        written += line.len() as u64;
        lines += 1;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&partial, path)?;
    Ok(lines)
}
