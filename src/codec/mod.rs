//! Codecs: the object-safe [`Codec`] trait, spec strings (`zstd:level=19`,
//! `planes>zstd:level=3`), and the registry of stages with stable numeric ids.
//!
//! A spec is a chain of stages separated by `>`. A *transform* stage (planes,
//! a float splitter, a lossy quantizer) produces byte streams and hands each to
//! the stage after it; a *coder* stage (zstd, lz4, …) ends the chain. The
//! registry builds the chain from the right, so every stage owns the stage
//! after it. The canonical spec (every parameter spelled out with its value)
//! is the `codec` column of every table and is what the archive records.

pub mod auto;
#[cfg(feature = "blosc2")]
pub mod blosc2;
pub mod entropy;
pub mod float;
pub mod lossless;
pub mod lossy;
pub mod lowprec;
pub mod planes;
pub mod simd;

use crate::error::{Error, Result};
use crate::tensor::{DType, TensorView};
use std::collections::BTreeMap;
use std::fmt;

/// Where a chunk sits: the tensor it belongs to and its byte offset there.
/// Encode and decode see the same info, so a codec may use the tensor's name,
/// dtype and shape (row length for 2-D predictors, name patterns for selective
/// quantization) without storing them.
#[derive(Debug, Clone, Copy)]
pub struct ChunkInfo<'a> {
    pub name: &'a str,
    pub dtype: DType,
    /// Shape of the whole tensor.
    pub shape: &'a [u64],
    /// Byte offset of this chunk inside the tensor (a multiple of the dtype's
    /// split unit; the container also aligns chunks to whole rows when it can).
    pub offset: u64,
}

impl<'a> ChunkInfo<'a> {
    pub fn whole(t: &TensorView<'a>) -> Self {
        ChunkInfo { name: t.name, dtype: t.dtype, shape: t.shape, offset: 0 }
    }
    /// Convenience for tests and byte streams: an anonymous U8 chunk.
    pub fn bytes() -> ChunkInfo<'static> {
        ChunkInfo { name: "", dtype: DType::U8, shape: &[], offset: 0 }
    }
    /// The same chunk seen as plain bytes (what a transform hands to its coder).
    pub fn as_bytes(&self) -> ChunkInfo<'a> {
        ChunkInfo { dtype: DType::U8, ..*self }
    }
}

/// A declared error bound of a lossy codec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorBound {
    /// |x - x'| <= e for every element.
    Abs(f64),
    /// |x - x'| <= e * (max - min) of the tensor (SZ's value-range relative mode).
    ValueRangeRel(f64),
    /// |x - x'| <= e * |x| for every element.
    PointwiseRel(f64),
}

impl fmt::Display for ErrorBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorBound::Abs(e) => write!(f, "abs<={e:e}"),
            ErrorBound::ValueRangeRel(e) => write!(f, "range-rel<={e:e}"),
            ErrorBound::PointwiseRel(e) => write!(f, "rel<={e:e}"),
        }
    }
}

/// Whether a codec gives back the same bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fidelity {
    Lossless,
    /// Lossy, with the bound it guarantees (None: no guaranteed bound, e.g. int4;
    /// its errors are measured and reported all the same).
    Lossy {
        bound: Option<ErrorBound>,
    },
}

impl Fidelity {
    pub fn is_lossless(&self) -> bool {
        matches!(self, Fidelity::Lossless)
    }
}

