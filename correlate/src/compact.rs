//! Small helpers that keep long-lived per-host and per-group state compact.
//!
//! A `Vec` grows to a capacity of four on its first push (more for small elements); one
//! million hosts with one entry each then hold three unused slots apiece. [`insert`] grows a
//! vector one slot at a time while it is short and by doubling once it is not, so a vector of
//! one holds one, and a busy one still grows in amortized constant time.

/// Below this length a vector grows one slot at a time.
const EXACT_UP_TO: usize = 4;

/// Inserts `item` at `at`, growing `v` exactly while it is short.
pub(crate) fn insert<T>(v: &mut Vec<T>, at: usize, item: T) {
    reserve_one(v);
    v.insert(at, item);
}

fn reserve_one<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        if v.len() < EXACT_UP_TO {
            v.reserve_exact(1);
        } else {
            v.reserve(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_vectors_hold_no_spare_slots_and_long_ones_still_double() {
        let mut v: Vec<u64> = Vec::new();
        insert(&mut v, 0, 1);
        assert_eq!(v.capacity(), 1);
        insert(&mut v, 0, 0);
        assert_eq!(v.capacity(), 2);
        let mut grown = 0;
        for i in 2..1000 {
            let before = v.capacity();
            let end = v.len();
            insert(&mut v, end, i);
            grown += usize::from(v.capacity() != before);
        }
        assert_eq!(v, (0..1000).collect::<Vec<_>>());
        assert!(
            grown < 20,
            "{grown} reallocations: doubling, not one slot at a time"
        );
    }
}
