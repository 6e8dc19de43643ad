//! Malformed inputs for every recipe of the data stage.
//!
//! Each case builds a small valid fixture in a temporary directory, corrupts exactly
//! one thing, runs `prepare` with `data.fetch = false` and checks that
//! (a) it returns an error and does not panic,
//! (b) the error names the file and the line (`u.data:3:`), or the row or setting,
//!     and the field where one is involved,
//! (c) nothing is left under the prepared dir: no output directory, no hidden
//!     staging directory.
//!
//! The valid fixtures themselves prepare successfully (one test per recipe).

mod common;

use flate2::Compression;
use flate2::write::GzEncoder;
use llmctr::config::{Config, SourceKind};
use llmctr::stages::prepare::{Prepared, prepare};
use std::collections::BTreeMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use tempfile::TempDir;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A raw directory's files (path relative to `raw_dir` → lines without `\n`), a
/// config pointing at it, and the temporary directory that holds both.
struct Fixture {
    tmp: TempDir,
    cfg: Config,
    /// Files ending in `.gz` are written gzip-compressed.
    files: BTreeMap<String, Vec<Vec<u8>>>,
    /// Files to cut to their first n bytes (as written, compressed or not).
    cut: BTreeMap<String, usize>,
}

fn lines<S: AsRef<str>>(v: &[S]) -> Vec<Vec<u8>> {
    v.iter().map(|s| s.as_ref().as_bytes().to_vec()).collect()
}

/// The (user, item, rating) triples of the MovieLens fixtures: 5 users × 6 items,
/// minus a few, every rating 1–5, every user and item used.
fn ml_ratings() -> Vec<(u32, u32, u32)> {
    let mut out = Vec::new();
    for u in 1..=5u32 {
        for i in 1..=6u32 {
            if (u + i) % 4 != 0 {
                out.push((u, i, (u * i) % 5 + 1));
            }
        }
    }
    out
}

impl Fixture {
    fn new(recipe: &str, files: BTreeMap<String, Vec<Vec<u8>>>) -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut cfg = Config::default();
        cfg.data.recipe = recipe.to_string();
        cfg.data.raw_dir = tmp.path().join("raw");
        cfg.data.prepared_dir = tmp.path().join("prepared");
        cfg.data.models_dir = tmp.path().join("models");
        cfg.data.fetch = false;
        Fixture {
            tmp,
            cfg,
            files,
            cut: BTreeMap::new(),
        }
    }

    /// GroupLens MovieLens-100k: `u.user`, `u.item` (Latin-1, one title with é,
    /// one item without a release date), `u.data`.
    fn ml100k() -> Fixture {
        let users = lines(&[
            "1|24|M|technician|85711",
            "2|53|F|other|94043",
            "3|23|M|writer|32067",
            "4|24|M|technician|43537",
            "5|33|F|other|15213",
        ]);
        let url = "http://us.imdb.com/M/title-exact?x";
        let mut items = lines(&[
            format!("1|Toy Story (1995)|01-Jan-1995||{url}|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0"),
            format!("2|GoldenEye (1995)|01-Jan-1995||{url}|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0"),
            format!("3|Four Rooms (1995)|01-Jan-1995||{url}|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0"),
            format!("4|Get Shorty (1995)|01-Jan-1995||{url}|0|1|0|0|0|1|0|0|1|0|0|0|0|0|0|0|0|0|0"),
        ]);
        // Latin-1 é (0xE9): u.item is not UTF-8 in the original release.
        let mut cafe = b"5|Caf".to_vec();
        cafe.push(0xE9);
        cafe.extend_from_slice(
            format!(" au lait (1993)|01-Jan-1993||{url}|0|0|0|0|0|1|0|0|0|0|0|0|0|0|1|0|0|0|0")
                .as_bytes(),
        );
        items.push(cafe);
        items.push(b"6|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0".to_vec());
        let data: Vec<String> = ml_ratings()
            .iter()
            .enumerate()
            .map(|(k, (u, i, r))| format!("{u}\t{i}\t{r}\t{}", 881_250_949 + k as u64 * 60))
            .collect();
        let mut files = BTreeMap::new();
        files.insert("ml-100k/u.user".to_string(), users);
        files.insert("ml-100k/u.item".to_string(), items);
        files.insert("ml-100k/u.data".to_string(), lines(&data));
        Fixture::new("ml100k-occupation", files)
    }

    /// GroupLens MovieLens-1M: `users.dat`, `movies.dat`, `ratings.dat` (`::`).
    fn ml1m() -> Fixture {
        let users = lines(&[
            "1::F::1::10::48067",
            "2::M::56::16::70072",
            "3::M::25::15::55117",
            "4::M::45::7::02460",
            "5::M::25::20::55455",
        ]);
        let movies = lines(&[
            "1::Toy Story (1995)::Animation|Children's|Comedy",
            "2::Jumanji (1995)::Adventure|Children's|Fantasy",
            "3::Grumpier Old Men (1995)::Comedy|Romance",
            "4::Waiting to Exhale (1995)::Comedy|Drama",
            "5::Father of the Bride Part II (1995)::Comedy",
            "6::Heat (1995)::Action|Crime|Thriller",
        ]);
        let data: Vec<String> = ml_ratings()
            .iter()
            .enumerate()
            .map(|(k, (u, i, r))| format!("{u}::{i}::{r}::{}", 978_300_760 + k as u64 * 60))
            .collect();
        let mut files = BTreeMap::new();
        files.insert("ml-1m/users.dat".to_string(), users);
        files.insert("ml-1m/movies.dat".to_string(), movies);
        files.insert("ml-1m/ratings.dat".to_string(), lines(&data));
        Fixture::new("ml1m-gender", files)
    }

    /// Amazon 2018: two categories; the first has a metadata file, the second not.
    fn amazon() -> Fixture {
        let review = |user: &str, asin: &str, overall: u32, t: u64| {
            format!(
                r#"{{"overall": {overall}.0, "verified": true, "reviewTime": "02 28, 2014", "reviewerID": "{user}", "asin": "{asin}", "reviewerName": "n", "reviewText": "text", "summary": "s", "unixReviewTime": {t}}}"#
            )
        };
        let mut music_instr = Vec::new();
        let mut digital = Vec::new();
        let mut k = 0u64;
        for u in 1..=4u32 {
            for i in 1..=3u32 {
                let overall = (u + i) % 5 + 1;
                music_instr.push(review(
                    &format!("A{u}"),
                    &format!("B00I{i}"),
                    overall,
                    1_393_545_600 + k * 86_400,
                ));
                digital.push(review(
                    &format!("A{u}"),
                    &format!("B00D{i}"),
                    6 - overall,
                    1_393_545_600 + k * 86_400,
                ));
                k += 1;
            }
        }
        let meta = lines(&[
            r#"{"asin": "B00I1", "title": "Guitar strings", "brand": "Fender", "category": ["Musical Instruments", "Guitars"]}"#,
            r#"{"asin": "B00I2", "title": "Drum sticks", "brand": "Vic Firth", "category": ["Musical Instruments", "Drums"]}"#,
            r#"{"asin": "B00I3", "title": "Tuner", "category": []}"#,
        ]);
        let mut files = BTreeMap::new();
        files.insert(
            "amazon/Musical_Instruments_5.json".to_string(),
            lines(&music_instr),
        );
        files.insert("amazon/meta_Musical_Instruments.json".to_string(), meta);
        files.insert("amazon/Digital_Music_5.json".to_string(), lines(&digital));
        Fixture::new("amazon-Musical_Instruments+Digital_Music", files)
    }

    /// Criteo TSV: 40 lines of label, I1–I13 (some empty), C1–C26 (hex, some empty).
    fn criteo() -> Fixture {
        let mut rows = Vec::new();
        for r in 0..40u32 {
            let mut f = vec![if r % 3 == 0 { "1" } else { "0" }.to_string()];
            for j in 0..13u32 {
                f.push(if (r + j) % 7 == 0 {
                    String::new()
                } else {
                    ((r * (j + 1)) % 50).to_string()
                });
            }
            for j in 0..26u32 {
                f.push(if (r + j) % 11 == 0 {
                    String::new()
                } else {
                    format!("{:08x}", (r % (j + 2)) * 0x1f3d_5b79 + j)
                });
            }
            rows.push(f.join("\t"));
        }
        let mut files = BTreeMap::new();
        files.insert("criteo/train.txt".to_string(), lines(&rows));
        Fixture::new("criteo", files)
    }

    fn raw(&self) -> PathBuf {
        self.cfg.data.raw_dir.clone()
    }

    fn file_mut(&mut self, file: &str) -> &mut Vec<Vec<u8>> {
        self.files
            .get_mut(file)
            .unwrap_or_else(|| panic!("fixture has no file {file}"))
    }

    /// Line `n` (1-based) of `file`, as text.
    fn line(&self, file: &str, n: usize) -> String {
        String::from_utf8_lossy(&self.files[file][n - 1]).into_owned()
    }

    /// Replace line `n` (1-based) of `file`.
    fn set(&mut self, file: &str, n: usize, bytes: impl Into<Vec<u8>>) -> &mut Self {
        let v = self.file_mut(file);
        assert!(n >= 1 && n <= v.len(), "{file} has no line {n}");
        v[n - 1] = bytes.into();
        self
    }

    /// Insert a line so that it becomes line `n` (1-based) of `file`.
    fn insert(&mut self, file: &str, n: usize, bytes: impl Into<Vec<u8>>) -> &mut Self {
        self.file_mut(file).insert(n - 1, bytes.into());
        self
    }

    /// Replace the first occurrence of `from` in line `n` of `file`.
    fn edit(&mut self, file: &str, n: usize, from: &str, to: &str) -> &mut Self {
        let old = self.line(file, n);
        assert!(old.contains(from), "{file}:{n} {old:?} has no {from:?}");
        let new = old.replacen(from, to, 1);
        self.set(file, n, new)
    }

    fn remove(&mut self, file: &str) -> &mut Self {
        assert!(self.files.remove(file).is_some(), "no file {file}");
        self
    }

    /// Rename `file` to `file.gz` (written compressed); the new name.
    fn gzip(&mut self, file: &str) -> String {
        let lines = self.files.remove(file).expect("no such file");
        let gz = format!("{file}.gz");
        self.files.insert(gz.clone(), lines);
        gz
    }

    /// A file's bytes as written.
    fn bytes(&self, rel: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        for l in &self.files[rel] {
            bytes.extend_from_slice(l);
            bytes.push(b'\n');
        }
        if rel.ends_with(".gz") {
            use std::io::Write;
            let mut enc = GzEncoder::new(Vec::new(), Compression::default());
            enc.write_all(&bytes).unwrap();
            bytes = enc.finish().unwrap();
        }
        if let Some(&n) = self.cut.get(rel) {
            bytes.truncate(n);
        }
        bytes
    }

    fn write(&self) {
        for rel in self.files.keys() {
            let p = self.raw().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, self.bytes(rel)).unwrap();
        }
    }

    /// Write the files and run the stage, turning a panic into a test failure.
    fn run(&self) -> anyhow::Result<Prepared> {
        self.write();
        let cfg = self.cfg.clone();
        match catch_unwind(AssertUnwindSafe(|| prepare(&cfg, false))) {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("prepare panicked instead of returning an error: {msg}")
            }
        }
    }

    /// Run, expect an error, check that nothing is left behind; the error text.
    fn fails(&self) -> String {
        let err = match self.run() {
            Ok(p) => panic!(
                "prepare succeeded on bad input (wrote {}); expected an error",
                p.dir.display()
            ),
            Err(e) => format!("{e:#}"),
        };
        assert_nothing_left(&self.cfg.data.prepared_dir, &err);
        err
    }

    fn succeeds(&self) -> Prepared {
        match self.run() {
            Ok(p) => p,
            Err(e) => panic!("the valid fixture does not prepare: {e:#}"),
        }
    }
}

