//! Observability for tests: request counts per path and the requests a host received.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

/// One request as the host received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Headers in arrival order, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Bytes,
    /// The top-level `model` field of a JSON body.
    pub model: Option<String>,
    /// When it arrived.
    pub at: SystemTime,
}

impl ReceivedRequest {
    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

const HOT_PATHS: [&str; 6] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/health",
    "/v1/models",
    "/api/events",
];

#[derive(Debug)]
pub(crate) struct StatsInner {
    total: AtomicU64,
    hot: [AtomicU64; HOT_PATHS.len()],
    other: Mutex<HashMap<String, u64>>,
    received: Mutex<VecDeque<ReceivedRequest>>,
    pub(crate) limit: usize,
}

impl StatsInner {
    pub(crate) fn new(limit: usize) -> StatsInner {
        StatsInner {
            total: AtomicU64::new(0),
            hot: Default::default(),
            other: Mutex::new(HashMap::new()),
            received: Mutex::new(VecDeque::new()),
            limit,
        }
    }

    pub(crate) fn count(&self, path: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = HOT_PATHS.iter().position(|p| *p == path) {
            self.hot[i].fetch_add(1, Ordering::Relaxed);
        } else if let Ok(mut m) = self.other.lock() {
            *m.entry(path.to_owned()).or_insert(0) += 1;
        }
    }

    pub(crate) fn wants_records(&self) -> bool {
        self.limit > 0
    }

    pub(crate) fn record(&self, r: ReceivedRequest) {
        if self.limit == 0 {
            return;
        }
        if let Ok(mut q) = self.received.lock() {
            if q.len() >= self.limit {
                q.pop_front();
            }
            q.push_back(r);
        }
    }
}

/// A live view of a host's request counters and received requests (cheap to clone).
#[derive(Debug, Clone)]
pub struct Stats {
    pub(crate) inner: Arc<StatsInner>,
}

impl Stats {
    /// Requests received on `path` (without query), over every method.
    pub fn requests(&self, path: &str) -> u64 {
        if let Some(i) = HOT_PATHS.iter().position(|p| *p == path) {
            return self.inner.hot[i].load(Ordering::Relaxed);
        }
        self.inner
            .other
            .lock()
            .map(|m| m.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// All requests received (every path, including refused and failed ones).
    pub fn total_requests(&self) -> u64 {
        self.inner.total.load(Ordering::Relaxed)
    }

    /// Requests per path.
    pub fn per_path(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (i, p) in HOT_PATHS.iter().enumerate() {
            let n = self.inner.hot[i].load(Ordering::Relaxed);
            if n > 0 {
                out.insert((*p).to_owned(), n);
            }
        }
        if let Ok(m) = self.inner.other.lock() {
            for (k, v) in m.iter() {
                out.insert(k.clone(), *v);
            }
        }
        out
    }

    /// Inference requests (chat, text completion, embeddings; direct or via `/upstream`).
    pub fn inference_requests(&self) -> u64 {
        self.per_path()
            .iter()
            .filter(|(p, _)| {
                p.ends_with("/chat/completions")
                    || p.ends_with("/v1/completions")
                    || p.ends_with("/embeddings")
            })
            .map(|(_, n)| n)
            .sum()
    }

    /// The most recent received requests, oldest first (bounded by the host's `record_limit`).
    pub fn received(&self) -> Vec<ReceivedRequest> {
        self.inner
            .received
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Received requests on one path.
    pub fn received_on(&self, path: &str) -> Vec<ReceivedRequest> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// The last received request, if any.
    pub fn last_received(&self) -> Option<ReceivedRequest> {
        self.inner
            .received
            .lock()
            .ok()
            .and_then(|q| q.back().cloned())
    }

    /// Clears counters and received requests.
    pub fn reset(&self) {
        self.inner.total.store(0, Ordering::Relaxed);
        for c in &self.inner.hot {
            c.store(0, Ordering::Relaxed);
        }
        if let Ok(mut m) = self.inner.other.lock() {
            m.clear();
        }
        if let Ok(mut q) = self.inner.received.lock() {
            q.clear();
        }
    }
}
