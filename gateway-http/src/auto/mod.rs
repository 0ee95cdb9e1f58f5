//! Virtual `auto:*` models: policy decisions over live fleet facts, model context windows, a
//! recent-decision log, and policy management for the control API.
//!
//! The proxy asks [`AutoRouter::decide`] for a [`Decision`] when a request names `auto:*`,
//! then drives `boo_routing::Failover` through its attempts (see `proxy.rs`). Everything here
//! is IO-free on the hot path: context windows are read off the hot path by
//! [`AutoRouter::refresh`] after each inventory poll.

pub mod context;
pub mod facts;

pub use context::{Calibration, ContextCache, ContextEntry, ContextSource};
pub use facts::{LiveFleet, fleet_view, refresh_contexts};

use boo_model_ref::{Inventory, ProviderId};
use boo_provider_registry::Registry;
use boo_routing::{
    Decision, FleetView, Liveness, PolicySet, Problem, RequestFeatures, RoutePolicy, RoutingError,
};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

/// How many recent decisions the log keeps per policy.
pub const LOG_PER_POLICY: usize = 100;

/// Where a policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOrigin {
    /// The config file's `policies` array.
    Config,
    /// Set through the API (kept in memory; lost on restart).
    Api,
}

/// One recent `auto:*` dispatch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogEntry {
    /// Request id.
    pub request_id: String,
    /// Start time, RFC 3339.
    pub ts: String,
    /// HTTP status the client got (0 while streaming).
    pub status: u16,
    /// The decision and failover report (the telemetry record's `route`).
    pub route: serde_json::Value,
}

/// Routing state for `auto:*` requests.
pub struct AutoRouter {
    registry: Arc<Registry>,
    live: Arc<dyn LiveFleet>,
    contexts: ContextCache,
    calibration: Calibration,
    policies: RwLock<Arc<PolicySet>>,
    origins: RwLock<HashMap<String, PolicyOrigin>>,
    log: Mutex<HashMap<String, VecDeque<LogEntry>>>,
    load: Mutex<HashMap<ProviderId, HostLoad>>,
}

/// `auto:*` attempts in flight on one host and their mean service time.
#[derive(Debug, Clone, Copy, Default)]
struct HostLoad {
    in_flight: u32,
    mean_ms: Option<f64>,
}

/// Service time assumed for a host before any `auto:*` request finished there.
const DEFAULT_SERVICE_MS: f64 = 30_000.0;

