//! A per-worker HTTP/1.1 client for plain-`http://` upstreams (the fleet's LAN hosts), run
//! inline in the request's own task.
//!
//! hyper's client runs every connection as a task of its own: a request is handed to it over a
//! channel, the response head comes back over a oneshot and each body chunk over another
//! channel, so one proxied request costs several task wake-ups and polls on top of the socket
//! work. Here the request's task owns the pooled socket: it writes the request head and body in
//! one `writev`, reads and parses the response head (`httparse`, as hyper does), and the
//! response body ([`WireBody`]) reads straight from the socket when the client side polls it.
//! A read that brings many chunks (an SSE burst) leaves as one frame.
//!
//! What a keep-alive client must get right, and this one does:
//! - framing: `Content-Length`, `Transfer-Encoding: chunked` (chunk extensions and trailers
//!   skipped), close-delimited bodies, no body for 204/304, informational (1xx) heads skipped;
//! - reuse: a connection goes back to its worker's list only after its body was read to the end
//!   with no stray bytes and neither side asked for `Connection: close`; a body dropped early
//!   (client gone) closes the socket, which is how the upstream learns to stop generating;
//! - stale connections: one the upstream closed while idle is noticed before use (no syscall
//!   when it is alive); a reused connection that fails before any response byte arrived (the
//!   upstream's idle close racing our write) is retried once on a fresh connection;
//! - idle connections older than [`IDLE_TIMEOUT`] are dropped; connect timeout, `TCP_NODELAY`
//!   and TCP keep-alive probes as before.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use hyper::body::{Body, Frame, SizeHint};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections older than this are closed (as hyper-util's pool does).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Most connections kept per worker and endpoint; more are closed after their response.
const MAX_IDLE: usize = 1024;

/// Largest response head accepted (hyper's default limit is about the same).
const MAX_HEAD: usize = 64 * 1024;

/// Most response header lines accepted.
const MAX_HEADERS: usize = 128;

/// Read buffer: first allocation and the least free room before a read.
const READ_CHUNK: usize = 8 * 1024;

/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_LINE: usize = 4 * 1024;

/// Visits the headers of a request: calls its argument once per header, in order.
pub(crate) type Headers<'a> = &'a dyn Fn(&mut dyn FnMut(&HeaderName, &HeaderValue));

/// Why a request got no response head.
#[derive(Debug)]
pub(crate) struct WireError {
    connect: bool,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl WireError {
    fn connect(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            connect: true,
            source: e.into(),
        }
    }

    fn send(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            connect: false,
            source: e.into(),
        }
    }

    /// Whether no connection could be opened (refused, unreachable, connect timeout).
    pub(crate) fn is_connect(&self) -> bool {
        self.connect
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.connect {
            f.write_str("client error (Connect)")
        } else {
            f.write_str("client error (SendRequest)")
        }
    }
}

impl std::error::Error for WireError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// A protocol fault in what the upstream sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Malformed(&'static str);

struct Idle {
    io: TcpStream,
    since: Instant,
}

/// Connections to one `http://host:port`, one idle list per worker thread.
pub(crate) struct WirePool {
    authority: http::uri::Authority,
    host: HeaderValue,
    connect_timeout: Duration,
    keepalive: Option<Duration>,
    /// Idle connections older than this are closed ([`IDLE_TIMEOUT`]).
    idle_timeout: Duration,
    slots: Box<[Mutex<Vec<Idle>>]>,
}

impl std::fmt::Debug for WirePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WirePool")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// Where a finished body returns its connection.
struct Home {
    pool: Arc<WirePool>,
    slot: usize,
}

