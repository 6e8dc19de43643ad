//! `pipeline predict` on runs trained on a small GroupLens fixture: split
//! scores that reproduce the run's test AUC, new raw rows mapped with the
//! prepared vocabularies, a new domain scored from its embedding, and bad input
//! files named by file, line and field.

mod common;

use candle_core::{Device, Tensor};
use llmctr::config::Config;
use llmctr::data::meta::{Meta, Vocab};
use llmctr::models::config::{DomainInput, ModelName};
use llmctr::stages::predict::{self, InputRequest, SplitName};
use llmctr::train::trainer::FinalMetrics;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cfg(tmp: &Path, run: &str) -> Config {
    let raw = tmp.join("raw");
    if !raw.join("ml-100k/u.data").is_file() {
        common::write_small_ml100k(&raw.join("ml-100k"), 60, 50);
    }
    let mut c = common::config("ml100k-occupation", &raw, &tmp.join("prepared"));
    c.model.name = ModelName::Dnn;
    c.train.runs_dir = tmp.join("runs");
    c.train.run_name = Some(run.into());
    c.train.batch_size = 64;
    c.train.epochs = 3;
    c.train.lr = 3e-3;
    c
}

fn train(c: &Config) -> (PathBuf, FinalMetrics) {
    let m = llmctr::stages::train::train(c, false, None)
        .unwrap()
        .unwrap();
    (c.train.runs_dir.join(c.train.run_name.as_ref().unwrap()), m)
}

