//! Accept loop: HTTP/1.1 keep-alive and h2c (hyper-util auto), `TCP_NODELAY`, graceful shutdown.
//!
//! Two ways to run connections:
//! - [`serve`]: every connection is a task on the caller's runtime;
//! - [`serve_workers`] (thread-per-core): a dedicated accept thread (its own current-thread
//!   runtime, so a busy caller runtime never leaves the backlog unserved) hands each connection
//!   (round robin) to one of N worker threads, each running its own current-thread
//!   runtime and its own upstream connection pools (see `upstream::WorkerClients`). The
//!   downstream connection, the request handler and the pooled upstream connection then share
//!   one thread, so passing a request or a body chunk between them is a local queue push instead
//!   of a cross-thread futex wake-up (about 40 % of the gateway's CPU time on a multi-thread
//!   runtime). Background work (telemetry writer, pollers, control plane) stays on the caller's
//!   runtime.

use crate::{GatewayError, Slot, current};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder
}

/// Serves one accepted connection as a task on the current runtime.
fn spawn_conn(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    slot: &Slot,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let slot = slot.clone();
    let svc = service_fn(move |req| {
        // The current generation (hot reload swaps it; this request keeps the one it got).
        let inner = current(&slot);
        let active = crate::spin::Active::new();
        async move {
            let mut r = inner.handle(req, peer).await;
            r.body_mut().hold(active);
            Ok::<_, Infallible>(r)
        }
    });
    let conn = builder
        .serve_connection(TokioIo::new(crate::spin::SpinStream::new(stream)), svc)
        .into_owned();
    let fut = graceful.watch(conn);
    tokio::spawn(async move {
        let mut fut = std::pin::pin!(fut);
        // Requests ending in a poll are recorded after it, once hyper wrote their last bytes.
        let _ = std::future::poll_fn(|cx| {
            let _after = crate::proxy::AfterWrite::scope();
            fut.as_mut().poll(cx)
        })
        .await;
    });
}

/// Accepts until `shutdown` completes; `on_accept` takes each connection.
async fn accept_loop<F>(
    listener: &TcpListener,
    shutdown: F,
    mut on_accept: impl FnMut(TcpStream, SocketAddr),
) where
    F: Future<Output = ()> + Send,
{
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Transient (EMFILE, ECONNABORTED): back off briefly, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                on_accept(stream, peer);
            }
        }
    }
}

pub(crate) async fn serve<F>(
    slot: Slot,
    listener: TcpListener,
    shutdown: F,
) -> Result<(), GatewayError>
where
    F: Future<Output = ()> + Send,
{
    let builder = builder();
    let graceful = GracefulShutdown::new();
    accept_loop(&listener, shutdown, |stream, peer| {
        spawn_conn(&builder, &graceful, &slot, stream, peer);
    })
    .await;
    drop(listener);
    let inner = current(&slot);
    inner.shutting_down.store(true, Ordering::Relaxed);
    tracing::info!("shutting down: waiting for in-flight requests");
    let grace = inner.cfg.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
    Ok(())
}

/// A connection handed to a worker thread.
type Handoff = (std::net::TcpStream, SocketAddr);

