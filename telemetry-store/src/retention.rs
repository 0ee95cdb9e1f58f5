//! Retention: a pure planner ([`plan`]) and an executor ([`execute`], [`run_retention`],
//! [`spawn_retention`]).
//!
//! Rules (seed P1.7): perf samples are rolled up into 5-minute buckets by an idempotent upsert
//! recomputed from raw; raw samples older than `perf_raw_keep` are deleted only after their
//! bucket is committed, one transaction per provider per `chunk` window; requests and host
//! activity older than 90 days are pruned in `chunk` windows; captures are capped per row at
//! insert time and pruned oldest first down to a total budget.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use crate::error::{Result, StoreError};
use crate::records::{PerfRollup, PerfSample};
use crate::store::{CAPTURE_ROW_CAP_BYTES, RetentionState, Store, bucket_5m};

const DAY: Duration = Duration::from_secs(86_400);
const FIVE_MIN_US: i64 = 300_000_000;

/// Retention windows. Every field is configurable (see [`RetentionPolicy::from_env`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Raw perf samples older than this are rolled up and deleted (default 7 days).
    pub perf_raw_keep: Duration,
    /// Gateway requests older than this are deleted (default 90 days).
    pub requests_keep: Duration,
    /// Host activity rows older than this are deleted (default 90 days).
    pub activity_keep: Duration,
    /// Per-row capture cap in bytes (default 256 KiB), applied before insert.
    pub capture_row_cap_bytes: usize,
    /// Total capture budget in bytes (default 50 MiB).
    pub capture_budget_bytes: i64,
    /// Delete window: one transaction per provider per window (default 1 hour; a multiple of
    /// 5 minutes).
    pub chunk: Duration,
    /// How often the in-process timer runs retention (default 24 hours).
    pub interval: Duration,
    /// Most windows planned per category in one run; the rest waits for the next run
    /// (default 10 000).
    pub max_windows: usize,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            perf_raw_keep: 7 * DAY,
            requests_keep: 90 * DAY,
            activity_keep: 90 * DAY,
            capture_row_cap_bytes: CAPTURE_ROW_CAP_BYTES,
            capture_budget_bytes: 50 * 1024 * 1024,
            chunk: Duration::from_secs(3600),
            interval: DAY,
            max_windows: 10_000,
        }
    }
}

fn parse_num(get: &dyn Fn(&str) -> Option<String>, name: &'static str) -> Result<Option<u64>> {
    match get(name) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| StoreError::Invalid {
                field: name,
                problem: format!("expected a non-negative integer, got {v:?}"),
            }),
    }
}

