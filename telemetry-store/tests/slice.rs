//! The SQLite threads get a long EEVDF slice while in the normal class, so a thread woken on
//! the same CPU (a proxy worker, a load generator, an upstream) preempts a bulk insert at once.
//! A test binary of its own: it looks at every `boo-sql*` thread of the process, and another
//! test's store opening at the same moment would show threads not yet set up.

use boo_telemetry_store::sqlite::{BACKGROUND_SLICE_ENV, background_slice_from_env};
use boo_telemetry_store::sqlite::{DEFAULT_BACKGROUND_SLICE_US, SqliteStore, WORKER_THREAD_PREFIX};
use boo_telemetry_store::{Store, StoreError};

mod common;

/// (thread name, `se.slice` in ns) of every thread of this process, from
/// `/proc/self/task/<tid>/sched`.
#[cfg(target_os = "linux")]
fn slices() -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let (Ok(comm), Ok(sched)) = (
            std::fs::read_to_string(t.path().join("comm")),
            std::fs::read_to_string(t.path().join("sched")),
        ) else {
            continue;
        };
        let slice = sched
            .lines()
            .find(|l| l.starts_with("se.slice"))
            .and_then(|l| l.split(':').nth(1)?.trim().parse().ok());
        if let Some(slice) = slice {
            out.push((comm.trim_end().to_string(), slice));
        }
    }
    out
}

/// Whether the kernel honours per-thread EEVDF slices (Linux 6.12 and later).
#[cfg(target_os = "linux")]
fn custom_slices_supported() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release.trim().split(['.', '-']);
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor) >= (6, 12)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn sqlite_threads_in_the_normal_class_get_the_long_background_slice() {
    if !custom_slices_supported() {
        eprintln!("kernel before 6.12: per-thread slices are ignored; nothing to check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/slice.db", dir.path().display());
    let store = SqliteStore::open_with_nice(&url, 3).await.unwrap();
    let (a, b) = tokio::join!(store.hosts(), store.settings());
    a.unwrap();
    b.unwrap();
    let want = DEFAULT_BACKGROUND_SLICE_US * 1000;
    let all = slices();
    let readers: Vec<_> = all
        .iter()
        .filter(|(n, _)| n.starts_with(WORKER_THREAD_PREFIX))
        .collect();
    assert!(!readers.is_empty(), "no SQLite reader threads in {all:?}");
    for (name, slice) in &readers {
        assert_eq!(*slice, want, "reader {name}");
    }
    // The rest of the process keeps the kernel's slice.
    let mine = all
        .iter()
        .find(|(n, _)| !n.starts_with("boo-sql"))
        .map(|(_, s)| *s)
        .unwrap();
    assert_ne!(
        mine, want,
        "a non-SQLite thread got the background slice: {all:?}"
    );
    // Leaving SCHED_IDLE for a backlog puts the writer in the normal class with the long
    // slice, at its nice value.
    store.writes_backlogged(true);
    let names = store.writer_threads();
    for (name, slice) in slices().iter().filter(|(n, _)| names.contains(n)) {
        assert_eq!(*slice, want, "backlogged writer {name}");
    }
    for (name, nice) in common::thread_nices()
        .iter()
        .filter(|(n, _)| n.starts_with("boo-sql"))
    {
        assert_eq!(*nice, 3, "{name} lost its nice value");
    }
    store.writes_backlogged(false);
    store.close().await;
}

#[test]
fn the_slice_comes_from_the_environment_and_bad_values_name_the_variable() {
    let none = |_: &str| None;
    assert_eq!(
        background_slice_from_env(&none).unwrap(),
        Some(DEFAULT_BACKGROUND_SLICE_US)
    );
    let zero = |k: &str| (k == BACKGROUND_SLICE_ENV).then(|| "0".to_string());
    assert_eq!(background_slice_from_env(&zero).unwrap(), None);
    let some = |k: &str| (k == BACKGROUND_SLICE_ENV).then(|| " 5000 ".to_string());
    assert_eq!(background_slice_from_env(&some).unwrap(), Some(5000));
    for bad in ["100001", "-1", "long"] {
        let get = |k: &str| (k == BACKGROUND_SLICE_ENV).then(|| bad.to_string());
        match background_slice_from_env(&get) {
            Err(e @ StoreError::Invalid { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(BACKGROUND_SLICE_ENV) && msg.contains(bad),
                    "{msg}"
                );
            }
            other => panic!("{bad:?} accepted: {other:?}"),
        }
    }
}
