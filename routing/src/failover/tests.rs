//! Unit tests for the failover state machine.

use crate::*;
use serde_json::json;

fn ready(id: &str) -> CandidateFacts {
    let mut c = CandidateFacts::new(id.parse().unwrap());
    c.liveness = Liveness::Connected;
    c.state = LoadState::Ready;
    c.n_ctx = Some(32_768);
    c
}

/// Decision over ready models `a/1..=n` in that order with the given limits.
fn decision(n: usize, limits: serde_json::Value) -> Decision {
    let ids: Vec<String> = (1..=n).map(|i| format!("a/{i}")).collect();
    let p = RoutePolicy::from_json(
        &json!({"name": "auto", "candidates": ids, "order": ["priority"], "limits": limits}),
    )
    .unwrap();
    decide(
        &p,
        &RequestFeatures::default(),
        &FleetView::new(ids.iter().map(|i| ready(i)).collect()),
    )
}

fn try_next(f: &mut Failover, now: u64) -> AttemptPlan {
    match f.next_attempt(now).unwrap() {
        Step::Try(p) => p,
        other => panic!("expected an attempt, got {other:?}"),
    }
}

#[test]
fn retryable_faults_move_to_the_next_candidate_once_each() {
    let d = decision(5, json!({"max_attempts": 5}));
    let mut f = Failover::new(&d, 0);
    let mut tried = Vec::new();
    for (i, o) in [
        Outcome::Refused,
        Outcome::Reset,
        Outcome::Status(503),
        Outcome::Status(429),
    ]
    .into_iter()
    .enumerate()
    {
        let p = try_next(&mut f, i as u64 * 10);
        assert_eq!(p.index, i);
        tried.push(p.model.to_string());
        assert_eq!(
            f.on_outcome(o, i as u64 * 10 + 5).unwrap(),
            Verdict::Retry,
            "{o:?}"
        );
    }
    let p = try_next(&mut f, 100);
    tried.push(p.model.to_string());
    assert_eq!(
        f.on_outcome(Outcome::Success, 150).unwrap(),
        Verdict::Done(Final::Served {
            model: p.model,
            index: 4
        })
    );
    assert_eq!(tried, vec!["a/1", "a/2", "a/3", "a/4", "a/5"]);
    assert_eq!(f.history().len(), 5);
    assert_eq!(f.history()[2].outcome, Some(Outcome::Status(503)));
}

#[test]
fn all_candidates_failing_exhausts_with_the_last_fault() {
    let d = decision(2, json!({}));
    let mut f = Failover::new(&d, 0);
    try_next(&mut f, 0);
    assert_eq!(f.on_outcome(Outcome::Refused, 1).unwrap(), Verdict::Retry);
    try_next(&mut f, 1);
    assert_eq!(
        f.on_outcome(Outcome::FirstByteTimeout, 2).unwrap(),
        Verdict::Done(Final::Failed {
            failure: Failure::Exhausted {
                last: Outcome::FirstByteTimeout
            }
        })
    );
    // Finished: nothing more to try, and driving it further is a caller bug.
    assert!(matches!(
        f.next_attempt(3),
        Err(RoutingError::IllegalTransition { .. })
    ));
}

#[test]
fn client_errors_are_not_retried() {
    let d = decision(3, json!({}));
    let mut f = Failover::new(&d, 0);
    try_next(&mut f, 0);
    assert_eq!(
        f.on_outcome(Outcome::Status(400), 1).unwrap(),
        Verdict::Done(Final::Failed {
            failure: Failure::Rejected { status: 400 }
        })
    );
    assert_eq!(f.history().len(), 1);
}

