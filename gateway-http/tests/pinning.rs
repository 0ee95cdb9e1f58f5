//! Worker threads pinned to CPUs (thread-per-core). A binary of its own: it reads the CPU sets
//! of every `boo-gw-N` thread in the process, which another test's gateway would add to.
#![cfg(target_os = "linux")]

use boo_gateway_http::{Gateway, GatewayConfig, MemorySink, StaticRouter, TelemetrySink};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// `Cpus_allowed_list` ("0-1,4") as CPU numbers.
fn parse_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

/// The CPU set of each live worker thread of this process, by thread name.
fn worker_cpus() -> BTreeMap<String, Vec<usize>> {
    let mut out = BTreeMap::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(comm) = std::fs::read_to_string(t.path().join("comm")) else {
            continue;
        };
        let name = comm.trim().to_string();
        if !name.starts_with("boo-gw-") || name == "boo-gw-accept" {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        if let Some(l) = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")) {
            out.insert(name, parse_list(&l["Cpus_allowed_list:".len()..]));
        }
    }
    out
}

/// Serves a gateway on `workers` threads, reads the workers' CPU sets, shuts the gateway down
/// and returns them.
async fn cpus_of_workers(pin: bool, workers: usize) -> BTreeMap<String, Vec<usize>> {
    let cfg = GatewayConfig {
        pin_workers: pin,
        ..GatewayConfig::default()
    };
    let gw = Gateway::new(
        cfg,
        Arc::new(StaticRouter::new()),
        &[],
        Arc::new(MemorySink::new()) as Arc<dyn TelemetrySink>,
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        gw.serve_workers(l, workers, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    let mut seen = BTreeMap::new();
    for _ in 0..200 {
        seen = worker_cpus();
        if seen.len() == workers {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(()).unwrap();
    server.await.unwrap();
    // The workers are gone once serve_workers has returned.
    for _ in 0..200 {
        if worker_cpus().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

#[tokio::test]
async fn with_pinning_on_one_worker_per_cpu_is_pinned_each_to_its_own_cpu() {
    let allowed = boo_gateway_http::affinity::allowed_cpus().unwrap();
    if allowed.len() < 2 {
        eprintln!("skipped: one CPU allowed, pinned and unpinned workers look alike");
        return;
    }
    let n = allowed.len();

    let pinned = cpus_of_workers(true, n).await;
    assert_eq!(pinned.len(), n, "every worker thread seen: {pinned:?}");
    for (i, cpu) in allowed.iter().enumerate() {
        assert_eq!(
            pinned.get(&format!("boo-gw-{i}")),
            Some(&vec![*cpu]),
            "worker {i}: {pinned:?}"
        );
    }

    // Off (the default): every worker may run on every allowed CPU.
    assert!(!GatewayConfig::default().pin_workers);
    let free = cpus_of_workers(false, n).await;
    assert_eq!(free.len(), n, "{free:?}");
    assert!(free.values().all(|c| *c == allowed), "{free:?}");

    // One worker fewer than CPUs: the scheduler places them.
    let fewer = cpus_of_workers(true, n - 1).await;
    assert_eq!(fewer.len(), n - 1, "{fewer:?}");
    assert!(fewer.values().all(|c| *c == allowed), "{fewer:?}");
}
