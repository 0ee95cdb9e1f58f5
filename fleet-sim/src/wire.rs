//! Wire shapes: request parsing and the JSON/SSE bytes llama-server and llama-swap send.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::textgen::{self, MESSAGE_OVERHEAD};

/// What the sim reads from an inference request body (one parse per request).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct InferReq {
    #[serde(default)]
    pub model: Option<serde_json::Value>,
    #[serde(default)]
    pub messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    pub prompt: Option<serde_json::Value>,
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub n_predict: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub stop: Option<serde_json::Value>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub ignore_eos: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChatMessage {
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub content: Option<serde_json::Value>,
}

impl InferReq {
    pub(crate) fn model_str(&self) -> Option<&str> {
        match &self.model {
            Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }
    pub(crate) fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
    pub(crate) fn max_tokens(&self) -> Option<u32> {
        let v = self
            .max_completion_tokens
            .or(self.max_tokens)
            .or(self.n_predict)?;
        if v < 0 {
            None
        } else {
            Some(u32::try_from(v).unwrap_or(u32::MAX))
        }
    }
    pub(crate) fn stops(&self) -> Vec<String> {
        match &self.stop {
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn content_text(v: &serde_json::Value, out: &mut Vec<u8>) {
    match v {
        serde_json::Value::String(s) => out.extend_from_slice(s.as_bytes()),
        serde_json::Value::Array(parts) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
        _ => {}
    }
}

/// Prompt accounting: tokens per message (for the cache model) and the total.
#[derive(Debug, Clone)]
pub(crate) struct Prompt {
    pub total: u32,
    /// (hash, tokens) per message, in order.
    pub parts: Vec<(u64, u32)>,
    pub seed: u64,
}

/// Counts prompt tokens of a chat request.
pub(crate) fn chat_prompt(req: &InferReq, seed: u64) -> Prompt {
    let mut parts = Vec::new();
    let mut total = 2u32; // assistant priming
    let mut h = seed;
    let mut buf = Vec::new();
    for m in req.messages.iter().flatten() {
        buf.clear();
        buf.extend_from_slice(m.role.as_bytes());
        buf.push(0);
        if let Some(c) = &m.content {
            content_text(c, &mut buf);
        }
        let text_len = buf.len() - m.role.len() - 1;
        let toks = MESSAGE_OVERHEAD + u32::try_from(text_len.div_ceil(4)).unwrap_or(u32::MAX);
        let mh = textgen::hash_bytes(0, &buf);
        h = textgen::hash_bytes(h, &mh.to_le_bytes());
        parts.push((mh, toks));
        total = total.saturating_add(toks);
    }
    Prompt {
        total,
        parts,
        seed: h,
    }
}

/// Counts prompt tokens of a text completion request.
pub(crate) fn text_prompt(req: &InferReq, seed: u64) -> Prompt {
    let mut buf = Vec::new();
    if let Some(p) = &req.prompt {
        match p {
            serde_json::Value::Array(a) => {
                for x in a {
                    if let Some(s) = x.as_str() {
                        buf.extend_from_slice(s.as_bytes());
                    }
                }
            }
            other => content_text(other, &mut buf),
        }
    }
    let toks = 1 + u32::try_from(buf.len().div_ceil(4)).unwrap_or(u32::MAX);
    let mh = textgen::hash_bytes(0, &buf);
    Prompt {
        total: toks,
        parts: vec![(mh, toks)],
        seed: textgen::hash_bytes(seed, &mh.to_le_bytes()),
    }
}

/// Embedding inputs (text per item).
pub(crate) fn embedding_inputs(req: &InferReq) -> Option<Vec<String>> {
    match req.input.as_ref().or(req.prompt.as_ref())? {
        serde_json::Value::String(s) => Some(vec![s.clone()]),
        serde_json::Value::Array(a) => a.iter().map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}

/// llama-server `timings`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Timings {
    pub cache_n: u32,
    pub prompt_n: u32,
    pub prompt_ms: f64,
    pub prompt_per_token_ms: f64,
    pub prompt_per_second: f64,
    pub predicted_n: u32,
    pub predicted_ms: f64,
    pub predicted_per_token_ms: f64,
    pub predicted_per_second: f64,
}

/// Speeds reported when a model runs "unlimited".
pub(crate) fn eff_tps(tps: f64) -> f64 {
    if tps > 0.0 { tps } else { 1_000_000.0 }
}

impl Timings {
    pub(crate) fn new(
        cache_n: u32,
        prompt_n: u32,
        prompt_tps: f64,
        predicted_n: u32,
        gen_tps: f64,
    ) -> Timings {
        let (ptps, gtps) = (eff_tps(prompt_tps), eff_tps(gen_tps));
        let prompt_ms = f64::from(prompt_n) * 1000.0 / ptps;
        let predicted_ms = f64::from(predicted_n) * 1000.0 / gtps;
        Timings {
            cache_n,
            prompt_n,
            prompt_ms,
            prompt_per_token_ms: if prompt_n > 0 {
                prompt_ms / f64::from(prompt_n)
            } else {
                0.0
            },
            prompt_per_second: if prompt_n > 0 { ptps } else { 0.0 },
            predicted_n,
            predicted_ms,
            predicted_per_token_ms: if predicted_n > 0 {
                predicted_ms / f64::from(predicted_n)
            } else {
                0.0
            },
            predicted_per_second: if predicted_n > 0 { gtps } else { 0.0 },
        }
    }
}

#[derive(Serialize)]
pub(crate) struct Usage {
    pub completion_tokens: u32,
    pub prompt_tokens: u32,
    pub total_tokens: u32,
    pub prompt_tokens_details: CachedDetails,
}

#[derive(Serialize)]
pub(crate) struct CachedDetails {
    pub cached_tokens: u32,
}

impl Usage {
    /// `prompt_tokens` includes cached tokens (unlike `timings.prompt_n`).
    pub(crate) fn from_timings(t: &Timings) -> Usage {
        let prompt = t.prompt_n + t.cache_n;
        Usage {
            completion_tokens: t.predicted_n,
            prompt_tokens: prompt,
            total_tokens: prompt + t.predicted_n,
            prompt_tokens_details: CachedDetails {
                cached_tokens: t.cache_n,
            },
        }
    }
}

pub(crate) const FINGERPRINT: &str = "b6500-fleetsim";

#[derive(Serialize)]
struct ChatResponse<'a> {
    choices: [ChatChoice<'a>; 1],
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    object: &'static str,
    usage: Usage,
    id: &'a str,
    timings: Timings,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    finish_reason: &'static str,
    index: u32,
    message: AssistantMsg<'a>,
}

#[derive(Serialize)]
struct AssistantMsg<'a> {
    role: &'static str,
    content: &'a str,
}

pub(crate) struct Meta<'a> {
    pub id: &'a str,
    pub model: &'a str,
    pub created: u64,
}

pub(crate) fn chat_response(m: &Meta<'_>, text: &str, finish: &'static str, t: &Timings) -> Bytes {
    let r = ChatResponse {
        choices: [ChatChoice {
            finish_reason: finish,
            index: 0,
            message: AssistantMsg {
                role: "assistant",
                content: text,
            },
        }],
        created: m.created,
        model: m.model,
        system_fingerprint: FINGERPRINT,
        object: "chat.completion",
        usage: Usage::from_timings(t),
        id: m.id,
        timings: *t,
    };
    to_bytes(&r)
}

#[derive(Serialize)]
struct TextResponse<'a> {
    choices: [TextChoice<'a>; 1],
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    object: &'static str,
    usage: Usage,
    id: &'a str,
    timings: Timings,
}

#[derive(Serialize)]
struct TextChoice<'a> {
    text: &'a str,
    index: u32,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

pub(crate) fn text_response(m: &Meta<'_>, text: &str, finish: &'static str, t: &Timings) -> Bytes {
    to_bytes(&TextResponse {
        choices: [TextChoice {
            text,
            index: 0,
            logprobs: None,
            finish_reason: Some(finish),
        }],
        created: m.created,
        model: m.model,
        system_fingerprint: FINGERPRINT,
        object: "text_completion",
        usage: Usage::from_timings(t),
        id: m.id,
        timings: *t,
    })
}

#[derive(Serialize)]
struct ChatChunk<'a, D: Serialize> {
    choices: Vec<ChunkChoice<D>>,
    created: u64,
    id: &'a str,
    model: &'a str,
    system_fingerprint: &'static str,
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timings: Option<Timings>,
}

#[derive(Serialize)]
struct ChunkChoice<D: Serialize> {
    finish_reason: Option<&'static str>,
    index: u32,
    delta: D,
}

#[derive(Serialize)]
struct RoleDelta {
    role: &'static str,
    content: Option<()>,
}

#[derive(Serialize)]
struct ContentDelta<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct EmptyDelta {}

fn sse(json: Vec<u8>) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn to_vec<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec())
}

