//! File helpers: memory maps, atomic writes (temp name, then rename) that
//! never replace one of the process's inputs.

use crate::error::{Error, Result};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Make the C allocator keep freed memory for reuse instead of handing it
/// back to the kernel. The codecs allocate and free buffers of about a chunk
/// (megabytes) per chunk; glibc serves such sizes with fresh `mmap`s (or
/// trims its heaps after they are freed), so every chunk paid for page
/// faults and zeroed pages again. Measured on a 4 MiB chunk of MiniLM-BF16
/// encoded over and over (one core): `exp` took 6.5 ns per weight with
/// glibc's defaults and 3.8 with these settings. The cost is that freed
/// memory stays resident, which the peak RSS already counts. Call it at the
/// start of a program; it does nothing off glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: plain calls into glibc's allocator configuration; a refused
    // setting (return value 0) leaves the default, which is still correct.
    unsafe {
        // 32 MiB: glibc's largest mmap threshold on 64-bit targets.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// A read-only view of a whole file: a memory map, or an empty slice for an
/// empty file (which cannot be mapped).
pub struct Mapped {
    map: Option<memmap2::Mmap>,
    _input: InputGuard,
}

impl Mapped {
    /// Map `path` for reading, and remember it as an input of this process
    /// ([`note_input`]): no output of the process may then replace it.
    ///
    /// The map's contract: the file must not shrink while it is mapped. If
    /// another process truncates it, the kernel raises SIGBUS on the next
    /// read past the new end; the CLI's handler ([`crate::signals`]) then
    /// removes every temporary output and exits with status 1 and a message,
    /// instead of a crash.
    pub fn open(path: &Path) -> Result<Mapped> {
        let file = open_input(path)?;
        let meta = file.metadata().map_err(|e| Error::io(format!("reading metadata of {}", path.display()), e))?;
        if meta.is_dir() {
            return Err(Error::invalid(format!("{} is a directory, not a file", path.display())));
        }
        if !meta.is_file() {
            return Err(Error::invalid(format!(
                "{} is not a regular file (a pipe or a device cannot be mapped)",
                path.display()
            )));
        }
        let input = note_input(path, &meta);
        if meta.len() == 0 {
            return Ok(Mapped { map: None, _input: input });
        }
        // SAFETY: the map is read-only. A file truncated under it raises
        // SIGBUS, handled as said above.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(format!("mapping {}", path.display()), e))?;
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Sequential);
        Ok(Mapped { map: Some(map), _input: input })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// All of standard input, spooled to an unlinked file in the temporary
    /// directory (`$TMPDIR`) and mapped: an archive's index is at its end
    /// and a safetensors file's tensors are read in any order, so neither
    /// can be coded as it streams by. Memory stays bounded (the spool is
    /// page cache the kernel can write out); disk use is the input's size.
    /// The file has no name from the moment it is made, so nothing is left
    /// behind whatever stops the process.
    pub fn stdin() -> Result<Mapped> {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(".weightlab-stdin.{}.tmp", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating a spool file in {}", dir.display()), e))?;
        let _ = std::fs::remove_file(&path);
        std::io::copy(&mut std::io::stdin().lock(), &mut file).map_err(|e| Error::io("reading standard input", e))?;
        let meta = file.metadata().map_err(|e| Error::io("reading the spool file", e))?;
        let input = note_input(Path::new("-"), &meta);
        if meta.len() == 0 {
            return Ok(Mapped { map: None, _input: input });
        }
        // SAFETY: read-only map of a file no other process can name.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io("mapping standard input", e))?;
        Ok(Mapped { map: Some(map), _input: input })
    }
}

/// Open a file the user named as an input. One that does not exist or may
/// not be read is the user's input gone wrong (exit 2, in a sentence that
/// says which); other failures are I/O errors.
pub fn open_input(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::invalid(format!("{}: no such file or directory", path.display())),
        std::io::ErrorKind::PermissionDenied => {
            Error::invalid(format!("{}: permission denied (the file cannot be read)", path.display()))
        }
        _ => Error::io(format!("opening {}", path.display()), e),
    })
}

/// The identity of a file: (device, inode) on Unix, the canonical path elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileId(#[cfg(unix)] (u64, u64), #[cfg(not(unix))] PathBuf);

impl FileId {
    fn of(path: &Path, meta: &std::fs::Metadata) -> FileId {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let _ = path;
            FileId((meta.dev(), meta.ino()))
        }
        #[cfg(not(unix))]
        {
            let _ = meta;
            FileId(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
        }
    }
}

