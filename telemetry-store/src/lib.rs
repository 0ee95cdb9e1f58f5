//! boo-telemetry-store: where boocontrol keeps what it learns — gateway requests, host
//! activity, perf samples, model events, hosts, settings (favorites) and captures — in an
//! embedded SQLite file (the default, `sqlite://boocontrol.db`) or a shared Postgres.
//!
//! * [`open`] picks the adapter by URL scheme and applies the embedded migrations.
//! * [`Store`] is the async trait both adapters implement (inserts, queries, retention
//!   primitives). Inserts are idempotent: `ON CONFLICT DO NOTHING` on each table's natural key.
//!   Gateway requests are keyed by `(ts, request_id)`: the table is its own time index (one
//!   B-tree fewer per recorded request), and two requests that reused one client-chosen
//!   `x-request-id` are both kept.
//! * [`BatchWriter`] puts records on a bounded channel; the gateway calls
//!   [`BatchWriterHandle::try_record`], which never blocks. On SQLite the inserts run on
//!   sqlx's per-connection threads at nice 10 (see [`sqlite::WORKER_NICE_ENV`]), so a saturated
//!   gateway's proxy threads win the CPU and telemetry queues instead.
//! * [`retention`] holds the pure planner and the executor (`spawn_retention` for the daily
//!   timer, `run_retention(.., dry_run)` for `booctl retention run`).
//!
//! **Activity feed.** [`Store::feed`] unifies two tables, newest first: `requests`
//! (gateway-observed, [`FeedOrigin::Gateway`], carries `source`) and `host_activity`
//! (reconciled from llama-swap, [`FeedOrigin::Host`], no source). A request that went through
//! the gateway to a llama-swap host appears once per origin; filter by
//! [`FeedFilter::origin`] to show one view. A `source` filter implies gateway rows only.
//! Pages are keyset-paginated on `(ts, origin, id)`, never OFFSET. Token aggregates
//! ([`Store::usage`]) count gateway requests only, so nothing is counted twice.
//!
//! ```
//! use boo_telemetry_store::{BatchConfig, BatchWriter, FeedFilter, RequestRecord, open};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), boo_telemetry_store::StoreError> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = open(&format!("sqlite://{}/boo.db", dir.path().display())).await?;
//! let writer = BatchWriter::spawn(store.clone(), BatchConfig::default());
//! writer.try_record(RequestRecord {
//!     request_id: "r1".into(),
//!     ts: chrono::Utc::now(),
//!     provider_id: "gpu-box".into(),
//!     model: "gpu-box/qwen".into(),
//!     wire_model: Some("qwen".into()),
//!     source: Some("arena".into()),
//!     path: "/v1/chat/completions".into(),
//!     status: 200,
//!     error_class: None,
//!     ttft_ms: Some(120.0),
//!     duration_ms: 900.0,
//!     prompt_tokens: Some(42),
//!     cached_tokens: None,
//!     completion_tokens: Some(7),
//!     prompt_tps: None,
//!     gen_tps: Some(55.0),
//!     bytes_in: 300,
//!     bytes_out: 2000,
//!     stream: true,
//!     route: None,
//! });
//! writer.shutdown().await; // flushes
//! let filter = FeedFilter { source: Some("arena".into()), ..Default::default() };
//! let page = store.feed(&filter, None, 50).await?;
//! assert_eq!(page.rows[0].id, "r1");
//! # Ok(()) }
//! ```

mod bench;
mod chunks;
mod error;
mod records;
mod store;
mod writer;

pub mod policies;

pub mod postgres;
pub mod retention;
pub mod sqlite;

pub use bench::{
    BenchBaselineRow, BenchCellRow, BenchHistoryPoint, BenchRunCursor, BenchRunDetail,
    BenchRunFilter, BenchRunPage, BenchRunRow, BenchRunStatus, BenchSampleRow, BenchStore,
    BenchSuiteRow, BenchTargetRow,
};
pub use error::{Result, StoreError};
pub use policies::{PolicyRow, PolicyStore, RouteLogRow, SpeedRow};
pub use records::*;
pub use retention::{
    RetentionOutcome, RetentionPlan, RetentionPolicy, run_retention, spawn_retention,
};
pub use store::{
    Backend, CAPTURE_ROW_CAP_BYTES, DEFAULT_STORE_URL, FAVORITES_KEY, RetentionLock,
    RetentionState, STORE_ENV, Store, bucket_5m, open, store_url,
};
pub use writer::{BatchConfig, BatchWriter, BatchWriterHandle, WriterStats};
