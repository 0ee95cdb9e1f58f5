//! Behaviour of the emulated hosts: swap, TTL, speed model, faults, observability and fleets.

#[path = "../common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use boo_fleet_sim::{
    ApiGen, Fleet, FleetSpec, GroupSpec, HostSpec, ModelSpec, SimError, client, start_host,
};
use bytes::Bytes;
use common::{GUARD, Stream, chat, data_chunks, get, open_json_stream, post};
use http::Method;
use serde_json::json;

fn model(id: &str, load_ms: u64) -> ModelSpec {
    let mut m = ModelSpec::new(id);
    m.load_ms = load_ms;
    m
}

fn streaming(model: &str, tokens: u32) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "go"}], "max_tokens": tokens, "ignore_eos": true, "stream": true})
}

#[tokio::test]
async fn group_swap_stops_the_loaded_model_and_events_show_the_order() {
    let spec = HostSpec::llama_swap(
        "g",
        ApiGen::Current,
        vec![model("a", 2000), model("b", 2000)],
    )
    .with_time_scale(0.001);
    let h = start_host(spec).await.expect("start");
    let url = h.base_url();
    let mut ev = Stream::open(&url, Method::GET, "/api/events", &[], Bytes::new()).await;
    assert_eq!(
        post(&url, "/v1/chat/completions", &chat("a", "hi", 1))
            .await
            .status,
        200
    );
    assert_eq!(
        (h.model_state("a"), h.model_state("b")),
        (Some("ready"), Some("stopped"))
    );
    assert_eq!(
        post(&url, "/v1/chat/completions", &chat("b", "hi", 1))
            .await
            .status,
        200
    );
    assert_eq!(
        (h.model_state("a"), h.model_state("b")),
        (Some("stopped"), Some("ready")),
        "one model at a time"
    );
    // The modelStatus events show a: starting -> ready, then a: stopping -> stopped before b: ready.
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("b:ready") {
        let (_, v) = ev
            .event_where(|t, _| t == "modelStatus")
            .await
            .expect("modelStatus");
        let states: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["state"] != "stopped")
            .map(|m| {
                format!(
                    "{}:{}",
                    m["id"].as_str().unwrap_or(""),
                    m["state"].as_str().unwrap_or("")
                )
            })
            .collect();
        seen.push(states.join(","));
    }
    let pos = |s: &str| seen.iter().position(|x| x == s).unwrap_or(usize::MAX);
    assert!(pos("a:starting") < pos("a:ready"), "{seen:?}");
    assert!(pos("a:stopping") < pos("b:starting"), "{seen:?}");
    assert!(pos("b:starting") < pos("b:ready"), "{seen:?}");
}

#[tokio::test]
async fn swap_waits_for_in_flight_requests_on_the_evicted_model() {
    let mut a = model("a", 0);
    a.gen_tps = 100.0; // 40 tokens = 400 ms emulated; at 0.1 = 40 ms real
    let spec =
        HostSpec::llama_swap("g", ApiGen::Current, vec![a, model("b", 0)]).with_time_scale(0.1);
    let h = start_host(spec).await.expect("start");
    let url = h.base_url();
    let mut s = open_json_stream(&url, "/v1/chat/completions", &streaming("a", 40)).await;
    let b = tokio::spawn({
        let url = url.clone();
        async move { post(&url, "/v1/chat/completions", &chat("b", "hi", 1)).await }
    });
    // The stream on `a` completes cleanly even though `b` asked for a swap meanwhile.
    let msgs = s
        .all_messages()
        .await
        .expect("stream on a was not killed by the swap");
    assert_eq!(msgs.last().map(String::as_str), Some("data: [DONE]"));
    assert_eq!(
        data_chunks(&msgs)
            .iter()
            .filter(|c| c["choices"][0]["delta"]["content"].is_string())
            .count(),
        40
    );
    assert_eq!(
        tokio::time::timeout(GUARD, b)
            .await
            .expect("guard")
            .expect("join")
            .status,
        200
    );
    assert_eq!(h.model_state("a"), Some("stopped"));
}

