//! Host liveness: `connected | reconnecting | down`, driven by connector observations.
//!
//! The machine is a pure step function: the connector reports what happened
//! ([`LivenessInput`]) with `now_ms` and a jitter fraction, and gets back what to do next
//! ([`NextStep`]). It never sleeps or reads a clock.
//!
//! ```text
//!             connect ok / event                error (failures < threshold)
//!  reconnecting ───────────────▶ connected ─────────────────────────────▶ reconnecting (retry at T)
//!       │  ▲                        ▲                                          │
//!       │  └── error, failures < threshold                                     │ error, failures == threshold
//!       │                           │ probe ok / connect ok / event            ▼
//!       └──── error, failures == threshold ──────────────────────────────▶  down (probe every 60 s)
//! ```

use serde::{Deserialize, Serialize};

use crate::ReconnectPolicy;

/// The three liveness states a user sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LivenessState {
    /// The connector holds a working connection (or the last poll succeeded).
    Connected,
    /// The connection failed; retrying with backoff. Also the state before the first connect.
    Reconnecting,
    /// The circuit is open after too many consecutive failures; only half-open probes are sent.
    Down,
}

impl std::fmt::Display for LivenessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LivenessState::Connected => "connected",
            LivenessState::Reconnecting => "reconnecting",
            LivenessState::Down => "down",
        })
    }
}

/// What the connector observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LivenessInput {
    /// A connection (or a poll, or a half-open probe) succeeded.
    Connected,
    /// Data arrived from the host (an SSE message, a poll answer).
    Event,
    /// A connect, read or poll failed (timeout, refused, bad status, stream ended).
    Error,
    /// A half-open probe succeeded (same effect as `Connected`).
    ProbeSucceeded,
    /// A half-open probe failed (same effect as `Error`: the host stays `down`).
    ProbeFailed,
}

/// What the connector should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Keep the current connection; nothing is scheduled.
    Continue,
    /// Try to (re)connect at this time (ms since epoch).
    RetryAt(u64),
    /// The circuit is open: send a half-open probe at this time.
    ProbeAt(u64),
}

impl NextStep {
    /// The scheduled time, if any.
    pub fn at(&self) -> Option<u64> {
        match self {
            NextStep::Continue => None,
            NextStep::RetryAt(t) | NextStep::ProbeAt(t) => Some(*t),
        }
    }
}

/// The result of one [`Liveness::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// The state before the input.
    pub from: LivenessState,
    /// The state after the input.
    pub to: LivenessState,
    /// What to do next.
    pub next: NextStep,
}

impl Step {
    /// Whether the visible state changed.
    pub fn changed(&self) -> bool {
        self.from != self.to
    }
}

/// Liveness of one host, with `last_seen_at` and the consecutive failure count.
///
/// # Example
/// ```
/// use boo_fleet_core::{Liveness, LivenessInput, LivenessState, NextStep, ReconnectPolicy};
/// let policy = ReconnectPolicy::default();
/// let mut l = Liveness::new();
/// l.step(LivenessInput::Connected, 1_000, &policy, 0.0);
/// assert_eq!(l.state(), LivenessState::Connected);
/// let s = l.step(LivenessInput::Error, 2_000, &policy, 0.0);
/// assert_eq!((s.to, s.next), (LivenessState::Reconnecting, NextStep::RetryAt(3_000)));
/// for t in 1..6 { l.step(LivenessInput::Error, 2_000 + t, &policy, 0.0); }
/// assert_eq!(l.state(), LivenessState::Down);
/// assert_eq!(l.last_seen_at(), Some(1_000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    state: LivenessState,
    last_seen_at: Option<u64>,
    failures: u32,
    next: Option<u64>,
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

impl Liveness {
    /// A host that has not connected yet: `reconnecting`, no failures, connect now.
    pub fn new() -> Self {
        Liveness {
            state: LivenessState::Reconnecting,
            last_seen_at: None,
            failures: 0,
            next: None,
        }
    }

    /// A host restored from storage (e.g. after a gateway restart): `reconnecting`, with the
    /// persisted `last_seen_at`.
    pub fn restored(last_seen_at: Option<u64>) -> Self {
        Liveness {
            last_seen_at,
            ..Self::new()
        }
    }

    /// The current state.
    pub fn state(&self) -> LivenessState {
        self.state
    }

    /// When the host last answered (ms since epoch).
    pub fn last_seen_at(&self) -> Option<u64> {
        self.last_seen_at
    }

    /// Consecutive failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next retry or probe is due, if one is scheduled.
    pub fn next_attempt_at(&self) -> Option<u64> {
        self.next
    }

    /// Feeds one observation; returns the transition and the next step.
    ///
    /// * `Connected` / `Event` / `ProbeSucceeded`: state `connected`, failures reset, `last_seen_at = now_ms`.
    /// * `Error` / `ProbeFailed`: failures + 1; below `policy.breaker_threshold` → `reconnecting` with a retry at
    ///   `now_ms + policy.delay_ms(failures, jitter)`; at or above it → `down` with a probe at
    ///   `now_ms + policy.probe_interval_ms` (a failed probe keeps the host `down`).
    pub fn step(
        &mut self,
        input: LivenessInput,
        now_ms: u64,
        policy: &ReconnectPolicy,
        jitter: f64,
    ) -> Step {
        let from = self.state;
        let next = match input {
            LivenessInput::Connected | LivenessInput::Event | LivenessInput::ProbeSucceeded => {
                self.state = LivenessState::Connected;
                self.failures = 0;
                self.last_seen_at = Some(self.last_seen_at.map_or(now_ms, |t| t.max(now_ms)));
                self.next = None;
                NextStep::Continue
            }
            LivenessInput::Error | LivenessInput::ProbeFailed => {
                self.failures = self.failures.saturating_add(1);
                if policy.breaker_open(self.failures) {
                    self.state = LivenessState::Down;
                    let at = now_ms.saturating_add(policy.probe_interval_ms);
                    self.next = Some(at);
                    NextStep::ProbeAt(at)
                } else {
                    self.state = LivenessState::Reconnecting;
                    let at = now_ms.saturating_add(policy.delay_ms(self.failures, jitter));
                    self.next = Some(at);
                    NextStep::RetryAt(at)
                }
            }
        };
        Step {
            from,
            to: self.state,
            next,
        }
    }
}
