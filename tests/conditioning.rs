//! Domain-conditioned heads on a synthetic task where the label depends on the
//! domain only through its embedding: artists like items 1–20 and dislike 21–40,
//! doctors the opposite, and writers — held out of training entirely — behave like
//! artists and have the artists' embedding. A model whose shared parameters are a
//! function of the domain vector scores the writers like artists; the classic
//! per-domain CGC on the domain id has nothing to tell them apart with.

mod common;

use llmctr::models::config::{DomainFields, DomainInput, ModelName};
use llmctr::stages::train::train;
use std::fmt::Write as _;
use std::path::Path;

fn fixture(tmp: &Path) -> llmctr::config::Config {
    let dir = tmp.join("raw/ml-100k");
    common::write_small_ml100k(&dir, 1, 40); // u.item; u.user and u.data below
    let (mut users, mut data) = (String::new(), String::new());
    for u in 1..=150u32 {
        let occ = ["artist", "doctor", "writer"][(u % 3) as usize];
        writeln!(users, "{u}|30|M|{occ}|{:05}", 10000 + u).unwrap();
        for i in 1..=40u32 {
            let likes_low = occ != "doctor";
            let rating = if (i <= 20) == likes_low { 5 } else { 1 };
            writeln!(data, "{u}\t{i}\t{rating}\t{}", 880_000_000 + u * 100 + i).unwrap();
        }
    }
    std::fs::write(dir.join("u.user"), users).unwrap();
    std::fs::write(dir.join("u.data"), data).unwrap();
    let mut c = common::config("ml100k-occupation", &tmp.join("raw"), &tmp.join("prepared"));
    c.data.holdout_domains = vec!["writer".into()];
    c.model.domain_fields = DomainFields::Drop;
    // The item is the only feature: a writer's user id never trains (their rows
    // are held out), and a model could learn the artists' behaviour as what an
    // untrained user embedding means.
    c.model.features = vec!["item_id".into(), "occupation".into()];
    c.train.runs_dir = tmp.join("runs");
    c.train.batch_size = 128;
    c.train.epochs = 15;
    c.train.patience = 15;
    c.train.lr = 3e-3;
    // The 21 occupations' embeddings: writer = artist; the rest far from both.
    let p = llmctr::stages::prepare::prepare(&c, false).unwrap();
    let names: Vec<&str> = p.meta.domains.iter().map(|d| d.name.as_str()).collect();
    let rows: Vec<f32> = names
        .iter()
        .flat_map(|n| match *n {
            "artist" | "writer" => [1.0, 0.0],
            "doctor" => [0.0, 1.0],
            _ => [-1.0, -1.0],
        })
        .collect();
    let m =
        candle_core::Tensor::from_vec(rows, (names.len(), 2), &candle_core::Device::Cpu).unwrap();
    let file = tmp.join("domains.safetensors");
    candle_core::safetensors::save(&[("domain_embeddings", m)].into(), &file).unwrap();
    c.model.domain_embeddings = Some(file);
    c
}

#[test]
fn a_conditioned_head_scores_an_unseen_domain_from_its_embedding() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixture(tmp.path());
    let run = |model: ModelName, input: DomainInput| {
        let mut c = base.clone();
        c.model.name = model;
        c.model.domain_input = input;
        c.train.run_name = Some(format!("{}-{input:?}", model.as_str()));
        let m = train(&c, false, None).unwrap().unwrap();
        assert_eq!(m.unseen_domains, ["writer"]);
        let auc = m.unseen_auc.unwrap();
        // The occupation field is gone from the features either way.
        let cfg = std::fs::read_to_string(
            c.train
                .runs_dir
                .join(c.train.run_name.unwrap())
                .join("config.toml"),
        )
        .unwrap();
        assert!(cfg.contains("domain_fields = \"drop\""), "{cfg}");
        (auc, m.test.auc.unwrap())
    };
    let (pep, pep_all) = run(ModelName::Pepnet, DomainInput::Fixed);
    let (cgc_id, _) = run(ModelName::Cgc, DomainInput::Id);
    let (pep_none, _) = run(ModelName::Pepnet, DomainInput::None);
    let (m2m, _) = run(ModelName::M2m, DomainInput::Fixed);
    // CGC on fixed embeddings takes its conditioned form (model.cgc.conditioning
    // = "auto"): the writers go through the shared experts, the shared gate and
    // the tower generated from their embedding.
    let (cgc_cond, _) = run(ModelName::Cgc, DomainInput::Fixed);
    eprintln!(
        "unseen AUC: pepnet/embedding {pep:.3} (all {pep_all:.3}), m2m/embedding {m2m:.3}, \
         cgc_cond/embedding {cgc_cond:.3}, cgc/id {cgc_id:.3}, pepnet/none {pep_none:.3}"
    );
    assert!(pep > 0.95, "pepnet on the embedding: unseen AUC {pep}");
    assert!(m2m > 0.95, "m2m on the embedding: unseen AUC {m2m}");
    assert!(
        cgc_cond > 0.95,
        "conditioned CGC on the embedding: unseen AUC {cgc_cond}"
    );
    // Without the embedding the writers' rows look like artists' and doctors' alike:
    // chance, give or take the noise of 40 items.
    assert!(cgc_id < 0.8, "classic CGC on the id: unseen AUC {cgc_id}");
    assert!(pep_none < 0.8, "no domain input: unseen AUC {pep_none}");
}

