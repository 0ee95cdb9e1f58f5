//! Bench-result storage cost (bench binary, `harness = false`): what the gateway pays when a
//! benchmark run finishes (`insert_bench_samples` + `put_bench_cells` + `update_bench_run`)
//! and what `booctl bench show|list` costs to read.
//!
//! ```text
//! cargo bench -p boo-telemetry-store --bench bench_rows            # SQLite only
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p boo-telemetry-store --bench bench_rows          # SQLite and Postgres
//! ```
//! Environment: `BENCH_SAMPLES` (samples per run, default 10000), `BENCH_RUNS` (runs stored,
//! default 20). Reports medians and maxima over the runs, in one process, side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use boo_telemetry_store::postgres::PgStore;
use boo_telemetry_store::*;
use chrono::Utc;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A sample row shaped like boo-bench's (raw timestamps of 128 content chunks as JSON).
fn sample(run: &str, i: usize) -> BenchSampleRow {
    let chunks: Vec<u64> = (0..128).map(|k| 1_000 + k * 2_500 + i as u64).collect();
    BenchSampleRow {
        run_id: run.into(),
        target: "gpu/qwen3-4b:Q4_K_M".into(),
        cell_key: format!("p512-g128-c{}", 1 << (i % 6)),
        seq: i as i64,
        ok: true,
        ttft_ms: Some(120.0 + (i % 17) as f64),
        e2e_ms: Some(2_900.0),
        output_tokens: Some(128),
        data: serde_json::json!({
            "sent_us": 10, "first_chunk_us": 900, "content_us": chunks, "last_chunk_us": 330_000,
            "chunks": 130, "completion_tokens": 128, "status": 200,
            "timings": {"prompt_n": 512, "prompt_ms": 80.0, "predicted_n": 128, "predicted_ms": 2_700.0}
        }),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

async fn run(name: &str, store: Arc<dyn Store>, samples: usize, runs: usize) {
    let (mut save, mut read, mut list) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let id = format!("run-{r}");
        let mut row = BenchRunRow::started(
            &id,
            "chat-grid",
            "hash",
            vec![BenchTargetRow::new("gpu/qwen3-4b:Q4_K_M")],
            Utc::now(),
        );
        store.insert_bench_run(&row).await.unwrap();
        let rows: Vec<BenchSampleRow> = (0..samples).map(|i| sample(&id, i)).collect();
        let cells: Vec<BenchCellRow> = (0..6)
            .map(|c| BenchCellRow {
                run_id: id.clone(),
                target: "gpu/qwen3-4b:Q4_K_M".into(),
                cell_key: format!("p512-g128-c{}", 1 << c),
                gen_tps: Some(50.0),
                ttft_p50_ms: Some(120.0),
                stats: serde_json::json!({"metrics": {"ttft_ms": {"p50": 120.0}}}),
            })
            .collect();
        row.status = BenchRunStatus::Completed;
        row.finished_at = Some(Utc::now());
        row.summary = serde_json::json!({"cells": 6});
        let t = Instant::now();
        store.insert_bench_samples(&rows).await.unwrap();
        store.put_bench_cells(&cells).await.unwrap();
        store.update_bench_run(&row).await.unwrap();
        save.push(ms(t.elapsed()));
        let t = Instant::now();
        let back = store.bench_samples(&id).await.unwrap();
        assert_eq!(back.len(), samples);
        store.bench_run(&id).await.unwrap().unwrap();
        read.push(ms(t.elapsed()));
        let t = Instant::now();
        let page = store
            .bench_runs(&BenchRunFilter::default(), None, 50)
            .await
            .unwrap();
        assert_eq!(page.runs.len(), (r + 1).min(50));
        list.push(ms(t.elapsed()));
    }
    let (s50, smax) = median(save);
    let (r50, rmax) = median(read);
    let (l50, lmax) = median(list);
    println!(
        "{name:<8} save {samples} samples + cells + run: median {s50:.1} ms (max {smax:.1}), \
         {:.0} samples/s | read back: median {r50:.1} ms (max {rmax:.1}) | list 50 runs: median {l50:.2} ms (max {lmax:.2})",
        samples as f64 / (s50 / 1000.0)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let samples = env_num("BENCH_SAMPLES", 10_000);
    let runs = env_num("BENCH_RUNS", 20);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open(&format!("sqlite://{}/bench.db", dir.path().display()))
        .await
        .unwrap();
    run("sqlite", sqlite, samples, runs).await;
    match std::env::var("DATABASE_URL") {
        Ok(url) => {
            let schema = format!("boo_bench_rows_{}", std::process::id());
            let pg = PgStore::open_in_schema(&url, &schema).await.unwrap();
            run("postgres", Arc::new(pg), samples, runs).await;
            PgStore::drop_schema(&url, &schema).await.unwrap();
        }
        Err(_) => println!("postgres skipped: DATABASE_URL unset"),
    }
}
