//! The stage loops: consume, run a pure core, produce or deliver, then store the offset.
//!
//! Offsets advance only after a message's effect is durable: every record produced for it is
//! acknowledged by the brokers (idempotent producer, `acks=all`), or its delivery returned `Ok`.
//! Records that fail to produce are sent again, never dropped, so at worst a message is
//! processed twice after a crash (at-least-once); ids are deterministic downstream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
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
use tracing::Instrument as _;

use crate::StageError;
use crate::client::{Consumer, Producer};
use crate::handoff::{Arrivals, Handed, Handoff, HandoffCounters, Inbox};

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
            headers: InHeaders(Source::Message(m)),
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
///
/// A consumed message's headers are parsed only when a core asks for one: librdkafka parses
/// them on request (and keeps the result), and most stages never read them (ingest reads raw
/// records, whose headers are not chainwatch's). Parsing every message's headers cost 4% of the
/// pipeline's CPU.
#[derive(Clone, Copy, Default)]
pub struct InHeaders<'a>(Source<'a>);

#[derive(Clone, Copy, Default)]
enum Source<'a> {
    #[default]
    None,
    /// Parsed headers.
    Parsed(&'a BorrowedHeaders),
    /// A consumed message's headers, not parsed yet.
    Message(&'a BorrowedMessage<'a>),
    /// The headers of a record handed over in the process ([`crate::handoff`]).
    Owned(&'a [(&'static str, Vec<u8>)]),
}

impl<'a> InHeaders<'a> {
    /// Headers borrowed from a message (or from `OwnedHeaders::as_borrowed`, in tests).
    pub fn of(headers: &'a BorrowedHeaders) -> Self {
        Self(Source::Parsed(headers))
    }

    /// The headers of a record produced in this process.
    pub(crate) fn owned(headers: &'a [(&'static str, Vec<u8>)]) -> Self {
        Self(Source::Owned(headers))
    }

    fn headers(&self) -> Option<&'a BorrowedHeaders> {
        match self.0 {
            Source::None | Source::Owned(_) => None,
            Source::Parsed(h) => Some(h),
            Source::Message(m) => m.headers(),
        }
    }

    /// The value of the first header called `key`.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        if let Source::Owned(headers) = self.0 {
            return headers
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_slice());
        }
        let headers = self.headers()?;
        headers.iter().find(|h| h.key == key).and_then(|h| h.value)
    }
}

impl std::fmt::Debug for InHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = match self.0 {
            Source::Owned(headers) => headers.iter().map(|(k, _)| *k).collect(),
            _ => self
                .headers()
                .map_or_else(Vec::new, |h| h.iter().map(|h| h.key).collect()),
        };
        f.debug_tuple("InHeaders").field(&keys).finish()
    }
}

/// One tracing span per partition a loop consumes, so every line logged while handling a
/// message names its topic and partition. Cached: a loop sees few partitions, many messages.
#[derive(Default)]
struct PartitionSpans(HashMap<String, HashMap<i32, tracing::Span>>);

impl PartitionSpans {
    /// The partition's span, borrowed: cloning a span costs a reference count in the
    /// subscriber's registry, per message.
    fn get(&mut self, topic: &str, partition: i32) -> &tracing::Span {
        // The topic is copied into the map only the first time it is seen.
        if !self.0.contains_key(topic) {
            self.0.insert(topic.to_owned(), HashMap::new());
        }
        let by_partition = self.0.get_mut(topic).expect("inserted above");
        by_partition
            .entry(partition)
            .or_insert_with(|| tracing::info_span!("partition", topic, partition))
    }
}

/// A change of a stateful core's state, for its changelog ([`crate::changelog`]): the latest
/// value of `key` in the state of input partition `partition` (`None`: the key is gone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    /// The input partition whose state changed; the record goes to the same partition of the
    /// changelog topic.
    pub partition: i32,
    /// The key in that partition's state.
    pub key: Vec<u8>,
    /// Its value now; `None` writes a tombstone.
    pub value: Option<Vec<u8>>,
    /// The input offset the change belongs to: the change is part of the partition's state
    /// once the group's committed offset is past it (the offset of the message processed, or
    /// for a change made between messages, the next offset).
    pub tag: i64,
}

