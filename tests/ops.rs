//! Operations, end to end: a real Prometheus scrapes a running `chainwatch run` while the
//! sample intrusion is replayed into Kafka, and every query of every dashboard panel returns
//! data; `/readyz` turns ready only once partitions are assigned; no secret reaches a log line;
//! the docker-compose stack agrees with the files it mounts.
//!
//! The Prometheus server is Debian's `prometheus` package (`scripts/test.sh` installs it when
//! missing), or the binary `CHAINWATCH_PROMETHEUS` names. Missing is a failure, never a skip.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chainwatch_config::ServiceConfig;
use chainwatch_ingest::TopicPattern;
use saphyr::{LoadableYamlNode, YamlOwned};
use serde_json::Value;
use support::http::*;
use support::*;

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.0 GET: two endpoints (chainwatch, Prometheus) on loopback, plain text.

/// `GET path` on `addr`: (status, body).
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_owned()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// chainwatch with its log lines captured (JSON), stopped with SIGTERM when dropped.

struct Running {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    http: String,
}

impl Running {
    fn start(config: &Path) -> Self {
        Self::start_with(config, &[])
    }

    fn start_with(config: &Path, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
            .args(["--log-json", "run", "--config"])
            .arg(config)
            .args(extra)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chainwatch");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let kept = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("http endpoint listening"))
                    && let Some(addr) = v["fields"]["addr"].as_str()
                {
                    let _ = tx.send(addr.to_owned());
                }
                kept.lock().unwrap().push(line);
            }
        });
        let http = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("chainwatch logs the address of its HTTP endpoint");
        Self { child, lines, http }
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.http, path).unwrap()
    }

    fn readyz(&self) -> (u16, Value) {
        let (status, body) = self.get("/readyz");
        (status, serde_json::from_str(&body).unwrap())
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.terminate();
        // The reader thread ends at the pipe's end; what it read is complete.
        let lines = self.lines.lock().unwrap().clone();
        (status, lines)
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        self.child.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // After a failed assertion: ask, then insist (a sink whose destination is down retries
        // until it comes back).
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus server on a free port with a temporary data folder.

struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

fn prometheus_binary() -> PathBuf {
    if let Ok(p) = std::env::var("CHAINWATCH_PROMETHEUS") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("prometheus"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no prometheus binary: these tests scrape chainwatch with a real Prometheus. \
             Run `bash scripts/test.sh` (it installs Debian's prometheus package), \
             `apt-get install prometheus`, or set CHAINWATCH_PROMETHEUS."
        )
    })
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second.
    fn start(targets: &[&str]) -> Self {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let targets = targets.join(", ");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: chainwatch\n    static_configs:\n      - targets: [{targets}]\n"
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let mut p = Self {
            child,
            addr,
            _dir: dir,
        };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            if let Ok(Some(status)) = p.child.try_wait() {
                let log = std::fs::read_to_string(p._dir.path().join("prometheus.log"))
                    .unwrap_or_default();
                panic!("prometheus exited ({status}):\n{log}");
            }
            matches!(http_get(&p.addr, "/-/ready"), Ok((200, _))).then_some(())
        });
        p
    }

    fn api(&self, path: &str) -> Value {
        let (status, body) = http_get(&self.addr, path).unwrap();
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("Prometheus answered {status} {body:?}: {e}"));
        assert_eq!(v["status"], "success", "{path}: {body}");
        v
    }

    /// An instant query's values.
    fn values(&self, query: &str) -> Vec<f64> {
        let v = self.api(&format!("/api/v1/query?query={}", urlencode(query)));
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse().ok())
            .collect()
    }

    /// A range query at one-second steps: the finite values of every series.
    fn range(&self, query: &str, start: f64, end: f64) -> Vec<f64> {
        let v = self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=1",
            urlencode(query)
        ));
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p[1].as_str()?.parse::<f64>().ok())
            .filter(|x| x.is_finite())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A gate in front of the broker: connections wait until it opens. chainwatch bootstraps
