//! The data model: targets, raw per-request samples, statistics, cell/target/run results and
//! progress events. Everything here is serde and forms the stable JSON result file
//! (`schema_version` [`RESULT_SCHEMA_VERSION`]; changes are additive).

use serde::{Deserialize, Serialize};

use boo_fleet_core::Lane;

use crate::suite::{CellLoad, Suite};

/// Version of the JSON result layout ([`RunResult::schema_version`]).
pub const RESULT_SCHEMA_VERSION: u32 = 1;

/// What a run measures: one model on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Display id, unique within a run, e.g. `embedding/qwen3-4b:Q4_K_M`.
    pub id: String,
    /// The host (provider id); leases, lanes and baselines are per provider.
    pub provider: String,
    /// Model name on the wire (the `model` field sent to the host).
    pub model: String,
    /// Base URL of the host, e.g. `http://10.0.0.5:8080` (no trailing slash needed).
    pub base_url: String,
    /// What answers at `base_url` (decides the `/tokenize` path).
    #[serde(default)]
    pub kind: HostKind,
    /// Local hosts run serially per host; cloud targets in parallel within a budget.
    pub lane: Lane,
    /// Parallel runs allowed on this provider when `lane` is cloud (`None` = the engine default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_budget: Option<u32>,
    /// Bearer token sent to the host, if it needs one. Never serialized.
    #[serde(skip)]
    pub api_key: Option<String>,
}

/// The server software behind a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKind {
    /// llama-swap: `/upstream/<model>/tokenize`, loading chunks possible.
    #[default]
    LlamaSwap,
    /// A bare llama-server: `/tokenize`.
    LlamaServer,
    /// Any other OpenAI-compatible server: no tokenizer endpoint (calibrated estimate).
    Openai,
}

/// llama.cpp `timings` of one response (emulated or real server time, in ms).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ServerTimings {
    /// Prompt tokens reused from the KV cache.
    #[serde(default)]
    pub cache_n: u32,
    /// Prompt tokens processed.
    #[serde(default)]
    pub prompt_n: u32,
    /// Prompt processing time.
    #[serde(default)]
    pub prompt_ms: f64,
    /// Prompt tokens/s as the server reports it.
    #[serde(default)]
    pub prompt_per_second: f64,
    /// Generated tokens.
    #[serde(default)]
    pub predicted_n: u32,
    /// Generation time.
    #[serde(default)]
    pub predicted_ms: f64,
    /// Generation tokens/s as the server reports it.
    #[serde(default)]
    pub predicted_per_second: f64,
}

/// One request as observed by the client. All instants are microseconds since the run's origin
/// (a monotonic clock started when the run began executing).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Target id.
    pub target: String,
    /// Cell key.
    pub cell: String,
    /// Sequence number within the cell (warm-ups first).
    pub seq: u32,
    /// A warm-up request (excluded from statistics).
    pub warmup: bool,
    /// When the request was due (open loop: its arrival; closed loop: when its worker was free).
    pub scheduled_us: u64,
    /// When the request was written to the connection.
    pub sent_us: u64,
    /// First chunk of any kind (role chunk, loading chunk, ...).
    pub first_chunk_us: Option<u64>,
    /// Arrival of every content chunk (non-empty `content` / `reasoning_content` / `text` /
    /// tool-call delta), in order; the first one is the first content token.
    pub content_us: Vec<u64>,
    /// Last chunk (for a stream, the `[DONE]` or final event; otherwise the end of the body).
    pub last_chunk_us: Option<u64>,
    /// Chunks received in total (content or not).
    pub chunks: u32,
    /// llama-swap loading chunks seen (not content; the model was swapped in during the request).
    pub loading_chunks: u32,
    /// Prompt tokens the suite asked for.
    pub prompt_tokens_target: u32,
    /// `usage.prompt_tokens` (includes cached tokens).
    pub prompt_tokens: Option<u32>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<u32>,
    /// llama.cpp `timings`, when sent.
    pub timings: Option<ServerTimings>,
    /// HTTP status (0 when no response arrived).
    pub status: u16,
    /// Why the request failed (`None` = success).
    pub error: Option<String>,
    /// Transport retries before the measured attempt (a stale keep-alive connection).
    #[serde(default)]
    pub retries: u32,
}

