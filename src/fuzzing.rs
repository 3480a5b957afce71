//! Entry points of the fuzz targets (`fuzz/`, cargo-fuzz) and of the corpus
//! replay test (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes and must
//! return, whatever they are, without panicking, aborting, hanging or
//! allocating more than a few times the sizes it was given: every rejection
//! is an `Err` of the library, which the targets drop. A panic here (an
//! `assert!` of an oracle included) is a finding.
//!
//! The targets, one function each:
//!
//! - [`codec_decode`]: a registered codec (picked by the first input byte)
//!   decodes the rest of the input into a chunk whose dtype, shape, offset
//!   and length come from the next bytes; with the round-trip flag it encodes
//!   the bytes instead and must decode them again (bit-exact when lossless).
//! - [`archive`]: [`Archive::open`] and a full decode with every check on.
//! - [`archive_index`]: a valid archive whose JSON index is mutated by the
//!   input (numbers, strings, arrays, objects), with the index checksum and
//!   trailer recomputed so that the mutation reaches the validation and the
//!   decoders; payload bytes can be changed with their chunk's xxh3 fixed.
//! - [`safetensors`]: the safetensors parser and views; a file it accepts is
//!   compressed and must decode back to the same bytes.
//! - [`ct2`]: the CTranslate2 `model.bin` parser; a model it accepts is
//!   written as safetensors, which must parse again.
//! - [`toml`]: the experiment and dataset-manifest parsers on the input as
//!   UTF-8.
//!
//! [`seeds`] makes the small valid inputs the corpora start from.

use crate::codec::{self, ChunkInfo, Codec, REGISTRY, StageKind};
use crate::container::{Archive, CompressOptions, DecodeOptions};
use crate::tensor::{DType, OwnedTensor, SafeTensors, synth};
use std::sync::OnceLock;

/// The largest chunk [`codec_decode`] decodes into.
pub const MAX_DECODED: usize = 1 << 20;
/// The largest input [`codec_decode`] encodes in its round-trip mode (the
/// slow coders, xz at level 9, must stay well inside a fuzzer's timeout).
pub const MAX_ROUND_TRIP: usize = 1 << 16;

/// A one-thread pool for the archive decodes: the same schedule every run,
/// so that a finding replays.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool"))
}

// ---------------------------------------------------------------------------
// Codecs

/// Parameter sets that the default spec of a stage does not reach.
const EXTRA_SPECS: &[&str] = &[
    "zstd:level=-7",
    "zstd:level=19,long=27",
    "xz:level=0",
    "xz:level=9,extreme=true",
    "deflate:level=0",
    "deflate:level=9",
    "planes>raw",
    "planes>lz4",
    "planes>exp:gain=0",
    "exp:gain=0",
    "exp:gain=100",
    "sz:abs=0.01",
    "sz:abs=1e-6,pred=none",
    "sz:abs=0.001,pred=prev",
    "sz:rel=0.001,pred=above",
    "sz:rel=0.01,pred=lorenzo2d",
    "sz:abs=0.01,coder=next>lz4",
    "sz:rel=0.0001,coder=next>planes>zstd:level=1",
    "int8",
    "int8:block=1",
    "int8:block=7,scale=f16",
    "int8:block=64,scale=dtype,select=all",
    "int4",
    "int4:block=1,select=all",
    "int4:block=33,scale=f16,select=all",
    "round:bits=0",
    "round:bits=7",
    "round:bits=23>raw",
    "round:bits=52>planes>lz4",
    "blosc2",
    "blosc2:codec=lz4,level=9,shuffle=bit",
    "blosc2:codec=blosclz,level=1,shuffle=none",
    "blosc2:codec=zlib,shuffle=byte",
    "blosc2:codec=lz4hc",
];

