//! The pure delivery logic on a real finding (the bundled sample's chain alert, as `chainwatch
//! replay` prints it): the OCSF rendering against the Detection Finding's required attributes,
//! both topic forms, routing, payload presets and templates, file rotation.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

use std::time::{Duration, SystemTime};

use chainwatch_config::service::{FindingFormat, Payload, RouteConfig, SinkConfig};
use chainwatch_config::{Secret, SecretSource};
use chainwatch_model::{Alert, AlertKind, Severity, TenantId};
use chainwatch_sink::decode::{DecodeError, decode, encode};
use chainwatch_sink::file::{JsonLinesFile, Rotation, is_rotated};
use chainwatch_sink::presets::PayloadBuilder;
use chainwatch_sink::{Router, ocsf};
use serde_json::Value;

fn chain_alert() -> Alert {
    serde_json::from_str(include_str!("fixtures/chain-alert.json")).unwrap()
}

/// A single-detection alert for `tenant` (no stages, no playbook).
fn detection(tenant: &str, severity: Severity) -> Alert {
    let mut a = chain_alert();
    a.tenant = TenantId::new(tenant).unwrap();
    a.kind = AlertKind::Detection;
    a.severity = severity;
    a.playbook = None;
    a.stages.clear();
    a.events.truncate(1);
    a.response.clear();
    a.id = chainwatch_model::AlertId::from_u128(
        u128::from(severity as u8) << 64 | tenant.len() as u128,
    );
    a
}

/// The attributes OCSF 1.7.0 marks `required`, written here from the schema documentation
/// (schema.ocsf.io, classes/detection_finding and the objects it uses). Detection Finding
/// extends Finding, which extends Base Event:
/// - Base Event: activity_id, category_uid, class_uid, metadata, severity_id, time, type_uid.
/// - Finding: finding_info.
/// - Detection Finding adds none of its own. (`cloud` and `osint` are required only with the
///   Cloud and OSINT profiles, which chainwatch does not apply.)
///
/// Objects: metadata requires product and version; product requires name or uid (at least
/// one); finding_info requires uid; related_event requires uid; analytic requires type_id;
/// remediation requires desc; attack requires at least one of tactic, technique,
/// sub_technique; technique, sub_technique and tactic at least one of name, uid; device
/// requires type_id.
const FINDING_REQUIRED: &[&str] = &[
    "activity_id",
    "category_uid",
    "class_uid",
    "finding_info",
    "metadata",
    "severity_id",
    "time",
    "type_uid",
];

fn has(v: &Value, path: &str) -> bool {
    path.split('.')
        .try_fold(v, |v, k| v.get(k))
        .is_some_and(|x| !x.is_null())
}

fn check_attack(a: &Value, what: &str) {
    assert!(
        ["tactic", "technique", "sub_technique"]
            .iter()
            .any(|k| has(a, k)),
        "{what}: an attack needs a tactic, technique or sub_technique: {a}"
    );
    for k in ["tactic", "technique", "sub_technique"] {
        if let Some(x) = a.get(k) {
            assert!(has(x, "uid") || has(x, "name"), "{what}.{k}: {x}");
        }
    }
    for t in a
        .get("tactics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        assert!(has(t, "uid") || has(t, "name"), "{what}.tactics: {t}");
    }
}

/// Checks a rendering against the required attributes and the class's fixed values.
fn validate_detection_finding(f: &Value) {
    for attr in FINDING_REQUIRED {
        assert!(has(f, attr), "required attribute {attr} missing");
    }
    assert_eq!(f["class_uid"], 2004);
    assert_eq!(f["category_uid"], 2);
    let activity = f["activity_id"].as_u64().unwrap();
    assert!([0, 1, 2, 3, 99].contains(&activity));
    assert_eq!(f["type_uid"].as_u64().unwrap(), 2004 * 100 + activity);
    let sev = f["severity_id"].as_u64().unwrap();
    assert!((0..=6).contains(&sev) || sev == 99);
    assert!(
        f["time"].as_i64().unwrap() > 0,
        "time is epoch milliseconds"
    );
    for attr in ["metadata.version", "metadata.product"] {
        assert!(has(f, attr), "{attr} missing");
    }
    assert!(has(f, "metadata.product.name") || has(f, "metadata.product.uid"));
    assert!(has(f, "finding_info.uid"));
    if let Some(a) = f["finding_info"].get("analytic") {
        assert!(has(a, "type_id"), "analytic.type_id");
        assert!(has(a, "uid") || has(a, "name"));
    }
    for a in f["finding_info"]["attacks"]
        .as_array()
        .into_iter()
        .flatten()
    {
        check_attack(a, "finding_info.attacks");
    }
    for r in f["finding_info"]["related_events"]
        .as_array()
        .into_iter()
        .flatten()
    {
        assert!(has(r, "uid"), "related_event.uid: {r}");
        for a in r
            .get("attacks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            check_attack(a, "related_events.attacks");
        }
    }
    if let Some(r) = f.get("remediation") {
        assert!(has(r, "desc"), "remediation.desc");
    }
    if let Some(d) = f.get("device") {
        assert!(has(d, "type_id"), "device.type_id");
    }
}

