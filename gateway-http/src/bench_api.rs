//! Speed benchmarks run inside the gateway (`/api/bench/…`).
//!
//! The gateway owns what a safe run needs: the `HostAccess`
//! leases and the live fleet ([`ControlApi`]), the registry that resolves composite target ids,
//! and the telemetry store. [`BenchApi`] wires them into a [`boo_bench::Engine`]:
//!
//! * **model loading** ([`boo_bench::ModelLoader`]): the fleet's `warm` action, then waiting
//!   until the hub shows the model `ready`; the load time is reported apart from every cell;
//! * **foreign traffic** ([`boo_bench::FleetWatch`]): requests on the host that are not this
//!   run's — host activity rows (llama-swap) minus the requests this run completed, or
//!   gateway-proxied requests to that provider, whichever is larger — plus the host's
//!   in-flight count before the run; **swaps**: model-state deltas on the host during the run;
//!   without a telemetry store only the host's in-flight count is seen, runs are kept in
//!   memory and baselines are refused (503);
//! * **progress**: every engine [`boo_bench::Progress`] goes out as `event: bench_progress` on
//!   `/api/fleet/stream`.
//!
//! | route | |
//! | --- | --- |
//! | `POST /api/bench/runs` | `{"suite": "<yaml>" \| {...}, "targets": ["provider/model", ...], "takeover": false}` → 202 `{"id", "status": "running"}`; 409 when a host is leased, 409 with `requiresConfirmation: true` when it served foreign traffic recently and `takeover` is false. Admin token required. |
//! | `GET /api/bench/runs` | `?suite=&target=&cursor=&limit=` newest first |
//! | `GET /api/bench/runs/{id}` | run row, cells, live progress, the result (`?samples=true` for raw samples) |
//! | `POST /api/bench/baselines` | `{"run": "<id>"}` marks every cell of a finished run as baseline. Admin token required. |
//! | `GET /api/bench/baselines` | `?suite=` |
//! | `GET /api/bench/history` | `?target=provider/model&suite=&limit=`: gen tok/s per cell over time with regression flags |

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use boo_bench::chart::HistoryPoint;
use boo_bench::{
    BenchClient, BenchError, BenchRequest, Engine, EngineOptions, FleetWatch, HttpClient,
    LoadReport, ModelLoader, Observation, Progress, RunRequest, RunResult, Suite, Target,
    WatchReport, WatchSession, persist,
};
use boo_fleet_core::{Action, Change, HostAccess, ModelState};
use boo_provider_registry::{ProviderKind, Registry};
use boo_telemetry_store::{
    BenchRunCursor, BenchRunFilter, BenchRunRow, FeedFilter, FeedOrigin, Store,
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::control::{ControlApi, now_ms};

/// Largest accepted request body (suites are small).
const MAX_BODY: usize = 1024 * 1024;
/// How long a model may take to load before the run fails.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a watch report waits for the host's activity rows to reach the store, and the
/// polling step (the count must hold still for one step).
const SETTLE_MAX: Duration = Duration::from_secs(3);
const SETTLE_STEP: Duration = Duration::from_millis(100);
/// Finished runs kept in memory (progress and results of store-less gateways).
const KEEP_FINISHED: usize = 64;
/// Host activity id ranges of past runs kept for the takeover rule.
const KEEP_RANGES: usize = 1024;
/// Activity within this long after a run's end still counts as that run's own.
const OWN_GRACE_MS: u64 = 3_000;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A run the gateway started (kept in memory for progress and store-less gateways).
#[derive(Debug, Clone)]
struct LiveRun {
    row: BenchRunRow,
    progress: Option<Progress>,
    result: Option<Arc<RunResult>>,
}

/// State shared by the API, the engine's IO adapters and the run tasks.
struct Shared {
    control: ControlApi,
    store: Option<Arc<dyn Store>>,
    /// Requests each run completed per provider (`(run id, provider)`).
    own: Mutex<HashMap<(String, String), u64>>,
    /// Bench runs per provider: (start ms, end ms or `None` while running).
    windows: Mutex<Vec<(String, u64, Option<u64>)>>,
    /// Host activity ids seen by bench runs per provider: (provider, after, up to).
    ranges: Mutex<Vec<(String, i64, i64)>>,
    /// Host activity watermark per (run, provider) when the run was admitted: its warm-up
    /// and calibration requests come after it.
    run_start: Mutex<HashMap<(String, String), i64>>,
    live: Mutex<HashMap<String, LiveRun>>,
}

/// The bench API. Build with [`BenchApi::new`], hand to [`crate::Gateway::with_bench`].
pub struct BenchApi {
    shared: Arc<Shared>,
    registry: Arc<Registry>,
    engine: Engine,
    counter: AtomicU64,
}

impl std::fmt::Debug for BenchApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchApi").finish_non_exhaustive()
    }
}

