//! boo-gateway-http: the OpenAI-compatible fleet gateway.
//!
//! One endpoint for a fleet of llama-swap / llama-server hosts, other gateways and OpenAI-style
//! clouds. A request names a composite model (`sam-desktop/qwen3-coder`); the gateway finds the
//! top-level `"model"` with a byte skimmer (no deserialization), resolves it through a
//! [`ModelRouter`] (normally [`RegistryRouter`] over `boo_provider_registry::Registry`), splices
//! the bare wire id into the body, and forwards it over a pooled keep-alive connection. The
//! answer streams back unmodified while an SSE scanner picks TTFT, `usage` and llama.cpp
//! `timings`; each finished request becomes one `RequestRecord` through a [`TelemetrySink`].
//!
//! Errors are mapped in one place ([`GatewayError`]) to OpenAI-shaped bodies
//! (`{"error":{"message","type","param","code"}}`), so SDKs raise their usual exceptions.
//!
//! ```no_run
//! use boo_gateway_http::{Gateway, GatewayConfig, NoopSink, StaticRouter, UpstreamSpec, UpstreamTimeouts};
//! use std::sync::Arc;
//!
//! # async fn demo() -> Result<(), boo_gateway_http::GatewayError> {
//! let router = StaticRouter::new().provider("sam-desktop", &["qwen3-8b"]);
//! let upstreams = vec![UpstreamSpec {
//!     provider: "sam-desktop".into(),
//!     base_url: "http://127.0.0.1:8080".into(),
//!     base_includes_version: false,
//!     sidecar_url: None,
//!     headers: vec![],
//!     has_api_key: false,
//!     timeouts: UpstreamTimeouts::default(),
//!     max_concurrency: None,
//! }];
//! let gw = Gateway::new(GatewayConfig::default(), Arc::new(router), &upstreams, Arc::new(NoopSink))?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9503").await?;
//! gw.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
//!
//! Invariants: a request whose provider is unknown never reaches an upstream; the client's
//! `Authorization` never reaches a provider that has its own key; secrets never appear in logs
//! or error bodies.

pub mod affinity;
pub mod auto;
pub mod bench_api;
pub mod control;
mod error;
pub mod launch;
mod metrics;
mod proxy;
mod registry;
mod router;
mod scan;
mod server;
mod skim;
pub mod slice;
mod spin;
pub mod store_api;
mod telemetry;
mod upstream;
mod wire;

pub use error::GatewayError;
pub use metrics::{Histogram, Metrics, Series};
pub use registry::{FavoritesSource, RegistryRouter, upstream_specs};
pub use router::{ListedModel, ModelRouter, Routed, StaticRouter};
pub use scan::{SseScanner, TailScanner, UsageInfo};
pub use skim::{SkimError, Skimmed, skim, splice_model};
pub use store_api::{StoreApi, StoreOptions, StoreTarget, StoreWiring};
pub use telemetry::{ChannelSink, MemorySink, NoopSink, RequestRecord, TelemetrySink};
pub use upstream::{Upstream, UpstreamSpec, UpstreamTimeouts};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::task::{Context, Poll};
use std::time::Duration;

/// Server-side settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest accepted request body (default 32 MiB); larger → 413.
    pub max_body_bytes: u64,
    /// Client keys; when non-empty, `/v1/*` routes require `Authorization: Bearer <key>`.
    pub api_keys: Vec<String>,
    /// How long in-flight requests may run after shutdown starts (default 30 s).
    pub shutdown_grace: Duration,
    /// Busy-poll budget of a worker thread that serves a single connection
    /// ([`Gateway::serve_workers`] only; default [`DEFAULT_WORKER_SPIN`], `ZERO` = never spin).
    /// Such a worker reads its sockets without parking for up to this long before it sleeps,
    /// which saves the wake-ups that dominate latency at low concurrency; with two or more
    /// connections on a worker it never spins. Read when the workers start (not hot-reloaded).
    pub worker_spin: Duration,
    /// Pin worker `i` to the `i`-th CPU the process may run on when there is one worker per
    /// such CPU ([`Gateway::serve_workers`] only; default false; see [`affinity`] for when it
    /// pays and when it costs). Read when the workers start.
    pub pin_workers: bool,
}

