//! The `table-<name>` recipe: a user's own table (CSV / TSV, plain or `.gz`, or
//! parquet; optional side tables joined on a key) turned into a prepared
//! dataset by the schema of `[data.table]` ([`TableSchema`]). The rules are in
//! docs/data.md ("Your own table"):
//! - every cell is read as text (parquet numbers in their decimal form), with
//!   surrounding spaces removed; the schema's `missing` values are missing;
//! - the label, the domain and the split follow the schema; everything fitted
//!   (quantile edges, rare values, the domain list) is fitted on train only;
//! - rows are then assembled exactly as the built-in in-memory recipes are
//!   ([`TableBuilder`]): same ordering, same ids, same statistics.

use super::error::{DataError, DataResult, Place};
use super::meta::{Catalog, CatalogDomain, FieldKind, Share};
use super::schema::{ColumnSpec, ColumnType, Descriptions, Format, SplitBy, TableSchema};
use super::split::{Split, fnv1a64};
use super::table::{FieldDef, StatsSpec, TableBuilder, Value};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub const HINT: &str = "the files named in [data.table] of the config (the UCI Adult copy: \
    `pipeline data fetch adult`; paths are relative to \
    the folder pipeline runs in)";

/// A table read into memory: its header and its rows as text cells.
pub struct RawTable {
    pub file: PathBuf,
    pub header: Vec<String>,
    /// Row-major cells; None = null (parquet) or a missing value.
    cells: Vec<Option<Box<str>>>,
    /// The place of each row in its file (line of a text file, row of parquet).
    places: Vec<Place>,
}

impl RawTable {
    pub fn rows(&self) -> usize {
        self.places.len()
    }

    pub fn cell(&self, row: usize, col: usize) -> Option<&str> {
        self.cells[row * self.header.len() + col].as_deref()
    }

    pub fn place(&self, row: usize) -> Place {
        self.places[row].clone()
    }

    /// The index of `column`, or an error naming the file and its columns.
    pub fn column(&self, column: &str, what: &str) -> DataResult<usize> {
        self.header.iter().position(|h| h == column).ok_or_else(|| {
            DataError::field(
                &self.file,
                Place::File,
                column,
                format!(
                    "{what} is not a column of the file (its columns: {})",
                    self.header.join(", ")
                ),
            )
        })
    }
}

fn format_of(path: &Path, given: Option<Format>) -> Result<Format> {
    if let Some(f) = given {
        return Ok(f);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    if name.ends_with(".csv") {
        Ok(Format::Csv)
    } else if name.ends_with(".tsv") || name.ends_with(".txt") {
        Ok(Format::Tsv)
    } else if name.contains(".parquet") || name.ends_with(".pq") {
        Ok(Format::Parquet)
    } else {
        bail!(
            "{}: cannot tell the format from the name (.csv, .tsv, .txt, .parquet, each \
             optionally .gz for text): set data.table.format",
            path.display()
        )
    }
}

/// Read a whole table. `format`/`delimiter`: the schema's, or from the name.
pub fn read_table(path: &Path, format: Option<Format>, delimiter: Option<&str>) -> Result<RawTable> {
    match format_of(path, format)? {
        Format::Parquet => Ok(read_parquet(path)?),
        f => {
            let d = match delimiter {
                Some(d) => d.as_bytes().first().copied().unwrap_or(b','),
                None if f == Format::Csv => b',',
                None => b'\t',
            };
            Ok(read_text(path, d)?)
        }
    }
}

fn check_header(path: &Path, header: &[String]) -> DataResult<()> {
    for (i, h) in header.iter().enumerate() {
        if h.is_empty() {
            return Err(DataError::record(
                path,
                Place::Line(1),
                format!("column {} of the header has no name", i + 1),
            ));
        }
        if let Some(j) = header[..i].iter().position(|x| x == h) {
            return Err(DataError::field(
                path,
                Place::Line(1),
                h,
                format!("the header names this column twice (columns {} and {})", j + 1, i + 1),
            ));
        }
    }
    Ok(())
}

fn read_text(path: &Path, delimiter: u8) -> DataResult<RawTable> {
    let file = super::error::open_input(path, HINT)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(std::io::BufReader::new(file)))
    } else {
        Box::new(std::io::BufReader::new(file))
    };
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let csv_err = |e: csv::Error| {
        let line = e.position().map(|p| p.line());
        let place = line.map_or(Place::File, Place::Line);
        match e.into_kind() {
            csv::ErrorKind::Io(io) => DataError::io(path, io),
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => DataError::record(
                path,
                place,
                format!("{len} fields where the header has {expected_len}"),
            ),
            csv::ErrorKind::Utf8 { .. } => DataError::record(path, place, "not UTF-8 text"),
            other => DataError::record(path, place, format!("{other:?}")),
        }
    };
    let header: Vec<String> = r
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| h.trim_start_matches('\u{feff}').to_string())
        .collect();
    if header.len() <= 1 && header.first().is_none_or(String::is_empty) {
        return Err(DataError::record(
            path,
            Place::File,
            "empty: no header line",
        ));
    }
    check_header(path, &header)?;
    let mut cells = Vec::new();
    let mut places = Vec::new();
    let mut rec = csv::StringRecord::new();
    while r.read_record(&mut rec).map_err(csv_err)? {
        let line = rec.position().map_or(0, |p| p.line());
        cells.extend(rec.iter().map(|c| Some(Box::<str>::from(c))));
        places.push(Place::Line(line));
    }
    if places.is_empty() {
        return Err(DataError::record(
            path,
            Place::File,
            "no data rows: the file has a header only",
        ));
    }
    Ok(RawTable {
        file: path.to_path_buf(),
        header,
        cells,
        places,
    })
}

