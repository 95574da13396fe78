//! The OCSF rendering of a finding: a Detection Finding (class 2004, OCSF 1.7.0).
//!
//! What goes where:
//! - `finding_info`: `uid` = the alert id, `title`, `desc`, `types` (`Chain` / `Detection`), the
//!   `analytic` (the Sigma rule), first and last seen, `attacks` (the techniques of every stage,
//!   in stage order, with their tactics), and `related_events`: every contributing event with
//!   its id, OCSF type, time, the stage it showed (title and number), that stage's `attacks`,
//!   and its provenance (topic, partition, offset or file and line) as tags.
//! - `metadata`: OCSF version, the product, `tenant_uid`, `uid` = the alert id.
//! - `severity_id` / `severity` from the priority; `remediation.desc` from the playbook's
//!   response steps; `device` the host; `actor.user` the user.
//! - `time`: the finding's time is its last evidence's event time, not the wall clock, so the
//!   same input renders byte for byte the same finding (deterministic, like the alert id).
//! - `unmapped.chainwatch`: chainwatch's own alert, whole. OCSF keeps source attributes that
//!   have no place in the class under `unmapped`; for chainwatch that is the evidence detail
//!   (command lines, parent processes, targets). It also makes the finding self-contained: a
//!   sink reading OCSF from the alert topic rebuilds the exact alert ([`crate::decode`]).

use chainwatch_model::{Activity, Alert, AlertKind, EventClass, Provenance, TechniqueId};
use serde_json::{Map, Value, json};

/// The OCSF schema version this rendering follows.
pub const OCSF_VERSION: &str = "1.7.0";
/// Detection Finding.
pub const CLASS_UID: u32 = 2004;
/// Findings.
pub const CATEGORY_UID: u32 = 2;
/// Create: chainwatch reports a finding once; it never updates or closes one.
pub const ACTIVITY_ID: u32 = 1;

/// One alert as an OCSF Detection Finding.
pub fn finding(alert: &Alert) -> Value {
    let mut info = Map::new();
    info.insert("uid".into(), json!(alert.id.to_string()));
    info.insert("title".into(), json!(alert.rule.title));
    if let Some(desc) = &alert.description {
        info.insert("desc".into(), json!(desc));
    }
    info.insert(
        "types".into(),
        json!([match alert.kind {
            AlertKind::Chain => "Chain",
            AlertKind::Detection => "Detection",
        }]),
    );
    info.insert(
        "analytic".into(),
        json!({"uid": alert.rule.id, "name": alert.rule.title, "type_id": 1, "type": "Rule"}),
    );
    info.insert(
        "first_seen_time".into(),
        json!(alert.first_seen.as_millis()),
    );
    info.insert(
        "first_seen_time_dt".into(),
        json!(alert.first_seen.to_string()),
    );
    info.insert("last_seen_time".into(), json!(alert.last_seen.as_millis()));
    info.insert(
        "last_seen_time_dt".into(),
        json!(alert.last_seen.to_string()),
    );
    info.insert("created_time".into(), json!(alert.last_seen.as_millis()));
    info.insert("attacks".into(), Value::Array(finding_attacks(alert)));
    info.insert("related_events".into(), Value::Array(related_events(alert)));
    info.insert("related_events_count".into(), json!(alert.events.len()));
    let mut tags = Vec::new();
    if let Some(p) = &alert.playbook {
        tags.push(json!({"name": "playbook", "value": p}));
    }
    for (k, v) in &alert.group {
        tags.push(json!({"name": format!("group.{k}"), "value": v}));
    }
    if !tags.is_empty() {
        info.insert("tags".into(), Value::Array(tags));
    }

    let mut f = Map::new();
    f.insert("class_uid".into(), json!(CLASS_UID));
    f.insert("class_name".into(), json!("Detection Finding"));
    f.insert("category_uid".into(), json!(CATEGORY_UID));
    f.insert("category_name".into(), json!("Findings"));
    f.insert("activity_id".into(), json!(ACTIVITY_ID));
    f.insert("activity_name".into(), json!("Create"));
    f.insert("type_uid".into(), json!(CLASS_UID * 100 + ACTIVITY_ID));
    f.insert("type_name".into(), json!("Detection Finding: Create"));
    f.insert("time".into(), json!(alert.last_seen.as_millis()));
    f.insert("time_dt".into(), json!(alert.last_seen.to_string()));
    f.insert("start_time".into(), json!(alert.first_seen.as_millis()));
    f.insert("end_time".into(), json!(alert.last_seen.as_millis()));
    f.insert("severity_id".into(), json!(alert.severity.ocsf_id()));
    f.insert("severity".into(), json!(severity_caption(alert)));
    f.insert("status_id".into(), json!(1));
    f.insert("status".into(), json!("New"));
    f.insert("is_alert".into(), json!(true));
    f.insert("message".into(), json!(message(alert)));
    f.insert(
        "metadata".into(),
        json!({
            "version": OCSF_VERSION,
            "product": {
                "name": "chainwatch",
                "vendor_name": "chainwatch",
                "version": env!("CARGO_PKG_VERSION"),
            },
            "profiles": ["host", "datetime"],
            "tenant_uid": alert.tenant.as_str(),
            "uid": alert.id.to_string(),
        }),
    );
    f.insert("finding_info".into(), Value::Object(info));
    f.insert(
        "device".into(),
        json!({"hostname": alert.host.display(), "name": alert.host.key(), "type_id": 0, "type": "Unknown"}),
    );
    if let Some(user) = &alert.user {
        f.insert("actor".into(), json!({"user": {"name": user}}));
    }
    if !alert.response.is_empty() {
        let steps: Vec<String> = alert
            .response
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{}. {s}", i + 1))
            .collect();
        f.insert("remediation".into(), json!({"desc": steps.join("\n")}));
    }
    f.insert(
        "unmapped".into(),
        json!({ "chainwatch": serde_json::to_value(alert).unwrap_or(Value::Null) }),
    );
    Value::Object(f)
}

