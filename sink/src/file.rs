//! The JSON lines file sink: one finding per line, synced before the offset is stored, rotated
//! by size and/or age.
//!
//! Rotation renames the live file to `NAME.YYYYMMDDTHHMMSSZ.EXT` (a `-N` suffix when two fall
//! in one second), syncs the folder, and starts a new file; the oldest rotated files beyond
//! `keep` are deleted. A failed write is cut back to the last whole line, so a retry never
//! leaves half a line behind. After a crash a finding may be written twice (at-least-once);
//! each line carries the alert id for readers that deduplicate.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chainwatch_config::service::FindingFormat;
use chainwatch_model::Alert;

use crate::decode::encode;

/// When to rotate. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rotation {
    /// Rotate before a write would take the file past this many bytes.
    pub size: Option<u64>,
    /// Rotate once the file has been open this long.
    pub every: Option<Duration>,
}

impl Rotation {
    /// Whether to rotate before writing `next` bytes to a file of `len` bytes opened at
    /// `opened`. An empty file is never rotated (a line longer than the limit gets a file of
    /// its own rather than a rotation loop).
    pub fn due(&self, len: u64, next: u64, opened: SystemTime, now: SystemTime) -> bool {
        if len == 0 {
            return false;
        }
        let too_big = self.size.is_some_and(|max| len.saturating_add(next) > max);
        let too_old = self
            .every
            .is_some_and(|every| now.duration_since(opened).unwrap_or_default() >= every);
        too_big || too_old
    }
}

/// The name a file rotated at `now` gets: `alerts.jsonl` → `alerts.20261120T020000Z.jsonl`.
/// `taken` says whether a name exists already; a `-N` suffix makes it unique.
pub fn rotated_name(path: &Path, now: SystemTime, taken: impl Fn(&Path) -> bool) -> PathBuf {
    let (stem, ext) = split_name(path);
    let stamp = chrono::DateTime::<chrono::Utc>::from(now).format("%Y%m%dT%H%M%SZ");
    let dir = path.parent().unwrap_or_else(|| Path::new(""));
    let mut n = 0;
    loop {
        let suffix = if n == 0 {
            String::new()
        } else {
            format!("-{n}")
        };
        let candidate = dir.join(format!("{stem}.{stamp}{suffix}{ext}"));
        if !taken(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

/// (`alerts`, `.jsonl`) for `dir/alerts.jsonl`; (`alerts`, ``) without an extension.
fn split_name(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (stem, ext)
}

/// Whether `name` is a rotated file of `path` (`STEM.<16-char stamp>[-N]EXT`).
pub fn is_rotated(path: &Path, name: &str) -> bool {
    let (stem, ext) = split_name(path);
    let Some(rest) = name
        .strip_prefix(&format!("{stem}."))
        .and_then(|r| r.strip_suffix(&ext))
    else {
        return false;
    };
    let (stamp, n) = match rest.split_once('-') {
        Some((s, n)) => (s, Some(n)),
        None => (rest, None),
    };
    stamp.len() == 16
        && stamp.as_bytes()[8] == b'T'
        && stamp.ends_with('Z')
        && stamp[..8].bytes().all(|b| b.is_ascii_digit())
        && stamp[9..15].bytes().all(|b| b.is_ascii_digit())
        && n.is_none_or(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A JSON lines file with rotation.
#[derive(Debug)]
pub struct JsonLinesFile {
    path: PathBuf,
    format: FindingFormat,
    rotation: Rotation,
    keep: usize,
    file: File,
    len: u64,
    opened: SystemTime,
}

impl JsonLinesFile {
    /// Opens (or creates) `path` for appending; its folder is created.
    pub fn open(
        path: &Path,
        format: FindingFormat,
        rotation: Rotation,
        keep: usize,
    ) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            format,
            rotation,
            keep,
            file,
            len,
            // Age counts from when this process opened the file: the time a file was first
            // written is not kept by every file system.
            opened: SystemTime::now(),
        })
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `alert` as one line and syncs it; rotates first when due.
    pub fn write(&mut self, alert: &Alert, now: SystemTime) -> std::io::Result<()> {
        let mut line = encode(alert, self.format);
        line.push(b'\n');
        if self
            .rotation
            .due(self.len, line.len() as u64, self.opened, now)
        {
            self.rotate(now)?;
        }
        if let Err(e) = self
            .file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
        {
            // Cut back to the last whole line so the retry does not follow half a line.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self, now: SystemTime) -> std::io::Result<()> {
        let target = rotated_name(&self.path, now, Path::exists);
        std::fs::rename(&self.path, &target)?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        // The rename and the new file survive a crash only once the folder is synced.
        File::open(dir)?.sync_all()?;
        self.len = 0;
        self.opened = now;
        if self.keep > 0 {
            self.prune(dir)?;
        }
        Ok(())
    }

    fn prune(&self, dir: &Path) -> std::io::Result<()> {
        let mut rotated: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| is_rotated(&self.path, n))
            .collect();
        // The stamp sorts by time; `-N` suffixes sort after their second.
        rotated.sort_by_key(|n| rotation_order(n));
        let excess = rotated.len().saturating_sub(self.keep);
        for old in &rotated[..excess] {
            std::fs::remove_file(dir.join(old))?;
        }
        Ok(())
    }
}

/// Sort key of a rotated name: its stamp, then its `-N` number.
fn rotation_order(name: &str) -> (String, u64) {
    // NAME.STAMP[-N].EXT: the stamp is the 16 characters after the first '.' that starts one.
    let parts: Vec<&str> = name.split('.').collect();
    let stamped = parts
        .iter()
        .find(|p| p.len() >= 16 && p.as_bytes().get(8) == Some(&b'T'))
        .copied()
        .unwrap_or_default();
    let (stamp, n) = match stamped.split_once('-') {
        Some((s, n)) => (s, n.parse().unwrap_or(0)),
        None => (stamped, 0),
    };
    (stamp.to_owned(), n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rotation_is_due_by_size_or_age_never_for_an_empty_file() {
        let r = Rotation {
            size: Some(100),
            every: Some(Duration::from_secs(60)),
        };
        assert!(!r.due(0, 1000, at(0), at(1000)), "empty file");
        assert!(!r.due(50, 50, at(0), at(10)));
        assert!(r.due(50, 51, at(0), at(10)), "size");
        assert!(r.due(1, 1, at(0), at(60)), "age");
        assert!(!Rotation::default().due(u64::MAX / 2, 100, at(0), at(u64::MAX / 4)));
    }

    #[test]
    fn rotated_names_sort_by_time_and_never_collide() {
        let path = Path::new("/var/log/alerts.jsonl");
        let t = at(1_795_000_000);
        let first = rotated_name(path, t, |_| false);
        assert_eq!(
            first,
            Path::new("/var/log/alerts.20261118T110640Z.jsonl"),
            "{first:?}"
        );
        let second = rotated_name(path, t, |p| p == first);
        assert_eq!(
            second,
            Path::new("/var/log/alerts.20261118T110640Z-1.jsonl")
        );
        for n in [&first, &second] {
            let name = n.file_name().unwrap().to_str().unwrap();
            assert!(is_rotated(path, name), "{name}");
        }
        assert!(!is_rotated(path, "alerts.jsonl"));
        assert!(!is_rotated(path, "alerts.backup.jsonl"));
        assert!(!is_rotated(path, "other.20261118T110640Z.jsonl"));
        assert!(
            rotation_order("alerts.20261118T110640Z-2.jsonl")
                < rotation_order("alerts.20261118T110640Z-10.jsonl")
        );
    }
}
