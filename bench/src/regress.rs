//! Baselines and regressions: pure comparisons of cells and runs.
//!
//! A cell regresses against its baseline when its generation speed (per-request gen tok/s p50,
//! client-measured) drops by more than [`Thresholds::gen_tps_drop`] or its TTFT p50 rises by
//! more than [`Thresholds::ttft_p50_rise`]. Ratios are `current / baseline`.

use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::model::{CellResult, RunResult};

/// Regression thresholds (fractions).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Regression when gen tok/s p50 falls by more than this fraction (default 0.10 = −10 %).
    pub gen_tps_drop: f64,
    /// Regression when TTFT p50 rises by more than this fraction (default 0.25 = +25 %).
    pub ttft_p50_rise: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            gen_tps_drop: 0.10,
            ttft_p50_rise: 0.25,
        }
    }
}

impl Thresholds {
    /// Checks the ranges; errors name the field.
    ///
    /// # Errors
    /// [`BenchError::InvalidSuite`] for `thresholds.gen_tps_drop` outside 0..1 or a negative
    /// `thresholds.ttft_p50_rise`.
    pub fn validate(&self) -> Result<(), BenchError> {
        if !(self.gen_tps_drop.is_finite() && (0.0..1.0).contains(&self.gen_tps_drop)) {
            return Err(BenchError::InvalidSuite {
                field: "thresholds.gen_tps_drop".into(),
                problem: "must be a fraction within 0..1 (0.10 = −10 %)".into(),
            });
        }
        if !(self.ttft_p50_rise.is_finite() && self.ttft_p50_rise >= 0.0) {
            return Err(BenchError::InvalidSuite {
                field: "thresholds.ttft_p50_rise".into(),
                problem: "must be a fraction ≥ 0 (0.25 = +25 %)".into(),
            });
        }
        Ok(())
    }
}

/// The verdict for one cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Within thresholds.
    Ok,
    /// Worse than the baseline; each reason names the metric and the change.
    Regression {
        /// E.g. `gen tok/s p50 −15.2 % (limit −10 %)`.
        reasons: Vec<String>,
    },
    /// Nothing to compare (a side has no successful requests).
    Incomparable {
        /// Why.
        reason: String,
    },
}

impl Verdict {
    /// Whether this is a regression.
    pub fn is_regression(&self) -> bool {
        matches!(self, Verdict::Regression { .. })
    }
}

/// One cell, current against baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellComparison {
    /// Target id of the current run's cell.
    pub target: String,
    /// Target id of the baseline's cell.
    pub baseline_target: String,
    /// Cell key.
    pub key: String,
    /// gen tok/s p50 ratio (current / baseline).
    pub gen_tps_ratio: Option<f64>,
    /// TTFT p50 ratio.
    pub ttft_p50_ratio: Option<f64>,
    /// TTFT p99 ratio.
    pub ttft_p99_ratio: Option<f64>,
    /// E2E p50 ratio.
    pub e2e_p50_ratio: Option<f64>,
    /// Output tok/s ratio (aggregate throughput).
    pub output_tps_ratio: Option<f64>,
    /// Request throughput ratio.
    pub request_throughput_ratio: Option<f64>,
    /// The verdict.
    pub verdict: Verdict,
}

fn ratio(cur: f64, base: f64) -> Option<f64> {
    (base > 0.0 && cur.is_finite()).then(|| cur / base)
}

/// Compares one cell with its baseline.
pub fn compare_cell(
    baseline: &CellResult,
    current: &CellResult,
    th: &Thresholds,
) -> (Verdict, CellRatios) {
    let (b, c) = (&baseline.metrics, &current.metrics);
    let r = CellRatios {
        gen_tps: ratio(c.gen_tps.p50, b.gen_tps.p50),
        ttft_p50: ratio(c.ttft_ms.p50, b.ttft_ms.p50),
        ttft_p99: ratio(c.ttft_ms.p99, b.ttft_ms.p99),
        e2e_p50: ratio(c.e2e_ms.p50, b.e2e_ms.p50),
        output_tps: ratio(c.output_tps, b.output_tps),
        request_throughput: ratio(c.request_throughput, b.request_throughput),
    };
    if baseline.ok == 0 || current.ok == 0 {
        let side = if baseline.ok == 0 {
            "baseline"
        } else {
            "current run"
        };
        return (
            Verdict::Incomparable {
                reason: format!("{side} has no successful requests in {}", current.key),
            },
            r,
        );
    }
    let mut reasons = Vec::new();
    if let Some(g) = r.gen_tps
        && g < 1.0 - th.gen_tps_drop
    {
        reasons.push(format!(
            "gen tok/s p50 {:+.1} % (limit −{:.0} %)",
            (g - 1.0) * 100.0,
            th.gen_tps_drop * 100.0
        ));
    }
    if let Some(t) = r.ttft_p50
        && t > 1.0 + th.ttft_p50_rise
    {
        reasons.push(format!(
            "TTFT p50 {:+.1} % (limit +{:.0} %)",
            (t - 1.0) * 100.0,
            th.ttft_p50_rise * 100.0
        ));
    }
    let v = if reasons.is_empty() {
        Verdict::Ok
    } else {
        Verdict::Regression { reasons }
    };
    (v, r)
}

