//! A small HTTP client for the connectors: plain `http://` to fleet hosts, TCP keepalive, and
//! per-call timeouts.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// A pooled HTTP/1.1 client with TCP keepalive.
#[derive(Clone)]
pub(crate) struct HostClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

/// A buffered answer.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("")
    }
}

impl HostClient {
    pub fn new(timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(30)));
        http.set_connect_timeout(Some(timeout));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(http);
        HostClient { inner, timeout }
    }

    fn request(
        &self,
        method: hyper::Method,
        url: &str,
        headers: &[(String, String)],
        body: Option<Bytes>,
    ) -> Result<hyper::Request<Full<Bytes>>, String> {
        let mut b = hyper::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            b = b.header(k.as_str(), v.as_str());
        }
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        b.body(Full::new(body.unwrap_or_default()))
            .map_err(|e| format!("bad request for {}: {e}", redact(url)))
    }

    /// Sends a request and buffers the whole answer, within the client timeout.
    pub async fn call(
        &self,
        method: hyper::Method,
        url: &str,
        headers: &[(String, String)],
        body: Option<Bytes>,
    ) -> Result<Answer, String> {
        let req = self.request(method, url, headers, body)?;
        let fut = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| format!("{}: {e}", redact(url)))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("{}: body: {e}", redact(url)))?
                .to_bytes();
            Ok(Answer { status, body })
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("{}: timed out after {:?}", redact(url), self.timeout))?
    }

    /// `GET` buffered.
    pub async fn get(&self, url: &str, headers: &[(String, String)]) -> Result<Answer, String> {
        self.call(hyper::Method::GET, url, headers, None).await
    }

    /// Opens a streaming `GET` (for `/api/events`): only the response head is bounded by the
    /// timeout; the body has no read timeout (the stream is silent when idle).
    ///
    /// The stream runs on its own connection through [`crate::wire`], whose body reads the
    /// socket whenever it is polled: a caller that reads at its own pace (the connector reads
    /// once per `event_batch` window) gets everything that arrived meanwhile in a few reads,
    /// with no connection task reading one chunk ahead in between.
    pub async fn open_stream(
        &self,
        url: &str,
        headers: &[(String, String)],
    ) -> Result<hyper::Response<crate::wire::WireBody>, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("bad request for {}: {e}", redact(url)))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("{}: only http:// hosts are followed", redact(url)));
        }
        let (Some(authority), Some(target)) = (uri.authority(), uri.path_and_query()) else {
            return Err(format!("bad request for {}: no host", redact(url)));
        };
        let pool = crate::wire::WirePool::new(
            authority.clone(),
            self.timeout,
            Some(Duration::from_secs(30)),
            1,
        )
        .ok_or_else(|| format!("bad request for {}: bad host", redact(url)))?;
        let mut parsed = Vec::with_capacity(headers.len() + 1);
        for (k, v) in headers {
            let k = http::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| format!("bad request for {}: header {k}: {e}", redact(url)))?;
            let v = http::HeaderValue::from_str(v)
                .map_err(|e| format!("bad request for {}: header {k}: {e}", redact(url)))?;
            if k != http::header::ACCEPT {
                parsed.push((k, v));
            }
        }
        parsed.push((
            http::header::ACCEPT,
            http::HeaderValue::from_static("text/event-stream"),
        ));
        let visit = |f: &mut dyn FnMut(&http::HeaderName, &http::HeaderValue)| {
            for (k, v) in &parsed {
                f(k, v);
            }
        };
        let head = pool.encode_head(&hyper::Method::GET, target.as_str(), &visit, 0);
        let empty = Bytes::new();
        let send = std::sync::Arc::new(pool).send(0, &hyper::Method::GET, &head, &empty);
        tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| format!("{}: timed out after {:?}", redact(url), self.timeout))?
            .map_err(|e| format!("{}: {e}", redact(url)))
    }
}

/// Drops any query string and userinfo from a URL before it reaches a log line.
pub(crate) fn redact(url: &str) -> String {
    let no_query = url.split('?').next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host)) => format!("{scheme}://***@{host}"),
            None => no_query.to_owned(),
        },
        None => no_query.to_owned(),
    }
}
