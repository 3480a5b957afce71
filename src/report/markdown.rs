//! `summary.md`: markdown tables grouped and sorted with Polars.
//!
//! Ratios are compressed / original over the group's summed bytes (smaller is
//! better); the floor is the order-0 floor of the same tensors; throughputs are
//! the group's bytes over its total time (each cell timed by its median
//! repetition), per granularity: tensor cells and whole files are never
//! mixed in one table. Peers that are not
//! installed are listed as unavailable, never given numbers.
//!
//! An experiment with `[[groups]]` gets a grouped section first (the Aveiro
//! Table 4.1 layout for `bf16-planes`): one sub-table per group, its rows in
//! the order given, each from the codec's whole-file cells when it has any,
//! else from its tensor cells summed, with the published number beside it.

use super::ReportMeta;
use super::charts::Chart;
use super::frame::rows_to_frame;
use crate::analysis::tables::aveiro_tables;
use crate::error::{Error, Result};
use crate::experiment::ResultRow;
use crate::experiment::spec::Layout;
use polars::prelude::*;
use std::fmt::Write;

fn pe(e: PolarsError) -> Error {
    Error::invalid(format!("summary tables: {e}"))
}

/// A group's throughput: its cells' original bytes over their summed time
/// (a cell's time is its bytes over its median rate), so that a large tensor
/// weighs as much as its bytes, not as one cell among many tiny ones. Cells
/// without a rate count in neither sum.
fn total_rate(mbps: &str) -> Expr {
    let bytes = col("original_bytes").cast(DataType::Float64);
    let timed = col(mbps).is_not_null().and(col(mbps).gt(lit(0.0)));
    bytes.clone().filter(timed.clone()).sum() / (bytes / col(mbps)).filter(timed).sum()
}

/// The aggregates every grouped table uses.
fn aggregates() -> Vec<(&'static str, Expr)> {
    vec![
        ("family", col("family").first().alias("family")),
        ("lossless", col("lossless").first().alias("lossless")),
        ("bound", col("bound").first().alias("bound")),
        ("cells", len().alias("cells")),
        ("original", col("original_bytes").sum().alias("original")),
        ("compressed", col("compressed_bytes").sum().alias("compressed")),
        ("floor", col("floor_bytes").sum().alias("floor")),
        ("floor_cells", col("floor_bytes").count().alias("floor_cells")),
        ("c_mbps", total_rate("compress_mbps_median").alias("c_mbps")),
        ("d_mbps", total_rate("decompress_mbps_median").alias("d_mbps")),
        ("verified_cells", col("verified").cast(DataType::UInt32).sum().alias("verified_cells")),
        ("max_abs", col("max_abs_err").max().alias("max_abs")),
        ("max_rel", col("max_rel_err").max().alias("max_rel")),
        ("se_sum", (col("rmse") * col("rmse") * col("numel").cast(DataType::Float64)).sum().alias("se_sum")),
        ("se_n", col("numel").filter(col("rmse").is_not_null()).sum().alias("se_n")),
        (
            "se_std_sum",
            (col("rmse_rel_std") * col("rmse_rel_std") * col("numel").cast(DataType::Float64))
                .sum()
                .alias("se_std_sum"),
        ),
        ("se_std_n", col("numel").filter(col("rmse_rel_std").is_not_null()).sum().alias("se_std_n")),
        ("max_rel_absmax", col("max_abs_rel_absmax").max().alias("max_rel_absmax")),
        ("psnr_min", col("psnr").min().alias("psnr_min")),
        ("held", col("bound_held").cast(DataType::UInt32).sum().alias("held")),
        ("bound_checked", col("bound_held").count().alias("bound_checked")),
    ]
}

/// Group the available cells selected by `filter` by `by`, aggregate, and
/// sort by `by` minus its last key, then ratio, then the keys.
fn grouped(df: &DataFrame, filter: Expr, by: &[&str]) -> Result<DataFrame> {
    let keys: Vec<Expr> = by.iter().map(|k| col(*k)).collect();
    let mut sort_by: Vec<PlSmallStr> = by[..by.len() - 1].iter().map(|s| PlSmallStr::from(*s)).collect();
    sort_by.push("ratio".into());
    sort_by.extend(by.iter().map(|s| PlSmallStr::from(*s)));
    df.clone()
        .lazy()
        .filter(col("available").and(filter))
        .group_by(keys)
        .agg(aggregates().into_iter().filter(|(n, _)| !by.contains(n)).map(|(_, e)| e).collect::<Vec<_>>())
        .with_columns([
            (col("compressed").cast(DataType::Float64) / col("original").cast(DataType::Float64)).alias("ratio")
        ])
        .sort(sort_by, SortMultipleOptions::default())
        .collect()
        .map_err(pe)
}

fn get(df: &DataFrame, c: &str, i: usize) -> AnyValue<'static> {
    df.column(c).ok().and_then(|s| s.get(i).ok()).map(|v| v.into_static()).unwrap_or(AnyValue::Null)
}

