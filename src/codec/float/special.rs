//! Special tensors: `const` (one value repeated) and `table` (few distinct
//! values: a sorted value table plus indices, entropy coded or bit-packed,
//! whichever is smaller). Both work on any dtype and fall back to another
//! representation when a chunk does not fit, so they never fail to encode.
//! (Tensors equal to an earlier one are stored once by the container's
//! `same_as`.)

use super::exp::Exp;
use crate::codec::entropy::{decode_stream, encode_stream};
use crate::codec::{ChunkInfo, Codec, Fidelity, Params, Reader, StageDef, StageKind, put_block};
use crate::error::{Error, Result};
use crate::tensor::DType;
use std::collections::HashMap;

fn no_next(name: &str, next: Option<Box<dyn Codec>>) -> Result<()> {
    match next {
        None => Ok(()),
        Some(n) => Err(Error::invalid(format!("'{name}' is a coder and cannot feed '{}'", n.spec()))),
    }
}

/// The repeating unit of a dtype in bytes (1 for F4, 3 for the F6 types).
fn unit(dtype: DType) -> usize {
    dtype.split_unit().max(1)
}

/// True if `data` is one `unit`-byte value repeated (and not empty).
pub fn is_constant(dtype: DType, data: &[u8]) -> bool {
    let u = unit(dtype);
    !data.is_empty() && data.len().is_multiple_of(u) && data.chunks_exact(u).all(|c| c == &data[..u])
}

// --- const -------------------------------------------------------------------

pub struct Const;

pub const CONST: StageDef = StageDef {
    id: 33,
    name: "const",
    version: 1,
    kind: StageKind::Coder,
    summary: "a tensor of one repeated value: the value once (falls back to exp:gain=2 otherwise)",
    examples: &["const"],
    build: |_: &mut Params, next| {
        no_next("const", next)?;
        Ok(Box::new(Const))
    },
};