// through it, so the test decides when a broker becomes reachable.

struct Gate {
    addr: SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
}

impl Gate {
    async fn new(broker: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, opened) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut opened = opened.clone();
                let broker = broker.clone();
                tokio::spawn(async move {
                    if opened.wait_for(|o| *o).await.is_err() {
                        return;
                    }
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&broker).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, open }
    }

    fn open(&self) {
        self.open.send_replace(true);
    }
}

// ---------------------------------------------------------------------------------------------
// The dashboards.

/// Every `expr` of every panel of every dashboard under `deploy/grafana/dashboards`, as
/// (dashboard file, panel title, expr), with Grafana's `$__rate_interval` given the value
/// Grafana would pick for a one-second scrape (four intervals).
fn dashboard_queries() -> Vec<(String, String, String)> {
    let dir = repo().join("deploy/grafana/dashboards");
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboard in {}", dir.display());
    fn walk(file: &str, panels: &Value, out: &mut Vec<(String, String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(file, &p["panels"], out);
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = t["expr"].as_str() {
                    out.push((
                        file.to_owned(),
                        p["title"].as_str().unwrap_or("?").to_owned(),
                        expr.replace("$__rate_interval", "4s"),
                    ));
                }
            }
        }
    }
    for f in files {
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        walk(&name, &d["panels"], &mut out);
    }
    out
}

