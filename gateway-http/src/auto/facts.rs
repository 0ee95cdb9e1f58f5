//! Fleet facts for routing decisions: liveness and model state from a [`LiveFleet`] source,
//! context windows from the [`ContextCache`], tags and prices from the registry.
//!
//! [`LiveFleet`] is the seam the fleet hub replaces: until live fleet state lands, the
//! gateway's inventory poller (`/v1/models` `status.value` plus per-host reachability)
//! implements it.

use super::context::{ContextCache, ContextEntry, ContextSource, parse_props_n_ctx, props_path};
use boo_model_ref::{Inventory, LoadState, ModelRef, ProviderId};
use boo_provider_registry::{Lane as RegLane, ProviderKind, Registry};
use boo_routing::{CandidateFacts, FleetView, Lane, Liveness};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::sync::Arc;
use std::time::Duration;

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
}

/// Builds the routing view: one entry per (enabled provider, listed model).
///
/// Cloud (`openai`) models are always `ready`; a listed local model without a state is
/// `unknown`. `n_ctx` comes from the cache (read in the current state), then the listing,
/// then the config override.
/// `own_wait` adds the gateway's own queue wait estimate per host (the larger one is used).
pub fn fleet_view(
    registry: &Registry,
    live: &dyn LiveFleet,
    contexts: &ContextCache,
    own_wait: &dyn Fn(&ProviderId) -> Option<u64>,
) -> FleetView {
    let inv = live.inventory();
    let mut facts = Vec::new();
    for p in registry.providers().iter().filter(|p| p.enabled) {
        let liveness = live.liveness(&p.id);
        let queue = match (live.queue_wait_ms(&p.id), own_wait(&p.id)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
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
            c.liveness = liveness;
            c.queue_wait_ms = queue;
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
                jobs.push(async move {
                    let r = fetch_props(&base, &path, timeout).await;
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

async fn fetch_props(base: &str, path: &str, timeout: Duration) -> Result<u32, String> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let fut = async {
        let resp = client
            .get(uri)
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
