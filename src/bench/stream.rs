//! `pipeline bench stream`: Criteo-size training in bounded memory. Generates a
//! Criteo-format TSV of a given number of lines, prepares it, trains one streamed
//! epoch of each model (`train.stream_shards`), and optionally kills one run with
//! SIGKILL mid-epoch and resumes it. Every step runs as a child process so that
//! its wall time and peak resident memory are its own.

use super::criteo::generate_criteo_lines;
use super::print_header;
use crate::models::config::ModelName;
use crate::train::trainer::{EpochMetrics, FinalMetrics};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Instant;

/// Rows of one epoch of Criteo-1TB (24 days of about 180M rows).
const CRITEO_1TB_ROWS: f64 = 4.37e9;

#[derive(Args, Debug)]
pub struct StreamBenchArgs {
    /// Lines of the generated Criteo-format TSV (the Kaggle file has 45,840,617).
    #[arg(long, default_value_t = 45_000_000)]
    pub lines: u64,
    /// Models to train one streamed epoch of (CGC's domains: column C6).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "dnn,cgc")]
    pub models: Vec<ModelName>,
    /// Train shards per buffer (`train.stream_shards`; a shard holds
    /// `data.criteo.shard_rows` = 262,144 rows).
    #[arg(long, default_value_t = 4)]
    pub buffer: usize,
    /// Also kill the first model's run with SIGKILL mid-epoch, resume it, and
    /// compare its test metrics with the uninterrupted run's.
    #[arg(long)]
    pub kill_resume: bool,
    /// Work folder for the TSV, the prepared data and the runs.
    #[arg(long, default_value = "target/bench-stream")]
    pub work: PathBuf,
}

/// A finished child: wall seconds, peak resident memory (bytes), exit status.
struct Measured {
    seconds: f64,
    peak: u64,
    status: ExitStatus,
}

/// Wait for `pid` and take its own resource usage (not its siblings').
fn reap(pid: u32, start: Instant) -> Result<Measured> {
    let mut status = 0i32;
    // SAFETY: wait4 writes only into the two values we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    if r < 0 {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    Ok(Measured {
        seconds: start.elapsed().as_secs_f64(),
        peak: usage.ru_maxrss as u64 * 1024,
        status: ExitStatus::from_raw(status),
    })
}

