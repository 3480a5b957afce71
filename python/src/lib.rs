//! `weightlab._native`: the Rust library as a Python extension module.
//!
//! The Python side (`python/weightlab/`) allocates every array and hands
//! its buffer here; chunks are decoded in parallel (rayon) straight into
//! that memory with the GIL released, so a load makes no intermediate file
//! and no second copy. Errors become the exception classes of
//! `weightlab.errors`, one per [`weightlab::ErrorKind`], with the tool's
//! messages.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyType;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use weightlab::container::{self, Archive as WArchive, CompressOptions, DecompressOptions};
use weightlab::io::{Mapped, WriteOptions};
use weightlab::{Error, ErrorKind, repo};

/// The `weightlab.errors` class of an error kind.
fn class_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "InvalidInputError",
        ErrorKind::Corruption => "CorruptArchiveError",
        ErrorKind::Truncated => "TruncatedArchiveError",
        ErrorKind::Unsupported => "UnsupportedError",
        ErrorKind::Io => "WeightlabIOError",
        ErrorKind::BoundViolated => "BoundViolatedError",
        ErrorKind::HashMismatch => "HashMismatchError",
        ErrorKind::Network => "NetworkError",
        _ => "WeightlabError",
    }
}

/// The library's error as the Python exception of its kind, carrying the
/// message the command-line tool prints.
fn to_py(e: Error) -> PyErr {
    Python::attach(|py| {
        let cls = py
            .import("weightlab.errors")
            .and_then(|m| m.getattr(class_name(e.kind())))
            .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
        match cls {
            Ok(cls) => PyErr::from_type(cls, (e.to_string(),)),
            Err(import) => import,
        }
    })
}

fn threads_arg(threads: usize) -> PyResult<usize> {
    if threads > 1024 {
        return Err(to_py(Error::invalid(format!("threads {threads} is outside 0 to 1024"))));
    }
    Ok(threads)
}

/// Run `f` on `threads` rayon threads (0: one per core).
fn pooled<T: Send>(threads: usize, f: impl FnOnce() -> weightlab::Result<T> + Send) -> weightlab::Result<T> {
    weightlab::progress::with_threads(threads, f)?
}

/// An open archive: the map and the index parsed from it.
struct Open {
    /// Borrows `map`'s bytes; declared first, so dropped first.
    archive: WArchive<'static>,
    _map: Mapped,
    path: PathBuf,
}

impl Open {
    fn new(path: &Path) -> weightlab::Result<Open> {
        let map = Mapped::open(path)?;
        // SAFETY: the bytes are the memory map's (or a static empty slice),
        // which stays where it is when `Mapped` moves and lives until `map`
        // drops; `archive` is dropped before it (field order) and never
        // handed out with the invented lifetime.
        let bytes: &'static [u8] = unsafe { std::mem::transmute::<&[u8], &'static [u8]>(map.bytes()) };
        let archive = WArchive::open(bytes).map_err(|e| e.context(path.display()))?;
        Ok(Open { archive, _map: map, path: path.to_path_buf() })
    }

    fn tensor(&self, t: usize) -> weightlab::Result<&container::TensorRecord> {
        self.archive.index.tensors.get(t).ok_or_else(|| {
            Error::invalid(format!(
                "no tensor #{t} in {} ({} tensors)",
                self.path.display(),
                self.archive.index.tensors.len()
            ))
        })
    }
}

/// A writable, C-contiguous buffer's memory, as an address and a length
/// (sent to the decoding threads while the GIL is released; the
/// `PyBuffer` that keeps it exported is held by the caller meanwhile).
fn writable(obj: &Bound<'_, PyAny>) -> PyResult<(PyBuffer<u8>, usize, usize)> {
    let buf = PyBuffer::<u8>::get(obj)?;
    if buf.readonly() {
        return Err(to_py(Error::invalid("the buffer to decode into is read-only")));
    }
    let ptr =
        buf.as_slice_ptr().ok_or_else(|| to_py(Error::invalid("the buffer to decode into is not C-contiguous")))?;
    let (addr, len) = (ptr.as_ptr() as *mut u8 as usize, ptr.len());
    Ok((buf, addr, len))
}

