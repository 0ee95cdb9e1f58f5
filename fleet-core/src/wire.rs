//! Pure parsers for the llama-swap wire formats connectors consume (both API generations).
//!
//! * [`SseDecoder`]: `text/event-stream` framing (`data:` with or without a space, CRLF, comments).
//! * [`parse_event`]: an `/api/events` envelope `{"type","data":"<json string>"}` (the `data` is
//!   JSON encoded twice) into a typed [`SwapEvent`]: `modelStatus`, `logData`, `metrics` (≤v235),
//!   `activity` (v236+), `inflight` in its three shapes, `uiConfig`, `profileChanged`.
//! * [`parse_activity_entry`] / [`parse_activity_list`]: activity rows of every generation (flat
//!   ≤v208, nested `tokens` v209+, sentinel `-1` = unknown), from `/api/metrics` (array) or
//!   `/api/metrics/activity` (page object).
//! * [`parse_running`], [`parse_version`], [`parse_performance`]; llama-server
//!   [`parse_server_props`] and [`parse_slots`].
//!
//! Unknown fields are ignored everywhere; missing optional fields become `None`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::time::parse_rfc3339_ms;
use crate::{Error, ModelState, PerfSample};

// ---------------------------------------------------------------------------------------------
// SSE framing

/// One Server-Sent Events message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    /// The `event:` field (`message` when absent, per the SSE spec).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An incremental `text/event-stream` decoder: feed it byte chunks as they arrive.
///
/// # Example
/// ```
/// use boo_fleet_core::wire::SseDecoder;
/// let mut d = SseDecoder::new();
/// assert!(d.push(b"event:message\ndata:{\"type\":\"act").unwrap().is_empty());
/// let msgs = d.push(b"ivity\",\"data\":\"{}\"}\n\n").unwrap();
/// assert_eq!(msgs[0].data, r#"{"type":"activity","data":"{}"}"#);
/// ```
#[derive(Debug, Clone)]
pub struct SseDecoder {
    line: Vec<u8>,
    event: Option<String>,
    data: Option<String>,
    max_message_bytes: usize,
    skip_lf: bool,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// A decoder accepting messages of up to 16 MiB (llama-swap sends its whole log history in
    /// one message on connect).
    pub fn new() -> Self {
        Self::with_limit(16 << 20)
    }

    /// A decoder with an explicit per-message size limit in bytes.
    pub fn with_limit(max_message_bytes: usize) -> Self {
        SseDecoder {
            line: Vec::new(),
            event: None,
            data: None,
            max_message_bytes,
            skip_lf: false,
        }
    }

    /// Feeds bytes; returns the messages completed by them.
    ///
    /// # Errors
    /// [`Error::Wire`] when one message grows beyond the limit (the decoder resets).
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<Vec<SseMessage>, Error> {
        let mut out = Vec::new();
        while let Some(&first) = chunk.first() {
            if self.skip_lf {
                self.skip_lf = false;
                if first == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            // A line at a time (the event stream carries kilobytes of JSON per request).
            let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) else {
                self.extend_line(chunk)?;
                break;
            };
            self.extend_line(&chunk[..end])?;
            self.skip_lf = chunk[end] == b'\r';
            let mut line = std::mem::take(&mut self.line);
            if let Some(m) = self.line_done(&line) {
                out.push(m);
            }
            line.clear();
            self.line = line; // keeps its allocation for the next line
            chunk = &chunk[end + 1..];
        }
        Ok(out)
    }

    /// Appends to the current line, or resets and fails when the message grows beyond the limit.
    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let pending = self.line.len() + bytes.len() + self.data.as_ref().map_or(0, String::len);
        if pending > self.max_message_bytes {
            self.line.clear();
            self.event = None;
            self.data = None;
            return Err(Error::wire(
                "event stream",
                "data",
                format!("message exceeds {} bytes", self.max_message_bytes),
            ));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8]) -> Option<SseMessage> {
        if line.is_empty() {
            let data = self.data.take();
            let event = self.event.take();
            return data.map(|data| SseMessage {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data,
            });
        }
        if line[0] == b':' {
            return None;
        }
        // `from_utf8` checks ASCII a word at a time; `from_utf8_lossy` walks byte by byte, and
        // the data lines of llama-swap's events are long (JSON inside a JSON string).
        let text = match std::str::from_utf8(line) {
            Ok(s) => std::borrow::Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(line),
        };
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match self.data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // `id:`, `retry:` and unknown fields are not used by llama-swap.
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Small JSON helpers

fn obj<'a>(v: &'a Value, what: &'static str, field: &str) -> Result<&'a Map<String, Value>, Error> {
    v.as_object()
        .ok_or_else(|| Error::wire(what, field, format!("expected an object, got {}", kind(v))))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn opt_str(m: &Map<String, Value>, key: &str, what: &'static str) -> Result<Option<String>, Error> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(Error::wire(
            what,
            key,
            format!("expected a string, got {}", kind(v)),
        )),
    }
}

fn req_str(m: &Map<String, Value>, key: &str, what: &'static str) -> Result<String, Error> {
    opt_str(m, key, what)?.ok_or_else(|| Error::wire(what, key, "missing"))
}

