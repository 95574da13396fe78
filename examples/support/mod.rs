//! Helpers shared by the tool examples (`soak`, `kafka_bench`): a plain client of the broker,
//! creating topics, and the HTTP helpers of the end-to-end tests.

use std::time::Duration;

use anyhow::Result;
use rdkafka::ClientConfig;

/// The tests' helpers for chainwatch's HTTP endpoints (`free_port`, `http_get`, ...).
#[allow(dead_code)] // Each tool uses a part.
#[path = "../../tests/support/http.rs"]
pub mod http;

/// A client config for `brokers`, nothing else set.
pub fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates `topics` with `partitions` partitions each (replication 1), failing on any error.
pub fn create_topics(brokers: &str, topics: &[String], partitions: i32) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = client(brokers).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("creating {t}: {e}"))?;
    }
    Ok(())
}
