//! `[data.table]`: the schema of a user's own table, read by the `table-<name>`
//! recipe (docs/data.md, "Your own table"). Every key is optional unless said;
//! an unknown key is an error naming it.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableSchema {
    /// One input file, split by `split`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Pre-split inputs (all three, instead of `file`); `split.by = "files"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<PathBuf>,
    /// `csv`, `tsv` or `parquet`; default from the file name (`.csv[.gz]`,
    /// `.tsv[.gz]`/`.txt[.gz]`, `.parquet[.*]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Field separator of a text file, one character; default `,` (csv) or tab (tsv).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// Cell values that mean "missing" (id 0). Default `[""]`.
    #[serde(default = "default_missing")]
    pub missing: Vec<String>,
    /// Side tables joined on a key column (users, items).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub join: Vec<JoinSpec>,
    pub label: LabelSpec,
    pub domain: DomainSpec,
    #[serde(default)]
    pub split: SplitSpec,
    /// Text per domain for `{description}`: a `domain,description` CSV file, or
    /// an inline table `{ "name" = "text" }`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptions: Option<Descriptions>,
    /// A categorical column whose value shares per domain (train rows, no
    /// labels) fill `{catalog_shares}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_column: Option<String>,
    /// A categorical or multi-valued field whose values are the items'
    /// categories: each domain's most liked ones (train) fill `{top_categories}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category_field: Option<String>,
    /// A side-table column with each item's title (`{example_titles}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_column: Option<String>,
    /// Read the table twice, row by row, in bounded memory, writing shards of
    /// `data.shard_rows` rows (default 262,144): for tables larger than memory.
    /// Rows keep file order and ids follow first appearance in file order (the
    /// in-memory rules order rows by time and key hash; docs/data.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    /// The feature fields, in this order: field name → column spec.
    pub columns: Columns,
}

fn default_missing() -> Vec<String> {
    vec![String::new()]
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Tsv,
    Parquet,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    pub file: PathBuf,
    /// The column both tables have; each value at most once in the side table.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
}

/// The label rule: exactly one of (none: the column holds 0/1), `threshold`
/// (a number ≥ it is 1) or `positive` (these values are 1; with `negative`,
/// any other value is an error, without it they are 0).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    pub column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positive: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negative: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    /// The column whose (mapped) values are the domains.
    pub column: String,
    /// Value → domain name; values not listed are their own domain.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub map: BTreeMap<String, String>,
    /// Rows whose value is one of these are left out (counted in the log).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Domains with fewer train rows are merged into `other`. Default 0: none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_rows: u64,
    /// The domains in id order. Default: sorted by name (`other` last). A domain
    /// listed here may lack train rows (a domain only valid/test have);
    /// one not listed that train lacks is an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// The domain-defining fields (dropped under `model.domain_fields = "drop"`).
    /// Default: the fields read from `column`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// `key` (FNV-1a of the key columns' values joined by `:`; no key columns:
    /// the 0-based row number), `time` (cuts on the timestamp column) or
    /// `files` (train/valid/test given). Default: `files` when they are given,
    /// else `key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<SplitBy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// `by = "time"`: rows at or after `valid` (and before `test`) are valid,
    /// at or after `test` are test (timestamps as the column gives them: seconds,
    /// or dates `YYYY-MM-DD`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid: Option<toml::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<toml::Value>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SplitBy {
    Key,
    Time,
    Files,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Descriptions {
    File(PathBuf),
    Inline(BTreeMap<String, String>),
}

