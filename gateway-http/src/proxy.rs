//! The request handler: routing table, the inference proxy hot path, and the response body that
//! streams upstream bytes through unchanged while scanning them.

use crate::error::GatewayError;
use crate::metrics::Series;
use crate::router::Routed;
use crate::scan::{SseScanner, TailScanner, UsageInfo};
use crate::skim::{SkimError, skim, splice_model};
use crate::telemetry::RequestRecord;
use crate::upstream::{UpBody, Upstream};
use crate::{Inner, RespBody};
use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;

#[path = "auto/api.rs"]
mod api;
#[path = "auto/dispatch.rs"]
mod dispatch;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_BOO_SOURCE: HeaderName = HeaderName::from_static("x-boo-source");
static X_BOO_PROVIDER: HeaderName = HeaderName::from_static("x-boo-provider");
static X_BOO_MODEL: HeaderName = HeaderName::from_static("x-boo-model");
static X_BOO_OVERHEAD: HeaderName = HeaderName::from_static("x-boo-overhead-ms");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// What a path maps to.
enum Route {
    Inference(&'static str),
    Models,
    ApiModels,
    Health,
    Metrics,
    Ping,
    Routing,
    Unknown,
}

fn route(path: &str) -> Route {
    match path {
        "/v1/chat/completions" | "/v/chat/completions" => Route::Inference("/v1/chat/completions"),
        "/v1/completions" | "/v/completions" => Route::Inference("/v1/completions"),
        "/v1/embeddings" | "/v/embeddings" => Route::Inference("/v1/embeddings"),
        "/v1/models" | "/v/models" | "/models" => Route::Models,
        "/api/models" => Route::ApiModels,
        "/api/health" => Route::Health,
        "/metrics" => Route::Metrics,
        "/health" => Route::Ping,
        p if p.starts_with("/api/routing/") => Route::Routing,
        _ => Route::Unknown,
    }
}

fn full(b: impl Into<Bytes>) -> RespBody {
    RespBody::full(b.into())
}

fn json_response(v: &serde_json::Value) -> Response<RespBody> {
    let mut r = Response::new(full(serde_json::to_vec(v).unwrap_or_default()));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `X-Boo-Source`: 1–64 RFC 9110 token characters.
pub(crate) fn valid_source(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 64
        && v.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(c))
}

fn is_hop_by_hop(k: &HeaderName) -> bool {
    crate::wire::is_hop_by_hop(k.as_str())
}

/// Removes the hop-by-hop headers from `h`, those a `Connection` header names included (a
/// no-op without any).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    if !h.keys().any(is_hop_by_hop) {
        return;
    }
    let has_conn = h.contains_key(header::CONNECTION);
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| is_hop_by_hop(k) || (has_conn && connection_listed(h, k)))
        .cloned()
        .collect();
    for k in names {
        h.remove(k);
    }
}

/// The upstream's response header map (its hop-by-hop headers already removed by the
/// upstream client) turned into the client's without copying it: `x-boo-provider` and
/// `x-boo-model` added, room for one more.
fn client_headers(mut h: HeaderMap, up: &Upstream, model: &str) -> HeaderMap {
    h.reserve(3);
    h.insert(X_BOO_PROVIDER.clone(), up.provider_header.clone());
    if let Ok(v) = HeaderValue::from_str(model) {
        h.insert(X_BOO_MODEL.clone(), v);
    }
    h
}

/// Header names listed in a `Connection` header (also hop-by-hop).
fn connection_listed(h: &HeaderMap, k: &HeaderName) -> bool {
    h.get_all(header::CONNECTION)
        .iter()
        .any(|v| crate::wire::has_token(v.as_bytes(), k.as_str().as_bytes()))
}

