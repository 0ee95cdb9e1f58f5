//! [`RegistryRouter`]: the normal [`ModelRouter`], on top of `boo_provider_registry::Registry`,
//! with a light inventory poller (`GET /v1/models` of each enabled llama-* / gateway provider;
//! that route never loads a model) that feeds `/v1/models`, `/api/models` and `/api/health`.

use crate::error::GatewayError;
use crate::router::{ListedModel, ModelRouter, Routed};
use crate::upstream::{UpstreamSpec, UpstreamTimeouts, build_client};
use boo_model_ref::{Catalog, Inventory, InventoryModel, LoadState, normalize_favorites};
use boo_provider_registry::{ProviderKind, Registry, ResolveError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Supplies the raw favorites list (e.g. from settings) for `/api/models`.
pub trait FavoritesSource: Send + Sync + 'static {
    /// Raw favorite ids, as stored.
    fn favorites(&self) -> Vec<String>;
}

impl<F: Fn() -> Vec<String> + Send + Sync + 'static> FavoritesSource for F {
    fn favorites(&self) -> Vec<String> {
        self()
    }
}

/// Reachability of one provider, as seen by the inventory poller.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct ProviderHealth {
    reachable: Option<bool>,
    last_error: Option<String>,
    models: usize,
    checked_at: Option<String>,
}

/// The registry-backed router (see the module docs).
pub struct RegistryRouter {
    registry: Arc<Registry>,
    ids: HashMap<String, Arc<str>>,
    inventory: RwLock<Arc<Inventory>>,
    health: RwLock<HashMap<String, ProviderHealth>>,
    favorites: Box<dyn FavoritesSource>,
    /// Resolved composite ids (`provider/model` of a configured provider): their route
    /// depends only on the registry, which a router never changes (a reload builds a new
    /// router), so each id is parsed and resolved once.
    composite: RwLock<HashMap<Box<str>, Routed>>,
}

/// Most composite ids remembered per router (later ones are resolved every time).
const COMPOSITE_CACHE: usize = 4096;

impl std::fmt::Debug for RegistryRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryRouter")
            .field("providers", &self.ids.len())
            .finish_non_exhaustive()
    }
}

/// Upstream specs for every enabled provider of `registry` (secrets exposed only into the
/// upstream's sensitive header values).
pub fn upstream_specs(registry: &Registry) -> Vec<UpstreamSpec> {
    registry
        .providers()
        .iter()
        .filter(|p| p.enabled)
        .map(|p| UpstreamSpec {
            provider: p.id.to_string(),
            base_url: p.base_url.clone(),
            base_includes_version: p.kind.base_includes_version(),
            sidecar_url: p.sidecar.as_ref().map(|s| s.url.clone()),
            headers: p
                .upstream_headers()
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_string()))
                .collect(),
            has_api_key: p.api_key.is_some(),
            timeouts: UpstreamTimeouts {
                connect: p.timeouts.connect,
                first_byte: p.timeouts.first_byte,
                idle: p.timeouts.idle,
                total: p.timeouts.total,
            },
            max_concurrency: p.max_concurrency,
        })
        .collect()
}

impl RegistryRouter {
    /// A router over `registry`, with an inventory holding only the static models of
    /// `openai` providers (and sidecar models) until the first poll.
    pub fn new(registry: Arc<Registry>) -> Self {
        let ids = registry
            .providers()
            .iter()
            .map(|p| (p.id.to_string(), Arc::from(p.id.as_str())))
            .collect();
        let mut inv = Inventory::new();
        for p in registry.providers().iter().filter(|p| p.enabled) {
            inv.set_provider(p.id.clone(), static_models(p));
        }
        Self {
            registry,
            ids,
            inventory: RwLock::new(Arc::new(inv)),
            health: RwLock::new(HashMap::new()),
            composite: RwLock::new(HashMap::new()),
            favorites: Box::new(Vec::new),
        }
    }

    /// Sets where `/api/models` reads favorites from.
    pub fn with_favorites(mut self, f: impl FavoritesSource) -> Self {
        self.favorites = Box::new(f);
        self
    }

    /// The registry this router resolves with.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Whether the last poll reached `provider` (`None`: not polled yet, not configured, or
    /// a cloud provider); the `reachable` field of `/health` without building the JSON.
    pub fn reachable(&self, provider: &str) -> Option<bool> {
        let p = self
            .registry
            .providers()
            .iter()
            .find(|p| p.id.as_str() == provider)?;
        if p.kind == ProviderKind::Openai {
            return None;
        }
        let health = self.health.read().unwrap_or_else(|e| e.into_inner());
        health.get(provider)?.reachable
    }

