//! The engine's IO seams: the benchmark client, model loading, and the fleet watch. The gateway
//! implements [`ModelLoader`] and [`FleetWatch`] from its fleet hub; tests script them.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::BenchError;
use crate::model::{LoadReport, Progress, ServerTimings, Target};

/// Header carrying the run id on every request the engine sends, so a [`FleetWatch`] can tell
/// the run's own traffic from foreign traffic (the `User-Agent` is also `boo-bench/<version>`).
pub const RUN_HEADER: &str = "x-boo-bench-run";

/// One request the engine wants sent: a prebuilt JSON body for `path` (streaming).
#[derive(Debug, Clone)]
pub struct BenchRequest {
    /// Path on the target's base URL, e.g. `/v1/chat/completions`.
    pub path: &'static str,
    /// The JSON body (already contains `model`, `stream: true`, ...).
    pub body: Bytes,
    /// Run id, sent as [`RUN_HEADER`].
    pub run_id: String,
    /// Give up after this long (the request then counts as an error).
    pub timeout: Duration,
}

/// What the client observed for one request. Instants are µs since the `origin` given to
/// [`BenchClient::send`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    /// Request written.
    pub sent_us: u64,
    /// First chunk of any kind.
    pub first_chunk_us: Option<u64>,
    /// Every content chunk's arrival.
    pub content_us: Vec<u64>,
    /// Last chunk.
    pub last_chunk_us: Option<u64>,
    /// All chunks.
    pub chunks: u32,
    /// llama-swap loading chunks (not content).
    pub loading_chunks: u32,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<u32>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<u32>,
    /// llama.cpp `timings`.
    pub timings: Option<ServerTimings>,
    /// HTTP status (0 = none).
    pub status: u16,
    /// Failure, if any.
    pub error: Option<String>,
    /// Transport retries before the measured attempt (0 or 1).
    pub retries: u32,
}

/// Sends benchmark requests and counts tokens. [`crate::HttpClient`] is the real one.
#[async_trait]
pub trait BenchClient: Send + Sync {
    /// Sends `req` to `target` and observes the whole response. Never fails: transport errors
    /// and bad statuses are reported in [`Observation::error`].
    async fn send(&self, target: &Target, req: &BenchRequest, origin: Instant) -> Observation;

    /// Counts the tokens of `text` with the target's tokenizer (`/tokenize`, or
    /// `/upstream/<model>/tokenize` on llama-swap). `Ok(None)` when the target has none.
    ///
    /// # Errors
    /// [`BenchError::Client`] on transport failure.
    async fn tokenize(&self, target: &Target, text: &str) -> Result<Option<u32>, BenchError>;
}

/// Makes sure a target's model is loaded before measuring (the gateway: the fleet's `warm`
/// action) and reports how long loading took; the engine keeps that time out of every cell.
#[async_trait]
pub trait ModelLoader: Send + Sync {
    /// Loads `target.model` on `target.provider` if needed and waits until it is ready.
    ///
    /// # Errors
    /// [`BenchError::Load`] when it cannot be loaded.
    async fn ensure_loaded(&self, target: &Target) -> Result<LoadReport, BenchError>;
}

/// What the fleet saw on a host since a [`WatchSession`] started (cumulative).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchReport {
    /// Inference requests on the host not carrying this run's [`RUN_HEADER`].
    pub foreign_requests: u64,
    /// Swaps: the measured model left ready, or another model loaded on that host
    /// (one human-readable line each).
    pub swaps: Vec<String>,
}

/// Observes one host for the duration of one target's run.
#[async_trait]
pub trait WatchSession: Send + Sync {
    /// Everything seen since the session started.
    ///
    /// # Errors
    /// [`BenchError::Watch`] when the fleet view is unavailable.
    async fn report(&self) -> Result<WatchReport, BenchError>;
}

/// The fleet as the engine needs it for safety: recent foreign traffic (takeover rule) and a
/// watch for foreign requests and swaps during a run. The gateway implements it from its
/// fleet hub and activity feed.
#[async_trait]
pub trait FleetWatch: Send + Sync {
    /// Inference requests on `target.provider` within the last `window` that were not sent by
    /// a bench run.
    ///
    /// # Errors
    /// [`BenchError::Watch`] when unknown (the engine then refuses unless `takeover`).
    async fn recent_foreign_requests(
        &self,
        target: &Target,
        window: Duration,
    ) -> Result<u64, BenchError>;

    /// Starts watching `target`'s host for the run `run_id`.
    ///
    /// # Errors
    /// [`BenchError::Watch`] when the host cannot be watched.
    async fn watch(
        &self,
        target: &Target,
        run_id: &str,
    ) -> Result<Box<dyn WatchSession>, BenchError>;
}

/// Receives progress events (throttled to a few per second per target, plus every phase change).
pub trait ProgressSink: Send + Sync {
    /// One event.
    fn progress(&self, p: &Progress);
}

impl ProgressSink for () {
    fn progress(&self, _p: &Progress) {}
}

impl<F: Fn(&Progress) + Send + Sync> ProgressSink for F {
    fn progress(&self, p: &Progress) {
        self(p);
    }
}

impl ProgressSink for tokio::sync::mpsc::UnboundedSender<Progress> {
    fn progress(&self, p: &Progress) {
        let _ = self.send(p.clone());
    }
}

/// A [`ModelLoader`] + [`FleetWatch`] for targets outside any fleet (cloud APIs, a bare URL):
/// assumes the model is ready, sees no foreign traffic and no swaps. The gateway never uses it
/// for local hosts.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFleet;

#[async_trait]
impl ModelLoader for NoFleet {
    async fn ensure_loaded(&self, _target: &Target) -> Result<LoadReport, BenchError> {
        Ok(LoadReport {
            already_loaded: true,
            load_ms: 0.0,
        })
    }
}

struct NoWatch;

#[async_trait]
impl WatchSession for NoWatch {
    async fn report(&self) -> Result<WatchReport, BenchError> {
        Ok(WatchReport::default())
    }
}

#[async_trait]
impl FleetWatch for NoFleet {
    async fn recent_foreign_requests(
        &self,
        _target: &Target,
        _window: Duration,
    ) -> Result<u64, BenchError> {
        Ok(0)
    }

    async fn watch(
        &self,
        _target: &Target,
        _run_id: &str,
    ) -> Result<Box<dyn WatchSession>, BenchError> {
        Ok(Box::new(NoWatch))
    }
}
