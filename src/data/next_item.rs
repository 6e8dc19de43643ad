//! The next-item protocol (`ml100k-nextitem`, `ml1m-nextitem`; docs/data.md):
//! a user's positives in time order are the targets, each with the earlier
//! positives as its history and one sampled item the user never rated as its
//! negative; the last positive is the test target, the one before it the valid
//! target, the earlier ones (from the second on) train targets. The domain is
//! the user's history-length group. Amazon (`amazon-nextitem-<Cat>+...`): the
//! same with every review a positive, over the listed categories' reviews.

use super::amazon::{self, CategoryFiles};
use super::meta::{Catalog, HistoryMeta};
use super::movielens::{self, DomainKind, Rating, Raw};
use super::split::{Split, fnv1a64};
use super::table::{FieldDef, StatsSpec, TableBuilder, Value};
use anyhow::{Result, bail};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Each row stores at most this many earlier positives, most recent first.
pub const MAX_HISTORY: usize = 50;

/// History-length groups: `l` = a user's positives minus 2 (the positives
/// before the valid target); group 0 for l ≤ `short`, 1 up to `long`, 2 above.
pub struct Groups {
    pub names: [&'static str; 3],
    pub short: usize,
    pub long: usize,
}

/// MovieLens: ≤ 50, 51–200, > 200.
pub const MOVIELENS: Groups = Groups {
    names: ["history up to 50", "history 51 to 200", "history over 200"],
    short: 50,
    long: 200,
};

/// Amazon: ≤ 5, 6–20, > 20.
pub const AMAZON: Groups = Groups {
    names: ["history up to 5", "history 6 to 20", "history over 20"],
    short: 5,
    long: 20,
};

impl Groups {
    pub fn of(&self, l: usize) -> u32 {
        if l <= self.short {
            0
        } else if l <= self.long {
            1
        } else {
            2
        }
    }
}

/// What meta.json says of the stored histories.
pub fn history_meta() -> HistoryMeta {
    HistoryMeta {
        protocol: "next-item".into(),
        items: "hist_item_id".into(),
        categories: Some("hist_cate_id".into()),
        max_len: MAX_HISTORY,
    }
}

/// The MovieLens fields, then the history's items and their first genres.
pub fn fields() -> Vec<FieldDef> {
    let mut f = movielens::fields();
    f.push(FieldDef::sequence_of("hist_item_id", "item_id"));
    f.push(FieldDef::sequence_of("hist_cate_id", "cate_id"));
    f
}

/// The negative of target `j` of `user`: the first candidate
/// `pool[fnv1a64("{user}:{j}:{k}") mod |pool|]`, k = 0, 1, …, the user never rated.
pub fn negative<T: Eq + std::hash::Hash + Clone>(
    pool: &[T],
    rated: &HashSet<T>,
    user: impl std::fmt::Display,
    j: usize,
) -> Option<T> {
    if rated.len() >= pool.len() && pool.iter().all(|i| rated.contains(i)) {
        return None;
    }
    (0u64..)
        .map(|k| {
            &pool[(fnv1a64(format!("{user}:{j}:{k}").as_bytes()) % pool.len() as u64) as usize]
        })
        .find(|i| !rated.contains(*i))
        .cloned()
}

/// The split of target `j` of a user with `n` positives: the last is test, the
/// one before valid, the earlier ones train.
fn split_of(j: usize, n: usize) -> Split {
    if j == n - 1 {
        Split::Test
    } else if j == n - 2 {
        Split::Valid
    } else {
        Split::Train
    }
}

/// The next-item rows of a MovieLens release (positive: rating ≥ 4), their
/// statistics' spec, and each group's catalogue statistics.
pub(super) fn movielens(raw: &Raw, names: &[&str]) -> Result<(TableBuilder, StatsSpec, Catalog)> {
    let groups = &MOVIELENS;
    let mut by_user: BTreeMap<u64, Vec<&Rating>> = BTreeMap::new();
    for r in &raw.ratings {
        raw.lookup(r)?;
        by_user.entry(r.user).or_default().push(r);
    }
    // Every rated item, by id: the pool negatives are drawn from.
    let pool: Vec<u64> = raw
        .ratings
        .iter()
        .map(|r| r.item)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut table = TableBuilder::new(fields(), names.len());
    let mut group_of: HashMap<u64, u32> = HashMap::new();
    for (&u, list) in &mut by_user {
        list.sort_by_key(|r| (r.ts, r.item));
        let rated: HashSet<u64> = list.iter().map(|r| r.item).collect();
        let pos: Vec<&Rating> = list.iter().copied().filter(|r| r.rating >= 4).collect();
        let n = pos.len();
        if n < 3 {
            continue; // no train, valid and test target
        }
        let group = groups.of(n - 2);
        group_of.insert(u, group);
        let (user, _) = raw.lookup(pos[0])?;
        let user_id = u.to_string();
        for j in 1..n {
            let split = split_of(j, n);
            let earlier = &pos[j.saturating_sub(MAX_HISTORY)..j];
            let hist_items: Vec<String> =
                earlier.iter().rev().map(|r| r.item.to_string()).collect();
            let mut hist_cates = Vec::with_capacity(earlier.len());
            for r in earlier.iter().rev() {
                let (_, item) = raw.lookup(r)?;
                // An item without a genre is `unknown` in a history (no release has one).
                hist_cates.push(item.genres.first().copied().unwrap_or("unknown"));
            }
            let Some(neg) = negative(&pool, &rated, u, j) else {
                bail!(
                    "{}: user {u} rated every item, so no negative can be drawn for them",
                    raw.ratings_file.display()
                );
            };
            for (label, item_raw) in [(1u8, pos[j].item), (0, neg)] {
                let item = &raw.items[&item_raw];
                let item_id = item_raw.to_string();
                // The MovieLens fields, then the history's (see [`fields`]).
                let mut values = movielens::row_values(&user_id, &item_id, user, item);
                values.push(Value::Many(hist_items.iter().map(String::as_str).collect()));
                values.push(Value::Many(hist_cates.clone()));
                table.push_in(
                    Some(split),
                    fnv1a64(format!("{u}:{j}:{label}").as_bytes()),
                    pos[j].ts,
                    label,
                    group,
                    &values,
                )?;
            }
        }
    }
    let catalog = movielens::catalog(raw, DomainKind::History, names, &|id, _| {
        group_of.get(&id).copied()
    });
    Ok((table, movielens::stats_spec(raw), catalog))
}

/// The Amazon fields of a next-item row: the category is the item's
/// sub-category (`cate_id`, the level below the top category of its metadata).
pub fn amazon_fields() -> Vec<FieldDef> {
    vec![
        FieldDef::open("user_id"),
        FieldDef::open("item_id"),
        FieldDef::open("brand"),
        FieldDef::open("cate_id"),
        FieldDef::sequence_of("hist_item_id", "item_id"),
        FieldDef::sequence_of("hist_cate_id", "cate_id"),
    ]
}

/// The next-item rows of Amazon category files: every review is a positive
/// (the reviews of all the listed categories together, per user in
/// (time, asin) order); negatives from every reviewed item the user never
/// reviewed; domains [`AMAZON`].
pub fn amazon(categories: &[CategoryFiles]) -> Result<(TableBuilder, StatsSpec)> {
    let groups = &AMAZON;
    let mut meta = HashMap::new();
    let mut by_user: BTreeMap<String, Vec<(i64, String)>> = BTreeMap::new();
    for cat in categories {
        for (asin, m) in amazon::category_meta(cat)? {
            meta.entry(asin).or_insert(m);
        }
        amazon::for_each_review(&cat.reviews, |r| {
            by_user
                .entry(r.user.to_string())
                .or_default()
                .push((r.time, r.asin.to_string()));
            Ok(())
        })?;
    }
    for list in by_user.values_mut() {
        list.sort();
        // A review line repeated in the files (same time and item) is one positive.
        list.dedup();
    }
    let pool: Vec<&str> = by_user
        .values()
        .flatten()
        .map(|(_, a)| a.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let cate_of = |asin: &str| -> &str {
        meta.get(asin)
            .and_then(|m: &amazon::ItemMeta| m.sub_category.as_deref())
            .unwrap_or("unknown")
    };
    let mut table = TableBuilder::new(amazon_fields(), groups.names.len());
    let mut titles = HashMap::new();
    for (user, list) in &by_user {
        let rated: HashSet<&str> = list.iter().map(|(_, a)| a.as_str()).collect();
        let n = list.len();
        if n < 3 {
            continue; // no train, valid and test target
        }
        let group = groups.of(n - 2);
        for j in 1..n {
            let earlier = &list[j.saturating_sub(MAX_HISTORY)..j];
            let hist_items: Vec<&str> = earlier.iter().rev().map(|(_, a)| a.as_str()).collect();
            let hist_cates: Vec<&str> = hist_items.iter().map(|a| cate_of(a)).collect();
            let Some(neg) = negative(&pool, &rated, user, j) else {
                bail!(
                    "{}: user {user} reviewed every item, so no negative can be drawn for them",
                    categories
                        .iter()
                        .map(|c| c.reviews.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            };
            for (label, asin) in [(1u8, list[j].1.as_str()), (0, neg)] {
                let m = meta.get(asin);
                if let Some(t) = m.and_then(|m| m.title.as_ref()) {
                    titles.entry(asin.to_string()).or_insert_with(|| t.clone());
                }
                table.push_in(
                    Some(split_of(j, n)),
                    fnv1a64(format!("{user}:{j}:{label}").as_bytes()),
                    list[j].0,
                    label,
                    group,
                    &[
                        Value::One(Some(user)),
                        Value::One(Some(asin)),
                        Value::One(m.and_then(|m| m.brand.as_deref())),
                        Value::One(Some(cate_of(asin))),
                        Value::Many(hist_items.clone()),
                        Value::Many(hist_cates.clone()),
                    ],
                )?;
            }
        }
    }
    Ok((table, amazon::stats_spec(titles)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_thresholds() {
        let g = &MOVIELENS;
        assert_eq!([1, 50, 51, 200, 201].map(|l| g.of(l)), [0, 0, 1, 1, 2]);
        assert_eq!([0, 5, 6, 20, 21].map(|l| AMAZON.of(l)), [0, 0, 1, 1, 2]);
    }

    #[test]
    fn negatives_are_unrated_and_reproducible() {
        let pool: Vec<u64> = (1..=10).collect();
        let rated: HashSet<u64> = [1, 2, 3, 4, 5, 6, 7, 8].into_iter().collect();
        let a = negative(&pool, &rated, 7, 3).unwrap();
        assert!(a == 9 || a == 10);
        assert_eq!(negative(&pool, &rated, 7, 3), Some(a));
        let all: HashSet<u64> = pool.iter().copied().collect();
        assert_eq!(negative(&pool, &all, 7, 3), None);
    }
}
