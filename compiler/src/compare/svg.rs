//! `qcc compare --svg`: SQNR per layer as a bar chart, written by hand (one small document,
//! no plotting crate). Layers run along the x axis in graph order with their node names
//! rotated below; the y axis is in dB with a gridline every tick. Exact layers (no error at
//! all) have no finite SQNR: their bar reaches the top of the axis and carries a marker.
//! Bars under [`LOW_SQNR_DB`] are drawn in red, where an accuracy drop usually starts.

use std::fmt::Write as _;

use super::Comparison;

/// Bars below this many dB are highlighted.
pub const LOW_SQNR_DB: f64 = 20.0;

const LEFT: f64 = 70.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 60.0;
const PLOT_HEIGHT: f64 = 320.0;
const STEP: f64 = 16.0;
const MIN_PLOT_WIDTH: f64 = 480.0;
/// Longest node name drawn under the axis, in characters.
const LABEL_CHARS: usize = 36;
/// Average glyph advance of the 10 px label font.
const CHAR_WIDTH: f64 = 5.6;

/// `&`, `<`, `>` and quotes escaped for XML text and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn shorten(name: &str) -> String {
    if name.chars().count() <= LABEL_CHARS {
        return name.to_string();
    }
    let head: String = name.chars().take(LABEL_CHARS - 1).collect();
    format!("{head}…")
}

