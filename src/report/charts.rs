//! Charts with plotters, each written as SVG and PNG. Text is drawn with the
//! DejaVu fonts embedded in the binary (the `dejavu` crate, registered with
//! plotters' ab_glyph backend), so no system fonts are needed.

use super::{ReportMeta, pareto_front};
use crate::analysis::summary::TensorAnalysis;
use crate::error::{Error, Result};
use crate::experiment::ResultRow;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::collections::BTreeMap;
use std::path::Path;

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// A chart written to `<stem>.svg` and `<stem>.png`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub stem: String,
    pub title: String,
}

/// Register the embedded DejaVu fonts under the family names plotters uses
/// ("sans-serif", "serif", "monospace"). Idempotent.
pub fn register_fonts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for fam in ["sans-serif", "serif"] {
            let _ = plotters::style::register_font(fam, FontStyle::Normal, dejavu::sans::regular());
            let _ = plotters::style::register_font(fam, FontStyle::Bold, dejavu::sans::bold());
            let _ = plotters::style::register_font(fam, FontStyle::Oblique, dejavu::sans::oblique());
            let _ = plotters::style::register_font(fam, FontStyle::Italic, dejavu::sans::oblique());
        }
        let _ = plotters::style::register_font("monospace", FontStyle::Normal, dejavu::sans_mono::regular());
    });
}

const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Draw with `$f(&root, args...)` into an SVG string and a PNG file, both
/// written under a temporary name and renamed.
macro_rules! both {
    ($dir:expr, $stem:expr, $size:expr, $f:ident ( $($arg:expr),* )) => {{
        let dir: &Path = $dir;
        let stem: &str = $stem;
        let size: (u32, u32) = $size;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            root.fill(&WHITE)?;
            $f(&root, $($arg),*)?;
            root.present()?;
        }
        let svg_path = dir.join(format!("{stem}.svg"));
        crate::io::write_atomic(&svg_path, |w| std::io::Write::write_all(w, svg.as_bytes()))?;
        let png_path = dir.join(format!("{stem}.png"));
        let tmp = dir.join(format!(".{stem}.{}.tmp.png", std::process::id()));
        let drawn: DrawResult = (|| {
            let root = BitMapBackend::new(&tmp, size).into_drawing_area();
            root.fill(&WHITE)?;
            $f(&root, $($arg),*)?;
            root.present()?;
            Ok(())
        })();
        if let Err(e) = drawn {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &png_path)?;
    }};
}

/// One point of the ratio / throughput chart: a codec over its cells.
#[derive(Debug, Clone)]
struct CodecPoint {
    codec: String,
    lossless: bool,
    ratio: f64,
    mbps: f64,
}

/// The measured cells among `cells` that a chart plots: its whole-file
/// cells when it has any, else its tensor cells (one granularity per chart),
/// and whether they are whole files.
fn one_granularity<'a>(cells: impl Iterator<Item = &'a ResultRow>) -> (Vec<&'a ResultRow>, bool) {
    let measured: Vec<&ResultRow> = cells.filter(|r| r.available && r.compressed_bytes.is_some()).collect();
    let files = measured.iter().any(|r| r.tensor == "*");
    (measured.into_iter().filter(|r| (r.tensor == "*") == files).collect(), files)
}

/// Per codec: summed ratio and decompression throughput (the cells' bytes
/// over their total time, each cell at its median repetition), all from one
/// granularity: the whole-file cells when the rows have any (our codecs and
/// the command-line peers then stand on the same footing), else the tensor
/// cells. Returns the points and the granularity's name for the title.
fn codec_points(rows: &[ResultRow]) -> (Vec<CodecPoint>, &'static str) {
    let (cells, files) = one_granularity(rows.iter());
    let mut by: BTreeMap<&str, Vec<&ResultRow>> = BTreeMap::new();
    for r in cells {
        by.entry(r.codec.as_str()).or_default().push(r);
    }
    let pts = by
        .into_iter()
        .filter_map(|(codec, cells)| {
            let orig: u64 = cells.iter().map(|r| r.original_bytes).sum();
            let comp: u64 = cells.iter().filter_map(|r| r.compressed_bytes).sum();
            let timed: Vec<(f64, f64)> = cells
                .iter()
                .filter_map(|r| r.decompress_mbps_median.filter(|m| *m > 0.0).map(|m| (r.original_bytes as f64, m)))
                .collect();
            let secs: f64 = timed.iter().map(|(b, m)| b / m).sum();
            let mbps = timed.iter().map(|(b, _)| b).sum::<f64>() / secs;
            (orig > 0 && mbps.is_finite() && mbps > 0.0).then(|| CodecPoint {
                codec: codec.to_string(),
                lossless: cells[0].lossless,
                ratio: comp as f64 / orig as f64,
                mbps,
            })
        })
        .collect();
    (pts, if files { "whole files" } else { "tensor cells" })
}

