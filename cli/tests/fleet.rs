//! Runs the built `booctl` fleet commands against a tiny in-test control API server on
//! 127.0.0.1:0 that serves the contract's shapes (snapshots and deltas built with fleet-core).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use boo_fleet_core::{
    FleetSnapshot, FleetState, Liveness, LivenessInput, ModelState, PerfSample, ReconnectPolicy,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// A request the server saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    auth: Option<String>,
    body: String,
}

/// What the server answers: status, content type, body chunks, and whether to hold the
/// connection open after the chunks (like a live event stream).
struct Answer {
    status: u16,
    content_type: &'static str,
    chunks: Vec<String>,
    hold_open: bool,
}

fn json_answer(status: u16, v: Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        chunks: vec![v.to_string()],
        hold_open: false,
    }
}

fn sse_answer(chunks: Vec<String>) -> Answer {
    Answer {
        status: 200,
        content_type: "text/event-stream",
        chunks,
        hold_open: true,
    }
}

/// A response body that yields its chunks, then ends or stays open forever.
struct Scripted {
    chunks: VecDeque<Bytes>,
    hold_open: bool,
}

impl Body for Scripted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.chunks.pop_front() {
            Some(c) => Poll::Ready(Some(Ok(Frame::data(c)))),
            None if self.hold_open => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Server {
    let handler: Handler = Arc::new(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    let log = log.clone();
                    async move {
                        let method = req.method().to_string();
                        let uri = req.uri().to_string();
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_owned());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let seen = Seen {
                            method,
                            uri,
                            auth,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        };
                        log.lock().unwrap().push(seen.clone());
                        let a = handler(&seen);
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(a.status)
                                .header("content-type", a.content_type)
                                .body(Scripted {
                                    chunks: a.chunks.into_iter().map(Bytes::from).collect(),
                                    hold_open: a.hold_open,
                                })
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    Server { addr, seen }
}

async fn booctl(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_booctl"));
    cmd.args(args).env_clear().kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    // A failure guard only: these commands finish in milliseconds.
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("booctl did not exit within 60 s")
        .expect("run booctl")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// gpu-box connected with qwen ready and a perf sample; mac still reconnecting.
fn fleet_state() -> FleetState {
    let now = now_ms();
    let mut f = FleetState::new();
    f.add_host("gpu-box");
    f.add_host("mac");
    let mut live = Liveness::new();
    live.step(
        LivenessInput::Connected,
        now - 2_000,
        &ReconnectPolicy::default(),
        0.0,
    );
    f.set_liveness("gpu-box", &live).unwrap();
    f.set_models("gpu-box", &[("qwen".into(), ModelState::Ready)], now)
        .unwrap();
    f.set_perf(
        "gpu-box",
        PerfSample {
            at: now,
            vram_used_mb: Some(8_192),
            vram_total_mb: Some(16_384),
            gpu_temp_c: Some(55.0),
            power_w: Some(120.0),
        },
    )
    .unwrap();
    f
}

fn sse(event: &str, data: &impl serde::Serialize) -> String {
    format!(
        "event: {event}\ndata: {}\n\n",
        serde_json::to_string(data).unwrap()
    )
}

#[tokio::test]
async fn status_prints_the_fleet_table_and_raw_json() {
    let snap = fleet_state().snapshot();
    let body = serde_json::to_value(&snap).unwrap();
    let server = serve(move |s| match s.uri.as_str() {
        "/api/fleet" => json_answer(200, body.clone()),
        _ => json_answer(404, json!({"error": {"message": "not found"}})),
    })
    .await;
    let url = server.url();

    let out = booctl(&["fleet", "status", "--gateway", &url], &[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("HOST"), "{stdout}");
    let gpu: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(gpu[0..2], ["gpu-box", "connected"], "{stdout}");
    for needle in ["8.0/16.0 GiB", "55°C", "120 W", "qwen", "ready"] {
        assert!(lines[1].contains(needle), "missing {needle}: {stdout}");
    }
    assert!(lines[2].starts_with("mac") && lines[2].contains("reconnecting"));
    assert!(!stdout.contains('\x1b'), "no colors when piped: {stdout}");

    // BOOCONTROL_URL works like --gateway; --json prints the snapshot as served.
    let out = booctl(&["fleet", "status", "--json"], &[("BOOCONTROL_URL", &url)]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let back: FleetSnapshot = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(back, snap);
}

/// The model columns (model, state, TTL) of llama's row in `frame`.
fn llama_row(frame: &str) -> Vec<&str> {
    let line = frame.lines().find(|l| l.contains("llama"));
    let words: Vec<&str> = line.expect("a llama row").split_whitespace().collect();
    let at = words.iter().position(|w| *w == "llama").unwrap();
    words[at..].to_vec()
}

#[tokio::test]
async fn watch_reduces_snapshot_and_deltas_and_stops_after_max_events() {
    let mut f = fleet_state();
    let snap = f.snapshot();
    let now = now_ms();
    let starting = f
        .set_model_state("gpu-box", "llama", ModelState::Starting, now)
        .unwrap()
        .unwrap();
    let ready = f
        .set_model_state("gpu-box", "llama", ModelState::Ready, now + 10)
        .unwrap()
        .unwrap();
    let unused = f.set_in_flight("mac", 3).unwrap().unwrap();
    let chunks = vec![
        sse("snapshot", &snap),
        ": heartbeat\n\n".to_owned(),
        sse("delta", &starting),
        // Split mid-event: the client must reassemble frames.
        sse("delta", &ready)[..20].to_owned(),
        sse("delta", &ready)[20..].to_owned(),
        sse("delta", &unused),
    ];
    let server = serve(move |s| match s.uri.as_str() {
        "/api/fleet/stream" => sse_answer(chunks.clone()),
        _ => json_answer(404, json!({"error": "not found"})),
    })
    .await;

    let out = booctl(
        &[
            "fleet",
            "watch",
            "--gateway",
            &server.url(),
            "--max-events",
            "3",
        ],
        &[],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let frames: Vec<&str> = stdout.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert_eq!(frames.len(), 3, "one frame per event: {stdout}");
    assert!(!frames[0].contains("llama"), "{}", frames[0]);
    assert_eq!(llama_row(frames[1])[..2], ["llama", "starting"]);
    assert_eq!(llama_row(frames[2])[..2], ["llama", "ready"]);
    // The 4th event was never consumed: mac's in-flight count stays 0.
    let mac: Vec<&str> = frames[2]
        .lines()
        .find(|l| l.starts_with("mac"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(mac[..4], ["mac", "reconnecting", "never", "0"]);
}

#[tokio::test]
async fn watch_json_prints_raw_events_and_resyncs_after_a_gap() {
    let mut f = fleet_state();
    let snap = f.snapshot();
    let _lost = f.set_in_flight("gpu-box", 1).unwrap().unwrap();
    let after_gap = f.set_in_flight("gpu-box", 2).unwrap().unwrap();
    let fresh = f.snapshot();
    let fresh_json = serde_json::to_value(&fresh).unwrap();
    let chunks = vec![sse("snapshot", &snap), sse("delta", &after_gap)];
    let server = serve(move |s| match s.uri.as_str() {
        "/api/fleet/stream" => sse_answer(chunks.clone()),
        "/api/fleet" => json_answer(200, fresh_json.clone()),
        _ => json_answer(404, json!({"error": "not found"})),
    })
    .await;

    let out = booctl(
        &[
            "fleet",
            "watch",
            "--gateway",
            &server.url(),
            "--max-events",
            "2",
        ],
        &[],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let last = stdout
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .last()
        .unwrap();
    let gpu: Vec<&str> = last.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        gpu[..5],
        ["gpu-box", "connected", "2s", "ago", "2"],
        "{stdout}"
    );
    let uris: Vec<String> = server.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        uris,
        ["/api/fleet/stream", "/api/fleet"],
        "gap → snapshot refetch"
    );

    let out = booctl(
        &[
            "--json",
            "fleet",
            "watch",
            "--gateway",
            &server.url(),
            "--max-events",
            "2",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0], serde_json::to_value(&snap).unwrap());
    assert_eq!(events[1], serde_json::to_value(&after_gap).unwrap());
}

/// Answers actions like the contract: `leased` needs ?confirm=true (409), `offline` is down
/// (503), `full` has a full queue (429), `locked` needs `Bearer right` (401), others accept.
fn action_server(s: &Seen) -> Answer {
    let provider = s
        .uri
        .strip_prefix("/api/hosts/")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default();
    let confirmed = s.uri.ends_with("?confirm=true");
    let action: Value = serde_json::from_str(&s.body).unwrap_or(Value::Null);
    match provider {
        _ if s.method != "POST" => json_answer(405, json!({"error": "method"})),
        "leased" if !confirmed => json_answer(
            409,
            json!({"error": "bench in progress", "requiresConfirmation": true,
                   "provider": "leased", "holder": "bench:run-7", "purpose": "bench"}),
        ),
        "offline" => json_answer(503, json!({"error": "host offline", "provider": "offline"})),
        "full" => json_answer(
            429,
            json!({"error": "queue full", "provider": "full", "queued": [
                {"action": "warm", "model": "a"}, {"action": "unload", "model": "b"},
                {"action": "unload_all"}, {"action": "warm", "model": "c"}]}),
        ),
        "locked" if s.auth.as_deref() != Some("Bearer right") => json_answer(
            401,
            json!({"error": {"message": "admin token required", "type": "authentication_error"}}),
        ),
        _ => json_answer(
            202,
            json!({"accepted": true, "provider": provider, "action": action, "position": 2}),
        ),
    }
}

#[tokio::test]
async fn warm_and_unload_post_actions_and_print_the_queue_position() {
    let server = serve(action_server).await;
    let url = server.url();

    let out = booctl(&["warm", "gpu-box/qwen:7b", "--gateway", &url], &[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("warm qwen:7b on gpu-box: queued at position 2"),
        "{stdout}"
    );

    let out = booctl(&["unload", "gpu-box", "--gateway", &url], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("unload all models on gpu-box"));
    let out = booctl(
        &["unload", "gpu-box/qwen", "--gateway", &url, "--json"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["position"], 2);

    let seen = server.seen();
    let posted: Vec<(&str, Value)> = seen
        .iter()
        .map(|s| (s.uri.as_str(), serde_json::from_str(&s.body).unwrap()))
        .collect();
    assert_eq!(
        posted,
        [
            (
                "/api/hosts/gpu-box/actions",
                json!({"action": "warm", "model": "qwen:7b"})
            ),
            (
                "/api/hosts/gpu-box/actions",
                json!({"action": "unload_all"})
            ),
            (
                "/api/hosts/gpu-box/actions",
                json!({"action": "unload", "model": "qwen"})
            ),
        ]
    );
    assert!(
        seen.iter().all(|s| s.auth.is_none()),
        "no token unless given"
    );

    // Bad ids are refused before any request, naming the problem.
    let out = booctl(&["warm", "qwen", "--gateway", &url], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("must be provider/model"),
        "{}",
        text(&out.stderr)
    );
    let out = booctl(&["unload", "Bad Host", "--gateway", &url], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("provider \"Bad Host\" is not valid"));
    assert_eq!(server.seen().len(), 3);
}

async fn run(url: &str, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut a = args.to_vec();
    a.extend(["--gateway", url]);
    let out = booctl(&a, envs).await;
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn action_refusals_map_to_clear_messages() {
    let server = serve(action_server).await;
    let url = server.url();
    let (code, _, err) = run(&url, &["warm", "leased/qwen"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("bench in progress") && err.contains("bench:run-7"),
        "{err}"
    );
    assert!(err.contains("pass --confirm"), "{err}");
    let (code, out, err) = run(&url, &["warm", "leased/qwen", "--confirm"], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("queued at position 2"));

    let (code, _, err) = run(&url, &["unload", "offline", "qwen"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("host offline is offline"), "{err}");

    let (code, _, err) = run(&url, &["warm", "full/x"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("queue of full is full; queued: warm a on full, unload b on full, unload all models on full, warm c on full"),
        "{err}"
    );

    let (code, _, err) = run(&url, &["warm", "locked/x"], &[]).await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--admin-token") && err.contains("BOOCONTROL_ADMIN_TOKEN"),
        "{err}"
    );
    let (code, _, err) = run(
        &url,
        &["warm", "locked/x"],
        &[("BOOCONTROL_ADMIN_TOKEN", "wrong-secret")],
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(
        err.contains("rejected") && !err.contains("wrong-secret"),
        "{err}"
    );
    let (code, _, err) = run(&url, &["warm", "locked/x", "--admin-token", "right"], &[]).await;
    assert_eq!(code, Some(0), "{err}");

    // --json still prints the refusal body on stdout.
    let (code, out, _) = run(&url, &["warm", "offline/x", "--json"], &[]).await;
    assert_eq!(code, Some(1));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["error"],
        "host offline"
    );

    let confirms: Vec<bool> = server
        .seen()
        .iter()
        .filter(|s| s.uri.starts_with("/api/hosts/leased/"))
        .map(|s| s.uri.ends_with("?confirm=true"))
        .collect();
    assert_eq!(confirms, [false, true]);
}

#[tokio::test]
async fn logs_print_the_tail_and_follow_the_stream() {
    let server = serve(|s| match s.uri.as_str() {
        "/api/logs/gpu-box?tail=2" => json_answer(
            200,
            json!({"provider": "gpu-box", "lines": [
                {"source": "proxy", "line": "swapping to qwen"},
                {"source": "upstream", "line": "llama_model_load: 28 layers"}]}),
        ),
        "/api/logs/gpu-box/stream" => sse_answer(vec![
            "event: log\ndata: {\"source\":\"upstream\",\"line\":\"one\"}\n\n".into(),
            ": heartbeat\n\n".into(),
            "event: log\ndata: {\"source\":\"proxy\",\"line\":\"two\"}\n\n".into(),
            "event: log\ndata: {\"source\":\"upstream\",\"line\":\"three\"}\n\n".into(),
        ]),
        "/api/logs/closing/stream" => Answer {
            hold_open: false,
            ..sse_answer(vec![
                "event: log\ndata: {\"source\":\"upstream\",\"line\":\"bye\"}\n\n".into(),
            ])
        },
        _ => json_answer(
            404,
            json!({"error": {"message": "unknown provider: nope", "type": "invalid_request_error"}}),
        ),
    })
    .await;
    let url = server.url();

    let out = booctl(&["logs", "gpu-box", "--tail", "2", "--gateway", &url], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "swapping to qwen\nllama_model_load: 28 layers\n"
    );

    let out = booctl(
        &[
            "logs",
            "gpu-box",
            "-f",
            "--gateway",
            &url,
            "--max-events",
            "3",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "one\ntwo\nthree\n");

    let out = booctl(&["logs", "closing", "-f", "--gateway", &url], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "bye\n");
    assert!(text(&out.stderr).contains("closed the log stream"));

    let out = booctl(&["logs", "nope", "--gateway", &url], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("unknown provider: nope"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn unreachable_gateway_is_one_clear_line() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    for args in [
        vec!["fleet", "status"],
        vec!["fleet", "watch"],
        vec!["warm", "gpu-box/qwen"],
        vec!["logs", "gpu-box", "-f"],
    ] {
        let mut a = args.clone();
        a.extend(["--gateway", &url]);
        let out = booctl(&a, &[]).await;
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.contains(&format!("cannot reach the gateway at {url}")),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn watch_exits_cleanly_on_ctrl_c() {
    let snap = fleet_state().snapshot();
    let chunks = vec![sse("snapshot", &snap)];
    let server = serve(move |_| sse_answer(chunks.clone())).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_booctl"))
        .args(["fleet", "watch", "--gateway", &server.url()])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let first_frame = async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("gpu-box") {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "booctl exited before drawing");
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), first_frame)
        .await
        .expect("first frame within 60 s");
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("booctl exits after SIGINT")
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}

#[tokio::test]
async fn watch_and_logs_report_refused_streams() {
    let server = serve(|s| match s.auth.as_deref() {
        Some("Bearer right") => sse_answer(vec![]),
        _ => json_answer(401, json!({"error": {"message": "admin token required"}})),
    })
    .await;
    let url = server.url();
    for args in [vec!["fleet", "watch"], vec!["logs", "gpu-box", "-f"]] {
        let (code, _, err) = run(&url, &args, &[]).await;
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("--admin-token"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn https_to_a_plain_http_gateway_fails_in_one_line() {
    let server = serve(|_| json_answer(200, json!({"hosts": []}))).await;
    let url = format!("https://{}", server.addr);
    let (code, out, err) = run(&url, &["fleet", "status"], &[]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot reach the gateway at {url}")),
        "{err}"
    );
    // And the same server over http works.
    let (code, out, err) = run(&server.url(), &["fleet", "status"], &[]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("(no hosts)"), "{out}");
}

#[tokio::test]
async fn watch_reconnects_when_the_stream_ends() {
    let mut f = fleet_state();
    let first = f.snapshot();
    let _ = f.set_in_flight("gpu-box", 4).unwrap();
    let second = f.snapshot();
    let after = f
        .set_model_state("gpu-box", "qwen", ModelState::Stopping, now_ms())
        .unwrap()
        .unwrap();
    let calls = Arc::new(Mutex::new(0u32));
    let server = serve(move |_| {
        let mut n = calls.lock().unwrap();
        *n += 1;
        if *n == 1 {
            // The gateway restarts: the first stream ends after its snapshot…
            Answer {
                hold_open: false,
                ..sse_answer(vec![sse("snapshot", &first)])
            }
        } else if *n == 2 {
            // …and is not ready on the first retry.
            json_answer(503, json!({"error": "starting"}))
        } else {
            sse_answer(vec![sse("snapshot", &second), sse("delta", &after)])
        }
    })
    .await;
    let out = booctl(
        &[
            "fleet",
            "watch",
            "--gateway",
            &server.url(),
            "--max-events",
            "3",
        ],
        &[],
    )
    .await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("ended; reconnecting in 1s"), "{stderr}");
    assert!(stderr.contains("answered 503; retrying in 2s"), "{stderr}");
    let frames: Vec<&str> = stdout.split("\n\n").filter(|f| !f.is_empty()).collect();
    assert_eq!(frames.len(), 3, "{stdout}");
    let gpu = |frame: &str| -> Vec<String> {
        let line = frame.lines().find(|l| l.starts_with("gpu-box")).unwrap();
        line.split_whitespace().map(str::to_owned).collect()
    };
    assert_eq!(gpu(frames[0])[4], "0", "in-flight before the restart");
    assert_eq!(gpu(frames[1])[4], "4", "fresh snapshot after reconnecting");
    assert!(frames[2].contains("stopping"), "{}", frames[2]);
    assert_eq!(server.seen().len(), 3);
}