impl RetentionPolicy {
    /// Defaults overridden by variables: `CAPTURE_BUDGET_MB`, `CAPTURE_ROW_CAP_KB`,
    /// `RETENTION_PERF_RAW_DAYS`, `RETENTION_REQUESTS_DAYS`, `RETENTION_ACTIVITY_DAYS`,
    /// `RETENTION_CHUNK_MINUTES`, `RETENTION_INTERVAL_HOURS`. `get` is usually
    /// `|k| std::env::var(k).ok()`.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let mut p = Self::default();
        if let Some(mb) = parse_num(get, "CAPTURE_BUDGET_MB")? {
            p.capture_budget_bytes =
                i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX);
        }
        if let Some(kb) = parse_num(get, "CAPTURE_ROW_CAP_KB")? {
            p.capture_row_cap_bytes =
                usize::try_from(kb.saturating_mul(1024)).unwrap_or(usize::MAX);
        }
        if let Some(d) = parse_num(get, "RETENTION_PERF_RAW_DAYS")? {
            p.perf_raw_keep = DAY * u32::try_from(d).unwrap_or(u32::MAX);
        }
        if let Some(d) = parse_num(get, "RETENTION_REQUESTS_DAYS")? {
            p.requests_keep = DAY * u32::try_from(d).unwrap_or(u32::MAX);
        }
        if let Some(d) = parse_num(get, "RETENTION_ACTIVITY_DAYS")? {
            p.activity_keep = DAY * u32::try_from(d).unwrap_or(u32::MAX);
        }
        if let Some(m) = parse_num(get, "RETENTION_CHUNK_MINUTES")? {
            p.chunk = Duration::from_secs(m.saturating_mul(60));
        }
        if let Some(h) = parse_num(get, "RETENTION_INTERVAL_HOURS")? {
            p.interval = Duration::from_secs(h.saturating_mul(3600));
        }
        p.validate()?;
        Ok(p)
    }

    /// Check the invariants the planner relies on.
    pub fn validate(&self) -> Result<()> {
        let chunk = self.chunk.as_secs();
        if chunk == 0 || !chunk.is_multiple_of(300) || self.chunk.subsec_nanos() != 0 {
            return Err(StoreError::Invalid {
                field: "retention.chunk",
                problem: "must be a positive multiple of 5 minutes".into(),
            });
        }
        if self.interval.is_zero() {
            return Err(StoreError::Invalid {
                field: "retention.interval",
                problem: "must be positive".into(),
            });
        }
        if self.capture_budget_bytes < 0 {
            return Err(StoreError::Invalid {
                field: "retention.capture_budget_bytes",
                problem: "must not be negative".into(),
            });
        }
        Ok(())
    }
}

/// One unit of retention work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkItem {
    /// Recompute the 5-minute rollups of `[from, to)` from raw (raw rows are kept).
    Rollup {
        /// Provider id.
        provider_id: String,
        /// Window start (inclusive).
        from: DateTime<Utc>,
        /// Window end (exclusive).
        to: DateTime<Utc>,
    },
    /// Recompute and commit the rollups of `[from, to)`, then delete the covered raw rows.
    RollupAndPrune {
        /// Provider id.
        provider_id: String,
        /// Window start (inclusive).
        from: DateTime<Utc>,
        /// Window end (exclusive).
        to: DateTime<Utc>,
    },
    /// Delete gateway requests in `[from, to)`.
    PruneRequests {
        /// Window start (inclusive).
        from: DateTime<Utc>,
        /// Window end (exclusive).
        to: DateTime<Utc>,
    },
    /// Delete host activity in `[from, to)`.
    PruneActivity {
        /// Window start (inclusive).
        from: DateTime<Utc>,
        /// Window end (exclusive).
        to: DateTime<Utc>,
    },
    /// Delete the oldest captures until the total is within budget.
    PruneCaptures {
        /// Stored capture bytes when planned.
        current_bytes: i64,
        /// Budget in bytes.
        budget_bytes: i64,
    },
}

/// What retention would do, in execution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPlan {
    /// Planning time.
    pub now: DateTime<Utc>,
    /// Work, in order.
    pub items: Vec<WorkItem>,
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl fmt::Display for WorkItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkItem::Rollup {
                provider_id,
                from,
                to,
            } => write!(f, "rollup perf {provider_id} [{}, {})", ts(*from), ts(*to)),
            WorkItem::RollupAndPrune {
                provider_id,
                from,
                to,
            } => write!(
                f,
                "rollup + delete raw perf {provider_id} [{}, {})",
                ts(*from),
                ts(*to)
            ),
            WorkItem::PruneRequests { from, to } => {
                write!(f, "delete requests [{}, {})", ts(*from), ts(*to))
            }
            WorkItem::PruneActivity { from, to } => {
                write!(f, "delete host activity [{}, {})", ts(*from), ts(*to))
            }
            WorkItem::PruneCaptures {
                current_bytes,
                budget_bytes,
            } => write!(
                f,
                "prune captures oldest first: {current_bytes} bytes stored, budget {budget_bytes}"
            ),
        }
    }
}

