//! Peers: other compressors run as subprocesses and measured the same way as
//! our codecs (a verifying warm-up, then timed repetitions of compress and
//! decompress, MB/s of original bytes), so that every "faster than X" comes
//! from one run on one machine.
//!
//! Two kinds:
//! - command-line tools (`zstd-cli`, `xz-cli`, `gzip-cli`, `lz4-cli`): the
//!   file is compressed to a temporary file and decompressed again; the time
//!   is the process's wall time (start-up included, input in the page cache);
//! - Python packages (`zipnn`, `bigsmall`, `lmzip`, `sz3`): a committed script
//!   `scripts/peers/NAME.py` runs in the `.venv-peers` environment that
//!   `just peers` creates; it times the library calls itself and prints one
//!   JSON object.
//!
//! Peak memory is the subprocess's maximum resident set (`wait4` rusage).
//! A peer that is not installed yields `available = false` with a note; no
//! number is ever made up for it.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// A peer as written in an experiment: `NAME` or `NAME:ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub name: String,
    /// Arguments for the tool (CLI flags, or `key=value` for Python peers).
    pub args: String,
}

/// A command-line peer.
struct CliTool {
    name: &'static str,
    program: &'static str,
    default_args: &'static str,
    /// Flag for worker threads (`-T`), when the tool has one.
    threads_flag: Option<&'static str>,
}

const CLI_TOOLS: &[CliTool] = &[
    CliTool { name: "zstd-cli", program: "zstd", default_args: "-3", threads_flag: Some("-T") },
    CliTool { name: "xz-cli", program: "xz", default_args: "-6", threads_flag: Some("-T") },
    CliTool { name: "gzip-cli", program: "gzip", default_args: "-6", threads_flag: None },
    CliTool { name: "lz4-cli", program: "lz4", default_args: "-1", threads_flag: None },
];

/// Python peers: name and what they are.
pub const PYTHON_PEERS: &[(&str, &str)] = &[
    ("zipnn", "ZipNN (IBM): byte grouping + Huffman/zstd for model weights (pip zipnn)"),
    ("bigsmall", "BigSmall: entropy coding of BF16 fields (pip bigsmall)"),
    ("lmzip", "lmz: field-split rANS for model weights (pip lmzip)"),
    ("sz3", "SZ3 error-bounded lossy compressor through pysz (pip pysz)"),
];

impl PeerSpec {
    pub fn parse(s: &str) -> Result<PeerSpec> {
        let s = s.trim();
        let (name, args) = match s.split_once(':') {
            Some((n, a)) => (n.trim(), a.trim()),
            None => (s, ""),
        };
        if !CLI_TOOLS.iter().any(|t| t.name == name) && !PYTHON_PEERS.iter().any(|p| p.0 == name) {
            let known: Vec<&str> = CLI_TOOLS.iter().map(|t| t.name).chain(PYTHON_PEERS.iter().map(|p| p.0)).collect();
            return Err(Error::invalid(format!("unknown peer '{name}' (known: {})", known.join(", "))));
        }
        if args.chars().any(|c| matches!(c, ';' | '|' | '&' | '$' | '`' | '>' | '<' | '\n')) {
            return Err(Error::invalid(format!("peer arguments '{args}' contain shell characters")));
        }
        let args = if args.is_empty() {
            CLI_TOOLS.iter().find(|t| t.name == name).map(|t| t.default_args.to_string()).unwrap_or_default()
        } else {
            args.to_string()
        };
        Ok(PeerSpec { name: name.to_string(), args })
    }

    /// The `codec` column: `peer:zstd-cli -19`.
    pub fn label(&self) -> String {
        if self.args.is_empty() { format!("peer:{}", self.name) } else { format!("peer:{} {}", self.name, self.args) }
    }

    pub fn is_cli(&self) -> bool {
        CLI_TOOLS.iter().any(|t| t.name == self.name)
    }
}