impl WirePool {
    /// A pool for `authority` (`host[:port]`, port 80 when absent) with `slots` worker lists.
    pub(crate) fn new(
        authority: http::uri::Authority,
        connect_timeout: Duration,
        keepalive: Option<Duration>,
        slots: usize,
    ) -> Option<Self> {
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        Some(Self {
            authority,
            host,
            connect_timeout,
            keepalive,
            idle_timeout: IDLE_TIMEOUT,
            slots: (0..slots.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    /// The authority this pool connects to.
    pub(crate) fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    /// Sends one request (`head` from [`WirePool::encode_head`]) from worker list `slot`.
    pub(crate) async fn send(
        self: Arc<Self>,
        slot: usize,
        method: &Method,
        head: &[u8],
        body: &Bytes,
    ) -> Result<Response<WireBody>, WireError> {
        let slot = slot.min(self.slots.len() - 1);
        for fresh in [false, true] {
            let (io, reused) = match (!fresh).then(|| self.take(slot)).flatten() {
                Some(io) => (io, true),
                None => (self.connect().await?, false),
            };
            match exchange(io, head, body).await {
                Ok((head, io, buf)) => {
                    let home = Home {
                        pool: self.clone(),
                        slot,
                    };
                    return Ok(WireBody::start(head, io, buf, home, method));
                }
                // The upstream closed this idle connection as we sent on it: nothing was
                // processed, so a fresh connection gets the request.
                Err(Exchange::Stale(_)) if reused => continue,
                Err(Exchange::Stale(e)) | Err(Exchange::Failed(e)) => {
                    return Err(WireError::send(e));
                }
            }
        }
        Err(WireError::send("request was not sent"))
    }

    /// The request head: `target` is the origin-form path and query; `headers` visits the
    /// headers to send (written as they come, no header map in between). `Host` comes from
    /// this pool and the length from `len`; visited `Host`, `Content-Length` and
    /// `Transfer-Encoding` headers are left out.
    pub(crate) fn encode_head(
        &self,
        method: &Method,
        target: &str,
        headers: Headers<'_>,
        len: usize,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + target.len());
        out.extend_from_slice(method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        push_header(&mut out, HOST.as_str(), self.host.as_bytes());
        headers(&mut |k, v| {
            if k != HOST && k != CONTENT_LENGTH && k != TRANSFER_ENCODING {
                push_header(&mut out, k.as_str(), v.as_bytes());
            }
        });
        if len > 0 || !matches!(*method, Method::GET | Method::HEAD) {
            let mut n = itoa_buf(len);
            push_header(&mut out, CONTENT_LENGTH.as_str(), n.as_bytes_mut());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// The newest live idle connection of `slot`, dropping closed and expired ones.
    fn take(&self, slot: usize) -> Option<TcpStream> {
        let mut list = self.slots[slot].lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = list.pop() {
            if c.since.elapsed() > self.idle_timeout {
                // The ones below it are older still.
                list.clear();
                return None;
            }
            // Readiness is cached by the reactor: a live idle connection answers `WouldBlock`
            // without a syscall; one the upstream closed reads 0 (or stray bytes: unusable).
            let mut probe = [0u8; 1];
            match c.io.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(c.io),
                _ => continue,
            }
        }
        None
    }

    fn put(&self, slot: usize, io: TcpStream) {
        let now = Instant::now();
        let mut list = self.slots[slot].lock().unwrap_or_else(|e| e.into_inner());
        // `take` uses the newest first, so connections left over from a burst sink to the
        // front: close those idle too long (one comparison when none is).
        let expired = list
            .iter()
            .take_while(|c| now.duration_since(c.since) > self.idle_timeout)
            .count();
        list.drain(..expired);
        if list.len() < MAX_IDLE {
            list.push(Idle { io, since: now });
        }
    }

    async fn connect(&self) -> Result<TcpStream, WireError> {
        let host = self.authority.host();
        let port = self.authority.port_u16().unwrap_or(80);
        // `[::1]` style hosts arrive bracketed; the resolver wants them bare.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let io = tokio::time::timeout(self.connect_timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                WireError::connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", self.connect_timeout),
                ))
            })?
            .map_err(WireError::connect)?;
        let _ = io.set_nodelay(true);
        if let Some(k) = self.keepalive {
            let ka = socket2::TcpKeepalive::new().with_time(k);
            let _ = socket2::SockRef::from(&io).set_tcp_keepalive(&ka);
        }
        Ok(io)
    }
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `n` in decimal, without allocating.
fn itoa_buf(mut n: usize) -> DecBuf {
    let mut b = DecBuf {
        digits: [0; 20],
        start: 20,
    };
    loop {
        b.start -= 1;
        b.digits[b.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return b;
        }
    }
}

struct DecBuf {
    digits: [u8; 20],
    start: usize,
}

impl DecBuf {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// How a request on one connection failed.
enum Exchange {
    /// Closed or reset before any response byte: safe to send again on a fresh connection when
    /// the connection was a reused one.
    Stale(Box<dyn std::error::Error + Send + Sync>),
    /// Anything else.
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// A parsed response head: the end-to-end headers for the client, and what this client reads
/// itself (framing and reuse), taken from the hop-by-hop headers it consumes.
struct Head {
    status: StatusCode,
    /// End-to-end headers only: hop-by-hop ones (and those a `Connection` header names) stay
    /// on this hop.
    headers: HeaderMap,
    /// HTTP/1.0 response.
    http10: bool,
    /// `Connection: close`.
    close: bool,
    /// `Connection: keep-alive` (matters for HTTP/1.0).
    keep_alive: bool,
    /// `Transfer-Encoding` present: whether its last coding is `chunked`.
    transfer_chunked: Option<bool>,
    /// `Content-Length` (agreeing values only).
    length: Option<u64>,
}

/// Writes the request and reads the response head; returns it with the socket and the bytes
/// read past it.
async fn exchange(
    mut io: TcpStream,
    head: &[u8],
    body: &Bytes,
) -> Result<(Head, TcpStream, BytesMut), Exchange> {
    if let Err(e) = write_all2(&mut io, head, body).await {
        return Err(stale_or_failed(e));
    }
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        let got = match crate::spin::spin_read_buf(&io, &mut buf, 1) {
            Some(r) => r,
            None => io.read_buf(&mut buf).await,
        };
        let n = match got {
            Ok(n) => n,
            Err(e) if buf.is_empty() => return Err(stale_or_failed(e)),
            Err(e) => return Err(Exchange::Failed(e.into())),
        };
        if n == 0 {
            let e = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the response head",
            );
            return Err(if buf.is_empty() {
                Exchange::Stale(e.into())
            } else {
                Exchange::Failed(e.into())
            });
        }
        match parse_head(&mut buf).map_err(|e| Exchange::Failed(e.into()))? {
            Some(h) => return Ok((h, io, buf)),
            None if buf.len() > MAX_HEAD => {
                return Err(Exchange::Failed(
                    Malformed("response head larger than 64 KiB").into(),
                ));
            }
            None => {}
        }
    }
}

fn stale_or_failed(e: std::io::Error) -> Exchange {
    use std::io::ErrorKind::*;
    match e.kind() {
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof => {
            Exchange::Stale(e.into())
        }
        _ => Exchange::Failed(e.into()),
    }
}

/// Writes `a` then `b` with as few `writev` calls as the socket allows.
async fn write_all2(io: &mut TcpStream, a: &[u8], b: &[u8]) -> std::io::Result<()> {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() {
        let n = io
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    if !b.is_empty() {
        io.write_all(b).await?;
    }
    Ok(())
}

/// Hop-by-hop headers (RFC 9110 section 7.6.1, plus the legacy ones): never forwarded, in
/// either direction; in responses this client consumes them.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Whether a header name (any case) is hop-by-hop.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Parses a complete final response head off the front of `buf` (informational 1xx heads are
/// consumed and skipped); `None` when more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Malformed> {
    loop {
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Malformed("response has too many header lines"));
            }
            Err(_) => return Err(Malformed("malformed response head")),
        };
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code).map_err(|_| Malformed("invalid status code"))?;
        if status.is_informational() {
            if code == 101 {
                return Err(Malformed("unexpected protocol upgrade"));
            }
            buf.advance(len);
            continue;
        }
        let mut head = Head {
            status,
            headers: HeaderMap::new(),
            http10: resp.version == Some(0),
            close: false,
            keep_alive: false,
            transfer_chunked: None,
            length: None,
        };
        // First pass: what this hop needs, and whether `Connection` names other headers.
        let mut listed = false;
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"connection") {
                for t in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if t.eq_ignore_ascii_case(b"close") {
                        head.close = true;
                    } else if t.eq_ignore_ascii_case(b"keep-alive") {
                        head.keep_alive = true;
                    } else if !t.is_empty() {
                        listed = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                // The last coding of the last header line decides.
                if let Some(last) = h.value.rsplit(|&b| b == b',').next() {
                    head.transfer_chunked =
                        Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                }
            } else if name.eq_ignore_ascii_case(b"content-length") {
                for part in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    let n = std::str::from_utf8(part)
                        .ok()
                        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or(Malformed("invalid Content-Length"))?;
                    if head.length.is_some_and(|l| l != n) {
                        return Err(Malformed("conflicting Content-Length values"));
                    }
                    head.length = Some(n);
                }
            }
        }
        let named_by_connection = |name: &str| {
            listed
                && resp.headers.iter().any(|h| {
                    h.name.eq_ignore_ascii_case("connection") && has_token(h.value, name.as_bytes())
                })
        };
        // Second pass: the end-to-end headers, values sharing one allocation with the head (as
        // hyper does). A length next to a transfer coding is meaningless and is not passed on.
        let base = buf.as_ptr() as usize;
        let mut keep: [(u32, u32, u32, u32); MAX_HEADERS] = [(0, 0, 0, 0); MAX_HEADERS];
        let mut kept = 0;
        for h in resp.headers.iter() {
            if is_hop_by_hop(h.name)
                || (head.transfer_chunked.is_some()
                    && h.name.eq_ignore_ascii_case("content-length"))
                || named_by_connection(h.name)
            {
                continue;
            }
            let n = h.name.as_ptr() as usize - base;
            let v = h.value.as_ptr() as usize - base;
            keep[kept] = (
                n as u32,
                (n + h.name.len()) as u32,
                v as u32,
                (v + h.value.len()) as u32,
            );
            kept += 1;
        }
        let bytes = buf.split_to(len).freeze();
        head.headers.reserve(kept + 3);
        for &(ns, ne, vs, ve) in &keep[..kept] {
            let (ns, ne, vs, ve) = (ns as usize, ne as usize, vs as usize, ve as usize);
            let name = HeaderName::from_bytes(&bytes[ns..ne])
                .map_err(|_| Malformed("invalid response header name"))?;
            let value = HeaderValue::from_maybe_shared(bytes.slice(vs..ve))
                .map_err(|_| Malformed("invalid response header value"))?;
            head.headers.append(name, value);
        }
        return Ok(Some(head));
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Eof,
    /// Finished.
    Done,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// Sets the socket's receive low-water mark (`SO_RCVLOWAT`, Linux; elsewhere a no-op): the
