//! Splitting a payload (a file, or one Kafka message) into records, each with its provenance
//! and what the decoder needs to read it.
//!
//! The payload's first bytes say what it is:
//!
//! - gzip (`1f 8b`): decompressed (up to a limit) and split again;
//! - EVTX (`ElfFile\0`): one record per event-log record ([`crate::evtx`]);
//! - JSON (`{` or `[`): JSON lines, a JSON array, or concatenated documents ([`crate::file`]);
//!   an Event Hub batch (`{"records": [...]}`, how Defender's streaming API delivers) is
//!   unwrapped into its records;
//! - W3C text (`#` directives, or data lines starting with a date, or any text when the source's
//!   format is `w3c`): one record per data line, with the `#Fields:` header in force
//!   ([`crate::w3c`]).
//!
//! Pieces that are not records (a corrupted EVTX chunk, a line that is not JSON, a bad gzip
//! stream) come out as [`Piece::Bad`], with their bytes and provenance, to be dead-lettered.
//! Splitting never fails as a whole and never panics.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use chainwatch_config::service::InputFormat;
use chainwatch_model::{Provenance, SharedStr};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::DecodeError;
use crate::file::{FileRecord, split_records};
use crate::w3c::{self, W3cHeader, W3cState};

/// How a record's bytes are to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// One JSON object.
    Json,
    /// One EVTX record rendered as nested JSON.
    Evtx,
    /// One W3C data line, with the `#Fields:` header in force for it (`None`: none seen).
    W3c(Option<Arc<W3cHeader>>),
}

/// One record of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// Its bytes.
    pub bytes: Cow<'a, [u8]>,
    /// Where it is.
    pub provenance: Provenance,
    /// How to read it.
    pub framing: Framing,
}

/// A record, or a stretch of a payload that is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// A record for the decoder.
    Record(Record<'a>),
    /// Bytes that are not a record.
    Bad {
        /// The bytes skipped.
        bytes: Cow<'a, [u8]>,
        /// Where they are.
        provenance: Provenance,
        /// Why.
        error: DecodeError,
    },
}

impl Piece<'_> {
    /// The piece with its bytes owned.
    pub fn into_owned(self) -> Piece<'static> {
        match self {
            Piece::Record(r) => Piece::Record(Record {
                bytes: Cow::Owned(r.bytes.into_owned()),
                provenance: r.provenance,
                framing: r.framing,
            }),
            Piece::Bad {
                bytes,
                provenance,
                error,
            } => Piece::Bad {
                bytes: Cow::Owned(bytes.into_owned()),
                provenance,
                error,
            },
        }
    }

    /// Where the piece is.
    pub fn provenance(&self) -> &Provenance {
        match self {
            Piece::Record(r) => &r.provenance,
            Piece::Bad { provenance, .. } => provenance,
        }
    }
}

/// How payloads of one source are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitOptions {
    /// The source's format (`auto`: told by the payload's first bytes).
    pub format: InputFormat,
    /// Most bytes a gzip payload may decompress to.
    pub max_unpacked_bytes: usize,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            format: InputFormat::Auto,
            max_unpacked_bytes: 1 << 30,
        }
    }
}

impl SplitOptions {
    /// Whether [`split_payload`] may read or change the W3C state it is given: only a `w3c`
    /// source, or an `auto` one whose payload may be W3C text, does. For the other formats a
    /// caller may pass a fresh state instead of keeping one per stream.
    pub fn uses_w3c_state(&self) -> bool {
        matches!(self.format, InputFormat::W3c | InputFormat::Auto)
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Splits `data` into pieces. `origin` is the payload's provenance (a file, or a Kafka
/// message); `w3c` carries W3C directives across payloads of one stream.
pub fn split_payload<'a>(
    data: &'a [u8],
    origin: &Provenance,
    opts: &SplitOptions,
    w3c: &mut W3cState,
) -> Vec<Piece<'a>> {
    let mut pieces = split_inner(data, origin, opts, w3c, 0);
    // One record in a Kafka message: its provenance is the message's.
    if let [only] = pieces.as_mut_slice() {
        let provenance = match only {
            Piece::Record(r) if r.framing == Framing::Evtx => None,
            Piece::Record(r) => Some(&mut r.provenance),
            Piece::Bad { provenance, .. } => Some(provenance),
        };
        if let Some(Provenance::Kafka { record, .. }) = provenance {
            *record = None;
        }
    }
    pieces
}

