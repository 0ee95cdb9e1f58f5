//! Prometheus metrics built from atomics: counters, an in-flight gauge and fixed-bucket
//! histograms per provider + model. Rendering happens only on `GET /metrics`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds (10 µs … 300 s).
const BOUNDS: [f64; 22] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A lock-free fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let idx = BOUNDS.iter().position(|b| s <= *b).unwrap_or(BOUNDS.len());
        self.buckets[idx].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0u64;
        for (i, b) in BOUNDS.iter().enumerate() {
            cum += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
        }
        cum += self.buckets[BOUNDS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count.load(Relaxed));
    }
}

/// Counters and histograms of one provider + model.
#[derive(Debug, Default)]
pub struct Series {
    /// Finished requests.
    pub requests: AtomicU64,
    /// Requests that ended with an error status or a broken stream.
    pub errors: AtomicU64,
    /// Requests currently in flight.
    pub in_flight: AtomicI64,
    /// Time from sending upstream to the upstream's response headers.
    pub upstream_latency: Histogram,
    /// Time to the first real token (streams only).
    pub ttft: Histogram,
    /// Time spent inside the gateway.
    pub overhead: Histogram,
}

/// Composite model → (provider, series).
type SeriesMap = HashMap<Box<str>, (Box<str>, Arc<Series>)>;
type CounterGetter = fn(&Series) -> f64;
type HistGetter = fn(&Series) -> &Histogram;

/// All gateway metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Keyed by the composite model (which already names the provider).
    series: RwLock<SeriesMap>,
    unrouted: Series,
}

impl Metrics {
    /// New, empty metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Series for requests that never got a provider (bad input, unknown provider…).
    pub fn unrouted(&self) -> &Series {
        &self.unrouted
    }

    /// The series of `model` (a composite id) served by `provider`; created on first use, the
    /// hot path takes only a read lock and does not allocate.
    pub fn series(&self, provider: &str, model: &str) -> Arc<Series> {
        {
            let map = self.series.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, s)) = map.get(model) {
                return s.clone();
            }
        }
        let mut map = self.series.write().unwrap_or_else(|e| e.into_inner());
        map.entry(model.into())
            .or_insert_with(|| (provider.into(), Arc::default()))
            .1
            .clone()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let map = self.series.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<(String, &Series)> = map
            .iter()
            .map(|(m, (p, s))| {
                (
                    format!("provider=\"{}\",model=\"{}\"", esc(p), esc(m)),
                    &**s,
                )
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.insert(0, ("provider=\"\",model=\"\"".to_string(), &self.unrouted));
        let counters: [(&str, &str, CounterGetter); 3] = [
            ("boo_gateway_requests_total", "counter", |s| {
                s.requests.load(Relaxed) as f64
            }),
            ("boo_gateway_errors_total", "counter", |s| {
                s.errors.load(Relaxed) as f64
            }),
            ("boo_gateway_in_flight", "gauge", |s| {
                s.in_flight.load(Relaxed) as f64
            }),
        ];
        for (name, kind, get) in counters {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (l, s) in &all {
                let _ = writeln!(out, "{name}{{{l}}} {}", get(s));
            }
        }
        let hists: [(&str, HistGetter); 3] = [
            ("boo_gateway_upstream_latency_seconds", |s| {
                &s.upstream_latency
            }),
            ("boo_gateway_ttft_seconds", |s| &s.ttft),
            ("boo_gateway_overhead_seconds", |s| &s.overhead),
        ];
        for (name, get) in hists {
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (l, s) in &all {
                get(s).render(&mut out, name, l);
            }
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_series_are_labelled() {
        let m = Metrics::new();
        let s = m.series("sam-desktop", "sam-desktop/qwen");
        s.requests.fetch_add(2, Relaxed);
        s.overhead.observe(Duration::from_micros(20));
        s.overhead.observe(Duration::from_millis(2));
        assert!(Arc::ptr_eq(
            &s,
            &m.series("sam-desktop", "sam-desktop/qwen")
        ));
        let text = m.render();
        assert!(text.contains(
            "boo_gateway_requests_total{provider=\"sam-desktop\",model=\"sam-desktop/qwen\"} 2"
        ));
        assert!(text.contains(
            "boo_gateway_overhead_seconds_bucket{provider=\"sam-desktop\",model=\"sam-desktop/qwen\",le=\"0.000025\"} 1"
        ));
        assert!(text.contains(
            "boo_gateway_overhead_seconds_bucket{provider=\"sam-desktop\",model=\"sam-desktop/qwen\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("boo_gateway_overhead_seconds_count{provider=\"sam-desktop\",model=\"sam-desktop/qwen\"} 2"));
    }
}
