//! The failover plan: a pure state machine the gateway drives through one request.
//!
//! Loop contract (the gateway owns IO and the clock):
//!
//! 1. `let mut f = Failover::new(&decision, now_ms);`
//! 2. `f.next_attempt(now_ms)?` gives [`Step::Try`] (send the request to that model and wait
//!    for its first byte until `first_byte_deadline_ms`) or [`Step::GiveUp`].
//! 3. Report what happened with `f.on_outcome(outcome, now_ms)?`:
//!    * [`Verdict::Retry`]: go to 2 (nothing has reached the client yet);
//!    * [`Verdict::Committed`]: the first byte is on its way to the client, stream it; later
//!      report [`Outcome::Success`] or [`Outcome::StreamCut`];
//!    * [`Verdict::Done`]: finished, see [`Final`].
//! 4. If the upstream reports that the model is loading (llama-swap swap), call
//!    [`Failover::on_model_loading`] and later [`Failover::on_model_loaded`]: when the policy
//!    allows cold starts, load time does not count against the first-byte budget (the budget
//!    restarts when the model is ready). The total deadline always counts. An attempt the
//!    decision already marked cold starts with its measured load time (or
//!    [`DEFAULT_LOAD_MS`]) added to its first-byte budget, for gateways that get no loading
//!    events.
//!
//! Retried: connection refused, reset before the first byte, HTTP 5xx, 429, first-byte
//! timeout. Never retried: anything after the first byte reached the client, other 4xx
//! statuses (the same request would fail everywhere). Each attempt of the decision is tried
//! at most once, and no new attempt starts once the total deadline has passed.
//! Driving the machine out of order returns [`RoutingError::IllegalTransition`].

use crate::ModelRef;
use crate::decide::{DEFAULT_LOAD_MS, Decision};
use crate::error::RoutingError;
use crate::policy::Limits;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What happened to the current attempt, as observed by the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Connection refused (or no route to host) before anything was sent back.
    Refused,
    /// Connection reset or closed before the first byte.
    Reset,
    /// The upstream answered with this status before any body byte was forwarded.
    /// 5xx and 429 are retried; other statuses ≥ 400 end the request; < 400 counts as
    /// [`Outcome::FirstByte`].
    Status(u16),
    /// No first byte within the first-byte budget.
    FirstByteTimeout,
    /// The first byte reached (is being sent to) the client: no retry from now on.
    FirstByte,
    /// The response completed.
    Success,
    /// The stream broke after its first byte: never retried.
    StreamCut,
}

/// The next thing the gateway should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the request to this attempt.
    Try(AttemptPlan),
    /// Stop: the request fails for this reason.
    GiveUp(Failure),
}

/// One attempt to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptPlan {
    /// 0-based position in the decision's attempts.
    pub index: usize,
    /// Target model.
    pub model: ModelRef,
    /// Give up on the first byte at this time (ms since epoch); extended while the model loads.
    pub first_byte_deadline_ms: u64,
    /// The request's total deadline (ms since epoch).
    pub deadline_ms: u64,
}

/// The machine's answer to an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Call [`Failover::next_attempt`]: the failure is retryable and nothing reached the client.
    Retry,
    /// The response is streaming to the client; report its end later.
    Committed,
    /// Finished.
    Done(Final),
}

/// How the request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Final {
    /// Served by this model.
    Served {
        /// The model that served it.
        model: ModelRef,
        /// Its 0-based attempt index.
        index: usize,
    },
    /// Failed.
    Failed {
        /// Why.
        failure: Failure,
    },
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "failure", rename_all = "snake_case")]
pub enum Failure {
    /// The decision had no eligible candidate.
    NoCandidate,
    /// Every attempt failed with a retryable fault.
    Exhausted {
        /// Last outcome seen.
        last: Outcome,
    },
    /// The total deadline passed before a first byte.
    DeadlineExceeded,
    /// The upstream rejected the request with a non-retryable status (passed to the client).
    Rejected {
        /// The status.
        status: u16,
    },
    /// The stream broke after its first byte (the client sees a terminated stream).
    StreamCut,
}

/// One attempt as it happened, for the telemetry record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptLog {
    /// Target model.
    pub model: ModelRef,
    /// When it started (ms since epoch).
    pub started_ms: u64,
    /// When its last outcome was reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// Its final outcome (`first_byte` while still streaming).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Time spent waiting for a model load, excluded from the first-byte budget, ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub load_wait_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Serializable summary: policy, every attempt and the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverReport {
    /// Policy name.
    pub policy: String,
    /// Attempts in order.
    pub attempts: Vec<AttemptLog>,
    /// The result, once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Final>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    Waiting {
        first_byte_deadline_ms: u64,
        loading_since: Option<u64>,
    },
    Streaming,
    Finished(Final),
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Idle => "no attempt is running",
            Phase::Waiting { .. } => "waiting for the first byte",
            Phase::Streaming => "streaming after the first byte",
            Phase::Finished(_) => "finished",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    model: Arc<ModelRef>,
    cold: bool,
    expected_load_ms: Option<u64>,
}