/// With the domain fields dropped, `train` lists the features it used, and the
/// domain-defining field is not among them.
#[test]
fn dropping_the_domain_fields_removes_them_from_the_features() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = fixture(tmp.path());
    c.data.holdout_domains.clear();
    c.model.name = ModelName::Dnn;
    c.model.domain_input = DomainInput::None;
    let p = llmctr::stages::prepare::prepare(&c, false).unwrap();
    let t = llmctr::train::trainer::Trainer::new(&c, &p.dir).unwrap();
    assert!(
        !t.ds.features.iter().any(|f| f == "occupation"),
        "{:?}",
        t.ds.features
    );
    assert_eq!(t.ds.features, ["item_id"]);
    // `train` prints the table: each field's rows and the memory it takes.
    let rows = t.ds.cards[0];
    let line = t.table_summary();
    assert!(line.contains(&format!("item_id {rows}")), "{line}");
    assert!(line.contains("MiB of weights"), "{line}");
    c.model.features.clear();
    let t = llmctr::train::trainer::Trainer::new(&c, &p.dir).unwrap();
    assert!(
        !t.ds.features.iter().any(|f| f == "occupation"),
        "{:?}",
        t.ds.features
    );
    assert!(
        t.ds.features.iter().any(|f| f == "age"),
        "{:?}",
        t.ds.features
    );
    // Nothing left after the drop is an error, not a silent "every field".
    c.model.features = vec!["occupation".into()];
    let e = format!(
        "{:#}",
        llmctr::train::trainer::Trainer::new(&c, &p.dir)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("model.domain_fields") && e.contains("occupation"),
        "{e}"
    );
    c.model.features.clear();
    c.model.domain_fields = DomainFields::Keep;
    let t = llmctr::train::trainer::Trainer::new(&c, &p.dir).unwrap();
    assert!(t.ds.features.iter().any(|f| f == "occupation"));
}

