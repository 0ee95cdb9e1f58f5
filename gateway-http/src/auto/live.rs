//! [`HubFleet`]: routing facts from the live fleet control plane.
//!
//! For every host the `FleetHub` follows (llama-swap and llama-server providers), liveness
//! (`connected` / `reconnecting` / `down`) and model states (`ready`, `starting`, `stopped`,
//! `error`, …) come from the hub, which hears about changes from the hosts' event streams
//! within milliseconds. Load times are measured from the hub's `starting → ready`
//! transitions. Hosts the hub does not follow (clouds, other gateways) and models the hub has
//! not seen yet keep the inventory poller's facts; the poller's listing also still provides
//! `context_length`.

use super::facts::LiveFleet;
use crate::control::FleetHub;
use boo_fleet_core::{Change, HostSnapshot, LivenessState, ModelState};
use boo_model_ref::{Inventory, InventoryModel, LoadState, ModelRef, ProviderId};
use boo_routing::Liveness;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast::error::RecvError;

/// Maps a fleet-core model state to the routing/inventory one.
pub fn load_state(s: ModelState) -> LoadState {
    match s {
        ModelState::Stopped | ModelState::Shutdown => LoadState::Stopped,
        ModelState::Starting => LoadState::Starting,
        ModelState::Ready => LoadState::Ready,
        ModelState::Stopping => LoadState::Stopping,
        ModelState::Error => LoadState::Error,
        ModelState::Unknown => LoadState::Unknown,
    }
}

/// Maps hub liveness to routing liveness.
pub fn liveness(s: LivenessState) -> Liveness {
    match s {
        LivenessState::Connected => Liveness::Connected,
        LivenessState::Reconnecting => Liveness::Reconnecting,
        LivenessState::Down => Liveness::Down,
    }
}

/// What the merged view reads from the hub: each host's liveness and its models' load states.
/// Most deltas change neither (in-flight counts, perf samples, leases, `last_seen_at`, a model's
/// timestamps move with every request on a busy host), and rebuilding the view for each of them
/// would cost every `auto:*` decision a rebuild.
#[derive(Debug, Default)]
struct Watched {
    live: HashMap<String, LivenessState>,
    states: HashMap<(String, String), ModelState>,
}

impl Watched {
    fn from_snapshot(hosts: &[HostSnapshot]) -> Self {
        let mut w = Watched::default();
        for h in hosts {
            w.add_host(h);
        }
        w
    }

    fn add_host(&mut self, h: &HostSnapshot) {
        self.live.insert(h.provider.clone(), h.liveness);
        for (m, st) in &h.models {
            self.states
                .insert((h.provider.clone(), m.clone()), st.state);
        }
    }

    /// Records `change` on `provider`; whether the merged view must be rebuilt.
    fn apply(&mut self, provider: &str, change: &Change) -> bool {
        match change {
            Change::HostAdded { host } => {
                self.add_host(host);
                true
            }
            Change::HostRemoved => {
                self.live.remove(provider);
                self.states.retain(|(p, _), _| p != provider);
                true
            }
            Change::Liveness { state, .. } => {
                self.live.insert(provider.to_owned(), *state) != Some(*state)
            }
            Change::Model { model, status } => {
                let key = (provider.to_owned(), model.clone());
                self.states.insert(key, status.state) != Some(status.state)
            }
            Change::ModelRemoved { model } => {
                self.states.remove(&(provider.to_owned(), model.clone()));
                true
            }
            Change::InFlight { .. } | Change::Perf { .. } | Change::Lease { .. } => false,
        }
    }
}

/// The merged view, rebuilt lazily when the hub or the poller changed.
struct Merged {
    generation: u64,
    poller: Arc<Inventory>,
    inventory: Arc<Inventory>,
    liveness: HashMap<ProviderId, Liveness>,
}

/// [`LiveFleet`] over the fleet hub, with the inventory poller as the fallback for hosts the
/// hub does not follow. Reads are a lock and an `Arc` clone; the merge runs once per change.
pub struct HubFleet {
    hub: Arc<FleetHub>,
    fallback: Arc<dyn LiveFleet>,
    followed: HashSet<ProviderId>,
    generation: Arc<AtomicU64>,
    load_ms: Arc<RwLock<Arc<HashMap<ModelRef, u64>>>>,
    merged: RwLock<Option<Arc<Merged>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HubFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubFleet")
            .field("followed", &self.followed)
            .finish_non_exhaustive()
    }
}

