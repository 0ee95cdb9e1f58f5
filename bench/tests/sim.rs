//! The engine with the real HTTP client against fleet-sim over TCP on 127.0.0.1.
//!
//! Tolerances: the sim paces tokens with tokio timers (1 ms resolution) at `time_scale` 0.1, so a
//! 50 tok/s model streams a token every 2 ms of wall time. Measured generation speed (scaled
//! back by the time scale, median over requests) must be within ±15 % of the configured value
//! and TTFT within ±25 % of prompt time + one token (the sim's model); the ITL mean within
//! ±25 %. A shared 2-core machine adds jitter, not bias; the timing-sensitive tests run one at
//! a time (`TIMING`), but a machine at load average ≫ 10 can still stall them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use boo_bench::{
    BenchError, Engine, FleetWatch, HostKind, HttpClient, HttpLoader, Phase, Pollution, Progress,
    RUN_HEADER, RunRequest, RunResult, RunStatus, Suite, Target, WatchReport, WatchSession,
    compare_runs,
};
use boo_fleet_core::{InMemoryHostAccess, Lane};
use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, SimHost, start_host};
use serde_json::json;

const SCALE: f64 = 0.1;

/// The timing-sensitive tests run one at a time, so they do not skew each other's clocks.
static TIMING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn is_inference(path: &str) -> bool {
    path.ends_with("/chat/completions") || path.ends_with("/v1/completions")
}

/// Foreign requests = inference requests without this crate's run header, from the sim's
/// record of what it received.
fn foreign_since(host: &SimHost, since: SystemTime) -> u64 {
    host.stats()
        .received()
        .iter()
        .filter(|r| r.at >= since && is_inference(&r.path) && r.header(RUN_HEADER).is_none())
        .count() as u64
}

/// A [`FleetWatch`] over in-process sim hosts (the gateway's implementation uses its hub).
struct SimWatch {
    hosts: Vec<Arc<SimHost>>,
}

impl SimWatch {
    fn host(&self, t: &Target) -> Arc<SimHost> {
        Arc::clone(self.hosts.iter().find(|h| h.id() == t.provider).unwrap())
    }
}

