//! Speed-benchmark storage: suites, runs, per-cell results, raw samples and baselines.
//!
//! The rows are generic: they do not depend on the bench engine (`boo-bench`), which maps its
//! own `RunResult` onto them. Rich statistics travel as JSON (`stats`, `summary`, `data`);
//! the few values the store queries on (generation tok/s, TTFT p50, per-request TTFT/E2E) are
//! also typed columns.
//!
//! Tables (migration `0003_bench.sql`): `bench_suites` (keyed by content hash),
//! `bench_runs`, `bench_run_targets` (one row per target of a run, with its model-load time),
//! `bench_cells`, `bench_samples`, `bench_baselines` (keyed by provider, model incl. quant,
//! suite and cell key).
//!
//! ```
//! use boo_telemetry_store::{BenchRunFilter, BenchRunRow, BenchStore, BenchTargetRow, open};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), boo_telemetry_store::StoreError> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = open(&format!("sqlite://{}/boo.db", dir.path().display())).await?;
//! let run = BenchRunRow::started(
//!     "run-1",
//!     "chat-grid",
//!     "abc123",
//!     vec![BenchTargetRow::new("gpu-box/qwen3-4b:Q4_K_M")],
//!     chrono::Utc::now(),
//! );
//! store.insert_bench_run(&run).await?;
//! let page = store.bench_runs(&BenchRunFilter::default(), None, 20).await?;
//! assert_eq!(page.runs[0].id, "run-1");
//! assert_eq!(page.runs[0].targets[0].provider, "gpu-box");
//! # Ok(()) }
//! ```

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};

pub(crate) mod postgres;
pub(crate) mod sqlite;

/// One stored suite body (YAML or JSON text as submitted), keyed by its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchSuiteRow {
    /// Content hash of `body` (computed by the caller, e.g. the engine's canonical hash).
    pub hash: String,
    /// Suite name.
    pub name: String,
    /// The suite as submitted.
    pub body: String,
    /// When this version was first stored.
    pub created_at: DateTime<Utc>,
}

/// Life cycle of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchRunStatus {
    /// Started, not finished.
    Running,
    /// Finished with results.
    Completed,
    /// Stopped by an error (see [`BenchRunRow::error`]).
    Failed,
    /// Cancelled by a user.
    Cancelled,
}

impl BenchRunStatus {
    /// Wire / column form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses [`BenchRunStatus::as_str`]'s output; errors name the `status` field.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => {
                return Err(StoreError::Invalid {
                    field: "bench_runs.status",
                    problem: format!(
                        "unknown status {other:?} (expected running|completed|failed|cancelled)"
                    ),
                });
            }
        })
    }
}

/// One target of a run: a composite model id plus where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchTargetRow {
    /// Composite id as requested (`gpu-box/qwen3-4b:Q4_K_M`).
    pub target: String,
    /// Provider (host) id.
    pub provider: String,
    /// Model id on that provider, including the quant (`qwen3-4b:Q4_K_M`).
    pub model: String,
    /// Model-load time measured before the run (warm-up), if one happened.
    pub load_ms: Option<f64>,
}

impl BenchTargetRow {
    /// Splits a composite `provider/model` id (a bare id gets an empty provider).
    pub fn new(target: &str) -> Self {
        let (provider, model) = target.split_once('/').unwrap_or(("", target));
        BenchTargetRow {
            target: target.to_owned(),
            provider: provider.to_owned(),
            model: model.to_owned(),
            load_ms: None,
        }
    }
}

/// One benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRunRow {
    /// Run id (unique).
    pub id: String,
    /// Suite name.
    pub suite: String,
    /// Hash of the suite version that ran ([`BenchSuiteRow::hash`]).
    pub suite_hash: String,
    /// Targets, in the order requested.
    pub targets: Vec<BenchTargetRow>,
    /// Life cycle.
    pub status: BenchRunStatus,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time (set when the run leaves `running`).
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether the results are disturbed (model swap, foreign traffic, ...).
    pub polluted: bool,
    /// Why the run is polluted, one line each.
    pub pollution_reasons: Vec<String>,
    /// Requests on the benchmarked host(s) that did not come from this run.
    pub concurrent_foreign_requests: i64,
    /// Error message of a failed run.
    pub error: Option<String>,
    /// Engine-defined summary (the run result without samples); `null` while running.
    pub summary: serde_json::Value,
}

impl BenchRunRow {
    /// A freshly started run: status `running`, clean, no summary.
    pub fn started(
        id: &str,
        suite: &str,
        suite_hash: &str,
        targets: Vec<BenchTargetRow>,
        started_at: DateTime<Utc>,
    ) -> Self {
        BenchRunRow {
            id: id.to_owned(),
            suite: suite.to_owned(),
            suite_hash: suite_hash.to_owned(),
            targets,
            status: BenchRunStatus::Running,
            started_at,
            finished_at: None,
            polluted: false,
            pollution_reasons: Vec::new(),
            concurrent_foreign_requests: 0,
            error: None,
            summary: serde_json::Value::Null,
        }
    }
}

