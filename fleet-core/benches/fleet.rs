//! Micro benchmarks for the fleet core's hot paths (what a gateway following 100 hosts does
//! per event). Run: `cargo bench -p boo-fleet-core --bench fleet`.

use std::hint::black_box;

use boo_fleet_core::reconcile::{Dedup, reconcile};
use boo_fleet_core::wire::{SseDecoder, parse_activity_list, parse_event};
use boo_fleet_core::{Delta, FleetState, FleetView, ModelState};
use criterion::{Criterion, criterion_group, criterion_main};

const HOSTS: usize = 100;
const MODELS: [&str; 5] = [
    "qwen3-coder-30b",
    "llama-3.1-8b",
    "gemma-3-12b",
    "embed-small",
    "deepseek-r1-qwen3-8b",
];

fn fleet() -> FleetState {
    let mut f = FleetState::new();
    for h in 0..HOSTS {
        let id = format!("host-{h:03}");
        f.add_host(&id);
        let list: Vec<(String, ModelState)> = MODELS
            .iter()
            .map(|m| (m.to_string(), ModelState::Stopped))
            .collect();
        f.set_models(&id, &list, 1).unwrap();
    }
    f
}

fn model_status_sse(ready: usize) -> Vec<u8> {
    let list: Vec<serde_json::Value> = MODELS
        .iter()
        .enumerate()
        .map(|(i, m)| serde_json::json!({"id": m, "name": m, "description": "", "state": if i == ready { "ready" } else { "stopped" }, "unlisted": false, "peerID": ""}))
        .collect();
    let data = serde_json::to_string(&list).unwrap();
    let env = serde_json::json!({"type": "modelStatus", "data": data}).to_string();
    format!("event:message\ndata:{env}\n\n").into_bytes()
}

/// What a current llama-swap sends on `/api/events` for one proxied request: the in-flight
/// entry when it starts and when its headers arrive (with redacted request and response
/// headers), its removal, and the id of its stored activity row.
///
/// `go_layout`: the envelope as llama-swap's Go encoder writes it (`type`, then `data`), which
/// takes the split fast path; otherwise keys in another order (serde parses the envelope).
fn per_request_sse(n: u64, go_layout: bool) -> Vec<u8> {
    let headers = serde_json::json!({"Content-Type": ["application/json"], "Authorization": ["[REDACTED]"],
        "User-Agent": ["OpenAI/Python 1.99.0"], "X-Boo-Source": ["arena"], "Accept": ["application/json"],
        "X-Request-Id": [format!("gw-3f9a2c-{n:010x}")], "X-Forwarded-For": ["127.0.0.1"]});
    let entry = |resp: bool| {
        serde_json::json!({"id": n.to_string(), "timestamp": "2026-11-21T15:59:25.400485123Z",
            "model": "qwen3-coder-30b", "req_path": "/v1/chat/completions", "method": "POST",
            "req_headers": headers, "remote_ip": "127.0.0.1",
            "resp_headers": if resp { headers.clone() } else { serde_json::json!({}) },
            "resp_bytes": if resp { 412 } else { 0 }, "elapsed_ms": 3})
    };
    let msgs = [
        (
            "inflight",
            serde_json::json!({"operation": "upsert", "request": entry(false)}),
        ),
        (
            "inflight",
            serde_json::json!({"operation": "upsert", "request": entry(true)}),
        ),
        (
            "inflight",
            serde_json::json!({"operation": "remove", "id": n.to_string()}),
        ),
        ("activity", serde_json::json!({"id": n})),
    ];
    let mut out = String::new();
    for (ty, data) in msgs {
        let env = if go_layout {
            format!(
                "{{\"type\":\"{ty}\",\"data\":{}}}",
                serde_json::to_string(&data.to_string()).unwrap()
            )
        } else {
            serde_json::json!({"data": data.to_string(), "type": ty}).to_string()
        };
        out.push_str(&format!("event:message\ndata:{env}\n\n"));
    }
    out.into_bytes()
}

