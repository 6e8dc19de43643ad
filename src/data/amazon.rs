//! Amazon Reviews 2018 recipe (`amazon-<cat1>+<cat2>+...`) of `docs/data.md`:
//! per-category 5-core JSON-lines files (`reviewerID`, `asin`, `overall`,
//! `unixReviewTime`), optional `meta_<Category>.json` (`asin`, `title`, `category`,
//! `brand`). Each category file is one domain, numbered in the order given.
//!
//! Every review line is one row, also one that repeats an earlier line's
//! (reviewerID, asin): the 2018 files have such lines. They are counted and named
//! in a warning on stderr.

use super::error::{DataError, DataResult, Place};
use super::split::fnv1a64;
use super::table::{FieldDef, Repeats, StatsSpec, TableBuilder, Value};
use super::text::{Lines, plain_or_gz, utf8};
use anyhow::Result;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const HINT: &str = "download the category's 5-core file (`<Category>_5.json.gz`) and, \
    optionally, its metadata (`meta_<Category>.json.gz`) of Amazon Reviews 2018 \
    (Ni, Li & McAuley, EMNLP 2019) into this folder";

/// The files of one category (one domain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryFiles {
    pub name: String,
    pub reviews: PathBuf,
    pub meta: Option<PathBuf>,
}

/// Find each category's files in `dir`: `<Cat>_5.json[.gz]` and `meta_<Cat>.json[.gz]`.
/// A file present both plain and gzipped is an error (which is the data is ambiguous).
pub fn locate(dir: &Path, categories: &[String]) -> DataResult<Vec<CategoryFiles>> {
    categories
        .iter()
        .map(|c| {
            let reviews = plain_or_gz(&dir.join(format!("{c}_5.json")))?.ok_or_else(|| {
                DataError::Missing {
                    file: dir.join(format!("{c}_5.json.gz")),
                    hint: HINT.to_string(),
                }
            })?;
            let meta = plain_or_gz(&dir.join(format!("meta_{c}.json")))?;
            Ok(CategoryFiles {
                name: c.clone(),
                reviews,
                meta,
            })
        })
        .collect()
}

pub(super) struct ItemMeta {
    pub title: Option<String>,
    pub brand: Option<String>,
    pub sub_category: Option<String>,
}

fn parse_json(file: &Path, n: u64, bytes: &[u8]) -> DataResult<serde_json::Map<String, Json>> {
    let text = utf8(file, n, bytes)?;
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(m)) => Ok(m),
        Ok(_) => Err(DataError::record(
            file,
            Place::Line(n),
            "expected one JSON object per line",
        )),
        Err(e) => Err(DataError::record(
            file,
            Place::Line(n),
            format!("not valid JSON: {e}"),
        )),
    }
}

fn req_str<'a>(
    file: &Path,
    n: u64,
    obj: &'a serde_json::Map<String, Json>,
    field: &str,
) -> DataResult<&'a str> {
    match obj.get(field) {
        Some(Json::String(s)) if !s.is_empty() => Ok(s),
        Some(Json::String(_)) => Err(DataError::field(file, Place::Line(n), field, "empty")),
        Some(other) => Err(DataError::field(
            file,
            Place::Line(n),
            field,
            format!("expected a string, found {other}"),
        )),
        None => Err(DataError::field(file, Place::Line(n), field, "missing")),
    }
}

fn opt_str(
    file: &Path,
    n: u64,
    obj: &serde_json::Map<String, Json>,
    field: &str,
) -> DataResult<Option<String>> {
    match obj.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok((!s.trim().is_empty()).then(|| s.trim().to_string())),
        Some(other) => Err(DataError::field(
            file,
            Place::Line(n),
            field,
            format!("expected a string, found {other}"),
        )),
    }
}

fn read_meta(file: &Path) -> DataResult<HashMap<String, ItemMeta>> {
    let mut out = HashMap::new();
    let mut lines = Lines::open(file, HINT)?;
    while let Some((n, bytes)) = lines.next_line()? {
        let obj = parse_json(file, n, bytes)?;
        let asin = req_str(file, n, &obj, "asin")?.to_string();
        let sub_category = match obj.get("category") {
            None | Some(Json::Null) => None,
            Some(Json::Array(list)) => {
                let mut names = Vec::with_capacity(list.len());
                for v in list {
                    match v {
                        Json::String(s) => names.push(s.trim().to_string()),
                        other => {
                            return Err(DataError::field(
                                file,
                                Place::Line(n),
                                "category",
                                format!("expected a list of strings, found element {other}"),
                            ));
                        }
                    }
                }
                // The first level is the top category; the recipe uses the next one.
                names.get(1).filter(|s| !s.is_empty()).cloned()
            }
            Some(other) => {
                return Err(DataError::field(
                    file,
                    Place::Line(n),
                    "category",
                    format!("expected a list of strings, found {other}"),
                ));
            }
        };
        let m = ItemMeta {
            title: opt_str(file, n, &obj, "title")?,
            brand: opt_str(file, n, &obj, "brand")?,
            sub_category,
        };
        // Duplicate metadata lines exist in the release; the first one is kept.
        out.entry(asin).or_insert(m);
    }
    Ok(out)
}

