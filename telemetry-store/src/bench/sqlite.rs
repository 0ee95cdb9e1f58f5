//! [`BenchStore`] for SQLite (timestamps as INTEGER microseconds, JSON as TEXT).

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

use super::*;
use crate::sqlite::SqliteStore;
use crate::store::clamp_limit;

fn us(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_micros()
}

fn from_us(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

fn json(s: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(s)?)
}

fn run_row(r: &SqliteRow) -> Result<BenchRunRow> {
    let reasons: String = r.try_get("pollution_reasons")?;
    Ok(BenchRunRow {
        id: r.try_get("id")?,
        suite: r.try_get("suite")?,
        suite_hash: r.try_get("suite_hash")?,
        targets: Vec::new(),
        status: BenchRunStatus::parse(&r.try_get::<String, _>("status")?)?,
        started_at: from_us(r.try_get("started_at")?),
        finished_at: r.try_get::<Option<i64>, _>("finished_at")?.map(from_us),
        polluted: r.try_get("polluted")?,
        pollution_reasons: serde_json::from_str(&reasons)?,
        concurrent_foreign_requests: r.try_get("concurrent_foreign_requests")?,
        error: r.try_get("error")?,
        summary: json(&r.try_get::<String, _>("summary")?)?,
    })
}

impl SqliteStore {
    /// Fills in the targets of `runs` (one query).
    async fn attach_targets(&self, runs: &mut [BenchRunRow]) -> Result<()> {
        if runs.is_empty() {
            return Ok(());
        }
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT run_id, target, provider, model, load_ms FROM bench_run_targets WHERE run_id IN (",
        );
        let mut sep = qb.separated(", ");
        for r in runs.iter() {
            sep.push_bind(r.id.clone());
        }
        qb.push(") ORDER BY run_id, pos");
        let rows = qb.build().fetch_all(self.pool()).await?;
        let mut by_run: HashMap<String, Vec<BenchTargetRow>> = HashMap::new();
        for r in &rows {
            by_run
                .entry(r.try_get("run_id")?)
                .or_default()
                .push(BenchTargetRow {
                    target: r.try_get("target")?,
                    provider: r.try_get("provider")?,
                    model: r.try_get("model")?,
                    load_ms: r.try_get("load_ms")?,
                });
        }
        for run in runs.iter_mut() {
            run.targets = by_run.remove(&run.id).unwrap_or_default();
        }
        Ok(())
    }
}

