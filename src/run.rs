//! `chainwatch run`: the stages on Kafka, in one process (or the chosen subset), until SIGTERM
//! or Ctrl-C; then each stage stops consuming, drains what is in flight, commits, and the
//! process exits, all within `[shutdown] timeout`.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use chainwatch_config::ServiceConfig;
use chainwatch_correlate::{CompileOptions, EngineConfig};
use chainwatch_kafka::client::Context as ClientContext;
use chainwatch_kafka::{
    Changelog, HandoffCounters, LoopConfig, admin, client, handoff, run_delivery, run_stateful,
    run_transform,
};
use chainwatch_sink::Deliverer;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::Producer as _;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::cli::{RunArgs, StageName};
use crate::stages::correlate::CorrelateCore;
use crate::stages::ingest::IngestCore;
use crate::stages::sink::SinkCore;
use crate::telemetry::Telemetry;
use crate::telemetry::events::{RulesLoaded, RulesRejected};

/// The part of `[shutdown] timeout` the stage loops get to drain (the rest is for the final
/// commit and producer flush).
fn drain_budget(timeout: std::time::Duration) -> std::time::Duration {
    timeout * 3 / 4
}

/// Divides a limit over all partitions (each partition's engine gets its share, at least 1).
fn per_partition(limit: usize, partitions: i32) -> usize {
    let n = usize::try_from(partitions.max(1)).unwrap_or(1);
    limit.div_ceil(n).max(1)
}

/// The look-back's bounds over tenants and in all, divided over the partitions like the
/// chains' (a host's events, and so its look-back, are in one partition).
fn per_partition_lookback(
    mut lookback: chainwatch_correlate::LookbackConfig,
    partitions: i32,
) -> chainwatch_correlate::LookbackConfig {
    lookback.max_events_per_tenant = per_partition(lookback.max_events_per_tenant, partitions);
    lookback.max_events = per_partition(lookback.max_events, partitions);
    lookback
}

/// Reads and validates the service config.
pub fn load_config(path: &std::path::Path) -> Result<ServiceConfig> {
    ServiceConfig::load(path).map_err(|d| anyhow!("config {} refused, {d}", path.display()))
}

/// An observed consumer of `stage` in `group`: its statistics and rebalances go to the
/// telemetry, and it counts towards readiness.
fn observed_consumer(
    config: &ServiceConfig,
    telemetry: &Telemetry,
    group: &str,
    stage: &'static str,
) -> Result<client::Consumer> {
    let context = ClientContext {
        stage,
        observer: Some(telemetry.consumer_observer(stage, group)),
        ..ClientContext::default()
    };
    Ok(client::consumer_with(&config.kafka, group, context)?)
}

