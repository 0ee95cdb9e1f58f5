//! A running emulated host: listener, connections, model processes, swap logic and lifecycle.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Notify, Semaphore, watch};

use crate::activity::Activity;
use crate::error::SimError;
use crate::events::{self, Hub};
use crate::faults::{FaultState, Faults};
use crate::spec::{HostSpec, Mode, ModelSpec};
use crate::stats::{Stats, StatsInner};

/// Parses a llama-swap tag (`v235`, `235`) or `head`.
pub(crate) fn parse_version(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("head") {
        return Some(Version::HEAD);
    }
    s.strip_prefix('v')
        .unwrap_or(s)
        .parse()
        .ok()
        .filter(|n| *n > 0 && *n < Version::HEAD)
}

/// The emulated llama-swap version and the features it implies (reference §0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Version(pub u32);

impl Version {
    pub(crate) const HEAD: u32 = 100_000;
    pub(crate) fn tag(self) -> String {
        if self.0 >= Self::HEAD {
            "head".into()
        } else {
            format!("v{}", self.0)
        }
    }
    pub(crate) fn gin(self) -> bool {
        self.0 <= 223
    }
    pub(crate) fn head(self) -> bool {
        self.0 >= Self::HEAD
    }
    pub(crate) fn activity_api(self) -> bool {
        self.0 >= 236
    }
    pub(crate) fn nested_tokens(self) -> bool {
        self.0 >= 209
    }
    pub(crate) fn draft_fields(self) -> bool {
        self.0 >= 229
    }
    pub(crate) fn status_value(self) -> bool {
        self.0 >= 236
    }
    pub(crate) fn type_meta(self) -> bool {
        self.0 >= 241
    }
    pub(crate) fn n_ctx_meta(self) -> bool {
        self.0 >= 250
    }
    pub(crate) fn ui_config(self) -> bool {
        self.0 >= 240
    }
    pub(crate) fn profile_changed(self) -> bool {
        self.0 >= 245
    }
    pub(crate) fn performance(self) -> bool {
        self.0 >= 212
    }
    pub(crate) fn captures(self) -> bool {
        self.0 >= 190
    }
    pub(crate) fn inflight(self) -> InflightStyle {
        match self.0 {
            0..=191 => InflightStyle::None,
            192..=234 => InflightStyle::Total,
            235..=239 => InflightStyle::Requests,
            _ => InflightStyle::Ops,
        }
    }
    pub(crate) fn event_buffer(self) -> usize {
        if self.activity_api() { 1024 } else { 25 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflightStyle {
    None,
    Total,
    Requests,
    Ops,
}

/// Process state of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum PState {
    Stopped = 0,
    Starting = 1,
    Ready = 2,
    Stopping = 3,
}

impl PState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PState::Stopped => "stopped",
            PState::Starting => "starting",
            PState::Ready => "ready",
            PState::Stopping => "stopping",
        }
    }
    fn from_u8(v: u8) -> PState {
        match v {
            1 => PState::Starting,
            2 => PState::Ready,
            3 => PState::Stopping,
            _ => PState::Stopped,
        }
    }
}

/// Per-model llama-server counters (for `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub prompt_tokens: AtomicU64,
    pub prompt_us: AtomicU64,
    pub predicted: AtomicU64,
    pub predicted_us: AtomicU64,
    pub decodes: AtomicU64,
    pub processing: AtomicU32,
    pub deferred: AtomicU32,
}

/// One model's runtime (a llama-server process behind llama-swap).
#[derive(Debug)]
pub(crate) struct ModelRt {
    pub spec: ModelSpec,
    pub idx: usize,
    state: AtomicU8,
    pub admitted: AtomicU32,
    pub active: AtomicU32,
    pub drained: Notify,
    pub slots: Arc<Semaphore>,
    pub last_use_ms: AtomicU64,
    /// Bumped when the process is killed; in-flight work watches it.
    pub kill: watch::Sender<u64>,
    pub counters: Counters,
    /// Message hashes of the last prompt (the prompt-cache model).
    pub cache: Mutex<Vec<(u64, u32)>>,
    pub group: usize,
}

