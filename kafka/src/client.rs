//! Kafka client settings: chainwatch's defaults, then the config's librdkafka pass-through, and
//! librdkafka's own log lines forwarded into `tracing`. A client with an observer
//! ([`consumer_with`]) also reports statistics, rebalances and errors to it ([`crate::observe`]).

use std::sync::{Arc, Mutex};

use chainwatch_config::service::KafkaConfig;
use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;

use crate::observe::ClientObserver;

/// The client context: librdkafka's logs and rebalances go to `tracing`, and to the observer
/// when there is one.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Which stage this client belongs to, for log lines.
    pub stage: &'static str,
    /// Where statistics, rebalances and errors are reported; `None`: logs only.
    pub observer: Option<Arc<ClientObserver>>,
    /// Partitions rebalances took away, until the stage loop looks ([`Revocations::take`]): a
    /// stateful stage must not trust the state of a partition another instance may have
    /// owned meanwhile.
    pub revoked: Arc<Revocations>,
}

/// Partitions revoked from a consumer, in the order the rebalances took them.
#[derive(Debug, Default)]
pub struct Revocations(Mutex<Vec<(String, i32)>>);

impl Revocations {
    /// The partitions revoked since the last call.
    pub fn take(&self) -> Vec<(String, i32)> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn push(&self, tpl: &rdkafka::TopicPartitionList) {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in tpl.elements() {
            v.push((e.topic().to_owned(), e.partition()));
        }
    }
}

/// How often librdkafka emits statistics for an observed client, unless the config's
/// pass-through sets `statistics.interval.ms`.
pub const DEFAULT_STATISTICS_INTERVAL_MS: &str = "5000";

