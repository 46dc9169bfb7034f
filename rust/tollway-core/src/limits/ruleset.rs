//! The machinery rate limits and budgets share: an ordered list of rules, each matched by its
//! `when` block, each with its live state behind an `Arc` (entities in a bounded map, what the
//! sync task must visit, the share and lease settings, metric counters).
//!
//! [`RuleSet`] holds the rules and answers the questions both kinds ask: which rule matches
//! first, which match at all, which rule has an id; it adopts the state of unchanged rules
//! across a reload, and exchanges totals and leases with the shared store (`shared.rs`).
//! A kind of limit says what differs through [`LimitRule`]: the state of one entity, the
//! window its counters are shared per, and how a counter's total changes that state. It is
//! all generic, so the request path calls monomorphised code: no boxing, no allocation.

use super::config::KeyPart;
use super::entity::entity_key;
use super::lease::Lease;
use super::map::BoundedMap;
use super::RequestFacts;
use crate::when::When;
use std::collections::HashSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

mod shared;

/// What a kind of limit (a rate limit, a budget) adds to a rule of a [`RuleSet`].
///
/// The sync hooks take `now` on the kind's own clock (monotonic ms for rate limits, wall ms
/// for budgets), the window a shared counter belongs to, and the rule's current outage share.
pub(crate) trait LimitRule: Debug {
    /// The state of one entity under the rule.
    type Entry: Entry;
    /// Counters for metrics, outside the lock.
    type Counters: Debug + Default + Send + Sync;
    /// More state of the rule, behind its lock.
    type Extra: Debug + Default + Send;
    /// A lease granted for a window that has passed is still usable (rate limits: units
    /// granted in one window and used in the next were counted in the first); otherwise it
    /// goes with its window (budgets: a new period is a new budget).
    const LEASE_OUTLIVES_WINDOW: bool;
    /// The kind's tag in the names of shared counters (`rl`, `bg`; see `sync.rs`).
    const COUNTER_PREFIX: &'static str;

    fn id(&self) -> &str;
    fn when(&self) -> &When;
    /// The parts of the entity key (`*_applies_per`).
    fn applies_per(&self) -> &[KeyPart];
    /// Same unit and entity parts (the id compared apart): a reload adopts the state.
    fn same_shape(&self, other: &Self) -> bool;
    /// The unit as the config writes it (`requests_per_minute`, `cost_per_day`), for the
    /// names of shared counters.
    fn unit_name(&self) -> String;
    /// The wall-clock window index the rule's shared counters count per.
    fn window(&self, wall_ms: u64) -> u64;
    /// How long a shared counter is worth keeping after a write: two (of the longest) windows.
    fn counter_ttl_ms(&self) -> u64;
    /// `(limit, grant unit, what an idle entity keeps of its lease)` for lease requests.
    fn lease_terms(&self) -> (f64, f64, f64);
    /// A new entity's state, first met through a counter of `window`.
    fn fresh(&self, now: u64, window: u64, share: u32) -> Self::Entry;
    /// Equal to a fresh entry, so the map may drop it (judged with syncing on: the sync
    /// task is the caller).
    fn idle(&self, e: &Self::Entry, now: u64, share: u32) -> bool;
    /// A counter of `window` belongs to a window that is over: nothing of it applies.
    fn passed(&self, now: u64, window: u64) -> bool;
    /// Brings an entry up to `now` and into `window` before a counter's total applies.
    fn advance(&self, e: &mut Self::Entry, now: u64, window: u64, share: u32);
    /// The window an entry's unsynced consumption is handed over in, `window` being the
    /// current one.
    fn drain_window(&self, e: &mut Self::Entry, window: u64) -> u64;
    /// Other replicas used `more` since the last total that said so.
    fn others_used(&self, _e: &mut Self::Entry, _more: f64) {}
}

/// An entity's state, with the part the shared store's exchange looks at.
pub(crate) trait Entry: Debug + Send {
    fn synced(&mut self) -> &mut Synced;
}

/// What one entity exchanges with the shared store, in the window `pushed` and `others`
/// belong to.
#[derive(Debug, Default)]
pub(crate) struct Synced {
    /// The wall-clock window (budgets: the period) of `pushed` and `others`.
    pub window: u64,
    /// Still to add to the shared counter (negative: a lease handed back).
    pub unsynced: f64,
    /// Added to the shared counter by this replica in `window`.
    pub pushed: f64,
    /// Other replicas' consumption in `window`.
    pub others: f64,
    /// This replica's slice of the shared limit (see `lease.rs`).
    pub lease: Lease,
}

