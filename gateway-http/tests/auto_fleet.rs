//! `auto:*` with the live fleet control plane and the telemetry store, over real TCP against
//! fleet-sim hosts:
//!
//! * the router reads model states and host liveness from the `FleetHub` (the inventory
//!   poller is slowed to one poll so only the hub can know): the loaded model wins, a down
//!   host is skipped;
//! * a model that is still loading does not use up the first-byte budget when the policy
//!   allows cold starts (and does when it does not);
//! * policies set through the API persist in the store (SQLite; Postgres with
//!   `DATABASE_URL`), override config policies, config policies cannot be deleted (409), and
//!   the dispatch log comes back after a restart;
//! * changing policies needs the admin token (401 / 403), reading takes a client key.

mod common;

use boo_fleet_core::ReconnectPolicy;
use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, SimHost, client, start_host};
use boo_gateway_http::auto::{AutoRouter, HubFleet, LiveFleet, PollerFleet};
use boo_gateway_http::control::{ControlApi, ControlConfig, HostTarget};
use boo_gateway_http::{
    Gateway, GatewayConfig, NoopSink, RegistryRouter, RunOptions, StoreOptions, StoreTarget,
    upstream_specs,
};
use boo_provider_registry::{MapEnv, Registry, from_json_str};
use boo_telemetry_store::{BatchConfig, Store};
use bytes::Bytes;
use common::post;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn model(id: &str, load_ms: u64) -> ModelSpec {
    let mut m = ModelSpec::new(id);
    m.n_ctx = 32768;
    m.load_ms = load_ms;
    m.gen_tps = 0.0;
    m.prompt_tps = 0.0;
    m
}

async fn host(id: &str, models: Vec<ModelSpec>) -> SimHost {
    start_host(HostSpec::llama_swap(id, ApiGen::Current, models))
        .await
        .expect("sim host starts")
}

fn registry(hosts: &[&SimHost], models: &[&str], policies: Value) -> Registry {
    let providers: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({"id": h.id(), "kind": "llama-swap", "base_url": h.base_url(),
                   "models": models.iter().map(|m| json!({"id": m, "tags": ["code"]})).collect::<Vec<_>>()})
        })
        .collect();
    let doc = json!({"providers": providers, "policies": policies});
    from_json_str(&doc.to_string(), &MapEnv::new())
        .expect("valid config")
        .registry
}

/// A gateway assembled by hand: the inventory poller polls once (so it never sees later
/// changes), the control plane follows the hosts with a fast breaker, and the router reads
/// the hub through [`HubFleet`].
async fn hub_gateway(reg: Registry) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let reg = Arc::new(reg);
    let router = Arc::new(RegistryRouter::new(reg.clone()));
    let poller = router.spawn_poller(Duration::from_secs(3600));
    let control = ControlApi::start(
        ControlConfig {
            policy: ReconnectPolicy {
                base_ms: 20,
                max_ms: 50,
                jitter_max: 0.0,
                breaker_threshold: 2,
                probe_interval_ms: 60_000,
            },
            request_timeout: Duration::from_millis(500),
            ..ControlConfig::default()
        },
        HostTarget::from_registry(&reg),
        None,
    )
    .await
    .expect("control plane");
    let fallback: Arc<dyn LiveFleet> = Arc::new(PollerFleet::new(router.clone()));
    let live = Arc::new(HubFleet::new(control.hub().clone(), fallback));
    let (auto, problems) = AutoRouter::new(reg.clone(), live);
    assert!(problems.is_empty(), "{problems:?}");
    let gw = Gateway::new(
        GatewayConfig::default(),
        router,
        &upstream_specs(&reg),
        Arc::new(NoopSink),
    )
    .expect("gateway")
    .with_auto(Arc::new(auto))
    .with_control(control);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = gw
            .serve(l, async {
                let _ = rx.await;
            })
            .await;
        poller.abort();
    });
    (addr, tx)
}