impl BenchApi {
    /// A bench API over the gateway's control plane, registry and (optional) store, with the
    /// engine's default options.
    pub fn new(
        control: ControlApi,
        registry: Arc<Registry>,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        Self::with_options(control, registry, store, EngineOptions::default())
    }

    /// Like [`BenchApi::new`] with engine options (e.g. a shorter takeover window in tests).
    pub fn with_options(
        control: ControlApi,
        registry: Arc<Registry>,
        store: Option<Arc<dyn Store>>,
        opts: EngineOptions,
    ) -> Self {
        let shared = Arc::new(Shared {
            control: control.clone(),
            store,
            own: Mutex::new(HashMap::new()),
            windows: Mutex::new(Vec::new()),
            ranges: Mutex::new(Vec::new()),
            run_start: Mutex::new(HashMap::new()),
            live: Mutex::new(HashMap::new()),
        });
        let access: Arc<dyn HostAccess + Send + Sync> = control.host_access();
        let engine = Engine::new(
            Arc::new(CountingClient {
                inner: HttpClient::new(),
                shared: shared.clone(),
            }),
            access,
            Arc::new(FleetLoader {
                shared: shared.clone(),
            }),
            Arc::new(GatewayWatch {
                shared: shared.clone(),
            }),
        )
        .with_options(opts);
        BenchApi {
            shared,
            registry,
            engine,
            counter: AtomicU64::new(0),
        }
    }

    /// Whether `path` is a bench route.
    pub fn serves(path: &str) -> bool {
        path == "/api/bench" || path.starts_with("/api/bench/")
    }

