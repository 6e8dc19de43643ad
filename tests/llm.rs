//! The trainable decoder, its adapters and the PEFT layout, on a tiny random
//! checkpoint the test writes.

mod common;

use candle_core::{Device, Tensor};
use llmctr::llm::adapters::{Adapters, LoraConfig, PrefixConfig, Target};
use llmctr::llm::config::RopeLayout;
use llmctr::llm::load::load_hf_dir;
use llmctr::llm::peft;
use llmctr::nn::rng::Rng;

fn ids(n: usize, b: usize) -> Tensor {
    let v: Vec<u32> = (0..n * b).map(|i| ((i * 37 + 11) % 256) as u32).collect();
    Tensor::from_vec(v, (b, n), &Device::Cpu).unwrap()
}

fn all_targets() -> LoraConfig {
    LoraConfig {
        targets: Target::ALL.to_vec(),
        ..LoraConfig::default()
    }
}

#[test]
fn every_adapter_variable_gets_a_finite_nonzero_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    for bias in [false, true] {
        common::write_tiny_llama(tmp.path(), 1, bias);
        let l = load_hf_dir(tmp.path(), &Device::Cpu).unwrap();
        let cfg = l.decoder.cfg.clone();
        let mut rng = Rng::new(3);
        let adapters = [
            Adapters::lora(&all_targets(), &cfg, &Device::Cpu, &mut rng).unwrap(),
            Adapters::prefix(
                &PrefixConfig {
                    virtual_tokens: 3,
                    ..Default::default()
                },
                &cfg,
                &Device::Cpu,
                &mut rng,
            )
            .unwrap(),
            Adapters::prefix(
                &PrefixConfig {
                    virtual_tokens: 3,
                    projection: true,
                    projection_hidden: 8,
                    ..Default::default()
                },
                &cfg,
                &Device::Cpu,
                &mut rng,
            )
            .unwrap(),
        ];
        for ad in adapters {
            common::give_b_values(&ad);
            let h = l
                .decoder
                .hidden_states(&ids(6, 2), &ad, true, &mut Rng::new(0))
                .unwrap();
            let w = Tensor::from_vec(
                (0..2 * 6 * 32)
                    .map(|i| ((i as f32) * 0.37).sin())
                    .collect::<Vec<_>>(),
                (2, 6, 32),
                &Device::Cpu,
            )
            .unwrap();
            let grads = (h * w).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in ad.vars() {
                let g = grads
                    .get(v.as_tensor())
                    .unwrap_or_else(|| panic!("{name}: no gradient"));
                let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(
                    g.iter().all(|x| x.is_finite()),
                    "{name}: non-finite gradient"
                );
                assert!(g.iter().any(|x| *x != 0.0), "{name}: zero gradient");
            }
        }
    }
}

/// The layers as one node (the CPU default) against the per-block graph: same
/// states and the same gradient for every adapter variable, for LoRA on all seven
/// projections with dropout, prefixes (direct and projected), q/k/v biases and
/// both rotary layouts, from layer 0 and from a cached middle layer.
#[test]
fn layer_stack_op_matches_the_per_block_graph() {
    let tmp = tempfile::tempdir().unwrap();
    for bias in [false, true] {
        common::write_tiny_llama(tmp.path(), 1, bias);
        let mut l = load_hf_dir(tmp.path(), &Device::Cpu).unwrap();
        let cfg = l.decoder.cfg.clone();
        let mut rng = Rng::new(8);
        let lora = LoraConfig {
            dropout: 0.2,
            ..all_targets()
        };
        let prefix = |projection: bool| PrefixConfig {
            virtual_tokens: 3,
            projection,
            projection_hidden: 8,
            ..Default::default()
        };
        let adapters = [
            Adapters::lora(&lora, &cfg, &Device::Cpu, &mut rng).unwrap(),
            Adapters::prefix(&prefix(false), &cfg, &Device::Cpu, &mut rng).unwrap(),
            Adapters::prefix(&prefix(true), &cfg, &Device::Cpu, &mut rng).unwrap(),
        ];
        for ad in adapters {
            common::give_b_values(&ad);
            for rope in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
                l.decoder.rope = rope;
                for from in [0, 1] {
                    let run = |stack: bool, dec: &mut llmctr::llm::decoder::Decoder| {
                        dec.stack_op = stack;
                        let x = dec.embed_ids(&ids(6, 2)).unwrap();
                        let mut r = Rng::new(4);
                        let x = dec.forward_range(&x, 0, from, &ad, false, &mut r).unwrap();
                        let h = dec.forward_layers(&x, from, &ad, true, &mut r).unwrap();
                        let w = Tensor::from_vec(
                            (0..h.elem_count())
                                .map(|i| ((i as f32) * 0.37).sin())
                                .collect::<Vec<_>>(),
                            h.shape(),
                            &Device::Cpu,
                        )
                        .unwrap();
                        let g = (&h * w).unwrap().sum_all().unwrap().backward().unwrap();
                        (h, g)
                    };
                    let (h1, g1) = run(true, &mut l.decoder);
                    let (h2, g2) = run(false, &mut l.decoder);
                    let scale = common::max_abs_diff(&h2, &h2.zeros_like().unwrap());
                    let d = common::max_abs_diff(&h1, &h2);
                    assert!(d <= 1e-5 * scale, "states differ by {d} (of {scale})");
                    for (name, v) in ad.vars() {
                        if from > 0 && name.contains("layers.0.") {
                            continue;
                        }
                        let (a, b) = (g1.get(v.as_tensor()), g2.get(v.as_tensor()));
                        let (a, b) = (a.expect(&name), b.expect(&name));
                        let scale = common::max_abs_diff(b, &b.zeros_like().unwrap());
                        let d = common::max_abs_diff(a, b);
                        assert!(scale > 0.0, "{name}: zero gradient");
                        assert!(
                            d <= 1e-4 * scale,
                            "{name}: gradients differ by {d} (of {scale})"
                        );
                    }
                }
            }
        }
        l.decoder.stack_op = true;
    }
}

