//! Runs a fake llama-swap / llama-server fleet from a spec (default: the two-host demo fleet).
//!
//! ```text
//! cargo run --example sim-host                                   # demo fleet, real-time speeds
//! cargo run --example sim-host -- --spec fleet-sim/bench-host.yaml --threads 1
//! cargo run --example sim-host -- --time-scale 0.01              # 100x faster loads and tokens
//! ```
//!
//! Prints one line per host (`id  mode  url`) and runs until Ctrl-C.

use std::path::PathBuf;

use anyhow::Context as _;
use boo_fleet_sim::{Fleet, FleetSpec, Mode, SimHost};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Run emulated llama-swap / llama-server hosts")]
struct Args {
    /// Fleet spec (YAML or JSON). Default: the built-in demo fleet (examples/fleet-demo.yaml).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Runtime threads: 1 = a current-thread runtime (pin it with `taskset -c 0`).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Overrides the fleet's time scale (0.01 = everything 100x faster).
    #[arg(long)]
    time_scale: Option<f64>,
}

fn describe(h: &SimHost, indent: &str) {
    let mode = match h.spec().mode {
        Mode::LlamaSwap => match &h.spec().version {
            Some(v) => format!("llama-swap {v}"),
            None => format!("llama-swap {:?}", h.spec().api).to_lowercase(),
        },
        Mode::LlamaServer => "llama-server".to_owned(),
    };
    let models: Vec<&str> = h.spec().models.iter().map(|m| m.id.as_str()).collect();
    println!(
        "{indent}{:<20} {:<22} {}  models: {}",
        h.id(),
        mode,
        h.base_url(),
        models.join(", ")
    );
    if let Some(s) = h.sidecar() {
        describe(s, "  sidecar ");
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut spec = match &args.spec {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            FleetSpec::from_yaml(&text).with_context(|| format!("spec {}", p.display()))?
        }
        None => Fleet::demo_spec(),
    };
    if let Some(s) = args.time_scale {
        anyhow::ensure!(
            s.is_finite() && s > 0.0,
            "--time-scale must be a positive number"
        );
        spec.time_scale = Some(s);
        for h in &mut spec.hosts {
            h.time_scale = None;
        }
    }
    let rt = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        let fleet = Fleet::start(spec).await.context("starting the fleet")?;
        for h in fleet.hosts() {
            describe(h, "");
        }
        println!("ready; Ctrl-C to stop");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        drop(fleet);
        Ok(())
    })
}
