//! chainwatch correlation: normalized events in, findings out.
//!
//! - [`ruleset`]: [`RuleSet::compile`] turns Sigma specs (from `chainwatch-config`) into
//!   matchers once; the result is immutable and shared.
//! - [`sigma`]: the Sigma engine: value matchers, searches and conditions, and the data tables
//!   for logsources and field names (`correlate/mappings/`).
//! - `chain`: ordered multi-stage chains per tenant and group key, bounded.
//! - [`engine`]: [`Engine::observe`], the pure core: `&Event -> Vec<Alert>`, no I/O, no clock.
//!
//! The Kafka loop that feeds an engine lives in the binary (`src/stages/correlate.rs`).

mod chain;
pub mod engine;
pub mod policy;
pub mod ruleset;
pub mod sigma;

pub use engine::{Engine, EngineConfig, EngineStats};
pub use policy::Policies;
pub use ruleset::{CompiledCorrelation, CompiledRule, RuleInfo, RuleSet};
