//! The Kafka benchmarks of issue 9 (`scripts/bench-kafka.sh` starts a broker and runs them):
//!
//! - `drain`: end to end throughput. The raw telemetry of a `chainwatch gen` workload is loaded
//!   into tenant topics first (a bulk producer: batched, not acknowledged record by record),
//!   then drained twice: by a plain rdkafka consumer that only counts records, and by
//!   `chainwatch run` (ingest, correlate and sink stages in one process). Each rate is records
//!   over the time from the first record consumed to the last: for the plain consumer, all
//!   records read; for chainwatch, every record consumed, normalized and observed by the
//!   correlator (`chainwatch_records_consumed_total`, `chainwatch_events_normalized_total`,
//!   `chainwatch_correlator_events_total` on `/metrics`, polled every 20 ms).
//! - `latency`: detection latency. `chainwatch run` is started on empty topics; then the
//!   workload is produced at a steady rate (default 10,000 records/s). Each injected chain
//!   (`answers.json`) is completed by the last of its stage records to be produced (the third
//!   when the workload delivers it after the fourth); its latency is from the moment that
//!   record is handed to the producer to the moment a consumer of the alerts topic receives
//!   the chain's complete finding (same host and tenant, not partial). Both clocks are this
//!   process's monotonic clock. The correlate stage's own histogram
//!   (`chainwatch_detection_latency_arrival_seconds`, from the raw record's Kafka timestamp to
//!   the finding being produced) is read from `/metrics` as a cross-check.
//!
//! Each prints one JSON report on stdout (and writes it to `--workdir`). Timings are never
//! asserted anywhere; the figures go to BENCHMARKS.md.
#![allow(clippy::unwrap_used)] // A benchmark tool: a failed unwrap is a failed run.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chainwatch_model::time::utc_offset;
use chainwatch_model::{Alert, Timestamp, wire};
use clap::{Parser, Subcommand};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use support::http::{free_port, http_get};
use support::{client, create_topics};

/// Kafka benchmark driver.
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

/// What every measurement needs.
#[derive(Debug, clap::Args)]
struct Common {
    /// Bootstrap servers of the broker.
    #[arg(long)]
    brokers: String,
    /// The chainwatch binary.
    #[arg(long)]
    binary: PathBuf,
    /// A `chainwatch gen` output folder (`telemetry.<tenant>.windows.jsonl`, `answers.json`).
    #[arg(long)]
    workload: PathBuf,
    /// A folder for the config, chainwatch's log and the report.
    #[arg(long)]
    workdir: PathBuf,
    /// Partitions of every topic (raw topics here, chainwatch's own topics by its config).
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    /// A librdkafka property for chainwatch's clients, `KEY=VALUE` (repeatable): written to
    /// its config's `[kafka.options]`.
    #[arg(short = 'X', long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Load the raw topics, then drain them with a plain consumer and with `chainwatch run`.
    Drain {
        #[command(flatten)]
        common: Common,
    },
    /// Produce at a steady rate into a running `chainwatch run`; time chains to their alerts.
    Latency {
        #[command(flatten)]
        common: Common,
        /// Records per second.
        #[arg(long, default_value_t = 10_000.0)]
        rate: f64,
        /// Also read the raw and events topics (two more consumers polling every 5 ms, a load
        /// on the broker) to time each chain's completing record hop by hop ("hops" in the
        /// report).
        #[arg(long)]
        hops: bool,
        /// The steady producer's `linger.ms`: how long the telemetry shipper batches records
        /// (librdkafka's default, 5, as a shipper built on it batches). Each batch is one
        /// object in Tansu's in-memory store, which every fetch of the partition lists.
        #[arg(long, default_value = "5")]
        linger_ms: String,
    },
}

/// One raw record to produce.
struct Rec {
    topic: usize,
    host: Option<String>,
    bytes: Vec<u8>,
}

/// The workload: raw topics, records in delivery order, and for each chain its key and the
/// index of its completing record.
struct Workload {
    prefix: String,
    topics: Vec<String>,
    records: Vec<Rec>,
    /// (tenant, host lower-cased) of each chain, and the index of the record completing it.
    chains: Vec<((String, String), usize)>,
    /// The event time of each chain's completing record, to find it on the events topic.
    completing_times: Vec<Option<Timestamp>>,
}

