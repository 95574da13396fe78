//! `chainwatch gen` (the module is not named `gen`: a reserved word in Rust 2024): a synthetic MSSP workload at any scale, with known answers.
//!
//! Per tenant it writes `telemetry.<tenant>.windows.jsonl`: flat Windows events (Sysmon and
//! Security, as `replay` and the ingest stage read them) from `--hosts` hosts, in delivery
//! order. Three kinds of events are mixed:
//!
//! - Noise, drawn from the shapes of the bundled example (`examples/exchange-intrusion.jsonl`,
//!   compiled in): every example event that no rule of the loaded rule set matches is a
//!   template; each generated event is a template with its own host, time and process id.
//! - Injected chains: the four stages of the shipped `exchange_to_ransomware` playbook (an IIS
//!   worker spawning a shell, an account created, LSASS read with dumping rights, shadow copies
//!   deleted) on one host each, spread over up to 52 minutes.
//! - Partial chains (`--partials`): a first stage alone on a host, which the correlator keeps
//!   as a partial chain: the memory benchmark's million tracked hosts.
//!
//! Delivery is out of order the way shippers are: a fraction (`--late`) of the events arrives
//! up to five minutes after later ones, and every third chain has its third stage delivered
//! after its fourth. All of it stays within the default allowed lateness (1 h).
//!
//! `answers.json` lists every injected chain (tenant, host, stage times), so a replay can be
//! checked against it: the complete-chain alerts must name exactly these hosts.
//!
//! With `--brokers` the lines are produced to Kafka instead, one record each, a topic per tenant
//! ([`to_kafka`]).
//!
//! Generation is deterministic for a given `--seed` and streams: memory stays bounded by the
//! injected stages and the late events in flight, whatever the number of noise events.

use std::collections::BinaryHeap;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chainwatch_config::parse_duration;
use chainwatch_correlate::RuleSet;
use chainwatch_ingest::{Decoder, Framing, Record, TenantSource};
use chainwatch_model::{Provenance, TenantId, Timestamp};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::GenArgs;

mod to_kafka;

/// The bundled example whose events are the noise templates.
const EXAMPLE: &str = include_str!("../../examples/exchange-intrusion.jsonl");

/// The playbook the injected chains complete.
pub const PLAYBOOK: &str = "exchange_to_ransomware";

/// The rules of the injected stages, in chain order.
pub const STAGES: [&str; 4] = [
    "iis_worker_spawns_shell",
    "account_created",
    "lsass_memory_dump",
    "recovery_inhibited",
];

/// Where each stage falls in a chain, as a share of its length.
const STAGE_AT: [f64; 4] = [0.0, 0.05, 0.4, 1.0];

/// The longest chain, in milliseconds (52 minutes).
const MAX_CHAIN_MS: i64 = 52 * 60 * 1000;

/// Sentinels written into templates where per-event values go.
const S_TIME: &str = "@@cw-time@@";
const S_UTC: &str = "@@cw-utc@@";
const S_HOST: &str = "@@cw-host@@";
const S_PID: &str = "@@cw-pid@@";
const S_TENANT: &str = "@@cw-tenant@@";

/// `answers.json`.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Answers {
    /// The playbook every chain completes.
    pub playbook: String,
    /// Its stages' rules, in chain order.
    pub stages: Vec<String>,
    /// The tenants, in file order.
    pub tenants: Vec<String>,
    /// Hosts per tenant.
    pub hosts_per_tenant: usize,
    /// Events written, all tenants.
    pub events: u64,
    /// Hosts given a first stage alone, per tenant (partial chains, never completed).
    pub partials_per_tenant: usize,
    /// Every injected chain.
    pub chains: Vec<Chain>,
}

/// One injected chain.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Chain {
    /// Its tenant.
    pub tenant: String,
    /// Its host, as written in the events.
    pub host: String,
    /// Its stages' times, in chain order.
    pub stage_times: Vec<Timestamp>,
    /// True when a stage is delivered after a later one.
    pub out_of_order: bool,
}

