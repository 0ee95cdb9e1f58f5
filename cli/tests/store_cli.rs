//! `booctl serve` with a SQLite store, driven by `booctl activity / usage / favorites` and
//! `booctl retention run` (real processes, real TCP, fleet-sim upstream).

use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, start_host};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BOOCTL: &str = env!("CARGO_BIN_EXE_booctl");

/// One HTTP/1.1 request with `Connection: close`; returns (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn chat(addr: SocketAddr, model: &str, source: &str) {
    let body =
        json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
    let (s, b) = http(
        addr,
        "POST",
        "/v1/chat/completions",
        &[("x-boo-source", source)],
        &body.to_string(),
    )
    .expect("gateway answers");
    assert_eq!(s, 200, "{b}");
}

fn booctl(gateway: &str, args: &[&str]) -> Output {
    Command::new(BOOCTL)
        .arg("--gateway")
        .arg(gateway)
        .args(args)
        .env_remove("BOOCONTROL_STORE")
        .output()
        .expect("run booctl")
}

fn stdout_json(o: &Output) -> Value {
    assert!(
        o.status.success(),
        "booctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// Retries `f` (a failure guard, not a timing assertion).
fn eventually<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Serve(Child);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn booctl_serve_records_requests_and_the_store_commands_read_them() {
    let sim = start_host(
        HostSpec::llama_swap(
            "sam",
            ApiGen::Current,
            vec![ModelSpec::new("alpha"), ModelSpec::new("beta")],
        )
        .with_time_scale(0.001),
    )
    .await
    .expect("sim host");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("boocontrol.json");
    let doc = json!({"providers": [
        {"id": "sam", "label": "Sam", "kind": "llama-swap", "base_url": sim.base_url(), "default": true}
    ]});
    std::fs::write(&cfg, doc.to_string()).unwrap();
    let store = format!("sqlite://{}", dir.path().join("boo.db").display());
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gateway = format!("http://{addr}");
    let cfg_s = cfg.display().to_string();
    let store_c = store.clone();
    let addr_s = addr.to_string();
    let work = tokio::task::spawn_blocking(move || {
        let mut serve = Serve(
            Command::new(BOOCTL)
                .args([
                    "--config",
                    &cfg_s,
                    "serve",
                    "--listen",
                    &addr_s,
                    "--store",
                    &store_c,
                    "--poll-secs",
                    "1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn booctl serve"),
        );
        eventually(|| http(addr, "GET", "/api/health", &[], "").filter(|(s, _)| *s == 200));
        chat(addr, "sam/alpha", "arena");
        chat(addr, "sam/alpha", "arena");
        chat(addr, "sam/beta", "cli");

        // activity --json with a source filter (rows land within ~100 ms of each request).
        let items = eventually(|| {
            let v = stdout_json(&booctl(
                &gateway,
                &["--json", "activity", "--source", "arena"],
            ));
            let items = v["items"].as_array().cloned().unwrap_or_default();
            (items.len() == 2).then_some(items)
        });
        assert!(
            items
                .iter()
                .all(|r| r["source"] == "arena" && r["model"] == "sam/alpha")
        );
        // The table view names the model and the source.
        let o = booctl(&gateway, &["activity", "--model", "sam/beta"]);
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.success() && text.contains("sam/beta") && text.contains("cli"),
            "{text}"
        );

        // usage by source.
        let v = stdout_json(&booctl(
            &gateway,
            &["--json", "usage", "--since", "1h", "--by", "source"],
        ));
        let arena = v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == "arena")
            .cloned();
        assert_eq!(arena.map(|r| r["requests"].clone()), Some(json!(2)), "{v}");
        let o = booctl(&gateway, &["usage", "--since", "3y"]);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("since"),
            "{o:?}"
        );

        // favorites: an unavailable favorite stays until removed explicitly.
        let o = booctl(
            &gateway,
            &["favorites", "add", "sam/alpha", "gone-host/old"],
        );
        assert!(o.status.success(), "{o:?}");
        let list = |g: &str| {
            String::from_utf8_lossy(&booctl(g, &["favorites", "list"]).stdout).to_string()
        };
        assert_eq!(list(&gateway), "sam/alpha\ngone-host/old\n");
        assert!(
            booctl(&gateway, &["favorites", "remove", "gone-host/old"])
                .status
                .success()
        );
        assert_eq!(list(&gateway), "sam/alpha\n");
        let o = booctl(&gateway, &["favorites", "add", "auto:code"]);
        assert!(
            !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("favorite_models"),
            "{o:?}"
        );

        // activity --follow prints a request made after it started.
        let mut follow = Serve(
            Command::new(BOOCTL)
                .args([
                    "--gateway",
                    &gateway,
                    "activity",
                    "--follow",
                    "--source",
                    "late",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn activity --follow"),
        );
        let out = follow.0.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        chat(addr, "sam/beta", "late");
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("follow printed the new request");
        assert!(line.contains("sam/beta") || line.contains("TIME"), "{line}");
        let mut seen = line;
        while !seen.contains("late") {
            seen = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("row for the late request");
        }
        drop(follow);

        // Stop the gateway, then run retention directly against the store.
        let _ = Command::new("kill")
            .args(["-TERM", &serve.0.id().to_string()])
            .status();
        let _ = serve.0.wait();
        let o = Command::new(BOOCTL)
            .args(["retention", "run", "--dry-run", "--store", &store_c])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(text.contains("dry run"), "{text}");
        let o = Command::new(BOOCTL)
            .args(["retention", "run", "--store", "mysql://x"])
            .output()
            .unwrap();
        assert!(!o.status.success());
    });
    tokio::time::timeout(Duration::from_secs(240), work)
        .await
        .expect("test finishes")
        .expect("no panic");
    drop(sim);
}