fn read_parquet(path: &Path) -> DataResult<RawTable> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let file = super::error::open_input(path, HINT)?;
    let reader = SerializedFileReader::new(file).map_err(|e| {
        DataError::record(path, Place::File, format!("not a readable parquet file: {e}"))
    })?;
    let header: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    check_header(path, &header)?;
    let iter = reader
        .get_row_iter(None)
        .map_err(|e| DataError::record(path, Place::File, format!("cannot read rows: {e}")))?;
    let mut cells = Vec::new();
    let mut places = Vec::new();
    for (i, row) in iter.enumerate() {
        let place = Place::Row(i as u64 + 1);
        let row = row.map_err(|e| DataError::record(path, place.clone(), format!("cannot decode: {e}")))?;
        for (_, f) in row.get_column_iter() {
            let text: Option<String> = match f {
                Field::Null => None,
                Field::Str(s) => Some(s.trim().to_string()),
                Field::Bool(b) => Some(if *b { "1".into() } else { "0".into() }),
                Field::Float(v) => Some(v.to_string()),
                Field::Double(v) => Some(v.to_string()),
                other => Some(other.to_string().trim_matches('"').to_string()),
            };
            cells.push(text.map(Box::from));
        }
        places.push(place);
    }
    if places.is_empty() {
        return Err(DataError::record(path, Place::File, "no rows: the table is empty"));
    }
    Ok(RawTable {
        file: path.to_path_buf(),
        header,
        cells,
        places,
    })
}

/// Where a source column's value of a main-file row comes from.
#[derive(Clone, Copy)]
enum Loc {
    Main(usize),
    /// (join, column of the side table).
    Side(usize, usize),
}

struct Side {
    table: RawTable,
    /// The main file's key column, per input file.
    key_main: Vec<usize>,
    rows: HashMap<String, usize>,
}

/// What the prepared folder records of a table: the schema and what was
/// fitted on train, so new raw rows can be mapped as the prepared ones were.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableRecord {
    pub schema: TableSchema,
    /// Numeric fields: the bucket edges used (fixed or fitted quantiles).
    pub edges: BTreeMap<String, Vec<f64>>,
    /// The domains in id order.
    pub domains: Vec<String>,
    /// Domain-column values merged into `other` (fewer train rows than
    /// `domain.min_rows`).
    pub merged: Vec<String>,
}

impl TableRecord {
    pub const FILE: &str = "table.json";

    pub fn read(dir: &Path) -> Result<TableRecord> {
        let path = dir.join(Self::FILE);
        let bytes = std::fs::read(&path).with_context(|| {
            format!("cannot read {} (the dataset was not prepared from a table schema)", path.display())
        })?;
        serde_json::from_slice(&bytes).with_context(|| format!("{} is not a table record", path.display()))
    }
}

/// A loaded table, ready to build.
pub struct Loaded {
    pub builder: TableBuilder,
    pub spec: StatsSpec,
    pub domains: Vec<String>,
    pub catalog: Catalog,
    pub record: TableRecord,
    /// How the label was derived, for `meta.json`.
    pub label: String,
    /// Input files read (for the fingerprint).
    pub files: Vec<PathBuf>,
}

