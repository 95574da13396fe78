//! librdkafka's statistics, the few fields chainwatch reads.
//!
//! librdkafka emits a JSON document every `statistics.interval.ms` (see its `STATISTICS.md`).
//! We read only what the metrics and readiness need, leniently: a field librdkafka drops or
//! renames becomes "unknown", never a parse failure that loses the rest.

use std::collections::HashMap;

use serde::Deserialize;

/// The parts of one statistics document chainwatch uses.
#[derive(Debug, Default, Deserialize)]
pub struct Stats {
    /// `consumer` or `producer`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Per broker connection, by name.
    #[serde(default)]
    pub brokers: HashMap<String, BrokerStats>,
    /// Per topic, by name.
    #[serde(default)]
    pub topics: HashMap<String, TopicStats>,
}

/// One broker connection.
#[derive(Debug, Default, Deserialize)]
pub struct BrokerStats {
    /// `UP`, `DOWN`, `INIT`, `CONNECT`, ...
    #[serde(default)]
    pub state: String,
    /// `configured` (bootstrap), `learned` (from metadata), `internal` or `logical`.
    #[serde(default)]
    pub source: String,
}

/// One topic.
#[derive(Debug, Default, Deserialize)]
pub struct TopicStats {
    /// Per partition, by number as text; `-1` is librdkafka's internal unassigned partition.
    #[serde(default)]
    pub partitions: HashMap<String, PartitionStats>,
}

/// One partition.
#[derive(Debug, Deserialize)]
pub struct PartitionStats {
    /// The partition.
    pub partition: i32,
    /// Messages between the committed offset and the partition's end (the high watermark, or
    /// the last stable offset under `read_committed`); -1 when unknown (not assigned, nothing
    /// committed yet, or the watermark is behind the committed offset).
    #[serde(default = "unknown")]
    pub consumer_lag: i64,
}

fn unknown() -> i64 {
    -1
}

impl Stats {
    /// Parses a statistics document.
    pub fn parse(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Broker connections that are up, among real brokers (bootstrap and learned ones; not
    /// librdkafka's internal and logical placeholders).
    pub fn brokers_up(&self) -> usize {
        self.brokers
            .values()
            .filter(|b| b.state == "UP" && matches!(b.source.as_str(), "configured" | "learned"))
            .count()
    }

    /// `(topic, partition, lag)` for every partition whose consumer lag is known.
    pub fn known_lags(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.topics.iter().flat_map(|(topic, t)| {
            t.partitions
                .values()
                .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                .map(move |p| (topic.as_str(), p.partition, p.consumer_lag))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like librdkafka 2.12's output, trimmed.
    const DOC: &str = r#"{
      "name": "cw#consumer-1", "type": "consumer", "ts": 1, "time": 2,
      "brokers": {
        "127.0.0.1:9092/bootstrap": {"name": "127.0.0.1:9092/bootstrap", "nodeid": -1, "source": "configured", "state": "UP"},
        "127.0.0.1:9092/1": {"name": "127.0.0.1:9092/1", "nodeid": 1, "source": "learned", "state": "DOWN"},
        "GroupCoordinator": {"name": "GroupCoordinator", "nodeid": -1, "source": "logical", "state": "UP"},
        ":0/internal": {"name": ":0/internal", "nodeid": -1, "source": "internal", "state": "UP"}
      },
      "topics": {
        "telemetry.acme.windows": {"topic": "telemetry.acme.windows", "partitions": {
          "0": {"partition": 0, "consumer_lag": 42, "hi_offset": 50},
          "1": {"partition": 1, "consumer_lag": -1},
          "-1": {"partition": -1, "consumer_lag": -1}
        }}
      },
      "cgrp": {"state": "up", "rebalance_cnt": 1}
    }"#;

    #[test]
    fn reads_brokers_and_known_lags() {
        let s = Stats::parse(DOC.as_bytes()).unwrap();
        assert_eq!(s.kind, "consumer");
        assert_eq!(s.brokers_up(), 1);
        let lags: Vec<_> = s.known_lags().collect();
        assert_eq!(lags, vec![("telemetry.acme.windows", 0, 42)]);
    }

    #[test]
    fn missing_fields_are_unknown_not_errors() {
        let s =
            Stats::parse(br#"{"topics": {"t": {"partitions": {"0": {"partition": 0}}}}}"#).unwrap();
        assert_eq!(s.brokers_up(), 0);
        assert_eq!(s.known_lags().count(), 0);
    }
}
