//! Spend budgets in USD per UTC day, ISO week or month.
//!
//! The first matching rule decides whether a request may start (blocked once the entity's
//! spend in the current period reached the limit); the cost of a settled request is charged
//! to every matching rule. Periods come from wall-clock milliseconds since the Unix epoch,
//! passed in (the engine's `Clock` is monotonic and cannot name a calendar day).
//!
//! Admission reserves an estimate of the request's cost (see `reserve.rs`) on every matching
//! rule until settle charges the real cost, so concurrent requests see each other: a request
//! starts only while spend plus reservations is under the limit, and the spend can pass the
//! limit by at most one request. Across replicas each spends from a lease (`lease.rs`).

use super::config::{BudgetPeriod, BudgetRule, KeyPart};
use super::entity::entity_label;
use super::reserve::{Held, Release, Reservation};
use super::ruleset::{Entry, LimitRule, RuleSet, State, Synced};
use super::RequestFacts;
use crate::when::When;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod spend;

pub use spend::{usd, BudgetSpend};

const DAY_MS: u64 = 86_400_000;

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic Gregorian (H. Hinnant).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month 1-12, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl BudgetPeriod {
    /// The period containing `wall_ms`, numbered so that later periods are larger.
    pub fn index(self, wall_ms: u64) -> u64 {
        let days = wall_ms / DAY_MS;
        match self {
            Self::Day => days,
            // 1970-01-01 was a Thursday; weeks start on Monday (ISO 8601).
            Self::Week => (days + 3) / 7,
            Self::Month => {
                let (y, m, _) = civil_from_days(days as i64);
                (y as u64) * 12 + u64::from(m - 1)
            }
        }
    }

    /// Wall-clock ms at which the period containing `wall_ms` ends.
    pub fn end_ms(self, wall_ms: u64) -> u64 {
        let days = wall_ms / DAY_MS;
        let end_day = match self {
            Self::Day => days + 1,
            Self::Week => ((days + 3) / 7 + 1) * 7 - 3,
            Self::Month => {
                let (y, m, _) = civil_from_days(days as i64);
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) as u64
            }
        };
        end_day * DAY_MS
    }
}

/// One entity's spend under one rule; `sync.window` is the period it belongs to.
#[derive(Debug)]
pub(crate) struct Spend {
    /// Spent here in the period, synced or not.
    own: f64,
    /// Estimates of requests admitted here and not settled yet.
    reserved: f64,
    /// Pushed: spend no lease covered, leases granted, less leases handed back; others:
    /// other replicas' spend in the period.
    sync: Synced,
    /// The outage of the shared store `own_base` belongs to (see `State::outage`).
    outage: u64,
    /// `own` when this replica first saw the entity during that outage.
    own_base: f64,
    /// The entity's readable name (`user=alice`), made once when a request first charges
    /// it; empty for an entity only the shared store has told us about.
    label: Option<Arc<str>>,
}

impl Entry for Spend {
    fn synced(&mut self) -> &mut Synced {
        &mut self.sync
    }
}

impl Spend {
    fn fresh(period: u64, label: Option<Arc<str>>) -> Self {
        Self {
            own: 0.0,
            reserved: 0.0,
            sync: Synced {
                window: period,
                ..Synced::default()
            },
            outage: 0,
            own_base: 0.0,
            label,
        }
    }

    /// Records where this replica's spend stood when outage `outage` began (on first sight).
    fn mark_outage(&mut self, outage: u64) {
        if self.outage != outage {
            self.outage = outage;
            self.own_base = self.own;
        }
    }

    /// Spend as seen during an outage shared by `replicas`: what was known when it began,
    /// plus our spend since then as if every other replica spent as much. Each replica thus
    /// gets `1/replicas` of what was left, and together they cannot go over.
    fn conservative(&mut self, period: u64, outage: u64, replicas: u32) -> f64 {
        if self.sync.window != period {
            return 0.0;
        }
        self.mark_outage(outage);
        self.own + self.sync.others + (self.own - self.own_base) * f64::from(replicas - 1)
    }

