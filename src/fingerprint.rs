//! What a run was made from, by content. Each run directory of `embed`, `pool` and
//! `train` keeps `inputs.json`: the SHA-256 of every input the stage read (the
//! prepared dataset, the prompt template, the model's files, the token states, the
//! domain embeddings). The config alone cannot tell that a template was edited or
//! a model file replaced under the same path, so a finished run is reused, and an
//! interrupted one resumed, only when every input still hashes the same.

use crate::data::meta::Meta;
use crate::fsutil::{sha256_bytes, sha256_file, write_atomic};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file in a run directory that records its inputs.
pub const FILE: &str = "inputs.json";

/// One input: where it was read from and the SHA-256 of its content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input {
    pub path: String,
    pub sha256: String,
}

/// The inputs of a run, by role (`prepared data`, `prompt template`, `model`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs(pub BTreeMap<String, Input>);

/// How a run directory's recorded inputs compare with the current ones.
#[derive(Debug, PartialEq, Eq)]
pub enum Freshness {
    Same,
    /// What changed, one phrase per input, for messages.
    Changed(Vec<String>),
}

impl Inputs {
    /// A file, by its content.
    pub fn file(mut self, role: &str, path: &Path) -> Result<Self> {
        let sha256 = hash(path).with_context(|| format!("hashing the {role}"))?;
        self.insert(role, path, sha256);
        Ok(self)
    }

    /// Several files as one input (the hash of their names and hashes, in order).
    pub fn files(mut self, role: &str, shown: &Path, files: &[PathBuf]) -> Result<Self> {
        let mut all = String::new();
        for f in files {
            let h = hash(f).with_context(|| format!("hashing the {role}"))?;
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            all.push_str(&format!("{name} {h}\n"));
        }
        self.insert(role, shown, sha256_bytes(all.as_bytes()));
        Ok(self)
    }

    /// A prepared dataset: its `meta.json` and every shard it lists.
    pub fn prepared(self, dir: &Path) -> Result<Self> {
        let meta = Meta::read(dir)?;
        let meta_path = dir.join("meta.json");
        let mut files = vec![meta_path];
        for (split, s) in [
            ("train", &meta.splits.train),
            ("valid", &meta.splits.valid),
            ("test", &meta.splits.test),
        ] {
            files.extend(s.shards.iter().map(|f| dir.join(split).join(f)));
        }
        self.files("prepared data", dir, &files)
    }

    /// The files an LLM is loaded from: a `.gguf` file, or a checkpoint folder's
    /// (or a cached Hub snapshot's) `config.json`, `tokenizer.json`, weight index
    /// and weights.
    pub fn model(self, spec: &str) -> Result<Self> {
        match model_dir(spec)? {
            None => self.file("model", Path::new(spec)),
            Some(dir) => {
                let mut files = vec![dir.join("config.json"), dir.join("tokenizer.json")];
                let index = dir.join("model.safetensors.index.json");
                if index.is_file() && !dir.join("model.safetensors").is_file() {
                    files.push(index);
                }
                files.extend(crate::llm::load::weight_files(&dir)?);
                self.files("model", &dir, &files)
            }
        }
    }

    fn insert(&mut self, role: &str, path: &Path, sha256: String) {
        self.0.insert(
            role.to_string(),
            Input {
                path: path.display().to_string(),
                sha256,
            },
        );
    }

