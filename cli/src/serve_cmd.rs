//! `booctl serve`: runs the gateway in this process through the same library entry point as
//! `examples/gateway.rs` (`boo_gateway_http::run`), with the telemetry store wired in.
//!
//! The store is `--store`, else `$BOOCONTROL_STORE`, else `sqlite://boocontrol.db` in the
//! working directory. With `--demo` and neither set, the store is a SQLite file in a fresh
//! temporary directory that is deleted on exit. `--no-telemetry` runs without a store (no
//! request records, no `/api/activity`, `/api/usage`, `/api/settings`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use boo_provider_registry::{ProcessEnv, Registry};

use crate::Global;

/// Options of `booctl serve` (the config file is the global `--config`).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Listen address (default: the config's gateway.listen, else 127.0.0.1:9503).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Telemetry store URL: sqlite://PATH or postgres://… (else $BOOCONTROL_STORE).
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Do not record requests (no store is opened).
    #[arg(long, conflicts_with = "store")]
    pub no_telemetry: bool,
    /// Start the two-host fleet-sim demo fleet in-process and route to it.
    #[arg(long)]
    pub demo: bool,
    /// Seconds between inventory polls (GET /v1/models of each host).
    #[arg(long, default_value_t = 10)]
    pub poll_secs: u64,
}

// Kept identical to `demo_registry` in examples/gateway.rs (demo models, tags, policies).
/// Registry JSON routing to the demo fleet's hosts (and the `embedding` host's sidecar).
fn demo_registry(fleet: &boo_fleet_sim::Fleet) -> anyhow::Result<Registry> {
    let sam = fleet
        .host("sam-desktop")
        .context("demo fleet has no sam-desktop host")?;
    let emb = fleet
        .host("embedding")
        .context("demo fleet has no embedding host")?;
    let mut embedding = serde_json::json!({
        "id": "embedding", "label": "Embedding box (P104-100)", "kind": "llama-swap",
        "base_url": emb.base_url(),
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
              "base_url": sam.base_url(), "default": true,
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
        // Demo routing policies (issue 6): try `auto`, `auto:code`, `auto:fast`; the 4k-context
        // model is skipped for long prompts, loaded models win over cold ones.
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
    let loaded = boo_provider_registry::from_json_str(&doc.to_string(), &ProcessEnv)?;
    Ok(loaded.registry)
}

/// Runs `booctl serve` until Ctrl-C / SIGTERM.
pub fn run(args: &ServeArgs, global: &Global) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(args, global))
}

async fn serve(args: &ServeArgs, global: &Global) -> anyhow::Result<()> {
    let mut _fleet = None;
    let mut _demo_dir = None;
    let env = |k: &str| std::env::var(k).ok();
    let registry = if args.demo {
        let fleet = boo_fleet_sim::Fleet::start(boo_fleet_sim::Fleet::demo_spec())
            .await
            .context("starting the demo fleet")?;
        let reg = demo_registry(&fleet)?;
        _fleet = Some(fleet);
        reg
    } else {
        let loaded = global.load_registry()?;
        for w in &loaded.warnings {
            eprintln!("warning: config: {w}");
        }
        loaded.registry
    };
    let mut opts = boo_gateway_http::RunOptions::new(Arc::new(registry));
    opts.listen = args.listen;
    opts.poll_every = Duration::from_secs(args.poll_secs.max(1));
    if !args.no_telemetry {
        let url =
            if args.demo && args.store.is_none() && env(boo_telemetry_store::STORE_ENV).is_none() {
                let dir = tempfile::tempdir()
                    .context("creating a temporary directory for the demo store")?;
                let url = format!("sqlite://{}/boocontrol-demo.db", dir.path().display());
                _demo_dir = Some(dir);
                url
            } else {
                boo_telemetry_store::store_url(args.store.as_deref(), &env)
            };
        let scheme = url.split(':').next().unwrap_or_default().to_string();
        let store = boo_gateway_http::StoreOptions::from_url(url).context("retention settings")?;
        eprintln!("telemetry store: {scheme}");
        opts.store = Some(store);
    }
    let addr = opts.listen_addr()?;
    println!("boocontrol gateway on http://{addr}");
    boo_gateway_http::run(opts, boo_gateway_http::shutdown_signal()).await?;
    Ok(())
}