impl fmt::Display for RetentionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "retention plan at {}: {} item(s)",
            ts(self.now),
            self.items.len()
        )?;
        for item in &self.items {
            writeln!(f, "  {item}")?;
        }
        Ok(())
    }
}

fn floor_to(t: DateTime<Utc>, step: Duration) -> DateTime<Utc> {
    let step_us = i64::try_from(step.as_micros()).unwrap_or(i64::MAX).max(1);
    let us = t.timestamp_micros();
    DateTime::from_timestamp_micros(us - us.rem_euclid(step_us)).unwrap_or(t)
}

fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| t.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Windows `[start, end)` of `chunk`, aligned to `chunk`, covering `[from, until)`; the last
/// one is cut at `until`. At most `max` windows.
fn windows(
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    chunk: Duration,
    max: usize,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut out = Vec::new();
    let mut start = floor_to(from, chunk);
    while start < until && out.len() < max {
        let end = add(start, chunk).min(until);
        out.push((start, end));
        start = end;
    }
    out
}

/// The pure planner: what retention should do at `now` given `policy` and the data's
/// watermarks. Same inputs, same plan.
pub fn plan(now: DateTime<Utc>, policy: &RetentionPolicy, state: &RetentionState) -> RetentionPlan {
    let mut items = Vec::new();
    let max = policy.max_windows.max(1);
    // Perf: windows entirely older than the raw cutoff are rolled up and pruned; newer
    // complete buckets are rolled up only, starting near the newest committed bucket.
    let prune_until = floor_to(sub(now, policy.perf_raw_keep), policy.chunk);
    let rollup_until = bucket_5m(now);
    for (provider, oldest) in &state.oldest_perf {
        for (from, to) in windows(*oldest, prune_until, policy.chunk, max) {
            items.push(WorkItem::RollupAndPrune {
                provider_id: provider.clone(),
                from,
                to,
            });
        }
        let newest = state
            .newest_rollup
            .iter()
            .find(|(p, _)| p == provider)
            .map(|(_, b)| *b);
        let mut start = (*oldest).max(prune_until);
        if let Some(b) = newest {
            start = start.max(b);
        }
        for (from, to) in windows(start, rollup_until, policy.chunk, max) {
            items.push(WorkItem::Rollup {
                provider_id: provider.clone(),
                from,
                to,
            });
        }
    }
    if let Some(oldest) = state.oldest_request {
        let cutoff = sub(now, policy.requests_keep);
        for (from, to) in windows(oldest, cutoff, policy.chunk, max) {
            items.push(WorkItem::PruneRequests { from, to });
        }
    }
    if let Some(oldest) = state.oldest_activity {
        let cutoff = sub(now, policy.activity_keep);
        for (from, to) in windows(oldest, cutoff, policy.chunk, max) {
            items.push(WorkItem::PruneActivity { from, to });
        }
    }
    if state.capture_bytes > policy.capture_budget_bytes {
        items.push(WorkItem::PruneCaptures {
            current_bytes: state.capture_bytes,
            budget_bytes: policy.capture_budget_bytes,
        });
    }
    RetentionPlan { now, items }
}

/// Flatten numeric leaves of a JSON value into `path -> number` (`"0.temp_c"`, `"mem_used_mb"`).
fn numeric_leaves(prefix: &str, v: &Value, out: &mut BTreeMap<String, f64>) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_string(), x);
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                numeric_leaves(&p, v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let p = if prefix.is_empty() {
                    i.to_string()
                } else {
                    format!("{prefix}.{i}")
                };
                numeric_leaves(&p, v, out);
            }
        }
        _ => {}
    }
}

