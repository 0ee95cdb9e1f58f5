//! The real [`BenchClient`]: hyper 1 over a pooled connector (HTTP, and HTTPS with webpki roots
//! for cloud targets), streaming SSE with a timestamp per network read.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::error::BenchError;
use crate::io::{BenchClient, BenchRequest, Observation, RUN_HEADER};
use crate::model::{HostKind, ServerTimings, Target};

/// What one SSE `data:` payload turned out to be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventInfo {
    /// `[DONE]`.
    pub done: bool,
    /// Carries model output (content, reasoning, text or tool calls).
    pub content: bool,
    /// A llama-swap loading chunk (`reasoning_content` without `id`/`object`): not output.
    pub loading: bool,
    /// A choice carried a `finish_reason`.
    pub finished: bool,
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<u32>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<u32>,
    /// llama.cpp `timings`.
    pub timings: Option<ServerTimings>,
    /// An `error` object in the stream.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default)]
    id: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    object: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    timings: Option<ServerTimings>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Delta<'a>>,
    #[serde(default)]
    finish_reason: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
}

fn non_empty(s: &Option<Cow<'_, str>>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Whether some `key` (e.g. `"content":`) is followed by a non-empty JSON string.
fn nonempty_string_after(data: &[u8], key: &[u8]) -> bool {
    let mut rest = data;
    while let Some(i) = find(rest, key) {
        rest = &rest[i + key.len()..];
        let v = rest.trim_ascii_start();
        if v.first() == Some(&b'"') && v.get(1).is_some_and(|&c| c != b'"') {
            return true;
        }
    }
    false
}

/// The fast path for the common mid-stream chunk: decides content / loading by scanning for
/// keys (a JSON string cannot contain an unescaped `"content":`), and defers to the full parser
/// for anything that may carry usage, timings, errors or a finish reason.
fn fast_classify(data: &[u8]) -> Option<EventInfo> {
    if data.first() != Some(&b'{') {
        return None;
    }
    for needle in [
        &b"\"timings\""[..],
        b"\"usage\"",
        b"\"error\"",
        b"\"message\"",
        b"\"finish_reason\":\"",
        b"\"finish_reason\": \"",
    ] {
        if find(data, needle).is_some() {
            return None;
        }
    }
    let mut info = EventInfo::default();
    let tool = find(data, b"\"tool_calls\":").is_some_and(|i| {
        let v = data[i + 13..].trim_ascii_start();
        matches!(v.first(), Some(b'[' | b'{'))
    });
    if tool
        || nonempty_string_after(data, b"\"content\":")
        || nonempty_string_after(data, b"\"text\":")
    {
        info.content = true;
    } else if nonempty_string_after(data, b"\"reasoning_content\":") {
        let anonymous = find(data, b"\"id\":").is_none() && find(data, b"\"object\":").is_none();
        if anonymous {
            info.loading = true;
        } else {
            info.content = true;
        }
    }
    Some(info)
}

/// Classifies one SSE `data:` payload (or a whole non-streaming JSON body).
pub fn parse_sse_event(data: &[u8]) -> EventInfo {
    let data = data.trim_ascii();
    if let Some(info) = fast_classify(data) {
        return info;
    }
    parse_full(data)
}

/// The full (serde) classification; [`parse_sse_event`] uses it whenever the fast path defers.
fn parse_full(data: &[u8]) -> EventInfo {
    if data == b"[DONE]" {
        return EventInfo {
            done: true,
            ..EventInfo::default()
        };
    }
    let Ok(c) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return EventInfo::default();
    };
    let mut info = EventInfo {
        timings: c.timings,
        ..EventInfo::default()
    };
    if let Some(u) = c.usage {
        info.prompt_tokens = u.prompt_tokens;
        info.completion_tokens = u.completion_tokens;
    }
    if let Some(e) = c.error {
        let msg = e
            .get("message")
            .and_then(|m| m.as_str())
            .map_or_else(|| e.to_string(), str::to_owned);
        info.error = Some(msg);
    }
    let anonymous = c.id.is_none() && c.object.is_none();
    for ch in &c.choices {
        if ch.finish_reason.is_some() {
            info.finished = true;
        }
        if non_empty(&ch.text) {
            info.content = true;
        }
        for d in [&ch.delta, &ch.message].into_iter().flatten() {
            if non_empty(&d.content) || d.tool_calls.is_some() {
                info.content = true;
            } else if non_empty(&d.reasoning_content) {
                if anonymous {
                    info.loading = true;
                } else {
                    info.content = true;
                }
            }
        }
    }
    info
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// The hyper-based benchmark client (connection pool shared by all requests).
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    user_agent: HeaderValue,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient::new()
    }
}

