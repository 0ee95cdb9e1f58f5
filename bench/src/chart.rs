//! Charts of benchmark results as SVG and PNG (plotters, pure-Rust backends).
//!
//! * [`ttft_chart`]: TTFT p50 (solid) and p99 (dashed) vs concurrency, one colour per target.
//! * [`gen_tps_chart`]: generation tok/s p50 vs concurrency per target.
//! * [`history_chart`]: generation tok/s over time across runs, one line per cell, with
//!   regression markers (red ×) and polluted runs drawn hollow.
//!
//! Text is laid out (and, in PNGs, rendered) with `ab_glyph` from a font embedded in the
//! binary, so no system fontconfig or font file is needed.
//!
//! ```no_run
//! # fn demo(result: &boo_bench::RunResult) -> Result<(), boo_bench::BenchError> {
//! let files = boo_bench::chart::write_run_charts(result, std::path::Path::new("out"))?;
//! assert!(files.iter().any(|p| p.ends_with("ttft.png")));
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::BenchError;
use crate::model::RunResult;
use crate::suite::CellLoad;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Scalable vector graphics.
    Svg,
    /// PNG bitmap.
    Png,
}

impl Format {
    /// File extension.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Png => "png",
        }
    }
}

/// Chart size in pixels.
const SIZE: (u32, u32) = (960, 600);
const FONT: &str = "sans-serif";

/// Registers the embedded font for bitmap text once per process.
fn ensure_font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT)
            .map_err(|_| "embedded chart font does not parse".to_owned())
    })
    .clone()
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Colour index (series with the same index share a colour).
    pub color: usize,
    /// Dashed line.
    pub dashed: bool,
    /// Points, sorted by x.
    pub points: Vec<(f64, f64)>,
}

/// What [`ttft_chart`] and [`gen_tps_chart`] draw, extracted from a run (exposed for tests
/// and other renderers).
#[derive(Debug, Clone, PartialEq)]
pub struct XyChart {
    /// Title.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Lines.
    pub series: Vec<Series>,
}

/// X value of a cell: its concurrency, or its rate when the run has no concurrency cells.
fn x_of(load: &CellLoad, by_rate: bool) -> Option<f64> {
    match (load, by_rate) {
        (CellLoad::Concurrency(c), false) => Some(f64::from(*c)),
        (CellLoad::Rate { rate, .. }, true) => Some(*rate),
        _ => None,
    }
}

/// One line per target drawn from a cell: (label suffix, dashed, value of the cell).
type Metric = (&'static str, bool, fn(&crate::CellResult) -> Option<f64>);

fn xy(r: &RunResult, title: &str, y_label: &str, metrics: &[Metric]) -> XyChart {
    let by_rate = !r
        .targets
        .iter()
        .flat_map(|t| &t.cells)
        .any(|c| matches!(c.load, CellLoad::Concurrency(_)));
    // one group per (target, prompt, max_tokens); the shape only goes into the label when a
    // run has more than one
    let shapes: std::collections::BTreeSet<(u32, u32)> = r
        .targets
        .iter()
        .flat_map(|t| &t.cells)
        .map(|c| (c.prompt_tokens, c.max_tokens))
        .collect();
    let mut series = Vec::new();
    let mut color = 0;
    for t in &r.targets {
        let mut groups: BTreeMap<(u32, u32), Vec<&crate::CellResult>> = BTreeMap::new();
        for c in &t.cells {
            groups
                .entry((c.prompt_tokens, c.max_tokens))
                .or_default()
                .push(c);
        }
        for ((p, g), cells) in groups {
            let base = if shapes.len() > 1 {
                format!("{} p{p}/g{g}", t.target.id)
            } else {
                t.target.id.clone()
            };
            for (name, dashed, f) in metrics {
                let mut points: Vec<(f64, f64)> = cells
                    .iter()
                    .filter_map(|c| Some((x_of(&c.load, by_rate)?, f(c)?)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                if points.is_empty() {
                    continue;
                }
                let label = if name.is_empty() {
                    base.clone()
                } else {
                    format!("{base} {name}")
                };
                series.push(Series {
                    label,
                    color,
                    dashed: *dashed,
                    points,
                });
            }
            color += 1;
        }
    }
    XyChart {
        title: format!("{title} — {} ({})", r.suite.name, r.id),
        x_label: if by_rate {
            "offered rate (requests/s)".into()
        } else {
            "concurrency".into()
        },
        y_label: y_label.into(),
        series,
    }
}

fn ok_stat(s: &crate::Stats, f: impl Fn(&crate::Stats) -> f64) -> Option<f64> {
    (s.count > 0).then(|| f(s))
}

/// TTFT p50 / p99 vs concurrency per target.
pub fn ttft_data(r: &RunResult) -> XyChart {
    xy(
        r,
        "TTFT vs concurrency",
        "TTFT (ms, first content token)",
        &[
            ("p50", false, |c| ok_stat(&c.metrics.ttft_ms, |s| s.p50)),
            ("p99", true, |c| ok_stat(&c.metrics.ttft_ms, |s| s.p99)),
        ],
    )
}

/// Generation tok/s (per-request p50) vs concurrency per target.
pub fn gen_tps_data(r: &RunResult) -> XyChart {
    xy(
        r,
        "Generation speed vs concurrency",
        "generation tok/s per request (p50)",
        &[("", false, |c| ok_stat(&c.metrics.gen_tps, |s| s.p50))],
    )
}

/// One run's value of one cell in the tok/s-over-time chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// Run id.
    pub run_id: String,
    /// Run start, ms since the Unix epoch.
    pub at_ms: i64,
    /// Line it belongs to (the cell key).
    pub series: String,
    /// Generation tok/s p50.
    pub gen_tps: f64,
    /// Flagged as a regression against the baseline.
    pub regression: bool,
    /// The run was polluted.
    pub polluted: bool,
    /// This run is the baseline of the cell.
    pub baseline: bool,
}

fn chart_err(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::ResultFile {
        path: path.display().to_string(),
        reason: format!("chart: {e}"),
    }
}

/// Runs `draw` on an SVG or PNG backend writing `path`.
macro_rules! on_backend {
    ($path:expr, $fmt:expr, |$root:ident| $body:expr) => {{
        let path: &Path = $path;
        // both backends measure text with the registered font (layout of labels and legends)
        ensure_font().map_err(|e| chart_err(path, e))?;
        match $fmt {
            Format::Svg => {
                let $root = SVGBackend::new(path, SIZE).into_drawing_area();
                let r: Result<(), String> = $body;
                r.map_err(|e| chart_err(path, e))?;
                $root.present().map_err(|e| chart_err(path, e))?;
            }
            Format::Png => {
                let $root = BitMapBackend::new(path, SIZE).into_drawing_area();
                let r: Result<(), String> = $body;
                r.map_err(|e| chart_err(path, e))?;
                $root.present().map_err(|e| chart_err(path, e))?;
            }
        }
        Ok::<(), BenchError>(())
    }};
}

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
        RGBColor(188, 189, 34),
    ];
    C[i % C.len()]
}

