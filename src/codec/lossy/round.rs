//! `round:bits=K`: keep K explicit mantissa bits, rounding to nearest even,
//! then a lossless stage (default: `auto` when this build registers it,
//! else `planes>zstd:level=3`). The simplest near-lossless point.
//!
//! Rounding works on the bit pattern: add half an ulp (minus one, plus the
//! kept LSB for ties-to-even) and clear the dropped bits; a carry out of the
//! mantissa moves into the exponent, which is exactly right (1.11…1 rounds
//! to 10.0). A finite value that would round up to infinity is rounded down
//! to the largest finite K-bit value instead (still within the bound, see
//! below). NaN, ±inf, zeros and subnormals are left untouched (a subnormal
//! has fewer significant bits, and rounding it could break the relative
//! bound). K at or above the dtype's mantissa width changes nothing.
//!
//! Bound: pointwise relative, |x - x'| <= 2^-(K+1) |x|. For x in
//! [2^e, 2^(e+1)) RNE moves x by at most 2^(e-K-1); rounding down near the
//! overflow moves it by less than 2^(e-K) while |x| > 2^(e+1) - 2^(e-K),
//! which is again at most 2^-(K+1) relative.
//!
//! The stream is the lossless stage's stream of the rounded tensor; the
//! rounded tensor keeps its dtype, so a float-aware stage sees it as such.

use super::super::{ChunkInfo, Codec, ErrorBound, Fidelity, Params, StageDef, StageKind, chain_spec};
use crate::error::{Error, Result};
use crate::tensor::DType;

pub const ROUND: StageDef = StageDef {
    id: 67,
    name: "round",
    version: 1,
    kind: StageKind::Transform,
    summary: "mantissa rounded to bits=K (RNE), then a lossless stage (default auto, else planes>zstd); bound |x-x'| <= 2^-(K+1)|x|",
    examples: &["round:bits=4>auto", "round:bits=0>planes>zstd:level=3", "round:bits=10>exp:gain=2"],
    build: |p: &mut Params, next| {
        let bits = p.string("bits").ok_or_else(|| Error::invalid("round needs bits=K (mantissa bits kept, 0..=52)"))?;
        let bits: u32 = bits
            .parse()
            .ok()
            .filter(|b| *b <= 52)
            .ok_or_else(|| Error::invalid(format!("round: bits={bits} is not an integer in 0..=52")))?;
        let next = match next {
            Some(n) => super::lossless_next(n)?,
            None if super::super::stage_def("auto").is_some() => super::super::build("auto")?,
            None => super::super::build("planes>zstd:level=3")?,
        };
        Ok(Box::new(Round { bits, next }))
    },
};

pub struct Round {
    bits: u32,
    next: Box<dyn Codec>,
}

/// Round the bit pattern `v` of a float with `exp_bits`/`mant_bits` (the
/// sign bit just above the exponent) to `keep` mantissa bits.
#[inline]
pub fn round_bits(v: u64, exp_bits: u32, mant_bits: u32, keep: u32) -> u64 {
    if keep >= mant_bits {
        return v;
    }
    let d = mant_bits - keep;
    let sign = 1u64 << (exp_bits + mant_bits);
    let exp_mask = ((1u64 << exp_bits) - 1) << mant_bits;
    let e = v & exp_mask;
    if e == 0 || e == exp_mask {
        return v; // zero, subnormal, inf, NaN
    }
    let mag = v & !sign & (sign - 1);
    let lsb = (mag >> d) & 1;
    let mut r = (mag + (1u64 << (d - 1)) - 1 + lsb) & !((1u64 << d) - 1);
    if r >= exp_mask {
        // would overflow to infinity: the largest finite value with K bits
        r = (exp_mask - 1) & !((1u64 << d) - 1);
    }
    (v & sign) | r
}

/// Round every element of `data` (a `dtype` tensor) in place.
pub fn round_in_place(dtype: DType, data: &mut [u8], keep: u32) {
    let Some(l) = dtype.float_layout() else { return };
    if l.sign_bits != 1 {
        return;
    }
    let (e, m) = (l.exp_bits, l.mant_bits);
    match dtype {
        DType::F32 => {
            for c in data.chunks_exact_mut(4) {
                let v = u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u64;
                c.copy_from_slice(&(round_bits(v, e, m, keep) as u32).to_le_bytes());
            }
        }
        DType::F16 | DType::BF16 => {
            for c in data.chunks_exact_mut(2) {
                let v = u16::from_le_bytes([c[0], c[1]]) as u64;
                c.copy_from_slice(&(round_bits(v, e, m, keep) as u16).to_le_bytes());
            }
        }
        DType::F64 => {
            for c in data.chunks_exact_mut(8) {
                let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                c.copy_from_slice(&round_bits(v, e, m, keep).to_le_bytes());
            }
        }
        // one-byte floats (F8 E4M3 / E5M2): the same on one byte
        DType::F8E4M3 | DType::F8E5M2 => {
            for c in data.iter_mut() {
                *c = round_bits(*c as u64, e, m, keep) as u8;
            }
        }
        _ => {}
    }
}

