//! Bounded busy-polling for a worker thread that serves a single connection.
//!
//! At low concurrency most of a proxied request's wall time is spent waking up: the worker
//! sleeps in `epoll_wait` twice per request (for the upstream's answer and for the client's next
//! request), and each wake-up costs an inter-processor interrupt and a context switch (on a VM,
//! a VM exit as well). When a worker thread has exactly one client connection, nothing else on
//! that thread can be waiting, so instead of parking it reads the socket with non-blocking
//! `read`s for up to a short budget, yielding the CPU between tries (so a thread that shares the
//! CPU still runs): the client socket while no request is open, the upstream socket while the
//! connection's only request waits for its answer. Bytes that arrive within the budget are
//! picked up without a wake-up; otherwise the task parks as usual.
//!
//! The budget is [`crate::GatewayConfig::worker_spin`] (`ZERO`: off). Only worker threads
//! ([`crate::Gateway::serve_workers`]) count their connections, so the plain `serve` mode never
//! spins.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

thread_local! {
    /// This worker thread's budget (`None`: never spin).
    static BUDGET: Cell<Option<Duration>> = const { Cell::new(None) };
    /// Client connections open on this worker thread; `None` on threads that do not count.
    static OPEN: Cell<Option<usize>> = const { Cell::new(None) };
    /// Requests on this worker thread whose response is not yet fully written.
    static ACTIVE: Cell<usize> = const { Cell::new(0) };
}

/// Marks the current thread as a worker that counts its connections and spins for up to
/// `budget` when it serves only one (`ZERO`: never).
pub(crate) fn count_on_this_thread(budget: Duration) {
    OPEN.with(|o| o.set(Some(0)));
    BUDGET.with(|b| b.set((!budget.is_zero()).then_some(budget)));
}

/// Counts one open client connection on this thread while it lives.
pub(crate) struct ConnGuard(bool);

impl ConnGuard {
    pub(crate) fn new() -> Self {
        ConnGuard(OPEN.with(|o| match o.get() {
            Some(n) => {
                o.set(Some(n + 1));
                true
            }
            None => false,
        }))
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.0 {
            OPEN.with(|o| o.set(o.get().map(|n| n.saturating_sub(1))));
        }
    }
}

/// Counts one request whose response is not yet fully written, while it lives (it rides in the
/// response body, which hyper drops once the last bytes are handed to the socket).
pub(crate) struct Active;

impl Active {
    pub(crate) fn new() -> Self {
        ACTIVE.with(|f| f.set(f.get() + 1));
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.with(|f| f.set(f.get().saturating_sub(1)));
    }
}

/// The budget, when this thread serves one connection with exactly `active` requests open.
fn alone(active: usize) -> Option<Duration> {
    let b = BUDGET.with(Cell::get)?;
    (OPEN.with(Cell::get) == Some(1) && ACTIVE.with(Cell::get) == active).then_some(b)
}