/// The input files a schema names, in a fixed order (main, side, descriptions).
pub fn input_files(s: &TableSchema) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [&s.file, &s.train, &s.valid, &s.test]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    v.extend(s.join.iter().map(|j| j.file.clone()));
    if let Some(Descriptions::File(f)) = &s.descriptions {
        v.push(f.clone());
    }
    v
}

/// A feature value of one row before ids.
enum Raw {
    One(Option<String>),
    Num(Option<f64>),
    Many(Vec<String>),
}

struct Row {
    split: Option<Split>,
    hash: u64,
    ts: i64,
    label: u8,
    domain: String,
    values: Vec<Raw>,
    /// The `catalog_column` value.
    catalog: Option<String>,
    /// Index into the file list and place, for errors after the read.
    file: usize,
    place: Place,
}

/// A timestamp cell: integer seconds, or a date `YYYY-MM-DD` (optionally
/// followed by `[T ]HH:MM[:SS]`), read as UTC.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    if let Ok(v) = s.parse::<f64>()
        && v.is_finite()
        && v.fract() == 0.0
    {
        return Some(v as i64);
    }
    let (date, time) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], s[i + 1..].trim_end_matches('Z')),
        None => (s, ""),
    };
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 {
        return None;
    }
    let (y, m, day): (i64, i64, i64) = (d[0].parse().ok()?, d[1].parse().ok()?, d[2].parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = 0;
    if !time.is_empty() {
        let t: Vec<&str> = time.split(':').collect();
        if t.len() < 2 || t.len() > 3 {
            return None;
        }
        let h: i64 = t[0].parse().ok()?;
        let mi: i64 = t[1].parse().ok()?;
        let sec: f64 = t.get(2).map_or(Some(0.0), |x| x.parse().ok())?;
        secs = h * 3600 + mi * 60 + sec as i64;
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + secs)
}

fn time_cut(v: &toml::Value, key: &str) -> Result<i64> {
    match v {
        toml::Value::Integer(i) => Ok(*i),
        toml::Value::String(s) => parse_time(s)
            .with_context(|| format!("data.table.split.{key} = {s:?}: not a time (seconds or YYYY-MM-DD)")),
        toml::Value::Datetime(d) => parse_time(&d.to_string())
            .with_context(|| format!("data.table.split.{key} = {d}: not a time")),
        other => bail!("data.table.split.{key} = {other}: a time is seconds or \"YYYY-MM-DD\""),
    }
}

/// The bucket of `x` given increasing `edges`: how many edges are ≤ x.
pub fn bucket(edges: &[f64], x: f64) -> usize {
    edges.partition_point(|&e| e <= x)
}

fn bucket_labels(edges: &[f64]) -> Vec<String> {
    let mut out = Vec::with_capacity(edges.len() + 1);
    out.push(format!("<{}", edges[0]));
    for w in edges.windows(2) {
        out.push(format!("[{}, {})", w[0], w[1]));
    }
    out.push(format!(">={}", edges[edges.len() - 1]));
    out
}

/// Quantile edges of `values` (sorted here) for `n` buckets: the values at
/// ranks ⌊i·len/n⌋, i = 1..n, without repeats (fewer buckets where values tie).
pub fn quantile_edges(values: &mut [f64], n: usize) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = Vec::new();
    if values.is_empty() {
        return edges;
    }
    for i in 1..n {
        let e = values[(i * values.len() / n).min(values.len() - 1)];
        if edges.last().is_none_or(|&l| e > l) && e > values[0] {
            edges.push(e);
        }
    }
    edges
}