pub(crate) fn to_bytes<T: Serialize>(v: &T) -> Bytes {
    Bytes::from(to_vec(v))
}

pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// Chat stream frames.
pub(crate) fn chat_chunk_role(m: &Meta<'_>) -> Bytes {
    sse(to_vec(&ChatChunk {
        choices: vec![ChunkChoice {
            finish_reason: None,
            index: 0,
            delta: RoleDelta {
                role: "assistant",
                content: None,
            },
        }],
        created: m.created,
        id: m.id,
        model: m.model,
        system_fingerprint: FINGERPRINT,
        object: "chat.completion.chunk",
        usage: None,
        timings: None,
    }))
}

pub(crate) fn chat_chunk_content(m: &Meta<'_>, piece: &str) -> Bytes {
    sse(to_vec(&ChatChunk {
        choices: vec![ChunkChoice {
            finish_reason: None,
            index: 0,
            delta: ContentDelta { content: piece },
        }],
        created: m.created,
        id: m.id,
        model: m.model,
        system_fingerprint: FINGERPRINT,
        object: "chat.completion.chunk",
        usage: None,
        timings: None,
    }))
}

pub(crate) fn chat_chunk_finish(
    m: &Meta<'_>,
    finish: &'static str,
    timings: Option<Timings>,
) -> Bytes {
    sse(to_vec(&ChatChunk {
        choices: vec![ChunkChoice {
            finish_reason: Some(finish),
            index: 0,
            delta: EmptyDelta {},
        }],
        created: m.created,
        id: m.id,
        model: m.model,
        system_fingerprint: FINGERPRINT,
        object: "chat.completion.chunk",
        usage: None,
        timings,
    }))
}

