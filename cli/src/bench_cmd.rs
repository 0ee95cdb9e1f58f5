//! `booctl bench …`: speed benchmarks that run inside the gateway (`/api/bench/…`).
//!
//! * `bench run SUITE --target M… [--takeover] [--out DIR]` reads the suite YAML locally,
//!   checks it, POSTs it, follows `bench_progress` on `/api/fleet/stream` with a progress bar
//!   (polling the run as a fallback), prints the per-cell table and, with `--out`, writes
//!   `result.json` plus SVG/PNG charts (TTFT and gen tok/s vs concurrency, tok/s over time).
//! * `bench list`, `bench show RUN [--out DIR]`, `bench compare A B`, `bench baseline set RUN`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use boo_bench::chart::{self, HistoryPoint};
use boo_bench::{Progress, RunResult, Suite, Verdict, compare_runs};
use boo_fleet_core::wire::SseDecoder;
use http_body_util::BodyExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::Global;
use crate::activity_cmd::encode;
use crate::fleet_cmd::ControlArgs;
use crate::http::{Client, Reply, error_message};
use crate::output::table;

/// `booctl bench …`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCmd {
    /// Run a suite against one or more targets (inside the gateway) and follow it.
    Run(RunArgs),
    /// Recent runs, newest first.
    List(ListArgs),
    /// One run: per-cell table, baseline verdicts; `--out DIR` writes its result and charts.
    Show {
        /// Run id.
        run: String,
        /// Write `result.json` and charts into this directory.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Compare run B against run A cell by cell (ratios B / A and a verdict).
    Compare {
        /// The reference (baseline) run.
        a: String,
        /// The run to judge.
        b: String,
    },
    /// Baselines per (host, model incl. quant, suite, cell).
    #[command(subcommand)]
    Baseline(BaselineCmd),
}

/// `booctl bench baseline …`.
#[derive(Debug, clap::Subcommand)]
pub enum BaselineCmd {
    /// Mark every cell of a finished run as the baseline of its (host, model, suite, cell).
    Set {
        /// Run id.
        run: String,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// List baselines.
    List {
        /// Only this suite.
        #[arg(long)]
        suite: Option<String>,
    },
}

/// Options of `booctl bench run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Suite file (YAML or JSON), see bench/README.md.
    pub suite: PathBuf,
    /// Composite model id to measure (repeat for several), e.g. `gpu-box/qwen3-4b:Q4_K_M`.
    #[arg(long = "target", required = true, value_name = "PROVIDER/MODEL")]
    pub targets: Vec<String>,
    /// Run even if the host served other traffic in the last minutes (the run is still marked
    /// polluted if traffic overlaps it).
    #[arg(long)]
    pub takeover: bool,
    /// Write `result.json` and SVG/PNG charts into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// No progress bar (also off when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub control: ControlArgs,
}

/// Options of `booctl bench list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only runs of this suite.
    #[arg(long)]
    pub suite: Option<String>,
    /// Only runs that include this target.
    #[arg(long)]
    pub target: Option<String>,
    /// Runs to show (1-1000).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
}

/// Runs `booctl bench …`.
pub fn run(cmd: &BenchCmd, global: &Global) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        match cmd {
            BenchCmd::Run(args) => run_suite(args, global).await,
            BenchCmd::List(args) => list(args, global).await,
            BenchCmd::Show { run, out } => show(run, out.as_deref(), global).await,
            BenchCmd::Compare { a, b } => compare(a, b, global).await,
            BenchCmd::Baseline(BaselineCmd::Set { run, control }) => {
                let client = Client::new(&global.gateway, control.admin_token.clone())?;
                let r = client
                    .post_json("/api/bench/baselines", &json!({"run": run}))
                    .await?;
                let v = ok_json(&r, "setting the baseline", client.has_token())?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "run {run} is now the baseline of {} cell(s)",
                        v["baselines_set"].as_u64().unwrap_or(0)
                    );
                }
                Ok(())
            }
            BenchCmd::Baseline(BaselineCmd::List { suite }) => {
                let client = Client::new(&global.gateway, None)?;
                let q = suite
                    .as_ref()
                    .map(|s| format!("?suite={}", encode(s)))
                    .unwrap_or_default();
                let v = ok_json(
                    &client.get(&format!("/api/bench/baselines{q}")).await?,
                    "listing baselines",
                    false,
                )?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
                let rows: Vec<Vec<String>> = v["baselines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        ["provider", "model", "suite", "cell_key", "run_id"]
                            .iter()
                            .map(|k| s(&b[*k]))
                            .collect()
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["PROVIDER", "MODEL", "SUITE", "CELL", "RUN"], &rows)
                );
                Ok(())
            }
        }
    })
}

