//! Reading archives: validate the frame and index, decode chunks in parallel,
//! stream the original file back out, verify every checksum.

use super::format::*;
use super::xxh3_64;
use crate::codec::{self, ChunkInfo, Codec};
use crate::error::{Error, Result, ResultExt};
use crate::io::hex;
use crate::tensor::{DType, numel};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// An archive held in memory (usually a memory map), with its validated index.
pub struct Archive<'a> {
    pub bytes: &'a [u8],
    pub header: FixedHeader,
    pub index: Index,
    dtypes: Vec<DType>,
    /// The safetensors prefix, decoded on first use when it is stored as a
    /// zstd frame.
    source_header: std::sync::OnceLock<Vec<u8>>,
}

/// What a full decode checks beyond what it always checks: the xxh3 of every
/// chunk's decoded bytes (and of its stored bytes when that fails), of the
/// stored safetensors header and of the index, which catch a damaged archive
/// and a decoder that went wrong, and name the tensor.
#[derive(Debug, Clone, Default)]
pub struct DecodeOptions {
    /// Recompute every tensor's sha256 and compare it with the index.
    pub check_tensor_hashes: bool,
    /// Recompute the sha256 of the whole decoded file and compare it with the
    /// index. One sequential stream (about 1.6 GB/s with SHA-NI here): on its
    /// own it capped a one-thread decode at about 900 MB/s and two threads
    /// at 1.2x.
    pub check_file_hash: bool,
    /// Check every chunk's xxh3 of its stored bytes before decoding it, as
    /// `verify` does; otherwise it is checked only when a decode fails (the
    /// xxh3 of the decoded bytes is always checked).
    pub check_stored: bool,
    pub progress: bool,
}

/// When [`Archive::decode_chunk`] checks the xxh3 of a chunk's stored bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoredCheck {
    /// Before decoding: `verify` checks every byte of the archive.
    First,
    /// Only when the decode fails or its xxh3 does not match: reads, whose
    /// bytes the decoded xxh3 checks.
    OnFailure,
}

/// What a full decode found.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub bytes: u64,
    /// sha256 of the bytes written, when it was computed (and matched).
    pub sha256: Option<String>,
}

impl<'a> Archive<'a> {
    /// Parse and validate the frame and the index. Chunk payloads are checked
    /// when they are decoded.
    pub fn open(bytes: &'a [u8]) -> Result<Archive<'a>> {
        let header = FixedHeader::parse(bytes)?;
        let trailer = Trailer::parse(bytes)?;
        let body_end = (bytes.len() - TRAILER_LEN) as u64;
        let index_end = trailer.index_offset.checked_add(trailer.index_len);
        if trailer.index_len > MAX_INDEX_LEN || trailer.index_offset < HEADER_LEN as u64 || index_end != Some(body_end)
        {
            return Err(Error::corrupt(format!(
                "trailer points at an index of {} bytes at offset {} in a {}-byte archive",
                trailer.index_len,
                trailer.index_offset,
                bytes.len()
            )));
        }
        let stored = &bytes[trailer.index_offset as usize..body_end as usize];
        if xxh3_64(stored) != trailer.index_xxh3 {
            return Err(Error::corrupt("the archive index is damaged (checksum mismatch)"));
        }
        let unpacked;
        let json = match trailer.index_json_len {
            0 => stored,
            _ if header.version < 2 => {
                return Err(Error::corrupt("a format version 1 archive with a reserved trailer field set"));
            }
            n => {
                unpacked = unpack_meta(stored, n, "the archive index")?;
                &unpacked[..]
            }
        };
        let index: Index = serde_json::from_slice(json)
            .map_err(|e| Error::corrupt(format!("the archive index does not parse: {e}")))?;
        if index.format_version != header.version {
            return Err(Error::corrupt(format!(
                "header says format version {} but the index says {}",
                header.version, index.format_version
            )));
        }
        let dtypes = validate(&index, trailer.index_offset)?;
        Ok(Archive { bytes, header, index, dtypes, source_header: std::sync::OnceLock::new() })
    }

    /// The original safetensors prefix (8-byte length + JSON), checked.
    pub fn header_bytes(&self) -> Result<&[u8]> {
        let s = &self.index.header;
        let b = &self.bytes[s.offset as usize..(s.offset + s.len) as usize];
        if xxh3_64(b) != s.xxh3 {
            return Err(Error::corrupt("the stored safetensors header is damaged (checksum mismatch)"));
        }
        let Some(n) = s.raw_len else { return Ok(b) };
        if let Some(h) = self.source_header.get() {
            return Ok(h);
        }
        let h = unpack_meta(b, n, "the stored safetensors header")?;
        Ok(self.source_header.get_or_init(|| h))
    }

    fn codec_for(&self, t: usize) -> Result<Box<dyn Codec>> {
        let r = &self.index.tensors[t];
        codec::build_recorded(&r.codec, &r.stage_ids).map_err(as_damage).with_context(|| format!("tensor '{}'", r.name))
    }

    fn chunk_info(&self, t: usize, offset: u64) -> ChunkInfo<'_> {
        let r = &self.index.tensors[t];
        ChunkInfo { name: &r.name, dtype: self.dtypes[t], shape: &r.shape, offset }
    }