/// What measuring a peer on one file gave.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerOutcome {
    pub available: bool,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub compressed_bytes: Option<u64>,
    #[serde(default)]
    pub compress_secs: Vec<f64>,
    #[serde(default)]
    pub decompress_secs: Vec<f64>,
    #[serde(default)]
    pub peak_mem_bytes: Option<u64>,
    #[serde(default)]
    pub verified: bool,
    #[serde(default = "yes")]
    pub lossless: bool,
    #[serde(default)]
    pub bound: String,
    #[serde(default)]
    pub max_abs_err: Option<f64>,
    #[serde(default)]
    pub max_rel_err: Option<f64>,
    #[serde(default)]
    pub rmse: Option<f64>,
    #[serde(default)]
    pub psnr: Option<f64>,
    #[serde(default)]
    pub rmse_rel_std: Option<f64>,
    #[serde(default)]
    pub max_abs_rel_absmax: Option<f64>,
    #[serde(default)]
    pub bound_held: Option<bool>,
    /// A lossy Python peer asked for its decoded model (`PeerRun::decoded_out`)
    /// wrote it here, as safetensors of the original's layout.
    #[serde(default)]
    pub decoded_path: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl PeerOutcome {
    fn unavailable(note: impl Into<String>) -> PeerOutcome {
        PeerOutcome { available: false, note: note.into(), lossless: true, ..Default::default() }
    }
}

/// How a measurement is run.
#[derive(Debug, Clone)]
pub struct PeerRun<'a> {
    pub input: &'a Path,
    pub reps: u32,
    pub warmup: bool,
    pub threads: u32,
    /// A scratch directory for compressed and decompressed files.
    pub work_dir: &'a Path,
    /// Lossy Python peers: write the decoded model there (the runner's
    /// `[fidelity]` runs the model on it); the outcome's `decoded_path` says
    /// whether the peer did.
    pub decoded_out: Option<&'a Path>,
}

/// Find a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// The Python of the peers' environment: `$WEIGHTLAB_PEERS_PYTHON`, else
/// `.venv-peers/bin/python` in the current directory or the source tree.
pub fn peers_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEIGHTLAB_PEERS_PYTHON") {
        return Some(PathBuf::from(p));
    }
    [PathBuf::from(".venv-peers/bin/python"), Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-peers/bin/python")]
        .into_iter()
        .find(|p| p.exists())
}

/// `scripts/peers/NAME.py` in the current directory or the source tree.
pub fn peer_script(name: &str) -> Option<PathBuf> {
    let rel = Path::new("scripts/peers").join(format!("{name}.py"));
    [rel.clone(), Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel)].into_iter().find(|p| p.is_file())
}

/// Run a command to completion with stdout redirected to a file, returning
/// (wall seconds, peak RSS bytes, stderr text, success).
///
/// The peak RSS comes from `/usr/bin/time -f %M` when it is installed: a
/// child that we spawn directly inherits our own high-water mark at `exec`
/// (Linux carries the old mm's peak into `ru_maxrss`), while `time` forks
/// from a small process of its own. Without `time`, `wait4` gives an upper
/// bound, reported only when it is below our own peak (i.e. meaningful).
fn run_measured(cmd: Command, stdout: Option<&Path>, rss_file: &Path) -> Result<(f64, Option<u64>, String, bool)> {
    let time = Path::new("/usr/bin/time");
    let mut cmd = if time.is_file() {
        let mut c = Command::new(time);
        c.arg("-f").arg("%M").arg("-o").arg(rss_file).arg(cmd.get_program()).args(cmd.get_args());
        c
    } else {
        cmd
    };
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    match stdout {
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))?;
            cmd.stdout(Stdio::from(f));
        }
        None => {
            cmd.stdout(Stdio::null());
        }
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().map_err(|e| Error::io(format!("starting {:?}", cmd.get_program()), e))?;
    let mut err_text = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err_text);
    }
    let (ok, rss) = wait_rusage(&mut child)?;
    let secs = t0.elapsed().as_secs_f64();
    let rss = if time.is_file() {
        let kb = std::fs::read_to_string(rss_file)
            .ok()
            .and_then(|t| t.lines().rev().find_map(|l| l.trim().parse::<u64>().ok()));
        let _ = std::fs::remove_file(rss_file);
        kb.map(|k| k * 1024)
    } else {
        rss.filter(|&r| r < own_peak_rss().unwrap_or(0))
    };
    Ok((secs, rss, err_text, ok))
}

