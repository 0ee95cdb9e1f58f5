//! Fleet and host specifications: what to emulate, read from YAML or JSON.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// A fleet: several hosts started together by [`crate::Fleet::start`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// Default time scale for every host that does not set its own (1.0 = real time,
    /// 0.001 turns a 30 s model load into 30 ms).
    #[serde(default)]
    pub time_scale: Option<f64>,
    /// The hosts, started in this order.
    pub hosts: Vec<HostSpec>,
}

/// What kind of server a host emulates.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum Mode {
    /// llama-swap in front of one llama-server process per model.
    #[default]
    #[serde(rename = "llama-swap")]
    LlamaSwap,
    /// A bare llama.cpp `llama-server` serving one model.
    #[serde(rename = "llama-server")]
    LlamaServer,
}

/// llama-swap API generation (see the wire reference, §0).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ApiGen {
    /// v235 and before; defaults to v223 (gin error bodies, 400 for an unknown model,
    /// `GET /api/metrics` ring, SSE `metrics` events, `{"total":N}` inflight).
    Legacy,
    /// v236 and later; defaults to v250 (`/api/metrics/activity`, SSE `activity` ids,
    /// operation-based `inflight`, 404 for an unknown model, `{"src":"llama-swap","error":".."}`).
    #[default]
    Current,
    /// Unreleased HEAD after v250: as `current`, with OpenAI-style error objects.
    Head,
}

/// One emulated host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Host id (for example `sam-desktop`), used by [`crate::Fleet::host`].
    pub id: String,
    /// `llama-swap` (default) or `llama-server`.
    #[serde(default)]
    pub mode: Mode,
    /// llama-swap API generation (ignored for `llama-server`).
    #[serde(default)]
    pub api: ApiGen,
    /// Exact llama-swap version to report and emulate, e.g. `v235`; overrides the default
    /// version of `api`.
    #[serde(default)]
    pub version: Option<String>,
    /// Address to bind; default `127.0.0.1:0`.
    #[serde(default)]
    pub listen: Option<String>,
    /// Time scale (1.0 = real time). Falls back to the fleet's, then 1.0.
    #[serde(default)]
    pub time_scale: Option<f64>,
    /// Seed for generated text and ids.
    #[serde(default)]
    pub seed: u64,
    /// Models served. A `llama-server` host serves exactly one.
    pub models: Vec<ModelSpec>,
    /// llama-swap groups; models in no group form the exclusive `(default)` swap group.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupSpec>,
    /// A llama-server sidecar started next to this host (for example an embedding server).
    #[serde(default)]
    pub sidecar: Option<Box<HostSpec>>,
    /// The emulated GPU (for `/api/performance`).
    #[serde(default)]
    pub gpu: Option<GpuSpec>,
    /// llama-swap `apiKeys`; empty means no authentication.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// llama-swap `globalTTL` in seconds (0 = never unload).
    #[serde(default)]
    pub global_ttl: u64,
    /// llama-swap `metricsMaxInMemory` (default 1000).
    #[serde(default = "default_metrics_max")]
    pub metrics_max_in_memory: usize,
    /// llama-swap `captureBuffer` in MB (default 5; 0 disables captures).
    #[serde(default = "default_capture_mb")]
    pub capture_buffer_mb: usize,
    /// Performance sampling period in milliseconds of emulated time (default 5000).
    #[serde(default = "default_perf_every")]
    pub perf_every_ms: u64,
    /// `performance.disabled` in llama-swap.
    #[serde(default)]
    pub performance_disabled: bool,
    /// How many received requests the host keeps for [`crate::Stats::received`] (default 1024).
    #[serde(default = "default_record_limit")]
    pub record_limit: usize,
}

/// A llama-swap group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Only one member runs at a time.
    #[serde(default = "yes")]
    pub swap: bool,
    /// Starting a member stops the other groups (except persistent ones).
    #[serde(default = "yes")]
    pub exclusive: bool,
    /// Never stopped by other groups.
    #[serde(default)]
    pub persistent: bool,
    /// Member model ids.
    pub members: Vec<String>,
}

/// The emulated GPU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    /// Marketing name, e.g. `NVIDIA GeForce RTX 5090`.
    pub name: String,
    /// VRAM in MB.
    pub mem_total_mb: u64,
}