    /// Decode chunk `c` of tensor `t` into `out` and check the xxh3 of what
    /// it decoded. The xxh3 of the stored bytes is checked before decoding
    /// when `stored` is [`StoredCheck::First`] (`verify`), and otherwise only
    /// when the decode fails or its xxh3 does not match, to say which of
    /// the archive and the decoder is at fault. The decoded xxh3 alone
    /// checks every byte a reader gets; the stored one is not a defence
    /// against a crafted archive (it is no cryptographic hash, so a crafted
    /// archive carries the right one), which the decoders meet anyway (they
    /// are fuzzed on arbitrary payloads). Hashing the stored bytes first
    /// cost loads of EmbeddingGemma BF16 0.40 GB of hashing on top of the
    /// decoded 0.61 GB (issue #14).
    fn decode_chunk(
        &self,
        codec: &dyn Codec,
        t: usize,
        c: usize,
        offset: u64,
        out: &mut [u8],
        stored: StoredCheck,
    ) -> Result<()> {
        let r = &self.index.tensors[t];
        let e = r.chunks[c];
        let where_ = || {
            format!(
                "tensor '{}', chunk {c} of {} (archive bytes {}..{})",
                r.name,
                r.chunks.len(),
                e.offset(),
                e.offset() + e.encoded_len()
            )
        };
        let payload = &self.bytes[e.offset() as usize..(e.offset() + e.encoded_len()) as usize];
        let damaged = || Error::corrupt(format!("{}: checksum mismatch, the archive is damaged", where_()));
        let stored_ok = || xxh3_64(payload) == e.encoded_xxh3();
        if stored == StoredCheck::First && !stored_ok() {
            return Err(damaged());
        }
        let checked = codec
            .decode_xxh3(&self.chunk_info(t, offset), payload, out)
            .map_err(as_damage)
            .with_context(where_)
            .and_then(|h| {
                if h == e.decoded_xxh3() {
                    Ok(())
                } else {
                    Err(Error::corrupt(format!("{}: decoded bytes do not match their checksum", where_())))
                }
            });
        match checked {
            Err(_) if stored == StoredCheck::OnFailure && !stored_ok() => Err(damaged()),
            r => r,
        }
    }

    /// The tensor whose chunks hold `t`'s bytes (itself, or the one it duplicates).
    fn storage_of(&self, t: usize) -> usize {
        self.index.tensors[t].same_as.unwrap_or(t)
    }

