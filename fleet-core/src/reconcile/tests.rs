use super::*;
use crate::wire::parse_activity_list;

fn batch(rows: &[(u64, &str)]) -> Vec<ActivityEntry> {
    let items: Vec<serde_json::Value> = rows
        .iter()
        .map(|(id, ts)| serde_json::json!({"id": id, "timestamp": ts, "model": "qwen", "tokens": {"input_tokens": 1}}))
        .collect();
    parse_activity_list(&serde_json::Value::Array(items).to_string()).unwrap()
}

fn ms(ts: &str) -> u64 {
    crate::time::parse_rfc3339_ms(ts, "t").unwrap()
}

#[test]
fn overlapping_batch_is_not_a_gap() {
    let b = batch(&[(7, "2026-05-01T10:00:00Z"), (8, "2026-05-01T10:00:10Z")]);
    // Newest stored equals the oldest in the batch (inclusive `min_id` overlap).
    assert_eq!(
        detect_gap("gpu", &b, Some(ms("2026-05-01T10:00:00Z"))),
        None
    );
    assert_eq!(
        detect_gap("gpu", &b, Some(ms("2026-05-01T10:00:05Z"))),
        None
    );
}

#[test]
fn rolled_over_ring_is_a_gap_with_both_timestamps() {
    let b = batch(&[
        (1000, "2026-05-01T12:00:00Z"),
        (1001, "2026-05-01T12:00:01Z"),
    ]);
    let stored = ms("2026-05-01T10:00:00Z");
    let gap = detect_gap("gpu", &b, Some(stored)).unwrap();
    assert_eq!(gap.newest_stored_ts_ms, stored);
    assert_eq!(gap.oldest_batch_ts_ms, ms("2026-05-01T12:00:00Z"));
    let ev = gap.to_model_event();
    assert_eq!(
        (ev.model.as_str(), ev.state.as_str()),
        ("*", "gap_suspected")
    );
    assert_eq!(ev.ts_ms, gap.oldest_batch_ts_ms);
    assert_eq!(ev.detail["newest_stored_ts"], "2026-05-01T10:00:00.000Z");
    assert_eq!(ev.detail["oldest_batch_ts"], "2026-05-01T12:00:00.000Z");
}

#[test]
fn fresh_install_or_empty_batch_is_not_a_gap() {
    let b = batch(&[(0, "2026-05-01T12:00:00Z")]);
    assert_eq!(detect_gap("gpu", &b, None), None);
    assert_eq!(detect_gap("gpu", &[], Some(0)), None);
}

#[test]
fn restarted_legacy_host_reuses_ids_but_not_timestamps() {
    let mut dedup = Dedup::new(100);
    let before = batch(&[(0, "2026-05-01T10:00:00Z"), (1, "2026-05-01T10:00:01Z")]);
    let r = reconcile("gpu", before, None, &mut dedup);
    assert_eq!((r.fresh.len(), r.gap), (2, None));
    // The host restarted: ids start at 0 again, later timestamps: new rows and a gap.
    let after = batch(&[(0, "2026-05-01T11:00:00Z"), (1, "2026-05-01T11:00:01Z")]);
    let r = reconcile("gpu", after, Some(ms("2026-05-01T10:00:01Z")), &mut dedup);
    assert_eq!((r.fresh.len(), r.duplicates), (2, 0));
    assert!(r.gap.is_some());
}

#[test]
fn duplicates_within_and_across_batches_and_hosts() {
    let mut dedup = Dedup::new(100);
    let b = batch(&[
        (3, "2026-05-01T10:00:00Z"),
        (3, "2026-05-01T10:00:00Z"),
        (4, "2026-05-01T10:00:02Z"),
    ]);
    let r = reconcile("gpu", b.clone(), None, &mut dedup);
    assert_eq!((r.fresh.len(), r.duplicates), (2, 1));
    let r = reconcile(
        "gpu",
        b.clone(),
        Some(ms("2026-05-01T10:00:02Z")),
        &mut dedup,
    );
    assert_eq!((r.fresh.len(), r.duplicates), (0, 3));
    // Same ids and timestamps on another host are different rows.
    let r = reconcile("other", b, None, &mut dedup);
    assert_eq!(r.fresh.len(), 2);
}

#[test]
fn dedup_forgets_the_oldest_keys_beyond_its_cap() {
    let mut d = Dedup::new(2);
    let k = |id| ActivityKey {
        provider: "p".into(),
        upstream_id: id,
        ts_ms: 1,
    };
    assert!(d.insert(k(1)) && d.insert(k(2)) && d.insert(k(3)));
    assert_eq!(d.len(), 2);
    assert!(d.insert(k(1)), "key 1 was evicted");
    assert!(!d.insert(k(3)));
}

#[test]
fn model_events_follow_state_deltas_only() {
    let mut f = crate::FleetState::new();
    f.add_host("gpu");
    let d = f
        .set_model_state("gpu", "qwen", crate::ModelState::Starting, 5_000)
        .unwrap()
        .unwrap();
    let ev = ModelEvent::from_delta(&d).unwrap();
    assert_eq!(
        (
            ev.provider.as_str(),
            ev.model.as_str(),
            ev.state.as_str(),
            ev.ts_ms
        ),
        ("gpu", "qwen", "starting", 5_000)
    );
    let d = f.set_in_flight("gpu", 2).unwrap().unwrap();
    assert_eq!(ModelEvent::from_delta(&d), None);
}
