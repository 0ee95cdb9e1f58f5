//! Bench storage (`BenchStore`) against SQLite always and Postgres when `DATABASE_URL` is set.

mod common;

use boo_telemetry_store::*;
use common::{Harness, at};
use serde_json::json;

suite!(
    suites_are_stored_once_per_hash,
    run_lifecycle_keeps_targets_cells_and_samples,
    runs_list_newest_first_filtered_and_keyset_paginated,
    baselines_are_replaced_per_provider_model_suite_cell,
    history_lists_finished_runs_of_one_model_oldest_first,
    bench_rows_survive_a_restart,
);

fn run(id: &str, suite: &str, secs: i64, targets: &[&str]) -> BenchRunRow {
    BenchRunRow::started(
        id,
        suite,
        &format!("hash-{suite}"),
        targets.iter().map(|t| BenchTargetRow::new(t)).collect(),
        at(secs),
    )
}

fn cell(run_id: &str, target: &str, key: &str, tps: f64) -> BenchCellRow {
    BenchCellRow {
        run_id: run_id.into(),
        target: target.into(),
        cell_key: key.into(),
        gen_tps: Some(tps),
        ttft_p50_ms: Some(1000.0 / tps),
        stats: json!({"gen_tps": {"p50": tps}, "requests": 4}),
    }
}

async fn finish(store: &dyn Store, mut r: BenchRunRow, secs: i64) -> BenchRunRow {
    r.status = BenchRunStatus::Completed;
    r.finished_at = Some(at(secs));
    store.update_bench_run(&r).await.unwrap();
    r
}

async fn suites_are_stored_once_per_hash(h: Harness) {
    let s = BenchSuiteRow {
        hash: "h1".into(),
        name: "chat-grid".into(),
        body: "name: chat-grid\n".into(),
        created_at: at(0),
    };
    h.store.put_bench_suite(&s).await.unwrap();
    // same hash again (even with another timestamp) keeps the first row
    let again = BenchSuiteRow {
        created_at: at(50),
        ..s.clone()
    };
    h.store.put_bench_suite(&again).await.unwrap();
    assert_eq!(h.store.bench_suite("h1").await.unwrap(), Some(s));
    assert_eq!(h.store.bench_suite("nope").await.unwrap(), None);
}

