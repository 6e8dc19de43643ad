//! MovieLens recipes on the real MovieLens-100k (parquet copy and the same data
//! written as GroupLens files) and on small synthetic files.

mod common;

use common::*;
use llmctr::config::SourceKind;
use llmctr::data::meta::Meta;
use llmctr::data::shard::read_shard;
use llmctr::stages::prepare::prepare;
use std::path::Path;

fn total(m: &Meta, name: &str) -> u64 {
    m.domain_by_name(name).unwrap().rows.total()
}

#[test]
fn ml100k_occupation_parquet_and_grouplens_are_byte_identical() {
    let raw = real_raw_dir();
    let tmp = tempfile::tempdir().unwrap();

    let mut cfg = config("ml100k-occupation", &raw, &tmp.path().join("from-parquet"));
    cfg.data.source = SourceKind::Parquet;
    let a = prepare(&cfg, true).unwrap();

    let gl_raw = tmp.path().join("raw");
    grouplens_from_parquet(&raw.join("ml-100k"), &gl_raw.join("ml-100k"));
    let mut cfg = config(
        "ml100k-occupation",
        &gl_raw,
        &tmp.path().join("from-grouplens"),
    );
    cfg.data.source = SourceKind::Grouplens;
    let b = prepare(&cfg, true).unwrap();

    let m = &a.meta;
    assert_eq!(
        (m.splits.train.rows, m.splits.valid.rows, m.splits.test.rows),
        (80_054, 9_998, 9_948)
    );
    assert_eq!(m.domains.len(), 21);
    assert_eq!(m.domains[0].name, "administrator");
    assert_eq!(m.domains[20].name, "writer");
    assert_eq!(total(m, "homemaker"), 299);
    assert_eq!(total(m, "student"), 21_957);

    let fa = dataset_files(&a.dir);
    let fb = dataset_files(&b.dir);
    assert_eq!(
        fa.iter().map(|f| &f.0).collect::<Vec<_>>(),
        vec![
            "catalog.json",
            "meta.json",
            "test/part-00000.safetensors",
            "train/part-00000.safetensors",
            "valid/part-00000.safetensors",
            "vocab.json"
        ]
    );
    for ((na, ba), (nb, bb)) in fa.iter().zip(&fb) {
        assert_eq!(na, nb);
        assert!(
            ba == bb,
            "{na} differs between the parquet and the GroupLens source"
        );
    }
}

#[test]
fn ml100k_age3_and_gender_domain_sizes() {
    let raw = real_raw_dir();
    let tmp = tempfile::tempdir().unwrap();
    let m = prepare(&config("ml100k-age3", &raw, tmp.path()), true)
        .unwrap()
        .meta;
    let sizes: Vec<u64> = m.domains.iter().map(|d| d.rows.total()).collect();
    assert_eq!(sizes, vec![26_551, 35_444, 38_005]);
    let m = prepare(&config("ml100k-gender", &raw, tmp.path()), true)
        .unwrap()
        .meta;
    assert_eq!(
        m.domains.iter().map(|d| d.rows.total()).sum::<u64>(),
        100_000
    );
    // 100k: 74,260 ratings by men, 25,740 by women (GroupLens u.user).
    assert_eq!(total(&m, "male"), 74_260);
    assert_eq!(total(&m, "female"), 25_740);
}

/// ml100k-genre: 19 domains in `u.genre` order, the item's first genre; the
/// domain is the `cate_id` field's value (ids start at 1).
#[test]
fn ml100k_genre_domains_are_the_first_genre() {
    let raw = real_raw_dir();
    let tmp = tempfile::tempdir().unwrap();
    let p = prepare(&config("ml100k-genre", &raw, tmp.path()), true).unwrap();
    let m = &p.meta;
    assert_eq!(m.domains.len(), 19);
    assert_eq!(
        m.domains.iter().map(|d| d.rows.total()).sum::<u64>(),
        100_000
    );
    assert_eq!(total(m, "Drama"), 27_050);
    assert_eq!(total(m, "War"), 24);
    assert_eq!(total(m, "Fantasy"), 1);
    let cols = read_shard(&p.dir.join("train").join("part-00000.safetensors")).unwrap();
    let domains = cols["domain"].as_u32().unwrap();
    let cate = cols["cate_id"].as_u32().unwrap();
    assert!(domains.iter().zip(cate).all(|(d, c)| d + 1 == *c));
    // The catalogue: all 1,682 items, each in its first genre; Action's titles
    // start with GoldenEye (item 2, the first Action film by id).
    let cat = llmctr::data::meta::Catalog::read(&p.dir).unwrap();
    assert_eq!(
        cat.domains.iter().filter_map(|d| d.items).sum::<u64>(),
        1_682
    );
    let action = &cat.domains[1];
    assert_eq!(action.name, "Action");
    assert_eq!(action.titles[0], "GoldenEye (1995)");
    assert!(action.users.is_none() && action.year.is_some());
}