/// Feature fields of the Amazon recipe.
pub fn fields() -> Vec<FieldDef> {
    vec![
        FieldDef::open("user_id"),
        FieldDef::open("item_id"),
        FieldDef::open("brand"),
        FieldDef::open("sub_category"),
    ]
}

/// One review line of a category file, checked.
pub(super) struct Review<'a> {
    pub user: &'a str,
    pub asin: &'a str,
    pub overall: f64,
    pub time: i64,
    pub line: u64,
}

/// Calls `f` on every review line of `file`, in order; a line without a
/// `reviewerID`, `asin`, `overall` in 1..=5 or integer `unixReviewTime` is an
/// error naming the file, line and field.
pub(super) fn for_each_review(file: &Path, mut f: impl FnMut(Review) -> Result<()>) -> Result<()> {
    let mut lines = Lines::open(file, HINT)?;
    while let Some((n, bytes)) = lines.next_line()? {
        let obj = parse_json(file, n, bytes)?;
        let user = req_str(file, n, &obj, "reviewerID")?;
        let asin = req_str(file, n, &obj, "asin")?;
        let overall = match obj.get("overall") {
            Some(Json::Number(x)) => x.as_f64().unwrap_or(f64::NAN),
            Some(other) => {
                return Err(DataError::field(
                    file,
                    Place::Line(n),
                    "overall",
                    format!("expected a number, found {other}"),
                )
                .into());
            }
            None => {
                return Err(DataError::field(file, Place::Line(n), "overall", "missing").into());
            }
        };
        if !(1.0..=5.0).contains(&overall) {
            return Err(DataError::field(
                file,
                Place::Line(n),
                "overall",
                format!("rating {overall} out of range 1..=5"),
            )
            .into());
        }
        let time = match obj.get("unixReviewTime") {
            Some(Json::Number(x)) if x.as_i64().is_some() => x.as_i64().unwrap_or(0),
            Some(other) => {
                return Err(DataError::field(
                    file,
                    Place::Line(n),
                    "unixReviewTime",
                    format!("expected an integer, found {other}"),
                )
                .into());
            }
            None => {
                return Err(
                    DataError::field(file, Place::Line(n), "unixReviewTime", "missing").into(),
                );
            }
        };
        f(Review {
            user,
            asin,
            overall,
            time,
            line: n,
        })?;
    }
    Ok(())
}

/// A category's item metadata (none without a meta file).
pub(super) fn category_meta(cat: &CategoryFiles) -> Result<HashMap<String, ItemMeta>> {
    Ok(match &cat.meta {
        Some(m) => read_meta(m)?,
        None => HashMap::new(),
    })
}

pub fn load(categories: &[CategoryFiles]) -> Result<(TableBuilder, StatsSpec)> {
    let mut table = TableBuilder::new(fields(), categories.len());
    let mut titles = HashMap::new();
    for (d, cat) in categories.iter().enumerate() {
        let meta = category_meta(cat)?;
        let file = &cat.reviews;
        let mut repeats = Repeats::default();
        for_each_review(file, |r| {
            let m = meta.get(r.asin);
            if let Some(t) = m.and_then(|m| m.title.as_ref()) {
                titles
                    .entry(r.asin.to_string())
                    .or_insert_with(|| t.clone());
            }
            let key = format!("{}:{}", r.user, r.asin);
            // The hash of the key (the split's): a collision could only add a line
            // to the warning below, and saves holding every key's text.
            repeats.see(fnv1a64(key.as_bytes()), Place::Line(r.line));
            table.push(
                &key,
                r.time,
                u8::from(r.overall >= 4.0),
                d as u32,
                &[
                    Value::One(Some(r.user)),
                    Value::One(Some(r.asin)),
                    Value::One(m.and_then(|m| m.brand.as_deref())),
                    Value::One(m.and_then(|m| m.sub_category.as_deref())),
                ],
            )
        })?;
        if let Some(warning) = repeat_warning(file, &repeats) {
            tracing::warn!("{warning}");
        }
    }
    Ok((table, stats_spec(titles)))
}

/// The prompt statistics' spec of both Amazon recipes: their columns start
/// `user_id`, `item_id`, `brand`, then the item's sub-category.
pub(super) fn stats_spec(titles: HashMap<String, String>) -> StatsSpec {
    StatsSpec {
        user_field: Some(0),
        item_field: Some(1),
        category_field: Some(3),
        titles,
    }
}

/// The warning for review lines that repeat an earlier (reviewerID, asin) pair:
/// the 2018 5-core files have such lines, and they are kept (one row per line).
fn repeat_warning<K>(file: &Path, repeats: &Repeats<K>) -> Option<String> {
    if repeats.count == 0 {
        return None;
    }
    let shown: Vec<String> = repeats
        .examples
        .iter()
        .map(|(_, first, again)| format!("{again} (first on {first})"))
        .collect();
    let more = if repeats.count > shown.len() as u64 {
        ", ..."
    } else {
        ""
    };
    Some(format!(
        "warning: {}: {} lines repeat an earlier (reviewerID, asin) pair: {}{more}; \
         kept, one row per review line",
        file.display(),
        repeats.count,
        shown.join(", ")
    ))
}