/// A number where negative values (the `-1` sentinel) mean unknown.
fn opt_count(m: &Map<String, Value>, key: &str, what: &'static str) -> Result<Option<u64>, Error> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if n.as_i64().is_some_and(|i| i < 0) || n.as_f64().is_some_and(|f| f < 0.0) {
                Ok(None)
            } else if let Some(f) = n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f <= u64::MAX as f64)
            {
                Ok(Some(f as u64))
            } else {
                Err(Error::wire(
                    what,
                    key,
                    format!("expected a whole number, got {n}"),
                ))
            }
        }
        Some(v) => Err(Error::wire(
            what,
            key,
            format!("expected a number, got {}", kind(v)),
        )),
    }
}

/// A rate where negative values (the `-1` sentinel) mean unknown.
fn opt_rate(m: &Map<String, Value>, key: &str, what: &'static str) -> Result<Option<f64>, Error> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64().filter(|f| *f >= 0.0 && f.is_finite())),
        Some(v) => Err(Error::wire(
            what,
            key,
            format!("expected a number, got {}", kind(v)),
        )),
    }
}

fn parse_json(text: &str, what: &'static str) -> Result<Value, Error> {
    serde_json::from_str(text).map_err(|e| Error::wire(what, "$", format!("not JSON: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Activity entries

/// One completed request as llama-swap recorded it, normalized across API generations.
/// `None` means the host did not report the value (absent field or sentinel `-1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityEntry {
    /// The host's row id (legacy rings count from 0 and restart with the process).
    pub id: u64,
    /// Completion time (ms since epoch, UTC).
    pub ts_ms: u64,
    /// The resolved model id.
    pub model: String,
    /// Request path (v209+).
    pub req_path: Option<String>,
    /// Response content type (v209+).
    pub resp_content_type: Option<String>,
    /// Response status (v209+).
    pub resp_status_code: Option<u16>,
    /// Prompt tokens served from the KV cache.
    pub cache_tokens: Option<u64>,
    /// Prompt tokens processed (excluding cached ones when llama-server timings were present).
    pub input_tokens: Option<u64>,
    /// Generated tokens.
    pub output_tokens: Option<u64>,
    /// Prompt processing speed (tokens/s).
    pub prompt_per_second: Option<f64>,
    /// Generation speed (tokens/s).
    pub tokens_per_second: Option<f64>,
    /// Draft tokens (v229+).
    pub draft_tokens: Option<u64>,
    /// Accepted draft tokens (v229+).
    pub draft_acc_tokens: Option<u64>,
    /// Duration (ms).
    pub duration_ms: Option<u64>,
    /// Whether a capture is available from `/api/captures/{id}`.
    pub has_capture: bool,
    /// Error text for failed requests (v229+).
    pub error_msg: Option<String>,
    /// Request metadata (v229+).
    pub metadata: Option<Value>,
}

/// Parses one activity entry (flat ≤v208 or nested `tokens` v209+).
///
/// # Errors
/// [`Error::Wire`] naming the field when `id`, `timestamp` or `model` is missing or malformed,
/// or a field has the wrong type.
///
/// # Example
/// ```
/// use boo_fleet_core::wire::parse_activity_entry;
/// let legacy = serde_json::json!({"id":3,"timestamp":"2026-05-01T10:00:00Z","model":"qwen",
///   "cache_tokens":-1,"input_tokens":12,"output_tokens":40,"prompt_per_second":-1,
///   "tokens_per_second":51.5,"duration_ms":900,"has_capture":false});
/// let e = parse_activity_entry(&legacy).unwrap();
/// assert_eq!((e.input_tokens, e.cache_tokens, e.prompt_per_second), (Some(12), None, None));
/// ```
pub fn parse_activity_entry(v: &Value) -> Result<ActivityEntry, Error> {
    const W: &str = "activity entry";
    let m = obj(v, W, "$")?;
    let id = opt_count(m, "id", W)?.ok_or_else(|| Error::wire(W, "id", "missing or negative"))?;
    let timestamp = req_str(m, "timestamp", W)?;
    let ts_ms = parse_rfc3339_ms(&timestamp, "timestamp")?;
    let model = req_str(m, "model", W)?;
    let (tokens, tw): (&Map<String, Value>, &'static str) = match m.get("tokens") {
        Some(t @ Value::Object(_)) => (obj(t, W, "tokens")?, "activity entry tokens"),
        Some(Value::Null) | None => (m, W),
        Some(t) => {
            return Err(Error::wire(
                W,
                "tokens",
                format!("expected an object, got {}", kind(t)),
            ));
        }
    };
    let resp_status_code = match opt_count(m, "resp_status_code", W)? {
        None => None,
        Some(c) => Some(u16::try_from(c).map_err(|_| {
            Error::wire(W, "resp_status_code", format!("{c} is not an HTTP status"))
        })?),
    };
    let has_capture = match m.get("has_capture") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(Error::wire(
                W,
                "has_capture",
                format!("expected a boolean, got {}", kind(v)),
            ));
        }
    };
    Ok(ActivityEntry {
        id,
        ts_ms,
        model,
        req_path: opt_str(m, "req_path", W)?,
        resp_content_type: opt_str(m, "resp_content_type", W)?,
        resp_status_code,
        cache_tokens: opt_count(tokens, "cache_tokens", tw)?,
        input_tokens: opt_count(tokens, "input_tokens", tw)?,
        output_tokens: opt_count(tokens, "output_tokens", tw)?,
        prompt_per_second: opt_rate(tokens, "prompt_per_second", tw)?,
        tokens_per_second: opt_rate(tokens, "tokens_per_second", tw)?,
        draft_tokens: opt_count(tokens, "draft_tokens", tw)?,
        draft_acc_tokens: opt_count(tokens, "draft_acc_tokens", tw)?,
        duration_ms: opt_count(m, "duration_ms", W)?,
        has_capture,
        error_msg: opt_str(m, "error_msg", W)?.filter(|s| !s.is_empty()),
        metadata: m.get("metadata").filter(|v| !v.is_null()).cloned(),
    })
}

/// Parses a list of activity entries: the legacy `GET /api/metrics` array (≤v235), the `metrics`
/// SSE payload, or a v236+ `GET /api/metrics/activity` page `{"data":[...],...}`.
///
/// # Errors
/// [`Error::Wire`]: not JSON, not an array or page, or a bad entry (its index is in the field).
pub fn parse_activity_list(json: &str) -> Result<Vec<ActivityEntry>, Error> {
    activity_list_value(&parse_json(json, "activity list")?)
}

fn activity_list_value(v: &Value) -> Result<Vec<ActivityEntry>, Error> {
    let items = match v {
        Value::Array(a) => a,
        Value::Object(m) => match m.get("data") {
            Some(Value::Array(a)) => a,
            Some(Value::Null) => return Ok(Vec::new()),
            _ => {
                return Err(Error::wire(
                    "activity list",
                    "data",
                    "expected an array of entries",
                ));
            }
        },
        Value::Null => return Ok(Vec::new()),
        other => {
            return Err(Error::wire(
                "activity list",
                "$",
                format!("expected an array or a page object, got {}", kind(other)),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, e)| {
            parse_activity_entry(e).map_err(|err| match err {
                Error::Wire {
                    what,
                    field,
                    problem,
                } => Error::Wire {
                    what,
                    field: format!("[{i}].{field}"),
                    problem,
                },
                other => other,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// /api/events

/// One entry of a `modelStatus` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelStatusEntry {
    /// Model id (`peer/model` for peer entries).
    pub id: String,
    /// Display name, if configured.
    pub name: Option<String>,
    /// The mapped state (`Unknown` for peers and unrecognised strings).
    pub state: ModelState,
    /// Hidden from `/v1/models`.
    pub unlisted: bool,
    /// Set for models served by a peer (not local processes).
    pub peer_id: Option<String>,
}

/// Which log a `logData` chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// llama-swap's own log.
    Proxy,
    /// The model processes' output.
    Upstream,
}

/// A request in flight (v235+ payloads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightRequest {
    /// The host's request id (a decimal string).
    pub id: String,
    /// Model, if given.
    pub model: Option<String>,
    /// Request path, if given.
    pub req_path: Option<String>,
    /// Start time (ms since epoch), if given and parseable.
    pub started_at: Option<u64>,
}

/// An `inflight` event in any of its generations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InFlight {
    /// v192–v234: `{"total":N}`.
    Total(u32),
    /// v235–v239: `{"requests":[...]}`, the full list.
    Requests(Vec<InFlightRequest>),
    /// v240+: `{"operation":"snapshot","requests":[...]}`.
    Snapshot(Vec<InFlightRequest>),
    /// v240+: `{"operation":"upsert","request":{...}}`.
    Upsert(InFlightRequest),
    /// v240+: `{"operation":"remove","id":"7"}`.
    Remove(String),
}

/// A decoded `/api/events` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SwapEvent {
    /// Every configured model with its state.
    ModelStatus(Vec<ModelStatusEntry>),
    /// A chunk of log text.
    LogData {
        /// Which log.
        source: LogSource,
        /// Raw text (may hold several lines or a partial one).
        data: String,
    },
    /// ≤v235: activity entries (the whole ring on connect, then one per request).
    Metrics(Vec<ActivityEntry>),
    /// v236+: a new activity row id; fetch it from `/api/metrics/activity?min_id=N&max_id=N`.
    Activity {
        /// Row id.
        id: u64,
    },
    /// In-flight requests.
    InFlight(InFlight),
    /// v245+: the active profile.
    ProfileChanged {
        /// Profile name, `None` when no profile is active.
        active: Option<String>,
    },
    /// Any other type (e.g. `uiConfig`), kept raw.
    Other {
        /// The envelope `type`.
        kind: String,
        /// The decoded `data`.
        data: Value,
    },
}

impl SwapEvent {
    /// For `ModelStatus`: local models (no peer id) with their states, in host order.
    pub fn local_model_states(&self) -> Option<Vec<(String, ModelState)>> {
        match self {
            SwapEvent::ModelStatus(list) => Some(
                list.iter()
                    .filter(|e| e.peer_id.as_deref().is_none_or(str::is_empty))
                    .map(|e| (e.id.clone(), e.state))
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// Parses one `/api/events` message body (the SSE `data`): `{"type":T,"data":D}` where `D` is
/// normally a JSON string holding JSON (double-encoded); an already-decoded `D` is accepted too.
///
/// # Errors
/// [`Error::Wire`] naming the field: not JSON, no `type`, `data` not decodable, or a payload
/// that does not match its type.
///
/// # Example
/// ```
/// use boo_fleet_core::wire::{parse_event, SwapEvent};
/// let e = parse_event(r#"{"type":"activity","data":"{\"id\":42}"}"#).unwrap();
/// assert_eq!(e, SwapEvent::Activity { id: 42 });
/// ```
pub fn parse_event(json: &str) -> Result<SwapEvent, Error> {
    match fast::event(json) {
        Some(ev) => Ok(ev),
        None => parse_event_general(json),
    }
}

/// [`parse_event`] through a `Value` tree: every event type, every shape, precise errors.
fn parse_event_general(json: &str) -> Result<SwapEvent, Error> {
    const W: &str = "event envelope";
    let env = parse_json(json, W)?;
    let m = obj(&env, W, "$")?;
    let ty = req_str(m, "type", W)?;
    let data = match m.get("data") {
        Some(Value::String(s)) => match ty.as_str() {
            // Tolerate a plain string for unknown types only; known ones must be JSON.
            "modelStatus" | "logData" | "metrics" | "activity" | "inflight" | "profileChanged"
            | "uiConfig" => serde_json::from_str(s)
                .map_err(|e| Error::wire(W, "data", format!("not a JSON string: {e}")))?,
            _ => serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone())),
        },
        Some(v) => v.clone(),
        None => return Err(Error::wire(W, "data", "missing")),
    };
    match ty.as_str() {
        "modelStatus" => parse_model_status(&data).map(SwapEvent::ModelStatus),
        "logData" => {
            const L: &str = "logData event";
            let d = obj(&data, L, "data")?;
            let source = match req_str(d, "source", L)?.as_str() {
                "proxy" => LogSource::Proxy,
                "upstream" => LogSource::Upstream,
                other => {
                    return Err(Error::wire(
                        L,
                        "source",
                        format!("unknown source {other:?}"),
                    ));
                }
            };
            Ok(SwapEvent::LogData {
                source,
                data: opt_str(d, "data", L)?.unwrap_or_default(),
            })
        }
        "metrics" => activity_list_value(&data).map(SwapEvent::Metrics),
        "activity" => {
            let d = obj(&data, "activity event", "data")?;
            let id = opt_count(d, "id", "activity event")?
                .ok_or_else(|| Error::wire("activity event", "id", "missing"))?;
            Ok(SwapEvent::Activity { id })
        }
        "inflight" => parse_inflight(&data).map(SwapEvent::InFlight),
        "profileChanged" => {
            let d = obj(&data, "profileChanged event", "data")?;
            Ok(SwapEvent::ProfileChanged {
                active: opt_str(d, "active", "profileChanged event")?,
            })
        }
        _ => Ok(SwapEvent::Other { kind: ty, data }),
    }
}

fn parse_model_status(v: &Value) -> Result<Vec<ModelStatusEntry>, Error> {
    const W: &str = "modelStatus event";
    let items = match v {
        Value::Array(items) => items.as_slice(),
        Value::Null => &[], // a Go nil slice: no models configured
        other => {
            return Err(Error::wire(
                W,
                "data",
                format!("expected an array, got {}", kind(other)),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let m = obj(item, W, &format!("[{i}]"))?;
            let id = opt_str(m, "id", W)?
                .ok_or_else(|| Error::wire(W, format!("[{i}].id"), "missing"))?;
            Ok(ModelStatusEntry {
                id,
                name: opt_str(m, "name", W)?.filter(|s| !s.is_empty()),
                state: ModelState::from_llama_swap(
                    opt_str(m, "state", W)?.as_deref().unwrap_or(""),
                ),
                unlisted: m.get("unlisted").and_then(Value::as_bool).unwrap_or(false),
                peer_id: opt_str(m, "peerID", W)?.filter(|s| !s.is_empty()),
            })
        })
        .collect()
}

fn parse_inflight_request(v: &Value, field: &str) -> Result<InFlightRequest, Error> {
    const W: &str = "inflight event";
    let m = obj(v, W, field)?;
    let id = match m.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(Error::wire(W, format!("{field}.id"), "missing")),
    };
    let started_at =
        opt_str(m, "timestamp", W)?.and_then(|t| parse_rfc3339_ms(&t, "timestamp").ok());
    Ok(InFlightRequest {
        id,
        model: opt_str(m, "model", W)?,
        req_path: opt_str(m, "req_path", W)?,
        started_at,
    })
}

fn parse_inflight(v: &Value) -> Result<InFlight, Error> {
    const W: &str = "inflight event";
    let m = obj(v, W, "data")?;
    let list = |key: &str| -> Result<Vec<InFlightRequest>, Error> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, r)| parse_inflight_request(r, &format!("{key}[{i}]")))
                .collect(),
            Some(other) => Err(Error::wire(
                W,
                key,
                format!("expected an array, got {}", kind(other)),
            )),
        }
    };
    if let Some(op) = opt_str(m, "operation", W)? {
        return match op.as_str() {
            "snapshot" => Ok(InFlight::Snapshot(list("requests")?)),
            "upsert" => {
                let r = m
                    .get("request")
                    .ok_or_else(|| Error::wire(W, "request", "missing"))?;
                Ok(InFlight::Upsert(parse_inflight_request(r, "request")?))
            }
            "remove" => match m.get("id") {
                Some(Value::String(s)) => Ok(InFlight::Remove(s.clone())),
                Some(Value::Number(n)) => Ok(InFlight::Remove(n.to_string())),
                _ => Err(Error::wire(W, "id", "missing")),
            },
            other => Err(Error::wire(
                W,
                "operation",
                format!("unknown operation {other:?}"),
            )),
        };
    }
    if m.contains_key("requests") {
        return Ok(InFlight::Requests(list("requests")?));
    }
    match opt_count(m, "total", W)? {
        Some(n) => Ok(InFlight::Total(u32::try_from(n).unwrap_or(u32::MAX))),
        None => Err(Error::wire(
            W,
            "data",
            "expected `total`, `requests` or `operation`",
        )),
    }
}

/// Turns `inflight` events of any generation into a count of requests in flight.
///
/// # Example
/// ```
/// use boo_fleet_core::wire::{InFlight, InFlightRequest, InFlightTracker};
/// let req = |id: &str| InFlightRequest { id: id.into(), model: None, req_path: None, started_at: None };
/// let mut t = InFlightTracker::default();
/// assert_eq!(t.apply(&InFlight::Snapshot(vec![req("1")])), 1);
/// assert_eq!(t.apply(&InFlight::Upsert(req("2"))), 2);
/// assert_eq!(t.apply(&InFlight::Upsert(req("2"))), 2); // progress update, same request
/// assert_eq!(t.apply(&InFlight::Remove("1".into())), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct InFlightTracker {
    ids: std::collections::BTreeSet<String>,
    total: Option<u32>,
}

impl InFlightTracker {
    /// Applies one event; returns the count now in flight.
    pub fn apply(&mut self, event: &InFlight) -> u32 {
        match event {
            InFlight::Total(n) => {
                self.ids.clear();
                self.total = Some(*n);
            }
            InFlight::Requests(list) | InFlight::Snapshot(list) => {
                self.total = None;
                self.ids = list.iter().map(|r| r.id.clone()).collect();
            }
            InFlight::Upsert(r) => {
                self.total = None;
                self.ids.insert(r.id.clone());
            }
            InFlight::Remove(id) => {
                self.total = None;
                self.ids.remove(id);
            }
        }
        self.count()
    }

    /// Requests in flight now.
    pub fn count(&self) -> u32 {
        self.total
            .unwrap_or_else(|| u32::try_from(self.ids.len()).unwrap_or(u32::MAX))
    }

    /// Forgets everything (call on reconnect; the host resends a snapshot).
    pub fn reset(&mut self) {
        self.ids.clear();
        self.total = None;
    }
}

// ---------------------------------------------------------------------------------------------
// /running, /api/version, /api/performance

/// One entry of `GET /running`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningModel {
    /// Model id.
    pub model: String,
    /// Its state.
    pub state: ModelState,
    /// Effective TTL in seconds (`0` = never), when the version reports it (v186+).
    pub ttl_s: Option<u64>,
}

