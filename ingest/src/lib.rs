//! chainwatch ingest: raw telemetry records in, normalized events out.
//!
//! - [`decoder`]: [`Decoder::decode`] turns one record's bytes into an [`Event`]
//!   (`bytes -> Result<Event, DecodeError>`), pure and allocation-light.
//! - [`json`]: a one-pass flattening JSON reader, bounded in depth.
//! - [`windows`]: the flat and nested JSON shapes of Windows events.
//! - [`normalize`]: class, activity and canonical fields from mapping tables
//!   (`ingest/mappings/*.toml`: data, not code).
//! - [`tenant`]: the tenant from a topic name pattern.
//! - [`file`]: splitting files into records (JSON lines, arrays, concatenated documents).
//! - [`error`]: [`DecodeError`], whose `reason()` labels dead letters and metrics.
//!
//! The Kafka loop that drives the decoder lives in the binary (`src/stages/ingest.rs`), so this
//! crate builds and tests without librdkafka.
//!
//! [`Event`]: chainwatch_model::Event

pub mod decoder;
pub mod error;
pub mod file;
pub mod json;
pub mod normalize;
pub mod tenant;
pub mod windows;

pub use decoder::{Decoder, DecoderConfig, TenantSource};
pub use error::DecodeError;
pub use file::{FileRecord, split_records};
pub use tenant::TopicPattern;
