//! The validated registry and model resolution.

use boo_model_ref::{Inventory, ModelId, ModelRef, ProviderId, RegistryView};
use serde_json::Value;

use crate::{GatewaySettings, Provider, ProviderKind, Resolution, ResolveError, Target};

/// A validated set of providers plus gateway settings. Build it with
/// [`load`](crate::load) or [`from_json_str`](crate::from_json_str).
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub(crate) providers: Vec<Provider>,
    pub(crate) default_idx: usize,
    pub(crate) gateway: GatewaySettings,
    pub(crate) policies: Vec<Value>,
    pub(crate) store: Option<String>,
    pub(crate) default_model: Option<String>,
}

impl Registry {
    /// All providers in file order, disabled ones included.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The provider with this id.
    pub fn provider(&self, id: &ProviderId) -> Option<&Provider> {
        self.providers.iter().find(|p| &p.id == id)
    }

    /// The default provider (enabled; exactly one).
    pub fn default_provider(&self) -> &Provider {
        &self.providers[self.default_idx]
    }

    /// Gateway settings.
    pub fn gateway(&self) -> &GatewaySettings {
        &self.gateway
    }

    /// The raw `policies` array (validated by `boo-routing`).
    pub fn policies(&self) -> &[Value] {
        &self.policies
    }

    /// Telemetry store URL (`sqlite:...`, `postgres://...`), when configured.
    pub fn store(&self) -> Option<&str> {
        self.store.as_deref()
    }

    /// The default model (`default_model` / legacy `DEFAULT_MODEL`), as written.
    pub fn default_model(&self) -> Option<&str> {
        self.default_model.as_deref()
    }

    /// Resolves a client model string to a provider, wire model and upstream target.
    ///
    /// Rules, in order:
    /// 1. `auto`/`auto:<policy>` → [`ResolveError::Virtual`]; malformed → [`ResolveError::Malformed`].
    /// 2. A first segment naming a configured provider → that provider (disabled →
    ///    [`ResolveError::ProviderDisabled`], or [`ResolveError::GatewayOffline`] for a
    ///    `gateway` kind, which never falls back to another host).
    /// 3. A string with `/` whose first segment is no provider is treated as a legacy bare id
    ///    only when some enabled provider serves or lists it; otherwise
    ///    [`ResolveError::UnknownProvider`] listing the known providers.
    /// 4. A legacy bare id → the default provider if it serves/lists it, else the single
    ///    enabled provider that serves/lists it, else the default provider.
    ///
    /// "Serves" uses `inventory` when given; "lists" uses the static `models` of the config.
    ///
    /// # Errors
    /// See the rules above.
    pub fn resolve(
        &self,
        model: &str,
        inventory: Option<&Inventory>,
    ) -> Result<Resolution, ResolveError> {
        match ModelId::parse(model)? {
            ModelId::Virtual(v) => Err(ResolveError::Virtual(v)),
            ModelId::Composite(r) => {
                if self.provider(&r.provider).is_some() {
                    return self.endpoint(&r);
                }
                self.bare_with_slash(model, r.provider.as_str(), inventory)
            }
            ModelId::Bare(bare) => match bare.split_once('/') {
                Some((first, _)) => self.bare_with_slash(&bare, first, inventory),
                None => self.bare(&bare, inventory),
            },
        }
    }

    fn bare_with_slash(
        &self,
        model: &str,
        first: &str,
        inventory: Option<&Inventory>,
    ) -> Result<Resolution, ResolveError> {
        if self.enabled().any(|p| self.has(p, model, inventory)) {
            return self.bare(model, inventory);
        }
        Err(ResolveError::UnknownProvider {
            provider: first.to_owned(),
            known: self.providers.iter().map(|p| p.id.to_string()).collect(),
        })
    }

    fn enabled(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter().filter(|p| p.enabled)
    }

    fn has(&self, p: &Provider, wire: &str, inventory: Option<&Inventory>) -> bool {
        p.lists(wire) || inventory.is_some_and(|inv| inv.serves(&p.id, wire))
    }

    fn bare(&self, wire: &str, inventory: Option<&Inventory>) -> Result<Resolution, ResolveError> {
        let default = self.default_provider();
        let chosen = if self.has(default, wire, inventory) {
            default
        } else {
            let mut holders = self.enabled().filter(|p| self.has(p, wire, inventory));
            match (holders.next(), holders.next()) {
                (Some(only), None) => only,
                _ => default,
            }
        };
        Ok(self.resolution(chosen, wire))
    }

    /// The endpoint for a composite reference, for direct one-shot calls (titles,
    /// summaries, compaction) that must route like the gateway does.
    ///
    /// # Errors
    /// [`ResolveError::UnknownProvider`], [`ResolveError::ProviderDisabled`] or
    /// [`ResolveError::GatewayOffline`].
    pub fn endpoint(&self, model: &ModelRef) -> Result<Resolution, ResolveError> {
        let Some(p) = self.provider(&model.provider) else {
            return Err(ResolveError::UnknownProvider {
                provider: model.provider.to_string(),
                known: self.providers.iter().map(|p| p.id.to_string()).collect(),
            });
        };
        if !p.enabled {
            return Err(if p.kind == ProviderKind::Gateway {
                ResolveError::GatewayOffline {
                    provider: p.id.to_string(),
                }
            } else {
                ResolveError::ProviderDisabled {
                    provider: p.id.to_string(),
                }
            });
        }
        Ok(self.resolution(p, &model.model))
    }

    fn resolution(&self, p: &Provider, wire: &str) -> Resolution {
        let sidecar = p
            .sidecar
            .as_ref()
            .filter(|s| s.models.iter().any(|m| m == wire));
        let target = match sidecar {
            Some(s) => Target {
                base_url: s.url.clone(),
                via_sidecar: true,
                kind: ProviderKind::LlamaServer,
                headers: p.upstream_headers(),
            },
            None => Target {
                base_url: p.base_url.clone(),
                via_sidecar: false,
                kind: p.kind,
                headers: p.upstream_headers(),
            },
        };
        Resolution {
            provider: p.id.clone(),
            model: ModelRef {
                provider: p.id.clone(),
                model: wire.to_owned(),
            },
            wire_model: wire.to_owned(),
            kind: p.kind,
            lane: p.lane,
            target,
        }
    }
}

impl RegistryView for Registry {
    fn provider_ids(&self) -> Vec<ProviderId> {
        self.enabled().map(|p| p.id.clone()).collect()
    }

    fn default_provider(&self) -> Option<ProviderId> {
        Some(Registry::default_provider(self).id.clone())
    }

    fn provider_label(&self, id: &ProviderId) -> Option<String> {
        self.provider(id).map(|p| p.label.clone())
    }
}