/// Read the inputs a schema names and assemble them.
pub fn load(schema: &TableSchema) -> Result<Loaded> {
    let problems = schema.problems();
    if let Some((k, m)) = problems.first() {
        bail!("{k}: {m}");
    }
    let by = schema.split_by();
    let mains: Vec<(PathBuf, Option<Split>)> = match by {
        SplitBy::Files => vec![
            (schema.train.clone().unwrap_or_default(), Some(Split::Train)),
            (schema.valid.clone().unwrap_or_default(), Some(Split::Valid)),
            (schema.test.clone().unwrap_or_default(), Some(Split::Test)),
        ],
        _ => vec![(schema.file.clone().unwrap_or_default(), None)],
    };
    let tables: Vec<RawTable> = mains
        .iter()
        .map(|(f, _)| read_table(f, schema.format, schema.delimiter.as_deref()))
        .collect::<Result<_>>()?;
    let missing = |s: Option<&str>| -> Option<String> {
        let s = s?;
        (!schema.missing.iter().any(|m| m == s)).then(|| s.to_string())
    };

    // Side tables, keyed.
    let mut sides = Vec::new();
    for j in &schema.join {
        let table = read_table(&j.file, j.format, j.delimiter.as_deref())?;
        let kc = table.column(&j.key, "the join key")?;
        let mut rows = HashMap::with_capacity(table.rows());
        for r in 0..table.rows() {
            let Some(k) = table.cell(r, kc) else {
                return Err(DataError::field(&table.file, table.place(r), &j.key, "the join key is missing").into());
            };
            if let Some(prev) = rows.insert(k.to_string(), r) {
                return Err(DataError::field(
                    &table.file,
                    table.place(r),
                    &j.key,
                    format!("key {k:?} repeated (first on {}): a side table has one row per key", table.place(prev)),
                )
                .into());
            }
        }
        let key_main = tables
            .iter()
            .map(|t| t.column(&j.key, &format!("the key of the side table {}", j.file.display())))
            .collect::<DataResult<Vec<_>>>()?;
        sides.push(Side { table, key_main, rows });
    }
    // Resolve a source column in each input file: the main file's own column,
    // else the first side table that has it.
    let resolve = |col: &str, what: &str| -> Result<Vec<Loc>> {
        tables
            .iter()
            .map(|t| {
                if let Some(i) = t.header.iter().position(|h| h == col) {
                    return Ok(Loc::Main(i));
                }
                for (si, s) in sides.iter().enumerate() {
                    if let Some(i) = s.table.header.iter().position(|h| h == col) {
                        return Ok(Loc::Side(si, i));
                    }
                }
                let mut all = t.header.clone();
                for s in &sides {
                    all.extend(s.table.header.iter().cloned());
                }
                Err(DataError::field(
                    &t.file,
                    Place::File,
                    col,
                    format!("{what} is not a column of the file or its side tables (their columns: {})", all.join(", ")),
                )
                .into())
            })
            .collect()
    };

    let label_loc = resolve(&schema.label.column, "the label column")?;
    let domain_loc = resolve(&schema.domain.column, "the domain column")?;
    let key_locs: Vec<(String, Vec<Loc>)> = schema
        .split
        .key
        .iter()
        .map(|k| Ok((k.clone(), resolve(k, "a split key column")?)))
        .collect::<Result<_>>()?;
    let ts_col = schema
        .columns
        .0
        .iter()
        .find(|(_, c)| c.kind == ColumnType::Timestamp)
        .map(|(n, c)| c.source(n).to_string());
    let ts_loc = match &ts_col {
        Some(c) => Some(resolve(c, "the timestamp column")?),
        None => None,
    };
    let features: Vec<&(String, ColumnSpec)> = schema
        .columns
        .0
        .iter()
        .filter(|(_, c)| c.kind != ColumnType::Timestamp)
        .collect();
    let feature_locs: Vec<Vec<Vec<Loc>>> = features
        .iter()
        .map(|(n, c)| match c.kind {
            ColumnType::Flags => c
                .columns
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|f| resolve(f, &format!("flag column of field `{n}`")))
                .collect(),
            _ => Ok(vec![resolve(c.source(n), &format!("the column of field `{n}`"))?]),
        })
        .collect::<Result<_>>()?;
    let cutoffs = match by {
        SplitBy::Time => Some((
            time_cut(schema.split.valid.as_ref().context("split.valid")?, "valid")?,
            time_cut(schema.split.test.as_ref().context("split.test")?, "test")?,
        )),
        _ => None,
    };
    if let Some((v, t)) = cutoffs
        && v > t
    {
        bail!("data.table.split: the valid cut ({v}) is after the test cut ({t})");
    }

    let cat_loc = match &schema.catalog_column {
        Some(c) => Some(resolve(c, "data.table.catalog_column")?),
        None => None,
    };
    let title_locs = match &schema.title_column {
        Some(col) => {
            let item = features
                .iter()
                .find(|(n, _)| n == "item_id")
                .map(|(n, c)| c.source(n).to_string())
                .context("data.table.title_column needs an `item_id` field")?;
            Some((
                resolve(&item, "the item column")?,
                resolve(col, "data.table.title_column")?,
            ))
        }
        None => None,
    };
    let mut titles: HashMap<String, String> = HashMap::new();

    // One pass over the rows: cells → label, domain, split, raw values.
    let mut rows: Vec<Row> = Vec::new();
    let mut excluded = 0u64;
    let mut row_number = 0u64;
    for (fi, t) in tables.iter().enumerate() {
        let file = &t.file;
        for r in 0..t.rows() {
            let place = t.place(r);
            // The side row of each join, found through the main row's key.
            let mut side_rows = Vec::with_capacity(sides.len());
            for (si, s) in sides.iter().enumerate() {
                let key = t.cell(r, s.key_main[fi]).unwrap_or("");
                match s.rows.get(key) {
                    Some(&sr) => side_rows.push(sr),
                    None => {
                        return Err(DataError::field(
                            file,
                            place,
                            &schema.join[si].key,
                            format!("{key:?} is not in {}", s.table.file.display()),
                        )
                        .into());
                    }
                }
            }
            let get = |locs: &[Loc]| -> Option<&str> {
                match locs[fi] {
                    Loc::Main(c) => t.cell(r, c),
                    Loc::Side(si, c) => sides[si].table.cell(side_rows[si], c),
                }
            };
            let row_number_now = row_number;
            row_number += 1;
            let dom_raw = get(&domain_loc).unwrap_or("");
            if schema.domain.exclude.iter().any(|e| e == dom_raw) {
                excluded += 1;
                continue;
            }
            let Some(dom_raw) = missing(Some(dom_raw)) else {
                return Err(DataError::field(
                    file,
                    place,
                    &schema.domain.column,
                    "the domain value is missing (list it in data.table.domain.exclude to leave such rows out)",
                )
                .into());
            };
            let domain = schema.domain.map.get(&dom_raw).cloned().unwrap_or(dom_raw);
            let label = label_of(schema, file, &place, get(&label_loc))?;
            let ts = match &ts_loc {
                Some(l) => {
                    let c = ts_col.as_deref().unwrap_or_default();
                    let s = get(l).ok_or_else(|| DataError::field(file, place.clone(), c, "the timestamp is missing"))?;
                    let v = parse_time(s).ok_or_else(|| {
                        DataError::field(file, place.clone(), c, format!("{s:?} is not a time (integer seconds or YYYY-MM-DD[ HH:MM[:SS]])"))
                    })?;
                    if v < 0 {
                        return Err(DataError::field(file, place, c, format!("negative timestamp {v}")).into());
                    }
                    v
                }
                None => 0,
            };
            let hash = if key_locs.is_empty() {
                fnv1a64(row_number_now.to_string().as_bytes())
            } else {
                let mut key = String::new();
                for (i, (k, l)) in key_locs.iter().enumerate() {
                    if i > 0 {
                        key.push(':');
                    }
                    let v = get(l).ok_or_else(|| DataError::field(file, place.clone(), k, "a split key value is missing"))?;
                    key.push_str(v);
                }
                fnv1a64(key.as_bytes())
            };
            let split = match (mains[fi].1, cutoffs) {
                (Some(s), _) => Some(s),
                (None, Some((v, t))) => Some(if ts >= t {
                    Split::Test
                } else if ts >= v {
                    Split::Valid
                } else {
                    Split::Train
                }),
                (None, None) => None,
            };
            let mut values = Vec::with_capacity(features.len());
            for ((name, c), locs) in features.iter().zip(&feature_locs) {
                let src = c.source(name);
                values.push(match c.kind {
                    ColumnType::Categorical => {
                        let mut v = missing(get(&locs[0]));
                        if let (Some(sep), Some(x)) = (&c.last_part, &v)
                            && let Some(i) = x.rfind(sep.as_str())
                        {
                            v = Some(x[i + sep.len()..].to_string());
                        }
                        if let (Some(list), Some(x)) = (&c.values, &v)
                            && !list.contains(x)
                        {
                            return Err(DataError::field(file, place, src, format!("{x:?} is not one of its values ({})", list.join(", "))).into());
                        }
                        Raw::One(v)
                    }
                    ColumnType::Numeric => match missing(get(&locs[0])) {
                        None => Raw::Num(None),
                        Some(s) => {
                            let x: f64 = s.parse().ok().filter(|x: &f64| x.is_finite()).ok_or_else(|| {
                                DataError::field(file, place.clone(), src, format!("{s:?} is not a number"))
                            })?;
                            let x = if c.log1p {
                                if x <= -1.0 {
                                    return Err(DataError::field(file, place, src, format!("log1p of {x}: the value must be above -1")).into());
                                }
                                x.ln_1p()
                            } else {
                                x
                            };
                            Raw::Num(Some(x))
                        }
                    },
                    ColumnType::Multi => {
                        let sep = c.sep.as_deref().unwrap_or("|");
                        let list: Vec<String> = match missing(get(&locs[0])) {
                            None => Vec::new(),
                            Some(s) => s.split(sep).map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect(),
                        };
                        if let Some(vals) = &c.values
                            && let Some(x) = list.iter().find(|x| !vals.contains(x))
                        {
                            return Err(DataError::field(file, place, src, format!("{x:?} is not one of its values ({})", vals.join(", "))).into());
                        }
                        Raw::Many(list)
                    }
                    ColumnType::Flags => {
                        let names = c.columns.as_deref().unwrap_or_default();
                        let mut set = Vec::new();
                        for (fname, l) in names.iter().zip(locs) {
                            match get(l).unwrap_or("") {
                                "1" | "1.0" | "true" | "True" => set.push(fname.clone()),
                                "0" | "0.0" | "false" | "False" | "" => {}
                                other => {
                                    return Err(DataError::field(file, place, fname, format!("a flag is 0 or 1, found {other:?}")).into());
                                }
                            }
                        }
                        if c.first {
                            Raw::One(set.into_iter().next())
                        } else {
                            Raw::Many(set)
                        }
                    }
                    ColumnType::Timestamp => unreachable!("timestamps are not features"),
                });
            }
            if let Some((il, tl)) = &title_locs
                && let (Some(i), Some(title)) = (get(il), get(tl))
                && !titles.contains_key(i)
            {
                titles.insert(i.to_string(), title.to_string());
            }
            rows.push(Row {
                catalog: cat_loc.as_ref().and_then(|l| missing(get(l))),
                split,
                hash,
                ts,
                label,
                domain,
                values,
                file: fi,
                place,
            });
        }
    }
    if rows.is_empty() {
        bail!(
            "{}: every row was left out by data.table.domain.exclude ({excluded} rows)",
            tables[0].file.display()
        );
    }
    if excluded > 0 {
        tracing::info!("{excluded} rows left out by data.table.domain.exclude");
    }
    let split_of = |r: &Row| r.split.unwrap_or_else(|| Split::of_bucket(r.hash % 10));

    // Domains: train rows per name; rare ones merged into `other`.
    let mut train_rows: BTreeMap<&str, u64> = BTreeMap::new();
    for r in &rows {
        let n = train_rows.entry(r.domain.as_str()).or_default();
        if split_of(r) == Split::Train {
            *n += 1;
        }
    }
    let min = schema.domain.min_rows;
    let merged: Vec<String> = train_rows
        .iter()
        .filter(|&(d, &n)| n < min && !schema.domain.values.iter().any(|v| v == d))
        .map(|(d, _)| d.to_string())
        .collect();
    let domains: Vec<String> = if schema.domain.values.is_empty() {
        let mut names: Vec<String> = train_rows
            .iter()
            .filter(|(d, _)| !merged.iter().any(|m| m == *d))
            .map(|(d, _)| d.to_string())
            .collect();
        if !merged.is_empty() && !names.iter().any(|n| n == "other") {
            names.push("other".into());
        }
        names
    } else {
        let mut names = schema.domain.values.clone();
        if !merged.is_empty() && !names.iter().any(|n| n == "other") {
            names.push("other".into());
        }
        names
    };
    let index: HashMap<&str, u32> = domains.iter().enumerate().map(|(i, d)| (d.as_str(), i as u32)).collect();
    let domain_id = |r: &Row| -> Result<u32> {
        let name = if merged.iter().any(|m| *m == r.domain) { "other" } else { r.domain.as_str() };
        match index.get(name) {
            Some(&i) => Ok(i),
            None if !schema.domain.values.is_empty() => Err(DataError::field(
                &tables[r.file].file,
                r.place.clone(),
                &schema.domain.column,
                format!("domain {name:?} is not in data.table.domain.values"),
            )
            .into()),
            None => Err(anyhow::anyhow!("internal: domain {name:?} has no id")),
        }
    };
    // A domain that valid or test have and train lacks, unless declared.
    for r in &rows {
        let d = domain_id(r)?;
        let name = &domains[d as usize];
        if split_of(r) != Split::Train
            && train_rows.get(name.as_str()).copied().unwrap_or(0) == 0
            && name != "other"
            && !schema.domain.values.iter().any(|v| v == name)
        {
            return Err(DataError::field(
                &tables[r.file].file,
                r.place.clone(),
                &schema.domain.column,
                format!(
                    "domain {name:?} is in the {} split but train has no row of it: list the \
                     domains in data.table.domain.values to allow a domain only valid/test have \
                     (one to hold out), or merge rare domains with domain.min_rows",
                    split_of(r).name()
                ),
            )
            .into());
        }
    }

    // Numeric edges, fitted on train where not fixed.
    let mut edges: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (fi, (name, c)) in features.iter().enumerate() {
        if c.kind != ColumnType::Numeric {
            continue;
        }
        let e = match &c.edges {
            Some(e) => e.iter().map(|&x| if c.log1p { x.ln_1p() } else { x }).collect(),
            None => {
                let mut v: Vec<f64> = rows
                    .iter()
                    .filter(|r| split_of(r) == Split::Train)
                    .filter_map(|r| match r.values[fi] {
                        Raw::Num(x) => x,
                        _ => None,
                    })
                    .collect();
                quantile_edges(&mut v, c.buckets.unwrap_or(10))
            }
        };
        edges.insert(name.clone(), e);
    }

    let defs: Vec<FieldDef> = features
        .iter()
        .map(|(name, c)| {
            let kind = match c.kind {
                ColumnType::Multi => FieldKind::MultiHot,
                ColumnType::Flags if !c.first => FieldKind::MultiHot,
                _ => FieldKind::Categorical,
            };
            let closed: Option<Vec<String>> = match c.kind {
                ColumnType::Numeric => {
                    let e = &edges[name.as_str()];
                    Some(if e.is_empty() { vec!["all".into()] } else { bucket_labels(e) })
                }
                ColumnType::Flags => c.columns.clone(),
                _ => c.values.clone(),
            };
            FieldDef {
                name: name.clone(),
                kind,
                closed,
                min_count: c.min_count.unwrap_or(1),
            }
        })
        .collect();
    let mut builder = TableBuilder::new(defs.clone(), domains.len());
    let mut labels_cache: Vec<Vec<String>> = Vec::new();
    for (fi, _) in features.iter().enumerate() {
        labels_cache.push(defs[fi].closed.clone().unwrap_or_default());
    }
    for r in &rows {
        let d = domain_id(r)?;
        let mut vals = Vec::with_capacity(r.values.len());
        for (fi, v) in r.values.iter().enumerate() {
            vals.push(match v {
                Raw::One(x) => Value::One(x.as_deref()),
                Raw::Many(l) => Value::Many(l.iter().map(String::as_str).collect()),
                Raw::Num(x) => Value::One(x.map(|x| {
                    let e = &edges[features[fi].0.as_str()];
                    labels_cache[fi][if e.is_empty() { 0 } else { bucket(e, x) }].as_str()
                })),
            });
        }
        builder.push_in(r.split, r.hash, r.ts, r.label, d, &vals)?;
    }

    // Label-free catalogue facts: train rows and value shares per domain.
    let descriptions = read_descriptions(schema, &domains)?;
    let mut catalog: Vec<CatalogDomain> = domains
        .iter()
        .map(|d| CatalogDomain {
            name: d.clone(),
            description: descriptions.get(d).cloned(),
            rows: Some(0),
            ..Default::default()
        })
        .collect();
    let mut shares: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); domains.len()];
    for r in rows.iter().filter(|r| split_of(r) == Split::Train) {
        let d = domain_id(r)? as usize;
        *catalog[d].rows.get_or_insert(0) += 1;
        if let Some(v) = &r.catalog {
            *shares[d].entry(v.clone()).or_default() += 1;
        }
    }
    for (d, s) in shares.into_iter().enumerate() {
        let total: u64 = s.values().sum();
        let mut ranked: Vec<(String, u64)> = s.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        catalog[d].shares = ranked
            .into_iter()
            .take(5)
            .map(|(value, n)| Share {
                value,
                share: n as f64 / total.max(1) as f64,
            })
            .collect();
    }

    let field_index = |n: &str| features.iter().position(|(f, _)| f == n);
    let spec = StatsSpec {
        user_field: field_index("user_id"),
        item_field: field_index("item_id"),
        category_field: schema.category_field.as_deref().and_then(field_index),
        titles,
    };
    let l = &schema.label;
    let label = match (l.threshold, l.positive.is_empty()) {
        (Some(t), _) => format!("{} >= {t}", l.column),
        (None, false) => format!("{} in [{}]", l.column, l.positive.join(", ")),
        (None, true) => format!("{} (0/1)", l.column),
    };
    Ok(Loaded {
        builder,
        spec,
        catalog: Catalog { domains: catalog },
        record: TableRecord {
            schema: schema.clone(),
            edges,
            domains: domains.clone(),
            merged,
        },
        domains,
        label,
        files: input_files(schema),
    })
}

