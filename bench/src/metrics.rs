//! Metrics, computed after the fact from raw [`Sample`] timestamps.
//!
//! Definitions (all over successful, non-warm-up requests of one cell):
//! * **TTFT** = first content chunk − sent.
//! * **E2E** = last chunk − sent.
//! * **TPOT** = (E2E − TTFT) / (output tokens − 1), for requests with ≥ 2 output tokens.
//! * **gen tok/s** (per request) = 1000 / TPOT.
//! * **ITL** = gaps between consecutive content chunks, pooled over all requests.
//! * **queue** = sent − scheduled (client-side).
//! * **output tok/s** = Σ output tokens / wall; **request throughput** = successful requests / wall;
//!   wall = first send → last response end.
//! * **server prompt/gen tok/s** = `timings.prompt_per_second` / `predicted_per_second`.

use crate::model::{CellMetrics, Sample, Stats};

/// Summary statistics of `values` (sorted in place). Empty input gives all zeros.
pub fn stats(values: &mut [f64]) -> Stats {
    let n = values.len();
    if n == 0 {
        return Stats::default();
    }
    values.sort_by(f64::total_cmp);
    let sum: f64 = values.iter().sum();
    let mean = sum / n as f64;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
    Stats {
        count: n as u64,
        mean,
        std: var.sqrt(),
        min: values[0],
        max: values[n - 1],
        p50: percentile_sorted(values, 50.0),
        p90: percentile_sorted(values, 90.0),
        p99: percentile_sorted(values, 99.0),
    }
}

