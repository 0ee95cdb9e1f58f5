//! [`HttpLoader`]: a [`ModelLoader`] that talks to the host itself (for runs outside the gateway,
//! e.g. tests and the perf bench). The gateway uses its fleet `warm` action instead.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::BenchError;
use crate::io::ModelLoader;
use crate::model::{HostKind, LoadReport, Target};

/// Loads a model by asking the host directly: llama-swap `GET /running` (already ready?), then
/// `GET /upstream/<model>/health`, which makes llama-swap start the model and answers once it
/// is ready; llama-server `GET /health` until 200. Other hosts are assumed ready.
#[derive(Debug, Clone)]
pub struct HttpLoader {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl HttpLoader {
    /// Gives up after `timeout`.
    pub fn new(timeout: Duration) -> HttpLoader {
        HttpLoader {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            timeout,
        }
    }

    async fn get(&self, t: &Target, path: &str) -> Result<(u16, Bytes), String> {
        let uri = format!("{}{}", t.base_url.trim_end_matches('/'), path);
        let mut b = Request::get(uri);
        if let Some(k) = &t.api_key {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let r = b.body(Empty::new()).map_err(|e| e.to_string())?;
        let resp = self.client.request(r).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    fn err(t: &Target, reason: String) -> BenchError {
        BenchError::Load {
            provider: t.provider.clone(),
            model: t.model.clone(),
            reason,
        }
    }
}

#[async_trait]
impl ModelLoader for HttpLoader {
    async fn ensure_loaded(&self, t: &Target) -> Result<LoadReport, BenchError> {
        let start = Instant::now();
        let deadline = start + self.timeout;
        match t.kind {
            HostKind::Openai => Ok(LoadReport {
                already_loaded: true,
                load_ms: 0.0,
            }),
            HostKind::LlamaSwap => {
                let (_, body) = self.get(t, "/running").await.map_err(|e| Self::err(t, e))?;
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let ready = v["running"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|m| m["model"] == t.model.as_str() && m["state"] == "ready")
                });
                if ready {
                    return Ok(LoadReport {
                        already_loaded: true,
                        load_ms: 0.0,
                    });
                }
                let path = format!("/upstream/{}/health", t.model);
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match tokio::time::timeout(left, self.get(t, &path)).await {
                        Err(_) => return Err(Self::err(t, "timed out".into())),
                        Ok(Err(e)) => return Err(Self::err(t, e)),
                        Ok(Ok((200, _))) => break,
                        Ok(Ok((s, b))) if s >= 500 && s != 503 => {
                            return Err(Self::err(
                                t,
                                format!("HTTP {s}: {}", String::from_utf8_lossy(&b)),
                            ));
                        }
                        Ok(Ok(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
                Ok(LoadReport {
                    already_loaded: false,
                    load_ms: start.elapsed().as_secs_f64() * 1000.0,
                })
            }
            HostKind::LlamaServer => {
                let mut first = true;
                loop {
                    match self.get(t, "/health").await {
                        Ok((200, _)) => {
                            return Ok(LoadReport {
                                already_loaded: first,
                                load_ms: if first {
                                    0.0
                                } else {
                                    start.elapsed().as_secs_f64() * 1000.0
                                },
                            });
                        }
                        Ok(_) if Instant::now() < deadline => {}
                        Ok((s, _)) => return Err(Self::err(t, format!("still HTTP {s}"))),
                        Err(e) => return Err(Self::err(t, e)),
                    }
                    first = false;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}
