//! A synthetic Criteo-format TSV for the data and stream benches.

use crate::data::split::fnv1a64;
use anyhow::{Context, Result};
use std::io::{BufWriter, Write};
use std::path::Path;

/// splitmix64: a tiny deterministic generator for synthetic data.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Skewed draw in 0..n: the minimum of two uniforms favours small values.
    fn skewed(&mut self, n: u64) -> u64 {
        (self.next() % n).min(self.next() % n)
    }
}

/// Write a Criteo-format TSV of about `bytes` bytes: label, 13 integers (some
/// empty, a few negative), 26 hex categories with cardinalities from 4 to 2·10^5
/// (skewed: small values are drawn more often). The label depends on I1, C1, C3
/// and C4 through a logistic model, so that a trained model beats AUC 0.5.
pub fn generate_criteo(path: &Path, bytes: u64) -> Result<u64> {
    generate_criteo_until(path, |written, _| written >= bytes)
}

/// [`generate_criteo`] of exactly `lines` lines (the same generator: a file of
/// fewer lines is a prefix of one of more).
pub fn generate_criteo_lines(path: &Path, lines: u64) -> Result<u64> {
    generate_criteo_until(path, |_, n| n >= lines)
}

fn generate_criteo_until(path: &Path, done: impl Fn(u64, u64) -> bool) -> Result<u64> {
    // Written beside and renamed: a killed run leaves no short file in its place.
    let partial = path.with_extension("partial");
    let file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Mix(42);
    let cards: Vec<u64> = (0..26).map(|j| [4u64, 30, 1_000, 200_000][j % 4]).collect();
    let (mut written, mut lines) = (0u64, 0u64);
    let mut line = String::with_capacity(512);
    let mut ints = String::with_capacity(128);
    let mut cats = String::with_capacity(256);
    while !done(written, lines) {
        // Features first; the label depends on a few of them (a click rate of
        // about 25%), so that a model has something to learn.
        ints.clear();
        cats.clear();
        let mut logit = -1.6f64;
        for k in 0..13 {
            ints.push('\t');
            let r = rng.next();
            if !r.is_multiple_of(10) {
                let v = (rng.skewed(5_000) as i64) - 3;
                if k == 0 {
                    logit += if v < 100 { 0.6 } else { -0.4 };
                }
                ints.push_str(&v.to_string());
            }
        }
        for (j, &card) in cards.iter().enumerate() {
            cats.push('\t');
            if !rng.next().is_multiple_of(20) {
                let v = rng.skewed(card);
                match j {
                    0 => logit += [0.8, 0.0, -0.5, 0.3][v as usize],
                    2 if v.is_multiple_of(7) => logit += 0.7,
                    3 if v.is_multiple_of(5) => logit -= 0.6,
                    _ => {}
                }
                let h = fnv1a64(format!("{j}:{v}").as_bytes()) as u32;
                cats.push_str(&format!("{h:08x}"));
            }
        }
        let p = 1.0 / (1.0 + (-logit).exp());
        let click = ((rng.next() >> 11) as f64 / (1u64 << 53) as f64) < p;
        line.clear();
        line.push(if click { '1' } else { '0' });
        line.push_str(&ints);
        line.push_str(&cats);
        line.push('\n');
        w.write_all(line.as_bytes())?;
        written += line.len() as u64;
        lines += 1;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&partial, path)?;
    Ok(lines)
}
