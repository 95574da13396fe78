//! The alert topic's records: a finding in either form, and back.
//!
//! The correlate stage writes each finding in the configured form ([`encode`]) with the form
//! named in the `chainwatch.format` header. Sinks read either form ([`decode`]), so switching
//! the topic's form never breaks a sink, and records written before a switch still deliver.
//! Without the header (a record from another producer) the form is recognised from the JSON:
//! an OCSF finding has `class_uid`.

use chainwatch_config::service::FindingFormat;
use chainwatch_model::Alert;

use crate::{ocsf, render};

/// The record header naming the form of an alert record.
pub const FORMAT_HEADER: &str = "chainwatch.format";

/// Why a record is not a finding.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or not the shape of a finding.
    #[error("not a chainwatch finding ({format}): {source}")]
    Json {
        /// The form it was read as.
        format: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// An OCSF finding without chainwatch's alert under `unmapped.chainwatch`.
    #[error("an OCSF finding not written by chainwatch (no unmapped.chainwatch)")]
    ForeignOcsf,
    /// The header names a form chainwatch does not write.
    #[error("unknown finding format {0:?} in the {FORMAT_HEADER} header")]
    UnknownFormat(String),
}

/// The payload of a finding in `format`.
pub fn encode(alert: &Alert, format: FindingFormat) -> Vec<u8> {
    match format {
        FindingFormat::Json => render::json_line(alert).into_bytes(),
        FindingFormat::Ocsf => ocsf::line(alert).into_bytes(),
    }
}

/// Reads a finding record; `format` is the `chainwatch.format` header, if any.
pub fn decode(payload: &[u8], format: Option<&str>) -> Result<Alert, DecodeError> {
    let format = match format {
        Some("json") => FindingFormat::Json,
        Some("ocsf") => FindingFormat::Ocsf,
        Some(other) => return Err(DecodeError::UnknownFormat(other.to_owned())),
        None => sniff(payload),
    };
    match format {
        FindingFormat::Json => {
            serde_json::from_slice(payload).map_err(|source| DecodeError::Json {
                format: "json",
                source,
            })
        }
        FindingFormat::Ocsf => {
            #[derive(serde::Deserialize)]
            struct Unmapped {
                chainwatch: Option<Alert>,
            }
            #[derive(serde::Deserialize)]
            struct Finding {
                unmapped: Option<Unmapped>,
            }
            let f: Finding =
                serde_json::from_slice(payload).map_err(|source| DecodeError::Json {
                    format: "ocsf",
                    source,
                })?;
            f.unmapped
                .and_then(|u| u.chainwatch)
                .ok_or(DecodeError::ForeignOcsf)
        }
    }
}

fn sniff(payload: &[u8]) -> FindingFormat {
    #[derive(serde::Deserialize)]
    struct Probe {
        class_uid: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Probe>(payload) {
        Ok(Probe {
            class_uid: Some(_), ..
        }) => FindingFormat::Ocsf,
        _ => FindingFormat::Json,
    }
}
