//! Writing archives: safetensors in, chunks encoded in parallel, streamed out.

use super::format::*;
use super::xxh3_64;
use crate::codec::{self, ChunkInfo, Codec};
use crate::error::{Error, Result, ResultExt};
use crate::io::hex;
use crate::tensor::{SafeTensors, TensorInfo, TensorView};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;
/// The codec `weightlab compress` uses when none is given.
pub const DEFAULT_CODEC: &str = "auto";

#[derive(Debug, Clone)]
pub struct CompressOptions {
    /// Codec spec for every tensor, or `auto` to choose per tensor.
    pub codec: String,
    /// Target chunk size in bytes (chunks hold whole rows when a row fits).
    pub chunk_size: usize,
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// Store tensors whose bytes equal an earlier tensor's as a reference.
    pub dedup: bool,
    /// Decode every lossless chunk again and compare before writing it.
    pub check: bool,
    /// Record each lossless tensor's sha256 in the index. Off by default: it
    /// hashes every byte a second time (the file's sha256 is always
    /// recorded, and every chunk carries the xxh3 of its decoded bytes, which
    /// `get_tensor` and `decompress` check), and on one thread it cost a
    /// fifth of `compress` (EmbeddingGemma BF16, Xeon). Lossy tensors always
    /// record both the original's and the decoded bytes' sha256.
    pub tensor_sha256: bool,
    pub progress: bool,
}

impl Default for CompressOptions {
    fn default() -> Self {
        CompressOptions {
            codec: DEFAULT_CODEC.into(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            threads: 0,
            dedup: true,
            check: false,
            tensor_sha256: false,
            progress: false,
        }
    }
}

/// Byte ranges (relative to the tensor) of a tensor's chunks: about
/// `chunk_size` bytes, cut at whole rows when a row fits, else at element
/// boundaries.
pub fn chunk_ranges(t: &TensorInfo, chunk_size: usize) -> Vec<(u64, u64)> {
    let len = t.byte_len();
    let unit = t.dtype.split_unit() as u64;
    let chunk = chunk_size.max(1) as u64;
    let row = match (t.shape.len(), t.dtype.size()) {
        (n, Some(w)) if n >= 2 => t.shape[n - 1] * w as u64,
        _ => unit,
    };
    let step = if row > 0 && row <= chunk { (chunk / row) * row } else { (chunk / unit).max(1) * unit };
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let end = (pos + step).min(len);
        out.push((pos, end));
        pos = end;
    }
    out
}

/// Counts the bytes written through it.
struct Counting<W: Write> {
    inner: W,
    pos: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Job<'a> {
    tensor: usize,
    info: ChunkInfo<'a>,
    data: &'a [u8],
}

struct Done {
    encoded: Vec<u8>,
    /// Decoded bytes of a lossy chunk (what decompress will give).
    decoded: Option<Vec<u8>>,
}

fn encode_job(codec: &dyn Codec, job: &Job, check: bool) -> Result<Done> {
    let mut encoded = Vec::with_capacity(job.data.len() / 2);
    codec.encode(&job.info, job.data, &mut encoded)?;
    let lossy = !codec.fidelity().is_lossless();
    if !(lossy || check) {
        return Ok(Done { encoded, decoded: None });
    }
    let mut decoded = vec![0u8; job.data.len()];
    codec.decode(&job.info, &encoded, &mut decoded).context("decoding again to check")?;
    if lossy {
        // the declared bound must hold on every element, or nothing is written
        if let codec::Fidelity::Lossy { bound: Some(b) } = codec.fidelity() {
            let s = crate::metrics::error::error_stats(job.info.dtype, job.data, &decoded, Some(b))?;
            if s.bound_held == Some(false) {
                return Err(Error::bound_violated(format!(
                    "tensor '{}': codec {} broke its bound {b} on {} elements (max abs error {:e}, {} NaN/inf mismatches)",
                    job.info.name,
                    codec.spec(),
                    s.n_violations,
                    s.max_abs,
                    s.n_nonfinite_mismatch
                )));
            }
        }
        return Ok(Done { encoded, decoded: Some(decoded) });
    }
    if decoded != job.data {
        return Err(Error::corrupt(format!(
            "codec {} did not round-trip (bug in the codec): please report it",
            codec.spec()
        )));
    }
    Ok(Done { encoded, decoded: None })
}