struct SimSession {
    host: Arc<SimHost>,
    since: SystemTime,
    swaps: Arc<Mutex<Vec<String>>>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for SimSession {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

#[async_trait]
impl WatchSession for SimSession {
    async fn report(&self) -> Result<WatchReport, BenchError> {
        Ok(WatchReport {
            foreign_requests: foreign_since(&self.host, self.since),
            swaps: self.swaps.lock().unwrap().clone(),
        })
    }
}

#[async_trait]
impl FleetWatch for SimWatch {
    async fn recent_foreign_requests(
        &self,
        t: &Target,
        window: Duration,
    ) -> Result<u64, BenchError> {
        Ok(foreign_since(&self.host(t), SystemTime::now() - window))
    }

    async fn watch(&self, t: &Target, _run_id: &str) -> Result<Box<dyn WatchSession>, BenchError> {
        let host = self.host(t);
        let swaps = Arc::new(Mutex::new(Vec::new()));
        let models: Vec<String> = host.spec().models.iter().map(|m| m.id.clone()).collect();
        let (h2, s2, me) = (Arc::clone(&host), Arc::clone(&swaps), t.model.clone());
        let poller = tokio::spawn(async move {
            let state = |m: &str| h2.model_state(m).unwrap_or("?");
            let mut last: Vec<&'static str> = models.iter().map(|m| state(m)).collect();
            loop {
                tokio::time::sleep(Duration::from_millis(1)).await;
                for (i, m) in models.iter().enumerate() {
                    let now = state(m);
                    if now != last[i] {
                        if *m == me && last[i] == "ready" {
                            s2.lock().unwrap().push(format!("{m} left ready ({now})"));
                        } else if *m != me && now == "starting" {
                            s2.lock().unwrap().push(format!("{m} loaded"));
                        }
                        last[i] = now;
                    }
                }
            }
        });
        Ok(Box::new(SimSession {
            host,
            since: SystemTime::now(),
            swaps,
            poller,
        }))
    }
}

fn model(id: &str, gen_tps: f64) -> ModelSpec {
    ModelSpec {
        gen_tps,
        prompt_tps: 1000.0,
        load_ms: 1000,
        slots: 8,
        concurrency_limit: 64,
        ..ModelSpec::new(id)
    }
}

async fn host(id: &str, models: Vec<ModelSpec>) -> Arc<SimHost> {
    let mut spec = HostSpec::llama_swap(id, ApiGen::Current, models).with_time_scale(SCALE);
    spec.record_limit = 100_000;
    Arc::new(start_host(spec).await.unwrap())
}

fn target(h: &SimHost, model: &str) -> Target {
    Target {
        id: format!("{}/{model}", h.id()),
        provider: h.id().to_owned(),
        model: model.to_owned(),
        base_url: h.base_url(),
        kind: HostKind::LlamaSwap,
        lane: Lane::Local,
        cloud_budget: None,
        api_key: None,
    }
}

fn engine(hosts: Vec<Arc<SimHost>>, access: Arc<InMemoryHostAccess>) -> Engine {
    Engine::new(
        Arc::new(HttpClient::new()),
        access,
        Arc::new(HttpLoader::new(Duration::from_secs(10))),
        Arc::new(SimWatch { hosts }),
    )
}

fn req(id: &str, yaml: &str, targets: Vec<Target>) -> RunRequest {
    RunRequest {
        id: id.into(),
        suite: Suite::from_yaml(yaml).unwrap(),
        targets,
        takeover: false,
    }
}

const GRID: &str = "name: speed\ngrid:\n  prompt_tokens: [1024]\n  max_tokens: [32]\n  concurrency: [1, 4]\n  repetitions: 3\nwarmup: 1\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_speed_matches_the_sims_model() {
    let _serial = TIMING.lock().await;
    let mut m = model("qwen", 50.0);
    m.load_ms = 5000;
    let h = host("gpu-1", vec![m]).await;
    let e = engine(
        vec![Arc::clone(&h)],
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let r = e
        .run(req("speed", GRID, vec![target(&h, "qwen")]), &())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.targets[0].error);
    assert!(!r.polluted, "{:?}", r.pollution);
    let t = &r.targets[0];
    // The load (5000 ms emulated = 500 ms) is reported separately, not inside any TTFT.
    assert!(!t.load.already_loaded);
    assert!(t.load.load_ms >= 450.0, "load {} ms", t.load.load_ms);
    let expected_ttft_ms = (1024.0 / 1000.0 + 1.0 / 50.0) * 1000.0 * SCALE;
    for cell in &t.cells {
        let m = &cell.metrics;
        assert_eq!(cell.ok, cell.requests, "{:?}", cell.error_examples);
        // Calibrated prompt sizing hits the server's count exactly.
        assert_eq!((m.prompt_tokens.min, m.prompt_tokens.max), (1024.0, 1024.0));
        assert_eq!(m.output_tokens.p50, 32.0);
        let gtps = m.gen_tps.p50 * SCALE;
        assert!(
            (gtps - 50.0).abs() <= 7.5,
            "{}: gen {gtps:.1} tok/s",
            cell.key
        );
        let ttft = m.ttft_ms.p50;
        assert!(
            (ttft - expected_ttft_ms).abs() <= 0.25 * expected_ttft_ms,
            "{}: TTFT p50 {ttft:.1} ms, expected {expected_ttft_ms:.1}",
            cell.key
        );
        assert!(
            m.ttft_ms.max < 400.0,
            "a TTFT includes the load: {:?}",
            m.ttft_ms
        );
        // The sim's timings are in emulated time: exactly its configured speeds.
        let sg = m.server_gen_tps.unwrap();
        assert!((sg.p50 - 50.0).abs() < 0.5, "{sg:?}");
        assert!((m.server_prompt_tps.unwrap().p50 - 1000.0).abs() < 5.0);
        // ITL is the per-token pace (pooled mean: a starved client reads tokens in bursts, which
        // moves the median but not the mean).
        assert!(
            (m.itl_ms.mean - 20.0 * SCALE).abs() <= 0.3,
            "{:?}",
            m.itl_ms
        );
    }
    assert!(
        r.client.prompt_sizing[0].contains("calibrated"),
        "{:?}",
        r.client
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_blocks_a_second_concurrent_run_on_the_host() {
    let h = host("gpu-2", vec![model("qwen", 200.0), model("llama", 200.0)]).await;
    let access = Arc::new(InMemoryHostAccess::new(60_000));
    let e = engine(vec![Arc::clone(&h)], Arc::clone(&access));
    let small = "name: s\ngrid:\n  prompt_tokens: [64]\n  max_tokens: [8]\n  repetitions: 3\n";
    let first = e
        .prepare(req("first", small, vec![target(&h, "qwen")]))
        .await
        .unwrap();
    let running = tokio::spawn(async move { first.execute(&()).await });
    // Another model on the same host: still the same host lease.
    let err = e
        .prepare(req("second", small, vec![target(&h, "llama")]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BenchError::HostBusy { reason, .. } if reason.contains("bench:first")),
        "{err}"
    );
    let r = running.await.unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    let r2 = e
        .run(req("second", small, vec![target(&h, "llama")]), &())
        .await
        .unwrap();
    assert_eq!(r2.status, RunStatus::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_traffic_needs_takeover_and_is_counted_during_the_run() {
    let h = host("gpu-3", vec![model("qwen", 100.0)]).await;
    let e = engine(
        vec![Arc::clone(&h)],
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let url = h.base_url();
    let chat =
        json!({"model": "qwen", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    // Someone chats on the host: the run needs --takeover.
    let a = boo_fleet_sim::client::post_json(&url, "/v1/chat/completions", &chat)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    let yaml = "name: f\ngrid:\n  prompt_tokens: [64]\n  max_tokens: [16]\n  concurrency: [1, 2]\n  repetitions: 4\n";
    let err = e
        .prepare(req("f", yaml, vec![target(&h, "qwen")]))
        .await
        .unwrap_err();
    assert!(err.requires_confirmation(), "{err}");
    assert!(err.to_string().contains("served 1 request(s)"), "{err}");
    // With takeover it runs; 3 more foreign chats during the first cell are counted.
    let mut r = req("f", yaml, vec![target(&h, "qwen")]);
    r.takeover = true;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let sink = move |p: &Progress| {
        if p.phase == Phase::Measuring
            && let Some(tx) = tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    };
    let foreign = tokio::spawn(async move {
        rx.await.unwrap();
        for _ in 0..3 {
            let r = boo_fleet_sim::client::post_json(&url, "/v1/chat/completions", &chat)
                .await
                .unwrap();
            assert_eq!(r.status, 200);
        }
    });
    let res = e.run(r, &sink).await.unwrap();
    foreign.await.unwrap();
    assert_eq!(res.status, RunStatus::Completed);
    assert_eq!(res.concurrent_foreign_requests, 3);
    assert!(res.polluted);
    assert_eq!(
        res.targets[0].pollution,
        [Pollution::ForeignTraffic { requests: 3 }]
    );
    assert!(res.targets[0].cells[0].polluted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_during_the_run_marks_it_polluted() {
    let h = host("gpu-4", vec![model("qwen", 100.0), model("llama", 100.0)]).await;
    let e = engine(
        vec![Arc::clone(&h)],
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let url = h.base_url();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let tx = Mutex::new(Some(tx));
    let sink = move |p: &Progress| {
        if p.phase == Phase::Measuring
            && let Some(tx) = tx.lock().unwrap().take()
        {
            let _ = tx.send(());
        }
    };
    // Someone unloads the model mid-run (the next requests swap it back in).
    let unload = tokio::spawn(async move {
        rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = boo_fleet_sim::client::post_json(&url, "/api/models/unload/qwen", &json!({}))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    });
    let yaml = "name: w\ngrid:\n  prompt_tokens: [64]\n  max_tokens: [16]\n  concurrency: [1, 2]\n  repetitions: 6\n";
    let res = e
        .run(req("w", yaml, vec![target(&h, "qwen")]), &sink)
        .await
        .unwrap();
    unload.await.unwrap();
    assert!(res.polluted);
    let swaps: Vec<&Pollution> = res.targets[0]
        .pollution
        .iter()
        .filter(|p| matches!(p, Pollution::Swap { .. }))
        .collect();
    assert!(!swaps.is_empty(), "{:?}", res.targets[0].pollution);
    assert!(
        matches!(swaps[0], Pollution::Swap { detail } if detail.starts_with("qwen left ready")),
        "{swaps:?}"
    );
    assert_eq!(
        res.concurrent_foreign_requests, 0,
        "an unload is not inference"
    );
    assert!(res.targets[0].cells.iter().any(|c| c.polluted));
}

async fn speed_run(gen_tps: f64, id: &str) -> RunResult {
    let h = host(id, vec![model("qwen", gen_tps)]).await;
    let e = engine(
        vec![Arc::clone(&h)],
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let yaml = "name: reg\ngrid:\n  prompt_tokens: [1024]\n  max_tokens: [48]\n  concurrency: [1]\n  repetitions: 9\n";
    let r = e
        .run(req(id, yaml, vec![target(&h, "qwen")]), &())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_15_percent_slower_build_regresses_and_5_percent_does_not() {
    let _serial = TIMING.lock().await;
    let base = speed_run(50.0, "base").await;
    let slow15 = speed_run(50.0 * 0.85, "slow15").await;
    let slow5 = speed_run(50.0 * 0.95, "slow5").await;
    let c15 = compare_runs(&base, &slow15, None);
    let c5 = compare_runs(&base, &slow5, None);
    assert_eq!(c15.cells.len(), 1);
    for c in &c15.cells {
        assert!(c.verdict.is_regression(), "{c:?}");
        let g = c.gen_tps_ratio.unwrap();
        assert!(g < 0.92, "15 % slower measured as {g:.3}");
    }
    for c in &c5.cells {
        assert!(!c.verdict.is_regression(), "{c:?}");
        let g = c.gen_tps_ratio.unwrap();
        assert!((0.9..1.01).contains(&g), "5 % slower measured as {g:.3}");
    }
    assert_eq!((c15.regressions(), c5.regressions()), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_become_request_errors_not_a_crash() {
    let h = host("gpu-5", vec![model("qwen", 500.0)]).await;
    let e = engine(
        vec![Arc::clone(&h)],
        Arc::new(InMemoryHostAccess::new(60_000)),
    )
    .with_options(boo_bench::EngineOptions {
        request_timeout: Duration::from_secs(2),
        ..boo_bench::EngineOptions::default()
    });
    let yaml =
        "name: faults\ngrid:\n  prompt_tokens: [32]\n  max_tokens: [8]\nlimits:\n  requests: 8\n";
    // Every request fails with the upstream's 500 (fleet-sim's rate spreading counts a
    // streaming request twice, so a fractional rate does not map onto streamed requests).
    h.faults().set_error_rate(1.0);
    let r = e
        .run(req("f1", yaml, vec![target(&h, "qwen")]), &())
        .await
        .unwrap();
    let c = &r.targets[0].cells[0];
    assert_eq!(
        (c.requests, c.ok, c.errors),
        (8, 0, 8),
        "{:?}",
        c.error_examples
    );
    assert!(
        c.error_examples[0].starts_with("HTTP 500"),
        "{:?}",
        c.error_examples
    );
    assert_eq!(
        c.metrics.ttft_ms.count, 0,
        "failures stay out of the statistics"
    );
    assert_eq!(
        r.status,
        RunStatus::Completed,
        "request errors do not fail the run"
    );
    // The calibration probes failed too: the estimate says so.
    assert!(
        r.client.prompt_sizing[0].contains("uncalibrated"),
        "{:?}",
        r.client
    );
    h.faults().set_error_rate(0.0);

    // Streams cut after 3 chunks (no [DONE]): errors, and max_errors stops the cell.
    h.faults().cut_stream_after(Some(3));
    let y2 = format!("{yaml}  max_errors: 2\n");
    let r = e
        .run(req("f2", &y2, vec![target(&h, "qwen")]), &())
        .await
        .unwrap();
    let c = &r.targets[0].cells[0];
    assert_eq!(c.stopped, boo_bench::StopReason::Errors);
    assert_eq!((c.ok, c.errors), (0, 2));
    assert!(
        c.error_examples[0].contains("stream"),
        "{:?}",
        c.error_examples
    );
    h.faults().cut_stream_after(None);

    // A hanging upstream hits the per-request timeout.
    h.faults().hang_for(Duration::from_secs(30));
    let e = engine(
        vec![Arc::clone(&h)],
        Arc::new(InMemoryHostAccess::new(60_000)),
    )
    .with_options(boo_bench::EngineOptions {
        request_timeout: Duration::from_millis(300),
        ..boo_bench::EngineOptions::default()
    });
    let y3 =
        "name: hang\ngrid:\n  prompt_tokens: [32]\n  max_tokens: [8]\nlimits:\n  requests: 1\n";
    let r = e
        .run(req("f3", y3, vec![target(&h, "qwen")]), &())
        .await
        .unwrap();
    let c = &r.targets[0].cells[0];
    assert_eq!(c.errors, 1);
    assert!(
        c.error_examples[0].contains("timed out"),
        "{:?}",
        c.error_examples
    );
    h.faults().clear_hang();

    // Host down: the load fails, the target fails, nothing panics.
    h.faults().host_down().await;
    let r = e
        .run(req("f4", y3, vec![target(&h, "qwen")]), &())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert!(
        r.targets[0]
            .error
            .as_deref()
            .unwrap()
            .contains("could not load"),
        "{:?}",
        r.targets[0].error
    );
}
