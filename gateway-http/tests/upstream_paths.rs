//! Upstream paths not covered by `proxy.rs`: https providers (rustls), the `total` timeout,
//! client disconnect seen by a fleet-sim host, and thread-per-core serving.

mod common;

use boo_fleet_sim::{HostSpec, ModelSpec, SimHost, start_host};
use boo_gateway_http::{
    Gateway, GatewayConfig, MemorySink, StaticRouter, TelemetrySink, Upstream, UpstreamSpec,
    UpstreamTimeouts,
};
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

fn spec(provider: &str, base_url: String) -> UpstreamSpec {
    UpstreamSpec {
        provider: provider.into(),
        base_url,
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

/// Serves `gw` on a fresh port (thread-per-core with `workers` > 0); returns the address and
/// the shutdown trigger.
async fn serve(
    gw: Gateway,
    workers: usize,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async {
        let _ = rx.await;
    };
    let server = tokio::spawn(async move {
        if workers == 0 {
            gw.serve(l, stop).await.unwrap();
        } else {
            gw.serve_workers(l, workers, stop).await.unwrap();
        }
    });
    (addr, tx, server)
}

/// The scripted upstream of `common`, behind rustls with a fresh self-signed certificate for
/// `localhost`. Returns the upstream state, its port and the certificate (DER).
async fn start_tls_upstream() -> (Arc<common::Upstream>, u16, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_der = ck.cert.der().to_vec();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone().into()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let up = Arc::new(common::Upstream::default());
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let up2 = up.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let (acceptor, up) = (acceptor.clone(), up2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = service_fn(move |req| {
                    let up = up.clone();
                    async move { Ok::<_, Infallible>(upstream_handle(up, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (up, port, cert_der)
}

#[tokio::test]
async fn https_provider_is_reached_over_rustls_and_its_certificate_is_verified() {
    let (up, port, cert) = start_tls_upstream().await;
    let url = format!("https://localhost:{port}");
    // Trusts the test certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.into()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut map = HashMap::new();
    map.insert(
        Box::<str>::from("tls"),
        Arc::new(Upstream::with_tls_config(&spec("tls", url.clone()), tls).unwrap()),
    );
    // The default verifier (webpki roots) must refuse the self-signed certificate.
    map.insert(
        Box::<str>::from("untrusted"),
        Arc::new(Upstream::new(&spec("untrusted", url)).unwrap()),
    );
    let router = StaticRouter::new()
        .provider("tls", &["echo", "sse"])
        .provider("untrusted", &["echo"]);
    let sink = Arc::new(MemorySink::new());
    let gw = Gateway::with_upstreams(
        GatewayConfig::default(),
        Arc::new(router),
        map,
        sink.clone() as Arc<dyn TelemetrySink>,
    );
    let (addr, _stop, _server) = serve(gw, 0).await;

    let (s, h, b) = post(
        addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"tls/echo","messages":[]}"#,
    )
    .await;
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(&b[..], JSON_BODY.as_bytes());
    assert_eq!(h["x-boo-provider"], "tls");
    let seen = up.seen.lock().unwrap()[0].clone();
    assert_eq!(&seen.body[..], br#"{"model":"echo","messages":[]}"#);
    // Streaming over TLS arrives byte for byte.
    let (s, _, b) = post(
        addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"tls/sse","stream":true}"#,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(&b[..], SSE_CHUNKS.concat().as_bytes());

    let (s, _, b) = post(
        addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"untrusted/echo"}"#,
    )
    .await;
    assert_eq!(s, 502);
    assert_eq!(err_code(&b), "upstream_unreachable");
    let msg = String::from_utf8_lossy(&b).to_lowercase();
    assert!(msg.contains("certificate"), "{msg}");
    assert_eq!(up.requests.load(Ordering::SeqCst), 2, "refused before HTTP");
}

/// What a dripping stream (a chunk every 10 ms, forever) through the gateway gave the client.
struct Drip {
    up: Arc<common::Upstream>,
    sink: Arc<MemorySink>,
    status: u16,
    text: String,
    took: Duration,
    _server: (
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
}

/// Streams `drip/forever` through a gateway whose provider has these idle / total timeouts.
async fn drip(idle: Option<Duration>, total: Duration) -> Drip {
    let (up, up_addr) = start_upstream().await;
    let mut s = spec("drip", format!("http://{up_addr}"));
    if let Some(idle) = idle {
        s.timeouts.idle = idle;
    }
    s.timeouts.total = Some(total);
    let router = StaticRouter::new().provider("drip", &["forever"]);
    let sink = Arc::new(MemorySink::new());
    let gw = Gateway::new(
        GatewayConfig::default(),
        Arc::new(router),
        &[s],
        sink.clone() as Arc<dyn TelemetrySink>,
    )
    .unwrap();
    let (addr, stop, server) = serve(gw, 0).await;
    let t0 = Instant::now();
    let (status, _, b) = post(
        addr,
        "/v1/chat/completions",
        &[],
        r#"{"model":"drip/forever","stream":true}"#,
    )
    .await;
    Drip {
        up,
        sink,
        status,
        text: String::from_utf8_lossy(&b).into_owned(),
        took: t0.elapsed(),
        _server: (stop, server),
    }
}

#[tokio::test]
async fn total_timeout_cuts_a_slow_dripping_stream() {
    // Chunks arrive every 10 ms, so the idle timeout never fires; only `total` can end it.
    let d = drip(None, Duration::from_millis(400)).await;
    let text = &d.text;
    assert_eq!(d.status, 200);
    assert!(text.starts_with(SSE_CHUNKS[2]), "{text}");
    assert!(
        text.contains("\"code\":\"upstream_total_timeout\""),
        "{text}"
    );
    assert!(text.contains("total timeout"), "{text}");
    assert!(
        text.matches(SSE_CHUNKS[2]).count() >= 5,
        "several chunks passed"
    );
    assert!(
        d.took >= Duration::from_millis(400) && d.took < Duration::from_secs(10),
        "{:?}",
        d.took
    );
    // The upstream exchange is dropped, and the record names the timeout.
    assert!(eventually(|| d.up.forever_cancelled.load(Ordering::SeqCst)).await);
    assert!(eventually(|| !d.sink.records().is_empty()).await);
    assert_eq!(
        d.sink.records()[0].error_class.as_deref(),
        Some("upstream_total_timeout")
    );
}

#[tokio::test]
async fn idle_timeout_counts_from_the_last_chunk_not_the_first() {
    // Chunks every 10 ms; the idle timer (60 ms) is re-armed from the last chunk, so only the
    // total deadline (400 ms, several idle periods later) may end the stream.
    let d = drip(Some(Duration::from_millis(60)), Duration::from_millis(400)).await;
    let text = &d.text;
    assert_eq!(d.status, 200);
    assert!(d.took >= Duration::from_millis(400), "{:?}", d.took);
    assert!(
        text.contains("\"code\":\"upstream_total_timeout\""),
        "{text}"
    );
    assert!(!text.contains("upstream_idle_timeout"), "{text}");
    assert!(eventually(|| d.up.forever_cancelled.load(Ordering::SeqCst)).await);
}

/// `requests_processing` from a llama-server-mode sim host's `/metrics`.
async fn sim_processing(host: &SimHost) -> f64 {
    let r = boo_fleet_sim::client::get(&host.base_url(), "/metrics")
        .await
        .unwrap();
    r.text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.contains("requests_processing"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .expect("requests_processing in /metrics")
}

#[tokio::test]
async fn client_disconnect_mid_stream_closes_the_request_on_the_sim_host() {
    // A slow model: 20 tok/s with a 10,000-token reply would stream for minutes.
    let mut m = ModelSpec::new("slow");
    m.load_ms = 1;
    m.prompt_tps = 0.0;
    m.gen_tps = 20.0;
    m.reply_tokens = Some(10_000);
    let host = start_host(HostSpec::llama_server("sim", m)).await.unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if boo_fleet_sim::client::get(&host.base_url(), "/health")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ready, "sim host loaded its model");
    let router = StaticRouter::new().provider("sim", &["slow"]);
    let sink = Arc::new(MemorySink::new());
    let gw = Gateway::new(
        GatewayConfig::default(),
        Arc::new(router),
        &[spec("sim", host.base_url())],
        sink.clone() as Arc<dyn TelemetrySink>,
    )
    .unwrap();
    let (addr, _stop, _server) = serve(gw, 2).await;

    let mut c = connect(addr).await;
    let req = hyper::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"sim/slow","stream":true,"max_tokens":10000,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(sim_processing(&host).await, 1.0, "the sim is generating");
    drop(body);
    drop(c);
    let mut closed = false;
    for _ in 0..250 {
        if sim_processing(&host).await == 0.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        closed,
        "the sim saw the request end when the client hung up"
    );
    assert!(eventually(|| !sink.records().is_empty()).await);
    assert_eq!(
        sink.records()[0].error_class.as_deref(),
        Some("client_disconnect")
    );
}

#[tokio::test]
async fn worker_threads_serve_many_connections_and_drain_on_shutdown() {
    let (up, up_addr) = start_upstream().await;
    let router = StaticRouter::new().provider("a", &["echo", "sse"]);
    let sink = Arc::new(MemorySink::new());
    let gw = Gateway::new(
        GatewayConfig::default(),
        Arc::new(router),
        &[spec("a", format!("http://{up_addr}"))],
        sink.clone() as Arc<dyn TelemetrySink>,
    )
    .unwrap();
    let (addr, stop, server) = serve(gw, 2).await;

    // Eight keep-alive connections, five requests each: every answer byte for byte.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        tasks.push(tokio::spawn(async move {
            let mut c = connect(addr).await;
            for _ in 0..5 {
                let req = hyper::Request::post("/v1/chat/completions")
                    .body(Full::new(Bytes::from_static(br#"{"model":"a/echo"}"#)))
                    .unwrap();
                let resp = c.send_request(req).await.unwrap();
                assert_eq!(resp.status(), 200);
                let b = resp.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(&b[..], JSON_BODY.as_bytes());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(up.requests.load(Ordering::SeqCst), 40);
    assert!(eventually(|| sink.records().len() == 40).await);
    // Usage read from each body's tail is in every record.
    for r in sink.records() {
        assert_eq!(
            (
                r.status,
                r.prompt_tokens,
                r.completion_tokens,
                r.cached_tokens
            ),
            (200, Some(9), Some(2), Some(4)),
            "{r:?}"
        );
        assert_eq!(r.bytes_out, JSON_BODY.len() as i64);
    }

    // A stream in flight when shutdown starts still completes on its worker.
    let mut c = connect(addr).await;
    let req = hyper::Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"a/sse","stream":true}"#,
        )))
        .unwrap();
    let resp = c.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    stop.send(()).unwrap();
    let mut all = first.to_vec();
    while let Some(f) = body.frame().await {
        if let Ok(d) = f.unwrap().into_data() {
            all.extend_from_slice(&d);
        }
    }
    assert_eq!(all, SSE_CHUNKS.concat().as_bytes());
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("server stopped after draining")
        .unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
        "listener closed"
    );
    // The drained stream's record is not lost with the worker.
    let recs = sink.records();
    assert_eq!(recs.len(), 41);
    let last = recs.iter().find(|r| r.stream).expect("the stream's record");
    assert_eq!(last.completion_tokens, Some(1));
    assert_eq!(last.error_class, None);
}
