//! Route policies and the `auto:*` dispatch log, against SQLite always and Postgres when
//! `DATABASE_URL` is set.

mod common;

use boo_telemetry_store::policies::MAX_POLICY_NAME as MAX_NAME;
use common::{Harness, act, at, req};
use serde_json::json;

suite!(
    policies_are_upserted_listed_deleted_and_survive_a_restart,
    bad_policy_rows_are_rejected_naming_the_field,
    route_log_reads_auto_requests_back_newest_first_per_policy,
    model_speeds_average_recent_successful_samples_per_host_and_model,
);

async fn policies_are_upserted_listed_deleted_and_survive_a_restart(mut h: Harness) {
    let s = h.store.clone();
    assert!(s.route_policies().await.unwrap().is_empty());
    let code = json!({"name": "auto:code", "candidates": ["tag:code"], "order": ["prefer_loaded"]});
    let fast = json!({"name": "auto:fast", "candidates": ["tag:fast"]});
    s.put_route_policy("auto:fast", &fast).await.unwrap();
    s.put_route_policy(
        "auto:code",
        &json!({"name": "auto:code", "candidates": ["*"]}),
    )
    .await
    .unwrap();
    // Replacing keeps one row per name.
    s.put_route_policy("auto:code", &code).await.unwrap();
    let rows = s.route_policies().await.unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["auto:code", "auto:fast"]);
    assert_eq!(rows[0].policy, code);
    assert!(rows[0].updated_at >= rows[1].updated_at);

    h.restart().await;
    let s = h.store.clone();
    let rows = s.route_policies().await.unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].policy, code);
    assert_eq!(rows[1].policy, fast);

    assert!(s.delete_route_policy("auto:fast").await.unwrap());
    assert!(!s.delete_route_policy("auto:fast").await.unwrap());
    let rows = s.route_policies().await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "auto:code");
}

async fn bad_policy_rows_are_rejected_naming_the_field(h: Harness) {
    let s = h.store.clone();
    let e = s.put_route_policy("", &json!({})).await.unwrap_err();
    assert!(e.to_string().contains("route_policies.name"), "{e}");
    let long = "a".repeat(MAX_NAME + 1);
    let e = s.put_route_policy(&long, &json!({})).await.unwrap_err();
    assert!(e.to_string().contains("route_policies.name"), "{e}");
    let e = s
        .put_route_policy("auto", &json!([1, 2]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("route_policies.policy"), "{e}");
    assert!(s.route_policies().await.unwrap().is_empty());
}

async fn route_log_reads_auto_requests_back_newest_first_per_policy(mut h: Harness) {
    let mut rows = Vec::new();
    for (i, policy) in ["auto:code", "auto", "auto:code", "auto:code"]
        .iter()
        .enumerate()
    {
        let mut r = req(&format!("a{i}"), 10 * i as i64, "desk", None);
        r.model = policy.to_string();
        r.status = if i == 3 { 503 } else { 200 };
        r.route = Some(json!({
            "decision": {"policy": policy, "attempts": [{"model": "desk/qwen"}]},
            "failover": {"attempts": [{"model": "desk/qwen", "outcome": {"kind": "first_byte"}}]},
        }).into());
        rows.push(r);
    }
    // Direct (composite-id) traffic has no route and is not part of the log.
    let mut direct = req("direct", 100, "desk", None);
    direct.route = None;
    rows.push(direct);
    assert_eq!(h.store.insert_requests(&rows).await.unwrap(), 5);
    h.restart().await;
    let s = h.store.clone();

    let all = s.route_log(None, 50).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["a3", "a2", "a1", "a0"]);
    assert_eq!(all[0].status, 503);
    assert_eq!(all[0].policy, "auto:code");
    assert_eq!(all[0].provider_id, "desk");
    assert_eq!(
        all[0].route["failover"]["attempts"][0]["outcome"]["kind"],
        "first_byte"
    );

    let code = s.route_log(Some("auto:code"), 50).await.unwrap();
    let ids: Vec<&str> = code.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["a3", "a2", "a0"]);
    let limited = s.route_log(Some("auto:code"), 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    assert!(s.route_log(Some("auto:none"), 50).await.unwrap().is_empty());
    // limit 0 is clamped to 1.
    assert_eq!(s.route_log(None, 0).await.unwrap().len(), 1);
}

async fn model_speeds_average_recent_successful_samples_per_host_and_model(h: Harness) {
    let s = h.store.clone();
    let mut rows = Vec::new();
    for (i, (provider, gen_speed, prompt, status, secs)) in [
        ("desk", 40.0, 400.0, 200, 100),
        ("desk", 60.0, 600.0, 200, 110),
        // Failed and old requests do not count.
        ("desk", 1.0, 1.0, 500, 120),
        ("desk", 1.0, 1.0, 200, 10),
        ("laptop", 20.0, 0.0, 200, 100),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = req(&format!("s{i}"), secs, provider, None);
        r.gen_tps = Some(gen_speed);
        r.prompt_tps = Some(prompt);
        r.status = status;
        rows.push(r);
    }
    s.insert_requests(&rows).await.unwrap();
    // Host activity reconciled from llama-swap counts too.
    let mut a = act("desk", 1, 130);
    a.gen_tps = Some(50.0);
    a.prompt_tps = None;
    s.insert_activity(&[a]).await.unwrap();

    let sp = s.model_speeds(at(50)).await.unwrap();
    assert_eq!(sp.len(), 2, "{sp:?}");
    assert_eq!(
        (sp[0].provider_id.as_str(), sp[0].model.as_str()),
        ("desk", "qwen")
    );
    assert_eq!(sp[0].samples, 3);
    assert!((sp[0].gen_tps.unwrap() - 50.0).abs() < 1e-9, "{sp:?}");
    assert!((sp[0].prompt_tps.unwrap() - 500.0).abs() < 1e-9, "{sp:?}");
    assert_eq!(sp[1].provider_id, "laptop");
    assert_eq!(
        sp[1].prompt_tps, None,
        "zero prompt speed is not a measurement"
    );
    assert!(s.model_speeds(at(1000)).await.unwrap().is_empty());
}