/// Default [`GatewayConfig::worker_spin`]: 200 µs (a local upstream's answer and a client's next request
/// usually come sooner).
pub const DEFAULT_WORKER_SPIN: Duration = Duration::from_micros(200);

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 32 * 1024 * 1024,
            api_keys: Vec::new(),
            shutdown_grace: Duration::from_secs(30),
            worker_spin: DEFAULT_WORKER_SPIN,
            pin_workers: false,
        }
    }
}

/// Shared state of a running gateway.
pub(crate) struct Inner {
    cfg: GatewayConfig,
    router: Arc<dyn ModelRouter>,
    upstreams: HashMap<Box<str>, Arc<Upstream>>,
    sink: Arc<dyn TelemetrySink>,
    // Shared with every reloaded generation of the state (see `Inner::reloaded`).
    metrics: Arc<Metrics>,
    api_keys: Vec<Vec<u8>>,
    id_prefix: String,
    id_counter: Arc<AtomicU64>,
    shutting_down: Arc<AtomicBool>,
    store_api: Option<Arc<StoreApi>>,
    auto: Option<Arc<auto::AutoRouter>>,
    control: Option<control::ControlApi>,
    bench: Option<Arc<bench_api::BenchApi>>,
}

/// The gateway: cheap to clone, serve it with [`Gateway::serve`].
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("providers", &self.inner.upstreams.len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds a gateway from a router, the upstreams it may route to, and a telemetry sink.
    pub fn new(
        cfg: GatewayConfig,
        router: Arc<dyn ModelRouter>,
        upstreams: &[UpstreamSpec],
        sink: Arc<dyn TelemetrySink>,
    ) -> Result<Self, GatewayError> {
        let mut map = HashMap::new();
        for spec in upstreams {
            map.insert(
                spec.provider.as_str().into(),
                Arc::new(Upstream::new(spec)?),
            );
        }
        Ok(Self::with_upstreams(cfg, router, map, sink))
    }

    /// Like [`Gateway::new`] with pre-built upstreams (to tune their queues).
    pub fn with_upstreams(
        cfg: GatewayConfig,
        router: Arc<dyn ModelRouter>,
        upstreams: HashMap<Box<str>, Arc<Upstream>>,
        sink: Arc<dyn TelemetrySink>,
    ) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let api_keys = cfg.api_keys.iter().map(|k| k.as_bytes().to_vec()).collect();
        Self {
            inner: Arc::new(Inner {
                cfg,
                router,
                upstreams,
                sink,
                metrics: Arc::new(Metrics::new()),
                api_keys,
                id_prefix: format!("gw-{:08x}", h.finish() as u32),
                id_counter: Arc::new(AtomicU64::new(0)),
                shutting_down: Arc::new(AtomicBool::new(false)),
                store_api: None,
                auto: None,
                control: None,
                bench: None,
            }),
        }
    }

    /// Routes `auto:*` requests through `auto`'s policies (and serves `/api/routing/*`).
    /// Call before the gateway is cloned or served; later calls do nothing.
    pub fn with_auto(mut self, auto: Arc<auto::AutoRouter>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.auto = Some(auto);
        }
        self
    }

    /// Serves `/api/activity`, `/api/usage`, `/api/settings` and `/api/favorites` from `api`
    /// and appends its writer counters to `/metrics`. Call before cloning or serving.
    pub fn with_store_api(mut self, api: Arc<StoreApi>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.store_api = Some(api),
            None => tracing::warn!("with_store_api called on a shared gateway; ignored"),
        }
        self
    }

    /// Serves the fleet control API (`/api/fleet…`, `/api/logs/…`, `/api/captures/…`,
    /// `/api/hosts/…`) from `control`. Call before cloning or serving.
    pub fn with_control(mut self, control: control::ControlApi) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.control = Some(control),
            None => tracing::warn!("with_control called on a shared gateway; ignored"),
        }
        self
    }

    /// Serves `/api/bench/…` (speed benchmarks run inside the gateway). Call before cloning or
    /// serving.
    pub fn with_bench(mut self, bench: Arc<bench_api::BenchApi>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.bench = Some(bench),
            None => tracing::warn!("with_bench called on a shared gateway; ignored"),
        }
        self
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting and lets in-flight
    /// requests finish for up to [`GatewayConfig::shutdown_grace`].
    pub async fn serve<F>(
        self,
        listener: tokio::net::TcpListener,
        shutdown: F,
    ) -> Result<(), GatewayError>
    where
        F: Future<Output = ()> + Send,
    {
        server::serve(slot(self.inner), listener, shutdown).await
    }

    /// Like [`Gateway::serve`], thread-per-core: the caller's runtime only accepts; connections
    /// are handed round robin to `workers` threads, each with its own current-thread runtime
    /// and its own upstream connection pools, so a request and its upstream connection never
    /// change threads. Shutdown stops accepting, then every worker lets its in-flight requests
    /// finish for up to [`GatewayConfig::shutdown_grace`].
    pub async fn serve_workers<F>(
        self,
        listener: tokio::net::TcpListener,
        workers: usize,
        shutdown: F,
    ) -> Result<(), GatewayError>
    where
        F: Future<Output = ()> + Send,
    {
        server::serve_workers(slot(self.inner), listener, workers, shutdown).await
    }
}

