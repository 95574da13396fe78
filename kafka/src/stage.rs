//! The stage loops: consume, run a pure core, produce or deliver, then store the offset.
//!
//! Offsets advance only after a message's effect is durable: every record produced for it is
//! acknowledged by the brokers (idempotent producer, `acks=all`), or its delivery returned `Ok`.
//! Records that fail to produce are sent again, never dropped, so at worst a message is
//! processed twice after a crash (at-least-once); ids are deterministic downstream.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::StageError;
use crate::client::{Consumer, Producer};

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// Key (decides the partition).
    pub key: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers.
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// A consumed message, as a stage core sees it.
#[derive(Clone, Copy)]
pub struct InMessage<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its payload (`None` for a tombstone).
    pub payload: Option<&'a [u8]>,
    /// Its Kafka timestamp (create or log-append time), milliseconds since the Unix epoch.
    pub timestamp: Option<i64>,
    /// Its headers.
    pub headers: InHeaders<'a>,
}

impl std::fmt::Debug for InMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMessage")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key", &self.key)
            .field("payload_len", &self.payload.map(<[u8]>::len))
            .field("headers", &self.headers)
            .finish()
    }
}

impl<'a> InMessage<'a> {
    fn of(m: &'a BorrowedMessage<'a>) -> Self {
        Self {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            timestamp: m.timestamp().to_millis(),
            headers: InHeaders(m.headers()),
        }
    }

    /// The value of the first header named `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// The headers of a consumed message (none by default).
#[derive(Clone, Copy, Default)]
pub struct InHeaders<'a>(Option<&'a BorrowedHeaders>);

impl<'a> InHeaders<'a> {
    /// Headers borrowed from a message (or from `OwnedHeaders::as_borrowed`, in tests).
    pub fn of(headers: &'a BorrowedHeaders) -> Self {
        Self(Some(headers))
    }

    /// The value of the first header called `key`.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        let headers = self.0?;
        headers.iter().find(|h| h.key == key).and_then(|h| h.value)
    }
}

impl std::fmt::Debug for InHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self
            .0
            .map_or_else(Vec::new, |h| h.iter().map(|h| h.key).collect());
        f.debug_tuple("InHeaders").field(&keys).finish()
    }
}

/// One tracing span per partition a loop consumes, so every line logged while handling a
/// message names its topic and partition. Cached: a loop sees few partitions, many messages.
#[derive(Default)]
struct PartitionSpans(HashMap<String, HashMap<i32, tracing::Span>>);

impl PartitionSpans {
    fn get(&mut self, topic: &str, partition: i32) -> tracing::Span {
        if let Some(span) = self.0.get(topic).and_then(|t| t.get(&partition)) {
            return span.clone();
        }
        let span = tracing::info_span!("partition", topic, partition);
        self.0
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, span.clone());
        span
    }
}

/// A stage core that turns each consumed message into records to produce.
pub trait Transform {
    /// Handles one message. Pure as far as the loop cares: it may keep state, but the records
    /// it returns are the message's whole effect.
    fn process(&mut self, message: &InMessage<'_>) -> Vec<OutRecord>;
}

/// What a delivery core did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Delivered (or deliberately skipped): the offset may be stored.
    Done,
    /// Not deliverable: these records (a dead letter) are produced, and the offset is stored
    /// once they are acknowledged.
    Produce(Vec<OutRecord>),
}

/// A stage core that delivers each consumed message somewhere (a sink).
pub trait Deliver {
    /// Delivers one message; returns when the effect is durable or the message is to be
    /// dead-lettered. Retries are its own business: an error stops the stage without storing
    /// the offset. The future may be dropped at shutdown (the message is then delivered again
    /// after restart, so a destination sees it at least once).
    fn deliver(
        &mut self,
        message: &InMessage<'_>,
    ) -> impl Future<Output = Result<Delivery, StageError>>;
}

