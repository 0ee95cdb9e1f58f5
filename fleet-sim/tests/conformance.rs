//! The wire contract of the emulated hosts: shapes, framing, status codes and headers.
//!
//! The `server_*` tests describe a bare llama-server. They always run against fleet-sim, and
//! also against a real llama-server when `BOO_REAL_LLAMA_URL` is set (for example
//! `http://127.0.0.1:18080` from `../shared/tools/real-llama-server.sh`, which serves one model with
//! `-c 4096 -np 2 --metrics`). Each confirmed assertion prints `real llama-server confirmed: <name>`.
//!
//! The `swap_*` tests describe llama-swap (both API generations) and run against fleet-sim only.

mod common;

use std::future::Future;

use boo_fleet_sim::{ApiGen, HostSpec, ModelSpec, SimHost, client, start_host};
use bytes::Bytes;
use common::{Stream, chat, data_chunks, get, open_json_stream, parse_event, post};
use http::Method;
use serde_json::{Value, json};

// ------------------------------------------------------------------ llama-server

struct Target {
    url: String,
    model: String,
}

fn sim_server_spec() -> HostSpec {
    let mut m = ModelSpec::new("gemma3-270m");
    m.n_ctx = 2048;
    m.slots = 2;
    m.prompt_tps = 600.0;
    m.gen_tps = 100.0;
    m.load_ms = 2000;
    HostSpec::llama_server("sim-llama", m).with_time_scale(0.001)
}

async fn ready_sim() -> SimHost {
    let host = start_host(sim_server_spec()).await.expect("start");
    assert!(
        host.wait_model_state("gemma3-270m", "ready", common::GUARD)
            .await
    );
    host
}

/// Runs `check` against fleet-sim, then against the real server when configured.
async fn on_servers<F, Fut>(name: &str, check: F)
where
    F: Fn(Target) -> Fut,
    Fut: Future<Output = ()>,
{
    let sim = ready_sim().await;
    check(Target {
        url: sim.base_url(),
        model: "gemma3-270m".into(),
    })
    .await;
    if let Ok(url) = std::env::var("BOO_REAL_LLAMA_URL") {
        let models = get(&url, "/v1/models").await.json();
        let model = models["data"][0]["id"]
            .as_str()
            .unwrap_or("gemma3-270m")
            .to_owned();
        check(Target {
            url: url.trim_end_matches('/').to_owned(),
            model,
        })
        .await;
        eprintln!("real llama-server confirmed: {name}");
    }
}

#[tokio::test]
async fn server_health_is_ok_json() {
    on_servers("health", |t| async move {
        let r = get(&t.url, "/health").await;
        assert_eq!(r.status, 200);
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("application/json"),
            "{:?}",
            r.headers
        );
        assert_eq!(r.header("server"), Some("llama.cpp"));
        assert_eq!(r.json()["status"], "ok");
    })
    .await;
}

#[tokio::test]
async fn server_props_and_slots_agree() {
    on_servers("props/slots", |t| async move {
        let p = get(&t.url, "/props").await;
        assert_eq!(p.status, 200);
        let p = p.json();
        let n_ctx = p["default_generation_settings"]["n_ctx"]
            .as_u64()
            .expect("n_ctx");
        let slots = p["total_slots"].as_u64().expect("total_slots");
        assert!(n_ctx > 0 && slots >= 1);
        assert!(p["build_info"].is_string() && p["model_path"].is_string());
        let s = get(&t.url, "/slots").await;
        assert_eq!(s.status, 200);
        let s = s.json();
        let arr = s.as_array().expect("slots array");
        assert_eq!(arr.len() as u64, slots);
        for (i, slot) in arr.iter().enumerate() {
            assert_eq!(slot["id"].as_u64(), Some(i as u64));
            assert_eq!(slot["n_ctx"].as_u64(), Some(n_ctx));
            assert!(slot["is_processing"].is_boolean());
            assert!(slot["next_token"].is_object() || slot["next_token"].is_array());
        }
    })
    .await;
}

#[tokio::test]
async fn server_models_lists_one_model() {
    on_servers("v1/models", |t| async move {
        let r = get(&t.url, "/v1/models").await;
        assert_eq!(r.status, 200);
        let v = r.json();
        let data = v["data"].as_array().expect("data");
        assert_eq!(data.len(), 1);
        assert_eq!(data[0]["object"], "model");
        assert_eq!(data[0]["owned_by"], "llamacpp");
        assert_eq!(data[0]["id"], t.model.as_str());
        assert!(data[0]["meta"]["n_ctx"].is_u64(), "{v}");
        assert_eq!(
            v["models"][0]["model"],
            t.model.as_str(),
            "ollama-style list too: {v}"
        );
        assert!(data[0]["meta"]["n_ctx_train"].is_u64());
    })
    .await;
}