/// The body of a 2xx JSON reply, or an error naming what failed.
fn ok_json(r: &Reply, what: &str, has_token: bool) -> anyhow::Result<Value> {
    match r.status {
        200..=299 => serde_json::from_slice(&r.body)
            .with_context(|| format!("{what}: the gateway answered with invalid JSON")),
        401 => bail!(
            "{what}: the gateway requires an admin token{}: set --admin-token or BOOCONTROL_ADMIN_TOKEN",
            if has_token {
                " (the one given was refused)"
            } else {
                ""
            }
        ),
        404 if error_message(&r.body).contains("/api/bench") || r.body.is_empty() => bail!(
            "{what}: this gateway serves no bench API (start it with the fleet control plane on)"
        ),
        s => bail!("{what}: gateway answered {s}: {}", error_message(&r.body)),
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

fn f1(v: f64) -> String {
    format!("{v:.1}")
}

async fn run_suite(args: &RunArgs, global: &Global) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.suite)
        .with_context(|| format!("reading suite {}", args.suite.display()))?;
    // fail before touching the fleet: errors name the field
    let suite =
        Suite::from_yaml(&text).with_context(|| format!("suite {}", args.suite.display()))?;
    let client = Client::new(&global.gateway, args.control.admin_token.clone())?;

    // subscribe first, so no progress event is missed
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let stream_client = client.clone();
    let follower = tokio::spawn(async move {
        let Ok((200, mut body)) = stream_client.stream("/api/fleet/stream").await else {
            return;
        };
        let mut dec = SseDecoder::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let Ok(msgs) = dec.push(&data) else {
                return;
            };
            for m in msgs {
                if m.event == "bench_progress"
                    && let Ok(p) = serde_json::from_str::<Progress>(&m.data)
                    && tx.send(p).is_err()
                {
                    return;
                }
            }
        }
    });

    let body = json!({"suite": text, "targets": args.targets, "takeover": args.takeover});
    let r = client.post_json("/api/bench/runs", &body).await?;
    if r.status == 409 {
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        follower.abort();
        if v["requiresConfirmation"] == true {
            bail!(
                "{}\nre-run with --takeover to benchmark anyway (the run is marked polluted if that traffic overlaps it)",
                error_message(&r.body)
            );
        }
        bail!("cannot start the run: {}", error_message(&r.body));
    }
    let started = ok_json(&r, "starting the run", client.has_token())?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    eprintln!(
        "run {id}: suite {} ({} cells) on {}",
        suite.name,
        suite.cells().len(),
        args.targets.join(", ")
    );

    let show_bar =
        !args.quiet && !global.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let bar = if show_bar {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{spinner} {prefix:.bold} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        Some(b)
    } else {
        None
    };
    let mut last_poll = Instant::now() - Duration::from_secs(10);
    let detail = loop {
        // progress events as they come, a status poll at least every second
        match tokio::time::timeout(Duration::from_millis(250), rx.recv()).await {
            Ok(Some(p)) if p.run_id == id => {
                if let Some(b) = &bar {
                    b.set_prefix(format!(
                        "{} {} ({}/{})",
                        p.target,
                        p.cell,
                        (p.cell_index + 1).min(p.cells_total.max(1)),
                        p.cells_total
                    ));
                    b.set_length(u64::from(p.total.max(p.done)));
                    b.set_position(u64::from(p.done));
                    b.set_message(format!(
                        "{:?} {:.1} tok/s{}",
                        p.phase,
                        p.current_tps,
                        if p.errors > 0 {
                            format!(", {} errors", p.errors)
                        } else {
                            String::new()
                        }
                    ));
                }
                continue;
            }
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
        if last_poll.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_poll = Instant::now();
        let v = ok_json(
            &client
                .get(&format!("/api/bench/runs/{}", encode(&id)))
                .await?,
            "following the run",
            false,
        )?;
        if v["run"]["status"] != "running" {
            break v;
        }
    };
    follower.abort();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    report(&detail, global)?;
    if let Some(dir) = &args.out {
        write_out(&client, &id, dir).await?;
    }
    match detail["run"]["status"].as_str() {
        Some("completed") => Ok(()),
        other => bail!(
            "run {id} ended {}: {}",
            other.unwrap_or("?"),
            s(&detail["run"]["error"])
        ),
    }
}

