//! chainwatch alert delivery: findings out to where analysts work.
//!
//! - [`render`]: chainwatch's JSON (one line per alert) and a readable terminal form.
//! - [`deliver`]: [`Deliverer`]s for stdout and JSON lines files; `Ok` means durable.
//!
//! The Kafka loop that consumes `chainwatch.alerts` per sink lives in the binary
//! (`src/stages/sink.rs`); this crate has no Kafka dependency.

pub mod deliver;
pub mod render;

pub use deliver::{Deliverer, SinkError};