/// A codec: object-safe so the runner holds `Vec<Box<dyn Codec>>` built from
/// spec strings. Implementations keep their dtype-generic code inside.
pub trait Codec: Send + Sync {
    /// Canonical spec string, every parameter spelled out (`zstd:level=3`).
    fn spec(&self) -> String;
    fn fidelity(&self) -> Fidelity;
    /// Encode one chunk of a tensor, appending to `out`.
    fn encode(&self, info: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()>;
    /// Decode `input` into `out`, which has exactly the chunk's original byte
    /// length. Must never panic on malformed input: return an error instead.
    fn decode(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()>;
    /// [`Codec::decode`], returning the xxh3-64 of `out` (which the archive
    /// checks). A codec that writes its output in one pass overrides this to
    /// hash each piece while it is still in cache: hashing a 4 MiB chunk
    /// after it is written reads it back from memory, at 11 GB/s against
    /// 38 GB/s for 64 KiB in cache (twox-hash, one core of a 2-core Xeon).
    /// `cargo bench --bench float -- BF16/decode` on that Xeon, `exp` on a
    /// 4 MiB BF16 chunk: decode 1.361 ms, decode then xxh3 1.515 ms,
    /// `decode_xxh3` 1.409 ms (a third of the hashing's cost, with the
    /// bench's output buffer warm in cache).
    fn decode_xxh3(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<u64> {
        self.decode(info, input, out)?;
        Ok(crate::container::xxh3_64(out))
    }
    /// A meta-codec (`auto`) picks a concrete codec for a tensor; the archive
    /// records the pick. Concrete codecs return `None`.
    fn resolve(&self, _t: &TensorView) -> Result<Option<Box<dyn Codec>>> {
        Ok(None)
    }
}

impl fmt::Debug for dyn Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Codec({})", self.spec())
    }
}

/// Encode a whole buffer as one chunk (tests, benches, the runner).
pub fn encode_all(c: &dyn Codec, info: &ChunkInfo, data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    c.encode(info, data, &mut out)?;
    Ok(out)
}

/// Decode a whole buffer of known length.
pub fn decode_all(c: &dyn Codec, info: &ChunkInfo, input: &[u8], len: usize) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    c.decode(info, input, &mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Spec strings

/// One stage of a spec: a name and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageSpec {
    pub name: String,
    pub params: BTreeMap<String, String>,
}

/// A parsed spec: stages separated by `>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecSpec {
    pub stages: Vec<StageSpec>,
}

impl CodecSpec {
    pub fn parse(s: &str) -> Result<CodecSpec> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::invalid("empty codec spec"));
        }
        let stages = s.split('>').map(|part| StageSpec::parse(part.trim(), s)).collect::<Result<_>>()?;
        Ok(CodecSpec { stages })
    }
}

impl StageSpec {
    fn parse(part: &str, whole: &str) -> Result<StageSpec> {
        let (name, rest) = match part.split_once(':') {
            Some((n, r)) => (n.trim(), Some(r)),
            None => (part, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(Error::invalid(format!("bad stage name '{name}' in codec spec '{whole}'")));
        }
        let mut params = BTreeMap::new();
        if let Some(rest) = rest {
            for kv in rest.split(',').map(str::trim).filter(|kv| !kv.is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    Error::invalid(format!("parameter '{kv}' of '{name}' in '{whole}' is not key=value"))
                })?;
                if params.insert(k.trim().to_string(), v.trim().to_string()).is_some() {
                    return Err(Error::invalid(format!("parameter '{k}' given twice in '{whole}'")));
                }
            }
        }
        Ok(StageSpec { name: name.to_string(), params })
    }
}

impl fmt::Display for StageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (i, (k, v)) in self.params.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { ':' } else { ',' })?;
        }
        Ok(())
    }
}

impl fmt::Display for CodecSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.stages.iter().enumerate() {
            if i > 0 {
                f.write_str(">")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// A stage's parameters being read by its builder: typed getters with
/// defaults, and an error for any parameter the builder did not read.
pub struct Params<'a> {
    stage: &'a str,
    map: BTreeMap<String, String>,
}

impl<'a> Params<'a> {
    pub fn new(stage: &'a StageSpec) -> Self {
        Params { stage: &stage.name, map: stage.params.clone() }
    }
    fn take<T: std::str::FromStr>(&mut self, key: &str) -> Result<Option<T>> {
        match self.map.remove(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<T>()
                .map(Some)
                .map_err(|_| Error::invalid(format!("parameter {key}='{v}' of '{}' is not a valid value", self.stage))),
        }
    }
    /// An integer parameter within [lo, hi].
    pub fn int(&mut self, key: &str, default: i64, lo: i64, hi: i64) -> Result<i64> {
        let v = self.take::<i64>(key)?.unwrap_or(default);
        if v < lo || v > hi {
            return Err(Error::invalid(format!("parameter {key}={v} of '{}' is outside {lo}..={hi}", self.stage)));
        }
        Ok(v)
    }
    /// A positive finite float parameter; `None` if absent.
    pub fn float(&mut self, key: &str) -> Result<Option<f64>> {
        let v = self.take::<f64>(key)?;
        if let Some(x) = v
            && !(x.is_finite() && x > 0.0)
        {
            return Err(Error::invalid(format!("parameter {key}={x} of '{}' must be positive", self.stage)));
        }
        Ok(v)
    }
    pub fn string(&mut self, key: &str) -> Option<String> {
        self.map.remove(key)
    }
    pub fn flag(&mut self, key: &str, default: bool) -> Result<bool> {
        Ok(self.take::<bool>(key)?.unwrap_or(default))
    }
    /// Error on any parameter the builder did not read.
    pub fn finish(self) -> Result<()> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(Error::invalid(format!("unknown parameter '{k}' for codec '{}'", self.stage))),
        }
    }
}

