//! The sentence-encoder baseline of `embed --method encoder`: a frozen BERT
//! (Devlin et al., "BERT", 2019) — by default all-MiniLM-L6-v2 (Wang et al.,
//! "MiniLM", 2020, trained for sentence similarity by sentence-transformers) —
//! run through candle-transformers' BERT, its last layer's token states
//! mean-pooled over the attention mask. That is what sentence-transformers
//! computes for this model before its final L2 normalisation (which changes
//! only each vector's length); tests/encoder.rs checks both against the
//! reference library's output.
//!
//! Nothing here is trained: the encoder is the zero-training baseline an LLM
//! domain embedding must beat. The run writes the same files as a decoder embed
//! run (token states with their mask and domain-name mask, domain embeddings),
//! so `pipeline pool` and `train` take it as they take the LLM's.

use crate::config::Config;
use crate::fsutil::write_atomic;
use crate::llm::tokenizer::Tok;
use crate::pool::{self, Query, Tokens};
use crate::stages::embed::{EmbedResult, Method, render_prompts_with, save_outputs};
use crate::train::data::Dataset;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

pub struct Encoder {
    pub model: BertModel,
    pub tokenizer: Tok,
    pub cfg: BertConfig,
    pub source: String,
}

/// Load a BERT checkpoint folder: `config.json`, `tokenizer.json` and the
/// safetensors weights (`model.safetensors` or an index's shards).
pub fn load_encoder(dir: &Path, device: &Device) -> Result<Encoder> {
    if !dir.is_dir() {
        bail!(
            "embed.encoder = {:?}: no such folder (a BERT checkpoint folder with config.json, tokenizer.json and safetensors weights; `pipeline data fetch minilm` gets all-MiniLM-L6-v2)",
            dir.display().to_string()
        );
    }
    let cfg_path = dir.join("config.json");
    let cfg: BertConfig = serde_json::from_slice(
        &std::fs::read(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?,
    )
    .with_context(|| format!("{} is not a BERT config", cfg_path.display()))?;
    let mut tokenizer = Tok::from_file(&dir.join("tokenizer.json"))?;
    // The file may pad and truncate to a fixed length; prompts are padded here
    // and a prompt too long is an error, never cut.
    tokenizer.inner.with_padding(None);
    tokenizer
        .inner
        .with_truncation(None)
        .map_err(|e| anyhow::anyhow!("cannot turn truncation off: {e}"))?;
    let mut tensors = HashMap::new();
    let files = crate::llm::load::weight_files(dir)?;
    for f in &files {
        let t = crate::config::load_safetensors(f)?;
        crate::config::check_all_finite(&t, f)?;
        tensors.extend(t);
    }
    let vb = candle_nn::VarBuilder::from_tensors(tensors, DType::F32, device);
    let model = BertModel::load(vb, &cfg).with_context(|| {
        format!(
            "{} does not hold the BERT weights {} describes",
            dir.display(),
            cfg_path.display()
        )
    })?;
    Ok(Encoder {
        model,
        tokenizer,
        cfg,
        source: dir.display().to_string(),
    })
}

impl Encoder {
    /// Last-layer token states (D, T, h) of ids (D, T) with mask (D, T) of 1/0.
    pub fn states(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let types = ids.zeros_like()?;
        Ok(self.model.forward(ids, &types, Some(mask))?)
    }

    /// Mean-pooled embeddings (n, h) of `texts`, special tokens added, as
    /// sentence-transformers computes them before its L2 normalisation.
    pub fn encode(&self, texts: &[&str]) -> Result<Tensor> {
        let dev = &self.model.device;
        let enc: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| Ok(self.tokenizer.encode_offsets(t, true)?.0))
            .collect::<Result<_>>()?;
        let t = enc.iter().map(Vec::len).max().unwrap_or(1);
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for e in &enc {
            for i in 0..t {
                ids.push(e.get(i).copied().unwrap_or(0));
                mask.push(if i < e.len() { 1f32 } else { 0.0 });
            }
        }
        let ids = Tensor::from_vec(ids, (enc.len(), t), dev)?;
        let mask = Tensor::from_vec(mask, (enc.len(), t), dev)?;
        let states = self.states(&ids, &mask)?;
        Ok(pool::query(&states, Tokens::new(&mask, None), Query::Mean)?)
    }
}

/// The `embed` stage for `method = "encoder"`: render the prompts, run the
/// frozen encoder once, write the token states and the mean-pooled domain
/// embeddings.
pub fn embed_encoder(
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
    let catalog = crate::stages::embed::template_catalog(&e.template, prepared)?;
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
    let bg =
        crate::stages::embed::render_background(e, &ds.meta, &enc.tokenizer, true, max, device)?;
    let dir = e
        .runs_dir
        .join(e.run_name(&ds.meta.recipe, &cfg.data.holdout_domains));
    if dir.join("result.json").is_file() {
        bail!(
            "{} already holds a finished embed run: choose another run name",
            dir.display()
        );
    }
    let inputs = crate::stages::embed::inputs(cfg, prepared)?;
    crate::stages::embed::start_run(&dir, cfg, &inputs, ds, &p)?;
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
        crate::stages::embed::save_background(&dir, &st, b)?;
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
