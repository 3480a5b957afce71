//! blosc2 (feature `blosc2`): shuffle or bitshuffle by the element size, then
//! blosclz, lz4, lz4hc, zlib or zstd, through the C library's context API.
//!
//! Uses `blosc2-sys` directly rather than the `blosc2-rs` wrapper: the wrapper's
//! `compress_into_ctx` reads `len × typesize` bytes from a byte slice (an
//! over-read when typesize > 1) and its `decompress_into` trusts the size in
//! the (untrusted) header. Here every size is checked against our buffers, and
//! contexts are per call, so no global compressor state is shared between
//! threads (CRATES.md pitfall 6).

use super::{ChunkInfo, Codec, Fidelity, Params, StageDef, StageKind};
use crate::error::{Error, Result};
use blosc2_sys as ffi;
use std::ffi::c_void;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shuffle {
    None,
    Byte,
    Bit,
}

pub struct Blosc2 {
    codec: &'static str,
    compcode: u8,
    level: u8,
    shuffle: Shuffle,
}

const CODECS: &[(&str, u32)] = &[
    ("blosclz", ffi::BLOSC_BLOSCLZ),
    ("lz4", ffi::BLOSC_LZ4),
    ("lz4hc", ffi::BLOSC_LZ4HC),
    ("zlib", ffi::BLOSC_ZLIB),
    ("zstd", ffi::BLOSC_ZSTD),
];

pub const BLOSC2: StageDef = StageDef {
    id: 6,
    name: "blosc2",
    version: 1,
    kind: StageKind::Coder,
    summary: "blosc2: codec=blosclz|lz4|lz4hc|zlib|zstd, level=0..9, shuffle=none|byte|bit",
    examples: &[
        "blosc2:codec=zstd,level=5,shuffle=byte",
        "blosc2:codec=lz4,level=9,shuffle=bit",
        "blosc2:codec=blosclz,level=1,shuffle=none",
        "blosc2:codec=zlib,level=3,shuffle=byte",
        "blosc2:codec=lz4hc,level=5,shuffle=bit",
    ],
    build: |p: &mut Params, next| {
        if let Some(n) = next {
            return Err(Error::invalid(format!("'blosc2' is a coder and cannot feed '{}'", n.spec())));
        }
        let name = p.string("codec").unwrap_or_else(|| "zstd".into());
        let &(codec, compcode) = CODECS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            Error::invalid(format!("blosc2 codec '{name}' unknown (blosclz, lz4, lz4hc, zlib, zstd)"))
        })?;
        let level = p.int("level", 5, 0, 9)? as u8;
        let shuffle = match p.string("shuffle").as_deref().unwrap_or("byte") {
            "none" => Shuffle::None,
            "byte" => Shuffle::Byte,
            "bit" => Shuffle::Bit,
            s => return Err(Error::invalid(format!("blosc2 shuffle '{s}' unknown (none, byte, bit)"))),
        };
        Ok(Box::new(Blosc2 { codec, compcode: compcode as u8, level, shuffle }))
    },
};

fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: blosc2_init only initialises the library's global tables; Once
    // makes it run exactly once.
    ONCE.call_once(|| unsafe { ffi::blosc2_init() });
}