/// Beyond this many dirty entities between two syncs, the next sync scans all entities.
const DIRTY_CAP: usize = 65_536;

/// Which entities the sync task must visit.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    /// Entities with unsynced consumption, so a sync visits only those.
    dirty: Vec<u64>,
    /// `dirty` hit its cap: the next drain scans every entity instead.
    overflow: bool,
    /// Entities whose lease the sync task looks after.
    leasing: HashSet<u64>,
}

impl SyncState {
    fn mark_dirty(&mut self, entity: u64) {
        if self.dirty.len() < DIRTY_CAP {
            self.dirty.push(entity);
        } else {
            self.overflow = true;
        }
    }

    /// Adds `amount` to what the next drain hands the shared counter.
    pub fn add(&mut self, s: &mut Synced, entity: u64, amount: f64) {
        if s.unsynced == 0.0 {
            self.mark_dirty(entity);
        }
        s.unsynced += amount;
    }

    /// Puts the entity's lease in the care of the sync task.
    pub fn track(&mut self, lease: &mut Lease, entity: u64) {
        if !lease.tracked {
            lease.tracked = true;
            self.leasing.insert(entity);
        }
    }

    /// On first sight while leasing, takes `share` of the limit as the entity's lease (and
    /// adds it to the shared counter).
    pub fn first_sight(&mut self, s: &mut Synced, entity: u64, share: f64) {
        let taken = s.lease.first_sight(share);
        if taken > 0.0 {
            self.add(s, entity, taken);
            self.track(&mut s.lease, entity);
        }
    }

    /// A request was refused for want of a lease: the next tick asks for one.
    pub fn starve(&mut self, s: &mut Synced, entity: u64) {
        s.lease.starved = true;
        self.track(&mut s.lease, entity);
    }

    /// Records `amount` used (with syncing on): what no lease covered (all of it when not
    /// leasing) goes to the shared counter.
    pub fn used(&mut self, s: &mut Synced, entity: u64, amount: f64, leasing: bool) {
        let shared = if leasing {
            let debt = s.lease.take(amount);
            self.track(&mut s.lease, entity);
            debt
        } else {
            amount
        };
        if shared > 0.0 {
            self.add(s, entity, shared);
        }
    }
}

/// The state of one rule behind its lock.
#[derive(Debug)]
pub(crate) struct Inner<R: LimitRule> {
    pub entries: BoundedMap<R::Entry>,
    pub sync: SyncState,
    pub extra: R::Extra,
}

/// The live state of one rule, shared with the engine a reload builds when the rule keeps
/// its id and shape.
#[derive(Debug)]
pub(crate) struct State<R: LimitRule> {
    pub id: Arc<str>,
    inner: Mutex<Inner<R>>,
    /// Set by the first drain: consumption is then tracked for the sync task.
    pub syncing: AtomicBool,
    /// Replicas sharing the limit while the shared store is unreachable (1: synced).
    pub share: AtomicU32,
    /// Replicas sharing the limit through leases; 0: not leasing (no shared store).
    pub replicas: AtomicU32,
    /// Counts outages (a share going above 1), so an entity can note where it stood when
    /// the current one began.
    pub outage: AtomicU64,
    pub counters: R::Counters,
}

impl<R: LimitRule> State<R> {
    pub fn lock(&self) -> MutexGuard<'_, Inner<R>> {
        // A panic while holding the lock leaves numbers, never broken invariants.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn syncing(&self) -> bool {
        self.syncing.load(Ordering::Relaxed)
    }

    pub fn share(&self) -> u32 {
        self.share.load(Ordering::Relaxed)
    }

    /// Replicas sharing the limit by leases, when admission must stay within a lease: the
    /// store is reachable (no outage share) and syncing is on.
    pub fn leasing(&self, syncing: bool) -> Option<u32> {
        let n = self.replicas.load(Ordering::Relaxed);
        (syncing && n > 0 && self.share() <= 1).then_some(n)
    }
}

/// A rule and its live state.
#[derive(Debug)]
pub(crate) struct Compiled<R: LimitRule> {
    pub rule: R,
    pub state: Arc<State<R>>,
}

