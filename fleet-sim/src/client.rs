//! A minimal HTTP/1.1 client for tests, examples and benchmarks (one request per connection,
//! or a kept-alive [`Conn`]).

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A complete response.
#[derive(Debug, Clone)]
pub struct ClientResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Bytes,
}

impl ClientResponse {
    /// First value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Client errors (connection refused, reset, timeout...).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientError(pub String);

/// A kept-alive HTTP/1.1 connection.
pub struct Conn {
    tx: http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("authority", &self.authority)
            .finish()
    }
}

fn authority(base_url: &str) -> &str {
    base_url.trim_start_matches("http://").trim_end_matches('/')
}

impl Conn {
    /// Connects to `http://host:port`.
    ///
    /// # Errors
    /// When the TCP connection or handshake fails.
    pub async fn connect(base_url: &str) -> Result<Conn, ClientError> {
        let auth = authority(base_url).to_owned();
        let stream = TcpStream::connect(&auth)
            .await
            .map_err(|e| ClientError(format!("connect {auth}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (tx, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            tx,
            authority: auth,
        })
    }

    /// Sends one request and returns the response head; the body is read by the caller.
    ///
    /// # Errors
    /// When the request fails.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(body))
            .map_err(|e| ClientError(e.to_string()))?;
        self.tx
            .ready()
            .await
            .map_err(|e| ClientError(e.to_string()))?;
        self.tx
            .send_request(req)
            .await
            .map_err(|e| ClientError(e.to_string()))
    }

    /// Sends one request and reads the whole body.
    ///
    /// # Errors
    /// When the request fails or the body is cut.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<ClientResponse, ClientError> {
        let resp = self.send(method, path, headers, body).await?;
        collect(resp).await
    }
}

/// Reads a response fully.
///
/// # Errors
/// When the body is cut.
pub async fn collect(
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<ClientResponse, ClientError> {
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
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError(format!("body: {e}")))?
        .to_bytes();
    Ok(ClientResponse {
        status,
        headers,
        body,
    })
}

/// One request on a fresh connection, bounded by a generous 30 s guard.
///
/// # Errors
/// When the connection or request fails, or the guard elapses.
pub async fn request(
    base_url: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<ClientResponse, ClientError> {
    let body = body.into();
    let fut = async {
        let mut c = Conn::connect(base_url).await?;
        c.request(method, path, headers, body).await
    };
    tokio::time::timeout(Duration::from_secs(30), fut)
        .await
        .map_err(|_| ClientError("timed out".into()))?
}

/// `GET base_url + path`.
///
/// # Errors
/// As [`request`].
pub async fn get(base_url: &str, path: &str) -> Result<ClientResponse, ClientError> {
    request(base_url, Method::GET, path, &[], Bytes::new()).await
}

/// `POST` a JSON value with `Content-Type: application/json`.
///
/// # Errors
/// As [`request`].
pub async fn post_json(
    base_url: &str,
    path: &str,
    body: &serde_json::Value,
) -> Result<ClientResponse, ClientError> {
    let bytes = serde_json::to_vec(body).map_err(|e| ClientError(e.to_string()))?;
    request(
        base_url,
        Method::POST,
        path,
        &[("content-type", "application/json")],
        bytes,
    )
    .await
}
