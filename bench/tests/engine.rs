//! Engine behaviour with a scripted client (no network): fan-out, load modes, limits, safety
//! rules, lanes, pollution and progress.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use boo_bench::{
    BenchClient, BenchError, BenchRequest, CellLoad, Engine, EngineOptions, FleetWatch, HostKind,
    LoadReport, ModelLoader, NoFleet, Observation, Phase, Pollution, Progress, RunRequest,
    RunStatus, Sample, StopReason, Suite, Target, WatchReport, WatchSession,
};
use boo_fleet_core::{HostAccess, InMemoryHostAccess, Lane};

/// A scripted server: TTFT, then `tokens` tokens `gap` apart; prompt tokens = chars/4 + 6.
struct Script {
    ttft: Duration,
    tokens: u32,
    gap: Duration,
    fail: bool,
    tokenizer: bool,
    inflight: Mutex<BTreeMap<String, u32>>,
    peak: Mutex<BTreeMap<String, u32>>,
    total_inflight: AtomicU32,
    total_peak: AtomicU32,
    sent: AtomicU64,
}

impl Script {
    fn new(ttft_ms: u64, tokens: u32, gap_ms: u64) -> Script {
        Script {
            ttft: Duration::from_millis(ttft_ms),
            tokens,
            gap: Duration::from_millis(gap_ms),
            fail: false,
            tokenizer: false,
            inflight: Mutex::new(BTreeMap::new()),
            peak: Mutex::new(BTreeMap::new()),
            total_inflight: AtomicU32::new(0),
            total_peak: AtomicU32::new(0),
            sent: AtomicU64::new(0),
        }
    }
    fn peak(&self, provider: &str) -> u32 {
        self.peak
            .lock()
            .unwrap()
            .get(provider)
            .copied()
            .unwrap_or(0)
    }
}

fn us(origin: Instant) -> u64 {
    origin.elapsed().as_micros() as u64
}

#[async_trait]
impl BenchClient for Script {
    async fn send(&self, t: &Target, req: &BenchRequest, origin: Instant) -> Observation {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["stream"], true);
        assert_eq!(v["model"], t.model.as_str());
        // Default policy (unique prefix) also turns llama.cpp's prompt cache off.
        assert_eq!(v["cache_prompt"], false);
        let chars = v["messages"][0]["content"].as_str().unwrap().len();
        {
            let mut g = self.inflight.lock().unwrap();
            let n = g.entry(t.provider.clone()).or_default();
            *n += 1;
            let mut p = self.peak.lock().unwrap();
            let e = p.entry(t.provider.clone()).or_default();
            *e = (*e).max(*n);
        }
        let n = self.total_inflight.fetch_add(1, Ordering::SeqCst) + 1;
        self.total_peak.fetch_max(n, Ordering::SeqCst);
        let sent_us = us(origin);
        let mut o = Observation {
            sent_us,
            status: 200,
            ..Observation::default()
        };
        tokio::time::sleep(self.ttft).await;
        if self.fail {
            o.status = 500;
            o.error = Some("HTTP 500: boom".into());
        } else {
            let max = v["max_tokens"].as_u64().unwrap() as u32;
            let n = self.tokens.min(max);
            o.first_chunk_us = Some(us(origin));
            o.content_us.push(us(origin));
            for _ in 1..n {
                tokio::time::sleep(self.gap).await;
                o.content_us.push(us(origin));
            }
            o.last_chunk_us = Some(us(origin));
            o.chunks = n + 2;
            o.completion_tokens = Some(n);
            o.prompt_tokens = Some((chars as u32).div_ceil(4) + 6);
        }
        *self.inflight.lock().unwrap().get_mut(&t.provider).unwrap() -= 1;
        self.total_inflight.fetch_sub(1, Ordering::SeqCst);
        o
    }

    async fn tokenize(&self, _t: &Target, text: &str) -> Result<Option<u32>, BenchError> {
        // Same tokenizer as the scripted server, minus its 6-token chat template.
        Ok(self.tokenizer.then(|| (text.len() as u32).div_ceil(4)))
    }
}