#[test]
fn ml100k_columns_are_consistent_with_meta() {
    let raw = real_raw_dir();
    let tmp = tempfile::tempdir().unwrap();
    let p = prepare(&config("ml100k-occupation", &raw, tmp.path()), true).unwrap();
    let cols = read_shard(&p.dir.join("train").join("part-00000.safetensors")).unwrap();
    let n = p.meta.splits.train.rows as usize;
    let labels = cols["label"].as_u8().unwrap();
    assert_eq!(labels.len(), n);
    let pos = labels.iter().filter(|&&y| y == 1).count() as f64 / n as f64;
    assert!((pos - 0.554).abs() < 0.01, "positive rate {pos}");
    for f in &p.meta.fields {
        if f.name == "genres" {
            let off = cols["genres.offsets"].as_u32().unwrap();
            assert_eq!(off.len(), n + 1);
            let vals = cols["genres.values"].as_u32().unwrap();
            assert_eq!(*off.last().unwrap() as usize, vals.len());
            assert!(vals.iter().all(|&v| v > 0 && v < f.cardinality));
            continue;
        }
        let c = cols[&f.name].as_u32().unwrap();
        assert_eq!(c.len(), n, "{}", f.name);
        assert!(
            c.iter().all(|&v| v < f.cardinality),
            "{} id out of range",
            f.name
        );
        // Ids of open fields are numbered from the train split: every id in 1.. is used.
        if f.name == "user_id" {
            assert!(c.iter().all(|&v| v > 0));
        }
    }
    let domains = cols["domain"].as_u32().unwrap();
    let occ = cols["occupation"].as_u32().unwrap();
    assert!(
        domains.iter().zip(occ).all(|(d, o)| d + 1 == *o),
        "occupation domain = occupation id - 1"
    );
}

#[test]
fn statistics_use_the_train_split_only() {
    let raw = real_raw_dir();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("raw");
    grouplens_from_parquet(&raw.join("ml-100k"), &base.join("ml-100k"));
    let cfg = config("ml100k-occupation", &base, &tmp.path().join("out"));
    let before = prepare(&cfg, true).unwrap();
    let meta_before = std::fs::read(before.dir.join("meta.json")).unwrap();
    let test_shard = before.dir.join("test/part-00000.safetensors");
    let test_before = std::fs::read(&test_shard).unwrap();

    let path = base.join("ml-100k").join("u.data");
    let original = std::fs::read_to_string(&path).unwrap();
    // Flip one rating in the test split and one in the train split (separately).
    let flip = |want: llmctr::data::split::Split| -> String {
        let mut done = false;
        original
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                let key = format!("{}:{}", f[0], f[1]);
                if !done && llmctr::data::split::Split::of_key(&key) == want {
                    done = true;
                    let r = if f[2].parse::<u32>().unwrap() >= 4 {
                        "1"
                    } else {
                        "5"
                    };
                    format!("{}\t{}\t{r}\t{}\n", f[0], f[1], f[3])
                } else {
                    format!("{l}\n")
                }
            })
            .collect()
    };
    use llmctr::data::split::Split;
    std::fs::write(&path, flip(Split::Test)).unwrap();
    let after = prepare(&cfg, false).unwrap();
    assert!(!after.reused, "a changed input must be recomputed");
    assert_eq!(
        meta_before,
        std::fs::read(after.dir.join("meta.json")).unwrap()
    );
    // The change did reach the data: the test shard (one label) differs.
    assert_ne!(test_before, std::fs::read(&test_shard).unwrap());

    // Control: the same change in the train split does change the statistics.
    std::fs::write(&path, flip(Split::Train)).unwrap();
    let after = prepare(&cfg, false).unwrap();
    assert_ne!(
        meta_before,
        std::fs::read(after.dir.join("meta.json")).unwrap()
    );
}

