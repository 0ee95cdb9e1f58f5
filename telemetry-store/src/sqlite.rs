//! SQLite adapter: the embedded default (`sqlite://boocontrol.db`).
//!
//! Timestamps are stored as INTEGER microseconds (UTC); JSON as TEXT. Each pooled connection
//! runs on its own sqlx worker thread, named `boo-sqlite-N` and lowered to nice
//! [`DEFAULT_WORKER_NICE`] on Linux ([`WORKER_NICE_ENV`] overrides it), with a long scheduler
//! slice ([`DEFAULT_BACKGROUND_SLICE_US`]) so threads woken next to an insert preempt it.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteArguments;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Arguments as _, QueryBuilder, Row, Sqlite, SqlitePool};

use crate::chunks::{REQUEST_CHUNKS, statement_chunks};
use crate::error::Result;
use crate::records::*;
use crate::store::*;

/// The `requests` INSERT for `rows` rows (one of [`REQUEST_CHUNKS`]), built once.
fn request_insert_sql(rows: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<(usize, String)>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        REQUEST_CHUNKS
            .iter()
            .map(|&n| {
                let row = format!("({})", vec!["?"; 20].join(","));
                let values = vec![row; n].join(",");
                (
                    n,
                    format!(
                        "INSERT INTO requests (request_id, ts, provider_id, model, wire_model, \
                         source, path, status, error_class, ttft_ms, duration_ms, prompt_tokens, \
                         cached_tokens, completion_tokens, prompt_tps, gen_tps, bytes_in, \
                         bytes_out, stream, route) VALUES {values} ON CONFLICT DO NOTHING"
                    ),
                )
            })
            .collect()
    });
    all.iter()
        .find(|(n, _)| *n == rows)
        .map(|(_, s)| s.as_str())
        .unwrap_or_default()
}

/// Binds the 20 columns of one `requests` row, in [`request_insert_sql`]'s order.
fn bind_request<'q>(
    a: &mut SqliteArguments<'q>,
    r: &'q RequestRecord,
) -> std::result::Result<(), sqlx::error::BoxDynError> {
    a.add(r.request_id.as_str())?;
    a.add(us(r.ts))?;
    a.add(r.provider_id.as_str())?;
    a.add(r.model.as_str())?;
    a.add(r.wire_model.as_deref())?;
    a.add(r.source.as_deref())?;
    a.add(r.path.as_str())?;
    a.add(i64::from(r.status))?;
    a.add(r.error_class.as_deref())?;
    a.add(r.ttft_ms)?;
    a.add(r.duration_ms)?;
    a.add(r.prompt_tokens)?;
    a.add(r.cached_tokens)?;
    a.add(r.completion_tokens)?;
    a.add(r.prompt_tps)?;
    a.add(r.gen_tps)?;
    a.add(r.bytes_in)?;
    a.add(r.bytes_out)?;
    a.add(r.stream)?;
    a.add(r.route.as_ref().map(JsonText::as_str))?;
    Ok(())
}

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Reads (and rare writes such as settings).
    pool: SqlitePool,
    /// The one connection every bulk write and retention delete goes through (see
    /// [`SqliteStore::open_with_nice`]); the same pool as `pool` for an in-memory database.
    writer: SqlitePool,
    retention_busy: Arc<tokio::sync::Mutex<()>>,
    /// The writer connection's thread scheduling (see [`WriterSched`]).
    sched: Arc<WriterSched>,
}

/// Environment variable: `0` keeps the SQLite writer thread in the normal scheduling class
/// (see [`SqliteStore::open`]).
pub const WRITER_IDLE_ENV: &str = "BOOCONTROL_SQLITE_IDLE";

/// Name prefix of the writer connection's thread (`boo-sqlw-N`; readers are `boo-sqlite-N`).
pub const WRITER_THREAD_PREFIX: &str = "boo-sqlw-";

/// How the writer connection's thread is scheduled (Linux).
///
/// While the batch writer keeps up, the thread runs as `SCHED_IDLE`: a proxy thread that wakes
/// up preempts it at once, instead of waiting out the insert's time slice behind it (measured:
/// p99 at concurrency 1 through the gateway 960 -> 360 µs). When records pile up (the batch
/// writer reports a backlog, [`Store::writes_backlogged`]) it is switched back to the normal
/// class until the backlog is gone, so a saturated machine never starves telemetry into drops.
/// Leaving `SCHED_IDLE` needs `CAP_SYS_NICE` or a `RLIMIT_NICE` that allows it; where a probe at
/// start shows it does not, the thread stays in the normal class (with its nice value).
#[derive(Debug)]
pub(crate) struct WriterSched {
    /// sqlx connection ids of the writer's connections (their threads are `boo-sqlw-<id>`).
    ids: std::sync::Mutex<Vec<u64>>,
    /// Whether the thread may be idle now (false while the writer is backlogged).
    idle: std::sync::atomic::AtomicBool,
    /// Whether idle scheduling is used at all (enabled and reversible here).
    enabled: bool,
}

