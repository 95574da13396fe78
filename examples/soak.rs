//! The soak test's driver (`scripts/soak.sh` starts a broker and runs it): telemetry pushed for
//! minutes into tenant topics while chainwatch instances are killed (`kill -9`) and stopped
//! (SIGTERM) and started again, then the alert ids on the alert topic compared with a
//! `chainwatch replay` of the same records. Lost or unexpected ids must be 0; copies of a
//! finding written twice (at-least-once redelivery, same id and revision) are counted, and so
//! is the peak memory of the instances.
//!
//! Input: files given on the command line (the tenant of each is its file name up to the first
//! dot: `acme.jsonl`, `acme.2.jsonl.gz`; `chainwatch gen` writes such files), produced once at
//! `--rate`; without files, the bundled sample over `--tenants` tenants, round after round for
//! `--minutes`, each round's hosts renamed and its times moved 8 days on, so every round is new
//! evidence and rounds never join (the longest playbook window is 7 days).
//!
//! Tansu 0.6.0 (the test broker) needs two settings here: one record per batch, so partition
//! ends read from watermarks are exact, and static group membership (`group.instance.id`), since
//! it never hands a killed member's partitions to another member; a restarted instance takes
//! its own back. See ARCHITECTURE.md, "Test infrastructure notes".
#![allow(clippy::unwrap_used)] // A test tool: a failed unwrap is a failed run.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chainwatch_ingest::{FileRecord, split_records};
use chainwatch_model::Alert;
use clap::Parser;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use support::{client, create_topics};

/// Soak test driver.
#[derive(Debug, Parser)]
struct Args {
    /// Bootstrap servers of the broker.
    #[arg(long)]
    brokers: String,
    /// The chainwatch binary.
    #[arg(long)]
    binary: PathBuf,
    /// A folder for configs, logs, inputs and the report.
    #[arg(long)]
    workdir: PathBuf,
    /// How long to push telemetry and inject faults.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// chainwatch instances (each runs ingest and correlate).
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Tenants the bundled sample is replicated over (without input files).
    #[arg(long, default_value_t = 4)]
    tenants: usize,
    /// Records per second, over all tenants.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds between faults (a kill -9 or a SIGTERM of a random instance).
    #[arg(long, default_value_t = 45)]
    fault_every: u64,
    /// Telemetry files (JSON lines, ...; tenant = file name up to the first dot).
    files: Vec<PathBuf>,
}

/// One chainwatch instance.
struct Instance {
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    peak_rss_kb: u64,
}