impl HttpClient {
    /// A client with a large keep-alive pool (1024 idle connections per host, dropped after
    /// 3 s idle: below llama-server's 5 s keep-alive timeout).
    pub fn new() -> HttpClient {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let conn = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(3))
            .build(conn);
        HttpClient {
            client,
            user_agent: HeaderValue::from_static(concat!("boo-bench/", env!("CARGO_PKG_VERSION"))),
        }
    }

    fn request(
        &self,
        target: &Target,
        path: &str,
        body: Bytes,
        run_id: &str,
    ) -> Result<Request<Full<Bytes>>, String> {
        let uri = format!("{}{}", target.base_url.trim_end_matches('/'), path);
        let mut b = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, self.user_agent.clone())
            .header(RUN_HEADER, run_id);
        if let Some(k) = &target.api_key {
            b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        b.body(Full::new(body))
            .map_err(|e| format!("bad request: {e}"))
    }
}

fn now_us(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(300)]);
    s.trim().to_owned()
}

#[async_trait]
impl BenchClient for HttpClient {
    async fn send(&self, target: &Target, req: &BenchRequest, origin: Instant) -> Observation {
        let mut o = Observation::default();
        let r = match self.request(target, req.path, req.body.clone(), &req.run_id) {
            Ok(r) => r,
            Err(e) => {
                o.sent_us = now_us(origin);
                o.error = Some(e);
                return o;
            }
        };
        o.sent_us = now_us(origin);
        let work = async {
            let resp = match self.client.request(r).await {
                Ok(r) => r,
                // A pooled keep-alive connection the server had just closed (llama-server
                // closes idle connections after 5 s): retry once on a fresh connection, and
                // measure from the retry (the lost attempt shows as queue time).
                Err(e) if !e.is_connect() => {
                    let retry = self.request(target, req.path, req.body.clone(), &req.run_id);
                    let Ok(r2) = retry else {
                        o.error = Some(format!("transport: {e}"));
                        return;
                    };
                    o.retries = 1;
                    o.sent_us = now_us(origin);
                    match self.client.request(r2).await {
                        Ok(r) => r,
                        Err(e2) => {
                            o.error = Some(format!("transport: {e2} (retried after: {e})"));
                            return;
                        }
                    }
                }
                Err(e) => {
                    o.error = Some(format!("transport: {e}"));
                    return;
                }
            };
            o.status = resp.status().as_u16();
            let sse = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let mut body = resp.into_body();
            if !(200..300).contains(&o.status) || !sse {
                let mut all = BytesMut::new();
                while let Some(f) = body.frame().await {
                    match f {
                        Ok(f) => {
                            if let Ok(d) = f.into_data()
                                && all.len() < 1 << 20
                            {
                                all.extend_from_slice(&d);
                            }
                        }
                        Err(e) => {
                            o.error = Some(format!("body: {e}"));
                            return;
                        }
                    }
                }
                let t = now_us(origin);
                if !(200..300).contains(&o.status) {
                    o.error = Some(format!("HTTP {}: {}", o.status, snippet(&all)));
                    return;
                }
                // A non-streaming answer: one chunk.
                let info = parse_sse_event(&all);
                o.chunks = 1;
                o.first_chunk_us = Some(t);
                o.last_chunk_us = Some(t);
                if info.content {
                    o.content_us.push(t);
                }
                o.prompt_tokens = info.prompt_tokens;
                o.completion_tokens = info.completion_tokens;
                o.timings = info.timings;
                o.error = info.error;
                return;
            }
            let mut buf = BytesMut::new();
            let mut done = false;
            let mut finished = false;
            while let Some(f) = body.frame().await {
                let data = match f {
                    Ok(f) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    Err(e) => {
                        o.error = Some(format!("stream cut: {e}"));
                        return;
                    }
                };
                let t = now_us(origin);
                buf.extend_from_slice(&data);
                while let Some(nl) = memchr::memchr(b'\n', &buf) {
                    let line = buf.split_to(nl + 1);
                    let line = line.trim_ascii();
                    let Some(payload) = line.strip_prefix(b"data:") else {
                        continue;
                    };
                    let info = parse_sse_event(payload);
                    o.chunks += 1;
                    o.first_chunk_us.get_or_insert(t);
                    o.last_chunk_us = Some(t);
                    if info.done {
                        done = true;
                        continue;
                    }
                    if info.loading {
                        o.loading_chunks += 1;
                    }
                    if info.content {
                        o.content_us.push(t);
                    }
                    finished |= info.finished;
                    if info.prompt_tokens.is_some() {
                        o.prompt_tokens = info.prompt_tokens;
                    }
                    if info.completion_tokens.is_some() {
                        o.completion_tokens = info.completion_tokens;
                    }
                    if info.timings.is_some() {
                        o.timings = info.timings;
                    }
                    if let Some(e) = info.error {
                        o.error = Some(format!("stream error: {e}"));
                    }
                }
            }
            if !done && !finished && o.error.is_none() {
                o.error = Some("stream ended before completion".into());
            }
        };
        if tokio::time::timeout(req.timeout, work).await.is_err() {
            o.error = Some(format!("timed out after {:?}", req.timeout));
        }
        o
    }

