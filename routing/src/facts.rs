//! The plain-data view of the world a decision is computed from.
//!
//! The gateway maps fleet-core state, provider config and telemetry into these types; the
//! routing core never reads anything else.
//! Numbers that are not finite or are negative are treated as unknown (`None`).

use crate::{LoadState, ModelRef};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// What the routing core needs to know about one request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestFeatures {
    /// The request carries `tools` (function calling).
    pub needs_tools: bool,
    /// The request carries image content parts.
    pub needs_vision: bool,
    /// `response_format` asks for JSON.
    pub json_response: bool,
    /// Cheap estimate of the prompt size in tokens.
    pub est_prompt_tokens: u32,
    /// The request's `max_tokens` (or `max_completion_tokens`), if any.
    pub max_tokens: Option<u32>,
    /// The caller's `X-Boo-Source` attribution, if any.
    pub source: Option<String>,
}

impl RequestFeatures {
    /// Tokens the request needs in one slot: estimated prompt plus `max_tokens`
    /// (0 when the request sets no `max_tokens`).
    pub fn needed_tokens(&self) -> u64 {
        u64::from(self.est_prompt_tokens) + u64::from(self.max_tokens.unwrap_or(0))
    }
}

/// Where a model runs: local GPU hosts run serially per host, cloud work runs in parallel.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// A llama-swap / llama-server host.
    #[default]
    Local,
    /// A cloud API or another gateway.
    Cloud,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Local => "local",
            Lane::Cloud => "cloud",
        })
    }
}

/// Host liveness as seen by the fleet control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    /// The event stream / probes are healthy.
    Connected,
    /// The host was lost and the control plane is reconnecting: ranked last.
    Reconnecting,
    /// The host is down (breaker open): never chosen.
    Down,
    /// Not probed (yet), e.g. a cloud API: treated as usable.
    #[default]
    Unknown,
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Liveness::Connected => "connected",
            Liveness::Reconnecting => "reconnecting",
            Liveness::Down => "down",
            Liveness::Unknown => "unknown",
        })
    }
}

/// What a model can do; `None` means not known (treated as capable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    /// Function calling.
    pub tools: Option<bool>,
    /// Image input.
    pub vision: Option<bool>,
}

/// Everything the router knows about one candidate model on one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateFacts {
    /// Composite id of the model, shared (decisions hold refcounted handles to it instead of
    /// copying the names). Serialized as the plain composite string.
    pub model: Arc<ModelRef>,
    /// Local or cloud lane.
    #[serde(default)]
    pub lane: Lane,
    /// Liveness of the host serving the model.
    #[serde(default)]
    pub liveness: Liveness,
    /// Load state of the model on its host. Map a healthy bare llama-server (which always has
    /// its one model loaded) to `ready`; clouds may stay `unknown` (their lane counts as warm).
    #[serde(default = "unknown_state")]
    pub state: LoadState,
    /// Real per-slot context window (`n_ctx` / slots), if known.
    #[serde(default)]
    pub n_ctx: Option<u32>,
    /// Measured time to load the model (cold start cost), ms.
    #[serde(default)]
    pub load_ms: Option<u64>,
    /// Measured generation speed, tokens/s.
    #[serde(default)]
    pub gen_tps: Option<f64>,
    /// Measured prompt processing speed, tokens/s.
    #[serde(default)]
    pub prompt_tps: Option<f64>,
    /// Estimated queue wait on the host's lane before this request would start, ms.
    #[serde(default)]
    pub queue_wait_ms: Option<u64>,
    /// Price per million input tokens (cloud), in any single currency.
    #[serde(default)]
    pub price_in_per_mtok: Option<f64>,
    /// Price per million output tokens (cloud).
    #[serde(default)]
    pub price_out_per_mtok: Option<f64>,
    /// Free-form tags from the config (`code`, `vision`, ...), matched by `tag:<name>` selectors.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Advisory score 0–100 (see [`crate::score`]), higher is better.
    #[serde(default)]
    pub score: Option<f64>,
    /// Known capabilities.
    #[serde(default)]
    pub capabilities: Capabilities,
}

