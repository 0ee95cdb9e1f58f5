//! Fleet commands that talk to a running gateway's control API:
//! `booctl fleet status`, `booctl fleet watch`, `booctl warm`, `booctl unload`, `booctl logs`.
//!
//! Snapshots and deltas are decoded with `boo_fleet_core`'s serde types and reduced with
//! [`FleetView`], the same reducer the server uses. Tables are colored only when stdout is a
//! terminal and `NO_COLOR` is unset; `--json` prints the gateway's JSON as received.

use std::io::{IsTerminal, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use boo_fleet_core::wire::{SseDecoder, SseMessage};
use boo_fleet_core::{Delta, FleetSnapshot, FleetView, HostSnapshot, LivenessState, ModelState};
use boo_model_ref::{ModelRef, ProviderId};
use clap::Subcommand;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::Global;
use crate::http::{Client, Reply, error_message};

/// Commands of the fleet control plane (flattened into booctl's top level).
#[derive(Debug, Subcommand)]
pub enum FleetCommands {
    /// Live fleet state: hosts, liveness, loaded models, in-flight, VRAM, temperature, power.
    #[command(subcommand)]
    Fleet(FleetCmd),
    /// Load a model on its host ahead of use (queued; progress shows in `booctl fleet watch`).
    Warm(WarmArgs),
    /// Unload one model from a host, or every model when no model is given.
    Unload(UnloadArgs),
    /// Print a host's recent log lines (proxy and upstream), optionally following new ones.
    Logs(LogsArgs),
}

/// `booctl fleet` subcommands.
#[derive(Debug, Subcommand)]
pub enum FleetCmd {
    /// Print the fleet table once.
    Status(ControlArgs),
    /// Redraw the fleet table live from the gateway's event stream (Ctrl-C to quit).
    Watch(WatchArgs),
}

/// Options of every control-API command.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlArgs {
    /// Admin token of the gateway (`gateway.admin_token`), sent as a bearer token.
    #[arg(
        long,
        env = "BOOCONTROL_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub admin_token: Option<String>,
}

/// Arguments of `booctl fleet watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// Exit after this many snapshot/delta events (for scripts and tests).
    #[arg(long, hide = true, value_name = "N")]
    max_events: Option<u64>,
}

/// Arguments of `booctl warm`.
#[derive(Debug, clap::Args)]
pub struct WarmArgs {
    /// The model to load, as `provider/model`.
    pub model: String,
    /// Act even while the host is leased (e.g. a bench is running on it).
    #[arg(long)]
    pub confirm: bool,
    #[command(flatten)]
    control: ControlArgs,
}

/// Arguments of `booctl unload`.
#[derive(Debug, clap::Args)]
pub struct UnloadArgs {
    /// The host (provider id); `provider/model` is accepted too.
    pub provider: String,
    /// The model to unload (wire id); every model on the host when omitted.
    pub model: Option<String>,
    /// Act even while the host is leased (e.g. a bench is running on it).
    #[arg(long)]
    pub confirm: bool,
    #[command(flatten)]
    control: ControlArgs,
}

/// Arguments of `booctl logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The host (provider id).
    pub provider: String,
    /// Keep printing new lines as they arrive (Ctrl-C to quit).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Only the last N lines of the host's log tail.
    #[arg(long, value_name = "N")]
    pub tail: Option<u32>,
    /// Exit after this many streamed lines (for scripts and tests).
    #[arg(long, hide = true, value_name = "N")]
    max_events: Option<u64>,
    #[command(flatten)]
    control: ControlArgs,
}

/// Runs one of the fleet commands.
pub fn run(cmd: &FleetCommands, global: &Global) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        match cmd {
            FleetCommands::Fleet(FleetCmd::Status(c)) => status(&client(global, c)?, global).await,
            FleetCommands::Fleet(FleetCmd::Watch(w)) => {
                watch(&client(global, &w.control)?, w, global).await
            }
            FleetCommands::Warm(a) => warm(a, global).await,
            FleetCommands::Unload(a) => unload(a, global).await,
            FleetCommands::Logs(a) => logs(a, global).await,
        }
    })
}

