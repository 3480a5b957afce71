//! The experiment runner: for every dataset file × tensor (or whole file) ×
//! codec, a verifying warm-up round trip, then timed repetitions of encode and
//! decode; plus the peers on every file. One [`ResultRow`] per cell.
//!
//! How it measures (pco_cli's and lz4_flex's habits):
//! - a tensor is encoded in the container's chunks ([`chunk_ranges`]), so the
//!   sizes and speeds match what `weightlab compress` does; with `threads = N`
//!   the chunks go to a pool of N threads, with 1 they run on the caller;
//! - a file cell is the whole safetensors through [`container::compress`] and
//!   [`Archive::stream`] in memory (format overhead, dedup and auto included);
//! - the warm-up round trip verifies (bytes for lossless, the declared bound
//!   for lossy) and measures peak heap (a counting allocator, when the binary
//!   installs [`super::mem::CountingAlloc`]); timed passes come after it, and
//!   a pass shorter than a few milliseconds is repeated inside the timer;
//! - timed passes never run concurrently with each other; the untimed
//!   floors (order-0 entropy) are computed in parallel beforehand;
//! - every finished cell is appended to `reports/NAME/.resume` (JSON lines)
//!   and skipped on the next run unless `fresh`, or unless the binary is not
//!   the one that measured it (`.resume.build`: a rebuilt tool measures
//!   every cell again instead of reporting the old build's numbers).

use super::peers::{self, PeerSpec};
use super::row::ResultRow;
use super::spec::Experiment;
use crate::codec::{self, ChunkInfo, Codec, Fidelity};
use crate::container::{self, Archive, CompressOptions, DecodeOptions, chunk_ranges};
use crate::error::{Error, Result, ResultExt};
use crate::metrics::error::{ErrorAccumulator, ErrorStats};
use crate::tensor::{SafeTensors, TensorInfo, TensorView};
use rayon::ThreadPool;
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A pass shorter than this is repeated inside the timer (tiny tensors).
const MIN_PASS_SECS: f64 = 0.003;
const MAX_INNER: u32 = 1000;

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Ignore and overwrite the resume file.
    pub fresh: bool,
    pub progress: bool,
    /// Report directory (default `reports/NAME`).
    pub out_dir: Option<PathBuf>,
    /// Override the experiment's repetitions.
    pub reps: Option<u32>,
    /// One line per cell on stderr.
    pub verbose: bool,
}

/// One safetensors file to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    pub dataset: String,
    pub variant: String,
    pub derived: bool,
    pub path: PathBuf,
    /// Its path in the dataset's manifest (the file name for a local path).
    pub file: String,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub rows: Vec<ResultRow>,
    pub out_dir: PathBuf,
    /// Cells measured in this run.
    pub measured: usize,
    /// Cells taken from the resume file.
    pub resumed: usize,
    pub files: Vec<InputFile>,
}

/// The report directory of an experiment.
pub fn default_out_dir(exp: &Experiment) -> PathBuf {
    Path::new("reports").join(&exp.name)
}

/// The dataset files an experiment names.
pub fn resolve_inputs(exp: &Experiment, progress: bool) -> Result<Vec<InputFile>> {
    Ok(resolve_entries(exp, progress)?.into_iter().map(|(_, f)| f).collect())
}

