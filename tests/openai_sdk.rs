//! The official OpenAI Python SDK against the gateway (issue 8): fleet-sim and the gateway run
//! in-process on 127.0.0.1 port 0, and `tests/sdk/openai_sdk_check.py` lists models, chats,
//! streams, embeds, and expects an unknown provider to raise `openai.BadRequestError`.
//!
//! Needs `python3` with the `openai` package (`python3 -m pip install openai`); without it the test
//! prints a skip notice and passes.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boo_fleet_sim::{Fleet, FleetSpec};
use boo_gateway_http::RunOptions;
use boo_provider_registry::{MapEnv, from_json_str};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHAT: &str = "sam-desktop/qwen-tiny";
const EMBED: &str = "sam-desktop/bge-m3";

fn openai_sdk_available() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `GET path` over a fresh connection; the whole response as text.
async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_openai_python_sdk_talks_to_the_gateway() {
    if !openai_sdk_available() {
        println!(
            "SKIPPED: python3 with the `openai` package is not available \
             (install it with `python3 -m pip install openai`)"
        );
        return;
    }

    // One fast llama-swap host serving a chat model and an embedding model.
    let spec = FleetSpec::from_json(
        &serde_json::json!({
            "hosts": [{
                "id": "sam-desktop",
                "mode": "llama-swap",
                "api": "current",
                "models": [
                    { "id": "qwen-tiny", "prompt_tps": 0, "gen_tps": 0, "load_ms": 0 },
                    { "id": "bge-m3", "embedding": true, "n_embd": 64, "load_ms": 0 }
                ]
            }]
        })
        .to_string(),
    )
    .expect("valid fleet spec");
    let fleet = Fleet::start(spec).await.expect("fleet starts");
    let host = fleet.host("sam-desktop").expect("host in the fleet");

    let config = serde_json::json!({
        "providers": [
            { "id": "sam-desktop", "kind": "llama-swap", "base_url": host.base_url(), "default": true }
        ]
    });
    let registry = from_json_str(&config.to_string(), &MapEnv::new())
        .expect("valid registry")
        .registry;
    let mut opts = RunOptions::new(Arc::new(registry));
    opts.poll_every = Duration::from_millis(100);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let addr = listener.local_addr().expect("bound address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(boo_gateway_http::run_on(listener, opts, async {
        let _ = stopped.await;
    }));

    // The listing comes from the host inventory poll: wait until both models are listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listing = get(addr, "/v1/models").await.unwrap_or_default();
        if listing.contains(CHAT) && listing.contains(EMBED) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "gateway never listed {CHAT} and {EMBED}: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk_check.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .args(["--base-url", &format!("http://{addr}/v1")])
        .args(["--chat-model", CHAT, "--embed-model", EMBED])
        // Loopback only: keep any proxy settings of the machine out of the way.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("all_proxy")
        .env_remove("OPENAI_BASE_URL")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the SDK script finishes within 3 minutes (failure guard)")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "SDK checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for check in [
        "models.list",
        "chat.completions",
        "chat.completions stream",
        "embeddings",
        "400 -> BadRequestError",
    ] {
        assert!(
            stdout.contains(&format!("ok   {check}")),
            "check {check:?} did not pass:\n{stdout}"
        );
    }

    // The SDK's requests really reached the host, with the bare wire ids, and the unknown
    // provider's request never did.
    let stats = host.stats();
    let chats: Vec<Option<String>> = stats
        .received_on("/v1/chat/completions")
        .into_iter()
        .map(|r| r.model)
        .collect();
    assert_eq!(
        chats,
        vec![Some("qwen-tiny".to_owned()), Some("qwen-tiny".to_owned())],
        "the host saw exactly the chat and the stream, with the bare wire id"
    );
    let embeds: Vec<Option<String>> = stats
        .received_on("/v1/embeddings")
        .into_iter()
        .map(|r| r.model)
        .collect();
    assert_eq!(embeds, vec![Some("bge-m3".to_owned())]);

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    drop(fleet);
}
