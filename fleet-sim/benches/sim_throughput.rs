//! fleet-sim throughput benchmark (harness = false).
//!
//! The server runs on its own thread with a current-thread runtime (one core); the load
//! generator runs on another thread. Run with:
//!
//! ```text
//! cargo bench -p boo-fleet-sim --bench sim_throughput            # all scenarios, 3 s each
//! SIM_BENCH_SECS=10 cargo bench -p boo-fleet-sim --bench sim_throughput
//! ```
//!
//! Scenarios: tiny non-streaming chat completions over 64 keep-alive connections against a
//! llama-swap (current) host and a llama-server host, then 256 concurrent 256-token streams.
//! The wrk-based measurement (the reference figure, load generator in C) is described in the
//! crate README.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use boo_fleet_sim::client::Conn;
use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, start_host};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;

fn unlimited(id: &str) -> ModelSpec {
    let mut m = ModelSpec::new(id);
    m.prompt_tps = 0.0;
    m.gen_tps = 0.0;
    m.load_ms = 0;
    m.slots = 1024;
    m.concurrency_limit = 100_000;
    m
}

/// CPU time (user + system) of one thread, in seconds, from /proc (Linux only; 0 elsewhere).
fn thread_cpu_secs(tid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn current_tid() -> String {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// Starts a host on a dedicated current-thread runtime; returns its URL and thread id.
fn serve(spec: HostSpec) -> (String, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let host = start_host(spec).await.expect("start");
            let url = host.base_url();
            // Wait until the model is ready (llama-server mode loads at start).
            let id = host.spec().models[0].id.clone();
            host.wait_model_state(&id, "ready", Duration::from_secs(10))
                .await;
            tx.send((url, current_tid())).expect("send url");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("host url")
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

fn non_streaming(name: &str, (url, tid): &(String, String), secs: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = Bytes::from_static(
        br#"{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":4}"#,
    );
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let lat = rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (url, body, done, stop) = (
                url.to_owned(),
                body.clone(),
                Arc::clone(&done),
                Arc::clone(&stop),
            );
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::connect(&url).await.expect("connect");
                let mut lat = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = c
                        .request(
                            Method::POST,
                            "/v1/chat/completions",
                            &[("content-type", "application/json")],
                            body.clone(),
                        )
                        .await
                        .expect("request");
                    assert_eq!(r.status, 200);
                    lat.push(t.elapsed().as_micros() as u64);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                lat
            }));
        }
        // Warm-up, then measure.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let start_n = done.load(Ordering::Relaxed);
        let cpu0 = thread_cpu_secs(tid);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let n = done.load(Ordering::Relaxed) - start_n;
        let cpu = thread_cpu_secs(tid) - cpu0;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        let per_core = if cpu > 0.0 { n as f64 / cpu } else { 0.0 };
        stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("join"));
        }
        all.sort_unstable();
        (rate, per_core, all)
    });
    let (rate, per_core, all) = lat;
    println!(
        "{name:<38} {rate:>9.0} req/s   p50 {:.2} ms  p99 {:.2} ms  server CPU: {:.1} us/req = {per_core:.0} req/s per core",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        if per_core > 0.0 { 1e6 / per_core } else { 0.0 },
    );
}

fn streams((url, tid): &(String, String)) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let body = Bytes::from_static(
        br#"{"model":"tiny","messages":[{"role":"user","content":"go"}],"max_tokens":256,"ignore_eos":true,"stream":true}"#,
    );
    let cpu0 = thread_cpu_secs(tid);
    let (elapsed, tokens, ok, ttft) = rt.block_on(async {
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..256 {
            let (url, body) = (url.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::connect(&url).await.expect("connect");
                let t = Instant::now();
                let resp = c
                    .send(
                        Method::POST,
                        "/v1/chat/completions",
                        &[("content-type", "application/json")],
                        body,
                    )
                    .await
                    .expect("send");
                let mut b = resp.into_body();
                let mut first = None;
                let mut buf = Vec::new();
                while let Some(f) = b.frame().await {
                    let f = f.expect("frame");
                    if let Ok(d) = f.into_data() {
                        first.get_or_insert_with(|| t.elapsed().as_micros() as u64);
                        buf.extend_from_slice(&d);
                    }
                }
                let text = String::from_utf8_lossy(&buf);
                let content = text.matches("\"content\":\"").count() as u64;
                (
                    content,
                    text.ends_with("data: [DONE]\n\n"),
                    first.unwrap_or(0),
                )
            }));
        }
        let (mut tokens, mut ok, mut ttft) = (0, 0, Vec::new());
        for t in tasks {
            let (n, done, first) = t.await.expect("join");
            tokens += n;
            ok += u64::from(done);
            ttft.push(first);
        }
        ttft.sort_unstable();
        (t0.elapsed(), tokens, ok, ttft)
    });
    let cpu = thread_cpu_secs(tid) - cpu0;
    println!(
        "{:<38} {ok}/256 complete, {tokens} tokens in {:.0} ms = {:.0} tokens/s, TTFT p50 {:.1} ms p99 {:.1} ms, server CPU {:.0} ms",
        "256 x 256-token streams (swap host)",
        elapsed.as_secs_f64() * 1000.0,
        tokens as f64 / elapsed.as_secs_f64(),
        percentile(&ttft, 0.5),
        percentile(&ttft, 0.99),
        cpu * 1000.0
    );
}

fn main() {
    let secs = std::env::var("SIM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let swap = serve(HostSpec::llama_swap(
        "bench-swap",
        ApiGen::Current,
        vec![unlimited("tiny")],
    ));
    let server = serve(HostSpec::llama_server("bench-server", unlimited("tiny")));
    non_streaming("tiny chat, llama-swap (current) host", &swap, secs);
    non_streaming("tiny chat, llama-server host", &server, secs);
    streams(&swap);
}