impl ModelRt {
    pub(crate) fn state(&self) -> PState {
        PState::from_u8(self.state.load(Ordering::Acquire))
    }
}

#[derive(Debug)]
pub(crate) struct Group {
    pub swap: bool,
    pub exclusive: bool,
    pub persistent: bool,
    pub members: Vec<usize>,
}

/// An in-flight request (for `inflight` events).
#[derive(Debug, Clone)]
pub(crate) struct InflightEntry {
    pub id: u64,
    pub ts: SystemTime,
    pub started: Instant,
    pub model: String,
    pub req_path: String,
    pub method: String,
    pub req_headers: Vec<(String, String)>,
    pub remote_ip: String,
    pub resp_headers: Vec<(String, String)>,
    pub resp_bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Logs {
    pub proxy: String,
    pub upstream: String,
}

const LOG_CAP: usize = 100 * 1024;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch {
    pub start: Instant,
    pub wall: SystemTime,
}

/// Shared state of one host.
pub(crate) struct HostInner {
    pub id: String,
    pub spec: HostSpec,
    pub mode: Mode,
    pub ver: Version,
    pub scale: f64,
    pub addr: SocketAddr,
    pub faults: FaultState,
    pub stats: Arc<StatsInner>,
    pub models: Vec<ModelRt>,
    pub names: HashMap<String, usize>,
    pub groups: Vec<Group>,
    pub swap_lock: tokio::sync::Mutex<()>,
    pub hub: Hub,
    pub activity: Mutex<Activity>,
    pub logs: Mutex<Logs>,
    pub inflight: Mutex<BTreeMap<u64, InflightEntry>>,
    pub inflight_seq: AtomicU64,
    pub epoch: Mutex<Epoch>,
    pub base: Instant,
    pub conn_kill: watch::Sender<u64>,
    pub down: watch::Sender<bool>,
    pub listening: watch::Sender<bool>,
    pub shutdown: AtomicBool,
    pub id_seq: AtomicU64,
    pub created_unix: u64,
}

impl HostInner {
    /// Scales an emulated duration in milliseconds to real time.
    pub(crate) fn scaled_ms(&self, ms: f64) -> Duration {
        if ms <= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(ms * self.scale / 1000.0)
        }
    }

