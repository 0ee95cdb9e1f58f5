//! Embedding boocontrol's routing in your own hyper service, as a library.
//!
//! This service does not proxy anything: `POST /route` takes an OpenAI-style request body and
//! answers where boocontrol would send it (provider, wire model, upstream URL, lane), using the
//! same pieces the gateway uses on its hot path: [`boo_gateway_http::skim`] to find the
//! top-level `model` without deserializing the body, and `Registry::resolve`.
//!
//! ```text
//! cargo run --example embed_routing -- [--config boocontrol.json] [--listen 127.0.0.1:9504]
//! curl -s localhost:9504/route -d '{"model":"embedding/deepseek-r1-qwen3-8b","messages":[]}'
//! ```
//! Without `--config` it uses a built-in two-host registry.

use anyhow::Context as _;
use boo_provider_registry::{ConfigSource, ProcessEnv, Registry, ResolveError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;

const BUILTIN: &str = r#"{ "providers": [
  { "id": "sam-desktop", "kind": "llama-swap", "base_url": "http://127.0.0.1:8080", "default": true },
  { "id": "embedding", "kind": "llama-swap", "base_url": "http://127.0.0.1:8090",
    "sidecar": { "url": "http://127.0.0.1:8091", "models": ["bge-m3"] } }
] }"#;

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Where would this request go?
fn route(reg: &Registry, body: &[u8]) -> Response<Full<Bytes>> {
    let model = match boo_gateway_http::skim(body) {
        Ok(s) => match s.model {
            Some(m) => m.into_owned(),
            None => {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({"error": "missing model"}),
                );
            }
        },
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": e.to_string()}),
            );
        }
    };
    match reg.resolve(&model, None) {
        Ok(r) => json(
            StatusCode::OK,
            serde_json::json!({
                "model": r.model.to_string(),
                "provider": r.provider.as_str(),
                "wire_model": r.wire_model,
                "lane": r.lane.to_string(),
                "url": r.target.url_for("/v1/chat/completions"),
                "via_sidecar": r.target.via_sidecar,
            }),
        ),
        Err(ResolveError::Virtual(v)) => json(
            StatusCode::NOT_IMPLEMENTED,
            serde_json::json!({"error": format!("{} needs a routing policy", v.name())}),
        ),
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": e.to_string()}),
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut listen) = (None, "127.0.0.1:9504".to_string());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next(),
            "--listen" => listen = args.next().context("--listen needs an address")?,
            other => anyhow::bail!("unknown argument {other:?} (use --config FILE, --listen ADDR)"),
        }
    }
    let registry = match config {
        Some(path) => {
            boo_provider_registry::load(ConfigSource::File(path.into()), &ProcessEnv)?.registry
        }
        None => boo_provider_registry::from_json_str(BUILTIN, &ProcessEnv)?.registry,
    };
    let registry = Arc::new(registry);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    println!("embed_routing on http://{listen}: POST /route with an OpenAI request body");
    loop {
        let (stream, _) = listener.accept().await?;
        let reg = registry.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let reg = reg.clone();
                async move {
                    if req.uri().path() != "/route" {
                        return Ok::<_, Infallible>(json(
                            StatusCode::NOT_FOUND,
                            serde_json::json!({"error": "POST /route"}),
                        ));
                    }
                    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
                        Ok(b) => b.to_bytes(),
                        Err(_) => {
                            return Ok(json(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                serde_json::json!({"error": "body too large"}),
                            ));
                        }
                    };
                    Ok(route(&reg, &body))
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
