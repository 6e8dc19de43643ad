//! The decoder on every family `embed.model` may name, against transformers.
//!
//! `tests/fixtures/families/<name>/` holds a tiny randomly initialised checkpoint
//! written by transformers and transformers' last hidden states for one prompt
//! (`notebooks/reference/families/write_fixtures.py`). The decoder must give the
//! same states to 1e-4 relative (max |ours − theirs| / max |theirs|), train LoRA
//! and P-Tuning v2 on each, and refuse what it does not compute, naming the key.

mod common;

use candle_core::{Device, Tensor};
use llmctr::llm::adapters::{Adapters, LoraConfig, PrefixConfig, Target};
use llmctr::llm::config::RopeLayout;
use llmctr::llm::load::{Loaded, load_hf_dir};
use llmctr::llm::peft;
use llmctr::nn::rng::Rng;
use std::path::{Path, PathBuf};

const FIXTURES: [&str; 7] = [
    "llama",
    "llama3-rope-scaling",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "phi3",
];

#[derive(serde::Deserialize)]
struct Reference {
    model_type: String,
    prompt: String,
    ids: Vec<u32>,
    shape: Vec<usize>,
    last_hidden_state: Vec<f32>,
    #[serde(default)]
    without_rope_scaling_max_rel: Option<f64>,
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/families/{name}"))
}

fn reference(dir: &Path) -> Reference {
    serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap()
}

fn max_rel(ours: &[f32], theirs: &[f32]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
    let diff = ours
        .iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    f64::from(diff / scale)
}

/// Last hidden states of the reference prompt, flattened.
fn states(l: &Loaded, r: &Reference) -> Vec<f32> {
    let ids = Tensor::from_vec(r.ids.clone(), (1, r.ids.len()), &Device::Cpu).unwrap();
    let h = l
        .decoder
        .hidden_states(&ids, &Adapters::none(), false, &mut Rng::new(0))
        .unwrap();
    assert_eq!(h.dims(), [1, r.shape[0], r.shape[1]]);
    h.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// A copy of fixture `name` whose config.json is changed by `edit`.
fn edited(name: &str, tmp: &Path, edit: impl Fn(&mut serde_json::Value)) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in std::fs::read_dir(fixture(name)).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(dir.join("config.json"), c.to_string()).unwrap();
    dir
}

#[test]
fn every_family_gives_transformers_last_hidden_states() {
    let mut table = vec!["| fixture | model_type | tokens | max rel. diff |".to_string()];
    for name in FIXTURES {
        let dir = fixture(name);
        let r = reference(&dir);
        let mut l = load_hf_dir(&dir, &Device::Cpu).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(l.decoder.cfg.family(), r.model_type);
        assert_eq!(
            l.tokenizer.encode(&r.prompt).unwrap(),
            r.ids,
            "{name}: token ids"
        );
        let rel = max_rel(&states(&l, &r), &r.last_hidden_state);
        assert!(rel <= 1e-4, "{name}: max relative difference {rel:.2e}");
        // The per-block graph (other devices) gives the same states.
        l.decoder.stack_op = false;
        let rel2 = max_rel(&states(&l, &r), &r.last_hidden_state);
        assert!(rel2 <= 1e-4, "{name} (per-block graph): {rel2:.2e}");
        table.push(format!(
            "| {name} | {} | {} | {rel:.1e} |",
            r.model_type,
            r.ids.len()
        ));
    }
    println!("{}", table.join("\n"));
}

/// The scaled-rotary fixture is sensitive to the scaling: computed without it,
/// the states differ by far more than the tolerance, in transformers and here.
#[test]
fn llama3_rope_scaling_is_read_not_ignored() {
    let r = reference(&fixture("llama3-rope-scaling"));
    let off = r.without_rope_scaling_max_rel.unwrap();
    assert!(off > 0.01, "transformers without scaling: {off}");
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited("llama3-rope-scaling", tmp.path(), |c| {
        c["rope_parameters"]["rope_type"] = "default".into();
    });
    let l = load_hf_dir(&dir, &Device::Cpu).unwrap();
    let rel = max_rel(&states(&l, &r), &r.last_hidden_state);
    assert!(rel > 0.01, "the default rotary gave {rel:.2e}");
    // transformers 4 spelled it `rope_scaling` beside a top-level `rope_theta`.
    let dir = edited("llama3-rope-scaling", &tmp.path().join("v4"), |c| {
        let mut p = c["rope_parameters"].take();
        let theta = p["rope_theta"].take();
        p.as_object_mut().unwrap().remove("rope_theta");
        c.as_object_mut().unwrap().remove("rope_parameters");
        c["rope_theta"] = theta;
        c["rope_scaling"] = p;
    });
    let l = load_hf_dir(&dir, &Device::Cpu).unwrap();
    let rel = max_rel(&states(&l, &r), &r.last_hidden_state);
    assert!(rel <= 1e-4, "rope_scaling spelling: {rel:.2e}");
}

