//! The correlate stage: normalized events in, findings out to `chainwatch.alerts`, keyed by
//! tenant, in the configured form (`[topics] alerts_format`), named in the `chainwatch.format`
//! header. Hosts that gain an inferred role go to the roles topic (compacted, keyed
//! `tenant/host`), as part of the same message's effect.
//!
//! One engine per partition of the events topic: every event of a host is in one partition, so
//! a partition's engine holds all its chains, and its state moves with the partition. With a
//! changelog (`chainwatch run`), every state change goes out with the message that made it, and
//! a partition's engine is rebuilt from the changelog when the partition is assigned here
//! ([`chainwatch_kafka::run_stateful`]). Every tick, tenants idle on a partition for
//! `[correlate] idle_after` have their event-time clock moved on by the wall-clock time since
//! their last event, so absence deadlines and count windows with an upper bound close while
//! their input is quiet. Host roles read back from the roles topic at start-up go to every
//! partition's engine (a host's events, and so its role scope, are decided in one of them); each
//! engine counts the hosts it observed, and the gauge is their sum, set at the tick after a
//! change (counting walks every host with a role: too much to do for each event).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chainwatch_config::service::FindingFormat;
use chainwatch_correlate::{Engine, EngineConfig, EngineStats, HostRoles, RuleSet};
use chainwatch_kafka::{InMessage, OutRecord, StateRecord, Transform};
use chainwatch_model::{Alert, Event, TenantId, Timestamp, wire};
use chainwatch_sink::decode;

use super::dead_letter;
use super::ingest::ARRIVAL_HEADER;
use crate::telemetry::Metrics;
use crate::telemetry::events::{
    AlertRaised, CorrelatorState, DeadLettered, HostRoleChanged, HostRolesCounted, LookbackState,
    StateRestored,
};

/// The state of one partition of the events topic.
struct Partition {
    engine: Engine,
    /// The engine's totals at the last report, to count differences.
    reported: EngineStats,
    /// The offset after the last message processed: the tag of changes made between messages.
    next: i64,
    /// Per tenant: its newest event time on this partition, and when (wall clock) it came.
    seen: HashMap<TenantId, (Timestamp, Instant)>,
}

/// The correlate core.
pub struct CorrelateCore {
    rules: tokio::sync::watch::Receiver<Arc<RuleSet>>,
    current: Arc<RuleSet>,
    config: EngineConfig,
    /// Idle time after which a tenant's clock moves with the wall clock; `None`: never.
    idle_after: Option<Duration>,
    /// Engines write their changes for a changelog.
    tracked: bool,
    partitions: BTreeMap<i32, Partition>,
    /// Changes not yet taken by the loop.
    changes: Vec<StateRecord>,
    alerts_topic: String,
    alerts_format: FindingFormat,
    dead_letter_topic: String,
    metrics: Arc<Metrics>,
    /// Where host role records go (`None`: nowhere, the topic does not exist).
    roles_topic: Option<String>,
    /// Host roles read back from the roles topic: given to every partition's engine.
    known_roles: Vec<HostRoles>,
    /// A partition's role counts changed since the role gauges were last set: they are set
    /// again at the next tick (counting walks every host with a role, too much per event).
    roles_dirty: bool,
}

fn wall_now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp::from_nanos(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
}

impl CorrelateCore {
    /// A core over the rules `rules` holds now, taking each reload as it comes. `config` holds
    /// the limits of one partition's engine.
    pub fn new(
        mut rules: tokio::sync::watch::Receiver<Arc<RuleSet>>,
        config: EngineConfig,
        alerts_topic: &str,
        alerts_format: FindingFormat,
        dead_letter_topic: &str,
    ) -> Self {
        let current = Arc::clone(&rules.borrow_and_update());
        Self {
            rules,
            current,
            config,
            idle_after: None,
            tracked: false,
            partitions: BTreeMap::new(),
            changes: Vec::new(),
            alerts_topic: alerts_topic.to_owned(),
            alerts_format,
            dead_letter_topic: dead_letter_topic.to_owned(),
            metrics: Metrics::detached(),
            roles_topic: None,
            known_roles: Vec::new(),
            roles_dirty: false,
        }
    }

    /// Writes host role records to `topic` (without it they are only counted as dropped).
    pub fn set_roles_topic(&mut self, topic: Option<String>) {
        self.roles_topic = topic;
    }

    /// Merges host roles read back from the roles topic at start-up.
    pub fn restore_roles(&mut self, records: Vec<HostRoles>) {
        for p in self.partitions.values_mut() {
            p.engine.restore_roles(records.iter().cloned());
        }
        self.known_roles.extend(records);
    }

