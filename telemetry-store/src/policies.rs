//! Route policies (`route_policies`) and the `auto:*` dispatch log read back from `requests`.
//!
//! The gateway keeps routing policies that were set through its API here, so they survive a
//! restart (config-file policies stay in the config file). A policy is stored as the JSON
//! document the API accepted; this crate does not interpret it (the routing crate does).
//!
//! The dispatch log is not a separate table: every `auto:*` request's telemetry record
//! already carries its decision and failover report in `requests.route`;
//! [`PolicyStore::route_log`] reads those rows back, newest first (a partial index on
//! `route IS NOT NULL` keeps that cheap).
//!
//! ```
//! use boo_telemetry_store::{PolicyStore, open};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), boo_telemetry_store::StoreError> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = open(&format!("sqlite://{}/boo.db", dir.path().display())).await?;
//! let doc = serde_json::json!({"name": "auto:code", "candidates": ["tag:code"]});
//! store.put_route_policy("auto:code", &doc).await?;
//! assert_eq!(store.route_policies().await?[0].policy, doc);
//! assert!(store.delete_route_policy("auto:code").await?);
//! # Ok(()) }
//! ```

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::error::{Result, StoreError};
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;

/// Longest accepted policy name (bytes).
pub const MAX_POLICY_NAME: usize = 128;

/// One stored routing policy (a row of `route_policies`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRow {
    /// Policy name, i.e. the virtual model (`auto:code`).
    pub name: String,
    /// The policy document as accepted by the API.
    pub policy: serde_json::Value,
    /// When it was last written.
    pub updated_at: DateTime<Utc>,
}

/// One `auto:*` dispatch read back from `requests` (newest first in [`PolicyStore::route_log`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteLogRow {
    /// Gateway request id.
    pub request_id: String,
    /// When the request started.
    pub ts: DateTime<Utc>,
    /// The virtual model asked for (the policy name).
    pub policy: String,
    /// Provider that served (or last tried) the request.
    pub provider_id: String,
    /// HTTP status the client got.
    pub status: u16,
    /// `{"decision": …, "failover": …}` as recorded.
    pub route: serde_json::Value,
}

/// Measured speed of one model on one host (for the `fastest` routing order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedRow {
    /// Provider (host) id.
    pub provider_id: String,
    /// Wire model id on that host.
    pub model: String,
    /// Mean generation speed over the window, tokens/s (positive samples only).
    pub gen_tps: Option<f64>,
    /// Mean prompt processing speed over the window, tokens/s (positive samples only).
    pub prompt_tps: Option<f64>,
    /// Samples (gateway requests plus reconciled host activity rows).
    pub samples: i64,
}

/// Storage of routing policies and the dispatch log. A supertrait of [`crate::Store`].
#[async_trait]
pub trait PolicyStore: Send + Sync {
    /// Every stored policy, ordered by name.
    async fn route_policies(&self) -> Result<Vec<PolicyRow>>;
    /// Inserts or replaces the policy `name`.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] for an empty or over-long name or a document that is not a
    /// JSON object.
    async fn put_route_policy(&self, name: &str, policy: &serde_json::Value) -> Result<()>;
    /// Deletes the policy `name`; `false` when none was stored.
    async fn delete_route_policy(&self, name: &str) -> Result<bool>;
    /// Recent `auto:*` dispatches (requests with a recorded route), newest first; one policy
    /// or all. `limit` is clamped to 1..=1000.
    async fn route_log(&self, policy: Option<&str>, limit: u32) -> Result<Vec<RouteLogRow>>;
    /// Mean measured speeds per (provider, wire model) since `since`, from successful gateway
    /// requests and reconciled host activity, ordered by provider and model.
    async fn model_speeds(&self, since: DateTime<Utc>) -> Result<Vec<SpeedRow>>;
}

/// The speed samples (one row per request or activity row with a positive speed) since
/// `{p1}`/`{p2}`, the backend's bind placeholders (`?` or `$1`).
fn speed_samples_sql(p1: &str, p2: &str) -> String {
    format!(
        "SELECT provider_id, wire_model AS model, gen_tps, prompt_tps FROM requests \
         WHERE ts >= {p1} AND wire_model IS NOT NULL AND status < 400 \
           AND (gen_tps > 0 OR prompt_tps > 0) \
         UNION ALL \
         SELECT provider_id, model, gen_tps, prompt_tps FROM host_activity \
         WHERE ts >= {p2} AND (gen_tps > 0 OR prompt_tps > 0)"
    )
}

