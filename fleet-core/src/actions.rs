//! The per-host action queue: warm / unload / unload-all, one at a time, FIFO.
//!
//! Rules (issue 5, seed P2.1, V14, JD18):
//! * submissions are refused while the host is `down` ([`Error::HostOffline`], 503);
//! * while a lease (a bench) holds the host, unconfirmed submissions are refused
//!   ([`Error::RequiresConfirmation`], 409; resubmit with `confirmed = true`);
//! * at most `cap` actions wait (default 4); beyond that [`Error::QueueFull`] (429) lists them;
//! * an identical action already waiting is not queued twice (its position is returned);
//! * on dequeue the fresh host state is re-checked and stale actions are skipped
//!   ([`SkipReason`]); nothing is ever handed out for a host that is not `connected`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{Error, HostSnapshot, LivenessState, ModelState};

/// An operator action on one host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Load a model (a 1-token chat completion with the bare wire id).
    Warm {
        /// Wire model id.
        model: String,
    },
    /// Unload one model.
    Unload {
        /// Wire model id.
        model: String,
    },
    /// Unload every model on the host.
    UnloadAll,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Warm { model } => write!(f, "warm({model})"),
            Action::Unload { model } => write!(f, "unload({model})"),
            Action::UnloadAll => f.write_str("unload_all"),
        }
    }
}

/// An action waiting in (or taken from) the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedAction {
    /// Unique per queue, increasing.
    pub id: u64,
    /// The action.
    pub action: Action,
    /// When it was submitted (ms since epoch).
    pub enqueued_at: u64,
    /// Whether the submitter confirmed taking over a leased host.
    pub confirmed: bool,
}

/// Where a submission landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Submitted {
    /// The queued action's id.
    pub id: u64,
    /// 1-based position among waiting actions (1 = next to run).
    pub position: usize,
    /// `true` when an identical waiting action absorbed this submission.
    pub coalesced: bool,
}

/// Why a dequeued action was dropped instead of run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The host went `down` after the action was queued.
    HostDown,
    /// The action waited longer than `max_age_ms`.
    Expired,
    /// A lease appeared after submission and the action was not confirmed.
    Leased,
    /// `warm` for a model that is already starting or ready.
    AlreadyLoaded,
    /// `unload` for a model that is not loaded.
    NotLoaded,
}

/// Queue limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueConfig {
    /// Most actions waiting at once (the running one is not counted).
    pub cap: usize,
    /// Actions older than this when dequeued are skipped as stale (ms).
    pub max_age_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            cap: 4,
            max_age_ms: 120_000,
        }
    }
}

/// What [`ActionQueue::next`] produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dequeued {
    /// The action to run now (the host was `connected`), if any.
    pub run: Option<QueuedAction>,
    /// Actions dropped as stale, with the reason, oldest first.
    pub skipped: Vec<(QueuedAction, SkipReason)>,
}

/// A FIFO of actions for one host, with at most one running at a time.
///
/// # Example
/// ```
/// use boo_fleet_core::{Action, ActionQueue, FleetState, Liveness, LivenessInput, ReconnectPolicy};
/// let mut fleet = FleetState::new();
/// fleet.add_host("gpu");
/// let mut l = Liveness::new();
/// l.step(LivenessInput::Connected, 0, &ReconnectPolicy::default(), 0.0);
/// fleet.set_liveness("gpu", &l).unwrap();
///
/// let mut q = ActionQueue::new("gpu");
/// let host = fleet.host("gpu").unwrap();
/// let s = q.submit(Action::Warm { model: "qwen".into() }, host, false, 1_000).unwrap();
/// assert_eq!(s.position, 1);
/// let run = q.next(host, 1_500).run.unwrap();
/// assert_eq!(run.action, Action::Warm { model: "qwen".into() });
/// q.finish(run.id);
/// ```
#[derive(Debug, Clone)]
pub struct ActionQueue {
    provider: String,
    config: QueueConfig,
    waiting: VecDeque<QueuedAction>,
    running: Option<QueuedAction>,
    next_id: u64,
}

impl ActionQueue {
    /// An empty queue for `provider` with the default limits.
    pub fn new(provider: &str) -> Self {
        Self::with_config(provider, QueueConfig::default())
    }

    /// An empty queue with explicit limits (a `cap` of 0 is raised to 1).
    pub fn with_config(provider: &str, config: QueueConfig) -> Self {
        ActionQueue {
            provider: provider.to_owned(),
            config: QueueConfig {
                cap: config.cap.max(1),
                ..config
            },
            waiting: VecDeque::new(),
            running: None,
            next_id: 0,
        }
    }