/// One alert as one line of OCSF JSON.
pub fn line(alert: &Alert) -> String {
    finding(alert).to_string()
}

fn severity_caption(alert: &Alert) -> &'static str {
    match alert.severity.ocsf_id() {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        _ => "Critical",
    }
}

fn message(alert: &Alert) -> String {
    match alert.kind {
        AlertKind::Chain => format!(
            "{} on {} ({} stages)",
            alert.rule.title,
            alert.host.display(),
            alert.stages.len()
        ),
        AlertKind::Detection => format!("{} on {}", alert.rule.title, alert.host.display()),
    }
}

/// An OCSF `attack` object for one technique: the technique (the parent for a
/// sub-technique), the sub-technique, and its tactics with names from the ATT&CK table.
pub fn attack(t: TechniqueId) -> Value {
    let info = t.info();
    let name = |id: TechniqueId| id.info().map(|i| i.name);
    let mut a = Map::new();
    if t.parent() == t {
        a.insert("technique".into(), entity(&t.to_string(), name(t)));
    } else {
        a.insert(
            "technique".into(),
            entity(&t.parent().to_string(), name(t.parent())),
        );
        a.insert("sub_technique".into(), entity(&t.to_string(), name(t)));
    }
    if let Some(info) = info {
        let tactics: Vec<Value> = info
            .tactics
            .iter()
            .map(|tc| json!({"uid": tc.id, "name": tc.name}))
            .collect();
        if let Some(first) = tactics.first() {
            a.insert("tactic".into(), first.clone());
        }
        a.insert("tactics".into(), Value::Array(tactics));
    }
    Value::Object(a)
}

fn entity(uid: &str, name: Option<&str>) -> Value {
    match name {
        Some(n) => json!({"uid": uid, "name": n}),
        None => json!({"uid": uid}),
    }
}

/// Every technique, each once, in stage order; techniques of the correlation rule itself last.
fn finding_attacks(alert: &Alert) -> Vec<Value> {
    let mut seen: Vec<TechniqueId> = Vec::new();
    let ordered = alert
        .stages
        .iter()
        .flat_map(|s| s.techniques.iter())
        .chain(alert.techniques.iter());
    for t in ordered {
        if !seen.contains(t) {
            seen.push(*t);
        }
    }
    seen.into_iter().map(attack).collect()
}

