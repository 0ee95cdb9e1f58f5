//! Property tests of the routing invariants over arbitrary fleets, requests and policies,
//! plus the JSON corpus in `routing/testdata/`.

mod corpus;

use boo_routing::{
    CandidateFacts, CandidateSpec, Capabilities, Decision, Failover, Filters, FleetView, Lane,
    Limits, Liveness, LoadState, ModelRef, Outcome, RequestFeatures, RoutePolicy, SkipReason, Step,
    Strategy as Order, Verdict, decide,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

const PROVIDERS: [&str; 4] = ["desk", "laptop", "mini", "cloud"];
const TAGS: [&str; 3] = ["code", "fast", "vision"];

fn liveness() -> impl Strategy<Value = Liveness> {
    prop_oneof![
        Just(Liveness::Connected),
        Just(Liveness::Reconnecting),
        Just(Liveness::Down),
        Just(Liveness::Unknown)
    ]
}

fn state() -> impl Strategy<Value = LoadState> {
    prop_oneof![
        Just(LoadState::Ready),
        Just(LoadState::Starting),
        Just(LoadState::Stopping),
        Just(LoadState::Stopped),
        Just(LoadState::Error),
        Just(LoadState::Unknown)
    ]
}

fn opt_f64() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        Just(None),
        (0.0f64..500.0).prop_map(Some),
        Just(Some(f64::NAN))
    ]
}

fn facts() -> impl Strategy<Value = CandidateFacts> {
    (
        (0..PROVIDERS.len(), 0u8..6, liveness(), state()),
        (
            prop::option::of(prop_oneof![
                Just(2048u32),
                Just(4096),
                Just(8192),
                Just(32768),
                Just(131072)
            ]),
            prop::option::of(0u64..60_000),
            opt_f64(),
            opt_f64(),
            prop::option::of(0u64..30_000),
        ),
        (
            opt_f64(),
            opt_f64(),
            prop::collection::vec(0..TAGS.len(), 0..3),
            opt_f64(),
        ),
        (
            prop::option::of(any::<bool>()),
            prop::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            |(
                (p, m, live, st),
                (n_ctx, load, gen_tps, prompt_tps, queue),
                (pi, po, tags, score),
                (tools, vision),
            )| {
                let provider = PROVIDERS[p];
                let mut c = CandidateFacts::new(format!("{provider}/m{m}").parse().unwrap());
                c.lane = if provider == "cloud" {
                    Lane::Cloud
                } else {
                    Lane::Local
                };
                c.liveness = live;
                c.state = st;
                c.n_ctx = n_ctx;
                c.load_ms = load;
                c.gen_tps = gen_tps;
                c.prompt_tps = prompt_tps;
                c.queue_wait_ms = queue;
                c.price_in_per_mtok = pi;
                c.price_out_per_mtok = po;
                c.tags = tags.into_iter().map(|t| TAGS[t].to_owned()).collect();
                c.score = score;
                c.capabilities = Capabilities { tools, vision };
                c
            },
        )
}

fn spec() -> impl Strategy<Value = CandidateSpec> {
    prop_oneof![
        (0..PROVIDERS.len(), 0u8..7).prop_map(|(p, m)| CandidateSpec::Model(
            format!("{}/m{m}", PROVIDERS[p]).parse().unwrap()
        )),
        (0..PROVIDERS.len()).prop_map(|p| CandidateSpec::Provider(PROVIDERS[p].parse().unwrap())),
        (0..TAGS.len()).prop_map(|t| CandidateSpec::Tag(TAGS[t].to_owned())),
        Just(CandidateSpec::All),
    ]
}

fn order() -> impl Strategy<Value = Vec<Order>> {
    let all = vec![
        Order::Priority,
        Order::PreferLoaded,
        Order::Fastest,
        Order::BestScore,
        Order::Cheapest,
    ];
    Just(all)
        .prop_shuffle()
        .prop_flat_map(|v| (0..=v.len()).prop_map(move |n| v[..n].to_vec()))
}

fn policy() -> impl Strategy<Value = RoutePolicy> {
    (
        prop::collection::btree_set(spec(), 1..5),
        order(),
        prop::option::of(0u64..20_000),
        prop::option::of(prop_oneof![
            Just(vec![Lane::Local]),
            Just(vec![Lane::Cloud]),
            Just(vec![Lane::Local, Lane::Cloud])
        ]),
        1u32..6,
        any::<bool>(),
    )
        .prop_map(
            |(cands, order, max_wait_ms, lanes, max_attempts, allow_cold_start)| {
                let mut p = RoutePolicy::new("auto:prop", cands.into_iter().collect());
                p.order = order;
                p.filters = Filters { max_wait_ms, lanes };
                p.limits = Limits {
                    max_attempts,
                    allow_cold_start,
                    ..Limits::default()
                };
                p
            },
        )
}

fn request() -> impl Strategy<Value = RequestFeatures> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0u32..40_000,
        prop::option::of(0u32..8_000),
    )
        .prop_map(
            |(needs_tools, needs_vision, json_response, est_prompt_tokens, max_tokens)| {
                RequestFeatures {
                    needs_tools,
                    needs_vision,
                    json_response,
                    est_prompt_tokens,
                    max_tokens,
                    source: None,
                }
            },
        )
}

