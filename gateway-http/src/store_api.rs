//! The telemetry store wired into the gateway: every finished request goes to the store through
//! a [`BatchWriterHandle`] (never blocking the proxy), favorites for `/api/models` come from the
//! store's settings, and three JSON endpoints read and change what is stored:
//!
//! * `GET /api/activity?provider=&model=&source=&status=&origin=&cursor=&limit=` — the activity
//!   feed, newest first: `{"items":[..],"next":"<cursor>"|null}`; pass `next` back as `cursor`.
//! * `GET /api/usage?group=source|model|provider&since=24h` — token aggregates over gateway
//!   requests: `{"group":"source","from":..,"to":..,"rows":[{"key","requests",..}]}`.
//! * `GET /api/settings` → the settings object; `PATCH /api/settings` with a JSON object: each key
//!   is set, a `null` value deletes it, keys not named are untouched. `favorite_models` takes an
//!   array (replace) or `{"add":[..],"remove":[..]}`; entries are normalized with model-ref's
//!   rules (legacy bare ids get the default provider); favorites naming models or providers that
//!   are currently unavailable are kept; only an explicit removal deletes one.
//!
//! * `GET /api/favorites` → `{"favorites":[..]}`; `POST /api/favorites {"add":[..],"remove":[..]}`
//!   applies the same favorites operations as the PATCH and answers with the new list.
//!
//! Bad input gets a 400 OpenAI-shaped error naming the parameter; a store failure gets a 503.

use crate::telemetry::{RequestRecord, TelemetrySink};
use boo_model_ref::{RegistryView, normalize_favorites};
use boo_telemetry_store::{
    BatchConfig, BatchWriter, BatchWriterHandle, FAVORITES_KEY, FeedCursor, FeedFilter, FeedOrigin,
    RetentionPolicy, Store, StoreError, UsageGroup,
};
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Largest accepted `PATCH /api/settings` body.
const MAX_SETTINGS_BODY: usize = 1024 * 1024;
/// How often the favorites cache is re-read from the store.
const FAVORITES_REFRESH: Duration = Duration::from_secs(30);
/// Default feed page size.
const DEFAULT_LIMIT: u32 = 50;

impl TelemetrySink for BatchWriterHandle {
    fn record(&self, rec: RequestRecord) {
        self.try_record(rec);
    }
}

/// How the gateway uses a telemetry store (see [`crate::RunOptions::store`]).
#[derive(Clone)]
pub struct StoreOptions {
    /// The store to use: a URL (opened at start) or an already opened store.
    pub store: StoreTarget,
    /// Batch writer settings (buffer size, flush interval, retry backoff).
    pub batch: BatchConfig,
    /// Run retention on the in-process daily timer (`None` = never).
    pub retention: Option<RetentionPolicy>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("store", &self.store)
            .field("batch", &self.batch)
            .field("retention", &self.retention.is_some())
            .finish()
    }
}

/// Which store [`StoreOptions`] names.
#[derive(Clone)]
pub enum StoreTarget {
    /// `sqlite://path` or `postgres://…`, opened (and migrated) at start.
    Url(String),
    /// An already opened store (tests, embedding).
    Open(Arc<dyn Store>),
}

impl std::fmt::Debug for StoreTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The URL may carry a password: print only its scheme.
            StoreTarget::Url(u) => write!(f, "Url({}://…)", u.split(':').next().unwrap_or("")),
            StoreTarget::Open(s) => write!(f, "Open({:?})", s.backend()),
        }
    }
}

impl StoreOptions {
    /// A store by URL with the default batch writer and retention from the environment
    /// (`RETENTION_*`, `CAPTURE_BUDGET_MB`; see `RetentionPolicy::from_env`).
    pub fn from_url(url: impl Into<String>) -> Result<Self, StoreError> {
        Ok(Self {
            store: StoreTarget::Url(url.into()),
            batch: BatchConfig::default(),
            retention: Some(RetentionPolicy::from_env(&|k| std::env::var(k).ok())?),
        })
    }
}