/// (row, domain, label, score) of a predict CSV.
fn parse_csv(text: &str) -> Vec<(usize, String, Option<f32>, f32)> {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("row,domain,label,score"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 4, "{l}");
            (
                f[0].parse().unwrap(),
                f[1].to_string(),
                (!f[2].is_empty()).then(|| f[2].parse().unwrap()),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

/// Field `f`'s id `id` written back as the raw value of the recipe's files
/// (empty for id 0).
fn raw_value(meta: &Meta, vocab: &Vocab, f: &str, id: u32) -> String {
    if id == 0 {
        return String::new();
    }
    let fm = meta.fields.iter().find(|m| m.name == f).unwrap();
    let list = fm.values.as_ref().unwrap_or_else(|| &vocab.fields[f]);
    list[id as usize - 1].clone()
}

fn pipeline() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
}

#[test]
fn split_scores_reproduce_the_runs_test_auc_and_raw_rows_score_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cfg(tmp.path(), "dnn");
    let (run, m) = train(&c);
    // The command line, as a user runs it: the test split to a file.
    let out = tmp.path().join("test.csv");
    let st = pipeline()
        .arg("predict")
        .arg(&run)
        .args(["--split", "test", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let rows = parse_csv(&std::fs::read_to_string(&out).unwrap());
    let prepared = tmp.path().join("prepared/ml100k-occupation");
    let meta = Meta::read(&prepared).unwrap();
    assert_eq!(rows.len() as u64, meta.splits.test.rows);
    assert!(rows.iter().enumerate().all(|(i, r)| r.0 == i), "row order");
    let p: Vec<f32> = rows.iter().map(|r| r.3).collect();
    let y: Vec<f32> = rows.iter().map(|r| r.2.unwrap()).collect();
    let auc = llmctr::metrics::auc(&p, &y).unwrap();
    assert_eq!(Some(auc), m.test.auc, "per-row AUC vs metrics.json");
    // And the saved test predictions agree row for row.
    let saved =
        llmctr::tensor_io::load_safetensors(&run.join("predictions_test.safetensors")).unwrap();
    let s = saved["score"].to_vec1::<f32>().unwrap();
    assert_eq!(s, p);

    let valid = predict::predict_split(&run, SplitName::Valid).unwrap();
    assert_eq!(valid.rows.len() as u64, meta.splits.valid.rows);

    // The first 20 test rows written back as raw values (ids → the vocabularies'
    // strings; age as years) score exactly as the split's rows.
    let test = llmctr::data::dataset::Dataset::load(&prepared, &[], 0).unwrap();
    let vocab = Vocab::read(&prepared).unwrap();
    let feats = &test.features;
    let raw_value = |f: &str, id: u32| raw_value(&meta, &vocab, f, id);
    let mut csv = format!("label,{},domain\n", feats.join(","));
    for r in 0..20 {
        let vals: Vec<String> = feats
            .iter()
            .enumerate()
            .map(|(k, f)| raw_value(f, test.test.cols[k][r]))
            .collect();
        csv.push_str(&format!(
            "{},{},{}\n",
            test.test.labels[r] as u8,
            vals.join(","),
            test.domain_names[test.test.domains[r] as usize]
        ));
    }
    let input = tmp.path().join("rows.csv");
    std::fs::write(&input, &csv).unwrap();
    let scored = predict::predict_input(
        &run,
        &InputRequest {
            input: &input,
            domain: None,
            domain_embedding: None,
            domain_prompt: None,
            domain_description: None,
        },
    )
    .unwrap();
    assert_eq!(scored.scores, p[..20].to_vec(), "{csv}");
    assert_eq!(
        scored.domains,
        rows[..20].iter().map(|r| r.1.clone()).collect::<Vec<_>>()
    );

    // Unknown ids become 0 as in training: an unseen user scores as a row whose
    // user_id is empty; a non-canonical id ("007") is the id 7.
    let u = feats.iter().position(|f| f == "user_id").unwrap();
    let mut a: Vec<String> = (0..feats.len())
        .map(|k| raw_value(&feats[k], test.test.cols[k][0]))
        .collect();
    let dom = &test.domain_names[test.test.domains[0] as usize];
    let mut text = format!("{},domain\n", feats.join(","));
    a[u] = "99999".into();
    text.push_str(&format!("{},{dom}\n", a.join(",")));
    a[u] = String::new();
    text.push_str(&format!("{},{dom}\n", a.join(",")));
    let known = vocab.fields["user_id"][0].clone();
    a[u] = format!("00{known}");
    text.push_str(&format!("{},{dom}\n", a.join(",")));
    a[u] = known;
    text.push_str(&format!("{},{dom}\n", a.join(",")));
    std::fs::write(&input, &text).unwrap();
    let st = pipeline()
        .arg("predict")
        .arg(&run)
        .arg("--input")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let r = parse_csv(&String::from_utf8(st.stdout).unwrap());
    assert_eq!(r.len(), 4);
    assert!(
        r.iter().all(|x| x.2.is_none()),
        "no label column: empty labels"
    );
    assert_eq!(r[0].3, r[1].3, "unknown id = missing id = 0");
    assert_eq!(r[2].3, r[3].3, "007 is 7");
    assert_ne!(r[0].3, r[3].3, "a known user changes the score");
}

/// A (domains × 4) matrix of distinct rows.
fn embeddings(path: &Path, domains: usize) {
    let v: Vec<f32> = (0..domains * 4)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let t = Tensor::from_vec(v, (domains, 4), &Device::Cpu).unwrap();
    let mut m = HashMap::new();
    m.insert("domain_embeddings".to_string(), t);
    candle_core::safetensors::save(&m, path).unwrap();
}

fn row_file(path: &Path, name: &str, row: Tensor) {
    let mut m = HashMap::new();
    m.insert(name.to_string(), row);
    candle_core::safetensors::save(&m, path).unwrap();
}

#[test]
fn a_new_domain_is_scored_from_its_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), "dnn-fixed");
    let emb = tmp.path().join("emb.safetensors");
    embeddings(&emb, 21);
    c.model.domain_input = DomainInput::Fixed;
    c.model.domain_embeddings = Some(emb.clone());
    let (run, _) = train(&c);
    let prepared = tmp.path().join("prepared/ml100k-occupation");
    let meta = Meta::read(&prepared).unwrap();
    let student = meta
        .domains
        .iter()
        .position(|d| d.name == "student")
        .unwrap();
    let input = tmp.path().join("rows.csv");
    std::fs::write(
        &input,
        "user_id,item_id,gender,age,occupation,zip,cate_id,year\n\
         1,1,M,24,student,85711,Action,1995\n\
         2,3,F,53,other,94043,Drama,1994\n",
    )
    .unwrap();
    let all = llmctr::tensor_io::load_safetensors(&emb).unwrap()["domain_embeddings"].clone();
    let score = |domain: &str, row: Option<Tensor>| {
        let file = tmp.path().join(format!("{domain}.safetensors"));
        if let Some(r) = &row {
            row_file(&file, "e", r.clone());
        }
        predict::predict_input(
            &run,
            &InputRequest {
                input: &input,
                domain: Some(domain),
                domain_embedding: row.is_some().then_some((file.as_path(), None)),
                domain_prompt: None,
                domain_description: None,
            },
        )
    };
    // A new domain with the student's embedding scores as student: the DNN sees
    // the domain through its embedding only.
    let as_student = score("student", None).unwrap();
    let twin = score("nurse", Some(all.get(student).unwrap())).unwrap();
    assert_eq!(twin.scores, as_student.scores);
    assert!(twin.domains.iter().all(|d| d == "nurse"));
    // Another embedding, other scores; (1, h) is read as well as (h).
    let other = score("pilot", Some(all.get(0).unwrap().unsqueeze(0).unwrap())).unwrap();
    assert_ne!(other.scores, as_student.scores);
    // A new domain without an embedding, or with one of the wrong width.
    let e = format!("{:#}", score("nurse", None).err().unwrap());
    assert!(
        e.contains("needs its embedding") && e.contains("not a domain"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        score(
            "nurse",
            Some(Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap())
        )
        .err()
        .unwrap()
    );
    assert!(e.contains("3 values") && e.contains("4"), "{e}");
    // A prompt needs the pool run that made the run's embeddings: here they are
    // a plain file.
    let run_cfg = Config::load(Some(&run.join("config.toml"))).unwrap();
    let e = format!(
        "{:#}",
        predict::prompt_embedding(&run_cfg, "x", "x").unwrap_err()
    );
    assert!(
        e.contains("not a pool run's output") && e.contains("--domain-embedding"),
        "{e}"
    );
    // A run on the domain id cannot score a domain it has no id for.
    let mut id = cfg(tmp.path(), "dnn-id");
    id.train.epochs = 1;
    let (id_run, _) = train(&id);
    let file = tmp.path().join("pilot.safetensors");
    let e = format!(
        "{:#}",
        predict::predict_input(
            &id_run,
            &InputRequest {
                input: &input,
                domain: Some("pilot"),
                domain_embedding: Some((&file, None)),
                domain_prompt: None,
                domain_description: None,
            },
        )
        .err()
        .unwrap()
    );
    assert!(e.contains("domain as an id"), "{e}");
}

