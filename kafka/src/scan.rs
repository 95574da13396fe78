//! Reading a topic outside any consumer group: `chainwatch hunt` over the events topic,
//! `chainwatch explain` over the alerts topic, `chainwatch hosts` and the correlator's start-up
//! over the roles topic.
//!
//! A [`Reader`] assigns partitions itself (`assign`, never `subscribe`): it joins no group, so
//! no live group rebalances; it commits nothing (no automatic commits, no stored offsets), so
//! no group's position moves. Its `group.id` is unique to the process and never used by the
//! broker. Ranges are located by time with offset lookups by timestamp (Kafka's
//! `offsetsForTimes`), clamped to the partitions' watermarks: record timestamps are the
//! producer's create time, which is when chainwatch wrote the record, not the event's time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chainwatch_config::service::KafkaConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::client::Context;
use crate::{InHeaders, StageError};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The offsets `[start, end)` of one partition to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    /// The partition.
    pub partition: i32,
    /// The first offset to read.
    pub start: i64,
    /// The offset after the last one to read.
    pub end: i64,
}

impl PartitionRange {
    /// Records in the range.
    pub fn len(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }

    /// True when there is nothing to read.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// The range of a partition with watermarks `[low, high)`, from the offset lookups by time:
/// `start` for the beginning of the span (`None`: no lookup, from `low`; `Some(None)`: no record
/// at or after it), `end` for the end (`None`: no lookup, to `high`; `Some(None)`: no record at
/// or after it, to `high`). Lookups outside the watermarks are clamped to them.
pub fn clamp_range(
    partition: i32,
    low: i64,
    high: i64,
    start: Option<Option<i64>>,
    end: Option<Option<i64>>,
) -> PartitionRange {
    let start = match start {
        None => low,
        Some(None) => high,
        Some(Some(o)) => o.clamp(low, high),
    };
    let end = match end {
        None | Some(None) => high,
        Some(Some(o)) => o.clamp(low, high),
    };
    PartitionRange {
        partition,
        start,
        end: end.max(start),
    }
}

/// One record as the reader hands it out.
#[derive(Debug, Clone, Copy)]
pub struct ScannedRecord<'a> {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (create or log-append time), milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its payload.
    pub payload: Option<&'a [u8]>,
    /// Its headers.
    pub headers: InHeaders<'a>,
}

/// What to do after a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// This partition is done (the records after this one are not wanted).
    StopPartition,
}

/// A topic reader that belongs to no consumer group.
pub struct Reader {
    consumer: BaseConsumer<Context>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").finish_non_exhaustive()
    }
}

