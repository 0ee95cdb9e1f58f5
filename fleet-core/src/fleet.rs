//! Fleet state with per-host sequence numbers, snapshots, seq-stamped deltas, and the
//! client-side reducer [`FleetView`].
//!
//! Protocol (what a `/api/fleet/stream` subscriber sees):
//! 1. The server subscribes the client to the delta broadcast, then sends a [`FleetSnapshot`];
//!    each host in it carries its `seq`.
//! 2. Every mutation of [`FleetState`] returns a [`Delta`] stamped with the host's next `seq`
//!    (per host, starting at 1, never reused, even when a host is removed and added back).
//! 3. The client ([`FleetView`]) buffers deltas that arrive before the snapshot, then applies
//!    only deltas with `seq > snapshot seq` for their host. A jump in `seq` means deltas were
//!    lost: [`FleetView::needs_resync`] turns true and the client should fetch a new snapshot.
//!
//! Server and client apply deltas with the same code, so a client that saw the snapshot and all
//! later deltas holds exactly the server's state.

use serde::{Deserialize, Serialize};

use crate::{Error, Lease, Liveness, LivenessState, ModelState, ModelStatus};
use std::collections::{BTreeMap, HashMap};

/// The latest performance reading of a host (summed over its GPUs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerfSample {
    /// Sample time (ms since epoch).
    pub at: u64,
    /// VRAM in use (MiB), summed over GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_used_mb: Option<u64>,
    /// VRAM total (MiB), summed over GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram_total_mb: Option<u64>,
    /// Hottest GPU temperature (°C).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_temp_c: Option<f64>,
    /// Power draw (W), summed over GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_w: Option<f64>,
}

/// Everything the fleet knows about one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// The host (provider id).
    pub provider: String,
    /// The host's sequence number: the `seq` of the last delta applied to it.
    pub seq: u64,
    /// Liveness.
    pub liveness: LivenessState,
    /// When the host last answered (ms since epoch).
    pub last_seen_at: Option<u64>,
    /// Models by wire id (sorted).
    pub models: BTreeMap<String, ModelStatus>,
    /// Requests in flight on the host.
    pub in_flight: u32,
    /// Latest performance reading.
    pub perf: Option<PerfSample>,
    /// The bench (or other) lease holding the host, if any.
    pub lease: Option<Lease>,
}

impl HostSnapshot {
    fn new(provider: &str, seq: u64) -> Self {
        HostSnapshot {
            provider: provider.to_owned(),
            seq,
            liveness: LivenessState::Reconnecting,
            last_seen_at: None,
            models: BTreeMap::new(),
            in_flight: 0,
            perf: None,
            lease: None,
        }
    }
}

/// The whole fleet at one moment: hosts in the order they were added, plus the last `seq` of
/// removed hosts (so a late client can tell their old deltas are stale).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FleetSnapshot {
    /// Hosts, in insertion order.
    pub hosts: Vec<HostSnapshot>,
    /// Removed hosts and their final `seq`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retired: BTreeMap<String, u64>,
}

impl FleetSnapshot {
    /// The host named `provider`.
    pub fn host(&self, provider: &str) -> Option<&HostSnapshot> {
        self.hosts.iter().find(|h| h.provider == provider)
    }
}

/// One change to one host, stamped with that host's new `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The host.
    pub provider: String,
    /// The host's sequence number after this change.
    pub seq: u64,
    /// What changed.
    pub change: Change,
}

/// What a [`Delta`] changes. Serialized with a `kind` tag in snake case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// The host joined the fleet (its full initial state).
    HostAdded {
        /// The host as added.
        host: HostSnapshot,
    },
    /// The host left the fleet.
    HostRemoved,
    /// Liveness or `last_seen_at` changed.
    Liveness {
        /// New state.
        state: LivenessState,
        /// New last-seen time.
        last_seen_at: Option<u64>,
    },
    /// A model appeared or its status changed.
    Model {
        /// Wire model id.
        model: String,
        /// Its status now.
        status: ModelStatus,
    },
    /// A model is no longer listed by the host.
    ModelRemoved {
        /// Wire model id.
        model: String,
    },
    /// The in-flight count changed.
    InFlight {
        /// Requests in flight now.
        count: u32,
    },
    /// A new performance reading.
    Perf {
        /// The reading.
        sample: PerfSample,
    },
    /// The lease changed (granted, renewed or released).
    Lease {
        /// The lease now, or `None` when released.
        lease: Option<Lease>,
    },
}

/// How [`FleetView::apply_delta`] treated a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Held until the snapshot arrives.
    Buffered,
    /// Applied in order.
    Applied,
    /// Already covered by the snapshot or an earlier delta; dropped.
    Stale,
    /// Applied, but deltas were missed before it (or the host was unknown): resync advised.
    Gap,
}

