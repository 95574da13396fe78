//! The Sigma engine: specs from `chainwatch-config` compiled into matchers.
//!
//! - [`tables`]: logsource and field-name tables (data under `correlate/mappings/`).
//! - `value`: one field item's values with modifiers applied.
//! - `detection`: searches and condition.

pub(crate) mod detection;
pub mod tables;
pub(crate) mod value;

pub use tables::Tables;