/// The speed query: the samples averaged per provider and model (Postgres; SQLite aggregates
/// [`speed_samples_sql`] itself, see its `model_speeds`).
fn speeds_sql(p1: &str, p2: &str) -> String {
    format!(
        "SELECT provider_id, model, \
           AVG(CASE WHEN gen_tps > 0 THEN gen_tps END) AS gen_tps, \
           AVG(CASE WHEN prompt_tps > 0 THEN prompt_tps END) AS prompt_tps, \
           COUNT(*) AS samples FROM ({}) AS s \
         GROUP BY provider_id, model ORDER BY provider_id, model",
        speed_samples_sql(p1, p2)
    )
}

/// Running means of one model's speed samples (what [`speeds_sql`] computes in SQL).
#[derive(Default)]
struct SpeedAcc {
    gen_sum: f64,
    gen_n: u64,
    prompt_sum: f64,
    prompt_n: u64,
    samples: i64,
}

impl SpeedAcc {
    fn add(&mut self, gen_tps: Option<f64>, prompt_tps: Option<f64>) {
        self.samples += 1;
        if let Some(g) = gen_tps.filter(|g| *g > 0.0) {
            self.gen_sum += g;
            self.gen_n += 1;
        }
        if let Some(p) = prompt_tps.filter(|p| *p > 0.0) {
            self.prompt_sum += p;
            self.prompt_n += 1;
        }
    }

    fn row(&self, provider_id: String, model: String) -> SpeedRow {
        SpeedRow {
            provider_id,
            model,
            gen_tps: (self.gen_n > 0).then(|| self.gen_sum / self.gen_n as f64),
            prompt_tps: (self.prompt_n > 0).then(|| self.prompt_sum / self.prompt_n as f64),
            samples: self.samples,
        }
    }
}

fn speed_row<R: Row>(r: &R) -> Result<SpeedRow>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<f64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SpeedRow {
        provider_id: r.try_get("provider_id")?,
        model: r.try_get("model")?,
        gen_tps: r.try_get("gen_tps")?,
        prompt_tps: r.try_get("prompt_tps")?,
        samples: r.try_get("samples")?,
    })
}

fn check(name: &str, policy: &serde_json::Value) -> Result<()> {
    if name.is_empty() || name.len() > MAX_POLICY_NAME {
        return Err(StoreError::Invalid {
            field: "route_policies.name",
            problem: format!("must be 1-{MAX_POLICY_NAME} bytes, got {}", name.len()),
        });
    }
    if !policy.is_object() {
        return Err(StoreError::Invalid {
            field: "route_policies.policy",
            problem: "expected a JSON object".into(),
        });
    }
    Ok(())
}

fn status_u16(v: i64) -> u16 {
    u16::try_from(v).unwrap_or(0)
}