    /// Reports to `metrics` (instead of a registry nothing serves).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Writes every state change for the changelog ([`Transform::take_state`]).
    pub fn with_changelog(mut self) -> Self {
        self.tracked = true;
        self
    }

    /// Moves idle tenants' clocks after `idle` without events (zero: never).
    pub fn with_idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = (!idle.is_zero()).then_some(idle);
        self
    }

    fn engine(&self) -> Engine {
        let mut e = Engine::new(Arc::clone(&self.current), self.config);
        if self.tracked {
            e.track_changes();
        }
        e.restore_roles(self.known_roles.iter().cloned());
        e
    }

    fn partition(&mut self, partition: i32, next: i64) -> &mut Partition {
        if !self.partitions.contains_key(&partition) {
            let engine = self.engine();
            self.partitions.insert(
                partition,
                Partition {
                    engine,
                    reported: EngineStats::default(),
                    next,
                    seen: HashMap::new(),
                },
            );
        }
        self.partitions
            .get_mut(&partition)
            .unwrap_or_else(|| unreachable!("inserted above"))
    }

    fn reload_if_changed(&mut self) {
        if !self.rules.has_changed().unwrap_or(false) {
            return;
        }
        self.current = Arc::clone(&self.rules.borrow_and_update());
        let mut kept = 0;
        for (&partition, p) in &mut self.partitions {
            kept = p.engine.reload(Arc::clone(&self.current));
            self.changes
                .extend(changes_of(&mut p.engine, partition, p.next));
        }
        tracing::info!(
            stage = "correlate",
            kept,
            "new rules in effect; partial chains of unchanged playbooks kept"
        );
    }

    /// Counts what the engines did since the last report and sets the state gauges.
    fn report_state(&mut self, partition: i32) {
        let total: usize = self
            .partitions
            .values()
            .map(|p| p.engine.partial_chains())
            .sum();
        let lookback: usize = self
            .partitions
            .values()
            .map(|p| p.engine.lookback().len())
            .sum();
        let held = self.partitions.len();
        if let Some(p) = self.partitions.get_mut(&partition) {
            let stats = p.engine.stats();
            CorrelatorState {
                stats: &stats,
                previous: &p.reported,
                partial_chains: total,
                partitions: held,
            }
            .emit(&self.metrics);
            LookbackState {
                held: lookback,
                evicted: stats.lookback_evicted,
                previous: p.reported.lookback_evicted,
            }
            .emit(&self.metrics);
            self.roles_dirty |= p.engine.role_counts_changed();
            p.reported = stats;
        }
    }

    /// Sets the role gauges: the sum of what each partition's engine observed.
    fn report_roles(&self) {
        let mut counts = BTreeMap::new();
        for p in self.partitions.values() {
            for (key, n) in p.engine.roles().counts() {
                *counts.entry(key).or_insert(0) += n;
            }
        }
        HostRolesCounted { counts: &counts }.emit(&self.metrics);
    }

    /// The roles topic records of hosts that gained a role on `partition`'s engine.
    fn role_records(&mut self, partition: i32) -> Vec<OutRecord> {
        let Some(p) = self.partitions.get_mut(&partition) else {
            return Vec::new();
        };
        p.engine
            .take_role_changes()
            .into_iter()
            .filter_map(|host| {
                HostRoleChanged {
                    host: &host,
                    written: self.roles_topic.is_some(),
                }
                .emit(&self.metrics);
                let topic = self.roles_topic.clone()?;
                Some(OutRecord {
                    topic,
                    key: host.key().into_bytes(),
                    payload: serde_json::to_vec(&host).ok()?,
                    headers: Vec::new(),
                })
            })
            .collect()
    }

    fn alert_records(
        &self,
        alerts: Vec<Alert>,
        event_time: Option<Timestamp>,
        arrival_ms: Option<i64>,
    ) -> Vec<OutRecord> {
        let now = SystemTime::now();
        alerts
            .into_iter()
            .map(|alert| {
                AlertRaised {
                    alert: &alert,
                    event_time: event_time.unwrap_or(alert.last_seen),
                    arrival_ms,
                    now,
                }
                .emit(&self.metrics);
                OutRecord {
                    topic: self.alerts_topic.clone(),
                    key: alert.tenant.as_str().as_bytes().to_vec(),
                    payload: decode::encode(&alert, self.alerts_format),
                    headers: vec![
                        ("chainwatch.alert.id", alert.id.to_string().into_bytes()),
                        (
                            decode::FORMAT_HEADER,
                            self.alerts_format.as_str().as_bytes().to_vec(),
                        ),
                    ],
                }
            })
            .collect()
    }

    /// Moves the clocks of the tenants idle since `idle_after` on every partition, as of `now`
    /// (wall clock, and the same as an event time); the findings that closes.
    fn advance_idle(&mut self, now: Instant, wall: Timestamp) -> Vec<Alert> {
        let Some(idle) = self.idle_after else {
            return Vec::new();
        };
        let mut alerts = Vec::new();
        for (&partition, p) in &mut self.partitions {
            if !p.engine.is_clocked() {
                continue;
            }
            for (tenant, (newest, at)) in &p.seen {
                let quiet = now.saturating_duration_since(*at);
                if quiet < idle {
                    continue;
                }
                let moved = newest.add_nanos(i64::try_from(quiet.as_nanos()).unwrap_or(i64::MAX));
                // Never past the wall clock: a source whose clock runs ahead gains nothing.
                let target = moved.min(wall);
                if target > *newest {
                    alerts.extend(p.engine.advance_tenant(tenant, target));
                }
            }
            self.changes
                .extend(changes_of(&mut p.engine, partition, p.next));
        }
        alerts
    }
}