/// A reader with the config's brokers and pass-through options; `purpose` names it in the
/// broker's client list (`{group_prefix}-{purpose}-{pid}`).
pub fn reader(config: &KafkaConfig, purpose: &'static str) -> KafkaResult<Reader> {
    let mut c = rdkafka::ClientConfig::new();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    c.set("bootstrap.servers", &config.brokers)
        .set(
            "client.id",
            format!("{}-{purpose}-{}", config.group_prefix, std::process::id()),
        )
        // librdkafka wants a group id even for assign(); this one is never joined or
        // committed to.
        .set(
            "group.id",
            format!(
                "{}-{purpose}-{}-{nanos:x}-unused",
                config.group_prefix,
                std::process::id()
            ),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    crate::client::pass_through(&mut c, config);
    // As the stages' consumers: a broker that holds every fetch for its wait (Tansu) would
    // otherwise pace the scan.
    crate::client::default_fetch_wait(&mut c);
    // The pass-through must not turn commits back on.
    c.set("enable.auto.commit", "false");
    let consumer = c.create_with_context(Context {
        stage: purpose,
        ..Context::default()
    })?;
    Ok(Reader { consumer })
}

impl Reader {
    /// Whether `topic` exists (metadata).
    pub fn exists(&self, topic: &str) -> Result<bool, StageError> {
        let md = self.consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        Ok(md
            .topics()
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty()))
    }

    /// The partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>, StageError> {
        let md = self.consumer.fetch_metadata(Some(topic), TIMEOUT)?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| StageError::Setup(format!("topic {topic} not found")))?;
        if let Some(e) = t.error() {
            return Err(StageError::Setup(format!(
                "topic {topic}: {}",
                rdkafka::types::RDKafkaErrorCode::from(e)
            )));
        }
        let mut parts: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        parts.sort_unstable();
        if parts.is_empty() {
            return Err(StageError::Setup(format!(
                "topic {topic} has no partitions"
            )));
        }
        Ok(parts)
    }

    /// The offsets of every partition of `topic` whose records were written from `from_ms`
    /// up to `to_ms` (milliseconds since the epoch; `None`: from the start, to the end), by
    /// offset lookups by timestamp. Kafka answers a lookup with the first offset whose
    /// timestamp is at or after the time (by its time index: right even when timestamps are
    /// not in order); Tansu 0.6.0 answers every lookup with offset 0, which for a start is
    /// merely the whole partition, but for an end would be nothing: callers that must not
    /// miss records on such a broker bound the end by the records' own timestamps instead.
    pub fn ranges(
        &self,
        topic: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
    ) -> Result<Vec<PartitionRange>, StageError> {
        let parts = self.partitions(topic)?;
        let lookup = |ms: Option<i64>| -> Result<Option<HashMap<i32, Option<i64>>>, StageError> {
            let Some(ms) = ms else { return Ok(None) };
            let mut tpl = TopicPartitionList::new();
            for p in &parts {
                tpl.add_partition_offset(topic, *p, Offset::Offset(ms))?;
            }
            let found = self.consumer.offsets_for_times(tpl, TIMEOUT)?;
            Ok(Some(
                found
                    .elements()
                    .iter()
                    .map(|e| {
                        let o = match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        };
                        (e.partition(), o)
                    })
                    .collect(),
            ))
        };
        let starts = lookup(from_ms)?;
        let ends = lookup(to_ms)?;
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            let (low, high) = self.consumer.fetch_watermarks(topic, p, TIMEOUT)?;
            out.push(clamp_range(
                p,
                low,
                high,
                starts.as_ref().map(|m| m.get(&p).copied().flatten()),
                ends.as_ref().map(|m| m.get(&p).copied().flatten()),
            ));
        }
        Ok(out)
    }

    /// Reads `ranges` of `topic`, handing every record to `on_record` (in offset order per
    /// partition, partitions interleaved). Returns when every range is read or stopped; fails
    /// when no record arrives for `idle` while some range is unfinished.
    pub fn read(
        &self,
        topic: &str,
        ranges: &[PartitionRange],
        idle: Duration,
        on_record: &mut dyn FnMut(&ScannedRecord<'_>) -> Flow,
    ) -> Result<(), StageError> {
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut end: HashMap<i32, i64> = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            tpl.add_partition_offset(topic, r.partition, Offset::Offset(r.start))?;
            next.insert(r.partition, r.start);
            end.insert(r.partition, r.end);
        }
        if next.is_empty() {
            return Ok(());
        }
        self.consumer.assign(&tpl)?;
        let mut last = Instant::now();
        let result = loop {
            if next.iter().all(|(p, n)| *n >= end[p]) {
                break Ok(());
            }
            match self.consumer.poll(Duration::from_millis(200)) {
                None => {
                    if last.elapsed() > idle {
                        let behind: Vec<String> = next
                            .iter()
                            .filter(|(p, n)| **n < end[p])
                            .map(|(p, n)| format!("{topic}[{p}] at {n} of {}", end[p]))
                            .collect();
                        break Err(StageError::Setup(format!(
                            "no record for {idle:?} while reading {}",
                            behind.join(", ")
                        )));
                    }
                }
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(m)) => {
                    last = Instant::now();
                    let p = m.partition();
                    let (Some(n), Some(e)) = (next.get(&p).copied(), end.get(&p).copied()) else {
                        continue;
                    };
                    if m.offset() < n || n >= e {
                        continue;
                    }
                    next.insert(p, m.offset() + 1);
                    if m.offset() >= e {
                        continue;
                    }
                    let record = ScannedRecord {
                        partition: p,
                        offset: m.offset(),
                        timestamp: m.timestamp().to_millis(),
                        key: m.key(),
                        payload: m.payload(),
                        headers: m.headers().map(InHeaders::of).unwrap_or_default(),
                    };
                    if on_record(&record) == Flow::StopPartition {
                        next.insert(p, e);
                    }
                }
            }
        };
        // Hand the partitions back (nothing was joined; this only stops fetching).
        let _ = self.consumer.unassign();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_the_lookups_within_the_watermarks() {
        // No lookups: the whole partition.
        assert_eq!(
            clamp_range(0, 5, 100, None, None),
            PartitionRange {
                partition: 0,
                start: 5,
                end: 100
            }
        );
        // Both found.
        let r = clamp_range(1, 0, 100, Some(Some(40)), Some(Some(70)));
        assert_eq!((r.start, r.end, r.len()), (40, 70, 30));
        // Nothing written at or after the start: nothing to read.
        assert!(clamp_range(2, 0, 100, Some(None), Some(None)).is_empty());
        // Nothing written after the end: read to the end.
        assert_eq!(clamp_range(3, 0, 100, Some(Some(90)), Some(None)).end, 100);
        // A lookup before the retained start, or past the end, is clamped.
        let r = clamp_range(4, 50, 100, Some(Some(10)), Some(Some(200)));
        assert_eq!((r.start, r.end), (50, 100));
        // An end before the start reads nothing.
        assert!(clamp_range(5, 0, 100, Some(Some(60)), Some(Some(20))).is_empty());
    }
}
