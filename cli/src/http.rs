//! A small HTTP/1.1 client for talking to a running gateway's control API.
//!
//! `http://` and `https://` (rustls with the webpki roots, ring provider). Connection and
//! TLS failures become [`Unreachable`], a one-line error naming the gateway URL.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// How long to wait for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a non-streaming request may take in total.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway could not be reached (connection refused, DNS failure, connect timeout).
#[derive(Debug)]
pub struct Unreachable {
    /// The gateway URL as the user gave it.
    pub url: String,
    /// What went wrong, in a few words.
    pub reason: String,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach the gateway at {} ({}); is it running? (set --gateway or BOOCONTROL_URL)",
            self.url, self.reason
        )
    }
}

impl std::error::Error for Unreachable {}

/// A complete (non-streaming) reply.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// The body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client bound to one gateway base URL and an optional admin token.
#[derive(Clone)]
pub struct Client {
    url: String,
    /// `scheme://authority[/prefix]` without a trailing `/`.
    base: String,
    token: Option<String>,
    inner: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Client {
    /// A client for `gateway_url` (`http://host[:port][/prefix]`); `token` is sent as
    /// `Authorization: Bearer …` on every request when set.
    pub fn new(gateway_url: &str, token: Option<String>) -> anyhow::Result<Self> {
        let uri: Uri = gateway_url
            .parse()
            .with_context(|| format!("--gateway: {gateway_url:?} is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            bail!("--gateway: {gateway_url:?} must start with http:// or https://");
        }
        let Some(authority) = uri.authority() else {
            bail!("--gateway: {gateway_url:?} has no host");
        };
        let base = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            authority,
            uri.path().trim_end_matches('/')
        );
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .context("setting up TLS")?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Client {
            url: gateway_url.trim_end_matches('/').to_owned(),
            base,
            token: token.filter(|t| !t.is_empty()),
            inner: HyperClient::builder(TokioExecutor::new()).build(https),
        })
    }

    /// The gateway URL as given (without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether an admin token will be sent.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// `GET path` and read the whole body.
    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.complete(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body and read the whole reply.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<Reply> {
        let bytes = Bytes::from(serde_json::to_vec(body)?);
        self.complete(Method::POST, path, Some(bytes)).await
    }

    /// `GET path` and hand back the status and the body as it arrives (for event streams).
    pub async fn stream(&self, path: &str) -> anyhow::Result<(u16, Incoming)> {
        let resp = self.send(Method::GET, path, None).await?;
        Ok((resp.status().as_u16(), resp.into_body()))
    }

    async fn complete(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<Reply> {
        let what = format!("{method} {}{path}", self.url);
        let work = async {
            let resp = self.send(method, path, body).await?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .with_context(|| format!("{what}: reading the reply"))?
                .to_bytes();
            Ok::<_, anyhow::Error>(Reply { status, body })
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, work).await {
            Ok(r) => r,
            Err(_) => bail!("{what}: no complete reply within {REQUEST_TIMEOUT:?}"),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<hyper::Response<Incoming>> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(ACCEPT, "application/json, text/event-stream");
        if body.is_some() {
            req = req.header(CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &self.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                anyhow::anyhow!("--admin-token: contains characters not allowed in an HTTP header")
            })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .with_context(|| format!("{method} {}{path}: building the request", self.url))?;
        self.inner.request(req).await.map_err(|e| {
            let reason = root_cause(&e);
            if e.is_connect() {
                Unreachable {
                    url: self.url.clone(),
                    reason,
                }
                .into()
            } else {
                anyhow::anyhow!("{method} {}{path}: {reason}", self.url)
            }
        })
    }
}

/// The innermost error message (e.g. "Connection refused (os error 111)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Extracts a human message from an error body: OpenAI-shaped `{"error":{"message":..}}`,
/// `{"error":".."}`, or the raw text.
pub fn error_message(body: &[u8]) -> String {
    let text = one_line(&String::from_utf8_lossy(body));
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return text;
    };
    match v.get("error") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(e) => e
            .get("message")
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| e.to_string(), str::to_owned),
        None => text,
    }
}

/// Whitespace collapsed to single spaces, at most 200 characters (HTML error pages stay short).
fn one_line(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let line = words.join(" ");
    match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_forms() {
        let c = Client::new("http://127.0.0.1:9503/", None).unwrap();
        assert_eq!(c.base, "http://127.0.0.1:9503");
        let c = Client::new("https://gw.lan/boo/", Some(String::new())).unwrap();
        assert_eq!(c.base, "https://gw.lan/boo");
        assert!(!c.has_token());
        let e = Client::new("ftp://x", None).unwrap_err().to_string();
        assert!(e.contains("--gateway") && e.contains("http://"), "{e}");
        let e = Client::new("localhost:9503", None).unwrap_err().to_string();
        assert!(e.contains("--gateway"), "{e}");
    }

    #[test]
    fn debug_masks_token() {
        let c = Client::new("http://x", Some("s3cret".into())).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":{"message":"unknown provider: x"}}"#),
            "unknown provider: x"
        );
        assert_eq!(
            error_message(br#"{"error":"host offline"}"#),
            "host offline"
        );
        assert_eq!(error_message(b"plain\n"), "plain");
        let page = format!("<html>\n  <body>{}</body>\n</html>", "x".repeat(500));
        let m = error_message(page.as_bytes());
        assert!(m.starts_with("<html> <body>xxx") && m.ends_with('…'), "{m}");
        assert_eq!(m.chars().count(), 201);
    }
}
