//! A per-worker pool of plain-HTTP/1.1 upstream connections (the fleet's LAN hosts).
//!
//! hyper-util's general client (kept for https providers) hashes a pool key, takes a shared
//! lock, clones request extensions and re-parses the URI on every request: about a sixth of
//! the gateway's own instructions per proxied request. On `http://` endpoints the gateway uses
//! this pool instead: one list of connections per worker thread (see `upstream::set_worker`),
//! a connection's task runs on the worker that opened it, and a request takes the first idle
//! connection of its own worker.
//!
//! Behaviour matches the general client where it matters: `Host` is set from the endpoint,
//! the request goes out in origin form, a connection the upstream closed while idle is
//! noticed and replaced, a request that never left because its connection had just closed is
//! retried once on a fresh connection, idle connections are dropped after [`IDLE_TIMEOUT`],
//! and the connect timeout and TCP options (`TCP_NODELAY`, keep-alive probes) are the same.

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Idle connections older than this are closed (as hyper-util's pool does).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Most connections kept per worker and endpoint; more are closed after their response.
const MAX_IDLE: usize = 1024;

/// Why a pooled request failed.
#[derive(Debug)]
pub(crate) struct PoolError {
    connect: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl PoolError {
    fn connect(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            connect: true,
            source: e.into(),
        }
    }

    /// Whether no connection could be opened (refused, unreachable, connect timeout).
    pub(crate) fn is_connect(&self) -> bool {
        self.connect
    }
}

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.connect {
            f.write_str("client error (Connect)")
        } else {
            f.write_str("client error (SendRequest)")
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

struct Idle {
    tx: http1::SendRequest<Full<Bytes>>,
    since: Instant,
}

/// Connections to one `http://host:port`, one list per worker thread.
pub(crate) struct H1Pool {
    authority: http::uri::Authority,
    host: HeaderValue,
    connect_timeout: Duration,
    keepalive: Option<Duration>,
    slots: Box<[Mutex<Vec<Idle>>]>,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl H1Pool {
    /// A pool for `authority` (`host[:port]`, port 80 when absent) with `slots` worker lists.
    pub(crate) fn new(
        authority: http::uri::Authority,
        connect_timeout: Duration,
        keepalive: Option<Duration>,
        slots: usize,
    ) -> Option<Self> {
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        Some(Self {
            authority,
            host,
            connect_timeout,
            keepalive,
            slots: (0..slots.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    /// The authority this pool connects to.
    pub(crate) fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// Sends `req` (absolute URI on this pool's authority) from worker list `slot`.
    pub(crate) async fn send(
        &self,
        slot: usize,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, PoolError> {
        let origin = req
            .uri()
            .path_and_query()
            .cloned()
            .map(Uri::from)
            .unwrap_or_else(|| Uri::from_static("/"));
        *req.uri_mut() = origin;
        if !req.headers().contains_key(HOST) {
            req.headers_mut().insert(HOST, self.host.clone());
        }
        let slot = &self.slots[slot.min(self.slots.len() - 1)];
        let mut req = req;
        // A pooled connection may have been closed by the upstream a moment ago; a request that
        // never left is retried once on a fresh connection.
        for fresh in [false, true] {
            let mut tx = match (!fresh).then(|| self.take(slot)).flatten() {
                Some(tx) => tx,
                None => self.connect().await?,
            };
            let sent = tx.try_send_request(req);
            self.put(slot, tx);
            match sent.await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(back) if !fresh => req = back,
                    _ => {
                        return Err(PoolError {
                            connect: false,
                            source: Box::new(e.into_error()),
                        });
                    }
                },
            }
        }
        // Both rounds return above; this only satisfies the type checker.
        Err(PoolError {
            connect: false,
            source: "request was not sent".into(),
        })
    }

    /// The first idle connection ready for a request, dropping closed and expired ones.
    fn take(&self, slot: &Mutex<Vec<Idle>>) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut list = slot.lock().unwrap_or_else(|e| e.into_inner());
        let mut i = 0;
        while i < list.len() {
            let c = &list[i];
            if c.tx.is_closed() || c.since.elapsed() > IDLE_TIMEOUT {
                list.swap_remove(i);
                continue;
            }
            if c.tx.is_ready() {
                return Some(list.swap_remove(i).tx);
            }
            i += 1;
        }
        None
    }

    fn put(&self, slot: &Mutex<Vec<Idle>>, tx: http1::SendRequest<Full<Bytes>>) {
        if tx.is_closed() {
            return;
        }
        let mut list = slot.lock().unwrap_or_else(|e| e.into_inner());
        if list.len() < MAX_IDLE {
            list.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, PoolError> {
        let host = self.authority.host();
        let port = self.authority.port_u16().unwrap_or(80);
        // `[::1]` style hosts arrive bracketed; the resolver wants them bare.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| {
            PoolError::connect(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect timed out after {:?}", self.connect_timeout),
            ))
        })?
        .map_err(PoolError::connect)?;
        let _ = stream.set_nodelay(true);
        if let Some(k) = self.keepalive {
            let ka = socket2::TcpKeepalive::new().with_time(k);
            let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&ka);
        }
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(PoolError::connect)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An upstream that counts accepted connections and answers `ok <n>`; with `close_after`
    /// it closes each connection after that many requests (no `Connection: close` notice).
    async fn upstream(close_after: Option<usize>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut s = s;
                    let mut served = 0;
                    let mut buf = vec![0u8; 4096];
                    loop {
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => got.extend_from_slice(&buf[..k]),
                            }
                        }
                        let head = String::from_utf8_lossy(&got).to_lowercase();
                        assert!(head.starts_with("post /v1/x http/1.1\r\n"), "{head}");
                        assert!(head.contains("\r\nhost: 127.0.0.1:"), "{head}");
                        let body = format!("ok {n}");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        served += 1;
                        if close_after == Some(served) {
                            return;
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    /// A pool for `addr` with `slots` worker lists and a 2 s connect timeout.
    fn pool_for(addr: std::net::SocketAddr, slots: usize) -> H1Pool {
        H1Pool::new(
            addr.to_string().parse().unwrap(),
            Duration::from_secs(2),
            None,
            slots,
        )
        .unwrap()
    }

    fn req(addr: std::net::SocketAddr) -> Request<Full<Bytes>> {
        Request::post(format!("http://{addr}/v1/x"))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    }

    async fn body(r: Response<Incoming>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (addr, conns) = upstream(None).await;
        let pool = pool_for(addr, 2);
        for _ in 0..5 {
            let r = pool.send(0, req(addr)).await.unwrap();
            assert_eq!(body(r).await, "ok 1");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        // Another worker list opens its own connection.
        let r = pool.send(1, req(addr)).await.unwrap();
        assert_eq!(body(r).await, "ok 2");
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_own_connections() {
        let (addr, conns) = upstream(None).await;
        let pool = pool_for(addr, 1);
        let (a, b) = tokio::join!(pool.send(0, req(addr)), pool.send(0, req(addr)));
        let (a, b) = (body(a.unwrap()).await, body(b.unwrap()).await);
        assert_ne!(a, b);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let (addr, conns) = upstream(Some(1)).await;
        let pool = pool_for(addr, 1);
        for i in 1..=3 {
            let r = pool.send(0, req(addr)).await.unwrap();
            assert_eq!(body(r).await, format!("ok {i}"));
            // Let the connection task see the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn refused_connections_are_connect_errors() {
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let pool = pool_for(dead, 1);
        let e = pool.send(0, req(dead)).await.unwrap_err();
        assert!(e.is_connect());
        let chain = std::error::Error::source(&e).unwrap().to_string();
        assert!(chain.to_lowercase().contains("refused"), "{chain}");
    }
}
