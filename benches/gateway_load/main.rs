//! Gateway load benchmark (issue 8, "Performance"): the same upstream measured three ways in one
//! run: **direct**, **through nginx `proxy_pass`** and **through the boocontrol gateway**.
//!
//! ```text
//! cargo bench --bench gateway_load -- --quick      # ~2 min smoke run
//! cargo bench --bench gateway_load                 # full run (10 s cells)
//! ```
//!
//! See `benches/README.md` for what each cell measures, the flags and the equivalent `wrk`
//! commands. The load generator is closed-loop: one keep-alive HTTP/1.1 connection per virtual
//! user, all on one current-thread runtime (one core, like `wrk -t1`), with per-request latency in
//! an HDR histogram and the warm-up excluded. Results are printed as markdown tables and written as
//! JSON to `<target>/bench-results/`.

mod load;
mod procs;
mod trickle;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use serde_json::{Value, json};

use procs::{Proc, fill, free_port};

/// Command-line flags (after `cargo bench --bench gateway_load --`).
#[derive(Parser, Debug)]
#[command(about = "direct vs nginx proxy_pass vs boocontrol gateway, same upstream, one run")]
struct Args {
    /// Short cells (2 s + 0.5 s warm-up) and 300 held streams instead of 1,000.
    #[arg(long)]
    quick: bool,
    /// Measured seconds per cell (default 10, quick 2).
    #[arg(long)]
    duration: Option<f64>,
    /// Warm-up seconds per cell, not measured (default 2, quick 0.5).
    #[arg(long)]
    warmup: Option<f64>,
    /// Concurrency levels for the non-streaming cells (`0` alone skips them).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// Splits each cell into this many rounds of `duration / rounds` (each with its own
    /// warm-up) and runs every path once per round, so a drift in the machine's load reaches
    /// all paths alike; a cell's figures come from its merged rounds.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Concurrency levels of the streaming cells (c=1 shows the pure added TTFT, c=64 the
    /// TTFT under load; `0` alone skips them).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    stream_concurrency: Vec<usize>,
    /// `max_tokens` of the streaming requests.
    #[arg(long, default_value_t = 256)]
    stream_tokens: u32,
    /// Concurrent open streams for the gateway memory measurement (default 1000, quick 300; 0 = skip).
    #[arg(long)]
    streams: Option<usize>,
    /// Paths to measure.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "direct,nginx,gateway,auto"
    )]
    paths: Vec<PathKind>,
    /// Upstreams to measure against.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "static,sim")]
    upstreams: Vec<UpKind>,
    /// Gateway executable (default: `<target>/release/examples/gateway`, built first).
    #[arg(long)]
    gateway_bin: Option<PathBuf>,
    /// sim-host executable (default: `<target>/release/examples/sim-host`, built first).
    #[arg(long)]
    sim_bin: Option<PathBuf>,
    /// Gateway runtime worker threads (sets `TOKIO_WORKER_THREADS`; default: one per CPU).
    #[arg(long)]
    gateway_threads: Option<usize>,
    /// Extra argument for the gateway (repeatable), e.g. `--gateway-arg=--no-telemetry`.
    /// The gateway runs in the temp dir, so a relative store path lands there.
    #[arg(long, allow_hyphen_values = true)]
    gateway_arg: Vec<String>,
    /// Do not run `cargo build --release --example gateway --example sim-host` first.
    #[arg(long)]
    no_build: bool,
    /// Where to write the JSON results (default `<target>/bench-results/gateway_load-<unix>.json`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the temp dir with the generated configs and logs (always kept on failure).
    #[arg(long)]
    keep: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// How a request reaches the upstream.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum PathKind {
    /// Straight to the upstream.
    Direct,
    /// Through nginx `proxy_pass` (one worker, upstream keep-alive).
    Nginx,
    /// Through the boocontrol gateway, composite model id (`static/static`).
    Gateway,
    /// Through the gateway, virtual model `auto:bench-<provider>`: a routing policy whose
    /// single candidate is the same upstream (the cost of `auto:*` routing).
    Auto,
}

impl PathKind {
    fn name(self) -> &'static str {
        match self {
            PathKind::Direct => "direct",
            PathKind::Nginx => "nginx",
            PathKind::Gateway => "gateway",
            PathKind::Auto => "auto",
        }
    }
}

