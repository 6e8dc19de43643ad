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

mod new_domain;
mod rows;

pub use new_domain::{described_prompt, prompt_embedding};

use crate::config::Config;
use crate::data::meta::Vocab;
use crate::data::recipe::Recipe;
use crate::fingerprint::Freshness;
use crate::fsutil::{CsvText, write_atomic};
use crate::train::trainer::{Predictions, Trainer, Which};
use anyhow::{Context, Result, bail};
use new_domain::read_embedding;
use rows::read_rows;
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

/// `pipeline predict`.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    /// A finished training run's directory (config.toml, metrics.json,
    /// best.safetensors).
    pub run: PathBuf,
    /// Score this prepared split (default: test unless --input is given).
    #[arg(long, value_enum, conflicts_with = "input")]
    pub split: Option<SplitName>,
    /// Score the rows of this CSV file: a header naming the run's feature fields
    /// (raw values as in the recipe's files, e.g. user_id,item_id,gender,age,...),
    /// `domain` (a domain name; or --domain) and optionally `label` (0/1).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The domain of every input row; a name that is not a domain of the recipe
    /// scores the rows as a new, unseen domain.
    #[arg(long, requires = "input")]
    pub domain: Option<String>,
    /// A new domain's embedding (safetensors, one row as wide as the run's domain
    /// embeddings): how a run on fixed domain embeddings scores a domain it
    /// never saw.
    #[arg(long, requires = "domain")]
    pub domain_embedding: Option<PathBuf>,
    /// A new (or held-out) domain's prompt, the text itself: embedded and pooled
    /// by the embed and pool runs that made the run's domain embeddings (the run
    /// must read a pool run's domain_embeddings.safetensors); with the query
    /// `name`, the tokens of the --domain name in it are the name tokens.
    #[arg(long, requires = "domain", conflicts_with = "domain_embedding")]
    pub domain_prompt: Option<String>,
    /// A new (or held-out) domain's description: the embed run's template is
    /// rendered with the --domain name and this text as {description}, then
    /// embedded as --domain-prompt would be (a template that uses a statistic
    /// of the domain's rows is refused).
    #[arg(long, requires = "domain", conflicts_with_all = ["domain_embedding", "domain_prompt"])]
    pub domain_description: Option<String>,
    /// The tensor of --domain-embedding to read, when the file holds several.
    #[arg(long, requires = "domain_embedding")]
    pub embedding_tensor: Option<String>,
    /// Write the CSV here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Runs `pipeline predict`: scores to stdout or --out, a summary on stderr.
pub fn command(args: &PredictArgs) -> Result<()> {
    let scored = match &args.input {
        Some(input) => predict_input(
            &args.run,
            &InputRequest {
                input,
                domain: args.domain.as_deref(),
                domain_embedding: args
                    .domain_embedding
                    .as_deref()
                    .map(|f| (f, args.embedding_tensor.as_deref())),
                domain_prompt: args.domain_prompt.as_deref(),
                domain_description: args.domain_description.as_deref(),
            },
        )?,
        None => predict_split(&args.run, args.split.unwrap_or(SplitName::Test))?,
    };
    write(&scored, args.out.as_ref())?;
    tracing::info!(
        "scored {} rows with {}{}{}",
        scored.rows.len(),
        args.run.display(),
        scored.auc().map_or(String::new(), |a| format!(
            "; AUC over the labelled rows {a:.4}"
        )),
        args.out
            .as_ref()
            .map_or(String::new(), |p| format!("; wrote {}", p.display()))
    );
    Ok(())
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
