//! Request routing: llama-swap's own API, model dispatch, and the emulated llama-server upstream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::sync::mpsc;

use crate::activity::{self, Capture, Row};
use crate::body::{BodyAborted, SimBody};
use crate::events;
use crate::host::{HostInner, InflightEntry, InflightStyle, PState, header_pairs};
use crate::spec::Mode;
use crate::textgen;
use crate::wire::{self, InferReq, Meta, Timings};

pub(crate) const JSON_SERVER: &str = "application/json; charset=utf-8";
const JSON_GO: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const SSE: &str = "text/event-stream";

/// Everything a handler needs about the request.
pub(crate) struct Ctx {
    pub host: Arc<HostInner>,
    pub parts: http::request::Parts,
    pub body: Bytes,
    pub parsed: Option<Result<InferReq, String>>,
    pub remote: SocketAddr,
}

impl Ctx {
    fn path(&self) -> &str {
        self.parts.uri.path()
    }
    fn query(&self) -> Option<&str> {
        self.parts.uri.query()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn query_param(&self, key: &str) -> Option<String> {
        activity::parse_query(self.query())
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
    fn is_json(&self) -> bool {
        self.header("content-type")
            .is_some_and(|c| c.contains("application/json"))
    }
}

pub(crate) fn resp(status: u16, ctype: &'static str, body: impl Into<Bytes>) -> Response<SimBody> {
    let mut r = Response::new(SimBody::full(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn server_resp(status: u16, body: Bytes) -> Response<SimBody> {
    let mut r = resp(status, JSON_SERVER, body);
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("llama.cpp"));
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static(""),
    );
    r
}

fn server_err(code: u16, msg: &str) -> Response<SimBody> {
    server_resp(code, wire::server_error(code, msg))
}

/// Entry point for every request.
pub(crate) async fn handle(
    host: Arc<HostInner>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Response<SimBody> {
    let (parts, body) = req.into_parts();
    host.stats.count(parts.uri.path());
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => return resp(400, TEXT, "could not read request body"),
    };
    let parsed = if parts.method == Method::POST && !body.is_empty() {
        Some(serde_json::from_slice::<InferReq>(&body).map_err(|e| e.to_string()))
    } else {
        None
    };
    if host.stats.wants_records() {
        let model = match &parsed {
            Some(Ok(r)) => r.model_str().map(str::to_owned),
            _ => None,
        };
        host.stats.record(crate::stats::ReceivedRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: header_pairs(&parts.headers),
            body: body.clone(),
            model,
            at: SystemTime::now(),
        });
    }
    let ctx = Ctx {
        host,
        parts,
        body,
        parsed,
        remote,
    };
    match ctx.host.mode {
        Mode::LlamaSwap => swap_route(ctx).await,
        Mode::LlamaServer => {
            if ctx.host.models[0].state() != PState::Ready {
                return server_err(503, "Loading model");
            }
            let path = ctx.path().to_owned();
            upstream(ctx, 0, &path, Hold::none()).await
        }
    }
}

// ---------------------------------------------------------------- llama-swap

/// Paths llama-swap dispatches by the body's `model` (reference §1).
const MODEL_POST_PATHS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/reranking",
    "/rerank",
    "/v1/rerank",
    "/v1/reranking",
    "/infill",
    "/completion",
    "/v1/audio/speech",
    "/v1/images/generations",
    "/v/chat/completions",
    "/v/responses",
    "/v/completions",
    "/v/messages",
    "/v/messages/count_tokens",
    "/v/embeddings",
    "/v/rerank",
    "/v/reranking",
];

fn is_metered_subpath(p: &str) -> bool {
    MODEL_POST_PATHS.contains(&p)
        || matches!(p, "/chat/completions" | "/completions" | "/embeddings")
}

/// llama-swap's own error, in the host version's format (reference §5.5).
fn swap_err(ctx: &Ctx, status: u16, msg: &str) -> Response<SimBody> {
    let accept = ctx.header("accept").unwrap_or("");
    let ver = ctx.host.ver;
    if ver.gin() {
        return if accept.contains("application/json") {
            resp(status, JSON_GO, wire::to_bytes(&json!({"error": msg})))
        } else {
            resp(status, TEXT, msg.to_owned())
        };
    }
    if accept.contains("text/plain") {
        return resp(status, TEXT, format!("llama-swap: {msg}"));
    }
    if accept.contains("text/html") {
        return resp(
            status,
            "text/html; charset=utf-8",
            format!("<html><body><h1>{status}</h1><p>{msg}</p></body></html>"),
        );
    }
    if ver.head() {
        let (ty, code) = match status {
            400 => ("invalid_request_error", "bad_request"),
            401 => ("authentication_error", "unauthorized"),
            404 => ("invalid_request_error", "not_found"),
            409 => ("invalid_request_error", "conflict"),
            429 => ("rate_limit_error", "concurrency_limit"),
            502 => ("server_error", "bad_gateway"),
            503 => ("server_error", "service_unavailable"),
            _ => ("server_error", "internal_error"),
        };
        return resp(
            status,
            JSON_GO,
            wire::to_bytes(
                &json!({"src": "llama-swap", "error": {"message": msg, "type": ty, "param": null, "code": code}}),
            ),
        );
    }
    resp(
        status,
        JSON_GO,
        wire::to_bytes(&json!({"src": "llama-swap", "error": msg})),
    )
}

fn authorized(ctx: &Ctx) -> bool {
    let keys = &ctx.host.spec.api_keys;
    if keys.is_empty() {
        return true;
    }
    let ok = |k: &str| keys.iter().any(|x| x == k);
    if let Some(a) = ctx.header("authorization") {
        if let Some(b) = a.strip_prefix("Bearer ") {
            return ok(b.trim());
        }
        if let Some(b) = a.strip_prefix("Basic ") {
            use base64::Engine as _;
            if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                let s = String::from_utf8_lossy(&raw);
                return s.split_once(':').is_some_and(|(_, pw)| ok(pw));
            }
        }
    }
    ctx.header("x-api-key").is_some_and(ok)
}