    /// How long to pace work that a model does at `tps` tokens/s: nothing when the speed is
    /// unlimited (`tps <= 0`), so "unlimited" hosts answer without a timer round trip (tokio
    /// rounds every sleep up to its 1 ms wheel), else [`Self::scaled_ms`].
    pub(crate) fn pace_ms(&self, ms: f64, tps: f64) -> Duration {
        if tps > 0.0 {
            self.scaled_ms(ms)
        } else {
            Duration::ZERO
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn epoch(&self) -> Epoch {
        self.epoch.lock().map(|e| *e).unwrap_or(Epoch {
            start: self.base,
            wall: SystemTime::now(),
        })
    }

    pub(crate) fn resolve(&self, name: &str) -> Option<usize> {
        self.names.get(name).copied()
    }

    /// Effective TTL in seconds (0 = never).
    pub(crate) fn ttl_secs(&self, m: &ModelRt) -> u64 {
        if m.spec.ttl < 0 {
            self.spec.global_ttl
        } else {
            m.spec.ttl as u64
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.id_seq.fetch_add(1, Ordering::Relaxed)
    }

    // ---- logs and events ----

    pub(crate) fn log(&self, upstream: bool, line: &str) {
        let mut chunk = String::with_capacity(line.len() + 1);
        chunk.push_str(line);
        chunk.push('\n');
        if let Ok(mut l) = self.logs.lock() {
            let buf = if upstream {
                &mut l.upstream
            } else {
                &mut l.proxy
            };
            buf.push_str(&chunk);
            // Trim in batches (amortised): history holds between LOG_CAP and 2 x LOG_CAP bytes.
            if buf.len() > 2 * LOG_CAP {
                let mut cut = buf.len() - LOG_CAP;
                while !buf.is_char_boundary(cut) {
                    cut += 1;
                }
                buf.drain(..cut);
            }
        }
        if self.mode == Mode::LlamaSwap && self.hub.has_subscribers() {
            let src = if upstream { "upstream" } else { "proxy" };
            self.publish(events::frame_value(
                "logData",
                &serde_json::json!({"source": src, "data": chunk}),
            ));
        }
    }

    /// Publishes an event; after an overflow, v240+ sends the recovered subscriber an inflight
    /// snapshot (as llama-swap does).
    pub(crate) fn publish(&self, msg: bytes::Bytes) {
        self.hub.publish(msg);
        if self.ver.inflight() == InflightStyle::Ops
            && self
                .hub
                .overflow_pending
                .load(std::sync::atomic::Ordering::Relaxed)
            && self.hub.wants_resync()
            && let Some(snap) = self.inflight_snapshot()
        {
            self.hub.resync(snap);
        }
    }

    pub(crate) fn model_status_json(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .models
            .iter()
            .map(|m| {
                let mut v = serde_json::json!({
                    "id": m.spec.id,
                    "name": m.spec.name.clone().unwrap_or_default(),
                    "description": m.spec.description.clone().unwrap_or_default(),
                    "state": m.state().as_str(),
                    "unlisted": m.spec.unlisted,
                    "peerID": "",
                });
                if !m.spec.aliases.is_empty() {
                    v["aliases"] = serde_json::json!(m.spec.aliases);
                }
                if m.spec.capabilities && self.ver.activity_api() {
                    v["context_length"] = serde_json::json!(m.spec.n_ctx);
                }
                v
            })
            .collect();
        serde_json::Value::Array(list)
    }

    fn set_state(&self, m: usize, s: PState) {
        let rt = &self.models[m];
        let old = rt.state();
        rt.state.store(s as u8, Ordering::Release);
        if old != s {
            self.log(
                false,
                &format!(
                    "[INFO] <{}> state changed: {} -> {}",
                    rt.spec.id,
                    old.as_str(),
                    s.as_str()
                ),
            );
            if self.mode == Mode::LlamaSwap && self.hub.has_subscribers() {
                self.publish(events::frame_value(
                    "modelStatus",
                    &self.model_status_json(),
                ));
            }
        }
    }

    // ---- inflight ----

    pub(crate) fn inflight_entry_json(&self, e: &InflightEntry) -> serde_json::Value {
        let redact = |h: &[(String, String)]| {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let secret = [
                    "authorization",
                    "proxy-authorization",
                    "cookie",
                    "set-cookie",
                    "x-api-key",
                ]
                .iter()
                .any(|s| k.eq_ignore_ascii_case(s));
                m.insert(
                    k.clone(),
                    serde_json::json!(if secret { "[REDACTED]" } else { v.as_str() }),
                );
            }
            serde_json::Value::Object(m)
        };
        match self.ver.inflight() {
            InflightStyle::Ops => serde_json::json!({
                "id": e.id.to_string(), "timestamp": crate::activity::rfc3339(e.ts, false), "model": e.model,
                "req_path": e.req_path, "method": e.method, "req_headers": redact(&e.req_headers),
                "remote_ip": e.remote_ip, "resp_headers": redact(&e.resp_headers), "resp_bytes": e.resp_bytes,
                "elapsed_ms": e.started.elapsed().as_millis() as u64,
            }),
            _ => serde_json::json!({
                "id": e.id.to_string(), "timestamp": crate::activity::rfc3339(e.ts, false), "model": e.model,
                "req_path": e.req_path, "method": e.method,
            }),
        }
    }

    pub(crate) fn inflight_snapshot(&self) -> Option<bytes::Bytes> {
        let map = self.inflight.lock().ok()?;
        let v = match self.ver.inflight() {
            InflightStyle::None => return None,
            InflightStyle::Total => serde_json::json!({"total": map.len()}),
            InflightStyle::Requests => {
                serde_json::json!({"requests": map.values().map(|e| self.inflight_entry_json(e)).collect::<Vec<_>>()})
            }
            InflightStyle::Ops => serde_json::json!({"operation": "snapshot",
                "requests": map.values().map(|e| self.inflight_entry_json(e)).collect::<Vec<_>>()}),
        };
        Some(events::frame_value("inflight", &v))
    }

    /// Publishes the change of one inflight entry in the host's style.
    pub(crate) fn inflight_changed(&self, id: u64, removed: bool) {
        if !self.hub.has_subscribers() {
            return;
        }
        let msg = match self.ver.inflight() {
            InflightStyle::None => return,
            InflightStyle::Ops => {
                if removed {
                    events::frame_value(
                        "inflight",
                        &serde_json::json!({"operation": "remove", "id": id.to_string()}),
                    )
                } else {
                    let Some(v) = self
                        .inflight
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&id).map(|e| self.inflight_entry_json(e)))
                    else {
                        return;
                    };
                    events::frame_value(
                        "inflight",
                        &serde_json::json!({"operation": "upsert", "request": v}),
                    )
                }
            }
            _ => match self.inflight_snapshot() {
                Some(m) => m,
                None => return,
            },
        };
        self.publish(msg);
    }