#[test]
fn dashboard_panels_query_prometheus_plainly() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 10, "{queries:?}");
    for (file, title, expr) in &queries {
        // Every panel has data because chainwatch exports it, not because a query papers over
        // an absent series with a constant.
        assert!(!expr.contains("vector("), "{file} '{title}': {expr}");
        assert!(
            !expr.contains('$'),
            "{file} '{title}': unknown variable in {expr}"
        );
    }
    // Every graphed panel (not rows) has a query.
    let d: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/dashboards/chainwatch.json")).unwrap(),
    )
    .unwrap();
    for p in d["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert!(
                p["targets"].as_array().is_some_and(|t| !t.is_empty()),
                "panel {} has no query",
                p["title"]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------

const SECRET: &str = "canary-s3cr3t-do-not-log";

/// A config for `names` on `brokers` with `sinks`, written as `dir/file`.
fn ops_config(names: &Names, dir: &Path, brokers: &str, sinks: &str, file: &str) -> PathBuf {
    let options = format!(
        "\"sasl.username\" = \"chainwatch\"\n\"sasl.password\" = \"{SECRET}\"\n\
         # librdkafka logs its whole configuration at start-up: the secret must not be in it.\n\
         \"debug\" = \"conf\""
    );
    let extra = format!("{sinks}\n\n[log]\nlevel = \"info,librdkafka=debug\"");
    let text = names.config_text(&ConfigParts {
        brokers: Some(brokers),
        kafka: "create_topics = false",
        options: &options,
        extra: &extra,
        ..ConfigParts::default()
    });
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Commits `offset` for `group` on `partitions` of `topic`, as a group that has consumed
/// everything up to there would have.
fn commit_offsets(group: &str, topic: &str, partitions: &[i32], offset: i64) {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Offset(offset))
            .unwrap();
    }
    c.commit(&tpl, CommitMode::Sync).unwrap();
    let done = committed(group, topic, partitions);
    assert!(done.values().all(|o| *o == offset), "{done:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_every_dashboard_query_during_a_replay() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let raw = names.raw("contoso");
    create_topics(&[&raw], 2).await;
    create_topics(&[&names.events, &names.alerts, &names.dead_letter], 2).await;
    let gate = Gate::new(brokers()).await;
    let archive = dir.path().join("alerts.jsonl");
    let config = ops_config(
        &names,
        dir.path(),
        &gate.addr.to_string(),
        &format!(
            "[[sinks]]\nkind = \"file\"\nname = \"archive\"\npath = \"{}\"\n",
            archive.display()
        ),
        "chainwatch.toml",
    );

    let cw = Running::start(&config);
    assert_eq!(cw.get("/healthz"), (200, "ok\n".to_owned()));

    // With no broker reachable, the stages start but no partition is assigned: not ready.
    let r = wait_for("the stages to start", Duration::from_secs(60), || {
        let (status, r) = cw.readyz();
        (r["stages_started"] == true).then_some((status, r))
    });
    assert_eq!(r.0, 503, "{}", r.1);
    assert_eq!(r.1["ready"], false);
    assert_eq!(r.1["rules_loaded"], true);
    assert_eq!(r.1["partitions_assigned"], false, "{}", r.1);
    assert_eq!(r.1["consumers"].as_array().unwrap().len(), 3, "{}", r.1);
    let (_, metrics) = cw.get("/metrics");
    assert!(metrics.contains("chainwatch_ready 0"), "{metrics}");

    // The broker becomes reachable: every consumer gets its partitions, and /readyz says so.
    gate.open();
    let ready = wait_for("/readyz to report ready", Duration::from_secs(90), || {
        let (status, r) = cw.readyz();
        (status == 200).then_some(r)
    });
    assert_eq!(ready["ready"], true);
    for c in ready["consumers"].as_array().unwrap() {
        assert_eq!(c["partitions"].as_u64(), Some(2), "{ready}");
        assert_eq!(c["broker_reachable"], true, "{ready}");
    }

    // A second instance runs one more sink, whose destination is down (every write fails with
    // "no space left", a retryable error): its group falls behind on the alerts topic, which
    // the lag panel must show. Its group had delivered everything before (offset 0 committed).
    let stuck_group = format!("{}-sink-stuck", names.groups);
    commit_offsets(&stuck_group, &names.alerts, &[0, 1], 0);
    let stuck_config = ops_config(
        &names,
        dir.path(),
        &brokers(),
        "[[sinks]]\nkind = \"file\"\nname = \"stuck\"\npath = \"/dev/full\"\n",
        "stuck.toml",
    );
    let stuck = Running::start_with(&stuck_config, &["--stages", "sink"]);
    wait_for(
        "the second instance to be ready",
        Duration::from_secs(90),
        || (stuck.readyz().0 == 200).then_some(()),
    );

    // Prometheus scrapes both from before the replay to after it.
    let prom = Prometheus::start(&[&cw.http, &stuck.http]);
    let start = now_secs() - 1.0;
    wait_for("the first scrapes", Duration::from_secs(60), || {
        (prom.values("up{job=\"chainwatch\"}") == [1.0, 1.0]).then_some(())
    });

    // The replay: the bundled sample and two malformed records, through `chainwatch produce`.
    let sample = repo().join("examples/exchange-intrusion.jsonl");
    let sample_records = std::fs::read_to_string(&sample).unwrap().lines().count();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"EventID\": 1, truncated\n{\"Hostname\": \"WS-014\", \"Channel\": \"Security\", \"EventID\": 4624}\n",
    )
    .unwrap();
    let produced = Command::new(env!("CARGO_BIN_EXE_chainwatch"))
        .args(["produce", "--brokers", &brokers(), "--topic", &raw])
        .arg(&sample)
        .arg(&bad)
        .status()
        .unwrap();
    assert!(produced.success());
    let total = sample_records + 2;

    let limit = Duration::from_secs(120);
    await_caught_up(&format!("{}-ingest", names.groups), &[&raw], limit);
    await_caught_up(
        &format!("{}-correlate", names.groups),
        &[&names.events],
        limit,
    );
    await_caught_up(
        &format!("{}-sink-archive", names.groups),
        &[&names.alerts],
        limit,
    );
    let filed = std::fs::read_to_string(&archive).unwrap();
    let ids: std::collections::BTreeSet<&str> = filed
        .lines()
        .map(|l| {
            l.split("\"id\":\"")
                .nth(1)
                .unwrap_or_default()
                .split('"')
                .next()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        (filed.lines().count(), ids.len()),
        (3, 1),
        "the sample holds one chain, raised at the web shell, updated at the dump, complete at the backups: {filed}"
    );

    // Prometheus has the final counts: every record, the two dead letters, the three versions
    // of the finding delivered by one sink and retried by the other, whose group lags.
    wait_for("Prometheus to scrape the replay", limit, || {
        let consumed = prom.values("sum(chainwatch_records_consumed_total)");
        let delivered = prom.values("sum(chainwatch_sink_deliveries_total{sink=\"archive\"})");
        let retried = prom.values("sum(chainwatch_sink_retries_total{sink=\"stuck\"}) > 0");
        let lagging = prom.values(&format!(
            "count(chainwatch_kafka_consumer_lag{{group=\"{stuck_group}\"}})"
        ));
        (consumed == [total as f64]
            && delivered == [3.0]
            && !retried.is_empty()
            && lagging == [2.0])
        .then_some(())
    });
    assert_eq!(prom.values("sum(chainwatch_dead_letters_total)"), [2.0]);
    // Revision 0 is high (the web shell); revisions 1 and 2 are critical.
    assert_eq!(
        prom.values("sum(chainwatch_alerts_total{tenant=\"contoso\",priority=\"critical\"})"),
        [2.0]
    );
    assert_eq!(
        prom.values("sum(chainwatch_alerts_total{tenant=\"contoso\",priority=\"high\"})"),
        [1.0]
    );
    assert_eq!(
        prom.values("sum(chainwatch_events_normalized_total{tenant=\"contoso\"})"),
        [(total - 2) as f64]
    );
    assert_eq!(
        prom.values("sum(chainwatch_detection_latency_arrival_seconds_count)"),
        [3.0],
        "the alert's arrival time travelled with its event"
    );
    assert_eq!(prom.values("sum(chainwatch_sink_failures_total)"), [0.0]);
    let end = now_secs() + 1.0;

    // Every query of every panel returns data. All failures at once.
    let mut empty = Vec::new();
    for (file, title, expr) in dashboard_queries() {
        if prom.range(&expr, start, end).is_empty() {
            empty.push(format!("{file} '{title}': {expr}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries with no data:\n  {}",
        empty.join("\n  ")
    );

    drop(prom);
    // The stuck sink would retry until its destination comes back; it is not part of what this
    // test checks about shutdown.
    stuck.kill();
    let (status, lines) = cw.stop();
    assert!(status.success(), "chainwatch exits cleanly on SIGTERM");

    // Logs: JSON lines, librdkafka's among them, stage and partition spans on the lines a stage
    // logs while handling a record, and never the secret.
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok())
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"target\":\"librdkafka\""))
    );
    let dead: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("dead-lettered"))
        })
        .collect();
    assert_eq!(dead.len(), 2);
    for d in &dead {
        let spans: Vec<&str> = d["spans"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        assert_eq!(spans, ["stage", "partition"], "{d}");
        assert_eq!(d["span"]["topic"], raw.as_str(), "{d}");
    }
    assert!(
        lines.iter().any(|l| l.contains("sasl.password")),
        "librdkafka's configuration dump is in the logs"
    );
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(SECRET)).collect();
    assert!(leaks.is_empty(), "a secret in the logs: {leaks:?}");
}

