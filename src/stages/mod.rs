//! The Kafka stages: each is a core (pure, from the library crates) inside the shared loop of
//! `chainwatch-kafka`.

pub mod correlate;
pub mod dead_letter;
pub mod ingest;
pub mod sink;
