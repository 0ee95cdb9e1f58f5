//! The gateway with a telemetry store (real TCP, fleet-sim upstream, SQLite in a temp dir):
//! every request is recorded with its source, the activity / usage / settings API, favorites.

mod common;

use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, SimHost, start_host};
use boo_gateway_http::{RunOptions, StoreOptions, StoreTarget};
use boo_telemetry_store::{BatchConfig, FeedFilter, Store};
use bytes::Bytes;
use common::{connect, get, post};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

struct Gw {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), boo_gateway_http::GatewayError>>,
    _sim: SimHost,
}

impl Gw {
    /// Graceful shutdown; returns once the writer has flushed.
    async fn shutdown(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("gateway stops")
            .expect("gateway task")
            .expect("gateway ran");
    }
}

async fn start(store: Arc<dyn Store>, batch: BatchConfig) -> Gw {
    let sim = start_host(
        HostSpec::llama_swap(
            "sam",
            ApiGen::Current,
            vec![ModelSpec::new("alpha"), ModelSpec::new("beta")],
        )
        .with_time_scale(0.001),
    )
    .await
    .expect("sim host");
    let doc = json!({"providers": [
        {"id": "sam", "label": "Sam", "kind": "llama-swap", "base_url": sim.base_url(), "default": true}
    ]});
    let reg = boo_provider_registry::from_json_str(
        &doc.to_string(),
        &boo_provider_registry::MapEnv::new(),
    )
    .expect("registry")
    .registry;
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.poll_every = Duration::from_millis(200);
    opts.store = Some(StoreOptions {
        store: StoreTarget::Open(store),
        batch,
        retention: None,
    });
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    Gw {
        addr,
        stop: Some(tx),
        task,
        _sim: sim,
    }
}

async fn sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.path().join("boo.db").display());
    boo_telemetry_store::open(&url).await.expect("sqlite store")
}

/// SQLite always; Postgres (a fresh schema per call) when `DATABASE_URL` is set.
async fn backends(dir: &tempfile::TempDir) -> Vec<Arc<dyn Store>> {
    let mut v = vec![sqlite(dir).await];
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let schema = format!("boo_gw_{}_{nanos:x}", std::process::id());
            let pg = boo_telemetry_store::postgres::PgStore::open_in_schema(&url, &schema)
                .await
                .expect("postgres store");
            v.push(Arc::new(pg));
        }
        Err(_) => eprintln!("skipping the Postgres variant: DATABASE_URL unset"),
    }
    v
}

async fn chat(addr: SocketAddr, model: &str, source: Option<&str>) -> u16 {
    let mut h = vec![];
    if let Some(s) = source {
        h.push(("x-boo-source", s));
    }
    let body =
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    post(addr, "/v1/chat/completions", &h, &body.to_string())
        .await
        .0
}

async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (s, b) = get(addr, path).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn send_json(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut c = connect(addr).await;
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    let s = resp.status().as_u16();
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_request_is_recorded_with_its_source_and_the_feed_filters_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    for store in backends(&dir).await {
        eprintln!("backend: {:?}", store.backend());
        records_and_feed(store).await;
    }
}

