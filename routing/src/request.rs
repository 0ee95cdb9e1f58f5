//! Cheap request features from an OpenAI-style body, and a calibrated token estimate.
//!
//! Only requests for a virtual `auto:*` model need this (direct composite-id requests are
//! never parsed). The prompt size is estimated from characters: text characters divided by a
//! chars-per-token ratio plus a fixed cost per image. A [`TokenEstimator`] starts from a
//! conservative ratio and is calibrated from the `usage.prompt_tokens` that hosts report.

use crate::facts::RequestFeatures;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Tokens charged per image part (llama.cpp multimodal projectors use roughly 256–1500).
pub const IMAGE_TOKENS: u32 = 768;
/// Tokens charged per chat message for role markers and template overhead.
pub const MESSAGE_OVERHEAD_TOKENS: u32 = 4;

/// What a request body holds, measured without tokenizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PromptShape {
    /// Characters of prompt text, message contents and tool definitions.
    pub chars: u64,
    /// Chat messages.
    pub messages: u32,
    /// Image parts.
    pub images: u32,
    /// `tools` (or legacy `functions`) is a non-empty array.
    pub needs_tools: bool,
    /// `response_format.type` is `json_object` or `json_schema`.
    pub json_response: bool,
    /// `max_completion_tokens`, else `max_tokens` (saturated to `u32`).
    pub max_tokens: Option<u32>,
}

impl PromptShape {
    /// Measures a `/v1/chat/completions` or `/v1/completions` body. Unknown shapes measure
    /// as empty; nothing here fails.
    pub fn of(body: &Value) -> Self {
        let mut s = PromptShape::default();
        if let Some(msgs) = body.get("messages").and_then(Value::as_array) {
            s.messages = u32::try_from(msgs.len()).unwrap_or(u32::MAX);
            for m in msgs {
                if let Some(c) = m.get("content") {
                    s.content(c);
                }
                if let Some(calls) = m.get("tool_calls") {
                    s.chars += json_chars(calls);
                }
            }
        }
        if let Some(p) = body.get("prompt") {
            s.content(p);
        }
        for key in ["tools", "functions"] {
            if let Some(t) = body.get(key).and_then(Value::as_array)
                && !t.is_empty()
            {
                s.needs_tools = true;
                s.chars += t.iter().map(json_chars).sum::<u64>();
            }
        }
        s.json_response = body
            .get("response_format")
            .and_then(|r| r.get("type"))
            .and_then(Value::as_str)
            .is_some_and(|t| t == "json_object" || t == "json_schema");
        s.max_tokens = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| body.get(*k).and_then(Value::as_u64))
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        s
    }

    /// Measures a body given as bytes, the same as [`PromptShape::of`] its parsed `Value`:
    /// usually in one pass over the text without building a `Value` (bodies with tool
    /// definitions or tool calls, odd types or repeated keys take the `Value` route).
    ///
    /// # Errors
    /// The body is not JSON (`serde_json`'s error for it as a `Value`).
    pub fn from_slice(body: &[u8]) -> Result<Self, serde_json::Error> {
        match scan::shape(body) {
            Ok(Some(s)) => Ok(s),
            _ => serde_json::from_slice::<Value>(body).map(|v| Self::of(&v)),
        }
    }

    fn content(&mut self, c: &Value) {
        match c {
            Value::String(t) => self.chars += t.chars().count() as u64,
            Value::Array(parts) => {
                for p in parts {
                    match p {
                        Value::String(t) => self.chars += t.chars().count() as u64,
                        Value::Object(o) => {
                            let ty = o.get("type").and_then(Value::as_str).unwrap_or("");
                            if ty.contains("image") {
                                self.images = self.images.saturating_add(1);
                            } else if let Some(t) = o.get("text").and_then(Value::as_str) {
                                self.chars += t.chars().count() as u64;
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

fn json_chars(v: &Value) -> u64 {
    serde_json::to_string(v).map_or(0, |s| s.chars().count() as u64)
}

/// Chars-per-token ratio for one model (or one fleet), calibrated from observed usage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenEstimator {
    /// Current characters per token.
    pub chars_per_token: f64,
    /// Observations folded in so far.
    pub samples: u32,
}

impl Default for TokenEstimator {
    fn default() -> Self {
        Self {
            chars_per_token: Self::DEFAULT_CHARS_PER_TOKEN,
            samples: 0,
        }
    }
}

impl TokenEstimator {
    /// Starting ratio: a little below the ~4 chars/token of English BPE, so estimates err on
    /// the large side (a context-fit check should not let an oversized prompt through).
    pub const DEFAULT_CHARS_PER_TOKEN: f64 = 3.2;
    const MIN_RATIO: f64 = 1.0;
    const MAX_RATIO: f64 = 8.0;
    /// Observations smaller than this many text tokens are ignored (template noise).
    pub const MIN_SAMPLE_TOKENS: u64 = 64;

    /// Estimated prompt tokens for a measured body.
    pub fn estimate(&self, shape: &PromptShape) -> u32 {
        let text = (shape.chars as f64 / self.chars_per_token).ceil();
        let fixed = f64::from(shape.images) * f64::from(IMAGE_TOKENS)
            + f64::from(shape.messages) * f64::from(MESSAGE_OVERHEAD_TOKENS);
        let total = text + fixed;
        if total >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            total as u32
        }
    }

    /// Folds in the host-reported `usage.prompt_tokens` for a body of this shape
    /// (moving average: weights 1/2, 1/3, 1/4, then 0.2; ratio kept within 1–8).
    pub fn observe(&mut self, shape: &PromptShape, prompt_tokens: u64) {
        let fixed = u64::from(shape.images) * u64::from(IMAGE_TOKENS)
            + u64::from(shape.messages) * u64::from(MESSAGE_OVERHEAD_TOKENS);
        let text_tokens = prompt_tokens.saturating_sub(fixed);
        if text_tokens < Self::MIN_SAMPLE_TOKENS || shape.chars == 0 {
            return;
        }
        let ratio =
            (shape.chars as f64 / text_tokens as f64).clamp(Self::MIN_RATIO, Self::MAX_RATIO);
        // Early observations weigh more (1/2, 1/3, 1/4, then 1/5) so a fresh estimator
        // converges quickly and then follows drift smoothly.
        let alpha = (1.0 / (f64::from(self.samples) + 2.0)).max(0.2);
        self.chars_per_token = (1.0 - alpha) * self.chars_per_token + alpha * ratio;
        self.samples = self.samples.saturating_add(1);
    }
}

impl RequestFeatures {
    /// Features of an OpenAI-style body: tools, images, JSON response, `max_tokens`, and the
    /// prompt estimate from `estimator`. `source` is the caller's `X-Boo-Source`.
    pub fn from_body(body: &Value, estimator: &TokenEstimator, source: Option<String>) -> Self {
        Self::from_shape(&PromptShape::of(body), estimator, source)
    }

    /// Features of a body already measured as `shape` (see [`RequestFeatures::from_body`]).
    pub fn from_shape(
        shape: &PromptShape,
        estimator: &TokenEstimator,
        source: Option<String>,
    ) -> Self {
        RequestFeatures {
            needs_tools: shape.needs_tools,
            needs_vision: shape.images > 0,
            json_response: shape.json_response,
            est_prompt_tokens: estimator.estimate(shape),
            max_tokens: shape.max_tokens,
            source,
        }
    }
}

mod scan;

#[cfg(test)]
mod tests;
