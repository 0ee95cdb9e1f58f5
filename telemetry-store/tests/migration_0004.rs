//! Migration 0004 replaces the full status index on `requests` with a partial one over failed
//! requests. A database created before it keeps its rows, and status filters still find them.

use std::path::Path;

use boo_telemetry_store::sqlite::SqliteStore;
use boo_telemetry_store::{FeedFilter, FeedOrigin, Store};
use sqlx::Row;

/// A SQLite database at `url` with only migrations 0001–0003 applied (the schema of the
/// previous release), holding four requests with the given statuses.
async fn old_database(url: &str, dir: &Path) {
    let old = dir.join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for f in std::fs::read_dir(&src).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.as_str() < "0004" {
            std::fs::copy(f.path(), old.join(&name)).unwrap();
        }
    }
    let opts = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .unwrap()
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
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
