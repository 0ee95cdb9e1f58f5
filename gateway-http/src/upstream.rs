//! Upstream side: one pooled keep-alive client per provider, its timeouts, static headers and
//! concurrency limiter.

use crate::error::GatewayError;
use crate::wire::{WireBody, WireError, WirePool};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// TCP keep-alive probe interval on upstream connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Most worker threads that get their own upstream pools; more share the last one.
pub(crate) const MAX_WORKERS: usize = 64;

thread_local! {
    /// Which gateway worker thread this is (1-based; 0 = not a worker thread).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as gateway worker `i` (1-based): its upstream requests use the
/// worker's own connection pools, so a pooled connection's task runs on the thread that uses it.
pub(crate) fn set_worker(i: usize) {
    WORKER.with(|w| w.set(i.min(MAX_WORKERS)));
}

/// Per-provider timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// TCP (and TLS) connect timeout.
    pub connect: Duration,
    /// Time from sending the request to the response headers.
    pub first_byte: Duration,
    /// Longest gap between two body chunks; the stream ends when exceeded.
    pub idle: Duration,
    /// Optional cap on the whole exchange.
    pub total: Option<Duration>,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(600),
            idle: Duration::from_secs(300),
            total: None,
        }
    }
}

/// Everything the gateway needs to forward to one provider (built from the registry, or by
/// hand when embedding the gateway).
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    /// Provider id (`x-boo-provider`).
    pub provider: String,
    /// Base URL without trailing `/`.
    pub base_url: String,
    /// Whether `base_url` already ends with the API version (`openai` kind): `/v1/x` is then
    /// appended as `/x`.
    pub base_includes_version: bool,
    /// Optional sidecar base URL for this provider.
    pub sidecar_url: Option<String>,
    /// Extra headers sent upstream (e.g. `authorization: Bearer <api_key>`); values are treated as secrets.
    pub headers: Vec<(String, String)>,
    /// Whether the provider has its own API key (the client's `Authorization` is then never forwarded).
    pub has_api_key: bool,
    /// Timeouts.
    pub timeouts: UpstreamTimeouts,
    /// Max concurrent requests (None = unlimited).
    pub max_concurrency: Option<u32>,
}

/// A parsed base URL: the string every request path is appended to.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    prefix: String,
    strip_v1: bool,
    /// `Some` for `http://` endpoints (served by the per-worker [`WirePool`]).
    plain_authority: Option<http::uri::Authority>,
    /// Ready-made URIs for the inference paths (no query): building and parsing one per
    /// request was a measurable share of the proxy's own work.
    cached: Vec<(&'static str, http::Uri)>,
}

/// The request paths whose upstream URIs are prepared once per endpoint.
const CACHED_PATHS: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"];

impl Endpoint {
    fn parse(provider: &str, url: &str, strip_v1: bool) -> Result<Self, GatewayError> {
        let url = url.trim_end_matches('/');
        let uri: http::Uri = url.parse().map_err(|e| {
            GatewayError::Config(format!(
                "provider {provider:?}: invalid base_url {url:?}: {e}"
            ))
        })?;
        match uri.scheme_str() {
            Some("http") | Some("https") => {}
            _ => {
                return Err(GatewayError::Config(format!(
                    "provider {provider:?}: base_url {url:?} must start with http:// or https://"
                )));
            }
        }
        if uri.authority().is_none() {
            return Err(GatewayError::Config(format!(
                "provider {provider:?}: base_url {url:?} has no host"
            )));
        }
        let plain_authority = (uri.scheme_str() == Some("http"))
            .then(|| uri.authority().cloned())
            .flatten();
        let mut me = Self {
            strip_v1,
            plain_authority,
            prefix: url.to_string(),
            cached: Vec::with_capacity(CACHED_PATHS.len()),
        };
        for p in CACHED_PATHS {
            let uri = me.build(p, None).map_err(|e| {
                GatewayError::Config(format!(
                    "provider {provider:?}: base_url {url:?} gives an invalid URI for {p}: {e}"
                ))
            })?;
            me.cached.push((p, uri));
        }
        Ok(me)
    }

    /// Full upstream URI for a request path like `/v1/chat/completions` (plus optional query).
    pub(crate) fn uri(&self, path: &str, query: Option<&str>) -> Result<http::Uri, http::Error> {
        if query.is_none()
            && let Some((_, u)) = self.cached.iter().find(|(p, _)| *p == path)
        {
            return Ok(u.clone());
        }
        self.build(path, query)
    }