/// Compress safetensors bytes (usually a memory map) into `out`.
/// Returns the index that was written.
pub fn compress<W: Write + Send>(file: &[u8], file_name: &str, out: W, opts: &CompressOptions) -> Result<Index> {
    if opts.chunk_size == 0 || opts.chunk_size as u64 > MAX_CHUNK_SIZE {
        return Err(Error::invalid(format!(
            "chunk size {} bytes is outside 1..={MAX_CHUNK_SIZE} (256 MiB)",
            opts.chunk_size
        )));
    }
    let st = SafeTensors::parse(file)?;
    let views: Vec<TensorView> = st.views().collect();
    let bar = crate::progress::bytes_bar(file.len() as u64, "compress", opts.progress);

    // The file's sha256 is one sequential stream (about 1.6 GB/s with
    // SHA-NI): it runs on a thread of its own beside the encoding, instead
    // of before it, and is joined at the end. Each tensor's sha256 (when
    // asked for) is taken at the sequential end as its chunks are written in
    // order; duplicates are found by a key of a few sampled bytes and a
    // comparison.
    std::thread::scope(|scope| {
        let file_hash = scope.spawn(|| hex(&Sha256::digest(file)));
        let r = compress_body(file, &st, &views, &bar, file_name, out, opts);
        let file_sha = file_hash.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        r.and_then(|finish| finish(file_sha))
    })
}