/// The shared reducer: server and client both apply deltas through it.
#[derive(Debug, Clone, Default, PartialEq)]
struct Board {
    hosts: Vec<HostSnapshot>,
    retired: BTreeMap<String, u64>,
    /// Position of each host in `hosts`.
    index: HashMap<String, usize>,
}

impl Board {
    fn from_snapshot(s: FleetSnapshot) -> Self {
        let mut b = Board {
            hosts: s.hosts,
            retired: s.retired,
            index: HashMap::new(),
        };
        b.reindex();
        b
    }

    fn reindex(&mut self) {
        self.index = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.provider.clone(), i))
            .collect();
    }

    fn pos(&self, provider: &str) -> Option<usize> {
        self.index.get(provider).copied()
    }

    fn seq(&self, provider: &str) -> u64 {
        match self.pos(provider) {
            Some(i) => self.hosts[i].seq,
            None => self.retired.get(provider).copied().unwrap_or(0),
        }
    }

    /// Applies `d` if its seq is new for the host. Returns `None` if stale, else whether the
    /// delta followed the previous one directly (`true`) or skipped some (`false`).
    fn apply(&mut self, d: &Delta) -> Option<bool> {
        let known = self.seq(&d.provider);
        if d.seq <= known {
            return None;
        }
        let mut in_order = d.seq == known + 1;
        match &d.change {
            Change::HostAdded { host } => {
                let mut host = host.clone();
                host.seq = d.seq;
                self.retired.remove(&d.provider);
                match self.pos(&d.provider) {
                    Some(i) => self.hosts[i] = host,
                    None => {
                        self.index.insert(d.provider.clone(), self.hosts.len());
                        self.hosts.push(host);
                    }
                }
            }
            Change::HostRemoved => {
                if let Some(i) = self.pos(&d.provider) {
                    self.hosts.remove(i);
                    self.reindex();
                }
                self.retired.insert(d.provider.clone(), d.seq);
            }
            other => match self.pos(&d.provider) {
                None => in_order = false,
                Some(i) => {
                    let h = &mut self.hosts[i];
                    h.seq = d.seq;
                    match other {
                        Change::Liveness {
                            state,
                            last_seen_at,
                        } => {
                            h.liveness = *state;
                            h.last_seen_at = *last_seen_at;
                        }
                        Change::Model { model, status } => {
                            h.models.insert(model.clone(), status.clone());
                        }
                        Change::ModelRemoved { model } => {
                            h.models.remove(model);
                        }
                        Change::InFlight { count } => h.in_flight = *count,
                        Change::Perf { sample } => h.perf = Some(sample.clone()),
                        Change::Lease { lease } => h.lease = lease.clone(),
                        Change::HostAdded { .. } | Change::HostRemoved => {}
                    }
                }
            },
        }
        Some(in_order)
    }

    fn snapshot(&self) -> FleetSnapshot {
        FleetSnapshot {
            hosts: self.hosts.clone(),
            retired: self.retired.clone(),
        }
    }
}

/// The server-side fleet state. Every mutation returns the delta(s) to broadcast; nothing is
/// emitted when the mutation changes nothing.
///
/// # Example
/// ```
/// use boo_fleet_core::{FleetState, FleetView, LivenessState, ModelState};
/// let mut fleet = FleetState::new();
/// let mut view = FleetView::new();
/// let early = fleet.add_host("gpu-box").into_iter().collect::<Vec<_>>();
/// let snap = fleet.snapshot();
/// let later = fleet.set_model_state("gpu-box", "qwen", ModelState::Starting, 5_000).unwrap();
/// for d in early.iter().chain(later.iter()) { view.apply_delta(d.clone()); } // buffered
/// view.apply_snapshot(snap);
/// assert_eq!(view.snapshot(), Some(fleet.snapshot()));
/// assert_eq!(view.host("gpu-box").unwrap().models["qwen"].state, ModelState::Starting);
/// ```
#[derive(Debug, Clone, Default)]
pub struct FleetState {
    board: Board,
    last_seen_granularity_ms: u64,
}

impl FleetState {
    /// An empty fleet; `last_seen_at` deltas are emitted at most once per second per host.
    pub fn new() -> Self {
        Self::with_last_seen_granularity(1_000)
    }

    /// An empty fleet that emits a `last_seen_at`-only delta when it advanced by at least
    /// `granularity_ms` (liveness state changes are always emitted).
    pub fn with_last_seen_granularity(granularity_ms: u64) -> Self {
        FleetState {
            board: Board::default(),
            last_seen_granularity_ms: granularity_ms,
        }
    }

    /// The current state of every host.
    pub fn snapshot(&self) -> FleetSnapshot {
        self.board.snapshot()
    }

