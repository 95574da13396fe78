//! Investigating a running deployment: the correlate stage infers host roles from the
//! telemetry it sees and writes them to the roles topic, `chainwatch hosts --config` lists
//! them, and a restarted chainwatch reads them back; `chainwatch explain ID --config` finds a
//! finding on the alerts topic.
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::time::Duration;

use chainwatch_correlate::HostRoles;
use support::shared::{self, stdout_of};
use support::*;

fn record(host: &str, fields: serde_json::Value) -> Vec<u8> {
    let mut v = serde_json::json!({"@timestamp": "2026-11-20T03:00:00.000Z", "Hostname": host});
    v.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    serde_json::to_vec(&v).unwrap()
}

fn hosts(config: &std::path::Path, args: &[&str]) -> String {
    stdout_of(
        shared::chainwatch()
            .args(["hosts", "--config", config.to_str().unwrap()])
            .args(args),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn investigating_a_running_deployment_hosts_by_role_across_a_restart_and_a_finding_by_id() {
    let names = Names::new();
    let dir = tempfile::tempdir().unwrap();
    let config = names.write_config(dir.path(), "");
    let raw = names.raw("contoso");
    create_topics(&[&raw], 2).await;
    let cw = Chainwatch::run(&config, &[]);

    let records = vec![
        // Exchange writes its own logs.
        record(
            "EXCH01.contoso.local",
            serde_json::json!({"Channel": "MSExchange Management", "SourceName": "MSExchange CmdletLogs",
                "EventID": 1, "Data": "Get-Mailbox"}),
        ),
        // An IIS worker on a plain web server.
        record(
            "WEB02",
            serde_json::json!({"Channel": "Microsoft-Windows-Sysmon/Operational", "SourceName": "Microsoft-Windows-Sysmon",
                "EventID": 1, "Image": "C:\\Windows\\System32\\inetsrv\\w3wp.exe",
                "CommandLine": "w3wp.exe -ap \"DefaultAppPool\"", "ParentImage": "C:\\Windows\\System32\\svchost.exe"}),
        ),
        // Only a domain controller's KDC logs service tickets.
        record(
            "DC01",
            serde_json::json!({"Channel": "Security", "SourceName": "Microsoft-Windows-Security-Auditing",
                "EventID": 4769, "ServiceName": "krbtgt", "TargetUserName": "WS1$"}),
        ),
    ];
    let mut all: Vec<(String, Vec<u8>)> = records.into_iter().map(|r| ("k".into(), r)).collect();
    all.extend(noise("WS1", 10).into_iter().map(|r| ("k".into(), r)));
    // And an intrusion on the Exchange server (its web shell's parent is an IIS worker).
    all.extend(
        stages("EXCH01.contoso.local", 0)
            .into_iter()
            .map(|(_, r)| ("x".into(), r)),
    );
    produce(&raw, &all).await;
    let limit = Duration::from_secs(90);
    await_caught_up(&format!("{}-ingest", names.groups), &[&raw], limit);
    await_caught_up(
        &format!("{}-correlate", names.groups),
        &[&names.events],
        limit,
    );

    let exchange: Vec<HostRoles> = hosts(&config, &["--role", "exchange", "--output", "json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exchange.len(), 1, "{exchange:#?}");
    assert_eq!(exchange[0].tenant.as_str(), "contoso");
    assert_eq!(exchange[0].host.key(), "exch01");
    assert_eq!(exchange[0].roles["exchange"].signal, "exchange_log");
    let table = hosts(&config, &["--tenant", "contoso"]);
    let rows: Vec<&str> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows.iter()
            .any(|r| r.contains("EXCH01") && r.contains("iis"))
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("DC01") && r.contains("domain_controller"))
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("WEB02") && r.contains("iis"))
    );
    assert!(!table.contains("WS1"), "{table}");
    assert_eq!(cw.stop().code(), Some(0));

    // The finding, by id, from the alerts topic: its latest revision, with its look-back.
    let findings: Vec<chainwatch_model::Alert> = read_all(&names.alerts)
        .iter()
        .map(|r| serde_json::from_slice(&r.payload).unwrap())
        .collect();
    let id = findings[0].id.to_string();
    let latest = findings.iter().map(|a| a.revision).max().unwrap();
    let page = dir.path().join("finding.html");
    let text = stdout_of(
        shared::chainwatch()
            .args(["explain", &id, "--config", config.to_str().unwrap()])
            .args(["--html", page.to_str().unwrap()]),
    );
    assert!(
        text.contains(&format!("complete chain, revision {latest}")),
        "{text}"
    );
    assert!(text.contains(&format!("alert {id}")), "{text}");
    assert!(
        std::fs::read_to_string(&page)
            .unwrap()
            .contains("Stage 4: recovery_inhibited")
    );

    // A restarted correlator reads them back.
    let cw = Chainwatch::run_logging(&config, &[], "info");
    // Running (its signal handler in place), then the correlate stage reads the roles back
    // before it consumes its first event.
    cw.await_log(&["chainwatch running"], limit);
    cw.await_log(&["host roles read back", "hosts=3"], limit);
    assert_eq!(cw.stop().code(), Some(0));
}