fn log_range(vals: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) =
        vals.filter(|x| x.is_finite() && *x > 0.0).fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    (hi > 0.0).then(|| (lo / 2.0, hi * 2.0))
}

fn draw_pareto<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, pts: &[CodecPoint], title: &str) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (xlo, xhi) = log_range(pts.iter().map(|p| p.mbps)).unwrap_or((1.0, 10.0));
    let ymax = pts.iter().map(|p| p.ratio * 100.0).fold(0.0f64, f64::max).max(1.0) * 1.08;
    let ymin = (pts.iter().map(|p| p.ratio * 100.0).fold(f64::INFINITY, f64::min) * 0.9).min(ymax * 0.5).max(0.0);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((xlo..xhi).log_scale(), ymin..ymax)?;
    chart
        .configure_mesh()
        .x_desc("decompression throughput, MB/s (log scale; higher is better)")
        .y_desc("compressed size, % of original (lower is better)")
        .x_labels(8)
        .x_label_formatter(&|v| if *v < 10.0 { format!("{v:.1}") } else { format!("{v:.0}") })
        .y_label_formatter(&|v| format!("{v:.0} %"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    let lossless: Vec<usize> = (0..pts.len()).filter(|&i| pts[i].lossless).collect();
    let xy: Vec<(f64, f64)> = lossless.iter().map(|&i| (pts[i].mbps, pts[i].ratio * 100.0)).collect();
    let front: Vec<usize> = pareto_front(&xy).into_iter().map(|k| lossless[k]).collect();
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(front.iter().map(|&i| (pts[i].mbps, pts[i].ratio * 100.0)), red.stroke_width(2)))?
        .label("Pareto front (lossless)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(2)));
    let blue = color(0);
    let grey = RGBColor(120, 120, 120);
    chart
        .draw_series(pts.iter().enumerate().map(|(i, p)| {
            let on = front.contains(&i);
            let c = if on {
                red
            } else if p.lossless {
                blue
            } else {
                grey
            };
            let marker: DynElement<DB, (f64, f64)> = if p.lossless {
                Circle::new((p.mbps, p.ratio * 100.0), if on { 6 } else { 4 }, c.filled()).into_dyn()
            } else {
                TriangleMarker::new((p.mbps, p.ratio * 100.0), 6, c.filled()).into_dyn()
            };
            marker
        }))?
        .label("codec (triangle: lossy)")
        .legend(move |(x, y)| Circle::new((x + 10, y), 4, blue.filled()));
    // Labels placed greedily so that they do not overlap (estimated boxes in pixels).
    let mut order: Vec<usize> = (0..pts.len()).collect();
    order.sort_by(|&a, &b| pts[a].mbps.total_cmp(&pts[b].mbps).then(a.cmp(&b)));
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    let mut labels = Vec::new();
    for i in order {
        let p = &pts[i];
        let (px, py) = chart.backend_coord(&(p.mbps, p.ratio * 100.0));
        let w = 7 * p.codec.chars().count() as i32 + 8;
        let dy = [-16, 4, -30, 18, -44, 32, -58, 46]
            .into_iter()
            .find(|&dy| {
                let b = (px + 6, py + dy, px + 6 + w, py + dy + 13);
                !placed.iter().any(|q| b.0 < q.2 && q.0 < b.2 && b.1 < q.3 && q.1 < b.3)
            })
            .unwrap_or(4);
        placed.push((px + 6, py + dy, px + 6 + w, py + dy + 13));
        labels.push((p.codec.clone(), (p.mbps, p.ratio * 100.0), dy));
    }
    chart.draw_series(
        labels
            .into_iter()
            .map(|(text, at, dy)| EmptyElement::at(at) + Text::new(text, (6, dy), ("sans-serif", 12).into_font())),
    )?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}

/// Per tensor: ratio of the best `k` lossless codecs against the tensor's floor.
fn draw_floor<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, series: &[(String, Vec<(f64, f64)>)]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let all = series.iter().flat_map(|(_, v)| v.iter());
    let max = all.clone().map(|&(x, y)| x.max(y)).fold(0.0f64, f64::max).max(0.05) * 100.0 * 1.05;
    let min = (all.map(|&(x, y)| x.min(y)).fold(f64::INFINITY, f64::min) * 100.0 * 0.9).min(max * 0.5).max(0.0);
    let mut chart = ChartBuilder::on(root)
        .caption("Per-tensor ratio against the order-0 floor", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(min..max, min..max)?;
    chart
        .configure_mesh()
        .x_desc("order-0 floor of the tensor, % of original")
        .y_desc("achieved size, % of original")
        .x_label_formatter(&|v| format!("{v:.0} %"))
        .y_label_formatter(&|v| format!("{v:.0} %"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    chart
        .draw_series(LineSeries::new([(min, min), (max, max)], BLACK.stroke_width(1)))?
        .label("ratio = floor")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    for (k, (codec, pts)) in series.iter().enumerate() {
        let c = color(k);
        chart
            .draw_series(pts.iter().map(move |&(x, y)| Circle::new((x * 100.0, y * 100.0), 3, c.filled())))?
            .label(codec.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

fn draw_bytes<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, t: &TensorAnalysis, label: &str) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (top, rest) = root.split_vertically(40);
    top.draw(&Text::new(
        format!("Byte histograms per plane: {label}, {} ({} tensors, {} weights)", t.dtype, t.tensors, t.numel),
        (15, 10),
        ("sans-serif", 20).into_font(),
    ))?;
    let panels = rest.split_evenly((t.planes.len().max(1), 1));
    for (panel, pl) in panels.iter().zip(t.planes.iter().rev()) {
        let total: u64 = pl.histogram.iter().sum::<u64>().max(1);
        let shares: Vec<f64> = pl.histogram.iter().map(|&c| 100.0 * c as f64 / total as f64).collect();
        let ymax = shares.iter().copied().fold(0.0f64, f64::max).max(0.01) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("plane {} ({}): entropy {:.3} bits", pl.plane, pl.holds, pl.entropy), ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..256f64, 0f64..ymax)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(17)
            .x_label_formatter(&|v| format!("0x{:02x}", (*v as u32).min(255)))
            .y_label_formatter(&|v| format!("{v:.1} %"))
            .label_style(("sans-serif", 12))
            .draw()?;
        let c = color(0);
        chart.draw_series(
            shares
                .iter()
                .enumerate()
                .filter(|(_, s)| **s > 0.0)
                .map(|(b, &s)| Rectangle::new([(b as f64, 0.0), (b as f64 + 0.9, s)], c.filled())),
        )?;
    }
    Ok(())
}

fn draw_exponents<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, t: &TensorAnalysis, label: &str) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let h = &t.exponent_histogram;
    let total: u64 = h.iter().sum::<u64>().max(1);
    let nz: Vec<usize> = (0..h.len()).filter(|&i| h[i] > 0).collect();
    let (lo, hi) = (*nz.first().unwrap_or(&0), *nz.last().unwrap_or(&0));
    let bias = t.exponent_bias as f64;
    let ymax = h.iter().map(|&c| 100.0 * c as f64 / total as f64).fold(0.0f64, f64::max).max(0.01) * 1.1;
    let hexp = t.fields.as_ref().map_or(0.0, |f| f.exponent);
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Exponent histogram: {label}, {} (H = {hexp:.3} bits, {} distinct)", t.dtype, nz.len()),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((lo as f64 - bias - 1.0)..(hi as f64 - bias + 2.0), 0f64..ymax)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("unbiased exponent e (value = ±2^e × 1.m; the lowest raw exponent is zero/subnormal)")
        .y_desc("share of weights")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.1} %"))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()?;
    let c = color(2);
    chart.draw_series(nz.iter().map(|&i| {
        let x = i as f64 - bias;
        Rectangle::new([(x, 0.0), (x + 0.85, 100.0 * h[i] as f64 / total as f64)], c.filled())
    }))?;
    Ok(())
}