impl WriterSched {
    fn new(enabled: bool) -> Self {
        Self {
            ids: std::sync::Mutex::new(Vec::new()),
            idle: std::sync::atomic::AtomicBool::new(true),
            enabled: enabled && idle_is_reversible(),
        }
    }

    /// Applies the current class to the writer's threads; returns how many were set.
    fn apply(&self) -> usize {
        if !self.enabled {
            return 0;
        }
        let idle = self.idle.load(std::sync::atomic::Ordering::SeqCst);
        let ids = self.ids.lock().map(|g| g.clone()).unwrap_or_default();
        let names: Vec<String> = ids
            .iter()
            .map(|id| format!("{WRITER_THREAD_PREFIX}{id}"))
            .collect();
        for_threads(|tid, comm| {
            if names.iter().any(|n| n == comm) {
                set_idle(tid, idle)
            } else {
                false
            }
        })
    }

    fn set(&self, idle: bool) {
        if self.enabled && self.idle.swap(idle, std::sync::atomic::Ordering::SeqCst) != idle {
            self.apply();
        }
    }
}

/// Calls `f(tid, comm)` for every thread of this process (Linux); counts the `true`s.
fn for_threads(mut f: impl FnMut(i32, &str) -> bool) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut n = 0;
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) else {
            continue;
        };
        if f(tid, comm.trim_end()) {
            n += 1;
        }
    }
    n
}

/// Puts thread `tid` into `SCHED_IDLE`, or back into `SCHED_OTHER` with the background slice
/// ([`background_slice_us`]).
fn set_idle(tid: i32, idle: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        if !idle {
            return set_normal_background(tid);
        }
        let p = uapi::c::sched_param { sched_priority: 0 };
        match uapi::sched_setscheduler(tid, uapi::c::SCHED_IDLE, &p) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(tid, error = %e, "could not change the SQLite writer's scheduling");
                false
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (tid, idle);
        false
    }
}

/// Environment variable: the EEVDF time slice, in µs, of the SQLite threads while they are in
/// the normal class (default [`DEFAULT_BACKGROUND_SLICE_US`]; `0` leaves the kernel's default;
/// the kernel clamps to 100..=100000).
pub const BACKGROUND_SLICE_ENV: &str = "BOOCONTROL_SQLITE_SLICE_US";

/// Default slice of the SQLite threads, µs.
///
/// A thread woken by a socket (the gateway's workers, but also a load generator or an upstream
/// on the same machine) waits for a running thread with an equal or shorter slice to finish
/// it (about 0.75 ms × (1 + log2 CPUs) by default). Against a running thread with a longer
/// slice it preempts at once (Linux ≥ 6.12, `PREEMPT_SHORT`). A long slice on the bulk-insert
/// threads therefore keeps their CPU share (that follows the nice value) but lets every
/// latency-bound thread of the machine in first. Unprivileged; older kernels ignore it.
pub const DEFAULT_BACKGROUND_SLICE_US: u64 = 20_000;

/// The slice from [`BACKGROUND_SLICE_ENV`] (unset or empty → the default, `0` → `None`), or an
/// error naming the variable ([`SqliteStore::open`] checks it).
pub fn background_slice_from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<u64>> {
    match get(BACKGROUND_SLICE_ENV).filter(|v| !v.trim().is_empty()) {
        None => Ok(Some(DEFAULT_BACKGROUND_SLICE_US)),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(n) if n <= 100_000 => Ok(Some(n)),
            _ => Err(crate::StoreError::Invalid {
                field: BACKGROUND_SLICE_ENV,
                problem: format!("expected microseconds 0..=100000, got {v:?}"),
            }),
        },
    }
}

/// The slice applied to the SQLite threads, read once ([`SqliteStore::open`] has rejected a
/// bad value before any thread is set).
fn background_slice_us() -> Option<u64> {
    static SLICE: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *SLICE.get_or_init(|| {
        background_slice_from_env(&|k| std::env::var(k).ok())
            .unwrap_or(Some(DEFAULT_BACKGROUND_SLICE_US))
    })
}

