//! `--html`: one self-contained page (inline CSS and SVG, no scripts, no network): the run's
//! devices, the results table, a throughput chart per op (bars per backend and case), and
//! a roofline chart per device (arithmetic intensity against achieved GFLOP/s, with the
//! device's compute and bandwidth roofs drawn). Charts are drawn with `plotters` into SVG.

use crate::report::Row;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use xkern::DeviceInfo;

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for s in items {
        if !v.iter().any(|x| x == s) {
            v.push(s.to_string());
        }
    }
    v
}

/// Grouped bars: one group per case, one bar per backend.
fn throughput_chart(
    title: &str,
    unit: &str,
    rows: &[&Row],
    metric: impl Fn(&Row) -> f64,
) -> anyhow::Result<String> {
    let ids = unique(rows.iter().map(|r| r.id.as_str()));
    let backends = unique(rows.iter().map(|r| r.backend.as_str()));
    let ymax = rows.iter().map(|r| metric(r)).fold(0.0, f64::max).max(1e-9) * 1.15;
    let width = (160 + 60 * ids.len() as u32).clamp(520, 1400);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 460)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(150)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..ids.len() as f64, 0f64..ymax)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(unit)
            .draw()?;
        let w = 0.8 / backends.len() as f64;
        for (bi, backend) in backends.iter().enumerate() {
            let color = PALETTE[bi % PALETTE.len()];
            let bars = rows
                .iter()
                .filter(|r| &r.backend == backend)
                .filter_map(|r| {
                    let i = ids.iter().position(|id| id == &r.id)? as f64;
                    let x0 = i + 0.1 + w * bi as f64;
                    Some(Rectangle::new(
                        [(x0, 0.0), (x0 + w * 0.95, metric(r))],
                        color.filled(),
                    ))
                });
            chart
                .draw_series(bars)?
                .label(backend.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        let label = ("sans-serif", 12)
            .into_font()
            .transform(FontTransform::Rotate90)
            .color(&BLACK);
        for (i, id) in ids.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                id.clone(),
                (px - 6, py + 8),
                label.clone().pos(Pos::new(HPos::Left, VPos::Top)),
            ))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// Log-log roofline of one device: roofs from its info, points from its rows.