#[async_trait]
impl PolicyStore for SqliteStore {
    async fn route_policies(&self) -> Result<Vec<PolicyRow>> {
        let rows = sqlx::query("SELECT name, policy, updated_at FROM route_policies ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("policy")?;
                Ok(PolicyRow {
                    name: r.try_get("name")?,
                    policy: serde_json::from_str(&text)?,
                    updated_at: DateTime::from_timestamp_micros(r.try_get("updated_at")?)
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn put_route_policy(&self, name: &str, policy: &serde_json::Value) -> Result<()> {
        check(name, policy)?;
        sqlx::query(
            "INSERT INTO route_policies (name, policy, updated_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(policy.to_string())
        .bind(Utc::now().timestamp_micros())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn delete_route_policy(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM route_policies WHERE name = ?")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn route_log(&self, policy: Option<&str>, limit: u32) -> Result<Vec<RouteLogRow>> {
        let limit = i64::from(limit.clamp(1, 1000));
        let rows = match policy {
            Some(p) => {
                sqlx::query(
                    "SELECT request_id, ts, model, provider_id, status, route FROM requests \
                 WHERE route IS NOT NULL AND model = ? ORDER BY ts DESC, request_id DESC LIMIT ?",
                )
                .bind(p)
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT request_id, ts, model, provider_id, status, route FROM requests \
                 WHERE route IS NOT NULL ORDER BY ts DESC, request_id DESC LIMIT ?",
                )
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                let text: String = r.try_get("route")?;
                Ok(RouteLogRow {
                    request_id: r.try_get("request_id")?,
                    ts: DateTime::from_timestamp_micros(r.try_get("ts")?).unwrap_or_default(),
                    policy: r.try_get("model")?,
                    provider_id: r.try_get("provider_id")?,
                    status: status_u16(r.try_get("status")?),
                    route: serde_json::from_str(&text)?,
                })
            })
            .collect()
    }

    async fn model_speeds(&self, since: DateTime<Utc>) -> Result<Vec<SpeedRow>> {
        use futures::TryStreamExt;
        // Aggregated while the rows stream by, not with GROUP BY: SQLite sorts every row of
        // the window for a GROUP BY over a UNION (in memory, `temp_store=MEMORY`), so the
        // gateway's memory grew with its traffic on each periodic reload. Here it holds one
        // accumulator per model.
        let t = since.timestamp_micros();
        let mut acc: HashMap<String, HashMap<String, SpeedAcc>> = HashMap::new();
        let sql = speed_samples_sql("?", "?");
        let mut rows = sqlx::query(&sql).bind(t).bind(t).fetch(self.pool());
        while let Some(r) = rows.try_next().await? {
            let provider: &str = r.try_get(0)?;
            let model: &str = r.try_get(1)?;
            let by_model = match acc.get_mut(provider) {
                Some(m) => m,
                None => acc.entry(provider.to_owned()).or_default(),
            };
            let a = match by_model.get_mut(model) {
                Some(a) => a,
                None => by_model.entry(model.to_owned()).or_default(),
            };
            a.add(r.try_get(2)?, r.try_get(3)?);
        }
        let mut out: Vec<SpeedRow> = acc
            .into_iter()
            .flat_map(|(provider_id, models)| {
                models
                    .into_iter()
                    .map(move |(model, a)| a.row(provider_id.clone(), model))
            })
            .collect();
        out.sort_by(|a, b| (&a.provider_id, &a.model).cmp(&(&b.provider_id, &b.model)));
        Ok(out)
    }
}

#[async_trait]
impl PolicyStore for PgStore {
    async fn route_policies(&self) -> Result<Vec<PolicyRow>> {
        let rows = sqlx::query("SELECT name, policy, updated_at FROM route_policies ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(PolicyRow {
                    name: r.try_get("name")?,
                    policy: r.try_get("policy")?,
                    updated_at: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn put_route_policy(&self, name: &str, policy: &serde_json::Value) -> Result<()> {
        check(name, policy)?;
        sqlx::query(
            "INSERT INTO route_policies (name, policy, updated_at) VALUES ($1, $2, clock_timestamp()) \
             ON CONFLICT (name) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at",
        )
        .bind(name)
        .bind(policy)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn delete_route_policy(&self, name: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM route_policies WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(r.rows_affected() > 0)
    }

    async fn route_log(&self, policy: Option<&str>, limit: u32) -> Result<Vec<RouteLogRow>> {
        let limit = i64::from(limit.clamp(1, 1000));
        // Two statements so each can use its index (model_ts, or the partial route index).
        let rows = match policy {
            Some(p) => {
                sqlx::query(
                    "SELECT request_id, ts, model, provider_id, status, route FROM requests \
                 WHERE route IS NOT NULL AND model = $1 ORDER BY ts DESC, request_id DESC LIMIT $2",
                )
                .bind(p)
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT request_id, ts, model, provider_id, status, route FROM requests \
                 WHERE route IS NOT NULL ORDER BY ts DESC, request_id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                let status: i32 = r.try_get("status")?;
                Ok(RouteLogRow {
                    request_id: r.try_get("request_id")?,
                    ts: r.try_get("ts")?,
                    policy: r.try_get("model")?,
                    provider_id: r.try_get("provider_id")?,
                    status: status_u16(i64::from(status)),
                    route: r.try_get("route")?,
                })
            })
            .collect()
    }

    async fn model_speeds(&self, since: DateTime<Utc>) -> Result<Vec<SpeedRow>> {
        let rows = sqlx::query(&speeds_sql("$1", "$1"))
            .bind(since)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(speed_row).collect()
    }
}