    /// The current inventory snapshot.
    pub fn inventory(&self) -> Arc<Inventory> {
        self.inventory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Polls `GET /v1/models` of every enabled llama-swap, llama-server and gateway provider
    /// once, concurrently, and swaps in the new inventory. Unreachable providers keep their
    /// last known models and are marked unreachable.
    pub async fn poll_once(&self) {
        let polled = futures::future::join_all(
            self.registry
                .providers()
                .iter()
                .filter(|p| p.enabled && p.kind != ProviderKind::Openai)
                .map(|p| async move { (p, fetch_models(p).await) }),
        )
        .await;
        let mut inv = (*self.inventory()).clone();
        let mut health = self
            .health
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let now = chrono::Utc::now().to_rfc3339();
        for (p, res) in polled {
            let h = health.entry(p.id.to_string()).or_default();
            h.checked_at = Some(now.clone());
            match res {
                Ok(mut models) => {
                    for s in static_models(p) {
                        if !models.iter().any(|m| m.id == s.id) {
                            models.push(s);
                        }
                    }
                    h.reachable = Some(true);
                    h.last_error = None;
                    h.models = models.len();
                    inv.set_provider(p.id.clone(), models);
                }
                Err(e) => {
                    h.reachable = Some(false);
                    h.last_error = Some(e);
                }
            }
        }
        *self.inventory.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(inv);
        *self.health.write().unwrap_or_else(|e| e.into_inner()) = health;
    }

    /// Polls now and then every `every`, until the returned task is aborted.
    pub fn spawn_poller(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.poll_once().await;
                tokio::time::sleep(every).await;
            }
        })
    }
}

/// Static models from the config: `openai` providers' lists, and sidecar models.
fn static_models(p: &boo_provider_registry::Provider) -> Vec<InventoryModel> {
    let mut out: Vec<InventoryModel> = Vec::new();
    if p.kind == ProviderKind::Openai {
        out.extend(p.models.iter().map(|m| InventoryModel {
            id: m.id.clone(),
            state: None,
            context_length: m.context_length,
        }));
    }
    if let Some(s) = &p.sidecar {
        out.extend(
            s.models
                .iter()
                .filter(|m| !out.iter().any(|o| &o.id == *m))
                .map(InventoryModel::new)
                .collect::<Vec<_>>(),
        );
    }
    out
}

/// `GET {base}/v1/models` with the provider's headers; never an inference route.
async fn fetch_models(p: &boo_provider_registry::Provider) -> Result<Vec<InventoryModel>, String> {
    let client = build_client(p.timeouts.connect).map_err(|e| e.to_string())?;
    let base = p.base_url.trim_end_matches('/');
    let url = if p.kind.base_includes_version() {
        format!("{base}/models")
    } else {
        format!("{base}/v1/models")
    };
    let mut req = http::Request::get(url.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    for (k, v) in p.upstream_headers() {
        if let (Ok(n), Ok(mut val)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_str(v.expose()),
        ) {
            val.set_sensitive(true);
            req.headers_mut().insert(n, val);
        }
    }
    let fut = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET /v1/models answered {}", resp.status()));
        }
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("read failed: {e}"))?
            .to_bytes();
        parse_models(&body)
    };
    tokio::time::timeout(p.timeouts.connect + Duration::from_secs(10), fut)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Parses an OpenAI/llama-swap `/v1/models` list into inventory models.
