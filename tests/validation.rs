//! Settings and numeric input files are checked before anything runs, and every
//! refusal names the key, or the file and the tensor.

mod common;

use candle_core::{DType, Device, Tensor};
use clap::Parser;
use llmctr::config::Config;
use llmctr::llm::load::{load_gguf, load_hf_dir};
use llmctr::stages::embed::{Method, embed, render_prompts};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn err<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("accepted"),
        Err(e) => format!("{e:#}"),
    }
}

fn assert_has(e: &str, parts: &[&str]) {
    for p in parts {
        assert!(e.contains(p), "{p:?} missing from: {e}");
    }
}

// ---------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------

/// Integer keys where 0 means something (seeds, layer indices, "never", "no minimum").
const ZERO_ALLOWED: [&str; 14] = [
    "data.criteo.min_count",
    "data.shard_rows",
    "train.stream_shards",
    "model.hash_buckets",
    "train.seed",
    "train.min_epochs",
    "embed.seed",
    "pool.seed",
    "embed.lora.layers",
    "embed.layer",
    "embed.ptuning.layers",
    "ablate.seeds",
    "run.seeds",
    // 0: one worker per core.
    "run.workers",
];

/// The defaults with every optional key set, so the walk below sees every key.
fn full_config(tmp: &Path) -> Config {
    let mut c = Config::default();
    c.data.criteo.file = Some(tmp.join("train.txt"));
    c.data.holdout_domains = vec!["student".into()];
    // Left out of a written config at 0: set, so that the walk sees them.
    c.data.shard_rows = 1000;
    c.train.stream_shards = 2;
    c.model.domain_embeddings = Some(tmp.join("d.safetensors"));
    c.train.run_name = Some("r".into());
    c.embed.run_name = Some("e".into());
    c.embed.lora.layers = vec![0, 1];
    c.embed.ptuning.layers = vec![1];
    c.embed.layer = Some(llmctr::stages::embed::LayerChoice::Many(vec![2, 3]));
    c.pool.scale = Some(0.5);
    c.pool.from = Some(tmp.join("embed-run"));
    c.pool.run_name = Some("p".into());
    c.ablate.holdout_recipe = Some("ml100k-age3".into());
    c
}

/// Every numeric leaf of a TOML tree: (dotted key, path of table keys and array index).
fn leaves(v: &toml::Value, key: &str, out: &mut Vec<(String, Vec<String>)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                let key = if key.is_empty() {
                    k.clone()
                } else {
                    format!("{key}.{k}")
                };
                leaves(x, &key, out);
            }
        }
        toml::Value::Float(_) | toml::Value::Integer(_) => {
            out.push((key.to_string(), key.split('.').map(String::from).collect()))
        }
        toml::Value::Array(a) => {
            // Numeric arrays: their first entry stands for all.
            if matches!(
                a.first(),
                Some(toml::Value::Integer(_) | toml::Value::Float(_))
            ) {
                let mut p: Vec<String> = key.split('.').map(String::from).collect();
                p.push("0".into());
                out.push((key.to_string(), p));
            }
        }
        _ => {}
    }
}

fn set(v: &mut toml::Value, path: &[String], x: toml::Value) {
    let mut cur = v;
    for p in path {
        cur = match cur {
            toml::Value::Table(t) => t.get_mut(p).unwrap(),
            toml::Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    *cur = x;
}

#[test]
fn every_numeric_setting_is_validated_and_errors_name_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let full = full_config(tmp.path());
    full.validate().unwrap();
    let tree = toml::Value::try_from(&full).unwrap();
    let mut keys = Vec::new();
    leaves(&tree, "", &mut keys);
    let (mut floats, mut ints) = (0, 0);
    for (key, path) in &keys {
        let probe = |x: toml::Value, must_fail: bool| {
            let mut t = tree.clone();
            set(&mut t, path, x.clone());
            let c: Config = t.try_into().unwrap();
            match (c.validate(), must_fail) {
                (Ok(()), true) => panic!("{key} = {x} was accepted"),
                (Err(e), true) => {
                    let e = format!("{e:#}");
                    assert!(e.contains(&format!("{key} = ")), "{key} = {x}: {e}");
                }
                (Err(e), false) => panic!("{key} = {x} was refused: {e:#}"),
                (Ok(()), false) => {}
            }
        };
        if matches!(get(&tree, path), toml::Value::Float(_)) {
            floats += 1;
            for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5] {
                probe(toml::Value::Float(x), true);
            }
        } else {
            ints += 1;
            probe(
                toml::Value::Integer(0),
                !ZERO_ALLOWED.contains(&key.as_str()),
            );
        }
    }
    // The walk saw the keys (a broken walk would pass vacuously).
    assert!(
        floats >= 14 && ints >= 40,
        "{floats} floats, {ints} integers"
    );
    for key in ZERO_ALLOWED {
        assert!(keys.iter().any(|(k, _)| k == key), "{key} not walked");
    }
}