impl ClientContext for Context {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let stage = self.stage;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", stage, fac, "{message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", stage, fac, "{message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", stage, fac, "{message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", stage, fac, "{message}")
            }
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", stage = self.stage, %error, "{reason}");
        if let Some(o) = &self.observer {
            o.on_error(&error);
        }
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Some(o) = &self.observer
            && let Err(e) = o.on_stats(statistics)
        {
            tracing::warn!(target: "librdkafka", stage = self.stage, error = %e, "unreadable statistics");
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        use rdkafka::consumer::Consumer as _;
        // The whole assignment after the change: the cooperative assignor's rebalances pass
        // only the partitions added or taken away.
        let now = consumer.assignment().map_or(0, |tpl| tpl.count());
        if let Some(o) = &self.observer {
            match rebalance {
                Rebalance::Assign(_) => o.on_assign(now),
                Rebalance::Revoke(_) => o.on_revoke(now),
                Rebalance::Error(_) => o.on_rebalance_error(),
            }
        }
        if let Rebalance::Revoke(tpl) = rebalance {
            self.revoked.push(tpl);
        }
        match rebalance {
            Rebalance::Assign(tpl) => tracing::info!(
                stage = self.stage,
                added = tpl.count(),
                assigned = now,
                "partitions assigned"
            ),
            Rebalance::Revoke(tpl) => tracing::info!(
                stage = self.stage,
                taken = tpl.count(),
                assigned = now,
                "partitions revoked"
            ),
            Rebalance::Error(e) => {
                tracing::warn!(stage = self.stage, error = %e, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &rdkafka::TopicPartitionList) {
        match result {
            // Nothing new to commit is not a failure.
            Err(rdkafka::error::KafkaError::ConsumerCommit(
                rdkafka::types::RDKafkaErrorCode::NoOffset,
            ))
            | Ok(()) => {}
            Err(e) => {
                tracing::warn!(stage = self.stage, error = %e, "offset commit failed");
                if let Some(o) = &self.observer {
                    o.on_commit_failure();
                }
            }
        }
    }
}

/// A consumer.
pub type Consumer = StreamConsumer<Context>;
/// A producer.
pub type Producer = FutureProducer<Context>;

fn base(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set(
            "client.id",
            format!("{}-{}", config.group_prefix, std::process::id()),
        )
        // Find new tenant topics within seconds, not librdkafka's default five minutes.
        .set("topic.metadata.refresh.interval.ms", "10000");
    c
}

/// The config's pass-through options and secrets, set on `c`.
pub(crate) fn pass_through(c: &mut ClientConfig, config: &KafkaConfig) {
    for (k, v) in &config.options {
        c.set(k, v);
    }
    // librdkafka masks its own secret properties (`sasl.password`, `ssl.key.password`, ...)
    // when it logs its configuration; chainwatch never logs these values.
    for (k, v) in &config.secrets {
        c.set(k, v.expose());
    }
}

/// A consumer in group `group` with at-least-once settings: offsets are stored by the stage only
/// after the effect of a message is durable, and committed in the background.
pub fn consumer(config: &KafkaConfig, group: &str, stage: &'static str) -> KafkaResult<Consumer> {
    consumer_with(
        config,
        group,
        Context {
            stage,
            ..Context::default()
        },
    )
}

/// How long a consumer's fetch may wait on the broker for new records, unless the config's
/// pass-through sets `fetch.wait.max.ms` (librdkafka's default is 500). A broker that holds
/// every fetch for this long before answering, data or not (Tansu 0.6 holds it for half of
/// it, at 250 ms or more), adds up to twice the hold to each consumer hop of the pipeline;
/// Apache Kafka answers as soon as data is there, and the wait only paces empty fetches of an
/// idle partition. See ARCHITECTURE.md, "Detection latency".
pub const DEFAULT_FETCH_WAIT_MAX_MS: &str = "100";

/// The consumers' partition assignor, unless the config's pass-through sets
/// `partition.assignment.strategy`. Cooperative: a member joining or leaving takes from the
/// others only the partitions that move (librdkafka's default assignors are eager: every
/// rebalance takes every partition from every member and hands them out again). Members of one
/// group must agree on it: a group running an eager assignor is switched by stopping all its
/// instances first.
pub const DEFAULT_ASSIGNMENT_STRATEGY: &str = "cooperative-sticky";

/// A consumer like [`consumer`], with a context of the caller's: with an observer, librdkafka
/// emits statistics every [`DEFAULT_STATISTICS_INTERVAL_MS`] (or the pass-through's
/// `statistics.interval.ms`) and they go to the observer.
pub fn consumer_with(config: &KafkaConfig, group: &str, context: Context) -> KafkaResult<Consumer> {
    consumer_config(config, group, context.observer.is_some()).create_with_context(context)
}

/// The settings of a consumer in group `group` (`observed`: with statistics).
fn consumer_config(config: &KafkaConfig, group: &str, observed: bool) -> ClientConfig {
    let mut c = base(config);
    if observed {
        c.set("statistics.interval.ms", DEFAULT_STATISTICS_INTERVAL_MS);
    }
    c.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        // A rebalance moves only the partitions that change owner: the others keep their
        // state and in-flight records (ARCHITECTURE.md, "Delivery").
        .set("partition.assignment.strategy", DEFAULT_ASSIGNMENT_STRATEGY);
    pass_through(&mut c, config);
    default_fetch_wait(&mut c);
    c
}

/// Sets the consumers' fetch wait ([`DEFAULT_FETCH_WAIT_MAX_MS`]) on `c`, unless the config's
/// pass-through, already applied, sets its own. Every consumer chainwatch makes takes it,
/// except the changelog's restore reader, which reads to a marker with a shorter wait.
pub(crate) fn default_fetch_wait(c: &mut ClientConfig) {
    if c.get("fetch.wait.max.ms").is_none() {
        c.set("fetch.wait.max.ms", DEFAULT_FETCH_WAIT_MAX_MS);
    }
}

/// A producer with idempotence and full acknowledgement: a produced record is durable when its
/// delivery future resolves.
pub fn producer(config: &KafkaConfig, stage: &'static str) -> KafkaResult<Producer> {
    let mut c = base(config);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4");
    pass_through(&mut c, config);
    c.create_with_context(Context {
        stage,
        ..Context::default()
    })
}

/// Connects `producer` to the brokers by asking for `topic`'s metadata, before its first
/// record. An idempotent producer must get its producer id before it sends anything, and
/// librdkafka, asked for one with no broker connection up yet, tries again only after 500 ms:
/// every stage's first records waited half a second (a stage starting on a backlog filled its
/// records in flight and stalled). A failure is only logged: sending connects as well, later.
pub async fn connect(producer: &Producer, topic: &str) {
    use rdkafka::producer::Producer as _;
    let (producer, topic) = (producer.clone(), topic.to_owned());
    let asked = tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(Some(&topic), std::time::Duration::from_secs(10))
            .map(|_| ())
    })
    .await;
    match asked {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "producer not connected ahead of its first record")
        }
        Err(e) => tracing::debug!(error = %e, "producer connection task failed"),
    }
}

/// An admin-capable client config (used by [`crate::admin`]).
pub(crate) fn admin_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = base(config);
    pass_through(&mut c, config);
    c
}

/// The underlying client of a consumer, for metadata queries.
pub fn client_of(consumer: &Consumer) -> &Client<Context> {
    use rdkafka::consumer::Consumer as _;
    consumer.client()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(options: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_prefix: "chainwatch".into(),
            create_topics: false,
            partitions: 1,
            replication_factor: 1,
            options: options
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            secrets: std::collections::BTreeMap::new(),
        }
    }

    #[test]
    fn consumers_poll_the_broker_with_a_short_fetch_wait() {
        let c = consumer_config(&kafka(&[]), "g", false);
        assert_eq!(c.get("fetch.wait.max.ms"), Some(DEFAULT_FETCH_WAIT_MAX_MS));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some(DEFAULT_ASSIGNMENT_STRATEGY)
        );
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("statistics.interval.ms"), None);
    }

    #[test]
    fn the_pass_through_overrides_the_fetch_wait_and_the_assignor() {
        let c = consumer_config(
            &kafka(&[
                ("fetch.wait.max.ms", "500"),
                ("partition.assignment.strategy", "range,roundrobin"),
            ]),
            "g",
            true,
        );
        assert_eq!(c.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(
            c.get("partition.assignment.strategy"),
            Some("range,roundrobin")
        );
        assert_eq!(
            c.get("statistics.interval.ms"),
            Some(DEFAULT_STATISTICS_INTERVAL_MS)
        );
    }
}