/// The y axis: `(low, high, tick)` in dB, low ≤ 0 < high, both multiples of the tick.
fn axis_range(values: impl Iterator<Item = f64>) -> (f64, f64, f64) {
    let (mut lo, mut hi) = (0.0f64, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !hi.is_finite() || hi <= 0.0 {
        // Nothing positive to show: an axis up to 40 dB (35 plus the room added below).
        hi = 35.0;
    }
    let tick = if hi - lo > 60.0 { 10.0 } else { 5.0 };
    let lo = (lo / tick).floor() * tick;
    // Room above the highest finite bar for the exact markers.
    let hi = ((hi / tick).floor() + 1.0) * tick;
    (lo, hi, tick)
}

/// The chart for `c` as an SVG document.
pub fn sqnr_chart(c: &Comparison) -> String {
    let n = c.layers.len();
    let model = std::path::Path::new(&c.model)
        .file_name()
        .map_or(c.model.clone(), |f| f.to_string_lossy().into_owned());
    let title = format!(
        "SQNR per layer: {model} on {} (profile {}), {} sample(s)",
        c.target, c.profile, c.layer_samples
    );
    let label_chars = |l: &super::LayerError| shorten(&l.node).chars().count() as f64;
    let longest = c.layers.iter().map(label_chars).fold(0.0, f64::max);
    // Labels are rotated by 60°: they reach sin 60° of their length below the axis and
    // cos 60° of it to the left of their bar, which the first one must not cross.
    let first = c.layers.first().map_or(0.0, label_chars);
    let left = LEFT.max(first * CHAR_WIDTH * 0.5 + 10.0);
    let bottom = 40.0 + longest * CHAR_WIDTH * 0.87;
    // 15 px bold glyphs are about 8.5 px wide.
    let title_width = title.chars().count() as f64 * 8.5 + 40.0;
    let plot_width = (n as f64 * STEP)
        .max(MIN_PLOT_WIDTH)
        .max(title_width - left - RIGHT);
    let step = plot_width / n.max(1) as f64;
    let width = left + plot_width + RIGHT;
    let height = TOP + PLOT_HEIGHT + bottom;
    let (lo, hi, tick) = axis_range(c.layers.iter().map(|l| l.sqnr_db));
    let y = |db: f64| TOP + (hi - db.clamp(lo, hi)) / (hi - lo) * PLOT_HEIGHT;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        s,
        r#"<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="24" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        width / 2.0,
        escape(&title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="44" font-size="11" text-anchor="middle" fill="#555">higher is better; red: below {LOW_SQNR_DB} dB; ▲ exact (no error)</text>"##,
        width / 2.0
    );
    // Gridlines and y tick labels.
    let mut db = lo;
    while db <= hi + 1e-9 {
        let yy = y(db);
        let _ = writeln!(
            s,
            r##"<line x1="{left:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{}" stroke-width="1"/>"##,
            left + plot_width,
            if db == 0.0 { "#444" } else { "#ddd" }
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{db:.0}</text>"#,
            left - 6.0,
            yy + 3.5
        );
        db += tick;
    }
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {:.1})">SQNR (dB)</text>"#,
        TOP + PLOT_HEIGHT / 2.0,
        TOP + PLOT_HEIGHT / 2.0
    );
    let _ = writeln!(
        s,
        r##"<line x1="{left:.1}" y1="{TOP}" x2="{left:.1}" y2="{:.1}" stroke="#444" stroke-width="1"/>"##,
        TOP + PLOT_HEIGHT
    );
    // One bar per layer.
    let bar = (step * 0.7).max(1.0);
    for (i, l) in c.layers.iter().enumerate() {
        let centre = left + (i as f64 + 0.5) * step;
        let exact = !l.sqnr_db.is_finite();
        let top = if exact { y(hi) } else { y(l.sqnr_db) };
        let base = y(0.0);
        let (y0, h) = (top.min(base), (top - base).abs());
        let colour = if exact {
            "#9bbbd8"
        } else if l.sqnr_db < LOW_SQNR_DB {
            "#d9534f"
        } else {
            "#4a7fb5"
        };
        let value = if exact {
            "exact".to_string()
        } else {
            format!("{:.2} dB", l.sqnr_db)
        };
        let _ = writeln!(
            s,
            r#"<rect x="{:.1}" y="{y0:.1}" width="{bar:.1}" height="{h:.1}" fill="{colour}"><title>{} ({}) {}: {value}, cosine {:.6}</title></rect>"#,
            centre - bar / 2.0,
            escape(&l.node),
            escape(&l.op),
            escape(&l.tensor),
            l.cosine
        );
        if exact {
            let _ = writeln!(
                s,
                r##"<path d="M {:.1} {:.1} l 4 -7 l 4 7 z" fill="#2a6a2a"/>"##,
                centre - 4.0,
                top - 2.0
            );
        }
        let label_y = TOP + PLOT_HEIGHT + 10.0;
        let _ = writeln!(
            s,
            r#"<text x="{centre:.1}" y="{label_y:.1}" font-size="10" text-anchor="end" transform="rotate(-60 {centre:.1} {label_y:.1})">{}</text>"#,
            escape(&shorten(&l.node))
        );
    }
    if n == 0 {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">no tensor to compare</text>"#,
            left + plot_width / 2.0,
            TOP + PLOT_HEIGHT / 2.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::super::{LayerError, OutputAgreement};
    use super::*;

    fn layer(node: &str, sqnr_db: f64) -> LayerError {
        LayerError {
            node: node.into(),
            op: "QuantizedConv".into(),
            tensor: format!("{node}.q"),
            sqnr_db,
            cosine: 0.999,
        }
    }

    #[test]
    fn one_bar_per_layer_names_escaped_and_exact_layers_marked() {
        let c = Comparison {
            model: "m<1>.onnx".into(),
            target: "x86_64-int8".into(),
            profile: "x86-vnni".into(),
            samples: 1,
            layer_samples: 1,
            layers: vec![
                layer("input", f64::INFINITY),
                layer("conv&1", 35.2),
                layer("fc", 12.0),
            ],
            outputs: Vec::<OutputAgreement>::new(),
        };
        let svg = sqnr_chart(&c);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<rect x=").count(), 1 + 3, "{svg}");
        assert_eq!(svg.matches("<path d=").count(), 1);
        assert!(svg.contains("conv&amp;1") && svg.contains("m&lt;1&gt;.onnx"));
        assert!(!svg.contains("conv&1"));
        // 12 dB is highlighted, 35.2 dB is not.
        assert_eq!(svg.matches("#d9534f").count(), 1);
    }

    #[test]
    fn the_axis_covers_every_finite_value_with_room_above() {
        let (lo, hi, tick) = axis_range([35.2, 12.0, f64::INFINITY].into_iter());
        assert_eq!((lo, hi, tick), (0.0, 40.0, 5.0));
        let (lo, hi, _) = axis_range([-7.0, 3.0].into_iter());
        assert!(lo <= -7.0 && hi > 3.0);
        assert_eq!(axis_range(std::iter::empty()), (0.0, 40.0, 5.0));
    }
}
