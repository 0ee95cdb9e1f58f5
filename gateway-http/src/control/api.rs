//! HTTP handlers of the control API (wire contract in the module docs of `control`).

use super::{ControlApi, HostKind, now_ms};
use base64::Engine as _;
use boo_fleet_core::Action;
use boo_telemetry_store::NewCapture;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::PoisonError;
use std::task::{Context, Poll};
use tokio::sync::{broadcast, mpsc};

/// Largest accepted action body.
const MAX_ACTION_BODY: usize = 64 * 1024;
/// Each capture body is trimmed to this many bytes.
pub const CAPTURE_BODY_CAP: usize = 256 * 1024;
/// Default and maximum `tail` of `/api/logs/{provider}`.
const DEFAULT_TAIL: usize = 200;
const MAX_TAIL: usize = 2_000;

/// Response body of the control API: a buffer or a live SSE stream.
pub struct ControlBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl std::fmt::Debug for ControlBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlBody")
    }
}

impl Body for ControlBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut self.get_mut().kind {
            Kind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.kind, Kind::Full(None))
    }
}

fn json_resp(status: u16, v: &Value) -> Response<ControlBody> {
    let mut r = Response::new(ControlBody {
        kind: Kind::Full(Some(Bytes::from(v.to_string()))),
    });
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error(status: u16, kind: &str, message: &str) -> Response<ControlBody> {
    json_resp(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
    )
}

fn sse_resp(rx: mpsc::Receiver<Bytes>) -> Response<ControlBody> {
    let mut r = Response::new(ControlBody {
        kind: Kind::Stream(rx),
    });
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

fn sse_event(event: &str, data: &impl serde::Serialize) -> Bytes {
    let body = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("event: {event}\ndata: {body}\n\n"))
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl ControlApi {
    /// Whether `path` is a control-API route (the gateway hands these to [`ControlApi::handle`]).
    pub fn serves(path: &str) -> bool {
        path == "/api/fleet"
            || ["/api/fleet/", "/api/logs/", "/api/captures/", "/api/hosts/"]
                .iter()
                .any(|p| path.starts_with(p))
    }

    /// Answers a control-API request, or `None` when the path is not a control route (so the
    /// gateway can route it elsewhere).
    pub async fn handle<B>(&self, req: Request<B>) -> Option<Response<ControlBody>>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path().to_owned();
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        let resp = match (method.clone(), segs.as_slice()) {
            (Method::GET, ["api", "fleet"]) => json_resp(200, &json!(self.shared.hub.snapshot())),
            (Method::GET, ["api", "fleet", "stream"]) => self.fleet_stream(),
            (Method::GET, ["api", "logs", p]) => self.logs(p, req.uri().query()),
            (Method::GET, ["api", "logs", p, "stream"]) => self.log_stream(p, req.uri().query()),
            (Method::GET, ["api", "captures", p, id]) => self.capture(p, id).await,
            (Method::POST, ["api", "hosts", p, "actions"]) => {
                let p = (*p).to_owned();
                self.action(&p, req).await
            }
            (_, ["api", "fleet" | "logs" | "captures" | "hosts", ..]) => error(
                404,
                "not_found_error",
                &format!("no control route {method} {path}"),
            ),
            _ => return None,
        };
        Some(resp)
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        use subtle::ConstantTimeEq as _;
        let Some(token) = self.shared.cfg.admin_token.as_deref() else {
            return true;
        };
        let Some(given) = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        bool::from(given.as_bytes().ct_eq(token.as_bytes()))
    }

    fn unknown_host(&self, p: &str) -> Response<ControlBody> {
        let mut known: Vec<&str> = self.shared.hosts.keys().map(String::as_str).collect();
        known.sort_unstable();
        error(
            404,
            "not_found_error",
            &format!(
                "unknown provider {p:?} (followed hosts: {})",
                known.join(", ")
            ),
        )
    }

    fn fleet_stream(&self) -> Response<ControlBody> {
        let hub = self.shared.hub.clone();
        let beat = self.shared.cfg.heartbeat;
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let (snap, mut sub) = hub.subscribe();
        let mut events = hub.subscribe_events();
        tokio::spawn(async move {
            if tx.send(sse_event("snapshot", &snap)).await.is_err() {
                return;
            }
            drop(snap);
            let mut hb = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
            loop {
                let msg = tokio::select! {
                    r = sub.recv() => match r {
                        Ok(d) => sse_event("delta", &d),
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            let (s, fresh) = hub.subscribe();
                            sub = fresh;
                            sse_event("snapshot", &s)
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    e = events.recv() => match e {
                        Ok(e) => Bytes::from(format!("event: {}\ndata: {}\n\n", e.event, e.data)),
                        Err(broadcast::error::RecvError::Lagged(n)) => Bytes::from(format!(": {n} events dropped\n\n")),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = hb.tick() => Bytes::from_static(b": heartbeat\n\n"),
                    () = tx.closed() => return,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        sse_resp(rx)
    }

    fn logs(&self, p: &str, query: Option<&str>) -> Response<ControlBody> {
        if !self.shared.hosts.contains_key(p) {
            return self.unknown_host(p);
        }
        let tail = match parse_tail(query, DEFAULT_TAIL) {
            Ok(n) => n,
            Err(msg) => return error(400, "invalid_request_error", &msg),
        };
        let lines: Vec<Value> = self
            .shared
            .hub
            .log_tail(p, tail)
            .into_iter()
            .map(|l| json!({"source": l.source, "line": l.text}))
            .collect();
        json_resp(200, &json!({"provider": p, "lines": lines}))
    }

    fn log_stream(&self, p: &str, query: Option<&str>) -> Response<ControlBody> {
        if !self.shared.hosts.contains_key(p) {
            return self.unknown_host(p);
        }
        let n = match parse_tail(query, MAX_TAIL) {
            Ok(n) => n,
            Err(msg) => return error(400, "invalid_request_error", &msg),
        };
        let (tail, mut sub) = self.shared.hub.subscribe_logs(p, n);
        let beat = self.shared.cfg.heartbeat;
        let provider = p.to_owned();
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        tokio::spawn(async move {
            for l in tail {
                let ev = sse_event("log", &json!({"source": l.source, "line": l.text}));
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
            let mut hb = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
            loop {
                let msg = tokio::select! {
                    r = sub.recv() => match r {
                        Ok(l) if *l.provider == *provider => {
                            sse_event("log", &json!({"source": l.line.source, "line": l.line.text}))
                        }
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(n)) => Bytes::from(format!(": {n} log lines dropped\n\n")),
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = hb.tick() => Bytes::from_static(b": heartbeat\n\n"),
                    () = tx.closed() => return,
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        });
        sse_resp(rx)
    }

    async fn capture(&self, p: &str, id: &str) -> Response<ControlBody> {
        let Some(host) = self.shared.hosts.get(p) else {
            return self.unknown_host(p);
        };
        let Ok(num) = id.parse::<u64>() else {
            return error(
                400,
                "invalid_request_error",
                &format!("id: expected a capture (activity) id, got {id:?}"),
            );
        };
        let request_id = format!("host:{p}:{num}");
        if let Some(store) = &self.shared.store
            && let Ok(found) = store.captures_for_request(&request_id).await
            && let Some(c) = found.last()
            && let Ok(v) = serde_json::from_str::<Value>(&c.body)
        {
            return json_resp(200, &v);
        }
        if host.kind != HostKind::LlamaSwap {
            return error(
                404,
                "not_found_error",
                "captures exist on llama-swap hosts only",
            );
        }
        let url = format!("{}/api/captures/{num}", host.base_url);
        let a = match self.shared.client.get(&url, &host.headers).await {
            Ok(a) => a,
            Err(e) => return error(502, "upstream_error", &format!("host {p}: {e}")),
        };
        match a.status {
            200 => {}
            404 => {
                return error(
                    404,
                    "not_found_error",
                    &format!("capture {num} not found on {p}"),
                );
            }
            s => return error(502, "upstream_error", &format!("host {p} answered {s}")),
        }
        let raw: Value = match serde_json::from_slice(&a.body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    502,
                    "upstream_error",
                    &format!("host {p}: capture is not JSON: {e}"),
                );
            }
        };
        let mut truncated = false;
        let mut body = |field: &str| -> Value {
            let Some(b64) = raw.get(field).and_then(Value::as_str) else {
                return Value::Null;
            };
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
                return Value::Null;
            };
            let text = String::from_utf8_lossy(&bytes);
            if text.len() > CAPTURE_BODY_CAP {
                truncated = true;
                let mut end = CAPTURE_BODY_CAP;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                Value::String(text[..end].to_owned())
            } else {
                Value::String(text.into_owned())
            }
        };
        let req_body = body("req_body");
        let resp_body = body("resp_body");
        let out = json!({
            "id": num,
            "provider": p,
            "req_path": raw.get("req_path").cloned().unwrap_or(Value::Null),
            "req_headers": raw.get("req_headers").cloned().unwrap_or_else(|| json!({})),
            "resp_headers": raw.get("resp_headers").cloned().unwrap_or_else(|| json!({})),
            "req_body": req_body,
            "resp_body": resp_body,
            "truncated": truncated,
        });
        if let Some(store) = &self.shared.store {
            let row = NewCapture {
                request_id,
                provider_id: p.to_owned(),
                ts: chrono::Utc::now(),
                body: out.to_string(),
            };
            // Room for both trimmed bodies plus headers, so the stored JSON stays whole.
            if let Err(e) = store.insert_capture(&row, 3 * CAPTURE_BODY_CAP).await {
                tracing::warn!(provider = %p, error = %e, "storing capture failed");
            }
        }
        json_resp(200, &out)
    }

    async fn action<B>(&self, p: &str, req: Request<B>) -> Response<ControlBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !self.authorized(&req) {
            return error(
                401,
                "authentication_error",
                "this endpoint requires Authorization: Bearer <gateway.admin_token>",
            );
        }
        let Some(ha) = self.shared.actions.get(p).cloned() else {
            return self.unknown_host(p);
        };
        let confirmed = query_param(req.uri().query(), "confirm") == Some("true");
        let bytes = match Limited::new(req.into_body(), MAX_ACTION_BODY)
            .collect()
            .await
        {
            Ok(c) => c.to_bytes(),
            Err(e) => {
                return error(400, "invalid_request_error", &format!("body: {e}"));
            }
        };
        let mut action: Action = match serde_json::from_slice(&bytes) {
            Ok(a) => a,
            Err(e) => {
                return error(
                    400,
                    "invalid_request_error",
                    &format!(
                        "body: expected {{\"action\":\"warm\"|\"unload\"|\"unload_all\",\"model\":\"...\"}}: {e}"
                    ),
                );
            }
        };
        if let Action::Warm { model } | Action::Unload { model } = &mut action {
            // Accept the composite id of this host; the host wants its bare wire id.
            if let Some(bare) = model.strip_prefix(p).and_then(|r| r.strip_prefix('/')) {
                *model = bare.to_owned();
            }
            if model.trim().is_empty() {
                return error(400, "invalid_request_error", "model: must not be empty");
            }
        }
        self.sync_lease(p);
        let Some(host) = self.shared.hub.host(p) else {
            return self.unknown_host(p);
        };
        let submitted = ha
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .submit(action.clone(), &host, confirmed, now_ms());
        match submitted {
            Ok(s) => {
                ha.wake.notify_one();
                json_resp(
                    202,
                    &json!({"accepted": true, "provider": p, "action": action, "position": s.position}),
                )
            }
            Err(e) => json_resp(e.http_status(), &e.to_json_body()),
        }
    }
}

/// Serves only the control API (404 for anything else) until `shutdown`.
pub(crate) async fn serve<F>(api: ControlApi, listener: tokio::net::TcpListener, shutdown: F)
where
    F: std::future::Future<Output = ()> + Send,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let api = api.clone();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let api = api.clone();
                    async move {
                        Ok::<_, Infallible>(match api.handle(req).await {
                            Some(r) => r,
                            None => error(404, "not_found_error", "not a control API route"),
                        })
                    }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), svc).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        }
    }
}

/// The `tail` query parameter of the log endpoints (capped at [`MAX_TAIL`]), or the message of
/// the 400 naming it.
fn parse_tail(query: Option<&str>, default: usize) -> Result<usize, String> {
    match query_param(query, "tail") {
        None => Ok(default),
        Some(t) => t
            .parse::<usize>()
            .map(|n| n.min(MAX_TAIL))
            .map_err(|_| format!("tail: expected a non-negative integer, got {t:?}")),
    }
}
