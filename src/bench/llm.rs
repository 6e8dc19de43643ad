//! `pipeline bench llm`: forward tokens/s and seconds per LoRA and P-Tuning v2
//! step on fixed token windows.

use super::machine;
use crate::stats::median;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

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