fn check_usage_matches_timings(v: &Value) {
    let u = &v["usage"];
    let t = &v["timings"];
    let prompt_n = t["prompt_n"].as_u64().expect("prompt_n");
    let cache_n = t["cache_n"].as_u64().expect("cache_n");
    let predicted_n = t["predicted_n"].as_u64().expect("predicted_n");
    assert_eq!(
        u["prompt_tokens"].as_u64(),
        Some(prompt_n + cache_n),
        "usage.prompt_tokens includes cached: {v}"
    );
    assert_eq!(u["completion_tokens"].as_u64(), Some(predicted_n));
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(prompt_n + cache_n + predicted_n)
    );
    for k in [
        "prompt_ms",
        "prompt_per_token_ms",
        "prompt_per_second",
        "predicted_ms",
        "predicted_per_token_ms",
        "predicted_per_second",
    ] {
        assert!(t[k].is_number(), "timings.{k} missing: {t}");
    }
}

#[tokio::test]
async fn server_chat_non_streaming_shape() {
    on_servers("chat non-stream shape, usage = timings", |t| async move {
        let r = post(
            &t.url,
            "/v1/chat/completions",
            &chat("some-other-name", "Say hello.", 8),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("application/json")
        );
        let v = r.json();
        assert_eq!(v["object"], "chat.completion");
        assert!(
            v["id"].as_str().is_some_and(|s| s.starts_with("chatcmpl-")),
            "{v}"
        );
        assert!(v["created"].is_u64() && v["system_fingerprint"].is_string());
        assert_eq!(
            v["model"],
            t.model.as_str(),
            "the server's alias, not the request's model"
        );
        let c = &v["choices"][0];
        assert_eq!(c["index"], 0);
        assert_eq!(c["message"]["role"], "assistant");
        assert!(c["message"]["content"].is_string());
        assert!(matches!(
            c["finish_reason"].as_str(),
            Some("stop" | "length")
        ));
        check_usage_matches_timings(&v);
    })
    .await;
}

#[tokio::test]
async fn server_max_tokens_gives_length() {
    on_servers("max_tokens -> finish_reason length", |t| async move {
        let body = json!({"model": t.model, "messages": [{"role": "user", "content": "Count from one to one hundred in words."}],
                          "max_tokens": 3, "ignore_eos": true});
        let v = post(&t.url, "/v1/chat/completions", &body).await.json();
        assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
        assert_eq!(v["model"], t.model.as_str());
        assert_eq!(v["usage"]["completion_tokens"], 3);
        assert_eq!(v["timings"]["predicted_n"], 3);
    })
    .await;
}

#[tokio::test]
async fn server_chat_stream_framing() {
    on_servers(
        "chat stream framing, timings on last chunk, [DONE]",
        |t| async move {
            let mut body = chat(&t.model, "Say hello.", 6);
            body["stream"] = json!(true);
            let mut s = open_json_stream(&t.url, "/v1/chat/completions", &body).await;
            assert_eq!(s.status, 200);
            assert!(
                s.header("content-type")
                    .unwrap_or("")
                    .starts_with("text/event-stream"),
                "{:?}",
                s.headers
            );
            let msgs = s.all_messages().await.expect("clean end");
            for m in &msgs {
                assert!(
                    m.starts_with("data: "),
                    "every event is `data: <json>` with a space: {m:?}"
                );
                assert!(!m.contains('\n'), "one line per event: {m:?}");
            }
            assert_eq!(msgs.last().map(String::as_str), Some("data: [DONE]"));
            let chunks = data_chunks(&msgs);
            assert!(chunks.len() >= 2);
            for c in &chunks {
                assert_eq!(c["object"], "chat.completion.chunk");
                assert!(
                    c.get("usage").is_none_or(Value::is_null),
                    "no usage without include_usage: {c}"
                );
            }
            let first = &chunks[0]["choices"][0];
            assert_eq!(first["delta"]["role"], "assistant");
            assert!(
                first["delta"]["content"].is_null(),
                "first delta content is null: {first}"
            );
            assert!(first["finish_reason"].is_null());
            let last = chunks.last().expect("last");
            assert!(
                matches!(
                    last["choices"][0]["finish_reason"].as_str(),
                    Some("stop" | "length")
                ),
                "{last}"
            );
            assert_eq!(last["choices"][0]["delta"], json!({}));
            assert!(
                last["timings"]["predicted_n"].is_u64(),
                "timings on the last chunk: {last}"
            );
            let predicted = last["timings"]["predicted_n"].as_u64().unwrap_or(0);
            let content_chunks = chunks
                .iter()
                .filter(|c| c["choices"][0]["delta"]["content"].is_string())
                .count() as u64;
            assert!(
                content_chunks <= predicted,
                "{content_chunks} content chunks for {predicted} tokens"
            );
            for c in &chunks[..chunks.len() - 1] {
                assert!(
                    c.get("timings").is_none(),
                    "timings only on the last chunk: {c}"
                );
            }
        },
    )
    .await;
}