/// kernel signals it readable (an epoll wake-up of the runtime) only once `bytes` are queued,
/// or its buffer is under pressure. A read still returns whatever is there.
///
/// A reader that comes back on its own schedule (the connector reads llama-swap's event
/// stream once per batch window) raises it while away, so the events arriving meanwhile do not
/// wake a runtime thread each (about five per proxied request), and lowers it to 1 before it
/// waits again. Lowering it signals data that is already queued at once.
pub(crate) fn set_wake_threshold(io: &TcpStream, bytes: u32) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let v = i32::try_from(bytes.max(1)).unwrap_or(i32::MAX);
        if let Err(e) = uapi::setsockopt(
            io.as_raw_fd(),
            uapi::c::SOL_SOCKET,
            uapi::c::SO_RCVLOWAT,
            &v,
        ) {
            tracing::debug!(error = %e, "SO_RCVLOWAT");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (io, bytes);
}

/// The response body, read from the upstream socket by whoever polls it.
pub(crate) struct WireBody {
    io: Option<TcpStream>,
    buf: BytesMut,
    framing: Framing,
    keep_alive: bool,
    home: Option<Home>,
}

impl std::fmt::Debug for WireBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireBody")
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

impl WireBody {
    fn start(
        head: Head,
        io: TcpStream,
        buf: BytesMut,
        home: Home,
        method: &Method,
    ) -> Response<WireBody> {
        let keep_alive = if head.http10 {
            head.keep_alive
        } else {
            !head.close
        };
        let framing = framing(&head, method);
        let mut body = WireBody {
            io: Some(io),
            buf,
            framing,
            keep_alive: keep_alive && framing != Framing::Eof,
            home: Some(home),
        };
        if body.framing == Framing::Done || body.framing == Framing::Length(0) {
            body.framing = Framing::Done;
            body.finish();
        }
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        resp
    }