fn label_of(schema: &TableSchema, file: &Path, place: &Place, v: Option<&str>) -> Result<u8> {
    let l = &schema.label;
    let col = l.column.as_str();
    let v = v.filter(|s| !s.is_empty()).ok_or_else(|| DataError::field(file, place.clone(), col, "the label is missing"))?;
    if let Some(t) = l.threshold {
        let x: f64 = v
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| DataError::field(file, place.clone(), col, format!("{v:?} is not a number (label rule: {col} >= {t})")))?;
        return Ok(u8::from(x >= t));
    }
    if !l.positive.is_empty() {
        if l.positive.iter().any(|p| p == v) {
            return Ok(1);
        }
        if l.negative.is_empty() || l.negative.iter().any(|p| p == v) {
            return Ok(0);
        }
        return Err(DataError::field(
            file,
            place.clone(),
            col,
            format!(
                "{v:?} is neither positive ({}) nor negative ({})",
                l.positive.join(", "),
                l.negative.join(", ")
            ),
        )
        .into());
    }
    match v {
        "1" | "1.0" | "true" | "True" => Ok(1),
        "0" | "0.0" | "false" | "False" => Ok(0),
        _ => Err(DataError::field(
            file,
            place.clone(),
            col,
            format!("{v:?} is not a 0/1 label (give label.threshold or label.positive for other values)"),
        )
        .into()),
    }
}