#[test]
fn lora_starts_as_the_base_model_and_merges_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_tiny_llama(tmp.path(), 2, false);
    let mut l = load_hf_dir(tmp.path(), &Device::Cpu).unwrap();
    let cfg = l.decoder.cfg.clone();
    let x = ids(7, 3);
    let base = l
        .decoder
        .hidden_states(&x, &Adapters::none(), false, &mut Rng::new(0))
        .unwrap();
    let ad = Adapters::lora(&all_targets(), &cfg, &Device::Cpu, &mut Rng::new(5)).unwrap();
    let same = l
        .decoder
        .hidden_states(&x, &ad, false, &mut Rng::new(0))
        .unwrap();
    assert_eq!(
        common::max_abs_diff(&base, &same),
        0.0,
        "B = 0: no change at init"
    );
    for m in &ad.lora {
        let v: Vec<f32> = (0..m.b.elem_count())
            .map(|i| ((i % 5) as f32 - 2.0) * 0.05)
            .collect();
        m.b.set(&Tensor::from_vec(v, m.b.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let adapted = l
        .decoder
        .hidden_states(&x, &ad, false, &mut Rng::new(0))
        .unwrap();
    assert!(common::max_abs_diff(&base, &adapted) > 1e-3);
    l.decoder.merge_lora(&ad).unwrap();
    let merged = l
        .decoder
        .hidden_states(&x, &Adapters::none(), false, &mut Rng::new(0))
        .unwrap();
    assert!(
        common::max_abs_diff(&adapted, &merged) < 1e-4,
        "{}",
        common::max_abs_diff(&adapted, &merged)
    );
}

#[test]
fn peft_round_trip_reproduces_the_states() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_tiny_llama(&tmp.path().join("m"), 3, true);
    let l = load_hf_dir(&tmp.path().join("m"), &Device::Cpu).unwrap();
    let cfg = l.decoder.cfg.clone();
    let x = ids(5, 2);
    let mut rng = Rng::new(9);
    let lora = LoraConfig {
        layers: vec![1],
        ..all_targets()
    };
    for (i, ad) in [
        Adapters::lora(&lora, &cfg, &Device::Cpu, &mut rng).unwrap(),
        Adapters::prefix(
            &PrefixConfig {
                virtual_tokens: 4,
                projection: true,
                projection_hidden: 8,
                ..Default::default()
            },
            &cfg,
            &Device::Cpu,
            &mut rng,
        )
        .unwrap(),
        Adapters::prefix(
            &PrefixConfig {
                virtual_tokens: 2,
                layers: vec![1],
                ..Default::default()
            },
            &cfg,
            &Device::Cpu,
            &mut rng,
        )
        .unwrap(),
    ]
    .into_iter()
    .enumerate()
    {
        for m in &ad.lora {
            let v: Vec<f32> = (0..m.b.elem_count())
                .map(|i| (i as f32 * 0.1).sin())
                .collect();
            m.b.set(&Tensor::from_vec(v, m.b.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
        let dir = tmp.path().join(format!("a{i}"));
        peft::save(&dir, &ad, &cfg, "tiny", RopeLayout::HalfSplit).unwrap();
        let names = safetensors_names(&dir.join("adapter_model.safetensors"));
        if i == 0 {
            assert!(
                names.contains(
                    &"base_model.model.model.layers.1.mlp.down_proj.lora_A.weight".to_string()
                ),
                "{names:?}"
            );
            assert_eq!(names.len(), 14);
        } else {
            assert_eq!(names, vec!["prompt_embeddings".to_string()]);
        }
        let back = peft::load(&dir, &cfg, &Device::Cpu, RopeLayout::HalfSplit).unwrap();
        let a = l
            .decoder
            .hidden_states(&x, &ad, false, &mut Rng::new(0))
            .unwrap();
        let b = l
            .decoder
            .hidden_states(&x, &back, false, &mut Rng::new(0))
            .unwrap();
        assert!(
            common::max_abs_diff(&a, &b) < 1e-5,
            "case {i}: {}",
            common::max_abs_diff(&a, &b)
        );
        let c: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("adapter_config.json")).unwrap())
                .unwrap();
        assert_eq!(
            c["peft_type"],
            if i == 0 { "LORA" } else { "PREFIX_TUNING" }
        );
    }
}

#[test]
fn a_peft_file_adapting_one_module_twice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_tiny_llama(&tmp.path().join("m"), 2, true);
    let l = load_hf_dir(&tmp.path().join("m"), &Device::Cpu).unwrap();
    let cfg = l.decoder.cfg.clone();
    let lora = LoraConfig {
        layers: vec![1],
        ..all_targets()
    };
    let ad = Adapters::lora(&lora, &cfg, &Device::Cpu, &mut Rng::new(3)).unwrap();
    let dir = tmp.path().join("a");
    peft::save(&dir, &ad, &cfg, "tiny", RopeLayout::HalfSplit).unwrap();
    let file = dir.join("adapter_model.safetensors");
    let mut t = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    // The same module again under a shorter prefix, as a hand-edited file may have.
    let base = "base_model.model.model.layers.1.mlp.down_proj";
    for ab in ["lora_A", "lora_B"] {
        let x = t[&format!("{base}.{ab}.weight")].clone();
        t.insert(format!("model.layers.1.mlp.down_proj.{ab}.weight"), x);
    }
    candle_core::safetensors::save(&t, &file).unwrap();
    let Err(err) = peft::load(&dir, &cfg, &Device::Cpu, RopeLayout::HalfSplit) else {
        panic!("a module adapted twice was accepted");
    };
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!("{base}.lora_A.weight"))
            && err.contains("model.layers.1.mlp.down_proj.lora_A.weight")
            && err.contains("both adapt down_proj of layer 1"),
        "{err}"
    );
}