/// No output directory and no hidden staging directory under the prepared dir.
fn assert_nothing_left(prepared: &Path, err: &str) {
    if !prepared.exists() {
        return;
    }
    let left: Vec<String> = fs::read_dir(prepared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "a failed prepare left {left:?} in {}; error was: {err}",
        prepared.display()
    );
}

/// The error names `file:line:` (the place) and, when given, the field as `` `field` ``.
#[track_caller]
fn assert_place(err: &str, file: &str, line: usize, field: Option<&str>) {
    let place = format!("{file}:{line}:");
    assert!(err.contains(&place), "error does not name {place}: {err}");
    if let Some(field) = field {
        let f = format!("`{field}`");
        assert!(err.contains(&f), "error does not name the field {f}: {err}");
    }
}

#[track_caller]
fn assert_has(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error does not mention {p:?}: {err}");
    }
}

fn non_utf8(prefix: &str, suffix: &str) -> Vec<u8> {
    let mut v = prefix.as_bytes().to_vec();
    v.extend_from_slice(&[0xFF, 0xFE]);
    v.extend_from_slice(suffix.as_bytes());
    v
}

const U_DATA: &str = "ml-100k/u.data";
const U_USER: &str = "ml-100k/u.user";
const U_ITEM: &str = "ml-100k/u.item";
const RATINGS: &str = "ml-1m/ratings.dat";
const USERS: &str = "ml-1m/users.dat";
const MOVIES: &str = "ml-1m/movies.dat";
const MI: &str = "amazon/Musical_Instruments_5.json";
const MI_META: &str = "amazon/meta_Musical_Instruments.json";
const DM: &str = "amazon/Digital_Music_5.json";
const CRITEO: &str = "criteo/train.txt";

// ---------------------------------------------------------------------------
// The valid fixtures prepare
// ---------------------------------------------------------------------------

#[test]
fn valid_ml100k_fixture_prepares() {
    let fx = Fixture::ml100k();
    let p = fx.succeeds();
    let m = &p.meta;
    let rows = m.splits.train.rows + m.splits.valid.rows + m.splits.test.rows;
    assert_eq!(rows as usize, ml_ratings().len());
    assert!(p.dir.join("meta.json").is_file());
    // Only the output directory, no staging left beside it.
    let entries: Vec<_> = fs::read_dir(&fx.cfg.data.prepared_dir).unwrap().collect();
    assert_eq!(entries.len(), 1);
}

