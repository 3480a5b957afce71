//! Generic byte compressors: raw (store), zstd, lz4 (lz4_flex), xz (xz2),
//! deflate (flate2) and blosc2 (behind the `blosc2` feature). They see the
//! bytes only; the float-aware codecs feed them streams.

use super::{ChunkInfo, Codec, Fidelity, Params, StageDef, StageKind};
use crate::error::{Error, Result};

fn size_mismatch(what: &str, got: usize, want: usize) -> Error {
    Error::corrupt(format!("{what}: decoded {got} bytes, expected {want}"))
}

fn no_next(name: &str, next: Option<Box<dyn Codec>>) -> Result<()> {
    match next {
        None => Ok(()),
        Some(n) => Err(Error::invalid(format!("'{name}' is a coder and cannot feed '{}'", n.spec()))),
    }
}

// --- raw ---------------------------------------------------------------------

/// Stores the bytes as they are. The floor every codec is compared with, and
/// the fallback for data that does not compress.
pub struct Raw;

pub const RAW: StageDef = StageDef {
    id: 1,
    name: "raw",
    version: 1,
    kind: StageKind::Coder,
    summary: "store the bytes unchanged",
    examples: &["raw"],
    build: |_, next| {
        no_next("raw", next)?;
        Ok(Box::new(Raw))
    },
};

