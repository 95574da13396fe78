//! `chainwatch run`: the stages on Kafka, in one process (or the chosen subset), until SIGTERM
//! or Ctrl-C; then each stage drains what is in flight, commits, and the process exits.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use chainwatch_config::ServiceConfig;
use chainwatch_correlate::{CompileOptions, EngineConfig};
use chainwatch_kafka::client::Context as ClientContext;
use chainwatch_kafka::{LoopConfig, admin, client, run_delivery, run_transform};
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

const FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

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
        tasks.spawn(
            async move {
                run_transform(&consumer, &producer, &mut core, rx, LoopConfig::default()).await?;
                producer.flush(FLUSH)?;
                Ok("ingest")
            }
            .instrument(tracing::info_span!("stage", stage = "ingest")),
        );
    }
    if args.stages.contains(&StageName::Correlate) {
        let engine = EngineConfig {
            allowed_lateness: config.correlate.allowed_lateness,
            max_groups: config.correlate.max_groups,
            max_groups_per_tenant: config.correlate.max_groups_per_tenant,
            lookback: (&config.correlate.lookback).into(),
            ..EngineConfig::default()
        };
        let roles_topic = crate::hosts::roles_topic(&config).await?;
        let mut core = CorrelateCore::new(
            rules_rx.clone(),
            engine,
            &topics.alerts,
            topics.alerts_format,
            &topics.dead_letter,
        )
        .with_metrics(Arc::clone(&metrics));
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
        tasks.spawn(
            async move {
                // Roles seen before (and where to write new ones) before the first event.
                let (topic, known) = roles_topic.open(rx.clone()).await;
                core.set_roles_topic(topic);
                core.restore_roles(known);
                run_transform(&consumer, &producer, &mut core, rx, LoopConfig::default()).await?;
                producer.flush(FLUSH)?;
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
                    run_delivery(&consumer, &producer, &mut core, rx).await?;
                    producer.flush(FLUSH)?;
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
