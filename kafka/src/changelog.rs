//! The state changelog of a stateful stage (correlate), as Kafka Streams keeps its state
//! stores: a compacted topic with as many partitions as the stage's input topic, partition `p`
//! holding the state of input partition `p`.
//!
//! The stage loop ([`crate::stage::run_stateful`]) writes each state change to the changelog
//! with the input offset it belongs to in a header ([`crate::stage::TAG_HEADER`]), and stores a
//! message's offset only once its changes are acknowledged. To take over a partition (after a
//! crash, a rebalance, a restart), an instance reads the partition's changelog from the start
//! and keeps, per key, the latest value among the changes tagged before the partition's
//! committed offset ([`Changelog::read`]): exactly the state the previous owner had when it
//! committed, whatever it did after. "Latest" is by tag (the input offset), then by position:
//! a change sent again after a failed acknowledgement can land after a newer one.
//!
//! Where the log ends is not read from the broker's watermarks (Tansu, the test broker,
//! under-counts them): the reader first appends a marker record with a value of its own to the
//! partition, then reads until it meets it. Every change acknowledged before lies before the
//! marker. Markers share one key, so compaction keeps only the last.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chainwatch_config::service::KafkaConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Headers as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;

use crate::StageError;
use crate::client::{Context, Producer};
use crate::stage::{Outgoing, TAG_HEADER, send};

/// The key of the restore markers.
pub const MARKER_KEY: &[u8] = b"chainwatch.restore-marker";

/// How long a read may go without a record before it gives up (and is tried again).
const READ_STALL: Duration = Duration::from_secs(60);

/// The restore reader's `fetch.wait.max.ms` (see [`read_to_marker`]).
const RESTORE_FETCH_WAIT_MAX_MS: &str = "10";

/// How long the restore reader waits for the changelog's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(30);

/// Compaction never touches records younger than this: a change made by a message that was
/// processed but not yet committed stays readable next to the older value it replaces, which
/// is the value a new owner restores.
const MIN_COMPACTION_LAG_MS: &str = "3600000";

/// A stage's state changelog topic.
#[derive(Debug, Clone)]
pub struct Changelog {
    topic: String,
    config: KafkaConfig,
    partitions: i32,
}

/// The context of the changelog's own clients: their librdkafka errors are logged.
fn context() -> Context {
    Context {
        stage: "correlate",
        ..Context::default()
    }
}

fn metadata_partitions(config: &KafkaConfig, topic: &str) -> Result<i32, StageError> {
    let client: BaseConsumer<Context> =
        crate::client::admin_config(config).create_with_context(context())?;
    let md = client.fetch_metadata(Some(topic), Duration::from_secs(30))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| StageError::Setup(format!("topic {topic} is not in the metadata")))?;
    if let Some(e) = t.error() {
        let code = RDKafkaErrorCode::from(e);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            return Ok(0);
        }
        return Err(StageError::Setup(format!("topic {topic}: {code}")));
    }
    Ok(i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
}

async fn partitions_of(config: &KafkaConfig, topic: &str) -> Result<i32, StageError> {
    let (config, topic) = (config.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || metadata_partitions(&config, &topic))
        .await
        .map_err(|e| StageError::Setup(format!("metadata query failed: {e}")))?
}