/// What a column becomes.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    /// One id per value (fitted on train; rarer than `min_count` → id 0).
    #[default]
    Categorical,
    /// A number cut into buckets (quantiles of train, or fixed `edges`).
    Numeric,
    /// Several values in one cell, split on `sep` (a bag of ids).
    Multi,
    /// 0/1 columns (`columns`), one per value: a bag of the set ones, or with
    /// `first = true` the first set one as a categorical.
    Flags,
    /// The row's time: orders rows, cuts `split.by = "time"`; not a feature.
    Timestamp,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    #[serde(default, rename = "type")]
    pub kind: ColumnType,
    /// The source column; default the field's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Categorical, multi: values seen fewer times in train get id 0. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u32>,
    /// Categorical, multi: a fixed value list (id = position + 1); any other
    /// value is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Categorical: keep the part after the last occurrence of this text
    /// (`"-"` turns `01-Jan-1995` into `1995`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_part: Option<String>,
    /// Numeric: number of quantile buckets fitted on train. Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<usize>,
    /// Numeric: fixed, increasing bucket edges (bucket i: edges[i-1] ≤ x < edges[i]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<Vec<f64>>,
    /// Numeric: take ln(1 + x) before bucketing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub log1p: bool,
    /// Multi: the separator inside a cell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sep: Option<String>,
    /// Flags: the 0/1 columns, in value order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Flags: the first set column as one categorical value.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub first: bool,
}

impl ColumnSpec {
    pub fn source<'a>(&'a self, field: &'a str) -> &'a str {
        self.from.as_deref().unwrap_or(field)
    }
}