fn bounds(points: impl Iterator<Item = (f64, f64)>) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0_f64);
    for (x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if (x1 - x0).abs() < f64::EPSILON {
        (x0, x1) = (x0 - 1.0, x1 + 1.0);
    }
    let pad = (x1 - x0) * 0.04;
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    ((x0 - pad, x1 + pad), (0.0, y1))
}

fn draw_xy<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, c: &XyChart) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let ((x0, x1), (y0, y1)) = bounds(c.series.iter().flat_map(|s| s.points.iter().copied()));
    let mut chart = ChartBuilder::on(root)
        .caption(&c.title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .x_labels(((x1 - x0).ceil() as usize + 1).clamp(2, 12))
        .x_label_formatter(&|v| {
            // whole numbers only (concurrency levels), no repeated labels
            if (v - v.round()).abs() < 1e-6 {
                format!("{}", v.round())
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(e)?;
    if c.series.is_empty() {
        root.draw(&Text::new(
            "no successful measurements",
            (SIZE.0 as i32 / 2 - 110, SIZE.1 as i32 / 2),
            (FONT, 18).into_font(),
        ))
        .map_err(e)?;
    }
    for s in &c.series {
        let color = palette(s.color);
        let style = ShapeStyle::from(color).stroke_width(2);
        let anno = if s.dashed {
            chart
                .draw_series(DashedLineSeries::new(s.points.iter().copied(), 8, 6, style))
                .map_err(e)?
        } else {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), style))
                .map_err(e)?
        };
        let dashed = s.dashed;
        anno.label(&s.label).legend(move |(x, y)| {
            let style = ShapeStyle::from(color).stroke_width(2);
            let gap = if dashed { 5 } else { 0 };
            EmptyElement::at((x, y))
                + PathElement::new(vec![(0, 0), (7, 0)], style)
                + PathElement::new(vec![(7 + gap, 0), (18, 0)], style)
        });
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, color.filled())),
            )
            .map_err(e)?;
    }
    // keep the legend off the high end of the curves
    let rising = c
        .series
        .iter()
        .filter_map(|s| Some((s.points.first()?.1, s.points.last()?.1)))
        .any(|(a, b)| b > a);
    chart
        .configure_series_labels()
        .position(if rising {
            SeriesLabelPosition::UpperLeft
        } else {
            SeriesLabelPosition::UpperRight
        })
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(e)?;
    Ok(())
}