/// Puts thread `tid` into `SCHED_OTHER` with the background slice, keeping its nice value.
#[cfg(target_os = "linux")]
fn set_normal_background(tid: i32) -> bool {
    let mut attr = match uapi::sched_getattr(tid, 0) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(tid, error = %e, "sched_getattr failed on a SQLite thread");
            return false;
        }
    };
    attr.sched_policy = uapi::c::SCHED_OTHER as u32;
    attr.sched_priority = 0;
    attr.sched_flags = 0;
    attr.sched_runtime = background_slice_us().map_or(0, |us| us * 1000);
    match uapi::sched_setattr(tid, &attr, 0) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(tid, error = %e, "could not change a SQLite thread's scheduling");
            false
        }
    }
}

/// Gives every SQLite thread of this process in the normal class the background slice
/// ([`DEFAULT_BACKGROUND_SLICE_US`]); threads in `SCHED_IDLE` are left alone. Returns how many
/// threads were set.
fn slice_workers() -> usize {
    #[cfg(target_os = "linux")]
    {
        if background_slice_us().is_none() {
            return 0;
        }
        for_threads(|tid, comm| {
            if !comm.starts_with(WORKER_THREAD_PREFIX) && !comm.starts_with(WRITER_THREAD_PREFIX) {
                return false;
            }
            let normal = uapi::sched_getattr(tid, 0)
                .is_ok_and(|a| a.sched_policy == uapi::c::SCHED_OTHER as u32);
            normal && set_normal_background(tid)
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Whether this process may put a thread into `SCHED_IDLE` and take it out again (probed once
/// on a short-lived thread of its own).
fn idle_is_reversible() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        std::thread::spawn(|| {
            let Some(tid) = std::fs::read_link("/proc/thread-self")
                .ok()
                .and_then(|p| p.file_name()?.to_str()?.parse::<i32>().ok())
            else {
                return false;
            };
            set_idle(tid, true) && set_idle(tid, false)
        })
        .join()
        .unwrap_or(false)
    })
}

fn us(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_micros()
}

fn from_us(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

fn json_text(v: &serde_json::Value) -> String {
    v.to_string()
}

fn parse_json(s: &str) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(s)?)
}

fn status_u16(v: Option<i64>) -> Option<u16> {
    v.and_then(|s| u16::try_from(s).ok())
}

/// Environment variable: the nice value (0..=19) of the SQLite worker threads (default
/// [`DEFAULT_WORKER_NICE`]; `0` leaves them at the process's priority).
pub const WORKER_NICE_ENV: &str = "BOOCONTROL_SQLITE_NICE";

/// Default nice value of the SQLite worker threads: under CPU saturation the proxy's threads
/// (nice 0) get about nine times the CPU share of a telemetry insert.
pub const DEFAULT_WORKER_NICE: i32 = 10;

/// Name prefix of the SQLite worker threads (sqlx runs each connection on its own thread).
pub const WORKER_THREAD_PREFIX: &str = "boo-sqlite-";

/// The worker nice value from [`WORKER_NICE_ENV`] (unset or empty → the default).
pub fn worker_nice_from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<i32> {
    match get(WORKER_NICE_ENV).filter(|v| !v.trim().is_empty()) {
        None => Ok(DEFAULT_WORKER_NICE),
        Some(v) => match v.trim().parse::<i32>() {
            Ok(n) if (0..=19).contains(&n) => Ok(n),
            _ => Err(crate::StoreError::Invalid {
                field: WORKER_NICE_ENV,
                problem: format!("expected an integer 0..=19, got {v:?}"),
            }),
        },
    }
}

/// Raise the nice value of every SQLite worker thread of this process to at least `nice`
/// (Linux; elsewhere a no-op). Threads are found by name in `/proc/self/task`. Returns how many
/// threads were changed. Failures are logged and skipped: priority is an optimisation.
fn renice_workers(nice: i32) -> usize {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{Pid, getpriority_process, setpriority_process};
        for_threads(|tid, comm| {
            if !comm.starts_with(WORKER_THREAD_PREFIX) && !comm.starts_with(WRITER_THREAD_PREFIX) {
                return false;
            }
            let pid = Pid::from_raw(tid);
            // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value only.
            if getpriority_process(pid).is_ok_and(|cur| cur >= nice) {
                return false;
            }
            match setpriority_process(pid, nice) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(tid, error = %e, "could not lower SQLite worker priority");
                    false
                }
            }
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        0
    }
}

