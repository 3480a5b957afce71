//! Reports on synthetic rows: parquet, csv, summary.md and charts are
//! written with the expected rows and columns, the charts are valid PNG and
//! SVG with text, and `report` re-renders an identical summary.md from the
//! saved parquet.
#![cfg(feature = "lab")]

use std::path::Path;
use weightlab::analysis::{analyze_views, tables};
use weightlab::experiment::ResultRow;
use weightlab::experiment::spec::{Group, GroupEntry, Layout};
use weightlab::report::{self, AnalysisInput, ReferenceTable, ReportMeta};
use weightlab::tensor::{DType, TensorView};

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small BF16 tensor shaped like trained weights (roughly normal, std 0.02).
fn bf16_weights(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..n)
        .flat_map(|_| {
            let u: f64 = (0..12).map(|_| (splitmix(&mut s) >> 11) as f64 / (1u64 << 53) as f64).sum::<f64>() - 6.0;
            half::bf16::from_f64(u * 0.02).to_bits().to_le_bytes()
        })
        .collect()
}

fn rows() -> Vec<ResultRow> {
    let tensors =
        [("embed.weight", "embedding", 4000u64), ("l0.attn.q", "attention", 2000), ("l0.mlp.up", "mlp", 3000)];
    let codecs: [(&str, &str, bool, f64, f64); 5] = [
        ("zstd:level=3", "generic", true, 0.80, 900.0),
        ("planes>zstd:level=3", "planes", true, 0.70, 1200.0),
        ("xz:level=9", "generic", true, 0.72, 80.0),
        ("int8:block=128>zstd:level=3", "lossy", false, 0.40, 1500.0),
        ("int4:block=128>zstd:level=3", "lossy", false, 0.22, 1600.0),
    ];
    let mut out = Vec::new();
    for (ti, (t, class, numel)) in tensors.iter().enumerate() {
        for (ci, (codec, family, lossless, ratio, mbps)) in codecs.iter().enumerate() {
            let orig = numel * 2;
            let r = ratio + 0.01 * ti as f64;
            let comp = (orig as f64 * r).round() as u64;
            let lossy = !lossless;
            out.push(ResultRow {
                experiment: "synthetic".into(),
                dataset: "tiny".into(),
                variant: "bf16".into(),
                derived: true,
                file: "tiny.safetensors".into(),
                tensor: t.to_string(),
                dtype: "BF16".into(),
                tensor_class: class.to_string(),
                numel: *numel,
                codec: codec.to_string(),
                family: family.to_string(),
                lossless: *lossless,
                bound: if lossy { "rel<=0.05".into() } else { String::new() },
                available: true,
                original_bytes: orig,
                compressed_bytes: Some(comp),
                ratio: Some(comp as f64 / orig as f64),
                floor_bytes: Some(orig as f64 * 0.66),
                floor_ratio: Some(0.66),
                threads: 1,
                reps: 3,
                compress_mbps_median: Some(mbps / 3.0 + ci as f64),
                compress_mbps_min: Some(mbps / 4.0),
                compress_mbps_max: Some(mbps / 2.0),
                decompress_mbps_median: Some(mbps + 10.0 * ti as f64),
                decompress_mbps_min: Some(mbps * 0.9),
                decompress_mbps_max: Some(mbps * 1.1),
                peak_mem_bytes: Some(1 << 20),
                verified: true,
                max_abs_err: lossy.then_some(if *ratio < 0.3 { 4e-3 } else { 3e-4 }),
                max_rel_err: lossy.then_some(if *ratio < 0.3 { 0.04 } else { 0.004 }),
                mean_rel_err: lossy.then_some(0.001),
                rmse: lossy.then_some(if *ratio < 0.3 { 1e-3 } else { 1e-4 }),
                psnr: lossy.then_some(if *ratio < 0.3 { 30.0 } else { 50.0 }),
                rmse_rel_std: lossy.then_some(if *ratio < 0.3 { 0.05 } else { 0.005 }),
                max_abs_rel_absmax: lossy.then_some(if *ratio < 0.3 { 0.2 } else { 0.02 }),
                bound_held: lossy.then_some(true),
                note: String::new(),
                ..Default::default()
            });
        }
    }
    // a whole-file cell and a peer that is not installed
    out.push(ResultRow {
        experiment: "synthetic".into(),
        dataset: "tiny".into(),
        variant: "bf16".into(),
        tensor: "*".into(),
        dtype: "BF16".into(),
        codec: "peer:zipnn".into(),
        family: "peer".into(),
        lossless: true,
        original_bytes: 18000,
        note: "zipnn is not installed".into(),
        ..Default::default()
    });
    out
}