/// Each domain's description: inline, or from a `domain,description` CSV.
/// A described name that is not a domain is an error (a misspelling).
fn read_descriptions(schema: &TableSchema, domains: &[String]) -> Result<BTreeMap<String, String>> {
    let (map, file): (BTreeMap<String, String>, String) = match &schema.descriptions {
        None => return Ok(BTreeMap::new()),
        Some(Descriptions::Inline(m)) => (m.clone(), "data.table.descriptions".into()),
        Some(Descriptions::File(f)) => {
            let t = read_table(f, Some(Format::Csv), None)?;
            let dc = t.column("domain", "`domain`")?;
            let tc = t.column("description", "`description`")?;
            let mut m = BTreeMap::new();
            for r in 0..t.rows() {
                let d = t.cell(r, dc).unwrap_or("").to_string();
                let text = t.cell(r, tc).unwrap_or("").to_string();
                if m.insert(d.clone(), text).is_some() {
                    return Err(DataError::field(f, t.place(r), "domain", format!("{d:?} is described twice")).into());
                }
            }
            (m, f.display().to_string())
        }
    };
    for d in map.keys() {
        if !domains.contains(d) {
            bail!(
                "{file}: {d:?} is described but is not a domain (the domains: {})",
                domains.join(", ")
            );
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_buckets() {
        assert_eq!(parse_time("881250949"), Some(881_250_949));
        assert_eq!(parse_time("1970-01-02"), Some(86_400));
        assert_eq!(parse_time("2000-03-01 01:00:00"), Some(951_872_400));
        assert_eq!(parse_time("yesterday"), None);
        let e = [18.0, 25.0];
        assert_eq!((bucket(&e, 17.0), bucket(&e, 18.0), bucket(&e, 30.0)), (0, 1, 2));
        let mut v: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(quantile_edges(&mut v, 4), vec![25.0, 50.0, 75.0]);
        let mut ties = vec![0.0; 90];
        ties.extend((0..10).map(f64::from));
        assert_eq!(quantile_edges(&mut ties, 4), Vec::<f64>::new(), "all quartiles are 0");
    }
}
