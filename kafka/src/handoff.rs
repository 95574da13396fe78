//! Handing records from one stage loop to another in the same process: ingest's events go to
//! the correlator as soon as the brokers acknowledge them, instead of the correlator's consumer
//! fetching them back.
//!
//! Why: every hop through a broker costs at least one fetch. A broker that holds a fetch for the
//! consumer's whole `fetch.wait.max.ms` (Tansu does) adds that wait, up to twice, per hop, and
//! the events topic is the second of the two hops between a raw record and its finding.
//!
//! The events topic stays the record of what was processed, and the consumer stays the path
//! that never loses anything. A handed record carries the partition and offset from its
//! delivery report, so it is exactly the record the consumer would read there. The receiving
//! loop keeps, per partition it processes, the offset after the last record it processed
//! (`Arrivals`):
//!
//! - a handed record is processed when it is that next offset;
//! - one ahead of it waits (bounded) until the consumer has processed the records before it,
//!   then is taken with the waiting ones after it; one behind it is dropped;
//! - a consumed record below the next offset was handed and processed already: skipped.
//!
//! A partition's place is known only from its first consumed record here, with its state
//! restored as of it, so nothing is taken (or kept waiting) from the handoff before the
//! consumer has started a partition, records of partitions another instance owns are dropped
//! at once, and a revoked partition's place and waiting records are forgotten. Each record
//! is processed once whichever path brings it first, offsets are stored as before (the handed
//! record's, once its own effect is acknowledged), and a full channel, a slow receiver, a gap
//! left by another instance's record or a rebalance costs only latency. Only acknowledged
//! records are handed: a record the brokers do not have is never processed.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use prometheus::IntCounter;
use tokio::sync::mpsc;

use crate::observe::KafkaMetrics;
use crate::stage::{InHeaders, InMessage, Outgoing};

/// Records one channel holds before the sender drops them (the receiver's consumer brings
/// those): the receiving loop is behind, and a bounded channel keeps memory bounded.
pub const CAPACITY: usize = 4096;

/// Handed records the receiving loop keeps while they are ahead of its consumer.
pub const WAITING: usize = 8192;

/// What happened to handed records, as counters (`chainwatch_kafka_handoff_records_total`).
#[derive(Debug, Clone)]
pub struct HandoffCounters {
    /// Put in the channel.
    pub handed: IntCounter,
    /// Not put in the channel, which was full.
    pub full: IntCounter,
    /// Processed by the receiving loop.
    pub taken: IntCounter,
    /// Dropped by the receiving loop: behind its partition's next offset, or no room to wait.
    pub passed: IntCounter,
    /// Waited, and were read by the consumer first.
    pub stale: IntCounter,
    /// Consumed records skipped because they were handed and processed already.
    pub skipped: IntCounter,
}

impl HandoffCounters {
    /// Counters of `metrics`' handoff series of `topic`.
    pub fn of(metrics: &KafkaMetrics, topic: &str) -> Self {
        Self::by_outcome(|outcome| metrics.handoff_records(topic, outcome))
    }

    /// Counters no registry exports (tests, tools).
    pub fn detached() -> Self {
        Self::by_outcome(|name| IntCounter::new(name, "detached").expect("a valid counter name"))
    }

    fn by_outcome(counter: impl Fn(&str) -> IntCounter) -> Self {
        Self {
            handed: counter("handed"),
            full: counter("full"),
            taken: counter("taken"),
            passed: counter("passed"),
            stale: counter("stale"),
            skipped: counter("skipped"),
        }
    }
}

/// A record handed over, as acknowledged by the brokers.
#[derive(Debug)]
pub(crate) struct Handed {
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Vec<u8>,
    payload: Option<Vec<u8>>,
    headers: Vec<(&'static str, Vec<u8>)>,
}

impl Handed {
    pub(crate) fn partition(&self) -> i32 {
        self.partition
    }

    pub(crate) fn offset(&self) -> i64 {
        self.offset
    }

    /// The record as the consumer would have read it from `topic`.
    pub(crate) fn message<'a>(&'a self, topic: &'a str) -> InMessage<'a> {
        InMessage {
            topic,
            partition: self.partition,
            offset: self.offset,
            key: Some(&self.key),
            payload: self.payload.as_deref(),
            timestamp: self.timestamp,
            headers: InHeaders::owned(&self.headers),
        }
    }
}

/// The sending end: given to the loop whose produced records are handed over.
#[derive(Debug)]
pub struct Handoff {
    topic: Arc<str>,
    tx: mpsc::Sender<Handed>,
    counters: HandoffCounters,
}

/// The receiving end: given to the loop consuming the topic.
#[derive(Debug)]
pub struct Inbox {
    topic: Arc<str>,
    rx: mpsc::Receiver<Handed>,
    pub(crate) counters: HandoffCounters,
}

/// A channel for the records a loop produces to `topic`, holding up to `capacity` of them.
pub fn channel(topic: &str, capacity: usize, counters: HandoffCounters) -> (Handoff, Inbox) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let topic: Arc<str> = Arc::from(topic);
    (
        Handoff {
            topic: Arc::clone(&topic),
            tx,
            counters: counters.clone(),
        },
        Inbox {
            topic,
            rx,
            counters,
        },
    )
}