impl std::fmt::Debug for AutoRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AutoRouter")
            .field("policies", &self.policies().names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why an `auto:*` request could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AutoError {
    /// No policy has that name.
    UnknownPolicy {
        /// The name asked for.
        name: String,
        /// Known names.
        known: Vec<String>,
    },
}

impl AutoRouter {
    /// Routing over `registry`'s policies (invalid ones are logged and left out) with live
    /// facts from `live`. Returns the router and the problems found in the config policies.
    pub fn new(registry: Arc<Registry>, live: Arc<dyn LiveFleet>) -> (Self, Vec<Problem>) {
        let (set, problems) = PolicySet::from_json(registry.policies());
        for p in &problems {
            tracing::warn!(path = %p.path, problem = %p.message, "route policy ignored");
        }
        let origins = set
            .names()
            .map(|n| (n.to_string(), PolicyOrigin::Config))
            .collect();
        (
            Self {
                registry,
                live,
                contexts: ContextCache::new(),
                calibration: Calibration::new(),
                policies: RwLock::new(Arc::new(set)),
                origins: RwLock::new(origins),
                log: Mutex::new(HashMap::new()),
                load: Mutex::new(HashMap::new()),
            },
            problems,
        )
    }

    /// The registry.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The current policies.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where a policy came from.
    pub fn origin(&self, name: &str) -> Option<PolicyOrigin> {
        self.origins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
    }

    /// The context cache.
    pub fn contexts(&self) -> &ContextCache {
        &self.contexts
    }

    /// Prompt-token calibration.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Current fleet facts.
    pub fn view(&self) -> FleetView {
        let wait = |p: &ProviderId| self.queue_wait_ms(p);
        fleet_view(&self.registry, &*self.live, &self.contexts, &wait)
    }

    /// Queue wait estimate for a host with a `max_concurrency`: when this gateway's `auto:*`
    /// attempts in flight there reach the limit, the next one waits about
    /// `(in_flight - limit + 1) × mean service time` (30 s until one finished).
    /// Direct (composite-id) traffic is not counted.
    pub fn queue_wait_ms(&self, provider: &ProviderId) -> Option<u64> {
        let limit = self.registry.provider(provider)?.max_concurrency?;
        let g = self.load.lock().unwrap_or_else(|e| e.into_inner());
        let l = g.get(provider)?;
        if l.in_flight < limit {
            return Some(0);
        }
        let n = f64::from(l.in_flight - limit + 1);
        Some((n * l.mean_ms.unwrap_or(DEFAULT_SERVICE_MS)) as u64)
    }

    /// An attempt on `provider` started.
    pub(crate) fn attempt_started(&self, provider: &ProviderId) {
        let mut g = self.load.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(provider.clone()).or_default().in_flight += 1;
    }

    /// An attempt on `provider` ended; `served_ms` when it served the request.
    pub(crate) fn attempt_ended(&self, provider: &ProviderId, served_ms: Option<f64>) {
        let mut g = self.load.lock().unwrap_or_else(|e| e.into_inner());
        let l = g.entry(provider.clone()).or_default();
        l.in_flight = l.in_flight.saturating_sub(1);
        if let Some(ms) = served_ms {
            l.mean_ms = Some(match l.mean_ms {
                Some(m) => 0.8 * m + 0.2 * ms,
                None => ms,
            });
        }
    }

    /// Decides for the virtual model `name`. Pure given the current facts.
    pub fn decide(&self, name: &str, req: &RequestFeatures) -> Result<Decision, AutoError> {
        let set = self.policies();
        let view = self.view();
        set.decide(name, req, &view).map_err(|e| match e {
            RoutingError::UnknownPolicy { name, known } => AutoError::UnknownPolicy { name, known },
            other => AutoError::UnknownPolicy {
                name: other.to_string(),
                known: Vec::new(),
            },
        })
    }

    /// Features of a request body (prompt size from the calibrated fleet-wide estimator).
    pub fn features(&self, body: &serde_json::Value, source: Option<String>) -> RequestFeatures {
        RequestFeatures::from_body(body, &self.calibration.fleet(), source)
    }

    /// Liveness of a host as the live source sees it.
    pub fn liveness(&self, provider: &ProviderId) -> Liveness {
        self.live.liveness(provider)
    }

    /// Re-reads stale context windows (after an inventory poll). Never loads a model.
    pub async fn refresh(&self) -> usize {
        let inv: Arc<Inventory> = self.live.inventory();
        refresh_contexts(&self.registry, &inv, &self.contexts).await
    }

    /// Adds or replaces a policy (API-managed, in memory).
    ///
    /// # Errors
    /// Every problem of the policy, with JSON paths.
    pub fn put_policy(&self, value: &serde_json::Value) -> Result<RoutePolicy, Vec<Problem>> {
        let p = boo_routing::policy::parse_policy(value, "policy")?;
        let mut g = self.policies.write().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<RoutePolicy> = g
            .policies()
            .iter()
            .filter(|q| q.name != p.name)
            .cloned()
            .collect();
        all.push(p.clone());
        let set = PolicySet::new(all).map_err(|e| match e {
            RoutingError::InvalidPolicy { problems } => problems,
            other => vec![Problem::new("policy".to_string(), other.to_string())],
        })?;
        *g = Arc::new(set);
        self.origins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.name.clone(), PolicyOrigin::Api);
        Ok(p)
    }

    /// Removes a policy; false when there was none by that name.
    pub fn delete_policy(&self, name: &str) -> bool {
        let mut g = self.policies.write().unwrap_or_else(|e| e.into_inner());
        if g.get(name).is_none() {
            return false;
        }
        let rest: Vec<RoutePolicy> = g
            .policies()
            .iter()
            .filter(|q| q.name != name)
            .cloned()
            .collect();
        match PolicySet::new(rest) {
            Ok(s) => {
                *g = Arc::new(s);
                self.origins
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(name);
                true
            }
            Err(_) => false,
        }
    }

    /// Records a finished dispatch in the per-policy ring.
    pub fn log_dispatch(&self, policy: &str, entry: LogEntry) {
        let mut g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let ring = g.entry(policy.to_string()).or_default();
        if ring.len() >= LOG_PER_POLICY {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// Recent dispatches, newest first; one policy or all.
    pub fn recent(&self, policy: Option<&str>) -> Vec<(String, LogEntry)> {
        let g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, LogEntry)> = g
            .iter()
            .filter(|(k, _)| policy.is_none_or(|p| p == k.as_str()))
            .flat_map(|(k, ring)| ring.iter().map(move |e| (k.clone(), e.clone())))
            .collect();
        out.sort_by(|a, b| b.1.ts.cmp(&a.1.ts));
        out
    }
}

/// [`LiveFleet`] over the gateway's inventory poller: model states from `/v1/models`
/// `status.value`, liveness from whether the last poll reached the host.
pub struct PollerFleet {
    router: Arc<crate::RegistryRouter>,
}

impl std::fmt::Debug for PollerFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PollerFleet")
    }
}

