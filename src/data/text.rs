//! Line-oriented reading of text inputs (plain or gzip), with line numbers for errors.

use super::error::{DataError, DataResult, Place};
use flate2::read::MultiGzDecoder;
use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Counts the bytes read from the file on disk (compressed bytes for .gz), for progress.
struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// A text file read line by line; `.gz` files are decompressed on the fly.
pub struct Lines {
    path: PathBuf,
    reader: Box<dyn BufRead>,
    line: u64,
    buf: Vec<u8>,
    read_bytes: Rc<Cell<u64>>,
    size: u64,
}

impl Lines {
    /// Open `path`; `hint` says how to obtain the file when it is missing.
    pub fn open(path: &Path, hint: &str) -> DataResult<Self> {
        let file = super::error::open_input(path, hint)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let read_bytes = Rc::new(Cell::new(0));
        let counted = Counting {
            inner: file,
            count: read_bytes.clone(),
        };
        let gz = path.extension().is_some_and(|e| e == "gz");
        let reader: Box<dyn BufRead> = if gz {
            Box::new(BufReader::with_capacity(
                1 << 20,
                MultiGzDecoder::new(BufReader::new(counted)),
            ))
        } else {
            Box::new(BufReader::with_capacity(1 << 20, counted))
        };
        Ok(Lines {
            path: path.to_path_buf(),
            reader,
            line: 0,
            buf: Vec::new(),
            read_bytes,
            size,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the file on disk read so far, and its size.
    pub fn progress(&self) -> (u64, u64) {
        (self.read_bytes.get(), self.size)
    }

    /// The next line without its `\n` / `\r\n`, with its 1-based number.
    pub fn next_line(&mut self) -> DataResult<Option<(u64, &[u8])>> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| DataError::io(&self.path, e))?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        Ok(Some((self.line, &self.buf)))
    }
}

/// The line as UTF-8, or an error naming the line and the byte offset.
pub fn utf8<'a>(file: &Path, line: u64, bytes: &'a [u8]) -> DataResult<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| {
        DataError::record(
            file,
            Place::Line(line),
            format!(
                "not valid UTF-8 text (bad byte at column {}); convert the file to UTF-8",
                e.valid_up_to() + 1
            ),
        )
    })
}

/// Latin-1 bytes (the GroupLens `u.item`/`movies.dat` encoding) as a String.
pub fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// Split a line into exactly `n` fields on `sep`, naming the file, line and the
/// separator when the count is wrong.
pub fn split_exact<'a>(
    file: &Path,
    line: u64,
    text: &'a str,
    sep: &str,
    n: usize,
) -> DataResult<Vec<&'a str>> {
    let fields: Vec<&str> = text.split(sep).collect();
    if fields.len() != n {
        let shown = sep.escape_default();
        return Err(DataError::record(
            file,
            Place::Line(line),
            format!(
                "expected {n} fields separated by '{shown}', found {}{}",
                fields.len(),
                if text.is_empty() { " (empty line)" } else { "" }
            ),
        ));
    }
    Ok(fields)
}

/// Parse an unsigned integer field, naming file, line and field on failure.
pub fn parse_u64(file: &Path, line: u64, field: &str, value: &str) -> DataResult<u64> {
    value.trim().parse::<u64>().map_err(|_| {
        DataError::field(
            file,
            Place::Line(line),
            field,
            format!("expected a non-negative integer, found {value:?}"),
        )
    })
}

/// Parse a signed integer field, naming file, line and field on failure.
pub fn parse_i64(file: &Path, line: u64, field: &str, value: &str) -> DataResult<i64> {
    value.trim().parse::<i64>().map_err(|_| {
        DataError::field(
            file,
            Place::Line(line),
            field,
            format!("expected an integer, found {value:?}"),
        )
    })
}