impl Sample {
    /// Whether the request succeeded (2xx, stream completed, at least one content chunk).
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Output tokens: `usage.completion_tokens`, else `timings.predicted_n`, else content chunks.
    pub fn output_tokens(&self) -> u32 {
        self.completion_tokens
            .or(self.timings.map(|t| t.predicted_n))
            .unwrap_or(u32::try_from(self.content_us.len()).unwrap_or(u32::MAX))
    }
}

/// Summary statistics of one metric. Percentiles interpolate linearly between closest ranks
/// (numpy's default); `std` is the population standard deviation.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Values summarized.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Population standard deviation.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The metrics of one cell, each with its definition (see `bench/README.md`, "Metrics").
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CellMetrics {
    /// TTFT, ms: first content chunk − sent.
    pub ttft_ms: Stats,
    /// TPOT, ms: (E2E − TTFT) / (output tokens − 1), requests with ≥ 2 output tokens.
    pub tpot_ms: Stats,
    /// ITL, ms: gaps between consecutive content chunks, pooled over all requests.
    pub itl_ms: Stats,
    /// E2E, ms: last chunk − sent.
    pub e2e_ms: Stats,
    /// Client-side queue time, ms: sent − scheduled (a saturated client shows here).
    pub queue_ms: Stats,
    /// Per-request generation speed, tokens/s: 1000 / TPOT. The regression metric.
    pub gen_tps: Stats,
    /// Server-reported prompt tokens/s (`timings.prompt_per_second`), when present.
    pub server_prompt_tps: Option<Stats>,
    /// Server-reported generation tokens/s (`timings.predicted_per_second`), when present.
    pub server_gen_tps: Option<Stats>,
    /// Prompt tokens per request as the server counted them (`usage.prompt_tokens`).
    pub prompt_tokens: Stats,
    /// Output tokens per request.
    pub output_tokens: Stats,
    /// Output throughput, tokens/s: all output tokens / cell wall time.
    pub output_tps: f64,
    /// Request throughput, requests/s: successful requests / cell wall time.
    pub request_throughput: f64,
    /// Cell wall time, ms: first measured send → last measured response end.
    pub wall_ms: f64,
}

/// Why a cell stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// All requests were sent and answered.
    Completed,
    /// `limits.duration_s` elapsed.
    Duration,
    /// `limits.max_errors` or `limits.max_error_rate` was reached.
    Errors,
    /// The run was cancelled.
    Cancelled,
}

/// The result of one cell on one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// Cell key (see [`crate::CellSpec::key`]).
    pub key: String,
    /// Prompt tokens asked for.
    pub prompt_tokens: u32,
    /// `max_tokens` sent.
    pub max_tokens: u32,
    /// The load level that ran (a sweep's rate steps carry their computed rate).
    pub load: CellLoad,
    /// Measured requests sent (warm-ups excluded).
    pub requests: u32,
    /// Of which succeeded.
    pub ok: u32,
    /// Of which failed.
    pub errors: u32,
    /// Warm-up requests sent and excluded.
    pub warmup: u32,
    /// Up to 5 distinct error messages.
    pub error_examples: Vec<String>,
    /// Statistics over successful measured requests.
    pub metrics: CellMetrics,
    /// Why the cell stopped.
    pub stopped: StopReason,
    /// A swap or foreign traffic happened during this cell.
    pub polluted: bool,
    /// Foreign requests seen on the host during this cell.
    pub foreign_requests: u64,
}

/// How the model got ready before measuring.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LoadReport {
    /// It was already loaded (no load happened).
    pub already_loaded: bool,
    /// Time to load, ms (0 when already loaded), measured separately from every cell.
    pub load_ms: f64,
}

/// Why a result is not trustworthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Pollution {
    /// Requests not from this run reached the host during the run.
    ForeignTraffic {
        /// How many.
        requests: u64,
    },
    /// The measured model left ready, or another model loaded on the host, during the run.
    Swap {
        /// What happened (e.g. `model qwen left ready (unloading)`, `llama loaded`).
        detail: String,
    },
    /// llama-swap loading chunks arrived in a measured request (the model was loading).
    LoadingDuringRequest {
        /// Requests affected.
        requests: u64,
    },
}

