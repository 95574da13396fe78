//! Finding and reading rule files: files and folders, `.yml` and `.yaml`, in a stable order.

use std::path::{Path, PathBuf};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::sigma::{RuleDoc, parse_rule_file};

/// The rules read from some paths, and the problems found.
#[derive(Debug, Default)]
pub struct LoadedRules {
    /// The rules that parsed.
    pub docs: Vec<RuleDoc>,
    /// Problems: a rule with a problem is not in `docs`.
    pub diagnostics: Diagnostics,
    /// Number of files read.
    pub files: usize,
}

/// Reads every rule file under `paths` (files, or folders searched recursively).
pub fn load_rule_paths(paths: &[PathBuf]) -> LoadedRules {
    let mut out = LoadedRules::default();
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files, &mut out.diagnostics);
    }
    files.sort();
    files.dedup();
    for file in files {
        let (docs, diags) = parse_rule_file(&file);
        out.files += 1;
        out.docs.extend(docs);
        out.diagnostics.0.extend(diags.0);
    }
    out
}

fn collect(path: &Path, files: &mut Vec<PathBuf>, diags: &mut Diagnostics) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            diags.push(Diagnostic::new(path, 0, 0, format!("cannot read: {e}")));
            return;
        }
    };
    if meta.is_file() {
        files.push(path.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::new(
                path,
                0,
                0,
                format!("cannot list the folder: {e}"),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            collect(&p, files, diags);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")) {
            files.push(p);
        }
    }
}
