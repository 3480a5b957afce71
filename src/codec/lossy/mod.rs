//! Lossy codecs: each declares what it guarantees ([`super::Fidelity`]) and
//! decodes back to the tensor's own dtype, so the decoded file loads anywhere.
//!
//! | stage | id | what | bound |
//! |---|---|---|---|
//! | `sz:abs=E` / `sz:rel=E` | 64 | SZ-style prediction + error-bounded linear quantization | \|x-x'\| <= E (rel: E × the chunk's value range) |
//! | `int8:block=B` | 65 | blockwise symmetric absmax quantization to 8 bits | none guaranteed (measured) |
//! | `int4:block=B` | 66 | the same to 4 bits, two values per byte | none guaranteed (measured) |
//! | `round:bits=K` | 67 | mantissa rounded to K bits (RNE), then a lossless coder | \|x-x'\| <= 2^-(K+1) \|x\| |
//!
//! Every stage is a transform: the byte streams it produces (quantization
//! codes, scales, values stored exactly) are coded by the next stage
//! (default `zstd:level=3`; `round` hands its rounded tensor to a
//! float-aware lossless stage). Non-float tensors (I64 position ids, masks)
//! pass to the next stage unchanged, so a whole model can be compressed with
//! one spec. The container decodes every lossy chunk again and checks the
//! declared bound with [`crate::metrics::error::error_stats`] before it
//! writes anything.

#[cfg(test)]
mod measure;
pub mod quant;
pub mod round;
pub mod sz;

use crate::error::{Error, Result};
use crate::tensor::DType;

pub use quant::{INT4, INT8};
pub use round::ROUND;
pub use sz::SZ;

/// The first byte of a stream of the stages that quantize some tensors and
/// pass the others on whole (`int8`/`int4`, the low-precision formats).
pub(crate) const MODE_KEPT: u8 = 0;
pub(crate) const MODE_QUANT: u8 = 1;

/// What [`read_mode`] found.
pub(crate) enum Mode {
    /// Passed on whole to the next stage: its block follows.
    Kept,
    /// Quantized: `n` elements of this float kind.
    Quant { fk: Fk, n: usize },
}

/// Read the mode byte of such a stream for `len` bytes of `dtype`,
/// refusing a quantized stream for a dtype that is not a float or a length
/// that is not whole elements.
pub(crate) fn read_mode(r: &mut super::Reader<'_>, what: &str, dtype: DType, len: usize) -> Result<Mode> {
    let mode = r.u8()?;
    if mode == MODE_KEPT {
        return Ok(Mode::Kept);
    }
    let Some(fk) = Fk::of(dtype).filter(|_| mode == MODE_QUANT) else {
        return Err(Error::corrupt(format!("{what}: mode {mode} for a {dtype} tensor")));
    };
    if !len.is_multiple_of(fk.size()) {
        return Err(Error::corrupt(format!("{what}: {len} bytes is not whole {dtype} elements")));
    }
    Ok(Mode::Quant { fk, n: len / fk.size() })
}

/// The float dtypes the lossy codecs quantize.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fk {
    F16,
    BF16,
    F32,
    F64,
}

impl Fk {
    pub(crate) fn of(d: DType) -> Option<Fk> {
        match d {
            DType::F16 => Some(Fk::F16),
            DType::BF16 => Some(Fk::BF16),
            DType::F32 => Some(Fk::F32),
            DType::F64 => Some(Fk::F64),
            _ => None,
        }
    }
    pub(crate) fn size(self) -> usize {
        match self {
            Fk::F16 | Fk::BF16 => 2,
            Fk::F32 => 4,
            Fk::F64 => 8,
        }
    }
    /// One element's value.
    #[inline(always)]
    pub(crate) fn load(self, b: &[u8]) -> f64 {
        match self {
            Fk::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
            Fk::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
            Fk::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64,
            Fk::F64 => f64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
        }
    }
    /// Every element's value; errors if `data` is not whole elements.
    pub(crate) fn values(self, data: &[u8]) -> Result<Vec<f64>> {
        let w = self.size();
        if !data.len().is_multiple_of(w) {
            return Err(Error::invalid(format!("{} bytes is not a whole number of {w}-byte floats", data.len())));
        }
        Ok(data.chunks_exact(w).map(|b| self.load(b)).collect())
    }
    /// The value `v` becomes once written in this dtype (round to nearest).
    /// Encoder and decoder both use this, so they agree bit for bit.
    #[inline(always)]
    pub(crate) fn round(self, v: f64) -> f64 {
        match self {
            Fk::F16 => half::f16::from_f64(v).to_f64(),
            Fk::BF16 => half::bf16::from_f64(v).to_f64(),
            Fk::F32 => v as f32 as f64,
            Fk::F64 => v,
        }
    }
    /// The largest value of this dtype below `v` (positive, finite and
    /// representable).
    pub(crate) fn next_down(self, v: f64) -> f64 {
        match self {
            Fk::F16 => half::f16::from_bits(half::f16::from_f64(v).to_bits() - 1).to_f64(),
            Fk::BF16 => half::bf16::from_bits(half::bf16::from_f64(v).to_bits() - 1).to_f64(),
            Fk::F32 => f32::from_bits((v as f32).to_bits() - 1) as f64,
            Fk::F64 => f64::from_bits(v.to_bits() - 1),
        }
    }
    /// Write `v` (already representable, see [`Fk::round`]) as one element.
    #[inline(always)]
    pub(crate) fn store(self, v: f64, out: &mut [u8]) {
        match self {
            Fk::F16 => out.copy_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            Fk::BF16 => out.copy_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
            Fk::F32 => out.copy_from_slice(&(v as f32).to_le_bytes()),
            Fk::F64 => out.copy_from_slice(&v.to_le_bytes()),
        }
    }
}

