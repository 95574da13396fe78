//! Creating chainwatch's own topics when they are missing.

use std::time::Duration;

use chainwatch_config::service::KafkaConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;

use crate::StageError;

/// Creates `topics` with the configured partitions and replication; existing topics are left
/// as they are.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[&str]) -> Result<(), StageError> {
    create(config, topics, config.partitions, &[]).await
}

/// Creates `topics` as compacted topics (`cleanup.policy=compact`: the broker keeps the
/// latest record per key), with the configured partitions and replication; existing topics
/// are left as they are.
pub async fn ensure_compacted_topics(
    config: &KafkaConfig,
    topics: &[&str],
) -> Result<(), StageError> {
    create(
        config,
        topics,
        config.partitions,
        &[("cleanup.policy", "compact")],
    )
    .await
}

/// Creates `topics` with `partitions` partitions, the configured replication and the topic
/// settings `settings`; existing topics are left as they are.
pub async fn create(
    config: &KafkaConfig,
    topics: &[&str],
    partitions: i32,
    settings: &[(&str, &str)],
) -> Result<(), StageError> {
    // With chainwatch's context, so a broker that cannot be reached says why in the log (a
    // refused certificate, a failed SASL handshake), not only that the operation timed out.
    let admin: AdminClient<crate::client::Context> = crate::client::admin_config(config)
        .create_with_context(crate::client::Context {
            stage: "admin",
            ..crate::client::Context::default()
        })?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            settings.iter().fold(
                NewTopic::new(
                    t,
                    partitions,
                    TopicReplication::Fixed(config.replication_factor),
                ),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new, &opts).await? {
        match result {
            Ok(topic) => tracing::info!(topic, partitions, ?settings, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(StageError::Setup(format!(
                    "cannot create topic {topic}: {code}"
                )));
            }
        }
    }
    Ok(())
}
