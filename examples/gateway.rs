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

use boo_gateway_http::launch::{ServeArgs, runtime, serve};
use boo_gateway_http::{RequestRecord, TelemetrySink};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

/// mimalloc: the proxy allocates small short-lived buffers per request from several threads;
/// glibc malloc spent about a tenth of the gateway's CPU time on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "boocontrol gateway: one OpenAI-compatible endpoint for a llama.cpp fleet")]
struct Args {
    /// Config file (else BOOCONTROL_CONFIG, LLAMA_PROVIDERS_PATH, then the legacy env variables).
    #[arg(long)]
    config: Option<PathBuf>,
    #[command(flatten)]
    serve: ServeArgs,
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

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // Same start-up path as `booctl serve` (runtime included); with --no-telemetry requests
    // are only logged.
    let rt = runtime(&args.serve)?;
    rt.block_on(serve(&args.serve, args.config, Some(Arc::new(LogSink))))?;
    Ok(())
}