    /// The body is complete: the connection goes back to its pool when it can be reused.
    fn finish(&mut self) {
        self.framing = Framing::Done;
        let (Some(io), Some(home)) = (self.io.take(), self.home.take()) else {
            return;
        };
        if self.keep_alive && self.buf.is_empty() {
            home.pool.put(home.slot, io);
        }
    }

    /// How many bytes must be queued on the socket before the kernel wakes whoever waits to
    /// read it ([`set_wake_threshold`]); no-op once the body is complete.
    pub(crate) fn set_wake_threshold(&self, bytes: u32) {
        if let Some(io) = &self.io {
            set_wake_threshold(io, bytes);
        }
    }

    /// Decodes what `buf` holds into one frame's worth of data (`None`: nothing yet).
    fn drain(&mut self) -> Result<Option<Bytes>, Malformed> {
        match self.framing {
            Framing::Done => Ok(None),
            Framing::Eof => Ok((!self.buf.is_empty()).then(|| self.buf.split().freeze())),
            Framing::Length(left) => {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let n = (left.min(self.buf.len() as u64)) as usize;
                let d = self.buf.split_to(n).freeze();
                let left = left - n as u64;
                if left == 0 {
                    self.finish();
                } else {
                    self.framing = Framing::Length(left);
                }
                Ok(Some(d))
            }
            Framing::Chunked(state) => self.drain_chunked(state),
        }
    }

    fn drain_chunked(&mut self, mut state: Chunk) -> Result<Option<Bytes>, Malformed> {
        let mut out = Joined::Empty;
        loop {
            match state {
                Chunk::Size => {
                    let Some(line) = take_line(&mut self.buf)? else {
                        break;
                    };
                    let size = chunk_size(&line)?;
                    state = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Chunk::Data(left) => {
                    if self.buf.is_empty() {
                        break;
                    }
                    let n = (left.min(self.buf.len() as u64)) as usize;
                    out.push(self.buf.split_to(n).freeze());
                    let left = left - n as u64;
                    state = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                }
                Chunk::DataEnd => {
                    let Some(line) = take_line(&mut self.buf)? else {
                        break;
                    };
                    if !line.is_empty() {
                        return Err(Malformed("chunk data longer than its size"));
                    }
                    state = Chunk::Size;
                }
                Chunk::Trailers => {
                    let Some(line) = take_line(&mut self.buf)? else {
                        break;
                    };
                    if line.is_empty() {
                        self.finish();
                        return Ok(out.take());
                    }
                }
            }
        }
        self.framing = Framing::Chunked(state);
        Ok(out.take())
    }
}

/// Byte chunks joined lazily: one chunk is kept without copying, a second starts a joined
/// buffer. Used for the chunks one read brought, and by the proxy for chunks it holds back.
#[derive(Debug, Default)]
pub(crate) enum Joined {
    /// Nothing.
    #[default]
    Empty,
    /// One chunk, kept without copying.
    One(Bytes),
    /// Several chunks, joined.
    Many(BytesMut),
}

impl Joined {
    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        match self {
            Joined::Empty => 0,
            Joined::One(b) => b.len(),
            Joined::Many(b) => b.len(),
        }
    }

