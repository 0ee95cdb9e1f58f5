//! Shared harness: one store per test, SQLite in a temp dir or Postgres in its own schema.
#![allow(dead_code)]

use std::sync::Arc;

use boo_telemetry_store::postgres::PgStore;
use boo_telemetry_store::*;
use chrono::{DateTime, Duration, Utc};

/// A store under test plus the means to reopen it (restart) and clean up.
pub struct Harness {
    pub store: Arc<dyn Store>,
    pub kind: Backend,
    sqlite_dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl Harness {
    pub async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/boo.db", dir.path().display());
        let store = open(&url).await.unwrap();
        Harness {
            store,
            kind: Backend::Sqlite,
            sqlite_dir: Some(dir),
            pg: None,
        }
    }

    pub async fn pg() -> Option<Harness> {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            eprintln!("skipping Postgres: DATABASE_URL unset");
            return None;
        };
        let schema = format!("boo_test_{:016x}", rand::random::<u64>());
        let store = PgStore::open_in_schema(&url, &schema).await.unwrap();
        Some(Harness {
            store: Arc::new(store),
            kind: Backend::Postgres,
            sqlite_dir: None,
            pg: Some((url, schema)),
        })
    }

    /// Open a second, independent handle on the same database (another process / a restart).
    pub async fn open_again(&self) -> Arc<dyn Store> {
        if let Some(dir) = &self.sqlite_dir {
            open(&format!("sqlite://{}/boo.db", dir.path().display()))
                .await
                .unwrap()
        } else {
            let (url, schema) = self.pg.as_ref().unwrap();
            Arc::new(PgStore::open_in_schema(url, schema).await.unwrap())
        }
    }

    /// Close the store and open it again (simulates a process restart).
    pub async fn restart(&mut self) {
        self.store.close().await;
        self.store = self.open_again().await;
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.pg.take() {
            // Drop the schema from a separate thread with its own runtime (we may be inside one).
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let _ = PgStore::drop_schema(&url, &schema).await;
                });
            })
            .join();
        }
    }
}

/// Run `$body` against SQLite always and Postgres when `DATABASE_URL` is set.
#[macro_export]
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = $crate::common::Harness::sqlite().await;
                    super::$name(h).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(h) = $crate::common::Harness::pg().await else { return };
                    super::$name(h).await;
                }
            )*
        }
    };
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

pub fn req(id: &str, secs: i64, provider: &str, source: Option<&str>) -> RequestRecord {
    RequestRecord {
        request_id: id.into(),
        ts: at(secs),
        provider_id: provider.into(),
        model: format!("{provider}/qwen"),
        wire_model: Some("qwen".into()),
        source: source.map(Into::into),
        path: "/v1/chat/completions".into(),
        status: 200,
        error_class: None,
        ttft_ms: Some(100.0),
        duration_ms: 1000.0,
        prompt_tokens: Some(10),
        cached_tokens: Some(2),
        completion_tokens: Some(5),
        prompt_tps: Some(300.0),
        gen_tps: Some(50.0),
        bytes_in: 100,
        bytes_out: 200,
        stream: true,
        route: Some(serde_json::json!({"policy": "auto", "attempts": [provider]}).into()),
    }
}

pub fn act(provider: &str, upstream_id: i64, secs: i64) -> HostActivity {
    HostActivity {
        provider_id: provider.into(),
        upstream_id,
        ts: at(secs),
        model: "qwen".into(),
        path: Some("/v1/chat/completions".into()),
        status: Some(200),
        duration_ms: Some(800.0),
        prompt_tokens: Some(11),
        cached_tokens: None,
        completion_tokens: Some(6),
        prompt_tps: None,
        gen_tps: Some(40.0),
        has_capture: false,
    }
}

pub fn perf(provider: &str, ts: DateTime<Utc>, temp: f64) -> PerfSample {
    PerfSample {
        provider_id: provider.into(),
        ts,
        gpu: serde_json::json!([{"id": 0, "temp_c": temp, "mem_used_mb": 1000.0 + temp}]),
        sys: serde_json::json!({"load_avg_1": temp / 100.0}),
    }
}

/// Wraps a store; while "down", every insert fails as if the database were unreachable.
pub struct FlakyStore {
    inner: Arc<dyn Store>,
    down: std::sync::atomic::AtomicBool,
    /// Every `writes_backlogged` call, in order.
    pub backlog_calls: std::sync::Mutex<Vec<bool>>,
}