/// Reads `io` without blocking until data (or EOF, or an error) arrives or `budget` is spent.
/// `None`: nothing arrived; park as usual.
fn spin_recv(io: &TcpStream, buf: &mut [u8], budget: Duration) -> Option<io::Result<usize>> {
    if buf.is_empty() {
        return None;
    }
    // tokio's sockets are non-blocking: a plain `read` returns `WouldBlock` when nothing is
    // there (tokio's own `try_read` would only consult the cached readiness).
    let sock = socket2::SockRef::from(io);
    let start = Instant::now();
    loop {
        match io::Read::read(&mut &*sock, buf) {
            Ok(n) => return Some(Ok(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(Err(e)),
        }
        if start.elapsed() >= budget {
            return None;
        }
        std::thread::yield_now();
    }
}

/// A client connection that spins briefly before parking (see the module docs).
pub(crate) struct SpinStream {
    io: TcpStream,
    _conn: ConnGuard,
}

impl SpinStream {
    pub(crate) fn new(io: TcpStream) -> Self {
        SpinStream {
            io,
            _conn: ConnGuard::new(),
        }
    }
}

impl AsyncRead for SpinStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {}
            ready => return ready,
        }
        // Only while this is the worker's one connection and no request is open.
        let Some(budget) = alone(0) else {
            return Poll::Pending;
        };
        let n = match spin_recv(&this.io, buf.initialize_unfilled(), budget) {
            None => return Poll::Pending,
            Some(Err(e)) => return Poll::Ready(Err(e)),
            Some(Ok(n)) => n,
        };
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SpinStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Spins for the upstream's answer into the spare capacity of an empty `buf`, if this thread
/// serves one connection with exactly `active` requests open (1: the only request waits).
/// `None`: nothing arrived (or spinning does not apply here); park as usual.
pub(crate) fn spin_read_buf(
    io: &TcpStream,
    buf: &mut bytes::BytesMut,
    active: usize,
) -> Option<io::Result<usize>> {
    if !buf.is_empty() {
        return None;
    }
    let budget = alone(active)?;
    buf.resize(buf.capacity(), 0);
    let r = spin_recv(io, buf, budget);
    let n = match &r {
        Some(Ok(n)) => *n,
        _ => 0,
    };
    buf.truncate(n);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    /// A connected pair: the client end (blocking std) and the accepted end (tokio).
    async fn pair() -> (std::net::TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    /// Polls one read once (a parked read would be `Pending`).
    fn poll_once(s: &mut SpinStream, out: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let mut rb = ReadBuf::new(out);
        Pin::new(s)
            .poll_read(&mut cx, &mut rb)
            .map(|r| r.map(|()| rb.filled().len()))
    }

    /// Writes `bytes` from another thread after `after`.
    fn write_later(mut c: std::net::TcpStream, after: Duration, bytes: &'static [u8]) {
        std::thread::spawn(move || {
            std::thread::sleep(after);
            c.write_all(bytes).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        });
    }

    #[tokio::test]
    async fn a_lone_connection_picks_up_bytes_that_arrive_within_the_budget_without_parking() {
        count_on_this_thread(Duration::from_secs(5));
        let (c, s) = pair().await;
        let mut s = SpinStream::new(s);
        write_later(c, Duration::from_millis(20), b"GET / HTTP/1.1\r\n");
        let mut buf = [0u8; 64];
        let t = Instant::now();
        match poll_once(&mut s, &mut buf) {
            Poll::Ready(Ok(n)) => assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\n"),
            other => panic!("expected the bytes from one poll, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_peer_closing_while_spinning_is_seen_as_end_of_stream() {
        count_on_this_thread(Duration::from_secs(5));
        let (c, s) = pair().await;
        let mut s = SpinStream::new(s);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(c);
        });
        let mut buf = [0u8; 64];
        assert!(matches!(poll_once(&mut s, &mut buf), Poll::Ready(Ok(0))));
    }

    #[tokio::test]
    async fn the_spin_ends_after_its_budget_and_the_read_then_parks_as_usual() {
        count_on_this_thread(Duration::from_millis(30));
        let (c, s) = pair().await;
        let mut s = SpinStream::new(s);
        let mut buf = [0u8; 64];
        let t = Instant::now();
        assert!(poll_once(&mut s, &mut buf).is_pending());
        assert!(t.elapsed() >= Duration::from_millis(30));
        // A parked read is woken by the reactor as before.
        write_later(c, Duration::from_millis(150), b"late");
        let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
            .await
            .unwrap();
        assert_eq!(&buf[..n], b"late");
    }

    #[tokio::test]
    async fn a_worker_with_two_connections_or_an_open_request_or_no_budget_parks_at_once() {
        let budget = Duration::from_secs(5);
        count_on_this_thread(budget);
        let (_c1, s1) = pair().await;
        let (_c2, s2) = pair().await;
        let mut s1 = SpinStream::new(s1);
        let s2 = SpinStream::new(s2);
        let mut buf = [0u8; 64];
        let t = Instant::now();
        assert!(poll_once(&mut s1, &mut buf).is_pending(), "two connections");
        drop(s2);
        let open = Active::new();
        assert!(
            poll_once(&mut s1, &mut buf).is_pending(),
            "a request is open"
        );
        drop(open);
        assert!(t.elapsed() < budget, "no read spun");
        count_on_this_thread(Duration::ZERO);
        let (_c3, s3) = pair().await;
        let mut s3 = SpinStream::new(s3);
        let t = Instant::now();
        assert!(poll_once(&mut s3, &mut buf).is_pending(), "spinning is off");
        assert!(t.elapsed() < budget);
    }

    #[tokio::test]
    async fn the_only_open_request_waits_for_its_upstream_by_spinning() {
        count_on_this_thread(Duration::from_secs(5));
        let (_client, downstream) = pair().await;
        let _conn = SpinStream::new(downstream);
        let _open = Active::new();
        let (up_peer, up) = pair().await;
        write_later(up_peer, Duration::from_millis(20), b"HTTP/1.1 200 OK\r\n");
        let mut buf = bytes::BytesMut::with_capacity(256);
        match spin_read_buf(&up, &mut buf, 1) {
            Some(Ok(n)) => assert_eq!(&buf[..n], b"HTTP/1.1 200 OK\r\n"),
            other => panic!("expected the answer without parking, got {other:?}"),
        }
        // With a second request open on the worker it does not spin.
        let _second = Active::new();
        let mut buf = bytes::BytesMut::with_capacity(256);
        assert!(spin_read_buf(&up, &mut buf, 1).is_none());
        assert!(buf.is_empty());
    }
}