fn get<'a>(v: &'a toml::Value, path: &[String]) -> &'a toml::Value {
    let mut cur = v;
    for p in path {
        cur = match cur {
            toml::Value::Table(t) => &t[p],
            toml::Value::Array(a) => &a[p.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    cur
}

/// The one walk over the committed configs: every `.toml` under `configs/`
/// (table schemas, `*.schema.toml`, excepted: they are read through a config's
/// `data.schema`) loads — unknown keys are errors — and validates.
#[test]
fn the_defaults_and_every_config_file_are_valid() {
    Config::default().validate().unwrap();
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "toml")
                && !p.to_string_lossy().ends_with(".schema.toml")
            {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("configs"),
        &mut files,
    );
    for p in &files {
        Config::load(Some(p)).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
    }
    assert!(files.len() > 60, "{} config files", files.len());
}

#[test]
fn bad_settings_in_a_file_name_the_file_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let a_file = tmp.path().join("not-a-folder");
    std::fs::write(&a_file, "x").unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        ("[train]\nlr = nan".into(), "train.lr = NaN", "> 0"),
        ("[train]\nlr = inf".into(), "train.lr = inf", "finite"),
        ("[train]\nlr = -1e-3".into(), "train.lr = -0.001", "> 0"),
        (
            "[train]\nweight_decay = nan".into(),
            "train.weight_decay = NaN",
            "≥ 0",
        ),
        (
            "[model]\ndropout = 1.0".into(),
            "model.dropout = 1",
            "[0, 1)",
        ),
        (
            "[model]\ndropout = -0.1".into(),
            "model.dropout = -0.1",
            "[0, 1)",
        ),
        (
            "[model]\nembedding_dim = 0".into(),
            "model.embedding_dim = 0",
            "at least 1",
        ),
        (
            "[model.mmoe]\nexperts = 0".into(),
            "model.mmoe.experts = 0",
            "at least 1",
        ),
        (
            "[model.cgc]\nshared_experts = 0".into(),
            "model.cgc.shared_experts = 0",
            "at least 1",
        ),
        (
            "[model.star]\npn_momentum = nan".into(),
            "model.star.pn_momentum = NaN",
            "(0, 1]",
        ),
        (
            "[model.dnn]\nhidden = [64, 0]".into(),
            "model.dnn.hidden = [64, 0]",
            "entry 1",
        ),
        (
            format!("[train]\nruns_dir = {:?}", a_file.display().to_string()),
            "train.runs_dir = ",
            "is a file",
        ),
        (
            "[embed]\nmax_prompt_tokens = 0".into(),
            "embed.max_prompt_tokens = 0",
            "at least 1",
        ),
        ("[embed]\nlr = nan".into(), "embed.lr = NaN", "> 0"),
        (
            "[embed.lora]\ndropout = 1.5".into(),
            "embed.lora.dropout = 1.5",
            "[0, 1)",
        ),
        (
            "[embed]\ndevice = \"gpu\"".into(),
            "embed.device = \"gpu\"",
            "cuda:N",
        ),
        ("[pool]\nscale = nan".into(), "pool.scale = NaN", "> 0"),
        (
            "[data]\nrecipe = \"ml100k-zip\"".into(),
            "data.recipe = \"ml100k-zip\"",
            "known",
        ),
        (
            "[data.criteo]\ndomain_field = \"C27\"".into(),
            "data.criteo.domain_field",
            "C1-C26",
        ),
        (
            "[ablate]\nrecipes = [\"x\"]".into(),
            "ablate.recipes[0] = \"x\"",
            "unknown recipe",
        ),
    ];
    for (i, (text, key, allowed)) in cases.iter().enumerate() {
        let p = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let e = err(Config::load(Some(&p)));
        assert_has(&e, &[&format!("bad{i}.toml"), key, allowed]);
    }
    // Several problems are reported together.
    let e = err(Config::parse("[train]\nlr = nan\nepochs = 0\n")
        .unwrap()
        .validate());
    assert_has(&e, &["train.lr = NaN", "train.epochs = 0"]);
}

