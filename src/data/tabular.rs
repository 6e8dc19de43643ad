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

/// Read a whole table into memory (side tables, descriptions).
pub fn read_table(
    path: &Path,
    format: Option<Format>,
    delimiter: Option<&str>,
) -> Result<RawTable> {
    let mut cells = Vec::new();
    let mut places = Vec::new();
    let header = for_each_row(path, format, delimiter, &mut |_, place, row| {
        cells.extend(row.iter().map(|c| c.map(Box::<str>::from)));
        places.push(place);
        Ok(())
    })?;
    Ok(RawTable {
        file: path.to_path_buf(),
        header,
        cells,
        places,
    })
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
                format!(
                    "the header names this column twice (columns {} and {})",
                    j + 1,
                    i + 1
                ),
            ));
        }
    }
    Ok(())
}

type RowFn<'a> = dyn FnMut(&[String], Place, &[Option<&str>]) -> Result<()> + 'a;

/// Read a table row by row, in file order: `f(header, place, cells)` for each
/// data row (a missing cell, parquet's null, is None). Returns the header. A
/// file without a header or without rows is an error naming it.
pub fn for_each_row(
    path: &Path,
    format: Option<Format>,
    delimiter: Option<&str>,
    f: &mut RowFn,
) -> Result<Vec<String>> {
    match format_of(path, format)? {
        Format::Parquet => for_each_parquet_row(path, f),
        fmt => {
            let d = match delimiter {
                Some(d) => d.as_bytes().first().copied().unwrap_or(b','),
                None if fmt == Format::Csv => b',',
                None => b'\t',
            };
            for_each_text_row(path, d, f)
        }
    }
}

/// The header of a table, without reading its rows.
pub fn header_of(
    path: &Path,
    format: Option<Format>,
    delimiter: Option<&str>,
) -> Result<Vec<String>> {
    if format_of(path, format)? == Format::Parquet {
        let (_, header) = open_parquet(path)?;
        return Ok(header);
    }
    let mut r = text_reader(path, delimiter_of(path, format, delimiter)?)?;
    Ok(text_header(path, &mut r)?)
}

fn delimiter_of(path: &Path, format: Option<Format>, delimiter: Option<&str>) -> Result<u8> {
    Ok(match delimiter {
        Some(d) => d.as_bytes().first().copied().unwrap_or(b','),
        None if format_of(path, format)? == Format::Csv => b',',
        None => b'\t',
    })
}

fn text_reader(path: &Path, delimiter: u8) -> DataResult<csv::Reader<Box<dyn std::io::Read>>> {
    csv_reader(path, delimiter, HINT)
}

/// A delimited text file (gzip when named `.gz`) read with the csv crate:
/// quoted fields, a header line, cells trimmed; a missing file is an error
/// naming it with `hint`.
pub(crate) fn csv_reader(
    path: &Path,
    delimiter: u8,
    hint: &str,
) -> DataResult<csv::Reader<Box<dyn std::io::Read>>> {
    let file = super::error::open_input(path, hint)?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let reader: Box<dyn std::io::Read> = if gz {
        Box::new(flate2::read::MultiGzDecoder::new(
            std::io::BufReader::with_capacity(1 << 20, file),
        ))
    } else {
        Box::new(std::io::BufReader::with_capacity(1 << 20, file))
    };
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(reader))
}

/// A csv-crate error as an error naming the file and line.
pub(crate) fn csv_error(path: &Path, e: csv::Error) -> DataError {
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
}

fn text_header(
    path: &Path,
    r: &mut csv::Reader<Box<dyn std::io::Read>>,
) -> DataResult<Vec<String>> {
    let header: Vec<String> = r
        .headers()
        .map_err(|e| csv_error(path, e))?
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
    Ok(header)
}

fn for_each_text_row(path: &Path, delimiter: u8, f: &mut RowFn) -> Result<Vec<String>> {
    let mut r = text_reader(path, delimiter)?;
    let header = text_header(path, &mut r)?;
    let mut rec = csv::StringRecord::new();
    let mut rows = 0u64;
    while r.read_record(&mut rec).map_err(|e| csv_error(path, e))? {
        let line = rec.position().map_or(0, |p| p.line());
        let cells: Vec<Option<&str>> = rec.iter().map(Some).collect();
        f(&header, Place::Line(line), &cells)?;
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::record(
            path,
            Place::File,
            "no data rows: the file has a header only",
        )
        .into());
    }
    Ok(header)
}

