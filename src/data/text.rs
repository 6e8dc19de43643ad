//! Line-oriented reading of text inputs (plain or gzip), with line numbers for errors.
//!
//! Every reader goes through [`Lines`], so every reader gets the same tolerance of
//! harmless variations and the same refusal of empty files:
//! - a UTF-8 byte-order mark at the start of the file is skipped;
//! - lines may end in `\n` or `\r\n`;
//! - a file with no data line (empty, or only a byte-order mark and blank lines) is
//!   an error naming the file.

use super::error::{DataError, DataResult, Place};
use flate2::read::MultiGzDecoder;
use std::borrow::Cow;
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

/// The UTF-8 byte-order mark that some editors write at the start of a file.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

/// `bytes` without a leading UTF-8 byte-order mark.
pub fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

impl Lines {
    /// Open `path`; `hint` says how to obtain the file when it is missing. A file
    /// without any data line (empty, or only a byte-order mark and blank lines) is
    /// an error naming it.
    pub fn open(path: &Path, hint: &str) -> DataResult<Self> {
        let mut probe = Self::open_unchecked(path, hint)?;
        loop {
            match probe.next_line()? {
                Some((_, bytes)) if !is_blank(bytes) => break,
                Some(_) => {}
                None => {
                    return Err(DataError::record(
                        path,
                        Place::File,
                        "no data lines: the file is empty (or holds only a byte-order mark \
                         and blank lines)",
                    ));
                }
            }
        }
        Self::open_unchecked(path, hint)
    }

    fn open_unchecked(path: &Path, hint: &str) -> DataResult<Self> {
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

    /// The next line without its `\n` / `\r\n` (and, on line 1, without a
    /// byte-order mark), with its 1-based number.
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
        let bytes = if self.line == 1 {
            strip_bom(&self.buf)
        } else {
            &self.buf
        };
        Ok(Some((self.line, bytes)))
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

/// The encoding of a text file whose lines are decoded whatever their bytes: the
/// GroupLens `u.item` / `movies.dat` are Latin-1, copies converted to UTF-8 exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Latin1,
}

impl Encoding {
    /// UTF-8 when every line of the file is valid UTF-8, else Latin-1 (any bytes).
    pub fn detect(path: &Path, hint: &str) -> DataResult<Encoding> {
        let mut lines = Lines::open(path, hint)?;
        while let Some((_, bytes)) = lines.next_line()? {
            if std::str::from_utf8(bytes).is_err() {
                return Ok(Encoding::Latin1);
            }
        }
        Ok(Encoding::Utf8)
    }

    /// A line of a file of this encoding as text.
    pub fn decode(self, bytes: &[u8]) -> Cow<'_, str> {
        match self {
            Encoding::Utf8 => String::from_utf8_lossy(bytes),
            Encoding::Latin1 => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
        }
    }
}