/// The `q`-th percentile (0–100) of sorted `v`, interpolating linearly between closest ranks.
pub fn percentile_sorted(v: &[f64], q: f64) -> f64 {
    match v.len() {
        0 => 0.0,
        1 => v[0],
        n => {
            let pos = (q.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            let frac = pos - lo as f64;
            v[lo] + (v[hi] - v[lo]) * frac
        }
    }
}

fn ms(from_us: u64, to_us: u64) -> f64 {
    to_us.saturating_sub(from_us) as f64 / 1000.0
}

/// Time to first content token, ms.
pub fn ttft_ms(s: &Sample) -> Option<f64> {
    s.content_us.first().map(|&t| ms(s.sent_us, t))
}

/// End to end, ms.
pub fn e2e_ms(s: &Sample) -> Option<f64> {
    s.last_chunk_us
        .or(s.content_us.last().copied())
        .map(|t| ms(s.sent_us, t))
}

/// Time per output token after the first, ms: (E2E − TTFT)/(out − 1); `None` below 2 tokens.
pub fn tpot_ms(s: &Sample) -> Option<f64> {
    let out = s.output_tokens();
    if out < 2 {
        return None;
    }
    let (ttft, e2e) = (ttft_ms(s)?, e2e_ms(s)?);
    Some((e2e - ttft).max(0.0) / f64::from(out - 1))
}

/// Computes a cell's metrics from its samples (warm-ups and failures are skipped here).
pub fn cell_metrics<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> CellMetrics {
    let mut ttft = Vec::new();
    let mut tpot = Vec::new();
    let mut gtps = Vec::new();
    let mut itl = Vec::new();
    let mut e2e = Vec::new();
    let mut queue = Vec::new();
    let mut sp = Vec::new();
    let mut sg = Vec::new();
    let mut ptoks = Vec::new();
    let mut otoks = Vec::new();
    let mut first_sent = u64::MAX;
    let mut last_end = 0u64;
    let mut out_total = 0u64;
    let mut ok = 0u64;
    for s in samples {
        if s.warmup || !s.ok() {
            continue;
        }
        ok += 1;
        first_sent = first_sent.min(s.sent_us);
        let end = s
            .last_chunk_us
            .or(s.content_us.last().copied())
            .unwrap_or(s.sent_us);
        last_end = last_end.max(end);
        queue.push(ms(s.scheduled_us, s.sent_us));
        if let Some(v) = ttft_ms(s) {
            ttft.push(v);
        }
        if let Some(v) = e2e_ms(s) {
            e2e.push(v);
        }
        if let Some(v) = tpot_ms(s) {
            tpot.push(v);
            if v > 0.0 {
                gtps.push(1000.0 / v);
            }
        }
        for w in s.content_us.windows(2) {
            itl.push(ms(w[0], w[1]));
        }
        if let Some(t) = s.timings {
            if t.prompt_per_second > 0.0 {
                sp.push(t.prompt_per_second);
            }
            if t.predicted_per_second > 0.0 {
                sg.push(t.predicted_per_second);
            }
        }
        if let Some(p) = s.prompt_tokens {
            ptoks.push(f64::from(p));
        }
        let out = s.output_tokens();
        otoks.push(f64::from(out));
        out_total += u64::from(out);
    }
    let wall_ms = if ok == 0 {
        0.0
    } else {
        ms(first_sent, last_end)
    };
    let per_s = |x: f64| {
        if wall_ms > 0.0 {
            x * 1000.0 / wall_ms
        } else {
            0.0
        }
    };
    CellMetrics {
        ttft_ms: stats(&mut ttft),
        tpot_ms: stats(&mut tpot),
        itl_ms: stats(&mut itl),
        e2e_ms: stats(&mut e2e),
        queue_ms: stats(&mut queue),
        gen_tps: stats(&mut gtps),
        server_prompt_tps: (!sp.is_empty()).then(|| stats(&mut sp)),
        server_gen_tps: (!sg.is_empty()).then(|| stats(&mut sg)),
        prompt_tokens: stats(&mut ptoks),
        output_tokens: stats(&mut otoks),
        output_tps: per_s(out_total as f64),
        request_throughput: per_s(ok as f64),
        wall_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServerTimings;

    fn sample(sent: u64, content: &[u64], last: u64, out: u32) -> Sample {
        Sample {
            sent_us: sent,
            scheduled_us: sent,
            first_chunk_us: Some(content[0].saturating_sub(100)),
            content_us: content.to_vec(),
            last_chunk_us: Some(last),
            completion_tokens: Some(out),
            status: 200,
            ..Sample::default()
        }
    }

    #[test]
    fn percentiles_interpolate() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).rev().collect();
        let s = stats(&mut v);
        assert_eq!((s.min, s.max, s.count), (1.0, 100.0, 100));
        assert!((s.p50 - 50.5).abs() < 1e-9);
        assert!((s.p90 - 90.1).abs() < 1e-9);
        assert!((s.p99 - 99.01).abs() < 1e-9);
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert!((s.std - 28.866_070_047_722_12).abs() < 1e-9);
        assert_eq!(stats(&mut []), Stats::default());
        let mut one = [7.0];
        assert_eq!(stats(&mut one).p99, 7.0);
    }

    #[test]
    fn hand_built_timestamps() {
        // Sent at 1 ms; content at 101, 111, 121, 131 ms; [DONE] at 141 ms; 4 tokens.
        let a = sample(1_000, &[101_000, 111_000, 121_000, 131_000], 141_000, 4);
        assert_eq!(ttft_ms(&a), Some(100.0));
        assert_eq!(e2e_ms(&a), Some(140.0));
        // (140 − 100) / (4 − 1)
        assert!((tpot_ms(&a).unwrap() - 40.0 / 3.0).abs() < 1e-9);
        // A second request: sent 50 ms, TTFT 200 ms, gaps 20 ms, 3 tokens, ends at 300 ms.
        let mut b = sample(50_000, &[250_000, 270_000, 290_000], 300_000, 3);
        b.scheduled_us = 40_000;
        b.timings = Some(ServerTimings {
            prompt_per_second: 500.0,
            predicted_per_second: 50.0,
            ..ServerTimings::default()
        });
        let mut warm = sample(0, &[5_000, 6_000], 7_000, 2);
        warm.warmup = true;
        let mut failed = sample(0, &[5_000], 999_000, 1);
        failed.error = Some("HTTP 500".into());
        let m = cell_metrics([&a, &b, &warm, &failed]);
        assert_eq!(m.ttft_ms.count, 2);
        assert_eq!((m.ttft_ms.min, m.ttft_ms.max), (100.0, 200.0));
        assert_eq!(m.ttft_ms.p50, 150.0);
        // ITL pooled: 10, 10, 10 from a; 20, 20 from b.
        assert_eq!(m.itl_ms.count, 5);
        assert!((m.itl_ms.mean - 14.0).abs() < 1e-9);
        assert_eq!(m.itl_ms.p50, 10.0);
        // TPOT b = (250 − 200)/2 = 25 ms ⇒ 40 tok/s; a = 13.33 ms ⇒ 75 tok/s.
        assert!((m.tpot_ms.max - 25.0).abs() < 1e-9);
        assert!((m.gen_tps.min - 40.0).abs() < 1e-9);
        assert!((m.gen_tps.max - 75.0).abs() < 1e-9);
        // Queue: a 0 ms, b 10 ms.
        assert_eq!(m.queue_ms.max, 10.0);
        // Wall 1 ms → 300 ms; 7 tokens, 2 requests.
        assert!((m.wall_ms - 299.0).abs() < 1e-9);
        assert!((m.output_tps - 7.0 * 1000.0 / 299.0).abs() < 1e-9);
        assert!((m.request_throughput - 2.0 * 1000.0 / 299.0).abs() < 1e-9);
        let sg = m.server_gen_tps.unwrap();
        assert_eq!((sg.count, sg.p50), (1, 50.0));
        assert_eq!(m.server_prompt_tps.unwrap().p50, 500.0);
    }

    #[test]
    fn single_token_has_no_tpot() {
        let a = sample(0, &[10_000], 12_000, 1);
        assert_eq!(tpot_ms(&a), None);
        let m = cell_metrics([&a]);
        assert_eq!(m.tpot_ms.count, 0);
        assert_eq!(m.ttft_ms.p50, 10.0);
        assert_eq!(m.itl_ms.count, 0);
    }

    #[test]
    fn output_tokens_fall_back_to_chunks() {
        let mut a = sample(0, &[1_000, 2_000, 3_000], 3_000, 3);
        a.completion_tokens = None;
        assert_eq!(a.output_tokens(), 3);
        a.timings = Some(ServerTimings {
            predicted_n: 5,
            ..ServerTimings::default()
        });
        assert_eq!(a.output_tokens(), 5);
    }

    proptest::proptest! {
        #[test]
        fn stats_are_ordered(mut v in proptest::collection::vec(-1e6f64..1e6, 1..200)) {
            let s = stats(&mut v);
            proptest::prop_assert!(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.max);
            proptest::prop_assert!(s.min <= s.mean + 1e-6 && s.mean <= s.max + 1e-6);
            proptest::prop_assert!(s.std >= 0.0);
        }
    }
}