#[test]
fn rerun_with_unchanged_inputs_is_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    write_small_ml100k(&raw.join("ml-100k"), 40, 30);
    let cfg = config("ml100k-occupation", &raw, &tmp.path().join("out"));
    let a = prepare(&cfg, false).unwrap();
    assert!(!a.reused);
    let first = dataset_files(&a.dir);
    let b = prepare(&cfg, false).unwrap();
    assert!(b.reused);
    let c = prepare(&cfg, true).unwrap();
    assert!(!c.reused);
    assert_eq!(
        first,
        dataset_files(&c.dir),
        "a forced rerun writes the same bytes"
    );
    // A removed shard is noticed.
    std::fs::remove_file(a.dir.join("valid/part-00000.safetensors")).unwrap();
    assert!(!prepare(&cfg, false).unwrap().reused);
    // The resolved config is written next to the outputs.
    let written = std::fs::read_to_string(a.dir.join("config.toml")).unwrap();
    assert_eq!(llmctr::config::Config::parse(&written).unwrap(), cfg);
}

#[test]
fn small_grouplens_fixture_counts_and_stats() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let n = write_small_ml100k(&raw.join("ml-100k"), 40, 30) as u64;
    let p = prepare(
        &config("ml100k-occupation", &raw, &tmp.path().join("out")),
        false,
    )
    .unwrap();
    let m = &p.meta;
    assert_eq!(
        m.splits.train.rows + m.splits.valid.rows + m.splits.test.rows,
        n
    );
    let used: Vec<&str> = m
        .domains
        .iter()
        .filter(|d| d.rows.total() > 0)
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(used, vec!["doctor", "homemaker", "student", "writer"]);
    let s = &m.domain_by_name("student").unwrap().train_stats;
    assert!(s.rows > 0 && s.users.unwrap() > 0 && s.items.unwrap() > 0);
    assert!(s.positives > 0 && !s.example_titles.is_empty());
    assert!(
        s.example_titles
            .iter()
            .all(|t| t.starts_with("Film ") && t.contains('é'))
    );
    assert!(!s.top_categories.is_empty());
    let rate = s.positive_rate.unwrap();
    assert!((rate - s.positives as f64 / s.rows as f64).abs() < 1e-12);
    let empty = &m.domain_by_name("lawyer").unwrap();
    assert_eq!(empty.rows.total(), 0);
    assert_eq!(empty.train_stats.positive_rate, None);
}

fn write_ml1m(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("users.dat"),
        "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n",
    )
    .unwrap();
    let mut movies = b"1::Toy Story (1995)::Animation|Children's|Comedy\n".to_vec();
    movies.extend(b"2::Jumanji (1995)::Adventure|Children's|Fantasy\n");
    movies.extend(b"3::Mis\xe9rables, Les (1995)::Drama|Musical\n");
    std::fs::write(dir.join("movies.dat"), movies).unwrap();
    let mut r = String::new();
    for u in 1..=3 {
        for i in 1..=3 {
            r.push_str(&format!(
                "{u}::{i}::{}::{}\n",
                1 + (u + i) % 5,
                978_300_000 + u * 10 + i
            ));
        }
    }
    std::fs::write(dir.join("ratings.dat"), r).unwrap();
}

