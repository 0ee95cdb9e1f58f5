//! The fleet control plane: connectors that follow every local host, the live [`FleetHub`],
//! host actions (warm / unload) and the control API (`/api/fleet`, `/api/fleet/stream`,
//! `/api/logs/…`, `/api/captures/…`, `POST /api/hosts/{provider}/actions`).
//!
//! State lives in `boo_fleet_core::FleetState` (pure); this module does the IO: one tokio task
//! per enabled host ([`HostKind::LlamaSwap`] follows `/api/events`, [`HostKind::LlamaServer`]
//! polls `/health`, `/props`, `/slots`), one action executor per host, and the HTTP handlers.
//! A llama-swap host announces each finished request's activity row by id; the connector
//! fetches a lone row at once and, on a busy host, all rows announced within
//! [`ControlConfig::activity_batch`] as one id range.
//! Cloud providers are not followed (probing them would cost tokens).
//!
//! ```no_run
//! use boo_gateway_http::control::{ControlApi, ControlConfig, HostTarget};
//! # async fn demo() -> Result<(), boo_gateway_http::control::ControlError> {
//! let store = boo_telemetry_store::open("sqlite://boocontrol.db").await.ok();
//! let hosts = vec![HostTarget::llama_swap("gpu-box", "http://127.0.0.1:8080")];
//! let api = ControlApi::start(ControlConfig::default(), hosts, store).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! api.serve(listener, std::future::pending()).await;
//! # Ok(()) }
//! ```
//!
//! Invariants: the hub's lock is held only for pure `FleetState` mutations; no connector or
//! probe request can load a model; mutating endpoints require the admin token when one is set.

mod actions;
mod api;
mod client;
mod connector;
mod hub;

pub use api::ControlBody;
pub use hub::{FleetHub, HostLogLine, StreamEvent};

use boo_fleet_core::{
    ActionQueue, HostAccess, InMemoryHostAccess, Lease, ModelState, ModelStatus, ReconnectPolicy,
};
use boo_telemetry_store::Store;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// A configuration value is unusable.
    #[error("invalid control config: {field}: {problem}")]
    Config {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Restoring the fleet view from the store failed.
    #[error("restoring fleet state from the store failed: {0}")]
    Store(#[from] boo_telemetry_store::StoreError),
    /// Socket error.
    #[error("control API I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Refusing to expose the admin API without a token.
    #[error(
        "refusing to listen on non-loopback address {addr} without gateway.admin_token \
         (set one, or pass --allow-unauthenticated-admin)"
    )]
    UnauthenticatedAdmin {
        /// The listen address.
        addr: SocketAddr,
    },
}

/// What kind of host a connector follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKind {
    /// llama-swap (either API generation; picked from `GET /api/version`).
    LlamaSwap,
    /// A bare llama-server.
    LlamaServer,
}

/// One host to follow.
#[derive(Debug, Clone)]
pub struct HostTarget {
    /// Provider id.
    pub provider: String,
    /// What it runs.
    pub kind: HostKind,
    /// Base URL, no trailing `/` (e.g. `http://10.0.0.5:8080`).
    pub base_url: String,
    /// Extra headers sent to the host (e.g. its API key). Never logged.
    pub headers: Vec<(String, String)>,
    /// Configured model ids (used for llama-server hosts whose `/props` names no model).
    pub models: Vec<String>,
}

impl HostTarget {
    /// A llama-swap host.
    pub fn llama_swap(provider: &str, base_url: &str) -> Self {
        HostTarget {
            provider: provider.to_owned(),
            kind: HostKind::LlamaSwap,
            base_url: base_url.trim_end_matches('/').to_owned(),
            headers: Vec::new(),
            models: Vec::new(),
        }
    }

    /// A llama-server host.
    pub fn llama_server(provider: &str, base_url: &str) -> Self {
        HostTarget {
            kind: HostKind::LlamaServer,
            ..Self::llama_swap(provider, base_url)
        }
    }

    /// The enabled local hosts of a registry (cloud and gateway providers are not followed).
    pub fn from_registry(reg: &boo_provider_registry::Registry) -> Vec<HostTarget> {
        use boo_provider_registry::ProviderKind;
        reg.providers()
            .iter()
            .filter(|p| p.enabled)
            .filter_map(|p| {
                let kind = match p.kind {
                    ProviderKind::LlamaSwap => HostKind::LlamaSwap,
                    ProviderKind::LlamaServer => HostKind::LlamaServer,
                    _ => return None,
                };
                let mut headers: Vec<(String, String)> = p
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().to_owned()))
                    .collect();
                if let Some(key) = &p.api_key {
                    headers.push(("authorization".into(), format!("Bearer {}", key.expose())));
                }
                Some(HostTarget {
                    provider: p.id.as_str().to_owned(),
                    kind,
                    base_url: p.base_url.trim_end_matches('/').to_owned(),
                    headers,
                    models: p.models.iter().map(|m| m.id.clone()).collect(),
                })
            })
            .collect()
    }
}

