//! Pure fleet state machines for boocontrol's control plane.
//!
//! This crate decides; it does not do. Connectors (in `gateway-http`) open connections, read
//! clocks and draw random numbers; they feed what they observe into these types with `now_ms`
//! (milliseconds since the Unix epoch) and a jitter fraction, and act on what comes back.
//! There is no tokio, hyper, sqlx, file or network IO, thread, clock or global RNG here.
//!
//! Main types:
//! * [`ReconnectPolicy`]: exponential backoff (1 s → 30 s), jitter of 0–50 %, a circuit breaker
//!   after 6 consecutive failures and half-open probes every 60 s (all configurable).
//! * [`Liveness`]: `connected | reconnecting | down` with `last_seen_at`, stepped by
//!   [`LivenessInput`]s, returning the [`NextStep`] (retry at T, probe at T).
//! * [`ModelState`] / [`ModelStatus`]: per (host, model) state from llama-swap states and
//!   llama-server health, with TTL remaining.
//! * [`FleetState`]: the server's fleet with per-host monotonic `seq`; snapshots
//!   ([`FleetSnapshot`]) and seq-stamped [`Delta`]s. [`FleetView`]: the client reducer.
//! * [`reconcile`]: activity dedup by (provider, upstream id, ts) and `gap_suspected` detection.
//! * [`wire`]: parsers for llama-swap's `/api/events`, activity rows (every generation),
//!   `/running`, `/api/version`, `/api/performance`, and an SSE decoder.
//! * [`ActionQueue`]: per-host FIFO of warm / unload / unload-all with the 429 / 503 / 409 rules.
//! * [`HostAccess`] and [`InMemoryHostAccess`]: host leases for benches.
//! * [`Lane`] / [`Lanes`]: local hosts serial, cloud parallel within a budget.
//! * [`logs::LogTail`]: the last 2,000 log lines per host, rebuilt from `logData` chunks.
//!
//! Not here: connectors, persistence, HTTP handlers, rendering.
//!
//! # Example
//! A connector's view of a host that answers, drops, and comes back:
//! ```
//! use boo_fleet_core::wire::{parse_event, SwapEvent};
//! use boo_fleet_core::{FleetState, FleetView, Liveness, LivenessInput, LivenessState,
//!                      ModelState, NextStep, ReconnectPolicy, SplitMix64, Randomness};
//!
//! let policy = ReconnectPolicy::default();
//! let mut rng = SplitMix64::new(7);
//! let mut fleet = FleetState::new();
//! let mut deltas = Vec::new();
//! deltas.extend(fleet.add_host("gpu-box"));
//!
//! // Connected, then a modelStatus event arrives (its `data` is JSON inside a string).
//! let mut live = Liveness::new();
//! live.step(LivenessInput::Connected, 1_000, &policy, rng.next_unit());
//! deltas.extend(fleet.set_liveness("gpu-box", &live).unwrap());
//! let ev = parse_event(r#"{"type":"modelStatus","data":"[{\"id\":\"qwen\",\"state\":\"ready\"}]"}"#).unwrap();
//! deltas.extend(fleet.set_models("gpu-box", &ev.local_model_states().unwrap(), 1_100).unwrap());
//!
//! // The stream drops: retry within [1 s, 1.5 s).
//! let step = live.step(LivenessInput::Error, 2_000, &policy, rng.next_unit());
//! let NextStep::RetryAt(t) = step.next else { unreachable!() };
//! assert!((3_000..3_500).contains(&t));
//! deltas.extend(fleet.set_liveness("gpu-box", &live).unwrap());
//!
//! // A client that joins late converges on the server's state.
//! let mut view = FleetView::new();
//! view.apply_snapshot(fleet.snapshot());
//! for d in deltas { view.apply_delta(d); } // all stale: already in the snapshot
//! let host = view.host("gpu-box").unwrap();
//! assert_eq!(host.liveness, LivenessState::Reconnecting);
//! assert_eq!(host.models["qwen"].state, ModelState::Ready);
//! ```
//!
//! # Invariants
//! * Per host, `seq` only grows; every [`Delta`] carries the host's new `seq`.
//! * Server and client apply deltas through the same reducer.
//! * An [`ActionQueue`] never holds more than its cap and never hands out an action while the
//!   host is not `connected`.

#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod actions;
pub mod backoff;
mod error;
pub mod fleet;
pub mod lane;
pub mod lease;
pub mod liveness;
pub mod logs;
pub mod model;
pub mod reconcile;
pub mod time;
pub mod wire;

pub use actions::{
    Action, ActionQueue, Dequeued, QueueConfig, QueuedAction, SkipReason, Submitted,
};
pub use backoff::{Randomness, ReconnectPolicy, SplitMix64};
pub use error::Error;
pub use fleet::{
    Applied, Change, Delta, FleetSnapshot, FleetState, FleetView, HostSnapshot, PerfSample,
};
pub use lane::{Lane, Lanes};
pub use lease::{Denied, HostAccess, InMemoryHostAccess, Lease};
pub use liveness::{Liveness, LivenessInput, LivenessState, NextStep, Step};
pub use model::{ModelState, ModelStatus};
