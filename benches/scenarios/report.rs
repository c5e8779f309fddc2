//! Figures, tables, JSON and the lateness histogram.

use std::path::Path;

use anyhow::Context as _;
use serde_json::{Map, Value, json};

/// Nearest-rank percentile of sorted values; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut values = values.to_vec();
    values.sort_by(|a, b| a.total_cmp(b));
    values
}

pub fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

pub fn median(values: &[f64]) -> f64 {
    let values: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if values.is_empty() {
        return f64::NAN;
    }
    let sorted = sorted(&values);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Ms,
    Seconds,
    Count,
    PerSecond,
    Bytes,
    MiB,
    Cores,
}

impl Unit {
    fn suffix(self) -> &'static str {
        match self {
            Unit::Ms => "ms",
            Unit::Seconds => "s",
            Unit::Count => "",
            Unit::PerSecond => "/s",
            Unit::Bytes => "B",
            Unit::MiB => "MiB",
            Unit::Cores => "cores",
        }
    }

    fn format(self, value: f64) -> String {
        if value.is_nan() {
            return "n/a".into();
        }
        match self {
            Unit::Ms => format!("{value:.3}"),
            Unit::Seconds => format!("{value:.3}"),
            Unit::MiB => format!("{value:.1}"),
            Unit::Cores => format!("{value:.2}"),
            Unit::Count | Unit::PerSecond | Unit::Bytes => thousands(value.round() as i64),
        }
    }
}

pub fn thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0 { format!("-{out}") } else { out }
}

/// A target a figure should meet.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    AtMost(f64),
    AtLeast(f64),
    Below(f64),
}

impl Target {
    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtMost(limit) => value <= limit,
            Target::AtLeast(limit) => value >= limit,
            Target::Below(limit) => value < limit,
        }
    }

    fn describe(self, unit: Unit) -> String {
        let (sign, limit) = match self {
            Target::AtMost(limit) => ("<=", limit),
            Target::AtLeast(limit) => (">=", limit),
            Target::Below(limit) => ("<", limit),
        };
        let limit = match unit {
            Unit::Ms | Unit::Seconds | Unit::MiB | Unit::Cores => format!("{limit}"),
            _ => thousands(limit as i64),
        };
        format!("{sign} {limit} {}", unit.suffix())
            .trim_end()
            .to_owned()
    }
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: Unit,
    pub target: Option<Target>,
}