fn safetensors_names(p: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = candle_core::safetensors::load(p, &Device::Cpu)
        .unwrap()
        .into_keys()
        .collect();
    v.sort();
    v
}

#[test]
fn prefix_attends_causally_and_shifts_positions() {
    // A prefix changes every position's state; tokens still never see later tokens.
    let tmp = tempfile::tempdir().unwrap();
    common::write_tiny_llama(tmp.path(), 4, false);
    let l = load_hf_dir(tmp.path(), &Device::Cpu).unwrap();
    let cfg = l.decoder.cfg.clone();
    let ad = Adapters::prefix(
        &PrefixConfig {
            virtual_tokens: 3,
            init_std: 1.0,
            ..Default::default()
        },
        &cfg,
        &Device::Cpu,
        &mut Rng::new(1),
    )
    .unwrap();
    let a = ids(6, 1);
    let v: Vec<u32> = a.flatten_all().unwrap().to_vec1::<u32>().unwrap();
    let mut w = v.clone();
    w[5] = (w[5] + 1) % 256;
    let b = Tensor::from_vec(w, (1, 6), &Device::Cpu).unwrap();
    let ha = l
        .decoder
        .hidden_states(&a, &ad, false, &mut Rng::new(0))
        .unwrap();
    let hb = l
        .decoder
        .hidden_states(&b, &ad, false, &mut Rng::new(0))
        .unwrap();
    assert_eq!(
        common::max_abs_diff(&ha.narrow(1, 0, 5).unwrap(), &hb.narrow(1, 0, 5).unwrap()),
        0.0,
        "causal"
    );
    let h0 = l
        .decoder
        .hidden_states(&a, &Adapters::none(), false, &mut Rng::new(0))
        .unwrap();
    assert!(
        common::max_abs_diff(&ha.narrow(1, 0, 1).unwrap(), &h0.narrow(1, 0, 1).unwrap()) > 1e-3,
        "prefix visible"
    );
}