#[tokio::test]
async fn non_exclusive_persistent_group_keeps_running() {
    let mut spec = HostSpec::llama_swap(
        "g",
        ApiGen::Current,
        vec![model("emb", 0), model("x", 0), model("y", 0)],
    )
    .with_time_scale(0.001);
    spec.groups.insert(
        "keep".into(),
        GroupSpec {
            swap: false,
            exclusive: false,
            persistent: true,
            members: vec!["emb".into()],
        },
    );
    let h = start_host(spec).await.expect("start");
    let url = h.base_url();
    for m in ["emb", "x", "y"] {
        assert_eq!(
            post(&url, "/v1/chat/completions", &chat(m, "hi", 1))
                .await
                .status,
            200
        );
    }
    assert_eq!(
        (h.model_state("emb"), h.model_state("x"), h.model_state("y")),
        (Some("ready"), Some("stopped"), Some("ready"))
    );
}

#[tokio::test]
async fn ttl_unloads_an_idle_model() {
    let mut m = model("m", 0);
    m.ttl = 2; // 2 s emulated; at 0.01 = 20 ms
    let h = start_host(HostSpec::llama_swap("t", ApiGen::Current, vec![m]).with_time_scale(0.01))
        .await
        .expect("start");
    assert_eq!(
        post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1))
            .await
            .status,
        200
    );
    assert!(
        h.wait_model_state("m", "stopped", GUARD).await,
        "TTL unload"
    );
    let running = get(&h.base_url(), "/running").await.json();
    assert_eq!(running, json!({"running": []}));
}

#[tokio::test]
async fn load_time_counts_in_ttft_only_when_not_loaded() {
    let mut m = model("m", 1000); // 1 s emulated at scale 1
    m.prompt_tps = 0.0;
    m.gen_tps = 0.0;
    let h = start_host(HostSpec::llama_swap("l", ApiGen::Current, vec![m]))
        .await
        .expect("start");
    let t0 = Instant::now();
    assert_eq!(
        post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1))
            .await
            .status,
        200
    );
    let cold = t0.elapsed();
    assert!(
        cold >= Duration::from_millis(1000),
        "cold request waited for the load: {cold:?}"
    );
    let t1 = Instant::now();
    assert_eq!(
        post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1))
            .await
            .status,
        200
    );
    assert!(
        t1.elapsed() < cold,
        "a warm request is faster than a cold one"
    );
}

#[tokio::test]
async fn slots_queue_requests_and_tokens_are_paced() {
    let mut m = model("m", 0);
    m.slots = 1;
    m.gen_tps = 20.0; // 10 tokens = 500 ms emulated, 50 ms real at 0.1
    let h = start_host(HostSpec::llama_server("s", m).with_time_scale(0.1))
        .await
        .expect("start");
    assert!(h.wait_model_state("m", "ready", GUARD).await);
    let url = h.base_url();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "go"}], "max_tokens": 10, "ignore_eos": true});
    let t0 = Instant::now();
    let (a, b) = tokio::join!(
        post(&url, "/v1/chat/completions", &body),
        post(&url, "/v1/chat/completions", &body)
    );
    assert_eq!((a.status, b.status), (200, 200));
    // One slot: the second request waits for the first, so the pair takes at least two generations.
    assert!(
        t0.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(a.json()["timings"]["predicted_per_second"], 20.0);
}

