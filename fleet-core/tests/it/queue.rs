//! The action queue never exceeds its cap and never runs an action against a host that is not
//! connected; the error mapping is 429 / 503 / 409.

use std::collections::BTreeMap;

use boo_fleet_core::{
    Action, ActionQueue, Error, HostSnapshot, Lease, LivenessState, ModelState, ModelStatus,
    QueueConfig, SkipReason,
};
use proptest::prelude::*;

fn host(liveness: LivenessState, lease: Option<Lease>) -> HostSnapshot {
    let mut models = BTreeMap::new();
    models.insert("qwen".to_owned(), ModelStatus::new(ModelState::Ready, 0));
    models.insert("llama".to_owned(), ModelStatus::new(ModelState::Stopped, 0));
    HostSnapshot {
        provider: "gpu".to_owned(),
        seq: 1,
        liveness,
        last_seen_at: Some(0),
        models,
        in_flight: 0,
        perf: None,
        lease,
    }
}

fn bench_lease() -> Lease {
    Lease {
        provider: "gpu".to_owned(),
        holder: "bench:run-9".to_owned(),
        purpose: "bench".to_owned(),
        token: 1,
        acquired_at: 0,
        expires_at: u64::MAX,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit(u8, bool),
    Next,
    Finish,
    Liveness(u8),
    Lease(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..5, any::<bool>()).prop_map(|(a, c)| Op::Submit(a, c)),
        3 => Just(Op::Next),
        2 => Just(Op::Finish),
        2 => (0u8..3).prop_map(Op::Liveness),
        1 => any::<bool>().prop_map(Op::Lease),
    ]
}

