//! A domain the run never saw (or held out): its embedding from a file, or from
//! a prompt or a description through the embed and pool runs that made the
//! run's domain embeddings.

use crate::config::Config;
use crate::data::meta::Meta;
use crate::data::recipe::Recipe;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The placeholders a template may use for a domain known only by its name
/// and a description.
const DESCRIBED_PLACEHOLDERS: [&str; 4] = ["dataset", "domain", "category_name", "description"];

/// The prompt the embed run behind the run's domain embeddings would write for
/// a domain named `name` with `description`: its template, rendered as `embed`
/// renders it. A template that uses a statistic of the domain's rows (or
/// catalogue) is refused, naming the placeholder: a new domain has none.
pub fn described_prompt(
    run_cfg: &Config,
    meta: &Meta,
    name: &str,
    description: &str,
) -> Result<String> {
    let file = run_cfg.model.domain_embeddings.as_ref().context(
        "the run has no domain embeddings (model.domain_embeddings): a description has nothing to be embedded like",
    )?;
    let pool_dir = file.parent().unwrap_or(Path::new("."));
    let (_, embed_dir) = pool_run(pool_dir, file)?;
    let embed_cfg = Config::load(Some(&embed_dir.join("config.toml")))?;
    let template = &embed_cfg.embed.template;
    let text = std::fs::read_to_string(template).with_context(|| {
        format!(
            "cannot read the embed run's template {}",
            template.display()
        )
    })?;
    if let Some(key) = crate::llm::prompt::placeholders(&text)
        .into_iter()
        .find(|k| !DESCRIBED_PLACEHOLDERS.contains(&k.as_str()))
    {
        bail!(
            "the embed run's template {} uses {{{key}}}, which a domain known only by its name and \
             description does not have (allowed: {}): write the whole prompt and pass it with \
             --domain-prompt",
            template.display(),
            DESCRIBED_PLACEHOLDERS
                .map(|k| format!("{{{k}}}"))
                .join(", ")
        );
    }
    let d = crate::data::meta::DomainMeta {
        id: u32::try_from(meta.domains.len()).unwrap_or(u32::MAX),
        name: name.to_string(),
        rows: Default::default(),
        train_stats: Default::default(),
    };
    let c = crate::data::meta::CatalogDomain {
        name: name.to_string(),
        users: None,
        female_pct: None,
        age: None,
        items: None,
        year: None,
        titles: Vec::new(),
        description: Some(description.to_string()),
        rows: None,
        shares: Vec::new(),
    };
    Ok(crate::llm::prompt::render_spans(&text, template, meta, &d, Some(&c))?.0)
}

/// The embedding that the run's domain embeddings would give a domain named
/// `name` with `prompt`: the run must read the output of a pool run
/// (`model.domain_embeddings` = `<pool run>/domain_embeddings.safetensors`). The
/// prompt goes through that pool run's embed run
/// ([`crate::stages::embed::prompt_states`]: its LLM and adapters, or its
/// encoder, and the layers it read) and is pooled with the pool run's fitted
/// parameters ([`crate::stages::pool::apply`]: normalisation, query, kernel
/// weights): the functions that made the run's domain vectors.
pub fn prompt_embedding(run_cfg: &Config, name: &str, prompt: &str) -> Result<Vec<f32>> {
    let file = run_cfg.model.domain_embeddings.as_ref().context(
        "the run has no domain embeddings (model.domain_embeddings): a prompt has nothing to be embedded like",
    )?;
    let pool_dir = file.parent().unwrap_or(Path::new("."));
    let (pool_cfg, embed_dir) = pool_run(pool_dir, file)?;
    let (p, states) = crate::stages::embed::prompt_states(&embed_dir, prompt, name)?;
    if pool_cfg.pool.query == crate::pool::Query::Name
        && p.names.sum_all()?.to_scalar::<f32>()? == 0.0
    {
        bail!(
            "the pool run {} pools the domain-name tokens (pool.query = \"name\"), but the prompt does not contain the domain's name {name:?}",
            pool_dir.display()
        );
    }
    let params_path = pool_dir.join("pool_params.safetensors");
    let params = crate::tensor_io::load_safetensors(&params_path)?;
    let v = crate::stages::pool::apply(&pool_cfg.pool, &params, &states, p.tokens())
        .with_context(|| format!("pooling with {}", params_path.display()))?;
    Ok(v.flatten_all()?.to_vec1::<f32>()?)
}

/// A pool run's settings and the embed run it pooled.
fn pool_run(pool_dir: &Path, file: &Path) -> Result<(Config, PathBuf)> {
    let pool_cfg_path = pool_dir.join("config.toml");
    if !pool_cfg_path.is_file() || !pool_dir.join("pool_params.safetensors").is_file() {
        bail!(
            "the run's domain embeddings {} are not a pool run's output (no config.toml and \
             pool_params.safetensors beside them): embed the prompt elsewhere and pass it with \
             --domain-embedding",
            file.display()
        );
    }
    let pool_cfg = Config::load(Some(&pool_cfg_path))?;
    let recipe: Recipe = pool_cfg
        .data
        .recipe
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let embed_dir = pool_cfg.pool.source(&pool_cfg, &recipe.to_string());
    Ok((pool_cfg, embed_dir))
}

/// The domain embedding in `file`: its only tensor or `tensor`, (h) or (1, h).
pub(super) fn read_embedding(file: &Path, tensor: Option<&str>) -> Result<Vec<f32>> {
    let all = crate::tensor_io::load_safetensors(file)?;
    let t = match tensor {
        Some(n) => all
            .get(n)
            .with_context(|| format!("{} has no tensor `{n}`", file.display()))?,
        None if all.len() == 1 => all.values().next().context("no tensor")?,
        None => {
            let mut names: Vec<&String> = all.keys().collect();
            names.sort();
            bail!(
                "{} holds {} tensors ({}): choose one with --embedding-tensor",
                file.display(),
                names.len(),
                names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let t = t.to_dtype(candle_core::DType::F32)?;
    match *t.dims() {
        [_] => Ok(t.to_vec1()?),
        [1, _] => Ok(t.squeeze(0)?.to_vec1()?),
        _ => bail!(
            "{}: the domain embedding is {:?}; expected one row, (h) or (1, h)",
            file.display(),
            t.dims()
        ),
    }
}