#[test]
fn valid_ml100k_fixture_prepares_with_explicit_grouplens_source() {
    let mut fx = Fixture::ml100k();
    fx.cfg.data.source = SourceKind::Grouplens;
    fx.cfg.data.recipe = "ml100k-age3".into();
    fx.succeeds();
}

#[test]
fn valid_ml1m_fixture_prepares() {
    let fx = Fixture::ml1m();
    let p = fx.succeeds();
    let m = &p.meta;
    let rows = m.splits.train.rows + m.splits.valid.rows + m.splits.test.rows;
    assert_eq!(rows as usize, ml_ratings().len());
}

#[test]
fn valid_amazon_fixture_prepares() {
    let fx = Fixture::amazon();
    let p = fx.succeeds();
    let m = &p.meta;
    let rows = m.splits.train.rows + m.splits.valid.rows + m.splits.test.rows;
    assert_eq!(rows, 24);
    assert_eq!(m.domains.len(), 2);
}

#[test]
fn valid_criteo_fixture_prepares() {
    let fx = Fixture::criteo();
    let p = fx.succeeds();
    let m = &p.meta;
    let rows = m.splits.train.rows + m.splits.valid.rows + m.splits.test.rows;
    assert_eq!(rows, 40);
    assert_eq!(m.fields.len(), 39);
}

// ---------------------------------------------------------------------------
// MovieLens-100k: u.data
// ---------------------------------------------------------------------------

#[test]
fn ml100k_u_data_wrong_field_count() {
    let mut fx = Fixture::ml100k();
    fx.set(U_DATA, 3, "1\t3\t4");
    let e = fx.fails();
    assert_place(&e, "u.data", 3, None);
    assert_has(&e, &["expected 4 fields", "found 3"]);
}

#[test]
fn ml100k_u_data_negative_timestamp() {
    let mut fx = Fixture::ml100k();
    let l = fx.line(U_DATA, 4);
    let f: Vec<&str> = l.split('\t').collect();
    fx.set(U_DATA, 4, format!("{}\t{}\t{}\t-5", f[0], f[1], f[2]));
    let e = fx.fails();
    assert_place(&e, "u.data", 4, Some("timestamp"));
    assert_has(&e, &["negative timestamp -5"]);
}

#[test]
fn ml100k_u_data_commas_instead_of_tabs() {
    let mut fx = Fixture::ml100k();
    let l = fx.line(U_DATA, 2).replace('\t', ",");
    fx.set(U_DATA, 2, l);
    let e = fx.fails();
    assert_place(&e, "u.data", 2, None);
    assert_has(&e, &["expected 4 fields", "\\t"]);
}

#[test]
fn ml100k_u_data_empty_line_in_the_middle() {
    let mut fx = Fixture::ml100k();
    fx.insert(U_DATA, 5, "");
    let e = fx.fails();
    assert_place(&e, "u.data", 5, None);
    assert_has(&e, &["empty line"]);
}

#[test]
fn ml100k_u_data_non_utf8_bytes() {
    let mut fx = Fixture::ml100k();
    fx.set(U_DATA, 4, non_utf8("1\t", "\t3\t881250949"));
    let e = fx.fails();
    assert_place(&e, "u.data", 4, None);
    assert_has(&e, &["UTF-8"]);
}

#[test]
fn ml100k_u_data_non_integer_user_id() {
    let mut fx = Fixture::ml100k();
    fx.set(U_DATA, 3, "abc\t3\t4\t881250949");
    let e = fx.fails();
    assert_place(&e, "u.data", 3, Some("user_id"));
    assert_has(&e, &["\"abc\""]);
}

#[test]
fn ml100k_u_data_negative_item_id() {
    let mut fx = Fixture::ml100k();
    fx.set(U_DATA, 6, "2\t-3\t4\t881250949");
    let e = fx.fails();
    assert_place(&e, "u.data", 6, Some("item_id"));
    assert_has(&e, &["\"-3\""]);
}

#[test]
fn ml100k_u_data_rating_zero() {
    let mut fx = Fixture::ml100k();
    fx.set(U_DATA, 2, "1\t2\t0\t881250949");
    let e = fx.fails();
    assert_place(&e, "u.data", 2, Some("rating"));
    assert_has(&e, &["1..=5"]);
}

#[test]
fn ml100k_u_data_rating_six() {
    let mut fx = Fixture::ml100k();
    fx.set(U_DATA, 7, "2\t4\t6\t881250949");
    let e = fx.fails();
    assert_place(&e, "u.data", 7, Some("rating"));
    assert_has(&e, &["6", "1..=5"]);
}

#[test]
fn ml100k_u_data_non_integer_timestamp() {
    let mut fx = Fixture::ml100k();
    fx.set(U_DATA, 3, "1\t4\t3\t2001-01-01");
    let e = fx.fails();
    assert_place(&e, "u.data", 3, Some("timestamp"));
}

#[test]
fn ml100k_u_data_unknown_user() {
    let mut fx = Fixture::ml100k();
    fx.set(U_DATA, 8, "99\t1\t4\t881250949");
    let e = fx.fails();
    assert_place(&e, "u.data", 8, Some("user_id"));
    assert_has(&e, &["99"]);
}

#[test]
fn ml100k_u_data_unknown_item() {
    let mut fx = Fixture::ml100k();
    fx.set(U_DATA, 9, "2\t777\t4\t881250949");
    let e = fx.fails();
    assert_place(&e, "u.data", 9, Some("item_id"));
    assert_has(&e, &["777"]);
}

// ---------------------------------------------------------------------------
// MovieLens-100k: u.user
// ---------------------------------------------------------------------------

#[test]
fn ml100k_u_user_missing_column() {
    let mut fx = Fixture::ml100k();
    fx.set(U_USER, 2, "2|53|F|94043");
    let e = fx.fails();
    assert_place(&e, "u.user", 2, None);
    assert_has(&e, &["expected 5 fields", "found 4"]);
}

#[test]
fn ml100k_u_user_non_utf8_bytes() {
    let mut fx = Fixture::ml100k();
    fx.set(U_USER, 3, non_utf8("3|23|M|writer|32", "067"));
    let e = fx.fails();
    assert_place(&e, "u.user", 3, None);
    assert_has(&e, &["UTF-8"]);
}

#[test]
fn ml100k_u_user_gender_not_m_or_f() {
    let mut fx = Fixture::ml100k();
    fx.edit(U_USER, 4, "|M|", "|X|");
    let e = fx.fails();
    assert_place(&e, "u.user", 4, Some("gender"));
    assert_has(&e, &["\"X\""]);
}

#[test]
fn ml100k_u_user_unknown_occupation() {
    let mut fx = Fixture::ml100k();
    fx.edit(U_USER, 2, "other", "astronaut");
    let e = fx.fails();
    assert_place(&e, "u.user", 2, Some("occupation"));
    assert_has(&e, &["astronaut"]);
}