impl Drop for HubFleet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HubFleet {
    /// Facts from `hub` for the hosts it follows, from `fallback` for the others. Spawns a
    /// task (on the current tokio runtime) that follows the hub's deltas.
    pub fn new(hub: Arc<FleetHub>, fallback: Arc<dyn LiveFleet>) -> Self {
        let (snap, mut rx) = hub.subscribe();
        let followed = snap
            .hosts
            .iter()
            .filter_map(|h| h.provider.parse().ok())
            .collect();
        let generation = Arc::new(AtomicU64::new(1));
        let load_ms: Arc<RwLock<Arc<HashMap<ModelRef, u64>>>> = Arc::default();
        let task = {
            let generation = generation.clone();
            let load_ms = load_ms.clone();
            let hub = hub.clone();
            let mut watched = Watched::from_snapshot(&snap.hosts);
            tokio::spawn(async move {
                // When each model was last seen starting, to measure load times.
                let mut starting: HashMap<(String, String), u64> = HashMap::new();
                loop {
                    match rx.recv().await {
                        Ok(d) => {
                            if let Change::Model { model, status } = &d.change {
                                let key = (d.provider.clone(), model.clone());
                                match status.state {
                                    ModelState::Starting => {
                                        starting.insert(key, status.since);
                                    }
                                    ModelState::Ready => {
                                        if let (Some(t0), Some(t1)) =
                                            (starting.remove(&key), status.ready_since)
                                            && t1 >= t0
                                            && let Ok(m) = format!("{}/{}", key.0, key.1).parse()
                                        {
                                            let mut g =
                                                load_ms.write().unwrap_or_else(|e| e.into_inner());
                                            Arc::make_mut(&mut g).insert(m, t1 - t0);
                                        }
                                    }
                                    _ => {
                                        starting.remove(&key);
                                    }
                                }
                            }
                            if watched.apply(&d.provider, &d.change) {
                                generation.fetch_add(1, Ordering::Release);
                            }
                        }
                        Err(RecvError::Lagged(_)) => {
                            // Deltas were missed: start over from the hub's state.
                            watched = Watched::from_snapshot(&hub.snapshot().hosts);
                            generation.fetch_add(1, Ordering::Release);
                        }
                        Err(RecvError::Closed) => break,
                    }
                }
                drop(hub);
            })
        };
        Self {
            hub,
            fallback,
            followed,
            generation,
            load_ms,
            merged: RwLock::new(None),
            task,
        }
    }

    /// Whether the hub follows `provider`.
    pub fn follows(&self, provider: &ProviderId) -> bool {
        self.followed.contains(provider)
    }

    fn current(&self) -> Arc<Merged> {
        let generation = self.generation.load(Ordering::Acquire);
        let poller = self.fallback.inventory();
        if let Some(m) = &*self.merged.read().unwrap_or_else(|e| e.into_inner())
            && m.generation == generation
            && Arc::ptr_eq(&m.poller, &poller)
        {
            return m.clone();
        }
        let snap = self.hub.snapshot();
        let m = Arc::new(self.merge(generation, poller, &snap.hosts));
        *self.merged.write().unwrap_or_else(|e| e.into_inner()) = Some(m.clone());
        m
    }

    fn merge(&self, generation: u64, poller: Arc<Inventory>, hosts: &[HostSnapshot]) -> Merged {
        let mut inv = (*poller).clone();
        let mut live = HashMap::new();
        for h in hosts {
            let Ok(p) = h.provider.parse::<ProviderId>() else {
                continue;
            };
            live.insert(p.clone(), liveness(h.liveness));
            let mut models: Vec<InventoryModel> = poller.models(&p).to_vec();
            for m in &mut models {
                if let Some(st) = h.models.get(&m.id) {
                    m.state = Some(load_state(st.state));
                }
            }
            // Models the hub knows but the poller does not list are added only while the poller
            // has nothing for the host (a llama-server may name its model differently in
            // `/props` than in the listing; that must not invent a second candidate).
            let poller_knows = !models.is_empty();
            for (id, st) in &h.models {
                if !poller_knows && !models.iter().any(|m| &m.id == id) {
                    let mut m = InventoryModel::new(id.clone());
                    m.state = Some(load_state(st.state));
                    models.push(m);
                }
            }
            inv.set_provider(p, models);
        }
        Merged {
            generation,
            poller,
            inventory: Arc::new(inv),
            liveness: live,
        }
    }
}

impl LiveFleet for HubFleet {
    fn inventory(&self) -> Arc<Inventory> {
        self.current().inventory.clone()
    }

    fn liveness(&self, provider: &ProviderId) -> Liveness {
        match self.current().liveness.get(provider) {
            Some(l) => *l,
            None => self.fallback.liveness(provider),
        }
    }

    fn queue_wait_ms(&self, provider: &ProviderId) -> Option<u64> {
        self.fallback.queue_wait_ms(provider)
    }