/// One curve of a chart: a family and its points (x, y, codec).
type Curve = (String, Vec<(f64, f64, String)>);

/// Rate–distortion points of the lossy codecs: (family, [(error, size %, codec)]).
type RdSeries = Vec<Curve>;

/// Points grouped by family.
type Families = BTreeMap<String, Vec<(f64, f64, String)>>;

/// A chart's curves: each family's points in x order.
fn curves(fams: Families) -> Vec<Curve> {
    fams.into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            (k, v)
        })
        .collect()
}

/// Every family of a chart's curves, sorted, once (a family's colour is
/// its place here, the same in every panel).
fn family_names<'a>(curves: impl Iterator<Item = &'a Curve>) -> Vec<String> {
    let mut fams: Vec<String> = curves.map(|(f, _)| f.clone()).collect();
    fams.sort();
    fams.dedup();
    fams
}

/// Draw `title` across the top of `root`; the area below it.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    size: u32,
) -> std::result::Result<DrawingArea<DB, Shift>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let (top, rest) = root.split_vertically(36);
    top.draw(&Text::new(title, (15, 8), ("sans-serif", size).into_font()))?;
    Ok(rest)
}

/// One model's rate–distortion panels: the model, its points against RMSE /
/// std and against max abs error / absmax.
type RdModel = (String, RdSeries, RdSeries);

