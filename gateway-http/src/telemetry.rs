//! The telemetry hook: one [`RequestRecord`] per finished request, through a non-blocking sink.

pub use boo_telemetry_store::RequestRecord;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

/// Receives one record per finished request. Implementations must not block (hand the record
/// to a bounded queue and count drops instead).
pub trait TelemetrySink: Send + Sync + 'static {
    /// Records one finished request.
    fn record(&self, rec: RequestRecord);
}

/// Discards every record.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopSink;

impl TelemetrySink for NoopSink {
    fn record(&self, _rec: RequestRecord) {}
}

/// Sends records into a bounded tokio channel with `try_send`; full channel → dropped and counted.
#[derive(Debug)]
pub struct ChannelSink {
    tx: mpsc::Sender<RequestRecord>,
    dropped: AtomicU64,
}

impl ChannelSink {
    /// A sink and the receiving end of its queue (capacity `cap`).
    pub fn new(cap: usize) -> (Self, mpsc::Receiver<RequestRecord>) {
        let (tx, rx) = mpsc::channel(cap.max(1));
        (
            Self {
                tx,
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Records dropped because the queue was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl TelemetrySink for ChannelSink {
    fn record(&self, rec: RequestRecord) {
        if self.tx.try_send(rec).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Keeps every record in memory (tests and small tools).
#[derive(Debug, Default)]
pub struct MemorySink {
    records: Mutex<Vec<RequestRecord>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the records so far.
    pub fn records(&self) -> Vec<RequestRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl TelemetrySink for MemorySink {
    fn record(&self, rec: RequestRecord) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rec);
    }
}