    /// Appends a chunk.
    pub(crate) fn push(&mut self, d: Bytes) {
        *self = match std::mem::take(self) {
            Joined::Empty => Joined::One(d),
            Joined::One(first) => {
                // Room for more: chunks rarely come alone once a second one has.
                let mut m = BytesMut::with_capacity((first.len() + d.len()) * 4);
                m.extend_from_slice(&first);
                m.extend_from_slice(&d);
                Joined::Many(m)
            }
            Joined::Many(mut m) => {
                m.extend_from_slice(&d);
                Joined::Many(m)
            }
        }
    }

    /// Takes what is held (`None` when nothing is).
    pub(crate) fn take(&mut self) -> Option<Bytes> {
        match std::mem::take(self) {
            Joined::Empty => None,
            Joined::One(b) => Some(b),
            Joined::Many(m) => Some(m.freeze()),
        }
    }
}

/// Takes one line (without its `\r\n` or `\n`) off the front of `buf`; `None` when incomplete.
fn take_line(buf: &mut BytesMut) -> Result<Option<BytesMut>, Malformed> {
    match memchr::memchr(b'\n', buf) {
        Some(i) => {
            let mut line = buf.split_to(i + 1);
            line.truncate(i);
            if line.last() == Some(&b'\r') {
                line.truncate(i - 1);
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(Malformed("chunk-size or trailer line too long")),
        None => Ok(None),
    }
}

/// A chunk-size line's size (hex, extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let hex = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if hex.is_empty() || hex.len() > 15 {
        return Err(Malformed("invalid chunk size"));
    }
    let mut n: u64 = 0;
    for &c in hex {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err(Malformed("invalid chunk size")),
        };
        n = n * 16 + u64::from(d);
    }
    Ok(n)
}

