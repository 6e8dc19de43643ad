//! The embed stage for `method = "encoder"`: the prompts through a frozen
//! sentence encoder (BERT-family, e.g. all-MiniLM-L6-v2), once, mean-pooled.

use super::prompts::{render_background, render_prompts_with, save_background, template_catalog};
use super::{EmbedResult, Method, save_outputs};
use crate::config::Config;
use crate::data::dataset::Dataset;
use crate::fsutil::write_atomic;
use crate::llm::encoder::load_encoder;
use crate::pool::{self, Query, Tokens};
use anyhow::{Result, bail};
use candle_core::Device;
use std::path::Path;
use std::time::Instant;

/// The `embed` stage for `method = "encoder"`: render the prompts, run the
/// frozen encoder once, write the token states and the mean-pooled domain
/// embeddings.
pub fn embed(
    cfg: &Config,
    prepared: &Path,
    ds: &Dataset,
    device: &Device,
    start: Instant,
) -> Result<EmbedResult> {
    let e = &cfg.embed;
    debug_assert_eq!(e.method, Method::Encoder);
    if let Some(l) = &e.layer {
        bail!(
            "embed.layer = {:?} chooses a decoder LLM's layer; the encoder's last layer is read (unset embed.layer for method = \"encoder\")",
            l.list()
        );
    }
    let enc = load_encoder(Path::new(&e.encoder), device)?;
    let max = e.max_prompt_tokens.min(enc.cfg.max_position_embeddings);
    let catalog = template_catalog(&e.template, prepared)?;
    let p = render_prompts_with(
        &e.template,
        &ds.meta,
        catalog.as_ref(),
        &enc.tokenizer,
        true,
        max,
        &cfg.data.holdout_domains,
        device,
    )?;
    let bg = render_background(e, &ds.meta, &enc.tokenizer, true, max, device)?;
    let dir = e
        .runs_dir
        .join(e.run_name(&ds.meta.recipe, &cfg.data.holdout_domains));
    if dir.join("result.json").is_file() {
        bail!(
            "{} already holds a finished embed run: choose another run name",
            dir.display()
        );
    }
    let inputs = super::inputs(cfg, prepared)?;
    super::start_run(&dir, cfg, &inputs, ds, &p)?;
    tracing::info!(
        "embed encoder: {} prompts of up to {} tokens through {}",
        p.texts.len(),
        p.ids.dim(1)?,
        enc.source
    );
    let states = enc.states(&p.ids, &p.mask)?;
    let dm = pool::query(&states, Tokens::new(&p.mask, None), Query::Mean)?;
    let ppl = pool::kernel_perplexities(&dm)?;
    save_outputs(&dir, &states, &p, &dm, &ds.domain_names)?;
    if let Some(b) = &bg {
        let st = enc.states(&b.ids, &b.mask)?;
        save_background(&dir, &st, b)?;
        tracing::info!(
            "embed encoder: {} background prompts' token states written",
            b.texts.len()
        );
    }
    tracing::info!("embed encoder: {ppl}");
    let r = EmbedResult {
        method: Method::Encoder.as_str().into(),
        recipe: ds.meta.recipe.clone(),
        template: e.template.display().to_string(),
        model: enc.source.clone(),
        best_epoch: 0,
        probe_valid_auc: None,
        llm_steps: 0,
        wall_seconds: start.elapsed().as_secs_f64(),
        base_checksum_before: "n/a (nothing trained)".into(),
        base_checksum_after: "n/a (nothing trained)".into(),
        run_dir: dir.display().to_string(),
        layers: Vec::new(),
        kernel_perplexity: Some(ppl),
        adapter_shift: None,
        background: bg.as_ref().map(|b| b.texts.len()),
    };
    write_atomic(
        &dir.join("result.json"),
        serde_json::to_string_pretty(&r)?.as_bytes(),
    )?;
    Ok(r)
}