#[test]
fn logits_match_candle_transformers_llama() {
    use candle_transformers::models::llama as ct;
    let tmp = tempfile::tempdir().unwrap();
    common::write_tiny_llama(tmp.path(), 6, false);
    let l = load_hf_dir(tmp.path(), &Device::Cpu).unwrap();
    let x = ids(9, 1);
    let ours = l
        .decoder
        .logits(
            &l.decoder
                .hidden_states(&x, &Adapters::none(), false, &mut Rng::new(0))
                .unwrap(),
        )
        .unwrap();
    let ours_last = ours.narrow(1, 8, 1).unwrap().flatten_all().unwrap();
    let cfg: ct::LlamaConfig =
        serde_json::from_slice(&std::fs::read(tmp.path().join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[tmp.path().join("model.safetensors")],
            candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap()
    };
    let model = ct::Llama::load(vb, &cfg).unwrap();
    let mut cache = ct::Cache::new(false, candle_core::DType::F32, &cfg, &Device::Cpu).unwrap();
    let theirs = model
        .forward(&x, 0, &mut cache)
        .unwrap()
        .flatten_all()
        .unwrap();
    let rel = common::max_abs_diff(&ours_last, &theirs)
        / theirs
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
    assert!(rel < 1e-4, "relative difference {rel}");
}

#[test]
fn interleaved_and_half_split_rotary_agree_on_the_real_gguf() {
    let path = common::smollm2();
    let a = llmctr::llm::load::load_gguf(&path, RopeLayout::Interleaved, &Device::Cpu).unwrap();
    let b = llmctr::llm::load::load_gguf(&path, RopeLayout::HalfSplit, &Device::Cpu).unwrap();
    let v = a
        .tokenizer
        .encode("Rotary layouts must agree, 12345.")
        .unwrap();
    let n = v.len();
    let x = Tensor::from_vec(v, (1, n), &Device::Cpu).unwrap();
    let ha = a
        .decoder
        .hidden_states(&x, &Adapters::none(), false, &mut Rng::new(0))
        .unwrap();
    let hb = b
        .decoder
        .hidden_states(&x, &Adapters::none(), false, &mut Rng::new(0))
        .unwrap();
    assert!(
        common::max_abs_diff(&ha, &hb) < 1e-3,
        "{}",
        common::max_abs_diff(&ha, &hb)
    );
}

#[test]
fn smollm2_logits_match_candle_transformers_on_the_same_f32_weights() {
    use candle_transformers::models::llama as ct;
    let path = common::smollm2();
    let (cfg, tensors, tok) =
        llmctr::llm::load::gguf_tensors(&path, RopeLayout::HalfSplit, &Device::Cpu).unwrap();
    let v = tok
        .encode("The domain \"homemaker\" has 299 ratings.")
        .unwrap();
    let n = v.len();
    let x = Tensor::from_vec(v, (1, n), &Device::Cpu).unwrap();
    let theirs_cfg: ct::LlamaConfig =
        serde_json::from_value(serde_json::to_value(&cfg).unwrap()).unwrap();
    let theirs_cfg = theirs_cfg.into_config(false);
    let vb =
        candle_nn::VarBuilder::from_tensors(tensors.clone(), candle_core::DType::F32, &Device::Cpu);
    let model = ct::Llama::load(vb, &theirs_cfg).unwrap();
    let mut cache =
        ct::Cache::new(false, candle_core::DType::F32, &theirs_cfg, &Device::Cpu).unwrap();
    let theirs = model
        .forward(&x, 0, &mut cache)
        .unwrap()
        .flatten_all()
        .unwrap();
    // Ours, from the GGUF in its own interleaved layout.
    let ours = llmctr::llm::load::load_gguf(&path, RopeLayout::Interleaved, &Device::Cpu).unwrap();
    let h = ours
        .decoder
        .hidden_states(&x, &Adapters::none(), false, &mut Rng::new(0))
        .unwrap();
    let lg = ours
        .decoder
        .logits(&h)
        .unwrap()
        .narrow(1, n - 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap();
    let scale = theirs
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let rel = common::max_abs_diff(&lg, &theirs) / scale;
    assert!(rel < 1e-4, "relative difference {rel}");
}

#[test]
fn lora_saved_from_the_gguf_layout_is_peft_layout() {
    // The same LoRA trained on the interleaved (GGUF) model and saved must equal,
    // in PEFT's file, the LoRA that does the same thing on the half-split model.
    let path = common::smollm2();
    let gi = llmctr::llm::load::load_gguf(&path, RopeLayout::Interleaved, &Device::Cpu).unwrap();
    let gh = llmctr::llm::load::load_gguf(&path, RopeLayout::HalfSplit, &Device::Cpu).unwrap();
    let cfg = gi.decoder.cfg.clone();
    let lc = LoraConfig {
        layers: vec![3],
        targets: vec![Target::Q, Target::K, Target::V],
        ..LoraConfig::default()
    };
    let ad = Adapters::lora(&lc, &cfg, &Device::Cpu, &mut Rng::new(2)).unwrap();
    for m in &ad.lora {
        let v: Vec<f32> = (0..m.b.elem_count())
            .map(|i| ((i * 13 % 17) as f32 - 8.0) * 0.01)
            .collect();
        m.b.set(&Tensor::from_vec(v, m.b.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    peft::save(tmp.path(), &ad, &cfg, "smollm2", RopeLayout::Interleaved).unwrap();
    let as_hf = peft::load(tmp.path(), &cfg, &Device::Cpu, RopeLayout::HalfSplit).unwrap();
    let v = gi.tokenizer.encode("LoRA layouts agree.").unwrap();
    let n = v.len();
    let x = Tensor::from_vec(v, (1, n), &Device::Cpu).unwrap();
    let a = gi
        .decoder
        .hidden_states(&x, &ad, false, &mut Rng::new(0))
        .unwrap();
    let b = gh
        .decoder
        .hidden_states(&x, &as_hf, false, &mut Rng::new(0))
        .unwrap();
    assert!(
        common::max_abs_diff(&a, &b) < 1e-3,
        "{}",
        common::max_abs_diff(&a, &b)
    );
    let back = peft::load(tmp.path(), &cfg, &Device::Cpu, RopeLayout::Interleaved).unwrap();
    for (x, y) in ad.lora.iter().zip(&back.lora) {
        assert_eq!((x.layer, x.target), (y.layer, y.target));
        assert_eq!(
            x.a.as_tensor().to_vec2::<f32>().unwrap(),
            y.a.as_tensor().to_vec2::<f32>().unwrap(),
            "A {:?}",
            x.target
        );
        assert_eq!(
            x.b.as_tensor().to_vec2::<f32>().unwrap(),
            y.b.as_tensor().to_vec2::<f32>().unwrap(),
            "B {:?}",
            x.target
        );
    }
    let c = gi
        .decoder
        .hidden_states(&x, &back, false, &mut Rng::new(0))
        .unwrap();
    assert!(
        common::max_abs_diff(&a, &c) < 1e-5,
        "round trip {}",
        common::max_abs_diff(&a, &c)
    );
}

#[test]
fn permute_inverts_unpermute() {
    let v: Vec<f32> = (0..24 * 3).map(|i| i as f32).collect();
    let w = Tensor::from_vec(v, (24, 3), &Device::Cpu).unwrap();
    let back =
        llmctr::llm::load::permute(&llmctr::llm::load::unpermute(&w, 3).unwrap(), 3).unwrap();
    assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
}

#[test]
fn bad_peft_files_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_tiny_llama(&tmp.path().join("m"), 8, false);
    let l = load_hf_dir(&tmp.path().join("m"), &Device::Cpu).unwrap();
    let cfg = l.decoder.cfg.clone();
    let ad = Adapters::lora(&LoraConfig::default(), &cfg, &Device::Cpu, &mut Rng::new(1)).unwrap();
    let dir = tmp.path().join("a");
    peft::save(&dir, &ad, &cfg, "tiny", RopeLayout::HalfSplit).unwrap();
    // rsLoRA scales differently: refused rather than loaded wrong.
    let conf = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("\"use_rslora\": false", "\"use_rslora\": true"),
    )
    .unwrap();
    let e = peft::load(&dir, &cfg, &Device::Cpu, RopeLayout::HalfSplit)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("use_rslora"), "{e}");
    std::fs::write(&conf, text).unwrap();
    // A model with fewer layers than the adapter adapts.
    let mut small = cfg.clone();
    small.num_hidden_layers = 1;
    let e = format!(
        "{:#}",
        peft::load(&dir, &small, &Device::Cpu, RopeLayout::HalfSplit)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("layer 1") && e.contains("the model has 1"),
        "{e}"
    );
}