fn load_workload(dir: &Path, prefix: &str) -> Result<Workload> {
    let answers: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("answers.json")).context("reading answers.json")?,
    )?;
    let tenants: Vec<String> = answers["tenants"]
        .as_array()
        .context("answers.json: tenants")?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    // (host lower-cased, stage time) -> chain index.
    let mut stages: HashMap<(String, String), usize> = HashMap::new();
    let mut chains = Vec::new();
    for (i, c) in answers["chains"]
        .as_array()
        .context("answers.json: chains")?
        .iter()
        .enumerate()
    {
        let host = c["host"].as_str().context("chain host")?.to_lowercase();
        for t in c["stage_times"].as_array().context("stage_times")? {
            stages.insert((host.clone(), t.as_str().unwrap_or("").to_owned()), i);
        }
        chains.push((
            (c["tenant"].as_str().unwrap_or("").to_owned(), host),
            usize::MAX,
        ));
    }
    let mut per_tenant: Vec<Vec<Vec<u8>>> = Vec::new();
    for t in &tenants {
        let path = dir.join(format!("telemetry.{t}.windows.jsonl"));
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        per_tenant.push(
            text.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect(),
        );
    }
    // Tenants interleaved record by record, each tenant's own order kept.
    let mut records = Vec::new();
    let mut completing_times = vec![None; chains.len()];
    let mut found = 0;
    let longest = per_tenant.iter().map(Vec::len).max().unwrap_or(0);
    let mut iters: Vec<_> = per_tenant.into_iter().map(Vec::into_iter).collect();
    for _ in 0..longest {
        for (topic, it) in iters.iter_mut().enumerate() {
            let Some(bytes) = it.next() else { continue };
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
            let host = v["Hostname"].as_str().map(str::to_owned);
            if let (Some(h), Some(t)) = (&host, v["@timestamp"].as_str())
                && let Some(&c) = stages.get(&(h.to_lowercase(), t.to_owned()))
            {
                chains[c].1 = records.len();
                completing_times[c] = Timestamp::parse_lenient(t, utc_offset()).ok();
                found += 1;
            }
            records.push(Rec { topic, host, bytes });
        }
    }
    if found != stages.len() {
        bail!(
            "found {found} of the {} chain stage records in the workload",
            stages.len()
        );
    }
    Ok(Workload {
        prefix: prefix.to_owned(),
        topics: tenants
            .iter()
            .map(|t| format!("{prefix}.{t}.windows"))
            .collect(),
        records,
        chains,
        completing_times,
    })
}

/// Sends one record, waiting while the producer's queue is full.
fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, r: &Rec) -> Result<()> {
    loop {
        let mut record = BaseRecord::to(topic).payload(&r.bytes[..]);
        if let Some(h) = &r.host {
            record = record.key(h.as_bytes());
        }
        match producer.send::<[u8], [u8]>(record) {
            Ok(()) => return Ok(()),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                _,
            )) => std::thread::sleep(Duration::from_millis(1)),
            Err((e, _)) => bail!("producing: {e}"),
        }
    }
}

/// The sum of every series of metric `name` (labels `want` must appear in the series' labels).
fn metric_sum(body: &str, name: &str, want: &str) -> f64 {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.contains(want))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// CPU seconds (user and system) process `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) start at its closing ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the ')'; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}

/// A running `chainwatch run`.
struct Chainwatch {
    child: Child,
    port: u16,
}