#[tokio::test]
async fn prompt_cache_counts_repeated_prefix() {
    let h = start_host(HostSpec::llama_server("c", model("m", 0)).with_time_scale(0.001))
        .await
        .expect("start");
    assert!(h.wait_model_state("m", "ready", GUARD).await);
    let url = h.base_url();
    let first = json!({"model": "m", "max_tokens": 2, "messages": [{"role": "system", "content": "You are terse. ".repeat(20)}, {"role": "user", "content": "one"}]});
    let second = json!({"model": "m", "max_tokens": 2, "messages": [{"role": "system", "content": "You are terse. ".repeat(20)}, {"role": "user", "content": "two"}]});
    let a = post(&url, "/v1/chat/completions", &first).await.json();
    let b = post(&url, "/v1/chat/completions", &second).await.json();
    assert_eq!(a["timings"]["cache_n"], 0);
    let cached = b["timings"]["cache_n"].as_u64().unwrap_or(0);
    assert!(cached > 0, "{b}");
    assert_eq!(
        b["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
        Some(cached)
    );
    assert_eq!(
        b["usage"]["prompt_tokens"].as_u64(),
        Some(cached + b["timings"]["prompt_n"].as_u64().unwrap_or(0)),
        "usage includes cached, prompt_n excludes it"
    );
}

#[tokio::test]
async fn stop_words_and_determinism() {
    let h = start_host(HostSpec::llama_server("d", model("m", 0)).with_time_scale(0.001))
        .await
        .expect("start");
    assert!(h.wait_model_state("m", "ready", GUARD).await);
    let url = h.base_url();
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "tell"}], "max_tokens": 30, "ignore_eos": true, "seed": 7});
    let a = post(&url, "/v1/chat/completions", &body).await.json();
    let b = post(&url, "/v1/chat/completions", &body).await.json();
    let text = a["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        text,
        b["choices"][0]["message"]["content"].as_str().unwrap_or(""),
        "seeded text is deterministic"
    );
    let word = text
        .split_whitespace()
        .nth(5)
        .unwrap_or("the")
        .trim_matches('.')
        .to_owned();
    let mut with_stop = body.clone();
    with_stop["stop"] = json!([word.clone()]);
    let c = post(&url, "/v1/chat/completions", &with_stop).await.json();
    assert_eq!(c["choices"][0]["finish_reason"], "stop");
    let stopped = c["choices"][0]["message"]["content"].as_str().unwrap_or("");
    assert!(
        !stopped.contains(&word) && text.starts_with(stopped),
        "{stopped:?} vs {text:?}"
    );
}

#[tokio::test]
async fn load_failure_is_an_unspecific_500_and_recovers() {
    let h = start_host(
        HostSpec::llama_swap("f", ApiGen::Current, vec![model("m", 1000)]).with_time_scale(0.001),
    )
    .await
    .expect("start");
    h.faults().fail_load("m", true);
    let r = post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1)).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.json()["error"],
        "unspecific error: upstream command exited prematurely"
    );
    assert_eq!(h.model_state("m"), Some("stopped"));
    h.faults().fail_load("m", false);
    assert_eq!(
        post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn host_down_refuses_and_restart_resets_activity_ids() {
    let h = start_host(
        HostSpec::llama_swap("r", ApiGen::Legacy, vec![model("m", 0)]).with_time_scale(0.001),
    )
    .await
    .expect("start");
    let url = h.base_url();
    for _ in 0..2 {
        assert_eq!(
            post(&url, "/v1/chat/completions", &chat("m", "hi", 1))
                .await
                .status,
            200
        );
    }
    let ids: Vec<u64> = get(&url, "/api/metrics")
        .await
        .json()
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(ids, [0, 1]);
    let mut ev = Stream::open(&url, Method::GET, "/api/events", &[], Bytes::new()).await;
    h.faults().host_down().await;
    let err = client::get(&url, "/health")
        .await
        .expect_err("refused while down");
    assert!(err.0.contains("connect"), "{err}");
    assert!(
        ev.all_messages().await.is_err() || ev.next_message().await.is_err(),
        "open event stream is cut"
    );
    h.faults().restart().await;
    assert_eq!(
        h.model_state("m"),
        Some("stopped"),
        "models are stopped after a restart"
    );
    assert_eq!(
        get(&url, "/api/metrics").await.json(),
        json!([]),
        "in-memory ring is gone"
    );
    assert_eq!(
        post(&url, "/v1/chat/completions", &chat("m", "hi", 1))
            .await
            .status,
        200
    );
    let ids: Vec<u64> = get(&url, "/api/metrics")
        .await
        .json()
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(ids, [0], "legacy ids restart from 0");
}

#[tokio::test]
async fn error_rate_spreads_5xx_deterministically() {
    let h = start_host(
        HostSpec::llama_swap("e", ApiGen::Current, vec![model("m", 0)]).with_time_scale(0.001),
    )
    .await
    .expect("start");
    h.faults().set_error_rate(0.25);
    h.faults().set_error_status(503);
    let mut codes = Vec::new();
    for _ in 0..8 {
        codes.push(
            post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1))
                .await
                .status,
        );
    }
    assert_eq!(codes.iter().filter(|c| **c == 503).count(), 2, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 6, "{codes:?}");
    // Streamed requests draw once too: half of four streams fail at rate 0.5.
    h.faults().set_error_rate(0.5);
    let mut streamed = Vec::new();
    for _ in 0..4 {
        streamed.push(
            post(&h.base_url(), "/v1/chat/completions", &streaming("m", 2))
                .await
                .status,
        );
    }
    assert_eq!(
        streamed.iter().filter(|c| **c == 503).count(),
        2,
        "{streamed:?}"
    );
    // Upstream errors pass through without llama-swap's `src` and are still metered.
    h.faults().set_error_rate(1.0);
    let r = post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1)).await;
    assert!(r.json().get("src").is_none());
    assert_eq!(r.json()["error"]["code"], 503);
    let a = get(&h.base_url(), "/api/metrics/activity?limit=1")
        .await
        .json();
    assert_eq!(a["data"][0]["resp_status_code"], 503);
    assert_eq!(a["data"][0]["error_msg"], "fleet-sim injected fault");
}

