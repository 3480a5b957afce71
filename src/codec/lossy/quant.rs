//! `int8:block=B` and `int4:block=B`: blockwise symmetric absmax quantization
//! (the Aveiro Qwen2-0.5B scheme).
//!
//! The chunk's elements, in order, are cut into blocks of B (the last block
//! may be shorter). Per block: s = max|w| / qmax (qmax = 127 or 7), rounded
//! to the stored scale type; q = clip(round_ties_even(w / s), -qmax, qmax);
//! the decoder writes q × s back in the tensor's own dtype. NaN and ±inf are
//! left out of max|w|, coded as q = 0, and stored exactly as exceptions, so
//! they come back bit for bit. No error bound is guaranteed (the error of a
//! block is s/2 except where clipping adds to it); the errors are measured.
//!
//! Scales: `scale=f16` stores them as F16; `scale=dtype` in the tensor's own
//! dtype; `scale=auto` (default) uses F16 for a chunk when every scale is 0
//! or a normal F16, else the dtype. int4 packs two values per byte: element
//! 2j in the low nibble, 2j+1 in the high one, each as q + 8 (1..=15).
//!
//! Selective by default (`select=auto`): tensors of 0 or 1 dims and tensors
//! whose name contains embed / norm / bias / ln_ / layernorm (any case) are
//! kept lossless, passed to the next stage unchanged; `select=all`
//! quantizes every float tensor. Non-float tensors always pass unchanged.
//!
//! Stream: `u8 mode` (0: kept, the chunk's bytes coded by the next stage;
//! 1: quantized), then for mode 1: `u8 scale type (0 F16, 1 dtype), u32 B,
//! u64 n_exceptions`, and three blocks coded by the next stage: scales,
//! codes, exceptions (u32 LE index + the element's bytes).

use super::super::{ChunkInfo, Codec, Fidelity, Params, Reader, StageDef, StageKind, chain_spec};
use super::{Fk, MODE_KEPT, MODE_QUANT, Mode, default_next, get_next, put_next, read_mode};
use crate::error::{Error, Result};
use half::f16;

pub const INT8: StageDef = StageDef {
    id: 65,
    name: "int8",
    version: 1,
    kind: StageKind::Transform,
    summary: "blockwise absmax int8 quantization (block=128, scale=auto|f16|dtype, select=auto|all); no bound, errors measured",
    examples: &[
        "int8:block=128,scale=auto,select=auto>zstd:level=3",
        "int8:block=32,scale=dtype,select=all>raw",
        "int8:block=7,scale=f16,select=all>lz4",
    ],
    build: |p: &mut Params, next| BlockQuant::build(8, p, next),
};

pub const INT4: StageDef = StageDef {
    id: 66,
    name: "int4",
    version: 1,
    kind: StageKind::Transform,
    summary: "blockwise absmax int4 quantization, two values per byte (block=128, scale=auto|f16|dtype, select=auto|all)",
    examples: &[
        "int4:block=128,scale=auto,select=auto>zstd:level=3",
        "int4:block=33,scale=dtype,select=all>raw",
        "int4:block=7,scale=f16,select=all>lz4",
    ],
    build: |p: &mut Params, next| BlockQuant::build(4, p, next),
};

const SCALE_F16: u8 = 0;
const SCALE_DTYPE: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScaleMode {
    Auto,
    F16,
    DType,
}

pub struct BlockQuant {
    bits: u32,
    block: usize,
    select_all: bool,
    scale: ScaleMode,
    next: Box<dyn Codec>,
}

/// Name patterns of tensors kept lossless under `select=auto`.
pub const KEEP_PATTERNS: [&str; 5] = ["embed", "norm", "bias", "ln_", "layernorm"];

/// Whether `select=auto` keeps this tensor lossless.
pub fn keep_lossless(name: &str, shape: &[u64]) -> bool {
    let lower = name.to_ascii_lowercase();
    shape.len() <= 1 || KEEP_PATTERNS.iter().any(|p| lower.contains(p))
}

