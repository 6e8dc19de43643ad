//! Domain embeddings that look at the domain: the domain-name tokens recorded by
//! `embed`, the layer choice, `pool`'s plain mode, its normalisation estimated on
//! the training domains only, the kernel perplexity both stages report, and the
//! sentence-encoder baseline against the reference library
//! (tests/fixtures/minilm_golden.json, made by
//! `python3 notebooks/reference/encoder/golden_minilm.py`).

mod common;

use candle_core::{DType, Device, Tensor};
use llmctr::config::Config;
use llmctr::geometry::Normalize;
use llmctr::llm::load::{load_gguf, load_hf_dir};
use llmctr::nn::rng::Rng;
use llmctr::pool::Query;
use llmctr::stages::embed::{LayerChoice, Method, embed, render_prompts};
use llmctr::stages::pool::{PoolMode, pool};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A small prepared fixture (occupations student, homemaker, writer, doctor
/// have rows), a tiny decoder (2 layers, byte-level tokens) and a fast config.
fn setup(tmp: &Path) -> Config {
    let raw = tmp.join("raw");
    common::write_small_ml100k(&raw.join("ml-100k"), 60, 50);
    let model = tmp.join("tiny");
    common::write_tiny_llama(&model, 3, false);
    let mut cfg = common::config("ml100k-occupation", &raw, &tmp.join("prepared"));
    cfg.embed.model = model.display().to_string();
    cfg.embed.method = Method::None;
    cfg.embed.template = tmp.join("name.txt");
    std::fs::write(
        &cfg.embed.template,
        "The users \"{domain}\" of {dataset}. Describe them.",
    )
    .unwrap();
    cfg.embed.batch_size = 64;
    cfg.embed.epochs = 1;
    cfg.embed.runs_dir = tmp.join("runs");
    cfg.pool.runs_dir = tmp.join("runs");
    cfg.train.runs_dir = tmp.join("runs");
    cfg.train.epochs = 1;
    cfg.train.batch_size = 64;
    cfg
}

fn load(p: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap()
}

/// Masked mean of states (D, T, h) over m (D, T), by hand.
fn masked_mean(states: &Tensor, m: &Tensor) -> Vec<Vec<f32>> {
    let s = states.to_vec3::<f32>().unwrap();
    let m = rows(m);
    s.iter()
        .zip(&m)
        .map(|(toks, mm)| {
            let n: f32 = mm.iter().sum();
            (0..toks[0].len())
                .map(|j| toks.iter().zip(mm).map(|(t, &w)| t[j] * w).sum::<f32>() / n)
                .collect()
        })
        .collect()
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn embed_records_the_name_tokens_and_reports_kernel_perplexity() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    cfg.embed.query = Query::Name;
    let r = embed(&cfg, false, None).unwrap().unwrap();
    let dir = PathBuf::from(&r.run_dir);
    let t = load(&dir.join("token_states.safetensors"));
    let names = rows(&t["name_mask"]);
    let mask = rows(&t["mask"]);
    let prompts = json(&dir.join("prompts.json"));
    let domains: Vec<String> = serde_json::from_value(json(&dir.join("domains.json"))).unwrap();
    for (i, d) in domains.iter().enumerate() {
        // Byte-level tokens: the name's tokens are its bytes, at the bytes
        // after `The users "`.
        let want: Vec<f32> = (0..names[i].len())
            .map(|j| f32::from(u8::from((11..11 + d.len()).contains(&j))))
            .collect();
        assert_eq!(names[i], want, "{d}");
        assert!(
            prompts[i]["prompt"]
                .as_str()
                .unwrap()
                .starts_with(&format!("The users \"{d}\""))
        );
        assert!(names[i].iter().zip(&mask[i]).all(|(&n, &m)| n <= m));
    }
    // The probe's pooling used the name query; the written embeddings are that
    // pooling of the written states.
    let dm = load(&dir.join("domain_embeddings.safetensors"))["domain_embeddings"].clone();
    let again = llmctr::pool::parameterless(
        &t["states"],
        llmctr::pool::Tokens::new(&t["mask"], Some(&t["name_mask"])),
        Query::Name,
        None,
    )
    .unwrap();
    assert!(common::max_abs_diff(&dm, &again) < 1e-6);
    let k = r.kernel_perplexity.expect("reported");
    let want = llmctr::pool::kernel_perplexities(&dm).unwrap();
    assert_eq!(k, want);
    assert_eq!(k.of, 20);
    assert!(k.pooling > 1.0 && k.pooling <= 20.0 + 1e-9, "{k:?}");
    let saved = json(&dir.join("result.json"));
    assert_eq!(saved["kernel_perplexity"]["of"], 20);

    // A template without {domain} cannot feed the name query.
    std::fs::write(&cfg.embed.template, "Users of {dataset}.").unwrap();
    cfg.embed.run_name = Some("no-name".into());
    let e = format!("{:#}", embed(&cfg, false, None).unwrap_err());
    assert!(e.contains("{domain}") && e.contains("name"), "{e}");
}

#[test]
fn the_name_tokens_of_the_real_tokenizer_spell_the_name() {
    let llm = load_gguf(
        &common::smollm2(),
        llmctr::llm::config::RopeLayout::Interleaved,
        &Device::Cpu,
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = setup(tmp.path());
    let prepared = llmctr::stages::prepare::prepare(&cfg, false).unwrap();
    let t = tmp.path().join("t.txt");
    std::fs::write(
        &t,
        "In a movie recommender, describe the group of users \"{domain}\". The {domain} users:",
    )
    .unwrap();
    let p = render_prompts(&t, &prepared.meta, None, &llm, 512, &[]).unwrap();
    let ids = p.ids.to_vec2::<u32>().unwrap();
    let names = rows(&p.names);
    for (i, d) in prepared.meta.domains.iter().enumerate() {
        // Two occurrences: the name's tokens, joined, hold the name twice and
        // little else (a BPE token may also cover a quote or a space).
        let picked: Vec<u32> = ids[i]
            .iter()
            .zip(&names[i])
            .filter(|(_, m)| **m == 1.0)
            .map(|(&id, _)| id)
            .collect();
        let text = llm.tokenizer.decode(&picked).unwrap();
        assert_eq!(text.matches(d.name.as_str()).count(), 2, "{text:?}");
        assert!(text.len() <= 2 * d.name.len() + 4, "{:?}: {text:?}", d.name);
    }
}

#[test]
fn layer_choice_reads_and_averages_the_chosen_hidden_states() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    let l = load_hf_dir(Path::new(&cfg.embed.model), &Device::Cpu).unwrap();
    let prepared = llmctr::stages::prepare::prepare(&cfg, false).unwrap();
    let p = render_prompts(&cfg.embed.template, &prepared.meta, None, &l, 512, &[]).unwrap();
    let dec = &l.decoder;
    let ad = llmctr::llm::adapters::Adapters::none();
    let x0 = dec.embed_ids(&p.ids).unwrap();
    let h1 = dec
        .forward_range(&x0, 0, 1, &ad, false, &mut Rng::new(0))
        .unwrap();
    let n0 = dec.final_norm(&x0).unwrap();
    let n1 = dec.final_norm(&h1).unwrap();
    let n2 = dec
        .hidden_states(&p.ids, &ad, false, &mut Rng::new(0))
        .unwrap();
    let states = |cfg: &Config| {
        let r = embed(cfg, false, None).unwrap().unwrap();
        (
            load(&PathBuf::from(&r.run_dir).join("token_states.safetensors"))["states"].clone(),
            r,
        )
    };
    // Default: the last layer, as before the setting existed.
    let (s, r) = states(&cfg);
    assert!(common::max_abs_diff(&s, &n2) < 1e-6);
    assert_eq!(r.layers, vec![2]);
    cfg.embed.layer = Some(LayerChoice::One(1));
    let (s, r) = states(&cfg);
    assert!(r.run_dir.ends_with("-layer1-seed1"), "{}", r.run_dir);
    assert!(common::max_abs_diff(&s, &n1) < 1e-6);
    assert!(
        common::max_abs_diff(&s, &n2) > 1e-3,
        "layer 1 is not layer 2"
    );
    cfg.embed.layer = Some(LayerChoice::Many(vec![2, 0]));
    let (s, r) = states(&cfg);
    assert_eq!(r.layers, vec![0, 2]);
    let avg = ((n0 + n2).unwrap() / 2.0).unwrap();
    assert!(common::max_abs_diff(&s, &avg) < 1e-6);

    // Out of range, and adapters above the read layer, are refused.
    cfg.embed.layer = Some(LayerChoice::One(3));
    let e = format!("{:#}", embed(&cfg, false, None).unwrap_err());
    assert!(
        e.contains("embed.layer = 3") && e.contains("2 layers"),
        "{e}"
    );
    cfg.embed.layer = Some(LayerChoice::One(1));
    cfg.embed.method = Method::Lora;
    cfg.embed.lora.layers = vec![1];
    let e = format!("{:#}", embed(&cfg, false, None).unwrap_err());
    assert!(e.contains("never train"), "{e}");
    // LoRA on block 0 reads layer 1 and trains.
    cfg.embed.lora.layers = vec![0];
    cfg.embed.lr = 1e-2;
    cfg.embed.batches_per_llm_step = 2;
    let (s, r) = states(&cfg);
    assert!(r.llm_steps > 0);
    assert!(
        common::max_abs_diff(&s, &n1) > 1e-6,
        "the adapter moved layer 1"
    );
}

/// An embed run (method none, tiny decoder) to pool; returns its directory.
fn embedded(cfg: &Config) -> PathBuf {
    PathBuf::from(embed(cfg, false, None).unwrap().unwrap().run_dir)
}

#[test]
fn pool_plain_queries_and_normalisation_on_seen_domains_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    cfg.data.holdout_domains = vec!["writer".into()];
    let from = embedded(&cfg);
    let t = load(&from.join("token_states.safetensors"));
    let domains: Vec<String> = serde_json::from_value(json(&from.join("domains.json"))).unwrap();
    let writer = domains.iter().position(|d| d == "writer").unwrap();
    cfg.pool.mode = PoolMode::Plain;
    let run = |cfg: &Config| {
        let r = pool(cfg).unwrap();
        let dir = PathBuf::from(&r.run_dir);
        let dm = load(&dir.join("domain_embeddings.safetensors"))["domain_embeddings"].clone();
        (r, dir, dm)
    };
    // Plain: the query itself.
    for (q, m) in [(Query::Mean, "mask"), (Query::Name, "name_mask")] {
        cfg.pool.query = q;
        let (r, dir, dm) = run(&cfg);
        assert!(
            dir.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(&format!("pool-plain-{}-embed-none", q.as_str())),
            "{}",
            dir.display()
        );
        assert!(max_diff(&rows(&dm), &masked_mean(&t["states"], &t[m])) < 1e-5);
        let k = r.kernel_perplexity.unwrap();
        assert_eq!(k, llmctr::pool::kernel_perplexities(&dm).unwrap());
        assert!(json(&dir.join("result.json"))["kernel_perplexity"]["pooling"].is_f64());
    }
    // Standardised: the mean and spread come from the seen domains' real tokens.
    cfg.pool.query = Query::Mean;
    cfg.pool.normalize = Normalize::Standardize;
    let (_, dir, dm) = run(&cfg);
    let params = load(&dir.join("pool_params.safetensors"));
    let mu = params["normalize_mean"].to_vec1::<f32>().unwrap();
    let s = t["states"].to_vec3::<f32>().unwrap();
    let mask = rows(&t["mask"]);
    let h = mu.len();
    let mut seen = vec![0f64; h];
    let mut all = vec![0f64; h];
    let (mut ns, mut na) = (0.0, 0.0);
    for (d, toks) in s.iter().enumerate() {
        for (tok, &m) in toks.iter().zip(&mask[d]) {
            if m == 0.0 {
                continue;
            }
            for j in 0..h {
                all[j] += tok[j] as f64;
                if d != writer {
                    seen[j] += tok[j] as f64;
                }
            }
            na += 1.0;
            if d != writer {
                ns += 1.0;
            }
        }
    }
    let gap_seen = (0..h)
        .map(|j| (seen[j] / ns - mu[j] as f64).abs())
        .fold(0.0, f64::max);
    let gap_all = (0..h)
        .map(|j| (all[j] / na - mu[j] as f64).abs())
        .fold(0.0, f64::max);
    assert!(gap_seen < 1e-5, "{gap_seen}");
    assert!(
        gap_all > 1e-4,
        "the held-out domain's tokens were used: {gap_all}"
    );
    // The plain mean of standardised states is the standardised plain mean.
    let m = params["normalize_matrix"].to_vec2::<f32>().unwrap();
    let raw = masked_mean(&t["states"], &t["mask"]);
    let want: Vec<Vec<f32>> = raw
        .iter()
        .map(|r| (0..h).map(|j| (r[j] - mu[j]) * m[j][j]).collect())
        .collect();
    assert!(max_diff(&rows(&dm), &want) < 1e-4);
    // Whitened: finite, and the same run folder scheme.
    cfg.pool.normalize = Normalize::Whiten;
    cfg.pool.mode = PoolMode::Parameterless;
    let (r, dir, dm) = run(&cfg);
    assert!(dir.ends_with(format!(
        "pool-parameterless-mean-whiten-{}",
        from.file_name().unwrap().to_str().unwrap()
    )));
    assert!(rows(&dm).iter().flatten().all(|x| x.is_finite()));
    assert!(r.kernel_perplexity.unwrap().pooling.is_finite());
}