fn fleet() -> impl Strategy<Value = Vec<CandidateFacts>> {
    prop::collection::vec(facts(), 0..30)
}

/// Every model the policy's candidates name (expanded over the view).
fn named(p: &RoutePolicy, view: &FleetView) -> BTreeSet<ModelRef> {
    use boo_routing::FleetFacts;
    let mut out = BTreeSet::new();
    for s in &p.candidates {
        match s {
            CandidateSpec::Model(m) => {
                out.insert(m.clone());
            }
            CandidateSpec::Provider(pr) => out.extend(
                view.all()
                    .iter()
                    .filter(|c| &c.model.provider == pr)
                    .map(|c| ModelRef::clone(&c.model)),
            ),
            CandidateSpec::Tag(t) => out.extend(
                view.all()
                    .iter()
                    .filter(|c| c.has_tag(t))
                    .map(|c| ModelRef::clone(&c.model)),
            ),
            CandidateSpec::All => out.extend(view.all().iter().map(|c| ModelRef::clone(&c.model))),
        }
    }
    out
}

/// Would `c` pass every exclusion filter of `p` for `r`?
fn healthy_and_eligible(c: &CandidateFacts, p: &RoutePolicy, r: &RequestFeatures) -> bool {
    c.liveness == Liveness::Connected
        && c.state != LoadState::Error
        && c.n_ctx.is_some_and(|n| u64::from(n) >= r.needed_tokens())
        && p.filters.lanes.as_ref().is_none_or(|l| l.contains(&c.lane))
        && !(r.needs_tools && c.capabilities.tools == Some(false))
        && !(r.needs_vision && c.capabilities.vision == Some(false))
        && (p.limits.allow_cold_start
            || c.lane == Lane::Cloud
            || !matches!(c.state, LoadState::Stopped | LoadState::Stopping))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn down_hosts_are_never_attempted_and_never_first_while_a_healthy_candidate_exists(
        facts in fleet(), p in policy(), r in request()
    ) {
        let view = FleetView::new(facts);
        let d = decide(&p, &r, &view);
        prop_assert!(d.attempts.iter().all(|a| a.liveness != Liveness::Down), "{d}");
        let names = named(&p, &view);
        let healthy_exists = view_facts(&view).any(|c| names.contains(&c.model) && healthy_and_eligible(c, &p, &r));
        if healthy_exists {
            let first = d.attempts.first();
            prop_assert!(first.is_some(), "a healthy candidate exists but nothing is attempted:\n{d}");
            prop_assert!(first.is_some_and(|a| a.liveness != Liveness::Reconnecting), "{d}");
        }
    }

    #[test]
    fn no_candidate_is_attempted_twice_and_every_named_one_is_accounted_for(
        facts in fleet(), p in policy(), r in request()
    ) {
        let view = FleetView::new(facts);
        let d = decide(&p, &r, &view);
        let attempted: BTreeSet<&ModelRef> = d.attempts.iter().map(|a| a.model.as_ref()).collect();
        prop_assert_eq!(attempted.len(), d.attempts.len(), "duplicate attempt:\n{}", d);
        let skipped: BTreeSet<&ModelRef> = d.skipped.iter().map(|(m, _)| m.as_ref()).collect();
        prop_assert_eq!(skipped.len(), d.skipped.len(), "duplicate skip:\n{}", d);
        prop_assert!(attempted.is_disjoint(&skipped));
        let all: BTreeSet<ModelRef> = attempted.union(&skipped).map(|m| (*m).clone()).collect();
        prop_assert_eq!(all, named(&p, &view));
        prop_assert!(d.attempts.len() <= p.limits.max_attempts as usize);
    }

    #[test]
    fn decision_is_deterministic_and_independent_of_fact_order(
        facts in fleet(), p in policy(), r in request(), seed in any::<u64>()
    ) {
        let a = decide(&p, &r, &FleetView::new(facts.clone()));
        let b = decide(&p, &r, &FleetView::new(facts.clone()));
        prop_assert_eq!(&a, &b);
        // Shuffle the input (deterministically from the seed) without duplicate ids.
        let mut dedup: Vec<CandidateFacts> = FleetView::new(facts).into();
        let n = dedup.len();
        if n > 1 {
            for i in 0..n {
                let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % n as u64) as usize;
                dedup.swap(i, j);
            }
        }
        let c = decide(&p, &r, &FleetView::new(dedup));
        prop_assert_eq!(a.to_string(), c.to_string());
        prop_assert_eq!(a.header_value(), c.header_value());
    }

    #[test]
    fn a_candidate_that_does_not_fit_the_context_is_never_attempted(
        facts in fleet(), p in policy(), r in request()
    ) {
        let view = FleetView::new(facts);
        let d = decide(&p, &r, &view);
        let need = r.needed_tokens();
        for a in &d.attempts {
            prop_assert!(a.n_ctx.is_none_or(|n| u64::from(n) >= need), "{d}");
        }
        // And a known fit outranks an unknown n_ctx when no stronger demotion differs.
        let strong = |a: &boo_routing::Attempt| a.demoted.reconnecting || a.demoted.over_max_wait;
        let known_fit_unhindered = d.attempts.iter().any(|a| a.n_ctx.is_some() && !strong(a));
        if let Some(first) = d.attempts.first()
            && known_fit_unhindered
            && !strong(first)
        {
            prop_assert!(first.n_ctx.is_some(), "{d}");
        }
        for (_, why) in &d.skipped {
            if let SkipReason::ContextTooSmall { need: n, n_ctx } = why {
                prop_assert_eq!(*n, need);
                prop_assert!(u64::from(*n_ctx) < need);
            }
        }
    }

    #[test]
    fn failover_tries_each_attempt_at_most_once_and_never_retries_after_first_byte(
        facts in fleet(), p in policy(), r in request(),
        outcomes in prop::collection::vec(
            prop_oneof![
                Just(Outcome::Refused), Just(Outcome::Reset), Just(Outcome::Status(500)),
                Just(Outcome::Status(429)), Just(Outcome::Status(404)), Just(Outcome::FirstByteTimeout),
                Just(Outcome::FirstByte), Just(Outcome::Success), Just(Outcome::StreamCut)
            ],
            1..12,
        ),
    ) {
        let d = decide(&p, &r, &FleetView::new(facts));
        let mut f = Failover::new(&d, 1_000);
        let mut tried = Vec::new();
        let mut committed = false;
        let mut now = 1_000;
        let mut outcomes = outcomes.into_iter();
        loop {
            if !committed {
                match f.next_attempt(now).unwrap() {
                    Step::GiveUp(_) => break,
                    Step::Try(plan) => {
                        prop_assert!(!tried.contains(&plan.model), "{} tried twice", plan.model);
                        prop_assert_eq!(&plan.model, d.attempts[plan.index].model.as_ref());
                        tried.push(plan.model);
                    }
                }
            }
            let Some(o) = outcomes.next() else { break };
            now += 10;
            match f.on_outcome(o, now) {
                Ok(Verdict::Retry) => prop_assert!(!committed, "retry after first byte"),
                Ok(Verdict::Committed) => committed = true,
                Ok(Verdict::Done(_)) => break,
                Err(_) => {
                    // Illegal for this phase (e.g. a stream cut before the first byte): the
                    // machine must be unchanged, so report a legal outcome instead.
                    let legal = if committed { Outcome::Success } else { Outcome::Refused };
                    match f.on_outcome(legal, now).unwrap() {
                        Verdict::Retry => {}
                        Verdict::Done(_) => break,
                        Verdict::Committed => committed = true,
                    }
                }
            }
        }
        prop_assert!(tried.len() <= d.attempts.len());
        prop_assert_eq!(f.history().len(), tried.len());
    }
}

