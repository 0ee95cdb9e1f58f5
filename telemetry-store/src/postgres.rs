//! Postgres adapter: several gateways can share one database.
//!
//! Batches are inserted with `INSERT ... SELECT FROM UNNEST($1::text[], ...)`, one statement per
//! batch, `ON CONFLICT DO NOTHING`.

use std::collections::BTreeMap;
use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::error::{Result, StoreError};
use crate::records::*;
use crate::sqlite::page;
use crate::store::*;

/// Rows per UNNEST statement for large direct inserts.
const CHUNK: usize = 10_000;

/// First key of the retention advisory lock (`"boor"`); the second is derived from the schema.
const LOCK_KEY: i32 = 0x626f_6f72;

/// The Postgres store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

fn valid_schema(schema: &str) -> Result<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field: "schema",
            problem: "use 1-63 of [a-z0-9_], not starting with a digit".into(),
        })
    }
}

impl PgStore {
    /// Connect and apply migrations in the default schema.
    pub async fn open(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        Self::connect(opts).await
    }

    /// Connect with `search_path` set to `schema` (created if missing) and apply migrations
    /// there. Used to isolate test runs and to host several installations in one database.
    pub async fn open_in_schema(url: &str, schema: &str) -> Result<Self> {
        valid_schema(schema)?;
        let base = PgConnectOptions::from_str(url)?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&admin)
            .await?;
        admin.close().await;
        Self::connect(base.options([("search_path", schema)])).await
    }

    /// Drop a schema created by [`PgStore::open_in_schema`] (test cleanup).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<()> {
        valid_schema(schema)?;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(PgConnectOptions::from_str(url)?)
            .await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .execute(&admin)
            .await?;
        admin.close().await;
        Ok(())
    }

    async fn connect(opts: PgConnectOptions) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }

    /// The underlying pool (for ad-hoc queries in tools and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A transaction whose commit does not wait for the WAL flush. Used for telemetry batches
    /// only: a server crash can lose the last few hundred milliseconds of telemetry but never
    /// corrupts anything; settings, captures and retention commit synchronously.
    async fn begin_async_commit(&self) -> Result<sqlx::Transaction<'static, Postgres>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// Session-level advisory lock held on one dedicated connection.
struct PgLock {
    conn: Option<PoolConnection<Postgres>>,
}