/// Aggregated result of one (target, grid cell).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchCellRow {
    /// Run id.
    pub run_id: String,
    /// Composite target id.
    pub target: String,
    /// Stable key of the grid cell (e.g. `p512-g128-c8`).
    pub cell_key: String,
    /// Generation tokens/s of the cell (the regression metric), if measured.
    pub gen_tps: Option<f64>,
    /// TTFT p50 in milliseconds, if measured.
    pub ttft_p50_ms: Option<f64>,
    /// Engine-defined statistics (percentiles, throughput, queue time, ...).
    pub stats: serde_json::Value,
}

/// One measured request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSampleRow {
    /// Run id.
    pub run_id: String,
    /// Composite target id.
    pub target: String,
    /// Grid cell key.
    pub cell_key: String,
    /// Request number within (run, target, cell).
    pub seq: i64,
    /// Whether the request succeeded.
    pub ok: bool,
    /// Time to first content token, ms.
    pub ttft_ms: Option<f64>,
    /// End-to-end latency, ms.
    pub e2e_ms: Option<f64>,
    /// Output tokens.
    pub output_tokens: Option<i64>,
    /// Engine-defined per-request metrics and raw timestamps.
    pub data: serde_json::Value,
}

/// A run with its per-cell results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRunDetail {
    /// The run.
    pub run: BenchRunRow,
    /// Cells ordered by target, then cell key.
    pub cells: Vec<BenchCellRow>,
}

/// Which runs to list. Empty fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchRunFilter {
    /// Only runs of this suite (name).
    pub suite: Option<String>,
    /// Only runs that include this composite target.
    pub target: Option<String>,
}

/// Keyset cursor of [`BenchStore::bench_runs`]: the last run of the previous page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchRunCursor {
    /// Its start time.
    pub started_at: DateTime<Utc>,
    /// Its id.
    pub id: String,
}

impl BenchRunCursor {
    /// Opaque text form for query strings: `<started micros>.<id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.started_at.timestamp_micros(), self.id)
    }

    /// Parses [`BenchRunCursor::encode`]'s output; errors name the `cursor` field.
    pub fn decode(s: &str) -> Result<Self> {
        let bad = |problem: &str| StoreError::Invalid {
            field: "cursor",
            problem: problem.to_owned(),
        };
        let (ts, id) = s
            .split_once('.')
            .ok_or_else(|| bad("expected <micros>.<run id>"))?;
        let us: i64 = ts
            .parse()
            .map_err(|_| bad("timestamp part is not an integer"))?;
        let started_at =
            DateTime::from_timestamp_micros(us).ok_or_else(|| bad("timestamp out of range"))?;
        if id.is_empty() {
            return Err(bad("run id part is empty"));
        }
        Ok(BenchRunCursor {
            started_at,
            id: id.to_owned(),
        })
    }
}

/// A page of runs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRunPage {
    /// Runs, newest first.
    pub runs: Vec<BenchRunRow>,
    /// Cursor of the next (older) page, when more runs may exist.
    pub next: Option<BenchRunCursor>,
}

/// The run a later run of the same (provider, model, suite, cell) is compared against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchBaselineRow {
    /// Provider (host) id.
    pub provider: String,
    /// Model id incl. quant.
    pub model: String,
    /// Suite name.
    pub suite: String,
    /// Grid cell key.
    pub cell_key: String,
    /// The baseline run.
    pub run_id: String,
    /// When it was set.
    pub set_at: DateTime<Utc>,
}

/// One point of the tok/s-over-time history of a (provider, model, suite).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchHistoryPoint {
    /// Run id.
    pub run_id: String,
    /// Run start time.
    pub started_at: DateTime<Utc>,
    /// Run status.
    pub status: BenchRunStatus,
    /// Whether the run was polluted.
    pub polluted: bool,
    /// Grid cell key.
    pub cell_key: String,
    /// Generation tok/s of that cell.
    pub gen_tps: Option<f64>,
    /// TTFT p50 of that cell.
    pub ttft_p50_ms: Option<f64>,
}

