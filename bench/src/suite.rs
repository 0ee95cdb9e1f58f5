//! The suite format: what to measure (a grid of cells), how to load the host, and when to stop.
//!
//! A suite is YAML (or JSON) read by [`Suite::from_yaml`]; unknown fields are rejected and every
//! validation error names the field, e.g. `grid.concurrency[2]: must be ≥ 1`. The format
//! reference with examples is `bench/README.md`; example suites live in `bench/suites/`.

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::regress::Thresholds;

/// A benchmark suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Suite name (used for baselines together with the cell key).
    pub name: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which OpenAI endpoint to drive (default `chat`).
    #[serde(default)]
    pub api: Api,
    /// The grid of cells.
    pub grid: Grid,
    /// How load is applied (default: closed loop at each `grid.concurrency`).
    #[serde(default)]
    pub load: LoadMode,
    /// Warm-up requests per cell, sent before measuring and excluded from all statistics.
    #[serde(default)]
    pub warmup: u32,
    /// When a cell stops.
    #[serde(default)]
    pub limits: Limits,
    /// How the prompt cache is kept from flattering results (default `unique_prefix`).
    #[serde(default)]
    pub cache_prompt: CachePolicy,
    /// Sends `ignore_eos: true` so every reply runs to `max_tokens` (default true).
    #[serde(default = "yes")]
    pub ignore_eos: bool,
    /// Sampling temperature sent with every request (default 0).
    #[serde(default)]
    pub temperature: f64,
    /// Regression thresholds for comparisons against a baseline (defaults: −10 % gen tok/s,
    /// +25 % TTFT p50).
    #[serde(default)]
    pub thresholds: Thresholds,
}

fn yes() -> bool {
    true
}

/// The OpenAI endpoint a suite drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /v1/chat/completions` with one user message.
    #[default]
    Chat,
    /// `POST /v1/completions` with a raw prompt.
    Completions,
}

/// The grid: every combination of prompt length, output length and load level is one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Prompt lengths in tokens (each ≥ 1).
    pub prompt_tokens: Vec<u32>,
    /// `max_tokens` per request (each ≥ 1).
    pub max_tokens: Vec<u32>,
    /// Closed-loop concurrency levels (each ≥ 1; default `[1]`). In `rate` mode unused; in
    /// `sweep` mode the largest is the throughput probe.
    #[serde(default = "one")]
    pub concurrency: Vec<u32>,
    /// Requests per concurrency slot in a closed-loop cell: a cell at concurrency `c` measures
    /// `repetitions × c` requests unless `limits.requests` says otherwise (default 1).
    #[serde(default = "one_u32")]
    pub repetitions: u32,
}

fn one() -> Vec<u32> {
    vec![1]
}
fn one_u32() -> u32 {
    1
}

/// How load is applied within a cell.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum LoadMode {
    /// Closed loop: exactly `concurrency` requests in flight; each finished request starts the next.
    #[default]
    Concurrency,
    /// Open loop: requests arrive as a Poisson process at each rate (requests/s), seeded.
    Rate {
        /// Arrival rates in requests/s (each > 0); one cell per rate.
        rates: Vec<f64>,
        /// Seed of the arrival process (same seed ⇒ same schedule).
        #[serde(default)]
        seed: u64,
        /// Client-side cap on requests in flight (default 256); arrivals beyond it wait and the
        /// wait shows up as queue time.
        #[serde(default = "default_in_flight")]
        max_in_flight: u32,
    },
    /// GuideLLM-style sweep: a concurrency-1 cell (synchronous rate), a cell at the largest
    /// `grid.concurrency` (throughput rate), then `steps − 2` Poisson cells at rates evenly spaced
    /// between the two measured rates.
    Sweep {
        /// Total cells per (prompt, max_tokens) pair, ≥ 2.
        steps: u32,
        /// Seed of the arrival processes.
        #[serde(default)]
        seed: u64,
        /// Client-side cap on requests in flight in the rate cells (default 256).
        #[serde(default = "default_in_flight")]
        max_in_flight: u32,
    },
}

fn default_in_flight() -> u32 {
    256
}

/// When a cell stops (whichever comes first).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Measured requests per cell (overrides `repetitions × concurrency`; required, or
    /// `duration_s`, in `rate` and `sweep` modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// Wall-clock cap per cell in seconds (> 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// The cell stops once this many requests failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<u32>,
    /// The cell stops once failures exceed this fraction (0–1) after at least 10 requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
}

/// How the prompt cache is kept out of the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CachePolicy {
    /// Every request starts with a unique prefix, so no prefix of it is cached.
    #[default]
    UniquePrefix,
    /// Identical prompts, and `cache_prompt: false` in every request (llama.cpp).
    Disabled,
    /// Identical prompts, cache allowed (measures the cached path on purpose).
    Allowed,
}

/// The load level of one cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellLoad {
    /// Closed loop at this concurrency.
    Concurrency(u32),
    /// Open loop at this many requests/s, at most `max_in_flight` in flight.
    Rate {
        /// Requests per second.
        rate: f64,
        /// Client-side in-flight cap.
        max_in_flight: u32,
        /// Arrival seed.
        seed: u64,
    },
}

