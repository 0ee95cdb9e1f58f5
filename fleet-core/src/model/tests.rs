use super::*;

fn ready_at(t: u64, ttl: Option<u64>) -> ModelStatus {
    let mut m = ModelStatus::new(ModelState::Ready, t);
    m.ttl_s = ttl;
    m
}

#[test]
fn ttl_counts_from_the_last_request() {
    let mut m = ready_at(1_000, Some(60));
    assert_eq!(
        m.ttl_remaining_ms(1_000),
        Some(60_000),
        "from ready_since when unused"
    );
    m.last_used_at = Some(30_000);
    assert_eq!(m.ttl_expires_at(), Some(90_000));
    assert_eq!(m.ttl_remaining_ms(50_000), Some(40_000));
    assert_eq!(m.ttl_remaining_ms(100_000), Some(0));
}

#[test]
fn ttl_not_applicable() {
    assert_eq!(
        ready_at(0, Some(0)).ttl_remaining_ms(5),
        None,
        "0 = never unload"
    );
    assert_eq!(ready_at(0, None).ttl_remaining_ms(5), None, "unknown");
    let mut m = ready_at(0, Some(60));
    m.transition(ModelState::Stopping, 10);
    assert_eq!(m.ttl_remaining_ms(20), None, "only ready models count down");
}

#[test]
fn becoming_ready_again_restarts_the_clock() {
    let mut m = ready_at(0, Some(10));
    m.last_used_at = Some(1_000);
    assert!(m.transition(ModelState::Stopped, 20_000));
    assert!(m.transition(ModelState::Ready, 50_000));
    assert_eq!(m.ready_since, Some(50_000));
    assert_eq!(
        m.ttl_expires_at(),
        Some(60_000),
        "old last use predates the reload"
    );
    assert!(
        !m.transition(ModelState::Ready, 60_000),
        "no change, no event"
    );
}

#[test]
fn fleet_tracks_ttl_and_last_use() {
    let mut f = crate::FleetState::new();
    f.add_host("gpu");
    f.set_model_state("gpu", "qwen", ModelState::Ready, 1_000)
        .unwrap();
    assert!(f.set_model_ttl("gpu", "qwen", Some(300)).unwrap().is_some());
    assert!(f.set_model_ttl("gpu", "qwen", Some(300)).unwrap().is_none());
    assert!(f.model_used("gpu", "qwen", 10_000).unwrap().is_some());
    assert!(
        f.model_used("gpu", "qwen", 9_000).unwrap().is_none(),
        "older completions are ignored"
    );
    let m = &f.host("gpu").unwrap().models["qwen"];
    assert_eq!(m.ttl_remaining_ms(100_000), Some(210_000));
    assert!(f.model_used("gpu", "unknown-model", 1).unwrap().is_none());
}

#[test]
fn serde_names_are_lowercase() {
    assert_eq!(
        serde_json::to_string(&ModelState::Starting).unwrap(),
        "\"starting\""
    );
    let m: ModelState = serde_json::from_str("\"shutdown\"").unwrap();
    assert_eq!(m, ModelState::Shutdown);
    assert_eq!(ModelState::from_llama_swap("bogus"), ModelState::Unknown);
    assert_eq!(ModelState::from_llama_server_health(404), ModelState::Error);
}
