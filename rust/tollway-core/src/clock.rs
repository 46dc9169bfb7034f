//! Time for the engine: the system clock in production, a manual clock in tests, so latency
//! windows and health recovery are tested without sleeping. The only room that reads the
//! system's time (`clippy.toml` disallows it everywhere else).
#![allow(clippy::disallowed_methods)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

const MANUAL_START: u64 = 1_000_000_000;
const MANUAL_WALL_ORIGIN: u64 = 1_767_225_600_000;

#[derive(Debug)]
pub enum Clock {
    System,
    /// Milliseconds since an arbitrary origin, moved only by [`Clock::advance`].
    Manual(AtomicU64),
}

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Clock {
    pub fn manual() -> Self {
        // Start well after zero so "a window ago" never underflows in tests.
        Self::Manual(AtomicU64::new(MANUAL_START))
    }

    /// Monotonic milliseconds.
    pub fn now_ms(&self) -> u64 {
        match self {
            Self::System => u64::try_from(origin().elapsed().as_millis()).unwrap_or(u64::MAX),
            Self::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }

    /// Monotonic milliseconds with sub-millisecond precision (stream timings: TTFT, ITL).
    pub fn now_ms_f64(&self) -> f64 {
        match self {
            Self::System => origin().elapsed().as_secs_f64() * 1000.0,
            Self::Manual(ms) => ms.load(Ordering::Relaxed) as f64,
        }
    }

    /// Wall-clock milliseconds since the Unix epoch (budget periods are UTC calendar
    /// periods). The manual clock starts at 2026-01-01T00:00:00Z and moves with `advance`.
    pub fn wall_ms(&self) -> u64 {
        match self {
            Self::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            Self::Manual(ms) => MANUAL_WALL_ORIGIN + ms.load(Ordering::Relaxed) - MANUAL_START,
        }
    }

    /// Wall-clock nanoseconds since the Unix epoch, as Python's `time.time_ns` (guardrail
    /// runs' span times); the manual clock's are its `wall_ms`.
    pub fn wall_ns(&self) -> u64 {
        match self {
            Self::System => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            Self::Manual(_) => self.wall_ms() * 1_000_000,
        }
    }

    pub fn advance(&self, ms: u64) {
        if let Self::Manual(now) = self {
            now.fetch_add(ms, Ordering::Relaxed);
        }
    }
}

fn time_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// A small, fast, non-cryptographic generator (wyrand) for weighted and banded choices.
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
    pub const fn new(seed: u64) -> Self {
        Self(AtomicU64::new(seed))
    }

    pub fn from_time() -> Self {
        Self::new(time_seed())
    }

    /// A new seed from the time and the process id (a forked child must not repeat its
    /// parent's sequence).
    pub fn reseed(&self) {
        self.0.store(time_seed(), Ordering::Relaxed);
    }

    pub fn next_u64(&self) -> u64 {
        let s = self
            .0
            .fetch_add(0xA076_1D64_78BD_642F, Ordering::Relaxed)
            .wrapping_add(0xA076_1D64_78BD_642F);
        let t = u128::from(s) * u128::from(s ^ 0xE703_7ED1_A0B4_28DB);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}