/// A stage core that turns each consumed message into records to produce.
///
/// A stateful core (correlate) also keeps per-partition state that must survive a crash or a
/// rebalance: it names a changelog, hands over its changes after each call
/// ([`Transform::take_state`]), and is given back a partition's state before the partition's
/// first message ([`Transform::restore`]). The loop makes the changes durable before it stores
/// the offset of the message that made them (see [`run_stateful`]).
pub trait Transform {
    /// Handles one message. Pure as far as the loop cares: it may keep state, but the records
    /// it returns are the message's whole effect.
    fn process(&mut self, message: &InMessage<'_>) -> Vec<OutRecord>;

    /// Called every [`LoopConfig::tick`], whether messages arrive or not: records to produce
    /// for the passing of time (findings whose deadline an idle input has passed).
    fn tick(&mut self) -> Vec<OutRecord> {
        Vec::new()
    }

    /// The state changes since the last call, after [`Transform::process`] or
    /// [`Transform::tick`]. Only stateful cores have any.
    fn take_state(&mut self) -> Vec<StateRecord> {
        Vec::new()
    }

    /// Input partition `partition` is this instance's from offset `from`: its state is
    /// `values`, the latest value of each key (oldest first) among the changes tagged before
    /// `from`. Replaces whatever the core held for the partition.
    fn restore(&mut self, partition: i32, from: i64, values: Vec<Vec<u8>>) {
        let _ = (partition, from, values);
    }

    /// Input partition `partition` was revoked: the core forgets its state.
    fn revoke(&mut self, partition: i32) {
        let _ = partition;
    }
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
    /// How long shutdown waits for in-flight records (a sink: for the delivery in progress).
    pub drain_timeout: Duration,
    /// How often [`Transform::tick`] is called.
    pub tick: Duration,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 10_000,
            drain_timeout: Duration::from_secs(10),
            tick: Duration::from_secs(1),
        }
    }
}

/// A record on its way out: a core's record, or a state change for the changelog.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) topic: String,
    /// An explicit partition (state changes); `None`: by key.
    pub(crate) partition: Option<i32>,
    pub(crate) key: Vec<u8>,
    /// `None`: a tombstone.
    pub(crate) payload: Option<Vec<u8>>,
    pub(crate) headers: Vec<(&'static str, Vec<u8>)>,
    /// Where the brokers put it (partition, offset, timestamp), once acknowledged.
    pub(crate) delivered: Option<(i32, i64, Option<i64>)>,
}

impl From<OutRecord> for Outgoing {
    fn from(r: OutRecord) -> Self {
        Self {
            topic: r.topic,
            partition: None,
            key: r.key,
            payload: Some(r.payload),
            headers: r.headers,
            delivered: None,
        }
    }
}

/// The header of a changelog record holding its [`StateRecord::tag`] (decimal).
pub const TAG_HEADER: &str = "chainwatch.offset";

impl Outgoing {
    pub(crate) fn state(topic: &str, r: StateRecord) -> Self {
        Self {
            topic: topic.to_owned(),
            partition: Some(r.partition),
            key: r.key,
            payload: r.value,
            headers: vec![(TAG_HEADER, r.tag.to_string().into_bytes())],
            delivered: None,
        }
    }
}

/// The names of the topics a loop consumes, each held once and shared by the [`Pending`]
/// entries of its messages, so no string is copied per message.
#[derive(Default)]
struct TopicNames {
    all: HashSet<Arc<str>>,
}

impl TopicNames {
    fn get(&mut self, topic: &str) -> Arc<str> {
        if let Some(name) = self.all.get(topic) {
            return Arc::clone(name);
        }
        let name: Arc<str> = Arc::from(topic);
        self.all.insert(Arc::clone(&name));
        name
    }
}