#[test]
fn bad_input_files_are_named_by_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = cfg(tmp.path(), "dnn");
    c.train.epochs = 1;
    let (run, _) = train(&c);
    let head = "user_id,item_id,gender,age,occupation,zip,cate_id,year,domain";
    let good = "1,1,M,24,student,85711,Action,1995,student";
    let cases: [(&str, String, &[&str]); 8] = [
        (
            "missing column",
            format!(
                "{}\n{}\n",
                head.replace(",zip", ""),
                good.replace(",85711", "")
            ),
            &[":1: field `zip`", "no such column"],
        ),
        (
            "non-numeric id",
            format!("{head}\n{good}\n{}\n", good.replacen("1,1,", "1,x7,", 1)),
            &[":3: field `item_id`", "non-negative integer", "\"x7\""],
        ),
        (
            "wrong column count",
            format!("{head}\n{good}\n{good},extra\n"),
            &[":3:", "10 fields where the header has 9"],
        ),
        ("empty file", String::new(), &["empty"]),
        ("header only", format!("{head}\n"), &["no rows to score"]),
        (
            "unknown domain",
            format!("{head}\n{}\n", good.replace(",student", ",astronaut")),
            &[":2: field `domain`", "\"astronaut\"", "--domain"],
        ),
        (
            "bad label",
            format!("{head},label\n{good},yes\n"),
            &[":2: field `label`", "\"yes\""],
        ),
        (
            "non-numeric age",
            format!("{head}\n{}\n", good.replace(",24,", ",young,")),
            &[":2: field `age`"],
        ),
    ];
    for (what, text, want) in cases {
        let file = tmp.path().join(format!("{}.csv", what.replace(' ', "_")));
        std::fs::write(&file, text).unwrap();
        let out = pipeline()
            .arg("predict")
            .arg(&run)
            .arg("--input")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{what}: accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&file.display().to_string()), "{what}: {err}");
        for w in want {
            assert!(err.contains(w), "{what}: {w:?} not in {err}");
        }
        assert!(out.stdout.is_empty(), "{what}: wrote scores");
    }
    // Not a run at all.
    let out = pipeline().arg("predict").arg(tmp.path()).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a finished training run"));
}

