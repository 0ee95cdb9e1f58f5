//! Upgrades: a database made by an earlier release keeps its rows through every later
//! migration, and the queries that the migrations were for use their indexes.
//!
//! - 0004 replaces the full status index on `requests` with a partial one over failed requests.
//! - 0005 keys `requests` by `(ts, request_id)` and drops `idx_requests_ts`.

use std::path::{Path, PathBuf};

use boo_telemetry_store::postgres::PgStore;
use boo_telemetry_store::sqlite::SqliteStore;
use boo_telemetry_store::{FeedFilter, FeedOrigin, Store};
use sqlx::Row;

/// A directory under `dir` holding the `dialect` migrations that sort before `before` (the
/// schema of an earlier release).
fn migrations_before(dir: &Path, dialect: &str, before: &str) -> PathBuf {
    let old = dir.join(format!("old-{dialect}-{before}"));
    std::fs::create_dir(&old).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(dialect);
    for f in std::fs::read_dir(&src).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.as_str() < before {
            std::fs::copy(f.path(), old.join(&name)).unwrap();
        }
    }
    old
}

/// A SQLite pool on `url` (created) with the migrations before `before` applied.
async fn old_sqlite(url: &str, dir: &Path, before: &str) -> sqlx::SqlitePool {
    let opts = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    sqlx::migrate::Migrator::new(migrations_before(dir, "sqlite", before).as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool
}

/// A fresh schema on `url` with the Postgres migrations before `before` applied and the 300
/// [`old_request_inserts`] rows stored: its name, an admin pool (for dropping it) and a
/// one-connection pool inside it.
async fn old_postgres(url: &str, before: &str) -> (String, sqlx::PgPool, sqlx::PgPool) {
    let schema = format!("boo_mig_{:016x}", rand::random::<u64>());
    let dir = tempfile::tempdir().unwrap();
    let old = migrations_before(dir.path(), "postgres", before);
    let opts = url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .unwrap()
        .options([("search_path", schema.as_str())]);
    let admin = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    // The Postgres schema stores time as TIMESTAMPTZ (microsecond precision).
    for sql in
        old_request_inserts(|us| format!("TIMESTAMPTZ 'epoch' + {us} * INTERVAL '1 microsecond'"))
    {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    (schema, admin, pool)
}

/// A SQLite database at `url` with only migrations 0001–0003 applied, holding four requests
/// with the given statuses.
async fn old_database(url: &str, dir: &Path) {
    let pool = old_sqlite(url, dir, "0004").await;
    for (i, status) in [200, 204, 499, 502].into_iter().enumerate() {
        sqlx::query(
            "INSERT INTO requests (request_id, ts, provider_id, model, path, status, duration_ms, \
             bytes_in, bytes_out, stream) VALUES (?, ?, 'alpha', 'alpha/qwen', '/v1/chat/completions', \
             ?, 10.0, 1, 1, 0)",
        )
        .bind(format!("old-{i}"))
        .bind(1_700_000_000_000_000i64 + i as i64)
        .bind(status)
        .execute(&pool)
        .await
        .unwrap();
    }
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(indexes.iter().any(|n| n == "idx_requests_status_ts"));
    pool.close().await;
}

#[tokio::test]
async fn old_rows_stay_readable_and_status_filters_use_the_partial_index() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db", dir.path().display());
    old_database(&url, dir.path()).await;

    let store = SqliteStore::open(&url).await.unwrap();
    let all = store.feed(&FeedFilter::default(), None, 50).await.unwrap();
    let ids: Vec<_> = all.rows.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["old-3", "old-2", "old-1", "old-0"]);
    for (status, id) in [
        (200, "old-0"),
        (204, "old-1"),
        (499, "old-2"),
        (502, "old-3"),
    ] {
        let f = FeedFilter {
            status: Some(status),
            origin: Some(FeedOrigin::Gateway),
            ..Default::default()
        };
        let page = store.feed(&f, None, 50).await.unwrap();
        let got: Vec<_> = page.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(got, [id], "status {status}");
    }

    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index'")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert!(!indexes.iter().any(|n| n == "idx_requests_status_ts"));
    assert!(indexes.iter().any(|n| n == "idx_requests_error_ts"));
    // Only the failed requests are in the partial index.
    let indexed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM requests INDEXED BY idx_requests_error_ts WHERE status >= 400",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(indexed, 2);

    // The feed's failure filter (what `feed` sends for status >= 400) seeks that index.
    let plan: Vec<String> = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT request_id FROM requests WHERE status = ? AND status >= 400 \
         ORDER BY ts DESC, request_id DESC LIMIT 50",
    )
    .bind(502)
    .fetch_all(store.pool())
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("detail"))
    .collect();
    assert!(
        plan.iter().any(|d| d.contains("idx_requests_error_ts")),
        "{plan:?}"
    );
    store.close().await;
}