impl FlakyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            down: std::sync::atomic::AtomicBool::new(false),
            backlog_calls: std::sync::Mutex::new(Vec::new()),
        }
    }
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
    fn check(&self) -> Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            Err(StoreError::Unavailable("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

use std::collections::BTreeMap;

#[async_trait::async_trait]
impl PolicyStore for FlakyStore {
    async fn route_policies(&self) -> Result<Vec<PolicyRow>> {
        self.inner.route_policies().await
    }
    async fn put_route_policy(&self, name: &str, policy: &serde_json::Value) -> Result<()> {
        self.inner.put_route_policy(name, policy).await
    }
    async fn delete_route_policy(&self, name: &str) -> Result<bool> {
        self.inner.delete_route_policy(name).await
    }
    async fn route_log(&self, policy: Option<&str>, limit: u32) -> Result<Vec<RouteLogRow>> {
        self.inner.route_log(policy, limit).await
    }
    async fn model_speeds(&self, since: DateTime<Utc>) -> Result<Vec<SpeedRow>> {
        self.inner.model_speeds(since).await
    }
}

/// Bench storage is not exercised through the outage wrapper (default bodies answer Unavailable).
impl BenchStore for FlakyStore {}

#[async_trait::async_trait]
impl Store for FlakyStore {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    fn writes_backlogged(&self, backlogged: bool) {
        self.backlog_calls.lock().unwrap().push(backlogged);
        self.inner.writes_backlogged(backlogged);
    }
    async fn insert_requests(&self, rows: &[RequestRecord]) -> Result<u64> {
        self.check()?;
        self.inner.insert_requests(rows).await
    }
    async fn insert_activity(&self, rows: &[HostActivity]) -> Result<u64> {
        self.check()?;
        self.inner.insert_activity(rows).await
    }
    async fn insert_perf(&self, rows: &[PerfSample]) -> Result<u64> {
        self.check()?;
        self.inner.insert_perf(rows).await
    }
    async fn insert_model_events(&self, rows: &[ModelEvent]) -> Result<u64> {
        self.check()?;
        self.inner.insert_model_events(rows).await
    }
    async fn upsert_host(&self, host: &HostRow) -> Result<()> {
        self.inner.upsert_host(host).await
    }
    async fn hosts(&self) -> Result<Vec<HostRow>> {
        self.inner.hosts().await
    }
    async fn setting(&self, key: &str) -> Result<Option<serde_json::Value>> {
        self.inner.setting(key).await
    }
    async fn settings(&self) -> Result<BTreeMap<String, serde_json::Value>> {
        self.inner.settings().await
    }
    async fn patch_settings(&self, patch: &BTreeMap<String, serde_json::Value>) -> Result<()> {
        self.inner.patch_settings(patch).await
    }
    async fn insert_capture(&self, c: &NewCapture, cap: usize) -> Result<i64> {
        self.inner.insert_capture(c, cap).await
    }
    async fn capture(&self, id: i64) -> Result<Option<Capture>> {
        self.inner.capture(id).await
    }
    async fn captures_for_request(&self, id: &str) -> Result<Vec<Capture>> {
        self.inner.captures_for_request(id).await
    }
    async fn feed(&self, f: &FeedFilter, c: Option<&FeedCursor>, l: u32) -> Result<FeedPage> {
        self.inner.feed(f, c, l).await
    }
    async fn usage(
        &self,
        g: UsageGroup,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>> {
        self.inner.usage(g, from, to).await
    }
    async fn latest_model_states(&self) -> Result<Vec<ModelState>> {
        self.inner.latest_model_states().await
    }
    async fn last_activity(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        self.inner.last_activity().await
    }
    async fn activity_watermark(&self, p: &str) -> Result<Option<(i64, DateTime<Utc>)>> {
        self.inner.activity_watermark(p).await
    }
    async fn latest_perf(&self) -> Result<Vec<PerfSample>> {
        self.inner.latest_perf().await
    }
    async fn perf_watermarks(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        self.inner.perf_watermarks().await
    }
    async fn perf_watermark(&self, p: &str) -> Result<Option<DateTime<Utc>>> {
        self.inner.perf_watermark(p).await
    }
    async fn retention_state(&self) -> Result<RetentionState> {
        self.inner.retention_state().await
    }
    async fn perf_samples(
        &self,
        p: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PerfSample>> {
        self.inner.perf_samples(p, from, to).await
    }
    async fn upsert_rollups(&self, rows: &[PerfRollup]) -> Result<u64> {
        self.check()?;
        self.inner.upsert_rollups(rows).await
    }
    async fn rollups(
        &self,
        p: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PerfRollup>> {
        self.inner.rollups(p, from, to).await
    }
    async fn delete_rolled_up_perf(
        &self,
        p: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64> {
        self.inner.delete_rolled_up_perf(p, from, to).await
    }
    async fn delete_requests(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64> {
        self.inner.delete_requests(from, to).await
    }
    async fn delete_activity(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64> {
        self.inner.delete_activity(from, to).await
    }
    async fn prune_captures(&self, budget: i64) -> Result<u64> {
        self.inner.prune_captures(budget).await
    }
    async fn try_retention_lock(&self) -> Result<Option<Box<dyn RetentionLock>>> {
        self.inner.try_retention_lock().await
    }
    async fn record_retention_run(
        &self,
        s: DateTime<Utc>,
        f: DateTime<Utc>,
        sum: &str,
    ) -> Result<()> {
        self.inner.record_retention_run(s, f, sum).await
    }
    async fn last_retention_run(&self) -> Result<Option<DateTime<Utc>>> {
        self.inner.last_retention_run().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

/// (thread name, nice, scheduling policy) of every thread of this process, from
/// `/proc/self/task/<tid>/stat` (policy: 0 normal, 5 `SCHED_IDLE`).
#[cfg(target_os = "linux")]
pub fn thread_stats() -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue; // the thread exited meanwhile
        };
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        // Fields after the name start at field 3 (state): nice is field 19, policy field 41.
        let field =
            |n: usize| -> i64 { rest.split_whitespace().nth(n - 3).unwrap().parse().unwrap() };
        out.push((name, field(19), field(41)));
    }
    out
}

/// (thread name, nice) of every thread of this process.
#[cfg(target_os = "linux")]
pub fn thread_nices() -> Vec<(String, i64)> {
    thread_stats()
        .into_iter()
        .map(|(n, nice, _)| (n, nice))
        .collect()
}