/// Rate–distortion per model (dataset:variant), one curve per codec family,
/// from the whole-file cells when there are any, else each codec's tensor
/// cells summed. Errors are on the scale of the tensors' values (see
/// [`crate::metrics::error`]); points of different models never share a line.
fn rd_series(rows: &[ResultRow]) -> Vec<RdModel> {
    let mut by: BTreeMap<(String, &str), Vec<&ResultRow>> = BTreeMap::new();
    for r in one_granularity(rows.iter().filter(|r| !r.lossless)).0 {
        by.entry((format!("{}:{}", r.dataset, r.variant), r.codec.as_str())).or_default().push(r);
    }
    let mut models: BTreeMap<String, (Families, Families)> = BTreeMap::new();
    for ((model, codec), cells) in by {
        let orig: u64 = cells.iter().map(|r| r.original_bytes).sum();
        let comp: u64 = cells.iter().filter_map(|r| r.compressed_bytes).sum();
        if orig == 0 {
            continue;
        }
        let size = comp as f64 / orig as f64 * 100.0;
        let family = quality_family(codec);
        let m = models.entry(model).or_default();
        let (se, n) = cells
            .iter()
            .filter_map(|r| r.rmse_rel_std.map(|e| (e * e * r.numel as f64, r.numel as f64)))
            .fold((0.0, 0.0), |(a, b), (c, d)| (a + c, b + d));
        let rel_std = (se / n).sqrt();
        if n > 0.0 && rel_std > 0.0 && rel_std.is_finite() {
            m.0.entry(family.clone()).or_default().push((rel_std, size, codec.to_string()));
        }
        let worst = cells.iter().filter_map(|r| r.max_abs_rel_absmax).fold(f64::NAN, f64::max);
        if worst > 0.0 && worst.is_finite() {
            m.1.entry(family).or_default().push((worst, size, codec.to_string()));
        }
    }
    models
        .into_iter()
        .map(|(model, (a, b))| (model, curves(a), curves(b)))
        .filter(|(_, a, b)| !a.is_empty() || !b.is_empty())
        .collect()
}

