//! The archive layout, version 2 (see docs/format.md):
//!
//! ```text
//! [fixed header: 32 bytes]  magic, format version, min reader version, flags
//! [chunk payloads]          every chunk's encoded bytes, back to back
//! [source header]           the original safetensors prefix (length + JSON), a zstd frame
//! [index]                   JSON, a zstd frame: tensors, dtypes, shapes, codecs, chunks, hashes
//! [trailer: 40 bytes]       index offset, stored length, xxh3 of the stored index,
//!                           the index's JSON length, end magic
//! ```
//!
//! The index is JSON so that readers skip fields they do not know (fields are
//! only ever added) and so that it can be read by other tools (`zstd -d` of
//! its bytes). Version 2 stores the index and the safetensors header as zstd
//! frames (each only when that is smaller): on MiniLM BF16 (45 MB) the two
//! cost 0.08 points of ratio stored raw. Version 1 archives (both raw) still
//! read; a version-2 archive asks a version-1 reader to upgrade.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

pub const MAGIC: [u8; 8] = [0x89, b'W', b'L', b'A', b'B', b'\r', b'\n', 0x1a];
pub const END_MAGIC: [u8; 8] = *b"WLABEND\n";
/// The format version this build writes.
pub const FORMAT_VERSION: u16 = 2;
/// The newest format version this build reads.
pub const MAX_READ_VERSION: u16 = 2;
/// zstd level of the stored index and safetensors header: a few hundred KB
/// of JSON at most, written once.
pub const META_ZSTD_LEVEL: i32 = 19;
/// A stored (zstd) index or header may declare at most this many times its
/// stored length plus [`META_SLACK`] as its JSON length: JSON compresses by
/// 5 to 30 here, and a lying length must not make a reader allocate much
/// more than the archive's own size.
pub const META_MAX_EXPANSION: u64 = 256;
pub const META_SLACK: u64 = 64 << 10;
pub const HEADER_LEN: usize = 32;
pub const TRAILER_LEN: usize = 40;
/// Indexes larger than this are refused (a corrupt length must not make us
/// allocate gigabytes).
pub const MAX_INDEX_LEN: u64 = 1 << 30;
/// The largest chunk size a writer may choose and a reader accepts (the
/// index's `chunk_size`, and so every chunk's decoded length): the buffers
/// of a decode are a few chunks, so a lying index cannot make a reader
/// allocate more than a few times this.
pub const MAX_CHUNK_SIZE: u64 = 256 << 20;

/// The fixed header at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    pub version: u16,
    pub min_reader_version: u16,
    pub flags: u32,
}

impl FixedHeader {
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.min_reader_version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    pub fn parse(b: &[u8]) -> Result<FixedHeader> {
        if b.len() < 8 || b[..8] != MAGIC {
            if b.len() < 8 && MAGIC.starts_with(b) {
                return Err(Error::truncated(format!("archive is only {} bytes long", b.len())));
            }
            return Err(Error::corrupt("not a weightlab archive (wrong magic bytes)"));
        }
        if b.len() < HEADER_LEN {
            return Err(Error::truncated(format!("archive is only {} bytes long", b.len())));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        let min_reader_version = u16::from_le_bytes([b[10], b[11]]);
        let flags = u32::from_le_bytes(b[12..16].try_into().expect("4"));
        if min_reader_version > MAX_READ_VERSION {
            return Err(Error::unsupported(format!(
                "archive format version {version} needs a reader of version {min_reader_version}; \
                 this weightlab {} reads up to version {MAX_READ_VERSION}: upgrade weightlab",
                env!("CARGO_PKG_VERSION")
            )));
        }
        Ok(FixedHeader { version, min_reader_version, flags })
    }
}

/// The trailer at the end of the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trailer {
    pub index_offset: u64,
    /// Bytes of the index as stored.
    pub index_len: u64,
    /// xxh3 of the index as stored.
    pub index_xxh3: u64,
    /// Length of the index's JSON when it is stored as a zstd frame; 0 when
    /// it is stored as JSON (every version-1 archive: reserved, zero, there).
    pub index_json_len: u64,
}

impl Trailer {
    pub fn to_bytes(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[..8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.index_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.index_xxh3.to_le_bytes());
        b[24..32].copy_from_slice(&self.index_json_len.to_le_bytes());
        b[32..].copy_from_slice(&END_MAGIC);
        b
    }

    pub fn parse(archive: &[u8]) -> Result<Trailer> {
        if archive.len() < HEADER_LEN + TRAILER_LEN || archive[archive.len() - 8..] != END_MAGIC {
            return Err(Error::truncated(format!(
                "archive ends before its trailer ({} bytes): the file is cut short or still being written",
                archive.len()
            )));
        }
        let t = &archive[archive.len() - TRAILER_LEN..];
        let u = |i: usize| u64::from_le_bytes(t[i..i + 8].try_into().expect("8"));
        Ok(Trailer { index_offset: u(0), index_len: u(8), index_xxh3: u(16), index_json_len: u(24) })
    }
}