impl Codec for Round {
    fn spec(&self) -> String {
        chain_spec(&format!("round:bits={}", self.bits), self.next.as_ref())
    }
    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossy { bound: Some(ErrorBound::PointwiseRel(2f64.powi(-(self.bits as i32 + 1)))) }
    }
    fn encode(&self, info: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut rounded = data.to_vec();
        round_in_place(info.dtype, &mut rounded, self.bits);
        self.next.encode(info, &rounded, out)
    }
    fn decode(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        self.next.decode(info, input, out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Fk;
    use super::super::testdata::{Rng, adversarial, to_bytes};
    use super::*;
    use crate::codec::{build, decode_all, encode_all};
    use crate::metrics::error::error_stats;

    #[test]
    fn rne_by_hand() {
        // F32, keep 1 bit: 1.25 (1.01b) is a tie -> even 1.0; 1.75 (1.11b) -> 2.0
        // (carry into the exponent); 1.375 (1.011b) -> 1.5
        let r = |x: f32, k| f32::from_bits(round_bits(x.to_bits() as u64, 8, 23, k) as u32);
        assert_eq!(r(1.25, 1), 1.0);
        assert_eq!(r(1.75, 1), 2.0);
        assert_eq!(r(1.375, 1), 1.5);
        assert_eq!(r(-1.375, 1), -1.5);
        // K = 0: ties go to the even bit pattern (the exponent's LSB)
        assert_eq!(r(3.0, 0), 2.0);
        assert_eq!(r(6.0, 0), 8.0);
        assert_eq!(r(2.5, 0), 2.0);
        assert_eq!(r(3.5, 0), 4.0);
        assert_eq!(r(f32::MAX, 0), 2f32.powi(127)); // not inf
        assert_eq!(r(f32::MAX, 3), 1.875 * 2f32.powi(127));
        assert!(r(f32::NAN, 0).is_nan());
        assert_eq!(r(f32::INFINITY, 0), f32::INFINITY);
        assert_eq!(r(-0.0, 0).to_bits(), (-0.0f32).to_bits());
        let sub = f32::from_bits(3);
        assert_eq!(r(sub, 0).to_bits(), 3);
        assert_eq!(r(1.2345, 30).to_bits(), 1.2345f32.to_bits());
    }

    #[test]
    fn bound_holds_on_adversarial_tensors() {
        for (fk, dtype) in
            [(Fk::F32, DType::F32), (Fk::BF16, DType::BF16), (Fk::F16, DType::F16), (Fk::F64, DType::F64)]
        {
            for (what, mut v) in adversarial(5) {
                v.extend([f64::MAX, -f64::MAX, 65504.0, 1.0 - 1e-9]);
                let data = to_bytes(fk, &v);
                for k in [0u32, 1, 3, 6, 7, 10, 23] {
                    let c = build(&format!("round:bits={k}")).unwrap();
                    let info = ChunkInfo { name: what, dtype, shape: &[v.len() as u64], offset: 0 };
                    let enc = encode_all(&*c, &info, &data).unwrap();
                    let dec = decode_all(&*c, &info, &enc, data.len()).unwrap();
                    let Fidelity::Lossy { bound } = c.fidelity() else { unreachable!() };
                    assert_eq!(bound, Some(ErrorBound::PointwiseRel(2f64.powi(-(k as i32) - 1))));
                    let s = error_stats(dtype, &data, &dec, bound).unwrap();
                    assert_eq!(s.bound_held, Some(true), "{dtype} {what} K={k} {s:?}");
                    let w = fk.size();
                    for (i, x) in v.iter().enumerate() {
                        if !x.is_finite() {
                            assert_eq!(dec[i * w..(i + 1) * w], data[i * w..(i + 1) * w]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rounding_is_idempotent_and_makes_low_bits_zero() {
        let mut rng = Rng::new(8);
        let v: Vec<f64> = (0..4096).map(|_| rng.normal(0.05)).collect();
        let data = to_bytes(Fk::F32, &v);
        let mut a = data.clone();
        round_in_place(DType::F32, &mut a, 7);
        let mut b = a.clone();
        round_in_place(DType::F32, &mut b, 7);
        assert_eq!(a, b);
        for c in a.chunks(4) {
            let bits = u32::from_le_bytes(c.try_into().unwrap());
            assert_eq!(bits & 0xffff, 0);
        }
        // rounded F32 to 7 bits is what BF16 RNE gives (normal values)
        for (c, x) in a.chunks(4).zip(&v) {
            let want = half::bf16::from_f32(*x as f32).to_f32();
            assert_eq!(f32::from_le_bytes(c.try_into().unwrap()), want);
        }
        // and compresses better than the original
        let c7 = build("round:bits=7>planes>zstd:level=3").unwrap();
        let raw = build("planes>zstd:level=3").unwrap();
        let info = ChunkInfo { name: "w", dtype: DType::F32, shape: &[4096], offset: 0 };
        assert!(encode_all(&*c7, &info, &data).unwrap().len() * 2 < encode_all(&*raw, &info, &data).unwrap().len());
    }

    #[test]
    fn spec_and_errors() {
        assert!(build("round").is_err());
        assert!(build("round:bits=53").is_err());
        assert!(build("round:bits=x").is_err());
        assert!(build("round:bits=3>int8").is_err());
        assert!(build("sz:abs=1e-3>round:bits=3").is_err());
        assert!(build("int4>sz:abs=1").is_err());
        let c = build("round:bits=3>zstd:level=1").unwrap();
        assert_eq!(c.spec(), "round:bits=3>zstd:level=1");
        let info = ChunkInfo { name: "w", dtype: DType::F32, shape: &[4], offset: 0 };
        let enc = encode_all(&*c, &info, &[0u8; 16]).unwrap();
        assert!(decode_all(&*c, &info, &enc[..enc.len() - 1], 16).is_err());
    }
}
