//! Store outage: the gateway keeps serving while the store is down, buffered records catch up
//! when it returns, and drops beyond the buffer are counted on `/metrics`.

mod common;

use async_trait::async_trait;
use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, start_host};
use boo_gateway_http::{RunOptions, StoreOptions, StoreTarget};
use boo_telemetry_store::*;
use chrono::{DateTime, Utc};
use common::{get, post};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A SQLite store whose request inserts and feed reads fail while `down` is set.
struct Outage {
    inner: Arc<dyn Store>,
    down: AtomicBool,
}

#[async_trait::async_trait]
impl PolicyStore for Outage {
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

/// Bench storage is not exercised here (default bodies answer Unavailable).
impl boo_telemetry_store::BenchStore for Outage {}

#[async_trait]
impl Store for Outage {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    async fn insert_requests(&self, rows: &[RequestRecord]) -> Result<u64> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test outage".into()));
        }
        self.inner.insert_requests(rows).await
    }
    async fn insert_activity(&self, rows: &[HostActivity]) -> Result<u64> {
        self.inner.insert_activity(rows).await
    }
    async fn insert_perf(&self, rows: &[PerfSample]) -> Result<u64> {
        self.inner.insert_perf(rows).await
    }
    async fn insert_model_events(&self, rows: &[ModelEvent]) -> Result<u64> {
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
    async fn insert_capture(&self, capture: &NewCapture, row_cap_bytes: usize) -> Result<i64> {
        self.inner.insert_capture(capture, row_cap_bytes).await
    }
    async fn capture(&self, id: i64) -> Result<Option<Capture>> {
        self.inner.capture(id).await
    }
    async fn captures_for_request(&self, request_id: &str) -> Result<Vec<Capture>> {
        self.inner.captures_for_request(request_id).await
    }
    async fn feed(
        &self,
        filter: &FeedFilter,
        cursor: Option<&FeedCursor>,
        limit: u32,
    ) -> Result<FeedPage> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("test outage".into()));
        }
        self.inner.feed(filter, cursor, limit).await
    }
    async fn usage(
        &self,
        group: UsageGroup,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>> {
        self.inner.usage(group, from, to).await
    }
    async fn latest_model_states(&self) -> Result<Vec<ModelState>> {
        self.inner.latest_model_states().await
    }
    async fn last_activity(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        self.inner.last_activity().await
    }
    async fn activity_watermark(&self, provider_id: &str) -> Result<Option<(i64, DateTime<Utc>)>> {
        self.inner.activity_watermark(provider_id).await
    }
    async fn latest_perf(&self) -> Result<Vec<PerfSample>> {
        self.inner.latest_perf().await
    }
    async fn perf_watermarks(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        self.inner.perf_watermarks().await
    }
    async fn perf_watermark(&self, provider_id: &str) -> Result<Option<DateTime<Utc>>> {
        self.inner.perf_watermark(provider_id).await
    }
    async fn retention_state(&self) -> Result<RetentionState> {
        self.inner.retention_state().await
    }
    async fn perf_samples(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PerfSample>> {
        self.inner.perf_samples(provider_id, from, to).await
    }
    async fn upsert_rollups(&self, rows: &[PerfRollup]) -> Result<u64> {
        self.inner.upsert_rollups(rows).await
    }
    async fn rollups(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PerfRollup>> {
        self.inner.rollups(provider_id, from, to).await
    }
    async fn delete_rolled_up_perf(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64> {
        self.inner
            .delete_rolled_up_perf(provider_id, from, to)
            .await
    }
    async fn delete_requests(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64> {
        self.inner.delete_requests(from, to).await
    }
    async fn delete_activity(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64> {
        self.inner.delete_activity(from, to).await
    }
    async fn prune_captures(&self, budget_bytes: i64) -> Result<u64> {
        self.inner.prune_captures(budget_bytes).await
    }
    async fn try_retention_lock(&self) -> Result<Option<Box<dyn RetentionLock>>> {
        self.inner.try_retention_lock().await
    }
    async fn record_retention_run(
        &self,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        summary: &str,
    ) -> Result<()> {
        self.inner
            .record_retention_run(started, finished, summary)
            .await
    }
    async fn last_retention_run(&self) -> Result<Option<DateTime<Utc>>> {
        self.inner.last_retention_run().await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[tokio::test]
async fn gateway_keeps_serving_while_the_store_is_down_and_metrics_count_drops() {
    let sim = start_host(
        HostSpec::llama_swap("sam", ApiGen::Current, vec![ModelSpec::new("alpha")])
            .with_time_scale(0.001),
    )
    .await
    .expect("sim host");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("boo.db").display());
    let outage = Arc::new(Outage {
        inner: boo_telemetry_store::open(&url).await.unwrap(),
        down: AtomicBool::new(true),
    });
    let doc = json!({"providers": [
        {"id": "sam", "label": "Sam", "kind": "llama-swap", "base_url": sim.base_url(), "default": true}
    ]});
    let reg = boo_provider_registry::from_json_str(
        &doc.to_string(),
        &boo_provider_registry::MapEnv::new(),
    )
    .unwrap()
    .registry;
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.store = Some(StoreOptions {
        store: StoreTarget::Open(outage.clone()),
        batch: BatchConfig {
            capacity: 8,
            max_batch: 4,
            flush_interval: Duration::from_millis(20),
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(100),
            ..BatchConfig::default()
        },
        retention: None,
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));

    let body = json!({"model": "sam/alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).to_string();
    const N: u64 = 60;
    for _ in 0..N {
        let (s, _, b) = post(
            addr,
            "/v1/chat/completions",
            &[("x-boo-source", "outage")],
            &body,
        )
        .await;
        assert_eq!(s, 200, "the gateway serves while the store is down: {b:?}");
    }
    let (_, m) = get(addr, "/metrics").await;
    let m = String::from_utf8_lossy(&m).to_string();
    let dropped = counter(&m, "boo_telemetry_dropped_total");
    let accepted = counter(&m, "boo_telemetry_accepted_total");
    assert!(dropped > 0, "a full buffer drops and counts: {m}");
    assert_eq!(accepted + dropped, N);
    assert!(counter(&m, "boo_telemetry_flush_errors_total") > 0);
    // Reads fail cleanly while the store is down.
    let (s, b) = get(addr, "/api/activity").await;
    assert_eq!(s, 503, "{b:?}");

    // The store comes back: everything accepted is written, nothing twice.
    outage.down.store(false, Ordering::SeqCst);
    let mut stored = 0;
    for _ in 0..500 {
        let page = outage
            .inner
            .feed(
                &FeedFilter {
                    source: Some("outage".into()),
                    ..Default::default()
                },
                None,
                1000,
            )
            .await
            .unwrap();
        stored = page.rows.len() as u64;
        if stored >= accepted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored, accepted, "buffered records catch up without loss");
    let _ = tx.send(());
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
