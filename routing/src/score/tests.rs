//! Unit tests for advisory scores.

use crate::*;

fn c(id: &str, f: impl FnOnce(&mut CandidateFacts)) -> CandidateFacts {
    let mut c = CandidateFacts::new(id.parse().unwrap());
    c.liveness = Liveness::Connected;
    c.state = LoadState::Ready;
    f(&mut c);
    c
}

#[test]
fn down_host_or_error_model_scores_zero_whatever_its_speed() {
    let down = advisory_score(
        &c("a/x", |c| {
            c.liveness = Liveness::Down;
            c.gen_tps = Some(500.0);
        }),
        Some(1.0),
    );
    assert_eq!(down.score, 0.0);
    let err = advisory_score(&c("a/y", |c| c.state = LoadState::Error), None);
    assert_eq!(err.score, 0.0);
}

#[test]
fn faster_healthier_and_better_models_score_higher() {
    let fast = advisory_score(&c("a/fast", |c| c.gen_tps = Some(90.0)), None);
    let slow = advisory_score(&c("a/slow", |c| c.gen_tps = Some(5.0)), None);
    assert!(fast.score > slow.score, "{fast:?} {slow:?}");
    let cold = advisory_score(
        &c("a/cold", |c| {
            c.gen_tps = Some(90.0);
            c.state = LoadState::Stopped;
        }),
        None,
    );
    assert!(fast.score > cold.score);
    let reconnecting = advisory_score(
        &c("a/r", |c| {
            c.gen_tps = Some(90.0);
            c.liveness = Liveness::Reconnecting;
        }),
        None,
    );
    assert!(cold.score > reconnecting.score);
    let good = advisory_score(&c("a/q", |c| c.gen_tps = Some(30.0)), Some(0.9));
    let bad = advisory_score(&c("a/q", |c| c.gen_tps = Some(30.0)), Some(0.1));
    assert!(good.score > bad.score);
    for r in [&fast, &slow, &cold, &reconnecting, &good, &bad] {
        assert!((0.0..=100.0).contains(&r.score), "{r:?}");
    }
    // A perfect model scores 100-ish, an unmeasured healthy one lands in the middle-upper range.
    let unmeasured = advisory_score(&c("a/u", |_| {}), None);
    assert!((70.0..90.0).contains(&unmeasured.score), "{unmeasured:?}");
}

#[test]
fn cloud_models_with_unknown_state_count_as_ready() {
    let cloud = advisory_score(
        &c("cloud/x", |c| {
            c.lane = Lane::Cloud;
            c.state = LoadState::Unknown;
            c.liveness = Liveness::Connected;
        }),
        None,
    );
    assert_eq!(cloud.health, 1.0);
}

#[test]
fn rows_are_sorted_best_first_and_carry_quality() {
    let fleet = FleetView::new(vec![
        c("a/slow", |c| c.gen_tps = Some(5.0)),
        c("b/fast", |c| c.gen_tps = Some(100.0)),
        c("c/down", |c| c.liveness = Liveness::Down),
    ]);
    let rows = advisory_scores(&fleet, |m| (m.provider.as_str() == "a").then_some(0.5));
    let ids: Vec<String> = rows.iter().map(|r| r.model.to_string()).collect();
    assert_eq!(ids, vec!["b/fast", "a/slow", "c/down"]);
    assert_eq!(rows[1].quality, Some(0.5));
    assert_eq!(rows[0].provider, "b");
    let v = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(v["model"], "b/fast");
    assert!(v.get("quality").is_none());
}
