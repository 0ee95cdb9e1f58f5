//! Unit tests for request features and the token estimator.

use super::*;
use serde_json::json;

#[test]
fn chat_body_features() {
    let body = json!({
        "model": "auto:code",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]}
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "json_object"},
        "max_completion_tokens": 300,
        "max_tokens": 999
    });
    let shape = PromptShape::of(&body);
    assert_eq!(shape.messages, 2);
    assert_eq!(shape.images, 1);
    assert!(shape.needs_tools && shape.json_response);
    assert_eq!(shape.max_tokens, Some(300));
    let tools_chars = serde_json::to_string(&body["tools"][0]).unwrap().len() as u64;
    assert_eq!(shape.chars, 14 + 24 + tools_chars);
    let f = RequestFeatures::from_body(&body, &TokenEstimator::default(), Some("boocoder".into()));
    assert!(f.needs_tools && f.needs_vision && f.json_response);
    assert_eq!(f.max_tokens, Some(300));
    assert_eq!(f.source.as_deref(), Some("boocoder"));
    let text =
        ((14 + 24 + tools_chars) as f64 / TokenEstimator::DEFAULT_CHARS_PER_TOKEN).ceil() as u32;
    assert_eq!(
        f.est_prompt_tokens,
        text + IMAGE_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS
    );
}

#[test]
fn plain_and_completion_bodies() {
    let f = RequestFeatures::from_body(
        &json!({"messages": [{"role": "user", "content": "hi"}]}),
        &TokenEstimator::default(),
        None,
    );
    assert!(!f.needs_tools && !f.needs_vision && !f.json_response);
    assert_eq!(f.max_tokens, None);
    assert_eq!(f.est_prompt_tokens, 1 + MESSAGE_OVERHEAD_TOKENS);
    let s = PromptShape::of(&json!({"prompt": "abcdefgh", "max_tokens": 5, "tools": []}));
    assert_eq!(
        (s.chars, s.messages, s.max_tokens, s.needs_tools),
        (8, 0, Some(5), false)
    );
    // Odd shapes measure as empty rather than failing.
    assert_eq!(PromptShape::of(&json!([1, 2])), PromptShape::default());
    assert_eq!(
        PromptShape::of(&json!({"messages": "nope", "max_tokens": -1})),
        PromptShape::default()
    );
}

#[test]
fn counts_characters_not_bytes() {
    let s = PromptShape::of(&json!({"prompt": "héllo wörld"}));
    assert_eq!(s.chars, 11);
}

#[test]
fn estimator_converges_to_observed_ratio_and_ignores_tiny_samples() {
    let mut e = TokenEstimator::default();
    let shape = PromptShape {
        chars: 40_000,
        messages: 1,
        ..Default::default()
    };
    // The host reports 10_000 prompt tokens for 40_000 chars: 4 chars/token.
    for _ in 0..30 {
        e.observe(&shape, 10_000 + u64::from(MESSAGE_OVERHEAD_TOKENS));
    }
    assert!((e.chars_per_token - 4.0).abs() < 0.01, "{e:?}");
    let est = e.estimate(&shape);
    assert!((10_000..10_020).contains(&est), "{est}");
    let before = e;
    e.observe(
        &PromptShape {
            chars: 10,
            ..Default::default()
        },
        3,
    );
    assert_eq!(e, before);
    // Absurd reports are clamped.
    let mut wild = TokenEstimator::default();
    wild.observe(
        &PromptShape {
            chars: 1_000_000,
            ..Default::default()
        },
        100,
    );
    assert!(wild.chars_per_token <= 8.0);
}

#[test]
fn default_estimate_errs_large_for_english() {
    // ~4 chars/token English text: the default must not underestimate.
    let shape = PromptShape {
        chars: 4_000,
        ..Default::default()
    };
    assert!(TokenEstimator::default().estimate(&shape) >= 1_000);
}

/// `from_slice` measures exactly what `of` measures on the parsed `Value`.
fn same_both_ways(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        PromptShape::from_slice(text.as_bytes()).unwrap(),
        PromptShape::of(&v),
        "{text}"
    );
}

