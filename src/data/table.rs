//! In-memory assembly of a prepared dataset (MovieLens, Amazon): rows are pushed
//! with raw string values, then split, ordered, id-encoded and summarised.
//!
//! Rules (identical for every in-memory recipe, specified in docs/data.md):
//! - split: FNV-1a of the row key (see [`split`](super::split));
//! - row order within a split: by timestamp, then key hash, then input order — so the
//!   output does not depend on the order of rows in the input files;
//! - ids: 0 = missing or not seen in train; closed fields (gender, genres, ...) use
//!   their fixed value list (id = position + 1); open fields (user, item, zip, ...)
//!   number values by first appearance in the ordered train split;
//! - statistics: train split only.

use super::error::Place;
use super::meta::{DomainStats, FieldKind, FieldMeta, Liked, SplitCounts};
use super::shard::ColumnData;
use super::split::{Split, fnv1a64};
use anyhow::{Result, bail};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;

const MISSING: u32 = u32::MAX;

/// A feature field: its name, kind and (for closed fields) its value list.
#[derive(Clone, Debug)]
pub struct FieldDef {
    pub name: String,
    pub kind: FieldKind,
    pub closed: Option<Vec<String>>,
    /// Open fields: values seen fewer times than this in train get id 0. 1: none.
    pub min_count: u32,
    /// Ids from another (earlier) field's vocabulary: a history of items shares
    /// `item_id`'s. That field's ids are numbered over both (see [`TableBuilder::build`]).
    pub vocab_of: Option<String>,
}

impl FieldDef {
    pub fn open(name: &str) -> Self {
        FieldDef {
            name: name.into(),
            kind: FieldKind::Categorical,
            closed: None,
            min_count: 1,
            vocab_of: None,
        }
    }

    pub fn closed(name: &str, kind: FieldKind, values: &[&str]) -> Self {
        FieldDef {
            name: name.into(),
            kind,
            closed: Some(values.iter().map(|s| s.to_string()).collect()),
            min_count: 1,
            vocab_of: None,
        }
    }

    /// A multi-hot field whose values are ids of `field` (an ordered list:
    /// a history), numbered with it.
    pub fn sequence_of(name: &str, field: &str) -> Self {
        FieldDef {
            name: name.into(),
            kind: FieldKind::MultiHot,
            closed: None,
            min_count: 1,
            vocab_of: Some(field.into()),
        }
    }
}

/// One field value of a row.
pub enum Value<'a> {
    One(Option<&'a str>),
    Many(Vec<&'a str>),
}

#[derive(Default)]
struct Interner {
    map: HashMap<String, u32>,
    values: Vec<String>,
}

impl Interner {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&c) = self.map.get(s) {
            return c;
        }
        let c = self.values.len() as u32;
        self.values.push(s.to_string());
        self.map.insert(s.to_string(), c);
        c
    }
}

struct Column {
    def: FieldDef,
    /// The column whose vocabulary this one's codes index (`def.vocab_of`), or itself.
    vocab: usize,
    interner: Interner,
    /// Categorical: one code per row. Multi-hot: the flat list of codes.
    codes: Vec<u32>,
    /// Multi-hot only: row i's codes are `codes[offsets[i]..offsets[i+1]]`.
    offsets: Vec<u32>,
}

/// What the statistics need to know about the fields.
pub struct StatsSpec {
    /// The user and item fields, where the dataset has them (distinct counts).
    pub user_field: Option<usize>,
    pub item_field: Option<usize>,
    /// A categorical or multi-hot field whose values are the item's categories.
    pub category_field: Option<usize>,
    /// Item raw id → title.
    pub titles: HashMap<String, String>,
}

pub struct TableBuilder {
    columns: Vec<Column>,
    hashes: Vec<u64>,
    /// A row's split when the input decides it (time cut, pre-split files);
    /// None: by the key's hash.
    splits: Vec<Option<Split>>,
    timestamps: Vec<i64>,
    labels: Vec<u8>,
    domains: Vec<u32>,
    n_domains: usize,
}

