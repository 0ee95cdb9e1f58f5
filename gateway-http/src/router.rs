//! How the gateway turns a requested model id into a provider + wire model, and what it lists.
//!
//! [`ModelRouter`] is the seam: [`crate::RegistryRouter`] implements it on top of
//! `boo_provider_registry::Registry` (the normal case); [`StaticRouter`] is a tiny in-memory
//! table for embedding and tests.

use crate::error::GatewayError;
use std::collections::HashMap;
use std::sync::Arc;

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Provider id (must match an [`crate::UpstreamSpec::provider`]).
    pub provider: Arc<str>,
    /// Composite model id (`provider/model`), reported in `x-boo-model` and telemetry.
    pub model: String,
    /// Model id sent upstream (spliced into the body).
    pub wire_model: String,
    /// Whether to use the provider's sidecar URL.
    pub via_sidecar: bool,
}

/// One entry of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedModel {
    /// Composite (or virtual) id.
    pub id: String,
    /// Provider id (or `boocontrol` for virtual models).
    pub owned_by: String,
}

/// Resolves models and describes what the gateway serves.
pub trait ModelRouter: Send + Sync + 'static {
    /// Resolves the `model` of a request. Must not do IO (it runs on the hot path).
    fn resolve(&self, model: &str) -> Result<Routed, GatewayError>;

    /// Models for `GET /v1/models`.
    fn list_models(&self) -> Vec<ListedModel> {
        Vec::new()
    }

    /// The grouped catalog for `GET /api/models`.
    fn catalog(&self) -> serde_json::Value {
        serde_json::json!({ "sections": [] })
    }

    /// Per-provider reachability for `GET /api/health`.
    fn health(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// A fixed table: composite id `provider/model` → that provider with wire id `model`.
///
/// Any `provider/...` whose provider is in the table resolves (the wire id is the rest);
/// other providers are unknown (400 `model_not_found`).
#[derive(Debug, Clone, Default)]
pub struct StaticRouter {
    providers: HashMap<String, (Arc<str>, Vec<String>)>,
}

impl StaticRouter {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider and the wire models it lists.
    pub fn provider(mut self, id: &str, models: &[&str]) -> Self {
        self.providers.insert(
            id.to_string(),
            (
                Arc::from(id),
                models.iter().map(|m| m.to_string()).collect(),
            ),
        );
        self
    }
}

impl ModelRouter for StaticRouter {
    fn resolve(&self, model: &str) -> Result<Routed, GatewayError> {
        let Some((p, wire)) = model.split_once('/') else {
            return Err(GatewayError::InvalidModel {
                model: model.to_string(),
                reason: "expected provider/model".into(),
            });
        };
        let Some((id, _)) = self.providers.get(p) else {
            let mut known: Vec<&str> = self.providers.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(GatewayError::UnknownProvider {
                model: model.to_string(),
                provider: p.to_string(),
                known: known.join(", "),
            });
        };
        Ok(Routed {
            provider: id.clone(),
            model: model.to_string(),
            wire_model: wire.to_string(),
            via_sidecar: false,
        })
    }

    fn list_models(&self) -> Vec<ListedModel> {
        let mut out: Vec<ListedModel> = self
            .providers
            .iter()
            .flat_map(|(p, (_, ms))| {
                ms.iter().map(move |m| ListedModel {
                    id: format!("{p}/{m}"),
                    owned_by: p.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}