#[test]
fn flags_are_validated_after_they_are_applied() {
    use llmctr::cli::{Cli, Command};
    let tmp = tempfile::tempdir().unwrap();
    let a_file = tmp.path().join("file");
    std::fs::write(&a_file, "x").unwrap();
    let f = a_file.to_str().unwrap();
    let resolve = |args: &[&str]| -> anyhow::Result<Config> {
        match Cli::try_parse_from(args).unwrap().command {
            Command::Train(a) => a.resolve(None),
            Command::Data(llmctr::cli::DataCommand::Prepare(a)) => a.resolve(),
            _ => unreachable!(),
        }
    };
    resolve(&["pipeline", "train", "--epochs", "3"]).unwrap();
    let e = err(resolve(&["pipeline", "train", "--epochs", "0"]));
    assert_has(&e, &["command-line flags", "train.epochs = 0"]);
    let e = err(resolve(&["pipeline", "train", "--runs-dir", f]));
    assert_has(&e, &["command-line flags", "train.runs_dir", "is a file"]);
    let e = err(resolve(&["pipeline", "train", "--recipe", "ml100k-zip"]));
    assert_has(&e, &["data.recipe = \"ml100k-zip\""]);
    let prepared = format!("data.prepared_dir={f}");
    let e = err(resolve(&[
        "pipeline", "data", "prepare", "--set", &prepared,
    ]));
    assert_has(&e, &["command-line flags", "data.prepared_dir"]);
    // The binary applies the embed and pool flags the same way.
    let models = format!("data.models_dir={f}");
    for args in [
        vec!["embed", "--runs-dir", f],
        vec!["pool", "--runs-dir", f],
        vec!["compare", "--runs-dir", f],
        vec!["data", "fetch", "--set", &models],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline"))
            .args(&args)
            .current_dir(tmp.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let e = String::from_utf8_lossy(&out.stderr);
        assert_has(&e, &["command-line flags", "is a file"]);
    }
}

// ---------------------------------------------------------------------------
// Numeric input files
// ---------------------------------------------------------------------------

/// A prepared ml100k-occupation (21 domains) under `tmp`, and its config.
fn prepared(tmp: &Path) -> (Config, PathBuf) {
    let raw = tmp.join("raw");
    common::write_small_ml100k(&raw.join("ml-100k"), 60, 50);
    let mut cfg = common::config("ml100k-occupation", &raw, &tmp.join("prepared"));
    cfg.train.runs_dir = tmp.join("runs");
    cfg.pool.runs_dir = tmp.join("runs");
    let p = llmctr::stages::prepare::prepare(&cfg, false).unwrap();
    (cfg, p.dir)
}

fn save(path: &Path, tensors: &[(&str, Tensor)]) {
    let m: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.clone()))
        .collect();
    candle_core::safetensors::save(&m, path).unwrap();
}