impl Inner {
    /// Entry point for every request.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<RespBody> {
        let t0 = Instant::now();
        let rid = self.request_id(req.headers());
        let mut resp = match route(req.uri().path()) {
            Route::Inference(up_path) if req.method() == Method::POST => {
                self.proxy(req, up_path, peer, t0, &rid).await
            }
            Route::Models if req.method() == Method::GET => {
                if !self.authorized(req.headers()) {
                    GatewayError::Unauthorized.to_response()
                } else {
                    self.list_models()
                }
            }
            Route::ApiModels if req.method() == Method::GET => {
                json_response(&self.router.catalog())
            }
            Route::Health if req.method() == Method::GET => json_response(&serde_json::json!({
                "status": "ok",
                "providers": self.router.health(),
            })),
            Route::Metrics if req.method() == Method::GET => {
                let mut text = self.metrics.render();
                if let Some(api) = &self.store_api {
                    text.push_str(&api.metrics());
                }
                let mut r = Response::new(full(text));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                r
            }
            Route::Ping if req.method() == Method::GET => Response::new(full("OK")),
            Route::Routing => self.routing_api(req).await,
            Route::Unknown
                if crate::StoreApi::serves(req.uri().path()) && self.store_api.is_some() =>
            {
                match &self.store_api {
                    Some(api) => api.handle(req).await,
                    None => Response::new(full("")),
                }
            }
            Route::Unknown
                if crate::bench_api::BenchApi::serves(req.uri().path()) && self.bench.is_some() =>
            {
                match &self.bench {
                    Some(b) => b.handle(req).await,
                    None => Response::new(full("")),
                }
            }
            Route::Unknown
                if crate::control::ControlApi::serves(req.uri().path())
                    && self.control.is_some() =>
            {
                let path = req.uri().path().to_string();
                let handled = match &self.control {
                    Some(c) => c.handle(req).await,
                    None => None,
                };
                match handled {
                    Some(r) => r.map(RespBody::control),
                    None => GatewayError::NotFound { path }.to_response(),
                }
            }
            Route::Unknown => GatewayError::NotFound {
                path: req.uri().path().to_string(),
            }
            .to_response(),
            _ => GatewayError::MethodNotAllowed {
                method: req.method().to_string(),
                path: req.uri().path().to_string(),
            }
            .to_response(),
        };
        resp.headers_mut().insert(X_REQUEST_ID.clone(), rid);
        resp
    }

    fn request_id(&self, h: &HeaderMap) -> HeaderValue {
        if let Some(v) = h.get(&X_REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
                return v.clone();
            }
        }
        let n = self.id_counter.fetch_add(1, Relaxed);
        let mut s = Vec::with_capacity(self.id_prefix.len() + 16);
        s.extend_from_slice(self.id_prefix.as_bytes());
        push_hex(&mut s, n, 10);
        HeaderValue::from_maybe_shared(Bytes::from(s))
            .unwrap_or_else(|_| HeaderValue::from_static("gw"))
    }

    fn authorized(&self, h: &HeaderMap) -> bool {
        if self.api_keys.is_empty() {
            return true;
        }
        let Some(tok) = h
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        // Compare against every key without short-circuiting; each compare is constant time.
        let mut ok = subtle::Choice::from(0u8);
        for k in &self.api_keys {
            ok |= subtle::ConstantTimeEq::ct_eq(k.as_slice(), tok);
        }
        bool::from(ok)
    }

    fn list_models(&self) -> Response<RespBody> {
        let data: Vec<serde_json::Value> = self
            .router
            .list_models()
            .into_iter()
            .map(|m| serde_json::json!({"id": m.id, "object": "model", "created": 0, "owned_by": m.owned_by}))
            .collect();
        let mut data = data;
        if let Some(auto) = &self.auto {
            let set = auto.policies();
            data.extend(set.policies().iter().map(|p| {
                serde_json::json!({"id": p.name, "object": "model", "created": 0,
                    "owned_by": "boocontrol", "description": p.description})
            }));
        }
        json_response(&serde_json::json!({"object": "list", "data": data}))
    }

    /// The inference hot path.
    async fn proxy(
        self: &Arc<Self>,
        req: Request<Incoming>,
        up_path: &'static str,
        peer: SocketAddr,
        t0: Instant,
        rid: &HeaderValue,
    ) -> Response<RespBody> {
        let mut ctx = Ctx {
            inner: self.clone(),
            request_id: String::from_utf8_lossy(rid.as_bytes()).into_owned(),
            started: chrono::Utc::now(),
            t0,
            path: up_path,
            provider: None,
            model: String::new(),
            wire_model: None,
            source: None,
            stream: false,
            bytes_in: 0,
            bytes_out: 0,
            status: 0,
            error_class: None,
            ttft: None,
            upstream_latency: None,
            overhead: None,
            usage: UsageInfo::default(),
            series: None,
            completed: false,
            route: None,
            tail: None,
            metered: false,
        };
        match self.proxy_inner(req, up_path, peer, rid, &mut ctx).await {
            Ok(resp) => resp,
            Err(e) => {
                ctx.status = e.status().as_u16();
                ctx.error_class = Some(e.code());
                ctx.completed = true;
                e.to_response()
            }
        }
    }

    async fn proxy_inner(
        self: &Arc<Self>,
        req: Request<Incoming>,
        up_path: &'static str,
        peer: SocketAddr,
        rid: &HeaderValue,
        ctx: &mut Ctx,
    ) -> Result<Response<RespBody>, GatewayError> {
        if self.shutting_down.load(Relaxed) {
            return Err(GatewayError::ShuttingDown);
        }
        if !self.authorized(req.headers()) {
            return Err(GatewayError::Unauthorized);
        }
        if let Some(src) = req.headers().get(&X_BOO_SOURCE) {
            if !valid_source(src.as_bytes()) {
                return Err(GatewayError::BadSource);
            }
            ctx.source = Some(String::from_utf8_lossy(src.as_bytes()).into_owned());
        }
        let limit = self.cfg.max_body_bytes;
        if let Some(len) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            && len > limit
        {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, limit as usize).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    return Err(GatewayError::BodyTooLarge { limit });
                }
                return Err(GatewayError::BodyRead(e.to_string()));
            }
        };
        ctx.bytes_in = body.len() as i64;

        let skimmed = skim(&body).map_err(|e| match e {
            SkimError::Malformed { .. } => GatewayError::InvalidJson(e.to_string()),
            SkimError::ModelNotString | SkimError::DuplicateModel => GatewayError::InvalidModel {
                model: String::new(),
                reason: e.to_string(),
            },
        })?;
        let Some(model) = skimmed.model.as_deref() else {
            return Err(GatewayError::MissingModel);
        };
        ctx.stream = skimmed.stream;
        ctx.model = model.to_string();
        if let Some(r) = self.gateway_route_error(model) {
            ctx.status = 503;
            ctx.error_class = Some("gateway_error");
            ctx.completed = true;
            return Ok(r);
        }
        if let Some(auto) = &self.auto
            && (model == "auto" || model.starts_with("auto:"))
        {
            let auto = auto.clone();
            let name = model.to_string();
            let span = skimmed.model_span.clone();
            return self
                .proxy_auto(&auto, &name, &parts, &body, span, up_path, peer, rid, ctx)
                .await;
        }
        let Routed {
            provider,
            model: composite,
            wire_model,
            via_sidecar,
        } = self.router.resolve(model)?;
        let up: &Arc<Upstream> =
            self.upstreams
                .get(&*provider)
                .ok_or_else(|| GatewayError::ProviderUnavailable {
                    provider: provider.to_string(),
                })?;
        let series = self.metrics.series(&provider, &composite);
        series.in_flight.fetch_add(1, Relaxed);
        ctx.series = Some(series);
        ctx.provider = Some(provider);
        ctx.model = composite;

        let new_body = if wire_model == model {
            body
        } else {
            Bytes::from(splice_model(&body, skimmed.model_span.clone(), &wire_model))
        };
        ctx.wire_model = Some(wire_model);
        let permit = up.acquire().await?;

        let endpoint = if via_sidecar {
            up.sidecar.as_ref().unwrap_or(&up.main)
        } else {
            &up.main
        };
        let uri = endpoint
            .uri(up_path, parts.uri.query())
            .map_err(|e| GatewayError::Config(format!("bad upstream URI: {e}")))?;
        let headers = |f: &mut dyn FnMut(&HeaderName, &HeaderValue)| {
            self.visit_forward_headers(&parts.headers, up, peer, rid, f)
        };

        let t_sent = Instant::now();
        let first_byte = up.timeouts.first_byte;
        let sent = up.client.request(Method::POST, uri, &headers, new_body);
        let resp = match tokio::time::timeout(first_byte, sent).await {
            Err(_) => {
                return Err(GatewayError::UpstreamTimeout {
                    provider: up.provider.to_string(),
                    timeout_ms: first_byte.as_millis() as u64,
                });
            }
            Ok(Err(e)) => {
                return Err(GatewayError::UpstreamUnreachable {
                    provider: up.provider.to_string(),
                    detail: error_chain(&e),
                });
            }
            Ok(Ok(r)) => r,
        };
        let t_headers = Instant::now();
        ctx.upstream_latency = Some(t_headers - t_sent);
        ctx.status = resp.status().as_u16();

        let (rparts, rbody) = resp.into_parts();
        let is_sse = rparts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| memchr::memmem::find(v.as_bytes(), b"text/event-stream").is_some());
        let mut builder = Response::builder().status(rparts.status);
        let h = builder.headers_mut().expect("fresh builder has headers");
        *h = client_headers(rparts.headers, up, &ctx.model);
        let overhead = (t_sent - ctx.t0) + t_headers.elapsed();
        ctx.overhead = Some(overhead);
        h.insert(X_BOO_OVERHEAD.clone(), millis_header(overhead));
        let stream = ProxyStream::new(rbody, &up.timeouts, is_sse, ctx, permit);
        builder
            .body(RespBody::proxy(Box::new(stream)))
            .map_err(|e| GatewayError::Config(format!("response build failed: {e}")))
    }

    /// Visits the headers sent upstream: the client's, minus hop-by-hop ones (and those its
    /// `Connection` names), `Host`, `Content-Length`, `Accept-Encoding`, its credentials when
    /// the provider has its own key or the gateway checks client keys, and those set below;
    /// then the provider's configured headers, `x-request-id` and `x-forwarded-for` (the
    /// client's chain plus its address). The upstream client adds `Host` and the length.
    pub(crate) fn visit_forward_headers(
        &self,
        src: &HeaderMap,
        up: &Upstream,
        peer: SocketAddr,
        rid: &HeaderValue,
        f: &mut dyn FnMut(&HeaderName, &HeaderValue),
    ) {
        let strip_auth = up.has_api_key
            || !self.api_keys.is_empty()
            || up.headers.contains_key(header::AUTHORIZATION);
        let has_conn = src.contains_key(header::CONNECTION);
        let provider_set = !up.headers.is_empty();
        for (k, v) in src {
            if is_hop_by_hop(k)
                || k == header::HOST
                || k == header::CONTENT_LENGTH
                || k == header::ACCEPT_ENCODING
                || k == X_FORWARDED_FOR
                || k == X_REQUEST_ID
                || (strip_auth && (k == header::AUTHORIZATION || k == X_API_KEY))
                || (has_conn && connection_listed(src, k))
                || (provider_set && up.headers.contains_key(k))
            {
                continue;
            }
            f(k, v);
        }
        for (k, v) in &up.headers {
            f(k, v);
        }
        f(&X_REQUEST_ID, rid);
        let ip = peer_ip_header(peer.ip());
        let chained = src
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|prev| {
                HeaderValue::from_str(&format!("{prev}, {}", ip.to_str().unwrap_or_default())).ok()
            });
        f(&X_FORWARDED_FOR, chained.as_ref().unwrap_or(&ip));
    }
}

