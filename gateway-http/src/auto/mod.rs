//! Virtual `auto:*` models: policy decisions over live fleet facts, model context windows, a
//! dispatch log, and policy management for the control API.
//!
//! The proxy asks [`AutoRouter::decide`] for a [`Decision`] when a request names `auto:*`,
//! then drives `boo_routing::Failover` through its attempts (see `proxy.rs`). Everything here
//! is IO-free on the hot path: context windows are read off the hot path by
//! [`AutoRouter::refresh`] after each inventory poll.
//!
//! **Live facts.** With the fleet control plane running, [`HubFleet`] gives host liveness,
//! model states and measured load times from the `FleetHub`; [`PollerFleet`] (the inventory
//! poller) is the fallback with `--no-fleet` and for hosts the hub does not follow (clouds).
//!
//! **Policies and precedence.** Config-file policies are loaded at start. Policies set through
//! `PUT /api/routing/policies/{name}` are kept in the telemetry store (`route_policies`) when
//! one is attached ([`AutoRouter::attach_store`]) and come back after a restart; without a
//! store they live in memory only. A stored (API) policy with the same name as a config
//! policy **overrides** it; deleting the override restores the config version. A config
//! policy itself cannot be deleted through the API (409: edit the config file).
//!
//! **Hot-path costs.** The body is measured straight from its bytes
//! ([`boo_routing::PromptShape::from_slice`]); the [`FleetView`] is shared between decisions
//! and rebuilt only when an input changed ([`AutoRouter::view`]); the route record is
//! serialized once, as compact text ([`JsonText`]), when the request ends.
//!
//! **Dispatch log.** Every `auto:*` request's telemetry record carries its decision and
//! failover report (`requests.route`, the same text the in-memory ring holds);
//! `/api/routing/log` reads them back from the store (merged with the in-memory ring of
//! requests not yet flushed), so the log survives restarts.

pub mod context;
pub mod facts;
pub mod live;
pub mod tick;

pub use context::{Calibration, ContextCache, ContextEntry, ContextSource};
pub use facts::{LiveFleet, Speed, fleet_view, refresh_contexts};
pub use live::HubFleet;

use boo_model_ref::{Inventory, LoadState, ModelRef, ProviderId};
use boo_provider_registry::Registry;
use boo_routing::{
    Decision, FleetView, Liveness, PolicySet, Problem, RequestFeatures, RoutePolicy, RoutingError,
};
use boo_telemetry_store::{JsonText, Store};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

/// How many recent decisions the log keeps per policy.
pub const LOG_PER_POLICY: usize = 100;

/// Where a policy came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOrigin {
    /// The config file's `policies` array.
    Config,
    /// Set through the API: kept in the store when one is attached (else in memory only).
    /// Overrides a config policy of the same name.
    Api,
}

/// One recent `auto:*` dispatch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogEntry {
    /// Request id.
    pub request_id: String,
    /// Start time.
    pub ts: chrono::DateTime<chrono::Utc>,
    /// HTTP status the client got.
    pub status: u16,
    /// The decision and failover report (the telemetry record's `route`, the same shared text).
    pub route: JsonText,
}

/// How often [`AutoRouter::refresh`] re-reads the stored policies (several gateways may share
/// one Postgres store).
pub const POLICY_RELOAD_EVERY: Duration = Duration::from_secs(30);

/// How far back measured speeds (for the `fastest` order) are averaged from the store.
pub const SPEED_WINDOW: Duration = Duration::from_secs(6 * 3600);

/// How long after a speeds reload that took `took` the next one may run: every
/// [`POLICY_RELOAD_EVERY`], but never more than about 1 % of the store's time, so a window
/// holding millions of requests does not keep a store connection busy (its scan grows with
/// the traffic of the last [`SPEED_WINDOW`]).
pub fn speed_reload_after(took: Duration) -> Duration {
    POLICY_RELOAD_EVERY.max(took.saturating_mul(100))
}

/// Routing state for `auto:*` requests.
pub struct AutoRouter {
    registry: Arc<Registry>,
    live: Arc<dyn LiveFleet>,
    contexts: ContextCache,
    calibration: Calibration,
    policies: RwLock<Arc<PolicySet>>,
    /// Valid config-file policies by name.
    config: BTreeMap<String, RoutePolicy>,
    /// API-set policies by name (stored ones when a store is attached).
    api: RwLock<BTreeMap<String, RoutePolicy>>,
    origins: RwLock<HashMap<String, PolicyOrigin>>,
    store: OnceLock<Arc<dyn Store>>,
    reloaded: Mutex<Option<Instant>>,
    /// When measured speeds may be read again (see [`speed_reload_after`]).
    speeds_next: Mutex<Option<Instant>>,
    speeds: RwLock<Arc<HashMap<ModelRef, Speed>>>,
    log: Mutex<HashMap<String, VecDeque<LogEntry>>>,
    load: Mutex<HashMap<ProviderId, HostLoad>>,
    view: Mutex<Option<CachedView>>,
    /// Paces the load-state checks of attempts waiting for their first byte.
    tick: Arc<tick::StateTick>,
}