impl Codec for Blosc2 {
    fn spec(&self) -> String {
        let s = match self.shuffle {
            Shuffle::None => "none",
            Shuffle::Byte => "byte",
            Shuffle::Bit => "bit",
        };
        format!("blosc2:codec={},level={},shuffle={s}", self.codec, self.level)
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn encode(&self, info: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        init();
        let typesize = match info.dtype.size() {
            Some(w) if data.len().is_multiple_of(w) && w <= 255 => w,
            _ => 1,
        };
        let srcsize = i32::try_from(data.len())
            .ok()
            .filter(|&n| n < i32::MAX - ffi::BLOSC2_MAX_OVERHEAD as i32)
            .ok_or_else(|| Error::unsupported("blosc2 chunks must be under 2 GiB"))?;
        // SAFETY: the defaults are plain values; the pointers in them are null.
        let mut cp = unsafe { ffi::blosc2_get_blosc2_cparams_defaults() };
        cp.compcode = self.compcode;
        cp.clevel = self.level;
        cp.typesize = typesize as i32;
        cp.nthreads = 1;
        cp.filters = [0; 6];
        cp.filters[5] = match self.shuffle {
            Shuffle::None => ffi::BLOSC_NOSHUFFLE,
            Shuffle::Byte => ffi::BLOSC_SHUFFLE,
            Shuffle::Bit => ffi::BLOSC_BITSHUFFLE,
        } as u8;
        let cap = data.len() + ffi::BLOSC2_MAX_OVERHEAD as usize;
        let start = out.len();
        out.resize(start + cap, 0);
        // SAFETY: the context is created and freed here and used by this thread
        // only; `src` is `data` (srcsize bytes) and `dest` the `cap` bytes just
        // reserved in `out`, which blosc2 never writes past.
        let n = unsafe {
            let ctx = ffi::blosc2_create_cctx(cp);
            if ctx.is_null() {
                out.truncate(start);
                return Err(Error::invalid("blosc2: cannot create a compression context"));
            }
            let n = ffi::blosc2_compress_ctx(
                ctx,
                data.as_ptr() as *const c_void,
                srcsize,
                out[start..].as_mut_ptr() as *mut c_void,
                cap as i32,
            );
            ffi::blosc2_free_ctx(ctx);
            n
        };
        if n <= 0 {
            out.truncate(start);
            return Err(Error::invalid(format!("blosc2 compression failed (code {n})")));
        }
        out.truncate(start + n as usize);
        Ok(())
    }
    fn decode(&self, _: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        init();
        if input.len() < ffi::BLOSC_MIN_HEADER_LENGTH as usize {
            return Err(Error::truncated(format!("blosc2: {} bytes is shorter than a header", input.len())));
        }
        let (mut nbytes, mut cbytes, mut blocksize) = (0i32, 0i32, 0i32);
        // SAFETY: `input` holds at least the minimum header, which is all
        // blosc2_cbuffer_sizes reads.
        let rc = unsafe {
            ffi::blosc2_cbuffer_sizes(input.as_ptr() as *const c_void, &mut nbytes, &mut cbytes, &mut blocksize)
        };
        if rc < 0 || nbytes as usize != out.len() || cbytes as usize != input.len() {
            return Err(Error::corrupt(format!(
                "blosc2: header says {nbytes} bytes from {cbytes}, expected {} from {}",
                out.len(),
                input.len()
            )));
        }
        // SAFETY: sizes were checked above; blosc2_decompress_ctx reads at most
        // `srcsize` bytes and writes at most `destsize` (documented as memory safe
        // on corrupt data).
        let n = unsafe {
            let mut dp = ffi::blosc2_get_blosc2_dparams_defaults();
            dp.nthreads = 1;
            let ctx = ffi::blosc2_create_dctx(dp);
            if ctx.is_null() {
                return Err(Error::invalid("blosc2: cannot create a decompression context"));
            }
            let n = ffi::blosc2_decompress_ctx(
                ctx,
                input.as_ptr() as *const c_void,
                input.len() as i32,
                out.as_mut_ptr() as *mut c_void,
                out.len() as i32,
            );
            ffi::blosc2_free_ctx(ctx);
            n
        };
        if n < 0 || n as usize != out.len() {
            return Err(Error::corrupt(format!("blosc2: decompression failed (code {n})")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ChunkInfo, build, decode_all, encode_all};
    use crate::tensor::DType;

    #[test]
    fn round_trips_and_rejects_damage() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| ((i as f32).sin() * 0.02).to_le_bytes()).collect();
        let info = ChunkInfo { name: "w", dtype: DType::F32, shape: &[], offset: 0 };
        for spec in [
            "blosc2:codec=zstd,level=5,shuffle=byte",
            "blosc2:codec=lz4,level=9,shuffle=bit",
            "blosc2:codec=blosclz,level=1,shuffle=none",
        ] {
            let c = build(spec).unwrap();
            assert_eq!(c.spec(), spec);
            let enc = encode_all(&*c, &info, &data).unwrap();
            if !spec.ends_with("shuffle=none") {
                // shuffled floats compress; unshuffled blosclz need not
                assert!(enc.len() < data.len(), "{spec} did not compress");
            }
            assert!(decode_all(&*c, &info, &enc, data.len()).unwrap() == data);
            assert!(decode_all(&*c, &info, &enc, data.len() - 4).is_err());
            for cut in [0, 8, 16, 31, enc.len() / 2, enc.len() - 1] {
                assert!(decode_all(&*c, &info, &enc[..cut], data.len()).is_err(), "{spec} cut {cut}");
            }
            for i in (0..enc.len()).step_by(97) {
                let mut bad = enc.clone();
                bad[i] ^= 0xff;
                let _ = decode_all(&*c, &info, &bad, data.len());
            }
        }
        let empty = encode_all(&*build("blosc2").unwrap(), &info, &[]).unwrap();
        assert!(decode_all(&*build("blosc2").unwrap(), &info, &empty, 0).unwrap().is_empty());
    }
}
