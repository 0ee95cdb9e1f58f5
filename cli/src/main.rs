//! `booctl`, the boocontrol ops CLI.
//!
//! Command groups live in one module each (`config_cmd`, `resolve_cmd`, …); `main` parses
//! the arguments, dispatches, and maps errors to exit codes (see [`exit_code`]):
//!
//! | code | meaning |
//! | ---- | ------- |
//! | 0 | success |
//! | 1 | unexpected failure (IO error, gateway unreachable, gateway refused an action, …) |
//! | 2 | invalid configuration (missing file, bad JSON, validation problems) or bad usage |
//! | 3 | the model could not be resolved (unknown/disabled provider, malformed id, virtual model) |
//!
//! Results go to stdout; errors and warnings go to stderr.

mod activity_cmd;
mod bench_cmd;
mod config_cmd;
mod favorites_cmd;
mod fleet_cmd;
mod http;
mod models_cmd;
mod output;
mod policy_cmd;
mod resolve_cmd;
mod retention_cmd;
mod route_cmd;
mod serve_cmd;
mod usage_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use boo_provider_registry::{ConfigError, ConfigSource, Loaded, ProcessEnv, ResolveError};
use clap::{Parser, Subcommand};

/// Same allocator as the gateway example (`booctl serve` runs the same server).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Default gateway URL for commands that talk to a running gateway.
pub const DEFAULT_GATEWAY_URL: &str = "http://127.0.0.1:9503";

/// boocontrol ops CLI: check configs, resolve models, and drive a running gateway's fleet.
#[derive(Debug, Parser)]
#[command(
    name = "booctl",
    version,
    about = "boocontrol ops CLI: check configs, resolve model ids, talk to a running gateway",
    after_help = "Exit codes: 0 ok, 1 unexpected failure, 2 invalid configuration or usage, 3 model not resolvable."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Config file (else $BOOCONTROL_CONFIG, else $LLAMA_PROVIDERS_PATH, else legacy env vars).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// URL of a running boocontrol gateway (for commands that talk to one).
    #[arg(long, global = true, env = "BOOCONTROL_URL", default_value = DEFAULT_GATEWAY_URL, value_name = "URL")]
    pub gateway: String,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Global {
    /// Loads the registry from `--config` or the usual discovery order.
    pub fn load_registry(&self) -> Result<Loaded, ConfigError> {
        boo_provider_registry::load(
            ConfigSource::Discover {
                cli: self.config.clone(),
            },
            &ProcessEnv,
        )
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check, print an example of, or print the JSON Schema of the config file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCmd),
    /// Show where a model id routes: provider, wire model, lane and target URL.
    Resolve(resolve_cmd::ResolveArgs),
    #[command(flatten)]
    Fleet(fleet_cmd::FleetCommands),
    /// Recent requests from the gateway's store, newest first (or follow new ones).
    Activity(activity_cmd::ActivityArgs),
    /// Token totals by source, model or provider over a time range.
    Usage(usage_cmd::UsageArgs),
    /// List, add or remove favorite models (kept in the gateway's store).
    #[command(subcommand)]
    Favorites(favorites_cmd::FavoritesCmd),
    /// Roll up and prune old telemetry directly in the store.
    #[command(subcommand)]
    Retention(retention_cmd::RetentionCmd),
    /// Run the gateway (same code path as examples/gateway.rs) with the telemetry store.
    Serve(serve_cmd::ServeArgs),
    /// List, show, set or delete the gateway's `auto:*` routing policies.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// Explain where an `auto:*` model would route right now (sends nothing to a model).
    #[command(subcommand)]
    Route(route_cmd::RouteCmd),
    /// Models the gateway serves (policies included), or `--scores` for advisory scores.
    Models(models_cmd::ModelsArgs),
    /// Speed benchmarks run inside the gateway: run, list, show, compare, baseline set.
    #[command(subcommand)]
    Bench(bench_cmd::BenchCmd),
}

/// Maps an error chain to the documented exit code.
fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ConfigError>() {
            return match e {
                ConfigError::Io { .. } => 1,
                _ => 2,
            };
        }
        if cause.downcast_ref::<ResolveError>().is_some() {
            return 3;
        }
    }
    1
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Config(cmd) => config_cmd::run(cmd, &cli.global),
        Command::Resolve(args) => resolve_cmd::run(args, &cli.global),
        Command::Fleet(cmd) => fleet_cmd::run(cmd, &cli.global),
        Command::Activity(args) => activity_cmd::run(args, &cli.global),
        Command::Usage(args) => usage_cmd::run(args, &cli.global),
        Command::Favorites(cmd) => favorites_cmd::run(cmd, &cli.global),
        Command::Retention(cmd) => retention_cmd::run(cmd, &cli.global),
        Command::Serve(args) => serve_cmd::run(args, &cli.global),
        Command::Policy(cmd) => policy_cmd::run(cmd, &cli.global),
        Command::Route(cmd) => route_cmd::run(cmd, &cli.global),
        Command::Models(args) => models_cmd::run(args, &cli.global),
        Command::Bench(cmd) => bench_cmd::run(cmd, &cli.global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}