#[tokio::test]
async fn server_stream_include_usage() {
    on_servers(
        "stream include_usage: usage chunk with choices [] carries timings",
        |t| async move {
            let mut body = chat(&t.model, "Say hello.", 5);
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
            let mut s = open_json_stream(&t.url, "/v1/chat/completions", &body).await;
            let msgs = s.all_messages().await.expect("clean end");
            assert_eq!(msgs.last().map(String::as_str), Some("data: [DONE]"));
            let chunks = data_chunks(&msgs);
            let usage = chunks.last().expect("usage chunk");
            assert_eq!(usage["choices"], json!([]), "{usage}");
            check_usage_matches_timings(usage);
            let finish = &chunks[chunks.len() - 2];
            assert!(finish["choices"][0]["finish_reason"].is_string());
            assert!(
                finish.get("timings").is_none(),
                "timings move to the usage chunk: {finish}"
            );
            assert!(finish.get("usage").is_none_or(Value::is_null));
        },
    )
    .await;
}

#[tokio::test]
async fn server_text_completion_shape() {
    on_servers("v1/completions shape", |t| async move {
        let body = json!({"model": t.model, "prompt": "Once upon a time", "max_tokens": 4});
        let r = post(&t.url, "/v1/completions", &body).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(v["object"], "text_completion");
        assert!(v["choices"][0]["text"].is_string());
        assert!(matches!(
            v["choices"][0]["finish_reason"].as_str(),
            Some("stop" | "length")
        ));
        check_usage_matches_timings(&v);
    })
    .await;
}

#[tokio::test]
async fn server_text_completion_stream_ends_with_usage_and_timings() {
    on_servers("v1/completions stream: final chunk has usage + timings, then [DONE]", |t| async move {
        let body = json!({"model": t.model, "prompt": "Once upon a time", "max_tokens": 3, "stream": true});
        let mut s = open_json_stream(&t.url, "/v1/completions", &body).await;
        let msgs = s.all_messages().await.expect("clean end");
        assert_eq!(msgs.last().map(String::as_str), Some("data: [DONE]"));
        let chunks = data_chunks(&msgs);
        for c in &chunks {
            assert_eq!(c["object"], "text_completion");
            assert!(c["choices"][0]["text"].is_string());
            assert!(c["id"].as_str().is_some_and(|i| i.starts_with("chatcmpl-")), "{c}");
        }
        let last = chunks.last().expect("final chunk");
        assert!(last["choices"][0]["finish_reason"].is_string());
        check_usage_matches_timings(last);
    })
    .await;
}

#[tokio::test]
async fn server_embeddings_unsupported_without_flag() {
    on_servers("embeddings 501 without --embeddings", |t| async move {
        let r = post(
            &t.url,
            "/v1/embeddings",
            &json!({"model": t.model, "input": "a"}),
        )
        .await;
        assert_eq!(r.status, 501, "{}", r.text());
        assert_eq!(r.json()["error"]["type"], "not_supported_error");
    })
    .await;
}

#[tokio::test]
async fn server_exceeding_context_is_a_typed_400() {
    on_servers("exceed_context_size_error 400", |t| async move {
        let long = "lorem ipsum dolor sit amet ".repeat(1200);
        let r = post(&t.url, "/v1/chat/completions", &chat(&t.model, &long, 4)).await;
        assert_eq!(r.status, 400, "{}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["type"], "exceed_context_size_error", "{e}");
        assert_eq!(e["code"], 400);
        assert!(e["message"].is_string());
        let (n_prompt, n_ctx) = (
            e["n_prompt_tokens"].as_u64().expect("n_prompt_tokens"),
            e["n_ctx"].as_u64().expect("n_ctx"),
        );
        assert!(n_prompt >= n_ctx, "{e}");
    })
    .await;
}

#[tokio::test]
async fn server_metrics_are_prometheus() {
    on_servers("/metrics llamacpp: prefix", |t| async move {
        // Make sure something was processed first.
        let _ = post(&t.url, "/v1/chat/completions", &chat(&t.model, "hi", 2)).await;
        let r = get(&t.url, "/metrics").await;
        assert_eq!(r.status, 200);
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("text/plain"),
            "{:?}",
            r.headers
        );
        let text = r.text();
        for name in [
            "prompt_tokens_total",
            "tokens_predicted_total",
            "requests_processing",
            "requests_deferred",
            "n_decode_total",
        ] {
            assert!(
                text.contains(&format!("llamacpp:{name}")),
                "missing {name}:\n{text}"
            );
        }
        let predicted: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("llamacpp:tokens_predicted_total "))
            .and_then(|v| v.trim().parse().ok())
            .expect("tokens_predicted_total value");
        assert!(predicted >= 1.0);
    })
    .await;
}