    /// Record these inputs in `run_dir`.
    pub fn save(&self, run_dir: &Path) -> Result<()> {
        write_atomic(
            &run_dir.join(FILE),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// Compare with what `run_dir` recorded. A run without a record (made before
    /// records were kept) counts as changed: nothing vouches for its inputs.
    pub fn compare(&self, run_dir: &Path) -> Result<Freshness> {
        let path = run_dir.join(FILE);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(Freshness::Changed(vec![format!(
                "its inputs were not recorded ({} is missing)",
                path.display()
            )]));
        };
        let saved: Inputs = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a record of inputs", path.display()))?;
        let mut changed = Vec::new();
        for (role, now) in &self.0 {
            match saved.0.get(role) {
                Some(then) if then.sha256 == now.sha256 => {}
                Some(then) => changed.push(format!(
                    "the {role} {} changed (sha256 {} then, {} now)",
                    now.path,
                    short(&then.sha256),
                    short(&now.sha256)
                )),
                None => changed.push(format!("the {role} {} was not an input then", now.path)),
            }
        }
        for (role, then) in &saved.0 {
            if !self.0.contains_key(role) {
                changed.push(format!("the {role} {} is no longer an input", then.path));
            }
        }
        Ok(if changed.is_empty() {
            Freshness::Same
        } else {
            Freshness::Changed(changed)
        })
    }

    /// An error unless `run_dir` was made from these inputs (for `--resume`).
    pub fn require_same(&self, run_dir: &Path) -> Result<()> {
        if let Freshness::Changed(what) = self.compare(run_dir)? {
            bail!(
                "{} cannot be resumed: {}; delete it, or choose another run name",
                run_dir.display(),
                what.join("; ")
            );
        }
        Ok(())
    }
}

/// SHA-256 of a file, remembered for the rest of the process while the file's
/// size, modification time, ctime and inode stay the same: `ablate` and `compare`
/// check the same prepared shards and model for every run they reuse. A file
/// changed less than [`crate::fsutil::RACY_NS`] before its hash is not
/// remembered.
fn hash(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    type Key = (PathBuf, u64, i64, i64, i64, i64, u64);
    static SEEN: Mutex<BTreeMap<Key, String>> = Mutex::new(BTreeMap::new());
    let m = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key = (
        path.to_path_buf(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
    );
    if let Some(h) = SEEN.lock().ok().and_then(|s| s.get(&key).cloned()) {
        return Ok(h);
    }
    let h = sha256_file(path)?;
    let changed_ns = i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec());
    if changed_ns + crate::fsutil::RACY_NS <= crate::fsutil::now_ns()
        && let Ok(mut s) = SEEN.lock()
    {
        s.insert(key, h.clone());
    }
    Ok(h)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// The folder an LLM spec's files are in, or `None` for a single `.gguf` file.
fn model_dir(spec: &str) -> Result<Option<PathBuf>> {
    let p = Path::new(spec);
    if p.is_file() {
        return Ok(None);
    }
    if p.is_dir() {
        return Ok(Some(p.to_path_buf()));
    }
    // A Hub id: the cached snapshot (the loader fills the cache before any run).
    hf_hub::Cache::from_env()
        .model(spec.to_string())
        .get("config.json")
        .and_then(|c| c.parent().map(Path::to_path_buf))
        .map(Some)
        .with_context(|| {
            format!("model {spec:?}: no such file or folder, and not in the Hugging Face cache")
        })
}

/// Make room for recomputing a run whose inputs changed: the old directory is
/// kept, renamed to `<dir>.stale-<n>` (the first free n), and the move reported.
pub fn set_aside(run_dir: &Path, what: &[String]) -> Result<PathBuf> {
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let aside = (1..)
        .map(|n| run_dir.with_file_name(format!("{name}.stale-{n}")))
        .find(|p| !p.exists())
        .context("no free name")?;
    std::fs::rename(run_dir, &aside).with_context(|| {
        format!(
            "cannot move {} aside to {}",
            run_dir.display(),
            aside.display()
        )
    })?;
    tracing::warn!(
        "{}: {}; recomputing (the old run is kept as {})",
        run_dir.display(),
        what.join("; "),
        aside.display()
    );
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_or_missing_input_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, run) = (
            tmp.path().join("a.txt"),
            tmp.path().join("b.txt"),
            tmp.path().join("run"),
        );
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "two").unwrap();
        std::fs::create_dir(&run).unwrap();
        let now = || {
            Inputs::default()
                .file("prompt template", &a)
                .unwrap()
                .file("model", &b)
                .unwrap()
        };
        let Freshness::Changed(w) = now().compare(&run).unwrap() else {
            panic!("a run without a record must not count as the same");
        };
        assert!(w[0].contains("not recorded"), "{w:?}");
        now().save(&run).unwrap();
        assert_eq!(now().compare(&run).unwrap(), Freshness::Same);
        std::fs::write(&a, "one!").unwrap();
        let Freshness::Changed(w) = now().compare(&run).unwrap() else {
            panic!("an edited file must count as changed");
        };
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("prompt template") && w[0].contains("a.txt"),
            "{w:?}"
        );
        let e = format!("{:#}", now().require_same(&run).unwrap_err());
        assert!(
            e.contains("cannot be resumed") && e.contains("a.txt"),
            "{e}"
        );
        let fewer = Inputs::default().file("model", &b).unwrap();
        let Freshness::Changed(w) = fewer.compare(&run).unwrap() else {
            panic!("a dropped input must count as changed");
        };
        assert!(w.iter().any(|s| s.contains("no longer")), "{w:?}");
    }

    #[test]
    fn set_aside_keeps_the_old_run_under_a_free_name() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("r");
        for n in 1..=2 {
            std::fs::create_dir(&run).unwrap();
            std::fs::write(run.join("x"), format!("{n}")).unwrap();
            let aside = set_aside(&run, &["the model changed".into()]).unwrap();
            assert_eq!(aside, tmp.path().join(format!("r.stale-{n}")));
            assert_eq!(
                std::fs::read_to_string(aside.join("x")).unwrap(),
                n.to_string()
            );
            assert!(!run.exists());
        }
    }
}