/// Parses `GET /running` → `{"running":[{"model","state","ttl",...}]}`.
///
/// # Errors
/// [`Error::Wire`] when the body is not that shape.
pub fn parse_running(json: &str) -> Result<Vec<RunningModel>, Error> {
    const W: &str = "running list";
    let v = parse_json(json, W)?;
    let m = obj(&v, W, "$")?;
    let items = match m.get("running") {
        Some(Value::Array(a)) => a.as_slice(),
        None | Some(Value::Null) => &[],
        Some(other) => {
            return Err(Error::wire(
                W,
                "running",
                format!("expected an array, got {}", kind(other)),
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, it)| {
            let r = obj(it, W, &format!("running[{i}]"))?;
            Ok(RunningModel {
                model: opt_str(r, "model", W)?
                    .ok_or_else(|| Error::wire(W, format!("running[{i}].model"), "missing"))?,
                state: ModelState::from_llama_swap(
                    opt_str(r, "state", W)?.as_deref().unwrap_or(""),
                ),
                ttl_s: opt_count(r, "ttl", W)?,
            })
        })
        .collect()
}

/// Which activity API a host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityApi {
    /// ≤v235: `GET /api/metrics` returns the whole in-memory ring; SSE `metrics` carries entries.
    Ring,
    /// v236+: `GET /api/metrics/activity?min_id=` pages; SSE `activity` carries only ids.
    Paged,
}

/// A host's llama-swap version (`GET /api/version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiVersion {
    /// The raw `version` string.
    pub raw: String,
    /// The release number (`v250` → 250) when it is one; development builds give `None` and are
    /// treated as current.
    pub number: Option<u32>,
}