#[tokio::test]
async fn server_errors_use_the_error_object() {
    on_servers(
        "error object for an unknown route and a bad body",
        |t| async move {
            let r = get(&t.url, "/no/such/route").await;
            assert_eq!(r.status, 404);
            let r = client::request(
                &t.url,
                Method::POST,
                "/v1/chat/completions",
                &[("content-type", "application/json")],
                "{not json",
            )
            .await
            .expect("request");
            assert_eq!(r.status, 400, "bad JSON: {}", r.text());
            let e = &r.json()["error"];
            assert_eq!(e["type"], "invalid_request_error");
            assert!(
                e["message"].is_string() && e["type"].is_string() && e["code"].is_u64(),
                "{}",
                r.text()
            );
        },
    )
    .await;
}

#[tokio::test]
async fn server_answers_503_while_loading() {
    // Sim only: a real server cannot be caught loading on demand.
    let mut spec = sim_server_spec();
    spec.models[0].load_ms = 60_000_000; // 60 000 s emulated = 60 s real at 0.001
    let host = start_host(spec).await.expect("start");
    for path in ["/health", "/v1/models", "/props"] {
        let r = get(&host.base_url(), path).await;
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(
            r.json(),
            json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
        );
    }
}

#[tokio::test]
async fn server_embeddings_shape() {
    let mut m = ModelSpec::new("bge-m3");
    m.embedding = true;
    m.n_embd = 16;
    let host = start_host(HostSpec::llama_server("emb", m).with_time_scale(0.001))
        .await
        .expect("start");
    assert!(
        host.wait_model_state("bge-m3", "ready", common::GUARD)
            .await
    );
    let v = post(
        &host.base_url(),
        "/v1/embeddings",
        &json!({"model": "bge-m3", "input": ["a", "bb"]}),
    )
    .await
    .json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(16));
    assert!(v["usage"]["prompt_tokens"].as_u64() >= Some(2));
}

// ------------------------------------------------------------------ llama-swap

async fn swap_host(api: ApiGen, version: Option<&str>) -> SimHost {
    let mut a = ModelSpec::new("qwen");
    a.aliases = vec!["gpt-4o-mini".into()];
    a.load_ms = 1000;
    let mut b = ModelSpec::new("org/model-b");
    b.load_ms = 1000;
    let mut spec = HostSpec::llama_swap("swap", api, vec![a, b]).with_time_scale(0.001);
    spec.version = version.map(str::to_owned);
    spec.gpu = Some(boo_fleet_sim::GpuSpec {
        name: "NVIDIA Test".into(),
        mem_total_mb: 8192,
    });
    spec.perf_every_ms = 5;
    start_host(spec).await.expect("start")
}

#[tokio::test]
async fn swap_health_version_and_unknown_route() {
    let h = swap_host(ApiGen::Current, None).await;
    let r = get(&h.base_url(), "/health").await;
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain")
    );
    let v = get(&h.base_url(), "/api/version").await.json();
    assert_eq!(v["version"], "v250");
    assert!(v["commit"].is_string() && v["build_date"].is_string());
    let legacy = swap_host(ApiGen::Legacy, None).await;
    assert_eq!(
        get(&legacy.base_url(), "/api/version").await.json()["version"],
        "v223"
    );
    assert_eq!(get(&h.base_url(), "/nope").await.status, 404);
}

#[tokio::test]
async fn swap_unknown_model_status_and_body_by_generation() {
    let body = chat("nope", "hi", 2);
    let cur = swap_host(ApiGen::Current, None).await;
    let r = post(&cur.base_url(), "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"src": "llama-swap", "error": "no router for requested model"})
    );
    let r = client::request(
        &cur.base_url(),
        Method::POST,
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("accept", "text/plain"),
        ],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
    .await
    .expect("request");
    assert_eq!(r.text(), "llama-swap: no router for requested model");

    let head = swap_host(ApiGen::Head, None).await;
    let v = post(&head.base_url(), "/v1/chat/completions", &body)
        .await
        .json();
    assert_eq!(v["src"], "llama-swap");
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let legacy = swap_host(ApiGen::Legacy, None).await;
    let r = post(&legacy.base_url(), "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.text(),
        "could not find suitable inference handler for nope"
    );
    let r = client::request(
        &legacy.base_url(),
        Method::POST,
        "/v1/chat/completions",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
    .await
    .expect("request");
    assert_eq!(
        r.json(),
        json!({"error": "could not find suitable inference handler for nope"})
    );
    // No model at all.
    let r = post(
        &legacy.base_url(),
        "/v1/chat/completions",
        &json!({"messages": []}),
    )
    .await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "missing or invalid 'model' key")
    );
    let r = post(
        &cur.base_url(),
        "/v1/chat/completions",
        &json!({"messages": []}),
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no model id could be identified");
}