impl SqliteStore {
    /// Open (creating the file if missing), switch to WAL and apply migrations.
    ///
    /// The connections' worker threads (named `boo-sqlite-N`) run at nice
    /// [`DEFAULT_WORKER_NICE`] (or [`WORKER_NICE_ENV`]): telemetry inserts yield the CPU to
    /// the gateway's proxy threads when both want it.
    pub async fn open(url: &str) -> Result<Self> {
        let nice = worker_nice_from_env(&|k| std::env::var(k).ok())?;
        background_slice_from_env(&|k| std::env::var(k).ok())?;
        Self::open_with_nice(url, nice).await
    }

    /// [`open`](Self::open) with an explicit worker nice value (0 = leave the priority alone).
    /// Threads are matched by name, so this also lowers the workers of other SQLite stores in
    /// the process to at least `nice` (priorities are only ever lowered).
    pub async fn open_with_nice(url: &str, nice: i32) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            // Statement journals of multi-row INSERTs inside a transaction stay in memory.
            .pragma("temp_store", "MEMORY")
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false)
            .thread_name(|id| format!("{WORKER_THREAD_PREFIX}{id}"));
        // Each connection to an in-memory database is a different database: use one.
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let nice = nice.clamp(0, 19);
        let pool_options = |max: u32| {
            SqlitePoolOptions::new()
                .max_connections(max)
                // Runs after each new connection (its worker thread exists by then).
                .after_connect(move |_conn, _meta| {
                    Box::pin(async move {
                        if nice > 0 {
                            renice_workers(nice);
                        }
                        slice_workers();
                        Ok(())
                    })
                })
        };
        let pool = pool_options(if in_memory { 1 } else { 4 })
            .connect_with(opts.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        // SQLite has one writer at a time anyway. Giving the writes one connection of their own
        // keeps its page cache valid between batches (a connection drops its whole cache when
        // another connection wrote since its last transaction), holds the bulk INSERT
        // statements' prepared programs once instead of once per pooled connection, and lets
        // concurrent writers queue on the pool instead of in SQLite's sleeping busy handler.
        let idle_env = std::env::var(WRITER_IDLE_ENV).ok();
        let sched = Arc::new(WriterSched::new(
            !in_memory && idle_env.as_deref().map(str::trim) != Some("0"),
        ));
        let writer = if in_memory {
            pool.clone()
        } else {
            let named = sched.clone();
            let applied = sched.clone();
            let opts = opts.thread_name(move |id| {
                if let Ok(mut ids) = named.ids.lock() {
                    ids.push(id);
                }
                format!("{WRITER_THREAD_PREFIX}{id}")
            });
            SqlitePoolOptions::new()
                .max_connections(1)
                .after_connect(move |_conn, _meta| {
                    let sched = applied.clone();
                    Box::pin(async move {
                        if nice > 0 {
                            renice_workers(nice);
                        }
                        slice_workers();
                        // A reconnected writer gets the current class too.
                        sched.apply();
                        Ok(())
                    })
                })
                .connect_with(opts)
                .await?
        };
        Ok(Self {
            pool,
            writer,
            retention_busy: Arc::new(tokio::sync::Mutex::new(())),
            sched,
        })
    }

    /// Names of the writer connection's threads (`boo-sqlw-<id>`; none for an in-memory
    /// database, whose writes share the read pool).
    pub fn writer_threads(&self) -> Vec<String> {
        let ids = self.sched.ids.lock().map(|g| g.clone()).unwrap_or_default();
        ids.iter()
            .map(|id| format!("{WRITER_THREAD_PREFIX}{id}"))
            .collect()
    }

    /// Whether this process can run the writer thread as `SCHED_IDLE` and take it out again
    /// (see [`WRITER_IDLE_ENV`]); probed once.
    pub fn idle_writer_supported() -> bool {
        idle_is_reversible()
    }

    /// The underlying pool (for ad-hoc queries in tools and tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The single-connection pool that bulk writes and retention deletes go through (the
    /// same pool as [`pool`](Self::pool) for an in-memory database).
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }
}

