//! llama-swap activity rows, captures and performance samples.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::host::Version;

/// One completed metered request.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub id: u64,
    pub ts: SystemTime,
    pub model: String,
    pub req_path: String,
    pub resp_content_type: String,
    pub status: u16,
    pub cache_tokens: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub prompt_per_second: f64,
    pub tokens_per_second: f64,
    pub duration_ms: u64,
    pub error_msg: Option<String>,
}

pub(crate) fn rfc3339(ts: SystemTime, secs_only: bool) -> String {
    let dt: DateTime<Utc> = ts.into();
    dt.to_rfc3339_opts(
        if secs_only {
            SecondsFormat::Secs
        } else {
            SecondsFormat::Nanos
        },
        true,
    )
}

impl Row {
    pub(crate) fn to_json(&self, ver: Version, has_capture: bool) -> Value {
        let ts = rfc3339(self.ts, ver.activity_api());
        if !ver.nested_tokens() {
            return json!({
                "id": self.id, "timestamp": ts, "model": self.model,
                "cache_tokens": self.cache_tokens, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "prompt_per_second": self.prompt_per_second, "tokens_per_second": self.tokens_per_second,
                "duration_ms": self.duration_ms, "has_capture": has_capture,
            });
        }
        let mut tokens = json!({
            "cache_tokens": self.cache_tokens, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "prompt_per_second": self.prompt_per_second, "tokens_per_second": self.tokens_per_second,
        });
        if ver.draft_fields() {
            tokens["draft_tokens"] = json!(-1);
            tokens["draft_acc_tokens"] = json!(-1);
        }
        let mut v = json!({
            "id": self.id, "timestamp": ts, "model": self.model, "req_path": self.req_path,
            "resp_content_type": self.resp_content_type, "resp_status_code": self.status,
            "tokens": tokens, "duration_ms": self.duration_ms, "has_capture": has_capture,
        });
        if ver.draft_fields()
            && let Some(e) = &self.error_msg
        {
            v["error_msg"] = json!(e);
        }
        v
    }
}

/// One captured exchange.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    pub req_path: String,
    pub req_headers: Vec<(String, String)>,
    pub req_body: Bytes,
    pub resp_headers: Vec<(String, String)>,
    pub resp_body: Option<Bytes>,
}

impl Capture {
    fn size(&self) -> usize {
        self.req_body.len() + self.resp_body.as_ref().map_or(0, Bytes::len) + 256
    }

    pub(crate) fn to_json(&self, id: u64) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD;
        let hdrs = |h: &[(String, String)]| {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                m.insert(k.clone(), json!(v));
            }
            Value::Object(m)
        };
        json!({
            "id": id, "req_path": self.req_path, "req_headers": hdrs(&self.req_headers),
            "req_body": b64.encode(&self.req_body), "resp_headers": hdrs(&self.resp_headers),
            "resp_body": self.resp_body.as_ref().map(|b| b64.encode(b)),
        })
    }
}

/// The activity ring (legacy) or table (current), and the capture cache.
#[derive(Debug)]
pub(crate) struct Activity {
    pub next_id: u64,
    pub rows: VecDeque<Row>,
    pub cap: usize,
    captures: HashMap<u64, Capture>,
    capture_order: VecDeque<u64>,
    capture_bytes: usize,
    capture_cap: usize,
}

impl Activity {
    pub(crate) fn new(ver: Version, cap: usize, capture_mb: usize) -> Activity {
        Activity {
            next_id: if ver.activity_api() { 1 } else { 0 },
            rows: VecDeque::new(),
            cap: cap.max(1),
            captures: HashMap::new(),
            capture_order: VecDeque::new(),
            capture_bytes: 0,
            capture_cap: capture_mb * 1024 * 1024,
        }
    }

    pub(crate) fn captures_enabled(&self) -> bool {
        self.capture_cap > 0
    }

    pub(crate) fn push(&mut self, mut row: Row, capture: Option<Capture>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        row.id = id;
        if self.rows.len() >= self.cap {
            self.rows.pop_front();
        }
        self.rows.push_back(row);
        if let Some(c) = capture
            && self.capture_cap > 0
            && c.size() <= self.capture_cap
        {
            self.capture_bytes += c.size();
            self.captures.insert(id, c);
            self.capture_order.push_back(id);
            while self.capture_bytes > self.capture_cap {
                let Some(old) = self.capture_order.pop_front() else {
                    break;
                };
                if let Some(c) = self.captures.remove(&old) {
                    self.capture_bytes -= c.size();
                }
            }
        }
        id
    }