    fn build(&self, path: &str, query: Option<&str>) -> Result<http::Uri, http::Error> {
        let path = if self.strip_v1 {
            path.strip_prefix("/v1").unwrap_or(path)
        } else {
            path
        };
        let mut s = String::with_capacity(
            self.prefix.len() + path.len() + query.map_or(0, |q| q.len() + 1),
        );
        s.push_str(&self.prefix);
        s.push_str(path);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        Ok(http::Uri::try_from(s)?)
    }
}

/// Concurrency limiter with a bounded wait queue.
#[derive(Debug)]
struct Limiter {
    sem: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    max_wait: Duration,
}

/// The HTTP client type used for every upstream.
pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// One pooled client per gateway worker thread (built on first use), all sharing one connector
/// (and so one TLS configuration). hyper-util's client runs each pooled connection as a task on
/// the runtime that opened it; keeping a pool per worker thread keeps the downstream request and
/// the upstream connection on the same thread, so handing bytes between them is a local wake-up
/// instead of a cross-thread one.
pub(crate) struct WorkerClients {
    connector: HttpsConnector<HttpConnector>,
    slots: Box<[OnceLock<HttpClient>]>,
    /// Per-worker HTTP/1.1 pools for the provider's `http://` endpoints (main, sidecar);
    /// https goes through the hyper-util client above.
    plain: Vec<Arc<WirePool>>,
}

/// A response head from upstream (end-to-end headers only: the hop-by-hop ones stay on the
/// upstream hop), or why there is none.
pub(crate) type UpstreamFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<UpBody>, UpstreamError>> + Send>,
>;

/// An upstream response body: read inline from a plain-http socket, or from hyper's client.
#[derive(Debug)]
pub(crate) enum UpBody {
    /// From a [`WirePool`] connection (read by whoever polls the body).
    Wire(WireBody),
    /// From the hyper-util client (https providers).
    Hyper(Incoming),
}

impl UpBody {
    /// Whether one poll hands over everything that has arrived so far. hyper's client runs a
    /// connection as its own task and passes one chunk per hand-over, so a reader that wants
    /// the whole burst must give that task a turn first; the inline client needs no such wait.
    pub(crate) fn hands_over_all(&self) -> bool {
        matches!(self, UpBody::Wire(_))
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = crate::proxy::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            UpBody::Wire(b) => std::pin::Pin::new(b).poll_frame(cx),
            UpBody::Hyper(b) => std::pin::Pin::new(b)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as crate::proxy::BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Wire(b) => b.is_end_stream(),
            UpBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Wire(b) => b.size_hint(),
            UpBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// Why an upstream request got no response head.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// From a plain-HTTP pool.
    Pool(WireError),
    /// From the general (https) client.
    Client(hyper_util::client::legacy::Error),
}

impl UpstreamError {
    /// Whether no connection could be opened (refused, unreachable, connect timeout).
    pub(crate) fn is_connect(&self) -> bool {
        match self {
            Self::Pool(e) => e.is_connect(),
            Self::Client(e) => e.is_connect(),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pool(e) => e.fmt(f),
            Self::Client(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Pool(e) => e.source(),
            Self::Client(e) => e.source(),
        }
    }
}

impl std::fmt::Debug for WorkerClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let built = self.slots.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("WorkerClients")
            .field("pools", &built)
            .finish_non_exhaustive()
    }
}

impl WorkerClients {
    fn new(
        connector: HttpsConnector<HttpConnector>,
        endpoints: &[&Endpoint],
        connect_timeout: Duration,
    ) -> Self {
        let mut plain: Vec<Arc<WirePool>> = Vec::new();
        for a in endpoints.iter().filter_map(|e| e.plain_authority.as_ref()) {
            if plain.iter().any(|p| p.authority() == a) {
                continue;
            }
            if let Some(p) = WirePool::new(
                a.clone(),
                connect_timeout,
                Some(TCP_KEEPALIVE),
                MAX_WORKERS + 1,
            ) {
                plain.push(Arc::new(p));
            }
        }
        Self {
            connector,
            slots: (0..=MAX_WORKERS).map(|_| OnceLock::new()).collect(),
            plain,
        }
    }

