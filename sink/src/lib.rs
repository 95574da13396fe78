//! chainwatch alert delivery: findings out to where analysts work.
//!
//! Pure parts (plain `#[test]`s):
//! - [`render`]: chainwatch's JSON (one line per alert) and a readable terminal form.
//! - [`ocsf`]: the OCSF Detection Finding rendering.
//! - [`timeline`]: one finding's evidence timeline with its look-back, for a terminal and as a
//!   self-contained HTML page (`chainwatch explain`).
//! - [`decode`]: the alert topic's records in either form, and back.
//! - [`presets`]: webhook payloads for Jira, ServiceNow, PagerDuty, TheHive, Slack, Teams,
//!   generic JSON, and user templates.
//! - [`route`]: which sinks take which findings (tenants, default, severity, playbook).
//! - [`retry`]: backoff with jitter, `Retry-After`, when to give up.
//! - [`webhook::classify`] and [`file::Rotation`]: what a response means, when to rotate.
//!
//! I/O: [`Deliverer`]s for stdout, JSON lines files and webhooks, one attempt at a time
//! ([`Outcome`]). The Kafka loop that consumes `chainwatch.alerts` per sink, retries and
//! dead-letters lives in the binary (`src/stages/sink.rs`); this crate has no Kafka dependency.

pub mod decode;
pub mod deliver;
pub mod file;
pub mod ocsf;
pub mod presets;
pub mod render;
pub mod retry;
pub mod route;
pub mod timeline;
pub mod webhook;

pub use deliver::{Deliverer, Outcome, SinkError};
pub use route::Router;
