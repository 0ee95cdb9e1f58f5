//! Command-line launcher shared by `examples/gateway.rs` and `booctl serve`.
//!
//! Both binaries flatten [`ServeArgs`] into their clap parser and call [`serve`], so there is
//! exactly one start-up code path: load the registry (or start the in-process fleet-sim demo
//! fleet with [`demo_registry`]), open the telemetry store, follow the fleet, serve until
//! Ctrl-C / SIGTERM. A config file is watched and hot-reloaded (see
//! [`RunOptions::config_file`](crate::RunOptions::config_file)); connections are served by
//! `--workers` thread-per-core workers (default one per CPU).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use boo_provider_registry::{ConfigSource, ProcessEnv, Registry};

use crate::{GatewayError, RunOptions, StoreOptions};

/// Gateway start-up options (the config file path is passed separately, because `booctl`
/// has it as a global flag).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Listen address (default: the config's gateway.listen, else 127.0.0.1:9503).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Telemetry store URL: sqlite://PATH or postgres://… (else $BOOCONTROL_STORE, else
    /// sqlite://boocontrol.db; with --demo, a temporary SQLite file).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Do not open a store: requests are only logged (no /api/activity, /api/usage, /api/settings).
    #[arg(long, conflicts_with = "store")]
    pub no_telemetry: bool,
    /// Start the two-host fleet-sim demo fleet in-process and route to it.
    #[arg(long)]
    pub demo: bool,
    /// Seconds between inventory polls (GET /v1/models of each host).
    #[arg(long, default_value_t = 10)]
    pub poll_secs: u64,
    /// Do not follow the hosts (no /api/fleet, connectors, actions).
    #[arg(long)]
    pub no_fleet: bool,
    /// Allow listening on a non-loopback address without `gateway.admin_token`.
    #[arg(long)]
    pub allow_unauthenticated_admin: bool,
    /// Worker threads serving connections, each with its own runtime and upstream pools
    /// (default: one per CPU; 0 = all connections on the main runtime).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Busy-poll budget in µs of a worker thread serving a single connection, before it sleeps
    /// (default 200; 0 = never spin). Lower latency at low concurrency for a little CPU.
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub spin_us: Option<u64>,
    /// Pin worker `i` to the `i`-th allowed CPU when there is one worker per allowed CPU (the
    /// default count). Pays when the machine runs little else; costs when a busy local
    /// upstream shares the CPUs.
    #[arg(long)]
    pub pin_workers: bool,
}

/// The main async runtime for [`serve`] (both binaries build theirs here).
///
/// When connections are served by worker threads (`--workers` not `0`), its threads only run
/// background work, and on Linux ≥ 6.12 they ask for a long scheduler slice
/// ([`DEFAULT_MAIN_SLICE_US`](crate::slice::DEFAULT_MAIN_SLICE_US),
/// [`MAIN_SLICE_ENV`](crate::slice::MAIN_SLICE_ENV)) so threads woken next to them go first.
pub fn runtime(args: &ServeArgs) -> Result<tokio::runtime::Runtime, LaunchError> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if args.workers != Some(0) {
        let slice = crate::slice::main_slice_from_env(&|k| std::env::var(k).ok())
            .map_err(|e| LaunchError::Gateway(GatewayError::Config(e)))?;
        if let Some(us) = slice {
            b.on_thread_start(move || {
                crate::slice::set_current_thread_slice(us);
            });
        }
    }
    b.build().map_err(|e| {
        LaunchError::Gateway(GatewayError::Config(format!(
            "cannot start the async runtime: {e}"
        )))
    })
}

