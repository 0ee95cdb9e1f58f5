//! Provider registry for boocontrol: the config file, `{env:NAME}` secrets, legacy
//! environment fallback, and resolution of model strings to upstream endpoints.
//!
//! A config file lists providers (llama-swap hosts, bare llama-servers, OpenAI-compatible
//! clouds, other gateways). [`load`] reads it (or the legacy `LLAMA_SWAP_URL` /
//! `LLAMA_SIDECAR_URL` / `DEFAULT_MODEL` / `DEEPSEEK_API_KEY` variables), substitutes
//! `{env:NAME}` in every string, and validates everything, reporting **all** problems with
//! their JSON paths. [`Registry::resolve`] turns `provider/model` or a legacy bare id into a
//! [`Resolution`]: provider, wire model, lane and [`Target`] (base URL or sidecar URL plus
//! auth headers). [`RegistryHandle`] swaps registries atomically for hot reload.
//!
//! This crate reads files and environment variables only: no network, no async, no clock.
//! Secrets are wrapped in [`Secret`] and never appear in `Debug`, `Display` or errors.
//!
//! ```
//! use boo_provider_registry::{from_json_str, MapEnv};
//!
//! let json = r#"{ "providers": [
//!   { "id": "sam-desktop", "kind": "llama-swap", "base_url": "http://10.0.0.2:8080/" },
//!   { "id": "deepseek", "kind": "openai", "base_url": "https://api.deepseek.com/v1",
//!     "api_key": "{env:DEEPSEEK_API_KEY}" } ] }"#;
//! let env = MapEnv::new().with("DEEPSEEK_API_KEY", "sk-test");
//! let reg = from_json_str(json, &env).unwrap().registry;
//!
//! let r = reg.resolve("deepseek/deepseek-chat", None).unwrap();
//! assert_eq!(r.wire_model, "deepseek-chat");
//! assert_eq!(r.target.url_for("/v1/chat/completions"),
//!            "https://api.deepseek.com/v1/chat/completions");
//! assert_eq!(format!("{:?}", r.target.headers[0].1), "***");
//!
//! // Legacy bare ids go to the default provider (the first enabled one here).
//! let r = reg.resolve("qwen3-8b", None).unwrap();
//! assert_eq!(r.target.url_for("/v1/chat/completions"),
//!            "http://10.0.0.2:8080/v1/chat/completions");
//! ```
//!
//! Invariants: loading and resolving never panic on any input; a registry always has
//! exactly one enabled default provider; `base_url` never ends with `/`.
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod config;
mod env;
mod error;
mod handle;
mod registry;
mod schema;
mod source;
mod types;

pub use config::{
    GATEWAY_KEYS, Loaded, MODEL_KEYS, PROVIDER_KEYS, SIDECAR_KEYS, TIMEOUT_KEYS, TOP_KEYS,
    from_json_str,
};
pub use env::{Env, MapEnv, ProcessEnv};
pub use error::{ConfigError, Problem, ResolveError, Warning};
pub use handle::RegistryHandle;
pub use registry::Registry;
pub use schema::json_schema;
pub use source::{
    ConfigSource, DEFAULT_DEEPSEEK_URL, DEFAULT_LLAMA_SWAP_URL, legacy_document, load,
};
pub use types::{
    GatewaySettings, Lane, ModelMeta, Provider, ProviderKind, Resolution, Secret, Sidecar, Target,
    Timeouts,
};