/// The state a running server reads per request; hot reload swaps in a new generation while
/// in-flight requests keep the one they started with.
pub(crate) type Slot = Arc<std::sync::RwLock<Arc<Inner>>>;

fn slot(inner: Arc<Inner>) -> Slot {
    Arc::new(std::sync::RwLock::new(inner))
}

/// The current generation of a [`Slot`].
pub(crate) fn current(slot: &Slot) -> Arc<Inner> {
    slot.read().unwrap_or_else(|e| e.into_inner()).clone()
}

impl Inner {
    /// A new generation with `routes` (router, upstreams, `auto:*` policies, client keys and
    /// body limit from a reloaded registry); metrics, counters, the sink and the store,
    /// control and bench APIs are shared with `self`.
    fn reloaded(&self, routes: &Routes) -> Inner {
        Inner {
            cfg: GatewayConfig {
                shutdown_grace: self.cfg.shutdown_grace,
                worker_spin: self.cfg.worker_spin,
                pin_workers: self.cfg.pin_workers,
                ..routes.cfg.clone()
            },
            router: routes.router.clone(),
            upstreams: routes.upstreams.clone(),
            sink: self.sink.clone(),
            metrics: self.metrics.clone(),
            api_keys: routes
                .cfg
                .api_keys
                .iter()
                .map(|k| k.as_bytes().to_vec())
                .collect(),
            id_prefix: self.id_prefix.clone(),
            id_counter: self.id_counter.clone(),
            shutting_down: self.shutting_down.clone(),
            store_api: self.store_api.clone(),
            auto: Some(routes.auto.clone()),
            control: self.control.clone(),
            bench: self.bench.clone(),
        }
    }
}

/// Default worker threads for [`RunOptions::workers`]: one per CPU.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The response body type of every gateway response: a full buffer or a proxied stream.
pub struct RespBody {
    kind: BodyKind,
    /// Marks the request open on its worker thread until the body is dropped (see `spin`).
    active: Option<spin::Active>,
}

enum BodyKind {
    Full(Option<Bytes>),
    Proxy(Box<proxy::ProxyStream>),
    Control(control::ControlBody),
}

impl std::fmt::Debug for RespBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RespBody")
    }
}

impl RespBody {
    pub(crate) fn full(b: Bytes) -> Self {
        Self {
            kind: BodyKind::Full(Some(b)),
            active: None,
        }
    }
    pub(crate) fn proxy(s: Box<proxy::ProxyStream>) -> Self {
        Self {
            kind: BodyKind::Proxy(s),
            active: None,
        }
    }
    pub(crate) fn control(c: control::ControlBody) -> Self {
        Self {
            kind: BodyKind::Control(c),
            active: None,
        }
    }
    /// Keeps `a` (the request's open mark) until this body is dropped.
    pub(crate) fn hold(&mut self, a: spin::Active) {
        self.active = Some(a);
    }
}