/// A part of a serialized template.
#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Time,
    Utc,
    Host,
    Pid,
    Tenant,
}

/// A noise template: the example event's JSON cut around its per-event values.
#[derive(Debug, Clone)]
struct Template(Vec<Part>);

impl Template {
    fn new(mut event: Map<String, Value>, tenant_field: Option<&str>) -> Self {
        if let Some(field) = tenant_field {
            event.insert(field.into(), Value::String(S_TENANT.into()));
        }
        for (key, sentinel) in [
            ("@timestamp", S_TIME),
            ("UtcTime", S_UTC),
            ("Hostname", S_HOST),
            ("ProcessId", S_PID),
        ] {
            if event.contains_key(key) {
                event.insert(key.into(), Value::String(sentinel.into()));
            }
        }
        let text = Value::Object(event).to_string();
        let mut parts = Vec::new();
        let mut rest = text.as_str();
        loop {
            let next = [S_TIME, S_UTC, S_HOST, S_PID, S_TENANT]
                .iter()
                .filter_map(|s| rest.find(s).map(|i| (i, *s)))
                .min_by_key(|(i, _)| *i);
            let Some((i, s)) = next else {
                parts.push(Part::Text(rest.to_owned()));
                break;
            };
            parts.push(Part::Text(rest[..i].to_owned()));
            parts.push(match s {
                S_TIME => Part::Time,
                S_UTC => Part::Utc,
                S_HOST => Part::Host,
                S_PID => Part::Pid,
                _ => Part::Tenant,
            });
            rest = &rest[i + s.len()..];
        }
        Self(parts)
    }

    fn write(&self, out: &mut Vec<u8>, time: Timestamp, host: &str, pid: u32, tenant: &str) {
        for p in &self.0 {
            match p {
                Part::Text(t) => out.extend_from_slice(t.as_bytes()),
                Part::Time => {
                    let _ = write!(out, "{time}");
                }
                Part::Utc => out.extend_from_slice(utc_time(time).as_bytes()),
                Part::Host => out.extend_from_slice(host.as_bytes()),
                Part::Pid => {
                    let _ = write!(out, "{pid}");
                }
                Part::Tenant => out.extend_from_slice(tenant.as_bytes()),
            }
        }
        out.push(b'\n');
    }
}

/// Sysmon's `UtcTime`: `2026-11-20 01:00:00.000`.
fn utc_time(time: Timestamp) -> String {
    let mut s = time.to_string();
    s.pop();
    s.replacen('T', " ", 1)
}

/// The noise templates: every example event no rule of `rules` matches.
fn templates(
    rules: &RuleSet,
    decoder: &Decoder,
    tenant_field: Option<&str>,
) -> Result<Vec<Template>> {
    let tenant = TenantSource::Fixed(TenantId::new("gen").expect("valid tenant"));
    let mut out = Vec::new();
    for (i, line) in EXAMPLE.lines().enumerate() {
        let record = Record {
            bytes: std::borrow::Cow::Borrowed(line.as_bytes()),
            provenance: Provenance::File {
                path: "examples/exchange-intrusion.jsonl".into(),
                line: Some(i as u64 + 1),
                record: None,
            },
            framing: Framing::Json,
        };
        let Ok(event) = decoder.decode_record(&record, &tenant, None) else {
            continue;
        };
        if !rules.matching_exhaustive(&event).is_empty() {
            continue;
        }
        let Value::Object(map) = serde_json::from_str(line)? else {
            continue;
        };
        out.push(Template::new(map, tenant_field));
    }
    if out.is_empty() {
        bail!("no example event is free of rule matches: no noise templates");
    }
    Ok(out)
}

/// A host's name: `HOST-000042.<tenant>.local`, one in fifty an Exchange server.
fn host_name(tenant: &str, i: usize) -> String {
    let kind = if i.is_multiple_of(50) { "EXCH" } else { "WS" };
    format!("{kind}-{i:06}.{tenant}.local")
}