async fn swap_route(ctx: Ctx) -> Response<SimBody> {
    let host = Arc::clone(&ctx.host);
    let ver = host.ver;
    let method = ctx.parts.method.clone();
    let path = ctx.path().to_owned();
    if method == Method::OPTIONS {
        let mut r = resp(204, TEXT, Bytes::new());
        let h = r.headers_mut();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-allow-methods",
            HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        h.insert(
            "access-control-allow-headers",
            HeaderValue::from_static("*"),
        );
        return r;
    }
    if method == Method::GET && (path == "/health" || path == "/wol-health") {
        return resp(200, TEXT, "OK");
    }
    if !authorized(&ctx) {
        let mut r = swap_err(&ctx, 401, "unauthorized: invalid or missing API key");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"llama-swap\""),
        );
        return r;
    }
    match (&method, path.as_str()) {
        (&Method::POST, p) if MODEL_POST_PATHS.contains(&p) => {
            let up = p
                .strip_prefix("/v")
                .filter(|_| p.starts_with("/v/"))
                .unwrap_or(p)
                .to_owned();
            return swap_model_request(ctx, &up).await;
        }
        (&Method::GET, "/v1/models") => list_models(&ctx),
        (&Method::GET, "/models") if ver.n_ctx_meta() => list_models(&ctx),
        (&Method::GET, "/running") => running(&ctx),
        (&Method::GET, "/unload") => {
            unload_all(&host);
            resp(200, TEXT, "OK")
        }
        (&Method::POST, "/api/models/unload") => {
            unload_all(&host);
            resp(200, JSON_GO, r#"{"msg":"ok"}"#)
        }
        (&Method::POST, p) if p.starts_with("/api/models/unload/") => {
            let name = &p["/api/models/unload/".len()..];
            match host.resolve(name) {
                Some(m) => {
                    host.log(
                        false,
                        &format!(
                            "[INFO] <{}> unloading model (API request)",
                            host.models[m].spec.id
                        ),
                    );
                    host.kill_model(m);
                    resp(200, TEXT, "OK")
                }
                None => swap_err(&ctx, 404, "model not found"),
            }
        }
        (&Method::GET, "/api/events") => events_stream(&ctx),
        (&Method::GET, "/api/metrics") if !ver.activity_api() => {
            let a = host.activity.lock();
            let rows: Vec<serde_json::Value> = a
                .as_ref()
                .map(|a| a.rows.iter().map(|r| a.row_json(r, ver)).collect())
                .unwrap_or_default();
            resp(200, JSON_GO, wire::to_bytes(&rows))
        }
        (&Method::GET, "/api/metrics/activity") if ver.activity_api() => {
            if host.faults.activity_api_fails() {
                return swap_err(&ctx, 500, "activity store unavailable");
            }
            let q = host
                .activity
                .lock()
                .map_err(|_| "poisoned".to_owned())
                .and_then(|a| a.query(ver, ctx.query()));
            match q {
                Ok(v) => resp(200, JSON_GO, wire::to_bytes(&v)),
                Err(e) => swap_err(&ctx, 400, &e),
            }
        }
        (&Method::GET, "/api/metrics/stats") if ver.activity_api() => {
            let v = host
                .activity
                .lock()
                .map(|a| a.stats(ctx.query()))
                .unwrap_or_default();
            resp(200, JSON_GO, wire::to_bytes(&v))
        }
        (&Method::GET, "/api/performance") if ver.performance() => performance(&ctx),
        (&Method::GET, "/metrics") if ver.performance() => prometheus_sys(&ctx),
        (&Method::GET, p) if ver.captures() && p.starts_with("/api/captures/") => {
            let id = &p["/api/captures/".len()..];
            match id.parse::<u64>() {
                Err(_) => swap_err(&ctx, 400, "invalid capture ID"),
                Ok(id) => {
                    let v = host
                        .activity
                        .lock()
                        .ok()
                        .and_then(|a| a.capture(id).map(|c| c.to_json(id)));
                    match v {
                        Some(v) => resp(200, JSON_GO, wire::to_bytes(&v)),
                        None => swap_err(&ctx, 404, "capture not found"),
                    }
                }
            }
        }
        (&Method::GET, "/api/version") => resp(
            200,
            JSON_GO,
            wire::to_bytes(
                &json!({"version": ver.tag(), "commit": "fleetsim", "build_date": "2026-08-14T00:00:00Z"}),
            ),
        ),
        (&Method::GET, "/logs") => {
            let text = host
                .logs
                .lock()
                .map(|l| format!("{}{}", l.proxy, l.upstream))
                .unwrap_or_default();
            resp(200, TEXT, text)
        }
        (&Method::GET, "/props") if ver.0 >= 234 => match ctx.query_param("model") {
            Some(name) => match host.resolve(&name) {
                Some(m) => return proxy_to_model(ctx, m, "/props", false).await,
                None => swap_err(
                    &ctx,
                    if ver.gin() { 400 } else { 404 },
                    "no router for requested model",
                ),
            },
            None => swap_err(&ctx, 404, "no model id could be identified"),
        },
        (_, p) if p.starts_with("/upstream/") => upstream_route(ctx).await,
        (&Method::GET, "/") => {
            let mut r = resp(302, TEXT, Bytes::new());
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/ui"));
            r
        }
        _ => resp(404, TEXT, "404 page not found\n"),
    }
}

fn unload_all(host: &HostInner) {
    host.log(false, "[INFO] unloading all models (API request)");
    for m in 0..host.models.len() {
        host.kill_model(m);
    }
}

async fn swap_model_request(ctx: Ctx, upstream_path: &str) -> Response<SimBody> {
    let ver = ctx.host.ver;
    let name = if ver.gin() || ctx.is_json() {
        match &ctx.parsed {
            Some(Ok(r)) => r.model_str().map(str::to_owned),
            _ => None,
        }
    } else {
        None
    };
    let Some(name) = name else {
        return if ver.gin() {
            swap_err(&ctx, 400, "missing or invalid 'model' key")
        } else {
            swap_err(&ctx, 404, "no model id could be identified")
        };
    };
    let Some(m) = ctx.host.resolve(&name) else {
        return if ver.gin() {
            swap_err(
                &ctx,
                400,
                &format!("could not find suitable inference handler for {name}"),
            )
        } else {
            swap_err(&ctx, 404, "no router for requested model")
        };
    };
    proxy_to_model(ctx, m, upstream_path, true).await
}

