//! Small helpers that keep long-lived per-host and per-group state compact.
//!
//! A `Vec` (or a spilled `SmallVec`) grows to a capacity of four on its first push, more for
//! small elements, or doubles; one million groups with one or two hits each would then hold
//! spare slots apiece. [`insert`] grows a list one slot at a time while it is short and by
//! doubling once it is not, so a list of two holds two, and a busy one still grows in
//! amortized constant time.

use smallvec::{Array, SmallVec};

/// Below this length a list grows one slot at a time.
const EXACT_UP_TO: usize = 4;

/// Inserts `item` at `at`: inline while the list fits its inline slots, then on the heap,
/// growing exactly while short and by doubling once not.
pub(crate) fn insert<A: Array>(v: &mut SmallVec<A>, at: usize, item: A::Item) {
    if v.len() == v.capacity() {
        if v.len() < EXACT_UP_TO {
            v.reserve_exact(1);
        } else {
            v.reserve(1);
        }
    }
    v.insert(at, item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_lists_stay_inline_then_hold_no_spare_slots_and_long_ones_still_double() {
        let mut v: SmallVec<[u64; 1]> = SmallVec::new();
        insert(&mut v, 0, 1);
        assert!(!v.spilled(), "one item stays inline");
        insert(&mut v, 0, 0);
        assert_eq!(v.capacity(), 2);
        insert(&mut v, 2, 2);
        assert_eq!(v.capacity(), 3);
        let mut grown = 0;
        for i in 3..1000 {
            let before = v.capacity();
            let end = v.len();
            insert(&mut v, end, i);
            grown += usize::from(v.capacity() != before);
        }
        assert_eq!(v.as_slice(), (0..1000).collect::<Vec<_>>().as_slice());
        assert!(
            grown < 20,
            "{grown} reallocations: doubling, not one slot at a time"
        );
    }
}
