use super::*;
use crate::time::parse_rfc3339_ms;

fn ts(s: &str) -> u64 {
    parse_rfc3339_ms(s, "t").unwrap()
}

// ----- activity entries of every generation -----

#[test]
fn v150_flat_entry_without_cache_and_prompt_speed() {
    let e = parse_activity_entry(&serde_json::json!({
        "id": 0, "timestamp": "2025-06-01T12:00:00.123456789Z", "model": "qwen",
        "input_tokens": 20, "output_tokens": 7, "tokens_per_second": 31.2,
        "duration_ms": 450, "has_capture": false
    }))
    .unwrap();
    assert_eq!(e.id, 0);
    assert_eq!(e.ts_ms, ts("2025-06-01T12:00:00.123Z"));
    assert_eq!((e.cache_tokens, e.prompt_per_second), (None, None));
    assert_eq!((e.input_tokens, e.output_tokens), (Some(20), Some(7)));
    assert_eq!((e.req_path, e.resp_status_code), (None, None));
}

#[test]
fn v208_flat_entry_with_sentinels() {
    let e = parse_activity_entry(&serde_json::json!({
        "id": 17, "timestamp": "2026-02-03T09:29:57-07:00", "model": "llama-8b",
        "cache_tokens": -1, "input_tokens": 1, "output_tokens": 35,
        "prompt_per_second": -1, "tokens_per_second": 52.9, "duration_ms": 692, "has_capture": true
    }))
    .unwrap();
    assert_eq!(e.ts_ms, ts("2026-02-03T16:29:57Z"));
    assert_eq!(e.cache_tokens, None);
    assert_eq!(e.prompt_per_second, None);
    assert_eq!(e.tokens_per_second, Some(52.9));
    assert!(e.has_capture);
}

#[test]
fn v209_nested_tokens() {
    let e = parse_activity_entry(&serde_json::json!({
        "id": 42, "timestamp": "2026-05-22T09:29:57-07:00", "model": "qwen-coder",
        "req_path": "/v1/chat/completions", "resp_content_type": "text/event-stream",
        "resp_status_code": 200,
        "tokens": {"cache_tokens": 236, "input_tokens": 1, "output_tokens": 35,
                   "prompt_per_second": 32.3, "tokens_per_second": 52.9},
        "duration_ms": 692, "has_capture": true
    }))
    .unwrap();
    assert_eq!(e.cache_tokens, Some(236));
    assert_eq!(e.prompt_per_second, Some(32.3));
    assert_eq!(e.req_path.as_deref(), Some("/v1/chat/completions"));
    assert_eq!(e.resp_status_code, Some(200));
    assert_eq!((e.draft_tokens, e.error_msg.as_deref()), (None, None));
}

#[test]
fn current_entry_with_drafts_error_and_metadata() {
    let e = parse_activity_entry(&serde_json::json!({
        "id": 9001, "timestamp": "2026-08-22T09:29:57-07:00", "model": "qwen-coder",
        "req_path": "/v1/chat/completions", "resp_content_type": "application/json",
        "resp_status_code": 500,
        "tokens": {"cache_tokens": -1, "draft_tokens": 40, "draft_acc_tokens": 31,
                   "input_tokens": -1, "output_tokens": -1, "prompt_per_second": -1, "tokens_per_second": -1},
        "duration_ms": 12, "has_capture": false, "error_msg": "context size exceeded",
        "metadata": {"selector": "coding", "fifo_priority": "0"}
    }))
    .unwrap();
    assert_eq!((e.draft_tokens, e.draft_acc_tokens), (Some(40), Some(31)));
    assert_eq!(
        (e.input_tokens, e.output_tokens, e.tokens_per_second),
        (None, None, None)
    );
    assert_eq!(e.error_msg.as_deref(), Some("context size exceeded"));
    assert_eq!(e.metadata.unwrap()["selector"], "coding");
}

