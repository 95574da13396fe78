//! `chainwatch hosts`: hosts by inferred role, per tenant — which customers run Exchange, and
//! on which hosts.
//!
//! From a running deployment, the roles topic (compacted, one record per tenant and host,
//! written by every correlator as hosts gain roles) is read whole with
//! [`chainwatch_kafka::scan`], the latest record of each key kept. From telemetry files, the
//! same inference runs here ([`chainwatch_correlate::roles`]) over the files.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chainwatch_config::ServiceConfig;
use chainwatch_config::service::KafkaConfig;
use chainwatch_correlate::{Engine, EngineConfig, HostRoles, LookbackConfig, RoleSignals, RuleSet};
use chainwatch_ingest::TenantSource;
use chainwatch_kafka::scan::{self, Flow};
use chainwatch_model::TenantId;
use tokio::sync::watch;

use crate::cli::{HostsArgs, HostsOutput};
use crate::replay::{ReplayStats, feed_files, file_decoder};
use crate::topic_source;

/// Every host record of the roles topic (the latest per key; none when the topic is empty).
pub fn read_roles(kafka: &KafkaConfig, topic: &str) -> Result<Vec<HostRoles>> {
    let reader = scan::reader(kafka, "roles")?;
    if !reader.exists(topic)? {
        bail!("the roles topic {topic} does not exist (no correlator has written to it)");
    }
    let ranges = reader.ranges(topic, None, None)?;
    let mut latest: BTreeMap<Vec<u8>, Option<HostRoles>> = BTreeMap::new();
    let mut bad = 0u64;
    reader.read(topic, &ranges, Duration::from_secs(60), &mut |r| {
        let key = r.key.unwrap_or_default().to_vec();
        match r.payload {
            // A tombstone forgets the host.
            None => {
                latest.insert(key, None);
            }
            Some(p) => match serde_json::from_slice::<HostRoles>(p) {
                Ok(h) => {
                    latest.insert(key, Some(h));
                }
                Err(_) => bad += 1,
            },
        }
        Flow::Continue
    })?;
    if bad > 0 {
        tracing::warn!(
            topic,
            records = bad,
            "records of the roles topic are not host roles"
        );
    }
    Ok(latest.into_values().flatten().collect())
}

/// The correlate stage's roles topic, before the stage knows whether it can write to it.
#[derive(Debug)]
pub struct RolesTopic {
    kafka: KafkaConfig,
    topic: String,
    /// Created (or found) at start-up: it exists.
    exists: bool,
}

/// Creates the roles topic (compacted) when chainwatch creates its topics, as it does the
/// others at start-up; otherwise whether it exists is asked later ([`RolesTopic::open`]), so a
/// broker that is not reachable yet does not stop the process.
pub async fn roles_topic(config: &ServiceConfig) -> Result<RolesTopic> {
    let topic = config.topics.roles.clone();
    if config.kafka.create_topics {
        chainwatch_kafka::admin::ensure_compacted_topics(&config.kafka, &[&topic])
            .await
            .context("creating the roles topic")?;
    }
    Ok(RolesTopic {
        kafka: config.kafka.clone(),
        topic,
        exists: config.kafka.create_topics,
    })
}

impl RolesTopic {
    /// The topic to write role records to, and the records already on it (roles seen before
    /// a restart, or by other correlators). Waits for the broker to answer (retrying while it
    /// is unreachable, until `stop`). `None` when the topic does not exist and may not be
    /// created: roles are then inferred and scope playbooks, but are not written (a warning
    /// says so), so a missing topic can never stall the stage.
    pub async fn open(self, mut stop: watch::Receiver<bool>) -> (Option<String>, Vec<HostRoles>) {
        if !self.exists && !self.wait_for_topic(&mut stop).await {
            return (None, Vec::new());
        }
        let (kafka, topic) = (self.kafka.clone(), self.topic.clone());
        let read = tokio::task::spawn_blocking(move || read_roles(&kafka, &topic))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        match read {
            Ok(records) => {
                tracing::info!(
                    hosts = records.len(),
                    "host roles read back from the roles topic"
                );
                (Some(self.topic), records)
            }
            Err(e) => {
                tracing::warn!(topic = self.topic, error = %e, "cannot read the roles topic back; starting without the roles it holds");
                (Some(self.topic), Vec::new())
            }
        }
    }