impl Codec for Raw {
    fn spec(&self) -> String {
        "raw".into()
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn encode(&self, _: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(data);
        Ok(())
    }
    fn decode(&self, _: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        if input.len() != out.len() {
            return Err(size_mismatch("raw", input.len(), out.len()));
        }
        out.copy_from_slice(input);
        Ok(())
    }
}

// --- zstd --------------------------------------------------------------------

/// zstd through the system libzstd (see CRATES.md: one zstd copy, shared with
/// blosc2). `threads` > 0 uses zstdmt; `long` > 0 enables long-distance
/// matching with that window log.
#[derive(Debug, Clone, Copy)]
pub struct Zstd {
    pub level: i32,
    pub threads: u32,
    pub long: u32,
}

pub const ZSTD: StageDef = StageDef {
    id: 2,
    name: "zstd",
    version: 1,
    kind: StageKind::Coder,
    summary: "zstd, levels -7..22; threads=N (zstdmt), long=WINDOWLOG (10..31, 0 off)",
    examples: &["zstd:level=3", "zstd:level=-3", "zstd:level=19", "zstd:level=3,long=27,threads=2"],
    build: |p: &mut Params, next| {
        no_next("zstd", next)?;
        let level = p.int("level", 3, -7, 22)? as i32;
        let threads = p.int("threads", 0, 0, 256)? as u32;
        let long = p.int("long", 0, 0, 31)? as u32;
        if long != 0 && long < 10 {
            return Err(Error::invalid("zstd long=WINDOWLOG must be 0 (off) or 10..31"));
        }
        Ok(Box::new(Zstd { level, threads, long }))
    },
};

impl Codec for Zstd {
    fn spec(&self) -> String {
        let mut s = format!("zstd:level={}", self.level);
        if self.long != 0 {
            s += &format!(",long={}", self.long);
        }
        if self.threads != 0 {
            s += &format!(",threads={}", self.threads);
        }
        s
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn encode(&self, _: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let zerr = |e: std::io::Error| Error::new(crate::error::ErrorKind::Io, format!("zstd encode: {e}"));
        if self.threads == 0 && self.long == 0 {
            out.reserve(zstd::zstd_safe::compress_bound(data.len()));
            // A cursor at the end makes zstd append into the spare capacity
            // (a bare Vec would be overwritten from its start).
            let mut dst = std::io::Cursor::new(&mut *out);
            dst.set_position(dst.get_ref().len() as u64);
            let mut c = zstd::bulk::Compressor::new(self.level).map_err(zerr)?;
            c.compress_to_buffer(data, &mut dst).map_err(zerr)?;
            return Ok(());
        }
        let mut enc = zstd::stream::Encoder::new(&mut *out, self.level).map_err(zerr)?;
        enc.include_contentsize(true).map_err(zerr)?;
        enc.set_pledged_src_size(Some(data.len() as u64)).map_err(zerr)?;
        if self.threads > 0 {
            enc.multithread(self.threads).map_err(zerr)?;
        }
        if self.long > 0 {
            enc.long_distance_matching(true).map_err(zerr)?;
            enc.window_log(self.long).map_err(zerr)?;
        }
        use std::io::Write;
        enc.write_all(data).map_err(zerr)?;
        enc.finish().map_err(zerr)?;
        Ok(())
    }
    fn decode(&self, _: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        let cerr = |e: std::io::Error| Error::corrupt(format!("zstd: {e}"));
        let mut d = zstd::bulk::Decompressor::new().map_err(cerr)?;
        d.window_log_max(31).map_err(cerr)?;
        let n = d.decompress_to_buffer(input, out).map_err(cerr)?;
        if n != out.len() {
            return Err(size_mismatch("zstd", n, out.len()));
        }
        Ok(())
    }
}

// --- lz4 ---------------------------------------------------------------------

/// LZ4 block format (lz4_flex, safe Rust). The container records the size.
pub struct Lz4;

pub const LZ4: StageDef = StageDef {
    id: 3,
    name: "lz4",
    version: 1,
    kind: StageKind::Coder,
    summary: "LZ4 block (lz4_flex)",
    examples: &["lz4"],
    build: |_, next| {
        no_next("lz4", next)?;
        Ok(Box::new(Lz4))
    },
};

impl Codec for Lz4 {
    fn spec(&self) -> String {
        "lz4".into()
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn encode(&self, _: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        out.resize(start + lz4_flex::block::get_maximum_output_size(data.len()), 0);
        let n = lz4_flex::block::compress_into(data, &mut out[start..])
            .map_err(|e| Error::corrupt(format!("lz4 encode: {e}")))?;
        out.truncate(start + n);
        Ok(())
    }
    fn decode(&self, _: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        let n = lz4_flex::block::decompress_into(input, out).map_err(|e| Error::corrupt(format!("lz4: {e}")))?;
        if n != out.len() {
            return Err(size_mismatch("lz4", n, out.len()));
        }
        Ok(())
    }
}

// --- xz ----------------------------------------------------------------------

/// The memory an xz decoder may use: the dictionary of the largest preset
/// (64 MiB) and the decoder's own state.
const XZ_DECODER_MEMLIMIT: u64 = 80 << 20;

/// xz (LZMA2) through liblzma, without an integrity check of its own (the
/// container checksums every chunk).
pub struct Xz {
    pub level: u32,
    pub extreme: bool,
}

pub const XZ: StageDef = StageDef {
    id: 4,
    name: "xz",
    version: 1,
    kind: StageKind::Coder,
    summary: "xz/LZMA2, level=0..9, extreme=true|false",
    examples: &["xz:level=1", "xz:extreme=true,level=6"],
    build: |p: &mut Params, next| {
        no_next("xz", next)?;
        let level = p.int("level", 6, 0, 9)? as u32;
        let extreme = p.flag("extreme", false)?;
        Ok(Box::new(Xz { level, extreme }))
    },
};

impl Codec for Xz {
    fn spec(&self) -> String {
        if self.extreme { format!("xz:extreme=true,level={}", self.level) } else { format!("xz:level={}", self.level) }
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn encode(&self, _: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let preset = self.level | if self.extreme { 1 << 31 } else { 0 };
        // The preset's dictionary, but no larger than the data: liblzma
        // allocates about 11 times the dictionary (674 MiB at level 9) for
        // any input, and a dictionary beyond the input finds no more matches.
        let mut opts =
            xz2::stream::LzmaOptions::new_preset(preset).map_err(|e| Error::invalid(format!("xz encoder: {e}")))?;
        let preset_dict: u32 =
            [256 << 10, 1 << 20, 2 << 20, 4 << 20, 4 << 20, 8 << 20, 8 << 20, 16 << 20, 32 << 20, 64 << 20]
                [self.level.min(9) as usize];
        let fit =
            u32::try_from(data.len()).unwrap_or(u32::MAX).max(4096).checked_next_power_of_two().unwrap_or(u32::MAX);
        opts.dict_size(preset_dict.min(fit));
        let mut filters = xz2::stream::Filters::new();
        filters.lzma2(&opts);
        let stream = xz2::stream::Stream::new_stream_encoder(&filters, xz2::stream::Check::None)
            .map_err(|e| Error::invalid(format!("xz encoder: {e}")))?;
        let mut enc = xz2::write::XzEncoder::new_stream(&mut *out, stream);
        use std::io::Write;
        enc.write_all(data).map_err(|e| Error::io("xz encode", e))?;
        enc.finish().map_err(|e| Error::io("xz encode", e))?;
        Ok(())
    }
    fn decode(&self, _: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        use xz2::stream::{Action, Status, Stream};
        // A stream's header sets the dictionary the decoder allocates: the
        // limit admits the largest preset's (64 MiB at level 9), not the
        // 1.5 GiB a crafted header can ask for.
        let mut s =
            Stream::new_stream_decoder(XZ_DECODER_MEMLIMIT, 0).map_err(|e| Error::corrupt(format!("xz: {e}")))?;
        let status = s.process(input, out, Action::Finish).map_err(|e| Error::corrupt(format!("xz: {e}")))?;
        if status != Status::StreamEnd {
            return Err(if s.total_in() as usize >= input.len() {
                Error::truncated("xz: stream ends early")
            } else {
                size_mismatch("xz", s.total_out() as usize + 1, out.len())
            });
        }
        if s.total_out() as usize != out.len() {
            return Err(size_mismatch("xz", s.total_out() as usize, out.len()));
        }
        if s.total_in() as usize != input.len() {
            return Err(Error::corrupt("xz: trailing bytes after the stream"));
        }
        Ok(())
    }
}

// --- deflate -----------------------------------------------------------------

/// Raw deflate (flate2 with the zlib-rs back end), what gzip stores.
pub struct Deflate {
    pub level: u32,
}

pub const DEFLATE: StageDef = StageDef {
    id: 5,
    name: "deflate",
    version: 1,
    kind: StageKind::Coder,
    summary: "raw deflate (flate2), level=0..9",
    examples: &["deflate:level=6", "deflate:level=0", "deflate:level=9"],
    build: |p: &mut Params, next| {
        no_next("deflate", next)?;
        let level = p.int("level", 6, 0, 9)? as u32;
        Ok(Box::new(Deflate { level }))
    },
};

impl Codec for Deflate {
    fn spec(&self) -> String {
        format!("deflate:level={}", self.level)
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn encode(&self, _: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut enc = flate2::write::DeflateEncoder::new(&mut *out, flate2::Compression::new(self.level));
        use std::io::Write;
        enc.write_all(data).map_err(|e| Error::io("deflate encode", e))?;
        enc.finish().map_err(|e| Error::io("deflate encode", e))?;
        Ok(())
    }
    fn decode(&self, _: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        use flate2::{Decompress, FlushDecompress, Status};
        let mut d = Decompress::new(false);
        let status =
            d.decompress(input, out, FlushDecompress::Finish).map_err(|e| Error::corrupt(format!("deflate: {e}")))?;
        if status != Status::StreamEnd {
            return Err(if d.total_in() as usize >= input.len() {
                Error::truncated("deflate: stream ends early")
            } else {
                Error::corrupt(format!("deflate: more than {} decoded bytes", out.len()))
            });
        }
        if d.total_out() as usize != out.len() {
            return Err(size_mismatch("deflate", d.total_out() as usize, out.len()));
        }
        if d.total_in() as usize != input.len() {
            return Err(Error::corrupt("deflate: trailing bytes after the stream"));
        }
        Ok(())
    }
}

#[cfg(feature = "blosc2")]
pub use super::blosc2::BLOSC2;

#[cfg(test)]
mod tests {
    use super::super::{ChunkInfo, build, decode_all, encode_all};
    use crate::error::ErrorKind;

