//! Timeline exports: Chrome trace-event JSON (Perfetto and chrome://tracing open it; one
//! track per engine and per DMA queue, complete events `"ph": "X"` in microseconds) and
//! a self-contained SVG timeline for HTML reports (instructions closer than half a pixel
//! are merged into one bar, so the SVG stays small for 100 000-instruction runs).

// Engine and queue indices are below the counts the trace was built with.
#![allow(clippy::indexing_slicing)]

use crate::engines::{Engine, Stream};
use crate::error::{Result, SimError};
use crate::sim::Simulator;
use serde_json::json;
use std::io::Write;

fn track_name(s: Stream) -> String {
    match s {
        Stream::Engine(e) => format!("{} engine", e.name()),
        Stream::Dma(q) => format!("DMA queue {q}"),
    }
}

impl Simulator {
    /// The streams that ran something, in track order (engines, then DMA queues).
    fn tracks(&self) -> Vec<Stream> {
        let mut used = vec![false; 4 + self.config().dma_queues.max(1)];
        for r in self.records() {
            used[r.stream.index()] = true;
        }
        let mut out: Vec<Stream> = Engine::ALL.iter().map(|&e| Stream::Engine(e)).collect();
        out.extend(
            (0..self.config().dma_queues)
                .filter(|q| used[4 + q])
                .map(|q| Stream::Dma(q as u16)),
        );
        out
    }

    /// The trace as a JSON value (`{"traceEvents": [...]}`).
    pub fn chrome_trace(&self) -> serde_json::Value {
        let mut events = vec![
            json!({"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": self.config().name}}),
        ];
        for s in self.tracks() {
            events.push(json!({"name": "thread_name", "ph": "M", "pid": 0, "tid": s.index(), "args": {"name": track_name(s)}}));
            events.push(json!({"name": "thread_sort_index", "ph": "M", "pid": 0, "tid": s.index(), "args": {"sort_index": s.index()}}));
        }
        for (i, r) in self.records().iter().enumerate() {
            events.push(json!({
                "name": r.opcode, "ph": "X", "pid": 0, "tid": r.stream.index(),
                "ts": r.start_ns * 1e-3, "dur": (r.end_ns - r.start_ns) * 1e-3,
                "args": {"id": i, "ready_us": r.ready_ns * 1e-3}
            }));
        }
        json!({"traceEvents": events, "displayTimeUnit": "ns"})
    }

    /// Writes the Chrome trace-event JSON to `path`.
    pub fn write_chrome_trace(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        let io = |e: std::io::Error| SimError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut w = std::io::BufWriter::new(file);
        serde_json::to_writer(&mut w, &self.chrome_trace()).map_err(|e| io(e.into()))?;
        w.flush().map_err(io)
    }

    /// An SVG timeline, one row per track, `width` pixels wide.
    pub fn svg_timeline(&self, width: u32) -> String {
        let tracks = self.tracks();
        let latency = self
            .records()
            .iter()
            .map(|r| r.end_ns)
            .fold(0.0, f64::max)
            .max(1e-9);
        let (label, row, w) = (120.0, 18.0, width.max(200) as f64);
        let plot = w - label - 10.0;
        let height = row * tracks.len() as f64 + 30.0;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n"
        );
        let colours = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#9c755f"];
        for (ti, &t) in tracks.iter().enumerate() {
            let y = ti as f64 * row + 4.0;
            s += &format!(
                "<text x=\"4\" y=\"{:.1}\">{}</text>\n",
                y + 12.0,
                track_name(t)
            );
            let colour = match t {
                Stream::Engine(e) => colours[e.index()],
                Stream::Dma(_) => colours[4],
            };
            let mut bar: Option<(f64, f64)> = None;
            let flush = |b: (f64, f64), s: &mut String| {
                *s += &format!(
                    "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.2}\" height=\"{:.1}\" fill=\"{colour}\"/>\n",
                    label + b.0,
                    (b.1 - b.0).max(0.3),
                    row - 4.0
                );
            };
            for r in self.records().iter().filter(|r| r.stream == t) {
                let (x0, x1) = (r.start_ns / latency * plot, r.end_ns / latency * plot);
                bar = match bar {
                    Some(b) if x0 <= b.1 + 0.5 => Some((b.0, b.1.max(x1))),
                    Some(b) => {
                        flush(b, &mut s);
                        Some((x0, x1))
                    }
                    None => Some((x0, x1)),
                };
            }
            if let Some(b) = bar {
                flush(b, &mut s);
            }
        }
        s += &format!(
            "<text x=\"{label}\" y=\"{:.1}\">0</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.3} ms</text>\n</svg>\n",
            height - 8.0,
            label + plot,
            height - 8.0,
            latency * 1e-6
        );
        s
    }
}