/// The engine's changes as changelog records of `partition`, tagged `tag`.
fn changes_of(engine: &mut Engine, partition: i32, tag: i64) -> Vec<StateRecord> {
    engine
        .take_changes()
        .into_iter()
        .map(|c| StateRecord {
            partition,
            key: c.key,
            value: c.value,
            tag,
        })
        .collect()
}

impl Transform for CorrelateCore {
    fn process(&mut self, msg: &InMessage<'_>) -> Vec<OutRecord> {
        self.reload_if_changed();
        let payload = msg.payload.unwrap_or_default();
        let event: Event = match wire::decode_event(payload, msg.headers.get(wire::ENCODING_HEADER))
        {
            Ok(e) => e,
            Err(e) => {
                DeadLettered {
                    stage: "correlate",
                    reason: "malformed_event",
                    msg,
                    record: None,
                    error: &format!("not an event: {e}"),
                }
                .emit(&self.metrics);
                if let Some(p) = self.partitions.get_mut(&msg.partition) {
                    p.next = msg.offset + 1;
                }
                return vec![dead_letter::record(
                    &self.dead_letter_topic,
                    "correlate",
                    msg,
                    "malformed_event",
                    &e.to_string(),
                )];
            }
        };
        let arrival_ms = msg
            .headers
            .get(ARRIVAL_HEADER)
            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
        let p = self.partition(msg.partition, msg.offset);
        let alerts = p.engine.observe(&event);
        p.next = msg.offset + 1;
        // Looked up before inserting: the usual event's tenant is known, and needs no clone.
        let at = Instant::now();
        match p.seen.get_mut(&event.tenant) {
            Some(seen) => *seen = (seen.0.max(event.time), at),
            None => {
                p.seen.insert(event.tenant.clone(), (event.time, at));
            }
        }
        let changes = changes_of(&mut p.engine, msg.partition, msg.offset);
        self.changes.extend(changes);
        self.report_state(msg.partition);
        let roles = self.role_records(msg.partition);
        let mut out = self.alert_records(alerts, Some(event.time), arrival_ms);
        out.extend(roles);
        out
    }

    fn tick(&mut self) -> Vec<OutRecord> {
        self.reload_if_changed();
        if std::mem::take(&mut self.roles_dirty) {
            self.report_roles();
        }
        let alerts = self.advance_idle(Instant::now(), wall_now());
        if alerts.is_empty() {
            return Vec::new();
        }
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for p in partitions {
            self.report_state(p);
        }
        self.alert_records(alerts, None, None)
    }

    fn take_state(&mut self) -> Vec<StateRecord> {
        std::mem::take(&mut self.changes)
    }

    fn restore(&mut self, partition: i32, from: i64, values: Vec<Vec<u8>>) {
        let started = Instant::now();
        let mut engine = self.engine();
        let stats = engine.restore(values.iter().map(Vec::as_slice));
        let now = Instant::now();
        // Idle time counts from now: the restored tenants' last events came before the crash,
        // and how long before is not known.
        let seen = engine
            .tenant_clocks()
            .map(|(t, c)| (t.clone(), (c, now)))
            .collect();
        self.partitions.insert(
            partition,
            Partition {
                engine,
                reported: EngineStats::default(),
                next: from,
                seen,
            },
        );
        StateRestored {
            partition,
            from,
            stats: &stats,
            elapsed: started.elapsed(),
        }
        .emit(&self.metrics);
        self.report_state(partition);
    }

