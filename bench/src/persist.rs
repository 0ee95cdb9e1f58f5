//! [`RunResult`] ⇄ telemetry-store rows ([`boo_telemetry_store::BenchStore`]).
//!
//! A run is stored as: its suite (by content hash), one `bench_runs` row whose `summary` is the
//! [`RunResult`] without samples (plus the baseline verdicts computed when it finished), its
//! targets with their model-load times, one `bench_cells` row per (target, cell) carrying the
//! whole [`CellResult`] as JSON, and one `bench_samples` row per request with the raw
//! [`Sample`] as JSON. [`load_result`] puts the same [`RunResult`] back together.
//!
//! Baselines are kept per (provider, model incl. quant, suite, cell key): [`set_baselines`]
//! marks every cell of a run, and [`baseline_verdicts`] compares a run's cells against them
//! with the suite's [`Thresholds`](crate::Thresholds).

use std::collections::HashMap;

use boo_telemetry_store::{
    BenchBaselineRow, BenchCellRow, BenchRunRow, BenchRunStatus, BenchSampleRow, BenchStore,
    BenchSuiteRow, BenchTargetRow, StoreError,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{CellResult, Pollution, RunResult, RunStatus, Sample, Target};
use crate::regress::{CellRatios, Verdict, compare_cell};
use crate::suite::Suite;

/// FNV-1a 64 of the suite's canonical JSON: equal suites hash equal whatever their YAML layout.
pub fn suite_hash(suite: &Suite) -> String {
    let canonical = serde_json::to_string(suite).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canonical.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The `bench_suites` row of a suite (`body` is the text as submitted).
pub fn suite_row(suite: &Suite, body: &str, now: DateTime<Utc>) -> BenchSuiteRow {
    BenchSuiteRow {
        hash: suite_hash(suite),
        name: suite.name.clone(),
        body: body.to_owned(),
        created_at: now,
    }
}

fn ms_to_time(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

fn target_row(t: &Target) -> BenchTargetRow {
    BenchTargetRow {
        target: t.id.clone(),
        provider: t.provider.clone(),
        model: t.model.clone(),
        load_ms: None,
    }
}

/// The `bench_runs` row of a run that just started (status `running`).
pub fn started_row(id: &str, suite: &Suite, targets: &[Target], now: DateTime<Utc>) -> BenchRunRow {
    BenchRunRow::started(
        id,
        &suite.name,
        &suite_hash(suite),
        targets.iter().map(target_row).collect(),
        now,
    )
}

/// One line per pollution reason.
pub fn describe_pollution(p: &Pollution) -> String {
    match p {
        Pollution::ForeignTraffic { requests } => {
            format!("{requests} foreign request(s) on the host during the run")
        }
        Pollution::Swap { detail } => format!("model swap during the run: {detail}"),
        Pollution::LoadingDuringRequest { requests } => {
            format!("{requests} measured request(s) saw the model loading")
        }
    }
}

fn status(s: RunStatus) -> BenchRunStatus {
    match s {
        RunStatus::Completed => BenchRunStatus::Completed,
        RunStatus::Cancelled => BenchRunStatus::Cancelled,
        RunStatus::Failed => BenchRunStatus::Failed,
    }
}

/// The final `bench_runs` row of a finished run. `extra` is merged into the summary (e.g.
/// `{"baseline_verdicts": [...]}`).
pub fn finished_row(r: &RunResult, extra: Option<serde_json::Value>) -> BenchRunRow {
    let mut reasons = Vec::new();
    for t in &r.targets {
        for p in &t.pollution {
            reasons.push(format!("{}: {}", t.target.id, describe_pollution(p)));
        }
    }
    let errors: Vec<String> = r
        .targets
        .iter()
        .filter_map(|t| t.error.as_ref().map(|e| format!("{}: {e}", t.target.id)))
        .collect();
    let mut summary = summary_json(r);
    if let (Some(serde_json::Value::Object(extra)), serde_json::Value::Object(s)) =
        (extra, &mut summary)
    {
        s.extend(extra);
    }
    BenchRunRow {
        id: r.id.clone(),
        suite: r.suite.name.clone(),
        suite_hash: suite_hash(&r.suite),
        targets: r
            .targets
            .iter()
            .map(|t| BenchTargetRow {
                load_ms: Some(t.load.load_ms),
                ..target_row(&t.target)
            })
            .collect(),
        status: status(r.status),
        started_at: ms_to_time(r.started_at_ms),
        finished_at: Some(ms_to_time(r.finished_at_ms)),
        polluted: r.polluted,
        pollution_reasons: reasons,
        concurrent_foreign_requests: i64::try_from(r.concurrent_foreign_requests)
            .unwrap_or(i64::MAX),
        error: (!errors.is_empty()).then(|| errors.join("; ")),
        summary,
    }
}

/// The run result without its raw samples, as JSON.
pub fn summary_json(r: &RunResult) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("samples".into(), serde_json::Value::Array(Vec::new()));
    }
    v
}

fn measured(s: &crate::Stats) -> Option<f64> {
    (s.count > 0).then_some(s.p50)
}

/// One `bench_cells` row per (target, cell).
pub fn cell_rows(r: &RunResult) -> Vec<BenchCellRow> {
    r.targets
        .iter()
        .flat_map(|t| {
            t.cells.iter().map(|c| BenchCellRow {
                run_id: r.id.clone(),
                target: t.target.id.clone(),
                cell_key: c.key.clone(),
                gen_tps: measured(&c.metrics.gen_tps),
                ttft_p50_ms: measured(&c.metrics.ttft_ms),
                stats: serde_json::to_value(c).unwrap_or(serde_json::Value::Null),
            })
        })
        .collect()
}

fn us_ms(from: u64, to: Option<u64>) -> Option<f64> {
    to.map(|t| t.saturating_sub(from) as f64 / 1000.0)
}

/// One `bench_samples` row per request (warm-ups included, flagged in `data`).
pub fn sample_rows(r: &RunResult) -> Vec<BenchSampleRow> {
    r.samples
        .iter()
        .map(|s| BenchSampleRow {
            run_id: r.id.clone(),
            target: s.target.clone(),
            cell_key: s.cell.clone(),
            seq: i64::from(s.seq),
            ok: s.ok(),
            ttft_ms: us_ms(s.sent_us, s.content_us.first().copied()),
            e2e_ms: us_ms(s.sent_us, s.last_chunk_us),
            output_tokens: Some(i64::from(s.output_tokens())),
            data: serde_json::to_value(s).unwrap_or(serde_json::Value::Null),
        })
        .collect()
}

/// Stores a finished run: its suite (when `suite_body` is given), the final run row (the run
/// row is inserted if [`started_row`] was never stored), cells and samples.
///
/// # Errors
/// The store's error.
pub async fn save_result(
    store: &dyn BenchStore,
    r: &RunResult,
    suite_body: Option<&str>,
    extra: Option<serde_json::Value>,
) -> Result<(), StoreError> {
    if let Some(body) = suite_body {
        store
            .put_bench_suite(&suite_row(&r.suite, body, Utc::now()))
            .await?;
    }
    let row = finished_row(r, extra);
    if store.bench_run(&r.id).await?.is_none() {
        store.insert_bench_run(&row).await?;
    } else {
        store.update_bench_run(&row).await?;
    }
    store.put_bench_cells(&cell_rows(r)).await?;
    store.insert_bench_samples(&sample_rows(r)).await?;
    Ok(())
}

/// Rebuilds a stored run's [`RunResult`] (summary + samples). `Ok(None)` for an unknown id
/// or a run that has not finished (no summary yet).
///
/// # Errors
/// The store's error, or [`StoreError::Json`] when the stored summary is not a result.
pub async fn load_result(
    store: &dyn BenchStore,
    id: &str,
) -> Result<Option<RunResult>, StoreError> {
    let Some(detail) = store.bench_run(id).await? else {
        return Ok(None);
    };
    if detail.run.summary.is_null() {
        return Ok(None);
    }
    let mut r: RunResult = serde_json::from_value(detail.run.summary)?;
    let mut samples = Vec::new();
    for row in store.bench_samples(id).await? {
        samples.push(serde_json::from_value::<Sample>(row.data)?);
    }
    // Stored in (target, cell, seq) order; the engine's order is the run's target order.
    let order: HashMap<&str, usize> = r
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.target.id.as_str(), i))
        .collect();
    let cell_order: HashMap<(&str, &str), usize> = r
        .targets
        .iter()
        .flat_map(|t| {
            t.cells
                .iter()
                .enumerate()
                .map(move |(i, c)| ((t.target.id.as_str(), c.key.as_str()), i))
        })
        .collect();
    samples.sort_by_key(|s| {
        (
            order.get(s.target.as_str()).copied().unwrap_or(usize::MAX),
            cell_order
                .get(&(s.target.as_str(), s.cell.as_str()))
                .copied()
                .unwrap_or(usize::MAX),
            s.seq,
        )
    });
    r.samples = samples;
    Ok(Some(r))
}

