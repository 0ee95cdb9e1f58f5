//! Unit tests: one per strategy and filter, plus explanation output.

use crate::decide::COMPACT_SKIPPED_MAX;
use crate::*;
use serde_json::json;

fn m(s: &str) -> ModelRef {
    s.parse().unwrap()
}

/// A healthy, ready local model with a 32k context.
fn ready(id: &str) -> CandidateFacts {
    let mut c = CandidateFacts::new(m(id));
    c.liveness = Liveness::Connected;
    c.state = LoadState::Ready;
    c.n_ctx = Some(32_768);
    c
}

fn with(id: &str, f: impl FnOnce(&mut CandidateFacts)) -> CandidateFacts {
    let mut c = ready(id);
    f(&mut c);
    c
}

fn policy(v: serde_json::Value) -> RoutePolicy {
    RoutePolicy::from_json(&v).unwrap()
}

fn req(prompt: u32, max_tokens: Option<u32>) -> RequestFeatures {
    RequestFeatures {
        est_prompt_tokens: prompt,
        max_tokens,
        ..Default::default()
    }
}

fn order(d: &Decision) -> Vec<String> {
    d.attempts.iter().map(|a| a.model.to_string()).collect()
}

fn reason(d: &Decision, id: &str) -> Option<SkipReason> {
    d.skipped
        .iter()
        .find(|(x, _)| x.to_string() == id)
        .map(|(_, r)| r.clone())
}

fn check(
    p: serde_json::Value,
    r: RequestFeatures,
    facts: Vec<CandidateFacts>,
    want: &[&str],
) -> Decision {
    let d = decide(&policy(p), &r, &FleetView::new(facts));
    assert_eq!(order(&d), want, "decision:\n{d}");
    d
}

#[test]
fn priority_follows_candidate_order() {
    check(
        json!({"name": "auto", "candidates": ["b/x", "a/x", "c/x"], "order": ["priority"]}),
        req(10, None),
        vec![ready("a/x"), ready("b/x"), ready("c/x")],
        &["b/x", "a/x", "c/x"],
    );
}

#[test]
fn prefer_loaded_ranks_ready_then_starting_then_cold_by_load_time() {
    check(
        json!({"name": "auto", "candidates": ["a/slow-load", "a/fast-load", "a/starting", "a/ready"], "order": ["prefer_loaded"]}),
        req(10, None),
        vec![
            with("a/slow-load", |c| {
                c.state = LoadState::Stopped;
                c.load_ms = Some(40_000);
            }),
            with("a/fast-load", |c| {
                c.state = LoadState::Stopped;
                c.load_ms = Some(5_000);
            }),
            with("a/starting", |c| c.state = LoadState::Starting),
            ready("a/ready"),
        ],
        &["a/ready", "a/starting", "a/fast-load"],
    );
}

#[test]
fn prefer_loaded_marks_cold_attempts_with_their_load_time() {
    let d = check(
        json!({"name": "auto", "candidates": ["a/cold", "b/warm"]}),
        req(10, None),
        vec![
            with("a/cold", |c| {
                c.state = LoadState::Stopped;
                c.load_ms = Some(12_000);
            }),
            ready("b/warm"),
        ],
        &["b/warm", "a/cold"],
    );
    assert!(!d.attempts[0].cold);
    assert!(d.attempts[1].cold);
    assert_eq!(d.attempts[1].expected_load_ms, Some(12_000));
}

#[test]
fn two_hosts_same_model_the_loaded_one_wins() {
    check(
        json!({"name": "auto:code", "candidates": ["desk/qwen", "laptop/qwen"]}),
        req(10, None),
        vec![
            with("desk/qwen", |c| c.state = LoadState::Stopped),
            ready("laptop/qwen"),
        ],
        &["laptop/qwen", "desk/qwen"],
    );
}

#[test]
fn fastest_uses_measured_speed_and_puts_unmeasured_last() {
    check(
        json!({"name": "auto", "candidates": ["a/unmeasured", "a/slow", "a/fast"], "order": ["fastest"]}),
        req(100, Some(200)),
        vec![
            ready("a/unmeasured"),
            with("a/slow", |c| c.gen_tps = Some(10.0)),
            with("a/fast", |c| c.gen_tps = Some(80.0)),
        ],
        &["a/fast", "a/slow", "a/unmeasured"],
    );
}

