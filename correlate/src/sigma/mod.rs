//! The Sigma engine: specs from `chainwatch-config` compiled into matchers.
//!
//! - [`tables`]: logsource and field-name tables (data under `correlate/mappings/`).
//! - `fields`: field names interned per rule set, and events prepared for matching.
//! - `string`: wildcards, escapes and the transformation modifiers.
//! - `regex`: Sigma (PCRE-flavoured) regular expressions on the `regex` crate.
//! - `value`: one field item's values with its modifiers applied.
//! - `detection`: searches and condition, and what the prefilter can learn from them.

pub(crate) mod detection;
pub(crate) mod fields;
pub(crate) mod regex;
pub(crate) mod string;
pub mod tables;
pub(crate) mod value;

pub use tables::Tables;
