//! Passive scanners over response bytes that the gateway forwards unmodified.
//!
//! * [`SseScanner`]: incremental, line-based; reports the first real token (TTFT), and picks
//!   `usage` and llama.cpp `timings` from the chunks that carry them. Only a partial trailing
//!   line is buffered, never the stream.
//! * [`TailScanner`]: keeps the last few KiB of a non-streaming JSON body and extracts `usage`
//!   and `timings` from it at the end.

use memchr::memmem::FinderRev;
use serde::Deserialize;
use serde::de::IgnoredAny;
use std::borrow::Cow;
use std::sync::LazyLock;

/// Token counts and speeds picked from a response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageInfo {
    /// `usage.prompt_tokens`.
    pub prompt_tokens: Option<i64>,
    /// `usage.prompt_tokens_details.cached_tokens` (else `timings.cache_n`).
    pub cached_tokens: Option<i64>,
    /// `usage.completion_tokens`.
    pub completion_tokens: Option<i64>,
    /// `timings.prompt_per_second`.
    pub prompt_tps: Option<f64>,
    /// `timings.predicted_per_second`.
    pub gen_tps: Option<f64>,
}

#[derive(Deserialize)]
struct UsageJson {
    prompt_tokens: Option<i64>,
    completion_tokens: Option<i64>,
    prompt_tokens_details: Option<Details>,
}
#[derive(Deserialize)]
struct Details {
    cached_tokens: Option<i64>,
}
#[derive(Deserialize)]
struct TimingsJson {
    prompt_per_second: Option<f64>,
    predicted_per_second: Option<f64>,
    cache_n: Option<i64>,
}

impl UsageInfo {
    fn apply_usage(&mut self, u: UsageJson) {
        self.prompt_tokens = u.prompt_tokens.or(self.prompt_tokens);
        self.completion_tokens = u.completion_tokens.or(self.completion_tokens);
        if let Some(c) = u.prompt_tokens_details.and_then(|d| d.cached_tokens) {
            self.cached_tokens = Some(c);
        }
    }
    fn apply_timings(&mut self, t: TimingsJson) {
        self.prompt_tps = t.prompt_per_second.or(self.prompt_tps);
        self.gen_tps = t.predicted_per_second.or(self.gen_tps);
        if self.cached_tokens.is_none() {
            self.cached_tokens = t.cache_n;
        }
    }
}

#[derive(Deserialize)]
struct ChunkProbe<'a> {
    id: Option<IgnoredAny>,
    object: Option<IgnoredAny>,
    model: Option<IgnoredAny>,
    #[serde(default, borrow)]
    choices: Vec<ChoiceProbe<'a>>,
    usage: Option<UsageJson>,
    timings: Option<TimingsJson>,
    error: Option<IgnoredAny>,
}
#[derive(Deserialize)]
struct ChoiceProbe<'a> {
    #[serde(borrow)]
    delta: Option<DeltaProbe<'a>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}
#[derive(Deserialize)]
struct DeltaProbe<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning: Option<Cow<'a, str>>,
    tool_calls: Option<IgnoredAny>,
}

/// Largest partial line kept between chunks; longer lines are skipped, not buffered.
const MAX_LINE: usize = 1 << 20;

/// Incremental SSE scanner (see the module docs).
#[derive(Debug, Default)]
pub struct SseScanner {
    partial: Vec<u8>,
    overflow: bool,
    first_token: bool,
    /// Usage and timings seen so far.
    pub usage: UsageInfo,
    /// `data: [DONE]` was seen.
    pub done: bool,
    /// An in-stream `{"error":...}` event was seen.
    pub stream_error: bool,
}

impl SseScanner {
    /// A fresh scanner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the first real token has been seen.
    pub fn first_token_seen(&self) -> bool {
        self.first_token
    }