/// A start-up failure of [`serve`].
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The config file (or legacy environment) is invalid.
    #[error("loading the provider config: {0}")]
    Config(#[from] boo_provider_registry::ConfigError),
    /// The demo fleet could not start.
    #[error("starting the demo fleet: {0}")]
    Demo(String),
    /// The store URL or retention settings are invalid.
    #[error("telemetry store: {0}")]
    Store(#[from] boo_telemetry_store::StoreError),
    /// A local resource (temporary directory) could not be created.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The gateway failed to start or stopped with an error.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// Registry routing to the demo fleet's hosts (and the `embedding` host's sidecar), with tags
/// and the demo `auto`, `auto:code` and `auto:fast` policies.
pub fn demo_registry(fleet: &boo_fleet_sim::Fleet) -> Result<Registry, LaunchError> {
    let host = |id: &str| {
        fleet
            .host(id)
            .ok_or_else(|| LaunchError::Demo(format!("demo fleet has no `{id}` host")))
    };
    let sam = host("sam-desktop")?;
    let emb = host("embedding")?;
    let mut embedding = serde_json::json!({
        "id": "embedding", "label": "Embedding box (P104-100)", "kind": "llama-swap",
        "base_url": emb.base_url(), "os": "Linux", "gpu_label": "P104-100 8GB",
        "models": [
            { "id": "deepseek-r1-qwen3-8b", "tags": ["chat"] },
            { "id": "qwen3-4b", "tags": ["chat", "code", "fast"] },
            { "id": "llama3.2-1b", "tags": ["chat", "fast"] },
        ],
    });
    if let Some(side) = emb.sidecar() {
        let models: Vec<String> = side.spec().models.iter().map(|m| m.id.clone()).collect();
        embedding["sidecar"] = serde_json::json!({ "url": side.base_url(), "models": models });
    }
    let doc = serde_json::json!({
        "providers": [
            { "id": "sam-desktop", "label": "Sam's desktop (RTX 5090)", "kind": "llama-swap",
              "base_url": sam.base_url(), "default": true, "os": "Windows", "gpu_label": "RTX 5090 32GB",
              "models": [
                { "id": "qwen3-coder-30b-a3b", "tags": ["chat", "code"] },
                { "id": "qwen3-32b", "tags": ["chat"] },
                { "id": "gemma3-27b", "tags": ["chat"] },
                { "id": "gpt-oss-20b", "tags": ["chat", "code", "fast"] },
                { "id": "deepseek-r1-qwen3-8b", "tags": ["chat"] },
                { "id": "llama3.2-3b-4k", "tags": ["chat", "fast"] },
              ] },
            embedding,
        ],
        // The 4k-context model is skipped for long prompts; loaded models win over cold ones.
        "policies": [
            { "name": "auto", "description": "any chat model, loaded first, then fastest",
              "candidates": ["tag:chat"], "order": ["prefer_loaded", "fastest"] },
            { "name": "auto:code", "description": "the coder on the desktop, then fallbacks",
              "candidates": ["sam-desktop/qwen3-coder-30b-a3b", "sam-desktop/gpt-oss-20b", "embedding/qwen3-4b"],
              "order": ["prefer_loaded", "priority"] },
            { "name": "auto:fast", "description": "small fast models, loaded first",
              "candidates": ["tag:fast"], "order": ["prefer_loaded", "fastest"],
              "filters": { "max_wait_ms": 2000 } },
        ]
    });
    Ok(boo_provider_registry::from_json_str(&doc.to_string(), &ProcessEnv)?.registry)
}

/// Starts the gateway described by `args` and serves until Ctrl-C / SIGTERM.
///
/// `config` is the `--config` path (else `BOOCONTROL_CONFIG`, `LLAMA_PROVIDERS_PATH`, then
/// the legacy environment variables); it is ignored with `--demo`. `sink` receives every
/// request record when no store is opened (`--no-telemetry`).
pub async fn serve(
    args: &ServeArgs,
    config: Option<PathBuf>,
    sink: Option<Arc<dyn crate::TelemetrySink>>,
) -> Result<(), LaunchError> {
    let mut _fleet = None;
    let mut config_file = None;
    let registry = if args.demo {
        let fleet = boo_fleet_sim::Fleet::start(boo_fleet_sim::Fleet::demo_spec())
            .await
            .map_err(|e| LaunchError::Demo(e.to_string()))?;
        for h in fleet.hosts() {
            tracing::info!(host = h.id(), url = %h.base_url(), "demo host up");
        }
        let reg = demo_registry(&fleet)?;
        _fleet = Some(fleet);
        reg
    } else {
        let loaded =
            boo_provider_registry::load(ConfigSource::Discover { cli: config }, &ProcessEnv)?;
        for w in &loaded.warnings {
            tracing::warn!("config: {w}");
        }
        // A config file (not the legacy environment) is watched for hot reload.
        let origin = PathBuf::from(&loaded.origin);
        if origin.is_file() {
            config_file = Some(origin);
        }
        loaded.registry
    };
    let mut opts = RunOptions::new(Arc::new(registry));
    opts.listen = args.listen;
    opts.poll_every = Duration::from_secs(args.poll_secs.max(1));
    opts.follow_fleet = !args.no_fleet;
    opts.allow_unauthenticated_admin = args.allow_unauthenticated_admin;
    if let Some(n) = args.workers {
        opts.workers = n;
    }
    if let Some(us) = args.spin_us {
        opts.worker_spin = Duration::from_micros(us);
    }
    opts.pin_workers = args.pin_workers;
    opts.config_file = config_file;
    if let Some(sink) = sink {
        opts.sink = sink;
    }
    let mut _demo_dir = None;
    if !args.no_telemetry {
        let env = |k: &str| std::env::var(k).ok();
        let url =
            if args.demo && args.store.is_none() && env(boo_telemetry_store::STORE_ENV).is_none() {
                let dir = tempfile::tempdir()?;
                let url = format!("sqlite://{}/boocontrol-demo.db", dir.path().display());
                _demo_dir = Some(dir);
                url
            } else {
                boo_telemetry_store::store_url(args.store.as_deref(), &env)
            };
        tracing::info!(
            backend = url.split(':').next().unwrap_or_default(),
            "telemetry store"
        );
        opts.store = Some(StoreOptions::from_url(url)?);
    }
    let addr = opts.listen_addr()?;
    println!(
        "boocontrol gateway on http://{addr}  (GET /v1/models, POST /v1/chat/completions, GET /api/fleet, /metrics)"
    );
    crate::run(opts, crate::shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slice of a task spawned on `rt` (so it runs on one of the runtime's worker threads).
    fn worker_slice(rt: &tokio::runtime::Runtime) -> Option<u64> {
        rt.block_on(async {
            tokio::spawn(async { crate::slice::current_thread_slice() })
                .await
                .unwrap()
        })
    }

    #[test]
    fn in_worker_mode_the_main_runtime_threads_ask_for_the_long_slice() {
        let Some(default) = crate::slice::current_thread_slice() else {
            eprintln!("no se.slice in /proc/thread-self/sched: kernel without EEVDF slices");
            return;
        };
        let want = crate::slice::DEFAULT_MAIN_SLICE_US * 1000;
        let workers = runtime(&ServeArgs::default()).unwrap();
        let got = worker_slice(&workers).unwrap();
        if got == default && default != want {
            eprintln!("kernel ignores custom slices (before 6.12): se.slice {got}");
            return;
        }
        assert_eq!(got, want, "worker mode: main runtime thread slice");
        // Everything on the main runtime (`--workers 0`): its threads serve requests and keep
        // the kernel's slice.
        let plain = runtime(&ServeArgs {
            workers: Some(0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(worker_slice(&plain), Some(default));
    }
}
