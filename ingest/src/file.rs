//! Splitting files into records: JSON lines, a JSON array, or JSON documents one after another
//! (pretty-printed, as the SigmaHQ regression data is). A malformed record is reported with its
//! line and the reader moves on to the next line that starts a record.

use chainwatch_model::{Provenance, SharedStr};
use serde_json::value::RawValue;

use crate::error::DecodeError;

/// One record found in a file, or a stretch of the file that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRecord<'a> {
    /// A record's bytes.
    Record {
        /// The record.
        bytes: &'a [u8],
        /// Where it is.
        provenance: Provenance,
    },
    /// Bytes that are not a record.
    Bad {
        /// The bytes skipped.
        bytes: &'a [u8],
        /// Where they are.
        provenance: Provenance,
        /// Why they were skipped.
        error: DecodeError,
    },
}

/// Splits `data` (the contents of `path`) into records.
pub fn split_records<'a>(path: impl Into<SharedStr>, data: &'a [u8]) -> Vec<FileRecord<'a>> {
    let path = &path.into();
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut out = Vec::new();
    let first = data.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return out;
    };
    let mut lines = LineCounter::new(data);
    if data[first] == b'[' {
        split_array(path, data, &mut lines, &mut out);
    } else {
        split_stream(path, data, first, &mut lines, &mut out);
    }
    out
}

/// Splits a stretch of whole lines of a JSON text file into records, as [`split_records`]
/// splits them within the whole file: `data` starts at the beginning of line `first_line`,
/// after the file's first stretch (so neither a byte-order mark nor a JSON array is looked
/// for), and holds no record over several lines (see [`plain_lines`]).
pub fn split_records_from<'a>(
    path: impl Into<SharedStr>,
    data: &'a [u8],
    first_line: u64,
) -> Vec<FileRecord<'a>> {
    let path = &path.into();
    let mut out = Vec::new();
    let Some(first) = data.iter().position(|b| !b.is_ascii_whitespace()) else {
        return out;
    };
    let mut lines = LineCounter {
        data,
        pos: 0,
        line: first_line,
    };
    split_stream(path, data, first, &mut lines, &mut out);
    out
}

/// The number of line breaks in `data`, or `None` when some line of it starts a JSON object it
/// does not end: a record over several lines, which only the rest of the file as a whole can
/// split as [`split_records`] does.
pub fn plain_lines(data: &[u8]) -> Option<u64> {
    let mut breaks = 0u64;
    let mut start = 0;
    let ends = memchr::memchr_iter(b'\n', data).chain(std::iter::once(data.len()));
    for end in ends {
        let t = data[start..end].trim_ascii();
        if t.first() == Some(&b'{') && t.last() != Some(&b'}') {
            return None;
        }
        start = end + 1;
        breaks += 1;
    }
    Some(breaks - 1)
}

/// Counts lines up to a position, incrementally (positions only move forward).
struct LineCounter<'a> {
    data: &'a [u8],
    pos: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            line: 1,
        }
    }

    /// Notes that the line after `line` starts at `pos` (just past its line break), so the
    /// next count starts there.
    fn next_line_at(&mut self, pos: usize, line: u64) {
        if pos > self.pos && pos > 0 && self.data.get(pos - 1) == Some(&b'\n') {
            self.pos = pos;
            self.line = line + 1;
        }
    }

    fn line_at(&mut self, pos: usize) -> u64 {
        if pos > self.pos {
            self.line += memchr::memchr_iter(b'\n', &self.data[self.pos..pos]).count() as u64;
            self.pos = pos;
        }
        self.line
    }
}

fn file_prov(path: &SharedStr, line: u64, record: Option<u64>) -> Provenance {
    Provenance::File {
        path: path.clone(),
        line: Some(line),
        record,
    }
}

fn split_array<'a>(
    path: &SharedStr,
    data: &'a [u8],
    lines: &mut LineCounter<'_>,
    out: &mut Vec<FileRecord<'a>>,
) {
    match serde_json::from_slice::<Vec<&RawValue>>(data) {
        Ok(items) => {
            for (i, item) in items.iter().enumerate() {
                let bytes = item.get().as_bytes();
                let offset = bytes.as_ptr() as usize - data.as_ptr() as usize;
                out.push(FileRecord::Record {
                    bytes,
                    provenance: file_prov(path, lines.line_at(offset), Some(i as u64)),
                });
            }
        }
        Err(e) => out.push(FileRecord::Bad {
            bytes: data,
            provenance: file_prov(path, e.line() as u64, None),
            error: DecodeError::MalformedJson(format!("the JSON array does not parse: {e}")),
        }),
    }
}