#[test]
fn bad_entries_name_the_field() {
    let check_err = |v: serde_json::Value, field: &str| {
        let err = parse_activity_entry(&v).unwrap_err();
        match &err {
            Error::Wire { field: f, .. } => assert_eq!(f, field, "{err}"),
            other => panic!("unexpected {other}"),
        }
    };
    check_err(
        serde_json::json!({"timestamp": "2026-01-01T00:00:00Z", "model": "m"}),
        "id",
    );
    check_err(serde_json::json!({"id": 1, "model": "m"}), "timestamp");
    check_err(
        serde_json::json!({"id": 1, "timestamp": "yesterday", "model": "m"}),
        "timestamp",
    );
    check_err(
        serde_json::json!({"id": 1, "timestamp": "2026-01-01T00:00:00Z"}),
        "model",
    );
    check_err(
        serde_json::json!({"id": 1, "timestamp": "2026-01-01T00:00:00Z", "model": "m", "tokens": {"input_tokens": "many"}}),
        "input_tokens",
    );
    check_err(
        serde_json::json!({"id": 1, "timestamp": "2026-01-01T00:00:00Z", "model": "m", "resp_status_code": 70000}),
        "resp_status_code",
    );
}

#[test]
fn activity_lists_legacy_array_and_current_page() {
    let legacy = r#"[{"id":0,"timestamp":"2026-01-01T00:00:00Z","model":"a","input_tokens":1,"output_tokens":2,"duration_ms":3,"has_capture":false},
                     {"id":1,"timestamp":"2026-01-01T00:00:01Z","model":"b","input_tokens":1,"output_tokens":2,"duration_ms":3,"has_capture":false}]"#;
    let l = parse_activity_list(legacy).unwrap();
    assert_eq!(
        l.iter().map(|e| e.model.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );

    let page = r#"{"data":[{"id":5,"timestamp":"2026-08-01T00:00:00Z","model":"c","tokens":{"input_tokens":3}}],
                   "page":1,"limit":999,"total":1,"total_pages":1}"#;
    let p = parse_activity_list(page).unwrap();
    assert_eq!((p[0].id, p[0].input_tokens), (5, Some(3)));

    let err = parse_activity_list(
        r#"[{"id":0,"timestamp":"2026-01-01T00:00:00Z","model":"a"},{"id":1}]"#,
    )
    .unwrap_err();
    assert!(err.to_string().contains("[1].timestamp"), "{err}");
    assert!(parse_activity_list("{\"data\":7}").is_err());
}

// ----- /api/events envelopes -----

#[test]
fn model_status_current_with_peer() {
    let data = serde_json::to_string(&serde_json::json!([
        {"id": "qwen", "name": "Qwen", "description": "", "state": "ready", "unlisted": false, "peerID": ""},
        {"id": "llama", "name": "", "description": "", "state": "stopped", "unlisted": true, "peerID": ""},
        {"id": "box2/gemma", "peerID": "box2", "state": ""}
    ]))
    .unwrap();
    let env = serde_json::json!({"type": "modelStatus", "data": data}).to_string();
    let ev = parse_event(&env).unwrap();
    let SwapEvent::ModelStatus(list) = &ev else {
        panic!("{ev:?}")
    };
    assert_eq!(list.len(), 3);
    assert_eq!(list[2].peer_id.as_deref(), Some("box2"));
    assert_eq!(list[2].state, ModelState::Unknown);
    assert!(list[1].unlisted);
    assert_eq!(
        ev.local_model_states().unwrap(),
        vec![
            ("qwen".to_owned(), ModelState::Ready),
            ("llama".to_owned(), ModelState::Stopped)
        ]
    );
}

#[test]
fn model_status_legacy_states() {
    let env = r#"{"type":"modelStatus","data":"[{\"id\":\"a\",\"state\":\"shutdown\"},{\"id\":\"b\",\"state\":\"unknown\"},{\"id\":\"c\",\"state\":\"stopping\"}]"}"#;
    let states = parse_event(env).unwrap().local_model_states().unwrap();
    assert_eq!(states[0].1, ModelState::Shutdown);
    assert_eq!(states[1].1, ModelState::Unknown);
    assert_eq!(states[2].1, ModelState::Stopping);
}