impl Handoff {
    /// Hands over the acknowledged records of one message that went to the handoff's topic.
    pub(crate) fn hand(&self, records: Vec<Outgoing>) {
        for r in records {
            if r.topic != *self.topic {
                continue;
            }
            let Some((partition, offset, timestamp)) = r.delivered else {
                continue;
            };
            let handed = Handed {
                partition,
                offset,
                timestamp,
                key: r.key,
                payload: r.payload,
                headers: r.headers,
            };
            match self.tx.try_send(handed) {
                Ok(()) => self.counters.handed.inc(),
                Err(mpsc::error::TrySendError::Full(_)) => self.counters.full.inc(),
                // The receiving loop has stopped: its consumer's committed offsets say where
                // it resumes.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}

impl Inbox {
    /// The topic whose records come in.
    pub(crate) fn topic(&self) -> &Arc<str> {
        &self.topic
    }

    /// The next handed record; `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Handed> {
        self.rx.recv().await
    }
}

/// What the receiving loop knows of the partitions it processes: per partition, the offset
/// after the last record it processed there (whichever path brought it), and the handed
/// records that came ahead of it, in offset order, until the consumer has caught up with them.
///
/// A handed record usually comes before the consumer has read the records before it (the
/// consumer waits for a fetch; the handoff does not). Dropping it would leave the handoff
/// always ahead and never used; it waits instead, and once the consumer's record before it is
/// processed, it and the ones after it are taken at once. From then on the handoff brings each
/// record as the next one, and the consumer skips them.
#[derive(Debug)]
pub(crate) struct Arrivals {
    next: HashMap<i32, i64>,
    waiting: HashMap<i32, VecDeque<Handed>>,
    /// Handed records waiting, over all partitions.
    held: usize,
    /// Most handed records waiting; beyond it, new ones are dropped (the consumer brings them).
    limit: usize,
}

impl Arrivals {
    /// Up to `limit` handed records wait for the consumer.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            next: HashMap::new(),
            waiting: HashMap::new(),
            held: 0,
            limit,
        }
    }

    /// A handed record: kept when it is its partition's next record ([`Arrivals::ready`] now
    /// returns it), or ahead of it and there is room; `false`: dropped. A partition whose
    /// place is not known (never consumed here since it was assigned, or not this instance's:
    /// another instance's correlator owns it) keeps nothing.
    pub(crate) fn offer(&mut self, h: Handed) -> bool {
        match self.next.get(&h.partition) {
            Some(&next) if h.offset == next => {}
            Some(&next) if h.offset < next || self.held >= self.limit => return false,
            Some(_) => {}
            None => return false,
        }
        let queue = self.waiting.entry(h.partition).or_default();
        // In offset order (a record produced again after a failed delivery comes later with a
        // higher offset than ones handed after it); the same offset twice is kept once.
        let at = queue.partition_point(|w| w.offset < h.offset);
        if queue.get(at).is_some_and(|w| w.offset == h.offset) {
            return false;
        }
        queue.insert(at, h);
        self.held += 1;
        true
    }

    /// The waiting record of `partition` that is its next one, if any; the ones behind it
    /// (read by the consumer meanwhile) are dropped, and counted in `stale`.
    pub(crate) fn ready(&mut self, partition: i32, stale: &IntCounter) -> Option<Handed> {
        let next = *self.next.get(&partition)?;
        let queue = self.waiting.get_mut(&partition)?;
        while queue.front().is_some_and(|w| w.offset < next) {
            queue.pop_front();
            self.held -= 1;
            stale.inc();
        }
        if queue.front().is_some_and(|w| w.offset == next) {
            self.held -= 1;
            return queue.pop_front();
        }
        None
    }

    /// Whether a consumed record at `offset` of `partition` was processed already (handed).
    pub(crate) fn done(&self, partition: i32, offset: i64) -> bool {
        self.next.get(&partition).is_some_and(|&next| offset < next)
    }

    /// The record at `offset` of `partition` was processed.
    pub(crate) fn advance(&mut self, partition: i32, offset: i64) {
        self.next.insert(partition, offset + 1);
    }

    /// The partition is no longer this loop's: its place is unknown until its first consumed
    /// record, and what waited for it is dropped.
    pub(crate) fn forget(&mut self, partition: i32) {
        self.next.remove(&partition);
        if let Some(queue) = self.waiting.remove(&partition) {
            self.held -= queue.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(topic: &str, delivered: Option<(i32, i64, Option<i64>)>) -> Outgoing {
        Outgoing {
            topic: topic.to_owned(),
            partition: None,
            key: b"acme/ws-1".to_vec(),
            payload: Some(b"event".to_vec()),
            headers: vec![("chainwatch.encoding", b"bin1".to_vec())],
            delivered,
        }
    }

    fn handed(partition: i32, offset: i64) -> Handed {
        Handed {
            partition,
            offset,
            timestamp: None,
            key: Vec::new(),
            payload: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn handed_records_wait_for_the_consumer_then_are_taken_in_order() {
        let stale = IntCounter::new("stale", "test").unwrap();
        let mut at = Arrivals::new(4);
        // The partition's place is not known before its first consumed record (or ever, when
        // another instance owns it): nothing waits.
        assert!(!at.offer(handed(0, 1)));
        assert!(at.ready(0, &stale).is_none());
        // Known: 5 and 6 wait, and 8 (after a gap another instance's record fills), out of
        // order, too.
        at.advance(0, 2);
        assert!(at.offer(handed(0, 6)));
        assert!(at.offer(handed(0, 5)));
        assert!(at.offer(handed(0, 8)));
        assert!(!at.offer(handed(0, 5)), "kept once");
        assert!(at.ready(0, &stale).is_none());
        assert!(!at.done(0, 4));
        // The consumer brings 3 and 4.
        at.advance(0, 3);
        assert!(at.ready(0, &stale).is_none(), "5 is not next yet");
        at.advance(0, 4);
        assert_eq!(at.ready(0, &stale).map(|h| h.offset), Some(5));
        at.advance(0, 5);
        assert_eq!(at.ready(0, &stale).map(|h| h.offset), Some(6));
        at.advance(0, 6);
        // 7 is not handed: 8 waits for the consumer.
        assert!(at.ready(0, &stale).is_none());
        assert!(
            at.done(0, 5) && at.done(0, 6),
            "the consumer skips what was taken"
        );
        assert!(!at.done(0, 7));
        // From then on, the next record handed is taken at once; one behind is dropped.
        at.advance(0, 7);
        assert_eq!(at.ready(0, &stale).map(|h| h.offset), Some(8));
        at.advance(0, 8);
        assert!(at.offer(handed(0, 9)));
        assert_eq!(at.ready(0, &stale).map(|h| h.offset), Some(9));
        at.advance(0, 9);
        assert!(!at.offer(handed(0, 8)));
        assert_eq!(stale.get(), 0);
        assert_eq!(at.held, 0);
    }

    #[test]
    fn waiting_records_are_bounded_and_dropped_with_their_partition() {
        let stale = IntCounter::new("stale", "test").unwrap();
        let mut at = Arrivals::new(3);
        at.advance(1, 9);
        at.advance(2, 2);
        for o in 10..13 {
            assert!(at.offer(handed(1, o)));
        }
        assert!(!at.offer(handed(2, 4)), "full");
        // The consumer read past two of them meanwhile: they are stale, the third is next.
        at.advance(1, 11);
        assert_eq!(at.ready(1, &stale).map(|h| h.offset), Some(12));
        assert_eq!(stale.get(), 2);
        assert_eq!(at.held, 0);
        for o in 4..7 {
            assert!(at.offer(handed(2, o)));
        }
        assert!(!at.offer(handed(2, 8)), "full again");
        // The next record is kept even when full: it is taken at once.
        at.advance(2, 6);
        assert!(at.offer(handed(2, 7)));
        assert_eq!(at.held, 4);
        // Revoked: its place and its waiting records are forgotten.
        at.forget(2);
        assert_eq!(at.held, 0);
        assert!(!at.done(2, 3));
        assert!(at.ready(2, &stale).is_none());
        assert!(!at.done(3, 0), "other partitions are not affected");
    }

    #[tokio::test]
    async fn only_acknowledged_records_of_the_topic_are_handed() {
        let counters = HandoffCounters::detached();
        let (handoff, mut inbox) = channel("t.events", 2, counters.clone());
        handoff.hand(vec![
            outgoing("t.events", Some((2, 7, Some(1_700_000_000_000)))),
            // Another topic (a dead letter) and a record without a delivery report.
            outgoing("t.dead-letter", Some((0, 1, None))),
            outgoing("t.events", None),
            outgoing("t.events", Some((2, 8, None))),
            // Beyond the capacity: dropped, the consumer brings it.
            outgoing("t.events", Some((2, 9, None))),
        ]);
        assert_eq!(counters.handed.get(), 2);
        assert_eq!(counters.full.get(), 1);
        let first = inbox.recv().await.expect("handed");
        let m = first.message(inbox.topic());
        assert_eq!(
            (m.topic, m.partition, m.offset, m.timestamp),
            ("t.events", 2, 7, Some(1_700_000_000_000))
        );
        assert_eq!(m.key, Some(&b"acme/ws-1"[..]));
        assert_eq!(m.payload, Some(&b"event"[..]));
        assert_eq!(m.header("chainwatch.encoding"), Some("bin1"));
        assert_eq!(m.headers.get("absent"), None);
        let second = inbox.recv().await.expect("handed");
        assert_eq!((second.partition(), second.offset()), (2, 8));
        drop(handoff);
        assert!(inbox.recv().await.is_none(), "closed with its sender");
    }
}