#[test]
fn token_states_without_names_pool_but_refuse_the_name_query() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    let from = embedded(&cfg);
    // The file as embed wrote it before names were recorded.
    let old = tmp.path().join("old-embed");
    std::fs::create_dir_all(&old).unwrap();
    let mut t = load(&from.join("token_states.safetensors"));
    t.remove("name_mask");
    candle_core::safetensors::save(&t, old.join("token_states.safetensors")).unwrap();
    cfg.pool.from = Some(old.clone());
    cfg.pool.mode = PoolMode::Parameterless;
    pool(&cfg).unwrap();
    cfg.pool.query = Query::Name;
    let e = format!("{:#}", pool(&cfg).unwrap_err());
    assert!(
        e.contains("old-embed/token_states.safetensors") && e.contains("name_mask"),
        "{e}"
    );
    // A name mask on padding is refused.
    let mut t = load(&from.join("token_states.safetensors"));
    let bad = t["mask"].ones_like().unwrap();
    t.insert("name_mask".into(), bad);
    candle_core::safetensors::save(&t, old.join("token_states.safetensors")).unwrap();
    cfg.pool.run_name = Some("bad".into());
    let e = format!("{:#}", pool(&cfg).unwrap_err());
    assert!(
        e.contains("`name_mask`") && e.contains("real tokens"),
        "{e}"
    );
}