/// An archive opened for reading (`weightlab.safe_open` wraps it).
#[pyclass(frozen, name = "Archive", module = "weightlab._native")]
struct PyArchive {
    open: RwLock<Option<Arc<Open>>>,
}

impl PyArchive {
    fn get(&self) -> PyResult<Arc<Open>> {
        self.open
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| to_py(Error::invalid("the archive is closed")))
    }
}

#[pymethods]
impl PyArchive {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let open = py.detach(|| Open::new(&path)).map_err(to_py)?;
        Ok(PyArchive { open: RwLock::new(Some(Arc::new(open))) })
    }

    /// Unmap the archive (reads under way on other threads finish first).
    fn close(&self) {
        self.open.write().unwrap_or_else(|p| p.into_inner()).take();
    }

    #[getter]
    fn closed(&self) -> bool {
        self.open.read().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Every tensor in file order: (name, dtype, shape, bytes, codec, lossless).
    #[allow(clippy::type_complexity)]
    fn tensors(&self) -> PyResult<Vec<(String, String, Vec<u64>, u64, String, bool)>> {
        let o = self.get()?;
        Ok(o.archive
            .index
            .tensors
            .iter()
            .map(|r| {
                let codec = match r.same_as {
                    Some(j) => o.archive.index.tensors[j].codec.clone(),
                    None => r.codec.clone(),
                };
                (r.name.clone(), r.dtype.clone(), r.shape.clone(), r.size, codec, r.lossless)
            })
            .collect())
    }

    /// The original file's `__metadata__`, or None.
    fn metadata(&self) -> PyResult<Option<BTreeMap<String, String>>> {
        let o = self.get()?;
        let header = o.archive.header_bytes().map_err(to_py)?;
        let json = header.get(8..).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| to_py(Error::corrupt(format!("the stored safetensors header does not parse: {e}"))))?;
        let Some(m) = v.get("__metadata__") else { return Ok(None) };
        let m = m.as_object().ok_or_else(|| to_py(Error::corrupt("__metadata__ is not an object of strings")))?;
        m.iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => Ok((k.clone(), s.to_string())),
                None => Err(to_py(Error::corrupt(format!("__metadata__ value for '{k}' is not a string")))),
            })
            .collect::<PyResult<_>>()
            .map(Some)
    }

    /// Facts about the archive: its path, the original file's name, size and
    /// sha256, the chunk size, the writer.
    fn info(&self) -> PyResult<BTreeMap<&'static str, String>> {
        let o = self.get()?;
        let i = &o.archive.index;
        Ok(BTreeMap::from([
            ("path", o.path.display().to_string()),
            ("file_name", i.source.file_name.clone()),
            ("size", i.source.size.to_string()),
            ("sha256", i.source.sha256.clone()),
            ("chunk_size", i.chunk_size.to_string()),
            ("writer", i.writer.clone()),
            ("encoded_bytes", o.archive.bytes.len().to_string()),
        ]))
    }

    /// The decoded byte range of each chunk holding tensor `t`, and where
    /// its payload lies in the archive: (start, end, archive offset, length).
    fn chunks(&self, t: usize) -> PyResult<Vec<(u64, u64, u64, u64)>> {
        let o = self.get()?;
        o.tensor(t).map_err(to_py)?;
        let a = &o.archive;
        let stored = &a.index.tensors[a.index.tensors[t].same_as.unwrap_or(t)];
        Ok(a.chunk_spans(t)
            .into_iter()
            .zip(&stored.chunks)
            .map(|((s, e), c)| (s, e, c.offset(), c.encoded_len()))
            .collect())
    }

    /// Decode tensors into buffers: `targets` is [(tensor index, writable
    /// buffer of exactly its size)], all chunks decoded in one parallel pass
    /// with the GIL released.
    #[pyo3(signature = (targets, threads = 0, check_sha256 = false))]
    fn read_into(
        &self,
        py: Python<'_>,
        targets: Vec<(usize, Bound<'_, PyAny>)>,
        threads: usize,
        check_sha256: bool,
    ) -> PyResult<()> {
        let o = self.get()?;
        let threads = threads_arg(threads)?;
        let mut held = Vec::with_capacity(targets.len());
        let mut mem = Vec::with_capacity(targets.len());
        for (t, obj) in &targets {
            let (buf, addr, len) = writable(obj)?;
            held.push(buf);
            mem.push((*t, addr, len));
        }
        // Two targets in one buffer would be two `&mut` of the same bytes.
        let mut spans: Vec<(usize, usize)> = mem.iter().filter(|m| m.2 > 0).map(|m| (m.1, m.1 + m.2)).collect();
        spans.sort_unstable();
        if spans.windows(2).any(|w| w[1].0 < w[0].1) {
            return Err(to_py(Error::invalid("two tensors were given overlapping buffers")));
        }
        let r = py.detach(move || {
            pooled(threads, || {
                // SAFETY: each (addr, len) is the memory of a writable,
                // C-contiguous buffer kept exported by `held` until this
                // returns, and no two overlap (checked above).
                let mut slices: Vec<(usize, &mut [u8])> = mem
                    .iter()
                    .map(|&(t, addr, len)| {
                        let s: &mut [u8] = if len == 0 {
                            &mut []
                        } else {
                            unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) }
                        };
                        (t, s)
                    })
                    .collect();
                o.archive.read_tensors_into(&mut slices, check_sha256).map_err(|e| e.context(o.path.display()))
            })
        });
        drop(held);
        r.map_err(to_py)
    }

    /// Decode bytes `start..end` of tensor `t` into `buffer` (exactly that
    /// long), decoding only the chunks that hold them.
    #[pyo3(signature = (t, start, end, buffer, threads = 0))]
    fn read_range_into(
        &self,
        py: Python<'_>,
        t: usize,
        start: u64,
        end: u64,
        buffer: Bound<'_, PyAny>,
        threads: usize,
    ) -> PyResult<()> {
        let o = self.get()?;
        let threads = threads_arg(threads)?;
        let (held, addr, len) = writable(&buffer)?;
        let r = py.detach(move || {
            pooled(threads, || {
                // SAFETY: as in `read_into`: one writable, contiguous buffer
                // kept exported by `held` until this returns.
                let out: &mut [u8] =
                    if len == 0 { &mut [] } else { unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) } };
                o.archive.read_range_into(t, start, end, out).map_err(|e| e.context(o.path.display()))
            })
        });
        drop(held);
        r.map_err(to_py)
    }

    fn __repr__(&self) -> String {
        match self.get() {
            Ok(o) => format!("<weightlab archive {} ({} tensors)>", o.path.display(), o.archive.index.tensors.len()),
            Err(_) => "<weightlab archive (closed)>".into(),
        }
    }
}

