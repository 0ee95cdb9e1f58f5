//! Plain record and query types shared with the gateway and the control API.
//!
//! Nothing here mentions sqlx: callers build these values and hand them to a
//! [`Store`](crate::Store) or to the [`BatchWriterHandle`](crate::BatchWriterHandle).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One request observed by the gateway (a row of the `requests` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Gateway-assigned request id (unique; re-inserting the same id is a no-op).
    pub request_id: String,
    /// When the request started.
    pub ts: DateTime<Utc>,
    /// Provider that served (or last tried to serve) the request.
    pub provider_id: String,
    /// Model as the client asked for it: composite (`provider/model`) or virtual (`auto:*`).
    pub model: String,
    /// Model id sent upstream, when a provider was chosen.
    pub wire_model: Option<String>,
    /// Consumer label from `X-Boo-Source` (`boochat`, `arena`, ...).
    pub source: Option<String>,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// HTTP status returned to the client.
    pub status: u16,
    /// Error class when the request failed (`upstream_timeout`, `gateway_error`, ...).
    pub error_class: Option<String>,
    /// Time to first byte/token in milliseconds.
    pub ttft_ms: Option<f64>,
    /// Total duration in milliseconds.
    pub duration_ms: f64,
    /// Prompt tokens reported by the upstream.
    pub prompt_tokens: Option<i64>,
    /// Prompt tokens served from the upstream's cache.
    pub cached_tokens: Option<i64>,
    /// Generated tokens reported by the upstream.
    pub completion_tokens: Option<i64>,
    /// Prompt processing speed (tokens/s).
    pub prompt_tps: Option<f64>,
    /// Generation speed (tokens/s).
    pub gen_tps: Option<f64>,
    /// Request body size in bytes.
    pub bytes_in: i64,
    /// Response body size in bytes.
    pub bytes_out: i64,
    /// Whether the response was streamed.
    pub stream: bool,
    /// Routing decision for `auto:*` models, including failovers: compact JSON text, made
    /// once by the gateway and written to the `route` column as is.
    pub route: Option<JsonText>,
}

/// A JSON document kept as its compact text: serialized once where it is made, shared by
/// clones (an `Arc<str>`), bound to the store as is (no `serde_json::Value` tree to build,
/// copy, re-serialize and free per row).
///
/// Equality compares the text. `Serialize`/`Deserialize` go through a `serde_json::Value`
/// (for tests and exports; the store path never does).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonText(std::sync::Arc<str>);

impl JsonText {
    /// Serializes `v` once.
    ///
    /// # Errors
    /// `v`'s `Serialize` failed (e.g. a map with non-string keys).
    pub fn new<T: Serialize + ?Sized>(v: &T) -> serde_json::Result<Self> {
        Ok(Self(serde_json::to_string(v)?.into()))
    }

