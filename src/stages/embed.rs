//! Stage `embed`: domain embeddings from a frozen decoder LLM.
//!
//! One prompt per domain is rendered from a template and run through the frozen
//! LLM with LoRA, P-Tuning v2 or no adapters. The adapters are trained on the CTR
//! task of all domains together: a small probe (field embeddings ⊕ projected
//! domain vector → logit) learns jointly, BCE on the train split, early stopping
//! on valid AUC. The domain vector is the parameterless Gaussian pooling of the
//! domain's token states.
//!
//! Speed: prompts are fixed, so the layers below the lowest adapter run once and
//! are cached; and the probe's gradient with respect to the (domains × h) matrix
//! is accumulated over `batches_per_llm_step` CTR batches before one backward
//! pass through the LLM.

pub use crate::config::embed::{EmbedConfig, LayerChoice, Method, ProbeHead};

use crate::config::{Config, Stage, check_finite, check_reusable, load_safetensors};
use crate::data::meta::{Catalog, Meta};
use crate::fingerprint::Inputs;
use crate::fsutil::{save_tensors_atomic, write_atomic};
use crate::llm::adapters::Adapters;
use crate::llm::load::{Loaded, load, parse_device};
use crate::llm::{peft, prompt};
use crate::models::probe::Probe;
use crate::nn::rng::Rng;
use crate::pool::{self, Query};
use crate::stages::prepare::prepare;
use crate::train::data::Dataset;
use crate::train::optim::{AdamConfig, Moments, OptimizerKind, adam_step};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

/// The prepared dataset with the probe's features (`embed.probe_domain_fields`).
pub(crate) fn probe_dataset(cfg: &Config, dir: &Path) -> Result<Dataset> {
    let f = crate::train::trainer::kept_features(cfg, dir, &[], cfg.embed.probe_domain_fields)
        .context("embed.probe_domain_fields")?;
    Dataset::load(dir, &f, 0)
}

/// Rendered prompts, their ids padded to one length, the mask, and which tokens
/// spell the domain's name.
/// A new embed run's directory with what it was made from: `config.toml`,
/// `inputs.json`, and `prompts.json` (each domain's prompt and token count).
pub(crate) fn start_run(
    dir: &Path,
    cfg: &Config,
    inputs: &crate::fingerprint::Inputs,
    ds: &Dataset,
    p: &Prompts,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomic(&dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    inputs.save(dir)?;
    let prompts_json: Vec<_> = ds
        .meta
        .domains
        .iter()
        .zip(&p.texts)
        .zip(&p.lens)
        .map(|((d, t), n)| serde_json::json!({"domain": d.name, "tokens": n, "prompt": t}))
        .collect();
    write_atomic(
        &dir.join("prompts.json"),
        serde_json::to_string_pretty(&prompts_json)?.as_bytes(),
    )
}

pub struct Prompts {
    pub texts: Vec<String>,
    pub ids: Tensor,
    pub mask: Tensor,
    /// (D, T): 1 on the tokens that overlap the text `{domain}` became.
    pub names: Tensor,
    pub lens: Vec<usize>,
}

impl Prompts {
    pub fn tokens(&self) -> pool::Tokens<'_> {
        pool::Tokens::new(&self.mask, Some(&self.names))
    }
}

/// Placeholders a held-out domain's prompt may use besides the label-free
/// `{catalog_…}` ones: the others are statistics of its train rows, which an
/// unseen domain does not have.
const UNSEEN_PLACEHOLDERS: [&str; 3] = ["dataset", "domain", "category_name"];

/// The catalogue statistics of the prepared dataset in `prepared`, when the
/// template uses them (a `{catalog_…}` placeholder); None otherwise.
pub fn template_catalog(template: &Path, prepared: &Path) -> Result<Option<Catalog>> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read prompt template {}", template.display()))?;
    let uses = prompt::placeholders(&text)
        .iter()
        .any(|k| prompt::CATALOG_PLACEHOLDERS.contains(&k.as_str()));
    if !uses {
        return Ok(None);
    }
    Catalog::read(prepared)
        .with_context(|| format!("prompt template {} uses it", template.display()))
        .map(Some)
}

pub fn render_prompts(
    template: &Path,
    ds_meta: &crate::data::meta::Meta,
    catalog: Option<&Catalog>,
    llm: &Loaded,
    max: usize,
    holdout: &[String],
) -> Result<Prompts> {
    render_prompts_with(
        template,
        ds_meta,
        catalog,
        &llm.tokenizer,
        false,
        max,
        holdout,
        &llm.decoder.device,
    )
}

