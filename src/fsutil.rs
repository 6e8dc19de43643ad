//! Writing outputs so that nothing a user has is lost: files go to a temporary
//! name and are renamed into place; a stage's output directory is built beside
//! its final place and swapped in only when complete.

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Write `bytes` to `path` through a temporary file in the same directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = tmp_sibling(path, "tmp");
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}

/// A file whose ctime is less than this before its hash was taken is hashed
/// again: timestamps are that coarse on some file systems, so a same-size
/// rewrite soon after could keep them.
pub const RACY_NS: i128 = 2_000_000_000;

/// A CSV table built in memory (the csv crate: a field holding a comma, a quote
/// or a line break is quoted, so every value reads back as written), then
/// written with [`write_atomic`] or printed.
pub struct CsvText(csv::Writer<Vec<u8>>);

impl CsvText {
    pub fn new<S: AsRef<[u8]>>(header: impl IntoIterator<Item = S>) -> Result<Self> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(header)?;
        Ok(CsvText(w))
    }

    pub fn row<S: AsRef<[u8]>>(&mut self, fields: impl IntoIterator<Item = S>) -> Result<()> {
        Ok(self.0.write_record(fields)?)
    }

    pub fn into_string(self) -> Result<String> {
        let bytes = self
            .0
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
        Ok(String::from_utf8(bytes)?)
    }

    /// Written to `path` through a temporary file.
    pub fn write(self, path: &Path) -> Result<()> {
        write_atomic(path, self.into_string()?.as_bytes())
    }
}

/// Now, in ns since the epoch.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// A hidden sibling name unique to this process and call (threads may write at once).
pub(crate) fn tmp_sibling(path: &Path, what: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{what}-{}-{n}", std::process::id()))
}

/// Save named tensors as safetensors through [`write_atomic`] (temporary file,
/// fsync, rename): a crash never leaves a truncated file under `path`.
pub fn save_tensors_atomic(
    tensors: &std::collections::HashMap<String, candle_core::Tensor>,
    path: &Path,
) -> Result<()> {
    let mut named: Vec<(&str, &candle_core::Tensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    named.sort_by_key(|(k, _)| *k);
    let bytes = safetensors::tensor::serialize(named, None)
        .with_context(|| format!("cannot serialise {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// A directory that is filled in a hidden sibling and moved to its final place by
/// [`StagingDir::commit`]. Dropped without commit, it is removed, so a failed or
/// interrupted stage leaves no half-written output behind.
pub struct StagingDir {
    staging: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagingDir {
    pub fn new(target: &Path) -> Result<Self> {
        clear_leftovers(target)?;
        let staging = tmp_sibling(target, "partial");
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .with_context(|| format!("cannot clear {}", staging.display()))?;
        }
        fs::create_dir_all(&staging)
            .with_context(|| format!("cannot create {}", staging.display()))?;
        Ok(StagingDir {
            staging,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Replace the target with the staged directory. The old target (if any) is
    /// moved aside first and removed only after the new one is in place.
    pub fn commit(mut self) -> Result<()> {
        let old = tmp_sibling(&self.target, "old");
        let had_old = self.target.exists();
        if had_old {
            if old.exists() {
                fs::remove_dir_all(&old).ok();
            }
            fs::rename(&self.target, &old)
                .with_context(|| format!("cannot move aside {}", self.target.display()))?;
        }
        if let Err(e) = fs::rename(&self.staging, &self.target) {
            if had_old {
                let _ = fs::rename(&old, &self.target);
            }
            return Err(e).with_context(|| format!("cannot move into {}", self.target.display()));
        }
        self.committed = true;
        if had_old {
            fs::remove_dir_all(&old).ok();
        }
        Ok(())
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Remove what a killed process left beside `target` ([`tmp_sibling`] names
/// whose process is gone): half-built staging directories and temporary files.
/// A moved-aside old target is put back when the new one never arrived (the
/// process died between the two renames of [`StagingDir::commit`]), else removed.
fn clear_leftovers(target: &Path) -> Result<()> {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Ok(());
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let Some((what, tail)) = rest.split_once('-') else {
            continue;
        };
        let pid = tail.split('-').next().and_then(|p| p.parse::<i32>().ok());
        if pid.is_none_or(process_alive) {
            continue;
        }
        let path = entry.path();
        let result = match what {
            "old" if !target.exists() => fs::rename(&path, target),
            "old" | "partial" => fs::remove_dir_all(&path),
            "tmp" => fs::remove_file(&path),
            _ => continue,
        };
        result.with_context(|| format!("cannot clear the leftover {}", path.display()))?;
    }
    Ok(())
}

/// Whether a process with this id exists (signal 0 checks without sending).
fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return true;
    }
    // SAFETY: kill with signal 0 sends nothing; it only reports whether `pid` exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// SHA-256 of a file's bytes, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// SHA-256 of bytes, hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_dir_is_removed_unless_committed() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        {
            let s = StagingDir::new(&target).unwrap();
            fs::write(s.path().join("a"), b"x").unwrap();
            assert!(s.path().exists());
        }
        assert!(!target.exists());
        assert_eq!(
            fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "staging left behind"
        );

        let s = StagingDir::new(&target).unwrap();
        fs::write(s.path().join("a"), b"new").unwrap();
        s.commit().unwrap();
        assert_eq!(fs::read(target.join("a")).unwrap(), b"new");
    }

    #[test]
    fn commit_replaces_old_target() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("out");
        fs::create_dir_all(&target).unwrap();
        fs::write(target.join("old"), b"o").unwrap();
        let s = StagingDir::new(&target).unwrap();
        fs::write(s.path().join("new"), b"n").unwrap();
        s.commit().unwrap();
        assert!(!target.join("old").exists());
        assert!(target.join("new").exists());
        assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn leftovers_of_a_dead_process_are_cleared() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("criteo");
        // Ids above the kernel's pid_max (4194304 at most) belong to no process.
        let dead = 999_999_999;
        fs::create_dir_all(tmp.path().join(format!(".criteo.partial-{dead}-0/train"))).unwrap();
        fs::write(tmp.path().join(format!(".criteo.tmp-{dead}-3")), b"x").unwrap();
        let old = tmp.path().join(format!(".criteo.old-{dead}-1"));
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("meta.json"), b"old").unwrap();
        // A live process's staging (this one's) and other names stay.
        let live = tmp
            .path()
            .join(format!(".criteo.partial-{}-999999", std::process::id()));
        fs::create_dir_all(&live).unwrap();
        fs::write(tmp.path().join(".criteo.notes"), b"keep").unwrap();
        let s = StagingDir::new(&target).unwrap();
        // The old target whose replacement never arrived is back in place.
        assert_eq!(fs::read(target.join("meta.json")).unwrap(), b"old");
        let mut left: Vec<String> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mine = s.path().file_name().unwrap().to_string_lossy().into_owned();
        let mut want = vec![
            ".criteo.notes".to_string(),
            live.file_name().unwrap().to_string_lossy().into_owned(),
            "criteo".to_string(),
            mine,
        ];
        want.sort();
        assert_eq!(left, want);
        s.commit().unwrap();
        // With the target present, a dead process's moved-aside copy is removed.
        fs::create_dir_all(&old).unwrap();
        drop(StagingDir::new(&target).unwrap());
        assert!(!old.exists());
        assert!(target.is_dir());
    }

    #[test]
    fn atomic_write_leaves_no_temp() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("sub/f.json");
        write_atomic(&p, b"{}").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"{}");
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        assert_eq!(
            sha256_bytes(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