    /// Feeds the next chunk of the stream; returns `true` when this chunk held the first real
    /// token (content, reasoning or tool-call delta of a chunk that has `id`/`object`/`model`).
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        let before = self.first_token;
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            let line = &rest[..nl];
            rest = &rest[nl + 1..];
            if self.partial.is_empty() && !self.overflow {
                self.line(line);
            } else if self.overflow {
                self.overflow = false;
            } else {
                let mut buf = std::mem::take(&mut self.partial);
                buf.extend_from_slice(line);
                self.line(&buf);
                buf.clear();
                self.partial = buf;
            }
        }
        if !rest.is_empty() && !self.overflow {
            if self.partial.len() + rest.len() > MAX_LINE {
                self.partial.clear();
                self.overflow = true;
            } else {
                self.partial.extend_from_slice(rest);
            }
        }
        !before && self.first_token
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(payload) = line.strip_prefix(b"data:") else {
            return;
        };
        let payload = payload.strip_prefix(b" ").unwrap_or(payload);
        if payload == b"[DONE]" {
            self.done = true;
            return;
        }
        // After the first token, only chunks that may carry usage/timings/error are parsed.
        static KEYS: LazyLock<[memchr::memmem::Finder<'static>; 3]> = LazyLock::new(|| {
            [
                memchr::memmem::Finder::new("\"usage\""),
                memchr::memmem::Finder::new("\"timings\""),
                memchr::memmem::Finder::new("\"error\""),
            ]
        });
        if self.first_token && KEYS.iter().all(|k| k.find(payload).is_none()) {
            return;
        }
        let Ok(p) = serde_json::from_slice::<ChunkProbe<'_>>(payload) else {
            return;
        };
        if p.error.is_some() && p.choices.is_empty() {
            self.stream_error = true;
        }
        if let Some(u) = p.usage {
            self.usage.apply_usage(u);
        }
        if let Some(t) = p.timings {
            self.usage.apply_timings(t);
        }
        if !self.first_token {
            let real = p.id.is_some() || p.object.is_some() || p.model.is_some();
            let has_token = p.choices.iter().any(|c| {
                c.text.as_deref().is_some_and(|t| !t.is_empty())
                    || c.delta.as_ref().is_some_and(|d| {
                        d.content.as_deref().is_some_and(|t| !t.is_empty())
                            || d.reasoning_content
                                .as_deref()
                                .is_some_and(|t| !t.is_empty())
                            || d.reasoning.as_deref().is_some_and(|t| !t.is_empty())
                            || d.tool_calls.is_some()
                    })
            });
            if real && has_token {
                self.first_token = true;
            }
        }
    }
}

/// Bytes of a non-streaming body kept for the final usage/timings scan.
const TAIL: usize = 16 * 1024;

/// Keeps the tail of a non-streaming JSON body (see the module docs).
///
/// The kept chunks are shared (`Bytes` reference counts), not copied: a one-chunk body is
/// scanned in place at the end.
#[derive(Debug, Default)]
pub struct TailScanner {
    parts: std::collections::VecDeque<bytes::Bytes>,
    len: usize,
}

impl TailScanner {
    /// A fresh scanner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next chunk of the body (copied; see [`TailScanner::feed_bytes`]).
    pub fn feed(&mut self, chunk: &[u8]) {
        self.feed_bytes(&bytes::Bytes::copy_from_slice(chunk));
    }

    /// Feeds the next chunk of the body without copying it.
    pub fn feed_bytes(&mut self, chunk: &bytes::Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.parts.push_back(chunk.clone());
        self.len += chunk.len();
        // Drop leading chunks that lie wholly before the last TAIL bytes.
        while let Some(front) = self.parts.front() {
            if self.len - front.len() >= TAIL {
                self.len -= front.len();
                self.parts.pop_front();
            } else {
                break;
            }
        }
    }

    /// Extracts `usage` and `timings` from the kept tail.
    pub fn finish(&self) -> UsageInfo {
        let joined: Vec<u8>;
        let all: &[u8] = match self.parts.len() {
            0 => &[],
            1 => &self.parts[0],
            _ => {
                joined = self.parts.iter().flat_map(|b| b.iter().copied()).collect();
                &joined
            }
        };
        let tail = &all[all.len().saturating_sub(TAIL)..];
        static USAGE: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new("\"usage\""));
        static TIMINGS: LazyLock<FinderRev<'static>> =
            LazyLock::new(|| FinderRev::new("\"timings\""));
        let mut info = UsageInfo::default();
        if let Some(u) = value_after_key::<UsageJson>(tail, &USAGE) {
            info.apply_usage(u);
        }
        if let Some(t) = value_after_key::<TimingsJson>(tail, &TIMINGS) {
            info.apply_timings(t);
        }
        info
    }
}

