//! Self-contained SVG plots of a figure against host count: one series per implementation
//! and backend, each with its least-squares line and the worst residual, so a reader sees
//! where cost stops being linear.

use std::fmt::Write;

use super::Point;

/// One series of (x, y) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Groups points into series by implementation and backend, in first-seen order.
pub fn series(points: &[Point], xy: impl Fn(&Point) -> Option<(f64, f64)>) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for p in points {
        let label = format!("{} {}", p.implementation, p.backend);
        if !p.plotted() {
            continue;
        }
        let Some(v) = xy(p) else { continue };
        match out.iter_mut().find(|s| s.label == label) {
            Some(s) => s.points.push(v),
            None => out.push(Series { label, points: vec![v] }),
        }
    }
    out
}

/// A least-squares line y = a + b·x.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    pub a: f64,
    pub b: f64,
    pub r2: f64,
}

impl Fit {
    /// None with fewer than two distinct x values.
    pub fn of(points: &[(f64, f64)]) -> Option<Fit> {
        let n = points.len() as f64;
        let (sx, sy) = points.iter().fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
        let (mx, my) = (sx / n, sy / n);
        let sxx: f64 = points.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        if points.len() < 2 || sxx == 0.0 {
            return None;
        }
        let sxy: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let b = sxy / sxx;
        let a = my - b * mx;
        let ss_tot: f64 = points.iter().map(|(_, y)| (y - my).powi(2)).sum();
        let ss_res: f64 = points.iter().map(|(x, y)| (y - a - b * x).powi(2)).sum();
        let r2 = if ss_tot == 0.0 { 1.0 } else { 1.0 - ss_res / ss_tot };
        Some(Fit { a, b, r2 })
    }

    pub fn at(&self, x: f64) -> f64 {
        self.a + self.b * x
    }

    /// The point farthest from the line, relative to the line's value there: (x, residual
    /// as a fraction).
    pub fn worst(&self, points: &[(f64, f64)]) -> Option<(f64, f64)> {
        points
            .iter()
            .map(|&(x, y)| {
                let fit = self.at(x);
                let rel = if fit.abs() > f64::EPSILON { (y - fit) / fit.abs() } else { 0.0 };
                (x, rel)
            })
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
    }

    pub fn describe(&self, points: &[(f64, f64)]) -> String {
        let worst = self.worst(points).map(|(x, r)| format!(", worst residual {:+.0}% at {x}", r * 100.0)).unwrap_or_default();
        format!("y = {:.4} + {:.5}·n, R² {:.3}{worst}", self.a, self.b, self.r2)
    }
}

const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/// An SVG plot (no scripts, no external resources) of every series with its fit.
pub fn svg(title: &str, xlabel: &str, series: &[Series]) -> String {
    let (w, h) = (720.0, 420.0);
    let (l, r, t, b) = (70.0, 20.0, 40.0, 60.0 + 16.0 * series.len() as f64);
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    let xmax = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let ymax = all.iter().map(|p| p.1).fold(0.0, f64::max).max(f64::EPSILON) * 1.1;
    let pw = w - l - r;
    let ph = h - t - b;
    let px = |x: f64| l + x / xmax * pw;
    let py = |y: f64| t + ph - y / ymax * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(s, r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#, w / 2.0, esc(title));
    // axes with five ticks each
    let _ = write!(s, r##"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="#333"/>"##, t + ph, l + pw, t + ph);
    let _ = write!(s, r##"<line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="#333"/>"##, t + ph);
    for k in 0..=5 {
        let (xv, yv) = (xmax * f64::from(k) / 5.0, ymax * f64::from(k) / 5.0);
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, px(xv), t + ph + 16.0, num(xv));
        let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, l - 6.0, py(yv) + 4.0, num(yv));
        let _ = write!(s, r##"<line x1="{l}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#eee"/>"##, py(yv), l + pw, py(yv));
    }
    let _ = write!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, l + pw / 2.0, t + ph + 34.0, esc(xlabel));
    for (i, ser) in series.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let fit = Fit::of(&ser.points);
        if let Some(f) = fit {
            let _ = write!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{c}" stroke-dasharray="5,4"/>"#,
                px(0.0),
                py(f.at(0.0).max(0.0)),
                px(xmax),
                py(f.at(xmax).clamp(0.0, ymax))
            );
        }
        for &(x, y) in &ser.points {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"><title>{} hosts: {}</title></circle>"#,
                px(x),
                py(y),
                x,
                num(y)
            );
        }
        let legend = match fit {
            Some(f) => format!("{} — {}", ser.label, f.describe(&ser.points)),
            None => ser.label.clone(),
        };
        let y = t + ph + 52.0 + 16.0 * i as f64;
        let _ = write!(s, r#"<rect x="{l}" y="{:.1}" width="10" height="10" fill="{c}"/>"#, y - 9.0);
        let _ = write!(s, r#"<text x="{}" y="{y:.1}">{}</text>"#, l + 16.0, esc(&legend));
    }
    s.push_str("</svg>\n");
    s
}

fn num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Text for SVG or HTML, in element content and in quoted attributes.
pub(crate) fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_of_a_line_is_exact_and_a_bend_shows_in_the_residual() {
        let line = [(10.0, 21.0), (50.0, 101.0), (100.0, 201.0)];
        let f = Fit::of(&line).expect("fit");
        assert!((f.b - 2.0).abs() < 1e-9 && (f.a - 1.0).abs() < 1e-9 && (f.r2 - 1.0).abs() < 1e-9);
        // quadratic growth: the largest size sits far off the line
        let bent: Vec<(f64, f64)> = [10.0, 50.0, 100.0, 250.0, 500.0, 1000.0].iter().map(|&n| (n, n * n)).collect();
        let f = Fit::of(&bent).expect("fit");
        assert!(f.r2 < 0.99, "{f:?}");
        let (_, worst) = f.worst(&bent).expect("points");
        assert!(worst.abs() > 0.3, "{worst}");
        assert!(Fit::of(&[(5.0, 1.0)]).is_none() && Fit::of(&[(5.0, 1.0), (5.0, 2.0)]).is_none());
    }

    #[test]
    fn svg_holds_every_point_and_a_legend_per_series() {
        let s = [
            Series { label: "reference vxlan".into(), points: vec![(10.0, 1.0), (100.0, 9.0)] },
            Series { label: "other <vxlan>".into(), points: vec![(10.0, 2.0)] },
        ];
        let out = svg("convergence & cost", "hosts", &s);
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        assert_eq!(out.matches("<circle").count(), 3);
        assert!(out.contains("reference vxlan — y = ") && out.contains("other &lt;vxlan&gt;"));
        assert!(out.contains("convergence &amp; cost"));
    }
}