fn num(v: &AnyValue) -> Option<f64> {
    match v {
        AnyValue::Null => None,
        AnyValue::Float64(x) => Some(*x),
        AnyValue::Float32(x) => Some(*x as f64),
        AnyValue::UInt64(x) => Some(*x as f64),
        AnyValue::UInt32(x) => Some(*x as f64),
        AnyValue::Int64(x) => Some(*x as f64),
        AnyValue::Int32(x) => Some(*x as f64),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

fn text(v: &AnyValue) -> String {
    match v {
        AnyValue::Null => String::new(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Boolean(b) => b.to_string(),
        other => other.to_string(),
    }
}

const DASH: &str = "–";

fn f_pct(x: Option<f64>) -> String {
    x.map_or(DASH.into(), |x| format!("{:.2} %", 100.0 * x))
}
fn f_mb(x: Option<f64>) -> String {
    x.map_or(DASH.into(), |x| format!("{:.3}", x / 1e6))
}
fn f_mbps(x: Option<f64>) -> String {
    x.map_or(DASH.into(), |x| if x < 10.0 { format!("{x:.2}") } else { format!("{x:.0}") })
}
fn f_sci(x: Option<f64>) -> String {
    x.map_or(DASH.into(), |x| format!("{x:.3e}"))
}

/// A cell of a grouped table.
#[derive(Clone, Copy)]
enum Cell {
    Key(&'static str),
    Mode,
    Cells,
    Original,
    Compressed,
    Ratio,
    Floor,
    VsFloor,
    CompressMbps,
    DecompressMbps,
    Verified,
    Bound,
    MaxAbs,
    MaxRel,
    Rmse,
    RmseRelStd,
    MaxRelAbsmax,
    PsnrMin,
    Held,
}

impl Cell {
    fn header(self) -> String {
        match self {
            Cell::Key(k) => k.replace('_', " "),
            Cell::Mode => "mode".into(),
            Cell::Cells => "cells".into(),
            Cell::Original => "original MB".into(),
            Cell::Compressed => "compressed MB".into(),
            Cell::Ratio => "ratio".into(),
            Cell::Floor => "order-0 floor".into(),
            Cell::VsFloor => "ratio ÷ floor".into(),
            Cell::CompressMbps => "compress MB/s".into(),
            Cell::DecompressMbps => "decompress MB/s".into(),
            Cell::Verified => "verified".into(),
            Cell::Bound => "bound".into(),
            Cell::MaxAbs => "max abs err".into(),
            Cell::MaxRel => "max rel err".into(),
            Cell::Rmse => "RMSE".into(),
            Cell::RmseRelStd => "RMSE / std".into(),
            Cell::MaxRelAbsmax => "max err / absmax".into(),
            Cell::PsnrMin => "PSNR min (dB)".into(),
            Cell::Held => "bound held".into(),
        }
    }
    fn right(self) -> bool {
        !matches!(self, Cell::Key(_) | Cell::Mode | Cell::Bound)
    }
    fn render(self, df: &DataFrame, i: usize) -> String {
        let n = |c: &str| num(&get(df, c, i));
        let floor = || {
            let (cells, fc) = (n("cells"), n("floor_cells"));
            if cells.is_some() && cells == fc { Some(n("floor")? / n("original")?) } else { None }
        };
        match self {
            Cell::Key(k) => text(&get(df, k, i)).replace('|', "\\|"),
            Cell::Mode => match get(df, "lossless", i) {
                AnyValue::Boolean(true) => "lossless".into(),
                AnyValue::Boolean(false) => "lossy".into(),
                _ => String::new(),
            },
            Cell::Cells => n("cells").map_or(DASH.into(), |x| format!("{x:.0}")),
            Cell::Original => f_mb(n("original")),
            Cell::Compressed => f_mb(n("compressed")),
            Cell::Ratio => f_pct(n("ratio")),
            Cell::Floor => f_pct(floor()),
            Cell::VsFloor => match (n("ratio"), floor()) {
                (Some(r), Some(f)) if f > 0.0 => format!("{:.3}", r / f),
                _ => DASH.into(),
            },
            Cell::CompressMbps => f_mbps(n("c_mbps")),
            Cell::DecompressMbps => f_mbps(n("d_mbps")),
            Cell::Verified => format!("{:.0}/{:.0}", n("verified_cells").unwrap_or(0.0), n("cells").unwrap_or(0.0)),
            Cell::Bound => text(&get(df, "bound", i)),
            Cell::MaxAbs => f_sci(n("max_abs")),
            Cell::MaxRel => f_sci(n("max_rel")),
            Cell::Rmse => match (n("se_sum"), n("se_n")) {
                (Some(s), Some(c)) if c > 0.0 => f_sci(Some((s / c).sqrt())),
                _ => DASH.into(),
            },
            Cell::RmseRelStd => match (n("se_std_sum"), n("se_std_n")) {
                (Some(s), Some(c)) if c > 0.0 => f_sci(Some((s / c).sqrt())),
                _ => DASH.into(),
            },
            Cell::MaxRelAbsmax => f_sci(n("max_rel_absmax")),
            Cell::PsnrMin => n("psnr_min").map_or(DASH.into(), |x| format!("{x:.2}")),
            Cell::Held => match (n("held"), n("bound_checked")) {
                (Some(h), Some(c)) if c > 0.0 => format!("{h:.0}/{c:.0}"),
                _ => DASH.into(),
            },
        }
    }
}

/// An extra last column: its heading and how to compute a cell from a row.
type Extra<'a> = Option<(&'a str, &'a dyn Fn(&DataFrame, usize) -> String)>;

/// Render a grouped frame; `extra` adds a last column computed from the row.
fn table(df: &DataFrame, cells: &[Cell], extra: Extra) -> String {
    let mut s = String::new();
    let mut head: Vec<String> = cells.iter().map(|c| c.header()).collect();
    let mut align: Vec<&str> = cells.iter().map(|c| if c.right() { "---:" } else { "---" }).collect();
    if let Some((h, _)) = extra {
        head.push(h.to_string());
        align.push("---");
    }
    let _ = writeln!(s, "| {} |", head.join(" | "));
    let _ = writeln!(s, "|{}|", align.join("|"));
    for i in 0..df.height() {
        let mut row: Vec<String> = cells.iter().map(|c| c.render(df, i)).collect();
        if let Some((_, f)) = extra {
            row.push(f(df, i));
        }
        let _ = writeln!(s, "| {} |", row.join(" | "));
    }
    s
}

const CODEC_CELLS: [Cell; 12] = [
    Cell::Key("codec"),
    Cell::Key("family"),
    Cell::Mode,
    Cell::Cells,
    Cell::Original,
    Cell::Compressed,
    Cell::Ratio,
    Cell::Floor,
    Cell::VsFloor,
    Cell::CompressMbps,
    Cell::DecompressMbps,
    Cell::Verified,
];

/// The columns of a layout sub-table (before `scope` and `published`).
const LAYOUT_CELLS: [Cell; 5] = [Cell::Ratio, Cell::Floor, Cell::CompressMbps, Cell::DecompressMbps, Cell::Verified];

/// The grouped section: one sub-table per group. Each entry is joined to the
/// per-codec aggregates of the whole-file cells and of the tensor cells; the
/// whole-file row is used when there is one.
fn layout_section(df: &DataFrame, rows: &[ResultRow], layout: &Layout) -> Result<String> {
    let files = grouped(df, col("tensor").eq(lit("*")), &["codec"])?;
    let tensors = grouped(df, col("tensor").neq(lit("*")), &["codec"])?;
    let title = if layout.title.is_empty() { "Grouped layout" } else { layout.title.as_str() };
    let pub_label = if layout.published_label.is_empty() { "published" } else { layout.published_label.as_str() };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## {title}
"
    );
    let _ = writeln!(
        s,
        "Each row: the codec's whole-file cells when the run has them, else its tensor cells summed (the \
         `cells` column says which). Ratio = compressed / original (smaller is better), with original / \
         compressed in brackets, the form the published column uses.\n"
    );
    let mut sources: Vec<String> = Vec::new();
    let mut missing: Vec<(String, String)> = Vec::new();
    for g in &layout.groups {
        let n = g.entries.len();
        let entries = DataFrame::new(
            n,
            vec![
                Column::new("order".into(), (0..n as u32).collect::<Vec<_>>()),
                Column::new("codec".into(), g.entries.iter().map(|e| e.codec.as_str()).collect::<Vec<_>>()),
            ],
        )
        .map_err(pe)?;
        let join = |agg: &DataFrame| -> Result<DataFrame> {
            entries
                .clone()
                .lazy()
                .join(agg.clone().lazy(), [col("codec")], [col("codec")], JoinArgs::new(JoinType::Left))
                .sort(["order"], SortMultipleOptions::default())
                .collect()
                .map_err(pe)
        };
        let (f, t) = (join(&files)?, join(&tensors)?);
        let _ = writeln!(
            s,
            "### {}
",
            g.name
        );
        let mut head = vec!["codec".to_string(), "cells".to_string()];
        head.extend(LAYOUT_CELLS.iter().map(|c| c.header()));
        head.push(pub_label.to_string());
        let _ = writeln!(s, "| {} |", head.join(" | "));
        let _ = writeln!(s, "|---|---:|{}|---|", vec!["---:"; LAYOUT_CELLS.len()].join("|"));
        for (i, e) in g.entries.iter().enumerate() {
            let measured = |d: &DataFrame| num(&get(d, "cells", i)).is_some();
            let mut row = vec![format!("`{}`", e.codec.replace('|', "\\|"))];
            if let Some((d, what)) = [(&f, "file"), (&t, "tensor")].into_iter().find(|(d, _)| measured(d)) {
                let k = num(&get(d, "cells", i)).unwrap_or(0.0);
                row.push(format!("{k:.0} {what}{}", if k == 1.0 { "" } else { "s" }));
                for c in LAYOUT_CELLS {
                    let mut cell = c.render(d, i);
                    if let (Cell::Ratio, Some(r)) = (c, num(&get(d, "ratio", i)))
                        && r > 0.0
                    {
                        cell = format!("{cell} ({:.2}×)", 1.0 / r);
                    }
                    row.push(cell);
                }
            } else {
                let note = rows.iter().find(|r| r.codec == e.codec && !r.available).map(|r| r.note.clone());
                row.push(DASH.into());
                row.push(if note.is_some() { "not measured".into() } else { "no cells in this run".into() });
                row.extend(std::iter::repeat_n(DASH.to_string(), LAYOUT_CELLS.len() - 1));
                if let Some(n) = note
                    && !missing.iter().any(|m| m.0 == e.codec)
                {
                    missing.push((e.codec.clone(), n));
                }
            }
            let mut published = if e.published.is_empty() { DASH.to_string() } else { e.published.replace('|', "\\|") };
            if !e.published.is_empty() && !e.source.is_empty() {
                let k = match sources.iter().position(|x| *x == e.source) {
                    Some(k) => k,
                    None => {
                        sources.push(e.source.clone());
                        sources.len() - 1
                    }
                };
                published = format!("{published} [{}]", k + 1);
            }
            row.push(published);
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        s += "\n";
    }
    for (codec, note) in &missing {
        let _ = writeln!(s, "- `{codec}` not measured: {note}");
    }
    if !missing.is_empty() {
        s += "\n";
    }
    for (k, src) in sources.iter().enumerate() {
        let _ = writeln!(s, "[{}] {}\n", k + 1, src.trim());
    }
    if !layout.notes.trim().is_empty() {
        let _ = writeln!(s, "{}\n", layout.notes.trim());
    }
    Ok(s)
}

/// Render `summary.md`.
/// The model-fidelity tables (`[fidelity]` rows): per model, every codec's
/// size and quality, then the smallest archive that keeps each quality level.
fn fidelity_section(rows: &[ResultRow]) -> String {
    let fid: Vec<&ResultRow> = rows.iter().filter(|r| r.tensor == "*" && r.bits_per_weight.is_some()).collect();
    if fid.is_empty() {
        return String::new();
    }
    let mut models: Vec<(String, bool)> =
        fid.iter().map(|r| (format!("{}:{}", r.dataset, r.variant), r.derived)).collect();
    models.sort();
    models.dedup();
    let f = |x: Option<f64>, p: usize| x.map_or(DASH.to_string(), |v| format!("{v:.p$}"));
    let e = |x: Option<f64>| x.map_or(DASH.to_string(), |v| format!("{v:.2e}"));
    let mut s = String::from("## Model fidelity (whole files, decoded weights run on fixed texts)\n\n");
    s += "Sentence embeddings: cosine of each text's embedding, original vs decoded model (mean, 1st percentile, min over the texts: 300 speeches of Hamlet unless `[fidelity] texts` replaces them), and top-10 neighbour agreement. Causal LM: perplexity on the fixed text, its change, top-1 next-token agreement, mean KL(original || decoded) in nats. Size: the archive, % of the original file.\n\n";
    for (model, derived) in &models {
        let mut rs: Vec<&&ResultRow> =
            fid.iter().filter(|r| format!("{}:{}", r.dataset, r.variant) == *model).collect();
        rs.sort_by(|a, b| a.compressed_bytes.cmp(&b.compressed_bytes).then(a.codec.cmp(&b.codec)));
        let lm = rs.iter().any(|r| r.ppl.is_some());
        let _ = writeln!(s, "### {model}{}\n", if *derived { " (derived)" } else { "" });
        if lm {
            s += "| codec | size | bits/weight | perplexity | change | top-1 agreement | mean KL |\n|---|---:|---:|---:|---:|---:|---:|\n";
        } else {
            s += "| codec | size | bits/weight | cosine mean | cosine p1 | cosine min | top-10 agreement |\n|---|---:|---:|---:|---:|---:|---:|\n";
        }
        for r in &rs {
            let size = r.ratio.map_or(DASH.to_string(), |x| format!("{:.2} %", 100.0 * x));
            if lm {
                let _ = writeln!(
                    s,
                    "| `{}` | {size} | {} | {} | {} | {} | {} |",
                    r.codec,
                    f(r.bits_per_weight, 3),
                    f(r.ppl, 4),
                    r.ppl_delta_pct.map_or(DASH.to_string(), |d| format!("{d:+.3} %")),
                    f(r.top1_agreement, 4),
                    e(r.kl_mean)
                );
            } else {
                let _ = writeln!(
                    s,
                    "| `{}` | {size} | {} | {} | {} | {} | {} |",
                    r.codec,
                    f(r.bits_per_weight, 3),
                    f(r.cosine_mean, 6),
                    f(r.cosine_p1, 6),
                    f(r.cosine_min, 6),
                    f(r.top10_agreement, 4)
                );
            }
        }
        s += "\n";
    }
    // the smallest archive at each quality level
    s += "### Smallest archive that keeps the model\n\n| model | quality level | smallest archive | bits/weight | codec |\n|---|---|---:|---:|---|\n";
    type Keep = fn(&ResultRow) -> Option<bool>;
    let levels: [(&str, Keep); 4] = [
        ("cosine mean ≥ 0.999", |r| r.cosine_mean.map(|c| c >= 0.999)),
        ("cosine mean ≥ 0.99", |r| r.cosine_mean.map(|c| c >= 0.99)),
        ("perplexity increase ≤ 0.1 %", |r| r.ppl_delta_pct.map(|d| d <= 0.1)),
        ("perplexity increase ≤ 1 %", |r| r.ppl_delta_pct.map(|d| d <= 1.0)),
    ];
    for (model, _) in &models {
        let rs: Vec<&&ResultRow> = fid.iter().filter(|r| format!("{}:{}", r.dataset, r.variant) == *model).collect();
        for (what, keep) in &levels {
            let cand: Vec<&&&ResultRow> = rs.iter().filter(|r| keep(r).is_some()).collect();
            if cand.is_empty() {
                continue;
            }
            let best =
                cand.iter().filter(|r| keep(r) == Some(true)).min_by_key(|r| (r.compressed_bytes, r.codec.clone()));
            match best {
                Some(r) => {
                    let _ = writeln!(
                        s,
                        "| {model} | {what} | {} | {} | `{}` |",
                        r.ratio.map_or(DASH.to_string(), |x| format!("{:.2} %", 100.0 * x)),
                        f(r.bits_per_weight, 3),
                        r.codec
                    );
                }
                None => {
                    let _ = writeln!(s, "| {model} | {what} | none measured | {DASH} | {DASH} |");
                }
            }
        }
    }
    s += "\n";
    s
}

/// What a cell does to its model, in a few words: perplexity change and top-1
/// agreement (causal LM), or mean cosine and top-10 agreement (embeddings).
fn quality_words(r: &ResultRow) -> String {
    match (r.ppl_delta_pct, r.cosine_mean) {
        (Some(d), _) => format!(
            "perplexity {d:+.3} %, top-1 agreement {}",
            r.top1_agreement.map_or(DASH.to_string(), |a| format!("{:.2} %", 100.0 * a))
        ),
        (None, Some(c)) => format!(
            "cosine mean {c:.6}, top-10 agreement {}",
            r.top10_agreement.map_or(DASH.to_string(), |a| format!("{:.2} %", 100.0 * a))
        ),
        (None, None) => DASH.to_string(),
    }
}

/// The seeds' three lossy claims as rows, our measured cells beside them:
/// per model, the `round`/`sz` cell whose mean relative error is nearest the
/// service's 1.06 %, the int8/int4 cells with the metric we call quality, and
/// the SZ cell (ours or SZ3's) whose ratio is nearest PySZ's 13.33x.
fn claims_section(rows: &[ResultRow]) -> String {
    let fid: Vec<&ResultRow> =
        rows.iter().filter(|r| r.tensor == "*" && r.bits_per_weight.is_some() && !r.lossless).collect();
    if fid.is_empty() {
        return String::new();
    }
    let mut models: Vec<String> = fid.iter().map(|r| format!("{}:{}", r.dataset, r.variant)).collect();
    models.sort();
    models.dedup();
    let of = |m: &str| -> Vec<&ResultRow> {
        fid.iter().copied().filter(|r| format!("{}:{}", r.dataset, r.variant) == m).collect()
    };
    let size = |r: &ResultRow| r.ratio.map_or(DASH.to_string(), |x| format!("{:.2} %", 100.0 * x));
    let first = |r: &ResultRow| r.codec.split([':', '>']).next().unwrap_or("").to_string();
    let mut s = String::from(
        "## The seeds' lossy claims beside our measurements

",
    );

    s += "**A commercial BF16 service** (seed 004): \"1.06% relative error\" at 47 % of the size, \"+0.077% increase in perplexity\". Ours: per BF16 model, the `round` or `sz` cell whose mean relative error (mean over the weights of |error| / |value|, zeros excluded) is nearest 1.06 %.\n\n";
    s += "| model | our cell | mean relative error | size | what it does to the model |\n|---|---|---:|---:|---|\n";
    for m in models.iter().filter(|m| m.ends_with(":bf16")) {
        let near = of(m)
            .into_iter()
            .filter(|r| matches!(first(r).as_str(), "round" | "sz") && r.mean_rel_err.is_some_and(|e| e > 0.0))
            .min_by(|a, b| {
                let d = |r: &ResultRow| (r.mean_rel_err.unwrap_or(f64::NAN) / 0.0106).ln().abs();
                d(a).total_cmp(&d(b))
            });
        if let Some(r) = near {
            let _ = writeln!(
                s,
                "| {m} | `{}` | {:.2} % | {} | {} |",
                r.codec,
                100.0 * r.mean_rel_err.unwrap_or(f64::NAN),
                size(r),
                quality_words(r)
            );
        }
    }

    s += "\n**INT8 + zstd at 99 % quality, INT4 + zstd at 98 %** (the Aveiro study, Table 4.2, seed 002; the study does not define its quality). Ours: the share of the original model's behaviour kept, top-1 next-token agreement for the causal LM and top-10 neighbour agreement for the embedding models, with perplexity change or mean cosine beside it. Blockwise absmax; the selective cells keep embeddings, norms and biases whole.\n\n";
    s += "| model | our cell | size | bits/weight | quality (agreement) | perplexity change / cosine mean |\n|---|---|---:|---:|---:|---:|\n";
    for m in &models {
        let mut ints: Vec<&ResultRow> =
            of(m).into_iter().filter(|r| matches!(first(r).as_str(), "int8" | "int4")).collect();
        ints.sort_by(|a, b| a.codec.cmp(&b.codec));
        for r in ints {
            let agree = r.top1_agreement.or(r.top10_agreement);
            let other = match (r.ppl_delta_pct, r.cosine_mean) {
                (Some(d), _) => format!("{d:+.3} %"),
                (None, Some(c)) => format!("{c:.6}"),
                (None, None) => DASH.to_string(),
            };
            let _ = writeln!(
                s,
                "| {m} | `{}` | {} | {} | {} | {other} |",
                r.codec,
                size(r),
                r.bits_per_weight.map_or(DASH.to_string(), |b| format!("{b:.3}")),
                agree.map_or(DASH.to_string(), |a| format!("{:.2} %", 100.0 * a)),
            );
        }
    }

    s += "\n**PySZ at about 13.33x on a DeepSeek-V3 shard** (seed 000, \"from ~4.4 GB to ~0.33 GB\"; its bound is not stated). Ours: per model, the error-bounded cell (our `sz`, or SZ3 through pysz) whose ratio is nearest 13.33x, its bound and what it does to the model.\n\n";
    s += "| model | our cell | bound | ratio | size | what it does to the model |\n|---|---|---|---:|---:|---|\n";
    for m in &models {
        let near = of(m)
            .into_iter()
            .filter(|r| first(r) == "sz" || r.codec.starts_with("peer:sz3"))
            .filter(|r| r.ratio.is_some_and(|x| x > 0.0))
            .min_by(|a, b| {
                let d = |r: &ResultRow| (r.ratio.unwrap_or(f64::NAN) * 13.33).ln().abs();
                d(a).total_cmp(&d(b))
            });
        if let Some(r) = near {
            let x = 1.0 / r.ratio.unwrap_or(f64::NAN);
            let _ = writeln!(
                s,
                "| {m} | `{}` | {} | {x:.2}x | {} | {} |",
                r.codec,
                if r.bound.is_empty() { DASH } else { r.bound.as_str() },
                size(r),
                quality_words(r)
            );
        }
    }
    s += "\n";
    s
}

/// `[outputs] per_tensor`: the lossless tensor cells per dataset and tensor
/// class, and one row per tensor with every lossless codec's ratio beside
/// the tensor's order-0 floor.
fn per_tensor_section(df: &DataFrame, rows: &[ResultRow]) -> Result<String> {
    let cells: Vec<&ResultRow> =
        rows.iter().filter(|r| r.tensor != "*" && r.available && r.lossless && r.compressed_bytes.is_some()).collect();
    if cells.is_empty() {
        return Ok(String::new());
    }
    let mut s = String::new();
    let g = grouped(
        df,
        col("tensor").neq(lit("*")).and(col("lossless")),
        &["dataset", "variant", "tensor_class", "codec"],
    )?;
    let cols = [
        Cell::Key("dataset"),
        Cell::Key("variant"),
        Cell::Key("tensor_class"),
        Cell::Key("codec"),
        Cell::Cells,
        Cell::Original,
        Cell::Ratio,
        Cell::Floor,
        Cell::VsFloor,
        Cell::DecompressMbps,
    ];
    let _ = writeln!(s, "## Per dataset and tensor class (lossless tensor cells)\n");
    s += &table(&g, &cols, None);
    let mut codecs: Vec<&str> = Vec::new();
    let mut keys: Vec<(&str, &str, &str)> = Vec::new();
    // (dataset, variant, tensor) -> its first cell and its cell per codec
    type ByTensor<'a> =
        std::collections::HashMap<(&'a str, &'a str, &'a str), (&'a ResultRow, Vec<Option<&'a ResultRow>>)>;
    let mut at: ByTensor = std::collections::HashMap::new();
    for r in &cells {
        if !codecs.contains(&r.codec.as_str()) {
            codecs.push(&r.codec);
        }
    }
    for r in &cells {
        let k = (r.dataset.as_str(), r.variant.as_str(), r.tensor.as_str());
        let e = at.entry(k).or_insert_with(|| {
            keys.push(k);
            (*r, vec![None; codecs.len()])
        });
        let ci = codecs.iter().position(|c| *c == r.codec).expect("listed");
        e.1[ci] = Some(*r);
    }
    let _ = writeln!(
        s,
        "\n## Per tensor (lossless tensor cells)\n\nRatio = compressed / original of each tensor; ✗ marks a cell that did not verify.\n"
    );
    let head: Vec<String> = codecs.iter().map(|c| format!("`{c}`")).collect();
    let _ = writeln!(s, "| dataset | tensor | dtype | elements | order-0 floor | {} |", head.join(" | "));
    let _ = writeln!(s, "|---|---|---|---:|---:|{}|", vec!["---:"; codecs.len()].join("|"));
    for k in &keys {
        let (first, by) = &at[k];
        let ratios: Vec<String> = by
            .iter()
            .map(|r| match r {
                None => DASH.to_string(),
                Some(r) => format!("{}{}", f_pct(r.ratio), if r.verified { "" } else { " ✗" }),
            })
            .collect();
        let _ = writeln!(
            s,
            "| {}:{} | `{}` | {} | {} | {} | {} |",
            k.0,
            k.1,
            k.2,
            first.dtype,
            first.numel,
            f_pct(first.floor_ratio),
            ratios.join(" | ")
        );
    }
    s += "\n";
    Ok(s)
}

pub fn summary_markdown(rows: &[ResultRow], meta: &ReportMeta, charts: &[Chart]) -> Result<String> {
    let df = rows_to_frame(rows)?;
    let mut s = String::new();
    let title = if meta.name.is_empty() { "weightlab report" } else { meta.name.as_str() };
    let _ = writeln!(s, "# {title}\n");
    if !meta.description.is_empty() {
        let _ = writeln!(s, "{}\n", meta.description.trim());
    }
    let mut datasets: Vec<String> = rows.iter().map(|r| format!("{} ({})", r.dataset, r.variant)).collect();
    datasets.sort();
    datasets.dedup();
    let mut codecs: Vec<&str> = rows.iter().map(|r| r.codec.as_str()).collect();
    codecs.sort();
    codecs.dedup();
    let avail = rows.iter().filter(|r| r.available).count();
    let _ = writeln!(
        s,
        "{} cells ({} measured), {} codecs, datasets: {}.\n",
        rows.len(),
        avail,
        codecs.len(),
        if datasets.is_empty() { "none".to_string() } else { datasets.join(", ") }
    );
    if let Some(m) = meta.machine.as_object() {
        let items: Vec<String> = m
            .iter()
            .filter(|(_, v)| v.is_string() || v.is_number() || v.is_boolean())
            .map(|(k, v)| format!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
            .collect();
        if !items.is_empty() {
            let _ = writeln!(s, "Machine: {}.\n", items.join("; "));
        }
    }
    let _ = writeln!(
        s,
        "Ratio = compressed / original bytes over the group (smaller is better); the floor is the order-0 \
         entropy floor of the same tensors (one model per tensor); throughput in MB/s of original data, \
         the group's bytes over its total time (each cell at its median repetition), tensor cells and \
         whole files in tables of their own.\n"
    );

    if !meta.layout.groups.is_empty() {
        s += &layout_section(&df, rows, &meta.layout)?;
    }

    let tensor_rows = rows.iter().any(|r| r.tensor != "*");
    let file_rows = rows.iter().any(|r| r.tensor == "*");
    let published = |df: &DataFrame, i: usize| -> String {
        meta.published_by_codec.get(&text(&get(df, "codec", i))).cloned().unwrap_or_default()
    };
    let pub_label = if meta.published_label.is_empty() { "published" } else { meta.published_label.as_str() };
    let extra: Extra = if meta.published_by_codec.is_empty() { None } else { Some((pub_label, &published)) };

    if tensor_rows {
        let g = grouped(&df, col("tensor").neq(lit("*")), &["codec"])?;
        let _ = writeln!(s, "## Per codec, summed over tensors\n");
        s += &table(&g, &CODEC_CELLS, extra);
        s += "\n";
    }
    let g = grouped(&df, col("tensor").eq(lit("*")), &["codec"])?;
    if file_rows && g.height() > 0 {
        let _ = writeln!(s, "## Per codec, whole files\n");
        s += &table(&g, &CODEC_CELLS, extra);
        s += "\n";
    }
    let unavailable = df
        .clone()
        .lazy()
        .filter(col("available").not())
        .group_by([col("codec")])
        .agg([col("note").first().alias("note"), len().alias("cells")])
        .sort(["codec"], SortMultipleOptions::default())
        .collect()
        .map_err(pe)?;
    if unavailable.height() > 0 {
        let _ = writeln!(s, "Not measured (tool not available on this machine):\n");
        for i in 0..unavailable.height() {
            let note = text(&get(&unavailable, "note", i));
            let _ = writeln!(
                s,
                "- `{}`{}",
                text(&get(&unavailable, "codec", i)),
                if note.is_empty() { String::new() } else { format!(": {note}") }
            );
        }
        s += "\n";
    }

    // The breakdowns use the per-tensor cells when there are any.
    let base = if tensor_rows { col("tensor").neq(lit("*")) } else { lit(true) };
    let scope = if tensor_rows { "tensor cells" } else { "whole-file cells" };
    let breakdown =
        [Cell::Cells, Cell::Original, Cell::Compressed, Cell::Ratio, Cell::Floor, Cell::VsFloor, Cell::DecompressMbps];
    if datasets.len() > 1 {
        let g = grouped(&df, base.clone(), &["dataset", "variant", "codec"])?;
        let mut cells = vec![Cell::Key("dataset"), Cell::Key("variant"), Cell::Key("codec")];
        cells.extend(breakdown);
        let _ = writeln!(s, "## Per dataset ({scope})\n");
        s += &table(&g, &cells, None);
        s += "\n";
    }
    if avail > 0 {
        let g = grouped(&df, base.clone(), &["dtype", "codec"])?;
        let mut cells = vec![Cell::Key("dtype"), Cell::Key("codec")];
        cells.extend(breakdown);
        let _ = writeln!(s, "## Per dtype ({scope})\n");
        s += &table(&g, &cells, None);
        s += "\n";
    }
    if tensor_rows {
        let g = grouped(&df, base.clone(), &["tensor_class", "codec"])?;
        let mut cells = vec![Cell::Key("tensor_class"), Cell::Key("codec")];
        cells.extend(breakdown);
        let _ = writeln!(s, "## Per tensor class ({scope})\n");
        s += &table(&g, &cells, None);
        s += "\n";
    }
    if rows.iter().any(|r| !r.lossless && r.available) {
        let g = grouped(&df, base.clone(), &["lossless", "codec"])?;
        let cells = [
            Cell::Mode,
            Cell::Key("codec"),
            Cell::Bound,
            Cell::Cells,
            Cell::Ratio,
            Cell::MaxAbs,
            Cell::MaxRel,
            Cell::Rmse,
            Cell::RmseRelStd,
            Cell::MaxRelAbsmax,
            Cell::PsnrMin,
            Cell::Held,
            Cell::DecompressMbps,
        ];
        let _ = writeln!(s, "## Lossless vs lossy ({scope})\n");
        s += &table(&g, &cells, None);
        let _ = writeln!(
            s,
            "\nErrors are the worst over the group's cells (PSNR: the lowest); RMSE is pooled over all weights. \
             RMSE / std and max err / absmax put each tensor's error on the scale of its own values (RMSE / std \
             pooled over the weights, max err / absmax the worst tensor); max rel err is pointwise and grows \
             without limit for values near zero.\n"
        );
    }

    if meta.per_tensor {
        s += &per_tensor_section(&df, rows)?;
    }

    s += &fidelity_section(rows);
    s += &claims_section(rows);

    for a in &meta.analyses {
        let _ = writeln!(s, "## Entropy of {}\n", a.label);
        let _ =
            writeln!(s, "| dtype | tensors | weights | bytes | entropy per plane, bits (high → low) | order-0 floor |");
        let _ = writeln!(s, "|---|---:|---:|---:|---|---:|");
        for t in &a.totals {
            let planes: Vec<String> = t.planes.iter().rev().map(|p| format!("{:.3}", p.entropy)).collect();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} % |",
                t.dtype,
                t.tensors,
                t.numel,
                t.bytes,
                planes.join(" / "),
                100.0 * t.floor_ratio
            );
        }
        let _ = writeln!(
            s,
            "\nWith one model per tensor the floor is {:.2} % of the tensor data.\n",
            100.0 * a.floor_ratio_per_tensor
        );
        if let Some(t) = a.totals.first() {
            s += &aveiro_tables(t, meta.published_entropy.as_ref());
            s += "\n";
        }
    }

    for r in &meta.published {
        let _ = writeln!(s, "## {} (as published)\n", r.title);
        if !r.source.is_empty() {
            let _ = writeln!(s, "{}\n", r.source);
        }
        if !r.header.is_empty() {
            let _ = writeln!(s, "| {} |", r.header.join(" | "));
            let _ = writeln!(s, "|{}|", vec!["---"; r.header.len()].join("|"));
            for row in &r.rows {
                let _ = writeln!(s, "| {} |", row.join(" | "));
            }
            s += "\n";
        }
    }

    if !meta.notes.trim().is_empty() {
        let _ = writeln!(s, "## Notes\n\n{}\n", meta.notes.trim());
    }

    if !charts.is_empty() {
        let _ = writeln!(s, "## Charts\n");
        for c in charts {
            let _ = writeln!(s, "- {} ([SVG]({}.svg), [PNG]({}.png))", c.title, c.stem, c.stem);
        }
        for c in charts {
            let _ = writeln!(s, "\n![{}]({}.png)", c.title, c.stem);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dataset: &str, codec: &str, bytes: u64, cos: Option<f64>, dppl: Option<f64>) -> ResultRow {
        ResultRow {
            dataset: dataset.into(),
            variant: "bf16".into(),
            tensor: "*".into(),
            codec: codec.into(),
            available: true,
            original_bytes: 1000,
            compressed_bytes: Some(bytes),
            ratio: Some(bytes as f64 / 1000.0),
            bits_per_weight: Some(bytes as f64 * 8.0 / 500.0),
            cosine_mean: cos,
            ppl: dppl.map(|d| 10.0 * (1.0 + d / 100.0)),
            ppl_delta_pct: dppl,
            ..Default::default()
        }
    }

    #[test]
    fn per_tensor_tables_pivot_the_lossless_codecs() {
        let cell = |tensor: &str, class: &str, codec: &str, bytes: u64, lossless: bool| ResultRow {
            dataset: "m".into(),
            variant: "kv".into(),
            tensor: tensor.into(),
            tensor_class: class.into(),
            dtype: "BF16".into(),
            numel: 500,
            codec: codec.into(),
            lossless,
            available: true,
            verified: codec != "bad",
            original_bytes: 1000,
            compressed_bytes: Some(bytes),
            ratio: Some(bytes as f64 / 1000.0),
            floor_bytes: Some(600.0),
            floor_ratio: Some(0.6),
            ..Default::default()
        };
        let rows = vec![
            cell("layers.0.k", "kv-key", "exp", 650, true),
            cell("layers.0.k", "kv-key", "zstd", 800, true),
            cell("layers.0.v", "kv-value", "exp", 700, true),
            cell("layers.0.v", "kv-value", "bad", 900, true),
            cell("layers.0.v", "kv-value", "sz", 100, false),
        ];
        let df = rows_to_frame(&rows).unwrap();
        let s = per_tensor_section(&df, &rows).unwrap();
        assert!(s.contains("| dataset | tensor | dtype | elements | order-0 floor | `exp` | `zstd` | `bad` |"), "{s}");
        assert!(s.contains("| m:kv | `layers.0.k` | BF16 | 500 | 60.00 % | 65.00 % | 80.00 % | – |"), "{s}");
        assert!(s.contains("| m:kv | `layers.0.v` | BF16 | 500 | 60.00 % | 70.00 % | – | 90.00 % ✗ |"), "{s}");
        assert!(s.contains("| m | kv | kv-key | exp |"), "{s}");
        assert!(!s.contains("`sz`"), "lossy cells are not in the tables: {s}");
        assert!(per_tensor_section(&df, &rows[4..]).unwrap().is_empty());
    }

    #[test]
    fn fidelity_tables_pick_the_smallest_archive_per_level() {
        let rows = vec![
            row("emb", "zstd:level=3", 900, Some(1.0), None),
            row("emb", "round:bits=2", 300, Some(0.995), None),
            row("emb", "round:bits=4", 450, Some(0.9995), None),
            row("emb", "round:bits=0", 200, Some(0.9), None),
            row("lm", "round:bits=6", 500, None, Some(0.05)),
            row("lm", "round:bits=3", 350, None, Some(0.8)),
            // a tensor cell and a row without model metrics are not in the tables
            ResultRow { tensor: "w".into(), bits_per_weight: Some(1.0), ..row("emb", "x", 1, Some(1.0), None) },
            ResultRow { bits_per_weight: None, ..row("emb", "y", 1, None, None) },
        ];
        let s = fidelity_section(&rows);
        assert!(s.contains("| emb:bf16 | cosine mean ≥ 0.999 | 45.00 % | 7.200 | `round:bits=4` |"), "{s}");
        assert!(s.contains("| emb:bf16 | cosine mean ≥ 0.99 | 30.00 % | 4.800 | `round:bits=2` |"), "{s}");
        assert!(s.contains("| lm:bf16 | perplexity increase ≤ 0.1 % | 50.00 % | 8.000 | `round:bits=6` |"), "{s}");
        assert!(s.contains("| lm:bf16 | perplexity increase ≤ 1 % | 35.00 % | 5.600 | `round:bits=3` |"), "{s}");
        assert!(!s.contains("`x`") && !s.contains("`y`"), "{s}");
        assert!(fidelity_section(&rows[6..]).is_empty());
    }

    #[test]
    fn claims_rows_pick_the_nearest_cells() {
        let with =
            |r: ResultRow, rel: f64, bound: &str| ResultRow { mean_rel_err: Some(rel), bound: bound.into(), ..r };
        let rows = vec![
            with(row("lm", "round:bits=3", 300, None, Some(0.5)), 0.02, "rel<=6.25e-2"),
            with(row("lm", "round:bits=4", 350, None, Some(0.08)), 0.011, "rel<=3.12e-2"),
            with(row("lm", "sz:abs=1e-2", 80, None, Some(40.0)), 0.5, "abs<=1e-2"),
            with(row("lm", "sz:abs=1e-4", 400, None, Some(0.001)), 0.001, "abs<=1e-4"),
            ResultRow { top1_agreement: Some(0.97), ..row("lm", "int4:block=32>exp:gain=2", 280, None, Some(2.0)) },
            // lossless cells are no claim's row
            ResultRow { lossless: true, mean_rel_err: Some(0.0106), ..row("lm", "zstd:level=3", 900, None, Some(0.0)) },
        ];
        let s = claims_section(&rows);
        assert!(s.contains("| lm:bf16 | `round:bits=4` | 1.10 % | 35.00 % | perplexity +0.080 %"), "{s}");
        assert!(s.contains("| lm:bf16 | `int4:block=32>exp:gain=2` | 28.00 % | 4.480 | 97.00 % | +2.000 % |"), "{s}");
        assert!(s.contains("| lm:bf16 | `sz:abs=1e-2` | abs<=1e-2 | 12.50x | 8.00 % |"), "{s}");
        assert!(!s.contains("`zstd:level=3`"), "{s}");
        assert!(claims_section(&rows[5..]).is_empty());
    }

    #[test]
    fn group_throughput_is_total_bytes_over_total_time() {
        let cell = |tensor: &str, bytes: u64, mbps: Option<f64>| ResultRow {
            tensor: tensor.into(),
            codec: "exp".into(),
            available: true,
            original_bytes: bytes,
            compressed_bytes: Some(bytes / 2),
            decompress_mbps_median: mbps,
            compress_mbps_median: mbps,
            ..Default::default()
        };
        let rows = vec![
            cell("a", 10, Some(1.0)),
            cell("b", 10, Some(1.0)),
            cell("c", 1_000_000, Some(1000.0)),
            cell("d", 5_000, None), // untimed: in neither sum
        ];
        let g = grouped(&rows_to_frame(&rows).unwrap(), col("tensor").neq(lit("*")), &["codec"]).unwrap();
        let d = num(&get(&g, "d_mbps", 0)).unwrap();
        let want = 1_000_020.0 / (1000.0 + 20.0);
        assert!((d - want).abs() < 1e-9, "{d} vs {want}");
    }
}