#[test]
fn lora_and_ptuning_train_and_round_trip_on_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    for name in FIXTURES {
        let l = load_hf_dir(&fixture(name), &Device::Cpu).unwrap();
        let cfg = l.decoder.cfg.clone();
        let h = cfg.hidden_size;
        let mut rng = Rng::new(3);
        let lora = LoraConfig {
            targets: Target::ALL.to_vec(),
            ..LoraConfig::default()
        };
        let prefix = PrefixConfig {
            virtual_tokens: 3,
            ..Default::default()
        };
        let adapters = [
            Adapters::lora(&lora, &cfg, &Device::Cpu, &mut rng).unwrap(),
            Adapters::prefix(&prefix, &cfg, &Device::Cpu, &mut rng).unwrap(),
        ];
        let ids = Tensor::from_vec(
            (0..12u32).map(|i| (i * 37 + 11) % 300).collect::<Vec<_>>(),
            (2, 6),
            &Device::Cpu,
        )
        .unwrap();
        for (i, ad) in adapters.into_iter().enumerate() {
            common::give_b_values(&ad);
            let s = l
                .decoder
                .hidden_states(&ids, &ad, true, &mut Rng::new(0))
                .unwrap();
            let w = Tensor::from_vec(
                (0..2 * 6 * h)
                    .map(|i| ((i as f32) * 0.37).sin())
                    .collect::<Vec<_>>(),
                (2, 6, h),
                &Device::Cpu,
            )
            .unwrap();
            let grads = (s * w).unwrap().sum_all().unwrap().backward().unwrap();
            for (var, v) in ad.vars() {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: {var}: no gradient"))
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert!(g.iter().all(|x| x.is_finite()), "{name}: {var}: non-finite");
                assert!(g.iter().any(|x| *x != 0.0), "{name}: {var}: zero gradient");
            }
            // Saved in PEFT's layout and read back: the same states.
            let dir = tmp.path().join(format!("{name}-{i}"));
            peft::save(&dir, &ad, &cfg, name, RopeLayout::HalfSplit).unwrap();
            let back = peft::load(&dir, &cfg, &Device::Cpu, RopeLayout::HalfSplit).unwrap();
            let a = l
                .decoder
                .hidden_states(&ids, &ad, false, &mut Rng::new(0))
                .unwrap();
            let b = l
                .decoder
                .hidden_states(&ids, &back, false, &mut Rng::new(0))
                .unwrap();
            let d = common::max_abs_diff(&a, &b);
            assert!(d < 1e-5, "{name} adapters {i}: PEFT round trip {d}");
        }
    }
}

/// What the decoder does not compute is refused, and the error names the key.
#[test]
fn unsupported_architectures_and_keys_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, &str, Edit, &str)> = vec![
        (
            "llama",
            "gemma2",
            Box::new(|c| c["model_type"] = "gemma2".into()),
            "model_type = \"gemma2\"",
        ),
        (
            "llama",
            "yarn",
            Box::new(|c| c["rope_parameters"]["rope_type"] = "yarn".into()),
            "rope_parameters.rope_type = \"yarn\"",
        ),
        (
            "phi3",
            "partial",
            Box::new(|c| c["rope_parameters"]["partial_rotary_factor"] = 0.75.into()),
            "partial_rotary_factor = 0.75",
        ),
        (
            "llama",
            "v4-partial",
            Box::new(|c| c["partial_rotary_factor"] = 0.5.into()),
            "partial_rotary_factor = 0.5",
        ),
        (
            "gemma",
            "softcap",
            Box::new(|c| c["attn_logit_softcapping"] = 50.0.into()),
            "attn_logit_softcapping",
        ),
        (
            "llama",
            "act",
            Box::new(|c| c["hidden_act"] = "relu".into()),
            "hidden_act = \"relu\"",
        ),
        (
            "llama",
            "mlp-bias",
            Box::new(|c| c["mlp_bias"] = true.into()),
            "mlp_bias",
        ),
        (
            "llama",
            "dynamic",
            Box::new(|c| {
                c.as_object_mut().unwrap().remove("rope_parameters");
                c["rope_theta"] = 10000.0.into();
                c["rope_scaling"] = serde_json::json!({"type": "dynamic", "factor": 2.0});
            }),
            "rope_scaling.rope_type = \"dynamic\"",
        ),
        (
            "llama",
            "both",
            Box::new(|c| {
                c["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": 2.0})
            }),
            "disagree",
        ),
    ];
    for (base, label, edit, expect) in cases {
        let dir = edited(base, &tmp.path().join(label), edit);
        let err = match load_hf_dir(&dir, &Device::Cpu) {
            Ok(_) => panic!("{label}: loaded"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(expect), "{label}: {err}");
        println!("{label}: {err}");
    }
    // A sliding window shorter than the prompt: refused when the prompt is run.
    let r = reference(&fixture("mistral"));
    let dir = edited("mistral", &tmp.path().join("window"), |c| {
        c["sliding_window"] = 16.into();
    });
    let l = load_hf_dir(&dir, &Device::Cpu).unwrap();
    let ids = Tensor::from_vec(r.ids.clone(), (1, r.ids.len()), &Device::Cpu).unwrap();
    let err = l
        .decoder
        .hidden_states(&ids, &Adapters::none(), false, &mut Rng::new(0))
        .err()
        .unwrap();
    assert!(
        format!("{err:#}").contains("sliding_window = 16"),
        "{err:#}"
    );
    // Within the window, the window changes nothing.
    let ok = edited("mistral", &tmp.path().join("window-ok"), |c| {
        c["sliding_window"] = r.ids.len().into();
    });
    let l = load_hf_dir(&ok, &Device::Cpu).unwrap();
    assert!(max_rel(&states(&l, &r), &r.last_hidden_state) <= 1e-4);
    // Qwen2's window binds only with use_sliding_window.
    let q = edited("qwen2", &tmp.path().join("qwen-window"), |c| {
        c["sliding_window"] = 16.into();
    });
    let l = load_hf_dir(&q, &Device::Cpu).unwrap();
    let r = reference(&fixture("qwen2"));
    assert!(max_rel(&states(&l, &r), &r.last_hidden_state) <= 1e-4);
}