#[test]
fn new_settings_are_validated() {
    for (text, key) in [
        ("[embed]\nlayer = [3, 3]\n", "embed.layer"),
        ("[embed]\nlayer = []\n", "embed.layer"),
        ("[embed]\nencoder = \" \"\n", "embed.encoder"),
        ("[pool]\nshrinkage = 1.5\n", "pool.shrinkage"),
        ("[pool]\nshrinkage = 0.0\n", "pool.shrinkage"),
    ] {
        let c = Config::parse(text).unwrap();
        let e = format!("{:#}", c.validate().unwrap_err());
        assert!(e.contains(&format!("{key} = ")), "{text}: {e}");
    }
    let c = Config::parse("[embed]\nlayer = 4\n[pool]\nnormalize = \"whiten\"\n").unwrap();
    c.validate().unwrap();
    assert_eq!(c.embed.layer, Some(LayerChoice::One(4)));
    assert!(Config::parse("[pool]\nnormalize = \"pca\"\n").is_err());
    assert!(Config::parse("[pool]\nquery = \"first\"\n").is_err());
}

// ---------------------------------------------------------------------------
// The sentence-encoder baseline
// ---------------------------------------------------------------------------

fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn encoder_matches_sentence_transformers() {
    let g = json(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm_golden.json"));
    let enc = llmctr::llm::encoder::load_encoder(&common::minilm(), &Device::Cpu).unwrap();
    let sentences: Vec<&str> = g["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for (s, ids) in sentences.iter().zip(g["ids"].as_array().unwrap()) {
        let want: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            enc.tokenizer.encode_offsets(s, true).unwrap().0,
            want,
            "{s}"
        );
    }
    // One padded batch, as the reference encoded them.
    let got = rows(&enc.encode(&sentences).unwrap());
    let mut worst = (0f32, 0f32);
    for (i, v) in got.iter().enumerate() {
        let mean = f32s(&g["mean"][i]);
        let norm = f32s(&g["normalized"][i]);
        let len = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        for j in 0..v.len() {
            worst.0 = worst.0.max((v[j] - mean[j]).abs());
            worst.1 = worst.1.max((v[j] / len - norm[j]).abs());
        }
    }
    assert!(worst.0 < 1e-4 && worst.1 < 1e-4, "max |Δ| {worst:?}");
    // Token states of sentence 0 alone (no padding) agree too.
    let ids: Vec<u32> = enc.tokenizer.encode_offsets(sentences[0], true).unwrap().0;
    let n = ids.len();
    let x = Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap();
    let m = Tensor::ones((1, n), DType::F32, &Device::Cpu).unwrap();
    let h = enc.states(&x, &m).unwrap().squeeze(0).unwrap();
    let h = rows(&h);
    for (p, want) in g["hidden_first8"].as_array().unwrap().iter().enumerate() {
        let want = f32s(want);
        for j in 0..8 {
            assert!((h[p][j] - want[j]).abs() < 1e-4, "position {p}, dim {j}");
        }
    }
}

