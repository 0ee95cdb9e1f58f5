//! Decision time for 10 and 200 candidates (targets: ≤ 2 µs and ≤ 20 µs).
//!
//! Measured on the 2-core dev box (`decide_cpu`, medians, before/after side by side in one
//! run): 10 candidates 0.94 µs → 0.68 µs, 200 candidates 21 µs → 10.5 µs once candidate ids
//! became shared `Arc<ModelRef>` handles (the explanations of ~196 skipped candidates used to
//! copy two strings each).
//!
//! Two groups: `decide` (criterion's wall clock) and `decide_cpu` (the benchmark thread's CPU
//! time from `/proc/thread-self/schedstat`), because on a shared, loaded machine wall-clock
//! samples also count the time the thread waits for a CPU.

use boo_routing::{
    CandidateFacts, FleetView, Lane, Liveness, LoadState, RequestFeatures, RoutePolicy, decide,
};
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use std::hint::black_box;

/// A fleet of `n` models spread over 10 providers with mixed states, liveness and measurements.
fn fleet(n: usize) -> FleetView {
    let states = [
        LoadState::Ready,
        LoadState::Stopped,
        LoadState::Starting,
        LoadState::Unknown,
        LoadState::Error,
    ];
    let live = [
        Liveness::Connected,
        Liveness::Connected,
        Liveness::Reconnecting,
        Liveness::Down,
        Liveness::Unknown,
    ];
    let facts = (0..n)
        .map(|i| {
            let mut c = CandidateFacts::new(
                format!("host-{}/model-{i:03}.gguf", i % 10)
                    .parse()
                    .expect("valid id"),
            );
            c.lane = if i % 10 == 9 {
                Lane::Cloud
            } else {
                Lane::Local
            };
            c.state = states[i % states.len()];
            c.liveness = live[(i / 3) % live.len()];
            c.n_ctx = if i % 7 == 0 {
                None
            } else {
                Some([4096, 8192, 32768, 131072][i % 4])
            };
            c.load_ms = Some(2_000 + (i as u64 * 37) % 20_000);
            c.gen_tps = Some(10.0 + (i % 50) as f64);
            c.prompt_tps = Some(200.0 + (i % 30) as f64 * 10.0);
            c.queue_wait_ms = Some((i as u64 * 131) % 10_000);
            c.price_in_per_mtok = Some(0.5);
            c.price_out_per_mtok = Some(1.5);
            c.score = Some((i % 100) as f64);
            c.tags = vec!["code".into()];
            c
        })
        .collect();
    FleetView::new(facts)
}

fn policy() -> RoutePolicy {
    RoutePolicy::from_json(&serde_json::json!({
        "name": "auto:code",
        "candidates": ["host-0/model-000.gguf", "tag:code"],
        "order": ["prefer_loaded", "fastest", "best_score"],
        "filters": { "max_wait_ms": 5000 },
        "limits": { "max_attempts": 4 },
        "rules": [{ "when": { "needs_vision": true }, "candidates": ["tag:vision"] }]
    }))
    .expect("valid policy")
}

fn request() -> RequestFeatures {
    RequestFeatures {
        est_prompt_tokens: 6_000,
        max_tokens: Some(1_024),
        ..Default::default()
    }
}

fn bench(c: &mut Criterion) {
    let p = policy();
    let req = RequestFeatures {
        est_prompt_tokens: 6_000,
        max_tokens: Some(1_024),
        ..Default::default()
    };
    let mut g = c.benchmark_group("decide");
    for n in [10usize, 200] {
        let f = fleet(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &f, |b, f| {
            b.iter(|| decide(black_box(&p), black_box(&req), black_box(f)))
        });
    }
    g.finish();
}

/// The calling thread's CPU time in ns (`/proc/thread-self/schedstat`, first field).
/// The kernel refreshes that figure on scheduling events, so yield first to make it current.
fn thread_cpu_ns() -> u64 {
    std::thread::yield_now();
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0)
}

/// Criterion measurement of thread CPU time.
struct ThreadCpu;

struct NsFormatter;

impl ValueFormatter for NsFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (div, unit) = if typical < 1e3 {
            (1.0, "ns")
        } else if typical < 1e6 {
            (1e3, "µs")
        } else {
            (1e6, "ms")
        };
        values.iter_mut().for_each(|v| *v /= div);
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let n = match throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
            _ => 1.0,
        };
        values.iter_mut().for_each(|v| *v = n * 1e9 / *v);
        "elem/s"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

impl Measurement for ThreadCpu {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns().saturating_sub(start)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &NsFormatter
    }
}

fn bench_cpu(c: &mut Criterion<ThreadCpu>) {
    let p = policy();
    let req = request();
    let mut g = c.benchmark_group("decide_cpu");
    for n in [10usize, 200] {
        let f = fleet(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &f, |b, f| {
            b.iter(|| decide(black_box(&p), black_box(&req), black_box(f)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_group! {
    name = benches_cpu;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = bench_cpu
}

/// `BOO_DECIDE_LOOP=<candidates>:<iterations>` runs the decision in a plain loop and exits,
/// for CPU-time measurement with `perf stat` on a loaded machine (wall-clock medians from
/// criterion include time spent waiting for a CPU).
fn main() {
    if let Ok(spec) = std::env::var("BOO_DECIDE_LOOP") {
        let (n, iters) = spec
            .split_once(':')
            .expect("BOO_DECIDE_LOOP=<candidates>:<iterations>");
        let (n, iters): (usize, u64) = (
            n.parse().expect("candidates"),
            iters.parse().expect("iterations"),
        );
        let (p, f) = (policy(), fleet(n));
        let req = request();
        let mut attempts = 0usize;
        for _ in 0..iters {
            attempts += decide(black_box(&p), black_box(&req), black_box(&f))
                .attempts
                .len();
        }
        println!("{iters} decisions over {n} candidates, {attempts} attempts");
        return;
    }
    benches();
    benches_cpu();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
