//! Evaluation on real third-party telemetry: every file in `../shared/datasets/` decodes, at
//! least 99.9% of its records become events, and the rest are dead-lettered with a reason.
//!
//! The data is read where the project's checkout sits next to `shared/` (`<repo>/../shared`);
//! the test fails with a clear message when it is missing. Zips are read with the `zip` crate,
//! in memory: nothing is unpacked to disk, and nothing from the datasets is copied into the repo.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use chainwatch_ingest::{Decoder, DecoderConfig, Piece, TenantSource, W3cState, split_payload};
use chainwatch_model::{Activity, Event, EventClass, Provenance, SourceFormat, TenantId};

fn datasets() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets")
        .canonicalize();
    match dir {
        Ok(d) if d.is_dir() => d,
        _ => panic!(
            "the shared datasets are missing: expected them at {}/../../shared/datasets \
             (the repository is checked out next to `shared/`)",
            env!("CARGO_MANIFEST_DIR")
        ),
    }
}

/// What decoding one file gave.
#[derive(Debug, Default)]
struct Outcome {
    records: u64,
    events: Vec<Event>,
    dead: BTreeMap<&'static str, u64>,
}

impl Outcome {
    fn ratio(&self) -> f64 {
        self.events.len() as f64 / self.records.max(1) as f64
    }
}

fn decode(name: &str, data: &[u8]) -> Outcome {
    let decoder = Decoder::new(DecoderConfig::default()).unwrap();
    let tenant = TenantSource::Fixed(TenantId::new("eval").unwrap());
    let origin = Provenance::File {
        path: name.into(),
        line: None,
        record: None,
    };
    let mut out = Outcome::default();
    for piece in split_payload(
        data,
        &origin,
        &decoder.split_options(),
        &mut W3cState::new(),
    ) {
        out.records += 1;
        match piece {
            Piece::Record(r) => match decoder.decode_record(&r, &tenant, None) {
                Ok(e) => out.events.push(e),
                Err(e) => {
                    eprintln!("{name}: {}: {e}", r.provenance);
                    *out.dead.entry(e.reason()).or_default() += 1;
                }
            },
            Piece::Bad {
                error, provenance, ..
            } => {
                eprintln!("{name}: {provenance}: {error}");
                *out.dead.entry(error.reason()).or_default() += 1;
            }
        }
    }
    out
}

/// Every data file of the datasets, by name relative to `datasets/`, in order.
fn every_path() -> Vec<(String, PathBuf)> {
    let root = datasets();
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                dirs.push(p);
            } else if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("json" | "evtx" | "zip")
            ) {
                files.push((p.strip_prefix(&root).unwrap().display().to_string(), p));
            }
        }
    }
    files
}

/// A file's contents; a zip's members (each zip holds one JSON lines file) unpacked in memory.
fn contents(name: &str, path: &Path) -> Vec<(String, Vec<u8>)> {
    if path.extension().and_then(|x| x.to_str()) != Some("zip") {
        return vec![(name.to_owned(), std::fs::read(path).unwrap())];
    }
    let mut zip = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        if entry.is_dir() {
            continue;
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut data).unwrap();
        out.push((format!("{name}!{}", entry.name().unwrap()), data));
    }
    out
}

/// The one dataset file whose name contains `name_part`.
fn file(name_part: &str) -> (String, Vec<u8>) {
    let (name, path) = every_path()
        .into_iter()
        .find(|(n, _)| n.contains(name_part))
        .unwrap_or_else(|| panic!("dataset file {name_part} is missing"));
    contents(&name, &path).remove(0)
}

