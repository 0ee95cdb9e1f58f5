//! The real HTTP client against a hand-written server over TCP: llama-swap loading chunks are
//! not content, timestamps per chunk, `usage`/`timings` parsed, the run header sent, error
//! statuses reported, and `/upstream/<model>/tokenize` used for token counts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boo_bench::{BenchClient, BenchRequest, HostKind, HttpClient, RUN_HEADER, Target};
use boo_fleet_core::Lane;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Reads one HTTP/1.1 request (headers + content-length body).
async fn read_request(s: &mut tokio::net::TcpStream) -> (String, String, String) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).await.unwrap();
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut tmp).await.unwrap();
                buf.extend_from_slice(&tmp[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
            let path = head.split_whitespace().nth(1).unwrap().to_owned();
            return (path, head, body);
        }
    }
}

async fn serve(heads: Arc<Mutex<Vec<String>>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let heads = Arc::clone(&heads);
            tokio::spawn(async move {
                let (path, head, body) = read_request(&mut s).await;
                heads.lock().unwrap().push(head);
                match path.as_str() {
                    "/upstream/qwen/tokenize" => {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                        let n = v["content"].as_str().unwrap().len().div_ceil(4);
                        let out = serde_json::json!({ "tokens": vec![1; n] }).to_string();
                        let r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                            out.len()
                        );
                        s.write_all(r.as_bytes()).await.unwrap();
                    }
                    "/busy/v1/chat/completions" => {
                        let out = r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#;
                        let r = format!(
                            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                            out.len()
                        );
                        s.write_all(r.as_bytes()).await.unwrap();
                    }
                    _ => {
                        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
                            .await
                            .unwrap();
                        let send = |e: String| format!("data: {e}\n\n");
                        // llama-swap's loading stream: no id/object, reasoning_content.
                        for msg in ["llama-swap loading model: qwen", ".", "Done! (0.09s)"] {
                            let e = serde_json::json!({"choices":[{"delta":{"reasoning_content": msg}}]});
                            s.write_all(send(e.to_string()).as_bytes()).await.unwrap();
                            tokio::time::sleep(Duration::from_millis(30)).await;
                        }
                        let id = r#""id":"chatcmpl-1","object":"chat.completion.chunk""#;
                        s.write_all(send(format!(r#"{{{id},"choices":[{{"index":0,"delta":{{"role":"assistant","content":null}}}}]}}"#)).as_bytes()).await.unwrap();
                        for w in ["Hello", " there", ",", " friend", "!"] {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            s.write_all(send(format!(r#"{{{id},"choices":[{{"index":0,"delta":{{"content":"{w}"}},"finish_reason":null}}]}}"#)).as_bytes()).await.unwrap();
                        }
                        s.write_all(send(format!(r#"{{{id},"choices":[{{"index":0,"delta":{{}},"finish_reason":"stop"}}]}}"#)).as_bytes()).await.unwrap();
                        s.write_all(send(format!(r#"{{{id},"choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}},"timings":{{"cache_n":0,"prompt_n":12,"prompt_ms":6.0,"prompt_per_second":2000.0,"predicted_n":5,"predicted_ms":50.0,"predicted_per_second":100.0}}}}"#)).as_bytes()).await.unwrap();
                        s.write_all(b"data: [DONE]\n\n").await.unwrap();
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    url
}

fn target(url: &str) -> Target {
    Target {
        id: "t".into(),
        provider: "p".into(),
        model: "qwen".into(),
        base_url: url.into(),
        kind: HostKind::LlamaSwap,
        lane: Lane::Local,
        cloud_budget: None,
        api_key: Some("sk-test".into()),
    }
}

fn request() -> BenchRequest {
    BenchRequest {
        path: "/v1/chat/completions",
        body: Bytes::from_static(br#"{"model":"qwen","stream":true}"#),
        run_id: "run-7".into(),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn loading_chunks_are_not_content_and_timings_are_read() {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let url = serve(Arc::clone(&heads)).await;
    let c = HttpClient::new();
    let origin = Instant::now();
    let o = c.send(&target(&url), &request(), origin).await;
    assert_eq!(o.error, None);
    assert_eq!(o.status, 200);
    assert_eq!(o.loading_chunks, 3);
    assert_eq!(o.content_us.len(), 5);
    // Loading took ≥ 90 ms before the role chunk: TTFT counts from sent to the first *content*.
    let ttft = o.content_us[0] - o.sent_us;
    assert!(ttft >= 90_000, "TTFT {ttft} µs");
    let first_any = o.first_chunk_us.unwrap() - o.sent_us;
    assert!(first_any < 60_000, "first chunk {first_any} µs");
    assert!(
        o.content_us.windows(2).all(|w| w[1] >= w[0] + 5_000),
        "{:?}",
        o.content_us
    );
    assert_eq!(o.chunks, 3 + 1 + 5 + 1 + 1 + 1);
    assert_eq!((o.prompt_tokens, o.completion_tokens), (Some(12), Some(5)));
    let t = o.timings.unwrap();
    assert_eq!((t.prompt_n, t.predicted_n), (12, 5));
    assert_eq!(t.predicted_per_second, 100.0);
    assert!(o.last_chunk_us.unwrap() >= *o.content_us.last().unwrap());
    let head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains(&format!("{RUN_HEADER}: run-7")), "{head}");
    assert!(head.contains("authorization: bearer sk-test"), "{head}");
    assert!(head.contains("user-agent: boo-bench/"), "{head}");
}

#[tokio::test]
async fn errors_and_tokenize() {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let url = serve(heads).await;
    let c = HttpClient::new();
    let mut busy = target(&url);
    busy.base_url = format!("{url}/busy");
    let o = c.send(&busy, &request(), Instant::now()).await;
    assert_eq!(o.status, 503);
    assert_eq!(
        o.error.as_deref(),
        Some(
            r#"HTTP 503: {"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#
        )
    );
    assert!(o.content_us.is_empty());
    // 17 characters → 5 tokens through /upstream/qwen/tokenize.
    assert_eq!(
        c.tokenize(&target(&url), "abcdefghijklmnopq")
            .await
            .unwrap(),
        Some(5)
    );
    // No tokenizer for a plain OpenAI target; nothing listening → a transport error.
    let mut openai = target(&url);
    openai.kind = HostKind::Openai;
    assert_eq!(c.tokenize(&openai, "abc").await.unwrap(), None);
    let dead = target("http://127.0.0.1:9");
    let o = c.send(&dead, &request(), Instant::now()).await;
    assert!(
        o.error.as_deref().unwrap().starts_with("transport:"),
        "{:?}",
        o.error
    );
    assert_eq!(o.status, 0);
}
