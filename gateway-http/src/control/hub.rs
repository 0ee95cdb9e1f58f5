//! The live fleet hub: one [`FleetState`] behind a lock held only for the pure mutation, deltas
//! fanned out on a broadcast channel, and a 2,000-line log tail per host.

use boo_fleet_core::logs::{LogLine, LogTail};
use boo_fleet_core::wire::LogSource;
use boo_fleet_core::{Delta, FleetSnapshot, FleetState, HostSnapshot};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::broadcast;

/// Capacity of the delta broadcast; a subscriber lagging further gets a fresh snapshot.
const DELTA_CAPACITY: usize = 4_096;
/// Capacity of the log broadcast.
const LOG_CAPACITY: usize = 4_096;
/// Capacity of the side broadcast of non-state events (`bench_progress`, ...).
const EVENT_CAPACITY: usize = 1_024;

/// A non-state event of the fleet stream (e.g. `bench_progress`): not part of the
/// [`FleetState`], so late subscribers do not get past ones; a lagging subscriber loses some.
#[derive(Debug, Clone)]
pub struct StreamEvent {
    /// SSE event name.
    pub event: Arc<str>,
    /// JSON data, encoded once for every subscriber.
    pub data: Arc<str>,
}

/// One log line of one host, as broadcast to `/api/logs/{provider}/stream` subscribers.
#[derive(Debug, Clone)]
pub struct HostLogLine {
    /// The host.
    pub provider: Arc<str>,
    /// The line.
    pub line: LogLine,
}

/// Shared fleet state plus its change feeds. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct FleetHub {
    state: Mutex<FleetState>,
    deltas: broadcast::Sender<Delta>,
    logs: Mutex<HashMap<String, LogTail>>,
    log_tx: broadcast::Sender<HostLogLine>,
    events: broadcast::Sender<StreamEvent>,
}

impl Default for FleetHub {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FleetHub {
    /// An empty hub.
    pub fn new() -> Self {
        FleetHub {
            state: Mutex::new(FleetState::new()),
            deltas: broadcast::channel(DELTA_CAPACITY).0,
            logs: Mutex::new(HashMap::new()),
            log_tx: broadcast::channel(LOG_CAPACITY).0,
            events: broadcast::channel(EVENT_CAPACITY).0,
        }
    }

    /// Runs a pure mutation of the fleet state and broadcasts the deltas it returns, in order.
    /// The lock is held for the mutation and the (non-blocking) sends only.
    pub fn apply<R>(&self, f: impl FnOnce(&mut FleetState) -> (R, Vec<Delta>)) -> (R, Vec<Delta>) {
        let mut st = lock(&self.state);
        let (r, deltas) = f(&mut st);
        for d in &deltas {
            // No subscribers is fine.
            let _ = self.deltas.send(d.clone());
        }
        (r, deltas)
    }

    /// Convenience for mutations returning `Result<Option<Delta>, _>`: applies and broadcasts,
    /// returning the delta (errors such as an unknown host yield `None`).
    pub fn apply_one(
        &self,
        f: impl FnOnce(&mut FleetState) -> Result<Option<Delta>, boo_fleet_core::Error>,
    ) -> Option<Delta> {
        self.apply(|s| {
            let d = f(s).ok().flatten();
            ((), d.into_iter().collect())
        })
        .1
        .pop()
    }

    /// Convenience for mutations returning `Result<Vec<Delta>, _>`.
    pub fn apply_many(
        &self,
        f: impl FnOnce(&mut FleetState) -> Result<Vec<Delta>, boo_fleet_core::Error>,
    ) -> Vec<Delta> {
        self.apply(|s| ((), f(s).unwrap_or_default())).1
    }

    /// The current state of every host.
    pub fn snapshot(&self) -> FleetSnapshot {
        lock(&self.state).snapshot()
    }

    /// One host's current state.
    pub fn host(&self, provider: &str) -> Option<HostSnapshot> {
        lock(&self.state).host(provider).cloned()
    }

    /// Subscribes to deltas and takes a snapshot atomically: every delta not covered by the
    /// snapshot arrives on the receiver.
    pub fn subscribe(&self) -> (FleetSnapshot, broadcast::Receiver<Delta>) {
        let st = lock(&self.state);
        let rx = self.deltas.subscribe();
        (st.snapshot(), rx)
    }

    /// Number of delta subscribers (for tests and metrics).
    pub fn subscribers(&self) -> usize {
        self.deltas.receiver_count()
    }

    /// Publishes a non-state event (`event: <event>` with `data` as JSON) to every fleet-stream
    /// subscriber. Returns how many subscribers it reached.
    pub fn publish_event(&self, event: &str, data: &impl serde::Serialize) -> usize {
        let data = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
        self.events
            .send(StreamEvent {
                event: event.into(),
                data: data.into(),
            })
            .unwrap_or(0)
    }

    /// Subscribes to non-state events (see [`FleetHub::publish_event`]).
    pub fn subscribe_events(&self) -> broadcast::Receiver<StreamEvent> {
        self.events.subscribe()
    }

    /// Feeds a raw log chunk of `provider` into its tail; complete lines are broadcast.
    pub fn push_log(&self, provider: &str, source: LogSource, chunk: &str) {
        let mut logs = lock(&self.logs);
        let tail = logs.entry(provider.to_owned()).or_default();
        let lines = tail.push(source, chunk);
        if lines.is_empty() {
            return;
        }
        let p: Arc<str> = provider.into();
        for line in lines {
            let _ = self.log_tx.send(HostLogLine {
                provider: p.clone(),
                line,
            });
        }
    }

    /// The last `n` complete log lines of `provider`.
    pub fn log_tail(&self, provider: &str, n: usize) -> Vec<LogLine> {
        lock(&self.logs)
            .get(provider)
            .map(|t| t.tail(n))
            .unwrap_or_default()
    }

    /// The log tail and a subscription to later lines, taken atomically.
    pub fn subscribe_logs(
        &self,
        provider: &str,
        n: usize,
    ) -> (Vec<LogLine>, broadcast::Receiver<HostLogLine>) {
        let logs = lock(&self.logs);
        let rx = self.log_tx.subscribe();
        let tail = logs.get(provider).map(|t| t.tail(n)).unwrap_or_default();
        (tail, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn side_events_reach_every_subscriber_and_not_the_state() {
        let hub = FleetHub::new();
        assert_eq!(
            hub.publish_event("bench_progress", &1),
            0,
            "no subscriber yet"
        );
        let mut a = hub.subscribe_events();
        let mut b = hub.subscribe_events();
        let data = serde_json::json!({"run_id": "r1", "done": 3, "total": 8});
        assert_eq!(hub.publish_event("bench_progress", &data), 2);
        for rx in [&mut a, &mut b] {
            let e = rx.recv().await.unwrap();
            assert_eq!(&*e.event, "bench_progress");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&e.data).unwrap(),
                data
            );
        }
        // non-state: the fleet snapshot is unchanged and no delta was sent
        let (snap, mut deltas) = hub.subscribe();
        hub.publish_event("bench_progress", &data);
        assert!(snap.hosts.is_empty());
        assert!(deltas.try_recv().is_err());
    }
}
