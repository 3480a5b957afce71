//! `planes>CODER`: split W-byte elements into W byte planes (plane 0 holds the
//! least significant byte of every element, as stored little-endian) and code
//! each plane with CODER. The byte-reordering approach of the Aveiro
//! Qwen2-0.5B study; the baseline the float-aware codecs must beat.

use super::{ChunkInfo, Codec, Fidelity, Params, Reader, StageDef, StageKind, chain_spec, put_block};
use crate::error::{Error, Result};

pub struct Planes {
    next: Box<dyn Codec>,
}

pub const PLANES: StageDef = StageDef {
    id: 16,
    name: "planes",
    version: 1,
    kind: StageKind::Transform,
    summary: "byte planes of multi-byte elements, each plane coded by the next stage (default zstd:level=3)",
    examples: &["planes>zstd:level=3", "planes>lz4", "planes>raw"],
    build: |_: &mut Params, next| {
        let next = match next {
            Some(n) => n,
            None => super::build("zstd:level=3")?,
        };
        Ok(Box::new(Planes { next }))
    },
};

/// Split `data` into `w` planes: `planes[k][i] = data[i * w + k]`.
pub fn split_planes(data: &[u8], w: usize) -> Vec<Vec<u8>> {
    let n = data.len() / w;
    let mut planes: Vec<Vec<u8>> = (0..w).map(|_| Vec::with_capacity(n)).collect();
    match w {
        2 => {
            for e in data.chunks_exact(2) {
                planes[0].push(e[0]);
                planes[1].push(e[1]);
            }
        }
        _ => {
            for e in data.chunks_exact(w) {
                for (k, p) in planes.iter_mut().enumerate() {
                    p.push(e[k]);
                }
            }
        }
    }
    planes
}

/// Inverse of [`split_planes`].
pub fn join_planes<P: AsRef<[u8]>>(planes: &[P], out: &mut [u8]) {
    let w = planes.len();
    if w == 2 {
        for ((e, &a), &b) in out.chunks_exact_mut(2).zip(planes[0].as_ref()).zip(planes[1].as_ref()) {
            e[0] = a;
            e[1] = b;
        }
        return;
    }
    for (i, e) in out.chunks_exact_mut(w).enumerate() {
        for (k, p) in planes.iter().enumerate() {
            e[k] = p.as_ref()[i];
        }
    }
}

thread_local! {
    /// The planes of the chunk a thread decodes, kept for its next chunk: a
    /// fresh zeroed buffer per chunk was a memset (or page faults) of the
    /// chunk's size each time (3.9 % of `decompress -j 1` on EmbeddingGemma
    /// BF16, whose embedding chunks are largely `planes>zstd`).
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

impl Planes {
    fn width(info: &ChunkInfo, len: usize) -> usize {
        match info.dtype.size() {
            Some(w) if w > 1 && len.is_multiple_of(w) => w,
            _ => 1,
        }
    }
}

impl Codec for Planes {
    fn spec(&self) -> String {
        chain_spec("planes", self.next.as_ref())
    }
    fn fidelity(&self) -> Fidelity {
        self.next.fidelity()
    }
    fn encode(&self, info: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let w = Self::width(info, data.len());
        out.push(w as u8);
        let sub = info.as_bytes();
        let mut buf = Vec::new();
        if w == 1 {
            self.next.encode(&sub, data, &mut buf)?;
            return put_block(out, &buf);
        }
        for plane in split_planes(data, w) {
            buf.clear();
            self.next.encode(&sub, &plane, &mut buf)?;
            put_block(out, &buf)?;
        }
        Ok(())
    }
    fn decode(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        let mut r = Reader::new(input, "planes");
        let w = r.u8()? as usize;
        if w != Self::width(info, out.len()) {
            return Err(Error::corrupt(format!(
                "planes: {w} planes recorded for {} bytes of {}",
                out.len(),
                info.dtype
            )));
        }
        let sub = info.as_bytes();
        if w == 1 {
            self.next.decode(&sub, r.block()?, out)?;
            return r.finish();
        }
        let n = out.len() / w;
        // Taken out for the time of this chunk (a nested `planes` stage gets
        // an empty one). Its old bytes are overwritten: every decoder writes
        // all of its output or fails.
        let mut scratch = SCRATCH.take();
        scratch.resize(w * n, 0);
        let result = (|| {
            for k in 0..w {
                self.next.decode(&sub, r.block()?, &mut scratch[k * n..(k + 1) * n])?;
            }
            r.finish()?;
            let planes: Vec<&[u8]> = (0..w).map(|k| &scratch[k * n..(k + 1) * n]).collect();
            join_planes(&planes, out);
            Ok(())
        })();
        SCRATCH.set(scratch);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ChunkInfo, build, decode_all, encode_all};
    use super::*;
    use crate::tensor::DType;

    #[test]
    fn planes_split_and_join_are_inverse() {
        let data: Vec<u8> = (0..=255u8).cycle().take(8 * 37).collect();
        for w in [2, 4, 8] {
            let planes = split_planes(&data, w);
            assert_eq!(planes[1][0], data[1]);
            let mut out = vec![0; data.len()];
            join_planes(&planes, &mut out);
            assert_eq!(out, data);
        }
    }

    #[test]
    fn planes_round_trip_every_width() {
        let c = build("planes>zstd:level=1").unwrap();
        assert_eq!(c.spec(), "planes>zstd:level=1");
        assert_eq!(build("planes").unwrap().spec(), "planes>zstd:level=3");
        for dtype in [DType::U8, DType::BF16, DType::F32, DType::F64, DType::F4] {
            let data: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
            let info = ChunkInfo { name: "t", dtype, shape: &[], offset: 0 };
            let enc = encode_all(&*c, &info, &data).unwrap();
            assert_eq!(decode_all(&*c, &info, &enc, data.len()).unwrap(), data, "{dtype}");
            let enc_cut = &enc[..enc.len() - 1];
            assert!(decode_all(&*c, &info, enc_cut, data.len()).is_err());
        }
    }
}
