//! The engine: safety checks (lease, takeover rule), model load, lanes, cells, load modes and
//! pollution tracking. See [`Engine`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use boo_fleet_core::{HostAccess, Lane, Lease, Randomness, SplitMix64};
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};

use crate::error::BenchError;
use crate::io::{BenchClient, BenchRequest, FleetWatch, ModelLoader, ProgressSink};
use crate::metrics::cell_metrics;
use crate::model::{
    CellResult, ClientInfo, HostKind, LoadReport, Phase, Pollution, Progress,
    RESULT_SCHEMA_VERSION, RunResult, RunStatus, Sample, StopReason, Target, TargetResult,
};
use crate::prompt::PromptBook;
use crate::sched::{LaneJob, run_lanes};
use crate::suite::{Api, CachePolicy, CellLoad, CellSpec, LoadMode, Suite};

/// Lease purpose used for bench runs.
pub const LEASE_PURPOSE: &str = "bench";

/// Engine settings (defaults in [`EngineOptions::default`]).
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The takeover rule looks this far back for foreign traffic (default 120 s).
    pub foreign_window: Duration,
    /// Parallel runs per cloud provider without its own budget (default 4).
    pub cloud_budget: u32,
    /// Per-request timeout (default 600 s).
    pub request_timeout: Duration,
    /// Keep raw samples in [`RunResult::samples`] (default true).
    pub keep_samples: bool,
    /// Renew host leases this often while running (default 10 s).
    pub lease_renew_every: Duration,
    /// At most one progress event per target this often, besides phase changes (default 250 ms).
    pub progress_every: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            foreign_window: Duration::from_secs(120),
            cloud_budget: 4,
            request_timeout: Duration::from_secs(600),
            keep_samples: true,
            lease_renew_every: Duration::from_secs(10),
            progress_every: Duration::from_millis(250),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Run id (unique; also the lease holder `bench:<id>` and the [`crate::RUN_HEADER`] value).
    pub id: String,
    /// The suite (validated again by [`Engine::prepare`]).
    pub suite: Suite,
    /// Targets, unique by id.
    pub targets: Vec<Target>,
    /// Run even if the host shows recent foreign traffic.
    pub takeover: bool,
}

/// Wall clock in ms since the Unix epoch (for leases and result timestamps).
pub type WallClock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

struct Inner {
    client: Arc<dyn BenchClient>,
    access: Arc<dyn HostAccess + Send + Sync>,
    loader: Arc<dyn ModelLoader>,
    watch: Arc<dyn FleetWatch>,
    opts: EngineOptions,
    now_ms: WallClock,
}

