//! Model state per (provider, model): llama-swap process states, llama-server health, TTL.

use serde::{Deserialize, Serialize};

/// The load state of one model on one host.
///
/// llama-swap reports `stopped`, `starting`, `ready`, `stopping` and (legacy) `shutdown`/`unknown`;
/// llama-server's `/health` gives `starting` (503 loading), `ready` (200) or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelState {
    /// Not running.
    Stopped,
    /// Loading.
    Starting,
    /// Serving requests.
    Ready,
    /// Being stopped.
    Stopping,
    /// Torn down by a config reload or exit; llama-swap never restarts it.
    Shutdown,
    /// The host reported a failure for this model (e.g. llama-server health error).
    Error,
    /// The host gave a state we do not know (or none, e.g. peer entries).
    Unknown,
}

impl ModelState {
    /// Maps a llama-swap process state string (`/api/events` `modelStatus`, `/running`).
    /// Anything unrecognised, including the empty string of peer entries, is `Unknown`.
    ///
    /// # Example
    /// ```
    /// use boo_fleet_core::ModelState;
    /// assert_eq!(ModelState::from_llama_swap("ready"), ModelState::Ready);
    /// assert_eq!(ModelState::from_llama_swap(""), ModelState::Unknown);
    /// ```
    pub fn from_llama_swap(s: &str) -> ModelState {
        match s {
            "stopped" => ModelState::Stopped,
            "starting" => ModelState::Starting,
            "ready" => ModelState::Ready,
            "stopping" => ModelState::Stopping,
            "shutdown" => ModelState::Shutdown,
            _ => ModelState::Unknown,
        }
    }

    /// Maps a llama-server `GET /health` status code: 200 → `Ready`, 503 (loading) → `Starting`,
    /// anything else → `Error`. A transport failure is a liveness matter, not a model state.
    ///
    /// # Example
    /// ```
    /// use boo_fleet_core::ModelState;
    /// assert_eq!(ModelState::from_llama_server_health(503), ModelState::Starting);
    /// assert_eq!(ModelState::from_llama_server_health(200), ModelState::Ready);
    /// assert_eq!(ModelState::from_llama_server_health(500), ModelState::Error);
    /// ```
    pub fn from_llama_server_health(status: u16) -> ModelState {
        match status {
            200 => ModelState::Ready,
            503 => ModelState::Starting,
            _ => ModelState::Error,
        }
    }

    /// Whether the model occupies the host (starting, ready or stopping).
    pub fn is_loaded(&self) -> bool {
        matches!(
            self,
            ModelState::Starting | ModelState::Ready | ModelState::Stopping
        )
    }

    /// The lowercase name used on the wire and in model events.
    pub fn as_str(&self) -> &'static str {
        match self {
            ModelState::Stopped => "stopped",
            ModelState::Starting => "starting",
            ModelState::Ready => "ready",
            ModelState::Stopping => "stopping",
            ModelState::Shutdown => "shutdown",
            ModelState::Error => "error",
            ModelState::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the fleet knows about one model on one host (part of snapshots and deltas).
///
/// TTL follows llama-swap: `ttl_s` seconds after the **end of the last request**
/// (`last_used_at`), or after becoming ready when it has served nothing yet (`ready_since`).
/// `ttl_s == Some(0)` means never unloaded; `None` means unknown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStatus {
    /// Current state.
    pub state: ModelState,
    /// When the state last changed (ms since epoch).
    pub since: u64,
    /// When the model last became `ready` (ms), if it is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<u64>,
    /// When the last request on this model finished (ms), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<u64>,
    /// Effective TTL in seconds (`0` = never unload), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

impl ModelStatus {
    /// A model first seen in `state` at `now_ms`.
    pub fn new(state: ModelState, now_ms: u64) -> Self {
        ModelStatus {
            state,
            since: now_ms,
            ready_since: (state == ModelState::Ready).then_some(now_ms),
            last_used_at: None,
            ttl_s: None,
        }
    }

    /// When llama-swap will unload the model (ms), if it is ready with a known, non-zero TTL.
    pub fn ttl_expires_at(&self) -> Option<u64> {
        if self.state != ModelState::Ready {
            return None;
        }
        let ttl = self.ttl_s.filter(|t| *t > 0)?;
        let base = match (self.last_used_at, self.ready_since) {
            (Some(u), Some(r)) => u.max(r),
            (Some(u), None) => u,
            (None, Some(r)) => r,
            (None, None) => self.since,
        };
        Some(base.saturating_add(ttl.saturating_mul(1000)))
    }

    /// TTL remaining at `now_ms` in ms (0 once expired), or `None` when not applicable
    /// (not ready, TTL unknown, or `0` = never). In-flight requests pause llama-swap's TTL, so
    /// callers may show "in use" instead while the host reports requests in flight.
    ///
    /// # Example
    /// ```
    /// use boo_fleet_core::{ModelState, ModelStatus};
    /// let mut m = ModelStatus::new(ModelState::Ready, 10_000);
    /// m.ttl_s = Some(300);
    /// m.last_used_at = Some(20_000);
    /// assert_eq!(m.ttl_remaining_ms(80_000), Some(240_000));
    /// assert_eq!(m.ttl_remaining_ms(999_000), Some(0));
    /// ```
    pub fn ttl_remaining_ms(&self, now_ms: u64) -> Option<u64> {
        self.ttl_expires_at().map(|at| at.saturating_sub(now_ms))
    }

    /// Moves to `state` at `now_ms`; returns whether anything changed.
    pub fn transition(&mut self, state: ModelState, now_ms: u64) -> bool {
        if self.state == state {
            return false;
        }
        self.state = state;
        self.since = now_ms;
        self.ready_since = (state == ModelState::Ready).then_some(now_ms);
        true
    }
}

#[cfg(test)]
mod tests;
