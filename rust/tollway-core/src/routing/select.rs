//! Target selection: weighted, latency-banded and priority order, with passive health.
//!
//! Each target has one [`TargetState`] (latency samples, recent failures) shared by every
//! rule that names it and carried over a reload when the target keeps its name. Selection
//! returns the whole order to try, so fallbacks need no second call.

use crate::clock::{Clock, Rng};
use crate::routing::config::{RetryConfig, Strategy};
use crate::when::When;
use std::collections::VecDeque;
use std::sync::Mutex;

pub const LATENCY_WINDOW_MS: u64 = 20 * 60 * 1000;
pub const LATENCY_MAX_SAMPLES: usize = 100;
pub const LATENCY_MIN_SAMPLES: usize = 3;
pub const LATENCY_BAND: f64 = 1.2;
pub const HEALTH_WINDOW_MS: u64 = 2 * 60 * 1000;

/// How an attempt ended when it has no HTTP status of its own; `settle` takes the code in
/// place of a status. The binding exports this enum, so Python never writes the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Outcome {
    /// No connection to the provider (refused, DNS, TLS) before the request was sent.
    Connect = 0,
    /// The provider did not answer (or send the first token) in time.
    Timeout = 1,
    /// The connection or the stream broke after the request was sent.
    Broken = 2,
    /// The client went away (nginx's 499); says nothing about the target's health.
    Cancelled = 499,
}

impl Outcome {
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The `error.type` telemetry records for an attempt that ended this way.
    pub const fn error_type(self) -> &'static str {
        match self {
            Self::Connect => "connection_error",
            Self::Timeout => "timeout",
            Self::Broken => "stream_broken",
            Self::Cancelled => "client_disconnected",
        }
    }
}

pub const OUTCOME_CONNECT_ERROR: u16 = Outcome::Connect.code();
pub const OUTCOME_TIMEOUT: u16 = Outcome::Timeout.code();
pub const OUTCOME_BROKEN: u16 = Outcome::Broken.code();
pub const OUTCOME_CANCELLED: u16 = Outcome::Cancelled.code();

pub type PlanId = u32;

/// One way to call a target: a slot of a routing rule, or a direct request for a target.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub target: u32,
    pub rule: Option<u32>,
    pub weight: u32,
    pub priority: u32,
    pub retry: RetryConfig,
    pub fallback_status_codes: Vec<u16>,
    pub fallback_candidate: bool,
    /// JSON object text, merged into the request body for this target.
    pub override_params: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub strategy: Strategy,
    pub when: When,
    pub plans: Vec<PlanId>,
}

#[derive(Debug, Default)]
struct StateInner {
    /// (time ms, seconds per output token or per answer) for successful attempts.
    samples: VecDeque<(u64, f64)>,
    /// The most recent failure time; 0 means none.
    last_failure: u64,
    /// Unhealthy until this time: two failures within the window mark a target, and every
    /// failure while marked pushes recovery to a full window after it.
    unhealthy_until: u64,
}

/// Live per-target state: the only mutable part of an engine.
#[derive(Debug, Default)]
pub struct TargetState(Mutex<StateInner>);

pub fn is_failure(status: u16) -> bool {
    matches!(
        status,
        OUTCOME_CONNECT_ERROR | OUTCOME_TIMEOUT | OUTCOME_BROKEN | 401 | 403 | 429
    ) || (500..=599).contains(&status)
}

impl TargetState {
    fn lock(&self) -> std::sync::MutexGuard<'_, StateInner> {
        // A panic while holding this lock cannot leave it inconsistent: recover the data.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Unhealthy from the second failure within two minutes until two minutes pass without one.
    pub fn healthy(&self, now: u64) -> bool {
        now >= self.lock().unhealthy_until
    }

    /// Mean score over the window, or `None` with fewer than three samples in it.
    pub fn score(&self, now: u64) -> Option<f64> {
        let inner = self.lock();
        let recent = inner
            .samples
            .iter()
            .filter(|(t, _)| now.saturating_sub(*t) <= LATENCY_WINDOW_MS);
        let (n, sum) = recent.fold((0usize, 0.0), |(n, s), (_, v)| (n + 1, s + v));
        (n >= LATENCY_MIN_SAMPLES).then(|| sum / n as f64)
    }

