//! Connectors: one tokio task per enabled local host, feeding the [`FleetHub`] and the store.
//!
//! * llama-swap: `GET /api/version` picks the adapter (≤v235 ring vs v236+ paged activity);
//!   `GET /api/events` is followed with no read timeout (llama-swap never pings) and a `/health`
//!   liveness probe when the stream has been quiet for a while; every (re)connect reconciles
//!   activity into the store; `/api/performance?after=` is polled on an interval.
//! * llama-server: `/health`, `/props` and `/slots` polled on an interval.
//!
//! No request a connector sends can load a model: it never calls an inference route or
//! `/upstream/...`.

use super::client::{Answer, HostClient};
use super::hub::FleetHub;
use super::{ControlConfig, HostKind, HostTarget, now_ms};
use boo_fleet_core::reconcile::{Dedup, ModelEvent, reconcile};
use boo_fleet_core::wire::{
    ActivityApi, ActivityEntry, InFlightTracker, SseDecoder, SwapEvent, parse_activity_list,
    parse_event, parse_performance, parse_running, parse_server_props, parse_slots, parse_version,
};
use boo_fleet_core::{
    Delta, Liveness, LivenessInput, ModelState, NextStep, Randomness, SplitMix64,
};
use boo_telemetry_store::{HostActivity, Store};
use chrono::{DateTime, Utc};
use http_body::Body;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

/// Everything one connector task needs.
pub(crate) struct HostCtx {
    pub target: HostTarget,
    pub hub: Arc<FleetHub>,
    pub store: Option<Arc<dyn Store>>,
    pub client: HostClient,
    pub cfg: Arc<ControlConfig>,
}

