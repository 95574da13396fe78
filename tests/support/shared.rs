//! The shared data folder cloned next to the repository (`../shared`), and running the
//! `chainwatch` binary as a user would.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The shared data folder; a clear failure when it is absent (CI clones it next to the
/// repository).
pub fn shared() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("shared");
    assert!(
        dir.join("datasets").is_dir(),
        "the shared datasets are not at {}: the evaluation tests need them (CI clones the repository next to shared/)",
        dir.display()
    );
    dir
}

/// A file of `shared/datasets` ready to read: a zip's first entry is unpacked into `tmp`.
pub fn dataset(name: &str, tmp: &Path) -> PathBuf {
    let path = shared().join("datasets").join(name);
    if !name.ends_with(".zip") {
        return path;
    }
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut entry = archive.by_index(0).unwrap();
    let inner = entry.name().unwrap().into_owned();
    let out = tmp.join(Path::new(&inner).file_name().unwrap());
    let mut data = Vec::new();
    entry.read_to_end(&mut data).unwrap();
    std::fs::write(&out, data).unwrap();
    out
}

/// A `chainwatch` command, run from the repository root.
pub fn chainwatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chainwatch"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// Runs `cmd`, fails the test with its stderr unless it succeeds, and returns its stdout.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