/// Ratios of one cell (current / baseline); `None` when the baseline value is 0.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CellRatios {
    /// gen tok/s p50.
    pub gen_tps: Option<f64>,
    /// TTFT p50.
    pub ttft_p50: Option<f64>,
    /// TTFT p99.
    pub ttft_p99: Option<f64>,
    /// E2E p50.
    pub e2e_p50: Option<f64>,
    /// Output tok/s.
    pub output_tps: Option<f64>,
    /// Requests/s.
    pub request_throughput: Option<f64>,
}

/// Two runs compared cell by cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Baseline run id.
    pub baseline_run: String,
    /// Current run id.
    pub current_run: String,
    /// Thresholds used.
    pub thresholds: Thresholds,
    /// Matched cells, in the current run's order.
    pub cells: Vec<CellComparison>,
    /// Cells of the current run without a counterpart (`target/key`).
    pub unmatched: Vec<String>,
}

impl Comparison {
    /// Cells flagged as regressions.
    pub fn regressions(&self) -> usize {
        self.cells
            .iter()
            .filter(|c| c.verdict.is_regression())
            .count()
    }
}

/// Compares run `current` with run `baseline` per cell. Cells match by (target id, key); when
/// each run has exactly one target (e.g. two quants of one model) they match by key alone.
/// `th` defaults to the current run's suite thresholds.
pub fn compare_runs(
    baseline: &RunResult,
    current: &RunResult,
    th: Option<&Thresholds>,
) -> Comparison {
    let th = th.copied().unwrap_or(current.suite.thresholds);
    let single = baseline.targets.len() == 1 && current.targets.len() == 1;
    let mut cells = Vec::new();
    let mut unmatched = Vec::new();
    for t in &current.targets {
        for c in &t.cells {
            let base = if single {
                baseline.targets[0]
                    .cells
                    .iter()
                    .find(|b| b.key == c.key)
                    .map(|b| (&baseline.targets[0].target.id, b))
            } else {
                baseline
                    .cell(&t.target.id, &c.key)
                    .map(|b| (&t.target.id, b))
            };
            let Some((bt, b)) = base else {
                unmatched.push(format!("{}/{}", t.target.id, c.key));
                continue;
            };
            let (verdict, r) = compare_cell(b, c, &th);
            cells.push(CellComparison {
                target: t.target.id.clone(),
                baseline_target: bt.clone(),
                key: c.key.clone(),
                gen_tps_ratio: r.gen_tps,
                ttft_p50_ratio: r.ttft_p50,
                ttft_p99_ratio: r.ttft_p99,
                e2e_p50_ratio: r.e2e_p50,
                output_tps_ratio: r.output_tps,
                request_throughput_ratio: r.request_throughput,
                verdict,
            });
        }
    }
    Comparison {
        baseline_run: baseline.id.clone(),
        current_run: current.id.clone(),
        thresholds: th,
        cells,
        unmatched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CellMetrics, Stats, StopReason};
    use crate::suite::CellLoad;

    fn cell(gtps: f64, ttft: f64) -> CellResult {
        CellResult {
            key: "p128-g32-c1".into(),
            prompt_tokens: 128,
            max_tokens: 32,
            load: CellLoad::Concurrency(1),
            requests: 4,
            ok: 4,
            errors: 0,
            warmup: 0,
            error_examples: vec![],
            metrics: CellMetrics {
                gen_tps: Stats {
                    p50: gtps,
                    ..Stats::default()
                },
                ttft_ms: Stats {
                    p50: ttft,
                    p99: ttft,
                    ..Stats::default()
                },
                ..CellMetrics::default()
            },
            stopped: StopReason::Completed,
            polluted: false,
            foreign_requests: 0,
        }
    }

    #[test]
    fn gen_drop_threshold() {
        let th = Thresholds::default();
        let base = cell(100.0, 50.0);
        assert_eq!(compare_cell(&base, &cell(95.0, 50.0), &th).0, Verdict::Ok);
        let (v, r) = compare_cell(&base, &cell(85.0, 50.0), &th);
        assert!(v.is_regression(), "{v:?}");
        assert!((r.gen_tps.unwrap() - 0.85).abs() < 1e-12);
        let Verdict::Regression { reasons } = v else {
            unreachable!()
        };
        assert_eq!(reasons, ["gen tok/s p50 -15.0 % (limit −10 %)"]);
        // Exactly at the limit is not a regression; faster is never one.
        assert_eq!(compare_cell(&base, &cell(90.0, 50.0), &th).0, Verdict::Ok);
        assert_eq!(compare_cell(&base, &cell(200.0, 50.0), &th).0, Verdict::Ok);
    }

    #[test]
    fn ttft_rise_threshold_and_custom() {
        let base = cell(100.0, 100.0);
        let th = Thresholds::default();
        assert!(
            !compare_cell(&base, &cell(100.0, 120.0), &th)
                .0
                .is_regression()
        );
        assert!(
            compare_cell(&base, &cell(100.0, 130.0), &th)
                .0
                .is_regression()
        );
        let strict = Thresholds {
            gen_tps_drop: 0.03,
            ttft_p50_rise: 0.05,
        };
        assert!(
            compare_cell(&base, &cell(95.0, 100.0), &strict)
                .0
                .is_regression()
        );
        assert!(
            compare_cell(&base, &cell(100.0, 110.0), &strict)
                .0
                .is_regression()
        );
    }

    #[test]
    fn empty_side_is_incomparable() {
        let mut cur = cell(0.0, 0.0);
        cur.ok = 0;
        let (v, _) = compare_cell(&cell(100.0, 10.0), &cur, &Thresholds::default());
        assert!(matches!(v, Verdict::Incomparable { .. }));
    }
}