impl ApiVersion {
    /// Which activity API to use.
    pub fn activity_api(&self) -> ActivityApi {
        match self.number {
            Some(n) if n <= 235 => ActivityApi::Ring,
            _ => ActivityApi::Paged,
        }
    }

    /// Whether `GET /api/performance` exists (v212+).
    pub fn has_performance(&self) -> bool {
        self.number.is_none_or(|n| n >= 212)
    }
}

/// Parses `GET /api/version` → `{"version","commit","build_date"}`.
///
/// # Errors
/// [`Error::Wire`] when `version` is missing.
///
/// # Example
/// ```
/// use boo_fleet_core::wire::{parse_version, ActivityApi};
/// let v = parse_version(r#"{"version":"v230","commit":"abc","build_date":"x"}"#).unwrap();
/// assert_eq!((v.number, v.activity_api()), (Some(230), ActivityApi::Ring));
/// ```
pub fn parse_version(json: &str) -> Result<ApiVersion, Error> {
    const W: &str = "version";
    let v = parse_json(json, W)?;
    let raw = req_str(obj(&v, W, "$")?, "version", W)?;
    let digits = raw.trim().trim_start_matches(['v', 'V']);
    let number = digits
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .filter(|d| !d.is_empty())
        .and_then(|d| d.parse().ok());
    Ok(ApiVersion { raw, number })
}