async fn records_and_feed(store: Arc<dyn Store>) {
    let gw = start(store.clone(), BatchConfig::default()).await;
    let a = gw.addr;
    for _ in 0..3 {
        assert_eq!(chat(a, "sam/alpha", Some("arena")).await, 200);
    }
    assert_eq!(chat(a, "sam/beta", Some("cli")).await, 200);
    assert_eq!(chat(a, "sam/beta", Some("cli")).await, 200);
    assert_eq!(chat(a, "sam/alpha", None).await, 200);
    // Unknown provider: refused without an upstream call, but still recorded.
    assert_eq!(chat(a, "ghost/x", Some("arena")).await, 400);

    // Flushes happen every 100 ms; wait (generously) for all seven rows.
    let mut all = Value::Null;
    for _ in 0..300 {
        all = get_json(a, "/api/activity?origin=gateway&limit=100")
            .await
            .1;
        if all["items"].as_array().is_some_and(|i| i.len() == 7) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(all["items"].as_array().map(Vec::len), Some(7), "{all}");
    assert!(all["next"].is_null());

    // Source filter + cursor pagination: 4 arena rows in pages of 3, no overlap.
    let (s, p1) = get_json(a, "/api/activity?source=arena&limit=3").await;
    assert_eq!(s, 200, "{p1}");
    assert_eq!(ids(&p1).len(), 3);
    let next = p1["next"].as_str().expect("a next cursor").to_string();
    let (_, p2) = get_json(
        a,
        &format!("/api/activity?source=arena&limit=3&cursor={next}"),
    )
    .await;
    let (i1, i2) = (ids(&p1), ids(&p2));
    assert_eq!(i2.len(), 1, "{p2}");
    assert!(!i1.contains(&i2[0]));
    for r in p1["items"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["items"].as_array().unwrap())
    {
        assert_eq!(r["source"], "arena");
    }
    // Status and model filters (model ids contain '/', sent percent-encoded).
    let (_, failed) = get_json(a, "/api/activity?status=400").await;
    assert_eq!(failed["items"].as_array().unwrap().len(), 1);
    assert_eq!(failed["items"][0]["model"], "ghost/x");
    let (_, beta) = get_json(a, "/api/activity?model=sam%2Fbeta").await;
    assert_eq!(ids(&beta).len(), 2);

    // Bad parameters name the parameter.
    for (q, param) in [
        ("limit=0", "limit"),
        ("origin=moon", "origin"),
        ("colour=red", "colour"),
        ("status=abc", "status"),
        ("cursor=nonsense", "cursor"),
    ] {
        let (s, e) = get_json(a, &format!("/api/activity?{q}")).await;
        assert_eq!(s, 400, "{q}: {e}");
        assert_eq!(e["error"]["param"], param, "{q}: {e}");
    }

    // Usage by source: arena 4 (one failed), cli 2, no source 1; tokens summed.
    let (s, u) = get_json(a, "/api/usage?group=source&since=1h").await;
    assert_eq!(s, 200, "{u}");
    let rows = u["rows"].as_array().unwrap();
    let row = |k: Option<&str>| {
        rows.iter()
            .find(|r| r["key"].as_str() == k)
            .unwrap_or_else(|| panic!("no row {k:?} in {u}"))
    };
    assert_eq!(row(Some("arena"))["requests"], 4);
    assert_eq!(row(Some("cli"))["requests"], 2);
    assert_eq!(row(None)["requests"], 1);
    assert!(
        row(Some("cli"))["completion_tokens"].as_i64().unwrap() > 0,
        "{u}"
    );
    let (_, by_model) = get_json(a, "/api/usage?group=model").await;
    assert!(
        by_model["rows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["key"] == "sam/beta" && r["requests"] == 2)
    );
    let (s, e) = get_json(a, "/api/usage?group=colour").await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("group")));
    let (s, e) = get_json(a, "/api/usage?since=3y").await;
    assert_eq!((s, e["error"]["param"].as_str()), (400, Some("since")));

    // The writer's counters are on /metrics.
    let (_, m) = get(a, "/metrics").await;
    let m = String::from_utf8_lossy(&m).to_string();
    assert!(m.contains("boo_telemetry_accepted_total 7"), "{m}");
    assert!(m.contains("boo_telemetry_dropped_total 0"), "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_flushes_buffered_records_to_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    // A flush interval far beyond the test: only the shutdown flush can write these.
    let batch = BatchConfig {
        flush_interval: Duration::from_secs(3600),
        max_batch: 10_000,
        ..BatchConfig::default()
    };
    let gw = start(store.clone(), batch).await;
    for i in 0..5 {
        let src = format!("job-{i}");
        assert_eq!(chat(gw.addr, "sam/alpha", Some(&src)).await, 200);
    }
    let before = store.feed(&FeedFilter::default(), None, 100).await.unwrap();
    assert!(before.rows.is_empty(), "nothing flushed before shutdown");
    gw.shutdown().await;
    let after = store.feed(&FeedFilter::default(), None, 100).await.unwrap();
    let mut sources: Vec<_> = after.rows.iter().filter_map(|r| r.source.clone()).collect();
    sources.sort();
    assert_eq!(sources, ["job-0", "job-1", "job-2", "job-3", "job-4"]);
    assert!(
        after
            .rows
            .iter()
            .all(|r| r.provider_id == "sam" && r.status == Some(200))
    );
}

#[tokio::test]
async fn settings_patch_keeps_unavailable_favorites_and_unrelated_settings() {
    let dir = tempfile::tempdir().unwrap();
    for store in backends(&dir).await {
        eprintln!("backend: {:?}", store.backend());
        settings_and_favorites(store).await;
    }
}

async fn settings_and_favorites(store: Arc<dyn Store>) {
    let gw = start(store.clone(), BatchConfig::default()).await;
    let a = gw.addr;
    let patch =
        json!({"theme": "dark", "favorite_models": ["sam/alpha", "gone-host/old-model", " beta "]});
    let (s, v) = send_json(a, "PATCH", "/api/settings", &patch.to_string()).await;
    assert_eq!(s, 200, "{v}");
    // Bare ids get the default provider; an unknown host's favorite is kept.
    assert_eq!(
        v["favorite_models"],
        json!(["sam/alpha", "gone-host/old-model", "sam/beta"])
    );
    assert_eq!(v["theme"], "dark");

    // /api/models shows the store's favorites that are visible now.
    let ok = {
        let mut found = false;
        for _ in 0..300 {
            let (_, cat) = get_json(a, "/api/models").await;
            let text = cat.to_string();
            if text.contains("\"favorite\":true") && text.contains("sam/alpha") {
                found = !text.contains("gone-host/old-model");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        found
    };
    assert!(
        ok,
        "favorites from the store reach /api/models (unavailable ones hidden)"
    );

    // An unrelated PATCH leaves favorites alone; a null deletes only its key.
    let (s, v) = send_json(
        a,
        "PATCH",
        "/api/settings",
        r#"{"theme":"light","density":null}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["theme"], "light");
    assert_eq!(v["favorite_models"].as_array().unwrap().len(), 3);

    // Bad input names the field and changes nothing.
    let (s, e) = send_json(
        a,
        "PATCH",
        "/api/settings",
        r#"{"favorite_models":["auto:code"],"theme":"x"}"#,
    )
    .await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("favorite_models")),
        "{e}"
    );
    let (s, e) = send_json(a, "PATCH", "/api/settings", "[1,2]").await;
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("body")),
        "{e}"
    );
    let (_, v) = get_json(a, "/api/settings").await;
    assert_eq!(v["theme"], "light");
    let (s, e) = send_json(a, "DELETE", "/api/settings", "").await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{e}"
    );

    // Only explicit removal deletes a favorite; add de-duplicates.
    let (s, v) = send_json(
        a,
        "POST",
        "/api/favorites",
        r#"{"remove":["gone-host/old-model"],"add":["sam/alpha"]}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["favorites"], json!(["sam/alpha", "sam/beta"]));
    let (_, v) = get_json(a, "/api/favorites").await;
    assert_eq!(v["favorites"], json!(["sam/alpha", "sam/beta"]));
    gw.shutdown().await;

    // After a restart the settings come back from the store.
    assert_eq!(store.favorites().await.unwrap(), ["sam/alpha", "sam/beta"]);
    let gw = start(store.clone(), BatchConfig::default()).await;
    let (_, v) = get_json(gw.addr, "/api/settings").await;
    assert_eq!(v["theme"], "light");
    gw.shutdown().await;
}