    fn sample(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 { (x & 0x0f) as u8 } else { (x >> 24) as u8 }
            })
            .collect()
    }

    const SPECS: &[&str] = &[
        "raw",
        "zstd:level=1",
        "zstd:level=19",
        "zstd:level=-3",
        "zstd:level=3,threads=2",
        "zstd:level=3,long=27",
        "lz4",
        "xz:level=6",
        "xz:extreme=true,level=9",
        "deflate:level=1",
        "deflate:level=9",
    ];

    #[test]
    fn round_trips_bit_exact_and_spec_is_canonical() {
        let info = ChunkInfo::bytes();
        for spec in SPECS {
            let c = build(spec).unwrap();
            assert_eq!(&c.spec(), spec, "canonical spec");
            for n in [0usize, 1, 7, 4096, 300_001] {
                let data = sample(n, n as u64 + 1);
                let enc = encode_all(&*c, &info, &data).unwrap();
                let dec = decode_all(&*c, &info, &enc, n).unwrap();
                assert!(dec == data, "{spec} n={n}");
            }
        }
    }

    #[test]
    fn encoders_append_after_existing_bytes() {
        let info = ChunkInfo::bytes();
        let data = sample(10_000, 5);
        for spec in SPECS {
            let c = build(spec).unwrap();
            let alone = encode_all(&*c, &info, &data).unwrap();
            let mut out = b"prefix".to_vec();
            c.encode(&info, &data, &mut out).unwrap();
            assert_eq!(&out[..6], b"prefix", "{spec} overwrote what was there");
            assert!(out[6..] == alone[..], "{spec} appended something else");
        }
    }