impl Instance {
    fn start(&mut self, binary: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(binary)
            .args(["run", "--stages", "ingest,correlate", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,librdkafka=warn,rdkafka=warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting chainwatch")?;
        self.child = Some(child);
        Ok(())
    }

    /// Reads the instance's memory: its current and peak resident set (kB).
    fn sample(&mut self) {
        let Some(c) = &self.child else { return };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", c.id())) else {
            return;
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("VmHWM:")
                .or_else(|| line.strip_prefix("VmRSS:"))
            {
                let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                self.peak_rss_kb = self.peak_rss_kb.max(kb);
            }
        }
    }

    fn stop(&mut self, kill: bool) {
        self.sample();
        if let Some(mut c) = self.child.take() {
            if kill {
                let _ = c.kill();
            } else {
                let _ = Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
            }
            let _ = c.wait();
        }
    }
}

fn tenant_of(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let stem = name.as_deref().unwrap_or("default");
    let t: String = stem
        .split('.')
        .next()
        .unwrap_or("default")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    if t.is_empty() { "default".into() } else { t }
}

/// The bundled sample's records as round `round` writes them: hosts renamed, times moved on.
fn round_of(sample: &[serde_json::Value], round: u64) -> Vec<Vec<u8>> {
    let shift = chrono_days(8 * round);
    sample
        .iter()
        .map(|v| {
            let mut v = v.clone();
            if let Some(host) = v.get("Hostname").and_then(|h| h.as_str()) {
                let (short, domain) = host.split_once('.').unwrap_or((host, ""));
                let renamed = if domain.is_empty() {
                    format!("{short}-R{round}")
                } else {
                    format!("{short}-R{round}.{domain}")
                };
                v["Hostname"] = serde_json::json!(renamed);
            }
            if let Some(t) = v.get("@timestamp").and_then(|t| t.as_str())
                && let Some(moved) = move_time(t, shift)
            {
                v["@timestamp"] = serde_json::json!(moved);
            }
            serde_json::to_vec(&v).unwrap()
        })
        .collect()
}

/// The host a record names (`Hostname`, else `Computer`), to key it by.
fn host_of(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    ["Hostname", "Computer"]
        .iter()
        .find_map(|k| v.get(*k)?.as_str().map(str::to_owned))
}

fn chrono_days(days: u64) -> i64 {
    i64::try_from(days).unwrap_or(0) * 86_400_000
}

/// An RFC 3339 UTC time (`2026-11-20T01:00:05.685Z`) moved by `ms`.
fn move_time(text: &str, ms: i64) -> Option<String> {
    let t = chainwatch_model::Timestamp::parse_lenient(
        text,
        chainwatch_model::time::FixedOffset::east_opt(0)?,
    )
    .ok()?;
    let moved = chainwatch_model::Timestamp::from_millis(t.as_millis() + ms);
    serde_json::to_value(moved)
        .ok()?
        .as_str()
        .map(str::to_owned)
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// Partition ends (high watermarks: exact with one record per batch).
fn ends(consumer: &BaseConsumer, topic: &str) -> Result<HashMap<i32, i64>> {
    let mut out = HashMap::new();
    for p in partitions(consumer, topic)? {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        out.insert(p, high);
    }
    Ok(out)
}

/// How far `group` is behind the ends of `topics` (records).
fn behind(brokers: &str, group: &str, topics: &[String]) -> Result<i64> {
    let consumer: BaseConsumer = client(brokers).set("group.id", group).create()?;
    let mut total = 0;
    for t in topics {
        let ends = ends(&consumer, t)?;
        let mut tpl = TopicPartitionList::new();
        for p in ends.keys() {
            tpl.add_partition(t, *p);
        }
        let done = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        for e in done.elements() {
            let at = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            total += (ends[&e.partition()] - at).max(0);
        }
    }
    Ok(total)
}

/// Every record of `topic`, to the partition ends.
fn read_all(brokers: &str, topic: &str) -> Result<Vec<Vec<u8>>> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", format!("soak-reader-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()?;
    let ends = ends(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut next: HashMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while ends.iter().any(|(p, end)| next[p] < *end) {
        if Instant::now() > deadline {
            bail!("could not read {topic} to its end");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(500)) {
            let m = m?;
            next.insert(m.partition(), m.offset() + 1);
            if m.offset() < ends[&m.partition()] {
                out.push(m.payload().unwrap_or_default().to_vec());
            }
        }
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(args.workdir.join("input"))?;
    let prefix = format!(
        "soak{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let raw_topic = |t: &str| format!("{prefix}.{t}.windows");

    // The input: files, or the sample's rounds.
    let mut given: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for f in &args.files {
        let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let data = if f.extension().is_some_and(|e| e == "gz") {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2_reader(&data), &mut out)?;
            out
        } else {
            data
        };
        let records = given.entry(tenant_of(f)).or_default();
        for r in split_records(f.display().to_string(), &data) {
            let (FileRecord::Record { bytes, .. } | FileRecord::Bad { bytes, .. }) = r;
            records.push(bytes.to_vec());
        }
    }
    let sample: Vec<serde_json::Value> = {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/exchange-intrusion.jsonl");
        std::fs::read_to_string(path)?
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let tenants: Vec<String> = if given.is_empty() {
        (1..=args.tenants).map(|i| format!("tenant-{i}")).collect()
    } else {
        given.keys().cloned().collect()
    };
    let raw: Vec<String> = tenants.iter().map(|t| raw_topic(t)).collect();
    create_topics(&args.brokers, &raw, 2)?;

    // The instances: the same pipeline, each its own static group member and HTTP port.
    let mut instances: Vec<Instance> = Vec::new();
    for i in 0..args.instances {
        let config = args.workdir.join(format!("chainwatch-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"[kafka]
brokers = "{brokers}"
group_prefix = "{prefix}"
partitions = 3
[kafka.options]
"batch.num.messages" = "1"
"group.instance.id" = "{prefix}-{i}"
[topics]
events = "{prefix}.events"
alerts = "{prefix}.alerts"
dead_letter = "{prefix}.dead-letter"
[[sources]]
name = "windows"
topics = "{prefix}.{{tenant}}.windows"
format = "windows"
[correlate]
rules = ["{playbooks}"]
[http]
listen = "127.0.0.1:0"
[shutdown]
timeout = "20s"
"#,
                brokers = args.brokers,
                playbooks = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("playbooks")
                    .display(),
            ),
        )?;
        let mut inst = Instance {
            config,
            log: args.workdir.join(format!("chainwatch-{i}.log")),
            child: None,
            peak_rss_kb: 0,
        };
        inst.start(&args.binary)?;
        instances.push(inst);
    }

    let producer: ThreadedProducer<DefaultProducerContext> = client(&args.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("batch.num.messages", "1")
        .set("message.timeout.ms", "0")
        .create()?;
    let mut files: HashMap<String, std::io::BufWriter<std::fs::File>> = HashMap::new();
    for t in &tenants {
        let f = std::fs::File::create(args.workdir.join("input").join(format!("{t}.jsonl")))?;
        files.insert(t.clone(), std::io::BufWriter::new(f));
    }

    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let every = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let mut sent: u64 = 0;
    let (mut kills, mut stops) = (0u32, 0u32);
    let mut next_fault = started + Duration::from_secs(args.fault_every);
    let mut next_sample = started;
    let mut down: Option<(usize, Instant)> = None;
    let mut rng = fastrand::Rng::with_seed(0x50a6);
    // The queue of records to send: (tenant, bytes), refilled round by round.
    let mut queue: std::collections::VecDeque<(String, Vec<u8>)> = given
        .iter()
        .flat_map(|(t, rs)| rs.iter().map(move |r| (t.clone(), r.clone())))
        .collect();
    let mut round = 0u64;
    loop {
        let now = Instant::now();
        let in_window = now < started + duration;
        // The sample is pushed for the whole window; files once, however long that takes.
        let producing = if given.is_empty() {
            in_window
        } else {
            !queue.is_empty()
        };
        if !producing && !in_window && down.is_none() {
            break;
        }
        if now >= next_sample {
            for inst in &mut instances {
                inst.sample();
            }
            next_sample = now + Duration::from_secs(1);
        }
        // Faults: one instance down at a time, back after a few seconds.
        if let Some((i, until)) = down {
            if now >= until {
                instances[i].start(&args.binary)?;
                down = None;
                next_fault = now + Duration::from_secs(args.fault_every);
            }
        } else if now >= next_fault && in_window {
            let i = rng.usize(..instances.len());
            let kill = rng.f64() < 0.7;
            instances[i].stop(kill);
            if kill {
                kills += 1;
            } else {
                stops += 1;
            }
            eprintln!(
                "[soak] {:>6.0}s: {} instance {i}",
                started.elapsed().as_secs_f64(),
                if kill { "kill -9" } else { "SIGTERM" }
            );
            down = Some((i, now + Duration::from_secs(rng.u64(2..=8))));
        }
        if !producing {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        if queue.is_empty() {
            round += 1;
            for t in &tenants {
                for r in round_of(&sample, round) {
                    queue.push_back((t.clone(), r));
                }
            }
        }
        let due = started + every.mul_f64(sent as f64);
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        let Some((tenant, bytes)) = queue.pop_front() else {
            continue;
        };
        let topic = raw_topic(&tenant);
        // Keyed by host, as shippers do, so a host's records keep their order: a finding's id
        // comes from the first stage hit it sees, and the replay sees the file's order.
        let host = host_of(&bytes);
        loop {
            let mut record = BaseRecord::to(&topic).payload(&bytes[..]);
            if let Some(h) = &host {
                record = record.key(h.as_bytes());
            }
            match producer.send::<[u8], [u8]>(record) {
                Ok(()) => break,
                Err((e, _)) => {
                    if !matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ) {
                        bail!("producing: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let f = files.get_mut(&tenant).unwrap();
        f.write_all(&bytes)?;
        f.write_all(b"\n")?;
        sent += 1;
    }
    producer.flush(Duration::from_secs(600))?;
    for f in files.values_mut() {
        f.flush()?;
    }
    let pushed = started.elapsed();
    eprintln!("[soak] pushed {sent} records in {pushed:?}; waiting for the pipeline to catch up");

    // Caught up: ingest committed every raw record, correlate every event.
    let events = vec![format!("{prefix}.events")];
    let caught = Instant::now();
    loop {
        for inst in &mut instances {
            inst.sample();
        }
        let b = behind(&args.brokers, &format!("{prefix}-ingest"), &raw)?
            + behind(&args.brokers, &format!("{prefix}-correlate"), &events)?;
        if b == 0 {
            break;
        }
        if caught.elapsed() > Duration::from_secs(1800) {
            bail!("the pipeline did not catch up in 30 minutes ({b} records behind)");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let catch_up = caught.elapsed();
    for inst in &mut instances {
        inst.stop(false);
    }

    // What the alert topic holds, against a replay of the same records.
    let mut copies: BTreeMap<(String, u32), u32> = BTreeMap::new();
    for payload in read_all(&args.brokers, &format!("{prefix}.alerts"))? {
        let a: Alert = serde_json::from_slice(&payload).context("an alert on the topic")?;
        *copies.entry((a.id.to_string(), a.revision)).or_default() += 1;
    }
    let mut expected: BTreeSet<(String, u32)> = BTreeSet::new();
    for t in &tenants {
        let out = Command::new(&args.binary)
            .args(["replay", "--output", "json", "--tenant", t])
            .arg(args.workdir.join("input").join(format!("{t}.jsonl")))
            .output()?;
        if !out.status.success() {
            bail!("replay failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        for l in String::from_utf8(out.stdout)?.lines() {
            let a: Alert = serde_json::from_str(l)?;
            expected.insert((a.id.to_string(), a.revision));
        }
    }
    let got: BTreeSet<(String, u32)> = copies.keys().cloned().collect();
    let ids = |s: &BTreeSet<(String, u32)>| -> BTreeSet<String> {
        s.iter().map(|(i, _)| i.clone()).collect()
    };
    let (want_ids, got_ids) = (ids(&expected), ids(&got));
    let lost: Vec<&String> = want_ids.difference(&got_ids).collect();
    let unexpected: Vec<&String> = got_ids.difference(&want_ids).collect();
    let lost_versions = expected.difference(&got).count();
    let unexpected_versions = got.difference(&expected).count();
    let repeated: u32 = copies.values().map(|n| n - 1).sum();
    let restores: usize = instances
        .iter()
        .map(|i| {
            std::fs::read_to_string(&i.log)
                .unwrap_or_default()
                .matches("partition state restored")
                .count()
        })
        .sum();
    let peak: Vec<u64> = instances.iter().map(|i| i.peak_rss_kb).collect();
    let report = serde_json::json!({
        "records": sent,
        "tenants": tenants.len(),
        "instances": args.instances,
        "push_seconds": pushed.as_secs_f64(),
        "catch_up_seconds": catch_up.as_secs_f64(),
        "kills": kills,
        "sigterms": stops,
        "state_restores": restores,
        "findings_expected": want_ids.len(),
        "finding_versions_expected": expected.len(),
        "alert_records": copies.values().sum::<u32>(),
        "lost_ids": lost.len(),
        "unexpected_ids": unexpected.len(),
        "lost_versions": lost_versions,
        "unexpected_versions": unexpected_versions,
        "repeated_records": repeated,
        "peak_rss_kb": peak,
        "lost_examples": lost.iter().take(10).collect::<Vec<_>>(),
        "unexpected_examples": unexpected.iter().take(10).collect::<Vec<_>>(),
    });
    std::fs::write(
        args.workdir.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !lost.is_empty() || !unexpected.is_empty() || lost_versions > 0 {
        bail!(
            "findings lost or unexpected: see {}",
            args.workdir.join("report.json").display()
        );
    }
    Ok(())
}

fn flate2_reader(data: &[u8]) -> flate2::read::MultiGzDecoder<&[u8]> {
    flate2::read::MultiGzDecoder::new(data)
}