/// Loop tuning.
#[derive(Debug, Clone, Copy)]
pub struct LoopConfig {
    /// Messages whose records may be in flight at once; beyond this, the loop waits
    /// (backpressure: memory stays bounded whatever the broker's speed).
    pub max_in_flight: usize,
    /// How long shutdown waits for in-flight records.
    pub drain_timeout: Duration,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 10_000,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// One consumed message waiting for its records' acknowledgements.
struct Pending {
    topic: String,
    partition: i32,
    offset: i64,
    records: Vec<OutRecord>,
    inflight: Vec<Option<DeliveryFuture>>,
    /// Records acknowledged so far (a prefix: they are settled in order). `settle` may be
    /// cancelled between two records (the loop's `select!` takes a new message) and started
    /// again: it must not send the acknowledged ones a second time.
    acked: usize,
}

async fn send(producer: &Producer, r: &OutRecord) -> DeliveryFuture {
    let mut backoff = Duration::from_millis(5);
    loop {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        let record = FutureRecord::to(&r.topic)
            .key(&r.key)
            .payload(&r.payload)
            .headers(headers);
        match producer.send_result(record) {
            Ok(f) => return f,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {}
            Err((e, _)) => {
                tracing::warn!(topic = %r.topic, error = %e, "cannot enqueue record; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Waits until every record of `p` is acknowledged, sending failed ones again.
async fn settle(producer: &Producer, p: &mut Pending) {
    for i in p.acked..p.records.len() {
        let mut attempt = 0u32;
        loop {
            let fut = match p.inflight[i].as_mut() {
                Some(f) => f,
                None => {
                    let f = send(producer, &p.records[i]).await;
                    p.inflight[i].insert(f)
                }
            };
            let result = fut.await;
            p.inflight[i] = None;
            match result {
                Ok(Ok(_)) => {
                    p.acked = i + 1;
                    break;
                }
                Ok(Err((e, _))) => {
                    attempt += 1;
                    tracing::warn!(topic = %p.records[i].topic, error = %e, attempt, "record not acknowledged; sending it again");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(50))))
                        .await;
                }
                Err(_canceled) => {}
            }
        }
    }
}

fn store(consumer: &Consumer, p: &Pending) {
    if let Err(e) = mark_done(consumer, &p.topic, p.partition, p.offset) {
        // The partition was revoked meanwhile: its new owner starts from the committed offset.
        tracing::debug!(topic = %p.topic, partition = p.partition, error = %e, "offset not stored");
    }
}

/// Runs a transform stage until `shutdown` turns true.
pub async fn run_transform<T: Transform>(
    consumer: &Consumer,
    producer: &Producer,
    core: &mut T,
    mut shutdown: watch::Receiver<bool>,
    config: LoopConfig,
) -> Result<(), StageError> {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut spans = PartitionSpans::default();
    loop {
        if *shutdown.borrow() {
            break;
        }
        if pending.len() >= config.max_in_flight {
            if let Some(mut front) = pending.pop_front() {
                settle(producer, &mut front).await;
                store(consumer, &front);
            }
            continue;
        }
        let front = pending.front_mut();
        let has_front = front.is_some();
        let settle_front = async {
            match front {
                Some(f) => settle(producer, f).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            () = settle_front, if has_front => {
                if let Some(done) = pending.pop_front() {
                    store(consumer, &done);
                }
            }
            received = consumer.recv() => match received {
                Ok(m) => {
                    let msg = InMessage::of(&m);
                    // The core is synchronous: entering the span here holds it across no await.
                    let records = spans.get(msg.topic, msg.partition).in_scope(|| core.process(&msg));
                    let mut inflight = Vec::with_capacity(records.len());
                    for r in &records {
                        inflight.push(Some(send(producer, r).await));
                    }
                    pending.push_back(Pending {
                        topic: msg.topic.to_owned(),
                        partition: msg.partition,
                        offset: msg.offset,
                        records,
                        inflight,
                        acked: 0,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    drain(consumer, producer, pending, config.drain_timeout).await;
    Ok(())
}

async fn drain(
    consumer: &Consumer,
    producer: &Producer,
    mut pending: VecDeque<Pending>,
    timeout: Duration,
) {
    let work = async {
        while let Some(mut p) = pending.pop_front() {
            settle(producer, &mut p).await;
            store(consumer, &p);
        }
    };
    if tokio::time::timeout(timeout, work).await.is_err() {
        tracing::warn!(
            "shutdown: in-flight records not acknowledged in time; they will be processed again"
        );
    }
    commit(consumer);
}

/// Marks the message at `offset` done: the group's next commit records `offset + 1`, where it
/// resumes. (`rd_kafka_offsets_store` takes the next offset, as written here; the older
/// `store_offset` adds one itself, an easy way to skip a message on restart.)
fn mark_done(consumer: &Consumer, topic: &str, partition: i32, offset: i64) -> KafkaResult<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset + 1))?;
    consumer.store_offsets(&tpl)
}

fn commit(consumer: &Consumer) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
    }
}

/// Runs a delivery stage (a sink) until `shutdown` turns true: each message is delivered (or
/// its dead letter produced and acknowledged), then its offset stored. One message at a time,
/// in order. At shutdown the delivery in progress is abandoned (a webhook may be retrying for
/// hours); its offset is not stored, so it is delivered again after restart.
pub async fn run_delivery<D: Deliver>(
    consumer: &Consumer,
    producer: &Producer,
    core: &mut D,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StageError> {
    use tracing::Instrument as _;
    let mut spans = PartitionSpans::default();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let m = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            received = consumer.recv() => match received {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        };
        let msg = InMessage::of(&m);
        let span = spans.get(msg.topic, msg.partition);
        let work = async {
            if let Delivery::Produce(records) = core.deliver(&msg).instrument(span).await? {
                let inflight = records.iter().map(|_| None).collect();
                let mut p = Pending {
                    topic: msg.topic.to_owned(),
                    partition: msg.partition,
                    offset: msg.offset,
                    records,
                    inflight,
                    acked: 0,
                };
                settle(producer, &mut p).await;
            }
            Ok::<(), StageError>(())
        };
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            done = work => {
                done?;
                if let Err(e) = mark_done(consumer, msg.topic, msg.partition, msg.offset) {
                    tracing::debug!(error = %e, "offset not stored");
                }
            }
        }
    }
    commit(consumer);
    Ok(())
}

/// Polls until `future` is ready or `shutdown` turns true; `None` on shutdown.
pub async fn until_shutdown<F: Future>(
    future: F,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<F::Output> {
    if *shutdown.borrow() {
        return None;
    }
    tokio::select! {
        out = future.fuse() => Some(out),
        _ = shutdown.changed() => None,
    }
}