/// One GPU reading from `/api/performance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSample {
    /// Sample time (ms since epoch).
    pub ts_ms: u64,
    /// GPU index.
    pub id: u64,
    /// GPU name.
    pub name: Option<String>,
    /// Temperature (°C).
    pub temp_c: Option<f64>,
    /// VRAM used (MiB).
    pub mem_used_mb: Option<u64>,
    /// VRAM total (MiB).
    pub mem_total_mb: Option<u64>,
    /// Power draw (W).
    pub power_draw_w: Option<f64>,
}

/// A parsed `/api/performance` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Performance {
    /// GPU readings (one per GPU per sample).
    pub gpu: Vec<GpuSample>,
    /// System readings, raw, each with its timestamp in ms.
    pub sys: Vec<(u64, Value)>,
}

impl Performance {
    /// The newest sample time over GPU and system readings (the next `after` watermark).
    pub fn newest_ts(&self) -> Option<u64> {
        self.gpu
            .iter()
            .map(|g| g.ts_ms)
            .chain(self.sys.iter().map(|(t, _)| *t))
            .max()
    }

    /// The latest GPU reading summed over GPUs (VRAM and power summed, hottest temperature).
    pub fn latest(&self) -> Option<PerfSample> {
        let at = self.gpu.iter().map(|g| g.ts_ms).max()?;
        let now: Vec<&GpuSample> = self.gpu.iter().filter(|g| g.ts_ms == at).collect();
        let sum_u =
            |f: fn(&GpuSample) -> Option<u64>| now.iter().filter_map(|g| f(g)).reduce(|a, b| a + b);
        let sum_f =
            |f: fn(&GpuSample) -> Option<f64>| now.iter().filter_map(|g| f(g)).reduce(|a, b| a + b);
        Some(PerfSample {
            at,
            vram_used_mb: sum_u(|g| g.mem_used_mb),
            vram_total_mb: sum_u(|g| g.mem_total_mb),
            gpu_temp_c: now.iter().filter_map(|g| g.temp_c).reduce(f64::max),
            power_w: sum_f(|g| g.power_draw_w),
        })
    }
}