/// Control-plane settings.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Reconnect backoff and circuit breaker.
    pub policy: ReconnectPolicy,
    /// `/api/performance` poll interval (default 5 s).
    pub perf_interval: Duration,
    /// llama-server `/health` / `/props` / `/slots` poll interval (default 5 s).
    pub server_poll_interval: Duration,
    /// Probe `/health` when the event stream was silent this long (default 60 s).
    pub quiet_probe_after: Duration,
    /// Activity rows announced by `activity` events: a row announced after a quiet spell is
    /// fetched at once, later ones together at most once per this window (default 100 ms), so
    /// a busy host costs a few `/api/metrics/activity` requests per window (pages of 100 rows,
    /// each short for the host) instead of one per proxied request.
    pub activity_batch: Duration,
    /// A llama-swap host's event stream is read at most once per this window (default 10 ms):
    /// after a read's events are handled, the next read waits until the window has passed, so
    /// on a busy host (five events per proxied request) the events that arrived meanwhile are
    /// read and handled together, one wake-up per window instead of one per event. The first
    /// event after a quiet spell is handled at once. `ZERO` reads every event as it arrives.
    pub event_batch: Duration,
    /// Timeout of every non-streaming host request and of opening the event stream (default 5 s).
    pub request_timeout: Duration,
    /// Heartbeat comment interval on SSE streams (default 15 s).
    pub heartbeat: Duration,
    /// `Authorization: Bearer` token required by mutating endpoints, if set.
    pub admin_token: Option<String>,
    /// Seed of the reconnect jitter RNG (each host derives its own stream).
    pub seed: u64,
    /// Lease time-to-live of the in-memory host access (default 10 min).
    pub lease_ttl: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            policy: ReconnectPolicy::default(),
            perf_interval: Duration::from_secs(5),
            server_poll_interval: Duration::from_secs(5),
            quiet_probe_after: Duration::from_secs(60),
            activity_batch: Duration::from_millis(100),
            event_batch: Duration::from_millis(10),
            request_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(15),
            admin_token: None,
            seed: 0x5eed_b00c,
            lease_ttl: Duration::from_secs(600),
        }
    }
}

/// Refuses a non-loopback listen address without an admin token, unless explicitly allowed.
///
/// # Errors
/// [`ControlError::UnauthenticatedAdmin`].
pub fn check_admin_exposure(
    addr: SocketAddr,
    admin_token: Option<&str>,
    allow_unauthenticated_admin: bool,
) -> Result<(), ControlError> {
    let has_token = admin_token.is_some_and(|t| !t.is_empty());
    if addr.ip().is_loopback() || has_token || allow_unauthenticated_admin {
        Ok(())
    } else {
        Err(ControlError::UnauthenticatedAdmin { addr })
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Per-host action queue plus the executor's wake-up.
pub(crate) struct HostActions {
    pub queue: Mutex<ActionQueue>,
    pub wake: Notify,
}

pub(crate) struct Shared {
    pub cfg: Arc<ControlConfig>,
    pub hub: Arc<FleetHub>,
    pub store: Option<Arc<dyn Store>>,
    pub hosts: HashMap<String, HostTarget>,
    pub actions: HashMap<String, Arc<HostActions>>,
    pub access: Arc<InMemoryHostAccess>,
    pub client: client::HostClient,
    pub tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().map(std::mem::take).unwrap_or_default() {
            t.abort();
        }
    }
}

/// The running control plane: cheap to clone; dropping the last clone stops its tasks.
#[derive(Clone)]
pub struct ControlApi {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ControlApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlApi")
            .field("hosts", &self.shared.hosts.len())
            .finish_non_exhaustive()
    }
}