    pub(crate) fn has_capture(&self, id: u64) -> bool {
        self.captures.contains_key(&id)
    }

    pub(crate) fn capture(&self, id: u64) -> Option<&Capture> {
        self.captures.get(&id)
    }

    pub(crate) fn row_json(&self, row: &Row, ver: Version) -> Value {
        row.to_json(ver, self.has_capture(row.id))
    }

    /// `GET /api/metrics/activity` (v236+). Errors are 400 messages.
    pub(crate) fn query(&self, ver: Version, query: Option<&str>) -> Result<Value, String> {
        let mut models: Vec<String> = Vec::new();
        let (mut start, mut end) = (None::<SystemTime>, None::<SystemTime>);
        let (mut min_id, mut max_id) = (None::<u64>, None::<u64>);
        let (mut limit, mut page) = (25usize, 1usize);
        let mut asc = false;
        let mut sort = "id".to_owned();
        for (k, v) in parse_query(query) {
            match k.as_str() {
                "model" => models.push(v),
                "start" | "end" => {
                    let t = DateTime::parse_from_rfc3339(&v)
                        .map_err(|_| format!("invalid {k}: {v}"))?;
                    let t = SystemTime::from(t.with_timezone(&Utc));
                    if k == "start" {
                        start = Some(t)
                    } else {
                        end = Some(t)
                    }
                }
                "min_id" | "max_id" => {
                    let n: u64 = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("invalid {k}: {v}"))?;
                    if k == "min_id" {
                        min_id = Some(n)
                    } else {
                        max_id = Some(n)
                    }
                }
                "limit" => {
                    limit = v
                        .parse()
                        .ok()
                        .filter(|n| (1..=999).contains(n))
                        .ok_or_else(|| format!("invalid limit: {v}"))?;
                }
                "page" => {
                    page = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("invalid page: {v}"))?
                }
                "order" => {
                    asc = match v.as_str() {
                        "asc" => true,
                        "desc" => false,
                        _ => return Err(format!("invalid order: {v}")),
                    }
                }
                "sort" => {
                    const KEYS: [&str; 13] = [
                        "id",
                        "time",
                        "model",
                        "req_path",
                        "resp_status_code",
                        "resp_content_type",
                        "cached",
                        "prompt",
                        "generated",
                        "drafted",
                        "prompt_speed",
                        "gen_speed",
                        "duration",
                    ];
                    if !KEYS.contains(&v.as_str()) {
                        return Err(format!("invalid sort: {v}"));
                    }
                    sort = v;
                }
                _ => {}
            }
        }
        let mut rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| models.is_empty() || models.contains(&r.model))
            .filter(|r| min_id.is_none_or(|m| r.id >= m) && max_id.is_none_or(|m| r.id <= m))
            .filter(|r| {
                let secs = |t: SystemTime| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                };
                start.is_none_or(|s| secs(r.ts) >= secs(s))
                    && end.is_none_or(|e| secs(r.ts) <= secs(e))
            })
            .collect();
        let key = |r: &Row| -> f64 {
            match sort.as_str() {
                "cached" => r.cache_tokens as f64,
                "prompt" => r.input_tokens as f64,
                "generated" => r.output_tokens as f64,
                "prompt_speed" => r.prompt_per_second,
                "gen_speed" => r.tokens_per_second,
                "duration" => r.duration_ms as f64,
                "resp_status_code" => f64::from(r.status),
                _ => r.id as f64,
            }
        };
        match sort.as_str() {
            "model" => rows.sort_by(|a, b| a.model.cmp(&b.model).then(a.id.cmp(&b.id))),
            "req_path" => rows.sort_by(|a, b| a.req_path.cmp(&b.req_path).then(a.id.cmp(&b.id))),
            "resp_content_type" => rows.sort_by(|a, b| {
                a.resp_content_type
                    .cmp(&b.resp_content_type)
                    .then(a.id.cmp(&b.id))
            }),
            _ => rows.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.id.cmp(&b.id))),
        }
        if !asc {
            rows.reverse();
        }
        let total = rows.len();
        let data: Vec<Value> = rows
            .iter()
            .skip((page - 1) * limit)
            .take(limit)
            .map(|r| self.row_json(r, ver))
            .collect();
        Ok(
            json!({"data": data, "page": page, "limit": limit, "total": total, "total_pages": total.div_ceil(limit)}),
        )
    }

    /// `GET /api/metrics/stats` (v236+).
    pub(crate) fn stats(&self, query: Option<&str>) -> Value {
        let models: Vec<String> = parse_query(query)
            .into_iter()
            .filter(|(k, _)| k == "model")
            .map(|(_, v)| v)
            .collect();
        let rows: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| models.is_empty() || models.contains(&r.model))
            .collect();
        let sum = |f: fn(&Row) -> i64| rows.iter().map(|r| f(r).max(0)).sum::<i64>();
        let hist = |f: fn(&Row) -> f64| {
            histogram(rows.iter().map(|r| f(r)).filter(|v| *v > 0.0).collect())
        };
        json!({
            "total_requests": rows.len(),
            "total_input_tokens": sum(|r| r.input_tokens),
            "total_output_tokens": sum(|r| r.output_tokens),
            "total_cache_tokens": sum(|r| r.cache_tokens),
            "prompt_histogram": hist(|r| r.prompt_per_second),
            "gen_histogram": hist(|r| r.tokens_per_second),
        })
    }
}