    /// Decode one tensor (random access: only its chunks are read), chunks in
    /// parallel, checking its sha256.
    pub fn read_tensor(&self, t: usize) -> Result<Vec<u8>> {
        let r = &self.index.tensors[t];
        let src = self.storage_of(t);
        let codec = self.codec_for(src)?;
        let rs = &self.index.tensors[src];
        let mut out = zeroed(r.size, || format!("allocating {} bytes for tensor '{}'", r.size, r.name))?;
        let mut slices = Vec::with_capacity(rs.chunks.len());
        let mut rest = out.as_mut_slice();
        let mut offset = 0u64;
        for (c, e) in rs.chunks.iter().enumerate() {
            let (a, b) = rest.split_at_mut(e.decoded_len() as usize);
            slices.push((c, offset, a));
            offset += e.decoded_len();
            rest = b;
        }
        slices.into_par_iter().try_for_each(|(c, off, buf)| {
            self.decode_chunk(codec.as_ref(), src, c, off, buf, StoredCheck::OnFailure)
        })?;
        if r.has_sha256() && hex(&Sha256::digest(&out)) != r.sha256 {
            return Err(Error::hash_mismatch(format!("tensor '{}': sha256 does not match", r.name)));
        }
        Ok(out)
    }

    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.index.tensors.iter().position(|t| t.name == name)
    }

    /// Decode everything in file order into `sink`: the original safetensors
    /// header, then every tensor. Chunks decode in parallel across tensor
    /// boundaries (most tensors of a model are one chunk) and are written
    /// (and hashed, with the options that ask for it) in order by whichever
    /// thread is free ([`super::pipelined`]), so with two or more threads the
    /// sequential end overlaps the decoding. Memory stays at about 2 ×
    /// threads × chunk size.
    pub fn stream(&self, sink: &mut (dyn Write + Send), opts: &DecodeOptions) -> Result<StreamReport> {
        self.stream_to(Output::Stream(sink), opts)
    }

    /// [`Archive::stream`] into a file, from its start: each decoding
    /// thread writes its chunks at their places in the file, so that the
    /// sequential end keeps only the hashes the options ask for (measured on
    /// a 280 MB file with two threads, when it still hashed the file: the
    /// writes in order took a fifth of the sequential end's time).
    pub fn stream_to_file(&self, file: &std::fs::File, opts: &DecodeOptions) -> Result<StreamReport> {
        self.stream_to(Output::File(file), opts)
    }

    fn stream_to(&self, mut output: Output<'_>, opts: &DecodeOptions) -> Result<StreamReport> {
        let bar = crate::progress::bytes_bar(self.index.source.size, "decompress", opts.progress);
        let header = self.header_bytes()?;
        let mut w = StreamWriter {
            file_hash: opts.check_file_hash.then(Sha256::new),
            tensor_hash: None,
            written: 0,
            bar: &bar,
        };
        output.write_at(header, 0)?;
        w.account(header);
        let codecs: Vec<Option<Box<dyn Codec>>> = (0..self.index.tensors.len())
            .map(|t| if self.storage_of(t) == t { self.codec_for(t).map(Some) } else { Ok(None) })
            .collect::<Result<_>>()?;
        // Every chunk in file order: (tensor, chunk, offset in the tensor).
        let mut jobs = Vec::new();
        for (t, r) in self.index.tensors.iter().enumerate() {
            let mut offset = 0u64;
            for (c, e) in self.index.tensors[self.storage_of(t)].chunks.iter().enumerate() {
                jobs.push((t, c, offset));
                offset += e.decoded_len();
            }
            debug_assert_eq!(offset, r.size);
        }
        // Tensors without chunks (empty ones) have their hash checked here.
        if opts.check_tensor_hashes {
            let empty = hex(&Sha256::digest([]));
            if let Some(r) = self.index.tensors.iter().enumerate().find_map(|(t, r)| {
                (self.index.tensors[self.storage_of(t)].chunks.is_empty() && r.sha256 != empty).then_some(r)
            }) {
                return Err(Error::hash_mismatch(format!("tensor '{}': sha256 does not match the archive", r.name)));
            }
        }
        // Decoded buffers go back to a pool once written: a fresh one per
        // chunk cost page faults and zeroing every time.
        let pool: std::sync::Mutex<Vec<Vec<u8>>> = Default::default();
        let file = match &output {
            Output::File(f) => Some(*f),
            Output::Stream(_) => None,
        };
        let data_start = header.len() as u64;
        let at = |t: usize, off: u64| data_start + self.index.tensors[t].data_offset + off;
        // With one decoding thread the sink has a thread of its own
        // ([`super::pipelined`]): the writes go there, beside the decoding.
        let write_in_sink = super::sink_has_own_thread();
        let stored = if opts.check_stored { StoredCheck::First } else { StoredCheck::OnFailure };
        let decode = |&(t, c, off): &ChunkJob| -> Result<Vec<u8>> {
            let src = self.storage_of(t);
            let codec = codecs[src].as_deref().expect("a codec per stored tensor");
            let len = self.index.tensors[src].chunks[c].decoded_len() as usize;
            let mut buf = pool.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
            // A reused buffer keeps its old bytes: every decoder writes all
            // of its output, and the chunk's xxh3 checks that it did.
            if buf.len() >= len {
                buf.truncate(len);
            } else {
                buf.resize(len, 0);
            }
            match self.decode_chunk(codec, src, c, off, &mut buf, stored) {
                Err(e) if src != t => {
                    return Err(e.context(format!("tensor '{}' (stored as a copy)", self.index.tensors[t].name)));
                }
                r => r?,
            }
            if let Some(f) = file
                && !write_in_sink
            {
                write_all_at(f, &buf, at(t, off))?;
            }
            Ok(buf)
        };
        super::pipelined(&jobs, decode, |job, d| {
            let d = d?;
            if let Some(f) = file
                && write_in_sink
            {
                write_all_at(f, &d, at(job.0, job.2))?;
            }
            self.account_chunk(&mut w, opts, job, &d)?;
            if let Output::Stream(s) = &mut output {
                s.write_all(&d).map_err(|e| Error::io("writing the output", e))?;
            }
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(d);
            Ok(())
        })?;
        output.flush()?;
        crate::progress::finish(&bar);
        let sha256 = w.file_hash.map(|h| hex(&h.finalize()));
        if let Some(sha) = &sha256
            && *sha != self.index.output_sha256
        {
            return Err(Error::hash_mismatch(format!(
                "the decoded file's sha256 {sha} does not match the archive's {}",
                self.index.output_sha256
            )));
        }
        Ok(StreamReport { bytes: w.written, sha256 })
    }

    /// Account for a decoded chunk (chunks come in file order): hash it, and
    /// check each tensor's sha256 at its last chunk when asked to.
    fn account_chunk(
        &self,
        w: &mut StreamWriter<'_>,
        opts: &DecodeOptions,
        &(t, c, _): &ChunkJob,
        d: &[u8],
    ) -> Result<()> {
        if c == 0 && opts.check_tensor_hashes && self.index.tensors[t].has_sha256() {
            w.tensor_hash = Some(Sha256::new());
        }
        w.account(d);
        let chunks = self.index.tensors[self.storage_of(t)].chunks.len();
        if c + 1 == chunks
            && let Some(h) = w.tensor_hash.take()
            && hex(&h.finalize()) != self.index.tensors[t].sha256
        {
            return Err(Error::hash_mismatch(format!(
                "tensor '{}': sha256 of the decoded bytes does not match the archive",
                self.index.tensors[t].name
            )));
        }
        Ok(())
    }
}