    /// Answers a bench request.
    pub async fn handle<B, R>(&self, req: http::Request<B>) -> Response<R>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        R: From<Bytes>,
    {
        let authorized = self.authorized(req.headers());
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().map(str::to_owned);
        let q = query.as_deref();
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let (status, v) = match (&parts.method, segs.as_slice()) {
            (&Method::POST, ["api", "bench", "runs" | "baselines"]) if !authorized => (
                401,
                err_body(
                    "authentication_error",
                    "this endpoint requires Authorization: Bearer <gateway.admin_token>",
                ),
            ),
            (&Method::POST, ["api", "bench", route @ ("runs" | "baselines")]) => {
                match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_BODY))
                    .await
                {
                    Ok(b) if *route == "runs" => self.start(&b.to_bytes()).await,
                    Ok(b) => self.set_baseline(&b.to_bytes()).await,
                    Err(e) => bad(&format!(
                        "body: could not read it (limit {MAX_BODY} bytes): {e}"
                    )),
                }
            }
            (&Method::GET, ["api", "bench", "runs"]) => self.list(q).await,
            (&Method::GET, ["api", "bench", "runs", id]) => self.get(id, q).await,
            (&Method::GET, ["api", "bench", "baselines"]) => self.baselines(q).await,
            (&Method::GET, ["api", "bench", "history"]) => self.history(q).await,
            (_, ["api", "bench", "runs" | "baselines" | "history", ..]) => (
                405,
                err_body(
                    "invalid_request_error",
                    &format!("method {} not allowed on {path}", parts.method),
                ),
            ),
            _ => (
                404,
                err_body("not_found_error", &format!("no bench route {path}")),
            ),
        };
        let mut r = Response::new(R::from(Bytes::from(v.to_string())));
        *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        r
    }

    fn authorized(&self, h: &http::HeaderMap) -> bool {
        use subtle::ConstantTimeEq as _;
        let Some(token) = self.shared.control.shared.cfg.admin_token.as_deref() else {
            return true;
        };
        let Some(given) = h
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        bool::from(given.as_bytes().ct_eq(token.as_bytes()))
    }

    /// Resolves a composite id through the registry into an engine target.
    fn target(&self, i: usize, id: &str) -> Result<Target, String> {
        let field = format!("targets[{i}]");
        let res = self
            .registry
            .resolve(id, None)
            .map_err(|e| format!("{field}: {e}"))?;
        let kind = match (res.kind, res.target.via_sidecar) {
            (ProviderKind::Gateway, _) => {
                return Err(format!(
                    "{field}: `{id}` is served by another gateway; benchmark it there"
                ));
            }
            (_, true) | (ProviderKind::LlamaServer, _) => boo_bench::HostKind::LlamaServer,
            (ProviderKind::LlamaSwap, _) => boo_bench::HostKind::LlamaSwap,
            _ => boo_bench::HostKind::Openai,
        };
        let mut base = res.target.base_url.trim_end_matches('/').to_owned();
        if res.kind.base_includes_version()
            && let Some(b) = base.strip_suffix("/v1")
        {
            base = b.to_owned();
        }
        let api_key = res
            .target
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            .and_then(|(_, v)| v.expose().strip_prefix("Bearer ").map(str::to_owned));
        Ok(Target {
            id: res.model.to_string(),
            provider: res.provider.as_str().to_owned(),
            model: res.wire_model.clone(),
            base_url: base,
            kind,
            lane: match res.lane {
                boo_provider_registry::Lane::Local => boo_fleet_core::Lane::Local,
                boo_provider_registry::Lane::Cloud => boo_fleet_core::Lane::Cloud,
            },
            cloud_budget: None,
            api_key,
        })
    }

    async fn start(&self, body: &[u8]) -> (u16, Value) {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return bad(&format!("body: expected a JSON object: {e}")),
        };
        let (suite_text, suite) = match v.get("suite") {
            Some(Value::String(s)) => (s.clone(), Suite::from_yaml(s)),
            Some(o @ Value::Object(_)) => {
                let s = o.to_string();
                (s.clone(), Suite::from_yaml(&s))
            }
            _ => return bad("suite: required, the suite YAML as a string or a JSON object"),
        };
        let suite = match suite {
            Ok(s) => s,
            Err(e) => return bad(&e.to_string()),
        };
        let Some(ids) = v.get("targets").and_then(Value::as_array) else {
            return bad("targets: required, an array of composite model ids");
        };
        let mut targets = Vec::new();
        for (i, t) in ids.iter().enumerate() {
            let Some(id) = t.as_str() else {
                return bad(&format!(
                    "targets[{i}]: expected a string like provider/model"
                ));
            };
            match self.target(i, id) {
                Ok(t) => targets.push(t),
                Err(e) => return bad(&e),
            }
        }
        let takeover = match v.get("takeover") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return bad("takeover: expected true or false"),
        };
        let id = match v.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => format!(
                "b{}-{}",
                Utc::now().format("%Y%m%d-%H%M%S"),
                self.counter.fetch_add(1, Ordering::Relaxed)
            ),
        };
        let stored = match &self.shared.store {
            Some(store) => matches!(store.bench_run(&id).await, Ok(Some(_))),
            None => false,
        };
        if stored || lock(&self.shared.live).contains_key(&id) {
            return (
                409,
                err_body("conflict_error", &format!("id: run {id:?} already exists")),
            );
        }
        let providers: Vec<String> = {
            let mut p: Vec<String> = Vec::new();
            for t in &targets {
                if !p.contains(&t.provider) {
                    p.push(t.provider.clone());
                }
            }
            p
        };
        let prepared = match self
            .engine
            .prepare(RunRequest {
                id: id.clone(),
                suite: suite.clone(),
                targets: targets.clone(),
                takeover,
            })
            .await
        {
            Ok(p) => p,
            Err(e) => return bench_error(&e),
        };
        // the lease shows on the fleet stream; activity from now on is this run's own
        for p in &providers {
            self.shared.control.sync_lease(p);
        }
        let watch = GatewayWatch {
            shared: self.shared.clone(),
        };
        for p in &providers {
            let wm = watch.watermark(p).await.unwrap_or(-1);
            lock(&self.shared.run_start).insert((id.clone(), p.clone()), wm);
        }
        let started = now_ms();
        lock(&self.shared.windows).extend(providers.iter().map(|p| (p.clone(), started, None)));
        let row = persist::started_row(&id, &suite, &targets, Utc::now());
        if let Some(store) = &self.shared.store {
            let suite_row = persist::suite_row(&suite, &suite_text, Utc::now());
            if let Err(e) = store.put_bench_suite(&suite_row).await {
                tracing::warn!(run = %id, error = %e, "storing bench suite failed");
            }
            if let Err(e) = store.insert_bench_run(&row).await {
                tracing::warn!(run = %id, error = %e, "storing bench run failed");
            }
        }
        lock(&self.shared.live).insert(
            id.clone(),
            LiveRun {
                row: row.clone(),
                progress: None,
                result: None,
            },
        );
        let shared = self.shared.clone();
        let run_id = id.clone();
        tokio::spawn(async move {
            let sink_shared = shared.clone();
            let sink = move |p: &Progress| {
                sink_shared.control.hub().publish_event("bench_progress", p);
                if let Some(l) = lock(&sink_shared.live).get_mut(&p.run_id) {
                    l.progress = Some(p.clone());
                }
            };
            let result = prepared.execute(&sink).await;
            finish(&shared, &run_id, &providers, result, &suite_text).await;
        });
        (
            202,
            json!({"id": id, "status": "running", "targets": targets.iter().map(|t| &t.id).collect::<Vec<_>>()}),
        )
    }

    async fn list(&self, q: Option<&str>) -> (u16, Value) {
        let filter = BenchRunFilter {
            suite: param(q, "suite"),
            target: param(q, "target"),
        };
        let limit = match param(q, "limit").map(|l| l.parse::<u32>()) {
            None => 50,
            Some(Ok(n)) => n,
            Some(Err(_)) => return bad("limit: expected a positive integer"),
        };
        let cursor = match param(q, "cursor").map(|c| BenchRunCursor::decode(&c)) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => return bad(&e.to_string()),
        };
        let Some(store) = &self.shared.store else {
            let live = lock(&self.shared.live);
            let mut runs: Vec<&LiveRun> = live
                .values()
                .filter(|r| filter.suite.as_ref().is_none_or(|s| *s == r.row.suite))
                .filter(|r| {
                    filter
                        .target
                        .as_ref()
                        .is_none_or(|t| r.row.targets.iter().any(|x| x.target == *t))
                })
                .collect();
            runs.sort_by(|a, b| (b.row.started_at, &b.row.id).cmp(&(a.row.started_at, &a.row.id)));
            let rows: Vec<Value> = runs
                .iter()
                .take(limit.clamp(1, 1000) as usize)
                .map(|r| run_json(&r.row, r.progress.as_ref()))
                .collect();
            return (200, json!({"runs": rows, "next": null}));
        };
        match store.bench_runs(&filter, cursor.as_ref(), limit).await {
            Ok(page) => {
                let live = lock(&self.shared.live);
                let rows: Vec<Value> = page
                    .runs
                    .iter()
                    .map(|r| run_json(r, live.get(&r.id).and_then(|l| l.progress.as_ref())))
                    .collect();
                (
                    200,
                    json!({"runs": rows, "next": page.next.map(|c| c.encode())}),
                )
            }
            Err(e) => store_error(&e),
        }
    }

    async fn get(&self, id: &str, q: Option<&str>) -> (u16, Value) {
        let samples = param(q, "samples").as_deref() == Some("true");
        let live = lock(&self.shared.live).get(id).cloned();
        let mut out = match (&self.shared.store, &live) {
            (Some(store), _) => match store.bench_run(id).await {
                Ok(Some(d)) => json!({"run": run_json(&d.run, None), "cells": d.cells}),
                Ok(None) => match &live {
                    Some(l) => json!({"run": run_json(&l.row, None), "cells": []}),
                    None => return not_found(id),
                },
                Err(e) => return store_error(&e),
            },
            (None, Some(l)) => json!({"run": run_json(&l.row, None), "cells": []}),
            (None, None) => return not_found(id),
        };
        let progress = live.as_ref().and_then(|l| l.progress.clone());
        out["progress"] = json!(progress);
        let mut result = match &live {
            Some(l) if !l.row.summary.is_null() => Some(l.row.summary.clone()),
            _ => Some(out["run"]["summary"].clone()).filter(|s| !s.is_null()),
        };
        if samples && let Some(r) = result.as_mut() {
            let raw = match (
                live.as_ref().and_then(|l| l.result.clone()),
                &self.shared.store,
            ) {
                (Some(full), _) => serde_json::to_value(&full.samples).ok(),
                (None, Some(store)) => match persist::load_result(store.as_ref(), id).await {
                    Ok(full) => full.and_then(|f| serde_json::to_value(f.samples).ok()),
                    Err(e) => return store_error(&e),
                },
                (None, None) => None,
            };
            r["samples"] = raw.unwrap_or_else(|| json!([]));
        }
        if let Some(Value::Object(run)) = out.get_mut("run") {
            run.remove("summary");
        }
        out["result"] = result.unwrap_or(Value::Null);
        (200, out)
    }

    async fn set_baseline(&self, body: &[u8]) -> (u16, Value) {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return bad(&format!("body: expected {{\"run\": \"<id>\"}}: {e}")),
        };
        let Some(id) = v.get("run").and_then(Value::as_str) else {
            return bad("run: required, the id of a finished run");
        };
        let Some(store) = &self.shared.store else {
            return (
                503,
                err_body(
                    "unavailable_error",
                    "baselines need a telemetry store (--store)",
                ),
            );
        };
        let result = match persist::load_result(store.as_ref(), id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return match store.bench_run(id).await {
                    Ok(Some(_)) => (
                        409,
                        err_body("conflict_error", &format!("run: {id:?} has not finished")),
                    ),
                    _ => not_found(id),
                };
            }
            Err(e) => return store_error(&e),
        };
        match persist::set_baselines(store.as_ref(), &result, Utc::now()).await {
            Ok(n) => (200, json!({"run": id, "baselines_set": n})),
            Err(e) => store_error(&e),
        }
    }

    async fn baselines(&self, q: Option<&str>) -> (u16, Value) {
        let Some(store) = &self.shared.store else {
            return (200, json!({"baselines": []}));
        };
        match store.bench_baselines(param(q, "suite").as_deref()).await {
            Ok(b) => (200, json!({"baselines": b})),
            Err(e) => store_error(&e),
        }
    }

    async fn history(&self, q: Option<&str>) -> (u16, Value) {
        let Some(target) = param(q, "target") else {
            return bad("target: required, a composite id provider/model");
        };
        let Some(suite) = param(q, "suite") else {
            return bad("suite: required, a suite name");
        };
        let Some((provider, model)) = target.split_once('/') else {
            return bad("target: expected provider/model");
        };
        let limit = param(q, "limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(100);
        let drop = match param(q, "gen_tps_drop").map(|d| d.parse::<f64>()) {
            None => 0.10,
            Some(Ok(d)) if (0.0..1.0).contains(&d) => d,
            Some(_) => return bad("gen_tps_drop: expected a fraction within 0..1"),
        };
        let Some(store) = &self.shared.store else {
            return (200, json!({"points": []}));
        };
        let rows = match store.bench_history(provider, model, &suite, limit).await {
            Ok(r) => r,
            Err(e) => return store_error(&e),
        };
        let mut base: HashMap<String, (String, Option<f64>)> = HashMap::new();
        match store.bench_baselines(Some(&suite)).await {
            Ok(bs) => {
                for b in bs
                    .into_iter()
                    .filter(|b| b.provider == provider && b.model == model)
                {
                    let tps = match store.bench_run(&b.run_id).await {
                        Ok(Some(d)) => d
                            .cells
                            .iter()
                            .find(|c| c.cell_key == b.cell_key && c.target.ends_with(model))
                            .and_then(|c| c.gen_tps),
                        _ => None,
                    };
                    base.insert(b.cell_key.clone(), (b.run_id, tps));
                }
            }
            Err(e) => return store_error(&e),
        }
        let points: Vec<HistoryPoint> = rows
            .iter()
            .filter_map(|r| {
                let tps = r.gen_tps?;
                let b = base.get(&r.cell_key);
                Some(HistoryPoint {
                    run_id: r.run_id.clone(),
                    at_ms: r.started_at.timestamp_millis(),
                    series: r.cell_key.clone(),
                    gen_tps: tps,
                    regression: b
                        .and_then(|(_, bt)| *bt)
                        .is_some_and(|bt| tps < bt * (1.0 - drop)),
                    polluted: r.polluted,
                    baseline: b.is_some_and(|(id, _)| *id == r.run_id),
                })
            })
            .collect();
        (
            200,
            json!({"target": target, "suite": suite, "points": points}),
        )
    }
}