    /// Wraps text that already is one compact JSON document (for callers that assemble the
    /// text themselves from `serde_json` output). Checked in debug builds only.
    pub fn from_json_string(text: String) -> Self {
        debug_assert!(
            serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(),
            "not JSON: {text}"
        );
        Self(text.into())
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document as a `serde_json::Value` (parsed on every call).
    pub fn to_value(&self) -> serde_json::Value {
        // The text was made by `serde_json` from a valid document, so it parses.
        serde_json::from_str(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

impl From<&serde_json::Value> for JsonText {
    fn from(v: &serde_json::Value) -> Self {
        Self(v.to_string().into())
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(v: serde_json::Value) -> Self {
        Self::from(&v)
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(Self::from)
    }
}

/// One activity row reconciled from a llama-swap host (`host_activity`).
///
/// Re-ingesting the same `(provider_id, upstream_id, ts)` is a no-op.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostActivity {
    /// Provider (host) the row came from.
    pub provider_id: String,
    /// llama-swap's activity id on that host.
    pub upstream_id: i64,
    /// Timestamp reported by llama-swap.
    pub ts: DateTime<Utc>,
    /// Wire model id on that host.
    pub model: String,
    /// Request path (`req_path`), when known.
    pub path: Option<String>,
    /// Upstream status (`resp_status_code`), when known.
    pub status: Option<u16>,
    /// Duration in milliseconds.
    pub duration_ms: Option<f64>,
    /// Prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Cached prompt tokens.
    pub cached_tokens: Option<i64>,
    /// Generated tokens.
    pub completion_tokens: Option<i64>,
    /// Prompt processing speed (tokens/s).
    pub prompt_tps: Option<f64>,
    /// Generation speed (tokens/s).
    pub gen_tps: Option<f64>,
    /// Whether llama-swap holds a capture for this row.
    pub has_capture: bool,
}

/// One performance sample pulled from a host (`perf_samples`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfSample {
    /// Provider (host) id.
    pub provider_id: String,
    /// Sample time.
    pub ts: DateTime<Utc>,
    /// GPU payload as reported (JSON).
    pub gpu: serde_json::Value,
    /// System payload as reported (JSON).
    pub sys: serde_json::Value,
}

/// One 5-minute perf rollup bucket (`perf_rollup_5m`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfRollup {
    /// Provider (host) id.
    pub provider_id: String,
    /// Bucket start (aligned to 5 minutes).
    pub bucket: DateTime<Utc>,
    /// Number of raw samples summarised.
    pub samples: i64,
    /// Aggregated GPU fields: `{"field": {"min","max","avg"}}`.
    pub gpu_agg: serde_json::Value,
    /// Aggregated system fields: `{"field": {"min","max","avg"}}`.
    pub sys_agg: serde_json::Value,
}

/// A model state change on a host (`model_events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEvent {
    /// Provider (host) id.
    pub provider_id: String,
    /// Wire model id, or `*` for host-wide events such as `gap_suspected`.
    pub model: String,
    /// New state (`ready`, `starting`, `stopped`, `gap_suspected`, ...).
    pub state: String,
    /// When the state was observed.
    pub ts: DateTime<Utc>,
    /// Extra detail (JSON), if any.
    pub detail: Option<serde_json::Value>,
}

/// Operator metadata about a host (`hosts`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    /// Provider id (primary key).
    pub provider_id: String,
    /// Operating system label.
    pub os: Option<String>,
    /// GPU label, e.g. `RTX 5090 32GB`.
    pub gpu_label: Option<String>,
    /// Whether the host is enabled.
    pub enabled: bool,
}

/// A capture to store (request/response bodies for one request).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCapture {
    /// Request id the capture belongs to.
    pub request_id: String,
    /// Provider id.
    pub provider_id: String,
    /// Capture time.
    pub ts: DateTime<Utc>,
    /// Captured text (trimmed to the per-row cap before insert).
    pub body: String,
}

/// A stored capture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capture {
    /// Row id.
    pub id: i64,
    /// Request id.
    pub request_id: String,
    /// Provider id.
    pub provider_id: String,
    /// Capture time.
    pub ts: DateTime<Utc>,
    /// Stored text (possibly trimmed).
    pub body: String,
    /// Size in bytes of the original body before trimming.
    pub original_bytes: i64,
    /// True when the body was trimmed to the per-row cap.
    pub truncated: bool,
}

/// Where an activity-feed row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeedOrigin {
    /// Observed by the gateway (`requests`).
    Gateway,
    /// Reconciled from a host's llama-swap activity (`host_activity`).
    Host,
}

impl FeedOrigin {
    /// Lowercase label used in the database and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedOrigin::Gateway => "gateway",
            FeedOrigin::Host => "host",
        }
    }
}

/// One row of the unified activity feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedRow {
    /// Which table the row came from.
    pub origin: FeedOrigin,
    /// Request id (gateway rows) or `<provider>:<upstream_id>` (host rows).
    pub id: String,
    /// Row time.
    pub ts: DateTime<Utc>,
    /// Provider id.
    pub provider_id: String,
    /// Model as asked (gateway) or wire model (host).
    pub model: String,
    /// Consumer label; host rows carry none.
    pub source: Option<String>,
    /// Request path.
    pub path: Option<String>,
    /// HTTP status.
    pub status: Option<u16>,
    /// Duration in milliseconds.
    pub duration_ms: Option<f64>,
    /// Prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Cached prompt tokens.
    pub cached_tokens: Option<i64>,
    /// Generated tokens.
    pub completion_tokens: Option<i64>,
    /// Generation speed (tokens/s).
    pub gen_tps: Option<f64>,
    /// Error class (gateway rows).
    pub error_class: Option<String>,
}

/// Filters for the activity feed. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedFilter {
    /// Only this provider.
    pub provider_id: Option<String>,
    /// Only this model (exact match on the stored model).
    pub model: Option<String>,
    /// Only this source. Host rows have no source, so they never match.
    pub source: Option<String>,
    /// Only this HTTP status.
    pub status: Option<u16>,
    /// Only rows from these origins (`None` = both).
    pub origin: Option<FeedOrigin>,
}

