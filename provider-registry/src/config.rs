//! Config file parsing and validation: JSON → `{env:}` substitution → [`Registry`].
//!
//! Validation walks the JSON by hand so it can report **every** problem (unknown keys,
//! wrong types, bad values, cross-provider rules) with its JSON path in one error.

use std::collections::HashMap;
use std::time::Duration;

use boo_model_ref::{ModelId, ProviderId};
use serde_json::{Map, Value};

use crate::env::{Unset, child, substitute};
use crate::{
    ConfigError, Env, GatewaySettings, Lane, ModelMeta, Problem, Provider, ProviderKind, Registry,
    Secret, Sidecar, Timeouts, Warning,
};

/// Keys allowed at the top level of the config file.
pub const TOP_KEYS: &[&str] = &[
    "$schema",
    "providers",
    "gateway",
    "policies",
    "store",
    "default_model",
];
/// Keys allowed in a provider object.
pub const PROVIDER_KEYS: &[&str] = &[
    "id",
    "label",
    "kind",
    "base_url",
    "enabled",
    "default",
    "sidecar",
    "api_key",
    "headers",
    "lane",
    "max_concurrency",
    "timeouts",
    "models",
    "os",
    "gpu_label",
];
/// Keys allowed in a `sidecar` object.
pub const SIDECAR_KEYS: &[&str] = &["url", "models"];
/// Keys allowed in a `timeouts` object.
pub const TIMEOUT_KEYS: &[&str] = &["connect_ms", "first_byte_ms", "idle_ms", "total_ms"];
/// Keys allowed in a `models` entry written as an object.
pub const MODEL_KEYS: &[&str] = &[
    "id",
    "context_length",
    "tags",
    "input_price_per_mtok",
    "output_price_per_mtok",
];
/// Keys allowed in the `gateway` object.
pub const GATEWAY_KEYS: &[&str] = &["listen", "api_keys", "admin_token", "max_body_bytes"];

/// A successfully loaded registry plus the warnings met on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The registry.
    pub registry: Registry,
    /// Non-fatal findings (unset `{env:}` variables, fallbacks taken).
    pub warnings: Vec<Warning>,
    /// Where the configuration came from (a path or "legacy environment").
    pub origin: String,
}

/// Parses and validates a config document.
///
/// # Errors
/// [`ConfigError::Syntax`] for invalid JSON, [`ConfigError::Invalid`] listing every problem.
pub fn from_json_str(json: &str, env: &dyn Env) -> Result<Loaded, ConfigError> {
    from_json_with_origin(json, env, "config")
}