#[test]
fn every_dataset_file_decodes() {
    let paths = every_path();
    assert!(
        paths.len() >= 23,
        "expected the 23 dataset files, found {}",
        paths.len()
    );
    let mut report = Vec::new();
    // One file in memory at a time (the zips unpack to 12-88 MB each).
    for (name, data) in paths.iter().flat_map(|(n, p)| contents(n, p)) {
        let name = &name;
        let out = decode(name, &data);
        report.push(format!(
            "{name}: {} records, {} events ({:.3}%), dead {:?}",
            out.records,
            out.events.len(),
            out.ratio() * 100.0,
            out.dead
        ));
        assert!(out.records > 0, "{name}: no records found");
        assert!(
            out.ratio() >= 0.999,
            "{name}: only {} of {} records became events; dead letters {:?}",
            out.events.len(),
            out.records,
            out.dead
        );
        let dead: u64 = out.dead.values().sum();
        assert_eq!(
            out.events.len() as u64 + dead,
            out.records,
            "{name}: every record is an event or a dead letter"
        );
    }
    eprintln!("{}", report.join("\n"));
}

fn one(name_part: &str) -> Outcome {
    let (name, data) = file(name_part);
    decode(&name, &data)
}

#[test]
fn the_wef_collector_is_never_the_host_and_one_machine_is_one_host() {
    // NXLog/WEF data: `host` is the collector, `Hostname` the origin; WORKSTATION6 appears both
    // short and with its domain.
    let out = one("empire_wmic_add_user_backdoor");
    let mut hosts: BTreeMap<String, u64> = BTreeMap::new();
    for e in &out.events {
        *hosts.entry(e.host.key().to_owned()).or_default() += 1;
    }
    assert!(!hosts.contains_key("wec"), "{hosts:?}");
    let keys: Vec<&str> = hosts.keys().map(String::as_str).collect();
    assert_eq!(keys, ["mordordc", "workstation5", "workstation6"]);
    // The backdoor account creation on WORKSTATION6 is an account change.
    let created: Vec<&Event> = out
        .events
        .iter()
        .filter(|e| e.class == EventClass::AccountChange && e.activity == Activity::Create)
        .collect();
    assert!(
        created.iter().any(|e| e.host.key() == "workstation6"
            && e.target
                .account
                .as_deref()
                .is_some_and(|a| a.ends_with("backdoor"))),
        "{created:?}"
    );
}

#[test]
fn channel_case_does_not_change_normalization() {
    // Both `Security` and `security` occur in this file.
    let out = one("empire_shell_net_local_users");
    let lower: Vec<&Event> = out
        .events
        .iter()
        .filter(|e| e.source.channel.as_deref() == Some("security"))
        .collect();
    assert!(!lower.is_empty(), "the file has lower-case channels");
    let classified = lower
        .iter()
        .filter(|e| e.class != EventClass::Other)
        .count();
    assert!(classified > 0, "lower-case Security events are normalized");
}

#[test]
fn one_clock_per_file_even_when_sysmon_disagrees() {
    // proxylogon: Sysmon's UtcTime is 5 h after the envelope; the envelope is used throughout,
    // so the w3wp -> cmd chain is in order and within seconds of the Exchange cmdlet.
    let out = one("proxylogon");
    let oab = out
        .events
        .iter()
        .find(|e| {
            e.fields
                .get_str("Cmdlet")
                .is_some_and(|c| c == "Set-OabVirtualDirectory")
        })
        .expect("the Set-OabVirtualDirectory cmdlet is named from the rendered message");
    assert_eq!(oab.class, EventClass::ApiActivity);
    assert!(
        oab.target
            .api
            .as_deref()
            .is_some_and(|a| a.starts_with("Set-OabVirtualDirectory -ExternalUrl")),
        "{:?}",
        oab.target.api
    );
    assert!(
        oab.fields
            .get_str("Parameters")
            .is_some_and(|p| p.contains("-ExternalUrl")),
        "{:?}",
        oab.fields.get_str("Parameters")
    );
    let whoami = out
        .events
        .iter()
        .find(|e| {
            e.source.event_id == Some(1)
                && e.process
                    .as_ref()
                    .and_then(|p| p.name())
                    .is_some_and(|n| n.eq_ignore_ascii_case("whoami.exe"))
        })
        .expect("Sysmon 1 for whoami.exe");
    let gap = whoami.time.nanos_since(oab.time) / 1_000_000_000;
    assert!(
        (0..10).contains(&gap),
        "cmdlet then whoami within seconds: {gap}s"
    );
    assert_eq!(oab.host.key(), "mxs01");
}

