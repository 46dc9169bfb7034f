//! A map of per-entity state with a hard cap on its size.
//!
//! When it is full, every idle entry goes first (an idle entry - a full bucket, a budget with
//! nothing spent this period - equals a fresh one, so dropping it loses nothing); if that frees
//! less than an eighth of the cap, the least recently used entries follow. Making room in
//! batches keeps the cost amortised O(1) per insert and the request path free of LRU lists:
//! recency is a counter stamped on each use.

use std::collections::HashMap;

#[derive(Debug)]
struct Tracked<E> {
    used: u64,
    value: E,
}

#[derive(Debug)]
pub(crate) struct BoundedMap<E> {
    map: HashMap<u64, Tracked<E>>,
    cap: usize,
    tick: u64,
    /// Entries dropped that were not idle: state lost to the cap.
    pub evicted_live: u64,
    pub evicted_idle: u64,
}

impl<E> BoundedMap<E> {
    pub fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            cap: cap.max(1),
            tick: 0,
            evicted_live: 0,
            evicted_idle: 0,
        }
    }

    /// A new cap applies from the next insert that finds the map full.
    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap.max(1);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Looks without counting as a use.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn get(&self, key: u64) -> Option<&E> {
        self.map.get(&key).map(|t| &t.value)
    }

    /// Changes without counting as a use (the sync task, not a request).
    pub fn get_mut(&mut self, key: u64) -> Option<&mut E> {
        self.map.get_mut(&key).map(|t| &mut t.value)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&u64, &E)> {
        self.map.iter().map(|(k, t)| (k, &t.value))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&u64, &mut E)> {
        self.map.iter_mut().map(|(k, t)| (k, &mut t.value))
    }

    /// The entry of `key`, marked as just used, created by `make` (after making room if the
    /// map is full).
    pub fn entry(
        &mut self,
        key: u64,
        make: impl FnOnce() -> E,
        idle: impl Fn(&E) -> bool,
    ) -> &mut E {
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            self.make_room(idle);
        }
        self.tick += 1;
        let t = self.map.entry(key).or_insert_with(|| Tracked {
            used: 0,
            value: make(),
        });
        t.used = self.tick;
        &mut t.value
    }

    fn make_room(&mut self, idle: impl Fn(&E) -> bool) {
        let before = self.map.len();
        self.map.retain(|_, t| !idle(&t.value));
        self.evicted_idle += (before - self.map.len()) as u64;
        let target = self.cap - (self.cap / 8).max(1);
        if self.map.len() <= target {
            return;
        }
        let excess = self.map.len() - target;
        let mut ticks: Vec<u64> = self.map.values().map(|t| t.used).collect();
        // Ticks are unique, so exactly `excess` entries are at or below the cut.
        let cut = *ticks.select_nth_unstable(excess - 1).1;
        self.map.retain(|_, t| t.used > cut);
        self.evicted_live += excess as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_entries_go_before_recent_ones_and_lru_after() {
        let mut m = BoundedMap::new(16);
        let idle = |e: &(u64, bool)| e.1;
        for k in 0..16 {
            m.entry(k, || (k, k % 2 == 0), idle);
        }
        m.entry(100, || (100, false), idle);
        assert_eq!(m.len(), 9, "the 8 idle entries made room");
        assert!(m.get(1).is_some() && m.get(0).is_none());
        // Using 1 again makes 3 and 5 the least recently used.
        m.entry(1, || (1, false), idle);
        for k in 101..108 {
            m.entry(k, || (k, false), idle);
        }
        assert_eq!(m.len(), 16);
        m.entry(200, || (200, false), idle);
        // Nothing idle: the two least recently used make room for one eighth.
        assert_eq!(m.len(), 15);
        assert!(m.get(3).is_none() && m.get(5).is_none());
        assert!(m.get(1).is_some() && m.get(7).is_some());
        assert_eq!((m.evicted_idle, m.evicted_live), (8, 2));
    }
}