fn draw_rd_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &RdSeries,
    caption: &str,
    xdesc: &str,
    fams: &[String],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (xlo, xhi) = log_range(s.iter().flat_map(|(_, v)| v.iter().map(|p| p.0))).unwrap_or((1e-6, 1.0));
    let ymax = s.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 15))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((xlo..xhi).log_scale(), 0f64..ymax)?;
    chart
        .configure_mesh()
        .x_desc(format!("{xdesc} (log scale)"))
        .y_desc("compressed size, % of original")
        .x_labels(6)
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .y_label_formatter(&|v| format!("{v:.0} %"))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()?;
    for (fam, pts) in s {
        let c = color(fams.iter().position(|f| f == fam).unwrap_or(0));
        chart
            .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))?
            .label(fam.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart.draw_series(pts.iter().map(|p| Circle::new((p.0, p.1), 4, c.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()?;
    Ok(())
}

fn draw_rd<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, models: &[RdModel]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let fams = family_names(models.iter().flat_map(|(_, a, b)| a.iter().chain(b)));
    let rest = titled(
        root,
        "Rate-distortion of the lossy codecs, one column per model (errors on the scale of each tensor's values)",
        18,
    )?;
    let areas = rest.split_evenly((2, models.len().max(1)));
    let n = models.len().max(1);
    for (k, (model, rel_std, absmax)) in models.iter().enumerate() {
        draw_rd_panel(&areas[k], rel_std, &format!("{model}: RMSE / std"), "RMSE / standard deviation", &fams)?;
        draw_rd_panel(
            &areas[n + k],
            absmax,
            &format!("{model}: max error / absmax"),
            "max abs error / max |x|",
            &fams,
        )?;
    }
    Ok(())
}

/// One panel of the model-quality chart: a model, its quality-loss measure,
/// and per codec family the points (bits per weight, loss, codec).
type QualityPanel = (String, &'static str, Vec<Curve>);

/// The quality loss of a whole-file cell with model metrics: 1 - mean cosine
/// (sentence embeddings) or |perplexity change| in % (causal LM).
fn quality_loss(r: &ResultRow) -> Option<(&'static str, f64)> {
    if let Some(c) = r.cosine_mean {
        return Some(("1 - mean cosine of the embeddings", 1.0 - c));
    }
    r.ppl_delta_pct.map(|d| ("|perplexity change|, %", d.abs()))
}

/// The curve a cell belongs to on the quality chart: its codec's first stage
/// (`round`, `sz`, `int8`, `fp8`…), `int8`/`int4` on all tensors apart from
/// the selective ones, `sz` by its kind of bound (`sz abs`, `sz rel`), a
/// peer by its name and bound (`peer:sz3 abs=1e-3` is `sz3 abs`).
fn quality_family(codec: &str) -> String {
    // an error-bounded sweep is one curve per kind of bound: `sz abs`, `sz rel`
    let bound = |stage: &str| {
        ["abs", "rel"].into_iter().find(|k| stage.split([':', ',', ' ']).any(|p| p.starts_with(&format!("{k}="))))
    };
    if let Some(p) = codec.strip_prefix("peer:") {
        let name = p.split_whitespace().next().unwrap_or(p);
        return match bound(p) {
            Some(k) => format!("{name} {k}"),
            None => name.to_string(),
        };
    }
    let stage = codec.split('>').next().unwrap_or(codec);
    let first = stage.split(':').next().unwrap_or(stage);
    if stage.contains("select=all") {
        format!("{first} (all tensors)")
    } else if let Some(k) = bound(stage).filter(|_| first == "sz") {
        format!("{first} {k}")
    } else {
        first.to_string()
    }
}

/// The Pareto front of a panel: the points no other beats on both bits per
/// weight and quality loss, in order of bits.
fn quality_front(series: &[Curve]) -> Vec<(f64, f64)> {
    let all: Vec<(f64, f64)> = series.iter().flat_map(|(_, v)| v.iter().map(|p| (p.0, p.1))).collect();
    // pareto_front maximises x: fewer bits is better
    let neg: Vec<(f64, f64)> = all.iter().map(|p| (-p.0, p.1)).collect();
    let mut front: Vec<(f64, f64)> = pareto_front(&neg).into_iter().map(|k| all[k]).collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    front
}

/// Panels of the model-quality chart, one per model (dataset:variant); each
/// family's points in order of bits per weight. Zero losses (lossless, or
/// below the metric's resolution) cannot sit on the log axis and are left out.
fn quality_panels(rows: &[ResultRow]) -> Vec<QualityPanel> {
    let mut by: BTreeMap<String, (&'static str, Families)> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.tensor == "*" && r.available) {
        let (Some(bpw), Some((what, loss))) = (r.bits_per_weight, quality_loss(r)) else { continue };
        if !(loss > 0.0 && loss.is_finite() && bpw.is_finite()) {
            continue;
        }
        let model = format!("{}:{}", r.dataset, r.variant);
        let e = by.entry(model).or_insert((what, BTreeMap::new()));
        e.1.entry(quality_family(&r.codec)).or_default().push((bpw, loss, r.codec.clone()));
    }
    by.into_iter().map(|(model, (what, fams))| (model, what, curves(fams))).collect()
}

fn draw_quality<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, panels: &[QualityPanel]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let fams = family_names(panels.iter().flat_map(|p| p.2.iter()));
    let rest =
        titled(root, "Quality loss vs bits per weight, Pareto front ringed (lossless: zero loss, not drawn)", 16)?;
    let areas = rest.split_evenly((1, panels.len().max(1)));
    for ((model, what, series), area) in panels.iter().zip(&areas) {
        let pts = || series.iter().flat_map(|(_, v)| v.iter());
        let (ylo, yhi) = log_range(pts().map(|p| p.1)).unwrap_or((1e-6, 1.0));
        let xmax = pts().map(|p| p.0).fold(1.0f64, f64::max) * 1.05;
        let mut chart = ChartBuilder::on(area)
            .caption(model.clone(), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..xmax, (ylo..yhi).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("bits per weight")
            .y_desc(format!("{what} (log)"))
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .draw()?;
        for (fam, v) in series {
            let c = color(fams.iter().position(|f| f == fam).unwrap_or(0));
            chart
                .draw_series(LineSeries::new(v.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))?
                .label(fam.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(v.iter().map(|p| Circle::new((p.0, p.1), 4, c.filled())))?;
        }
        let front = quality_front(series);
        chart
            .draw_series(LineSeries::new(front.iter().copied(), BLACK.stroke_width(1)))?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(1)));
        chart.draw_series(front.iter().map(|&p| Circle::new(p, 7, BLACK.stroke_width(1))))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 12))
            .draw()?;
    }
    Ok(())
}