    fn load_times(&self) -> Option<Arc<HashMap<ModelRef, u64>>> {
        let mine = self
            .load_ms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if mine.is_empty() {
            self.fallback.load_times()
        } else {
            Some(mine)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boo_fleet_core::{LivenessInput, ReconnectPolicy};

    struct Fixed(Arc<Inventory>);
    impl LiveFleet for Fixed {
        fn inventory(&self) -> Arc<Inventory> {
            self.0.clone()
        }
        fn liveness(&self, _: &ProviderId) -> Liveness {
            Liveness::Connected
        }
    }

    fn pid(s: &str) -> ProviderId {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn only_liveness_and_load_state_changes_rebuild_the_view() {
        let hub = Arc::new(FleetHub::new());
        hub.apply(|f| ((), f.add_host("desk").into_iter().collect()));
        hub.apply_many(|f| {
            f.set_models(
                "desk",
                &[
                    ("coder".into(), ModelState::Ready),
                    ("chat".into(), ModelState::Stopped),
                ],
                1_000,
            )
        });
        let live = HubFleet::new(hub.clone(), Arc::new(Fixed(Arc::new(Inventory::new()))));
        let before = live.current();
        // What moves with every request on a busy host.
        for i in 0..20u32 {
            assert!(hub.apply_one(|f| f.set_in_flight("desk", i + 1)).is_some());
            let used = hub.apply_one(|f| f.model_used("desk", "coder", 2_000 + u64::from(i)));
            assert!(used.is_some(), "a model delta that keeps the state");
        }
        // Then one load-state change.
        hub.apply_one(|f| f.set_model_state("desk", "chat", ModelState::Starting, 3_000));
        let m: ModelRef = "desk/chat".parse().unwrap();
        let mut after = live.current();
        for _ in 0..200 {
            if after.inventory.state(&m) == Some(LoadState::Starting) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            after = live.current();
        }
        assert_eq!(after.inventory.state(&m), Some(LoadState::Starting));
        // 41 deltas, one rebuild.
        assert_eq!(after.generation, before.generation + 1);
        assert!(
            Arc::ptr_eq(&live.current(), &after),
            "unchanged inputs reuse the view"
        );
    }

    #[tokio::test]
    async fn hub_states_and_liveness_override_the_poller_and_load_times_are_measured() {
        let hub = Arc::new(FleetHub::new());
        hub.apply(|f| ((), f.add_host("desk").into_iter().collect()));
        let mut poll = Inventory::new();
        let mut coder = InventoryModel::new("coder");
        coder.context_length = Some(8192);
        coder.state = Some(LoadState::Stopped);
        poll.set_provider(pid("desk"), vec![coder]);
        poll.set_provider(pid("cloud"), vec![InventoryModel::new("gpt")]);
        let live = HubFleet::new(hub.clone(), Arc::new(Fixed(Arc::new(poll))));
        assert!(live.follows(&pid("desk")) && !live.follows(&pid("cloud")));
        // Before the first connect the hub says reconnecting; the cloud keeps the poller's.
        assert_eq!(live.liveness(&pid("desk")), Liveness::Reconnecting);
        assert_eq!(live.liveness(&pid("cloud")), Liveness::Connected);

        let policy = ReconnectPolicy {
            breaker_threshold: 1,
            ..ReconnectPolicy::default()
        };
        let mut l = boo_fleet_core::Liveness::new();
        l.step(LivenessInput::Connected, 1, &policy, 0.0);
        hub.apply_one(|f| f.set_liveness("desk", &l));
        hub.apply_many(|f| f.set_models("desk", &[("coder".into(), ModelState::Starting)], 1_000));
        hub.apply_many(|f| f.set_models("desk", &[("coder".into(), ModelState::Ready)], 4_500));
        let m: ModelRef = "desk/coder".parse().unwrap();
        let mut ok = false;
        for _ in 0..100 {
            if live.load_times().and_then(|l| l.get(&m).copied()) == Some(3_500) {
                ok = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(ok, "load time measured from starting → ready");
        let inv = live.inventory();
        assert_eq!(inv.state(&m), Some(LoadState::Ready));
        assert_eq!(inv.models(&pid("desk"))[0].context_length, Some(8192));
        assert_eq!(inv.models(&pid("cloud")).len(), 1);
        assert_eq!(live.liveness(&pid("desk")), Liveness::Connected);

        // A model name only the hub uses is not a second candidate while the poller lists
        // the host; a host the poller has not listed yet gets the hub's models.
        hub.apply_many(|f| {
            f.set_models(
                "desk",
                &[
                    ("coder".into(), ModelState::Ready),
                    ("/models/coder.gguf".into(), ModelState::Ready),
                ],
                5_000,
            )
        });
        hub.apply(|f| ((), f.add_host("box").into_iter().collect()));
        hub.apply_many(|f| f.set_models("box", &[("tiny".into(), ModelState::Stopped)], 5_000));
        let mut listed = Vec::new();
        for _ in 0..100 {
            let inv = live.inventory();
            listed = inv
                .models(&pid("desk"))
                .iter()
                .map(|m| m.id.clone())
                .collect::<Vec<_>>();
            if inv.state(&"box/tiny".parse().unwrap()) == Some(LoadState::Stopped) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(listed, ["coder"]);
        assert_eq!(
            live.inventory().state(&"box/tiny".parse().unwrap()),
            Some(LoadState::Stopped)
        );

        l.step(LivenessInput::Error, 2, &policy, 0.0);
        hub.apply_one(|f| f.set_liveness("desk", &l));
        for _ in 0..100 {
            if live.liveness(&pid("desk")) == Liveness::Down {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(live.liveness(&pid("desk")), Liveness::Down);
    }
}