/// This process's peak RSS (VmHWM) in bytes.
fn own_peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(l.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// Wait for a child and read its peak RSS from `wait4`.
fn wait_rusage(child: &mut std::process::Child) -> Result<(bool, Option<u64>)> {
    #[cfg(unix)]
    {
        let pid = child.id() as libc::pid_t;
        let mut status: libc::c_int = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `pid` is our own child that nobody else waits for;
            // `status` and `ru` are valid for writes.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            if r == pid {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::io("waiting for a peer process", e));
            }
        }
        let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
        // ru_maxrss is in KiB on Linux
        let rss = (ru.ru_maxrss > 0).then(|| ru.ru_maxrss as u64 * 1024);
        Ok((ok, rss))
    }
    #[cfg(not(unix))]
    {
        let st = child.wait().map_err(|e| Error::io("waiting for a peer process", e))?;
        Ok((st.success(), None))
    }
}

fn files_equal(a: &Path, b: &Path) -> Result<bool> {
    let ma = crate::io::Mapped::open(a)?;
    let mb = crate::io::Mapped::open(b)?;
    Ok(ma.bytes() == mb.bytes())
}

fn tool_version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let s = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&s)
                .lines()
                .next()
                .unwrap_or("")
                .trim_matches(|c: char| c == '*' || c.is_whitespace())
                .to_string()
        })
        .unwrap_or_default()
}

/// Measure a peer on one file.
pub fn measure(spec: &PeerSpec, run: &PeerRun) -> PeerOutcome {
    let r = if spec.is_cli() { measure_cli(spec, run) } else { measure_python(spec, run) };
    r.unwrap_or_else(|e| PeerOutcome {
        available: true,
        note: format!("failed: {}", e.message()),
        lossless: true,
        ..Default::default()
    })
}

/// The version string of a peer, or why it is unavailable.
pub fn describe(spec: &PeerSpec) -> std::result::Result<String, String> {
    if let Some(tool) = CLI_TOOLS.iter().find(|t| t.name == spec.name) {
        return which(tool.program)
            .map(|p| tool_version(&p))
            .ok_or_else(|| format!("{} not found on PATH", tool.program));
    }
    match (peers_python(), peer_script(&spec.name)) {
        (None, _) => Err("no .venv-peers (run `just peers`)".into()),
        (_, None) => Err(format!("scripts/peers/{}.py not found", spec.name)),
        (Some(_), Some(_)) => Ok(String::new()),
    }
}

fn measure_cli(spec: &PeerSpec, run: &PeerRun) -> Result<PeerOutcome> {
    let tool = CLI_TOOLS.iter().find(|t| t.name == spec.name).expect("checked by parse");
    let Some(program) = which(tool.program) else {
        return Ok(PeerOutcome::unavailable(format!("{} not found on PATH", tool.program)));
    };
    let version = tool_version(&program);
    let mut args: Vec<String> = spec.args.split_whitespace().map(str::to_string).collect();
    if let Some(flag) = tool.threads_flag
        && run.threads > 1
        && !args.iter().any(|a| a.starts_with(flag))
    {
        args.push(format!("{flag}{}", run.threads));
    }
    let packed = run.work_dir.join(format!("{}.packed", tool.name));
    let rss_file = run.work_dir.join(format!("{}.rss", tool.name));
    let unpacked = run.work_dir.join(format!("{}.unpacked", tool.name));
    let compress = || {
        let mut c = Command::new(&program);
        c.args(&args).arg("-c").arg(run.input);
        run_measured(c, Some(&packed), &rss_file)
    };
    let decompress = || {
        let mut c = Command::new(&program);
        c.arg("-d").arg("-c").arg(&packed);
        run_measured(c, Some(&unpacked), &rss_file)
    };
    let mut out = PeerOutcome { available: true, version, lossless: true, ..Default::default() };
    let mut peak = 0u64;
    let mut round = |timed: bool, out: &mut PeerOutcome| -> Result<bool> {
        let (ct, crss, cerr, cok) = compress()?;
        if !cok {
            return Err(Error::invalid(format!("{} {} failed: {}", tool.program, args.join(" "), cerr.trim())));
        }
        let (dt, drss, derr, dok) = decompress()?;
        if !dok {
            return Err(Error::invalid(format!("{} -d failed: {}", tool.program, derr.trim())));
        }
        peak = peak.max(crss.unwrap_or(0)).max(drss.unwrap_or(0));
        if timed {
            out.compress_secs.push(ct);
            out.decompress_secs.push(dt);
        }
        Ok(true)
    };
    let verify = |out: &mut PeerOutcome| -> Result<()> {
        out.compressed_bytes =
            Some(std::fs::metadata(&packed).map_err(|e| Error::io("reading the packed size", e))?.len());
        out.verified = files_equal(run.input, &unpacked)?;
        Ok(())
    };
    if run.warmup {
        round(false, &mut out)?;
        verify(&mut out)?;
    }
    for _ in 0..run.reps {
        round(true, &mut out)?;
    }
    if !run.warmup {
        verify(&mut out)?;
    }
    out.peak_mem_bytes = (peak > 0).then_some(peak);
    out.note = "wall time of the CLI process (start-up included, input in the page cache)".into();
    let _ = std::fs::remove_file(&packed);
    let _ = std::fs::remove_file(&unpacked);
    Ok(out)
}