/// The files this process is reading now, by identity, each with the
/// number of its guard.
static INPUTS: std::sync::Mutex<Vec<(u64, FileId, PathBuf)>> = std::sync::Mutex::new(Vec::new());
static NEXT_INPUT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A file held as an input while this lives ([`note_input`]).
#[derive(Debug)]
pub struct InputGuard(u64);

impl Drop for InputGuard {
    fn drop(&mut self) {
        INPUTS.lock().unwrap_or_else(|p| p.into_inner()).retain(|(n, _, _)| *n != self.0);
    }
}

/// Hold `path` (whose metadata is `meta`) as an input while the guard
/// lives: [`write_atomic`] refuses to replace it meanwhile, however the
/// output's path is spelled (`./x/../in`, a symlink, a hard link).
/// [`Mapped::open`] does this for every file it maps.
pub fn note_input(path: &Path, meta: &std::fs::Metadata) -> InputGuard {
    let n = NEXT_INPUT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    INPUTS.lock().unwrap_or_else(|p| p.into_inner()).push((n, FileId::of(path, meta), path.to_path_buf()));
    InputGuard(n)
}

/// [`note_input`] for a path, when it exists.
pub fn note_input_path(path: &Path) -> Option<InputGuard> {
    std::fs::metadata(path).ok().map(|meta| note_input(path, &meta))
}

/// Where `path` leads once its missing directories are made: the longest
/// prefix that exists, canonicalized, then the rest with `..` taken
/// lexically (a directory that does not exist yet is no symlink), which is
/// what `create_dir_all` and then `open` do with it.
pub fn resolve_for_write(path: &Path) -> PathBuf {
    use std::path::Component;
    let comps: Vec<Component> = path.components().collect();
    for split in (0..=comps.len()).rev() {
        let head: PathBuf = comps[..split].iter().collect();
        let head = if head.as_os_str().is_empty() { PathBuf::from(".") } else { head };
        let Ok(mut out) = std::fs::canonicalize(&head) else { continue };
        for c in &comps[split..] {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                c => out.push(c.as_os_str()),
            }
        }
        return out;
    }
    path.to_path_buf()
}

/// Refuse an output path that is (or, once its directories are made, will
/// be) a file this process reads: writing it would destroy the input.
pub fn check_output(path: &Path) -> Result<()> {
    let target = resolve_for_write(path);
    let Ok(meta) = std::fs::metadata(&target) else { return Ok(()) };
    if meta.is_dir() {
        return Err(Error::invalid(format!("output {} is a directory", path.display())));
    }
    let id = FileId::of(&target, &meta);
    let inputs = INPUTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, _, input)) = inputs.iter().find(|(_, i, _)| *i == id) {
        return Err(Error::invalid(format!(
            "output {} is the input file {}: refusing to overwrite it",
            path.display(),
            input.display()
        )));
    }
    Ok(())
}

/// The temporary name an output is written under before it is renamed:
/// `.NAME.PID.tmp` beside it.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    path.with_file_name(tmp)
}

