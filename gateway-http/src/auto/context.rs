//! Model context windows: per-slot `n_ctx` per **composite** model id, and per-model prompt
//! token calibration.
//!
//! Where a window comes from, best first:
//! 1. the host itself: `GET /upstream/<wire>/props` on llama-swap (**only** while the model is
//!    `ready`: llama-swap would load a stopped model to answer it), `GET /props` on
//!    llama-server (`default_generation_settings.n_ctx`, the per-slot window);
//! 2. `context_length` / `meta.n_ctx` from the host's `/v1/models` listing;
//! 3. the config file's `ModelMeta::context_length` override.
//!
//! Entries are keyed by composite id (`desk/qwen` and `laptop/qwen` never share one) and
//! remember the model state they were read in: when the state changes (a reload may come
//! back with another `-c`), the entry is invalid and is read again.

use boo_model_ref::{LoadState, ModelRef};
use boo_provider_registry::ProviderKind;
use boo_routing::{PromptShape, TokenEstimator};
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where a cached context window was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextSource {
    /// The host's `/props` (per-slot `n_ctx` of the running server).
    Props,
    /// The host's `/v1/models` listing (`context_length` or `meta.n_ctx`).
    Listing,
    /// The config file's `ModelMeta::context_length`.
    Config,
}

/// One cached window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ContextEntry {
    /// Per-slot context window in tokens.
    pub n_ctx: u32,
    /// Model state when it was read; a different state invalidates the entry.
    pub state: Option<LoadState>,
    /// Where it came from.
    pub source: ContextSource,
}

/// `n_ctx` per composite model id. Cheap to read on the hot path (one read lock).
#[derive(Debug, Default)]
pub struct ContextCache {
    entries: RwLock<HashMap<ModelRef, ContextEntry>>,
    /// Bumped (under the write lock) by every change: a routing view built after reading
    /// generation `g` holds entries at least that new.
    generation: AtomicU64,
}