#[test]
fn a_new_domain_is_scored_from_its_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = common::tiny_run_config(tmp.path());
    let runs = tmp.path().join("runs");
    let o = pipeline().arg("run").arg(&cfg).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run = runs.join("cgc_cond-llm-lora-ml100k-occupation-t-parametric-seed1");
    let run_cfg = Config::load(Some(&run.join("config.toml"))).unwrap();
    let pooled = run_cfg.model.domain_embeddings.clone().unwrap();
    let matrix = llmctr::tensor_io::load_safetensors(&pooled).unwrap()["domain_embeddings"]
        .to_vec2::<f32>()
        .unwrap();
    // A known domain's own prompt: the same token states as the embed run's
    // (padded in a batch there, alone here), and pooling the saved states as the
    // pool run does gives back its row of the run's embeddings.
    let pool_dir = pooled.parent().unwrap();
    let pool_cfg = Config::load(Some(&pool_dir.join("config.toml"))).unwrap();
    let embed_run = std::fs::read_dir(&runs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("embed-lora")
        })
        .unwrap();
    let prompts: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(embed_run.join("prompts.json")).unwrap()).unwrap();
    let saved =
        llmctr::tensor_io::load_safetensors(&embed_run.join("token_states.safetensors")).unwrap();
    let (all_states, all_mask) = (&saved["states"], &saved["mask"]);
    let max_diff = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    for (d, pr) in prompts.iter().enumerate().filter(|(d, _)| d % 5 == 0) {
        let name = pr["domain"].as_str().unwrap();
        let (_, st) =
            llmctr::stages::embed::prompt_states(&embed_run, pr["prompt"].as_str().unwrap(), name)
                .unwrap();
        let n = pr["tokens"].as_u64().unwrap() as usize;
        let mine = st.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let theirs = all_states
            .get(d)
            .unwrap()
            .narrow(0, 0, n)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(mine.len(), theirs.len(), "domain {d}: token count");
        assert!(
            max_diff(&mine, &theirs) < 1e-5,
            "domain {d}: states differ by {}",
            max_diff(&mine, &theirs)
        );
        let params =
            llmctr::tensor_io::load_safetensors(&pool_dir.join("pool_params.safetensors")).unwrap();
        let mask = all_mask.narrow(0, d, 1).unwrap();
        let pooled_row = llmctr::stages::pool::apply(
            &pool_cfg.pool,
            &params,
            &all_states.narrow(0, d, 1).unwrap(),
            llmctr::pool::Tokens::new(&mask, None),
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        assert!(
            max_diff(&pooled_row, &matrix[d]) < 1e-6,
            "domain {d}: pooled row"
        );
        // End to end: the new prompt path gives the run's row, up to the float
        // noise of scoring the prompt alone instead of padded in a batch.
        let e = predict::prompt_embedding(&run_cfg, name, pr["prompt"].as_str().unwrap()).unwrap();
        assert!(
            max_diff(&e, &matrix[d]) < 1e-5,
            "domain {d}: {}",
            max_diff(&e, &matrix[d])
        );
    }
    // Another prompt, another embedding.
    let e = predict::prompt_embedding(&run_cfg, "nurse", "nurse: 61% liked.").unwrap();
    assert_ne!(e, matrix[0]);
    // The command line: rows of a new domain, scored from its prompt.
    let input = tmp.path().join("rows.csv");
    std::fs::write(
        &input,
        "user_id,item_id,gender,age,occupation,zip,cate_id,year,label\n\
         1,1,M,24,nurse,85711,Action,1995,1\n\
         2,3,F,53,nurse,94043,Drama,1994,0\n",
    )
    .unwrap();
    let o = pipeline()
        .arg("predict")
        .arg(&run)
        .arg("--input")
        .arg(&input)
        .args(["--domain", "nurse", "--domain-prompt", "nurse: 61% liked."])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = parse_csv(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(r.len(), 2);
    assert!(
        r.iter().all(|x| x.1 == "nurse" && x.3 > 0.0 && x.3 < 1.0),
        "{r:?}"
    );
}

/// A LODO fold's held-out domain, scored from its prompt (`--domain NAME
/// --domain-prompt TEXT`, embedded and pooled by the functions of the embed and
/// pool stages), gives the fold's embedding-arm test predictions to 1e-6: for a
/// frozen decoder with the name query, standardisation and parametric pooling,
/// for LoRA with the mean query, and for the sentence encoder.
#[test]
fn a_held_out_domain_scored_from_its_prompt_gives_the_folds_predictions() {
    use llmctr::config::pool::PoolMode;
    use llmctr::geometry::Normalize;
    use llmctr::pool::Query;
    use llmctr::stages::embed::Method;
    use llmctr::stages::lodo::{Arm, LodoPlan};
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    common::write_tiny_llama(&model, 13, false);
    let raw = tmp.path().join("raw");
    common::write_small_ml100k(&raw.join("ml-100k"), 60, 50);
    let template = tmp.path().join("t.txt");
    std::fs::write(&template, "Users who work as {domain} rate movies.").unwrap();
    let cases = [
        (
            "none",
            Method::None,
            PoolMode::Parametric,
            Query::Name,
            Normalize::Standardize,
        ),
        (
            "lora",
            Method::Lora,
            PoolMode::Parameterless,
            Query::Mean,
            Normalize::None,
        ),
        (
            "encoder",
            Method::Encoder,
            PoolMode::Plain,
            Query::Mean,
            Normalize::None,
        ),
    ];
    let mut last = None;
    for (label, method, mode, query, normalize) in cases {
        let runs = tmp.path().join(format!("runs-{label}"));
        let mut c = common::config("ml100k-occupation", &raw, &tmp.path().join("prepared"));
        c.embed.method = method;
        c.embed.model = model.display().to_string();
        c.embed.encoder = common::minilm().display().to_string();
        c.embed.template = template.clone();
        c.embed.epochs = 1;
        c.embed.batch_size = 128;
        c.embed.runs_dir = runs.clone();
        let e = llmctr::stages::embed::embed(&c, false, None)
            .unwrap()
            .unwrap();
        c.pool.mode = mode;
        c.pool.query = query;
        c.pool.normalize = normalize;
        c.pool.epochs = 2;
        c.pool.runs_dir = runs.clone();
        c.pool.from = Some(PathBuf::from(&e.run_dir));
        let p = llmctr::stages::pool::pool(&c).unwrap();
        c.model.name = ModelName::Pepnet;
        c.model.domain_embeddings =
            Some(PathBuf::from(&p.run_dir).join("domain_embeddings.safetensors"));
        c.train.runs_dir = runs.clone();
        c.train.epochs = 2;
        c.train.batch_size = 64;
        let plan = LodoPlan {
            folds: 3,
            seeds: vec![1],
            arms: vec![Arm::Embedding],
            out: runs.join("lodo"),
        };
        llmctr::stages::lodo::lodo(&c, &plan).unwrap();
        let fold0 = std::fs::read_dir(&runs)
            .unwrap()
            .map(|d| d.unwrap().path())
            .find(|d| {
                let n = d.file_name().unwrap().to_string_lossy().to_string();
                n.starts_with("lodo-") && n.contains("-fold0-")
            })
            .unwrap();
        // The fold's held-out domains are 0, 3, 6, …: take the first with test rows.
        let prepared = tmp.path().join("prepared/ml100k-occupation");
        let ds = llmctr::data::dataset::Dataset::load(&prepared, &[], 0).unwrap();
        let d = (0..ds.domain_names.len())
            .step_by(3)
            .find(|&d| ds.test.domains.iter().filter(|&&x| x as usize == d).count() >= 5)
            .unwrap();
        let name = ds.domain_names[d].clone();
        let prompts: Vec<serde_json::Value> = serde_json::from_slice(
            &std::fs::read(Path::new(&e.run_dir).join("prompts.json")).unwrap(),
        )
        .unwrap();
        let prompt = prompts[d]["prompt"].as_str().unwrap().to_string();
        assert!(prompt.contains(&name));
        // The domain's test rows as raw values, in the run's features.
        let t = predict::load_run(&fold0).unwrap();
        let meta = Meta::read(&prepared).unwrap();
        let vocab = Vocab::read(&prepared).unwrap();
        let raw_value = |f: &str, id: u32| raw_value(&meta, &vocab, f, id);
        let rows: Vec<usize> = (0..ds.test.n)
            .filter(|&r| ds.test.domains[r] as usize == d)
            .collect();
        let mut csv = format!("label,{}\n", t.ds.features.join(","));
        for &r in &rows {
            let vals: Vec<String> =
                t.ds.features
                    .iter()
                    .map(|f| {
                        let k = ds.features.iter().position(|g| g == f).unwrap();
                        raw_value(f, ds.test.cols[k][r])
                    })
                    .collect();
            csv.push_str(&format!("{},{}\n", ds.test.labels[r] as u8, vals.join(",")));
        }
        let input = tmp.path().join(format!("rows-{label}.csv"));
        std::fs::write(&input, &csv).unwrap();
        let scored = score_described(&fold0, &input, &name, Some(&prompt), None).unwrap();
        let saved =
            llmctr::tensor_io::load_safetensors(&fold0.join("predictions_test.safetensors"))
                .unwrap();
        let s = saved["score"].to_vec1::<f32>().unwrap();
        assert_eq!(scored.scores.len(), rows.len());
        let diff = rows
            .iter()
            .zip(&scored.scores)
            .map(|(&r, x)| (s[r] - x).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-6, "{label}: held-out {name:?} differs by {diff}");
        // Another description of the same domain scores otherwise.
        let other_prompt = format!("Users who work as {name} never rate anything.");
        let other = score_described(&fold0, &input, &name, Some(&other_prompt), None).unwrap();
        assert!(
            other.scores.iter().zip(&scored.scores).any(|(a, b)| a != b),
            "{label}: the prompt changed nothing"
        );
        // A description goes through the embed run's template: this one has
        // no {description}, so the prompt is the domain's own.
        let described = score_described(
            &fold0,
            &input,
            &name,
            None,
            Some("a description the template leaves out"),
        )
        .unwrap();
        assert_eq!(described.scores, scored.scores, "{label}: described");
        last = Some((fold0, input, name));
    }
    // A template with a statistic of the domain's rows cannot describe a new
    // domain: refused, naming the placeholder.
    std::fs::write(&template, "{domain}: {positive_pct}% liked.").unwrap();
    let (fold0, input, name) = last.unwrap();
    let err = score_described(&fold0, &input, &name, None, Some("x"))
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("{positive_pct}"), "{err:#}");
}

/// `input` scored by `run` as domain `name`, from a prompt or a description.
fn score_described(
    run: &Path,
    input: &Path,
    name: &str,
    prompt: Option<&str>,
    description: Option<&str>,
) -> anyhow::Result<predict::Scored> {
    predict::predict_input(
        run,
        &InputRequest {
            input,
            domain: Some(name),
            domain_embedding: None,
            domain_prompt: prompt,
            domain_description: description,
        },
    )
}
