//! Shared helpers for the end-to-end tests: the broker, unique names, topics, producing and
//! consuming records, a running chainwatch process, and fixtures.
#![allow(dead_code)]

pub mod http;
pub mod receiver;
pub mod shared;
pub mod tansu;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use chainwatch_model::{Event, wire};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// The broker the tests talk to. Tests need a real Kafka-API broker: `scripts/test.sh` starts
/// Tansu and sets this variable. Missing is a failure, never a skip.
pub fn brokers() -> String {
    std::env::var("CHAINWATCH_TEST_BROKERS").unwrap_or_else(|_| {
        panic!(
            "CHAINWATCH_TEST_BROKERS is not set: these tests need a running Kafka-API broker. \
             Run the whole suite with `bash scripts/test.sh`, which installs and starts Tansu."
        )
    })
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}x{:x}x{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn config() -> ClientConfig {
    config_on(&brokers())
}

fn config_on(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Creates topics with `partitions` partitions each.
pub async fn create_topics(topics: &[&str], partitions: i32) {
    create_topics_on(&brokers(), topics, partitions).await;
}

/// [`create_topics`] on the broker at `brokers`.
pub async fn create_topics_on(brokers: &str, topics: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> =
        config_on(brokers).create().expect("admin client");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topics")
    {
        r.expect("topic created");
    }
}

/// Produces `(key, payload)` records to `topic`, each acknowledged before returning.
pub async fn produce(topic: &str, records: &[(String, Vec<u8>)]) {
    produce_on(&brokers(), topic, records).await;
}

/// [`produce`] on the broker at `brokers`.
pub async fn produce_on(brokers: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = config_on(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    for (key, payload) in records {
        producer
            .send(
                FutureRecord::to(topic).key(key).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("record acknowledged");
    }
}

/// A record to produce with headers and, optionally, its timestamp (milliseconds).
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(&'static str, Vec<u8>)>,
    pub timestamp: Option<i64>,
}

/// Produces `records` to `topic` in order, each acknowledged before the next is sent (one
/// record per batch).
pub async fn produce_outgoing(topic: &str, records: &[Outgoing]) {
    let producer: FutureProducer = config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("batch.num.messages", "1")
        .create()
        .expect("producer");
    for r in records {
        let mut headers = OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = FutureRecord::to(topic)
            .key(&r.key)
            .payload(&r.payload)
            .headers(headers);
        if let Some(ms) = r.timestamp {
            record = record.timestamp(ms);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("record acknowledged");
    }
}

/// How a test writes an event on the events topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventEncoding {
    /// As ingest does: `bin1`, through the one encoder, with its header.
    Bin1,
    /// Its JSON without a header (old topics, hand-produced events).
    Json,
}

/// An event as the events-topic record ingest would write (keyed by tenant and host), in
/// `encoding`.
pub fn event_record(e: &Event, encoding: EventEncoding) -> Outgoing {
    let (payload, headers) = match encoding {
        EventEncoding::Bin1 => (
            wire::to_bin(e, 0),
            vec![(wire::ENCODING_HEADER, wire::BIN1.to_vec())],
        ),
        EventEncoding::Json => (serde_json::to_vec(e).expect("event JSON"), Vec::new()),
    };
    Outgoing {
        key: format!("{}/{}", e.tenant, e.host.key()),
        payload,
        headers,
        timestamp: None,
    }
}

/// Every record of `topic` as it stands now, with the partition ends (the offset after each
/// partition's last record).
///
/// Tansu 0.6.0 reports a partition's end by record batch: ListOffsets gives the base offset of
/// the last batch plus one, and fetch responses can put the high watermark (so EOF) before the
/// last record. Every producer in these tests sends one record per batch (the test producer
/// awaits each record; `Names::write_config` sets `batch.num.messages = 1` for chainwatch), so
/// ListOffsets is exact: the reader takes it as the end and reads up to it, never trusting EOF.
pub fn read_to_end(topic: &str) -> (Vec<Record>, HashMap<i32, i64>) {
    read_to_end_on(&brokers(), topic)
}

/// [`read_to_end`] on the broker at `brokers`.
pub fn read_to_end_on(brokers: &str, topic: &str) -> (Vec<Record>, HashMap<i32, i64>) {
    let probe: BaseConsumer = config_on(brokers).create().expect("consumer");
    let md = probe
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    assert!(!partitions.is_empty(), "topic {topic} has no partitions");
    let ends: HashMap<i32, i64> = partitions
        .iter()
        .map(|p| {
            let (_, high) = probe
                .fetch_watermarks(topic, *p, Duration::from_secs(10))
                .expect("watermarks");
            (*p, high)
        })
        .collect();
    let consumer: BaseConsumer = config_on(brokers)
        .set("group.id", unique("reader-"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut next: HashMap<i32, i64> = partitions.iter().map(|p| (*p, 0)).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends.iter().any(|(p, end)| next[p] < *end) {
        assert!(
            Instant::now() < deadline,
            "could not read {topic} to its end: read up to {next:?}, ends {ends:?}"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                next.insert(m.partition(), m.offset() + 1);
                if m.offset() >= ends[&m.partition()] {
                    continue;
                }
                let headers = m
                    .headers()
                    .map(|h| {
                        use rdkafka::message::Headers;
                        h.iter()
                            .map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Record {
                    key: m.key().unwrap_or_default().to_vec(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    (out, ends)
}

/// The first `n` records of `topic` (all partitions, from the beginning), waiting up to `limit`
/// for them. For topics written in multi-record batches, whose end Tansu 0.6.0 misreports
/// ([`read_to_end`] trusts the reported end).
pub fn read_first(topic: &str, n: usize, limit: Duration) -> Vec<Record> {
    let consumer: BaseConsumer = config_on(&brokers())
        .set("group.id", unique("reader-"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::with_capacity(n);
    let deadline = Instant::now() + limit;
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{topic}: read {} records of the {n} expected",
            out.len()
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => out.push(Record {
                key: m.key().unwrap_or_default().to_vec(),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers: Vec::new(),
            }),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Record {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every record of `topic` as it stands now.
pub fn read_all(topic: &str) -> Vec<Record> {
    read_to_end(topic).0
}

/// The committed offsets of `group` on `topic`.
pub fn committed(group: &str, topic: &str, partitions: &[i32]) -> HashMap<i32, i64> {
    committed_on(&brokers(), group, topic, partitions)
}

/// [`committed`] on the broker at `brokers`.
pub fn committed_on(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = config_on(brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, *p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| {
            let off = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            (e.partition(), off)
        })
        .collect()
}

/// Waits until `group` has committed everything written to `topics` so far (every effect of
/// every record is durable), or panics after `limit`. The topics must be complete: call it for
/// a stage only after the stage that writes its input has caught up.
pub fn await_caught_up(group: &str, topics: &[&str], limit: Duration) {
    await_caught_up_on(&brokers(), group, topics, limit);
}

/// [`await_caught_up`] on the broker at `brokers`.
pub fn await_caught_up_on(brokers: &str, group: &str, topics: &[&str], limit: Duration) {
    let ends: Vec<(&str, HashMap<i32, i64>)> = topics
        .iter()
        .map(|t| (*t, read_to_end_on(brokers, t).1))
        .collect();
    let deadline = Instant::now() + limit;
    loop {
        let behind: Vec<String> = ends
            .iter()
            .flat_map(|(t, ends)| {
                let parts: Vec<i32> = ends.keys().copied().collect();
                let done = committed_on(brokers, group, t, &parts);
                ends.iter()
                    .filter(move |(p, end)| **end > 0 && done.get(p).copied().unwrap_or(0) < **end)
                    .map(move |(p, end)| format!("{t}[{p}] end {end}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "group {group} did not catch up within {limit:?}: {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asserts that `group` committed exactly the end of every partition of `topics`: past the
/// last record it processed, and not one record further (which would skip a record on restart).
pub fn assert_committed_exactly(group: &str, topics: &[&str]) {
    for t in topics {
        let (_, ends) = read_to_end(t);
        let parts: Vec<i32> = ends.keys().copied().collect();
        let done = committed(group, t, &parts);
        for (p, end) in &ends {
            if *end > 0 {
                assert_eq!(
                    done.get(p),
                    Some(end),
                    "group {group} on {t}[{p}]: committed vs end"
                );
            }
        }
    }
}

/// A chainwatch process, stopped with SIGTERM (and waited for) when dropped. Its log lines
/// are echoed to the test's stderr and can be awaited ([`Chainwatch::await_log`]).
pub struct Chainwatch {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Chainwatch {
    /// Starts `chainwatch run --config config` with extra arguments, logging at `warn` (or
    /// `RUST_LOG`).
    pub fn run(config: &Path, extra: &[&str]) -> Self {
        let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        Self::run_logging(config, extra, &level)
    }

    /// Starts `chainwatch run` logging at `level`.
    pub fn run_logging(config: &Path, extra: &[&str], level: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .env("RUST_LOG", level)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chainwatch");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("[chainwatch] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits for a log line for which `accept` is true (later than the lines already awaited),
    /// or panics after `limit`.
    pub fn await_line(&self, what: &str, limit: Duration, accept: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if accept(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line {what} within {limit:?}"),
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself (after a signal), or panics after `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for chainwatch") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "chainwatch did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for a log line containing every one of `needles` (later than the lines already
    /// awaited), or panics after `limit`.
    pub fn await_log(&self, needles: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if needles.iter().all(|n| line.contains(n)) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needles:?} within {limit:?}"),
            }
        }
    }

    /// Sends a signal (`HUP`, `TERM`, `KILL`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Starts `chainwatch run --config config` with extra arguments, its log (stderr) going to
    /// `log` at level `level`.
    pub fn run_logged(config: &Path, extra: &[&str], log: &Path, level: &str) -> Self {
        let file = std::fs::File::create(log).expect("create the log file");
        let child = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(extra)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start chainwatch");
        // The log goes to the file; there are no lines to await here.
        let (_, lines) = std::sync::mpsc::channel();
        Self { child, lines }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// Kills the process with SIGKILL (a crash: nothing is drained or committed) and waits.
    pub fn kill(mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().expect("wait for chainwatch")
    }
}

impl Drop for Chainwatch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Names of one test's topics and groups.
pub struct Names {
    pub prefix: String,
    pub raw_pattern: String,
    pub events: String,
    pub alerts: String,
    pub dead_letter: String,
    pub groups: String,
    pub roles: String,
}

impl Names {
    pub fn new() -> Self {
        let prefix = unique("t");
        Self {
            raw_pattern: format!("{prefix}.{{tenant}}.windows"),
            events: format!("{prefix}.events"),
            alerts: format!("{prefix}.alerts"),
            dead_letter: format!("{prefix}.dead-letter"),
            groups: format!("{prefix}-cw"),
            roles: format!("{prefix}.roles"),
            prefix,
        }
    }

    pub fn raw(&self, tenant: &str) -> String {
        self.raw_pattern.replace("{tenant}", tenant)
    }

    /// A service config for these names, written into `dir`; returns its path.
    pub fn write_config(&self, dir: &Path, sinks: &str) -> PathBuf {
        self.write_config_with(dir, &repo().join("playbooks"), "", sinks)
    }

    /// A service config with rules from `rules` and extra `[correlate]` lines.
    pub fn write_config_with(
        &self,
        dir: &Path,
        rules: &Path,
        correlate: &str,
        sinks: &str,
    ) -> PathBuf {
        let text = self.config_text(&ConfigParts {
            rules: Some(rules),
            correlate,
            extra: sinks,
            ..ConfigParts::default()
        });
        let path = dir.join("chainwatch.toml");
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// A service config for these names: the topics, groups, source and rules every test
    /// shares, with `parts` filled in.
    pub fn config_text(&self, parts: &ConfigParts<'_>) -> String {
        let brokers = parts.brokers.map_or_else(brokers, str::to_owned);
        let rules = parts
            .rules
            .map_or_else(|| repo().join("playbooks"), Path::to_path_buf);
        let http = parts.http.unwrap_or(0);
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_prefix = "{groups}"
partitions = {partitions}
{kafka}

[kafka.options]
# Tansu 0.6.0 reports a partition's end by record batch (see read_to_end); one record per
# batch keeps the ends the tests read exact. Production configs leave batching on.
"batch.num.messages" = "1"
"statistics.interval.ms" = "500"
{options}

[topics]
events = "{events}"
alerts = "{alerts}"
dead_letter = "{dead}"
roles = "{roles}"

[[sources]]
name = "windows"
topics = "{raw}"
format = "windows"

[correlate]
rules = ["{rules}"]
allowed_lateness = "2h"
{correlate}

# Tests run several chainwatch processes at once: each takes a free port (0: any).
[http]
listen = "127.0.0.1:{http}"

{extra}
"#,
            groups = self.groups,
            partitions = parts.partitions.unwrap_or(3),
            kafka = parts.kafka,
            options = parts.options,
            events = self.events,
            alerts = self.alerts,
            dead = self.dead_letter,
            roles = self.roles,
            raw = self.raw_pattern,
            rules = rules.display(),
            correlate = parts.correlate,
            extra = parts.extra,
        )
    }
}

/// What varies between the tests' service configs ([`Names::config_text`]); empty strings add
/// nothing.
#[derive(Default)]
pub struct ConfigParts<'a> {
    /// Default: the test broker.
    pub brokers: Option<&'a str>,
    /// Partitions of created topics (default 3).
    pub partitions: Option<i32>,
    /// More lines of `[kafka]`.
    pub kafka: &'a str,
    /// More lines of `[kafka.options]`.
    pub options: &'a str,
    /// Rule files or folders (default: the shipped playbooks).
    pub rules: Option<&'a Path>,
    /// More lines of `[correlate]`.
    pub correlate: &'a str,
    /// The HTTP port (default 0: any free one).
    pub http: Option<u16>,
    /// Tables after the rest (sinks, `[log]`, `[shutdown]`, ...).
    pub extra: &'a str,
}

/// The four stages on `host` of tenant `acme` ([`stages`] from minute 0), normalized as ingest
/// does, as if read from `topic`.
pub fn stage_events(host: &str, topic: &str) -> Vec<Event> {
    use chainwatch_config::service::InputFormat;
    use chainwatch_ingest::{Decoder, DecoderConfig, TenantSource};
    let decoder = Decoder::new(DecoderConfig {
        format: InputFormat::Windows,
        ..DecoderConfig::default()
    })
    .expect("the windows decoder");
    let tenant = TenantSource::Fixed(chainwatch_model::TenantId::new("acme").expect("a tenant"));
    stages(host, 0)
        .into_iter()
        .enumerate()
        .map(|(i, (_, r))| {
            let origin = chainwatch_model::Provenance::Kafka {
                topic: topic.into(),
                partition: 0,
                offset: i as i64,
                record: None,
            };
            decoder
                .decode(&r, &tenant, origin)
                .expect("a stage record decodes")
        })
        .collect()
}

/// Flat Windows JSON records of the four stages of the shipped playbook on `host`, starting at
/// minute `start` of 2026-11-20T02:00Z. Returns (stage number, record) pairs.
pub fn stages(host: &str, start: u32) -> Vec<(u32, Vec<u8>)> {
    let at = |m: u32, s: u32| {
        format!(
            "2026-11-20T{:02}:{:02}:{:02}.000Z",
            2 + (start + m) / 60,
            (start + m) % 60,
            s
        )
    };
    let sysmon = "Microsoft-Windows-Sysmon/Operational";
    let recs = [
        serde_json::json!({"@timestamp": at(0, 5), "Hostname": host, "Channel": sysmon, "SourceName": "Microsoft-Windows-Sysmon", "EventID": 1,
            "Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd /c whoami",
            "ParentImage": "C:\\Windows\\System32\\inetsrv\\w3wp.exe", "User": "NT AUTHORITY\\SYSTEM"}),
        serde_json::json!({"@timestamp": at(2, 30), "Hostname": host, "Channel": "Security", "SourceName": "Microsoft-Windows-Security-Auditing", "EventID": 4720,
            "TargetUserName": "svc_sync", "TargetDomainName": "EXCH01", "SubjectUserName": "EXCH01$", "SubjectDomainName": "CONTOSO"}),
        serde_json::json!({"@timestamp": at(20, 0), "Hostname": host, "Channel": sysmon, "SourceName": "Microsoft-Windows-Sysmon", "EventID": 10,
            "SourceImage": "C:\\Windows\\System32\\rundll32.exe", "TargetImage": "C:\\Windows\\system32\\lsass.exe", "GrantedAccess": "0x1FFFFF"}),
        serde_json::json!({"@timestamp": at(50, 0), "Hostname": host, "Channel": sysmon, "SourceName": "Microsoft-Windows-Sysmon", "EventID": 1,
            "Image": "C:\\Windows\\System32\\vssadmin.exe", "CommandLine": "vssadmin.exe delete shadows /all /quiet",
            "ParentImage": "C:\\Windows\\System32\\cmd.exe", "User": "EXCH01\\svc_sync"}),
    ];
    recs.into_iter()
        .enumerate()
        .map(|(i, r)| (i as u32 + 1, serde_json::to_vec(&r).expect("json")))
        .collect()
}

/// Benign records on `host` (no rule matches them).
pub fn noise(host: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            serde_json::to_vec(&serde_json::json!({
                "@timestamp": format!("2026-11-20T02:{:02}:{:02}.000Z", (i / 60) % 60, i % 60),
                "Hostname": host, "Channel": "Microsoft-Windows-Sysmon/Operational",
                "SourceName": "Microsoft-Windows-Sysmon", "EventID": 1,
                "Image": "C:\\Windows\\System32\\svchost.exe", "CommandLine": format!("svchost.exe -k netsvcs {i}"),
                "ParentImage": "C:\\Windows\\System32\\services.exe"
            }))
            .expect("json")
        })
        .collect()
}