    #[test]
    fn multithreaded_zstd_really_works() {
        // A static blosc2 with its own zstd copy makes this fail with
        // "Unsupported parameter" (see CRATES.md pitfall 1).
        let c = build("zstd:level=3,threads=2").unwrap();
        let data = sample(8 << 20, 9);
        let enc = encode_all(&*c, &ChunkInfo::bytes(), &data).unwrap();
        assert!(decode_all(&*c, &ChunkInfo::bytes(), &enc, data.len()).unwrap() == data);
    }

    #[test]
    fn decoders_reject_damage_without_panicking() {
        let info = ChunkInfo::bytes();
        let data = sample(5000, 3);
        for spec in SPECS {
            let c = build(spec).unwrap();
            let enc = encode_all(&*c, &info, &data).unwrap();
            // wrong output size
            assert!(decode_all(&*c, &info, &enc, data.len() + 1).is_err(), "{spec} longer");
            if !enc.is_empty() {
                assert!(decode_all(&*c, &info, &enc, data.len() - 1).is_err(), "{spec} shorter");
            }
            // every prefix, and flipped bytes: errors or (for raw) different data, never a panic
            for cut in (0..enc.len()).step_by(enc.len() / 50 + 1) {
                let r = decode_all(&*c, &info, &enc[..cut], data.len());
                assert!(r.is_err(), "{spec}: prefix {cut} decoded");
            }
            for i in (0..enc.len()).step_by(enc.len() / 40 + 1) {
                let mut bad = enc.clone();
                bad[i] ^= 0x5a;
                let _ = decode_all(&*c, &info, &bad, data.len());
            }
        }
        let e = decode_all(&*build("zstd").unwrap(), &info, b"garbage!", 10).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corruption);
    }
}