#[async_trait]
impl BenchStore for SqliteStore {
    async fn put_bench_suite(&self, suite: &BenchSuiteRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO bench_suites (hash, name, body, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (hash) DO NOTHING",
        )
        .bind(&suite.hash)
        .bind(&suite.name)
        .bind(&suite.body)
        .bind(us(suite.created_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn bench_suite(&self, hash: &str) -> Result<Option<BenchSuiteRow>> {
        let row =
            sqlx::query("SELECT hash, name, body, created_at FROM bench_suites WHERE hash = ?")
                .bind(hash)
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| {
            Ok(BenchSuiteRow {
                hash: r.try_get("hash")?,
                name: r.try_get("name")?,
                body: r.try_get("body")?,
                created_at: from_us(r.try_get("created_at")?),
            })
        })
        .transpose()
    }

    async fn insert_bench_run(&self, run: &BenchRunRow) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO bench_runs (id, suite, suite_hash, status, started_at, finished_at, \
             polluted, pollution_reasons, concurrent_foreign_requests, error, summary) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&run.id)
        .bind(&run.suite)
        .bind(&run.suite_hash)
        .bind(run.status.as_str())
        .bind(us(run.started_at))
        .bind(run.finished_at.map(us))
        .bind(run.polluted)
        .bind(serde_json::to_string(&run.pollution_reasons)?)
        .bind(run.concurrent_foreign_requests)
        .bind(&run.error)
        .bind(run.summary.to_string())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Invalid {
                field: "id",
                problem: format!("bench run {:?} already exists", run.id),
            });
        }
        for (pos, t) in (0_i64..).zip(&run.targets) {
            sqlx::query(
                "INSERT INTO bench_run_targets (run_id, pos, target, provider, model, load_ms) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, target) DO NOTHING",
            )
            .bind(&run.id)
            .bind(pos)
            .bind(&t.target)
            .bind(&t.provider)
            .bind(&t.model)
            .bind(t.load_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn update_bench_run(&self, run: &BenchRunRow) -> Result<()> {
        let mut tx = self.writer().begin().await?;
        let n = sqlx::query(
            "UPDATE bench_runs SET status = ?, finished_at = ?, polluted = ?, \
             pollution_reasons = ?, concurrent_foreign_requests = ?, error = ?, summary = ? \
             WHERE id = ?",
        )
        .bind(run.status.as_str())
        .bind(run.finished_at.map(us))
        .bind(run.polluted)
        .bind(serde_json::to_string(&run.pollution_reasons)?)
        .bind(run.concurrent_foreign_requests)
        .bind(&run.error)
        .bind(run.summary.to_string())
        .bind(&run.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(unknown_run(&run.id));
        }
        for t in &run.targets {
            sqlx::query("UPDATE bench_run_targets SET load_ms = ? WHERE run_id = ? AND target = ?")
                .bind(t.load_ms)
                .bind(&run.id)
                .bind(&t.target)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn put_bench_cells(&self, cells: &[BenchCellRow]) -> Result<u64> {
        let mut tx = self.writer().begin().await?;
        let mut n = 0;
        for c in cells {
            n += sqlx::query(
                "INSERT INTO bench_cells (run_id, target, cell_key, gen_tps, ttft_p50_ms, stats) \
                 VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, target, cell_key) DO UPDATE SET \
                 gen_tps = excluded.gen_tps, ttft_p50_ms = excluded.ttft_p50_ms, stats = excluded.stats",
            )
            .bind(&c.run_id)
            .bind(&c.target)
            .bind(&c.cell_key)
            .bind(c.gen_tps)
            .bind(c.ttft_p50_ms)
            .bind(c.stats.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn insert_bench_samples(&self, rows: &[BenchSampleRow]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.writer().begin().await?;
        let mut n = 0;
        for chunk in crate::chunks::statement_chunks(rows) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO bench_samples (run_id, target, cell_key, seq, ok, ttft_ms, e2e_ms, \
                 output_tokens, data) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(&r.run_id)
                    .push_bind(&r.target)
                    .push_bind(&r.cell_key)
                    .push_bind(r.seq)
                    .push_bind(r.ok)
                    .push_bind(r.ttft_ms)
                    .push_bind(r.e2e_ms)
                    .push_bind(r.output_tokens)
                    .push_bind(r.data.to_string());
            });
            qb.push(" ON CONFLICT (run_id, target, cell_key, seq) DO NOTHING");
            n += qb.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn bench_runs(
        &self,
        filter: &BenchRunFilter,
        cursor: Option<&BenchRunCursor>,
        limit: u32,
    ) -> Result<BenchRunPage> {
        let limit = clamp_limit(limit);
        let mut qb = QueryBuilder::<Sqlite>::new(
            "SELECT id, suite, suite_hash, status, started_at, finished_at, polluted, \
             pollution_reasons, concurrent_foreign_requests, error, summary FROM bench_runs r \
             WHERE 1 = 1",
        );
        if let Some(s) = &filter.suite {
            qb.push(" AND suite = ").push_bind(s.clone());
        }
        if let Some(t) = &filter.target {
            qb.push(
                " AND EXISTS (SELECT 1 FROM bench_run_targets t WHERE t.run_id = r.id AND t.target = ",
            )
            .push_bind(t.clone())
            .push(")");
        }
        if let Some(c) = cursor {
            qb.push(" AND (started_at, id) < (")
                .push_bind(us(c.started_at))
                .push(", ")
                .push_bind(c.id.clone())
                .push(")");
        }
        qb.push(" ORDER BY started_at DESC, id DESC LIMIT ")
            .push_bind(limit);
        let rows = qb.build().fetch_all(self.pool()).await?;
        let mut runs = rows.iter().map(run_row).collect::<Result<Vec<_>>>()?;
        self.attach_targets(&mut runs).await?;
        Ok(page(runs, limit))
    }

    async fn bench_run(&self, id: &str) -> Result<Option<BenchRunDetail>> {
        let Some(row) = sqlx::query(
            "SELECT id, suite, suite_hash, status, started_at, finished_at, polluted, \
             pollution_reasons, concurrent_foreign_requests, error, summary FROM bench_runs \
             WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        else {
            return Ok(None);
        };
        let mut runs = vec![run_row(&row)?];
        self.attach_targets(&mut runs).await?;
        let cells = sqlx::query(
            "SELECT run_id, target, cell_key, gen_tps, ttft_p50_ms, stats FROM bench_cells \
             WHERE run_id = ? ORDER BY target, cell_key",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(BenchCellRow {
                run_id: r.try_get("run_id")?,
                target: r.try_get("target")?,
                cell_key: r.try_get("cell_key")?,
                gen_tps: r.try_get("gen_tps")?,
                ttft_p50_ms: r.try_get("ttft_p50_ms")?,
                stats: json(&r.try_get::<String, _>("stats")?)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(runs.pop().map(|run| BenchRunDetail { run, cells }))
    }

    async fn bench_samples(&self, run_id: &str) -> Result<Vec<BenchSampleRow>> {
        sqlx::query(
            "SELECT run_id, target, cell_key, seq, ok, ttft_ms, e2e_ms, output_tokens, data \
             FROM bench_samples WHERE run_id = ? ORDER BY target, cell_key, seq",
        )
        .bind(run_id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| {
            Ok(BenchSampleRow {
                run_id: r.try_get("run_id")?,
                target: r.try_get("target")?,
                cell_key: r.try_get("cell_key")?,
                seq: r.try_get("seq")?,
                ok: r.try_get("ok")?,
                ttft_ms: r.try_get("ttft_ms")?,
                e2e_ms: r.try_get("e2e_ms")?,
                output_tokens: r.try_get("output_tokens")?,
                data: json(&r.try_get::<String, _>("data")?)?,
            })
        })
        .collect()
    }

    async fn set_bench_baseline(&self, b: &BenchBaselineRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO bench_baselines (provider, model, suite, cell_key, run_id, set_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (provider, model, suite, cell_key) DO UPDATE \
             SET run_id = excluded.run_id, set_at = excluded.set_at",
        )
        .bind(&b.provider)
        .bind(&b.model)
        .bind(&b.suite)
        .bind(&b.cell_key)
        .bind(&b.run_id)
        .bind(us(b.set_at))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn bench_baseline(
        &self,
        provider: &str,
        model: &str,
        suite: &str,
        cell_key: &str,
    ) -> Result<Option<BenchBaselineRow>> {
        sqlx::query(
            "SELECT provider, model, suite, cell_key, run_id, set_at FROM bench_baselines \
             WHERE provider = ? AND model = ? AND suite = ? AND cell_key = ?",
        )
        .bind(provider)
        .bind(model)
        .bind(suite)
        .bind(cell_key)
        .fetch_optional(self.pool())
        .await?
        .as_ref()
        .map(baseline_row)
        .transpose()
    }

    async fn bench_baselines(&self, suite: Option<&str>) -> Result<Vec<BenchBaselineRow>> {
        sqlx::query(
            "SELECT provider, model, suite, cell_key, run_id, set_at FROM bench_baselines \
             WHERE (? IS NULL OR suite = ?) ORDER BY provider, model, suite, cell_key",
        )
        .bind(suite)
        .bind(suite)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(baseline_row)
        .collect()
    }

    async fn bench_history(
        &self,
        provider: &str,
        model: &str,
        suite: &str,
        limit: u32,
    ) -> Result<Vec<BenchHistoryPoint>> {
        let rows = sqlx::query(
            "WITH recent AS ( \
               SELECT r.id, r.started_at, r.status, r.polluted, t.target FROM bench_runs r \
               JOIN bench_run_targets t ON t.run_id = r.id \
               WHERE t.provider = ? AND t.model = ? AND r.suite = ? AND r.status <> 'running' \
               ORDER BY r.started_at DESC, r.id DESC LIMIT ?) \
             SELECT recent.id, recent.started_at, recent.status, recent.polluted, c.cell_key, \
               c.gen_tps, c.ttft_p50_ms FROM recent \
             JOIN bench_cells c ON c.run_id = recent.id AND c.target = recent.target \
             ORDER BY recent.started_at, recent.id, c.cell_key",
        )
        .bind(provider)
        .bind(model)
        .bind(suite)
        .bind(clamp_limit(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BenchHistoryPoint {
                    run_id: r.try_get("id")?,
                    started_at: from_us(r.try_get("started_at")?),
                    status: BenchRunStatus::parse(&r.try_get::<String, _>("status")?)?,
                    polluted: r.try_get("polluted")?,
                    cell_key: r.try_get("cell_key")?,
                    gen_tps: r.try_get("gen_tps")?,
                    ttft_p50_ms: r.try_get("ttft_p50_ms")?,
                })
            })
            .collect()
    }
}

fn baseline_row(r: &SqliteRow) -> Result<BenchBaselineRow> {
    Ok(BenchBaselineRow {
        provider: r.try_get("provider")?,
        model: r.try_get("model")?,
        suite: r.try_get("suite")?,
        cell_key: r.try_get("cell_key")?,
        run_id: r.try_get("run_id")?,
        set_at: from_us(r.try_get("set_at")?),
    })
}
