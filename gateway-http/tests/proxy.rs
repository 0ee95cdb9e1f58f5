//! Gateway proxy behaviour over real TCP against a small scripted hyper upstream.
//!
//! The upstream's behaviour is chosen by the wire model the gateway sends it, so each test
//! also proves the model was rewritten.

use boo_gateway_http::{
    Gateway, GatewayConfig, MemorySink, StaticRouter, TelemetrySink, UpstreamSpec, UpstreamTimeouts,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

const JSON_BODY: &str = r#"{"choices":[{"finish_reason":"stop","index":0,"message":{"role":"assistant","content":"hi"}}],"created":1,"model":"echo","object":"chat.completion","usage":{"completion_tokens":2,"prompt_tokens":9,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4}},"id":"chatcmpl-1","timings":{"cache_n":4,"prompt_n":5,"prompt_per_second":250.0,"predicted_n":2,"predicted_per_second":40.5}}"#;

const SSE_CHUNKS: [&str; 5] = [
    "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"llama-swap loading model: sse\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}],\"id\":\"c\",\"model\":\"sse\",\"object\":\"chat.completion.chunk\"}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"id\":\"c\",\"model\":\"sse\",\"object\":\"chat.completion.chunk\"}\n\n",
    "data: {\"choices\":[],\"id\":\"c\",\"model\":\"sse\",\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":3,\"total_tokens\":4},\"timings\":{\"predicted_per_second\":99.5,\"prompt_per_second\":10.0}}\n\n",
    "data: [DONE]\n\n",
];

#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Upstream {
    seen: Mutex<Vec<Seen>>,
    requests: AtomicUsize,
    forever_cancelled: AtomicBool,
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn upstream_handle(
    up: Arc<Upstream>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<UpBody> {
    up.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    up.seen.lock().unwrap().push(Seen {
        path: path.clone(),
        headers,
        body: body.clone(),
    });
    if path == "/v1/models" {
        return hyper::Response::new(full(r#"{"object":"list","data":[{"id":"echo"}]}"#));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let model = v["model"].as_str().unwrap_or("").to_string();
    let sse = |chunks: Vec<Result<Bytes, std::io::Error>>, delay: Duration| {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        tokio::spawn(async move {
            for c in chunks {
                tokio::time::sleep(delay).await;
                if tx.send(c.map(Frame::data)).await.is_err() {
                    return;
                }
            }
        });
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
        hyper::Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(stream).boxed())
            .unwrap()
    };
    match model.as_str() {
        "echo" => hyper::Response::builder()
            .header("content-type", "application/json")
            .header("x-upstream", "1")
            .body(full(JSON_BODY))
            .unwrap(),
        "sse" => sse(
            SSE_CHUNKS
                .iter()
                .map(|c| Ok(Bytes::from_static(c.as_bytes())))
                .collect(),
            Duration::from_millis(5),
        ),
        "cut" => sse(
            vec![
                Ok(Bytes::from_static(SSE_CHUNKS[2].as_bytes())),
                Err(std::io::Error::other("upstream died")),
            ],
            Duration::from_millis(5),
        ),
        "stall" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(Frame::data(Bytes::from_static(
                        SSE_CHUNKS[2].as_bytes(),
                    ))))
                    .await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(tx);
            });
            let stream =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
                );
            hyper::Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
        "forever" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
            let up2 = up.clone();
            tokio::spawn(async move {
                loop {
                    if tx
                        .send(Ok(Frame::data(Bytes::from_static(
                            SSE_CHUNKS[2].as_bytes(),
                        ))))
                        .await
                        .is_err()
                    {
                        up2.forever_cancelled.store(true, Ordering::SeqCst);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            let stream =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
                );
            hyper::Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
        "boom" => hyper::Response::builder()
            .status(500)
            .header("content-type", "application/json")
            .body(full(
                r#"{"error":{"code":500,"message":"kaboom","type":"server_error"}}"#,
            ))
            .unwrap(),
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            hyper::Response::new(full(""))
        }
        _ => hyper::Response::builder()
            .status(404)
            .body(full("no such model"))
            .unwrap(),
    }
}

async fn start_upstream() -> (Arc<Upstream>, SocketAddr) {
    let up = Arc::new(Upstream::default());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let up2 = up.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let up = up2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let up = up.clone();
                    async move { Ok::<_, Infallible>(upstream_handle(up, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (up, addr)
}

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

type Client = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Client {
    let s = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, Bytes) {
    let mut c = connect(addr).await;
    let mut req = hyper::Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = c
        .send_request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let b = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, h, b)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Bytes) {
    let mut c = connect(addr).await;
    let resp = c
        .send_request(
            hyper::Request::get(path)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn err_code(b: &Bytes) -> String {
    let v: serde_json::Value = serde_json::from_slice(b).expect("error body is JSON");
    assert!(
        v["error"]["message"].is_string(),
        "OpenAI-shaped error: {v}"
    );
    assert!(v["error"]["type"].is_string());
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

/// Waits (generously) until `f` holds; a failure guard, not a timing assertion.
async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
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

#[tokio::test]
async fn bad_requests_get_clear_4xx_and_never_reach_upstream() {
    let cfg = GatewayConfig {
        max_body_bytes: 1024,
        ..GatewayConfig::default()
    };
    let h = harness(cfg).await;
    let long_source = "s".repeat(65);
    let cases: Vec<(&str, Vec<(&str, &str)>, String, u16, &str)> = vec![
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
    assert!(seen.headers.get("x-api-key").is_none());
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