#[test]
fn ml100k_u_user_duplicate_user_id() {
    let mut fx = Fixture::ml100k();
    fx.set(U_USER, 4, "2|24|M|technician|43537");
    let e = fx.fails();
    assert_place(&e, "u.user", 4, Some("user_id"));
    assert_has(&e, &["duplicate"]);
}

#[test]
fn ml100k_u_user_non_integer_age() {
    let mut fx = Fixture::ml100k();
    fx.set(U_USER, 5, "5|thirty|F|other|15213");
    let e = fx.fails();
    assert_place(&e, "u.user", 5, Some("age"));
}

#[test]
fn ml100k_u_user_negative_user_id() {
    let mut fx = Fixture::ml100k();
    fx.set(U_USER, 1, "-1|24|M|technician|85711");
    let e = fx.fails();
    assert_place(&e, "u.user", 1, Some("user_id"));
}

// ---------------------------------------------------------------------------
// MovieLens-100k: u.item
// ---------------------------------------------------------------------------

#[test]
fn ml100k_u_item_genre_flag_not_0_or_1() {
    let mut fx = Fixture::ml100k();
    // Item 2: flags start after the 5 leading fields; make Action (2nd flag) "2".
    let l = fx.line(U_ITEM, 2);
    let mut f: Vec<&str> = l.split('|').collect();
    f[6] = "2";
    let l = f.join("|");
    fx.set(U_ITEM, 2, l);
    let e = fx.fails();
    assert_place(&e, "u.item", 2, Some("Action"));
    assert_has(&e, &["0 or 1"]);
}

/// The genre recipes take the domain from the item's first genre: an item
/// with no genre flag set has none, and the rating that needs it says so.
#[test]
fn ml100k_genre_item_without_a_genre() {
    let mut fx = Fixture::ml100k();
    fx.cfg.data.recipe = "ml100k-genre".into();
    fx.succeeds();
    let mut fx = Fixture::ml100k();
    fx.cfg.data.recipe = "ml100k-genre".into();
    let l = fx.line(U_ITEM, 1);
    let mut f: Vec<&str> = l.split('|').collect();
    for flag in &mut f[5..] {
        *flag = "0";
    }
    let l = f.join("|");
    fx.set(U_ITEM, 1, l);
    let e = fx.fails();
    // u.data line 1 is user 1's rating of item 1.
    assert_place(&e, "u.data", 1, Some("item_id"));
    assert_has(&e, &["item 1 has no genre"]);
}

#[test]
fn ml100k_u_item_bad_release_date() {
    let mut fx = Fixture::ml100k();
    fx.edit(U_ITEM, 3, "01-Jan-1995", "Jan 1st, 95");
    let e = fx.fails();
    assert_place(&e, "u.item", 3, Some("release_date"));
}

#[test]
fn ml100k_u_item_wrong_field_count() {
    let mut fx = Fixture::ml100k();
    // Drop the last genre flag (Western).
    let l = fx.line(U_ITEM, 4);
    let l = l[..l.rfind('|').unwrap()].to_string();
    fx.set(U_ITEM, 4, l);
    let e = fx.fails();
    assert_place(&e, "u.item", 4, None);
    assert_has(&e, &["expected 24 fields", "found 23"]);
}

#[test]
fn ml100k_u_item_duplicate_movie_id() {
    let mut fx = Fixture::ml100k();
    fx.edit(U_ITEM, 4, "4|Get Shorty", "1|Get Shorty");
    let e = fx.fails();
    assert_place(&e, "u.item", 4, Some("movie_id"));
    assert_has(&e, &["duplicate"]);
}

#[test]
fn ml100k_u_item_non_integer_movie_id() {
    let mut fx = Fixture::ml100k();
    fx.edit(U_ITEM, 1, "1|Toy", "one|Toy");
    let e = fx.fails();
    assert_place(&e, "u.item", 1, Some("movie_id"));
}

// ---------------------------------------------------------------------------
// MovieLens-100k: missing files
// ---------------------------------------------------------------------------

#[test]
fn ml100k_missing_u_item_with_grouplens_source_has_hint() {
    let mut fx = Fixture::ml100k();
    fx.cfg.data.source = SourceKind::Grouplens;
    fx.remove(U_ITEM);
    let e = fx.fails();
    let path = fx.raw().join(U_ITEM);
    assert_has(
        &e,
        &[
            &format!("missing input file {}", path.display()),
            "ml-100k.zip",
            "pipeline data fetch ml100k",
        ],
    );
}

#[test]
fn ml100k_missing_u_item_with_auto_source_names_u_item() {
    // Default source (`auto`): u.data and u.user are there, u.item is not. The
    // error should say that u.item is missing, not that a parquet file is.
    let mut fx = Fixture::ml100k();
    assert_eq!(fx.cfg.data.source, SourceKind::Auto);
    fx.remove(U_ITEM);
    let e = fx.fails();
    let path = fx.raw().join(U_ITEM);
    assert_has(
        &e,
        &[
            &format!("missing input file {}", path.display()),
            "ml-100k.zip",
        ],
    );
}

#[test]
fn ml100k_missing_folder_without_fetch_has_hint() {
    let mut fx = Fixture::ml100k();
    fx.files.clear();
    let e = fx.fails();
    assert_has(
        &e,
        &[
            "missing input file",
            "ml-100k",
            "pipeline data fetch ml100k",
        ],
    );
    // Nothing was fetched: fetch = false.
    assert!(!fx.tmp.path().join("models").exists());
}

// ---------------------------------------------------------------------------
// MovieLens-1M
// ---------------------------------------------------------------------------

#[test]
fn ml1m_ratings_tabs_instead_of_double_colons() {
    let mut fx = Fixture::ml1m();
    let l = fx.line(RATINGS, 3).replace("::", "\t");
    fx.set(RATINGS, 3, l);
    let e = fx.fails();
    assert_place(&e, "ratings.dat", 3, None);
    assert_has(&e, &["expected 4 fields", "'::'"]);
}

#[test]
fn ml1m_ratings_rating_six() {
    let mut fx = Fixture::ml1m();
    fx.set(RATINGS, 2, "1::2::6::978300760");
    let e = fx.fails();
    // The column of ratings.dat is Rating, as in the parse error of the same field.
    assert_place(&e, "ratings.dat", 2, Some("Rating"));
}

#[test]
fn ml1m_ratings_unknown_movie() {
    let mut fx = Fixture::ml1m();
    fx.set(RATINGS, 4, "1::1193::5::978300760");
    let e = fx.fails();
    // The column of ratings.dat is MovieID (README of ml-1m), as in the other errors.
    assert_place(&e, "ratings.dat", 4, Some("MovieID"));
    assert_has(&e, &["1193"]);
}

#[test]
fn ml1m_ratings_empty_line_in_the_middle() {
    let mut fx = Fixture::ml1m();
    fx.insert(RATINGS, 6, "");
    let e = fx.fails();
    assert_place(&e, "ratings.dat", 6, None);
    assert_has(&e, &["empty line"]);
}