/// Parses `GET /api/performance` (`gpu_stats` may be `null`; `{"enabled":false}` gives an
/// empty answer).
///
/// # Errors
/// [`Error::Wire`] naming the field when a sample lacks a valid `timestamp` or has wrong types.
pub fn parse_performance(json: &str) -> Result<Performance, Error> {
    const W: &str = "performance";
    let v = parse_json(json, W)?;
    let m = obj(&v, W, "$")?;
    let arr = |key: &str| -> Result<&[Value], Error> {
        match m.get(key) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(Error::wire(
                W,
                key,
                format!("expected an array, got {}", kind(other)),
            )),
        }
    };
    let mut gpu = Vec::new();
    for (i, g) in arr("gpu_stats")?.iter().enumerate() {
        let field = format!("gpu_stats[{i}]");
        let s = obj(g, W, &field)?;
        let ts = opt_str(s, "timestamp", W)?
            .ok_or_else(|| Error::wire(W, format!("{field}.timestamp"), "missing"))?;
        gpu.push(GpuSample {
            ts_ms: parse_rfc3339_ms(&ts, &format!("{field}.timestamp"))?,
            id: opt_count(s, "id", W)?.unwrap_or(0),
            name: opt_str(s, "name", W)?,
            temp_c: opt_rate(s, "temp_c", W)?,
            mem_used_mb: opt_count(s, "mem_used_mb", W)?,
            mem_total_mb: opt_count(s, "mem_total_mb", W)?,
            power_draw_w: opt_rate(s, "power_draw_w", W)?,
        });
    }
    let mut sys = Vec::new();
    for (i, s) in arr("sys_stats")?.iter().enumerate() {
        let field = format!("sys_stats[{i}]");
        let o = obj(s, W, &field)?;
        let ts = opt_str(o, "timestamp", W)?
            .ok_or_else(|| Error::wire(W, format!("{field}.timestamp"), "missing"))?;
        sys.push((
            parse_rfc3339_ms(&ts, &format!("{field}.timestamp"))?,
            s.clone(),
        ));
    }
    Ok(Performance { gpu, sys })
}