impl Changelog {
    /// The changelog `topic` of a stage reading `input`: created (compacted, with `input`'s
    /// partition count) when missing, and checked to have a partition for every partition of
    /// `input`. It is chainwatch's internal topic, like Kafka Streams' changelogs: created
    /// whatever `[kafka] create_topics` says (which is about the topics others read or write).
    pub async fn ensure(
        config: &KafkaConfig,
        input: &str,
        topic: &str,
    ) -> Result<Self, StageError> {
        let partitions = partitions_of(config, input).await?;
        if partitions == 0 {
            return Err(StageError::Setup(format!(
                "topic {input} does not exist: create it, or set [kafka] create_topics = true"
            )));
        }
        if partitions_of(config, topic).await? == 0 {
            crate::admin::create(
                config,
                &[topic],
                partitions,
                &[
                    ("cleanup.policy", "compact"),
                    ("min.compaction.lag.ms", MIN_COMPACTION_LAG_MS),
                ],
            )
            .await?;
        }
        let have = partitions_of(config, topic).await?;
        if have == 0 {
            return Err(StageError::Setup(format!(
                "the state changelog {topic} does not exist and could not be created: create it compacted (cleanup.policy=compact) with {partitions} partitions"
            )));
        }
        if have < partitions {
            return Err(StageError::Setup(format!(
                "the state changelog {topic} has {have} partitions, {input} has {partitions}: each partition's state needs its own"
            )));
        }
        Ok(Self {
            topic: topic.to_owned(),
            config: config.clone(),
            partitions,
        })
    }

    /// The changelog's topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Partitions of the input topic (and of the state).
    pub fn partitions(&self) -> i32 {
        self.partitions
    }

    /// The state of input partition `partition` as of input offset `before`: per key, the
    /// latest value among the changes tagged before `before`, oldest first; keys whose latest
    /// such change is a tombstone are left out.
    pub async fn read(
        &self,
        producer: &Producer,
        partition: i32,
        before: i64,
    ) -> Result<Vec<Vec<u8>>, StageError> {
        static NONCE: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let nonce = format!(
            "{}-{nanos}-{}",
            std::process::id(),
            NONCE.fetch_add(1, Ordering::Relaxed)
        )
        .into_bytes();
        let started = Instant::now();
        let marker = Outgoing {
            topic: self.topic.clone(),
            partition: Some(partition),
            key: MARKER_KEY.to_vec(),
            payload: Some(nonce.clone()),
            headers: Vec::new(),
            delivered: None,
        };
        send(producer, &marker)
            .await
            .await
            .map_err(|_| StageError::Setup("restore marker canceled".into()))?
            .map_err(|(e, _)| StageError::Kafka(e))?;
        let (config, topic) = (self.config.clone(), self.topic.clone());
        let read = tokio::task::spawn_blocking(move || {
            read_to_marker(&config, &topic, partition, before, &nonce)
        })
        .await
        .map_err(|e| StageError::Setup(format!("changelog reader failed: {e}")))??;
        tracing::info!(
            topic = %self.topic,
            partition,
            before,
            records = read.records,
            uncommitted = read.uncommitted,
            keys = read.values.len(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "state read from the changelog"
        );
        Ok(read.values)
    }
}

struct Read {
    values: Vec<Vec<u8>>,
    /// Records read (markers aside).
    records: usize,
    /// Changes left out: tagged at or after `before`.
    uncommitted: usize,
}

/// A change held by [`Latest`]: its tag, read position and value (`None`: a tombstone).
type Change = (i64, u64, Option<Vec<u8>>);

/// The latest change of each key among those tagged before an input offset.
struct Latest {
    before: i64,
    /// Per key: its latest change.
    held: HashMap<Vec<u8>, Change>,
    read: u64,
    /// Changes left out: tagged at or after `before`, or without a readable tag.
    uncommitted: usize,
}

impl Latest {
    fn new(before: i64) -> Self {
        Self {
            before,
            held: HashMap::new(),
            read: 0,
            uncommitted: 0,
        }
    }

    /// Takes a change read from the log. The latest change of a key is the one with the
    /// highest tag, not the last one read: a change sent again after a failed acknowledgement
    /// (it may have been written all the same), or a retry a broker does not deduplicate, can
    /// land after a newer one. Equal tags come from one input message (or a tick after it), in
    /// read order.
    fn offer(&mut self, key: &[u8], tag: Option<i64>, value: Option<&[u8]>) {
        // A change without a readable tag cannot be placed: it is not trusted.
        let Some(tag) = tag.filter(|t| *t < self.before) else {
            self.uncommitted += 1;
            return;
        };
        self.read += 1;
        let change = (tag, self.read, value.map(<[u8]>::to_vec));
        match self.held.get_mut(key) {
            Some(held) if held.0 > tag => {}
            Some(held) => *held = change,
            None => {
                self.held.insert(key.to_vec(), change);
            }
        }
    }

