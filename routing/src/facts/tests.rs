//! Unit tests for the fleet view.

use crate::*;

fn c(id: &str, n_ctx: u32) -> CandidateFacts {
    let mut c = CandidateFacts::new(id.parse().unwrap());
    c.n_ctx = Some(n_ctx);
    c
}

#[test]
fn view_is_independent_of_input_order_and_later_duplicates_win() {
    let a = FleetView::new(vec![c("b/x", 1), c("a/x", 2), c("a/x", 3)]);
    let b = FleetView::new(vec![c("a/x", 3), c("b/x", 1)]);
    assert_eq!(a, b);
    assert_eq!(a.len(), 2);
    assert_eq!(a.get(&"a/x".parse().unwrap()).unwrap().n_ctx, Some(3));
    assert_eq!(a.all()[0].model.to_string(), "a/x");
}

#[test]
fn upsert_and_lookup() {
    let mut v = FleetView::default();
    assert!(v.is_empty());
    v.upsert(c("z/x", 1));
    v.upsert(c("a/x", 1));
    v.upsert(c("z/x", 9));
    assert_eq!(v.len(), 2);
    let id: ModelRef = "z/x".parse().unwrap();
    assert_eq!(v.get(&id).unwrap().n_ctx, Some(9));
    v.get_mut(&id).unwrap().state = LoadState::Ready;
    assert_eq!(v.get(&id).unwrap().state, LoadState::Ready);
    assert_eq!(v.position(&"q/x".parse().unwrap()), None);
}

#[test]
fn facts_deserialize_with_defaults() {
    let f: CandidateFacts =
        serde_json::from_value(serde_json::json!({"model": "a/x", "tags": ["code"]})).unwrap();
    assert_eq!(f.lane, Lane::Local);
    assert_eq!(f.liveness, Liveness::Unknown);
    assert_eq!(f.state, LoadState::Unknown);
    assert!(f.has_tag("code"));
    let need = RequestFeatures {
        est_prompt_tokens: 100,
        max_tokens: Some(28),
        ..Default::default()
    };
    assert_eq!(need.needed_tokens(), 128);
    assert_eq!(RequestFeatures::default().needed_tokens(), 0);
}

/// A caller-side implementation that only provides `all()`.
struct Plain(Vec<CandidateFacts>);

impl FleetFacts for Plain {
    fn all(&self) -> &[CandidateFacts] {
        &self.0
    }
}

#[test]
fn custom_fleet_facts_with_default_lookup_decides_like_the_view() {
    let mut facts = vec![c("b/x", 4096), c("a/x", 65536), c("a/y", 1024)];
    for f in &mut facts {
        f.liveness = Liveness::Connected;
        f.state = LoadState::Ready;
    }
    let view = FleetView::new(facts.clone());
    let plain = Plain(view.all().to_vec());
    let p = RoutePolicy::new(
        "auto",
        vec![
            CandidateSpec::Model("b/x".parse().unwrap()),
            CandidateSpec::Provider("a".parse().unwrap()),
        ],
    );
    let r = RequestFeatures {
        est_prompt_tokens: 2000,
        ..Default::default()
    };
    let d = decide(&p, &r, &plain);
    assert_eq!(d, decide(&p, &r, &view));
    assert_eq!(d.chosen().unwrap().to_string(), "b/x");
    assert_eq!(
        plain.get(&"a/y".parse().unwrap()).unwrap().n_ctx,
        Some(1024)
    );
}
