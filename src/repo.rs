//! Model repositories: a directory in, a directory of the same shape out.
//!
//! `compress_dir` walks a Hugging Face model directory (shards,
//! `model.safetensors.index.json`, config, tokenizer, subfolders such as
//! `1_Pooling/`), compresses every `*.safetensors` file into `NAME.wlab`
//! beside where it was, copies every other file as it is, and writes
//! [`MANIFEST_NAME`] last: every original file's path, size and sha256 and
//! what stands for it in the output. `decompress_dir` gives the directory
//! back byte for byte; `verify_dir` checks every archive and every copy
//! against the manifest.
//!
//! The manifest is untrusted when read: its paths must be relative, plain
//! names only (no `..`, no root, no prefix), so a crafted one cannot write
//! outside the output directory.

use crate::container::{self, CompressOptions, DecompressOptions};
use crate::error::{Error, Result, ResultExt};
use crate::io::WriteOptions;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// The manifest's file name, at the top of a compressed directory.
pub const MANIFEST_NAME: &str = "weightlab-manifest.json";
/// The suffix a compressed file gets.
pub const SUFFIX: &str = ".wlab";
const MANIFEST_FORMAT: &str = "weightlab-repository";
const MANIFEST_VERSION: u32 = 1;

/// How an original file is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stored {
    /// A weightlab archive of the safetensors file.
    Archive,
    /// The file itself, copied.
    Copy,
}

/// One original file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoFile {
    /// Path relative to the repository, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub stored: Stored,
    /// Path of what stands for it, relative to the compressed directory.
    pub stored_path: String,
}

/// The manifest of a compressed directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoManifest {
    pub format: String,
    pub version: u32,
    pub writer: String,
    pub files: Vec<RepoFile>,
    /// Set in the partial manifest of one slice (`--shard I/N`); absent in
    /// a whole one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<Slice>,
}

/// What a slice's partial manifest says of its place in the whole job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slice {
    /// 1-based, as `--shard I/N` says it.
    pub index: usize,
    pub count: usize,
    /// sha256 of the whole listing (every path and size, in order): slices
    /// of different inputs cannot be joined.
    pub listing_sha256: String,
    /// How many files the whole listing has.
    pub listing_len: usize,
    /// Each of `files`' position in the whole listing.
    pub positions: Vec<usize>,
}

/// The file name of slice `i` of `n`'s partial manifest.
pub fn slice_manifest_name(i: usize, n: usize) -> String {
    format!("weightlab-manifest.{i}-of-{n}.json")
}

/// The files of slice `i` (1-based) of `n`: deterministic from the listing
/// alone, balanced by size (largest first, each to the slice with the
/// fewest bytes so far, ties to the lowest slice).
pub fn slice_of(sizes: &[u64], i: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut load = vec![0u64; n];
    let mut mine = Vec::new();
    for k in order {
        let s = (0..n).min_by_key(|&j| (load[j], j)).expect("n >= 1");
        load[s] += sizes[k];
        if s + 1 == i {
            mine.push(k);
        }
    }
    mine.sort_unstable();
    mine
}

impl RepoManifest {
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).fold(0u64, u64::saturating_add)
    }

    /// Read and check a compressed directory's manifest.
    pub fn load(dir: &Path) -> Result<RepoManifest> {
        let p = dir.join(MANIFEST_NAME);
        let bytes = std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
        let m: RepoManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::corrupt(format!("{}: does not parse: {e}", p.display())))?;
        if m.format != MANIFEST_FORMAT {
            return Err(Error::corrupt(format!("{}: not a weightlab repository manifest", p.display())));
        }
        if m.version > MANIFEST_VERSION {
            return Err(Error::unsupported(format!(
                "{}: repository manifest version {} is newer than this weightlab reads ({MANIFEST_VERSION})",
                p.display(),
                m.version
            )));
        }
        if m.slice.is_some() {
            return Err(Error::invalid(format!(
                "{}: a slice's partial manifest; join the slices first (weightlab join-slices)",
                p.display()
            )));
        }
        m.check_paths(&p)?;
        Ok(m)
    }

    fn check_paths(&self, p: &Path) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            safe_relative(&f.path).and_then(|_| safe_relative(&f.stored_path)).context(p.display())?;
            if !seen.insert(f.path.as_str()) {
                return Err(Error::corrupt(format!("{}: '{}' is listed twice", p.display(), f.path)));
            }
        }
        Ok(())
    }
}

/// `rel` as a path under a directory, or an error when it could leave it:
/// only plain names, no `..`, root or drive.
fn safe_relative(rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::corrupt(format!("manifest path '{rel}' is not a plain relative path")));
    }
    Ok(p.to_path_buf())
}