fn parse_models(body: &[u8]) -> Result<Vec<InventoryModel>, String> {
    #[derive(serde::Deserialize)]
    struct List {
        data: Vec<Rec>,
    }
    #[derive(serde::Deserialize)]
    struct Rec {
        id: String,
        status: Option<Status>,
        context_length: Option<u32>,
        meta: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Status {
        value: Option<String>,
    }
    let list: List =
        serde_json::from_slice(body).map_err(|e| format!("bad /v1/models body: {e}"))?;
    Ok(list
        .data
        .into_iter()
        .map(|r| InventoryModel {
            state: r.status.and_then(|s| s.value).map(|v| match v.as_str() {
                "loaded" | "ready" => LoadState::Ready,
                "loading" | "starting" => LoadState::Starting,
                "unloaded" | "stopped" => LoadState::Stopped,
                _ => LoadState::Unknown,
            }),
            context_length: r.context_length.or_else(|| {
                let m = r.meta.as_ref()?;
                m.get("n_ctx")
                    .or_else(|| m.get("n_ctx_train"))?
                    .as_u64()
                    .map(|n| n as u32)
            }),
            id: r.id,
        })
        .collect())
}

impl ModelRouter for RegistryRouter {
    fn resolve(&self, model: &str) -> Result<Routed, GatewayError> {
        if let Some(r) = self
            .composite
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(model)
        {
            return Ok(r.clone());
        }
        let inv = self.inventory();
        match self.registry.resolve(model, Some(&inv)) {
            Ok(r) => {
                let provider = match self.ids.get(r.provider.as_str()) {
                    Some(p) => p.clone(),
                    None => Arc::from(r.provider.as_str()),
                };
                let routed = Routed {
                    provider,
                    model: r.model.to_string(),
                    wire_model: r.wire_model,
                    via_sidecar: r.target.via_sidecar,
                };
                // Only ids that name a configured provider; bare ids follow the inventory.
                let composite = model
                    .split_once('/')
                    .is_some_and(|(p, _)| self.ids.contains_key(p) && routed.model == model);
                if composite {
                    let mut c = self.composite.write().unwrap_or_else(|e| e.into_inner());
                    if c.len() < COMPOSITE_CACHE {
                        c.insert(model.into(), routed.clone());
                    }
                }
                Ok(routed)
            }
            Err(ResolveError::Malformed(e)) => Err(GatewayError::InvalidModel {
                model: model.to_string(),
                reason: e.to_string(),
            }),
            Err(ResolveError::Virtual(v)) => {
                Err(GatewayError::VirtualNotConfigured { model: v.name() })
            }
            Err(ResolveError::UnknownProvider { provider, known }) => {
                Err(GatewayError::UnknownProvider {
                    model: model.to_string(),
                    provider,
                    known: known.join(", "),
                })
            }
            Err(ResolveError::ProviderDisabled { provider })
            | Err(ResolveError::GatewayOffline { provider }) => {
                Err(GatewayError::ProviderUnavailable { provider })
            }
            Err(e) => Err(GatewayError::InvalidModel {
                model: model.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    fn list_models(&self) -> Vec<ListedModel> {
        let inv = self.inventory();
        let mut out = Vec::new();
        for p in self.registry.providers().iter().filter(|p| p.enabled) {
            for m in inv.models(&p.id) {
                out.push(ListedModel {
                    id: format!("{}/{}", p.id, m.id),
                    owned_by: p.id.to_string(),
                });
            }
        }
        out
    }

    fn catalog(&self) -> serde_json::Value {
        let inv = self.inventory();
        let (favs, _rejected) = normalize_favorites(&self.favorites.favorites(), &*self.registry);
        let cat = Catalog::grouped(&inv, &favs, &*self.registry);
        serde_json::to_value(cat).unwrap_or_default()
    }

    fn health(&self) -> serde_json::Value {
        let health = self.health.read().unwrap_or_else(|e| e.into_inner());
        let list: Vec<serde_json::Value> = self
            .registry
            .providers()
            .iter()
            .map(|p| {
                let h = health.get(p.id.as_str()).cloned().unwrap_or_default();
                serde_json::json!({
                    "id": p.id.as_str(),
                    "kind": p.kind.as_str(),
                    "enabled": p.enabled,
                    "reachable": if p.kind == ProviderKind::Openai { None } else { h.reachable },
                    "last_error": h.last_error,
                    "models": h.models,
                    "checked_at": h.checked_at,
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_llama_swap_models() {
        let body = br#"{"object":"list","data":[{"id":"qwen","object":"model","owned_by":"llama-swap","status":{"value":"loaded"},"context_length":32768},{"id":"bge","status":{"value":"unloaded"}},{"id":"legacy"}]}"#;
        let m = parse_models(body).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].state, Some(LoadState::Ready));
        assert_eq!(m[0].context_length, Some(32768));
        assert_eq!(m[1].state, Some(LoadState::Stopped));
        assert_eq!(m[2].state, None);
        assert!(parse_models(b"{}").is_err());
    }

    fn router(doc: &str) -> RegistryRouter {
        let reg = boo_provider_registry::from_json_str(doc, &boo_provider_registry::MapEnv::new())
            .unwrap()
            .registry;
        RegistryRouter::new(Arc::new(reg))
    }

    #[test]
    fn composite_ids_are_resolved_once_and_bare_ids_follow_the_inventory() {
        let r = router(
            r#"{"providers":[
                {"id":"a","kind":"llama-server","base_url":"http://127.0.0.1:1",
                 "sidecar":{"url":"http://127.0.0.1:2","models":["emb"]}},
                {"id":"off","kind":"llama-server","base_url":"http://127.0.0.1:3","enabled":false}]}"#,
        );
        let first = r.resolve("a/qwen").unwrap();
        assert_eq!((&*first.provider, first.wire_model.as_str()), ("a", "qwen"));
        assert_eq!(r.resolve("a/qwen").unwrap(), first);
        assert!(r.resolve("a/emb").unwrap().via_sidecar);
        assert!(!r.resolve("a/qwen").unwrap().via_sidecar);
        // Errors are never remembered.
        assert!(r.resolve("off/qwen").is_err());
        assert!(r.resolve("off/qwen").is_err());
        assert!(r.resolve("nobody/qwen").is_err());
        assert_eq!(r.composite.read().unwrap().len(), 2);
        // A bare id resolves through the inventory and is not cached.
        let mut inv = Inventory::new();
        inv.set_provider(
            "a".parse().unwrap(),
            vec![InventoryModel {
                id: "bare-one".into(),
                state: None,
                context_length: None,
            }],
        );
        *r.inventory.write().unwrap() = Arc::new(inv);
        assert_eq!(r.resolve("bare-one").unwrap().model, "a/bare-one");
        assert_eq!(r.composite.read().unwrap().len(), 2);
    }
}
