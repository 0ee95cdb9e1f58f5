//! Wire parsers never panic on hostile input, and SSE decoding does not depend on chunking.

use boo_fleet_core::wire::{
    SseDecoder, parse_activity_list, parse_event, parse_performance, parse_running,
    parse_server_props, parse_slots, parse_version,
};
use proptest::prelude::*;
use serde_json::Value;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e9f64..1e9).prop_map(Value::from),
        "[a-z0-9:.TZ+-]{0,30}".prop_map(Value::String),
        Just(Value::String("2026-08-22T09:29:57-07:00".into())),
        Just(Value::from(-1)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("id".to_owned()),
                    Just("timestamp".to_owned()),
                    Just("model".to_owned()),
                    Just("tokens".to_owned()),
                    Just("state".to_owned()),
                    Just("requests".to_owned()),
                    Just("operation".to_owned()),
                    Just("request".to_owned()),
                    Just("total".to_owned()),
                    Just("source".to_owned()),
                    Just("data".to_owned()),
                    Just("gpu_stats".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const TYPES: [&str; 8] = [
    "modelStatus",
    "logData",
    "metrics",
    "activity",
    "inflight",
    "profileChanged",
    "uiConfig",
    "other",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn parsers_return_errors_not_panics(v in json_value(), ty in 0..TYPES.len(), encode_twice in any::<bool>()) {
        let data = if encode_twice { Value::String(v.to_string()) } else { v.clone() };
        let env = serde_json::json!({"type": TYPES[ty], "data": data}).to_string();
        let _ = parse_event(&env);
        let text = v.to_string();
        let _ = parse_activity_list(&text);
        let _ = parse_running(&text);
        let _ = parse_version(&text);
        let _ = parse_performance(&text);
        let _ = parse_server_props(&text);
        let _ = parse_slots(&text);
    }

    #[test]
    fn arbitrary_text_is_never_a_panic(s in "\\PC{0,200}") {
        let _ = parse_event(&s);
        let _ = parse_activity_list(&s);
        let mut d = SseDecoder::with_limit(64);
        let _ = d.push(s.as_bytes());
    }

    #[test]
    fn sse_chunking_does_not_matter(
        msgs in prop::collection::vec(("[a-zA-Z0-9{}\":, ]{0,40}", any::<bool>(), any::<bool>()), 1..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let mut stream = String::new();
        for (data, crlf, space) in &msgs {
            let nl = if *crlf { "\r\n" } else { "\n" };
            let sp = if *space { " " } else { "" };
            stream.push_str(&format!(":comment{nl}event:message{nl}data:{sp}{data}{nl}{nl}"));
        }
        let bytes = stream.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort();
        let mut d = SseDecoder::new();
        let mut got = Vec::new();
        let mut prev = 0;
        for p in points.into_iter().chain([bytes.len()]) {
            got.extend(d.push(&bytes[prev..p]).unwrap());
            prev = p;
        }
        let want: Vec<String> = msgs
            .iter()
            .map(|(data, _, space)| if *space { data.clone() } else { data.strip_prefix(' ').unwrap_or(data).to_owned() })
            .collect();
        let got: Vec<String> = got.into_iter().map(|m| m.data).collect();
        prop_assert_eq!(got, want);
    }
}