#[test]
fn ocsf_rendering_has_every_required_detection_finding_attribute() {
    let alert = chain_alert();
    let f = ocsf::finding(&alert);
    validate_detection_finding(&f);
    validate_detection_finding(&ocsf::finding(&detection("acme", Severity::Low)));

    let info = &f["finding_info"];
    assert_eq!(info["uid"], alert.id.to_string());
    assert_eq!(f["metadata"]["tenant_uid"], "contoso");
    assert_eq!(f["severity_id"], 5, "critical");
    assert_eq!(f["severity"], "Critical");
    // Every contributing event, with its provenance and its stage.
    let related = info["related_events"].as_array().unwrap();
    assert_eq!(related.len(), alert.events.len());
    for (r, e) in related.iter().zip(&alert.events) {
        assert_eq!(r["uid"], e.id.to_string());
        let tags = r["tags"].as_array().unwrap();
        let tag = |n: &str| {
            tags.iter()
                .find(|t| t["name"] == n)
                .map(|t| t["value"].as_str().unwrap().to_owned())
        };
        assert_eq!(tag("provenance"), Some(e.provenance.to_string()));
        assert!(tag("provenance.path").is_some() && tag("provenance.line").is_some());
        assert!(tag("stage").is_some());
    }
    assert_eq!(
        related[2]["type_uid"], 100703,
        "LSASS access is Process Activity: Open"
    );
    // Attacks per stage, with technique and tactic names.
    let stage3 = related[2]["attacks"].as_array().unwrap();
    assert_eq!(stage3[0]["sub_technique"]["uid"], "T1003.001");
    assert_eq!(stage3[0]["sub_technique"]["name"], "LSASS Memory");
    assert_eq!(stage3[0]["technique"]["uid"], "T1003");
    assert_eq!(stage3[0]["tactic"]["name"], "Credential Access");
    let uids: Vec<String> = info["attacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a.get("sub_technique").unwrap_or(&a["technique"])["uid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let expected: Vec<String> = alert.techniques.iter().map(ToString::to_string).collect();
    assert_eq!(uids, expected, "every technique once, in stage order");
    // Remediation from the response steps.
    let desc = f["remediation"]["desc"].as_str().unwrap();
    for step in &alert.response {
        assert!(desc.contains(step.as_str()), "{desc}");
    }
    // Deterministic: the same finding renders the same bytes.
    assert_eq!(ocsf::line(&alert), ocsf::line(&chain_alert()));
}

#[test]
fn sinks_read_findings_in_either_form() {
    let alert = chain_alert();
    for format in [FindingFormat::Json, FindingFormat::Ocsf] {
        let bytes = encode(&alert, format);
        assert_eq!(decode(&bytes, Some(format.as_str())).unwrap(), alert);
        assert_eq!(
            decode(&bytes, None).unwrap(),
            alert,
            "recognised without the header"
        );
    }
    assert!(matches!(
        decode(
            br#"{"class_uid": 2004, "finding_info": {"uid": "x"}}"#,
            None
        ),
        Err(DecodeError::ForeignOcsf)
    ));
    assert!(matches!(
        decode(b"not json", None),
        Err(DecodeError::Json { .. })
    ));
    assert!(matches!(
        decode(b"{}", Some("xml")),
        Err(DecodeError::UnknownFormat(_))
    ));
}

fn stdout_sink(name: &str, route: RouteConfig) -> SinkConfig {
    SinkConfig::Stdout {
        name: name.into(),
        format: Default::default(),
        route,
    }
}

fn route(tenant: Option<&str>, default: bool) -> RouteConfig {
    RouteConfig {
        tenant: tenant.map(str::to_owned),
        default,
        ..RouteConfig::default()
    }
}

#[test]
fn routes_keep_tenants_apart_and_send_the_rest_to_the_default() {
    let acme_high = RouteConfig {
        min_severity: Some(Severity::High),
        ..route(Some("acme"), false)
    };
    let router = Router::new(&[
        stdout_sink("acme-jira", acme_high),
        stdout_sink("globex-queue", route(Some("globex"), false)),
        stdout_sink("msp-default", route(None, true)),
        stdout_sink("archive", route(None, false)),
        stdout_sink(
            "ransomware-pager",
            RouteConfig {
                playbooks: vec!["exchange_to_ransomware".into()],
                ..RouteConfig::default()
            },
        ),
    ]);
    let d = |a: &Alert| router.destinations(a);
    assert_eq!(
        d(&detection("acme", Severity::Critical)),
        ["acme-jira", "archive"]
    );
    assert_eq!(
        d(&detection("acme", Severity::Medium)),
        ["msp-default", "archive"],
        "what acme's route filters out goes to the default queue, never to another tenant"
    );
    assert_eq!(
        d(&detection("globex", Severity::Low)),
        ["globex-queue", "archive"]
    );
    assert_eq!(
        d(&detection("initech", Severity::High)),
        ["msp-default", "archive"],
        "a tenant without a destination of its own"
    );
    let chain = chain_alert();
    assert_eq!(d(&chain), ["msp-default", "archive", "ransomware-pager"]);

    // Whatever the alert, a tenant's destination only ever takes that tenant's alerts.
    for tenant in ["acme", "globex", "initech", "acme2", "ACME"] {
        for sev in Severity::ALL {
            let a = detection(tenant, sev);
            for sink in d(&a) {
                if let Some(owner) = sink.strip_suffix("-jira").or(sink.strip_suffix("-queue")) {
                    assert_eq!(owner, tenant, "{sink} took a {tenant} alert");
                }
            }
        }
    }
    assert!(!router.accepts("no-such-sink", &chain));
}

fn body(payload: Payload, alert: &Alert) -> Value {
    let b = PayloadBuilder::new(&payload).unwrap().build(alert).unwrap();
    assert_eq!(b.content_type, "application/json");
    serde_json::from_slice(&b.bytes).unwrap()
}

#[test]
fn presets_carry_the_alert_id_where_each_tool_deduplicates() {
    let alert = chain_alert();
    let id = alert.id.to_string();

    let pd = body(
        Payload::PagerDuty {
            routing_key: Secret::with_value(SecretSource::Env("PD".into()), "R0UT1NG"),
        },
        &alert,
    );
    assert_eq!(pd["dedup_key"], id);
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["routing_key"], "R0UT1NG");
    assert_eq!(pd["payload"]["severity"], "critical");
    assert_eq!(pd["payload"]["source"], "EXCH01.contoso.local");
    assert!(pd["payload"]["summary"].as_str().unwrap().len() <= 1024);

    let hive = body(Payload::TheHive { tlp: 2, pap: 2 }, &alert);
    assert_eq!(hive["sourceRef"], id);
    assert_eq!(hive["severity"], 4);
    assert_eq!(hive["type"], "chainwatch");
    assert!(
        hive["tags"]
            .as_array()
            .unwrap()
            .contains(&"attack:T1003.001".into())
    );

    let snow = body(
        Payload::ServiceNow {
            assignment_group: Some("SOC".into()),
            caller_id: None,
            category: None,
        },
        &alert,
    );
    assert_eq!(snow["correlation_id"], id);
    assert_eq!(snow["urgency"], "1");
    assert_eq!(snow["assignment_group"], "SOC");
    assert!(snow.get("caller_id").is_none());

    let jira = body(
        Payload::Jira {
            project: "SEC".into(),
            issue_type: "Incident".into(),
            labels: vec!["mdr".into()],
        },
        &alert,
    );
    assert_eq!(jira["fields"]["project"]["key"], "SEC");
    assert_eq!(jira["fields"]["issuetype"]["name"], "Incident");
    let labels = jira["fields"]["labels"].as_array().unwrap();
    assert!(labels.contains(&format!("chainwatch-{id}").into()));
    assert!(labels.contains(&"mdr".into()));
    let description = jira["fields"]["description"].as_str().unwrap();
    assert!(description.contains("LSASS memory read with dumping rights"));
    assert!(
        description.contains("examples/exchange-intrusion.jsonl:1322"),
        "evidence provenance"
    );

    let slack = body(Payload::Slack {}, &alert);
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .contains("Exchange exploitation")
    );
    assert!(slack["blocks"].to_string().contains(&id));

    let teams = body(Payload::Teams {}, &alert);
    assert_eq!(
        teams["attachments"][0]["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(teams["attachments"][0]["content"]["type"], "AdaptiveCard");
    assert!(teams.to_string().contains(&id));

    let generic = body(
        Payload::Generic {
            format: FindingFormat::Ocsf,
        },
        &alert,
    );
    assert_eq!(generic["finding_info"]["uid"], id);
    let generic = body(Payload::default(), &alert);
    assert_eq!(generic["id"], id);
}

#[test]
fn user_templates_render_json_and_fail_with_their_line() {
    let alert = chain_alert();
    let template = |text: &str| Payload::Template {
        body: Some(text.into()),
        file: None,
        content_type: "application/json".into(),
    };
    let v = body(
        template(
            "{\"key\": {{ alert.id|tojson }}, \"title\": {{ summary|tojson }},\n \"tenant\": {{ ocsf.metadata.tenant_uid|tojson }}, \"stages\": {{ alert.stages|length }}}",
        ),
        &alert,
    );
    assert_eq!(v["key"], alert.id.to_string());
    assert_eq!(v["tenant"], "contoso");
    assert_eq!(v["stages"], 4);
    assert!(v["title"].as_str().unwrap().starts_with("[CRITICAL]"));

    let broken = PayloadBuilder::new(&template("{\n  \"a\": {{ alert.id \n}")).unwrap_err();
    assert!(broken.to_string().contains("line"), "{broken}");
    // A variable that does not exist is an error for this finding, not an empty field.
    let missing = PayloadBuilder::new(&template("{{ alert.no_such_field }}"))
        .unwrap()
        .build(&alert)
        .unwrap_err();
    assert!(missing.contains("undefined"), "{missing}");
}

#[test]
fn json_lines_files_rotate_by_size_and_keep_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out").join("alerts.jsonl");
    let alert = chain_alert();
    let line_len = encode(&alert, FindingFormat::Json).len() as u64 + 1;
    let mut f = JsonLinesFile::open(
        &path,
        FindingFormat::Json,
        Rotation {
            size: Some(line_len * 2),
            every: None,
        },
        2,
    )
    .unwrap();
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    for i in 0..9 {
        // Two writes per simulated second: rotated names within one second get a suffix.
        f.write(&alert, t0 + Duration::from_millis(500 * i))
            .unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let rotated: Vec<&String> = names.iter().filter(|n| is_rotated(&path, n)).collect();
    assert_eq!(rotated.len(), 2, "keep = 2: {names:?}");
    assert_eq!(names.len(), 3, "{names:?}");
    // 9 lines, two per file: the live file has the ninth alone.
    let live = std::fs::read_to_string(&path).unwrap();
    assert_eq!(live.lines().count(), 1);
    for n in &rotated {
        let text = std::fs::read_to_string(path.parent().unwrap().join(n)).unwrap();
        assert_eq!(text.lines().count(), 2, "{n}");
        for l in text.lines() {
            assert_eq!(serde_json::from_str::<Alert>(l).unwrap().id, alert.id);
        }
    }

    // Reopening appends; age-based rotation starts a new file when due.
    drop(f);
    let mut f = JsonLinesFile::open(
        &path,
        FindingFormat::Ocsf,
        Rotation {
            size: None,
            every: Some(Duration::from_secs(3600)),
        },
        0,
    )
    .unwrap();
    let later = SystemTime::now() + Duration::from_secs(7200);
    f.write(&alert, later).unwrap();
    let live = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        live.lines().count(),
        1,
        "the old live file was rotated away"
    );
    let v: Value = serde_json::from_str(live.trim()).unwrap();
    assert_eq!(v["class_uid"], 2004);
}

#[test]
fn the_readable_form_shows_stages_techniques_host_evidence_and_steps() {
    let alert = chain_alert();
    let text = chainwatch_sink::render::pretty(&alert);
    for expected in [
        "CRITICAL  Exchange exploitation to ransomware",
        "host EXCH01.contoso.local",
        "1. 2026-11-20T02:14:07.120Z  IIS worker process spawns a shell",
        "T1003.001 LSASS Memory (Credential Access)",
        "w3wp.exe > cmd /c whoami",
        "rundll32.exe -> process lsass.exe",
        "[examples/exchange-intrusion.jsonl:1322]",
        "respond:",
        "1. Isolate the host",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Each piece of evidence sits under its own stage.
    let stage3 = text.find("3. ").unwrap();
    let stage4 = text.find("4. ").unwrap();
    let lsass = text.find("lsass.exe").unwrap();
    assert!(stage3 < lsass && lsass < stage4, "{text}");

    let single = chainwatch_sink::render::pretty(&detection("acme", Severity::Low));
    assert!(
        single.starts_with("LOW  Exchange exploitation to ransomware"),
        "{single}"
    );
    assert!(single.contains("detection "), "{single}");
    assert!(single.contains("T1190 Exploit Public-Facing Application (Initial Access)"));
}
