//! Criteo recipe (`criteo`) of `docs/data.md`: the display-advertising TSV
//! (label, I1–I13 integers, C1–C26 hex strings; empty fields allowed), streamed in
//! bounded memory: rows are never all held, shards are written as they fill.
//!
//! Pass 1 validates every line and counts each column's values on the train
//! split; pass 2 encodes and writes shards. Memory is bounded by the number of
//! distinct values (vocabularies), not by the number of rows.
//! - Integers become categories by `floor(ln(v)^2)` for v > 2, else v itself.
//! - Ids: values seen at least `min_count` times in train, numbered by first
//!   appearance in train (0 = missing or rare).
//! - Domain: the configured column; its `top_domains` most frequent train values
//!   (ties by first appearance) are domains 0..k-1, everything else is `other` (k).
//!   An empty value is the value `(empty)`.
//! - Split key: the 0-based line number in decimal. `timestamp` holds the line
//!   number (the file is in time order).

use super::error::{DataError, DataResult, Place};
use super::meta::{
    DomainMeta, DomainStats, FORMAT, FieldKind, FieldMeta, Meta, SplitCounts, SplitMeta, SplitsMeta,
};
use super::shard::ShardWriter;
use super::split::{Split, fnv1a64};
use super::text::{Lines, plain_or_gz, utf8};
use anyhow::{Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `[data.criteo]`: the display-advertising TSV, streamed into shards.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CriteoConfig {
    /// The TSV (plain or .gz). Default `<raw_dir>/criteo/train.txt`.
    pub file: Option<PathBuf>,
    /// Column whose values are the domains (I1–I13, C1–C26). Default `C6`.
    pub domain_field: String,
    /// The k most frequent train values are domains; the rest go to `other`. Default 8.
    pub top_domains: usize,
    /// Values seen fewer times than this in train get id 0. Default 10.
    pub min_count: u32,
    /// Rows per shard file. Default 262144.
    pub shard_rows: usize,
}

impl Default for CriteoConfig {
    fn default() -> Self {
        CriteoConfig {
            file: None,
            domain_field: "C6".into(),
            top_domains: 8,
            min_count: 10,
            shard_rows: 262_144,
        }
    }
}

pub const HINT: &str = "put the Criteo display-advertising challenge TSV (train.txt, or \
    train.txt.gz) there, or set data.criteo.file in the config";

/// The input file: `configured` (`data.criteo.file`) when set, else
/// `<raw_dir>/criteo/train.txt` or `train.txt.gz`, whichever is there (both is an
/// error). When none is there, the plain name, for the missing-file error.
pub fn locate(raw_dir: &Path, configured: Option<&Path>) -> DataResult<PathBuf> {
    if let Some(f) = configured {
        return Ok(f.to_path_buf());
    }
    let plain = raw_dir.join("criteo").join("train.txt");
    Ok(plain_or_gz(&plain)?.unwrap_or(plain))
}

const N_INT: usize = 13;
const N_CAT: usize = 26;
const N_FIELDS: usize = 1 + N_INT + N_CAT;

/// Column names: I1..I13, C1..C26.
pub fn field_names() -> Vec<String> {
    (1..=N_INT)
        .map(|i| format!("I{i}"))
        .chain((1..=N_CAT).map(|i| format!("C{i}")))
        .collect()
}

/// The category of an integer value: `floor(ln(v)^2)` for v > 2, else v.
pub fn int_category(v: i64) -> i64 {
    if v > 2 {
        let l = (v as f64).ln();
        (l * l).floor() as i64
    } else {
        v
    }
}

/// One parsed line: the label, each column's value hash (None = empty), and the
/// domain column's category text.
struct Parsed<'a> {
    label: u8,
    hashes: [Option<u64>; N_INT + N_CAT],
    domain: DomainText<'a>,
}

enum DomainText<'a> {
    Empty,
    Raw(&'a str),
    Int(i64),
}

impl DomainText<'_> {
    fn name(&self) -> String {
        match self {
            DomainText::Empty => "(empty)".into(),
            DomainText::Raw(s) => s.to_string(),
            DomainText::Int(v) => v.to_string(),
        }
    }
}

/// Hash of an integer column's category: FNV-1a of its decimal text.
fn int_hash(v: i64) -> u64 {
    let mut buf = [0u8; 24];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = std::io::Write::write_fmt(&mut cur, format_args!("{v}"));
    let n = cur.position() as usize;
    fnv1a64(&buf[..n])
}