fn meta() -> ReportMeta {
    let data = bf16_weights(5000, 7);
    let shape = [5000u64];
    let a = analyze_views("tiny", &[TensorView { name: "w", dtype: DType::BF16, shape: &shape, data: &data }]);
    ReportMeta {
        name: "synthetic".into(),
        description: "Synthetic rows for the report test.".into(),
        machine: serde_json::json!({"cpu": "test cpu", "cores": 2}),
        analyses: vec![AnalysisInput::from_file("tiny (bf16)", &a)],
        published_entropy: Some(tables::aveiro_qwen2_0_5b()),
        published_by_codec: [("zstd:level=3".to_string(), "ratio 77 % (made-up test value)".to_string())].into(),
        published_label: "theirs (test)".into(),
        published: vec![ReferenceTable {
            title: "A reference".into(),
            source: "test".into(),
            header: vec!["codec".into(), "ratio".into()],
            rows: vec![vec!["x".into(), "1".into()]],
        }],
        layout: Layout::default(),
        notes: String::new(),
        per_tensor: false,
    }
}

fn entry(codec: &str, published: &str, source: &str) -> GroupEntry {
    GroupEntry { spec: codec.into(), codec: codec.into(), published: published.into(), source: source.into() }
}

/// Two groups: tensor-only codecs, the unavailable peer, a codec with no
/// cells at all, and one with a whole-file cell besides its tensor cells.
fn layout() -> Layout {
    Layout {
        title: "Test layout".into(),
        published_label: "theirs (test)".into(),
        notes: "How the made-up numbers were taken.".into(),
        groups: vec![
            Group {
                name: "Fast".into(),
                entries: vec![
                    entry("planes>zstd:level=3", "1.41× (made up)", "source A"),
                    entry("zstd:level=3", "", ""),
                    entry("peer:zipnn", "", ""),
                    entry("lz4", "", ""),
                ],
            },
            Group {
                name: "Maximum".into(),
                entries: vec![
                    entry("xz:level=9", "1.45× (made up)", "source B"),
                    entry("zstd:level=3", "1.38×", "source A"),
                ],
            },
        ],
    }
}

/// The rows of a layout sub-table `name` (header and rule left out).
fn group_rows<'a>(md: &'a str, name: &str) -> Vec<&'a str> {
    let sec = md.split(&format!("### {name}\n")).nth(1).unwrap_or_else(|| panic!("no group {name}:\n{md}"));
    sec.lines().skip(1).take_while(|l| l.starts_with('|')).skip(2).collect()
}