/// The built dataset: per split, columns ready to write, plus field metadata,
/// per-domain row counts and train statistics.
pub struct BuiltTable {
    pub splits: [BTreeMap<String, ColumnData>; 3],
    pub rows: [u64; 3],
    pub fields: Vec<FieldMeta>,
    pub domain_rows: Vec<SplitCounts>,
    pub stats: Vec<DomainStats>,
    /// The vocabulary of each open field: its raw values in id order (id i + 1 is
    /// `values[i]`), to map new raw rows as the prepared ones were mapped.
    pub vocabs: BTreeMap<String, Vec<String>>,
}

impl TableBuilder {
    /// A builder for rows of `fields`. A field's `vocab_of` must name an earlier
    /// field that has its own vocabulary (a programming error otherwise).
    pub fn new(fields: Vec<FieldDef>, n_domains: usize) -> Self {
        let vocab = |i: usize, def: &FieldDef| match &def.vocab_of {
            None => i,
            Some(f) => match fields[..i]
                .iter()
                .position(|g| &g.name == f && g.vocab_of.is_none())
            {
                Some(j) => j,
                None => panic!(
                    "field `{}`: vocab_of `{f}` is not an earlier field",
                    def.name
                ),
            },
        };
        let vocabs: Vec<usize> = fields
            .iter()
            .enumerate()
            .map(|(i, d)| vocab(i, d))
            .collect();
        let columns = fields
            .into_iter()
            .zip(vocabs)
            .map(|(def, vocab)| Column {
                offsets: if def.kind == FieldKind::MultiHot {
                    vec![0]
                } else {
                    Vec::new()
                },
                def,
                vocab,
                interner: Interner::default(),
                codes: Vec::new(),
            })
            .collect();
        TableBuilder {
            columns,
            hashes: Vec::new(),
            splits: Vec::new(),
            timestamps: Vec::new(),
            labels: Vec::new(),
            domains: Vec::new(),
            n_domains,
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Add one row. `values` are in field order; `key` decides the split.
    pub fn push(
        &mut self,
        key: &str,
        timestamp: i64,
        label: u8,
        domain: u32,
        values: &[Value],
    ) -> Result<()> {
        self.push_in(
            None,
            fnv1a64(key.as_bytes()),
            timestamp,
            label,
            domain,
            values,
        )
    }

    /// Add one row whose split is `split`, or (None) that of its key's hash
    /// `hash`; the hash also orders rows of equal timestamp.
    pub fn push_in(
        &mut self,
        split: Option<Split>,
        hash: u64,
        timestamp: i64,
        label: u8,
        domain: u32,
        values: &[Value],
    ) -> Result<()> {
        if values.len() != self.columns.len() {
            bail!(
                "internal: row has {} values for {} fields",
                values.len(),
                self.columns.len()
            );
        }
        if domain as usize >= self.n_domains {
            bail!("internal: domain {domain} out of range");
        }
        for (i, v) in values.iter().enumerate() {
            let voc = self.columns[i].vocab;
            match (self.columns[i].def.kind, v) {
                (FieldKind::Categorical, Value::One(s)) => {
                    let c = s.map_or(MISSING, |s| self.columns[voc].interner.intern(s));
                    self.columns[i].codes.push(c);
                }
                (FieldKind::MultiHot, Value::Many(list)) => {
                    for s in list {
                        let c = self.columns[voc].interner.intern(s);
                        self.columns[i].codes.push(c);
                    }
                    let col = &mut self.columns[i];
                    col.offsets.push(col.codes.len() as u32);
                }
                _ => bail!(
                    "internal: wrong value kind for field `{}`",
                    self.columns[i].def.name
                ),
            }
        }
        self.hashes.push(hash);
        self.splits.push(split);
        self.timestamps.push(timestamp);
        self.labels.push(label);
        self.domains.push(domain);
        Ok(())
    }

    pub fn build(self, spec: &StatsSpec) -> Result<BuiltTable> {
        // Rows of each split, in canonical order.
        let mut order: [Vec<usize>; 3] = Default::default();
        for (i, h) in self.hashes.iter().enumerate() {
            let split = self.splits[i].unwrap_or_else(|| Split::of_bucket(h % 10));
            order[split.index()].push(i);
        }
        for rows in &mut order {
            rows.sort_by_key(|&i| (self.timestamps[i], self.hashes[i], i));
        }
        let train = &order[Split::Train.index()];

        // Vocabulary: local code → id (0 = missing / unseen in train).
        let mut vocabs: Vec<Vec<u32>> = Vec::with_capacity(self.columns.len());
        let mut open_values = BTreeMap::new();
        let mut fields = Vec::with_capacity(self.columns.len());
        for (ci, col) in self.columns.iter().enumerate() {
            if col.vocab != ci {
                // Numbered with the field it shares a vocabulary with (earlier).
                let owner = fields
                    .get(col.vocab)
                    .map(|f: &FieldMeta| (f.cardinality, f.values.clone()))
                    .unwrap_or_default();
                fields.push(FieldMeta {
                    name: col.def.name.clone(),
                    kind: col.def.kind,
                    cardinality: owner.0,
                    values: owner.1,
                });
                vocabs.push(vocabs[col.vocab].clone());
                continue;
            }
            // This column's codes in each train row, then those of the columns
            // sharing its vocabulary.
            let sharers: Vec<&Column> = self
                .columns
                .iter()
                .enumerate()
                .filter(|&(j, c)| c.vocab == ci && j != ci)
                .map(|(_, c)| c)
                .collect();
            let codes_of = |r: usize| {
                std::iter::once(col)
                    .chain(sharers.iter().copied())
                    .flat_map(move |c| row_codes(c, r).iter().copied())
            };
            let mut map = vec![0u32; col.interner.values.len()];
            let cardinality;
            if let Some(list) = &col.def.closed {
                for (code, v) in col.interner.values.iter().enumerate() {
                    match list.iter().position(|x| x == v) {
                        Some(p) => map[code] = p as u32 + 1,
                        None => bail!(
                            "internal: value {v:?} of field `{}` is not in its value list",
                            col.def.name
                        ),
                    }
                }
                cardinality = list.len() as u32 + 1;
            } else {
                // Train occurrences, when rare values are to be left out.
                let mut count = vec![0u32; col.interner.values.len()];
                if col.def.min_count > 1 {
                    for &r in train {
                        for c in codes_of(r) {
                            if c != MISSING {
                                count[c as usize] = count[c as usize].saturating_add(1);
                            }
                        }
                    }
                }
                let rare = |c: u32| col.def.min_count > 1 && count[c as usize] < col.def.min_count;
                let mut next = 1u32;
                for &r in train {
                    for c in codes_of(r) {
                        if c != MISSING && map[c as usize] == 0 && !rare(c) {
                            map[c as usize] = next;
                            next += 1;
                        }
                    }
                }
                cardinality = next;
                let mut by_id = vec![String::new(); next as usize - 1];
                for (code, &id) in map.iter().enumerate() {
                    if id > 0 {
                        by_id[id as usize - 1] = col.interner.values[code].clone();
                    }
                }
                open_values.insert(col.def.name.clone(), by_id);
            }
            fields.push(FieldMeta {
                name: col.def.name.clone(),
                kind: col.def.kind,
                cardinality,
                values: col.def.closed.clone(),
            });
            vocabs.push(map);
        }

        // Columns per split.
        let mut splits: [BTreeMap<String, ColumnData>; 3] = Default::default();
        let mut rows = [0u64; 3];
        let mut domain_rows = vec![SplitCounts::default(); self.n_domains];
        for split in Split::ALL {
            let idx = &order[split.index()];
            rows[split.index()] = idx.len() as u64;
            let out = &mut splits[split.index()];
            for (col, map) in self.columns.iter().zip(&vocabs) {
                let id = |c: u32| if c == MISSING { 0 } else { map[c as usize] };
                match col.def.kind {
                    FieldKind::Categorical => {
                        let v = idx.iter().map(|&r| id(col.codes[r])).collect();
                        out.insert(col.def.name.clone(), ColumnData::U32(v));
                    }
                    FieldKind::MultiHot => {
                        let mut values = Vec::new();
                        let mut offsets = Vec::with_capacity(idx.len() + 1);
                        offsets.push(0u32);
                        for &r in idx {
                            values.extend(row_codes(col, r).iter().map(|&c| id(c)));
                            offsets.push(values.len() as u32);
                        }
                        out.insert(format!("{}.values", col.def.name), ColumnData::U32(values));
                        out.insert(
                            format!("{}.offsets", col.def.name),
                            ColumnData::U32(offsets),
                        );
                    }
                }
            }
            out.insert(
                "label".into(),
                ColumnData::U8(idx.iter().map(|&r| self.labels[r]).collect()),
            );
            out.insert(
                "domain".into(),
                ColumnData::U32(idx.iter().map(|&r| self.domains[r]).collect()),
            );
            out.insert(
                "timestamp".into(),
                ColumnData::I64(idx.iter().map(|&r| self.timestamps[r]).collect()),
            );
            for &r in idx {
                domain_rows[self.domains[r] as usize].add(split, 1);
            }
        }

        let stats = self.train_stats(train, spec);
        Ok(BuiltTable {
            splits,
            rows,
            fields,
            domain_rows,
            stats,
            vocabs: open_values,
        })
    }

    fn train_stats(&self, train: &[usize], spec: &StatsSpec) -> Vec<DomainStats> {
        let users = spec.user_field.map(|f| &self.columns[f]);
        let items = spec.item_field.map(|f| &self.columns[f]);
        let cats = spec.category_field.map(|f| &self.columns[f]);
        (0..self.n_domains as u32)
            .map(|d| {
                let rows: Vec<usize> = train
                    .iter()
                    .copied()
                    .filter(|&r| self.domains[r] == d)
                    .collect();
                let positives: Vec<usize> = rows
                    .iter()
                    .copied()
                    .filter(|&r| self.labels[r] == 1)
                    .collect();
                let distinct = |col: &Column| {
                    rows.iter()
                        .flat_map(|&r| row_codes(col, r).iter().copied())
                        .filter(|&c| c != MISSING)
                        .collect::<HashSet<u32>>()
                        .len() as u64
                };
                let n_pos = positives.len() as u64;

                let mut top_categories = Vec::new();
                if let Some(col) = cats {
                    let mut liked: HashMap<u32, u64> = HashMap::new();
                    for &r in &positives {
                        let codes: HashSet<u32> = row_codes(col, r)
                            .iter()
                            .copied()
                            .filter(|&c| c != MISSING)
                            .collect();
                        for c in codes {
                            *liked.entry(c).or_default() += 1;
                        }
                    }
                    let mut ranked: Vec<(&str, u64)> = liked
                        .into_iter()
                        .map(|(c, n)| (col.interner.values[c as usize].as_str(), n))
                        .collect();
                    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                    top_categories = ranked
                        .into_iter()
                        .take(5)
                        .map(|(name, n)| Liked {
                            name: name.to_string(),
                            liked: n,
                            share: n as f64 / n_pos as f64,
                        })
                        .collect();
                }

                let mut item_pos: HashMap<u32, u64> = HashMap::new();
                for &r in &positives {
                    let first = items.and_then(|items| row_codes(items, r).first());
                    if let Some(&c) = first.filter(|&&c| c != MISSING) {
                        *item_pos.entry(c).or_default() += 1;
                    }
                }
                let mut ranked: Vec<(&str, u64)> = match items {
                    Some(items) => item_pos
                        .into_iter()
                        .map(|(c, n)| (items.interner.values[c as usize].as_str(), n))
                        .collect(),
                    None => Vec::new(),
                };
                ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let example_titles = ranked
                    .into_iter()
                    .filter_map(|(id, _)| spec.titles.get(id).filter(|t| !t.is_empty()))
                    .take(5)
                    .cloned()
                    .collect();

                DomainStats {
                    rows: rows.len() as u64,
                    users: users.map(distinct),
                    items: items.map(distinct),
                    positives: n_pos,
                    positive_rate: (!rows.is_empty()).then(|| n_pos as f64 / rows.len() as f64),
                    top_categories,
                    example_titles,
                }
            })
            .collect()
    }
}

fn row_codes(col: &Column, r: usize) -> &[u32] {
    match col.def.kind {
        FieldKind::Categorical => std::slice::from_ref(&col.codes[r]),
        FieldKind::MultiHot => &col.codes[col.offsets[r] as usize..col.offsets[r + 1] as usize],
    }
}

/// Rows whose key (a (user, item) pair) an earlier row already has.
pub struct Repeats<K> {
    first: HashMap<K, Place>,
    /// Rows that repeat an earlier row's key.
    pub count: u64,
    /// The first few repeats, in input order: (key, place of the first row with
    /// the key, place of the repeat).
    pub examples: Vec<(K, Place, Place)>,
}

impl<K: Hash + Eq> Default for Repeats<K> {
    fn default() -> Self {
        Repeats {
            first: HashMap::new(),
            count: 0,
            examples: Vec::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> Repeats<K> {
    /// How many repeats [`Repeats::examples`] keeps.
    pub const EXAMPLES: usize = 5;

    /// Note a row's key and place.
    pub fn see(&mut self, key: K, place: Place) {
        match self.first.entry(key) {
            Entry::Vacant(e) => {
                e.insert(place);
            }
            Entry::Occupied(e) => {
                self.count += 1;
                if self.examples.len() < Self::EXAMPLES {
                    self.examples
                        .push((e.key().clone(), e.get().clone(), place));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StatsSpec {
        StatsSpec {
            user_field: Some(0),
            item_field: Some(1),
            category_field: Some(2),
            titles: [("a", "Alpha"), ("b", "Beta")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn ids_follow_train_order_and_unseen_values_get_zero() {
        let fields = vec![
            FieldDef::open("user"),
            FieldDef::open("item"),
            FieldDef::closed("genres", FieldKind::MultiHot, &["x", "y"]),
        ];
        let mut t = TableBuilder::new(fields, 1);
        // "196:242" is train (bucket 1). Find a key in test (bucket 9).
        let test_key = (0..1000)
            .map(|i| format!("u:{i}"))
            .find(|k| Split::of_key(k) == Split::Test)
            .unwrap();
        t.push(
            "196:242",
            5,
            1,
            0,
            &[
                Value::One(Some("u1")),
                Value::One(Some("a")),
                Value::Many(vec!["y", "x"]),
            ],
        )
        .unwrap();
        t.push(
            &test_key,
            1,
            0,
            0,
            &[
                Value::One(Some("u2")),
                Value::One(Some("b")),
                Value::Many(vec![]),
            ],
        )
        .unwrap();
        let b = t.build(&spec()).unwrap();
        assert_eq!(b.rows, [1, 0, 1]);
        let tr = &b.splits[0];
        assert_eq!(tr["user"], ColumnData::U32(vec![1]));
        assert_eq!(tr["genres.values"], ColumnData::U32(vec![2, 1]));
        assert_eq!(tr["genres.offsets"], ColumnData::U32(vec![0, 2]));
        let te = &b.splits[2];
        assert_eq!(
            te["user"],
            ColumnData::U32(vec![0]),
            "u2 never seen in train"
        );
        assert_eq!(b.fields[0].cardinality, 2);
        assert_eq!(b.fields[2].cardinality, 3);
        let s = &b.stats[0];
        assert_eq!(
            (s.rows, s.users, s.items, s.positives),
            (1, Some(1), Some(1), 1)
        );
        assert_eq!(s.example_titles, vec!["Alpha".to_string()]);
        assert_eq!(s.top_categories.len(), 2);
        assert_eq!(s.top_categories[0].name, "x", "ties ranked by name");
    }
}
