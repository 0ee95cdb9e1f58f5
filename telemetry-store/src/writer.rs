//! The batch writer: the gateway never waits on the database.
//!
//! [`BatchWriterHandle::try_record`] pushes into a bounded channel with `try_send` (no await, no
//! lock). A single writer task drains it and flushes every `flush_interval` or `max_batch` rows
//! with one multi-row insert per record kind. When the store fails, the batch is kept and
//! retried with exponential backoff; meanwhile the channel fills and, once full, new records are
//! dropped and counted. Shutdown flushes what is buffered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::StoreError;
use crate::records::*;
use crate::store::Store;

/// Batch writer settings.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    /// Records buffered in the channel before new ones are dropped (default 100 000).
    /// The writer holds at most one more batch (`max_batch`) while it retries.
    pub capacity: usize,
    /// Flush when this many rows are pending (default 500).
    pub max_batch: usize,
    /// Flush at least this often while rows are pending (default 100 ms).
    pub flush_interval: Duration,
    /// First retry delay after a failed flush (default 100 ms); doubles up to `retry_max`.
    pub retry_initial: Duration,
    /// Longest retry delay (default 5 s).
    pub retry_max: Duration,
    /// On shutdown, give up retrying after this long and count what is left as dropped
    /// (default 10 s).
    pub shutdown_timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            max_batch: 500,
            flush_interval: Duration::from_millis(100),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters shared between the handle and the writer task.
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    written: AtomicU64,
    dropped: AtomicU64,
    flush_errors: AtomicU64,
    flushes: AtomicU64,
}

/// A snapshot of the writer's counters (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Records accepted into the buffer.
    pub accepted: u64,
    /// Records handed to the store successfully (duplicates ignored by the store included).
    pub written: u64,
    /// Records dropped because the buffer was full, the writer was shut down, or the store
    /// rejected a batch permanently.
    pub dropped: u64,
    /// Failed flush attempts (each is retried).
    pub flush_errors: u64,
    /// Successful flushes.
    pub flushes: u64,
}

impl WriterStats {
    /// Prometheus text exposition of these counters.
    pub fn prometheus(&self) -> String {
        format!(
            "# TYPE boo_telemetry_accepted_total counter\nboo_telemetry_accepted_total {}\n\
             # TYPE boo_telemetry_written_total counter\nboo_telemetry_written_total {}\n\
             # TYPE boo_telemetry_dropped_total counter\nboo_telemetry_dropped_total {}\n\
             # TYPE boo_telemetry_flush_errors_total counter\nboo_telemetry_flush_errors_total {}\n\
             # TYPE boo_telemetry_flushes_total counter\nboo_telemetry_flushes_total {}\n",
            self.accepted, self.written, self.dropped, self.flush_errors, self.flushes
        )
    }
}

/// Spawns the writer task.
#[derive(Debug)]
pub struct BatchWriter;

impl BatchWriter {
    /// Start a writer task on the current tokio runtime.
    pub fn spawn(store: Arc<dyn Store>, cfg: BatchConfig) -> BatchWriterHandle {
        let capacity = cfg.capacity.max(1);
        let (tx, rx) = mpsc::channel(capacity);
        let (stop_tx, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(store, cfg, rx, stop_rx, counters.clone()));
        BatchWriterHandle {
            tx,
            counters,
            stop: Arc::new(stop_tx),
            task: Arc::new(std::sync::Mutex::new(Some(task))),
        }
    }
}

