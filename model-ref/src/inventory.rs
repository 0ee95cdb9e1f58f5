//! What each provider currently serves, and the registry view used to interpret it.

use serde::{Deserialize, Serialize};

use crate::{ModelRef, ProviderId};

/// Load state of one model on one host, as reported by llama-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadState {
    /// Loaded and answering.
    Ready,
    /// Being loaded.
    Starting,
    /// Being unloaded.
    Stopping,
    /// Known but not loaded.
    Stopped,
    /// Failed to load or crashed.
    Error,
    /// The host reported a state we do not recognise.
    Unknown,
}

/// One model a provider serves, by wire id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryModel {
    /// The wire model id (what the provider calls it).
    pub id: String,
    /// Load state when known.
    pub state: Option<LoadState>,
    /// Context window in tokens when known.
    pub context_length: Option<u32>,
}

impl InventoryModel {
    /// A model with unknown state and context length.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            state: None,
            context_length: None,
        }
    }
}

/// What each provider currently serves; provider insertion order is preserved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    providers: Vec<(ProviderId, Vec<InventoryModel>)>,
}

impl Inventory {
    /// An empty inventory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces what `provider` serves (keeps its position if already present).
    pub fn set_provider(&mut self, provider: ProviderId, models: Vec<InventoryModel>) {
        if let Some(slot) = self.providers.iter_mut().find(|(p, _)| *p == provider) {
            slot.1 = models;
        } else {
            self.providers.push((provider, models));
        }
    }

    /// The models `provider` serves (empty when unknown).
    pub fn models(&self, provider: &ProviderId) -> &[InventoryModel] {
        self.providers
            .iter()
            .find(|(p, _)| p == provider)
            .map_or(&[], |(_, m)| m.as_slice())
    }

    /// Whether `provider` lists `wire_model`.
    pub fn serves(&self, provider: &ProviderId, wire_model: &str) -> bool {
        self.models(provider).iter().any(|m| m.id == wire_model)
    }

    /// Every provider that lists `wire_model`, in inventory order.
    pub fn providers_serving(&self, wire_model: &str) -> Vec<&ProviderId> {
        self.providers
            .iter()
            .filter(|(_, ms)| ms.iter().any(|m| m.id == wire_model))
            .map(|(p, _)| p)
            .collect()
    }

    /// The load state of a composite model, `None` when not listed or state unknown.
    pub fn state(&self, model: &ModelRef) -> Option<LoadState> {
        self.models(&model.provider)
            .iter()
            .find(|m| m.id == model.model)
            .and_then(|m| m.state)
    }

    /// The providers present, in order.
    pub fn providers(&self) -> impl Iterator<Item = &ProviderId> {
        self.providers.iter().map(|(p, _)| p)
    }
}

/// What model-ref needs to know about the provider registry (implemented by
/// `boo_provider_registry::Registry`; tests use small in-memory views).
pub trait RegistryView {
    /// Enabled provider ids in registry order.
    fn provider_ids(&self) -> Vec<ProviderId>;
    /// The default provider (legacy bare ids belong to it).
    fn default_provider(&self) -> Option<ProviderId>;
    /// Human label of a provider.
    fn provider_label(&self, id: &ProviderId) -> Option<String>;
}
