//! The embed stage on a decoder LLM: LoRA, P-Tuning v2 or no adapters, trained
//! through the probe on the CTR task. Speed: prompts are fixed, so the layers
//! below the lowest adapter run once and are cached; and the probe's gradient
//! with respect to the (domains × h) matrix is accumulated over
//! `batches_per_llm_step` CTR batches before one backward pass through the LLM.

use super::checkpoint::{self, EmbedProgress};
use super::prompts::tokenize_prompts;
use super::prompts::{
    Prompts, render_background, render_prompts, require_names, save_background, template_catalog,
};
use super::{EmbedConfig, EmbedEpoch, EmbedResult, Method, inputs, save_outputs, start_run};
use crate::config::{Config, Stage, check_reusable};
use crate::data::dataset::Dataset;
use crate::fsutil::write_atomic;
use crate::llm::adapters::Adapters;
use crate::llm::load::{Loaded, load};
use crate::llm::peft;
use crate::models::probe::Probe;
use crate::nn::optim::{AdamConfig, Moments, OptimizerKind, adam_step};
use crate::nn::rng::Rng;
use crate::pool::{self, Query};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use std::path::Path;
use std::time::Instant;

/// The token states (1, T, h) of a new prompt under the finished embed run in
/// `embed_dir`, computed as that run computed its domains' states: its LLM and
/// adapters (saved at the best epoch) and the hidden states it read
/// (`embed.layer`), or its sentence encoder. The domain-name tokens (for
/// `pool.query = "name"`) are those overlapping an occurrence of `name` in
/// `text`, as `{domain}` marks them in a template.
pub fn prompt_states(embed_dir: &Path, text: &str, name: &str) -> Result<(Prompts, Tensor)> {
    let cfg_path = embed_dir.join("config.toml");
    let cfg = Config::load(Some(&cfg_path)).with_context(|| {
        format!(
            "reading the settings of the embed run {}",
            embed_dir.display()
        )
    })?;
    if !embed_dir.join("result.json").is_file() {
        bail!(
            "{} is not a finished embed run (no result.json)",
            embed_dir.display()
        );
    }
    let e = &cfg.embed;
    let dev = Device::Cpu;
    let spans: Vec<std::ops::Range<usize>> = if name.is_empty() {
        Vec::new()
    } else {
        text.match_indices(name)
            .map(|(i, m)| i..i + m.len())
            .collect()
    };
    let too_long = |_: usize, n: usize| {
        format!(
            "the prompt has {n} tokens; the embed run {} allows 1..={} (embed.max_prompt_tokens)",
            embed_dir.display(),
            e.max_prompt_tokens
        )
    };
    let rendered = vec![(text.to_string(), spans)];
    if e.method == Method::Encoder {
        let enc = crate::llm::encoder::load_encoder(Path::new(&e.encoder), &dev)?;
        let max = e.max_prompt_tokens.min(enc.cfg.max_position_embeddings);
        let p = tokenize_prompts(rendered, &enc.tokenizer, true, max, &dev, &too_long)?;
        let states = enc.states(&p.ids, &p.mask)?;
        return Ok((p, states));
    }
    let llm = load(&e.model, &dev)
        .with_context(|| format!("loading the LLM of the embed run {}", embed_dir.display()))?;
    let adapter_dir = embed_dir.join("adapter");
    let ad = if e.method == Method::None {
        Adapters::none()
    } else if adapter_dir.join("adapter_config.json").is_file() {
        crate::llm::peft::load(&adapter_dir, &llm.decoder.cfg, &dev, llm.decoder.rope)?
    } else {
        bail!(
            "{}: the embed run's adapters are not there (embed.method = {:?})",
            adapter_dir.display(),
            e.method.as_str()
        );
    };
    let p = tokenize_prompts(
        rendered,
        &llm.tokenizer,
        false,
        e.max_prompt_tokens,
        &dev,
        &too_long,
    )?;
    let layers = e.layers(llm.decoder.layers.len())?;
    let mut rng = Rng::new(0);
    let reader = Reader::new(&llm, &p.ids, &layers, &ad, &mut rng)?;
    let states = reader.states(&llm, &ad, false, &mut rng)?;
    Ok((p, states))
}