// ---------------------------------------------------------------------------------------------
// llama-server `/props` and `/slots`

/// What a bare llama-server reports in `GET /props` (fields vary by build; all optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerProps {
    /// `--alias`, if set.
    pub model_alias: Option<String>,
    /// The model file.
    pub model_path: Option<String>,
    /// Context per slot (`default_generation_settings.n_ctx`).
    pub n_ctx: Option<u64>,
    /// Number of slots (`--parallel`).
    pub total_slots: Option<u64>,
    /// Build string, e.g. `b6500-abc123`.
    pub build_info: Option<String>,
}

impl ServerProps {
    /// The id this server's model goes by: the alias, else the file name without `.gguf`.
    pub fn model_id(&self) -> Option<String> {
        if let Some(a) = self.model_alias.as_ref().filter(|a| !a.is_empty()) {
            return Some(a.clone());
        }
        let path = self.model_path.as_deref()?;
        let file = path.rsplit(['/', '\\']).next().unwrap_or(path);
        let id = file.strip_suffix(".gguf").unwrap_or(file);
        (!id.is_empty()).then(|| id.to_owned())
    }
}

/// Parses llama-server `GET /props`.
///
/// # Errors
/// [`Error::Wire`] when the body is not a JSON object or a known field has the wrong type.
///
/// # Example
/// ```
/// use boo_fleet_core::wire::parse_server_props;
/// let p = parse_server_props(r#"{"default_generation_settings":{"n_ctx":8192},"total_slots":4,
///   "model_alias":"","model_path":"/models/qwen3-8b-q4.gguf","build_info":"b6500-abc"}"#).unwrap();
/// assert_eq!((p.n_ctx, p.model_id().as_deref()), (Some(8192), Some("qwen3-8b-q4")));
/// ```
pub fn parse_server_props(json: &str) -> Result<ServerProps, Error> {
    const W: &str = "props";
    let v = parse_json(json, W)?;
    let m = obj(&v, W, "$")?;
    let n_ctx = match m.get("default_generation_settings") {
        Some(d @ Value::Object(_)) => {
            opt_count(obj(d, W, "default_generation_settings")?, "n_ctx", W)?
        }
        _ => None,
    };
    Ok(ServerProps {
        model_alias: opt_str(m, "model_alias", W)?,
        model_path: opt_str(m, "model_path", W)?,
        n_ctx,
        total_slots: opt_count(m, "total_slots", W)?,
        build_info: opt_str(m, "build_info", W)?,
    })
}

/// Slot usage of a llama-server (`GET /slots`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotsSummary {
    /// Slots reported.
    pub total: u32,
    /// Slots with `is_processing: true` (requests in flight).
    pub busy: u32,
}

/// Parses llama-server `GET /slots` (an array of slot objects).
///
/// # Errors
/// [`Error::Wire`] when the body is not a JSON array of objects.
pub fn parse_slots(json: &str) -> Result<SlotsSummary, Error> {
    const W: &str = "slots";
    let v = parse_json(json, W)?;
    let Value::Array(items) = &v else {
        return Err(Error::wire(
            W,
            "$",
            format!("expected an array, got {}", kind(&v)),
        ));
    };
    let mut busy = 0u32;
    for (i, it) in items.iter().enumerate() {
        let m = obj(it, W, &format!("[{i}]"))?;
        if m.get("is_processing")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            busy += 1;
        }
    }
    Ok(SlotsSummary {
        total: u32::try_from(items.len()).unwrap_or(u32::MAX),
        busy,
    })
}

#[cfg(test)]
mod tests;