/// `n` values 0.01·i with `bad` at flat index `at`.
fn values(shape: &[usize], at: usize, bad: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
    v[at] = bad;
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

#[test]
fn domain_embeddings_with_nan_or_inf_are_refused_naming_file_tensor_and_index() {
    use llmctr::models::config::DomainInput;
    use llmctr::train::trainer::Trainer;
    let tmp = tempfile::tempdir().unwrap();
    let (mut cfg, dir) = prepared(tmp.path());
    let file = tmp.path().join("dm.safetensors");
    cfg.model.domain_input = DomainInput::Fixed;
    cfg.model.domain_embeddings = Some(file.clone());
    cfg.model.domain_embeddings_tensor = "vecs".into();
    save(&file, &[("vecs", values(&[21, 8], 0, 0.5))]);
    assert!(Trainer::new(&cfg, &dir).is_ok(), "the clean matrix loads");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        // Row 2, column 5; an earlier finite value elsewhere does not matter.
        save(&file, &[("vecs", values(&[21, 8], 2 * 8 + 5, bad))]);
        let e = err(Trainer::new(&cfg, &dir));
        assert_has(
            &e,
            &["dm.safetensors", "`vecs`", "[2, 5]", &bad.to_string()],
        );
    }
    save(&file, &[("vecs", values(&[20, 8], 0, 0.5))]);
    let e = err(Trainer::new(&cfg, &dir));
    assert_has(&e, &["dm.safetensors", "`vecs`", "[20, 8]", "(21, h)"]);
    std::fs::write(&file, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"vecs\":").unwrap();
    let e = err(Trainer::new(&cfg, &dir));
    assert_has(&e, &["dm.safetensors", "model.domain_embeddings"]);
}

#[test]
fn token_states_with_nan_or_inf_or_a_bad_mask_are_refused() {
    use llmctr::stages::pool::{PoolMode, pool};
    let tmp = tempfile::tempdir().unwrap();
    let (mut cfg, _) = prepared(tmp.path());
    let run = tmp.path().join("embed-run");
    std::fs::create_dir_all(&run).unwrap();
    let file = run.join("token_states.safetensors");
    cfg.pool.from = Some(run.clone());
    cfg.pool.mode = PoolMode::Parameterless;
    let ones = Tensor::ones((21, 4), DType::F32, &Device::Cpu).unwrap();
    let (d, t, h) = (21, 4, 6);
    for (i, bad) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
        .iter()
        .enumerate()
    {
        save(
            &file,
            &[
                ("states", values(&[d, t, h], (3 * t + 1) * h + 2, *bad)),
                ("mask", ones.clone()),
            ],
        );
        cfg.pool.run_name = Some(format!("p{i}"));
        let e = err(pool(&cfg));
        assert_has(
            &e,
            &[
                "token_states.safetensors",
                "`states`",
                "[3, 1, 2]",
                &bad.to_string(),
            ],
        );
    }
    let mut mask = vec![1f32; d * t];
    mask[5 * t + 2] = 0.5;
    let mask = Tensor::from_vec(mask, (d, t), &Device::Cpu).unwrap();
    save(
        &file,
        &[("states", values(&[d, t, h], 0, 0.0)), ("mask", mask)],
    );
    let e = err(pool(&cfg));
    assert_has(&e, &["token_states.safetensors", "`mask`", "[5, 2]"]);
    save(
        &file,
        &[
            ("states", values(&[d, t, h], 0, 0.0)),
            ("mask", ones.clone()),
        ],
    );
    cfg.pool.run_name = Some("clean".into());
    pool(&cfg).unwrap();
    // Truncated: the file is named.
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    cfg.pool.run_name = Some("cut".into());
    let e = err(pool(&cfg));
    assert_has(&e, &["token_states.safetensors", "truncated"]);
}

#[test]
fn empty_or_too_long_prompt_templates_name_the_template_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, dir) = prepared(tmp.path());
    let model = tmp.path().join("tiny");
    common::write_tiny_llama(&model, 3, false);
    let llm = load_hf_dir(&model, &Device::Cpu).unwrap();
    let meta = llmctr::data::dataset::Dataset::load(&dir, &[], 0)
        .unwrap()
        .meta;
    let t = tmp.path().join("tmpl.txt");
    for text in ["", " ", "\n\n", " \t\r\n "] {
        std::fs::write(&t, text).unwrap();
        let e = err(render_prompts(&t, &meta, None, &llm, 512, &[]));
        assert_has(&e, &["tmpl.txt", "empty"]);
    }
    std::fs::write(&t, "Domain {domain} of {dataset}.").unwrap();
    let p = render_prompts(&t, &meta, None, &llm, 512, &[]).unwrap();
    let longest = *p.lens.iter().max().unwrap();
    let (d, n) = p
        .lens
        .iter()
        .enumerate()
        .find(|(_, n)| **n == longest)
        .map(|(i, n)| (meta.domains[i].name.clone(), *n))
        .unwrap();
    let e = err(render_prompts(&t, &meta, None, &llm, longest - 1, &[]));
    assert_has(
        &e,
        &[
            "tmpl.txt",
            &format!("{d:?}"),
            &format!("{n} tokens"),
            &format!("embed.max_prompt_tokens = {}", longest - 1),
        ],
    );
    render_prompts(&t, &meta, None, &llm, longest, &[]).unwrap();
}