fn client(global: &Global, c: &ControlArgs) -> anyhow::Result<Client> {
    Client::new(&global.gateway, c.admin_token.clone())
}

// ---------------------------------------------------------------------------------------------
// status / watch

async fn status(client: &Client, global: &Global) -> anyhow::Result<()> {
    let reply = client.get("/api/fleet").await?;
    ensure_ok(client, &reply, "GET /api/fleet", global.json)?;
    if global.json {
        println!("{}", reply.text().trim_end());
        return Ok(());
    }
    let snap: FleetSnapshot = serde_json::from_slice(&reply.body).with_context(|| {
        format!(
            "{}/api/fleet: the reply is not a fleet snapshot",
            client.url()
        )
    })?;
    print!("{}", render_table(&snap.hosts, now_ms(), use_color()));
    Ok(())
}

async fn watch(client: &Client, args: &WatchArgs, global: &Global) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal() && !global.json;
    let mut screen = Screen {
        live: tty,
        color: use_color(),
        cleared: false,
    };
    let mut view = FleetView::new();
    let mut events: u64 = 0;
    let mut failures: u32 = 0;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let connected = tokio::select! {
            r = client.stream("/api/fleet/stream") => r,
            _ = &mut ctrl_c => return Ok(()),
        };
        let body = match connected {
            Ok((200, body)) => {
                failures = 0;
                body
            }
            // A gateway that is restarting (or a proxy in front of it) may answer 5xx.
            Ok((status, _)) if status >= 500 && view.is_synced() => {
                failures += 1;
                let wait = backoff(failures);
                let msg = format!(
                    "GET {}/api/fleet/stream answered {status}; retrying in {}s",
                    client.url(),
                    wait.as_secs()
                );
                screen.problem(&view, &msg);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = &mut ctrl_c => return Ok(()),
                }
            }
            Ok((status, body)) => {
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let what = "GET /api/fleet/stream";
                ensure_ok(client, &Reply { status, body }, what, global.json)?;
                bail!("{what}: gateway answered {status} instead of an event stream");
            }
            // Never connected: report and exit; once we have a view, keep retrying.
            Err(e) if !view.is_synced() => return Err(e),
            Err(e) => {
                failures += 1;
                let wait = backoff(failures);
                screen.problem(&view, &format!("{e:#}; retrying in {}s", wait.as_secs()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => continue,
                    _ = &mut ctrl_c => return Ok(()),
                }
            }
        };
        let mut stream = EventStream::new(body);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            let next = tokio::select! {
                m = stream.next() => m,
                _ = tick.tick(), if tty && view.is_synced() => {
                    screen.draw(&view, None);
                    continue;
                }
                _ = &mut ctrl_c => return Ok(()),
            };
            let msg = match next {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => {
                    failures += 1;
                    let wait = backoff(failures);
                    let why = match next {
                        Err(e) => format!("broke: {e:#}"),
                        Ok(_) => "ended".to_owned(),
                    };
                    screen.problem(
                        &view,
                        &format!(
                            "fleet stream from {} {why}; reconnecting in {}s",
                            client.url(),
                            wait.as_secs()
                        ),
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => break,
                        _ = &mut ctrl_c => return Ok(()),
                    }
                }
            };
            match msg.event.as_str() {
                "snapshot" => {
                    let snap: FleetSnapshot = serde_json::from_str(&msg.data)
                        .context("fleet stream: a snapshot event is not a fleet snapshot")?;
                    view.apply_snapshot(snap);
                }
                "delta" => {
                    let delta: Delta = serde_json::from_str(&msg.data)
                        .context("fleet stream: a delta event is not a fleet delta")?;
                    view.apply_delta(delta);
                    if view.needs_resync() {
                        // Deltas were lost: fetch a fresh snapshot, or reconnect for one.
                        match fetch_snapshot(client).await {
                            Ok(snap) => view.apply_snapshot(snap),
                            Err(e) => {
                                screen.problem(&view, &format!("{e:#}; reconnecting"));
                                break;
                            }
                        }
                    }
                }
                _ => continue, // bench_progress and future events: not part of this table
            }
            events += 1;
            if global.json {
                println!("{}", msg.data);
            } else if tty {
                screen.draw(&view, None);
            } else if view.is_synced() {
                println!("{}", render_table(view.hosts(), now_ms(), false));
            }
            std::io::stdout().flush().ok();
            if args.max_events.is_some_and(|max| events >= max) {
                return Ok(());
            }
        }
    }
}