#[test]
fn ml1m_recipes_from_grouplens_files() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    write_ml1m(&raw.join("ml-1m"));
    let out = tmp.path().join("out");
    let m = prepare(&config("ml1m-occupation", &raw, &out), false)
        .unwrap()
        .meta;
    assert_eq!(
        m.splits.train.rows + m.splits.valid.rows + m.splits.test.rows,
        9
    );
    // 10 = K-12 student → student, 16 = self-employed → other, 15 = scientist.
    for name in ["student", "other", "scientist"] {
        assert_eq!(total(&m, name), 3, "{name}");
    }
    let m = prepare(&config("ml1m-age3", &raw, &out), false)
        .unwrap()
        .meta;
    let sizes: Vec<u64> = m.domains.iter().map(|d| d.rows.total()).collect();
    assert_eq!(sizes, vec![3, 3, 3]);
    let m = prepare(&config("ml1m-gender", &raw, &out), false)
        .unwrap()
        .meta;
    assert_eq!((total(&m, "male"), total(&m, "female")), (6, 3));
    // 1M has no `unknown` genre: 18 domains from Action; the three films'
    // first genres are Animation, Adventure and Drama.
    let g = prepare(&config("ml1m-genre", &raw, &out), false)
        .unwrap()
        .meta;
    assert_eq!(g.domains.len(), 18);
    assert_eq!(g.domains[0].name, "Action");
    for name in ["Animation", "Adventure", "Drama"] {
        assert_eq!(total(&g, name), 3, "{name}");
    }
    let titles: Vec<String> = m
        .domains
        .iter()
        .flat_map(|d| d.train_stats.example_titles.clone())
        .collect();
    assert!(
        titles.iter().all(|t| !t.contains('\u{fffd}')),
        "Latin-1 decoded: {titles:?}"
    );
}

/// `u.item` / `movies.dat` converted to UTF-8 (with or without a byte-order mark)
/// give the same dataset as the Latin-1 originals: titles are not mojibake.
#[test]
fn utf8_and_latin1_item_files_give_the_same_titles() {
    let tmp = tempfile::tempdir().unwrap();
    let latin1 = |s: &str| -> Vec<u8> {
        s.chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap())
            .collect()
    };
    for (recipe, dir, file) in [
        ("ml100k-gender", "ml-100k", "u.item"),
        ("ml1m-gender", "ml-1m", "movies.dat"),
    ] {
        let mut outputs = Vec::new();
        for (k, encode) in ["latin1", "utf8", "bom+utf8"].iter().enumerate() {
            let raw = tmp.path().join(format!("{dir}-{k}"));
            if dir == "ml-100k" {
                write_small_ml100k(&raw.join(dir), 20, 12);
            } else {
                write_ml1m(&raw.join(dir));
            }
            let path = raw.join(dir).join(file);
            // The writers' files are Latin-1; every title gets "Misérables".
            let text: String = std::fs::read(&path)
                .unwrap()
                .iter()
                .map(|&b| char::from(b))
                .collect::<String>()
                .replace("Film ", "Les Misérables ")
                .replace("Toy Story", "Les Misérables 1")
                .replace("Jumanji", "Les Misérables 2");
            assert!(text.contains("Misérables"));
            let bytes = match *encode {
                "latin1" => latin1(&text),
                "utf8" => text.into_bytes(),
                _ => [b"\xEF\xBB\xBF".to_vec(), text.into_bytes()].concat(),
            };
            std::fs::write(&path, bytes).unwrap();
            let p = prepare(
                &config(recipe, &raw, &tmp.path().join(format!("out-{k}"))),
                false,
            )
            .unwrap();
            let titles: Vec<String> = p
                .meta
                .domains
                .iter()
                .flat_map(|d| d.train_stats.example_titles.clone())
                .collect();
            assert!(
                titles.iter().any(|t| t.contains("Misérables"))
                    && titles
                        .iter()
                        .all(|t| !t.contains('Ã') && !t.contains('\u{fffd}')),
                "{file} as {encode}: {titles:?}"
            );
            outputs.push(dataset_files(&p.dir));
        }
        assert!(
            outputs.iter().all(|o| *o == outputs[0]),
            "{file}: encodings differ"
        );
    }
}