#[test]
fn fastest_accounts_for_prompt_speed_on_long_prompts() {
    // Long prompt, short answer: fast prompt processing beats slightly faster generation.
    check(
        json!({"name": "auto", "candidates": ["a/gen", "a/prompt"], "order": ["fastest"]}),
        req(20_000, Some(50)),
        vec![
            with("a/gen", |c| {
                c.gen_tps = Some(60.0);
                c.prompt_tps = Some(200.0);
            }),
            with("a/prompt", |c| {
                c.gen_tps = Some(40.0);
                c.prompt_tps = Some(2_000.0);
            }),
        ],
        &["a/prompt", "a/gen"],
    );
}

#[test]
fn best_score_highest_first_unscored_last() {
    check(
        json!({"name": "auto", "candidates": ["a/none", "a/low", "a/high"], "order": ["best_score"]}),
        req(10, None),
        vec![
            ready("a/none"),
            with("a/low", |c| c.score = Some(20.0)),
            with("a/high", |c| c.score = Some(90.0)),
        ],
        &["a/high", "a/low", "a/none"],
    );
}

#[test]
fn cheapest_local_first_then_by_price_unpriced_cloud_last() {
    let cloud = |id: &str, price: Option<(f64, f64)>| {
        with(id, |c| {
            c.lane = Lane::Cloud;
            c.state = LoadState::Unknown;
            c.n_ctx = Some(128_000);
            c.price_in_per_mtok = price.map(|p| p.0);
            c.price_out_per_mtok = price.map(|p| p.1);
        })
    };
    check(
        json!({"name": "auto:cheap", "candidates": ["cloud/unpriced", "cloud/dear", "cloud/cheap", "home/local"], "order": ["cheapest"]}),
        req(1_000, Some(1_000)),
        vec![
            cloud("cloud/unpriced", None),
            cloud("cloud/dear", Some((10.0, 30.0))),
            cloud("cloud/cheap", Some((0.1, 0.4))),
            ready("home/local"),
        ],
        &["home/local", "cloud/cheap", "cloud/dear"],
    );
}

#[test]
fn strategies_compose_lexicographically() {
    // prefer_loaded decides first; fastest only breaks the tie between the two ready models.
    check(
        json!({"name": "auto", "candidates": ["a/cold-fast", "a/ready-slow", "a/ready-fast"],
               "order": ["prefer_loaded", "fastest"], "limits": {"max_attempts": 5}}),
        req(100, Some(100)),
        vec![
            with("a/cold-fast", |c| {
                c.state = LoadState::Stopped;
                c.gen_tps = Some(200.0);
            }),
            with("a/ready-slow", |c| c.gen_tps = Some(10.0)),
            with("a/ready-fast", |c| c.gen_tps = Some(50.0)),
        ],
        &["a/ready-fast", "a/ready-slow", "a/cold-fast"],
    );
}

#[test]
fn down_host_and_error_model_are_skipped_with_reasons() {
    let d = check(
        json!({"name": "auto", "candidates": ["a/x", "b/x", "c/x"], "order": ["priority"]}),
        req(10, None),
        vec![
            with("a/x", |c| c.liveness = Liveness::Down),
            with("b/x", |c| c.state = LoadState::Error),
            ready("c/x"),
        ],
        &["c/x"],
    );
    assert_eq!(reason(&d, "a/x"), Some(SkipReason::HostDown));
    assert_eq!(reason(&d, "b/x"), Some(SkipReason::ModelError));
}

#[test]
fn reconnecting_host_is_ranked_last_even_when_preferred() {
    let d = check(
        json!({"name": "auto", "candidates": ["a/x", "b/x", "c/x"], "order": ["priority"]}),
        req(10, None),
        vec![
            with("a/x", |c| c.liveness = Liveness::Reconnecting),
            ready("b/x"),
            ready("c/x"),
        ],
        &["b/x", "c/x", "a/x"],
    );
    assert!(d.attempts[2].demoted.reconnecting);
}