    // ---- model lifecycle ----

    /// Makes model `m` ready, swapping out others as its group rules say.
    pub(crate) async fn ensure_ready(self: &Arc<Self>, m: usize) -> Result<(), String> {
        if self.models[m].state() == PState::Ready {
            return Ok(());
        }
        let _g = self.swap_lock.lock().await;
        if self.models[m].state() == PState::Ready {
            return Ok(());
        }
        let my_group = self.models[m].group;
        let mut to_stop = Vec::new();
        for (i, other) in self.models.iter().enumerate() {
            if i == m || other.state() == PState::Stopped {
                continue;
            }
            let og = &self.groups[other.group];
            let same = other.group == my_group;
            let stop = if same {
                self.groups[my_group].swap
            } else {
                self.groups[my_group].exclusive && !og.persistent
            };
            if stop {
                to_stop.push(i);
            }
        }
        for i in to_stop {
            self.stop_model(i, true).await;
        }
        let rt = &self.models[m];
        let kill_gen = *rt.kill.borrow();
        self.set_state(m, PState::Starting);
        self.log(
            true,
            &format!(
                "srv    load_model: loading model '/models/{}.gguf'",
                rt.spec.id
            ),
        );
        let fails = self.faults.load_fails(&rt.spec.id);
        let wait = if fails {
            self.scaled_ms(rt.spec.load_ms as f64 / 4.0)
        } else {
            self.scaled_ms(rt.spec.load_ms as f64)
        };
        let mut kill_rx = rt.kill.subscribe();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = kill_rx.wait_for(|g| *g != kill_gen) => {}
        }
        if fails || *rt.kill.borrow() != kill_gen {
            self.set_state(m, PState::Stopped);
            self.log(true, "srv    load_model: failed to load model");
            return Err("upstream command exited prematurely".into());
        }
        rt.last_use_ms.store(self.now_ms(), Ordering::Relaxed);
        self.log(
            true,
            "main: server is listening on http://127.0.0.1 - starting the main loop",
        );
        self.set_state(m, PState::Ready);
        Ok(())
    }

    /// Stops a model. `graceful` waits for in-flight requests (a swap); otherwise they are killed.
    pub(crate) async fn stop_model(&self, m: usize, graceful: bool) {
        let rt = &self.models[m];
        if rt.state() == PState::Stopped {
            return;
        }
        self.set_state(m, PState::Stopping);
        if graceful {
            loop {
                let notified = rt.drained.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if rt.active.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        } else {
            rt.kill.send_modify(|g| *g += 1);
        }
        if let Ok(mut c) = rt.cache.lock() {
            c.clear();
        }
        self.set_state(m, PState::Stopped);
    }

    /// The unload APIs: stop now, killing in-flight requests.
    pub(crate) fn kill_model(&self, m: usize) {
        let rt = &self.models[m];
        let st = rt.state();
        rt.kill.send_modify(|g| *g += 1);
        if st == PState::Stopped {
            return;
        }
        self.set_state(m, PState::Stopping);
        if let Ok(mut c) = rt.cache.lock() {
            c.clear();
        }
        self.set_state(m, PState::Stopped);
    }

    /// llama-server mode: (re)load the single model in the background.
    fn start_server_load(self: &Arc<Self>) {
        let rt = &self.models[0];
        let kill_gen = *rt.kill.borrow();
        self.set_state(0, PState::Starting);
        let wait = self.scaled_ms(rt.spec.load_ms as f64);
        let host = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let rt = &host.models[0];
            if *rt.kill.borrow() == kill_gen && !host.faults.load_fails(&rt.spec.id) {
                host.set_state(0, PState::Ready);
                host.log(true, "main: server is listening - starting the main loop");
            }
        });
    }

    /// A restart: the process comes back with fresh in-memory state.
    pub(crate) fn reset_state(self: &Arc<Self>) {
        self.hub.close_all();
        for m in 0..self.models.len() {
            self.kill_model(m);
        }
        if let Ok(mut a) = self.activity.lock() {
            *a = Activity::new(
                self.ver,
                self.spec.metrics_max_in_memory,
                self.spec.capture_buffer_mb,
            );
        }
        if let Ok(mut l) = self.logs.lock() {
            l.proxy.clear();
            l.upstream.clear();
        }
        if let Ok(mut i) = self.inflight.lock() {
            i.clear();
        }
        self.inflight_seq.store(1, Ordering::Relaxed);
        if let Ok(mut e) = self.epoch.lock() {
            *e = Epoch {
                start: Instant::now(),
                wall: SystemTime::now(),
            };
        }
        self.log(false, "[INFO] llama-swap listening");
        if self.mode == Mode::LlamaServer {
            self.start_server_load();
        }
    }

    /// Drops the listener and every connection; returns once the port refuses connections.
    pub(crate) async fn go_down(&self) {
        self.down.send_replace(true);
        self.conn_kill.send_modify(|g| *g += 1);
        let mut rx = self.listening.subscribe();
        let _ = rx.wait_for(|l| !*l).await;
    }

    /// Binds the port again; returns once it accepts connections.
    pub(crate) async fn come_up(&self) {
        self.down.send_replace(false);
        let mut rx = self.listening.subscribe();
        let _ = rx.wait_for(|l| *l).await;
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

async fn accept_loop(host: Arc<HostInner>, first: TcpListener) {
    let mut listener = Some(first);
    let mut down_rx = host.down.subscribe();
    loop {
        if host.shutdown.load(Ordering::Relaxed) {
            return;
        }
        if *down_rx.borrow_and_update() {
            listener = None;
            host.listening.send_replace(false);
            if down_rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => {
                // Rebind the same port after a "host down" fault.
                let mut tries = 0;
                loop {
                    match bind(host.addr) {
                        Ok(l) => break l,
                        Err(_) if tries < 200 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        Err(_) => return,
                    }
                }
            }
        };
        host.listening.send_replace(true);
        tokio::select! {
            res = l.accept() => {
                if let Ok((stream, remote)) = res {
                    let _ = stream.set_nodelay(true);
                    spawn_conn(Arc::clone(&host), stream, remote);
                }
                listener = Some(l);
            }
            ch = down_rx.changed() => {
                if ch.is_err() { return; }
                listener = Some(l);
            }
        }
    }
}

fn spawn_conn(host: Arc<HostInner>, stream: tokio::net::TcpStream, remote: SocketAddr) {
    let mut kill = host.conn_kill.subscribe();
    tokio::spawn(async move {
        let h = Arc::clone(&host);
        let svc = service_fn(move |req| {
            let h = Arc::clone(&h);
            async move { Ok::<_, std::convert::Infallible>(crate::router::handle(h, req, remote).await) }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), svc);
        tokio::select! {
            _ = conn => {}
            _ = kill.changed() => {}
        }
    });
}

async fn ttl_loop(host: std::sync::Weak<HostInner>, scale: f64) {
    let tick = Duration::from_secs_f64((1.0 * scale).max(0.005));
    loop {
        tokio::time::sleep(tick).await;
        let Some(h) = host.upgrade() else { return };
        if h.shutdown.load(Ordering::Relaxed) {
            return;
        }
        for (i, m) in h.models.iter().enumerate() {
            let ttl = h.ttl_secs(m);
            if ttl == 0 || m.state() != PState::Ready || m.active.load(Ordering::Acquire) > 0 {
                continue;
            }
            let idle = h
                .now_ms()
                .saturating_sub(m.last_use_ms.load(Ordering::Relaxed));
            if Duration::from_millis(idle) >= h.scaled_ms(ttl as f64 * 1000.0)
                && let Ok(_g) = h.swap_lock.try_lock()
            {
                h.log(
                    false,
                    &format!(
                        "[INFO] <{}> Unloading model, TTL of {ttl}s reached",
                        m.spec.id
                    ),
                );
                h.stop_model(i, true).await;
            }
        }
    }
}

/// A running emulated host. Dropping it stops the host.
pub struct SimHost {
    pub(crate) inner: Arc<HostInner>,
    pub(crate) sidecar: Option<Box<SimHost>>,
}

impl std::fmt::Debug for SimHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHost")
            .field("id", &self.inner.id)
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl SimHost {
    /// The host id from the spec.
    pub fn id(&self) -> &str {
        &self.inner.id
    }
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }
    /// The sidecar llama-server, if the spec has one.
    pub fn sidecar(&self) -> Option<&SimHost> {
        self.sidecar.as_deref()
    }
    /// Fault controls, scriptable while the host runs.
    pub fn faults(&self) -> Faults {
        Faults {
            host: Arc::clone(&self.inner),
        }
    }
    /// Request counters and received requests.
    pub fn stats(&self) -> Stats {
        Stats {
            inner: Arc::clone(&self.inner.stats),
        }
    }
    /// The spec the host runs.
    pub fn spec(&self) -> &HostSpec {
        &self.inner.spec
    }
    /// Current process state of a model (`stopped`, `starting`, `ready`, `stopping`), or `None` if unknown.
    pub fn model_state(&self, model: &str) -> Option<&'static str> {
        self.inner
            .resolve(model)
            .map(|i| self.inner.models[i].state().as_str())
    }
    /// Waits until a model reaches `state` (a test helper; bounded by `timeout`).
    pub async fn wait_model_state(&self, model: &str, state: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.model_state(model) == Some(state) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        false
    }
    /// Stops the host: the port refuses connections afterwards.
    pub async fn shutdown(self) {
        self.inner.shutdown.store(true, Ordering::Relaxed);
        self.inner.go_down().await;
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::Relaxed);
        self.inner.down.send_replace(true);
        self.inner.conn_kill.send_modify(|g| *g += 1);
    }
}