/// True when a payload that starts with `head` (its first bytes, at least up to its first
/// non-blank one) is split as JSON objects one after another (not gzip, EVTX, W3C or a JSON
/// array). Such a payload can be split a stretch of whole lines at a time: the first with
/// [`split_payload`], the next ones with [`split_json_lines`].
pub fn splits_as_json_lines(head: &[u8], opts: &SplitOptions) -> bool {
    let data = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if data.starts_with(&GZIP_MAGIC)
        || crate::evtx::is_evtx(data)
        || matches!(opts.format, InputFormat::Evtx | InputFormat::W3c)
    {
        return false;
    }
    data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Splits a later stretch of whole lines of a file [`splits_as_json_lines`] accepted: `data`
/// starts at line `first_line` and holds no record over several lines
/// ([`crate::file::plain_lines`] counts them). The pieces are those [`split_payload`] finds in the
/// whole file, with the same provenance.
pub fn split_json_lines<'a>(
    data: &'a [u8],
    origin: &Provenance,
    first_line: u64,
) -> Vec<Piece<'a>> {
    split_json_records(
        crate::file::split_records_from(origin_path(origin), data, first_line),
        origin,
    )
}

fn origin_path(origin: &Provenance) -> SharedStr {
    match origin {
        Provenance::File { path, .. } => path.clone(),
        Provenance::Kafka { .. } => SharedStr::default(),
    }
}

fn split_inner<'a>(
    data: &'a [u8],
    origin: &Provenance,
    opts: &SplitOptions,
    w3c: &mut W3cState,
    depth: usize,
) -> Vec<Piece<'a>> {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    if data.starts_with(&GZIP_MAGIC) && depth == 0 {
        return match gunzip(data, opts.max_unpacked_bytes) {
            Ok(plain) => split_inner(&plain, origin, opts, w3c, depth + 1)
                .into_iter()
                .map(Piece::into_owned)
                .collect(),
            Err(error) => vec![Piece::Bad {
                bytes: Cow::Borrowed(data),
                provenance: origin.clone(),
                error,
            }],
        };
    }
    if crate::evtx::is_evtx(data) {
        let mut out = Vec::new();
        crate::evtx::split(data, origin, &mut out);
        return out;
    }
    if opts.format == InputFormat::Evtx {
        return vec![Piece::Bad {
            bytes: Cow::Borrowed(&data[..data.len().min(4096)]),
            provenance: origin.clone(),
            error: DecodeError::BadEvtxFile("no EVTX file header (ElfFile)".into()),
        }];
    }
    let first = data.iter().position(|b| !b.is_ascii_whitespace());
    let Some(first) = first else {
        return Vec::new();
    };
    let is_w3c = opts.uses_w3c_state()
        && (opts.format == InputFormat::W3c
            || data[first] == b'#'
            || (!matches!(data[first], b'{' | b'[')
                && (w3c.header().is_some() || w3c::looks_like_data_line(&data[first..]))));
    if is_w3c {
        split_w3c(data, origin, w3c)
    } else {
        split_json(data, origin)
    }
}

fn gunzip(data: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let limit64 = u64::try_from(limit).unwrap_or(u64::MAX);
    flate2::read::MultiGzDecoder::new(data)
        .take(limit64.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::BadGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::BadGzip(format!(
            "decompresses to more than {limit} bytes"
        )));
    }
    Ok(out)
}