// ---------------------------------------------------------------------------------------------
// The docker-compose stack.

fn yaml(path: &Path) -> YamlOwned {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs =
        YamlOwned::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(docs.len(), 1, "{}", path.display());
    docs.remove(0)
}

/// The node at `path` (mapping keys, or sequence indices written as numbers).
fn at<'a>(y: &'a YamlOwned, path: &[&str]) -> Option<&'a YamlOwned> {
    path.iter()
        .try_fold(y, |node, key| match key.parse::<usize>() {
            Ok(i) => node.as_sequence_get(i),
            Err(_) => node.as_mapping_get(key),
        })
}

fn s<'a>(y: &'a YamlOwned, path: &[&str]) -> Option<&'a str> {
    at(y, path)?.as_str()
}

/// A sequence of scalars as strings (empty when absent).
fn strings(y: &YamlOwned, path: &[&str]) -> Vec<String> {
    at(y, path)
        .and_then(|v| v.as_sequence())
        .map(|v| {
            v.iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .or_else(|| i.as_integer().map(|n| n.to_string()))
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A service's bind mounts: container path -> host path (in the repository).
fn mounts(service: &YamlOwned) -> BTreeMap<String, PathBuf> {
    strings(service, &["volumes"])
        .iter()
        .filter(|v| v.starts_with("./"))
        .map(|v| {
            let mut parts = v.split(':');
            let host = parts.next().unwrap();
            let target = parts.next().expect("a bind mount names its target");
            (target.to_owned(), repo().join(host))
        })
        .collect()
}

/// `path` inside a container of `service`, on the host.
fn host_path(service: &YamlOwned, path: &str) -> Option<PathBuf> {
    // The deepest mount holding `path` wins, as in the container.
    mounts(service)
        .into_iter()
        .filter_map(|(target, host)| {
            let rest = path.strip_prefix(&target)?;
            match rest.strip_prefix('/') {
                _ if rest.is_empty() => Some((target.len(), host)),
                Some(rest) => Some((target.len(), host.join(rest))),
                None => None,
            }
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, host)| host)
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix(&format!("{name}=")))
        })
}