#[test]
fn context_too_small_is_skipped_and_unknown_context_ranks_after_known_fits() {
    let d = check(
        json!({"name": "auto:code", "candidates": ["a/small", "a/unknown", "a/big"], "order": ["priority"]}),
        req(10_000, Some(1_000)),
        vec![
            with("a/small", |c| c.n_ctx = Some(4_096)),
            with("a/unknown", |c| c.n_ctx = None),
            with("a/big", |c| c.n_ctx = Some(32_768)),
        ],
        &["a/big", "a/unknown"],
    );
    assert_eq!(
        reason(&d, "a/small"),
        Some(SkipReason::ContextTooSmall {
            need: 11_000,
            n_ctx: 4_096
        })
    );
    assert!(d.attempts[1].demoted.context_unknown);
}

#[test]
fn context_fit_is_inclusive() {
    check(
        json!({"name": "auto", "candidates": ["a/exact"]}),
        req(4_000, Some(96)),
        vec![with("a/exact", |c| c.n_ctx = Some(4_096))],
        &["a/exact"],
    );
}

#[test]
fn saturated_local_host_spills_to_cloud_when_over_max_wait() {
    let d = check(
        json!({"name": "auto", "candidates": ["home/x", "cloud/y"], "order": ["priority"], "filters": {"max_wait_ms": 5000}}),
        req(10, None),
        vec![
            with("home/x", |c| c.queue_wait_ms = Some(20_000)),
            with("cloud/y", |c| {
                c.lane = Lane::Cloud;
                c.queue_wait_ms = Some(60_000); // clouds have no lane budget
            }),
        ],
        &["cloud/y", "home/x"],
    );
    assert!(d.attempts[1].demoted.over_max_wait);
    // Under the budget nothing spills.
    check(
        json!({"name": "auto", "candidates": ["home/x", "cloud/y"], "order": ["priority"], "filters": {"max_wait_ms": 5000}}),
        req(10, None),
        vec![
            with("home/x", |c| c.queue_wait_ms = Some(4_000)),
            with("cloud/y", |c| c.lane = Lane::Cloud),
        ],
        &["home/x", "cloud/y"],
    );
}

#[test]
fn lanes_filter_excludes_other_lanes() {
    let d = check(
        json!({"name": "auto:local", "candidates": ["*"], "filters": {"lanes": ["local"]}}),
        req(10, None),
        vec![ready("home/x"), with("cloud/y", |c| c.lane = Lane::Cloud)],
        &["home/x"],
    );
    assert_eq!(
        reason(&d, "cloud/y"),
        Some(SkipReason::LaneExcluded { lane: Lane::Cloud })
    );
}

#[test]
fn capabilities_known_missing_are_skipped_unknown_allowed() {
    let mut r = req(10, None);
    r.needs_tools = true;
    r.needs_vision = true;
    let d = check(
        json!({"name": "auto", "candidates": ["a/no-tools", "a/no-vision", "a/unknown", "a/both"], "order": ["priority"]}),
        r,
        vec![
            with("a/no-tools", |c| c.capabilities.tools = Some(false)),
            with("a/no-vision", |c| c.capabilities.vision = Some(false)),
            ready("a/unknown"),
            with("a/both", |c| {
                c.capabilities = Capabilities {
                    tools: Some(true),
                    vision: Some(true),
                }
            }),
        ],
        &["a/unknown", "a/both"],
    );
    assert_eq!(
        reason(&d, "a/no-tools"),
        Some(SkipReason::MissingCapability {
            capability: Capability::Tools
        })
    );
    assert_eq!(
        reason(&d, "a/no-vision"),
        Some(SkipReason::MissingCapability {
            capability: Capability::Vision
        })
    );
}

#[test]
fn cold_start_forbidden_skips_stopped_local_models_only() {
    let d = check(
        json!({"name": "auto", "candidates": ["a/cold", "a/starting", "cloud/c"], "order": ["priority"],
               "limits": {"allow_cold_start": false}}),
        req(10, None),
        vec![
            with("a/cold", |c| c.state = LoadState::Stopped),
            with("a/starting", |c| c.state = LoadState::Starting),
            with("cloud/c", |c| {
                c.lane = Lane::Cloud;
                c.state = LoadState::Stopped;
            }),
        ],
        &["a/starting", "cloud/c"],
    );
    assert_eq!(reason(&d, "a/cold"), Some(SkipReason::ColdStartNotAllowed));
}

