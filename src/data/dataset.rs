//! A prepared dataset in memory, as the trainer reads it: the chosen feature
//! columns, labels and domains of each split, and (for DIN) each row's history.

use crate::data::meta::Meta;
use crate::data::shard::{ColumnData, read_shard};
use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct SplitData {
    pub n: usize,
    /// One column per feature, in feature order.
    pub cols: Vec<Vec<u32>>,
    pub labels: Vec<f32>,
    pub domains: Vec<u32>,
    /// Each row's `user_id` (for GAUC), empty when the dataset has none.
    pub users: Vec<u32>,
    /// Row-major (n × history_len) item ids, most recent first, 0 = padding.
    pub history: Option<Vec<u32>>,
    /// Their categories (`cate_id` ids), position by position, where known.
    pub history_cats: Option<Vec<u32>>,
    /// One (offsets, values) pair per multi-hot field read as a bag: row r's
    /// values are `values[offsets[r]..offsets[r + 1]]`.
    pub bags: Vec<(Vec<u32>, Vec<u32>)>,
}

impl SplitData {
    /// Room for `rows` more rows in every column.
    fn reserve(&mut self, rows: usize) {
        for c in &mut self.cols {
            c.reserve(rows);
        }
        self.labels.reserve(rows);
        self.domains.reserve(rows);
        self.users.reserve(rows);
    }

    /// Add `other`'s rows after this split's (same features; a history is kept
    /// when both have one).
    pub fn append(&mut self, other: SplitData) {
        let both = |a: &mut Option<Vec<u32>>, b: Option<Vec<u32>>, first: bool| {
            *a = match (a.take(), b) {
                (Some(mut x), Some(y)) => {
                    x.extend(y);
                    Some(x)
                }
                (None, y) if first => y,
                _ => None,
            };
        };
        let first = self.n == 0 && self.labels.is_empty();
        both(&mut self.history, other.history, first);
        both(&mut self.history_cats, other.history_cats, first);
        if self.cols.len() < other.cols.len() {
            self.cols.resize(other.cols.len(), Vec::new());
        }
        for (c, o) in self.cols.iter_mut().zip(other.cols) {
            c.extend(o);
        }
        self.labels.extend(other.labels);
        self.domains.extend(other.domains);
        self.users.extend(other.users);
        if self.bags.len() < other.bags.len() {
            self.bags.resize(other.bags.len(), (vec![0], Vec::new()));
        }
        for ((off, vals), (o, v)) in self.bags.iter_mut().zip(other.bags) {
            let base = vals.len() as u32;
            off.extend(o.iter().skip(1).map(|x| x + base));
            vals.extend(v);
        }
        self.n += other.n;
    }

    /// Keep the rows whose domain passes `keep`.
    pub fn retain(&mut self, keep: impl Fn(u32) -> bool) {
        let rows: Vec<usize> = (0..self.n).filter(|&r| keep(self.domains[r])).collect();
        let pick = |v: &Vec<u32>| rows.iter().map(|&r| v[r]).collect::<Vec<u32>>();
        self.cols = self.cols.iter().map(pick).collect();
        self.labels = rows.iter().map(|&r| self.labels[r]).collect();
        self.domains = pick(&self.domains);
        for (off, vals) in &mut self.bags {
            let (mut o, mut v) = (vec![0u32], Vec::new());
            for &r in &rows {
                v.extend_from_slice(&vals[off[r] as usize..off[r + 1] as usize]);
                o.push(v.len() as u32);
            }
            (*off, *vals) = (o, v);
        }
        if !self.users.is_empty() {
            self.users = pick(&self.users);
        }
        for h in [&mut self.history, &mut self.history_cats] {
            if let Some(v) = h.as_ref() {
                let l = v.len() / self.n.max(1);
                *h = Some(
                    rows.iter()
                        .flat_map(|&r| v[r * l..(r + 1) * l].iter().copied())
                        .collect(),
                );
            }
        }
        self.n = rows.len();
    }
}

