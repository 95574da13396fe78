//! A recency index: keys by the tick of their last update, least recent first.
//!
//! The correlation groups and the look-back keep one per tenant, with an entry for every
//! group or host, so its size per entry counts once per tracked host. A `BTreeMap<u64, K>`
//! filled in tick order leaves its nodes about half full (about 78 bytes per entry with a
//! 16-byte key). Ticks only grow, so appending keeps a plain queue sorted: [`Recency`] is a
//! `VecDeque` of `(tick, key)` found by binary search. A removed entry becomes a hole (its key
//! is dropped at once); holes at either end are popped, and the queue is compacted when holes
//! outnumber live entries, so it stays within about twice the live entries, amortized O(1)
//! per removal. The order is exactly the B-tree's: by tick.

use std::collections::VecDeque;

/// Keys by last update (see the module docs). Ticks pushed must grow.
#[derive(Debug, Clone)]
pub(crate) struct Recency<K> {
    queue: VecDeque<(u64, Option<K>)>,
    live: usize,
}

impl<K> Default for Recency<K> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            live: 0,
        }
    }
}

impl<K> Recency<K> {
    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// True when no entry is live.
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Adds `key` as updated at `tick`, which is later than every tick pushed before.
    pub(crate) fn push(&mut self, tick: u64, key: K) {
        debug_assert!(self.queue.back().is_none_or(|(t, _)| *t < tick));
        self.queue.push_back((tick, Some(key)));
        self.live += 1;
    }

    /// Removes the entry of `tick`, if live, and gives its key.
    pub(crate) fn remove(&mut self, tick: u64) -> Option<K> {
        let at = self.queue.binary_search_by_key(&tick, |(t, _)| *t).ok()?;
        let key = self.queue[at].1.take()?;
        self.live -= 1;
        while self.queue.front().is_some_and(|(_, k)| k.is_none()) {
            self.queue.pop_front();
        }
        while self.queue.back().is_some_and(|(_, k)| k.is_none()) {
            self.queue.pop_back();
        }
        if self.queue.len() > 2 * self.live + 8 {
            self.queue.retain(|(_, k)| k.is_some());
            if self.queue.capacity() > 4 * self.queue.len() + 8 {
                self.queue.shrink_to(2 * self.queue.len());
            }
        }
        Some(key)
    }

    /// The live entries, least recent first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &K)> {
        self.queue
            .iter()
            .filter_map(|(t, k)| k.as_ref().map(|k| (*t, k)))
    }

    /// The least recent live entry.
    pub(crate) fn first(&self) -> Option<(u64, &K)> {
        self.iter().next()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The same operations on a `BTreeMap` give the same entries in the same order.
    #[test]
    fn behaves_as_a_tick_ordered_map() {
        let mut r: Recency<u32> = Recency::default();
        let mut m: BTreeMap<u64, u32> = BTreeMap::new();
        // Deterministic pseudo-random mix of updates and removals over 50 keys.
        let mut touched: Vec<Option<u64>> = vec![None; 50];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for tick in 1..20_000u64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let key = (seed % 50) as u32;
            let old = touched[key as usize];
            if let Some(old) = old {
                assert_eq!(r.remove(old), m.remove(&old));
            }
            if seed.is_multiple_of(7) {
                touched[key as usize] = None;
            } else {
                r.push(tick, key);
                m.insert(tick, key);
                touched[key as usize] = Some(tick);
            }
            assert_eq!(r.len(), m.len());
            assert_eq!(r.first(), m.iter().next().map(|(t, k)| (*t, k)));
            assert!(r.queue.len() <= 2 * r.len() + 9, "holes are compacted");
        }
        let got: Vec<(u64, u32)> = r.iter().map(|(t, k)| (t, *k)).collect();
        let want: Vec<(u64, u32)> = m.into_iter().collect();
        assert_eq!(got, want);
        assert_eq!(r.remove(0), None, "an unknown tick removes nothing");
    }

    #[test]
    fn removing_everything_leaves_it_empty() {
        let mut r = Recency::default();
        for t in 1..=100 {
            r.push(t, t);
        }
        for t in (1..=100).rev() {
            assert_eq!(r.remove(t), Some(t));
        }
        assert!(r.is_empty());
        assert_eq!(r.first(), None);
        assert_eq!(r.remove(5), None, "removed twice");
    }
}