/// Appends `n` as lowercase hex, zero-padded to at least `width` digits.
fn push_hex(out: &mut Vec<u8>, n: u64, width: usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    for _ in (buf.len() - i)..width {
        out.push(b'0');
    }
    out.extend_from_slice(&buf[i..]);
}

/// A duration as milliseconds with three decimals (`0.042`), for `x-boo-overhead-ms`.
fn millis_header(d: Duration) -> HeaderValue {
    let us = d.as_micros();
    let mut s = Vec::with_capacity(24);
    s.extend_from_slice((us / 1000).to_string().as_bytes());
    let frac = (us % 1000) as u32;
    s.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
    HeaderValue::from_maybe_shared(Bytes::from(s)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

thread_local! {
    /// The last peer address formatted for `X-Forwarded-For` on this thread: a keep-alive
    /// client sends many requests from one address, so the text is made once, not per request.
    static PEER_IP: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// `ip` as a header value (cached per thread for the last address seen).
fn peer_ip_header(ip: std::net::IpAddr) -> HeaderValue {
    PEER_IP.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((last, v)) = &*c
            && *last == ip
        {
            return v.clone();
        }
        let v = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *c = Some((ip, v.clone()));
        v
    })
}

/// When an idle timer armed at `from` fires: `from + idle`, or the total deadline if sooner.
fn wake_at(from: Instant, idle: Duration, deadline: Option<Instant>) -> Instant {
    let t = from + idle;
    match deadline {
        Some(d) if d < t => d,
        _ => t,
    }
}

/// Transport error summary: the error and its sources (no URLs or headers).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Per-request bookkeeping; turns into one telemetry record and metric updates when dropped.
pub(crate) struct Ctx {
    inner: Arc<Inner>,
    request_id: String,
    started: chrono::DateTime<chrono::Utc>,
    t0: Instant,
    path: &'static str,
    provider: Option<Arc<str>>,
    model: String,
    wire_model: Option<String>,
    source: Option<String>,
    stream: bool,
    bytes_in: i64,
    bytes_out: i64,
    status: u16,
    error_class: Option<&'static str>,
    ttft: Option<Duration>,
    upstream_latency: Option<Duration>,
    overhead: Option<Duration>,
    usage: UsageInfo,
    series: Option<Arc<Series>>,
    completed: bool,
    /// Set for `auto:*` requests: the decision and failover state.
    route: Option<Box<crate::auto::RouteTrack>>,
    /// A non-streaming body's tail, read for `usage` when the record is made.
    tail: Option<TailScanner>,
    /// Metrics are updated (the record part may still be pending, see [`AfterWrite`]).
    metered: bool,
}

impl Ctx {
    /// An inert copy left behind when the real context moves into the response body.
    fn detached(&self) -> Ctx {
        Ctx {
            inner: self.inner.clone(),
            request_id: String::new(),
            started: self.started,
            t0: self.t0,
            path: self.path,
            provider: None,
            model: String::new(),
            wire_model: None,
            source: None,
            stream: false,
            bytes_in: -1, // marks "detached": no record on drop
            bytes_out: 0,
            status: 0,
            error_class: None,
            ttft: None,
            upstream_latency: None,
            overhead: None,
            usage: UsageInfo::default(),
            series: None,
            completed: true,
            route: None,
            tail: None,
            metered: true,
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        if self.bytes_in < 0 {
            return;
        }
        if !self.metered {
            self.meter();
            // Inside a connection's poll the record waits until hyper has written the
            // response bytes (they are flushed after the body is dropped).
            if AfterWrite::active() {
                let rest = self.detached();
                let me = std::mem::replace(self, rest);
                // Not queued (thread-local gone): recorded as it drops here.
                drop(AfterWrite::push(me));
                return;
            }
        }
        self.record();
    }
}

impl Ctx {
    /// Metric updates: cheap, and visible before the client has the response.
    fn meter(&mut self) {
        self.metered = true;
        if !self.completed && self.error_class.is_none() {
            // The client went away before the exchange finished.
            self.error_class = Some("client_disconnect");
            if self.status == 0 {
                self.status = 499;
            }
        }
        let m = &self.inner.metrics;
        let series: &Series = self.series.as_deref().unwrap_or(m.unrouted());
        series.requests.fetch_add(1, Relaxed);
        if self.status >= 400 || self.error_class.is_some_and(|c| c != "client_disconnect") {
            series.errors.fetch_add(1, Relaxed);
        }
        if self.series.is_some() {
            series.in_flight.fetch_sub(1, Relaxed);
        }
        if let Some(d) = self.upstream_latency {
            series.upstream_latency.observe(d);
        }
        if let Some(d) = self.ttft {
            series.ttft.observe(d);
        }
        if let Some(d) = self.overhead {
            series.overhead.observe(d);
        }
    }

    /// The telemetry record (and the `auto:*` route's end).
    fn record(&mut self) {
        if let Some(t) = self.tail.take() {
            self.usage = t.finish();
        }
        let route = self.route.take().map(|t| {
            t.finish(
                self.completed && self.error_class.is_none(),
                self.usage.prompt_tokens,
                self.status,
                &self.request_id,
                self.started,
            )
        });
        let rec = RequestRecord {
            request_id: std::mem::take(&mut self.request_id),
            ts: self.started,
            provider_id: self.provider.as_deref().unwrap_or("").to_string(),
            model: std::mem::take(&mut self.model),
            wire_model: self.wire_model.take(),
            source: self.source.take(),
            path: self.path.to_string(),
            status: self.status,
            error_class: self.error_class.map(str::to_string),
            ttft_ms: self.ttft.map(|d| d.as_secs_f64() * 1000.0),
            duration_ms: self.t0.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens: self.usage.prompt_tokens,
            cached_tokens: self.usage.cached_tokens,
            completion_tokens: self.usage.completion_tokens,
            prompt_tps: self.usage.prompt_tps,
            gen_tps: self.usage.gen_tps,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            stream: self.stream,
            route,
        };
        self.inner.sink.record(rec);
    }
}

/// Requests that ended during a connection's poll, recorded when that poll returns.
///
/// hyper drops a response body (and with it the request's [`Ctx`]) before it flushes the
/// response's last bytes to the socket, in the same poll. Building the telemetry record (and
/// ending an `auto:*` route: serializing its decision, logging the dispatch) there would delay
/// the client's response by that work; the connection task instead polls under an
/// [`AfterWrite::scope`], which queues the records and makes them once the poll is over. Only
/// metrics are updated at once. A `Ctx` dropped outside a scope (HTTP/2 streams, a connection
/// dropped at shutdown) records at once, as before.
pub(crate) struct AfterWrite {
    depth: u32,
    queue: std::collections::VecDeque<Ctx>,
}

thread_local! {
    static AFTER_WRITE: std::cell::RefCell<AfterWrite> =
        const { std::cell::RefCell::new(AfterWrite {
            depth: 0,
            queue: std::collections::VecDeque::new(),
        }) };
}

/// Leaves an [`AfterWrite`] scope on drop, making the queued records when it was the outer one.
pub(crate) struct AfterWriteScope(());

impl AfterWrite {
    /// Enters a scope for the current thread.
    pub(crate) fn scope() -> AfterWriteScope {
        let _ = AFTER_WRITE.try_with(|a| a.borrow_mut().depth += 1);
        AfterWriteScope(())
    }

    fn active() -> bool {
        AFTER_WRITE
            .try_with(|a| a.try_borrow().is_ok_and(|a| a.depth > 0))
            .unwrap_or(false)
    }

    /// Queues `c`; gives it back when this thread cannot queue (it is then recorded at once).
    fn push(c: Ctx) -> Option<Ctx> {
        let mut c = Some(c);
        let _ = AFTER_WRITE.try_with(|a| {
            if let Ok(mut a) = a.try_borrow_mut()
                && let Some(c) = c.take()
            {
                a.queue.push_back(c);
            }
        });
        c
    }
}

impl Drop for AfterWriteScope {
    fn drop(&mut self) {
        let outer = AFTER_WRITE
            .try_with(|a| {
                let mut a = a.borrow_mut();
                a.depth = a.depth.saturating_sub(1);
                a.depth == 0
            })
            .unwrap_or(false);
        if !outer {
            return;
        }
        // One at a time, no borrow held while a record is made (it never queues another).
        while let Some(c) = AFTER_WRITE
            .try_with(|a| a.borrow_mut().queue.pop_front())
            .ok()
            .flatten()
        {
            drop(c);
        }
    }
}

/// The upstream response body, passed through frame by frame as it arrives.
pub(crate) struct ProxyStream {
    body: UpBody,
    sleep: Pin<Box<Sleep>>,
    idle: Duration,
    deadline: Option<Instant>,
    /// When the last body bytes arrived (the idle timer is re-armed lazily from it).
    last_data: Instant,
    sse: Option<SseScanner>,
    tail: Option<TailScanner>,
    ended: bool,
    /// Body bytes that already arrived but are held for one scheduler turn, so events that
    /// reach the upstream connection together leave in one client write (see `poll_frame`).
    held: Held,
    /// Set after one empty look while data is held (see `poll_frame`).
    spun: bool,
    /// No data frame has gone out yet: the first one is never held (time to first byte).
    first: bool,
    /// A frame (trailers or an error) to hand out once `held` has gone.
    next: Option<Result<Frame<Bytes>, BoxError>>,
    ctx: Ctx,
    _permit: Option<OwnedSemaphorePermit>,
}

/// Most bytes [`ProxyStream`] holds back while coalescing: a batch larger than this goes out at
/// once.
const COALESCE_MAX: usize = 8 * 1024;

/// Data held back by [`ProxyStream`] while it gives the upstream connection task a turn.
type Held = crate::wire::Joined;

impl Held {
    /// Takes what is held as the next body frame.
    fn frame(&mut self) -> Option<Result<Frame<Bytes>, BoxError>> {
        self.take().map(|b| Ok(Frame::data(b)))
    }
}

type FramePoll = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

impl ProxyStream {
    /// Streams `body` back to the client under `ctx` (moved out, leaving a detached copy).
    pub(crate) fn new(
        body: UpBody,
        timeouts: &crate::upstream::UpstreamTimeouts,
        is_sse: bool,
        ctx: &mut Ctx,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let idle = timeouts.idle;
        let deadline = timeouts.total.map(|t| ctx.t0 + t);
        let now = Instant::now();
        Self {
            body,
            sleep: Box::pin(tokio::time::sleep_until(
                wake_at(now, idle, deadline).into(),
            )),
            idle,
            deadline,
            last_data: now,
            sse: is_sse.then(SseScanner::new),
            tail: (!is_sse).then(TailScanner::new),
            ended: false,
            held: Held::Empty,
            spun: false,
            first: true,
            next: None,
            ctx: {
                let det = ctx.detached();
                std::mem::replace(ctx, det)
            },
            _permit: permit,
        }
    }

    fn end_with_error(&mut self, class: &'static str, msg: String) -> FramePoll {
        self.ctx.error_class = Some(class);
        self.ended = true;
        let held = self.held.take();
        if self.sse.is_some() {
            // llama.cpp's own in-stream error shape, then a clean end of stream.
            let v = serde_json::json!({"error": {"message": msg, "type": "server_error", "code": class}});
            let mut b = held.map(Vec::from).unwrap_or_default();
            let start = b.len();
            b.extend_from_slice(b"data: ");
            let _ = serde_json::to_writer(&mut b, &v);
            b.extend_from_slice(b"\n\n");
            self.ctx.bytes_out += (b.len() - start) as i64;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(b)))))
        } else if let Some(b) = held {
            // What arrived before the fault still goes out; the error follows.
            self.next = Some(Err(msg.into()));
            Poll::Ready(Some(Ok(Frame::data(b))))
        } else {
            Poll::Ready(Some(Err(msg.into())))
        }
    }
}