#[test]
fn ml1m_users_age_code_not_in_set() {
    let mut fx = Fixture::ml1m();
    fx.set(USERS, 3, "3::M::30::15::55117");
    let e = fx.fails();
    assert_place(&e, "users.dat", 3, Some("Age"));
    assert_has(&e, &["\"30\""]);
}

#[test]
fn ml1m_users_occupation_code_21() {
    let mut fx = Fixture::ml1m();
    fx.set(USERS, 2, "2::M::56::21::70072");
    let e = fx.fails();
    assert_place(&e, "users.dat", 2, Some("Occupation"));
    assert_has(&e, &["21"]);
}

#[test]
fn ml1m_users_gender_lowercase() {
    let mut fx = Fixture::ml1m();
    fx.set(USERS, 5, "5::m::25::20::55455");
    let e = fx.fails();
    // The column of users.dat is Gender (README of ml-1m), as UserID, Age, Occupation.
    assert_place(&e, "users.dat", 5, Some("Gender"));
}

#[test]
fn ml1m_users_duplicate_user_id() {
    let mut fx = Fixture::ml1m();
    fx.set(USERS, 5, "1::M::25::20::55455");
    let e = fx.fails();
    assert_place(&e, "users.dat", 5, Some("UserID"));
    assert_has(&e, &["duplicate"]);
}

#[test]
fn ml1m_movies_unknown_genre() {
    let mut fx = Fixture::ml1m();
    fx.edit(MOVIES, 3, "Comedy|Romance", "Comedy|Romcom");
    let e = fx.fails();
    assert_place(&e, "movies.dat", 3, Some("Genres"));
    assert_has(&e, &["Romcom"]);
}

#[test]
fn ml1m_missing_movies_dat_has_hint() {
    let mut fx = Fixture::ml1m();
    fx.remove(MOVIES);
    let e = fx.fails();
    let path = fx.raw().join(MOVIES);
    assert_has(
        &e,
        &[
            &format!("missing input file {}", path.display()),
            "ml-1m.zip",
        ],
    );
}

// ---------------------------------------------------------------------------
// Amazon
// ---------------------------------------------------------------------------

#[test]
fn amazon_invalid_json() {
    let mut fx = Fixture::amazon();
    let l = fx.line(MI, 3);
    let l = l.trim_end_matches('}').to_string();
    fx.set(MI, 3, l);
    let e = fx.fails();
    assert_place(&e, "Musical_Instruments_5.json", 3, None);
    assert_has(&e, &["JSON"]);
}

#[test]
fn amazon_non_utf8_bytes() {
    let mut fx = Fixture::amazon();
    fx.set(
        DM,
        2,
        non_utf8(
            r#"{"overall": 5.0, "reviewerID": "A1", "asin": "B00D2", "reviewText": ""#,
            r#"", "unixReviewTime": 1393545600}"#,
        ),
    );
    let e = fx.fails();
    assert_place(&e, "Digital_Music_5.json", 2, None);
    assert_has(&e, &["UTF-8"]);
}

#[test]
fn amazon_empty_line_in_the_middle() {
    let mut fx = Fixture::amazon();
    fx.insert(MI, 4, "");
    let e = fx.fails();
    assert_place(&e, "Musical_Instruments_5.json", 4, None);
}

