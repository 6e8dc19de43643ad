//! Stage `predict`: per-row scores of a finished training run, as CSV
//! (`row,domain,label,score`).
//!
//! - a split of the prepared dataset (`test`, `valid`): the run's model at its
//!   best valid epoch scores it exactly as training scored test (held-out
//!   domains included), so the AUC of the test scores is the run's test AUC;
//! - new raw rows (`--input FILE.csv`): a header naming the run's feature fields
//!   (raw values, as in the recipe's input files), a `domain` column with a
//!   domain name (or `--domain NAME` for every row) and an optional `label`
//!   (0/1). Raw values are mapped with the prepared dataset's vocabularies
//!   (`vocab.json`, and `meta.json` for closed fields); a value not seen in
//!   training, or an empty one, becomes id 0 as it did in training.
//! - a domain the run never saw (`--domain NAME` not among the recipe's
//!   domains): scored as a held-out domain, from its embedding when the run
//!   reads fixed domain embeddings — given as a file (`--domain-embedding`, one
//!   row of the run's domain-embedding width) or computed from its prompt
//!   (`--domain-prompt`) by the embed and pool functions that made the run's
//!   domain embeddings ([`prompt_embedding`]) — or as any held-out domain when
//!   the run takes no domain input. A domain the run held out takes a new
//!   embedding the same way.

use crate::config::Config;
use crate::data::dataset::SplitData;
use crate::data::error::{DataError, Place};
use crate::data::meta::{Meta, Vocab};
use crate::data::movielens::{self, Version};
use crate::data::recipe::Recipe;
use crate::data::tabular::TableRecord;
use crate::data::tabular::{csv_error, csv_reader};
use crate::data::text::parse_u64;
use crate::fingerprint::Freshness;
use crate::fsutil::{CsvText, write_atomic};
use crate::train::trainer::{Predictions, Trainer, Which};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A prepared split to score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitName {
    Test,
    Valid,
}

/// Per-row scores, in row order.
pub struct Scored {
    /// The row's index in its split (or, for `--input`, among the input's data
    /// rows), from 0.
    pub rows: Vec<usize>,
    pub domains: Vec<String>,
    pub labels: Vec<Option<f32>>,
    pub scores: Vec<f32>,
}

impl Scored {
    fn from_predictions(p: Predictions, names: &[String], labelled: Option<&[bool]>) -> Scored {
        let mut order: Vec<usize> = (0..p.rows.len()).collect();
        order.sort_by_key(|&i| p.rows[i]);
        Scored {
            rows: order.iter().map(|&i| p.rows[i]).collect(),
            domains: order
                .iter()
                .map(|&i| names[p.domains[i] as usize].clone())
                .collect(),
            labels: order
                .iter()
                .map(|&i| labelled.is_none_or(|l| l[p.rows[i]]).then_some(p.labels[i]))
                .collect(),
            scores: order.iter().map(|&i| p.probs[i]).collect(),
        }
    }

    /// `row,domain,label,score`; an unknown label is empty. Scores are written
    /// in full (shortest round-trip form), so metrics recomputed from the file
    /// are the run's.
    pub fn to_csv(&self) -> Result<String> {
        let mut csv = CsvText::new(["row", "domain", "label", "score"])?;
        for i in 0..self.rows.len() {
            csv.row([
                self.rows[i].to_string(),
                self.domains[i].clone(),
                self.labels[i].map_or(String::new(), |y| format!("{}", y as u8)),
                self.scores[i].to_string(),
            ])?;
        }
        csv.into_string()
    }

    /// AUC over the rows with a label (None without both classes).
    pub fn auc(&self) -> Option<f64> {
        let (p, y): (Vec<f32>, Vec<f32>) = self
            .scores
            .iter()
            .zip(&self.labels)
            .filter_map(|(&p, l)| Some((p, (*l)?)))
            .unzip();
        crate::metrics::auc(&p, &y)
    }
}

/// A finished training run, loaded at its best valid epoch, with the prepared
/// dataset it was trained on.
pub fn load_run(run: &Path) -> Result<Trainer> {
    let cfg_path = run.join("config.toml");
    if !run.join("metrics.json").is_file() || !cfg_path.is_file() {
        bail!(
            "{} is not a finished training run (it needs config.toml, metrics.json and best.safetensors): \
             `pipeline predict` scores runs of train, train-cgc and run",
            run.display()
        );
    }
    let cfg = Config::load(Some(&cfg_path))
        .with_context(|| format!("reading the run's settings {}", cfg_path.display()))?;
    let recipe: Recipe = cfg
        .data
        .recipe
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let prepared = cfg.data.prepared_dir.join(recipe.to_string());
    if !prepared.join("meta.json").is_file() {
        bail!(
            "{}: the prepared dataset the run was trained on is not there (data.prepared_dir of {}); \
             prepare it with `pipeline data prepare -c {}`",
            prepared.display(),
            cfg_path.display(),
            cfg_path.display()
        );
    }
    if let Freshness::Changed(what) =
        crate::train::trainer::inputs(&cfg, &prepared)?.compare(run)?
    {
        bail!(
            "{} was trained on other inputs than those there now: {}",
            run.display(),
            what.join("; ")
        );
    }
    let mut t = Trainer::new(&cfg, &prepared)?;
    t.run_dir = run.to_path_buf();
    t.load_best()?;
    Ok(t)
}

