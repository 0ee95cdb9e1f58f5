//! The closed-loop load generator: one hyper HTTP/1.1 connection per virtual user, keep-alive,
//! all on one current-thread tokio runtime (so it costs one core, like `wrk -t1`).

use std::cell::Cell as StdCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Highest latency the histograms record (60 s, in nanoseconds); slower samples are clamped.
const MAX_NS: u64 = 60_000_000_000;

/// One measured cell: a fixed request fired by `concurrency` closed-loop users for a fixed time.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// JSON request body.
    pub body: Bytes,
    /// Number of virtual users (= connections).
    pub concurrency: usize,
    /// Time to run before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Streaming request: the body must end with `data: [DONE]` and TTFT is recorded.
    pub stream: bool,
    /// Process whose CPU time (utime + stime) is sampled over the measured window.
    pub cpu_pid: Option<u32>,
}

/// What a cell measured (warm-up excluded).
pub struct CellStats {
    /// Successful responses that started after the warm-up.
    pub ok: u64,
    /// Failed requests (any status other than 2xx, transport errors, truncated streams).
    pub errors: u64,
    /// First error seen, for the report.
    pub first_error: Option<String>,
    /// Seconds from the end of the warm-up to the last measured completion.
    pub window_s: f64,
    /// Whole-request latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// Time to the first body byte, in nanoseconds.
    pub ttft: Histogram<u64>,
    /// Body bytes of the last successful response (a sanity check that all paths return the same).
    pub body_bytes: usize,
    /// CPU seconds used by [`Cell::cpu_pid`] between the end of the warm-up and the last completion.
    pub cpu_s: Option<f64>,
}

impl CellStats {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: 0,
            first_error: None,
            window_s: 0.0,
            latency: histogram(),
            ttft: histogram(),
            body_bytes: 0,
            cpu_s: None,
        }
    }

    fn error(&mut self, measured: bool, e: impl FnOnce() -> String) {
        if measured {
            self.errors += 1;
        }
        if self.first_error.is_none() {
            self.first_error = Some(e());
        }
    }

    /// Adds another run of the same cell (its samples, counts, window and CPU time).
    pub fn merge(&mut self, other: CellStats) {
        self.ok += other.ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.window_s += other.window_s;
        self.latency.add(&other.latency).expect("same bounds");
        self.ttft.add(&other.ttft).expect("same bounds");
        self.body_bytes = self.body_bytes.max(other.body_bytes);
        self.cpu_s = match (self.cpu_s, other.cpu_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
    }

    /// Completed requests per second over the measured window.
    pub fn rps(&self) -> f64 {
        if self.window_s > 0.0 {
            self.ok as f64 / self.window_s
        } else {
            0.0
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
}

/// A fresh single-threaded runtime, the load generator's only thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
}

/// Runs one cell to completion on a fresh current-thread runtime.
pub fn run_cell(cell: &Cell) -> CellStats {
    let rt = runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let start = Instant::now();
        let warm_end = start + cell.warmup;
        let end = warm_end + cell.duration;
        let last_done = Rc::new(StdCell::new(warm_end));
        let cell = Rc::new(cell.clone());
        let users: Vec<_> = (0..cell.concurrency)
            .map(|_| tokio::task::spawn_local(user(cell.clone(), warm_end, end, last_done.clone())))
            .collect();
        let cpu_pid = cell.cpu_pid;
        let cpu_start = tokio::task::spawn_local(async move {
            tokio::time::sleep_until(warm_end.into()).await;
            cpu_pid.and_then(cpu_seconds)
        });
        let mut total = CellStats::new();
        for u in users {
            let s = u.await.expect("a load task never panics");
            total.ok += s.ok;
            total.errors += s.errors;
            if total.first_error.is_none() {
                total.first_error = s.first_error;
            }
            total.latency.add(&s.latency).expect("same bounds");
            total.ttft.add(&s.ttft).expect("same bounds");
            total.body_bytes = total.body_bytes.max(s.body_bytes);
        }
        total.window_s = last_done
            .get()
            .saturating_duration_since(warm_end)
            .as_secs_f64();
        if let (Ok(Some(a)), Some(b)) = (cpu_start.await, cell.cpu_pid.and_then(cpu_seconds)) {
            total.cpu_s = Some(b - a);
        }
        total
    })
}