/// The provenance of the `index`th piece, at `line` of a text payload.
fn place(origin: &Provenance, line: u64, index: u64) -> Provenance {
    match origin {
        Provenance::File { .. } => origin.with_line(line),
        Provenance::Kafka { .. } => origin.with_record(index),
    }
}

fn split_w3c<'a>(data: &'a [u8], origin: &Provenance, w3c: &mut W3cState) -> Vec<Piece<'a>> {
    let mut out = Vec::new();
    let mut line_no = 0u64;
    let mut index = 0u64;
    for raw in data.split(|b| *b == b'\n') {
        line_no += 1;
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if line.first() == Some(&b'#') {
            if let Err(error) = w3c.directive(&String::from_utf8_lossy(line)) {
                out.push(Piece::Bad {
                    bytes: Cow::Borrowed(line),
                    provenance: place(origin, line_no, index),
                    error,
                });
                index += 1;
            }
            continue;
        }
        out.push(Piece::Record(Record {
            bytes: Cow::Borrowed(line),
            provenance: place(origin, line_no, index),
            framing: Framing::W3c(w3c.header()),
        }));
        index += 1;
    }
    out
}

/// An Event Hub batch: `{"records": [...]}` and nothing else.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    records: Vec<&'a RawValue>,
}

fn split_json<'a>(data: &'a [u8], origin: &Provenance) -> Vec<Piece<'a>> {
    split_json_records(split_records(origin_path(origin), data), origin)
}

fn split_json_records<'a>(records: Vec<FileRecord<'a>>, origin: &Provenance) -> Vec<Piece<'a>> {
    let mut out = Vec::new();
    let mut index = 0u64;
    for r in records {
        let (bytes, provenance, error) = match r {
            FileRecord::Record { bytes, provenance } => (bytes, provenance, None),
            FileRecord::Bad {
                bytes,
                provenance,
                error,
            } => (bytes, provenance, Some(error)),
        };
        let provenance = match origin {
            Provenance::File { .. } => provenance,
            Provenance::Kafka { .. } => origin.with_record(index),
        };
        if let Some(error) = error {
            out.push(Piece::Bad {
                bytes: Cow::Borrowed(bytes),
                provenance,
                error,
            });
            index += 1;
            continue;
        }
        let batch = starts_batch(bytes)
            .then(|| serde_json::from_slice::<Batch<'_>>(bytes).ok())
            .flatten();
        match batch {
            Some(batch) => {
                for (i, item) in batch.records.iter().enumerate() {
                    let provenance = match origin {
                        Provenance::File { .. } => provenance.with_record(i as u64),
                        Provenance::Kafka { .. } => origin.with_record(index),
                    };
                    out.push(Piece::Record(Record {
                        bytes: Cow::Borrowed(item.get().as_bytes()),
                        provenance,
                        framing: Framing::Json,
                    }));
                    index += 1;
                }
            }
            None => {
                out.push(Piece::Record(Record {
                    bytes: Cow::Borrowed(bytes),
                    provenance,
                    framing: Framing::Json,
                }));
                index += 1;
            }
        }
    }
    out
}

