//! `chainwatch run`: the stages on Kafka, in one process (or the chosen subset), until SIGTERM
//! or Ctrl-C; then each stage drains what is in flight, commits, and the process exits.

use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use chainwatch_config::ServiceConfig;
use chainwatch_correlate::EngineConfig;
use chainwatch_kafka::{LoopConfig, admin, client, run_delivery, run_transform};
use chainwatch_sink::Deliverer;
use rdkafka::consumer::Consumer as _;
use rdkafka::producer::Producer as _;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cli::{RunArgs, StageName};
use crate::stages::correlate::CorrelateCore;
use crate::stages::ingest::IngestCore;
use crate::stages::sink::SinkCore;

const FLUSH: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the pipeline.
pub async fn run(args: &RunArgs) -> Result<()> {
    let config = ServiceConfig::load(&args.config)
        .map_err(|d| anyhow!("config {} refused, {d}", args.config.display()))?;
    let rule_paths: Vec<_> = config
        .correlate
        .rules
        .iter()
        .map(|p| config.resolve(p))
        .collect();
    let rules = Arc::new(crate::rules::load_rule_set(
        &rule_paths,
        &config.correlate.placeholders,
    )?);
    tracing::info!(
        detections = rules.detections.len(),
        correlations = rules.correlations.len(),
        "rules loaded"
    );
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
        let mut core = IngestCore::new(&config)?;
        let consumer = client::consumer(&config.kafka, &format!("{prefix}-ingest"), "ingest")?;
        let subs = core.subscriptions();
        let subs: Vec<&str> = subs.iter().map(String::as_str).collect();
        consumer
            .subscribe(&subs)
            .context("subscribing to the raw topics")?;
        let producer = client::producer(&config.kafka, "ingest")?;
        let rx = stopped.clone();
        tasks.spawn(async move {
            run_transform(&consumer, &producer, &mut core, rx, LoopConfig::default()).await?;
            producer.flush(FLUSH)?;
            Ok("ingest")
        });
    }
    if args.stages.contains(&StageName::Correlate) {
        let engine = EngineConfig {
            allowed_lateness: config.correlate.allowed_lateness,
            max_groups: config.correlate.max_groups,
            max_groups_per_tenant: config.correlate.max_groups_per_tenant,
        };
        let mut core = CorrelateCore::new(
            Arc::clone(&rules),
            engine,
            &topics.alerts,
            &topics.dead_letter,
        );
        let consumer =
            client::consumer(&config.kafka, &format!("{prefix}-correlate"), "correlate")?;
        consumer
            .subscribe(&[&topics.events])
            .context("subscribing to the events topic")?;
        let producer = client::producer(&config.kafka, "correlate")?;
        let rx = stopped.clone();
        tasks.spawn(async move {
            run_transform(&consumer, &producer, &mut core, rx, LoopConfig::default()).await?;
            producer.flush(FLUSH)?;
            Ok("correlate")
        });
    }
    if args.stages.contains(&StageName::Sink) {
        for sink in &config.sinks {
            let deliverer = Deliverer::open(sink, &config.base_dir)?;
            let mut core = SinkCore::new(deliverer);
            let group = format!("{prefix}-sink-{}", sink.name());
            let consumer = client::consumer(&config.kafka, &group, "sink")?;
            consumer
                .subscribe(&[&topics.alerts])
                .context("subscribing to the alerts topic")?;
            let rx = stopped.clone();
            tasks.spawn(async move {
                run_delivery(&consumer, &mut core, rx).await?;
                Ok("sink")
            });
        }
    }
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
