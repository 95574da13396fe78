//! `chainwatch gen --brokers`: the generated lines produced to Kafka topics instead of files,
//! one record per line, as a shipper would send them.
//!
//! A tenant's lines go to its own topic (`--topic`, by default `telemetry.<tenant>.windows`, the
//! topics the ingest stage subscribes to). Records are pipelined: librdkafka batches them
//! (idempotent producer, `acks=all`, so a retry neither loses nor repeats one), and when its
//! queue is full the writer serves delivery reports until there is room. Every delivery is
//! checked when the tenant's stream is flushed: a record that could not be delivered fails the
//! command.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use chainwatch_config::service::KafkaConfig;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

/// How long the end of a stream waits for its last deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

/// Counts deliveries; keeps the first failure.
#[derive(Debug, Default)]
struct Deliveries {
    outcome: Mutex<(u64, Option<String>)>,
}

impl rdkafka::ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        let mut o = self
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(_) => o.0 += 1,
            Err((e, _)) => {
                if o.1.is_none() {
                    o.1 = Some(e.to_string());
                }
            }
        }
    }
}

/// The producer `gen` writes with: brokers and `-X` options from the command line.
pub struct Sender {
    producer: BaseProducer<Deliveries>,
    /// Records handed to the producer, all topics together.
    sent: std::cell::Cell<u64>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl Sender {
    /// A producer for the brokers and options of `kafka`.
    pub fn new(kafka: &KafkaConfig) -> Result<Self> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &kafka.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        for (k, v) in &kafka.options {
            config.set(k, v);
        }
        let producer = config
            .create_with_context(Deliveries::default())
            .context("creating the producer")?;
        Ok(Self {
            producer,
            sent: std::cell::Cell::new(0),
        })
    }

    /// Creates the `topics` that are missing, with `kafka.partitions` partitions (brokers
    /// rarely create topics on first use in production, and Tansu never does).
    pub fn create_topics(kafka: &KafkaConfig, topics: &[&str]) -> Result<()> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(chainwatch_kafka::admin::create(
                kafka,
                topics,
                kafka.partitions,
                &[],
            ))
            .context("creating the workload's topics")
    }

    /// A writer whose every line becomes one record on `topic`.
    pub fn lines<'a>(&'a self, topic: &str) -> TopicLines<'a> {
        TopicLines {
            sender: self,
            topic: topic.to_owned(),
            line: Vec::with_capacity(4096),
        }
    }

    fn delivered(&self) -> (u64, Option<String>) {
        self.producer
            .context()
            .outcome
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Lines written here are produced to one topic, one record per line (the line break is not
/// part of the record). `flush` waits until every record is acknowledged.
pub struct TopicLines<'a> {
    sender: &'a Sender,
    topic: String,
    line: Vec<u8>,
}

impl TopicLines<'_> {
    fn send_line(&mut self) -> std::io::Result<()> {
        let producer = &self.sender.producer;
        loop {
            let record = BaseRecord::<(), [u8]>::to(&self.topic).payload(&self.line);
            match producer.send(record) {
                Ok(()) => break,
                // The local queue is full: serving delivery reports makes room.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    return Err(std::io::Error::other(format!(
                        "producing to {}: {e}",
                        self.topic
                    )));
                }
            }
        }
        self.line.clear();
        self.sender.sent.set(self.sender.sent.get() + 1);
        // Serve delivery reports as they come, without waiting.
        producer.poll(Duration::ZERO);
        Ok(())
    }
}

impl Write for TopicLines<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = memchr::memchr(b'\n', rest) {
            self.line.extend_from_slice(&rest[..end]);
            self.send_line()?;
            rest = &rest[end + 1..];
        }
        self.line.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.send_line()?;
        }
        self.sender
            .producer
            .flush(Timeout::After(FLUSH_TIMEOUT))
            .map_err(|e| std::io::Error::other(format!("flushing to {}: {e}", self.topic)))?;
        match self.sender.delivered() {
            (_, Some(e)) => Err(std::io::Error::other(format!(
                "a record to {} was not delivered: {e}",
                self.topic
            ))),
            (n, None) if n < self.sender.sent.get() => Err(std::io::Error::other(format!(
                "{} records were not acknowledged",
                self.sender.sent.get() - n
            ))),
            _ => Ok(()),
        }
    }
}