/// Encode `data` with `next` into a u32-length-prefixed block of `out`.
pub(crate) fn put_next(next: &dyn super::Codec, info: &super::ChunkInfo, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
    let mut buf = Vec::new();
    next.encode(info, data, &mut buf)?;
    super::put_block(out, &buf)
}

/// Decode the next block of `r` with `next` into exactly `len` bytes.
pub(crate) fn get_next(
    next: &dyn super::Codec,
    info: &super::ChunkInfo,
    r: &mut super::Reader,
    len: usize,
) -> Result<Vec<u8>> {
    let block = r.block()?;
    let mut out = vec![0u8; len];
    next.decode(info, block, &mut out)?;
    Ok(out)
}

/// The next stage of a quantizer (default `zstd:level=3`). It must be
/// lossless: the declared bound is computed for exact codes and values.
pub(crate) fn default_next(next: Option<Box<dyn super::Codec>>) -> Result<Box<dyn super::Codec>> {
    match next {
        Some(n) => lossless_next(n),
        None => super::build("zstd:level=3"),
    }
}

/// Refuse a lossy stage after a lossy one: the first stage's bound would not
/// describe what comes out.
pub(crate) fn lossless_next(next: Box<dyn super::Codec>) -> Result<Box<dyn super::Codec>> {
    if !next.fidelity().is_lossless() {
        return Err(Error::invalid(format!("a lossy stage must be followed by lossless ones, not '{}'", next.spec())));
    }
    Ok(next)
}

#[cfg(test)]
mod archive_tests {
    use super::Fk;
    use super::testdata::{Rng, to_bytes};
    use crate::codec::Fidelity;
    use crate::container::{Archive, CompressOptions, compress};
    use crate::metrics::error::error_stats;
    use crate::tensor::{DType, OwnedTensor, safetensors};

    /// Whole archives: several chunks per tensor (some cut inside rows),
    /// specials, a non-float tensor and a kept norm; the bound recorded in
    /// the index holds on what the archive decodes to.
    #[test]
    fn archives_keep_their_bounds() {
        let mut rng = Rng::new(77);
        let mut w: Vec<f64> = (0..96 * 70).map(|_| rng.normal(0.05)).collect();
        w[100] = f64::NAN;
        w[5000] = f64::NEG_INFINITY;
        w[6000] = 40.0;
        let norm: Vec<f64> = (0..70).map(|_| 1.0 + rng.normal(0.01)).collect();
        let ids: Vec<u8> = (0..300i64).flat_map(|i| i.to_le_bytes()).collect();
        let tensors = [
            OwnedTensor::new("layer.0.w", DType::F32, vec![96, 70], to_bytes(Fk::F32, &w)),
            OwnedTensor::new("layer.0.wb", DType::BF16, vec![70, 96], to_bytes(Fk::BF16, &w)),
            OwnedTensor::new("layer.0.wh", DType::F16, vec![6720], to_bytes(Fk::F16, &w)),
            OwnedTensor::new("layer.0.norm.weight", DType::F32, vec![70], to_bytes(Fk::F32, &norm)),
            OwnedTensor::new("ids", DType::I64, vec![300], ids),
        ];
        let file = safetensors::serialize(tensors.iter().map(|t| t.view()), None).unwrap();
        for spec in ["sz:abs=1e-3", "sz:rel=1e-4", "sz:abs=1e-2,coder=next", "round:bits=4", "int8:block=64", "int4"] {
            // 1000-byte chunks: rows of 280 / 192 bytes, and an element cut
            let opts = CompressOptions { codec: spec.into(), chunk_size: 1000, ..Default::default() };
            let mut out = Vec::new();
            let index = compress(&file, "t.safetensors", &mut out, &opts).unwrap();
            let a = Archive::open(&out).unwrap();
            let c = crate::codec::build(spec).unwrap();
            let Fidelity::Lossy { bound } = c.fidelity() else { panic!() };
            for (i, t) in tensors.iter().enumerate() {
                let rec = &index.tensors[i];
                assert!(!rec.lossless, "{spec} {}", t.name);
                if spec.starts_with("sz:rel") && t.dtype.is_float() {
                    // resolved per tensor to an absolute bound: E x its range
                    assert!(rec.bound.as_deref().unwrap().starts_with("abs<="), "{:?}", rec.bound);
                    assert!(rec.codec.starts_with("sz:abs="), "{}", rec.codec);
                } else {
                    assert_eq!(rec.bound, bound.map(|b| b.to_string()));
                }
                let dec = a.read_tensor(i).unwrap();
                // range-relative: the codec bounds each chunk by its own
                // range, which is stricter than the tensor's; check the latter
                let s = error_stats(t.dtype, &t.data, &dec, bound).unwrap();
                assert_eq!(s.n_nonfinite_mismatch, 0, "{spec} {}", t.name);
                if bound.is_some() {
                    assert_eq!(s.bound_held, Some(true), "{spec} {} {s:?}", t.name);
                }
                if t.dtype == DType::I64 || (spec.starts_with("int") && t.name.contains("norm")) {
                    assert_eq!(dec, t.data, "{spec} {}", t.name);
                }
            }
            assert!(out.len() < file.len(), "{spec}");
        }
    }
}