fn png_dims(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() > 1000, "{} is too small", path.display());
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    assert_eq!(&b[12..16], b"IHDR");
    let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn write_all_then_rerender() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("synthetic");
    let rows = rows();
    report::write_all(&d, &rows, &meta()).unwrap();
    // to look at the charts: WEIGHTLAB_KEEP_REPORT=/some/dir cargo test --features lab --test report_lab
    if let Some(keep) = std::env::var_os("WEIGHTLAB_KEEP_REPORT") {
        report::write_all(Path::new(&keep), &rows, &meta()).unwrap();
    }
    for f in ["results.parquet", "results.csv", "summary.md", "meta.json", "machine.json"] {
        assert!(d.join(f).is_file(), "{f} missing");
    }
    // parquet round trip
    assert_eq!(report::read_rows(&d.join("results.parquet")).unwrap(), rows);
    // csv: a header with every column, one line per row
    let csv = std::fs::read_to_string(d.join("results.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "experiment");
    assert!(header.contains(&"decompress_mbps_median") && header.contains(&"note"));
    assert_eq!(header.len(), serde_json::to_value(ResultRow::default()).unwrap().as_object().unwrap().len());
    assert_eq!(lines.count(), rows.len());

    let md = std::fs::read_to_string(d.join("summary.md")).unwrap();
    for want in [
        "## Per codec, summed over tensors",
        "## Per dtype",
        "## Per tensor class",
        "## Lossless vs lossy",
        "### Table 3.1",
        "### Table 3.2",
        "### Table 3.3",
        "`peer:zipnn`: zipnn is not installed",
        "ratio 77 % (made-up test value)",
        "## A reference (as published)",
        "Machine: cores: 2; cpu: test cpu.",
    ] {
        assert!(md.contains(want), "summary.md lacks {want:?}:\n{md}");
    }
    // per codec over tensors: 5 codecs, sorted by ratio (int4 first, zstd last)
    let sec = md.split("## Per codec, summed over tensors").nth(1).unwrap();
    let table: Vec<&str> = sec.lines().filter(|l| l.starts_with("| ")).take(6).collect();
    assert_eq!(table.len(), 6);
    assert!(table[1].starts_with("| int4:block=128>zstd:level=3 | lossy | lossy | 3 |"), "{}", table[1]);
    assert!(table[5].starts_with("| zstd:level=3 | generic | lossless | 3 |"), "{}", table[5]);
    // zstd: original 18000 bytes, compressed (0.80+0.81+0.82 weighted), floor 66 %
    let comp = (8000.0f64 * 0.80).round() + (4000.0f64 * 0.81).round() + (6000.0f64 * 0.82).round();
    assert!(
        table[5].contains(&format!("| 0.018 | {:.3} | {:.2} % | 66.00 % |", comp / 1e6, 100.0 * comp / 18000.0)),
        "{}",
        table[5]
    );
    // the unavailable peer is not in the measured whole-file table
    // the only whole-file cell is the unavailable peer: no measured whole-file table
    assert!(!md.contains("## Per codec, whole files"));

    // charts: valid PNG and SVG with text
    for stem in ["ratio_vs_decompress", "ratio_vs_floor", "byte_histograms", "exponent_histogram", "rate_distortion"] {
        let (w, h) = png_dims(&d.join(format!("{stem}.png")));
        assert!(w >= 800 && h >= 400, "{stem}: {w}x{h}");
        let svg = std::fs::read_to_string(d.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{stem}.svg");
        assert!(svg.contains("<text"), "{stem}.svg has no text");
        assert!(md.contains(&format!("({stem}.png)")));
    }
    let svg = std::fs::read_to_string(d.join("ratio_vs_decompress.svg")).unwrap();
    assert!(svg.contains("planes&gt;zstd:level=3") || svg.contains("planes>zstd:level=3"));

    // re-render from the parquet alone: identical summary
    std::fs::remove_file(d.join("summary.md")).unwrap();
    std::fs::remove_file(d.join("ratio_vs_floor.png")).unwrap();
    assert_eq!(report::rerender(&d).unwrap(), rows.len());
    assert_eq!(std::fs::read_to_string(d.join("summary.md")).unwrap(), md);
    png_dims(&d.join("ratio_vs_floor.png"));

    // and through the CLI
    std::fs::remove_file(d.join("summary.md")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weightlab"))
        .args(["report", "synthetic", "--reports"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(d.join("summary.md")).unwrap(), md);
}

#[test]
fn layout_groups_render_in_order_with_published() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = rows();
    // a whole-file xz cell: it is used instead of the tensor cells
    rows.push(ResultRow {
        tensor: "*".into(),
        codec: "xz:level=9".into(),
        family: "generic".into(),
        lossless: true,
        available: true,
        verified: true,
        original_bytes: 18000,
        compressed_bytes: Some(9000),
        floor_bytes: Some(18000.0 * 0.66),
        compress_mbps_median: Some(2.5),
        decompress_mbps_median: Some(40.0),
        ..rows[2].clone()
    });
    let meta = ReportMeta { layout: layout(), ..meta() };
    report::write_all(dir.path(), &rows, &meta).unwrap();
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    let at = |s: &str| md.find(s).unwrap_or_else(|| panic!("summary.md lacks {s:?}:\n{md}"));
    assert!(at("## Test layout") < at("### Fast") && at("### Fast") < at("### Maximum"));
    assert!(at("### Maximum") < at("## Per codec, summed over tensors"));
    assert!(md.contains(
        "| codec | cells | ratio | order-0 floor | compress MB/s | decompress MB/s | verified | theirs (test) |"
    ));

    let fast = group_rows(&md, "Fast");
    assert_eq!(fast.len(), 4, "{fast:?}");
    // planes: three tensor cells summed, ratio also as original / compressed
    let comp = (8000.0f64 * 0.70).round() + (4000.0f64 * 0.71).round() + (6000.0f64 * 0.72).round();
    let r = comp / 18000.0;
    let want = format!("| `planes>zstd:level=3` | 3 tensors | {:.2} % ({:.2}×) | 66.00 % |", 100.0 * r, 1.0 / r);
    assert!(fast[0].starts_with(&want), "{}\nwant {want}", fast[0]);
    assert!(fast[0].ends_with("| 3/3 | 1.41× (made up) [1] |"), "{}", fast[0]);
    assert!(fast[1].starts_with("| `zstd:level=3` | 3 tensors |") && fast[1].ends_with("| 3/3 | – |"), "{}", fast[1]);
    assert!(fast[2].starts_with("| `peer:zipnn` | – | not measured |"), "{}", fast[2]);
    assert!(fast[3].starts_with("| `lz4` | – | no cells in this run |"), "{}", fast[3]);
    assert!(md.contains("- `peer:zipnn` not measured: zipnn is not installed"));

    let max = group_rows(&md, "Maximum");
    assert_eq!(max.len(), 2, "{max:?}");
    assert!(
        max[0].starts_with("| `xz:level=9` | 1 file | 50.00 % (2.00×) | 66.00 % | 2.50 | 40 | 1/1 |"),
        "{}",
        max[0]
    );
    assert!(max[0].ends_with("| 1.45× (made up) [2] |"), "{}", max[0]);
    // one footnote per distinct source, numbered in order of first use
    assert!(max[1].ends_with("| 1.38× [1] |"), "{}", max[1]);
    assert!(md.contains("[1] source A\n") && md.contains("[2] source B\n") && !md.contains("[3]"));
    assert!(md.contains("How the made-up numbers were taken."));

    // re-rendered from the parquet: the same
    assert_eq!(report::rerender(dir.path()).unwrap(), rows.len());
    assert_eq!(std::fs::read_to_string(dir.path().join("summary.md")).unwrap(), md);
}

#[test]
fn rerender_takes_the_layout_from_the_experiment() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("synthetic");
    let rows = rows();
    report::write_all(&d, &rows, &meta()).unwrap();
    let before = std::fs::read_to_string(d.join("summary.md")).unwrap();
    assert!(!before.contains("### Fast"));
    let toml = r#"name = "synthetic"
description = "now with groups"
datasets = [{ path = "tiny.safetensors" }]
codecs = ["planes>zstd:level=3", "zstd:level=3", "xz:level=9"]
[published]
label = "theirs (test)"
codecs = { "zstd:level=3" = "ratio 77 % (made-up test value)" }
# the experiment is where a re-render takes the reference tables from
[[published_tables]]
title = "A reference"
source = "test"
header = ["codec", "ratio"]
rows = [["x", "1"]]
[layout]
title = "Grouped"
[[groups]]
name = "Fast"
entries = [{ spec = "zstd:level=3", published = "1.38×", source = "src" }, "planes>zstd:level=3"]
"#;
    let exp_path = dir.path().join("synthetic.toml");
    std::fs::write(&exp_path, toml).unwrap();
    let exp = weightlab::experiment::Experiment::load(exp_path.to_str().unwrap()).unwrap();
    assert_eq!(report::rerender_with(&d, Some(&exp)).unwrap(), rows.len());
    let md = std::fs::read_to_string(d.join("summary.md")).unwrap();
    assert!(md.contains("now with groups") && md.contains("## Grouped"), "{md}");
    let fast = group_rows(&md, "Fast");
    assert!(fast[0].starts_with("| `zstd:level=3` | 3 tensors |") && fast[0].ends_with("| 1.38× [1] |"), "{fast:?}");
    assert!(fast[1].starts_with("| `planes>zstd:level=3` |"), "{fast:?}");
    // the rows are untouched and [published] is the file's: the tables after the layout are as before
    let tail = |s: &str| s.split("## Per codec, summed over tensors").nth(1).unwrap().to_string();
    assert_eq!(tail(&md), tail(&before));
    // meta.json keeps the layout: the directory alone renders the same again
    assert_eq!(report::rerender(&d).unwrap(), rows.len());
    assert_eq!(std::fs::read_to_string(d.join("summary.md")).unwrap(), md);

    // the CLI: --saved keeps meta.json's layout, --experiment takes the file's
    std::fs::write(&exp_path, toml.replace("title = \"Grouped\"", "title = \"Regrouped\"")).unwrap();
    let report_cli = |extra: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weightlab"))
            .args(["report", "synthetic", "--reports"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(d.join("summary.md")).unwrap()
    };
    assert_eq!(report_cli(&["--saved".as_ref()]), md);
    let md2 = report_cli(&["--experiment".as_ref(), exp_path.as_os_str()]);
    assert!(md2.contains("## Regrouped") && !md2.contains("## Grouped"), "{md2}");
}

#[test]
fn lossless_only_rows_make_no_lossy_sections() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<ResultRow> = rows().into_iter().filter(|r| r.lossless && r.tensor != "*").collect();
    report::write_all(dir.path(), &rows, &ReportMeta { name: "x".into(), ..Default::default() }).unwrap();
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(!md.contains("Lossless vs lossy") && !md.contains("Per codec, whole files"));
    assert!(!dir.path().join("rate_distortion.png").exists());
    assert!(!dir.path().join("byte_histograms.png").exists());
    png_dims(&dir.path().join("ratio_vs_decompress.png"));
    assert!(report::rerender(&dir.path().join("nope")).is_err());
}

#[test]
fn analysis_only_report_without_rows() {
    // an experiment that only analyses (entropy-tables): no codec cells at all
    let dir = tempfile::tempdir().unwrap();
    report::write_all(dir.path(), &[], &ReportMeta { layout: layout(), ..meta() }).unwrap();
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(md.contains("### Table 3.2") && !md.contains("## Per"), "{md}");
    // a layout over no rows: every entry says so
    assert!(group_rows(&md, "Fast").iter().all(|l| l.contains("no cells in this run")), "{md}");
    png_dims(&dir.path().join("byte_histograms.png"));
    assert!(report::read_rows(&dir.path().join("results.parquet")).unwrap().is_empty());
    assert_eq!(report::rerender(dir.path()).unwrap(), 0);
    assert_eq!(std::fs::read_to_string(dir.path().join("summary.md")).unwrap(), md);
}