pub struct Dataset {
    pub dir: PathBuf,
    pub meta: Meta,
    pub features: Vec<String>,
    pub cards: Vec<u32>,
    /// Multi-hot fields read as bags, and their cardinalities.
    pub bags: Vec<String>,
    pub bag_cards: Vec<u32>,
    pub domain_names: Vec<String>,
    pub history_len: usize,
    /// Domains removed from train and valid ([`Dataset::hold_out`]).
    pub holdout: Vec<usize>,
    /// Every split is read from its shards a few at a time
    /// ([`Dataset::read_shards`]): `train`, `valid` and `test` hold no rows, only
    /// meta.json's row counts.
    pub streamed: bool,
    pub train: SplitData,
    pub valid: SplitData,
    pub test: SplitData,
}

fn u32_col<'a>(
    cols: &'a std::collections::BTreeMap<String, ColumnData>,
    name: &str,
    file: &Path,
) -> Result<&'a [u32]> {
    cols.get(name)
        .and_then(|c| c.as_u32())
        .with_context(|| format!("{}: no U32 column `{name}`", file.display()))
}

/// Every id of `col` must be below `card` (meta.json's cardinality).
fn check_range(col: &[u32], card: u32, name: &str, file: &Path) -> Result<()> {
    if let Some(r) = col.iter().position(|&v| v >= card) {
        bail!(
            "{}: row {}: column `{name}` holds id {}, but meta.json gives it {card} ids",
            file.display(),
            r + 1,
            col[r]
        );
    }
    Ok(())
}

/// Each row's user, item and timestamp (for DIN's histories).
type UserItems = (Vec<u32>, Vec<u32>, Vec<i64>);

/// One shard's rows of the chosen features, checked against meta.json's
/// cardinalities and domain count.
/// Which columns a split is read with, and their id ranges.
struct Columns<'a> {
    features: &'a [String],
    cards: &'a [u32],
    bags: &'a [String],
    bag_cards: &'a [u32],
    n_domains: usize,
    /// Histories stored in the rows (the next-item protocol), read to this length.
    stored: Option<(&'a crate::data::meta::HistoryMeta, usize)>,
    /// Their cardinalities: item_id's and cate_id's.
    stored_cards: (u32, u32),
}

/// The first `len` values of each row of a stored sequence, 0-padded: (n × len).
fn truncated(off: &[u32], vals: &[u32], len: usize) -> Vec<u32> {
    let n = off.len().saturating_sub(1);
    let mut out = vec![0u32; n * len];
    for r in 0..n {
        let v = &vals[off[r] as usize..off[r + 1] as usize];
        let k = v.len().min(len);
        out[r * len..r * len + k].copy_from_slice(&v[..k]);
    }
    out
}

fn read_part(file: &Path, c: &Columns, need_hist: bool) -> Result<(SplitData, UserItems)> {
    let Columns {
        features,
        cards,
        n_domains,
        ..
    } = *c;
    let mut cols = read_shard(file)?;
    let mut ui = UserItems::default();
    if need_hist {
        ui.0 = u32_col(&cols, "user_id", file)?.to_vec();
        ui.1 = u32_col(&cols, "item_id", file)?.to_vec();
        match cols.get("timestamp") {
            Some(ColumnData::I64(t)) => ui.2 = t.clone(),
            _ => bail!("{}: no I64 timestamp column", file.display()),
        }
    }
    let mut s = SplitData {
        cols: Vec::with_capacity(features.len()),
        ..Default::default()
    };
    // Columns are moved out of the shard, not copied (a feature named twice is
    // copied the second time).
    let take = |cols: &mut std::collections::BTreeMap<String, ColumnData>,
                name: &str|
     -> Result<Vec<u32>> {
        match cols.remove(name) {
            Some(ColumnData::U32(v)) => Ok(v),
            Some(other) => {
                let v = other.as_u32().map(<[u32]>::to_vec);
                cols.insert(name.to_string(), other);
                v.with_context(|| format!("{}: no U32 column `{name}`", file.display()))
            }
            None => bail!("{}: no U32 column `{name}`", file.display()),
        }
    };
    for (i, (f, &card)) in features.iter().zip(cards).enumerate() {
        let col = match features[..i].iter().position(|g| g == f) {
            Some(j) => s.cols[j].clone(),
            None => take(&mut cols, f)?,
        };
        check_range(&col, card, f, file)?;
        s.cols.push(col);
    }
    let dom = take(&mut cols, "domain")?;
    check_range(&dom, n_domains as u32, "domain", file)?;
    s.domains = dom;
    let labels = cols
        .get("label")
        .and_then(|c| c.as_u8())
        .with_context(|| format!("{}: no label", file.display()))?;
    s.labels = labels.iter().map(|&y| f32::from(y)).collect();
    s.users = match features.iter().position(|f| f == "user_id") {
        Some(j) => s.cols[j].clone(),
        None => cols
            .get("user_id")
            .and_then(|c| c.as_u32())
            .map(<[u32]>::to_vec)
            .unwrap_or_default(),
    };
    s.n = s.labels.len();
    for (b, &card) in c.bags.iter().zip(c.bag_cards) {
        let name = format!("{b}.offsets");
        let off = take(&mut cols, &name)?;
        let vals = take(&mut cols, &format!("{b}.values"))?;
        // read_shard checked the offsets against the rows and the values.
        check_range(&vals, card, &format!("{b}.values"), file)?;
        s.bags.push((off, vals));
    }
    if let Some((h, len)) = c.stored {
        let mut seq = |name: &str, card: u32| -> Result<Vec<u32>> {
            let off = take(&mut cols, &format!("{name}.offsets"))?;
            let vals = take(&mut cols, &format!("{name}.values"))?;
            check_range(&vals, card, &format!("{name}.values"), file)?;
            Ok(truncated(&off, &vals, len))
        };
        s.history = Some(seq(&h.items, c.stored_cards.0)?);
        if let Some(cats) = &h.categories {
            s.history_cats = Some(seq(cats, c.stored_cards.1)?);
        }
    }
    Ok((s, ui))
}

