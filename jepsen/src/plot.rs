//! Pictures of a run (plotters, SVG): `timeline.svg`, every client operation as a
//! bar from invocation to completion, one lane per process, coloured by outcome,
//! over shaded nemesis windows; and `latency.svg`, each operation's latency (log
//! scale) against the time it was invoked, over the same windows.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::history::{Op, OpType};

/// One completed (or never completed) client operation.
struct Span {
    lane: usize,
    start: f64,
    end: f64,
    kind: OpType,
}

/// A fault's window.
struct Window {
    fault: String,
    start: f64,
    end: f64,
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Client spans, lane names, and nemesis windows of a history.
fn spans(ops: &[Op]) -> (Vec<Span>, Vec<String>, Vec<Window>) {
    let t_end = secs(ops.last().map_or(0, |o| o.time_ms));
    let mut lanes: BTreeMap<(bool, u64, String), usize> = BTreeMap::new();
    for op in ops.iter().filter(|o| o.process != "nemesis") {
        // Numbered processes first, in numeric order.
        let n = op.process.parse::<u64>();
        lanes.insert((n.is_err(), n.unwrap_or(0), op.process.clone()), 0);
    }
    for (i, v) in lanes.values_mut().enumerate() {
        *v = i;
    }
    let lane_of: BTreeMap<&str, usize> = lanes
        .iter()
        .map(|((_, _, p), i)| (p.as_str(), *i))
        .collect();
    let mut open: BTreeMap<&str, f64> = BTreeMap::new();
    let mut out = Vec::new();
    let mut windows = Vec::new();
    let mut faults: BTreeMap<String, f64> = BTreeMap::new();
    for op in ops {
        if op.process == "nemesis" {
            if let Some(f) = op.f.strip_prefix("start-") {
                faults.insert(f.to_string(), secs(op.time_ms));
            } else if let Some(f) = op.f.strip_prefix("stop-") {
                if let Some(start) = faults.remove(f) {
                    windows.push(Window {
                        fault: f.to_string(),
                        start,
                        end: secs(op.time_ms),
                    });
                }
            }
            continue;
        }
        let lane = lane_of[op.process.as_str()];
        if op.kind == OpType::Invoke {
            open.insert(&op.process, secs(op.time_ms));
        } else if let Some(start) = open.remove(op.process.as_str()) {
            out.push(Span {
                lane,
                start,
                end: secs(op.time_ms),
                kind: op.kind,
            });
        }
    }
    for (p, start) in open {
        out.push(Span {
            lane: lane_of[p],
            start,
            end: t_end,
            kind: OpType::Info,
        });
    }
    for (fault, start) in faults {
        windows.push(Window {
            fault,
            start,
            end: t_end,
        });
    }
    let names = lanes.into_keys().map(|(_, _, p)| p).collect();
    (out, names, windows)
}

fn outcome_color(k: OpType) -> RGBColor {
    match k {
        OpType::Ok => RGBColor(46, 139, 87),
        OpType::Fail => RGBColor(214, 96, 77),
        _ => RGBColor(140, 140, 140),
    }
}

fn fault_color(f: &str) -> RGBColor {
    match f {
        "kill" => RGBColor(220, 50, 50),
        "pause" => RGBColor(70, 110, 220),
        "partition" => RGBColor(230, 160, 0),
        _ => RGBColor(150, 60, 200),
    }
}

/// Writes `timeline.svg` and `latency.svg` into `dir`.
pub fn write_all(ops: &[Op], dir: &Path) -> Result<()> {
    let (spans, lanes, windows) = spans(ops);
    timeline(&spans, &lanes, &windows, &dir.join("timeline.svg"))
        .map_err(|e| anyhow!("timeline.svg: {e}"))?;
    latency(&spans, &windows, &dir.join("latency.svg")).map_err(|e| anyhow!("latency.svg: {e}"))
}

type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

fn shade_windows<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, impl Ranged<ValueType = f64>>>,
    windows: &[Window],
    y: (f64, f64),
) -> Drawn
where
    DB::ErrorType: 'static,
{
    let mut labelled = std::collections::BTreeSet::new();
    for w in windows {
        let c = fault_color(&w.fault);
        let series = chart.draw_series(std::iter::once(Rectangle::new(
            [(w.start, y.0), (w.end, y.1)],
            c.mix(0.15).filled(),
        )))?;
        if labelled.insert(w.fault.clone()) {
            series.label(w.fault.clone()).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.mix(0.4).filled())
            });
        }
    }
    Ok(())
}

/// The nemesis legend, top right.
fn legend<'a, DB: DrawingBackend + 'a, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn timeline(spans: &[Span], lanes: &[String], windows: &[Window], path: &Path) -> Drawn {
    let t_max = spans.iter().map(|s| s.end).fold(1.0, f64::max);
    let height = 120 + 18 * lanes.len() as u32;
    let root = SVGBackend::new(path, (1600, height.max(300))).into_drawing_area();
    root.fill(&WHITE)?;
    let n = lanes.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "operations by process (green ok, red fail, grey unknown)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max, 0f64..n.max(1.0))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("seconds")
        .y_labels(lanes.len().max(1))
        .y_label_formatter(&|y| lanes.get(y.floor() as usize).cloned().unwrap_or_default())
        .draw()?;
    shade_windows(&mut chart, windows, (0.0, n))?;
    chart.draw_series(spans.iter().map(|s| {
        let lane = s.lane as f64;
        // At least a sliver wide, so instant operations show.
        let end = s.end.max(s.start + t_max / 4000.0);
        Rectangle::new(
            [(s.start, lane + 0.2), (end, lane + 0.8)],
            outcome_color(s.kind).filled(),
        )
    }))?;
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

fn latency(spans: &[Span], windows: &[Window], path: &Path) -> Drawn {
    let t_max = spans.iter().map(|s| s.end).fold(1.0, f64::max);
    let ms = |s: &Span| ((s.end - s.start) * 1000.0).max(0.1);
    let top = spans.iter().map(ms).fold(10.0, f64::max) * 1.5;
    let root = SVGBackend::new(path, (1600, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "latency by invocation time (green ok, red fail, grey unknown)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..t_max, (0.1f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("latency (ms)")
        .draw()?;
    shade_windows(&mut chart, windows, (0.1, top))?;
    chart.draw_series(
        spans
            .iter()
            .map(|s| Circle::new((s.start, ms(s)), 2, outcome_color(s.kind).filled())),
    )?;
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn draws_a_small_history() {
        let op = |p: &str, kind, f: &str, t| Op {
            process: p.into(),
            kind,
            f: f.into(),
            value: json!({}),
            time_ms: t,
        };
        let ops = vec![
            op("0", OpType::Invoke, "reserve", 0),
            op("nemesis", OpType::Info, "start-kill", 5),
            op("1", OpType::Invoke, "reserve", 10),
            op("0", OpType::Ok, "reserve", 20),
            op("1", OpType::Info, "reserve", 900),
            op("nemesis", OpType::Info, "stop-kill", 950),
            op("0", OpType::Invoke, "release", 960),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        write_all(&ops, dir.path()).expect("plots");
        let svg = std::fs::read_to_string(dir.path().join("timeline.svg")).expect("svg");
        assert!(svg.contains("<rect"), "bars drawn");
        assert!(svg.contains("kill"), "the nemesis window is labelled");
        assert!(dir.path().join("latency.svg").is_file());
    }
}