/// Persists a finished run and updates the in-memory view.
async fn finish(
    shared: &Shared,
    id: &str,
    providers: &[String],
    result: RunResult,
    suite_text: &str,
) {
    let end = now_ms();
    for w in lock(&shared.windows).iter_mut() {
        if providers.contains(&w.0) && w.2.is_none() {
            w.2 = Some(end);
        }
    }
    for p in providers {
        shared.control.sync_lease(p);
    }
    let mut extra = None;
    if let Some(store) = &shared.store {
        match persist::baseline_verdicts(store.as_ref(), &result).await {
            Ok(v) => extra = Some(json!({"baseline_verdicts": v})),
            Err(e) => tracing::warn!(run = %id, error = %e, "baseline comparison failed"),
        }
        if let Err(e) =
            persist::save_result(store.as_ref(), &result, Some(suite_text), extra.clone()).await
        {
            tracing::warn!(run = %id, error = %e, "storing bench result failed");
        }
    }
    let row = persist::finished_row(&result, extra);
    lock(&shared.own).retain(|(run, _), _| run != id);
    lock(&shared.run_start).retain(|(run, _), _| run != id);
    {
        let mut live = lock(&shared.live);
        if let Some(l) = live.get_mut(id) {
            l.row = row;
            l.result = Some(Arc::new(result));
        }
        // bounded memory: running runs plus the newest finished ones (the store keeps all)
        let mut done: Vec<(DateTime<Utc>, String)> = live
            .values()
            .filter(|l| l.result.is_some())
            .map(|l| (l.row.started_at, l.row.id.clone()))
            .collect();
        if done.len() > KEEP_FINISHED {
            done.sort();
            for (_, old) in &done[..done.len() - KEEP_FINISHED] {
                live.remove(old);
            }
        }
    }
    // runs that ended long ago no longer matter for the takeover rule
    lock(&shared.windows).retain(|(_, _, e)| e.is_none_or(|e| end.saturating_sub(e) < 3_600_000));
    let mut ranges = lock(&shared.ranges);
    let n = ranges.len();
    if n > KEEP_RANGES {
        ranges.drain(..n - KEEP_RANGES);
    }
}