#[tokio::test]
async fn swap_current_requires_json_content_type() {
    let body = serde_json::to_vec(&chat("qwen", "hi", 2)).unwrap_or_default();
    let cur = swap_host(ApiGen::Current, None).await;
    let r = client::request(
        &cur.base_url(),
        Method::POST,
        "/v1/chat/completions",
        &[("content-type", "text/plain")],
        body.clone(),
    )
    .await
    .expect("request");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "no model id could be identified");
    // Legacy reads the JSON body whatever the Content-Type.
    let legacy = swap_host(ApiGen::Legacy, None).await;
    let r = client::request(
        &legacy.base_url(),
        Method::POST,
        "/v1/chat/completions",
        &[("content-type", "text/plain")],
        body,
    )
    .await
    .expect("request");
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn swap_alias_is_forwarded_as_sent_and_resolved_in_activity() {
    let h = swap_host(ApiGen::Current, None).await;
    let v = post(
        &h.base_url(),
        "/v1/chat/completions",
        &chat("gpt-4o-mini", "hi", 2),
    )
    .await
    .json();
    assert_eq!(
        v["model"], "qwen",
        "llama-server answers with its own alias"
    );
    let rec = h.stats().received_on("/v1/chat/completions");
    assert_eq!(
        rec[0].model.as_deref(),
        Some("gpt-4o-mini"),
        "forwarded as sent"
    );
    let a = get(&h.base_url(), "/api/metrics/activity").await.json();
    assert_eq!(
        a["data"][0]["model"], "qwen",
        "activity has the resolved id"
    );
}

#[tokio::test]
async fn swap_models_list_by_generation() {
    let cur = swap_host(ApiGen::Current, None).await;
    let v = get(&cur.base_url(), "/v1/models").await.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids, ["org/model-b", "qwen"], "sorted by id");
    let q = &v["data"][1];
    assert_eq!(q["owned_by"], "llama-swap");
    assert_eq!(q["status"]["value"], "unloaded");
    assert_eq!(q["meta"]["llamaswap"]["type"], "model");
    assert_eq!(q["meta"]["n_ctx"], 8192);
    assert_eq!(q["context_length"], 8192);
    let _ = post(
        &cur.base_url(),
        "/v1/chat/completions",
        &chat("qwen", "hi", 1),
    )
    .await;
    let v = get(&cur.base_url(), "/v1/models").await.json();
    assert_eq!(v["data"][1]["status"]["value"], "loaded");
    let legacy = swap_host(ApiGen::Legacy, None).await;
    let v = get(&legacy.base_url(), "/v1/models").await.json();
    assert!(
        v["data"][0].get("status").is_none(),
        "legacy has no status: {v}"
    );
    assert!(
        v["data"][0].get("meta").is_none(),
        "legacy meta only with user metadata: {v}"
    );
}

#[tokio::test]
async fn swap_running_lists_processes() {
    let h = swap_host(ApiGen::Current, None).await;
    assert_eq!(
        get(&h.base_url(), "/running").await.json(),
        json!({"running": []})
    );
    let _ = post(
        &h.base_url(),
        "/v1/chat/completions",
        &chat("qwen", "hi", 1),
    )
    .await;
    let v = get(&h.base_url(), "/running").await.json();
    let r = &v["running"][0];
    assert_eq!(r["model"], "qwen");
    assert_eq!(r["state"], "ready");
    for k in ["cmd", "proxy", "ttl", "name", "description"] {
        assert!(r.get(k).is_some(), "missing {k}: {r}");
    }
}

#[tokio::test]
async fn swap_unload_apis() {
    let h = swap_host(ApiGen::Current, None).await;
    let url = h.base_url();
    let _ = post(&url, "/v1/chat/completions", &chat("qwen", "hi", 1)).await;
    assert_eq!(h.model_state("qwen"), Some("ready"));
    let r = client::request(
        &url,
        Method::POST,
        "/api/models/unload/qwen",
        &[],
        Bytes::new(),
    )
    .await
    .expect("req");
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    assert_eq!(h.model_state("qwen"), Some("stopped"));
    let r = client::request(
        &url,
        Method::POST,
        "/api/models/unload/nope",
        &[],
        Bytes::new(),
    )
    .await
    .expect("req");
    assert_eq!(r.status, 404);
    let _ = post(&url, "/v1/chat/completions", &chat("qwen", "hi", 1)).await;
    let r = client::request(&url, Method::POST, "/api/models/unload", &[], Bytes::new())
        .await
        .expect("req");
    assert_eq!(r.json(), json!({"msg": "ok"}));
    assert_eq!(h.model_state("qwen"), Some("stopped"));
    let _ = post(&url, "/v1/chat/completions", &chat("qwen", "hi", 1)).await;
    let r = get(&url, "/unload").await;
    assert_eq!((r.status, r.text().as_str()), (200, "OK"));
    assert_eq!(h.model_state("qwen"), Some("stopped"));
}

