//! The registry-backed router end to end: composite ids, unknown/disabled providers, virtual
//! models, sidecars, and the inventory-driven listing routes.

mod common;

use boo_gateway_http::{MemorySink, RunOptions};
use boo_provider_registry::{MapEnv, from_json_str};
use common::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

struct Env {
    addr: SocketAddr,
    host: Arc<Upstream>,
    side: Arc<Upstream>,
    other: Arc<Upstream>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(extra_gateway: &str) -> Env {
    let (host, host_addr) = start_upstream().await;
    let (side, side_addr) = start_upstream().await;
    let (other, other_addr) = start_upstream().await;
    let json = format!(
        r#"{{ "providers": [
          {{ "id": "sam-desktop", "kind": "llama-swap", "base_url": "http://{host_addr}", "default": true }},
          {{ "id": "embedding", "kind": "llama-swap", "base_url": "http://{other_addr}",
             "sidecar": {{ "url": "http://{side_addr}", "models": ["bge-m3"] }} }},
          {{ "id": "off", "kind": "llama-swap", "base_url": "http://{other_addr}", "enabled": false }},
          {{ "id": "cloud", "kind": "openai", "base_url": "http://{other_addr}/v1", "api_key": "{{env:CLOUD_KEY}}",
             "models": [{{ "id": "echo" }}] }}
        ]{extra_gateway} }}"#
    );
    let env = MapEnv::new().with("CLOUD_KEY", "sk-cloud");
    let reg = from_json_str(&json, &env).expect("valid config").registry;
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.sink = Arc::new(MemorySink::new());
    opts.poll_every = Duration::from_millis(200);
    opts.favorites = Some(Box::new(|| vec!["embedding/echo".to_string()]));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    Env {
        addr,
        host,
        side,
        other,
        _stop: tx,
    }
}

#[tokio::test]
async fn composite_ids_route_to_their_provider_and_unknown_never_goes_upstream() {
    let e = start("").await;
    // Let the first inventory poll happen, then count only inference calls.
    assert!(eventually(|| e.host.requests.load(Ordering::SeqCst) > 0).await);
    let before = |u: &Upstream| {
        u.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path != "/v1/models")
            .count()
    };

    let (s, _, b) = post(
        e.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"nope/echo"}"#,
    )
    .await;
    assert_eq!((s, err_code(&b).as_str()), (400, "model_not_found"));
    assert!(
        String::from_utf8_lossy(&b).contains("sam-desktop"),
        "lists known providers"
    );
    assert_eq!(before(&e.host) + before(&e.other) + before(&e.side), 0);

    let (s, h, _) = post(
        e.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"embedding/echo"}"#,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(h["x-boo-model"], "embedding/echo");
    assert_eq!(before(&e.other), 1);
    assert_eq!(before(&e.host), 0);

    // A legacy bare id goes to the default provider.
    let (s, h, _) = post(e.addr, "/v1/chat/completions", &[], r#"{"model":"echo"}"#).await;
    assert_eq!(
        (s, h["x-boo-provider"].to_str().unwrap()),
        (200, "sam-desktop")
    );

    // Sidecar models go to the sidecar URL.
    let (s, _, b) = post(
        e.addr,
        "/v1/embeddings",
        &[],
        r#"{"model":"embedding/bge-m3","input":"x"}"#,
    )
    .await;
    assert_eq!(s, 404, "the scripted sidecar does not know bge-m3: {b:?}");
    assert_eq!(before(&e.side), 1);
    assert_eq!(
        &e.side.seen.lock().unwrap().last().unwrap().body[..],
        br#"{"model":"bge-m3","input":"x"}"#
    );

    // openai-kind: base already has /v1, provider key replaces the client's.
    let (s, _, _) = post(
        e.addr,
        "/v1/chat/completions",
        &[("authorization", "Bearer mine")],
        r#"{"model":"cloud/echo"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let last = e.other.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!(last.path, "/v1/chat/completions");
    assert_eq!(last.headers["authorization"], "Bearer sk-cloud");

    let (s, _, b) = post(
        e.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"off/echo"}"#,
    )
    .await;
    assert_eq!((s, err_code(&b).as_str()), (503, "provider_unavailable"));
    let (s, _, b) = post(
        e.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"auto:code"}"#,
    )
    .await;
    assert_eq!((s, err_code(&b).as_str()), (501, "routing_not_configured"));
    let (s, _, b) = post(e.addr, "/v1/chat/completions", &[], r#"{"model":"bad id"}"#).await;
    assert_eq!((s, err_code(&b).as_str()), (400, "invalid_model"));
}

#[tokio::test]
async fn listing_routes_use_live_inventories() {
    let e = start("").await;
    let mut models = serde_json::Value::Null;
    let ok = {
        let mut found = false;
        for _ in 0..100 {
            let (s, b) = get(e.addr, "/v1/models").await;
            assert_eq!(s, 200);
            models = serde_json::from_slice(&b).unwrap();
            if models["data"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["id"] == "sam-desktop/echo")
            {
                found = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found
    };
    assert!(ok, "polled inventory appears in /v1/models: {models}");
    let ids: Vec<(&str, &str)> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["owned_by"].as_str().unwrap()))
        .collect();
    assert!(ids.contains(&("sam-desktop/echo", "sam-desktop")));
    assert!(ids.contains(&("embedding/bge-m3", "embedding")), "{ids:?}");
    assert!(
        ids.contains(&("cloud/echo", "cloud")),
        "static openai models: {ids:?}"
    );
    assert!(!ids.iter().any(|(id, _)| id.starts_with("off/")));
    // Polling never hits an inference route.
    assert!(
        e.host
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.path == "/v1/models")
    );

    let (s, b) = get(e.addr, "/api/models").await;
    assert_eq!(s, 200);
    let cat: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let sections = cat["sections"].as_array().unwrap();
    assert_eq!(sections[0]["kind"], "favorites", "{cat}");
    assert_eq!(sections[0]["entries"][0]["id"], "embedding/echo");

    let (s, b) = get(e.addr, "/api/health").await;
    assert_eq!(s, 200);
    let h: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let sam = h["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "sam-desktop")
        .unwrap()
        .clone();
    assert_eq!(sam["reachable"], true, "{h}");
}
