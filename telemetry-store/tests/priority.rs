//! The SQLite worker threads run at a lower priority than the rest of the process, so telemetry
//! inserts yield the CPU to the gateway's proxy threads.

use boo_telemetry_store::sqlite::{
    DEFAULT_WORKER_NICE, SqliteStore, WORKER_NICE_ENV, WORKER_THREAD_PREFIX, WRITER_THREAD_PREFIX,
    worker_nice_from_env,
};
use boo_telemetry_store::{Store, StoreError};

mod common;

/// (thread name, scheduling policy) of every thread of this process.
#[cfg(target_os = "linux")]
fn policies() -> Vec<(String, i64)> {
    common::thread_stats()
        .into_iter()
        .map(|(n, _, p)| (n, p))
        .collect()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn sqlite_workers_run_at_the_configured_nice_and_the_rest_of_the_process_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/prio.db", dir.path().display());
    let store = SqliteStore::open_with_nice(&url, 7).await.unwrap();
    // Hold several connections at once so the pool opens more than one worker.
    let (a, b) = tokio::join!(store.hosts(), store.settings());
    a.unwrap();
    b.unwrap();
    let all = common::thread_nices();
    let workers: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.starts_with(WORKER_THREAD_PREFIX))
        .collect();
    assert!(!workers.is_empty(), "no SQLite worker threads in {all:?}");
    for (name, nice) in &workers {
        assert_eq!(*nice, 7, "worker {name} has nice {nice}");
    }
    for (name, nice) in all.iter().filter(|(n, _)| {
        !n.starts_with(WORKER_THREAD_PREFIX) && !n.starts_with(WRITER_THREAD_PREFIX)
    }) {
        assert_eq!(*nice, 0, "non-worker thread {name} was reniced to {nice}");
    }
    store.close().await;
}

#[test]
fn worker_nice_comes_from_the_environment_and_bad_values_name_the_variable() {
    let none = |_: &str| None;
    assert_eq!(worker_nice_from_env(&none).unwrap(), DEFAULT_WORKER_NICE);
    let zero = |k: &str| (k == WORKER_NICE_ENV).then(|| "0".to_string());
    assert_eq!(worker_nice_from_env(&zero).unwrap(), 0);
    let nineteen = |k: &str| (k == WORKER_NICE_ENV).then(|| " 19 ".to_string());
    assert_eq!(worker_nice_from_env(&nineteen).unwrap(), 19);
    for bad in ["20", "-1", "low"] {
        let get = |k: &str| (k == WORKER_NICE_ENV).then(|| bad.to_string());
        match worker_nice_from_env(&get) {
            Err(e @ StoreError::Invalid { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(WORKER_NICE_ENV), "{msg}");
                assert!(msg.contains(bad), "{msg}");
            }
            other => panic!("{bad:?} accepted: {other:?}"),
        }
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_sqlite_writer_runs_idle_class_and_leaves_it_while_backlogged() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sched.db", dir.path().display());
    let store = SqliteStore::open_with_nice(&url, 0).await.unwrap();
    let names = store.writer_threads();
    assert!(!names.is_empty(), "the writer connection has a thread");
    let of = |want: &[String]| -> Vec<i64> {
        policies()
            .into_iter()
            .filter(|(n, _)| want.contains(n))
            .map(|(_, p)| p)
            .collect()
    };
    let idle = if SqliteStore::idle_writer_supported() {
        5
    } else {
        eprintln!("SCHED_IDLE cannot be left here: the writer stays in the normal class");
        0
    };
    assert_eq!(of(&names), vec![idle; names.len()], "{:?}", policies());
    // Readers are never idle class.
    for (n, p) in policies() {
        if n.starts_with(WORKER_THREAD_PREFIX) {
            assert_eq!(p, 0, "reader {n}");
        }
    }
    store.writes_backlogged(true);
    assert_eq!(of(&names), vec![0; names.len()], "backlogged: normal class");
    store.writes_backlogged(false);
    assert_eq!(of(&names), vec![idle; names.len()], "caught up: idle again");
    store.close().await;
}