    /// The values of the keys whose latest change is not a tombstone, in the order that change
    /// was read.
    fn values(self) -> Vec<Vec<u8>> {
        let mut values: Vec<(u64, Vec<u8>)> = self
            .held
            .into_values()
            .filter_map(|(_, read, v)| Some((read, v?)))
            .collect();
        values.sort_unstable_by_key(|(read, _)| *read);
        values.into_iter().map(|(_, v)| v).collect()
    }
}

fn read_to_marker(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    before: i64,
    nonce: &[u8],
) -> Result<Read, StageError> {
    let mut c = crate::client::admin_config(config);
    c.set(
        "group.id",
        format!("{}-changelog-reader", config.group_prefix),
    )
    .set("enable.auto.commit", "false")
    .set("enable.auto.offset.store", "false");
    // A restore reads batch after batch up to a marker it has just written: on a broker that
    // holds every fetch for its whole wait (Tansu), the wait is paid per batch, so the reader
    // waits less than the stage consumers, whatever `[kafka.options]` sets for those. (On
    // Apache Kafka the wait only paces fetches that find nothing.)
    c.set("fetch.wait.max.ms", RESTORE_FETCH_WAIT_MAX_MS);
    let consumer: BaseConsumer<Context> = c.create_with_context(context())?;
    // The partition's leader first: librdkafka, given a partition whose leader it does not
    // know yet, retries the query for its first offset only after 500 ms, so every restore,
    // even of an empty partition, took 0.6 s, one partition after another.
    consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut latest = Latest::new(before);
    let mut records = 0usize;
    let mut last_progress = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let key = m.key().unwrap_or_default();
                if key == MARKER_KEY {
                    if m.payload() == Some(nonce) {
                        break;
                    }
                    continue;
                }
                records += 1;
                let tag = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == TAG_HEADER))
                    .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse::<i64>().ok());
                latest.offer(key, tag, m.payload());
            }
            Some(Err(e)) => return Err(StageError::Kafka(e)),
            None => {
                if last_progress.elapsed() > READ_STALL {
                    return Err(StageError::Setup(format!(
                        "reading {topic}[{partition}]: no record for {READ_STALL:?} before the restore marker"
                    )));
                }
            }
        }
    }
    let uncommitted = latest.uncommitted;
    Ok(Read {
        values: latest.values(),
        records,
        uncommitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_change_of_a_key_is_the_one_with_the_highest_tag_before_the_offset() {
        let mut l = Latest::new(5);
        l.offer(b"a", Some(0), Some(b"a0"));
        l.offer(b"b", Some(0), Some(b"b0"));
        l.offer(b"a", Some(1), Some(b"a1"));
        // A retried older change, written again after the newer one.
        l.offer(b"a", Some(0), Some(b"a0"));
        // Tombstoned, then written again by a later message.
        l.offer(b"c", Some(1), Some(b"c1"));
        l.offer(b"c", Some(2), None);
        l.offer(b"d", Some(2), Some(b"d2"));
        l.offer(b"d", Some(3), None);
        l.offer(b"d", Some(4), Some(b"d4"));
        // Not committed (at or after the offset), or not placeable.
        l.offer(b"a", Some(5), Some(b"a5"));
        l.offer(b"b", None, Some(b"b?"));
        assert_eq!(l.uncommitted, 2);
        let values = l.values();
        assert_eq!(values, [b"b0".to_vec(), b"a1".to_vec(), b"d4".to_vec()]);
    }

    #[test]
    fn equal_tags_keep_the_change_read_last() {
        let mut l = Latest::new(10);
        l.offer(b"a", Some(3), Some(b"message 3"));
        l.offer(b"a", Some(3), Some(b"tick after 3"));
        assert_eq!(l.values(), [b"tick after 3".to_vec()]);
    }
}