/// Starts one host (and its sidecar) on its listen address (default `127.0.0.1:0`).
///
/// # Errors
/// [`SimError::Spec`] for a bad spec, [`SimError::Bind`] when the address cannot be bound.
pub async fn start_host(spec: HostSpec) -> Result<SimHost, SimError> {
    start_host_scaled(spec, None).await
}

pub(crate) async fn start_host_scaled(
    spec: HostSpec,
    fleet_scale: Option<f64>,
) -> Result<SimHost, SimError> {
    spec.validate()?;
    let sidecar = match &spec.sidecar {
        Some(sc) => {
            let mut sc = (**sc).clone();
            if sc.time_scale.is_none() {
                sc.time_scale = spec.time_scale.or(fleet_scale);
            }
            Some(Box::new(
                Box::pin(start_host_scaled(sc, fleet_scale)).await?,
            ))
        }
        None => None,
    };
    let listen = spec.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into());
    let want: SocketAddr = listen.parse().map_err(|_| SimError::Spec {
        field: format!("hosts[{}].listen", spec.id),
        problem: format!("expected ip:port, got {listen:?}"),
    })?;
    let listener = bind(want).map_err(|source| SimError::Bind {
        addr: listen.clone(),
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: listen.clone(),
        source,
    })?;

    let ver = Version(match (&spec.version, spec.api) {
        (Some(v), _) => parse_version(v).unwrap_or(250),
        (None, crate::spec::ApiGen::Legacy) => 223,
        (None, crate::spec::ApiGen::Current) => 250,
        (None, crate::spec::ApiGen::Head) => Version::HEAD,
    });
    let scale = spec.time_scale.or(fleet_scale).unwrap_or(1.0);

    let mut groups: Vec<Group> = vec![Group {
        swap: true,
        exclusive: true,
        persistent: false,
        members: Vec::new(),
    }];
    let mut group_of: HashMap<&str, usize> = HashMap::new();
    for g in spec.groups.values() {
        let gi = groups.len();
        for m in &g.members {
            group_of.insert(m.as_str(), gi);
        }
        groups.push(Group {
            swap: g.swap,
            exclusive: g.exclusive,
            persistent: g.persistent,
            members: Vec::new(),
        });
    }
    let mut names = HashMap::new();
    let mut models = Vec::new();
    for (i, m) in spec.models.iter().enumerate() {
        let gi = group_of.get(m.id.as_str()).copied().unwrap_or(0);
        groups[gi].members.push(i);
        names.insert(m.id.clone(), i);
        for a in &m.aliases {
            names.insert(a.clone(), i);
        }
        models.push(ModelRt {
            spec: m.clone(),
            idx: i,
            state: AtomicU8::new(PState::Stopped as u8),
            admitted: AtomicU32::new(0),
            active: AtomicU32::new(0),
            drained: Notify::new(),
            slots: Arc::new(Semaphore::new(m.slots as usize)),
            last_use_ms: AtomicU64::new(0),
            kill: watch::Sender::new(0),
            counters: Counters::default(),
            cache: Mutex::new(Vec::new()),
            group: gi,
        });
    }
    let now = SystemTime::now();
    let inner = Arc::new(HostInner {
        id: spec.id.clone(),
        mode: spec.mode,
        ver,
        scale,
        addr,
        faults: FaultState::new(),
        stats: Arc::new(StatsInner::new(spec.record_limit)),
        models,
        names,
        groups,
        swap_lock: tokio::sync::Mutex::new(()),
        hub: Hub::new(),
        activity: Mutex::new(Activity::new(
            ver,
            spec.metrics_max_in_memory,
            spec.capture_buffer_mb,
        )),
        logs: Mutex::new(Logs {
            proxy: String::new(),
            upstream: String::new(),
        }),
        inflight: Mutex::new(BTreeMap::new()),
        inflight_seq: AtomicU64::new(1),
        epoch: Mutex::new(Epoch {
            start: Instant::now(),
            wall: now,
        }),
        base: Instant::now(),
        conn_kill: watch::Sender::new(0),
        down: watch::Sender::new(false),
        listening: watch::Sender::new(true),
        shutdown: AtomicBool::new(false),
        id_seq: AtomicU64::new(1),
        created_unix: now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        spec,
    });
    inner.reset_state();
    tokio::spawn(accept_loop(Arc::clone(&inner), listener));
    if inner.mode == Mode::LlamaSwap {
        tokio::spawn(ttl_loop(Arc::downgrade(&inner), scale));
    }
    Ok(SimHost { inner, sidecar })
}

/// Request bytes helper used by the router for captures.
pub(crate) fn header_pairs(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}