/// [`render_prompts`] with any tokenizer; `special` adds its special tokens
/// (a BERT encoder's \[CLS\] and \[SEP\]).
#[allow(clippy::too_many_arguments)]
pub fn render_prompts_with(
    template: &Path,
    ds_meta: &crate::data::meta::Meta,
    catalog: Option<&Catalog>,
    tok: &crate::llm::tokenizer::Tok,
    special: bool,
    max: usize,
    holdout: &[String],
    device: &Device,
) -> Result<Prompts> {
    let text = std::fs::read_to_string(template)
        .with_context(|| format!("cannot read prompt template {}", template.display()))?;
    if text.trim().is_empty() {
        bail!(
            "prompt template {} is empty{}: write the prompt there (see prompts/README.md)",
            template.display(),
            if text.is_empty() {
                ""
            } else {
                " (only whitespace)"
            }
        );
    }
    if !holdout.is_empty() {
        for key in prompt::placeholders(&text) {
            if !UNSEEN_PLACEHOLDERS.contains(&key.as_str())
                && !prompt::CATALOG_PLACEHOLDERS.contains(&key.as_str())
            {
                bail!(
                    "{}: {{{key}}} is a statistic of a domain's train rows, which held-out domains ({}) do not have; use a template with only {{dataset}}, {{domain}}, {{category_name}} and the label-free {{catalog_…}} statistics (e.g. prompts/name.txt)",
                    template.display(),
                    holdout.join(", ")
                );
            }
        }
    }
    let mut rendered = Vec::new();
    for (i, d) in ds_meta.domains.iter().enumerate() {
        let c = match catalog {
            Some(c) => Some(c.domains.get(i).filter(|c| c.name == d.name).with_context(
                || {
                    format!(
                        "the catalogue statistics do not match the dataset's domains at {:?} (prepare it again)",
                        d.name
                    )
                },
            )?),
            None => None,
        };
        rendered.push(prompt::render_spans(&text, template, ds_meta, d, c)?);
    }
    tokenize_prompts(rendered, tok, special, max, device, &|i, n| {
        format!(
            "prompt template {}: the prompt of domain {:?} has {n} tokens; embed.max_prompt_tokens = {max} allows 1..={max}",
            template.display(),
            ds_meta.domains[i].name
        )
    })
}

/// Tokenize prompts (text, character spans of the domain name) into right-padded
/// ids, mask and name mask; `too_long(i, tokens)` words the error for a prompt
/// with no token or more than `max`.
fn tokenize_prompts(
    rendered: Vec<(String, Vec<std::ops::Range<usize>>)>,
    tok: &crate::llm::tokenizer::Tok,
    special: bool,
    max: usize,
    device: &Device,
    too_long: &dyn Fn(usize, usize) -> String,
) -> Result<Prompts> {
    let mut texts = Vec::new();
    let mut all = Vec::new();
    let mut in_name = Vec::new();
    for (i, (t, spans)) in rendered.into_iter().enumerate() {
        let (ids, offsets) = tok.encode_offsets(&t, special)?;
        if ids.is_empty() || ids.len() > max {
            bail!("{}", too_long(i, ids.len()));
        }
        texts.push(t);
        in_name.push(prompt::tokens_in_spans(&offsets, &spans));
        all.push(ids);
    }
    let t = all.iter().map(Vec::len).max().unwrap_or(1);
    let lens: Vec<usize> = all.iter().map(Vec::len).collect();
    let mut flat = Vec::with_capacity(all.len() * t);
    let mut mask = Vec::with_capacity(all.len() * t);
    let mut names = Vec::with_capacity(all.len() * t);
    for (ids, nm) in all.iter().zip(&in_name) {
        // Right padding: under the causal mask real tokens never see it.
        for i in 0..t {
            flat.push(ids.get(i).copied().unwrap_or(0));
            mask.push(if i < ids.len() { 1f32 } else { 0.0 });
            names.push(if nm.get(i).copied().unwrap_or(false) {
                1f32
            } else {
                0.0
            });
        }
    }
    let d = all.len();
    Ok(Prompts {
        texts,
        ids: Tensor::from_vec(flat, (d, t), device)?,
        mask: Tensor::from_vec(mask, (d, t), device)?,
        names: Tensor::from_vec(names, (d, t), device)?,
        lens,
    })
}

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