impl BlockQuant {
    fn build(bits: u32, p: &mut Params, next: Option<Box<dyn Codec>>) -> Result<Box<dyn Codec>> {
        let block = p.int("block", 128, 1, 1 << 24)? as usize;
        let select_all = match p.string("select").as_deref() {
            None | Some("auto") => false,
            Some("all") => true,
            Some(s) => return Err(Error::invalid(format!("int{bits}: select={s}: expected auto or all"))),
        };
        let scale = match p.string("scale").as_deref() {
            None | Some("auto") => ScaleMode::Auto,
            Some("f16") => ScaleMode::F16,
            Some("dtype") => ScaleMode::DType,
            Some(s) => return Err(Error::invalid(format!("int{bits}: scale={s}: expected auto, f16 or dtype"))),
        };
        Ok(Box::new(BlockQuant { bits, block, select_all, scale, next: default_next(next)? }))
    }
    fn qmax(&self) -> f64 {
        ((1u32 << (self.bits - 1)) - 1) as f64
    }
    fn code_bytes(&self, n: usize) -> usize {
        if self.bits == 8 { n } else { n.div_ceil(2) }
    }
    fn scale_size(kind: u8, fk: Fk) -> usize {
        if kind == SCALE_F16 { 2 } else { fk.size() }
    }
}

/// Quantize one value with scale `s` to an integer in [-qmax, qmax].
#[inline]
pub fn quantize(x: f64, s: f64, qmax: f64) -> i32 {
    if s.is_nan() || s <= 0.0 || !x.is_finite() {
        return 0;
    }
    (x / s).round_ties_even().clamp(-qmax, qmax) as i32
}

impl Codec for BlockQuant {
    fn spec(&self) -> String {
        let scale = match self.scale {
            ScaleMode::Auto => "auto",
            ScaleMode::F16 => "f16",
            ScaleMode::DType => "dtype",
        };
        let select = if self.select_all { "all" } else { "auto" };
        chain_spec(&format!("int{}:block={},scale={scale},select={select}", self.bits, self.block), self.next.as_ref())
    }

    fn fidelity(&self) -> Fidelity {
        Fidelity::Lossy { bound: None }
    }

    fn encode(&self, info: &ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let sub = info.as_bytes();
        let fk = match Fk::of(info.dtype) {
            Some(fk) if self.select_all || !keep_lossless(info.name, info.shape) => fk,
            _ => {
                out.push(MODE_KEPT);
                return put_next(self.next.as_ref(), &sub, data, out);
            }
        };
        let w = fk.size();
        let x = fk.values(data)?;
        let n = x.len();
        if n > u32::MAX as usize {
            return Err(Error::unsupported("int quantization: chunk of more than 2^32 elements"));
        }
        let qmax = self.qmax();
        let exact: Vec<f64> = x
            .chunks(self.block)
            .map(|b| b.iter().filter(|v| v.is_finite()).fold(0f64, |m, v| m.max(v.abs())) / qmax)
            .collect();
        let f16_ok = |s: f64| s == 0.0 || (s >= f16::MIN_POSITIVE.to_f64() && s <= f16::MAX.to_f64());
        let kind = match self.scale {
            ScaleMode::F16 => SCALE_F16,
            ScaleMode::DType => SCALE_DTYPE,
            ScaleMode::Auto if exact.iter().all(|&s| f16_ok(s)) => SCALE_F16,
            ScaleMode::Auto => SCALE_DTYPE,
        };
        let ssize = Self::scale_size(kind, fk);
        let mut scale_bytes = vec![0u8; exact.len() * ssize];
        let mut scales = Vec::with_capacity(exact.len());
        for (s, o) in exact.iter().zip(scale_bytes.chunks_exact_mut(ssize)) {
            let stored = if kind == SCALE_F16 {
                let mut h = f16::from_f64(*s);
                if h.is_infinite() {
                    h = f16::MAX;
                }
                // A scale rounded up can make qmax × s overflow the dtype
                // (F16 max 65504: 127 × 516 = 65532 rounds to inf): a
                // finite value would decode as infinity. Step it down.
                while h > f16::ZERO && fk.round(qmax * h.to_f64()).is_infinite() {
                    h = f16::from_bits(h.to_bits() - 1);
                }
                o.copy_from_slice(&h.to_le_bytes());
                h.to_f64()
            } else {
                let mut v = fk.round(*s);
                while v > 0.0 && fk.round(qmax * v).is_infinite() {
                    v = fk.next_down(v);
                }
                fk.store(v, o);
                v
            };
            scales.push(stored);
        }
        let mut q = Vec::with_capacity(n);
        let mut exceptions = Vec::new();
        for (b, (xs, &s)) in x.chunks(self.block).zip(&scales).enumerate() {
            for (j, &v) in xs.iter().enumerate() {
                q.push(quantize(v, s, qmax));
                if !v.is_finite() {
                    let i = b * self.block + j;
                    exceptions.extend_from_slice(&(i as u32).to_le_bytes());
                    exceptions.extend_from_slice(&data[i * w..(i + 1) * w]);
                }
            }
        }
        let codes = if self.bits == 8 { q.iter().map(|&v| v as i8 as u8).collect() } else { pack_int4(&q) };
        out.push(MODE_QUANT);
        out.push(kind);
        out.extend_from_slice(&(self.block as u32).to_le_bytes());
        out.extend_from_slice(&((exceptions.len() / (4 + w)) as u64).to_le_bytes());
        put_next(self.next.as_ref(), &sub, &scale_bytes, out)?;
        put_next(self.next.as_ref(), &sub, &codes, out)?;
        put_next(self.next.as_ref(), &sub, &exceptions, out)
    }