/// One scenario on one backend: parameters, and the figures of each run.
pub struct Report {
    pub scenario: &'static str,
    pub backend: &'static str,
    pub title: String,
    pub params: Vec<(&'static str, Value)>,
    pub metrics: Vec<Metric>,
    /// One value per metric per run.
    pub runs: Vec<Vec<f64>>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str, backend: &'static str, title: String) -> Self {
        Self {
            scenario,
            backend,
            title,
            params: Vec::new(),
            metrics: Vec::new(),
            runs: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn param(&mut self, key: &'static str, value: impl Into<Value>) {
        self.params.push((key, value.into()));
    }

    pub fn metric(
        &mut self,
        key: &'static str,
        label: &'static str,
        unit: Unit,
        target: Option<Target>,
    ) {
        self.metrics.push(Metric {
            key,
            label,
            unit,
            target,
        });
    }

    /// Adds a run; `values` are by key and must name every metric.
    pub fn run(&mut self, values: &[(&'static str, f64)]) {
        let row = self
            .metrics
            .iter()
            .map(|metric| {
                values
                    .iter()
                    .find(|(key, _)| *key == metric.key)
                    .map(|(_, value)| *value)
                    .unwrap_or(f64::NAN)
            })
            .collect();
        self.runs.push(row);
    }

    /// The value of each metric: the run's, or the median of the runs.
    pub fn summary(&self) -> Vec<f64> {
        (0..self.metrics.len())
            .map(|i| median(&self.runs.iter().map(|run| run[i]).collect::<Vec<_>>()))
            .collect()
    }

    /// Metrics with a target that the summary misses.
    pub fn missed_targets(&self) -> Vec<String> {
        let summary = self.summary();
        self.metrics
            .iter()
            .zip(summary)
            .filter_map(|(metric, value)| {
                let target = metric.target?;
                (!target.met(value)).then(|| {
                    format!(
                        "{} {}: {} {} (target {})",
                        self.scenario,
                        self.backend,
                        metric.label,
                        metric.unit.format(value),
                        target.describe(metric.unit)
                    )
                })
            })
            .collect()
    }

    /// The plain-text table.
    pub fn table(&self) -> String {
        let multi = self.runs.len() > 1;
        let mut header = vec!["metric".to_owned(), "unit".to_owned()];
        if multi {
            for i in 0..self.runs.len() {
                header.push(format!("run {}", i + 1));
            }
            header.push("median".into());
        } else {
            header.push("value".into());
        }
        header.push("target".into());
        header.push("met".into());
        let summary = self.summary();
        let mut rows = vec![header];
        for (i, metric) in self.metrics.iter().enumerate() {
            let mut row = vec![metric.label.to_owned(), metric.unit.suffix().to_owned()];
            if multi {
                for run in &self.runs {
                    row.push(metric.unit.format(run[i]));
                }
            }
            row.push(metric.unit.format(summary[i]));
            match metric.target {
                Some(target) => {
                    row.push(target.describe(metric.unit));
                    row.push(if target.met(summary[i]) { "yes" } else { "NO" }.into());
                }
                None => {
                    row.push(String::new());
                    row.push(String::new());
                }
            }
            rows.push(row);
        }
        let columns = rows[0].len();
        let widths: Vec<usize> = (0..columns)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = format!("{} [{}]\n", self.title, self.backend);
        for (key, value) in &self.params {
            out.push_str(&format!("  {key}: {value}\n"));
        }
        for (r, row) in rows.iter().enumerate() {
            let mut line = String::from("  ");
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                // Text columns to the left, figures to the right.
                if c == 0 || c == 1 || c >= columns - 2 {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                } else {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                }
                line.push_str("  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
            if r == 0 {
                let total: usize = widths.iter().sum::<usize>() + 2 * (columns - 1);
                out.push_str(&format!("  {}\n", "-".repeat(total)));
            }
        }
        for note in &self.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        out
    }

    pub fn to_json(&self) -> Value {
        let by_key = |values: &[f64]| {
            let mut map = Map::new();
            for (metric, value) in self.metrics.iter().zip(values) {
                map.insert(
                    metric.key.to_owned(),
                    if value.is_nan() {
                        Value::Null
                    } else {
                        json!(value)
                    },
                );
            }
            Value::Object(map)
        };
        let units: Map<String, Value> = self
            .metrics
            .iter()
            .map(|m| (m.key.to_owned(), json!(m.unit.suffix())))
            .collect();
        let targets: Map<String, Value> = self
            .metrics
            .iter()
            .filter_map(|m| Some((m.key.to_owned(), json!(m.target?.describe(m.unit)))))
            .collect();
        let params: Map<String, Value> = self
            .params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        json!({
            "scenario": self.scenario,
            "backend": self.backend,
            "title": self.title,
            "measured_at": chrono::Utc::now().to_rfc3339(),
            "params": params,
            "units": units,
            "targets": targets,
            "runs": self.runs.iter().map(|run| by_key(run)).collect::<Vec<_>>(),
            "summary": by_key(&self.summary()),
            "summary_is": if self.runs.len() > 1 { "median of runs" } else { "the single run" },
            "missed_targets": self.missed_targets(),
            "notes": self.notes,
        })
    }

    pub fn write_json(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}-{}.json", self.scenario, self.backend));
        let text = serde_json::to_string_pretty(&self.to_json())?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Draws a histogram of lateness (ms) to an SVG file.
pub fn lateness_histogram(path: &Path, title: &str, lateness_ms: &[f64]) -> anyhow::Result<()> {
    use plotters::prelude::*;

    let sorted = sorted(lateness_ms);
    if sorted.is_empty() {
        return Ok(());
    }
    let p50 = percentile(&sorted, 50.0);
    let p99 = percentile(&sorted, 99.0);
    let max = percentile(&sorted, 100.0);
    let low = sorted[0].min(0.0);
    // Show the bulk; posts beyond the right edge are counted in the caption.
    let high = (p99 * 2.0).max(p50 * 3.0).max(1.0).min(max.max(1.0)).ceil();
    let bins = 100usize;
    let width = (high - low) / bins as f64;
    let mut counts = vec![0u32; bins];
    let mut beyond = 0usize;
    for &v in &sorted {
        if v > high {
            beyond += 1;
            continue;
        }
        let bin = (((v - low) / width) as usize).min(bins - 1);
        counts[bin] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);

    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let caption = if beyond > 0 {
        format!(
            "{title}: {} posts, p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms ({beyond} beyond {high} ms not shown)",
            sorted.len()
        )
    } else {
        format!(
            "{title}: {} posts, p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms",
            sorted.len()
        )
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 15))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(low..high, 0u32..(top + top / 10 + 1))
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .x_desc("lateness: receive time - scheduled instant (ms)")
        .y_desc("posts")
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, &count)| {
                    let x0 = low + i as f64 * width;
                    Rectangle::new([(x0, 0), (x0 + width, count)], BLUE.mix(0.7).filled())
                }),
        )
        .map_err(plot_error)?;
    for (value, label, color) in [(p50, "p50", GREEN), (p99, "p99", RED)] {
        if value <= high {
            chart
                .draw_series(LineSeries::new(
                    [(value, 0), (value, top)],
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(format!("{label} {value:.3} ms"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(plot_error)?;
    root.present().map_err(plot_error)?;
    Ok(())
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the histogram failed: {error:?}")
}
