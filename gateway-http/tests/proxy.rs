//! Gateway proxy behaviour over real TCP against a small scripted hyper upstream.
//!
//! The upstream's behaviour is chosen by the wire model the gateway sends it, so each test
//! also proves the model was rewritten.

mod common;

use boo_gateway_http::{
    Gateway, GatewayConfig, MemorySink, StaticRouter, TelemetrySink, UpstreamSpec, UpstreamTimeouts,
};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;

fn spec(provider: &str, addr: SocketAddr) -> UpstreamSpec {
    UpstreamSpec {
        provider: provider.into(),
        base_url: format!("http://{addr}"),
        base_includes_version: false,
        sidecar_url: None,
        headers: vec![],
        has_api_key: false,
        timeouts: UpstreamTimeouts {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(30),
            idle: Duration::from_secs(30),
            total: None,
        },
        max_concurrency: None,
    }
}

struct Harness {
    addr: SocketAddr,
    a: Arc<Upstream>,
    b: Arc<Upstream>,
    sink: Arc<MemorySink>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

async fn harness(cfg: GatewayConfig) -> Harness {
    let (a, a_addr) = start_upstream().await;
    let (b, b_addr) = start_upstream().await;
    // A port with nothing listening: bind, read the port, close.
    let dead_addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let router = StaticRouter::new()
        .provider("a", &["echo", "sse"])
        .provider("b", &["echo"])
        .provider("dead", &["echo"])
        .provider("slow", &["hang"])
        .provider("idle", &["stall"])
        .provider("cloud", &["echo"]);
    let mut slow = spec("slow", a_addr);
    slow.timeouts.first_byte = Duration::from_millis(300);
    let mut idle = spec("idle", a_addr);
    idle.timeouts.idle = Duration::from_millis(300);
    let mut cloud = spec("cloud", b_addr);
    cloud.headers = vec![("authorization".into(), "Bearer sk-provider-secret".into())];
    cloud.has_api_key = true;
    let specs = vec![
        spec("a", a_addr),
        spec("b", b_addr),
        spec("dead", dead_addr),
        slow,
        idle,
        cloud,
    ];
    let sink = Arc::new(MemorySink::new());
    let gw = Gateway::new(
        cfg,
        Arc::new(router),
        &specs,
        sink.clone() as Arc<dyn TelemetrySink>,
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        gw.serve(l, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Harness {
        addr,
        a,
        b,
        sink,
        shutdown: Some(tx),
        server,
    }
}

/// The `hop` upstream's hop-by-hop headers (and the one its `Connection` header names) are gone.
fn assert_no_hop_headers(headers: &http::HeaderMap) {
    for hop in [
        "keep-alive",
        "proxy-authenticate",
        "trailer",
        "x-upstream-private",
    ] {
        assert!(
            !headers.contains_key(hop),
            "{hop} reached the client: {headers:?}"
        );
    }
}

#[tokio::test]
async fn upstream_hop_by_hop_headers_stay_on_the_upstream_hop() {
    let h = harness(GatewayConfig::default()).await;
    let (status, headers, body) = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"a/hop","messages":[]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, JSON_BODY.as_bytes());
    assert_eq!(headers["x-upstream"], "1");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-boo-provider"], "a");
    assert_no_hop_headers(&headers);
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_the_upstream_hop_for_auto_models_too() {
    let (_up, up_addr) = start_upstream().await;
    let json = format!(
        r#"{{ "providers": [{{ "id": "a", "kind": "openai", "base_url": "http://{up_addr}/v1",
                              "models": [{{ "id": "hop" }}] }}],
              "policies": [{{ "name": "auto:hop", "candidates": ["a/hop"], "order": ["priority"] }}] }}"#
    );
    let reg = boo_provider_registry::from_json_str(&json, &boo_provider_registry::MapEnv::new())
        .unwrap()
        .registry;
    let opts = boo_gateway_http::RunOptions::new(Arc::new(reg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(boo_gateway_http::run_on(l, opts, async {
        let _ = rx.await;
    }));
    let mut got = None;
    for _ in 0..100 {
        let r = post(
            addr,
            "/v1/chat/completions",
            &[],
            r#"{"model":"auto:hop","messages":[]}"#,
        )
        .await;
        if r.0 == 200 {
            got = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, headers, body) = got.expect("the auto model serves");
    assert_eq!(body, JSON_BODY.as_bytes());
    assert_eq!(headers["x-upstream"], "1");
    assert_eq!(headers["x-boo-model"], "a/hop");
    assert!(headers.contains_key("x-boo-route"), "{headers:?}");
    assert_no_hop_headers(&headers);
}

#[tokio::test]
async fn non_streaming_is_byte_for_byte_and_upstream_sees_wire_id() {
    let h = harness(GatewayConfig::default()).await;
    let req = r#"{"model":"a/echo","messages":[{"role":"user","content":"hi"}],"temperature":0.5}"#;
    let (status, headers, body) = post(
        h.addr,
        "/v1/chat/completions",
        &[("x-boo-source", "arena"), ("x-request-id", "rid-123")],
        req,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, JSON_BODY.as_bytes());
    assert_eq!(headers["x-boo-provider"], "a");
    assert_eq!(headers["x-boo-model"], "a/echo");
    assert_eq!(headers["x-request-id"], "rid-123");
    assert_eq!(headers["x-upstream"], "1");
    assert!(
        headers["x-boo-overhead-ms"]
            .to_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            >= 0.0
    );
    let seen = h.a.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body, req.replace("a/echo", "echo").as_bytes());
    assert_eq!(seen.headers["x-boo-source"], "arena");
    assert_eq!(seen.headers["x-request-id"], "rid-123");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h.b.requests.load(Ordering::SeqCst), 0);

    assert!(eventually(|| !h.sink.records().is_empty()).await);
    let rec = h.sink.records()[0].clone();
    assert_eq!(rec.request_id, "rid-123");
    assert_eq!(rec.provider_id, "a");
    assert_eq!(rec.model, "a/echo");
    assert_eq!(rec.wire_model.as_deref(), Some("echo"));
    assert_eq!(rec.source.as_deref(), Some("arena"));
    assert_eq!(rec.status, 200);
    assert_eq!(rec.prompt_tokens, Some(9));
    assert_eq!(rec.completion_tokens, Some(2));
    assert_eq!(rec.cached_tokens, Some(4));
    assert_eq!(rec.gen_tps, Some(40.5));
    assert_eq!(rec.bytes_in, req.len() as i64);
    assert_eq!(rec.bytes_out, JSON_BODY.len() as i64);
    assert!(!rec.stream);
    assert!(rec.error_class.is_none());
}