/// utime + stime of `pid` in seconds, from `/proc/<pid>/stat` (clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)` part: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Opens an HTTP/1.1 connection with `TCP_NODELAY`, driving it on the local task set.
pub async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Builds the POST request every user sends.
pub fn request(addr: SocketAddr, path: &str, body: &Bytes) -> Request<Full<Bytes>> {
    Request::post(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "*/*")
        .body(Full::new(body.clone()))
        .expect("static request parts are valid")
}

async fn user(
    cell: Rc<Cell>,
    warm_end: Instant,
    end: Instant,
    last_done: Rc<StdCell<Instant>>,
) -> CellStats {
    let mut stats = CellStats::new();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    while Instant::now() < end {
        let mut s = match sender.take() {
            Some(s) => s,
            None => match connect(cell.addr).await {
                Ok(s) => s,
                Err(e) => {
                    stats.error(Instant::now() >= warm_end, || e);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if s.ready().await.is_err() {
            continue; // connection closed by the server: reconnect
        }
        let t0 = Instant::now();
        let measured = t0 >= warm_end;
        let resp = match s
            .send_request(request(cell.addr, &cell.path, &cell.body))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                stats.error(measured, || format!("send: {e}"));
                continue;
            }
        };
        let status = resp.status();
        let mut body = resp.into_body();
        let mut first: Option<Instant> = None;
        let mut bytes = 0usize;
        let mut tail: Vec<u8> = Vec::new();
        let mut body_err = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        if first.is_none() && !d.is_empty() {
                            first = Some(Instant::now());
                        }
                        bytes += d.len();
                        if cell.stream {
                            tail.extend_from_slice(d);
                            let keep = tail.len().saturating_sub(64);
                            tail.drain(..keep);
                        }
                    }
                }
                Err(e) => {
                    body_err = Some(format!("body: {e}"));
                    break;
                }
            }
        }
        let t1 = Instant::now();
        if let Some(e) = body_err {
            stats.error(measured, || e);
            continue;
        }
        sender = Some(s);
        if !status.is_success() {
            stats.error(measured, || format!("HTTP {status}"));
            continue;
        }
        if cell.stream && !ends_with_done(&tail) {
            stats.error(measured, || {
                "stream ended without `data: [DONE]`".to_owned()
            });
            continue;
        }
        if measured {
            stats.ok += 1;
            stats.body_bytes = bytes;
            stats.latency.saturating_record(ns(t1 - t0));
            stats.ttft.saturating_record(ns(first.unwrap_or(t1) - t0));
            if t1 > last_done.get() {
                last_done.set(t1);
            }
        }
    }
    stats
}

fn ends_with_done(tail: &[u8]) -> bool {
    let trimmed = tail.trim_ascii_end();
    trimmed.ends_with(b"data: [DONE]")
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos())
        .unwrap_or(MAX_NS)
        .clamp(1, MAX_NS)
}

/// Opens `n` streaming requests at once, waits until every one has received its first body byte,
/// then calls `probe` while they are all still open, and finally drops them.
/// Returns `(streams that were open at probe time, probe result)`.
pub fn hold_streams<T>(
    addr: SocketAddr,
    path: &str,
    body: Bytes,
    n: usize,
    open_timeout: Duration,
    probe: impl FnOnce() -> T,
) -> (usize, T) {
    let rt = runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let open = Rc::new(StdCell::new(0usize));
        let path: Rc<str> = path.into();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let (open, path, body) = (open.clone(), path.clone(), body.clone());
            tasks.push(tokio::task::spawn_local(async move {
                let Ok(mut s) = connect(addr).await else {
                    return;
                };
                if s.ready().await.is_err() {
                    return;
                }
                let Ok(resp) = s.send_request(request(addr, &path, &body)).await else {
                    return;
                };
                if !resp.status().is_success() {
                    return;
                }
                let mut body = resp.into_body();
                let mut counted = false;
                while let Some(Ok(f)) = body.frame().await {
                    if !counted && f.data_ref().is_some_and(|d| !d.is_empty()) {
                        counted = true;
                        open.set(open.get() + 1);
                    }
                }
                if counted {
                    open.set(open.get() - 1);
                }
            }));
        }
        let deadline = Instant::now() + open_timeout;
        while open.get() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the last chunks settle before sampling.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let opened = open.get();
        let result = probe();
        for t in tasks {
            t.abort();
        }
        (opened, result)
    })
}

/// Sends one request and returns `(status, body)`; used for readiness checks and sanity probes.
pub fn one_shot(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Bytes), String> {
    let rt = runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut s = connect(addr).await?;
        s.ready().await.map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(Duration::from_secs(10), s.send_request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    })
}