/// Every spec the codec target picks from: each registered stage at its
/// defaults (a transform also in front of `raw` and `lz4`), its examples,
/// then [`EXTRA_SPECS`]. The list is the same in every build, so that a
/// corpus file means the same case with and without features; a spec this
/// build cannot make (blosc2 without the feature) is `None`.
pub fn codec_candidates() -> &'static [(String, Option<String>)] {
    static SPECS: OnceLock<Vec<(String, Option<String>)>> = OnceLock::new();
    SPECS.get_or_init(|| {
        let mut candidates: Vec<String> = Vec::new();
        for d in REGISTRY.iter().filter(|d| d.name != "blosc2") {
            candidates.push(d.name.to_string());
            if d.kind == StageKind::Transform {
                candidates.push(format!("{}>raw", d.name));
                candidates.push(format!("{}>lz4", d.name));
            }
            candidates.extend(d.examples.iter().map(|s| s.to_string()));
        }
        candidates.extend(EXTRA_SPECS.iter().map(|s| s.to_string()));
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for c in candidates {
            if out.iter().any(|(s, _)| *s == c) {
                continue;
            }
            let built = codec::build(&c).ok().map(|codec| codec.spec());
            out.push((c, built));
        }
        out
    })
}

/// The canonical specs this build fuzzes (the buildable candidates).
pub fn codec_specs() -> Vec<String> {
    codec_candidates().iter().filter_map(|(_, b)| b.clone()).collect()
}

fn built_codecs() -> &'static [Option<Box<dyn Codec>>] {
    static CODECS: OnceLock<Vec<Option<Box<dyn Codec>>>> = OnceLock::new();
    CODECS.get_or_init(|| codec_candidates().iter().map(|(c, _)| codec::build(c).ok()).collect())
}

/// The fixed part of a [`codec_decode`] input, before the stream.
pub const CODEC_HEADER_LEN: usize = 10;

/// How a [`codec_decode`] input is laid out: 10 bytes, then the stream (or,
/// with `round_trip`, the bytes to encode).
#[derive(Debug, Clone, Copy)]
pub struct CodecCase {
    /// Index into [`codec_candidates`] (taken modulo its length).
    pub spec: u8,
    /// Index into [`DType::ALL`] (modulo).
    pub dtype: u8,
    /// Shape of the tensor: 0 one dimension, 1 two, 2 a scalar when the chunk
    /// fits one element, 3 three dimensions.
    pub rank: u8,
    pub round_trip: bool,
    /// The chunk's decoded length in bytes (modulo `MAX_DECODED + 1`; unused in
    /// the round-trip mode, where it is the data's length).
    pub len: u32,
    /// Last dimension for ranks 1 and 3 (0 counts as 1).
    pub cols: u16,
    /// The chunk's offset in the tensor, in split units of the dtype.
    pub offset_units: u16,
}

impl CodecCase {
    pub fn parse(b: &[u8]) -> Option<(CodecCase, &[u8])> {
        if b.len() < CODEC_HEADER_LEN {
            return None;
        }
        let case = CodecCase {
            spec: b[0],
            dtype: b[1],
            rank: b[2] & 3,
            round_trip: b[2] & 0x80 != 0,
            len: u32::from_le_bytes([b[3], b[4], b[5], 0]),
            cols: u16::from_le_bytes([b[6], b[7]]),
            offset_units: u16::from_le_bytes([b[8], b[9]]),
        };
        Some((case, &b[CODEC_HEADER_LEN..]))
    }

    pub fn to_bytes(&self) -> [u8; CODEC_HEADER_LEN] {
        let l = self.len.to_le_bytes();
        let c = self.cols.to_le_bytes();
        let o = self.offset_units.to_le_bytes();
        [
            self.spec,
            self.dtype,
            self.rank | if self.round_trip { 0x80 } else { 0 },
            l[0],
            l[1],
            l[2],
            c[0],
            c[1],
            o[0],
            o[1],
        ]
    }

    fn dtype(&self) -> DType {
        DType::ALL[self.dtype as usize % DType::ALL.len()]
    }