fn draw_history<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    points: &[HistoryPoint],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    // x = run index in time order; labels show the run's date
    let mut runs: Vec<(i64, &str)> = points
        .iter()
        .map(|p| (p.at_ms, p.run_id.as_str()))
        .collect();
    runs.sort_unstable();
    runs.dedup();
    let index = |p: &HistoryPoint| {
        runs.iter()
            .position(|r| r.1 == p.run_id && r.0 == p.at_ms)
            .unwrap_or(0) as f64
    };
    let ((x0, x1), (y0, y1)) = bounds(points.iter().map(|p| (index(p), p.gen_tps)));
    // half width of the box around a baseline point
    let bw = (x1 - x0) * 0.008;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    let label = |v: &f64| {
        let i = v.round();
        if (v - i).abs() > 0.01 || i < 0.0 {
            return String::new();
        }
        runs.get(i as usize)
            .and_then(|(ms, _)| chrono::DateTime::from_timestamp_millis(*ms))
            .map(|t| t.format("%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    chart
        .configure_mesh()
        .x_desc("run (start time, UTC)")
        .y_desc("generation tok/s per request (p50)")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .x_labels(runs.len().clamp(2, 12))
        .x_label_formatter(&label)
        .draw()
        .map_err(e)?;
    let mut lines: BTreeMap<&str, Vec<&HistoryPoint>> = BTreeMap::new();
    for p in points {
        lines.entry(p.series.as_str()).or_default().push(p);
    }
    for (i, (name, mut pts)) in lines.into_iter().enumerate() {
        pts.sort_by(|a, b| index(a).total_cmp(&index(b)));
        let color = palette(i);
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|p| (index(p), p.gen_tps)),
                ShapeStyle::from(color).stroke_width(2),
            ))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 18, y)],
                    ShapeStyle::from(color).stroke_width(2),
                )
            });
        for p in &pts {
            let at = (index(p), p.gen_tps);
            let style = if p.polluted {
                ShapeStyle::from(color).stroke_width(2)
            } else {
                color.filled()
            };
            chart.draw_series([Circle::new(at, 4, style)]).map_err(e)?;
            if p.baseline {
                chart
                    .draw_series([Rectangle::new(
                        [(at.0 - bw, at.1 * 0.985), (at.0 + bw, at.1 * 1.015)],
                        ShapeStyle::from(BLACK).stroke_width(1),
                    )])
                    .map_err(e)?;
            }
            if p.regression {
                chart
                    .draw_series([Cross::new(at, 9, ShapeStyle::from(RED).stroke_width(3))])
                    .map_err(e)?;
            }
        }
    }
    // legend entries for the markers
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
        .map_err(e)?
        .label("red × regression vs baseline; hollow = polluted; boxed = baseline")
        .legend(|(x, y)| Cross::new((x + 8, y), 5, ShapeStyle::from(RED).stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Draws [`ttft_data`] of `r` into `path`.
///
/// # Errors
/// [`BenchError::ResultFile`] when the file cannot be written.
pub fn ttft_chart(r: &RunResult, path: &Path, fmt: Format) -> Result<(), BenchError> {
    let data = ttft_data(r);
    on_backend!(path, fmt, |root| draw_xy(&root, &data))
}

/// Draws [`gen_tps_data`] of `r` into `path`.
///
/// # Errors
/// [`BenchError::ResultFile`] when the file cannot be written.
pub fn gen_tps_chart(r: &RunResult, path: &Path, fmt: Format) -> Result<(), BenchError> {
    let data = gen_tps_data(r);
    on_backend!(path, fmt, |root| draw_xy(&root, &data))
}

/// Draws the tok/s-over-time chart of `points` into `path`.
///
/// # Errors
/// [`BenchError::ResultFile`] when the file cannot be written.
pub fn history_chart(
    title: &str,
    points: &[HistoryPoint],
    path: &Path,
    fmt: Format,
) -> Result<(), BenchError> {
    on_backend!(path, fmt, |root| draw_history(&root, title, points))
}

/// Writes `ttft.{svg,png}` and `gen_tps.{svg,png}` of `r` into `dir` (created if missing) and
/// returns the paths.
///
/// # Errors
/// [`BenchError::ResultFile`] when a file cannot be written.
pub fn write_run_charts(r: &RunResult, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| chart_err(dir, e))?;
    let mut out = Vec::new();
    for fmt in [Format::Svg, Format::Png] {
        let p = dir.join(format!("ttft.{}", fmt.ext()));
        ttft_chart(r, &p, fmt)?;
        out.push(p);
        let p = dir.join(format!("gen_tps.{}", fmt.ext()));
        gen_tps_chart(r, &p, fmt)?;
        out.push(p);
    }
    Ok(out)
}

/// Writes `history-<name>.{svg,png}` into `dir` and returns the paths.
///
/// # Errors
/// [`BenchError::ResultFile`] when a file cannot be written.
pub fn write_history_charts(
    title: &str,
    name: &str,
    points: &[HistoryPoint],
    dir: &Path,
) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| chart_err(dir, e))?;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = Vec::new();
    for fmt in [Format::Svg, Format::Png] {
        let p = dir.join(format!("history-{safe}.{}", fmt.ext()));
        history_chart(title, points, &p, fmt)?;
        out.push(p);
    }
    Ok(out)
}
