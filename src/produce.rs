//! `chainwatch produce`: telemetry files into a Kafka topic, record by record. It feeds the
//! docker-compose demo and the end-to-end tests the same bytes `replay` reads.
//!
//! Each record is sent and acknowledged before the next (idempotent producer, `acks=all`):
//! this is a demo and test tool, not a bulk loader, and one record per produce request also
//! keeps brokers that misreport watermarks of multi-record batches (Tansu 0.6.0) honest about
//! the topic's end. Stretches of a file that are not JSON records are sent unchanged, so the
//! pipeline dead-letters them as it would a shipper's garbage.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chainwatch_ingest::{FileRecord, split_records};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::cli::ProduceArgs;

/// Sends every record of the files; returns when each is acknowledged.
pub async fn produce(args: &ProduceArgs) -> Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0");
    let flags = crate::topic_source::kafka_from_flags(&args.brokers, &args.options, 1)?;
    for (k, v) in &flags.options {
        config.set(k, v);
    }
    let producer: FutureProducer = config.create().context("creating the producer")?;
    let interval = match args.rate {
        Some(r) if r > 0.0 && r.is_finite() => Some(Duration::from_secs_f64(1.0 / r)),
        Some(r) => bail!("--rate {r}: expected a positive number of records per second"),
        None => None,
    };
    let started = Instant::now();
    let mut sent: u64 = 0;
    for file in crate::replay::collect_files(&args.files)? {
        let data =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let path = file.display().to_string();
        for record in split_records(&path, &data) {
            let bytes = match record {
                FileRecord::Record { bytes, .. } | FileRecord::Bad { bytes, .. } => bytes,
            };
            if let Some(every) = interval {
                let due = started + every.mul_f64(sent as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            producer
                .send(
                    FutureRecord::<(), [u8]>::to(&args.topic).payload(bytes),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| e)
                .with_context(|| {
                    format!("producing record {} of {path} to {}", sent + 1, args.topic)
                })?;
            sent += 1;
        }
    }
    tracing::info!(records = sent, topic = %args.topic, elapsed = ?started.elapsed(), "produced");
    Ok(())
}