/// What a compress or decompress did, for Python.
fn report(files: usize, archives: usize, bytes: u64, stored: u64) -> BTreeMap<&'static str, u64> {
    BTreeMap::from([("files", files as u64), ("archives", archives as u64), ("bytes", bytes), ("stored_bytes", stored)])
}

/// Call the Python progress callback, if any, with (bytes done, bytes in all).
fn tick(progress: &Option<Py<PyAny>>, done: u64, total: u64) -> PyResult<()> {
    if let Some(cb) = progress {
        Python::attach(|py| cb.call1(py, (done, total)).map(|_| ()))?;
    }
    Ok(())
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The CLI's bounds of `--shard I/N` ([`repo::check_slice`]).
fn shard_arg(shard: Option<(usize, usize)>) -> PyResult<Option<(usize, usize)>> {
    if let Some((i, n)) = shard {
        repo::check_slice(i, n).map_err(|e| to_py(Error::invalid(format!("shard: {}", e.message()))))?;
    }
    Ok(shard)
}

/// Compress a safetensors file, or a model directory, into `output`;
/// `shard = (i, n)`: only slice i of n of a directory's files (the CLI's
/// `--shard I/N`), with its partial manifest for [`join_slices`].
#[pyfunction]
#[pyo3(signature = (input, output, codec = "auto".to_string(), threads = 0, chunk_kib = 4096, overwrite = false, sync = false, progress = None, shard = None))]
#[allow(clippy::too_many_arguments)]
fn compress_path(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    codec: String,
    threads: usize,
    chunk_kib: usize,
    overwrite: bool,
    sync: bool,
    progress: Option<Py<PyAny>>,
    shard: Option<(usize, usize)>,
) -> PyResult<BTreeMap<&'static str, u64>> {
    let threads = threads_arg(threads)?;
    if !(1..=262144).contains(&chunk_kib) {
        return Err(to_py(Error::invalid(format!("chunk_kib {chunk_kib} is outside 1 to 262144"))));
    }
    let shard = shard_arg(shard)?;
    let opts = CompressOptions { codec, chunk_size: chunk_kib << 10, threads, ..Default::default() };
    let wopts = WriteOptions { sync, overwrite };
    let is_dir = input.is_dir();
    if shard.is_some() && !is_dir {
        return Err(to_py(Error::invalid(format!(
            "{}: shard= takes a model directory (a file is not split into slices)",
            input.display()
        ))));
    }
    let total = if is_dir {
        let files = repo::list_files(&input).map_err(to_py)?;
        let sizes: Vec<u64> = files.iter().map(|r| file_len(&input.join(r))).collect();
        match shard {
            Some((i, n)) => repo::slice_of(&sizes, i, n).iter().map(|&k| sizes[k]).sum(),
            None => sizes.iter().sum(),
        }
    } else {
        file_len(&input)
    };
    tick(&progress, 0, total)?;
    let r = py
        .detach(|| -> weightlab::Result<_> {
            if is_dir {
                let r = repo::compress_dir_slice(&input, &output, &opts, &wopts, shard)?;
                Ok(report(r.files, r.archives, r.bytes, r.stored_bytes))
            } else {
                let index = container::compress_file_opts(&input, &output, &opts, &wopts)?;
                Ok(report(1, 1, index.source.size, file_len(&output)))
            }
        })
        .map_err(to_py)?;
    tick(&progress, total, total)?;
    Ok(r)
}