fn open_parquet(
    path: &Path,
) -> DataResult<(
    parquet::file::reader::SerializedFileReader<std::fs::File>,
    Vec<String>,
)> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = super::error::open_input(path, HINT)?;
    let reader = SerializedFileReader::new(file).map_err(|e| {
        DataError::record(
            path,
            Place::File,
            format!("not a readable parquet file: {e}"),
        )
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
    Ok((reader, header))
}

fn for_each_parquet_row(path: &Path, f: &mut RowFn) -> Result<Vec<String>> {
    use parquet::file::reader::FileReader;
    use parquet::record::Field;
    let (reader, header) = open_parquet(path)?;
    let iter = reader
        .get_row_iter(None)
        .map_err(|e| DataError::record(path, Place::File, format!("cannot read rows: {e}")))?;
    let mut text: Vec<Option<String>> = Vec::with_capacity(header.len());
    let mut rows = 0u64;
    for (i, row) in iter.enumerate() {
        let place = Place::Row(i as u64 + 1);
        let row =
            row.map_err(|e| DataError::record(path, place.clone(), format!("cannot decode: {e}")))?;
        text.clear();
        for (_, c) in row.get_column_iter() {
            text.push(match c {
                Field::Null => None,
                Field::Str(s) => Some(s.trim().to_string()),
                Field::Bool(b) => Some(if *b { "1".into() } else { "0".into() }),
                Field::Float(v) => Some(v.to_string()),
                Field::Double(v) => Some(v.to_string()),
                other => Some(other.to_string().trim_matches('"').to_string()),
            });
        }
        let cells: Vec<Option<&str>> = text.iter().map(|c| c.as_deref()).collect();
        f(&header, place, &cells)?;
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::record(path, Place::File, "no rows: the table is empty").into());
    }
    Ok(header)
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
            format!(
                "cannot read {} (the dataset was not prepared from a table schema)",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a table record", path.display()))
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
        toml::Value::String(s) => parse_time(s).with_context(|| {
            format!("data.table.split.{key} = {s:?}: not a time (seconds or YYYY-MM-DD)")
        }),
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

/// What the schema resolves to against the inputs' headers: where each value
/// of a main row comes from.
struct Plan<'a> {
    schema: &'a TableSchema,
    /// The main files and the split each one decides (pre-split files).
    files: Vec<(PathBuf, Option<Split>)>,
    sides: Vec<Side>,
    label: Vec<Loc>,
    domain: Vec<Loc>,
    keys: Vec<(String, Vec<Loc>)>,
    ts: Option<(String, Vec<Loc>)>,
    features: Vec<(String, ColumnSpec)>,
    /// Per feature: its source columns (flags: several), each per main file.
    feature_locs: Vec<Vec<Vec<Loc>>>,
    cutoffs: Option<(i64, i64)>,
    catalog: Option<Vec<Loc>>,
    /// (item column, title column).
    titles: Option<(Vec<Loc>, Vec<Loc>)>,
}

/// A main row, parsed.
struct Parsed {
    row: Row,
    /// (raw item id, title), when the schema has a title column.
    title: Option<(String, String)>,
}

impl<'a> Plan<'a> {
    fn new(schema: &'a TableSchema) -> Result<Plan<'a>> {
        if let Some((k, m)) = schema.problems().first() {
            bail!("{k}: {m}");
        }
        let files: Vec<(PathBuf, Option<Split>)> = match schema.split_by() {
            SplitBy::Files => vec![
                (schema.train.clone().unwrap_or_default(), Some(Split::Train)),
                (schema.valid.clone().unwrap_or_default(), Some(Split::Valid)),
                (schema.test.clone().unwrap_or_default(), Some(Split::Test)),
            ],
            _ => vec![(schema.file.clone().unwrap_or_default(), None)],
        };
        let headers: Vec<Vec<String>> = files
            .iter()
            .map(|(f, _)| header_of(f, schema.format, schema.delimiter.as_deref()))
            .collect::<Result<_>>()?;
        let mut sides = Vec::new();
        for j in &schema.join {
            let table = read_table(&j.file, j.format, j.delimiter.as_deref())?;
            let kc = table.column(&j.key, "the join key")?;
            let mut rows = HashMap::with_capacity(table.rows());
            for r in 0..table.rows() {
                let Some(k) = table.cell(r, kc) else {
                    return Err(DataError::field(
                        &table.file,
                        table.place(r),
                        &j.key,
                        "the join key is missing",
                    )
                    .into());
                };
                if let Some(prev) = rows.insert(k.to_string(), r) {
                    return Err(DataError::field(
                        &table.file,
                        table.place(r),
                        &j.key,
                        format!(
                            "key {k:?} repeated (first on {}): a side table has one row per key",
                            table.place(prev)
                        ),
                    )
                    .into());
                }
            }
            let key_main = headers
                .iter()
                .zip(&files)
                .map(|(h, (f, _))| {
                    h.iter().position(|c| *c == j.key).ok_or_else(|| {
                        DataError::field(
                            f,
                            Place::File,
                            &j.key,
                            format!(
                                "the key of the side table {} is not a column of the file (its columns: {})",
                                j.file.display(),
                                h.join(", ")
                            ),
                        )
                    })
                })
                .collect::<DataResult<Vec<_>>>()?;
            sides.push(Side {
                table,
                key_main,
                rows,
            });
        }
        let resolve = |col: &str, what: &str| -> Result<Vec<Loc>> {
            headers
                .iter()
                .zip(&files)
                .map(|(h, (f, _))| {
                    if let Some(i) = h.iter().position(|c| c == col) {
                        return Ok(Loc::Main(i));
                    }
                    for (si, s) in sides.iter().enumerate() {
                        if let Some(i) = s.table.header.iter().position(|c| c == col) {
                            return Ok(Loc::Side(si, i));
                        }
                    }
                    let mut all = h.clone();
                    for s in &sides {
                        all.extend(s.table.header.iter().cloned());
                    }
                    Err(DataError::field(
                        f,
                        Place::File,
                        col,
                        format!("{what} is not a column of the file or its side tables (their columns: {})", all.join(", ")),
                    )
                    .into())
                })
                .collect()
        };
        let label = resolve(&schema.label.column, "the label column")?;
        let domain = resolve(&schema.domain.column, "the domain column")?;
        let keys = schema
            .split
            .key
            .iter()
            .map(|k| Ok((k.clone(), resolve(k, "a split key column")?)))
            .collect::<Result<_>>()?;
        let ts = match schema
            .columns
            .0
            .iter()
            .find(|(_, c)| c.kind == ColumnType::Timestamp)
        {
            Some((n, c)) => {
                let col = c.source(n).to_string();
                let l = resolve(&col, "the timestamp column")?;
                Some((col, l))
            }
            None => None,
        };
        let features: Vec<(String, ColumnSpec)> = schema
            .columns
            .0
            .iter()
            .filter(|(_, c)| c.kind != ColumnType::Timestamp)
            .cloned()
            .collect();
        let feature_locs = features
            .iter()
            .map(|(n, c)| match c.kind {
                ColumnType::Flags => c
                    .columns
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|f| resolve(f, &format!("flag column of field `{n}`")))
                    .collect(),
                _ => Ok(vec![resolve(
                    c.source(n),
                    &format!("the column of field `{n}`"),
                )?]),
            })
            .collect::<Result<_>>()?;
        let cutoffs = match schema.split_by() {
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
        let catalog = match &schema.catalog_column {
            Some(c) => Some(resolve(c, "data.table.catalog_column")?),
            None => None,
        };
        let titles = match &schema.title_column {
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
        Ok(Plan {
            schema,
            files,
            sides,
            label,
            domain,
            keys,
            ts,
            features,
            feature_locs,
            cutoffs,
            catalog,
            titles,
        })
    }

    fn missing(&self, s: Option<&str>) -> Option<String> {
        let s = s?;
        (!self.schema.missing.iter().any(|m| m == s)).then(|| s.to_string())
    }

    /// One main row of file `fi` (None: left out by `domain.exclude`).
    /// `row_number`: its 0-based number among every row read.
    fn row(
        &self,
        fi: usize,
        place: Place,
        cells: &[Option<&str>],
        row_number: u64,
    ) -> Result<Option<Parsed>> {
        let schema = self.schema;
        let file = &self.files[fi].0;
        // The side row of each join, found through the main row's key.
        let mut side_rows = Vec::with_capacity(self.sides.len());
        for (si, s) in self.sides.iter().enumerate() {
            let key = cells.get(s.key_main[fi]).copied().flatten().unwrap_or("");
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
                Loc::Main(c) => cells.get(c).copied().flatten(),
                Loc::Side(si, c) => self.sides[si].table.cell(side_rows[si], c),
            }
        };
        let dom_raw = get(&self.domain).unwrap_or("");
        if schema.domain.exclude.iter().any(|e| e == dom_raw) {
            return Ok(None);
        }
        let Some(dom_raw) = self.missing(Some(dom_raw)) else {
            return Err(DataError::field(
                file,
                place,
                &schema.domain.column,
                "the domain value is missing (list it in data.table.domain.exclude to leave such rows out)",
            )
            .into());
        };
        let domain = schema.domain.map.get(&dom_raw).cloned().unwrap_or(dom_raw);
        let label = label_of(schema, file, &place, get(&self.label))?;
        let ts = match &self.ts {
            Some((c, l)) => {
                let s = get(l).ok_or_else(|| {
                    DataError::field(file, place.clone(), c, "the timestamp is missing")
                })?;
                let v = parse_time(s).ok_or_else(|| {
                    DataError::field(
                        file,
                        place.clone(),
                        c,
                        format!("{s:?} is not a time (integer seconds or YYYY-MM-DD[ HH:MM[:SS]])"),
                    )
                })?;
                if v < 0 {
                    return Err(DataError::field(
                        file,
                        place,
                        c,
                        format!("negative timestamp {v}"),
                    )
                    .into());
                }
                v
            }
            None => 0,
        };
        let hash = if self.keys.is_empty() {
            fnv1a64(row_number.to_string().as_bytes())
        } else {
            let mut key = String::new();
            for (i, (k, l)) in self.keys.iter().enumerate() {
                if i > 0 {
                    key.push(':');
                }
                let v = get(l).ok_or_else(|| {
                    DataError::field(file, place.clone(), k, "a split key value is missing")
                })?;
                key.push_str(v);
            }
            fnv1a64(key.as_bytes())
        };
        let split = match (self.files[fi].1, self.cutoffs) {
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
        let mut values = Vec::with_capacity(self.features.len());
        for ((name, c), locs) in self.features.iter().zip(&self.feature_locs) {
            let src = c.source(name);
            values.push(match c.kind {
                ColumnType::Categorical => {
                    let mut v = self.missing(get(&locs[0]));
                    if let (Some(sep), Some(x)) = (&c.last_part, &v)
                        && let Some(i) = x.rfind(sep.as_str())
                    {
                        v = Some(x[i + sep.len()..].to_string());
                    }
                    in_values(file, &place, src, c.values.as_deref(), v.iter())?;
                    Raw::One(v)
                }
                ColumnType::Numeric => match self.missing(get(&locs[0])) {
                    None => Raw::Num(None),
                    Some(s) => {
                        let x = number(file, &place, src, &s, "")?;
                        let x = if c.log1p {
                            if x <= -1.0 {
                                return Err(DataError::field(
                                    file,
                                    place,
                                    src,
                                    format!("log1p of {x}: the value must be above -1"),
                                )
                                .into());
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
                    let list: Vec<String> = match self.missing(get(&locs[0])) {
                        None => Vec::new(),
                        Some(s) => s
                            .split(sep)
                            .map(str::trim)
                            .filter(|x| !x.is_empty())
                            .map(str::to_string)
                            .collect(),
                    };
                    in_values(file, &place, src, c.values.as_deref(), list.iter())?;
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
                                return Err(DataError::field(
                                    file,
                                    place,
                                    fname,
                                    format!("a flag is 0 or 1, found {other:?}"),
                                )
                                .into());
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
        let title = match &self.titles {
            Some((il, tl)) => match (get(il), get(tl)) {
                (Some(i), Some(t)) => Some((i.to_string(), t.to_string())),
                _ => None,
            },
            None => None,
        };
        Ok(Some(Parsed {
            row: Row {
                catalog: self.catalog.as_ref().and_then(|l| self.missing(get(l))),
                split,
                hash,
                ts,
                label,
                domain,
                values,
                file: fi,
                place,
            },
            title,
        }))
    }

    /// Every main row, in file order: `f(parsed)`. Returns the rows left out.
    fn each(&self, f: &mut dyn FnMut(Parsed) -> Result<()>) -> Result<u64> {
        let mut number = 0u64;
        let mut excluded = 0u64;
        for (fi, (path, _)) in self.files.iter().enumerate() {
            for_each_row(
                path,
                self.schema.format,
                self.schema.delimiter.as_deref(),
                &mut |_, place, cells| {
                    let n = number;
                    number += 1;
                    match self.row(fi, place, cells, n)? {
                        Some(p) => f(p),
                        None => {
                            excluded += 1;
                            Ok(())
                        }
                    }
                },
            )?;
        }
        Ok(excluded)
    }

    fn label_text(&self) -> String {
        let l = &self.schema.label;
        match (l.threshold, l.positive.is_empty()) {
            (Some(t), _) => format!("{} >= {t}", l.column),
            (None, false) => format!("{} in [{}]", l.column, l.positive.join(", ")),
            (None, true) => format!("{} (0/1)", l.column),
        }
    }

    fn field_index(&self, n: &str) -> Option<usize> {
        self.features.iter().position(|(f, _)| f == n)
    }

    /// The prepared fields, given the numeric fields' edges.
    fn field_defs(&self, edges: &BTreeMap<String, Vec<f64>>) -> Vec<FieldDef> {
        self.features
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
                        Some(if e.is_empty() {
                            vec!["all".into()]
                        } else {
                            bucket_labels(e)
                        })
                    }
                    ColumnType::Flags => c.columns.clone(),
                    _ => c.values.clone(),
                };
                FieldDef {
                    name: name.clone(),
                    kind,
                    closed,
                    min_count: c.min_count.unwrap_or(1),
                    vocab_of: None,
                }
            })
            .collect()
    }
}

/// The domains fitted on train: (names in id order, values merged into `other`).
fn fit_domains(
    schema: &TableSchema,
    train_rows: &BTreeMap<String, u64>,
) -> (Vec<String>, Vec<String>) {
    let min = schema.domain.min_rows;
    let merged: Vec<String> = train_rows
        .iter()
        .filter(|&(d, &n)| n < min && !schema.domain.values.iter().any(|v| v == d))
        .map(|(d, _)| d.clone())
        .collect();
    let mut names: Vec<String> = if schema.domain.values.is_empty() {
        train_rows
            .keys()
            .filter(|d| !merged.contains(d))
            .cloned()
            .collect()
    } else {
        schema.domain.values.clone()
    };
    if !merged.is_empty() && !names.iter().any(|n| n == "other") {
        names.push("other".into());
    }
    (names, merged)
}

/// Row → domain id, and the check that a domain only valid/test have is declared.
struct Domains<'a> {
    schema: &'a TableSchema,
    names: Vec<String>,
    merged: Vec<String>,
    index: HashMap<String, u32>,
    train_rows: BTreeMap<String, u64>,
}

impl<'a> Domains<'a> {
    fn new(schema: &'a TableSchema, train_rows: BTreeMap<String, u64>) -> Domains<'a> {
        let (names, merged) = fit_domains(schema, &train_rows);
        let index = names
            .iter()
            .enumerate()
            .map(|(i, d)| (d.clone(), i as u32))
            .collect();
        Domains {
            schema,
            names,
            merged,
            index,
            train_rows,
        }
    }

    fn id(&self, r: &Row, file: &Path, split: Split) -> Result<u32> {
        let name = if self.merged.contains(&r.domain) {
            "other"
        } else {
            r.domain.as_str()
        };
        let Some(&i) = self.index.get(name) else {
            return Err(DataError::field(
                file,
                r.place.clone(),
                &self.schema.domain.column,
                if self.schema.domain.values.is_empty() {
                    format!(
                        "domain {name:?} is in the {} split but train has no row of it: list the \
                         domains in data.table.domain.values to allow a domain only valid/test have \
                         (one to hold out), or merge rare domains with domain.min_rows",
                        split.name()
                    )
                } else {
                    format!("domain {name:?} is not in data.table.domain.values")
                },
            )
            .into());
        };
        if split != Split::Train
            && name != "other"
            && self.train_rows.get(name).copied().unwrap_or(0) == 0
            && !self.schema.domain.values.iter().any(|v| v == name)
        {
            return Err(DataError::field(
                file,
                r.place.clone(),
                &self.schema.domain.column,
                format!(
                    "domain {name:?} is in the {} split but train has no row of it: list the \
                     domains in data.table.domain.values to allow a domain only valid/test have \
                     (one to hold out), or merge rare domains with domain.min_rows",
                    split.name()
                ),
            )
            .into());
        }
        Ok(i)
    }
}

/// Catalogue facts per domain: descriptions, train rows, value shares.
fn catalog_of(
    schema: &TableSchema,
    domains: &[String],
    rows: &[u64],
    shares: Vec<HashMap<String, u64>>,
) -> Result<Catalog> {
    let descriptions = read_descriptions(schema, domains)?;
    let out = domains
        .iter()
        .zip(rows)
        .zip(shares)
        .map(|((d, &n), s)| {
            let total: u64 = s.values().sum();
            let mut ranked: Vec<(String, u64)> = s.into_iter().collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            CatalogDomain {
                name: d.clone(),
                description: descriptions.get(d).cloned(),
                rows: Some(n),
                shares: ranked
                    .into_iter()
                    .take(5)
                    .map(|(value, n)| Share {
                        value,
                        share: n as f64 / total.max(1) as f64,
                    })
                    .collect(),
                ..Default::default()
            }
        })
        .collect();
    Ok(Catalog { domains: out })
}

fn split_of(r: &Row) -> Split {
    r.split.unwrap_or_else(|| Split::of_bucket(r.hash % 10))
}

/// Read the inputs a schema names and assemble them in memory.
pub fn load(schema: &TableSchema) -> Result<Loaded> {
    let plan = Plan::new(schema)?;
    let mut rows: Vec<Row> = Vec::new();
    let mut titles: HashMap<String, String> = HashMap::new();
    let excluded = plan.each(&mut |p| {
        if let Some((i, t)) = p.title {
            titles.entry(i).or_insert(t);
        }
        rows.push(p.row);
        Ok(())
    })?;
    if rows.is_empty() {
        bail!(
            "{}: every row was left out by data.table.domain.exclude ({excluded} rows)",
            plan.files[0].0.display()
        );
    }
    if excluded > 0 {
        tracing::info!("{excluded} rows left out by data.table.domain.exclude");
    }
    let mut train_rows: BTreeMap<String, u64> = BTreeMap::new();
    for r in &rows {
        let n = train_rows.entry(r.domain.clone()).or_default();
        if split_of(r) == Split::Train {
            *n += 1;
        }
    }
    let domains = Domains::new(schema, train_rows);

    // Numeric edges, fitted on train where not fixed.
    let mut edges: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (fi, (name, c)) in plan.features.iter().enumerate() {
        if c.kind != ColumnType::Numeric {
            continue;
        }
        let e = match &c.edges {
            Some(e) => e
                .iter()
                .map(|&x| if c.log1p { x.ln_1p() } else { x })
                .collect(),
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
    let defs = plan.field_defs(&edges);
    let labels: Vec<Vec<String>> = defs
        .iter()
        .map(|d| d.closed.clone().unwrap_or_default())
        .collect();
    let mut builder = TableBuilder::new(defs, domains.names.len());
    let mut cat_rows = vec![0u64; domains.names.len()];
    let mut shares: Vec<HashMap<String, u64>> = vec![HashMap::new(); domains.names.len()];
    for r in &rows {
        let split = split_of(r);
        let d = domains.id(r, &plan.files[r.file].0, split)?;
        if split == Split::Train {
            cat_rows[d as usize] += 1;
            if let Some(v) = &r.catalog {
                *shares[d as usize].entry(v.clone()).or_default() += 1;
            }
        }
        let mut vals = Vec::with_capacity(r.values.len());
        for (fi, v) in r.values.iter().enumerate() {
            vals.push(match v {
                Raw::One(x) => Value::One(x.as_deref()),
                Raw::Many(l) => Value::Many(l.iter().map(String::as_str).collect()),
                Raw::Num(x) => Value::One(x.map(|x| {
                    let e = &edges[plan.features[fi].0.as_str()];
                    labels[fi][if e.is_empty() { 0 } else { bucket(e, x) }].as_str()
                })),
            });
        }
        builder.push_in(r.split, r.hash, r.ts, r.label, d, &vals)?;
    }
    let catalog = catalog_of(schema, &domains.names, &cat_rows, shares)?;
    let spec = StatsSpec {
        user_field: plan.field_index("user_id"),
        item_field: plan.field_index("item_id"),
        category_field: schema
            .category_field
            .as_deref()
            .and_then(|f| plan.field_index(f)),
        titles,
    };
    Ok(Loaded {
        builder,
        spec,
        catalog,
        record: TableRecord {
            schema: schema.clone(),
            edges,
            domains: domains.names.clone(),
            merged: domains.merged.clone(),
        },
        label: plan.label_text(),
        domains: domains.names,
    })
}

/// Reservoir size for the quantiles of a streamed table's numeric fields.
pub const RESERVOIR: usize = 1_000_000;

/// A table read twice, row by row, in bounded memory (`stream = true`): pass 1
/// fits the domains, vocabularies and bucket edges on train; pass 2 writes
/// shards of `shard_rows` rows. Rows keep file order; open-field ids follow
/// first appearance in file order; quantiles come from a seeded reservoir of
/// at most [`RESERVOIR`] train values per field. Writes the shards,
/// `vocab.json`, `catalog.json` and `table.json` under `out`; returns the meta.
pub fn prepare_streamed(
    schema: &TableSchema,
    recipe: &str,
    shard_rows: usize,
    out: &Path,
) -> Result<super::meta::Meta> {
    use super::meta::{DomainMeta, DomainStats, FieldMeta, SplitCounts, SplitsMeta};
    use super::shard::ShardWriter;
    use std::collections::HashSet;
    let plan = Plan::new(schema)?;
    let n_feat = plan.features.len();
    let pb = indicatif::ProgressBar::new_spinner();
    pb.set_message("table pass 1/2 (fit on train)");

    // Pass 1: train counts.
    let mut train_rows: BTreeMap<String, u64> = BTreeMap::new();
    // Per field: value → (first train appearance, train count).
    let mut seen: Vec<HashMap<String, (u64, u32)>> = vec![HashMap::new(); n_feat];
    let mut reservoirs: Vec<Vec<f64>> = vec![Vec::new(); n_feat];
    let mut numeric_seen = vec![0u64; n_feat];
    let mut rng = crate::nn::rng::Rng::new(0x7ab1e);
    let mut order = 0u64;
    let mut rows = 0u64;
    let excluded = plan.each(&mut |p| {
        rows += 1;
        if rows.is_multiple_of(1_000_000) {
            pb.set_message(format!("table pass 1/2 (fit on train): {rows} rows"));
            pb.tick();
        }
        let r = p.row;
        let n = train_rows.entry(r.domain).or_default();
        if split_of_parts(r.split, r.hash) != Split::Train {
            return Ok(());
        }
        *n += 1;
        for (fi, v) in r.values.into_iter().enumerate() {
            match v {
                Raw::One(Some(x)) => note(&mut seen[fi], x, &mut order),
                Raw::One(None) | Raw::Num(None) => {}
                Raw::Many(list) => {
                    for x in list {
                        note(&mut seen[fi], x, &mut order);
                    }
                }
                Raw::Num(Some(x)) => {
                    numeric_seen[fi] += 1;
                    let res = &mut reservoirs[fi];
                    if res.len() < RESERVOIR {
                        res.push(x);
                    } else {
                        let j = (rng.uniform() * numeric_seen[fi] as f64) as u64;
                        if (j as usize) < RESERVOIR {
                            res[j as usize] = x;
                        }
                    }
                }
            }
        }
        Ok(())
    })?;
    if rows == 0 {
        bail!(
            "{}: every row was left out by data.table.domain.exclude ({excluded} rows)",
            plan.files[0].0.display()
        );
    }
    let domains = Domains::new(schema, train_rows);
    let mut edges: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (fi, (name, c)) in plan.features.iter().enumerate() {
        if c.kind == ColumnType::Numeric {
            let e = match &c.edges {
                Some(e) => e
                    .iter()
                    .map(|&x| if c.log1p { x.ln_1p() } else { x })
                    .collect(),
                None => quantile_edges(&mut reservoirs[fi], c.buckets.unwrap_or(10)),
            };
            edges.insert(name.clone(), e);
        }
    }
    drop(reservoirs);
    let defs = plan.field_defs(&edges);
    // Per field: value → id (0 absent), and the open fields' vocabularies.
    let mut ids: Vec<HashMap<String, u32>> = Vec::with_capacity(n_feat);
    let mut vocabs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (fi, d) in defs.iter().enumerate() {
        let map: HashMap<String, u32> = match &d.closed {
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, v)| (v.clone(), i as u32 + 1))
                .collect(),
            None => {
                let mut kept: Vec<(&String, u64)> = seen[fi]
                    .iter()
                    .filter(|(_, (_, n))| *n >= d.min_count)
                    .map(|(v, (first, _))| (v, *first))
                    .collect();
                kept.sort_by_key(|x| x.1);
                vocabs.insert(
                    d.name.clone(),
                    kept.iter().map(|(v, _)| (*v).clone()).collect(),
                );
                kept.iter()
                    .enumerate()
                    .map(|(i, (v, _))| ((*v).clone(), i as u32 + 1))
                    .collect()
            }
        };
        ids.push(map);
    }
    drop(seen);

    // Pass 2: ids, shards and statistics.
    pb.set_message("table pass 2/2 (write shards)");
    let cats: Vec<usize> = (0..n_feat)
        .filter(|&i| defs[i].kind == FieldKind::Categorical)
        .collect();
    let bags: Vec<usize> = (0..n_feat)
        .filter(|&i| defs[i].kind == FieldKind::MultiHot)
        .collect();
    let cat_names: Vec<String> = cats.iter().map(|&i| defs[i].name.clone()).collect();
    let bag_names: Vec<String> = bags.iter().map(|&i| defs[i].name.clone()).collect();
    let cap = if shard_rows == 0 { 262_144 } else { shard_rows };
    let mut writers: Vec<ShardWriter> = Split::ALL
        .iter()
        .map(|s| ShardWriter::new(out.join(s.name()), &cat_names, &bag_names, cap))
        .collect();
    let nd = domains.names.len();
    let mut counts = vec![SplitCounts::default(); nd];
    let mut positives = vec![0u64; nd];
    let mut shares: Vec<HashMap<String, u64>> = vec![HashMap::new(); nd];
    let user = plan.field_index("user_id");
    let item = plan.field_index("item_id");
    let mut users: Vec<HashSet<u32>> = vec![HashSet::new(); nd];
    let mut items: Vec<HashSet<u32>> = vec![HashSet::new(); nd];
    let mut done = 0u64;
    let mut row_ids = vec![0u32; cats.len()];
    let mut row_bags: Vec<Vec<u32>> = vec![Vec::new(); bags.len()];
    let mut field_ids = vec![Vec::<u32>::new(); n_feat];
    plan.each(&mut |p| {
        let r = p.row;
        let split = split_of_parts(r.split, r.hash);
        let d = domains.id(&r, &plan.files[r.file].0, split)? as usize;
        for (fi, v) in r.values.iter().enumerate() {
            let f = &mut field_ids[fi];
            f.clear();
            match v {
                Raw::One(x) => f.push(
                    x.as_ref()
                        .and_then(|x| ids[fi].get(x).copied())
                        .unwrap_or(0),
                ),
                Raw::Many(l) => f.extend(l.iter().map(|x| ids[fi].get(x).copied().unwrap_or(0))),
                Raw::Num(x) => f.push(match x {
                    None => 0,
                    Some(x) => {
                        let e = &edges[plan.features[fi].0.as_str()];
                        if e.is_empty() {
                            1
                        } else {
                            bucket(e, *x) as u32 + 1
                        }
                    }
                }),
            }
        }
        for (k, &fi) in cats.iter().enumerate() {
            row_ids[k] = field_ids[fi][0];
        }
        for (k, &fi) in bags.iter().enumerate() {
            row_bags[k].clear();
            row_bags[k].extend_from_slice(&field_ids[fi]);
        }
        writers[split.index()].push(r.label, d as u32, r.ts, &row_ids, &row_bags)?;
        counts[d].add(split, 1);
        if split == Split::Train {
            positives[d] += u64::from(r.label);
            if let Some(v) = &r.catalog {
                *shares[d].entry(v.clone()).or_default() += 1;
            }
            for (f, set) in [(user, &mut users[d]), (item, &mut items[d])] {
                if let Some(fi) = f
                    && field_ids[fi][0] != 0
                {
                    set.insert(field_ids[fi][0]);
                }
            }
        }
        done += 1;
        if done.is_multiple_of(1_000_000) {
            pb.set_message(format!("table pass 2/2 (write shards): {done} rows"));
            pb.tick();
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    let mut split_meta = Vec::new();
    for w in writers {
        split_meta.push(w.finish()?);
    }
    let [train, valid, test]: [super::meta::SplitMeta; 3] = match split_meta.try_into() {
        Ok(a) => a,
        Err(_) => bail!("internal: three splits"),
    };
    let train_counts: Vec<u64> = counts.iter().map(|c| c.train).collect();
    let catalog = catalog_of(schema, &domains.names, &train_counts, shares)?;
    catalog.write(out)?;
    super::meta::Vocab { fields: vocabs }.write(out)?;
    let record = TableRecord {
        schema: schema.clone(),
        edges,
        domains: domains.names.clone(),
        merged: domains.merged.clone(),
    };
    crate::fsutil::write_atomic(
        &out.join(TableRecord::FILE),
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    let fields = defs
        .iter()
        .enumerate()
        .map(|(fi, d)| FieldMeta {
            name: d.name.clone(),
            kind: d.kind,
            cardinality: match &d.closed {
                Some(l) => l.len() as u32 + 1,
                None => ids[fi].len() as u32 + 1,
            },
            values: d.closed.clone(),
        })
        .collect();
    let domain_meta = domains
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let n = counts[i].train;
            DomainMeta {
                id: i as u32,
                name: name.clone(),
                rows: counts[i],
                train_stats: DomainStats {
                    rows: n,
                    users: user.map(|_| users[i].len() as u64),
                    items: item.map(|_| items[i].len() as u64),
                    positives: positives[i],
                    positive_rate: (n > 0).then(|| positives[i] as f64 / n as f64),
                    top_categories: Vec::new(),
                    example_titles: Vec::new(),
                },
            }
        })
        .collect();
    Ok(super::meta::Meta {
        format: super::meta::FORMAT,
        recipe: recipe.to_string(),
        label: plan.label_text(),
        splits: SplitsMeta { train, valid, test },
        fields,
        domains: domain_meta,
        category_name: schema.category_field.clone(),
        domain_fields: Some(schema.domain_fields()),
        history: None,
    })
}

/// A finite number in a cell, or an error naming the place (`why` follows the message).
pub fn number(file: &Path, place: &Place, field: &str, s: &str, why: &str) -> DataResult<f64> {
    s.parse()
        .ok()
        .filter(|x: &f64| x.is_finite())
        .ok_or_else(|| {
            DataError::field(
                file,
                place.clone(),
                field,
                format!("{s:?} is not a number{why}"),
            )
        })
}

/// Every value is in the field's fixed `list`, when it has one.
fn in_values<'v>(
    file: &Path,
    place: &Place,
    field: &str,
    list: Option<&[String]>,
    mut values: impl Iterator<Item = &'v String>,
) -> Result<()> {
    let Some(list) = list else { return Ok(()) };
    match values.find(|x| !list.contains(x)) {
        Some(x) => Err(DataError::field(
            file,
            place.clone(),
            field,
            format!("{x:?} is not one of its values ({})", list.join(", ")),
        )
        .into()),
        None => Ok(()),
    }
}

fn split_of_parts(split: Option<Split>, hash: u64) -> Split {
    split.unwrap_or_else(|| Split::of_bucket(hash % 10))
}

/// Count a train value, remembering its first appearance.
fn note(seen: &mut HashMap<String, (u64, u32)>, v: String, order: &mut u64) {
    match seen.get_mut(&v) {
        Some(e) => e.1 = e.1.saturating_add(1),
        None => {
            seen.insert(v, (*order, 1));
            *order += 1;
        }
    }
}

fn label_of(schema: &TableSchema, file: &Path, place: &Place, v: Option<&str>) -> Result<u8> {
    let l = &schema.label;
    let col = l.column.as_str();
    let v = v
        .filter(|s| !s.is_empty())
        .ok_or_else(|| DataError::field(file, place.clone(), col, "the label is missing"))?;
    if let Some(t) = l.threshold {
        let x = number(file, place, col, v, &format!(" (label rule: {col} >= {t})"))?;
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
            format!(
                "{v:?} is not a 0/1 label (give label.threshold or label.positive for other values)"
            ),
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
                    return Err(DataError::field(
                        f,
                        t.place(r),
                        "domain",
                        format!("{d:?} is described twice"),
                    )
                    .into());
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
        assert_eq!(
            (bucket(&e, 17.0), bucket(&e, 18.0), bucket(&e, 30.0)),
            (0, 1, 2)
        );
        let mut v: Vec<f64> = (0..100).map(f64::from).collect();
        assert_eq!(quantile_edges(&mut v, 4), vec![25.0, 50.0, 75.0]);
        let mut ties = vec![0.0; 90];
        ties.extend((0..10).map(f64::from));
        assert_eq!(
            quantile_edges(&mut ties, 4),
            Vec::<f64>::new(),
            "all quartiles are 0"
        );
    }
}
