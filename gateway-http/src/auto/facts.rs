//! Fleet facts for routing decisions: liveness and model state from a [`LiveFleet`] source,
//! context windows from the [`ContextCache`], tags and prices from the registry.
//!
//! [`LiveFleet`] is the seam: [`super::HubFleet`] implements it over the live fleet hub,
//! [`super::PollerFleet`] over the gateway's inventory poller (`/v1/models` `status.value`
//! plus per-host reachability) when the control plane is off.

use super::context::{ContextCache, ContextEntry, ContextSource, parse_props_n_ctx, props_path};
use boo_model_ref::{Inventory, LoadState, ModelRef, ProviderId};
use boo_provider_registry::{Lane as RegLane, ProviderKind, Registry};
use boo_routing::{CandidateFacts, FleetView, Lane, Liveness};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Measured speed of a model on its host, tokens/s.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Speed {
    /// Generation speed.
    pub gen_tps: Option<f64>,
    /// Prompt processing speed.
    pub prompt_tps: Option<f64>,
}

/// Live per-host state the router needs. Must not do IO (called per `auto:*` request).
pub trait LiveFleet: Send + Sync + 'static {
    /// What each host serves right now, with model states.
    fn inventory(&self) -> Arc<Inventory>;
    /// Whether a host is reachable.
    fn liveness(&self, provider: &ProviderId) -> Liveness;
    /// Estimated queue wait on a host, if known.
    fn queue_wait_ms(&self, _provider: &ProviderId) -> Option<u64> {
        None
    }
    /// Measured times to load models on their hosts (cold-start costs), ms, if any are known.
    /// Called once per decision; keep it cheap (an `Arc` clone).
    fn load_times(&self) -> Option<Arc<HashMap<ModelRef, u64>>> {
        None
    }
}

/// Builds the routing view: one entry per (enabled provider, listed model).
///
/// Cloud (`openai`) models are always `ready`; a listed local model without a state is
/// `unknown`. `n_ctx` comes from the cache (read in the current state), then the listing,
/// then the config override.
/// `own_wait` adds the gateway's own queue wait estimate per host (the larger one is used);
/// `speed` gives the measured (generation, prompt) tokens/s of a composite model.
pub fn fleet_view(
    registry: &Registry,
    live: &dyn LiveFleet,
    contexts: &ContextCache,
    own_wait: &dyn Fn(&ProviderId) -> Option<u64>,
    speed: &dyn Fn(&ModelRef) -> Option<Speed>,
) -> FleetView {
    let inv = live.inventory();
    let loads = live.load_times();
    let hosts = host_facts(registry, live, own_wait);
    build_view(registry, &inv, loads.as_deref(), &hosts, contexts, speed)
}

/// Liveness and queue wait of a host, as they enter the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostFacts {
    pub(crate) liveness: Liveness,
    pub(crate) queue_wait_ms: Option<u64>,
}