// ---------------------------------------------------------------------------
// Registry

/// Whether a stage ends a chain or feeds the stage after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// Changes size, ends the chain (zstd, lz4, an entropy coder).
    Coder,
    /// Produces streams for the next stage; without one it uses its default.
    Transform,
}

type BuildFn = fn(&mut Params, Option<Box<dyn Codec>>) -> Result<Box<dyn Codec>>;

/// A registered stage. `id` is written in archives and never reused; a changed
/// bitstream gets a new id (keep the old entry so old archives decode).
pub struct StageDef {
    pub id: u16,
    pub name: &'static str,
    pub version: u8,
    pub kind: StageKind,
    pub summary: &'static str,
    /// Specs that exercise the stage, in canonical form (`build(ex).spec()
    /// == ex`), the first the plainest: the conformance suite
    /// (`tests/conformance.rs`) round-trips, damages and checks every one,
    /// and fails for a stage without any.
    pub examples: &'static [&'static str],
    pub build: BuildFn,
}

/// Id ranges: 1–31 generic byte coders, 32–63 float-aware lossless,
/// 64–95 lossy, 96–127 meta (auto). Keep sorted by id.
pub static REGISTRY: &[StageDef] = &[
    lossless::RAW,
    lossless::ZSTD,
    lossless::LZ4,
    lossless::XZ,
    lossless::DEFLATE,
    #[cfg(feature = "blosc2")]
    lossless::BLOSC2,
    planes::PLANES,
    float::exp::EXP,
    float::special::CONST,
    float::special::TABLE,
    lossy::SZ,
    lossy::INT8,
    lossy::INT4,
    lossy::ROUND,
    lowprec::FP8,
    lowprec::MXFP4,
    lowprec::NVFP4,
    auto::AUTO,
];

pub fn stage_def(name: &str) -> Option<&'static StageDef> {
    REGISTRY.iter().find(|d| d.name == name)
}

pub fn stage_def_by_id(id: u16) -> Option<&'static StageDef> {
    REGISTRY.iter().find(|d| d.id == id)
}

/// Build a codec from a spec string.
pub fn build(spec: &str) -> Result<Box<dyn Codec>> {
    build_spec(&CodecSpec::parse(spec)?)
}

pub fn build_spec(spec: &CodecSpec) -> Result<Box<dyn Codec>> {
    let mut next: Option<Box<dyn Codec>> = None;
    for stage in spec.stages.iter().rev() {
        let def = stage_def(&stage.name).ok_or_else(|| {
            let known: Vec<_> = REGISTRY.iter().map(|d| d.name).collect();
            let hint = if stage.name == "blosc2" && cfg!(not(feature = "blosc2")) {
                " (this build has no blosc2: rebuild with --features blosc2)".to_string()
            } else {
                format!(" (known: {})", known.join(", "))
            };
            Error::invalid(format!("unknown codec '{}' in '{spec}'{hint}", stage.name))
        })?;
        if def.kind == StageKind::Coder && next.is_some() {
            return Err(Error::invalid(format!(
                "'{}' is a coder and must end the chain, but '{spec}' continues after it",
                stage.name
            )));
        }
        let mut params = Params::new(stage);
        let codec = (def.build)(&mut params, next.take())?;
        params.finish()?;
        next = Some(codec);
    }
    next.ok_or_else(|| Error::invalid("empty codec spec"))
}

/// The stage ids of a canonical spec, as recorded in the archive.
pub fn stage_ids(spec: &str) -> Result<Vec<u16>> {
    CodecSpec::parse(spec)?
        .stages
        .iter()
        .map(|s| stage_def(&s.name).map(|d| d.id).ok_or_else(|| Error::invalid(format!("unknown codec '{}'", s.name))))
        .collect()
}