/// One cell of a suite, for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    /// Stable key: `p{prompt}-g{max_tokens}-c{concurrency}`, `p..-g..-r{rate}` or
    /// `p..-g..-s{step}` (sweep). Baselines are kept per (target, suite, key).
    pub key: String,
    /// Prompt length in tokens.
    pub prompt_tokens: u32,
    /// `max_tokens` per request.
    pub max_tokens: u32,
    /// Load level (for a sweep's rate steps, filled in once the probes have run).
    pub load: CellLoad,
    /// Warm-up requests (excluded).
    pub warmup: u32,
    /// Measured requests (`None` = until `duration_s`).
    pub requests: Option<u32>,
}

impl Suite {
    /// Parses and validates a YAML (or JSON, which is YAML) suite.
    ///
    /// # Errors
    /// [`BenchError::SuiteParse`] for malformed YAML or unknown fields (with line/column),
    /// [`BenchError::InvalidSuite`] naming the field for values out of range.
    pub fn from_yaml(text: &str) -> Result<Suite, BenchError> {
        let suite: Suite =
            serde_yaml_ng::from_str(text).map_err(|e| BenchError::SuiteParse(e.to_string()))?;
        suite.validate()?;
        Ok(suite)
    }

    /// Checks every value; the error names the first offending field.
    ///
    /// # Errors
    /// [`BenchError::InvalidSuite`] with `field` like `grid.concurrency[2]` and the problem.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |field: String, problem: &str| {
            Err(BenchError::InvalidSuite {
                field,
                problem: problem.to_owned(),
            })
        };
        if self.name.trim().is_empty() {
            return bad("name".into(), "must not be empty");
        }
        if self.name.len() > 128 {
            return bad("name".into(), "must be at most 128 characters");
        }
        let lists: [(&str, &Vec<u32>, u32); 3] = [
            ("prompt_tokens", &self.grid.prompt_tokens, 1_000_000),
            ("max_tokens", &self.grid.max_tokens, 1_000_000),
            ("concurrency", &self.grid.concurrency, 4096),
        ];
        for (name, list, max) in lists {
            if list.is_empty() {
                return bad(format!("grid.{name}"), "must list at least one value");
            }
            for (i, v) in list.iter().enumerate() {
                if *v < 1 {
                    return bad(format!("grid.{name}[{i}]"), "must be ≥ 1");
                }
                if *v > max {
                    return bad(format!("grid.{name}[{i}]"), &format!("must be ≤ {max}"));
                }
            }
        }
        if self.grid.repetitions < 1 {
            return bad("grid.repetitions".into(), "must be ≥ 1");
        }
        if self.warmup > 10_000 {
            return bad("warmup".into(), "must be ≤ 10000");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            return bad("temperature".into(), "must be within 0..=2");
        }
        let l = &self.limits;
        if l.requests == Some(0) {
            return bad("limits.requests".into(), "must be ≥ 1");
        }
        if let Some(d) = l.duration_s
            && !(d.is_finite() && d > 0.0)
        {
            return bad(
                "limits.duration_s".into(),
                "must be a positive number of seconds",
            );
        }
        if let Some(r) = l.max_error_rate
            && !(0.0..=1.0).contains(&r)
        {
            return bad("limits.max_error_rate".into(), "must be within 0..=1");
        }
        match &self.load {
            LoadMode::Concurrency => {}
            LoadMode::Rate {
                rates,
                max_in_flight,
                ..
            } => {
                if rates.is_empty() {
                    return bad("load.rates".into(), "must list at least one rate");
                }
                for (i, r) in rates.iter().enumerate() {
                    if !(r.is_finite() && *r > 0.0) {
                        return bad(format!("load.rates[{i}]"), "must be > 0 requests/s");
                    }
                }
                if *max_in_flight < 1 {
                    return bad("load.max_in_flight".into(), "must be ≥ 1");
                }
            }
            LoadMode::Sweep {
                steps,
                max_in_flight,
                ..
            } => {
                if *steps < 2 {
                    return bad("load.steps".into(), "must be ≥ 2");
                }
                if *steps > 64 {
                    return bad("load.steps".into(), "must be ≤ 64");
                }
                if *max_in_flight < 1 {
                    return bad("load.max_in_flight".into(), "must be ≥ 1");
                }
            }
        }
        if !matches!(self.load, LoadMode::Concurrency)
            && l.requests.is_none()
            && l.duration_s.is_none()
        {
            return bad(
                "limits".into(),
                "rate and sweep modes need `requests` or `duration_s`",
            );
        }
        self.thresholds.validate()?;
        Ok(())
    }

    /// The cells known before running, in execution order (prompt, then max_tokens, then
    /// load level). For a sweep, the rate steps carry rate 0 until the probes have run.
    pub fn cells(&self) -> Vec<CellSpec> {
        let mut out = Vec::new();
        for &p in &self.grid.prompt_tokens {
            for &g in &self.grid.max_tokens {
                match &self.load {
                    LoadMode::Concurrency => {
                        for &c in &self.grid.concurrency {
                            out.push(CellSpec {
                                key: format!("p{p}-g{g}-c{c}"),
                                prompt_tokens: p,
                                max_tokens: g,
                                load: CellLoad::Concurrency(c),
                                warmup: self.warmup,
                                requests: Some(
                                    self.limits
                                        .requests
                                        .unwrap_or(self.grid.repetitions.saturating_mul(c)),
                                ),
                            });
                        }
                    }
                    LoadMode::Rate {
                        rates,
                        seed,
                        max_in_flight,
                    } => {
                        for &r in rates {
                            out.push(CellSpec {
                                key: format!("p{p}-g{g}-r{}", fmt_rate(r)),
                                prompt_tokens: p,
                                max_tokens: g,
                                load: CellLoad::Rate {
                                    rate: r,
                                    max_in_flight: *max_in_flight,
                                    seed: *seed,
                                },
                                warmup: self.warmup,
                                requests: self.limits.requests,
                            });
                        }
                    }
                    LoadMode::Sweep {
                        steps,
                        seed,
                        max_in_flight,
                    } => {
                        let cmax = self.grid.concurrency.iter().copied().max().unwrap_or(1);
                        for s in 0..*steps {
                            let load = match s {
                                0 => CellLoad::Concurrency(1),
                                1 => CellLoad::Concurrency(cmax),
                                _ => CellLoad::Rate {
                                    rate: 0.0,
                                    max_in_flight: *max_in_flight,
                                    seed: seed.wrapping_add(u64::from(s)),
                                },
                            };
                            out.push(CellSpec {
                                key: format!("p{p}-g{g}-s{s}"),
                                prompt_tokens: p,
                                max_tokens: g,
                                load,
                                warmup: self.warmup,
                                requests: self.limits.requests,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// Formats a rate for a cell key: `2`, `0.5`, `12.25` (no trailing zeros).
fn fmt_rate(r: f64) -> String {
    let s = format!("{r:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> &'static str {
        "name: t\ngrid:\n  prompt_tokens: [128]\n  max_tokens: [32]\n  concurrency: [1, 2, 4]\n"
    }

    #[test]
    fn parses_defaults_and_cells() {
        let s = Suite::from_yaml(base()).unwrap();
        assert_eq!(s.load, LoadMode::Concurrency);
        assert_eq!(s.cache_prompt, CachePolicy::UniquePrefix);
        assert!(s.ignore_eos);
        let cells = s.cells();
        let keys: Vec<_> = cells.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["p128-g32-c1", "p128-g32-c2", "p128-g32-c4"]);
        assert_eq!(cells[2].requests, Some(4));
    }

    #[test]
    fn errors_name_the_field() {
        let y = base().replace("[1, 2, 4]", "[1, 2, 0]");
        let e = Suite::from_yaml(&y).unwrap_err().to_string();
        assert_eq!(e, "invalid suite: grid.concurrency[2]: must be ≥ 1");
        let y = format!(
            "{}load:\n  mode: rate\n  rates: [1, -2]\nlimits:\n  requests: 5\n",
            base()
        );
        let e = Suite::from_yaml(&y).unwrap_err().to_string();
        assert!(e.contains("load.rates[1]: must be > 0"), "{e}");
        let y = format!("{}load:\n  mode: rate\n  rates: [1]\n", base());
        let e = Suite::from_yaml(&y).unwrap_err().to_string();
        assert!(e.contains("limits: rate and sweep modes need"), "{e}");
        let y = format!("{}bogus: 1\n", base());
        let e = Suite::from_yaml(&y).unwrap_err().to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let y = format!("{}thresholds:\n  gen_tps_drop: 1.5\n", base());
        let e = Suite::from_yaml(&y).unwrap_err().to_string();
        assert!(e.contains("thresholds.gen_tps_drop"), "{e}");
    }

    #[test]
    fn rate_and_sweep_cells() {
        let y = format!(
            "{}load:\n  mode: rate\n  rates: [0.5, 2]\n  seed: 3\nlimits:\n  requests: 10\n",
            base()
        );
        let s = Suite::from_yaml(&y).unwrap();
        let keys: Vec<_> = s.cells().into_iter().map(|c| c.key).collect();
        assert_eq!(keys, ["p128-g32-r0.5", "p128-g32-r2"]);
        let y = format!(
            "{}load:\n  mode: sweep\n  steps: 4\nlimits:\n  duration_s: 2\n",
            base()
        );
        let s = Suite::from_yaml(&y).unwrap();
        let cells = s.cells();
        assert_eq!(cells.len(), 4);
        assert_eq!(cells[1].load, CellLoad::Concurrency(4));
        assert!(matches!(cells[3].load, CellLoad::Rate { .. }));
    }

    #[test]
    fn example_suites_parse() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/suites");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let text = std::fs::read_to_string(&p).unwrap();
            Suite::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
        assert!(n >= 3);
    }
}