/// The failover state machine for one request (see the module docs for the loop contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    policy: String,
    plan: Vec<Planned>,
    limits: Limits,
    deadline_ms: u64,
    next: usize,
    phase: Phase,
    log: Vec<AttemptLog>,
}

impl Failover {
    /// Starts a request at `now_ms` following `decision`'s attempts and limits.
    pub fn new(decision: &Decision, now_ms: u64) -> Self {
        Self {
            policy: decision.policy.clone(),
            plan: decision
                .attempts
                .iter()
                .map(|a| Planned {
                    model: a.model.clone(),
                    cold: a.cold,
                    expected_load_ms: a.expected_load_ms,
                })
                .collect(),
            limits: decision.limits,
            deadline_ms: now_ms.saturating_add(decision.limits.total_deadline_ms),
            next: 0,
            phase: Phase::Idle,
            log: Vec::new(),
        }
    }

    /// The total deadline (ms since epoch).
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// When the current attempt's first-byte budget runs out; `None` when no attempt is
    /// waiting for its first byte. While a reported model load is in progress (cold starts
    /// allowed) only the total deadline applies, so this returns it.
    pub fn first_byte_deadline_ms(&self) -> Option<u64> {
        match &self.phase {
            Phase::Waiting {
                loading_since: Some(_),
                ..
            } => Some(self.deadline_ms),
            Phase::Waiting {
                first_byte_deadline_ms,
                ..
            } => Some(*first_byte_deadline_ms),
            _ => None,
        }
    }

    /// The final result, once finished.
    pub fn result(&self) -> Option<&Final> {
        match &self.phase {
            Phase::Finished(f) => Some(f),
            _ => None,
        }
    }

    /// The policy's name.
    pub fn policy(&self) -> &str {
        &self.policy
    }

    /// Attempts so far.
    pub fn history(&self) -> &[AttemptLog] {
        &self.log
    }

    /// Serializable summary for the telemetry record.
    pub fn report(&self) -> FailoverReport {
        FailoverReport {
            policy: self.policy.clone(),
            attempts: self.log.clone(),
            result: self.result().cloned(),
        }
    }

    fn finish(&mut self, f: Final) -> Final {
        self.phase = Phase::Finished(f.clone());
        f
    }

    fn fail(&mut self, failure: Failure) -> Final {
        self.finish(Final::Failed { failure })
    }

    fn illegal(&self, event: &'static str) -> RoutingError {
        RoutingError::IllegalTransition {
            event,
            state: self.phase.name(),
        }
    }

    /// Starts the next attempt, or gives up (no candidate left, or the deadline passed).
    ///
    /// # Errors
    /// [`RoutingError::IllegalTransition`] while an attempt is running or after the end.
    pub fn next_attempt(&mut self, now_ms: u64) -> Result<Step, RoutingError> {
        if self.phase != Phase::Idle {
            return Err(self.illegal("next_attempt"));
        }
        if self.plan.is_empty() {
            return Ok(Step::GiveUp(self.give_up(Failure::NoCandidate)));
        }
        if now_ms >= self.deadline_ms {
            return Ok(Step::GiveUp(self.give_up(Failure::DeadlineExceeded)));
        }
        let Some(p) = self.plan.get(self.next).cloned() else {
            let last = self
                .log
                .last()
                .and_then(|l| l.outcome)
                .unwrap_or(Outcome::Refused);
            return Ok(Step::GiveUp(self.give_up(Failure::Exhausted { last })));
        };
        let index = self.next;
        self.next += 1;
        let load_allowance = if p.cold && self.limits.allow_cold_start {
            p.expected_load_ms.unwrap_or(DEFAULT_LOAD_MS)
        } else {
            0
        };
        let fb = now_ms
            .saturating_add(self.limits.first_byte_ms)
            .saturating_add(load_allowance)
            .min(self.deadline_ms);
        self.phase = Phase::Waiting {
            first_byte_deadline_ms: fb,
            loading_since: None,
        };
        self.log.push(AttemptLog {
            model: ModelRef::clone(&p.model),
            started_ms: now_ms,
            ended_ms: None,
            outcome: None,
            load_wait_ms: 0,
        });
        Ok(Step::Try(AttemptPlan {
            index,
            model: Arc::unwrap_or_clone(p.model),
            first_byte_deadline_ms: fb,
            deadline_ms: self.deadline_ms,
        }))
    }

    fn give_up(&mut self, failure: Failure) -> Failure {
        self.fail(failure);
        failure
    }

