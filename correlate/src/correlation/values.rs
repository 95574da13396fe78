//! [`GroupValues`]: a group's group-by values, with a lone value held inline.
//!
//! Most correlations group by one field (the host), and every group's key is held by its map
//! entry and its recency slot. An `Arc<[SharedStr]>` of one value is an allocation of its own
//! (32 bytes requested, a 48-byte malloc chunk) around a string that is shared anyway (a host
//! key is the host name's own string); one value inline costs 8 bytes more in the map bucket
//! and the recency slot instead. Compares, hashes, orders and serializes as the slice of
//! values, whichever form holds it.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use chainwatch_model::SharedStr;
use serde::{Serialize, Serializer};

/// The group-by values of a group (see the module docs). Cheap to clone: one reference count.
#[derive(Clone)]
pub(crate) enum GroupValues {
    /// Exactly one value.
    One(SharedStr),
    /// No value, or more than one.
    Many(Arc<[SharedStr]>),
}

impl Deref for GroupValues {
    type Target = [SharedStr];

    fn deref(&self) -> &[SharedStr] {
        match self {
            GroupValues::One(v) => std::slice::from_ref(v),
            GroupValues::Many(vs) => vs,
        }
    }
}

impl Borrow<[SharedStr]> for GroupValues {
    fn borrow(&self) -> &[SharedStr] {
        self
    }
}

impl From<Vec<SharedStr>> for GroupValues {
    fn from(values: Vec<SharedStr>) -> Self {
        match <[SharedStr; 1]>::try_from(values) {
            Ok([v]) => GroupValues::One(v),
            Err(values) => GroupValues::Many(Arc::from(values)),
        }
    }
}

impl FromIterator<SharedStr> for GroupValues {
    fn from_iter<I: IntoIterator<Item = SharedStr>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl PartialEq for GroupValues {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for GroupValues {}

impl PartialOrd for GroupValues {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for GroupValues {
    fn cmp(&self, other: &Self) -> Ordering {
        (**self).cmp(&**other)
    }
}

/// As the slice: a map keyed by `GroupValues` answers `&[SharedStr]` lookups.
impl Hash for GroupValues {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state);
    }
}

impl fmt::Debug for GroupValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for GroupValues {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (**self).serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::hash_map::DefaultHasher;

    use super::*;

    fn hash_of<T: Hash + ?Sized>(t: &T) -> u64 {
        let mut h = DefaultHasher::new();
        t.hash(&mut h);
        h.finish()
    }

    #[test]
    fn one_value_is_inline_and_behaves_as_the_slice() {
        let one: GroupValues = vec![SharedStr::from("ws1")].into();
        assert!(matches!(one, GroupValues::One(_)));
        let two: GroupValues = [SharedStr::from("ws1"), SharedStr::from("u")]
            .into_iter()
            .collect();
        assert!(matches!(two, GroupValues::Many(_)));
        let none: GroupValues = Vec::new().into();
        assert!(none.is_empty());

        let slice: Arc<[SharedStr]> = Arc::from(vec![SharedStr::from("ws1")]);
        assert_eq!(&*one, &*slice);
        assert_eq!(hash_of(&one), hash_of(&*slice));
        assert_eq!(hash_of(&two), hash_of(&*two));
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            serde_json::to_string(&*slice).unwrap()
        );
        assert_eq!(serde_json::to_string(&two).unwrap(), r#"["ws1","u"]"#);
        assert_eq!(one.cmp(&two), (*one).cmp(&*two));
        assert!(none < one);
        assert!(std::mem::size_of::<GroupValues>() <= 24);
    }
}