/// Is `dir` a compressed repository (it has a manifest)?
pub fn is_compressed_dir(dir: &Path) -> bool {
    dir.join(MANIFEST_NAME).is_file()
}

/// Every regular file under `root`, relative, sorted (symlinks to files
/// are followed, as a Hugging Face cache's snapshot links are; symlinks to
/// directories are not walked, so a loop cannot hang the walk).
pub fn list_files(root: &Path) -> Result<Vec<PathBuf>> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let dir = root.join(rel);
        let rd = std::fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let mut entries: Vec<_> =
            rd.collect::<std::io::Result<_>>().map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = rel.join(e.file_name());
            let link = e.file_type().map_err(|err| Error::io(format!("reading {}", e.path().display()), err))?;
            let meta =
                std::fs::metadata(e.path()).map_err(|err| Error::io(format!("reading {}", e.path().display()), err))?;
            if meta.is_file() {
                out.push(rel);
            } else if meta.is_dir() && !link.is_symlink() {
                walk(root, &rel, out)?;
            } else if !meta.is_dir() {
                return Err(Error::invalid(format!("{} is neither a file nor a directory", e.path().display())));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out)?;
    Ok(out)
}

fn slash(rel: &Path) -> String {
    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
}

/// Refuse an output directory that is the input or inside it (the walk
/// would meet its own output).
fn check_dirs(input: &Path, output: &Path) -> Result<()> {
    let i = std::fs::canonicalize(input).map_err(|e| Error::io(format!("opening {}", input.display()), e))?;
    let o = crate::io::resolve_for_write(output);
    if o.starts_with(&i) {
        return Err(Error::invalid(format!(
            "output {} is {} the input directory {}",
            output.display(),
            if o == i { "the same as" } else { "inside" },
            input.display()
        )));
    }
    Ok(())
}

/// What a directory job did.
#[derive(Debug, Clone, Default)]
pub struct RepoReport {
    pub files: usize,
    pub archives: usize,
    /// Bytes of the original files.
    pub bytes: u64,
    /// Bytes of what was written (archives and copies), without the manifest.
    pub stored_bytes: u64,
}

/// Copy `from` to `to` atomically, hashing what was read; the sha256 and size.
fn copy_hashed(from: &Path, to: &Path, wopts: &WriteOptions) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(from).map_err(|e| Error::io(format!("opening {}", from.display()), e))?;
    let meta = f.metadata().map_err(|e| Error::io(format!("reading {}", from.display()), e))?;
    let _held = crate::io::note_input(from, &meta);
    let mut out = None;
    crate::io::write_atomic_opts(to, wopts, |w| {
        let mut h = crate::io::HashingWriter::new(w);
        std::io::copy(&mut f, &mut h)
            .map_err(|e| Error::io(format!("copying {} to {}", from.display(), to.display()), e))?;
        let (_, sha, n) = h.finish_hex();
        out = Some((sha, n));
        Ok(())
    })?;
    Ok(out.expect("set on success"))
}

/// Compress a model directory into `output` (a directory of the same shape).
pub fn compress_dir(input: &Path, output: &Path, opts: &CompressOptions, wopts: &WriteOptions) -> Result<RepoReport> {
    compress_dir_slice(input, output, opts, wopts, None)
}

/// The most slices a repository is cut into (`--shard I/N`).
pub const MAX_SLICES: usize = 65536;

/// A slice `(i, n)` as `--shard I/N` takes it: I from 1 to N, N from 1 to
/// [`MAX_SLICES`]. The CLI, the Python package and [`compress_dir_slice`]
/// all check it here.
pub fn check_slice(i: usize, n: usize) -> Result<()> {
    if n == 0 || i == 0 || i > n || n > MAX_SLICES {
        return Err(Error::invalid(format!("{i}/{n}: I must be 1 to N, N 1 to {MAX_SLICES}")));
    }
    Ok(())
}

