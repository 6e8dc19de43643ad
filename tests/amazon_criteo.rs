//! The Amazon and Criteo recipes on small files the tests write.

mod common;

use common::config;
use llmctr::data::criteo::int_category;
use llmctr::data::shard::read_shard;
use llmctr::data::split::Split;
use llmctr::stages::prepare::prepare;
use std::fmt::Write as _;
use std::path::Path;

fn review(user: &str, asin: &str, overall: f64, time: i64) -> String {
    format!(
        r#"{{"overall": {overall:.1}, "verified": true, "reviewerID": "{user}", "asin": "{asin}", "unixReviewTime": {time}, "reviewText": "ok"}}"#
    )
}

fn write_amazon(dir: &Path) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0;
    for (c, cat) in ["Digital_Music", "Musical_Instruments"].iter().enumerate() {
        let mut s = String::new();
        let mut meta = String::new();
        for i in 0..12 {
            let asin = format!("B{c}{i:04}");
            writeln!(
                meta,
                r#"{{"asin": "{asin}", "title": "Item {c}-{i}", "brand": "Brand{}", "category": ["{cat}", "Sub{}", "Deep"]}}"#,
                i % 3,
                i % 2
            )
            .unwrap();
            for u in 0..8 {
                if (u + i) % 3 == 0 {
                    let overall = 1.0 + ((u * 5 + i * 3) % 5) as f64;
                    writeln!(
                        s,
                        "{}",
                        review(&format!("A{u:03}"), &asin, overall, 1_400_000_000 + i)
                    )
                    .unwrap();
                    n += 1;
                }
            }
        }
        std::fs::write(dir.join(format!("{cat}_5.json")), s).unwrap();
        // Meta for the first category only: the second must work without it.
        if c == 0 {
            std::fs::write(dir.join(format!("meta_{cat}.json")), meta).unwrap();
        }
    }
    n
}

#[test]
fn amazon_two_categories() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let n = write_amazon(&raw.join("amazon")) as u64;
    let cfg = config(
        "amazon-Digital_Music+Musical_Instruments",
        &raw,
        &tmp.path().join("out"),
    );
    let p = prepare(&cfg, false).unwrap();
    let m = &p.meta;
    assert_eq!(
        m.splits.train.rows + m.splits.valid.rows + m.splits.test.rows,
        n
    );
    assert_eq!(m.domains.len(), 2);
    assert_eq!(m.domains[0].name, "Digital_Music");
    let names: Vec<&str> = m.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["user_id", "item_id", "brand", "sub_category"]);
    let s0 = &m.domains[0].train_stats;
    assert!(s0.example_titles.iter().all(|t| t.starts_with("Item 0-")));
    assert!(!s0.example_titles.is_empty());
    assert!(s0.top_categories.iter().all(|c| c.name.starts_with("Sub")));
    let s1 = &m.domains[1].train_stats;
    assert!(
        s1.example_titles.is_empty() && s1.top_categories.is_empty(),
        "no meta file"
    );
    // Users are shared across the two domains: one vocabulary.
    let cols = read_shard(&p.dir.join("train/part-00000.safetensors")).unwrap();
    let brand = cols["brand"].as_u32().unwrap();
    let domain = cols["domain"].as_u32().unwrap();
    assert!(
        brand
            .iter()
            .zip(domain)
            .all(|(b, d)| (*d == 1) == (*b == 0)),
        "brand only from meta"
    );
}

/// A Criteo-format line: label, 13 integers, 26 categories.
fn criteo_line(i: u64) -> String {
    let mut f = vec![u8::from(i.is_multiple_of(3)).to_string()];
    for j in 0..13u64 {
        f.push(if (i + j).is_multiple_of(7) {
            String::new()
        } else {
            ((i * (j + 1)) % 40).to_string()
        });
    }
    for j in 0..26u64 {
        f.push(if (i + j).is_multiple_of(11) {
            String::new()
        } else {
            format!("{:08x}", (i * 31 + j) % (3 + j))
        });
    }
    f.join("\t")
}

