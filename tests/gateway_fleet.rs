//! The gateway in front of the fleet-sim demo fleet, over real TCP: routing by composite id
//! (including the `deepseek-r1-qwen3-8b` collision between the two hosts), unknown providers
//! never reaching a host, passthrough equal to a direct call, and upstream faults.

use boo_fleet_sim::client::{get, post_json};
use boo_fleet_sim::{Fleet, FleetSpec};
use boo_gateway_http::{MemorySink, RunOptions};
use std::net::SocketAddr;
use std::sync::Arc;

struct Env {
    fleet: Fleet,
    url: String,
    sink: Arc<MemorySink>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Env {
    let mut spec: FleetSpec = Fleet::demo_spec();
    spec.time_scale = Some(0.001); // model loads and generation in milliseconds
    let fleet = Fleet::start(spec).await.expect("demo fleet starts");
    let sam = fleet.host("sam-desktop").unwrap();
    let emb = fleet.host("embedding").unwrap();
    let side = emb.sidecar().expect("embedding host has a sidecar");
    let json = serde_json::json!({ "providers": [
        { "id": "sam-desktop", "kind": "llama-swap", "base_url": sam.base_url(), "default": true,
          "timeouts": { "first_byte_ms": 2000, "idle_ms": 2000 } },
        { "id": "embedding", "kind": "llama-swap", "base_url": emb.base_url(),
          "sidecar": { "url": side.base_url(), "models": ["bge-m3"] } },
    ]});
    let reg = boo_provider_registry::from_json_str(
        &json.to_string(),
        &boo_provider_registry::MapEnv::new(),
    )
    .expect("valid registry")
    .registry;
    let sink = Arc::new(MemorySink::new());
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.sink = sink.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(listener, opts, async {
        let _ = rx.await;
    }));
    Env {
        fleet,
        url: format!("http://{addr}"),
        sink,
        _stop: tx,
    }
}

fn chat(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model, "stream": stream, "max_tokens": 8, "temperature": 0,
        "messages": [{ "role": "user", "content": "say hi" }]
    })
}

/// Drops fields that legitimately differ between two otherwise identical calls.
fn strip_volatile(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(o) = v.as_object_mut() {
        for k in ["created", "id", "timings", "system_fingerprint"] {
            o.remove(k);
        }
    }
    v
}

#[tokio::test]
async fn composite_ids_reach_their_own_host_with_the_bare_wire_id() {
    let e = start().await;
    let sam = e.fleet.host("sam-desktop").unwrap();
    let emb = e.fleet.host("embedding").unwrap();

    // The collision case: the same wire id on both hosts.
    let r = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("embedding/deepseek-r1-qwen3-8b", false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-boo-provider"), Some("embedding"));
    assert_eq!(emb.stats().requests("/v1/chat/completions"), 1);
    assert_eq!(sam.stats().requests("/v1/chat/completions"), 0);
    let seen = emb.stats().received_on("/v1/chat/completions");
    assert_eq!(seen[0].model.as_deref(), Some("deepseek-r1-qwen3-8b"));

    let r = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("sam-desktop/deepseek-r1-qwen3-8b", false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(sam.stats().requests("/v1/chat/completions"), 1);
    assert_eq!(emb.stats().requests("/v1/chat/completions"), 1);

    // Unknown provider: 400 model_not_found and no host saw an inference request.
    let before: u64 = e
        .fleet
        .hosts()
        .iter()
        .map(|h| h.stats().inference_requests())
        .sum();
    let r = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("nope/deepseek-r1-qwen3-8b", false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let after: u64 = e
        .fleet
        .hosts()
        .iter()
        .map(|h| h.stats().inference_requests())
        .sum();
    assert_eq!(before, after);

    // Sidecar model → the sidecar host.
    let side = emb.sidecar().unwrap();
    let r = post_json(
        &e.url,
        "/v1/embeddings",
        &serde_json::json!({"model": "embedding/bge-m3", "input": "hello"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(side.stats().requests("/v1/embeddings"), 1);
    assert!(r.json()["data"][0]["embedding"].is_array());
}

#[tokio::test]
async fn passthrough_matches_a_direct_call() {
    let e = start().await;
    let sam = e.fleet.host("sam-desktop").unwrap();
    // Warm the model so both calls see the same host state.
    let _ = post_json(
        &sam.base_url(),
        "/v1/chat/completions",
        &chat("gpt-oss-20b", false),
    )
    .await
    .unwrap();
    let direct = post_json(
        &sam.base_url(),
        "/v1/chat/completions",
        &chat("gpt-oss-20b", false),
    )
    .await
    .unwrap();
    let via = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("sam-desktop/gpt-oss-20b", false),
    )
    .await
    .unwrap();
    assert_eq!(via.status, direct.status);
    assert_eq!(strip_volatile(via.json()), strip_volatile(direct.json()));
    assert_eq!(via.header("content-type"), direct.header("content-type"));

    let direct = post_json(
        &sam.base_url(),
        "/v1/chat/completions",
        &chat("gpt-oss-20b", true),
    )
    .await
    .unwrap();
    let via = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("sam-desktop/gpt-oss-20b", true),
    )
    .await
    .unwrap();
    assert_eq!(via.status, 200);
    let events = |b: &str| -> Vec<serde_json::Value> {
        b.split("\n\n")
            .filter_map(|ev| ev.strip_prefix("data: "))
            .map(|d| {
                if d == "[DONE]" {
                    serde_json::json!("[DONE]")
                } else {
                    strip_volatile(serde_json::from_str(d).unwrap())
                }
            })
            .collect()
    };
    assert_eq!(events(&via.text()), events(&direct.text()));
    assert!(via.text().ends_with("data: [DONE]\n\n"));

    // The streamed request's record has TTFT and token counts from the passthrough scan. It is
    // made right after the response's last bytes are written, so it may trail the client.
    let mut rec = None;
    for _ in 0..500 {
        rec = e.sink.records().into_iter().find(|r| r.stream);
        if rec.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let rec = rec.expect("a streamed record");
    assert_eq!(rec.model, "sam-desktop/gpt-oss-20b");
    assert_eq!(rec.wire_model.as_deref(), Some("gpt-oss-20b"));
    assert!(rec.ttft_ms.is_some());
    assert!(rec.gen_tps.is_some(), "timings picked from the last chunk");
}

#[tokio::test]
async fn upstream_faults_give_documented_errors_and_the_gateway_keeps_serving() {
    let e = start().await;
    let sam = e.fleet.host("sam-desktop").unwrap();
    let faults = sam.faults();

    faults.set_error_status(500);
    faults.set_error_rate(1.0);
    let r = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("sam-desktop/gpt-oss-20b", false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 500, "upstream errors pass through: {}", r.text());
    faults.clear();

    faults.cut_stream_after(Some(2));
    let r = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("sam-desktop/gpt-oss-20b", true),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("upstream_cut"),
        "cut stream ends cleanly with an error event: {}",
        r.text()
    );
    faults.clear();

    faults.hang();
    let r = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("sam-desktop/gpt-oss-20b", false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    faults.clear();

    faults.host_down().await;
    let r = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("sam-desktop/gpt-oss-20b", false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 502);
    assert!(r.text().contains("sam-desktop"));
    faults.host_up().await;

    let r = post_json(
        &e.url,
        "/v1/chat/completions",
        &chat("sam-desktop/gpt-oss-20b", false),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let health = get(&e.url, "/api/health").await.unwrap();
    assert_eq!(health.status, 200);
}
