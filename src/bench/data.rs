//! `pipeline bench data`: seconds to prepare ml100k and the Criteo prepare's
//! throughput and peak memory on a generated TSV.

use super::criteo::generate_criteo;
use super::{children_peak_rss, print_header};
use crate::config::Config;
use crate::stages::prepare;
use crate::stats::median;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

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
