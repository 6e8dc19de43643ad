//! The embed stage's prompts: one per domain rendered from the template (with
//! the catalogue statistics when it asks for them), tokenized and padded; the
//! background prompts; a single prompt's token states for `predict`.

use super::EmbedConfig;
use crate::data::meta::{Catalog, Meta};
use crate::fsutil::save_tensors_atomic;
use crate::llm::load::Loaded;
use crate::llm::prompt;
use crate::pool;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Rendered prompts, their ids padded to one length, the mask, and which tokens
/// spell the domain's name.
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
pub(super) fn tokenize_prompts(
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
pub(super) fn save_token_states(file: &Path, states: &Tensor, p: &Prompts) -> Result<()> {
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
