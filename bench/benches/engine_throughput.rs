//! How fast the bench client itself is: the engine (real hyper client, SSE parsing, raw
//! timestamps, metrics) drives a fleet-sim llama-swap host with unlimited prompt and generation
//! speed at concurrency 256. The sim runs on its own thread (current-thread runtime), the
//! engine on the main thread (current-thread runtime), so on a 2-core machine each gets a core.
//!
//! ```sh
//! cargo bench -p boo-bench --bench engine_throughput            # ENGINE_BENCH_REQUESTS=20000 for longer
//! ```
//!
//! Prints, per scenario: requests/s, streamed tokens/s, the client thread's CPU per request and
//! per token (utime + stime from /proc, 10 ms resolution), and the sim thread's CPU for
//! comparison. Targets (issue 7): ≥ 5,000 req/s and ≥ 200,000 tokens/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use boo_bench::{Engine, EngineOptions, HostKind, HttpClient, NoFleet, RunRequest, Suite, Target};
use boo_fleet_core::{InMemoryHostAccess, Lane};
use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, start_host};

fn thread_cpu_secs(tid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
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

fn serve() -> (String, String) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut m = ModelSpec::new("fast");
            m.prompt_tps = 0.0;
            m.gen_tps = 0.0;
            m.load_ms = 0;
            m.slots = 1024;
            m.n_ctx = 65_536;
            m.concurrency_limit = 100_000;
            let mut spec = HostSpec::llama_swap("bench-host", ApiGen::Current, vec![m]);
            spec.record_limit = 0;
            spec.metrics_max_in_memory = 16;
            spec.capture_buffer_mb = 0;
            let host = start_host(spec).await.expect("sim");
            tx.send((host.base_url(), current_tid())).expect("send");
            std::future::pending::<()>().await;
        });
    });
    rx.recv().expect("sim started")
}

fn main() {
    let requests: u32 = std::env::var("ENGINE_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (url, sim_tid) = serve();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let me = current_tid();
    println!("engine_throughput: concurrency 256, {requests} requests per scenario, sim {url}");
    println!(
        "| scenario | req/s | streamed tok/s | client CPU/request | client CPU/token | sim CPU/request | TTFT p50 / p99 |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, max_tokens) in [
        ("1-token replies", 1u32),
        ("64-token streams", 64),
        ("256-token streams", 256),
    ] {
        let n = if max_tokens >= 256 {
            requests / 4
        } else {
            requests
        };
        let yaml = format!(
            "name: engine-throughput\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [{max_tokens}]\n  concurrency: [256]\nwarmup: 256\nlimits:\n  requests: {n}\n"
        );
        let suite = Suite::from_yaml(&yaml).expect("suite");
        let engine = Engine::new(
            Arc::new(HttpClient::new()),
            Arc::new(InMemoryHostAccess::new(600_000)),
            Arc::new(NoFleet),
            Arc::new(NoFleet),
        )
        .with_options(EngineOptions {
            keep_samples: false,
            request_timeout: Duration::from_secs(60),
            ..EngineOptions::default()
        });
        let target = Target {
            id: "bench-host/fast".into(),
            provider: "bench-host".into(),
            model: "fast".into(),
            base_url: url.clone(),
            kind: HostKind::LlamaSwap,
            lane: Lane::Local,
            cloud_budget: None,
            api_key: None,
        };
        let (c0, s0, t0) = (
            thread_cpu_secs(&me),
            thread_cpu_secs(&sim_tid),
            Instant::now(),
        );
        let r = rt
            .block_on(engine.run(
                RunRequest {
                    id: format!("perf-{max_tokens}"),
                    suite,
                    targets: vec![target],
                    takeover: true,
                },
                &(),
            ))
            .expect("run");
        let wall = t0.elapsed().as_secs_f64();
        let (c1, s1) = (thread_cpu_secs(&me), thread_cpu_secs(&sim_tid));
        let cell = &r.targets[0].cells[0];
        assert_eq!(cell.errors, 0, "{:?}", cell.error_examples);
        let m = &cell.metrics;
        // CPU covers warm-up and probes too: divide by every request sent.
        let sent = f64::from(cell.requests + cell.warmup + 2);
        let tokens = sent * f64::from(max_tokens);
        println!(
            "| {name} | {:.0} | {:.0} | {:.1} µs | {:.2} µs | {:.1} µs | {:.1} / {:.1} ms |",
            m.request_throughput,
            m.output_tps,
            (c1 - c0) * 1e6 / sent,
            (c1 - c0) * 1e6 / tokens,
            (s1 - s0) * 1e6 / sent,
            m.ttft_ms.p50,
            m.ttft_ms.p99,
        );
        eprintln!(
            "  ({name}: {} measured requests in {:.2} s wall incl. warm-up; client CPU {:.2} s, sim CPU {:.2} s)",
            cell.requests,
            wall,
            c1 - c0,
            s1 - s0
        );
    }
}
