//! The weightlab command line. Everything here is a thin layer over the
//! library; errors become a message on stderr and an exit code by kind.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use weightlab::container::{self, Archive, CompressOptions};
use weightlab::{ErrorKind, codec};

/// `println!` that fails instead of panicking when stdout is closed
/// (`weightlab info A.wlab | head -1`): the error carries the broken pipe
/// up to `main`, which exits quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(|e| weightlab::Error::io("writing to stdout", e))?
    }};
}

/// `print!` likewise.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err(|e| weightlab::Error::io("writing to stdout", e))?
    }};
}

/// Thread counts beyond this are refused (exit 2) rather than tried.
const MAX_THREADS: u64 = 1024;

fn threads_arg() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(0..=MAX_THREADS)
}

fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s.split_once('/').ok_or("expected I/N, e.g. 2/8")?;
    let (i, n): (usize, usize) =
        (i.parse().map_err(|_| "I is not a number")?, n.parse().map_err(|_| "N is not a number")?);
    weightlab::repo::check_slice(i, n).map_err(|e| e.message().to_string())?;
    Ok((i, n))
}

fn chunk_kib_arg() -> clap::builder::RangedU64ValueParser<u64> {
    clap::builder::RangedU64ValueParser::<u64>::new().range(1..=container::format::MAX_CHUNK_SIZE >> 10)
}