/// The benchmark engine. Cheap to clone; one per process is enough.
///
/// A run is [`Engine::prepare`]d (leases acquired, takeover rule checked: the errors the API
/// maps to 409) and then [`PreparedRun::execute`]d (model load, cells, pollution tracking);
/// [`Engine::run`] does both.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over a client, the host-access leases, a model loader and a fleet watch.
    pub fn new(
        client: Arc<dyn BenchClient>,
        access: Arc<dyn HostAccess + Send + Sync>,
        loader: Arc<dyn ModelLoader>,
        watch: Arc<dyn FleetWatch>,
    ) -> Engine {
        Engine {
            inner: Arc::new(Inner {
                client,
                access,
                loader,
                watch,
                opts: EngineOptions::default(),
                now_ms: Arc::new(system_ms),
            }),
        }
    }

    fn map(self, f: impl FnOnce(&mut Inner)) -> Engine {
        let mut inner = match Arc::try_unwrap(self.inner) {
            Ok(i) => i,
            Err(shared) => Inner {
                client: Arc::clone(&shared.client),
                access: Arc::clone(&shared.access),
                loader: Arc::clone(&shared.loader),
                watch: Arc::clone(&shared.watch),
                opts: shared.opts.clone(),
                now_ms: Arc::clone(&shared.now_ms),
            },
        };
        f(&mut inner);
        Engine {
            inner: Arc::new(inner),
        }
    }

    /// Replaces the options.
    pub fn with_options(self, opts: EngineOptions) -> Engine {
        self.map(|i| i.opts = opts)
    }

    /// Replaces the wall clock (ms since the epoch) used for leases and timestamps.
    pub fn with_wall_clock(self, now_ms: WallClock) -> Engine {
        self.map(|i| i.now_ms = now_ms)
    }

    /// The options in use.
    pub fn options(&self) -> &EngineOptions {
        &self.inner.opts
    }

    /// Validates the request, acquires one [`HostAccess`] lease per provider (holder
    /// `bench:<id>`, purpose `bench`) and applies the takeover rule. Leases are released when
    /// the returned [`PreparedRun`] is dropped or finishes.
    ///
    /// # Errors
    /// [`BenchError::InvalidSuite`] / [`BenchError::InvalidRun`] for bad input,
    /// [`BenchError::HostBusy`] when a lease is held by someone else,
    /// [`BenchError::RequiresConfirmation`] when a local host served foreign traffic within
    /// [`EngineOptions::foreign_window`] and `takeover` is false (also when that cannot be
    /// determined). Cloud targets skip this rule.
    pub async fn prepare(&self, req: RunRequest) -> Result<PreparedRun, BenchError> {
        req.suite.validate()?;
        let bad = |field: &str, problem: String| BenchError::InvalidRun {
            field: field.to_owned(),
            problem,
        };
        if req.id.trim().is_empty() || req.id.len() > 128 {
            return Err(bad("id", "must be 1–128 characters".into()));
        }
        if req.targets.is_empty() {
            return Err(bad("targets", "at least one target is required".into()));
        }
        let mut ids = BTreeSet::new();
        for (i, t) in req.targets.iter().enumerate() {
            if t.id.is_empty() || t.provider.is_empty() || t.model.is_empty() {
                return Err(bad(
                    &format!("targets[{i}]"),
                    "id, provider and model must not be empty".into(),
                ));
            }
            if !ids.insert(t.id.as_str()) {
                return Err(bad(
                    &format!("targets[{i}].id"),
                    format!("duplicate target `{}`", t.id),
                ));
            }
        }
        let holder = format!("bench:{}", req.id);
        let prepared = PreparedRun {
            inner: Arc::clone(&self.inner),
            leases: Mutex::new(Vec::new()),
            cancel: CancelHandle::default(),
            lost: Mutex::new(BTreeSet::new()),
            req,
        };
        let mut providers: Vec<&Target> = Vec::new();
        for t in &prepared.req.targets {
            if !providers.iter().any(|p| p.provider == t.provider) {
                providers.push(t);
            }
        }
        let now = (self.inner.now_ms)();
        for t in &providers {
            match self
                .inner
                .access
                .acquire(&t.provider, LEASE_PURPOSE, &holder, now)
            {
                Ok(l) => prepared.lock_leases().push(l),
                Err(d) => {
                    return Err(BenchError::HostBusy {
                        provider: t.provider.clone(),
                        reason: d.reason,
                        held_by: d.held_by.map(Box::new),
                    });
                }
            }
        }
        if !prepared.req.takeover {
            let window = self.inner.opts.foreign_window;
            // The takeover rule protects local hosts (one GPU, shared with live chats); cloud
            // APIs are shared by design and are only watched for pollution.
            for t in providers.iter().filter(|t| t.lane == Lane::Local) {
                // Unknown traffic counts as traffic: refuse unless takeover.
                let n = self
                    .inner
                    .watch
                    .recent_foreign_requests(t, window)
                    .await
                    .unwrap_or(u64::MAX);
                if n > 0 {
                    return Err(BenchError::RequiresConfirmation {
                        provider: t.provider.clone(),
                        requests: n,
                        window_s: window.as_secs(),
                    });
                }
            }
        }
        Ok(prepared)
    }

    /// [`Engine::prepare`] then [`PreparedRun::execute`].
    ///
    /// # Errors
    /// As [`Engine::prepare`]; failures after that are reported inside the [`RunResult`].
    pub async fn run(
        &self,
        req: RunRequest,
        progress: &dyn ProgressSink,
    ) -> Result<RunResult, BenchError> {
        Ok(self.prepare(req).await?.execute(progress).await)
    }
}