/// [`compress_dir`] of one slice `(i, n)` of the files (`--shard I/N`):
/// slices run as separate processes or machines into one output directory,
/// each writing its partial manifest; [`join_slices`] makes the whole one.
pub fn compress_dir_slice(
    input: &Path,
    output: &Path,
    opts: &CompressOptions,
    wopts: &WriteOptions,
    slice: Option<(usize, usize)>,
) -> Result<RepoReport> {
    check_dirs(input, output)?;
    if let Some((i, n)) = slice {
        check_slice(i, n)?;
    }
    let manifest_name = slice.map_or_else(|| MANIFEST_NAME.to_string(), |(i, n)| slice_manifest_name(i, n));
    if !wopts.overwrite && std::fs::symlink_metadata(output.join(&manifest_name)).is_ok() {
        return Err(crate::io::exists_error(&output.join(manifest_name)));
    }
    let files = list_files(input)?;
    let sizes: Vec<u64> = files
        .iter()
        .map(|rel| std::fs::metadata(input.join(rel)).map(|m| m.len()))
        .collect::<std::io::Result<_>>()
        .map_err(|e| Error::io(format!("reading {}", input.display()), e))?;
    let mine: Vec<usize> = match slice {
        Some((i, n)) => slice_of(&sizes, i, n),
        None => (0..files.len()).collect(),
    };
    let mut report = RepoReport::default();
    let mut entries = Vec::with_capacity(mine.len());
    let total: u64 = mine.iter().map(|&k| sizes[k]).sum();
    crate::progress::job(total, "compress", opts.progress, || -> Result<()> {
        for &k in &mine {
            let rel = &files[k];
            let src = input.join(rel);
            let name = slash(rel);
            let is_st = rel.extension().is_some_and(|e| e == "safetensors");
            let entry = if is_st {
                let stored_rel = format!("{name}{SUFFIX}");
                let dst = output.join(&stored_rel);
                let index = container::compress_file_opts(&src, &dst, opts, wopts)?;
                report.archives += 1;
                report.stored_bytes += std::fs::metadata(&dst).map(|m| m.len()).unwrap_or(0);
                RepoFile {
                    path: name,
                    size: index.source.size,
                    sha256: index.source.sha256,
                    stored: Stored::Archive,
                    stored_path: stored_rel,
                }
            } else {
                let dst = output.join(rel);
                let (sha256, size) = copy_hashed(&src, &dst, wopts)?;
                crate::progress::job_inc(size);
                report.stored_bytes += size;
                RepoFile { path: name.clone(), size, sha256, stored: Stored::Copy, stored_path: name }
            };
            report.files += 1;
            report.bytes += entry.size;
            entries.push(entry);
        }
        Ok(())
    })?;
    let slice = slice.map(|(index, count)| {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for (rel, size) in files.iter().zip(&sizes) {
            h.update(format!("{}\t{size}\n", slash(rel)).as_bytes());
        }
        Slice { index, count, listing_sha256: crate::io::hex(&h.finalize()), listing_len: files.len(), positions: mine }
    });
    write_manifest(output, &manifest_name, entries, slice, wopts)?;
    Ok(report)
}

fn write_manifest(
    dir: &Path,
    name: &str,
    files: Vec<RepoFile>,
    slice: Option<Slice>,
    wopts: &WriteOptions,
) -> Result<()> {
    let m = RepoManifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        writer: format!("weightlab {}", env!("CARGO_PKG_VERSION")),
        files,
        slice,
    };
    let json = serde_json::to_vec_pretty(&m).map_err(|e| Error::invalid(format!("serializing the manifest: {e}")))?;
    crate::io::write_atomic_opts(&dir.join(name), wopts, |w| {
        std::io::Write::write_all(w, &json).map_err(|e| Error::io("writing the manifest", e))
    })
}

/// Join the partial manifests of slices 1..=N in `dir` into its whole
/// manifest (the one a single process writes), and remove them. Every
/// slice must be there, of the same listing, and together cover it once.
pub fn join_slices(dir: &Path, wopts: &WriteOptions) -> Result<RepoManifest> {
    let mut parts: Vec<(PathBuf, RepoManifest)> = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for e in rd {
        let e = e.map_err(|err| Error::io(format!("listing {}", dir.display()), err))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("weightlab-manifest.") && name.contains("-of-") && name.ends_with(".json")) {
            continue;
        }
        let bytes = std::fs::read(e.path()).map_err(|err| Error::io(format!("reading {}", e.path().display()), err))?;
        let m: RepoManifest = serde_json::from_slice(&bytes)
            .map_err(|err| Error::corrupt(format!("{}: does not parse: {err}", e.path().display())))?;
        m.check_paths(&e.path())?;
        parts.push((e.path(), m));
    }
    let Some(first) = parts.first().and_then(|(_, m)| m.slice.clone()) else {
        return Err(Error::invalid(format!(
            "{}: no slice manifests (weightlab-manifest.I-of-N.json) to join",
            dir.display()
        )));
    };
    let mut by_index: Vec<Option<&RepoManifest>> = vec![None; first.count];
    for (p, m) in &parts {
        let s = m.slice.as_ref().ok_or_else(|| Error::corrupt(format!("{}: not a slice manifest", p.display())))?;
        if s.count != first.count || s.listing_sha256 != first.listing_sha256 || s.listing_len != first.listing_len {
            return Err(Error::invalid(format!(
                "{}: slice {}/{} of another job (a different input or slice count) than slice {}/{}",
                p.display(),
                s.index,
                s.count,
                first.index,
                first.count
            )));
        }
        if s.positions.len() != m.files.len() || s.index == 0 || s.index > s.count {
            return Err(Error::corrupt(format!("{}: its slice record does not match its files", p.display())));
        }
        by_index[s.index - 1] = Some(m);
    }
    if let Some(missing) = by_index.iter().position(Option::is_none) {
        return Err(Error::invalid(format!(
            "{}: slice {}/{} has not finished (its manifest is missing)",
            dir.display(),
            missing + 1,
            first.count
        )));
    }
    let mut at: Vec<Option<RepoFile>> = vec![None; first.listing_len];
    for m in by_index.into_iter().flatten() {
        let s = m.slice.as_ref().expect("checked");
        for (&k, f) in s.positions.iter().zip(&m.files) {
            let slot = at
                .get_mut(k)
                .ok_or_else(|| Error::corrupt(format!("slice {}: position {k} past the listing", s.index)))?;
            if slot.replace(f.clone()).is_some() {
                return Err(Error::corrupt(format!("file #{k} ('{}') is in two slices", f.path)));
            }
        }
    }
    let files: Vec<RepoFile> = at
        .into_iter()
        .enumerate()
        .map(|(k, f)| f.ok_or_else(|| Error::corrupt(format!("file #{k} of the listing is in no slice"))))
        .collect::<Result<_>>()?;
    write_manifest(dir, MANIFEST_NAME, files, None, wopts)?;
    for (p, _) in &parts {
        let _ = std::fs::remove_file(p);
    }
    RepoManifest::load(dir)
}