fn write_all_charts(
    dir: &Path,
    rows: &[ResultRow],
    meta: &ReportMeta,
) -> std::result::Result<Vec<Chart>, Box<dyn std::error::Error>> {
    register_fonts();
    let mut out = Vec::new();
    let title = if meta.name.is_empty() { String::new() } else { format!("{}: ", meta.name) };

    let (pts, granularity) = codec_points(rows);
    if !pts.is_empty() {
        let t = format!("{title}size vs decompression throughput ({granularity}, total bytes / total time)");
        both!(dir, "ratio_vs_decompress", (1100, 700), draw_pareto(&pts, &t));
        out.push(Chart {
            stem: "ratio_vs_decompress".into(),
            title: format!(
                "Ratio vs decompression throughput ({granularity}: total bytes / total time), Pareto front in red"
            ),
        });
    }

    // Per-tensor ratio vs floor: the (up to) 8 lossless codecs with the smallest total.
    let mut best: Vec<&CodecPoint> = pts.iter().filter(|p| p.lossless).collect();
    best.sort_by(|a, b| a.ratio.total_cmp(&b.ratio).then(a.codec.cmp(&b.codec)));
    let series: Vec<(String, Vec<(f64, f64)>)> = best
        .iter()
        .take(8)
        .map(|p| {
            let v: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.codec == p.codec && r.tensor != "*" && r.available)
                .filter_map(|r| Some((r.floor_ratio?, r.ratio?)))
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            (p.codec.clone(), v)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if !series.is_empty() {
        both!(dir, "ratio_vs_floor", (1000, 800), draw_floor(&series));
        out.push(Chart { stem: "ratio_vs_floor".into(), title: "Per-tensor ratio against the order-0 floor".into() });
    }

    for (k, a) in meta.analyses.iter().enumerate() {
        let Some(t) = a.totals.first() else { continue };
        let sfx = if k == 0 { String::new() } else { format!("_{}", k + 1) };
        let stem = format!("byte_histograms{sfx}");
        let h = 80 + 230 * t.planes.len().max(1) as u32;
        both!(dir, &stem, (1100, h), draw_bytes(t, &a.label));
        out.push(Chart { stem, title: format!("Byte histograms per plane ({})", a.label) });
        if !t.exponent_histogram.is_empty() {
            let stem = format!("exponent_histogram{sfx}");
            both!(dir, &stem, (1100, 600), draw_exponents(t, &a.label));
            out.push(Chart { stem, title: format!("Exponent histogram ({})", a.label) });
        }
    }

    let rd = rd_series(rows);
    if !rd.is_empty() {
        let w = (80 + 520 * rd.len() as u32).max(1000);
        both!(dir, "rate_distortion", (w, 1000), draw_rd(&rd));
        out.push(Chart {
            stem: "rate_distortion".into(),
            title: "Rate-distortion per model: size vs RMSE / std and vs max abs error / absmax".into(),
        });
    }
    let panels = quality_panels(rows);
    if !panels.is_empty() {
        let w = 80 + 560 * panels.len() as u32;
        both!(dir, "quality_vs_bits", (w, 620), draw_quality(&panels));
        out.push(Chart {
            stem: "quality_vs_bits".into(),
            title: "Model quality loss vs bits per weight, one panel per model, one line per codec family".into(),
        });
    }
    Ok(out)
}

/// Write every chart that the rows and meta allow, as SVG and PNG, and
/// return what was written.
pub fn write_charts(dir: &Path, rows: &[ResultRow], meta: &ReportMeta) -> Result<Vec<Chart>> {
    write_all_charts(dir, rows, meta).map_err(|e| Error::invalid(format!("drawing charts in {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dataset: &str, codec: &str, bpw: f64, cos: Option<f64>, dppl: Option<f64>) -> ResultRow {
        ResultRow {
            dataset: dataset.into(),
            variant: "bf16".into(),
            tensor: "*".into(),
            codec: codec.into(),
            available: true,
            bits_per_weight: Some(bpw),
            cosine_mean: cos,
            ppl_delta_pct: dppl,
            ..Default::default()
        }
    }

    #[test]
    fn quality_panels_one_per_model_and_family_lines_in_bit_order() {
        let rows = vec![
            row("emb", "round:bits=4", 9.0, Some(0.9999), None),
            row("emb", "round:bits=1", 5.0, Some(0.99), None),
            row("emb", "sz:abs=1e-3", 6.0, Some(0.999), None),
            row("emb", "zstd:level=3", 14.0, Some(1.0), None), // zero loss: not on a log axis
            row("lm", "int4:block=32", 6.0, None, Some(-3.0)),
        ];
        let p = quality_panels(&rows);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, "emb:bf16");
        let fams: Vec<&str> = p[0].2.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fams, ["round", "sz abs"]);
        let round: Vec<f64> = p[0].2[0].1.iter().map(|x| x.0).collect();
        assert_eq!(round, [5.0, 9.0]);
        assert_eq!(p[1].2[0].1[0].1, 3.0, "|perplexity change|");
        let dir = tempfile::tempdir().unwrap();
        let charts = write_charts(dir.path(), &rows, &ReportMeta::default()).unwrap();
        assert!(charts.iter().any(|c| c.stem == "quality_vs_bits"));
        assert!(dir.path().join("quality_vs_bits.svg").is_file() && dir.path().join("quality_vs_bits.png").is_file());
    }

    #[test]
    fn quality_families_and_the_pareto_front() {
        assert_eq!(quality_family("peer:sz3 abs=1e-3"), "sz3 abs");
        assert_eq!(quality_family("peer:zipnn"), "zipnn");
        assert_eq!(quality_family("sz:rel=1e-3,coder=rans,pred=auto>zstd:level=3"), "sz rel");
        assert_eq!(quality_family("sz:abs=1e-3,coder=rans,pred=auto>zstd:level=3"), "sz abs");
        assert_eq!(quality_family("int4:block=32,select=all>exp:gain=2"), "int4 (all tensors)");
        assert_eq!(quality_family("int4:block=32>exp:gain=2"), "int4");
        assert_eq!(quality_family("round:bits=3"), "round");
        let rows = vec![
            row("emb", "round:bits=4", 9.0, Some(0.9999), None),
            row("emb", "round:bits=1", 5.0, Some(0.99), None),
            row("emb", "sz:abs=1e-3", 6.0, Some(0.999), None),
            // beaten by sz:abs=1e-3 on both counts: not on the front
            row("emb", "int8:block=32", 7.0, Some(0.998), None),
        ];
        let p = quality_panels(&rows);
        let front = quality_front(&p[0].2);
        let bits: Vec<f64> = front.iter().map(|f| f.0).collect();
        assert_eq!(bits, [5.0, 6.0, 9.0]);
    }

    #[test]
    fn throughput_is_total_bytes_over_total_time_in_one_granularity() {
        let cell = |codec: &str, tensor: &str, bytes: u64, mbps: f64| ResultRow {
            codec: codec.into(),
            tensor: tensor.into(),
            available: true,
            lossless: true,
            original_bytes: bytes,
            compressed_bytes: Some(bytes / 2),
            decompress_mbps_median: Some(mbps),
            ..Default::default()
        };
        // three tiny slow tensors and one large fast one: the median would say 1 MB/s
        let mut rows: Vec<ResultRow> = (0..3).map(|i| cell("exp", &format!("t{i}"), 10, 1.0)).collect();
        rows.push(cell("exp", "big", 1_000_000, 1000.0));
        let (pts, g) = codec_points(&rows);
        assert_eq!(g, "tensor cells");
        let want = 1_000_030.0 / (1_000_000.0 / 1000.0 + 30.0);
        assert!((pts[0].mbps - want).abs() < 1e-9, "{} vs {want}", pts[0].mbps);
        // with whole-file cells present, only they are plotted (ours and a peer alike)
        rows.push(cell("exp", "*", 2_000_000, 800.0));
        rows.push(cell("peer:zstd-cli -3", "*", 2_000_000, 600.0));
        let (pts, g) = codec_points(&rows);
        assert_eq!(g, "whole files");
        let m: Vec<(String, f64)> = pts.iter().map(|p| (p.codec.clone(), p.mbps)).collect();
        assert_eq!(m, [("exp".to_string(), 800.0), ("peer:zstd-cli -3".to_string(), 600.0)]);
    }

    #[test]
    fn rate_distortion_is_per_model_on_scaled_errors() {
        let cell = |dataset: &str, codec: &str, bytes: u64, rel_std: f64, absmax: f64| ResultRow {
            dataset: dataset.into(),
            variant: "bf16".into(),
            tensor: "*".into(),
            codec: codec.into(),
            available: true,
            original_bytes: 1000,
            numel: 500,
            compressed_bytes: Some(bytes),
            rmse_rel_std: Some(rel_std),
            max_abs_rel_absmax: Some(absmax),
            // a pointwise relative error near zero: not plotted any more
            max_rel_err: Some(1e28),
            ..Default::default()
        };
        let rows = vec![
            cell("a", "sz:abs=1e-3", 300, 0.01, 0.1),
            cell("a", "sz:abs=1e-2", 100, 0.1, 0.5),
            cell("b", "sz:abs=1e-3", 400, 0.02, 0.2),
            cell("b", "int8:block=32", 250, 0.005, 0.01),
            ResultRow { lossless: true, ..cell("a", "zstd:level=3", 900, 0.0, 0.0) },
        ];
        let rd = rd_series(&rows);
        let models: Vec<&str> = rd.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(models, ["a:bf16", "b:bf16"]);
        // model a: one sz curve of two points in error order; no line reaches model b
        assert_eq!(rd[0].1.len(), 1);
        let xs: Vec<f64> = rd[0].1[0].1.iter().map(|p| p.0).collect();
        assert_eq!(xs, [0.01, 0.1]);
        assert_eq!(rd[1].1.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["int8", "sz abs"]);
        assert_eq!(rd[1].2[1].1[0], (0.2, 40.0, "sz:abs=1e-3".to_string()));
        let dir = tempfile::tempdir().unwrap();
        let charts = write_charts(dir.path(), &rows, &ReportMeta::default()).unwrap();
        assert!(charts.iter().any(|c| c.stem == "rate_distortion"));
    }
}