/// Every column of `requests`, in table order.
const REQUEST_COLUMNS: [&str; 20] = [
    "request_id",
    "ts",
    "provider_id",
    "model",
    "wire_model",
    "source",
    "path",
    "status",
    "error_class",
    "ttft_ms",
    "duration_ms",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "prompt_tps",
    "gen_tps",
    "bytes_in",
    "bytes_out",
    "stream",
    "route",
];

/// 300 requests as an earlier release stored them: three sources (one missing), two
/// providers, every tenth failed, every seventh routed by an `auto:*` policy. `ts` writes a
/// time in microseconds since the epoch as the dialect's SQL literal.
fn old_request_inserts(ts: impl Fn(i64) -> String) -> Vec<String> {
    (0..300)
        .map(|i| {
            let provider = ["alpha", "beta"][i % 2];
            let source = ["'arena'", "'boochat'", "NULL"][i % 3];
            let status = if i % 10 == 0 { 502 } else { 200 };
            let error = if status == 502 {
                "'upstream_error'"
            } else {
                "NULL"
            };
            let route = if i % 7 == 0 {
                format!("'{{\"policy\":\"auto:code\",\"chosen\":\"{provider}/qwen\"}}'")
            } else {
                "NULL".into()
            };
            format!(
                "INSERT INTO requests ({}) VALUES ('old-{i:04}', {ts}, '{provider}', \
                 '{provider}/qwen', 'qwen', {source}, '/v1/chat/completions', {status}, {error}, \
                 {ttft}, {dur}, {i}, 0, {c}, 1500.5, 61.25, 120, {out}, {stream}, {route})",
                REQUEST_COLUMNS.join(", "),
                ts = ts(1_700_000_000_000_000i64 + (i as i64 % 97) * 1_000_000 + i as i64),
                ttft = if i % 4 == 0 {
                    "NULL".to_string()
                } else {
                    format!("{}.5", i)
                },
                dur = 1000 + i,
                c = i * 3,
                out = 400 + i,
                stream = if i % 2 == 0 { "FALSE" } else { "TRUE" },
            )
        })
        .collect()
}

/// The `EXPLAIN QUERY PLAN` details of `sql` (SQLite).
async fn sqlite_plan(pool: &sqlx::SqlitePool, sql: &str) -> Vec<String> {
    sqlx::query(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("detail"))
        .collect()
}

#[tokio::test]
async fn sqlite_requests_keyed_by_time_keep_every_row_and_need_no_sort() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db", dir.path().display());
    let dump_sql = format!(
        "SELECT {} AS line FROM requests ORDER BY request_id",
        REQUEST_COLUMNS
            .iter()
            .map(|c| format!("quote({c})"))
            .collect::<Vec<_>>()
            .join(" || '|' || ")
    );
    let dump = |pool: sqlx::SqlitePool| {
        let sql = dump_sql.clone();
        async move {
            sqlx::query_scalar::<_, String>(&sql)
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    let pool = old_sqlite(&url, dir.path(), "0005").await;
    for sql in old_request_inserts(|us| us.to_string()) {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    let before = dump(pool.clone()).await;
    assert_eq!(before.len(), 300);
    pool.close().await;

    let store = SqliteStore::open(&url).await.unwrap();
    let pool = store.pool().clone();
    assert_eq!(
        dump(pool.clone()).await,
        before,
        "rows changed by the upgrade"
    );
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index'")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(
        !indexes.iter().any(|n| n == "idx_requests_ts"),
        "{indexes:?}"
    );
    for kept in [
        "idx_requests_source_ts",
        "idx_requests_provider_ts",
        "idx_requests_model_ts",
        "idx_requests_error_ts",
        "idx_requests_route_ts",
    ] {
        assert!(
            indexes.iter().any(|n| n == kept),
            "{kept} missing: {indexes:?}"
        );
    }

    // Newest-first pages, filtered or not, walk an index or the table in key order: no sort.
    let page = "ORDER BY ts DESC, request_id DESC LIMIT 50";
    for filter in [
        "",
        "WHERE source = 'arena'",
        "WHERE provider_id = 'alpha'",
        "WHERE model = 'alpha/qwen'",
        "WHERE status = 502 AND status >= 400",
        "WHERE route IS NOT NULL",
        "WHERE ts < 1700000050000000 OR (ts = 1700000050000000 AND request_id < 'old-0150')",
    ] {
        let plan = sqlite_plan(&pool, &format!("SELECT * FROM requests {filter} {page}")).await;
        assert!(
            !plan.iter().any(|d| d.contains("TEMP B-TREE")),
            "{filter}: {plan:?}"
        );
    }
    // Time ranges (usage, retention) seek the key.
    for sql in [
        "DELETE FROM requests WHERE ts >= 1 AND ts < 2",
        "SELECT COUNT(*) FROM requests WHERE ts >= 1 AND ts < 2",
    ] {
        let plan = sqlite_plan(&pool, sql).await;
        assert!(
            plan.iter()
                .any(|d| d.contains("PRIMARY KEY (ts>? AND ts<?)")),
            "{sql}: {plan:?}"
        );
    }

    // The feed reads the upgraded rows newest first, through the cursor.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = store
            .feed(&FeedFilter::default(), cursor.as_ref(), 64)
            .await
            .unwrap();
        seen.extend(p.rows.into_iter().map(|r| (r.ts, r.id)));
        match p.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut want = seen.clone();
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen.len(), 300);
    assert_eq!(seen, want);
    store.close().await;
}

