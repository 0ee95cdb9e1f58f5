//! The routing control API (child module of `proxy`):
//!
//! * `GET /api/routing/policies`, `GET|PUT|DELETE /api/routing/policies/{name}`
//!   (PUT/DELETE persist to the telemetry store when one is configured; see the precedence
//!   rules in [`crate::auto`]: an API policy overrides a config one of the same name, a
//!   config policy without an override cannot be deleted → 409);
//! * `GET /api/routing/log[?policy=auto:code][&limit=N]`: recent dispatches, newest first
//!   (read back from the store's request records, so they survive restarts);
//! * `GET /api/routing/scores`: advisory scores per composite model;
//! * `POST /api/routing/explain` with `{"model":"auto:code","prompt_tokens":N,"max_tokens":M}`
//!   (or `"body": <chat request>`): the decision, without sending anything.
//!
//! Authentication: reads (GET, explain) take a client API key (or the admin token) when the
//! gateway has keys. PUT and DELETE require `gateway.admin_token` when one is set, like the
//! control actions: no or a wrong token → 401, a client API key → 403.

use super::*;
use crate::auto::{Deleted, LOG_PER_POLICY, PolicyChangeError};
use boo_routing::RequestFeatures;

/// Largest accepted control body.
const MAX_API_BODY: usize = 1024 * 1024;

fn json_status(status: u16, v: &serde_json::Value) -> Response<RespBody> {
    let mut r = json_response(v);
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r
}

fn api_error(status: u16, code: &str, msg: String) -> Response<RespBody> {
    json_status(
        status,
        &serde_json::json!({"error": {"message": msg, "type": "invalid_request_error", "param": null, "code": code}}),
    )
}