/// A running store wiring: the writer, the API handlers and the retention timer.
pub struct StoreWiring {
    /// The API handlers (also the favorites source).
    pub api: Arc<StoreApi>,
    /// The batch writer; hand it to the gateway as its [`TelemetrySink`].
    pub writer: BatchWriterHandle,
    retention: Option<tokio::task::JoinHandle<()>>,
    refresher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for StoreWiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreWiring").finish_non_exhaustive()
    }
}

impl StoreWiring {
    /// Opens the store (when given a URL), starts the batch writer and the retention timer,
    /// and loads the favorites.
    pub async fn start(
        opts: StoreOptions,
        registry: Arc<dyn RegistryView + Send + Sync>,
    ) -> Result<Self, StoreError> {
        let store = match opts.store {
            StoreTarget::Url(u) => boo_telemetry_store::open(&u).await?,
            StoreTarget::Open(s) => s,
        };
        let writer = BatchWriter::spawn(store.clone(), opts.batch);
        let api = Arc::new(StoreApi::new(store.clone(), registry, writer.clone()));
        // A store that is down at start must not stop the gateway: favorites stay empty
        // until the first successful read (every GET/PATCH refreshes them).
        if let Err(e) = api.refresh_favorites().await {
            tracing::warn!(error = %e, "could not read favorites from the store");
        }
        let retention = opts
            .retention
            .map(|p| boo_telemetry_store::spawn_retention(store, p));
        // Other gateways sharing a Postgres store may change the favorites: re-read them
        // now and then (this gateway's own PATCHes refresh the cache at once).
        let refresher = {
            let api = api.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(FAVORITES_REFRESH).await;
                    if let Err(e) = api.refresh_favorites().await {
                        tracing::debug!(error = %e, "favorites refresh failed");
                    }
                }
            })
        };
        Ok(Self {
            api,
            writer,
            retention,
            refresher,
        })
    }

    /// Stops the retention timer and flushes what the writer still buffers.
    pub async fn shutdown(self) {
        if let Some(r) = self.retention {
            r.abort();
        }
        self.refresher.abort();
        self.writer.shutdown().await;
    }
}

/// The `/api/activity`, `/api/usage` and `/api/settings` handlers over one store.
pub struct StoreApi {
    store: Arc<dyn Store>,
    registry: Arc<dyn RegistryView + Send + Sync>,
    writer: BatchWriterHandle,
    favorites: Arc<RwLock<Vec<String>>>,
    settings_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for StoreApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreApi")
            .field("backend", &self.store.backend())
            .finish_non_exhaustive()
    }
}

/// A request the store API rejects or cannot serve.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    param: Option<String>,
    message: String,
}

impl ApiError {
    fn bad(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            param: Some(param.to_string()),
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid { field, problem } => {
                ApiError::bad(field, format!("{field}: {problem}"))
            }
            other => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                param: None,
                message: format!("telemetry store unavailable: {other}"),
            },
        }
    }
}

fn json<B: From<Bytes>>(status: StatusCode, v: &serde_json::Value) -> Response<B> {
    let mut r = Response::new(B::from(Bytes::from(
        serde_json::to_vec(v).unwrap_or_default(),
    )));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response<B: From<Bytes>>(e: &ApiError) -> Response<B> {
    let (kind, code) = match e.status {
        StatusCode::BAD_REQUEST => ("invalid_request_error", "invalid_parameter"),
        StatusCode::METHOD_NOT_ALLOWED => ("invalid_request_error", "method_not_allowed"),
        _ => ("server_error", "store_unavailable"),
    };
    json(
        e.status,
        &serde_json::json!({"error": {
            "message": e.message, "type": kind, "param": e.param, "code": code,
        }}),
    )
}

/// Decodes `%XX` and `+` in a query component.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Parses a query string into `(key, value)` pairs; only `allowed` keys, each at most once.
fn parse_query(
    query: Option<&str>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k)
            .ok_or_else(|| ApiError::bad("query", "malformed percent-encoding"))?;
        let v = percent_decode(v)
            .ok_or_else(|| ApiError::bad(&k, format!("{k}: malformed percent-encoding")))?;
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::bad(
                &k,
                format!(
                    "unknown parameter {k:?} (expected one of: {})",
                    allowed.join(", ")
                ),
            ));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad(&k, format!("{k}: given more than once")));
        }
    }
    Ok(out)
}