async fn fetch_snapshot(client: &Client) -> anyhow::Result<FleetSnapshot> {
    let reply = client.get("/api/fleet").await?;
    ensure_ok(client, &reply, "GET /api/fleet", false)?;
    serde_json::from_slice(&reply.body).context("GET /api/fleet: the reply is not a fleet snapshot")
}

/// Wait before reconnect attempt `failures` (1-based): 1 s, 2 s, 4 s, … capped at 30 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs((1u64 << failures.saturating_sub(1).min(5)).min(30))
}

/// Where `watch` draws: redrawn in place on a terminal, appended frames otherwise.
struct Screen {
    /// Redraw in place (stdout is a terminal and not `--json`).
    live: bool,
    color: bool,
    /// Whether the screen was cleared once already.
    cleared: bool,
}

impl Screen {
    /// Redraws the table in place: cursor home, each line cleared to its end, the rest of the
    /// screen cleared (one full clear on the first frame only, so no flicker). `note` replaces
    /// the footer (e.g. while reconnecting).
    fn draw(&mut self, view: &FleetView, note: Option<&str>) {
        let now = now_ms();
        let mut frame = render_table(view.hosts(), now, self.color);
        let footer = match note {
            Some(n) => paint(self.color, YELLOW, n),
            None => format!(
                "{}  Ctrl-C to quit",
                paint(self.color, DIM, &format!("live · updated {}", clock(now)))
            ),
        };
        frame.push('\n');
        frame.push_str(&footer);
        let mut out = String::new();
        if !std::mem::replace(&mut self.cleared, true) {
            out.push_str("\x1b[2J");
        }
        out.push_str("\x1b[H");
        for line in frame.lines() {
            out.push_str(line);
            out.push_str("\x1b[K\n");
        }
        out.push_str("\x1b[J");
        print!("{out}");
        std::io::stdout().flush().ok();
    }

    /// Reports a connection problem: in the footer of a live screen, else on stderr.
    fn problem(&mut self, view: &FleetView, msg: &str) {
        if self.live && view.is_synced() {
            self.draw(view, Some(msg));
        } else {
            eprintln!("{msg}");
        }
    }
}

/// The gateway sends a heartbeat every 15 s; three missed ones mean the stream is dead.
const STREAM_IDLE: Duration = Duration::from_secs(45);

/// SSE messages from a response body, decoded as they arrive.
struct EventStream {
    body: Incoming,
    decoder: SseDecoder,
    ready: std::collections::VecDeque<SseMessage>,
}

impl EventStream {
    fn new(body: Incoming) -> Self {
        EventStream {
            body,
            decoder: SseDecoder::new(),
            ready: Default::default(),
        }
    }