impl PollerFleet {
    /// Facts from `router`'s poller.
    pub fn new(router: Arc<crate::RegistryRouter>) -> Self {
        Self { router }
    }
}

impl LiveFleet for PollerFleet {
    fn inventory(&self) -> Arc<Inventory> {
        self.router.inventory()
    }

    fn liveness(&self, provider: &ProviderId) -> Liveness {
        use crate::ModelRouter as _;
        let health = self.router.health();
        let reachable = health.as_array().and_then(|a| {
            a.iter()
                .find(|h| h.get("id").and_then(|v| v.as_str()) == Some(provider.as_str()))
                .and_then(|h| h.get("reachable"))
                .and_then(|v| v.as_bool())
        });
        match reachable {
            Some(true) => Liveness::Connected,
            Some(false) => Liveness::Down,
            None => Liveness::Unknown,
        }
    }
}

/// The route of one `auto:*` request while it runs; finished (and logged) when the request's
/// telemetry record is written.
pub(crate) struct RouteTrack {
    auto: Arc<AutoRouter>,
    policy: String,
    decision: serde_json::Value,
    shape: boo_routing::PromptShape,
    /// The failover machine once attempts started.
    pub(crate) failover: Option<boo_routing::Failover>,
    /// The candidate that got the request.
    pub(crate) model: Option<boo_model_ref::ModelRef>,
}

impl RouteTrack {
    pub(crate) fn new(
        auto: Arc<AutoRouter>,
        policy: String,
        decision: serde_json::Value,
        shape: boo_routing::PromptShape,
    ) -> Self {
        Self {
            auto,
            policy,
            decision,
            shape,
            failover: None,
            model: None,
        }
    }

    /// `{"decision": .., "failover": ..}` as stored in the record's `route`.
    pub(crate) fn route_json(&self) -> serde_json::Value {
        serde_json::json!({
            "decision": self.decision,
            "failover": self.failover.as_ref().map(|f| f.report()),
        })
    }

    /// Ends the route: a committed stream that ended cleanly is `Success`, anything else a
    /// cut (never retried). Logs the dispatch, calibrates the token estimate, returns `route`.
    pub(crate) fn finish(
        mut self,
        clean: bool,
        prompt_tokens: Option<i64>,
        status: u16,
        request_id: &str,
        started: chrono::DateTime<chrono::Utc>,
    ) -> serde_json::Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        if let Some(f) = &mut self.failover
            && f.result().is_none()
        {
            let o = if clean {
                boo_routing::Outcome::Success
            } else {
                boo_routing::Outcome::StreamCut
            };
            let _ = f.on_outcome(o, now);
        }
        if let Some(m) = &self.model {
            let served = self
                .failover
                .as_ref()
                .and_then(|f| f.history().last())
                .and_then(|l| Some(l.ended_ms?.saturating_sub(l.started_ms) as f64));
            self.auto
                .attempt_ended(&m.provider, if clean { served.or(Some(0.0)) } else { None });
        }
        if let (Some(m), Some(n)) = (&self.model, prompt_tokens)
            && clean
            && n > 0
        {
            self.auto.calibration.observe(m, &self.shape, n as u64);
        }
        let route = self.route_json();
        self.auto.log_dispatch(
            &self.policy,
            LogEntry {
                request_id: request_id.to_string(),
                ts: started.to_rfc3339(),
                status,
                route: route.clone(),
            },
        );
        route
    }
}
