//! On a CUDA GPU (`cargo test --release --features cuda --test cuda`, run by
//! notebooks/cuda/gpu_check.sh): the decoder gives the CPU's states for every
//! family fixture, and an embed run on the GPU writes the CPU run's token
//! states. Compiled only with the `cuda` feature.
#![cfg(feature = "cuda")]

mod common;

use candle_core::{Device, Tensor};
use llmctr::llm::adapters::Adapters;
use llmctr::llm::load::load_hf_dir;
use llmctr::nn::rng::Rng;
use std::path::Path;

fn max_rel(ours: &[f32], theirs: &[f32]) -> f32 {
    let scale = theirs.iter().fold(0f32, |m, x| m.max(x.abs()));
    ours.iter()
        .zip(theirs)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

#[test]
fn every_family_gives_the_cpu_states_on_the_gpu() {
    let gpu = Device::new_cuda(0).expect("no CUDA device 0");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/families");
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        let ids: Vec<u32> = (0..40u32).map(|i| (i * 37 + 11) % 300).collect();
        let states = |dev: &Device| -> Vec<f32> {
            let l = load_hf_dir(&dir, dev).unwrap();
            let x = Tensor::from_vec(ids.clone(), (1, ids.len()), dev).unwrap();
            l.decoder
                .hidden_states(&x, &Adapters::none(), false, &mut Rng::new(0))
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let rel = max_rel(&states(&gpu), &states(&Device::Cpu));
        println!("{}: GPU vs CPU max rel. diff {rel:.2e}", dir.display());
        assert!(rel <= 1e-4, "{}: {rel}", dir.display());
    }
}

#[test]
fn an_embed_run_on_the_gpu_writes_the_cpu_states() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = common::tiny_run_config(tmp.path());
    let mut states = Vec::new();
    for device in ["cpu", "cuda"] {
        let mut c = llmctr::config::Config::load(Some(&cfg_path)).unwrap();
        c.embed.device = device.into();
        c.embed.run_name = Some(format!("embed-{device}"));
        let r = llmctr::stages::embed::embed(&c, false, None)
            .unwrap()
            .unwrap();
        let t = llmctr::tensor_io::load_safetensors(
            &Path::new(&r.run_dir).join("token_states.safetensors"),
        )
        .unwrap();
        states.push(t["states"].flatten_all().unwrap().to_vec1::<f32>().unwrap());
    }
    let rel = max_rel(&states[1], &states[0]);
    println!("embed (LoRA, 1 epoch): GPU vs CPU token states max rel. diff {rel:.2e}");
    assert!(rel <= 1e-3, "{rel}");
}
