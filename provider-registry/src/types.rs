//! The registry's data types: providers, secrets, timeouts, targets.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use boo_model_ref::{ModelRef, ProviderId};
use serde::{Deserialize, Serialize};

/// What kind of server a provider is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    /// llama-swap in front of llama.cpp servers (`/v1/...`, `/running`, `/upstream/...`).
    LlamaSwap,
    /// A bare llama.cpp `llama-server`.
    LlamaServer,
    /// Any OpenAI-compatible cloud API (DeepSeek, OpenAI, …). Its `base_url` includes the
    /// version path (`https://api.deepseek.com/v1`).
    Openai,
    /// Another boocontrol gateway.
    Gateway,
}

impl ProviderKind {
    /// All kinds, in documentation order.
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::LlamaSwap,
        ProviderKind::LlamaServer,
        ProviderKind::Openai,
        ProviderKind::Gateway,
    ];

    /// The config spelling (`"llama-swap"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::LlamaSwap => "llama-swap",
            ProviderKind::LlamaServer => "llama-server",
            ProviderKind::Openai => "openai",
            ProviderKind::Gateway => "gateway",
        }
    }

    /// The lane a provider of this kind uses unless configured otherwise.
    pub fn default_lane(self) -> Lane {
        match self {
            ProviderKind::LlamaSwap | ProviderKind::LlamaServer => Lane::Local,
            ProviderKind::Openai | ProviderKind::Gateway => Lane::Cloud,
        }
    }

    /// Whether `base_url` already includes the API version path (`/v1`).
    pub fn base_includes_version(self) -> bool {
        matches!(self, ProviderKind::Openai)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProviderKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown kind {s:?}; expected one of llama-swap, llama-server, openai, gateway"
                )
            })
    }
}

/// Scheduling lane: local llama-backed hosts run serially per host, cloud work in parallel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// A local llama-backed host.
    Local,
    /// A cloud API or remote gateway.
    Cloud,
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lane::Local => "local",
            Lane::Cloud => "cloud",
        })
    }
}

/// A secret string (API key, header value, token). `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret value. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Upstream timeouts of one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP/TLS connect. Default 5 s.
    pub connect: Duration,
    /// Until the first response byte. Default 120 s on the local lane (model loads are
    /// slow), 60 s on the cloud lane.
    pub first_byte: Duration,
    /// Longest silence between streamed chunks. Default 60 s.
    pub idle: Duration,
    /// Whole request. Default none.
    pub total: Option<Duration>,
}

impl Timeouts {
    /// The defaults for a lane.
    pub fn defaults_for(lane: Lane) -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(match lane {
                Lane::Local => 120,
                Lane::Cloud => 60,
            }),
            idle: Duration::from_secs(60),
            total: None,
        }
    }
}

/// An always-on llama-server next to a provider, serving a fixed set of wire models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// Base URL (no trailing `/`), same path rule as `llama-server`.
    pub url: String,
    /// Wire models of *this* provider that go to the sidecar.
    pub models: Vec<String>,
}

/// Static or override metadata of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    /// Wire model id.
    pub id: String,
    /// Context window in tokens.
    pub context_length: Option<u32>,
    /// Free-form tags (`"embedding"`, `"code"`, …).
    pub tags: Vec<String>,
    /// Price per million input tokens.
    pub input_price_per_mtok: Option<f64>,
    /// Price per million output tokens.
    pub output_price_per_mtok: Option<f64>,
}