    /// Asks the broker whether the topic exists, again while it cannot answer; `false` when it
    /// does not (warned) or `stop` came first.
    async fn wait_for_topic(&self, stop: &mut watch::Receiver<bool>) -> bool {
        let mut warned = false;
        loop {
            let (kafka, topic) = (self.kafka.clone(), self.topic.clone());
            let probe = tokio::task::spawn_blocking(move || {
                scan::reader(&kafka, "roles")
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r.exists(&topic).map_err(anyhow::Error::from))
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
            match probe {
                Ok(true) => return true,
                Ok(false) => {
                    tracing::warn!(
                        topic = self.topic,
                        "the roles topic does not exist and create_topics is off: inferred host roles scope playbooks but are not published (chainwatch hosts cannot list them)"
                    );
                    return false;
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(topic = self.topic, error = %e, "cannot look up the roles topic yet; retrying");
                        warned = true;
                    }
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return false,
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        }
    }
}

/// Host roles inferred from telemetry files, all of `tenant`.
fn from_files(files: &[PathBuf], tenant: TenantId) -> Result<Vec<HostRoles>> {
    let decoder = file_decoder("+00:00", None, None)?;
    let mut engine = Engine::new(
        Arc::new(RuleSet::default()),
        EngineConfig {
            lookback: LookbackConfig::off(),
            ..EngineConfig::default()
        },
    );
    let mut stats = ReplayStats::default();
    feed_files(
        files,
        &decoder,
        &TenantSource::Fixed(tenant),
        &mut engine,
        &mut stats,
        &mut |_| Ok(()),
        &mut |_| Ok(()),
    )?;
    Ok(engine.roles().all())
}

/// Runs `hosts`, printing to `out`; returns the hosts listed.
pub fn hosts(args: &HostsArgs, out: &mut dyn Write) -> Result<Vec<HostRoles>> {
    let known = RoleSignals::builtin().roles();
    if let Some(role) = &args.role
        && !known.contains(role)
    {
        bail!("unknown role {role:?} (known: {})", known.join(", "));
    }
    let tenant = args
        .tenant
        .as_deref()
        .map(|t| TenantId::new(t).with_context(|| format!("--tenant {t:?}")))
        .transpose()?;
    let mut all = if args.files.is_empty() {
        let deployment = topic_source::deployment(&args.source)?;
        let kafka = deployment.kafka("listing a deployment's hosts")?;
        let topic = args
            .source
            .topic
            .clone()
            .unwrap_or_else(|| deployment.topics.roles.clone());
        read_roles(kafka, &topic)?
    } else {
        let of_files = match &tenant {
            Some(t) => t.clone(),
            None => TenantId::new("default")?,
        };
        from_files(&args.files, of_files)?
    };
    all.retain(|h| {
        tenant.as_ref().is_none_or(|t| h.tenant == *t)
            && args.role.as_ref().is_none_or(|r| h.roles.contains_key(r))
    });
    all.sort_by(|a, b| (&a.tenant, a.host.key()).cmp(&(&b.tenant, b.host.key())));
    match args.output {
        HostsOutput::Json => {
            for h in &all {
                writeln!(out, "{}", serde_json::to_string(h)?)?;
            }
        }
        HostsOutput::Table => {
            writeln!(
                out,
                "{:<16} {:<32} {:<18} {:<24}  {:<24}  {:>7}  SIGNAL",
                "TENANT", "HOST", "ROLE", "FIRST SEEN", "LAST SEEN", "EVENTS"
            )?;
            for h in &all {
                for (role, seen) in &h.roles {
                    if args.role.as_ref().is_some_and(|r| r != role) {
                        continue;
                    }
                    writeln!(
                        out,
                        "{:<16} {:<32} {:<18} {:<24}  {:<24}  {:>7}  {}",
                        h.tenant.as_str(),
                        h.host.display(),
                        role,
                        seen.first_seen.to_string(),
                        seen.last_seen.to_string(),
                        seen.events,
                        seen.signal
                    )?;
                }
            }
        }
    }
    Ok(all)
}