    fn roll(&mut self, period: u64) {
        if period > self.sync.window {
            // Requests in flight stay reserved into the new period.
            let reserved = self.reserved;
            let tracked = self.sync.lease.tracked;
            *self = Self::fresh(period, self.label.take());
            self.reserved = reserved;
            self.sync.lease.tracked = tracked;
        }
    }

    fn spent(&self, period: u64) -> f64 {
        if self.sync.window == period {
            self.own + self.sync.others
        } else {
            0.0
        }
    }

    /// Equal to a fresh entry: nothing spent this period and nothing left to sync.
    fn idle(&self, period: u64) -> bool {
        self.sync.unsynced == 0.0
            && self.spent(period) == 0.0
            && self.reserved == 0.0
            && self.sync.lease.left == 0.0
    }
}

/// Counters of one rule, for metrics.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    blocked: AtomicU64,
    audit_would_block: AtomicU64,
}

/// Entities whose spend reached the limit since the last `take_crossings` (bounded).
type Crossings = Vec<(Option<Arc<str>>, f64)>;

const CROSSINGS_CAP: usize = 1024;

impl LimitRule for BudgetRule {
    type Entry = Spend;
    type Counters = Counts;
    type Extra = Crossings;
    const LEASE_OUTLIVES_WINDOW: bool = false;
    const COUNTER_PREFIX: &'static str = "bg";

    fn id(&self) -> &str {
        &self.id
    }

    fn when(&self) -> &When {
        &self.when
    }

    fn applies_per(&self) -> &[KeyPart] {
        &self.applies_per
    }

    /// The same period and `budget_applies_per`.
    fn same_shape(&self, other: &Self) -> bool {
        (self.period, &self.applies_per) == (other.period, &other.applies_per)
    }

    fn unit_name(&self) -> String {
        let unit = match self.period {
            BudgetPeriod::Day => "cost_per_day",
            BudgetPeriod::Week => "cost_per_week",
            BudgetPeriod::Month => "cost_per_month",
        };
        unit.to_owned()
    }

    fn window(&self, wall_ms: u64) -> u64 {
        self.period.index(wall_ms)
    }

    /// Two of the longest period (a month: 31 days).
    fn counter_ttl_ms(&self) -> u64 {
        let days = match self.period {
            BudgetPeriod::Day => 1,
            BudgetPeriod::Week => 7,
            BudgetPeriod::Month => 31,
        };
        2 * days * DAY_MS
    }

    fn lease_terms(&self) -> (f64, f64, f64) {
        (self.limit_usd, 0.0, self.limit_usd * 0.01)
    }

    fn fresh(&self, _wall_ms: u64, period: u64, _share: u32) -> Spend {
        Spend::fresh(period, None)
    }

    fn idle(&self, s: &Spend, wall_ms: u64, _share: u32) -> bool {
        s.idle(self.period.index(wall_ms))
    }

    /// Totals of a period that is over change nothing.
    fn passed(&self, wall_ms: u64, period: u64) -> bool {
        period < self.period.index(wall_ms)
    }

    fn advance(&self, s: &mut Spend, _wall_ms: u64, period: u64, _share: u32) {
        s.roll(period);
    }

    fn drain_window(&self, s: &mut Spend, _current: u64) -> u64 {
        s.sync.window
    }
}

impl Release for State<BudgetRule> {
    /// Gives back a reservation (settled, or the request never ran).
    fn release(&self, entity: u64, usd: f64) {
        if let Some(s) = self.lock().entries.get_mut(entity) {
            s.reserved = (s.reserved - usd).max(0.0);
        }
    }
}

/// Whether a request may start, and the numbers for its 429 body.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetDecision {
    pub allowed: bool,
    /// Index of the deciding rule (see [`Budgets::rule_id`]); `None`: no rule matched.
    pub rule: Option<u32>,
    /// The deciding rule is in audit mode (then `allowed` even when over).
    pub audit: bool,
    /// Spend reached the limit: a block, or in audit mode a would-be block.
    pub over: bool,
    pub spent_usd: f64,
    pub limit_usd: f64,
    /// Whole seconds until the period resets.
    pub reset_s: u64,
}