/// Error type of response bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ProxyStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> FramePoll {
        let this = &mut *self;
        // Data held by the previous poll (see below) stays held while more may come.
        if (this.ended || this.next.is_some()) && this.held.len() > 0 {
            return Poll::Ready(this.held.frame());
        }
        if let Some(f) = this.next.take() {
            return Poll::Ready(Some(f));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let frame = match frame.into_data() {
                        Ok(d) => {
                            this.ctx.bytes_out += d.len() as i64;
                            this.last_data = Instant::now();
                            if let Some(s) = &mut this.sse {
                                if s.feed(&d) {
                                    this.ctx.ttft = Some(this.ctx.t0.elapsed());
                                }
                            } else if let Some(t) = &mut this.tail {
                                t.feed_bytes(&d);
                            }
                            if this.body.is_end_stream() {
                                // hyper may stop polling once the body reports its end
                                // (Content-Length met): hand over everything now.
                                this.ended = true;
                                this.ctx.completed = true;
                                this.held.push(d);
                                return Poll::Ready(this.held.frame());
                            }
                            if std::mem::take(&mut this.first) || this.body.hands_over_all() {
                                return Poll::Ready(Some(Ok(Frame::data(d))));
                            }
                            this.held.push(d);
                            this.spun = false;
                            if this.held.len() >= COALESCE_MAX {
                                return Poll::Ready(this.held.frame());
                            }
                            // Coalescing: the upstream connection runs as its own task and hands
                            // over one chunk at a time, so an SSE stream whose events arrived in
                            // one read would otherwise cost one client write per event. Hold
                            // this chunk and give that task a turn; `Pending` below sends what
                            // is held once nothing more comes.
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        Err(frame) => frame,
                    };
                    // Trailers (rare): whatever is held goes first.
                    if let Some(b) = this.held.take() {
                        this.next = Some(Ok(frame));
                        return Poll::Ready(Some(Ok(Frame::data(b))));
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let provider = this.ctx.provider.as_deref().unwrap_or("").to_string();
                    return this.end_with_error(
                        "upstream_cut",
                        format!("upstream provider {provider:?} broke the response: {e}"),
                    );
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    this.ctx.completed = true;
                    return Poll::Ready(this.held.frame());
                }
                Poll::Pending => {
                    if this.held.len() > 0 {
                        // The upstream connection task hands its next chunk over a scheduler
                        // turn later than this first look: look once more, then send what is
                        // held (the upstream body has registered our waker for what follows).
                        if !this.spun {
                            this.spun = true;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        this.spun = false;
                        return Poll::Ready(this.held.frame());
                    }
                    // The idle timer is re-armed lazily from the last data: a stream that
                    // keeps flowing touches the timer wheel about once per idle period instead
                    // of once per chunk.
                    match this.sleep.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) => {
                            let now = Instant::now();
                            let due = wake_at(this.last_data, this.idle, this.deadline);
                            if due > now {
                                this.sleep.as_mut().reset(due.into());
                                continue;
                            }
                            let provider = this.ctx.provider.as_deref().unwrap_or("").to_string();
                            let total = this.deadline.is_some_and(|d| now >= d);
                            let (class, what) = if total {
                                ("upstream_total_timeout", "total")
                            } else {
                                ("upstream_idle_timeout", "idle")
                            };
                            return this.end_with_error(
                                class,
                                format!(
                                    "upstream provider {provider:?} exceeded its {what} timeout"
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.len() == 0 && self.next.is_none() && (self.ended || self.body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let held = self.held.len() as u64;
        if self.ended {
            return SizeHint::with_exact(held);
        }
        let b = self.body.size_hint();
        let mut h = SizeHint::new();
        h.set_lower(b.lower() + held);
        if let Some(u) = b.upper() {
            h.set_upper(u + held);
        }
        h
    }
}

impl Drop for ProxyStream {
    fn drop(&mut self) {
        if let Some(s) = &self.sse {
            self.ctx.usage = s.usage.clone();
            if s.stream_error && self.ctx.error_class.is_none() {
                self.ctx.error_class = Some("upstream_stream_error");
            }
        } else if self.ctx.completed {
            // Read when the record is made (after the response is written).
            self.ctx.tail = self.tail.take();
        }
    }
}

use std::future::Future as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_are_zero_padded_like_before() {
        for n in [0u64, 1, 0xabc, 0xff_ffff_ffff, u64::MAX] {
            let mut v = b"gw-".to_vec();
            push_hex(&mut v, n, 10);
            assert_eq!(String::from_utf8(v).unwrap(), format!("gw-{n:010x}"));
        }
    }

    #[test]
    fn overhead_header_has_three_decimals() {
        let h = |us| millis_header(Duration::from_micros(us));
        assert_eq!(h(0), "0.000");
        assert_eq!(h(42), "0.042");
        assert_eq!(h(1_234), "1.234");
        assert_eq!(h(61_000_007), "61000.007");
    }

    #[test]
    fn peer_header_follows_the_address() {
        let a: std::net::IpAddr = "10.1.2.3".parse().unwrap();
        let b: std::net::IpAddr = "::1".parse().unwrap();
        assert_eq!(peer_ip_header(a), "10.1.2.3");
        assert_eq!(peer_ip_header(a), "10.1.2.3");
        assert_eq!(peer_ip_header(b), "::1");
        assert_eq!(peer_ip_header(a), "10.1.2.3");
    }
}
