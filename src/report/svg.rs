//! Small hand-written SVG charts (bars and lines over sprints) for the HTML report: no
//! scripts, no fonts to fetch, nothing to load.

use std::fmt::Write;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mark {
    Bars,
    Line { dashed: bool },
}

/// One series of values, one per label; `None` leaves a gap.
#[derive(Debug, Clone)]
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub mark: Mark,
    pub values: Vec<Option<f64>>,
}

/// A chart over categorical labels (sprints).
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub labels: Vec<String>,
    /// The top of the y axis; `None` picks a round number above the largest value.
    pub max: Option<f64>,
    /// Appended to the y-axis tick labels (e.g. `%`).
    pub unit: &'a str,
    pub series: Vec<Series<'a>>,
}

const W: f64 = 560.0;
const H: f64 = 280.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 32.0;

/// Escapes text for SVG/HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A round top for the y axis at or above `v`: four steps of 1, 2 or 5 × 10ⁿ (at least 1),
/// so every tick is a whole number.
fn nice_max(v: f64) -> f64 {
    if !v.is_finite() || v <= 4.0 {
        return 4.0;
    }
    let raw = v / 4.0;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|m| *m >= raw)
        .unwrap_or(10.0 * p);
    step * 4.0
}

fn tick(v: f64, unit: &str) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

/// Renders the chart as an inline `<svg>` element.
pub fn render(c: &Chart<'_>) -> String {
    let largest = c
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .copied()
        .fold(0.0, f64::max);
    let max = c.max.unwrap_or_else(|| nice_max(largest));
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let n = c.labels.len().max(1) as f64;
    let slot = plot_w / n;
    let y = |v: f64| TOP + plot_h - plot_h * (v / max).clamp(0.0, 1.0);
    let cx = |i: usize| LEFT + slot * (i as f64 + 0.5);

    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(c.title)
    );
    let _ = write!(
        s,
        r#"<text x="{LEFT}" y="20" class="title">{}</text>"#,
        esc(c.title)
    );
    // Legend.
    let mut lx = LEFT;
    for series in &c.series {
        match series.mark {
            Mark::Bars => {
                let _ = write!(
                    s,
                    r#"<rect x="{lx}" y="32" width="12" height="12" fill="{}"/>"#,
                    series.color
                );
            }
            Mark::Line { dashed } => {
                let dash = if dashed {
                    r#" stroke-dasharray="4 3""#
                } else {
                    ""
                };
                let _ = write!(
                    s,
                    r#"<line x1="{lx}" y1="38" x2="{}" y2="38" stroke="{}" stroke-width="2"{dash}/>"#,
                    lx + 12.0,
                    series.color
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="43" class="legend">{}</text>"#,
            lx + 16.0,
            esc(series.name)
        );
        lx += 28.0 + 6.5 * series.name.chars().count() as f64;
    }
    // Grid and y axis.
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let gy = y(v);
        let _ = write!(
            s,
            r#"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" class="grid"/>"#,
            W - RIGHT
        );
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            gy + 4.0,
            tick(v, c.unit)
        );
    }
    // X labels.
    for (i, label) in c.labels.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
            cx(i),
            H - 10.0,
            esc(label)
        );
    }
    // Bars, grouped per label.
    let bars: Vec<&Series<'_>> = c.series.iter().filter(|s| s.mark == Mark::Bars).collect();
    if !bars.is_empty() {
        let group = slot * 0.7;
        let bw = group / bars.len() as f64;
        for (j, series) in bars.iter().enumerate() {
            for (i, v) in series.values.iter().enumerate() {
                let Some(v) = v else { continue };
                let top = y(*v);
                let x = cx(i) - group / 2.0 + bw * j as f64;
                let _ = write!(
                    s,
                    r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                    (bw - 2.0).max(1.0),
                    TOP + plot_h - top,
                    series.color,
                    esc(series.name),
                    tick(*v, c.unit)
                );
            }
        }
    }
    // Lines, broken where a value is missing.
    for series in c
        .series
        .iter()
        .filter(|s| matches!(s.mark, Mark::Line { .. }))
    {
        let dash = if series.mark == (Mark::Line { dashed: true }) {
            r#" stroke-dasharray="5 4""#
        } else {
            ""
        };
        let mut d = String::new();
        let mut pen_down = false;
        for (i, v) in series.values.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1} {:.1} ",
                        if pen_down { "L" } else { "M" },
                        cx(i),
                        y(*v)
                    );
                    pen_down = true;
                }
                None => pen_down = false,
            }
        }
        if !d.is_empty() {
            let _ = write!(
                s,
                r#"<path d="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
                d.trim_end(),
                series.color
            );
        }
        if dash.is_empty() {
            for (i, v) in series.values.iter().enumerate() {
                if let Some(v) = v {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"><title>{}: {}</title></circle>"#,
                        cx(i),
                        y(*v),
                        series.color,
                        esc(series.name),
                        tick(*v, c.unit)
                    );
                }
            }
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_axis_tops() {
        assert_eq!(nice_max(0.0), 4.0);
        assert_eq!(nice_max(3.0), 4.0);
        assert_eq!(nice_max(6.0), 8.0);
        assert_eq!(nice_max(12.0), 20.0);
        assert_eq!(nice_max(20.0), 20.0);
        assert_eq!(nice_max(50.0), 80.0);
        assert_eq!(nice_max(130.0), 200.0);
    }

    #[test]
    fn bars_lines_and_gaps() {
        let svg = render(&Chart {
            title: "t <x>",
            labels: vec!["S1".into(), "S2".into(), "S3".into()],
            max: Some(100.0),
            unit: "%",
            series: vec![
                Series {
                    name: "a",
                    color: "#123",
                    mark: Mark::Bars,
                    values: vec![Some(50.0), None, Some(100.0)],
                },
                Series {
                    name: "b",
                    color: "#456",
                    mark: Mark::Line { dashed: false },
                    values: vec![Some(10.0), None, Some(20.0)],
                },
            ],
        });
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("t &lt;x&gt;") && !svg.contains("<x>"));
        // Two bars (the gap has none) and a line broken in two: two moves, no line-to.
        assert_eq!(svg.matches("<rect x=").count() - 1, 2);
        let path = svg
            .split("<path d=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(path.matches('M').count(), 2);
        assert!(!path.contains('L'));
    }
}