/// The next-item protocol on hand-made ratings: which positive is a train,
/// valid or test target, the history each carries, the sampled negatives, the
/// dropped user and the history-length groups.
#[test]
fn nextitem_rows_histories_and_negatives() {
    use std::collections::{BTreeMap, HashSet};
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let dir = raw.join("ml-100k");
    write_small_ml100k(&dir, 4, 14);
    // (user, item, rating, time). User 1: positives 1, 3, 4, 6, 7 in time order
    // (2 and 5 rated low); user 2: two positives only (dropped); user 3:
    // positives 8, 9, 10, 5; user 4: positives 1 to 12, so that every item is
    // in a train row (an item first seen in valid or test has id 0).
    let mut ratings = vec![
        (1, 4, 5, 130),
        (1, 1, 5, 100),
        (1, 2, 2, 110),
        (1, 3, 4, 120),
        (1, 5, 1, 140),
        (1, 6, 4, 150),
        (1, 7, 5, 160),
        (2, 1, 4, 100),
        (2, 2, 5, 200),
        (3, 8, 4, 50),
        (3, 9, 4, 60),
        (3, 10, 4, 70),
        (3, 11, 1, 80),
        (3, 5, 5, 90),
        (2, 13, 1, 300),
    ];
    ratings.extend((1..=12).map(|i| (4, i, 4, 1000 + i)));
    let text: String = ratings
        .iter()
        .map(|(u, i, r, t)| format!("{u}\t{i}\t{r}\t{t}\n"))
        .collect();
    std::fs::write(dir.join("u.data"), text).unwrap();
    let mut cfg = config("ml100k-nextitem", &raw, &tmp.path().join("out"));
    cfg.data.source = SourceKind::Grouplens;
    let p = prepare(&cfg, true).unwrap();
    let m = &p.meta;
    // Train targets: user 1's 3 and 4, user 3's 9, user 4's 2 to 10; valid: 6,
    // 10 and 11; test: 7, 5 and 12; each with one negative.
    assert_eq!(
        (m.splits.train.rows, m.splits.valid.rows, m.splits.test.rows),
        (24, 6, 6)
    );
    assert_eq!(m.domains[0].name, "history up to 50");
    assert_eq!(m.domains[0].rows.total(), 36);
    assert!(m.history.is_some());
    // Id 0 ("?"): first seen outside train (user 4's valid and test targets,
    // and negatives drawn among them).
    let rated: BTreeMap<&str, HashSet<String>> = [
        ("1", (1..=7).map(|i| i.to_string()).collect()),
        (
            "3",
            [5, 8, 9, 10, 11]
                .map(|i| i.to_string())
                .into_iter()
                .collect(),
        ),
        ("4", (1..=12).map(|i| i.to_string()).collect()),
    ]
    .into_iter()
    .collect();
    let mut seen = Vec::new();
    for r in common::next_item_rows(&p.dir, m) {
        if r.label == 0 {
            assert!(
                !rated[r.user.as_str()].contains(&r.item),
                "{}: negative {} was rated",
                r.user,
                r.item
            );
        } else if r.user != "4" {
            seen.push((r.split, r.user, r.item, r.hist));
        }
    }
    seen.sort();
    let want = [
        ("test", "1", "7", "6,4,3,1"),
        ("test", "3", "5", "10,9,8"),
        ("train", "1", "3", "1"),
        ("train", "1", "4", "3,1"),
        ("train", "3", "9", "8"),
        ("valid", "1", "6", "4,3,1"),
        ("valid", "3", "10", "9,8"),
    ];
    let got: Vec<(&str, &str, &str, &str)> = seen
        .iter()
        .map(|(s, u, i, h)| (*s, u.as_str(), i.as_str(), h.as_str()))
        .collect();
    assert_eq!(got, want);
}

/// The next-item rows of the real MovieLens-100k: 940 users with 3 or more
/// positives, one valid and one test target each, and the groups' sizes.
#[test]
fn ml100k_nextitem_counts() {
    let raw = real_raw_dir();
    let tmp = tempfile::tempdir().unwrap();
    let m = prepare(&config("ml100k-nextitem", &raw, tmp.path()), true)
        .unwrap()
        .meta;
    assert_eq!(
        (m.splits.train.rows, m.splits.valid.rows, m.splits.test.rows),
        (105_098, 1_884, 1_884)
    );
    let test: Vec<u64> = m.domains.iter().map(|d| d.rows.test).collect();
    assert_eq!(test, vec![1_172, 668, 44]);
}