#[tokio::test]
async fn swap_upstream_redirects_loads_and_conflicts() {
    let h = swap_host(ApiGen::Current, None).await;
    let url = h.base_url();
    let r = get(&url, "/upstream/org/model-b").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/upstream/org/model-b/"));
    let r = client::request(&url, Method::POST, "/upstream/qwen", &[], Bytes::new())
        .await
        .expect("req");
    assert_eq!(r.status, 308);
    // An ignored (static) path for a model that is not loaded: 409, no swap.
    let r = get(&url, "/upstream/qwen/index.json").await;
    assert_eq!(r.status, 409);
    assert_eq!(h.model_state("qwen"), Some("stopped"));
    // /health through /upstream loads the model (the practical "load" API); names may hold '/'.
    let r = get(&url, "/upstream/org/model-b/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status": "ok"}));
    assert_eq!(h.model_state("org/model-b"), Some("ready"));
    let p = get(&url, "/upstream/org/model-b/props").await.json();
    assert_eq!(p["default_generation_settings"]["n_ctx"], 8192);
    assert_eq!(get(&url, "/upstream/unknown/health").await.status, 404);
}

#[tokio::test]
async fn swap_streams_get_x_accel_buffering() {
    let h = swap_host(ApiGen::Current, None).await;
    let mut body = chat("qwen", "hi", 3);
    body["stream"] = json!(true);
    let mut s = open_json_stream(&h.base_url(), "/v1/chat/completions", &body).await;
    assert_eq!(s.header("x-accel-buffering"), Some("no"));
    assert!(
        s.header("content-type")
            .unwrap_or("")
            .starts_with("text/event-stream")
    );
    let msgs = s.all_messages().await.expect("clean end");
    assert_eq!(msgs.last().map(String::as_str), Some("data: [DONE]"));
}

#[tokio::test]
async fn swap_concurrency_limit_is_429_with_retry_after() {
    let mut m = ModelSpec::new("slow");
    m.concurrency_limit = 2;
    m.gen_tps = 1.0; // 1 token/s emulated; at scale 0.01 a 1000-token reply takes 10 s
    m.load_ms = 0;
    let h = start_host(HostSpec::llama_swap("c", ApiGen::Current, vec![m]).with_time_scale(0.01))
        .await
        .expect("start");
    let url = h.base_url();
    let body = json!({"model": "slow", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1000, "ignore_eos": true, "stream": true});
    let _a = open_json_stream(&url, "/v1/chat/completions", &body).await;
    let _b = open_json_stream(&url, "/v1/chat/completions", &body).await;
    let r = post(&url, "/v1/chat/completions", &body).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn swap_events_current_framing_and_on_connect_sequence() {
    let h = swap_host(ApiGen::Current, None).await;
    let mut s = Stream::open(&h.base_url(), Method::GET, "/api/events", &[], Bytes::new()).await;
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("text/event-stream"));
    assert_eq!(s.header("cache-control"), Some("no-cache"));
    assert_eq!(s.header("x-accel-buffering"), Some("no"));
    assert_eq!(s.header("x-content-type-options"), Some("nosniff"));
    let mut types = Vec::new();
    for _ in 0..6 {
        let (t, v) = s.next_event().await.expect("on-connect event");
        if t == "logData" {
            assert!(v["source"] == "proxy" || v["source"] == "upstream");
            assert!(v["data"].is_string());
        }
        if t == "modelStatus" {
            let ids: Vec<&str> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["id"].as_str())
                .collect();
            assert_eq!(ids, ["qwen", "org/model-b"]);
            assert_eq!(v[0]["state"], "stopped");
        }
        if t == "inflight" {
            assert_eq!(v, json!({"operation": "snapshot", "requests": []}));
        }
        types.push(t);
    }
    assert_eq!(
        types,
        [
            "logData",
            "logData",
            "modelStatus",
            "uiConfig",
            "profileChanged",
            "inflight"
        ]
    );
    // A request: inflight upserts, state changes, then an activity id.
    let _ = post(
        &h.base_url(),
        "/v1/chat/completions",
        &chat("qwen", "hi", 2),
    )
    .await;
    let (_, v) = s
        .event_where(|t, v| t == "inflight" && v["operation"] == "upsert")
        .await
        .expect("upsert");
    assert_eq!(v["request"]["model"], "qwen");
    assert_eq!(v["request"]["req_path"], "/v1/chat/completions");
    let (_, v) = s
        .event_where(|t, _| t == "activity")
        .await
        .expect("activity");
    assert_eq!(v, json!({"id": 1}));
    let (_, v) = s
        .event_where(|t, v| t == "inflight" && v["operation"] == "remove")
        .await
        .expect("remove");
    assert!(v["id"].is_string(), "inflight ids are decimal strings: {v}");
}