impl Dataset {
    /// Load `dir` (a `data prepare` output). `features` empty = every categorical
    /// field; `history_len` > 0 builds DIN histories from the train split.
    pub fn load(dir: &Path, features: &[String], history_len: usize) -> Result<Dataset> {
        Dataset::load_with(dir, features, &[], history_len, false)
    }

    /// [`Dataset::load`]; with `stream_train` no split is read: each `n` is
    /// meta.json's row count and [`Dataset::read_shards`] reads the shards a few
    /// at a time (DIN's histories need the whole train split: refused).
    pub fn load_with(
        dir: &Path,
        features: &[String],
        bags: &[String],
        history_len: usize,
        stream_train: bool,
    ) -> Result<Dataset> {
        if stream_train && history_len > 0 {
            bail!(
                "train.stream_shards: DIN builds each row's history from the whole train split, \
                 so it cannot stream it (set train.stream_shards = 0)"
            );
        }
        let meta = Meta::read(dir)?;
        let cats = meta.categorical_fields();
        let features: Vec<String> = if features.is_empty() {
            cats.clone()
        } else {
            for f in features {
                if !cats.contains(f) {
                    bail!(
                        "model.features: {f:?} is not a categorical field of {} (it has: {})",
                        dir.display(),
                        cats.join(", ")
                    );
                }
            }
            features.to_vec()
        };
        let cards: Vec<u32> = features
            .iter()
            .map(|f| {
                meta.fields
                    .iter()
                    .find(|m| &m.name == f)
                    .map(|m| m.cardinality)
                    .unwrap_or(1)
            })
            .collect();
        let mut bag_cards = Vec::new();
        for b in bags {
            match meta.fields.iter().find(|m| &m.name == b) {
                Some(m) if m.kind == crate::data::meta::FieldKind::MultiHot => {
                    bag_cards.push(m.cardinality)
                }
                _ => bail!(
                    "model.bags: {b:?} is not a multi-hot field of {} (it has: {})",
                    dir.display(),
                    meta.fields
                        .iter()
                        .filter(|m| m.kind == crate::data::meta::FieldKind::MultiHot)
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
        let card_of = |name: &str| {
            meta.fields
                .iter()
                .find(|m| m.name == name)
                .map_or(1, |m| m.cardinality)
        };
        let need_hist = history_len > 0;
        let columns = Columns {
            features: &features,
            cards: &cards,
            bags,
            bag_cards: &bag_cards,
            n_domains: meta.domains.len(),
            stored: meta
                .history
                .as_ref()
                .filter(|_| need_hist)
                .map(|h| (h, history_len)),
            stored_cards: (card_of("item_id"), card_of("cate_id")),
        };
        // Rows with histories of their own need no user, item or time to build one.
        let build_hist = need_hist && meta.history.is_none();
        let has = |name: &str| cats.iter().any(|c| c == name);
        if need_hist && !(has("user_id") && has("item_id")) {
            bail!(
                "DIN needs user_id and item_id fields; {} has neither",
                dir.display()
            );
        }
        let mut splits = Vec::new();
        let mut users_items = Vec::new();
        for (name, sm) in [
            ("train", &meta.splits.train),
            ("valid", &meta.splits.valid),
            ("test", &meta.splits.test),
        ] {
            if stream_train {
                // Read shard by shard ([`Dataset::read_shards`]).
                splits.push(SplitData {
                    n: sm.rows as usize,
                    cols: vec![Vec::new(); features.len()],
                    ..Default::default()
                });
                users_items.push(UserItems::default());
                continue;
            }
            let mut s = SplitData {
                cols: vec![Vec::new(); features.len()],
                ..Default::default()
            };
            let mut ui = UserItems::default();
            let mut users_complete = true;
            for shard in &sm.shards {
                let file = dir.join(name).join(shard);
                let (part, part_ui) = read_part(&file, &columns, build_hist)?;
                users_complete &= part.users.len() == part.n;
                s.append(part);
                ui.0.extend(part_ui.0);
                ui.1.extend(part_ui.1);
                ui.2.extend(part_ui.2);
            }
            if !users_complete {
                // Some shard lacks `user_id`: no per-user metric for this split.
                s.users.clear();
            }
            if s.n as u64 != sm.rows {
                bail!(
                    "{}: meta.json says {} {name} rows, the shards hold {}",
                    dir.display(),
                    sm.rows,
                    s.n
                );
            }
            splits.push(s);
            users_items.push(ui);
        }
        if build_hist {
            // Each user's positively rated train items by time.
            let (u, i, t) = &users_items[0];
            let mut by_user: HashMap<u32, Vec<(i64, u32)>> = HashMap::new();
            for r in 0..u.len() {
                if splits[0].labels[r] > 0.5 && u[r] != 0 {
                    by_user.entry(u[r]).or_default().push((t[r], i[r]));
                }
            }
            for v in by_user.values_mut() {
                v.sort_by_key(|&(ts, _)| ts); // stable: ties keep row order
            }
            for (s, (u, _, t)) in splits.iter_mut().zip(&users_items) {
                let mut h = vec![0u32; s.n * history_len];
                for r in 0..s.n {
                    if let Some(list) = by_user.get(&u[r]) {
                        let end = list.partition_point(|&(ts, _)| ts < t[r]);
                        let start = end.saturating_sub(history_len);
                        for (k, &(_, item)) in list[start..end].iter().rev().enumerate() {
                            h[r * history_len + k] = item;
                        }
                    }
                }
                s.history = Some(h);
            }
            // Their categories, where the features hold each item's.
            if let (Some(ic), Some(cc)) = (
                features.iter().position(|f| f == "item_id"),
                features.iter().position(|f| f == "cate_id"),
            ) {
                let mut cate = HashMap::new();
                for s in &splits {
                    for r in 0..s.n {
                        cate.entry(s.cols[ic][r]).or_insert(s.cols[cc][r]);
                    }
                }
                for s in &mut splits {
                    let h = s.history.as_ref().map(|h| {
                        h.iter()
                            .map(|i| {
                                if *i == 0 {
                                    0
                                } else {
                                    cate.get(i).copied().unwrap_or(0)
                                }
                            })
                            .collect()
                    });
                    s.history_cats = h;
                }
            }
        }
        let domain_names = meta.domains.iter().map(|d| d.name.clone()).collect();
        let mut it = splits.into_iter();
        let (train, valid, test) = (
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
        );
        Ok(Dataset {
            dir: dir.to_path_buf(),
            meta,
            features,
            cards,
            bags: bags.to_vec(),
            bag_cards,
            domain_names,
            history_len,
            holdout: Vec::new(),
            streamed: stream_train,
            train,
            valid,
            test,
        })
    }

    /// Remove every row of the domains `names` from train and valid (test keeps
    /// them: they are scored there as unseen domains). An unknown name is an error.
    pub fn hold_out(&mut self, names: &[String]) -> Result<()> {
        let mut ids = Vec::new();
        for n in names {
            match self.domain_names.iter().position(|d| d == n) {
                Some(i) => ids.push(i),
                None => bail!(
                    "holdout domain {n:?} is not a domain of {} (domains: {})",
                    self.dir.display(),
                    self.domain_names.join(", ")
                ),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        if !ids.is_empty() && self.history_len > 0 && self.meta.history.is_none() {
            // Histories are built from the train split before the hold-out, so they
            // would carry the held-out rows.
            bail!("holdout domains are not supported with DIN histories");
        }
        if !ids.is_empty() && ids.len() == self.domain_names.len() {
            bail!("every domain is held out: nothing left to train on");
        }
        if !self.streamed {
            for s in [&mut self.train, &mut self.valid] {
                s.retain(|d| !ids.contains(&(d as usize)));
            }
        }
        self.holdout = ids;
        Ok(())
    }

    /// The rows of shards `shards` of split `name` (indices into meta.json's
    /// list, read in the given order), without the held-out domains in train and
    /// valid: one buffer of a streamed split.
    pub fn read_shards(&self, name: &str, shards: &[usize]) -> Result<SplitData> {
        let list = &self.split_meta(name)?.shards;
        let mut s = SplitData {
            cols: vec![Vec::new(); self.features.len()],
            ..Default::default()
        };
        let mut users_complete = true;
        for (k, &i) in shards.iter().enumerate() {
            let shard = list
                .get(i)
                .with_context(|| format!("internal: no {name} shard {i}"))?;
            let file = self.dir.join(name).join(shard);
            let columns = Columns {
                features: &self.features,
                cards: &self.cards,
                bags: &self.bags,
                bag_cards: &self.bag_cards,
                n_domains: self.meta.domains.len(),
                // Streaming is refused for models that read histories.
                stored: None,
                stored_cards: (1, 1),
            };
            let (part, _) = read_part(&file, &columns, false)?;
            users_complete &= part.users.len() == part.n;
            if k == 0 {
                // Room for every shard of the buffer at once, not grown by doubling.
                s.reserve(part.n * shards.len());
            }
            s.append(part);
        }
        if !users_complete {
            s.users.clear();
        }
        let held = &self.holdout;
        if name != "test" && !held.is_empty() {
            s.retain(|d| !held.contains(&(d as usize)));
        }
        Ok(s)
    }

    /// meta.json's entry of split `name` (`train`, `valid` or `test`).
    pub fn split_meta(&self, name: &str) -> Result<&crate::data::meta::SplitMeta> {
        Ok(match name {
            "train" => &self.meta.splits.train,
            "valid" => &self.meta.splits.valid,
            "test" => &self.meta.splits.test,
            _ => bail!("internal: no split {name:?}"),
        })
    }

    /// What a streamed split holds between buffers: no rows, meta.json's row
    /// count.
    pub fn stream_placeholder(&self, name: &str) -> Result<SplitData> {
        Ok(SplitData {
            n: self.split_meta(name)?.rows as usize,
            cols: vec![Vec::new(); self.features.len()],
            ..Default::default()
        })
    }

    /// Domains with train rows (the held-out ones have none), from meta.json:
    /// the same whether the train split is in memory or streamed.
    pub fn seen_domains(&self) -> Vec<usize> {
        (0..self.domain_names.len())
            .filter(|&d| {
                !self.holdout.contains(&d)
                    && self.meta.domains.get(d).is_some_and(|m| m.rows.train > 0)
            })
            .collect()
    }

    /// Ids of the `k` domains with the fewest rows (all splits), smallest first.
    pub fn smallest_domains(&self, k: usize) -> Vec<usize> {
        let mut d: Vec<(u64, usize)> = self
            .meta
            .domains
            .iter()
            .enumerate()
            .map(|(i, m)| (m.rows.total(), i))
            .collect();
        d.sort();
        d.into_iter().take(k).map(|(_, i)| i).collect()
    }
}