    /// The calling thread's client.
    pub(crate) fn get(&self) -> &HttpClient {
        let i = WORKER.with(Cell::get).min(self.slots.len() - 1);
        self.slots[i].get_or_init(|| client_with(self.connector.clone()))
    }

    /// Sends a request (absolute `uri`) over the calling thread's pool for its endpoint;
    /// `headers` visits the headers to send (`Host` and `Content-Length` are set here).
    pub(crate) fn request(
        &self,
        method: Method,
        uri: Uri,
        headers: crate::wire::Headers<'_>,
        body: Bytes,
    ) -> UpstreamFuture {
        if uri.scheme_str() == Some("http")
            && let Some(pool) = self
                .plain
                .iter()
                .find(|p| Some(p.authority()) == uri.authority())
        {
            let pool = pool.clone();
            let slot = WORKER.with(Cell::get);
            let target = uri.path_and_query().map_or("/", |p| p.as_str());
            let head = pool.encode_head(&method, target, headers, body.len());
            return Box::pin(async move {
                pool.send(slot, &method, &head, &body)
                    .await
                    .map(|r| r.map(UpBody::Wire))
                    .map_err(UpstreamError::Pool)
            });
        }
        let mut map = HeaderMap::new();
        headers(&mut |k, v| {
            map.append(k.clone(), v.clone());
        });
        map.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let mut req = http::Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = map;
        let fut = self.get().request(req);
        Box::pin(async move {
            let mut r = fut.await.map_err(UpstreamError::Client)?;
            // hyper's client leaves the hop-by-hop headers in; `wire` consumes them.
            crate::proxy::strip_hop_by_hop(r.headers_mut());
            Ok(r.map(UpBody::Hyper))
        })
    }
}

/// The rustls client configuration shared by every upstream connector (webpki roots, ring).
fn tls_config() -> Result<Arc<rustls::ClientConfig>, GatewayError> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use hyper_rustls::ConfigBuilderExt as _;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_webpki_roots().with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| GatewayError::Config(format!("TLS setup failed: {e}")))
}

/// One provider's upstream state (shared by all requests to it).
#[derive(Debug)]
pub struct Upstream {
    pub(crate) provider: Arc<str>,
    pub(crate) provider_header: HeaderValue,
    pub(crate) client: WorkerClients,
    pub(crate) main: Endpoint,
    pub(crate) sidecar: Option<Endpoint>,
    pub(crate) headers: HeaderMap,
    pub(crate) has_api_key: bool,
    pub(crate) timeouts: UpstreamTimeouts,
    limiter: Option<Limiter>,
}

/// The HTTP(S) connector: `TCP_NODELAY`, connect timeout, TCP keep-alive, rustls for https.
fn connector(connect_timeout: Duration) -> Result<HttpsConnector<HttpConnector>, GatewayError> {
    Ok(connector_with(connect_timeout, (*tls_config()?).clone()))
}

fn connector_with(
    connect_timeout: Duration,
    tls: rustls::ClientConfig,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.enforce_http(false);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}

fn client_with(connector: HttpsConnector<HttpConnector>) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(connector)
}

/// Builds a pooled HTTP(S) client (inventory polls, `/props` reads).
pub(crate) fn build_client(connect_timeout: Duration) -> Result<HttpClient, GatewayError> {
    Ok(client_with(connector(connect_timeout)?))
}

impl Upstream {
    /// Builds the upstream state from its spec (parses URLs, renders headers, creates the pool).
    /// https providers are verified against the webpki (Mozilla) roots.
    pub fn new(spec: &UpstreamSpec) -> Result<Self, GatewayError> {
        Self::build(spec, connector(spec.timeouts.connect)?)
    }

    /// Like [`Upstream::new`] with a custom rustls configuration for https providers (a private
    /// CA, client certificates).
    pub fn with_tls_config(
        spec: &UpstreamSpec,
        tls: rustls::ClientConfig,
    ) -> Result<Self, GatewayError> {
        Self::build(spec, connector_with(spec.timeouts.connect, tls))
    }

