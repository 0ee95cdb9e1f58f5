//! Bench binary: one control plane following 100 simulated llama-swap hosts.
//!
//! The hosts run in a child process (this binary re-executed with `FLEET_FOLLOW_SIMS=1`), so the
//! CPU and RSS figures are the gateway's own. Phases:
//! 1. connect all hosts, then idle for `IDLE_SECS`: CPU (% of one core) and RSS;
//! 2. events flowing: `WARMS` model swaps spread over the hosts; for each, the time from sending
//!    the request that changes the host's state to the `starting` delta reaching a
//!    `/api/fleet/stream` subscriber over TCP (p50/p99), plus CPU over the phase.
//!
//! Run: `cargo bench -p boo-gateway-http --bench fleet_follow` (env `HOSTS`, `IDLE_SECS`,
//! `WARMS`, `PERF_SECS` override the defaults 100 / 20 / 400 / 5).

use boo_fleet_core::wire::SseDecoder;
use boo_fleet_core::{Change, Delta, ModelState, ReconnectPolicy};
use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, start_host};
use boo_gateway_http::control::{ControlApi, ControlConfig, HostTarget};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (user+system CPU seconds, RSS MiB) of this process.
fn self_usage() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = 100.0; // USER_HZ on Linux
    let cpu = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu / tick, rss_kb / 1024.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn run_sims(n: u64) {
    let mut hosts = Vec::new();
    for i in 0..n {
        let mut spec = HostSpec::llama_swap(
            format!("h{i:03}"),
            ApiGen::Current,
            vec![ModelSpec::new("alpha"), ModelSpec::new("beta")],
        )
        .with_time_scale(0.001);
        // Loads take milliseconds (time scale), but GPU samples keep llama-swap's real 5 s
        // cadence: the sim scales `perf_every_ms` too, so undo it.
        spec.perf_every_ms = 5_000_000;
        let h = start_host(spec).await.expect("sim host");
        println!("{} {}", h.id(), h.base_url());
        hosts.push(h);
    }
    println!("READY");
    let _ = std::io::stdout().flush();
    // Live until the parent closes our stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    })
    .await;
    drop(hosts);
}

type Arrivals = Arc<Mutex<HashMap<(String, String), Instant>>>;

async fn subscribe(base: &str, arrivals: Arrivals) {
    let addr = base.trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::get("/api/fleet/stream")
        .header("host", "bench")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let mut body = send.send_request(req).await.expect("stream").into_body();
    tokio::spawn(async move {
        let mut dec = SseDecoder::new();
        while let Some(Ok(f)) = body.frame().await {
            let Ok(data) = f.into_data() else { continue };
            for m in dec.push(&data).unwrap_or_default() {
                if m.event != "delta" {
                    continue;
                }
                let Ok(d) = serde_json::from_str::<Delta>(&m.data) else {
                    continue;
                };
                if let Change::Model { model, status } = d.change
                    && status.state == ModelState::Starting
                {
                    arrivals
                        .lock()
                        .expect("lock")
                        .entry((d.provider, model))
                        .or_insert_with(Instant::now);
                }
            }
        }
    });
}

async fn post_chat(base: &str, model: &str) {
    let body = serde_json::json!({"model": model, "messages": [{"role":"user","content":"x"}], "max_tokens": 1});
    let _ = boo_fleet_sim::client::post_json(base, "/v1/chat/completions", &body).await;
}

async fn run_gateway(n: u64) {
    let idle_secs = env_num("IDLE_SECS", 20);
    let warms = env_num("WARMS", 400);
    let exe = std::env::current_exe().expect("current exe");
    let mut child = std::process::Command::new(exe)
        .env("FLEET_FOLLOW_SIMS", "1")
        .env("HOSTS", n.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn sims");
    let out = child.stdout.take().expect("stdout");
    let mut targets = Vec::new();
    for line in std::io::BufReader::new(out).lines() {
        let line = line.expect("line");
        if line == "READY" {
            break;
        }
        if let Some((id, url)) = line.split_once(' ') {
            targets.push((id.to_owned(), url.to_owned()));
        }
    }
    let hosts: Vec<HostTarget> = targets
        .iter()
        .map(|(id, url)| HostTarget::llama_swap(id, url))
        .collect();
    let cfg = ControlConfig {
        policy: ReconnectPolicy::default(),
        perf_interval: Duration::from_secs(env_num("PERF_SECS", 5)),
        ..ControlConfig::default()
    };
    let (cpu0, rss0) = self_usage();
    let api = ControlApi::start(cfg, hosts, None).await.expect("start");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let a = api.clone();
    tokio::spawn(async move { a.serve(listener, std::future::pending()).await });
    let t = Instant::now();
    loop {
        let snap = api.hub().snapshot();
        let up = snap
            .hosts
            .iter()
            .filter(|h| h.liveness == boo_fleet_core::LivenessState::Connected)
            .count();
        if up == targets.len() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "only {up} hosts connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "connected {} hosts in {:.2}s (RSS before start {rss0:.1} MiB, CPU {cpu0:.2}s)",
        targets.len(),
        t.elapsed().as_secs_f64()
    );
    let arrivals: Arrivals = Arc::default();
    subscribe(&base, arrivals.clone()).await;

    // Phase 1: idle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c1, _) = self_usage();
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let (c2, rss_idle) = self_usage();
    let idle_cpu = (c2 - c1) / t1.elapsed().as_secs_f64() * 100.0;
    println!(
        "idle: {} hosts, CPU {idle_cpu:.2}% of one core, RSS {rss_idle:.1} MiB",
        targets.len()
    );

    // Phase 2: swaps flowing; latency send → `starting` delta at the subscriber.
    let mut lat = Vec::new();
    let t2 = Instant::now();
    let (c3, _) = self_usage();
    for i in 0..warms {
        let (id, url) = &targets[(i as usize * 7) % targets.len()];
        let model = if (i / targets.len() as u64).is_multiple_of(2) {
            "beta"
        } else {
            "alpha"
        };
        let key = (id.clone(), model.to_owned());
        arrivals.lock().expect("lock").remove(&key);
        let sent = Instant::now();
        post_chat(url, model).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(at) = arrivals.lock().expect("lock").get(&key) {
                lat.push(at.saturating_duration_since(sent).as_secs_f64() * 1e3);
                break;
            }
            if Instant::now() > deadline {
                println!("missed delta for {key:?}");
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (c4, rss_busy) = self_usage();
    let busy_cpu = (c4 - c3) / t2.elapsed().as_secs_f64() * 100.0;
    lat.sort_by(f64::total_cmp);
    println!(
        "events: {} swaps in {:.1}s, CPU {busy_cpu:.2}% of one core, RSS {rss_busy:.1} MiB",
        lat.len(),
        t2.elapsed().as_secs_f64()
    );
    println!(
        "state change -> subscriber: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        lat.len()
    );
    drop(child.stdin.take());
    let _ = child.wait();
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let n = env_num("HOSTS", 100);
    let sims = std::env::var("FLEET_FOLLOW_SIMS").is_ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if sims {
        rt.block_on(run_sims(n));
    } else {
        rt.block_on(run_gateway(n));
    }
}