    fn decode(&self, info: &ChunkInfo, input: &[u8], out: &mut [u8]) -> Result<()> {
        let sub = info.as_bytes();
        let what = if self.bits == 8 { "int8" } else { "int4" };
        let mut r = Reader::new(input, what);
        let (fk, n) = match read_mode(&mut r, what, info.dtype, out.len())? {
            Mode::Kept => {
                self.next.decode(&sub, r.block()?, out)?;
                return r.finish();
            }
            Mode::Quant { fk, n } => (fk, n),
        };
        let w = fk.size();
        let kind = r.u8()?;
        if kind != SCALE_F16 && kind != SCALE_DTYPE {
            return Err(Error::corrupt(format!("{what}: unknown scale type {kind}")));
        }
        let block = r.u32()? as usize;
        if block != self.block {
            return Err(Error::corrupt(format!("{what}: block {block} recorded, the spec says {}", self.block)));
        }
        let n_exc = r.u64()?;
        if n_exc > n as u64 {
            return Err(Error::corrupt(format!("{what}: {n_exc} exceptions for {n} elements")));
        }
        let ssize = Self::scale_size(kind, fk);
        let nblocks = n.div_ceil(block);
        let scale_bytes = get_next(self.next.as_ref(), &sub, &mut r, nblocks * ssize)?;
        let codes = get_next(self.next.as_ref(), &sub, &mut r, self.code_bytes(n))?;
        let exceptions = get_next(self.next.as_ref(), &sub, &mut r, n_exc as usize * (4 + w))?;
        r.finish()?;
        let scales: Vec<f64> = scale_bytes
            .chunks_exact(ssize)
            .map(|b| if kind == SCALE_F16 { f16::from_le_bytes([b[0], b[1]]).to_f64() } else { fk.load(b) })
            .collect();
        let q: Vec<i32> =
            if self.bits == 8 { codes.iter().map(|&b| b as i8 as i32).collect() } else { unpack_int4(&codes, n)? };
        for (i, (o, &qi)) in out.chunks_exact_mut(w).zip(&q).enumerate() {
            let s = scales[i / block];
            fk.store(fk.round(qi as f64 * s), o);
        }
        for e in exceptions.chunks_exact(4 + w) {
            let i = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) as usize;
            let o = out
                .get_mut(i * w..(i + 1) * w)
                .ok_or_else(|| Error::corrupt(format!("{what}: exception at element {i} of {n}")))?;
            o.copy_from_slice(&e[4..]);
        }
        Ok(())
    }
}

/// Two 4-bit values per byte: element 2j low nibble, 2j+1 high, as q + 8.
/// An odd count leaves the last high nibble 0.
pub fn pack_int4(q: &[i32]) -> Vec<u8> {
    q.chunks(2)
        .map(|p| {
            let lo = (p[0] + 8) as u8 & 0x0f;
            let hi = p.get(1).map_or(0, |&v| ((v + 8) as u8 & 0x0f) << 4);
            lo | hi
        })
        .collect()
}

