//! Reconnect backoff with jitter and a circuit breaker, plus a tiny seeded randomness source.

use serde::{Deserialize, Serialize};

use crate::Error;

/// How a connector retries a host: exponential backoff with jitter, then a circuit breaker.
///
/// Failure `n` (1-based, counted since the last successful connect) waits
/// `d = min(base_ms * 2^(n-1), max_ms)` plus a jitter of `d * jitter_max * j` where `j ∈ [0, 1)`
/// is supplied by the caller, so every delay lies in `[d, d * (1 + jitter_max))`.
/// Failure number `breaker_threshold` opens the circuit (host `down`); while open, a half-open
/// probe is attempted every `probe_interval_ms`.
///
/// Defaults: 1 s → 30 s, jitter 0–50 %, breaker after 6 failures, probe every 60 s.
///
/// # Example
/// ```
/// use boo_fleet_core::ReconnectPolicy;
/// let p = ReconnectPolicy::default();
/// assert_eq!(p.delay_ms(1, 0.0), 1_000);
/// assert_eq!(p.delay_ms(3, 0.0), 4_000);
/// assert_eq!(p.delay_ms(20, 0.0), 30_000);
/// assert_eq!(p.delay_ms(1, 0.5), 1_250); // half of the 50 % jitter range
/// assert!(!p.breaker_open(5) && p.breaker_open(6));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReconnectPolicy {
    /// First retry delay (ms).
    pub base_ms: u64,
    /// Cap on the computed (pre-jitter) delay (ms).
    pub max_ms: u64,
    /// Largest jitter as a fraction of the computed delay (0.5 = up to +50 %).
    pub jitter_max: f64,
    /// Consecutive failures that open the circuit (host `down`).
    pub breaker_threshold: u32,
    /// Interval between half-open probes while the circuit is open (ms).
    pub probe_interval_ms: u64,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            base_ms: 1_000,
            max_ms: 30_000,
            jitter_max: 0.5,
            breaker_threshold: 6,
            probe_interval_ms: 60_000,
        }
    }
}

impl ReconnectPolicy {
    /// Checks that the numbers make sense.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the option: `base_ms` must be ≥ 1 and ≤ `max_ms`,
    /// `jitter_max` within `[0, 10]`, `breaker_threshold` ≥ 1, `probe_interval_ms` ≥ 1.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field, problem: &str| {
            Err(Error::InvalidConfig {
                field,
                problem: problem.to_owned(),
            })
        };
        if self.base_ms == 0 {
            return bad("base_ms", "must be at least 1");
        }
        if self.max_ms < self.base_ms {
            return bad("max_ms", "must be at least base_ms");
        }
        if !(0.0..=10.0).contains(&self.jitter_max) {
            return bad("jitter_max", "must be within [0, 10]");
        }
        if self.breaker_threshold == 0 {
            return bad("breaker_threshold", "must be at least 1");
        }
        if self.probe_interval_ms == 0 {
            return bad("probe_interval_ms", "must be at least 1");
        }
        Ok(())
    }

    /// The computed delay before jitter for failure number `failures` (1-based; 0 is treated as 1).
    pub fn base_delay_ms(&self, failures: u32) -> u64 {
        let exp = failures.saturating_sub(1).min(63);
        let factor = 1u64.checked_shl(exp).unwrap_or(u64::MAX);
        self.base_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// The delay to wait after failure number `failures`, with `jitter` ∈ `[0, 1)` (values outside
    /// are clamped; NaN counts as 0).
    pub fn delay_ms(&self, failures: u32, jitter: f64) -> u64 {
        let d = self.base_delay_ms(failures);
        let j = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        let extra = (d as f64 * self.jitter_max * j).floor();
        // The largest jitter must stay strictly below the bound `d * (1 + jitter_max)`.
        let cap = ((d as f64) * self.jitter_max).ceil() as u64;
        let extra = (extra as u64).min(cap.saturating_sub(1));
        d.saturating_add(extra)
    }

    /// Whether `failures` consecutive failures open the circuit.
    pub fn breaker_open(&self, failures: u32) -> bool {
        failures >= self.breaker_threshold
    }
}

/// A source of uniform randomness in `[0, 1)`, passed in so the core stays deterministic.
pub trait Randomness {
    /// The next value, uniform in `[0, 1)`.
    fn next_unit(&mut self) -> f64;
}

/// A small seeded generator (SplitMix64) implementing [`Randomness`].
///
/// Adapters may seed it from anything (process id, host id hash, time); tests seed it with
/// constants. Not for cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with the given seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Randomness for SplitMix64 {
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
