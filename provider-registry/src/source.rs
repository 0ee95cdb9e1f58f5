//! Where the configuration comes from: a file, or the legacy environment variables.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::from_json_with_origin;
use crate::{ConfigError, Env, Loaded, Warning};

/// Base URL used when neither a config file nor `LLAMA_SWAP_URL` is present.
pub const DEFAULT_LLAMA_SWAP_URL: &str = "http://127.0.0.1:8080";
/// Base URL of the legacy `deepseek` provider (overridable with `DEEPSEEK_BASE_URL`).
pub const DEFAULT_DEEPSEEK_URL: &str = "https://api.deepseek.com/v1";

/// Where to read the configuration from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// This file; it must exist.
    File(PathBuf),
    /// Only the legacy environment variables.
    LegacyEnv,
    /// Discover: the given path (`--config`), else `BOOCONTROL_CONFIG`, else
    /// `LLAMA_PROVIDERS_PATH` (falls back to legacy env when that file is missing), else
    /// legacy env.
    Discover {
        /// The `--config` argument, if any.
        cli: Option<PathBuf>,
    },
}

/// Loads and validates a registry.
///
/// # Errors
/// [`ConfigError::NotFound`] when an explicitly named file (`--config`,
/// `BOOCONTROL_CONFIG`) is missing; IO, syntax and validation errors otherwise.
pub fn load(source: ConfigSource, env: &dyn Env) -> Result<Loaded, ConfigError> {
    match source {
        ConfigSource::File(path) => load_file(&path, env),
        ConfigSource::LegacyEnv => load_legacy(env, Vec::new()),
        ConfigSource::Discover { cli } => {
            if let Some(path) = cli {
                return load_file(&path, env);
            }
            if let Some(path) = env.var("BOOCONTROL_CONFIG").filter(|s| !s.is_empty()) {
                return load_file(Path::new(&path), env);
            }
            if let Some(path) = env.var("LLAMA_PROVIDERS_PATH").filter(|s| !s.is_empty()) {
                return match load_file(Path::new(&path), env) {
                    Err(ConfigError::NotFound { .. }) => load_legacy(
                        env,
                        vec![Warning::Note(format!(
                            "LLAMA_PROVIDERS_PATH={path} does not exist; using the legacy environment variables"
                        ))],
                    ),
                    other => other,
                };
            }
            load_legacy(env, Vec::new())
        }
    }
}

fn load_file(path: &Path, env: &dyn Env) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ConfigError::NotFound {
                path: path.to_owned(),
            }
        } else {
            ConfigError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    from_json_with_origin(&text, env, &path.display().to_string())
}

fn load_legacy(env: &dyn Env, mut warnings: Vec<Warning>) -> Result<Loaded, ConfigError> {
    let doc = legacy_document(env);
    if env.var("LLAMA_SWAP_URL").is_none_or(|s| s.is_empty()) {
        warnings.push(Warning::Note(format!(
            "no config file and LLAMA_SWAP_URL is unset; using {DEFAULT_LLAMA_SWAP_URL}"
        )));
    }
    let mut loaded = from_json_with_origin(&doc.to_string(), env, "legacy environment")?;
    warnings.append(&mut loaded.warnings);
    loaded.warnings = warnings;
    Ok(loaded)
}

fn set(env: &dyn Env, name: &str) -> bool {
    env.var(name).is_some_and(|s| !s.trim().is_empty())
}

/// The config document equivalent to the legacy environment variables.
///
/// `LLAMA_SWAP_URL` → provider `local` (llama-swap, default); `LLAMA_SIDECAR_URL` → its
/// sidecar serving the comma-separated `LLAMA_SIDECAR_MODELS`; `DEEPSEEK_API_KEY` → provider
/// `deepseek` (openai kind, `DEEPSEEK_BASE_URL` or [`DEFAULT_DEEPSEEK_URL`]);
/// `DEFAULT_MODEL` → `default_model`. Secrets stay `{env:NAME}` references in the document.
pub fn legacy_document(env: &dyn Env) -> Value {
    let swap_url = if set(env, "LLAMA_SWAP_URL") {
        "{env:LLAMA_SWAP_URL}".to_owned()
    } else {
        DEFAULT_LLAMA_SWAP_URL.to_owned()
    };
    let mut local = json!({
        "id": "local",
        "label": "Local",
        "kind": "llama-swap",
        "base_url": swap_url,
    });
    if set(env, "LLAMA_SIDECAR_URL") {
        let models: Vec<String> = env
            .var("LLAMA_SIDECAR_MODELS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        local["sidecar"] = json!({ "url": "{env:LLAMA_SIDECAR_URL}", "models": models });
    }
    let mut providers = vec![local];
    if set(env, "DEEPSEEK_API_KEY") {
        let base = if set(env, "DEEPSEEK_BASE_URL") {
            "{env:DEEPSEEK_BASE_URL}"
        } else {
            DEFAULT_DEEPSEEK_URL
        };
        providers.push(json!({
            "id": "deepseek",
            "label": "DeepSeek",
            "kind": "openai",
            "base_url": base,
            "api_key": "{env:DEEPSEEK_API_KEY}",
            "models": ["deepseek-chat", "deepseek-reasoner"],
        }));
    }
    let mut doc = json!({ "providers": providers });
    if set(env, "DEFAULT_MODEL") {
        doc["default_model"] = json!("{env:DEFAULT_MODEL}");
    }
    doc
}