/// One consumed message (or one tick) waiting for its records' acknowledgements.
struct Pending {
    /// The message whose offset is stored once everything is acknowledged; `None` for a tick.
    /// Its topic is shared ([`TopicNames`]): no string is copied per message.
    offset: Option<(Arc<str>, i32, i64)>,
    records: Vec<Outgoing>,
    inflight: Vec<Option<DeliveryFuture>>,
    /// How many records, from the first, are acknowledged. [`settle`] is cancelled whenever
    /// the loop has something else to do and resumed later: it must not send those again.
    acked: usize,
}

pub(crate) async fn send(producer: &Producer, r: &Outgoing) -> DeliveryFuture {
    let mut backoff = Duration::from_millis(5);
    loop {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_slice()),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic)
            .key(r.key.as_slice())
            .headers(headers);
        if let Some(p) = &r.payload {
            record = record.payload(p.as_slice());
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
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
    while p.acked < p.records.len() {
        let i = p.acked;
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
                Ok(Ok(d)) => {
                    p.records[i].delivered = Some((d.partition, d.offset, d.timestamp.to_millis()));
                    p.acked += 1;
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
    let Some((topic, partition, offset)) = &p.offset else {
        return;
    };
    if let Err(e) = mark_done(consumer, topic, *partition, *offset) {
        // The partition was revoked meanwhile: its new owner starts from the committed offset.
        tracing::debug!(%topic, partition, error = %e, "offset not stored");
    }
}

/// Runs a transform stage until `shutdown` turns true. With a `handoff`, the records it
/// produces to the handoff's topic are handed, once acknowledged, to the stage of this process
/// consuming that topic ([`crate::handoff`]).
pub async fn run_transform<T: Transform>(
    consumer: &Consumer,
    producer: &Producer,
    core: &mut T,
    shutdown: watch::Receiver<bool>,
    config: LoopConfig,
    handoff: Option<&Handoff>,
) -> Result<(), StageError> {
    let links = Links {
        handoff,
        ..Links::default()
    };
    run_loop(consumer, producer, core, shutdown, config, links).await
}

/// Runs a stateful transform stage (correlate) until `shutdown` turns true.
///
/// Like [`run_transform`], and: the state changes of a message ([`Transform::take_state`]) go
/// to the same partition of `changelog` as the message's, with its offset as their tag, and the
/// message's offset is stored only once they are acknowledged too. Before the first message of
/// a partition newly assigned to this instance, the partition's state is read back from the
/// changelog ([`crate::changelog::Changelog::read`]): the latest value of each key among the
/// changes tagged before the message's offset, so changes of messages processed but not
/// committed before a crash are left out, and made again when those messages are processed
/// again. A revoked partition's state is dropped ([`Transform::revoke`]) before the next tick
/// or message.
///
/// With an `inbox`, it also takes the records a stage of this process hands over from the
/// topic it consumes ([`crate::handoff`]): each record is processed once, from the handoff or
/// from the consumer, whichever brings it first as the partition's next offset.
pub async fn run_stateful<T: Transform>(
    consumer: &Consumer,
    producer: &Producer,
    core: &mut T,
    shutdown: watch::Receiver<bool>,
    config: LoopConfig,
    changelog: &crate::changelog::Changelog,
    inbox: Option<Inbox>,
) -> Result<(), StageError> {
    let links = Links {
        changelog: Some(changelog),
        handoff: None,
        inbox,
    };
    run_loop(consumer, producer, core, shutdown, config, links).await
}

/// What a loop is connected to besides its consumer and producer.
#[derive(Default)]
struct Links<'a> {
    /// A stateful loop's changelog.
    changelog: Option<&'a crate::changelog::Changelog>,
    /// Where the loop hands its acknowledged records.
    handoff: Option<&'a Handoff>,
    /// Where a stateful loop takes handed records from.
    inbox: Option<Inbox>,
}

/// What a stateful loop restores state with: its changelog, its consumer (the assignment and
/// where each partition starts) and its producer (the restore markers).
#[derive(Clone, Copy)]
struct Io<'a> {
    changelog: &'a crate::changelog::Changelog,
    consumer: &'a Consumer,
    producer: &'a Producer,
}

