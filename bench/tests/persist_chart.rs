//! `persist` (RunResult ⇄ telemetry-store rows, baselines, verdicts) on SQLite always and
//! Postgres when `DATABASE_URL` is set; `chart` output (SVG + PNG files with real content).

use std::sync::Arc;

use boo_bench::chart::{self, HistoryPoint};
use boo_bench::persist;
use boo_bench::{
    CellLoad, CellMetrics, CellResult, ClientInfo, HostKind, LoadReport, Pollution,
    RESULT_SCHEMA_VERSION, RunResult, RunStatus, Sample, Stats, StopReason, Suite, Target,
    TargetResult, Verdict,
};
use boo_fleet_core::Lane;
use boo_telemetry_store::{BenchRunFilter, Store};

fn stats(p50: f64, p99: f64) -> Stats {
    Stats {
        count: 8,
        mean: p50,
        std: 1.0,
        min: p50 * 0.9,
        max: p99,
        p50,
        p90: (p50 + p99) / 2.0,
        p99,
    }
}

fn target(id: &str) -> Target {
    let (provider, model) = id.split_once('/').unwrap();
    Target {
        id: id.into(),
        provider: provider.into(),
        model: model.into(),
        base_url: "http://127.0.0.1:1".into(),
        kind: HostKind::LlamaSwap,
        lane: Lane::Local,
        cloud_budget: None,
        api_key: None,
    }
}

/// A run of `targets` over concurrency 1, 2, 4 where gen tok/s = `speed` / c and TTFT grows
/// with c.
fn result(id: &str, started_ms: u64, targets: &[(&str, f64)]) -> RunResult {
    let suite = Suite::from_yaml(
        "name: chat-grid\ngrid:\n  prompt_tokens: [128]\n  max_tokens: [32]\n  concurrency: [1, 2, 4]\n",
    )
    .unwrap();
    let mut samples = Vec::new();
    let tr = targets
        .iter()
        .map(|(tid, speed)| {
            let cells = [1u32, 2, 4]
                .iter()
                .map(|&c| {
                    let key = format!("p128-g32-c{c}");
                    for seq in 0..2 {
                        samples.push(Sample {
                            target: (*tid).into(),
                            cell: key.clone(),
                            seq,
                            warmup: seq == 0,
                            scheduled_us: 10,
                            sent_us: 20,
                            first_chunk_us: Some(500),
                            content_us: vec![1_020, 1_520, 2_020],
                            last_chunk_us: Some(2_100),
                            chunks: 5,
                            completion_tokens: Some(3),
                            status: 200,
                            ..Default::default()
                        });
                    }
                    CellResult {
                        key,
                        prompt_tokens: 128,
                        max_tokens: 32,
                        load: CellLoad::Concurrency(c),
                        requests: 8,
                        ok: 8,
                        errors: 0,
                        warmup: 1,
                        error_examples: vec![],
                        metrics: CellMetrics {
                            ttft_ms: stats(100.0 * f64::from(c), 150.0 * f64::from(c)),
                            gen_tps: stats(speed / f64::from(c), speed / f64::from(c) * 1.2),
                            output_tps: *speed,
                            request_throughput: 2.0,
                            wall_ms: 4000.0,
                            ..Default::default()
                        },
                        stopped: StopReason::Completed,
                        polluted: false,
                        foreign_requests: 0,
                    }
                })
                .collect();
            TargetResult {
                target: target(tid),
                status: RunStatus::Completed,
                error: None,
                load: LoadReport {
                    already_loaded: false,
                    load_ms: 1234.5,
                },
                cells,
                polluted: false,
                pollution: vec![],
                concurrent_foreign_requests: 0,
                started_at_ms: started_ms,
                finished_at_ms: started_ms + 5_000,
            }
        })
        .collect();
    RunResult {
        schema_version: RESULT_SCHEMA_VERSION,
        id: id.into(),
        suite,
        status: RunStatus::Completed,
        targets: tr,
        polluted: false,
        pollution: vec![],
        concurrent_foreign_requests: 0,
        started_at_ms: started_ms,
        finished_at_ms: started_ms + 10_000,
        samples,
        client: ClientInfo {
            version: "test".into(),
            prompt_sizing: vec!["tokenize".into()],
        },
    }
}

