//! # boo-bench
//!
//! Speed benchmarks of the fleet, safe by construction: a YAML [`Suite`] (a grid of prompt
//! length × output length × load level), an [`Engine`] that gates every run through
//! [`boo_fleet_core::HostAccess`], refuses hosts with recent foreign traffic unless told to take
//! over, loads the model before measuring (load time reported separately), runs local hosts
//! serially and cloud targets in parallel, and marks results polluted when a swap or foreign
//! traffic happens during the run. Raw per-request timestamps are kept; metrics (TTFT, TPOT,
//! ITL, E2E, tok/s, p50/p90/p99/mean/std/min/max) are computed afterwards ([`metrics`]), and
//! runs compare against baselines per cell ([`compare_runs`]).
//!
//! IO goes through small traits: [`BenchClient`] (the real one is [`HttpClient`], hyper with
//! streaming SSE), [`ModelLoader`] and [`FleetWatch`] (the gateway implements them from its fleet
//! hub; [`NoFleet`] is the no-fleet stand-in).
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use boo_bench::{Engine, HostKind, HttpClient, NoFleet, RunRequest, Suite, Target};
//! use boo_fleet_core::{InMemoryHostAccess, Lane};
//!
//! # #[tokio::main] async fn main() -> Result<(), boo_bench::BenchError> {
//! let suite = Suite::from_yaml(
//!     "name: quick\ngrid:\n  prompt_tokens: [128]\n  max_tokens: [64]\n  concurrency: [1, 4]\n",
//! )?;
//! let target = Target {
//!     id: "gpu-box/qwen3-4b".into(),
//!     provider: "gpu-box".into(),
//!     model: "qwen3-4b".into(),
//!     base_url: "http://127.0.0.1:8080".into(),
//!     kind: HostKind::LlamaSwap,
//!     lane: Lane::Local,
//!     cloud_budget: None,
//!     api_key: None,
//! };
//! let engine = Engine::new(
//!     Arc::new(HttpClient::new()),
//!     Arc::new(InMemoryHostAccess::new(60_000)),
//!     Arc::new(NoFleet),
//!     Arc::new(NoFleet),
//! );
//! let req = RunRequest { id: "run-1".into(), suite, targets: vec![target], takeover: false };
//! let result = engine.run(req, &|p: &boo_bench::Progress| eprintln!("{p:?}")).await?;
//! for cell in &result.targets[0].cells {
//!     println!("{}: TTFT p50 {:.1} ms, {:.1} tok/s", cell.key, cell.metrics.ttft_ms.p50, cell.metrics.gen_tps.p50);
//! }
//! # Ok(()) }
//! ```

pub mod chart;
mod engine;
mod error;
mod http;
mod io;
mod loader;
pub mod metrics;
mod model;
pub mod persist;
mod prompt;
pub mod regress;
pub mod report;
pub mod sched;
mod suite;

pub use engine::{
    CancelHandle, Engine, EngineOptions, LEASE_PURPOSE, PreparedRun, RunRequest, WallClock,
};
pub use error::BenchError;
pub use http::{EventInfo, HttpClient, parse_sse_event};
pub use io::{
    BenchClient, BenchRequest, FleetWatch, ModelLoader, NoFleet, Observation, ProgressSink,
    RUN_HEADER, WatchReport, WatchSession,
};
pub use loader::HttpLoader;
pub use model::{
    CellMetrics, CellResult, ClientInfo, HostKind, LoadReport, Phase, Pollution, Progress,
    RESULT_SCHEMA_VERSION, RunResult, RunStatus, Sample, ServerTimings, Stats, StopReason, Target,
    TargetResult,
};
pub use prompt::{PromptBook, filler_text};
pub use regress::{
    CellComparison, CellRatios, Comparison, Thresholds, Verdict, compare_cell, compare_runs,
};
pub use suite::{Api, CachePolicy, CellLoad, CellSpec, Grid, Limits, LoadMode, Suite};
