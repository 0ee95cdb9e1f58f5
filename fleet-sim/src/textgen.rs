//! Deterministic token counting, text generation and embeddings.

use std::borrow::Cow;

/// SplitMix64: small, fast, seedable.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// FNV-1a, for seeding from text.
pub(crate) fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Tokens in a piece of text: one per 4 bytes, rounded up.
pub(crate) fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

/// Per-message overhead of the chat template, in tokens.
pub(crate) const MESSAGE_OVERHEAD: u32 = 4;

const WORDS: &[&str] = &[
    "the", "model", "answers", "quickly", "with", "a", "small", "fleet", "of", "local", "servers",
    "and", "every", "request", "is", "routed", "to", "one", "host", "that", "has", "free", "slots",
    "while", "cloud", "lanes", "run", "in", "parallel", "so", "latency", "stays", "low", "for",
    "users", "who", "ask", "about", "code", "tests", "metrics", "tokens", "context", "cache",
    "swap", "load", "ready", "stream", "chunk", "done", "gpu", "memory", "prompt", "speed",
    "reply", "seed", "value", "time", "state", "event", "queue", "retry", "after", "this",
];

/// The outcome of a generation plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    Stop,
    Length,
}

impl Finish {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
        }
    }
}

/// A planned reply: the text pieces (one per token) and why it ended.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub pieces: Vec<Cow<'static, str>>,
    /// Tokens generated (a stop word's tokens count, as in llama-server).
    pub predicted_n: u32,
    pub finish: Finish,
}

impl Plan {
    pub(crate) fn text(&self) -> String {
        let mut s = String::with_capacity(self.pieces.len() * 6);
        for p in &self.pieces {
            s.push_str(p);
        }
        s
    }
}

/// Plans a reply. `limit` is the hard cap (max_tokens or what is left of the context);
/// `natural` is where the model would emit EOS (None when `ignore_eos`).
pub(crate) fn plan(
    seed: u64,
    natural: Option<u32>,
    limit: u32,
    limit_is_ctx: bool,
    stop: &[String],
) -> Plan {
    let _ = limit_is_ctx;
    let mut rng = Rng::new(seed);
    let (n, finish) = match natural {
        Some(nat) if nat <= limit => (nat, Finish::Stop),
        _ => (limit, Finish::Length),
    };
    let mut pieces: Vec<Cow<'static, str>> = Vec::with_capacity(n as usize);
    let mut text = String::new();
    let check_stop = !stop.is_empty();
    for i in 0..n {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        let piece: Cow<'static, str> = if i == 0 {
            Cow::Owned(capitalize(w))
        } else if rng.below(11) == 0 {
            Cow::Owned(format!(". {w}"))
        } else {
            Cow::Owned(format!(" {w}"))
        };
        if check_stop {
            let before = text.len();
            text.push_str(&piece);
            if let Some(pos) = stop
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                // Keep only the text before the stop word.
                if pos > before {
                    pieces.push(Cow::Owned(text[before..pos].to_owned()));
                }
                if pos < before {
                    // The stop word began in an earlier piece: trim the emitted pieces.
                    let mut keep = String::new();
                    keep.push_str(&text[..pos]);
                    pieces.clear();
                    if !keep.is_empty() {
                        pieces.push(Cow::Owned(keep));
                    }
                }
                return Plan {
                    pieces,
                    predicted_n: i + 1,
                    finish: Finish::Stop,
                };
            }
        }
        pieces.push(piece);
    }
    Plan {
        pieces,
        predicted_n: n,
        finish,
    }
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Natural reply length for a prompt (seeded), 8..=48 tokens.
pub(crate) fn natural_len(seed: u64) -> u32 {
    let mut r = Rng::new(seed ^ 0x5151);
    8 + r.below(41) as u32
}

/// A deterministic unit-length embedding.
pub(crate) fn embedding(seed: u64, n: u32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let mut v: Vec<f32> = (0..n)
        .map(|_| (r.below(2001) as f32 - 1000.0) / 1000.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    for x in &mut v {
        *x /= norm;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_respects_limit_and_natural_end() {
        let p = plan(1, Some(10), 4, false, &[]);
        assert_eq!((p.predicted_n, p.finish), (4, Finish::Length));
        assert_eq!(p.pieces.len(), 4);
        let p = plan(1, Some(3), 40, false, &[]);
        assert_eq!((p.predicted_n, p.finish), (3, Finish::Stop));
        let p = plan(1, None, 7, false, &[]);
        assert_eq!((p.predicted_n, p.finish), (7, Finish::Length));
    }

    #[test]
    fn plan_is_deterministic_and_stop_truncates() {
        let a = plan(42, None, 30, false, &[]).text();
        let b = plan(42, None, 30, false, &[]).text();
        assert_eq!(a, b);
        assert_ne!(a, plan(43, None, 30, false, &[]).text());
        // Pick a word that occurs after the start, and stop on it.
        let word = a
            .split(' ')
            .nth(3)
            .map(|w| w.trim_matches('.').to_owned())
            .unwrap_or_default();
        let stopped = plan(42, None, 30, false, std::slice::from_ref(&word));
        assert_eq!(stopped.finish, Finish::Stop);
        let t = stopped.text();
        assert!(!t.contains(&word), "{t:?} still contains {word:?}");
        assert!(a.starts_with(&t));
    }

    #[test]
    fn embeddings_are_unit_length() {
        let v = embedding(7, 64);
        let n: f32 = v.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-3);
        assert_eq!(v, embedding(7, 64));
    }
}
