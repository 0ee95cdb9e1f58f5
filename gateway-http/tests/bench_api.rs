//! `/api/bench/…` against a real gateway (`run_on`) following a fleet-sim llama-swap host, with
//! a SQLite store: a run from POST to stored result, progress on the fleet stream, the lease
//! refusing a second run, the takeover rule, foreign traffic counted during a run.

use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, SimHost, start_host};
use boo_gateway_http::{RunOptions, StoreOptions, StoreTarget};
use boo_telemetry_store::{BatchConfig, BenchRunStatus, FeedFilter, FeedOrigin, Store};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Failure guard only: every wait below normally ends well before it.
const GUARD: Duration = Duration::from_secs(60);
const TOKEN: &str = "bench-admin";

/// Two cells (c1, c2), 6 measured requests each of 16 output tokens at 400 tok/s: a few hundred
/// ms per run, long enough to overlap a second request or foreign traffic.
const SUITE: &str = "name: tiny\ngrid:\n  prompt_tokens: [32]\n  max_tokens: [16]\n  concurrency: [1, 2]\n  repetitions: 6\n";

struct Gw {
    base: String,
    store: Arc<dyn Store>,
    sim: SimHost,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Gw {
    let mut alpha = ModelSpec::new("alpha");
    alpha.gen_tps = 400.0;
    alpha.load_ms = 200;
    let sim = start_host(HostSpec::llama_swap(
        "gpu",
        ApiGen::Current,
        vec![alpha, ModelSpec::new("beta")],
    ))
    .await
    .expect("sim host");
    let doc = json!({
        "providers": [{"id": "gpu", "kind": "llama-swap", "base_url": sim.base_url()}],
        "gateway": {"admin_token": TOKEN}
    });
    let reg = boo_provider_registry::from_json_str(
        &doc.to_string(),
        &boo_provider_registry::MapEnv::new(),
    )
    .expect("registry")
    .registry;
    let dir = tempfile::tempdir().unwrap();
    let store = boo_telemetry_store::open(&format!("sqlite://{}/boo.db", dir.path().display()))
        .await
        .unwrap();
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.follow_fleet = true;
    opts.poll_every = Duration::from_millis(200);
    opts.store = Some(StoreOptions {
        store: StoreTarget::Open(store.clone()),
        batch: BatchConfig::default(),
        retention: None,
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    let gw = Gw {
        base,
        store,
        sim,
        _stop: tx,
        _dir: dir,
    };
    wait("host connected", || async {
        let (_, v) = call("GET", &format!("{}/api/fleet", gw.base), None, None).await;
        v["hosts"][0]["liveness"]["state"] == "connected"
            || v["hosts"][0]["liveness"] == "connected"
    })
    .await;
    gw
}

async fn wait<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + GUARD;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let uri: hyper::Uri = url.parse().unwrap();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .method(method)
        .uri(uri.path_and_query().unwrap().as_str())
        .header("host", "x")
        .header("content-type", "application/json");
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    let resp = send
        .send_request(b.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Collects the raw text of `/api/fleet/stream`.
async fn stream(base: &str) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let uri: hyper::Uri = format!("{base}/api/fleet/stream").parse().unwrap();
    let tcp = tokio::net::TcpStream::connect(format!(
        "{}:{}",
        uri.host().unwrap(),
        uri.port_u16().unwrap()
    ))
    .await
    .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/api/fleet/stream")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let t = text.clone();
    tokio::spawn(async move {
        while let Some(Ok(f)) = body.frame().await {
            if let Ok(d) = f.into_data() {
                t.lock().unwrap().push_str(&String::from_utf8_lossy(&d));
            }
        }
    });
    let t = text.clone();
    wait("snapshot on the stream", || {
        let t = t.clone();
        async move { t.lock().unwrap().contains("event: snapshot") }
    })
    .await;
    text
}

fn run_body(takeover: bool) -> Value {
    json!({"suite": SUITE, "targets": ["gpu/alpha"], "takeover": takeover})
}

async fn finished(gw: &Gw, id: &str) -> Value {
    let url = format!("{}/api/bench/runs/{id}", gw.base);
    let mut last;
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let (s, v) = call("GET", &url, None, None).await;
        assert_eq!(s, 200, "{v}");
        if v["run"]["status"] != "running" {
            return v;
        }
        last = v;
        assert!(
            tokio::time::Instant::now() < deadline,
            "run did not finish: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = &last;
    }
}

/// A direct chat request to the host (not through the gateway, not from a bench run).
async fn foreign_request(sim: &SimHost) {
    let chat =
        json!({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let r = boo_fleet_sim::client::post_json(&sim.base_url(), "/v1/chat/completions", &chat)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

async fn host_rows(store: &dyn Store) -> usize {
    let f = FeedFilter {
        provider_id: Some("gpu".into()),
        origin: Some(FeedOrigin::Host),
        ..Default::default()
    };
    store.feed(&f, None, 1000).await.unwrap().rows.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_from_post_to_stored_result_with_progress_and_one_run_per_host() {
    let gw = start().await;
    let events = stream(&gw.base).await;
    let url = format!("{}/api/bench/runs", gw.base);

    // admin-authenticated like the control actions
    let (s, v) = call("POST", &url, None, Some(run_body(false))).await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = call("POST", &url, Some("wrong"), Some(run_body(false))).await;
    assert_eq!(s, 401, "{v}");
    // bad input names the field
    let (s, v) = call(
        "POST",
        &url,
        Some(TOKEN),
        Some(json!({"suite": SUITE.replace("[1, 2]", "[0]"), "targets": ["gpu/alpha"]})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("grid.concurrency"),
        "{v}"
    );
    let (s, v) = call(
        "POST",
        &url,
        Some(TOKEN),
        Some(json!({"suite": SUITE, "targets": ["nohost/alpha"]})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("targets[0]"),
        "{v}"
    );

    let (s, v) = call("POST", &url, Some(TOKEN), Some(run_body(false))).await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    // the host is leased to the run: a second run is refused at once, without a confirmation
    // prompt (taking over would not help)
    let (s, v2) = call("POST", &url, Some(TOKEN), Some(run_body(true))).await;
    assert_eq!(s, 409, "{v2}");
    assert_eq!(v2["requiresConfirmation"], false, "{v2}");
    assert!(
        v2["error"]["message"].as_str().unwrap().contains("gpu"),
        "{v2}"
    );

    let done = finished(&gw, &id).await;
    assert_eq!(done["run"]["status"], "completed", "{done}");
    assert_eq!(done["run"]["polluted"], false, "{done}");
    assert_eq!(done["run"]["concurrent_foreign_requests"], 0);
    let cells = done["cells"].as_array().unwrap();
    let keys: Vec<&str> = cells
        .iter()
        .map(|c| c["cell_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["p32-g16-c1", "p32-g16-c2"]);
    assert!(
        cells.iter().all(|c| c["gen_tps"].as_f64().unwrap() > 0.0),
        "{done}"
    );
    // the model was stopped: the fleet warm loaded it, and that time is reported apart
    let target = &done["result"]["targets"][0];
    assert_eq!(target["load"]["already_loaded"], false, "{target}");
    assert!(target["load"]["load_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        done["run"]["targets"][0]["load_ms"],
        target["load"]["load_ms"]
    );

    // progress went out on the fleet stream, ending with `finished`
    let text = events.lock().unwrap().clone();
    let progress: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("event: bench_progress\ndata: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        progress
            .iter()
            .any(|p| p["phase"] == "measuring" && p["run_id"] == id.as_str())
    );
    assert!(
        progress.iter().any(|p| p["phase"] == "finished"),
        "{progress:?}"
    );
    // the lease was granted and released on the fleet stream too
    assert!(text.contains("\"kind\":\"lease\""));

    // listed newest first, filterable; raw samples on request; persisted in the store
    let (_, list) = call("GET", &format!("{url}?target=gpu%2Falpha"), None, None).await;
    assert_eq!(list["runs"][0]["id"], id.as_str());
    let (_, none) = call("GET", &format!("{url}?suite=other"), None, None).await;
    assert_eq!(none["runs"].as_array().unwrap().len(), 0);
    let (_, full) = call("GET", &format!("{url}/{id}?samples=true"), None, None).await;
    let n = full["result"]["samples"].as_array().unwrap().len();
    assert!(n >= 18, "12 measured + warm-ups: {n}");
    let detail = gw.store.bench_run(&id).await.unwrap().unwrap();
    assert_eq!(detail.run.status, BenchRunStatus::Completed);
    assert_eq!(gw.store.bench_samples(&id).await.unwrap().len(), n);
    let (s, _) = call("GET", &format!("{url}/nope"), None, None).await;
    assert_eq!(s, 404);

    // baseline: set through the API, the next run compares against it
    let (s, v) = call(
        "POST",
        &format!("{}/api/bench/baselines", gw.base),
        None,
        Some(json!({"run": id})),
    )
    .await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = call(
        "POST",
        &format!("{}/api/bench/baselines", gw.base),
        Some(TOKEN),
        Some(json!({"run": id})),
    )
    .await;
    assert_eq!((s, v["baselines_set"].as_u64()), (200, Some(2)), "{v}");
    // our own run's traffic does not count as foreign: no takeover needed right after it
    let (s, v) = call("POST", &url, Some(TOKEN), Some(run_body(false))).await;
    assert_eq!(s, 202, "{v}");
    let second = v["id"].as_str().unwrap().to_owned();
    let done = finished(&gw, &second).await;
    let verdicts = done["result"]["baseline_verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 2);
    assert!(
        verdicts.iter().all(|v| v["baseline_run"] == id.as_str()),
        "{verdicts:?}"
    );
    let (_, hist) = call(
        "GET",
        &format!("{}/api/bench/history?target=gpu/alpha&suite=tiny", gw.base),
        None,
        None,
    )
    .await;
    let pts = hist["points"].as_array().unwrap();
    assert_eq!(pts.len(), 4, "{hist}");
    assert!(
        pts.iter()
            .any(|p| p["baseline"] == true && p["run_id"] == id.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_traffic_requires_takeover_and_is_counted_during_the_run() {
    let gw = start().await;
    let url = format!("{}/api/bench/runs", gw.base);
    foreign_request(&gw.sim).await;
    let store = gw.store.clone();
    wait("activity ingested", || {
        let store = store.clone();
        async move { host_rows(store.as_ref()).await >= 1 }
    })
    .await;

    let (s, v) = call("POST", &url, Some(TOKEN), Some(run_body(false))).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["requiresConfirmation"], true, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("takeover"),
        "{v}"
    );
    // nothing started and no lease is left behind
    let (_, list) = call("GET", &url, None, None).await;
    assert_eq!(list["runs"].as_array().unwrap().len(), 0);

    let (s, v) = call("POST", &url, Some(TOKEN), Some(run_body(true))).await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    // someone else uses the host while the run measures
    let (_, fleet) = call("GET", &format!("{}/api/fleet", gw.base), None, None).await;
    let _ = fleet;
    wait("run measuring", || async {
        let (_, v) = call("GET", &format!("{url}/{id}"), None, None).await;
        v["progress"]["phase"] == "measuring" || v["run"]["status"] != "running"
    })
    .await;
    for _ in 0..3 {
        foreign_request(&gw.sim).await;
    }
    let done = finished(&gw, &id).await;
    assert_eq!(done["run"]["status"], "completed", "{done}");
    let foreign = done["run"]["concurrent_foreign_requests"].as_i64().unwrap();
    assert!(foreign >= 3, "foreign requests counted: {foreign} ({done})");
    assert_eq!(done["run"]["polluted"], true);
    let reasons = done["run"]["pollution_reasons"].as_array().unwrap();
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().unwrap().contains("foreign")),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_during_the_run_marks_it_polluted() {
    let gw = start().await;
    let url = format!("{}/api/bench/runs", gw.base);
    let (s, v) = call("POST", &url, Some(TOKEN), Some(run_body(false))).await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    wait("run measuring", || async {
        let (_, v) = call("GET", &format!("{url}/{id}"), None, None).await;
        v["progress"]["phase"] == "measuring" || v["run"]["status"] != "running"
    })
    .await;
    // someone loads another model on the host: llama-swap swaps alpha out
    let chat =
        json!({"model": "beta", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    let r = boo_fleet_sim::client::post_json(&gw.sim.base_url(), "/v1/chat/completions", &chat)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let done = finished(&gw, &id).await;
    assert_eq!(done["run"]["polluted"], true, "{done}");
    let reasons: Vec<String> = done["run"]["pollution_reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("swap") && (r.contains("alpha") || r.contains("beta"))),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_flags_a_15_percent_slower_run_and_not_a_5_percent_one() {
    use boo_telemetry_store::{BenchBaselineRow, BenchCellRow, BenchRunRow, BenchTargetRow};
    let gw = start().await;
    let t0 = chrono::Utc::now() - chrono::Duration::hours(3);
    for (i, (id, tps)) in [("base", 100.0), ("minus5", 95.0), ("minus15", 85.0)]
        .into_iter()
        .enumerate()
    {
        let mut r = BenchRunRow::started(
            id,
            "tiny",
            "h",
            vec![BenchTargetRow::new("gpu/alpha")],
            t0 + chrono::Duration::minutes(i as i64),
        );
        gw.store.insert_bench_run(&r).await.unwrap();
        gw.store
            .put_bench_cells(&[BenchCellRow {
                run_id: id.into(),
                target: "gpu/alpha".into(),
                cell_key: "p32-g16-c1".into(),
                gen_tps: Some(tps),
                ttft_p50_ms: Some(40.0),
                stats: json!({}),
            }])
            .await
            .unwrap();
        r.status = BenchRunStatus::Completed;
        r.finished_at = Some(r.started_at);
        gw.store.update_bench_run(&r).await.unwrap();
    }
    gw.store
        .set_bench_baseline(&BenchBaselineRow {
            provider: "gpu".into(),
            model: "alpha".into(),
            suite: "tiny".into(),
            cell_key: "p32-g16-c1".into(),
            run_id: "base".into(),
            set_at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let (s, v) = call(
        "GET",
        &format!(
            "{}/api/bench/history?target=gpu%2Falpha&suite=tiny",
            gw.base
        ),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let flags: Vec<(String, bool, bool)> = v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["run_id"].as_str().unwrap().to_owned(),
                p["regression"].as_bool().unwrap(),
                p["baseline"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flags,
        vec![
            ("base".into(), false, true),
            ("minus5".into(), false, false),
            ("minus15".into(), true, false)
        ]
    );
    let (s, v) = call(
        "GET",
        &format!("{}/api/bench/history?suite=tiny", gw.base),
        None,
        None,
    )
    .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("target"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_runs_are_kept_in_memory_and_baselines_are_refused() {
    let mut alpha = ModelSpec::new("alpha");
    alpha.gen_tps = 400.0;
    alpha.load_ms = 50;
    let sim = start_host(HostSpec::llama_swap("gpu", ApiGen::Current, vec![alpha]))
        .await
        .unwrap();
    let doc = json!({
        "providers": [{"id": "gpu", "kind": "llama-swap", "base_url": sim.base_url()}],
        "gateway": {"admin_token": TOKEN}
    });
    let reg = boo_provider_registry::from_json_str(
        &doc.to_string(),
        &boo_provider_registry::MapEnv::new(),
    )
    .unwrap()
    .registry;
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.follow_fleet = true;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(boo_gateway_http::run_on(l, opts, std::future::pending()));
    wait("host connected", || async {
        let (_, v) = call("GET", &format!("{base}/api/fleet"), None, None).await;
        v.to_string().contains("connected")
    })
    .await;
    let url = format!("{base}/api/bench/runs");
    let (s, v) = call("POST", &url, Some(TOKEN), Some(run_body(false))).await;
    assert_eq!(s, 202, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + GUARD;
    let done = loop {
        let (s, v) = call("GET", &format!("{url}/{id}?samples=true"), None, None).await;
        assert_eq!(s, 200, "{v}");
        if v["run"]["status"] != "running" {
            break v;
        }
        assert!(tokio::time::Instant::now() < deadline, "run did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["run"]["status"], "completed", "{done}");
    assert_eq!(
        done["result"]["targets"][0]["cells"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(!done["result"]["samples"].as_array().unwrap().is_empty());
    let (_, list) = call("GET", &url, None, None).await;
    assert_eq!(list["runs"][0]["id"], id.as_str());
    let (s, v) = call(
        "POST",
        &format!("{base}/api/bench/baselines"),
        Some(TOKEN),
        Some(json!({"run": id})),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("store"),
        "{v}"
    );
}