/// Stops a running [`PreparedRun::execute`]: no new requests start, in-flight requests are
/// abandoned, the current cell ends as `cancelled` and the remaining cells and targets are
/// skipped; the result still comes back (status `cancelled`) and the leases are released.
#[derive(Debug, Clone)]
pub struct CancelHandle(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for CancelHandle {
    fn default() -> Self {
        CancelHandle(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl CancelHandle {
    /// Requests cancellation (idempotent).
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once cancelled.
    async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

/// A run that holds its leases and passed the takeover rule. Dropping it releases the leases.
pub struct PreparedRun {
    inner: Arc<Inner>,
    leases: Mutex<Vec<Lease>>,
    req: RunRequest,
    cancel: CancelHandle,
    lost: Mutex<BTreeSet<String>>,
}

impl std::fmt::Debug for PreparedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRun")
            .field("id", &self.req.id)
            .field("leases", &self.leases())
            .finish_non_exhaustive()
    }
}

impl Drop for PreparedRun {
    fn drop(&mut self) {
        for l in self.lock_leases().drain(..) {
            self.inner.access.release(&l);
        }
    }
}

/// Per-target state shared by its cells.
struct TargetRun<'a> {
    run: &'a PreparedRun,
    target: &'a Target,
    prompts: PromptBook,
    origin: Instant,
    progress: &'a dyn ProgressSink,
    cells_total: u32,
    seq: std::sync::atomic::AtomicU64,
    last_renew: Mutex<Instant>,
    lease_lost: std::sync::atomic::AtomicBool,
}

impl PreparedRun {
    fn lock_leases(&self) -> std::sync::MutexGuard<'_, Vec<Lease>> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_lost(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.lost
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The run id.
    pub fn id(&self) -> &str {
        &self.req.id
    }

    /// A handle that cancels this run while [`PreparedRun::execute`] runs.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// The leases held (one per provider).
    pub fn leases(&self) -> Vec<Lease> {
        self.lock_leases().clone()
    }

    /// Renews the lease on `provider`; false when it was lost (now or earlier).
    fn renew(&self, provider: &str) -> bool {
        if self.lock_lost().contains(provider) {
            return false;
        }
        let now = (self.inner.now_ms)();
        let mut g = self.lock_leases();
        let Some(l) = g.iter_mut().find(|l| l.provider == provider) else {
            return false;
        };
        match self.inner.access.renew(l, now) {
            Ok(n) => {
                *l = n;
                true
            }
            Err(_) => false,
        }
    }

    /// Runs every target through the lanes and returns the result. Never fails as a whole: a
    /// target that cannot run is `Failed` with its error; the leases are released at the end.
    pub async fn execute(self, progress: &dyn ProgressSink) -> RunResult {
        let origin = Instant::now();
        let started_at_ms = (self.inner.now_ms)();
        let jobs: Vec<LaneJob> = self
            .req
            .targets
            .iter()
            .map(|t| LaneJob {
                provider: t.provider.clone(),
                lane: t.lane,
                budget: t.cloud_budget,
            })
            .collect();
        let this = &self;
        let outs = run_lanes(
            &jobs,
            self.inner.opts.cloud_budget,
            |i| {
                progress.progress(&Progress {
                    run_id: this.req.id.clone(),
                    target: this.req.targets[i].id.clone(),
                    cell: String::new(),
                    cell_index: 0,
                    cells_total: 0,
                    done: 0,
                    total: 0,
                    errors: 0,
                    current_tps: 0.0,
                    phase: Phase::Queued,
                });
            },
            |i| this.run_target(i, origin, progress),
        );
        // Keep every lease alive for the whole run (model loads can outlast a lease's TTL);
        // a lease that cannot be renewed makes its targets fail at the next check.
        let renew_every = self.inner.opts.lease_renew_every;
        let renewer = async {
            loop {
                tokio::time::sleep(renew_every).await;
                let providers: Vec<String> =
                    self.leases().into_iter().map(|l| l.provider).collect();
                for p in providers {
                    if !self.renew(&p) {
                        self.lock_lost().insert(p);
                    }
                }
            }
        };
        let outs = tokio::select! {
            outs = outs => outs,
            () = renewer => unreachable!("the renewer never ends"),
        };
        let mut targets = Vec::with_capacity(outs.len());
        let mut samples = Vec::new();
        let mut sizing = Vec::new();
        for (t, s, z) in outs {
            targets.push(t);
            samples.extend(s);
            sizing.push(z);
        }
        let status = if targets.iter().all(|t| t.status == RunStatus::Completed) {
            RunStatus::Completed
        } else if targets.iter().any(|t| t.status == RunStatus::Failed) {
            RunStatus::Failed
        } else {
            RunStatus::Cancelled
        };
        let pollution: Vec<Pollution> = targets
            .iter()
            .flat_map(|t| t.pollution.iter().cloned())
            .collect();
        let result = RunResult {
            schema_version: RESULT_SCHEMA_VERSION,
            id: self.req.id.clone(),
            suite: self.req.suite.clone(),
            status,
            polluted: targets.iter().any(|t| t.polluted),
            pollution,
            concurrent_foreign_requests: targets
                .iter()
                .map(|t| t.concurrent_foreign_requests)
                .sum(),
            targets,
            started_at_ms,
            finished_at_ms: (self.inner.now_ms)(),
            samples: if self.inner.opts.keep_samples {
                samples
            } else {
                Vec::new()
            },
            client: ClientInfo {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                prompt_sizing: sizing,
            },
        };
        progress.progress(&Progress {
            run_id: self.req.id.clone(),
            target: String::new(),
            cell: String::new(),
            cell_index: 0,
            cells_total: 0,
            done: 0,
            total: 0,
            errors: 0,
            current_tps: 0.0,
            phase: Phase::Finished,
        });
        result
    }

    fn event(&self, target: &Target, phase: Phase) -> Progress {
        Progress {
            run_id: self.req.id.clone(),
            target: target.id.clone(),
            cell: String::new(),
            cell_index: 0,
            cells_total: 0,
            done: 0,
            total: 0,
            errors: 0,
            current_tps: 0.0,
            phase,
        }
    }

    async fn run_target(
        &self,
        i: usize,
        origin: Instant,
        progress: &dyn ProgressSink,
    ) -> (TargetResult, Vec<Sample>, String) {
        let target = &self.req.targets[i];
        let started_at_ms = (self.inner.now_ms)();
        let mut res = TargetResult {
            target: target.clone(),
            status: RunStatus::Failed,
            error: None,
            load: LoadReport::default(),
            cells: Vec::new(),
            polluted: false,
            pollution: Vec::new(),
            concurrent_foreign_requests: 0,
            started_at_ms,
            finished_at_ms: started_at_ms,
        };
        let fail = |mut res: TargetResult, e: String| {
            res.error = Some(e);
            res.finished_at_ms = (self.inner.now_ms)();
            (res, Vec::new(), String::new())
        };
        if self.cancel.is_cancelled() {
            res.status = RunStatus::Cancelled;
            res.finished_at_ms = started_at_ms;
            return (res, Vec::new(), String::new());
        }
        if !self.renew(&target.provider) {
            return fail(res, format!("lease on `{}` was lost", target.provider));
        }
        progress.progress(&self.event(target, Phase::Loading));
        match self.inner.loader.ensure_loaded(target).await {
            Ok(l) => res.load = l,
            Err(e) => return fail(res, e.to_string()),
        }
        let suite = &self.req.suite;
        let prompts = PromptBook::build(
            self.inner.client.as_ref(),
            target,
            suite.api,
            &suite.grid.prompt_tokens,
            &self.req.id,
            &match suite.cache_prompt {
                CachePolicy::UniquePrefix => unique_prefix(&self.req.id, 0),
                _ => String::new(),
            },
            self.inner.opts.request_timeout,
        )
        .await;
        let sizing = format!("{}: {}", target.id, prompts.sizing);
        let session = match self.inner.watch.watch(target, &self.req.id).await {
            Ok(s) => s,
            Err(e) => return fail(res, e.to_string()),
        };
        let mut cells = suite.cells();
        let tr = TargetRun {
            run: self,
            target,
            prompts,
            origin,
            progress,
            cells_total: u32::try_from(cells.len()).unwrap_or(u32::MAX),
            seq: std::sync::atomic::AtomicU64::new(0),
            last_renew: Mutex::new(Instant::now()),
            lease_lost: std::sync::atomic::AtomicBool::new(false),
        };
        let mut samples = Vec::new();
        let mut seen_foreign = 0u64;
        let mut seen_swaps = 0usize;
        let mut swaps: Vec<String> = Vec::new();
        let mut loading_requests = 0u64;
        let mut watch_error = None;
        let mut sweep_rates: Option<(f64, f64)> = None;
        #[allow(clippy::needless_range_loop)] // cells[ci] is rewritten (sweep rates)
        for ci in 0..cells.len() {
            // A sweep's rate steps are placed between the two probe cells' measured rates.
            if let (LoadMode::Sweep { steps, .. }, CellLoad::Rate { rate, .. }) =
                (&suite.load, &mut cells[ci].load)
                && let Some((lo, hi)) = sweep_rates
            {
                let k = ci % (*steps as usize);
                let frac = (k - 1) as f64 / f64::from(*steps - 1);
                *rate = (lo + (hi - lo) * frac).max(0.01);
            }
            if self.cancel.is_cancelled() {
                break;
            }
            let spec = cells[ci].clone();
            let (mut cell, cell_samples) = tr.run_cell(&spec, ci).await;
            if let LoadMode::Sweep { steps, .. } = &suite.load {
                let k = ci % (*steps as usize);
                let r = cell.metrics.request_throughput;
                match k {
                    0 => sweep_rates = Some((r, r)),
                    1 => sweep_rates = sweep_rates.map(|(lo, _)| (lo, r.max(lo))),
                    _ => {}
                }
            }
            match session.report().await {
                Ok(rep) => {
                    cell.foreign_requests = rep.foreign_requests.saturating_sub(seen_foreign);
                    seen_foreign = rep.foreign_requests;
                    if rep.swaps.len() > seen_swaps {
                        cell.polluted = true;
                        swaps.extend(rep.swaps[seen_swaps..].iter().cloned());
                        seen_swaps = rep.swaps.len();
                    }
                }
                Err(e) => watch_error = Some(e.to_string()),
            }
            let loading = cell_samples
                .iter()
                .filter(|s| !s.warmup && s.loading_chunks > 0)
                .count() as u64;
            loading_requests += loading;
            cell.polluted |= cell.foreign_requests > 0 || loading > 0;
            let stopped = cell.stopped;
            res.cells.push(cell);
            samples.extend(cell_samples);
            if stopped == StopReason::Cancelled {
                break;
            }
            if tr.lease_lost.load(std::sync::atomic::Ordering::Relaxed) {
                res.error = Some(format!("lease on `{}` was lost", target.provider));
                break;
            }
        }
        res.concurrent_foreign_requests = seen_foreign;
        if seen_foreign > 0 {
            res.pollution.push(Pollution::ForeignTraffic {
                requests: seen_foreign,
            });
        }
        for s in swaps {
            res.pollution.push(Pollution::Swap { detail: s });
        }
        if loading_requests > 0 {
            res.pollution.push(Pollution::LoadingDuringRequest {
                requests: loading_requests,
            });
        }
        if let Some(e) = watch_error {
            res.pollution.push(Pollution::Swap {
                detail: format!("fleet watch unavailable: {e}"),
            });
        }
        res.polluted = !res.pollution.is_empty();
        res.status = if res.error.is_some() {
            RunStatus::Failed
        } else if res.cells.len() < cells.len()
            || res
                .cells
                .last()
                .is_some_and(|c| c.stopped == StopReason::Cancelled)
        {
            RunStatus::Cancelled
        } else {
            RunStatus::Completed
        };
        res.finished_at_ms = (self.inner.now_ms)();
        progress.progress(&self.event(target, Phase::TargetDone));
        (res, samples, sizing)
    }
}

fn now_us(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Progress bookkeeping of one cell.
struct CellTally {
    done: u32,
    errors: u32,
    window_tokens: u64,
    window_start: Instant,
    last_emit: Instant,
    current_tps: f64,
}

impl TargetRun<'_> {
    fn body(&self, spec: &CellSpec, seq: u64) -> Bytes {
        let suite = &self.run.req.suite;
        let prefix = match suite.cache_prompt {
            CachePolicy::UniquePrefix => unique_prefix(&self.run.req.id, seq),
            _ => String::new(),
        };
        let content = self.prompts.content(spec.prompt_tokens, &prefix);
        let mut v = serde_json::Map::new();
        v.insert("model".into(), self.target.model.clone().into());
        match suite.api {
            Api::Chat => {
                v.insert(
                    "messages".into(),
                    serde_json::json!([{"role": "user", "content": content}]),
                );
            }
            Api::Completions => {
                v.insert("prompt".into(), content.into());
            }
        }
        v.insert("max_tokens".into(), spec.max_tokens.into());
        v.insert("stream".into(), true.into());
        v.insert(
            "stream_options".into(),
            serde_json::json!({"include_usage": true}),
        );
        v.insert("temperature".into(), suite.temperature.into());
        if suite.ignore_eos {
            v.insert("ignore_eos".into(), true.into());
        }
        // llama.cpp may still reuse KV for a prompt with a unique tag (observed against a real
        // llama-server: cache_n 123 of 128), so both policies also turn its prompt cache off.
        // OpenAI-style APIs reject unknown fields: nothing extra for them.
        if suite.cache_prompt != CachePolicy::Allowed && self.target.kind != HostKind::Openai {
            v.insert("cache_prompt".into(), false.into());
        }
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    async fn one(&self, spec: &CellSpec, seq: u32, warmup: bool, scheduled_us: u64) -> Sample {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = BenchRequest {
            path: self.run.req.suite.api.path(),
            body: self.body(spec, n),
            run_id: self.run.req.id.clone(),
            timeout: self.run.inner.opts.request_timeout,
        };
        let o = self
            .run
            .inner
            .client
            .send(self.target, &req, self.origin)
            .await;
        let mut error = o.error;
        if error.is_none() && o.content_us.is_empty() {
            error = Some("no content in the response".into());
        }
        Sample {
            target: self.target.id.clone(),
            cell: spec.key.clone(),
            seq,
            warmup,
            scheduled_us,
            sent_us: o.sent_us.max(scheduled_us),
            first_chunk_us: o.first_chunk_us,
            content_us: o.content_us,
            last_chunk_us: o.last_chunk_us,
            chunks: o.chunks,
            loading_chunks: o.loading_chunks,
            prompt_tokens_target: spec.prompt_tokens,
            prompt_tokens: o.prompt_tokens,
            completion_tokens: o.completion_tokens,
            timings: o.timings,
            status: o.status,
            error,
            retries: o.retries,
        }
    }

    fn emit(&self, spec: &CellSpec, ci: usize, t: &CellTally, phase: Phase) {
        self.progress.progress(&Progress {
            run_id: self.run.req.id.clone(),
            target: self.target.id.clone(),
            cell: spec.key.clone(),
            cell_index: u32::try_from(ci).unwrap_or(u32::MAX),
            cells_total: self.cells_total,
            done: t.done,
            total: spec.requests.unwrap_or(0),
            errors: t.errors,
            current_tps: t.current_tps,
            phase,
        });
    }

    fn maybe_renew(&self) {
        let every = self.run.inner.opts.lease_renew_every;
        let mut g = self
            .last_renew
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.elapsed() >= every {
            *g = Instant::now();
            if !self.run.renew(&self.target.provider) {
                self.lease_lost
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Records a finished measured sample; returns whether the error limits stop the cell.
    fn record(&self, spec: &CellSpec, ci: usize, s: &Sample, t: &mut CellTally) -> bool {
        t.done += 1;
        if !s.ok() {
            t.errors += 1;
        } else {
            t.window_tokens += u64::from(s.output_tokens());
        }
        let now = Instant::now();
        if now.duration_since(t.last_emit) >= self.run.inner.opts.progress_every {
            let secs = now.duration_since(t.window_start).as_secs_f64();
            if secs > 0.0 {
                t.current_tps = t.window_tokens as f64 / secs;
            }
            t.window_tokens = 0;
            t.window_start = now;
            t.last_emit = now;
            self.emit(spec, ci, t, Phase::Measuring);
            self.maybe_renew();
        }
        let l = &self.run.req.suite.limits;
        if l.max_errors.is_some_and(|m| t.errors >= m) {
            return true;
        }
        if let Some(r) = l.max_error_rate
            && t.done >= 10
            && f64::from(t.errors) / f64::from(t.done) > r
        {
            return true;
        }
        self.lease_lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Closed loop: exactly `c` in flight until `n` requests were started or the deadline.
    #[allow(clippy::too_many_arguments)]
    async fn closed_loop(
        &self,
        spec: &CellSpec,
        ci: usize,
        c: u32,
        n: Option<u32>,
        warmup: bool,
        deadline: Option<Instant>,
        out: &mut Vec<Sample>,
        tally: &mut CellTally,
    ) -> StopReason {
        let mut inflight = FuturesUnordered::new();
        let mut started = 0u32;
        let mut stop: Option<StopReason> = None;
        loop {
            while stop.is_none() && inflight.len() < c as usize && n.is_none_or(|n| started < n) {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    stop = Some(StopReason::Duration);
                    break;
                }
                let seq = started;
                started += 1;
                inflight.push(self.one(spec, seq, warmup, now_us(self.origin)));
            }
            let next = tokio::select! {
                biased;
                () = self.run.cancel.cancelled() => return StopReason::Cancelled,
                s = inflight.next() => s,
            };
            match next {
                None => break,
                Some(s) => {
                    if !warmup && self.record(spec, ci, &s, tally) && stop.is_none() {
                        stop = Some(StopReason::Errors);
                    }
                    out.push(s);
                }
            }
        }
        stop.unwrap_or(StopReason::Completed)
    }

    /// Open loop: Poisson arrivals at `rate`/s, at most `max_in_flight` in flight.
    #[allow(clippy::too_many_arguments)]
    async fn open_loop(
        &self,
        spec: &CellSpec,
        ci: usize,
        rate: f64,
        max_in_flight: u32,
        seed: u64,
        n: Option<u32>,
        deadline: Option<Instant>,
        out: &mut Vec<Sample>,
        tally: &mut CellTally,
    ) -> StopReason {
        let mut rng = SplitMix64::new(seed ^ fnv(&spec.key));
        let mut inflight = FuturesUnordered::new();
        let mut started = 0u32;
        let mut stop: Option<StopReason> = None;
        let start = Instant::now();
        let mut next_due = start;
        loop {
            let more = stop.is_none() && n.is_none_or(|n| started < n);
            if more && deadline.is_some_and(|d| Instant::now() >= d) {
                stop = Some(StopReason::Duration);
                continue;
            }
            if !more || inflight.len() >= max_in_flight as usize {
                let next = tokio::select! {
                    biased;
                    () = self.run.cancel.cancelled() => return StopReason::Cancelled,
                    s = inflight.next() => s,
                };
                match next {
                    None => break,
                    Some(s) => {
                        if self.record(spec, ci, &s, tally) && stop.is_none() {
                            stop = Some(StopReason::Errors);
                        }
                        out.push(s);
                    }
                }
                continue;
            }
            let due = tokio::time::Instant::from_std(next_due);
            tokio::select! {
                biased;
                () = self.run.cancel.cancelled() => return StopReason::Cancelled,
                Some(s) = inflight.next(), if !inflight.is_empty() => {
                    if self.record(spec, ci, &s, tally) && stop.is_none() {
                        stop = Some(StopReason::Errors);
                    }
                    out.push(s);
                }
                () = tokio::time::sleep_until(due) => {
                    let scheduled = u64::try_from(next_due.duration_since(self.origin).as_micros()).unwrap_or(0);
                    let seq = started;
                    started += 1;
                    inflight.push(self.one(spec, seq, false, scheduled));
                    // Exponential inter-arrival gap with mean 1/rate.
                    let u = rng.next_unit();
                    let gap = -(1.0 - u).ln() / rate;
                    next_due += Duration::from_secs_f64(gap.min(3600.0));
                }
            }
        }
        stop.unwrap_or(StopReason::Completed)
    }

    async fn run_cell(&self, spec: &CellSpec, ci: usize) -> (CellResult, Vec<Sample>) {
        let now = Instant::now();
        let mut tally = CellTally {
            done: 0,
            errors: 0,
            window_tokens: 0,
            window_start: now,
            last_emit: now,
            current_tps: 0.0,
        };
        let mut samples = Vec::new();
        if spec.warmup > 0 {
            self.emit(spec, ci, &tally, Phase::Warmup);
            let c = match spec.load {
                CellLoad::Concurrency(c) => c,
                CellLoad::Rate { max_in_flight, .. } => max_in_flight.min(4),
            };
            self.closed_loop(
                spec,
                ci,
                c.min(spec.warmup).max(1),
                Some(spec.warmup),
                true,
                None,
                &mut samples,
                &mut tally,
            )
            .await;
        }
        self.emit(spec, ci, &tally, Phase::Measuring);
        let deadline = self
            .run
            .req
            .suite
            .limits
            .duration_s
            .map(|d| Instant::now() + Duration::from_secs_f64(d));
        let stopped = match spec.load {
            CellLoad::Concurrency(c) => {
                self.closed_loop(
                    spec,
                    ci,
                    c,
                    spec.requests,
                    false,
                    deadline,
                    &mut samples,
                    &mut tally,
                )
                .await
            }
            CellLoad::Rate {
                rate,
                max_in_flight,
                seed,
            } => {
                self.open_loop(
                    spec,
                    ci,
                    rate,
                    max_in_flight,
                    seed,
                    spec.requests,
                    deadline,
                    &mut samples,
                    &mut tally,
                )
                .await
            }
        };
        let measured: Vec<&Sample> = samples.iter().filter(|s| !s.warmup).collect();
        let metrics = cell_metrics(measured.iter().copied());
        let mut error_examples: Vec<String> = Vec::new();
        for s in &measured {
            if let Some(e) = &s.error
                && error_examples.len() < 5
                && !error_examples.contains(e)
            {
                error_examples.push(e.clone());
            }
        }
        let requests = u32::try_from(measured.len()).unwrap_or(u32::MAX);
        let errors = u32::try_from(measured.iter().filter(|s| !s.ok()).count()).unwrap_or(0);
        tally.current_tps = metrics.output_tps;
        self.emit(spec, ci, &tally, Phase::CellDone);
        let cell = CellResult {
            key: spec.key.clone(),
            prompt_tokens: spec.prompt_tokens,
            max_tokens: spec.max_tokens,
            load: spec.load,
            requests,
            ok: requests - errors,
            errors,
            warmup: u32::try_from(samples.len()).unwrap_or(0) - requests,
            error_examples,
            metrics,
            stopped,
            polluted: false,
            foreign_requests: 0,
        };
        (cell, samples)
    }
}

/// The tag in front of every prompt under [`CachePolicy::UniquePrefix`] (fixed length for
/// the first 16 M requests of a run).
fn unique_prefix(run_id: &str, seq: u64) -> String {
    format!("[{} {seq:06x}] ", short_id(run_id))
}

fn short_id(id: &str) -> &str {
    let end = id.char_indices().nth(12).map_or(id.len(), |(i, _)| i);
    &id[..end]
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