fn benches(c: &mut Criterion) {
    // The events of one proxied request on a llama-swap host: SSE decode and parse.
    for (name, go) in [
        ("per_request_events_decode", true),
        ("per_request_events_decode_keys_reordered", false),
    ] {
        let frames: Vec<Vec<u8>> = (0..64).map(|n| per_request_sse(n, go)).collect();
        c.bench_function(name, |b| {
            let mut dec = SseDecoder::new();
            let mut i = 0usize;
            b.iter(|| {
                i += 1;
                let msgs = dec.push(&frames[i % frames.len()]).unwrap();
                let evs: Vec<_> = msgs.iter().map(|m| parse_event(&m.data).unwrap()).collect();
                black_box(evs)
            })
        });
    }

    // One swap event on one of 100 hosts: SSE decode, envelope parse, state update, delta JSON.
    let frames = [model_status_sse(0), model_status_sse(1)];
    c.bench_function("swap_event_to_delta_json", |b| {
        let mut f = fleet();
        let mut dec = SseDecoder::new();
        let mut i = 0usize;
        b.iter(|| {
            i += 1;
            let host = format!("host-{:03}", i % HOSTS);
            let msgs = dec.push(&frames[i % 2]).unwrap();
            let ev = parse_event(&msgs[0].data).unwrap();
            let deltas = f
                .set_models(&host, &ev.local_model_states().unwrap(), i as u64)
                .unwrap();
            let json: Vec<String> = deltas
                .iter()
                .map(|d| serde_json::to_string(d).unwrap())
                .collect();
            black_box(json)
        })
    });

    // A subscriber applying one delta received as JSON.
    let mut f = fleet();
    let wire: Vec<String> = (0..1_000u64)
        .flat_map(|t| {
            let host = format!("host-{:03}", t as usize % HOSTS);
            let state = if t % 2 == 0 {
                ModelState::Ready
            } else {
                ModelState::Stopped
            };
            f.set_model_state(&host, MODELS[0], state, 10 + t).unwrap()
        })
        .map(|d| serde_json::to_string(&d).unwrap())
        .collect();
    let final_state = f.snapshot();
    c.bench_function("view_apply_1000_json_deltas", |b| {
        b.iter(|| {
            let mut v = FleetView::new();
            v.apply_snapshot(fleet().snapshot());
            for w in &wire {
                let d: Delta = serde_json::from_str(w).unwrap();
                v.apply_delta(d);
            }
            assert_eq!(v.snapshot().as_ref(), Some(&final_state));
        })
    });

    // The snapshot a new stream subscriber gets.
    let f = fleet();
    c.bench_function("snapshot_100_hosts_to_json", |b| {
        b.iter(|| black_box(serde_json::to_string(&f.snapshot()).unwrap()))
    });

    // Reconcile of a full legacy ring (1,000 rows, v209 shape) seen twice.
    let rows: Vec<serde_json::Value> = (0..1_000)
        .map(|i| serde_json::json!({"id": i, "timestamp": format!("2026-08-22T10:{:02}:{:02}.{:03}Z", i / 60 % 60, i % 60, i % 1000),
            "model": "qwen3-coder-30b", "req_path": "/v1/chat/completions", "resp_content_type": "text/event-stream",
            "resp_status_code": 200, "tokens": {"cache_tokens": 236, "input_tokens": 12, "output_tokens": 35,
            "prompt_per_second": 32.3, "tokens_per_second": 52.9}, "duration_ms": 692, "has_capture": true}))
        .collect();
    let ring = serde_json::Value::Array(rows).to_string();
    c.bench_function("reconcile_1000_row_ring", |b| {
        b.iter(|| {
            let mut dedup = Dedup::new(4_096);
            let batch = parse_activity_list(&ring).unwrap();
            let first = reconcile("host-000", batch.clone(), None, &mut dedup);
            let again = reconcile("host-000", batch, Some(0), &mut dedup);
            assert_eq!((first.fresh.len(), again.duplicates), (1_000, 1_000));
        })
    });
}

criterion_group!(fleet_benches, benches);
criterion_main!(fleet_benches);