fn measure_python(spec: &PeerSpec, run: &PeerRun) -> Result<PeerOutcome> {
    let Some(python) = peers_python() else {
        return Ok(PeerOutcome::unavailable("not installed: no .venv-peers (run `just peers`)"));
    };
    let Some(script) = peer_script(&spec.name) else {
        return Ok(PeerOutcome::unavailable(format!("scripts/peers/{}.py not found", spec.name)));
    };
    let json_out = run.work_dir.join(format!("{}.json", spec.name));
    let mut c = Command::new(&python);
    c.arg(&script)
        .arg("--input")
        .arg(run.input)
        .arg("--work")
        .arg(run.work_dir)
        .arg("--reps")
        .arg(run.reps.to_string())
        .arg("--threads")
        .arg(run.threads.to_string())
        .arg("--args")
        .arg(&spec.args);
    if !run.warmup {
        c.arg("--no-warmup");
    }
    if let Some(p) = run.decoded_out {
        c.arg("--decoded-out").arg(p);
    }
    let (_, rss, err, ok) = run_measured(c, Some(&json_out), &run.work_dir.join(format!("{}.rss", spec.name)))?;
    let text = std::fs::read_to_string(&json_out).unwrap_or_default();
    let _ = std::fs::remove_file(&json_out);
    let last = text.lines().rev().find(|l| l.trim_start().starts_with('{'));
    let mut out: PeerOutcome = match last.map(serde_json::from_str::<PeerOutcome>) {
        Some(Ok(o)) => o,
        Some(Err(e)) => return Err(Error::invalid(format!("{} printed bad JSON: {e}", script.display()))),
        None => {
            let tail: String = err.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
            return Err(Error::invalid(format!("{} printed no result (exit ok: {ok}): {tail}", script.display())));
        }
    };
    if out.available {
        // the process's peak RSS (interpreter, library and data included),
        // measured from outside; the script's own number is only a fallback
        out.peak_mem_bytes = rss.or(out.peak_mem_bytes);
    } else {
        out.compressed_bytes = None;
        out.compress_secs.clear();
        out.decompress_secs.clear();
        out.verified = false;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let p = PeerSpec::parse("zstd-cli:-19 -T2").unwrap();
        assert_eq!((p.name.as_str(), p.args.as_str()), ("zstd-cli", "-19 -T2"));
        assert_eq!(p.label(), "peer:zstd-cli -19 -T2");
        assert_eq!(PeerSpec::parse("gzip-cli").unwrap().args, "-6");
        assert_eq!(PeerSpec::parse("zipnn").unwrap().label(), "peer:zipnn");
        assert!(PeerSpec::parse("nope").is_err());
        assert!(PeerSpec::parse("zstd-cli:-3; rm -rf /").is_err());
    }
}
