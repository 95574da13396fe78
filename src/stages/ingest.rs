//! The ingest stage: raw telemetry topics in, normalized events out to `chainwatch.events`,
//! keyed by tenant and host so every event of one host meets the same correlator.

use std::sync::Arc;

use chainwatch_config::ServiceConfig;
use chainwatch_ingest::{Decoder, DecoderConfig, TenantSource, TopicPattern};
use chainwatch_kafka::{InMessage, OutRecord, Transform};
use chainwatch_model::Provenance;

use super::dead_letter;
use crate::telemetry::Metrics;
use crate::telemetry::events::{DeadLettered, EventNormalized, RecordConsumed};

/// The header of an event record that carries when its raw record arrived in Kafka
/// (milliseconds since the epoch, decimal), for the arrival-to-alert latency.
pub const ARRIVAL_HEADER: &str = "chainwatch.arrival";

struct Source {
    name: String,
    pattern: TopicPattern,
    decoder: Decoder,
    /// The configured format, as a metric label.
    format_label: String,
}

/// The ingest core.
pub struct IngestCore {
    sources: Vec<Source>,
    events_topic: String,
    dead_letter_topic: String,
    metrics: Arc<Metrics>,
}

/// A format's config spelling (`WindowsFlat` -> `windows-flat`), read from its name so a new
/// format needs no new label code.
fn kebab(debug_name: &str) -> String {
    let mut out = String::new();
    for (i, c) in debug_name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A librdkafka subscription regex for a topic pattern: librdkafka's regex engine is small, so
/// the tenant part is a plain character class; the exact check is [`TopicPattern::tenant_of`].
pub fn subscription(pattern: &str) -> String {
    let escape = |s: &str| s.replace('.', "\\.");
    let (before, after) = pattern.split_once("{tenant}").unwrap_or((pattern, ""));
    format!("^{}[A-Za-z0-9_-]+{}$", escape(before), escape(after))
}

impl IngestCore {
    /// Builds the core from the config.
    pub fn new(config: &ServiceConfig) -> anyhow::Result<Self> {
        let mut sources = Vec::new();
        for s in &config.sources {
            let timezone = chainwatch_model::time::parse_offset(&s.timezone)
                .ok_or_else(|| anyhow::anyhow!("source {}: bad timezone", s.name))?;
            sources.push(Source {
                name: s.name.clone(),
                pattern: TopicPattern::new(&s.topics).map_err(anyhow::Error::msg)?,
                decoder: Decoder::new(DecoderConfig {
                    format: s.format,
                    timezone,
                    max_record_bytes: s.max_record_bytes,
                    ..DecoderConfig::default()
                })
                .map_err(anyhow::Error::msg)?,
                format_label: kebab(&format!("{:?}", s.format)),
            });
        }
        Ok(Self {
            sources,
            events_topic: config.topics.events.clone(),
            dead_letter_topic: config.topics.dead_letter.clone(),
            metrics: Metrics::detached(),
        })
    }

    /// Reports to `metrics` (instead of a registry nothing serves).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The subscription regexes of all sources.
    pub fn subscriptions(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| subscription(s.pattern.pattern()))
            .collect()
    }

    fn dead(&self, msg: &InMessage<'_>, reason: &'static str, error: &str) -> Vec<OutRecord> {
        DeadLettered {
            stage: "ingest",
            reason,
            msg,
            error,
        }
        .emit(&self.metrics);
        vec![dead_letter::record(
            &self.dead_letter_topic,
            "ingest",
            msg,
            reason,
            error,
        )]
    }
}

impl Transform for IngestCore {
    fn process(&mut self, msg: &InMessage<'_>) -> Vec<OutRecord> {
        let Some((source, tenant)) = self
            .sources
            .iter()
            .find_map(|s| s.pattern.tenant_of(msg.topic).map(|t| (s, t)))
        else {
            RecordConsumed {
                tenant: None,
                source: crate::telemetry::tenants::NONE,
                format: crate::telemetry::tenants::NONE,
            }
            .emit(&self.metrics);
            return self.dead(
                msg,
                "no_tenant",
                "the topic name matches no source's tenant pattern",
            );
        };
        RecordConsumed {
            tenant: Some(tenant.as_str()),
            source: &source.name,
            format: &source.format_label,
        }
        .emit(&self.metrics);
        let Some(payload) = msg.payload else {
            return self.dead(msg, "empty", "the record has no payload");
        };
        let provenance = Provenance::Kafka {
            topic: msg.topic.to_owned(),
            partition: msg.partition,
            offset: msg.offset,
        };
        match source
            .decoder
            .decode(payload, &TenantSource::Fixed(tenant), provenance)
        {
            Ok(event) => match serde_json::to_vec(&event) {
                Ok(json) => {
                    EventNormalized {
                        tenant: event.tenant.as_str(),
                        format: event.source.format.as_str(),
                    }
                    .emit(&self.metrics);
                    let mut headers = vec![("chainwatch.source", source.name.as_bytes().to_vec())];
                    if let Some(ms) = msg.timestamp {
                        headers.push((ARRIVAL_HEADER, ms.to_string().into_bytes()));
                    }
                    vec![OutRecord {
                        topic: self.events_topic.clone(),
                        key: format!("{}/{}", event.tenant, event.host.key()).into_bytes(),
                        payload: json,
                        headers,
                    }]
                }
                Err(e) => self.dead(msg, "unserializable", &e.to_string()),
            },
            Err(e) => self.dead(msg, e.reason(), &e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_labels_are_the_config_spelling() {
        assert_eq!(kebab("WindowsFlat"), "windows-flat");
        assert_eq!(kebab("Auto"), "auto");
    }

    #[test]
    fn subscriptions_are_simple_regexes() {
        assert_eq!(
            subscription("telemetry.{tenant}.windows"),
            "^telemetry\\.[A-Za-z0-9_-]+\\.windows$"
        );
    }
}
