use super::*;
use crate::{LivenessInput, ReconnectPolicy};

#[test]
fn delta_and_snapshot_json_shape() {
    let mut f = FleetState::new();
    f.add_host("gpu");
    let d = f
        .set_model_state("gpu", "qwen", ModelState::Starting, 5)
        .unwrap()
        .unwrap();
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"provider":"gpu","seq":2,"change":{"kind":"model","model":"qwen","status":{"state":"starting","since":5}}})
    );
    let s = serde_json::to_value(f.snapshot()).unwrap();
    assert_eq!(s["hosts"][0]["liveness"], "reconnecting");
    assert_eq!(s["hosts"][0]["seq"], 2);
    let d = f.set_in_flight("gpu", 3).unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&d).unwrap()["change"],
        serde_json::json!({"kind":"in_flight","count":3})
    );
}

#[test]
fn unknown_host_is_an_error_and_unchanged_values_emit_nothing() {
    let mut f = FleetState::new();
    assert!(matches!(
        f.set_in_flight("nope", 1),
        Err(crate::Error::UnknownHost { .. })
    ));
    f.add_host("gpu");
    assert!(f.add_host("gpu").is_none());
    assert!(f.set_in_flight("gpu", 0).unwrap().is_none());
    assert!(f.set_lease("gpu", None).unwrap().is_none());
}

#[test]
fn last_seen_is_throttled_but_state_changes_are_not() {
    let p = ReconnectPolicy::default();
    let mut f = FleetState::new(); // 1 s granularity
    f.add_host("gpu");
    let mut l = crate::Liveness::new();
    l.step(LivenessInput::Connected, 10_000, &p, 0.0);
    assert!(f.set_liveness("gpu", &l).unwrap().is_some());
    l.step(LivenessInput::Event, 10_400, &p, 0.0);
    assert!(f.set_liveness("gpu", &l).unwrap().is_none());
    l.step(LivenessInput::Event, 11_000, &p, 0.0);
    let d = f.set_liveness("gpu", &l).unwrap().unwrap();
    assert_eq!(
        d.change,
        Change::Liveness {
            state: LivenessState::Connected,
            last_seen_at: Some(11_000)
        }
    );
    l.step(LivenessInput::Error, 11_100, &p, 0.0);
    let d = f.set_liveness("gpu", &l).unwrap().unwrap();
    assert_eq!(
        d.change,
        Change::Liveness {
            state: LivenessState::Reconnecting,
            last_seen_at: Some(11_000)
        }
    );
}

#[test]
fn model_list_replacement_removes_unlisted_models() {
    let mut f = FleetState::new();
    f.add_host("gpu");
    f.set_models(
        "gpu",
        &[
            ("a".into(), ModelState::Ready),
            ("b".into(), ModelState::Stopped),
        ],
        1,
    )
    .unwrap();
    f.set_model_ttl("gpu", "a", Some(60)).unwrap();
    let ds = f
        .set_models(
            "gpu",
            &[
                ("a".into(), ModelState::Ready),
                ("c".into(), ModelState::Starting),
            ],
            2,
        )
        .unwrap();
    let kinds: Vec<&Change> = ds.iter().map(|d| &d.change).collect();
    assert!(matches!(kinds[0], Change::ModelRemoved { model } if model == "b"));
    assert!(matches!(kinds[1], Change::Model { model, .. } if model == "c"));
    assert_eq!(ds.len(), 2, "unchanged `a` emits nothing");
    assert_eq!(
        f.host("gpu").unwrap().models["a"].ttl_s,
        Some(60),
        "TTL survives a status refresh"
    );
}

#[test]
fn removed_host_keeps_counting_when_added_back() {
    let mut f = FleetState::new();
    f.add_host("gpu");
    f.set_in_flight("gpu", 1).unwrap();
    let r = f.remove_host("gpu").unwrap();
    assert_eq!(r.seq, 3);
    assert_eq!(f.snapshot().retired.get("gpu"), Some(&3));
    let a = f.add_host("gpu").unwrap();
    assert_eq!(a.seq, 4);
    assert_eq!(f.host("gpu").unwrap().in_flight, 0);
    assert!(f.snapshot().retired.is_empty());
}

#[test]
fn restore_host_rebuilds_from_storage() {
    let mut f = FleetState::new();
    let mut models = BTreeMap::new();
    models.insert("qwen".to_owned(), ModelStatus::new(ModelState::Ready, 100));
    let d = f.restore_host("gpu", Some(900), models, None);
    let h = f.host("gpu").unwrap();
    assert_eq!(
        (h.liveness, h.last_seen_at, h.seq, d.seq),
        (LivenessState::Reconnecting, Some(900), 1, 1)
    );
    assert_eq!(h.models["qwen"].state, ModelState::Ready);
}

#[test]
fn perf_keeps_only_newer_samples() {
    let mut f = FleetState::new();
    f.add_host("gpu");
    let s = |at| PerfSample {
        at,
        vram_used_mb: Some(1),
        vram_total_mb: Some(2),
        gpu_temp_c: None,
        power_w: None,
    };
    assert!(f.set_perf("gpu", s(10)).unwrap().is_some());
    assert!(f.set_perf("gpu", s(10)).unwrap().is_none());
    assert!(f.set_perf("gpu", s(5)).unwrap().is_none());
}

#[test]
fn view_before_snapshot_buffers_and_reports_nothing() {
    let mut f = FleetState::new();
    let d = f.add_host("gpu").unwrap();
    let mut v = FleetView::new();
    assert_eq!(v.apply_delta(d), Applied::Buffered);
    assert_eq!(
        (v.is_synced(), v.buffered(), v.hosts().len(), v.snapshot()),
        (false, 1, 0, None)
    );
    v.apply_snapshot(FleetSnapshot::default());
    assert_eq!((v.is_synced(), v.buffered(), v.hosts().len()), (true, 0, 1));
}