/// Split of a line from its 0-based number (the key is its decimal text).
fn line_split(line0: u64) -> Split {
    let mut buf = [0u8; 24];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = std::io::Write::write_fmt(&mut cur, format_args!("{line0}"));
    let n = cur.position() as usize;
    Split::of_bucket(fnv1a64(&buf[..n]) % 10)
}

fn parse_line<'a>(
    file: &Path,
    n: u64,
    bytes: &'a [u8],
    names: &[String],
    domain_col: usize,
) -> DataResult<Parsed<'a>> {
    let text = utf8(file, n, bytes)?;
    let mut hashes = [None; N_INT + N_CAT];
    let mut domain = DomainText::Empty;
    let mut fields = text.split('\t');
    let label = match fields.next().unwrap_or("") {
        "0" => 0,
        "1" => 1,
        other => {
            let count = text.split('\t').count();
            if count != N_FIELDS {
                return Err(field_count_error(file, n, count));
            }
            return Err(DataError::field(
                file,
                Place::Line(n),
                "label",
                format!("expected 0 or 1, found {other:?}"),
            ));
        }
    };
    let mut j = 0;
    for raw in fields {
        if j >= N_INT + N_CAT {
            return Err(field_count_error(file, n, text.split('\t').count()));
        }
        if !raw.is_empty() {
            if j < N_INT {
                let v: i64 = raw.parse().map_err(|_| {
                    DataError::field(
                        file,
                        Place::Line(n),
                        &names[j],
                        format!("expected an integer, found {raw:?}"),
                    )
                })?;
                let c = int_category(v);
                hashes[j] = Some(int_hash(c));
                if j == domain_col {
                    domain = DomainText::Int(c);
                }
            } else {
                hashes[j] = Some(fnv1a64(raw.as_bytes()));
                if j == domain_col {
                    domain = DomainText::Raw(raw);
                }
            }
        }
        j += 1;
    }
    if j != N_INT + N_CAT {
        return Err(field_count_error(file, n, j + 1));
    }
    Ok(Parsed {
        label,
        hashes,
        domain,
    })
}

fn field_count_error(file: &Path, n: u64, found: usize) -> DataError {
    DataError::record(
        file,
        Place::Line(n),
        format!("expected {N_FIELDS} tab-separated fields (label, I1-I13, C1-C26), found {found}"),
    )
}

/// Hasher for keys that are already 64-bit hashes: one multiply to spread the bits.
#[derive(Default, Clone, Copy)]
struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type HashState = std::hash::BuildHasherDefault<PreHashed>;

