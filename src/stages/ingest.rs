//! The ingest stage: raw telemetry topics in, normalized events out to `chainwatch.events`,
//! keyed by tenant and host so every event of one host meets the same correlator.

use std::collections::HashMap;
use std::sync::Arc;

use chainwatch_config::ServiceConfig;
use chainwatch_ingest::{
    Decoder, DecoderConfig, Piece, TenantSource, TopicPattern, W3cState, split_payload,
};
use chainwatch_kafka::{InMessage, OutRecord, Transform};
use chainwatch_model::{Provenance, RawField, TenantId, Timestamp, wire};

use super::dead_letter;
use crate::telemetry::Metrics;
use crate::telemetry::events::{DeadLettered, EventNormalized, RecordConsumed};

/// The header of an event record that carries when its raw record arrived in Kafka
/// (milliseconds since the epoch, decimal), for the arrival-to-alert latency.
pub const ARRIVAL_HEADER: &str = "chainwatch.arrival";

/// Most W3C streams (topic, partition, key) whose `#Fields:` header is remembered; beyond it
/// the oldest-seen stream is forgotten (its lines then use the source's `w3c_fields`).
const MAX_W3C_STREAMS: usize = 10_000;

/// Most bytes a gzip-compressed message may decompress to.
const MAX_UNPACKED_BYTES: usize = 64 << 20;

struct Source {
    name: String,
    pattern: TopicPattern,
    decoder: Decoder,
    /// The configured format, as a metric label.
    format_label: String,
    /// W3C directives per stream: a header sent in one message applies to the lines of the
    /// following messages of the same topic, partition and key.
    w3c: HashMap<(String, i32, Vec<u8>), (u64, W3cState)>,
    w3c_clock: u64,
}

impl Source {
    fn w3c_state(&mut self, msg: &InMessage<'_>) -> &mut W3cState {
        let key = (
            msg.topic.to_owned(),
            msg.partition,
            msg.key.unwrap_or_default().to_vec(),
        );
        if !self.w3c.contains_key(&key) && self.w3c.len() >= MAX_W3C_STREAMS {
            let oldest = self
                .w3c
                .iter()
                .min_by_key(|(_, (seen, _))| *seen)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.w3c.remove(&k);
            }
        }
        self.w3c_clock += 1;
        let clock = self.w3c_clock;
        let entry = self.w3c.entry(key).or_insert_with(|| (0, W3cState::new()));
        entry.0 = clock;
        &mut entry.1
    }
}

/// An event as the payload of the events topic (`bin1`, `chainwatch_model::wire`), written
/// into a buffer sized from its raw record (`raw_len` bytes: the event holds the record's
/// field names and values, without JSON's quotes and escapes, and a few dozen bytes more), so
/// the usual event takes one allocation.
fn event_payload(event: &chainwatch_model::Event, raw_len: usize) -> Vec<u8> {
    wire::to_bin(event, raw_len + 128)
}

/// The ingest clock, for the sources' time bounds.
fn now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_nanos(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
}

