//! `auto:*` end to end over real TCP against fleet-sim hosts: failover when a host dies, no
//! retry after the first byte, context fit, prefer-loaded across hosts, the routing API, and
//! proof that neither probes nor context lookups load a model.

mod common;

use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, SimHost, client, start_host};
use boo_gateway_http::{MemorySink, RunOptions};
use boo_provider_registry::{MapEnv, from_json_str};
use common::{eventually, get, post};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

fn model(id: &str, n_ctx: u32) -> ModelSpec {
    let mut m = ModelSpec::new(id);
    m.n_ctx = n_ctx;
    m.load_ms = 2000;
    m.gen_tps = 0.0;
    m.prompt_tps = 0.0;
    m
}

async fn host(id: &str, models: Vec<ModelSpec>) -> SimHost {
    start_host(HostSpec::llama_swap(id, ApiGen::Current, models).with_time_scale(0.01))
        .await
        .expect("sim host starts")
}

struct Gw {
    addr: SocketAddr,
    sink: Arc<MemorySink>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn gateway(hosts: &[&SimHost], policies: &str) -> Gw {
    let providers: Vec<String> = hosts
        .iter()
        .map(|h| {
            format!(
                r#"{{ "id": "{}", "kind": "llama-swap", "base_url": "{}",
                     "models": [{{ "id": "coder", "tags": ["code"] }}] }}"#,
                h.id(),
                h.base_url()
            )
        })
        .collect();
    let json = format!(
        r#"{{ "providers": [{}], "policies": {policies} }}"#,
        providers.join(",")
    );
    let reg = from_json_str(&json, &MapEnv::new())
        .expect("valid config")
        .registry;
    let sink = Arc::new(MemorySink::new());
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.sink = sink.clone();
    opts.poll_every = Duration::from_millis(100);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    Gw {
        addr,
        sink,
        _stop: tx,
    }
}

async fn explain(addr: SocketAddr, body: &str) -> serde_json::Value {
    let (s, _, b) = post(addr, "/api/routing/explain", &[], body).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    serde_json::from_slice(&b).unwrap()
}

