//! A replica's lease on a limit shared through a store (Redis): units it may use without
//! asking anyone, granted in the background as a slice of what is left.
//!
//! The shared counter of a (rule, entity, window) counts units *taken*: leases granted, plus
//! use that no lease covered (a token debit past the lease), less leases handed back. On first
//! sight of an entity a replica takes `1/replicas` of the limit as its own first lease,
//! counted in the store at the next sync (so replicas meeting an entity at once share the
//! limit, and the store then grants slices of what is truly left). A replica admits locally
//! only while its lease has room, so N replicas together admit at most what the counter
//! allowed, however fast a burst arrives; no request waits on the store. A lease outlives its window (units granted in one window and used in the next were
//! counted in the first), and one left idle is handed back, less a small part kept so the next
//! request after a pause does not wait for a grant.

use std::sync::Arc;

/// Sync ticks without use after which a lease beyond `keep` is handed back.
pub const IDLE_TICKS: u32 = 10;

#[derive(Debug, Clone, Default)]
pub(crate) struct Lease {
    /// Granted and not used yet (never negative: use beyond it is debt, pushed as such).
    pub left: f64,
    /// The entity was seen while leasing (and took its first-sight share).
    pub seen: bool,
    /// The first-sight share is not in the store yet: ask for nothing until it is, so slices
    /// are cut from what other replicas' shares left.
    pub unreported: bool,
    /// Used here since the last tick.
    pub used_tick: f64,
    /// Refused for want of a lease since the last tick: ask for one even if unused.
    pub starved: bool,
    pub idle: u32,
    /// In the rule's `leasing` set, ticked by the sync task.
    pub tracked: bool,
}

impl Lease {
    /// On first sight, takes `share` (this replica's part of the limit) as a lease and
    /// returns it, for the caller to add to the shared counter; else 0.
    pub fn first_sight(&mut self, share: f64) -> f64 {
        if self.seen {
            return 0.0;
        }
        self.seen = true;
        self.unreported = true;
        self.left += share;
        share
    }

    /// Uses `x` units: from the lease first; returns the part it did not cover, which the
    /// caller adds to the shared counter.
    pub fn take(&mut self, x: f64) -> f64 {
        let from_lease = x.min(self.left);
        self.left -= from_lease;
        self.used_tick += x;
        x - from_lease
    }

    pub fn grant(&mut self, units: f64) {
        self.seen = true;
        self.left += units.max(0.0);
    }
}

/// What a tick decided for one leased entity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Tick {
    /// Ask the store for a slice.
    Ask,
    /// Hand back this many units (added to the shared counter as a negative amount).
    Return(f64),
    /// Nothing to do; `false`: stop tracking it.
    Keep(bool),
}

impl Lease {
    /// One sync tick: ask for more when the lease will not last the next interval at the
    /// pace of the last one (or a request was refused), hand back all but `keep` after
    /// [`IDLE_TICKS`] idle ticks.
    pub fn tick(&mut self, keep: f64) -> Tick {
        if std::mem::take(&mut self.unreported) {
            return Tick::Keep(true);
        }
        let used = std::mem::take(&mut self.used_tick);
        let starved = std::mem::take(&mut self.starved);
        if used > 0.0 || starved {
            self.idle = 0;
            return if self.left < used.max(keep) || starved {
                Tick::Ask
            } else {
                Tick::Keep(true)
            };
        }
        self.idle += 1;
        if self.idle >= IDLE_TICKS && self.left > keep {
            let back = self.left - keep;
            self.left = keep;
            return Tick::Return(back);
        }
        Tick::Keep(self.idle < IDLE_TICKS)
    }
}

/// A request for a slice of a shared counter: the sync task runs the store's grant script.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseWant {
    pub rule_id: Arc<str>,
    pub entity: u64,
    pub window: u64,
    /// The rule's limit: the most the counter may reach.
    pub limit: f64,
    /// Grants are whole multiples of this (1 for requests), or any amount when 0.
    pub unit: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_comes_from_the_lease_and_the_rest_is_debt() {
        let mut l = Lease::default();
        assert_eq!(l.first_sight(5.0), 5.0);
        assert_eq!(l.first_sight(5.0), 0.0, "once");
        assert_eq!(l.take(2.0), 0.0);
        l.grant(4.0);
        assert_eq!(l.left, 7.0);
        assert_eq!(l.take(3.0), 0.0);
        assert_eq!(l.take(6.0), 2.0, "debt");
        assert_eq!(l.left, 0.0);
    }

    #[test]
    fn a_busy_lease_asks_for_more_and_an_idle_one_is_handed_back() {
        let mut l = Lease::default();
        l.grant(10.0);
        l.take(2.0);
        assert_eq!(
            l.tick(1.0),
            Tick::Keep(true),
            "8 left lasts another tick of 2"
        );
        l.take(7.0);
        assert_eq!(l.tick(1.0), Tick::Ask);
        l.grant(5.0);
        for _ in 1..IDLE_TICKS {
            assert_eq!(l.tick(1.0), Tick::Keep(true));
        }
        assert_eq!(l.tick(1.0), Tick::Return(5.0));
        assert_eq!(l.left, 1.0, "a unit is kept for the next request");
        assert_eq!(l.tick(1.0), Tick::Keep(false));
        l.starved = true;
        assert_eq!(l.tick(1.0), Tick::Ask);
    }
}