/// How often an attempt waiting for its first byte looks at its model's load state.
pub const STATE_TICK: Duration = Duration::from_millis(50);

/// The last routing view and every input it was built from. Holding the `Arc`s keeps them
/// alive, so pointer equality means "the same snapshot" (no address reuse).
struct CachedView {
    inventory: Arc<Inventory>,
    loads: Option<Arc<HashMap<ModelRef, u64>>>,
    speeds: Arc<HashMap<ModelRef, Speed>>,
    contexts: u64,
    hosts: Vec<facts::HostFacts>,
    view: Arc<FleetView>,
}

fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
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

/// Why a policy could not be set or deleted through the API.
#[derive(Debug)]
pub enum PolicyChangeError {
    /// The policy document is invalid: every problem with its JSON path.
    Invalid(Vec<Problem>),
    /// No policy has that name.
    NotFound,
    /// The policy comes from the config file and has no API override to delete.
    ConfigOwned,
    /// The store refused the change (nothing was changed).
    Store(boo_telemetry_store::StoreError),
}

/// What [`AutoRouter::delete_policy`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// The API policy is gone.
    Removed,
    /// The API override is gone; the config-file policy of that name applies again.
    RestoredConfig,
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
        let config = set
            .policies()
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        let me = Self {
            registry,
            live,
            contexts: ContextCache::new(),
            calibration: Calibration::new(),
            policies: RwLock::new(Arc::new(set)),
            config,
            api: RwLock::new(BTreeMap::new()),
            origins: RwLock::new(origins),
            store: OnceLock::new(),
            reloaded: Mutex::new(None),
            speeds_next: Mutex::new(None),
            speeds: RwLock::new(Arc::default()),
            log: Mutex::new(HashMap::new()),
            load: Mutex::new(HashMap::new()),
            view: Mutex::new(None),
            tick: tick::StateTick::new(STATE_TICK),
        };
        // Lists policies by name, like every later rebuild.
        let _ = me.rebuild(&BTreeMap::new());
        (me, problems)
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
    ///
    /// Per call only the per-host facts (liveness, queue wait) are read; the view is rebuilt
    /// when one of them or another input changed (inventory or load-time snapshot, measured
    /// speeds, context windows), else the last one is shared.
    pub fn view(&self) -> Arc<FleetView> {
        // Inputs first, then the build: a view is never older than the inputs it is keyed by.
        let contexts = self.contexts.generation();
        let inventory = self.live.inventory();
        let loads = self.live.load_times();
        let speeds = self.speeds();
        let hosts = facts::host_facts(&self.registry, &*self.live, &|p| self.queue_wait_ms(p));
        let mut g = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &*g
            && c.contexts == contexts
            && Arc::ptr_eq(&c.inventory, &inventory)
            && Arc::ptr_eq(&c.speeds, &speeds)
            && same(&c.loads, &loads)
            && c.hosts == hosts
        {
            return c.view.clone();
        }
        let speed = |m: &ModelRef| speeds.get(m).copied();
        let view = Arc::new(facts::build_view(
            &self.registry,
            &inventory,
            loads.as_deref(),
            &hosts,
            &self.contexts,
            &speed,
        ));
        *g = Some(CachedView {
            inventory,
            loads,
            speeds,
            contexts,
            hosts,
            view: view.clone(),
        });
        view
    }

    /// Measured speeds per composite model (from the store's telemetry, refreshed every
    /// [`POLICY_RELOAD_EVERY`] or less often when reading them is slow, see
    /// [`speed_reload_after`]; empty without a store).
    pub fn speeds(&self) -> Arc<HashMap<ModelRef, Speed>> {
        self.speeds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn reload_speeds(&self) -> Result<usize, boo_telemetry_store::StoreError> {
        let Some(store) = self.store.get() else {
            return Ok(0);
        };
        let since = chrono::Utc::now()
            - chrono::Duration::from_std(SPEED_WINDOW).unwrap_or(chrono::Duration::hours(6));
        let started = Instant::now();
        let rows = store.model_speeds(since).await;
        *self.speeds_next.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + speed_reload_after(started.elapsed()));
        let rows = rows?;
        let map: HashMap<ModelRef, Speed> = rows
            .into_iter()
            .filter_map(|r| {
                let m = format!("{}/{}", r.provider_id, r.model).parse().ok()?;
                Some((
                    m,
                    Speed {
                        gen_tps: r.gen_tps,
                        prompt_tps: r.prompt_tps,
                    },
                ))
            })
            .collect();
        let n = map.len();
        *self.speeds.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        Ok(n)
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
        // The host's entry exists after its first attempt: no id copy per request.
        match g.get_mut(provider) {
            Some(l) => l.in_flight += 1,
            None => g.entry(provider.clone()).or_default().in_flight += 1,
        }
    }

    /// An attempt on `provider` ended; `served_ms` when it served the request.
    pub(crate) fn attempt_ended(&self, provider: &ProviderId, served_ms: Option<f64>) {
        let mut g = self.load.lock().unwrap_or_else(|e| e.into_inner());
        let l = match g.get_mut(provider) {
            Some(l) => l,
            None => g.entry(provider.clone()).or_default(),
        };
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
        set.decide(name, req, &*view).map_err(|e| match e {
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

    /// Features of a request body measured as `shape` (see [`AutoRouter::features`]).
    pub fn features_of(
        &self,
        shape: &boo_routing::PromptShape,
        source: Option<String>,
    ) -> RequestFeatures {
        RequestFeatures::from_shape(shape, &self.calibration.fleet(), source)
    }

    /// A receiver that changes every [`STATE_TICK`] while someone listens (one shared ticker;
    /// see [`tick`]).
    pub fn state_tick(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// Liveness of a host as the live source sees it.
    pub fn liveness(&self, provider: &ProviderId) -> Liveness {
        self.live.liveness(provider)
    }

    /// The load state of `model` as the live source sees it now (`None` when not listed or
    /// unknown). Cheap: used while an attempt waits for its first byte.
    pub fn model_state(&self, model: &ModelRef) -> Option<LoadState> {
        self.live.inventory().state(model)
    }

    /// Re-reads stale context windows (after an inventory poll; never loads a model) and,
    /// every [`POLICY_RELOAD_EVERY`], the stored policies (another gateway sharing the store
    /// may have changed them).
    pub async fn refresh(&self) -> usize {
        let due = {
            let mut g = self.reloaded.lock().unwrap_or_else(|e| e.into_inner());
            match *g {
                Some(t) if t.elapsed() < POLICY_RELOAD_EVERY => false,
                _ => {
                    *g = Some(Instant::now());
                    true
                }
            }
        };
        if due && self.store.get().is_some() {
            if let Err(e) = self.reload_stored().await {
                tracing::warn!(error = %e, "reloading stored route policies failed");
            }
            let speeds_due = self
                .speeds_next
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|t| Instant::now() >= t);
            if speeds_due && let Err(e) = self.reload_speeds().await {
                tracing::warn!(error = %e, "reading measured model speeds failed");
            }
        }
        let inv: Arc<Inventory> = self.live.inventory();
        refresh_contexts(&self.registry, &inv, &self.contexts).await
    }

    /// Keeps API-set policies in `store` from now on and loads the ones stored there (they
    /// override config policies of the same name). Returns how many were loaded; stored
    /// documents that no longer parse are logged and left out. Call once at start-up.
    ///
    /// # Errors
    /// The store could not be read (the router keeps the config policies).
    pub async fn attach_store(
        &self,
        store: Arc<dyn Store>,
    ) -> Result<usize, boo_telemetry_store::StoreError> {
        let _ = self.store.set(store);
        *self.reloaded.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        if let Err(e) = self.reload_speeds().await {
            tracing::warn!(error = %e, "reading measured model speeds failed");
        }
        self.reload_stored().await
    }

    /// The attached store, if any.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.get()
    }

    async fn reload_stored(&self) -> Result<usize, boo_telemetry_store::StoreError> {
        let Some(store) = self.store.get() else {
            return Ok(0);
        };
        let rows = store.route_policies().await?;
        let mut api = BTreeMap::new();
        for row in rows {
            match boo_routing::policy::parse_policy(&row.policy, "policy") {
                Ok(p) if p.name == row.name => {
                    api.insert(p.name.clone(), p);
                }
                Ok(p) => tracing::warn!(
                    stored = %row.name, document = %p.name,
                    "stored route policy names another policy; ignored"
                ),
                Err(problems) => {
                    for pr in problems {
                        tracing::warn!(policy = %row.name, path = %pr.path, problem = %pr.message,
                            "stored route policy ignored");
                    }
                }
            }
        }
        let n = api.len();
        let mut g = self.api.write().unwrap_or_else(|e| e.into_inner());
        if let Err(problems) = self.rebuild(&api) {
            for pr in problems {
                tracing::warn!(path = %pr.path, problem = %pr.message, "stored route policies ignored");
            }
            return Ok(0);
        }
        *g = api;
        Ok(n)
    }

    /// Installs config policies overridden by `api` as the current set.
    fn rebuild(&self, api: &BTreeMap<String, RoutePolicy>) -> Result<(), Vec<Problem>> {
        let mut all: Vec<RoutePolicy> = self
            .config
            .values()
            .filter(|p| !api.contains_key(&p.name))
            .cloned()
            .collect();
        all.extend(api.values().cloned());
        all.sort_by(|a, b| a.name.cmp(&b.name));
        let set = PolicySet::new(all).map_err(|e| match e {
            RoutingError::InvalidPolicy { problems } => problems,
            other => vec![Problem::new("policy".to_string(), other.to_string())],
        })?;
        let origins = set
            .names()
            .map(|n| {
                let o = if api.contains_key(n) {
                    PolicyOrigin::Api
                } else {
                    PolicyOrigin::Config
                };
                (n.to_string(), o)
            })
            .collect();
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        *self.origins.write().unwrap_or_else(|e| e.into_inner()) = origins;
        Ok(())
    }

    /// Whether the config file defines a policy `name` (an API policy of that name overrides it).
    pub fn in_config(&self, name: &str) -> bool {
        self.config.contains_key(name)
    }

    /// Adds or replaces an API policy: written to the store first when one is attached (so it
    /// survives a restart), then applied. Overrides a config policy of the same name.
    ///
    /// # Errors
    /// [`PolicyChangeError::Invalid`] with every problem and its JSON path;
    /// [`PolicyChangeError::Store`] when the store refused it (nothing changed).
    pub async fn put_policy(
        &self,
        value: &serde_json::Value,
    ) -> Result<RoutePolicy, PolicyChangeError> {
        let p = boo_routing::policy::parse_policy(value, "policy")
            .map_err(PolicyChangeError::Invalid)?;
        // Check that the whole set stays valid before persisting anything.
        let mut next = self.api.read().unwrap_or_else(|e| e.into_inner()).clone();
        next.insert(p.name.clone(), p.clone());
        self.check_set(&next).map_err(PolicyChangeError::Invalid)?;
        if let Some(store) = self.store.get() {
            store
                .put_route_policy(&p.name, value)
                .await
                .map_err(PolicyChangeError::Store)?;
        }
        let mut g = self.api.write().unwrap_or_else(|e| e.into_inner());
        g.insert(p.name.clone(), p.clone());
        let api = g.clone();
        self.rebuild(&api).map_err(PolicyChangeError::Invalid)?;
        Ok(p)
    }

    fn check_set(&self, api: &BTreeMap<String, RoutePolicy>) -> Result<(), Vec<Problem>> {
        let mut all: Vec<RoutePolicy> = self
            .config
            .values()
            .filter(|p| !api.contains_key(&p.name))
            .cloned()
            .collect();
        all.extend(api.values().cloned());
        PolicySet::new(all).map(|_| ()).map_err(|e| match e {
            RoutingError::InvalidPolicy { problems } => problems,
            other => vec![Problem::new("policy".to_string(), other.to_string())],
        })
    }

    /// Deletes an API policy (from the store too). Deleting an override of a config policy
    /// restores the config version.
    ///
    /// # Errors
    /// [`PolicyChangeError::NotFound`]; [`PolicyChangeError::ConfigOwned`] for a config
    /// policy without an override; [`PolicyChangeError::Store`] when the store refused.
    pub async fn delete_policy(&self, name: &str) -> Result<Deleted, PolicyChangeError> {
        let has_api = self
            .api
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name);
        if !has_api {
            return Err(if self.config.contains_key(name) {
                PolicyChangeError::ConfigOwned
            } else {
                PolicyChangeError::NotFound
            });
        }
        if let Some(store) = self.store.get() {
            store
                .delete_route_policy(name)
                .await
                .map_err(PolicyChangeError::Store)?;
        }
        let mut g = self.api.write().unwrap_or_else(|e| e.into_inner());
        g.remove(name);
        let api = g.clone();
        self.rebuild(&api).map_err(PolicyChangeError::Invalid)?;
        Ok(if self.config.contains_key(name) {
            Deleted::RestoredConfig
        } else {
            Deleted::Removed
        })
    }

    /// Records a finished dispatch in the per-policy ring.
    pub fn log_dispatch(&self, policy: &str, entry: LogEntry) {
        let mut g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        // The policy's ring exists after its first dispatch: no key allocation per request.
        let ring = match g.get_mut(policy) {
            Some(r) => r,
            None => g.entry(policy.to_string()).or_default(),
        };
        if ring.len() >= LOG_PER_POLICY {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// Recent dispatches of this process, newest first; one policy or all.
    pub fn recent(&self, policy: Option<&str>) -> Vec<(String, LogEntry)> {
        let g = self.log.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, LogEntry)> = g
            .iter()
            .filter(|(k, _)| policy.is_none_or(|p| p == k.as_str()))
            .flat_map(|(k, ring)| ring.iter().map(move |e| (k.clone(), e.clone())))
            .collect();
        out.sort_by_key(|e| std::cmp::Reverse(e.1.ts));
        out
    }

    /// The dispatch log, newest first, at most `limit` entries: the store's (which survives
    /// restarts) merged with this process's ring (records not flushed yet). Falls back to the
    /// ring alone when the store cannot be read (the error is returned alongside).
    pub async fn dispatch_log(
        &self,
        policy: Option<&str>,
        limit: usize,
    ) -> (
        Vec<(String, LogEntry)>,
        Option<boo_telemetry_store::StoreError>,
    ) {
        let mut out = self.recent(policy);
        let mut err = None;
        if let Some(store) = self.store.get() {
            let cap = u32::try_from(limit).unwrap_or(u32::MAX);
            match store.route_log(policy, cap).await {
                Ok(rows) => {
                    let seen: std::collections::HashSet<String> =
                        out.iter().map(|(_, e)| e.request_id.clone()).collect();
                    out.extend(
                        rows.into_iter()
                            .filter(|r| !seen.contains(&r.request_id))
                            .map(|r| {
                                (
                                    r.policy,
                                    LogEntry {
                                        request_id: r.request_id,
                                        ts: r.ts,
                                        status: r.status,
                                        route: JsonText::from(&r.route),
                                    },
                                )
                            }),
                    );
                    out.sort_by(|a, b| {
                        b.1.ts
                            .cmp(&a.1.ts)
                            .then_with(|| b.1.request_id.cmp(&a.1.request_id))
                    });
                }
                Err(e) => err = Some(e),
            }
        }
        out.truncate(limit);
        (out, err)
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
        // Per `auto:*` request and provider: read the poller's flag, not the `/health` JSON.
        match self.router.reachable(provider.as_str()) {
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
    decision: Decision,
    shape: boo_routing::PromptShape,
    /// The failover machine once attempts started.
    pub(crate) failover: Option<boo_routing::Failover>,
    /// The candidate that got the request.
    pub(crate) model: Option<boo_model_ref::ModelRef>,
}

/// The record's `route` document: `{"decision": .., "failover": ..}`.
#[derive(serde::Serialize)]
struct RouteDoc<'a> {
    decision: &'a Decision,
    failover: Option<ReportRef<'a>>,
}

/// [`boo_routing::FailoverReport`]'s fields, borrowed from the failover machine (no copy of
/// the attempt log per request; serialized the same way).
#[derive(serde::Serialize)]
struct ReportRef<'a> {
    policy: &'a str,
    attempts: &'a [boo_routing::AttemptLog],
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a boo_routing::Final>,
}

thread_local! {
    /// The last decision serialized on this thread and the `"limits":…,"attempts":…,"skipped":…`
    /// part of its JSON: it only changes with the fleet view, so consecutive requests reuse it.
    static DECISION_TAIL: std::cell::RefCell<Option<(Decision, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// What the `x-boo-route` header shows of a decision (see [`Decision::compact`]): policy, rule,
/// attempt ids and skips.
struct HeaderKey {
    policy: String,
    rule: Option<usize>,
    attempts: Vec<Arc<ModelRef>>,
    skipped: Vec<(Arc<ModelRef>, boo_routing::SkipReason)>,
}

impl HeaderKey {
    fn matches(&self, d: &Decision) -> bool {
        self.policy == d.policy
            && self.rule == d.rule
            && self.attempts.len() == d.attempts.len()
            && self
                .attempts
                .iter()
                .zip(&d.attempts)
                .all(|(a, b)| a == &b.model)
            && self.skipped == d.skipped
    }
}

thread_local! {
    /// The last `x-boo-route` header made on this thread and what it was made of.
    static ROUTE_HEADER: std::cell::RefCell<Option<(HeaderKey, http::HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// `x-boo-route` for `d` ([`Decision::header_value`]), reused from the previous request on this
/// thread while the policy, rule, attempts and skips it shows are the same (they change with
/// the fleet, not per request).
pub(crate) fn route_header(d: &Decision) -> Option<http::HeaderValue> {
    ROUTE_HEADER.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((key, value)) = c.as_ref()
            && key.matches(d)
        {
            return Some(value.clone());
        }
        let value = http::HeaderValue::from_str(&d.header_value()).ok()?;
        let key = HeaderKey {
            policy: d.policy.clone(),
            rule: d.rule,
            attempts: d.attempts.iter().map(|a| a.model.clone()).collect(),
            skipped: d.skipped.clone(),
        };
        *c = Some((key, value.clone()));
        Some(value)
    })
}

/// The route document's compact JSON, byte for byte what `serde_json` makes of `doc`, with the
/// decision's fleet-dependent part reused from the previous request on this thread when it is
/// the same (most of the serialization cost: string escaping of every key and id).
fn route_json(doc: &RouteDoc<'_>) -> JsonText {
    let d = doc.decision;
    let mut out = Vec::with_capacity(768);
    out.extend_from_slice(br#"{"decision":{"policy":"#);
    let _ = serde_json::to_writer(&mut out, &d.policy);
    if let Some(r) = d.rule {
        out.extend_from_slice(br#","rule":"#);
        let _ = serde_json::to_writer(&mut out, &r);
    }
    out.extend_from_slice(br#","need_tokens":"#);
    let _ = serde_json::to_writer(&mut out, &d.need_tokens);
    out.push(b',');
    let tail = DECISION_TAIL.with(|c| {
        let mut c = c.borrow_mut();
        let hit = c.as_ref().is_some_and(|(prev, _)| {
            prev.limits == d.limits && prev.attempts == d.attempts && prev.skipped == d.skipped
        });
        if !hit {
            // Field order of `Decision`: policy, rule, need_tokens, limits, attempts, skipped.
            // A string value cannot contain `,"limits":` (its quote would be escaped), so the
            // first occurrence is the key.
            let full = serde_json::to_string(d).ok()?;
            let at = full.find(r#","limits":"#)?;
            *c = Some((d.clone(), full[at + 1..full.len() - 1].to_owned()));
        }
        out.extend_from_slice(c.as_ref()?.1.as_bytes());
        Some(())
    });
    let text = tail.and_then(|()| {
        out.extend_from_slice(br#"},"failover":"#);
        serde_json::to_writer(&mut out, &doc.failover).ok()?;
        out.push(b'}');
        // Only `serde_json` output and ASCII punctuation were written.
        String::from_utf8(out).ok()
    });
    match text {
        Some(text) => JsonText::from_json_string(text),
        // Serializes plain structs straight to text: never fails (string keys only).
        None => JsonText::new(doc).unwrap_or_else(|_| JsonText::from(&serde_json::Value::Null)),
    }
}

impl RouteTrack {
    pub(crate) fn new(
        auto: Arc<AutoRouter>,
        decision: Decision,
        shape: boo_routing::PromptShape,
    ) -> Self {
        Self {
            auto,
            decision,
            shape,
            failover: None,
            model: None,
        }
    }

    fn doc(&self) -> RouteDoc<'_> {
        RouteDoc {
            decision: &self.decision,
            failover: self.failover.as_ref().map(|f| ReportRef {
                policy: f.policy(),
                attempts: f.history(),
                result: f.result(),
            }),
        }
    }

    /// `{"decision": .., "failover": ..}` as stored in the record's `route` (for error bodies).
    pub(crate) fn route_json(&self) -> serde_json::Value {
        serde_json::to_value(self.doc()).unwrap_or_default()
    }

    /// Ends the route: a committed stream that ended cleanly is `Success`, anything else a
    /// cut (never retried). Logs the dispatch, calibrates the token estimate, returns `route`
    /// (serialized once, shared by the log ring and the telemetry record).
    pub(crate) fn finish(
        mut self,
        clean: bool,
        prompt_tokens: Option<i64>,
        status: u16,
        request_id: &str,
        started: chrono::DateTime<chrono::Utc>,
    ) -> JsonText {
        if let Some(f) = &mut self.failover
            && f.result().is_none()
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
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
        let route = route_json(&self.doc());
        self.auto.log_dispatch(
            &self.decision.policy,
            LogEntry {
                request_id: request_id.to_string(),
                ts: started,
                status,
                route: route.clone(),
            },
        );
        route
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boo_provider_registry::{MapEnv, from_json_str};
    use boo_routing::FleetFacts;

    /// The poller fallback reports a host its last poll could not reach as down, and knows
    /// nothing of unpolled, cloud or unconfigured providers (what `/health` says).
    #[tokio::test]
    async fn poller_liveness_follows_the_last_poll() {
        let doc = r#"{"providers": [
            {"id": "desk", "kind": "llama-swap", "base_url": "http://127.0.0.1:1"},
            {"id": "cloud", "kind": "openai", "base_url": "http://127.0.0.1:1/v1",
             "models": [{"id": "m"}]}]}"#;
        let reg = from_json_str(doc, &MapEnv::new())
            .expect("valid config")
            .registry;
        let router = Arc::new(crate::RegistryRouter::new(Arc::new(reg)));
        let fleet = PollerFleet::new(router.clone());
        let id = |s: &str| s.parse::<ProviderId>().unwrap();
        assert_eq!(fleet.liveness(&id("desk")), Liveness::Unknown);
        router.poll_once().await;
        assert_eq!(fleet.liveness(&id("desk")), Liveness::Down);
        assert_eq!(fleet.liveness(&id("cloud")), Liveness::Unknown);
        assert_eq!(fleet.liveness(&id("nowhere")), Liveness::Unknown);
    }

    /// A live source the test changes by hand.
    struct Manual {
        inv: Mutex<Arc<Inventory>>,
        down: Mutex<Vec<String>>,
    }

    impl LiveFleet for Manual {
        fn inventory(&self) -> Arc<Inventory> {
            self.inv.lock().unwrap().clone()
        }
        fn liveness(&self, p: &ProviderId) -> Liveness {
            if self.down.lock().unwrap().iter().any(|d| d == p.as_str()) {
                Liveness::Down
            } else {
                Liveness::Connected
            }
        }
    }

    #[test]
    fn slow_speed_reloads_are_spaced_to_about_one_percent_of_the_time() {
        assert_eq!(speed_reload_after(Duration::ZERO), POLICY_RELOAD_EVERY);
        assert_eq!(
            speed_reload_after(Duration::from_millis(120)),
            POLICY_RELOAD_EVERY
        );
        assert_eq!(
            speed_reload_after(Duration::from_secs(2)),
            Duration::from_secs(200)
        );
        assert_eq!(speed_reload_after(Duration::MAX), Duration::MAX);
    }

    #[test]
    fn route_text_and_header_are_what_serde_makes_of_the_decision_hit_or_miss() {
        let decision = |need: u64, rule: Option<usize>, attempts: &[&str], skipped: &[&str]| {
            let v = serde_json::json!({
                "policy": "auto:code \"q\"",
                "rule": rule,
                "need_tokens": need,
                "limits": {"max_attempts": 2, "total_deadline_ms": 1000, "first_byte_ms": 500, "allow_cold_start": false},
                "attempts": attempts.iter().map(|m| serde_json::json!({
                    "model": m, "lane": "local", "liveness": "connected", "state": "ready", "cold": false
                })).collect::<Vec<_>>(),
                "skipped": skipped.iter().map(|m| serde_json::json!([m, {"reason": "host_down"}])).collect::<Vec<_>>(),
            });
            let mut v = v;
            if rule.is_none() {
                v.as_object_mut().unwrap().remove("rule");
            }
            serde_json::from_value::<Decision>(v).unwrap()
        };
        let log: Vec<boo_routing::AttemptLog> = serde_json::from_value(serde_json::json!([
            {"model": "a/x", "started_ms": 5, "ended_ms": 9, "outcome": {"kind": "success"}}
        ]))
        .unwrap();
        let fin: boo_routing::Final = serde_json::from_value(
            serde_json::json!({"result": "served", "model": "a/x", "index": 0}),
        )
        .unwrap();
        let cases = [
            decision(10, None, &["a/x", "b/modèle"], &["c/y"]),
            // Same fleet part, other request: reuses the cached part.
            decision(99_999, Some(2), &["a/x", "b/modèle"], &["c/y"]),
            // The fleet changed: other attempts, then other skips.
            decision(7, None, &["b/modèle"], &["c/y"]),
            decision(7, None, &["b/modèle"], &[]),
        ];
        for (i, d) in cases.iter().enumerate() {
            for failover in [
                None,
                Some(ReportRef {
                    policy: "auto:code",
                    attempts: &log,
                    result: Some(&fin),
                }),
            ] {
                let doc = RouteDoc {
                    decision: d,
                    failover,
                };
                let want = serde_json::to_string(&doc).unwrap();
                assert_eq!(route_json(&doc).as_str(), want, "case {i}");
            }
            // The header follows the decision too, whether it was made just now or reused.
            for _ in 0..2 {
                let want = http::HeaderValue::from_str(&d.header_value()).unwrap();
                assert_eq!(route_header(d), Some(want), "case {i}");
            }
        }
        // A skip reason the header shows changed while ids and policy stayed the same.
        let mut d = cases[3].clone();
        d.skipped = cases[0].skipped.clone();
        let before = route_header(&d).unwrap();
        d.skipped[0].1 = boo_routing::SkipReason::ModelError;
        let after = route_header(&d).unwrap();
        assert_ne!(before, after);
        assert_eq!(
            after,
            http::HeaderValue::from_str(&d.header_value()).unwrap()
        );
    }

    fn listing(models: &[(&str, &str)]) -> Arc<Inventory> {
        let mut inv = Inventory::new();
        for host in ["desk", "laptop"] {
            let ms = models
                .iter()
                .filter(|(h, _)| *h == host)
                .map(|(_, m)| {
                    let mut im = boo_model_ref::InventoryModel::new(*m);
                    im.state = Some(LoadState::Ready);
                    im
                })
                .collect();
            inv.set_provider(host.parse().unwrap(), ms);
        }
        Arc::new(inv)
    }

    /// `auto:code` over `desk/coder` then `laptop/coder`, both listed, with a hand-set live source.
    fn two_desks() -> (AutoRouter, Arc<Manual>) {
        let doc = r#"{"providers": [
            {"id": "desk", "kind": "llama-swap", "base_url": "http://127.0.0.1:1"},
            {"id": "laptop", "kind": "llama-swap", "base_url": "http://127.0.0.1:1"}],
            "policies": [{"name": "auto:code", "candidates": ["desk/coder", "laptop/coder"],
                          "order": ["priority"]}]}"#;
        let reg = from_json_str(doc, &MapEnv::new())
            .expect("valid config")
            .registry;
        let live = Arc::new(Manual {
            inv: Mutex::new(listing(&[("desk", "coder"), ("laptop", "coder")])),
            down: Mutex::new(Vec::new()),
        });
        let (auto, problems) = AutoRouter::new(Arc::new(reg), live.clone());
        assert!(problems.is_empty(), "{problems:?}");
        (auto, live)
    }

    /// The shared routing view is rebuilt for the very next decision after a host goes
    /// down, the listing changes, a context window or a speed sample arrives, or a policy
    /// changes; and shared (not rebuilt) while nothing changed.
    #[tokio::test]
    async fn cached_view_follows_every_input() {
        let (auto, live) = two_desks();
        let req = RequestFeatures::default();
        let chosen = |auto: &AutoRouter, name: &str| {
            auto.decide(name, &req)
                .map(|d| d.chosen().map(ToString::to_string))
        };
        assert_eq!(chosen(&auto, "auto:code"), Ok(Some("desk/coder".into())));
        let v1 = auto.view();
        assert!(
            Arc::ptr_eq(&v1, &auto.view()),
            "unchanged inputs share the view"
        );

        // Host down.
        live.down.lock().unwrap().push("desk".into());
        assert_eq!(chosen(&auto, "auto:code"), Ok(Some("laptop/coder".into())));
        live.down.lock().unwrap().clear();
        assert_eq!(chosen(&auto, "auto:code"), Ok(Some("desk/coder".into())));

        // The listing changes: desk no longer serves coder.
        *live.inv.lock().unwrap() = listing(&[("laptop", "coder")]);
        assert_eq!(chosen(&auto, "auto:code"), Ok(Some("laptop/coder".into())));
        *live.inv.lock().unwrap() = listing(&[("desk", "coder"), ("laptop", "coder")]);

        // A context window read from a host.
        let m: ModelRef = "desk/coder".parse().unwrap();
        let n_ctx = |auto: &AutoRouter| {
            auto.view()
                .all()
                .iter()
                .find(|c| *c.model == m)
                .and_then(|c| c.n_ctx)
        };
        assert_eq!(n_ctx(&auto), None);
        auto.contexts().put(
            m.clone(),
            ContextEntry {
                n_ctx: 4096,
                state: Some(LoadState::Ready),
                source: ContextSource::Props,
            },
        );
        assert_eq!(n_ctx(&auto), Some(4096));

        // A new speed sample.
        let mut speeds = HashMap::new();
        speeds.insert(
            m.clone(),
            Speed {
                gen_tps: Some(42.0),
                prompt_tps: None,
            },
        );
        *auto.speeds.write().unwrap() = Arc::new(speeds);
        let gen_tps = auto
            .view()
            .all()
            .iter()
            .find(|c| *c.model == m)
            .and_then(|c| c.gen_tps);
        assert_eq!(gen_tps, Some(42.0));

        // A policy change applies to the next decision (both windows known: no demotion).
        auto.contexts().put(
            "laptop/coder".parse().unwrap(),
            ContextEntry {
                n_ctx: 4096,
                state: Some(LoadState::Ready),
                source: ContextSource::Props,
            },
        );
        assert_eq!(chosen(&auto, "auto:code"), Ok(Some("desk/coder".into())));
        let p = serde_json::json!({"name": "auto:code", "candidates": ["laptop/coder", "desk/coder"],
            "order": ["priority"]});
        auto.put_policy(&p).await.expect("valid policy");
        assert_eq!(chosen(&auto, "auto:code"), Ok(Some("laptop/coder".into())));
    }

    /// The route record (and the log ring's copy) is `{"decision": .., "failover": ..}` with
    /// the decision and the failover report exactly as they serialize on their own.
    #[tokio::test]
    async fn route_record_keeps_the_documented_shape() {
        let (auto, _) = two_desks();
        let auto = Arc::new(auto);
        let d = auto
            .decide("auto:code", &RequestFeatures::default())
            .unwrap();
        let mut f = boo_routing::Failover::new(&d, 1_000);
        // desk refuses, laptop serves.
        for (t, o) in [
            (1_000, boo_routing::Outcome::Refused),
            (1_010, boo_routing::Outcome::Status(200)),
        ] {
            assert!(matches!(f.next_attempt(t), Ok(boo_routing::Step::Try(_))));
            f.on_outcome(o, t + 5).unwrap();
        }
        f.on_outcome(boo_routing::Outcome::Success, 1_100).unwrap();
        let expected = serde_json::json!({
            "decision": serde_json::to_value(&d).unwrap(),
            "failover": serde_json::to_value(f.report()).unwrap(),
        });
        assert_eq!(
            expected["failover"]["attempts"].as_array().unwrap().len(),
            2
        );
        let mut track = RouteTrack::new(auto.clone(), d, boo_routing::PromptShape::default());
        track.failover = Some(f);
        assert_eq!(track.route_json(), expected);
        let text = track.finish(true, None, 200, "r1", chrono::Utc::now());
        assert_eq!(text.to_value(), expected);
        let log = auto.recent(Some("auto:code"));
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].1.request_id, "r1");
        assert_eq!(log[0].1.route, text);
    }
}