impl From<Bytes> for RespBody {
    fn from(b: Bytes) -> Self {
        Self::full(b)
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().kind {
            BodyKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Proxy(s) => Pin::new(&mut **s).poll_frame(cx),
            BodyKind::Control(c) => Pin::new(c)
                .poll_frame(cx)
                .map(|o| o.map(|r| r.map_err(|e| match e {}))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Full(b) => b.is_none(),
            BodyKind::Proxy(s) => s.is_end_stream(),
            BodyKind::Control(c) => c.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            BodyKind::Proxy(s) => s.size_hint(),
            BodyKind::Control(c) => c.size_hint(),
        }
    }
}

/// Everything [`run`] needs besides the shutdown trigger.
pub struct RunOptions {
    /// The loaded registry (providers, gateway settings).
    pub registry: Arc<boo_provider_registry::Registry>,
    /// Listen address; default: the registry's `gateway.listen`, else `127.0.0.1:9503`.
    pub listen: Option<std::net::SocketAddr>,
    /// Where finished-request records go.
    pub sink: Arc<dyn TelemetrySink>,
    /// Inventory poll interval (`GET /v1/models` of each host).
    pub poll_every: Duration,
    /// Favorites for `/api/models` (default: from the store when one is configured).
    pub favorites: Option<Box<dyn Fn() -> Vec<String> + Send + Sync>>,
    /// The telemetry store: when set, every request is recorded there through a batch writer
    /// (replacing `sink`), the store API routes are served and retention runs on a timer.
    pub store: Option<StoreOptions>,
    /// Allow a non-loopback listen address without `gateway.admin_token`
    /// (`--allow-unauthenticated-admin`); otherwise startup refuses.
    pub allow_unauthenticated_admin: bool,
    /// Follow the registry's local hosts and serve the fleet control API (`/api/fleet…`,
    /// `/api/logs/…`, `/api/captures/…`, `POST /api/hosts/…/actions`). Default `false`.
    pub follow_fleet: bool,
    /// Thread-per-core serving ([`Gateway::serve_workers`]) with this many worker threads;
    /// `0` serves every connection on the caller's runtime ([`Gateway::serve`]).
    /// Default: [`default_workers`] (one per CPU).
    pub workers: usize,
    /// Hot reload: the config file `registry` was loaded from. When set, it is checked every
    /// `reload_every` and a changed, valid file replaces providers, policies and client keys
    /// without a restart (the listen address, store and fleet control plane stay).
    pub config_file: Option<std::path::PathBuf>,
    /// How often `config_file` is checked (default 2 s).
    pub reload_every: Duration,
    /// [`GatewayConfig::worker_spin`] (default [`DEFAULT_WORKER_SPIN`]).
    pub worker_spin: Duration,
    /// [`GatewayConfig::pin_workers`] (default false).
    pub pin_workers: bool,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    /// Options with defaults: no telemetry, 10 s inventory polling, registry listen address.
    pub fn new(registry: Arc<boo_provider_registry::Registry>) -> Self {
        Self {
            registry,
            listen: None,
            sink: Arc::new(NoopSink),
            poll_every: Duration::from_secs(10),
            favorites: None,
            store: None,
            allow_unauthenticated_admin: false,
            follow_fleet: false,
            workers: default_workers(),
            config_file: None,
            reload_every: Duration::from_secs(2),
            worker_spin: DEFAULT_WORKER_SPIN,
            pin_workers: false,
        }
    }

    /// The address [`run`] binds: `listen`, else the registry's `gateway.listen`, else `127.0.0.1:9503`.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, GatewayError> {
        if let Some(a) = self.listen {
            return Ok(a);
        }
        match &self.registry.gateway().listen {
            Some(s) => s.parse().map_err(|e| {
                GatewayError::Config(format!("gateway.listen {s:?} is not an address: {e}"))
            }),
            None => Ok(std::net::SocketAddr::from(([127, 0, 0, 1], 9503))),
        }
    }
}

/// Binds the listen address and serves until `shutdown` completes: the whole gateway startup
/// (registry router, inventory poller, upstream pools, client keys, body limit) in one call,
/// shared by `examples/gateway.rs` and `booctl serve`.
pub async fn run<F>(opts: RunOptions, shutdown: F) -> Result<(), GatewayError>
where
    F: Future<Output = ()> + Send,
{
    let addr = opts.listen_addr()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| GatewayError::Config(format!("cannot listen on {addr}: {e}")))?;
    run_on(listener, opts, shutdown).await
}