/// Marks every cell of `r` as the baseline of its (provider, model, suite, cell). Returns how
/// many baselines were set.
///
/// # Errors
/// The store's error.
pub async fn set_baselines(
    store: &dyn BenchStore,
    r: &RunResult,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for t in &r.targets {
        for c in &t.cells {
            if c.ok == 0 {
                continue;
            }
            store
                .set_bench_baseline(&BenchBaselineRow {
                    provider: t.target.provider.clone(),
                    model: t.target.model.clone(),
                    suite: r.suite.name.clone(),
                    cell_key: c.key.clone(),
                    run_id: r.id.clone(),
                    set_at: now,
                })
                .await?;
            n += 1;
        }
    }
    Ok(n)
}

/// A cell of a run against its stored baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineVerdict {
    /// Target id.
    pub target: String,
    /// Cell key.
    pub key: String,
    /// The baseline run, if one is set for this (provider, model, suite, cell).
    pub baseline_run: Option<String>,
    /// Ratios current / baseline.
    pub ratios: CellRatios,
    /// The verdict (`Incomparable` when no baseline is set).
    pub verdict: Verdict,
}

/// Compares every cell of `r` with the baseline stored for its (provider, model, suite, cell),
/// using the suite's thresholds. A run that is itself the baseline compares equal.
///
/// # Errors
/// The store's error.
pub async fn baseline_verdicts(
    store: &dyn BenchStore,
    r: &RunResult,
) -> Result<Vec<BaselineVerdict>, StoreError> {
    let mut loaded: HashMap<String, Option<RunResult>> = HashMap::new();
    let mut out = Vec::new();
    for t in &r.targets {
        for c in &t.cells {
            let b = store
                .bench_baseline(&t.target.provider, &t.target.model, &r.suite.name, &c.key)
                .await?;
            let Some(b) = b else {
                out.push(BaselineVerdict {
                    target: t.target.id.clone(),
                    key: c.key.clone(),
                    baseline_run: None,
                    ratios: CellRatios::default(),
                    verdict: Verdict::Incomparable {
                        reason: "no baseline set".into(),
                    },
                });
                continue;
            };
            let base = if b.run_id == r.id {
                Some(r.clone())
            } else {
                if !loaded.contains_key(&b.run_id) {
                    let res = load_result(store, &b.run_id).await?;
                    loaded.insert(b.run_id.clone(), res);
                }
                loaded.get(&b.run_id).cloned().flatten()
            };
            let base_cell: Option<&CellResult> = base.as_ref().and_then(|br| {
                br.targets
                    .iter()
                    .filter(|bt| {
                        bt.target.provider == t.target.provider && bt.target.model == t.target.model
                    })
                    .flat_map(|bt| bt.cells.iter())
                    .find(|bc| bc.key == c.key)
            });
            let (verdict, ratios) = match base_cell {
                Some(bc) => compare_cell(bc, c, &r.suite.thresholds),
                None => (
                    Verdict::Incomparable {
                        reason: format!("baseline run {} is missing this cell", b.run_id),
                    },
                    CellRatios::default(),
                ),
            };
            out.push(BaselineVerdict {
                target: t.target.id.clone(),
                key: c.key.clone(),
                baseline_run: Some(b.run_id.clone()),
                ratios,
                verdict,
            });
        }
    }
    Ok(out)
}