/// The tiny checkpoint's tensors as a GGUF file (f32), with its byte-level vocabulary.
fn write_tiny_gguf(hf: &Path, out: &Path) {
    use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
    let t = candle_core::safetensors::load(hf.join("model.safetensors"), &Device::Cpu).unwrap();
    let gguf = |h: &str| -> String {
        if h == "model.embed_tokens.weight" {
            return "token_embd.weight".into();
        }
        if h == "model.norm.weight" {
            return "output_norm.weight".into();
        }
        let rest = h.strip_prefix("model.layers.").unwrap();
        let (i, name) = rest.split_once('.').unwrap();
        let g = match name {
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            "input_layernorm.weight" => "attn_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            other => panic!("{other}"),
        };
        format!("blk.{i}.{g}")
    };
    let mut names: Vec<&String> = t.keys().collect();
    names.sort();
    let q: Vec<(String, QTensor)> = names
        .iter()
        .map(|h| (gguf(h), QTensor::quantize(&t[*h], GgmlDType::F32).unwrap()))
        .collect();
    let tok: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("tokenizer.json")).unwrap()).unwrap();
    let mut vocab: Vec<(String, u64)> = tok["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    vocab.sort_by_key(|(_, i)| *i);
    use gguf_file::Value as V;
    let md: Vec<(&str, V)> = vec![
        ("general.architecture", V::String("llama".into())),
        ("llama.attention.head_count", V::U32(4)),
        ("llama.attention.head_count_kv", V::U32(2)),
        ("llama.embedding_length", V::U32(32)),
        ("llama.feed_forward_length", V::U32(48)),
        ("llama.block_count", V::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("tokenizer.ggml.model", V::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens",
            V::Array(vocab.into_iter().map(|(s, _)| V::String(s)).collect()),
        ),
        ("tokenizer.ggml.merges", V::Array(Vec::new())),
    ];
    let md_refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
    let q_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(out).unwrap();
    gguf_file::write(&mut f, &md_refs, &q_refs).unwrap();
}

#[test]
fn a_truncated_gguf_names_the_file_and_the_tensor() {
    use llmctr::llm::config::RopeLayout;
    let tmp = tempfile::tempdir().unwrap();
    let hf = tmp.path().join("tiny");
    common::write_tiny_llama(&hf, 5, false);
    let whole = tmp.path().join("tiny.gguf");
    write_tiny_gguf(&hf, &whole);
    load_gguf(&whole, RopeLayout::Interleaved, &Device::Cpu).unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let cut = tmp.path().join("cut.gguf");
    // Every cut: in the header the file is named; in the data also the tensor.
    let header_end = {
        let mut f = std::fs::File::open(&whole).unwrap();
        candle_core::quantized::gguf_file::Content::read(&mut f)
            .unwrap()
            .tensor_data_offset as usize
    };
    let mut cuts: Vec<usize> = (0..bytes.len()).step_by(997).collect();
    cuts.extend([header_end - 1, header_end, header_end + 1, bytes.len() - 1]);
    for n in cuts {
        std::fs::write(&cut, &bytes[..n]).unwrap();
        let e = err(load_gguf(&cut, RopeLayout::Interleaved, &Device::Cpu));
        assert_has(&e, &["cut.gguf"]);
        if n >= header_end {
            assert_has(&e, &["truncated", "tensor `"]);
        }
    }
}

/// Shapes of every tensor of the tiny checkpoint.
fn checkpoint(dir: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

#[test]
fn a_checkpoint_tensor_of_the_wrong_shape_is_named_with_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let cfg = common::write_tiny_llama(&dir, 6, true);
    let good = checkpoint(&dir);
    let expected: HashMap<String, Vec<usize>> = cfg.tensor_shapes().into_iter().collect();
    assert_eq!(expected.len(), good.len());
    // Every tensor in turn gets one more row.
    for name in good.keys() {
        let mut t = good.clone();
        let shape = t[name].dims().to_vec();
        let mut wrong = shape.clone();
        wrong[0] += 1;
        t.insert(
            name.clone(),
            Tensor::zeros(wrong.as_slice(), DType::F32, &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
        let e = err(load_hf_dir(&dir, &Device::Cpu));
        assert_has(
            &e,
            &[
                "model.safetensors",
                &format!("`{name}`"),
                &format!("{wrong:?}"),
                &format!("expected {:?}", expected[name]),
            ],
        );
    }
    candle_core::safetensors::save(&good, dir.join("model.safetensors")).unwrap();
    load_hf_dir(&dir, &Device::Cpu).unwrap();
}

#[test]
fn a_tokenizer_larger_than_the_embedding_matrix_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny");
    let mut cfg = common::write_tiny_llama(&dir, 7, false);
    // 200 rows for a tokenizer of 256 ids.
    cfg.vocab_size = 200;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&cfg).unwrap(),
    )
    .unwrap();
    let mut t = checkpoint(&dir);
    let e = t["model.embed_tokens.weight"].narrow(0, 0, 200).unwrap();
    t.insert("model.embed_tokens.weight".into(), e);
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let e = err(load_hf_dir(&dir, &Device::Cpu));
    assert_has(
        &e,
        &[
            "tokenizer.json",
            "ids up to 255",
            "model.embed_tokens.weight",
            "model.safetensors",
            "200 rows",
        ],
    );
}