#[tokio::test]
async fn swap_events_legacy_sends_metrics_arrays() {
    let h = swap_host(ApiGen::Legacy, Some("v235")).await;
    let _ = post(
        &h.base_url(),
        "/v1/chat/completions",
        &chat("qwen", "hi", 2),
    )
    .await;
    let mut s = Stream::open(&h.base_url(), Method::GET, "/api/events", &[], Bytes::new()).await;
    let mut types = Vec::new();
    for _ in 0..5 {
        let (t, v) = s.next_event().await.expect("on-connect event");
        if t == "metrics" {
            let rows = v.as_array().expect("whole ring as an array");
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0]["id"], 0, "legacy ids start at 0");
            assert_eq!(rows[0]["tokens"]["output_tokens"], 2);
        }
        if t == "inflight" {
            assert_eq!(v, json!({"requests": []}), "v235 inflight shape");
        }
        types.push(t);
    }
    assert_eq!(
        types,
        ["logData", "logData", "modelStatus", "metrics", "inflight"]
    );
    let _ = post(
        &h.base_url(),
        "/v1/chat/completions",
        &chat("qwen", "hi", 2),
    )
    .await;
    let (_, v) = s.event_where(|t, _| t == "metrics").await.expect("metrics");
    assert_eq!(
        v.as_array().map(Vec::len),
        Some(1),
        "one-element array per request"
    );
    assert_eq!(v[0]["id"], 1);
    // v223 reports the inflight total.
    let old = swap_host(ApiGen::Legacy, None).await;
    let mut s = Stream::open(
        &old.base_url(),
        Method::GET,
        "/api/events",
        &[],
        Bytes::new(),
    )
    .await;
    let (_, v) = s
        .event_where(|t, _| t == "inflight")
        .await
        .expect("inflight");
    assert_eq!(v, json!({"total": 0}));
}

#[tokio::test]
async fn swap_event_framing_is_exact() {
    let h = swap_host(ApiGen::Current, None).await;
    let mut s = Stream::open(&h.base_url(), Method::GET, "/api/events", &[], Bytes::new()).await;
    let msg = s.next_message().await.expect("message").expect("not ended");
    assert!(
        msg.starts_with("event:message\ndata:{\"type\":\"logData\",\"data\":\"{"),
        "{msg:?}"
    );
    assert!(parse_event(&msg).is_some());
}