#[test]
fn unknown_model_and_attempt_limit_are_explained() {
    let d = check(
        json!({"name": "auto", "candidates": ["ghost/x", "a/1", "a/2", "a/3"], "order": ["priority"], "limits": {"max_attempts": 2}}),
        req(10, None),
        vec![ready("a/1"), ready("a/2"), ready("a/3")],
        &["a/1", "a/2"],
    );
    assert_eq!(reason(&d, "ghost/x"), Some(SkipReason::NotInFleet));
    assert_eq!(
        reason(&d, "a/3"),
        Some(SkipReason::OverAttemptLimit { max_attempts: 2 })
    );
}

#[test]
fn selectors_expand_in_id_order_and_dedupe_keeping_first_position() {
    let facts = vec![
        with("b/coder", |c| c.tags = vec!["code".into()]),
        with("a/coder", |c| c.tags = vec!["code".into()]),
        ready("a/chat"),
        ready("c/other"),
    ];
    // Explicit b/coder first, then the tag (a/coder; b/coder already placed), then provider a.
    check(
        json!({"name": "auto", "candidates": ["b/coder", "tag:code", "a/*"], "order": ["priority"], "limits": {"max_attempts": 9}}),
        req(10, None),
        facts.clone(),
        &["b/coder", "a/coder", "a/chat"],
    );
    check(
        json!({"name": "auto", "candidates": ["*"], "order": ["priority"], "limits": {"max_attempts": 9}}),
        req(10, None),
        facts,
        &["a/chat", "a/coder", "b/coder", "c/other"],
    );
}

#[test]
fn first_matching_rule_overrides_candidates() {
    let p = json!({
        "name": "auto",
        "candidates": ["a/text"],
        "rules": [
            {"when": {"needs_vision": true}, "candidates": ["a/vision"]},
            {"when": {}, "candidates": ["a/never"]}
        ]
    });
    let facts = vec![ready("a/text"), ready("a/vision"), ready("a/never")];
    let mut r = req(10, None);
    r.needs_vision = true;
    let d = check(p.clone(), r, facts.clone(), &["a/vision"]);
    assert_eq!(d.rule, Some(0));
    let d = check(p, req(10, None), facts, &["a/never"]);
    assert_eq!(d.rule, Some(1));
}

#[test]
fn non_finite_measurements_count_as_unknown() {
    check(
        json!({"name": "auto", "candidates": ["a/nan", "a/ok"], "order": ["fastest"]}),
        req(10, None),
        vec![
            with("a/nan", |c| c.gen_tps = Some(f64::NAN)),
            with("a/ok", |c| c.gen_tps = Some(1.0)),
        ],
        &["a/ok", "a/nan"],
    );
}

#[test]
fn explanation_names_choice_and_every_skip() {
    let d = check(
        json!({"name": "auto:code", "candidates": ["a/small", "a/down", "a/big"], "order": ["priority"]}),
        req(10_000, None),
        vec![
            with("a/small", |c| c.n_ctx = Some(4_096)),
            with("a/down", |c| c.liveness = Liveness::Down),
            with("a/big", |c| {
                c.state = LoadState::Stopped;
                c.load_ms = Some(9_000);
            }),
        ],
        &["a/big"],
    );
    let text = d.to_string();
    assert!(
        text.starts_with("auto:code: 1 attempt(s), 2 skipped"),
        "{text}"
    );
    assert!(
        text.contains(
            "1. a/big [local, host connected, stopped, n_ctx 32768, cold start ~9000 ms]"
        ),
        "{text}"
    );
    assert!(
        text.contains("skipped a/small: context too small (need 10000 tokens, n_ctx 4096)"),
        "{text}"
    );
    assert!(text.contains("skipped a/down: host down"), "{text}");
}

#[test]
fn empty_decision_says_so() {
    let d = check(
        json!({"name": "auto", "candidates": ["a/x"]}),
        req(10, None),
        vec![],
        &[],
    );
    assert!(d.to_string().contains("no eligible candidate"));
    assert_eq!(d.chosen(), None);
}

