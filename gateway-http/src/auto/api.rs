//! The routing control API (child module of `proxy`):
//!
//! * `GET /api/routing/policies`, `GET|PUT|DELETE /api/routing/policies/{name}`
//!   (PUT/DELETE change the in-memory set; config-file policies come back on restart);
//! * `GET /api/routing/log[?policy=auto:code]`: recent dispatches, newest first;
//! * `GET /api/routing/scores`: advisory scores per composite model;
//! * `POST /api/routing/explain` with `{"model":"auto:code","prompt_tokens":N,"max_tokens":M}`
//!   (or `"body": <chat request>`): the decision, without sending anything.
//!
//! Every route needs the client API key when the gateway has keys.

use super::*;
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

fn policy_json(auto: &crate::auto::AutoRouter, p: &boo_routing::RoutePolicy) -> serde_json::Value {
    let mut v = serde_json::to_value(p).unwrap_or_default();
    if let Some(o) = auto.origin(&p.name) {
        v["origin"] = serde_json::to_value(o).unwrap_or_default();
    }
    v
}

impl Inner {
    pub(super) async fn routing_api(&self, req: Request<Incoming>) -> Response<RespBody> {
        if !self.authorized(req.headers()) {
            return GatewayError::Unauthorized.to_response();
        }
        let Some(auto) = self.auto.clone() else {
            return api_error(
                404,
                "routing_not_configured",
                "auto:* routing is not configured on this gateway".into(),
            );
        };
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
                match auto.put_policy(&v) {
                    Ok(p) => json_response(&policy_json(&auto, &p)),
                    Err(problems) => {
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
                }
            }
            (Method::DELETE, "policies", Some(name)) => {
                if auto.delete_policy(&name) {
                    json_response(&serde_json::json!({"deleted": name}))
                } else {
                    api_error(
                        404,
                        "policy_not_found",
                        format!("no routing policy named {name:?}"),
                    )
                }
            }
            (Method::GET, "log", None) => {
                let policy = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("policy="))
                    .map(str::to_string);
                let entries: Vec<_> = auto
                    .recent(policy.as_deref())
                    .into_iter()
                    .map(|(p, e)| serde_json::json!({"policy": p, "request_id": e.request_id, "ts": e.ts, "status": e.status, "route": e.route}))
                    .collect();
                json_response(&serde_json::json!({"entries": entries}))
            }
            (Method::GET, "scores", None) => {
                let view = auto.view();
                let rows = boo_routing::advisory_scores(&view, |_| None);
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
