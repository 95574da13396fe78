//! Where the analyst commands (`explain`, `hunt`, `hosts`) find chainwatch's topics: the
//! service config's `[kafka]` and `[topics]`, or `--brokers` and `-X` options.
//!
//! Only the sections these commands need are read from the config: a running deployment's
//! config names webhook secrets by environment variable or file, which an analyst's shell does
//! not have, and `explain` must not fail for want of a PagerDuty key.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use chainwatch_config::TenantConfig;
use chainwatch_config::service::{KafkaConfig, TopicsConfig};
use serde::Deserialize;

use crate::cli::TopicSource;

/// What the analyst commands take from a service config.
#[derive(Debug, Default)]
pub struct Deployment {
    /// Brokers and client options.
    pub kafka: Option<KafkaConfig>,
    /// Topic names (defaults without a config).
    pub topics: TopicsConfig,
    /// Tenant policies (exclusions, scopes, priorities) for hunts.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// `[correlate.placeholders]`.
    pub placeholders: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Partial {
    kafka: Option<KafkaConfig>,
    topics: Option<TopicsConfig>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantConfig>,
    correlate: Option<PartialCorrelate>,
}

#[derive(Deserialize)]
struct PartialCorrelate {
    #[serde(default)]
    placeholders: BTreeMap<String, Vec<String>>,
}

fn load(path: &Path) -> Result<Deployment> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let p: Partial =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))?;
    Ok(Deployment {
        kafka: p.kafka,
        topics: p.topics.unwrap_or_default(),
        tenants: p.tenants,
        placeholders: p.correlate.map(|c| c.placeholders).unwrap_or_default(),
    })
}

/// The deployment `source` names (Kafka settings are absent when neither `--config` nor
/// `--brokers` is given).
pub fn deployment(source: &TopicSource) -> Result<Deployment> {
    let mut d = match &source.config {
        Some(path) => load(path)?,
        None => Deployment::default(),
    };
    if let Some(brokers) = &source.brokers {
        d.kafka = Some(kafka_from_flags(brokers, &source.options, 1)?);
    } else if !source.options.is_empty() {
        bail!("-X options go with --brokers (a config's options are in its [kafka.options])");
    }
    Ok(d)
}

/// Kafka settings from the command line: `--brokers` and `-X KEY=VALUE` options; topics this
/// command creates get `partitions` partitions, replication 1.
pub fn kafka_from_flags(brokers: &str, flags: &[String], partitions: i32) -> Result<KafkaConfig> {
    let mut options = BTreeMap::new();
    for o in flags {
        let Some((k, v)) = o.split_once('=') else {
            bail!("-X {o:?}: expected KEY=VALUE");
        };
        options.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(KafkaConfig {
        brokers: brokers.to_owned(),
        group_prefix: "chainwatch".into(),
        create_topics: false,
        partitions,
        replication_factor: 1,
        options,
        secrets: BTreeMap::new(),
    })
}

impl Deployment {
    /// The Kafka settings, or an error saying how to give them.
    pub fn kafka(&self, what: &str) -> Result<&KafkaConfig> {
        self.kafka.as_ref().ok_or_else(|| {
            anyhow::anyhow!("{what} needs a broker: give --config FILE (a service config) or --brokers HOST:PORT")
        })
    }
}