impl Codec for Const {
    fn spec(&self) -> String {
        "const".into()
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn encode(&self, info: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if is_constant(info.dtype, data) {
            out.push(0);
            out.extend_from_slice(&data[..unit(info.dtype)]);
            Ok(())
        } else {
            out.push(1);
            Exp::default().encode(info, data, out)
        }
    }
    fn decode(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        let mut r = Reader::new(input, "const");
        match r.u8()? {
            0 => {
                let u = unit(info.dtype);
                let v = r.bytes(u)?;
                r.finish()?;
                if !out.len().is_multiple_of(u) {
                    return Err(Error::corrupt(format!(
                        "const: {} bytes is not a whole number of {u}-byte values",
                        out.len()
                    )));
                }
                for c in out.chunks_exact_mut(u) {
                    c.copy_from_slice(v);
                }
                Ok(())
            }
            1 => Exp::default().decode(info, r.rest(), out),
            m => Err(Error::corrupt(format!("const: unknown mode {m}"))),
        }
    }
}

// --- table -------------------------------------------------------------------

pub struct Table;

pub const TABLE: StageDef = StageDef {
    id: 34,
    name: "table",
    version: 1,
    kind: StageKind::Coder,
    summary: "few distinct values (<= 256 per chunk): value table + rANS-coded or bit-packed indices",
    examples: &["table"],
    build: |_: &mut Params, next| {
        no_next("table", next)?;
        Ok(Box::new(Table))
    },
};

/// Width of a table value: the dtype's element size, 1 byte for the packed
/// sub-byte types (their bytes are the values), 0 if too wide.
fn value_width(dtype: DType, len: usize) -> usize {
    match dtype.size() {
        Some(w) if w <= 8 && len.is_multiple_of(w) => w,
        Some(_) => 0,
        None => 1,
    }
}

fn key(b: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    k[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(k)
}

/// The sorted distinct values of `data` (as little-endian keys of `w`
/// bytes), or `None` if there are more than `max`.
pub fn distinct_values(data: &[u8], w: usize, max: usize) -> Option<Vec<u64>> {
    if w == 0 {
        return None;
    }
    let mut seen: HashMap<u64, ()> = HashMap::new();
    let mut last = None;
    for el in data.chunks_exact(w) {
        let k = key(el);
        if last == Some(k) {
            continue;
        }
        last = Some(k);
        seen.insert(k, ());
        if seen.len() > max {
            return None;
        }
    }
    let mut v: Vec<u64> = seen.into_keys().collect();
    v.sort_unstable();
    Some(v)
}

fn bits_for(k: usize) -> u32 {
    usize::BITS - (k.max(2) - 1).leading_zeros()
}

fn pack(idx: &[u8], bits: u32, out: &mut Vec<u8>) {
    let mut acc = 0u64;
    let mut nb = 0;
    for &i in idx {
        acc |= (i as u64) << nb;
        nb += bits;
        while nb >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            nb -= 8;
        }
    }
    if nb > 0 {
        out.push(acc as u8);
    }
}

fn unpack(input: &[u8], bits: u32, out: &mut [u8]) -> Result<()> {
    let need = (out.len() as u64 * bits as u64).div_ceil(8);
    if input.len() as u64 != need {
        return Err(Error::corrupt(format!("table: {} packed bytes, expected {need}", input.len())));
    }
    let mask = (1u64 << bits) - 1;
    let mut acc = 0u64;
    let mut nb = 0;
    let mut src = input.iter();
    for o in out.iter_mut() {
        while nb < bits {
            acc |= (*src.next().expect("length checked") as u64) << nb;
            nb += 8;
        }
        *o = (acc & mask) as u8;
        acc >>= bits;
        nb -= bits;
    }
    Ok(())
}

const TABLE_CODED: u8 = 0;
const TABLE_PACKED: u8 = 1;
const TABLE_FALLBACK: u8 = 2;

impl Codec for Table {
    fn spec(&self) -> String {
        "table".into()
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossless
    }
    fn encode(&self, info: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let w = value_width(info.dtype, data.len());
        let Some(values) = distinct_values(data, w, 256).filter(|v| !v.is_empty()) else {
            out.push(TABLE_FALLBACK);
            return Exp::default().encode(info, data, out);
        };
        let index: HashMap<u64, u8> = values.iter().enumerate().map(|(i, &v)| (v, i as u8)).collect();
        let idx: Vec<u8> = data.chunks_exact(w).map(|el| index[&key(el)]).collect();
        let mut coded = Vec::new();
        encode_stream(&idx, None, &mut coded)?;
        let bits = bits_for(values.len());
        let packed_len = (idx.len() as u64 * bits as u64).div_ceil(8) as usize;
        out.push(if coded.len() <= packed_len { TABLE_CODED } else { TABLE_PACKED });
        out.push((values.len() - 1) as u8);
        for v in &values {
            out.extend_from_slice(&v.to_le_bytes()[..w]);
        }
        if coded.len() <= packed_len {
            put_block(out, &coded)
        } else {
            let mut p = Vec::with_capacity(packed_len);
            pack(&idx, bits, &mut p);
            put_block(out, &p)
        }
    }
    fn decode(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        let mut r = Reader::new(input, "table");
        let mode = r.u8()?;
        if mode == TABLE_FALLBACK {
            return Exp::default().decode(info, r.rest(), out);
        }
        if mode > TABLE_FALLBACK {
            return Err(Error::corrupt(format!("table: unknown mode {mode}")));
        }
        let w = value_width(info.dtype, out.len());
        if w == 0 {
            return Err(Error::corrupt(format!(
                "table: {} bytes of {} cannot hold table values",
                out.len(),
                info.dtype
            )));
        }
        let k = r.u8()? as usize + 1;
        let table = r.bytes(k * w)?;
        let block = r.block()?;
        r.finish()?;
        let n = out.len() / w;
        let mut idx = vec![0u8; n];
        if mode == TABLE_CODED {
            decode_stream(block, None, &mut idx)?;
        } else {
            unpack(block, bits_for(k), &mut idx)?;
        }
        if idx.iter().any(|&i| i as usize >= k) {
            return Err(Error::corrupt(format!("table: index beyond the {k} values")));
        }
        if w == 1 {
            for (o, &i) in out.iter_mut().zip(&idx) {
                *o = table[i as usize];
            }
        } else {
            for (o, &i) in out.chunks_exact_mut(w).zip(&idx) {
                o.copy_from_slice(&table[i as usize * w..(i as usize + 1) * w]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::float::testdata::cases;
    use crate::codec::{build, decode_all, encode_all};

    fn info(dtype: DType) -> ChunkInfo<'static> {
        ChunkInfo { name: "t", dtype, shape: &[], offset: 0 }
    }

    #[test]
    fn const_and_table_round_trip_everything() {
        for spec in ["const", "table"] {
            let c = build(spec).unwrap();
            for case in cases() {
                let i = info(case.dtype);
                let enc = encode_all(&*c, &i, &case.data).unwrap();
                let dec = decode_all(&*c, &i, &enc, case.data.len()).unwrap();
                assert!(dec == case.data, "{spec} {} {}", case.name, case.dtype);
            }
        }
    }

    #[test]
    fn const_stores_one_value() {
        let data: Vec<u8> =
            std::iter::repeat_n(half::bf16::from_f32(0.5).to_bits().to_le_bytes(), 10_000).flatten().collect();
        let enc = encode_all(&Const, &info(DType::BF16), &data).unwrap();
        assert_eq!(enc.len(), 3);
        assert!(decode_all(&Const, &info(DType::BF16), &enc[..2], data.len()).is_err());
        assert!(decode_all(&Const, &info(DType::BF16), &enc, data.len() - 1).is_err());
    }

    #[test]
    fn table_codes_masks_and_ids_compactly() {
        // A causal mask as F32 0/1: ~1 bit per element or less.
        let n = 256;
        let mut data = Vec::new();
        for i in 0..n {
            for j in 0..n {
                data.extend_from_slice(&(if j <= i { 1.0f32 } else { 0.0 }).to_bits().to_le_bytes());
            }
        }
        let enc = encode_all(&Table, &info(DType::F32), &data).unwrap();
        assert!(enc.len() <= n * n / 8 + 64, "{}", enc.len());
        assert_eq!(decode_all(&Table, &info(DType::F32), &enc, data.len()).unwrap(), data);
        // Corrupt / truncated.
        for cut in 0..enc.len().min(200) {
            assert!(decode_all(&Table, &info(DType::F32), &enc[..cut], data.len()).is_err());
        }
        let mut rng = crate::tensor::synth::Rng::from_state(1);
        for _ in 0..200 {
            let mut b = enc.clone();
            let at = (rng.next_u64() % b.len() as u64) as usize;
            b[at] ^= 1 << (rng.next_u64() % 8);
            let _ = decode_all(&Table, &info(DType::F32), &b, data.len());
        }
        // 3 distinct I64 values, bit-packed or coded: <= 2 bits each.
        let ids: Vec<u8> = (0..3000u64).flat_map(|i| (i % 3).to_le_bytes()).collect();
        let enc = encode_all(&Table, &info(DType::I64), &ids).unwrap();
        assert!(enc.len() < 3000 * 2 / 8 + 64, "{}", enc.len());
        assert_eq!(decode_all(&Table, &info(DType::I64), &enc, ids.len()).unwrap(), ids);
    }

    #[test]
    fn bit_packing_is_inverse() {
        for bits in 1..=8u32 {
            let idx: Vec<u8> =
                (0..1003u32).map(|i| (i.wrapping_mul(2654435761) >> 20) as u8 & ((1u16 << bits) - 1) as u8).collect();
            let mut p = Vec::new();
            pack(&idx, bits, &mut p);
            let mut back = vec![0u8; idx.len()];
            unpack(&p, bits, &mut back).unwrap();
            assert_eq!(back, idx);
            assert!(unpack(&p[..p.len() - 1], bits, &mut back).is_err());
        }
    }
}