#[test]
fn stream_cut_after_first_byte_is_never_retried() {
    let d = decision(3, json!({}));
    let mut f = Failover::new(&d, 0);
    try_next(&mut f, 0);
    assert_eq!(
        f.on_outcome(Outcome::FirstByte, 10).unwrap(),
        Verdict::Committed
    );
    assert_eq!(f.first_byte_deadline_ms(), None);
    assert_eq!(
        f.on_outcome(Outcome::StreamCut, 20).unwrap(),
        Verdict::Done(Final::Failed {
            failure: Failure::StreamCut
        })
    );
    assert!(f.next_attempt(30).is_err());
    let r = serde_json::to_value(f.report()).unwrap();
    assert_eq!(r["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(r["attempts"][0]["outcome"], json!({"kind": "stream_cut"}));
    assert_eq!(
        r["result"],
        json!({"result": "failed", "failure": {"failure": "stream_cut"}})
    );
}

#[test]
fn faults_after_first_byte_cannot_be_turned_into_retries() {
    let d = decision(3, json!({}));
    let mut f = Failover::new(&d, 0);
    try_next(&mut f, 0);
    f.on_outcome(Outcome::Status(200), 10).unwrap(); // a success status commits
    for o in [
        Outcome::Status(502),
        Outcome::FirstByteTimeout,
        Outcome::Refused,
        Outcome::FirstByte,
    ] {
        assert!(
            matches!(
                f.on_outcome(o, 11),
                Err(RoutingError::IllegalTransition { .. })
            ),
            "{o:?}"
        );
    }
    // A reset while streaming is a stream cut.
    assert_eq!(
        f.on_outcome(Outcome::Reset, 12).unwrap(),
        Verdict::Done(Final::Failed {
            failure: Failure::StreamCut
        })
    );
}

#[test]
fn total_deadline_stops_new_attempts() {
    let d = decision(3, json!({"total_deadline_ms": 1000, "first_byte_ms": 400}));
    let mut f = Failover::new(&d, 5_000);
    assert_eq!(f.deadline_ms(), 6_000);
    let p = try_next(&mut f, 5_000);
    assert_eq!(p.first_byte_deadline_ms, 5_400);
    assert_eq!(
        f.on_outcome(Outcome::FirstByteTimeout, 5_400).unwrap(),
        Verdict::Retry
    );
    // The first-byte deadline never exceeds the total deadline.
    let p = try_next(&mut f, 5_800);
    assert_eq!(p.first_byte_deadline_ms, 6_000);
    assert_eq!(
        f.on_outcome(Outcome::FirstByteTimeout, 6_000).unwrap(),
        Verdict::Done(Final::Failed {
            failure: Failure::DeadlineExceeded
        })
    );

    let mut late = Failover::new(&d, 0);
    try_next(&mut late, 0);
    late.on_outcome(Outcome::Refused, 10).unwrap();
    assert_eq!(
        late.next_attempt(1_000).unwrap(),
        Step::GiveUp(Failure::DeadlineExceeded)
    );
}

#[test]
fn reported_load_time_does_not_count_against_first_byte_budget() {
    let d = decision(
        2,
        json!({"first_byte_ms": 1000, "total_deadline_ms": 600000}),
    );
    let mut f = Failover::new(&d, 0);
    try_next(&mut f, 0);
    assert_eq!(f.first_byte_deadline_ms(), Some(1_000));
    f.on_model_loading(200).unwrap();
    // While loading only the total deadline applies.
    assert_eq!(f.first_byte_deadline_ms(), Some(600_000));
    f.on_model_loaded(20_200).unwrap();
    assert_eq!(f.first_byte_deadline_ms(), Some(21_200));
    assert_eq!(
        f.on_outcome(Outcome::FirstByte, 20_500).unwrap(),
        Verdict::Committed
    );
    assert_eq!(f.history()[0].load_wait_ms, 20_000);
}

#[test]
fn a_first_byte_during_a_reported_load_records_the_load_wait() {
    let d = decision(2, json!({"first_byte_ms": 1000}));
    let mut f = Failover::new(&d, 0);
    try_next(&mut f, 0);
    f.on_model_loading(100).unwrap();
    // The response head arrives before anyone saw the model become ready.
    assert_eq!(
        f.on_outcome(Outcome::FirstByte, 5_100).unwrap(),
        Verdict::Committed
    );
    assert_eq!(f.history()[0].load_wait_ms, 5_000);
    // The stream's end does not count it again.
    f.on_outcome(Outcome::Success, 6_000).unwrap();
    assert_eq!(f.history()[0].load_wait_ms, 5_000);
}

#[test]
fn load_time_counts_when_cold_starts_are_forbidden() {
    let d = decision(2, json!({"first_byte_ms": 1000, "allow_cold_start": false}));
    let mut f = Failover::new(&d, 0);
    try_next(&mut f, 0);
    f.on_model_loading(200).unwrap();
    assert_eq!(f.first_byte_deadline_ms(), Some(1_000));
    f.on_model_loaded(20_200).unwrap();
    assert_eq!(f.first_byte_deadline_ms(), Some(1_000));
    assert_eq!(f.history()[0].load_wait_ms, 0);
}

#[test]
fn planned_cold_attempt_gets_its_measured_load_time() {
    let mut cold = ready("a/cold");
    cold.state = LoadState::Stopped;
    cold.load_ms = Some(15_000);
    let p = RoutePolicy::from_json(
        &json!({"name": "auto", "candidates": ["a/cold"], "limits": {"first_byte_ms": 2000}}),
    )
    .unwrap();
    let d = decide(&p, &RequestFeatures::default(), &FleetView::new(vec![cold]));
    let mut f = Failover::new(&d, 100);
    assert_eq!(
        try_next(&mut f, 100).first_byte_deadline_ms,
        100 + 2_000 + 15_000
    );
}

#[test]
fn no_candidate_gives_up_at_once() {
    let p = RoutePolicy::from_json(&json!({"name": "auto", "candidates": ["a/x"]})).unwrap();
    let d = decide(&p, &RequestFeatures::default(), &FleetView::default());
    let mut f = Failover::new(&d, 0);
    assert_eq!(
        f.next_attempt(0).unwrap(),
        Step::GiveUp(Failure::NoCandidate)
    );
    assert_eq!(
        f.result(),
        Some(&Final::Failed {
            failure: Failure::NoCandidate
        })
    );
}

#[test]
fn out_of_order_calls_are_typed_errors() {
    let d = decision(2, json!({}));
    let mut f = Failover::new(&d, 0);
    let e = f.on_outcome(Outcome::Success, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "failover: success is not valid while no attempt is running"
    );
    assert!(f.on_model_loading(0).is_err());
    try_next(&mut f, 0);
    assert!(matches!(
        f.next_attempt(1),
        Err(RoutingError::IllegalTransition {
            event: "next_attempt",
            ..
        })
    ));
    assert!(f.on_outcome(Outcome::StreamCut, 1).is_err());
}
