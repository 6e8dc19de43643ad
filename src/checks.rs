//! Validation of settings: [`Checks`] collects every problem of a config, each
//! naming its dotted key, and reports them together. A leaf: it names no other
//! module of the crate.

use anyhow::{Result, bail};
use std::fmt::Display;
use std::path::Path;

/// Collects the problems of a config's settings, each naming its dotted key.
#[derive(Default)]
pub struct Checks {
    problems: Vec<String>,
}

impl Checks {
    /// Record `<key> = <value>: <allowed>`.
    pub fn bad(&mut self, key: &str, value: impl Display, allowed: impl Display) {
        self.problems.push(format!("{key} = {value}: {allowed}"));
    }

    /// A finite number > 0.
    pub fn positive(&mut self, key: &str, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            self.bad(key, v, "must be a finite number > 0");
        }
    }

    /// A finite number ≥ 0.
    pub fn non_negative(&mut self, key: &str, v: f64) {
        if !(v.is_finite() && v >= 0.0) {
            self.bad(key, v, "must be a finite number ≥ 0");
        }
    }

    /// A probability in [0, 1).
    pub fn fraction(&mut self, key: &str, v: f64) {
        if !(0.0..1.0).contains(&v) {
            self.bad(key, v, "must be in [0, 1)");
        }
    }

    /// A count where zero means nothing.
    pub fn at_least_one(&mut self, key: &str, v: usize) {
        if v == 0 {
            self.bad(key, v, "must be at least 1");
        }
    }

    /// Layer widths: every entry at least 1 (and at least one entry if `nonempty`).
    pub fn widths(&mut self, key: &str, v: &[usize], nonempty: bool) {
        if nonempty && v.is_empty() {
            self.bad(key, "[]", "needs at least one layer");
        }
        if let Some(i) = v.iter().position(|&w| w == 0) {
            self.bad(
                key,
                format!("{v:?}"),
                format!("entry {i} is 0; widths must be at least 1"),
            );
        }
    }

    /// A folder to read or write: it may be missing, but not a file.
    pub fn dir(&mut self, key: &str, p: &Path) {
        if p.exists() && !p.is_dir() {
            self.bad(
                key,
                format!("{:?}", p.display().to_string()),
                "is a file, not a folder",
            );
        }
    }

    /// A file to read: a folder there is an error (a missing file is reported where it is read).
    pub fn file(&mut self, key: &str, p: &Path) {
        if p.is_dir() {
            self.bad(
                key,
                format!("{:?}", p.display().to_string()),
                "is a folder, not a file",
            );
        }
    }

    /// A run name: one non-empty path component.
    pub fn run_name(&mut self, key: &str, name: Option<&str>) {
        if let Some(n) = name
            && (n.trim().is_empty() || n == "." || n == ".." || n.contains(['/', '\\']))
        {
            self.bad(
                key,
                format!("{n:?}"),
                "must be one non-empty folder name (no `/`)",
            );
        }
    }

    /// All problems found, one per line, or Ok.
    pub fn finish(self) -> Result<()> {
        if self.problems.is_empty() {
            return Ok(());
        }
        bail!("invalid settings:\n  {}", self.problems.join("\n  "))
    }
}

/// Left out of a written config at its default, so that configs written before
/// the key existed keep their hash (grid run names, prepare fingerprints).
pub fn is_zero(v: &usize) -> bool {
    *v == 0
}