    /// The tensor's shape and the chunk's byte offset for a chunk of `len`
    /// bytes: a tensor just large enough to hold the offset and the chunk,
    /// as an archive's validation guarantees (the chunk lies inside it).
    fn layout(&self, len: usize) -> (Vec<u64>, u64) {
        let d = self.dtype();
        let offset = self.offset_units as u64 * d.split_unit() as u64;
        let bits = d.bits() as u64;
        let need = (offset + len as u64) * 8;
        let mut numel = need.div_ceil(bits);
        // whole bytes: sub-byte dtypes pad to an element count that fills them
        while d.byte_len(numel).is_err() {
            numel += 1;
        }
        let cols = (self.cols as u64).max(1);
        let shape = match self.rank {
            0 => vec![numel],
            1 => vec![numel.div_ceil(cols), cols],
            2 if numel <= 1 => vec![],
            2 => vec![numel],
            _ => vec![2, numel.div_ceil(2 * cols), cols],
        };
        (shape, offset)
    }
}

/// Target (a): a registered codec on arbitrary bytes.
pub fn codec_decode(data: &[u8]) {
    let Some((case, rest)) = CodecCase::parse(data) else { return };
    let codecs = built_codecs();
    let Some(codec) = codecs[case.spec as usize % codecs.len()].as_deref() else { return };
    let dtype = case.dtype();
    if case.round_trip {
        let input = &rest[..rest.len().min(MAX_ROUND_TRIP)];
        let (shape, offset) = case.layout(input.len());
        let info = ChunkInfo { name: "fuzz.weight", dtype, shape: &shape, offset };
        let mut enc = Vec::new();
        if codec.encode(&info, input, &mut enc).is_err() {
            return;
        }
        let mut out = vec![0u8; input.len()];
        if let Err(e) = codec.decode(&info, &enc, &mut out) {
            panic!(
                "{}: {} bytes of {dtype} {shape:?} at {offset} encode but do not decode: {e}",
                codec.spec(),
                input.len()
            );
        }
        if codec.fidelity().is_lossless() {
            assert!(out == input, "{}: lossless round trip changed the bytes", codec.spec());
        }
        hashes_what_it_decodes(codec, &info, &enc, &out);
    } else {
        let len = case.len as usize % (MAX_DECODED + 1);
        let (shape, offset) = case.layout(len);
        let info = ChunkInfo { name: "fuzz.weight", dtype, shape: &shape, offset };
        let mut out = vec![0u8; len];
        if codec.decode(&info, rest, &mut out).is_ok() {
            hashes_what_it_decodes(codec, &info, rest, &out);
        }
    }
}

/// `decode_xxh3` (which a codec may fuse with its decode) decodes what
/// `decode` did into `out` and returns its xxh3: the archive's reads check
/// a chunk by that hash alone.
fn hashes_what_it_decodes(codec: &dyn Codec, info: &ChunkInfo, enc: &[u8], out: &[u8]) {
    let mut again = vec![0u8; out.len()];
    match codec.decode_xxh3(info, enc, &mut again) {
        Ok(h) => {
            assert!(again == out, "{}: decode_xxh3 decoded other bytes than decode", codec.spec());
            assert_eq!(h, crate::container::xxh3_64(out), "{}: decode_xxh3 returned another hash", codec.spec());
        }
        Err(e) => panic!("{}: decode succeeded, decode_xxh3 failed: {e}", codec.spec()),
    }
}

// ---------------------------------------------------------------------------
// Archives

/// Open an archive and decode everything, as `verify` does, then every
/// tensor by random access, as `extract` does.
fn open_and_decode(bytes: &[u8]) {
    let Ok(archive) = Archive::open(bytes) else { return };
    let opts = DecodeOptions { check_tensor_hashes: true, check_file_hash: true, check_stored: true, progress: false };
    let streamed = pool().install(|| archive.stream(&mut std::io::sink(), &opts));
    for t in 0..archive.index.tensors.len().min(64) {
        let r = pool().install(|| archive.read_tensor(t));
        if streamed.is_ok() {
            // whatever decoded in full decodes one tensor at a time too
            if let Err(e) = r {
                panic!("the archive streams, but tensor {t} does not decode on its own: {e}");
            }
        }
    }
}