#[tokio::test]
async fn hang_holds_the_first_byte_until_cleared() {
    let h = start_host(
        HostSpec::llama_swap("h", ApiGen::Current, vec![model("m", 0)]).with_time_scale(0.001),
    )
    .await
    .expect("start");
    let url = h.base_url();
    assert_eq!(
        post(&url, "/v1/chat/completions", &chat("m", "hi", 1))
            .await
            .status,
        200
    );
    h.faults().hang();
    let pending = tokio::spawn({
        let url = url.clone();
        async move { post(&url, "/v1/chat/completions", &chat("m", "hi", 1)).await }
    });
    let short = client::request(&url, Method::GET, "/health", &[], Bytes::new())
        .await
        .expect("non-inference routes answer");
    assert_eq!(short.status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !pending.is_finished(),
        "hung request must not have answered"
    );
    h.faults().clear_hang();
    assert_eq!(
        tokio::time::timeout(GUARD, pending)
            .await
            .expect("guard")
            .expect("join")
            .status,
        200
    );
}

#[tokio::test]
async fn cut_stream_ends_without_done_and_stall_delays() {
    let h = start_host(
        HostSpec::llama_swap("c", ApiGen::Current, vec![model("m", 0)]).with_time_scale(0.001),
    )
    .await
    .expect("start");
    let url = h.base_url();
    h.faults().cut_stream_after(Some(3));
    let mut s = open_json_stream(&url, "/v1/chat/completions", &streaming("m", 20)).await;
    let got = s
        .all_messages()
        .await
        .expect_err("the stream is cut, not ended cleanly");
    assert_eq!(got.len(), 3);
    assert!(!got.iter().any(|m| m.contains("[DONE]")));
    h.faults().cut_stream_after(None);
    h.faults()
        .stall_stream(Some((2, Duration::from_millis(150))));
    let t0 = Instant::now();
    let mut s = open_json_stream(&url, "/v1/chat/completions", &streaming("m", 5)).await;
    let msgs = s.all_messages().await.expect("clean end after the stall");
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(msgs.last().map(String::as_str), Some("data: [DONE]"));
}

#[tokio::test]
async fn unload_kills_in_flight_streams() {
    let mut m = model("m", 0);
    m.gen_tps = 10.0; // 100 tokens = 10 s emulated = 1 s real at 0.1
    let h = start_host(HostSpec::llama_swap("k", ApiGen::Current, vec![m]).with_time_scale(0.1))
        .await
        .expect("start");
    let url = h.base_url();
    let mut s = open_json_stream(&url, "/v1/chat/completions", &streaming("m", 100)).await;
    let first = s
        .next_message()
        .await
        .expect("first chunk")
        .expect("not ended");
    assert!(first.starts_with("data: "));
    let r = client::request(
        &url,
        Method::POST,
        "/api/models/unload/m",
        &[],
        Bytes::new(),
    )
    .await
    .expect("unload");
    assert_eq!(r.status, 200);
    assert!(
        s.all_messages().await.is_err(),
        "the stream fails instead of finishing"
    );
}

