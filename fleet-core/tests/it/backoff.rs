//! Backoff delays stay within bounds; the breaker opens after exactly `breaker_threshold`
//! consecutive failures; liveness follows a reference model.

use boo_fleet_core::{
    Liveness, LivenessInput, LivenessState, NextStep, Randomness, ReconnectPolicy, SplitMix64,
};
use proptest::prelude::*;

fn policy() -> impl Strategy<Value = ReconnectPolicy> {
    (
        1u64..5_000,
        0u64..120_000,
        0.0f64..1.0,
        1u32..12,
        1u64..300_000,
    )
        .prop_map(|(base, extra, jitter, threshold, probe)| ReconnectPolicy {
            base_ms: base,
            max_ms: base + extra,
            jitter_max: jitter,
            breaker_threshold: threshold,
            probe_interval_ms: probe,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Every delay lies in [d, d * (1 + jitter_max)) with d = min(base * 2^(n-1), max), and the
    /// jitter-free delay never decreases with the failure count.
    #[test]
    fn delays_within_bounds(p in policy(), n in 1u32..200, j in 0.0f64..1.0) {
        prop_assert!(p.validate().is_ok());
        let d = p.base_delay_ms(n);
        let expect = p.base_ms.saturating_mul(1u64.checked_shl((n - 1).min(63)).unwrap_or(u64::MAX)).min(p.max_ms);
        prop_assert_eq!(d, expect);
        prop_assert!(d >= p.base_ms && d <= p.max_ms);
        let delay = p.delay_ms(n, j);
        prop_assert!(delay >= d);
        prop_assert!((delay as f64) < d as f64 * (1.0 + p.jitter_max) || delay == d);
        prop_assert!(p.base_delay_ms(n + 1) >= d);
    }

    /// With the default policy: 1 s → 30 s, jitter at most +50 %.
    #[test]
    fn default_policy_bounds(n in 1u32..100, j in 0.0f64..1.0) {
        let p = ReconnectPolicy::default();
        let delay = p.delay_ms(n, j);
        prop_assert!((1_000..45_000).contains(&delay), "delay {delay}");
        if n >= 6 {
            prop_assert!(delay >= 30_000);
        }
    }

    /// Any sequence of inputs: the machine matches a reference model (failure counter, state,
    /// next step) and the breaker opens exactly when the counter reaches the threshold.
    #[test]
    fn liveness_matches_reference(p in policy(), inputs in prop::collection::vec(0u8..5, 0..80), seed in any::<u64>()) {
        let mut rng = SplitMix64::new(seed);
        let mut l = Liveness::new();
        let mut failures = 0u32;
        let mut last_seen = None;
        let mut now = 10_000u64;
        for i in inputs {
            now += 777;
            let j = rng.next_unit();
            prop_assert!((0.0..1.0).contains(&j));
            let input = [
                LivenessInput::Connected,
                LivenessInput::Event,
                LivenessInput::Error,
                LivenessInput::ProbeSucceeded,
                LivenessInput::ProbeFailed,
            ][i as usize];
            let step = l.step(input, now, &p, j);
            match input {
                LivenessInput::Connected | LivenessInput::Event | LivenessInput::ProbeSucceeded => {
                    failures = 0;
                    last_seen = Some(now);
                    prop_assert_eq!(step.to, LivenessState::Connected);
                    prop_assert_eq!(step.next, NextStep::Continue);
                }
                LivenessInput::Error | LivenessInput::ProbeFailed => {
                    failures += 1;
                    if failures >= p.breaker_threshold {
                        prop_assert_eq!(step.to, LivenessState::Down);
                        prop_assert_eq!(step.next, NextStep::ProbeAt(now + p.probe_interval_ms));
                    } else {
                        prop_assert_eq!(step.to, LivenessState::Reconnecting);
                        prop_assert_eq!(step.next, NextStep::RetryAt(now + p.delay_ms(failures, j)));
                    }
                }
            }
            prop_assert_eq!(l.failures(), failures);
            prop_assert_eq!(l.last_seen_at(), last_seen);
        }
    }
}

#[test]
fn breaker_opens_after_exactly_six_failures_and_probe_recovers() {
    let p = ReconnectPolicy::default();
    let mut l = Liveness::new();
    l.step(LivenessInput::Connected, 0, &p, 0.0);
    let mut now = 0;
    let mut states = Vec::new();
    for _ in 0..6 {
        now += 1_000;
        states.push(l.step(LivenessInput::Error, now, &p, 0.99).to);
    }
    assert_eq!(states[..5], [LivenessState::Reconnecting; 5]);
    assert_eq!(states[5], LivenessState::Down);
    // Failed half-open probe: stays down, next probe 60 s later.
    let s = l.step(LivenessInput::ProbeFailed, 100_000, &p, 0.5);
    assert_eq!(
        (s.to, s.next),
        (LivenessState::Down, NextStep::ProbeAt(160_000))
    );
    // Successful probe: the host recovers by itself.
    let s = l.step(LivenessInput::ProbeSucceeded, 160_000, &p, 0.5);
    assert!(s.changed());
    assert_eq!(
        (s.to, l.failures(), l.last_seen_at()),
        (LivenessState::Connected, 0, Some(160_000))
    );
}

#[test]
fn invalid_policies_name_the_field() {
    let cases = [
        (
            ReconnectPolicy {
                base_ms: 0,
                ..Default::default()
            },
            "base_ms",
        ),
        (
            ReconnectPolicy {
                max_ms: 10,
                ..Default::default()
            },
            "max_ms",
        ),
        (
            ReconnectPolicy {
                jitter_max: -0.1,
                ..Default::default()
            },
            "jitter_max",
        ),
        (
            ReconnectPolicy {
                breaker_threshold: 0,
                ..Default::default()
            },
            "breaker_threshold",
        ),
        (
            ReconnectPolicy {
                probe_interval_ms: 0,
                ..Default::default()
            },
            "probe_interval_ms",
        ),
    ];
    for (p, field) in cases {
        let err = p.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn policy_deserializes_with_defaults_for_missing_fields() {
    let p: ReconnectPolicy = serde_json::from_str(r#"{"breaker_threshold":3}"#).unwrap();
    assert_eq!(p.breaker_threshold, 3);
    assert_eq!(p.base_ms, 1_000);
    assert_eq!(p.probe_interval_ms, 60_000);
}