/// `path`, or `path.gz` in its place: whichever exists (`None` when neither does).
/// Both present is an error: which one holds the user's data is ambiguous.
pub fn plain_or_gz(path: &Path) -> DataResult<Option<PathBuf>> {
    let mut gz = path.as_os_str().to_owned();
    gz.push(".gz");
    let gz = PathBuf::from(gz);
    match (path.is_file(), gz.is_file()) {
        (true, true) => Err(DataError::Ambiguous {
            first: path.to_path_buf(),
            second: gz,
        }),
        (true, false) => Ok(Some(path.to_path_buf())),
        (false, true) => Ok(Some(gz)),
        (false, false) => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Write `bytes` to `name` (gzip-compressed when it ends in `.gz`).
    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        if name.ends_with(".gz") {
            let f = std::fs::File::create(&p).unwrap();
            let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            enc.write_all(bytes).unwrap();
            enc.finish().unwrap();
        } else {
            std::fs::write(&p, bytes).unwrap();
        }
        p
    }

    fn read_all(path: &Path) -> DataResult<Vec<(u64, Vec<u8>)>> {
        let mut lines = Lines::open(path, "hint")?;
        let mut out = Vec::new();
        while let Some((n, b)) = lines.next_line()? {
            out.push((n, b.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn bom_and_line_endings_do_not_change_the_lines() {
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<(u64, Vec<u8>)> = vec![(1, b"a|b".to_vec()), (2, b"c|d".to_vec())];
        for name in ["x.txt", "x.txt.gz"] {
            for bom in [&b""[..], BOM] {
                for eol in ["\n", "\r\n"] {
                    for last_eol in [true, false] {
                        let mut bytes = bom.to_vec();
                        bytes.extend(format!("a|b{eol}c|d").bytes());
                        if last_eol {
                            bytes.extend(eol.bytes());
                        }
                        let p = write(dir.path(), name, &bytes);
                        assert_eq!(read_all(&p).unwrap(), want, "{name} {bytes:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_bom_is_skipped_only_at_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = b"a\n".to_vec();
        bytes.extend(BOM);
        bytes.extend(b"b\n");
        let p = write(dir.path(), "x.txt", &bytes);
        let lines = read_all(&p).unwrap();
        assert_eq!(lines[1].1, [BOM, b"b"].concat());
    }

    #[test]
    fn files_without_a_data_line_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [&[u8]; 7] = [
            b"",
            BOM,
            b"\xEF\xBB\xBF\n",
            b"\n\n",
            b"\r\n \r\n\t\n",
            b"\xEF\xBB\xBF\r\n  ",
            b"   ",
        ];
        for name in ["empty.txt", "empty.txt.gz"] {
            for bytes in cases {
                let p = write(dir.path(), name, bytes);
                let e = read_all(&p).unwrap_err().to_string();
                assert!(
                    e.contains(&p.display().to_string()) && e.contains("no data lines"),
                    "{bytes:?}: {e}"
                );
            }
        }
        // One data line after blank ones is enough; the blank ones keep their numbers.
        let p = write(dir.path(), "x.txt", b"\n\nx\n");
        assert_eq!(read_all(&p).unwrap()[2], (3, b"x".to_vec()));
    }

    #[test]
    fn encoding_is_utf8_only_when_the_whole_file_is() {
        let dir = tempfile::tempdir().unwrap();
        let title = "Les Misérables (1995)";
        let latin1: Vec<u8> = title.chars().map(|c| c as u8).collect();
        let utf8 = title.as_bytes().to_vec();
        for (bytes, want) in [
            (
                [b"1|x\n".to_vec(), latin1.clone()].concat(),
                Encoding::Latin1,
            ),
            ([BOM.to_vec(), utf8.clone()].concat(), Encoding::Utf8),
            (
                [utf8.clone(), b"\n".to_vec(), latin1.clone()].concat(),
                Encoding::Latin1,
            ),
        ] {
            let p = write(dir.path(), "u.item", &bytes);
            let enc = Encoding::detect(&p, "").unwrap();
            assert_eq!(enc, want);
        }
        assert_eq!(Encoding::Latin1.decode(&latin1), title);
        assert_eq!(Encoding::Utf8.decode(&utf8), title);
    }

    #[test]
    fn plain_and_gzipped_copies_are_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("a.json");
        let gz = dir.path().join("a.json.gz");
        assert_eq!(plain_or_gz(&plain).unwrap(), None);
        std::fs::write(&gz, b"").unwrap();
        assert_eq!(plain_or_gz(&plain).unwrap(), Some(gz.clone()));
        std::fs::write(&plain, b"").unwrap();
        let e = plain_or_gz(&plain).unwrap_err().to_string();
        assert!(e.contains(&plain.display().to_string()), "{e}");
        assert!(e.contains(&gz.display().to_string()), "{e}");
        std::fs::remove_file(&gz).unwrap();
        assert_eq!(plain_or_gz(&plain).unwrap(), Some(plain));
    }
}
