//! Pure routing core for boocontrol's virtual `auto:*` models.
//!
//! A client asks for `auto:code`; the gateway maps its live fleet state and telemetry into a
//! plain-data [`FleetView`] (one [`CandidateFacts`] per composite model id), extracts
//! [`RequestFeatures`] from the request, and asks this crate for a [`Decision`]: the ordered
//! attempts plus, for every other candidate, why it was skipped. The gateway then drives a
//! [`Failover`] state machine through the attempts.
//!
//! This crate does no IO, reads no clock and uses no randomness: time comes in as `now_ms`
//! (milliseconds since the Unix epoch). The same policy, request and facts always give the
//! same decision.
//!
//! Main types: [`RoutePolicy`] / [`PolicySet`] (the JSON format is documented in [`policy`]),
//! [`decide()`], [`Decision`] (Display explains it, serde JSON for telemetry,
//! [`Decision::header_value`] for `x-boo-route`), [`Failover`], [`advisory_scores`], and
//! [`RequestFeatures::from_body`] with a calibrated [`TokenEstimator`] for the prompt size.
//!
//! ```
//! use boo_routing::{
//!     decide, CandidateFacts, Failover, FleetView, LoadState, Liveness, Outcome, RequestFeatures,
//!     RoutePolicy, Step, Verdict,
//! };
//!
//! let policy = RoutePolicy::from_json(&serde_json::json!({
//!     "name": "auto:code",
//!     "candidates": ["tag:code"],
//!     "order": ["prefer_loaded", "fastest"]
//! }))?;
//!
//! let fact = |id: &str, state, n_ctx| {
//!     let mut c = CandidateFacts::new(id.parse().unwrap());
//!     c.liveness = Liveness::Connected;
//!     c.state = state;
//!     c.n_ctx = Some(n_ctx);
//!     c.tags = vec!["code".into()];
//!     c
//! };
//! let fleet = FleetView::new(vec![
//!     fact("desk/qwen-coder", LoadState::Stopped, 32_768),
//!     fact("laptop/qwen-coder", LoadState::Ready, 32_768),
//!     fact("laptop/tiny-coder", LoadState::Ready, 4_096),
//! ]);
//! let req = RequestFeatures { est_prompt_tokens: 10_000, max_tokens: Some(512), ..Default::default() };
//!
//! let d = decide(&policy, &req, &fleet);
//! // The loaded model wins, the cold one is the fallback, the 4k model cannot hold the prompt.
//! assert_eq!(d.chosen().map(|m| m.to_string()).as_deref(), Some("laptop/qwen-coder"));
//! assert_eq!(d.attempts[1].model.to_string(), "desk/qwen-coder");
//! assert_eq!(d.skipped[0].0.to_string(), "laptop/tiny-coder");
//! println!("{d}");
//!
//! // The gateway drives the failover: the first host refuses, the second serves.
//! let mut f = Failover::new(&d, 1_000);
//! let Step::Try(first) = f.next_attempt(1_000)? else { unreachable!() };
//! assert_eq!(f.on_outcome(Outcome::Refused, 1_010)?, Verdict::Retry);
//! let Step::Try(second) = f.next_attempt(1_010)? else { unreachable!() };
//! assert_ne!(first.model, second.model);
//! assert_eq!(f.on_outcome(Outcome::FirstByte, 1_200)?, Verdict::Committed);
//! # Ok::<(), boo_routing::RoutingError>(())
//! ```
//!
//! Invariants (property-tested): a candidate on a `down` host is never attempted; no
//! candidate appears twice among the attempts; a candidate whose known context window cannot
//! hold the request is never attempted; every candidate named by the policy is either
//! attempted or skipped with a reason.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod decide;
pub mod error;
pub mod facts;
pub mod failover;
pub mod policy;
pub mod request;
pub mod score;

pub use boo_model_ref::{LoadState, ModelRef, ProviderId};
pub use decide::{Attempt, Capability, CompactDecision, Decision, Demotions, SkipReason, decide};
pub use error::{Problem, RoutingError};
pub use facts::{
    CandidateFacts, Capabilities, FleetFacts, FleetView, Lane, Liveness, RequestFeatures,
};
pub use failover::{
    AttemptLog, AttemptPlan, Failover, FailoverReport, Failure, Final, Outcome, Step, Verdict,
};
pub use policy::{CandidateSpec, Filters, Limits, Match, PolicySet, RoutePolicy, Rule, Strategy};
pub use request::{PromptShape, TokenEstimator};
pub use score::{ScoreRow, advisory_score, advisory_scores};
