//! Fault injection, scriptable per host while it runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::host::HostInner;

#[derive(Debug, Clone, Default)]
struct Config {
    error_rate: f64,
    error_status: Option<u16>,
    hang: Option<Option<Duration>>,
    cut_after: Option<u32>,
    stall: Option<(u32, Duration)>,
    slow_events: Option<Duration>,
    event_buffer: Option<usize>,
    failing_loads: HashSet<String>,
    activity_api_fails: bool,
}

impl Config {
    fn any_request_fault(&self) -> bool {
        self.error_rate > 0.0
            || self.hang.is_some()
            || self.cut_after.is_some()
            || self.stall.is_some()
    }
}

/// Faults that apply to one request, taken when it arrives.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RequestFaults {
    pub error_status: Option<u16>,
    /// `Some(None)` hangs until cleared.
    pub hang: Option<Option<Duration>>,
    pub cut_after: Option<u32>,
    pub stall: Option<(u32, Duration)>,
}

#[derive(Debug)]
pub(crate) struct FaultState {
    active: AtomicBool,
    cfg: Mutex<Config>,
    errors_seen: AtomicU64,
    /// Bumped whenever the hang fault is cleared.
    pub(crate) hang_release: watch::Sender<u64>,
}

impl FaultState {
    pub(crate) fn new() -> FaultState {
        FaultState {
            active: AtomicBool::new(false),
            cfg: Mutex::new(Config::default()),
            errors_seen: AtomicU64::new(0),
            hang_release: watch::Sender::new(0),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Config)) {
        if let Ok(mut c) = self.cfg.lock() {
            let had_hang = c.hang.is_some();
            f(&mut c);
            self.active.store(c.any_request_fault(), Ordering::Release);
            if had_hang && c.hang.is_none() {
                self.hang_release.send_modify(|g| *g += 1);
            }
        }
    }

    /// The faults for a request arriving now (cheap when none are set).
    pub(crate) fn for_request(&self) -> Option<RequestFaults> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let c = self.cfg.lock().ok()?;
        let mut rf = RequestFaults {
            error_status: None,
            hang: c.hang,
            cut_after: c.cut_after,
            stall: c.stall,
        };
        if c.error_rate > 0.0 {
            // Deterministic spreading: request n fails when floor((n+1)·rate) > floor(n·rate).
            let n = self.errors_seen.fetch_add(1, Ordering::Relaxed) as f64;
            if ((n + 1.0) * c.error_rate).floor() > (n * c.error_rate).floor() {
                rf.error_status = Some(c.error_status.unwrap_or(500));
            }
        }
        Some(rf)
    }

    pub(crate) fn load_fails(&self, model: &str) -> bool {
        self.cfg
            .lock()
            .map(|c| c.failing_loads.contains(model))
            .unwrap_or(false)
    }

    pub(crate) fn activity_api_fails(&self) -> bool {
        self.cfg
            .lock()
            .map(|c| c.activity_api_fails)
            .unwrap_or(false)
    }

    pub(crate) fn slow_events(&self) -> Option<Duration> {
        self.cfg.lock().ok().and_then(|c| c.slow_events)
    }

    pub(crate) fn event_buffer(&self) -> Option<usize> {
        self.cfg.lock().ok().and_then(|c| c.event_buffer)
    }
}

/// Fault controls for one host (cheap to clone; changes apply to requests that arrive afterwards,
/// except `host_down`/`restart`, which also cut open connections).
///
/// See the crate docs for an example.
#[derive(Clone)]
pub struct Faults {
    pub(crate) host: Arc<HostInner>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("host", &self.host.id)
            .finish()
    }
}

impl Faults {
    /// Host down: closes the listener (connections are refused) and drops open connections.
    /// Returns once the port refuses connections.
    pub async fn host_down(&self) {
        self.host.go_down().await;
    }

    /// Host up again on the same port (state is kept; use [`Faults::restart`] to reset it).
    pub async fn host_up(&self) {
        self.host.come_up().await;
    }

    /// A restart: down, in-memory state reset (activity ids and ring, captures, logs, inflight ids,
    /// every model stopped, event streams closed), then up again.
    pub async fn restart(&self) {
        self.host.go_down().await;
        self.host.reset_state();
        self.host.come_up().await;
    }

    /// Fraction (0.0–1.0) of inference requests answered with a 5xx from the upstream llama-server,
    /// spread deterministically (0.5 fails every second request).
    pub fn set_error_rate(&self, rate: f64) {
        let rate = if rate.is_finite() {
            rate.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.host.faults.update(|c| c.error_rate = rate);
    }

    /// Status code used by [`Faults::set_error_rate`] (default 500).
    pub fn set_error_status(&self, status: u16) {
        self.host.faults.update(|c| c.error_status = Some(status));
    }

    /// Inference requests hang before the first response byte until [`Faults::clear_hang`]
    /// (or the client gives up).
    pub fn hang(&self) {
        self.host.faults.update(|c| c.hang = Some(None));
    }

    /// Inference requests wait `d` (real time) before the first response byte.
    pub fn hang_for(&self, d: Duration) {
        self.host.faults.update(|c| c.hang = Some(Some(d)));
    }

    /// Ends the hang fault and releases hung requests.
    pub fn clear_hang(&self) {
        self.host.faults.update(|c| c.hang = None);
    }

    /// Streams are cut (connection closed, no `[DONE]`) after `n` SSE chunks; `None` turns it off.
    pub fn cut_stream_after(&self, n: Option<u32>) {
        self.host.faults.update(|c| c.cut_after = n);
    }

    /// Streams stall for `pause` (real time) after `n` chunks; `None` turns it off.
    pub fn stall_stream(&self, stall: Option<(u32, Duration)>) {
        self.host.faults.update(|c| c.stall = stall);
    }

    /// `/api/events` writes one message per `delay` (a slow consumer path): the per-connection
    /// buffer fills and further events are dropped, as in llama-swap.
    pub fn slow_events(&self, delay: Option<Duration>) {
        self.host.faults.update(|c| c.slow_events = delay);
    }

    /// Per-connection event buffer for new `/api/events` subscribers (default 1024 current, 25 legacy).
    pub fn set_event_buffer(&self, messages: Option<usize>) {
        self.host.faults.update(|c| c.event_buffer = messages);
    }

    /// Loading `model` fails: waiting requests get 500 `unspecific error: upstream command exited prematurely`.
    pub fn fail_load(&self, model: &str, fail: bool) {
        let model = model.to_owned();
        self.host.faults.update(|c| {
            if fail {
                c.failing_loads.insert(model);
            } else {
                c.failing_loads.remove(&model);
            }
        });
    }

    /// `GET /api/metrics/activity` answers 500 while set (the rows are kept and served again
    /// once cleared).
    pub fn fail_activity_api(&self, fail: bool) {
        self.host.faults.update(|c| c.activity_api_fails = fail);
    }

    /// Events dropped because a subscriber's buffer was full.
    pub fn dropped_events(&self) -> u64 {
        self.host.hub.dropped.load(Ordering::Relaxed)
    }

    /// Clears every request fault (not host down).
    pub fn clear(&self) {
        self.host.faults.update(|c| *c = Config::default());
    }
}