#[test]
fn evtx_files_and_the_exchange_data_list() {
    let out = one("MSExchange_Management_wec.evtx");
    assert_eq!(out.events.len(), 1);
    let e = &out.events[0];
    assert_eq!(e.source.format, SourceFormat::Evtx);
    assert_eq!(e.class, EventClass::ApiActivity);
    assert_eq!(e.fields.get_str("Cmdlet"), Some("Set-Mailbox"));
    assert!(
        e.fields
            .get_str("Parameters")
            .is_some_and(|p| p.contains("-ForwardingSmtpAddress")),
    );
    assert_eq!(e.user.as_deref(), Some("ave.local/Users/Administrateur"));
    assert!(
        e.target.api.as_deref().is_some_and(
            |a| a.starts_with("Set-Mailbox -Identity") && a.contains("-ForwardingSmtpAddress")
        ),
        "{:?}",
        e.target.api
    );
    assert!(
        e.fields.get_str("Message").is_some_and(
            |m| m.starts_with("Cmdlet suceeded. Cmdlet Set-Mailbox, parameters -Identity")
        ),
        "{:?}",
        e.fields.get_str("Message")
    );
    assert_eq!(e.time.to_string(), "2021-11-19T16:52:33.833733500Z");

    let out = one("ID4688-User_creation_via_commandline.evtx");
    assert!(out.events.iter().any(|e| {
        e.class == EventClass::ProcessActivity
            && e.activity == Activity::Launch
            && e.process
                .as_ref()
                .and_then(|p| p.command_line.as_deref())
                .is_some_and(|c| c.contains("/add"))
    }),);
    assert!(out.events.iter().all(|e| e.host.key() == "fs03"));
}

#[test]
fn a_corrupted_evtx_chunk_is_skipped_counted_and_the_rest_is_read() {
    // No corrupted sample ships with the datasets: this damages one chunk of a real log in
    // memory (chunk 3 of 33 in security.evtx) and reads the file to the end.
    let (name, mut data) = file("evtx-samples/security.evtx");
    let clean = decode(&name, &data);
    assert_eq!(clean.events.len(), 2261);
    let chunk = 4096 + 3 * 65536;
    for b in &mut data[chunk + 600..chunk + 700] {
        *b ^= 0x5a;
    }
    // And a second chunk whose magic is gone altogether.
    let chunk9 = 4096 + 9 * 65536;
    data[chunk9..chunk9 + 8].copy_from_slice(b"garbage!");
    let out = decode(&name, &data);
    assert_eq!(
        out.dead.get("corrupt_evtx_chunk"),
        Some(&2),
        "{:?}",
        out.dead
    );
    let lost = clean.events.len() - out.events.len();
    assert!(
        lost > 0 && lost < 200,
        "two chunks' records are lost, the other 31 chunks read: lost {lost}"
    );
    // The last record of the file is still read.
    let last = clean.events.iter().map(|e| e.time).max().unwrap();
    assert!(out.events.iter().any(|e| e.time == last));
}

#[test]
fn defender_rows_normalize() {
    let out = one("GoldenSAML_Microsoft365DefenderEvents");
    assert_eq!(out.events.len(), 9);
    assert!(
        out.events
            .iter()
            .all(|e| e.source.format == SourceFormat::Mde)
    );
    let ldap = &out.events[0];
    assert_eq!(ldap.host.key(), "adfs01");
    assert_eq!(
        ldap.fields
            .get_str("AdditionalFields_string")
            .map(|s| s.starts_with('{')),
        Some(true)
    );
    // Cloud-app records have no device: their service is their host.
    assert!(
        out.events
            .iter()
            .any(|e| e.host.display() == "Microsoft Exchange Online")
    );
}
