//! `chainwatch playbook test`: playbooks are tested like code. Each playbook lists fixtures —
//! telemetry files and the findings replaying them must raise, exactly (none, for near-misses).
//! Each fixture is a test case; the exit status and an optional JUnit report say how they went.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use chainwatch_config::load_rule_paths;
use chainwatch_config::playbook::{Expectation, Fixture};
use chainwatch_config::sigma::{RuleDoc, parse_rule_file};
use chainwatch_correlate::{Engine, EngineConfig, RuleSet};
use chainwatch_ingest::TenantSource;
use chainwatch_model::{Alert, AlertKind, HostName, TenantId};

use crate::replay::{ReplayStats, feed_files, file_decoder};

/// One test case's result.
#[derive(Debug)]
struct Case {
    suite: String,
    class: String,
    name: String,
    failure: Option<String>,
}

/// Runs every fixture of every playbook under `paths`; `Ok(true)` when all pass.
pub fn test(paths: &[PathBuf], junit: Option<&Path>) -> Result<bool> {
    let files = playbook_files(paths);
    if files.is_empty() {
        anyhow::bail!("no playbook files under the given paths");
    }
    let mut cases = Vec::new();
    for file in &files {
        cases.extend(test_file(file));
    }
    let failed = cases.iter().filter(|c| c.failure.is_some()).count();
    for c in &cases {
        match &c.failure {
            None => println!("ok    {} :: {} :: {}", c.suite, c.class, c.name),
            Some(why) => {
                println!("FAIL  {} :: {} :: {}", c.suite, c.class, c.name);
                for line in why.lines() {
                    println!("        {line}");
                }
            }
        }
    }
    println!(
        "{} fixture(s), {} passed, {failed} failed",
        cases.len(),
        cases.len() - failed
    );
    if let Some(path) = junit {
        std::fs::write(path, junit_xml(&cases))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(failed == 0)
}

fn playbook_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    // The rule loader already knows how to walk folders for .yml/.yaml files.
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        if p.is_file() {
            files.push(p.clone());
        } else {
            let loaded = load_rule_paths(std::slice::from_ref(p));
            let mut seen: Vec<PathBuf> =
                loaded.docs.iter().map(|d| d.meta().file.clone()).collect();
            seen.extend(loaded.diagnostics.iter().map(|d| d.file.clone()));
            files.extend(seen);
        }
    }
    files.sort();
    files.dedup();
    files
}

fn test_file(file: &Path) -> Vec<Case> {
    let suite = file.display().to_string();
    let case = |class: &str, name: &str, failure: Option<String>| Case {
        suite: suite.clone(),
        class: class.to_owned(),
        name: name.to_owned(),
        failure,
    };
    let (docs, diags) = parse_rule_file(file);
    if !diags.is_empty() {
        return vec![case("load", "the playbook loads", Some(diags.to_string()))];
    }
    let (rules, diags) = RuleSet::compile(&docs);
    if !diags.is_empty() {
        return vec![case(
            "load",
            "the playbook compiles",
            Some(diags.to_string()),
        )];
    }
    let rules = Arc::new(rules);
    let mut out = Vec::new();
    for doc in &docs {
        let RuleDoc::Correlation(corr) = doc else {
            continue;
        };
        let Some(pb) = &corr.playbook else {
            continue;
        };
        let class = corr
            .meta
            .name
            .clone()
            .unwrap_or_else(|| corr.meta.key().to_owned());
        if pb.fixtures.is_empty() {
            out.push(case(
                &class,
                "fixtures",
                Some("the playbook has no fixtures".into()),
            ));
            continue;
        }
        for fixture in &pb.fixtures {
            let failure = run_fixture(file, fixture, &rules, corr.meta.key()).err();
            out.push(case(&class, &fixture.name, failure));
        }
    }
    out
}

