//! FleetView converges to the server's FleetState for any interleaving of snapshot and deltas.

use boo_fleet_core::{
    Applied, Delta, FleetSnapshot, FleetState, FleetView, Lease, Liveness, LivenessInput,
    ModelState, PerfSample, ReconnectPolicy,
};
use proptest::prelude::*;

const HOSTS: [&str; 3] = ["alpha", "beta", "gamma"];
const MODELS: [&str; 3] = ["qwen", "llama", "embed"];
const STATES: [ModelState; 5] = [
    ModelState::Stopped,
    ModelState::Starting,
    ModelState::Ready,
    ModelState::Stopping,
    ModelState::Shutdown,
];

#[derive(Debug, Clone)]
enum Op {
    Add(usize),
    Remove(usize),
    Live(usize, u8),
    Models(usize, Vec<(usize, usize)>),
    Model(usize, usize, usize),
    Ttl(usize, usize, Option<u64>),
    Used(usize, usize),
    InFlight(usize, u32),
    Perf(usize),
    Lease(usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0..HOSTS.len();
    let m = 0..MODELS.len();
    let s = 0..STATES.len();
    prop_oneof![
        2 => h.clone().prop_map(Op::Add),
        1 => h.clone().prop_map(Op::Remove),
        3 => (h.clone(), 0u8..3).prop_map(|(h, i)| Op::Live(h, i)),
        2 => (h.clone(), prop::collection::vec((m.clone(), s.clone()), 0..4)).prop_map(|(h, v)| Op::Models(h, v)),
        3 => (h.clone(), m.clone(), s).prop_map(|(h, m, s)| Op::Model(h, m, s)),
        1 => (h.clone(), m.clone(), prop::option::of(0u64..600)).prop_map(|(h, m, t)| Op::Ttl(h, m, t)),
        2 => (h.clone(), m).prop_map(|(h, m)| Op::Used(h, m)),
        2 => (h.clone(), 0u32..5).prop_map(|(h, n)| Op::InFlight(h, n)),
        1 => h.clone().prop_map(Op::Perf),
        1 => (h, any::<bool>()).prop_map(|(h, b)| Op::Lease(h, b)),
    ]
}

struct Server {
    fleet: FleetState,
    live: Vec<Liveness>,
    now: u64,
}

impl Server {
    fn new() -> Self {
        Server {
            fleet: FleetState::with_last_seen_granularity(0),
            live: vec![Liveness::new(); HOSTS.len()],
            now: 1_000,
        }
    }