/// Score a prepared split with a finished run.
pub fn predict_split(run: &Path, split: SplitName) -> Result<Scored> {
    let mut t = load_run(run)?;
    let which = match split {
        SplitName::Test => Which::Test,
        SplitName::Valid => Which::Valid,
    };
    let p = t.predict(which)?;
    Ok(Scored::from_predictions(p, &t.ds.domain_names, None))
}

/// What `--input` scores.
pub struct InputRequest<'a> {
    pub input: &'a Path,
    /// Every row's domain, instead of a `domain` column.
    pub domain: Option<&'a str>,
    /// A new domain's embedding: the file and, if it holds several, the tensor.
    pub domain_embedding: Option<(&'a Path, Option<&'a str>)>,
    /// A new domain's prompt, embedded as the run's domain embeddings were.
    pub domain_prompt: Option<&'a str>,
    /// A new domain's description: the embed run's template rendered with the
    /// domain's name and this text ([`described_prompt`]), then as a prompt.
    pub domain_description: Option<&'a str>,
}

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

/// Score new raw rows with a finished run.
pub fn predict_input(run: &Path, req: &InputRequest) -> Result<Scored> {
    let mut t = load_run(run)?;
    let given = [
        req.domain_embedding.is_some(),
        req.domain_prompt.is_some(),
        req.domain_description.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        bail!("give the new domain one of an embedding, a prompt or a description");
    }
    let named = || {
        req.domain.context(
            "--domain-prompt and --domain-description describe a domain: name it with --domain \
             NAME (a new name, or a domain the run held out)",
        )
    };
    let emb = match (
        req.domain_embedding,
        req.domain_prompt,
        req.domain_description,
    ) {
        (Some((file, tensor)), _, _) => Some(read_embedding(file, tensor)?),
        (_, Some(prompt), _) => Some(prompt_embedding(&t.cfg, named()?, prompt)?),
        (_, _, Some(description)) => {
            let name = named()?;
            let prompt = described_prompt(&t.cfg, &t.ds.meta, name, description)?;
            tracing::info!("prompt of {name:?}: {prompt}");
            Some(prompt_embedding(&t.cfg, name, &prompt)?)
        }
        _ => None,
    };
    match req.domain {
        Some(name) if !t.ds.domain_names.iter().any(|d| d == name) => {
            t.add_unseen_domain(name, emb.as_deref()).with_context(|| {
                format!(
                    "{name:?} is not a domain of {} (its domains: {})",
                    t.ds.meta.recipe,
                    t.ds.meta
                        .domains
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        }
        // A held-out domain described anew.
        Some(name) if emb.is_some() => {
            t.set_held_out_embedding(name, emb.as_deref().unwrap_or_default())?;
        }
        None if emb.is_some() => bail!(
            "--domain-embedding and --domain-prompt describe a domain: name it with --domain \
             NAME (a new name, or a domain {} held out)",
            t.ds.meta.recipe
        ),
        _ => {}
    }
    let vocab = Vocab::read(&t.ds.dir)?;
    let table = if t.ds.meta.recipe.starts_with("table-") {
        Some(crate::data::tabular::TableRecord::read(&t.ds.dir)?)
    } else {
        None
    };
    let (split, labelled) = read_rows(
        req.input,
        &t.ds.meta,
        &vocab,
        table.as_ref(),
        &t.ds.features,
        &t.ds.domain_names,
        req.domain,
    )?;
    let p = t.predict_split(split)?;
    Ok(Scored::from_predictions(
        p,
        &t.ds.domain_names,
        Some(&labelled),
    ))
}

/// The domain embedding in `file`: its only tensor or `tensor`, (h) or (1, h).
fn read_embedding(file: &Path, tensor: Option<&str>) -> Result<Vec<f32>> {
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

/// How a raw value of a field becomes the string the recipe interned.
#[derive(Clone, Copy)]
enum Raw {
    /// As it is (trimmed).
    Text,
    /// A non-negative integer, written canonically (MovieLens user and item ids).
    Uint,
    /// A MovieLens-100k age in years, bucketed as the recipe does.
    Age100k,
    /// A user's table: a number cut at the prepared edges (after ln(1 + x)).
    Bucket { log1p: bool },
    /// A user's table: the text after the last `sep`.
    LastPart,
}

fn raw_rule(recipe: &Recipe, table: Option<&TableRecord>, field: &str) -> Raw {
    if let Some(spec) = table.and_then(|t| t.schema.columns.0.iter().find(|(n, _)| n == field)) {
        use crate::data::schema::ColumnType;
        return match spec.1.kind {
            ColumnType::Numeric => Raw::Bucket {
                log1p: spec.1.log1p,
            },
            ColumnType::Categorical if spec.1.last_part.is_some() => Raw::LastPart,
            _ => Raw::Text,
        };
    }
    match (recipe, field) {
        (Recipe::MovieLens { .. }, "user_id" | "item_id") => Raw::Uint,
        (
            Recipe::MovieLens {
                version: Version::K100,
                ..
            },
            "age",
        ) => Raw::Age100k,
        _ => Raw::Text,
    }
}

/// Read `file` (CSV with a header) into a split of ids, as the run's dataset
/// holds them. Returns the split and, per row, whether it has a label.
fn read_rows(
    file: &Path,
    meta: &Meta,
    vocab: &Vocab,
    table: Option<&TableRecord>,
    features: &[String],
    domain_names: &[String],
    domain: Option<&str>,
) -> Result<(SplitData, Vec<bool>)> {
    let recipe: Recipe = meta
        .recipe
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let need = format!(
        "the run needs a column per feature ({}){}, and may have `label` (0/1)",
        features.join(", "),
        if domain.is_some() {
            ""
        } else {
            " and `domain` (a domain name)"
        }
    );
    let mut reader = csv_reader(file, b',', "pass a CSV file of rows to score")?;
    let cols: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(file, e))?
        .iter()
        .map(|c| c.trim_start_matches('\u{feff}').to_string())
        .collect();
    if cols.iter().all(String::is_empty) {
        return Err(DataError::record(file, Place::File, "empty file").into());
    }
    let mut seen = HashMap::new();
    for (i, c) in cols.iter().enumerate() {
        if c.is_empty() {
            return Err(DataError::record(
                file,
                Place::Line(1),
                format!("header column {} has no name; {need}", i + 1),
            )
            .into());
        }
        if seen.insert(c.as_str(), i).is_some() {
            return Err(
                DataError::field(file, Place::Line(1), c, "named twice in the header").into(),
            );
        }
    }
    let col = |name: &str| -> Result<usize> {
        seen.get(name).copied().ok_or_else(|| {
            DataError::field(
                file,
                Place::Line(1),
                name,
                format!("no such column in the header ({}); {need}", cols.join(",")),
            )
            .into()
        })
    };
    // A table's field may be named by its source column (`from`) in raw rows.
    let source = |f: &str| -> Option<String> {
        let (n, c) = table?.schema.columns.0.iter().find(|(n, _)| n == f)?;
        Some(c.source(n).to_string())
    };
    let feature_cols: Vec<usize> = features
        .iter()
        .map(|f| match source(f) {
            Some(src) if !seen.contains_key(f.as_str()) && seen.contains_key(src.as_str()) => {
                col(&src)
            }
            _ => col(f),
        })
        .collect::<Result<_>>()?;
    let domain_col = match domain {
        None => Some(col("domain")?),
        Some(_) if seen.contains_key("domain") => {
            return Err(DataError::field(
                file,
                Place::Line(1),
                "domain",
                "the file has a domain column and --domain names one for every row: keep one",
            )
            .into());
        }
        Some(_) => None,
    };
    let label_col = seen.get("label").copied();
    // Per feature: raw value → id.
    let lookups: Vec<HashMap<&str, u32>> = features
        .iter()
        .map(|f| {
            let fm = meta.fields.iter().find(|m| &m.name == f);
            let values = fm
                .and_then(|m| m.values.as_ref())
                .or_else(|| vocab.fields.get(f));
            values
                .map(|v| {
                    v.iter()
                        .enumerate()
                        .map(|(i, s)| (s.as_str(), i as u32 + 1))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    if let Some(f) = features.iter().find(|f| {
        !vocab.fields.contains_key(*f)
            && !meta
                .fields
                .iter()
                .any(|m| &m.name == *f && m.values.is_some())
    }) {
        bail!(
            "the prepared dataset of {} keeps no vocabulary of field `{f}`",
            meta.recipe
        );
    }
    let fixed_domain = domain.map(|d| domain_names.iter().position(|n| n == d));
    let mut s = SplitData {
        cols: vec![Vec::new(); features.len()],
        ..Default::default()
    };
    let mut labelled = Vec::new();
    let mut f = csv::StringRecord::new();
    while reader.read_record(&mut f).map_err(|e| csv_error(file, e))? {
        let ln = f.position().map_or(0, |p| p.line());
        for (k, (&c, name)) in feature_cols.iter().zip(features).enumerate() {
            let v = f[c].trim();
            let id = if v.is_empty() {
                0
            } else {
                let key = match raw_rule(&recipe, table, name) {
                    Raw::Text => v.to_string(),
                    Raw::LastPart => {
                        let sep = table
                            .and_then(|t| t.schema.columns.0.iter().find(|(n, _)| n == name))
                            .and_then(|(_, c)| c.last_part.clone())
                            .unwrap_or_default();
                        match v.rfind(sep.as_str()) {
                            Some(i) if !sep.is_empty() => v[i + sep.len()..].to_string(),
                            _ => v.to_string(),
                        }
                    }
                    Raw::Bucket { log1p } => {
                        let x = crate::data::tabular::number(file, &Place::Line(ln), name, v, "")?;
                        let x = if log1p { x.ln_1p() } else { x };
                        let edges = table
                            .and_then(|t| t.edges.get(name))
                            .map_or(&[][..], Vec::as_slice);
                        let labels = meta
                            .fields
                            .iter()
                            .find(|m| &m.name == name)
                            .and_then(|m| m.values.as_ref());
                        match labels {
                            Some(l) if !edges.is_empty() => {
                                l[crate::data::tabular::bucket(edges, x)].clone()
                            }
                            Some(l) => l.first().cloned().unwrap_or_default(),
                            None => v.to_string(),
                        }
                    }
                    Raw::Uint => parse_u64(file, ln, name, v)?.to_string(),
                    Raw::Age100k => {
                        movielens::age_bucket(parse_u64(file, ln, name, v)?).to_string()
                    }
                };
                lookups[k].get(key.as_str()).copied().unwrap_or(0)
            };
            s.cols[k].push(id);
        }
        let d = match (domain_col, fixed_domain) {
            (Some(c), _) => {
                let v = f[c].trim();
                domain_names.iter().position(|n| n == v).ok_or_else(|| {
                    DataError::field(
                        file,
                        Place::Line(ln),
                        "domain",
                        format!(
                            "{v:?} is not a domain of {} ({}); score a new domain with --domain NAME",
                            meta.recipe,
                            domain_names.join(", ")
                        ),
                    )
                })?
            }
            (None, Some(Some(i))) => i,
            _ => bail!("internal: the --domain of every row is not a domain of the run"),
        };
        s.domains.push(d as u32);
        let y = match label_col.map(|c| f[c].trim()) {
            None | Some("") => None,
            Some("0") => Some(0.0),
            Some("1") => Some(1.0),
            Some(v) => {
                return Err(DataError::field(
                    file,
                    Place::Line(ln),
                    "label",
                    format!("expected 0, 1 or empty, found {v:?}"),
                )
                .into());
            }
        };
        labelled.push(y.is_some());
        s.labels.push(y.unwrap_or(0.0));
    }
    s.n = s.labels.len();
    if s.n == 0 {
        return Err(DataError::record(file, Place::File, "a header but no rows to score").into());
    }
    Ok((s, labelled))
}

/// Write `scored` to `out` (atomically), or to stdout without one.
pub fn write(scored: &Scored, out: Option<&PathBuf>) -> Result<()> {
    let csv = scored.to_csv()?;
    match out {
        Some(p) => write_atomic(p, csv.as_bytes()),
        None => {
            use std::io::Write;
            std::io::stdout().lock().write_all(csv.as_bytes())?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_csv_quotes_a_domain_name_and_reads_back() {
        let s = Scored {
            rows: vec![0, 1],
            domains: vec!["a, \"b\"".into(), "plain".into()],
            labels: vec![Some(1.0), None],
            scores: vec![0.25, 0.123_456_79],
        };
        let text = s.to_csv().unwrap();
        assert_eq!(
            text,
            "row,domain,label,score\n0,\"a, \"\"b\"\"\",1,0.25\n1,plain,,0.12345679\n"
        );
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let back: Vec<Vec<String>> = r
            .records()
            .map(|x| x.unwrap().iter().map(str::to_string).collect())
            .collect();
        assert_eq!(back[0], ["0", "a, \"b\"", "1", "0.25"]);
        assert_eq!(back[1][1], "plain");
    }
}