/// Target (b): arbitrary bytes as an archive.
pub fn archive(data: &[u8]) {
    open_and_decode(data);
}

/// The small valid archives [`archive_index`] mutates: the synthetic model
/// compressed with several codecs at small chunk sizes.
pub fn base_archives() -> &'static [Vec<u8>] {
    static BASES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BASES.get_or_init(|| {
        let file = small_safetensors(7);
        let mut out = Vec::new();
        for (codec, chunk) in [
            ("raw", 256usize),
            ("zstd:level=1", 512),
            ("planes>lz4", 300),
            ("exp", 1024),
            ("auto", 4096),
            ("sz:abs=0.01", 512),
            ("int8:block=16", 512),
            ("round:bits=5>raw", 700),
        ] {
            out.push(compress_bytes(&file, codec, chunk).expect("the synthetic model compresses"));
        }
        out
    })
}

/// A small model-like safetensors file: a few tensors of common dtypes, a
/// tied pair, an empty tensor and a scalar.
pub fn small_safetensors(seed: u64) -> Vec<u8> {
    let mut ts = vec![
        synth::tensor("a.weight", DType::BF16, &[16, 24], seed),
        synth::tensor("a.bias", DType::F32, &[24], seed + 1),
        synth::tensor("b.weight", DType::F16, &[8, 33], seed + 2),
        synth::tensor("mask", DType::U8, &[40], seed + 3),
        synth::tensor("c", DType::F64, &[3, 5], seed + 4),
        synth::tensor("q", DType::I8, &[2, 64], seed + 5),
        synth::tensor("f4", DType::F4, &[4, 16], seed + 6),
    ];
    let tied = ts[0].data.clone();
    ts.push(OwnedTensor::new("lm_head.weight", DType::BF16, vec![16, 24], tied));
    ts.push(OwnedTensor::new("empty", DType::F32, vec![0, 3], vec![]));
    ts.push(synth::tensor("scalar", DType::F32, &[], seed + 7));
    crate::tensor::safetensors::serialize(ts.iter().map(|t| t.view()), None).expect("a valid model")
}

fn compress_bytes(file: &[u8], codec: &str, chunk_size: usize) -> crate::Result<Vec<u8>> {
    let opts = CompressOptions { codec: codec.into(), chunk_size, threads: 1, ..Default::default() };
    let mut out = Vec::new();
    pool().install(|| crate::container::compress(file, "fuzz.safetensors", &mut out, &opts))?;
    Ok(out)
}

/// Target (c): a base archive (picked by the first byte) whose JSON index is
/// mutated by the rest of the input, re-framed with valid checksums.
pub fn archive_index(data: &[u8]) {
    let Some((&pick, ops)) = data.split_first() else { return };
    let bases = base_archives();
    let base = &bases[pick as usize % bases.len()];
    if let Some(mutated) = index_mutator::mutate(base, ops) {
        open_and_decode(&mutated);
    }
}

/// The JSON-aware index mutations of [`archive_index`].
pub mod index_mutator {
    use crate::container::format::{HEADER_LEN, TRAILER_LEN, Trailer, unpack_meta};
    use crate::container::xxh3_64;
    use serde_json::Value;