/// Remove the temporaries of `path` that processes now dead left behind
/// (killed with SIGKILL, aborted): `.NAME.PID.tmp` whose PID runs no
/// process. Those of live processes (another weightlab writing the same
/// output right now) are left alone.
pub fn sweep_stale_temps(path: &Path) -> usize {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else { return 0 };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let prefix = format!(".{name}.");
    let mut removed = 0;
    for e in entries.flatten() {
        let f = e.file_name();
        let f = f.to_string_lossy();
        let Some(pid) = f.strip_prefix(&prefix).and_then(|r| r.strip_suffix(".tmp")) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid != std::process::id() && !process_alive(pid) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
        // SAFETY: signal 0 only checks that the process exists.
        let r = unsafe { libc::kill(pid, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// A temporary output file: removed when dropped (an error, a panic)
/// unless [`TempFile::commit`] renamed it over its destination; held in
/// [`crate::signals`]' table meanwhile, so a signal removes it too.
struct TempFile {
    path: PathBuf,
    slot: Option<crate::signals::Slot>,
}

impl TempFile {
    fn create(path: PathBuf) -> Result<(TempFile, File)> {
        let slot = crate::signals::register(&path);
        let guard = TempFile { path, slot: Some(slot) };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&guard.path)
            .or_else(|e| {
                // our own leftover of this PID (an earlier write of the same
                // output in this process that could not clean up): replace it
                if e.kind() == std::io::ErrorKind::AlreadyExists { File::create(&guard.path) } else { Err(e) }
            })
            .map_err(|e| Error::io(format!("creating {}", guard.path.display()), e))?;
        Ok((guard, file))
    }

    fn commit(mut self, to: &Path) -> Result<()> {
        std::fs::rename(&self.path, to)
            .map_err(|e| Error::io(format!("renaming {} to {}", self.path.display(), to.display()), e))?;
        if let Some(s) = self.slot.take() {
            crate::signals::unregister(s);
        }
        Ok(())
    }
}

impl TempFile {
    /// Put the file at `to` only if nothing is there: a hard link, which
    /// fails on an existing name, then the temporary name removed.
    /// Filesystems without hard links get an exists check and a rename.
    fn commit_new(self, to: &Path) -> Result<()> {
        match std::fs::hard_link(&self.path, to) {
            Ok(()) => Ok(()), // the drop removes the temporary name
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists_error(to)),
            Err(_) if std::fs::symlink_metadata(to).is_ok() => Err(exists_error(to)),
            Err(_) => self.commit(to),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(s) = self.slot.take() {
            let _ = std::fs::remove_file(&self.path);
            crate::signals::unregister(s);
        }
    }
}

/// Write a file atomically: `f` writes into a buffered temporary file next to
/// `path`; on success it is flushed, synced and renamed over `path`; on any
/// error the temporary file is removed and `path` is untouched.
pub fn write_atomic<F>(path: &Path, f: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
{
    write_atomic_with(path, |w| f(w).map_err(|e| Error::io(format!("writing {}", path.display()), e)))
}

/// How [`write_atomic_opts`] finishes an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// `fsync` the file before it is renamed into place. Without it a crash
    /// of the machine (not of the process) may leave the renamed file
    /// empty or short; the rename itself is still atomic for every reader.
    /// zstd and gzip do not sync; weightlab's CLI syncs with `--sync`, and
    /// always before `--rm` deletes an input.
    pub sync: bool,
    /// Replace an existing output. Without it an output that exists (or
    /// appears while the file is written) is refused, and the rename is a
    /// link that cannot replace one.
    pub overwrite: bool,
}

impl Default for WriteOptions {
    /// What the library's `write_atomic` has always done: sync, replace.
    fn default() -> Self {
        WriteOptions { sync: true, overwrite: true }
    }
}

/// Like [`write_atomic`], for writers that fail with the library's error.
/// The output is refused when it is one of the process's inputs
/// ([`check_output`]), checked before anything is made and again before
/// the rename; stale temporaries of the same output are swept first.
pub fn write_atomic_with<F>(path: &Path, f: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    write_atomic_opts(path, &WriteOptions::default(), f)
}

/// The refusal of an output that exists, as the CLI words it.
pub fn exists_error(path: &Path) -> Error {
    Error::invalid(format!("{} already exists (-f to overwrite it)", path.display()))
}

/// [`write_atomic_with`] with the sync and the overwrite chosen.
pub fn write_atomic_opts<F>(path: &Path, opts: &WriteOptions, f: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> Result<()>,
{
    check_output(path)?;
    if !opts.overwrite && std::fs::symlink_metadata(path).is_ok() {
        return Err(exists_error(path));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    sweep_stale_temps(path);
    let tmp = temp_path(path);
    let (guard, file) = TempFile::create(tmp.clone())?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    f(&mut w)?;
    let file = w.into_inner().map_err(|e| Error::io(format!("writing {}", tmp.display()), e.into_error()))?;
    if opts.sync {
        file.sync_all().map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))?;
    }
    drop(file);
    check_output(path)?;
    if opts.overwrite { guard.commit(path) } else { guard.commit_new(path) }
}

/// Lower-case hex of a byte string.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a byte slice, as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// sha256 of a file, streamed, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut f = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(hex(&h.finalize()))
}

/// Writes pass through to `inner` and are hashed on the way.
pub struct HashingWriter<W: Write> {
    pub inner: W,
    pub hasher: sha2::Sha256,
    pub written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        use sha2::Digest;
        HashingWriter { inner, hasher: sha2::Sha256::new(), written: 0 }
    }
    pub fn finish_hex(self) -> (W, String, u64) {
        use sha2::Digest;
        (self.inner, hex(&self.hasher.finalize()), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        std::fs::write(&p, b"old").unwrap();
        let r = write_atomic(&p, |w| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "temp file left behind");
        write_atomic(&p, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn sha256_known_value() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