#[test]
fn compose_stack_agrees_with_the_files_it_mounts() {
    let compose = yaml(&repo().join("docker-compose.yml"));
    let service = |name: &str| -> &YamlOwned {
        at(&compose, &["services", name])
            .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
    };
    for name in [
        "kafka",
        "topics",
        "chainwatch",
        "producer",
        "prometheus",
        "grafana",
    ] {
        assert!(service(name).is_mapping(), "{name}");
    }

    // Every service has an image or a build, and every file it mounts or builds from exists.
    let services = at(&compose, &["services"]).unwrap().as_mapping().unwrap();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        assert!(
            s(svc, &["image"]).is_some() || s(svc, &["build"]).is_some(),
            "{name}: no image, no build"
        );
        for (target, host) in mounts(svc) {
            assert!(
                host.exists(),
                "{name}: mounts {} at {target}, which does not exist",
                host.display()
            );
        }
        if let Some(context) = s(svc, &["build"]) {
            let text = std::fs::read_to_string(repo().join(context).join("Dockerfile")).unwrap();
            for line in text
                .lines()
                .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
            {
                let parts: Vec<&str> = line.split_whitespace().collect();
                for src in &parts[1..parts.len() - 1] {
                    assert!(
                        repo().join(context).join(src).exists(),
                        "Dockerfile copies {src}, which does not exist"
                    );
                }
            }
        }
    }

    // chainwatch's config, as mounted, loads (its rules folder is mounted too).
    let cw = service("chainwatch");
    let command = strings(cw, &["command"]);
    let config_in = flag(&command, "--config").expect("chainwatch runs with --config");
    let config_file = host_path(cw, config_in).expect("the config file is mounted");
    let mut text = std::fs::read_to_string(&config_file).unwrap();
    for (target, host) in mounts(cw) {
        text = text.replace(&format!("\"{target}"), &format!("\"{}", host.display()));
    }
    let config = ServiceConfig::from_text(&config_file, &text)
        .unwrap_or_else(|d| panic!("the mounted config does not load: {d}"));

    // Brokers: the config and the producer name the Kafka service's advertised listener.
    let advertised = s(
        service("kafka"),
        &["environment", "KAFKA_ADVERTISED_LISTENERS"],
    )
    .unwrap();
    assert!(
        advertised.contains(&format!("://{}", config.kafka.brokers)),
        "config brokers {} vs advertised {advertised}",
        config.kafka.brokers
    );
    let host = config.kafka.brokers.split(':').next().unwrap();
    service(host);
    let producer = service("producer");
    let pargs = strings(producer, &["command"]);
    assert_eq!(pargs.first().map(String::as_str), Some("produce"));
    assert_eq!(
        flag(&pargs, "--brokers"),
        Some(config.kafka.brokers.as_str())
    );

    // Topics: the producer's topic belongs to a configured source, and the topic service
    // creates it and chainwatch's own topics, with the configured partitions.
    let topic = flag(&pargs, "--topic").unwrap();
    assert!(
        config
            .sources
            .iter()
            .any(|src| TopicPattern::new(&src.topics)
                .unwrap()
                .tenant_of(topic)
                .is_some()),
        "the producer's topic {topic} matches no source of the config"
    );
    let topics = service("topics");
    let created: Vec<&str> = s(topics, &["environment", "TOPICS"])
        .unwrap()
        .split_whitespace()
        .collect();
    for t in [
        topic,
        &config.topics.events,
        &config.topics.alerts,
        &config.topics.dead_letter,
    ] {
        assert!(
            created.contains(&t),
            "topic {t} is not created: {created:?}"
        );
    }
    assert_eq!(
        s(topics, &["environment", "PARTITIONS"]),
        Some(config.kafka.partitions.to_string().as_str())
    );
    // The producer's files are mounted.
    for f in pargs.iter().filter(|a| a.starts_with('/')) {
        let host = host_path(producer, f).unwrap_or_else(|| panic!("{f} is not mounted"));
        assert!(host.is_file(), "{}", host.display());
    }

    // Ports: chainwatch listens on all interfaces of its container, on the port it publishes,
    // its health check probes and Prometheus scrapes.
    let port = config.http.listen.port();
    assert!(
        config.http.listen.ip().is_unspecified(),
        "{}",
        config.http.listen
    );
    assert!(strings(cw, &["ports"]).contains(&format!("{port}:{port}")));
    let check = strings(cw, &["healthcheck", "test"]).join(" ");
    assert!(
        check.contains(&format!("/{port}")) && check.contains("/readyz"),
        "{check}"
    );
    let prom = service("prometheus");
    let prom_args = strings(prom, &["command"]);
    let prom_config = host_path(prom, flag(&prom_args, "--config.file").unwrap())
        .expect("Prometheus's config is mounted");
    let scrape = yaml(&prom_config);
    let mut targets = Vec::new();
    for job in at(&scrape, &["scrape_configs"])
        .unwrap()
        .as_sequence()
        .unwrap()
    {
        for c in at(job, &["static_configs"]).unwrap().as_sequence().unwrap() {
            targets.extend(strings(c, &["targets"]));
        }
    }
    assert!(
        targets.contains(&format!("chainwatch:{port}")),
        "Prometheus scrapes {targets:?}, chainwatch listens on {port}"
    );
    let prom_listen = flag(&prom_args, "--web.listen-address").unwrap_or("0.0.0.0:9090");
    let prom_port = prom_listen.rsplit(':').next().unwrap();

    // Grafana: the datasource is that Prometheus, and every panel of the provisioned dashboard
    // uses it.
    let grafana = service("grafana");
    let provisioning = host_path(grafana, "/etc/grafana/provisioning").expect("provisioning");
    let ds = yaml(&provisioning.join("datasources/prometheus.yml"));
    assert_eq!(
        s(&ds, &["datasources", "0", "url"]),
        Some(format!("http://prometheus:{prom_port}").as_str())
    );
    let uid = s(&ds, &["datasources", "0", "uid"]).unwrap();
    let providers = yaml(&provisioning.join("dashboards/chainwatch.yml"));
    let path = s(&providers, &["providers", "0", "options", "path"]).unwrap();
    let dashboards = host_path(grafana, path).expect("the dashboards folder is mounted");
    assert_eq!(dashboards, repo().join("deploy/grafana/dashboards"));
    let d: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboards.join("chainwatch.json")).unwrap())
            .unwrap();
    for p in d["panels"].as_array().unwrap() {
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], uid, "panel {}", p["title"]);
        }
    }
}