/// One model and its speed model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Model id (the wire name).
    pub id: String,
    /// Display name (`name` in `/v1/models`).
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// llama-swap aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Context per slot (`n_ctx`), default 8192.
    #[serde(default = "default_n_ctx")]
    pub n_ctx: u32,
    /// Parallel slots (`--parallel`), default 4. Requests beyond this queue.
    #[serde(default = "default_slots")]
    pub slots: u32,
    /// Prompt processing speed, tokens/s (0 = unlimited).
    #[serde(default = "default_prompt_tps")]
    pub prompt_tps: f64,
    /// Generation speed, tokens/s (0 = unlimited).
    #[serde(default = "default_gen_tps")]
    pub gen_tps: f64,
    /// Load (swap-in) time in milliseconds of emulated time.
    #[serde(default = "default_load_ms")]
    pub load_ms: u64,
    /// llama-swap `ttl` in seconds: -1 uses `global_ttl`, 0 never unloads.
    #[serde(default = "minus_one")]
    pub ttl: i64,
    /// llama-swap `concurrencyLimit` (0 = 10).
    #[serde(default)]
    pub concurrency_limit: u32,
    /// Serves `/v1/embeddings` (llama-server `--embeddings`).
    #[serde(default)]
    pub embedding: bool,
    /// Embedding width.
    #[serde(default = "default_n_embd")]
    pub n_embd: u32,
    /// Left out of `/v1/models`.
    #[serde(default)]
    pub unlisted: bool,
    /// Emits a `capabilities:` block (context length in `/v1/models`).
    #[serde(default = "yes")]
    pub capabilities: bool,
    /// Natural reply length in tokens when the request sets no limit (default: 8–48, seeded).
    #[serde(default)]
    pub reply_tokens: Option<u32>,
    /// User metadata (`meta.llamaswap` in `/v1/models`).
    #[serde(default)]
    pub metadata: BTreeMap<String, serde_json::Value>,
}

fn yes() -> bool {
    true
}
fn minus_one() -> i64 {
    -1
}
fn default_metrics_max() -> usize {
    1000
}
fn default_capture_mb() -> usize {
    5
}
fn default_perf_every() -> u64 {
    5000
}
fn default_record_limit() -> usize {
    1024
}
fn default_n_ctx() -> u32 {
    8192
}
fn default_slots() -> u32 {
    4
}
fn default_prompt_tps() -> f64 {
    1000.0
}
fn default_gen_tps() -> f64 {
    50.0
}
fn default_load_ms() -> u64 {
    5000
}
fn default_n_embd() -> u32 {
    384
}

