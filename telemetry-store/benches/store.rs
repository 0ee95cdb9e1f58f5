//! Telemetry-store benchmarks (bench binary, `harness = false`).
//!
//! ```text
//! cargo bench -p boo-telemetry-store --bench store            # SQLite only
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p boo-telemetry-store --bench store          # SQLite and Postgres
//! ```
//! Environment: `BENCH_WRITER_ROWS` (default 200000), `BENCH_FEED_ROWS` (default 1000000),
//! `BENCH_FEED_QUERIES` (default 300), `BENCH_MAX_BATCH` (the writer's `max_batch`, default
//! from [`BatchConfig`]).
//!
//! 1. Insert throughput through the batch writer (default config: 500-row batches, 100 ms):
//!    rows/s from the first `try_record` until shutdown has flushed everything.
//! 2. Activity feed: newest page (50 rows) filtered by source, over `BENCH_FEED_ROWS` request
//!    rows spread over 5 sources and 4 providers; p50/p99 latency, plus the page after it
//!    (keyset cursor).

use std::sync::Arc;
use std::time::{Duration, Instant};

use boo_telemetry_store::postgres::PgStore;
use boo_telemetry_store::*;
use chrono::{DateTime, Utc};

const SOURCES: [&str; 5] = [
    "boochat",
    "boocoder",
    "arena",
    "control-bench",
    "control-eval",
];

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn record(i: usize, base: DateTime<Utc>) -> RequestRecord {
    let provider = ["alpha", "beta", "gamma", "delta"][i % 4];
    RequestRecord {
        request_id: format!("req-{i:09}"),
        ts: base + chrono::Duration::milliseconds(i as i64 * 7),
        provider_id: provider.into(),
        model: format!("{provider}/qwen3-coder-30b"),
        wire_model: Some("qwen3-coder-30b".into()),
        source: Some(SOURCES[(i / 3) % SOURCES.len()].into()),
        path: "/v1/chat/completions".into(),
        status: if i.is_multiple_of(50) { 502 } else { 200 },
        error_class: (i.is_multiple_of(50)).then(|| "upstream_error".into()),
        ttft_ms: Some(120.0 + (i % 100) as f64),
        duration_ms: 900.0 + (i % 1000) as f64,
        prompt_tokens: Some(500 + (i % 300) as i64),
        cached_tokens: Some(100),
        completion_tokens: Some(200 + (i % 50) as i64),
        prompt_tps: Some(1500.0),
        gen_tps: Some(60.0),
        bytes_in: 2048,
        bytes_out: 8192,
        stream: true,
        route: None,
    }
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux; `None`
/// elsewhere). Clock ticks are 10 ms, so only long runs give a meaningful per-row figure.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn writer_throughput(label: &str, store: Arc<dyn Store>, rows: usize) {
    let base = Utc::now();
    let recs: Vec<RequestRecord> = (0..rows).map(|i| record(i, base)).collect();
    let cfg = BatchConfig {
        capacity: rows,
        max_batch: env_num("BENCH_MAX_BATCH", BatchConfig::default().max_batch),
        ..Default::default()
    };
    let w = BatchWriter::spawn(store.clone(), cfg);
    let cpu0 = cpu_time();
    let start = Instant::now();
    for r in recs {
        w.try_record(r);
    }
    let enqueue = start.elapsed();
    w.clone().shutdown().await;
    let elapsed = start.elapsed();
    let cpu = cpu0.zip(cpu_time()).map(|(a, b)| b.saturating_sub(a));
    let st = w.stats();
    assert_eq!(st.dropped, 0, "bench dropped rows: {st:?}");
    assert_eq!(st.written as usize, rows);
    println!(
        "{label:9} writer: {rows} rows in {:.2}s = {:.0} rows/s (enqueue {:.1} ns/row, {} flushes, \
         process CPU {} µs/row)",
        elapsed.as_secs_f64(),
        rows as f64 / elapsed.as_secs_f64(),
        enqueue.as_nanos() as f64 / rows as f64,
        st.flushes,
        cpu.map_or("?".into(), |c| format!(
            "{:.2}",
            c.as_secs_f64() * 1e6 / rows as f64
        )),
    );
}