/// What the archive records is ours: a spec or a stream a codec finds
/// invalid means the archive is damaged (exit 3), not that the user gave
/// bad input (exit 2).
fn as_damage(e: Error) -> Error {
    if e.kind() == crate::ErrorKind::InvalidInput { Error::corrupt(e.message().to_string()) } else { e }
}

/// Where [`Archive::stream_to`] puts the decoded file.
enum Output<'a> {
    /// Written in order.
    Stream(&'a mut (dyn Write + Send)),
    /// Written at each chunk's offset, by the thread that decoded it.
    File(&'a std::fs::File),
}

impl Output<'_> {
    /// Write `d`, which belongs at file offset `at` (the next bytes, for a stream).
    fn write_at(&mut self, d: &[u8], at: u64) -> Result<()> {
        match self {
            Output::Stream(s) => s.write_all(d).map_err(|e| Error::io("writing the output", e)),
            Output::File(f) => write_all_at(f, d, at),
        }
    }

    fn flush(&mut self) -> Result<()> {
        match self {
            Output::Stream(s) => s.flush().map_err(|e| Error::io("writing the output", e)),
            Output::File(_) => Ok(()),
        }
    }
}

/// Write all of `d` at offset `at` of `f` (positioned: threads write their
/// chunks into one file side by side).
fn write_all_at(f: &std::fs::File, d: &[u8], at: u64) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        f.write_all_at(d, at).map_err(|e| Error::io("writing the output", e))
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let mut done = 0;
        while done < d.len() {
            let n = f.seek_write(&d[done..], at + done as u64).map_err(|e| Error::io("writing the output", e))?;
            if n == 0 {
                return Err(Error::io("writing the output", std::io::ErrorKind::WriteZero.into()));
            }
            done += n;
        }
        Ok(())
    }
}

/// A chunk to decode: (tensor, chunk of its stored tensor, offset in the tensor).
type ChunkJob = (usize, usize, u64);

/// The sequential end of [`Archive::stream`]: hashes, progress.
struct StreamWriter<'a> {
    file_hash: Option<Sha256>,
    tensor_hash: Option<Sha256>,
    written: u64,
    bar: &'a indicatif::ProgressBar,
}

impl StreamWriter<'_> {
    fn account(&mut self, d: &[u8]) {
        if let Some(h) = self.file_hash.as_mut() {
            h.update(d);
        }
        if let Some(h) = self.tensor_hash.as_mut() {
            h.update(d);
        }
        self.written += d.len() as u64;
        self.bar.inc(d.len() as u64);
    }
}

