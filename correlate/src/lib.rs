//! chainwatch correlation: normalized events in, findings out.
//!
//! - [`ruleset`]: [`RuleSet::compile`] turns Sigma specs (from `chainwatch-config`) into
//!   matchers once; the result is immutable and shared.
//! - [`sigma`]: the Sigma engine: value matchers (every modifier of the specification),
//!   searches and conditions, and the data tables for logsources and field names
//!   (`correlate/mappings/`).
//! - `prefilter`: which rules an event can match, before any runs: literal anchors through
//!   one Aho-Corasick automaton per field, and routes by logsource and event id.
//! - `correlation`: the state of correlation rules per tenant and group key: `temporal`,
//!   `temporal_ordered` with what playbooks add (`correlation::chain`: gaps, counts, optional
//!   and "N of M" stages, absence, partial findings, suppression), `event_count`,
//!   `value_count`, and correlations of correlations; sliding windows in event time, bounded,
//!   with eviction counted.
//! - [`policy`]: per-tenant playbooks, exclusions, priorities and host roles.
//! - [`roles`]: host roles inferred from telemetry (Exchange servers, domain controllers, IIS
//!   servers), per tenant; a playbook scope, listed by `chainwatch hosts`.
//! - [`lookback`]: per host, recent notable events (any rule match), bounded: every alert
//!   carries those of its hosts before and during its chain.
//! - [`engine`]: [`Engine::observe`], the pure core: `&Event -> Vec<Alert>`, no I/O, no clock.
//! - [`gate`]: the fast path's question, answered from a record's raw text before anything is
//!   decoded: can any rule match it? ([`Gate::may_match`]; [`Engine::observe_unmatched`] for
//!   the records it skips.)
//! - [`persist`]: the engine's state as changelog records ([`Engine::take_changes`]) and back
//!   ([`Engine::restore`]), so a partition's partial chains survive a restart or a rebalance.
//!
//! The Kafka loop that feeds an engine lives in the binary (`src/stages/correlate.rs`).

mod compact;
mod correlation;
pub mod engine;
pub mod gate;
pub mod lookback;
pub mod persist;
pub mod policy;
mod prefilter;
mod recency;
pub mod roles;
pub mod ruleset;
pub mod sigma;

pub use engine::{Engine, EngineConfig, EngineStats};
pub use gate::{Gate, GateStats, Interest};
pub use lookback::{LookbackBuffer, LookbackConfig, LookbackSnapshot};
pub use persist::{RestoreStats, StateChange};
pub use policy::Policies;
pub use roles::{HostRoles, RoleSeen, RoleSignals, RoleTable};
pub use ruleset::{
    CompileOptions, CompiledCorrelation, CompiledRule, Input, PrefilterSummary, RuleInfo, RuleSet,
    StageInfo,
};