/// Cheap to clone; every clone feeds the same writer task.
#[derive(Debug, Clone)]
pub struct BatchWriterHandle {
    tx: mpsc::Sender<Record>,
    counters: Arc<Counters>,
    stop: Arc<watch::Sender<bool>>,
    task: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl BatchWriterHandle {
    /// Queue a record. Never blocks or awaits; when the buffer is full (or the writer has shut
    /// down) the record is dropped and counted. Returns whether it was accepted.
    pub fn try_record(&self, r: impl Into<Record>) -> bool {
        match self.tx.try_send(r.into()) {
            Ok(()) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records dropped so far.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// All counters.
    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            written: c.written.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            flush_errors: c.flush_errors.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
        }
    }

    /// Stop accepting records, flush everything buffered and wait for the writer task.
    /// Safe to call from any clone; later calls return at once.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Whether an error means "try again later" (connection trouble) rather than a bad batch.
fn transient(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(_) => true,
        StoreError::Database(db) => !matches!(db, sqlx::Error::Database(_)),
        _ => false,
    }
}

async fn flush(store: &dyn Store, batch: &[Record]) -> Result<(), StoreError> {
    let mut req = Vec::new();
    let mut act = Vec::new();
    let mut perf = Vec::new();
    let mut ev = Vec::new();
    for r in batch {
        match r {
            Record::Request(x) => req.push(x.clone()),
            Record::Activity(x) => act.push(x.clone()),
            Record::Perf(x) => perf.push(x.clone()),
            Record::ModelEvent(x) => ev.push(x.clone()),
        }
    }
    // Every insert is ON CONFLICT DO NOTHING, so retrying a partly written batch is harmless.
    if !req.is_empty() {
        store.insert_requests(&req).await?;
    }
    if !act.is_empty() {
        store.insert_activity(&act).await?;
    }
    if !perf.is_empty() {
        store.insert_perf(&perf).await?;
    }
    if !ev.is_empty() {
        store.insert_model_events(&ev).await?;
    }
    Ok(())
}

async fn run(
    store: Arc<dyn Store>,
    cfg: BatchConfig,
    mut rx: mpsc::Receiver<Record>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let max_batch = cfg.max_batch.max(1);
    let mut pending: Vec<Record> = Vec::with_capacity(max_batch);
    let mut stopping = false;
    let mut stop_deadline: Option<Instant> = None;
    loop {
        // 1. Collect a batch: wait for the first record, then up to flush_interval for more.
        if pending.is_empty() {
            if stopping {
                match rx.try_recv() {
                    Ok(r) => pending.push(r),
                    Err(_) => break,
                }
            } else {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(r) => pending.push(r),
                        None => break,
                    },
                    _ = stop.changed() => {
                        stopping = true;
                        rx.close();
                        stop_deadline = Some(Instant::now() + cfg.shutdown_timeout);
                        continue;
                    }
                }
            }
        }
        let deadline = Instant::now() + cfg.flush_interval;
        while pending.len() < max_batch {
            if stopping {
                match rx.try_recv() {
                    Ok(r) => pending.push(r),
                    Err(_) => break,
                }
                continue;
            }
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => pending.push(r),
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.changed() => {
                    stopping = true;
                    rx.close();
                    stop_deadline = Some(Instant::now() + cfg.shutdown_timeout);
                }
            }
        }
        // 2. Flush, retrying with backoff while the store is unavailable.
        let mut delay = cfg.retry_initial;
        let mut permanent_failures = 0;
        loop {
            match flush(store.as_ref(), &pending).await {
                Ok(()) => {
                    counters
                        .written
                        .fetch_add(pending.len() as u64, Ordering::Relaxed);
                    counters.flushes.fetch_add(1, Ordering::Relaxed);
                    pending.clear();
                    break;
                }
                Err(e) => {
                    counters.flush_errors.fetch_add(1, Ordering::Relaxed);
                    if !transient(&e) {
                        permanent_failures += 1;
                    }
                    let give_up = permanent_failures >= 3
                        || stop_deadline.is_some_and(|d| Instant::now() >= d);
                    if give_up {
                        tracing::warn!(rows = pending.len(), error = %e, "telemetry batch dropped");
                        counters
                            .dropped
                            .fetch_add(pending.len() as u64, Ordering::Relaxed);
                        pending.clear();
                        break;
                    }
                    tracing::debug!(error = %e, retry_in_ms = delay.as_millis() as u64, "telemetry flush failed");
                    if stopping {
                        tokio::time::sleep(delay).await;
                    } else {
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => {
                                stopping = true;
                                rx.close();
                                stop_deadline = Some(Instant::now() + cfg.shutdown_timeout);
                            }
                        }
                    }
                    delay = (delay * 2).min(cfg.retry_max);
                }
            }
        }
    }
}
