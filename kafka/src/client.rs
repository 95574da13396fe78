//! Kafka client settings: chainwatch's defaults, then the config's librdkafka pass-through, and
//! librdkafka's own log lines forwarded into `tracing`.

use chainwatch_config::service::KafkaConfig;
use rdkafka::ClientContext;
use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::producer::FutureProducer;

/// The client context: librdkafka's logs and rebalances go to `tracing`.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// Which stage this client belongs to, for log lines.
    pub stage: &'static str,
}

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
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(
        &self,
        _c: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(tpl) => tracing::info!(
                stage = self.stage,
                partitions = tpl.count(),
                "partitions assigned"
            ),
            Rebalance::Revoke(tpl) => tracing::info!(
                stage = self.stage,
                partitions = tpl.count(),
                "partitions revoked"
            ),
            Rebalance::Error(e) => {
                tracing::warn!(stage = self.stage, error = %e, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &rdkafka::TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(stage = self.stage, error = %e, "offset commit failed");
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

fn pass_through(c: &mut ClientConfig, config: &KafkaConfig) {
    for (k, v) in &config.options {
        c.set(k, v);
    }
}

/// A consumer in group `group` with at-least-once settings: offsets are stored by the stage only
/// after the effect of a message is durable, and committed in the background.
pub fn consumer(config: &KafkaConfig, group: &str, stage: &'static str) -> KafkaResult<Consumer> {
    let mut c = base(config);
    c.set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000");
    pass_through(&mut c, config);
    c.create_with_context(Context { stage })
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
    c.create_with_context(Context { stage })
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