    /// Reads the mutation program: bytes as small integers, zero when out.
    struct Ops<'a>(&'a [u8]);
    impl Ops<'_> {
        fn u8(&mut self) -> Option<u8> {
            let (&b, rest) = self.0.split_first()?;
            self.0 = rest;
            Some(b)
        }
        fn u16(&mut self) -> u16 {
            u16::from_le_bytes([self.u8().unwrap_or(0), self.u8().unwrap_or(0)])
        }
        fn u64(&mut self) -> u64 {
            (0..8).fold(0u64, |a, i| a | (self.u8().unwrap_or(0) as u64) << (8 * i))
        }
    }

    /// Paths to every value of the tree, in a fixed order (depth first).
    fn paths(v: &Value, at: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        out.push(at.clone());
        match v {
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    at.push(i);
                    paths(x, at, out);
                    at.pop();
                }
            }
            Value::Object(m) => {
                for (i, (_, x)) in m.iter().enumerate() {
                    at.push(i);
                    paths(x, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    fn get_mut<'a>(v: &'a mut Value, path: &[usize]) -> Option<&'a mut Value> {
        let Some((&i, rest)) = path.split_first() else { return Some(v) };
        match v {
            Value::Array(a) => get_mut(a.get_mut(i)?, rest),
            Value::Object(m) => get_mut(m.values_mut().nth(i)?, rest),
            _ => None,
        }
    }

    fn get<'a>(v: &'a Value, path: &[usize]) -> Option<&'a Value> {
        let Some((&i, rest)) = path.split_first() else { return Some(v) };
        match v {
            Value::Array(a) => get(a.get(i)?, rest),
            Value::Object(m) => get(m.values().nth(i)?, rest),
            _ => None,
        }
    }

    const NUMBERS: &[u64] = &[
        0,
        1,
        2,
        7,
        8,
        31,
        32,
        33,
        255,
        256,
        4096,
        65535,
        1 << 20,
        (1 << 31) - 1,
        1 << 31,
        1 << 32,
        (1 << 32) + 1,
        1 << 40,
        1 << 62,
        1 << 63,
        u64::MAX / 2,
        u64::MAX - 1,
        u64::MAX,
    ];

    const STRINGS: &[&str] = &[
        "",
        "F32",
        "BF16",
        "F4",
        "U8",
        "C64",
        "F6E2M3",
        "F8E8M0",
        "BOOL",
        "raw",
        "zstd:level=99",
        "zstd:level=22",
        "int8:block=0",
        "int4:block=16777216",
        "sz:abs=0.01",
        "sz:abs=1e300",
        "round:bits=53",
        "planes>raw",
        "planes>planes>raw",
        "exp:gain=2",
        "auto",
        "const",
        "table",
        "blosc2:codec=lz4",
        "nope",
        "zstd>lz4",
        "abs<=1e-2",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ];

    /// Apply one mutation; false when the program is used up.
    fn step(index: &mut Value, ops: &mut Ops) -> bool {
        let Some(kind) = ops.u8() else { return false };
        let mut all = Vec::new();
        paths(index, &mut Vec::new(), &mut all);
        let target = all[ops.u16() as usize % all.len()].clone();
        let donor = all[ops.u16() as usize % all.len()].clone();
        let donor_value = get(index, &donor).cloned().unwrap_or(Value::Null);
        let arg = ops.u64();
        let Some(v) = get_mut(index, &target) else { return true };
        match kind % 12 {
            // a number: an interesting value, a small step, a scaled value
            0 => *v = Value::from(NUMBERS[arg as usize % NUMBERS.len()]),
            1 => {
                if let Some(n) = v.as_u64() {
                    let d = (arg & 0xff) as i64 - 128;
                    *v = Value::from(n.wrapping_add_signed(d));
                } else if let Some(x) = v.as_f64() {
                    *v = Value::from(x + (arg as i8) as f64);
                }
            }
            2 => {
                if let Some(n) = v.as_u64() {
                    *v = Value::from(if arg & 1 == 0 {
                        n.wrapping_mul(2 + (arg >> 1) % 4096)
                    } else {
                        n / (2 + (arg >> 1) % 7)
                    });
                }
            }
            // another value of the index (an offset, a hash, a record) in its place
            3 => *v = donor_value,
            // a string: an interesting one, cut, grown
            4 => *v = Value::from(STRINGS[arg as usize % STRINGS.len()]),
            5 => {
                if let Some(s) = v.as_str() {
                    let cut =
                        s.char_indices().map(|(i, _)| i).nth(arg as usize % (s.chars().count() + 1)).unwrap_or(s.len());
                    *v = Value::from(&s[..cut]);
                }
            }
            6 => {
                if let Some(s) = v.as_str() {
                    let add = STRINGS[arg as usize % STRINGS.len()];
                    *v = Value::from(format!("{s}{}{add}", if arg & 0x100 != 0 { ">" } else { "," }));
                }
            }
            // arrays: remove, duplicate, swap, append a donor
            7 => {
                if let Value::Array(a) = v
                    && !a.is_empty()
                {
                    a.remove(arg as usize % a.len());
                }
            }
            8 => {
                if let Value::Array(a) = v
                    && !a.is_empty()
                {
                    let i = arg as usize % a.len();
                    let x = a[i].clone();
                    let times = 1 + (arg >> 32) as usize % 4;
                    for _ in 0..times {
                        a.insert(i, x.clone());
                    }
                }
            }
            9 => {
                if let Value::Array(a) = v
                    && a.len() >= 2
                {
                    let n = a.len();
                    a.swap(arg as usize % n, (arg >> 32) as usize % n);
                } else if let Value::Array(a) = v {
                    a.push(donor_value);
                }
            }
            // objects: remove a key, or add a donor under a key of the index
            10 => {
                if let Value::Object(m) = v
                    && !m.is_empty()
                {
                    let k = m.keys().nth(arg as usize % m.len()).cloned().expect("in range");
                    m.remove(&k);
                } else {
                    *v = Value::Null;
                }
            }
            _ => {
                let keys = ["same_as", "bound", "original_sha256", "file_name", "extra", "size"];
                if let Value::Object(m) = v {
                    m.insert(keys[arg as usize % keys.len()].to_string(), donor_value);
                } else if let Value::Array(a) = v {
                    a.push(donor_value);
                } else {
                    *v = Value::from(vec![donor_value]);
                }
            }
        }
        true
    }

    /// Change the payload bytes and fix the xxh3 of the chunk(s) holding them,
    /// so that the codec sees the change.
    fn payload_edit(bytes: &mut [u8], index: &mut Value, ops: &mut Ops, data_end: usize) {
        let span = data_end.saturating_sub(HEADER_LEN);
        if span == 0 {
            return;
        }
        let at = HEADER_LEN + ops.u16() as usize * 31 % span;
        let x = ops.u8().unwrap_or(1);
        bytes[at] ^= x.max(1);
        let Some(tensors) = index.get_mut("tensors").and_then(Value::as_array_mut) else { return };
        for t in tensors {
            let Some(chunks) = t.get_mut("chunks").and_then(Value::as_array_mut) else { continue };
            for c in chunks {
                let Some(e) = c.as_array_mut() else { continue };
                let (Some(off), Some(len)) = (e.first().and_then(Value::as_u64), e.get(1).and_then(Value::as_u64))
                else {
                    continue;
                };
                let Some(end) = off.checked_add(len) else { continue };
                if (off as usize) <= at && (at as u64) < end && end as usize <= data_end && e.len() > 3 {
                    e[3] = Value::from(xxh3_64(&bytes[off as usize..end as usize]));
                }
            }
        }
    }

    /// A copy of the archive `base` with its index mutated by `program` and
    /// the trailer rewritten (index length and xxh3) to match; `None` if
    /// `base` has no parsable index.
    pub fn mutate(base: &[u8], program: &[u8]) -> Option<Vec<u8>> {
        let trailer = Trailer::parse(base).ok()?;
        let start = usize::try_from(trailer.index_offset).ok()?;
        let end = base.len().checked_sub(TRAILER_LEN)?;
        if start > end {
            return None;
        }
        // a stored (zstd) index is mutated as JSON and written back as JSON
        let json = match trailer.index_json_len {
            0 => base[start..end].to_vec(),
            n => unpack_meta(&base[start..end], n, "index").ok()?,
        };
        let mut index: Value = serde_json::from_slice(&json).ok()?;
        let mut bytes = base[..start].to_vec();
        let mut ops = Ops(program);
        for _ in 0..64 {
            // one in eight steps edits a payload byte instead of the index
            if ops.0.first().is_some_and(|b| b & 0xe0 == 0xe0) {
                ops.u8();
                payload_edit(&mut bytes, &mut index, &mut ops, start);
            } else if !step(&mut index, &mut ops) {
                break;
            }
        }
        let json = serde_json::to_vec(&index).ok()?;
        let t = Trailer {
            index_offset: start as u64,
            index_len: json.len() as u64,
            index_xxh3: xxh3_64(&json),
            index_json_len: 0,
        };
        bytes.extend_from_slice(&json);
        bytes.extend_from_slice(&t.to_bytes());
        Some(bytes)
    }
}