    /// Actions waiting (not counting the running one).
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The running action, if any.
    pub fn running(&self) -> Option<&QueuedAction> {
        self.running.as_ref()
    }

    /// Waiting actions, oldest first.
    pub fn waiting(&self) -> impl Iterator<Item = &QueuedAction> {
        self.waiting.iter()
    }

    /// The running action then the waiting ones (what a 429 reply lists).
    pub fn listing(&self) -> Vec<Action> {
        self.running
            .iter()
            .chain(self.waiting.iter())
            .map(|q| q.action.clone())
            .collect()
    }

    /// Submits `action` against the host's current state `host`.
    ///
    /// # Errors
    /// In this order: [`Error::HostOffline`] when the host is `down`; [`Error::RequiresConfirmation`]
    /// when an active lease holds it and `confirmed` is false; [`Error::QueueFull`] when `cap`
    /// actions already wait.
    pub fn submit(
        &mut self,
        action: Action,
        host: &HostSnapshot,
        confirmed: bool,
        now_ms: u64,
    ) -> Result<Submitted, Error> {
        if host.liveness == LivenessState::Down {
            return Err(Error::HostOffline {
                provider: self.provider.clone(),
            });
        }
        if let Some(lease) = host.lease.as_ref().filter(|l| l.is_active(now_ms))
            && !confirmed
        {
            return Err(Error::RequiresConfirmation {
                provider: self.provider.clone(),
                holder: lease.holder.clone(),
                purpose: lease.purpose.clone(),
            });
        }
        if let Some(i) = self.waiting.iter().position(|q| q.action == action) {
            let q = &mut self.waiting[i];
            q.confirmed |= confirmed;
            return Ok(Submitted {
                id: q.id,
                position: i + 1,
                coalesced: true,
            });
        }
        if self.waiting.len() >= self.config.cap {
            return Err(Error::QueueFull {
                provider: self.provider.clone(),
                queued: self.listing(),
            });
        }
        self.next_id += 1;
        self.waiting.push_back(QueuedAction {
            id: self.next_id,
            action,
            enqueued_at: now_ms,
            confirmed,
        });
        Ok(Submitted {
            id: self.next_id,
            position: self.waiting.len(),
            coalesced: false,
        })
    }

    /// Takes the next action to run, re-checking the fresh host state.
    ///
    /// When the host is `down`, every waiting action is skipped. Nothing runs while another
    /// action is running or the host is `reconnecting` (the queue waits). Otherwise stale actions
    /// at the head are skipped until one is runnable.
    pub fn next(&mut self, host: &HostSnapshot, now_ms: u64) -> Dequeued {
        let mut out = Dequeued::default();
        if host.liveness == LivenessState::Down {
            out.skipped = self
                .waiting
                .drain(..)
                .map(|q| (q, SkipReason::HostDown))
                .collect();
            return out;
        }
        if self.running.is_some() || host.liveness == LivenessState::Reconnecting {
            return out;
        }
        while let Some(q) = self.waiting.pop_front() {
            match self.stale(&q, host, now_ms) {
                Some(reason) => out.skipped.push((q, reason)),
                None => {
                    self.running = Some(q.clone());
                    out.run = Some(q);
                    break;
                }
            }
        }
        out
    }

    fn stale(&self, q: &QueuedAction, host: &HostSnapshot, now_ms: u64) -> Option<SkipReason> {
        if now_ms.saturating_sub(q.enqueued_at) > self.config.max_age_ms {
            return Some(SkipReason::Expired);
        }
        if host.lease.as_ref().is_some_and(|l| l.is_active(now_ms)) && !q.confirmed {
            return Some(SkipReason::Leased);
        }
        let loaded = |m: &str| host.models.get(m).is_some_and(|s| s.state.is_loaded());
        let up = |m: &str| {
            host.models
                .get(m)
                .is_some_and(|s| matches!(s.state, ModelState::Starting | ModelState::Ready))
        };
        match &q.action {
            Action::Warm { model } if up(model) => Some(SkipReason::AlreadyLoaded),
            Action::Unload { model } if !loaded(model) => Some(SkipReason::NotLoaded),
            Action::UnloadAll if !host.models.values().any(|s| s.state.is_loaded()) => {
                Some(SkipReason::NotLoaded)
            }
            _ => None,
        }
    }

    /// Marks the running action `id` as finished; returns `false` if it was not the running one.
    pub fn finish(&mut self, id: u64) -> bool {
        if self.running.as_ref().is_some_and(|q| q.id == id) {
            self.running = None;
            true
        } else {
            false
        }
    }
}