/// Waits until the gateway's facts make `want` the first attempt of `body`'s decision.
async fn wait_chosen(addr: SocketAddr, body: &str, want: &str) -> bool {
    for _ in 0..300 {
        let v = explain(addr, body).await;
        if v["decision"]["attempts"][0]["model"] == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn chat(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":4}}"#)
}

#[tokio::test]
async fn auto_code_fails_over_to_the_next_candidate_when_the_primary_dies() {
    let desk = host("desk", vec![model("coder", 32768)]).await;
    let laptop = host("laptop", vec![model("coder", 32768)]).await;
    let gw = gateway(
        &[&desk, &laptop],
        r#"[{"name":"auto:code","candidates":["desk/coder","laptop/coder"],"order":["priority"]}]"#,
    )
    .await;
    assert!(
        wait_chosen(gw.addr, r#"{"model":"auto:code"}"#, "desk/coder").await,
        "the inventory poll lists desk"
    );
    let (s, h, _) = post(gw.addr, "/v1/chat/completions", &[], &chat("auto:code")).await;
    assert_eq!((s, h["x-boo-model"].to_str().unwrap()), (200, "desk/coder"));
    let route: serde_json::Value =
        serde_json::from_str(h["x-boo-route"].to_str().unwrap()).unwrap();
    assert_eq!(route["policy"], "auto:code");
    assert_eq!(route["attempts"][0], "desk/coder");

    // The primary dies; requests not yet started go to the next candidate, no client error,
    // whether or not the poller has noticed yet.
    desk.faults().host_down().await;
    for _ in 0..4 {
        let (s, h, b) = post(gw.addr, "/v1/chat/completions", &[], &chat("auto:code")).await;
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        assert_eq!(h["x-boo-model"], "laptop/coder");
    }
    assert_eq!(laptop.stats().requests("/v1/chat/completions"), 4);

    // The telemetry records keep the virtual name and the route with every failover.
    assert!(eventually(|| gw.sink.records().len() >= 5).await);
    let recs = gw.sink.records();
    assert!(
        recs.iter()
            .all(|r| r.model == "auto:code" && r.status == 200)
    );
    let failed_over = recs
        .iter()
        .filter_map(|r| r.route.as_ref().map(|j| j.to_value()))
        .filter(|r| r["failover"]["attempts"][0]["outcome"]["kind"] == "refused")
        .count();
    let not_tried = recs
        .iter()
        .filter_map(|r| r.route.as_ref().map(|j| j.to_value()))
        .filter(|r| r["decision"]["skipped"].to_string().contains("desk/coder"))
        .count();
    // Each post-failure request either failed over (refused, then laptop) or had desk
    // skipped as down by the decision; none reached the client as an error.
    assert_eq!(failed_over + not_tried, 4, "{recs:#?}");
    assert!(failed_over >= 1 || not_tried == 4);

    // The routing log shows the dispatches, newest first.
    let (s, b) = get(gw.addr, "/api/routing/log?policy=auto:code").await;
    assert_eq!(s, 200);
    let log: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(log["entries"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn a_stream_cut_after_the_first_byte_is_not_retried() {
    let desk = host("desk", vec![model("coder", 32768)]).await;
    let laptop = host("laptop", vec![model("coder", 32768)]).await;
    let gw = gateway(
        &[&desk, &laptop],
        r#"[{"name":"auto:code","candidates":["desk/coder","laptop/coder"],"order":["priority"]}]"#,
    )
    .await;
    assert!(wait_chosen(gw.addr, r#"{"model":"auto:code"}"#, "desk/coder").await);
    desk.faults().cut_stream_after(Some(2));
    let body = r#"{"model":"auto:code","stream":true,"messages":[{"role":"user","content":"hi"}],"max_tokens":20}"#;
    let (s, h, b) = post(gw.addr, "/v1/chat/completions", &[], body).await;
    assert_eq!((s, h["x-boo-model"].to_str().unwrap()), (200, "desk/coder"));
    let text = String::from_utf8_lossy(&b);
    assert!(!text.contains("[DONE]"), "the stream was cut: {text}");
    assert_eq!(
        laptop.stats().requests("/v1/chat/completions"),
        0,
        "never retried after the first byte"
    );
    // The log says why.
    assert!(eventually(|| !gw.sink.records().is_empty()).await);
    let (_, b) = get(gw.addr, "/api/routing/log").await;
    let log: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let route = &log["entries"][0]["route"]["failover"];
    assert_eq!(route["attempts"].as_array().unwrap().len(), 1, "{route}");
    assert_eq!(
        route["attempts"][0]["outcome"]["kind"], "stream_cut",
        "{route}"
    );
    assert!(
        route["result"].to_string().contains("stream_cut"),
        "{route}"
    );
}

#[tokio::test]
async fn a_4k_model_is_skipped_for_a_10k_prompt_and_no_lookup_loads_a_model() {
    let desk = host("desk", vec![model("tiny-4k", 4096), model("big", 32768)]).await;
    let gw = gateway(
        &[&desk],
        r#"[{"name":"auto","candidates":["desk/tiny-4k","desk/big"],"order":["priority"]}]"#,
    )
    .await;
    // Small prompt: the 4k model (first by priority) is fine.
    assert!(
        wait_chosen(
            gw.addr,
            r#"{"model":"auto","prompt_tokens":100}"#,
            "desk/tiny-4k"
        )
        .await
    );
    // Let several inventory polls and context refreshes run against stopped models.
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
    assert_eq!(desk.stats().requests("/upstream/tiny-4k/props"), 0);
    assert_eq!(desk.stats().requests("/upstream/big/props"), 0);

    // `GET /v1/models` lists the policy as a model.
    let (s, b) = get(gw.addr, "/v1/models").await;
    assert_eq!(s, 200);
    let ids: Vec<String> = serde_json::from_slice::<serde_json::Value>(&b).unwrap()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"auto".to_string()), "{ids:?}");

    // A ~10k-token prompt does not fit in 4k: skipped, big serves it.
    let prompt = "word ".repeat(8000);
    let body = format!(
        r#"{{"model":"auto","messages":[{{"role":"user","content":"{prompt}"}}],"max_tokens":4}}"#
    );
    let (s, h, b) = post(gw.addr, "/v1/chat/completions", &[], &body).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["x-boo-model"], "desk/big");
    let route = h["x-boo-route"].to_str().unwrap();
    assert!(route.contains("desk/tiny-4k=ctx"), "{route}");
    assert_eq!(
        desk.stats()
            .received_on("/v1/chat/completions")
            .iter()
            .filter(|r| r.model.as_deref() == Some("tiny-4k"))
            .count(),
        0
    );

    // Now big is loaded: its window is read from the running server, tiny-4k still never.
    assert!(eventually(|| desk.stats().requests("/upstream/big/props") > 0).await);
    assert_eq!(desk.stats().requests("/upstream/tiny-4k/props"), 0);

    // explain says the same without sending anything.
    let before = desk.stats().requests("/v1/chat/completions");
    let v = explain(gw.addr, r#"{"model":"auto","prompt_tokens":10000}"#).await;
    assert_eq!(v["decision"]["attempts"][0]["model"], "desk/big");
    assert!(v["text"].as_str().unwrap().contains("tiny-4k"));
    assert_eq!(desk.stats().requests("/v1/chat/completions"), before);
}

#[tokio::test]
async fn with_the_same_model_on_two_hosts_the_loaded_one_wins() {
    let desk = host("desk", vec![model("coder", 32768)]).await;
    let laptop = host("laptop", vec![model("coder", 32768)]).await;
    let gw = gateway(
        &[&desk, &laptop],
        r#"[{"name":"auto:code","candidates":["tag:code"],"order":["prefer_loaded"]}]"#,
    )
    .await;
    // Cold everywhere: ties break by composite id.
    assert!(wait_chosen(gw.addr, r#"{"model":"auto:code"}"#, "desk/coder").await);
    // Load it on the laptop only (directly on the host).
    let r = client::post_json(
        &laptop.base_url(),
        "/v1/chat/completions",
        &serde_json::json!({
        "model": "coder", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert!(wait_chosen(gw.addr, r#"{"model":"auto:code"}"#, "laptop/coder").await);
    let (s, h, _) = post(gw.addr, "/v1/chat/completions", &[], &chat("auto:code")).await;
    assert_eq!(
        (s, h["x-boo-model"].to_str().unwrap()),
        (200, "laptop/coder")
    );
    assert_eq!(desk.stats().requests("/v1/chat/completions"), 0);
}

#[tokio::test]
async fn policies_are_managed_over_the_api() {
    let desk = host("desk", vec![model("coder", 32768)]).await;
    let gw = gateway(&[&desk], r#"[{"name":"auto","candidates":["*"]}]"#).await;
    let (s, _, b) = post(
        gw.addr,
        "/api/routing/explain",
        &[],
        r#"{"model":"auto:fast"}"#,
    )
    .await;
    assert_eq!(s, 404, "{}", String::from_utf8_lossy(&b));

    let mut c = common::connect(gw.addr).await;
    let put = |body: &'static str| {
        hyper::Request::put("/api/routing/policies/auto:fast")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    // Bad policy: 400 naming the field.
    let r = c.send_request(put(r#"{"candidates":[]}"#)).await.unwrap();
    assert_eq!(r.status(), 400);
    let b = http_body_util::BodyExt::collect(r.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&b).contains("candidates"), "{b:?}");
    let r = c
        .send_request(put(r#"{"candidates":["desk/coder"],"order":["fastest"]}"#))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, b) = get(gw.addr, "/api/routing/policies").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    let names: Vec<&str> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["auto", "auto:fast"]);
    assert_eq!(v["policies"][1]["origin"], "api");

    let (s, h, _) = post(gw.addr, "/v1/chat/completions", &[], &chat("auto:fast")).await;
    assert_eq!((s, h["x-boo-model"].to_str().unwrap()), (200, "desk/coder"));

    let r = c
        .send_request(
            hyper::Request::delete("/api/routing/policies/auto:fast")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _, b) = post(gw.addr, "/v1/chat/completions", &[], &chat("auto:fast")).await;
    assert_eq!(s, 404, "{}", String::from_utf8_lossy(&b));
    assert_eq!(common::err_code(&b), "model_not_found");

    let (s, b) = get(gw.addr, "/api/routing/scores").await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["scores"][0]["model"], "desk/coder");
}

#[tokio::test]
async fn a_saturated_local_host_spills_to_the_cloud_candidate() {
    // A slow local model (2 tok/s) on a host allowed one request at a time.
    let mut slow = ModelSpec::new("m");
    slow.load_ms = 1;
    slow.prompt_tps = 0.0;
    slow.gen_tps = 2.0;
    let desk = start_host(HostSpec::llama_swap("desk", ApiGen::Current, vec![slow]))
        .await
        .unwrap();
    let mut cm = model("cloudm", 32768);
    cm.load_ms = 1;
    let cloud = start_host(HostSpec::llama_server("cloud", cm))
        .await
        .unwrap();
    let cloud_url = cloud.base_url();
    let mut up = false;
    for _ in 0..200 {
        if client::get(&cloud_url, "/health")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "the cloud stand-in finished loading");
    let json = format!(
        r#"{{ "providers": [
              {{ "id": "desk", "kind": "llama-swap", "base_url": "{}", "max_concurrency": 1 }},
              {{ "id": "cloud", "kind": "openai", "base_url": "{}/v1", "models": [{{ "id": "cloudm" }}] }} ],
            "policies": [{{ "name": "auto", "candidates": ["desk/m", "cloud/cloudm"],
                           "order": ["priority"], "filters": {{ "max_wait_ms": 1000 }} }}] }}"#,
        desk.base_url(),
        cloud.base_url()
    );
    let reg = from_json_str(&json, &MapEnv::new()).unwrap().registry;
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.poll_every = Duration::from_millis(100);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    assert!(wait_chosen(addr, r#"{"model":"auto"}"#, "desk/m").await);

    // One long request occupies the local host's only slot...
    let long = r#"{"model":"auto","messages":[{"role":"user","content":"hi"}],"max_tokens":60}"#;
    let busy = tokio::spawn(async move { post(addr, "/v1/chat/completions", &[], long).await });
    // ...so its queue wait estimate passes max_wait and the cloud candidate goes first.
    assert!(wait_chosen(addr, r#"{"model":"auto"}"#, "cloud/cloudm").await);
    let (s, h, b) = post(addr, "/v1/chat/completions", &[], &chat("auto")).await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(h["x-boo-model"], "cloud/cloudm");
    assert_eq!(cloud.stats().requests("/v1/chat/completions"), 1);
    assert_eq!(desk.stats().requests("/v1/chat/completions"), 1);
    busy.abort();
}

#[tokio::test]
async fn an_unhealthy_or_disabled_gateway_provider_is_a_503_never_a_fallback() {
    let desk = host("desk", vec![model("coder", 32768)]).await;
    // A port nothing listens on: the poll marks the gateway provider unreachable.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let json = format!(
        r#"{{ "providers": [
              {{ "id": "desk", "kind": "llama-swap", "base_url": "{}", "default": true }},
              {{ "id": "peer", "kind": "gateway", "base_url": "{dead_url}" }},
              {{ "id": "peer-off", "kind": "gateway", "base_url": "{dead_url}", "enabled": false }} ],
            "policies": [] }}"#,
        desk.base_url()
    );
    let reg = from_json_str(&json, &MapEnv::new()).unwrap().registry;
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.poll_every = Duration::from_millis(100);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    let mut last = (0, bytes::Bytes::new());
    for _ in 0..300 {
        let (s, _, b) = post(addr, "/v1/chat/completions", &[], &chat("peer/coder")).await;
        last = (s, b);
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let v: serde_json::Value = serde_json::from_slice(&last.1).unwrap();
    assert_eq!(last.0, 503, "{v}");
    assert_eq!(v["error"]["code"], "gateway_error");
    assert_eq!(v["error"]["reason"], "unhealthy");

    let (s, _, b) = post(addr, "/v1/chat/completions", &[], &chat("peer-off/coder")).await;
    assert_eq!(s, 503);
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["error"]["reason"], "offline", "{v}");
    assert_eq!(
        desk.stats().requests("/v1/chat/completions"),
        0,
        "no silent fallback"
    );
}