// ---------------------------------------------------------------------------
// Input files

/// Target (d): arbitrary bytes as a safetensors file. A file the parser
/// accepts must compress (with a codec picked by the file's hash, at a chunk
/// size that makes several chunks) and decode back to the same bytes.
pub fn safetensors(data: &[u8]) {
    let Ok(st) = SafeTensors::parse(data) else { return };
    let mut sum = 0u64;
    for v in st.views() {
        assert_eq!(
            v.data.len() as u64,
            v.dtype.byte_len(crate::tensor::numel(v.shape).unwrap_or(0)).unwrap_or(u64::MAX)
        );
        sum = sum.wrapping_add(v.data.iter().map(|&b| b as u64).sum::<u64>());
        assert!(st.get(v.name).is_some());
    }
    std::hint::black_box(sum);
    assert!(st.total_len() <= data.len() as u64);
    let total: u64 = st.tensors.iter().map(|t| t.byte_len()).sum();
    if total > 4 << 20 {
        return;
    }
    let h = crate::container::xxh3_64(data);
    let specs = ["raw", "lz4", "zstd:level=1", "planes>lz4", "exp", "auto"];
    let spec = specs[h as usize % specs.len()];
    let chunk = [64usize, 100, 1000, 4096][(h >> 8) as usize % 4];
    let archive = match compress_bytes(data, spec, chunk) {
        Ok(a) => a,
        // a tensor a codec cannot take (a dtype it refuses) is fine
        Err(e) if matches!(e.kind(), crate::ErrorKind::InvalidInput | crate::ErrorKind::Unsupported) => return,
        Err(e) => panic!("a parsed safetensors file does not compress with {spec}: {e}"),
    };
    let a = Archive::open(&archive).unwrap_or_else(|e| panic!("a fresh archive ({spec}) does not open: {e}"));
    let mut out = Vec::new();
    let opts = DecodeOptions { check_tensor_hashes: true, check_file_hash: true, check_stored: true, progress: false };
    pool()
        .install(|| a.stream(&mut out, &opts))
        .unwrap_or_else(|e| panic!("a fresh archive ({spec}) does not decode: {e}"));
    assert!(
        out == data,
        "{spec}: the decoded file ({} bytes) differs from the input ({} bytes)",
        out.len(),
        data.len()
    );
}