#[tokio::test]
async fn swap_activity_rows_stats_and_captures() {
    let h = swap_host(ApiGen::Current, None).await;
    let url = h.base_url();
    for _ in 0..3 {
        let r = post(
            &url,
            "/v1/chat/completions",
            &chat("qwen", "hello there", 4),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    let a = get(&url, "/api/metrics/activity").await.json();
    assert_eq!(a["total"], 3);
    assert_eq!(
        (
            a["page"].as_u64(),
            a["limit"].as_u64(),
            a["total_pages"].as_u64()
        ),
        (Some(1), Some(25), Some(1))
    );
    let ids: Vec<u64> = a["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(
        ids,
        [3, 2, 1],
        "default order is id descending, ids start at 1"
    );
    let row = &a["data"][0];
    assert_eq!(row["req_path"], "/v1/chat/completions");
    assert_eq!(row["resp_status_code"], 200);
    assert_eq!(row["tokens"]["output_tokens"], 4);
    assert_eq!(row["tokens"]["draft_tokens"], -1);
    assert!(
        row["timestamp"].as_str().is_some_and(|t| !t.contains('.')),
        "1-second precision: {row}"
    );
    assert_eq!(row["has_capture"], true);
    let inc = get(
        &url,
        "/api/metrics/activity?min_id=2&sort=id&order=asc&limit=999",
    )
    .await
    .json();
    let ids: Vec<u64> = inc["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(ids, [2, 3]);
    assert_eq!(get(&url, "/api/metrics/activity?limit=0").await.status, 400);
    assert_eq!(
        get(&url, "/api/metrics/activity?sort=bogus").await.status,
        400
    );
    let st = get(&url, "/api/metrics/stats").await.json();
    assert_eq!(st["total_requests"], 3);
    assert_eq!(st["total_output_tokens"], 12);
    assert!(st["gen_histogram"]["p50"].is_number());
    let c = get(&url, "/api/captures/3").await;
    assert_eq!(c.status, 200);
    let c = c.json();
    use base64::Engine as _;
    let req = base64::engine::general_purpose::STANDARD
        .decode(c["req_body"].as_str().unwrap_or(""))
        .expect("base64");
    assert_eq!(
        serde_json::from_slice::<Value>(&req).ok(),
        Some(chat("qwen", "hello there", 4))
    );
    let resp = base64::engine::general_purpose::STANDARD
        .decode(c["resp_body"].as_str().unwrap_or(""))
        .expect("base64");
    assert_eq!(
        serde_json::from_slice::<Value>(&resp)
            .ok()
            .map(|v| v["object"].clone()),
        Some(json!("chat.completion"))
    );
    assert_eq!(get(&url, "/api/captures/99").await.status, 404);
    assert_eq!(get(&url, "/api/captures/abc").await.status, 400);
}

#[tokio::test]
async fn swap_legacy_metrics_ring() {
    let h = swap_host(ApiGen::Legacy, None).await;
    assert_eq!(
        get(&h.base_url(), "/api/metrics/activity").await.status,
        404
    );
    let _ = post(
        &h.base_url(),
        "/v1/chat/completions",
        &chat("qwen", "hi", 2),
    )
    .await;
    let _ = post(
        &h.base_url(),
        "/v1/chat/completions",
        &chat("qwen", "hi", 3),
    )
    .await;
    let v = get(&h.base_url(), "/api/metrics").await.json();
    let ids: Vec<u64> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_u64())
        .collect();
    assert_eq!(ids, [0, 1], "oldest first, from 0");
    assert!(
        v[0]["tokens"].get("draft_tokens").is_none(),
        "v223 has no draft fields"
    );
    let cur = swap_host(ApiGen::Current, None).await;
    assert_eq!(get(&cur.base_url(), "/api/metrics").await.status, 404);
}

#[tokio::test]
async fn swap_performance_samples_and_after_filter() {
    let h = swap_host(ApiGen::Current, None).await;
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let v = get(&h.base_url(), "/api/performance").await.json();
    assert_eq!(v["enabled"], true);
    let sys = v["sys_stats"].as_array().expect("sys_stats");
    assert!(sys.len() >= 2, "{v}");
    assert!(sys[0]["cpu_util_per_core"].is_array() && sys[0]["mem_total_mb"].is_number());
    let gpu = v["gpu_stats"].as_array().expect("gpu_stats");
    assert_eq!(gpu[0]["name"], "NVIDIA Test");
    assert_eq!(gpu[0]["mem_total_mb"], 8192);
    let cut = sys[sys.len() - 2]["timestamp"]
        .as_str()
        .expect("ts")
        .to_owned();
    let later = get(&h.base_url(), &format!("/api/performance?after={cut}"))
        .await
        .json();
    let later_ts: Vec<&str> = later["sys_stats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["timestamp"].as_str())
        .collect();
    assert!(
        !later_ts.is_empty() && later_ts.iter().all(|t| *t > cut.as_str()),
        "strictly newer than {cut}: {later_ts:?}"
    );
    assert_eq!(
        get(&h.base_url(), "/api/performance?after=yesterday")
            .await
            .status,
        400
    );
    let m = get(&h.base_url(), "/metrics").await;
    assert!(m.text().contains("llamaswap_gpu_memory_total_bytes"));
    assert!(
        !m.text().contains("llamacpp:"),
        "no token metrics on llama-swap /metrics"
    );
}

#[tokio::test]
async fn swap_api_keys() {
    let mut spec = HostSpec::llama_swap("k", ApiGen::Current, vec![ModelSpec::new("m")])
        .with_time_scale(0.001);
    spec.api_keys = vec!["sekrit".into()];
    let h = start_host(spec).await.expect("start");
    let url = h.base_url();
    assert_eq!(
        get(&url, "/health").await.status,
        200,
        "health needs no key"
    );
    let r = get(&url, "/v1/models").await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"llama-swap\"")
    );
    for hdr in [
        ("authorization", "Bearer sekrit"),
        ("x-api-key", "sekrit"),
        ("authorization", "Basic dXNlcjpzZWtyaXQ="),
    ] {
        let r = client::request(&url, Method::GET, "/v1/models", &[hdr], Bytes::new())
            .await
            .expect("req");
        assert_eq!(r.status, 200, "{hdr:?}");
    }
}

#[tokio::test]
async fn swap_props_by_model_query_loads_the_model() {
    let h = swap_host(ApiGen::Current, None).await;
    let url = h.base_url();
    let r = get(&url, "/props?model=org/model-b").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["default_generation_settings"]["n_ctx"], 8192);
    assert_eq!(h.model_state("org/model-b"), Some("ready"));
    assert_eq!(get(&url, "/props?model=nope").await.status, 404);
    // Before v234 there is no /props route on llama-swap.
    let old = swap_host(ApiGen::Legacy, None).await;
    assert_eq!(get(&old.base_url(), "/props?model=qwen").await.status, 404);
}