/// An error naming the first domain whose prompt has no name token, for the
/// query `name` (a template without `{domain}`, or a name the tokenizer drops).
pub fn require_names(p: &Prompts, names: &[String], template: &Path) -> Result<()> {
    let n = p.names.sum(1)?.to_vec1::<f32>()?;
    if let Some(i) = n.iter().position(|&c| c == 0.0) {
        bail!(
            "the query `name` pools the domain-name tokens, but the prompt of domain {:?} (template {}) has none: the template needs {{domain}}",
            names.get(i).map_or("?", String::as_str),
            template.display()
        );
    }
    Ok(())
}

/// The names of a background file (`embed.background`): one per line, blank
/// lines and `#` comments skipped; an empty file or a repeated name is an error
/// naming the line.
pub fn background_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read embed.background {}", path.display()))?;
    let mut names: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.split('#').next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        if names.iter().any(|n| n == name) {
            bail!("{}:{}: {name:?} is listed twice", path.display(), i + 1);
        }
        names.push(name.to_string());
    }
    if names.is_empty() {
        bail!(
            "{}: no background names (one per line; `#` starts a comment)",
            path.display()
        );
    }
    Ok(names)
}

/// The background prompts of `embed.background`: every name rendered with the
/// template as a domain without rows, so only the label-free placeholders
/// `{dataset}`, `{domain}` and `{category_name}` have values.
pub(crate) fn render_background(
    e: &EmbedConfig,
    meta: &Meta,
    tok: &crate::llm::tokenizer::Tok,
    special: bool,
    max: usize,
    device: &Device,
) -> Result<Option<Prompts>> {
    let Some(path) = &e.background else {
        return Ok(None);
    };
    let names = background_names(path)?;
    let text = std::fs::read_to_string(&e.template)
        .with_context(|| format!("cannot read prompt template {}", e.template.display()))?;
    if let Some(key) = prompt::placeholders(&text)
        .into_iter()
        .find(|k| !UNSEEN_PLACEHOLDERS.contains(&k.as_str()))
    {
        bail!(
            "embed.background = {}: the template {} uses {{{key}}}, which a background name has no value for; background prompts allow only {{dataset}}, {{domain}} and {{category_name}} (e.g. prompts/name.txt)",
            path.display(),
            e.template.display()
        );
    }
    let mut m = meta.clone();
    m.domains = names
        .into_iter()
        .enumerate()
        .map(|(i, name)| crate::data::meta::DomainMeta {
            id: i as u32,
            name,
            rows: Default::default(),
            train_stats: Default::default(),
        })
        .collect();
    render_prompts_with(&e.template, &m, None, tok, special, max, &[], device)
        .with_context(|| format!("embed.background = {}", path.display()))
        .map(Some)
}

/// Prompts' token states with their mask and domain-name mask (tensors
/// `states`, `mask`, `name_mask`), as `token_states.safetensors` and
/// `background_states.safetensors` hold them.
fn save_token_states(file: &Path, states: &Tensor, p: &Prompts) -> Result<()> {
    let cpu = Device::Cpu;
    let mut out = HashMap::new();
    out.insert("states".to_string(), states.to_device(&cpu)?);
    out.insert("mask".to_string(), p.mask.to_device(&cpu)?);
    out.insert("name_mask".to_string(), p.names.to_device(&cpu)?);
    save_tensors_atomic(&out, file)
}

/// `background_states.safetensors`: the background prompts' token states, mask
/// and domain-name mask.
pub(crate) fn save_background(dir: &Path, states: &Tensor, p: &Prompts) -> Result<()> {
    save_token_states(&dir.join(BACKGROUND_FILE), states, p)
}