fn action(i: u8) -> Action {
    match i {
        0 => Action::Warm {
            model: "llama".into(),
        },
        1 => Action::Warm {
            model: "mistral".into(),
        },
        2 => Action::Unload {
            model: "qwen".into(),
        },
        3 => Action::Unload {
            model: "mistral".into(),
        },
        _ => Action::UnloadAll,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn cap_and_liveness_rules_hold(ops in prop::collection::vec(op(), 0..120), cap in 1usize..6) {
        let mut q = ActionQueue::with_config("gpu", QueueConfig { cap, max_age_ms: u64::MAX });
        let mut h = host(LivenessState::Connected, None);
        let mut now = 0u64;
        for op in ops {
            now += 100;
            match op {
                Op::Submit(a, confirmed) => {
                    let before = q.len();
                    match q.submit(action(a), &h, confirmed, now) {
                        Ok(s) => {
                            prop_assert!(h.liveness != LivenessState::Down);
                            prop_assert!(h.lease.is_none() || confirmed);
                            prop_assert!(s.position >= 1 && s.position <= q.len());
                        }
                        Err(e @ Error::HostOffline { .. }) => {
                            prop_assert_eq!(h.liveness, LivenessState::Down);
                            prop_assert_eq!(e.http_status(), 503);
                        }
                        Err(e @ Error::RequiresConfirmation { .. }) => {
                            prop_assert!(h.lease.is_some() && !confirmed);
                            prop_assert_eq!(e.http_status(), 409);
                        }
                        Err(Error::QueueFull { queued, .. }) => {
                            prop_assert_eq!(before, cap);
                            prop_assert_eq!(queued.len(), cap + usize::from(q.running().is_some()));
                        }
                        Err(other) => prop_assert!(false, "unexpected {other}"),
                    }
                }
                Op::Next => {
                    let out = q.next(&h, now);
                    if let Some(run) = &out.run {
                        prop_assert_eq!(h.liveness, LivenessState::Connected);
                        prop_assert!(h.lease.is_none() || run.confirmed);
                    }
                    if h.liveness == LivenessState::Down {
                        prop_assert!(out.run.is_none() && q.is_empty());
                        prop_assert!(out.skipped.iter().all(|(_, r)| *r == SkipReason::HostDown));
                    }
                }
                Op::Finish => {
                    if let Some(id) = q.running().map(|r| r.id) {
                        prop_assert!(q.finish(id));
                    }
                }
                Op::Liveness(i) => {
                    h.liveness = [LivenessState::Connected, LivenessState::Reconnecting, LivenessState::Down][i as usize];
                }
                Op::Lease(on) => h.lease = on.then(bench_lease),
            }
            prop_assert!(q.len() <= cap);
        }
    }
}

#[test]
fn full_queue_is_429_and_lists_what_is_queued() {
    let mut q = ActionQueue::new("gpu");
    let h = host(LivenessState::Connected, None);
    for m in ["a", "b", "c", "d"] {
        q.submit(Action::Warm { model: m.into() }, &h, false, 0)
            .unwrap();
    }
    let err = q.submit(Action::UnloadAll, &h, false, 0).unwrap_err();
    assert_eq!(err.http_status(), 429);
    let body = err.to_json_body();
    assert_eq!(body["queued"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        body["queued"][0],
        serde_json::json!({"action":"warm","model":"a"})
    );
    assert!(
        err.to_string()
            .contains("warm(a), warm(b), warm(c), warm(d)"),
        "{err}"
    );
}

#[test]
fn bench_lease_needs_confirmation_then_runs() {
    let mut q = ActionQueue::new("gpu");
    let h = host(LivenessState::Connected, Some(bench_lease()));
    let err = q.submit(Action::UnloadAll, &h, false, 0).unwrap_err();
    assert_eq!(err.http_status(), 409);
    assert_eq!(
        err.to_json_body(),
        serde_json::json!({"error":"bench in progress","requiresConfirmation":true,
                           "provider":"gpu","holder":"bench:run-9","purpose":"bench"})
    );
    assert!(q.is_empty());
    q.submit(Action::UnloadAll, &h, true, 0).unwrap();
    assert_eq!(
        q.next(&h, 10).run.map(|r| r.action),
        Some(Action::UnloadAll)
    );
}

#[test]
fn down_host_is_503_and_drains_on_dequeue() {
    let mut q = ActionQueue::new("gpu");
    let mut h = host(LivenessState::Down, None);
    let err = q.submit(Action::UnloadAll, &h, true, 0).unwrap_err();
    assert_eq!(
        (err.http_status(), err.to_json_body()["error"].as_str()),
        (503, Some("host offline"))
    );

    h.liveness = LivenessState::Connected;
    q.submit(
        Action::Warm {
            model: "llama".into(),
        },
        &h,
        false,
        0,
    )
    .unwrap();
    h.liveness = LivenessState::Reconnecting;
    assert_eq!(q.next(&h, 1), Default::default()); // waits, keeps the action
    assert_eq!(q.len(), 1);
    h.liveness = LivenessState::Down;
    let out = q.next(&h, 2);
    assert!(out.run.is_none());
    assert_eq!(out.skipped.len(), 1);
    assert_eq!(out.skipped[0].1, SkipReason::HostDown);
}

#[test]
fn stale_actions_are_skipped_on_dequeue() {
    let mut q = ActionQueue::with_config(
        "gpu",
        QueueConfig {
            cap: 4,
            max_age_ms: 1_000,
        },
    );
    let h = host(LivenessState::Connected, None);
    q.submit(
        Action::Warm {
            model: "qwen".into(),
        },
        &h,
        false,
        0,
    )
    .unwrap(); // already ready
    q.submit(
        Action::Unload {
            model: "llama".into(),
        },
        &h,
        false,
        0,
    )
    .unwrap(); // already stopped
    q.submit(
        Action::Warm {
            model: "llama".into(),
        },
        &h,
        false,
        0,
    )
    .unwrap(); // runnable
    let out = q.next(&h, 500);
    let reasons: Vec<SkipReason> = out.skipped.iter().map(|(_, r)| *r).collect();
    assert_eq!(reasons, [SkipReason::AlreadyLoaded, SkipReason::NotLoaded]);
    let run = out.run.unwrap();
    assert_eq!(
        run.action,
        Action::Warm {
            model: "llama".into()
        }
    );
    // One at a time: nothing else runs until the running action finishes.
    q.submit(Action::UnloadAll, &h, false, 600).unwrap();
    assert!(q.next(&h, 700).run.is_none());
    assert!(q.finish(run.id));
    assert!(!q.finish(run.id));
    // Too old by now.
    let out = q.next(&h, 5_000);
    assert_eq!(out.skipped[0].1, SkipReason::Expired);
}

#[test]
fn identical_waiting_action_is_coalesced() {
    let mut q = ActionQueue::new("gpu");
    let h = host(LivenessState::Connected, None);
    let a = q
        .submit(
            Action::Warm {
                model: "llama".into(),
            },
            &h,
            false,
            0,
        )
        .unwrap();
    let b = q
        .submit(
            Action::Warm {
                model: "llama".into(),
            },
            &h,
            false,
            5,
        )
        .unwrap();
    assert_eq!((b.id, b.position, b.coalesced), (a.id, 1, true));
    assert_eq!(q.len(), 1);
}

#[test]
fn lease_that_appears_after_submission_skips_unconfirmed_actions() {
    let mut q = ActionQueue::new("gpu");
    let mut h = host(LivenessState::Connected, None);
    q.submit(Action::UnloadAll, &h, false, 0).unwrap();
    h.lease = Some(bench_lease());
    let out = q.next(&h, 10);
    assert!(out.run.is_none());
    assert_eq!(out.skipped[0].1, SkipReason::Leased);
}