/// Runs the pipeline.
pub async fn run(args: &RunArgs, config: ServiceConfig) -> Result<()> {
    let telemetry = Telemetry::new(&config.metrics)?;
    // The endpoint comes up first: `/healthz` answers and `/readyz` says what is missing while
    // rules load and consumers join their groups.
    let (http_stop, http_stopped) = watch::channel(false);
    let http = if config.http.enabled {
        let listener = crate::telemetry::http::bind(config.http.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "http endpoint listening (/metrics, /healthz, /readyz)");
        Some(crate::telemetry::http::serve(
            listener,
            Arc::clone(&telemetry),
            http_stopped,
        ))
    } else {
        None
    };
    let metrics = Arc::clone(&telemetry.metrics);
    let rule_paths: Vec<_> = config
        .correlate
        .rules
        .iter()
        .map(|p| config.resolve(p))
        .collect();
    let options = CompileOptions {
        placeholders: config.correlate.placeholders.clone(),
        tenants: config.tenants.clone(),
        tenants_source: args.config.clone(),
    };
    let rules = match crate::rules::load_rule_set(&rule_paths, &options) {
        Ok(r) => r,
        Err(e) => {
            RulesRejected {
                error: &format!("{e:#}"),
                reason: "start-up",
            }
            .emit(&metrics);
            return Err(e);
        }
    };
    RulesLoaded {
        detections: rules.detections.len(),
        correlations: rules.correlations.len(),
        reason: "start-up",
    }
    .emit(&metrics);
    telemetry.health.set_rules_loaded();
    let (rules_tx, rules_rx) = watch::channel(Arc::new(rules));
    let topics = &config.topics;
    if config.kafka.create_topics {
        admin::ensure_topics(
            &config.kafka,
            &[&topics.events, &topics.alerts, &topics.dead_letter],
        )
        .await
        .context("creating chainwatch's topics")?;
    }
    let (stop, stopped) = watch::channel(false);
    let mut tasks: JoinSet<Result<&'static str>> = JoinSet::new();
    let prefix = &config.kafka.group_prefix;
    let shutdown_timeout = config.shutdown.timeout;
    let loop_config = LoopConfig {
        drain_timeout: drain_budget(shutdown_timeout),
        ..LoopConfig::default()
    };
    // What is left of the shutdown budget after draining: the producers' final flush.
    let flush = shutdown_timeout.saturating_sub(loop_config.drain_timeout);
    // Ingest and correlate in one process: events go from one to the other as soon as the
    // brokers have them (`chainwatch_kafka::handoff`).
    let (handoff, inbox) = if config.correlate.handoff
        && args.stages.contains(&StageName::Ingest)
        && args.stages.contains(&StageName::Correlate)
    {
        let counters = HandoffCounters::of(&telemetry.kafka, &topics.events);
        let (h, i) = handoff::channel(&topics.events, handoff::CAPACITY, counters);
        (Some(h), Some(i))
    } else {
        (None, None)
    };

    if args.stages.contains(&StageName::Ingest) {
        let mut core = IngestCore::new(&config)?.with_metrics(Arc::clone(&metrics));
        let consumer =
            observed_consumer(&config, &telemetry, &format!("{prefix}-ingest"), "ingest")?;
        let subs = core.subscriptions();
        let subs: Vec<&str> = subs.iter().map(String::as_str).collect();
        consumer
            .subscribe(&subs)
            .context("subscribing to the raw topics")?;
        let producer = client::producer(&config.kafka, "ingest")?;
        let rx = stopped.clone();
        let events = topics.events.clone();
        tasks.spawn(
            async move {
                let mut stopping = rx.clone();
                let connect = client::connect(&producer, &events);
                if chainwatch_kafka::stage::until_shutdown(connect, &mut stopping)
                    .await
                    .is_none()
                {
                    return Ok("ingest");
                }
                let handoff = handoff.as_ref();
                run_transform(&consumer, &producer, &mut core, rx, loop_config, handoff).await?;
                producer.flush(flush)?;
                Ok("ingest")
            }
            .instrument(tracing::info_span!("stage", stage = "ingest")),
        );
    }
    if args.stages.contains(&StageName::Correlate) {
        let roles_topic = crate::hosts::roles_topic(&config).await?;
        // The partial chains of each events partition live in their own engine and go to the
        // same partition of the state changelog. The core is built once the changelog is there
        // (in the task: a broker that is not reachable yet must not stop the start-up).
        let correlate = config.correlate.clone();
        let make_core = {
            let (rules, metrics) = (rules_rx.clone(), Arc::clone(&metrics));
            let (alerts, format, dead) = (
                topics.alerts.clone(),
                topics.alerts_format,
                topics.dead_letter.clone(),
            );
            move |partitions: i32| {
                let engine = EngineConfig {
                    allowed_lateness: correlate.allowed_lateness,
                    max_groups: per_partition(correlate.max_groups, partitions),
                    max_groups_per_tenant: per_partition(
                        correlate.max_groups_per_tenant,
                        partitions,
                    ),
                    lookback: per_partition_lookback((&correlate.lookback).into(), partitions),
                    ..EngineConfig::default()
                };
                CorrelateCore::new(rules, engine, &alerts, format, &dead)
                    .with_metrics(metrics)
                    .with_changelog()
                    .with_idle_after(correlate.idle_after)
            }
        };
        let (kafka, events, state) = (
            config.kafka.clone(),
            topics.events.clone(),
            config.state_topic(),
        );
        tokio::spawn(crate::reload::watch(
            crate::reload::Watch {
                paths: rule_paths.clone(),
                options: options.clone(),
                interval: config.correlate.reload_interval,
                metrics: Arc::clone(&metrics),
            },
            rules_tx.clone(),
            stopped.clone(),
        ));
        let consumer = observed_consumer(
            &config,
            &telemetry,
            &format!("{prefix}-correlate"),
            "correlate",
        )?;
        consumer
            .subscribe(&[&topics.events])
            .context("subscribing to the events topic")?;
        let producer = client::producer(&config.kafka, "correlate")?;
        let rx = stopped.clone();
        let alerts_topic = topics.alerts.clone();
        tasks.spawn(
            async move {
                let mut stopping = rx.clone();
                let connected = client::connect(&producer, &alerts_topic);
                // The changelog and the roles seen before (and where to write new ones), both
                // before the first event; neither waits for the other.
                let roles = roles_topic.open(rx.clone());
                let changelog = changelog_when_ready(&kafka, &events, &state);
                // Each part waits for the brokers; shutdown does not wait for them.
                let ready = async { tokio::join!(changelog, roles, connected) };
                let Some((changelog, (topic, known), ())) =
                    chainwatch_kafka::stage::until_shutdown(ready, &mut stopping).await
                else {
                    return Ok("correlate");
                };
                let mut core = make_core(changelog.partitions());
                core.set_roles_topic(topic);
                core.restore_roles(known);
                run_stateful(
                    &consumer,
                    &producer,
                    &mut core,
                    rx,
                    loop_config,
                    &changelog,
                    inbox,
                )
                .await?;
                producer.flush(flush)?;
                Ok("correlate")
            }
            .instrument(tracing::info_span!("stage", stage = "correlate")),
        );
    }
    if args.stages.contains(&StageName::Sink) {
        // Every sink reads every finding and keeps what its route takes; the router knows all
        // routes, since `default` depends on the tenant routes.
        let router = Arc::new(chainwatch_sink::Router::new(&config.sinks));
        // One producer for the sinks' dead letters.
        let producer = client::producer(&config.kafka, "sink")?;
        for sink in &config.sinks {
            let deliverer = Deliverer::open(sink, &config.base_dir)?;
            let mut core = SinkCore::new(deliverer, sink, Arc::clone(&router), &topics.dead_letter)
                .with_metrics(Arc::clone(&metrics));
            let group = format!("{prefix}-sink-{}", sink.name());
            let consumer = observed_consumer(&config, &telemetry, &group, "sink")?;
            consumer
                .subscribe(&[&topics.alerts])
                .context("subscribing to the alerts topic")?;
            let rx = stopped.clone();
            let producer = producer.clone();
            let sink_name = sink.name().to_owned();
            tasks.spawn(
                async move {
                    run_delivery(&consumer, &producer, &mut core, rx, loop_config).await?;
                    producer.flush(flush)?;
                    Ok("sink")
                }
                .instrument(tracing::info_span!(
                    "stage",
                    stage = "sink",
                    sink = sink_name
                )),
            );
        }
    }
    telemetry.health.set_stages_started();
    tracing::info!(stages = ?args.stages, "chainwatch running");

    let mut first_error = None;
    tokio::select! {
        () = shutdown_signal() => tracing::info!("shutting down"),
        Some(done) = tasks.join_next() => {
            // A stage ended on its own: that is an error; stop the others.
            first_error = Some(match done {
                Ok(Ok(stage)) => anyhow!("stage {stage} stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => anyhow!("a stage panicked: {e}"),
            });
        }
    }
    telemetry.health.set_stopping();
    let _ = stop.send(true);
    let stopping = std::time::Instant::now();
    let joined = tokio::time::timeout(shutdown_timeout, async {
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(stage)) => tracing::info!(stage, "stage stopped"),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "stage failed");
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(anyhow!("a stage panicked: {e}"));
                }
            }
        }
    })
    .await;
    if joined.is_err() {
        // Whatever is still running holds uncommitted work: it is done again after restart.
        tasks.abort_all();
        first_error.get_or_insert(anyhow!(
            "shutdown took longer than [shutdown] timeout ({shutdown_timeout:?}); uncommitted work will be processed again after restart"
        ));
    } else {
        tracing::info!(
            elapsed_ms = u64::try_from(stopping.elapsed().as_millis()).unwrap_or(u64::MAX),
            "stopped"
        );
    }
    // The endpoint stays up while the stages drain, so a last scrape sees their final counts.
    let _ = http_stop.send(true);
    if let Some(http) = http {
        let _ = http.await;
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The correlate state changelog, set up as soon as the brokers let it (retried while they
/// cannot, each failure logged). It never gives up: the caller ends it at shutdown.
async fn changelog_when_ready(
    kafka: &chainwatch_config::service::KafkaConfig,
    events: &str,
    state: &str,
) -> Changelog {
    let mut attempt = 0u32;
    loop {
        match Changelog::ensure(kafka, events, state).await {
            Ok(c) => return c,
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, topic = state, "cannot set up the correlate state changelog yet; trying again");
                let wait = std::time::Duration::from_secs(u64::from(attempt.min(10)));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