impl Chainwatch {
    fn start(c: &Common, w: &Workload) -> Result<Self> {
        let port = free_port();
        let config = c.workdir.join("chainwatch.toml");
        let playbooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        let mut options = String::from("[kafka.options]\n");
        for o in &c.options {
            let (k, v) = o.split_once('=').context("an option is KEY=VALUE")?;
            options.push_str(&format!("{k:?} = {v:?}\n"));
        }
        std::fs::write(
            &config,
            format!(
                r#"[kafka]
brokers = "{brokers}"
group_prefix = "{prefix}"
partitions = {partitions}
{options}[topics]
events = "{prefix}.events"
alerts = "{prefix}.alerts"
dead_letter = "{prefix}.dead-letter"
roles = "{prefix}.roles"
[[sources]]
name = "windows"
topics = "{prefix}.{{tenant}}.windows"
format = "windows"
[correlate]
rules = ["{playbooks}"]
[[sinks]]
kind = "file"
name = "archive"
path = "{alerts}"
[http]
listen = "127.0.0.1:{port}"
"#,
                brokers = c.brokers,
                prefix = w.prefix,
                partitions = c.partitions,
                playbooks = playbooks.display(),
                alerts = c.workdir.join("alerts.jsonl").display(),
            ),
        )?;
        let log = std::fs::File::create(c.workdir.join("chainwatch.log"))?;
        let child = Command::new(&c.binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting chainwatch")?;
        Ok(Self { child, port })
    }

    fn metrics(&mut self) -> Result<String> {
        if let Some(status) = self.child.try_wait()? {
            bail!("chainwatch exited ({status}); see its log in the work folder");
        }
        Ok(http_get(self.port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default())
    }

    fn stop(mut self) -> Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

/// Loads every record into the raw topics as fast as the broker takes them.
fn bulk_load(brokers: &str, w: &Workload) -> Result<f64> {
    let producer: ThreadedProducer<DefaultProducerContext> = client(brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "0")
        .create()?;
    let started = Instant::now();
    for r in &w.records {
        send(&producer, &w.topics[r.topic], r)?;
    }
    producer.flush(Duration::from_secs(600))?;
    Ok(started.elapsed().as_secs_f64())
}

/// A plain consumer reading every record of the raw topics: (records, seconds from the first
/// record to the last). Its one setting beyond librdkafka's defaults is chainwatch's fetch
/// wait (`fetch_wait_ms`): Tansu holds every fetch for (half) that long, so with librdkafka's
/// 500 ms the broker's pacing, not the consumer, would set the rate being compared.
fn plain_drain(brokers: &str, w: &Workload, fetch_wait_ms: &str) -> Result<(u64, f64)> {
    let consumer: BaseConsumer = client(brokers)
        .set("fetch.wait.max.ms", fetch_wait_ms)
        .set("group.id", format!("{}-plain", w.prefix))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let topics: Vec<&str> = w.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let want = w.records.len() as u64;
    let (mut n, mut bytes) = (0u64, 0usize);
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(900);
    while n < want {
        if Instant::now() > deadline {
            bail!("the plain consumer read {n} of {want} records in 15 minutes");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            first.get_or_insert_with(Instant::now);
            bytes += m.payload().map_or(0, <[u8]>::len);
            n += 1;
        }
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    eprintln!("[kafka_bench] plain consumer: {n} records, {bytes} bytes in {secs:.2} s");
    Ok((n, secs))
}

fn drain(c: &Common) -> Result<serde_json::Value> {
    let w = load_workload(&c.workload, &prefix("drain"))?;
    let n = w.records.len() as u64;
    create_topics(&c.brokers, &w.topics, c.partitions)?;
    let load = bulk_load(&c.brokers, &w)?;
    eprintln!("[kafka_bench] loaded {n} records in {load:.2} s");

    let cpu0 = cpu_seconds(std::process::id());
    let fetch_wait = c
        .options
        .iter()
        .filter_map(|o| o.strip_prefix("fetch.wait.max.ms="))
        .next_back()
        .unwrap_or(chainwatch_kafka::client::DEFAULT_FETCH_WAIT_MAX_MS);
    let (_, plain_secs) = plain_drain(&c.brokers, &w, fetch_wait)?;
    let plain_cpu = cpu_seconds(std::process::id()) - cpu0;

    let started = Instant::now();
    let mut cw = Chainwatch::start(c, &w)?;
    let mut first = None;
    let deadline = started + Duration::from_secs(1800);
    let (secs, alerts) = loop {
        let m = cw.metrics()?;
        let consumed = metric_sum(&m, "chainwatch_records_consumed_total", "");
        let normalized = metric_sum(&m, "chainwatch_events_normalized_total", "");
        let dead = metric_sum(&m, "chainwatch_dead_letters_total", "stage=\"ingest\"");
        let observed = metric_sum(&m, "chainwatch_correlator_events_total", "");
        if consumed > 0.0 {
            first.get_or_insert_with(Instant::now);
        }
        if consumed >= n as f64 && normalized + dead >= n as f64 && observed >= normalized {
            let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            break (secs, metric_sum(&m, "chainwatch_alerts_total", ""));
        }
        if Instant::now() > deadline {
            bail!(
                "chainwatch did not drain {n} records in 30 minutes (consumed {consumed}, normalized {normalized}, observed {observed})"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let with_start = started.elapsed().as_secs_f64();
    let cw_cpu = cpu_seconds(cw.child.id());
    let handed = handoff(&cw.metrics()?);
    cw.stop()?;
    let plain_rate = n as f64 / plain_secs;
    let cw_rate = n as f64 / secs;
    Ok(serde_json::json!({
        "records": n,
        "bytes": w.records.iter().map(|r| r.bytes.len()).sum::<usize>(),
        "topics": w.topics.len(),
        "partitions": c.partitions,
        "load_seconds": load,
        "plain_seconds": plain_secs,
        "plain_fetch_wait_max_ms": fetch_wait,
        "plain_rate": plain_rate,
        "chainwatch_seconds": secs,
        "chainwatch_seconds_with_startup": with_start,
        "chainwatch_rate": cw_rate,
        "plain_cpu_seconds": plain_cpu,
        "chainwatch_cpu_seconds": cw_cpu,
        "ratio": cw_rate / plain_rate,
        "alerts_produced": alerts,
        "chains": w.chains.len(),
        "handoff": handed,
    }))
}

/// The correlator's handoff counters (`chainwatch_kafka_handoff_records_total`), by outcome.
fn handoff(m: &str) -> serde_json::Value {
    let outcomes = ["handed", "full", "taken", "passed", "stale", "skipped"];
    outcomes
        .iter()
        .map(|o| {
            let n = metric_sum(
                m,
                "chainwatch_kafka_handoff_records_total",
                &format!("outcome=\"{o}\""),
            );
            ((*o).to_owned(), serde_json::json!(n))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn latency(c: &Common, rate: f64, probe: bool, linger_ms: &str) -> Result<serde_json::Value> {
    let w = load_workload(&c.workload, &prefix("latency"))?;
    create_topics(&c.brokers, &w.topics, c.partitions)?;
    let mut cw = Chainwatch::start(c, &w)?;
    // Ready: every stage started and holding partitions.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = http_get(cw.port, "/readyz").is_some_and(|(s, _)| s == 200);
        let m = cw.metrics()?;
        let ingest = metric_sum(
            &m,
            "chainwatch_kafka_assigned_partitions",
            &format!("{}-ingest", w.prefix),
        );
        let correlate = metric_sum(
            &m,
            "chainwatch_kafka_assigned_partitions",
            &format!("{}-correlate", w.prefix),
        );
        if ready && ingest > 0.0 && correlate > 0.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("chainwatch was not ready in 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // The alerts topic's reader: arrival time of each chain's complete finding.
    let alerts_topic = format!("{}.alerts", w.prefix);
    let consumer: BaseConsumer = client(&c.brokers)
        .set("group.id", format!("{}-latency-reader", w.prefix))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let md = consumer.fetch_metadata(Some(&alerts_topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(&alerts_topic, p.id(), Offset::Beginning)?;
        }
    }
    if tpl.count() == 0 {
        bail!("{alerts_topic} has no partitions");
    }
    consumer.assign(&tpl)?;
    let keys: HashMap<(String, String), usize> = w
        .chains
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.clone(), i))
        .collect();
    let chains = w.chains.len();
    let done = Arc::new(AtomicBool::new(false));
    let probes = if probe {
        Some((
            raw_reader(c, &w, done.clone())?,
            events_reader(c, &w, done.clone())?,
        ))
    } else {
        None
    };
    let reader = {
        let done = done.clone();
        std::thread::spawn(move || -> Result<Vec<Option<(Instant, Hop)>>> {
            let mut got: Vec<Option<(Instant, Hop)>> = vec![None; chains];
            let mut left = chains;
            while left > 0 && !done.load(Ordering::Relaxed) {
                let Some(m) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let at = Instant::now();
                let at_wall = wall_ms();
                let m = m?;
                let a: Alert = serde_json::from_slice(m.payload().unwrap_or_default())
                    .context("an alert on the topic")?;
                if a.partial {
                    continue;
                }
                let key = (a.tenant.to_string(), a.host.to_string().to_lowercase());
                if let Some(&i) = keys.get(&key)
                    && got[i].is_none()
                {
                    got[i] = Some((at, Hop::of(&m, at_wall)));
                    left -= 1;
                }
            }
            Ok(got)
        })
    };

    // The steady producer.
    let producer: ThreadedProducer<DefaultProducerContext> = client(&c.brokers)
        .set("linger.ms", linger_ms)
        .set("message.timeout.ms", "0")
        .create()?;
    let completing: HashMap<usize, usize> = w
        .chains
        .iter()
        .enumerate()
        .map(|(i, (_, r))| (*r, i))
        .collect();
    let mut sent_at: Vec<Option<Instant>> = vec![None; chains];
    let mut sent_wall: Vec<Option<i64>> = vec![None; chains];
    let every = Duration::from_secs_f64(1.0 / rate);
    let cpu0 = cpu_seconds(cw.child.id());
    let started = Instant::now();
    let mut behind_max = Duration::ZERO;
    for (i, r) in w.records.iter().enumerate() {
        let due = started + every.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            behind_max = behind_max.max(now - due);
        }
        if let Some(&chain) = completing.get(&i) {
            sent_at[chain] = Some(Instant::now());
            sent_wall[chain] = Some(wall_ms());
        }
        send(&producer, &w.topics[r.topic], r)?;
    }
    let produce_secs = started.elapsed().as_secs_f64();
    producer.flush(Duration::from_secs(60))?;
    eprintln!(
        "[kafka_bench] produced {} records in {produce_secs:.2} s (at most {:?} behind schedule)",
        w.records.len(),
        behind_max
    );
    // Every finding should be there within seconds of the last record; stop waiting after 60.
    let wait_until = Instant::now() + Duration::from_secs(60);
    while !reader.is_finished() && Instant::now() < wait_until {
        std::thread::sleep(Duration::from_millis(100));
    }
    done.store(true, Ordering::Relaxed);
    let got = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let hops = match probes {
        Some((raw, events)) => {
            let raw = raw
                .join()
                .map_err(|_| anyhow::anyhow!("raw reader panicked"))??;
            let events = events
                .join()
                .map_err(|_| anyhow::anyhow!("events reader panicked"))??;
            hops(&sent_wall, &raw, &events, &got)
        }
        None => serde_json::Value::Null,
    };
    let got: Vec<Option<Instant>> = got.iter().map(|g| g.map(|(at, _)| at)).collect();
    let m = cw.metrics()?;
    let cw_cpu = cpu_seconds(cw.child.id()) - cpu0;
    cw.stop()?;

    // (seconds into the run the chain completed, latency in ms), in completion order.
    let mut timeline: Vec<(f64, f64)> = sent_at
        .iter()
        .zip(&got)
        .filter_map(|(s, g)| {
            let (s, g) = ((*s)?, (*g)?);
            Some((
                s.duration_since(started).as_secs_f64(),
                g.duration_since(s).as_secs_f64() * 1000.0,
            ))
        })
        .collect();
    timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut ms: Vec<f64> = timeline.iter().map(|t| t.1).collect();
    ms.sort_by(f64::total_cmp);
    let missing = chains - ms.len();
    let pct = |p: f64| -> f64 {
        if ms.is_empty() {
            return f64::NAN;
        }
        // Nearest rank.
        let rank = ((p / 100.0) * ms.len() as f64).ceil().max(1.0) as usize;
        ms[rank.min(ms.len()) - 1]
    };
    // The correlate stage's own histogram (arrival in Kafka to the finding produced).
    let hist = "chainwatch_detection_latency_arrival_seconds";
    let count = metric_sum(&m, &format!("{hist}_count"), "");
    let within = |le: &str| metric_sum(&m, &format!("{hist}_bucket"), &format!("le=\"{le}\""));
    Ok(serde_json::json!({
        "records": w.records.len(),
        "rate_target": rate,
        "rate_achieved": w.records.len() as f64 / produce_secs,
        "chainwatch_cpu_seconds": cw_cpu,
        "max_behind_schedule_ms": behind_max.as_secs_f64() * 1000.0,
        "chains": chains,
        "chains_timed": ms.len(),
        "chains_missing": missing,
        "p50_ms": pct(50.0),
        "p90_ms": pct(90.0),
        "p99_ms": pct(99.0),
        "max_ms": ms.last().copied().unwrap_or(f64::NAN),
        "histogram_findings": count,
        "histogram_within_100ms": within("0.1"),
        "histogram_within_250ms": within("0.25"),
        "histogram_within_500ms": within("0.5"),
        "histogram_buckets": m
            .lines()
            .filter(|l| l.starts_with(&format!("{hist}_bucket")))
            .collect::<Vec<_>>(),
        "timeline_s_ms": timeline,
        "hops": hops,
        "handoff": handoff(&m),
    }))
}

/// Wall-clock milliseconds since the Unix epoch (the clock of Kafka's record timestamps).
fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A record read by the driver: its Kafka timestamp (set by the producer that wrote it, when
/// the broker keeps create times) and the wall-clock time it was received here.
#[derive(Debug, Clone, Copy)]
struct Hop {
    /// Record timestamp, ms; `None` when the record has none.
    stamped: Option<i64>,
    /// `true` when the broker replaced it by its own append time.
    log_append: bool,
    received: i64,
}

impl Hop {
    fn of<M: Message>(m: &M, received: i64) -> Self {
        let (stamped, log_append) = match m.timestamp() {
            rdkafka::Timestamp::CreateTime(t) => (Some(t), false),
            rdkafka::Timestamp::LogAppendTime(t) => (Some(t), true),
            rdkafka::Timestamp::NotAvailable => (None, false),
        };
        Self {
            stamped,
            log_append,
            received,
        }
    }
}

/// A reader of the events topic (through `wire::decode_event`, as every reader of it): for each
/// chain, its completing record's normalized event as
/// ingest produced it ([`Hop`]), found by tenant, host and event time.
fn events_reader(
    c: &Common,
    w: &Workload,
    done: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<Vec<Option<Hop>>>>> {
    let consumer = assigned_reader(
        c,
        &format!("{}-events-reader", w.prefix),
        &[format!("{}.events", w.prefix)],
    )?;
    let keys: HashMap<(String, String, Timestamp), usize> = w
        .chains
        .iter()
        .zip(&w.completing_times)
        .enumerate()
        .filter_map(|(i, (((t, h), _), time))| Some(((t.clone(), h.clone(), (*time)?), i)))
        .collect();
    let wanted = keys.len();
    Ok(spawn_hop_reader(
        consumer,
        w.chains.len(),
        wanted,
        done,
        move |payload, encoding| {
            let e = wire::decode_event(payload, encoding).ok()?;
            let key = (
                e.tenant.to_string(),
                e.host.display().to_lowercase(),
                e.time,
            );
            keys.get(&key).copied()
        },
    ))
}

/// Reads `consumer` on a thread until `wanted` chains are seen (or `done`): for each chain, the
/// [`Hop`] of the first record whose payload (with its encoding header) `chain_of` maps to it.
fn spawn_hop_reader(
    consumer: BaseConsumer,
    chains: usize,
    wanted: usize,
    done: Arc<AtomicBool>,
    chain_of: impl Fn(&[u8], Option<&[u8]>) -> Option<usize> + Send + 'static,
) -> std::thread::JoinHandle<Result<Vec<Option<Hop>>>> {
    std::thread::spawn(move || {
        let mut got: Vec<Option<Hop>> = vec![None; chains];
        let mut left = wanted;
        while left > 0 && !done.load(Ordering::Relaxed) {
            let Some(m) = consumer.poll(Duration::from_millis(50)) else {
                continue;
            };
            let at = wall_ms();
            let m = m?;
            let encoding = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == wire::ENCODING_HEADER)
                    .and_then(|h| h.value)
            });
            if let Some(i) = chain_of(m.payload().unwrap_or_default(), encoding)
                && got[i].is_none()
            {
                got[i] = Some(Hop::of(&m, at));
                left -= 1;
            }
        }
        Ok(got)
    })
}

/// A consumer assigned to every partition of `topics` from the beginning, polling the broker
/// every 5 ms (`fetch.wait.max.ms`) so that what it reads is timed close to the moment the
/// broker has it.
fn assigned_reader(c: &Common, group: &str, topics: &[String]) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = client(&c.brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    if tpl.count() == 0 {
        bail!("{topics:?} have no partitions");
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// A reader of the raw topics: for each chain, its completing record ([`Hop`]: when the broker
/// let a consumer have it), found by its bytes.
fn raw_reader(
    c: &Common,
    w: &Workload,
    done: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<Vec<Option<Hop>>>>> {
    let consumer = assigned_reader(c, &format!("{}-raw-reader", w.prefix), &w.topics)?;
    let keys: HashMap<Vec<u8>, usize> = w
        .chains
        .iter()
        .enumerate()
        .map(|(i, (_, r))| (w.records[*r].bytes.clone(), i))
        .collect();
    let wanted = keys.len();
    Ok(spawn_hop_reader(
        consumer,
        w.chains.len(),
        wanted,
        done,
        move |payload, _| keys.get(payload).copied(),
    ))
}

/// Where each chain's latency went, from the Kafka timestamps of its completing event (on the
/// events topic) and of its finding (on the alerts topic) and the driver's wall clock:
/// percentiles of each hop over the chains seen on both topics.
fn hops(
    sent: &[Option<i64>],
    raw: &[Option<Hop>],
    events: &[Option<Hop>],
    alerts: &[Option<(Instant, Hop)>],
) -> serde_json::Value {
    let mut spans: [(&str, Vec<f64>); 7] = [
        ("raw_sent_to_raw_read_ms", Vec::new()),
        ("raw_read_to_event_produced_ms", Vec::new()),
        ("raw_sent_to_event_produced_ms", Vec::new()),
        ("event_produced_to_event_read_ms", Vec::new()),
        ("event_produced_to_finding_produced_ms", Vec::new()),
        ("finding_produced_to_finding_read_ms", Vec::new()),
        ("raw_sent_to_finding_read_ms", Vec::new()),
    ];
    let mut log_append = false;
    for (((s, r), e), a) in sent.iter().zip(raw).zip(events).zip(alerts) {
        let (Some(s), Some(r), Some(e), Some((_, a))) = (s, r, e, a) else {
            continue;
        };
        let (Some(es), Some(as_)) = (e.stamped, a.stamped) else {
            continue;
        };
        log_append |= e.log_append || a.log_append;
        let spans_ms = [
            r.received - s,
            es - r.received,
            es - s,
            e.received - es,
            as_ - es,
            a.received - as_,
            a.received - s,
        ];
        for (i, v) in spans_ms.into_iter().enumerate() {
            spans[i].1.push(v as f64);
        }
    }
    let mut out = serde_json::Map::new();
    out.insert("log_append_time".into(), log_append.into());
    for (name, mut v) in spans {
        v.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
            v[rank.min(v.len()) - 1]
        };
        out.insert(
            name.into(),
            serde_json::json!({"n": v.len(), "p50": pct(50.0), "p90": pct(90.0), "p99": pct(99.0)}),
        );
    }
    out.into()
}

/// A topic prefix unique to this run.
fn prefix(what: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("kb{what}{secs}")
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (Cmd::Drain { common } | Cmd::Latency { common, .. }) = &args.command;
    std::fs::create_dir_all(&common.workdir)?;
    let (common, report, name) = match &args.command {
        Cmd::Drain { common } => (common, drain(common)?, "drain"),
        Cmd::Latency {
            common,
            rate,
            hops,
            linger_ms,
        } => (common, latency(common, *rate, *hops, linger_ms)?, "latency"),
    };
    let text = serde_json::to_string_pretty(&report)?;
    std::fs::write(common.workdir.join(format!("{name}.json")), &text)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
