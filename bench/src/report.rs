//! Plain-text tables of results and comparisons (Markdown pipes, readable in a terminal).

use std::fmt::Write as _;

use crate::model::{RunResult, Stats};
use crate::regress::{Comparison, Verdict};
use crate::suite::CellLoad;

fn load(l: &CellLoad) -> String {
    match l {
        CellLoad::Concurrency(c) => format!("c={c}"),
        CellLoad::Rate { rate, .. } => format!("{rate:.2}/s"),
    }
}

fn opt(s: Option<&Stats>) -> String {
    s.map_or_else(|| "–".to_owned(), |s| format!("{:.1}", s.p50))
}

/// One row per (target, cell): requests, TTFT p50/p99, TPOT p50, ITL p50, gen tok/s p50,
/// server gen tok/s p50, output tok/s, requests/s, queue p99 and flags; then load times and
/// pollution per target.
pub fn result_table(r: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| target | cell | load | ok/req | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | ITL p50 ms | gen tok/s p50 | server gen tok/s | server prompt tok/s | output tok/s | req/s | queue p99 ms | flags |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for t in &r.targets {
        for c in &t.cells {
            let m = &c.metrics;
            let mut flags = Vec::new();
            if c.polluted {
                flags.push("polluted".to_owned());
            }
            if c.errors > 0 {
                flags.push(format!("{} errors", c.errors));
            }
            if !matches!(c.stopped, crate::model::StopReason::Completed) {
                flags.push(format!("stopped: {:?}", c.stopped).to_lowercase());
            }
            let _ = writeln!(
                out,
                "| {} | {} | {} | {}/{} | {:.1} | {:.1} | {:.2} | {:.2} | {:.1} | {} | {} | {:.1} | {:.2} | {:.1} | {} |",
                t.target.id,
                c.key,
                load(&c.load),
                c.ok,
                c.requests,
                m.ttft_ms.p50,
                m.ttft_ms.p99,
                m.tpot_ms.p50,
                m.itl_ms.p50,
                m.gen_tps.p50,
                opt(m.server_gen_tps.as_ref()),
                opt(m.server_prompt_tps.as_ref()),
                m.output_tps,
                m.request_throughput,
                m.queue_ms.p99,
                flags.join(", ")
            );
        }
    }
    for t in &r.targets {
        let _ = write!(
            out,
            "\n{}: {:?}, model load {}",
            t.target.id,
            t.status,
            if t.load.already_loaded {
                "none (already loaded)".to_owned()
            } else {
                format!("{:.0} ms (not in any cell)", t.load.load_ms)
            }
        );
        if let Some(e) = &t.error {
            let _ = write!(out, ", error: {e}");
        }
        if t.polluted {
            let _ = write!(
                out,
                ", POLLUTED ({} foreign requests): {:?}",
                t.concurrent_foreign_requests, t.pollution
            );
        }
    }
    out.push('\n');
    out
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.3}"))
}

/// One row per matched cell: ratios (current / baseline) and the verdict.
pub fn comparison_table(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} (current) vs {} (baseline); regression: gen tok/s −{:.0} %, TTFT p50 +{:.0} %",
        c.current_run,
        c.baseline_run,
        c.thresholds.gen_tps_drop * 100.0,
        c.thresholds.ttft_p50_rise * 100.0
    );
    let _ = writeln!(
        out,
        "| target | cell | gen tok/s | TTFT p50 | TTFT p99 | E2E p50 | output tok/s | req/s | verdict |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for x in &c.cells {
        let v = match &x.verdict {
            Verdict::Ok => "ok".to_owned(),
            Verdict::Regression { reasons } => format!("REGRESSION: {}", reasons.join("; ")),
            Verdict::Incomparable { reason } => format!("incomparable: {reason}"),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            x.target,
            x.key,
            ratio(x.gen_tps_ratio),
            ratio(x.ttft_p50_ratio),
            ratio(x.ttft_p99_ratio),
            ratio(x.e2e_p50_ratio),
            ratio(x.output_tps_ratio),
            ratio(x.request_throughput_ratio),
            v
        );
    }
    if !c.unmatched.is_empty() {
        let _ = writeln!(out, "\nno baseline cell for: {}", c.unmatched.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regress::{CellComparison, Thresholds};

    #[test]
    fn comparison_rows_show_ratios_and_verdicts() {
        let c = Comparison {
            baseline_run: "a".into(),
            current_run: "b".into(),
            thresholds: Thresholds::default(),
            cells: vec![CellComparison {
                target: "t".into(),
                baseline_target: "t".into(),
                key: "p1-g1-c1".into(),
                gen_tps_ratio: Some(0.85),
                ttft_p50_ratio: Some(1.0),
                ttft_p99_ratio: None,
                e2e_p50_ratio: Some(1.1),
                output_tps_ratio: Some(0.9),
                request_throughput_ratio: Some(0.9),
                verdict: Verdict::Regression {
                    reasons: vec!["gen tok/s p50 -15.0 % (limit −10 %)".into()],
                },
            }],
            unmatched: vec!["t/p2-g1-c1".into()],
        };
        let t = comparison_table(&c);
        assert!(t.contains("| t | p1-g1-c1 | 0.850 | 1.000 | – | 1.100 | 0.900 | 0.900 | REGRESSION: gen tok/s p50 -15.0 %"), "{t}");
        assert!(t.contains("no baseline cell for: t/p2-g1-c1"));
    }
}