    pub fn record(&self, now: u64, status: u16, latency_ms: f64, output_tokens: u32) {
        if status == OUTCOME_CANCELLED {
            return;
        }
        let mut inner = self.lock();
        if is_failure(status) {
            let recent =
                inner.last_failure != 0 && now - inner.last_failure.min(now) < HEALTH_WINDOW_MS;
            if recent || now < inner.unhealthy_until {
                inner.unhealthy_until = now + HEALTH_WINDOW_MS;
            }
            inner.last_failure = now;
        } else if (200..300).contains(&status) && latency_ms.is_finite() && latency_ms >= 0.0 {
            let score = latency_ms / f64::from(output_tokens.max(1));
            if inner.samples.len() == LATENCY_MAX_SAMPLES {
                inner.samples.pop_front();
            }
            inner.samples.push_back((now, score));
        }
    }
}

/// The order to try a rule's plans in.
pub fn order(
    rule: &Rule,
    plans: &[Plan],
    states: &[std::sync::Arc<TargetState>],
    clock: &Clock,
    rng: &Rng,
) -> Vec<PlanId> {
    let now = clock.now_ms();
    let healthy: Vec<bool> = rule
        .plans
        .iter()
        .map(|&p| states[plans[p as usize].target as usize].healthy(now))
        .collect();
    let mut slots: Vec<usize> = (0..rule.plans.len()).collect();
    let plan = |slot: usize| &plans[rule.plans[slot] as usize];
    let first = match rule.strategy {
        Strategy::Weight => pick_weighted(&slots, &healthy, |s| plan(s).weight, rng),
        Strategy::Priority => None,
        Strategy::Latency => {
            let scores: Vec<Option<f64>> = slots
                .iter()
                .map(|&s| states[plan(s).target as usize].score(now))
                .collect();
            let first = pick_latency(&scores, &healthy, rng);
            slots.sort_by(|&a, &b| {
                let key = |s: usize| scores[s].unwrap_or(0.0);
                key(a).total_cmp(&key(b))
            });
            first
        }
    };
    match rule.strategy {
        Strategy::Weight => slots.sort_by_key(|&s| std::cmp::Reverse(plan(s).weight)),
        Strategy::Priority => slots.sort_by_key(|&s| plan(s).priority),
        Strategy::Latency => {}
    }
    // Stable: unhealthy targets keep their relative order, behind every healthy one.
    slots.sort_by_key(|&s| !healthy[s]);
    if let Some(f) = first {
        if let Some(pos) = slots.iter().position(|&s| s == f) {
            slots.remove(pos);
            slots.insert(0, f);
        }
    }
    slots.into_iter().map(|s| rule.plans[s]).collect()
}

/// Draws a slot by weight among healthy ones (or among all, when none is healthy).
fn pick_weighted(
    slots: &[usize],
    healthy: &[bool],
    weight: impl Fn(usize) -> u32,
    rng: &Rng,
) -> Option<usize> {
    let pool = |only_healthy: bool| -> (u64, Vec<usize>) {
        let chosen: Vec<usize> = slots
            .iter()
            .copied()
            .filter(|&s| weight(s) > 0 && (!only_healthy || healthy[s]))
            .collect();
        (chosen.iter().map(|&s| u64::from(weight(s))).sum(), chosen)
    };
    let (total, pool) = match pool(true) {
        (0, _) => pool(false),
        found => found,
    };
    if total == 0 {
        return None;
    }
    let mut draw = rng.below(total);
    for s in pool {
        let w = u64::from(weight(s));
        if draw < w {
            return Some(s);
        }
        draw -= w;
    }
    None
}

/// Uniform among healthy targets within the band of the fastest, plus those still unscored.
fn pick_latency(scores: &[Option<f64>], healthy: &[bool], rng: &Rng) -> Option<usize> {
    let any_healthy = healthy.iter().any(|&h| h);
    let eligible = |s: usize| !any_healthy || healthy[s];
    let fastest = (0..scores.len())
        .filter(|&s| eligible(s))
        .filter_map(|s| scores[s])
        .fold(f64::INFINITY, f64::min);
    let band: Vec<usize> = (0..scores.len())
        .filter(|&s| eligible(s))
        .filter(|&s| scores[s].is_none_or(|v| v <= fastest * LATENCY_BAND))
        .collect();
    if band.is_empty() {
        return None;
    }
    Some(band[rng.below(band.len() as u64) as usize])
}