/// The adapter (or no-adapter) run of the `embed` stage on a decoder LLM: the
/// prompts through the frozen model, the adapters and the probe trained together
/// epoch by epoch with a checkpoint after each, the best epoch's token states and
/// domain embeddings written.
pub(super) fn train(
    cfg: &Config,
    prepared: &Path,
    ds: &Dataset,
    device: &Device,
    start: Instant,
    resume: bool,
    stop_after: Option<usize>,
) -> Result<Option<EmbedResult>> {
    let e = &cfg.embed;
    let cpu = Device::Cpu;
    let llm = load(&e.model, device)?;
    let checksum_before = llm.decoder.checksum()?;
    let catalog = template_catalog(&e.template, prepared)?;
    let p = render_prompts(
        &e.template,
        &ds.meta,
        catalog.as_ref(),
        &llm,
        e.max_prompt_tokens,
        &cfg.data.holdout_domains,
    )?;
    if e.query == Query::Name {
        require_names(&p, &ds.domain_names, &e.template)?;
    }
    let bg = render_background(
        e,
        &ds.meta,
        &llm.tokenizer,
        false,
        e.max_prompt_tokens,
        &llm.decoder.device,
    )?;
    let layers = e.layers(llm.decoder.layers.len())?;
    let name = e.run_name(&ds.meta.recipe, &cfg.data.holdout_domains);
    let dir = e.runs_dir.join(name);
    if dir.join("result.json").is_file() {
        bail!(
            "{} already holds a finished embed run: choose another run name",
            dir.display()
        );
    }
    let inputs = inputs(cfg, prepared)?;
    if dir.join("checkpoint.json").is_file() {
        if !resume {
            bail!(
                "{} holds an unfinished embed run: pass --resume to continue it, or choose another run name",
                dir.display()
            );
        }
        check_reusable(&dir, cfg, Stage::Embed)?;
        inputs.require_same(&dir)?;
    }
    start_run(&dir, cfg, &inputs, ds, &p)?;

    let base = Rng::new(e.seed);
    let mut rng = base.fork(1);
    let ad = adapter_for(e, &llm, &mut rng)?;
    let h = llm.decoder.cfg.hidden_size;
    let mut probe = Probe::new(ds, h, &e.probe(), &mut rng)?;
    // Layers below the lowest adapter never change: run them once.
    let reader = Reader::new(&llm, &p.ids, &layers, &ad, &mut rng)?;
    // Its own random stream: the domains' numbers do not depend on it.
    let bg_reader = match &bg {
        Some(b) => Some(Reader::new(&llm, &b.ids, &layers, &ad, &mut base.fork(2))?),
        None => None,
    };
    tracing::info!(
        "embed {}: {} prompts of up to {} tokens, hidden states {layers:?} read, layers 0..{} cached, {} adapter parameters",
        e.method.as_str(),
        p.texts.len(),
        p.ids.dim(1)?,
        reader.from,
        ad.vars().iter().map(|(_, v)| v.elem_count()).sum::<usize>()
    );
    let mut moments: Vec<Moments> = ad
        .vars()
        .iter()
        .map(|(_, v)| Moments::zeros(v.elem_count()))
        .collect();
    let adam = AdamConfig {
        kind: OptimizerKind::Adamw,
        lr: e.lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let (mut pr, mut best) = if resume && dir.join("checkpoint.json").is_file() {
        let shapes = checkpoint::Shapes {
            domains: ds.domain_names.len(),
            tokens: p.ids.dim(1)?,
            hidden: h,
            background: match &bg {
                Some(b) => Some((b.texts.len(), b.ids.dim(1)?)),
                None => None,
            },
        };
        checkpoint::load(&dir, &ad, &mut moments, &mut probe, &shapes, device)?
    } else {
        (EmbedProgress::default(), checkpoint::Best::default())
    };
    let names = ds.domain_names.clone();
    while pr.epochs_done < e.epochs && (pr.epochs_done == 0 || pr.bad < e.patience) {
        let epoch = pr.epochs_done + 1;
        let t0 = Instant::now();
        let mut order: Vec<usize> = (0..ds.train.n).collect();
        base.fork(100 + epoch as u64).shuffle(&mut order);
        let mut erng = base.fork(10_000 + epoch as u64);
        let held = episode_held_out(
            e.episodes,
            &ds.train.domains,
            names.len(),
            &mut base.fork(300_000 + epoch as u64),
        );
        let (mut sum, mut count) = (0.0, 0usize);
        let per = e.batches_per_llm_step.max(1) * e.batch_size;
        for group in order.chunks(per) {
            let train_llm = e.method != Method::None;
            let (_states, dm) =
                domain_matrix(&llm, &reader, &p, &ad, e.query, train_llm, &mut erng)?;
            // The (D, h) domain matrix crosses to the probe's CPU and its gradient back.
            let dm_cpu = dm.to_device(&cpu)?;
            let (loss, g) = if e.episodes > 0.0 {
                episode_steps(&mut probe, &ds.train, group, &held, e.batch_size, &dm_cpu)?
            } else {
                probe.steps(&ds.train, group, e.batch_size, &dm_cpu, true)?
            };
            sum += loss;
            count += group.len();
            if train_llm && let Some(g) = g {
                let grads = (dm * g.to_device(device)?)?.sum_all()?.backward()?;
                pr.llm_steps += 1;
                for ((_, v), mo) in ad.vars().iter().zip(moments.iter_mut()) {
                    let Some(gr) = grads.get(v.as_tensor()) else {
                        continue;
                    };
                    let mut w = v.as_tensor().flatten_all()?.to_vec1::<f32>()?;
                    adam_step(
                        &mut w,
                        Some(&gr.flatten_all()?.to_vec1::<f32>()?),
                        mo,
                        &adam,
                        pr.llm_steps as u64,
                    );
                    v.set(&Tensor::from_vec(w, v.shape(), device)?)?;
                }
            }
        }
        let (states, dm) = domain_matrix(&llm, &reader, &p, &ad, e.query, false, &mut erng)?;
        let (states, dm) = (states.to_device(&cpu)?, dm.to_device(&cpu)?);
        let valid = probe.evaluate(&ds.valid, &dm, &names)?;
        let in_episode = |want: bool| {
            crate::metrics::weighted_auc(
                valid
                    .domains
                    .iter()
                    .enumerate()
                    .filter(|(i, d)| held[*i] == want && d.rows > 0)
                    .map(|(_, d)| d),
            )
        };
        let episodes = held.iter().any(|&h| h);
        let em = EmbedEpoch {
            epoch,
            probe_train_loss: sum / count.max(1) as f64,
            probe_valid_auc: valid.auc,
            llm_steps: pr.llm_steps,
            seconds: t0.elapsed().as_secs_f64(),
            episode_held_out: (0..names.len())
                .filter(|&i| held[i])
                .map(|i| names[i].clone())
                .collect(),
            held_out_valid_auc: if episodes { in_episode(true) } else { None },
            trained_valid_auc: if episodes { in_episode(false) } else { None },
        };
        let fmt = |a: Option<f64>| a.map_or("n/a".into(), |a| format!("{a:.4}"));
        tracing::info!(
            "embed epoch {epoch}: probe loss {:.4}, valid AUC {}, {} LLM steps, {:.1}s{}",
            em.probe_train_loss,
            fmt(valid.auc),
            pr.llm_steps,
            em.seconds,
            if episodes {
                format!(
                    "; episode: valid AUC {} on the {} domains left out of the probe's updates, {} on the others",
                    fmt(em.held_out_valid_auc),
                    em.episode_held_out.len(),
                    fmt(em.trained_valid_auc)
                )
            } else {
                String::new()
            }
        );
        pr.history.push(em);
        let lines: String = pr
            .history
            .iter()
            .map(|h| serde_json::to_string(h).unwrap_or_default() + "\n")
            .collect();
        write_atomic(&dir.join("metrics.jsonl"), lines.as_bytes())?;
        if valid.auc.is_some() && (pr.best.is_none() || valid.auc > pr.best) {
            pr.best = valid.auc;
            pr.best_epoch = epoch;
            pr.bad = 0;
            best.dm = Some(dm);
            best.states = Some(states);
            if let Some(r) = &bg_reader {
                best.bg = Some(
                    r.states(&llm, &ad, false, &mut base.fork(3))?
                        .to_device(&cpu)?,
                );
            }
            if !ad.is_empty() {
                peft::save(
                    &dir.join("adapter"),
                    &ad,
                    &llm.decoder.cfg,
                    &llm.source,
                    llm.decoder.rope,
                )?;
            }
        } else {
            pr.bad += 1;
        }
        pr.epochs_done = epoch;
        pr.probe_step = probe.step;
        checkpoint::save(&dir, &ad, &moments, &probe, &pr, &best)?;
        if stop_after.is_some_and(|n| pr.epochs_done >= n)
            && pr.epochs_done < e.epochs
            && pr.bad < e.patience
        {
            return Ok(None);
        }
    }
    let checksum_after = llm.decoder.checksum()?;
    // Checked before any final output is written: a changed base model is a bug.
    if checksum_before != checksum_after {
        bail!(
            "the base model changed during training (checksum {checksum_before:016x} → {checksum_after:016x})"
        );
    }
    let (states, dm) = match (best.states, best.dm) {
        (Some(s), Some(d)) => (s, d),
        _ => bail!("no epoch produced a valid AUC (does the valid split hold both classes?)"),
    };
    let ppl = pool::kernel_perplexities(&dm)?;
    let shift = if ad.is_empty() {
        None
    } else {
        let (_, frozen) = domain_matrix(
            &llm,
            &reader,
            &p,
            &Adapters::none(),
            e.query,
            false,
            &mut base.fork(1),
        )?;
        let s = pool::adapter_shift(&dm, &frozen.to_device(&cpu)?)?;
        tracing::info!("embed {}: {s}", e.method.as_str());
        Some(s)
    };
    save_outputs(&dir, &states, &p, &dm, &names)?;
    if let (Some(b), Some(st)) = (&bg, &best.bg) {
        save_background(&dir, st, b)?;
        tracing::info!(
            "embed: {} background prompts' token states written",
            b.texts.len()
        );
    }
    let r = EmbedResult {
        method: e.method.as_str().into(),
        recipe: ds.meta.recipe.clone(),
        template: e.template.display().to_string(),
        model: llm.source.clone(),
        best_epoch: pr.best_epoch,
        probe_valid_auc: pr.best,
        llm_steps: pr.llm_steps,
        wall_seconds: start.elapsed().as_secs_f64(),
        base_checksum_before: format!("{checksum_before:016x}"),
        base_checksum_after: format!("{checksum_after:016x}"),
        run_dir: dir.display().to_string(),
        layers,
        kernel_perplexity: Some(ppl),
        adapter_shift: shift,
        background: bg.as_ref().map(|b| b.texts.len()),
    };
    tracing::info!("embed {}: {ppl}", e.method.as_str());
    write_atomic(
        &dir.join("result.json"),
        serde_json::to_string_pretty(&r)?.as_bytes(),
    )?;
    Ok(Some(r))
}

/// The training domains an epoch's episode leaves out of the probe's updates:
/// `round(share · n)` of the `n` domains with training rows (at least 1, at
/// most n − 1), drawn from `rng`; none when `share` is 0 or n < 2.
pub(crate) fn episode_held_out(
    share: f64,
    train_domains: &[u32],
    d: usize,
    rng: &mut Rng,
) -> Vec<bool> {
    let mut held = vec![false; d];
    let mut present: Vec<usize> = {
        let mut seen = vec![false; d];
        for &x in train_domains {
            seen[x as usize] = true;
        }
        (0..d).filter(|&i| seen[i]).collect()
    };
    let n = present.len();
    if share <= 0.0 || n < 2 {
        return held;
    }
    let k = ((share * n as f64).round() as usize).clamp(1, n - 1);
    rng.shuffle(&mut present);
    for &i in &present[..k] {
        held[i] = true;
    }
    held
}

fn adapter_for(cfg: &EmbedConfig, llm: &Loaded, rng: &mut Rng) -> Result<Adapters> {
    let dev = &llm.decoder.device;
    Ok(match cfg.method {
        Method::None | Method::Encoder => Adapters::none(),
        Method::Lora => Adapters::lora(&cfg.lora, &llm.decoder.cfg, dev, rng)?,
        Method::Ptuning => Adapters::prefix(&cfg.ptuning, &llm.decoder.cfg, dev, rng)?,
    })
}

/// How the chosen layers' states are read: the layers at or below `from` (the
/// lowest adapter, or the highest chosen layer) never change and are computed
/// once (`frozen`, after the final norm); `cache` is the hidden state at `from`,
/// from which the chosen layers `above` it are run at every step.
struct Reader {
    from: usize,
    cache: Tensor,
    frozen: Vec<Tensor>,
    above: Vec<usize>,
}

impl Reader {
    /// `layers`: sorted hidden-state indices (see [`EmbedConfig::layers`]).
    fn new(
        llm: &Loaded,
        ids: &Tensor,
        layers: &[usize],
        ad: &Adapters,
        rng: &mut Rng,
    ) -> Result<Self> {
        let dec = &llm.decoder;
        let n = dec.layers.len();
        let top = *layers.last().context("no layer to read")?;
        if let Some(hi) = ad.highest_layer()
            && hi >= top
        {
            bail!(
                "embed.layer reads hidden state {top} (the output of block {}), but adapters sit on blocks up to {hi}, which would never train: set embed.lora.layers / embed.ptuning.layers to blocks below {top}",
                top as i64 - 1
            );
        }
        let from = ad.lowest_layer().unwrap_or(n).min(top);
        let (mut h, mut at) = (dec.embed_ids(ids)?, 0);
        let mut frozen = Vec::new();
        for &k in layers.iter().filter(|&&k| k <= from) {
            if k > at {
                h = dec.forward_range(&h, at, k, ad, false, rng)?;
                at = k;
            }
            frozen.push(dec.final_norm(&h)?);
        }
        if from > at {
            h = dec.forward_range(&h, at, from, ad, false, rng)?;
        }
        Ok(Reader {
            from,
            cache: h,
            frozen,
            above: layers.iter().copied().filter(|&k| k > from).collect(),
        })
    }

    /// The chosen layers' states (after the final norm), averaged: (D, T, h).
    fn states(&self, llm: &Loaded, ad: &Adapters, train: bool, rng: &mut Rng) -> Result<Tensor> {
        let dec = &llm.decoder;
        let mut parts = self.frozen.clone();
        let (mut h, mut at) = (self.cache.clone(), self.from);
        for &k in &self.above {
            h = dec.forward_range(&h, at, k, ad, train, rng)?;
            parts.push(dec.final_norm(&h)?);
            at = k;
        }
        Ok(match parts.len() {
            1 => parts.remove(0),
            k => (Tensor::stack(&parts, 0)?.sum(0)? / k as f64)?,
        })
    }
}

/// Token states and pooled domain vectors for the prompts.
fn domain_matrix(
    llm: &Loaded,
    reader: &Reader,
    p: &Prompts,
    ad: &Adapters,
    q: Query,
    train: bool,
    rng: &mut Rng,
) -> Result<(Tensor, Tensor)> {
    let states = reader.states(llm, ad, train, rng)?;
    let dm = pool::parameterless(&states, p.tokens(), q, None)?;
    Ok((states, dm))
}

/// One LLM step's probe work under episodes: probe steps on the rows of the
/// domains not `held` out, then the loss and gradient of the held-out rows
/// through the probe as it now is, without updating it. The gradient w.r.t.
/// the domain matrix is the row-weighted mean of the two.
fn episode_steps(
    probe: &mut Probe,
    split: &crate::data::dataset::SplitData,
    group: &[usize],
    held: &[bool],
    batch_size: usize,
    dm: &Tensor,
) -> Result<(f64, Option<Tensor>)> {
    let (query, support): (Vec<usize>, Vec<usize>) = group
        .iter()
        .partition(|&&r| held[split.domains[r] as usize]);
    let (ls, gs) = probe.steps(split, &support, batch_size, dm, true)?;
    let (lq, gq) = probe.steps(split, &query, batch_size, dm, false)?;
    let (ns, nq) = (support.len() as f64, query.len() as f64);
    let g = match (gs, gq) {
        (Some(a), Some(b)) => Some(((a * ns)? + (b * nq)?)?.affine(1.0 / (ns + nq), 0.0)?),
        (a, b) => a.or(b),
    };
    Ok((ls + lq, g))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn episodes_hold_out_a_share_of_the_domains_with_training_rows() {
        // Domains 0..6; domain 2 and 5 have no training rows.
        let train = [0u32, 1, 1, 3, 4, 0, 3];
        let held = |share: f64, seed: u64| episode_held_out(share, &train, 6, &mut Rng::new(seed));
        assert_eq!(held(0.0, 1), vec![false; 6]);
        for seed in 0..20 {
            let h = held(0.5, seed);
            assert_eq!(h.iter().filter(|&&x| x).count(), 2, "round(0.5 · 4)");
            assert!(!h[2] && !h[5], "only domains with training rows: {h:?}");
            assert_eq!(h, held(0.5, seed), "the same draw from the same seed");
            // Never none and never all of them.
            assert_eq!(held(0.01, seed).iter().filter(|&&x| x).count(), 1);
            assert_eq!(held(0.99, seed).iter().filter(|&&x| x).count(), 3);
        }
        let draws: std::collections::BTreeSet<Vec<bool>> = (0..20).map(|s| held(0.5, s)).collect();
        assert!(draws.len() > 1, "the subset changes with the stream");
        // One training domain: nothing to hold out.
        assert_eq!(
            episode_held_out(0.5, &[1, 1], 3, &mut Rng::new(0)),
            vec![false; 3]
        );
    }
}
