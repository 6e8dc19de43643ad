//! `meta.json`: what a prepared dataset holds, and the train-only statistics that
//! prompts describe each domain with.

use serde::{Deserialize, Serialize};

/// Version of the prepared layout; bumped when the layout or a recipe's output changes.
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub format: u32,
    pub recipe: String,
    /// How the label was derived, e.g. `rating >= 4`.
    pub label: String,
    pub splits: SplitsMeta,
    /// Feature fields, in column order. The `domain` column is a feature too.
    pub fields: Vec<FieldMeta>,
    pub domains: Vec<DomainMeta>,
    /// What the statistics call a "category" (`genres`, `categories`), if any.
    pub category_name: Option<String>,
    /// The fields the domains are made from (dropped under
    /// `model.domain_fields = "drop"`); absent for the built-in recipes, whose
    /// names say it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_fields: Option<Vec<String>>,
    /// Rows that carry their own history (the next-item protocol): the
    /// multi-hot fields holding it. Absent: histories are built from the train
    /// split's positive rows when a model asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryMeta>,
}

/// Where a row's history is stored: ordered lists of ids, most recent first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HistoryMeta {
    /// The protocol that made the rows (`next-item`).
    pub protocol: String,
    /// The history's items (ids of `item_id`).
    pub items: String,
    /// Their categories, position by position (ids of `cate_id`), if any.
    pub categories: Option<String>,
    /// At most this many earlier positives are stored per row.
    pub max_len: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitsMeta {
    pub train: SplitMeta,
    pub valid: SplitMeta,
    pub test: SplitMeta,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitMeta {
    pub rows: u64,
    /// Shard files, relative to the split's directory.
    pub shards: Vec<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// One id per row (`U32` column).
    Categorical,
    /// A variable-length id list per row (`{name}.values` + `{name}.offsets`).
    MultiHot,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldMeta {
    pub name: String,
    pub kind: FieldKind,
    /// Number of ids including 0 (missing or unseen in train).
    pub cardinality: u32,
    /// The value of each id from 1 on, for closed vocabularies (gender, genres, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SplitCounts {
    pub train: u64,
    pub valid: u64,
    pub test: u64,
}

impl SplitCounts {
    pub fn total(&self) -> u64 {
        self.train + self.valid + self.test
    }

    pub fn add(&mut self, split: crate::data::split::Split, n: u64) {
        use crate::data::split::Split;
        match split {
            Split::Train => self.train += n,
            Split::Valid => self.valid += n,
            Split::Test => self.test += n,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainMeta {
    pub id: u32,
    pub name: String,
    pub rows: SplitCounts,
    /// Computed on the train split only: never valid or test.
    pub train_stats: DomainStats,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DomainStats {
    pub rows: u64,
    /// Distinct users and items; null for recipes without them (Criteo).
    pub users: Option<u64>,
    pub items: Option<u64>,
    pub positives: u64,
    /// positives / rows; null for a domain with no train rows.
    pub positive_rate: Option<f64>,
    /// Categories ranked by positive (liked) rows, most first, at most 5.
    pub top_categories: Vec<Liked>,
    /// Titles of the items with the most positive rows, at most 5.
    pub example_titles: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Liked {
    pub name: String,
    /// Positive rows of the domain whose item has this category.
    pub liked: u64,
    /// liked / positive rows of the domain.
    pub share: f64,
}

impl Meta {
    /// The `meta.json` of the prepared dataset in `dir`.
    pub fn read(dir: &std::path::Path) -> anyhow::Result<Meta> {
        use anyhow::Context;
        let path = dir.join("meta.json");
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "cannot read {} (run `pipeline data prepare` first)",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a prepared dataset's meta.json", path.display()))
    }

    /// The names of the categorical fields, in column order: the default features.
    pub fn categorical_fields(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| f.kind == FieldKind::Categorical)
            .map(|f| f.name.clone())
            .collect()
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    pub fn domain_by_name(&self, name: &str) -> Option<&DomainMeta> {
        self.domains.iter().find(|d| d.name == name)
    }
}

/// `vocab.json` of a prepared in-memory recipe (MovieLens, Amazon): for each
/// open field (user, item, zip, ...), its raw values in id order — id i + 1 is
/// `fields[name][i]`; id 0 is a missing value or one not seen in train. Closed
/// fields have theirs in `meta.json` (`values`). Not part of a run's inputs: it
/// is a function of the shards' inputs, written to map new raw rows
/// (`pipeline predict --input`) as the prepared ones were mapped.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Vocab {
    pub fields: std::collections::BTreeMap<String, Vec<String>>,
}

impl Vocab {
    pub const FILE: &str = "vocab.json";

    pub fn write(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        crate::fsutil::write_atomic(
            &dir.join(Self::FILE),
            serde_json::to_string(self)?.as_bytes(),
        )
    }

    /// The vocabularies of the prepared dataset in `dir`.
    pub fn read(dir: &std::path::Path) -> anyhow::Result<Vocab> {
        read_prepared_json(
            dir,
            Self::FILE,
            "the dataset was prepared before vocabularies were saved, or by a streamed \
             recipe (criteo) that keeps none",
        )
    }
}

/// A JSON file beside a prepared dataset's `meta.json` that older datasets (or
/// some recipes) lack: the error says why it may be missing (`why`) and that
/// preparing again makes it without changing the shards.
fn read_prepared_json<T: serde::de::DeserializeOwned>(
    dir: &std::path::Path,
    file: &str,
    why: &str,
) -> anyhow::Result<T> {
    use anyhow::Context;
    let path = dir.join(file);
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read {}: {why}; prepare it again with `pipeline data prepare --force` \
             (the shards come out the same, so its runs stay valid)",
            path.display()
        )
    })?;
    serde_json::from_slice(&bytes)
        .with_context(|| format!("{} is not a prepared dataset's {file}", path.display()))
}

/// Label-free statistics of each domain, from the catalogue (the items file) or
/// the user table and never from ratings or labels (`catalog.json`, written by
/// `data prepare` for the MovieLens recipes). A held-out domain has no train
/// rows, but it has these: its prompt may use them (`{catalog_…}` placeholders).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// One entry per domain, in domain order.
    pub domains: Vec<CatalogDomain>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CatalogDomain {
    pub name: String,
    /// Users of the user table in the domain (domains defined by the user).
    pub users: Option<u64>,
    /// Share of those users who are women, in percent.
    pub female_pct: Option<f64>,
    /// Their median age group ("25 to 34").
    pub age: Option<String>,
    /// Items of the catalogue in the domain (domains defined by the item).
    pub items: Option<u64>,
    /// Median release year of those items.
    pub year: Option<String>,
    /// Up to five of their titles, lowest item ids first.
    pub titles: Vec<String>,
    /// A user's table: the domain's description from its schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A user's table: the domain's train rows (no labels read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// A user's table: the most common values of its `catalog_column` among
    /// the domain's train rows, with their share of those rows (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shares: Vec<Share>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Share {
    pub value: String,
    /// Rows with the value / rows of the domain.
    pub share: f64,
}

impl Catalog {
    pub const FILE: &str = "catalog.json";

    pub fn write(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        crate::fsutil::write_atomic(
            &dir.join(Self::FILE),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// The catalogue statistics of the prepared dataset in `dir`.
    pub fn read(dir: &std::path::Path) -> anyhow::Result<Catalog> {
        read_prepared_json(
            dir,
            Self::FILE,
            "only the MovieLens recipes and users' tables have catalogue statistics, and \
             a dataset prepared before they existed has none",
        )
    }
}