#[test]
fn criteo_streams_into_shards() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("day.tsv");
    let lines: Vec<String> = (0..500).map(criteo_line).collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let mut cfg = config("criteo", tmp.path(), &tmp.path().join("out"));
    cfg.data.criteo.file = Some(file.clone());
    cfg.data.criteo.domain_field = "C2".into();
    cfg.data.criteo.top_domains = 2;
    cfg.data.criteo.min_count = 3;
    cfg.data.criteo.shard_rows = 64;
    let p = prepare(&cfg, false).unwrap();
    let m = &p.meta;

    // Split by line number, as the spec says.
    let mut want = [0u64; 3];
    for i in 0..500u64 {
        want[Split::of_key(&i.to_string()).index()] += 1;
    }
    assert_eq!(
        [m.splits.train.rows, m.splits.valid.rows, m.splits.test.rows],
        want
    );
    assert_eq!(m.splits.train.shards.len() as u64, want[0].div_ceil(64));

    // Domains: the two most frequent C2 values in train, then "other".
    assert_eq!(m.domains.len(), 3);
    assert_eq!(m.domains[2].name, "other");
    let mut counts = std::collections::HashMap::<String, u64>::new();
    for i in 0..500u64 {
        if Split::of_key(&i.to_string()) == Split::Train {
            let v = lines[i as usize].split('\t').nth(15).unwrap();
            *counts
                .entry(if v.is_empty() {
                    "(empty)".into()
                } else {
                    v.to_string()
                })
                .or_default() += 1;
        }
    }
    let top = counts.values().max().copied().unwrap();
    assert_eq!(m.domains[0].train_stats.rows, top);

    // All shards concatenated hold every train row, in line order, with ids in range.
    let mut times = Vec::new();
    let mut labels = Vec::new();
    for s in &m.splits.train.shards {
        let cols = read_shard(&p.dir.join("train").join(s)).unwrap();
        for f in &m.fields {
            assert!(
                cols[&f.name]
                    .as_u32()
                    .unwrap()
                    .iter()
                    .all(|&v| v < f.cardinality)
            );
        }
        if let llmctr::data::shard::ColumnData::I64(t) = &cols["timestamp"] {
            times.extend(t.clone());
        }
        labels.extend(cols["label"].as_u8().unwrap().to_vec());
    }
    assert_eq!(times.len() as u64, want[0]);
    assert!(times.windows(2).all(|w| w[0] < w[1]));
    assert!(
        times
            .iter()
            .zip(&labels)
            .all(|(t, y)| (*t % 3 == 0) == (*y == 1))
    );

    // Rare values (fewer than min_count train rows) get id 0: C26 has 28 values
    // over 500 rows, all frequent; I1 values are (i % 40) → at most 40 ids.
    let i1 = m.fields.iter().find(|f| f.name == "I1").unwrap();
    let distinct_i1: std::collections::HashSet<i64> = (0..40).map(int_category).collect();
    assert!(i1.cardinality as usize <= distinct_i1.len() + 1);
}

#[test]
fn criteo_gzip_input_gives_the_same_dataset() {
    use flate2::{Compression, write::GzEncoder};
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let text: String = (0..200).map(|i| criteo_line(i) + "\n").collect();
    let plain = tmp.path().join("a.tsv");
    std::fs::write(&plain, &text).unwrap();
    let gz = tmp.path().join("a.tsv.gz");
    let mut enc = GzEncoder::new(std::fs::File::create(&gz).unwrap(), Compression::fast());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    let mut out = Vec::new();
    for (f, o) in [(plain, "o1"), (gz, "o2")] {
        let mut cfg = config("criteo", tmp.path(), &tmp.path().join(o));
        cfg.data.criteo.file = Some(f);
        cfg.data.criteo.min_count = 2;
        out.push(common::dataset_files(&prepare(&cfg, false).unwrap().dir));
    }
    assert_eq!(out[0], out[1]);
}