/// The embed run's file of background token states.
pub const BACKGROUND_FILE: &str = "background_states.safetensors";

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct EmbedEpoch {
    pub epoch: usize,
    pub probe_train_loss: f64,
    pub probe_valid_auc: Option<f64>,
    pub llm_steps: usize,
    pub seconds: f64,
    /// Episodes: the training domains the probe was not updated on this epoch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub episode_held_out: Vec<String>,
    /// Episodes: the probe's valid AUC on those domains and on the other
    /// training domains (per-domain AUCs weighted by their valid rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out_valid_auc: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_valid_auc: Option<f64>,
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

/// Counters saved with each epoch's checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct EmbedProgress {
    epochs_done: usize,
    llm_steps: usize,
    probe_step: u64,
    best: Option<f64>,
    best_epoch: usize,
    bad: usize,
    history: Vec<EmbedEpoch>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct EmbedResult {
    pub method: String,
    pub recipe: String,
    pub template: String,
    pub model: String,
    pub best_epoch: usize,
    pub probe_valid_auc: Option<f64>,
    pub llm_steps: usize,
    pub wall_seconds: f64,
    pub base_checksum_before: String,
    pub base_checksum_after: String,
    pub run_dir: String,
    /// The hidden states read (averaged when several); empty for the encoder
    /// (its last layer) and for runs made before the setting existed.
    #[serde(default)]
    pub layers: Vec<usize>,
    /// Of the domain embeddings written (see [`pool::kernel_perplexity`]).
    #[serde(default)]
    pub kernel_perplexity: Option<pool::KernelPerplexity>,
    /// With adapters: how far they moved the domain embeddings from the
    /// frozen model's (the same prompts and pooling, no adapters).
    #[serde(default)]
    pub adapter_shift: Option<pool::AdapterShift>,
    /// How many background prompts were embedded (`embed.background`).
    #[serde(default)]
    pub background: Option<usize>,
}

/// The token states, their mask and domain-name mask (`token_states.safetensors`),
/// the domain embeddings (`domain_embeddings.safetensors`) and `domains.json`.
pub(crate) fn save_outputs(
    dir: &Path,
    states: &Tensor,
    p: &Prompts,
    dm: &Tensor,
    names: &[String],
) -> Result<()> {
    let cpu = Device::Cpu;
    save_token_states(&dir.join("token_states.safetensors"), states, p)?;
    let mut de = HashMap::new();
    de.insert("domain_embeddings".to_string(), dm.to_device(&cpu)?);
    save_tensors_atomic(&de, &dir.join("domain_embeddings.safetensors"))?;
    write_atomic(
        &dir.join("domains.json"),
        serde_json::to_string_pretty(&names)?.as_bytes(),
    )
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

/// What an embed run reads: the prepared dataset, the prompt template, the model
/// (the sentence encoder's files for `method = "encoder"`).
pub fn inputs(cfg: &Config, prepared: &Path) -> Result<Inputs> {
    let mut i = Inputs::default()
        .prepared(prepared)?
        .file("prompt template", &cfg.embed.template)?;
    if template_catalog(&cfg.embed.template, prepared)?.is_some() {
        i = i.file("catalogue statistics", &prepared.join(Catalog::FILE))?;
    }
    if let Some(b) = &cfg.embed.background {
        i = i.file("background names", b)?;
    }
    match cfg.embed.method {
        Method::Encoder => i.model(&cfg.embed.encoder),
        _ => i.model(&cfg.embed.model),
    }
}

/// One LLM step's probe work under episodes: probe steps on the rows of the
/// domains not `held` out, then the loss and gradient of the held-out rows
/// through the probe as it now is, without updating it. The gradient w.r.t.
/// the domain matrix is the row-weighted mean of the two.
fn episode_steps(
    probe: &mut Probe,
    split: &crate::train::data::SplitData,
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

/// Run the stage; `resume` continues an interrupted run from its last epoch;
/// `stop_after` stops (resumably) once that many epochs are done.
pub fn embed(cfg: &Config, resume: bool, stop_after: Option<usize>) -> Result<Option<EmbedResult>> {
    let e = &cfg.embed;
    cfg.validate()?;
    let start = Instant::now();
    // The LLM's device; the probe, checkpoints and outputs stay on the CPU.
    let device = parse_device(&e.device).context("embed.device")?;
    let cpu = Device::Cpu;
    let prepared = prepare(cfg, false)?;
    let mut ds = probe_dataset(cfg, &prepared.dir)?;
    ds.hold_out(&cfg.data.holdout_domains)?;
    if e.method == Method::Encoder {
        return crate::llm::encoder::embed_encoder(cfg, &prepared.dir, &ds, &device, start)
            .map(Some);
    }
    let llm = load(&e.model, &device)?;
    let checksum_before = llm.decoder.checksum()?;
    let catalog = template_catalog(&e.template, &prepared.dir)?;
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
    let inputs = inputs(cfg, &prepared.dir)?;
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
    start_run(&dir, cfg, &inputs, &ds, &p)?;

    let base = Rng::new(e.seed);
    let mut rng = base.fork(1);
    let ad = adapter_for(e, &llm, &mut rng)?;
    let h = llm.decoder.cfg.hidden_size;
    let mut probe = Probe::new(&ds, h, e, &mut rng)?;
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
    let mut pr = EmbedProgress::default();
    let mut best_dm: Option<Tensor> = None;
    let mut best_states: Option<Tensor> = None;
    let mut best_bg: Option<Tensor> = None;
    if resume && dir.join("checkpoint.json").is_file() {
        let ck_json = dir.join("checkpoint.json");
        pr = serde_json::from_slice(&std::fs::read(&ck_json)?)
            .with_context(|| format!("{} is not an embed checkpoint", ck_json.display()))?;
        let ck_file = dir.join("checkpoint.safetensors");
        let t = load_safetensors(&ck_file)?;
        // Every tensor named, of the shape this config makes, and finite.
        let get = |k: &str, shape: &[usize]| -> Result<Tensor> {
            let x = t
                .get(k)
                .with_context(|| format!("{} has no tensor `{k}`", ck_file.display()))?;
            if x.dims() != shape {
                bail!(
                    "{}: tensor `{k}` is {:?}, this config needs {shape:?} (was the config changed?)",
                    ck_file.display(),
                    x.dims()
                );
            }
            check_finite(x, &ck_file, k)?;
            Ok(x.to_dtype(DType::F32)?)
        };
        for ((name, v), mo) in ad.vars().iter().zip(moments.iter_mut()) {
            let n = v.elem_count();
            v.set(&get(&format!("adapter/{name}"), v.dims())?.to_device(&device)?)?;
            mo.m = get(&format!("adapter_m/{name}"), &[n])?.to_vec1::<f32>()?;
            mo.v = get(&format!("adapter_v/{name}"), &[n])?.to_vec1::<f32>()?;
        }
        probe
            .load_from(&t)
            .with_context(|| format!("in {}", ck_file.display()))?;
        probe.step = pr.probe_step;
        if t.contains_key("best_domain_embeddings") {
            let d = ds.domain_names.len();
            let dm = get("best_domain_embeddings", &[d, h])?;
            best_states = Some(get("best_states", &[d, p.ids.dim(1)?, h])?);
            best_dm = Some(dm);
            if let Some(b) = &bg {
                best_bg = Some(get(
                    "best_background_states",
                    &[b.texts.len(), b.ids.dim(1)?, h],
                )?);
            }
        }
        tracing::info!("resuming {} after epoch {}", dir.display(), pr.epochs_done);
    }
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
                let grads = (dm * g.to_device(&device)?)?.sum_all()?.backward()?;
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
                    v.set(&Tensor::from_vec(w, v.shape(), &device)?)?;
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
            best_dm = Some(dm);
            best_states = Some(states);
            if let Some(r) = &bg_reader {
                best_bg = Some(
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
        // Checkpoint: adapters and their moments, the probe, the best embeddings.
        let mut ck: HashMap<String, Tensor> = HashMap::new();
        for ((name, v), mo) in ad.vars().iter().zip(&moments) {
            ck.insert(format!("adapter/{name}"), v.as_tensor().to_device(&cpu)?);
            ck.insert(
                format!("adapter_m/{name}"),
                Tensor::from_slice(&mo.m, mo.m.len(), &cpu)?,
            );
            ck.insert(
                format!("adapter_v/{name}"),
                Tensor::from_slice(&mo.v, mo.v.len(), &cpu)?,
            );
        }
        probe.save_into(&mut ck)?;
        if let (Some(d), Some(st)) = (&best_dm, &best_states) {
            ck.insert("best_domain_embeddings".into(), d.clone());
            ck.insert("best_states".into(), st.clone());
        }
        if let Some(b) = &best_bg {
            ck.insert("best_background_states".into(), b.clone());
        }
        save_tensors_atomic(&ck, &dir.join("checkpoint.safetensors"))?;
        write_atomic(
            &dir.join("checkpoint.json"),
            serde_json::to_string_pretty(&pr)?.as_bytes(),
        )?;
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
    let (states, dm) = match (best_states, best_dm) {
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
    if let (Some(b), Some(st)) = (&bg, &best_bg) {
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