impl<R: LimitRule> Compiled<R> {
    /// The entity a request counts against under this rule.
    pub fn entity(&self, facts: &RequestFacts<'_>) -> u64 {
        entity_key(self.rule.applies_per(), facts)
    }
}

/// The rules of one kind, in config order.
#[derive(Debug)]
pub(crate) struct RuleSet<R: LimitRule> {
    rules: Vec<Compiled<R>>,
    max_entities: usize,
}

impl<R: LimitRule> RuleSet<R> {
    /// Each rule keeps at most `max_entities` entities in memory.
    pub fn new(rules: Vec<R>, max_entities: usize) -> Self {
        let rules = rules
            .into_iter()
            .map(|rule| {
                let state = Arc::new(State {
                    id: Arc::from(rule.id()),
                    inner: Mutex::new(Inner {
                        entries: BoundedMap::new(max_entities),
                        sync: SyncState::default(),
                        extra: R::Extra::default(),
                    }),
                    syncing: AtomicBool::new(false),
                    share: AtomicU32::new(1),
                    replicas: AtomicU32::new(0),
                    outage: AtomicU64::new(0),
                    counters: R::Counters::default(),
                });
                Compiled { rule, state }
            })
            .collect();
        Self {
            rules,
            max_entities,
        }
    }

    /// Takes over the live state of every rule of `old` with the same id and shape. Call
    /// before the new rules serve requests. Returns how many.
    pub fn adopt(&mut self, old: &Self) -> usize {
        let mut adopted = 0;
        for c in &mut self.rules {
            if let Some(o) = old
                .rules
                .iter()
                .find(|o| o.state.id == c.state.id && o.rule.same_shape(&c.rule))
            {
                c.state = Arc::clone(&o.state);
                c.state.lock().entries.set_cap(self.max_entities);
                adopted += 1;
            }
        }
        adopted
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Compiled<R>> {
        self.rules.iter()
    }

    pub fn get(&self, rule: u32) -> Option<&Compiled<R>> {
        self.rules.get(rule as usize)
    }

    pub fn rule_id(&self, rule: u32) -> &str {
        self.get(rule).map_or("", |c| c.rule.id())
    }

    /// The rule with id `rule_id`.
    pub fn find(&self, rule_id: &str) -> Option<&Compiled<R>> {
        self.rules.iter().find(|c| &*c.state.id == rule_id)
    }

    /// The first rule matching a request, with its index: the rule that decides.
    pub fn first_match(&self, facts: &RequestFacts<'_>) -> Option<(u32, &Compiled<R>)> {
        let (i, c) = self
            .rules
            .iter()
            .enumerate()
            .find(|(_, c)| c.rule.when().matches(facts))?;
        Some((u32::try_from(i).unwrap_or(u32::MAX), c))
    }

    /// Every rule matching a request: the rules it is charged to.
    pub fn matching<'s>(
        &'s self,
        facts: &'s RequestFacts<'_>,
    ) -> impl Iterator<Item = &'s Compiled<R>> + 's {
        self.rules.iter().filter(|c| c.rule.when().matches(facts))
    }

    /// One row per rule from `row(rule, entities, evicted_live)`, for metrics.
    pub fn stats<T>(&self, row: impl Fn(&Compiled<R>, usize, u64) -> T) -> Vec<T> {
        self.rules
            .iter()
            .map(|c| {
                let (entities, evicted_live) = {
                    let inner = c.state.lock();
                    (inner.entries.len(), inner.entries.evicted_live)
                };
                row(c, entities, evicted_live)
            })
            .collect()
    }

    /// Leasing on (`replicas` >= 1, the store answers) or off (0).
    pub fn set_replicas(&self, replicas: u32) {
        for c in &self.rules {
            c.state.replicas.store(replicas, Ordering::Relaxed);
        }
    }

    /// While the shared store is unreachable, each of `replicas` replicas enforces its share
    /// of every rule; 1 restores the synced view. Lives with the rule's state, so a reload's
    /// adopted rules keep it.
    pub fn set_share(&self, replicas: u32) {
        let n = replicas.max(1);
        for c in &self.rules {
            let old = c.state.share.swap(n, Ordering::Relaxed);
            if n > 1 && old <= 1 {
                c.state.outage.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