fn run_json(r: &BenchRunRow, progress: Option<&Progress>) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        let verdicts = r.summary.get("baseline_verdicts").cloned();
        let regressions = verdicts.as_ref().and_then(Value::as_array).map(|a| {
            a.iter()
                .filter(|x| x["verdict"]["verdict"] == "regression")
                .count()
        });
        o.insert("regressions".into(), json!(regressions));
        if progress.is_some() {
            o.insert("progress".into(), json!(progress));
        }
    }
    v
}

fn param(q: Option<&str>, key: &str) -> Option<String> {
    q?.split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| pct_decode(v))
        .filter(|v| !v.is_empty())
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (_, Some(v)) => {
                out.push(v);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (c, None) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn err_body(kind: &str, message: &str) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
}

fn bad(message: &str) -> (u16, Value) {
    (400, err_body("invalid_request_error", message))
}

fn not_found(id: &str) -> (u16, Value) {
    (
        404,
        err_body("not_found_error", &format!("no bench run {id:?}")),
    )
}

fn store_error(e: &boo_telemetry_store::StoreError) -> (u16, Value) {
    (
        503,
        err_body("unavailable_error", &format!("telemetry store: {e}")),
    )
}

fn bench_error(e: &BenchError) -> (u16, Value) {
    if e.is_conflict() {
        let mut v = err_body("conflict_error", &e.to_string());
        v["requiresConfirmation"] = json!(e.requires_confirmation());
        if let BenchError::HostBusy {
            held_by: Some(l), ..
        } = e
        {
            v["lease"] = json!(l);
        }
        return (409, v);
    }
    match e {
        BenchError::SuiteParse(_)
        | BenchError::InvalidSuite { .. }
        | BenchError::InvalidRun { .. } => bad(&e.to_string()),
        _ => (500, err_body("server_error", &e.to_string())),
    }
}

