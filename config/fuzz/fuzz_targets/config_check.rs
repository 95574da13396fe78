//! Fuzz target: the service config (`chainwatch run --config`), read by `ServiceConfig`.
//!
//! Invariants: no panic; a refused config lists at least one problem, each with a message and
//! a line within the file (or 0 for the whole file).

use std::path::PathBuf;
use std::sync::OnceLock;

use chainwatch_config::ServiceConfig;

/// A folder for the config "file", holding a `playbooks` folder so rule paths can exist.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("chainwatch-config-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(d.join("playbooks"));
        d
    })
}

/// Checks one input against the invariants above (panics when one breaks).
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Secrets and templates are read from the files a config names: device files (an endless
    // /dev/zero, a blocking /dev/stdin) are the operator's business, not the loader's.
    if ["/dev", "/proc", "/sys"].iter().any(|d| text.contains(d)) {
        return;
    }
    let path = dir().join("chainwatch.toml");
    match ServiceConfig::from_text(&path, text) {
        Ok(config) => {
            let _ = format!("{config:?}");
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "refused without a problem");
            let lines = text.lines().count() + 1;
            for d in diags.iter() {
                assert!(!d.message.is_empty(), "a problem without a message");
                assert!(
                    d.line <= lines,
                    "line {} past the end ({lines}): {d}",
                    d.line
                );
            }
            let _ = diags.to_string();
        }
    }
}