/// The part of [`compress`] that runs beside the file's hash: everything up
/// to the index, which needs that hash and is written by the returned step.
fn compress_body<'s, W: Write + Send + 's>(
    file: &'s [u8],
    st: &'s SafeTensors<'s>,
    views: &'s [TensorView<'s>],
    bar: &'s indicatif::ProgressBar,
    file_name: &'s str,
    out: W,
    opts: &'s CompressOptions,
) -> Result<impl FnOnce(String) -> Result<Index> + 's> {
    let fast: Vec<u64> = views.iter().map(|v| dedup_key(v.data)).collect();

    // The codec of each tensor (auto resolves per tensor), then duplicates:
    // a lossless tensor whose bytes equal an earlier lossless one.
    let base = codec::build(&opts.codec)?;
    // In parallel: `auto` tries codecs on a sample of every tensor.
    let codecs: Vec<Option<Box<dyn Codec>>> = views
        .par_iter()
        .map(|v| base.resolve(v).with_context(|| format!("tensor '{}'", v.name)))
        .collect::<Result<_>>()?;
    let lossless_at = |i: usize| codecs[i].as_deref().unwrap_or(base.as_ref()).fidelity().is_lossless();
    let mut same_as = vec![None; views.len()];
    if opts.dedup {
        for (i, v) in views.iter().enumerate() {
            if v.data.is_empty() || !lossless_at(i) {
                continue;
            }
            same_as[i] = (0..i)
                .find(|&j| same_as[j].is_none() && lossless_at(j) && fast[j] == fast[i] && views[j].data == v.data);
        }
    }
    let codec_of = |i: usize| -> &dyn Codec { codecs[i].as_deref().unwrap_or(base.as_ref()) };

    let mut records: Vec<TensorRecord> = Vec::with_capacity(views.len());
    for (i, (t, v)) in st.tensors.iter().zip(views).enumerate() {
        let dup = same_as[i].is_some();
        let c = codec_of(i);
        let spec = if dup { String::new() } else { c.spec() };
        let (lossless, bound) = match c.fidelity() {
            codec::Fidelity::Lossless => (true, None),
            codec::Fidelity::Lossy { bound } => (false, bound.map(|b| b.to_string())),
        };
        records.push(TensorRecord {
            name: v.name.to_string(),
            dtype: v.dtype.name().to_string(),
            shape: v.shape.to_vec(),
            stage_ids: if dup { vec![] } else { codec::stage_ids(&spec)? },
            codec: spec,
            lossless,
            bound,
            data_offset: t.start,
            size: t.byte_len(),
            sha256: String::new(), // taken as its chunks are written
            original_sha256: None,
            same_as: same_as[i],
            chunks: Vec::new(),
        });
    }

    let mut w = Counting { inner: out, pos: 0 };
    let io_err = |e: std::io::Error| Error::io("writing the archive", e);
    w.write_all(&FixedHeader { version: FORMAT_VERSION, min_reader_version: FORMAT_VERSION, flags: 0 }.to_bytes())
        .map_err(io_err)?;

    // All chunk jobs in file order.
    let jobs: Vec<Job> = st
        .tensors
        .iter()
        .zip(views)
        .enumerate()
        .filter(|(i, _)| same_as[*i].is_none())
        .flat_map(|(i, (t, v))| {
            chunk_ranges(t, opts.chunk_size).into_iter().map(move |(a, b)| Job {
                tensor: i,
                info: ChunkInfo { name: v.name, dtype: v.dtype, shape: v.shape, offset: a },
                data: &v.data[a as usize..b as usize],
            })
        })
        .collect();

    // Lossy tensors: the hash of what decoding gives, built in chunk order.
    let mut lossy_hashers: Vec<Option<Sha256>> = records.iter().map(|r| (!r.lossless).then(Sha256::new)).collect();
    // When anything is lossy, the hash of the file decompress will write,
    // built in file order: header, then every tensor's decoded bytes.
    let mut out_hasher = records.iter().any(|r| !r.lossless).then(|| Sha256::new_with_prefix(st.header_bytes));
    let mut hashed_upto = 0usize; // tensors before this one are in out_hasher
    // The chunk's checksums are taken here too, off the sequential end.
    // With one codec thread the sink has a core of its own beside it
    // (`pipelined`), so the checksums go there; with more, they stay with
    // the codec work, off the sequential end.
    let sums_in_sink = super::sink_has_own_thread();
    let sums = |d: &Done, j: &Job| (xxh3_64(&d.encoded), xxh3_64(d.decoded.as_deref().unwrap_or(j.data)));
    let encode = |j: &Job| -> Result<(Done, Option<(u64, u64)>)> {
        let d = encode_job(codec_of(j.tensor), j, opts.check)
            .with_context(|| format!("tensor '{}' at byte {}", j.info.name, j.info.offset))?;
        let s = (!sums_in_sink).then(|| sums(&d, j));
        Ok((d, s))
    };
    // Each chunk is hashed and written in order by whichever thread is free
    // while the others encode (see `pipelined`); so is each tensor's sha256
    // of its original bytes, one tensor at a time in file order.
    let mut tensor_hash: Option<(usize, Sha256)> = None;
    let mut tensor_shas: Vec<Option<String>> = vec![None; views.len()];
    let hash_tensors: Vec<bool> = records.iter().map(|r| opts.tensor_sha256 || !r.lossless).collect();
    let write = |job: &Job, d: Result<(Done, Option<(u64, u64)>)>| -> Result<()> {
        let (d, s) = d?;
        let (encoded_xxh3, decoded_xxh3) = s.unwrap_or_else(|| sums(&d, job));
        if tensor_hash.as_ref().is_some_and(|(t, _)| *t != job.tensor)
            && let Some((t, h)) = tensor_hash.take()
        {
            tensor_shas[t] = Some(hex(&h.finalize()));
        }
        if hash_tensors[job.tensor] {
            tensor_hash.get_or_insert_with(|| (job.tensor, Sha256::new())).1.update(job.data);
        }
        if let Some(h) = out_hasher.as_mut() {
            // tensors before this one that have no jobs of their own
            // (duplicates, empty ones) are lossless: hash their bytes
            hash_lossless_upto(h, views, &mut hashed_upto, job.tensor);
            h.update(d.decoded.as_deref().unwrap_or(job.data));
            hashed_upto = job.tensor + 1;
        }
        if let (Some(dec), Some(h)) = (&d.decoded, lossy_hashers[job.tensor].as_mut()) {
            h.update(dec);
        }
        let entry = ChunkEntry(w.pos, d.encoded.len() as u64, job.data.len() as u64, encoded_xxh3, decoded_xxh3);
        w.write_all(&d.encoded).map_err(io_err)?;
        records[job.tensor].chunks.push(entry);
        bar.inc(job.data.len() as u64);
        Ok(())
    };
    super::pipelined(&jobs, encode, write)?;
    if let Some((t, h)) = tensor_hash.take() {
        tensor_shas[t] = Some(hex(&h.finalize()));
    }
    // Tensors without chunks: a duplicate has its original's bytes, an
    // empty one the hash of nothing; "" where no sha256 is recorded.
    let empty = hex(&Sha256::digest([]));
    for i in 0..records.len() {
        records[i].sha256 = match (tensor_shas[i].take(), same_as[i]) {
            (Some(h), _) => h,
            (None, Some(j)) => records[j].sha256.clone(),
            (None, None) if hash_tensors[i] || views[i].data.is_empty() => empty.clone(),
            (None, None) => String::new(),
        };
    }
    for (r, h) in records.iter_mut().zip(lossy_hashers) {
        if let Some(h) = h {
            r.original_sha256 = Some(std::mem::replace(&mut r.sha256, hex(&h.finalize())));
        }
    }
    let output_sha256 = out_hasher.map(|mut h| {
        hash_lossless_upto(&mut h, views, &mut hashed_upto, views.len());
        hex(&h.finalize())
    });

    // The rest needs the file's hash.
    Ok(move |file_sha: String| {
        let (stored, raw_len) = pack_meta(st.header_bytes, "the safetensors header")?;
        let header = Section { offset: w.pos, len: stored.len() as u64, xxh3: xxh3_64(&stored), raw_len };
        w.write_all(&stored).map_err(io_err)?;
        let index = Index {
            format_version: FORMAT_VERSION,
            writer: format!("weightlab {}", env!("CARGO_PKG_VERSION")),
            source: Source { file_name: file_name.to_string(), size: file.len() as u64, sha256: file_sha.clone() },
            output_sha256: output_sha256.unwrap_or(file_sha),
            header,
            chunk_size: opts.chunk_size as u64,
            tensors: records,
        };
        let json = serde_json::to_vec(&index).map_err(|e| Error::invalid(format!("serializing the index: {e}")))?;
        let (stored, json_len) = pack_meta(&json, "the archive index")?;
        let trailer = Trailer {
            index_offset: w.pos,
            index_len: stored.len() as u64,
            index_xxh3: xxh3_64(&stored),
            index_json_len: json_len.unwrap_or(0),
        };
        w.write_all(&stored).map_err(io_err)?;
        w.write_all(&trailer.to_bytes()).map_err(io_err)?;
        w.flush().map_err(io_err)?;
        crate::progress::finish(bar);
        Ok(index)
    })
}