/// An input replaced by a copy of the same size whose mtime was set back (`cp -p`,
/// `rsync -t`, `touch -r`), in place or by renaming, is hashed again: the cached
/// hash is keyed on the inode and the ctime as well.
#[test]
fn replaced_input_with_same_size_and_mtime_is_rehashed() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    write_amazon(&raw.join("amazon"));
    let cfg = config(
        "amazon-Digital_Music+Musical_Instruments",
        &raw,
        &tmp.path().join("out"),
    );
    let file = raw.join("amazon/Digital_Music_5.json");
    let mut previous = prepare(&cfg, false).unwrap().meta.to_json();
    for (from, to, rename) in [
        (r#""overall": 5.0"#, r#""overall": 1.0"#, false),
        (r#""overall": 1.0"#, r#""overall": 5.0"#, true),
    ] {
        // Past the time in which a second change could keep the ctime: the rerun
        // hashes the inputs once more and keeps those hashes, which the next run
        // then trusts (stamp.json stays as it is).
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let stamp = tmp
            .path()
            .join("out")
            .join(&cfg.data.recipe)
            .join("stamp.json");
        let racy = std::fs::read(&stamp).unwrap();
        // A later stage's call leaves the stamp as it is (the stage may fail).
        assert!(prepare(&cfg, false).unwrap().reused);
        assert_eq!(
            std::fs::read(&stamp).unwrap(),
            racy,
            "a stage's call rewrote stamp.json"
        );
        // `pipeline data prepare` keeps the hashes it took again.
        assert!(
            llmctr::stages::prepare::prepare_stage(&cfg, false)
                .unwrap()
                .reused
        );
        let trusted = std::fs::read(&stamp).unwrap();
        assert_ne!(racy, trusted, "hashes taken again not kept");
        assert!(prepare(&cfg, false).unwrap().reused);
        assert_eq!(std::fs::read(&stamp).unwrap(), trusted, "hashes not reused");

        let old = std::fs::read_to_string(&file).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let new = old.replace(from, to);
        assert!(new != old && new.len() == old.len());
        let target = if rename {
            file.with_extension("tmp")
        } else {
            file.clone()
        };
        std::fs::write(&target, &new).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&target)
            .unwrap()
            .set_modified(meta.modified().unwrap())
            .unwrap();
        if rename {
            std::fs::rename(&target, &file).unwrap();
        }
        let now = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (now.len(), now.modified().unwrap()),
            (meta.len(), meta.modified().unwrap())
        );

        let p = prepare(&cfg, false).unwrap();
        assert!(
            !p.reused,
            "replaced {} (rename: {rename}) not noticed",
            file.display()
        );
        let json = p.meta.to_json();
        assert_ne!(json, previous);
        previous = json;
    }
}

