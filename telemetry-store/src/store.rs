//! The [`Store`] trait and [`open`].

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::error::{Result, StoreError};
use crate::records::*;

/// Settings key holding the favorites list (a JSON array of model ids).
pub const FAVORITES_KEY: &str = "favorite_models";

/// Per-row cap for captures (256 KiB); longer bodies are trimmed and flagged.
pub const CAPTURE_ROW_CAP_BYTES: usize = 256 * 1024;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// Shared Postgres.
    Postgres,
}

/// Held while retention runs; release it when done.
#[async_trait]
pub trait RetentionLock: Send {
    /// Release the lock (also released when the holder's connection closes).
    async fn release(self: Box<Self>) -> Result<()>;
}

/// What the retention planner needs to know about the data (see [`crate::retention`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionState {
    /// Oldest raw perf sample per provider.
    pub oldest_perf: Vec<(String, DateTime<Utc>)>,
    /// Newest committed rollup bucket per provider.
    pub newest_rollup: Vec<(String, DateTime<Utc>)>,
    /// Oldest gateway request.
    pub oldest_request: Option<DateTime<Utc>>,
    /// Oldest host activity row.
    pub oldest_activity: Option<DateTime<Utc>>,
    /// Total size of stored captures in bytes.
    pub capture_bytes: i64,
}

