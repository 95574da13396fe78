//! Host roles inferred from real telemetry (`../shared/datasets/otrf`): the ProxyLogon
//! recording's MXS01 is an Exchange server (and so an IIS server), the domain controllers of
//! the NTDS and Empire recordings are domain controllers, and no workstation or member server
//! gets a role. Each recording is read by `chainwatch hosts`, as an analyst would, under a
//! tenant of its own (the same workstation names recur across recordings).
#![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use chainwatch_correlate::HostRoles;
use support::shared::{chainwatch, dataset, stdout_of};

/// Host key to its roles, as `chainwatch hosts` infers them from `file`.
fn roles_of(file: &Path, tenant: &str) -> BTreeMap<String, Vec<String>> {
    stdout_of(
        chainwatch()
            .args(["hosts", "--output", "json", "--tenant", tenant])
            .arg(file),
    )
    .lines()
    .map(|l| {
        let h: HostRoles = serde_json::from_str(l).unwrap();
        assert_eq!(h.tenant.as_str(), tenant);
        (h.host.key().to_owned(), h.roles.keys().cloned().collect())
    })
    .collect()
}

/// Host keys and their roles.
type Expected<'a> = &'a [(&'a str, &'a [&'a str])];

fn expect(pairs: Expected<'_>) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(h, r)| ((*h).to_owned(), r.iter().map(|x| (*x).to_owned()).collect()))
        .collect()
}

#[test]
fn roles_inferred_from_the_otrf_recordings_are_right() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, Expected)] = &[
        // The Exchange server, which runs its web front ends in IIS.
        (
            "proxylogon_ssrf_rce_poc_2021-03-14T01401970.json",
            &[("mxs01", &["exchange", "iis"])],
        ),
        // A domain controller (ismserv.exe, Active Directory Web Services, DFS-R).
        (
            "cmd_dumping_ntds_dit_file_volume_shadow_copy.zip",
            &[("dc01", &["domain_controller"])],
        ),
        // The lab's domain controller, next to two workstations that are not servers.
        (
            "empire_wmic_add_user_backdoor.zip",
            &[("mordordc", &["domain_controller"])],
        ),
        // One Kerberos service ticket event is enough.
        (
            "empire_shell_net_local_users.zip",
            &[("mordordc", &["domain_controller"])],
        ),
        // Workstations and a member server: no role.
        (
            "LSASS_campaign_02_metasploit_procdump_lsass_memory_dump.zip",
            &[],
        ),
        (
            "psh_lsass_memory_dump_comsvcs_2020-10-18T19500924.json",
            &[],
        ),
        // An ADFS server seen through Defender: not one of these roles.
        ("GoldenSAML_Microsoft365DefenderEvents.json", &[]),
    ];
    for (i, (name, want)) in cases.iter().enumerate() {
        let file = dataset(&format!("otrf/{name}"), tmp.path());
        let got = roles_of(&file, &format!("rec{i}"));
        assert_eq!(got, expect(want), "{name}");
    }
}

#[test]
fn the_sample_intrusion_has_one_exchange_server() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let got = roles_of(&sample, "contoso");
    assert_eq!(got, expect(&[("exch01", &["exchange", "iis"])]));
}