fn roofline_chart(info: &DeviceInfo, rows: &[&Row]) -> anyhow::Result<String> {
    let ai = |r: &Row| r.flops / r.bytes.max(1.0);
    let (mut xmin, mut xmax) = (0.05f64, 1000.0f64);
    for r in rows {
        xmin = xmin.min(ai(r) / 2.0);
        xmax = xmax.max(ai(r) * 2.0);
    }
    let peak = info
        .peak_gflops_16
        .unwrap_or(0.0)
        .max(info.peak_gflops_f32.unwrap_or(0.0));
    let best = rows.iter().filter_map(|r| r.gflops).fold(0.0, f64::max);
    let ymax = peak.max(best).max(1.0) * 2.0;
    let ymin = rows
        .iter()
        .filter_map(|r| r.gflops)
        .fold(ymax, f64::min)
        .min(0.1)
        / 2.0;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let title = format!("Roofline: {} ({})", info.backend, info.device);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(70)
            .build_cartesian_2d((xmin..xmax).log_scale(), (ymin..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("arithmetic intensity (FLOP/byte)")
            .y_desc("GFLOP/s")
            .draw()?;
        let xs: Vec<f64> = (0..=200)
            .map(|i| xmin * (xmax / xmin).powf(i as f64 / 200.0))
            .collect();
        let roofs = [
            ("f32 roof", info.peak_gflops_f32, BLACK),
            ("16-bit roof", info.peak_gflops_16, RGBColor(120, 120, 120)),
        ];
        for (name, peak, color) in roofs {
            if let (Some(p), Some(bw)) = (peak, info.bandwidth_gbs) {
                let line = xs.iter().map(|&x| (x, (x * bw).min(p)));
                chart
                    .draw_series(LineSeries::new(line, color.stroke_width(2)))?
                    .label(format!("{name}: {p:.0} GFLOP/s, {bw:.0} GB/s"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                    });
            }
        }
        for (oi, op) in unique(rows.iter().map(|r| r.op.as_str()))
            .iter()
            .enumerate()
        {
            let color = PALETTE[oi % PALETTE.len()];
            let points = rows
                .iter()
                .filter(|r| &r.op == op)
                .filter_map(|r| Some(Circle::new((ai(r), r.gflops?), 5, color.filled())));
            chart
                .draw_series(points)?
                .label(op.as_str())
                .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .draw()?;
        root.present()?;
    }
    Ok(svg)
}

/// The whole page.
pub fn page(
    rows: &[Row],
    infos: &[DeviceInfo],
    command: &str,
    when: &str,
) -> anyhow::Result<String> {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>xkern-bench report</title>\n<style>\n");
    h.push_str("body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:13px}\n");
    h.push_str("td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:nth-child(-n+3),th{text-align:left}\n");
    h.push_str("tr.bad{background:#fdd}svg{display:block;margin:16px 0}code{background:#f4f4f4;padding:1px 4px}\n</style></head><body>\n");
    h.push_str("<h1>xkern-bench report</h1>\n");
    h.push_str(&format!(
        "<p>Command: <code>{}</code><br>Run: {}</p>\n",
        escape(command),
        escape(when)
    ));
    h.push_str("<h2>Devices</h2>\n<table><tr><th>backend</th><th>device</th><th>threads</th><th>features</th><th>f32 peak GFLOP/s</th><th>16-bit peak GFLOP/s</th><th>bandwidth GB/s</th></tr>\n");
    let fig = |v: Option<f64>| v.map_or("unknown".to_string(), |x| format!("{x:.1}"));
    for i in infos {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            escape(&i.backend),
            escape(&i.device),
            i.threads.map_or("–".into(), |t| t.to_string()),
            escape(&i.features.join(", ")),
            fig(i.peak_gflops_f32),
            fig(i.peak_gflops_16),
            fig(i.bandwidth_gbs)
        ));
    }
    h.push_str("</table>\n<h2>Results</h2>\n<table><tr><th>case</th><th>backend</th><th>dtype</th><th>median ms</th><th>min ms</th><th>max ms</th><th>reps</th><th>GFLOP/s</th><th>GB/s</th><th>roof %</th><th>rel err</th><th>peers (their time / xkern's)</th><th>check</th></tr>\n");
    for r in rows {
        let peers: Vec<String> = r
            .peers
            .iter()
            .map(|p| format!("{} {:.2}×", p.name, p.ratio))
            .collect();
        h.push_str(&format!(
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{:.1e}</td><td>{}</td><td>{}</td></tr>\n",
            if r.within_tolerance { "" } else { "bad" },
            escape(&r.id),
            escape(&r.backend),
            escape(&r.dtype),
            r.median_s * 1e3,
            r.min_s * 1e3,
            r.max_s * 1e3,
            r.reps,
            r.gflops.unwrap_or(0.0),
            r.gbps.unwrap_or(0.0),
            r.roof_pct.map_or("–".into(), |p| format!("{p:.0}%")),
            r.rel_err,
            escape(&peers.join(", ")),
            if r.within_tolerance { "ok".to_string() } else { format!("TOLERANCE EXCEEDED: {}", escape(r.error_detail.as_deref().unwrap_or(""))) },
        ));
    }
    h.push_str("</table>\n<h2>Throughput by op</h2>\n");
    for op in unique(rows.iter().map(|r| r.op.as_str())) {
        let subset: Vec<&Row> = rows.iter().filter(|r| r.op == op).collect();
        let svg = if op == "reduce" {
            throughput_chart(&format!("{op}: bandwidth"), "GB/s", &subset, |r| {
                r.gbps.unwrap_or(0.0)
            })?
        } else {
            throughput_chart(&format!("{op}: throughput"), "GFLOP/s", &subset, |r| {
                r.gflops.unwrap_or(0.0)
            })?
        };
        h.push_str(&svg);
        h.push('\n');
    }
    let sims: Vec<&Row> = rows.iter().filter(|r| r.timeline_svg.is_some()).collect();
    if !sims.is_empty() {
        h.push_str("<h2>Simulated NeuronCore timelines</h2>\n");
        for r in sims {
            h.push_str(&format!(
                "<h3>{} on {}: {:.3} ms simulated, MFU {:.0}%, busiest {}{}</h3>\n",
                escape(&r.id),
                escape(&r.backend),
                r.sim_time_s.unwrap_or(0.0) * 1e3,
                100.0 * r.mfu.unwrap_or(0.0),
                escape(r.busiest_engine.as_deref().unwrap_or("–")),
                if r.checked {
                    ""
                } else {
                    " (timing-only: output not checked)"
                }
            ));
            h.push_str(r.timeline_svg.as_deref().unwrap_or(""));
            h.push('\n');
        }
    }
    h.push_str("<h2>Rooflines</h2>\n");
    for info in infos {
        let subset: Vec<&Row> = rows.iter().filter(|r| r.device == info.device).collect();
        if !subset.is_empty() {
            h.push_str(&roofline_chart(info, &subset)?);
            h.push('\n');
        }
    }
    h.push_str("<p>Throughput counts useful work: 2·M·N·K for matmul, 4·D per visible (query, key) pair for attention, the minimum bytes read and written for reductions. Roof % is the device's roofline time (FLOPs over the peak, or bytes over the bandwidth, whichever is longer) over the measured median.</p>\n");
    h.push_str("</body></html>\n");
    Ok(h)
}