/// Structural checks of an index against the archive it came from
/// (`data_end`: where the index starts). What they guarantee to every
/// reader, so that no length in a lying index is trusted further:
/// - sizes add up without wrapping: tensors lie back to back from offset 0
///   and, with the stored header, make exactly the source size;
/// - every chunk decodes to whole elements, at most the archive's chunk size
///   (itself at most [`MAX_CHUNK_SIZE`]), and a stored tensor's chunks to
///   exactly its size;
/// - payloads lie back to back in index order from the end of the fixed
///   header to the stored safetensors header, which ends where the index
///   starts: no payload overlaps another or the headers, so the decoded
///   output cannot be a multiple of the archive through shared payloads.
fn validate(index: &Index, data_end: u64) -> Result<Vec<DType>> {
    let h = &index.header;
    if h.offset < HEADER_LEN as u64 || h.offset.checked_add(h.len) != Some(data_end) {
        return Err(Error::corrupt(format!(
            "index: the stored safetensors header ({} bytes at {}) does not end where the index starts ({data_end})",
            h.len, h.offset
        )));
    }
    if index.chunk_size == 0 || index.chunk_size > MAX_CHUNK_SIZE {
        return Err(Error::corrupt(format!("index: chunk size {} is outside 1..={MAX_CHUNK_SIZE}", index.chunk_size)));
    }
    let mut expect_offset = 0u64;
    let mut expect_payload = HEADER_LEN as u64;
    let mut dtypes = Vec::with_capacity(index.tensors.len());
    for (i, t) in index.tensors.iter().enumerate() {
        let bad = |m: String| Error::corrupt(format!("index: tensor '{}': {m}", t.name));
        let dtype = DType::from_name(&t.dtype)
            .map_err(|_| Error::unsupported(format!("tensor '{}': unknown dtype '{}'", t.name, t.dtype)))?;
        let n = numel(&t.shape).map_err(|e| bad(e.message().to_string()))?;
        let len = dtype.byte_len(n).map_err(|e| bad(e.message().to_string()))?;
        if len != t.size {
            return Err(bad(format!("shape {:?} of {dtype} is {len} bytes, record says {}", t.shape, t.size)));
        }
        if t.data_offset != expect_offset {
            return Err(bad(format!("data offset {} where {expect_offset} was expected", t.data_offset)));
        }
        expect_offset = expect_offset
            .checked_add(t.size)
            .ok_or_else(|| bad(format!("size {} makes the data section overflow", t.size)))?;
        match t.same_as {
            Some(j) => {
                if j >= i
                    || index.tensors[j].size != t.size
                    || !t.chunks.is_empty()
                    || index.tensors[j].same_as.is_some()
                {
                    return Err(bad(format!("bad duplicate reference to tensor #{j}")));
                }
            }
            None => {
                let unit = dtype.split_unit() as u64;
                let limit = index.chunk_size.max(unit);
                let mut total = 0u64;
                for (c, e) in t.chunks.iter().enumerate() {
                    if e.offset() != expect_payload {
                        return Err(bad(format!(
                            "chunk {c} is stored at byte {} where the payloads, back to back, put it at {expect_payload}",
                            e.offset()
                        )));
                    }
                    expect_payload = e
                        .offset()
                        .checked_add(e.encoded_len())
                        .filter(|&x| x <= h.offset)
                        .ok_or_else(|| bad(format!("chunk {c} runs into the stored header")))?;
                    let d = e.decoded_len();
                    if d == 0 || d > limit || d % unit != 0 {
                        return Err(bad(format!(
                            "chunk {c} decodes to {d} bytes: not 1..={limit} bytes of whole {unit}-byte elements"
                        )));
                    }
                    total = total
                        .checked_add(d)
                        .filter(|&x| x <= t.size)
                        .ok_or_else(|| bad(format!("chunks decode to more than the tensor's {} bytes", t.size)))?;
                }
                if total != t.size {
                    return Err(bad(format!("chunks decode to {total} bytes, tensor has {}", t.size)));
                }
            }
        }
        dtypes.push(dtype);
    }
    if expect_payload != h.offset {
        return Err(Error::corrupt(format!(
            "index: the chunk payloads end at byte {expect_payload} but the stored header starts at {}",
            h.offset
        )));
    }
    if h.source_len().checked_add(expect_offset) != Some(index.source.size) {
        return Err(Error::corrupt(format!(
            "index: header ({}) and tensors ({expect_offset}) do not add up to the source size {}",
            h.source_len(),
            index.source.size
        )));
    }
    Ok(dtypes)
}

/// A zeroed buffer of `len` bytes, or an error when the memory cannot be
/// had (a size from an index must not abort the process).
fn zeroed(len: u64, what: impl FnOnce() -> String) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    usize::try_from(len)
        .ok()
        .and_then(|n| v.try_reserve_exact(n).ok().map(|()| n))
        .map(|n| {
            v.resize(n, 0);
            v
        })
        .ok_or_else(|| Error::io(what(), std::io::Error::from(std::io::ErrorKind::OutOfMemory)))
}

/// Decompress an archive to a safetensors file, written atomically (synced,
/// replacing an existing output).
pub fn decompress_file(input: &Path, output: &Path, threads: usize, progress: bool) -> Result<StreamReport> {
    let opts = DecompressOptions { threads, progress, ..Default::default() };
    decompress_file_opts(input, output, &opts, &crate::io::WriteOptions::default())
}