pub(crate) fn chunk_usage(m: &Meta<'_>, object: &'static str, t: &Timings) -> Bytes {
    sse(to_vec(&ChatChunk::<EmptyDelta> {
        choices: Vec::new(),
        created: m.created,
        id: m.id,
        model: m.model,
        system_fingerprint: FINGERPRINT,
        object,
        usage: Some(Usage::from_timings(t)),
        timings: Some(*t),
    }))
}

#[derive(Serialize)]
struct TextChunk<'a> {
    choices: [TextChoice<'a>; 1],
    created: u64,
    id: &'a str,
    model: &'a str,
    system_fingerprint: &'static str,
    object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timings: Option<Timings>,
}

pub(crate) fn text_chunk(
    m: &Meta<'_>,
    piece: &str,
    finish: Option<&'static str>,
    timings: Option<Timings>,
) -> Bytes {
    sse(to_vec(&TextChunk {
        choices: [TextChoice {
            text: piece,
            index: 0,
            logprobs: None,
            finish_reason: finish,
        }],
        created: m.created,
        id: m.id,
        model: m.model,
        system_fingerprint: FINGERPRINT,
        object: "text_completion",
        usage: timings.as_ref().map(Usage::from_timings),
        timings,
    }))
}

/// llama-server error body `{"error":{"code","message","type"}}`.
pub(crate) fn server_error(code: u16, message: &str) -> Bytes {
    let ty = match code {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        501 => "not_supported_error",
        503 => "unavailable_error",
        _ => "server_error",
    };
    to_bytes(&serde_json::json!({"error": {"code": code, "message": message, "type": ty}}))
}

/// `exceed_context_size_error` body.
pub(crate) fn exceed_context(n_prompt: u32, n_ctx: u32) -> Bytes {
    to_bytes(&serde_json::json!({"error": {
        "code": 400,
        "message": format!("request ({n_prompt} tokens) exceeds the available context size ({n_ctx} tokens), try increasing it"),
        "type": "exceed_context_size_error",
        "n_prompt_tokens": n_prompt,
        "n_ctx": n_ctx,
    }}))
}

/// Embeddings response (OpenAI shape).
pub(crate) fn embeddings_response(
    model: &str,
    inputs: &[String],
    seed: u64,
    n_embd: u32,
) -> (Bytes, u32) {
    let mut data = Vec::with_capacity(inputs.len());
    let mut tokens = 0u32;
    for (i, text) in inputs.iter().enumerate() {
        tokens = tokens.saturating_add(textgen::count_tokens(text).max(1));
        let v = textgen::embedding(textgen::hash_bytes(seed, text.as_bytes()), n_embd);
        data.push(serde_json::json!({"embedding": v, "index": i, "object": "embedding"}));
    }
    let body = serde_json::json!({
        "model": model,
        "object": "list",
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "data": data,
    });
    (to_bytes(&body), tokens)
}
