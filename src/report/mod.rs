//! Reports: result rows to `results.parquet` and `results.csv` (Polars),
//! `summary.md` (markdown tables grouped and sorted with Polars) and charts
//! (plotters, SVG and PNG, text drawn with an embedded DejaVu font).
//!
//! The metadata types and the Pareto front are in every build; writing and
//! reading tables and charts needs the `lab` feature.
//!
//! A report directory holds everything needed to render it again:
//! `results.parquet` (the rows) and `meta.json` ([`ReportMeta`]), so
//! `weightlab report NAME` re-renders identical tables without re-running.
//! The presentation (the grouped layout, published numbers, description) can
//! be taken again from the experiment file ([`rerender_with`]): the report
//! then follows the current `[layout]`/`[[groups]]`/`[published]` while every
//! number still comes from the saved rows.

use crate::analysis::FileAnalysis;
use crate::analysis::summary::TensorAnalysis;
use crate::analysis::tables::PublishedEntropy;
use crate::experiment::spec::Layout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[cfg(feature = "lab")]
mod charts;
#[cfg(feature = "lab")]
mod frame;
#[cfg(feature = "lab")]
mod markdown;

#[cfg(feature = "lab")]
pub use charts::{register_fonts, write_charts};
#[cfg(feature = "lab")]
pub use frame::{read_rows, rows_to_frame, write_csv, write_parquet};
#[cfg(feature = "lab")]
pub use markdown::summary_markdown;

/// Everything about a report that is not in the rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportMeta {
    /// Experiment name (the report directory's name).
    pub name: String,
    pub description: String,
    /// Machine description (CPU, cores, memory, OS, rustc, git commit) as the
    /// runner collected it; written to `machine.json` when not null.
    #[serde(default)]
    pub machine: serde_json::Value,
    /// Analyses of the datasets (byte and exponent histograms, Tables 3.1–3.3).
    #[serde(default)]
    pub analyses: Vec<AnalysisInput>,
    /// Published entropy numbers to place beside the analyses' tables.
    #[serde(default)]
    pub published_entropy: Option<PublishedEntropy>,
    /// Published numbers per codec spec, shown in a column beside ours in the
    /// per-codec table (free text as published, e.g. "ratio 66.4 %").
    #[serde(default)]
    pub published_by_codec: BTreeMap<String, String>,
    /// Heading of that column ("theirs (Qwen2-0.5B, as published)").
    #[serde(default)]
    pub published_label: String,
    /// Published tables reproduced as they are, after ours.
    #[serde(default)]
    pub published: Vec<ReferenceTable>,
    /// The experiment's grouped table (`[layout]`, `[[groups]]`).
    #[serde(default)]
    pub layout: Layout,
    /// The experiment's `notes`: a Notes section.
    #[serde(default)]
    pub notes: String,
    /// `[outputs] per_tensor`: the per-tensor and per-tensor-class tables.
    #[serde(default)]
    pub per_tensor: bool,
}

/// The part of a file's analysis a report draws: the per-dtype totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisInput {
    /// Dataset (and variant) the analysis describes.
    pub label: String,
    pub totals: Vec<TensorAnalysis>,
    /// Sum of per-tensor floors as a fraction of the tensor data.
    pub floor_ratio_per_tensor: f64,
}

impl AnalysisInput {
    pub fn from_file(label: impl Into<String>, a: &FileAnalysis) -> AnalysisInput {
        AnalysisInput {
            label: label.into(),
            totals: a.totals.clone(),
            floor_ratio_per_tensor: a.floor_ratio_per_tensor,
        }
    }
}

/// A table from a publication, typed in as published.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceTable {
    pub title: String,
    /// Where it comes from and what it measured.
    pub source: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Indices of the points on the Pareto front when `x` is to be maximised
/// (throughput) and `y` minimised (ratio), sorted by increasing `x`. A point
/// is on the front when no other point is at least as good in both and
/// strictly better in one. Points with a non-finite coordinate are ignored.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let ok = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| ok(&points[i]))
        .filter(|&i| {
            let (x, y) = points[i];
            !points.iter().any(|q| ok(q) && q.0 >= x && q.1 <= y && (q.0 > x || q.1 < y))
        })
        .collect();
    front.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0).then(a.cmp(&b)));
    front
}

