//! The boocontrol gateway binary: one OpenAI-compatible endpoint for the whole fleet.
//!
//! ```text
//! cargo run --release --example gateway -- --config boocontrol.json [--listen 127.0.0.1:9503]
//! cargo run --release --example gateway -- --demo      # in-process fleet-sim demo fleet
//! ```
//! Requests are recorded in the telemetry store: `--store URL` (`sqlite://PATH` or
//! `postgres://…`), else `BOOCONTROL_STORE`, else `sqlite://boocontrol.db`; with `--demo` and
//! neither set, a SQLite file in a temporary directory deleted on exit. `--no-telemetry` runs
//! without a store (requests are only logged), e.g. to compare gateway overhead on/off.
//! Then, for example:
//! ```text
//! curl -s localhost:9503/v1/models
//! curl -sN localhost:9503/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model":"sam-desktop/qwen3-coder-30b-a3b","stream":true,"messages":[{"role":"user","content":"hi"}]}'
//! ```
//! Stops on Ctrl-C / SIGTERM, letting in-flight streams finish.

use anyhow::Context as _;
use boo_gateway_http::{RequestRecord, RunOptions, TelemetrySink};
use boo_provider_registry::{ConfigSource, ProcessEnv, Registry};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "boocontrol gateway: one OpenAI-compatible endpoint for a llama.cpp fleet")]
struct Args {
    /// Config file (else BOOCONTROL_CONFIG, LLAMA_PROVIDERS_PATH, then the legacy env variables).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listen address (default: the config's gateway.listen, else 127.0.0.1:9503).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Start the two-host fleet-sim demo fleet in-process and route to it.
    #[arg(long)]
    demo: bool,
    /// Seconds between inventory polls (GET /v1/models of each host).
    #[arg(long, default_value_t = 10)]
    poll_secs: u64,
    /// Telemetry store URL: sqlite://PATH or postgres://… (else $BOOCONTROL_STORE).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Do not open a store: requests are only logged (no /api/activity, /api/usage, /api/settings).
    #[arg(long, conflicts_with = "store")]
    no_telemetry: bool,
}

/// Logs one line per finished request (no secrets: ids, status, timings, token counts).
struct LogSink;

impl TelemetrySink for LogSink {
    fn record(&self, r: RequestRecord) {
        tracing::info!(
            id = %r.request_id, provider = %r.provider_id, model = %r.model, status = r.status,
            error = r.error_class.as_deref().unwrap_or("-"), ms = format!("{:.1}", r.duration_ms),
            ttft_ms = r.ttft_ms.map(|t| format!("{t:.1}")).unwrap_or_default(),
            prompt = r.prompt_tokens.unwrap_or(0), completion = r.completion_tokens.unwrap_or(0),
            "request"
        );
    }
}

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut _fleet = None;
    let registry = if args.demo {
        let fleet = boo_fleet_sim::Fleet::start(boo_fleet_sim::Fleet::demo_spec())
            .await
            .context("starting the demo fleet")?;
        for h in fleet.hosts() {
            tracing::info!(host = h.id(), url = %h.base_url(), "demo host up");
        }
        let reg = demo_registry(&fleet)?;
        _fleet = Some(fleet);
        reg
    } else {
        let loaded = boo_provider_registry::load(
            ConfigSource::Discover {
                cli: args.config.clone(),
            },
            &ProcessEnv,
        )
        .context("loading the provider config")?;
        for w in &loaded.warnings {
            tracing::warn!("config: {w}");
        }
        loaded.registry
    };
    let mut opts = RunOptions::new(Arc::new(registry));
    opts.listen = args.listen;
    opts.sink = Arc::new(LogSink);
    opts.poll_every = Duration::from_secs(args.poll_secs.max(1));
    let mut _demo_dir = None;
    if !args.no_telemetry {
        let env = |k: &str| std::env::var(k).ok();
        let url = if args.demo && args.store.is_none() && env(boo_telemetry_store::STORE_ENV).is_none() {
            let dir = tempfile::tempdir().context("creating a temporary directory for the demo store")?;
            let url = format!("sqlite://{}/boocontrol-demo.db", dir.path().display());
            _demo_dir = Some(dir);
            url
        } else {
            boo_telemetry_store::store_url(args.store.as_deref(), &env)
        };
        tracing::info!(backend = url.split(':').next().unwrap_or_default(), "telemetry store");
        opts.store = Some(boo_gateway_http::StoreOptions::from_url(url).context("retention settings")?);
    }
    let addr = opts.listen_addr()?;
    println!(
        "boocontrol gateway on http://{addr}  (GET /v1/models, POST /v1/chat/completions, /metrics)"
    );
    boo_gateway_http::run(opts, boo_gateway_http::shutdown_signal()).await?;
    Ok(())
}