struct SqliteLock(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

#[async_trait]
impl RetentionLock for SqliteLock {
    async fn release(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

fn feed_row(r: &sqlx::sqlite::SqliteRow) -> Result<FeedRow> {
    let origin: String = r.try_get("origin")?;
    Ok(FeedRow {
        origin: if origin == "host" {
            FeedOrigin::Host
        } else {
            FeedOrigin::Gateway
        },
        id: r.try_get("id")?,
        ts: from_us(r.try_get("ts")?),
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

/// Push the keyset condition for one feed branch whose rows all have origin `origin`.
fn push_cursor(
    qb: &mut QueryBuilder<'_, Sqlite>,
    origin: FeedOrigin,
    id_expr: &str,
    c: &FeedCursor,
) {
    let o = origin.as_str();
    let co = c.origin.as_str();
    if o < co {
        qb.push(" AND ts <= ").push_bind(us(c.ts));
    } else if o > co {
        qb.push(" AND ts < ").push_bind(us(c.ts));
    } else {
        // Row-value comparison: lets the (…, ts DESC, id DESC) indexes seek to the cursor.
        qb.push(format!(" AND (ts, {id_expr}) < ("))
            .push_bind(us(c.ts))
            .push(", ")
            .push_bind(c.id.clone())
            .push(")");
    }
}

fn capture_row(r: &sqlx::sqlite::SqliteRow) -> Result<Capture> {
    Ok(Capture {
        id: r.try_get("id")?,
        request_id: r.try_get("request_id")?,
        provider_id: r.try_get("provider_id")?,
        ts: from_us(r.try_get("ts")?),
        body: r.try_get("body")?,
        original_bytes: r.try_get("original_bytes")?,
        truncated: r.try_get("truncated")?,
    })
}

fn rollup_row(r: &sqlx::sqlite::SqliteRow) -> Result<PerfRollup> {
    Ok(PerfRollup {
        provider_id: r.try_get("provider_id")?,
        bucket: from_us(r.try_get("bucket")?),
        samples: r.try_get("samples")?,
        gpu_agg: parse_json(&r.try_get::<String, _>("gpu_agg")?)?,
        sys_agg: parse_json(&r.try_get::<String, _>("sys_agg")?)?,
    })
}

fn perf_row(r: &sqlx::sqlite::SqliteRow) -> Result<PerfSample> {
    Ok(PerfSample {
        provider_id: r.try_get("provider_id")?,
        ts: from_us(r.try_get("ts")?),
        gpu: parse_json(&r.try_get::<String, _>("gpu")?)?,
        sys: parse_json(&r.try_get::<String, _>("sys")?)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn writes_backlogged(&self, backlogged: bool) {
        self.sched.set(!backlogged);
    }

    async fn insert_requests(&self, rows: &[RequestRecord]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        // A batch that fits one statement runs without BEGIN/COMMIT: a single statement is
        // atomic on its own, and inside an explicit transaction SQLite would also write a
        // statement journal for every multi-row INSERT (kept in memory: `temp_store`).
        let chunks: Vec<&[RequestRecord]> = statement_chunks(rows).collect();
        let mut tx = if chunks.len() > 1 {
            Some(self.writer.begin().await?)
        } else {
            None
        };
        let mut n = 0;
        for chunk in chunks {
            let mut args = SqliteArguments::default();
            for r in chunk {
                bind_request(&mut args, r).map_err(sqlx::Error::Encode)?;
            }
            let q = sqlx::query_with(request_insert_sql(chunk.len()), args);
            n += match tx.as_mut() {
                Some(tx) => q.execute(&mut **tx).await?,
                None => q.execute(&self.writer).await?,
            }
            .rows_affected();
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        Ok(n)
    }

    async fn insert_activity(&self, rows: &[HostActivity]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.writer.begin().await?;
        let mut n = 0;
        for chunk in statement_chunks(rows) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO host_activity (provider_id, upstream_id, ts, model, path, status, \
                 duration_ms, prompt_tokens, cached_tokens, completion_tokens, prompt_tps, gen_tps, \
                 has_capture) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(&r.provider_id)
                    .push_bind(r.upstream_id)
                    .push_bind(us(r.ts))
                    .push_bind(&r.model)
                    .push_bind(&r.path)
                    .push_bind(r.status.map(i64::from))
                    .push_bind(r.duration_ms)
                    .push_bind(r.prompt_tokens)
                    .push_bind(r.cached_tokens)
                    .push_bind(r.completion_tokens)
                    .push_bind(r.prompt_tps)
                    .push_bind(r.gen_tps)
                    .push_bind(r.has_capture);
            });
            qb.push(" ON CONFLICT DO NOTHING");
            n += qb.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn insert_perf(&self, rows: &[PerfSample]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.writer.begin().await?;
        let mut n = 0;
        for chunk in statement_chunks(rows) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO perf_samples (provider_id, ts, gpu, sys) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(&r.provider_id)
                    .push_bind(us(r.ts))
                    .push_bind(json_text(&r.gpu))
                    .push_bind(json_text(&r.sys));
            });
            qb.push(" ON CONFLICT DO NOTHING");
            n += qb.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn insert_model_events(&self, rows: &[ModelEvent]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.writer.begin().await?;
        let mut n = 0;
        for chunk in statement_chunks(rows) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO model_events (provider_id, model, state, ts, detail) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(&r.provider_id)
                    .push_bind(&r.model)
                    .push_bind(&r.state)
                    .push_bind(us(r.ts))
                    .push_bind(r.detail.as_ref().map(json_text));
            });
            qb.push(" ON CONFLICT DO NOTHING");
            n += qb.build().execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }

    async fn upsert_host(&self, h: &HostRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO hosts (provider_id, os, gpu_label, enabled) VALUES (?, ?, ?, ?) \
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
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        v.map(|s| parse_json(&s)).transpose()
    }

    async fn settings(&self) -> Result<BTreeMap<String, serde_json::Value>> {
        let rows = sqlx::query("SELECT key, value FROM settings ORDER BY key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("key")?,
                    parse_json(&r.try_get::<String, _>("value")?)?,
                ))
            })
            .collect()
    }

    async fn patch_settings(&self, patch: &BTreeMap<String, serde_json::Value>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let now = us(Utc::now());
        for (k, v) in patch {
            if v.is_null() {
                sqlx::query("DELETE FROM settings WHERE key = ?")
                    .bind(k)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(
                    "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(k)
                .bind(json_text(v))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_capture(&self, c: &NewCapture, row_cap_bytes: usize) -> Result<i64> {
        let (body, truncated) = trim_capture(&c.body, row_cap_bytes);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO captures (request_id, provider_id, ts, body, size_bytes, original_bytes, truncated) \
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&c.request_id)
        .bind(&c.provider_id)
        .bind(us(c.ts))
        .bind(body)
        .bind(body.len() as i64)
        .bind(c.body.len() as i64)
        .bind(truncated)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn capture(&self, id: i64) -> Result<Option<Capture>> {
        let r = sqlx::query("SELECT * FROM captures WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(capture_row).transpose()
    }

    async fn captures_for_request(&self, request_id: &str) -> Result<Vec<Capture>> {
        let rows = sqlx::query("SELECT * FROM captures WHERE request_id = ? ORDER BY ts, id")
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
        // Host rows carry no source, so a source filter excludes them.
        let want_host = filter.origin != Some(FeedOrigin::Gateway) && filter.source.is_none();
        let mut qb = QueryBuilder::<Sqlite>::new("SELECT * FROM (");
        let mut branches = 0;
        if want_gateway {
            qb.push(
                "SELECT * FROM (SELECT 'gateway' AS origin, request_id AS id, ts, provider_id, model, \
                 source, path, status, duration_ms, prompt_tokens, cached_tokens, completion_tokens, \
                 gen_tps, error_class FROM requests WHERE 1=1",
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
                qb.push(" AND status = ").push_bind(i64::from(s));
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
            qb.push(
                "SELECT * FROM (SELECT 'host' AS origin, provider_id || ':' || upstream_id AS id, ts, \
                 provider_id, model, NULL AS source, path, status, duration_ms, prompt_tokens, \
                 cached_tokens, completion_tokens, gen_tps, NULL AS error_class FROM host_activity WHERE 1=1",
            );
            if let Some(p) = &filter.provider_id {
                qb.push(" AND provider_id = ").push_bind(p.clone());
            }
            if let Some(m) = &filter.model {
                qb.push(" AND model = ").push_bind(m.clone());
            }
            if let Some(s) = filter.status {
                qb.push(" AND status = ").push_bind(i64::from(s));
            }
            if let Some(c) = cursor {
                push_cursor(
                    &mut qb,
                    FeedOrigin::Host,
                    "(provider_id || ':' || upstream_id)",
                    c,
                );
            }
            qb.push(" ORDER BY ts DESC, id DESC LIMIT ")
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
        qb.push(") ORDER BY ts DESC, origin DESC, id DESC LIMIT ")
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
            "SELECT {col} AS key, COUNT(*) AS requests, \
             COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, \
             COALESCE(SUM(cached_tokens), 0) AS cached_tokens, \
             COALESCE(SUM(completion_tokens), 0) AS completion_tokens \
             FROM requests WHERE ts >= ? AND ts < ? GROUP BY {col} \
             ORDER BY (COALESCE(SUM(prompt_tokens), 0) + COALESCE(SUM(completion_tokens), 0)) DESC, requests DESC, key"
        );
        let rows = sqlx::query(&sql)
            .bind(us(from))
            .bind(us(to))
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
        // SQLite returns the bare columns of the row holding MAX(ts).
        let rows = sqlx::query(
            "SELECT provider_id, model, state, MAX(ts) AS ts FROM model_events \
             GROUP BY provider_id, model ORDER BY provider_id, model",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ModelState {
                    provider_id: r.try_get("provider_id")?,
                    model: r.try_get("model")?,
                    state: r.try_get("state")?,
                    ts: from_us(r.try_get("ts")?),
                })
            })
            .collect()
    }

    async fn last_activity(&self) -> Result<Vec<(String, DateTime<Utc>)>> {
        let rows = sqlx::query(
            "SELECT provider_id, MAX(ts) AS ts FROM ( \
               SELECT provider_id, MAX(ts) AS ts FROM requests GROUP BY provider_id \
               UNION ALL SELECT provider_id, MAX(ts) AS ts FROM host_activity GROUP BY provider_id) \
             GROUP BY provider_id ORDER BY provider_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("provider_id")?, from_us(r.try_get("ts")?))))
            .collect()
    }

    async fn activity_watermark(&self, provider_id: &str) -> Result<Option<(i64, DateTime<Utc>)>> {
        let r = sqlx::query(
            "SELECT upstream_id, ts FROM host_activity WHERE provider_id = ? \
             ORDER BY ts DESC, upstream_id DESC LIMIT 1",
        )
        .bind(provider_id)
        .fetch_optional(&self.pool)
        .await?;
        r.map(|r| Ok((r.try_get("upstream_id")?, from_us(r.try_get("ts")?))))
            .transpose()
    }

    async fn latest_perf(&self) -> Result<Vec<PerfSample>> {
        let rows = sqlx::query(
            "SELECT p.provider_id, p.ts, p.gpu, p.sys FROM perf_samples p \
             JOIN (SELECT provider_id, MAX(ts) AS ts FROM perf_samples GROUP BY provider_id) m \
               ON p.provider_id = m.provider_id AND p.ts = m.ts ORDER BY p.provider_id",
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
        rows.iter()
            .map(|r| Ok((r.try_get("provider_id")?, from_us(r.try_get("ts")?))))
            .collect()
    }

    async fn perf_watermark(&self, provider_id: &str) -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MAX(ts) FROM perf_samples WHERE provider_id = ?")
                .bind(provider_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(v.map(from_us))
    }

    async fn retention_state(&self) -> Result<RetentionState> {
        let pairs = |sql: &'static str| async move {
            let rows = sqlx::query(sql).fetch_all(&self.pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get("provider_id")?, from_us(r.try_get("ts")?))))
                .collect::<Result<Vec<(String, DateTime<Utc>)>>>()
        };
        let oldest_perf = pairs(
            "SELECT provider_id, MIN(ts) AS ts FROM perf_samples GROUP BY provider_id ORDER BY provider_id",
        )
        .await?;
        let newest_rollup = pairs(
            "SELECT provider_id, MAX(bucket) AS ts FROM perf_rollup_5m GROUP BY provider_id ORDER BY provider_id",
        )
        .await?;
        let oldest_request: Option<i64> = sqlx::query_scalar("SELECT MIN(ts) FROM requests")
            .fetch_one(&self.pool)
            .await?;
        let oldest_activity: Option<i64> = sqlx::query_scalar("SELECT MIN(ts) FROM host_activity")
            .fetch_one(&self.pool)
            .await?;
        let capture_bytes: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(size_bytes), 0) FROM captures")
                .fetch_one(&self.pool)
                .await?;
        Ok(RetentionState {
            oldest_perf,
            newest_rollup,
            oldest_request: oldest_request.map(from_us),
            oldest_activity: oldest_activity.map(from_us),
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
             WHERE provider_id = ? AND ts >= ? AND ts < ? ORDER BY ts",
        )
        .bind(provider_id)
        .bind(us(from))
        .bind(us(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(perf_row).collect()
    }

    async fn upsert_rollups(&self, rows: &[PerfRollup]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let mut tx = self.writer.begin().await?;
        let mut n = 0;
        for chunk in statement_chunks(rows) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO perf_rollup_5m (provider_id, bucket, samples, gpu_agg, sys_agg) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(&r.provider_id)
                    .push_bind(us(r.bucket))
                    .push_bind(r.samples)
                    .push_bind(json_text(&r.gpu_agg))
                    .push_bind(json_text(&r.sys_agg));
            });
            qb.push(
                " ON CONFLICT (provider_id, bucket) DO UPDATE SET samples = excluded.samples, \
                 gpu_agg = excluded.gpu_agg, sys_agg = excluded.sys_agg",
            );
            n += qb.build().execute(&mut *tx).await?.rows_affected();
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
            "SELECT * FROM perf_rollup_5m WHERE provider_id = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
        )
        .bind(provider_id)
        .bind(us(from))
        .bind(us(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rollup_row).collect()
    }

    async fn delete_rolled_up_perf(
        &self,
        provider_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<u64> {
        let mut tx = self.writer.begin().await?;
        let n = sqlx::query(
            "DELETE FROM perf_samples WHERE provider_id = ?1 AND ts >= ?2 AND ts < ?3 \
             AND EXISTS (SELECT 1 FROM perf_rollup_5m r WHERE r.provider_id = ?1 \
                         AND r.bucket = perf_samples.ts - (perf_samples.ts % 300000000))",
        )
        .bind(provider_id)
        .bind(us(from))
        .bind(us(to))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n)
    }

    async fn delete_requests(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM requests WHERE ts >= ? AND ts < ?")
            .bind(us(from))
            .bind(us(to))
            .execute(&self.writer)
            .await?
            .rows_affected())
    }

    async fn delete_activity(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM host_activity WHERE ts >= ? AND ts < ?")
                .bind(us(from))
                .bind(us(to))
                .execute(&self.writer)
                .await?
                .rows_affected(),
        )
    }

    async fn prune_captures(&self, budget_bytes: i64) -> Result<u64> {
        Ok(sqlx::query(
            "DELETE FROM captures WHERE id IN (SELECT id FROM ( \
               SELECT id, SUM(size_bytes) OVER (ORDER BY ts DESC, id DESC) AS running FROM captures) \
             WHERE running > ?)",
        )
        .bind(budget_bytes)
        .execute(&self.writer)
        .await?
        .rows_affected())
    }

    async fn try_retention_lock(&self) -> Result<Option<Box<dyn RetentionLock>>> {
        Ok(self
            .retention_busy
            .clone()
            .try_lock_owned()
            .ok()
            .map(|g| Box::new(SqliteLock(g)) as Box<dyn RetentionLock>))
    }

    async fn record_retention_run(
        &self,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        summary: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO retention_runs (started_at, finished_at, summary) VALUES (?, ?, ?)",
        )
        .bind(us(started))
        .bind(us(finished))
        .bind(summary)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn last_retention_run(&self) -> Result<Option<DateTime<Utc>>> {
        let v: Option<i64> = sqlx::query_scalar("SELECT MAX(started_at) FROM retention_runs")
            .fetch_one(&self.pool)
            .await?;
        Ok(v.map(from_us))
    }

    async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

/// Build a page and its next cursor from up to `limit` rows.
pub(crate) fn page(rows: Vec<FeedRow>, limit: i64) -> FeedPage {
    let next = if rows.len() as i64 >= limit {
        rows.last().map(|r| FeedCursor {
            ts: r.ts,
            origin: r.origin,
            id: r.id.clone(),
        })
    } else {
        None
    };
    FeedPage { rows, next }
}

#[cfg(test)]
mod chunk_tests {
    use super::*;
    use crate::chunks::fixed_chunks;

    #[test]
    fn batches_are_cut_into_a_few_fixed_statement_sizes() {
        for n in 0..2100 {
            let c = fixed_chunks(n);
            assert_eq!(c.iter().sum::<usize>(), n);
            assert!(c.iter().all(|s| REQUEST_CHUNKS.contains(s)));
            assert!(c.windows(2).all(|w| w[0] >= w[1]));
        }
        assert_eq!(
            fixed_chunks(1000),
            vec![256, 256, 256, 64, 64, 64, 16, 16, 4, 4]
        );
        for n in REQUEST_CHUNKS {
            assert_eq!(request_insert_sql(n).matches('?').count(), 20 * n);
        }
    }
}