/// Prints the per-cell table of a run detail (`GET /api/bench/runs/{id}`).
fn report(detail: &Value, global: &Global) -> anyhow::Result<()> {
    if global.json {
        println!("{}", serde_json::to_string_pretty(detail)?);
        return Ok(());
    }
    let run = &detail["run"];
    println!(
        "run {}  suite {}  status {}  started {}",
        s(&run["id"]),
        s(&run["suite"]),
        s(&run["status"]),
        s(&run["started_at"])
    );
    let result = &detail["result"];
    let verdicts: Vec<Value> = result["baseline_verdicts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let verdict_of = |target: &str, key: &str| -> String {
        verdicts
            .iter()
            .find(|v| v["target"] == target && v["key"] == key)
            .map(
                |v| match serde_json::from_value::<Verdict>(v["verdict"].clone()) {
                    Ok(Verdict::Ok) => match v["ratios"]["gen_tps"].as_f64() {
                        Some(r) => format!("ok ({:+.1} %)", (r - 1.0) * 100.0),
                        None => "ok".into(),
                    },
                    Ok(Verdict::Regression { reasons }) => {
                        format!("REGRESSION: {}", reasons.join("; "))
                    }
                    Ok(Verdict::Incomparable { reason }) => reason,
                    Err(_) => "-".into(),
                },
            )
            .unwrap_or_else(|| "-".into())
    };
    let mut rows = Vec::new();
    for t in result["targets"].as_array().into_iter().flatten() {
        let tid = s(&t["target"]["id"]);
        for c in t["cells"].as_array().into_iter().flatten() {
            let m = &c["metrics"];
            let key = s(&c["key"]);
            rows.push(vec![
                tid.clone(),
                key.clone(),
                format!("{}/{}", c["ok"], c["requests"]),
                f1(m["ttft_ms"]["p50"].as_f64().unwrap_or(0.0)),
                f1(m["ttft_ms"]["p99"].as_f64().unwrap_or(0.0)),
                f1(m["gen_tps"]["p50"].as_f64().unwrap_or(0.0)),
                f1(m["output_tps"].as_f64().unwrap_or(0.0)),
                f1(m["queue_ms"]["p99"].as_f64().unwrap_or(0.0)),
                verdict_of(&tid, &key),
            ]);
        }
        if let Some(load) = t["load"]["load_ms"].as_f64()
            && t["load"]["already_loaded"] == false
        {
            println!(
                "  {tid}: model load {:.0} ms (kept out of every cell)",
                load
            );
        }
        if let Some(e) = t["error"].as_str() {
            println!("  {tid}: FAILED: {e}");
        }
    }
    print!(
        "{}",
        table(
            &[
                "TARGET",
                "CELL",
                "OK",
                "TTFT P50 MS",
                "TTFT P99 MS",
                "GEN TOK/S P50",
                "OUT TOK/S",
                "QUEUE P99 MS",
                "VS BASELINE",
            ],
            &rows
        )
    );
    if run["polluted"] == true {
        println!(
            "POLLUTED ({} foreign request(s)):",
            run["concurrent_foreign_requests"]
        );
        for r in run["pollution_reasons"].as_array().into_iter().flatten() {
            println!("  - {}", s(r));
        }
    }
    Ok(())
}

async fn fetch_result(client: &Client, id: &str) -> anyhow::Result<(Value, RunResult)> {
    let v = ok_json(
        &client
            .get(&format!("/api/bench/runs/{}?samples=true", encode(id)))
            .await?,
        &format!("reading run {id}"),
        false,
    )?;
    if v["result"].is_null() {
        bail!(
            "run {id} has no result yet (status {})",
            s(&v["run"]["status"])
        );
    }
    let r: RunResult = serde_json::from_value(v["result"].clone())
        .with_context(|| format!("run {id}: the gateway's result does not match this booctl"))?;
    Ok((v, r))
}

