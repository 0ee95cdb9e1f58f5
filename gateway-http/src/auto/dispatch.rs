//! `auto:*` dispatch: decide, then drive `boo_routing::Failover` through the attempts.
//!
//! Declared as a child module of `proxy` (it reuses the single-attempt machinery: header
//! forwarding, `Ctx`, `ProxyStream`). Retries the next candidate on refused/reset, 5xx, 429 or
//! no response head within the attempt's first-byte budget; once a response head has been
//! passed to the client the attempt is committed and a later cut is reported, never retried.

use super::*;
use crate::auto::{AutoError, AutoRouter, RouteTrack};
use boo_routing::{Failover, Final, Outcome, PromptShape, Step, Verdict};

static X_BOO_ROUTE: HeaderName = HeaderName::from_static("x-boo-route");

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An OpenAI-shaped error body with extra `route` detail.
fn route_error(
    status: u16,
    code: &str,
    msg: String,
    route: Option<serde_json::Value>,
) -> Response<RespBody> {
    let mut v = serde_json::json!({"error": {"message": msg, "type": if status >= 500 {"server_error"} else {"invalid_request_error"}, "param": "model", "code": code}});
    if let Some(r) = route {
        v["error"]["route"] = r;
    }
    let mut r = Response::new(full(serde_json::to_vec(&v).unwrap_or_default()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl Inner {
    /// Serves a request naming the virtual model `name` through `auto`'s policies.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn proxy_auto(
        self: &Arc<Self>,
        auto: &Arc<AutoRouter>,
        name: &str,
        parts: &http::request::Parts,
        body: &Bytes,
        span: std::ops::Range<usize>,
        up_path: &'static str,
        peer: SocketAddr,
        rid: &HeaderValue,
        ctx: &mut Ctx,
    ) -> Result<Response<RespBody>, GatewayError> {
        if auto.policies().policies().is_empty() {
            return Err(GatewayError::VirtualNotConfigured {
                model: name.to_string(),
            });
        }
        // Measured straight from the bytes (no `Value` tree for a plain chat body).
        let shape =
            PromptShape::from_slice(body).map_err(|e| GatewayError::InvalidJson(e.to_string()))?;
        let features = auto.features_of(&shape, ctx.source.clone());
        let decision = match auto.decide(name, &features) {
            Ok(d) => d,
            Err(AutoError::UnknownPolicy { name, known }) => {
                ctx.status = 404;
                ctx.error_class = Some("model_not_found");
                ctx.completed = true;
                return Ok(route_error(
                    404,
                    "model_not_found",
                    format!(
                        "no routing policy named {name:?} (known: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                    None,
                ));
            }
        };
        let header = crate::auto::route_header(&decision);
        let mut failover = Failover::new(&decision, now_ms());
        let mut track = RouteTrack::new(auto.clone(), decision, shape);

        loop {
            let plan = match failover.next_attempt(now_ms()) {
                Ok(Step::Try(p)) => p,
                Ok(Step::GiveUp(f)) => {
                    track.failover = Some(failover);
                    let route = track.route_json();
                    ctx.route = Some(Box::new(track));
                    ctx.status = 503;
                    ctx.error_class = Some("no_route");
                    ctx.completed = true;
                    let mut r = route_error(
                        503,
                        "no_route",
                        format!("no candidate of {name:?} could serve the request: {f:?}"),
                        Some(route),
                    );
                    if let Some(h) = header {
                        r.headers_mut().insert(X_BOO_ROUTE.clone(), h);
                    }
                    return Ok(r);
                }
                Err(e) => return Err(GatewayError::Config(format!("route state: {e}"))),
            };
            let composite = plan.model.to_string();
            // Ends the attempt's in-flight count on every path, including a client that goes
            // away mid-attempt (this future is dropped); disarmed once the route track owns it.
            let mut guard = AttemptGuard::start(auto, &plan.model.provider);
            let attempt = self
                .try_candidate(
                    &composite,
                    parts,
                    body,
                    span.clone(),
                    up_path,
                    peer,
                    rid,
                    Waiting {
                        auto,
                        model: &plan.model,
                        failover: &mut failover,
                    },
                )
                .await;
            let (outcome, resp) = match attempt {
                Ok((resp, routed, permit)) => {
                    let s = resp.status().as_u16();
                    (Outcome::Status(s), Some((resp, routed, permit)))
                }
                Err(o) => (o, None),
            };
            if resp.is_none() {
                drop(guard);
                guard = AttemptGuard::none();
            }
            let verdict = failover
                .on_outcome(outcome, now_ms())
                .map_err(|e| GatewayError::Config(format!("route state: {e}")))?;
            match (verdict, resp) {
                (Verdict::Retry, _) => continue,
                (Verdict::Committed | Verdict::Done(_), Some((resp, routed, permit))) => {
                    guard.disarm();
                    track.model = Some(plan.model.clone());
                    track.failover = Some(failover);
                    ctx.route = Some(Box::new(track));
                    return self.stream_back(resp, routed, permit, header, ctx);
                }
                (Verdict::Done(fin), None) => {
                    track.failover = Some(failover);
                    let route = track.route_json();
                    ctx.route = Some(Box::new(track));
                    ctx.status = 503;
                    ctx.error_class = Some("no_route");
                    ctx.completed = true;
                    let why = match fin {
                        Final::Failed { failure, .. } => format!("{failure:?}"),
                        Final::Served { .. } => "served".to_string(),
                    };
                    let mut r = route_error(
                        503,
                        "no_route",
                        format!("every candidate of {name:?} failed: {why}"),
                        Some(route),
                    );
                    if let Some(h) = header {
                        r.headers_mut().insert(X_BOO_ROUTE.clone(), h);
                    }
                    return Ok(r);
                }
                (Verdict::Committed, None) => {
                    return Err(GatewayError::Config(
                        "route state: committed without a response".into(),
                    ));
                }
            }
        }
    }

    /// One attempt: resolve the composite id, send, wait for the response head until the
    /// attempt's first-byte deadline. While waiting, the model's live state is watched: when
    /// the host reports it `starting` (a llama-swap swap), [`Failover::on_model_loading`]
    /// suspends the first-byte budget (if the policy allows cold starts) and `ready` restarts
    /// it ([`Failover::on_model_loaded`]); the total deadline always counts.
    #[allow(clippy::too_many_arguments)]
    async fn try_candidate(
        self: &Arc<Self>,
        composite: &str,
        parts: &http::request::Parts,
        body: &Bytes,
        span: std::ops::Range<usize>,
        up_path: &'static str,
        peer: SocketAddr,
        rid: &HeaderValue,
        w: Waiting<'_>,
    ) -> Result<(Response<UpBody>, Routed, Option<OwnedSemaphorePermit>), Outcome> {
        let routed = self
            .router
            .resolve(composite)
            .map_err(|_| Outcome::Refused)?;
        let up = self
            .upstreams
            .get(&*routed.provider)
            .ok_or(Outcome::Refused)?;
        let new_body = Bytes::from(splice_model(body, span, &routed.wire_model));
        let permit = up.acquire().await.map_err(|_| Outcome::Status(429))?;
        let endpoint = if routed.via_sidecar {
            up.sidecar.as_ref().unwrap_or(&up.main)
        } else {
            &up.main
        };
        let uri = endpoint
            .uri(up_path, parts.uri.query())
            .map_err(|_| Outcome::Refused)?;
        let headers = |f: &mut dyn FnMut(&HeaderName, &HeaderValue)| {
            self.visit_forward_headers(&parts.headers, up, peer, rid, f)
        };
        let fut = up.client.request(Method::POST, uri, &headers, new_body);
        tokio::pin!(fut);
        // One timer for the first-byte deadline (re-armed only when the deadline moves) and
        // the router's shared tick for the load-state checks: no short timer per attempt.
        let mut tick = w.auto.state_tick();
        let mut ticking = true;
        let mut armed = w.failover.first_byte_deadline_ms();
        let mut fired = false;
        let sleep = tokio::time::sleep(until_ms(armed));
        tokio::pin!(sleep);
        loop {
            let now = now_ms();
            let deadline = w.failover.first_byte_deadline_ms();
            if deadline.is_none_or(|d| now >= d) {
                return Err(Outcome::FirstByteTimeout);
            }
            if deadline != armed || fired {
                armed = deadline;
                fired = false;
                sleep.as_mut().reset(tokio::time::Instant::from_std(
                    Instant::now() + until_ms(armed),
                ));
            }
            tokio::select! {
                r = &mut fut => {
                    return match r {
                        Err(e) if e.is_connect() => Err(Outcome::Refused),
                        Err(_) => Err(Outcome::Reset),
                        Ok(r) => Ok((r, routed, permit)),
                    };
                }
                // The timer's clock and the wall clock may differ by a tick: look again.
                () = &mut sleep => fired = true,
                t = tick.changed(), if ticking => {
                    if t.is_err() {
                        ticking = false;
                        continue;
                    }
                    let now = now_ms();
                    // Illegal transitions cannot happen here (the attempt is waiting).
                    let _ = match w.auto.model_state(w.model) {
                        Some(boo_model_ref::LoadState::Starting) => w.failover.on_model_loading(now),
                        Some(boo_model_ref::LoadState::Ready) => w.failover.on_model_loaded(now),
                        _ => Ok(()),
                    };
                }
            }
        }
    }

    /// Streams a committed (or final) upstream response back through a `ProxyStream`.
    fn stream_back(
        self: &Arc<Self>,
        resp: Response<UpBody>,
        routed: Routed,
        permit: Option<OwnedSemaphorePermit>,
        route_header: Option<HeaderValue>,
        ctx: &mut Ctx,
    ) -> Result<Response<RespBody>, GatewayError> {
        let up = self
            .upstreams
            .get(&*routed.provider)
            .ok_or_else(|| GatewayError::ProviderUnavailable {
                provider: routed.provider.to_string(),
            })?
            .clone();
        let series = self.metrics.series(&routed.provider, &routed.model);
        series.in_flight.fetch_add(1, Relaxed);
        ctx.series = Some(series);
        ctx.provider = Some(routed.provider.clone());
        ctx.wire_model = Some(routed.wire_model.clone());
        ctx.status = resp.status().as_u16();
        let t_headers = Instant::now();
        let (rparts, rbody) = resp.into_parts();
        let is_sse = rparts
            .headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| memchr::memmem::find(v.as_bytes(), b"text/event-stream").is_some());
        let mut builder = Response::builder().status(rparts.status);
        if let Some(h) = builder.headers_mut() {
            *h = client_headers(rparts.headers, &up, &routed.model);
            if let Some(v) = route_header {
                h.insert(X_BOO_ROUTE.clone(), v);
            }
        }
        // The client asked for the virtual name; the record keeps it, the route says where it went.
        let overhead = t_headers - ctx.t0;
        ctx.overhead = Some(overhead);
        let stream = ProxyStream::new(rbody, &up.timeouts, is_sse, ctx, permit);
        builder
            .body(RespBody::proxy(Box::new(stream)))
            .map_err(|e| GatewayError::Config(format!("response build failed: {e}")))
    }
}

impl Inner {
    /// The seed's `gateway_error` route variant: a request for a model on a `gateway`-kind
    /// provider that is disabled (`offline`) or that the last poll could not reach
    /// (`unhealthy`) gets a clear 503 — never a silent fallback to another host.
    pub(super) fn gateway_route_error(&self, model: &str) -> Option<Response<RespBody>> {
        let auto = self.auto.as_ref()?;
        let (p, _) = model.split_once('/')?;
        let id: boo_model_ref::ProviderId = p.parse().ok()?;
        let prov = auto.registry().provider(&id)?;
        if prov.kind != boo_provider_registry::ProviderKind::Gateway {
            return None;
        }
        let reason = if !prov.enabled {
            "offline"
        } else if auto.liveness(&id) == boo_routing::Liveness::Down {
            "unhealthy"
        } else {
            return None;
        };
        let v = serde_json::json!({"error": {
            "message": format!("gateway provider {p:?} is {reason}; not falling back to another host"),
            "type": "server_error", "param": "model", "code": "gateway_error", "reason": reason}});
        let mut r = json_response(&v);
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        Some(r)
    }
}

/// Time from now until the epoch-ms `deadline` (zero when passed or unset).
fn until_ms(deadline: Option<u64>) -> Duration {
    Duration::from_millis(deadline.map_or(0, |d| d.saturating_sub(now_ms())))
}

/// What a waiting attempt needs to watch its model load.
struct Waiting<'a> {
    auto: &'a Arc<AutoRouter>,
    model: &'a boo_model_ref::ModelRef,
    failover: &'a mut Failover,
}

/// Counts one attempt in flight on a host until dropped (or disarmed).
struct AttemptGuard {
    held: Option<(Arc<AutoRouter>, boo_model_ref::ProviderId)>,
}

impl AttemptGuard {
    fn start(auto: &Arc<AutoRouter>, provider: &boo_model_ref::ProviderId) -> Self {
        auto.attempt_started(provider);
        Self {
            held: Some((auto.clone(), provider.clone())),
        }
    }

    fn none() -> Self {
        Self { held: None }
    }

    /// The route track ends the attempt instead (with its service time).
    fn disarm(&mut self) {
        self.held = None;
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        if let Some((auto, p)) = self.held.take() {
            auto.attempt_ended(&p, None);
        }
    }
}
