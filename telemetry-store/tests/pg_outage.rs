//! Real Postgres outage: the writer talks to Postgres through a TCP proxy on 127.0.0.1 that we
//! cut and restore. Skipped when DATABASE_URL is unset.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use boo_telemetry_store::postgres::PgStore;
use boo_telemetry_store::*;
use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy that can be switched off: while down, new connections are closed at once and
/// live ones are cut.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    epoch: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (epoch, _) = watch::channel(0u64);
        let (up2, epoch2) = (up.clone(), epoch.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut = epoch2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy { port, up, epoch }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.epoch.send_modify(|e| *e += 1);
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn host_port(url: &str) -> Option<(String, String)> {
    // postgres://user@host:port/db -> ("host:port", rewritten url through the proxy marker)
    let rest = url.split_once("://")?.1;
    let after_at = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let hostport = after_at.split('/').next()?;
    let hp = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    Some((hp, hostport.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_writer_buffers_and_catches_up_without_loss() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("skipping Postgres: DATABASE_URL unset");
        return;
    };
    let (target, hostport) = host_port(&url).expect("DATABASE_URL host");
    let proxy = Proxy::start(target).await;
    let proxied = url.replacen(&hostport, &format!("127.0.0.1:{}", proxy.port), 1);
    let schema = format!("boo_test_{:016x}", rand::random::<u64>());
    let direct = PgStore::open_in_schema(&url, &schema).await.unwrap();
    let via_proxy: Arc<dyn Store> =
        Arc::new(PgStore::open_in_schema(&proxied, &schema).await.unwrap());

    let w = BatchWriter::spawn(
        via_proxy.clone(),
        BatchConfig {
            capacity: 5_000,
            max_batch: 100,
            flush_interval: Duration::from_millis(20),
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            shutdown_timeout: Duration::from_secs(60),
            max_in_flight: 2,
        },
    );
    let rec = |i: usize| {
        let mut r = RequestRecord {
            request_id: format!("r{i}"),
            ts: chrono::Utc::now(),
            provider_id: "alpha".into(),
            model: "alpha/qwen".into(),
            wire_model: None,
            source: Some("arena".into()),
            path: "/v1/chat/completions".into(),
            status: 200,
            error_class: None,
            ttft_ms: None,
            duration_ms: 10.0,
            prompt_tokens: Some(1),
            cached_tokens: None,
            completion_tokens: Some(1),
            prompt_tps: None,
            gen_tps: None,
            bytes_in: 1,
            bytes_out: 1,
            stream: false,
            route: None,
        };
        r.ts += chrono::Duration::microseconds(i as i64);
        r
    };
    for i in 0..200 {
        w.try_record(rec(i));
    }
    wait_until(|| w.stats().written == 200).await;

    proxy.down();
    for i in 200..2_200 {
        assert!(w.try_record(rec(i)), "buffer below its limit must accept");
    }
    wait_until(|| w.stats().flush_errors >= 3).await;
    assert!(w.stats().written < 2_200);
    proxy.up();
    w.clone().shutdown().await;
    let st = w.stats();
    assert_eq!(st.dropped, 0, "{st:?}");
    assert_eq!(st.written, 2_200, "{st:?}");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests")
        .fetch_one(direct.pool())
        .await
        .unwrap();
    assert_eq!(n, 2_200);
    via_proxy.close().await;
    direct.close().await;
    PgStore::drop_schema(&url, &schema).await.unwrap();
}

async fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached in 90 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