/// Everything boocontrol stores. Both adapters implement it; callers hold an `Arc<dyn Store>`.
///
/// All inserts are idempotent (`ON CONFLICT DO NOTHING`) and return the number of rows
/// actually inserted.
#[async_trait]
pub trait Store: crate::PolicyStore + crate::BenchStore + Send + Sync + 'static {
    /// Which database this is.
    fn backend(&self) -> Backend;

    /// The batch writer says whether records are piling up (`true`) or it keeps up again
    /// (`false`). A store may give its writes more CPU while backlogged (SQLite: see
    /// [`crate::sqlite::WRITER_IDLE_ENV`]). Cheap; called only when the state changes.
    fn writes_backlogged(&self, _backlogged: bool) {}

    /// Insert gateway-observed requests (duplicate `request_id`s are ignored).
    async fn insert_requests(&self, rows: &[RequestRecord]) -> Result<u64>;
    /// Insert host activity rows (duplicate `(provider_id, upstream_id, ts)` ignored).
    async fn insert_activity(&self, rows: &[HostActivity]) -> Result<u64>;
    /// Insert raw perf samples (duplicate `(provider_id, ts)` ignored).
    async fn insert_perf(&self, rows: &[PerfSample]) -> Result<u64>;
    /// Insert model events (duplicate `(provider_id, model, state, ts)` ignored).
    async fn insert_model_events(&self, rows: &[ModelEvent]) -> Result<u64>;

    /// Insert or update one host's metadata.
    async fn upsert_host(&self, host: &HostRow) -> Result<()>;
    /// All hosts, ordered by provider id.
    async fn hosts(&self) -> Result<Vec<HostRow>>;

    /// One setting, if present.
    async fn setting(&self, key: &str) -> Result<Option<serde_json::Value>>;
    /// All settings.
    async fn settings(&self) -> Result<BTreeMap<String, serde_json::Value>>;
    /// Apply a patch in one transaction: each key is upserted, a JSON `null` deletes it.
    /// Keys not in the patch are untouched.
    async fn patch_settings(&self, patch: &BTreeMap<String, serde_json::Value>) -> Result<()>;

    /// Store a capture; bodies over `row_cap_bytes` are trimmed (at a char boundary) and flagged.
    async fn insert_capture(&self, capture: &NewCapture, row_cap_bytes: usize) -> Result<i64>;
    /// One capture by id.
    async fn capture(&self, id: i64) -> Result<Option<Capture>>;
    /// Captures for a request, oldest first.
    async fn captures_for_request(&self, request_id: &str) -> Result<Vec<Capture>>;

    /// Activity feed, newest first, unifying `requests` and `host_activity` (see crate docs).
    /// `limit` is clamped to 1..=1000.
    async fn feed(
        &self,
        filter: &FeedFilter,
        cursor: Option<&FeedCursor>,
        limit: u32,
    ) -> Result<FeedPage>;
    /// Token aggregates over gateway-observed requests with `from <= ts < to`, largest first.
    async fn usage(
        &self,
        group: UsageGroup,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<UsageRow>>;
    /// Latest state per `(provider, model)` from `model_events`.
    async fn latest_model_states(&self) -> Result<Vec<ModelState>>;
    /// Newest activity time per provider over `requests` and `host_activity`.
    async fn last_activity(&self) -> Result<Vec<(String, DateTime<Utc>)>>;
    /// Newest reconciled host activity row of one provider as `(upstream_id, ts)`, for gap
    /// detection on reconnect (`None` when nothing was ingested yet).
    async fn activity_watermark(&self, provider_id: &str) -> Result<Option<(i64, DateTime<Utc>)>>;
    /// Latest perf sample per provider.
    async fn latest_perf(&self) -> Result<Vec<PerfSample>>;
    /// Perf watermark: `MAX(ts)` of raw samples per provider.
    async fn perf_watermarks(&self) -> Result<Vec<(String, DateTime<Utc>)>>;
    /// Perf watermark for one provider (`None` on a fresh install: omit `after`).
    async fn perf_watermark(&self, provider_id: &str) -> Result<Option<DateTime<Utc>>>;

    // ----- retention primitives (used by crate::retention) -----

    /// Facts the retention planner needs.
    async fn retention_state(&self) -> Result<RetentionState>;
    /// Raw perf samples of one provider with `from <= ts < to`, oldest first.
    async fn perf_samples(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PerfSample>>;
    /// Upsert rollups in one transaction (`ON CONFLICT (provider_id, bucket) DO UPDATE`).
    async fn upsert_rollups(&self, rows: &[PerfRollup]) -> Result<u64>;
    /// Rollups of one provider with `from <= bucket < to`, oldest first.
    async fn rollups(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PerfRollup>>;
    /// Delete raw samples of one provider in `[from, to)` whose 5-minute bucket exists in
    /// `perf_rollup_5m`, in one transaction. Samples without a committed bucket survive.
    async fn delete_rolled_up_perf(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64>;
    /// Delete gateway requests with `from <= ts < to` (one transaction).
    async fn delete_requests(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64>;
    /// Delete host activity with `from <= ts < to` (one transaction).
    async fn delete_activity(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64>;
    /// Delete the oldest captures until the total stored size is at most `budget_bytes`.
    async fn prune_captures(&self, budget_bytes: i64) -> Result<u64>;
    /// Try to become the (only) retention runner. `None` when another runner holds the lock.
    async fn try_retention_lock(&self) -> Result<Option<Box<dyn RetentionLock>>>;
    /// Record a finished retention run.
    async fn record_retention_run(
        &self,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        summary: &str,
    ) -> Result<()>;
    /// Start time of the newest recorded retention run.
    async fn last_retention_run(&self) -> Result<Option<DateTime<Utc>>>;

    /// Close the pool (waits for in-flight queries).
    async fn close(&self);

    // ----- conveniences with default bodies -----

    /// Favorites as stored (possibly including currently unavailable models).
    async fn favorites(&self) -> Result<Vec<String>> {
        match self.setting(FAVORITES_KEY).await? {
            None => Ok(Vec::new()),
            Some(v) => serde_json::from_value(v).map_err(|e| StoreError::Invalid {
                field: "settings.favorite_models",
                problem: format!("expected an array of strings: {e}"),
            }),
        }
    }
    /// Replace the favorites list (other settings untouched).
    async fn set_favorites(&self, favorites: &[String]) -> Result<()> {
        let mut patch = BTreeMap::new();
        patch.insert(FAVORITES_KEY.to_string(), serde_json::json!(favorites));
        self.patch_settings(&patch).await
    }
    /// Append one favorite if not present; returns the new list.
    async fn add_favorite(&self, model: &str) -> Result<Vec<String>> {
        let mut favs = self.favorites().await?;
        if !favs.iter().any(|f| f == model) {
            favs.push(model.to_string());
            self.set_favorites(&favs).await?;
        }
        Ok(favs)
    }
    /// Remove one favorite (explicit removal is the only way a favorite goes away);
    /// returns the new list.
    async fn remove_favorite(&self, model: &str) -> Result<Vec<String>> {
        let mut favs = self.favorites().await?;
        let before = favs.len();
        favs.retain(|f| f != model);
        if favs.len() != before {
            self.set_favorites(&favs).await?;
        }
        Ok(favs)
    }
}

/// Open a store by URL: `sqlite://path` (created if missing, WAL) or
/// `postgres://...` / `postgresql://...`. Migrations are applied before returning.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "sqlite" => Ok(Arc::new(crate::sqlite::SqliteStore::open(url).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(crate::postgres::PgStore::open(url).await?)),
        other => Err(StoreError::UnsupportedScheme {
            scheme: other.chars().take(32).collect(),
        }),
    }
}

/// Default store URL: an embedded SQLite file in the working directory.
pub const DEFAULT_STORE_URL: &str = "sqlite://boocontrol.db";

/// Environment variable naming the store URL.
pub const STORE_ENV: &str = "BOOCONTROL_STORE";

/// The store URL to use: the `--store` flag if given, else `BOOCONTROL_STORE`, else
/// [`DEFAULT_STORE_URL`]. Empty values count as unset.
pub fn store_url(flag: Option<&str>, get: &dyn Fn(&str) -> Option<String>) -> String {
    flag.filter(|s| !s.trim().is_empty())
        .map(str::to_string)
        .or_else(|| get(STORE_ENV).filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| DEFAULT_STORE_URL.to_string())
}

/// Gateway requests with a status at or above this are indexed by status
/// (`idx_requests_error_ts`); a feed filter on a lower status walks the time index.
pub(crate) const ERROR_STATUS_MIN: u16 = 400;

/// Clamp a feed page size to 1..=1000.
pub(crate) fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 1000))
}