    async fn tokenize(&self, target: &Target, text: &str) -> Result<Option<u32>, BenchError> {
        let path = match target.kind {
            HostKind::LlamaSwap => format!("/upstream/{}/tokenize", target.model),
            HostKind::LlamaServer => "/tokenize".to_owned(),
            HostKind::Openai => return Ok(None),
        };
        let body = serde_json::to_vec(&serde_json::json!({ "content": text }))
            .map_err(|e| BenchError::Client(e.to_string()))?;
        let r = self
            .request(target, &path, Bytes::from(body), "tokenize")
            .map_err(BenchError::Client)?;
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(r))
            .await
            .map_err(|_| BenchError::Client("tokenize timed out".into()))?
            .map_err(|e| BenchError::Client(format!("tokenize: {e}")))?;
        if !resp.status().is_success() {
            return Ok(None);
        }
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| BenchError::Client(format!("tokenize body: {e}")))?
            .to_bytes();
        let v: serde_json::Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        Ok(v.get("tokens")
            .and_then(|t| t.as_array())
            .map(|a| u32::try_from(a.len()).unwrap_or(u32::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_chunks() {
        let role = br#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}]}"#;
        let i = parse_sse_event(role);
        assert!(!i.content && !i.loading && !i.finished);
        let tok = br#" {"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"he said \"hi\""}}]}"#;
        assert!(parse_sse_event(tok).content);
        let think = br#"{"id":"c1","object":"chat.completion.chunk","choices":[{"delta":{"reasoning_content":"hmm"}}]}"#;
        let i = parse_sse_event(think);
        assert!(i.content && !i.loading);
        let loading =
            br#"{"choices":[{"delta":{"reasoning_content":"llama-swap loading model: qwen"}}]}"#;
        let i = parse_sse_event(loading);
        assert!(i.loading && !i.content);
        let fin = br#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"length"}],"timings":{"cache_n":0,"prompt_n":120,"prompt_ms":120.5,"prompt_per_second":995.8,"predicted_n":32,"predicted_ms":640.0,"predicted_per_token_ms":20.0,"predicted_per_second":50.0}}"#;
        let i = parse_sse_event(fin);
        assert!(i.finished && !i.content);
        let t = i.timings.unwrap();
        assert_eq!((t.prompt_n, t.predicted_n), (120, 32));
        assert!((t.predicted_per_second - 50.0).abs() < 1e-9);
        let usage = br#"{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":126,"completion_tokens":32,"total_tokens":158}}"#;
        let i = parse_sse_event(usage);
        assert_eq!(
            (i.prompt_tokens, i.completion_tokens),
            (Some(126), Some(32))
        );
        assert!(parse_sse_event(b" [DONE]").done);
        let err = br#"{"error":{"code":500,"message":"boom","type":"server_error"}}"#;
        assert_eq!(parse_sse_event(err).error.as_deref(), Some("boom"));
        let text = br#"{"id":"c","object":"text_completion","choices":[{"text":"abc","index":0}]}"#;
        assert!(parse_sse_event(text).content);
        let tool = br#"{"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#;
        assert!(parse_sse_event(tool).content);
        assert_eq!(parse_sse_event(b"not json"), EventInfo::default());
        let spaced = br#"{"id": "c", "object": "chat.completion.chunk", "choices": [{"delta": {"content": "x"}, "finish_reason": null}]}"#;
        assert!(parse_sse_event(spaced).content);
        let empty =
            br#"{"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"content":""}}]}"#;
        assert!(!parse_sse_event(empty).content);
    }

    /// The fast path agrees with the full parser wherever it answers.
    #[test]
    fn fast_path_matches_full_parse() {
        let bodies: Vec<String> = vec![
            r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":null},"finish_reason":null}]}"#.into(),
            r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" the"},"finish_reason":null}]}"#.into(),
            r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"say \"content\":\"x\""}}]}"#.into(),
            r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":""}}]}"#.into(),
            r#"{"choices":[{"delta":{"reasoning_content":"llama-swap loading model: qwen"}}]}"#.into(),
            r#"{"choices":[{"delta":{"reasoning_content":""}}]}"#.into(),
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"reasoning_content":"think"}}]}"#.into(),
            r#"{"id":"c","object":"text_completion","choices":[{"text":"abc","index":0,"finish_reason":null}]}"#.into(),
            r#"{"id":"c","object":"text_completion","choices":[{"text":"","index":0}]}"#.into(),
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#.into(),
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"delta":{"tool_calls":null,"content":null}}]}"#.into(),
        ];
        for b in &bodies {
            let fast = fast_classify(b.as_bytes()).expect("fast path answers mid-stream chunks");
            assert_eq!(fast, parse_full(b.as_bytes()), "{b}");
        }
        for b in [
            r#"{"id":"c","choices":[{"delta":{},"finish_reason":"stop"}],"timings":{"predicted_n":3}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
            r#"{"error":{"message":"boom"}}"#,
            "[DONE]",
        ] {
            assert!(fast_classify(b.as_bytes()).is_none(), "{b}");
        }
    }
}