impl ContextCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cached window for `model` if it was read in the model's current `state`.
    pub fn get(&self, model: &ModelRef, state: Option<LoadState>) -> Option<ContextEntry> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(model).filter(|e| e.state == state).copied()
    }

    /// Stores a window read in `state`.
    pub fn put(&self, model: ModelRef, entry: ContextEntry) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.insert(model, entry) != Some(entry) {
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes so far (any `put` of a new value or dropped entry bumps it).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Drops entries whose model changed state (or disappeared): `current` gives the state
    /// now, `None` for a model no longer listed. Returns how many were dropped.
    pub fn invalidate_changed(
        &self,
        current: impl Fn(&ModelRef) -> Option<Option<LoadState>>,
    ) -> usize {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        let before = map.len();
        map.retain(|m, e| current(m) == Some(e.state));
        let dropped = before - map.len();
        if dropped > 0 {
            self.generation.fetch_add(1, Ordering::Release);
        }
        dropped
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entry, sorted by composite id (for the API).
    pub fn snapshot(&self) -> Vec<(ModelRef, ContextEntry)> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = map.iter().map(|(k, e)| (k.clone(), *e)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The path to ask a host for a model's `n_ctx`, or `None` when asking could load the model
/// (llama-swap with the model not `ready`) or the kind has no such endpoint (clouds, gateways).
pub fn props_path(
    kind: ProviderKind,
    wire_model: &str,
    state: Option<LoadState>,
) -> Option<String> {
    match kind {
        ProviderKind::LlamaSwap if state == Some(LoadState::Ready) => {
            Some(format!("/upstream/{wire_model}/props"))
        }
        ProviderKind::LlamaServer => Some("/props".to_string()),
        _ => None,
    }
}

/// The per-slot `n_ctx` of a llama-server `/props` body.
pub fn parse_props_n_ctx(body: &[u8]) -> Option<u32> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let n = v
        .pointer("/default_generation_settings/n_ctx")
        .or_else(|| v.get("n_ctx"))?
        .as_u64()?;
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// Per-model chars-per-token estimators, calibrated from the `usage.prompt_tokens` the
/// hosts report. Unknown models use a fleet-wide estimator calibrated from every model.
#[derive(Debug, Default)]
pub struct Calibration {
    inner: RwLock<(TokenEstimator, HashMap<ModelRef, TokenEstimator>)>,
}

impl Calibration {
    /// Fresh estimators.
    pub fn new() -> Self {
        Self::default()
    }

    /// The estimator to use for a request: the fleet-wide one (the model is not chosen yet).
    pub fn fleet(&self) -> TokenEstimator {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).0
    }

    /// The estimator calibrated for one model, if it has seen usage.
    pub fn model(&self, model: &ModelRef) -> Option<TokenEstimator> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        g.1.get(model).copied()
    }

    /// Folds in the prompt tokens a host reported for a body of `shape` served by `model`.
    pub fn observe(&self, model: &ModelRef, shape: &PromptShape, prompt_tokens: u64) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        g.0.observe(shape, prompt_tokens);
        match g.1.get_mut(model) {
            Some(e) => e.observe(shape, prompt_tokens),
            None => {
                g.1.entry(model.clone())
                    .or_default()
                    .observe(shape, prompt_tokens)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> ModelRef {
        s.parse().unwrap()
    }

    #[test]
    fn llama_swap_props_only_when_ready() {
        let k = ProviderKind::LlamaSwap;
        assert_eq!(
            props_path(k, "qwen", Some(LoadState::Ready)).as_deref(),
            Some("/upstream/qwen/props")
        );
        for s in [
            None,
            Some(LoadState::Stopped),
            Some(LoadState::Starting),
            Some(LoadState::Unknown),
        ] {
            assert_eq!(props_path(k, "qwen", s), None, "{s:?}");
        }
        assert_eq!(
            props_path(ProviderKind::LlamaServer, "x", None).as_deref(),
            Some("/props")
        );
        assert_eq!(
            props_path(ProviderKind::Openai, "x", Some(LoadState::Ready)),
            None
        );
    }

    #[test]
    fn props_body_gives_per_slot_ctx() {
        let b = br#"{"default_generation_settings":{"n_ctx":4096},"total_slots":4}"#;
        assert_eq!(parse_props_n_ctx(b), Some(4096));
        assert_eq!(parse_props_n_ctx(b"{}"), None);
        assert_eq!(parse_props_n_ctx(b"not json"), None);
        assert_eq!(
            parse_props_n_ctx(br#"{"default_generation_settings":{"n_ctx":0}}"#),
            None
        );
    }

    #[test]
    fn cache_is_per_composite_id_and_invalidated_by_state_change() {
        let c = ContextCache::new();
        let ready = Some(LoadState::Ready);
        c.put(
            m("a/qwen"),
            ContextEntry {
                n_ctx: 4096,
                state: ready,
                source: ContextSource::Props,
            },
        );
        c.put(
            m("b/qwen"),
            ContextEntry {
                n_ctx: 32768,
                state: ready,
                source: ContextSource::Props,
            },
        );
        assert_eq!(c.get(&m("a/qwen"), ready).map(|e| e.n_ctx), Some(4096));
        assert_eq!(c.get(&m("b/qwen"), ready).map(|e| e.n_ctx), Some(32768));
        // Read in another state: not served.
        assert_eq!(c.get(&m("a/qwen"), Some(LoadState::Stopped)), None);
        // a/qwen stopped, b/qwen unchanged.
        let dropped = c.invalidate_changed(|x| {
            Some(if x.provider.as_str() == "a" {
                Some(LoadState::Stopped)
            } else {
                ready
            })
        });
        assert_eq!(dropped, 1);
        assert_eq!(c.len(), 1);
        assert!(c.get(&m("b/qwen"), ready).is_some());
    }

    #[test]
    fn calibration_moves_the_estimate_toward_observed_usage() {
        let cal = Calibration::new();
        let body = serde_json::json!({"messages":[{"role":"user","content":"x".repeat(8000)}]});
        let shape = PromptShape::of(&body);
        let before = cal.fleet().estimate(&shape);
        // The host says this is 1,000 tokens (8 chars/token): estimates must shrink.
        for _ in 0..10 {
            cal.observe(&m("a/qwen"), &shape, 1_000);
        }
        let after = cal.fleet().estimate(&shape);
        assert!(after < before, "{after} < {before}");
        assert!(cal.model(&m("a/qwen")).is_some());
        assert!(cal.model(&m("b/qwen")).is_none());
    }
}