/// The record of stage `stage` (0-based) of a chain on `host` at `time`.
fn stage_record(
    stage: usize,
    host: &str,
    time: Timestamp,
    tenant: Option<(&str, &str)>,
    rng: &mut fastrand::Rng,
) -> Vec<u8> {
    let sysmon = "Microsoft-Windows-Sysmon/Operational";
    let short = host.split('.').next().unwrap_or(host);
    let pid = rng.u32(1000..60000).to_string();
    let mut v = match stage {
        0 => {
            let (image, cmd) = if rng.bool() {
                ("C:\\Windows\\System32\\cmd.exe", "cmd.exe /c whoami")
            } else {
                (
                    "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                    "powershell.exe -nop -w hidden -c \"Get-Process\"",
                )
            };
            serde_json::json!({"Channel": sysmon, "SourceName": "Microsoft-Windows-Sysmon",
                "EventID": 1, "ProcessId": pid, "Image": image, "CommandLine": cmd,
                "ParentImage": "C:\\Windows\\System32\\inetsrv\\w3wp.exe",
                "ParentCommandLine": "c:\\windows\\system32\\inetsrv\\w3wp.exe -ap \"MSExchangeOWAAppPool\"",
                "User": "NT AUTHORITY\\SYSTEM"})
        }
        1 => serde_json::json!({"Channel": "Security",
            "SourceName": "Microsoft-Windows-Security-Auditing", "EventID": 4720,
            "TargetUserName": format!("svc_{}", rng.u32(100..999)), "TargetDomainName": short,
            "SubjectUserName": format!("{short}$"), "SubjectDomainName": "CORP"}),
        2 => {
            let source = if rng.bool() {
                "C:\\Windows\\System32\\rundll32.exe"
            } else {
                "C:\\Program Files\\procdump64.exe"
            };
            serde_json::json!({"Channel": sysmon, "SourceName": "Microsoft-Windows-Sysmon",
                "EventID": 10, "SourceProcessId": pid, "SourceImage": source,
                "TargetImage": "C:\\Windows\\system32\\lsass.exe", "TargetProcessId": "704",
                "GrantedAccess": "0x1FFFFF"})
        }
        _ => {
            let (image, cmd) = if rng.bool() {
                (
                    "C:\\Windows\\System32\\vssadmin.exe",
                    "vssadmin.exe delete shadows /all /quiet",
                )
            } else {
                (
                    "C:\\Windows\\System32\\wbem\\WMIC.exe",
                    "wmic.exe shadowcopy delete /nointeractive",
                )
            };
            serde_json::json!({"Channel": sysmon, "SourceName": "Microsoft-Windows-Sysmon",
                "EventID": 1, "ProcessId": pid, "Image": image, "CommandLine": cmd,
                "ParentImage": "C:\\Windows\\System32\\cmd.exe", "User": format!("{short}\\svc_sync")})
        }
    };
    if let Value::Object(m) = &mut v {
        m.insert("@timestamp".into(), Value::String(time.to_string()));
        m.insert("Hostname".into(), Value::String(host.into()));
        if m.get("Channel").and_then(Value::as_str) == Some(sysmon) {
            m.insert("UtcTime".into(), Value::String(utc_time(time)));
        }
        if let Some((field, name)) = tenant {
            m.insert(field.into(), Value::String(name.into()));
        }
    }
    let mut out = serde_json::to_vec(&v).expect("json");
    out.push(b'\n');
    out
}

/// An injected stage: (time, delivery time, host index, stage).
#[derive(Debug, Clone, Copy)]
struct Injected {
    time: i64,
    deliver: i64,
    host: usize,
    stage: usize,
}

/// A record waiting for its delivery time (a min-heap by delivery, then by order of birth).
#[derive(Debug, PartialEq, Eq)]
struct Late {
    deliver: i64,
    seq: u64,
    bytes: Vec<u8>,
}

impl Ord for Late {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.deliver, other.seq).cmp(&(self.deliver, self.seq))
    }
}