/// Where the original safetensors prefix is stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Section {
    pub offset: u64,
    /// Bytes as stored.
    pub len: u64,
    /// xxh3 of the bytes as stored.
    pub xxh3: u64,
    /// Length of the prefix when it is stored as a zstd frame (absent: stored
    /// as it is, as every version-1 archive does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_len: Option<u64>,
}

impl Section {
    /// The prefix's length in the original file.
    pub fn source_len(&self) -> u64 {
        self.raw_len.unwrap_or(self.len)
    }
}

/// zstd-compress `json` (`what`: for the error) for storing, when that is
/// smaller: the bytes to store and, when compressed, the length they decode to.
pub fn pack_meta<'a>(json: &'a [u8], what: &str) -> Result<(std::borrow::Cow<'a, [u8]>, Option<u64>)> {
    let z = zstd::bulk::compress(json, META_ZSTD_LEVEL).map_err(|e| Error::io(format!("compressing {what}"), e))?;
    Ok(if z.len() < json.len() { (z.into(), Some(json.len() as u64)) } else { (json.into(), None) })
}

/// Decode a stored zstd frame that must give exactly `len` bytes, without
/// trusting `len` further than [`META_MAX_EXPANSION`] allows.
pub fn unpack_meta(stored: &[u8], len: u64, what: &str) -> Result<Vec<u8>> {
    let limit = (stored.len() as u64).saturating_mul(META_MAX_EXPANSION).saturating_add(META_SLACK).min(MAX_INDEX_LEN);
    if len > limit {
        return Err(Error::corrupt(format!(
            "{what}: {} stored bytes claim to decode to {len} bytes (more than {limit}): the archive is damaged",
            stored.len()
        )));
    }
    let mut out = Vec::new();
    let mut d = zstd::stream::read::Decoder::with_buffer(stored)
        .map_err(|e| Error::corrupt(format!("{what}: not a zstd frame: {e}")))?
        .single_frame();
    // reads at most len + 1 bytes: growth follows the bytes actually decoded
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut d, len + 1), &mut out)
        .map_err(|e| Error::corrupt(format!("{what}: the zstd frame does not decode: {e}")))?;
    if out.len() as u64 != len {
        return Err(Error::corrupt(format!(
            "{what}: decodes to {} bytes, the archive says {len}: the archive is damaged",
            out.len()
        )));
    }
    Ok(out)
}

/// What the archive was made from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Source {
    #[serde(default)]
    pub file_name: String,
    pub size: u64,
    /// sha256 of the original file.
    pub sha256: String,
}

/// One encoded chunk: `[offset in archive, encoded length, decoded length,
/// xxh3 of the encoded bytes, xxh3 of the decoded bytes]`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkEntry(pub u64, pub u64, pub u64, pub u64, pub u64);

impl ChunkEntry {
    pub fn offset(&self) -> u64 {
        self.0
    }
    pub fn encoded_len(&self) -> u64 {
        self.1
    }
    pub fn decoded_len(&self) -> u64 {
        self.2
    }
    pub fn encoded_xxh3(&self) -> u64 {
        self.3
    }
    pub fn decoded_xxh3(&self) -> u64 {
        self.4
    }
}

/// One tensor's record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TensorRecord {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Canonical spec of the codec that encoded it ("" for a duplicate).
    pub codec: String,
    /// Stable ids of the codec's stages, in order.
    pub stage_ids: Vec<u16>,
    pub lossless: bool,
    /// Declared error bound of a lossy codec, human-readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<String>,
    /// Byte offset in the original data section.
    pub data_offset: u64,
    /// Byte length of the tensor.
    pub size: u64,
    /// sha256 of the bytes decoding gives (the original bytes when lossless);
    /// "" when the writer did not record it (the default for lossless
    /// tensors; archives written before 2026-12-02 record every one): every
    /// chunk's xxh3 of its decoded bytes and the file's sha256 check them.
    pub sha256: String,
    /// sha256 of the original bytes (differs from `sha256` only when lossy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_sha256: Option<String>,
    /// Index of an earlier tensor with identical bytes (tied weights): this one
    /// stores no chunks and decodes as a copy of that one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as: Option<usize>,
    pub chunks: Vec<ChunkEntry>,
}

impl TensorRecord {
    /// Whether the index records this tensor's sha256.
    pub fn has_sha256(&self) -> bool {
        !self.sha256.is_empty()
    }

    pub fn encoded_len(&self) -> u64 {
        self.chunks.iter().map(|c| c.encoded_len()).sum()
    }
}

/// The archive index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Index {
    pub format_version: u16,
    /// The weightlab version that wrote it (not the format version).
    pub writer: String,
    pub source: Source,
    /// sha256 of the file `decompress` writes (equals `source.sha256` when
    /// every tensor is lossless).
    pub output_sha256: String,
    /// The original safetensors prefix (8-byte length + JSON header).
    pub header: Section,
    pub chunk_size: u64,
    /// Tensors in the order of their data offsets.
    pub tensors: Vec<TensorRecord>,
}

impl Index {
    pub fn is_lossless(&self) -> bool {
        self.tensors.iter().all(|t| t.lossless)
    }
    pub fn encoded_data_len(&self) -> u64 {
        self.tensors.iter().map(|t| t.encoded_len()).sum()
    }
}