/// Like [`run`] on an already bound listener (tests bind port 0 and read the address first).
pub async fn run_on<F>(
    listener: tokio::net::TcpListener,
    opts: RunOptions,
    shutdown: F,
) -> Result<(), GatewayError>
where
    F: Future<Output = ()> + Send,
{
    let reg = opts.registry.clone();
    let admin_token = reg
        .gateway()
        .admin_token
        .as_ref()
        .map(|t| t.expose().to_string())
        .filter(|t| !t.is_empty());
    if let Ok(addr) = listener.local_addr() {
        control::check_admin_exposure(
            addr,
            admin_token.as_deref(),
            opts.allow_unauthenticated_admin,
        )
        .map_err(|e| GatewayError::Config(e.to_string()))?;
    }
    let wiring = match opts.store {
        Some(so) => Some(
            StoreWiring::start(so, reg.clone())
                .await
                .map_err(|e| GatewayError::Config(format!("telemetry store: {e}")))?,
        ),
        None => None,
    };
    let sink: Arc<dyn TelemetrySink> = match &wiring {
        Some(w) => Arc::new(w.writer.clone()),
        None => opts.sink,
    };
    // The fleet control plane (when followed) is the router's live source; the inventory
    // poller stays the fallback (`--no-fleet`, clouds).
    let control = if opts.follow_fleet {
        let control_cfg = control::ControlConfig {
            admin_token,
            ..control::ControlConfig::default()
        };
        Some(
            control::ControlApi::start(
                control_cfg,
                control::HostTarget::from_registry(&reg),
                wiring.as_ref().map(|w| w.api.store().clone()),
            )
            .await
            .map_err(|e| GatewayError::Config(e.to_string()))?,
        )
    } else {
        None
    };
    let build = RouteBuilder {
        favorites: opts.favorites.map(Arc::from),
        store_api: wiring.as_ref().map(|w| w.api.clone()),
        control: control.clone(),
        poll_every: opts.poll_every,
        worker_spin: opts.worker_spin,
        pin_workers: opts.pin_workers,
    };
    let routes = build.build(reg.clone()).await?;
    let gw = Gateway::with_upstreams(
        routes.cfg.clone(),
        routes.router.clone(),
        routes.upstreams.clone(),
        sink,
    )
    .with_auto(routes.auto.clone());
    let gw = match &wiring {
        Some(w) => gw.with_store_api(w.api.clone()),
        None => gw,
    };
    let gw = match control {
        Some(c) => gw
            .with_bench(Arc::new(bench_api::BenchApi::new(
                c.clone(),
                reg.clone(),
                wiring.as_ref().map(|w| w.api.store().clone()),
            )))
            .with_control(c),
        None => gw,
    };
    let slot = slot(gw.inner);
    let watcher = match opts.config_file {
        Some(path) => tokio::spawn(watch_config(
            path,
            opts.reload_every,
            build,
            routes,
            slot.clone(),
        )),
        // Keep the routes (and their background tasks) alive while serving.
        None => tokio::spawn(async move {
            let _routes = routes;
            std::future::pending::<()>().await
        }),
    };
    if let Ok(a) = listener.local_addr() {
        tracing::info!(addr = %a, providers = reg.providers().len(), "gateway listening");
    }
    let r = match opts.workers {
        0 => server::serve(slot, listener, shutdown).await,
        n => server::serve_workers(slot, listener, n, shutdown).await,
    };
    // Dropping the routes (inside the watcher) stops their poller and refresher.
    watcher.abort();
    let _ = watcher.await;
    if let Some(w) = wiring {
        w.shutdown().await;
    }
    r
}

