//! Dead-letter records: the original bytes, with why and where in the headers.

use chainwatch_kafka::{InMessage, OutRecord};

/// Most bytes of the original record kept in a dead letter: an oversized record must still fit
/// in the dead-letter topic.
pub const MAX_KEPT: usize = 64 * 1024;

/// A dead-letter record for `msg`, which `stage` could not process for `reason`.
pub fn record(
    topic: &str,
    stage: &'static str,
    msg: &InMessage<'_>,
    reason: &'static str,
    error: &str,
) -> OutRecord {
    let payload = msg.payload.unwrap_or_default();
    let kept = &payload[..payload.len().min(MAX_KEPT)];
    let mut headers = vec![
        ("chainwatch.reason", reason.as_bytes().to_vec()),
        ("chainwatch.error", error.as_bytes().to_vec()),
        ("chainwatch.stage", stage.as_bytes().to_vec()),
        ("chainwatch.source.topic", msg.topic.as_bytes().to_vec()),
        (
            "chainwatch.source.partition",
            msg.partition.to_string().into_bytes(),
        ),
        (
            "chainwatch.source.offset",
            msg.offset.to_string().into_bytes(),
        ),
    ];
    if kept.len() < payload.len() {
        headers.push((
            "chainwatch.truncated.from",
            payload.len().to_string().into_bytes(),
        ));
    }
    OutRecord {
        topic: topic.to_owned(),
        key: msg.key.unwrap_or_default().to_vec(),
        payload: kept.to_vec(),
        headers,
    }
}

/// A dead-letter record for one part of `msg` (a record of a message that carried several, such
/// as a W3C block or an EVTX file): the part's own bytes, and its index in a header.
pub fn part(
    topic: &str,
    stage: &'static str,
    msg: &InMessage<'_>,
    bytes: &[u8],
    index: Option<u64>,
    reason: &'static str,
    error: &str,
) -> OutRecord {
    let mut out = record(topic, stage, msg, reason, error);
    let kept = &bytes[..bytes.len().min(MAX_KEPT)];
    out.payload = kept.to_vec();
    out.headers
        .retain(|(k, _)| *k != "chainwatch.truncated.from");
    if kept.len() < bytes.len() {
        out.headers.push((
            "chainwatch.truncated.from",
            bytes.len().to_string().into_bytes(),
        ));
    }
    if let Some(i) = index {
        out.headers
            .push(("chainwatch.source.record", i.to_string().into_bytes()));
    }
    out
}
