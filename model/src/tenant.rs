//! Tenant identity: the customer an event or alert belongs to.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The customer (tenant) an event, a piece of state or an alert belongs to.
///
/// It comes from the source (a topic name pattern or a Kafka header), never from the payload
/// unless a source is configured as trusted. Cheap to clone: events of one tenant share the
/// allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

/// Why a string cannot be a tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantError {
    /// The id was empty.
    #[error("a tenant id cannot be empty")]
    Empty,
    /// The id had a character outside `[A-Za-z0-9_-]`.
    #[error("tenant id {0:?} may only contain letters, digits, '-' and '_'")]
    BadChar(String),
    /// The id was longer than [`TenantId::MAX_LEN`].
    #[error("tenant id {0:?} is longer than 64 characters")]
    TooLong(String),
}

impl TenantId {
    /// The longest accepted tenant id, in bytes.
    pub const MAX_LEN: usize = 64;

    /// Validates and wraps a tenant id. Tenant ids end up in topic names, metric labels and file
    /// names, so they are restricted to a safe alphabet.
    pub fn new(id: &str) -> Result<Self, TenantError> {
        Self::check(id)?;
        Ok(Self(Arc::from(id)))
    }

    /// Whether `id` may be a tenant id, without making one.
    pub fn check(id: &str) -> Result<(), TenantError> {
        if id.is_empty() {
            return Err(TenantError::Empty);
        }
        if id.len() > Self::MAX_LEN {
            return Err(TenantError::TooLong(id.to_owned()));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(TenantError::BadChar(id.to_owned()));
        }
        Ok(())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", &self.0)
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        TenantId::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_safe_ids_and_rejects_others() {
        assert_eq!(TenantId::new("acme-01").unwrap().as_str(), "acme-01");
        assert_eq!(TenantId::new(""), Err(TenantError::Empty));
        assert!(matches!(TenantId::new("a.b"), Err(TenantError::BadChar(_))));
        assert!(matches!(
            TenantId::new(&"x".repeat(65)),
            Err(TenantError::TooLong(_))
        ));
    }
}
