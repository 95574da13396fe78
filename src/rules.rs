//! Loading rule sets: files and folders, or the playbooks shipped in the binary.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use chainwatch_config::sigma::{RuleDoc, parse_rule_text};
use chainwatch_config::{Diagnostics, Placeholders, load_placeholders, load_rule_paths};
use chainwatch_correlate::{CompileOptions, RuleSet};

/// The playbooks shipped with chainwatch, embedded so the binary runs anywhere.
pub const BUILTIN_PLAYBOOKS: &[(&str, &str)] = &[(
    "playbooks/exchange-to-ransomware.yml",
    include_str!("../playbooks/exchange-to-ransomware.yml"),
)];

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
pub fn load_rule_set(paths: &[PathBuf], placeholders: &Placeholders) -> Result<RuleSet> {
    let (docs, mut diags, _) = read_specs(paths);
    let (set, compile_diags) = RuleSet::compile_with_options(&docs, &options(placeholders));
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

fn options(placeholders: &Placeholders) -> CompileOptions {
    CompileOptions {
        placeholders: placeholders.clone(),
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
