//! SVG loss curves from `metrics.jsonl` files (no plotting dependency: the SVG is written by hand).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::Context;

/// The curves of one run.
#[derive(Clone, Debug, Default)]
pub struct RunCurves {
    /// Legend label.
    pub label: String,
    /// (tokens, training loss).
    pub train: Vec<(f64, f64)>,
    /// (tokens, validation loss).
    pub val: Vec<(f64, f64)>,
    /// Held-out test loss at the end.
    pub test: Option<f64>,
}

/// Reads one run's metrics (the last `start` event begins the curve: resumed runs append).
pub fn read_metrics(label: &str, path: &Path) -> anyhow::Result<RunCurves> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut run = RunCurves {
        label: label.to_string(),
        ..RunCurves::default()
    };
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        match v.get("event").and_then(serde_json::Value::as_str) {
            Some("train") => {
                if let (Some(t), Some(l)) = (num("tokens"), num("loss")) {
                    run.train.push((t, l));
                }
            }
            Some("val") => {
                if let (Some(t), Some(l)) = (num("tokens"), num("val_loss")) {
                    run.val.push((t, l));
                }
            }
            Some("test") => run.test = num("test_loss"),
            _ => {}
        }
    }
    Ok(run)
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

fn nice_step(range: f64, ticks: f64) -> f64 {
    let raw = (range / ticks).max(1e-12);
    let mag = 10f64.powf(raw.log10().floor());
    let r = raw / mag;
    let m = if r < 1.5 {
        1.0
    } else if r < 3.5 {
        2.0
    } else if r < 7.5 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// An SVG with validation loss (solid, markers) and smoothed training loss (thin) per run,
/// against training tokens.
pub fn loss_svg(runs: &[RunCurves], title: &str) -> String {
    let (w, h) = (860.0, 520.0);
    let (l, r, t, b) = (70.0, 200.0, 50.0, 60.0);
    let all: Vec<(f64, f64)> = runs
        .iter()
        .flat_map(|c| c.val.iter().chain(c.train.iter()).copied())
        .collect();
    let xmax = all.iter().map(|p| p.0).fold(1.0, f64::max);
    let ymin = all.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    // Cap the top at the highest validation point so a noisy first training step does not squash the plot.
    let ymax = runs
        .iter()
        .flat_map(|c| c.val.iter().map(|p| p.1))
        .fold(f64::NEG_INFINITY, f64::max);
    let (ymin, ymax) = if ymin.is_finite() && ymax.is_finite() && ymax > ymin {
        (ymin.floor(), ymax.ceil())
    } else {
        (0.0, 10.0)
    };
    let px = |x: f64| l + (x / xmax) * (w - l - r);
    let py = |y: f64| t + (1.0 - (y.clamp(ymin, ymax) - ymin) / (ymax - ymin)) * (h - t - b);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        (l + w - r) / 2.0,
        xml(title)
    );
    let ystep = nice_step(ymax - ymin, 6.0);
    let mut y = (ymin / ystep).ceil() * ystep;
    while y <= ymax + 1e-9 {
        let yy = py(y);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{y:.1}</text>"##,
            w - r,
            l - 6.0,
            yy + 4.0
        );
        y += ystep;
    }
    let xstep = nice_step(xmax, 6.0);
    let mut x = 0.0;
    while x <= xmax + 1e-9 {
        let label = if xmax >= 1e6 {
            format!("{:.1}M", x / 1e6)
        } else {
            format!("{:.0}k", x / 1e3)
        };
        let _ = writeln!(
            s,
            r##"<line x1="{px:.1}" x2="{px:.1}" y1="{t}" y2="{}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            h - b,
            h - b + 18.0,
            px = px(x)
        );
        x += xstep;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{l}" y="{t}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        w - l - r,
        h - t - b
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">training tokens</text>"#,
        (l + w - r) / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">loss (nats/token)</text>"#,
        (t + h - b) / 2.0,
        (t + h - b) / 2.0
    );
    for (i, run) in runs.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        // Training loss: moving average over 10 logged points.
        let smooth: Vec<(f64, f64)> = run
            .train
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let lo = j.saturating_sub(9);
                let win = &run.train[lo..=j];
                (p.0, win.iter().map(|q| q.1).sum::<f64>() / win.len() as f64)
            })
            .collect();
        let path = |pts: &[(f64, f64)]| {
            pts.iter()
                .map(|p| format!("{:.1},{:.1}", px(p.0), py(p.1)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-opacity="0.35" stroke-width="1" points="{}"/>"#,
            path(&smooth)
        );
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2.2" points="{}"/>"#,
            path(&run.val)
        );
        for p in &run.val {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                px(p.0),
                py(p.1)
            );
        }
        let ly = t + 20.0 + 44.0 * i as f64;
        let lx = w - r + 12.0;
        let last = run
            .val
            .last()
            .map(|p| format!("val {:.3}", p.1))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2.2"/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            xml(&run.label)
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#555">{last}</text>"##,
            lx + 28.0,
            ly + 20.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" fill="#555" font-size="11">thick: validation, thin: training (smoothed)</text>"##,
        l,
        h - 4.0
    );
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_one_curve_per_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.jsonl");
        fs::write(&p, "{\"event\":\"val\",\"tokens\":0,\"val_loss\":6.0}\n{\"event\":\"train\",\"tokens\":100,\"loss\":5.0}\n{\"event\":\"val\",\"tokens\":100,\"val_loss\":4.5}\n{\"event\":\"test\",\"test_loss\":4.6}\n").expect("write");
        let run = read_metrics("bitnet <a&b>", &p).expect("read");
        assert_eq!(run.val, vec![(0.0, 6.0), (100.0, 4.5)]);
        assert_eq!(run.test, Some(4.6));
        let fp = RunCurves {
            label: "fp".into(),
            ..run.clone()
        };
        let svg = loss_svg(&[run, fp], "t");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("stroke-width=\"2.2\" points=").count(), 2);
        assert!(svg.contains("bitnet &lt;a&amp;b&gt;"));
    }
}