/// `[data.table.columns]`: field name → spec (`"categorical"` or a table), in
/// the order written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Columns(pub Vec<(String, ColumnSpec)>);

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Columns;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a table of field = \"categorical\" | \"numeric\" | \"multi\" | \"flags\" | \
                     \"timestamp\" | { type = …, … }",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Columns, A::Error> {
                let mut out: Vec<(String, ColumnSpec)> = Vec::new();
                while let Some(name) = m.next_key::<String>()? {
                    let entry: toml::Value = m.next_value()?;
                    let spec = match entry {
                        toml::Value::String(_) => {
                            let k: ColumnType = entry.try_into().map_err(|e| {
                                serde::de::Error::custom(format!("columns.{name}: {e}"))
                            })?;
                            ColumnSpec {
                                kind: k,
                                ..Default::default()
                            }
                        }
                        other => ColumnSpec::deserialize(other).map_err(|e| {
                            serde::de::Error::custom(format!("columns.{name}: {e}"))
                        })?,
                    };
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(serde::de::Error::custom(format!(
                            "columns.{name} is given twice"
                        )));
                    }
                    out.push((name, spec));
                }
                Ok(Columns(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for Columns {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (name, spec) in &self.0 {
            m.serialize_entry(name, spec)?;
        }
        m.end()
    }
}

impl TableSchema {
    /// Settings that cannot work, each as `(key, problem)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        macro_rules! bad {
            ($k:expr, $m:expr $(,)?) => {
                p.push((format!("data.table.{}", $k), $m))
            };
        }
        let split_files = [&self.train, &self.valid, &self.test];
        let n_split = split_files.iter().filter(|f| f.is_some()).count();
        match (self.file.is_some(), n_split) {
            (true, 0) | (false, 3) => {}
            (true, _) => bad!(
                "file",
                "give either `file` or all of `train`, `valid`, `test`, not both".into(),
            ),
            (false, 0) => bad!(
                "file",
                "no input: give `file`, or `train`, `valid` and `test`".into(),
            ),
            (false, _) => bad!(
                "train",
                "pre-split inputs need all three of `train`, `valid`, `test`".into(),
            ),
        }
        if let Some(d) = &self.delimiter
            && d.chars().count() != 1
        {
            bad!("delimiter", format!("{d:?} must be one character"));
        }
        let by = self.split_by();
        if by == SplitBy::Files && n_split != 3 {
            bad!(
                "split.by",
                "\"files\" needs `train`, `valid` and `test` files".into(),
            );
        }
        if by != SplitBy::Files && n_split == 3 {
            bad!(
                "split.by",
                "pre-split files are split by their files: leave split.by out or set \"files\""
                    .into(),
            );
        }
        let timestamps: Vec<&str> = self
            .columns
            .0
            .iter()
            .filter(|(_, c)| c.kind == ColumnType::Timestamp)
            .map(|(n, _)| n.as_str())
            .collect();
        if timestamps.len() > 1 {
            bad!(
                "columns",
                format!(
                    "one timestamp column at most, found {}",
                    timestamps.join(", ")
                ),
            );
        }
        if by == SplitBy::Time {
            if timestamps.is_empty() {
                bad!(
                    "split.by",
                    "\"time\" needs a column of type \"timestamp\"".into(),
                );
            }
            if self.split.valid.is_none() || self.split.test.is_none() {
                bad!(
                    "split",
                    "by = \"time\" needs both `valid` and `test` cut times".into(),
                );
            }
        } else if self.split.valid.is_some() || self.split.test.is_some() {
            bad!(
                "split",
                "`valid` and `test` cut times are for by = \"time\"".into(),
            );
        }
        if by != SplitBy::Key && !self.split.key.is_empty() {
            bad!("split.key", "key columns are for by = \"key\"".into());
        }
        let l = &self.label;
        if l.column.is_empty() {
            bad!("label.column", "must name the label column".into());
        }
        if l.threshold.is_some() && !l.positive.is_empty() {
            bad!("label", "give `threshold` or `positive`, not both".into(),);
        }
        if let Some(t) = l.threshold
            && !t.is_finite()
        {
            bad!("label.threshold", format!("{t} must be a finite number"));
        }
        if !l.negative.is_empty() && l.positive.is_empty() {
            bad!(
                "label.negative",
                "needs `positive` (the values that are 1)".into(),
            );
        }
        if let Some(v) = l.positive.iter().find(|v| l.negative.contains(v)) {
            bad!("label", format!("{v:?} is both positive and negative"));
        }
        if self.domain.column.is_empty() {
            bad!("domain.column", "must name the domain column".into());
        }
        let mut seen = std::collections::HashSet::new();
        for v in &self.domain.values {
            if !seen.insert(v) {
                bad!("domain.values", format!("{v:?} is listed twice"));
            }
        }
        if self
            .columns
            .0
            .iter()
            .all(|(_, c)| c.kind == ColumnType::Timestamp)
        {
            bad!("columns", "needs at least one feature column".into());
        }
        for (name, c) in &self.columns.0 {
            let key = format!("columns.{name}");
            if c.kind != ColumnType::Timestamp
                && matches!(name.as_str(), "label" | "domain" | "timestamp")
            {
                bad!(
                    &key,
                    "`label`, `domain` and `timestamp` are the prepared data's own columns: \
                     name the field otherwise (from = \"…\")"
                        .into(),
                );
            }
            let only = |what: &str, ok: bool, kinds: &str, p: &mut Vec<(String, String)>| {
                if !ok {
                    p.push((
                        format!("data.table.{key}.{what}"),
                        format!("is for type {kinds}, not {:?}", c.kind),
                    ));
                }
            };
            use ColumnType as T;
            let k = c.kind;
            only(
                "min_count",
                c.min_count.is_none() || matches!(k, T::Categorical | T::Multi),
                "categorical or multi",
                &mut p,
            );
            only(
                "values",
                c.values.is_none() || matches!(k, T::Categorical | T::Multi),
                "categorical or multi",
                &mut p,
            );
            only(
                "last_part",
                c.last_part.is_none() || k == T::Categorical,
                "categorical",
                &mut p,
            );
            only(
                "buckets",
                c.buckets.is_none() || k == T::Numeric,
                "numeric",
                &mut p,
            );
            only(
                "edges",
                c.edges.is_none() || k == T::Numeric,
                "numeric",
                &mut p,
            );
            only("log1p", !c.log1p || k == T::Numeric, "numeric", &mut p);
            only("sep", c.sep.is_none() || k == T::Multi, "multi", &mut p);
            only(
                "columns",
                c.columns.is_none() || k == T::Flags,
                "flags",
                &mut p,
            );
            only("first", !c.first || k == T::Flags, "flags", &mut p);
            only(
                "from",
                c.from.is_none() || k != T::Flags,
                "anything but flags (flags read `columns`)",
                &mut p,
            );
            macro_rules! bad_col {
                ($w:expr, $m:expr $(,)?) => {
                    p.push((format!("data.table.{key}{}", $w), $m))
                };
            }
            match k {
                T::Multi if c.sep.as_deref().is_none_or(str::is_empty) => bad_col!(
                    "",
                    "a multi-valued column needs its separator (sep = \"|\")".into(),
                ),
                T::Flags if c.columns.as_ref().is_none_or(Vec::is_empty) => {
                    bad_col!("", "type \"flags\" needs its 0/1 `columns`".into())
                }
                T::Numeric => {
                    if c.buckets.is_some() && c.edges.is_some() {
                        bad_col!("", "give `buckets` or `edges`, not both".into());
                    }
                    if c.buckets == Some(0) {
                        bad_col!(".buckets", "must be at least 1".into());
                    }
                    if let Some(e) = &c.edges
                        && (e.is_empty()
                            || e.iter().any(|x| !x.is_finite())
                            || e.windows(2).any(|w| w[0] >= w[1]))
                    {
                        bad_col!(".edges", format!("{e:?} must be finite and increasing"));
                    }
                }
                _ => {}
            }
            if c.min_count == Some(0) {
                bad_col!(".min_count", "must be at least 1".into());
            }
        }
        if let Some(f) = &self.category_field
            && !self.columns.0.iter().any(|(n, c)| {
                n == f && !matches!(c.kind, ColumnType::Numeric | ColumnType::Timestamp)
            })
        {
            bad!(
                "category_field",
                format!("{f:?} is not a categorical, multi or flags field of data.table.columns")
            );
        }
        if let Some(fields) = &self.domain.fields {
            for f in fields {
                if !self.columns.0.iter().any(|(n, _)| n == f) {
                    bad!(
                        "domain.fields",
                        format!("{f:?} is not a field of data.table.columns"),
                    );
                }
            }
        }
        p
    }

    pub fn split_by(&self) -> SplitBy {
        self.split.by.unwrap_or(if self.train.is_some() {
            SplitBy::Files
        } else {
            SplitBy::Key
        })
    }

    /// The domain-defining fields: `domain.fields`, or the fields read from the
    /// domain column.
    pub fn domain_fields(&self) -> Vec<String> {
        match &self.domain.fields {
            Some(f) => f.clone(),
            None => self
                .columns
                .0
                .iter()
                .filter(|(n, c)| {
                    c.kind != ColumnType::Timestamp && c.source(n) == self.domain.column
                })
                .map(|(n, _)| n.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_keep_their_order_and_shorthand() {
        let t: TableSchema = toml::from_str(
            r#"
            file = "x.csv"
            label = { column = "y" }
            domain = { column = "c" }
            [columns]
            zeta = "categorical"
            alpha = { type = "numeric", buckets = 4 }
            c = "categorical"
            "#,
        )
        .unwrap();
        let names: Vec<&str> = t.columns.0.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "c"]);
        assert_eq!(t.columns.0[1].1.buckets, Some(4));
        assert!(t.problems().is_empty(), "{:?}", t.problems());
        assert_eq!(t.domain_fields(), ["c"]);
        // Round trip through the written config.
        let back: TableSchema = toml::from_str(&toml::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn misspelt_keys_and_bad_combinations_are_named() {
        let e = toml::from_str::<TableSchema>(
            r#"
            file = "x.csv"
            label = { column = "y" }
            domain = { column = "c" }
            [columns]
            c = { type = "categorical", min_cuont = 3 }
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("columns.c"), "{e}");
        let t: TableSchema = toml::from_str(
            r#"
            file = "x.csv"
            label = { column = "y" }
            domain = { column = "c" }
            [columns]
            c = "categorical"
            tags = "multi"
            "#,
        )
        .unwrap();
        let p = t.problems();
        assert!(
            p.iter()
                .any(|(k, m)| k == "data.table.columns.tags" && m.contains("separator")),
            "{p:?}"
        );
    }
}