/// Whether a comma-separated header value lists `token` (ASCII case-insensitive).
pub(crate) fn has_token(v: &[u8], token: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How the body of a response to `method` is delimited (RFC 9112 section 6.3).
fn framing(head: &Head, method: &Method) -> Framing {
    let code = head.status.as_u16();
    if *method == Method::HEAD || code == 204 || code == 304 {
        return Framing::Done;
    }
    match (head.transfer_chunked, head.length) {
        (Some(true), _) if !head.http10 => Framing::Chunked(Chunk::Size),
        (Some(_), _) => Framing::Eof,
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Eof,
    }
}

impl Body for WireBody {
    type Data = Bytes;
    type Error = crate::proxy::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            match this.drain() {
                Ok(Some(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Ok(None) if this.framing == Framing::Done => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.io = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
            let Some(io) = this.io.as_mut() else {
                return Poll::Ready(None);
            };
            if this.buf.capacity() - this.buf.len() < 1024 {
                this.buf.reserve(READ_CHUNK);
            }
            let n = match ready!(tokio_util::io::poll_read_buf(
                Pin::new(io),
                cx,
                &mut this.buf
            )) {
                Ok(n) => n,
                Err(e) => {
                    this.io = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
            };
            if n == 0 {
                this.io = None;
                if this.framing == Framing::Eof {
                    this.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                this.framing = Framing::Done;
                return Poll::Ready(Some(Err(
                    "connection closed before the end of the response body".into(),
                )));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A scripted upstream: each accepted connection reads request heads (and
    /// `Content-Length` bodies) and answers them with `answer(conn_no, req_no, head)`; `None`
    /// closes the connection instead. Counts connections.
    async fn upstream<F>(answer: F) -> (std::net::SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(usize, usize, &str) -> Option<Vec<u8>> + Send + Sync + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; 4096];
                    for r in 1.. {
                        let end = loop {
                            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                                break i + 4;
                            }
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => got.extend_from_slice(&buf[..k]),
                            }
                        };
                        let head = String::from_utf8_lossy(&got[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while got.len() < end + len {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => got.extend_from_slice(&buf[..k]),
                            }
                        }
                        got.drain(..end + len);
                        match answer(n, r, &head) {
                            Some(resp) => {
                                if s.write_all(&resp).await.is_err() {
                                    return;
                                }
                            }
                            None => return,
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn pool_for(addr: std::net::SocketAddr, slots: usize) -> Arc<WirePool> {
        Arc::new(
            WirePool::new(
                addr.to_string().parse().unwrap(),
                Duration::from_secs(2),
                None,
                slots,
            )
            .unwrap(),
        )
    }

    async fn post(pool: &Arc<WirePool>, slot: usize) -> Result<Response<WireBody>, WireError> {
        let mut h = HeaderMap::new();
        h.insert("x-test", HeaderValue::from_static("1"));
        // Left out: the pool sets Host and the length itself.
        h.insert(HOST, HeaderValue::from_static("elsewhere"));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("999"));
        let body = Bytes::from_static(b"{\"a\":1}");
        let visit = |f: &mut dyn FnMut(&HeaderName, &HeaderValue)| {
            for (k, v) in &h {
                f(k, v);
            }
        };
        let head = pool.encode_head(&Method::POST, "/v1/x", &visit, body.len());
        pool.clone().send(slot, &Method::POST, &head, &body).await
    }

    async fn text(r: Response<WireBody>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_request_goes_out_in_origin_form_with_host_and_length() {
        let (addr, _) = upstream(|_, _, head| {
            let want = "post /v1/x http/1.1\r\n";
            assert!(head.starts_with(want), "{head}");
            assert!(head.contains("\r\nhost: 127.0.0.1:"), "{head}");
            assert!(head.contains("\r\nx-test: 1\r\n"), "{head}");
            assert!(head.contains("\r\ncontent-length: 7\r\n"), "{head}");
            assert!(
                !head.contains("elsewhere") && !head.contains("999"),
                "{head}"
            );
            Some(ok("fine"))
        })
        .await;
        let r = post(&pool_for(addr, 1), 0).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "4");
        assert_eq!(text(r).await, "fine");
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection_per_worker_list() {
        let (addr, conns) = upstream(|n, r, _| Some(ok(&format!("c{n} r{r}")))).await;
        let pool = pool_for(addr, 2);
        for i in 1..=5 {
            let r = post(&pool, 0).await.unwrap();
            assert_eq!(text(r).await, format!("c1 r{i}"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        // Another worker list opens its own connection.
        assert_eq!(text(post(&pool, 1).await.unwrap()).await, "c2 r1");
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_own_connections() {
        let (addr, conns) = upstream(|n, _, _| Some(ok(&format!("c{n}")))).await;
        let pool = pool_for(addr, 1);
        let (a, b) = tokio::join!(post(&pool, 0), post(&pool, 0));
        let (a, b) = (text(a.unwrap()).await, text(b.unwrap()).await);
        assert_ne!(a, b);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_and_the_connection_reused() {
        let (addr, conns) = upstream(|_, r, _| {
            Some(
                format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n\
                     6;ext=1\r\ndata: \r\n3\r\nr{r}\n\r\n1\r\n\n\r\n0\r\nx-trailer: t\r\n\r\n"
                )
                .into_bytes(),
            )
        })
        .await;
        let pool = pool_for(addr, 1);
        for r in 1..=3 {
            let resp = post(&pool, 0).await.unwrap();
            assert!(!resp.headers().contains_key("content-length"));
            assert_eq!(text(resp).await, format!("data: r{r}\n\n"));
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_chunked_stream_split_anywhere_decodes_the_same() {
        // The upstream writes the response one byte at a time.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            let resp = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                         a\r\n0123456789\r\n10\r\nabcdefghijklmnop\r\n0\r\n\r\n";
            for b in resp {
                s.write_all(&[*b]).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            let _ = s.read(&mut buf).await;
        });
        let r = post(&pool_for(addr, 1), 0).await.unwrap();
        assert_eq!(text(r).await, "0123456789abcdefghijklmnop");
    }

    #[tokio::test]
    async fn informational_heads_are_skipped() {
        let (addr, _) = upstream(|_, _, _| {
            let mut v = b"HTTP/1.1 100 Continue\r\n\r\n".to_vec();
            v.extend(ok("after continue"));
            Some(v)
        })
        .await;
        let r = post(&pool_for(addr, 1), 0).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(text(r).await, "after continue");
    }

    #[tokio::test]
    async fn connection_close_and_close_delimited_bodies_are_not_reused() {
        let (addr, conns) = upstream(|n, r, _| {
            Some(if r == 1 && n == 1 {
                format!("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nc{n}")
                    .into_bytes()
            } else {
                // No length: the body runs until the upstream closes (after this answer the
                // script reads again and gets EOF only when we close; so close ourselves).
                return Some(format!("HTTP/1.1 200 OK\r\n\r\neof-body c{n}").into_bytes());
            })
        })
        .await;
        let pool = pool_for(addr, 1);
        assert_eq!(text(post(&pool, 0).await.unwrap()).await, "c1");
        // A close-delimited body: read what arrives, then drop it (the upstream keeps the
        // connection open, so reading to the end would wait).
        let r = post(&pool, 0).await.unwrap();
        let mut body = r.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"eof-body c2");
        assert!(!body.is_end_stream());
        drop(body);
        assert_eq!(conns.load(Ordering::SeqCst), 2);
        let r = post(&pool, 0).await.unwrap();
        let mut body = r.into_body();
        let third = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&third[..], b"eof-body c3");
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
        // Each connection serves one request and closes without notice.
        let (addr, conns) = upstream(|n, r, _| (r == 1).then(|| ok(&format!("c{n}")))).await;
        let pool = pool_for(addr, 1);
        for i in 1..=3 {
            assert_eq!(text(post(&pool, 0).await.unwrap()).await, format!("c{i}"));
            // Let the reactor see the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_stale_connection_that_fails_on_send_is_retried_once_on_a_fresh_one() {
        // The upstream reads the second request on each connection and closes without an
        // answer (an idle close racing our write); the retry on a fresh connection succeeds.
        let (addr, conns) = upstream(|n, r, _| (r == 1).then(|| ok(&format!("c{n}")))).await;
        let pool = pool_for(addr, 1);
        assert_eq!(text(post(&pool, 0).await.unwrap()).await, "c1");
        // Use the pooled connection at once, before the reactor can see a close.
        assert_eq!(text(post(&pool, 0).await.unwrap()).await, "c2");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_fresh_connection_closed_without_an_answer_is_an_error_not_a_retry_loop() {
        let (addr, conns) = upstream(|_, _, _| None).await;
        let e = post(&pool_for(addr, 1), 0).await.unwrap_err();
        assert!(!e.is_connect());
        let chain = std::error::Error::source(&e).unwrap().to_string();
        assert!(chain.contains("closed before the response head"), "{chain}");
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_a_dropped_body_closes_the_socket() {
        let (addr, conns) = upstream(|_, _, _| {
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this".to_vec())
        })
        .await;
        let pool = pool_for(addr, 1);
        let r = post(&pool, 0).await.unwrap();
        let mut body = r.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"only this");
        assert_eq!(body.size_hint().exact(), Some(91));
        drop(body);
        // The dropped connection was not pooled: the next request opens a new one.
        let _ = post(&pool, 0).await.unwrap();
        assert_eq!(conns.load(Ordering::SeqCst), 2);

        // An upstream that closes mid-body.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cut = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
                .await
                .unwrap();
        });
        let r = post(&pool_for(cut, 1), 0).await.unwrap();
        let mut body = r.into_body();
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&first[..], b"hello");
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("before the end"), "{e}");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn malformed_heads_and_framing_are_errors_naming_the_fault() {
        for (resp, want) in [
            (&b"NOT HTTP\r\n\r\n"[..], "malformed response head"),
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx"[..],
                "conflicting Content-Length",
            ),
            (
                &b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n"[..],
                "invalid Content-Length",
            ),
        ] {
            let resp = resp.to_vec();
            let (addr, _) = upstream(move |_, _, _| Some(resp.clone())).await;
            let e = post(&pool_for(addr, 1), 0).await.unwrap_err();
            let chain = std::error::Error::source(&e).unwrap().to_string();
            assert!(chain.contains(want), "{chain} vs {want}");
        }
        // A bad chunk size surfaces as a body error.
        let (addr, _) = upstream(|_, _, _| {
            Some(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n".to_vec())
        })
        .await;
        let mut body = post(&pool_for(addr, 1), 0).await.unwrap().into_body();
        let e = body.frame().await.unwrap().unwrap_err();
        assert!(e.to_string().contains("invalid chunk size"), "{e}");
    }

    #[tokio::test]
    async fn no_body_for_204_and_an_empty_length_body_returns_the_connection() {
        let (addr, conns) = upstream(|_, r, _| {
            Some(if r % 2 == 1 {
                b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
            } else {
                ok("")
            })
        })
        .await;
        let pool = pool_for(addr, 1);
        for _ in 0..4 {
            let r = post(&pool, 0).await.unwrap();
            assert!(r.body().is_end_stream());
            assert_eq!(text(r).await, "");
        }
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn hop_by_hop_headers_stay_on_this_hop_and_the_rest_pass_in_order() {
        let (addr, conns) = upstream(|_, r, _| {
            Some(if r == 1 {
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\n\
                  X-Hop: 1\r\nSet-Cookie: a\r\nSet-Cookie: b\r\nX-End: 2\r\n\
                  Content-Length: 2\r\n\r\nok"
                    .to_vec()
            } else {
                // A length next to a transfer coding is meaningless: not passed on.
                b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\
                  Trailer: x-t\r\n\r\n2\r\nok\r\n0\r\n\r\n"
                    .to_vec()
            })
        })
        .await;
        let pool = pool_for(addr, 1);
        let r = post(&pool, 0).await.unwrap();
        let names: Vec<_> = r
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("set-cookie", "a"),
                ("set-cookie", "b"),
                ("x-end", "2"),
                ("content-length", "2")
            ]
        );
        assert_eq!(text(r).await, "ok");
        let r = post(&pool, 0).await.unwrap();
        assert!(r.headers().is_empty(), "{:?}", r.headers());
        assert_eq!(text(r).await, "ok");
        // `Connection: keep-alive` and the chunked body both left the connection reusable.
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn idle_connections_past_the_idle_timeout_are_closed_not_reused() {
        let (addr, conns) = upstream(|n, _, _| Some(ok(&format!("c{n}")))).await;
        let mut pool = WirePool::new(
            addr.to_string().parse().unwrap(),
            Duration::from_secs(2),
            None,
            1,
        )
        .unwrap();
        pool.idle_timeout = Duration::from_millis(50);
        let pool = Arc::new(pool);
        // A burst leaves three idle connections.
        let (a, b, c) = tokio::join!(post(&pool, 0), post(&pool, 0), post(&pool, 0));
        for r in [a, b, c] {
            let _ = text(r.unwrap()).await;
        }
        assert_eq!(pool.slots[0].lock().unwrap().len(), 3);
        tokio::time::sleep(Duration::from_millis(120)).await;
        // All expired: a fresh connection, and the old ones are gone from the list.
        assert_eq!(text(post(&pool, 0).await.unwrap()).await, "c4");
        assert_eq!(conns.load(Ordering::SeqCst), 4);
        assert_eq!(pool.slots[0].lock().unwrap().len(), 1);
        // Within the timeout the connection is reused.
        assert_eq!(text(post(&pool, 0).await.unwrap()).await, "c4");

        // Steady traffic keeps reusing the newest; the rest of a burst is closed once it
        // has been idle too long.
        let (a, b) = tokio::join!(post(&pool, 0), post(&pool, 0));
        let (_, _) = (text(a.unwrap()).await, text(b.unwrap()).await);
        assert_eq!(pool.slots[0].lock().unwrap().len(), 2);
        for _ in 0..15 {
            let _ = text(post(&pool, 0).await.unwrap()).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.slots[0].lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn refused_connections_are_connect_errors() {
        let dead = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let e = post(&pool_for(dead, 1), 0).await.unwrap_err();
        assert!(e.is_connect());
        let chain = std::error::Error::source(&e).unwrap().to_string();
        assert!(chain.to_lowercase().contains("refused"), "{chain}");
    }

    #[test]
    fn chunk_sizes_parse_hex_with_extensions() {
        assert_eq!(chunk_size(b"1a").unwrap(), 26);
        assert_eq!(chunk_size(b"FF;name=value").unwrap(), 255);
        assert_eq!(chunk_size(b"0 ").unwrap(), 0);
        assert!(chunk_size(b"").is_err());
        assert!(chunk_size(b"g").is_err());
        assert!(chunk_size(b"1111111111111111").is_err());
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for n in [0usize, 7, 10, 4096, usize::MAX] {
            assert_eq!(itoa_buf(n).as_bytes_mut(), n.to_string().as_bytes());
        }
    }

    /// While the threshold is raised, a little data leaves the reader asleep; lowering it
    /// wakes the reader for the data already queued, and a read gets all of it.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_raised_wake_threshold_keeps_small_writes_from_waking_the_reader() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut w = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut r, _) = l.accept().await.unwrap();
        set_wake_threshold(&r, 1 << 20);
        // A new socket counts as readable until a read says otherwise (tokio's starting state).
        let mut got = vec![0u8; 256];
        let e = r.try_read(&mut got).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        w.write_all(b"event:message\ndata:{}\n\n").await.unwrap();
        w.write_all(b"event:message\ndata:{}\n\n").await.unwrap();
        let woke = tokio::time::timeout(Duration::from_millis(200), r.readable()).await;
        assert!(woke.is_err(), "the reader woke below the threshold");
        set_wake_threshold(&r, 1);
        tokio::time::timeout(Duration::from_secs(5), r.readable())
            .await
            .expect("lowering the threshold did not wake the reader")
            .unwrap();
        let n = r.read(&mut got).await.unwrap();
        assert_eq!(
            &got[..n],
            b"event:message\ndata:{}\n\nevent:message\ndata:{}\n\n"
        );
    }
}