/// Longest document spread over several lines; longer ones are reported as malformed (records
/// are bounded by `max_record_bytes`, 1 MiB by default, anyway).
const MAX_DOCUMENT: usize = 16 << 20;

fn next_line_start(data: &[u8], from: usize) -> usize {
    memchr::memchr(b'\n', &data[from..]).map_or(data.len(), |i| from + i + 1)
}

fn split_stream<'a>(
    path: &SharedStr,
    data: &'a [u8],
    mut pos: usize,
    lines: &mut LineCounter<'_>,
    out: &mut Vec<FileRecord<'a>>,
) {
    while pos < data.len() {
        if data[pos].is_ascii_whitespace() {
            pos += 1;
            continue;
        }
        let line = lines.line_at(pos);
        let line_end = next_line_start(data, pos);
        let line_bytes = data[pos..line_end].trim_ascii_end();
        if data[pos] != b'{' {
            out.push(FileRecord::Bad {
                bytes: line_bytes,
                provenance: file_prov(path, line, None),
                error: DecodeError::MalformedJson(
                    "a line that does not start a JSON object".into(),
                ),
            });
            lines.next_line_at(line_end, line);
            pos = line_end;
            continue;
        }
        // JSON lines: a record that is one whole line. The decoder checks it; a truncated line
        // is its problem to report.
        if line_bytes.ends_with(b"}") {
            out.push(FileRecord::Record {
                bytes: line_bytes,
                provenance: file_prov(path, line, None),
            });
            lines.next_line_at(line_end, line);
            pos = line_end;
            continue;
        }
        // A document over several lines, looked for within a bounded window: a truncated line
        // (an unterminated string) must not make every later line be parsed again.
        let window = &data[pos..data.len().min(pos.saturating_add(MAX_DOCUMENT))];
        let mut stream = serde_json::Deserializer::from_slice(window).into_iter::<&RawValue>();
        match stream.next() {
            Some(Ok(raw)) => {
                let len = stream.byte_offset();
                out.push(FileRecord::Record {
                    bytes: raw.get().as_bytes(),
                    provenance: file_prov(path, line, None),
                });
                pos += len;
            }
            Some(Err(e)) => {
                out.push(FileRecord::Bad {
                    bytes: line_bytes,
                    provenance: file_prov(path, line, None),
                    error: DecodeError::MalformedJson(e.to_string()),
                });
                // Resynchronize at the next line that starts an object at column 0.
                let mut next = line_end;
                while next < data.len() && data[next] != b'{' {
                    next = next_line_start(data, next);
                }
                pos = next;
            }
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(records: &[FileRecord<'_>]) -> Vec<(bool, u64)> {
        records
            .iter()
            .map(|r| match r {
                FileRecord::Record {
                    provenance: Provenance::File { line, .. },
                    ..
                } => (true, line.unwrap()),
                FileRecord::Bad {
                    provenance: Provenance::File { line, .. },
                    ..
                } => (false, line.unwrap()),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn json_lines_with_a_bad_line() {
        let data = b"{\"a\":1}\n\nnot json\n{\"b\":2}\n";
        let r = split_records("f", data);
        assert_eq!(lines_of(&r), vec![(true, 1), (false, 3), (true, 4)]);
    }

    #[test]
    fn pretty_printed_documents_one_after_another() {
        let data = b"{\n  \"a\": {\n    \"b\": 1\n  }\n}\n\n{\n  \"c\": 2\n}\n";
        let r = split_records("f", data);
        assert_eq!(lines_of(&r), vec![(true, 1), (true, 7)]);
        let FileRecord::Record { bytes, .. } = &r[1] else {
            panic!()
        };
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(bytes).unwrap()["c"],
            2
        );
    }

    #[test]
    fn a_broken_document_is_skipped_to_the_next() {
        let data = b"{\n  \"a\": [1,\n}\n{\n  \"c\": 2\n}\n";
        let r = split_records("f", data);
        assert_eq!(lines_of(&r), vec![(false, 1), (true, 4)]);
    }

    #[test]
    fn json_array() {
        let data = b"\xEF\xBB\xBF[\n {\"a\":1},\n {\"b\":2}\n]";
        let r = split_records("f", data);
        assert_eq!(lines_of(&r), vec![(true, 2), (true, 3)]);
        let bad = split_records("f", b"[{\"a\":1},");
        assert_eq!(lines_of(&bad), vec![(false, 1)]);
    }
}
