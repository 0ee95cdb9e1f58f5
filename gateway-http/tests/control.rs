//! Control plane against fleet-sim over real TCP: connectors, fleet stream, actions, store.

use boo_fleet_core::wire::SseDecoder;
use boo_fleet_core::{
    Change, Delta, FleetSnapshot, FleetView, LivenessState, ModelState, ReconnectPolicy,
};
use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, SimHost, start_host};
use boo_gateway_http::control::{
    ControlApi, ControlConfig, ControlError, HostTarget, check_admin_exposure,
};
use boo_telemetry_store::{FeedFilter, FeedOrigin, Store};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Failure guard only: every wait below normally ends in milliseconds.
const GUARD: Duration = Duration::from_secs(20);

fn cfg() -> ControlConfig {
    ControlConfig {
        policy: ReconnectPolicy {
            base_ms: 40,
            max_ms: 200,
            jitter_max: 0.5,
            breaker_threshold: 3,
            probe_interval_ms: 400,
        },
        perf_interval: Duration::from_millis(200),
        server_poll_interval: Duration::from_millis(100),
        quiet_probe_after: Duration::from_secs(5),
        request_timeout: Duration::from_secs(3),
        ..ControlConfig::default()
    }
}

async fn sim(id: &str, api: ApiGen) -> SimHost {
    let spec = HostSpec::llama_swap(
        id,
        api,
        vec![ModelSpec::new("alpha"), ModelSpec::new("beta")],
    )
    .with_time_scale(0.001);
    start_host(spec).await.expect("sim host")
}

async fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.path().join("fleet.db").display());
    boo_telemetry_store::open(&url).await.expect("sqlite store")
}