async fn load_requests(label: &str, store: &dyn Store, rows: usize) {
    let base = Utc::now() - chrono::Duration::days(30);
    let load = Instant::now();
    let chunk = 10_000;
    let mut i = 0;
    while i < rows {
        let n = chunk.min(rows - i);
        let batch: Vec<_> = (i..i + n).map(|j| record(j, base)).collect();
        store.insert_requests(&batch).await.unwrap();
        i += n;
    }
    println!(
        "{label:9} feed: loaded {rows} rows in {:.1}s",
        load.elapsed().as_secs_f64()
    );
}

async fn feed_latency(label: &str, store: Arc<dyn Store>, rows: usize, queries: usize) {
    // warm up
    for s in SOURCES {
        let f = FeedFilter {
            source: Some(s.into()),
            ..Default::default()
        };
        store.feed(&f, None, 50).await.unwrap();
    }
    let mut first = Vec::with_capacity(queries);
    let mut second = Vec::with_capacity(queries);
    for q in 0..queries {
        let f = FeedFilter {
            source: Some(SOURCES[q % SOURCES.len()].into()),
            ..Default::default()
        };
        let t = Instant::now();
        let page = store.feed(&f, None, 50).await.unwrap();
        first.push(t.elapsed());
        assert_eq!(page.rows.len(), 50);
        let t = Instant::now();
        let next = store.feed(&f, page.next.as_ref(), 50).await.unwrap();
        second.push(t.elapsed());
        assert_eq!(next.rows.len(), 50);
        assert!(next.rows[0].ts <= page.rows[49].ts);
    }
    first.sort();
    second.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:9} feed newest page by source ({queries} queries, {rows} rows): p50 {:.2} ms, p99 {:.2} ms; next page p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(&first, 0.5)),
        ms(pct(&first, 0.99)),
        ms(pct(&second, 0.5)),
        ms(pct(&second, 0.99)),
    );
    // unfiltered newest page (both tables) for reference
    let mut all = Vec::with_capacity(queries);
    for _ in 0..queries {
        let t = Instant::now();
        store.feed(&FeedFilter::default(), None, 50).await.unwrap();
        all.push(t.elapsed());
    }
    all.sort();
    println!(
        "{label:9} feed newest page unfiltered: p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(&all, 0.5)),
        ms(pct(&all, 0.99))
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing special.
    // Run quickly when invoked by `cargo test` so CI stays fast.
    let quick = !std::env::args().any(|a| a == "--bench");
    let writer_rows = if quick {
        2_000
    } else {
        env_num("BENCH_WRITER_ROWS", 200_000)
    };
    let feed_rows = if quick {
        5_000
    } else {
        env_num("BENCH_FEED_ROWS", 1_000_000)
    };
    let queries = if quick {
        10
    } else {
        env_num("BENCH_FEED_QUERIES", 300)
    };

    let dir = tempfile::tempdir().unwrap();
    let sqlite_w = open(&format!("sqlite://{}/writer.db", dir.path().display()))
        .await
        .unwrap();
    writer_throughput("sqlite", sqlite_w, writer_rows).await;
    let sqlite_f = open(&format!("sqlite://{}/feed.db", dir.path().display()))
        .await
        .unwrap();
    load_requests("sqlite", sqlite_f.as_ref(), feed_rows).await;
    feed_latency("sqlite", sqlite_f, feed_rows, queries).await;

    match std::env::var("DATABASE_URL") {
        Err(_) => println!("skipping Postgres: DATABASE_URL unset"),
        Ok(url) => {
            let schema = format!("boo_bench_{:08x}", rand::random::<u32>());
            let pg = Arc::new(PgStore::open_in_schema(&url, &schema).await.unwrap());
            writer_throughput("postgres", pg.clone(), writer_rows).await;
            pg.close().await;
            PgStore::drop_schema(&url, &schema).await.unwrap();
            let pg = Arc::new(PgStore::open_in_schema(&url, &schema).await.unwrap());
            load_requests("postgres", pg.as_ref(), feed_rows).await;
            // what autovacuum would do shortly after a bulk load
            sqlx::query("ANALYZE requests")
                .execute(pg.pool())
                .await
                .unwrap();
            feed_latency("postgres", pg.clone(), feed_rows, queries).await;
            pg.close().await;
            PgStore::drop_schema(&url, &schema).await.unwrap();
        }
    }
}