fn aggregate<'a>(values: impl Iterator<Item = &'a Value>) -> Value {
    // path -> (min, max, sum, count)
    let mut acc: BTreeMap<String, (f64, f64, f64, u64)> = BTreeMap::new();
    for v in values {
        let mut leaves = BTreeMap::new();
        numeric_leaves("", v, &mut leaves);
        for (k, x) in leaves {
            let e = acc.entry(k).or_insert((x, x, 0.0, 0));
            e.0 = e.0.min(x);
            e.1 = e.1.max(x);
            e.2 += x;
            e.3 += 1;
        }
    }
    let mut m = Map::new();
    for (k, (min, max, sum, n)) in acc {
        m.insert(k, json!({"min": min, "max": max, "avg": sum / n as f64}));
    }
    Value::Object(m)
}

/// Compute 5-minute rollups from raw samples (pure; samples of any providers, any order).
/// Each numeric field becomes `{"min","max","avg"}` keyed by its path.
pub fn compute_rollups(samples: &[PerfSample]) -> Vec<PerfRollup> {
    let mut groups: BTreeMap<(String, i64), Vec<&PerfSample>> = BTreeMap::new();
    for s in samples {
        let b = s.ts.timestamp_micros();
        let b = b - b.rem_euclid(FIVE_MIN_US);
        groups
            .entry((s.provider_id.clone(), b))
            .or_default()
            .push(s);
    }
    groups
        .into_iter()
        .map(|((provider_id, b), mut v)| {
            v.sort_by_key(|s| s.ts);
            PerfRollup {
                provider_id,
                bucket: DateTime::from_timestamp_micros(b).unwrap_or_default(),
                samples: v.len() as i64,
                gpu_agg: aggregate(v.iter().map(|s| &s.gpu)),
                sys_agg: aggregate(v.iter().map(|s| &s.sys)),
            }
        })
        .collect()
}

/// What an execution did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Rollup rows upserted.
    pub rollups_upserted: u64,
    /// Raw perf rows deleted.
    pub perf_deleted: u64,
    /// Request rows deleted.
    pub requests_deleted: u64,
    /// Activity rows deleted.
    pub activity_deleted: u64,
    /// Capture rows deleted.
    pub captures_deleted: u64,
}

impl fmt::Display for RetentionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rollups upserted {}, raw perf deleted {}, requests deleted {}, activity deleted {}, captures deleted {}",
            self.rollups_upserted,
            self.perf_deleted,
            self.requests_deleted,
            self.activity_deleted,
            self.captures_deleted
        )
    }
}

async fn rollup_window(
    store: &dyn Store,
    provider_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<u64> {
    let samples = store.perf_samples(provider_id, from, to).await?;
    let rollups = compute_rollups(&samples);
    store.upsert_rollups(&rollups).await
}

/// Execute a plan item by item. Each item is its own transaction(s); a failure stops the run
/// and what was done stays done (every step is idempotent, the next run continues).
pub async fn execute(store: &dyn Store, plan: &RetentionPlan) -> Result<RetentionReport> {
    let mut r = RetentionReport::default();
    for item in &plan.items {
        match item {
            WorkItem::Rollup {
                provider_id,
                from,
                to,
            } => {
                r.rollups_upserted += rollup_window(store, provider_id, *from, *to).await?;
            }
            WorkItem::RollupAndPrune {
                provider_id,
                from,
                to,
            } => {
                // The upsert commits before the delete starts; the delete itself only removes
                // raw rows whose bucket row exists.
                r.rollups_upserted += rollup_window(store, provider_id, *from, *to).await?;
                r.perf_deleted += store.delete_rolled_up_perf(provider_id, *from, *to).await?;
            }
            WorkItem::PruneRequests { from, to } => {
                r.requests_deleted += store.delete_requests(*from, *to).await?;
            }
            WorkItem::PruneActivity { from, to } => {
                r.activity_deleted += store.delete_activity(*from, *to).await?;
            }
            WorkItem::PruneCaptures { budget_bytes, .. } => {
                r.captures_deleted += store.prune_captures(*budget_bytes).await?;
            }
        }
    }
    Ok(r)
}

/// Result of [`run_retention`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionOutcome {
    /// Dry run: the plan, nothing changed.
    DryRun(RetentionPlan),
    /// The plan was executed.
    Ran {
        /// What was planned.
        plan: RetentionPlan,
        /// What was done.
        report: RetentionReport,
    },
    /// Another runner holds the retention lock; nothing was done.
    Locked,
}