fn related_events(alert: &Alert) -> Vec<Value> {
    alert
        .events
        .iter()
        .map(|e| {
            let stage = alert.stages.iter().position(|s| s.events.contains(&e.id));
            let (class, class_name) = class_of(e.class);
            let (activity, activity_name) = activity_of(e.class, e.activity);
            let mut r = Map::new();
            r.insert("uid".into(), json!(e.id.to_string()));
            if class != 0 {
                r.insert("type_uid".into(), json!(u64::from(class) * 100 + activity));
                r.insert(
                    "type_name".into(),
                    json!(format!("{class_name}: {activity_name}")),
                );
            }
            r.insert("first_seen_time".into(), json!(e.time.as_millis()));
            r.insert("first_seen_time_dt".into(), json!(e.time.to_string()));
            let techniques = match stage {
                Some(i) => {
                    let s = &alert.stages[i];
                    r.insert("title".into(), json!(s.rule.title));
                    s.techniques.clone()
                }
                None => {
                    r.insert("title".into(), json!(alert.rule.title));
                    alert.techniques.clone()
                }
            };
            if !techniques.is_empty() {
                r.insert(
                    "attacks".into(),
                    Value::Array(techniques.into_iter().map(attack).collect()),
                );
            }
            let mut tags = vec![
                json!({"name": "rule", "value": e.rule}),
                json!({"name": "provenance", "value": e.provenance.to_string()}),
            ];
            if let Some(i) = stage {
                tags.push(json!({"name": "stage", "value": (i + 1).to_string()}));
            }
            tags.extend(provenance_tags(&e.provenance));
            if let Some(id) = e.event_id {
                tags.push(json!({"name": "event_code", "value": id.to_string()}));
            }
            r.insert("tags".into(), Value::Array(tags));
            Value::Object(r)
        })
        .collect()
}

fn provenance_tags(p: &Provenance) -> Vec<Value> {
    let tag = |n: &str, v: String| json!({"name": n, "value": v});
    match p {
        Provenance::Kafka {
            topic,
            partition,
            offset,
            record,
        } => {
            let mut v = vec![
                tag("provenance.topic", topic.clone()),
                tag("provenance.partition", partition.to_string()),
                tag("provenance.offset", offset.to_string()),
            ];
            if let Some(r) = record {
                v.push(tag("provenance.record", r.to_string()));
            }
            v
        }
        Provenance::File { path, line, record } => {
            let mut v = vec![tag("provenance.path", path.to_string())];
            if let Some(l) = line {
                v.push(tag("provenance.line", l.to_string()));
            }
            if let Some(r) = record {
                v.push(tag("provenance.record", r.to_string()));
            }
            v
        }
    }
}

fn class_of(c: EventClass) -> (u32, &'static str) {
    let name = match c {
        EventClass::FileActivity => "File System Activity",
        EventClass::ModuleActivity => "Module Activity",
        EventClass::ScheduledJobActivity => "Scheduled Job Activity",
        EventClass::ProcessActivity => "Process Activity",
        EventClass::EventLogActivity => "Event Log Activity",
        EventClass::ScriptActivity => "Script Activity",
        EventClass::AccountChange => "Account Change",
        EventClass::Authentication => "Authentication",
        EventClass::GroupManagement => "Group Management",
        EventClass::NetworkActivity => "Network Activity",
        EventClass::HttpActivity => "HTTP Activity",
        EventClass::DnsActivity => "DNS Activity",
        EventClass::ApiActivity => "API Activity",
        EventClass::RegistryActivity => "Registry Value Activity",
        EventClass::ServiceActivity => "Windows Service Activity",
        EventClass::Other => "Base Event",
    };
    (c.ocsf_uid(), name)
}

/// OCSF `activity_id` of an activity within its class, where chainwatch's activity names one
/// of the class's own; 99 (Other) elsewhere, rather than a guess.
fn activity_of(c: EventClass, a: Activity) -> (u64, &'static str) {
    use Activity as A;
    use EventClass as C;
    match (c, a) {
        (C::ProcessActivity, A::Launch) => (1, "Launch"),
        (C::ProcessActivity, A::Terminate) => (2, "Terminate"),
        (C::ProcessActivity, A::Open) => (3, "Open"),
        (C::ProcessActivity, A::Inject) => (4, "Inject"),
        (C::FileActivity, A::Create) => (1, "Create"),
        (C::FileActivity, A::Read) => (2, "Read"),
        (C::FileActivity, A::Update) => (3, "Update"),
        (C::FileActivity, A::Delete) => (4, "Delete"),
        (C::FileActivity, A::Rename) => (5, "Rename"),
        (C::ModuleActivity, A::Load) => (1, "Load"),
        (C::ScriptActivity, A::Execute) => (1, "Execute"),
        (C::AccountChange, A::Create) => (1, "Create"),
        (C::Authentication, A::Logon) => (1, "Logon"),
        (C::Authentication, A::Logoff) => (2, "Logoff"),
        _ => (99, "Other"),
    }
}