/// Give a compressed directory back as the original directory.
/// `check_hashes` also recomputes every written file's sha256 (what `--rm`
/// asks before deleting); copies are always compared with the manifest.
pub fn decompress_dir(
    input: &Path,
    output: &Path,
    opts: &DecompressOptions,
    wopts: &WriteOptions,
) -> Result<RepoReport> {
    check_dirs(input, output)?;
    let m = RepoManifest::load(input)?;
    let mut report = RepoReport::default();
    crate::progress::job(m.total_size(), "decompress", opts.progress, || -> Result<()> {
        for f in &m.files {
            let src = input.join(safe_relative(&f.stored_path)?);
            let dst = output.join(safe_relative(&f.path)?);
            match f.stored {
                Stored::Archive => {
                    let r = container::decompress_file_opts(&src, &dst, opts, wopts)?;
                    report.archives += 1;
                    report.stored_bytes += std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
                    if r.bytes != f.size {
                        return Err(Error::corrupt(format!(
                            "{}: decoded to {} bytes where the manifest says {}",
                            f.path, r.bytes, f.size
                        )));
                    }
                }
                Stored::Copy => {
                    let (sha, size) = copy_hashed(&src, &dst, wopts)?;
                    crate::progress::job_inc(size);
                    report.stored_bytes += size;
                    if sha != f.sha256 || size != f.size {
                        let _ = std::fs::remove_file(&dst);
                        return Err(Error::hash_mismatch(format!(
                            "{}: the stored copy has sha256 {sha} ({size} bytes) where the manifest says {} ({} bytes)",
                            f.stored_path, f.sha256, f.size
                        )));
                    }
                }
            }
            report.files += 1;
            report.bytes += f.size;
        }
        Ok(())
    })?;
    Ok(report)
}

/// Check a compressed directory: every archive fully (as `verify`), every
/// copy's sha256, and that each archive was made from the file the manifest
/// names.
pub fn verify_dir(input: &Path, threads: usize, progress: bool) -> Result<RepoReport> {
    let m = RepoManifest::load(input)?;
    let mut report = RepoReport::default();
    for f in &m.files {
        let src = input.join(safe_relative(&f.stored_path)?);
        match f.stored {
            Stored::Archive => {
                let r = container::verify_file(&src, None, threads, progress).with_context(|| f.stored_path.clone())?;
                let map = crate::io::Mapped::open(&src)?;
                let a = container::Archive::open(map.bytes())?;
                if a.index.source.sha256 != f.sha256 || a.index.source.size != f.size {
                    return Err(Error::hash_mismatch(format!(
                        "{}: the archive was made from a file with sha256 {} where the manifest says {}",
                        f.stored_path, a.index.source.sha256, f.sha256
                    )));
                }
                if a.index.is_lossless() && r.sha256 != f.sha256 {
                    return Err(Error::hash_mismatch(format!("{}: decodes to sha256 {}", f.stored_path, r.sha256)));
                }
                report.archives += 1;
            }
            Stored::Copy => {
                let sha = crate::io::sha256_file(&src)?;
                if sha != f.sha256 {
                    return Err(Error::hash_mismatch(format!(
                        "{}: sha256 {sha} where the manifest says {}",
                        f.stored_path, f.sha256
                    )));
                }
            }
        }
        report.stored_bytes += std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
        report.files += 1;
        report.bytes += f.size;
    }
    Ok(report)
}