/// Write everything: `results.parquet`, `results.csv`, `meta.json`,
/// `machine.json` (when the meta has one), `summary.md` and the charts.
#[cfg(feature = "lab")]
pub fn write_all(dir: &std::path::Path, rows: &[crate::experiment::ResultRow], meta: &ReportMeta) -> crate::Result<()> {
    use crate::error::Error;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut df = rows_to_frame(rows)?;
    write_parquet(&dir.join("results.parquet"), &mut df)?;
    write_csv(&dir.join("results.csv"), &mut df)?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| Error::invalid(format!("meta.json: {e}")))?;
    crate::io::write_atomic(&dir.join("meta.json"), |w| std::io::Write::write_all(w, &json))?;
    if !meta.machine.is_null() {
        let m = serde_json::to_vec_pretty(&meta.machine).map_err(|e| Error::invalid(format!("machine.json: {e}")))?;
        crate::io::write_atomic(&dir.join("machine.json"), |w| std::io::Write::write_all(w, &m))?;
    }
    render(dir, rows, meta)
}

/// Render `summary.md` and the charts from rows and meta.
#[cfg(feature = "lab")]
fn render(dir: &std::path::Path, rows: &[crate::experiment::ResultRow], meta: &ReportMeta) -> crate::Result<()> {
    let charts = write_charts(dir, rows, meta)?;
    let md = summary_markdown(rows, meta, &charts)?;
    crate::io::write_atomic(&dir.join("summary.md"), |w| std::io::Write::write_all(w, md.as_bytes()))
}

/// Re-render `summary.md` and the charts of a report directory from its
/// `results.parquet` and `meta.json`. Returns the number of rows.
#[cfg(feature = "lab")]
pub fn rerender(dir: &std::path::Path) -> crate::Result<usize> {
    rerender_with(dir, None)
}

/// [`rerender`], with the presentation taken from `exp` when given: its
/// description, `[layout]`/`[[groups]]` and `[published]` replace those in
/// `meta.json`, which is written back so the directory keeps re-rendering
/// the same by itself. The rows are not touched.
#[cfg(feature = "lab")]
pub fn rerender_with(dir: &std::path::Path, exp: Option<&crate::experiment::Experiment>) -> crate::Result<usize> {
    use crate::error::{Error, ResultExt};
    let rows = read_rows(&dir.join("results.parquet"))?;
    let meta_path = dir.join("meta.json");
    let meta: ReportMeta = match std::fs::read(&meta_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::invalid(format!("{}: {e}", meta_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ReportMeta {
            name: dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            ..Default::default()
        },
        Err(e) => return Err(Error::io(format!("reading {}", meta_path.display()), e)),
    };
    let meta = match exp {
        None => meta,
        Some(exp) => {
            let meta = ReportMeta {
                description: exp.description.clone(),
                layout: exp.layout.clone(),
                notes: exp.notes.clone(),
                per_tensor: exp.outputs.per_tensor,
                published: exp.published_tables.clone(),
                published_by_codec: exp.published.codecs.clone(),
                published_label: exp.published.label.clone(),
                ..meta
            };
            let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::invalid(format!("meta.json: {e}")))?;
            crate::io::write_atomic(&meta_path, |w| std::io::Write::write_all(w, &json))?;
            meta
        }
    };
    render(dir, &rows, &meta).with_context(|| format!("rendering {}", dir.display()))?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pareto_front_hand_computed() {
        // (throughput, ratio): 0 and 2 and 4 are on the front; 1 is dominated
        // by 2 (faster and smaller), 3 by 4 (equal speed, smaller), 5 is NaN.
        let pts = [(100.0, 0.70), (150.0, 0.80), (200.0, 0.75), (500.0, 0.95), (500.0, 0.90), (f64::NAN, 0.1)];
        assert_eq!(pareto_front(&pts), vec![0, 2, 4]);
        assert!(pareto_front(&[]).is_empty());
        // duplicates: both stay (neither strictly better)
        assert_eq!(pareto_front(&[(1.0, 1.0), (1.0, 1.0)]), vec![0, 1]);
    }
}
