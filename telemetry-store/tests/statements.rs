//! Batches of every size keep SQLite's prepared-statement cache small: a multi-row INSERT is
//! cut into a few fixed sizes, so its SQL text (the cache key) takes only a few values. Before,
//! a busy llama-swap host's activity batches of every size cached ~100 statements per
//! connection, up to several MB each, and the gateway's memory grew with traffic. All bulk
//! writes go through one writer connection, so those statements are prepared once.

mod common;

use boo_telemetry_store::Store;
use boo_telemetry_store::sqlite::SqliteStore;
use common::{act, perf, t0};
use sqlx::Connection as _;

#[tokio::test]
async fn batches_of_every_size_prepare_a_handful_of_statements() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&format!("sqlite://{}/boo.db", dir.path().display()))
        .await
        .unwrap();
    let mut next = 0i64;
    for size in 1..=120i64 {
        let rows: Vec<_> = (next..next + size).map(|i| act("alpha", i, i)).collect();
        next += size;
        assert_eq!(store.insert_activity(&rows).await.unwrap(), size as u64);
        let samples: Vec<_> = (0..size)
            .map(|i| perf("alpha", t0() + chrono::Duration::seconds(next + i), 40.0))
            .collect();
        assert_eq!(store.insert_perf(&samples).await.unwrap(), size as u64);
    }
    // The bulk INSERTs run on the one writer connection: two tables × at most five sizes
    // (batches up to 120 rows use four of them), not 240.
    let writer = store.writer().acquire().await.unwrap();
    let on_writer = writer.cached_statements_size();
    assert!(
        (2..=12).contains(&on_writer),
        "{on_writer} statements cached on the writer connection"
    );
    drop(writer);
    // The reader connections (every one at once, so each cache is counted) prepared only the
    // migrator's few queries.
    let pool = store.pool();
    let open = pool.size() as usize;
    let mut conns = Vec::new();
    for _ in 0..open {
        conns.push(pool.acquire().await.unwrap());
    }
    let cached: usize = conns.iter_mut().map(|c| c.cached_statements_size()).sum();
    assert!(
        cached <= open * 6,
        "{cached} statements cached on {open} reader connections"
    );
    drop(conns);
    store.close().await;
}