#[tokio::test]
async fn streaming_is_byte_for_byte_with_ttft_after_loading_chunks() {
    let h = harness(GatewayConfig::default()).await;
    let (status, headers, body) = post(
        h.addr,
        "/v/chat/completions",
        &[],
        r#"{"stream":true,"model":"a/sse","messages":[]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(body, SSE_CHUNKS.concat().as_bytes());
    assert_eq!(h.a.seen.lock().unwrap()[0].path, "/v1/chat/completions");
    assert!(eventually(|| !h.sink.records().is_empty()).await);
    let rec = h.sink.records()[0].clone();
    assert!(rec.stream);
    assert!(rec.ttft_ms.is_some(), "first real token seen");
    assert_eq!(rec.completion_tokens, Some(1));
    assert_eq!(rec.gen_tps, Some(99.5));
    assert_eq!(rec.bytes_out, SSE_CHUNKS.concat().len() as i64);
}

#[tokio::test]
async fn same_wire_model_on_two_providers_reaches_its_own_host() {
    let h = harness(GatewayConfig::default()).await;
    let (s1, h1, _) = post(h.addr, "/v1/chat/completions", &[], r#"{"model":"a/echo"}"#).await;
    let (s2, h2, _) = post(h.addr, "/v1/chat/completions", &[], r#"{"model":"b/echo"}"#).await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(h1["x-boo-provider"], "a");
    assert_eq!(h2["x-boo-provider"], "b");
    assert_eq!(h.a.requests.load(Ordering::SeqCst), 1);
    assert_eq!(h.b.requests.load(Ordering::SeqCst), 1);
    assert_eq!(
        &h.b.seen.lock().unwrap()[0].body[..],
        br#"{"model":"echo"}"#
    );
}

/// path, headers, body, expected status, expected error code.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u16, &'a str);

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_never_reach_upstream() {
    let cfg = GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    };
    let h = harness(cfg).await;
    let long_source = "s".repeat(65);
    let cases: Vec<Case> = vec![
        (
            "/v1/chat/completions",
            vec![],
            r#"{"model":"nope/echo"}"#.into(),
            400,
            "model_not_found",
        ),
        (
            "/v1/chat/completions",
            vec![],
            r#"{"model":"a/echo","#.into(),
            400,
            "invalid_json",
        ),
        (
            "/v1/chat/completions",
            vec![],
            r#"{"messages":[]}"#.into(),
            400,
            "missing_model",
        ),
        (
            "/v1/chat/completions",
            vec![],
            r#"{"model":7}"#.into(),
            400,
            "invalid_model",
        ),
        (
            "/v1/chat/completions",
            vec![],
            format!(r#"{{"model":"a/echo","pad":"{}"}}"#, "x".repeat(2000)),
            413,
            "body_too_large",
        ),
        (
            "/v1/chat/completions",
            vec![("x-boo-source", "has space")],
            r#"{"model":"a/echo"}"#.into(),
            400,
            "invalid_source",
        ),
        (
            "/v1/chat/completions",
            vec![("x-boo-source", long_source.as_str())],
            r#"{"model":"a/echo"}"#.into(),
            400,
            "invalid_source",
        ),
        ("/v1/nope", vec![], "{}".into(), 404, "not_found"),
    ];
    for (path, hdrs, body, want_status, want_code) in cases {
        let (status, _, b) = post(h.addr, path, &hdrs, &body).await;
        assert_eq!(status, want_status, "{body:.60}");
        assert_eq!(err_code(&b), want_code);
    }
    let (status, _) = get(h.addr, "/v1/chat/completions").await;
    assert_eq!(status, 405);
    assert_eq!(
        h.a.requests.load(Ordering::SeqCst) + h.b.requests.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn upstream_faults_map_to_documented_errors_and_gateway_keeps_serving() {
    let h = harness(GatewayConfig::default()).await;
    // 500 passes through unchanged.
    let (s, _, b) = post(h.addr, "/v1/chat/completions", &[], r#"{"model":"a/boom"}"#).await;
    assert_eq!(s, 500);
    assert_eq!(
        &b[..],
        br#"{"error":{"code":500,"message":"kaboom","type":"server_error"}}"#
    );
    // Refused connection → 502 naming the provider.
    let (s, _, b) = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"dead/echo"}"#,
    )
    .await;
    assert_eq!(s, 502);
    assert_eq!(err_code(&b), "upstream_unreachable");
    assert!(String::from_utf8_lossy(&b).contains("\\\"dead\\\""));
    // Hang → 504 after the provider's first-byte timeout.
    let (s, _, b) = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"slow/hang"}"#,
    )
    .await;
    assert_eq!(s, 504);
    assert_eq!(err_code(&b), "upstream_timeout");
    // Mid-stream cut → the bytes so far, one llama.cpp-style error event, clean end.
    let (s, _, b) = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"a/cut","stream":true}"#,
    )
    .await;
    assert_eq!(s, 200);
    let text = String::from_utf8_lossy(&b);
    assert!(text.starts_with(SSE_CHUNKS[2]), "{text}");
    assert!(text.contains("\"code\":\"upstream_cut\""), "{text}");
    // Idle between chunks → stream ends cleanly with an error event.
    let (s, _, b) = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"idle/stall","stream":true}"#,
    )
    .await;
    assert_eq!(s, 200);
    assert!(String::from_utf8_lossy(&b).contains("upstream_idle_timeout"));
    // Still serving.
    let (s, _, b) = post(h.addr, "/v1/chat/completions", &[], r#"{"model":"a/echo"}"#).await;
    assert_eq!((s, &b[..]), (200, JSON_BODY.as_bytes()));
    assert!(eventually(|| h.sink.records().len() == 6).await);
    let classes: Vec<Option<String>> = h
        .sink
        .records()
        .iter()
        .map(|r| r.error_class.clone())
        .collect();
    for c in [
        "upstream_unreachable",
        "upstream_timeout",
        "upstream_cut",
        "upstream_idle_timeout",
    ] {
        assert!(classes.contains(&Some(c.to_string())), "{classes:?}");
    }
    let (_, metrics) = get(h.addr, "/metrics").await;
    let m = String::from_utf8_lossy(&metrics);
    assert!(
        m.contains("boo_gateway_requests_total{provider=\"a\",model=\"a/echo\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("boo_gateway_errors_total{provider=\"dead\",model=\"dead/echo\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn client_disconnect_cancels_upstream() {
    let h = harness(GatewayConfig::default()).await;
    let mut c = connect(h.addr).await;
    let req = hyper::Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"a/forever","stream":true}"#,
        )))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    // Read a couple of chunks, then hang up.
    for _ in 0..2 {
        body.frame().await.unwrap().unwrap();
    }
    drop(body);
    drop(c);
    assert!(
        eventually(|| h.a.forever_cancelled.load(Ordering::SeqCst)).await,
        "upstream stream was cancelled"
    );
    assert!(eventually(|| !h.sink.records().is_empty()).await);
    assert_eq!(
        h.sink.records()[0].error_class.as_deref(),
        Some("client_disconnect")
    );
}

