//! Unit tests: parsing, validation with paths, rule matching.

use crate::policy::is_virtual_name;
use crate::*;
use serde_json::json;

fn check_err(v: serde_json::Value) -> Vec<Problem> {
    match RoutePolicy::from_json(&v) {
        Err(RoutingError::InvalidPolicy { problems }) => problems,
        other => panic!("expected InvalidPolicy, got {other:?}"),
    }
}

fn paths(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.path.as_str()).collect()
}

#[test]
fn documented_example_parses() {
    let p = RoutePolicy::from_json(&json!({
      "name": "auto:code",
      "description": "best code model that is up right now",
      "candidates": ["sam-desktop/qwen2.5-coder-32b", "tag:code", "sam-laptop/*", "openai/gpt-4.1-mini"],
      "order": ["prefer_loaded", "fastest"],
      "filters": { "max_wait_ms": 5000, "lanes": ["local", "cloud"] },
      "limits": { "max_attempts": 3, "total_deadline_ms": 120000, "first_byte_ms": 30000, "allow_cold_start": true },
      "rules": [
        { "when": { "needs_vision": true }, "candidates": ["tag:vision"] },
        { "when": { "min_prompt_tokens": 16000 }, "order": ["cheapest"],
          "limits": { "max_attempts": 2, "total_deadline_ms": 300000, "first_byte_ms": 120000, "allow_cold_start": false } }
      ]
    }))
    .unwrap();
    assert_eq!(p.name, "auto:code");
    assert_eq!(
        p.candidates,
        vec![
            CandidateSpec::Model("sam-desktop/qwen2.5-coder-32b".parse().unwrap()),
            CandidateSpec::Tag("code".into()),
            CandidateSpec::Provider(ProviderId::new("sam-laptop").unwrap()),
            CandidateSpec::Model("openai/gpt-4.1-mini".parse().unwrap()),
        ]
    );
    assert_eq!(p.order, vec![Strategy::PreferLoaded, Strategy::Fastest]);
    assert_eq!(p.filters.max_wait_ms, Some(5000));
    assert_eq!(p.rules.len(), 2);
    assert_eq!(p.rules[1].when.min_prompt_tokens, Some(16_000));
    assert!(!p.rules[1].limits.unwrap().allow_cold_start);
}

#[test]
fn defaults_apply_to_missing_fields() {
    let p = RoutePolicy::from_json(
        &json!({"name": "auto", "candidates": ["*"], "limits": {"max_attempts": 5}}),
    )
    .unwrap();
    assert_eq!(p.order, vec![Strategy::PreferLoaded]);
    assert_eq!(p.filters, Filters::default());
    assert_eq!(
        p.limits,
        Limits {
            max_attempts: 5,
            ..Limits::default()
        }
    );
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let problems = check_err(json!({
        "name": "code",
        "candidates": ["bare-model", "tag:", "Bad/*", 7],
        "order": ["prefer_loaded", "quickest", "prefer_loaded"],
        "filters": {"max_wait_ms": -1, "lanes": ["moon"]},
        "limits": {"max_attempts": 0, "first_byte_ms": 500000},
        "rules": [
            {"when": {"min_prompt_tokens": 10, "max_prompt_tokens": 5, "tools": true}, "order": ["fastest"]},
            {"when": {}}
        ],
        "colour": "blue"
    }));
    let got = paths(&problems);
    for want in [
        "name",
        "candidates[0]",
        "candidates[1]",
        "candidates[2]",
        "candidates[3]",
        "order[1]",
        "order[2]",
        "filters.max_wait_ms",
        "filters.lanes[0]",
        "limits.max_attempts",
        "limits.first_byte_ms",
        "rules[0].when.tools",
        "rules[0].when",
        "rules[1]",
        "colour",
    ] {
        assert!(got.contains(&want), "missing {want} in {problems:#?}");
    }
    let text = RoutingError::InvalidPolicy {
        problems: problems.clone(),
    }
    .to_string();
    assert!(
        text.contains("order[1]: unknown strategy \"quickest\""),
        "{text}"
    );
    assert!(
        text.contains("limits.first_byte_ms: 500000 exceeds total_deadline_ms 120000"),
        "{text}"
    );
}

#[test]
fn missing_required_fields_are_named() {
    let problems = check_err(json!({}));
    assert_eq!(paths(&problems), vec!["name", "candidates"]);
    let problems = check_err(json!({"name": "auto", "candidates": []}));
    assert_eq!(paths(&problems), vec!["candidates"]);
    let problems = check_err(json!(["not", "an", "object"]));
    assert_eq!(problems[0].message, "expected an object, got an array");
}

#[test]
fn policies_array_prefixes_paths_and_rejects_duplicates() {
    let (set, problems) = PolicySet::from_json(&[
        json!({"name": "auto", "candidates": ["*"]}),
        json!({"name": "auto:code", "candidates": ["nope"]}),
        json!({"name": "auto", "candidates": ["a/b"]}),
    ]);
    assert_eq!(set.names().collect::<Vec<_>>(), vec!["auto"]);
    assert_eq!(
        paths(&problems),
        vec!["policies[1].candidates[0]", "policies[2].name"]
    );
    assert!(problems[1].message.contains("duplicate policy name"));
}

