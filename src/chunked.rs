//! Reading telemetry files a stretch of whole lines at a time, into one reused buffer.
//!
//! Reading a whole file into a fresh allocation costs as much as a third of a fast replay
//! (the kernel copies every page into memory it must first fault in and zero). JSON-lines files
//! are instead read in stretches of about [`CHUNK`] bytes ending at a line break, into a buffer
//! reused across stretches and files, and each stretch is split as the whole file would be
//! (`ingest::split_json_lines`, same records, same provenance). Files of any other kind (gzip,
//! EVTX, W3C, JSON arrays), and the rest of a file from a record written over several lines,
//! are read whole, as before.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use chainwatch_ingest::{
    Piece, SplitOptions, W3cState, plain_lines, split_json_lines, split_payload,
    splits_as_json_lines,
};
use chainwatch_model::Provenance;

/// The size of a stretch: small enough that the stretch the kernel just copied is still in the
/// CPU's caches when the scanner reads it (with 4 MiB stretches, replay ran about 10% slower on
/// the OTRF recordings; `scripts/bench.sh`, BENCHMARKS.md), large enough that reads stay few.
pub const CHUNK: usize = 256 << 10;

/// Appends to `buf` up to `want` bytes in all; `true` at the end of the file.
fn fill(file: &mut File, buf: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
    let missing = want.saturating_sub(buf.len());
    let got = file.take(missing as u64).read_to_end(buf)?;
    Ok(got < missing)
}

/// Calls `each` with every piece of the file at `path`, in order, as `split_payload` splits the
/// whole file. `buf` is the reused buffer.
pub fn for_each_piece(
    path: &Path,
    origin: &Provenance,
    opts: &SplitOptions,
    buf: &mut Vec<u8>,
    each: &mut dyn FnMut(Piece<'_>) -> Result<()>,
) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let context = || format!("cannot read {}", path.display());
    // Each file is its own W3C stream: its directives apply to its own lines.
    let mut w3c = W3cState::new();
    buf.clear();
    let mut eof = fill(&mut file, buf, CHUNK).with_context(context)?;
    if eof || !splits_as_json_lines(buf, opts) {
        if !eof {
            file.read_to_end(buf).with_context(context)?;
        }
        for piece in split_payload(buf, origin, opts, &mut w3c) {
            each(piece)?;
        }
        return Ok(());
    }
    let mut first = true;
    let mut line = 1u64;
    loop {
        let end = if eof {
            buf.len()
        } else {
            match memchr::memrchr(b'\n', buf) {
                Some(i) => i + 1,
                None => {
                    // One line longer than a stretch: read on.
                    let want = buf.len() + CHUNK;
                    eof = fill(&mut file, buf, want).with_context(context)?;
                    continue;
                }
            }
        };
        let Some(breaks) = plain_lines(&buf[..end]) else {
            // A record over several lines: the rest of the file is split as a whole.
            if !eof {
                file.read_to_end(buf).with_context(context)?;
            }
            let pieces = if first {
                split_payload(buf, origin, opts, &mut w3c)
            } else {
                split_json_lines(buf, origin, line)
            };
            for piece in pieces {
                each(piece)?;
            }
            return Ok(());
        };
        let stretch = &buf[..end];
        let pieces = if first {
            split_payload(stretch, origin, opts, &mut w3c)
        } else {
            split_json_lines(stretch, origin, line)
        };
        for piece in pieces {
            each(piece)?;
        }
        line += breaks;
        first = false;
        buf.drain(..end);
        if eof {
            return Ok(());
        }
        eof = fill(&mut file, buf, CHUNK).with_context(context)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Pieces of a file read in stretches equal the pieces of the whole file, provenance
    /// included: long lines across stretches, bad lines, a record over several lines late in
    /// the file, a byte-order mark, and files of other kinds.
    #[test]
    fn stretches_split_as_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = String::from("\u{feff}");
        for i in 0..60_000 {
            match i % 997 {
                0 => lines.push_str("not json\n"),
                1 => lines.push_str("\n  \n"),
                2 => lines.push_str(&format!("{{\"big\":\"{}\"}}\n", "x".repeat(CHUNK / 3))),
                3 => lines.push_str("[1,2]\n"),
                _ => lines.push_str(&format!("{{\"EventID\":{i},\"a\":\"line {i}\"}}\n")),
            }
        }
        let mut multi = lines.clone();
        multi.push_str("{\n  \"pretty\": 1\n}\n{\"after\":2}\n");
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("lines.jsonl", lines.into_bytes()),
            ("multi.jsonl", multi.into_bytes()),
            ("array.json", b"[{\"a\":1},\n{\"b\":2}]".to_vec()),
            ("small.jsonl", b"{\"a\":1}\n{\"b\":".to_vec()),
            (
                "w3c.log",
                b"#Fields: date time\n2024-01-01 00:00:00\n".to_vec(),
            ),
        ];
        let opts = SplitOptions::default();
        let mut buf = Vec::new();
        for (name, data) in cases {
            let path = dir.path().join(name);
            std::fs::File::create(&path)
                .unwrap()
                .write_all(&data)
                .unwrap();
            let origin = Provenance::File {
                path: name.into(),
                line: None,
                record: None,
            };
            let whole: Vec<Piece<'static>> =
                split_payload(&data, &origin, &opts, &mut W3cState::new())
                    .into_iter()
                    .map(Piece::into_owned)
                    .collect();
            let mut read = Vec::new();
            for_each_piece(&path, &origin, &opts, &mut buf, &mut |p| {
                read.push(p.into_owned());
                Ok(())
            })
            .unwrap();
            assert_eq!(read.len(), whole.len(), "{name}");
            assert!(read == whole, "{name}: pieces differ");
        }
    }
}