/// Build the decoder for an archive record, checking that every stage id is
/// known to this build and matches the stage name recorded beside it.
pub fn build_recorded(spec: &str, ids: &[u16]) -> Result<Box<dyn Codec>> {
    let parsed = CodecSpec::parse(spec).map_err(|e| Error::corrupt(format!("recorded codec spec: {e}")))?;
    if parsed.stages.len() != ids.len() {
        return Err(Error::corrupt(format!(
            "codec spec '{spec}' has {} stages but {} stage ids are recorded",
            parsed.stages.len(),
            ids.len()
        )));
    }
    for (stage, &id) in parsed.stages.iter().zip(ids) {
        let def = stage_def_by_id(id).ok_or_else(|| {
            Error::unsupported(format!(
                "codec id {id} ('{}') is not known to this build of weightlab {} (written by a newer version, or a build without that feature?)",
                stage.name,
                env!("CARGO_PKG_VERSION")
            ))
        })?;
        if def.name != stage.name {
            return Err(Error::corrupt(format!(
                "codec id {id} is '{}' in this build but the archive names it '{}'",
                def.name, stage.name
            )));
        }
    }
    build_spec(&parsed)
}

/// The canonical spec of a transform followed by its next stage: `head>next`.
pub fn chain_spec(head: &str, next: &dyn Codec) -> String {
    format!("{head}>{}", next.spec())
}

// ---------------------------------------------------------------------------
// Framing helpers for codecs that write several streams.

/// Reads a codec's own framing from untrusted bytes: every read is checked
/// and fails with `Truncated`, never panics.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| {
            Error::truncated(format!(
                "{} stream: need {n} bytes at offset {}, only {} left",
                self.what,
                self.pos,
                self.buf.len() - self.pos
            ))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().expect("2")))
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4")))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8")))
    }
    /// A u32-length-prefixed byte string.
    pub fn block(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.bytes(n)
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Error if bytes are left over.
    pub fn finish(&self) -> Result<()> {
        if self.pos != self.buf.len() {
            return Err(Error::corrupt(format!(
                "{} stream: {} unexpected trailing bytes",
                self.what,
                self.buf.len() - self.pos
            )));
        }
        Ok(())
    }
}

/// Append a u32-length-prefixed block.
/// Append a u32-length-prefixed block written in place by `write` (which
/// appends to `out`): [`put_block`] without the copy.
pub fn with_block(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>) -> Result<()>) -> Result<()> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out)?;
    let n = block_len(out.len() - at - 4)?;
    out[at..at + 4].copy_from_slice(&n.to_le_bytes());
    Ok(())
}

/// A block's length as its u32 prefix.
fn block_len(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::unsupported(format!("stream of {n} bytes exceeds 4 GiB; use smaller chunks")))
}

pub fn put_block(out: &mut Vec<u8>, block: &[u8]) -> Result<()> {
    let n = block_len(block.len())?;
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(block);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parse_and_canonical_form() {
        let s = CodecSpec::parse(" planes > zstd:level=3 ").unwrap();
        assert_eq!(s.to_string(), "planes>zstd:level=3");
        assert!(CodecSpec::parse("").is_err());
        assert!(CodecSpec::parse("zstd:level").is_err());
        assert!(CodecSpec::parse("zstd:level=1,level=2").is_err());
        assert!(CodecSpec::parse("zs td").is_err());
    }

    #[test]
    fn registry_ids_are_unique_and_sorted() {
        let mut last = 0;
        for d in REGISTRY {
            assert!(d.id > last, "ids must be unique and sorted: {} after {last}", d.id);
            last = d.id;
        }
    }

    #[test]
    fn build_rejects_unknown_things() {
        assert!(build("nope").unwrap_err().message().contains("unknown codec"));
        assert!(build("zstd:level=99").unwrap_err().message().contains("outside"));
        assert!(build("zstd:levle=3").unwrap_err().message().contains("unknown parameter"));
        assert!(build("zstd>lz4").unwrap_err().message().contains("must end the chain"));
        assert_eq!(build("zstd").unwrap().spec(), "zstd:level=3");
    }

    #[test]
    fn recorded_ids_are_checked() {
        let c = build("planes>zstd:level=1").unwrap();
        let ids = stage_ids(&c.spec()).unwrap();
        assert!(build_recorded(&c.spec(), &ids).is_ok());
        let e = build_recorded(&c.spec(), &[ids[0], 999]).err().unwrap();
        assert_eq!(e.kind(), crate::error::ErrorKind::Unsupported);
        assert!(build_recorded(&c.spec(), &[ids[1], ids[0]]).is_err());
        assert!(build_recorded(&c.spec(), &ids[..1]).is_err());
    }

    #[test]
    fn reader_never_panics() {
        let mut r = Reader::new(&[1, 0, 0, 0], "test");
        assert!(r.block().is_err());
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1], "test");
        assert_eq!(r.block().unwrap_err().kind(), crate::error::ErrorKind::Truncated);
    }
}
