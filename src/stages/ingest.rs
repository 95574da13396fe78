//! The ingest stage: raw telemetry topics in, normalized events out to `chainwatch.events`,
//! keyed by tenant and host so every event of one host meets the same correlator.

use chainwatch_config::ServiceConfig;
use chainwatch_ingest::{Decoder, DecoderConfig, TenantSource, TopicPattern};
use chainwatch_kafka::{InMessage, OutRecord, Transform};
use chainwatch_model::Provenance;

use super::dead_letter;

struct Source {
    name: String,
    pattern: TopicPattern,
    decoder: Decoder,
}

/// The ingest core.
pub struct IngestCore {
    sources: Vec<Source>,
    events_topic: String,
    dead_letter_topic: String,
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
            });
        }
        Ok(Self {
            sources,
            events_topic: config.topics.events.clone(),
            dead_letter_topic: config.topics.dead_letter.clone(),
        })
    }

    /// The subscription regexes of all sources.
    pub fn subscriptions(&self) -> Vec<String> {
        self.sources
            .iter()
            .map(|s| subscription(s.pattern.pattern()))
            .collect()
    }

    fn dead(&self, msg: &InMessage<'_>, reason: &'static str, error: &str) -> Vec<OutRecord> {
        tracing::warn!(
            stage = "ingest",
            topic = msg.topic,
            partition = msg.partition,
            offset = msg.offset,
            reason,
            "dead-lettered: {error}"
        );
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
            return self.dead(
                msg,
                "no_tenant",
                "the topic name matches no source's tenant pattern",
            );
        };
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
                Ok(json) => vec![OutRecord {
                    topic: self.events_topic.clone(),
                    key: format!("{}/{}", event.tenant, event.host.key()).into_bytes(),
                    payload: json,
                    headers: vec![("chainwatch.source", source.name.as_bytes().to_vec())],
                }],
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
    fn subscriptions_are_simple_regexes() {
        assert_eq!(
            subscription("telemetry.{tenant}.windows"),
            "^telemetry\\.[A-Za-z0-9_-]+\\.windows$"
        );
    }
}