/// `pipeline lodo` on the same task, three folds of occupations (artist alone;
/// doctor with writer). The artists and the writers share an embedding and a
/// taste, so with the embedding arm each is scored from the other when held out;
/// without a domain input it cannot be. The table names every domain and the
/// paired differences.
#[test]
fn lodo_scores_each_held_out_domain_and_tests_the_arms_against_the_floor() {
    use llmctr::stages::lodo::{Arm, LodoPlan, lodo};
    let tmp = tempfile::tempdir().unwrap();
    let mut c = fixture(tmp.path());
    c.data.holdout_domains.clear();
    c.model.name = ModelName::Pepnet;
    let plan = LodoPlan {
        folds: 3,
        seeds: vec![1],
        arms: vec![Arm::None, Arm::Embedding, Arm::Random],
        out: tmp.path().join("lodo"),
    };
    let md = std::fs::read_to_string(lodo(&c, &plan).unwrap()).unwrap();
    let row = |name: &str| -> Vec<String> {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{md}"));
        line.split('|').map(|s| s.trim().to_string()).collect()
    };
    // | name | rows | none AUC | none logloss | embedding AUC | embedding logloss |
    let auc = |name: &str, col: usize| -> f64 { row(name)[col].parse().unwrap() };
    assert!(auc("artist", 5) > 0.95, "{md}");
    assert!(auc("artist", 3) < 0.8, "{md}");
    // Held out with the doctors, the writers are scored from the artists, who are
    // then the only domain trained: that needs no domain input at all.
    assert!(auc("writer", 5) > 0.95, "{md}");
    assert_eq!(
        row("homemaker")[3],
        "n/a",
        "a domain without rows has no AUC"
    );
    assert!(md.contains("| `embedding` |") && md.contains("/"), "{md}");
    // The random control has its row and is a reference of its own.
    assert!(md.contains("| `random` |"), "{md}");
    assert!(md.contains("ΔAUC vs random"), "{md}");
    // | name | rows | none × 2 | embedding × 2 | random AUC | random logloss |
    assert!(row("artist")[7].parse::<f64>().is_ok(), "{md}");
    // The control has the embedding file's shape, not its rows.
    let ctl = llmctr::stages::lodo::random_control(
        c.model.domain_embeddings.as_ref().unwrap(),
        "domain_embeddings",
        &c.train.runs_dir,
    )
    .unwrap();
    let t = candle_core::safetensors::load(&ctl, &candle_core::Device::Cpu).unwrap();
    let r = t["domain_embeddings"].to_vec2::<f32>().unwrap();
    assert_eq!((r.len(), r[0].len()), (21, 2));
    assert_ne!(r[0], r[1]);
    assert!(r.iter().all(|v| v != &[1.0, 0.0] && v != &[-1.0, -1.0]));
    assert!(tmp.path().join("lodo.csv").is_file());
    // A second call reuses every run.
    let again = std::fs::read_to_string(lodo(&c, &plan).unwrap()).unwrap();
    let body = |s: &str| s.lines().skip(3).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&md), body(&again));
}

/// `pipeline ablate` with only `[[ablate.lodo]]` studies: each study's table,
/// and `lodo.md` with every arm's means and paired differences.
#[test]
fn ablate_runs_lodo_studies_and_summarises_their_arms() {
    use llmctr::config::ablate::{Arm, LodoStudy};
    let tmp = tempfile::tempdir().unwrap();
    let mut c = fixture(tmp.path());
    c.data.holdout_domains.clear();
    c.model.name = ModelName::Pepnet;
    let study = tmp.path().join("study.toml");
    std::fs::write(&study, c.to_toml()).unwrap();
    let mut a = c.clone();
    a.ablate.recipes.clear();
    a.ablate.seeds = vec![1];
    a.ablate.out_dir = tmp.path().join("ablation");
    a.ablate.lodo = vec![LodoStudy {
        config: study.clone(),
        arms: vec![Arm::None, Arm::Embedding, Arm::Random],
        folds: 3,
        name: Some("occ".into()),
    }];
    let cfg_path = tmp.path().join("ablate.toml");
    std::fs::write(&cfg_path, a.to_toml()).unwrap();
    // The file reads back as written (the studies are part of the format).
    let a = llmctr::config::Config::load(Some(&cfg_path)).unwrap();
    assert_eq!(a.ablate.lodo.len(), 1);
    let out = llmctr::stages::ablate::ablate(&a, &cfg_path).unwrap();
    assert_eq!(out, tmp.path().join("ablation/lodo.md"));
    let md = std::fs::read_to_string(&out).unwrap();
    for arm in ["`none`", "`embedding`", "`random`"] {
        assert!(md.contains(&format!("| pepnet | {arm} |")), "{arm}: {md}");
    }
    // The embedding knows that artists and writers share a taste: better than
    // no domain input on the held-out domains (as the study's own table says).
    let row = md.lines().find(|l| l.contains("| `embedding` |")).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let gain: f64 = cells[7].split(' ').next().unwrap().parse().unwrap();
    assert!(gain > 0.05, "{row}");
    assert!(tmp.path().join("ablation/occ.md").is_file());
    assert!(tmp.path().join("ablation/occ.csv").is_file());
    // No grid was asked for, so there is no grid table.
    assert!(!tmp.path().join("ablation/ablation.md").exists());
}