#[test]
fn from_slice_agrees_with_the_value_route() {
    for text in [
        r#"{"model":"auto:x","messages":[{"role":"user","content":"héllo \"wörld\"\n"}],"max_tokens":64}"#,
        r#"{"messages":[{"role":"user","content":[{"text":"abc","type":"text"},{"type":"image_url","image_url":{"url":"x"}},"plain",7,null]}],"response_format":{"type":"json_schema"}}"#,
        r#"{"prompt":["ab","cd",[1]],"max_completion_tokens":5,"max_tokens":9}"#,
        r#"{"prompt":"x","max_tokens":-3,"response_format":"json_object"}"#,
        r#"{"max_tokens":1.5e3,"max_completion_tokens":99999999999}"#,
        r#"{"messages":[{"role":"assistant","tool_calls":[{"id":"1","function":{"name":"f"}}]}]}"#,
        r#"{"messages":[{"content":"a"}],"tools":[{"type":"function"}],"functions":[]}"#,
        r#"{"messages":"nope"}"#,
        r#"{"messages":[1,"two",{"content":{"text":"obj"}}]}"#,
        r#"{"messages":[{"content":[{"type":7,"text":"no type"},{"type":"text","text":5}]}]}"#,
        // Repeated keys: a `Value` keeps the last.
        r#"{"max_tokens":1,"max_tokens":2,"messages":[{"content":"aa","content":"bbb"}]}"#,
        r#"{"messages":[{"content":[{"type":"image","type":"text","text":"x","text":"yy"}]}]}"#,
        r#"{"response_format":{"type":"text","type":"json_object"}}"#,
        r#"[1,2]"#,
        r#""s""#,
        r#"  {"prompt" : "\u00e9\ud83d\ude00" }  "#,
    ] {
        same_both_ways(text);
    }
    for bad in ["", "{", r#"{"prompt":"x"} trailing"#, r#"{"prompt":tru}"#] {
        assert!(PromptShape::from_slice(bad.as_bytes()).is_err(), "{bad}");
    }
}

mod random {
    use super::*;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "messages",
            "prompt",
            "content",
            "type",
            "text",
            "role",
            "max_tokens",
            "max_completion_tokens",
            "response_format",
            "tools",
            "tool_calls",
            "functions",
            "model",
        ])
        .prop_map(str::to_string)
    }

    fn leaf() -> impl Strategy<Value = Value> + Clone {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            prop::sample::select(vec![
                "text",
                "image_url",
                "json_object",
                "json_schema",
                "héllo\n\"q\"",
                "",
                "😀 x",
            ])
            .prop_map(Value::from),
        ]
    }

    fn body() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(5, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(key(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Chat-shaped bodies (the ones the one-pass scan measures itself).
    fn chat() -> impl Strategy<Value = Value> {
        let text = leaf();
        let part = prop_oneof![
            text.clone(),
            (
                prop::option::of(text.clone()),
                prop::option::of(text.clone())
            )
                .prop_map(|(ty, tx)| {
                    let mut o = serde_json::Map::new();
                    if let Some(t) = ty {
                        o.insert("type".into(), t);
                    }
                    if let Some(t) = tx {
                        o.insert("text".into(), t);
                    }
                    Value::Object(o)
                }),
        ];
        let content = prop_oneof![
            text.clone(),
            prop::collection::vec(part, 0..4).prop_map(Value::Array)
        ];
        let message = (text.clone(), prop::option::of(content)).prop_map(|(role, c)| {
            let mut o = serde_json::Map::new();
            o.insert("role".into(), role);
            if let Some(c) = c {
                o.insert("content".into(), c);
            }
            Value::Object(o)
        });
        (
            prop::collection::vec(message, 0..5),
            prop::option::of(leaf()),
            prop::option::of(leaf()),
            prop::option::of(text),
        )
            .prop_map(|(msgs, max_tokens, max_completion, format)| {
                let mut o = serde_json::Map::new();
                o.insert("model".into(), Value::from("auto:x"));
                o.insert("messages".into(), Value::Array(msgs));
                if let Some(m) = max_tokens {
                    o.insert("max_tokens".into(), m);
                }
                if let Some(m) = max_completion {
                    o.insert("max_completion_tokens".into(), m);
                }
                if let Some(f) = format {
                    o.insert("response_format".into(), serde_json::json!({"type": f}));
                }
                Value::Object(o)
            })
    }

    proptest! {
        #[test]
        fn from_slice_equals_of_on_chat_bodies(v in chat()) {
            let text = v.to_string();
            prop_assert_eq!(PromptShape::from_slice(text.as_bytes()).unwrap(), PromptShape::of(&v));
            // These take the one-pass scan, not the `Value` route.
            prop_assert!(super::super::scan::shape(text.as_bytes()).unwrap().is_some());
        }

        #[test]
        fn from_slice_equals_of_on_random_bodies(v in body(), pretty in any::<bool>()) {
            let text = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                v.to_string()
            };
            // The reference is what the gateway measured before: the bytes parsed as a `Value`
            // (not `v` itself: a float does not always survive a text round trip unchanged).
            let parsed: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(PromptShape::from_slice(text.as_bytes()).unwrap(), PromptShape::of(&parsed));
        }
    }
}