/// Target (e): arbitrary bytes as a CTranslate2 `model.bin`; what parses is
/// written as safetensors (as `import` does), which must parse again.
pub fn ct2(data: &[u8]) {
    let Ok(model) = crate::datasets::ct2::parse(data) else { return };
    let meta = model.metadata("0000");
    match crate::tensor::safetensors::serialize(model.views(), Some(&meta)) {
        Ok(st) => {
            let back = SafeTensors::parse(&st).unwrap_or_else(|e| panic!("imported model does not parse: {e}"));
            assert_eq!(back.tensors.len(), model.variables.len());
        }
        // refused as malformed input (a name safetensors cannot hold): exit 2
        Err(e) if e.kind() == crate::ErrorKind::InvalidInput => {}
        Err(e) => panic!("a parsed model does not serialize as safetensors: {e}"),
    }
}

/// Target (f): the input as UTF-8 text, parsed both as an experiment and as
/// a dataset manifest.
pub fn toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = crate::experiment::Experiment::parse(text, "fuzz.toml", std::path::Path::new("fuzzdir"));
    if let Ok(m) = crate::datasets::Manifest::parse(text, "fuzz.toml") {
        let _ = m.declared_variants();
        for f in &m.files {
            for mirror in &f.mirrors {
                let _ = mirror.describe();
            }
        }
    }
}

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// The targets by name, as the corpus directories are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("codec_decode", codec_decode),
    ("archive", archive),
    ("archive_index", archive_index),
    ("safetensors", safetensors),
    ("ct2", ct2),
    ("toml", toml),
];