/// How [`decompress_file_opts`] decodes.
#[derive(Debug, Clone, Default)]
pub struct DecompressOptions {
    /// Worker threads (0: one per core).
    pub threads: usize,
    pub progress: bool,
    /// Also recompute the sha256 of the written file and compare it with
    /// the archive's (as `verify` does): what `--rm` asks before it deletes
    /// the archive.
    pub check_file_hash: bool,
}

/// [`decompress_file`] with the options and the output's sync and
/// overwrite chosen.
pub fn decompress_file_opts(
    input: &Path,
    output: &Path,
    opts: &DecompressOptions,
    wopts: &crate::io::WriteOptions,
) -> Result<StreamReport> {
    // The map holds the input: the write refuses an output that is it.
    let map = crate::io::Mapped::open(input)?;
    let archive = Archive::open(map.bytes()).with_context(|| input.display().to_string())?;
    archive.decompress_to_file(output, opts, wopts)
}

impl Archive<'_> {
    /// Decode the whole archive into a file, written atomically.
    pub fn decompress_to_file(
        &self,
        output: &Path,
        opts: &DecompressOptions,
        wopts: &crate::io::WriteOptions,
    ) -> Result<StreamReport> {
        // Every chunk's xxh3 of its decoded bytes is checked (naming the tensor
        // on a mismatch; the stored bytes' then says whether the archive is
        // damaged), and the header's and the index's;
        // the sha256s (of every tensor, of the file) would hash every byte again
        // in one sequential stream for no better check against damage (the index
        // that holds them has an xxh3 only), and are left to `verify` unless asked.
        let dopts = DecodeOptions {
            check_tensor_hashes: false,
            check_file_hash: opts.check_file_hash,
            check_stored: false,
            progress: opts.progress,
        };
        let mut report = None;
        crate::progress::with_threads(opts.threads, || {
            crate::io::write_atomic_opts(output, wopts, |w| {
                report = Some(self.stream_to_file(w.get_ref(), &dopts)?);
                Ok(())
            })
        })??;
        Ok(report.expect("set on success"))
    }
}

/// What `verify` found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub tensors: usize,
    /// How many of them have a sha256 in the index (all checked).
    pub tensor_sha256s: usize,
    pub bytes: u64,
    pub sha256: String,
    pub lossless: bool,
}

/// Decode everything, check every chunk checksum, every recorded tensor
/// sha256 and the whole file's; with `original`, also compare with that file's sha256.
pub fn verify_file(input: &Path, original: Option<&Path>, threads: usize, progress: bool) -> Result<VerifyReport> {
    let map = crate::io::Mapped::open(input)?;
    let archive = Archive::open(map.bytes()).with_context(|| input.display().to_string())?;
    let opts = DecodeOptions { check_tensor_hashes: true, check_file_hash: true, check_stored: true, progress };
    let report = crate::progress::with_threads(threads, || archive.stream(&mut std::io::sink(), &opts))??;
    let decoded_sha = report.sha256.expect("verify computes the file's sha256");
    if let Some(orig) = original {
        let sha = crate::io::sha256_file(orig)?;
        if sha != archive.index.source.sha256 {
            return Err(Error::hash_mismatch(format!(
                "{} (sha256 {sha}) is not the file this archive was made from (sha256 {})",
                orig.display(),
                archive.index.source.sha256
            )));
        }
        if archive.index.is_lossless() && sha != decoded_sha {
            return Err(Error::hash_mismatch(format!(
                "the archive decodes to sha256 {decoded_sha} but {} has {sha}",
                orig.display()
            )));
        }
    }
    Ok(VerifyReport {
        tensors: archive.index.tensors.len(),
        tensor_sha256s: archive.index.tensors.iter().filter(|t| t.has_sha256()).count(),
        bytes: report.bytes,
        sha256: decoded_sha,
        lossless: archive.index.is_lossless(),
    })
}

