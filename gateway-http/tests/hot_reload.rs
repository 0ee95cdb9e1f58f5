//! Hot reload: editing the config file of a running gateway changes its routes without a restart.

mod common;

use boo_gateway_http::{RunOptions, run_on};
use boo_provider_registry::{ConfigSource, ProcessEnv, load};
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

fn config(providers: &[(&str, SocketAddr)], api_key: Option<&str>) -> String {
    let ps: Vec<String> = providers
        .iter()
        .map(|(id, addr)| {
            format!(r#"{{"id":"{id}","kind":"llama-server","base_url":"http://{addr}"}}"#)
        })
        .collect();
    let gateway = match api_key {
        Some(k) => format!(r#","gateway":{{"api_keys":["{k}"]}}"#),
        None => String::new(),
    };
    format!(r#"{{"providers":[{}]{gateway}}}"#, ps.join(","))
}

/// Chat requests the scripted upstream received (inventory polls excluded).
fn chats(up: &Upstream) -> usize {
    up.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.path == "/v1/chat/completions")
        .count()
}

async fn wait_for(addr: SocketAddr, model: &str, status: u16) -> bool {
    let body = format!(r#"{{"model":"{model}"}}"#);
    for _ in 0..200 {
        if post(addr, "/v1/chat/completions", &[], &body).await.0 == status {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn write(path: &Path, text: &str) {
    // Write then rename, as editors do, so the watcher never reads half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn editing_the_config_file_changes_routes_without_a_restart() {
    let (up_a, addr_a) = start_upstream().await;
    let (up_b, addr_b) = start_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boocontrol.json");
    write(&path, &config(&[("one", addr_a)], None));

    let reg = load(ConfigSource::File(path.clone()), &ProcessEnv)
        .unwrap()
        .registry;
    let mut opts = RunOptions::new(Arc::new(reg));
    opts.config_file = Some(path.clone());
    opts.reload_every = Duration::from_millis(50);
    opts.poll_every = Duration::from_millis(200);
    opts.workers = 2;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run_on(l, opts, async {
        let _ = stop_rx.await;
    }));

    let (s, _, _) = post(addr, "/v1/chat/completions", &[], r#"{"model":"one/echo"}"#).await;
    assert_eq!(s, 200);
    assert_eq!(chats(&up_a), 1);
    let (s, _, b) = post(addr, "/v1/chat/completions", &[], r#"{"model":"two/echo"}"#).await;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    assert_eq!(err_code(&b), "model_not_found");

    // Provider `one` moves to the second host, `two` appears on the first.
    write(&path, &config(&[("one", addr_b), ("two", addr_a)], None));
    assert!(
        wait_for(addr, "two/echo", 200).await,
        "new provider routed after reload"
    );
    let before = (chats(&up_a), chats(&up_b));
    let (s, h, _) = post(addr, "/v1/chat/completions", &[], r#"{"model":"one/echo"}"#).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-boo-provider"], "one");
    assert_eq!(chats(&up_b), before.1 + 1);
    assert_eq!(chats(&up_a), before.0);
    let models = String::from_utf8_lossy(&get(addr, "/api/health").await.1).into_owned();
    assert!(models.contains("\"two\""), "{models}");

    // A broken file is refused; the running configuration keeps serving.
    write(&path, r#"{"providers":[{"id":"BAD ID","kind":"nope"}]}"#);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (s, _, _) = post(addr, "/v1/chat/completions", &[], r#"{"model":"two/echo"}"#).await;
    assert_eq!(s, 200, "old routes kept after an invalid edit");

    // Client keys come from the reloaded file too; removing a provider makes it unknown.
    write(&path, &config(&[("one", addr_b)], Some("k-reloaded")));
    assert!(
        wait_for(addr, "one/echo", 401).await,
        "client keys applied after reload"
    );
    let (s, _, b) = post(
        addr,
        "/v1/chat/completions",
        &[("authorization", "Bearer k-reloaded")],
        r#"{"model":"two/echo"}"#,
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(err_code(&b), "model_not_found");

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("gateway stopped")
        .unwrap()
        .unwrap();
}