impl fmt::Display for RetentionOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetentionOutcome::DryRun(p) => write!(f, "dry run (nothing changed)\n{p}"),
            RetentionOutcome::Ran { plan, report } => write!(f, "{plan}done: {report}"),
            RetentionOutcome::Locked => {
                write!(f, "retention is already running elsewhere; skipped")
            }
        }
    }
}

/// Plan and (unless `dry_run`) execute retention at `now`, holding the retention lock
/// (a Postgres advisory lock, so only one gateway runs it at a time). Real runs are recorded
/// for the timer's catch-up logic.
pub async fn run_retention(
    store: &dyn Store,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<RetentionOutcome> {
    policy.validate()?;
    if dry_run {
        let state = store.retention_state().await?;
        return Ok(RetentionOutcome::DryRun(plan(now, policy, &state)));
    }
    let Some(lock) = store.try_retention_lock().await? else {
        return Ok(RetentionOutcome::Locked);
    };
    let result = async {
        let state = store.retention_state().await?;
        let p = plan(now, policy, &state);
        let report = execute(store, &p).await?;
        store
            .record_retention_run(now, Utc::now(), &report.to_string())
            .await?;
        Ok::<_, StoreError>(RetentionOutcome::Ran { plan: p, report })
    };
    let out = result.await;
    lock.release().await?;
    out
}

/// Start the daily in-process retention timer. On start it catches up: if the last recorded
/// run is older than `policy.interval` (or there is none), it runs at once; then it sleeps
/// until the next due time. Errors are logged and retried on the next tick (at most an hour
/// later). Abort the returned handle to stop it.
pub fn spawn_retention(
    store: Arc<dyn Store>,
    policy: RetentionPolicy,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let retry = Duration::from_secs(3600).min(policy.interval);
        loop {
            let now = Utc::now();
            let wait = match store.last_retention_run().await {
                Ok(last) => {
                    let due = last.map(|l| add(l, policy.interval)).unwrap_or(now);
                    if due <= now {
                        match run_retention(store.as_ref(), &policy, now, false).await {
                            Ok(out) => {
                                tracing::info!(outcome = %out, "retention finished");
                                policy.interval
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "retention failed");
                                retry
                            }
                        }
                    } else {
                        (due - now).to_std().unwrap_or(retry)
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention: cannot read last run");
                    retry
                }
            };
            tokio::time::sleep(wait).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn planner_chunks_old_perf_per_provider_per_hour_and_prunes_only_past_cutoff() {
        let now = t("2026-01-10T12:34:00Z");
        let policy = RetentionPolicy::default();
        let state = RetentionState {
            oldest_perf: vec![("a".into(), t("2026-01-03T10:20:00Z"))],
            ..Default::default()
        };
        let p = plan(now, &policy, &state);
        let prune: Vec<_> = p
            .items
            .iter()
            .filter_map(|i| match i {
                WorkItem::RollupAndPrune { from, to, .. } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        // raw cutoff = now - 7d = 2026-01-03T12:34, floored to the hour = 12:00.
        assert_eq!(
            prune,
            vec![
                (t("2026-01-03T10:00:00Z"), t("2026-01-03T11:00:00Z")),
                (t("2026-01-03T11:00:00Z"), t("2026-01-03T12:00:00Z")),
            ]
        );
        // Rollup-only windows start at the cutoff and end at the last complete bucket.
        let last_rollup = p.items.iter().rev().find_map(|i| match i {
            WorkItem::Rollup { to, .. } => Some(*to),
            _ => None,
        });
        assert_eq!(last_rollup, Some(t("2026-01-10T12:30:00Z")));
        assert!(
            p.to_string()
                .contains("rollup + delete raw perf a [2026-01-03T10:00:00Z")
        );
    }

    #[test]
    fn planner_prunes_requests_up_to_exact_cutoff_and_captures_over_budget() {
        let now = t("2026-06-01T00:30:00Z");
        let policy = RetentionPolicy {
            capture_budget_bytes: 100,
            ..Default::default()
        };
        let state = RetentionState {
            oldest_request: Some(t("2026-03-02T22:10:00Z")),
            capture_bytes: 150,
            ..Default::default()
        };
        let p = plan(now, &policy, &state);
        let cutoff = t("2026-03-03T00:30:00Z"); // 90 days before now
        let req: Vec<_> = p
            .items
            .iter()
            .filter_map(|i| match i {
                WorkItem::PruneRequests { from, to } => Some((*from, *to)),
                _ => None,
            })
            .collect();
        assert_eq!(req.first().unwrap().0, t("2026-03-02T22:00:00Z"));
        assert_eq!(req.last().unwrap().1, cutoff);
        assert_eq!(req.len(), 3);
        assert!(p.items.contains(&WorkItem::PruneCaptures {
            current_bytes: 150,
            budget_bytes: 100
        }));
        // nothing to do when within budget and nothing old
        let quiet = plan(now, &policy, &RetentionState::default());
        assert!(quiet.items.is_empty());
    }

    #[test]
    fn planner_is_deterministic_and_respects_max_windows() {
        let now = t("2026-06-01T00:00:00Z");
        let policy = RetentionPolicy {
            max_windows: 5,
            ..Default::default()
        };
        let state = RetentionState {
            oldest_activity: Some(t("2020-01-01T00:00:00Z")),
            ..Default::default()
        };
        let a = plan(now, &policy, &state);
        assert_eq!(a, plan(now, &policy, &state));
        assert_eq!(a.items.len(), 5);
    }

    #[test]
    fn env_overrides_and_bad_values_name_the_variable() {
        let p = RetentionPolicy::from_env(&|k| match k {
            "CAPTURE_BUDGET_MB" => Some("2".into()),
            "RETENTION_REQUESTS_DAYS" => Some("30".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(p.capture_budget_bytes, 2 * 1024 * 1024);
        assert_eq!(p.requests_keep, 30 * DAY);
        let e = RetentionPolicy::from_env(&|k| (k == "CAPTURE_BUDGET_MB").then(|| "lots".into()))
            .unwrap_err();
        assert!(e.to_string().contains("CAPTURE_BUDGET_MB"), "{e}");
        let e =
            RetentionPolicy::from_env(&|k| (k == "RETENTION_CHUNK_MINUTES").then(|| "7".into()))
                .unwrap_err();
        assert!(e.to_string().contains("chunk"), "{e}");
    }

    #[test]
    fn rollups_aggregate_numeric_fields_per_bucket() {
        let s = |ts: &str, temp: f64| PerfSample {
            provider_id: "a".into(),
            ts: t(ts),
            gpu: json!([{"id": 0, "temp_c": temp, "name": "x"}]),
            sys: json!({"mem_used_mb": temp * 10.0}),
        };
        let r = compute_rollups(&[
            s("2026-01-01T00:04:59Z", 50.0),
            s("2026-01-01T00:00:00Z", 40.0),
            s("2026-01-01T00:05:00Z", 70.0),
        ]);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].bucket, t("2026-01-01T00:00:00Z"));
        assert_eq!(r[0].samples, 2);
        assert_eq!(
            r[0].gpu_agg["0.temp_c"],
            json!({"min": 40.0, "max": 50.0, "avg": 45.0})
        );
        assert_eq!(r[0].sys_agg["mem_used_mb"]["max"], json!(500.0));
        assert_eq!(r[1].samples, 1);
        assert!(r[0].gpu_agg.get("0.name").is_none());
    }
}
