//! Human durations: `30s`, `10m`, `24h`, `7d`.

use std::time::Duration;

/// Reads a duration written as a number and a unit (`s`, `m`, `h`, `d`, `w`), as Sigma's
/// `timespan` and chainwatch's config write them. Compound forms (`1h30m`) are accepted too.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "duration {s:?} has no unit (write it as 30s, 10m, 24h or 7d)"
        ));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("unreadable duration {s:?} ({e}); write it as 30s, 10m, 24h or 7d"))
}

/// Serde helper for `Duration` fields written as human durations.
pub mod serde_human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Deserializes `"10m"` into a `Duration`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde helper for optional `Duration` fields written as human durations.
pub mod serde_human_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Deserializes `"10m"` into `Some(Duration)`; a missing key is `None` (with `#[serde(default)]`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sigma_timespans() {
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