/// A scripted fleet: fixed recent traffic, and swaps/foreign requests injected by the test.
#[derive(Default)]
struct Fleet {
    recent: AtomicU64,
    fail_recent: bool,
    foreign: Arc<AtomicU64>,
    swaps: Arc<Mutex<Vec<String>>>,
    load_fails: bool,
    slow_load: bool,
}

struct Session {
    foreign: Arc<AtomicU64>,
    start: u64,
    swaps: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl WatchSession for Session {
    async fn report(&self) -> Result<WatchReport, BenchError> {
        Ok(WatchReport {
            foreign_requests: self.foreign.load(Ordering::SeqCst) - self.start,
            swaps: self.swaps.lock().unwrap().clone(),
        })
    }
}

#[async_trait]
impl FleetWatch for Fleet {
    async fn recent_foreign_requests(
        &self,
        t: &Target,
        _window: Duration,
    ) -> Result<u64, BenchError> {
        if self.fail_recent {
            return Err(BenchError::Watch {
                provider: t.provider.clone(),
                reason: "hub offline".into(),
            });
        }
        Ok(self.recent.load(Ordering::SeqCst))
    }
    async fn watch(&self, _t: &Target, _run_id: &str) -> Result<Box<dyn WatchSession>, BenchError> {
        Ok(Box::new(Session {
            foreign: Arc::clone(&self.foreign),
            start: self.foreign.load(Ordering::SeqCst),
            swaps: Arc::clone(&self.swaps),
        }))
    }
}

#[async_trait]
impl ModelLoader for Fleet {
    async fn ensure_loaded(&self, t: &Target) -> Result<LoadReport, BenchError> {
        if self.load_fails {
            return Err(BenchError::Load {
                provider: t.provider.clone(),
                model: t.model.clone(),
                reason: "out of memory".into(),
            });
        }
        let ms = if self.slow_load { 300 } else { 30 };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(LoadReport {
            already_loaded: false,
            load_ms: ms as f64,
        })
    }
}

fn target(id: &str, provider: &str, lane: Lane) -> Target {
    Target {
        id: id.into(),
        provider: provider.into(),
        model: format!("{id}-model"),
        base_url: "http://127.0.0.1:9".into(),
        kind: HostKind::LlamaSwap,
        lane,
        cloud_budget: None,
        api_key: None,
    }
}

fn engine(client: Arc<Script>, fleet: Arc<Fleet>, access: Arc<InMemoryHostAccess>) -> Engine {
    Engine::new(client, access, fleet.clone(), fleet)
}

fn run(id: &str, yaml: &str, targets: Vec<Target>) -> RunRequest {
    RunRequest {
        id: id.into(),
        suite: Suite::from_yaml(yaml).unwrap(),
        targets,
        takeover: false,
    }
}

/// Most intervals [sent, end] of measured samples that overlap at one instant.
fn max_overlap(samples: &[&Sample]) -> usize {
    let mut ev: Vec<(u64, i32)> = Vec::new();
    for s in samples {
        ev.push((s.sent_us, 1));
        ev.push((s.last_chunk_us.unwrap(), -1));
    }
    ev.sort();
    let (mut cur, mut best) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        best = best.max(cur);
    }
    best as usize
}