fn change_error(name: &str, e: PolicyChangeError) -> Response<RespBody> {
    match e {
        PolicyChangeError::NotFound => api_error(
            404,
            "policy_not_found",
            format!("no routing policy named {name:?}"),
        ),
        PolicyChangeError::ConfigOwned => api_error(
            409,
            "policy_in_config",
            format!(
                "routing policy {name:?} comes from the config file and cannot be deleted through \
                 the API; edit the config file (a PUT of the same name overrides it instead)"
            ),
        ),
        PolicyChangeError::Store(e) => {
            tracing::warn!(policy = %name, error = %e, "storing a routing policy failed");
            api_error(
                503,
                "store_unavailable",
                format!("the telemetry store refused the change ({e}); nothing was changed"),
            )
        }
        PolicyChangeError::Invalid(problems) => api_error(
            400,
            "invalid_policy",
            problems
                .iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

fn policy_json(auto: &crate::auto::AutoRouter, p: &boo_routing::RoutePolicy) -> serde_json::Value {
    let mut v = serde_json::to_value(p).unwrap_or_default();
    if let Some(o) = auto.origin(&p.name) {
        v["origin"] = serde_json::to_value(o).unwrap_or_default();
    }
    v
}

/// The bearer token of a request, if any.
fn bearer(h: &HeaderMap) -> Option<&[u8]> {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
}

fn is_admin(auto: &crate::auto::AutoRouter, h: &HeaderMap) -> Option<bool> {
    let token = auto
        .registry()
        .gateway()
        .admin_token
        .as_ref()
        .map(|t| t.expose().as_bytes().to_vec())
        .filter(|t| !t.is_empty())?;
    Some(bearer(h).is_some_and(|b| bool::from(subtle::ConstantTimeEq::ct_eq(b, &token[..]))))
}

impl Inner {
    pub(super) async fn routing_api(&self, req: Request<Incoming>) -> Response<RespBody> {
        let Some(auto) = self.auto.clone() else {
            if !self.authorized(req.headers()) {
                return GatewayError::Unauthorized.to_response();
            }
            return api_error(
                404,
                "routing_not_configured",
                "auto:* routing is not configured on this gateway".into(),
            );
        };
        let admin = is_admin(&auto, req.headers());
        let mutating = matches!(*req.method(), Method::PUT | Method::DELETE);
        match (mutating, admin) {
            // Changing policies needs the admin token when the gateway has one.
            (true, Some(false)) => {
                let (status, code, msg) = if bearer(req.headers()).is_some()
                    && self.authorized(req.headers())
                {
                    (
                        403,
                        "admin_required",
                        "changing routing policies requires the admin token \
                         (Authorization: Bearer <gateway.admin_token>); client API keys may only read",
                    )
                } else {
                    (
                        401,
                        "unauthorized",
                        "changing routing policies requires Authorization: Bearer <gateway.admin_token>",
                    )
                };
                return api_error(status, code, msg.into());
            }
            (_, Some(true)) => {}
            _ => {
                if !self.authorized(req.headers()) {
                    return GatewayError::Unauthorized.to_response();
                }
            }
        }
        let path = req
            .uri()
            .path()
            .trim_start_matches("/api/routing/")
            .to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let method = req.method().clone();
        let (seg, rest) = match path.split_once('/') {
            Some((a, b)) => (a.to_string(), Some(b.to_string())),
            None => (path.clone(), None),
        };
        let read_body = |req: Request<Incoming>| async move {
            match Limited::new(req.into_body(), MAX_API_BODY).collect().await {
                Ok(c) => serde_json::from_slice::<serde_json::Value>(&c.to_bytes()).map_err(|e| {
                    api_error(
                        400,
                        "invalid_json",
                        format!("request body is not valid JSON: {e}"),
                    )
                }),
                Err(e) => Err(api_error(
                    400,
                    "body_read",
                    format!("could not read the request body: {e}"),
                )),
            }
        };
        match (method, seg.as_str(), rest) {
            (Method::GET, "policies", None) => {
                let set = auto.policies();
                let list: Vec<_> = set
                    .policies()
                    .iter()
                    .map(|p| policy_json(&auto, p))
                    .collect();
                json_response(&serde_json::json!({"policies": list}))
            }
            (Method::GET, "policies", Some(name)) => match auto.policies().get(&name) {
                Some(p) => json_response(&policy_json(&auto, p)),
                None => api_error(
                    404,
                    "policy_not_found",
                    format!("no routing policy named {name:?}"),
                ),
            },
            (Method::PUT, "policies", Some(name)) => {
                let mut v = match read_body(req).await {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                if !v.is_object() {
                    return api_error(
                        400,
                        "invalid_policy",
                        "policy: expected a JSON object".into(),
                    );
                }
                match v.get("name").and_then(|n| n.as_str()) {
                    None => v["name"] = serde_json::Value::String(name.clone()),
                    Some(n) if n != name => {
                        return api_error(
                            400,
                            "invalid_policy",
                            format!("policy.name {n:?} does not match the path name {name:?}"),
                        );
                    }
                    Some(_) => {}
                }
                match auto.put_policy(&v).await {
                    Ok(p) => {
                        let mut out = policy_json(&auto, &p);
                        out["overrides_config"] = serde_json::Value::Bool(auto.in_config(&p.name));
                        out["persisted"] = serde_json::Value::Bool(auto.store().is_some());
                        json_response(&out)
                    }
                    Err(PolicyChangeError::Invalid(problems)) => {
                        let msg = problems
                            .iter()
                            .map(|p| format!("{}: {}", p.path, p.message))
                            .collect::<Vec<_>>()
                            .join("; ");
                        let list: Vec<_> = problems
                            .iter()
                            .map(|p| serde_json::json!({"path": p.path, "message": p.message}))
                            .collect();
                        let mut r = serde_json::json!({"error": {"message": msg, "type": "invalid_request_error", "param": "policy", "code": "invalid_policy"}});
                        r["error"]["problems"] = serde_json::Value::Array(list);
                        json_status(400, &r)
                    }
                    Err(e) => change_error(&name, e),
                }
            }
            (Method::DELETE, "policies", Some(name)) => match auto.delete_policy(&name).await {
                Ok(Deleted::Removed) => json_response(&serde_json::json!({"deleted": name})),
                Ok(Deleted::RestoredConfig) => {
                    json_response(&serde_json::json!({"deleted": name, "restored": "config"}))
                }
                Err(e) => change_error(&name, e),
            },
            (Method::GET, "log", None) => {
                let param = |k: &str| {
                    query.split('&').find_map(|kv| {
                        kv.strip_prefix(k)
                            .and_then(|r| r.strip_prefix('='))
                            .map(|v| v.replace("%3A", ":").replace("%3a", ":"))
                    })
                };
                let policy = param("policy");
                let limit = match param("limit") {
                    None => LOG_PER_POLICY,
                    Some(v) => match v.parse::<usize>() {
                        Ok(n) if (1..=1000).contains(&n) => n,
                        _ => {
                            return api_error(
                                400,
                                "invalid_limit",
                                format!("log: limit must be an integer in 1..=1000, got {v:?}"),
                            );
                        }
                    },
                };
                let (entries, err) = auto.dispatch_log(policy.as_deref(), limit).await;
                let entries: Vec<_> = entries
                    .into_iter()
                    .map(|(p, e)| {
                        serde_json::json!({"policy": p, "request_id": e.request_id,
                        "ts": e.ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        "status": e.status, "route": e.route})
                    })
                    .collect();
                let mut out =
                    serde_json::json!({"entries": entries, "stored": auto.store().is_some()});
                if let Some(e) = err {
                    tracing::warn!(error = %e, "reading the dispatch log from the store failed");
                    out["warning"] = serde_json::Value::String(
                        "the store could not be read; showing this process's recent dispatches only"
                            .into(),
                    );
                }
                json_response(&out)
            }
            (Method::GET, "scores", None) => {
                let view = auto.view();
                let rows = boo_routing::advisory_scores(&*view, |_| None);
                json_response(&serde_json::json!({"scores": rows}))
            }
            (Method::POST, "explain", None) => {
                let v = match read_body(req).await {
                    Ok(v) => v,
                    Err(r) => return r,
                };
                let Some(model) = v.get("model").and_then(|m| m.as_str()).map(str::to_string)
                else {
                    return api_error(
                        400,
                        "missing_model",
                        "explain: \"model\" (an auto:* name) is required".into(),
                    );
                };
                let mut features = match v.get("body") {
                    Some(b) => auto.features(b, None),
                    None => RequestFeatures::default(),
                };
                if let Some(n) = v.get("prompt_tokens") {
                    match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                        Some(n) => features.est_prompt_tokens = n,
                        None => {
                            return api_error(
                                400,
                                "invalid_prompt_tokens",
                                "explain: \"prompt_tokens\" must be a non-negative integer".into(),
                            );
                        }
                    }
                }
                if let Some(n) = v.get("max_tokens") {
                    match n.as_u64().and_then(|n| u32::try_from(n).ok()) {
                        Some(n) => features.max_tokens = Some(n),
                        None => {
                            return api_error(
                                400,
                                "invalid_max_tokens",
                                "explain: \"max_tokens\" must be a non-negative integer".into(),
                            );
                        }
                    }
                }
                match auto.decide(&model, &features) {
                    Ok(d) => json_response(&serde_json::json!({
                        "decision": d,
                        "header": d.header_value(),
                        "text": d.to_string(),
                    })),
                    Err(crate::auto::AutoError::UnknownPolicy { name, known }) => api_error(
                        404,
                        "policy_not_found",
                        format!(
                            "no routing policy named {name:?} (known: {})",
                            known.join(", ")
                        ),
                    ),
                }
            }
            (m, _, _) => api_error(
                404,
                "not_found",
                format!("unknown routing route {m} /api/routing/{path}"),
            ),
        }
    }
}
