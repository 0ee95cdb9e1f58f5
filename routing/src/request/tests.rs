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