/// Parses `90s`, `15m`, `24h`, `7d` (a positive integer and a unit).
pub fn parse_since(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("expected a duration like 30m, 24h or 7d, got {s:?}"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {s:?} (use s, m, h or d)")),
    };
    if n == 0 || n > 3650 * 86_400 / secs {
        return Err(format!("{s:?} is out of range (1s to 3650d)"));
    }
    Ok(Duration::from_secs(n * secs))
}

fn nonempty(v: Option<&String>) -> Option<String> {
    v.filter(|s| !s.is_empty()).cloned()
}

impl StoreApi {
    /// Handlers over `store`; `registry` supplies the default provider for favorites.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<dyn RegistryView + Send + Sync>,
        writer: BatchWriterHandle,
    ) -> Self {
        Self {
            store,
            registry,
            writer,
            favorites: Arc::new(RwLock::new(Vec::new())),
            settings_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The store behind the API.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Whether `path` is one of this API's routes.
    pub fn serves(path: &str) -> bool {
        matches!(
            path,
            "/api/activity" | "/api/usage" | "/api/settings" | "/api/favorites"
        )
    }

    /// The favorites as last read from the store (cheap; for `/api/models`).
    pub fn favorites(&self) -> Vec<String> {
        self.favorites
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A favorites source for `RegistryRouter::with_favorites` / `RunOptions::favorites`.
    pub fn favorites_fn(&self) -> impl Fn() -> Vec<String> + Send + Sync + 'static {
        let cache = self.favorites.clone();
        move || cache.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the favorites from the store into the cache.
    pub async fn refresh_favorites(&self) -> Result<(), StoreError> {
        let favs = self.store.favorites().await?;
        *self.favorites.write().unwrap_or_else(|e| e.into_inner()) = favs;
        Ok(())
    }

    /// Prometheus text of the batch writer's counters (`boo_telemetry_*`, drops included).
    pub fn metrics(&self) -> String {
        self.writer.stats().prometheus()
    }

    /// Serves one request to a path for which [`StoreApi::serves`] is true.
    pub async fn handle<B, R>(&self, req: http::Request<B>) -> Response<R>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        R: From<Bytes>,
    {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path();
        let query = parts.uri.query();
        let result = match (&parts.method, path) {
            (&Method::GET, "/api/activity") => self.activity(query).await,
            (&Method::GET, "/api/usage") => self.usage(query).await,
            (&Method::GET, "/api/settings") => self.get_settings().await,
            (&Method::GET, "/api/favorites") => self.get_favorites().await,
            (m @ (&Method::PATCH | &Method::POST), p @ ("/api/settings" | "/api/favorites"))
                if (*m == Method::PATCH) == (p == "/api/settings") =>
            {
                let favorites = p == "/api/favorites";
                match http_body_util::BodyExt::collect(http_body_util::Limited::new(
                    body,
                    MAX_SETTINGS_BODY,
                ))
                .await
                {
                    Ok(b) if favorites => self.post_favorites(&b.to_bytes()).await,
                    Ok(b) => self.patch_settings(&b.to_bytes()).await,
                    Err(e) => Err(ApiError::bad(
                        "body",
                        format!("could not read the body (limit {MAX_SETTINGS_BODY} bytes): {e}"),
                    )),
                }
            }
            (m, p) => Err(ApiError {
                status: StatusCode::METHOD_NOT_ALLOWED,
                param: None,
                message: format!("{m} is not allowed on {p}"),
            }),
        };
        match result {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => error_response(&e),
        }
    }

    async fn activity(&self, query: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let q = parse_query(
            query,
            &[
                "provider", "model", "source", "status", "origin", "cursor", "limit",
            ],
        )?;
        let status = match nonempty(q.get("status")) {
            None => None,
            Some(s) => Some(
                s.parse::<u16>()
                    .ok()
                    .filter(|n| (100..=599).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad(
                            "status",
                            format!("status: expected an HTTP status 100-599, got {s:?}"),
                        )
                    })?,
            ),
        };
        let origin = match nonempty(q.get("origin")).as_deref() {
            None => None,
            Some("gateway") => Some(FeedOrigin::Gateway),
            Some("host") => Some(FeedOrigin::Host),
            Some(o) => {
                return Err(ApiError::bad(
                    "origin",
                    format!("origin: expected gateway or host, got {o:?}"),
                ));
            }
        };
        let limit = match nonempty(q.get("limit")) {
            None => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| {
                    ApiError::bad("limit", format!("limit: expected 1-1000, got {s:?}"))
                })?,
        };
        let cursor = nonempty(q.get("cursor"))
            .map(|c| FeedCursor::decode(&c))
            .transpose()?;
        let filter = FeedFilter {
            provider_id: nonempty(q.get("provider")),
            model: nonempty(q.get("model")),
            source: nonempty(q.get("source")),
            status,
            origin,
        };
        let page = self.store.feed(&filter, cursor.as_ref(), limit).await?;
        Ok(serde_json::json!({
            "items": page.rows,
            "next": page.next.map(|c| c.encode()),
        }))
    }

    async fn usage(&self, query: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let q = parse_query(query, &["group", "since"])?;
        let group: UsageGroup = nonempty(q.get("group"))
            .as_deref()
            .unwrap_or("source")
            .parse()?;
        let since = match nonempty(q.get("since")) {
            None => Duration::from_secs(86_400),
            Some(s) => {
                parse_since(&s).map_err(|m| ApiError::bad("since", format!("since: {m}")))?
            }
        };
        let to = chrono::Utc::now();
        let from = to
            - chrono::Duration::from_std(since)
                .map_err(|_| ApiError::bad("since", "since: out of range"))?;
        let rows = self.store.usage(group, from, to).await?;
        Ok(serde_json::json!({
            "group": group, "from": from, "to": to, "rows": rows,
        }))
    }

    async fn get_settings(&self) -> Result<serde_json::Value, ApiError> {
        let settings = self.store.settings().await?;
        let favs = settings
            .get(FAVORITES_KEY)
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .unwrap_or_default();
        *self.favorites.write().unwrap_or_else(|e| e.into_inner()) = favs;
        Ok(serde_json::to_value(settings).unwrap_or_default())
    }

    async fn get_favorites(&self) -> Result<serde_json::Value, ApiError> {
        self.refresh_favorites().await?;
        Ok(serde_json::json!({ "favorites": self.favorites() }))
    }

    /// `POST /api/favorites {"add":[..],"remove":[..]}`: the favorites part of a settings PATCH.
    async fn post_favorites(&self, body: &[u8]) -> Result<serde_json::Value, ApiError> {
        let ops: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad("body", format!("body: expected a JSON object: {e}")))?;
        if !ops.is_object() {
            return Err(ApiError::bad(
                "body",
                "body: expected {\"add\":[..],\"remove\":[..]}",
            ));
        }
        let patch = serde_json::json!({ FAVORITES_KEY: ops });
        self.patch_settings(patch.to_string().as_bytes()).await?;
        Ok(serde_json::json!({ "favorites": self.favorites() }))
    }

    /// Normalizes a favorites list; any rejected entry fails the whole PATCH.
    fn normalize(&self, raw: &[String]) -> Result<Vec<String>, ApiError> {
        let (kept, rejected) = normalize_favorites(raw, self.registry.as_ref());
        if let Some(r) = rejected.first() {
            return Err(ApiError::bad(
                FAVORITES_KEY,
                format!("{FAVORITES_KEY}: {:?} rejected: {}", r.input, r.reason),
            ));
        }
        Ok(kept.iter().map(ToString::to_string).collect())
    }

    async fn patch_settings(&self, body: &[u8]) -> Result<serde_json::Value, ApiError> {
        let patch: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad("body", format!("body: expected a JSON object: {e}")))?;
        for k in patch.keys() {
            if k.is_empty() || k.len() > 128 {
                return Err(ApiError::bad(
                    "body",
                    "body: setting keys must be 1-128 characters",
                ));
            }
        }
        let _guard = self.settings_lock.lock().await;
        let mut out: BTreeMap<String, serde_json::Value> = patch.into_iter().collect();
        if let Some(v) = out.remove(FAVORITES_KEY) {
            let new = match v {
                serde_json::Value::Null => serde_json::Value::Null,
                serde_json::Value::Array(_) => {
                    let raw: Vec<String> = serde_json::from_value(v).map_err(|_| {
                        ApiError::bad(
                            FAVORITES_KEY,
                            format!("{FAVORITES_KEY}: expected an array of strings"),
                        )
                    })?;
                    serde_json::json!(self.normalize(&raw)?)
                }
                serde_json::Value::Object(ops) => {
                    let list = |name: &str| -> Result<Vec<String>, ApiError> {
                        match ops.get(name) {
                            None => Ok(Vec::new()),
                            Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                                ApiError::bad(
                                    FAVORITES_KEY,
                                    format!("{FAVORITES_KEY}.{name}: expected an array of strings"),
                                )
                            }),
                        }
                    };
                    if let Some(k) = ops.keys().find(|k| *k != "add" && *k != "remove") {
                        return Err(ApiError::bad(
                            FAVORITES_KEY,
                            format!(
                                "{FAVORITES_KEY}: unknown operation {k:?} (expected add, remove)"
                            ),
                        ));
                    }
                    let add = self.normalize(&list("add")?)?;
                    let remove_raw = list("remove")?;
                    // Removal matches the stored form and the normalized form of each entry.
                    let (remove_norm, _) = normalize_favorites(&remove_raw, self.registry.as_ref());
                    let mut remove: Vec<String> =
                        remove_raw.iter().map(|s| s.trim().to_string()).collect();
                    remove.extend(remove_norm.iter().map(ToString::to_string));
                    let mut favs = self.store.favorites().await?;
                    favs.retain(|f| !remove.contains(f));
                    for a in add {
                        if !favs.contains(&a) {
                            favs.push(a);
                        }
                    }
                    serde_json::json!(favs)
                }
                _ => {
                    return Err(ApiError::bad(
                        FAVORITES_KEY,
                        format!(
                            "{FAVORITES_KEY}: expected an array, null, or {{\"add\":[..],\"remove\":[..]}}"
                        ),
                    ));
                }
            };
            out.insert(FAVORITES_KEY.to_string(), new);
        }
        self.store.patch_settings(&out).await?;
        drop(_guard);
        self.get_settings().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_parses_units_and_names_problems() {
        assert_eq!(parse_since("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_since("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_since("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert!(parse_since("0h").unwrap_err().contains("out of range"));
        assert!(parse_since("5y").unwrap_err().contains("unit"));
        assert!(parse_since("h").unwrap_err().contains("duration"));
    }

    #[test]
    fn query_decodes_and_rejects_unknown_or_repeated_keys() {
        let q = parse_query(Some("model=sam%2Fqwen+3&limit=5"), &["model", "limit"]).unwrap();
        assert_eq!(q["model"], "sam/qwen 3");
        assert_eq!(q["limit"], "5");
        let e = parse_query(Some("colour=red"), &["model"]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("colour"));
        let e = parse_query(Some("model=a&model=b"), &["model"]).unwrap_err();
        assert!(e.message.contains("more than once"));
        assert!(parse_query(Some("model=%zz"), &["model"]).is_err());
    }
}