/// The real HTTP client, counting the requests each run completed per provider.
struct CountingClient {
    inner: HttpClient,
    shared: Arc<Shared>,
}

#[async_trait]
impl BenchClient for CountingClient {
    async fn send(&self, target: &Target, req: &BenchRequest, origin: Instant) -> Observation {
        let o = self.inner.send(target, req, origin).await;
        if o.status != 0 {
            *lock(&self.shared.own)
                .entry((req.run_id.clone(), target.provider.clone()))
                .or_default() += 1;
        }
        o
    }

    async fn tokenize(&self, target: &Target, text: &str) -> Result<Option<u32>, BenchError> {
        self.inner.tokenize(target, text).await
    }
}

/// Loads through the fleet's `warm` action and waits for the hub to show the model ready.
struct FleetLoader {
    shared: Arc<Shared>,
}

impl FleetLoader {
    fn state(&self, t: &Target) -> Option<ModelState> {
        let host = self.shared.control.hub().host(&t.provider)?;
        host.models.get(&t.model).map(|m| m.state)
    }
}

#[async_trait]
impl ModelLoader for FleetLoader {
    async fn ensure_loaded(&self, t: &Target) -> Result<LoadReport, BenchError> {
        let control = &self.shared.control;
        let fail = |reason: String| BenchError::Load {
            provider: t.provider.clone(),
            model: t.model.clone(),
            reason,
        };
        let Some(actions) = control.shared.actions.get(&t.provider).cloned() else {
            // not a followed host (cloud): nothing to load
            return Ok(LoadReport {
                already_loaded: true,
                load_ms: 0.0,
            });
        };
        if self.state(t) == Some(ModelState::Ready) {
            return Ok(LoadReport {
                already_loaded: true,
                load_ms: 0.0,
            });
        }
        let t0 = Instant::now();
        let watch = GatewayWatch {
            shared: self.shared.clone(),
        };
        let wm0 = watch.watermark(&t.provider).await;
        control.sync_lease(&t.provider);
        let host = control
            .hub()
            .host(&t.provider)
            .ok_or_else(|| fail("host is not in the fleet".into()))?;
        // we hold the host's lease: the warm is ours, so it is confirmed
        let submitted = lock(&actions.queue).submit(
            Action::Warm {
                model: t.model.clone(),
            },
            &host,
            true,
            now_ms(),
        );
        submitted.map_err(|e| fail(format!("warm action refused: {e}")))?;
        actions.wake.notify_one();
        loop {
            match self.state(t) {
                Some(ModelState::Ready) => {
                    // let the warm request itself finish, so it is not counted as traffic
                    // during the run
                    while t0.elapsed() < LOAD_TIMEOUT && {
                        let q = lock(&actions.queue);
                        q.running().is_some() || !q.is_empty()
                    } {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let load_ms = t0.elapsed().as_secs_f64() * 1000.0;
                    // and its activity row be stored (bounded: hosts without activity have none)
                    let settle = Instant::now();
                    while self.shared.store.is_some()
                        && settle.elapsed() < Duration::from_secs(2)
                        && watch.watermark(&t.provider).await == wm0
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    return Ok(LoadReport {
                        already_loaded: false,
                        load_ms,
                    });
                }
                Some(ModelState::Error) => return Err(fail("the host reported an error".into())),
                _ => {}
            }
            if t0.elapsed() > LOAD_TIMEOUT {
                return Err(fail(format!(
                    "not ready after {} s",
                    LOAD_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What [`GatewayWatch::counts`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    host: u64,
    gateway: u64,
    max_id: Option<i64>,
}

/// Foreign traffic and swaps from the hub and the store.
struct GatewayWatch {
    shared: Arc<Shared>,
}

impl GatewayWatch {
    /// Whether a bench run on `provider` is running or ended less than [`OWN_GRACE_MS`] ago
    /// (its requests may still show as in flight on the host).
    fn recently_benched(&self, provider: &str, now_ms: u64) -> bool {
        lock(&self.shared.windows)
            .iter()
            .any(|(p, _, e)| p == provider && e.is_none_or(|e| now_ms <= e + OWN_GRACE_MS))
    }

    /// Host activity rows, gateway-proxied requests, and the largest host activity id seen on
    /// `provider` since `since`. Host rows carry second-resolution timestamps, so they are
    /// selected by upstream id: `host_after` counts rows with a larger id (`None`: every row
    /// since `since`); rows whose id lies in one of this gateway's bench runs (`skip_bench`)
    /// are not counted. Gateway rows never come from a bench run (it talks to hosts directly).
    async fn counts(
        &self,
        provider: &str,
        since: DateTime<Utc>,
        host_after: Option<i64>,
        skip_bench: bool,
    ) -> Result<Counts, BenchError> {
        let mut c = Counts::default();
        let Some(store) = &self.shared.store else {
            return Ok(c);
        };
        let ranges: Vec<(i64, i64)> = if skip_bench {
            lock(&self.shared.ranges)
                .iter()
                .filter(|(p, _, _)| p == provider)
                .map(|(_, a, b)| (*a, *b))
                .collect()
        } else {
            Vec::new()
        };
        // host timestamps are truncated to the second
        let host_since = since - chrono::Duration::milliseconds(1_000);
        let filter = FeedFilter {
            provider_id: Some(provider.to_owned()),
            ..Default::default()
        };
        let mut cursor = None;
        loop {
            let page = store
                .feed(&filter, cursor.as_ref(), 1000)
                .await
                .map_err(|e| BenchError::Watch {
                    provider: provider.to_owned(),
                    reason: e.to_string(),
                })?;
            let mut older = false;
            for r in &page.rows {
                if r.ts < host_since {
                    older = true;
                    break;
                }
                match r.origin {
                    FeedOrigin::Host => {
                        let id =
                            r.id.rsplit(':')
                                .next()
                                .and_then(|n| n.parse::<i64>().ok())
                                .unwrap_or(i64::MAX);
                        c.max_id = c.max_id.max(Some(id));
                        let fresh = host_after.is_none_or(|after| id > after);
                        let bench = ranges.iter().any(|(a, b)| id > *a && id <= *b);
                        if fresh && !bench {
                            c.host += 1;
                        }
                    }
                    FeedOrigin::Gateway if r.ts >= since => c.gateway += 1,
                    FeedOrigin::Gateway => {}
                }
            }
            match page.next {
                Some(n) if !older => cursor = Some(n),
                _ => break,
            }
        }
        Ok(c)
    }

    /// The newest stored host activity id of `provider` (`None`: nothing stored yet).
    async fn watermark(&self, provider: &str) -> Option<i64> {
        let store = self.shared.store.as_ref()?;
        store
            .activity_watermark(provider)
            .await
            .ok()
            .flatten()
            .map(|(id, _)| id)
    }
}

#[async_trait]
impl FleetWatch for GatewayWatch {
    async fn recent_foreign_requests(
        &self,
        t: &Target,
        window: Duration,
    ) -> Result<u64, BenchError> {
        let Some(host) = self.shared.control.hub().host(&t.provider) else {
            // not a followed host (cloud): no shared traffic to protect
            return Ok(0);
        };
        let since = Utc::now() - chrono::Duration::milliseconds(window.as_millis() as i64);
        let c = self.counts(&t.provider, since, None, true).await?;
        // requests of a run that just ended may still show as in flight for a moment
        let in_flight = if self.recently_benched(&t.provider, now_ms()) {
            0
        } else {
            u64::from(host.in_flight)
        };
        Ok(in_flight.max(c.host).max(c.gateway))
    }

    async fn watch(&self, t: &Target, run_id: &str) -> Result<Box<dyn WatchSession>, BenchError> {
        let since = Utc::now();
        let own_key = (run_id.to_owned(), t.provider.clone());
        let own_at_start = lock(&self.shared.own).get(&own_key).copied().unwrap_or(0);
        // this run's requests before the watch (prompt calibration) may still be on their way
        // into the store: take the watermark once it holds still
        let mut host_after = self.watermark(&t.provider).await;
        let settle = Instant::now();
        while self.shared.store.is_some() && settle.elapsed() < SETTLE_MAX {
            tokio::time::sleep(SETTLE_STEP).await;
            let now = self.watermark(&t.provider).await;
            if now == host_after {
                break;
            }
            host_after = now;
        }
        let host_after = host_after.or(Some(-1));
        let swaps = Arc::new(Mutex::new(Vec::new()));
        let (_, mut rx) = self.shared.control.hub().subscribe();
        let task = {
            let swaps = swaps.clone();
            let provider = t.provider.clone();
            let model = t.model.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(d) if d.provider == provider => {
                            let line = match d.change {
                                Change::Model { model: m, status } if m == model => (status.state
                                    != ModelState::Ready)
                                    .then(|| format!("{m} left ready ({:?})", status.state)),
                                Change::Model { model: m, status }
                                    if matches!(
                                        status.state,
                                        ModelState::Starting | ModelState::Ready
                                    ) =>
                                {
                                    Some(format!("{m} loaded ({:?})", status.state))
                                }
                                _ => None,
                            };
                            if let Some(l) = line {
                                lock(&swaps).push(l);
                            }
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            })
        };
        Ok(Box::new(Session {
            watch: GatewayWatch {
                shared: self.shared.clone(),
            },
            provider: t.provider.clone(),
            run_id: run_id.to_owned(),
            since,
            host_after,
            own_at_start,
            swaps,
            task,
        }))
    }
}

struct Session {
    watch: GatewayWatch,
    provider: String,
    run_id: String,
    since: DateTime<Utc>,
    host_after: Option<i64>,
    own_at_start: u64,
    swaps: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[async_trait]
impl WatchSession for Session {
    async fn report(&self) -> Result<WatchReport, BenchError> {
        let own = lock(&self.watch.shared.own)
            .get(&(self.run_id.clone(), self.provider.clone()))
            .copied()
            .unwrap_or(0)
            .saturating_sub(self.own_at_start);
        // Activity rows reach the store a little after the requests end: wait (bounded) until
        // the count holds still for a moment and covers at least this run's own requests.
        let started = Instant::now();
        let mut last = None;
        let c = loop {
            let c = self
                .watch
                .counts(&self.provider, self.since, self.host_after, false)
                .await?;
            let settled = last == Some(c) && c.host >= own;
            if settled || self.watch.shared.store.is_none() || started.elapsed() > SETTLE_MAX {
                break c;
            }
            last = Some(c);
            tokio::time::sleep(SETTLE_STEP).await;
        };
        // the host rows of this run so far belong to it (the foreign ones among them are
        // counted here); later takeover checks skip them
        let run_start = lock(&self.watch.shared.run_start)
            .get(&(self.run_id.clone(), self.provider.clone()))
            .copied();
        if let (Some(after), Some(max)) = (run_start.or(self.host_after), c.max_id) {
            let mut ranges = lock(&self.watch.shared.ranges);
            match ranges
                .iter_mut()
                .find(|(p, a, _)| *p == self.provider && *a == after)
            {
                Some(r) => r.2 = r.2.max(max),
                None => ranges.push((self.provider.clone(), after, max)),
            }
        }
        Ok(WatchReport {
            foreign_requests: c.host.saturating_sub(own).max(c.gateway),
            swaps: lock(&self.swaps).clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_percent_decoded_and_empty_means_unset() {
        let q = Some("target=gpu%2Fqwen%3AQ4_K_M&suite=chat+grid&limit=&x");
        assert_eq!(param(q, "target").as_deref(), Some("gpu/qwen:Q4_K_M"));
        assert_eq!(param(q, "suite").as_deref(), Some("chat grid"));
        assert_eq!(param(q, "limit"), None);
        assert_eq!(param(q, "x"), None);
        assert_eq!(pct_decode("100%"), "100%");
        assert_eq!(pct_decode("%zz"), "%zz");
    }

    #[test]
    fn conflicts_map_to_409_and_only_takeover_asks_for_confirmation() {
        let (s, v) = bench_error(&BenchError::RequiresConfirmation {
            provider: "gpu".into(),
            requests: 2,
            window_s: 120,
        });
        assert_eq!((s, v["requiresConfirmation"].as_bool()), (409, Some(true)));
        assert!(v["error"]["message"].as_str().unwrap().contains("gpu"));
        let (s, v) = bench_error(&BenchError::HostBusy {
            provider: "gpu".into(),
            reason: "leased".into(),
            held_by: None,
        });
        assert_eq!((s, v["requiresConfirmation"].as_bool()), (409, Some(false)));
        let (s, _) = bench_error(&BenchError::InvalidSuite {
            field: "grid.concurrency[0]".into(),
            problem: "must be ≥ 1".into(),
        });
        assert_eq!(s, 400);
    }
}