/// Decoding into memory the caller owns (the Python package decodes straight
/// into the arrays it returns): whole tensors, several at once, or a byte
/// range of one, decoding only the chunks that hold it.
impl Archive<'_> {
    /// The decoded byte range, relative to the tensor, of each chunk that
    /// holds tensor `t`'s bytes (its own, or those of the tensor it
    /// duplicates), in order.
    pub fn chunk_spans(&self, t: usize) -> Vec<(u64, u64)> {
        let mut at = 0u64;
        self.index.tensors[self.storage_of(t)]
            .chunks
            .iter()
            .map(|e| {
                let span = (at, at + e.decoded_len());
                at = span.1;
                span
            })
            .collect()
    }

    /// Decode tensor `t` into `out`, which must be exactly its size, chunks
    /// in parallel on the current rayon pool. Every chunk's decoded xxh3 is
    /// checked (naming the tensor on a mismatch, see [`Archive::decode_chunk`]);
    /// the tensor's sha256 too when `check_sha256`.
    pub fn read_tensor_into(&self, t: usize, out: &mut [u8], check_sha256: bool) -> Result<()> {
        self.read_tensors_into(&mut [(t, out)], check_sha256)
    }

    /// [`Archive::read_tensor_into`] for several tensors: every chunk of all
    /// of them in one parallel pass (most tensors of a model are one chunk,
    /// so a pass per tensor would leave threads idle).
    pub fn read_tensors_into(&self, targets: &mut [(usize, &mut [u8])], check_sha256: bool) -> Result<()> {
        let codecs = self.codecs_for(targets.iter().map(|(t, out)| (*t, out.len() as u64)))?;
        // Every chunk of every target: (tensor, chunk, offset in it, its bytes).
        let mut jobs: Vec<(usize, usize, u64, &mut [u8])> = Vec::new();
        for (t, out) in targets.iter_mut() {
            let mut rest: &mut [u8] = out;
            let mut offset = 0u64;
            for (c, e) in self.index.tensors[self.storage_of(*t)].chunks.iter().enumerate() {
                let (a, b) = rest.split_at_mut(e.decoded_len() as usize);
                jobs.push((*t, c, offset, a));
                offset += e.decoded_len();
                rest = b;
            }
        }
        jobs.into_par_iter().try_for_each(|(t, c, off, buf)| self.decode_chunk_of(&codecs, t, c, off, buf))?;
        if check_sha256 {
            targets.par_iter().try_for_each(|(t, out)| {
                let r = &self.index.tensors[*t];
                if r.has_sha256() && hex(&Sha256::digest(&**out)) != r.sha256 {
                    return Err(Error::hash_mismatch(format!("tensor '{}': sha256 does not match", r.name)));
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Bytes `start..end` of tensor `t` into `out` (exactly that long),
    /// decoding only the chunks that overlap the range, in parallel: those
    /// inside it straight into `out`, the one or two it cuts into a buffer
    /// of their own (a chunk is at most the archive's chunk size). Chunks
    /// hold whole rows when a row fits ([`super::chunk_ranges`]), so a range
    /// of rows decodes the chunks of those rows and no others. Checks as
    /// [`Archive::read_tensor_into`] without the sha256, which covers the
    /// whole tensor.
    pub fn read_range_into(&self, t: usize, start: u64, end: u64, out: &mut [u8]) -> Result<()> {
        let r =
            self.index.tensors.get(t).ok_or_else(|| {
                Error::invalid(format!("no tensor #{t} in an archive of {}", self.index.tensors.len()))
            })?;
        if start > end || end > r.size || out.len() as u64 != end - start {
            return Err(Error::invalid(format!(
                "bytes {start}..{end} of tensor '{}' ({} bytes) into a buffer of {}",
                r.name,
                r.size,
                out.len()
            )));
        }
        let codecs = self.codecs_for(std::iter::once((t, r.size)))?;
        let mut jobs: Vec<(usize, u64, u64, &mut [u8])> = Vec::new();
        let mut rest: &mut [u8] = out;
        for (c, (a, b)) in self.chunk_spans(t).into_iter().enumerate() {
            if b <= start || a >= end {
                continue;
            }
            let take = (b.min(end) - a.max(start)) as usize;
            let (dst, tail) = std::mem::take(&mut rest).split_at_mut(take);
            jobs.push((c, a, b, dst));
            rest = tail;
        }
        jobs.into_par_iter().try_for_each(|(c, a, b, dst)| {
            if a >= start && b <= end {
                return self.decode_chunk_of(&codecs, t, c, a, dst);
            }
            let mut buf = zeroed(b - a, || format!("allocating a chunk of {} bytes for tensor '{}'", b - a, r.name))?;
            self.decode_chunk_of(&codecs, t, c, a, &mut buf)?;
            let from = (a.max(start) - a) as usize;
            dst.copy_from_slice(&buf[from..from + dst.len()]);
            Ok(())
        })
    }

    /// The codec of every stored tensor that the `(tensor, buffer length)`
    /// targets need (by stored tensor), after checking each buffer's length.
    fn codecs_for(&self, targets: impl Iterator<Item = (usize, u64)>) -> Result<Vec<Option<Box<dyn Codec>>>> {
        let n = self.index.tensors.len();
        let mut codecs: Vec<Option<Box<dyn Codec>>> = (0..n).map(|_| None).collect();
        for (t, len) in targets {
            let r = self
                .index
                .tensors
                .get(t)
                .ok_or_else(|| Error::invalid(format!("no tensor #{t} in an archive of {n}")))?;
            if len != r.size {
                return Err(Error::invalid(format!(
                    "tensor '{}' is {} bytes, the buffer for it {len}",
                    r.name, r.size
                )));
            }
            let src = self.storage_of(t);
            if codecs[src].is_none() && !self.index.tensors[src].chunks.is_empty() {
                codecs[src] = Some(self.codec_for(src)?);
            }
        }
        Ok(codecs)
    }

    /// [`Archive::decode_chunk`] of chunk `c` of the tensor that stores
    /// `t`'s bytes, naming `t` when it is a copy.
    fn decode_chunk_of(
        &self,
        codecs: &[Option<Box<dyn Codec>>],
        t: usize,
        c: usize,
        off: u64,
        buf: &mut [u8],
    ) -> Result<()> {
        let src = self.storage_of(t);
        let codec = codecs[src].as_deref().expect("codecs_for built the codec of every stored tensor read");
        self.decode_chunk(codec, src, c, off, buf, StoredCheck::OnFailure).map_err(|e| {
            if src == t { e } else { e.context(format!("tensor '{}' (stored as a copy)", self.index.tensors[t].name)) }
        })
    }
}

#[cfg(test)]
mod read_into_tests {
    use super::*;
    use crate::container::{CompressOptions, compress};
    use crate::tensor::{DType, safetensors::serialize, synth};

    /// An archive of a 64x100 F32 tensor in 4000-byte chunks (10 rows each),
    /// a tie of it, and a small BF16 one.
    fn archive_bytes() -> (Vec<u8>, Vec<Vec<u8>>) {
        let a = synth::tensor("a", DType::F32, &[64, 100], 1);
        let mut b = synth::tensor("b", DType::F32, &[64, 100], 1);
        b.name = "b".into();
        let c = synth::tensor("c", DType::BF16, &[7, 3], 2);
        let st = serialize([a.view(), b.view(), c.view()], None).unwrap();
        let opts = CompressOptions { chunk_size: 4000, threads: 1, ..Default::default() };
        let mut out = Vec::new();
        compress(&st, "x.safetensors", &mut out, &opts).unwrap();
        (out, vec![a.data, b.data, c.data])
    }

    #[test]
    fn tensors_and_ranges_decode_into_given_buffers() {
        let (bytes, data) = archive_bytes();
        let ar = Archive::open(&bytes).unwrap();
        assert_eq!(ar.index.tensors[1].same_as, Some(0), "the tie is stored once");
        assert_eq!(ar.chunk_spans(0).len(), 7);
        assert_eq!(ar.chunk_spans(0)[1], (4000, 8000));
        let mut bufs: Vec<Vec<u8>> = data.iter().map(|d| vec![0xAA; d.len()]).collect();
        let mut targets: Vec<(usize, &mut [u8])> = bufs.iter_mut().enumerate().map(|(i, b)| (i, &mut b[..])).collect();
        ar.read_tensors_into(&mut targets, true).unwrap();
        assert_eq!(bufs, data);
        for (s, e) in [(0, 25600), (400, 800), (3999, 4001), (1200, 17600), (25596, 25600), (7, 7)] {
            let mut out = vec![0u8; (e - s) as usize];
            ar.read_range_into(1, s, e, &mut out).unwrap();
            assert_eq!(out, data[1][s as usize..e as usize], "{s}..{e}");
        }
        let mut short = vec![0u8; 3];
        assert_eq!(ar.read_tensor_into(2, &mut short, false).unwrap_err().kind(), crate::ErrorKind::InvalidInput);
        assert!(ar.read_range_into(0, 10, 25601, &mut vec![0; 25591]).is_err());
    }

    #[test]
    fn a_range_decodes_only_its_chunks() {
        let (mut bytes, data) = archive_bytes();
        // damage chunk 3 of tensor 'a' (bytes 12000..16000)
        let e = Archive::open(&bytes).unwrap().index.tensors[0].chunks[3];
        bytes[e.offset() as usize] ^= 0x40;
        let ar = Archive::open(&bytes).unwrap();
        let mut out = vec![0u8; 8000];
        ar.read_range_into(0, 4000, 12000, &mut out).unwrap();
        assert_eq!(out, data[0][4000..12000]);
        let err = ar.read_range_into(1, 11000, 13000, &mut vec![0u8; 2000]).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Corruption);
        assert!(err.message().contains("'b' (stored as a copy)") && err.message().contains("'a', chunk 3"), "{err}");
        let err = ar.read_tensor_into(0, &mut vec![0u8; 25600], false).unwrap_err();
        assert!(err.message().contains("tensor 'a', chunk 3"), "{err}");
    }
}