async fn run_lifecycle_keeps_targets_cells_and_samples(h: Harness) {
    let s = h.store.as_ref();
    let t1 = "gpu-box/qwen3-4b:Q8_0";
    let t2 = "gpu-box/qwen3-4b:Q4_K_M";
    // requested order (Q8 before Q4) is kept, not sorted
    let r = run("r1", "chat-grid", 10, &[t1, t2]);
    s.insert_bench_run(&r).await.unwrap();
    let dup = s.insert_bench_run(&r).await.unwrap_err().to_string();
    assert!(dup.contains("id") && dup.contains("r1"), "{dup}");

    let got = s.bench_run("r1").await.unwrap().unwrap();
    assert_eq!(got.run.status, BenchRunStatus::Running);
    assert_eq!(got.run.targets[0].target, t1);
    assert_eq!(got.run.targets[1].model, "qwen3-4b:Q4_K_M");
    assert!(got.cells.is_empty());

    let samples: Vec<BenchSampleRow> = (0..5)
        .map(|i| BenchSampleRow {
            run_id: "r1".into(),
            target: t2.into(),
            cell_key: "p128-g64-c2".into(),
            seq: 4 - i,
            ok: i != 2,
            ttft_ms: Some(100.0 + i as f64),
            e2e_ms: Some(900.0),
            output_tokens: Some(64),
            data: json!({"sent_us": 0, "chunks_us": [100, 120 + i]}),
        })
        .collect();
    assert_eq!(s.insert_bench_samples(&samples).await.unwrap(), 5);
    // re-inserting (a retried flush) stores nothing twice
    assert_eq!(s.insert_bench_samples(&samples[..2]).await.unwrap(), 0);

    s.put_bench_cells(&[
        cell("r1", t2, "p128-g64-c2", 50.0),
        cell("r1", t1, "p128-g64-c2", 30.0),
    ])
    .await
    .unwrap();
    // a cell is rewritten when recomputed
    s.put_bench_cells(&[cell("r1", t1, "p128-g64-c2", 31.0)])
        .await
        .unwrap();

    let mut done = r.clone();
    done.status = BenchRunStatus::Completed;
    done.finished_at = Some(at(70));
    done.polluted = true;
    done.pollution_reasons = vec!["2 foreign requests on gpu-box".into()];
    done.concurrent_foreign_requests = 2;
    done.targets[0].load_ms = Some(4200.0);
    done.summary = json!({"cells": 2, "verdict": "no_baseline"});
    s.update_bench_run(&done).await.unwrap();

    let got = s.bench_run("r1").await.unwrap().unwrap();
    assert_eq!(got.run, done);
    let cells: Vec<(&str, Option<f64>)> = got
        .cells
        .iter()
        .map(|c| (c.target.as_str(), c.gen_tps))
        .collect();
    assert_eq!(cells, vec![(t2, Some(50.0)), (t1, Some(31.0))]);
    assert_eq!(got.cells[0].stats["requests"], 4);

    let back = s.bench_samples("r1").await.unwrap();
    assert_eq!(back.len(), 5);
    assert_eq!(
        back.iter().map(|x| x.seq).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(!back[2].ok);
    assert_eq!(back[0].data["chunks_us"][1], 124);

    let mut ghost = done.clone();
    ghost.id = "ghost".into();
    let e = s.update_bench_run(&ghost).await.unwrap_err().to_string();
    assert!(e.contains("run_id") && e.contains("ghost"), "{e}");
    assert!(s.bench_run("ghost").await.unwrap().is_none());
}

async fn runs_list_newest_first_filtered_and_keyset_paginated(h: Harness) {
    let s = h.store.as_ref();
    // two runs share a start time: the id breaks the tie
    let specs = [
        ("a", "chat-grid", 10, vec!["gpu/q4"]),
        ("b", "chat-grid", 20, vec!["gpu/q8"]),
        ("c", "rag-grid", 20, vec!["gpu/q4", "gpu/q8"]),
        ("d", "chat-grid", 30, vec!["gpu/q4"]),
        ("e", "rag-grid", 40, vec!["cpu/q4"]),
    ];
    for (id, suite, secs, targets) in &specs {
        s.insert_bench_run(&run(id, suite, *secs, targets))
            .await
            .unwrap();
    }
    let ids = |p: &BenchRunPage| p.runs.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    let all = s
        .bench_runs(&BenchRunFilter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(ids(&all), vec!["e", "d", "c", "b", "a"]);
    assert_eq!(all.next, None);
    assert_eq!(all.runs[2].targets.len(), 2);

    // pages of two walk the whole list exactly once
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = s
            .bench_runs(&BenchRunFilter::default(), cursor.as_ref(), 2)
            .await
            .unwrap();
        seen.extend(ids(&p));
        match p.next {
            Some(c) => cursor = Some(BenchRunCursor::decode(&c.encode()).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, vec!["e", "d", "c", "b", "a"]);

    let chat = BenchRunFilter {
        suite: Some("chat-grid".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(&s.bench_runs(&chat, None, 100).await.unwrap()),
        vec!["d", "b", "a"]
    );
    let q4 = BenchRunFilter {
        target: Some("gpu/q4".into()),
        ..Default::default()
    };
    assert_eq!(
        ids(&s.bench_runs(&q4, None, 100).await.unwrap()),
        vec!["d", "c", "a"]
    );
    let both = BenchRunFilter {
        suite: Some("rag-grid".into()),
        target: Some("gpu/q8".into()),
    };
    assert_eq!(
        ids(&s.bench_runs(&both, None, 100).await.unwrap()),
        vec!["c"]
    );
}

async fn baselines_are_replaced_per_provider_model_suite_cell(h: Harness) {
    let s = h.store.as_ref();
    let b = |model: &str, cell: &str, run: &str, secs| BenchBaselineRow {
        provider: "gpu".into(),
        model: model.into(),
        suite: "chat-grid".into(),
        cell_key: cell.into(),
        run_id: run.into(),
        set_at: at(secs),
    };
    s.set_bench_baseline(&b("q4:Q4_K_M", "c1", "r1", 1))
        .await
        .unwrap();
    s.set_bench_baseline(&b("q4:Q8_0", "c1", "r2", 2))
        .await
        .unwrap();
    s.set_bench_baseline(&b("q4:Q4_K_M", "c2", "r1", 3))
        .await
        .unwrap();
    // a newer baseline for the same key replaces the old one; quants stay separate
    s.set_bench_baseline(&b("q4:Q4_K_M", "c1", "r9", 4))
        .await
        .unwrap();
    assert_eq!(
        s.bench_baseline("gpu", "q4:Q4_K_M", "chat-grid", "c1")
            .await
            .unwrap(),
        Some(b("q4:Q4_K_M", "c1", "r9", 4))
    );
    assert_eq!(
        s.bench_baseline("gpu", "q4:Q8_0", "chat-grid", "c1")
            .await
            .unwrap()
            .map(|x| x.run_id),
        Some("r2".into())
    );
    assert_eq!(
        s.bench_baseline("gpu", "q4:Q8_0", "other", "c1")
            .await
            .unwrap(),
        None
    );
    let all = s.bench_baselines(Some("chat-grid")).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(s.bench_baselines(Some("other")).await.unwrap().is_empty());
    assert_eq!(s.bench_baselines(None).await.unwrap().len(), 3);
}

async fn history_lists_finished_runs_of_one_model_oldest_first(h: Harness) {
    let s = h.store.as_ref();
    let q4 = "gpu/qwen:Q4_K_M";
    let q8 = "gpu/qwen:Q8_0";
    for (i, tps) in [50.0, 52.0, 44.0].iter().enumerate() {
        let id = format!("r{i}");
        let secs = 100 * (i as i64 + 1);
        let r = run(&id, "chat-grid", secs, &[q4, q8]);
        s.insert_bench_run(&r).await.unwrap();
        s.put_bench_cells(&[
            cell(&id, q4, "c1", *tps),
            cell(&id, q4, "c2", tps / 2.0),
            cell(&id, q8, "c1", 30.0),
        ])
        .await
        .unwrap();
        finish(s, r, secs + 50).await;
    }
    // still running: not part of the history
    let live = run("live", "chat-grid", 900, &[q4]);
    s.insert_bench_run(&live).await.unwrap();
    s.put_bench_cells(&[cell("live", q4, "c1", 1.0)])
        .await
        .unwrap();
    // another suite: not part of it either
    let other = run("other", "rag-grid", 150, &[q4]);
    s.insert_bench_run(&other).await.unwrap();
    s.put_bench_cells(&[cell("other", q4, "c1", 99.0)])
        .await
        .unwrap();
    finish(s, other, 160).await;

    let hist = s
        .bench_history("gpu", "qwen:Q4_K_M", "chat-grid", 100)
        .await
        .unwrap();
    let c1: Vec<(String, Option<f64>)> = hist
        .iter()
        .filter(|p| p.cell_key == "c1")
        .map(|p| (p.run_id.clone(), p.gen_tps))
        .collect();
    assert_eq!(
        c1,
        vec![
            ("r0".to_string(), Some(50.0)),
            ("r1".to_string(), Some(52.0)),
            ("r2".to_string(), Some(44.0))
        ]
    );
    assert_eq!(hist.len(), 6);
    assert!(hist.windows(2).all(|w| w[0].started_at <= w[1].started_at));
    // limit keeps the newest runs
    let last = s
        .bench_history("gpu", "qwen:Q4_K_M", "chat-grid", 1)
        .await
        .unwrap();
    assert!(last.iter().all(|p| p.run_id == "r2"), "{last:?}");
    assert_eq!(last.len(), 2);
}

async fn bench_rows_survive_a_restart(mut h: Harness) {
    let r = run("keep", "chat-grid", 5, &["gpu/q4"]);
    h.store.insert_bench_run(&r).await.unwrap();
    h.store
        .put_bench_cells(&[cell("keep", "gpu/q4", "c1", 40.0)])
        .await
        .unwrap();
    let r = finish(h.store.as_ref(), r, 9).await;
    h.restart().await;
    let got = h.store.bench_run("keep").await.unwrap().unwrap();
    assert_eq!(got.run, r);
    assert_eq!(got.cells.len(), 1);
}
