//! Golden values from Hugging Face transformers (and PEFT) loading the same GGUF:
//! tests/fixtures/smollm2_golden.json, made by
//! `python3 notebooks/reference/llm/golden_smollm2.py` (see its README).

mod common;

use candle_core::{Device, Tensor, Var};
use llmctr::llm::adapters::{Adapters, Prefix, PrefixConfig};
use llmctr::llm::config::RopeLayout;
use llmctr::nn::rng::Rng;
use serde_json::Value;

fn golden() -> Value {
    let p =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2_golden.json");
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn states(g: &Value, ad: &Adapters, l: &llmctr::llm::load::Loaded) -> (Vec<Vec<f32>>, usize) {
    let ids: Vec<u32> = g["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect();
    let n = ids.len();
    let x = Tensor::from_vec(ids, (1, n), &Device::Cpu).unwrap();
    let h = l
        .decoder
        .hidden_states(&x, ad, false, &mut Rng::new(0))
        .unwrap();
    (h.squeeze(0).unwrap().to_vec2::<f32>().unwrap(), n)
}

#[test]
fn token_ids_hidden_states_and_logits_match_transformers() {
    let g = golden();
    let l = llmctr::llm::load::load_gguf(&common::smollm2(), RopeLayout::Interleaved, &Device::Cpu)
        .unwrap();
    for t in g["tokens"].as_array().unwrap() {
        let want: Vec<u32> = t["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let text = t["text"].as_str().unwrap();
        assert_eq!(
            l.tokenizer.encode(text).unwrap(),
            want,
            "token ids of {text:?}"
        );
    }
    let hg = &g["hidden"];
    let (h, n) = states(hg, &Adapters::none(), &l);
    let mut worst = 0f32;
    for (pos, want) in hg["first8_per_position"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        worst = worst.max(max_diff(&h[pos][..8], &f32s(want)));
    }
    worst = worst.max(max_diff(&h[n - 1], &f32s(&hg["last_position_full"])));
    assert!(worst < 1e-3, "hidden states differ by {worst}");
    let x = Tensor::new(h.clone(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let logits = l
        .decoder
        .logits(&x)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let want = f32s(&g["logits_last"]);
    let d = max_diff(&logits[n - 1][..want.len()], &want);
    assert!(d < 1e-2, "logits differ by {d}");
}

#[test]
fn prefix_tuning_matches_peft() {
    let g = golden();
    let pg = &g["prefix_hidden"];
    let l = llmctr::llm::load::load_gguf(&common::smollm2(), RopeLayout::Interleaved, &Device::Cpu)
        .unwrap();
    let cfg = &l.decoder.cfg;
    let (p, width) = (4usize, 30 * 2 * 3 * 64);
    // The fixture's prompt_embeddings: W[v, j] = 0.5·sin(0.37·v + 0.0011·j).
    let w: Vec<f32> = (0..p * width)
        .map(|i| (0.5 * (0.37 * (i / width) as f64 + 0.0011 * (i % width) as f64).sin()) as f32)
        .collect();
    let emb = Var::from_tensor(&Tensor::from_vec(w, (p, width), &Device::Cpu).unwrap()).unwrap();
    let pc = PrefixConfig {
        virtual_tokens: p,
        ..Default::default()
    };
    let prefix = Prefix::from_direct(pc, (0..30).collect(), emb, cfg.kv_heads(), cfg.head_dim());
    let ad = Adapters::from_parts(Vec::new(), None, Some(prefix));
    let (h, _) = states(pg, &ad, &l);
    let mut worst = 0f32;
    for (pos, want) in pg["first8_per_position"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        worst = worst.max(max_diff(&h[pos][..8], &f32s(want)));
    }
    assert!(
        worst < 1e-3,
        "prefix-tuned states differ from PEFT's by {worst}"
    );
}