#[tokio::test]
async fn postgres_requests_keyed_by_time_keep_every_row() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipping Postgres: DATABASE_URL unset");
        return;
    };
    let (schema, admin, pool) = old_postgres(&url, "0005").await;
    let dump_sql = "SELECT row_to_json(r)::text FROM requests r ORDER BY request_id";
    let before: Vec<String> = sqlx::query_scalar(dump_sql).fetch_all(&pool).await.unwrap();
    assert_eq!(before.len(), 300);
    pool.close().await;

    let store = PgStore::open_in_schema(&url, &schema).await.unwrap();
    let after: Vec<String> = sqlx::query_scalar(dump_sql)
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(after, before, "rows changed by the upgrade");
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1 AND tablename = 'requests'",
    )
    .bind(&schema)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(
        !indexes.iter().any(|n| n == "idx_requests_ts"),
        "{indexes:?}"
    );
    let key: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = 'requests'::regclass AND i.indisprimary \
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(key, ["ts", "request_id"]);
    let page = store.feed(&FeedFilter::default(), None, 300).await.unwrap();
    assert_eq!(page.rows.len(), 300);
    assert!(
        page.rows
            .windows(2)
            .all(|w| (w[0].ts, &w[0].id) > (w[1].ts, &w[1].id))
    );
    store.close().await;
    PgStore::drop_schema(&url, &schema).await.unwrap();
    admin.close().await;
}

/// Reads every feed page for `filter` (newest first) and returns (source, ts, id) of each row.
async fn all_pages(store: &dyn Store, filter: &FeedFilter) -> Vec<(Option<String>, i64, String)> {
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let p = store.feed(filter, cursor.as_ref(), 64).await.unwrap();
        seen.extend(
            p.rows
                .into_iter()
                .map(|r| (r.source, r.ts.timestamp_micros(), r.id)),
        );
        match p.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen
}

/// Over the 300 [`old_request_inserts`] rows: the feed filtered by source `arena` pages through
/// its 100 rows newest first, and the unfiltered feed still has the 100 unsourced ones.
async fn assert_source_feed(store: &dyn Store) {
    let arena = all_pages(
        store,
        &FeedFilter {
            source: Some("arena".into()),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(arena.len(), 100);
    assert!(arena.iter().all(|(s, _, _)| s.as_deref() == Some("arena")));
    let mut newest_first = arena.clone();
    newest_first.sort_by(|a, b| (b.1, &b.2).cmp(&(a.1, &a.2)));
    assert_eq!(arena, newest_first);
    let all = all_pages(store, &FeedFilter::default()).await;
    assert_eq!(all.len(), 300);
    assert_eq!(all.iter().filter(|(s, _, _)| s.is_none()).count(), 100);
}

/// After migration 0006 the source index holds only requests that carry a source, and the
/// feed's `source = ?` filter (a bound parameter, as `feed` sends it) still seeks it.
#[tokio::test]
async fn sqlite_source_index_skips_unsourced_requests_and_still_serves_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/src.db", dir.path().display());
    let pool = old_sqlite(&url, dir.path(), "0006").await;
    for sql in old_request_inserts(|us| us.to_string()) {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = SqliteStore::open(&url).await.unwrap();
    let pool = store.pool().clone();
    let def: String = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'idx_requests_source_ts'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(def.contains("WHERE source IS NOT NULL"), "{def}");
    let plan: Vec<String> = sqlx::query(
        "EXPLAIN QUERY PLAN SELECT * FROM requests WHERE source = ? \
         ORDER BY ts DESC, request_id DESC LIMIT 50",
    )
    .bind("arena")
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>("detail"))
    .collect();
    assert!(
        plan.iter().any(|d| d.contains("idx_requests_source_ts")),
        "{plan:?}"
    );
    assert!(!plan.iter().any(|d| d.contains("TEMP B-TREE")), "{plan:?}");

    assert_source_feed(&store).await;
    store.close().await;
}

#[tokio::test]
async fn postgres_source_index_skips_unsourced_requests_and_still_serves_the_feed() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipping Postgres: DATABASE_URL unset");
        return;
    };
    let (schema, admin, pool) = old_postgres(&url, "0006").await;
    pool.close().await;

    let store = PgStore::open_in_schema(&url, &schema).await.unwrap();
    let def: String = sqlx::query_scalar(
        "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 \
         AND indexname = 'idx_requests_source_ts'",
    )
    .bind(&schema)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(def.contains("WHERE (source IS NOT NULL)"), "{def}");
    assert_source_feed(&store).await;
    store.close().await;
    PgStore::drop_schema(&url, &schema).await.unwrap();
    admin.close().await;
}