#[derive(Parser)]
#[command(name = "weightlab", version, about = "A codec lab for neural-network weights")]
struct Cli {
    /// No progress bars or summaries.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where outputs go, zstd's way.
#[derive(clap::Args)]
struct OutputArgs {
    /// Output file (a directory for a directory input; one input only); `-` is stdout.
    /// Default: beside each input, FILE.wlab (compress) or FILE without .wlab (decompress).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Write to stdout (as `-o -`).
    #[arg(short = 'c', long)]
    stdout: bool,
    /// Overwrite outputs that exist (else they are refused, exit 2).
    #[arg(short, long)]
    force: bool,
    /// Remove each input file once its output is written, synced and checked
    /// (compress: `verify` of the archive against the input; decompress: the
    /// output's sha256 against the archive's).
    #[arg(long, conflicts_with = "keep")]
    rm: bool,
    /// Keep the inputs (the default).
    #[arg(short, long)]
    keep: bool,
    /// Sync every output to disk before it is renamed into place (always done with --rm).
    #[arg(long)]
    sync: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compress safetensors files (FILE -> FILE.wlab beside it) or model
    /// directories (DIR -> DIR.wlab/, every *.safetensors compressed, every
    /// other file copied, with a manifest). `-` reads stdin.
    Compress {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[command(flatten)]
        out: OutputArgs,
        /// Codec spec for every tensor (`weightlab codecs` lists them).
        #[arg(long, default_value = container::DEFAULT_CODEC)]
        codec: String,
        /// Worker threads (0: one per core; at most 1024).
        #[arg(short = 'j', long, default_value_t = 0, value_parser = threads_arg())]
        threads: usize,
        /// Chunk size in KiB (1 to 262144, i.e. 256 MiB).
        #[arg(long, default_value_t = (container::DEFAULT_CHUNK_SIZE >> 10) as u64, value_parser = chunk_kib_arg())]
        chunk_kib: u64,
        /// Store tied tensors (identical bytes) separately instead of once.
        #[arg(long)]
        no_dedup: bool,
        /// Decode every chunk again before writing it.
        #[arg(long)]
        check: bool,
        /// Also record every tensor's sha256 (hashes each byte a second time; the file's
        /// sha256 and every chunk's xxh3 are always recorded).
        #[arg(long)]
        tensor_sha256: bool,
        /// Only slice I of N of a directory's files (1-based), for N processes or machines
        /// writing into one output directory; `weightlab join-slices OUT_DIR` then makes its
        /// manifest. Slices are deterministic and balanced by size.
        #[arg(long, value_name = "I/N", value_parser = parse_shard)]
        shard: Option<(usize, usize)>,
    },
    /// Join the slice manifests that `compress DIR --shard I/N` runs wrote into OUT_DIR
    /// into its manifest, once every slice has finished.
    JoinSlices { dir: PathBuf },
    /// Decompress archives (FILE.wlab -> FILE) or compressed directories
    /// (DIR.wlab/ -> DIR/), byte for byte. `-` reads stdin.
    Decompress {
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[command(flatten)]
        out: OutputArgs,
        #[arg(short = 'j', long, default_value_t = 0, value_parser = threads_arg())]
        threads: usize,
    },
    /// Describe an archive (tensors, dtypes, codecs, sizes, ratio) or a compressed directory.
    Info {
        input: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Decode everything and check every checksum (of an archive, or of every file of a
    /// compressed directory against its manifest).
    Verify {
        input: PathBuf,
        /// The original file: also check the archive was made from it.
        #[arg(long)]
        original: Option<PathBuf>,
        #[arg(short = 'j', long, default_value_t = 0, value_parser = threads_arg())]
        threads: usize,
    },
    /// List the codec stages this build knows.
    Codecs,
    /// Fetch a dataset (datasets/NAME.toml) into the cache, verified by sha256;
    /// import it to safetensors and derive variants on request.
    Fetch {
        /// Dataset names (`weightlab datasets` lists them) or manifest paths; `all` for every one.
        #[arg(required = true)]
        names: Vec<String>,
        /// Derived variants to make as well: bf16, f16, fp8-e4m3, fp8-e5m2, mxfp4, nvfp4 (those the
        /// manifest declares), or `all` (repeatable); DATASET/VARIANT/ is then a whole model directory.
        #[arg(long = "variant")]
        variants: Vec<String>,
        /// Cache root (default: $WEIGHTLAB_CACHE, else ~/.cache/weightlab).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Use only the cache: no network.
        #[arg(long)]
        offline: bool,
        /// Do not try the hub (as HF_HUB_OFFLINE=1).
        #[arg(long)]
        no_hub: bool,
        /// Do not try the mirrors.
        #[arg(long)]
        no_mirror: bool,
        /// Hub endpoint (default: $HF_ENDPOINT, else https://huggingface.co).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// List the datasets (manifests) and what of them is in the cache.
    Datasets,
    /// Byte frequencies, byte-plane and float-field entropies, the order-0
    /// floor and value statistics of a safetensors file, per tensor and per dtype.
    Analyze {
        input: PathBuf,
        /// Everything as JSON (histograms included).
        #[arg(long)]
        json: bool,
        /// Only this tensor (repeatable); its full detail is printed.
        #[arg(long = "tensor")]
        tensors: Vec<String>,
        /// Print the full detail of every tensor.
        #[arg(long)]
        detail: bool,
        /// Print the Aveiro Tables 3.1-3.3 (markdown) with the published Qwen2-0.5B numbers beside ours.
        #[arg(long)]
        tables: bool,
    },
    /// Run an experiment (experiments/NAME.toml, or a path): every dataset x
    /// tensor/file x codec and peer, verified, timed; results in reports/NAME/.
    Run {
        /// Experiment name or TOML path.
        experiment: String,
        /// Measure every cell again (ignore reports/NAME/.resume).
        #[arg(long)]
        fresh: bool,
        /// Override the experiment's repetitions.
        #[arg(long)]
        reps: Option<u32>,
        /// Report directory (default reports/NAME).
        #[arg(long)]
        out: Option<PathBuf>,
        /// One line per measured cell on stderr.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Re-render the tables and charts of reports/NAME from its results.parquet (feature `lab`).
    /// The layout, published numbers and description come from experiments/NAME.toml when
    /// it exists (and are saved to the report's meta.json), else from meta.json.
    Report {
        /// Experiment name (reports/NAME) or a report directory.
        name: String,
        /// Where report directories live.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Take the presentation from this experiment file instead of experiments/NAME.toml.
        #[arg(long, conflicts_with = "saved")]
        experiment: Option<String>,
        /// Use only the report's own meta.json, not the experiment file.
        #[arg(long)]
        saved: bool,
    },
    /// Run a model with its original and its decoded weights on fixed texts and print what
    /// the codec did to its outputs (embedding cosine, perplexity …; feature `fidelity`).
    #[cfg(feature = "fidelity")]
    Eval(weightlab::fidelity::cli::EvalArgs),
}

fn exit_code(err: &anyhow::Error) -> u8 {
    let Some(e) = err.chain().find_map(|e| e.downcast_ref::<weightlab::Error>()) else { return 1 };
    match e.kind() {
        ErrorKind::Io => 1,
        ErrorKind::InvalidInput => 2,
        ErrorKind::Corruption | ErrorKind::Truncated => 3,
        ErrorKind::HashMismatch => 4,
        ErrorKind::Unsupported => 5,
        ErrorKind::BoundViolated => 6,
        ErrorKind::Network => 7,
        _ => 1,
    }
}

/// Counts heap bytes so the experiment runner can report peak memory.
#[global_allocator]
static ALLOC: weightlab::experiment::mem::CountingAlloc = weightlab::experiment::mem::CountingAlloc;

/// Is this the reader of our stdout having gone away (`| head`)?
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<weightlab::Error>()
            .and_then(|w| w.io_error())
            .or_else(|| e.downcast_ref::<std::io::Error>())
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    weightlab::io::keep_freed_memory();
    weightlab::signals::install();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // as other command-line tools do: stop, say nothing
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let progress = !cli.quiet;
    match cli.cmd {
        Cmd::JoinSlices { dir } => {
            let m = weightlab::repo::join_slices(&dir, &weightlab::io::WriteOptions::default())?;
            if !cli.quiet {
                eprintln!("{}: joined, {} files, {}", dir.display(), m.files.len(), mb(m.total_size()));
            }
        }
        Cmd::Compress { inputs, out, codec, threads, chunk_kib, no_dedup, check, tensor_sha256, shard } => {
            if shard.is_some() && !(inputs.len() == 1 && inputs[0].is_dir() && out.output.is_some()) {
                Err(weightlab::Error::invalid("--shard takes one directory input and -o OUT_DIR"))?;
            }
            let opts = CompressOptions {
                codec,
                chunk_size: usize::try_from(chunk_kib << 10).context("chunk size")?,
                threads,
                dedup: !no_dedup,
                check,
                tensor_sha256,
                progress,
            };
            for (input, target) in plan(&inputs, &out, Job::Compress)? {
                compress_one(&input, &target, &opts, &out, shard, cli.quiet)?;
            }
        }
        Cmd::Decompress { inputs, out, threads } => {
            for (input, target) in plan(&inputs, &out, Job::Decompress)? {
                decompress_one(&input, &target, threads, progress, &out, cli.quiet)?;
            }
        }
        Cmd::Info { input, json } => {
            if input.is_dir() {
                print_dir_info(&input, json)?;
            } else {
                let map = weightlab::io::Mapped::open(&input)?;
                let a = Archive::open(map.bytes()).with_context(|| input.display().to_string())?;
                print_info(&a, map.bytes().len() as u64, json)?;
            }
        }
        Cmd::Verify { input, original, threads } if input.is_dir() => {
            if original.is_some() {
                Err(weightlab::Error::invalid("--original takes a file; a directory is checked against its manifest"))?;
            }
            let r = weightlab::repo::verify_dir(&input, threads, progress)?;
            outln!(
                "OK: {} files ({} archives), {} of originals, every archive decodes to its file's sha256 and every copy matches the manifest",
                r.files,
                r.archives,
                mb(r.bytes)
            );
        }
        Cmd::Verify { input, original, threads } => {
            let r = container::verify_file(&input, original.as_deref(), threads, progress)?;
            let tensor_sums = match r.tensor_sha256s {
                0 => "every chunk's xxh3 matches".to_string(),
                n if n == r.tensors => "every chunk's xxh3 and tensor's sha256 match".to_string(),
                n => format!("every chunk's xxh3 and the {n} recorded tensor sha256s match"),
            };
            outln!(
                "OK: {} tensors, {} decoded, {tensor_sums}; the file's sha256 {}{}",
                r.tensors,
                mb(r.bytes),
                r.sha256,
                if r.lossless { " (lossless: identical to the original)" } else { " (lossy archive)" }
            );
        }
        Cmd::Analyze { input, json, tensors, detail, tables } => {
            let map = weightlab::io::Mapped::open(&input)?;
            let name = input.display().to_string();
            let a = weightlab::analysis::analyze_safetensors(&name, map.bytes(), &tensors)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&a)?);
            } else if tables {
                let t = a.main_total().context("no tensors")?;
                let p = weightlab::analysis::tables::aveiro_qwen2_0_5b();
                out!("{}", weightlab::analysis::tables::aveiro_tables(t, Some(&p)));
            } else {
                out!("{}", weightlab::analysis::tables::render_text(&a, detail || !tensors.is_empty()));
            }
        }
        Cmd::Run { experiment, fresh, reps, out, verbose } => {
            run_cmd(&experiment, fresh, reps, out, verbose, progress)?
        }
        Cmd::Report { name, reports, experiment, saved } => report_cmd(&name, &reports, experiment, saved)?,
        #[cfg(feature = "fidelity")]
        Cmd::Eval(args) => weightlab::fidelity::cli::run(&args, !cli.quiet)?,
        Cmd::Fetch { names, variants, cache_dir, offline, no_hub, no_mirror, endpoint } => {
            let mut opts = weightlab::datasets::FetchOptions { progress, verbose: !cli.quiet, ..Default::default() };
            opts.cache_dir = cache_dir;
            opts.offline = offline;
            opts.hub &= !no_hub;
            opts.mirrors = !no_mirror;
            if endpoint.is_some() {
                opts.endpoint = endpoint;
            }
            fetch_cmd(&names, &variants, &opts)?;
        }
        Cmd::Datasets => datasets_cmd()?,
        Cmd::Codecs => {
            for d in codec::REGISTRY {
                outln!("{:>4}  {:<10} {}", d.id, d.name, d.summary);
            }
        }
    }
    Ok(())
}

fn run_cmd(
    name: &str,
    fresh: bool,
    reps: Option<u32>,
    out: Option<PathBuf>,
    verbose: bool,
    progress: bool,
) -> anyhow::Result<()> {
    let opts = weightlab::experiment::RunOptions { fresh, progress, out_dir: out, reps, verbose };
    weightlab::experiment::cli::run(name, &opts)?;
    Ok(())
}

#[cfg(feature = "lab")]
fn report_cmd(name: &str, reports: &std::path::Path, experiment: Option<String>, saved: bool) -> anyhow::Result<()> {
    use weightlab::experiment::{Experiment, spec::resolve_path};
    let as_dir = std::path::Path::new(name).is_dir();
    let dir = if as_dir { PathBuf::from(name) } else { reports.join(name) };
    // the experiment file: given, or experiments/NAME.toml for a bare name when it exists
    let exp_path = match (saved, experiment) {
        (true, _) => None,
        (false, Some(p)) => Some(p),
        (false, None) if !as_dir && resolve_path(name).is_file() => Some(name.to_string()),
        _ => None,
    };
    let exp = exp_path.as_deref().map(Experiment::load).transpose()?;
    let n = weightlab::report::rerender_with(&dir, exp.as_ref())?;
    let from = exp.as_ref().and_then(|e| e.source.as_ref()).map_or_else(
        || "layout from meta.json".to_string(),
        |p| format!("layout and published numbers from {}", p.display()),
    );
    eprintln!("{}: re-rendered tables and charts from {} rows ({from})", dir.display(), n);
    Ok(())
}

#[cfg(not(feature = "lab"))]
fn report_cmd(
    _name: &str,
    _reports: &std::path::Path,
    _experiment: Option<String>,
    _saved: bool,
) -> anyhow::Result<()> {
    anyhow::bail!("this weightlab was built without the `lab` feature: rebuild with --features lab to render reports")
}

fn fetch_cmd(names: &[String], variants: &[String], opts: &weightlab::datasets::FetchOptions) -> anyhow::Result<()> {
    use weightlab::datasets;
    let all = names.iter().any(|n| n == "all");
    let names: Vec<String> = if all { datasets::list_names() } else { names.to_vec() };
    let mut failed = Vec::new();
    for name in &names {
        if let Err(e) = fetch_one(name, variants, opts) {
            if !all && names.len() == 1 {
                return Err(e);
            }
            eprintln!("error: {e:#}");
            failed.push(name.clone());
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{} of {} datasets could not be fetched: {}", failed.len(), names.len(), failed.join(", "));
    }
    Ok(())
}

fn fetch_one(name: &str, variants: &[String], opts: &weightlab::datasets::FetchOptions) -> anyhow::Result<()> {
    use weightlab::datasets;
    {
        let m = datasets::load_manifest(name)?;
        let wanted: Vec<String> = if variants.iter().any(|v| v == "all") {
            m.declared_variants().iter().map(|v| v.name().to_string()).collect()
        } else {
            variants.to_vec()
        };
        let t0 = Instant::now();
        let weights =
            m.files.iter().any(|f| matches!(f.format, datasets::FileFormat::Safetensors | datasets::FileFormat::Ct2));
        let (fetched, resolved) = if weights {
            let mut all = vec!["original".to_string()];
            all.extend(wanted);
            let resolved = datasets::resolve(name, &all, opts).with_context(|| format!("dataset {name}"))?;
            // The rest of the repository (config, tokenizer, ...), and each
            // variant made a whole repository beside its weights.
            (datasets::fetch_others(name, &all, opts).with_context(|| format!("dataset {name}"))?, resolved)
        } else {
            if !wanted.is_empty() {
                anyhow::bail!("dataset {name} has no weight file that can be imported; variants cannot be derived");
            }
            (datasets::fetch(name, opts).with_context(|| format!("dataset {name}"))?, Vec::new())
        };
        for f in fetched {
            outln!(
                "{}\t{}\tfetched ({:?})\t{} bytes\tsha256 {}\t{}\t{:.2} s\t{}",
                f.dataset,
                f.file,
                f.format,
                f.size,
                f.sha256,
                f.source,
                f.seconds,
                f.path.display()
            );
        }
        for r in resolved {
            outln!(
                "{}\t{}\t{}\t{} bytes\tsha256 {}\t{}\t{:.2} s\t{}",
                r.dataset,
                r.variant,
                if r.derived { "derived" } else { "original" },
                r.size,
                r.sha256,
                r.source,
                r.seconds,
                r.path.display()
            );
        }
        for z in datasets::drop_joins(name, opts)? {
            if opts.verbose {
                eprintln!("{name}: every file is in the cache; removed the joined zip {}", z.display());
            }
        }
        if opts.verbose {
            eprintln!("{name}: done in {:.2} s", t0.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

fn datasets_cmd() -> anyhow::Result<()> {
    use weightlab::datasets;
    let root = datasets::cache_dir();
    outln!("cache: {}", root.display());
    for name in datasets::list_names() {
        let m = match datasets::load_manifest(&name) {
            Ok(m) => m,
            Err(e) => {
                outln!("{name}: {e}");
                continue;
            }
        };
        let hub = m.hub.as_ref().map(|h| format!("{}@{}", h.repo, h.revision)).unwrap_or_else(|| "-".into());
        outln!("{:<22} {}  [hub {hub}; license {}]", m.name, m.description, m.license);
        for f in &m.files {
            let cached = datasets::fetched_path(&root, &m, f).is_file();
            let mirrors: Vec<String> = f.mirrors.iter().map(|x| x.describe()).collect();
            outln!(
                "    {:<36} {:?}, {} bytes, sha256 {}, mirrors: {}{}",
                f.path,
                f.format,
                f.size.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                f.sha256.as_deref().unwrap_or("(hub's)"),
                if mirrors.is_empty() { "none".into() } else { mirrors.join(", ") },
                if cached { " [cached]" } else { "" }
            );
        }
        if !m.variants.is_empty() {
            outln!("    variants: original, {}", m.variants.join(", "));
        }
    }
    Ok(())
}

/// What a command makes of its inputs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Compress,
    Decompress,
}

/// Where one input's output goes.
enum Target {
    Stdout,
    Path(PathBuf),
}

fn invalid(msg: String) -> anyhow::Error {
    weightlab::Error::invalid(msg).into()
}

/// Pair every input with its output, zstd's way: `-o` for one input,
/// `-c`/`-o -` for stdout, else beside the input with the suffix added
/// (compress) or stripped (decompress); stdin goes to stdout.
fn plan(inputs: &[PathBuf], out: &OutputArgs, job: Job) -> anyhow::Result<Vec<(PathBuf, Target)>> {
    use std::io::IsTerminal;
    let dash = |p: &Path| p.as_os_str() == "-";
    let to_stdout = out.stdout || out.output.as_deref().is_some_and(dash);
    if inputs.len() > 1 && (to_stdout || out.output.is_some()) {
        return Err(invalid(format!(
            "{} inputs but one output: -o and -c take one input (without them each input gets its own output beside it)",
            inputs.len()
        )));
    }
    if out.rm && (to_stdout || inputs.iter().any(|p| dash(p))) {
        return Err(invalid("--rm needs a file input and a file output".into()));
    }
    let mut plans = Vec::with_capacity(inputs.len());
    for input in inputs {
        let target = match &out.output {
            _ if to_stdout => Target::Stdout,
            Some(o) => Target::Path(o.clone()),
            None if dash(input) => Target::Stdout,
            None => Target::Path(default_output(input, job)?),
        };
        if matches!(target, Target::Stdout) && std::io::stdout().is_terminal() {
            return Err(invalid(
                "refusing to write binary data to a terminal: redirect stdout, or give -o FILE".into(),
            ));
        }
        if out.rm && input.is_dir() {
            return Err(invalid(format!(
                "--rm takes files; {} is a directory (remove it yourself once `weightlab verify` has checked the output)",
                input.display()
            )));
        }
        plans.push((input.clone(), target));
    }
    Ok(plans)
}

/// `model.safetensors` -> `model.safetensors.wlab`; `model.safetensors.wlab` -> `model.safetensors`.
fn default_output(input: &Path, job: Job) -> anyhow::Result<PathBuf> {
    let suffix = weightlab::repo::SUFFIX;
    // `DIR/` and `.` name their directory by its own name
    let named = if input.file_name().is_some() { input.to_path_buf() } else { std::fs::canonicalize(input)? };
    let name = named.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match job {
        Job::Compress => Ok(named.with_file_name(format!("{name}{suffix}"))),
        Job::Decompress => match name.strip_suffix(suffix).filter(|n| !n.is_empty()) {
            Some(stem) => Ok(named.with_file_name(stem)),
            None => Err(invalid(format!(
                "{}: does not end in {suffix}, so its output needs a name: give -o FILE",
                input.display()
            ))),
        },
    }
}

fn write_opts(out: &OutputArgs) -> weightlab::io::WriteOptions {
    weightlab::io::WriteOptions { sync: out.sync || out.rm, overwrite: out.force }
}

/// The bytes of an input whose output goes to stdout: stdin spooled for
/// `-`, else the file mapped; a directory's output is a directory.
fn map_for_stdout(input: &Path) -> anyhow::Result<weightlab::io::Mapped> {
    if input.is_dir() {
        return Err(invalid(format!("{} is a directory: its output is a directory, give -o DIR", input.display())));
    }
    Ok(if input.as_os_str() == "-" { weightlab::io::Mapped::stdin()? } else { weightlab::io::Mapped::open(input)? })
}

fn remove_input(input: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(input).map_err(|e| weightlab::Error::io(format!("removing {}", input.display()), e))?;
    Ok(())
}

fn compress_one(
    input: &Path,
    target: &Target,
    opts: &CompressOptions,
    out: &OutputArgs,
    shard: Option<(usize, usize)>,
    quiet: bool,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let wopts = write_opts(out);
    let (size, written, shown) = match target {
        Target::Path(o) if input.is_dir() => {
            let r = weightlab::repo::compress_dir_slice(input, o, opts, &wopts, shard)?;
            (r.bytes, r.stored_bytes, o.display().to_string())
        }
        Target::Path(o) if input.as_os_str() == "-" => {
            let map = weightlab::io::Mapped::stdin()?;
            let index = container::compress_to_file(map.bytes(), "", o, opts, &wopts)?;
            (index.source.size, std::fs::metadata(o).map(|m| m.len()).unwrap_or(0), o.display().to_string())
        }
        Target::Path(o) => {
            let index = container::compress_file_opts(input, o, opts, &wopts)?;
            if out.rm {
                container::verify_file(o, Some(input), opts.threads, false)
                    .with_context(|| format!("checking {} before removing {}", o.display(), input.display()))?;
                remove_input(input)?;
            }
            (index.source.size, std::fs::metadata(o).map(|m| m.len()).unwrap_or(0), o.display().to_string())
        }
        Target::Stdout => {
            let map = map_for_stdout(input)?;
            let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let mut w = Counter { inner: std::io::BufWriter::with_capacity(1 << 20, std::io::stdout()), n: 0 };
            weightlab::progress::with_threads(opts.threads, || container::compress(map.bytes(), &name, &mut w, opts))??;
            std::io::Write::flush(&mut w).map_err(|e| weightlab::Error::io("writing to stdout", e))?;
            (map.bytes().len() as u64, w.n, "stdout".to_string())
        }
    };
    if !quiet {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "{} -> {shown}: {} -> {} ({:.2} % of the original, {:.3}x) in {secs:.2} s, {:.0} MB/s{}",
            input.display(),
            mb(size),
            mb(written),
            100.0 * written as f64 / size.max(1) as f64,
            size as f64 / written.max(1) as f64,
            size as f64 / 1e6 / secs.max(1e-9),
            if out.rm && !input.exists() { "; input removed" } else { "" }
        );
    }
    Ok(())
}

fn decompress_one(
    input: &Path,
    target: &Target,
    threads: usize,
    progress: bool,
    out: &OutputArgs,
    quiet: bool,
) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let wopts = write_opts(out);
    let dopts = container::DecompressOptions { threads, progress, check_file_hash: out.rm };
    let (bytes, shown) = match target {
        Target::Path(o) if input.is_dir() => {
            let r = weightlab::repo::decompress_dir(input, o, &dopts, &wopts)?;
            (r.bytes, o.display().to_string())
        }
        Target::Path(o) if input.as_os_str() == "-" => {
            let map = weightlab::io::Mapped::stdin()?;
            let a = Archive::open(map.bytes()).context("standard input")?;
            (a.decompress_to_file(o, &dopts, &wopts)?.bytes, o.display().to_string())
        }
        Target::Path(o) => {
            let r = container::decompress_file_opts(input, o, &dopts, &wopts)?;
            if out.rm {
                remove_input(input)?;
            }
            (r.bytes, o.display().to_string())
        }
        Target::Stdout => {
            let map = map_for_stdout(input)?;
            let a = Archive::open(map.bytes()).with_context(|| input.display().to_string())?;
            let opts = container::DecodeOptions {
                check_tensor_hashes: false,
                check_file_hash: false,
                check_stored: false,
                progress,
            };
            let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
            let r = weightlab::progress::with_threads(threads, || a.stream(&mut w, &opts))??;
            std::io::Write::flush(&mut w).map_err(|e| weightlab::Error::io("writing to stdout", e))?;
            (r.bytes, "stdout".to_string())
        }
    };
    if !quiet {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "{} -> {shown}: {} in {secs:.2} s, {:.0} MB/s, every chunk checked (xxh3){}",
            input.display(),
            mb(bytes),
            bytes as f64 / 1e6 / secs.max(1e-9),
            if out.rm { ", the file's sha256 too; input removed" } else { "; `verify` recomputes the sha256s" }
        );
    }
    Ok(())
}

/// Counts what passes through to stdout.
struct Counter<W: std::io::Write> {
    inner: W,
    n: u64,
}

impl<W: std::io::Write> std::io::Write for Counter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn print_dir_info(dir: &Path, json: bool) -> anyhow::Result<()> {
    let m = weightlab::repo::RepoManifest::load(dir)?;
    let stored = |f: &weightlab::repo::RepoFile| std::fs::metadata(dir.join(&f.stored_path)).map(|x| x.len()).ok();
    if json {
        let files: Vec<_> = m
            .files
            .iter()
            .map(|f| serde_json::json!({"path": f.path, "size": f.size, "sha256": f.sha256, "stored": f.stored, "stored_path": f.stored_path, "stored_size": stored(f)}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"format": m.format, "version": m.version, "writer": m.writer, "files": files})
            )?
        );
        return Ok(());
    }
    outln!("weightlab repository ({}), {} files", m.writer, m.files.len());
    let mut total_stored = 0u64;
    for f in &m.files {
        let s = stored(f).unwrap_or(0);
        total_stored += s;
        outln!(
            "{:<56} {:>14} {:>14} {:>7.2}%  {}",
            f.path,
            f.size,
            s,
            100.0 * s as f64 / f.size.max(1) as f64,
            match f.stored {
                weightlab::repo::Stored::Archive => "archive",
                weightlab::repo::Stored::Copy => "copy",
            }
        );
    }
    let total = m.total_size();
    outln!(
        "total: {} -> {} bytes ({:.2} % of the original)",
        total,
        total_stored,
        100.0 * total_stored as f64 / total.max(1) as f64
    );
    Ok(())
}

