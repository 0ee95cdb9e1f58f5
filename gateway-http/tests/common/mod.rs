//! Shared test support: a scripted hyper upstream and small HTTP client helpers.
#![allow(dead_code)]

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

pub const JSON_BODY: &str = r#"{"choices":[{"finish_reason":"stop","index":0,"message":{"role":"assistant","content":"hi"}}],"created":1,"model":"echo","object":"chat.completion","usage":{"completion_tokens":2,"prompt_tokens":9,"total_tokens":11,"prompt_tokens_details":{"cached_tokens":4}},"id":"chatcmpl-1","timings":{"cache_n":4,"prompt_n":5,"prompt_per_second":250.0,"predicted_n":2,"predicted_per_second":40.5}}"#;

pub const SSE_CHUNKS: [&str; 5] = [
    "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"llama-swap loading model: sse\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}],\"id\":\"c\",\"model\":\"sse\",\"object\":\"chat.completion.chunk\"}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}],\"id\":\"c\",\"model\":\"sse\",\"object\":\"chat.completion.chunk\"}\n\n",
    "data: {\"choices\":[],\"id\":\"c\",\"model\":\"sse\",\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":1,\"prompt_tokens\":3,\"total_tokens\":4},\"timings\":{\"predicted_per_second\":99.5,\"prompt_per_second\":10.0}}\n\n",
    "data: [DONE]\n\n",
];

/// How long the `pause` upstream waits between its first two events and the rest.
pub const PAUSE: Duration = Duration::from_millis(400);

/// The 64 SSE events of the `burst` and `burstcut` upstreams, each its own upstream chunk.
pub fn burst_events() -> Vec<Bytes> {
    (0..64)
        .map(|i| {
            Bytes::from(format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"t{i}\"}}}}],\"object\":\"chat.completion.chunk\"}}\n\n"
            ))
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
pub struct Upstream {
    pub seen: Mutex<Vec<Seen>>,
    pub requests: AtomicUsize,
    pub forever_cancelled: AtomicBool,
}

pub type UpBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

pub fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

type FrameResult = Result<Frame<Bytes>, std::io::Error>;

/// An SSE response whose body is `stream`.
fn sse_stream(
    stream: impl futures::Stream<Item = FrameResult> + Send + Sync + 'static,
) -> hyper::Response<UpBody> {
    hyper::Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

/// An SSE response streaming what `rx` receives, ending when its senders are gone.
fn sse_from(rx: tokio::sync::mpsc::Receiver<FrameResult>) -> hyper::Response<UpBody> {
    sse_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|x| (x, rx))
    }))
}

pub async fn upstream_handle(
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
        sse_from(rx)
    };
    match model.as_str() {
        "echo" => hyper::Response::builder()
            .header("content-type", "application/json")
            .header("x-upstream", "1")
            .body(full(JSON_BODY))
            .unwrap(),
        // Hop-by-hop headers a proxy must not pass on, next to an end-to-end one.
        "hop" => hyper::Response::builder()
            .header("content-type", "application/json")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic realm=\"upstream\"")
            .header("trailer", "x-checksum")
            .header("connection", "x-upstream-private")
            .header("x-upstream-private", "1")
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
        // Many events that reach the gateway together (one upstream write).
        "burst" => sse_stream(futures::stream::iter(
            burst_events().into_iter().map(|e| Ok(Frame::data(e))),
        )),
        // The same events, then the connection breaks.
        "burstcut" => sse_stream(futures::stream::iter(
            burst_events()
                .into_iter()
                .map(|e| Ok(Frame::data(e)))
                .chain([Err(std::io::Error::other("upstream died"))]),
        )),
        // Two events together, then a pause before the rest.
        "pause" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
            tokio::spawn(async move {
                for c in &SSE_CHUNKS[1..3] {
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
                        .await;
                }
                tokio::time::sleep(PAUSE).await;
                for c in &SSE_CHUNKS[3..] {
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
                        .await;
                }
            });
            sse_from(rx)
        }
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
            sse_from(rx)
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
            sse_from(rx)
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

pub async fn start_upstream() -> (Arc<Upstream>, SocketAddr) {
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

pub type Client = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

pub async fn connect(addr: SocketAddr) -> Client {
    let s = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

pub async fn post(
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

pub async fn get(addr: SocketAddr, path: &str) -> (u16, Bytes) {
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

pub fn err_code(b: &Bytes) -> String {
    let v: serde_json::Value = serde_json::from_slice(b).expect("error body is JSON");
    assert!(
        v["error"]["message"].is_string(),
        "OpenAI-shaped error: {v}"
    );
    assert!(v["error"]["type"].is_string());
    v["error"]["code"].as_str().unwrap_or("").to_string()
}

/// Waits (generously) until `f` holds; a failure guard, not a timing assertion.
pub async fn eventually(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}