fn unknown_state() -> LoadState {
    LoadState::Unknown
}

impl CandidateFacts {
    /// Facts with only the id set: lane local, liveness and state unknown, nothing measured.
    pub fn new(model: ModelRef) -> Self {
        Self::shared(Arc::new(model))
    }

    /// Like [`CandidateFacts::new`] with an id the caller already shares.
    pub fn shared(model: Arc<ModelRef>) -> Self {
        Self {
            model,
            lane: Lane::Local,
            liveness: Liveness::Unknown,
            state: LoadState::Unknown,
            n_ctx: None,
            load_ms: None,
            gen_tps: None,
            prompt_tps: None,
            queue_wait_ms: None,
            price_in_per_mtok: None,
            price_out_per_mtok: None,
            tags: Vec::new(),
            score: None,
            capabilities: Capabilities::default(),
        }
    }

    /// True when the model carries `tag` (exact match).
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// Keeps only finite, non-negative measurements.
pub(crate) fn sane(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v >= 0.0)
}

/// Source of candidate facts for a decision.
///
/// Implementations must return the same slice for the same state so decisions stay
/// deterministic; [`FleetView`] is the in-memory implementation.
pub trait FleetFacts {
    /// Every known model, in a stable order (selectors expand in this order).
    fn all(&self) -> &[CandidateFacts];

    /// Index into [`FleetFacts::all`] of `model`, if known. The default is a linear scan.
    fn position(&self, model: &ModelRef) -> Option<usize> {
        self.all().iter().position(|c| *c.model == *model)
    }

    /// Facts for `model`, if known.
    fn get(&self, model: &ModelRef) -> Option<&CandidateFacts> {
        self.position(model).and_then(|i| self.all().get(i))
    }
}

/// In-memory [`FleetFacts`]: facts sorted by composite id, one entry per id.
///
/// Construction order does not matter: the same set of facts gives the same view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Vec<CandidateFacts>", into = "Vec<CandidateFacts>")]
pub struct FleetView {
    facts: Vec<CandidateFacts>,
}

impl FleetView {
    /// Builds a view; when an id appears twice the later entry wins.
    pub fn new(facts: Vec<CandidateFacts>) -> Self {
        let mut facts = facts;
        // Stable sort keeps input order among equal ids, so "later wins" is well defined.
        facts.sort_by(|a, b| a.model.cmp(&b.model));
        let mut out: Vec<CandidateFacts> = Vec::with_capacity(facts.len());
        for f in facts {
            match out.last_mut() {
                Some(last) if last.model == f.model => *last = f,
                _ => out.push(f),
            }
        }
        Self { facts: out }
    }

    /// Inserts or replaces the facts for one model.
    pub fn upsert(&mut self, facts: CandidateFacts) {
        match self.facts.binary_search_by(|c| c.model.cmp(&facts.model)) {
            Ok(i) => self.facts[i] = facts,
            Err(i) => self.facts.insert(i, facts),
        }
    }

    /// Mutable access to one model's facts.
    pub fn get_mut(&mut self, model: &ModelRef) -> Option<&mut CandidateFacts> {
        let i = self.position(model)?;
        self.facts.get_mut(i)
    }

    /// Number of models in the view.
    pub fn len(&self) -> usize {
        self.facts.len()
    }

    /// True when the view holds no model.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }
}

impl From<Vec<CandidateFacts>> for FleetView {
    fn from(v: Vec<CandidateFacts>) -> Self {
        Self::new(v)
    }
}

impl From<FleetView> for Vec<CandidateFacts> {
    fn from(v: FleetView) -> Self {
        v.facts
    }
}

impl FleetFacts for FleetView {
    fn all(&self) -> &[CandidateFacts] {
        &self.facts
    }

    fn position(&self, model: &ModelRef) -> Option<usize> {
        self.facts
            .binary_search_by(|c| c.model.as_ref().cmp(model))
            .ok()
    }
}

#[cfg(test)]
mod tests;