#[test]
fn amazon_line_is_not_an_object() {
    let mut fx = Fixture::amazon();
    fx.set(MI, 2, r#"["A1", "B00I2", 5.0, 1393545600]"#);
    let e = fx.fails();
    assert_place(&e, "Musical_Instruments_5.json", 2, None);
    assert_has(&e, &["object"]);
}

#[test]
fn amazon_missing_asin() {
    let mut fx = Fixture::amazon();
    fx.edit(MI, 5, r#""asin": "B00I2", "#, "");
    let e = fx.fails();
    assert_place(&e, "Musical_Instruments_5.json", 5, Some("asin"));
    assert_has(&e, &["missing"]);
}

#[test]
fn amazon_missing_reviewer_id() {
    let mut fx = Fixture::amazon();
    fx.edit(DM, 7, r#""reviewerID": "A3", "#, "");
    let e = fx.fails();
    assert_place(&e, "Digital_Music_5.json", 7, Some("reviewerID"));
}

#[test]
fn amazon_overall_as_string() {
    let mut fx = Fixture::amazon();
    let l = fx.line(MI, 2);
    let start = l.find("\"overall\": ").unwrap() + "\"overall\": ".len();
    let end = start + l[start..].find(',').unwrap();
    let l = format!("{}\"{}\"{}", &l[..start], &l[start..end], &l[end..]);
    fx.set(MI, 2, l);
    let e = fx.fails();
    assert_place(&e, "Musical_Instruments_5.json", 2, Some("overall"));
    assert_has(&e, &["expected a number"]);
}

#[test]
fn amazon_overall_out_of_range_high() {
    let mut fx = Fixture::amazon();
    let l = fx.line(DM, 6);
    let start = l.find("\"overall\": ").unwrap() + "\"overall\": ".len();
    let end = start + l[start..].find(',').unwrap();
    let l = format!("{}7.5{}", &l[..start], &l[end..]);
    fx.set(DM, 6, l);
    let e = fx.fails();
    assert_place(&e, "Digital_Music_5.json", 6, Some("overall"));
    assert_has(&e, &["7.5"]);
}

#[test]
fn amazon_overall_zero() {
    let mut fx = Fixture::amazon();
    let l = fx.line(MI, 8);
    let start = l.find("\"overall\": ").unwrap() + "\"overall\": ".len();
    let end = start + l[start..].find(',').unwrap();
    let l = format!("{}0{}", &l[..start], &l[end..]);
    fx.set(MI, 8, l);
    let e = fx.fails();
    assert_place(&e, "Musical_Instruments_5.json", 8, Some("overall"));
}

#[test]
fn amazon_missing_unix_review_time() {
    let mut fx = Fixture::amazon();
    let l = fx.line(MI, 4);
    let cut = l.find(", \"unixReviewTime\"").unwrap();
    let l = format!("{}}}", &l[..cut]);
    fx.set(MI, 4, l);
    let e = fx.fails();
    assert_place(&e, "Musical_Instruments_5.json", 4, Some("unixReviewTime"));
    assert_has(&e, &["missing"]);
}

#[test]
fn amazon_unix_review_time_as_string() {
    let mut fx = Fixture::amazon();
    let l = fx.line(DM, 3);
    let start = l.find("\"unixReviewTime\": ").unwrap() + "\"unixReviewTime\": ".len();
    let end = l.rfind('}').unwrap();
    let l = format!("{}\"{}\"}}", &l[..start], &l[start..end]);
    fx.set(DM, 3, l);
    let e = fx.fails();
    assert_place(&e, "Digital_Music_5.json", 3, Some("unixReviewTime"));
}

#[test]
fn amazon_meta_category_not_a_list() {
    let mut fx = Fixture::amazon();
    fx.edit(
        MI_META,
        2,
        r#"["Musical Instruments", "Drums"]"#,
        r#""Musical Instruments > Drums""#,
    );
    let e = fx.fails();
    assert_place(&e, "meta_Musical_Instruments.json", 2, Some("category"));
    assert_has(&e, &["list"]);
}

#[test]
fn amazon_meta_invalid_json() {
    let mut fx = Fixture::amazon();
    fx.edit(MI_META, 3, r#""title": "Tuner""#, r#"'title': 'Tuner'"#);
    let e = fx.fails();
    assert_place(&e, "meta_Musical_Instruments.json", 3, None);
    assert_has(&e, &["JSON"]);
}

#[test]
fn amazon_meta_missing_asin() {
    let mut fx = Fixture::amazon();
    fx.edit(MI_META, 1, r#""asin": "B00I1", "#, "");
    let e = fx.fails();
    assert_place(&e, "meta_Musical_Instruments.json", 1, Some("asin"));
}

#[test]
fn amazon_missing_category_file_has_hint() {
    let mut fx = Fixture::amazon();
    fx.remove(DM);
    let e = fx.fails();
    assert_has(
        &e,
        &[
            "missing input file",
            "Digital_Music_5.json",
            "Amazon Reviews 2018",
        ],
    );
}

// ---------------------------------------------------------------------------
// Criteo
// ---------------------------------------------------------------------------

#[test]
fn criteo_39_fields() {
    let mut fx = Fixture::criteo();
    let l = fx.line(CRITEO, 3);
    let l = l[..l.rfind('\t').unwrap()].to_string();
    fx.set(CRITEO, 3, l);
    let e = fx.fails();
    assert_place(&e, "train.txt", 3, None);
    assert_has(&e, &["expected 40", "found 39"]);
}

#[test]
fn criteo_commas_instead_of_tabs() {
    let mut fx = Fixture::criteo();
    let l = fx.line(CRITEO, 1).replace('\t', ",");
    fx.set(CRITEO, 1, l);
    let e = fx.fails();
    assert_place(&e, "train.txt", 1, None);
    assert_has(&e, &["expected 40", "found 1"]);
}

#[test]
fn criteo_label_2() {
    let mut fx = Fixture::criteo();
    let l = fx.line(CRITEO, 5);
    let l = format!("2{}", &l[1..]);
    fx.set(CRITEO, 5, l);
    let e = fx.fails();
    assert_place(&e, "train.txt", 5, Some("label"));
    assert_has(&e, &["\"2\""]);
}

#[test]
fn criteo_non_integer_int_field() {
    let mut fx = Fixture::criteo();
    let l = fx.line(CRITEO, 4);
    let mut f: Vec<&str> = l.split('\t').collect();
    f[3] = "1.5"; // I3
    let l = f.join("\t");
    fx.set(CRITEO, 4, l);
    let e = fx.fails();
    assert_place(&e, "train.txt", 4, Some("I3"));
    assert_has(&e, &["\"1.5\""]);
}

#[test]
fn criteo_non_utf8_bytes() {
    let mut fx = Fixture::criteo();
    let l = fx.line(CRITEO, 6);
    let (head, tail) = l.split_at(l.rfind('\t').unwrap() + 1);
    fx.set(CRITEO, 6, non_utf8(head, tail));
    let e = fx.fails();
    assert_place(&e, "train.txt", 6, None);
    assert_has(&e, &["UTF-8"]);
}

#[test]
fn criteo_empty_line_in_the_middle() {
    let mut fx = Fixture::criteo();
    fx.insert(CRITEO, 10, "");
    let e = fx.fails();
    assert_place(&e, "train.txt", 10, None);
}

#[test]
fn criteo_unknown_domain_field_in_config() {
    let mut fx = Fixture::criteo();
    fx.cfg.data.criteo.domain_field = "C27".into();
    let e = fx.fails();
    assert_has(&e, &["domain_field", "\"C27\"", "C1-C26"]);
}

#[test]
fn criteo_empty_file() {
    let mut fx = Fixture::criteo();
    fx.file_mut(CRITEO).clear();
    let e = fx.fails();
    assert_has(&e, &["train.txt", "no data lines"]);
}

#[test]
fn criteo_missing_file_has_hint() {
    let mut fx = Fixture::criteo();
    fx.remove(CRITEO);
    let e = fx.fails();
    let path = fx.raw().join(CRITEO);
    assert_has(
        &e,
        &[
            &format!("missing input file {}", path.display()),
            "data.criteo.file",
        ],
    );
}

#[test]
fn criteo_configured_file_missing_has_hint() {
    let mut fx = Fixture::criteo();
    let other = fx.tmp.path().join("elsewhere/day_0.txt");
    fx.cfg.data.criteo.file = Some(other.clone());
    let e = fx.fails();
    assert_has(
        &e,
        &[
            &format!("missing input file {}", other.display()),
            "data.criteo.file",
        ],
    );
}

// ---------------------------------------------------------------------------
// Config and recipe name
// ---------------------------------------------------------------------------

fn load_config(text: &str) -> (TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.toml");
    fs::write(&p, text).unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| Config::load(Some(&p))))
        .unwrap_or_else(|_| panic!("Config::load panicked"));
    match r {
        Ok(c) => panic!("config loaded despite the error: {c:?}"),
        Err(e) => (tmp, format!("{e:#}")),
    }
}

#[test]
fn config_unknown_key() {
    let (_t, e) = load_config("[data]\nrecipe = \"criteo\"\nfecth = false\n");
    assert_has(&e, &["bad.toml", "fecth", "line 3"]);
}

#[test]
fn config_unknown_key_in_criteo_section() {
    let (_t, e) =
        load_config("[data]\nrecipe = \"criteo\"\n\n[data.criteo]\ndomain_feild = \"C6\"\n");
    assert_has(&e, &["bad.toml", "domain_feild", "line 5"]);
}

#[test]
fn config_wrong_type() {
    let (_t, e) = load_config("[data]\nrecipe = \"ml1m-age3\"\nfetch = \"no\"\n");
    assert_has(&e, &["bad.toml", "fetch", "line 3"]);
}

#[test]
fn config_wrong_type_in_criteo_section() {
    let (_t, e) = load_config("[data.criteo]\ntop_domains = -3\n");
    assert_has(&e, &["bad.toml", "top_domains", "line 2"]);
}

#[test]
fn unknown_recipe_name() {
    let mut fx = Fixture::ml100k();
    fx.cfg.data.recipe = "ml100k-zipcode".into();
    let e = fx.fails();
    assert_has(
        &e,
        &["unknown recipe", "ml100k-zipcode", "ml100k-occupation"],
    );
}

// ---------------------------------------------------------------------------
// Properties over every text input of every recipe: a byte-order mark and CRLF
// line ends change nothing; an empty file (or one of only a byte-order mark and
// blank lines) is an error naming it; a cut file is an error naming it; a plain
// and a gzipped copy side by side are ambiguous.
// ---------------------------------------------------------------------------

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Makes a valid fixture.
type Make = fn() -> Fixture;

/// Every recipe's valid fixture.
fn fixtures() -> [(&'static str, Make); 4] {
    [
        ("ml100k", Fixture::ml100k),
        ("ml1m", Fixture::ml1m),
        ("amazon", Fixture::amazon),
        ("criteo", Fixture::criteo),
    ]
}

/// Whether the recipe also finds `<file>.gz` in place of `<file>`.
fn takes_gz(file: &str) -> bool {
    file.starts_with("amazon/") || file.starts_with("criteo/")
}

/// Each input file of the fixture made by `make`: as it is, and gzipped where the
/// recipe takes that. Calls `check(fixture, file)` on a fresh fixture for each.
fn for_each_input(make: Make, mut check: impl FnMut(Fixture, &str)) {
    for file in make().files.keys() {
        for gz in [false, true] {
            if gz && !takes_gz(file) {
                continue;
            }
            let mut fx = make();
            let name = if gz { fx.gzip(file) } else { file.clone() };
            check(fx, &name);
        }
    }
}

fn dataset_or_error(fx: &Fixture, what: &str) -> Vec<(String, Vec<u8>)> {
    match fx.run() {
        Ok(p) => common::dataset_files(&p.dir),
        Err(e) => panic!("{what}: {e:#}"),
    }
}

#[test]
fn bom_and_crlf_give_the_same_dataset_for_every_input() {
    for (name, make) in fixtures() {
        let want = dataset_or_error(&make(), name);
        for (bom, crlf) in [(true, false), (false, true), (true, true)] {
            let edit = |fx: &mut Fixture, file: &str| {
                let lines = fx.file_mut(file);
                if crlf {
                    lines.iter_mut().for_each(|l| l.push(b'\r'));
                }
                if bom {
                    lines[0].splice(0..0, BOM.iter().copied());
                }
            };
            for_each_input(make, |mut fx, file| {
                edit(&mut fx, file);
                let what = format!("{file} with bom={bom} crlf={crlf}");
                assert!(dataset_or_error(&fx, &what) == want, "{what}: other output");
            });
            let mut fx = make();
            let files: Vec<String> = fx.files.keys().cloned().collect();
            files.iter().for_each(|f| edit(&mut fx, f));
            let what = format!("{name}: every file with bom={bom} crlf={crlf}");
            assert!(dataset_or_error(&fx, &what) == want, "{what}: other output");
        }
    }
}

#[test]
fn an_empty_input_is_an_error_naming_it() {
    let empties: [Vec<Vec<u8>>; 5] = [
        vec![],
        vec![BOM.to_vec()],
        vec![b"".to_vec(), b"".to_vec()],
        vec![b"  ".to_vec(), b"\t".to_vec(), b"".to_vec()],
        vec![[BOM, b"\r"].concat(), b"\r".to_vec()],
    ];
    for (_, make) in fixtures() {
        for content in &empties {
            for_each_input(make, |mut fx, file| {
                *fx.file_mut(file) = content.clone();
                let e = fx.fails();
                let path = fx.raw().join(file);
                assert_has(&e, &[&format!("{}: no data lines", path.display())]);
            });
        }
    }
}

#[test]
fn a_cut_input_is_an_error_naming_it() {
    for (_, make) in fixtures() {
        for_each_input(make, |fx, file| {
            if !takes_gz(file) {
                // A MovieLens line cut inside its last field can still be valid.
                return;
            }
            let len = fx.bytes(file).len();
            let cuts = if file.ends_with(".gz") {
                // In the header, in the compressed data, in the trailer.
                vec![5, len / 2, len - 4]
            } else {
                // Half of the last line.
                let last = fx.files[file].last().unwrap().len();
                vec![len - 1 - last / 2]
            };
            for cut in cuts {
                let mut fx = Fixture {
                    tmp: tempfile::tempdir().unwrap(),
                    cfg: fx.cfg.clone(),
                    files: fx.files.clone(),
                    cut: BTreeMap::from([(file.to_string(), cut)]),
                };
                fx.cfg.data.raw_dir = fx.tmp.path().join("raw");
                fx.cfg.data.prepared_dir = fx.tmp.path().join("prepared");
                let e = fx.fails();
                let base = Path::new(file).file_name().unwrap().to_string_lossy();
                if file.ends_with(".gz") {
                    assert_has(&e, &[&base]);
                } else {
                    assert_place(&e, &base, fx.files[file].len(), None);
                }
            }
        });
    }
}

#[test]
fn plain_and_gzipped_copies_of_one_input_are_ambiguous() {
    for (make, file) in [
        (Fixture::amazon as Make, MI),
        (Fixture::amazon, MI_META),
        (Fixture::amazon, DM),
        (Fixture::criteo, CRITEO),
    ] {
        let mut fx = make();
        let copy = fx.files[file].clone();
        fx.files.insert(format!("{file}.gz"), copy);
        let e = fx.fails();
        let plain = fx.raw().join(file);
        assert_has(
            &e,
            &[
                "ambiguous",
                &plain.display().to_string(),
                &format!("{}.gz", plain.display()),
            ],
        );
    }
    // A configured Criteo file is not ambiguous.
    let mut fx = Fixture::criteo();
    let copy = fx.files[CRITEO].clone();
    fx.files.insert(format!("{CRITEO}.gz"), copy);
    fx.cfg.data.criteo.file = Some(fx.raw().join(CRITEO));
    fx.succeeds();
}

// ---------------------------------------------------------------------------
// Repeated (user, item) pairs: an error for MovieLens, kept with a warning for
// Amazon.
// ---------------------------------------------------------------------------

#[track_caller]
fn assert_repeats(err: &str, file: &str, count: usize, first: &str, again: &str) {
    assert_place(
        err,
        file,
        again.rsplit(' ').next().unwrap().parse().unwrap(),
        None,
    );
    assert_has(
        err,
        &[
            &format!("{count} repeated"),
            &format!("is on {first} and again on {again}"),
        ],
    );
}

#[test]
fn movielens_repeated_pairs_are_errors_naming_both_lines() {
    for (make, file, sep) in [
        (Fixture::ml100k as Make, U_DATA, "\t"),
        (Fixture::ml1m, RATINGS, "::"),
    ] {
        let base = &file[file.find('/').unwrap() + 1..];
        let n = make().files[file].len();
        // One line repeated at the end.
        for k in [1, n / 2, n] {
            let mut fx = make();
            let line = fx.files[file][k - 1].clone();
            fx.file_mut(file).push(line);
            let e = fx.fails();
            assert_repeats(
                &e,
                base,
                1,
                &format!("line {k}"),
                &format!("line {}", n + 1),
            );
        }
        // The whole file twice.
        let mut fx = make();
        let all = fx.files[file].clone();
        fx.file_mut(file).extend(all);
        let e = fx.fails();
        assert_repeats(&e, base, n, "line 1", &format!("line {}", n + 1));
        // The same pair with another rating and time, before the original.
        let mut fx = make();
        let orig = fx.line(file, 10);
        let f: Vec<&str> = orig.split(sep).collect();
        let rating: u32 = f[2].parse().unwrap();
        let other = [f[0], f[1], &(rating % 5 + 1).to_string(), "1"].join(sep);
        fx.insert(file, 3, other);
        let e = fx.fails();
        assert_repeats(&e, base, 1, "line 3", "line 11");
    }
}

/// A parquet file of `rows` rows with the given columns (integers or UTF-8 text).
fn write_parquet(path: &Path, columns: &[(&str, Column)]) {
    use parquet::basic::{ConvertedType, Repetition, Type as Physical};
    use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::types::Type;
    use std::sync::Arc;
    let fields = columns
        .iter()
        .map(|(name, col)| {
            let t = match col {
                Column::Int(_) => Type::primitive_type_builder(name, Physical::INT64),
                Column::Text(_) => Type::primitive_type_builder(name, Physical::BYTE_ARRAY)
                    .with_converted_type(ConvertedType::UTF8),
            };
            Arc::new(t.with_repetition(Repetition::REQUIRED).build().unwrap())
        })
        .collect();
    let schema = Type::group_type_builder("schema")
        .with_fields(fields)
        .build()
        .unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let file = fs::File::create(path).unwrap();
    let mut w = SerializedFileWriter::new(file, Arc::new(schema), props).unwrap();
    if columns.first().is_some_and(|(_, c)| c.len() > 0) {
        let mut rg = w.next_row_group().unwrap();
        for (_, col) in columns {
            let mut c = rg.next_column().unwrap().unwrap();
            match col {
                Column::Int(v) => {
                    c.typed::<Int64Type>().write_batch(v, None, None).unwrap();
                }
                Column::Text(v) => {
                    let v: Vec<ByteArray> = v.iter().map(|s| ByteArray::from(s.as_str())).collect();
                    c.typed::<ByteArrayType>()
                        .write_batch(&v, None, None)
                        .unwrap();
                }
            }
            c.close().unwrap();
        }
        rg.close().unwrap();
    }
    w.close().unwrap();
}

enum Column {
    Int(Vec<i64>),
    Text(Vec<String>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
            Column::Text(v) => v.len(),
        }
    }
}

/// The columns of a GroupLens 100k file as the parquet copy names and types them.
fn parquet_columns(file: &str, lines: &[Vec<u8>]) -> Vec<(&'static str, Column)> {
    use llmctr::data::movielens::GENRES;
    // u.item is Latin-1; the others are ASCII.
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            let text: String = l.iter().map(|&b| char::from(b)).collect();
            let sep = if file == U_DATA { '\t' } else { '|' };
            text.split(sep).map(str::to_string).collect()
        })
        .collect();
    let int = |j: usize| Column::Int(rows.iter().map(|r| r[j].parse().unwrap()).collect());
    let text = |j: usize| Column::Text(rows.iter().map(|r| r[j].clone()).collect());
    match file {
        U_USER => vec![
            ("user_id", int(0)),
            ("age", int(1)),
            ("gender", text(2)),
            ("occupation", text(3)),
            ("zip_code", text(4)),
        ],
        U_ITEM => {
            let mut cols = vec![
                ("movie_id", int(0)),
                ("movie_title", text(1)),
                ("release_date", text(2)),
            ];
            cols.extend(
                GENRES
                    .iter()
                    .enumerate()
                    .map(|(g, name)| (*name, int(5 + g))),
            );
            cols
        }
        _ => vec![
            ("user_id", int(0)),
            ("movie_id", int(1)),
            ("rating", int(2)),
            ("timestamp", int(3)),
        ],
    }
}

/// The ml100k fixture as the parquet copy, with `edit` applied to the lines of
/// each GroupLens file before conversion.
fn parquet_fixture(edit: impl Fn(&str, &mut Vec<Vec<u8>>)) -> Fixture {
    use llmctr::data::movielens::PARQUET_FILES;
    let mut fx = Fixture::ml100k();
    fx.cfg.data.source = SourceKind::Parquet;
    for (file, name) in [U_DATA, U_USER, U_ITEM].iter().zip(PARQUET_FILES) {
        let mut lines = fx.files.remove(*file).unwrap();
        edit(file, &mut lines);
        let path = fx.raw().join("ml-100k").join(name);
        write_parquet(&path, &parquet_columns(file, &lines));
    }
    fx
}

#[test]
fn parquet_copy_empty_tables_and_repeated_pairs_are_errors() {
    use llmctr::data::movielens::PARQUET_FILES;
    // The conversion is faithful: the same dataset as the GroupLens files.
    let want = dataset_or_error(&Fixture::ml100k(), "GroupLens");
    assert!(dataset_or_error(&parquet_fixture(|_, _| {}), "parquet") == want);
    for (file, name) in [U_DATA, U_USER, U_ITEM].iter().zip(PARQUET_FILES) {
        let fx = parquet_fixture(|f, lines| {
            if f == *file {
                lines.clear();
            }
        });
        let e = fx.fails();
        assert_has(&e, &[name, "no rows"]);
    }
    let n = ml_ratings().len();
    for (repeat, first, again) in [(vec![1], 1, n + 1), (vec![7, 2], 7, n + 1)] {
        let fx = parquet_fixture(|f, lines| {
            if f == U_DATA {
                for &k in &repeat {
                    let line = lines[k - 1].clone();
                    lines.push(line);
                }
            }
        });
        let e = fx.fails();
        assert_has(
            &e,
            &[
                &format!(
                    "{}: row {again}: {} repeated",
                    PARQUET_FILES[0],
                    repeat.len()
                ),
                &format!("is on row {first} and again on row {again}"),
            ],
        );
    }
}

#[test]
fn amazon_repeated_review_lines_are_kept_with_a_warning() {
    for repeat in [vec![], vec![2], vec![1, 5, 5, 7, 2, 3, 12]] {
        let mut fx = Fixture::amazon();
        let n = fx.files[MI].len();
        for &k in &repeat {
            let line = fx.files[MI][k - 1].clone();
            fx.file_mut(MI).push(line);
        }
        fx.write();
        let cfg_file = fx.tmp.path().join("run.toml");
        fs::write(&cfg_file, fx.cfg.to_toml()).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(["data", "prepare", "--config"])
            .arg(&cfg_file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        // Logged at WARN level (" WARN warning: …").
        let warning = stderr.lines().find(|l| l.contains("warning:"));
        if repeat.is_empty() {
            assert_eq!(warning, None);
        } else {
            let w = warning.unwrap_or_else(|| panic!("no warning: {stderr}"));
            let path = fx.raw().join(MI);
            let mut parts = vec![
                format!("{}:", path.display()),
                format!("{} lines repeat", repeat.len()),
                "kept".to_string(),
            ];
            for (j, k) in repeat.iter().enumerate().take(5) {
                parts.push(format!("line {} (first on line {k})", n + 1 + j));
            }
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            assert_has(w, &parts);
            assert_eq!(w.contains("..."), repeat.len() > 5, "{w}");
        }
        let meta: serde_json::Value = serde_json::from_slice(
            &fs::read(
                fx.cfg
                    .data
                    .prepared_dir
                    .join(&fx.cfg.data.recipe)
                    .join("meta.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let rows: u64 = ["train", "valid", "test"]
            .iter()
            .map(|s| meta["splits"][s]["rows"].as_u64().unwrap())
            .sum();
        assert_eq!(rows as usize, 24 + repeat.len(), "one row per review line");
    }
}