/// Compress safetensors bytes held in a buffer into an archive file.
#[pyfunction]
#[pyo3(signature = (data, file_name, output, codec = "auto".to_string(), threads = 0, overwrite = true, sync = false))]
#[allow(clippy::too_many_arguments)]
fn compress_buffer(
    py: Python<'_>,
    data: PyBuffer<u8>,
    file_name: String,
    output: PathBuf,
    codec: String,
    threads: usize,
    overwrite: bool,
    sync: bool,
) -> PyResult<BTreeMap<&'static str, u64>> {
    let threads = threads_arg(threads)?;
    let ptr = data.as_slice_ptr().ok_or_else(|| to_py(Error::invalid("the data buffer is not C-contiguous")))?;
    let (addr, len) = (ptr.as_ptr() as *const u8 as usize, ptr.len());
    let opts = CompressOptions { codec, threads, ..Default::default() };
    let wopts = WriteOptions { sync, overwrite };
    let r = py.detach(move || {
        // SAFETY: `data` keeps the buffer exported until this returns; it is
        // only read.
        let bytes: &[u8] = if len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(addr as *const u8, len) } };
        container::compress_to_file(bytes, &file_name, &output, &opts, &wopts)
            .map(|index| report(1, 1, index.source.size, file_len(&output)))
    });
    drop(data);
    r.map_err(to_py)
}