/// Shared helpers for the lossy codecs' tests: a seeded PRNG and the
/// adversarial tensors every bound must survive.
#[cfg(test)]
pub(crate) mod testdata {
    use super::Fk;

    /// The crate's splitmix64 ([`crate::tensor::synth::Rng`]) with this
    /// module's seeding and a cheap approximate normal.
    pub struct Rng(crate::tensor::synth::Rng);
    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(crate::tensor::synth::Rng::from_state(seed.wrapping_add(0x9E37_79B9_7F4A_7C15)))
        }
        pub fn uniform(&mut self) -> f64 {
            self.0.uniform()
        }
        /// Roughly normal (sum of 4 uniforms), mean 0, std ~ s.
        pub fn normal(&mut self, s: f64) -> f64 {
            let u: f64 = (0..4).map(|_| self.uniform()).sum::<f64>() - 2.0;
            u * s * 1.732
        }
    }

    /// Encode values as `fk` elements (rounding to the dtype).
    pub fn to_bytes(fk: Fk, v: &[f64]) -> Vec<u8> {
        let w = fk.size();
        let mut out = vec![0u8; v.len() * w];
        for (x, o) in v.iter().zip(out.chunks_exact_mut(w)) {
            match fk {
                Fk::F16 => o.copy_from_slice(&half::f16::from_f64(*x).to_le_bytes()),
                Fk::BF16 => o.copy_from_slice(&half::bf16::from_f64(*x).to_le_bytes()),
                Fk::F32 => o.copy_from_slice(&(*x as f32).to_le_bytes()),
                Fk::F64 => o.copy_from_slice(&x.to_le_bytes()),
            }
        }
        out
    }

    /// Named adversarial value sets (finite values scaled to fit F16).
    pub fn adversarial(seed: u64) -> Vec<(&'static str, Vec<f64>)> {
        let mut r = Rng::new(seed);
        let gauss: Vec<f64> = (0..3001).map(|_| r.normal(0.05)).collect();
        let mut outlier = gauss.clone();
        outlier[1234] = 3000.0;
        outlier[7] = -2500.0;
        let huge_range: Vec<f64> = (0..2048)
            .map(|i| {
                let e = (i % 38) - 24; // 2^-24 .. 2^13 (F16 keeps them finite)
                let s = if i % 3 == 0 { -1.0 } else { 1.0 };
                s * (1.0 + r.uniform()) * 2f64.powi(e)
            })
            .collect();
        let mut specials = gauss[..1000].to_vec();
        for (i, v) in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, f64::NAN].into_iter().enumerate() {
            specials[i * 191 + 3] = v;
        }
        specials[0] = f64::NAN;
        specials[999] = f64::INFINITY;
        let mut blocks = vec![0.0; 1500];
        for (i, v) in blocks.iter_mut().enumerate().skip(500) {
            *v = if i < 1000 { 0.75 } else { r.normal(1.0) };
        }
        vec![
            ("gaussian", gauss),
            ("outliers", outlier),
            ("huge_range", huge_range),
            ("specials", specials),
            ("zero_const_noise_blocks", blocks),
            ("all_zero", vec![0.0; 777]),
            ("constant", vec![-1.25; 513]),
            ("single", vec![0.3]),
            ("odd_len", (0..13).map(|i| i as f64 * 0.1 - 0.6).collect()),
            ("empty", vec![]),
            ("all_nan", vec![f64::NAN; 9]),
        ]
    }
}
