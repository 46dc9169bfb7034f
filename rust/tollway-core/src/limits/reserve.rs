//! What a request may cost, reserved on the budgets at admission and given back at settle.
//!
//! The estimate is the prompt's tokens at the input price plus `max_tokens` (or, unset, the
//! largest answer the target gave lately) at the output price, of the priciest target the
//! request may reach. A reservation gives itself back when the request settles or, should
//! settle never come (a request dropped between admission and its call), when the last
//! copy of its admission is dropped: no path leaks budget.

use super::cost::Price;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Output tokens reserved for a request without `max_tokens`, before its target answered.
pub const DEFAULT_OUTPUT_TOKENS: u32 = 1024;

/// What the client said of a request's size, for the reservation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestSize {
    /// The local tokenizer's count of the prompt (0 when not counted).
    pub prompt_tokens: u64,
    /// `max_completion_tokens` or `max_tokens`, when the client set one.
    pub max_tokens: Option<u64>,
}

/// Per target, the largest answer seen lately: a maximum that decays by 1/16 per answer, so
/// it follows a target whose answers got shorter within a few dozen requests.
#[derive(Debug, Default)]
pub struct OutputEstimates(Vec<AtomicU32>);

impl OutputEstimates {
    pub fn new(targets: usize) -> Self {
        Self((0..targets).map(|_| AtomicU32::new(0)).collect())
    }

    pub fn get(&self, target: u32) -> u64 {
        match self
            .0
            .get(target as usize)
            .map(|a| a.load(Ordering::Relaxed))
        {
            Some(0) | None => u64::from(DEFAULT_OUTPUT_TOKENS),
            Some(n) => u64::from(n),
        }
    }

    pub fn record(&self, target: u32, output_tokens: u64) {
        if let Some(a) = self.0.get(target as usize) {
            let seen = u32::try_from(output_tokens).unwrap_or(u32::MAX).max(1);
            let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(seen.max(old - old / 16))
            });
        }
    }

    /// Carries over one target's estimate (a reload keeps what was learnt).
    pub fn adopt(&self, target: u32, previous: &OutputEstimates, previous_target: u32) {
        if let (Some(a), Some(b)) = (
            self.0.get(target as usize),
            previous.0.get(previous_target as usize),
        ) {
            a.store(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// The most a request may cost: over the targets it may reach, the priciest.
pub fn estimate<'a>(
    size: RequestSize,
    targets: impl Iterator<Item = (u32, Option<&'a Price>)>,
    outputs: &OutputEstimates,
) -> f64 {
    targets
        .filter_map(|(t, price)| {
            let out = size.max_tokens.unwrap_or_else(|| outputs.get(t));
            price.map(|p| {
                p.cost(&super::cost::TokenUsage {
                    input: size.prompt_tokens,
                    cached_input: 0,
                    cache_write: 0,
                    output: out,
                })
            })
        })
        .fold(0.0, f64::max)
}

/// Where a reservation is held: a budget rule's live state.
pub(super) trait Release: std::fmt::Debug + Send + Sync {
    fn release(&self, entity: u64, usd: f64);
}

#[derive(Debug)]
pub(super) struct Held {
    pub state: Arc<dyn Release>,
    pub entity: u64,
    pub usd: f64,
}

#[derive(Debug)]
struct Parts(Mutex<Vec<Held>>);

impl Parts {
    fn release(&self) {
        let held = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for h in held {
            h.state.release(h.entity, h.usd);
        }
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        self.release();
    }
}

/// A request's reserved cost on every budget it matched; copies share it, and it is given
/// back once (by settle, or when the last copy goes).
#[derive(Debug, Clone)]
pub struct Reservation {
    parts: Arc<Parts>,
    usd: f64,
}

impl Reservation {
    pub(super) fn new(held: Vec<Held>) -> Self {
        let usd = held.first().map_or(0.0, |h| h.usd);
        Self {
            parts: Arc::new(Parts(Mutex::new(held))),
            usd,
        }
    }

    /// The estimate reserved, in USD.
    pub fn usd(&self) -> f64 {
        self.usd
    }

    /// Gives the reservation back now (later calls and drops do nothing).
    pub fn release(&self) {
        self.parts.release();
    }
}

impl PartialEq for Reservation {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.parts, &other.parts)
    }
}

impl Eq for Reservation {}
