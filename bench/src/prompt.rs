//! Prompts of a given token length.
//!
//! The target length is the prompt as the server counts it (`usage.prompt_tokens`, chat
//! template included). With a tokenizer (`/tokenize`), the user message is sized exactly by
//! binary search and the template overhead is measured with one probe request; without one,
//! two probe requests of different lengths calibrate characters per token and the overhead
//! (a linear fit on `usage.prompt_tokens`); without `usage` either, 4 characters per token.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::io::{BenchClient, BenchRequest};
use crate::model::Target;
use crate::suite::Api;

const WORDS: &[&str] = &[
    "river", "stone", "lamp", "quiet", "orbit", "garden", "copper", "meadow", "signal", "harbor",
    "winter", "pencil", "canyon", "violet", "engine", "silver", "forest", "bridge", "candle",
    "market", "planet", "thunder", "mirror", "saddle", "timber", "velvet", "anchor", "blossom",
    "cobalt", "desert", "ember", "falcon", "glacier", "hollow", "island", "jungle", "kettle",
    "ladder", "marble", "needle", "oyster", "pepper", "quartz", "ribbon", "shadow", "tunnel",
    "umbrella", "voyage", "walnut", "yonder", "zephyr", "apple", "basket", "cellar", "dragon",
];

/// How prompts are sized for one target.
#[derive(Debug, Clone)]
pub struct PromptBook {
    filler: String,
    /// Content length in characters per requested prompt length.
    chars: BTreeMap<u32, usize>,
    /// How sizing was done (for the result file).
    pub sizing: String,
}

/// Deterministic varied filler text of at least `len` ASCII characters.
pub fn filler_text(len: usize) -> String {
    let mut s = String::with_capacity(len + 16);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    while s.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % WORDS.len() as u64) as usize]);
        s.push(if x.is_multiple_of(11) { '.' } else { ' ' });
        if x.is_multiple_of(11) {
            s.push(' ');
        }
    }
    s
}

/// Builds a probe body (max_tokens 1) with `content`.
pub(crate) fn probe_body(api: Api, model: &str, content: &str) -> Bytes {
    let v = match api {
        Api::Chat => serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": 1,
            "stream": true,
            "stream_options": {"include_usage": true},
            "cache_prompt": false,
        }),
        Api::Completions => serde_json::json!({
            "model": model,
            "prompt": content,
            "max_tokens": 1,
            "stream": true,
            "stream_options": {"include_usage": true},
            "cache_prompt": false,
        }),
    };
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

async fn probe(
    client: &dyn BenchClient,
    target: &Target,
    api: Api,
    content: &str,
    run_id: &str,
    timeout: Duration,
) -> Option<u32> {
    let req = BenchRequest {
        path: api.path(),
        body: probe_body(api, &target.model, content),
        run_id: run_id.to_owned(),
        timeout,
    };
    let o = client.send(target, &req, Instant::now()).await;
    if o.error.is_some() {
        return None;
    }
    o.prompt_tokens
        .or(o.timings.map(|t| t.prompt_n + t.cache_n))
}

