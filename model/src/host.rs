//! Host identity: one machine is one host, however a source spells it.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::shared::SharedStr;

/// A host as telemetry names it, with the key chainwatch compares it by.
///
/// `WORKSTATION6`, `workstation6` and `WORKSTATION6.theshire.local` are one host: the key is the
/// lower-cased name without its domain. IP addresses are kept whole. Equality and hashing use the
/// key only; the name as first seen is kept for display.
#[derive(Clone)]
pub struct HostName {
    // Shared: a host name is copied into every hit and piece of evidence of its events.
    display: Arc<str>,
    key: Arc<str>,
}

impl HostName {
    /// Normalizes a host name as a source wrote it.
    pub fn new(raw: &str) -> Self {
        let display = raw.trim();
        let key = host_key(display);
        Self {
            display: display.into(),
            key: key.into(),
        }
    }

    /// The comparison key: lower case, without the domain.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The comparison key as a shared string: the same allocation as this name's, so a
    /// structure keyed by the host holds no copy of it.
    pub fn shared_key(&self) -> SharedStr {
        SharedStr::from(Arc::clone(&self.key))
    }

    /// The name as the source wrote it.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// True when no host name was known.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }
}

/// The comparison key of a host name: lower case, domain stripped, IP addresses kept whole.
pub fn host_key(raw: &str) -> String {
    let raw = raw.trim().trim_matches('.');
    if raw.parse::<std::net::IpAddr>().is_ok() {
        return raw.to_ascii_lowercase();
    }
    let short = raw.split('.').find(|l| !l.trim().is_empty()).unwrap_or("");
    short.trim().to_lowercase()
}

impl PartialEq for HostName {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for HostName {}

/// A host name is looked up by its key: maps keyed by host names answer `&str` keys.
impl std::borrow::Borrow<str> for HostName {
    fn borrow(&self) -> &str {
        &self.key
    }
}

impl Hash for HostName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName({:?})", &*self.display)
    }
}

impl Serialize for HostName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.display)
    }
}

impl<'de> Deserialize<'de> for HostName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Ok(HostName::new(&raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_machine_is_one_host() {
        let a = HostName::new("WORKSTATION6");
        let b = HostName::new("workstation6.theshire.local");
        assert_eq!(a, b);
        assert_eq!(a.key(), "workstation6");
        assert_eq!(b.display(), "workstation6.theshire.local");
        assert_ne!(
            HostName::new("FS03.offsec.lan"),
            HostName::new("fs01.offsec.lan")
        );
    }

    #[test]
    fn stray_dots_do_not_empty_the_key() {
        assert_eq!(HostName::new(".EXCH01").key(), "exch01");
        assert_eq!(HostName::new("exch01..corp.").key(), "exch01");
        assert!(HostName::new(" . ").is_empty());
    }

    #[test]
    fn ip_addresses_are_not_split() {
        assert_eq!(HostName::new("10.0.0.5").key(), "10.0.0.5");
        assert_eq!(HostName::new("FE80::1").key(), "fe80::1");
    }
}
