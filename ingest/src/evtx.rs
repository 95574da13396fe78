//! Binary EVTX files: Windows event logs as forensic collection and backfill deliver them.
//!
//! The [`evtx`](https://crates.io/crates/evtx) crate reads the file chunk by chunk (64 KiB,
//! each with its own header, checksums and string table) and renders each record as the nested
//! JSON shape (`Event.System`, `Event.EventData`), which the decoder then reads like any nested
//! Windows event, with format `evtx`.
//!
//! A damaged file loses only what is damaged. A chunk whose header or checksums are wrong is
//! skipped and reported (`corrupt_evtx_chunk`, with the chunk's bytes as the dead letter); the
//! chunks after it are read. A record that cannot be parsed is reported on its own
//! (`bad_evtx_record`). Checksums are checked because a chunk that fails them may hold
//! plausible-looking wrong values (a wrong host or command line), which is worse than a gap
//! that is reported. A file whose header cannot be read is one `bad_evtx_file`.
//!
//! The evtx crate is a third-party parser of hostile input: each chunk is parsed inside
//! `catch_unwind`, so a panic in it costs that chunk, reported, never the process.

use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use chainwatch_model::Provenance;
use evtx::err::EvtxError;
use evtx::{EvtxParser, ParserSettings};

use crate::error::DecodeError;
use crate::payload::{Framing, Piece, Record};

/// The first bytes of every EVTX file.
pub const MAGIC: &[u8; 8] = b"ElfFile\0";
/// EVTX file header size.
const FILE_HEADER: usize = 4096;
/// EVTX chunk size.
const CHUNK: usize = 65536;

/// True when `data` starts like an EVTX file.
pub fn is_evtx(data: &[u8]) -> bool {
    data.starts_with(MAGIC)
}

fn chunk_bytes(data: &[u8], chunk: u64) -> Vec<u8> {
    let start = usize::try_from(chunk)
        .ok()
        .and_then(|c| c.checked_mul(CHUNK))
        .and_then(|o| o.checked_add(FILE_HEADER))
        .unwrap_or(usize::MAX);
    data.get(start..)
        .map(|rest| rest[..rest.len().min(CHUNK)].to_vec())
        .unwrap_or_default()
}

fn bad<'a>(bytes: Vec<u8>, provenance: Provenance, error: DecodeError) -> Piece<'a> {
    Piece::Bad {
        bytes: Cow::Owned(bytes),
        provenance,
        error,
    }
}

/// Reads every record of an EVTX file into `out`, in record order.
pub fn split(data: &[u8], origin: &Provenance, out: &mut Vec<Piece<'_>>) {
    let settings = ParserSettings::new()
        .indent(false)
        .validate_checksums(true)
        .separate_json_attributes(false);
    let parser = catch_unwind(|| EvtxParser::from_buffer(data.to_vec()));
    let mut parser = match parser {
        Ok(Ok(p)) => p.with_configuration(settings.clone()),
        Ok(Err(e)) => {
            out.push(bad(
                data[..data.len().min(FILE_HEADER)].to_vec(),
                origin.clone(),
                DecodeError::BadEvtxFile(e.to_string()),
            ));
            return;
        }
        Err(_) => {
            out.push(bad(
                data[..data.len().min(FILE_HEADER)].to_vec(),
                origin.clone(),
                DecodeError::BadEvtxFile("the EVTX parser panicked on the file header".into()),
            ));
            return;
        }
    };
    let settings = Arc::new(settings);
    let mut chunks = parser.chunks();
    let mut seen = 0u64;
    loop {
        let next = catch_unwind(AssertUnwindSafe(|| chunks.next()));
        let chunk = match next {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(_) => {
                out.push(bad(
                    Vec::new(),
                    origin.clone(),
                    DecodeError::CorruptEvtxChunk {
                        chunk: seen,
                        error: "the EVTX parser panicked while reading a chunk".into(),
                    },
                ));
                break;
            }
        };
        seen += 1;
        let mut chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let number = match &e {
                    EvtxError::FailedToParseChunk { chunk_id, .. } => *chunk_id,
                    _ => seen - 1,
                };
                out.push(bad(
                    chunk_bytes(data, number),
                    origin.clone(),
                    DecodeError::CorruptEvtxChunk {
                        chunk: number,
                        error: error_chain(&e),
                    },
                ));
                continue;
            }
        };
        let number = chunk.number.unwrap_or(seen - 1);
        let start = out.len();
        let parsed = catch_unwind(AssertUnwindSafe(|| {
            read_chunk(&mut chunk, &settings, number, origin, out)
        }));
        match parsed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                out.push(bad(
                    chunk_bytes(data, number),
                    origin.clone(),
                    DecodeError::CorruptEvtxChunk {
                        chunk: number,
                        error,
                    },
                ));
            }
            Err(_) => {
                // Whatever the chunk yielded before the panic is dropped with it: the chunk is
                // reported as one piece, with its bytes.
                out.truncate(start);
                out.push(bad(
                    chunk_bytes(data, number),
                    origin.clone(),
                    DecodeError::CorruptEvtxChunk {
                        chunk: number,
                        error: "the EVTX parser panicked on this chunk".into(),
                    },
                ));
            }
        }
    }
}

fn read_chunk(
    chunk: &mut evtx::EvtxChunkData,
    settings: &Arc<ParserSettings>,
    number: u64,
    origin: &Provenance,
    out: &mut Vec<Piece<'_>>,
) -> Result<(), String> {
    let mut parsed = chunk
        .parse(Arc::clone(settings))
        .map_err(|e| error_chain(&e))?;
    for record in parsed.iter() {
        let piece = match record.and_then(|r| r.into_json()) {
            Ok(r) => Piece::Record(Record {
                bytes: Cow::Owned(r.data.into_bytes()),
                provenance: origin.with_record(r.event_record_id),
                framing: Framing::Evtx,
            }),
            Err(e) => bad(
                Vec::new(),
                origin.clone(),
                DecodeError::BadEvtxRecord(format!("chunk {number}: {}", error_chain(&e))),
            ),
        };
        out.push(piece);
    }
    Ok(())
}

/// An error with its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