/// Which upstream serves the requests.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum UpKind {
    /// nginx returning a canned chat completion (the cheapest possible upstream).
    Static,
    /// fleet-sim (`sim-host`) with unlimited generation speed.
    Sim,
}

/// One upstream and the addresses that reach it over each path.
struct Upstream {
    kind: UpKind,
    name: &'static str,
    /// Wire model id the upstream serves.
    wire_model: String,
    direct: SocketAddr,
    nginx: Option<SocketAddr>,
    /// Streaming requests are meaningful on this upstream.
    streams: bool,
}

/// One measured row.
struct Row {
    upstream: &'static str,
    load: String,
    path: PathKind,
    concurrency: usize,
    stats: load::CellStats,
}

/// Gateway memory after the load cells, and while many streams are held open.
struct Memory {
    /// `(VmRSS, VmHWM)` in KiB after the load cells.
    after_load: (u64, u64),
    held: Option<Held>,
}

/// The many-open-streams measurement.
struct Held {
    requested: usize,
    /// Streams that had received their first byte when RSS was sampled.
    opened: usize,
    /// `(VmRSS, VmHWM)` in KiB.
    rss: (u64, u64),
}

/// Everything the run started; dropped (and so stopped) at the end.
#[derive(Default)]
struct Procs {
    list: Vec<Proc>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let work = tempfile::Builder::new().prefix("gateway-load-").tempdir()?;
    let result = run(&args, work.path());
    if result.is_err() || args.keep {
        let kept = work.keep();
        eprintln!("configs and logs kept in {}", kept.display());
    }
    result
}