/// Hash the original bytes of tensors `[*done, upto)` (those without lossy
/// chunks of their own) and advance `*done`.
/// A key for finding duplicate tensors without hashing every byte: the
/// length and the xxh3 of up to three 4 KiB samples (start, middle, end).
/// Tensors with equal keys are compared whole, so a collision costs a
/// comparison, never a wrong reference; distinct tensors of a model almost
/// always differ in their first bytes, where the comparison stops.
fn dedup_key(data: &[u8]) -> u64 {
    const S: usize = 4096;
    let n = data.len();
    if n <= 3 * S {
        return xxh3_64(data) ^ n as u64;
    }
    let mid = n / 2 - S / 2;
    let mut sample = [0u8; 3 * S];
    sample[..S].copy_from_slice(&data[..S]);
    sample[S..2 * S].copy_from_slice(&data[mid..mid + S]);
    sample[2 * S..].copy_from_slice(&data[n - S..]);
    xxh3_64(&sample) ^ (n as u64).rotate_left(32)
}

fn hash_lossless_upto(h: &mut Sha256, views: &[TensorView], done: &mut usize, upto: usize) {
    for v in &views[(*done).min(upto)..upto] {
        h.update(v.data);
    }
    *done = (*done).max(upto);
}

/// Compress a safetensors file into an archive, written atomically (synced,
/// replacing an existing output).
pub fn compress_file(input: &Path, output: &Path, opts: &CompressOptions) -> Result<Index> {
    compress_file_opts(input, output, opts, &crate::io::WriteOptions::default())
}

/// [`compress_file`] with the output's sync and overwrite chosen.
pub fn compress_file_opts(
    input: &Path,
    output: &Path,
    opts: &CompressOptions,
    wopts: &crate::io::WriteOptions,
) -> Result<Index> {
    // The map holds the input: the write refuses an output that is it.
    let map = crate::io::Mapped::open(input)?;
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    compress_to_file(map.bytes(), &name, output, opts, wopts)
        .with_context(|| format!("compressing {}", input.display()))
}

/// Compress safetensors bytes held in memory (a map, stdin spooled) into
/// an archive file, written atomically.
pub fn compress_to_file(
    file: &[u8],
    file_name: &str,
    output: &Path,
    opts: &CompressOptions,
    wopts: &crate::io::WriteOptions,
) -> Result<Index> {
    let mut index = None;
    crate::progress::with_threads(opts.threads, || {
        crate::io::write_atomic_opts(output, wopts, |w| {
            index = Some(compress(file, file_name, w, opts)?);
            Ok(())
        })
    })??;
    Ok(index.expect("set on success"))
}

#[cfg(test)]
mod lossy_check_tests {
    use super::*;
    use crate::codec::{ErrorBound, Fidelity};

    /// A codec that declares abs<=1e-3 and adds 1e-2 to the first element.
    struct Liar;
    impl Codec for Liar {
        fn spec(&self) -> String {
            "liar".into()
        }
        fn fidelity(&self) -> Fidelity {
            Fidelity::Lossy { bound: Some(ErrorBound::Abs(1e-3)) }
        }
        fn encode(&self, _: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
            out.extend_from_slice(data);
            Ok(())
        }
        fn decode(&self, _: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
            out.copy_from_slice(input);
            let x = f32::from_le_bytes(out[..4].try_into().unwrap()) + 1e-2;
            out[..4].copy_from_slice(&x.to_le_bytes());
            Ok(())
        }
    }

    #[test]
    fn a_broken_bound_is_refused_naming_the_tensor() {
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let info = ChunkInfo { name: "layer.w", dtype: crate::tensor::DType::F32, shape: &[2], offset: 0 };
        let err = encode_job(&Liar, &Job { tensor: 0, info, data: &data }, false).err().unwrap();
        assert_eq!(err.kind(), crate::error::ErrorKind::BoundViolated);
        assert!(err.message().contains("layer.w"), "{err}");
        let ok = encode_job(&*codec::build("sz:abs=1e-3").unwrap(), &Job { tensor: 0, info, data: &data }, false);
        assert!(ok.is_ok());
    }
}