#[test]
fn encoder_embed_writes_what_pool_and_train_read() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = setup(tmp.path());
    cfg.embed.method = Method::Encoder;
    cfg.embed.encoder = common::minilm().display().to_string();
    let r = embed(&cfg, false, None).unwrap().unwrap();
    let dir = PathBuf::from(&r.run_dir);
    assert!(dir.ends_with("embed-encoder-ml100k-occupation-name-seed1"));
    assert_eq!(r.method, "encoder");
    let t = load(&dir.join("token_states.safetensors"));
    let dm = load(&dir.join("domain_embeddings.safetensors"))["domain_embeddings"].clone();
    assert_eq!(dm.dims(), &[21, 384]);
    // The domain embedding is the encoder's mean pooling of the rendered prompt.
    let prompts = json(&dir.join("prompts.json"));
    let texts: Vec<&str> = prompts
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prompt"].as_str().unwrap())
        .collect();
    let enc = llmctr::llm::encoder::load_encoder(&common::minilm(), &Device::Cpu).unwrap();
    let again = enc.encode(&texts).unwrap();
    assert!(common::max_abs_diff(&dm, &again) < 1e-5);
    // Every prompt has name tokens, none on [CLS]/[SEP] or padding.
    for (i, (nm, m)) in rows(&t["name_mask"])
        .iter()
        .zip(rows(&t["mask"]))
        .enumerate()
    {
        assert!(nm.iter().sum::<f32>() >= 1.0, "domain {i}");
        assert_eq!(nm[0], 0.0, "[CLS]");
        let last = m.iter().rposition(|&x| x == 1.0).unwrap();
        assert_eq!(nm[last], 0.0, "[SEP]");
    }
    // Its inputs are the encoder's files, not the LLM's.
    let inputs = json(&dir.join("inputs.json"));
    assert!(
        inputs["model"]["path"]
            .as_str()
            .unwrap()
            .ends_with("all-MiniLM-L6-v2")
    );
    assert_eq!(
        r.kernel_perplexity.unwrap(),
        llmctr::pool::kernel_perplexities(&dm).unwrap()
    );
    // Pool reads its token states; plain mean reproduces the embeddings.
    cfg.pool.mode = PoolMode::Plain;
    cfg.pool.query = Query::Mean;
    let p = pool(&cfg).unwrap();
    let pooled =
        load(&PathBuf::from(&p.run_dir).join("domain_embeddings.safetensors"))["domain_embeddings"]
            .clone();
    assert!(common::max_abs_diff(&dm, &pooled) < 1e-5);
    // train takes the file as model.domain_embeddings.
    let c = llmctr::stages::run::llm_head(&cfg, &dir, "cgc-encoder".into());
    let m = llmctr::stages::train::train(&c, false, None)
        .unwrap()
        .unwrap();
    assert!(m.valid_auc.is_some());
    // embed.layer is a decoder setting.
    cfg.embed.layer = Some(LayerChoice::One(1));
    let e = format!("{:#}", embed(&cfg, false, None).unwrap_err());
    assert!(e.contains("embed.layer"), "{e}");
}