/// Benchmark storage; both adapters implement it, and it is a supertrait of
/// [`Store`](crate::Store).
///
/// Every method has a default body answering [`StoreError::Unavailable`], so test wrappers
/// around a store need no bench code; [`SqliteStore`](crate::sqlite::SqliteStore) and
/// [`PgStore`](crate::postgres::PgStore) override all of them.
#[async_trait]
pub trait BenchStore: Send + Sync {
    /// Stores a suite version (no-op when its hash is already stored).
    async fn put_bench_suite(&self, suite: &BenchSuiteRow) -> Result<()> {
        let _ = suite;
        Err(unsupported())
    }
    /// A stored suite version by hash.
    async fn bench_suite(&self, hash: &str) -> Result<Option<BenchSuiteRow>> {
        let _ = hash;
        Err(unsupported())
    }
    /// Inserts a new run with its targets. A duplicate id is an error naming `id`.
    async fn insert_bench_run(&self, run: &BenchRunRow) -> Result<()> {
        let _ = run;
        Err(unsupported())
    }
    /// Overwrites a run's mutable fields (status, finish time, pollution, foreign requests,
    /// error, summary) and its targets' load times. Unknown ids are an error.
    async fn update_bench_run(&self, run: &BenchRunRow) -> Result<()> {
        let _ = run;
        Err(unsupported())
    }
    /// Upserts cell results (keyed by run, target, cell key). Returns rows written.
    async fn put_bench_cells(&self, cells: &[BenchCellRow]) -> Result<u64> {
        let _ = cells;
        Err(unsupported())
    }
    /// Inserts samples; duplicates of `(run, target, cell, seq)` are ignored. Returns rows
    /// inserted.
    async fn insert_bench_samples(&self, rows: &[BenchSampleRow]) -> Result<u64> {
        let _ = rows;
        Err(unsupported())
    }
    /// Runs newest first (keyset pagination on `(started_at, id)`); `limit` clamped to 1..=1000.
    async fn bench_runs(
        &self,
        filter: &BenchRunFilter,
        cursor: Option<&BenchRunCursor>,
        limit: u32,
    ) -> Result<BenchRunPage> {
        let _ = (filter, cursor, limit);
        Err(unsupported())
    }
    /// One run with its cells.
    async fn bench_run(&self, id: &str) -> Result<Option<BenchRunDetail>> {
        let _ = id;
        Err(unsupported())
    }
    /// All samples of a run ordered by target, cell key, seq.
    async fn bench_samples(&self, run_id: &str) -> Result<Vec<BenchSampleRow>> {
        let _ = run_id;
        Err(unsupported())
    }
    /// Sets (replaces) the baseline of a (provider, model, suite, cell).
    async fn set_bench_baseline(&self, b: &BenchBaselineRow) -> Result<()> {
        let _ = b;
        Err(unsupported())
    }
    /// The baseline of a (provider, model, suite, cell), if set.
    async fn bench_baseline(
        &self,
        provider: &str,
        model: &str,
        suite: &str,
        cell_key: &str,
    ) -> Result<Option<BenchBaselineRow>> {
        let _ = (provider, model, suite, cell_key);
        Err(unsupported())
    }
    /// All baselines of a suite (or every suite), ordered by provider, model, suite, cell.
    async fn bench_baselines(&self, suite: Option<&str>) -> Result<Vec<BenchBaselineRow>> {
        let _ = suite;
        Err(unsupported())
    }
    /// Cells of finished runs of `suite` for (provider, model), oldest first, at most `limit`
    /// newest runs (clamped to 1..=1000): the tok/s-over-time chart.
    async fn bench_history(
        &self,
        provider: &str,
        model: &str,
        suite: &str,
        limit: u32,
    ) -> Result<Vec<BenchHistoryPoint>> {
        let _ = (provider, model, suite, limit);
        Err(unsupported())
    }
}

fn unsupported() -> StoreError {
    StoreError::Unavailable("this store does not keep benchmark results".into())
}

pub(crate) fn page(runs: Vec<BenchRunRow>, limit: i64) -> BenchRunPage {
    let next = if runs.len() as i64 >= limit {
        runs.last().map(|r| BenchRunCursor {
            started_at: r.started_at,
            id: r.id.clone(),
        })
    } else {
        None
    };
    BenchRunPage { runs, next }
}

pub(crate) fn unknown_run(id: &str) -> StoreError {
    StoreError::Invalid {
        field: "run_id",
        problem: format!("no bench run {id:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage_naming_the_field() {
        let c = BenchRunCursor {
            started_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: "run.with.dots".into(),
        };
        assert_eq!(BenchRunCursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "nodot", "x.id", "123."] {
            let e = BenchRunCursor::decode(bad).unwrap_err().to_string();
            assert!(e.contains("cursor"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn status_parses_its_own_form_only() {
        for s in [
            BenchRunStatus::Running,
            BenchRunStatus::Completed,
            BenchRunStatus::Failed,
            BenchRunStatus::Cancelled,
        ] {
            assert_eq!(BenchRunStatus::parse(s.as_str()).unwrap(), s);
        }
        assert!(BenchRunStatus::parse("done").is_err());
    }

    #[test]
    fn target_splits_provider_and_model_with_quant() {
        let t = BenchTargetRow::new("gpu-box/qwen3-4b:Q4_K_M");
        assert_eq!(
            (t.provider.as_str(), t.model.as_str()),
            ("gpu-box", "qwen3-4b:Q4_K_M")
        );
        let t = BenchTargetRow::new("gw/openai/gpt-4o");
        assert_eq!(
            (t.provider.as_str(), t.model.as_str()),
            ("gw", "openai/gpt-4o")
        );
    }
}