#[test]
fn a_truncated_or_mismatched_embed_checkpoint_is_named_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut cfg, _) = prepared(tmp.path());
    let model = tmp.path().join("tiny");
    common::write_tiny_llama(&model, 8, false);
    let t = tmp.path().join("t.txt");
    std::fs::write(&t, "{domain}: {rows} rows.").unwrap();
    let e = &mut cfg.embed;
    e.model = model.display().to_string();
    e.method = Method::Lora;
    e.template = t;
    e.epochs = 2;
    e.batch_size = 256;
    e.batches_per_llm_step = 4;
    e.runs_dir = tmp.path().join("runs");
    e.run_name = Some("r".into());
    assert!(embed(&cfg, false, Some(1)).unwrap().is_none());
    let file = tmp.path().join("runs/r/checkpoint.safetensors");
    let good = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    for n in [0, 7, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&file, &bytes[..n]).unwrap();
        let e = err(embed(&cfg, true, None));
        assert_has(&e, &["runs/r/checkpoint.safetensors"]);
    }
    // Every tensor in turn: one value more, or a NaN.
    let mut names: Vec<&String> = good.keys().collect();
    names.sort();
    for name in names {
        let x = &good[name];
        let mut t = good.clone();
        let mut wrong = x.dims().to_vec();
        *wrong.last_mut().unwrap() += 1;
        t.insert(
            name.clone(),
            Tensor::zeros(wrong.as_slice(), DType::F32, &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&t, &file).unwrap();
        let e = err(embed(&cfg, true, None));
        assert_has(
            &e,
            &[
                "checkpoint.safetensors",
                &format!("`{name}`"),
                &format!("{wrong:?}"),
                &format!("{:?}", x.dims()),
            ],
        );
        let mut t = good.clone();
        let mut v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        v[0] = f32::NAN;
        t.insert(
            name.clone(),
            Tensor::from_vec(v, x.dims(), &Device::Cpu).unwrap(),
        );
        candle_core::safetensors::save(&t, &file).unwrap();
        let e = err(embed(&cfg, true, None));
        assert_has(&e, &["checkpoint.safetensors", &format!("`{name}`"), "NaN"]);
    }
    candle_core::safetensors::save(&good, &file).unwrap();
    embed(&cfg, true, None).unwrap().unwrap();
}
