//! The `/api/events` hub: real llama-swap framing, per-connection bounded buffers that drop on overflow.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

/// Frames one message: `event:message\ndata:{"type":T,"data":"<json string>"}\n\n`.
pub(crate) fn frame(ty: &str, inner_json: &str) -> Bytes {
    #[derive(Serialize)]
    struct Envelope<'a> {
        #[serde(rename = "type")]
        ty: &'a str,
        data: &'a str,
    }
    let env = serde_json::to_string(&Envelope {
        ty,
        data: inner_json,
    })
    .unwrap_or_default();
    let mut out = Vec::with_capacity(env.len() + 22);
    out.extend_from_slice(b"event:message\ndata:");
    out.extend_from_slice(env.as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

pub(crate) fn frame_value<T: Serialize>(ty: &str, data: &T) -> Bytes {
    frame(ty, &serde_json::to_string(data).unwrap_or_default())
}

struct Sub {
    tx: mpsc::Sender<Bytes>,
    overflowed: bool,
    /// Recovered from an overflow; gets a resync message (inflight snapshot) next.
    resync: bool,
}

pub(crate) struct Hub {
    subs: Mutex<Vec<Sub>>,
    n: AtomicUsize,
    pub(crate) dropped: AtomicU64,
    /// Set when a subscriber overflowed; the host then sends an inflight snapshot (v240+).
    pub(crate) overflow_pending: AtomicBool,
}

impl Hub {
    pub(crate) fn new() -> Hub {
        Hub {
            subs: Mutex::new(Vec::new()),
            n: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            overflow_pending: AtomicBool::new(false),
        }
    }

    /// Cheap check before building an event.
    pub(crate) fn has_subscribers(&self) -> bool {
        self.n.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn subscribe(&self, capacity: usize) -> mpsc::Receiver<Bytes> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        if let Ok(mut s) = self.subs.lock() {
            s.push(Sub {
                tx,
                overflowed: false,
                resync: false,
            });
            self.n.store(s.len(), Ordering::Relaxed);
        }
        rx
    }

    pub(crate) fn publish(&self, msg: Bytes) {
        if !self.has_subscribers() {
            return;
        }
        if let Ok(mut subs) = self.subs.lock() {
            subs.retain_mut(|s| match s.tx.try_send(msg.clone()) {
                Ok(()) => {
                    if s.overflowed {
                        s.overflowed = false;
                        s.resync = true;
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    if !s.overflowed {
                        s.overflowed = true;
                        self.overflow_pending.store(true, Ordering::Relaxed);
                    }
                    true
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            });
            self.n.store(subs.len(), Ordering::Relaxed);
        }
    }

    /// True when some subscriber recovered from an overflow and waits for a resync message.
    pub(crate) fn wants_resync(&self) -> bool {
        self.subs
            .lock()
            .map(|s| s.iter().any(|s| s.resync))
            .unwrap_or(false)
    }

    /// Sends `msg` to the subscribers that recovered from an overflow.
    pub(crate) fn resync(&self, msg: Bytes) {
        if let Ok(mut subs) = self.subs.lock() {
            for s in subs.iter_mut().filter(|s| s.resync) {
                if s.tx.try_send(msg.clone()).is_ok() {
                    s.resync = false;
                }
            }
            if !subs.iter().any(|s| s.resync || s.overflowed) {
                self.overflow_pending.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Drops every subscriber (their streams end), as on a restart.
    pub(crate) fn close_all(&self) {
        if let Ok(mut s) = self.subs.lock() {
            s.clear();
            self.n.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_double_encodes_data() {
        let f = frame("activity", r#"{"id":42}"#);
        assert_eq!(
            &f[..],
            b"event:message\ndata:{\"type\":\"activity\",\"data\":\"{\\\"id\\\":42}\"}\n\n"
                .as_slice()
        );
    }

    #[test]
    fn full_buffers_drop_and_count() {
        let hub = Hub::new();
        let mut rx = hub.subscribe(2);
        for i in 0..5 {
            hub.publish(frame("activity", &format!("{{\"id\":{i}}}")));
        }
        assert_eq!(hub.dropped.load(Ordering::Relaxed), 3);
        assert!(hub.overflow_pending.load(Ordering::Relaxed));
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
    }
}