/// Writes `result.json`, the run charts and one history chart per target into `dir`.
async fn write_out(client: &Client, id: &str, dir: &Path) -> anyhow::Result<()> {
    let (_, result) = fetch_result(client, id).await?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("result.json");
    std::fs::write(&path, result.to_json()?)
        .with_context(|| format!("writing {}", path.display()))?;
    let mut files = vec![path];
    files.extend(chart::write_run_charts(&result, dir)?);
    for t in &result.targets {
        let q = format!(
            "/api/bench/history?target={}&suite={}&gen_tps_drop={}",
            encode(&format!("{}/{}", t.target.provider, t.target.model)),
            encode(&result.suite.name),
            result.suite.thresholds.gen_tps_drop
        );
        let v = ok_json(&client.get(&q).await?, "reading the history", false)?;
        let points: Vec<HistoryPoint> =
            serde_json::from_value(v["points"].clone()).unwrap_or_default();
        if points.is_empty() {
            continue;
        }
        files.extend(chart::write_history_charts(
            &format!(
                "gen tok/s over time — {} — {}",
                t.target.id, result.suite.name
            ),
            &t.target.id,
            &points,
            dir,
        )?);
    }
    for f in files {
        eprintln!("wrote {}", f.display());
    }
    Ok(())
}

async fn list(args: &ListArgs, global: &Global) -> anyhow::Result<()> {
    let client = Client::new(&global.gateway, None)?;
    let mut q = vec![format!("limit={}", args.limit)];
    if let Some(s) = &args.suite {
        q.push(format!("suite={}", encode(s)));
    }
    if let Some(t) = &args.target {
        q.push(format!("target={}", encode(t)));
    }
    let v = ok_json(
        &client
            .get(&format!("/api/bench/runs?{}", q.join("&")))
            .await?,
        "listing runs",
        false,
    )?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let runs = v["runs"].as_array().cloned().unwrap_or_default();
    if runs.is_empty() {
        println!("no bench runs");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let targets: Vec<String> = r["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| s(&t["target"]))
                .collect();
            vec![
                s(&r["id"]),
                s(&r["started_at"]),
                s(&r["suite"]),
                targets.join(","),
                s(&r["status"]),
                if r["polluted"] == true {
                    "yes".into()
                } else {
                    "no".into()
                },
                s(&r["regressions"]),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "ID",
                "STARTED",
                "SUITE",
                "TARGETS",
                "STATUS",
                "POLLUTED",
                "REGRESSIONS"
            ],
            &rows
        )
    );
    Ok(())
}

async fn show(id: &str, out: Option<&Path>, global: &Global) -> anyhow::Result<()> {
    let client = Client::new(&global.gateway, None)?;
    let v = ok_json(
        &client
            .get(&format!("/api/bench/runs/{}", encode(id)))
            .await?,
        &format!("reading run {id}"),
        false,
    )?;
    report(&v, global)?;
    if let Some(dir) = out {
        write_out(&client, id, dir).await?;
    }
    Ok(())
}

async fn compare(a: &str, b: &str, global: &Global) -> anyhow::Result<()> {
    let client = Client::new(&global.gateway, None)?;
    let (_, base) = fetch_result(&client, a).await?;
    let (_, cur) = fetch_result(&client, b).await?;
    let c = compare_runs(&base, &cur, None);
    if global.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
        return Ok(());
    }
    let ratio = |r: Option<f64>| r.map_or_else(|| "-".into(), |r| format!("{r:.3}"));
    let rows: Vec<Vec<String>> = c
        .cells
        .iter()
        .map(|x| {
            vec![
                x.target.clone(),
                x.key.clone(),
                ratio(x.gen_tps_ratio),
                ratio(x.ttft_p50_ratio),
                ratio(x.ttft_p99_ratio),
                ratio(x.e2e_p50_ratio),
                ratio(x.output_tps_ratio),
                match &x.verdict {
                    Verdict::Ok => "ok".into(),
                    Verdict::Regression { reasons } => {
                        format!("REGRESSION: {}", reasons.join("; "))
                    }
                    Verdict::Incomparable { reason } => reason.clone(),
                },
            ]
        })
        .collect();
    println!(
        "{b} vs {a} (ratios {b} / {a}; regression when gen tok/s falls > {:.0} % or TTFT p50 rises > {:.0} %)",
        c.thresholds.gen_tps_drop * 100.0,
        c.thresholds.ttft_p50_rise * 100.0
    );
    print!(
        "{}",
        table(
            &[
                "TARGET",
                "CELL",
                "GEN TOK/S",
                "TTFT P50",
                "TTFT P99",
                "E2E P50",
                "OUT TOK/S",
                "VERDICT"
            ],
            &rows
        )
    );
    for u in &c.unmatched {
        println!("  no counterpart in {a}: {u}");
    }
    if c.regressions() > 0 {
        println!("{} regression(s)", c.regressions());
    }
    Ok(())
}