/// What [`run_on`] builds from one registry; rebuilt and swapped in on hot reload. Dropping it
/// stops its inventory poller and policy refresher.
struct Routes {
    cfg: GatewayConfig,
    router: Arc<RegistryRouter>,
    upstreams: HashMap<Box<str>, Arc<Upstream>>,
    auto: Arc<auto::AutoRouter>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Routes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The parts of [`run_on`]'s start-up that do not change when the registry does.
struct RouteBuilder {
    favorites: Option<Arc<dyn Fn() -> Vec<String> + Send + Sync>>,
    store_api: Option<Arc<StoreApi>>,
    control: Option<control::ControlApi>,
    poll_every: Duration,
    worker_spin: Duration,
    pin_workers: bool,
}

impl RouteBuilder {
    /// Router (with its inventory poller), upstream pools, `auto:*` router (with its refresher),
    /// client keys and body limit for `reg`.
    async fn build(
        &self,
        reg: Arc<boo_provider_registry::Registry>,
    ) -> Result<Routes, GatewayError> {
        // Upstreams first: a provider that cannot be set up fails the build before any task starts.
        let mut upstreams = HashMap::new();
        for spec in upstream_specs(&reg) {
            upstreams.insert(
                spec.provider.as_str().into(),
                Arc::new(Upstream::new(&spec)?),
            );
        }
        let mut router = RegistryRouter::new(reg.clone());
        if let Some(f) = &self.favorites {
            let f = f.clone();
            router = router.with_favorites(move || f());
        } else if let Some(api) = &self.store_api {
            router = router.with_favorites(api.favorites_fn());
        }
        let router = Arc::new(router);
        let poller = router.spawn_poller(self.poll_every);
        let settings = reg.gateway();
        let cfg = GatewayConfig {
            max_body_bytes: settings.max_body_bytes.unwrap_or(32 * 1024 * 1024),
            api_keys: settings
                .api_keys
                .iter()
                .map(|k| k.expose().to_string())
                .filter(|k| !k.is_empty())
                .collect(),
            worker_spin: self.worker_spin,
            pin_workers: self.pin_workers,
            ..GatewayConfig::default()
        };
        let poller_fleet: Arc<dyn auto::LiveFleet> =
            Arc::new(auto::PollerFleet::new(router.clone()));
        let live: Arc<dyn auto::LiveFleet> = match &self.control {
            Some(c) => Arc::new(auto::HubFleet::new(c.hub().clone(), poller_fleet)),
            None => poller_fleet,
        };
        let (auto, _problems) = auto::AutoRouter::new(reg.clone(), live);
        if let Some(api) = &self.store_api
            && let Err(e) = auto.attach_store(api.store().clone()).await
        {
            tracing::warn!(error = %e, "stored route policies could not be read; using the config's");
        }
        let auto = Arc::new(auto);
        let refresher = {
            let auto = auto.clone();
            let every = self.poll_every;
            tokio::spawn(async move {
                loop {
                    // Give the first inventory poll a moment, then refresh after each one.
                    tokio::time::sleep(every.min(Duration::from_secs(2))).await;
                    auto.refresh().await;
                }
            })
        };
        Ok(Routes {
            cfg,
            router,
            upstreams,
            auto,
            tasks: vec![poller, refresher],
        })
    }
}

/// Size and modification time of `path` (what the config watcher compares).
fn file_stamp(path: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

/// Hot reload: checks `path` every `every`; when it changed and still loads, swaps in routes
/// built from it (new, changed and removed providers, policies, client keys). A broken file
/// is logged and the running configuration stays. In-flight requests finish on the routes
/// they started with.
async fn watch_config(
    path: std::path::PathBuf,
    every: Duration,
    build: RouteBuilder,
    mut routes: Routes,
    slot: Slot,
) {
    let mut last = file_stamp(&path);
    loop {
        tokio::time::sleep(every).await;
        let now = file_stamp(&path);
        if now == last || now.is_none() {
            continue;
        }
        last = now;
        let source = boo_provider_registry::ConfigSource::File(path.clone());
        let loaded = match boo_provider_registry::load(source, &boo_provider_registry::ProcessEnv) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "config reload failed; keeping the running configuration");
                continue;
            }
        };
        for w in &loaded.warnings {
            tracing::warn!("config: {w}");
        }
        let reg = Arc::new(loaded.registry);
        let next = match build.build(reg.clone()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "config reload failed; keeping the running configuration");
                continue;
            }
        };
        let generation = Arc::new(current(&slot).reloaded(&next));
        *slot.write().unwrap_or_else(|e| e.into_inner()) = generation;
        // The old routes' poller and refresher stop; their pools close once idle.
        drop(std::mem::replace(&mut routes, next));
        tracing::info!(path = %path.display(), providers = reg.providers().len(), "configuration reloaded");
    }
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