impl ControlApi {
    /// Rebuilds the fleet view from the store (latest model states, last activity, latest
    /// perf), then starts one connector and one action executor per host.
    ///
    /// # Errors
    /// [`ControlError::Config`] for a bad reconnect policy or duplicate host ids;
    /// [`ControlError::Store`] when the store cannot be read.
    pub async fn start(
        cfg: ControlConfig,
        hosts: Vec<HostTarget>,
        store: Option<Arc<dyn Store>>,
    ) -> Result<ControlApi, ControlError> {
        cfg.policy.validate().map_err(|e| ControlError::Config {
            field: "policy",
            problem: e.to_string(),
        })?;
        let hub = Arc::new(FleetHub::new());
        let mut map = HashMap::new();
        for h in &hosts {
            if map.insert(h.provider.clone(), h.clone()).is_some() {
                return Err(ControlError::Config {
                    field: "hosts",
                    problem: format!("duplicate host id {:?}", h.provider),
                });
            }
        }
        restore(&hub, &hosts, store.as_deref()).await?;
        let cfg = Arc::new(cfg);
        let actions: HashMap<String, Arc<HostActions>> = hosts
            .iter()
            .map(|h| {
                (
                    h.provider.clone(),
                    Arc::new(HostActions {
                        queue: Mutex::new(ActionQueue::new(&h.provider)),
                        wake: Notify::new(),
                    }),
                )
            })
            .collect();
        let lease_ms = u64::try_from(cfg.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        let shared = Arc::new(Shared {
            client: client::HostClient::new(cfg.request_timeout),
            cfg: cfg.clone(),
            hub: hub.clone(),
            store: store.clone(),
            hosts: map,
            actions,
            access: Arc::new(InMemoryHostAccess::new(lease_ms)),
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = Vec::new();
        for (i, h) in hosts.into_iter().enumerate() {
            let ctx = connector::HostCtx {
                target: h.clone(),
                hub: hub.clone(),
                store: store.clone(),
                client: shared.client.clone(),
                cfg: cfg.clone(),
            };
            let seed = cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            tasks.push(tokio::spawn(connector::run(ctx, seed)));
            tasks.push(tokio::spawn(actions::run_executor(
                Arc::downgrade(&shared),
                h.provider.clone(),
            )));
        }
        if let Ok(mut t) = shared.tasks.lock() {
            *t = tasks;
        }
        Ok(ControlApi { shared })
    }

    /// The live hub (snapshots, subscriptions, logs).
    pub fn hub(&self) -> &Arc<FleetHub> {
        &self.shared.hub
    }

    /// The shared host-access handle (the bench engine leases hosts through it).
    pub fn host_access(&self) -> Arc<InMemoryHostAccess> {
        self.shared.access.clone()
    }

    /// Leases a host (e.g. for a bench) and publishes the lease on the fleet stream.
    ///
    /// # Errors
    /// [`boo_fleet_core::Denied`] when the host is already leased.
    pub fn acquire_lease(
        &self,
        provider: &str,
        purpose: &str,
        holder: &str,
    ) -> Result<Lease, boo_fleet_core::Denied> {
        let lease = self
            .shared
            .access
            .acquire(provider, purpose, holder, now_ms())?;
        let l = lease.clone();
        self.shared
            .hub
            .apply_one(|f| f.set_lease(provider, Some(l)));
        Ok(lease)
    }

    /// Releases a lease and publishes the change.
    pub fn release_lease(&self, lease: &Lease) -> bool {
        let released = self.shared.access.release(lease);
        self.sync_lease(&lease.provider);
        released
    }

    /// Copies the host-access view of `provider`'s lease into the fleet state (leases taken
    /// directly through [`ControlApi::host_access`] show up on the next action or sync).
    pub fn sync_lease(&self, provider: &str) {
        let cur = self.shared.access.current(provider, now_ms());
        self.shared.hub.apply_one(|f| f.set_lease(provider, cur));
    }

    /// Serves the control API alone on `listener` (404 for other paths) until `shutdown`.
    pub async fn serve<F>(&self, listener: tokio::net::TcpListener, shutdown: F)
    where
        F: std::future::Future<Output = ()> + Send,
    {
        api::serve(self.clone(), listener, shutdown).await;
    }
}

async fn restore(
    hub: &FleetHub,
    hosts: &[HostTarget],
    store: Option<&dyn Store>,
) -> Result<(), ControlError> {
    let Some(store) = store else {
        hub.apply(|f| {
            let d = hosts
                .iter()
                .filter_map(|h| f.add_host(&h.provider))
                .collect();
            ((), d)
        });
        return Ok(());
    };
    let states = store.latest_model_states().await?;
    let seen = store.last_activity().await?;
    let perf = store.latest_perf().await?;
    hub.apply(|f| {
        let mut out = Vec::new();
        for h in hosts {
            let p = h.provider.as_str();
            let models: BTreeMap<String, ModelStatus> = states
                .iter()
                .filter(|s| s.provider_id == p && s.model != "*")
                .map(|s| {
                    let ts = u64::try_from(s.ts.timestamp_millis()).unwrap_or(0);
                    (
                        s.model.clone(),
                        ModelStatus::new(ModelState::from_llama_swap(&s.state), ts),
                    )
                })
                .collect();
            let last_seen = seen
                .iter()
                .filter(|(q, _)| q == p)
                .map(|(_, t)| u64::try_from(t.timestamp_millis()).unwrap_or(0))
                .max();
            let sample = perf
                .iter()
                .filter(|s| s.provider_id == p)
                .filter_map(|s| {
                    let gpu: Vec<boo_fleet_core::wire::GpuSample> =
                        serde_json::from_value(s.gpu.clone()).ok()?;
                    boo_fleet_core::wire::Performance { gpu, sys: vec![] }.latest()
                })
                .max_by_key(|s| s.at);
            if models.is_empty() && last_seen.is_none() && sample.is_none() {
                out.extend(f.add_host(p));
            } else {
                out.push(f.restore_host(p, last_seen, models, sample));
            }
        }
        ((), out)
    });
    Ok(())
}