fn run(args: &Args, work_dir: &Path) -> anyhow::Result<()> {
    let work_dir = work_dir.to_path_buf();
    let quick = args.quick;
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(if quick { 2.0 } else { 10.0 }));
    let warmup = Duration::from_secs_f64(args.warmup.unwrap_or(if quick { 0.5 } else { 2.0 }));
    let streams = args.streams.unwrap_or(if quick { 300 } else { 1000 });

    let exe = std::env::current_exe()?;
    // <target>/release/deps/gateway_load-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("bench executable is not inside <target>/<profile>/deps")?
        .to_path_buf();
    let target_dir = profile_dir.parent().unwrap_or(&profile_dir).to_path_buf();
    let load_before = loadavg();
    println!("# gateway_load ({})", if quick { "quick" } else { "full" });
    println!("load average at start: {load_before}");
    println!(
        "cells: {:.1} s measured after {:.1} s warm-up (non-streaming cells in {} interleaved \
         round(s)); logs and configs in {}",
        duration.as_secs_f64(),
        warmup.as_secs_f64(),
        args.rounds.max(1),
        work_dir.display()
    );

    let want_gateway =
        args.paths.contains(&PathKind::Gateway) || args.paths.contains(&PathKind::Auto);
    let want_sim = args.upstreams.contains(&UpKind::Sim);
    if !args.no_build && (want_gateway || want_sim) {
        build_examples(want_gateway, want_sim);
    }

    let mut procs = Procs::default();
    let mut notices: Vec<String> = Vec::new();
    let nginx = procs::nginx_bin();
    if nginx.is_none() {
        notices.push(
            "nginx not installed (`apt-get install -y nginx-light`): the nginx proxy_pass leg and \
             the static upstream are skipped"
                .into(),
        );
    }

    // ---- upstreams
    let mut upstreams: Vec<Upstream> = Vec::new();
    if args.upstreams.contains(&UpKind::Static)
        && let Some(bin) = &nginx
    {
        let port = free_port()?;
        let conf = fill(
            include_str!("../nginx/static.conf"),
            &[
                ("PREFIX", work_dir.display().to_string()),
                ("PORT", port.to_string()),
            ],
        );
        procs.list.push(procs::start_nginx(
            bin,
            &work_dir,
            "static.conf",
            &conf,
            &[port],
        )?);
        upstreams.push(Upstream {
            kind: UpKind::Static,
            name: "nginx-static",
            wire_model: "static".into(),
            direct: SocketAddr::from(([127, 0, 0, 1], port)),
            nginx: None,
            streams: false,
        });
    }
    if want_sim {
        let bin = args
            .sim_bin
            .clone()
            .unwrap_or_else(|| profile_dir.join("examples/sim-host"));
        match start_sim(&bin, &work_dir) {
            Ok((p, addr, model)) => {
                procs.list.push(p);
                upstreams.push(Upstream {
                    kind: UpKind::Sim,
                    name: "fleet-sim",
                    wire_model: model,
                    direct: addr,
                    nginx: None,
                    streams: true,
                });
            }
            Err(e) => notices.push(format!("fleet-sim upstream skipped: {e:#}")),
        }
    }
    if upstreams.is_empty() {
        bail!("no upstream could be started: {notices:?}");
    }

    // ---- nginx proxy_pass in front of every upstream (one nginx, one worker)
    if args.paths.contains(&PathKind::Nginx)
        && let Some(bin) = &nginx
    {
        let mut servers = String::new();
        let mut ports = Vec::new();
        for u in &mut upstreams {
            let port = free_port()?;
            servers.push_str(&fill(
                include_str!("../nginx/proxy-server.conf"),
                &[
                    ("NAME", u.name.replace('-', "_")),
                    ("PORT", port.to_string()),
                    ("UPSTREAM_PORT", u.direct.port().to_string()),
                ],
            ));
            u.nginx = Some(SocketAddr::from(([127, 0, 0, 1], port)));
            ports.push(port);
        }
        let conf = fill(
            include_str!("../nginx/proxy.conf"),
            &[
                ("PREFIX", work_dir.display().to_string()),
                ("SERVERS", servers),
            ],
        );
        procs.list.push(procs::start_nginx(
            bin,
            &work_dir,
            "proxy.conf",
            &conf,
            &ports,
        )?);
    }

    // ---- the gateway, as its own process (its RSS is measured)
    let trickle = if want_gateway && streams > 0 {
        Some(trickle::start(Duration::from_millis(200), 10_000)?)
    } else {
        None
    };
    let mut gateway: Option<(SocketAddr, u32)> = None;
    if want_gateway {
        let bin = args
            .gateway_bin
            .clone()
            .unwrap_or_else(|| profile_dir.join("examples/gateway"));
        match start_gateway(
            &bin,
            &work_dir,
            &upstreams,
            trickle,
            args.gateway_threads,
            &args.gateway_arg,
        ) {
            Ok(p) => {
                gateway = Some((p.1, p.0.pid()));
                procs.list.push(p.0);
            }
            Err(e) => notices.push(format!("gateway leg skipped: {e:#}")),
        }
    }
    for n in &notices {
        println!("NOTICE: {n}");
    }

    let rss_idle = match gateway {
        Some((_, pid)) => Some(procs::rss_kib(pid)?),
        None => None,
    };

    // ---- sanity: every path returns a 200 before anything is timed
    for u in &upstreams {
        for (path, addr, model) in paths_for(u, &args.paths, gateway.map(|g| g.0)) {
            let body = tiny_body(&model);
            // `auto:*` needs the gateway's first inventory poll; give it a few seconds.
            let until = std::time::Instant::now() + Duration::from_secs(15);
            let mut res = load::one_shot(addr, "POST", "/v1/chat/completions", &body);
            while path == PathKind::Auto
                && !matches!(res, Ok((200, _)))
                && std::time::Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(200));
                res = load::one_shot(addr, "POST", "/v1/chat/completions", &body);
            }
            match res {
                Ok((200, _)) => {}
                Ok((st, b)) => bail!(
                    "{} via {}: HTTP {st}: {}",
                    u.name,
                    path.name(),
                    String::from_utf8_lossy(&b)
                        .chars()
                        .take(300)
                        .collect::<String>()
                ),
                Err(e) => bail!("{} via {}: {e}", u.name, path.name()),
            }
        }
    }

    // ---- every cell in `--rounds` interleaved rounds: non-streaming, then streaming
    let rounds = args.rounds.max(1);
    let stream_load = format!("stream {}", args.stream_tokens);
    let mut specs: Vec<(&Upstream, PathKind, SocketAddr, String, usize, bool)> = Vec::new();
    for u in &upstreams {
        for &c in args.concurrency.iter().filter(|&&c| c > 0) {
            for (path, addr, model) in paths_for(u, &args.paths, gateway.map(|g| g.0)) {
                specs.push((u, path, addr, model, c, false));
            }
        }
    }
    for &c in args.stream_concurrency.iter().filter(|&&c| c > 0) {
        for u in upstreams.iter().filter(|u| u.streams) {
            for (path, addr, model) in paths_for(u, &args.paths, gateway.map(|g| g.0)) {
                specs.push((u, path, addr, model, c, true));
            }
        }
    }
    let mut rows: Vec<Row> = Vec::new();
    for round in 0..rounds {
        for (i, (u, path, addr, model, c, stream)) in specs.iter().enumerate() {
            let (load, body) = if *stream {
                (stream_load.clone(), stream_body(model, args.stream_tokens))
            } else {
                ("tiny".to_string(), tiny_body(model))
            };
            let cell = load::Cell {
                addr: *addr,
                path: "/v1/chat/completions".into(),
                body,
                concurrency: *c,
                warmup,
                duration: duration / rounds,
                stream: *stream,
                cpu_pid: matches!(path, PathKind::Gateway | PathKind::Auto)
                    .then(|| gateway.map(|g| g.1))
                    .flatten(),
            };
            let stats = load::run_cell(&cell);
            if round == 0 {
                rows.push(Row {
                    upstream: u.name,
                    load,
                    path: *path,
                    concurrency: *c,
                    stats,
                });
            } else {
                rows[i].stats.merge(stats);
            }
            if round + 1 == rounds {
                print_progress(u.name, &rows[i].load, *path, *c, &rows[i].stats);
            }
        }
    }

    // ---- memory with many open streams
    let mut memory = None;
    if let (Some((gw_addr, pid)), Some(_)) = (gateway, trickle) {
        let rss_after_load = procs::rss_kib(pid)?;
        let mut held = None;
        if streams > 0 {
            let (opened, rss) = load::hold_streams(
                gw_addr,
                "/v1/chat/completions",
                stream_body("trickle/trickle", 10_000),
                streams,
                Duration::from_secs(60),
                || procs::rss_kib(pid),
            );
            held = Some(Held {
                requested: streams,
                opened,
                rss: rss?,
            });
        }
        memory = Some(Memory {
            after_load: rss_after_load,
            held,
        });
    }

    // ---- report
    let load_after = loadavg();
    let mut report = render(&rows, &args.paths, rss_idle, memory.as_ref());
    let _ = writeln!(
        report,
        "\nload average (1/5/15 min): {load_before} at start, {load_after} at the end ({} CPUs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("\n{report}");
    let out = match &args.out {
        Some(p) => p.clone(),
        None => {
            let dir = target_dir.join("bench-results");
            std::fs::create_dir_all(&dir)?;
            let unix = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            dir.join(format!("gateway_load-{unix}.json"))
        }
    };
    let json = to_json(
        &rows,
        rss_idle,
        memory.as_ref(),
        &notices,
        quick,
        duration,
        warmup,
    );
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("write {}", out.display()))?;
    println!("JSON results: {}", out.display());
    drop(procs);
    Ok(())
}