fn print_info(a: &Archive, archive_len: u64, json: bool) -> anyhow::Result<()> {
    let idx = &a.index;
    let ratio = |enc: u64, orig: u64| if orig == 0 { 0.0 } else { enc as f64 / orig as f64 };
    if json {
        let tensors: Vec<_> = idx
            .tensors
            .iter()
            .map(|t| {
                serde_json::json!({
                    "name": t.name, "dtype": t.dtype, "shape": t.shape, "codec": t.codec,
                    "lossless": t.lossless, "bound": t.bound, "size": t.size,
                    "encoded": t.encoded_len(), "ratio": ratio(t.encoded_len(), t.size),
                    "chunks": t.chunks.len(), "same_as": t.same_as.map(|j| idx.tensors[j].name.clone()),
                    "sha256": t.has_sha256().then_some(&t.sha256),
                })
            })
            .collect();
        let v = serde_json::json!({
            "format_version": idx.format_version, "writer": idx.writer, "source": idx.source,
            "archive_size": archive_len, "ratio": ratio(archive_len, idx.source.size),
            "lossless": idx.is_lossless(), "chunk_size": idx.chunk_size, "tensors": tensors,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!(
        "weightlab archive, format v{} ({}), from {} ({} bytes, sha256 {})",
        idx.format_version,
        idx.writer,
        idx.source.file_name,
        idx.source.size,
        idx.source.sha256
    );
    outln!("{:<48} {:<8} {:<18} {:>12} {:>12} {:>8}  codec", "tensor", "dtype", "shape", "size", "encoded", "ratio");
    for t in &idx.tensors {
        let codec = match t.same_as {
            Some(j) => format!("= {}", idx.tensors[j].name),
            None => t.codec.clone(),
        };
        outln!(
            "{:<48} {:<8} {:<18} {:>12} {:>12} {:>7.2}%  {codec}",
            t.name,
            t.dtype,
            format!("{:?}", t.shape),
            t.size,
            t.encoded_len(),
            100.0 * ratio(t.encoded_len(), t.size)
        );
    }
    outln!(
        "total: {} tensors, {} -> {} bytes ({:.2} % of the original, {:.3}x), {}",
        idx.tensors.len(),
        idx.source.size,
        archive_len,
        100.0 * ratio(archive_len, idx.source.size),
        idx.source.size as f64 / archive_len.max(1) as f64,
        if idx.is_lossless() { "lossless" } else { "lossy" }
    );
    Ok(())
}