/// Replays one fixture; `Err` says how the findings differ from the expectation.
fn run_fixture(
    file: &Path,
    fixture: &Fixture,
    rules: &Arc<RuleSet>,
    rule_id: &str,
) -> Result<(), String> {
    let input = file.parent().unwrap_or(Path::new(".")).join(&fixture.input);
    let tenant = match (&fixture.tenant_field, &fixture.tenant) {
        (Some(field), _) => TenantSource::Field(field.clone()),
        (None, Some(t)) => TenantSource::Fixed(TenantId::new(t).map_err(|e| e.to_string())?),
        (None, None) => TenantSource::Fixed(TenantId::new("default").map_err(|e| e.to_string())?),
    };
    let decoder = file_decoder("+00:00", None, None).map_err(|e| format!("{e:#}"))?;
    let mut engine = Engine::new(Arc::clone(rules), EngineConfig::default());
    let mut alerts: Vec<Alert> = Vec::new();
    let mut stats = ReplayStats::default();
    feed_files(
        &[input],
        &decoder,
        &tenant,
        &mut engine,
        &mut stats,
        &mut |a| {
            alerts.push(a);
            Ok(())
        },
        &mut |_| Ok(()),
    )
    .map_err(|e| format!("{e:#}"))?;
    // A finding is its latest revision.
    let mut findings: Vec<Alert> = Vec::new();
    for a in alerts
        .into_iter()
        .filter(|a| a.kind == AlertKind::Chain && a.rule.id == rule_id)
    {
        match findings.iter_mut().find(|f| f.id == a.id) {
            Some(f) if a.revision >= f.revision => *f = a,
            Some(_) => {}
            None => findings.push(a),
        }
    }
    let describe = |a: &Alert| {
        let stages: Vec<&str> = a.stages.iter().map(|s| s.name.as_str()).collect();
        format!(
            "tenant {} host {} priority {}{} stages [{}]",
            a.tenant,
            a.host,
            a.severity,
            if a.partial { " (partial)" } else { "" },
            stages.join(", ")
        )
    };
    let mut unmatched: Vec<&Alert> = findings.iter().collect();
    let mut missing = Vec::new();
    for e in &fixture.expect {
        match unmatched.iter().position(|a| fits(a, e)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => missing.push(e),
        }
    }
    if missing.is_empty() && unmatched.is_empty() {
        return Ok(());
    }
    let mut why = String::new();
    if stats.records_read == 0 {
        let _ = writeln!(
            why,
            "the input {} holds no records",
            fixture.input.display()
        );
    }
    for e in missing {
        let _ = writeln!(why, "expected, not raised: {e:?}");
    }
    for a in unmatched {
        let _ = writeln!(why, "raised, not expected: {}", describe(a));
    }
    Err(why)
}

fn fits(a: &Alert, e: &Expectation) -> bool {
    let stages: Vec<&str> = a.stages.iter().map(|s| s.name.as_str()).collect();
    stages == e.stages.iter().map(String::as_str).collect::<Vec<_>>()
        && e.host.as_deref().is_none_or(|h| HostName::new(h) == a.host)
        && e.tenant.as_deref().is_none_or(|t| t == a.tenant.as_str())
        && e.priority.is_none_or(|p| p == a.severity)
        && e.partial.is_none_or(|p| p == a.partial)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The JUnit XML report: one test suite per playbook file, one test case per fixture.
fn junit_xml(cases: &[Case]) -> String {
    let mut suites: Vec<&str> = cases.iter().map(|c| c.suite.as_str()).collect();
    suites.dedup();
    let failures = cases.iter().filter(|c| c.failure.is_some()).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"chainwatch playbooks\" tests=\"{}\" failures=\"{failures}\">",
        cases.len()
    );
    for s in suites {
        let mine: Vec<&Case> = cases.iter().filter(|c| c.suite == s).collect();
        let f = mine.iter().filter(|c| c.failure.is_some()).count();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\">",
            xml_escape(s),
            mine.len()
        );
        for c in mine {
            let head = format!(
                "    <testcase classname=\"{}\" name=\"{}\"",
                xml_escape(&c.class),
                xml_escape(&c.name)
            );
            match &c.failure {
                None => {
                    let _ = writeln!(x, "{head}/>");
                }
                Some(why) => {
                    let first = why.lines().next().unwrap_or("failed");
                    let _ = writeln!(
                        x,
                        "{head}>\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        xml_escape(first),
                        xml_escape(why)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}