/// `(path, address, model to put in the body)` for each requested path that can reach `u`.
fn paths_for(
    u: &Upstream,
    paths: &[PathKind],
    gateway: Option<SocketAddr>,
) -> Vec<(PathKind, SocketAddr, String)> {
    let mut out = Vec::new();
    for &p in paths {
        match p {
            PathKind::Direct => out.push((p, u.direct, u.wire_model.clone())),
            PathKind::Nginx => {
                if let Some(a) = u.nginx {
                    out.push((p, a, u.wire_model.clone()));
                }
            }
            PathKind::Gateway => {
                if let Some(a) = gateway {
                    out.push((p, a, format!("{}/{}", provider_id(u.kind), u.wire_model)));
                }
            }
            PathKind::Auto => {
                if let Some(a) = gateway {
                    out.push((p, a, auto_model(u.kind)));
                }
            }
        }
    }
    out
}

/// The `auto:*` policy routing to upstream `k` only.
fn auto_model(k: UpKind) -> String {
    format!("auto:bench-{}", provider_id(k))
}

fn provider_id(k: UpKind) -> &'static str {
    match k {
        UpKind::Static => "static",
        UpKind::Sim => "sim",
    }
}

fn tiny_body(model: &str) -> Bytes {
    let v = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4,
    });
    Bytes::from(v.to_string())
}