/// Parses the JSON value following the last unescaped occurrence of `key` in `hay`.
fn value_after_key<T: for<'de> Deserialize<'de>>(hay: &[u8], finder: &FinderRev<'_>) -> Option<T> {
    let key = finder.needle();
    let mut end = hay.len();
    while let Some(pos) = finder.rfind(&hay[..end]) {
        end = pos;
        if pos > 0 && hay[pos - 1] == b'\\' {
            continue;
        }
        let mut i = pos + key.len();
        while i < hay.len() && hay[i].is_ascii_whitespace() {
            i += 1;
        }
        if hay.get(i) != Some(&b':') {
            continue;
        }
        let mut it = serde_json::Deserializer::from_slice(&hay[i + 1..]).into_iter::<T>();
        if let Some(Ok(v)) = it.next() {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"llama-swap loading model: q\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"...\"}}]}\n\n",
        "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}],\"created\":1,\"id\":\"c1\",\"model\":\"q\",\"object\":\"chat.completion.chunk\"}\n\n",
        "data: {\"choices\":[{\"finish_reason\":null,\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"created\":1,\"id\":\"c1\",\"model\":\"q\",\"object\":\"chat.completion.chunk\"}\n\n",
        "data: {\"choices\":[{\"finish_reason\":\"stop\",\"index\":0,\"delta\":{}}],\"created\":1,\"id\":\"c1\",\"model\":\"q\",\"object\":\"chat.completion.chunk\"}\n\n",
        "data: {\"choices\":[],\"created\":1,\"id\":\"c1\",\"model\":\"q\",\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":3,\"prompt_tokens\":12,\"total_tokens\":15,\"prompt_tokens_details\":{\"cached_tokens\":8}},\"timings\":{\"cache_n\":8,\"prompt_n\":4,\"prompt_per_second\":100.5,\"predicted_n\":3,\"predicted_per_second\":42.0}}\n\n",
        "data: [DONE]\n\n"
    );

    #[test]
    fn loading_chunks_are_not_first_token_and_usage_is_found() {
        // Feed in every possible 2-way split and in 7-byte pieces: results must not depend on framing.
        let bytes = STREAM.as_bytes();
        let first_real = STREAM.find("Hel").unwrap();
        for split in [1, 7, 13, 64] {
            let mut s = SseScanner::new();
            let mut first_at = None;
            let mut off = 0;
            for piece in bytes.chunks(split) {
                if s.feed(piece) {
                    assert!(first_at.is_none());
                    first_at = Some(off + piece.len());
                }
                off += piece.len();
            }
            let at = first_at.expect("first token seen");
            assert!(
                at > first_real,
                "first token reported before the real content chunk"
            );
            assert!(s.done);
            assert_eq!(s.usage.prompt_tokens, Some(12));
            assert_eq!(s.usage.completion_tokens, Some(3));
            assert_eq!(s.usage.cached_tokens, Some(8));
            assert_eq!(s.usage.prompt_tps, Some(100.5));
            assert_eq!(s.usage.gen_tps, Some(42.0));
        }
    }

    #[test]
    fn role_only_chunk_is_not_a_token_and_stream_error_is_flagged() {
        let mut s = SseScanner::new();
        assert!(!s.feed(b"data: {\"id\":\"x\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\r\n\r\n"));
        assert!(!s.feed(
            b"data: {\"error\":{\"code\":500,\"message\":\"boom\",\"type\":\"server_error\"}}\n\n"
        ));
        assert!(s.stream_error);
        assert!(!s.first_token_seen());
    }

    #[test]
    fn tail_scanner_reads_usage_and_timings() {
        let body = br#"{"choices":[{"message":{"content":"the \"usage\": trap"}}],"usage":{"completion_tokens":35,"prompt_tokens":237,"total_tokens":272,"prompt_tokens_details":{"cached_tokens":236}},"id":"x","timings":{"cache_n":236,"prompt_per_second":32.3,"predicted_per_second":52.94}}"#;
        let mut t = TailScanner::new();
        for c in body.chunks(5) {
            t.feed(c);
        }
        let u = t.finish();
        assert_eq!(u.prompt_tokens, Some(237));
        assert_eq!(u.completion_tokens, Some(35));
        assert_eq!(u.cached_tokens, Some(236));
        assert_eq!(u.gen_tps, Some(52.94));
        // A large prefix does not matter: only the tail is kept.
        let mut big = TailScanner::new();
        big.feed(&vec![b' '; 100_000]);
        big.feed(body);
        assert_eq!(big.finish(), u);
    }
}