/// Small valid inputs for each target's corpus.
pub mod seeds {
    use super::*;

    /// Named seed inputs of `target` (a name of [`TARGETS`]).
    pub fn for_target(target: &str) -> Vec<(String, Vec<u8>)> {
        match target {
            "codec_decode" => codec(),
            "archive" => {
                base_archives().iter().enumerate().map(|(i, a)| (format!("synth-{i}.wlab"), a.clone())).collect()
            }
            "archive_index" => (0..base_archives().len() as u8).map(|i| (format!("base-{i}"), vec![i])).collect(),
            "safetensors" => vec![("small.safetensors".into(), small_safetensors(3))],
            "ct2" => ct2_models(),
            _ => Vec::new(),
        }
    }

    /// For every spec, a stream it wrote for a few dtypes and shapes, in the
    /// decode layout, and the same bytes in the round-trip layout.
    fn codec() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let cases: [(DType, u8, u16, usize); 4] =
            [(DType::BF16, 1, 32, 256), (DType::F32, 0, 0, 100), (DType::U8, 1, 16, 64), (DType::F16, 3, 8, 48)];
        for (i, (spec, built)) in codec_candidates().iter().enumerate() {
            if built.is_none() {
                continue;
            }
            let codec = codec::build(spec).expect("built before");
            for (j, &(dtype, rank, cols, n)) in cases.iter().enumerate() {
                let d = DType::ALL.iter().position(|&x| x == dtype).expect("listed") as u8;
                let data = synth::tensor_bytes(dtype, n, 11 + j as u64);
                let mut case = CodecCase {
                    spec: i as u8,
                    dtype: d,
                    rank,
                    round_trip: false,
                    len: data.len() as u32,
                    cols,
                    offset_units: 0,
                };
                let (shape, offset) = case.layout(data.len());
                let info = ChunkInfo { name: "seed.weight", dtype, shape: &shape, offset };
                let mut enc = Vec::new();
                if codec.encode(&info, &data, &mut enc).is_ok() {
                    out.push((
                        format!("{spec}-{dtype}-{j}").replace(['>', ':', ',', '='], "_"),
                        [&case.to_bytes()[..], &enc].concat(),
                    ));
                }
                if j == 0 {
                    case.round_trip = true;
                    out.push((
                        format!("rt-{spec}").replace(['>', ':', ',', '='], "_"),
                        [&case.to_bytes()[..], &data].concat(),
                    ));
                }
            }
        }
        out
    }

    fn ct2_models() -> Vec<(String, Vec<u8>)> {
        let ts = [
            synth::tensor("encoder/w", DType::F32, &[4, 6], 1),
            synth::tensor("encoder/b", DType::F16, &[6], 2),
            synth::tensor("decoder/q", DType::I8, &[3, 3], 3),
            synth::tensor("decoder/e", DType::BF16, &[2, 5], 4),
        ];
        let views: Vec<_> = ts.iter().map(|t| t.view()).collect();
        let mut out = Vec::new();
        if let Ok(b) = crate::datasets::ct2::write("TransformerSpec", 3, &views, &[("decoder/proj", "encoder/w")]) {
            out.push(("model.bin".into(), b));
        }
        if let Ok(b) = crate::datasets::ct2::write("WhisperSpec", 1, &views[..1], &[]) {
            out.push(("one.bin".into(), b));
        }
        out
    }
}