/// Trim `body` to at most `cap` bytes at a char boundary. Returns (body, truncated).
pub(crate) fn trim_capture(body: &str, cap: usize) -> (&str, bool) {
    if body.len() <= cap {
        return (body, false);
    }
    let mut end = cap;
    while end > 0 && !body.is_char_boundary(end) {
        end -= 1;
    }
    (&body[..end], true)
}

/// 5-minute bucket start for `ts`.
pub fn bucket_5m(ts: DateTime<Utc>) -> DateTime<Utc> {
    let us = ts.timestamp_micros();
    let b = us - us.rem_euclid(300_000_000);
    DateTime::from_timestamp_micros(b).unwrap_or(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_url_prefers_flag_then_env_then_default() {
        let env = |k: &str| (k == STORE_ENV).then(|| "postgres://db/x".to_string());
        let none = |_: &str| None;
        let empty = |_: &str| Some(String::new());
        assert_eq!(store_url(Some("sqlite://a.db"), &env), "sqlite://a.db");
        assert_eq!(store_url(None, &env), "postgres://db/x");
        assert_eq!(store_url(Some(""), &none), DEFAULT_STORE_URL);
        assert_eq!(store_url(None, &empty), DEFAULT_STORE_URL);
    }

    #[test]
    fn capture_trim_respects_char_boundaries() {
        assert_eq!(trim_capture("héllo", 2), ("h", true));
        assert_eq!(trim_capture("héllo", 3), ("hé", true));
        assert_eq!(trim_capture("héllo", 6), ("héllo", false));
    }
}