impl ModelSpec {
    /// A model with default speeds, handy in tests.
    pub fn new(id: impl Into<String>) -> ModelSpec {
        ModelSpec {
            id: id.into(),
            name: None,
            description: None,
            aliases: Vec::new(),
            n_ctx: default_n_ctx(),
            slots: default_slots(),
            prompt_tps: default_prompt_tps(),
            gen_tps: default_gen_tps(),
            load_ms: default_load_ms(),
            ttl: -1,
            concurrency_limit: 0,
            embedding: false,
            n_embd: default_n_embd(),
            unlisted: false,
            capabilities: true,
            reply_tokens: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Effective concurrency limit (llama-swap default 10).
    pub fn effective_concurrency_limit(&self) -> u32 {
        if self.concurrency_limit == 0 {
            10
        } else {
            self.concurrency_limit
        }
    }
}

impl HostSpec {
    /// A llama-swap host with the given models and default settings.
    pub fn llama_swap(id: impl Into<String>, api: ApiGen, models: Vec<ModelSpec>) -> HostSpec {
        HostSpec {
            id: id.into(),
            mode: Mode::LlamaSwap,
            api,
            version: None,
            listen: None,
            time_scale: None,
            seed: 0,
            models,
            groups: BTreeMap::new(),
            sidecar: None,
            gpu: None,
            api_keys: Vec::new(),
            global_ttl: 0,
            metrics_max_in_memory: default_metrics_max(),
            capture_buffer_mb: default_capture_mb(),
            perf_every_ms: default_perf_every(),
            performance_disabled: false,
            record_limit: default_record_limit(),
        }
    }

    /// A bare llama-server host serving one model.
    pub fn llama_server(id: impl Into<String>, model: ModelSpec) -> HostSpec {
        HostSpec {
            mode: Mode::LlamaServer,
            ..HostSpec::llama_swap(id, ApiGen::Current, vec![model])
        }
    }

    /// Sets the time scale (builder style).
    pub fn with_time_scale(mut self, scale: f64) -> HostSpec {
        self.time_scale = Some(scale);
        self
    }

    /// Checks the spec; errors name the field and the problem.
    ///
    /// # Errors
    /// [`SimError::Spec`] for the first problem found.
    pub fn validate(&self) -> Result<(), SimError> {
        self.validate_at(&format!("hosts[{}]", self.id))
    }

    fn validate_at(&self, at: &str) -> Result<(), SimError> {
        let bad = |field: &str, problem: String| {
            Err(SimError::Spec {
                field: format!("{at}.{field}"),
                problem,
            })
        };
        if self.id.trim().is_empty() {
            return bad("id", "must not be empty".into());
        }
        if let Some(s) = self.time_scale
            && !(s.is_finite() && s > 0.0)
        {
            return bad("time_scale", format!("must be a positive number, got {s}"));
        }
        if let Some(v) = &self.version
            && crate::host::parse_version(v).is_none()
        {
            return bad(
                "version",
                format!("expected a llama-swap tag like \"v235\", got {v:?}"),
            );
        }
        if let Some(l) = &self.listen
            && l.parse::<std::net::SocketAddr>().is_err()
        {
            return bad("listen", format!("expected ip:port, got {l:?}"));
        }
        if self.models.is_empty() {
            return bad("models", "at least one model is required".into());
        }
        if self.mode == Mode::LlamaServer && self.models.len() != 1 {
            return bad(
                "models",
                format!(
                    "a llama-server host serves exactly one model, got {}",
                    self.models.len()
                ),
            );
        }
        let mut names = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            let f = |name: &str| format!("models[{i}].{name}");
            if m.id.is_empty() || m.id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return bad(
                    &f("id"),
                    format!("must be non-empty without whitespace, got {:?}", m.id),
                );
            }
            if !names.insert(m.id.as_str()) {
                return bad(&f("id"), format!("duplicate model id or alias {:?}", m.id));
            }
            for a in &m.aliases {
                if a.is_empty() || !names.insert(a.as_str()) {
                    return bad(&f("aliases"), format!("empty or duplicate alias {a:?}"));
                }
            }
            if m.n_ctx < 16 {
                return bad(&f("n_ctx"), format!("must be at least 16, got {}", m.n_ctx));
            }
            if m.slots == 0 || m.slots > 1024 {
                return bad(&f("slots"), format!("must be 1..=1024, got {}", m.slots));
            }
            if !(m.prompt_tps.is_finite() && m.prompt_tps >= 0.0) {
                return bad(
                    &f("prompt_tps"),
                    format!("must be >= 0 (0 = unlimited), got {}", m.prompt_tps),
                );
            }
            if !(m.gen_tps.is_finite() && m.gen_tps >= 0.0) {
                return bad(
                    &f("gen_tps"),
                    format!("must be >= 0 (0 = unlimited), got {}", m.gen_tps),
                );
            }
            if m.ttl < -1 {
                return bad(
                    &f("ttl"),
                    format!("must be -1, 0 or a number of seconds, got {}", m.ttl),
                );
            }
            if m.embedding && (m.n_embd == 0 || m.n_embd > 16384) {
                return bad(&f("n_embd"), format!("must be 1..=16384, got {}", m.n_embd));
            }
        }
        let mut grouped = HashSet::new();
        for (g, spec) in &self.groups {
            for member in &spec.members {
                if !self.models.iter().any(|m| &m.id == member) {
                    return bad(
                        &format!("groups.{g}.members"),
                        format!("unknown model {member:?}"),
                    );
                }
                if !grouped.insert(member.as_str()) {
                    return bad(
                        &format!("groups.{g}.members"),
                        format!("model {member:?} is in more than one group"),
                    );
                }
            }
        }
        if let Some(sc) = &self.sidecar {
            if sc.mode != Mode::LlamaServer {
                return bad("sidecar.mode", "a sidecar must be a llama-server".into());
            }
            if sc.sidecar.is_some() {
                return bad(
                    "sidecar.sidecar",
                    "a sidecar cannot have its own sidecar".into(),
                );
            }
            sc.validate_at(&format!("{at}.sidecar"))?;
        }
        Ok(())
    }
}

impl FleetSpec {
    /// Parses a spec from YAML (JSON is valid YAML, so both work).
    ///
    /// # Errors
    /// [`SimError::Parse`] with the parser's message (which names the field), or
    /// [`SimError::Spec`] from validation.
    pub fn from_yaml(text: &str) -> Result<FleetSpec, SimError> {
        let spec: FleetSpec =
            serde_yaml_ng::from_str(text).map_err(|e| SimError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Parses a spec from JSON.
    ///
    /// # Errors
    /// As [`FleetSpec::from_yaml`].
    pub fn from_json(text: &str) -> Result<FleetSpec, SimError> {
        let spec: FleetSpec =
            serde_json::from_str(text).map_err(|e| SimError::Parse(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks every host and that host ids are unique.
    ///
    /// # Errors
    /// [`SimError::Spec`] naming the field.
    pub fn validate(&self) -> Result<(), SimError> {
        if let Some(s) = self.time_scale
            && !(s.is_finite() && s > 0.0)
        {
            return Err(SimError::Spec {
                field: "time_scale".into(),
                problem: format!("must be a positive number, got {s}"),
            });
        }
        if self.hosts.is_empty() {
            return Err(SimError::Spec {
                field: "hosts".into(),
                problem: "at least one host is required".into(),
            });
        }
        let mut ids = HashSet::new();
        for h in &self.hosts {
            h.validate()?;
            if !ids.insert(h.id.as_str()) {
                return Err(SimError::Spec {
                    field: format!("hosts[{}].id", h.id),
                    problem: "duplicate host id".into(),
                });
            }
            if let Some(sc) = &h.sidecar
                && !ids.insert(sc.id.as_str())
            {
                return Err(SimError::Spec {
                    field: format!("hosts[{}].sidecar.id", h.id),
                    problem: "duplicate host id".into(),
                });
            }
        }
        Ok(())
    }
}