#[tokio::test]
async fn closed_loop_fans_out_exactly_at_concurrency() {
    let client = Arc::new(Script::new(20, 4, 2));
    let access = Arc::new(InMemoryHostAccess::new(60_000));
    let e = engine(client.clone(), Arc::default(), access.clone());
    let yaml = "name: fan\ngrid:\n  prompt_tokens: [128]\n  max_tokens: [16]\n  concurrency: [1, 3, 8]\n  repetitions: 2\nwarmup: 2\n";
    let r = e
        .run(run("fan", yaml, vec![target("a", "gpu", Lane::Local)]), &())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    let t = &r.targets[0];
    assert_eq!(t.load.load_ms, 30.0);
    assert_eq!(t.cells.len(), 3);
    for (cell, c) in t.cells.iter().zip([1usize, 3, 8]) {
        assert_eq!(cell.load, CellLoad::Concurrency(c as u32));
        assert_eq!(
            (cell.requests, cell.ok, cell.warmup),
            (2 * c as u32, 2 * c as u32, 2)
        );
        assert_eq!(cell.stopped, StopReason::Completed);
        let measured: Vec<&Sample> = r
            .samples
            .iter()
            .filter(|s| s.cell == cell.key && !s.warmup)
            .collect();
        assert_eq!(measured.len(), 2 * c);
        assert_eq!(max_overlap(&measured), c, "cell {}", cell.key);
        // Prompt sized by the calibrated estimate hits the server count exactly.
        assert_eq!(cell.metrics.prompt_tokens.min, 128.0);
        assert_eq!(cell.metrics.prompt_tokens.max, 128.0);
        assert!(
            cell.metrics.ttft_ms.min >= 20.0,
            "{:?}",
            cell.metrics.ttft_ms
        );
        assert_eq!(cell.metrics.output_tokens.p50, 4.0);
        assert!(cell.metrics.tpot_ms.p50 >= 2.0);
        assert!(!cell.polluted);
    }
    assert_eq!(client.total_peak.load(Ordering::SeqCst), 8);
    // Probes (2) + warm-ups (3 × 2) + measured (2 + 6 + 16).
    assert_eq!(client.sent.load(Ordering::SeqCst), 2 + 6 + 24);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(access.current("gpu", now).is_none(), "lease released");
    assert!(!r.polluted);
    let back = boo_bench::RunResult::from_json(&r.to_json().unwrap()).unwrap();
    // Integers, strings and timestamps survive exactly (floats within serde_json's parsing).
    assert!(
        back.samples == r.samples,
        "samples differ after a JSON round trip"
    );
    assert_eq!(back.suite, r.suite);
    assert_eq!(back.targets[0].cells.len(), 3);
    let (a, b) = (
        &back.targets[0].cells[2].metrics,
        &r.targets[0].cells[2].metrics,
    );
    assert!((a.ttft_ms.p99 - b.ttft_ms.p99).abs() < 1e-9);
}

