//! `booctl serve`: runs the gateway in this process through exactly the same start-up code as
//! `examples/gateway.rs` (`boo_gateway_http::launch::serve`), with the telemetry store wired in
//! and the fleet followed (control API at `/api/fleet`).
//!
//! The store is `--store`, else `$BOOCONTROL_STORE`, else `sqlite://boocontrol.db` in the
//! working directory. With `--demo` and neither set, the store is a SQLite file in a fresh
//! temporary directory that is deleted on exit. `--no-telemetry` runs without a store (no
//! request records, no `/api/activity`, `/api/usage`, `/api/settings`).

use anyhow::Context as _;

pub use boo_gateway_http::launch::ServeArgs;

use crate::Global;

/// Runs `booctl serve` until Ctrl-C / SIGTERM.
pub fn run(args: &ServeArgs, global: &Global) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let rt = boo_gateway_http::launch::runtime(args).context("starting the async runtime")?;
    rt.block_on(boo_gateway_http::launch::serve(
        args,
        global.config.clone(),
        None,
    ))?;
    Ok(())
}