#[test]
fn log_data_and_activity_and_profile() {
    let log = r#"{"type":"logData","data":"{\"source\":\"upstream\",\"data\":\"srv  load_model: loading\\nline 2\\n\"}"}"#;
    assert_eq!(
        parse_event(log).unwrap(),
        SwapEvent::LogData {
            source: LogSource::Upstream,
            data: "srv  load_model: loading\nline 2\n".to_owned()
        }
    );
    assert_eq!(
        parse_event(r#"{"type":"activity","data":"{\"id\":42}"}"#).unwrap(),
        SwapEvent::Activity { id: 42 }
    );
    assert_eq!(
        parse_event(r#"{"type":"profileChanged","data":"{\"active\":null}"}"#).unwrap(),
        SwapEvent::ProfileChanged { active: None }
    );
    let ui = parse_event(
        r#"{"type":"uiConfig","data":"{\"activity\":{\"session_id\":[\"X-Session-ID\"]}}"}"#,
    )
    .unwrap();
    assert!(matches!(ui, SwapEvent::Other { ref kind, .. } if kind == "uiConfig"));
}

#[test]
fn legacy_metrics_event_carries_entries() {
    let entries = r#"[{"id":0,"timestamp":"2026-03-01T10:00:00Z","model":"m","cache_tokens":5,"input_tokens":1,"output_tokens":2,"prompt_per_second":10.0,"tokens_per_second":20.0,"duration_ms":30,"has_capture":false}]"#;
    let env = serde_json::json!({"type": "metrics", "data": entries}).to_string();
    let SwapEvent::Metrics(list) = parse_event(&env).unwrap() else {
        panic!()
    };
    assert_eq!((list.len(), list[0].cache_tokens), (1, Some(5)));
}

#[test]
fn inflight_in_all_three_shapes_drives_the_tracker() {
    let mut t = InFlightTracker::default();
    let total = parse_event(r#"{"type":"inflight","data":"{\"total\":3}"}"#).unwrap();
    let SwapEvent::InFlight(i) = total else {
        panic!()
    };
    assert_eq!(i, InFlight::Total(3));
    assert_eq!(t.apply(&i), 3);

    let v235 = r#"{"type":"inflight","data":"{\"requests\":[{\"id\":\"1\",\"timestamp\":\"2026-06-01T00:00:00Z\",\"model\":\"q\",\"req_path\":\"/v1/chat/completions\",\"method\":\"POST\"},{\"id\":\"2\",\"model\":\"q\"}]}"}"#;
    let SwapEvent::InFlight(i) = parse_event(v235).unwrap() else {
        panic!()
    };
    assert!(
        matches!(&i, InFlight::Requests(r) if r.len() == 2 && r[0].started_at == Some(ts("2026-06-01T00:00:00Z")))
    );
    assert_eq!(t.apply(&i), 2);

    let snap = r#"{"type":"inflight","data":"{\"operation\":\"snapshot\",\"requests\":[]}"}"#;
    let SwapEvent::InFlight(i) = parse_event(snap).unwrap() else {
        panic!()
    };
    assert_eq!(t.apply(&i), 0);
    let upsert = r#"{"type":"inflight","data":"{\"operation\":\"upsert\",\"request\":{\"id\":\"7\",\"timestamp\":\"2026-08-22T09:29:57.123456789-07:00\",\"model\":\"qwen\",\"req_path\":\"/v1/chat/completions\",\"method\":\"POST\",\"req_headers\":{\"Authorization\":\"[REDACTED]\"},\"resp_bytes\":1234,\"elapsed_ms\":850}}"}"#;
    let SwapEvent::InFlight(i) = parse_event(upsert).unwrap() else {
        panic!()
    };
    assert_eq!(t.apply(&i), 1);
    assert_eq!(t.apply(&i), 1);
    let remove = r#"{"type":"inflight","data":"{\"operation\":\"remove\",\"id\":\"7\"}"}"#;
    let SwapEvent::InFlight(i) = parse_event(remove).unwrap() else {
        panic!()
    };
    assert_eq!(i, InFlight::Remove("7".to_owned()));
    assert_eq!(t.apply(&i), 0);
}

#[test]
fn envelope_data_that_is_not_double_encoded_is_accepted() {
    let ev = parse_event(r#"{"type":"activity","data":{"id":5}}"#).unwrap();
    assert_eq!(ev, SwapEvent::Activity { id: 5 });
}

#[test]
fn bad_envelopes_are_errors_not_panics() {
    for (bad, field) in [
        ("not json", "$"),
        (r#"{"data":"{}"}"#, "type"),
        (r#"{"type":"activity"}"#, "data"),
        (r#"{"type":"activity","data":"{not json"}"#, "data"),
        (r#"{"type":"activity","data":"{}"}"#, "id"),
        (
            r#"{"type":"inflight","data":"{\"operation\":\"teleport\"}"}"#,
            "operation",
        ),
        (r#"{"type":"inflight","data":"{}"}"#, "data"),
        (
            r#"{"type":"logData","data":"{\"source\":\"kernel\",\"data\":\"x\"}"}"#,
            "source",
        ),
        (r#"{"type":"modelStatus","data":"{}"}"#, "data"),
    ] {
        match parse_event(bad) {
            Err(Error::Wire { field: f, .. }) => assert_eq!(f, field, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

// ----- SSE framing -----

#[test]
fn sse_accepts_both_data_spellings_crlf_and_comments() {
    let mut d = SseDecoder::new();
    let msgs = d
        .push(b": hello\r\nevent:message\r\ndata:{\"a\":1}\r\n\r\nevent: message\ndata: {\"b\":2}\n\ndata:x\ndata:y\n\n")
        .unwrap();
    let data: Vec<&str> = msgs.iter().map(|m| m.data.as_str()).collect();
    assert_eq!(data, ["{\"a\":1}", "{\"b\":2}", "x\ny"]);
    assert!(msgs.iter().all(|m| m.event == "message"));
}

#[test]
fn sse_keeps_utf8_text_and_replaces_invalid_bytes_instead_of_failing() {
    let mut d = SseDecoder::new();
    let msgs = d
        .push("data: {\"m\":\"größe 模型\"}\n\n".as_bytes())
        .unwrap();
    assert_eq!(msgs[0].data, "{\"m\":\"größe 模型\"}");
    // A log line cut inside a character (or a host writing Latin-1) still yields its message.
    let msgs = d.push(b"data: ok \xff\xfe end\n\n").unwrap();
    assert_eq!(msgs[0].data, "ok \u{fffd}\u{fffd} end");
}

#[test]
fn sse_split_at_every_byte_gives_the_same_messages() {
    let stream = "event:message\r\ndata:{\"type\":\"activity\",\"data\":\"{\\\"id\\\":1}\"}\r\n\r\nevent:message\ndata:{\"type\":\"activity\",\"data\":\"{\\\"id\\\":2}\"}\n\n";
    let mut d = SseDecoder::new();
    let mut msgs = Vec::new();
    for b in stream.as_bytes() {
        msgs.extend(d.push(std::slice::from_ref(b)).unwrap());
    }
    let ids: Vec<SwapEvent> = msgs.iter().map(|m| parse_event(&m.data).unwrap()).collect();
    assert_eq!(
        ids,
        [SwapEvent::Activity { id: 1 }, SwapEvent::Activity { id: 2 }]
    );
}

proptest::proptest! {
    /// However the bytes are cut into chunks, the decoder yields the same messages, with any mix
    /// of `\n`, `\r\n` and `\r` line ends.
    #[test]
    fn sse_messages_do_not_depend_on_chunking(
        lines in proptest::collection::vec(
            proptest::prop_oneof![
                "data:[ -~]{0,12}",
                "data: \\{\"id\\\":[0-9]{1,3}\\}",
                "event:[a-z]{0,6}",
                ": [a-z ]{0,6}",
                proptest::strategy::Just(String::new()),
            ],
            0..24,
        ),
        ends in proptest::collection::vec(0..3usize, 24),
        cuts in proptest::collection::vec(0..64usize, 0..12),
    ) {
        let mut stream = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            stream.extend_from_slice(l.as_bytes());
            stream.extend_from_slice([&b"\n"[..], b"\r\n", b"\r"][ends[i]]);
        }
        let whole = SseDecoder::new().push(&stream).unwrap();
        let mut d = SseDecoder::new();
        let mut pieces = Vec::new();
        let mut rest = &stream[..];
        for c in cuts {
            let at = c.min(rest.len());
            pieces.extend(d.push(&rest[..at]).unwrap());
            rest = &rest[at..];
        }
        pieces.extend(d.push(rest).unwrap());
        prop_assert_eq!(pieces, whole);
    }
}

#[test]
fn sse_oversized_message_is_an_error_and_the_decoder_recovers() {
    let mut d = SseDecoder::with_limit(16);
    assert!(d.push(b"data:0123456789abcdefXYZ").is_err());
    let msgs = d.push(b"\n\ndata:ok\n\n").unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].data, "ok");
}

// ----- /running, /api/version, /api/performance -----

#[test]
fn running_with_and_without_ttl() {
    let r = parse_running(
        r#"{"running":[{"model":"qwen","state":"ready","cmd":"llama-server ...","proxy":"http://127.0.0.1:5800","ttl":300,"name":"","description":""},
                       {"model":"old","state":"starting"}]}"#,
    )
    .unwrap();
    assert_eq!(
        r[0],
        RunningModel {
            model: "qwen".into(),
            state: ModelState::Ready,
            ttl_s: Some(300)
        }
    );
    assert_eq!(r[1].ttl_s, None);
    assert!(
        parse_running(r#"{"running":[{"state":"ready"}]}"#)
            .unwrap_err()
            .to_string()
            .contains("running[0].model")
    );
}

#[test]
fn versions_pick_the_activity_api() {
    let v = |s: &str| {
        parse_version(&format!(
            r#"{{"version":"{s}","commit":"c","build_date":"d"}}"#
        ))
        .unwrap()
    };
    assert_eq!(v("v235").activity_api(), ActivityApi::Ring);
    assert_eq!(v("236").activity_api(), ActivityApi::Paged);
    assert_eq!(v("v250-rc1").number, Some(250));
    assert_eq!(v("local-build").number, None);
    assert_eq!(v("local-build").activity_api(), ActivityApi::Paged);
    assert!(!v("v211").has_performance() && v("v212").has_performance());
    assert!(
        parse_version("{}")
            .unwrap_err()
            .to_string()
            .contains("version")
    );
}

#[test]
fn performance_sums_gpus_of_the_latest_sample() {
    let p = parse_performance(
        r#"{"enabled":true,
        "sys_stats":[{"timestamp":"2026-08-22T10:00:05Z","cpu_util_per_core":[12.5],"mem_total_mb":128000,"mem_used_mb":40000}],
        "gpu_stats":[
          {"timestamp":"2026-08-22T10:00:00Z","id":0,"name":"RTX","temp_c":40,"mem_used_mb":1000,"mem_total_mb":24000,"power_draw_w":100},
          {"timestamp":"2026-08-22T10:00:05Z","id":0,"name":"RTX","temp_c":45,"mem_used_mb":20000,"mem_total_mb":24000,"power_draw_w":300.5},
          {"timestamp":"2026-08-22T10:00:05Z","id":1,"name":"P104","temp_c":61,"mem_used_mb":5000,"mem_total_mb":8000,"power_draw_w":90}
        ]}"#,
    )
    .unwrap();
    let latest = p.latest().unwrap();
    assert_eq!(latest.at, ts("2026-08-22T10:00:05Z"));
    assert_eq!(
        (latest.vram_used_mb, latest.vram_total_mb),
        (Some(25_000), Some(32_000))
    );
    assert_eq!(latest.gpu_temp_c, Some(61.0));
    assert_eq!(latest.power_w, Some(390.5));
    assert_eq!(p.newest_ts(), Some(ts("2026-08-22T10:00:05Z")));
}

#[test]
fn performance_null_gpu_stats_and_disabled() {
    let p = parse_performance(r#"{"enabled":true,"sys_stats":[],"gpu_stats":null}"#).unwrap();
    assert_eq!((p.latest(), p.newest_ts()), (None, None));
    let off = parse_performance(r#"{"enabled":false}"#).unwrap();
    assert!(off.gpu.is_empty() && off.sys.is_empty());
    let err = parse_performance(r#"{"gpu_stats":[{"id":0}]}"#).unwrap_err();
    assert!(err.to_string().contains("gpu_stats[0].timestamp"), "{err}");
}

// ----- llama-server -----

#[test]
fn server_props_current_and_sparse_builds() {
    let p = parse_server_props(
        r#"{"default_generation_settings":{"n_ctx":32768,"params":{"temperature":0.8}},"total_slots":4,
            "model_alias":"qwen","model_path":"/models/q.gguf","modalities":{"vision":false},
            "endpoint_slots":true,"chat_template":"...","build_info":"b6500-abc123","is_sleeping":false}"#,
    )
    .unwrap();
    assert_eq!((p.n_ctx, p.total_slots), (Some(32768), Some(4)));
    assert_eq!(p.model_id().as_deref(), Some("qwen"));
    let sparse = parse_server_props(r#"{"model_path":"C:\\models\\llama-3.gguf"}"#).unwrap();
    assert_eq!(
        (sparse.n_ctx, sparse.model_id().as_deref()),
        (None, Some("llama-3"))
    );
    assert!(
        parse_server_props(r#"{"total_slots":"four"}"#)
            .unwrap_err()
            .to_string()
            .contains("total_slots")
    );
}

#[test]
fn slots_count_busy_ones() {
    let s = parse_slots(
        r#"[{"id":0,"id_task":5,"n_ctx":8192,"speculative":false,"is_processing":true,"params":{},"next_token":{"n_decoded":3}},
            {"id":1,"id_task":-1,"n_ctx":8192,"speculative":false,"is_processing":false}]"#,
    )
    .unwrap();
    assert_eq!(s, SlotsSummary { total: 2, busy: 1 });
    assert!(parse_slots(r#"{"error":{"code":501,"message":"This server does not support slots endpoint.","type":"not_supported_error"}}"#).is_err());
}

#[test]
fn go_nil_slices_arrive_as_null() {
    assert_eq!(
        parse_event(r#"{"type":"modelStatus","data":"null"}"#).unwrap(),
        SwapEvent::ModelStatus(Vec::new())
    );
    assert_eq!(
        parse_event(
            r#"{"type":"inflight","data":"{\"operation\":\"snapshot\",\"requests\":null}"}"#
        )
        .unwrap(),
        SwapEvent::InFlight(InFlight::Snapshot(Vec::new()))
    );
    assert_eq!(
        parse_event(r#"{"type":"metrics","data":"null"}"#).unwrap(),
        SwapEvent::Metrics(Vec::new())
    );
}

// ----- the typed fast path for per-request events -----

/// An `/api/events` envelope around `data` (encoded twice, as llama-swap sends it).
/// An event as llama-swap's Go encoder writes it: `type` first, `data` a JSON string.
fn envelope(ty: &str, data: &serde_json::Value) -> String {
    format!(
        "{{\"type\":{},\"data\":{}}}",
        serde_json::to_string(ty).unwrap(),
        serde_json::to_string(&data.to_string()).unwrap()
    )
}

/// The same event with its keys in another order (not the split fast path).
fn envelope_reordered(ty: &str, data: &serde_json::Value) -> String {
    serde_json::json!({"type": ty, "data": data.to_string()}).to_string()
}

/// JSON string content as Go's `encoding/json` escapes it: `<`, `>`, `&`, U+2028 and U+2029
/// as `\u` escapes, other controls as `\u00XX` or their short forms.
fn go_escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[test]
fn envelope_split_decodes_what_go_and_serde_write() {
    for s in [
        "",
        "plain",
        "{\"id\":5}",
        "<b>tags & \"quotes\"</b>\n\ttab\\back\u{1}\u{1f}",
        "é ünïcödé 日本 \u{1F600} \u{2028}",
    ] {
        let go = format!("{{\"type\":\"logData\",\"data\":\"{}\"}}", go_escape(s));
        assert_eq!(
            fast::split_envelope(&go),
            Some(("logData", s.to_string())),
            "{go}"
        );
        let serde = envelope("logData", &serde_json::Value::String(s.into()));
        let (ty, data) = fast::split_envelope(&serde).unwrap();
        assert_eq!(
            (ty, serde_json::from_str::<String>(&data).unwrap()),
            ("logData", s.into())
        );
    }
    // A surrogate pair as Go or another encoder may write it.
    assert_eq!(fast::unescape("\\ud83d\\ude00!"), Some("\u{1F600}!".into()));
    // Not valid string content: the caller falls back to serde, which reports the error.
    for bad in [
        "a\"b",
        "tab\there",
        "end\\",
        "\\x41",
        "\\u12",
        "\\u12g4",
        "\\ud83d",
        "\\ud83d\\u0041",
        "\\ude00",
    ] {
        assert_eq!(fast::unescape(bad), None, "{bad:?}");
    }
    // Other envelope shapes are left to serde.
    for other in [
        r#"{"data":"{}","type":"activity"}"#,
        r#"{ "type":"activity","data":"{}"}"#,
        r#"{"type":"act\u0069vity","data":"{}"}"#,
        r#"{"type":"activity","data":"{}","extra":1}"#,
        r#"{"type":"activity","data":{"id":5}}"#,
    ] {
        assert_eq!(fast::split_envelope(other), None, "{other}");
    }
}

proptest::proptest! {
    /// Whatever the data string holds, the split decodes it exactly as serde decodes the
    /// envelope, for Go's escaping and for serde's.
    #[test]
    fn envelope_split_agrees_with_serde(s in "[ -~\u{0}-\u{1f}é日\u{1F600}\u{2028}]{0,40}") {
        let go = format!("{{\"type\":\"logData\",\"data\":\"{}\"}}", go_escape(&s));
        let serde = envelope("logData", &serde_json::Value::String(s.clone()));
        for j in [go, format!("{{\"type\":\"logData\",\"data\":{}}}", serde_json::to_string(&s).unwrap())] {
            let v: serde_json::Value = serde_json::from_str(&j).unwrap();
            let (ty, data) = fast::split_envelope(&j).expect("Go/serde layout takes the split");
            proptest::prop_assert_eq!(ty, v["type"].as_str().unwrap());
            proptest::prop_assert_eq!(data.as_str(), v["data"].as_str().unwrap());
        }
        let (_, data) = fast::split_envelope(&serde).unwrap();
        proptest::prop_assert_eq!(serde_json::from_str::<String>(&data).unwrap(), s);
    }

    /// Raw text that the split accepts is text serde accepts, with the same result.
    #[test]
    fn envelope_split_never_accepts_what_serde_rejects(raw in "[a\"\\\\u0-9dDfFnrt/é]{0,16}") {
        let j = format!("{{\"type\":\"logData\",\"data\":\"{raw}\"}}");
        let serde = serde_json::from_str::<serde_json::Value>(&j).ok();
        match fast::split_envelope(&j) {
            Some((ty, data)) => {
                let v = serde.expect("split accepted what serde rejects");
                proptest::prop_assert_eq!(ty, "logData");
                proptest::prop_assert_eq!(Some(data.as_str()), v["data"].as_str());
            }
            None => proptest::prop_assert!(
                serde.as_ref().is_none_or(|v| !v["data"].is_string()) || raw.contains('"'),
                "serde accepts {j} but the split does not"
            ),
        }
    }
}

#[test]
fn per_request_events_take_the_fast_path_and_decode_as_the_general_one() {
    let headers = serde_json::json!({"Content-Type": "application/json", "Authorization": "[REDACTED]",
        "X-Boo-Source": "arena", "Accept": ["a", "b"]});
    let hot = [
        envelope(
            "inflight",
            &serde_json::json!({"operation": "upsert", "request": {"id": "7",
            "timestamp": "2026-03-01T10:00:00.123456789Z", "model": "qwen", "req_path": "/v1/chat/completions",
            "method": "POST", "req_headers": headers, "remote_ip": "10.0.0.5", "resp_headers": headers,
            "resp_bytes": 1234, "elapsed_ms": 850, "metadata": {"k": [1, {"x": null}]}}}),
        ),
        envelope(
            "inflight",
            &serde_json::json!({"operation": "upsert", "request": {"id": 8}}),
        ),
        envelope(
            "inflight",
            &serde_json::json!({"operation": "upsert", "request": {"id": "9", "model": null,
            "timestamp": "not a time"}}),
        ),
        envelope(
            "inflight",
            &serde_json::json!({"operation": "remove", "id": "7"}),
        ),
        envelope(
            "inflight",
            &serde_json::json!({"operation": "remove", "id": 7}),
        ),
        envelope(
            "inflight",
            &serde_json::json!({"operation": "snapshot", "requests": [{"id": "1", "req_headers": headers}, {"id": 2}]}),
        ),
        envelope(
            "inflight",
            &serde_json::json!({"operation": "snapshot", "requests": null}),
        ),
        envelope("activity", &serde_json::json!({"id": 42})),
        envelope("activity", &serde_json::json!({"id": 43, "extra": "x"})),
        envelope(
            "logData",
            &serde_json::json!({"source": "proxy", "data": "[INFO] Request 127.0.0.1 \"POST /v1/chat/completions\" 200\n"}),
        ),
        envelope(
            "logData",
            &serde_json::json!({"source": "upstream", "data": "srv  log: é\n"}),
        ),
        envelope("logData", &serde_json::json!({"source": "proxy"})),
    ];
    for j in &hot {
        let fast = fast::event(j).unwrap_or_else(|| panic!("not on the fast path: {j}"));
        assert_eq!(Ok(fast), parse_event_general(j), "{j}");
        assert_eq!(parse_event(j), parse_event_general(j), "{j}");
        // Keys in another order: serde splits the envelope, same result.
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        let data: serde_json::Value = serde_json::from_str(v["data"].as_str().unwrap()).unwrap();
        let r = envelope_reordered(v["type"].as_str().unwrap(), &data);
        assert_ne!(&r, j);
        assert_eq!(fast::event(&r), fast::event(j), "{r}");
    }
    // Odd shapes, errors and other types go the general way, with its results and messages.
    let cold = [
        envelope(
            "inflight",
            &serde_json::json!({"operation": "upsert", "request": null}),
        ),
        envelope(
            "inflight",
            &serde_json::json!({"operation": "upsert", "request": {"id": "1", "model": 5}}),
        ),
        envelope(
            "inflight",
            &serde_json::json!({"operation": "remove", "id": 7.5}),
        ),
        envelope("inflight", &serde_json::json!({"operation": "rename"})),
        envelope("inflight", &serde_json::json!({"total": 3})),
        envelope("inflight", &serde_json::json!({"requests": [{"id": "1"}]})),
        envelope("activity", &serde_json::json!({"id": -1})),
        envelope("activity", &serde_json::json!({"id": 4.0})),
        envelope("activity", &serde_json::json!({})),
        envelope("profileChanged", &serde_json::json!({"active": "p"})),
        envelope(
            "logData",
            &serde_json::json!({"source": "gpu", "data": "x"}),
        ),
        envelope(
            "logData",
            &serde_json::json!({"source": "proxy", "data": 5}),
        ),
        r#"{"type":"activity","data":{"id":5}}"#.to_string(),
        r#"{"type":"activity","data":"{\"id\":5}","type":"other"}"#.to_string(),
        r#"{"type":"inflight","data":"not json"}"#.to_string(),
        "{}".to_string(),
    ];
    for j in &cold {
        assert_eq!(fast::event(j), None, "{j}");
        assert_eq!(parse_event(j), parse_event_general(j), "{j}");
    }
    assert!(
        parse_event(&cold[1])
            .unwrap_err()
            .to_string()
            .contains("model")
    );
}

use proptest::prelude::*;

proptest::proptest! {
    /// Whatever mix of optional fields, id types and extra keys an `inflight` upsert carries,
    /// both paths agree (or the fast one steps aside).
    #[test]
    fn fast_and_general_inflight_decoding_agree(
        id in proptest::prop_oneof![
            "[0-9a-z\"\\\\]{0,6}".prop_map(serde_json::Value::from),
            proptest::num::u64::ANY.prop_map(serde_json::Value::from),
            proptest::num::i64::ANY.prop_map(serde_json::Value::from),
            proptest::num::f64::NORMAL.prop_map(serde_json::Value::from),
            proptest::strategy::Just(serde_json::Value::Null),
        ],
        model in proptest::option::of("[a-z\u{e9}\"]{0,5}"),
        ts in proptest::option::of(proptest::prop_oneof![
            proptest::strategy::Just("2026-03-01T10:00:00.5Z".to_string()),
            "[0-9TZ:.-]{0,24}",
        ]),
        extra in proptest::option::of("[a-z]{1,4}"),
        op in proptest::prop_oneof![
            proptest::strategy::Just("upsert"),
            proptest::strategy::Just("remove"),
            proptest::strategy::Just("snapshot"),
        ],
    ) {
        let mut req = serde_json::json!({"id": id});
        if let Some(m) = &model { req["model"] = m.clone().into(); }
        if let Some(t) = &ts { req["timestamp"] = t.clone().into(); }
        if let Some(x) = &extra { req[x.as_str()] = serde_json::json!({"h": [x]}); }
        let data = match op {
            "upsert" => serde_json::json!({"operation": op, "request": req}),
            "remove" => serde_json::json!({"operation": op, "id": req["id"].clone()}),
            _ => serde_json::json!({"operation": op, "requests": [req.clone(), req]}),
        };
        let j = envelope("inflight", &data);
        if let Some(fast) = fast::event(&j) {
            prop_assert_eq!(Ok(fast), parse_event_general(&j));
        }
        prop_assert_eq!(parse_event(&j), parse_event_general(&j));
    }
}