    fn build(
        spec: &UpstreamSpec,
        connector: HttpsConnector<HttpConnector>,
    ) -> Result<Self, GatewayError> {
        let main = Endpoint::parse(&spec.provider, &spec.base_url, spec.base_includes_version)?;
        let sidecar = spec
            .sidecar_url
            .as_deref()
            .map(|u| Endpoint::parse(&spec.provider, u, false))
            .transpose()?;
        let mut headers = HeaderMap::new();
        for (k, v) in &spec.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                GatewayError::Config(format!(
                    "provider {:?}: invalid header name {k:?}",
                    spec.provider
                ))
            })?;
            let mut value = HeaderValue::from_str(v).map_err(|_| {
                // Never echo the value: it is a secret.
                GatewayError::Config(format!(
                    "provider {:?}: header {k:?} has an invalid value",
                    spec.provider
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let provider_header = HeaderValue::from_str(&spec.provider).map_err(|_| {
            GatewayError::Config(format!("invalid provider id {:?}", spec.provider))
        })?;
        let limiter = spec.max_concurrency.map(|n| Limiter {
            sem: Arc::new(Semaphore::new(n.max(1) as usize)),
            waiting: AtomicUsize::new(0),
            max_waiting: (n.max(1) as usize) * 4,
            max_wait: Duration::from_secs(30),
        });
        Ok(Self {
            provider: spec.provider.as_str().into(),
            provider_header,
            client: WorkerClients::new(
                connector,
                &[Some(&main), sidecar.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>(),
                spec.timeouts.connect,
            ),
            main,
            sidecar,
            headers,
            has_api_key: spec.has_api_key,
            timeouts: spec.timeouts,
            limiter,
        })
    }

    /// Takes a concurrency slot: immediately when free, else waits in a bounded queue; a full
    /// queue or an expired wait gives [`GatewayError::Overloaded`].
    pub(crate) async fn acquire(&self) -> Result<Option<OwnedSemaphorePermit>, GatewayError> {
        let Some(l) = &self.limiter else {
            return Ok(None);
        };
        if let Ok(p) = l.sem.clone().try_acquire_owned() {
            return Ok(Some(p));
        }
        let overloaded = || GatewayError::Overloaded {
            provider: self.provider.to_string(),
            retry_after_s: 1,
        };
        if l.waiting.fetch_add(1, Ordering::AcqRel) >= l.max_waiting {
            l.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(overloaded());
        }
        let r = tokio::time::timeout(l.max_wait, l.sem.clone().acquire_owned()).await;
        l.waiting.fetch_sub(1, Ordering::AcqRel);
        match r {
            Ok(Ok(p)) => Ok(Some(p)),
            _ => Err(overloaded()),
        }
    }

    /// Sets the wait-queue bounds (tests and embedders).
    pub fn set_queue(&mut self, max_waiting: usize, max_wait: Duration) {
        if let Some(l) = &mut self.limiter {
            l.max_waiting = max_waiting;
            l.max_wait = max_wait;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_joins_paths() {
        let e = Endpoint::parse("p", "http://127.0.0.1:8080/", false).unwrap();
        assert_eq!(
            e.uri("/v1/chat/completions", None).unwrap().to_string(),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        let e = Endpoint::parse("p", "https://api.example.com/v1", true).unwrap();
        assert_eq!(
            e.uri("/v1/embeddings", Some("a=1")).unwrap().to_string(),
            "https://api.example.com/v1/embeddings?a=1"
        );
        // The prepared URIs (no query) match what would be built.
        for p in CACHED_PATHS {
            assert_eq!(e.uri(p, None).unwrap(), e.build(p, None).unwrap());
        }
        assert_eq!(
            e.uri("/v1/chat/completions", None).unwrap().to_string(),
            "https://api.example.com/v1/chat/completions"
        );
        assert!(Endpoint::parse("p", "ftp://x", false).is_err());
        assert!(Endpoint::parse("p", "not a url", false).is_err());
    }

    #[tokio::test]
    async fn limiter_queues_then_rejects() {
        let mut u = Upstream::new(&UpstreamSpec {
            provider: "p".into(),
            base_url: "http://127.0.0.1:1".into(),
            base_includes_version: false,
            sidecar_url: None,
            headers: vec![("authorization".into(), "Bearer sk-secret".into())],
            has_api_key: true,
            timeouts: UpstreamTimeouts::default(),
            max_concurrency: Some(1),
        })
        .unwrap();
        u.set_queue(0, Duration::from_millis(10));
        let held = u.acquire().await.unwrap();
        assert!(held.is_some());
        let err = u.acquire().await.unwrap_err();
        assert!(matches!(err, GatewayError::Overloaded { .. }));
        drop(held);
        assert!(u.acquire().await.unwrap().is_some());
        assert!(!format!("{:?}", u.headers).contains("sk-secret"));
    }
}