struct Running {
    api: ControlApi,
    base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn gateway(c: ControlConfig, hosts: Vec<HostTarget>, st: Option<Arc<dyn Store>>) -> Running {
    let api = ControlApi::start(c, hosts, st)
        .await
        .expect("control start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let a = api.clone();
    tokio::spawn(async move {
        a.serve(listener, async {
            let _ = rx.await;
        })
        .await;
    });
    Running {
        api,
        base,
        _stop: tx,
    }
}

async fn call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (u16, Value) {
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
        .header("host", "x");
    for (k, v) in headers {
        b = b.header(*k, *v);
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

/// A `/api/fleet/stream` subscriber reducing into a `FleetView`, keeping every delta.
#[derive(Clone, Default)]
struct Watcher {
    inner: Arc<Mutex<(FleetView, Vec<Delta>, usize)>>,
}

impl Watcher {
    async fn connect(base: &str) -> Watcher {
        let w = Watcher::default();
        let uri: hyper::Uri = format!("{base}/api/fleet/stream").parse().unwrap();
        let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
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
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut body = resp.into_body();
        let inner = w.inner.clone();
        tokio::spawn(async move {
            let mut dec = SseDecoder::new();
            while let Some(Ok(f)) = body.frame().await {
                let Ok(data) = f.into_data() else { continue };
                for m in dec.push(&data).unwrap() {
                    let mut g = inner.lock().unwrap();
                    match m.event.as_str() {
                        "snapshot" => {
                            let s: FleetSnapshot = serde_json::from_str(&m.data).unwrap();
                            g.0.apply_snapshot(s);
                            g.2 += 1;
                        }
                        "delta" => {
                            let d: Delta = serde_json::from_str(&m.data).unwrap();
                            g.0.apply_delta(d.clone());
                            g.1.push(d);
                        }
                        other => panic!("unexpected event {other:?}"),
                    }
                }
            }
        });
        w
    }

    async fn wait(&self, what: &str, pred: impl Fn(&FleetView) -> bool) {
        let deadline = tokio::time::Instant::now() + GUARD;
        loop {
            if pred(&self.inner.lock().unwrap().0) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; view: {:?}",
                self.inner.lock().unwrap().0.hosts()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn deltas(&self) -> Vec<Delta> {
        self.inner.lock().unwrap().1.clone()
    }
}

fn liveness(v: &FleetView, p: &str) -> Option<LivenessState> {
    v.host(p).map(|h| h.liveness)
}

fn model(v: &FleetView, p: &str, m: &str) -> Option<ModelState> {
    v.host(p)?.models.get(m).map(|s| s.state)
}

async fn wait_until<F: std::future::Future<Output = bool>>(what: &str, f: impl Fn() -> F) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn host_rows(st: &Arc<dyn Store>, p: &str) -> Vec<(String, String)> {
    let filter = FeedFilter {
        provider_id: Some(p.into()),
        origin: Some(FeedOrigin::Host),
        ..FeedFilter::default()
    };
    let page = st.feed(&filter, None, 1000).await.unwrap();
    page.rows.into_iter().map(|r| (r.id, r.model)).collect()
}

/// The model states of `m` in the order the stream delivered them.
fn states_of(deltas: &[Delta], m: &str) -> Vec<ModelState> {
    let mut out: Vec<ModelState> = Vec::new();
    for d in deltas {
        if let Change::Model { model, status } = &d.change
            && model == m
            && out.last() != Some(&status.state)
        {
            out.push(status.state);
        }
    }
    out
}

async fn lifecycle(api_gen: ApiGen) {
    let dir = tempfile::tempdir().unwrap();
    let st = store(&dir).await;
    let host = sim("gpu-1", api_gen).await;
    let gw = gateway(
        cfg(),
        vec![HostTarget::llama_swap("gpu-1", &host.base_url())],
        Some(st.clone()),
    )
    .await;
    let w = Watcher::connect(&gw.base).await;
    w.wait("connected with both models listed", |v| {
        liveness(v, "gpu-1") == Some(LivenessState::Connected)
            && model(v, "gpu-1", "alpha") == Some(ModelState::Stopped)
            && model(v, "gpu-1", "beta") == Some(ModelState::Stopped)
    })
    .await;

    // GET /api/fleet agrees with the stream.
    let (s, snap) = call("GET", &format!("{}/api/fleet", gw.base), &[], None).await;
    assert_eq!(s, 200);
    assert_eq!(snap["hosts"][0]["provider"], "gpu-1");
    assert_eq!(snap["hosts"][0]["liveness"], "connected");

    // Warm alpha by composite id: a 1-token chat completion with the bare wire id.
    let url = format!("{}/api/hosts/gpu-1/actions", gw.base);
    let (s, body) = call(
        "POST",
        &url,
        &[],
        Some(json!({"action":"warm","model":"gpu-1/alpha"})),
    )
    .await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["accepted"], true);
    assert_eq!(body["action"], json!({"action":"warm","model":"alpha"}));
    w.wait("alpha ready", |v| {
        model(v, "gpu-1", "alpha") == Some(ModelState::Ready)
    })
    .await;
    let sent = host.stats().received_on("/v1/chat/completions");
    assert_eq!(sent.len(), 1);
    let req = sent[0].json().unwrap();
    assert_eq!(
        (req["model"].as_str(), req["max_tokens"].as_u64()),
        (Some("alpha"), Some(1))
    );

    // Warm beta: the swap shows up in the stream in order.
    let (s, _) = call(
        "POST",
        &url,
        &[],
        Some(json!({"action":"warm","model":"beta"})),
    )
    .await;
    assert_eq!(s, 202);
    w.wait("beta ready, alpha stopped", |v| {
        model(v, "gpu-1", "beta") == Some(ModelState::Ready)
            && model(v, "gpu-1", "alpha") == Some(ModelState::Stopped)
    })
    .await;
    let deltas = w.deltas();
    let alpha = states_of(&deltas, "alpha");
    let pos = |v: &[ModelState], s: ModelState| v.iter().position(|x| *x == s);
    assert_eq!(alpha.last(), Some(&ModelState::Stopped), "{alpha:?}");
    assert!(
        pos(&alpha, ModelState::Starting) < pos(&alpha, ModelState::Ready),
        "{alpha:?}"
    );
    let beta = states_of(&deltas, "beta");
    assert_eq!(beta.last(), Some(&ModelState::Ready), "{beta:?}");
    assert!(pos(&beta, ModelState::Starting).is_some(), "{beta:?}");
    // Per-host seq strictly increases along the stream.
    let seqs: Vec<u64> = deltas
        .iter()
        .filter(|d| d.provider == "gpu-1")
        .map(|d| d.seq)
        .collect();
    assert!(seqs.windows(2).all(|p| p[0] < p[1]), "{seqs:?}");

    // Unload beta through the host's unload API.
    let (s, _) = call(
        "POST",
        &url,
        &[],
        Some(json!({"action":"unload","model":"beta"})),
    )
    .await;
    assert_eq!(s, 202);
    w.wait("beta stopped", |v| {
        model(v, "gpu-1", "beta") == Some(ModelState::Stopped)
    })
    .await;
    assert_eq!(host.stats().requests("/api/models/unload/beta"), 1);

    // Both warm requests became activity rows in the store.
    wait_until("2 activity rows", || {
        let st = st.clone();
        async move { host_rows(&st, "gpu-1").await.len() == 2 }
    })
    .await;

    // Host killed: reconnecting, then down once the breaker opens.
    host.faults().host_down().await;
    w.wait("reconnecting", |v| {
        liveness(v, "gpu-1") != Some(LivenessState::Connected)
    })
    .await;
    w.wait("down", |v| {
        liveness(v, "gpu-1") == Some(LivenessState::Down)
    })
    .await;
    let (s, body) = call(
        "POST",
        &url,
        &[],
        Some(json!({"action":"warm","model":"alpha"})),
    )
    .await;
    assert_eq!(s, 503, "host down rejects actions: {body}");

    // Back up: the half-open probe reconnects, reconcile stores no duplicates.
    host.faults().host_up().await;
    w.wait("connected again", |v| {
        liveness(v, "gpu-1") == Some(LivenessState::Connected)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows = host_rows(&st, "gpu-1").await;
    assert_eq!(
        rows.len(),
        2,
        "no duplicate activity rows after reconnect: {rows:?}"
    );

    // No probe ever loaded a model: the only inference requests are the two warms.
    assert_eq!(host.stats().inference_requests(), 2);
    assert!(
        host.stats()
            .per_path()
            .keys()
            .all(|p| !p.starts_with("/upstream")),
        "{:?}",
        host.stats().per_path()
    );
    // Perf was polled and persisted.
    assert!(host.stats().requests("/api/performance") > 0);
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_host_lifecycle_warm_swap_unload_down_up() {
    lifecycle(ApiGen::Current).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_host_lifecycle_warm_swap_unload_down_up() {
    lifecycle(ApiGen::Legacy).await;
}

async fn gap_after_restart(api_gen: ApiGen) {
    let dir = tempfile::tempdir().unwrap();
    let st = store(&dir).await;
    let host = sim("gpu-2", api_gen).await;
    let mut c = cfg();
    c.policy.probe_interval_ms = 3_000; // window for restart + new traffic before the probe
    let gw = gateway(
        c,
        vec![HostTarget::llama_swap("gpu-2", &host.base_url())],
        Some(st.clone()),
    )
    .await;
    let w = Watcher::connect(&gw.base).await;
    w.wait("connected", |v| {
        liveness(v, "gpu-2") == Some(LivenessState::Connected)
    })
    .await;
    let chat = json!({"model":"alpha","messages":[{"role":"user","content":"x"}],"max_tokens":2});
    for _ in 0..2 {
        let r = boo_fleet_sim::client::post_json(&host.base_url(), "/v1/chat/completions", &chat)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    wait_until("2 rows", || {
        let st = st.clone();
        async move { host_rows(&st, "gpu-2").await.len() == 2 }
    })
    .await;

    // Down long enough for the breaker, then a restart (ring and ids reset) with new traffic
    // before the connector's next probe.
    host.faults().host_down().await;
    w.wait("down", |v| {
        liveness(v, "gpu-2") == Some(LivenessState::Down)
    })
    .await;
    // fleet-sim stamps rows with whole seconds: let the clock move on so a restarted host's
    // row 2 is not the same (id, ts) as the old row 2.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    host.faults().host_up().await;
    host.faults().restart().await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..3 {
        let r = boo_fleet_sim::client::post_json(&host.base_url(), "/v1/chat/completions", &chat)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    w.wait("connected", |v| {
        liveness(v, "gpu-2") == Some(LivenessState::Connected)
    })
    .await;
    wait_until("gap_suspected event", || {
        let st = st.clone();
        async move {
            st.latest_model_states()
                .await
                .unwrap()
                .iter()
                .any(|s| s.provider_id == "gpu-2" && s.model == "*" && s.state == "gap_suspected")
        }
    })
    .await;
    // Old and new rows both kept (legacy ids restart at 0: the timestamp tells them apart).
    wait_until("5 rows", || {
        let st = st.clone();
        async move { host_rows(&st, "gpu-2").await.len() == 5 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_current_host_with_new_ids_gives_gap_suspected() {
    gap_after_restart(ApiGen::Current).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_legacy_host_with_rolled_ring_gives_gap_suspected() {
    gap_after_restart(ApiGen::Legacy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_errors_auth_queue_full_lease_and_bad_body() {
    let host = sim("gpu-3", ApiGen::Current).await;
    let mut c = cfg();
    c.admin_token = Some("s3cret-admin".into());
    let gw = gateway(
        c,
        vec![HostTarget::llama_swap("gpu-3", &host.base_url())],
        None,
    )
    .await;
    let w = Watcher::connect(&gw.base).await;
    w.wait("connected", |v| {
        liveness(v, "gpu-3") == Some(LivenessState::Connected)
    })
    .await;
    let url = format!("{}/api/hosts/gpu-3/actions", gw.base);
    let auth = [("authorization", "Bearer s3cret-admin")];
    let warm = |m: &str| Some(json!({"action":"warm","model":m}));

    // 401 without or with a wrong token; the body never echoes the token.
    let (s, b) = call("POST", &url, &[], warm("alpha")).await;
    assert_eq!(s, 401);
    assert!(!b.to_string().contains("s3cret"));
    let (s, _) = call(
        "POST",
        &url,
        &[("authorization", "Bearer nope")],
        warm("alpha"),
    )
    .await;
    assert_eq!(s, 401);

    // 400: bad body names the problem.
    let (s, b) = call("POST", &url, &auth, Some(json!({"action":"explode"}))).await;
    assert_eq!(s, 400);
    assert!(
        b["error"]["message"].as_str().unwrap().contains("body"),
        "{b}"
    );
    // 404: unknown host.
    let (s, _) = call(
        "POST",
        &format!("{}/api/hosts/nope/actions", gw.base),
        &auth,
        warm("a"),
    )
    .await;
    assert_eq!(s, 404);

    // 429: the executor is stuck on a hung warm; the queue fills up.
    host.faults().hang();
    let mut statuses = Vec::new();
    let mut last = Value::Null;
    for m in ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"] {
        let (s, b) = call("POST", &url, &auth, warm(m)).await;
        statuses.push(s);
        last = b;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(statuses.first(), Some(&202));
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        last["queued"].as_array().is_some_and(|q| !q.is_empty()),
        "{last}"
    );

    host.faults().clear_hang();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_lease_requires_confirmation() {
    let host = sim("gpu-5", ApiGen::Current).await;
    let gw = gateway(
        cfg(),
        vec![HostTarget::llama_swap("gpu-5", &host.base_url())],
        None,
    )
    .await;
    let w = Watcher::connect(&gw.base).await;
    w.wait("connected", |v| {
        liveness(v, "gpu-5") == Some(LivenessState::Connected)
    })
    .await;
    let url = format!("{}/api/hosts/gpu-5/actions", gw.base);
    let lease = gw.api.acquire_lease("gpu-5", "bench", "bench-1").unwrap();
    let (s, b) = call(
        "POST",
        &url,
        &[],
        Some(json!({"action":"warm","model":"alpha"})),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["requiresConfirmation"], true);
    let (s, _) = call(
        "POST",
        &format!("{url}?confirm=true"),
        &[],
        Some(json!({"action":"warm","model":"alpha"})),
    )
    .await;
    assert_eq!(s, 202);
    w.wait("alpha ready", |v| {
        model(v, "gpu-5", "alpha") == Some(ModelState::Ready)
    })
    .await;
    assert!(gw.api.release_lease(&lease));
    w.wait("lease released", |v| {
        v.host("gpu-5").is_some_and(|h| h.lease.is_none())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_restart_rebuilds_view_from_store_and_logs_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let host = sim("gpu-6", ApiGen::Current).await;
    {
        let gw = gateway(
            cfg(),
            vec![HostTarget::llama_swap("gpu-6", &host.base_url())],
            Some(store(&dir).await),
        )
        .await;
        let w = Watcher::connect(&gw.base).await;
        w.wait("connected", |v| {
            liveness(v, "gpu-6") == Some(LivenessState::Connected)
        })
        .await;
        let url = format!("{}/api/hosts/gpu-6/actions", gw.base);
        let (s, _) = call(
            "POST",
            &url,
            &[],
            Some(json!({"action":"warm","model":"beta"})),
        )
        .await;
        assert_eq!(s, 202);
        w.wait("beta ready", |v| {
            model(v, "gpu-6", "beta") == Some(ModelState::Ready)
        })
        .await;
        // Logs: the tail holds the host's lines and our action outcome.
        wait_until("action logged", || {
            let base = gw.base.clone();
            async move {
                let (s, b) =
                    call("GET", &format!("{base}/api/logs/gpu-6?tail=50"), &[], None).await;
                s == 200
                    && b["lines"].as_array().is_some_and(|l| {
                        l.iter()
                            .any(|x| x["line"].as_str().unwrap_or("").contains("warm(beta)"))
                    })
            }
        })
        .await;
        let (s, _) = call("GET", &format!("{}/api/logs/nope", gw.base), &[], None).await;
        assert_eq!(s, 404);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The gateway is gone and the host is unreachable: a new gateway over the same file still
    // shows what was last known.
    host.faults().host_down().await;
    let st = store(&dir).await;
    let gw = gateway(
        cfg(),
        vec![HostTarget::llama_swap("gpu-6", &host.base_url())],
        Some(st),
    )
    .await;
    let (s, snap) = call("GET", &format!("{}/api/fleet", gw.base), &[], None).await;
    assert_eq!(s, 200);
    let h = &snap["hosts"][0];
    assert_eq!(h["provider"], "gpu-6");
    assert_eq!(h["models"]["beta"]["state"], "ready", "{snap}");
    assert_eq!(h["models"]["alpha"]["state"], "stopped", "{snap}");
    assert!(h["last_seen_at"].as_u64().is_some(), "{snap}");
    assert_ne!(h["liveness"], "connected");
}

#[test]
fn non_loopback_listen_needs_admin_token_or_explicit_opt_out() {
    let public = "0.0.0.0:9503".parse().unwrap();
    let local = "127.0.0.1:9503".parse().unwrap();
    assert!(matches!(
        check_admin_exposure(public, None, false),
        Err(ControlError::UnauthenticatedAdmin { .. })
    ));
    assert!(check_admin_exposure(public, Some("t"), false).is_ok());
    assert!(check_admin_exposure(public, None, true).is_ok());
    assert!(check_admin_exposure(local, None, false).is_ok());
    let msg = check_admin_exposure(public, Some(""), false)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("--allow-unauthenticated-admin"), "{msg}");
}

/// Raw bytes of a streaming GET, accumulated.
async fn raw_stream(base: &str, path: &str) -> Arc<Mutex<String>> {
    let uri: hyper::Uri = base.parse().unwrap();
    let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let buf = Arc::new(Mutex::new(String::new()));
    let b = buf.clone();
    let mut body = resp.into_body();
    tokio::spawn(async move {
        while let Some(Ok(f)) = body.frame().await {
            if let Ok(d) = f.into_data() {
                b.lock().unwrap().push_str(&String::from_utf8_lossy(&d));
            }
        }
    });
    buf
}

async fn wait_text(buf: &Arc<Mutex<String>>, what: &str, needle: &str) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !buf.lock().unwrap().contains(needle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            buf.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_stream_heartbeat_and_captures_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let st = store(&dir).await;
    let host = sim("gpu-7", ApiGen::Current).await;
    let mut c = cfg();
    c.heartbeat = Duration::from_millis(100);
    let gw = gateway(
        c,
        vec![HostTarget::llama_swap("gpu-7", &host.base_url())],
        Some(st.clone()),
    )
    .await;
    let fleet = raw_stream(&gw.base, "/api/fleet/stream").await;
    wait_text(&fleet, "snapshot first", "event: snapshot\ndata: {").await;
    assert!(fleet.lock().unwrap().starts_with("event: snapshot\n"));
    wait_text(&fleet, "heartbeat", ": heartbeat\n\n").await;
    let w = Watcher::connect(&gw.base).await;
    w.wait("connected", |v| {
        liveness(v, "gpu-7") == Some(LivenessState::Connected)
    })
    .await;

    // A request through the host: its log lines and its capture.
    let chat =
        json!({"model":"alpha","messages":[{"role":"user","content":"capture me"}],"max_tokens":3});
    let r = boo_fleet_sim::client::post_json(&host.base_url(), "/v1/chat/completions", &chat)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let logs = raw_stream(&gw.base, "/api/logs/gpu-7/stream").await;
    wait_text(&logs, "a log event", "event: log\ndata: {\"line\":").await;
    // `?tail=N` limits the history sent before live lines (what `booctl logs -f --tail N` asks).
    let (s, all) = call(
        "GET",
        &format!("{}/api/logs/gpu-7?tail=2000", gw.base),
        &[],
        None,
    )
    .await;
    assert_eq!(s, 200);
    let history = all["lines"].as_array().unwrap().len();
    assert!(
        history >= 3,
        "expected several log lines after a request: {all}"
    );
    let one = raw_stream(&gw.base, "/api/logs/gpu-7/stream?tail=1").await;
    wait_text(&one, "heartbeat on the tail=1 stream", ": heartbeat\n\n").await;
    let text = one.lock().unwrap().clone();
    let before_beat = &text[..text.find(": heartbeat").unwrap()];
    let sent = before_beat.matches("event: log\n").count();
    assert!(
        (1..history).contains(&sent),
        "tail=1 sent {sent} of {history} history lines before the first heartbeat"
    );
    let (s, _) = call(
        "GET",
        &format!("{}/api/logs/gpu-7?tail=abc", gw.base),
        &[],
        None,
    )
    .await;
    assert_eq!(s, 400);

    wait_until("activity row", || {
        let st = st.clone();
        async move { !host_rows(&st, "gpu-7").await.is_empty() }
    })
    .await;
    let url = format!("{}/api/captures/gpu-7/1", gw.base);
    let (s, cap) = call("GET", &url, &[], None).await;
    assert_eq!(s, 200, "{cap}");
    assert_eq!(cap["id"], 1);
    assert_eq!(cap["provider"], "gpu-7");
    assert_eq!(cap["req_path"], "/v1/chat/completions");
    assert!(
        cap["req_body"].as_str().unwrap().contains("capture me"),
        "{cap}"
    );
    assert_eq!(cap["truncated"], false);
    // Persisted: still served once the host is gone.
    host.faults().host_down().await;
    let (s, again) = call("GET", &url, &[], None).await;
    assert_eq!(s, 200);
    assert_eq!(again, cap);
    let (s, _) = call(
        "GET",
        &format!("{}/api/captures/gpu-7/x", gw.base),
        &[],
        None,
    )
    .await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llama_server_host_is_polled_without_inference() {
    let spec = HostSpec::llama_server("srv-1", ModelSpec::new("solo")).with_time_scale(0.001);
    let host = start_host(spec).await.unwrap();
    let gw = gateway(
        cfg(),
        vec![HostTarget::llama_server("srv-1", &host.base_url())],
        None,
    )
    .await;
    let w = Watcher::connect(&gw.base).await;
    w.wait("connected with its model ready", |v| {
        liveness(v, "srv-1") == Some(LivenessState::Connected)
            && v.host("srv-1")
                .is_some_and(|h| h.models.values().any(|m| m.state == ModelState::Ready))
    })
    .await;
    assert!(host.stats().requests("/health") > 0);
    assert!(host.stats().requests("/props") > 0);
    assert!(host.stats().requests("/slots") > 0);
    assert_eq!(host.stats().inference_requests(), 0);
    host.faults().host_down().await;
    w.wait("not connected", |v| {
        liveness(v, "srv-1") != Some(LivenessState::Connected)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_run_serves_control_api_with_admin_token() {
    use boo_provider_registry::{MapEnv, from_json_str};
    let host = sim("gpu-8", ApiGen::Current).await;
    let json = format!(
        r#"{{ "providers": [{{ "id": "gpu-8", "kind": "llama-swap", "base_url": "{}" }}],
             "gateway": {{ "admin_token": "adm-tok" }} }}"#,
        host.base_url()
    );
    let env = MapEnv::new().with("ADMIN", "adm-tok");
    let reg = Arc::new(from_json_str(&json, &env).expect("valid config").registry);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut opts = boo_gateway_http::RunOptions::new(reg.clone());
    opts.follow_fleet = true;
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    let w = Watcher::connect(&base).await;
    w.wait("connected through the gateway", |v| {
        liveness(v, "gpu-8") == Some(LivenessState::Connected)
    })
    .await;
    let url = format!("{base}/api/hosts/gpu-8/actions");
    let body = Some(json!({"action":"warm","model":"gpu-8/alpha"}));
    let (s, _) = call("POST", &url, &[], body.clone()).await;
    assert_eq!(s, 401);
    let (s, b) = call("POST", &url, &[("authorization", "Bearer adm-tok")], body).await;
    assert_eq!(s, 202, "{b}");
    w.wait("alpha ready", |v| {
        model(v, "gpu-8", "alpha") == Some(ModelState::Ready)
    })
    .await;

    // A public listen address without the token is refused unless explicitly allowed.
    let json = r#"{ "providers": [{ "id": "x", "kind": "llama-swap", "base_url": "http://127.0.0.1:9" }] }"#;
    let reg = Arc::new(from_json_str(json, &MapEnv::new()).unwrap().registry);
    let l = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let r = boo_gateway_http::run_on(l, boo_gateway_http::RunOptions::new(reg), async {}).await;
    let e = r.unwrap_err().to_string();
    assert!(e.contains("--allow-unauthenticated-admin"), "{e}");
    drop(tx);
}

/// A current llama-swap sim `id` followed by a gateway (activity fetched per `batch` window)
/// with a SQLite store, once the host shows as connected.
async fn followed_host(
    id: &str,
    batch: Duration,
) -> (tempfile::TempDir, Arc<dyn Store>, SimHost, Running) {
    let dir = tempfile::tempdir().unwrap();
    let st = store(&dir).await;
    let host = sim(id, ApiGen::Current).await;
    let c = ControlConfig {
        activity_batch: batch,
        ..cfg()
    };
    let gw = gateway(
        c,
        vec![HostTarget::llama_swap(id, &host.base_url())],
        Some(st.clone()),
    )
    .await;
    let w = Watcher::connect(&gw.base).await;
    w.wait("connected", |v| {
        liveness(v, id) == Some(LivenessState::Connected)
    })
    .await;
    (dir, st, host, gw)
}

/// `n` small chat completions straight to `host`, `at_once` at a time; each must succeed.
async fn chats(host: &SimHost, n: usize, at_once: usize) {
    let url = format!("{}/v1/chat/completions", host.base_url());
    let body = json!({"model": "alpha", "max_tokens": 2,
        "messages": [{"role": "user", "content": "hi"}]});
    let json_ct = [("content-type", "application/json")];
    for _ in 0..n / at_once {
        let calls = (0..at_once).map(|_| call("POST", &url, &json_ct, Some(body.clone())));
        for (s, b) in futures::future::join_all(calls).await {
            assert_eq!(s, 200, "{b}");
        }
    }
}

/// Sends `n` chats (8 at a time) straight to `host` (followed as `id`), waits until every
/// activity row is stored, then `settle` longer, and checks that each row is stored exactly
/// once. Returns how many activity fetches the host answered meanwhile.
async fn chats_with_rows_stored(
    st: &Arc<dyn Store>,
    host: &SimHost,
    id: &str,
    n: usize,
    settle: Duration,
) -> u64 {
    let fetches_before = host.stats().requests("/api/metrics/activity");
    chats(host, n, 8).await;
    wait_until("every request's activity row stored", || async {
        host_rows(st, id).await.len() >= n
    })
    .await;
    // Nothing more arrives later, and no row is stored twice.
    tokio::time::sleep(settle).await;
    let rows = host_rows(st, id).await;
    let ids: std::collections::HashSet<_> = rows.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!((rows.len(), ids.len()), (n, n), "{rows:?}");
    host.stats().requests("/api/metrics/activity") - fetches_before
}

/// On a busy llama-swap host the connector fetches the activity rows its events announce in
/// batches (one range request per window, not one per request), and every row is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_host_activity_is_fetched_in_batches_and_every_row_is_stored() {
    let (_dir, st, host, _gw) = followed_host("busy", Duration::from_millis(300)).await;
    const N: usize = 48;
    let fetches = chats_with_rows_stored(&st, &host, "busy", N, Duration::from_millis(400)).await;
    assert!(
        fetches <= (N / 4) as u64,
        "{fetches} activity fetches for {N} requests"
    );
}

/// A failed activity fetch keeps its id range: rows announced while the host's activity API
/// answers 500 are stored once it recovers, with no new request needed to trigger it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_rows_announced_during_an_activity_api_outage_are_stored_after_it() {
    let (_dir, st, host, _gw) = followed_host("flaky", Duration::from_millis(50)).await;
    let fetches_before = host.stats().requests("/api/metrics/activity");
    host.faults().fail_activity_api(true);
    chats(&host, 5, 1).await;
    wait_until("activity fetches that fail", || async {
        host.stats().requests("/api/metrics/activity") >= fetches_before + 2
    })
    .await;
    assert!(host_rows(&st, "flaky").await.is_empty());
    host.faults().fail_activity_api(false);
    wait_until("the five rows stored after the outage", || async {
        host_rows(&st, "flaky").await.len() == 5
    })
    .await;
}

/// A window that announces more rows than one page fetches them page after page (each request
/// short for the host), and every row arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_with_many_rows_is_fetched_in_small_pages() {
    let (_dir, st, host, _gw) = followed_host("pages", Duration::from_secs(2)).await;
    const N: usize = 240;
    let fetches = chats_with_rows_stored(&st, &host, "pages", N, Duration::ZERO).await;
    // The first row after the quiet spell comes alone; the rest (one window, or two if the
    // requests straddled one) needs at least three pages of 100.
    assert!(
        (4..=12).contains(&fetches),
        "{fetches} activity fetches for {N} rows"
    );
}