/// Keyset cursor: the feed continues strictly after this `(ts, origin, id)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCursor {
    /// Timestamp of the last row of the previous page.
    pub ts: DateTime<Utc>,
    /// Origin of that row.
    pub origin: FeedOrigin,
    /// Id of that row.
    pub id: String,
}

/// A page of the activity feed, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedPage {
    /// Rows, newest first.
    pub rows: Vec<FeedRow>,
    /// Cursor for the next (older) page, when more rows may exist.
    pub next: Option<FeedCursor>,
}

/// Grouping key for token aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroup {
    /// Group by `source` (`NULL` shows as key `None`).
    Source,
    /// Group by model.
    Model,
    /// Group by provider.
    Provider,
}

/// One aggregate row over gateway-observed requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// Group key (`None` for requests without a source).
    pub key: Option<String>,
    /// Number of requests.
    pub requests: i64,
    /// Sum of prompt tokens.
    pub prompt_tokens: i64,
    /// Sum of cached prompt tokens.
    pub cached_tokens: i64,
    /// Sum of completion tokens.
    pub completion_tokens: i64,
}

/// Latest known state of one model on one provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelState {
    /// Provider id.
    pub provider_id: String,
    /// Wire model id.
    pub model: String,
    /// Latest state.
    pub state: String,
    /// When it was observed.
    pub ts: DateTime<Utc>,
}

/// A value that can go through the [`BatchWriterHandle`](crate::BatchWriterHandle).
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A gateway-observed request.
    Request(RequestRecord),
    /// A host activity row.
    Activity(HostActivity),
    /// A perf sample.
    Perf(PerfSample),
    /// A model state change.
    ModelEvent(ModelEvent),
}

impl From<RequestRecord> for Record {
    fn from(r: RequestRecord) -> Self {
        Record::Request(r)
    }
}
impl From<HostActivity> for Record {
    fn from(r: HostActivity) -> Self {
        Record::Activity(r)
    }
}
impl From<PerfSample> for Record {
    fn from(r: PerfSample) -> Self {
        Record::Perf(r)
    }
}
impl From<ModelEvent> for Record {
    fn from(r: ModelEvent) -> Self {
        Record::ModelEvent(r)
    }
}

impl FeedCursor {
    /// Opaque text form for query strings: `<ts micros>.<origin>.<id>`.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}.{}",
            self.ts.timestamp_micros(),
            self.origin.as_str(),
            self.id
        )
    }

    /// Parse [`FeedCursor::encode`]'s output; errors name the `cursor` field.
    pub fn decode(s: &str) -> Result<Self, crate::StoreError> {
        let bad = |problem: &str| crate::StoreError::Invalid {
            field: "cursor",
            problem: problem.to_string(),
        };
        let mut parts = s.splitn(3, '.');
        let (Some(ts), Some(origin), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("expected <micros>.<origin>.<id>"));
        };
        let micros: i64 = ts.parse().map_err(|_| bad("timestamp is not an integer"))?;
        let ts =
            DateTime::from_timestamp_micros(micros).ok_or_else(|| bad("timestamp out of range"))?;
        let origin = match origin {
            "gateway" => FeedOrigin::Gateway,
            "host" => FeedOrigin::Host,
            _ => return Err(bad("origin must be gateway or host")),
        };
        Ok(FeedCursor {
            ts,
            origin,
            id: id.to_string(),
        })
    }
}

impl std::str::FromStr for UsageGroup {
    type Err = crate::StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "source" => Ok(UsageGroup::Source),
            "model" => Ok(UsageGroup::Model),
            "provider" => Ok(UsageGroup::Provider),
            _ => Err(crate::StoreError::Invalid {
                field: "group",
                problem: format!("expected source, model or provider, got {s:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_bad_cursors_name_the_field() {
        let c = FeedCursor {
            ts: DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap(),
            origin: FeedOrigin::Host,
            id: "gpu.box:42".into(),
        };
        assert_eq!(FeedCursor::decode(&c.encode()).unwrap(), c);
        for bad in ["", "12", "x.host.1", "1.nowhere.1"] {
            let e = FeedCursor::decode(bad).unwrap_err().to_string();
            assert!(e.contains("cursor"), "{bad}: {e}");
        }
        assert_eq!("model".parse::<UsageGroup>().unwrap(), UsageGroup::Model);
        assert!(
            "colour"
                .parse::<UsageGroup>()
                .unwrap_err()
                .to_string()
                .contains("group")
        );
    }
}
