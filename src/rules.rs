//! Loading rule sets: files and folders, or the playbooks shipped in the binary.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use chainwatch_config::sigma::{RuleDoc, parse_rule_text};
use chainwatch_config::{Diagnostics, Placeholders, load_placeholders, load_rule_paths};
use chainwatch_correlate::{CompileOptions, RuleSet};

/// The playbooks shipped with chainwatch, embedded so the binary runs anywhere. A test checks
/// that every file in `playbooks/` is listed here.
pub const BUILTIN_PLAYBOOKS: &[(&str, &str)] = &[
    (
        "playbooks/credential-theft-after-exploitation.yml",
        include_str!("../playbooks/credential-theft-after-exploitation.yml"),
    ),
    (
        "playbooks/exchange-to-ransomware.yml",
        include_str!("../playbooks/exchange-to-ransomware.yml"),
    ),
    (
        "playbooks/lateral-movement-account-creation.yml",
        include_str!("../playbooks/lateral-movement-account-creation.yml"),
    ),
    (
        "playbooks/proxylogon.yml",
        include_str!("../playbooks/proxylogon.yml"),
    ),
    (
        "playbooks/proxyshell.yml",
        include_str!("../playbooks/proxyshell.yml"),
    ),
    (
        "playbooks/proxytoken.yml",
        include_str!("../playbooks/proxytoken.yml"),
    ),
];

/// Reads rule specs from paths, or the built-in playbooks when `paths` is empty.
pub fn read_specs(paths: &[PathBuf]) -> (Vec<RuleDoc>, Diagnostics, usize) {
    if paths.is_empty() {
        let mut docs = Vec::new();
        let mut diags = Diagnostics::default();
        for (name, text) in BUILTIN_PLAYBOOKS {
            let (d, p) = parse_rule_text(Path::new(name), text);
            docs.extend(d);
            diags.0.extend(p.0);
        }
        return (docs, diags, BUILTIN_PLAYBOOKS.len());
    }
    let loaded = load_rule_paths(paths);
    (loaded.docs, loaded.diagnostics, loaded.files)
}

/// Placeholder values from `--placeholders FILE` (none without it).
pub fn placeholders_from(file: Option<&Path>) -> Result<Placeholders> {
    match file {
        Some(f) => {
            load_placeholders(f).map_err(|d| anyhow::anyhow!("placeholders not loaded, {d}"))
        }
        None => Ok(Placeholders::new()),
    }
}

/// Loads and compiles rules; any problem refuses the whole set, with every problem listed.
pub fn load_rule_set(paths: &[PathBuf], options: &CompileOptions) -> Result<RuleSet> {
    let (docs, mut diags, _) = read_specs(paths);
    let (set, compile_diags) = RuleSet::compile_with_options(&docs, options);
    diags.0.extend(compile_diags.0);
    if !diags.is_empty() {
        bail!("rules not loaded, {diags}");
    }
    if set.is_empty() {
        bail!("no rules found in {}", describe(paths));
    }
    Ok(set)
}

fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Compile options with placeholder values and no tenant overrides.
pub fn options(placeholders: &Placeholders) -> CompileOptions {
    CompileOptions {
        placeholders: placeholders.clone(),
        ..CompileOptions::default()
    }
}

/// `chainwatch rules check`: writes to `out` every problem, one per line (`FILE:LINE: rule ID:
/// reason`), then a summary; `false` when any rule failed.
pub fn check(
    paths: &[PathBuf],
    placeholders: &Placeholders,
    out: &mut dyn std::io::Write,
) -> std::io::Result<bool> {
    let (docs, mut diags, files) = read_specs(paths);
    let (set, compile_diags) = RuleSet::compile_with_options(&docs, &options(placeholders));
    diags.0.extend(compile_diags.0);
    for d in diags.iter() {
        writeln!(out, "{d}")?;
    }
    // A rule with several problems is one failed rule; a problem that concerns a whole file
    // (unreadable, not YAML) counts as one.
    let failed = diags
        .iter()
        .map(|d| {
            (
                d.file.clone(),
                d.rule.clone().unwrap_or_else(|| format!("line {}", d.line)),
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    writeln!(
        out,
        "{} file(s), {} rule(s) loaded ({} detection, {} correlation), {} rule(s) failed",
        files,
        set.len(),
        set.detections.len(),
        set.correlations.len(),
        failed,
    )?;
    Ok(diags.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_playbook_is_embedded() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("playbooks");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yml") || n.ends_with(".yaml"))
            .map(|n| format!("playbooks/{n}"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = BUILTIN_PLAYBOOKS
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect();
        assert_eq!(embedded, on_disk);
        let set = load_rule_set(&[], &CompileOptions::default()).unwrap();
        assert_eq!(set.correlations.len(), on_disk.len());
    }
}