#[derive(Default)]
struct Counter {
    /// value hash → (train count, first train line)
    counts: HashMap<u64, (u32, u64), HashState>,
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Stream the TSV into `out_dir/{train,valid,test}/part-NNNNN.safetensors`; return the meta.
pub fn prepare(file: &Path, cfg: &CriteoConfig, out_dir: &Path) -> Result<Meta> {
    let names = field_names();
    let Some(domain_col) = names.iter().position(|n| *n == cfg.domain_field) else {
        bail!(
            "data.criteo.domain_field = {:?} is not a Criteo column (I1-I13, C1-C26)",
            cfg.domain_field
        );
    };
    if cfg.top_domains == 0 || cfg.shard_rows == 0 || cfg.min_count == 0 {
        bail!("data.criteo: top_domains, shard_rows and min_count must be at least 1");
    }

    // Pass 1: validate, count train values.
    let mut counters: Vec<Counter> = (0..names.len()).map(|_| Counter::default()).collect();
    // domain value hash (None = empty) → (train count, first train line, name)
    let mut domain_counts: HashMap<Option<u64>, (u64, u64, String)> = HashMap::new();
    let mut lines = Lines::open(file, HINT)?;
    let pb = progress(lines.progress().1, "criteo pass 1/2 (count)");
    while let Some((n, bytes)) = lines.next_line()? {
        let p = parse_line(file, n, bytes, &names, domain_col)?;
        let line0 = n - 1;
        if line_split(line0) == Split::Train {
            for (c, h) in counters.iter_mut().zip(&p.hashes) {
                if let Some(h) = h {
                    let e = c.counts.entry(*h).or_insert((0, line0));
                    e.0 = e.0.saturating_add(1);
                }
            }
            let d = p.hashes[domain_col];
            let e = domain_counts
                .entry(d)
                .or_insert_with(|| (0, line0, p.domain.name()));
            e.0 += 1;
        }
        if n % 65_536 == 0 {
            pb.set_position(lines.progress().0);
        }
    }
    pb.finish_and_clear();

    // Vocabularies: kept values by first train appearance.
    let vocabs: Vec<HashMap<u64, u32, HashState>> = counters
        .into_iter()
        .map(|c| {
            let mut kept: Vec<(u64, u64)> = c
                .counts
                .into_iter()
                .filter(|(_, (n, _))| *n >= cfg.min_count)
                .map(|(h, (_, first))| (first, h))
                .collect();
            kept.sort_unstable();
            kept.into_iter()
                .enumerate()
                .map(|(i, (_, h))| (h, i as u32 + 1))
                .collect()
        })
        .collect();
    let mut ranked: Vec<(Option<u64>, (u64, u64, String))> = domain_counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
    ranked.truncate(cfg.top_domains);
    let mut domain_names: Vec<String> = ranked.iter().map(|(_, v)| v.2.clone()).collect();
    let domain_of: HashMap<Option<u64>, u32> = ranked
        .iter()
        .enumerate()
        .map(|(i, (h, _))| (*h, i as u32))
        .collect();
    let other = domain_names.len() as u32;
    domain_names.push("other".into());

    // Pass 2: encode and write shards.
    let mut writers: Vec<ShardWriter> = Split::ALL
        .iter()
        .map(|s| ShardWriter::new(out_dir.join(s.name()), &names, &[], cfg.shard_rows))
        .collect();
    let mut domain_rows = vec![SplitCounts::default(); domain_names.len()];
    let mut stats = vec![(0u64, 0u64); domain_names.len()];
    let mut lines = Lines::open(file, HINT)?;
    let pb = progress(lines.progress().1, "criteo pass 2/2 (write)");
    while let Some((n, bytes)) = lines.next_line()? {
        let p = parse_line(file, n, bytes, &names, domain_col)?;
        let line0 = n - 1;
        let split = line_split(line0);
        let d = p.hashes[domain_col];
        let domain = domain_of.get(&d).copied().unwrap_or(other);
        domain_rows[domain as usize].add(split, 1);
        if split == Split::Train {
            stats[domain as usize].0 += 1;
            stats[domain as usize].1 += u64::from(p.label);
        }
        let mut ids = [0u32; N_INT + N_CAT];
        for ((id, h), voc) in ids.iter_mut().zip(&p.hashes).zip(&vocabs) {
            *id = h.and_then(|h| voc.get(&h).copied()).unwrap_or(0);
        }
        writers[split.index()].push(p.label, domain, line0 as i64, &ids, &[])?;
        if n % 65_536 == 0 {
            pb.set_position(lines.progress().0);
        }
    }
    pb.finish_and_clear();

    let mut split_meta = Vec::new();
    for w in writers {
        split_meta.push(w.finish()?);
    }
    let [train, valid, test]: [SplitMeta; 3] = match split_meta.try_into() {
        Ok(a) => a,
        Err(_) => bail!("internal: three splits"),
    };
    let fields = names
        .iter()
        .zip(&vocabs)
        .map(|(n, v)| FieldMeta {
            name: n.clone(),
            kind: FieldKind::Categorical,
            cardinality: v.len() as u32 + 1,
            values: None,
        })
        .collect();
    let domains = domain_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (rows, pos) = stats[i];
            DomainMeta {
                id: i as u32,
                name: name.clone(),
                rows: domain_rows[i],
                train_stats: DomainStats {
                    rows,
                    users: None,
                    items: None,
                    positives: pos,
                    positive_rate: (rows > 0).then(|| pos as f64 / rows as f64),
                    top_categories: Vec::new(),
                    example_titles: Vec::new(),
                },
            }
        })
        .collect();
    Ok(Meta {
        format: FORMAT,
        recipe: "criteo".into(),
        label: "click".into(),
        splits: SplitsMeta { train, valid, test },
        fields,
        domains,
        category_name: None,
        domain_fields: None,
        history: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_categories() {
        assert_eq!(int_category(-1), -1);
        assert_eq!(int_category(2), 2);
        assert_eq!(int_category(3), 1); // ln 3 = 1.0986, squared 1.2069
        assert_eq!(int_category(100), 21); // ln 100 = 4.6052, squared 21.2076
        assert_eq!(int_category(1000), 47); // 6.9078^2 = 47.717
    }
}