    /// One host.
    pub fn host(&self, provider: &str) -> Option<&HostSnapshot> {
        self.board.pos(provider).map(|i| &self.board.hosts[i])
    }

    /// Hosts in insertion order.
    pub fn hosts(&self) -> &[HostSnapshot] {
        &self.board.hosts
    }

    fn emit(&mut self, provider: &str, change: Change) -> Delta {
        let d = Delta {
            provider: provider.to_owned(),
            seq: self.board.seq(provider) + 1,
            change,
        };
        self.board.apply(&d);
        d
    }

    fn existing(&self, provider: &str) -> Result<&HostSnapshot, Error> {
        self.host(provider).ok_or_else(|| Error::UnknownHost {
            provider: provider.to_owned(),
        })
    }

    /// Adds a host (`reconnecting`, no models). `None` if it is already present.
    pub fn add_host(&mut self, provider: &str) -> Option<Delta> {
        if self.host(provider).is_some() {
            return None;
        }
        let seq = self.board.seq(provider) + 1;
        Some(self.emit(
            provider,
            Change::HostAdded {
                host: HostSnapshot::new(provider, seq),
            },
        ))
    }

    /// Adds a host restored from storage (gateway restart): `last_seen_at`, models and perf as
    /// persisted, liveness `reconnecting`. Replaces the host if present.
    pub fn restore_host(
        &mut self,
        provider: &str,
        last_seen_at: Option<u64>,
        models: BTreeMap<String, ModelStatus>,
        perf: Option<PerfSample>,
    ) -> Delta {
        let seq = self.board.seq(provider) + 1;
        let mut host = HostSnapshot::new(provider, seq);
        host.last_seen_at = last_seen_at;
        host.models = models;
        host.perf = perf;
        self.emit(provider, Change::HostAdded { host })
    }

    /// Removes a host. `None` if it is absent.
    pub fn remove_host(&mut self, provider: &str) -> Option<Delta> {
        self.host(provider)?;
        Some(self.emit(provider, Change::HostRemoved))
    }

    /// Records the host's liveness. Emits when the state changed, or when `last_seen_at` moved
    /// by at least the configured granularity.
    ///
    /// # Errors
    /// [`Error::UnknownHost`].
    pub fn set_liveness(
        &mut self,
        provider: &str,
        liveness: &Liveness,
    ) -> Result<Option<Delta>, Error> {
        let h = self.existing(provider)?;
        let seen = liveness.last_seen_at();
        let seen_moved = match (h.last_seen_at, seen) {
            (None, Some(_)) => true,
            (Some(a), Some(b)) => b >= a.saturating_add(self.last_seen_granularity_ms.max(1)),
            _ => false,
        };
        if h.liveness == liveness.state() && !seen_moved {
            return Ok(None);
        }
        let last_seen_at = seen.max(h.last_seen_at);
        Ok(Some(self.emit(
            provider,
            Change::Liveness {
                state: liveness.state(),
                last_seen_at,
            },
        )))
    }