/// The ingest core.
pub struct IngestCore {
    sources: Vec<Source>,
    events_topic: String,
    dead_letter_topic: String,
    metrics: Arc<Metrics>,
    /// The raw scanner's fields of the record being decoded (reused).
    scratch: Vec<RawField>,
    /// Per consumed topic: its source (index) and tenant, `None` when no pattern matches.
    topics: HashMap<String, Option<(usize, TenantId)>>,
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
                    max_unpacked_bytes: MAX_UNPACKED_BYTES,
                    w3c_fields: s.w3c_fields.clone(),
                    max_event_age: s.max_event_age,
                    max_event_ahead: s.max_event_ahead,
                    ..DecoderConfig::default()
                })
                .map_err(|e| anyhow::anyhow!("source {}: {e}", s.name))?,
                w3c: HashMap::new(),
                w3c_clock: 0,
                format_label: kebab(&format!("{:?}", s.format)),
            });
        }
        Ok(Self {
            sources,
            events_topic: config.topics.events.clone(),
            dead_letter_topic: config.topics.dead_letter.clone(),
            metrics: Metrics::detached(),
            scratch: Vec::new(),
            topics: HashMap::new(),
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

    /// The source whose pattern `topic` matches, and the tenant it names: found once per
    /// topic (a regex capture and the tenant's allocation), then looked up. The topics are
    /// those the sources' subscriptions matched, so the map holds one entry per raw topic.
    fn source_of(&mut self, topic: &str) -> Option<(usize, TenantId)> {
        if let Some(found) = self.topics.get(topic) {
            return found.clone();
        }
        let found = self
            .sources
            .iter()
            .enumerate()
            .find_map(|(i, s)| s.pattern.tenant_of(topic).map(|t| (i, t)));
        self.topics.insert(topic.to_owned(), found.clone());
        found
    }

    fn dead(&self, msg: &InMessage<'_>, reason: &'static str, error: &str) -> Vec<OutRecord> {
        DeadLettered {
            stage: "ingest",
            reason,
            msg,
            record: None,
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
        let Some((index, tenant)) = self.source_of(msg.topic) else {
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
            source: &self.sources[index].name,
            format: &self.sources[index].format_label,
        }
        .emit(&self.metrics);
        let Some(payload) = msg.payload else {
            return self.dead(msg, "empty", "the record has no payload");
        };
        let origin = Provenance::Kafka {
            topic: msg.topic.to_owned(),
            partition: msg.partition,
            offset: msg.offset,
            record: None,
        };
        let source = &mut self.sources[index];
        let options = source.decoder.split_options();
        // A source whose format never reads W3C directives gets an empty state, so the usual
        // record costs no stream key (topic and key copied) and no map lookup.
        let mut no_w3c = W3cState::new();
        let w3c = if options.uses_w3c_state() {
            source.w3c_state(msg)
        } else {
            &mut no_w3c
        };
        let pieces = split_payload(payload, &origin, &options, w3c);
        let source = &self.sources[index];
        let tenant = TenantSource::Fixed(tenant);
        let received = now();
        let whole = pieces.len() == 1;
        let mut out = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let (bytes, provenance, error) = match piece {
                Piece::Record(record) => {
                    // An ordinary flat record is decoded from its raw scan; any other in full.
                    let decoded = match source.decoder.read_raw(
                        &record,
                        &tenant,
                        Some(received),
                        &mut self.scratch,
                    ) {
                        Some(raw) => {
                            source
                                .decoder
                                .decode_raw(&record, &raw, &tenant, Some(received))
                        }
                        None => source
                            .decoder
                            .decode_record(&record, &tenant, Some(received)),
                    };
                    match decoded {
                        Ok(event) => {
                            let payload = event_payload(&event, record.bytes.len());
                            EventNormalized {
                                tenant: event.tenant.as_str(),
                                format: event.source.format.as_str(),
                            }
                            .emit(&self.metrics);
                            let mut headers = vec![
                                ("chainwatch.source", source.name.as_bytes().to_vec()),
                                (wire::ENCODING_HEADER, wire::BIN1.to_vec()),
                            ];
                            if let Some(ms) = msg.timestamp {
                                headers.push((ARRIVAL_HEADER, ms.to_string().into_bytes()));
                            }
                            out.push(OutRecord {
                                topic: self.events_topic.clone(),
                                key: format!("{}/{}", event.tenant, event.host.key()).into_bytes(),
                                payload,
                                headers,
                            });
                            continue;
                        }
                        Err(e) => (record.bytes, record.provenance, e),
                    }
                }
                Piece::Bad {
                    bytes,
                    provenance,
                    error,
                } => (bytes, provenance, error),
            };
            if whole {
                out.extend(self.dead(msg, error.reason(), &error.to_string()));
                continue;
            }
            let index = match provenance {
                Provenance::Kafka { record, .. } => record,
                Provenance::File { .. } => None,
            };
            let text = error.to_string();
            DeadLettered {
                stage: "ingest",
                reason: error.reason(),
                msg,
                record: index,
                error: &text,
            }
            .emit(&self.metrics);
            out.push(dead_letter::part(
                &self.dead_letter_topic,
                "ingest",
                msg,
                &bytes,
                index,
                error.reason(),
                &text,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(source: &str) -> (tempfile::TempDir, IngestCore) {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[kafka]\nbrokers = \"x:9092\"\n\n[[sources]]\n{source}\n\n[correlate]\nrules = [\".\"]\n"
        );
        let config = ServiceConfig::from_text(&dir.path().join("c.toml"), &text).unwrap();
        let core = IngestCore::new(&config).unwrap();
        (dir, core)
    }

    fn msg<'a>(key: &'a [u8], offset: i64, payload: &'a [u8]) -> InMessage<'a> {
        InMessage {
            topic: "telemetry.acme.iis",
            partition: 0,
            offset,
            key: Some(key),
            payload: Some(payload),
            timestamp: Some(1_700_000_000_000),
            headers: chainwatch_kafka::InHeaders::default(),
        }
    }

    fn header<'a>(r: &'a OutRecord, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn a_w3c_header_applies_to_later_messages_of_its_stream() {
        let (_dir, mut core) =
            core("name = \"iis\"\ntopics = \"telemetry.{tenant}.iis\"\nformat = \"w3c\"");
        let line = b"2024-05-01 10:00:00 10.0.0.5 POST /owa/auth/shell.aspx";
        assert!(
            core.process(&msg(
                b"exch01",
                1,
                b"#Fields: date time s-ip cs-method cs-uri-stem"
            ))
            .is_empty(),
            "a header alone yields nothing"
        );
        let out = core.process(&msg(b"exch01", 2, line));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].topic, "chainwatch.events");
        assert_eq!(header(&out[0], wire::ENCODING_HEADER), Some("bin1"));
        let encoding = Some(wire::BIN1);
        let event = wire::decode_event(&out[0].payload, encoding).unwrap();
        assert_eq!(event.fields.get_str("cs-method"), Some("POST"));
        assert_eq!(event.tenant.as_str(), "acme");
        assert_eq!(header(&out[0], ARRIVAL_HEADER), Some("1700000000000"));

        // Another stream (key) has seen no header: the line is dead-lettered whole.
        let out = core.process(&msg(b"exch02", 3, line));
        assert_eq!(out[0].topic, "chainwatch.dead-letter");
        assert_eq!(header(&out[0], "chainwatch.reason"), Some("no_w3c_header"));
        assert_eq!(out[0].payload, line);

        // A block of lines: each its own event or dead letter, by index.
        let block = b"2024-05-01 10:00:01 10.0.0.5 GET /owa/\n2024-05-01 10:00:02 10.0.0.5\n";
        let out = core.process(&msg(b"exch01", 4, block));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].topic, "chainwatch.events");
        assert_eq!(out[1].topic, "chainwatch.dead-letter");
        assert_eq!(
            header(&out[1], "chainwatch.reason"),
            Some("w3c_field_count")
        );
        assert_eq!(header(&out[1], "chainwatch.source.record"), Some("1"));
        assert_eq!(header(&out[1], "chainwatch.source.offset"), Some("4"));
        assert_eq!(out[1].payload, b"2024-05-01 10:00:02 10.0.0.5");
    }

    #[test]
    fn configured_columns_and_time_bounds() {
        let (_dir, mut core) = core(
            "name = \"iis\"\ntopics = \"telemetry.{tenant}.iis\"\nformat = \"iis\"\nw3c_fields = \"date time s-ip cs-uri-stem\"\nmax_event_age = \"3650d\"",
        );
        let out = core.process(&msg(b"k", 1, b"2024-05-01 10:00:00 10.0.0.5 /owa/"));
        assert_eq!(out[0].topic, "chainwatch.events");
        let out = core.process(&msg(b"k", 2, b"1999-05-01 10:00:00 10.0.0.5 /owa/"));
        assert_eq!(
            header(&out[0], "chainwatch.reason"),
            Some("time_out_of_range")
        );
    }

    #[test]
    fn only_w3c_and_auto_sources_keep_w3c_state_per_stream() {
        let record = br#"{"EventID":4688,"Computer":"ws1","TimeCreated":"2024-05-01T10:00:00Z"}"#;
        for (format, streams) in [("windows", 0), ("ecs", 0), ("auto", 1), ("w3c", 1)] {
            let (_dir, mut core) = core(&format!(
                "name = \"s\"\ntopics = \"telemetry.{{tenant}}.iis\"\nformat = \"{format}\""
            ));
            core.process(&msg(b"k", 1, record));
            assert_eq!(core.sources[0].w3c.len(), streams, "{format}");
        }
    }

    #[test]
    fn each_topic_s_tenant_is_found_once_and_kept_per_topic() {
        let (_dir, mut core) =
            core("name = \"win\"\ntopics = \"telemetry.{tenant}.windows\"\nformat = \"windows\"");
        let record = br#"{"EventID":4688,"Computer":"ws1","TimeCreated":"2024-05-01T10:00:00Z"}"#;
        let on = |topic: &'static str| InMessage {
            topic,
            ..msg(b"k", 1, record)
        };
        for _ in 0..2 {
            for (topic, tenant) in [
                ("telemetry.acme.windows", "acme"),
                ("telemetry.beta.windows", "beta"),
            ] {
                let out = core.process(&on(topic));
                assert_eq!(out[0].topic, "chainwatch.events", "{topic}");
                let event = wire::decode_event(&out[0].payload, Some(wire::BIN1)).unwrap();
                assert_eq!(event.tenant.as_str(), tenant);
            }
            // A topic no pattern matches: dead-lettered every time, not only the first.
            let out = core.process(&on("telemetry.acme.linux"));
            assert_eq!(header(&out[0], "chainwatch.reason"), Some("no_tenant"));
        }
        assert_eq!(core.topics.len(), 3);
    }

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