pub(crate) fn ms_to_dt(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

fn dt_to_ms(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// Why a session ended.
enum Ended {
    /// Never got connected (connect / version / stream open failed).
    Failed(String),
    /// Was connected; the stream ended or a probe failed.
    Dropped(String),
}

/// Per-host connector state that survives reconnects.
struct Conn {
    ctx: HostCtx,
    live: Liveness,
    rng: SplitMix64,
    dedup: Dedup,
    /// Newest activity row seen (id, ts) (current hosts): the next reconcile's inclusive
    /// `min_id`; the overlap row proves the ids did not restart.
    last_row: Option<(u64, u64)>,
    /// `/api/performance?after=` watermark (ms).
    perf_wm: Option<u64>,
    /// Activity ids announced by events and not fetched yet (lowest, highest).
    announced: Option<(u64, u64)>,
}

impl Conn {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.ctx.target.base_url, path)
    }

    fn provider(&self) -> &str {
        &self.ctx.target.provider
    }

    async fn get(&self, path: &str) -> Result<Answer, String> {
        self.ctx
            .client
            .get(&self.url(path), &self.ctx.target.headers)
            .await
    }

    fn observe(&mut self, input: LivenessInput) -> NextStep {
        let step = self
            .live
            .step(input, now_ms(), &self.ctx.cfg.policy, self.rng.next_unit());
        let p = self.ctx.target.provider.clone();
        let live = self.live.clone();
        self.ctx.hub.apply_one(|f| f.set_liveness(&p, &live));
        step.next
    }

    async fn persist_model_events(&self, deltas: &[Delta]) {
        let Some(store) = &self.ctx.store else { return };
        let rows: Vec<_> = deltas
            .iter()
            .filter_map(ModelEvent::from_delta)
            .map(to_store_event)
            .collect();
        if rows.is_empty() {
            return;
        }
        if let Err(e) = store.insert_model_events(&rows).await {
            tracing::warn!(provider = %self.provider(), error = %e, "storing model events failed");
        }
    }

    async fn store_activity(&mut self, batch: Vec<ActivityEntry>, check_gap: bool) {
        if let Some(newest) = batch.iter().max_by_key(|e| e.id)
            && self
                .last_row
                .is_none_or(|(id, _)| newest.id >= id || check_gap)
        {
            self.last_row = Some((newest.id, newest.ts_ms));
        }
        let newest_stored = match (&self.ctx.store, check_gap) {
            (Some(store), true) => match store.last_activity().await {
                Ok(rows) => rows
                    .into_iter()
                    .find(|(p, _)| p == self.provider())
                    .map(|(_, t)| dt_to_ms(t)),
                Err(e) => {
                    tracing::warn!(provider = %self.provider(), error = %e, "reading last activity failed");
                    None
                }
            },
            _ => None,
        };
        let provider = self.ctx.target.provider.clone();
        let r = reconcile(&provider, batch, newest_stored, &mut self.dedup);
        // Each finished request restarts its model's TTL.
        for e in &r.fresh {
            let (m, t) = (e.model.clone(), e.ts_ms);
            self.ctx.hub.apply_one(|f| f.model_used(&provider, &m, t));
        }
        let Some(store) = &self.ctx.store else { return };
        if let Some(gap) = &r.gap {
            tracing::warn!(provider = %provider, newest_stored = gap.newest_stored_ts_ms,
                oldest_batch = gap.oldest_batch_ts_ms, "activity gap suspected");
            if let Err(e) = store
                .insert_model_events(&[to_store_event(gap.to_model_event())])
                .await
            {
                tracing::warn!(provider = %provider, error = %e, "storing gap event failed");
            }
        }
        if r.fresh.is_empty() {
            return;
        }
        let rows: Vec<HostActivity> = r.fresh.iter().map(|e| to_activity(&provider, e)).collect();
        if let Err(e) = store.insert_activity(&rows).await {
            tracing::warn!(provider = %provider, error = %e, "storing activity failed");
        }
    }

    /// Fetches the host's activity after a (re)connect and stores it.
    async fn reconcile(&mut self, api: ActivityApi) -> Result<(), String> {
        let batch = match api {
            ActivityApi::Ring => {
                let a = self.get("/api/metrics").await?;
                ok_status(&a, "/api/metrics")?;
                parse_activity_list(a.text()).map_err(|e| e.to_string())?
            }
            ActivityApi::Paged => {
                let (min_id, overlap) = self.last_row.unwrap_or((1, 0));
                let mut rows = self.fetch_pages(min_id).await?;
                let overlaps = rows
                    .first()
                    .is_some_and(|r| r.id == min_id && r.ts_ms == overlap);
                if self.last_row.is_some() && !overlaps {
                    // The overlap row is gone: ids restarted (host restart) or the rows were
                    // pruned. Take everything the host has; duplicates are dropped.
                    rows = self.fetch_pages(1).await?;
                }
                rows
            }
        };
        self.store_activity(batch, true).await;
        Ok(())
    }

    async fn fetch_pages(&self, min_id: u64) -> Result<Vec<ActivityEntry>, String> {
        self.fetch_range(min_id, None, CATCH_UP_PAGE).await
    }

    /// Activity rows with ids from `min_id` (to `max_id`), oldest first, `page` rows per
    /// request: each request asks for the ids after the last row of the previous one (keyset
    /// paging, so the host never skips over an offset), up to [`MAX_FETCH_ROWS`] rows.
    async fn fetch_range(
        &self,
        min_id: u64,
        max_id: Option<u64>,
        page: u32,
    ) -> Result<Vec<ActivityEntry>, String> {
        let mut out = Vec::new();
        let max = max_id.map(|m| format!("&max_id={m}")).unwrap_or_default();
        let mut from = min_id.max(1);
        while out.len() < MAX_FETCH_ROWS && max_id.is_none_or(|m| from <= m) {
            let path = format!(
                "/api/metrics/activity?min_id={from}{max}&sort=id&order=asc&limit={page}&page=1"
            );
            let a = self.get(&path).await?;
            ok_status(&a, "/api/metrics/activity")?;
            let rows = parse_activity_list(a.text()).map_err(|e| e.to_string())?;
            let full = rows.len() >= page as usize;
            let next = rows.last().map(|r| r.id + 1);
            out.extend(rows);
            match next {
                // A host that ignored `min_id` would repeat itself: stop rather than loop.
                Some(n) if full && n > from => from = n,
                _ => break,
            }
        }
        Ok(out)
    }

    async fn poll_perf(&mut self) {
        let path = match self.perf_wm {
            Some(wm) => format!(
                "/api/performance?after={}",
                boo_fleet_core::time::format_rfc3339_ms(wm)
            ),
            None => "/api/performance".to_owned(),
        };
        let a = match self.get(&path).await {
            Ok(a) if a.status == 200 => a,
            Ok(_) | Err(_) => return, // disabled (503) or transient: the event stream decides liveness
        };
        let perf = match parse_performance(a.text()) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(provider = %self.provider(), error = %e, "bad /api/performance");
                return;
            }
        };
        let Some(newest) = perf.newest_ts() else {
            return;
        };
        self.perf_wm = Some(newest);
        if let Some(sample) = perf.latest() {
            let p = self.ctx.target.provider.clone();
            self.ctx.hub.apply_one(|f| f.set_perf(&p, sample));
        }
        if let Some(store) = &self.ctx.store {
            let rows = to_perf_rows(self.provider(), &perf);
            if let Err(e) = store.insert_perf(&rows).await {
                tracing::warn!(provider = %self.provider(), error = %e, "storing perf failed");
            }
        }
    }

    async fn refresh_ttls(&self) {
        let Ok(a) = self.get("/running").await else {
            return;
        };
        let Ok(running) = parse_running(a.text()) else {
            return;
        };
        let p = self.provider();
        for r in running {
            self.ctx
                .hub
                .apply_one(|f| f.set_model_ttl(p, &r.model, r.ttl_s));
        }
    }

    async fn handle_event(&mut self, ev: SwapEvent, inflight: &mut InFlightTracker) {
        let p = self.ctx.target.provider.clone();
        match ev {
            SwapEvent::ModelStatus(_) => {
                let states = ev.local_model_states().unwrap_or_default();
                let now = now_ms();
                let deltas = self.ctx.hub.apply_many(|f| f.set_models(&p, &states, now));
                self.persist_model_events(&deltas).await;
                if states.iter().any(|(_, s)| s.is_loaded()) {
                    self.refresh_ttls().await;
                }
            }
            SwapEvent::LogData { source, data } => self.ctx.hub.push_log(&p, source, &data),
            SwapEvent::Metrics(entries) => self.store_activity(entries, false).await,
            // Fetched by the session loop, several at a time when they come fast
            // (`fetch_announced`).
            SwapEvent::Activity { id } => {
                self.announce(id, id);
            }
            SwapEvent::InFlight(i) => {
                let n = inflight.apply(&i);
                self.ctx.hub.apply_one(|f| f.set_in_flight(&p, n));
            }
            _ => {}
        }
    }

    /// Adds ids `lo..=hi` to the announced range.
    fn announce(&mut self, lo: u64, hi: u64) {
        self.announced = Some(match self.announced {
            Some((l, h)) => (l.min(lo), h.max(hi)),
            None => (lo, hi),
        });
    }

    /// Fetches and stores the activity rows announced since the last fetch. A failed fetch
    /// keeps its range for the next window (rows stored twice are dropped by the dedup).
    async fn fetch_announced(&mut self) {
        let Some((lo, hi)) = self.announced.take() else {
            return;
        };
        match self.fetch_range(lo, Some(hi), FOLLOW_PAGE).await {
            Ok(rows) => self.store_activity(rows, false).await,
            Err(e) => {
                tracing::debug!(provider = %self.provider(), error = %e, "activity fetch");
                self.announce(lo, hi);
            }
        }
    }

    /// One connected session of a llama-swap host.
    async fn swap_session(&mut self) -> Ended {
        let v = match self.get("/api/version").await {
            Ok(a) if a.status == 200 => a,
            Ok(a) => return Ended::Failed(format!("/api/version answered {}", a.status)),
            Err(e) => return Ended::Failed(e),
        };
        let version = match parse_version(v.text()) {
            Ok(v) => v,
            Err(e) => return Ended::Failed(e.to_string()),
        };
        let resp = match self
            .ctx
            .client
            .open_stream(&self.url("/api/events"), &self.ctx.target.headers)
            .await
        {
            Ok(r) if r.status() == 200 => r,
            Ok(r) => return Ended::Failed(format!("/api/events answered {}", r.status())),
            Err(e) => return Ended::Failed(e),
        };
        self.observe(LivenessInput::Connected);
        if let Err(e) = self.reconcile(version.activity_api()).await {
            tracing::warn!(provider = %self.provider(), error = %e, "activity reconcile failed");
        }
        let mut body = resp.into_body();
        let mut dec = SseDecoder::new();
        let mut inflight = InFlightTracker::default();
        let has_perf = version.has_performance();
        let mut perf_tick = tokio::time::interval(self.ctx.cfg.perf_interval);
        perf_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let quiet = self.ctx.cfg.quiet_probe_after;
        // When the announced activity rows are fetched: at once after a quiet spell (a lone
        // request's row is stored as promptly as ever), else one batch window after the last
        // fetch, so a busy host costs at most one fetch (a few small pages) per window.
        let mut fetch_at: Option<tokio::time::Instant> = None;
        let mut last_fetch: Option<tokio::time::Instant> = None;
        // When the event stream may be read again (see `ControlConfig::event_batch`).
        let mut read_after: Option<tokio::time::Instant> = None;
        let event_batch = self.ctx.cfg.event_batch;
        loop {
            if self.announced.is_some() && fetch_at.is_none() {
                let now = tokio::time::Instant::now();
                fetch_at = Some(match last_fetch {
                    Some(t) => (t + self.ctx.cfg.activity_batch).max(now),
                    None => now,
                });
            }
            tokio::select! {
                () = tokio::time::sleep_until(fetch_at.unwrap_or_else(tokio::time::Instant::now)), if fetch_at.is_some() => {
                    fetch_at = None;
                    last_fetch = Some(tokio::time::Instant::now());
                    self.fetch_announced().await;
                }
                frames = paced_frames(&mut body, read_after, quiet) => {
                    let Ok(frames) = frames else {
                        // Silent for a while: llama-swap sends no pings, so ask /health.
                        match self.get("/health").await {
                            Ok(a) if a.status == 200 => {
                                self.observe(LivenessInput::Event);
                                continue;
                            }
                            Ok(a) => return Ended::Dropped(format!("/health answered {}", a.status)),
                            Err(e) => return Ended::Dropped(e),
                        }
                    };
                    if !event_batch.is_zero() {
                        // Away until the window ends: what arrives meanwhile wakes no one.
                        body.away(true);
                    }
                    for frame in frames {
                        if let Err(ended) = self.take_frame(frame, &mut dec, &mut inflight).await {
                            return ended;
                        }
                    }
                    read_after = (!event_batch.is_zero())
                        .then(|| tokio::time::Instant::now() + event_batch);
                }
                _ = perf_tick.tick(), if has_perf => self.poll_perf().await,
            }
        }
    }

    /// Handles one frame of the event stream; `Err` ends the session.
    async fn take_frame(
        &mut self,
        frame: FrameOf<crate::wire::WireBody>,
        dec: &mut SseDecoder,
        inflight: &mut InFlightTracker,
    ) -> Result<(), Ended> {
        let frame = match frame {
            None => return Err(Ended::Dropped("event stream ended".into())),
            Some(Err(e)) => return Err(Ended::Dropped(format!("event stream: {e}"))),
            Some(Ok(f)) => f,
        };
        let Ok(data) = frame.into_data() else {
            return Ok(());
        };
        let msgs = match dec.push(&data) {
            Ok(m) => m,
            Err(e) => return Err(Ended::Dropped(format!("event stream: {e}"))),
        };
        if msgs.is_empty() {
            return Ok(());
        }
        self.observe(LivenessInput::Event);
        for m in msgs {
            match parse_event(&m.data) {
                Ok(ev) => self.handle_event(ev, inflight).await,
                Err(e) => {
                    tracing::debug!(provider = %self.provider(), error = %e, "unparsed event")
                }
            }
        }
        Ok(())
    }

    /// One poll of a llama-server host.
    async fn server_poll(&mut self) -> Result<(), String> {
        let p = self.ctx.target.provider.clone();
        let health = self.get("/health").await?;
        let state = ModelState::from_llama_server_health(health.status);
        if !matches!(health.status, 200 | 503) {
            return Err(format!("/health answered {}", health.status));
        }
        self.observe(LivenessInput::Event);
        let model = match self.get("/props").await {
            Ok(a) if a.status == 200 => parse_server_props(a.text())
                .ok()
                .and_then(|pr| pr.model_id()),
            _ => None,
        };
        if let Some(model) = model.or_else(|| self.ctx.target.models.first().cloned()) {
            let now = now_ms();
            let deltas = self
                .ctx
                .hub
                .apply_many(|f| f.set_models(&p, &[(model, state)], now));
            self.persist_model_events(&deltas).await;
        }
        if let Ok(a) = self.get("/slots").await
            && a.status == 200
            && let Ok(s) = parse_slots(a.text())
        {
            self.ctx.hub.apply_one(|f| f.set_in_flight(&p, s.busy));
        }
        Ok(())
    }

    async fn sleep_until(&self, next: NextStep) {
        if let Some(at) = next.at() {
            let wait = at.saturating_sub(now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }
}

/// One frame of a body, as `Body::frame` gives it (`None`: the body ended).
type FrameOf<B> = Option<Result<hyper::body::Frame<<B as Body>::Data>, <B as Body>::Error>>;

/// Rows per `/api/metrics/activity` request while following a host (the rows its `activity`
/// events announced). A host builds a page in one go (fleet-sim on its only thread, about
/// 7 µs per row), so one 999-row page held up its proxying for ~7 ms; small pages keep every
/// pause under a millisecond at the same total work.
const FOLLOW_PAGE: u32 = 100;
/// Rows per request of the catch-up after a (re)connect.
const CATCH_UP_PAGE: u32 = 999;
/// At most this many rows per fetch (the catch-up of a host with a long history).
const MAX_FETCH_ROWS: usize = 99_900;

/// How many queued bytes wake the connector while it is away between event windows: more
/// than a busy host sends in one window, so in practice none.
const AWAY_WAKE_BYTES: u32 = 1 << 20;

/// A body read in windows, whose reader can ask not to be woken while it is away.
trait Paced: Body + Unpin {
    /// `true`: the reader comes back on its own when its window ends, so data arriving
    /// meanwhile should not wake a runtime thread; `false`: it waits for data again.
    fn away(&self, away: bool);
}

impl Paced for crate::wire::WireBody {
    /// llama-swap sends about five events per proxied request, each its own TCP segment; while
    /// away, the socket's wake threshold is raised ([`crate::wire::set_wake_threshold`]).
    fn away(&self, away: bool) {
        self.set_wake_threshold(if away { AWAY_WAKE_BYTES } else { 1 });
    }
}

/// The event stream's next batch: waits until `after` (if set), then up to `quiet` for a
/// frame, then takes every further frame that is already there without waiting (stopping
/// after the end or an error). `Err`: `quiet` passed without a frame.
async fn paced_frames<B: Paced>(
    body: &mut B,
    after: Option<tokio::time::Instant>,
    quiet: Duration,
) -> Result<Vec<FrameOf<B>>, tokio::time::error::Elapsed> {
    if let Some(t) = after {
        tokio::time::sleep_until(t).await;
        body.away(false);
    }
    let first = tokio::time::timeout(quiet, body.frame()).await?;
    let mut out = Vec::with_capacity(4);
    let mut more = matches!(first, Some(Ok(_)));
    out.push(first);
    while more {
        match futures::FutureExt::now_or_never(body.frame()) {
            Some(f) => {
                more = matches!(f, Some(Ok(_)));
                out.push(f);
            }
            None => more = false,
        }
    }
    Ok(out)
}

/// Runs one host's connector until the task is aborted.
pub(crate) async fn run(ctx: HostCtx, seed: u64) {
    let perf_wm = match &ctx.store {
        Some(s) => s
            .perf_watermark(&ctx.target.provider)
            .await
            .ok()
            .flatten()
            .map(dt_to_ms),
        None => None,
    };
    let live = ctx
        .hub
        .host(&ctx.target.provider)
        .map(|h| Liveness::restored(h.last_seen_at))
        .unwrap_or_default();
    let mut c = Conn {
        ctx,
        live,
        rng: SplitMix64::new(seed),
        dedup: Dedup::new(16_384),
        last_row: None,
        perf_wm,
        announced: None,
    };
    match c.ctx.target.kind {
        HostKind::LlamaSwap => loop {
            let ended = c.swap_session().await;
            let why = match ended {
                Ended::Failed(e) | Ended::Dropped(e) => e,
            };
            tracing::info!(provider = %c.provider(), reason = %why, "host connection lost");
            let next = c.observe(LivenessInput::Error);
            c.sleep_until(next).await;
        },
        HostKind::LlamaServer => loop {
            match c.server_poll().await {
                Ok(()) => tokio::time::sleep(c.ctx.cfg.server_poll_interval).await,
                Err(e) => {
                    tracing::info!(provider = %c.provider(), reason = %e, "llama-server poll failed");
                    let next = c.observe(LivenessInput::Error);
                    c.sleep_until(next).await;
                }
            }
        },
    }
}

fn ok_status(a: &Answer, what: &str) -> Result<(), String> {
    if a.status == 200 {
        Ok(())
    } else {
        Err(format!("{what} answered {}", a.status))
    }
}

fn to_activity(provider: &str, e: &ActivityEntry) -> HostActivity {
    let i = |v: Option<u64>| v.and_then(|x| i64::try_from(x).ok());
    HostActivity {
        provider_id: provider.to_owned(),
        upstream_id: i64::try_from(e.id).unwrap_or(i64::MAX),
        ts: ms_to_dt(e.ts_ms),
        model: e.model.clone(),
        path: e.req_path.clone(),
        status: e.resp_status_code,
        duration_ms: e.duration_ms.map(|d| d as f64),
        prompt_tokens: i(e.input_tokens),
        cached_tokens: i(e.cache_tokens),
        completion_tokens: i(e.output_tokens),
        prompt_tps: e.prompt_per_second,
        gen_tps: e.tokens_per_second,
        has_capture: e.has_capture,
    }
}

pub(crate) fn to_store_event(e: ModelEvent) -> boo_telemetry_store::ModelEvent {
    boo_telemetry_store::ModelEvent {
        provider_id: e.provider,
        model: e.model,
        state: e.state,
        ts: ms_to_dt(e.ts_ms),
        detail: (!e.detail.is_null()).then_some(e.detail),
    }
}

/// One store row per sample time: `gpu` holds fleet-core `GpuSample`s (so a restart can rebuild
/// the latest reading), `sys` the raw system reading.
fn to_perf_rows(
    provider: &str,
    perf: &boo_fleet_core::wire::Performance,
) -> Vec<boo_telemetry_store::PerfSample> {
    let mut times: Vec<u64> = perf
        .gpu
        .iter()
        .map(|g| g.ts_ms)
        .chain(perf.sys.iter().map(|(t, _)| *t))
        .collect();
    times.sort_unstable();
    times.dedup();
    times
        .into_iter()
        .map(|t| boo_telemetry_store::PerfSample {
            provider_id: provider.to_owned(),
            ts: ms_to_dt(t),
            gpu: serde_json::to_value(perf.gpu.iter().filter(|g| g.ts_ms == t).collect::<Vec<_>>())
                .unwrap_or_default(),
            sys: perf
                .sys
                .iter()
                .find(|(st, _)| *st == t)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::channel::mpsc;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use std::convert::Infallible;

    type Tx = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;
    type TestBody = StreamBody<mpsc::UnboundedReceiver<Result<Frame<Bytes>, Infallible>>>;

    impl Paced for TestBody {
        fn away(&self, _away: bool) {}
    }

    /// Over TCP: events sent while the connector is away arrive with the next window's read
    /// (the window's end lowers the wake threshold again, or the read would wait forever).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn events_sent_while_away_are_read_when_the_window_ends() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api/events", l.local_addr().unwrap());
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut head = vec![0u8; 4096];
            let _ = s.read(&mut head).await.unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            go_rx.await.unwrap();
            for ev in ["a", "b"] {
                let line = format!("event:message\ndata:{ev}\n\n");
                s.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let client = super::super::client::HostClient::new(Duration::from_secs(5));
        let resp = client.open_stream(&url, &[]).await.unwrap();
        let mut b = resp.into_body();
        b.away(true);
        let after = tokio::time::Instant::now() + Duration::from_millis(300);
        go_tx.send(()).unwrap();
        let t0 = std::time::Instant::now();
        let got = paced_frames(&mut b, Some(after), Duration::from_secs(5))
            .await
            .expect("no events after the window");
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "read late: {:?}",
            t0.elapsed()
        );
        let text: String = got
            .into_iter()
            .filter_map(|f| f.and_then(Result::ok)?.into_data().ok())
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .collect();
        assert_eq!(text, "event:message\ndata:a\n\nevent:message\ndata:b\n\n");
        server.abort();
    }

    fn body() -> (Tx, TestBody) {
        let (tx, rx) = mpsc::unbounded();
        (tx, StreamBody::new(rx))
    }

    fn send(tx: &Tx, s: &'static str) {
        tx.unbounded_send(Ok(Frame::data(Bytes::from_static(s.as_bytes()))))
            .unwrap();
    }

    fn texts(frames: &[FrameOf<TestBody>]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f {
                Some(Ok(f)) => String::from_utf8_lossy(f.data_ref().unwrap()).into_owned(),
                Some(Err(e)) => match *e {},
                None => "<end>".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn events_that_arrived_meanwhile_are_taken_as_one_batch() {
        let (tx, mut b) = body();
        for s in ["a", "b", "c"] {
            send(&tx, s);
        }
        let got = paced_frames(&mut b, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(texts(&got), ["a", "b", "c"]);
        // The end of the stream is part of the batch it came with.
        send(&tx, "d");
        drop(tx);
        let got = paced_frames(&mut b, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(texts(&got), ["d", "<end>"]);
    }

    #[tokio::test]
    async fn the_next_read_waits_for_its_window_then_takes_everything_that_came() {
        let (tx, mut b) = body();
        let window = Duration::from_millis(200);
        let after = tokio::time::Instant::now() + window;
        let t0 = std::time::Instant::now();
        let sender = tokio::spawn(async move {
            send(&tx, "x");
            tokio::time::sleep(Duration::from_millis(40)).await;
            send(&tx, "y");
            tokio::time::sleep(Duration::from_secs(2)).await;
            send(&tx, "z");
            tx
        });
        let got = paced_frames(&mut b, Some(after), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(t0.elapsed() >= window, "read before the window ended");
        assert_eq!(texts(&got), ["x", "y"]);
        // A frame that comes after a quiet spell (no window pending) is taken at once.
        let got = paced_frames(&mut b, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(texts(&got), ["z"]);
        drop(sender.await.unwrap());
    }

    #[tokio::test]
    async fn a_silent_stream_times_out_after_the_quiet_period() {
        let (_tx, mut b) = body();
        let t0 = std::time::Instant::now();
        assert!(
            paced_frames(&mut b, None, Duration::from_millis(50))
                .await
                .is_err()
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }
}