#[test]
fn header_value_is_compact_ascii_json() {
    let d = check(
        json!({"name": "auto", "candidates": ["a/modèle", "a/down"], "order": ["priority"]}),
        req(10, None),
        vec![
            ready("a/modèle"),
            with("a/down", |c| c.liveness = Liveness::Down),
        ],
        &["a/modèle"],
    );
    let h = d.header_value();
    assert!(h.bytes().all(|b| (0x20..0x7f).contains(&b)), "{h}");
    assert!(!h.contains('\n'));
    let back: CompactDecision = serde_json::from_str(&h).unwrap();
    assert_eq!(back.policy, "auto");
    assert_eq!(back.attempts, vec!["a/modèle".to_owned()]);
    assert_eq!(back.skipped, vec!["a/down=down".to_owned()]);
}

#[test]
fn decision_json_round_trips() {
    let d = check(
        json!({"name": "auto", "candidates": ["a/x", "a/y"], "limits": {"max_attempts": 1}}),
        req(10, Some(5)),
        vec![
            with("a/x", |c| c.gen_tps = Some(12.5)),
            with("a/y", |c| c.liveness = Liveness::Down),
        ],
        &["a/x"],
    );
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["skipped"][0], json!(["a/y", {"reason": "host_down"}]));
    assert_eq!(v["attempts"][0]["model"], json!("a/x"));
    let back: Decision = serde_json::from_value(v).unwrap();
    assert_eq!(back, d);
}

#[test]
fn compact_form_stays_small_with_many_candidates() {
    let mut facts: Vec<CandidateFacts> = (0..40)
        .map(|i| with(&format!("a/down-{i:02}"), |c| c.liveness = Liveness::Down))
        .collect();
    facts.extend((0..10).map(|i| ready(&format!("b/up-{i:02}"))));
    let p = policy(
        json!({"name": "auto", "candidates": ["*"], "order": ["priority"], "limits": {"max_attempts": 2}}),
    );
    let d = decide(&p, &req(10, None), &FleetView::new(facts));
    let c = d.compact();
    assert_eq!(c.attempts, vec!["b/up-00", "b/up-01"]);
    assert_eq!(c.skipped.len(), COMPACT_SKIPPED_MAX);
    assert_eq!(c.skipped[0], "a/down-00=down");
    assert_eq!(c.more_skipped, 40 - COMPACT_SKIPPED_MAX);
    assert_eq!(c.over_limit, 8);
    assert!(d.header_value().len() < 1024, "{}", d.header_value());
    // The full decision still explains every candidate, in policy order.
    assert_eq!(d.skipped.len(), 48);
    assert_eq!(d.skipped[47].0.to_string(), "b/up-09");
}

#[test]
fn decision_shares_fleet_ids_and_keeps_its_exact_json() {
    use std::sync::Arc;
    let view = FleetView::new(vec![
        with("a/x", |c| c.gen_tps = Some(12.5)),
        with("a/y", |c| c.liveness = Liveness::Down),
        ready("a/z"),
    ]);
    let p = policy(json!({
        "name": "auto", "candidates": ["ghost/q", "a/x", "a/y", "a/z"],
        "order": ["priority"], "limits": {"max_attempts": 1}
    }));
    let d = decide(&p, &req(10, Some(5)), &view);
    // Attempts and skips point at the fleet's ids instead of copying the names.
    let fleet_id = |id: &str| view.get(&m(id)).map(|c| c.model.clone()).unwrap();
    assert!(Arc::ptr_eq(&d.attempts[0].model, &fleet_id("a/x")));
    assert!(Arc::ptr_eq(&d.skipped[1].0, &fleet_id("a/y")));
    assert!(Arc::ptr_eq(&d.skipped[2].0, &fleet_id("a/z")));
    // The wire form holds plain composite strings, as it did before the ids were shared.
    let limits = serde_json::to_value(d.limits).unwrap();
    assert_eq!(
        serde_json::to_value(&d).unwrap(),
        json!({
            "policy": "auto",
            "need_tokens": 15,
            "limits": limits,
            "attempts": [{
                "model": "a/x", "lane": "local", "liveness": "connected", "state": "ready",
                "n_ctx": 32768, "cold": false, "gen_tps": 12.5
            }],
            "skipped": [
                ["ghost/q", {"reason": "not_in_fleet"}],
                ["a/y", {"reason": "host_down"}],
                ["a/z", {"reason": "over_attempt_limit", "max_attempts": 1}]
            ]
        })
    );
}