/// Inverse of [`pack_int4`]; nibble 0 (q = -8, never written) and a
/// nonzero padding nibble are corruption.
pub fn unpack_int4(bytes: &[u8], n: usize) -> Result<Vec<i32>> {
    if bytes.len() != n.div_ceil(2) {
        return Err(Error::corrupt(format!("int4: {} bytes for {n} values", bytes.len())));
    }
    let mut q = Vec::with_capacity(n);
    for (j, &b) in bytes.iter().enumerate() {
        for (k, nib) in [b & 0x0f, b >> 4].into_iter().enumerate() {
            if 2 * j + k >= n {
                if nib != 0 {
                    return Err(Error::corrupt("int4: nonzero padding nibble"));
                }
                continue;
            }
            if nib == 0 {
                return Err(Error::corrupt(format!("int4: invalid code 0 at element {}", 2 * j + k)));
            }
            q.push(nib as i32 - 8);
        }
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::super::testdata::{Rng, adversarial, to_bytes};
    use super::*;
    use crate::codec::{build, decode_all, encode_all};
    use crate::metrics::error::error_stats;
    use crate::tensor::DType;

    fn f32s(b: &[u8]) -> Vec<f32> {
        b.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn int4_packing_round_trip() {
        for n in [0usize, 1, 2, 3, 15, 16, 17, 1001] {
            let q: Vec<i32> = (0..n).map(|i| (i as i32 * 5) % 15 - 7).collect();
            let p = pack_int4(&q);
            assert_eq!(p.len(), n.div_ceil(2));
            assert_eq!(unpack_int4(&p, n).unwrap(), q);
        }
        assert_eq!(pack_int4(&[-7, 7]), [0x01 | 0xf0]);
        assert_eq!(pack_int4(&[0]), [0x08]);
        assert!(unpack_int4(&[0x08 | 0x10], 1).is_err()); // padding not zero
        assert!(unpack_int4(&[0x80], 2).is_err()); // code 0
        assert!(unpack_int4(&[0x88], 3).is_err()); // wrong length
    }

    #[test]
    fn quantization_matches_hand_computed_example() {
        // block of 4: max|w| = 1.27 -> int8 scale 0.01 (as F16: 0.0099983...)
        let w = [1.27f32, -0.5, 0.004, 0.006];
        let data: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
        let c = build("int8:block=4,scale=dtype,select=all>raw").unwrap();
        let info = ChunkInfo { name: "w", dtype: DType::F32, shape: &[2, 2], offset: 0 };
        let enc = encode_all(&*c, &info, &data).unwrap();
        // mode 1, scale type 1, block 4, 0 exceptions; scales block: one F32
        assert_eq!(&enc[..6], &[MODE_QUANT, SCALE_DTYPE, 4, 0, 0, 0]);
        let s = f32::from_le_bytes(enc[18..22].try_into().unwrap());
        assert_eq!(s, (1.27f32 as f64 / 127.0) as f32);
        // codes: 127, -50, round(0.4) = 0, round(0.6) = 1
        assert_eq!(&enc[26..30], &[127u8, (-50i8) as u8, 0, 1]);
        let dec = f32s(&decode_all(&*c, &info, &enc, 16).unwrap());
        let sf = s as f64;
        let want: Vec<f32> = [127.0, -50.0, 0.0, 1.0].iter().map(|q| (q * sf) as f32).collect();
        assert_eq!(dec, want);
        // int4: scale 1.27 / 7; codes 7, round(-2.755) = -3, 0, 0
        let c = build("int4:block=4,scale=dtype,select=all>raw").unwrap();
        let enc = encode_all(&*c, &info, &data).unwrap();
        assert_eq!(&enc[26..28], &[15u8 | (5 << 4), 8 | (8 << 4)]); // q + 8
        // ties go to even: 2.5 -> 2, 3.5 -> 4
        assert_eq!((quantize(2.5, 1.0, 7.0), quantize(3.5, 1.0, 7.0), quantize(-9.0, 1.0, 7.0)), (2, 4, -7));
    }

    #[test]
    fn round_trip_error_is_within_half_a_step_per_block() {
        let mut rng = Rng::new(21);
        let v: Vec<f64> = (0..4099).map(|_| rng.normal(0.05)).collect();
        for (fk, dtype) in [(Fk::F32, DType::F32), (Fk::BF16, DType::BF16), (Fk::F16, DType::F16)] {
            let data = to_bytes(fk, &v);
            let x = fk.values(&data).unwrap();
            for spec in ["int8:block=64", "int4:block=128", "int8:block=32,scale=dtype"] {
                let c = build(spec).unwrap();
                let info = ChunkInfo { name: "layer.0.mlp.w", dtype, shape: &[1, 4099], offset: 0 };
                let enc = encode_all(&*c, &info, &data).unwrap();
                assert!(enc.len() < data.len(), "{spec} {dtype}");
                let dec = fk.values(&decode_all(&*c, &info, &enc, data.len()).unwrap()).unwrap();
                let block: usize = spec.split(['=', ',']).nth(1).unwrap().parse().unwrap();
                let qmax = if spec.starts_with("int8") { 127.0 } else { 7.0 };
                for (xb, db) in x.chunks(block).zip(dec.chunks(block)) {
                    let amax = xb.iter().fold(0f64, |m, v| m.max(v.abs()));
                    // half a step, plus scale rounding (F16 / dtype) and the
                    // rounding of the value to the dtype
                    let tol = amax / qmax * 0.5 * 1.01 + amax * 2f64.powi(-8);
                    for (a, b) in xb.iter().zip(db) {
                        assert!((a - b).abs() <= tol, "{spec} {dtype}: {a} vs {b} (tol {tol})");
                    }
                }
            }
        }
    }

    #[test]
    fn adversarial_tensors_round_trip_without_surprises() {
        for (fk, dtype) in [(Fk::F32, DType::F32), (Fk::BF16, DType::BF16), (Fk::F16, DType::F16)] {
            for (what, v) in adversarial(3) {
                let data = to_bytes(fk, &v);
                for spec in
                    ["int8:block=128,select=all", "int4:block=32,select=all", "int4:block=7,select=all,scale=f16"]
                {
                    let c = build(spec).unwrap();
                    let info = ChunkInfo { name: what, dtype, shape: &[v.len() as u64], offset: 0 };
                    let enc = encode_all(&*c, &info, &data).unwrap();
                    let dec = decode_all(&*c, &info, &enc, data.len()).unwrap();
                    let s = error_stats(dtype, &data, &dec, None).unwrap();
                    assert_eq!(s.n_nonfinite_mismatch, 0, "{spec} {dtype} {what}");
                    if what == "all_zero" || what == "empty" {
                        assert_eq!(s.max_abs, 0.0);
                    }
                    // specials bit for bit
                    let w = fk.size();
                    for (i, x) in v.iter().enumerate() {
                        if !x.is_finite() {
                            assert_eq!(dec[i * w..(i + 1) * w], data[i * w..(i + 1) * w]);
                        }
                    }
                    // constant block: exact at int8 (q = qmax), and the
                    // error never exceeds the block's max |w|
                    if what == "constant" {
                        assert!(s.max_rel <= 1.0 / 127.0 / 2.0 + 1e-3 || spec.starts_with("int4"));
                    }
                }
            }
        }
    }

    #[test]
    fn selective_by_default() {
        let mut rng = Rng::new(1);
        let v: Vec<f64> = (0..512).map(|_| rng.normal(0.05)).collect();
        let data = to_bytes(Fk::F32, &v);
        let c = build("int8").unwrap();
        assert_eq!(c.spec(), "int8:block=128,scale=auto,select=auto>zstd:level=3");
        for (name, shape, kept) in [
            ("encoder.layer.0.attention.self.query.weight", &[16u64, 32][..], false),
            ("embeddings.word_embeddings.weight", &[16, 32], true),
            ("encoder.layer.0.output.LayerNorm.weight", &[16, 32], true),
            ("model.norm.weight", &[16, 32], true),
            ("h.0.ln_1.weight", &[16, 32], true),
            ("encoder.layer.0.attention.self.query.bias", &[16, 32], true),
            ("some.vector", &[512], true),
        ] {
            let info = ChunkInfo { name, dtype: DType::F32, shape, offset: 0 };
            let enc = encode_all(&*c, &info, &data).unwrap();
            assert_eq!(enc[0] == MODE_KEPT, kept, "{name}");
            let dec = decode_all(&*c, &info, &enc, data.len()).unwrap();
            assert_eq!(dec == data, kept, "{name}");
        }
        let all = build("int4:select=all").unwrap();
        let info = ChunkInfo { name: "embeddings.weight", dtype: DType::F32, shape: &[512], offset: 0 };
        assert_eq!(encode_all(&*all, &info, &data).unwrap()[0], MODE_QUANT);
        assert!(build("int8:select=some").is_err());
        assert!(build("int8:block=0").is_err());
        assert!(build("int8:scale=f8").is_err());
    }

    /// F16's largest values: max|w| / 127 rounds up to a scale whose
    /// product with 127 overflows F16 (found by tests/conformance.rs: the
    /// element decoded as infinity). Every scale type, int8 and int4.
    #[test]
    fn a_scale_rounded_up_never_decodes_a_finite_value_as_infinity() {
        for (fk, dtype, max) in [(Fk::F16, DType::F16, 65504.0), (Fk::BF16, DType::BF16, half::bf16::MAX.to_f64())] {
            let v: Vec<f64> = (0..256).map(|i| if i % 5 == 0 { -max } else { (i as f64 - 128.0) * 3.0 }).collect();
            let data = to_bytes(fk, &v);
            for spec in [
                "int8:select=all",
                "int8:scale=f16,select=all",
                "int8:scale=dtype,select=all",
                "int4:select=all",
                "int4:scale=dtype,select=all",
            ] {
                if dtype == DType::BF16 && spec.contains("f16") {
                    continue; // BF16's max is far beyond an F16 scale's (clamped by design)
                }
                let c = build(spec).unwrap();
                let info = ChunkInfo { name: "w", dtype, shape: &[16, 16], offset: 0 };
                let dec = decode_all(&*c, &info, &encode_all(&*c, &info, &data).unwrap(), data.len()).unwrap();
                let s = error_stats(dtype, &data, &dec, None).unwrap();
                assert_eq!(s.n_nonfinite_mismatch, 0, "{spec} {dtype}: a finite value decoded as inf");
                let qmax = if spec.starts_with("int8") { 127.0 } else { 7.0 };
                assert!(s.max_abs <= max / qmax, "{spec} {dtype}: more than a step off: {s:?}");
            }
        }
    }

    #[test]
    fn scale_falls_back_to_dtype_when_f16_cannot_hold_it() {
        let v: Vec<f64> = (0..256).map(|i| (i as f64 - 128.0) * 1e-9).collect();
        let data = to_bytes(Fk::F32, &v);
        let c = build("int8:select=all").unwrap();
        let info = ChunkInfo { name: "w", dtype: DType::F32, shape: &[256], offset: 0 };
        let enc = encode_all(&*c, &info, &data).unwrap();
        assert_eq!(enc[1], SCALE_DTYPE);
        let dec = f32s(&decode_all(&*c, &info, &enc, data.len()).unwrap());
        assert!((dec[0] as f64 + 128e-9).abs() < 1e-10);
    }

    #[test]
    fn corrupt_and_truncated_streams_give_errors() {
        let mut rng = Rng::new(4);
        let v: Vec<f64> = (0..1001).map(|i| if i == 500 { f64::NAN } else { rng.normal(0.05) }).collect();
        let data = to_bytes(Fk::BF16, &v);
        for spec in ["int8:select=all", "int4:select=all", "int4:select=all>raw"] {
            let c = build(spec).unwrap();
            let info = ChunkInfo { name: "w", dtype: DType::BF16, shape: &[1001], offset: 0 };
            let enc = encode_all(&*c, &info, &data).unwrap();
            for cut in 0..enc.len() {
                assert!(decode_all(&*c, &info, &enc[..cut], data.len()).is_err(), "{spec} cut {cut}");
            }
            for pos in 0..enc.len().min(400) {
                let mut bad = enc.clone();
                bad[pos] ^= 0xa5;
                let _ = decode_all(&*c, &info, &bad, data.len()); // never panics
            }
            assert!(decode_all(&*c, &info, &enc, data.len() + 2).is_err());
        }
        // an exception index past the end
        let c = build("int8:select=all>raw").unwrap();
        let info = ChunkInfo { name: "w", dtype: DType::BF16, shape: &[1001], offset: 0 };
        let mut enc = encode_all(&*c, &info, &data).unwrap();
        let n = enc.len();
        enc[n - 6..n - 2].copy_from_slice(&5000u32.to_le_bytes());
        assert!(decode_all(&*c, &info, &enc, data.len()).is_err());
    }
}