pub(crate) fn from_json_with_origin(
    json: &str,
    env: &dyn Env,
    origin: &str,
) -> Result<Loaded, ConfigError> {
    let mut value: Value = serde_json::from_str(json).map_err(|e| ConfigError::Syntax {
        origin: origin.to_owned(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })?;
    let mut unset = Vec::new();
    substitute(&mut value, "$", env, &mut unset);
    let warnings = unset
        .iter()
        .map(|(path, var)| Warning::UnsetEnv {
            var: var.clone(),
            path: path.clone(),
        })
        .collect();
    let mut ctx = Ctx {
        problems: Vec::new(),
        unset: &unset,
    };
    let registry = ctx.registry(&value);
    match registry {
        Some(registry) if ctx.problems.is_empty() => Ok(Loaded {
            registry,
            warnings,
            origin: origin.to_owned(),
        }),
        _ => Err(ConfigError::Invalid {
            problems: ctx.problems,
        }),
    }
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct Ctx<'a> {
    problems: Vec<Problem>,
    unset: &'a Unset,
}

impl Ctx<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    fn unset_at(&self, path: &str) -> Vec<&str> {
        self.unset
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Reports an empty required string, naming unset variables when they caused it.
    fn empty(&mut self, path: &str) {
        let vars = self.unset_at(path);
        if vars.is_empty() {
            self.err(path, "must not be empty");
        } else {
            let list = vars.join(", ");
            self.err(
                path,
                format!("is empty because environment variable {list} is not set"),
            );
        }
    }

    fn obj<'v>(
        &mut self,
        v: &'v Value,
        path: &str,
        known: &[&str],
    ) -> Option<&'v Map<String, Value>> {
        let Value::Object(m) = v else {
            self.err(path, format!("expected an object, found {}", type_name(v)));
            return None;
        };
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                self.err(
                    &child(path, k),
                    format!("unknown key {k:?}; allowed keys: {}", known.join(", ")),
                );
            }
        }
        Some(m)
    }

    fn opt_str(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<String> {
        match m.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => {
                self.err(
                    &child(path, key),
                    format!("expected a string, found {}", type_name(other)),
                );
                None
            }
        }
    }

    fn req_str(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<String> {
        if !m.contains_key(key) {
            self.err(&child(path, key), "is required");
            return None;
        }
        let s = self.opt_str(m, path, key)?;
        if s.is_empty() {
            self.empty(&child(path, key));
            return None;
        }
        Some(s)
    }

    fn opt_bool(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<bool> {
        match m.get(key)? {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            other => {
                self.err(
                    &child(path, key),
                    format!("expected true or false, found {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A positive integer (≥ 1) that fits in `max`.
    fn opt_pos_int(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        key: &str,
        max: u64,
    ) -> Option<u64> {
        let v = m.get(key)?;
        if v.is_null() {
            return None;
        }
        match v.as_u64() {
            Some(n) if n >= 1 && n <= max => Some(n),
            _ => {
                self.err(
                    &child(path, key),
                    format!("expected a positive integer up to {max}, found {v}"),
                );
                None
            }
        }
    }

    fn opt_price(&mut self, m: &Map<String, Value>, path: &str, key: &str) -> Option<f64> {
        let v = m.get(key)?;
        if v.is_null() {
            return None;
        }
        match v.as_f64() {
            Some(n) if n >= 0.0 && n.is_finite() => Some(n),
            _ => {
                self.err(
                    &child(path, key),
                    format!("expected a non-negative number, found {v}"),
                );
                None
            }
        }
    }

    fn str_array(&mut self, v: &Value, path: &str) -> Vec<String> {
        let Value::Array(items) = v else {
            self.err(
                path,
                format!("expected an array of strings, found {}", type_name(v)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match item {
                Value::String(s) if s.is_empty() => self.empty(&p),
                Value::String(s) => out.push(s.clone()),
                other => self.err(&p, format!("expected a string, found {}", type_name(other))),
            }
        }
        out
    }

    /// Validates an http(s) URL and strips trailing `/`.
    fn url(&mut self, path: &str, s: &str) -> Option<String> {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"));
        let host_ok = rest.is_some_and(|r| {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty()
        });
        if !host_ok || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            let vars = self.unset_at(path);
            if vars.is_empty() {
                self.err(
                    path,
                    format!("must be an http:// or https:// URL with a host, got {s:?}"),
                );
            } else {
                self.err(
                    path,
                    format!(
                        "is not a usable URL because environment variable {} is not set",
                        vars.join(", ")
                    ),
                );
            }
            return None;
        }
        Some(s.trim_end_matches('/').to_owned())
    }

    fn registry(&mut self, root: &Value) -> Option<Registry> {
        let top = self.obj(root, "$", TOP_KEYS)?;
        if let Some(v) = top.get("$schema")
            && !v.is_string()
        {
            self.err(
                "$.$schema",
                format!("expected a string, found {}", type_name(v)),
            );
        }
        let providers = match top.get("providers") {
            None => {
                self.err("$.providers", "is required (an array of provider objects)");
                Vec::new()
            }
            Some(Value::Array(items)) => {
                if items.is_empty() {
                    self.err("$.providers", "must list at least one provider");
                }
                let mut out = Vec::new();
                let mut first_seen: HashMap<String, usize> = HashMap::new();
                for (i, item) in items.iter().enumerate() {
                    let path = format!("$.providers[{i}]");
                    // Duplicate check on the raw id so it runs even if the provider is broken.
                    if let Some(Value::String(id)) = item.get("id") {
                        if let Some(first) = first_seen.get(id) {
                            self.err(
                                &child(&path, "id"),
                                format!("duplicate provider id {id:?} (first used at $.providers[{first}])"),
                            );
                        } else {
                            first_seen.insert(id.clone(), i);
                        }
                    }
                    out.push(self.provider(item, &path));
                }
                out
            }
            Some(other) => {
                self.err(
                    "$.providers",
                    format!("expected an array, found {}", type_name(other)),
                );
                Vec::new()
            }
        };
        let gateway = match top.get("gateway") {
            Some(v) => self.gateway(v, "$.gateway"),
            None => GatewaySettings::default(),
        };
        let policies = match top.get("policies") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.clone(),
            Some(other) => {
                self.err(
                    "$.policies",
                    format!("expected an array, found {}", type_name(other)),
                );
                Vec::new()
            }
        };
        let store = self.opt_str(top, "$", "store").filter(|s| !s.is_empty());
        if let Some(s) = &store {
            let ok = ["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|p| s.starts_with(p));
            if !ok {
                self.err(
                    "$.store",
                    "must start with sqlite:, postgres:// or postgresql://",
                );
            }
        }
        let default_model = self
            .opt_str(top, "$", "default_model")
            .filter(|s| !s.is_empty());
        if let Some(m) = &default_model
            && let Err(e) = ModelId::parse(m)
        {
            self.err("$.default_model", e.to_string());
        }

        // Cross-provider rules: exactly one default.
        let marked: Vec<usize> = providers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().filter(|p| p.is_default).map(|_| i))
            .collect();
        let mut default_idx = None;
        match marked.as_slice() {
            [] => {
                default_idx = providers
                    .iter()
                    .position(|p| p.as_ref().is_some_and(|p| p.enabled));
                let all_parsed = providers.iter().all(Option::is_some);
                if default_idx.is_none() && all_parsed && !providers.is_empty() {
                    self.err(
                        "$.providers",
                        "no enabled provider: one must be enabled to be the default",
                    );
                }
            }
            [one] => {
                if providers[*one].as_ref().is_some_and(|p| !p.enabled) {
                    self.err(
                        &format!("$.providers[{one}].default"),
                        "the default provider must be enabled",
                    );
                }
                default_idx = Some(*one);
            }
            several => {
                let list: Vec<String> = several
                    .iter()
                    .map(|i| format!("$.providers[{i}]"))
                    .collect();
                for i in &several[1..] {
                    self.err(
                        &format!("$.providers[{i}].default"),
                        format!(
                            "several providers are marked default ({}); exactly one may be",
                            list.join(", ")
                        ),
                    );
                }
            }
        }
        if !self.problems.is_empty() {
            return None;
        }
        let mut providers: Vec<Provider> = providers.into_iter().flatten().collect();
        let default_idx = default_idx?;
        for (i, p) in providers.iter_mut().enumerate() {
            p.is_default = i == default_idx;
        }
        Some(Registry {
            providers,
            default_idx,
            gateway,
            policies,
            store,
            default_model,
        })
    }

    fn provider(&mut self, v: &Value, path: &str) -> Option<Provider> {
        let before = self.problems.len();
        let m = self.obj(v, path, PROVIDER_KEYS)?;
        let id = self
            .req_str(m, path, "id")
            .and_then(|s| match ProviderId::new(&s) {
                Ok(id) => Some(id),
                Err(e) => {
                    self.err(&child(path, "id"), e.to_string());
                    None
                }
            });
        let label = self.opt_str(m, path, "label");
        if label.as_deref() == Some("") {
            self.empty(&child(path, "label"));
        }
        let kind = self
            .req_str(m, path, "kind")
            .and_then(|s| match s.parse::<ProviderKind>() {
                Ok(k) => Some(k),
                Err(msg) => {
                    self.err(&child(path, "kind"), msg);
                    None
                }
            });
        let base_url = self
            .req_str(m, path, "base_url")
            .and_then(|s| self.url(&child(path, "base_url"), &s));
        let enabled = self.opt_bool(m, path, "enabled").unwrap_or(true);
        let is_default = self.opt_bool(m, path, "default").unwrap_or(false);
        let sidecar = match m.get("sidecar") {
            None | Some(Value::Null) => None,
            Some(sv) => {
                let sp = child(path, "sidecar");
                if matches!(kind, Some(ProviderKind::Openai | ProviderKind::Gateway)) {
                    self.err(
                        &sp,
                        format!(
                            "a sidecar is only allowed on llama-swap and llama-server providers, not {}",
                            kind.map_or("", ProviderKind::as_str)
                        ),
                    );
                }
                self.sidecar(sv, &sp)
            }
        };
        let api_key = self.opt_str(m, path, "api_key").filter(|s| !s.is_empty());
        if let Some(k) = &api_key
            && k.chars().any(|c| c.is_control() || c == ' ')
        {
            // Never echo the value.
            self.err(
                &child(path, "api_key"),
                "contains whitespace or control characters",
            );
        }
        let headers = match m.get("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(hv) => self.headers(hv, &child(path, "headers")),
        };
        let lane = match self.opt_str(m, path, "lane").as_deref() {
            None => None,
            Some("local") => Some(Lane::Local),
            Some("cloud") => Some(Lane::Cloud),
            Some(other) => {
                self.err(
                    &child(path, "lane"),
                    format!("unknown lane {other:?}; expected local or cloud"),
                );
                None
            }
        };
        let max_concurrency = self
            .opt_pos_int(m, path, "max_concurrency", u64::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok());
        let lane = lane
            .or(kind.map(ProviderKind::default_lane))
            .unwrap_or(Lane::Local);
        let mut timeouts = Timeouts::defaults_for(lane);
        if let Some(tv) = m.get("timeouts") {
            self.timeouts(tv, &child(path, "timeouts"), &mut timeouts);
        }
        let models = match m.get("models") {
            None | Some(Value::Null) => Vec::new(),
            Some(mv) => self.models(mv, &child(path, "models")),
        };
        let os = self.opt_str(m, path, "os").filter(|s| !s.is_empty());
        let gpu_label = self.opt_str(m, path, "gpu_label").filter(|s| !s.is_empty());
        if self.problems.len() != before {
            return None;
        }
        let id = id?;
        Some(Provider {
            label: label.unwrap_or_else(|| id.to_string()),
            id,
            kind: kind?,
            base_url: base_url?,
            enabled,
            is_default,
            sidecar,
            api_key: api_key.map(Secret::new),
            headers,
            lane,
            max_concurrency,
            timeouts,
            models,
            os,
            gpu_label,
        })
    }

    fn sidecar(&mut self, v: &Value, path: &str) -> Option<Sidecar> {
        let m = self.obj(v, path, SIDECAR_KEYS)?;
        let url = self
            .req_str(m, path, "url")
            .and_then(|s| self.url(&child(path, "url"), &s));
        let models = match m.get("models") {
            None | Some(Value::Null) => Vec::new(),
            Some(mv) => self.str_array(mv, &child(path, "models")),
        };
        Some(Sidecar { url: url?, models })
    }

    fn headers(&mut self, v: &Value, path: &str) -> Vec<(String, Secret)> {
        let Value::Object(m) = v else {
            self.err(
                path,
                format!(
                    "expected an object of header name → value, found {}",
                    type_name(v)
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, val) in m {
            let p = child(path, name);
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                self.err(&p, format!("invalid header name {name:?}"));
                continue;
            }
            match val {
                Value::String(s) if s.contains(['\r', '\n', '\0']) => {
                    self.err(&p, "header value contains a line break or NUL");
                }
                Value::String(s) => out.push((name.to_ascii_lowercase(), Secret::new(s.clone()))),
                other => self.err(&p, format!("expected a string, found {}", type_name(other))),
            }
        }
        out
    }

    fn timeouts(&mut self, v: &Value, path: &str, t: &mut Timeouts) {
        let Some(m) = self.obj(v, path, TIMEOUT_KEYS) else {
            return;
        };
        let max = 86_400_000; // one day
        if let Some(n) = self.opt_pos_int(m, path, "connect_ms", max) {
            t.connect = Duration::from_millis(n);
        }
        if let Some(n) = self.opt_pos_int(m, path, "first_byte_ms", max) {
            t.first_byte = Duration::from_millis(n);
        }
        if let Some(n) = self.opt_pos_int(m, path, "idle_ms", max) {
            t.idle = Duration::from_millis(n);
        }
        if let Some(n) = self.opt_pos_int(m, path, "total_ms", max) {
            t.total = Some(Duration::from_millis(n));
        }
    }

    fn models(&mut self, v: &Value, path: &str) -> Vec<ModelMeta> {
        let Value::Array(items) = v else {
            self.err(path, format!("expected an array, found {}", type_name(v)));
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            let meta = match item {
                Value::String(s) => Some(ModelMeta {
                    id: s.clone(),
                    context_length: None,
                    tags: Vec::new(),
                    input_price_per_mtok: None,
                    output_price_per_mtok: None,
                }),
                Value::Object(_) => self.model_obj(item, &p),
                other => {
                    self.err(
                        &p,
                        format!(
                            "expected a model id string or object, found {}",
                            type_name(other)
                        ),
                    );
                    None
                }
            };
            if let Some(meta) = meta {
                let idp = if item.is_string() {
                    p.clone()
                } else {
                    child(&p, "id")
                };
                if meta.id.is_empty() {
                    self.empty(&idp);
                } else if meta.id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    self.err(
                        &idp,
                        format!(
                            "model id {:?} contains whitespace or control characters",
                            meta.id
                        ),
                    );
                } else if out.iter().any(|m: &ModelMeta| m.id == meta.id) {
                    self.err(&idp, format!("duplicate model id {:?}", meta.id));
                } else {
                    out.push(meta);
                }
            }
        }
        out
    }

    fn model_obj(&mut self, v: &Value, path: &str) -> Option<ModelMeta> {
        let m = self.obj(v, path, MODEL_KEYS)?;
        let id = self.req_str(m, path, "id")?;
        let context_length = self
            .opt_pos_int(m, path, "context_length", u64::from(u32::MAX))
            .and_then(|n| u32::try_from(n).ok());
        let tags = match m.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(tv) => self.str_array(tv, &child(path, "tags")),
        };
        Some(ModelMeta {
            id,
            context_length,
            tags,
            input_price_per_mtok: self.opt_price(m, path, "input_price_per_mtok"),
            output_price_per_mtok: self.opt_price(m, path, "output_price_per_mtok"),
        })
    }

    fn gateway(&mut self, v: &Value, path: &str) -> GatewaySettings {
        let Some(m) = self.obj(v, path, GATEWAY_KEYS) else {
            return GatewaySettings::default();
        };
        let listen = self.opt_str(m, path, "listen").filter(|s| !s.is_empty());
        if let Some(l) = &listen
            && l.parse::<std::net::SocketAddr>().is_err()
        {
            self.err(
                &child(path, "listen"),
                format!("expected ip:port such as 127.0.0.1:9503, got {l:?}"),
            );
        }
        let api_keys = match m.get("api_keys") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{}[{i}]", child(path, "api_keys"));
                    match item {
                        Value::String(s) if s.is_empty() => self.empty(&p),
                        Value::String(s) => out.push(Secret::new(s.clone())),
                        other => {
                            self.err(&p, format!("expected a string, found {}", type_name(other)))
                        }
                    }
                }
                out
            }
            Some(other) => {
                self.err(
                    &child(path, "api_keys"),
                    format!("expected an array, found {}", type_name(other)),
                );
                Vec::new()
            }
        };
        let admin_token = self
            .opt_str(m, path, "admin_token")
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        let max_body_bytes = self.opt_pos_int(m, path, "max_body_bytes", u64::MAX);
        GatewaySettings {
            listen,
            api_keys,
            admin_token,
            max_body_bytes,
        }
    }
}