fn starts_batch(bytes: &[u8]) -> bool {
    let rest = bytes.trim_ascii_start();
    rest.strip_prefix(b"{")
        .map(|r| r.trim_ascii_start().starts_with(b"\"records\""))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file() -> Provenance {
        Provenance::File {
            path: "f".into(),
            line: None,
            record: None,
        }
    }

    fn kafka() -> Provenance {
        Provenance::Kafka {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            record: None,
        }
    }

    fn split(data: &[u8], origin: &Provenance, format: InputFormat) -> Vec<Piece<'static>> {
        let opts = SplitOptions {
            format,
            max_unpacked_bytes: 1 << 20,
        };
        split_payload(data, origin, &opts, &mut W3cState::new())
            .into_iter()
            .map(Piece::into_owned)
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_w3c_file_switches_columns_at_each_header() {
        let log = b"#Software: Microsoft Internet Information Services 10.0\r\n#Fields: date time cs-method\r\n2021-03-14 01:40:12 GET\r\n#Fields: date time cs-uri-stem cs-method\r\n2021-03-14 01:40:13 /owa POST\r\n";
        let p = split(log, &file(), InputFormat::Auto);
        assert_eq!(p.len(), 2);
        let Piece::Record(a) = &p[0] else { panic!() };
        let Piece::Record(b) = &p[1] else { panic!() };
        assert_eq!(a.provenance.to_string(), "f:3");
        assert_eq!(b.provenance.to_string(), "f:5");
        let (Framing::W3c(Some(ha)), Framing::W3c(Some(hb))) = (&a.framing, &b.framing) else {
            panic!()
        };
        assert_eq!(ha.fields.len(), 3);
        assert_eq!(hb.fields.len(), 4);
        assert_eq!(
            hb.software.as_deref(),
            Some("Microsoft Internet Information Services 10.0")
        );
    }

    #[test]
    fn a_kafka_stream_keeps_its_header_across_messages() {
        let mut state = W3cState::new();
        let opts = SplitOptions::default();
        let header = split_payload(b"#Fields: date time cs-method", &kafka(), &opts, &mut state);
        assert!(header.is_empty());
        let line = split_payload(b"2021-03-14 01:40:12 GET", &kafka(), &opts, &mut state);
        let [Piece::Record(r)] = line.as_slice() else {
            panic!("{line:?}")
        };
        assert!(matches!(&r.framing, Framing::W3c(Some(_))));
        assert_eq!(
            r.provenance,
            kafka(),
            "a single record keeps the message's provenance"
        );
        let fresh = split(b"2021-03-14 01:40:12 GET", &kafka(), InputFormat::W3c);
        let [Piece::Record(r)] = fresh.as_slice() else {
            panic!()
        };
        assert_eq!(r.framing, Framing::W3c(None));
    }

    #[test]
    fn batches_arrays_and_gzip() {
        let batch = br#"{"records":[{"a":1},{"b":2}]}"#;
        let p = split(batch, &kafka(), InputFormat::Auto);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].provenance().to_string(), "t[0]@7#1");
        let p = split(&gzip(b"{\"a\":1}\n{\"b\":2}\n"), &file(), InputFormat::Auto);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].provenance().to_string(), "f:2");
        let p = split(b"[{\"a\":1},{\"b\":2}]", &kafka(), InputFormat::Auto);
        assert_eq!(p.len(), 2);
        // A lone object with a "records" key among others is an ordinary record.
        let p = split(br#"{"records":[],"x":1}"#, &kafka(), InputFormat::Auto);
        assert!(matches!(&p[..], [Piece::Record(_)]));
    }

    #[test]
    fn bad_payloads_are_pieces_not_failures() {
        let p = split(&[0x1f, 0x8b, 1, 2, 3], &file(), InputFormat::Auto);
        assert!(matches!(
            &p[..],
            [Piece::Bad {
                error: DecodeError::BadGzip(_),
                ..
            }]
        ));
        let big = gzip(&vec![b' '; 2 << 20]);
        let p = split(&big, &file(), InputFormat::Auto);
        assert!(matches!(
            &p[..],
            [Piece::Bad {
                error: DecodeError::BadGzip(_),
                ..
            }]
        ));
        let p = split(b"{\"a\":1}", &file(), InputFormat::Evtx);
        assert_eq!(p.len(), 1);
        assert!(matches!(&p[0], Piece::Bad { error, .. } if error.reason() == "bad_evtx_file"));
        let p = split(b"ElfFile\0garbage", &file(), InputFormat::Auto);
        assert!(matches!(&p[..], [Piece::Bad { error, .. }] if error.reason() == "bad_evtx_file"));
        let p = split(b"#Fields: a a\n", &file(), InputFormat::W3c);
        assert!(
            matches!(&p[..], [Piece::Bad { error, .. }] if error.reason() == "bad_w3c_directive")
        );
        assert!(split(b"  \n ", &file(), InputFormat::Auto).is_empty());
    }
}
