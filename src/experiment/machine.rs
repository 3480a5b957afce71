//! `machine.json`: what a run ran on, so numbers can be compared honestly.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    pub os: String,
    pub kernel: String,
    pub rustc: String,
    pub weightlab: String,
    pub profile: &'static str,
    pub git_commit: String,
    pub git_dirty: bool,
    /// Versions of the codec crates from Cargo.lock.
    pub crates: BTreeMap<String, String>,
    /// Peer tools and their versions (or why they are missing).
    pub peers: BTreeMap<String, String>,
    pub started_utc: String,
}

fn cmd_line(program: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(program).args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

fn memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn os() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_string()))
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

/// The crates whose versions decide the numbers.
const CRATES: &[&str] = &[
    "zstd",
    "zstd-sys",
    "zstd-safe",
    "lz4_flex",
    "xz2",
    "lzma-sys",
    "flate2",
    "zlib-rs",
    "blosc2-rs",
    "constriction",
    "half",
    "rayon",
    "polars",
    "plotters",
    "hf-hub",
];

fn crate_versions() -> BTreeMap<String, String> {
    let lock = ["Cargo.lock".into(), Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock")]
        .into_iter()
        .find_map(|p: std::path::PathBuf| std::fs::read_to_string(p).ok());
    let mut out = BTreeMap::new();
    let Some(lock) = lock else { return out };
    let Ok(v) = lock.parse::<toml::Table>() else { return out };
    if let Some(pkgs) = v.get("package").and_then(|p| p.as_array()) {
        for p in pkgs {
            let (Some(n), Some(ver)) =
                (p.get("name").and_then(|x| x.as_str()), p.get("version").and_then(|x| x.as_str()))
            else {
                continue;
            };
            if CRATES.contains(&n) {
                out.insert(n.to_string(), ver.to_string());
            }
        }
    }
    out
}

/// Civil UTC time from the system clock (no time crate needed).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl Machine {
    pub fn detect(peers: &[super::peers::PeerSpec]) -> Machine {
        let git_dirty =
            cmd_line("git", &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        Machine {
            cpu_model: cpu_model(),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_bytes: memory(),
            os: os(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            rustc: cmd_line("rustc", &["-V"]).unwrap_or_else(|| "unknown".into()),
            weightlab: env!("CARGO_PKG_VERSION").to_string(),
            profile: if cfg!(debug_assertions) { "debug" } else { "release" },
            git_commit: cmd_line("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
            git_dirty,
            crates: crate_versions(),
            peers: peers
                .iter()
                .map(|p| {
                    let v = match super::peers::describe(p) {
                        Ok(v) => v,
                        Err(why) => format!("unavailable: {why}"),
                    };
                    (p.name.clone(), v)
                })
                .collect(),
            started_utc: utc_now(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_format() {
        let s = super::utc_now();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.starts_with("20"));
    }
}