#[async_trait]
impl RetentionLock for PgLock {
    async fn release(mut self: Box<Self>) -> Result<()> {
        if let Some(mut conn) = self.conn.take() {
            sqlx::query("SELECT pg_advisory_unlock($1, hashtext(current_schema()))")
                .bind(LOCK_KEY)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        // Not released explicitly: close the session instead of returning a connection that
        // still holds the lock to the pool. The server frees the lock with the session.
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

fn status_u16(v: Option<i32>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

fn feed_row(r: &PgRow) -> Result<FeedRow> {
    let origin: String = r.try_get("origin")?;
    Ok(FeedRow {
        origin: if origin == "host" {
            FeedOrigin::Host
        } else {
            FeedOrigin::Gateway
        },
        id: r.try_get("id")?,
        ts: r.try_get("ts")?,
        provider_id: r.try_get("provider_id")?,
        model: r.try_get("model")?,
        source: r.try_get("source")?,
        path: r.try_get("path")?,
        status: status_u16(r.try_get("status")?),
        duration_ms: r.try_get("duration_ms")?,
        prompt_tokens: r.try_get("prompt_tokens")?,
        cached_tokens: r.try_get("cached_tokens")?,
        completion_tokens: r.try_get("completion_tokens")?,
        gen_tps: r.try_get("gen_tps")?,
        error_class: r.try_get("error_class")?,
    })
}

fn push_cursor(
    qb: &mut QueryBuilder<'_, Postgres>,
    origin: FeedOrigin,
    id_expr: &str,
    c: &FeedCursor,
) {
    let o = origin.as_str();
    let co = c.origin.as_str();
    if o < co {
        qb.push(" AND ts <= ").push_bind(c.ts);
    } else if o > co {
        qb.push(" AND ts < ").push_bind(c.ts);
    } else {
        // Row-value comparison: lets the (…, ts DESC, id DESC) indexes seek to the cursor.
        qb.push(format!(" AND (ts, {id_expr}) < ("))
            .push_bind(c.ts)
            .push(", ")
            .push_bind(c.id.clone())
            .push(")");
    }
}

fn capture_row(r: &PgRow) -> Result<Capture> {
    Ok(Capture {
        id: r.try_get("id")?,
        request_id: r.try_get("request_id")?,
        provider_id: r.try_get("provider_id")?,
        ts: r.try_get("ts")?,
        body: r.try_get("body")?,
        original_bytes: r.try_get("original_bytes")?,
        truncated: r.try_get("truncated")?,
    })
}

fn perf_row(r: &PgRow) -> Result<PerfSample> {
    Ok(PerfSample {
        provider_id: r.try_get("provider_id")?,
        ts: r.try_get("ts")?,
        gpu: r.try_get("gpu")?,
        sys: r.try_get("sys")?,
    })
}

fn pairs(rows: &[PgRow]) -> Result<Vec<(String, DateTime<Utc>)>> {
    rows.iter()
        .map(|r| Ok((r.try_get("provider_id")?, r.try_get("ts")?)))
        .collect()
}

fn json_texts<'a>(it: impl Iterator<Item = Option<&'a serde_json::Value>>) -> Vec<Option<String>> {
    it.map(|v| v.map(|v| v.to_string())).collect()
}

/// `rows` in ascending order of their unique key. Two writers inserting overlapping batches then
/// take the index locks in the same order, so Postgres never sees a lock cycle (deadlock, 40P01)
/// between their `ON CONFLICT DO NOTHING` inserts.
fn sorted_by<'a, T, K: Ord>(rows: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<&'a T> {
    let mut v: Vec<&T> = rows.iter().collect();
    v.sort_by_key(|a| key(*a));
    v
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn insert_requests(&self, rows: &[RequestRecord]) -> Result<u64> {
        let mut tx = self.begin_async_commit().await?;
        let mut n = 0;
        // The unique key is (ts, request_id) since migration 0005.
        let rows = sorted_by(rows, |r| (r.ts, r.request_id.as_str()));
        for c in rows.chunks(CHUNK) {
            n += sqlx::query(
                "INSERT INTO requests (request_id, ts, provider_id, model, wire_model, source, path, \
                 status, error_class, ttft_ms, duration_ms, prompt_tokens, cached_tokens, \
                 completion_tokens, prompt_tps, gen_tps, bytes_in, bytes_out, stream, route) \
                 SELECT request_id, ts, provider_id, model, wire_model, source, path, status, \
                 error_class, ttft_ms, duration_ms, prompt_tokens, cached_tokens, completion_tokens, \
                 prompt_tps, gen_tps, bytes_in, bytes_out, stream, route::jsonb FROM UNNEST( \
                 $1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], \
                 $7::text[], $8::int4[], $9::text[], $10::float8[], $11::float8[], $12::int8[], \
                 $13::int8[], $14::int8[], $15::float8[], $16::float8[], $17::int8[], $18::int8[], \
                 $19::bool[], $20::text[]) AS t(request_id, ts, provider_id, model, wire_model, \
                 source, path, status, error_class, ttft_ms, duration_ms, prompt_tokens, \
                 cached_tokens, completion_tokens, prompt_tps, gen_tps, bytes_in, bytes_out, \
                 stream, route) ON CONFLICT DO NOTHING",
            )
            .bind(c.iter().map(|r| r.request_id.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.ts).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.provider_id.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.model.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.wire_model.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.source.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.path.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| i32::from(r.status)).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.error_class.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.ttft_ms).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.duration_ms).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.prompt_tokens).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.cached_tokens).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.completion_tokens).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.prompt_tps).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.gen_tps).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.bytes_in).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.bytes_out).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.stream).collect::<Vec<_>>())
            .bind(
                c.iter()
                    .map(|r| r.route.as_ref().map(|j| j.as_str().to_owned()))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn insert_activity(&self, rows: &[HostActivity]) -> Result<u64> {
        let mut tx = self.begin_async_commit().await?;
        let mut n = 0;
        let rows = sorted_by(rows, |r| (r.provider_id.as_str(), r.upstream_id, r.ts));
        for c in rows.chunks(CHUNK) {
            n += sqlx::query(
                "INSERT INTO host_activity (provider_id, upstream_id, ts, model, path, status, \
                 duration_ms, prompt_tokens, cached_tokens, completion_tokens, prompt_tps, gen_tps, \
                 has_capture) SELECT * FROM UNNEST($1::text[], $2::int8[], $3::timestamptz[], \
                 $4::text[], $5::text[], $6::int4[], $7::float8[], $8::int8[], $9::int8[], \
                 $10::int8[], $11::float8[], $12::float8[], $13::bool[]) ON CONFLICT DO NOTHING",
            )
            .bind(c.iter().map(|r| r.provider_id.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.upstream_id).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.ts).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.model.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.path.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.status.map(i32::from)).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.duration_ms).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.prompt_tokens).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.cached_tokens).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.completion_tokens).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.prompt_tps).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.gen_tps).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.has_capture).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn insert_perf(&self, rows: &[PerfSample]) -> Result<u64> {
        let mut tx = self.begin_async_commit().await?;
        let mut n = 0;
        let rows = sorted_by(rows, |r| (r.provider_id.as_str(), r.ts));
        for c in rows.chunks(CHUNK) {
            n += sqlx::query(
                "INSERT INTO perf_samples (provider_id, ts, gpu, sys) \
                 SELECT p, t, g::jsonb, s::jsonb FROM UNNEST($1::text[], $2::timestamptz[], \
                 $3::text[], $4::text[]) AS u(p, t, g, s) ON CONFLICT DO NOTHING",
            )
            .bind(c.iter().map(|r| r.provider_id.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.ts).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.gpu.to_string()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.sys.to_string()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn insert_model_events(&self, rows: &[ModelEvent]) -> Result<u64> {
        let mut tx = self.begin_async_commit().await?;
        let mut n = 0;
        let rows = sorted_by(rows, |r| {
            (
                r.provider_id.as_str(),
                r.model.as_str(),
                r.state.as_str(),
                r.ts,
            )
        });
        for c in rows.chunks(CHUNK) {
            n += sqlx::query(
                "INSERT INTO model_events (provider_id, model, state, ts, detail) \
                 SELECT p, m, s, t, d::jsonb FROM UNNEST($1::text[], $2::text[], $3::text[], \
                 $4::timestamptz[], $5::text[]) AS u(p, m, s, t, d) ON CONFLICT DO NOTHING",
            )
            .bind(c.iter().map(|r| r.provider_id.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.model.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.state.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.ts).collect::<Vec<_>>())
            .bind(json_texts(c.iter().map(|r| r.detail.as_ref())))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn upsert_host(&self, h: &HostRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO hosts (provider_id, os, gpu_label, enabled) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (provider_id) DO UPDATE SET os = excluded.os, \
             gpu_label = excluded.gpu_label, enabled = excluded.enabled",
        )
        .bind(&h.provider_id)
        .bind(&h.os)
        .bind(&h.gpu_label)
        .bind(h.enabled)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn hosts(&self) -> Result<Vec<HostRow>> {
        let rows = sqlx::query(
            "SELECT provider_id, os, gpu_label, enabled FROM hosts ORDER BY provider_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(HostRow {
                    provider_id: r.try_get("provider_id")?,
                    os: r.try_get("os")?,
                    gpu_label: r.try_get("gpu_label")?,
                    enabled: r.try_get("enabled")?,
                })
            })
            .collect()
    }

    async fn setting(&self, key: &str) -> Result<Option<serde_json::Value>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn settings(&self) -> Result<BTreeMap<String, serde_json::Value>> {
        let rows = sqlx::query("SELECT key, value FROM settings ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
            .collect()
    }

    async fn patch_settings(&self, patch: &BTreeMap<String, serde_json::Value>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        for (k, v) in patch {
            if v.is_null() {
                sqlx::query("DELETE FROM settings WHERE key = $1")
                    .bind(k)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, clock_timestamp()) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_capture(&self, c: &NewCapture, row_cap_bytes: usize) -> Result<i64> {
        let (body, truncated) = trim_capture(&c.body, row_cap_bytes);
        Ok(sqlx::query_scalar(
            "INSERT INTO captures (request_id, provider_id, ts, body, size_bytes, original_bytes, truncated) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&c.request_id)
        .bind(&c.provider_id)
        .bind(c.ts)
        .bind(body)
        .bind(body.len() as i64)
        .bind(c.body.len() as i64)
        .bind(truncated)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn capture(&self, id: i64) -> Result<Option<Capture>> {
        let r = sqlx::query("SELECT * FROM captures WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(capture_row).transpose()
    }

    async fn captures_for_request(&self, request_id: &str) -> Result<Vec<Capture>> {
        let rows = sqlx::query("SELECT * FROM captures WHERE request_id = $1 ORDER BY ts, id")
            .bind(request_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(capture_row).collect()
    }

    async fn feed(
        &self,
        filter: &FeedFilter,
        cursor: Option<&FeedCursor>,
        limit: u32,
    ) -> Result<FeedPage> {
        let limit = clamp_limit(limit);
        let want_gateway = filter.origin != Some(FeedOrigin::Host);
        let want_host = filter.origin != Some(FeedOrigin::Gateway) && filter.source.is_none();
        let mut qb = QueryBuilder::<Postgres>::new("SELECT * FROM (");
        let mut branches = 0;
        if want_gateway {
            qb.push(
                "(SELECT 'gateway'::text AS origin, request_id AS id, ts, provider_id, model, \
                 source, path, status, duration_ms, prompt_tokens, cached_tokens, completion_tokens, \
                 gen_tps, error_class FROM requests WHERE true",
            );
            if let Some(p) = &filter.provider_id {
                qb.push(" AND provider_id = ").push_bind(p.clone());
            }
            if let Some(m) = &filter.model {
                qb.push(" AND model = ").push_bind(m.clone());
            }
            if let Some(s) = &filter.source {
                qb.push(" AND source = ").push_bind(s.clone());
            }
            if let Some(s) = filter.status {
                qb.push(" AND status = ").push_bind(i32::from(s));
                if s >= ERROR_STATUS_MIN {
                    // Implied by the equality, but spelled out so the partial index on failed
                    // requests (idx_requests_error_ts, migration 0004) is usable.
                    qb.push(format!(" AND status >= {ERROR_STATUS_MIN}"));
                }
            }
            if let Some(c) = cursor {
                push_cursor(&mut qb, FeedOrigin::Gateway, "request_id", c);
            }
            qb.push(" ORDER BY ts DESC, request_id DESC LIMIT ")
                .push_bind(limit)
                .push(")");
            branches += 1;
        }
        if want_host {
            if branches > 0 {
                qb.push(" UNION ALL ");
            }
            let id_expr = "(provider_id || ':' || upstream_id::text)";
            qb.push(format!(
                "(SELECT 'host'::text AS origin, {id_expr} AS id, ts, provider_id, model, \
                 NULL::text AS source, path, status, duration_ms, prompt_tokens, cached_tokens, \
                 completion_tokens, gen_tps, NULL::text AS error_class FROM host_activity WHERE true"
            ));
            if let Some(p) = &filter.provider_id {
                qb.push(" AND provider_id = ").push_bind(p.clone());
            }
            if let Some(m) = &filter.model {
                qb.push(" AND model = ").push_bind(m.clone());
            }
            if let Some(s) = filter.status {
                qb.push(" AND status = ").push_bind(i32::from(s));
            }
            if let Some(c) = cursor {
                push_cursor(&mut qb, FeedOrigin::Host, id_expr, c);
            }
            qb.push(format!(" ORDER BY ts DESC, {id_expr} DESC LIMIT "))
                .push_bind(limit)
                .push(")");
            branches += 1;
        }
        if branches == 0 {
            return Ok(FeedPage {
                rows: Vec::new(),
                next: None,
            });
        }
        qb.push(") u ORDER BY ts DESC, origin DESC, id DESC LIMIT ")
            .push_bind(limit);
        let rows = qb.build().fetch_all(&self.pool).await?;
        let rows: Vec<FeedRow> = rows.iter().map(feed_row).collect::<Result<_>>()?;
        Ok(page(rows, limit))
    }

    async fn usage(
        &self,
        group: UsageGroup,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>> {
        let col = match group {
            UsageGroup::Source => "source",
            UsageGroup::Model => "model",
            UsageGroup::Provider => "provider_id",
        };
        let sql = format!(
            "SELECT {col} AS key, COUNT(*)::int8 AS requests, \
             COALESCE(SUM(prompt_tokens), 0)::int8 AS prompt_tokens, \
             COALESCE(SUM(cached_tokens), 0)::int8 AS cached_tokens, \
             COALESCE(SUM(completion_tokens), 0)::int8 AS completion_tokens \
             FROM requests WHERE ts >= $1 AND ts < $2 GROUP BY {col} \
             ORDER BY (COALESCE(SUM(prompt_tokens), 0) + COALESCE(SUM(completion_tokens), 0)) DESC, \
             requests DESC, key"
        );
        let rows = sqlx::query(&sql)
            .bind(from)
            .bind(to)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(UsageRow {
                    key: r.try_get("key")?,
                    requests: r.try_get("requests")?,
                    prompt_tokens: r.try_get("prompt_tokens")?,
                    cached_tokens: r.try_get("cached_tokens")?,
                    completion_tokens: r.try_get("completion_tokens")?,
                })
            })
            .collect()
    }

    async fn latest_model_states(&self) -> Result<Vec<ModelState>> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (provider_id, model) provider_id, model, state, ts \
             FROM model_events ORDER BY provider_id, model, ts DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ModelState {
                    provider_id: r.try_get("provider_id")?,
                    model: r.try_get("model")?,
                    state: r.try_get("state")?,
                    ts: r.try_get("ts")?,
                })
            })
            .collect()
    }

    async fn last_activity(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let rows = sqlx::query(
            "SELECT provider_id, MAX(ts) AS ts FROM ( \
               SELECT provider_id, MAX(ts) AS ts FROM requests GROUP BY provider_id \
               UNION ALL SELECT provider_id, MAX(ts) AS ts FROM host_activity GROUP BY provider_id) u \
             GROUP BY provider_id ORDER BY provider_id",
        )
        .fetch_all(&self.pool)
        .await?;
        pairs(&rows)
    }

    async fn activity_watermark(&self, provider_id: &str) -> Result<Option<(i64, DateTime<Utc>)>> {
        let r = sqlx::query(
            "SELECT upstream_id, ts FROM host_activity WHERE provider_id = $1 \
             ORDER BY ts DESC, upstream_id DESC LIMIT 1",
        )
        .bind(provider_id)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| Ok((r.try_get("upstream_id")?, r.try_get("ts")?)))
            .transpose()
    }

    async fn latest_perf(&self) -> Result<Vec<PerfSample>> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (provider_id) provider_id, ts, gpu, sys FROM perf_samples \
             ORDER BY provider_id, ts DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(perf_row).collect()
    }

    async fn perf_watermarks(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let rows = sqlx::query(
            "SELECT provider_id, MAX(ts) AS ts FROM perf_samples GROUP BY provider_id ORDER BY provider_id",
        )
        .fetch_all(&self.pool)
        .await?;
        pairs(&rows)
    }

    async fn perf_watermark(&self, provider_id: &str) -> Result<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(ts) FROM perf_samples WHERE provider_id = $1")
                .bind(provider_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn retention_state(&self) -> Result<RetentionState> {
        let oldest_perf = pairs(
            &sqlx::query(
                "SELECT provider_id, MIN(ts) AS ts FROM perf_samples GROUP BY provider_id ORDER BY provider_id",
            )
            .fetch_all(&self.pool)
            .await?,
        )?;
        let newest_rollup = pairs(
            &sqlx::query(
                "SELECT provider_id, MAX(bucket) AS ts FROM perf_rollup_5m GROUP BY provider_id ORDER BY provider_id",
            )
            .fetch_all(&self.pool)
            .await?,
        )?;
        let oldest_request = sqlx::query_scalar("SELECT MIN(ts) FROM requests")
            .fetch_one(&self.pool)
            .await?;
        let oldest_activity = sqlx::query_scalar("SELECT MIN(ts) FROM host_activity")
            .fetch_one(&self.pool)
            .await?;
        let capture_bytes: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(size_bytes), 0)::int8 FROM captures")
                .fetch_one(&self.pool)
                .await?;
        Ok(RetentionState {
            oldest_perf,
            newest_rollup,
            oldest_request,
            oldest_activity,
            capture_bytes,
        })
    }

    async fn perf_samples(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PerfSample>> {
        let rows = sqlx::query(
            "SELECT provider_id, ts, gpu, sys FROM perf_samples \
             WHERE provider_id = $1 AND ts >= $2 AND ts < $3 ORDER BY ts",
        )
        .bind(provider_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(perf_row).collect()
    }

    async fn upsert_rollups(&self, rows: &[PerfRollup]) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut n = 0;
        for c in rows.chunks(CHUNK) {
            n += sqlx::query(
                "INSERT INTO perf_rollup_5m (provider_id, bucket, samples, gpu_agg, sys_agg) \
                 SELECT p, b, n, g::jsonb, s::jsonb FROM UNNEST($1::text[], $2::timestamptz[], \
                 $3::int8[], $4::text[], $5::text[]) AS u(p, b, n, g, s) \
                 ON CONFLICT (provider_id, bucket) DO UPDATE SET samples = excluded.samples, \
                 gpu_agg = excluded.gpu_agg, sys_agg = excluded.sys_agg",
            )
            .bind(c.iter().map(|r| r.provider_id.clone()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.bucket).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.samples).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.gpu_agg.to_string()).collect::<Vec<_>>())
            .bind(c.iter().map(|r| r.sys_agg.to_string()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn rollups(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PerfRollup>> {
        let rows = sqlx::query(
            "SELECT provider_id, bucket, samples, gpu_agg, sys_agg FROM perf_rollup_5m \
             WHERE provider_id = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket",
        )
        .bind(provider_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PerfRollup {
                    provider_id: r.try_get("provider_id")?,
                    bucket: r.try_get("bucket")?,
                    samples: r.try_get("samples")?,
                    gpu_agg: r.try_get("gpu_agg")?,
                    sys_agg: r.try_get("sys_agg")?,
                })
            })
            .collect()
    }

    async fn delete_rolled_up_perf(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "DELETE FROM perf_samples p WHERE p.provider_id = $1 AND p.ts >= $2 AND p.ts < $3 \
             AND EXISTS (SELECT 1 FROM perf_rollup_5m r WHERE r.provider_id = $1 \
               AND r.bucket = to_timestamp(floor(extract(epoch FROM p.ts) / 300) * 300))",
        )
        .bind(provider_id)
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    async fn delete_requests(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM requests WHERE ts >= $1 AND ts < $2")
                .bind(from)
                .bind(to)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn delete_activity(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM host_activity WHERE ts >= $1 AND ts < $2")
                .bind(from)
                .bind(to)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    async fn prune_captures(&self, budget_bytes: i64) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM captures WHERE id IN (SELECT id FROM ( \
               SELECT id, SUM(size_bytes) OVER (ORDER BY ts DESC, id DESC) AS running FROM captures) w \
             WHERE running > $1)",
        )
        .bind(budget_bytes)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    async fn try_retention_lock(&self) -> Result<Option<Box<dyn RetentionLock>>> {
        let mut conn = self.pool.acquire().await?;
        let got: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext(current_schema()))")
                .bind(LOCK_KEY)
                .fetch_one(&mut *conn)
                .await?;
        Ok(got.then(|| Box::new(PgLock { conn: Some(conn) }) as Box<dyn RetentionLock>))
    }

    async fn record_retention_run(
        &self,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        summary: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO retention_runs (started_at, finished_at, summary) VALUES ($1, $2, $3)",
        )
        .bind(started)
        .bind(finished)
        .bind(summary)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn last_retention_run(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(started_at) FROM retention_runs")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