/// The state of a whole run or of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every cell ran.
    Completed,
    /// Stopped early (cancelled).
    Cancelled,
    /// Could not run (load failed, lease lost, ...); see `error`.
    Failed,
}

/// The result for one target of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetResult {
    /// The target.
    pub target: Target,
    /// Completed, cancelled or failed.
    pub status: RunStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Model load before measuring.
    pub load: LoadReport,
    /// Cells in execution order.
    pub cells: Vec<CellResult>,
    /// Any pollution (see `pollution`).
    pub polluted: bool,
    /// Reasons.
    pub pollution: Vec<Pollution>,
    /// Requests not from this run seen on the host while this target ran.
    pub concurrent_foreign_requests: u64,
    /// When this target started / finished, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// See `started_at_ms`.
    pub finished_at_ms: u64,
}

/// A finished run: the JSON result file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// [`RESULT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Run id (chosen by the caller).
    pub id: String,
    /// The suite as run.
    pub suite: Suite,
    /// Completed if every target completed.
    pub status: RunStatus,
    /// Per target, in the order given.
    pub targets: Vec<TargetResult>,
    /// Any target polluted.
    pub polluted: bool,
    /// All targets' reasons, prefixed by nothing (see each target for attribution).
    pub pollution: Vec<Pollution>,
    /// Sum over targets.
    pub concurrent_foreign_requests: u64,
    /// Run start / end, ms since the Unix epoch.
    pub started_at_ms: u64,
    /// See `started_at_ms`.
    pub finished_at_ms: u64,
    /// Raw samples (warm-ups included, flagged), when the run kept them.
    #[serde(default)]
    pub samples: Vec<Sample>,
    /// Free-form facts about the client (version, kept-samples policy).
    #[serde(default)]
    pub client: ClientInfo,
}

/// About the bench client that produced a result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientInfo {
    /// `boo-bench` version.
    pub version: String,
    /// How prompts were sized per target (`tokenize` or `estimate (N chars/token)`).
    pub prompt_sizing: Vec<String>,
}

impl RunResult {
    /// The cell `key` of target `target_id`.
    pub fn cell(&self, target_id: &str, key: &str) -> Option<&CellResult> {
        self.targets
            .iter()
            .find(|t| t.target.id == target_id)?
            .cells
            .iter()
            .find(|c| c.key == key)
    }

    /// Pretty JSON (the result file format).
    ///
    /// # Errors
    /// Never in practice (all fields serialize); kept fallible for the file API.
    pub fn to_json(&self) -> Result<String, crate::BenchError> {
        serde_json::to_string_pretty(self).map_err(|e| crate::BenchError::ResultFile {
            path: "-".into(),
            reason: e.to_string(),
        })
    }

    /// Parses a result file.
    ///
    /// # Errors
    /// [`crate::BenchError::ResultFile`] when the JSON does not match.
    pub fn from_json(text: &str) -> Result<RunResult, crate::BenchError> {
        serde_json::from_str(text).map_err(|e| crate::BenchError::ResultFile {
            path: "-".into(),
            reason: e.to_string(),
        })
    }
}

/// What the run is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Waiting for the lane (another run on the host).
    Queued,
    /// Making sure the model is loaded.
    Loading,
    /// Sending warm-up requests.
    Warmup,
    /// Measuring a cell.
    Measuring,
    /// A cell finished (`cell` names it).
    CellDone,
    /// The target finished.
    TargetDone,
    /// The whole run finished.
    Finished,
}

/// A progress event (the gateway forwards these as `bench_progress` on the fleet stream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Run id.
    pub run_id: String,
    /// Target id (empty for run-level events).
    pub target: String,
    /// Cell key (empty outside cells).
    pub cell: String,
    /// Index of the cell among the target's cells (0-based).
    pub cell_index: u32,
    /// Cells of this target.
    pub cells_total: u32,
    /// Measured requests finished in this cell.
    pub done: u32,
    /// Measured requests planned in this cell (0 = duration-limited).
    pub total: u32,
    /// Failed requests in this cell.
    pub errors: u32,
    /// Output tokens/s over the last second (or the cell so far).
    pub current_tps: f64,
    /// What is happening.
    pub phase: Phase,
}