impl PromptBook {
    /// Sizes prompts of `lengths` tokens for `target` (see the module docs); each probe request
    /// gives up after `timeout`. `sample_prefix` has the length of the unique prefix the
    /// engine will put in front of each prompt (`""` when none); with a tokenizer it is
    /// tokenized together with the filler, so the prefix is counted exactly.
    #[allow(clippy::too_many_arguments)]
    pub async fn build(
        client: &dyn BenchClient,
        target: &Target,
        api: Api,
        lengths: &[u32],
        run_id: &str,
        sample_prefix: &str,
        timeout: Duration,
    ) -> PromptBook {
        let max = lengths.iter().copied().max().unwrap_or(1) as usize;
        let filler = filler_text((max * 8 + 64).max(4096));
        let mut chars = BTreeMap::new();
        // Exact sizing through the tokenizer.
        let probe_text = &filler[..filler.len().min(400)];
        if let Ok(Some(n_probe)) = client.tokenize(target, probe_text).await {
            let overhead = probe(client, target, api, probe_text, run_id, timeout)
                .await
                .map_or(0, |p| i64::from(p) - i64::from(n_probe));
            let mut ok = true;
            for &n in lengths {
                let want = (i64::from(n) - overhead).max(1) as u32;
                // Smallest length whose token count reaches `want`.
                let (mut lo, mut hi) = (0usize, (want as usize * 8 + 16).min(filler.len()));
                while lo < hi {
                    let mid = (lo + hi) / 2;
                    let text = format!("{sample_prefix}{}", &filler[..mid]);
                    match client.tokenize(target, &text).await {
                        Ok(Some(t)) if t >= want => hi = mid,
                        Ok(Some(_)) => lo = mid + 1,
                        _ => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    break;
                }
                chars.insert(n, sample_prefix.len() + lo);
            }
            if ok {
                return PromptBook {
                    filler,
                    chars,
                    sizing: format!("tokenize (template overhead {overhead} tokens)"),
                };
            }
            chars.clear();
        }
        // Calibrated estimate: two probes, linear fit.
        let (l1, l2) = (400usize, 1600usize);
        let (a, b) = (
            probe(client, target, api, &filler[..l1], run_id, timeout).await,
            probe(client, target, api, &filler[..l2], run_id, timeout).await,
        );
        let (cpt, overhead, sizing) = match (a, b) {
            (Some(a), Some(b)) if b > a => {
                let cpt = (l2 - l1) as f64 / f64::from(b - a);
                let overhead = f64::from(a) - l1 as f64 / cpt;
                (
                    cpt,
                    overhead,
                    format!(
                        "estimate ({cpt:.2} chars/token, overhead {overhead:.0} tokens, calibrated)"
                    ),
                )
            }
            _ => (
                4.0,
                0.0,
                "estimate (4 chars/token, uncalibrated)".to_owned(),
            ),
        };
        for &n in lengths {
            let c = ((f64::from(n) - overhead).max(1.0) * cpt).round() as usize;
            chars.insert(n, c.clamp(1, filler.len()));
        }
        PromptBook {
            filler,
            chars,
            sizing,
        }
    }

    /// A prompt-only book for tests and offline use: `cpt` characters per token, no overhead.
    pub fn fixed(lengths: &[u32], cpt: f64) -> PromptBook {
        let max = lengths.iter().copied().max().unwrap_or(1) as usize;
        let filler = filler_text((max * 8 + 64).max(4096));
        let chars = lengths
            .iter()
            .map(|&n| {
                (
                    n,
                    ((f64::from(n) * cpt).round() as usize).clamp(1, filler.len()),
                )
            })
            .collect();
        PromptBook {
            filler,
            chars,
            sizing: format!("fixed ({cpt} chars/token)"),
        }
    }

    /// The message content for a prompt of `tokens` tokens, starting with `prefix` (which counts
    /// towards the length).
    pub fn content(&self, tokens: u32, prefix: &str) -> String {
        let total = self
            .chars
            .get(&tokens)
            .copied()
            .unwrap_or(tokens as usize * 4);
        let rest = total.saturating_sub(prefix.len()).min(self.filler.len());
        let mut s = String::with_capacity(prefix.len() + rest);
        s.push_str(prefix);
        s.push_str(&self.filler[..rest]);
        s
    }
}

impl Api {
    /// The request path.
    pub fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Completions => "/v1/completions",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_has_the_length_and_prefix() {
        let b = PromptBook::fixed(&[100, 10], 4.0);
        let c = b.content(100, "[r1-7] ");
        assert_eq!(c.len(), 400);
        assert!(c.starts_with("[r1-7] "));
        assert_eq!(b.content(10, "").len(), 40);
        assert!(filler_text(1000).is_ascii());
    }
}