/// One configured provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// Unique id, first segment of composite model ids.
    pub id: ProviderId,
    /// Human label (defaults to the id).
    pub label: String,
    /// Server kind.
    pub kind: ProviderKind,
    /// Base URL without trailing `/` (see [`Target::url_for`] for the `/v1` rule).
    pub base_url: String,
    /// Disabled providers stay listed but never receive traffic.
    pub enabled: bool,
    /// Whether this is the default provider (exactly one is).
    pub is_default: bool,
    /// Optional sidecar.
    pub sidecar: Option<Sidecar>,
    /// API key, sent as `authorization: Bearer <key>`.
    pub api_key: Option<Secret>,
    /// Extra headers sent upstream (names lowercase).
    pub headers: Vec<(String, Secret)>,
    /// Scheduling lane.
    pub lane: Lane,
    /// Most concurrent upstream requests, when limited.
    pub max_concurrency: Option<u32>,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Static model list (cloud) or metadata overrides (local).
    pub models: Vec<ModelMeta>,
    /// Display metadata: operating system.
    pub os: Option<String>,
    /// Display metadata: GPU label.
    pub gpu_label: Option<String>,
}

impl Provider {
    /// Whether the static `models` list names `wire_model`.
    pub fn lists(&self, wire_model: &str) -> bool {
        self.models.iter().any(|m| m.id == wire_model)
    }

    /// Upstream headers: `authorization: Bearer <api_key>` first (when set), then `headers`.
    pub fn upstream_headers(&self) -> Vec<(String, Secret)> {
        let mut h = Vec::with_capacity(self.headers.len() + 1);
        if let Some(k) = &self.api_key {
            h.push((
                "authorization".to_owned(),
                Secret::new(format!("Bearer {}", k.expose())),
            ));
        }
        h.extend(self.headers.iter().cloned());
        h
    }
}

/// Settings of the gateway itself (`gateway` object of the config file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Listen address (`127.0.0.1:9503` style).
    pub listen: Option<String>,
    /// Client API keys accepted by the gateway (empty: no auth).
    pub api_keys: Vec<Secret>,
    /// Token for the control API.
    pub admin_token: Option<Secret>,
    /// Largest accepted request body.
    pub max_body_bytes: Option<u64>,
}

/// Where a resolved request goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Provider base URL or sidecar URL, without trailing `/`.
    pub base_url: String,
    /// Whether `base_url` is the provider's sidecar.
    pub via_sidecar: bool,
    /// Kind of the server at `base_url` (a sidecar is a `llama-server`).
    pub kind: ProviderKind,
    /// Headers to send upstream, including `authorization: Bearer <api_key>` when set.
    pub headers: Vec<(String, Secret)>,
}

impl Target {
    /// The upstream URL for an OpenAI-style path such as `"/v1/chat/completions"`.
    ///
    /// For `openai`-kind targets the base URL already includes the version, so a leading
    /// `/v1` is dropped (`https://api.deepseek.com/v1` + `/v1/chat/completions` →
    /// `https://api.deepseek.com/v1/chat/completions`). Every other kind appends the path
    /// unchanged. A missing leading `/` is added.
    ///
    /// ```
    /// use boo_provider_registry::{ProviderKind, Target};
    /// let t = Target { base_url: "http://h:8080".into(), via_sidecar: false,
    ///                  kind: ProviderKind::LlamaSwap, headers: vec![] };
    /// assert_eq!(t.url_for("/v1/chat/completions"), "http://h:8080/v1/chat/completions");
    /// ```
    pub fn url_for(&self, openai_path: &str) -> String {
        let path = if openai_path.starts_with('/') {
            openai_path.to_owned()
        } else {
            format!("/{openai_path}")
        };
        let path = if self.kind.base_includes_version() {
            match path.strip_prefix("/v1") {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_owned(),
                _ => path,
            }
        } else {
            path
        };
        format!("{}{}", self.base_url, path)
    }
}

/// The outcome of resolving a model string.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The chosen provider.
    pub provider: ProviderId,
    /// The composite id (`provider/wire_model`): use it for caches and telemetry.
    pub model: ModelRef,
    /// The bare model name sent upstream.
    pub wire_model: String,
    /// Kind of the provider.
    pub kind: ProviderKind,
    /// Scheduling lane of the provider.
    pub lane: Lane,
    /// Where to send the request.
    pub target: Target,
}