#[tokio::test]
async fn provider_key_replaces_client_authorization() {
    let h = harness(GatewayConfig::default()).await;
    let (s, _, _) = post(
        h.addr,
        "/v1/embeddings",
        &[("authorization", "Bearer client-key"), ("x-api-key", "k")],
        r#"{"model":"cloud/echo"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let seen = h.b.seen.lock().unwrap()[0].clone();
    assert_eq!(seen.path, "/v1/embeddings");
    assert_eq!(seen.headers["authorization"], "Bearer sk-provider-secret");
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(seen.headers.get("x-api-key").is_none());
}

#[tokio::test]
async fn forwarding_headers_are_set_once_and_the_client_chain_is_extended() {
    let h = harness(GatewayConfig::default()).await;
    let (s, _, _) = post(
        h.addr,
        "/v1/chat/completions",
        &[
            ("x-request-id", "rid-9"),
            ("x-forwarded-for", "10.0.0.1"),
            ("host", "client.example"),
            ("accept-encoding", "gzip"),
            ("x-custom", "kept"),
        ],
        r#"{"model":"a/echo"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let seen = h.a.seen.lock().unwrap()[0].clone();
    let all = |k: &str| -> Vec<String> {
        seen.headers
            .get_all(k)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(all("x-request-id"), ["rid-9"]);
    assert_eq!(all("x-forwarded-for"), ["10.0.0.1, 127.0.0.1"]);
    assert_eq!(all("x-custom"), ["kept"]);
    assert_eq!(
        all("content-length"),
        [r#"{"model":"echo"}"#.len().to_string()]
    );
    // Host names the upstream, not the client's view of the gateway.
    let host = all("host");
    assert_eq!(host.len(), 1);
    assert!(host[0].starts_with("127.0.0.1:"), "{host:?}");
    assert!(all("accept-encoding").is_empty());
}

#[tokio::test]
async fn client_api_keys_are_required_when_configured() {
    let cfg = GatewayConfig {
        api_keys: vec!["k1".into(), "k2".into()],
        ..GatewayConfig::default()
    };
    let h = harness(cfg).await;
    let (s, hd, b) = post(h.addr, "/v1/chat/completions", &[], r#"{"model":"a/echo"}"#).await;
    assert_eq!(s, 401);
    assert_eq!(err_code(&b), "invalid_api_key");
    assert!(hd.contains_key("www-authenticate"));
    let (s, _, _) = post(
        h.addr,
        "/v1/chat/completions",
        &[("authorization", "Bearer k3")],
        r#"{"model":"a/echo"}"#,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, _) = post(
        h.addr,
        "/v1/chat/completions",
        &[("authorization", "Bearer k2")],
        r#"{"model":"a/echo"}"#,
    )
    .await;
    assert_eq!(s, 200);
    // The gateway's client key is not forwarded upstream.
    assert!(
        h.a.seen.lock().unwrap()[0]
            .headers
            .get("authorization")
            .is_none()
    );
    // Health and metrics stay open.
    assert_eq!(get(h.addr, "/api/health").await.0, 200);
}

#[tokio::test]
async fn graceful_shutdown_lets_an_in_flight_stream_finish() {
    let mut h = harness(GatewayConfig::default()).await;
    let mut c = connect(h.addr).await;
    let req = hyper::Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"a/sse","stream":true}"#,
        )))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    h.shutdown.take().unwrap().send(()).unwrap();
    // New connections are refused once the listener is gone.
    assert!(
        eventually(
            || std::net::TcpStream::connect_timeout(&h.addr, Duration::from_millis(200)).is_err()
        )
        .await,
        "listener closed"
    );
    let mut all = first.to_vec();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            all.extend_from_slice(&d);
        }
    }
    assert_eq!(all, SSE_CHUNKS.concat().as_bytes());
    tokio::time::timeout(Duration::from_secs(30), &mut h.server)
        .await
        .expect("server stopped")
        .unwrap();
}