#[tokio::test]
async fn open_loop_poisson_is_seeded_and_shows_queue_time() {
    let yaml = "name: rate\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [2]\nload:\n  mode: rate\n  rates: [400]\n  seed: 9\nlimits:\n  requests: 200\n";
    let mut gaps_runs = Vec::new();
    for i in 0..2 {
        let client = Arc::new(Script::new(1, 2, 1));
        let e = engine(
            client,
            Arc::default(),
            Arc::new(InMemoryHostAccess::new(60_000)),
        );
        let r = e
            .run(
                run(
                    &format!("rate{i}"),
                    yaml,
                    vec![target("a", "gpu", Lane::Local)],
                ),
                &(),
            )
            .await
            .unwrap();
        let cell = &r.targets[0].cells[0];
        assert_eq!(cell.key, "p16-g2-r400");
        assert_eq!(cell.requests, 200);
        let mut sched: Vec<u64> = r
            .samples
            .iter()
            .filter(|s| !s.warmup)
            .map(|s| s.scheduled_us)
            .collect();
        sched.sort();
        let gaps: Vec<i64> = sched.windows(2).map(|w| (w[1] - w[0]) as i64).collect();
        let mean = gaps.iter().sum::<i64>() as f64 / gaps.len() as f64;
        // Mean inter-arrival 1/400 s = 2500 µs (±25 % for 199 exponential gaps).
        assert!((1875.0..3125.0).contains(&mean), "mean gap {mean} µs");
        gaps_runs.push(gaps);
    }
    // Same seed ⇒ same arrival schedule (µs rounding aside).
    for (a, b) in gaps_runs[0].iter().zip(&gaps_runs[1]) {
        assert!((a - b).abs() <= 2, "{a} vs {b}");
    }

    // A slow server behind max_in_flight 1 at a high rate: arrivals wait on the client.
    let client = Arc::new(Script::new(5, 1, 1));
    let e = engine(
        client.clone(),
        Arc::default(),
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let yaml = "name: q\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [1]\nload:\n  mode: rate\n  rates: [1000]\n  max_in_flight: 1\nlimits:\n  requests: 20\n";
    let r = e
        .run(run("q", yaml, vec![target("a", "gpu", Lane::Local)]), &())
        .await
        .unwrap();
    let m = &r.targets[0].cells[0].metrics;
    assert_eq!(client.total_peak.load(Ordering::SeqCst), 1);
    assert!(m.queue_ms.max > 50.0, "queue {:?}", m.queue_ms);
    assert!(m.queue_ms.p50 > m.queue_ms.min);
}

#[tokio::test]
async fn error_and_duration_limits_stop_a_cell() {
    let mut s = Script::new(2, 1, 1);
    s.fail = true;
    let e = engine(
        Arc::new(s),
        Arc::default(),
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let yaml = "name: err\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [4]\nlimits:\n  requests: 50\n  max_errors: 3\n";
    let r = e
        .run(run("err", yaml, vec![target("a", "gpu", Lane::Local)]), &())
        .await
        .unwrap();
    let cell = &r.targets[0].cells[0];
    assert_eq!(cell.stopped, StopReason::Errors);
    assert_eq!((cell.requests, cell.errors, cell.ok), (3, 3, 0));
    assert_eq!(cell.error_examples, ["HTTP 500: boom"]);

    let e = engine(
        Arc::new(Script::new(5, 1, 1)),
        Arc::default(),
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let yaml = "name: dur\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [4]\n  concurrency: [2]\nlimits:\n  requests: 100000\n  duration_s: 0.2\n";
    let t0 = Instant::now();
    let r = e
        .run(run("dur", yaml, vec![target("a", "gpu", Lane::Local)]), &())
        .await
        .unwrap();
    let cell = &r.targets[0].cells[0];
    assert_eq!(cell.stopped, StopReason::Duration);
    assert!(
        cell.requests >= 10 && cell.requests < 100,
        "{}",
        cell.requests
    );
    assert!(t0.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn sweep_places_rates_between_the_probes() {
    let e = engine(
        Arc::new(Script::new(10, 1, 1)),
        Arc::default(),
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let yaml = "name: sw\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [1]\n  concurrency: [4]\nload:\n  mode: sweep\n  steps: 4\nlimits:\n  requests: 16\n";
    let r = e
        .run(run("sw", yaml, vec![target("a", "gpu", Lane::Local)]), &())
        .await
        .unwrap();
    let cells = &r.targets[0].cells;
    let keys: Vec<&str> = cells.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["p16-g1-s0", "p16-g1-s1", "p16-g1-s2", "p16-g1-s3"]);
    let sync = cells[0].metrics.request_throughput;
    let max = cells[1].metrics.request_throughput;
    assert!(max > 2.0 * sync, "sync {sync} max {max}");
    let rate = |c: &boo_bench::CellResult| match c.load {
        CellLoad::Rate { rate, .. } => rate,
        CellLoad::Concurrency(_) => panic!("not a rate cell"),
    };
    let (r2, r3) = (rate(&cells[2]), rate(&cells[3]));
    assert!((r2 - (sync + (max - sync) / 3.0)).abs() < 1e-6, "{r2}");
    assert!(
        (r3 - (sync + 2.0 * (max - sync) / 3.0)).abs() < 1e-6,
        "{r3}"
    );
}

#[tokio::test]
async fn takeover_rule_and_lease() {
    let fleet = Arc::new(Fleet::default());
    fleet.recent.store(2, Ordering::SeqCst);
    let access = Arc::new(InMemoryHostAccess::new(60_000));
    let e = engine(
        Arc::new(Script::new(1, 1, 1)),
        fleet.clone(),
        access.clone(),
    );
    let yaml = "name: s\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [1]\n";
    let err = e
        .prepare(run("s1", yaml, vec![target("a", "gpu", Lane::Local)]))
        .await
        .unwrap_err();
    assert!(err.requires_confirmation() && err.is_conflict(), "{err}");
    assert!(err.to_string().contains("served 2 request(s)"), "{err}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        access.current("gpu", now).is_none(),
        "refusal releases the lease"
    );
    let mut req = run("s1", yaml, vec![target("a", "gpu", Lane::Local)]);
    req.takeover = true;
    let held = e.prepare(req).await.unwrap();
    assert_eq!(held.leases()[0].holder, "bench:s1");
    // A second run on the same host is refused while the first holds the lease.
    let mut req2 = run("s2", yaml, vec![target("b", "gpu", Lane::Local)]);
    req2.takeover = true;
    let err = e.prepare(req2.clone()).await.unwrap_err();
    match &err {
        BenchError::HostBusy {
            provider, reason, ..
        } => {
            assert_eq!(provider, "gpu");
            assert!(reason.contains("bench:s1"), "{reason}");
        }
        other => panic!("{other}"),
    }
    assert!(!err.requires_confirmation() && err.is_conflict());
    let r = held.execute(&()).await;
    assert_eq!(r.status, RunStatus::Completed);
    assert!(e.prepare(req2).await.is_ok(), "lease free after the run");

    // Cloud targets are shared by design: no takeover needed.
    let mut cloud = run("s4", yaml, vec![target("c", "openai", Lane::Cloud)]);
    cloud.takeover = false;
    assert!(e.prepare(cloud).await.is_ok());

    // Unknown traffic (watch failing) also needs confirmation.
    let fleet = Arc::new(Fleet {
        fail_recent: true,
        ..Fleet::default()
    });
    let e = engine(Arc::new(Script::new(1, 1, 1)), fleet, access);
    let err = e
        .prepare(run("s3", yaml, vec![target("a", "gpu2", Lane::Local)]))
        .await
        .unwrap_err();
    assert!(err.requires_confirmation());
}

#[tokio::test]
async fn bad_runs_are_refused_naming_the_field() {
    let e = engine(
        Arc::new(Script::new(1, 1, 1)),
        Arc::default(),
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let yaml = "name: s\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [1]\n";
    let err = e.prepare(run("x", yaml, vec![])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid run: targets: at least one target is required"
    );
    let err = e
        .prepare(run(
            "x",
            yaml,
            vec![target("a", "h", Lane::Local), target("a", "h", Lane::Local)],
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("targets[1].id: duplicate target `a`"),
        "{err}"
    );
}

#[tokio::test]
async fn foreign_traffic_and_swaps_pollute_the_cells_they_happen_in() {
    let fleet = Arc::new(Fleet::default());
    let f2 = Arc::clone(&fleet);
    // Inject 3 foreign requests and a swap while the second cell measures.
    let sink = move |p: &Progress| {
        if p.phase == Phase::Measuring && p.cell == "p16-g1-c2" && p.done == 0 {
            f2.foreign.fetch_add(3, Ordering::SeqCst);
            f2.swaps.lock().unwrap().push("other-model loaded".into());
        }
    };
    let e = engine(
        Arc::new(Script::new(2, 1, 1)),
        fleet.clone(),
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let yaml =
        "name: p\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [1]\n  concurrency: [1, 2, 4]\n";
    let r = e
        .run(run("p", yaml, vec![target("a", "gpu", Lane::Local)]), &sink)
        .await
        .unwrap();
    let t = &r.targets[0];
    let flags: Vec<(bool, u64)> = t
        .cells
        .iter()
        .map(|c| (c.polluted, c.foreign_requests))
        .collect();
    assert_eq!(flags, [(false, 0), (true, 3), (false, 0)]);
    assert!(r.polluted && t.polluted);
    assert_eq!(r.concurrent_foreign_requests, 3);
    assert_eq!(
        t.pollution,
        [
            Pollution::ForeignTraffic { requests: 3 },
            Pollution::Swap {
                detail: "other-model loaded".into()
            }
        ]
    );
}

#[tokio::test]
async fn lanes_local_serial_cloud_parallel_and_progress_phases() {
    let client = Arc::new(Script::new(30, 1, 1));
    let e = engine(
        client.clone(),
        Arc::default(),
        Arc::new(InMemoryHostAccess::new(60_000)),
    )
    .with_options(EngineOptions {
        cloud_budget: 2,
        ..EngineOptions::default()
    });
    let events = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let ev2 = Arc::clone(&events);
    let sink = move |p: &Progress| ev2.lock().unwrap().push(p.clone());
    let yaml = "name: l\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [1]\n  concurrency: [2]\n  repetitions: 2\n";
    let r = e
        .run(
            run(
                "l",
                yaml,
                vec![
                    target("q4", "gpu", Lane::Local),
                    target("q8", "gpu", Lane::Local),
                    target("c1", "cloud", Lane::Cloud),
                    target("c2", "cloud", Lane::Cloud),
                ],
            ),
            &sink,
        )
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Completed);
    // Two targets on one local host never overlap; two cloud targets do.
    assert_eq!(client.peak("gpu"), 2);
    assert_eq!(client.peak("cloud"), 4);
    let span = |id: &str| {
        let s: Vec<&Sample> = r.samples.iter().filter(|s| s.target == id).collect();
        (
            s.iter().map(|s| s.sent_us).min().unwrap(),
            s.iter().map(|s| s.last_chunk_us.unwrap()).max().unwrap(),
        )
    };
    let (a, b) = (span("q4"), span("q8"));
    assert!(a.1 <= b.0, "local targets overlapped: {a:?} {b:?}");
    let ev = events.lock().unwrap();
    let q8: Vec<Phase> = ev
        .iter()
        .filter(|p| p.target == "q8")
        .map(|p| p.phase)
        .collect();
    assert_eq!(q8.first(), Some(&Phase::Queued));
    assert!(q8.contains(&Phase::Loading) && q8.contains(&Phase::CellDone));
    assert_eq!(q8.last(), Some(&Phase::TargetDone));
    assert_eq!(ev.last().unwrap().phase, Phase::Finished);
    let done = ev
        .iter()
        .find(|p| p.target == "q4" && p.phase == Phase::CellDone)
        .unwrap();
    assert_eq!((done.done, done.total, done.cells_total), (4, 4, 1));
}

#[tokio::test]
async fn load_failure_fails_the_target_and_frees_the_host() {
    let fleet = Arc::new(Fleet {
        load_fails: true,
        ..Fleet::default()
    });
    let access = Arc::new(InMemoryHostAccess::new(60_000));
    let e = engine(Arc::new(Script::new(1, 1, 1)), fleet, access.clone());
    let yaml = "name: s\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [1]\n";
    let r = e
        .run(run("lf", yaml, vec![target("a", "gpu", Lane::Local)]), &())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert!(
        r.targets[0]
            .error
            .as_deref()
            .unwrap()
            .contains("out of memory")
    );
    assert!(r.targets[0].cells.is_empty());
    let _ = NoFleet;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(access.current("gpu", now).is_none());
}

#[tokio::test]
async fn cancel_stops_the_run_promptly_and_frees_the_host() {
    let access = Arc::new(InMemoryHostAccess::new(60_000));
    let e = engine(
        Arc::new(Script::new(50, 1, 1)),
        Arc::default(),
        access.clone(),
    );
    // 2 cells × 40 sequential 50 ms requests = 4 s if not cancelled.
    let yaml = "name: c\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [1]\n  concurrency: [1]\nlimits:\n  requests: 40\nload:\n  mode: concurrency\nwarmup: 0\n";
    let mut y = yaml.to_owned();
    y = y.replace("prompt_tokens: [16]", "prompt_tokens: [16, 32]");
    let prepared = e
        .prepare(run(
            "c",
            &y,
            vec![
                target("a", "gpu", Lane::Local),
                target("b", "gpu", Lane::Local),
            ],
        ))
        .await
        .unwrap();
    let cancel = prepared.cancel_handle();
    let c2 = cancel.clone();
    let sink = move |p: &Progress| {
        if p.phase == Phase::Measuring && p.done >= 1 {
            c2.cancel();
        }
    };
    let t0 = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(2), prepared.execute(&sink))
        .await
        .expect("cancel must end the run quickly");
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(cancel.is_cancelled());
    assert_eq!(r.status, RunStatus::Cancelled);
    assert_eq!(r.targets[0].status, RunStatus::Cancelled);
    assert_eq!(r.targets[0].cells.len(), 1);
    assert_eq!(r.targets[0].cells[0].stopped, StopReason::Cancelled);
    assert!(r.targets[0].cells[0].requests < 40);
    assert_eq!(r.targets[1].status, RunStatus::Cancelled);
    assert!(r.targets[1].cells.is_empty());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(access.current("gpu", now).is_none());
}

#[tokio::test]
async fn prompts_are_sized_with_the_tokenizer_when_there_is_one() {
    let mut s = Script::new(1, 2, 1);
    s.tokenizer = true;
    let e = engine(
        Arc::new(s),
        Arc::default(),
        Arc::new(InMemoryHostAccess::new(60_000)),
    );
    let yaml = "name: tok\ngrid:\n  prompt_tokens: [16, 128, 3000]\n  max_tokens: [2]\n";
    let r = e
        .run(run("tok", yaml, vec![target("a", "gpu", Lane::Local)]), &())
        .await
        .unwrap();
    assert_eq!(
        r.client.prompt_sizing,
        ["a: tokenize (template overhead 6 tokens)"]
    );
    let got: Vec<f64> = r.targets[0]
        .cells
        .iter()
        .map(|c| c.metrics.prompt_tokens.p50)
        .collect();
    assert_eq!(got, [16.0, 128.0, 3000.0]);
}

#[tokio::test]
async fn leases_are_renewed_through_a_long_load_and_a_lost_lease_fails_the_target() {
    // Leases last 100 ms; the load takes 300 ms; renewal every 20 ms keeps the host ours.
    let access = Arc::new(InMemoryHostAccess::new(100));
    let fleet = Arc::new(Fleet {
        slow_load: true,
        ..Fleet::default()
    });
    let opts = EngineOptions {
        lease_renew_every: Duration::from_millis(20),
        ..EngineOptions::default()
    };
    let e =
        engine(Arc::new(Script::new(1, 1, 1)), fleet, access.clone()).with_options(opts.clone());
    let yaml = "name: s\ngrid:\n  prompt_tokens: [16]\n  max_tokens: [1]\n";
    let prepared = e
        .prepare(run("long", yaml, vec![target("a", "gpu", Lane::Local)]))
        .await
        .unwrap();
    let e2 = e.clone();
    let intruder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        e2.prepare(run("intruder", yaml, vec![target("b", "gpu", Lane::Local)]))
            .await
            .map(|_| ())
    });
    let r = prepared.execute(&()).await;
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.targets[0].error);
    let err = intruder.await.unwrap().unwrap_err();
    assert!(matches!(err, BenchError::HostBusy { .. }), "{err}");

    // A lease store that refuses renewals: the target fails instead of measuring unguarded.
    struct NoRenew(InMemoryHostAccess);
    impl HostAccess for NoRenew {
        fn acquire(
            &self,
            p: &str,
            purpose: &str,
            holder: &str,
            now: u64,
        ) -> Result<boo_fleet_core::Lease, boo_fleet_core::Denied> {
            self.0.acquire(p, purpose, holder, now)
        }
        fn renew(
            &self,
            l: &boo_fleet_core::Lease,
            _now: u64,
        ) -> Result<boo_fleet_core::Lease, boo_fleet_core::Denied> {
            Err(boo_fleet_core::Denied {
                reason: format!("lease {} was taken over", l.token),
                held_by: None,
            })
        }
        fn release(&self, l: &boo_fleet_core::Lease) -> bool {
            self.0.release(l)
        }
        fn current(&self, p: &str, now: u64) -> Option<boo_fleet_core::Lease> {
            self.0.current(p, now)
        }
    }
    let e = Engine::new(
        Arc::new(Script::new(1, 1, 1)),
        Arc::new(NoRenew(InMemoryHostAccess::new(60_000))),
        Arc::new(NoFleet),
        Arc::new(NoFleet),
    );
    let r = e
        .run(run("nr", yaml, vec![target("a", "gpu", Lane::Local)]), &())
        .await
        .unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    assert!(
        r.targets[0]
            .error
            .as_deref()
            .unwrap()
            .contains("lease on `gpu` was lost")
    );
}
