//! Line and scatter charts as SVG text, written by hand (no plotting crate).
//!
//! Owns: the layout of one chart (axes with round ticks, lines or dots, shaded bands,
//! legend) and its text. Never decides what is plotted (`charts` in `main` does).

use std::fmt::Write as _;

const WIDTH: f64 = 820.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// One series.
pub(crate) struct Line {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<(f64, f64)>,
    /// Dots instead of a line (a scatter).
    pub dots: bool,
    pub dashed: bool,
}

/// A shaded stretch of the x axis.
pub(crate) struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
    pub color: &'static str,
}

/// One chart.
pub(crate) struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub bands: Vec<Band>,
}

/// A round step for about `n` ticks over `0..=max`.
fn tick_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

impl Chart {
    /// The SVG document.
    pub(crate) fn render(&self) -> String {
        let all = || self.lines.iter().flat_map(|l| l.points.iter());
        let x_max = all()
            .map(|p| p.0)
            .chain(self.bands.iter().map(|b| b.to))
            .fold(1.0f64, f64::max);
        let y_max = all().map(|p| p.1).fold(1.0f64, f64::max);
        let (xs, ys) = (tick_step(x_max, 10.0), tick_step(y_max * 1.05, 6.0));
        let (x_top, y_top) = ((x_max / xs).ceil() * xs, (y_max * 1.05 / ys).ceil() * ys);
        let pw = WIDTH - LEFT - RIGHT;
        let ph = HEIGHT - TOP - BOTTOM;
        let x = |v: f64| LEFT + v / x_top * pw;
        let y = |v: f64| TOP + ph - v / y_top * ph;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        for b in &self.bands {
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="{}" fill-opacity="0.18"/>"#,
                x(b.from),
                (x(b.to) - x(b.from)).max(0.0),
                b.color
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" font-size="11" fill="{}">{}</text>"#,
                x(b.from) + 4.0,
                TOP + 14.0,
                b.color,
                escape(&b.label)
            );
        }
        // Grid and ticks.
        let mut v = 0.0;
        while v <= y_top + ys / 2.0 {
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                y(v),
                y(v),
                LEFT - 6.0,
                y(v) + 4.0,
                number(v)
            );
            v += ys;
        }
        let mut v = 0.0;
        while v <= x_top + xs / 2.0 {
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{:.1}" y="{}" text-anchor="middle">{}</text>"##,
                x(v),
                x(v),
                TOP + ph,
                x(v),
                TOP + ph + 16.0,
                number(v)
            );
            v += xs;
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            LEFT + pw / 2.0,
            HEIGHT - 18.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for l in &self.lines {
            if l.dots {
                for (px, py) in &l.points {
                    let _ = writeln!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="2" fill="{}" fill-opacity="0.6"/>"#,
                        x(*px),
                        y(*py),
                        l.color
                    );
                }
                continue;
            }
            let pts: Vec<String> = l
                .points
                .iter()
                .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
                .collect();
            let dash = if l.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="1.6"{dash}/>"#,
                pts.join(" "),
                l.color
            );
        }
        // Legend, top right.
        for (i, l) in self.lines.iter().enumerate() {
            let ly = TOP + 16.0 + 16.0 * i as f64;
            let lx = WIDTH - RIGHT - 250.0;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{:.1}" width="14" height="4" fill="{}"/><text x="{}" y="{:.1}">{}</text>"#,
                ly - 4.0,
                l.color,
                lx + 20.0,
                ly + 1.0,
                escape(&l.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}