    /// The next message, `Ok(None)` at the end of the stream; an error when nothing at all
    /// (not even a heartbeat comment) arrived for [`STREAM_IDLE`].
    async fn next(&mut self) -> anyhow::Result<Option<SseMessage>> {
        loop {
            if let Some(m) = self.ready.pop_front() {
                return Ok(Some(m));
            }
            let Ok(frame) = tokio::time::timeout(STREAM_IDLE, self.body.frame()).await else {
                bail!(
                    "no data for {}s (not even a heartbeat)",
                    STREAM_IDLE.as_secs()
                );
            };
            let Some(frame) = frame else {
                return Ok(None);
            };
            if let Ok(data) = frame?.into_data() {
                self.ready.extend(self.decoder.push(&data)?);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// warm / unload

async fn warm(args: &WarmArgs, global: &Global) -> anyhow::Result<()> {
    let mr: ModelRef = args
        .model
        .parse()
        .map_err(|e| anyhow::anyhow!("warm: model {:?} must be provider/model: {e}", args.model))?;
    let client = client(global, &args.control)?;
    let action = json!({"action": "warm", "model": mr.model});
    act(&client, mr.provider.as_str(), &action, args.confirm, global).await
}

async fn unload(args: &UnloadArgs, global: &Global) -> anyhow::Result<()> {
    let (provider, model) = match (&args.model, args.provider.contains('/')) {
        (None, true) => {
            let mr: ModelRef = args.provider.parse().map_err(|e| {
                anyhow::anyhow!("unload: {:?} is not provider/model: {e}", args.provider)
            })?;
            (mr.provider, Some(mr.model))
        }
        _ => (provider_id(&args.provider, "unload")?, args.model.clone()),
    };
    if model.as_deref().is_some_and(str::is_empty) {
        bail!("unload: model must not be empty");
    }
    let action = match model {
        Some(m) => json!({"action": "unload", "model": m}),
        None => json!({"action": "unload_all"}),
    };
    let client = client(global, &args.control)?;
    act(&client, provider.as_str(), &action, args.confirm, global).await
}

fn provider_id(s: &str, cmd: &str) -> anyhow::Result<ProviderId> {
    ProviderId::new(s).map_err(|e| anyhow::anyhow!("{cmd}: provider {s:?} is not valid: {e}"))
}

async fn act(
    client: &Client,
    provider: &str,
    action: &Value,
    confirm: bool,
    global: &Global,
) -> anyhow::Result<()> {
    let path = format!(
        "/api/hosts/{provider}/actions{}",
        if confirm { "?confirm=true" } else { "" }
    );
    let reply = client.post_json(&path, action).await?;
    if global.json {
        println!("{}", reply.text().trim_end());
    }
    let what = describe_action(action, provider);
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    match reply.status {
        200..=299 => {
            if !global.json {
                let position = body.get("position").and_then(Value::as_u64);
                match position {
                    Some(p) => println!("{what}: queued at position {p}"),
                    None => println!("{what}: accepted"),
                }
                println!("follow progress with `booctl fleet watch`");
            }
            Ok(())
        }
        409 => {
            let holder = body
                .get("holder")
                .and_then(Value::as_str)
                .map(|h| format!(" (held by {h})"))
                .unwrap_or_default();
            bail!(
                "{what}: refused, {}{holder}; pass --confirm to act anyway",
                error_message(&reply.body)
            )
        }
        503 => bail!("{what}: host {provider} is offline; try again once it is connected"),
        429 => {
            let queued: Vec<String> = body
                .get("queued")
                .and_then(Value::as_array)
                .map(|q| q.iter().map(|a| describe_action(a, provider)).collect())
                .unwrap_or_default();
            bail!(
                "{what}: the action queue of {provider} is full; queued: {}",
                if queued.is_empty() {
                    "?".to_owned()
                } else {
                    queued.join(", ")
                }
            )
        }
        401 | 403 => bail!(
            "{what}: the gateway requires an admin token{}: set --admin-token or BOOCONTROL_ADMIN_TOKEN",
            if client.has_token() {
                " and rejected the one given"
            } else {
                ""
            }
        ),
        status => bail!(
            "{what}: gateway answered {status}: {}",
            error_message(&reply.body)
        ),
    }
}

/// `warm qwen on gpu-box`, `unload all models on gpu-box`, from an action's JSON.
fn describe_action(action: &Value, provider: &str) -> String {
    let kind = action.get("action").and_then(Value::as_str).unwrap_or("?");
    match (kind, action.get("model").and_then(Value::as_str)) {
        ("unload_all", _) => format!("unload all models on {provider}"),
        (kind, Some(m)) => format!("{kind} {m} on {provider}"),
        (kind, None) => format!("{kind} on {provider}"),
    }
}

// ---------------------------------------------------------------------------------------------
// logs

async fn logs(args: &LogsArgs, global: &Global) -> anyhow::Result<()> {
    let provider = provider_id(&args.provider, "logs")?;
    let client = client(global, &args.control)?;
    let query = args.tail.map(|n| format!("?tail={n}")).unwrap_or_default();
    let color = use_color();
    if !args.follow {
        let path = format!("/api/logs/{provider}{query}");
        let reply = client.get(&path).await?;
        ensure_ok(&client, &reply, &format!("GET {path}"), global.json)?;
        if global.json {
            println!("{}", reply.text().trim_end());
            return Ok(());
        }
        let body: Value = serde_json::from_slice(&reply.body)
            .with_context(|| format!("GET {path}: the reply is not JSON"))?;
        let lines = body
            .get("lines")
            .and_then(Value::as_array)
            .with_context(|| format!("GET {path}: the reply has no \"lines\" array"))?;
        let mut out = std::io::stdout().lock();
        for l in lines {
            writeln!(out, "{}", log_line(l, color))?;
        }
        return Ok(());
    }
    let path = format!("/api/logs/{provider}/stream{query}");
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let (status, body) = tokio::select! {
        r = client.stream(&path) => r?,
        _ = &mut ctrl_c => return Ok(()),
    };
    if status != 200 {
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let what = format!("GET {path}");
        ensure_ok(&client, &Reply { status, body }, &what, global.json)?;
        bail!("{what}: gateway answered {status} instead of an event stream");
    }
    let mut stream = EventStream::new(body);
    let mut seen: u64 = 0;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m?,
            _ = &mut ctrl_c => return Ok(()),
        };
        let Some(msg) = msg else {
            bail!("the gateway at {} closed the log stream", client.url());
        };
        if msg.event != "log" {
            continue;
        }
        if global.json {
            println!("{}", msg.data);
        } else {
            let v: Value = serde_json::from_str(&msg.data)
                .context("log stream: an event is not a JSON log line")?;
            println!("{}", log_line(&v, color));
        }
        std::io::stdout().flush().ok();
        seen += 1;
        if args.max_events.is_some_and(|max| seen >= max) {
            return Ok(());
        }
    }
}

/// One log line; proxy lines are dimmed when colored (upstream output is what users read).
fn log_line(v: &Value, color: bool) -> String {
    let line = v.get("line").and_then(Value::as_str).unwrap_or_default();
    let proxy = v.get("source").and_then(Value::as_str) == Some("proxy");
    if proxy {
        paint(color, DIM, line)
    } else {
        line.to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// shared

/// Fails with a clear message unless the reply is 2xx; in `--json` mode the body is printed first.
fn ensure_ok(client: &Client, reply: &Reply, what: &str, json: bool) -> anyhow::Result<()> {
    if (200..300).contains(&reply.status) {
        return Ok(());
    }
    if json {
        println!("{}", reply.text().trim_end());
    }
    match reply.status {
        401 | 403 => bail!(
            "{what}: the gateway requires an admin token: set --admin-token or BOOCONTROL_ADMIN_TOKEN"
        ),
        404 if what.starts_with("GET /api/fleet") => bail!(
            "{what}: the gateway at {} has no fleet control API (404)",
            client.url()
        ),
        s => bail!(
            "{what}: gateway answered {s}: {}",
            error_message(&reply.body)
        ),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Colors on only for a terminal and when `NO_COLOR` is unset or empty.
fn use_color() -> bool {
    color_wanted(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// The color rule: a terminal, and `NO_COLOR` unset or empty (<https://no-color.org>).
fn color_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

const RED: &str = "31";
const GREEN: &str = "32";
const YELLOW: &str = "33";
const DIM: &str = "2";
const BOLD: &str = "1";

fn paint(color: bool, code: &str, s: &str) -> String {
    if color && !s.is_empty() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_owned()
    }
}

/// One table cell: text and an optional color code.
type Cell = (String, Option<&'static str>);

fn cell(s: impl Into<String>) -> Cell {
    (s.into(), None)
}

const HEADER: [&str; 10] = [
    "HOST",
    "LIVENESS",
    "LAST SEEN",
    "IN-FLIGHT",
    "VRAM",
    "TEMP",
    "POWER",
    "MODEL",
    "STATE",
    "TTL",
];

/// The fleet table: one row per host with its first loaded model, then one row per further
/// model (host columns blank). Only models that are loaded or changing are listed.
pub fn render_table(hosts: &[HostSnapshot], now_ms: u64, color: bool) -> String {
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    for h in hosts {
        let (live, live_color) = match h.liveness {
            LivenessState::Connected => ("connected", GREEN),
            LivenessState::Reconnecting => ("reconnecting", YELLOW),
            LivenessState::Down => ("down", RED),
        };
        let live = match &h.lease {
            Some(l) => format!("{live} [{}]", l.purpose),
            None => live.to_owned(),
        };
        let perf = h.perf.as_ref();
        let host_cells: Vec<Cell> = vec![
            cell(h.provider.clone()),
            (live, Some(live_color)),
            cell(
                h.last_seen_at
                    .map_or_else(|| "never".to_owned(), |t| ago(now_ms, t)),
            ),
            cell(h.in_flight.to_string()),
            cell(vram(
                perf.and_then(|p| p.vram_used_mb),
                perf.and_then(|p| p.vram_total_mb),
            )),
            cell(
                perf.and_then(|p| p.gpu_temp_c)
                    .map_or("-".into(), |t| format!("{t:.0}°C")),
            ),
            cell(
                perf.and_then(|p| p.power_w)
                    .map_or("-".into(), |w| format!("{w:.0} W")),
            ),
        ];
        let loaded: Vec<_> = h
            .models
            .iter()
            .filter(|(_, m)| {
                matches!(
                    m.state,
                    ModelState::Ready
                        | ModelState::Starting
                        | ModelState::Stopping
                        | ModelState::Error
                )
            })
            .collect();
        if loaded.is_empty() {
            let mut row = host_cells;
            row.extend([cell("-"), cell(""), cell("")]);
            rows.push(row);
            continue;
        }
        for (i, (id, m)) in loaded.into_iter().enumerate() {
            let mut row = if i == 0 {
                host_cells.clone()
            } else {
                vec![cell(""); host_cells.len()]
            };
            let state_color = match m.state {
                ModelState::Ready => GREEN,
                ModelState::Error => RED,
                _ => YELLOW,
            };
            let ttl = match (m.state, m.ttl_s, m.ttl_remaining_ms(now_ms)) {
                (ModelState::Ready, _, Some(_)) if h.in_flight > 0 => "in use".to_owned(),
                (_, _, Some(ms)) => duration(ms),
                (ModelState::Ready, Some(0), None) => "never".to_owned(),
                _ => "-".to_owned(),
            };
            row.extend([
                cell(id.clone()),
                (m.state.as_str().to_owned(), Some(state_color)),
                cell(ttl),
            ]);
            rows.push(row);
        }
    }
    let mut widths: Vec<usize> = HEADER.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, (text, _)) in widths.iter_mut().zip(row) {
            *w = (*w).max(text.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<Cell> = HEADER
        .iter()
        .map(|h| ((*h).to_owned(), Some(BOLD)))
        .collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, ((text, code), w)) in row.iter().zip(&widths).enumerate() {
            let pad = if i + 1 == row.len() {
                0
            } else {
                w - text.chars().count() + 2
            };
            match code {
                Some(c) => line.push_str(&paint(color, c, text)),
                None => line.push_str(text),
            }
            line.push_str(&" ".repeat(pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if hosts.is_empty() {
        out.push_str("(no hosts)\n");
    }
    out
}

fn vram(used: Option<u64>, total: Option<u64>) -> String {
    let gib = |mb: u64| mb as f64 / 1024.0;
    match (used, total) {
        (Some(u), Some(t)) => format!("{:.1}/{:.1} GiB", gib(u), gib(t)),
        (Some(u), None) => format!("{:.1} GiB", gib(u)),
        (None, Some(t)) => format!("?/{:.1} GiB", gib(t)),
        (None, None) => "-".to_owned(),
    }
}

/// `"5s ago"`, `"3m ago"`, `"2h ago"`, `"4d ago"`; `"just now"` for the future (clock skew).
fn ago(now_ms: u64, t: u64) -> String {
    if t >= now_ms {
        return "just now".to_owned();
    }
    let s = (now_ms - t) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// `"45s"`, `"4m12s"`, `"1h03m"`.
fn duration(ms: u64) -> String {
    let s = ms.div_ceil(1000);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `HH:MM:SS` UTC.
fn clock(now_ms: u64) -> String {
    let s = (now_ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, (s % 3600) / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use boo_fleet_core::{FleetState, Liveness, LivenessInput, PerfSample, ReconnectPolicy};

    const NOW: u64 = 1_800_000_000_000;

    /// gpu-box: connected, qwen ready (TTL 300 s, used 60 s ago), llama starting, one stopped
    /// model, 9.5/24 GiB, 61 °C, 182 W. mac: never connected, nothing loaded.
    fn fleet() -> FleetSnapshot {
        let mut f = FleetState::new();
        f.add_host("gpu-box");
        f.add_host("mac");
        let mut live = Liveness::new();
        live.step(
            LivenessInput::Connected,
            NOW - 5_000,
            &ReconnectPolicy::default(),
            0.0,
        );
        f.set_liveness("gpu-box", &live).unwrap();
        f.set_models(
            "gpu-box",
            &[
                ("qwen".into(), ModelState::Ready),
                ("llama".into(), ModelState::Starting),
                ("old".into(), ModelState::Stopped),
            ],
            NOW - 120_000,
        )
        .unwrap();
        f.set_model_ttl("gpu-box", "qwen", Some(300)).unwrap();
        f.model_used("gpu-box", "qwen", NOW - 60_000).unwrap();
        f.set_perf(
            "gpu-box",
            PerfSample {
                at: NOW - 1_000,
                vram_used_mb: Some(9_728),
                vram_total_mb: Some(24_576),
                gpu_temp_c: Some(61.2),
                power_w: Some(182.4),
            },
        )
        .unwrap();
        f.snapshot()
    }

    #[test]
    fn table_shows_hosts_models_ttl_and_perf() {
        let out = render_table(&fleet().hosts, NOW, false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("HOST") && lines[0].ends_with("TTL"),
            "{out}"
        );
        let first = lines[1].split_whitespace().collect::<Vec<_>>();
        assert_eq!(
            first,
            [
                "gpu-box",
                "connected",
                "5s",
                "ago",
                "0",
                "9.5/24.0",
                "GiB",
                "61°C",
                "182",
                "W",
                "llama",
                "starting",
                "-"
            ],
            "{out}"
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["qwen", "ready", "4m00s"]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["mac", "reconnecting", "never", "0", "-", "-", "-", "-"]
        );
        assert!(!out.contains("old"), "stopped models are not listed: {out}");
        assert!(!out.contains('\x1b'), "plain output has no escapes: {out}");
        // Columns line up: the model column starts at the same offset on every row.
        let char_col =
            |line: &str, needle: &str| line.find(needle).map(|b| line[..b].chars().count());
        let col = char_col(lines[0], "MODEL");
        assert_eq!(char_col(lines[1], "llama"), col, "{out}");
        assert_eq!(char_col(lines[2], "qwen"), col, "{out}");
    }

    #[test]
    fn colored_table_keeps_alignment() {
        let snap = fleet();
        let plain = render_table(&snap.hosts, NOW, false);
        let colored = render_table(&snap.hosts, NOW, true);
        assert!(colored.contains("\x1b[32mconnected\x1b[0m"), "{colored}");
        assert!(colored.contains("\x1b[33mstarting\x1b[0m"), "{colored}");
        let strip = |s: &str| {
            let mut out = String::new();
            let mut in_esc = false;
            for c in s.chars() {
                match (in_esc, c) {
                    (false, '\x1b') => in_esc = true,
                    (true, 'm') => in_esc = false,
                    (true, _) => {}
                    (false, c) => out.push(c),
                }
            }
            out
        };
        assert_eq!(strip(&colored), plain);
    }

    #[test]
    fn ttl_shows_in_use_while_requests_run_and_down_hosts_in_red() {
        let mut f = FleetState::new();
        f.add_host("h");
        f.set_models("h", &[("m".into(), ModelState::Ready)], NOW - 1_000)
            .unwrap();
        f.set_model_ttl("h", "m", Some(60)).unwrap();
        f.set_in_flight("h", 2).unwrap();
        let mut live = Liveness::new();
        let p = ReconnectPolicy::default();
        live.step(LivenessInput::Connected, NOW - 600_000, &p, 0.0);
        for i in 0..6 {
            live.step(LivenessInput::Error, NOW - 500_000 + i, &p, 0.0);
        }
        f.set_liveness("h", &live).unwrap();
        let snap = f.snapshot();
        let out = render_table(&snap.hosts, NOW, false);
        assert!(out.contains("in use"), "{out}");
        assert!(out.contains("down") && out.contains("10m ago"), "{out}");
        assert!(render_table(&snap.hosts, NOW, true).contains("\x1b[31mdown\x1b[0m"));
    }

    #[test]
    fn view_reduces_stream_into_the_table() {
        let mut f = FleetState::new();
        f.add_host("gpu-box");
        let snap = f.snapshot();
        let d1 = f
            .set_models("gpu-box", &[("qwen".into(), ModelState::Starting)], NOW)
            .unwrap();
        let d2 = f
            .set_model_state("gpu-box", "qwen", ModelState::Ready, NOW + 1)
            .unwrap();
        let mut view = FleetView::new();
        for d in d1.into_iter().chain(d2) {
            // Through JSON, as the stream carries it.
            view.apply_delta(serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap());
        }
        view.apply_snapshot(serde_json::from_value(serde_json::to_value(&snap).unwrap()).unwrap());
        let out = render_table(view.hosts(), NOW, false);
        assert!(out.contains("qwen") && out.contains("ready"), "{out}");
    }

    #[test]
    fn a_leased_host_shows_the_lease_purpose() {
        let mut f = FleetState::new();
        f.add_host("h");
        let lease = boo_fleet_core::Lease {
            provider: "h".into(),
            holder: "bench:run-1".into(),
            purpose: "bench".into(),
            token: 1,
            acquired_at: NOW - 1_000,
            expires_at: NOW + 600_000,
        };
        f.set_lease("h", Some(lease)).unwrap();
        let out = render_table(&f.snapshot().hosts, NOW, false);
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(row[..3], ["h", "reconnecting", "[bench]"], "{out}");
    }

    #[test]
    fn empty_fleet_and_formatting_helpers() {
        assert!(render_table(&[], NOW, false).contains("(no hosts)"));
        assert_eq!(ago(NOW, NOW + 5), "just now");
        assert_eq!(ago(NOW, NOW - 3 * 3_600_000), "3h ago");
        assert_eq!(ago(NOW, NOW - 2 * 86_400_000), "2d ago");
        assert_eq!(duration(45_000), "45s");
        assert_eq!(duration(3_725_000), "1h02m");
        assert_eq!(vram(Some(512), None), "0.5 GiB");
        assert_eq!(vram(None, None), "-");
        assert_eq!(clock(3_723_000), "01:02:03 UTC");
        let waits: Vec<u64> = (1..=8).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn colors_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(color_wanted(true, None));
        assert!(color_wanted(true, Some(OsStr::new(""))));
        assert!(!color_wanted(true, Some(OsStr::new("1"))));
        assert!(!color_wanted(false, None));
    }

    #[test]
    fn describes_actions() {
        assert_eq!(
            describe_action(&json!({"action":"warm","model":"qwen"}), "gpu"),
            "warm qwen on gpu"
        );
        assert_eq!(
            describe_action(&json!({"action":"unload_all"}), "gpu"),
            "unload all models on gpu"
        );
    }
}
