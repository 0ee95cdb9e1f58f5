//! A virtual-clock simulation: a connector drives `Liveness` and `FleetState` against a host
//! with seeded outages; a subscriber follows through `FleetView`.
//!
//! Checks what a user would notice: a killed host goes `reconnecting` then `down` after exactly
//! the breaker threshold of failed attempts, a host that comes back is `connected` again within
//! one probe interval (or one backoff delay), and the subscriber always sees the server's state.

use boo_fleet_core::{
    FleetState, FleetView, Liveness, LivenessInput, LivenessState, NextStep, Randomness,
    ReconnectPolicy, SplitMix64,
};
use proptest::prelude::*;

/// Host up/down schedule: sorted, disjoint outage windows `[start, end)`.
fn up_at(outages: &[(u64, u64)], t: u64) -> bool {
    !outages.iter().any(|(s, e)| (*s..*e).contains(&t))
}

fn outages() -> impl Strategy<Value = Vec<(u64, u64)>> {
    prop::collection::vec((1_000u64..400_000, 1u64..300_000), 0..4).prop_map(|mut v| {
        v.sort();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (s, len) in v {
            let s = out.last().map_or(s, |(_, e)| s.max(e + 1));
            out.push((s, s + len));
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn outages_drive_liveness_and_the_view_follows(outages in outages(), seed in any::<u64>()) {
        let policy = ReconnectPolicy::default();
        let mut rng = SplitMix64::new(seed);
        let mut fleet = FleetState::new();
        let mut view = FleetView::new();
        view.apply_snapshot(fleet.snapshot());
        let publish = |fleet_deltas: Vec<boo_fleet_core::Delta>, view: &mut FleetView| {
            for d in fleet_deltas {
                view.apply_delta(d);
            }
        };
        publish(fleet.add_host("gpu").into_iter().collect(), &mut view);

        let mut live = Liveness::new();
        let end = outages.last().map_or(0, |(_, e)| *e) + 200_000;
        let mut t = 0u64;
        let mut failed_in_a_row = 0u32;
        let mut connected_at_least_once_after: Vec<bool> = vec![false; outages.len()];
        let mut steps = 0;
        // Connector loop: connect attempts at scheduled times; while connected, an event every
        // 5 s until the host goes away (the stream then errors at the outage start).
        while t < end && steps < 10_000 {
            steps += 1;
            let step = if up_at(&outages, t) {
                failed_in_a_row = 0;
                live.step(LivenessInput::Connected, t, &policy, rng.next_unit())
            } else {
                failed_in_a_row += 1;
                let input = if live.state() == LivenessState::Down { LivenessInput::ProbeFailed } else { LivenessInput::Error };
                live.step(input, t, &policy, rng.next_unit())
            };
            // The breaker opens exactly at the threshold.
            prop_assert_eq!(step.to == LivenessState::Down, failed_in_a_row >= policy.breaker_threshold);
            publish(fleet.set_liveness("gpu", &live).unwrap().into_iter().collect(), &mut view);
            match step.next {
                NextStep::Continue => {
                    for (i, (s, _)) in outages.iter().enumerate() {
                        if t >= *s {
                            connected_at_least_once_after[i] = true;
                        }
                    }
                    // Stay connected until the next outage starts (events keep last_seen fresh).
                    let next_outage = outages.iter().map(|(s, _)| *s).find(|s| *s > t).unwrap_or(end);
                    let mut e = t + 5_000;
                    while e < next_outage {
                        live.step(LivenessInput::Event, e, &policy, 0.0);
                        publish(fleet.set_liveness("gpu", &live).unwrap().into_iter().collect(), &mut view);
                        e += 5_000;
                    }
                    t = next_outage;
                }
                NextStep::RetryAt(at) => {
                    let wait = at - t;
                    prop_assert!((1_000..45_000).contains(&wait), "retry wait {wait}");
                    t = at;
                }
                NextStep::ProbeAt(at) => {
                    prop_assert_eq!(at - t, policy.probe_interval_ms);
                    t = at;
                }
            }
            // A host that is back is reconnected within one probe interval.
            for (s, e) in &outages {
                if t > e + policy.probe_interval_ms && up_at(&outages, *e) && *s < t {
                    let later_outage = outages.iter().any(|(s2, _)| *s2 > *e && *s2 <= t);
                    if !later_outage {
                        prop_assert_eq!(live.state(), LivenessState::Connected);
                    }
                }
            }
        }
        prop_assert!(connected_at_least_once_after.iter().all(|c| *c), "recovered after every outage");
        prop_assert_eq!(view.snapshot(), Some(fleet.snapshot()));
        prop_assert!(!view.needs_resync());
    }
}

#[test]
fn killed_host_goes_reconnecting_then_down_and_recovers() {
    let policy = ReconnectPolicy::default();
    let mut live = Liveness::new();
    live.step(LivenessInput::Connected, 0, &policy, 0.0);
    let mut t = 10_000; // the host dies here
    let mut seen = vec![LivenessState::Connected];
    let mut attempts = 0;
    while live.state() != LivenessState::Down {
        let s = live.step(LivenessInput::Error, t, &policy, 0.5);
        attempts += 1;
        seen.push(s.to);
        t = s.next.at().unwrap();
    }
    assert_eq!(attempts, 6);
    assert_eq!(seen[1..6], [LivenessState::Reconnecting; 5]);
    assert_eq!(live.last_seen_at(), Some(0));
    // Host comes back; the next half-open probe reconnects.
    let s = live.step(LivenessInput::ProbeSucceeded, t, &policy, 0.5);
    assert_eq!(
        (s.from, s.to),
        (LivenessState::Down, LivenessState::Connected)
    );
}