#[tokio::test]
async fn connections_that_are_silent_or_idle_do_not_hold_up_shutdown() {
    let mut h = harness(GatewayConfig::default()).await;
    // One connection that never says anything (protocol not yet known), one idle keep-alive
    // HTTP/1.1 connection after a request.
    let silent = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut idle = connect(h.addr).await;
    let req = hyper::Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(br#"{"model":"a/echo"}"#)))
        .unwrap();
    let resp = idle.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    h.shutdown.take().unwrap().send(()).unwrap();
    // Far below the 30 s grace period: neither connection is waited for.
    tokio::time::timeout(Duration::from_secs(10), &mut h.server)
        .await
        .expect("server stopped without waiting out the grace period")
        .unwrap();
    drop(silent);
}

#[tokio::test]
async fn provider_concurrency_limit_queues_then_answers_429() {
    let (up, up_addr) = start_upstream().await;
    let mut s = spec("lim", up_addr);
    s.max_concurrency = Some(1);
    s.timeouts.first_byte = Duration::from_secs(5);
    let mut u = boo_gateway_http::Upstream::new(&s).unwrap();
    u.set_queue(0, Duration::from_millis(10));
    let mut map = std::collections::HashMap::new();
    map.insert(Box::<str>::from("lim"), Arc::new(u));
    let router = StaticRouter::new().provider("lim", &["hang", "echo"]);
    let gw = Gateway::with_upstreams(
        GatewayConfig::default(),
        Arc::new(router),
        map,
        Arc::new(boo_gateway_http::NoopSink),
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(gw.serve(l, std::future::pending()));

    // One request holds the only slot (the upstream never answers)...
    let held = tokio::spawn(async move {
        post(addr, "/v1/chat/completions", &[], r#"{"model":"lim/hang"}"#).await
    });
    assert!(eventually(|| up.requests.load(Ordering::SeqCst) == 1).await);
    // ...so the next one is turned away with 429 + Retry-After, without reaching the upstream.
    let (s, h, b) = post(addr, "/v1/chat/completions", &[], r#"{"model":"lim/echo"}"#).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(err_code(&b), "rate_limit_exceeded");
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
    // When the slot frees up (first-byte timeout → 504), requests flow again.
    let (s, _, _) = held.await.unwrap();
    assert_eq!(s, 504);
    let (s, _, _) = post(addr, "/v1/chat/completions", &[], r#"{"model":"lim/echo"}"#).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn h2c_prior_knowledge_clients_are_served() {
    let h = harness(GatewayConfig::default()).await;
    let stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(format!("http://{}/v1/chat/completions", h.addr))
        .body(Full::new(Bytes::from_static(br#"{"model":"a/echo"}"#)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-boo-provider"], "a");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, JSON_BODY.as_bytes());
}

/// Posts a streaming request and returns the body frames as the client received them, each
/// with the time it arrived (from the request start).
async fn stream_frames(addr: SocketAddr, model: &str) -> Vec<(Duration, Bytes)> {
    let mut c = connect(addr).await;
    let body = format!(r#"{{"model":"{model}","stream":true,"messages":[]}}"#);
    let t0 = std::time::Instant::now();
    let resp = c
        .send_request(
            hyper::Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            frames.push((t0.elapsed(), d));
        }
    }
    frames
}

#[tokio::test]
async fn sse_events_that_arrive_together_leave_in_few_writes_byte_for_byte() {
    let h = harness(GatewayConfig::default()).await;
    let events = burst_events();
    let frames = stream_frames(h.addr, "a/burst").await;
    let got: Vec<u8> = frames.iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(got, events.concat(), "the stream passes through unchanged");
    // Without coalescing every upstream event is its own client write and chunk (64 here).
    assert!(
        frames.len() <= 16,
        "{} client chunks for 64 events that arrived together",
        frames.len()
    );
    // The first event is never held back for later ones (time to first token): the first
    // client chunk carries it, alone or with the events that arrived in the same read.
    assert!(frames[0].1.starts_with(&events[0]), "{:?}", frames[0]);
}

#[tokio::test]
async fn held_events_go_out_when_the_upstream_pauses() {
    let h = harness(GatewayConfig::default()).await;
    let frames = stream_frames(h.addr, "a/pause").await;
    let got: Vec<u8> = frames.iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(got, SSE_CHUNKS[1..].concat().as_bytes());
    // Both events sent before the pause reach the client before the pause ends: nothing waits
    // for the next upstream chunk.
    let mut before = Vec::new();
    for (t, b) in &frames {
        if *t < PAUSE {
            before.extend_from_slice(b);
        }
    }
    assert_eq!(before, SSE_CHUNKS[1..3].concat().as_bytes(), "{frames:?}");
}

#[tokio::test]
async fn events_held_when_the_upstream_breaks_still_reach_the_client() {
    let h = harness(GatewayConfig::default()).await;
    let (s, _, b) = post(
        h.addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"a/burstcut","stream":true}"#,
    )
    .await;
    assert_eq!(s, 200);
    let events = burst_events().concat();
    assert!(b.starts_with(&events), "{}", String::from_utf8_lossy(&b));
    let tail = String::from_utf8_lossy(&b[events.len()..]);
    assert!(tail.starts_with("data: {\"error\""), "{tail}");
    assert!(tail.contains("\"code\":\"upstream_cut\""), "{tail}");
    assert!(eventually(|| !h.sink.records().is_empty()).await);
    let rec = h.sink.records()[0].clone();
    assert_eq!(rec.error_class.as_deref(), Some("upstream_cut"));
    assert_eq!(rec.bytes_out, b.len() as i64);
}

/// A sink that holds each record until the test releases it (or 3 s pass).
struct GatedSink {
    gate: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
    timed_out: std::sync::atomic::AtomicBool,
    inner: MemorySink,
}

impl TelemetrySink for GatedSink {
    fn record(&self, rec: boo_gateway_http::RequestRecord) {
        let g = self.gate.lock().unwrap();
        let (g, t) = self
            .opened
            .wait_timeout_while(g, Duration::from_secs(3), |open| !*open)
            .unwrap();
        if t.timed_out() {
            self.timed_out.store(true, Ordering::SeqCst);
        }
        drop(g);
        self.inner.record(rec);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_reaches_the_client_before_its_telemetry_record_is_made() {
    let (_up, up_addr) = start_upstream().await;
    let sink = Arc::new(GatedSink {
        gate: std::sync::Mutex::new(false),
        opened: std::sync::Condvar::new(),
        timed_out: std::sync::atomic::AtomicBool::new(false),
        inner: MemorySink::new(),
    });
    let gw = Gateway::new(
        GatewayConfig::default(),
        Arc::new(StaticRouter::new().provider("a", &["echo"])),
        &[spec("a", up_addr)],
        sink.clone() as Arc<dyn TelemetrySink>,
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = gw
            .serve(l, async {
                let _ = rx.await;
            })
            .await;
    });
    // A plain blocking client: reads the whole response, then opens the sink's gate. Were the
    // record made before the response's bytes were written, the gate would time out first.
    let s2 = sink.clone();
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        let req = r#"{"model":"a/echo","messages":[]}"#;
        write!(
            c,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{req}",
            req.len()
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.ends_with(JSON_BODY.as_bytes()) {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "connection closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        *s2.gate.lock().unwrap() = true;
        s2.opened.notify_all();
        got
    })
    .await
    .unwrap();
    assert!(String::from_utf8_lossy(&body).starts_with("HTTP/1.1 200"));
    assert!(
        eventually(|| sink.inner.records().len() == 1).await,
        "the record is made once the response is out"
    );
    assert!(
        !sink.timed_out.load(Ordering::SeqCst),
        "the telemetry record held the response back"
    );
}