/// [`HostFacts`] of every enabled provider, in registry order.
pub(crate) fn host_facts(
    registry: &Registry,
    live: &dyn LiveFleet,
    own_wait: &dyn Fn(&ProviderId) -> Option<u64>,
) -> Vec<HostFacts> {
    registry
        .providers()
        .iter()
        .filter(|p| p.enabled)
        .map(|p| HostFacts {
            liveness: live.liveness(&p.id),
            queue_wait_ms: match (live.queue_wait_ms(&p.id), own_wait(&p.id)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        })
        .collect()
}

/// The view from its inputs: `hosts` as [`host_facts`] gives them (registry order).
pub(crate) fn build_view(
    registry: &Registry,
    inv: &Inventory,
    loads: Option<&HashMap<ModelRef, u64>>,
    hosts: &[HostFacts],
    contexts: &ContextCache,
    speed: &dyn Fn(&ModelRef) -> Option<Speed>,
) -> FleetView {
    let mut facts = Vec::new();
    for (p, host) in registry.providers().iter().filter(|p| p.enabled).zip(hosts) {
        let lane = match p.lane {
            RegLane::Local => Lane::Local,
            RegLane::Cloud => Lane::Cloud,
        };
        for im in inv.models(&p.id) {
            let Ok(model) = ModelRef::new(p.id.clone(), im.id.clone()) else {
                continue;
            };
            let meta = p.models.iter().find(|m| m.id == im.id);
            let mut c = CandidateFacts::new(model);
            c.lane = lane;
            c.liveness = host.liveness;
            c.queue_wait_ms = host.queue_wait_ms;
            c.load_ms = loads.and_then(|l| l.get(&c.model).copied());
            if let Some(sp) = speed(&c.model) {
                c.gen_tps = sp.gen_tps;
                c.prompt_tps = sp.prompt_tps;
            }
            c.state = match (p.kind, im.state) {
                (ProviderKind::Openai | ProviderKind::Gateway, None) => LoadState::Ready,
                (_, Some(s)) => s,
                (_, None) => LoadState::Unknown,
            };
            c.n_ctx = contexts
                .get(&c.model, im.state)
                .map(|e| e.n_ctx)
                .or(im.context_length)
                .or(meta.and_then(|m| m.context_length));
            if let Some(m) = meta {
                c.tags = m.tags.clone();
                c.price_in_per_mtok = m.input_price_per_mtok;
                c.price_out_per_mtok = m.output_price_per_mtok;
            }
            facts.push(c);
        }
    }
    FleetView::new(facts)
}

/// Reads `n_ctx` from the hosts for every listed local model whose cache entry is missing or
/// stale, without ever loading a model (see [`props_path`]). Returns how many were read.
///
/// Runs off the hot path (after each inventory poll). A failed read leaves the entry absent
/// (the listing or config value is used meanwhile).
pub async fn refresh_contexts(
    registry: &Registry,
    inv: &Inventory,
    contexts: &ContextCache,
) -> usize {
    contexts.invalidate_changed(|m| {
        inv.models(&m.provider)
            .iter()
            .find(|x| x.id == m.model)
            .map(|x| x.state)
    });
    let mut jobs = Vec::new();
    for p in registry.providers().iter().filter(|p| p.enabled) {
        for im in inv.models(&p.id) {
            let Ok(model) = ModelRef::new(p.id.clone(), im.id.clone()) else {
                continue;
            };
            if contexts.get(&model, im.state).is_some() {
                continue;
            }
            // A sidecar model is served by a llama-server at the sidecar URL.
            let (kind, base) = match &p.sidecar {
                Some(s) if s.models.iter().any(|m| m == &im.id) => {
                    (ProviderKind::LlamaServer, s.url.clone())
                }
                _ => (p.kind, p.base_url.clone()),
            };
            if let Some(path) = props_path(kind, &im.id, im.state) {
                let timeout = p.timeouts.connect + Duration::from_secs(5);
                let mut headers: Vec<(String, String)> = p
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                    .collect();
                if let Some(key) = &p.api_key {
                    headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
                }
                jobs.push(async move {
                    let r = fetch_props(&base, &path, &headers, timeout).await;
                    (model, im.state, r)
                });
            } else if let Some(n) = im.context_length {
                contexts.put(
                    model,
                    ContextEntry {
                        n_ctx: n,
                        state: im.state,
                        source: ContextSource::Listing,
                    },
                );
            } else if let Some(n) = p
                .models
                .iter()
                .find(|m| m.id == im.id)
                .and_then(|m| m.context_length)
            {
                contexts.put(
                    model,
                    ContextEntry {
                        n_ctx: n,
                        state: im.state,
                        source: ContextSource::Config,
                    },
                );
            }
        }
    }
    let mut read = 0;
    for (model, state, r) in futures::future::join_all(jobs).await {
        match r {
            Ok(n) => {
                read += 1;
                contexts.put(
                    model,
                    ContextEntry {
                        n_ctx: n,
                        state,
                        source: ContextSource::Props,
                    },
                );
            }
            Err(e) => tracing::debug!(model = %model, error = %e, "context lookup failed"),
        }
    }
    read
}

/// The client for context lookups: the gateway's rustls-capable client (https providers
/// work; no OpenSSL), built once.
fn props_client() -> Option<&'static crate::upstream::HttpClient> {
    static CLIENT: std::sync::OnceLock<Option<crate::upstream::HttpClient>> =
        std::sync::OnceLock::new();
    CLIENT
        .get_or_init(
            || match crate::upstream::build_client(Duration::from_secs(5)) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "context lookup client could not be built");
                    None
                }
            },
        )
        .as_ref()
}

/// `GET base + path` with the provider's headers; the per-slot `n_ctx` of the body.
/// Errors never include header values (they may hold keys).
pub(crate) async fn fetch_props(
    base: &str,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<u32, String> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let client = props_client().ok_or("no HTTP client")?;
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let mut req = http::Request::new(http_body_util::Full::new(Bytes::new()));
    *req.uri_mut() = uri;
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            req.headers_mut().insert(k, v);
        }
    }
    let fut = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("{path} answered {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("read failed: {e}"))?
            .to_bytes();
        parse_props_n_ctx(&body).ok_or_else(|| format!("{path}: no n_ctx in the body"))
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An `https://` provider gets a TLS handshake (the old plain-HTTP client refused the
    /// scheme without connecting).
    #[tokio::test]
    async fn context_lookups_speak_tls_to_https_providers() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.unwrap();
            b[0]
        });
        let r = fetch_props(
            &format!("https://{addr}"),
            "/props",
            &[],
            Duration::from_secs(2),
        )
        .await;
        assert!(r.is_err());
        // 0x16: a TLS handshake record (ClientHello).
        assert_eq!(server.await.unwrap(), 0x16);
    }

    /// Plain http providers get the provider's headers (e.g. its API key) on `/props`.
    #[tokio::test]
    async fn context_lookups_send_the_provider_headers() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let body = r#"{"default_generation_settings":{"n_ctx":8192}}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).to_lowercase()
        });
        let r = fetch_props(
            &format!("http://{addr}"),
            "/props",
            &[("authorization".into(), "Bearer sk-host".into())],
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(r, Ok(8192));
        let head = server.await.unwrap();
        assert!(head.starts_with("get /props "), "{head}");
        assert!(head.contains("authorization: bearer sk-host"), "{head}");
    }
}
