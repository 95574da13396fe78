//! Evaluation of the shipped playbooks on real telemetry (`../shared/datasets`): the real
//! partial chains raise the findings they should, and the benign recordings raise no chain
//! finding. Each recording is replayed through the `chainwatch replay` command, as a user would.
#![allow(clippy::unwrap_used)] // Test helpers: a failed unwrap is a failed test.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use chainwatch_model::{Alert, AlertKind, HostName};
use support::shared::{chainwatch, dataset, stdout_of};

/// Replays a file with the shipped playbooks; returns each finding at its latest revision and
/// the number of stage-rule matches. Every record must decode: a recording the decoder could
/// not read would pass "no finding" for the wrong reason.
fn findings(file: &Path, tmp: &Path) -> (Vec<Alert>, u64) {
    let stats = tmp.join("stats.json");
    let out = stdout_of(
        chainwatch()
            .args(["replay", "--output", "json", "--stats"])
            .arg(&stats)
            .arg(file),
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert!(
        stats["events_normalized"].as_u64().unwrap() > 0
            && stats["dead_lettered"].as_object().unwrap().is_empty(),
        "{}: {stats}",
        file.display()
    );
    let mut latest: BTreeMap<String, Alert> = BTreeMap::new();
    for line in out.lines() {
        let a: Alert = serde_json::from_str(line).unwrap();
        if a.kind != AlertKind::Chain {
            continue;
        }
        let id = a.id.to_string();
        if latest.get(&id).is_none_or(|old| a.revision >= old.revision) {
            latest.insert(id, a);
        }
    }
    (
        latest.into_values().collect(),
        stats["matches"].as_u64().unwrap(),
    )
}

/// (playbook, complete, host) of a finding.
type Found = (String, bool, String);

fn summary(alerts: &[Alert]) -> Vec<Found> {
    let mut v: Vec<Found> = alerts
        .iter()
        .map(|a| {
            (
                a.playbook.clone().unwrap_or_default(),
                !a.partial,
                a.host.key().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn expect(list: &[(&str, bool, &str)]) -> Vec<Found> {
    let mut v: Vec<Found> = list
        .iter()
        .map(|(p, c, h)| ((*p).to_owned(), *c, HostName::new(h).key().to_owned()))
        .collect();
    v.sort();
    v
}

#[test]
fn real_recordings_raise_the_findings_they_should() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<Found>)> = vec![
        (
            // Real ProxyLogon exploitation: OAB cmdlet with script, .aspx written by System,
            // w3wp -> cmd whoami. The ransomware playbook sees only its first stage.
            "otrf/proxylogon_ssrf_rce_poc_2021-03-14T01401970.json",
            expect(&[
                ("proxylogon", true, "MXS01"),
                ("exchange_to_ransomware", false, "MXS01"),
            ]),
        ),
        (
            // A user runs a disguised payload, discovery follows, procdump dumps LSASS.
            "otrf/LSASS_campaign_02_metasploit_procdump_lsass_memory_dump.zip",
            expect(&[("credential_theft_after_exploitation", true, "ACCT01")]),
        ),
        (
            // WMIC /node from WORKSTATION5 creates an account on WORKSTATION6.
            "otrf/empire_wmic_add_user_backdoor.zip",
            expect(&[("lateral_movement_account_creation", true, "WORKSTATION6")]),
        ),
        // An atomic LSASS dump with no exploitation or discovery before it: no chain.
        (
            "otrf/psh_lsass_memory_dump_comsvcs_2020-10-18T19500924.json",
            expect(&[]),
        ),
        // Benign: a shadow copy created (not deleted) on a domain controller.
        (
            "otrf/cmd_dumping_ntds_dit_file_volume_shadow_copy.zip",
            expect(&[]),
        ),
        // Benign: `net1 user` discovery without /add.
        ("otrf/empire_shell_net_local_users.zip", expect(&[])),
        // EVTX. Benign: an ordinary workstation's Security log, with two legitimate admin
        // accounts created (4720) and nothing before or after them.
        ("evtx-samples/security.evtx", expect(&[])),
        // Mail forwarding set through the Exchange PowerShell app pool (Set-Mailbox
        // -ForwardingSmtpAddress), with no forged ECP request: not ProxyToken.
        ("evtx-samples/MSExchange_Management_wec.evtx", expect(&[])),
        // `net user /add` and 4720 on one host, with no remote execution from another.
        (
            "mdecrevoisier-evtx/ID4688-User_creation_via_commandline.evtx",
            expect(&[]),
        ),
        // PsExec's target side (service install, admin share) without an account created.
        (
            "mdecrevoisier-evtx/ID4688_4697_5140-5145_PSexec_remote_execution_+_admin_share.evtx",
            expect(&[]),
        ),
        // lsassy: WMI runs a comsvcs MiniDump of LSASS; no payload or discovery burst before.
        (
            "mdecrevoisier-evtx/ID1-LSASS_dump_with_LSASSY_SYSMON.evtx",
            expect(&[]),
        ),
        // VSS deletion alone (the ransomware chain's last stage, without its first ones).
        (
            "mdecrevoisier-evtx/ID4688-Delete_VSS_backup_WMI.evtx",
            expect(&[]),
        ),
    ];
    let mut table =
        String::from("| file | expected | found | stage matches |\n|---|---|---|---:|\n");
    let mut wrong = Vec::new();
    for (name, expected) in &cases {
        let (alerts, matches) = findings(&dataset(name, tmp.path()), tmp.path());
        let found = summary(&alerts);
        let show = |v: &[Found]| {
            if v.is_empty() {
                return "none".to_owned();
            }
            v.iter()
                .map(|(p, c, h)| {
                    format!("{p} ({}) on {h}", if *c { "complete" } else { "partial" })
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        table.push_str(&format!(
            "| {name} | {} | {} | {matches} |\n",
            show(expected),
            show(&found)
        ));
        if &found != expected {
            wrong.push(*name);
        }
    }
    println!("{table}");
    assert!(wrong.is_empty(), "findings differ for {wrong:?}:\n{table}");
}