fn histogram(mut v: Vec<f64>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    v.sort_by(f64::total_cmp);
    let (min, max) = (v[0], v[v.len() - 1]);
    const BINS: usize = 30;
    let size = ((max - min) / BINS as f64).max(f64::MIN_POSITIVE);
    let mut bins = vec![0u64; BINS];
    for x in &v {
        let i = (((x - min) / size) as usize).min(BINS - 1);
        bins[i] += 1;
    }
    let pct = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
    json!({"bins": bins, "min": min, "max": max, "binSize": size, "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99)})
}

/// Minimal query-string parser with percent-decoding.
pub(crate) fn parse_query(q: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = q else { return Vec::new() };
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Synthetic `/api/performance` samples: one every `every` since `start`, at most 720.
pub(crate) fn performance(
    start: SystemTime,
    now: SystemTime,
    every: Duration,
    gpu: Option<&crate::spec::GpuSpec>,
    busy: f64,
    after: Option<SystemTime>,
) -> Value {
    let every = every.max(Duration::from_millis(1));
    let elapsed = now.duration_since(start).unwrap_or_default();
    let n = (elapsed.as_nanos() / every.as_nanos()) as u64 + 1;
    let first = n.saturating_sub(720);
    let mut sys = Vec::new();
    let mut gpus = Vec::new();
    for k in first..n {
        let ts = start + every * u32::try_from(k).unwrap_or(u32::MAX);
        if after.is_some_and(|a| ts <= a) {
            continue;
        }
        let t = rfc3339(ts, false);
        let wobble = ((k * 37) % 11) as f64;
        sys.push(json!({
            "timestamp": t, "cpu_util_per_core": [5.0 + wobble, 3.0 + wobble / 2.0],
            "mem_total_mb": 65536, "mem_used_mb": 20000 + k % 100, "mem_free_mb": 45536 - k % 100,
            "swap_total_mb": 0, "swap_used_mb": 0, "load_avg_1": 0.5, "load_avg_5": 0.4, "load_avg_15": 0.3,
            "net_io": [{"name": "eth0", "bytes_recv": 1000 * k, "bytes_sent": 800 * k}],
        }));
        if let Some(g) = gpu {
            gpus.push(json!({
                "timestamp": t, "id": 0, "name": g.name, "uuid": "GPU-fleetsim-0", "temp_c": 40.0 + busy * 30.0,
                "vram_temp_c": 0, "gpu_util_pct": (busy * 95.0).round(), "mem_util_pct": (busy * 40.0).round(),
                "mem_used_mb": (g.mem_total_mb as f64 * (0.05 + busy * 0.8)).round(), "mem_total_mb": g.mem_total_mb,
                "fan_speed_pct": 30, "power_draw_w": 30.0 + busy * 300.0,
            }));
        }
    }
    let gpu_stats = if gpus.is_empty() && after.is_none() {
        Value::Null
    } else {
        Value::Array(gpus)
    };
    json!({"enabled": true, "sys_stats": sys, "gpu_stats": gpu_stats})
}