    /// Replaces the host's model list (llama-swap `modelStatus`): changed models get a `Model`
    /// delta, models no longer listed a `ModelRemoved` delta. TTL and last use are kept.
    ///
    /// # Errors
    /// [`Error::UnknownHost`].
    pub fn set_models(
        &mut self,
        provider: &str,
        models: &[(String, ModelState)],
        now_ms: u64,
    ) -> Result<Vec<Delta>, Error> {
        let h = self.existing(provider)?;
        let gone: Vec<String> = h
            .models
            .keys()
            .filter(|k| !models.iter().any(|(m, _)| m == *k))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for model in gone {
            out.push(self.emit(provider, Change::ModelRemoved { model }));
        }
        for (model, state) in models {
            if let Some(d) = self.set_model_state(provider, model, *state, now_ms)? {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// Sets one model's state (from an event or a llama-server health poll).
    ///
    /// # Errors
    /// [`Error::UnknownHost`].
    pub fn set_model_state(
        &mut self,
        provider: &str,
        model: &str,
        state: ModelState,
        now_ms: u64,
    ) -> Result<Option<Delta>, Error> {
        let h = self.existing(provider)?;
        let status = match h.models.get(model) {
            Some(cur) => {
                let mut s = cur.clone();
                if !s.transition(state, now_ms) {
                    return Ok(None);
                }
                s
            }
            None => ModelStatus::new(state, now_ms),
        };
        Ok(Some(self.emit(
            provider,
            Change::Model {
                model: model.to_owned(),
                status,
            },
        )))
    }

    /// Sets a model's effective TTL in seconds (from llama-swap `/running`; `0` = never).
    ///
    /// # Errors
    /// [`Error::UnknownHost`].
    pub fn set_model_ttl(
        &mut self,
        provider: &str,
        model: &str,
        ttl_s: Option<u64>,
    ) -> Result<Option<Delta>, Error> {
        self.update_model(provider, model, |s| {
            let changed = s.ttl_s != ttl_s;
            s.ttl_s = ttl_s;
            changed
        })
    }

    /// Notes that a request on `model` finished at `at_ms` (restarts its TTL). Older times are
    /// ignored.
    ///
    /// # Errors
    /// [`Error::UnknownHost`].
    pub fn model_used(
        &mut self,
        provider: &str,
        model: &str,
        at_ms: u64,
    ) -> Result<Option<Delta>, Error> {
        self.update_model(provider, model, |s| {
            if s.last_used_at.is_some_and(|t| t >= at_ms) {
                return false;
            }
            s.last_used_at = Some(at_ms);
            true
        })
    }

    fn update_model(
        &mut self,
        provider: &str,
        model: &str,
        f: impl FnOnce(&mut ModelStatus) -> bool,
    ) -> Result<Option<Delta>, Error> {
        let h = self.existing(provider)?;
        let Some(cur) = h.models.get(model) else {
            return Ok(None);
        };
        let mut status = cur.clone();
        if !f(&mut status) {
            return Ok(None);
        }
        Ok(Some(self.emit(
            provider,
            Change::Model {
                model: model.to_owned(),
                status,
            },
        )))
    }

    /// Sets the in-flight request count.
    ///
    /// # Errors
    /// [`Error::UnknownHost`].
    pub fn set_in_flight(&mut self, provider: &str, count: u32) -> Result<Option<Delta>, Error> {
        if self.existing(provider)?.in_flight == count {
            return Ok(None);
        }
        Ok(Some(self.emit(provider, Change::InFlight { count })))
    }

    /// Records a performance reading (ignored when not newer than the current one).
    ///
    /// # Errors
    /// [`Error::UnknownHost`].
    pub fn set_perf(&mut self, provider: &str, sample: PerfSample) -> Result<Option<Delta>, Error> {
        let h = self.existing(provider)?;
        if h.perf.as_ref().is_some_and(|p| p.at >= sample.at) {
            return Ok(None);
        }
        Ok(Some(self.emit(provider, Change::Perf { sample })))
    }

    /// Records the host's lease (`None` when released).
    ///
    /// # Errors
    /// [`Error::UnknownHost`].
    pub fn set_lease(
        &mut self,
        provider: &str,
        lease: Option<Lease>,
    ) -> Result<Option<Delta>, Error> {
        if self.existing(provider)?.lease == lease {
            return Ok(None);
        }
        Ok(Some(self.emit(provider, Change::Lease { lease })))
    }
}

/// The client-side reducer for the fleet stream (see the module docs for the protocol).
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    board: Option<Board>,
    pending: Vec<Delta>,
    needs_resync: bool,
}

impl FleetView {
    /// A view waiting for its snapshot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a snapshot (the first one, or a resync), then replays buffered deltas newer
    /// than it. Clears [`FleetView::needs_resync`] unless the replay finds a gap.
    pub fn apply_snapshot(&mut self, snapshot: FleetSnapshot) {
        self.board = Some(Board::from_snapshot(snapshot));
        self.needs_resync = false;
        for d in std::mem::take(&mut self.pending) {
            self.apply_delta(d);
        }
    }

    /// Applies (or buffers, or drops) one delta.
    pub fn apply_delta(&mut self, delta: Delta) -> Applied {
        let Some(board) = self.board.as_mut() else {
            self.pending.push(delta);
            return Applied::Buffered;
        };
        match board.apply(&delta) {
            None => Applied::Stale,
            Some(true) => Applied::Applied,
            Some(false) => {
                self.needs_resync = true;
                Applied::Gap
            }
        }
    }

    /// Whether a snapshot has been installed.
    pub fn is_synced(&self) -> bool {
        self.board.is_some()
    }

    /// Whether a delta was missed; the client should fetch a new snapshot.
    pub fn needs_resync(&self) -> bool {
        self.needs_resync
    }

    /// Deltas held while waiting for the snapshot.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Hosts as the client sees them (empty before the snapshot).
    pub fn hosts(&self) -> &[HostSnapshot] {
        self.board.as_ref().map_or(&[], |b| &b.hosts)
    }

    /// One host.
    pub fn host(&self, provider: &str) -> Option<&HostSnapshot> {
        let b = self.board.as_ref()?;
        b.pos(provider).map(|i| &b.hosts[i])
    }

    /// The view as a snapshot (`None` before the first snapshot).
    pub fn snapshot(&self) -> Option<FleetSnapshot> {
        self.board.as_ref().map(Board::snapshot)
    }
}

#[cfg(test)]
mod tests;
