//! JSON Schema of the config file, generated from mirror types with `schemars`.
//!
//! These types exist only to describe the file; parsing is done by the validating walker in
//! `config.rs` (which reports every problem at once). A test keeps both in sync.

use std::collections::BTreeMap;

use schemars::JsonSchema;

/// A boocontrol configuration file.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ConfigFile {
    /// URL or path of this schema, for editors.
    #[serde(rename = "$schema")]
    schema: Option<String>,
    /// The upstream providers, in display order. Exactly one is the default.
    providers: Vec<ProviderFile>,
    /// Settings of the gateway itself.
    gateway: Option<GatewayFile>,
    /// Routing policies for `auto:<policy>` models (validated by the router).
    policies: Option<Vec<serde_json::Value>>,
    /// Telemetry store URL: `sqlite://path.db` or `postgres://...`.
    store: Option<String>,
    /// Model used when a client sends none (a composite or legacy bare id).
    default_model: Option<String>,
}

/// Server kind of a provider.
#[derive(JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
enum KindFile {
    /// llama-swap in front of llama.cpp; base_url without `/v1`.
    LlamaSwap,
    /// A bare llama.cpp llama-server; base_url without `/v1`.
    LlamaServer,
    /// OpenAI-compatible cloud API; base_url INCLUDES the version path (`.../v1`).
    Openai,
    /// Another boocontrol gateway; base_url without `/v1`.
    Gateway,
}

/// Scheduling lane.
#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum LaneFile {
    /// Serial per host (llama-backed).
    Local,
    /// Parallel (cloud APIs).
    Cloud,
}

/// One upstream provider. String values may contain `{env:NAME}`.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ProviderFile {
    /// Unique id: 1-64 of [a-z0-9_-], starting with a letter or digit.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,63}$"))]
    id: String,
    /// Human label (default: the id).
    label: Option<String>,
    /// Server kind.
    kind: KindFile,
    /// http(s) base URL; a trailing `/` is removed.
    base_url: String,
    /// Default true. Disabled providers are listed but get no traffic.
    enabled: Option<bool>,
    /// Marks the default provider (legacy bare model ids go there). Default: first enabled.
    default: Option<bool>,
    /// Always-on llama-server next to this host (llama-swap/llama-server kinds only).
    sidecar: Option<SidecarFile>,
    /// API key, sent as `Authorization: Bearer <key>`. Use `{env:NAME}`.
    api_key: Option<String>,
    /// Extra upstream headers (name → value).
    headers: Option<BTreeMap<String, String>>,
    /// Default: local for llama-swap/llama-server, cloud for openai/gateway.
    lane: Option<LaneFile>,
    /// Most concurrent upstream requests.
    #[schemars(range(min = 1))]
    max_concurrency: Option<u32>,
    /// Upstream timeouts in milliseconds.
    timeouts: Option<TimeoutsFile>,
    /// Static model list (cloud) or metadata overrides (local).
    models: Option<Vec<ModelFile>>,
    /// Display metadata: operating system.
    os: Option<String>,
    /// Display metadata: GPU label.
    gpu_label: Option<String>,
}

/// A sidecar llama-server.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SidecarFile {
    /// http(s) base URL of the sidecar.
    url: String,
    /// Wire models of this provider served by the sidecar.
    models: Option<Vec<String>>,
}

/// Timeouts in milliseconds (1 ms to 1 day).
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct TimeoutsFile {
    /// Connect timeout. Default 5000.
    #[schemars(range(min = 1, max = 86_400_000))]
    connect_ms: Option<u64>,
    /// Time to first byte. Default 120000 (local lane) or 60000 (cloud lane).
    #[schemars(range(min = 1, max = 86_400_000))]
    first_byte_ms: Option<u64>,
    /// Longest silence between streamed chunks. Default 60000.
    #[schemars(range(min = 1, max = 86_400_000))]
    idle_ms: Option<u64>,
    /// Whole request. Default: none.
    #[schemars(range(min = 1, max = 86_400_000))]
    total_ms: Option<u64>,
}

/// A model: its wire id, or an object with metadata.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ModelFile {
    /// Just the wire id.
    Id(String),
    /// Wire id plus metadata.
    Meta(ModelMetaFile),
}

/// Model metadata.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct ModelMetaFile {
    /// Wire model id.
    id: String,
    /// Context window in tokens.
    #[schemars(range(min = 1))]
    context_length: Option<u32>,
    /// Free-form tags.
    tags: Option<Vec<String>>,
    /// Price per million input tokens.
    #[schemars(range(min = 0.0))]
    input_price_per_mtok: Option<f64>,
    /// Price per million output tokens.
    #[schemars(range(min = 0.0))]
    output_price_per_mtok: Option<f64>,
}

/// Gateway settings.
#[derive(JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct GatewayFile {
    /// Listen address, ip:port. Default 127.0.0.1:9503.
    listen: Option<String>,
    /// Client API keys (Bearer). Empty: no client auth.
    api_keys: Option<Vec<String>>,
    /// Token for the control API.
    admin_token: Option<String>,
    /// Largest accepted request body in bytes.
    #[schemars(range(min = 1))]
    max_body_bytes: Option<u64>,
}

/// The JSON Schema (draft 2020-12) of the config file.
///
/// ```
/// let s = boo_provider_registry::json_schema();
/// assert_eq!(s["properties"]["providers"]["type"], "array");
/// ```
pub fn json_schema() -> serde_json::Value {
    let mut v = schemars::schema_for!(ConfigFile).to_value();
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "title".to_owned(),
            serde_json::Value::String("boocontrol configuration".to_owned()),
        );
    }
    v
}