impl PartialOrd for Late {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Writes the workload of `args` to `args.out`; returns the answers (also written).
pub fn generate(args: &GenArgs) -> Result<Answers> {
    if args.tenants == 0 || args.hosts == 0 {
        bail!("--tenants and --hosts must be at least 1");
    }
    if !(0.0..=1.0).contains(&args.late) {
        bail!("--late {}: expected a share between 0 and 1", args.late);
    }
    let duration = parse_duration(&args.duration).map_err(anyhow::Error::msg)?;
    let duration_ms = i64::try_from(duration.as_millis()).context("--duration")?;
    if duration_ms <= 0 {
        bail!("--duration must be positive");
    }
    let start = Timestamp::parse_rfc3339(&args.start)
        .map_err(|e| anyhow::anyhow!("--start: {e}"))?
        .as_millis();
    let options = crate::replay::compile_options(None, None)?;
    let rules = Arc::new(crate::rules::load_rule_set(&args.rules, &options)?);
    let decoder = crate::replay::file_decoder("+00:00", None, None)?;
    let templates = templates(&rules, &decoder, args.tenant_field.as_deref())?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let tenants: Vec<String> = (0..args.tenants).map(|i| format!("tenant{i:04}")).collect();
    let sender = match &args.brokers {
        Some(brokers) => {
            let kafka =
                crate::topic_source::kafka_from_flags(brokers, &args.options, args.partitions)?;
            let topics: Vec<String> = tenants
                .iter()
                .map(|t| args.topic.replace("{tenant}", t))
                .collect();
            to_kafka::Sender::create_topics(
                &kafka,
                &topics.iter().map(String::as_str).collect::<Vec<_>>(),
            )?;
            Some(to_kafka::Sender::new(&kafka)?)
        }
        None => None,
    };

    let mut rng = fastrand::Rng::with_seed(args.seed);
    let chain_ms = MAX_CHAIN_MS.min(duration_ms * 9 / 10);
    let mut answers = Answers {
        playbook: PLAYBOOK.into(),
        stages: STAGES.iter().map(|s| (*s).to_owned()).collect(),
        tenants: tenants.clone(),
        hosts_per_tenant: args.hosts,
        events: 0,
        partials_per_tenant: args.partials,
        chains: Vec::new(),
    };
    for (t, tenant) in tenants.iter().enumerate() {
        // Chains go round-robin over tenants, each on its own host; partial chains take the
        // hosts after them.
        let chains = args.chains / args.tenants + usize::from(t < args.chains % args.tenants);
        if chains + args.partials > args.hosts {
            bail!(
                "{} chains and {} partial chains need more than the {} hosts of {tenant}",
                chains,
                args.partials,
                args.hosts
            );
        }
        let mut injected = Vec::new();
        for c in 0..chains {
            let first = start + rng.i64(0..=(duration_ms - chain_ms).max(0));
            let times: Vec<i64> = STAGE_AT
                .iter()
                .map(|s| first + (s * chain_ms as f64) as i64)
                .collect();
            let out_of_order = c % 3 == 1;
            for (stage, &time) in times.iter().enumerate() {
                let deliver = if out_of_order && stage == 2 {
                    times[3] + 1000
                } else {
                    time
                };
                injected.push(Injected {
                    time,
                    deliver,
                    host: c,
                    stage,
                });
            }
            answers.chains.push(Chain {
                tenant: tenant.clone(),
                host: host_name(tenant, c),
                stage_times: times.iter().map(|&m| Timestamp::from_millis(m)).collect(),
                out_of_order,
            });
        }
        for p in 0..args.partials {
            let time = start + rng.i64(0..duration_ms);
            injected.push(Injected {
                time,
                deliver: time,
                host: chains + p,
                stage: 0,
            });
        }
        injected.sort_by_key(|i| (i.time, i.host, i.stage));
        let noise = args.events / args.tenants as u64
            + u64::from((t as u64) < args.events % args.tenants as u64);
        // Where this tenant's lines go: its topic, or its file.
        let (mut out, target): (Box<dyn Write + '_>, String) = match &sender {
            Some(sender) => {
                let topic = args.topic.replace("{tenant}", tenant);
                (
                    Box::new(sender.lines(&topic)),
                    format!("produce to {topic}"),
                )
            }
            None => {
                let path = args.out.join(format!("telemetry.{tenant}.windows.jsonl"));
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                let out = BufWriter::with_capacity(1 << 20, file);
                (Box::new(out), format!("write {}", path.display()))
            }
        };
        let written = write_tenant(
            &mut *out,
            tenant,
            args,
            &templates,
            &injected,
            noise,
            (start, duration_ms),
            &mut rng,
        )
        .with_context(|| format!("cannot {target}"))?;
        answers.events += written;
    }
    let path = args.out.join("answers.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&answers)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(answers)
}

/// Writes one tenant's lines to `out` (a file, or a topic); returns the events written.
#[allow(clippy::too_many_arguments)]
fn write_tenant(
    out: &mut dyn Write,
    tenant: &str,
    args: &GenArgs,
    templates: &[Template],
    injected: &[Injected],
    noise: u64,
    (start, duration_ms): (i64, i64),
    rng: &mut fastrand::Rng,
) -> std::io::Result<u64> {
    let mut heap = BinaryHeap::new();
    let mut seq = 0u64;
    let mut written = 0u64;
    let mut line = Vec::with_capacity(4096);
    let mut next_injected = injected.iter().peekable();
    let step = duration_ms as f64 / noise.max(1) as f64;
    let emit = |heap: &mut BinaryHeap<Late>, now: i64, out: &mut dyn Write| {
        let mut n = 0u64;
        while heap.peek().is_some_and(|l: &Late| l.deliver <= now) {
            let l = heap.pop().expect("peeked");
            out.write_all(&l.bytes)?;
            n += 1;
        }
        std::io::Result::Ok(n)
    };
    for k in 0..=noise {
        // Noise event k (the last round only drains what is left).
        let time = if k < noise {
            start + ((k as f64 + rng.f64()) * step) as i64
        } else {
            i64::MAX
        };
        while let Some(i) = next_injected.next_if(|i| i.time <= time) {
            let host = host_name(tenant, i.host);
            let bytes = stage_record(
                i.stage,
                &host,
                Timestamp::from_millis(i.time),
                args.tenant_field.as_deref().map(|f| (f, tenant)),
                rng,
            );
            written += emit(&mut heap, i.time, out)?;
            if i.deliver > i.time {
                heap.push(Late {
                    deliver: i.deliver,
                    seq,
                    bytes,
                });
                seq += 1;
            } else {
                out.write_all(&bytes)?;
                written += 1;
            }
        }
        if k == noise {
            break;
        }
        written += emit(&mut heap, time, out)?;
        let template = &templates[rng.usize(..templates.len())];
        let host = host_name(tenant, rng.usize(..args.hosts));
        line.clear();
        template.write(
            &mut line,
            Timestamp::from_millis(time),
            &host,
            rng.u32(100..65000),
            tenant,
        );
        if rng.f64() < args.late {
            heap.push(Late {
                deliver: time + rng.i64(1000..300_000),
                seq,
                bytes: line.clone(),
            });
            seq += 1;
        } else {
            out.write_all(&line)?;
            written += 1;
        }
    }
    written += emit(&mut heap, i64::MAX, out)?;
    out.flush()?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_cut_around_per_event_values() {
        let mut m = Map::new();
        m.insert("@timestamp".into(), "x".into());
        m.insert("Hostname".into(), "h".into());
        m.insert("EventID".into(), 4624.into());
        let t = Template::new(m, Some("customer"));
        let mut out = Vec::new();
        t.write(&mut out, Timestamp::from_millis(0), "HOST-1", 7, "acme");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["@timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["Hostname"], "HOST-1");
        assert_eq!(v["EventID"], 4624);
        assert_eq!(v["customer"], "acme");
        assert_eq!(
            utc_time(Timestamp::from_millis(1500)),
            "1970-01-01 00:00:01.500"
        );
    }
}