async fn upstream_route(ctx: Ctx) -> Response<SimBody> {
    let host = Arc::clone(&ctx.host);
    let path = ctx.path().to_owned();
    let rest = &path["/upstream/".len()..];
    // Longest model name on a segment boundary wins (names may contain '/').
    let mut found = None;
    let mut ends: Vec<usize> = rest.match_indices('/').map(|(i, _)| i).collect();
    ends.push(rest.len());
    for &end in ends.iter().rev() {
        if let Some(m) = host.resolve(&rest[..end]) {
            found = Some((m, &rest[end..]));
            break;
        }
    }
    let Some((m, sub)) = found else {
        return swap_err(
            &ctx,
            404,
            &format!("model {} not found", rest.split('/').next().unwrap_or("")),
        );
    };
    if sub.is_empty() {
        let code = if ctx.parts.method == Method::GET || ctx.parts.method == Method::HEAD {
            301
        } else {
            308
        };
        let mut r = resp(code, TEXT, Bytes::new());
        if let Ok(v) = HeaderValue::from_str(&format!("{path}/")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    let ignored = [
        ".js", ".json", ".css", ".png", ".gif", ".jpg", ".jpeg", ".ico", ".txt",
    ]
    .iter()
    .any(|e| sub.ends_with(e));
    if ignored && host.models[m].state() != PState::Ready {
        return swap_err(
            &ctx,
            409,
            &format!("model {} is not loaded", host.models[m].spec.id),
        );
    }
    let sub = sub.to_owned();
    let metered = is_metered_subpath(&sub);
    proxy_to_model(ctx, m, &sub, metered).await
}

/// Holds what a request keeps while it runs on a model: admission and activity counts, the
/// inflight entry and the activity meter. Dropping it releases everything.
pub(crate) struct Hold {
    host: Option<Arc<HostInner>>,
    m: usize,
    swap: bool,
    active: bool,
    inflight: Option<u64>,
    meter: Option<Meter>,
}

pub(crate) struct Meter {
    start: Instant,
    path: String,
    remote: SocketAddr,
    user_agent: String,
    method: String,
    req_headers: Vec<(String, String)>,
    req_body: Bytes,
}

/// What a finished metered request reports.
pub(crate) struct Outcome {
    pub status: u16,
    pub content_type: &'static str,
    pub timings: Option<Timings>,
    pub prompt_tokens: Option<u32>,
    pub resp_body: Option<Bytes>,
    pub resp_bytes: usize,
    pub error_msg: Option<String>,
}

impl Hold {
    pub(crate) fn none() -> Hold {
        Hold {
            host: None,
            m: 0,
            swap: false,
            active: false,
            inflight: None,
            meter: None,
        }
    }

    fn headers_sent(&self, headers: &http::HeaderMap) {
        let (Some(host), Some(id)) = (&self.host, self.inflight) else {
            return;
        };
        if host.ver.inflight() != InflightStyle::Ops {
            return;
        }
        if let Ok(mut map) = host.inflight.lock()
            && let Some(e) = map.get_mut(&id)
        {
            e.resp_headers = header_pairs(headers);
        }
        host.inflight_changed(id, false);
    }

    fn metered(&self) -> bool {
        self.meter.is_some()
    }

    /// Records the activity row (metered requests only).
    pub(crate) fn finish(&mut self, o: Outcome) {
        let (Some(host), Some(meter)) = (&self.host, self.meter.take()) else {
            return;
        };
        let wall = meter.start.elapsed();
        let model = host.models[self.m].spec.id.clone();
        let (cache, input, output, pps, tps, model_ms) = match &o.timings {
            Some(t) => (
                i64::from(t.cache_n),
                i64::from(t.prompt_n),
                i64::from(t.predicted_n),
                t.prompt_per_second,
                t.predicted_per_second,
                t.prompt_ms + t.predicted_ms,
            ),
            None => (-1, o.prompt_tokens.map_or(0, i64::from), 0, -1.0, -1.0, 0.0),
        };
        let duration_ms = (wall.as_secs_f64() * 1000.0).max(model_ms).round() as u64;
        let row = Row {
            id: 0,
            ts: SystemTime::now(),
            model,
            req_path: meter.path.clone(),
            resp_content_type: o.content_type.to_owned(),
            status: o.status,
            cache_tokens: cache,
            input_tokens: input,
            output_tokens: output,
            prompt_per_second: pps,
            tokens_per_second: tps,
            duration_ms,
            error_msg: o.error_msg.clone(),
        };
        let want_event = host.hub.has_subscribers();
        let ver = host.ver;
        let (id, event) = {
            let Ok(mut a) = host.activity.lock() else {
                return;
            };
            let capture = if a.captures_enabled() {
                let mut req_headers = meter.req_headers.clone();
                for (k, v) in &mut req_headers {
                    if [
                        "authorization",
                        "proxy-authorization",
                        "cookie",
                        "x-api-key",
                    ]
                    .iter()
                    .any(|s| k.eq_ignore_ascii_case(s))
                    {
                        *v = "[REDACTED]".into();
                    }
                }
                Some(Capture {
                    req_path: meter.path.clone(),
                    req_headers,
                    req_body: meter.req_body.clone(),
                    resp_headers: vec![("Content-Type".into(), o.content_type.into())],
                    resp_body: if o.status == 200 {
                        o.resp_body.clone()
                    } else {
                        None
                    },
                })
            } else {
                None
            };
            let id = a.push(row, capture);
            let event = if want_event {
                if ver.activity_api() {
                    Some(events::frame("activity", &format!("{{\"id\":{id}}}")))
                } else {
                    a.rows
                        .back()
                        .map(|r| events::frame_value("metrics", &vec![a.row_json(r, ver)]))
                }
            } else {
                None
            };
            (id, event)
        };
        let _ = id;
        if let Some(e) = event {
            host.publish(e);
        }
        host.log(
            false,
            &format!(
                "[INFO] Request {} \"{} {} HTTP/1.1\" {} {} \"{}\" {:?}",
                meter.remote.ip(),
                meter.method,
                meter.path,
                o.status,
                o.resp_bytes,
                meter.user_agent,
                wall
            ),
        );
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let Some(host) = self.host.take() else { return };
        if self.meter.is_some() {
            // The client went away or the model was killed before an outcome was recorded.
            self.host = Some(Arc::clone(&host));
            self.finish(Outcome {
                status: 502,
                content_type: TEXT,
                timings: None,
                prompt_tokens: None,
                resp_body: None,
                resp_bytes: 0,
                error_msg: Some("request aborted".into()),
            });
            self.host = None;
        }
        let rt = &host.models[self.m];
        if self.swap {
            rt.admitted.fetch_sub(1, Ordering::AcqRel);
        }
        if self.active {
            rt.last_use_ms.store(host.now_ms(), Ordering::Relaxed);
            if rt.active.fetch_sub(1, Ordering::AcqRel) == 1 {
                rt.drained.notify_waiters();
            }
        }
        if let Some(id) = self.inflight {
            let removed = host
                .inflight
                .lock()
                .map(|mut m| m.remove(&id).is_some())
                .unwrap_or(false);
            if removed {
                host.inflight_changed(id, true);
            }
        }
    }
}

/// Admission (429), inflight tracking, swap-in, then the upstream call.
async fn proxy_to_model(
    ctx: Ctx,
    m: usize,
    upstream_path: &str,
    metered: bool,
) -> Response<SimBody> {
    let host = Arc::clone(&ctx.host);
    let rt = &host.models[m];
    let admitted = rt.admitted.fetch_add(1, Ordering::AcqRel) + 1;
    if admitted > rt.spec.effective_concurrency_limit() {
        rt.admitted.fetch_sub(1, Ordering::AcqRel);
        let mut r = swap_err(
            &ctx,
            429,
            &format!(
                "too many requests: concurrency limit reached for model {}",
                rt.spec.id
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let inflight = if host.ver.inflight() != InflightStyle::None {
        let id = host.inflight_seq.fetch_add(1, Ordering::Relaxed);
        let entry = InflightEntry {
            id,
            ts: SystemTime::now(),
            started: Instant::now(),
            model: rt.spec.id.clone(),
            req_path: ctx.path().to_owned(),
            method: ctx.parts.method.to_string(),
            req_headers: if host.hub.has_subscribers() {
                header_pairs(&ctx.parts.headers)
            } else {
                Vec::new()
            },
            remote_ip: ctx.remote.ip().to_string(),
            resp_headers: Vec::new(),
            resp_bytes: 0,
        };
        if let Ok(mut map) = host.inflight.lock() {
            map.insert(id, entry);
        }
        host.inflight_changed(id, false);
        Some(id)
    } else {
        None
    };
    let meter = metered.then(|| Meter {
        start: Instant::now(),
        path: ctx.path().to_owned(),
        remote: ctx.remote,
        user_agent: ctx.header("user-agent").unwrap_or("").to_owned(),
        method: ctx.parts.method.to_string(),
        req_headers: header_pairs(&ctx.parts.headers),
        req_body: ctx.body.clone(),
    });
    let mut hold = Hold {
        host: Some(Arc::clone(&host)),
        m,
        swap: true,
        active: false,
        inflight,
        meter,
    };
    loop {
        if let Err(e) = host.ensure_ready(m).await {
            hold.meter = None;
            return swap_err(&ctx, 500, &format!("unspecific error: {e}"));
        }
        rt.active.fetch_add(1, Ordering::AcqRel);
        if rt.state() == PState::Ready {
            hold.active = true;
            break;
        }
        if rt.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            rt.drained.notify_waiters();
        }
    }
    let mut r = upstream(ctx, m, upstream_path, hold).await;
    if r.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
    {
        r.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    r
}

fn list_models(ctx: &Ctx) -> Response<SimBody> {
    let host = &ctx.host;
    let ver = host.ver;
    let mut models: Vec<&crate::host::ModelRt> =
        host.models.iter().filter(|m| !m.spec.unlisted).collect();
    models.sort_by(|a, b| a.spec.id.cmp(&b.spec.id));
    let data: Vec<serde_json::Value> = models
        .iter()
        .map(|m| {
            let s = &m.spec;
            let mut v = json!({"id": s.id, "object": "model", "created": host.created_unix, "owned_by": "llama-swap"});
            if let Some(n) = &s.name {
                v["name"] = json!(n);
            }
            if let Some(d) = &s.description {
                v["description"] = json!(d);
            }
            let mut llamaswap = serde_json::Map::new();
            for (k, val) in &s.metadata {
                llamaswap.insert(k.clone(), val.clone());
            }
            if ver.activity_api() {
                if s.capabilities {
                    let out = if s.embedding { "embedding" } else { "text" };
                    v["architecture"] = json!({"input_modalities": ["text"], "output_modalities": [out], "modality": format!("text->{out}")});
                    v["capabilities"] = json!({"function_calling": !s.embedding});
                    v["supported_parameters"] = if s.embedding { json!([]) } else { json!(["tools", "tool_choice"]) };
                    v["context_length"] = json!(s.n_ctx);
                }
                if ver.type_meta() {
                    llamaswap.insert("type".into(), json!("model"));
                    if !s.aliases.is_empty() {
                        llamaswap.insert("aliases".into(), json!(s.aliases));
                    }
                }
                let mut meta = serde_json::Map::new();
                if !llamaswap.is_empty() {
                    meta.insert("llamaswap".into(), serde_json::Value::Object(llamaswap.clone()));
                }
                if ver.n_ctx_meta() && s.capabilities {
                    meta.insert("n_ctx".into(), json!(s.n_ctx));
                }
                if !meta.is_empty() {
                    v["meta"] = serde_json::Value::Object(meta);
                }
            }
            if ver.status_value() {
                let loaded = m.state() != PState::Stopped;
                v["status"] = json!({"value": if loaded { "loaded" } else { "unloaded" }});
            }
            if !ver.activity_api() && !llamaswap.is_empty() {
                v["meta"] = json!({"llamaswap": llamaswap});
            }
            v
        })
        .collect();
    let mut r = resp(
        200,
        JSON_GO,
        wire::to_bytes(&json!({"object": "list", "data": data})),
    );
    if let Some(o) = ctx.parts.headers.get(header::ORIGIN) {
        r.headers_mut()
            .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
    }
    r
}

fn running(ctx: &Ctx) -> Response<SimBody> {
    let host = &ctx.host;
    let ver = host.ver;
    let list: Vec<serde_json::Value> = host
        .models
        .iter()
        .filter(|m| match m.state() {
            PState::Stopped => false,
            PState::Ready => true,
            _ => !ver.gin(),
        })
        .map(|m| {
            let s = &m.spec;
            if ver.0 < 186 {
                return json!({"model": s.id, "state": m.state().as_str()});
            }
            json!({
                "model": s.id, "state": m.state().as_str(),
                "cmd": format!("llama-server --port ${{PORT}} -m /models/{}.gguf -c {} -np {}", s.id, s.n_ctx * s.slots, s.slots),
                "proxy": format!("http://127.0.0.1:{}", 5800 + m.idx),
                "ttl": host.ttl_secs(m),
                "name": s.name.clone().unwrap_or_default(),
                "description": s.description.clone().unwrap_or_default(),
            })
        })
        .collect();
    resp(200, JSON_GO, wire::to_bytes(&json!({"running": list})))
}

fn events_stream(ctx: &Ctx) -> Response<SimBody> {
    let host = Arc::clone(&ctx.host);
    let ver = host.ver;
    let cap = host.faults.event_buffer().unwrap_or(ver.event_buffer());
    let mut rx = host.hub.subscribe(cap);
    let mut init = Vec::new();
    let (proxy, up) = host
        .logs
        .lock()
        .map(|l| (l.proxy.clone(), l.upstream.clone()))
        .unwrap_or_default();
    init.push(events::frame_value(
        "logData",
        &json!({"source": "proxy", "data": proxy}),
    ));
    init.push(events::frame_value(
        "logData",
        &json!({"source": "upstream", "data": up}),
    ));
    init.push(events::frame_value(
        "modelStatus",
        &host.model_status_json(),
    ));
    if !ver.activity_api()
        && let Ok(a) = host.activity.lock()
    {
        let rows: Vec<serde_json::Value> = a.rows.iter().map(|r| a.row_json(r, ver)).collect();
        init.push(events::frame_value("metrics", &rows));
    }
    if ver.ui_config() {
        init.push(events::frame_value(
            "uiConfig",
            &json!({"activity": {"session_id": ["X-Session-ID", "X-Litellm-Session-Id"]}}),
        ));
    }
    if ver.profile_changed() {
        init.push(events::frame_value(
            "profileChanged",
            &json!({"active": null}),
        ));
    }
    if let Some(s) = host.inflight_snapshot() {
        init.push(s);
    }
    let (tx, body_rx) = mpsc::channel::<Result<Bytes, BodyAborted>>(1);
    tokio::spawn(async move {
        for m in init {
            if tx.send(Ok(m)).await.is_err() {
                return;
            }
        }
        while let Some(m) = rx.recv().await {
            if tx.send(Ok(m)).await.is_err() {
                return;
            }
            if let Some(d) = host.faults.slow_events() {
                tokio::time::sleep(d).await;
            }
        }
    });
    let mut r = Response::new(SimBody::Chan(body_rx));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SSE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

fn busy(host: &HostInner) -> f64 {
    if host
        .models
        .iter()
        .any(|m| m.counters.processing.load(Ordering::Relaxed) > 0)
    {
        0.9
    } else if host.models.iter().any(|m| m.state() != PState::Stopped) {
        0.1
    } else {
        0.0
    }
}

fn perf_json(ctx: &Ctx, after: Option<SystemTime>) -> serde_json::Value {
    let host = &ctx.host;
    let epoch = host.epoch();
    let every = host.scaled_ms(host.spec.perf_every_ms as f64);
    // Real-time timestamps: samples are taken every `every` of real time since the (re)start.
    let now = epoch.wall + epoch.start.elapsed();
    activity::performance(
        epoch.wall,
        now,
        every,
        host.spec.gpu.as_ref(),
        busy(host),
        after,
    )
}

fn performance(ctx: &Ctx) -> Response<SimBody> {
    let host = &ctx.host;
    if host.spec.performance_disabled {
        let body = if host.ver.0 >= 229 {
            json!({"enabled": false})
        } else {
            json!({"error": "performance monitor not available"})
        };
        return resp(503, JSON_GO, wire::to_bytes(&body));
    }
    let after = match ctx.query_param("after") {
        Some(a) => match chrono::DateTime::parse_from_rfc3339(&a) {
            Ok(t) => Some(SystemTime::from(t.with_timezone(&chrono::Utc))),
            Err(_) => return swap_err(ctx, 400, &format!("invalid 'after' timestamp: {a}")),
        },
        None => None,
    };
    let mut v = perf_json(ctx, after);
    if host.ver.0 < 229
        && let Some(o) = v.as_object_mut()
    {
        o.remove("enabled");
    }
    resp(200, JSON_GO, wire::to_bytes(&v))
}

fn prometheus_sys(ctx: &Ctx) -> Response<SimBody> {
    let host = &ctx.host;
    if host.spec.performance_disabled {
        return resp(503, TEXT, "# performance monitor not available\n");
    }
    let v = perf_json(ctx, None);
    let mut out = String::new();
    if let Some(s) = v["sys_stats"].as_array().and_then(|a| a.last()) {
        out.push_str("# HELP llamaswap_cpu_util_percent CPU utilisation per core\n# TYPE llamaswap_cpu_util_percent gauge\n");
        for (i, c) in s["cpu_util_per_core"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            out.push_str(&format!(
                "llamaswap_cpu_util_percent{{core=\"{i}\"}} {}\n",
                c
            ));
        }
        for (k, f) in [
            ("total", "mem_total_mb"),
            ("used", "mem_used_mb"),
            ("free", "mem_free_mb"),
        ] {
            out.push_str(&format!(
                "llamaswap_memory_{k}_bytes {}\n",
                s[f].as_f64().unwrap_or(0.0) * 1048576.0
            ));
        }
        for (i, k) in [
            ("1m", "load_avg_1"),
            ("5m", "load_avg_5"),
            ("15m", "load_avg_15"),
        ] {
            out.push_str(&format!(
                "llamaswap_load_average{{interval=\"{i}\"}} {}\n",
                s[k]
            ));
        }
    }
    if let Some(g) = v["gpu_stats"].as_array().and_then(|a| a.last()) {
        let lbl = format!(
            "{{id=\"0\",name=\"{}\",uuid=\"GPU-fleetsim-0\"}}",
            g["name"].as_str().unwrap_or("")
        );
        for (metric, f, mul) in [
            ("temperature_celsius", "temp_c", 1.0),
            ("util_percent", "gpu_util_pct", 1.0),
            ("memory_util_percent", "mem_util_pct", 1.0),
            ("memory_used_bytes", "mem_used_mb", 1048576.0),
            ("memory_total_bytes", "mem_total_mb", 1048576.0),
            ("power_draw_watts", "power_draw_w", 1.0),
        ] {
            out.push_str(&format!(
                "llamaswap_gpu_{metric}{lbl} {}\n",
                g[f].as_f64().unwrap_or(0.0) * mul
            ));
        }
    }
    resp(200, "text/plain; version=0.0.4; charset=utf-8", out)
}

// ---------------------------------------------------------------- llama-server

/// The emulated llama-server for model `m` (directly in llama-server mode, behind llama-swap otherwise).
async fn upstream(ctx: Ctx, m: usize, path: &str, mut hold: Hold) -> Response<SimBody> {
    let method = ctx.parts.method.clone();
    let r = match (&method, path) {
        (&Method::GET, "/health" | "/v1/health") => {
            server_resp(200, Bytes::from_static(br#"{"status":"ok"}"#))
        }
        (&Method::GET, "/props") => server_resp(200, props(&ctx.host, m)),
        (&Method::GET, "/slots") => slots(&ctx, m),
        (&Method::GET, "/metrics") => metrics(&ctx.host, m),
        (&Method::GET, "/v1/models" | "/models") => {
            let s = &ctx.host.models[m].spec;
            server_resp(
                200,
                wire::to_bytes(&json!({
                    // Ollama-compatible list first, then the OpenAI one (as a real llama-server).
                    "models": [{"name": s.id, "model": s.id, "modified_at": "", "size": "", "digest": "",
                        "type": "model", "description": "", "tags": [""], "capabilities": ["completion"],
                        "parameters": "", "details": {"parent_model": "", "format": "gguf", "family": "",
                        "families": [""], "parameter_size": "", "quantization_level": ""}}],
                    "object": "list",
                    "data": [{
                        "id": s.id, "aliases": [s.id], "tags": [], "object": "model",
                        "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
                        "created": ctx.host.created_unix, "owned_by": "llamacpp",
                        "meta": {"vocab_type": 2, "n_vocab": 151_936, "n_ctx": s.n_ctx,
                            "n_ctx_train": s.n_ctx.max(32768), "n_embd": s.n_embd,
                            "n_params": 8_000_000_000u64, "size": 4_900_000_000u64}}]})),
            )
        }
        (&Method::POST, "/v1/chat/completions" | "/chat/completions") => {
            return infer(ctx, m, Kind::Chat, hold).await;
        }
        (&Method::POST, "/v1/completions" | "/completions") => {
            return infer(ctx, m, Kind::Text, hold).await;
        }
        (&Method::POST, "/v1/embeddings" | "/embeddings") => {
            return infer(ctx, m, Kind::Embed, hold).await;
        }
        _ => server_err(404, "File Not Found"),
    };
    if hold.metered() {
        let status = r.status().as_u16();
        hold.finish(Outcome {
            status,
            content_type: JSON_SERVER,
            timings: None,
            prompt_tokens: None,
            resp_body: None,
            resp_bytes: 0,
            error_msg: (status >= 400).then(|| "request failed".into()),
        });
    }
    hold.headers_sent(r.headers());
    r
}

fn props(host: &HostInner, m: usize) -> Bytes {
    let s = &host.models[m].spec;
    wire::to_bytes(&json!({
        "default_generation_settings": {"n_ctx": s.n_ctx, "params": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "n_predict": -1, "seed": 4_294_967_295u64}},
        "total_slots": s.slots,
        "model_alias": s.id,
        "model_path": format!("/models/{}.gguf", s.id),
        "modalities": {"vision": false, "audio": false},
        "endpoint_slots": true, "endpoint_props": false, "endpoint_metrics": true, "webui": true,
        "chat_template": "{% for message in messages %}{{ message.content }}{% endfor %}",
        "bos_token": "<s>", "eos_token": "</s>",
        "build_info": wire::FINGERPRINT,
    }))
}

fn slots(ctx: &Ctx, m: usize) -> Response<SimBody> {
    let rt = &ctx.host.models[m];
    let busy = rt.spec.slots as usize - rt.slots.available_permits().min(rt.spec.slots as usize);
    if ctx.query_param("fail_on_no_slot").is_some_and(|v| v == "1")
        && busy >= rt.spec.slots as usize
    {
        return server_err(503, "no slot available");
    }
    let list: Vec<serde_json::Value> = (0..rt.spec.slots as usize)
        .map(|i| {
            json!({"id": i, "id_task": -1, "n_ctx": rt.spec.n_ctx, "speculative": false, "is_processing": i < busy,
                   "params": {"temperature": 0.8, "n_predict": -1},
                   "next_token": {"has_next_token": i < busy, "has_new_line": false, "n_remain": -1, "n_decoded": 0}})
        })
        .collect();
    server_resp(200, wire::to_bytes(&list))
}

fn metrics(host: &HostInner, m: usize) -> Response<SimBody> {
    let c = &host.models[m].counters;
    let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let prompt_s = g(&c.prompt_us) as f64 / 1e6;
    let pred_s = g(&c.predicted_us) as f64 / 1e6;
    let per = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let lines = [
        ("prompt_tokens_total", "counter", g(&c.prompt_tokens) as f64),
        ("prompt_seconds_total", "counter", prompt_s),
        ("tokens_predicted_total", "counter", g(&c.predicted) as f64),
        ("tokens_predicted_seconds_total", "counter", pred_s),
        ("n_decode_total", "counter", g(&c.decodes) as f64),
        (
            "n_tokens_max",
            "counter",
            f64::from(host.models[m].spec.n_ctx),
        ),
        ("n_busy_slots_per_decode", "counter", 1.0),
        (
            "prompt_tokens_seconds",
            "gauge",
            per(g(&c.prompt_tokens), prompt_s),
        ),
        (
            "predicted_tokens_seconds",
            "gauge",
            per(g(&c.predicted), pred_s),
        ),
        (
            "requests_processing",
            "gauge",
            f64::from(c.processing.load(Ordering::Relaxed)),
        ),
        (
            "requests_deferred",
            "gauge",
            f64::from(c.deferred.load(Ordering::Relaxed)),
        ),
    ];
    let mut out = String::new();
    for (name, ty, v) in lines {
        out.push_str(&format!(
            "# HELP llamacpp:{name} {name}\n# TYPE llamacpp:{name} {ty}\nllamacpp:{name} {v}\n"
        ));
    }
    let mut r = resp(200, "text/plain; version=0.0.4", out);
    if let Ok(v) = HeaderValue::from_str(&host.created_unix.to_string()) {
        r.headers_mut().insert("process-start-time-unix", v);
    }
    r
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
    Embed,
}

/// Sleeps `d` unless the model is killed first; returns false when killed.
async fn sleep_or_killed(
    d: Duration,
    kill: &mut tokio::sync::watch::Receiver<u64>,
    gen0: u64,
) -> bool {
    if d.is_zero() {
        return *kill.borrow() == gen0;
    }
    let slept = tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = kill.wait_for(|g| *g != gen0) => false,
    };
    slept && *kill.borrow() == gen0
}

fn fail(hold: &mut Hold, status: u16, body: Bytes) -> Response<SimBody> {
    let msg = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned));
    hold.finish(Outcome {
        status,
        content_type: JSON_SERVER,
        timings: None,
        prompt_tokens: None,
        resp_body: None,
        resp_bytes: body.len(),
        error_msg: msg,
    });
    let r = server_resp(status, body);
    hold.headers_sent(r.headers());
    r
}

async fn infer(ctx: Ctx, m: usize, kind: Kind, mut hold: Hold) -> Response<SimBody> {
    let host = Arc::clone(&ctx.host);
    let rt = &host.models[m];
    let mut kill = rt.kill.subscribe();
    let gen0 = *kill.borrow_and_update();
    let req = match &ctx.parsed {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            return fail(
                &mut hold,
                400,
                wire::server_error(
                    400,
                    &format!("[json.exception.parse_error.101] parse error: {e}"),
                ),
            );
        }
        None => {
            return fail(
                &mut hold,
                400,
                wire::server_error(
                    400,
                    "[json.exception.parse_error.101] parse error: empty input",
                ),
            );
        }
    };
    // Drawn once per request: the error spreading counts requests, so streamed requests must
    // not draw twice.
    let req_faults = host.faults.for_request();
    if let Some(f) = &req_faults {
        if let Some(h) = f.hang {
            let mut rel = host.faults.hang_release.subscribe();
            let g = *rel.borrow_and_update();
            match h {
                Some(d) => {
                    tokio::select! { _ = tokio::time::sleep(d) => {}, _ = rel.wait_for(|x| *x != g) => {} }
                }
                None => {
                    let _ = rel.wait_for(|x| *x != g).await;
                }
            }
        }
        if let Some(code) = f.error_status {
            return fail(
                &mut hold,
                code,
                wire::server_error(code, "fleet-sim injected fault"),
            );
        }
    }
    // llama-server reports its own alias, not the request's `model` (confirmed on a real server).
    let model_name = rt.spec.id.clone();
    if kind == Kind::Embed {
        if !rt.spec.embedding {
            return fail(
                &mut hold,
                501,
                wire::server_error(
                    501,
                    "This server does not support embeddings. Start it with `--embeddings`",
                ),
            );
        }
        let Some(inputs) = wire::embedding_inputs(req) else {
            return fail(
                &mut hold,
                400,
                wire::server_error(400, "\"input\" must be a string or an array of strings"),
            );
        };
        let (body, tokens) =
            wire::embeddings_response(&model_name, &inputs, host.spec.seed, rt.spec.n_embd);
        let ms = f64::from(tokens) * 1000.0 / wire::eff_tps(rt.spec.prompt_tps);
        if !sleep_or_killed(host.pace_ms(ms, rt.spec.prompt_tps), &mut kill, gen0).await {
            return fail(
                &mut hold,
                502,
                wire::server_error(502, "upstream process was stopped"),
            );
        }
        rt.counters
            .prompt_tokens
            .fetch_add(u64::from(tokens), Ordering::Relaxed);
        hold.finish(Outcome {
            status: 200,
            content_type: JSON_SERVER,
            timings: None,
            prompt_tokens: Some(tokens),
            resp_body: Some(body.clone()),
            resp_bytes: body.len(),
            error_msg: None,
        });
        let r = server_resp(200, body);
        hold.headers_sent(r.headers());
        return r;
    }
    if kind == Kind::Chat && req.messages.as_ref().is_none_or(|m| m.is_empty()) {
        return fail(
            &mut hold,
            400,
            wire::server_error(400, "'messages' is required and must be a non-empty array"),
        );
    }
    if kind == Kind::Text && req.prompt.is_none() {
        return fail(
            &mut hold,
            400,
            wire::server_error(400, "\"prompt\" must be provided"),
        );
    }
    let prompt = if kind == Kind::Chat {
        wire::chat_prompt(req, host.spec.seed)
    } else {
        wire::text_prompt(req, host.spec.seed)
    };
    let n_ctx = rt.spec.n_ctx;
    if prompt.total >= n_ctx {
        return fail(&mut hold, 400, wire::exceed_context(prompt.total, n_ctx));
    }
    // Prompt cache: leading messages identical to the previous request on this model.
    let cached = match rt.cache.lock() {
        Ok(mut c) => {
            let mut n = 0u32;
            for (a, b) in c.iter().zip(prompt.parts.iter()) {
                if a.0 != b.0 {
                    break;
                }
                n += b.1;
            }
            c.clone_from(&prompt.parts);
            n.min(prompt.total.saturating_sub(1))
        }
        Err(_) => 0,
    };
    let room = n_ctx - prompt.total;
    let limit = req.max_tokens().map_or(room, |mt| mt.min(room));
    let seed = prompt.seed ^ req.seed.unwrap_or(0).wrapping_mul(0x9E37_79B9);
    let natural = if req.ignore_eos.unwrap_or(false) {
        None
    } else {
        Some(
            rt.spec
                .reply_tokens
                .unwrap_or_else(|| textgen::natural_len(seed)),
        )
    };
    let plan = textgen::plan(seed, natural, limit, false, &req.stops());
    let timings = Timings::new(
        cached,
        prompt.total - cached,
        rt.spec.prompt_tps,
        plan.predicted_n,
        rt.spec.gen_tps,
    );

    // Queue for a slot.
    let permit = match Arc::clone(&rt.slots).try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            rt.counters.deferred.fetch_add(1, Ordering::Relaxed);
            let p = tokio::select! {
                p = Arc::clone(&rt.slots).acquire_owned() => p.ok(),
                _ = kill.wait_for(|g| *g != gen0) => None,
            };
            rt.counters.deferred.fetch_sub(1, Ordering::Relaxed);
            match p {
                Some(p) => p,
                None => {
                    return fail(
                        &mut hold,
                        502,
                        wire::server_error(502, "upstream process was stopped"),
                    );
                }
            }
        }
    };
    rt.counters.processing.fetch_add(1, Ordering::Relaxed);
    let processing = ProcessingGuard(Arc::clone(&host), m);
    if !sleep_or_killed(
        host.pace_ms(timings.prompt_ms, rt.spec.prompt_tps),
        &mut kill,
        gen0,
    )
    .await
    {
        return fail(
            &mut hold,
            502,
            wire::server_error(502, "upstream process was stopped"),
        );
    }
    rt.counters
        .prompt_tokens
        .fetch_add(u64::from(timings.prompt_n), Ordering::Relaxed);
    rt.counters
        .prompt_us
        .fetch_add((timings.prompt_ms * 1000.0) as u64, Ordering::Relaxed);
    let id_n = host.next_id();
    let id = format!(
        "{}{:016x}{:016x}",
        "chatcmpl-",
        textgen::hash_bytes(host.spec.seed, &id_n.to_le_bytes()),
        id_n
    );
    let created = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    if !req.stream() {
        if !sleep_or_killed(
            host.pace_ms(timings.predicted_ms, rt.spec.gen_tps),
            &mut kill,
            gen0,
        )
        .await
        {
            return fail(
                &mut hold,
                502,
                wire::server_error(502, "upstream process was stopped"),
            );
        }
        let meta = Meta {
            id: &id,
            model: &model_name,
            created,
        };
        let text = plan.text();
        let body = match kind {
            Kind::Chat => wire::chat_response(&meta, &text, plan.finish.as_str(), &timings),
            _ => wire::text_response(&meta, &text, plan.finish.as_str(), &timings),
        };
        count_predicted(rt, &timings);
        drop(processing);
        drop(permit);
        hold.finish(Outcome {
            status: 200,
            content_type: JSON_SERVER,
            timings: Some(timings),
            prompt_tokens: None,
            resp_body: hold.metered().then(|| body.clone()),
            resp_bytes: body.len(),
            error_msg: None,
        });
        let r = server_resp(200, body);
        hold.headers_sent(r.headers());
        return r;
    }

    // Streaming.
    let faults = req_faults.unwrap_or_default();
    let include_usage = req.include_usage();
    let (tx, rx) = mpsc::channel::<Result<Bytes, BodyAborted>>(8);
    let mut r = Response::new(SimBody::Chan(rx));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(SSE));
    r.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("llama.cpp"));
    hold.headers_sent(r.headers());
    let host2 = Arc::clone(&host);
    tokio::spawn(async move {
        let _permit = permit;
        let _processing = processing;
        let rt = &host2.models[m];
        let meta = Meta {
            id: &id,
            model: &model_name,
            created,
        };
        let capture = hold.metered()
            && host2
                .activity
                .lock()
                .map(|a| a.captures_enabled())
                .unwrap_or(false);
        let mut captured: Vec<u8> = Vec::new();
        let mut sent_bytes = 0usize;
        let mut chunks = 0u32;
        let per_token = if rt.spec.gen_tps > 0.0 {
            host2.scaled_ms(1000.0 / rt.spec.gen_tps)
        } else {
            Duration::ZERO
        };
        let gen_start = Instant::now();
        let mut frames: Vec<Bytes> = Vec::with_capacity(plan.pieces.len() + 4);
        if kind == Kind::Chat {
            frames.push(wire::chat_chunk_role(&meta));
        }
        let n_pieces = plan.pieces.len();
        let mut ok = true;
        // Emit: role chunk, one chunk per token (paced), finish, usage, [DONE].
        let mut i = 0usize;
        loop {
            let frame = if let Some(f) = frames.pop() {
                f
            } else if i < n_pieces {
                if !per_token.is_zero() {
                    let due = gen_start + per_token * u32::try_from(i + 1).unwrap_or(u32::MAX);
                    let now = Instant::now();
                    if due > now && !sleep_or_killed(due - now, &mut kill, gen0).await {
                        ok = false;
                        break;
                    }
                }
                let piece = &plan.pieces[i];
                i += 1;
                match kind {
                    Kind::Chat => wire::chat_chunk_content(&meta, piece),
                    _ => wire::text_chunk(&meta, piece, None, None),
                }
            } else {
                break;
            };
            if *kill.borrow() != gen0 {
                ok = false;
                break;
            }
            if let Some(n) = faults.cut_after
                && chunks >= n
            {
                ok = false;
                break;
            }
            if let Some((n, d)) = faults.stall
                && chunks == n
            {
                tokio::time::sleep(d).await;
            }
            chunks += 1;
            sent_bytes += frame.len();
            if capture {
                captured.extend_from_slice(&frame);
            }
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        if !ok {
            abort(&tx).await;
            return;
        }
        let mut tail = Vec::with_capacity(3);
        // Chat: timings on the usage chunk when include_usage is set, else on the finish chunk.
        // Text completions: the finish chunk always carries usage and timings (real llama-server).
        let include_usage = include_usage && kind == Kind::Chat;
        let last_timings = if include_usage { None } else { Some(timings) };
        match kind {
            Kind::Chat => tail.push(wire::chat_chunk_finish(
                &meta,
                plan.finish.as_str(),
                last_timings,
            )),
            _ => tail.push(wire::text_chunk(
                &meta,
                "",
                Some(plan.finish.as_str()),
                last_timings,
            )),
        }
        if include_usage {
            tail.push(wire::chunk_usage(&meta, "chat.completion.chunk", &timings));
        }
        tail.push(Bytes::from_static(wire::DONE));
        for frame in tail {
            if let Some(n) = faults.cut_after
                && chunks >= n
            {
                abort(&tx).await;
                return;
            }
            chunks += 1;
            sent_bytes += frame.len();
            if capture {
                captured.extend_from_slice(&frame);
            }
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        count_predicted(rt, &timings);
        hold.finish(Outcome {
            status: 200,
            content_type: SSE,
            timings: Some(timings),
            prompt_tokens: None,
            resp_body: capture.then(|| Bytes::from(captured)),
            resp_bytes: sent_bytes,
            error_msg: None,
        });
        drop(hold);
    });
    r
}

/// Aborts a stream after letting hyper flush what was already sent (a pending body makes
/// hyper flush its write buffer), so a cut after N chunks really delivers N chunks.
async fn abort(tx: &mpsc::Sender<Result<Bytes, BodyAborted>>) {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let _ = tx.send(Err(BodyAborted("stream cut"))).await;
}

fn count_predicted(rt: &crate::host::ModelRt, t: &Timings) {
    rt.counters
        .predicted
        .fetch_add(u64::from(t.predicted_n), Ordering::Relaxed);
    rt.counters
        .predicted_us
        .fetch_add((t.predicted_ms * 1000.0) as u64, Ordering::Relaxed);
    rt.counters
        .decodes
        .fetch_add(u64::from(t.predicted_n) + 1, Ordering::Relaxed);
}

struct ProcessingGuard(Arc<HostInner>, usize);

impl Drop for ProcessingGuard {
    fn drop(&mut self) {
        self.0.models[self.1]
            .counters
            .processing
            .fetch_sub(1, Ordering::Relaxed);
    }
}
