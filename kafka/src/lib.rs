//! chainwatch's Kafka plumbing, shared by every stage.
//!
//! - [`client`]: consumer and producer settings (at-least-once, idempotent producer), the
//!   librdkafka pass-through from the config, librdkafka logs into `tracing`.
//! - [`admin`]: creating chainwatch's topics.
//! - [`observe`]: client statistics (consumer lag, brokers up), rebalances and errors as
//!   Prometheus metrics in a registry passed in, and the facts `/readyz` needs.
//! - [`stats`]: the parts of librdkafka's statistics JSON that [`observe`] reads.
//! - [`stage`]: the one loop every stage runs: consume, run a core ([`Transform`] or
//!   [`Deliver`]), produce or deliver, then store the offset; for a stateful core
//!   ([`run_stateful`]), its state changes go to a changelog first.
//! - [`handoff`]: in a process running both, ingest's acknowledged events handed straight to
//!   the correlator's loop, the events topic still the record of what was processed.
//! - [`changelog`]: the compacted state changelog of a stateful stage, and reading a
//!   partition's state back from it.
//! - [`scan`]: reading topic ranges located by time without any consumer group (hunts,
//!   `explain`, `hosts`, the correlator's start-up read of the roles topic).
//!
//! Only this crate and the binary build librdkafka; the cores (ingest, correlate, sink) do not.

pub mod admin;
pub mod changelog;
pub mod client;
pub mod handoff;
pub mod observe;
pub mod scan;
pub mod stage;
pub mod stats;

pub use changelog::Changelog;
pub use handoff::{Handoff, HandoffCounters, Inbox};
pub use observe::{ClientObserver, KafkaMetrics};
pub use stage::{
    Deliver, Delivery, InHeaders, InMessage, LoopConfig, OutRecord, StateRecord, Transform,
    run_delivery, run_stateful, run_transform,
};

/// Why a stage stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A Kafka client error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A set-up step failed.
    #[error("{0}")]
    Setup(String),
    /// A delivery failed for good.
    #[error("delivery failed: {0}")]
    Delivery(String),
}
