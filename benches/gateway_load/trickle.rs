//! A tiny in-process upstream whose streams stay open: one SSE chunk every `interval`, for the
//! "1,000 concurrent open streams" memory measurement. It runs on its own thread and
//! current-thread runtime, and stops a stream as soon as its client goes away.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use http_body_util::combinators::BoxBody;
use hyper::body::{Body, Frame};
use hyper::service::service_fn;
use hyper::{Request, Response, header};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

const CHUNK: &str = "data: {\"id\":\"chatcmpl-trickle\",\"object\":\"chat.completion.chunk\",\"created\":1763700000,\"model\":\"trickle\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tick \"},\"finish_reason\":null}]}\n\n";

/// Starts the server on 127.0.0.1:0 and returns its address.
pub fn start(interval: Duration, chunks: usize) -> anyhow::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::Builder::new()
        .name("trickle-upstream".into())
        .spawn(move || {
            let rt = crate::load::runtime();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener)
                    .expect("listener registers with tokio");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| handle(req, interval, chunks));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    });
                }
            });
        })?;
    Ok(addr)
}

type RespBody = BoxBody<Bytes, Infallible>;

async fn handle(
    req: Request<hyper::body::Incoming>,
    interval: Duration,
    chunks: usize,
) -> Result<Response<RespBody>, Infallible> {
    let json = |s: &'static str| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(BoxBody::new(Full::new(Bytes::from_static(s.as_bytes()))))
            .expect("static response")
    };
    Ok(match req.uri().path() {
        "/v1/chat/completions" => {
            let (tx, rx) = mpsc::channel::<Bytes>(2);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                for _ in 0..chunks {
                    tick.tick().await;
                    if tx.send(Bytes::from_static(CHUNK.as_bytes())).await.is_err() {
                        return; // client gone
                    }
                }
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            });
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .header(header::CACHE_CONTROL, "no-cache")
                .body(BoxBody::new(ChannelBody(rx)))
                .expect("static response")
        }
        "/v1/models" => json(
            r#"{"object":"list","data":[{"id":"trickle","object":"model","created":1763700000,"owned_by":"trickle"}]}"#,
        ),
        "/health" => json(r#"{"status":"ok"}"#),
        _ => {
            let mut r =
                json(r#"{"error":{"message":"not found","type":"not_found_error","code":404}}"#);
            *r.status_mut() = hyper::StatusCode::NOT_FOUND;
            r
        }
    })
}

/// A response body fed by a channel; dropping it closes the channel and ends the producer.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}
