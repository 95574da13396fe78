//! chainwatch's configuration: the service config and the rule files.
//!
//! - [`service`]: the TOML service config (`chainwatch run --config FILE`): Kafka, sources,
//!   rules, sinks ([`sinks`]: kinds, payload presets, routes, retries; [`secret`]: credentials
//!   read from the environment or files, redacted when printed). Closed (unknown keys are
//!   errors), documented per field, with named defaults.
//! - [`ops`]: its operations sections: `[http]`, `[log]`, `[metrics]`.
//! - [`sigma`]: Sigma detection and correlation rules read into typed specs.
//! - [`playbook`]: what a playbook adds to a Sigma correlation rule.
//! - [`rules`]: finding rule files in folders.
//! - [`placeholders`]: values of Sigma `%placeholders%` from a file.
//!
//! Every loader is pure apart from reading files, and reports all problems at once as
//! [`Diagnostic`]s with file and line, so a bad change is fixed in one round. Nothing here knows
//! about Kafka or tokio; compiling rules into matchers is `chainwatch-correlate`'s job.

pub mod diagnostic;
pub mod duration;
pub mod ops;
pub mod placeholders;
pub mod playbook;
pub mod rules;
pub mod secret;
pub mod service;
pub mod sigma;
pub mod sinks;
mod yaml;

pub use diagnostic::{Diagnostic, Diagnostics};
pub use duration::parse_duration;
pub use placeholders::{Placeholders, load_placeholders};
pub use playbook::PlaybookSpec;
pub use rules::{LoadedRules, load_rule_paths};
pub use secret::{MaybeSecret, Secret, SecretSource};
pub use service::{ServiceConfig, TenantConfig, TenantsFile};

pub(crate) use chainwatch_model::time::parse_offset;