/// The input partitions whose state the core holds: per partition, the offset it was restored
/// as of, and whether that offset is confirmed, that is, was the partition's first message
/// here.
#[derive(Default)]
struct Held(HashMap<i32, (i64, bool)>);

impl Held {
    /// Whether the core may process the message of `partition` at `offset` with the state it
    /// holds: held since the partition's first message here, or restored as of exactly this
    /// offset ahead of it (which this first message now confirms). `false`: the partition
    /// must be read back as of `offset`.
    fn ready_for(&mut self, partition: i32, offset: i64) -> bool {
        match self.0.get_mut(&partition) {
            Some((_, true)) => true,
            Some((from, confirmed)) if *from == offset => {
                *confirmed = true;
                true
            }
            _ => false,
        }
    }
}

/// Restores the partitions of the topic being consumed that are assigned here and not held,
/// read from the changelog together: a takeover of many partitions waits about one restore,
/// not one per partition. `first` (the partition of the message about to be processed, and its
/// offset) is restored as of that offset. The others are restored as of where their first
/// messages will come from ([`start_offsets`]); that offset is checked when the first message
/// does come ([`ensure_state`]), and the partition read again if it differs (a reset after an
/// offset out of range, a commit by a previous owner after the query). A partition the
/// brokers do not answer for is left for its first message. `None` when shutdown came first.
async fn restore_assigned<T: Transform>(
    io: Io<'_>,
    core: &mut T,
    held: &mut Held,
    topic: &str,
    first: (i32, i64),
    shutdown: &mut watch::Receiver<bool>,
) -> Option<()> {
    let mut batch = vec![first];
    let others: Vec<i32> = io
        .consumer
        .assignment()
        .map(|a| {
            a.elements_for_topic(topic)
                .iter()
                .map(|e| e.partition())
                .filter(|p| *p != first.0 && !held.0.contains_key(p))
                .collect()
        })
        .unwrap_or_default();
    if !others.is_empty() {
        // Broker queries, once per takeover: on a multi-threaded runtime, the other stages
        // run on while this thread waits.
        let query = || start_offsets(io.consumer, topic, &others);
        batch.extend(match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(query),
            _ => query(),
        });
    }
    let reads = batch.iter().map(|&(p, before)| {
        let mut shutdown = shutdown.clone();
        async move {
            let mut attempt = 0u32;
            loop {
                let read = io.changelog.read(io.producer, p, before);
                match until_shutdown(read, &mut shutdown).await? {
                    Ok(values) => return Some(values),
                    // Only the partition whose message waits must be read now; another one
                    // that fails is read when its first message comes.
                    Err(e) if p != first.0 => {
                        tracing::warn!(partition = p, error = %e, "cannot read the state changelog; reading it when its first message comes");
                        return None;
                    }
                    Err(e) => {
                        attempt += 1;
                        tracing::warn!(partition = p, error = %e, attempt, "cannot read the state changelog; trying again");
                        let wait = Duration::from_millis(500 * u64::from(attempt.min(20)));
                        until_shutdown(tokio::time::sleep(wait), &mut shutdown).await?;
                    }
                }
            }
        }
    });
    let read = futures::future::join_all(reads).await;
    if *shutdown.borrow() {
        return None;
    }
    let mut restored_first = false;
    for (&(p, before), values) in batch.iter().zip(read) {
        let Some(values) = values else { continue };
        core.restore(p, before, values);
        held.0.insert(p, (before, p == first.0));
        restored_first |= p == first.0;
    }
    restored_first.then_some(())
}

/// Where the first messages of `partitions` of `topic` will come from: the group's committed
/// offset, or without one the partition's first offset (chainwatch's consumers reset to the
/// earliest). Partitions the brokers do not answer for are left out.
fn start_offsets(consumer: &Consumer, topic: &str, partitions: &[i32]) -> Vec<(i32, i64)> {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    let Ok(committed) = consumer.committed_offsets(tpl, TIMEOUT) else {
        return Vec::new();
    };
    committed
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => consumer
                .fetch_watermarks(topic, e.partition(), TIMEOUT)
                .ok()
                .map(|(low, _)| (e.partition(), low)),
        })
        .collect()
}