pub(crate) async fn serve_workers<F>(
    slot: Slot,
    listener: TcpListener,
    workers: usize,
    shutdown: F,
) -> Result<(), GatewayError>
where
    F: Future<Output = ()> + Send,
{
    let workers = workers.max(1);
    let slice =
        crate::slice::slice_from_env(&|k| std::env::var(k).ok()).map_err(GatewayError::Config)?;
    let pins = if current(&slot).cfg.pin_workers {
        let cpus = crate::affinity::allowed_cpus();
        let plan = cpus
            .as_deref()
            .and_then(|cpus| crate::affinity::plan(workers, cpus));
        if plan.is_none() {
            tracing::warn!(
                workers,
                allowed_cpus = cpus.map(|c| c.len()),
                "--pin-workers needs one worker per allowed CPU; workers not pinned"
            );
        }
        plan
    } else {
        None
    };
    let mut senders: Vec<mpsc::UnboundedSender<Handoff>> = Vec::with_capacity(workers);
    let mut done: Vec<oneshot::Receiver<()>> = Vec::with_capacity(workers);
    for i in 0..workers {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| GatewayError::Config(format!("cannot start worker runtime: {e}")))?;
        let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
        let (done_tx, done_rx) = oneshot::channel();
        let slot = slot.clone();
        let cpu = pins.as_ref().map(|p| p[i]);
        std::thread::Builder::new()
            .name(format!("boo-gw-{i}"))
            .spawn(move || {
                crate::upstream::set_worker(i + 1);
                if let Some(cpu) = cpu {
                    crate::affinity::pin_current_thread(cpu);
                }
                if let Some(us) = slice {
                    crate::slice::set_current_thread_slice(us);
                }
                rt.block_on(worker(slot, rx));
                // Remaining tasks (idle pooled connections) are dropped with the runtime.
                drop(rt);
                let _ = done_tx.send(());
            })
            .map_err(|e| GatewayError::Config(format!("cannot start worker thread: {e}")))?;
        senders.push(tx);
        done.push(done_rx);
    }
    tracing::debug!(workers, pinned_to = ?pins, "serving on worker threads");
    // Accepting runs on its own thread and runtime, so a busy or starved caller runtime (which
    // also runs the telemetry writer, pollers and the control plane) can never leave the listen
    // backlog unserved.
    let std_listener = listener.into_std().map_err(|e| {
        GatewayError::Config(format!("cannot move the listener to its thread: {e}"))
    })?;
    let accept_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| GatewayError::Config(format!("cannot start the accept runtime: {e}")))?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (accepted_tx, accepted_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("boo-gw-accept".to_owned())
        .spawn(move || {
            accept_rt.block_on(async move {
                let listener = match TcpListener::from_std(std_listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot register the listener; not accepting");
                        return;
                    }
                };
                let mut next = 0usize;
                let stop = async move {
                    let _ = stop_rx.await;
                };
                accept_loop(&listener, stop, |stream, peer| {
                    // Deregister from this runtime; the worker registers it with its own reactor.
                    let std_stream = match stream.into_std() {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot hand a connection to a worker");
                            return;
                        }
                    };
                    let w = next % senders.len();
                    next = next.wrapping_add(1);
                    if senders[w].send((std_stream, peer)).is_err() {
                        tracing::warn!(worker = w, "worker thread is gone; connection dropped");
                    }
                })
                .await;
                // Dropping the listener stops accepting; dropping `senders` (moved in here)
                // closes the hand-off channels, which tells every worker to drain.
                drop(listener);
                drop(senders);
            });
            let _ = accepted_tx.send(());
        })
        .map_err(|e| GatewayError::Config(format!("cannot start the accept thread: {e}")))?;
    shutdown.await;
    let inner = current(&slot);
    inner.shutting_down.store(true, Ordering::Relaxed);
    tracing::info!("shutting down: waiting for in-flight requests");
    let _ = stop_tx.send(());
    let _ = accepted_rx.await;
    let grace = inner.cfg.shutdown_grace + std::time::Duration::from_secs(1);
    let all = futures::future::join_all(done);
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(?grace, "workers did not stop within the grace period");
    }
    Ok(())
}

/// One worker thread: serves the connections it is handed until the channel closes, then lets
/// in-flight requests finish for up to the grace period.
async fn worker(slot: Slot, mut rx: mpsc::UnboundedReceiver<Handoff>) {
    crate::spin::count_on_this_thread(current(&slot).cfg.worker_spin);
    let builder = builder();
    let graceful = GracefulShutdown::new();
    // Keeps a near timer armed on this runtime. tokio wakes its own driver (an eventfd write
    // plus an extra epoll round trip) whenever a timer is armed that is earlier than every
    // armed one; hyper arms a header-read timer per request and the proxy an idle timer per
    // response, so without a nearer timer nearly every request paid that wake-up. Ticking
    // twice a second costs two wake-ups a second instead.
    tokio::spawn(async {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
        }
    });
    while let Some((s, peer)) = rx.recv().await {
        match TcpStream::from_std(s) {
            Ok(stream) => spawn_conn(&builder, &graceful, &slot, stream, peer),
            Err(e) => tracing::warn!(error = %e, "cannot register a handed-off connection"),
        }
    }
    let grace = current(&slot).cfg.shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "grace period over; closing remaining connections");
    }
}