fn run(cmd: &mut Command, what: &str) -> Result<Measured> {
    let start = Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let m = reap(child.id(), start)?;
    if !m.status.success() {
        bail!("{what} failed: {}", m.status);
    }
    Ok(m)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

pub fn stream(args: &StreamBenchArgs) -> Result<()> {
    if args.lines < 1000 || args.buffer == 0 || args.models.is_empty() {
        bail!("--lines must be at least 1000, --buffer at least 1, --models not empty");
    }
    print_header();
    std::fs::create_dir_all(&args.work)?;
    let work = std::fs::canonicalize(&args.work)?;
    let tsv = work.join(format!("criteo-{}.tsv", args.lines));
    if !tsv.is_file() {
        let t = Instant::now();
        generate_criteo_lines(&tsv, args.lines)?;
        println!(
            "generated {} ({} lines, {:.0} MB) in {:.0} s",
            tsv.display(),
            args.lines,
            std::fs::metadata(&tsv)?.len() as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
    }
    let size = std::fs::metadata(&tsv)?.len() as f64;
    let prepared = work.join(format!("prepared-{}", args.lines));
    let runs = work.join(format!("runs-{}", args.lines));
    let exe = std::env::current_exe()?;
    let config = |model: ModelName| -> Result<PathBuf> {
        let path = work.join(format!("{}-{}.toml", model.as_str(), args.lines));
        std::fs::write(
            &path,
            format!(
                "[data]\nrecipe = \"criteo\"\nprepared_dir = {:?}\n[data.criteo]\nfile = {:?}\n\
                 [model]\nname = \"{}\"\n[train]\nepochs = 1\nstream_shards = {}\nruns_dir = {:?}\n",
                prepared.display().to_string(),
                tsv.display().to_string(),
                model.as_str(),
                args.buffer,
                runs.display().to_string(),
            ),
        )?;
        Ok(path)
    };

    let first = config(args.models[0])?;
    let m = run(
        Command::new(&exe)
            .args(["-q", "data", "prepare", "--force", "--config"])
            .arg(&first),
        "data prepare",
    )?;
    let meta = crate::data::meta::Meta::read(&prepared.join("criteo"))?;
    let s = &meta.splits;
    println!(
        "prepare: {:.0} s ({:.1} MB/s of input), peak RSS {:.0} MiB; rows train {}, valid {}, test {}; train shards {}",
        m.seconds,
        size / 1e6 / m.seconds,
        mib(m.peak),
        s.train.rows,
        s.valid.rows,
        s.test.rows,
        s.train.shards.len()
    );
    println!(
        "\n| model | epoch s (train) | train samples/s | wall s (epoch + test) | peak RSS MiB | Criteo-1TB epoch, h per worker |\n| --- | --- | --- | --- | --- | --- |"
    );
    let mut whole: Option<FinalMetrics> = None;
    for (i, &model) in args.models.iter().enumerate() {
        let cfg = config(model)?;
        let name = format!("bench-{}", model.as_str());
        let dir = runs.join(&name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let m = run(
            Command::new(&exe)
                .args(["-q", "train", "--run-name", &name, "--config"])
                .arg(&cfg),
            "train",
        )?;
        let jsonl = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&jsonl)
            .with_context(|| format!("cannot read {}", jsonl.display()))?;
        let epoch: EpochMetrics = serde_json::from_str(
            text.lines()
                .next()
                .with_context(|| format!("{} is empty", jsonl.display()))?,
        )?;
        let rate = s.train.rows as f64 / epoch.train_seconds;
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
            model.as_str(),
            epoch.train_seconds,
            rate,
            m.seconds,
            mib(m.peak),
            CRITEO_1TB_ROWS / rate / 3600.0
        );
        if i == 0 {
            whole = Some(read_json(&dir.join("metrics.json"))?);
        }
    }
    if args.kill_resume {
        let model = args.models[0];
        let cfg = config(model)?;
        let name = format!("bench-{}-killed", model.as_str());
        let dir = runs.join(&name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let start = Instant::now();
        let mut child = Command::new(&exe)
            .args(["-q", "train", "--run-name", &name, "--config"])
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let ckpt = dir.join("checkpoint.json");
        // Kill once the first mid-epoch checkpoint is there.
        loop {
            let text = std::fs::read_to_string(&ckpt).unwrap_or_default();
            if text.contains("\"buffers_done\"") {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("the run to kill ended first ({status})");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill()?;
        let killed = reap(child.id(), start)?;
        let at: serde_json::Value = read_json(&ckpt)?;
        let r = run(
            Command::new(&exe)
                .args(["-q", "train", "--resume", "--run-name", &name, "--config"])
                .arg(&cfg),
            "train --resume",
        )?;
        let resumed: FinalMetrics = read_json(&dir.join("metrics.json"))?;
        let whole = whole.context("internal: no uninterrupted run")?;
        println!(
            "\nkill -9 after {:.0} s ({}; checkpoint at epoch {}, buffer {}), resumed in {:.0} s: test AUC {:?} vs uninterrupted {:?}, logloss {} vs {}: {}",
            killed.seconds,
            killed.status,
            at["stream"]["epoch"],
            at["stream"]["buffers_done"],
            r.seconds,
            resumed.test.auc,
            whole.test.auc,
            resumed.test.logloss,
            whole.test.logloss,
            if resumed.test == whole.test {
                "equal"
            } else {
                "DIFFERENT"
            }
        );
    }
    Ok(())
}