/// Partitions a rebalance took away: the core forgets their state (another instance owns it
/// now; if they come back, their state is read again, since it may have moved on), and the
/// loop where they were.
fn forget_revoked<T: Transform>(
    consumer: &Consumer,
    core: &mut T,
    held: &mut Held,
    receiving: Option<&mut Receiving>,
) {
    let revoked = consumer.context().revoked.take();
    if let Some(r) = receiving {
        for (_, p) in &revoked {
            r.arrivals.forget(*p);
        }
    }
    for (_, p) in revoked {
        if held.0.remove(&p).is_some() {
            core.revoke(p);
        }
    }
}

/// Makes sure the core holds the state of `partition` as of `offset` (the message about to
/// be processed): read back from the changelog unless this instance has held it since the
/// partition was assigned, or restored it as of exactly this offset ahead of its first
/// message. `None` when shutdown came first. A restore runs in the partition's `span`; the
/// usual message, whose state is held, does not touch it.
async fn ensure_state<T: Transform>(
    io: Io<'_>,
    core: &mut T,
    held: &mut Held,
    topic: &str,
    (partition, offset): (i32, i64),
    span: &tracing::Span,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<()> {
    if held.ready_for(partition, offset) {
        return Some(());
    }
    restore_assigned(io, core, held, topic, (partition, offset), shutdown)
        .instrument(span.clone())
        .await
}

async fn run_loop<T: Transform>(
    consumer: &Consumer,
    producer: &Producer,
    core: &mut T,
    mut shutdown: watch::Receiver<bool>,
    config: LoopConfig,
    links: Links<'_>,
) -> Result<(), StageError> {
    let Links {
        changelog,
        handoff,
        mut inbox,
    } = links;
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut spans = PartitionSpans::default();
    let mut topics = TopicNames::default();
    let mut held = Held::default();
    // With an inbox: where each partition is, whichever path brought its records. Kept after
    // the inbox closes, so that records taken from it are not processed again.
    let mut receiving = inbox.as_ref().map(Receiving::of);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + config.tick, config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state_topic = changelog.map(|c| c.topic().to_owned());
    let outgoing = |records: Vec<OutRecord>, state: Vec<StateRecord>| -> Vec<Outgoing> {
        let mut out: Vec<Outgoing> = records.into_iter().map(Outgoing::from).collect();
        if let Some(topic) = &state_topic {
            out.extend(state.into_iter().map(|s| Outgoing::state(topic, s)));
        }
        out
    };
    // A message whose effect is acknowledged: its offset is stored, and its records handed on.
    let finish = |done: Pending| {
        store(consumer, &done);
        if let Some(handoff) = handoff {
            handoff.hand(done.records);
        }
    };
    loop {
        if *shutdown.borrow() {
            break;
        }
        if pending.len() >= config.max_in_flight {
            if let Some(mut front) = pending.pop_front() {
                settle(producer, &mut front).await;
                finish(front);
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
                    finish(done);
                }
            }
            _ = tick.tick() => {
                if changelog.is_some() {
                    forget_revoked(consumer, core, &mut held, receiving.as_mut());
                }
                let records = core.tick();
                let state = core.take_state();
                if !records.is_empty() || !state.is_empty() {
                    let records = outgoing(records, state);
                    let mut inflight = Vec::with_capacity(records.len());
                    for r in &records {
                        inflight.push(Some(send(producer, r).await));
                    }
                    pending.push_back(Pending { offset: None, records, inflight, acked: 0 });
                }
            }
            received = consumer.recv() => match received {
                Ok(m) => {
                    let msg = InMessage::of(&m);
                    if let Some(changelog) = changelog {
                        forget_revoked(consumer, core, &mut held, receiving.as_mut());
                        if let Some(r) = &receiving
                            && r.arrivals.done(msg.partition, msg.offset)
                        {
                            r.counters.skipped.inc();
                            tokio::task::coop::consume_budget().await;
                            continue;
                        }
                        let span = spans.get(msg.topic, msg.partition);
                        let io = Io { changelog, consumer, producer };
                        let ready = ensure_state(io, core, &mut held, msg.topic, (msg.partition, msg.offset), span, &mut shutdown).await;
                        if ready.is_none() {
                            break;
                        }
                    }
                    let span = spans.get(msg.topic, msg.partition);
                    let done = process(core, producer, span, &msg, &outgoing, topics.get(msg.topic)).await;
                    pending.push_back(done);
                    if let Some(r) = receiving.as_mut() {
                        // The handed records waiting for this one are taken now.
                        r.arrivals.advance(msg.partition, msg.offset);
                        take_handed(core, producer, &mut spans, &outgoing, r, &mut pending, msg.partition).await;
                    }
                    // librdkafka's queues are not tokio's: with messages always ready, nothing
                    // above yields, and a stage on a backlog kept its worker thread for seconds
                    // (`/metrics` and `/healthz` answered after more than a second during a
                    // drain). Each message spends from the task's budget, which yields when
                    // it is used up.
                    tokio::task::coop::consume_budget().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            // After the consumer: on a backlog the consumer always has a record ready, and a
            // handoff polled first kept it waiting while every handed record was ahead of it
            // (the drain took a fifth longer); the handoff then stays full and its sender
            // drops what it would hand. Below capacity the consumer waits on its fetches, and
            // handed records are taken as they come.
            handed = next_handed(&mut inbox) => {
                let (Some(h), Some(r)) = (handed, receiving.as_mut()) else {
                    // Every sender is gone (the producing stage stopped): the consumer alone.
                    inbox = None;
                    continue;
                };
                if changelog.is_some() {
                    forget_revoked(consumer, core, &mut held, Some(&mut *r));
                }
                let partition = h.partition();
                if r.arrivals.offer(h) {
                    take_handed(core, producer, &mut spans, &outgoing, r, &mut pending, partition).await;
                } else {
                    r.counters.passed.inc();
                }
                tokio::task::coop::consume_budget().await;
            }
        }
    }
    drain(consumer, producer, pending, config.drain_timeout).await;
    Ok(())
}

/// A loop's side of a handoff: the topic handed records come from, where each partition is,
/// and the counters.
struct Receiving {
    topic: Arc<str>,
    arrivals: Arrivals,
    counters: HandoffCounters,
}

impl Receiving {
    fn of(inbox: &Inbox) -> Self {
        Self {
            topic: Arc::clone(inbox.topic()),
            arrivals: Arrivals::new(crate::handoff::WAITING),
            counters: inbox.counters.clone(),
        }
    }
}

/// Processes the handed records of `partition` that are, one after the other, its next
/// records (the partition's state is held: its place is known only from a record processed
/// here since it was assigned).
async fn take_handed<T: Transform>(
    core: &mut T,
    producer: &Producer,
    spans: &mut PartitionSpans,
    outgoing: &impl Fn(Vec<OutRecord>, Vec<StateRecord>) -> Vec<Outgoing>,
    r: &mut Receiving,
    pending: &mut VecDeque<Pending>,
    partition: i32,
) {
    while let Some(h) = r.arrivals.ready(partition, &r.counters.stale) {
        let msg = h.message(&r.topic);
        let span = spans.get(msg.topic, partition);
        let done = process(core, producer, span, &msg, outgoing, Arc::clone(&r.topic)).await;
        r.arrivals.advance(partition, h.offset());
        r.counters.taken.inc();
        pending.push_back(done);
    }
}

/// The next record handed to the loop; never, without an inbox.
async fn next_handed(inbox: &mut Option<Inbox>) -> Option<Handed> {
    match inbox {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// Runs the core on one message in its partition's `span`, and sends the records of its
/// effect: the message's entry in the queue of those waiting for acknowledgements. Its topic
/// is `topic`, the message's, shared ([`TopicNames`]).
async fn process<T: Transform>(
    core: &mut T,
    producer: &Producer,
    span: &tracing::Span,
    msg: &InMessage<'_>,
    outgoing: &impl Fn(Vec<OutRecord>, Vec<StateRecord>) -> Vec<Outgoing>,
    topic: Arc<str>,
) -> Pending {
    // The core is synchronous: entering the span here holds it across no await.
    let (records, state) = span.in_scope(|| {
        let records = core.process(msg);
        (records, core.take_state())
    });
    let records = outgoing(records, state);
    let mut inflight = Vec::with_capacity(records.len());
    for r in &records {
        inflight.push(Some(send(producer, r).await));
    }
    Pending {
        offset: Some((topic, msg.partition, msg.offset)),
        records,
        inflight,
        acked: 0,
    }
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
/// in order. At shutdown the delivery in progress gets up to [`LoopConfig::drain_timeout`] to
/// finish (a destination that answers is delivered to); one still retrying then is abandoned
/// (a webhook may be retrying for hours), its offset not stored, so it is delivered again
/// after restart.
pub async fn run_delivery<D: Deliver>(
    consumer: &Consumer,
    producer: &Producer,
    core: &mut D,
    mut shutdown: watch::Receiver<bool>,
    config: LoopConfig,
) -> Result<(), StageError> {
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
        let span = spans.get(msg.topic, msg.partition).clone();
        let work = async {
            if let Delivery::Produce(records) = core.deliver(&msg).instrument(span).await? {
                let records: Vec<Outgoing> = records.into_iter().map(Outgoing::from).collect();
                let inflight = records.iter().map(|_| None).collect();
                let mut p = Pending {
                    offset: None,
                    records,
                    inflight,
                    acked: 0,
                };
                settle(producer, &mut p).await;
            }
            Ok::<(), StageError>(())
        };
        tokio::pin!(work);
        let done = tokio::select! {
            biased;
            done = &mut work => Some(done),
            _ = shutdown.changed() => None,
        };
        let done = match done {
            Some(done) => Some(done),
            None => match tokio::time::timeout(config.drain_timeout, &mut work).await {
                Ok(done) => Some(done),
                Err(_) => {
                    tracing::warn!(
                        topic = msg.topic,
                        partition = msg.partition,
                        offset = msg.offset,
                        "shutdown: the delivery in progress did not finish in time; it is delivered again after restart"
                    );
                    None
                }
            },
        };
        if let Some(done) = done {
            done?;
            if let Err(e) = mark_done(consumer, msg.topic, msg.partition, msg.offset) {
                tracing::debug!(error = %e, "offset not stored");
            }
        }
        // As in the transform loop: a file sink's writes do not yield either.
        tokio::task::coop::consume_budget().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_restored_ahead_is_used_only_from_the_offset_it_was_restored_as_of() {
        let mut held = Held::default();
        // Never restored: read back.
        assert!(!held.ready_for(0, 5));
        // Restored with its first message (confirmed): any later message goes on.
        held.0.insert(0, (5, true));
        assert!(held.ready_for(0, 5));
        assert!(held.ready_for(0, 9));
        // Restored ahead as of 7, where its first message was to come from.
        held.0.insert(1, (7, false));
        // The first message comes from elsewhere (an offset reset, a later commit): read back.
        assert!(!held.ready_for(1, 3));
        assert!(!held.ready_for(1, 8));
        assert_eq!(held.0[&1], (7, false));
        // It comes from 7: the state is used, and later messages go on.
        assert!(held.ready_for(1, 7));
        assert_eq!(held.0[&1], (7, true));
        assert!(held.ready_for(1, 12));
    }

    #[test]
    fn topic_names_are_held_once_and_shared() {
        let mut names = TopicNames::default();
        let a = names.get("raw.acme.windows");
        let b = names.get("raw.beta.windows");
        let a2 = names.get("raw.acme.windows");
        let b2 = names.get("raw.beta.windows");
        assert_eq!(&*a, "raw.acme.windows");
        assert_eq!(&*b, "raw.beta.windows");
        assert!(
            Arc::ptr_eq(&a, &a2),
            "a name seen before is not copied again"
        );
        assert!(Arc::ptr_eq(&b, &b2));
        assert!(Arc::ptr_eq(&names.get("raw.beta.windows"), &b));
        assert_eq!(names.all.len(), 2);
    }
}
