//! `weightlab run`: load an experiment, run it, write the report directory,
//! print a summary. Kept in the library so tests can drive it.

use super::output::{self, RunMeta};
use super::peers::PeerSpec;
use super::row::ResultRow;
use super::runner::{self, RunOptions, RunReport};
use super::spec::Experiment;
use crate::error::Result;
use std::collections::BTreeMap;

/// Run the experiment named `name` (or at a path) and write its report.
pub fn run(name: &str, opts: &RunOptions) -> Result<()> {
    let exp = Experiment::load(name)?;
    let report = run_experiment(&exp, opts)?;
    if opts.progress {
        // a closed stdout (`| head`) is an error the CLI exits quietly on, not a panic
        std::io::Write::write_all(&mut std::io::stdout().lock(), summary(&report.rows).as_bytes())
            .map_err(|e| crate::Error::io("writing to stdout", e))?;
        eprintln!(
            "{}: {} cells ({} measured, {} from the resume file) -> {}",
            exp.name,
            report.rows.len(),
            report.measured,
            report.resumed,
            report.out_dir.display()
        );
    }
    Ok(())
}

/// Run and write results (rows, machine.json, experiment.json).
pub fn run_experiment(exp: &Experiment, opts: &RunOptions) -> Result<RunReport> {
    let peers: Vec<PeerSpec> = exp.peers.iter().filter_map(|p| PeerSpec::parse(p).ok()).collect();
    let machine = super::machine::Machine::detect(&peers);
    let report = runner::run(exp, opts)?;
    let machine = RunMeta::machine_for(&report.out_dir, report.measured, &machine);
    let meta = RunMeta { experiment: exp.clone(), machine };
    output::write_results(&report.out_dir, &report.rows, &meta)?;
    #[cfg(feature = "lab")]
    if exp.outputs.tables || exp.outputs.charts || exp.outputs.analysis {
        crate::report::write_all(&report.out_dir, &report.rows, &report_meta(exp, &meta, &report)?)?;
    }
    Ok(report)
}

/// The report's metadata: machine, published numbers from the experiment,
/// and the analyses of the files when the experiment asks for them.
#[cfg(feature = "lab")]
pub fn report_meta(exp: &Experiment, meta: &RunMeta, report: &RunReport) -> Result<crate::report::ReportMeta> {
    use crate::report::{AnalysisInput, ReportMeta};
    let mut analyses = Vec::new();
    if exp.outputs.analysis {
        for f in &report.files {
            let map = crate::io::Mapped::open(&f.path)?;
            let name = f.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let a = crate::analysis::summary::analyze_safetensors(&name, map.bytes(), &[])?;
            analyses.push(AnalysisInput::from_file(format!("{} ({})", f.dataset, f.variant), &a));
        }
    }
    Ok(ReportMeta {
        name: exp.name.clone(),
        description: exp.description.clone(),
        machine: meta.machine.clone(),
        analyses,
        published_entropy: exp.outputs.analysis.then(crate::analysis::tables::aveiro_qwen2_0_5b),
        published_by_codec: exp.published.codecs.clone(),
        published_label: exp.published.label.clone(),
        published: exp.published_tables.clone(),
        layout: exp.layout.clone(),
        notes: exp.notes.clone(),
        per_tensor: exp.outputs.per_tensor,
    })
}

/// A plain-text summary per file and codec: whole-file cells as measured,
/// tensor cells summed (ratio of the sums, throughput of the summed times).
pub fn summary(rows: &[ResultRow]) -> String {
    #[derive(Default)]
    struct Agg {
        orig: u64,
        comp: u64,
        floor: f64,
        enc_s: f64,
        dec_s: f64,
        n: usize,
        unverified: usize,
        available: bool,
        note: String,
    }
    let mut groups: BTreeMap<(String, String, bool, u32, usize, String), Agg> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        let whole = r.tensor == "*";
        // keep first-seen order of codecs within a file
        let order = rows.iter().position(|x| x.codec == r.codec && x.file == r.file).unwrap_or(i);
        let a =
            groups.entry((r.file.clone(), r.variant.clone(), whole, r.threads, order, r.codec.clone())).or_default();
        a.n += 1;
        a.available = r.available;
        if !r.available {
            a.note = r.note.clone();
            continue;
        }
        a.orig += r.original_bytes;
        a.comp += r.compressed_bytes.unwrap_or(0);
        a.floor += r.floor_bytes.unwrap_or(f64::NAN);
        let mb = r.original_bytes as f64 / 1e6;
        a.enc_s += r.compress_mbps_median.map_or(f64::NAN, |v| mb / v);
        a.dec_s += r.decompress_mbps_median.map_or(f64::NAN, |v| mb / v);
        if !r.verified {
            a.unverified += 1;
            if a.note.is_empty() {
                a.note = r.note.clone();
            }
        }
    }
    let mut s = String::new();
    let mut last = None;
    for ((file, variant, whole, threads, _, codec), a) in &groups {
        let head = (file.clone(), variant.clone(), *whole, *threads);
        if last.as_ref() != Some(&head) {
            s.push_str(&format!(
                "\n{file} ({variant}), {}, {threads} thread(s)\n{:<44} {:>8} {:>8} {:>10} {:>10}  verified\n",
                if *whole { "whole file" } else { "tensor cells summed" },
                "codec",
                "ratio",
                "floor",
                "enc MB/s",
                "dec MB/s"
            ));
            last = Some(head);
        }
        if !a.available {
            s.push_str(&format!("{codec:<44} unavailable: {}\n", a.note));
            continue;
        }
        let pct = |x: f64| if x.is_finite() { format!("{:.2}%", 100.0 * x) } else { "-".into() };
        let rate = |secs: f64| {
            if secs.is_finite() && secs > 0.0 { format!("{:.1}", a.orig as f64 / 1e6 / secs) } else { "-".into() }
        };
        s.push_str(&format!(
            "{codec:<44} {:>8} {:>8} {:>10} {:>10}  {}\n",
            pct(a.comp as f64 / a.orig.max(1) as f64),
            pct(a.floor / a.orig.max(1) as f64),
            rate(a.enc_s),
            rate(a.dec_s),
            if a.unverified == 0 { "yes".to_string() } else { format!("NO ({} of {}: {})", a.unverified, a.n, a.note) }
        ));
    }
    s
}