    /// The upstream reports that the current attempt's model is being loaded.
    ///
    /// When the policy allows cold starts the first-byte budget is suspended until
    /// [`Failover::on_model_loaded`]; otherwise this only records the fact. Repeated calls
    /// while loading are ignored.
    ///
    /// # Errors
    /// [`RoutingError::IllegalTransition`] unless an attempt is waiting for its first byte.
    pub fn on_model_loading(&mut self, now_ms: u64) -> Result<(), RoutingError> {
        let allow = self.limits.allow_cold_start;
        match &mut self.phase {
            Phase::Waiting { loading_since, .. } => {
                if allow && loading_since.is_none() {
                    *loading_since = Some(now_ms);
                }
                Ok(())
            }
            _ => Err(self.illegal("on_model_loading")),
        }
    }

    /// The model finished loading: the first-byte budget restarts at `now_ms` (capped by the
    /// total deadline). Without a preceding [`Failover::on_model_loading`] it does nothing.
    ///
    /// # Errors
    /// [`RoutingError::IllegalTransition`] unless an attempt is waiting for its first byte.
    pub fn on_model_loaded(&mut self, now_ms: u64) -> Result<(), RoutingError> {
        let fb_budget = self.limits.first_byte_ms;
        let deadline = self.deadline_ms;
        match &mut self.phase {
            Phase::Waiting {
                first_byte_deadline_ms,
                loading_since,
            } => {
                if let Some(since) = loading_since.take() {
                    *first_byte_deadline_ms = now_ms.saturating_add(fb_budget).min(deadline);
                    if let Some(l) = self.log.last_mut() {
                        l.load_wait_ms =
                            l.load_wait_ms.saturating_add(now_ms.saturating_sub(since));
                    }
                }
                Ok(())
            }
            _ => Err(self.illegal("on_model_loaded")),
        }
    }

    /// Reports the current attempt's outcome.
    ///
    /// # Errors
    /// [`RoutingError::IllegalTransition`] when the outcome cannot happen in the current
    /// phase (e.g. a first-byte timeout while streaming, anything after the end).
    pub fn on_outcome(&mut self, outcome: Outcome, now_ms: u64) -> Result<Verdict, RoutingError> {
        let outcome = match outcome {
            Outcome::Status(s) if s < 400 => Outcome::FirstByte,
            o => o,
        };
        // A response (or failure) while a reported load is still in progress ends the load
        // wait: record it, as `on_model_loaded` would have.
        if let Phase::Waiting {
            loading_since: Some(since),
            ..
        } = self.phase
            && let Some(l) = self.log.last_mut()
        {
            l.load_wait_ms = l.load_wait_ms.saturating_add(now_ms.saturating_sub(since));
        }
        match (&self.phase, outcome) {
            (Phase::Waiting { .. }, Outcome::FirstByte) => {
                self.close_log(outcome, now_ms);
                self.phase = Phase::Streaming;
                Ok(Verdict::Committed)
            }
            (Phase::Waiting { .. } | Phase::Streaming, Outcome::Success) => {
                self.close_log(outcome, now_ms);
                let index = self.log.len().saturating_sub(1);
                let model = self.log.last().map(|l| l.model.clone());
                match model {
                    Some(model) => Ok(Verdict::Done(self.finish(Final::Served { model, index }))),
                    None => Err(self.illegal("success")),
                }
            }
            (Phase::Waiting { .. }, Outcome::Status(s)) if s != 429 && s < 500 => {
                self.close_log(outcome, now_ms);
                Ok(Verdict::Done(self.fail(Failure::Rejected { status: s })))
            }
            (
                Phase::Waiting { .. },
                Outcome::Refused | Outcome::Reset | Outcome::Status(_) | Outcome::FirstByteTimeout,
            ) => {
                self.close_log(outcome, now_ms);
                self.phase = Phase::Idle;
                if now_ms >= self.deadline_ms {
                    return Ok(Verdict::Done(self.fail(Failure::DeadlineExceeded)));
                }
                if self.next >= self.plan.len() {
                    return Ok(Verdict::Done(
                        self.fail(Failure::Exhausted { last: outcome }),
                    ));
                }
                Ok(Verdict::Retry)
            }
            (Phase::Streaming, Outcome::StreamCut | Outcome::Reset) => {
                self.close_log(Outcome::StreamCut, now_ms);
                Ok(Verdict::Done(self.fail(Failure::StreamCut)))
            }
            (_, o) => Err(self.illegal(outcome_name(o))),
        }
    }

    fn close_log(&mut self, outcome: Outcome, now_ms: u64) {
        if let Some(l) = self.log.last_mut() {
            l.ended_ms = Some(now_ms);
            l.outcome = Some(outcome);
        }
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Refused => "refused",
        Outcome::Reset => "reset",
        Outcome::Status(_) => "status",
        Outcome::FirstByteTimeout => "first_byte_timeout",
        Outcome::FirstByte => "first_byte",
        Outcome::Success => "success",
        Outcome::StreamCut => "stream_cut",
    }
}

#[cfg(test)]
mod tests;