struct Db {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.pg.take() {
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(boo_telemetry_store::postgres::PgStore::drop_schema(
                        &url, &schema,
                    ))
            })
            .join();
        }
    }
}

async fn stores() -> Vec<Db> {
    let dir = tempfile::tempdir().unwrap();
    let store = boo_telemetry_store::open(&format!("sqlite://{}/b.db", dir.path().display()))
        .await
        .unwrap();
    let mut out = vec![Db {
        store,
        _dir: Some(dir),
        pg: None,
    }];
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let schema = format!("boo_bench_{}_{nanos}", std::process::id());
            let pg = boo_telemetry_store::postgres::PgStore::open_in_schema(&url, &schema)
                .await
                .unwrap();
            out.push(Db {
                store: Arc::new(pg),
                _dir: None,
                pg: Some((url, schema)),
            });
        }
        Err(_) => eprintln!("skipping Postgres: DATABASE_URL unset"),
    }
    out
}

#[tokio::test]
async fn a_saved_run_loads_back_identical_with_cells_targets_and_samples() {
    for db in stores().await {
        let s = db.store.as_ref();
        let mut r = result(
            "run-a",
            1_700_000_000_000,
            &[("gpu/q4:Q4_K_M", 60.0), ("gpu/q8:Q8_0", 40.0)],
        );
        r.polluted = true;
        r.targets[1].polluted = true;
        r.targets[1].pollution = vec![Pollution::ForeignTraffic { requests: 3 }];
        r.pollution = r.targets[1].pollution.clone();
        r.concurrent_foreign_requests = 3;
        // the API stores the running row first, then the result
        s.insert_bench_run(&persist::started_row(
            &r.id,
            &r.suite,
            &r.targets
                .iter()
                .map(|t| t.target.clone())
                .collect::<Vec<_>>(),
            chrono::Utc::now(),
        ))
        .await
        .unwrap();
        persist::save_result(s, &r, Some("name: chat-grid\n"), None)
            .await
            .unwrap();

        let back = persist::load_result(s, "run-a").await.unwrap().unwrap();
        assert_eq!(back, r);
        let detail = s.bench_run("run-a").await.unwrap().unwrap();
        assert_eq!(detail.cells.len(), 6);
        let c = detail
            .cells
            .iter()
            .find(|c| c.target == "gpu/q4:Q4_K_M" && c.cell_key == "p128-g32-c2")
            .unwrap();
        assert_eq!(c.gen_tps, Some(30.0));
        assert_eq!(c.ttft_p50_ms, Some(200.0));
        assert!(detail.run.polluted);
        assert_eq!(detail.run.concurrent_foreign_requests, 3);
        assert_eq!(
            detail.run.pollution_reasons,
            vec!["gpu/q8:Q8_0: 3 foreign request(s) on the host during the run"]
        );
        assert_eq!(detail.run.targets[0].load_ms, Some(1234.5));
        let samples = s.bench_samples("run-a").await.unwrap();
        assert_eq!(samples.len(), 12);
        assert_eq!(samples[0].ttft_ms, Some(1.0));
        assert_eq!(samples[0].e2e_ms, Some(2.08));
        let suite = s
            .bench_suite(&detail.run.suite_hash)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(suite.name, "chat-grid");
        let by_target = s
            .bench_runs(
                &BenchRunFilter {
                    target: Some("gpu/q8:Q8_0".into()),
                    ..Default::default()
                },
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(by_target.runs.len(), 1);
        assert!(persist::load_result(s, "nope").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_15_percent_slower_run_is_a_regression_against_the_baseline_and_5_percent_is_not() {
    for db in stores().await {
        let s = db.store.as_ref();
        let base = result("base", 1_000, &[("gpu/q4:Q4_K_M", 60.0)]);
        persist::save_result(s, &base, None, None).await.unwrap();
        // no baseline yet: incomparable, not a regression
        let v = persist::baseline_verdicts(s, &base).await.unwrap();
        assert!(
            v.iter()
                .all(|v| matches!(v.verdict, Verdict::Incomparable { .. }))
        );
        assert_eq!(
            persist::set_baselines(s, &base, chrono::Utc::now())
                .await
                .unwrap(),
            3
        );

        let slow = result("slow", 2_000, &[("gpu/q4:Q4_K_M", 60.0 * 0.85)]);
        persist::save_result(s, &slow, None, None).await.unwrap();
        let v = persist::baseline_verdicts(s, &slow).await.unwrap();
        assert_eq!(v.len(), 3);
        for c in &v {
            assert_eq!(c.baseline_run.as_deref(), Some("base"));
            assert!(c.verdict.is_regression(), "{c:?}");
            assert!((c.ratios.gen_tps.unwrap() - 0.85).abs() < 1e-9);
        }
        let ok = result("ok", 3_000, &[("gpu/q4:Q4_K_M", 60.0 * 0.95)]);
        let v = persist::baseline_verdicts(s, &ok).await.unwrap();
        assert!(v.iter().all(|c| c.verdict == Verdict::Ok), "{v:?}");
        // another quant of the same model has its own baseline
        let q8 = result("q8", 4_000, &[("gpu/q4:Q8_0", 10.0)]);
        let v = persist::baseline_verdicts(s, &q8).await.unwrap();
        assert!(v.iter().all(|c| c.baseline_run.is_none()));
    }
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn run_charts_plot_p50_and_p99_per_target_against_concurrency() {
    let r = result(
        "run-c",
        1_000,
        &[("gpu/q4:Q4_K_M", 60.0), ("gpu/q8:Q8_0", 40.0)],
    );
    let d = chart::ttft_data(&r);
    assert_eq!(d.x_label, "concurrency");
    let labels: Vec<&str> = d.series.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(
        labels,
        vec![
            "gpu/q4:Q4_K_M p50",
            "gpu/q4:Q4_K_M p99",
            "gpu/q8:Q8_0 p50",
            "gpu/q8:Q8_0 p99"
        ]
    );
    assert_eq!(
        d.series[0].points,
        vec![(1.0, 100.0), (2.0, 200.0), (4.0, 400.0)]
    );
    assert_eq!(d.series[1].points[2], (4.0, 600.0));
    assert!(d.series[1].dashed && !d.series[0].dashed);
    let g = chart::gen_tps_data(&r);
    assert_eq!(
        g.series[1].points,
        vec![(1.0, 40.0), (2.0, 20.0), (4.0, 10.0)]
    );

    if let Ok(keep) = std::env::var("BOO_CHART_OUT") {
        // look at the charts by eye: BOO_CHART_OUT=/tmp/charts cargo test -p boo-bench --test persist_chart
        chart::write_run_charts(&r, std::path::Path::new(&keep)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let files = chart::write_run_charts(&r, dir.path()).unwrap();
    assert_eq!(files.len(), 4);
    let svg = std::fs::read_to_string(dir.path().join("ttft.svg")).unwrap();
    assert!(svg.contains("gpu/q8:Q8_0 p99"), "legend missing");
    assert!(svg.contains("concurrency"));
    let png = std::fs::read(dir.path().join("gen_tps.png")).unwrap();
    assert_eq!(png_size(&png), (960, 600));
    // a plot with text and lines compresses to more than a blank canvas
    assert!(png.len() > 10_000, "png suspiciously small: {}", png.len());
}

#[test]
fn history_chart_is_written_with_regression_markers() {
    let pts: Vec<HistoryPoint> = (0..5)
        .map(|i| HistoryPoint {
            run_id: format!("r{i}"),
            at_ms: 1_763_000_000_000 + i * 86_400_000,
            series: "p128-g32-c1".into(),
            gen_tps: if i == 4 { 40.0 } else { 50.0 + i as f64 },
            regression: i == 4,
            polluted: i == 2,
            baseline: i == 0,
        })
        .collect();
    if let Ok(keep) = std::env::var("BOO_CHART_OUT") {
        chart::write_history_charts(
            "gen tok/s over time",
            "demo",
            &pts,
            std::path::Path::new(&keep),
        )
        .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let files =
        chart::write_history_charts("gen tok/s over time — gpu/q4", "gpu/q4", &pts, dir.path())
            .unwrap();
    assert_eq!(files.len(), 2);
    let png = std::fs::read(&files[1]).unwrap();
    assert_eq!(png_size(&png), (960, 600));
    let svg = std::fs::read_to_string(&files[0]).unwrap();
    assert!(svg.contains("regression"));
    // unwritable destination: a clear error naming the path, no panic
    let bad = dir.path().join("file");
    std::fs::write(&bad, "x").unwrap();
    let e = chart::write_run_charts(&result("x", 1, &[("a/b", 1.0)]), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("file"), "{e}");
}