/// Typed decoding of the events llama-swap sends for every request (`inflight` upserts and
/// removes, the `activity` id, its `logData` line): no `Value` tree, and the entries' header maps are skipped rather
/// than built. Anything it does not accept in its plain form (an error, an odd shape, another
/// event type) is left to the general path, so results and error messages are the same.
mod fast {
    use super::{InFlight, InFlightRequest, LogSource, SwapEvent};
    use crate::time::parse_rfc3339_ms;
    use serde::Deserialize;
    use std::borrow::Cow;

    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow)]
        ty: Cow<'a, str>,
        #[serde(borrow)]
        data: Cow<'a, str>,
    }

    /// A request id: a string, or an integer written as its decimal digits.
    struct Id(String);

    impl<'de> Deserialize<'de> for Id {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Id;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a string or an integer")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
                    Ok(Id(v.to_owned()))
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Id, E> {
                    Ok(Id(v.to_string()))
                }
                fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Id, E> {
                    Ok(Id(v.to_string()))
                }
            }
            d.deserialize_any(V)
        }
    }

    #[derive(Deserialize)]
    struct Request<'a> {
        id: Id,
        #[serde(borrow)]
        timestamp: Option<Cow<'a, str>>,
        #[serde(borrow)]
        model: Option<Cow<'a, str>>,
        #[serde(borrow)]
        req_path: Option<Cow<'a, str>>,
    }

    impl Request<'_> {
        fn into_request(self) -> InFlightRequest {
            InFlightRequest {
                id: self.id.0,
                model: self.model.map(Cow::into_owned),
                req_path: self.req_path.map(Cow::into_owned),
                started_at: self
                    .timestamp
                    .and_then(|t| parse_rfc3339_ms(&t, "timestamp").ok()),
            }
        }
    }

    #[derive(Deserialize)]
    struct Inflight<'a> {
        #[serde(borrow)]
        operation: Option<Cow<'a, str>>,
        #[serde(borrow)]
        request: Option<Request<'a>>,
        #[serde(borrow)]
        requests: Option<Vec<Request<'a>>>,
        id: Option<Id>,
    }

    #[derive(Deserialize)]
    struct Activity {
        id: u64,
    }

    #[derive(Deserialize)]
    struct Log<'a> {
        #[serde(borrow)]
        source: Cow<'a, str>,
        #[serde(borrow)]
        data: Option<Cow<'a, str>>,
    }

    /// Splits llama-swap's envelope as its Go encoder writes it, `{"type":"T","data":"D"}`
    /// (fields in that order, no spaces), into the type and the data string decoded. `None`
    /// for any other shape, an escape in the type, or a data string that is not valid JSON
    /// string content; the caller then parses the envelope with serde.
    ///
    /// The data string is JSON inside a JSON string, so nearly every other byte of it is an
    /// escaped quote; decoding it here costs about a third of serde's general string path.
    pub(super) fn split_envelope(json: &str) -> Option<(&str, String)> {
        let rest = json.trim_end().strip_prefix("{\"type\":\"")?;
        let end = memchr::memchr2(b'"', b'\\', rest.as_bytes())?;
        if rest.as_bytes()[end] != b'"' {
            return None;
        }
        let (ty, rest) = rest.split_at(end);
        let raw = rest.strip_prefix("\",\"data\":\"")?.strip_suffix("\"}")?;
        Some((ty, unescape(raw)?))
    }

    /// Decodes the content of a JSON string (without its quotes); `None` if it is not valid
    /// JSON string content (an unescaped quote or control character, a bad escape, a lone
    /// surrogate).
    pub(super) fn unescape(raw: &str) -> Option<String> {
        let b = raw.as_bytes();
        let mut out = String::with_capacity(raw.len());
        let mut i = 0;
        while i < b.len() {
            let Some(off) = b[i..]
                .iter()
                .position(|&c| c == b'\\' || c == b'"' || c < 0x20)
            else {
                out.push_str(&raw[i..]);
                break;
            };
            // `off` stops at an ASCII byte, so the run ends on a char boundary.
            out.push_str(&raw[i..i + off]);
            i += off;
            if b[i] != b'\\' {
                return None;
            }
            let esc = *b.get(i + 1)?;
            i += 2;
            let c = match esc {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => {
                    let hi = hex4(b.get(i..i + 4)?)?;
                    i += 4;
                    match hi {
                        0xD800..=0xDBFF => {
                            if b.get(i..i + 2)? != b"\\u" {
                                return None;
                            }
                            let lo = hex4(b.get(i + 2..i + 6)?)?;
                            if !(0xDC00..=0xDFFF).contains(&lo) {
                                return None;
                            }
                            i += 6;
                            char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                        }
                        _ => char::from_u32(hi)?,
                    }
                }
                _ => return None,
            };
            out.push(c);
        }
        Some(out)
    }

    fn hex4(h: &[u8]) -> Option<u32> {
        h.iter().try_fold(0u32, |acc, &c| {
            let d = (c as char).to_digit(16)?;
            Some(acc * 16 + d)
        })
    }

    pub(super) fn event(json: &str) -> Option<SwapEvent> {
        let env: Envelope<'_> = match split_envelope(json) {
            Some((ty, data)) => Envelope {
                ty: Cow::Borrowed(ty),
                data: Cow::Owned(data),
            },
            None => serde_json::from_str(json).ok()?,
        };
        match &*env.ty {
            "inflight" => {
                let d: Inflight<'_> = serde_json::from_str(&env.data).ok()?;
                let op = match d.operation.as_deref()? {
                    "upsert" => InFlight::Upsert(d.request?.into_request()),
                    "remove" => InFlight::Remove(d.id?.0),
                    "snapshot" => InFlight::Snapshot(
                        d.requests
                            .unwrap_or_default()
                            .into_iter()
                            .map(Request::into_request)
                            .collect(),
                    ),
                    _ => return None,
                };
                Some(SwapEvent::InFlight(op))
            }
            "activity" => {
                let a: Activity = serde_json::from_str(&env.data).ok()?;
                Some(SwapEvent::Activity { id: a.id })
            }
            "logData" => {
                let l: Log<'_> = serde_json::from_str(&env.data).ok()?;
                let source = match &*l.source {
                    "proxy" => LogSource::Proxy,
                    "upstream" => LogSource::Upstream,
                    _ => return None,
                };
                Some(SwapEvent::LogData {
                    source,
                    data: l.data.map(Cow::into_owned).unwrap_or_default(),
                })
            }
            _ => None,
        }
    }
}
