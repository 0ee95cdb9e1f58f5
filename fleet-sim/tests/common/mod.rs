//! Helpers shared by the integration tests: SSE readers with failure guards.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::time::Duration;

use boo_fleet_sim::client::{ClientResponse, Conn};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;

/// Generous guard for anything that should happen "soon" on a noisy machine.
pub const GUARD: Duration = Duration::from_secs(20);

/// An open streaming response read incrementally.
pub struct Stream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    _conn: Conn,
}

impl Stream {
    pub async fn open(
        base: &str,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Stream {
        let mut conn = tokio::time::timeout(GUARD, Conn::connect(base))
            .await
            .expect("connect guard")
            .expect("connect");
        let resp = tokio::time::timeout(GUARD, conn.send(method, path, headers, body))
            .await
            .expect("head guard")
            .expect("send");
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        Stream {
            status,
            headers,
            body: resp.into_body(),
            buf: Vec::new(),
            _conn: conn,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Next SSE message (text up to a blank line), `Ok(None)` at a clean end, `Err` when cut.
    pub async fn next_message(&mut self) -> Result<Option<String>, String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let msg = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(Some(msg));
            }
            match tokio::time::timeout(GUARD, self.body.frame()).await {
                Err(_) => return Err("guard elapsed".into()),
                Ok(None) => {
                    return if self.buf.is_empty() {
                        Ok(None)
                    } else {
                        Err("trailing bytes".into())
                    };
                }
                Ok(Some(Err(e))) => return Err(format!("body error: {e}")),
                Ok(Some(Ok(f))) => {
                    if let Ok(d) = f.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }

    /// Reads every message until the end; `Err` carries the messages read before a cut.
    pub async fn all_messages(&mut self) -> Result<Vec<String>, Vec<String>> {
        let mut out = Vec::new();
        loop {
            match self.next_message().await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => return Ok(out),
                Err(_) => return Err(out),
            }
        }
    }

    /// Next llama-swap event as (type, decoded data).
    pub async fn next_event(&mut self) -> Option<(String, Value)> {
        let msg = self.next_message().await.ok()??;
        parse_event(&msg)
    }

    /// Reads events until `pred` matches one (guarded).
    pub async fn event_where(
        &mut self,
        mut pred: impl FnMut(&str, &Value) -> bool,
    ) -> Option<(String, Value)> {
        loop {
            let (t, v) = self.next_event().await?;
            if pred(&t, &v) {
                return Some((t, v));
            }
        }
    }
}

/// Parses `event:message\ndata:{"type":..,"data":"<json>"}`.
pub fn parse_event(msg: &str) -> Option<(String, Value)> {
    let mut lines = msg.lines();
    assert_eq!(lines.next(), Some("event:message"), "framing of {msg:?}");
    let data = lines.next()?.strip_prefix("data:")?;
    assert!(lines.next().is_none(), "one data line per message: {msg:?}");
    let env: Value = serde_json::from_str(data).ok()?;
    let inner = env["data"]
        .as_str()
        .expect("data is a JSON string (double-encoded)");
    Some((
        env["type"].as_str()?.to_owned(),
        serde_json::from_str(inner).expect("inner data is JSON"),
    ))
}

/// `data: {...}` lines of an OpenAI-style stream, decoded (without `[DONE]`).
pub fn data_chunks(msgs: &[String]) -> Vec<Value> {
    msgs.iter()
        .filter_map(|m| m.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("chunk is JSON"))
        .collect()
}

pub fn chat(model: &str, content: &str, max_tokens: u32) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens})
}

pub async fn post(base: &str, path: &str, body: &Value) -> ClientResponse {
    boo_fleet_sim::client::post_json(base, path, body)
        .await
        .expect("request")
}

pub async fn get(base: &str, path: &str) -> ClientResponse {
    boo_fleet_sim::client::get(base, path)
        .await
        .expect("request")
}

pub async fn open_json_stream(base: &str, path: &str, body: &Value) -> Stream {
    Stream::open(
        base,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        Bytes::from(serde_json::to_vec(body).expect("json")),
    )
    .await
}