impl BudgetDecision {
    pub const UNLIMITED: Self = Self {
        allowed: true,
        rule: None,
        audit: false,
        over: false,
        spent_usd: 0.0,
        limit_usd: 0.0,
        reset_s: 0,
    };
}

/// Counters of one budget rule, for metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetStats {
    pub id: Arc<str>,
    pub entities: usize,
    pub blocked: u64,
    pub audit_would_block: u64,
    pub evicted_live: u64,
}

#[derive(Debug)]
pub struct Budgets {
    pub(super) rules: RuleSet<BudgetRule>,
}

impl Budgets {
    /// Each rule keeps at most `max_entities` entities' spend in memory.
    pub fn new(rules: Vec<BudgetRule>, max_entities: usize) -> Self {
        Self {
            rules: RuleSet::new(rules, max_entities),
        }
    }

    /// Takes over the spend of every rule of `old` with the same id, unit and
    /// `budget_applies_per`. Returns how many.
    pub fn adopt(&mut self, old: &Budgets) -> usize {
        self.rules.adopt(&old.rules)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rule_id(&self, rule: u32) -> &str {
        self.rules.rule_id(rule)
    }

    /// Decides whether a request may start, by the first matching rule, reserving nothing.
    pub fn check(&self, wall_ms: u64, facts: &RequestFacts<'_>) -> BudgetDecision {
        self.check_and_reserve(wall_ms, facts, 0.0).0
    }

    /// Decides whether a request may start, by the first matching rule: spend and what
    /// requests in flight reserved must be under the limit (and, across replicas, this
    /// replica's lease must have room). An admitted request reserves `estimate_usd` on every
    /// matching rule until [`Budgets::settle`] (or the reservation is dropped).
    pub fn check_and_reserve(
        &self,
        wall_ms: u64,
        facts: &RequestFacts<'_>,
        estimate_usd: f64,
    ) -> (BudgetDecision, Option<Reservation>) {
        let Some((rule, c)) = self.rules.first_match(facts) else {
            return (BudgetDecision::UNLIMITED, None);
        };
        let (b, state) = (&c.rule, &*c.state);
        let period = b.period.index(wall_ms);
        let entity = c.entity(facts);
        let share = state.share();
        let leasing = state.leasing(state.syncing());
        let limit = b.limit_usd;
        let audit = b.audit_mode;
        let decision = |spent: f64, over: bool| {
            if over {
                let counter = if audit {
                    &state.counters.audit_would_block
                } else {
                    &state.counters.blocked
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            BudgetDecision {
                allowed: !over || audit,
                rule: Some(rule),
                audit,
                over,
                spent_usd: spent,
                limit_usd: limit,
                reset_s: (b.period.end_ms(wall_ms) - wall_ms).div_ceil(1000),
            }
        };
        let (spent, mut over) = {
            let mut guard = state.lock();
            let inner = &mut *guard;
            // A check alone inserts nothing; a reservation or a lease needs the entry.
            let s = if estimate_usd > 0.0 || leasing.is_some() {
                inner
                    .entries
                    .entry(entity, || Spend::fresh(period, None), |s| s.idle(period))
            } else {
                match inner.entries.get_mut(entity) {
                    Some(s) => s,
                    None => return (decision(0.0, 0.0 >= limit), None),
                }
            };
            s.roll(period);
            let spent = if share <= 1 {
                s.spent(period)
            } else {
                s.conservative(period, state.outage.load(Ordering::Relaxed), share)
            };
            let mut over = spent + s.reserved >= limit;
            if let (false, Some(n)) = (over, leasing) {
                inner
                    .sync
                    .first_sight(&mut s.sync, entity, limit / f64::from(n));
                if s.sync.lease.left - s.reserved <= 0.0 {
                    over = true;
                    inner.sync.starve(&mut s.sync, entity);
                }
            }
            (spent, over)
        };
        over |= spent >= limit;
        let decision = decision(spent, over);
        let reservation = (decision.allowed && estimate_usd > 0.0 && estimate_usd.is_finite())
            .then(|| self.reserve(wall_ms, facts, estimate_usd));
        (decision, reservation)
    }

    fn reserve(&self, wall_ms: u64, facts: &RequestFacts<'_>, usd: f64) -> Reservation {
        let mut held = Vec::new();
        for c in self.rules.matching(facts) {
            let period = c.rule.period.index(wall_ms);
            let entity = c.entity(facts);
            let mut guard = c.state.lock();
            let s = guard
                .entries
                .entry(entity, || Spend::fresh(period, None), |s| s.idle(period));
            s.roll(period);
            s.reserved += usd;
            held.push(Held {
                state: Arc::clone(&c.state) as Arc<dyn Release>,
                entity,
                usd,
            });
        }
        Reservation::new(held)
    }

    /// Settles a request: charges its real cost to every matching rule, then gives back
    /// what its admission reserved.
    pub fn settle(
        &self,
        wall_ms: u64,
        facts: &RequestFacts<'_>,
        usd: f64,
        reservation: Option<&Reservation>,
    ) {
        self.charge(wall_ms, facts, usd);
        if let Some(r) = reservation {
            r.release();
        }
    }

    /// Charges a settled request's cost to every matching rule.
    pub fn charge(&self, wall_ms: u64, facts: &RequestFacts<'_>, usd: f64) {
        if usd <= 0.0 || !usd.is_finite() {
            return;
        }
        for c in self.rules.matching(facts) {
            let (b, state) = (&c.rule, &*c.state);
            let period = b.period.index(wall_ms);
            let entity = c.entity(facts);
            let syncing = state.syncing();
            let share = state.share();
            let leasing = state.leasing(syncing).is_some();
            let mut guard = state.lock();
            let inner = &mut *guard;
            let label = || Arc::from(entity_label(&b.applies_per, facts));
            let s = inner.entries.entry(
                entity,
                || Spend::fresh(period, Some(label())),
                |s| s.idle(period),
            );
            s.roll(period);
            if s.label.is_none() {
                s.label = Some(label());
            }
            if share > 1 {
                // First sight during an outage: what we spent so far was known to all.
                s.mark_outage(state.outage.load(Ordering::Relaxed));
            }
            let before = s.spent(period);
            s.own += usd;
            let after = s.spent(period);
            if before < b.limit_usd && after >= b.limit_usd && inner.extra.len() < CROSSINGS_CAP {
                // Once per crossing: the spend only grows within a period.
                inner.extra.push((s.label.clone(), after));
            }
            if syncing {
                inner.sync.used(&mut s.sync, entity, usd, leasing);
            }
        }
    }

    pub fn stats(&self) -> Vec<BudgetStats> {
        self.rules.stats(|c, entities, evicted_live| BudgetStats {
            id: Arc::clone(&c.state.id),
            entities,
            blocked: c.state.counters.blocked.load(Ordering::Relaxed),
            audit_would_block: c.state.counters.audit_would_block.load(Ordering::Relaxed),
            evicted_live,
        })
    }

    /// A client-facing message for a block, naming the rule.
    pub fn message(&self, d: &BudgetDecision) -> String {
        let Some(b) = d.rule.and_then(|r| self.rules.get(r)).map(|c| &c.rule) else {
            return String::new();
        };
        let per = match b.period {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
        };
        format!(
            "Budget exceeded: rule '{}' has spent ${} of ${} per {per}. It resets in {} s.",
            b.id,
            usd(d.spent_usd),
            usd(b.limit_usd),
            d.reset_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wall-clock ms of a UTC date and time.
    pub(crate) fn utc(y: i64, m: u32, d: u32, h: u64, min: u64) -> u64 {
        days_from_civil(y, m, d) as u64 * DAY_MS + (h * 60 + min) * 60_000
    }

    #[test]
    fn calendar_conversions_round_trip() {
        for days in [0i64, 59, 60, 365, 10_956, 11_016, 19_782, 20_000, 50_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn periods_end_at_utc_boundaries() {
        let m = BudgetPeriod::Month;
        assert_eq!(m.end_ms(utc(2024, 2, 10, 12, 0)), utc(2024, 3, 1, 0, 0));
        assert_eq!(m.end_ms(utc(2024, 12, 31, 23, 59)), utc(2025, 1, 1, 0, 0));
        // 2025-01-01 is a Wednesday: its ISO week began on Monday 2024-12-30.
        let w = BudgetPeriod::Week;
        assert_eq!(w.end_ms(utc(2025, 1, 1, 8, 0)), utc(2025, 1, 6, 0, 0));
        assert_eq!(
            w.index(utc(2024, 12, 30, 0, 0)),
            w.index(utc(2025, 1, 5, 23, 59))
        );
        assert_eq!(
            BudgetPeriod::Day.end_ms(utc(2025, 3, 9, 0, 0)),
            utc(2025, 3, 10, 0, 0)
        );
    }

    use crate::limits::config::parse_budgets;
    use crate::schema::Errors;
    use serde_json::{json, Value};

    fn budgets(rules: Value) -> Budgets {
        let doc = json!({"type": "gateway-budget-config", "rules": rules});
        let mut errs = Errors::new("b.yaml");
        let mut out = Vec::new();
        parse_budgets(&doc, &mut out, &mut errs);
        assert!(errs.is_empty(), "{:?}", errs.list);
        Budgets::new(out, 1000)
    }

    fn facts<'a>(subject: &'a str, metadata: &'a [(String, String)]) -> RequestFacts<'a> {
        RequestFacts {
            subject,
            model: "m",
            metadata,
            tool: None,
        }
    }

    fn one(unit: &str) -> Budgets {
        budgets(json!([{"id": "b", "when": {}, "limit_to": 10, "unit": unit}]))
    }

    /// Spends the whole budget at `spent_at`, then reports whether `at` is blocked.
    fn blocked_after(unit: &str, spent_at: u64, at: u64) -> bool {
        let b = one(unit);
        b.charge(spent_at, &facts("user:a", &[]), 10.0);
        assert!(!b.check(spent_at, &facts("user:a", &[])).allowed);
        !b.check(at, &facts("user:a", &[])).allowed
    }

    #[test]
    fn a_daily_budget_resets_at_utc_midnight() {
        let d = "cost_per_day";
        assert!(blocked_after(
            d,
            utc(2025, 3, 9, 0, 0),
            utc(2025, 3, 9, 23, 59)
        ));
        assert!(!blocked_after(
            d,
            utc(2025, 3, 9, 23, 59),
            utc(2025, 3, 10, 0, 0)
        ));
    }

    #[test]
    fn a_weekly_budget_resets_on_monday_across_a_year_boundary() {
        let w = "cost_per_week";
        // Monday 2024-12-30 .. Sunday 2025-01-05 is one ISO week (2025-W01).
        assert!(blocked_after(
            w,
            utc(2024, 12, 30, 0, 0),
            utc(2025, 1, 5, 23, 59)
        ));
        assert!(!blocked_after(
            w,
            utc(2025, 1, 5, 23, 59),
            utc(2025, 1, 6, 0, 0)
        ));
        assert!(!blocked_after(
            w,
            utc(2024, 12, 29, 23, 59),
            utc(2024, 12, 30, 0, 0)
        ));
        // 2020-W53 ran from Monday 2020-12-28 to Sunday 2021-01-03.
        assert!(blocked_after(
            w,
            utc(2020, 12, 28, 0, 0),
            utc(2021, 1, 3, 12, 0)
        ));
        assert!(!blocked_after(
            w,
            utc(2021, 1, 3, 12, 0),
            utc(2021, 1, 4, 0, 0)
        ));
    }

    #[test]
    fn a_monthly_budget_resets_on_the_first_including_leap_februaries() {
        let m = "cost_per_month";
        assert!(blocked_after(
            m,
            utc(2024, 2, 1, 0, 0),
            utc(2024, 2, 29, 23, 59)
        ));
        assert!(!blocked_after(
            m,
            utc(2024, 2, 29, 23, 59),
            utc(2024, 3, 1, 0, 0)
        ));
        assert!(!blocked_after(
            m,
            utc(2023, 2, 28, 23, 59),
            utc(2023, 3, 1, 0, 0)
        ));
        assert!(!blocked_after(
            m,
            utc(2024, 12, 31, 23, 59),
            utc(2025, 1, 1, 0, 0)
        ));
        assert!(blocked_after(
            m,
            utc(2025, 1, 1, 0, 0),
            utc(2025, 1, 31, 23, 59)
        ));
    }

    #[test]
    fn the_first_match_decides_and_every_match_is_charged() {
        let b = budgets(json!([
            {"id": "team-a", "when": {"subjects": ["user:a"]}, "limit_to": 1, "unit": "cost_per_day"},
            {"id": "all", "when": {}, "limit_to": 5, "unit": "cost_per_day"}]));
        let now = utc(2025, 5, 5, 12, 0);
        let (a, x) = (facts("user:a", &[]), facts("user:x", &[]));
        b.charge(now, &a, 0.6);
        let d = b.check(now, &a);
        assert_eq!(
            (d.allowed, d.rule, d.spent_usd, d.limit_usd),
            (true, Some(0), 0.6, 1.0)
        );
        assert_eq!(d.reset_s, 12 * 3600);
        b.charge(now, &a, 0.6);
        let d = b.check(now, &a);
        assert!(!d.allowed && d.over);
        assert_eq!(b.message(&d), "Budget exceeded: rule 'team-a' has spent $1.20 of $1.00 per day. It resets in 43200 s.");
        // user:a's spend also counted against 'all', which decides for user:x.
        assert_eq!(b.check(now, &x).spent_usd, 1.2);
        b.charge(now, &x, 3.8);
        assert!(!b.check(now, &x).allowed);
        assert_eq!(b.stats()[1].blocked, 1);
    }

    #[test]
    fn crossings_are_reported_once_and_spend_is_visible_by_entity() {
        let b = budgets(
            json!([{"id": "watch", "when": {}, "limit_to": 0.00001, "unit": "cost_per_day",
                                "budget_applies_per": ["metadata.project"], "audit_mode": true}]),
        );
        let now = utc(2025, 5, 5, 12, 0);
        let p = vec![("project".to_owned(), "p1".to_owned())];
        b.charge(now, &facts("user:a", &p), 0.000006);
        assert!(b.take_crossings().is_empty());
        b.charge(now, &facts("user:a", &p), 0.000006);
        b.charge(now, &facts("user:a", &p), 0.000006);
        let crossed = b.take_crossings();
        assert_eq!(crossed.len(), 1, "{crossed:?}");
        assert_eq!(&*crossed[0].entity, "metadata.project=p1");
        assert!(crossed[0].audit);
        assert!(b.take_crossings().is_empty());
        let view = b.spend_view(now, 10);
        assert_eq!(view.len(), 1);
        assert!((view[0].spent_usd - 0.000018).abs() < 1e-12);
        assert!(
            b.spend_view(utc(2025, 5, 6, 0, 1), 10).is_empty(),
            "a new day"
        );
        let d = b.check(now, &facts("user:a", &p));
        b.charge(now, &facts("user:a", &[]), 0.0);
        assert!(
            b.message(&d).contains("$0.000018 of $0.00001 per day"),
            "{}",
            b.message(&d)
        );
    }

    #[test]
    fn dollars_keep_the_digits_small_amounts_need() {
        for (x, s) in [
            (1.2, "1.20"),
            (0.0, "0.00"),
            (0.5, "0.50"),
            (0.015, "0.015"),
            (0.00001, "0.00001"),
            (0.000012, "0.000012"),
            (250.0, "250.00"),
        ] {
            assert_eq!(usd(x), s, "{x}");
        }
    }

    #[test]
    fn audit_mode_lets_requests_through_and_counts_would_be_blocks() {
        let b = budgets(
            json!([{"id": "watch", "when": {}, "limit_to": 1, "unit": "cost_per_month",
                                "budget_applies_per": ["metadata.project"], "audit_mode": true}]),
        );
        let now = utc(2025, 5, 5, 12, 0);
        let p = vec![("project".to_owned(), "p1".to_owned())];
        b.charge(now, &facts("user:a", &p), 2.0);
        let d = b.check(now, &facts("user:b", &p));
        assert_eq!((d.allowed, d.audit, d.over), (true, true, true));
        assert!(
            !b.check(now, &facts("user:a", &[])).over,
            "another project has its own budget"
        );
        let stats = &b.stats()[0];
        assert_eq!(
            (stats.blocked, stats.audit_would_block, stats.entities),
            (0, 1, 1)
        );
    }

    #[test]
    fn spend_syncs_as_deltas_and_global_totals_count_against_the_limit() {
        let b = one("cost_per_day");
        let now = utc(2025, 5, 5, 12, 0);
        let a = facts("user:a", &[]);
        assert!(b.rules.drain_deltas(now).is_empty());
        b.charge(now, &a, 4.0);
        let d = b.rules.drain_deltas(now);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (&*d[0].rule_id, d[0].window, d[0].amount),
            ("b", BudgetPeriod::Day.index(now), 4.0)
        );
        assert!(b.rules.drain_deltas(now).is_empty());
        // Globally 11 spent (4 here): blocked here too.
        assert!(b
            .rules
            .apply_remote(now, "b", d[0].entity, d[0].window, 11.0));
        let c = b.check(now, &a);
        assert_eq!((c.allowed, c.spent_usd), (false, 11.0));
        // Yesterday's total changes nothing; tomorrow starts from zero.
        assert!(b
            .rules
            .apply_remote(now, "b", d[0].entity, d[0].window - 1, 100.0));
        assert_eq!(b.check(now, &a).spent_usd, 11.0);
        assert!(b.check(now + DAY_MS, &a).allowed);
    }

    #[test]
    fn a_reload_adopts_spend_of_unchanged_rules() {
        let old = one("cost_per_day");
        let now = utc(2025, 5, 5, 12, 0);
        old.charge(now, &facts("user:a", &[]), 10.0);
        let mut new =
            budgets(json!([{"id": "b", "when": {}, "limit_to": 20, "unit": "cost_per_day"}]));
        assert_eq!(new.adopt(&old), 1);
        let d = new.check(now, &facts("user:a", &[]));
        assert_eq!((d.allowed, d.spent_usd, d.limit_usd), (true, 10.0, 20.0));
        let mut other = one("cost_per_week");
        assert_eq!(other.adopt(&old), 0, "a new period starts a new budget");
    }

    #[test]
    fn requests_in_flight_reserve_their_estimate_until_settled_or_dropped() {
        let b = one("cost_per_day");
        let now = utc(2025, 5, 5, 12, 0);
        let a = facts("user:a", &[]);
        let mut held: Vec<Reservation> = (0..6)
            .filter_map(|_| {
                let (d, r) = b.check_and_reserve(now, &a, 3.0);
                d.allowed.then(|| r.expect("reserved"))
            })
            .collect();
        assert_eq!(
            held.len(),
            4,
            "0, 3, 6 and 9 reserved are under 10; 12 is not"
        );
        // One request ends without running: dropping its admission gives the estimate back.
        drop(held.pop());
        let (d, r) = b.check_and_reserve(now, &a, 3.0);
        assert!(d.allowed);
        held.push(r.unwrap());
        // Settled at their real cost (2 each): 8 spent, nothing reserved, one more fits.
        for r in held.drain(..) {
            b.settle(now, &a, 2.0, Some(&r));
        }
        let d = b.check(now, &a);
        assert_eq!((d.allowed, d.spent_usd), (true, 8.0));
        let (_, r) = b.check_and_reserve(now, &a, 3.0);
        b.settle(now, &a, 2.5, r.as_ref());
        assert!(
            !b.check(now, &a).allowed,
            "10.5 spent: one request past the limit at most"
        );
    }
}