fn stream_body(model: &str, max_tokens: u32) -> Bytes {
    let v = json!({
        "model": model,
        "messages": [{"role": "user", "content": "Write a long story."}],
        "max_tokens": max_tokens,
        "stream": true,
    });
    Bytes::from(v.to_string())
}

fn build_examples(gateway: bool, sim: bool) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release"]);
    if gateway {
        cmd.args(["--example", "gateway"]);
    }
    if sim {
        cmd.args(["--example", "sim-host"]);
    }
    println!("building: {cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            println!("NOTICE: building the examples failed ({s}); missing legs will be skipped")
        }
        Err(e) => println!("NOTICE: could not run cargo ({e}); missing legs will be skipped"),
    }
}

/// Starts `sim-host` with one llama-server-mode host serving one model at unlimited speed.
/// Returns the process, the host address and the wire model id.
fn start_sim(bin: &Path, dir: &Path) -> anyhow::Result<(Proc, SocketAddr, String)> {
    if !bin.exists() {
        bail!(
            "{} not found (build it with `cargo build --release --example sim-host`)",
            bin.display()
        );
    }
    let port = free_port()?;
    let model = "bench-tiny".to_owned();
    let spec = fill(
        include_str!("sim-spec.yaml"),
        &[("PORT", port.to_string()), ("MODEL", model.clone())],
    );
    let spec_path = dir.join("sim-spec.yaml");
    std::fs::write(&spec_path, spec)?;
    let mut cmd = Command::new(bin);
    cmd.arg("--spec")
        .arg(&spec_path)
        .args(["--threads", "1"])
        .current_dir(dir);
    let mut p = Proc::spawn("sim-host", cmd, &dir.join("sim-host.log"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    procs::wait_http(&mut p, addr, "/health", Duration::from_secs(20))
        .with_context(|| format!("sim-host: see {}", dir.join("sim-host.log").display()))?;
    Ok((p, addr, model))
}

/// Writes a registry config for every upstream (+ the trickle upstream) and starts the gateway.
fn start_gateway(
    bin: &Path,
    dir: &Path,
    upstreams: &[Upstream],
    trickle: Option<SocketAddr>,
    threads: Option<usize>,
    extra: &[String],
) -> anyhow::Result<(Proc, SocketAddr)> {
    if !bin.exists() {
        bail!(
            "{} not found (build it with `cargo build --release --example gateway`)",
            bin.display()
        );
    }
    let mut providers: Vec<Value> = upstreams
        .iter()
        .map(|u| {
            json!({
                "id": provider_id(u.kind),
                "kind": match u.kind { UpKind::Static => "llama-server", UpKind::Sim => "llama-swap" },
                "base_url": format!("http://{}", u.direct),
            })
        })
        .collect();
    if let Some(t) = trickle {
        providers.push(
            json!({"id": "trickle", "kind": "llama-server", "base_url": format!("http://{t}")}),
        );
    }
    // One `auto:*` policy per upstream, with that upstream as its single candidate.
    let policies: Vec<Value> = upstreams
        .iter()
        .map(|u| {
            json!({
                "name": auto_model(u.kind),
                "candidates": [format!("{}/{}", provider_id(u.kind), u.wire_model)],
                "order": ["priority"],
            })
        })
        .collect();
    let config = json!({ "providers": providers, "policies": policies });
    let config_path = dir.join("boocontrol.json");
    std::fs::write(&config_path, serde_json::to_string_pretty(&config)?)?;
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(&config_path)
        .arg("--listen")
        .arg(addr.to_string());
    cmd.args(extra).current_dir(dir).env("RUST_LOG", "warn");
    if let Some(n) = threads {
        // Read by tokio's multi-thread runtime builder (`#[tokio::main]`).
        cmd.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    let log = dir.join("gateway.log");
    let mut p = Proc::spawn("gateway", cmd, &log)?;
    procs::wait_http(&mut p, addr, "/api/health", Duration::from_secs(20))
        .with_context(|| format!("gateway: see {}", log.display()))?;
    Ok((p, addr))
}

/// Gateway CPU time per successful request, e.g. `41 µs`.
fn cpu_per_req(s: &load::CellStats) -> Option<f64> {
    s.cpu_s.filter(|_| s.ok > 0).map(|c| c * 1e6 / s.ok as f64)
}

fn print_progress(up: &str, load: &str, path: PathKind, c: usize, s: &load::CellStats) {
    println!(
        "  {up:<12} {load:<10} c={c:<4} {:<8} {:>9.0} req/s  p50 {:>8}  p99 {:>8}  ttft p50 {:>8}  errors {}{}{}",
        path.name(),
        s.rps(),
        us(s.latency.value_at_quantile(0.5)),
        us(s.latency.value_at_quantile(0.99)),
        us(s.ttft.value_at_quantile(0.5)),
        s.errors,
        cpu_per_req(s)
            .map(|c| format!("  cpu {c:.1} µs/req"))
            .unwrap_or_default(),
        s.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
    );
}

/// Nanoseconds as a short human string (µs below 10 ms).
fn us(ns: u64) -> String {
    if ns < 10_000_000 {
        format!("{:.0} µs", ns as f64 / 1e3)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

fn signed_us(ns: i128) -> String {
    let sign = if ns < 0 { "-" } else { "+" };
    format!("{sign}{}", us(ns.unsigned_abs() as u64))
}

fn find<'a>(
    rows: &'a [Row],
    up: &str,
    load: &str,
    path: PathKind,
    c: usize,
) -> Option<&'a load::CellStats> {
    rows.iter()
        .find(|r| r.upstream == up && r.load == load && r.path == path && r.concurrency == c)
        .map(|r| &r.stats)
}

fn q(s: &load::CellStats, quantile: f64) -> i128 {
    i128::from(s.latency.value_at_quantile(quantile))
}

fn render(
    rows: &[Row],
    paths: &[PathKind],
    rss_idle: Option<(u64, u64)>,
    memory: Option<&Memory>,
) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Throughput and latency\n");
    let _ = writeln!(
        o,
        "| upstream | load | c | path | req/s | p50 | p99 | TTFT p50 | TTFT p99 | errors | vs direct (req/s) | vs nginx (req/s) | gateway CPU/req |"
    );
    let _ = writeln!(
        o,
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in rows {
        let s = &r.stats;
        let ratio = |other: PathKind| {
            if r.path == other {
                return "—".to_owned();
            }
            find(rows, r.upstream, &r.load, other, r.concurrency)
                .filter(|o| o.rps() > 0.0)
                .map(|o| format!("{:.2}", s.rps() / o.rps()))
                .unwrap_or_else(|| "n/a".into())
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.upstream,
            r.load,
            r.concurrency,
            r.path.name(),
            s.rps(),
            us(s.latency.value_at_quantile(0.5)),
            us(s.latency.value_at_quantile(0.99)),
            us(s.ttft.value_at_quantile(0.5)),
            us(s.ttft.value_at_quantile(0.99)),
            s.errors,
            ratio(PathKind::Direct),
            ratio(PathKind::Nginx),
            cpu_per_req(s)
                .map(|c| format!("{c:.1} µs"))
                .unwrap_or_else(|| "—".into()),
        );
    }

    // Added latency per proxy vs direct, same upstream, load and concurrency.
    let _ = writeln!(
        o,
        "\n## Added latency vs direct (p50 / p99; streaming rows: TTFT)\n"
    );
    let _ = writeln!(o, "| upstream | load | c | proxy | added p50 | added p99 |");
    let _ = writeln!(o, "|---|---|---:|---|---:|---:|");
    for r in rows.iter().filter(|r| r.path != PathKind::Direct) {
        let Some(d) = find(rows, r.upstream, &r.load, PathKind::Direct, r.concurrency) else {
            continue;
        };
        let stream = r.load.starts_with("stream");
        let pick = |s: &load::CellStats, qq: f64| {
            if stream {
                i128::from(s.ttft.value_at_quantile(qq))
            } else {
                q(s, qq)
            }
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            r.upstream,
            r.load,
            r.concurrency,
            r.path.name(),
            signed_us(pick(&r.stats, 0.5) - pick(d, 0.5)),
            signed_us(pick(&r.stats, 0.99) - pick(d, 0.99)),
        );
    }

    if paths.contains(&PathKind::Auto) {
        let _ = writeln!(
            o,
            "\n## `auto:*` routing vs composite id (same upstream, same run; streaming rows: TTFT)\n"
        );
        let _ = writeln!(
            o,
            "| upstream | load | c | auto req/s | gateway req/s | auto − gateway p50 | auto − gateway p99 | auto − gateway CPU/req |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|");
        for r in rows.iter().filter(|r| r.path == PathKind::Auto) {
            let Some(g) = find(rows, r.upstream, &r.load, PathKind::Gateway, r.concurrency) else {
                continue;
            };
            let stream = r.load.starts_with("stream");
            let pick = |s: &load::CellStats, qq: f64| {
                if stream {
                    i128::from(s.ttft.value_at_quantile(qq))
                } else {
                    q(s, qq)
                }
            };
            // The gateway's CPU time per request: far steadier on a shared machine than the
            // latency difference.
            let cpu = match (cpu_per_req(&r.stats), cpu_per_req(g)) {
                (Some(a), Some(b)) => format!("{:+.1} µs", a - b),
                _ => "—".into(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {cpu} |",
                r.upstream,
                r.load,
                r.concurrency,
                r.stats.rps(),
                g.rps(),
                signed_us(pick(&r.stats, 0.5) - pick(g, 0.5)),
                signed_us(pick(&r.stats, 0.99) - pick(g, 0.99)),
            );
        }
    }

    if paths.contains(&PathKind::Gateway) || paths.contains(&PathKind::Auto) {
        let _ = writeln!(o, "\n## Gateway memory (VmRSS of the gateway process)\n");
        let _ = writeln!(o, "| state | VmRSS | VmHWM (peak) |");
        let _ = writeln!(o, "|---|---:|---:|");
        if let Some((rss, hwm)) = rss_idle {
            let _ = writeln!(o, "| idle (after start) | {} | {} |", mib(rss), mib(hwm));
        }
        if let Some(m) = memory {
            let (rss, hwm) = m.after_load;
            let _ = writeln!(
                o,
                "| idle (after the load cells) | {} | {} |",
                mib(rss),
                mib(hwm)
            );
            if let Some(h) = &m.held {
                let _ = writeln!(
                    o,
                    "| {} of {} streams open | {} | {} |",
                    h.opened,
                    h.requested,
                    mib(h.rss.0),
                    mib(h.rss.1)
                );
            }
        }
    }
    o
}

/// The first three fields of `/proc/loadavg`, e.g. `1.20 0.80 0.55`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn to_json(
    rows: &[Row],
    rss_idle: Option<(u64, u64)>,
    memory: Option<&Memory>,
    notices: &[String],
    quick: bool,
    duration: Duration,
    warmup: Duration,
) -> Value {
    let cells: Vec<Value> = rows
        .iter()
        .map(|r| {
            let s = &r.stats;
            let h = |h: &hdrhistogram::Histogram<u64>| {
                json!({
                    "p50_us": h.value_at_quantile(0.5) as f64 / 1e3,
                    "p90_us": h.value_at_quantile(0.9) as f64 / 1e3,
                    "p99_us": h.value_at_quantile(0.99) as f64 / 1e3,
                    "p999_us": h.value_at_quantile(0.999) as f64 / 1e3,
                    "max_us": h.max() as f64 / 1e3,
                    "mean_us": h.mean() / 1e3,
                })
            };
            json!({
                "upstream": r.upstream,
                "load": r.load,
                "path": r.path.name(),
                "concurrency": r.concurrency,
                "requests": s.ok,
                "errors": s.errors,
                "first_error": s.first_error,
                "window_s": s.window_s,
                "rps": s.rps(),
                "cpu_s": s.cpu_s,
                "cpu_us_per_req": cpu_per_req(s),
                "body_bytes": s.body_bytes,
                "latency": h(&s.latency),
                "ttft": h(&s.ttft),
            })
        })
        .collect();
    let memory = memory.map(|m| {
        json!({
            "after_load_rss_kib": m.after_load.0,
            "after_load_hwm_kib": m.after_load.1,
            "held_streams": m.held.as_ref().map(|h| json!({
                "requested": h.requested,
                "open": h.opened,
                "rss_kib": h.rss.0,
                "hwm_kib": h.rss.1,
            })),
        })
    });
    json!({
        "bench": "gateway_load",
        "mode": if quick { "quick" } else { "full" },
        "duration_s": duration.as_secs_f64(),
        "warmup_s": warmup.as_secs_f64(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "notices": notices,
        "cells": cells,
        "gateway_rss_idle_kib": rss_idle.map(|r| r.0),
        "gateway_memory": memory,
    })
}