#[tokio::test]
async fn slow_event_consumer_drops_events_on_overflow() {
    let h = start_host(
        HostSpec::llama_swap("s", ApiGen::Current, vec![model("m", 0)]).with_time_scale(0.001),
    )
    .await
    .expect("start");
    h.faults().set_event_buffer(Some(4));
    h.faults().slow_events(Some(Duration::from_millis(200)));
    let _ev = Stream::open(&h.base_url(), Method::GET, "/api/events", &[], Bytes::new()).await;
    for _ in 0..10 {
        assert_eq!(
            post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1))
                .await
                .status,
            200
        );
    }
    assert!(
        h.faults().dropped_events() > 0,
        "events were dropped, requests were not slowed"
    );
}

#[tokio::test]
async fn stats_record_paths_headers_and_models() {
    let h = start_host(
        HostSpec::llama_swap("o", ApiGen::Current, vec![model("m", 0)]).with_time_scale(0.001),
    )
    .await
    .expect("start");
    let url = h.base_url();
    let stats = h.stats();
    assert_eq!(stats.total_requests(), 0);
    let body = serde_json::to_vec(&chat("m", "hi", 1)).unwrap_or_default();
    let r = client::request(
        &url,
        Method::POST,
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("x-boo-source", "bench:run-7"),
        ],
        body.clone(),
    )
    .await
    .expect("req");
    assert_eq!(r.status, 200);
    let _ = get(&url, "/running").await;
    assert_eq!(stats.requests("/v1/chat/completions"), 1);
    assert_eq!(stats.requests("/running"), 1);
    assert_eq!(stats.inference_requests(), 1);
    let rec = &stats.received_on("/v1/chat/completions")[0];
    assert_eq!(rec.header("X-Boo-Source"), Some("bench:run-7"));
    assert_eq!(rec.model.as_deref(), Some("m"));
    assert_eq!(&rec.body[..], &body[..]);
    assert_eq!(rec.method, "POST");
    stats.reset();
    assert_eq!(stats.total_requests(), 0);
    assert!(stats.received().is_empty());
}

#[tokio::test]
async fn fleet_from_yaml_and_json_with_sidecar() {
    let yaml = r#"
time_scale: 0.001
hosts:
  - id: a
    models: [{id: m1, load_ms: 10}]
    sidecar:
      id: a-side
      mode: llama-server
      models: [{id: emb, embedding: true, n_embd: 8}]
  - id: b
    mode: llama-server
    models: [{id: m2}]
"#;
    let fleet = Fleet::start(FleetSpec::from_yaml(yaml).expect("yaml"))
        .await
        .expect("start");
    assert_eq!(fleet.hosts().len(), 2);
    let a = fleet.host("a").expect("a");
    let side = a.sidecar().expect("sidecar");
    assert_eq!(fleet.host("a-side").map(|h| h.addr()), Some(side.addr()));
    assert_ne!(a.addr(), side.addr());
    assert!(side.wait_model_state("emb", "ready", GUARD).await);
    let e = post(&side.base_url(), "/v1/embeddings", &json!({"input": "x"})).await;
    assert_eq!(
        e.json()["data"][0]["embedding"].as_array().map(Vec::len),
        Some(8)
    );
    assert_eq!(
        get(&fleet.host("b").expect("b").base_url(), "/v1/models")
            .await
            .status,
        200
    );

    let json_spec =
        serde_json::to_string(&FleetSpec::from_yaml(yaml).expect("yaml")).expect("json");
    assert_eq!(
        FleetSpec::from_json(&json_spec).expect("json").hosts.len(),
        2
    );
}