/// Arbitrary JSON, biased towards policy-shaped objects.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        prop_oneof![
            Just("auto".to_owned()),
            Just("auto:code".to_owned()),
            Just("tag:code".to_owned()),
            Just("a/*".to_owned()),
            Just("prefer_loaded".to_owned()),
            "[a-z:/*]{0,12}",
        ]
        .prop_map(Value::String),
    ];
    let keys = prop_oneof![
        Just("name"),
        Just("candidates"),
        Just("order"),
        Just("filters"),
        Just("limits"),
        Just("rules"),
        Just("when"),
        Just("max_wait_ms"),
        Just("lanes"),
        Just("max_attempts"),
        Just("first_byte_ms"),
        Just("min_prompt_tokens"),
        Just("source"),
        Just("x")
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn valid_policies_round_trip_through_json(p in policy()) {
        prop_assert!(p.validate().is_empty(), "{:?}", p.validate());
        let v = serde_json::to_value(&p).unwrap();
        prop_assert_eq!(RoutePolicy::from_json(&v).unwrap(), p);
    }

    #[test]
    fn arbitrary_json_never_panics_and_errors_name_a_path(v in json()) {
        match RoutePolicy::from_json(&v) {
            Ok(p) => prop_assert!(p.validate().is_empty()),
            Err(boo_routing::RoutingError::InvalidPolicy { problems }) => {
                prop_assert!(!problems.is_empty());
                prop_assert!(problems.iter().all(|p| !p.path.is_empty() && !p.message.is_empty()));
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

fn view_facts(v: &FleetView) -> impl Iterator<Item = &CandidateFacts> {
    use boo_routing::FleetFacts;
    v.all().iter()
}

#[test]
fn decision_serializes_for_telemetry() {
    let view = FleetView::new(vec![CandidateFacts::new("a/x".parse().unwrap())]);
    let p = RoutePolicy::new("auto", vec![CandidateSpec::All]);
    let d: Decision = decide(&p, &RequestFeatures::default(), &view);
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["policy"], "auto");
    assert_eq!(v["attempts"][0]["demoted"]["context_unknown"], true);
}