    /// Applies one op; returns its deltas (errors for unknown hosts produce none).
    fn apply(&mut self, op: &Op) -> Vec<Delta> {
        self.now += 250;
        let now = self.now;
        let policy = ReconnectPolicy::default();
        let f = &mut self.fleet;
        match op {
            Op::Add(h) => f.add_host(HOSTS[*h]).into_iter().collect(),
            Op::Remove(h) => f.remove_host(HOSTS[*h]).into_iter().collect(),
            Op::Live(h, i) => {
                let input = [
                    LivenessInput::Connected,
                    LivenessInput::Event,
                    LivenessInput::Error,
                ][*i as usize];
                self.live[*h].step(input, now, &policy, 0.3);
                f.set_liveness(HOSTS[*h], &self.live[*h])
                    .ok()
                    .flatten()
                    .into_iter()
                    .collect()
            }
            Op::Models(h, v) => {
                let mut list: Vec<(String, ModelState)> = Vec::new();
                for (m, s) in v {
                    if !list.iter().any(|(n, _)| n == MODELS[*m]) {
                        list.push((MODELS[*m].to_owned(), STATES[*s]));
                    }
                }
                f.set_models(HOSTS[*h], &list, now).unwrap_or_default()
            }
            Op::Model(h, m, s) => f
                .set_model_state(HOSTS[*h], MODELS[*m], STATES[*s], now)
                .ok()
                .flatten()
                .into_iter()
                .collect(),
            Op::Ttl(h, m, t) => f
                .set_model_ttl(HOSTS[*h], MODELS[*m], *t)
                .ok()
                .flatten()
                .into_iter()
                .collect(),
            Op::Used(h, m) => f
                .model_used(HOSTS[*h], MODELS[*m], now)
                .ok()
                .flatten()
                .into_iter()
                .collect(),
            Op::InFlight(h, n) => f
                .set_in_flight(HOSTS[*h], *n)
                .ok()
                .flatten()
                .into_iter()
                .collect(),
            Op::Perf(h) => {
                let sample = PerfSample {
                    at: now,
                    vram_used_mb: Some(now % 24_000),
                    vram_total_mb: Some(24_000),
                    gpu_temp_c: Some(40.0 + (now % 30) as f64),
                    power_w: Some(120.5),
                };
                f.set_perf(HOSTS[*h], sample)
                    .ok()
                    .flatten()
                    .into_iter()
                    .collect()
            }
            Op::Lease(h, on) => {
                let lease = on.then(|| Lease {
                    provider: HOSTS[*h].to_owned(),
                    holder: format!("bench:{now}"),
                    purpose: "bench".to_owned(),
                    token: now,
                    acquired_at: now,
                    expires_at: now + 60_000,
                });
                f.set_lease(HOSTS[*h], lease)
                    .ok()
                    .flatten()
                    .into_iter()
                    .collect()
            }
        }
    }
}

/// Runs `ops`, returning every delta and, for each op boundary, (deltas so far, snapshot).
fn run(ops: &[Op]) -> (Server, Vec<Delta>, Vec<(usize, FleetSnapshot)>) {
    let mut server = Server::new();
    let mut deltas = Vec::new();
    let mut snaps = vec![(0, server.fleet.snapshot())];
    for op in ops {
        deltas.extend(server.apply(op));
        snaps.push((deltas.len(), server.fleet.snapshot()));
    }
    (server, deltas, snaps)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The client subscribes at delta `j`, gets the snapshot taken at op boundary `k` (after
    /// `j`) at any point of its delta stream, possibly with repeated deliveries: it always ends
    /// up with exactly the server's state and never asks for a resync.
    #[test]
    fn view_converges_for_any_interleaving(
        ops in prop::collection::vec(op(), 0..60),
        snap_pick in any::<prop::sample::Index>(),
        sub_pick in any::<prop::sample::Index>(),
        pos_pick in any::<prop::sample::Index>(),
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let (server, deltas, snaps) = run(&ops);
        let (k_deltas, snapshot) = snaps[snap_pick.index(snaps.len())].clone();
        let j = sub_pick.index(k_deltas + 1); // subscribed before the snapshot was taken
        let mut stream: Vec<Delta> = deltas[j..].to_vec();
        for d in &dups {
            if !stream.is_empty() {
                let i = d.index(stream.len());
                let copy = stream[i].clone();
                stream.insert(i + 1, copy); // a repeated delivery
            }
        }
        let p = pos_pick.index(stream.len() + 1);

        let mut view = FleetView::new();
        for d in &stream[..p] {
            prop_assert_eq!(view.apply_delta(d.clone()), Applied::Buffered);
        }
        view.apply_snapshot(snapshot);
        for d in &stream[p..] {
            prop_assert_ne!(view.apply_delta(d.clone()), Applied::Gap);
        }
        prop_assert_eq!(view.snapshot(), Some(server.fleet.snapshot()));
        prop_assert!(!view.needs_resync());
    }

    /// The same holds when every delta and snapshot travels as JSON (the SSE path).
    #[test]
    fn view_converges_through_json(ops in prop::collection::vec(op(), 0..40), snap_pick in any::<prop::sample::Index>()) {
        let (server, deltas, snaps) = run(&ops);
        let (k, snapshot) = snaps[snap_pick.index(snaps.len())].clone();
        let mut view = FleetView::new();
        let json = serde_json::to_string(&snapshot).unwrap();
        view.apply_snapshot(serde_json::from_str(&json).unwrap());
        for d in &deltas[k..] {
            let json = serde_json::to_string(d).unwrap();
            view.apply_delta(serde_json::from_str(&json).unwrap());
        }
        prop_assert_eq!(view.snapshot(), Some(server.fleet.snapshot()));
    }

    /// Per host, seqs are strictly increasing by one, across removal and re-adding.
    #[test]
    fn seq_is_monotonic_per_host(ops in prop::collection::vec(op(), 0..80)) {
        let (_, deltas, _) = run(&ops);
        for host in HOSTS {
            let seqs: Vec<u64> = deltas.iter().filter(|d| d.provider == host).map(|d| d.seq).collect();
            for (i, s) in seqs.iter().enumerate() {
                prop_assert_eq!(*s, i as u64 + 1);
            }
        }
    }

    /// A lost delta is noticed as soon as a later delta for the same host arrives.
    #[test]
    fn lost_delta_triggers_resync(ops in prop::collection::vec(op(), 1..60), lose in any::<prop::sample::Index>()) {
        let (_, deltas, _) = run(&ops);
        prop_assume!(!deltas.is_empty());
        let lost = lose.index(deltas.len());
        let later_same_host = deltas[lost + 1..].iter().any(|d| d.provider == deltas[lost].provider);
        let mut view = FleetView::new();
        view.apply_snapshot(FleetSnapshot::default());
        for (i, d) in deltas.iter().enumerate() {
            if i != lost {
                view.apply_delta(d.clone());
            }
        }
        prop_assert_eq!(view.needs_resync(), later_same_host);
    }
}

#[test]
fn resync_snapshot_clears_the_flag_and_restores_state() {
    let (server, deltas, _) = run(&[Op::Add(0), Op::InFlight(0, 2), Op::InFlight(0, 3)]);
    let mut view = FleetView::new();
    view.apply_snapshot(FleetSnapshot::default());
    view.apply_delta(deltas[0].clone());
    assert_eq!(view.apply_delta(deltas[2].clone()), Applied::Gap);
    assert!(view.needs_resync());
    view.apply_snapshot(server.fleet.snapshot());
    assert!(!view.needs_resync());
    assert_eq!(view.host("alpha").map(|h| h.in_flight), Some(3));
}