async fn explain(addr: SocketAddr, body: &str) -> Value {
    let (s, _, b) = post(addr, "/api/routing/explain", &[], body).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

/// Polls `explain` until `f` holds (10 s at most).
async fn until(addr: SocketAddr, body: &str, f: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..500 {
        last = explain(addr, body).await;
        if f(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("condition never held; last explain: {last:#}");
}

fn chat(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":4}}"#)
}

#[tokio::test]
async fn hub_state_decides_the_loaded_model_wins_and_a_down_host_is_skipped() {
    let desk = host("desk", vec![model("coder", 10)]).await;
    let laptop = host("laptop", vec![model("coder", 10)]).await;
    let reg = registry(
        &[&desk, &laptop],
        &["coder"],
        json!([{"name": "auto:code", "candidates": ["tag:code"], "order": ["prefer_loaded"]}]),
    );
    let (addr, _stop) = hub_gateway(reg).await;
    let q = r#"{"model":"auto:code"}"#;
    // Both connected and cold: ties break by composite id.
    until(addr, q, |v| {
        v["decision"]["attempts"][0]["model"] == "desk/coder"
            && v["decision"]["attempts"][0]["state"] == "stopped"
    })
    .await;

    // Load the model on the laptop directly; only the hub (event stream) can see it, the
    // poller polled once at start.
    let r = client::post_json(
        &laptop.base_url(),
        "/v1/chat/completions",
        &json!({"model": "coder", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    until(addr, q, |v| {
        v["decision"]["attempts"][0]["model"] == "laptop/coder"
    })
    .await;
    let (s, h, _) = post(addr, "/v1/chat/completions", &[], &chat("auto:code")).await;
    assert_eq!(
        (s, h["x-boo-model"].to_str().unwrap()),
        (200, "laptop/coder")
    );
    assert_eq!(desk.stats().requests("/v1/chat/completions"), 0);

    // The desk host dies: the hub's breaker marks it down and the decision skips it (the
    // poller still thinks it is reachable).
    desk.faults().host_down().await;
    let v = until(addr, q, |v| {
        v["header"]
            .as_str()
            .is_some_and(|h| h.contains("desk/coder=down"))
    })
    .await;
    assert_eq!(
        v["decision"]["attempts"].as_array().unwrap().len(),
        1,
        "{v}"
    );
    assert!(v["text"].as_str().unwrap().contains("host down"), "{v}");
}

#[tokio::test]
async fn a_loading_model_does_not_use_up_the_first_byte_budget_when_cold_starts_are_allowed() {
    // desk/big takes 2.5 s to load, far over the 300 ms first-byte budget.
    let desk = host("desk", vec![model("big", 2_500)]).await;
    let laptop = host("laptop", vec![model("big", 10)]).await;
    let limits = |cold: bool| {
        json!({"max_attempts": 2, "total_deadline_ms": 20000, "first_byte_ms": 300,
               "allow_cold_start": cold})
    };
    let reg = registry(
        &[&desk, &laptop],
        &["big"],
        json!([
            {"name": "auto:patient", "candidates": ["desk/big", "laptop/big"],
             "order": ["priority"], "limits": limits(true)},
            {"name": "auto:hurried", "candidates": ["desk/big", "laptop/big"],
             "order": ["priority"], "limits": limits(false)},
        ]),
    );
    let (addr, _stop) = hub_gateway(reg).await;
    // The laptop has it loaded (the fallback).
    let r = client::post_json(
        &laptop.base_url(),
        "/v1/chat/completions",
        &json!({"model": "big", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    // Someone starts loading big on the desk.
    let desk_url = desk.base_url();
    let loader = tokio::spawn(async move {
        client::post_json(
            &desk_url,
            "/v1/chat/completions",
            &json!({"model": "big", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
        )
        .await
    });
    let q = r#"{"model":"auto:patient"}"#;
    until(addr, q, |v| {
        v["decision"]["attempts"][0]["state"] == "starting"
            && v["decision"]["attempts"][1]["state"] == "ready"
    })
    .await;

    // Without cold starts the 300 ms budget runs out while desk loads: failover to laptop.
    let (s, h, b) = post(addr, "/v1/chat/completions", &[], &chat("auto:hurried")).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["x-boo-model"], "laptop/big");

    // With cold starts the load time does not count: desk serves once loaded.
    let (s, h, b) = post(addr, "/v1/chat/completions", &[], &chat("auto:patient")).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["x-boo-model"], "desk/big");
    assert_eq!(laptop.stats().requests("/v1/chat/completions"), 2);

    // The dispatch log shows why: a first-byte timeout on desk, then laptop; and the load
    // wait excluded from the budget.
    let log = log_with(addr, None, "", 2).await;
    let entry = |p: &str| {
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["policy"] == p)
            .cloned()
            .unwrap_or_else(|| panic!("no {p} entry: {log:#}"))
    };
    let hurried = entry("auto:hurried");
    let att = &hurried["route"]["failover"]["attempts"];
    assert_eq!(att[0]["outcome"]["kind"], "first_byte_timeout", "{hurried}");
    assert_eq!(att[1]["model"], "laptop/big", "{hurried}");
    let patient = entry("auto:patient");
    let att = &patient["route"]["failover"]["attempts"];
    assert_eq!(att.as_array().unwrap().len(), 1, "{patient}");
    assert!(
        att[0]["load_wait_ms"].as_u64().unwrap_or(0) > 300,
        "{patient}"
    );
    assert_eq!(loader.await.unwrap().unwrap().status, 200);
}

// ----- store persistence and admin auth (through `run_on`, the production start-up) -----

struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), boo_gateway_http::GatewayError>>,
}

impl Running {
    /// Stops the gateway and waits until it flushed its records.
    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

const ADMIN: &str = "admin-secret";
const CLIENT: &str = "client-key";

async fn stored_gateway(desk: &SimHost, store: Arc<dyn Store>) -> Running {
    let doc = json!({
        "gateway": {"admin_token": ADMIN, "api_keys": [CLIENT]},
        "providers": [{"id": "desk", "kind": "llama-swap", "base_url": desk.base_url(),
                       "models": [{"id": "coder", "tags": ["code"]}, {"id": "small", "tags": ["fast"]}]}],
        "policies": [
            {"name": "auto", "candidates": ["desk/coder"]},
            {"name": "auto:code", "candidates": ["tag:code"]},
        ]
    });
    let reg = from_json_str(&doc.to_string(), &MapEnv::new())
        .expect("valid config")
        .registry;
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.poll_every = Duration::from_millis(100);
    opts.follow_fleet = true;
    opts.store = Some(StoreOptions {
        store: StoreTarget::Open(store),
        batch: BatchConfig {
            flush_interval: Duration::from_millis(20),
            ..BatchConfig::default()
        },
        retention: None,
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut c = common::connect(addr).await;
    let mut r = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let resp = c
        .send_request(r.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let s = resp.status().as_u16();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn names(v: &Value) -> Vec<(String, String)> {
    v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["origin"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn pair(n: &str, o: &str) -> (String, String) {
    (n.to_string(), o.to_string())
}

/// The routing log (`query` appended to its path, read with client key `key`) once it holds
/// `n` entries, else as it is after 2 s: a dispatch is logged right after its response is written, so it may trail the
/// client by a moment.
async fn log_with(a: SocketAddr, key: Option<&str>, query: &str, n: usize) -> Value {
    let path = format!("/api/routing/log{query}");
    let mut last = Value::Null;
    for _ in 0..200 {
        let (s, v) = send(a, "GET", &path, key, "").await;
        assert_eq!(s, 200, "{v}");
        if v["entries"].as_array().is_some_and(|e| e.len() >= n) {
            return v;
        }
        last = v;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    last
}

async fn policies_and_log_survive_a_restart(reopen: impl Fn() -> Fn2) {
    let desk = host("desk", vec![model("coder", 10), model("small", 10)]).await;
    let gw = stored_gateway(&desk, reopen().await).await;
    let a = gw.addr;

    // Reads take a client key; without one: 401.
    assert_eq!(
        send(a, "GET", "/api/routing/policies", None, "").await.0,
        401
    );
    let (s, v) = send(a, "GET", "/api/routing/policies", Some(CLIENT), "").await;
    assert_eq!(s, 200);
    assert_eq!(
        names(&v),
        [pair("auto", "config"), pair("auto:code", "config")]
    );

    // Changing policies needs the admin token: none → 401, a client key → 403.
    let fast = r#"{"candidates":["tag:fast"],"order":["prefer_loaded"]}"#;
    let path = "/api/routing/policies/auto:fast";
    let (s, v) = send(a, "PUT", path, None, fast).await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = send(a, "PUT", path, Some(CLIENT), fast).await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin token"),
        "{v}"
    );
    let (s, v) = send(a, "PUT", path, Some("wrong"), fast).await;
    assert_eq!(s, 401, "{v}");
    let (s, _) = send(a, "DELETE", "/api/routing/policies/auto", Some(CLIENT), "").await;
    assert_eq!(s, 403);
    // Explain is a read.
    let (s, _) = send(
        a,
        "POST",
        "/api/routing/explain",
        Some(CLIENT),
        r#"{"model":"auto"}"#,
    )
    .await;
    assert_eq!(s, 200);

    let (s, v) = send(a, "PUT", path, Some(ADMIN), fast).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["origin"].as_str(), v["persisted"].as_bool()),
        (Some("api"), Some(true))
    );
    // An API policy with a config policy's name overrides it.
    let (s, v) = send(
        a,
        "PUT",
        "/api/routing/policies/auto",
        Some(ADMIN),
        r#"{"candidates":["desk/small"]}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["overrides_config"], true);
    // A config policy without an override cannot be deleted: 409 says why.
    let (s, v) = send(
        a,
        "DELETE",
        "/api/routing/policies/auto:code",
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "policy_in_config");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config file"),
        "{v}"
    );

    // Two dispatches for the log.
    let auth = [("authorization", "Bearer client-key")];
    let (s, h, b) = post(a, "/v1/chat/completions", &auth, &chat("auto")).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["x-boo-model"], "desk/small", "the override routes");
    let (s, _, _) = post(a, "/v1/chat/completions", &auth, &chat("auto:fast")).await;
    assert_eq!(s, 200);
    let before = log_with(a, Some(CLIENT), "", 2).await;
    assert_eq!(before["entries"].as_array().unwrap().len(), 2, "{before}");
    gw.stop().await;

    // Restart on the same database.
    let gw = stored_gateway(&desk, reopen().await).await;
    let a = gw.addr;
    let (_, v) = send(a, "GET", "/api/routing/policies", Some(CLIENT), "").await;
    assert_eq!(
        names(&v),
        [
            pair("auto", "api"),
            pair("auto:code", "config"),
            pair("auto:fast", "api")
        ]
    );
    let (s, h, _) = post(a, "/v1/chat/completions", &auth, &chat("auto")).await;
    assert_eq!((s, h["x-boo-model"].to_str().unwrap()), (200, "desk/small"));
    // The log came back from the store (plus the new dispatch), newest first.
    let log = log_with(a, Some(CLIENT), "?policy=auto", 2).await;
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{log}");
    assert_eq!(log["stored"], true);
    let old_id = before["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["policy"] == "auto")
        .unwrap()["request_id"]
        .clone();
    assert_eq!(entries[1]["request_id"], old_id);
    assert_eq!(
        entries[1]["route"]["decision"]["attempts"][0]["model"],
        "desk/small"
    );
    assert!(entries[0]["ts"].as_str() >= entries[1]["ts"].as_str());
    let (s, v) = send(a, "GET", "/api/routing/log?limit=0", Some(CLIENT), "").await;
    assert_eq!(s, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("limit"));

    // Deleting the override restores the config policy, also after the next restart.
    let (s, v) = send(a, "DELETE", "/api/routing/policies/auto", Some(ADMIN), "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["restored"], "config");
    let (s, _) = send(
        a,
        "DELETE",
        "/api/routing/policies/auto:fast",
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(
        a,
        "DELETE",
        "/api/routing/policies/auto:fast",
        Some(ADMIN),
        "",
    )
    .await;
    assert_eq!(s, 404);
    gw.stop().await;
    let gw = stored_gateway(&desk, reopen().await).await;
    let (_, v) = send(gw.addr, "GET", "/api/routing/policies", Some(CLIENT), "").await;
    assert_eq!(
        names(&v),
        [pair("auto", "config"), pair("auto:code", "config")]
    );
    gw.stop().await;
}

type Fn2 = std::pin::Pin<Box<dyn std::future::Future<Output = Arc<dyn Store>>>>;

#[tokio::test]
async fn sqlite_policies_and_dispatch_log_survive_a_restart() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let url = format!("sqlite://{}", dir.path().join("boo.db").display());
    policies_and_log_survive_a_restart(move || {
        let url = url.clone();
        Box::pin(async move { boo_telemetry_store::open(&url).await.expect("sqlite") })
    })
    .await;
}

#[tokio::test]
async fn postgres_policies_and_dispatch_log_survive_a_restart() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipping Postgres: DATABASE_URL unset");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let schema = format!("boo_route_{}_{nanos:x}", std::process::id());
    let (u, sc) = (url.clone(), schema.clone());
    policies_and_log_survive_a_restart(move || {
        let (u, sc) = (u.clone(), sc.clone());
        Box::pin(async move {
            let s = boo_telemetry_store::postgres::PgStore::open_in_schema(&u, &sc)
                .await
                .expect("postgres");
            Arc::new(s) as Arc<dyn Store>
        })
    })
    .await;
    let _ = boo_telemetry_store::postgres::PgStore::drop_schema(&url, &schema).await;
}

/// `fastest` orders by the generation speed measured in telemetry (the store's request
/// records of this host + model), not by raw latency or config.
#[tokio::test]
async fn fastest_uses_speeds_measured_in_the_store() {
    let desk = host("desk", vec![model("m", 10)]).await;
    let laptop = host("laptop", vec![model("m", 10)]).await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("boo.db").display());
    let store = boo_telemetry_store::open(&url).await.unwrap();
    let rec = |id: &str, provider: &str, gen_tps: f64| boo_telemetry_store::RequestRecord {
        request_id: id.into(),
        ts: chrono::Utc::now() - chrono::Duration::minutes(5),
        provider_id: provider.into(),
        model: format!("{provider}/m"),
        wire_model: Some("m".into()),
        source: None,
        path: "/v1/chat/completions".into(),
        status: 200,
        error_class: None,
        ttft_ms: Some(50.0),
        duration_ms: 500.0,
        prompt_tokens: Some(10),
        cached_tokens: None,
        completion_tokens: Some(100),
        prompt_tps: Some(500.0),
        gen_tps: Some(gen_tps),
        bytes_in: 100,
        bytes_out: 100,
        stream: true,
        route: None,
    };
    store
        .insert_requests(&[
            rec("a", "desk", 20.0),
            rec("b", "desk", 30.0),
            rec("c", "laptop", 150.0),
        ])
        .await
        .unwrap();
    let reg = registry(
        &[&desk, &laptop],
        &["m"],
        json!([{"name": "auto:fast", "candidates": ["desk/m", "laptop/m"], "order": ["fastest"]}]),
    );
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.poll_every = Duration::from_millis(100);
    opts.store = Some(StoreOptions {
        store: StoreTarget::Open(store),
        batch: BatchConfig::default(),
        retention: None,
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    let v = until(addr, r#"{"model":"auto:fast"}"#, |v| {
        v["decision"]["attempts"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    assert_eq!(v["decision"]["attempts"][0]["model"], "laptop/m", "{v:#}");
    assert_eq!(v["decision"]["attempts"][1]["model"], "desk/m", "{v:#}");
    let (s, b) = common::get(addr, "/api/routing/scores").await;
    assert_eq!(s, 200);
    let scores: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(scores["scores"][0]["model"], "laptop/m", "{scores:#}");
}

/// The production start-up (`run_on` with the fleet control plane): connectors, probes,
/// inventory polls and context lookups never load a stopped model; once a model is loaded its
/// window is read from the running server.
#[tokio::test]
async fn with_the_control_plane_no_probe_or_context_lookup_loads_a_model() {
    let desk = host("desk", vec![model("a", 10), model("b", 10)]).await;
    let reg = registry(
        &[&desk],
        &["a", "b"],
        json!([{"name": "auto", "candidates": ["desk/a", "desk/b"], "order": ["priority"]}]),
    );
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.poll_every = Duration::from_millis(50);
    opts.follow_fleet = true;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    until(addr, r#"{"model":"auto"}"#, |v| {
        v["decision"]["attempts"][0]["liveness"] == "connected"
    })
    .await;
    // Many polls and context refreshes later, nothing was loaded.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let running = client::get(&desk.base_url(), "/running")
        .await
        .unwrap()
        .json();
    assert_eq!(
        running["running"].as_array().map(Vec::len),
        Some(0),
        "{running}"
    );
    assert_eq!(desk.stats().inference_requests(), 0);
    assert_eq!(desk.stats().requests("/upstream/a/props"), 0);
    assert_eq!(desk.stats().requests("/upstream/b/props"), 0);

    let (s, h, _) = post(addr, "/v1/chat/completions", &[], &chat("auto")).await;
    assert_eq!((s, h["x-boo-model"].to_str().unwrap()), (200, "desk/a"));
    let mut read = false;
    for _ in 0..200 {
        if desk.stats().requests("/upstream/a/props") > 0 {
            read = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(read, "the loaded model's window is read from the host");
    assert_eq!(desk.stats().requests("/upstream/b/props"), 0);
    let running = client::get(&desk.base_url(), "/running")
        .await
        .unwrap()
        .json();
    assert_eq!(
        running["running"].as_array().map(Vec::len),
        Some(1),
        "{running}"
    );
}