/// [`resolve_inputs`], each file with the index of its `datasets` entry.
fn resolve_entries(exp: &Experiment, progress: bool) -> Result<Vec<(usize, InputFile)>> {
    let mut out = Vec::new();
    for (di, d) in exp.datasets.iter().enumerate() {
        let got = if let Some(p) = &d.path {
            let path = exp.dataset_path(p);
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            if d.optional && !path.is_file() {
                Err(Error::invalid(format!("{} does not exist", path.display())))
            } else {
                let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                Ok(vec![InputFile { dataset: stem, variant: "original".into(), derived: false, path, file }])
            }
        } else if let Some(name) = &d.name {
            resolve_named(name, &d.variants, progress)
        } else {
            Ok(Vec::new())
        };
        match got {
            Ok(files) => out.extend(files.into_iter().map(|f| (di, f))),
            Err(e) if d.optional => eprintln!("skipping optional dataset: {e}"),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn resolve_named(name: &str, variants: &[String], progress: bool) -> Result<Vec<InputFile>> {
    let opts = crate::datasets::FetchOptions { progress, ..Default::default() };
    // the GGUF causal LM: its BF16 import, and the K/V caches it computes
    #[cfg(feature = "fidelity")]
    if name == crate::fidelity::gguf::DATASET {
        let wanted: Vec<&str> =
            if variants.is_empty() { vec!["bf16"] } else { variants.iter().map(String::as_str).collect() };
        let mut out = Vec::with_capacity(wanted.len());
        for v in wanted {
            let path = if v == "bf16" {
                crate::fidelity::gguf::import(&opts).with_context(|| format!("dataset '{name}'"))?.weights
            } else if v.starts_with("kv-") {
                crate::fidelity::kv::ensure(v, &opts).with_context(|| format!("dataset '{name}'"))?.0
            } else {
                return Err(Error::invalid(format!(
                    "dataset '{name}': variant '{v}': its variants are bf16 (the GGUF import) and the K/V caches {}",
                    crate::fidelity::kv::KvVariant::list()
                )));
            };
            let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push(InputFile { dataset: name.into(), variant: v.into(), derived: true, path, file });
        }
        return Ok(out);
    }
    let files = crate::datasets::resolve(name, variants, &opts).with_context(|| format!("dataset '{name}'"))?;
    Ok(files
        .into_iter()
        .map(|f| InputFile { dataset: f.dataset, variant: f.variant, derived: f.derived, path: f.path, file: f.file })
        .collect())
}

/// embedding / attention / mlp / norm / bias / other, from the tensor name.
pub fn tensor_class(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    let has = |pats: &[&str]| pats.iter().any(|p| n.contains(p));
    // K/V caches (`layers.N.k…`, `layers.N.v…`: the fidelity module's captures)
    let kv = n.strip_prefix("layers.").and_then(|r| r.split_once('.')).filter(|(l, _)| l.parse::<u32>().is_ok());
    if let Some((_, rest)) = kv {
        match rest.split('.').next() {
            Some("k") => return "kv-key",
            Some("v") => return "kv-value",
            _ => {}
        }
    }
    if has(&["norm", "ln_", ".ln", "layer_norm"]) {
        "norm"
    } else if has(&["embed", "wte", "wpe", "position_ids", "token_type"]) {
        "embedding"
    } else if n.ends_with("bias") {
        "bias"
    } else if has(&["attn", "attention", "q_proj", "k_proj", "v_proj", "o_proj", "query", "key", "value", "qkv"]) {
        "attention"
    } else if has(&[
        "mlp",
        "ffn",
        "intermediate",
        "output.dense",
        "fc1",
        "fc2",
        "gate_proj",
        "up_proj",
        "down_proj",
        "w1",
        "w2",
        "w3",
    ]) {
        "mlp"
    } else {
        "other"
    }
}

/// generic / planes / float / lossy / auto, from the first stage's id range.
pub fn family(spec: &str) -> String {
    let first = spec.split('>').next().unwrap_or("").split(':').next().unwrap_or("").trim();
    if first == "planes" {
        return "planes".into();
    }
    match codec::stage_def(first).map(|d| d.id) {
        Some(1..=31) => "generic",
        Some(32..=63) => "float",
        Some(64..=95) => "lossy",
        Some(96..=127) => "auto",
        _ => "other",
    }
    .into()
}

fn bound_of(f: Fidelity) -> (bool, String, Option<codec::ErrorBound>) {
    match f {
        Fidelity::Lossless => (true, String::new(), None),
        Fidelity::Lossy { bound } => (false, bound.map(|b| b.to_string()).unwrap_or_default(), bound),
    }
}

/// (median, min, max) MB/s of `bytes` over the pass times.
pub fn mbps(bytes: u64, secs: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    let mut v: Vec<f64> = secs.iter().filter(|s| **s > 0.0).map(|s| bytes as f64 / 1e6 / s).collect();
    if v.is_empty() {
        return (None, None, None);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    (Some(median), Some(v[0]), Some(v[n - 1]))
}

/// The identity of a cell in the resume file.
pub fn cell_key(r: &ResultRow) -> String {
    format!("{}\t{}\t{}\t{}\t{}\t{}", r.dataset, r.variant, r.file, r.tensor, r.codec, r.threads)
}

/// What identifies the running binary for the resume file: the crate
/// version and the executable's size and modification time.
fn build_id() -> String {
    let exe = std::env::current_exe().ok().and_then(|p| std::fs::metadata(p).ok());
    let (len, mtime) = exe.map_or((0, 0), |m| {
        let t = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        (m.len(), t.map_or(0, |d| d.as_nanos()))
    });
    format!("weightlab {} {len} {mtime}", env!("CARGO_PKG_VERSION"))
}

/// Rows already measured, from a resume file (a torn last line is ignored).
pub fn read_resume(path: &Path) -> HashMap<String, ResultRow> {
    let mut out = HashMap::new();
    let Ok(f) = std::fs::File::open(path) else { return out };
    for line in std::io::BufReader::new(f).lines().map_while(|l| l.ok()) {
        if let Ok(r) = serde_json::from_str::<ResultRow>(&line) {
            out.insert(cell_key(&r), r);
        }
    }
    out
}

/// What measuring one cell gave.
#[derive(Debug, Default)]
struct Measure {
    compressed: Option<u64>,
    enc_secs: Vec<f64>,
    dec_secs: Vec<f64>,
    peak: Option<u64>,
    verified: bool,
    err: Option<ErrorStats>,
    note: String,
}

fn run_in<T: Send>(pool: Option<&ThreadPool>, f: impl FnOnce() -> T + Send) -> T {
    match pool {
        Some(p) => p.install(f),
        None => f(),
    }
}

fn encode_chunks(
    c: &dyn Codec,
    v: &TensorView,
    ranges: &[(u64, u64)],
    pool: Option<&ThreadPool>,
    outs: &mut [Vec<u8>],
) -> Result<()> {
    let job = |(i, out): (usize, &mut Vec<u8>)| -> Result<()> {
        out.clear();
        let (a, b) = ranges[i];
        let info = ChunkInfo { name: v.name, dtype: v.dtype, shape: v.shape, offset: a };
        c.encode(&info, &v.data[a as usize..b as usize], out)
    };
    match pool {
        None => outs.iter_mut().enumerate().try_for_each(job),
        Some(p) => p.install(|| outs.par_iter_mut().enumerate().try_for_each(job)),
    }
}

fn decode_chunks(
    c: &dyn Codec,
    v: &TensorView,
    ranges: &[(u64, u64)],
    pool: Option<&ThreadPool>,
    encoded: &[Vec<u8>],
    out: &mut [u8],
) -> Result<()> {
    let mut parts: Vec<(usize, &mut [u8])> = Vec::with_capacity(ranges.len());
    let mut rest = out;
    for (i, &(a, b)) in ranges.iter().enumerate() {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut((b - a) as usize);
        parts.push((i, head));
        rest = tail;
    }
    let job = |(i, buf): (usize, &mut [u8])| -> Result<()> {
        let info = ChunkInfo { name: v.name, dtype: v.dtype, shape: v.shape, offset: ranges[i].0 };
        c.decode(&info, &encoded[i], buf)
    };
    match pool {
        None => parts.into_iter().try_for_each(job),
        Some(p) => p.install(|| parts.into_par_iter().try_for_each(job)),
    }
}

/// Repeat `f` `inner` times and return seconds per call.
fn timed<F: FnMut() -> Result<()>>(inner: u32, mut f: F) -> Result<f64> {
    let t0 = Instant::now();
    for _ in 0..inner {
        f()?;
    }
    Ok(t0.elapsed().as_secs_f64() / inner as f64)
}

fn inner_for(secs: f64) -> u32 {
    if secs <= 0.0 { MAX_INNER } else { ((MIN_PASS_SECS / secs).ceil() as u32).clamp(1, MAX_INNER) }
}

fn check_tensor(
    c: &dyn Codec,
    dtype: crate::tensor::DType,
    original: &[u8],
    decoded: &[u8],
) -> (bool, Option<ErrorStats>, String) {
    let (lossless, _, bound) = bound_of(c.fidelity());
    if lossless {
        return (
            original == decoded,
            None,
            if original == decoded { String::new() } else { "round trip differs".into() },
        );
    }
    if original == decoded {
        return (
            true,
            Some(ErrorStats { n: 0, bound_held: bound.map(|_| true), psnr: f64::INFINITY, ..Default::default() }),
            String::new(),
        );
    }
    let mut acc = ErrorAccumulator::new(bound);
    match acc.add(dtype, original, decoded) {
        Ok(()) => {
            let s = acc.finish();
            let ok = s.bound_held.unwrap_or(true);
            (ok, Some(s), if ok { String::new() } else { "declared error bound violated".into() })
        }
        Err(e) => (false, None, format!("cannot check the bound: {}", e.message())),
    }
}

fn measure_tensor(
    c: &dyn Codec,
    v: &TensorView,
    ranges: &[(u64, u64)],
    pool: Option<&ThreadPool>,
    reps: u32,
    warmup: bool,
) -> Result<Measure> {
    let mut m = Measure::default();
    let encoded: Vec<Vec<u8>> = vec![Vec::new(); ranges.len()];
    let decoded = vec![0u8; v.data.len()];
    schedule(
        &mut m,
        &mut (encoded, decoded),
        reps,
        warmup,
        |(e, _)| encode_chunks(c, v, ranges, pool, e),
        |(e, d)| decode_chunks(c, v, ranges, pool, e, d),
        |(e, d)| {
            let (ok, err, note) = check_tensor(c, v.dtype, v.data, d);
            Ok((e.iter().map(|x| x.len() as u64).sum(), ok, err, note))
        },
    )?;
    Ok(m)
}

/// What a cell's check reports: compressed bytes, verified, error statistics, note.
type Checked = (u64, bool, Option<ErrorStats>, String);

/// The measuring schedule shared by tensor and file cells: a verifying warm-up
/// (which also sizes the inner repeat count of each timed pass), `reps` timed
/// encode and decode passes, and the verification after them when there was no
/// warm-up. A cell that fails its warm-up verification is not timed.
fn schedule<S>(
    m: &mut Measure,
    state: &mut S,
    reps: u32,
    warmup: bool,
    mut encode: impl FnMut(&mut S) -> Result<()>,
    mut decode: impl FnMut(&mut S) -> Result<()>,
    check: impl Fn(&S) -> Result<Checked>,
) -> Result<()> {
    // One verified round trip: times it, records peak heap, size and the check.
    type Pass<'a, S> = &'a mut dyn FnMut(&mut S) -> Result<()>;
    let verify = |m: &mut Measure, state: &mut S, encode: Pass<S>, decode: Pass<S>| -> Result<(f64, f64)> {
        let window = super::mem::Window::start();
        let t0 = Instant::now();
        encode(state)?;
        let te = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        decode(state)?;
        let td = t1.elapsed().as_secs_f64();
        m.peak = window.peak_above_start();
        let (compressed, ok, err, note) = check(state)?;
        m.compressed = Some(compressed);
        m.verified = ok;
        m.err = err;
        m.note = note;
        Ok((te, td))
    };
    let (mut ie, mut id) = (1, 1);
    if warmup {
        let (te, td) = verify(m, state, &mut encode, &mut decode)?;
        ie = inner_for(te);
        id = inner_for(td);
        if !m.verified {
            return Ok(());
        }
    }
    for _ in 0..reps {
        m.enc_secs.push(timed(ie, || encode(state))?);
        m.dec_secs.push(timed(id, || decode(state))?);
    }
    if !warmup {
        verify(m, state, &mut encode, &mut decode)?;
    }
    Ok(())
}

fn check_file(c: &dyn Codec, original: &[u8], decoded: &[u8]) -> Result<(bool, Option<ErrorStats>, String)> {
    if original == decoded {
        let lossless = c.fidelity().is_lossless();
        let s = (!lossless).then(|| ErrorStats { psnr: f64::INFINITY, bound_held: Some(true), ..Default::default() });
        return Ok((true, s, String::new()));
    }
    if c.fidelity().is_lossless() {
        return Ok((false, None, "decompressed file differs from the original".into()));
    }
    let a = SafeTensors::parse(original)?;
    let b = SafeTensors::parse(decoded).context("the decompressed file")?;
    if a.tensors.len() != b.tensors.len() {
        return Ok((false, None, "decompressed file has a different tensor list".into()));
    }
    let (_, _, bound) = bound_of(c.fidelity());
    let (mut n, mut sum_sq, mut sum_rel_n, mut sum_std_sq) = (0f64, 0f64, 0f64, 0f64);
    let mut agg = ErrorStats { psnr: f64::INFINITY, bound_held: bound.map(|_| true), ..Default::default() };
    let mut ok = true;
    for (va, vb) in a.views().zip(b.views()) {
        if va.data == vb.data {
            continue;
        }
        let (tok, s, _) = check_tensor(c, va.dtype, va.data, vb.data);
        ok &= tok;
        let Some(s) = s else { continue };
        let k = s.n as f64;
        n += k;
        sum_sq += s.rmse * s.rmse * k;
        sum_rel_n += s.mean_rel * k;
        sum_std_sq += s.rmse_rel_std * s.rmse_rel_std * k;
        agg.max_abs_rel_absmax = agg.max_abs_rel_absmax.max(s.max_abs_rel_absmax);
        agg.max_abs = agg.max_abs.max(s.max_abs);
        agg.max_rel = agg.max_rel.max(s.max_rel);
        agg.psnr = agg.psnr.min(s.psnr);
        if let (Some(h), Some(t)) = (agg.bound_held.as_mut(), s.bound_held) {
            *h &= t;
        }
    }
    if n > 0.0 {
        agg.rmse = (sum_sq / n).sqrt();
        agg.rmse_rel_std = (sum_std_sq / n).sqrt();
        agg.mean_rel = sum_rel_n / n;
        agg.n = n as u64;
    }
    Ok((ok, Some(agg), if ok { String::new() } else { "declared error bound violated".into() }))
}

#[allow(clippy::too_many_arguments)]
fn measure_file(
    spec: &str,
    c: &dyn Codec,
    bytes: &[u8],
    file_name: &str,
    chunk_size: usize,
    pool: Option<&ThreadPool>,
    reps: u32,
    warmup: bool,
) -> Result<(Measure, Vec<u8>)> {
    let opts = CompressOptions {
        codec: spec.to_string(),
        chunk_size,
        threads: 0,
        dedup: true,
        check: false,
        tensor_sha256: false,
        progress: false,
    };
    let mut m = Measure::default();
    let mut state: (Vec<u8>, Vec<u8>) = (Vec::new(), Vec::with_capacity(bytes.len()));
    let compress = |archive: &mut Vec<u8>| -> Result<()> {
        archive.clear();
        run_in(pool, || container::compress(bytes, file_name, &mut *archive, &opts)).map(|_| ())
    };
    let decompress = |archive: &[u8], out: &mut Vec<u8>| -> Result<()> {
        out.clear();
        let a = Archive::open(archive)?;
        run_in(pool, || a.stream(out, &DecodeOptions::default())).map(|_| ())
    };
    schedule(
        &mut m,
        &mut state,
        reps,
        warmup,
        |(a, _)| compress(a),
        |(a, o)| decompress(a, o),
        |(a, o)| {
            let (ok, err, note) = check_file(c, bytes, o)?;
            Ok((a.len() as u64, ok, err, note))
        },
    )?;
    // the decoded file of the last pass (the model runs on it: `[fidelity]`)
    Ok((m, state.1))
}

fn fill(row: &mut ResultRow, m: Measure) {
    row.compressed_bytes = m.compressed;
    row.ratio = m.compressed.map(|c| if row.original_bytes == 0 { 0.0 } else { c as f64 / row.original_bytes as f64 });
    (row.compress_mbps_median, row.compress_mbps_min, row.compress_mbps_max) = mbps(row.original_bytes, &m.enc_secs);
    (row.decompress_mbps_median, row.decompress_mbps_min, row.decompress_mbps_max) =
        mbps(row.original_bytes, &m.dec_secs);
    row.peak_mem_bytes = m.peak;
    row.verified = m.verified;
    if let Some(e) = m.err {
        row.max_abs_err = Some(e.max_abs);
        row.max_rel_err = Some(e.max_rel);
        row.mean_rel_err = Some(e.mean_rel);
        row.rmse = Some(e.rmse);
        row.psnr = e.psnr.is_finite().then_some(e.psnr);
        row.rmse_rel_std = Some(e.rmse_rel_std);
        row.max_abs_rel_absmax = Some(e.max_abs_rel_absmax);
        row.bound_held = e.bound_held;
    }
    if !m.note.is_empty() {
        row.note = if row.note.is_empty() { m.note } else { format!("{}; {}", row.note, m.note) };
    }
}

struct Entry {
    spec: String,
    codec: Box<dyn Codec>,
}

/// The model evaluators of a run (`[fidelity]`): one per input file whose
/// dataset the evaluator can run, built (and the original run) once.
#[cfg(feature = "fidelity")]
type Evaluators = Vec<Option<crate::fidelity::Evaluator>>;
#[cfg(not(feature = "fidelity"))]
type Evaluators = Vec<Option<()>>;

#[cfg(feature = "fidelity")]
fn evaluators(exp: &Experiment, files: &[InputFile], model_files: &[bool], progress: bool) -> Result<Evaluators> {
    let Some(spec) = &exp.fidelity else { return Ok(Vec::new()) };
    let texts = spec.texts.as_ref().map(|p| crate::fidelity::texts::read_lines(&exp.dataset_path(p))).transpose()?;
    let opts = crate::datasets::FetchOptions { progress, ..Default::default() };
    files
        .iter()
        .zip(model_files)
        .map(|(f, &wanted)| {
            if !wanted {
                return Ok(None);
            }
            if crate::fidelity::task_of(&f.dataset).is_none() {
                eprintln!("[fidelity]: no model evaluator for {} (its cells get no model metrics)", f.dataset);
                return Ok(None);
            }
            if !crate::fidelity::is_model_file(&f.dataset, &f.file) {
                // e.g. EmbeddingGemma's Dense layers: measured as files, run as part of the model
                return Ok(None);
            }
            let ev = crate::fidelity::Evaluator::new(&f.dataset, &f.variant, texts.clone(), &opts)
                .with_context(|| format!("[fidelity] {}:{}", f.dataset, f.variant))?;
            if ev.weights != f.path {
                return Err(Error::invalid(format!(
                    "[fidelity] {}:{}: the evaluator's weights {} are not the measured file {}",
                    f.dataset,
                    f.variant,
                    ev.weights.display(),
                    f.path.display()
                )));
            }
            Ok(Some(ev))
        })
        .collect()
}

#[cfg(not(feature = "fidelity"))]
fn evaluators(exp: &Experiment, _files: &[InputFile], _model_files: &[bool], _progress: bool) -> Result<Evaluators> {
    match exp.fidelity {
        Some(_) => Err(Error::unsupported(
            "this experiment has a [fidelity] section: rebuild weightlab with --features fidelity to run the models",
        )),
        None => Ok(Vec::new()),
    }
}

/// Whether `[fidelity]` runs the model on a whole-file cell of codec (or
/// peer label) `spec` of input file `fi`: the file has an evaluator, and the
/// section takes the cell (its `codecs`, and `lossless` for lossless cells).
fn model_runs(exp: &Experiment, evs: &Evaluators, fi: usize, spec: &str, lossless: bool) -> bool {
    let (Some(f), Some(Some(_))) = (&exp.fidelity, evs.get(fi)) else { return false };
    (f.lossless || !lossless) && (f.codecs.is_empty() || f.codecs.iter().any(|c| c == spec))
}

/// Add the model metrics of a whole-file cell to its row: the model runs on
/// `decoded`, the file the cell's archive (or a peer's) gave back, whose size
/// is the row's `compressed_bytes`.
#[cfg(feature = "fidelity")]
fn add_fidelity(exp: &Experiment, evs: &Evaluators, fi: usize, spec: &str, decoded: &[u8], row: &mut ResultRow) {
    let (Some(Some(ev)), Some(compressed)) = (evs.get(fi), row.compressed_bytes) else { return };
    if !model_runs(exp, evs, fi, spec, row.lossless) {
        return;
    }
    let measured = crate::fidelity::n_weights(ev.original()).and_then(|n| Ok((n, ev.metrics(decoded)?)));
    match measured {
        Ok((n, m)) => {
            row.bits_per_weight = Some(compressed as f64 * 8.0 / n.max(1) as f64);
            (row.cosine_mean, row.cosine_p1, row.cosine_min, row.top10_agreement) =
                (m.cosine_mean, m.cosine_p1, m.cosine_min, m.top10_agreement);
            (row.ppl_original, row.ppl, row.ppl_delta_pct, row.top1_agreement, row.kl_mean) =
                (m.ppl_original, m.ppl, m.ppl_delta_pct, m.top1_agreement, m.kl_mean);
        }
        Err(e) => {
            let n = format!("fidelity: {}: {}", e.kind().as_str(), e.message());
            row.note = if row.note.is_empty() { n } else { format!("{}; {n}", row.note) };
        }
    }
}

#[cfg(not(feature = "fidelity"))]
fn add_fidelity(_: &Experiment, _: &Evaluators, _: usize, _: &str, _: &[u8], _: &mut ResultRow) {}

/// Run an experiment; rows are also appended to the resume file as they
/// finish and written out with the report at the end.
pub fn run(exp: &Experiment, opts: &RunOptions) -> Result<RunReport> {
    let out_dir = opts.out_dir.clone().unwrap_or_else(|| default_out_dir(exp));
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(format!("creating {}", out_dir.display()), e))?;
    let reps = opts.reps.unwrap_or(exp.reps).max(1);
    let (entry_of, files): (Vec<usize>, Vec<InputFile>) = resolve_entries(exp, opts.progress)?.into_iter().unzip();
    // per file: may a codec run on it (its entry's `codecs`), are its cells run as a model
    let allowed =
        |fi: usize, spec: &str| exp.datasets[entry_of[fi]].codecs.as_ref().is_none_or(|l| l.iter().any(|c| c == spec));
    let peer_allowed =
        |fi: usize, p: &PeerSpec| exp.datasets[entry_of[fi]].peers.as_ref().is_none_or(|l| l.contains(&p.label()));
    let model_files: Vec<bool> = entry_of.iter().map(|&e| exp.datasets[e].fidelity).collect();
    let entries: Vec<Entry> = exp
        .codecs
        .iter()
        .map(|s| {
            let codec = codec::build(s)?;
            Ok(Entry { spec: codec.spec(), codec })
        })
        .collect::<Result<_>>()?;
    let peer_specs: Vec<PeerSpec> = exp.peers.iter().map(|p| PeerSpec::parse(p)).collect::<Result<_>>()?;

    let resume_path = out_dir.join(".resume");
    let build_path = out_dir.join(".resume.build");
    let build = build_id();
    let same_build = std::fs::read_to_string(&build_path).is_ok_and(|b| b == build);
    let fresh = opts.fresh || !same_build;
    let done = if fresh { HashMap::new() } else { read_resume(&resume_path) };
    let mut resume = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!fresh)
        .truncate(fresh)
        .open(&resume_path)
        .map_err(|e| Error::io(format!("opening {}", resume_path.display()), e))?;
    std::fs::write(&build_path, &build).map_err(|e| Error::io(format!("writing {}", build_path.display()), e))?;

    // open every file first: a bad path fails before hours of measuring
    let maps: Vec<crate::io::Mapped> = files
        .iter()
        .map(|f| crate::io::Mapped::open(&f.path).with_context(|| format!("dataset '{}'", f.dataset)))
        .collect::<Result<_>>()?;
    let mut parsed = Vec::with_capacity(maps.len());
    for (f, m) in files.iter().zip(&maps) {
        parsed.push(SafeTensors::parse(m.bytes()).with_context(|| f.path.display().to_string())?);
    }
    let evs = evaluators(exp, &files, &model_files, opts.progress)?;

    // the cells, in order
    let selected: Vec<Vec<usize>> = parsed
        .iter()
        .map(|st| {
            let idx = st
                .tensors
                .iter()
                .enumerate()
                .filter(|(_, t)| t.byte_len() >= exp.min_tensor_bytes && t.byte_len() > 0)
                .map(|(i, _)| i);
            match exp.max_tensors {
                Some(n) => idx.take(n).collect(),
                None => idx.collect(),
            }
        })
        .collect();
    let per_file_cells = |i: usize| {
        let n = entries.iter().filter(|e| allowed(i, &e.spec)).count();
        let t = if exp.granularity.tensors() { selected[i].len() * n } else { 0 };
        let f = if exp.granularity.files() { n } else { 0 };
        (t + f + peer_specs.iter().filter(|p| peer_allowed(i, p)).count()) * exp.threads.len()
    };
    let total: usize = (0..files.len()).map(per_file_cells).sum();
    let bar = crate::progress::count_bar(total as u64, &exp.name, opts.progress);
    let peer_dir = std::env::temp_dir().join(format!("weightlab-peers-{}", std::process::id()));
    let decoded_out = peer_dir.join("decoded.safetensors");

    let mut rows = Vec::with_capacity(total);
    let (mut measured, mut resumed) = (0usize, 0usize);
    for (fi, file) in files.iter().enumerate() {
        let st = &parsed[fi];
        let bytes = maps[fi].bytes();
        let file_name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let base = ResultRow {
            experiment: exp.name.clone(),
            dataset: file.dataset.clone(),
            variant: file.variant.clone(),
            derived: file.derived,
            file: file_name.clone(),
            available: true,
            reps,
            ..Default::default()
        };
        // untimed work, in parallel: the floor of every selected tensor
        let views: Vec<TensorView> = st.tensors.iter().map(|t| st.view(t)).collect();
        let floors: Vec<f64> = {
            let want: Vec<usize> =
                if exp.granularity.files() { (0..views.len()).collect() } else { selected[fi].clone() };
            let mut fl = vec![f64::NAN; views.len()];
            let got: Vec<(usize, f64)> = want
                .par_iter()
                .map(|&i| (i, crate::analysis::entropy::floor_bytes(views[i].dtype, views[i].data)))
                .collect();
            for (i, f) in got {
                fl[i] = f;
            }
            fl
        };
        for &threads in &exp.threads {
            // file cells always run in a pool of exactly `threads` threads (the
            // container would otherwise use the global pool); tensor cells
            // with one thread run on the caller
            let file_pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads as usize)
                .build()
                .map_err(|e| Error::invalid(format!("cannot start {threads} threads: {e}")))?;
            let pool = (threads > 1).then_some(&file_pool);
            let mut emit = |row: ResultRow, fresh_cell: bool, persist: bool| -> Result<()> {
                if fresh_cell {
                    measured += 1;
                    if persist {
                        let mut line = serde_json::to_string(&row).map_err(|e| Error::invalid(e.to_string()))?;
                        line.push('\n');
                        resume.write_all(line.as_bytes()).map_err(|e| Error::io("appending to the resume file", e))?;
                        resume.flush().map_err(|e| Error::io("appending to the resume file", e))?;
                    }
                    if opts.verbose {
                        bar.suspend(|| eprintln!("{}", one_line(&row)));
                    }
                } else {
                    resumed += 1;
                }
                bar.inc(1);
                rows.push(row);
                Ok(())
            };

            if exp.granularity.tensors() {
                for &ti in &selected[fi] {
                    let (t, v): (&TensorInfo, &TensorView) = (&st.tensors[ti], &views[ti]);
                    let ranges = chunk_ranges(t, exp.chunk_size);
                    for e in entries.iter().filter(|e| allowed(fi, &e.spec)) {
                        let mut row = ResultRow {
                            tensor: t.name.clone(),
                            dtype: t.dtype.name().to_string(),
                            tensor_class: tensor_class(&t.name).into(),
                            numel: t.numel(),
                            codec: e.spec.clone(),
                            family: family(&e.spec),
                            original_bytes: t.byte_len(),
                            threads,
                            floor_bytes: Some(floors[ti]),
                            floor_ratio: (t.byte_len() > 0).then(|| floors[ti] / t.byte_len() as f64),
                            ..base.clone()
                        };
                        if let Some(r) = done.get(&cell_key(&row)) {
                            emit(r.clone(), false, false)?;
                            continue;
                        }
                        bar.set_message(format!("{} {}", t.name, e.spec));
                        let picked = e.codec.resolve(v).with_context(|| format!("tensor '{}'", t.name));
                        let m = match picked {
                            Err(err) => Err(err),
                            Ok(p) => {
                                let c: &dyn Codec = p.as_deref().unwrap_or(e.codec.as_ref());
                                if let Some(p) = &p {
                                    row.note = format!("picked {}", p.spec());
                                }
                                (row.lossless, row.bound, _) = bound_of(c.fidelity());
                                measure_tensor(c, v, &ranges, pool, reps, exp.warmup)
                            }
                        };
                        match m {
                            Ok(m) => fill(&mut row, m),
                            Err(err) => {
                                (row.lossless, row.bound, _) = bound_of(e.codec.fidelity());
                                row.note = format!("{}: {}", err.kind().as_str(), err.message());
                            }
                        }
                        emit(row, true, true)?;
                    }
                }
            }
            let dtypes = {
                let mut d: Vec<&str> = st.tensors.iter().map(|t| t.dtype.name()).collect();
                d.sort_unstable();
                d.dedup();
                d.join("+")
            };
            if exp.granularity.files() {
                let floor: f64 = floors.iter().filter(|f| f.is_finite()).sum::<f64>() + st.header_bytes.len() as f64;
                for e in entries.iter().filter(|e| allowed(fi, &e.spec)) {
                    let mut row = ResultRow {
                        tensor: "*".into(),
                        dtype: dtypes.clone(),
                        tensor_class: "file".into(),
                        numel: st.tensors.iter().map(|t| t.numel()).sum(),
                        codec: e.spec.clone(),
                        family: family(&e.spec),
                        original_bytes: bytes.len() as u64,
                        threads,
                        floor_bytes: Some(floor),
                        floor_ratio: Some(floor / bytes.len().max(1) as f64),
                        ..base.clone()
                    };
                    (row.lossless, row.bound, _) = bound_of(e.codec.fidelity());
                    if let Some(r) = done.get(&cell_key(&row)) {
                        emit(r.clone(), false, false)?;
                        continue;
                    }
                    bar.set_message(format!("{file_name} {}", e.spec));
                    match measure_file(
                        &e.spec,
                        e.codec.as_ref(),
                        bytes,
                        &file_name,
                        exp.chunk_size,
                        Some(&file_pool),
                        reps,
                        exp.warmup,
                    ) {
                        Ok((m, decoded)) => {
                            fill(&mut row, m);
                            if row.verified {
                                bar.set_message(format!("{file_name} {} (model)", e.spec));
                                add_fidelity(exp, &evs, fi, &e.spec, &decoded, &mut row);
                            }
                        }
                        Err(err) => row.note = format!("{}: {}", err.kind().as_str(), err.message()),
                    }
                    emit(row, true, true)?;
                }
            }
            for p in peer_specs.iter().filter(|p| peer_allowed(fi, p)) {
                let mut row = ResultRow {
                    tensor: "*".into(),
                    dtype: dtypes.clone(),
                    tensor_class: "file".into(),
                    numel: st.tensors.iter().map(|t| t.numel()).sum(),
                    codec: p.label(),
                    family: "peer".into(),
                    lossless: true,
                    original_bytes: bytes.len() as u64,
                    threads,
                    ..base.clone()
                };
                if let Some(r) = done.get(&cell_key(&row)) {
                    emit(r.clone(), false, false)?;
                    continue;
                }
                bar.set_message(format!("{file_name} {}", p.label()));
                std::fs::create_dir_all(&peer_dir)
                    .map_err(|e| Error::io("creating the peers' scratch directory", e))?;
                let o = peers::measure(
                    p,
                    &peers::PeerRun {
                        input: &file.path,
                        reps,
                        warmup: exp.warmup,
                        threads,
                        work_dir: &peer_dir,
                        // only a lossy peer writes it, and only for a cell the model runs on
                        decoded_out: model_runs(exp, &evs, fi, &p.label(), false).then_some(decoded_out.as_path()),
                    },
                );
                row.available = o.available;
                row.lossless = o.lossless;
                row.bound = o.bound.clone();
                row.note = [o.version.as_str(), o.note.as_str()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ");
                let persist = o.available;
                if o.available {
                    let m = Measure {
                        compressed: o.compressed_bytes,
                        enc_secs: o.compress_secs,
                        dec_secs: o.decompress_secs,
                        peak: o.peak_mem_bytes,
                        verified: o.verified,
                        err: None,
                        note: String::new(),
                    };
                    fill(&mut row, m);
                    row.max_abs_err = o.max_abs_err;
                    row.max_rel_err = o.max_rel_err;
                    row.rmse = o.rmse;
                    row.psnr = o.psnr;
                    row.rmse_rel_std = o.rmse_rel_std;
                    row.max_abs_rel_absmax = o.max_abs_rel_absmax;
                    row.bound_held = o.bound_held;
                }
                if let Some(p) = &o.decoded_path {
                    // a lossy peer's decoded model, run as our cells' are
                    match std::fs::read(p) {
                        Ok(decoded) if row.verified => {
                            bar.set_message(format!("{file_name} {} (model)", row.codec));
                            let label = row.codec.clone();
                            add_fidelity(exp, &evs, fi, &label, &decoded, &mut row);
                        }
                        Ok(_) => {}
                        Err(e) => row.note = format!("{}; reading the decoded model {}: {e}", row.note, p.display()),
                    }
                    let _ = std::fs::remove_file(p);
                }
                emit(row, true, persist)?;
            }
        }
    }
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&peer_dir);
    Ok(RunReport { rows, out_dir, measured, resumed, files })
}

/// A one-line summary of a row (for logs).
pub fn one_line(r: &ResultRow) -> String {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.1}"));
    if !r.available {
        return format!("{} {} {}: unavailable ({})", r.file, r.tensor, r.codec, r.note);
    }
    format!(
        "{} {} {}: {:.2}% (floor {}), enc {} MB/s, dec {} MB/s{}{}",
        r.file,
        r.tensor,
        r.codec,
        100.0 * r.ratio.unwrap_or(f64::NAN),
        r.floor_ratio.map_or("-".into(), |x| format!("{:.2}%", 100.0 * x)),
        f(r.compress_mbps_median),
        f(r.decompress_mbps_median),
        if r.verified { "" } else { " NOT VERIFIED" },
        if r.note.is_empty() { String::new() } else { format!(" [{}]", r.note) }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_from_names() {
        assert_eq!(tensor_class("embeddings.word_embeddings.weight"), "embedding");
        assert_eq!(tensor_class("encoder.layer.0.attention.self.query.weight"), "attention");
        assert_eq!(tensor_class("encoder.layer.0.attention.output.LayerNorm.weight"), "norm");
        assert_eq!(tensor_class("encoder.layer.0.output.dense.weight"), "mlp");
        assert_eq!(tensor_class("encoder.layer.0.intermediate.dense.bias"), "bias");
        assert_eq!(tensor_class("pooler.dense.weight"), "other");
        assert_eq!(tensor_class("layers.3.k"), "kv-key");
        assert_eq!(tensor_class("layers.12.v.channel_major"), "kv-value");
        assert_eq!(tensor_class("layers.0.k.scale"), "kv-key");
        assert_eq!(tensor_class("model.layers.0.self_attn.k_proj.weight"), "attention");
    }

    #[test]
    fn mbps_median_min_max() {
        let (med, lo, hi) = mbps(2_000_000, &[1.0, 2.0, 0.5]);
        assert_eq!((med, lo, hi), (Some(2.0), Some(1.0), Some(4.0)));
        assert_eq!(mbps(1, &[]), (None, None, None));
    }

    #[test]
    fn families() {
        assert_eq!(family("planes>zstd:level=1"), "planes");
        assert_eq!(family("zstd:level=3"), "generic");
    }
}
