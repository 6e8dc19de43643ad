//! New raw rows (`--input FILE.csv`) read into a split of ids, as the run's
//! prepared dataset holds them.

use crate::data::dataset::SplitData;
use crate::data::error::{DataError, Place};
use crate::data::meta::{Meta, Vocab};
use crate::data::movielens::{self, Version};
use crate::data::recipe::Recipe;
use crate::data::tabular::TableRecord;
use crate::data::tabular::{csv_error, csv_reader};
use crate::data::text::parse_u64;
use anyhow::{Result, bail};
use std::collections::HashMap;
use std::path::Path;

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
pub(super) fn read_rows(
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