/// Decompress an archive to a safetensors file, or a compressed model
/// directory to the original directory.
#[pyfunction]
#[pyo3(signature = (input, output, threads = 0, overwrite = false, sync = false, progress = None))]
fn decompress_path(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    threads: usize,
    overwrite: bool,
    sync: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<BTreeMap<&'static str, u64>> {
    let threads = threads_arg(threads)?;
    let opts = DecompressOptions { threads, ..Default::default() };
    let wopts = WriteOptions { sync, overwrite };
    let is_dir = input.is_dir();
    let total = if is_dir {
        repo::RepoManifest::load(&input).map_err(to_py)?.total_size()
    } else {
        py.detach(|| Open::new(&input)).map_err(to_py)?.archive.index.source.size
    };
    tick(&progress, 0, total)?;
    let r = py
        .detach(|| -> weightlab::Result<_> {
            if is_dir {
                let r = repo::decompress_dir(&input, &output, &opts, &wopts)?;
                Ok(report(r.files, r.archives, r.bytes, r.stored_bytes))
            } else {
                let r = container::decompress_file_opts(&input, &output, &opts, &wopts)?;
                Ok(report(1, 1, r.bytes, file_len(&input)))
            }
        })
        .map_err(to_py)?;
    tick(&progress, total, total)?;
    Ok(r)
}

/// Check an archive or a compressed directory completely (every chunk,
/// every tensor's and file's sha256, as `weightlab verify`).
#[pyfunction]
#[pyo3(signature = (input, threads = 0))]
fn verify_path(py: Python<'_>, input: PathBuf, threads: usize) -> PyResult<BTreeMap<&'static str, u64>> {
    let threads = threads_arg(threads)?;
    py.detach(|| -> weightlab::Result<_> {
        if input.is_dir() {
            let r = repo::verify_dir(&input, threads, false)?;
            Ok(report(r.files, r.archives, r.bytes, r.stored_bytes))
        } else {
            let r = container::verify_file(&input, None, threads, false).map_err(|e| e.context(input.display()))?;
            Ok(report(1, 1, r.bytes, file_len(&input)))
        }
    })
    .map_err(to_py)
}

/// Join the partial manifests that `compress_path(..., shard=(i, n))` calls
/// wrote into `dir` into its whole manifest (`weightlab join-slices DIR`);
/// the joined manifest's rows, as [`manifest`] gives them.
#[pyfunction]
fn join_slices(py: Python<'_>, dir: PathBuf) -> PyResult<Vec<ManifestRow>> {
    let m = py.detach(|| repo::join_slices(&dir, &WriteOptions::default())).map_err(to_py)?;
    Ok(manifest_rows(m))
}

/// Is `path` a compressed model directory (it has a manifest)?
#[pyfunction]
fn is_compressed_dir(path: PathBuf) -> bool {
    repo::is_compressed_dir(&path)
}

/// One file of a manifest: (path, size, sha256, "archive" or "copy", stored path).
type ManifestRow = (String, u64, String, String, String);

/// The manifest of a compressed directory: [(path, size, sha256, stored, stored_path)].
#[pyfunction]
fn manifest(path: PathBuf) -> PyResult<Vec<ManifestRow>> {
    Ok(manifest_rows(repo::RepoManifest::load(&path).map_err(to_py)?))
}

fn manifest_rows(m: repo::RepoManifest) -> Vec<ManifestRow> {
    m.files
        .into_iter()
        .map(|f| {
            let stored = match f.stored {
                repo::Stored::Archive => "archive",
                repo::Stored::Copy => "copy",
            };
            (f.path, f.size, f.sha256, stored.to_string(), f.stored_path)
        })
        .collect()
}

/// Make the C allocator keep freed memory for reuse, process-wide (what the
/// command-line tool does at its start; see `weightlab::io::keep_freed_memory`).
#[pyfunction]
fn keep_freed_memory() {
    weightlab::io::keep_freed_memory();
}

#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyArchive>()?;
    m.add_function(wrap_pyfunction!(compress_path, m)?)?;
    m.add_function(wrap_pyfunction!(compress_buffer, m)?)?;
    m.add_function(wrap_pyfunction!(decompress_path, m)?)?;
    m.add_function(wrap_pyfunction!(verify_path, m)?)?;
    m.add_function(wrap_pyfunction!(join_slices, m)?)?;
    m.add_function(wrap_pyfunction!(is_compressed_dir, m)?)?;
    m.add_function(wrap_pyfunction!(manifest, m)?)?;
    m.add_function(wrap_pyfunction!(keep_freed_memory, m)?)?;
    m.add("SUFFIX", repo::SUFFIX)?;
    m.add("MANIFEST_NAME", repo::MANIFEST_NAME)?;
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