#[test]
fn candidate_specs_parse_and_display_round_trip() {
    for s in ["a/b", "a/org/model:Q4", "a/*", "tag:code", "*"] {
        let c = CandidateSpec::parse(s).unwrap();
        assert_eq!(c.to_string(), s);
    }
    assert!(
        matches!(CandidateSpec::parse("a/org/model"), Ok(CandidateSpec::Model(m)) if m.model == "org/model")
    );
    for bad in ["", "model", "tag:", "tag:a b", "UPPER/*", "/x", "a/"] {
        assert!(
            CandidateSpec::parse(bad).is_err(),
            "{bad} should be rejected"
        );
    }
}

#[test]
fn policy_serializes_back_to_the_same_policy() {
    let v = json!({
        "name": "auto:fast",
        "candidates": ["a/x", "tag:fast"],
        "order": ["fastest", "priority"],
        "filters": {"lanes": ["local"]},
        "limits": {"max_attempts": 2, "total_deadline_ms": 60000, "first_byte_ms": 10000, "allow_cold_start": false},
        "rules": [{"when": {"source": ["boocoder"]}, "order": ["best_score"]}]
    });
    let p = RoutePolicy::from_json(&v).unwrap();
    let back = serde_json::to_value(&p).unwrap();
    assert_eq!(RoutePolicy::from_json(&back).unwrap(), p);
    // Deserialize goes through the validating parser.
    let via_serde: RoutePolicy = serde_json::from_value(v).unwrap();
    assert_eq!(via_serde, p);
    let err = serde_json::from_value::<RoutePolicy>(json!({"name": "auto"})).unwrap_err();
    assert!(err.to_string().contains("candidates: missing"), "{err}");
}

#[test]
fn names_follow_virtual_model_rules() {
    assert!(is_virtual_name("auto"));
    assert!(is_virtual_name("auto:code"));
    assert!(is_virtual_name("auto:my_policy-2"));
    for bad in [
        "",
        "code",
        "auto:",
        "auto:Code",
        "auto:a b",
        "automatic",
        "a/auto",
    ] {
        assert!(!is_virtual_name(bad), "{bad}");
    }
    let p = RoutePolicy::new("auto:Bad", vec![CandidateSpec::All]);
    assert_eq!(paths(&p.validate()), vec!["name"]);
}

#[test]
fn match_conditions_all_must_hold() {
    let when = Match {
        needs_tools: Some(true),
        min_prompt_tokens: Some(100),
        max_prompt_tokens: Some(200),
        source: vec!["boocoder".into()],
        ..Match::default()
    };
    let ok = RequestFeatures {
        needs_tools: true,
        est_prompt_tokens: 150,
        source: Some("boocoder".into()),
        ..Default::default()
    };
    assert!(when.matches(&ok));
    assert!(!when.matches(&RequestFeatures {
        needs_tools: false,
        ..ok.clone()
    }));
    assert!(!when.matches(&RequestFeatures {
        est_prompt_tokens: 99,
        ..ok.clone()
    }));
    assert!(!when.matches(&RequestFeatures {
        est_prompt_tokens: 201,
        ..ok.clone()
    }));
    assert!(!when.matches(&RequestFeatures {
        source: None,
        ..ok.clone()
    }));
    assert!(!when.matches(&RequestFeatures {
        source: Some("boochat".into()),
        ..ok
    }));
    assert!(Match::default().matches(&RequestFeatures::default()));
}

#[test]
fn source_may_be_a_single_string() {
    let p = RoutePolicy::from_json(&json!({
        "name": "auto", "candidates": ["*"],
        "rules": [{"when": {"source": "arena", "json_response": true}, "limits": {"max_attempts": 1}}]
    }))
    .unwrap();
    assert_eq!(p.rules[0].when.source, vec!["arena".to_owned()]);
    assert_eq!(p.rules[0].when.json_response, Some(true));
}

#[test]
fn policy_set_decide_unknown_name_lists_known() {
    let set = PolicySet::new(vec![
        RoutePolicy::new("auto", vec![CandidateSpec::All]),
        RoutePolicy::new("auto:code", vec![CandidateSpec::Tag("code".into())]),
    ])
    .unwrap();
    let err = set
        .decide(
            "auto:fast",
            &RequestFeatures::default(),
            &FleetView::default(),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no route policy named \"auto:fast\" (known: auto, auto:code)"
    );
    assert!(
        set.decide(
            "auto:code",
            &RequestFeatures::default(),
            &FleetView::default()
        )
        .is_ok()
    );
    let dup = PolicySet::new(vec![
        RoutePolicy::new("auto", vec![CandidateSpec::All]),
        RoutePolicy::new("auto", vec![CandidateSpec::All]),
    ]);
    assert!(
        matches!(dup, Err(RoutingError::InvalidPolicy { problems }) if problems[0].path == "policies[1].name")
    );
}