#[tokio::test]
async fn demo_fleet_starts_with_the_seed_hosts() {
    let mut spec = Fleet::demo_spec();
    spec.time_scale = Some(0.0001);
    let fleet = Fleet::start(spec).await.expect("start");
    let sam = fleet.host("sam-desktop").expect("sam-desktop");
    let emb = fleet.host("embedding").expect("embedding");
    let ids = |v: serde_json::Value| -> Vec<String> {
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect()
    };
    let sam_models = ids(get(&sam.base_url(), "/v1/models").await.json());
    let emb_models = ids(get(&emb.base_url(), "/v1/models").await.json());
    assert!(
        sam_models.contains(&"deepseek-r1-qwen3-8b".to_owned())
            && emb_models.contains(&"deepseek-r1-qwen3-8b".to_owned())
    );
    assert_eq!(
        get(&emb.base_url(), "/api/version").await.json()["version"],
        "v235"
    );
    let side = emb.sidecar().expect("sidecar");
    assert!(side.wait_model_state("bge-m3", "ready", GUARD).await);
    // The 4k model rejects a long prompt with llama-server's error, passed through llama-swap.
    let long = "word ".repeat(5000);
    let r = post(
        &sam.base_url(),
        "/v1/chat/completions",
        &chat("llama3.2-3b-4k", &long, 4),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "exceed_context_size_error");
}

#[test]
fn spec_errors_name_the_field() {
    let bad = "hosts:\n  - id: x\n    models: [{id: m, slots: 0}]\n";
    let err = FleetSpec::from_yaml(bad).expect_err("slots 0");
    assert!(
        matches!(&err, SimError::Spec { field, .. } if field == "hosts[x].models[0].slots"),
        "{err}"
    );
    let err = FleetSpec::from_yaml("hosts:\n  - id: x\n    models: [{id: m, colour: red}]\n")
        .expect_err("unknown field");
    assert!(err.to_string().contains("colour"), "{err}");
    let err = FleetSpec::from_yaml(
        "hosts:\n  - id: x\n    mode: llama-server\n    models: [{id: a}, {id: b}]\n",
    )
    .expect_err("two models");
    assert!(err.to_string().contains("exactly one model"), "{err}");
    let err = FleetSpec::from_yaml("time_scale: -1\nhosts: []\n").expect_err("scale");
    assert!(err.to_string().contains("time_scale"), "{err}");
    let err =
        FleetSpec::from_yaml("hosts:\n  - id: x\n    version: banana\n    models: [{id: a}]\n")
            .expect_err("version");
    assert!(err.to_string().contains("version"), "{err}");
    let err = FleetSpec::from_yaml(
        "hosts:\n  - id: x\n    models: [{id: a}]\n    groups: {g: {members: [zz]}}\n",
    )
    .expect_err("group");
    assert!(err.to_string().contains("groups.g.members"), "{err}");
}

#[tokio::test]
async fn busy_port_is_a_bind_error() {
    let first = start_host(HostSpec::llama_server("a", model("m", 0)))
        .await
        .expect("start");
    let mut spec = HostSpec::llama_server("b", model("m", 0));
    spec.listen = Some(first.addr().to_string());
    // SO_REUSEADDR does not allow two listeners on one port.
    let err = start_host(spec).await.expect_err("port taken");
    assert!(matches!(err, SimError::Bind { .. }), "{err}");
}

#[tokio::test]
async fn overflowed_event_subscriber_gets_an_inflight_snapshot_when_it_recovers() {
    let h = start_host(
        HostSpec::llama_swap("s", ApiGen::Current, vec![model("m", 0)]).with_time_scale(0.001),
    )
    .await
    .expect("start");
    h.faults().set_event_buffer(Some(4));
    h.faults().slow_events(Some(Duration::from_millis(20)));
    let mut ev = Stream::open(&h.base_url(), Method::GET, "/api/events", &[], Bytes::new()).await;
    // Skip the on-connect sequence (it ends with the first snapshot).
    ev.event_where(|t, v| t == "inflight" && v["operation"] == "snapshot")
        .await
        .expect("on-connect snapshot");
    for _ in 0..10 {
        assert_eq!(
            post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1))
                .await
                .status,
            200
        );
    }
    assert!(h.faults().dropped_events() > 0);
    // Let the slow reader drain its buffer, then cause one more event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        post(&h.base_url(), "/v1/chat/completions", &chat("m", "hi", 1))
            .await
            .status,
        200
    );
    let resync = ev
        .event_where(|t, v| t == "inflight" && v["operation"] == "snapshot")
        .await;
    assert!(resync.is_some(), "a snapshot follows the overflow");
}