    fn revoke(&mut self, partition: i32) {
        if self.partitions.remove(&partition).is_some() {
            tracing::info!(partition, "partition revoked: its state is dropped here");
            self.report_roles();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chainwatch_config::sigma::parse_rule_text;
    use chainwatch_kafka::InHeaders;
    use chainwatch_model::{
        Activity, EventClass, EventId, FieldValue, Fields, HostName, SourceFormat, SourceMeta,
    };

    use super::*;

    const T0: i64 = 1_700_000_000_000;

    /// `a.exe` then `b.exe` on a host, with no `undo.exe` within 10 minutes after `b`.
    const PLAYBOOK: &str = "title: Chain\nid: 00000000-0000-4000-8000-0000000000c1\nname: chain\ncorrelation:\n    type: temporal_ordered\n    rules: [a, b]\n    group-by: [Computer]\n    timespan: 1h\nlevel: critical\nplaybook:\n    priority: critical\n    absent:\n        - {rule: undo, after: b, within: 10m}\n";

    fn rules() -> String {
        let mut text = PLAYBOOK.to_owned();
        for n in ["a", "b", "undo"] {
            text.push_str(&format!(
                "---\ntitle: Stage {n}\nname: {n}\ntags: [attack.t1059]\nlogsource: {{product: windows, category: process_creation}}\ndetection:\n    sel: {{Image|endswith: '\\{n}.exe'}}\n    condition: sel\n"
            ));
        }
        text
    }

    fn core() -> CorrelateCore {
        let (docs, diags) = parse_rule_text(Path::new("pb.yml"), &rules());
        assert!(diags.is_empty(), "{diags}");
        let (set, diags) = RuleSet::compile(&docs);
        assert!(diags.is_empty(), "{diags}");
        let (_tx, rx) = tokio::sync::watch::channel(Arc::new(set));
        CorrelateCore::new(
            rx,
            EngineConfig {
                allowed_lateness: Duration::from_secs(60),
                ..EngineConfig::default()
            },
            "chainwatch.alerts",
            FindingFormat::Json,
            "chainwatch.dead-letter",
        )
        .with_idle_after(Duration::from_secs(30))
    }

    fn event(image: &str, secs: i64) -> Vec<u8> {
        let mut fields = Fields::new();
        fields.push("EventID", FieldValue::Int(1));
        fields.push("Image", FieldValue::Str(format!("C:\\x\\{image}").into()));
        let event = Event {
            class: EventClass::ProcessActivity,
            activity: Activity::Launch,
            source: SourceMeta {
                format: SourceFormat::WindowsFlat,
                channel: Some("Microsoft-Windows-Sysmon/Operational".into()),
                provider: None,
                event_id: Some(1),
            },
            fields,
            ..Event::bare(
                EventId::of_record("acme", format!("{image}/{secs}").as_bytes()),
                TenantId::new("acme").unwrap(),
                Timestamp::from_millis(T0 + secs * 1000),
                HostName::new("ws1"),
            )
        };
        serde_json::to_vec(&event).unwrap()
    }

    fn feed(core: &mut CorrelateCore, offset: i64, payload: &[u8]) -> Vec<OutRecord> {
        core.process(&InMessage {
            topic: "chainwatch.events",
            partition: 0,
            offset,
            key: Some(b"acme"),
            payload: Some(payload),
            timestamp: None,
            headers: InHeaders::default(),
        })
    }

    #[test]
    fn an_idle_tenant_s_clock_moves_on_so_an_absence_deadline_passes_without_new_events() {
        let mut core = core();
        assert!(feed(&mut core, 0, &event("a.exe", 0)).is_empty());
        assert!(feed(&mut core, 1, &event("b.exe", 60)).is_empty());
        let quiet_since = Instant::now();
        let wall = Timestamp::from_millis(T0 + 3_600_000);

        // Not idle long enough yet: nothing moves.
        let alerts = core.advance_idle(quiet_since + Duration::from_secs(10), wall);
        assert!(alerts.is_empty(), "{alerts:?}");
        // Idle, but the clock (b + 9 min) has not passed the deadline (b + 10 min) + lateness.
        let alerts = core.advance_idle(quiet_since + Duration::from_secs(540), wall);
        assert!(alerts.is_empty(), "{alerts:?}");
        // b + 11 min 1 s: past the deadline and the allowed lateness, with no event since b.
        let alerts = core.advance_idle(quiet_since + Duration::from_secs(661), wall);
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert!(!alerts[0].partial);
    }

    #[test]
    fn an_idle_clock_never_moves_past_the_wall_clock() {
        let mut core = core();
        assert!(feed(&mut core, 0, &event("a.exe", 0)).is_empty());
        assert!(feed(&mut core, 1, &event("b.exe", 60)).is_empty());
        // Hours of quiet, but the wall clock says only 5 minutes passed since b: no deadline yet.
        let wall = Timestamp::from_millis(T0 + 360_000);
        let alerts = core.advance_idle(Instant::now() + Duration::from_secs(7200), wall);
        assert!(alerts.is_empty(), "{alerts:?}");
    }
}
