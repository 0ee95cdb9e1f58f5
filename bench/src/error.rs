//! The crate's error type.

use boo_fleet_core::Lease;

/// Everything that can go wrong in boo-bench.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The suite text is not valid YAML/JSON or has unknown fields.
    #[error("suite does not parse: {0}")]
    SuiteParse(String),
    /// A suite value is out of range; `field` is a path like `grid.concurrency[2]`.
    #[error("invalid suite: {field}: {problem}")]
    InvalidSuite {
        /// Path of the offending field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A run request is unusable (no targets, duplicate target ids, empty run id, ...).
    #[error("invalid run: {field}: {problem}")]
    InvalidRun {
        /// The offending field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The host shows recent traffic that is not from this run; retry with `takeover`
    /// (HTTP API: 409 with `requiresConfirmation: true`).
    #[error(
        "host `{provider}` served {requests} request(s) not from this run in the last {window_s} s; confirm with takeover"
    )]
    RequiresConfirmation {
        /// The busy host.
        provider: String,
        /// Foreign requests seen in the window.
        requests: u64,
        /// The window in seconds.
        window_s: u64,
    },
    /// Another holder has the host lease (HTTP API: 409).
    #[error("host `{provider}` is busy: {reason}")]
    HostBusy {
        /// The host.
        provider: String,
        /// The lease's reason (names the holder).
        reason: String,
        /// The blocking lease (boxed to keep the error small).
        held_by: Option<Box<Lease>>,
    },
    /// Making sure the model is loaded failed.
    #[error("could not load `{model}` on `{provider}`: {reason}")]
    Load {
        /// Host.
        provider: String,
        /// Model (wire name).
        model: String,
        /// Why.
        reason: String,
    },
    /// The fleet watch (foreign traffic / swap detection) failed.
    #[error("fleet watch failed for `{provider}`: {reason}")]
    Watch {
        /// Host.
        provider: String,
        /// Why.
        reason: String,
    },
    /// A transport-level failure of the benchmark client (not counted as a request error).
    #[error("client error: {0}")]
    Client(String),
    /// Reading or writing a result file.
    #[error("result file {path}: {reason}")]
    ResultFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl BenchError {
    /// Whether the HTTP API should answer 409 (busy host or takeover needed).
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            BenchError::RequiresConfirmation { .. } | BenchError::HostBusy { .. }
        )
    }

    /// Whether the caller must confirm with `takeover` (`requiresConfirmation: true`).
    pub fn requires_confirmation(&self) -> bool {
        matches!(self, BenchError::RequiresConfirmation { .. })
    }
}
