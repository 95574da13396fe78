//! chainwatch ingest: raw telemetry records in, normalized events out.
//!
//! - [`payload`]: a file or a Kafka message split into records: gzip, EVTX, JSON lines and
//!   arrays, Event Hub batches, W3C lines with their header.
//! - [`decoder`]: [`Decoder::decode_record`] turns one record into an [`Event`]
//!   (`bytes -> Result<Event, DecodeError>`), pure and allocation-light.
//! - [`detect`]: which JSON format a record is, for `format = "auto"`.
//! - Formats, each naming its fields and where its time and host are ([`layout`]):
//!   [`windows`] (flat and nested JSON), [`evtx`] (binary files), [`ecs`] (Winlogbeat, Elastic
//!   Agent), [`mde`] (Defender for Endpoint), [`w3c`] (IIS access logs), [`ocsf`].
//! - [`json`]: a one-pass flattening JSON reader, bounded in depth.
//! - [`normalize`]: class, activity, canonical fields and aliases from mapping tables
//!   (`ingest/mappings/<format>.toml`: data, not code).
//! - [`tenant`]: the tenant from a topic name pattern.
//! - [`file`](mod@file): splitting JSON text into records (JSON lines, arrays, concatenated documents).
//! - [`error`]: [`DecodeError`], whose `reason()` labels dead letters and metrics.
//!
//! The Kafka loop that drives the decoder lives in the binary (`src/stages/ingest.rs`), so this
//! crate builds and tests without librdkafka. `docs/normalization.md` documents every format's
//! mapping in words.
//!
//! [`Event`]: chainwatch_model::Event

pub mod decoder;
pub mod detect;
pub mod ecs;
pub mod error;
pub mod evtx;
pub mod fast;
pub mod file;
pub mod json;
pub mod layout;
pub mod mde;
pub mod normalize;
pub mod ocsf;
pub mod payload;
pub mod raw;
pub mod tenant;
pub mod w3c;
pub mod windows;

pub use decoder::{Decoder, DecoderConfig, TenantSource};
pub use error::DecodeError;
pub use fast::RawEvent;
pub use file::{FileRecord, plain_lines, split_records};
pub use payload::{
    Framing, Piece, Record, SplitOptions, split_json_lines, split_payload, splits_as_json_lines,
};
pub use tenant::TopicPattern;
pub use w3c::W3cState;