/// `amazon-nextitem-…`: every review a positive, the listed categories'
/// reviews together in time order per user, a repeated review line once,
/// users with fewer than 3 dropped, histories most recent first with the
/// items' sub-categories, negatives the user never reviewed, domains by
/// history length (≤ 5, 6–20, > 20).
#[test]
fn amazon_nextitem_rows_histories_and_negatives() {
    use std::collections::{BTreeMap, HashSet};
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("raw");
    let dir = raw.join("amazon");
    std::fs::create_dir_all(&dir).unwrap();
    // U1: M1 (twice: a repeated line), I1, M2, I2, I3 in time order across the
    // two files; U2: two reviews (dropped); U3: X1 … X8; U4 reviews every item
    // but M3 and I4 late, so that each item is in a train row (an item first
    // seen in valid or test has id 0).
    let music = [
        ("U1", "M1", 100),
        ("U1", "M1", 100),
        ("U1", "M2", 300),
        ("U2", "M3", 50),
    ];
    let mut instruments = vec![
        ("U1", "I1", 200),
        ("U1", "I2", 400),
        ("U1", "I3", 500),
        ("U2", "I4", 60),
    ];
    let xs: Vec<String> = (1..=8).map(|i| format!("X{i}")).collect();
    for (i, x) in xs.iter().enumerate() {
        instruments.push(("U3", x.as_str(), i as i64 + 1));
    }
    let all = ["M1", "M2", "I1", "I2", "I3"];
    let mut u4: Vec<(&str, &str, i64)> = all.iter().map(|a| ("U4", *a, 1000)).collect();
    u4.extend(xs.iter().map(|x| ("U4", x.as_str(), 1001)));
    instruments.extend(u4);
    let lines = |v: &[(&str, &str, i64)]| -> String {
        v.iter()
            .map(|(u, a, t)| review(u, a, 1.0, *t) + "\n")
            .collect()
    };
    std::fs::write(dir.join("Digital_Music_5.json"), lines(&music)).unwrap();
    std::fs::write(dir.join("Musical_Instruments_5.json"), lines(&instruments)).unwrap();
    std::fs::write(
        dir.join("meta_Digital_Music.json"),
        r#"{"asin": "M1", "title": "One", "category": ["Digital Music", "Pop"]}
{"asin": "M2", "title": "Two", "category": ["Digital Music", "Rock"]}
"#,
    )
    .unwrap();
    let cfg = config(
        "amazon-nextitem-Digital_Music+Musical_Instruments",
        &raw,
        &tmp.path().join("out"),
    );
    let p = prepare(&cfg, true).unwrap();
    let m = &p.meta;
    // Targets: U1 I1, M2 train, I2 valid, I3 test; U3 X2…X6 train, X7 valid,
    // X8 test; U4 (13 reviews) 10 train, 1 valid, 1 test; one negative each.
    assert_eq!(
        (m.splits.train.rows, m.splits.valid.rows, m.splits.test.rows),
        (34, 6, 6)
    );
    let names: Vec<&str> = m.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["history up to 5", "history 6 to 20", "history over 20"]
    );
    let rows: Vec<u64> = m.domains.iter().map(|d| d.rows.total()).collect();
    assert_eq!(rows, [8, 38, 0], "U1 ≤ 5; U3 (6) and U4 (11) in 6 to 20");
    assert!(m.history.is_some());
    let fields: Vec<&str> = m.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        fields,
        [
            "user_id",
            "item_id",
            "brand",
            "cate_id",
            "hist_item_id",
            "hist_cate_id"
        ]
    );
    let reviewed: BTreeMap<&str, HashSet<&str>> = [
        ("U1", all.iter().copied().collect()),
        ("U3", xs.iter().map(String::as_str).collect()),
        (
            "U4",
            all.iter()
                .copied()
                .chain(xs.iter().map(String::as_str))
                .collect(),
        ),
    ]
    .into_iter()
    .collect();
    let mut seen = Vec::new();
    for r in common::next_item_rows(&p.dir, m) {
        if r.label == 0 {
            assert!(
                !reviewed[r.user.as_str()].contains(r.item.as_str()),
                "{}: negative {} was reviewed",
                r.user,
                r.item
            );
        } else if r.user == "U1" {
            seen.push((r.split, r.item, r.hist, r.hist_cates));
        }
    }
    seen.sort();
    let want = [
        ("test", "I3", "I2,M2,I1,M1", "unknown,Rock,unknown,Pop"),
        ("train", "I1", "M1", "Pop"),
        ("train", "M2", "I1,M1", "unknown,Pop"),
        ("valid", "I2", "M2,I1,M1", "Rock,unknown,Pop"),
    ];
    let got: Vec<(&str, &str, &str, &str)> = seen
        .iter()
        .map(|(s, i, h, c)| (*s, i.as_str(), h.as_str(), c.as_str()))
        .collect();
    assert_eq!(got, want);
}
