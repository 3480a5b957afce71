//! Derived variants of a real model: the casts that make BF16, F16, FP8
//! (E4M3, E5M2) and FP4 (MXFP4, NVFP4) checkpoints from F32 or BF16 weights,
//! as pure functions, and the code that writes a derived safetensors file.
//! The E5M2 and FP4 formats, their layouts and their dequantizers are in
//! [`super::lowprec`].
//!
//! - BF16: round to nearest, ties to even, on the top 16 bits of the F32 pattern;
//!   identical to PyTorch's `Tensor.to(torch.bfloat16)` for every non-NaN input
//!   (overflow rounds to infinity, infinities and signed zeros are kept,
//!   subnormals round like any other value). NaN stays NaN: the sign and the top
//!   payload bits are kept and the quiet bit is set (as `half` and `ml_dtypes`
//!   do; PyTorch writes 0x7FC0 on its scalar path and 0xFFFF on its AVX path).
//! - F16: IEEE 754 round to nearest even (the `half` crate), overflow to
//!   infinity, gradual underflow to subnormals.
//! - FP8 E4M3 (`e4m3fn`: bias 7, no infinities, max 448, NaN = 0x7F/0xFF):
//!   [`f32_to_e4m3fn`] is PyTorch's cast bit for bit (values from 464 up round to
//!   NaN, as do infinities); [`f32_to_e4m3fn_sat`] clamps to ±448 first, which is
//!   what scaled FP8 checkpoints do. A derived FP8 tensor is `e4m3(x / scale)`
//!   with a per-tensor `scale = absmax / 448` stored beside it as an F32 scalar
//!   tensor named `<name>.scale`, so that `x ≈ q * scale`.

use super::lowprec;
use crate::error::{Error, Result};
use crate::tensor::{DType, OwnedTensor, SafeTensors};
use std::collections::BTreeMap;
use std::path::Path;

/// The largest finite E4M3 (`e4m3fn`) value.
pub const E4M3_MAX: f32 = 448.0;

/// F32 to BF16 bits, round to nearest even (PyTorch's cast for non-NaN input).
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        // NaN: keep the sign and the top payload bits, force the quiet bit.
        return ((u >> 16) | 0x0040) as u16;
    }
    let bias = ((u >> 16) & 1) + 0x7fff;
    (u.wrapping_add(bias) >> 16) as u16
}

/// BF16 bits to F32 (exact).
#[inline]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// F32 to IEEE binary16 bits, round to nearest even.
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// IEEE binary16 bits to F32 (exact).
#[inline]
pub fn f16_to_f32(b: u16) -> f32 {
    half::f16::from_bits(b).to_f32()
}

/// F32 to FP8 E4M3 (`float8_e4m3fn`) bits exactly as PyTorch casts: round to
/// nearest even; magnitudes that round above 448 (from 464 exclusive), infinities
/// and NaN become NaN (0x7F with the sign).
#[inline]
pub fn f32_to_e4m3fn(x: f32) -> u8 {
    // A port of c10::detail::fp8e4m3fn_from_fp32_value.
    const FP8_MAX: u32 = 1087 << 20; // 480.0: the first value that is NaN
    const DENORM_MASK: u32 = 141 << 23; // 2^14
    let mut f = x.to_bits();
    let sign = f & 0x8000_0000;
    f ^= sign;
    let r: u8 = if f >= FP8_MAX {
        0x7f
    } else if f < (121 << 23) {
        // below 2^-6, the smallest normal: let the FPU round at the 2^-9 quantum
        let g = (f32::from_bits(f) + f32::from_bits(DENORM_MASK)).to_bits();
        g.wrapping_sub(DENORM_MASK) as u8
    } else {
        let mant_odd = (f >> 20) & 1;
        let g = f.wrapping_add((((7i32 - 127) as u32) << 23).wrapping_add(0x7ffff)).wrapping_add(mant_odd);
        (g >> 20) as u8
    };
    r | (sign >> 24) as u8
}

/// F32 to FP8 E4M3 bits, saturating: finite values and infinities beyond ±448
/// become ±448 (0x7E/0xFE); NaN stays NaN (0x7F/0xFF); otherwise as
/// [`f32_to_e4m3fn`].
#[inline]
pub fn f32_to_e4m3fn_sat(x: f32) -> u8 {
    if x.is_nan() {
        return if x.is_sign_negative() { 0xff } else { 0x7f };
    }
    f32_to_e4m3fn(x.clamp(-E4M3_MAX, E4M3_MAX))
}

/// FP8 E4M3 (`e4m3fn`) bits to F32 (exact).
#[inline]
pub fn e4m3fn_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let e = ((b >> 3) & 0x0f) as i32;
    let m = (b & 0x07) as f32;
    if e == 15 && b & 0x07 == 7 {
        return f32::from_bits(0x7fc0_0000 | if b & 0x80 != 0 { 0x8000_0000 } else { 0 });
    }
    if e == 0 { sign * m * (2.0f32).powi(-9) } else { sign * (1.0 + m / 8.0) * (2.0f32).powi(e - 7) }
}

/// The per-tensor FP8 scale: `absmax / 448` over the finite values, so that
/// `x / scale` spans ±448; 1.0 for an all-zero (or all non-finite) tensor.
pub fn e4m3_scale(values: &[f32]) -> f32 {
    let absmax = values.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()));
    if absmax == 0.0 {
        return 1.0;
    }
    let s = absmax / E4M3_MAX;
    // absmax below 448 * f32::MIN_POSITIVE would give a subnormal or zero scale
    if s.is_normal() { s } else { f32::MIN_POSITIVE }
}

/// Quantize to FP8 E4M3 with a given scale (`e4m3(x / scale)`, saturating).
pub fn quantize_e4m3(values: &[f32], scale: f32, out: &mut Vec<u8>) {
    out.extend(values.iter().map(|&x| f32_to_e4m3fn_sat(x / scale)));
}

/// A derived variant of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    Bf16,
    F16,
    Fp8E4m3,
    Fp8E5m2,
    Mxfp4,
    Nvfp4,
}

impl Variant {
    pub const ALL: [Variant; 6] =
        [Variant::Bf16, Variant::F16, Variant::Fp8E4m3, Variant::Fp8E5m2, Variant::Mxfp4, Variant::Nvfp4];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Bf16 => "bf16",
            Variant::F16 => "f16",
            Variant::Fp8E4m3 => "fp8-e4m3",
            Variant::Fp8E5m2 => "fp8-e5m2",
            Variant::Mxfp4 => "mxfp4",
            Variant::Nvfp4 => "nvfp4",
        }
    }

    pub fn parse(s: &str) -> Result<Variant> {
        match s.to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Ok(Variant::Bf16),
            "f16" | "fp16" | "float16" => Ok(Variant::F16),
            "fp8-e4m3" | "fp8" | "f8e4m3" | "e4m3" | "fp8_e4m3" => Ok(Variant::Fp8E4m3),
            "fp8-e5m2" | "f8e5m2" | "e5m2" | "fp8_e5m2" => Ok(Variant::Fp8E5m2),
            "mxfp4" | "mx-fp4" => Ok(Variant::Mxfp4),
            "nvfp4" | "nv-fp4" => Ok(Variant::Nvfp4),
            _ => Err(Error::invalid(format!(
                "unknown variant '{s}': expected original, bf16, f16, fp8-e4m3, fp8-e5m2, mxfp4 or nvfp4"
            ))),
        }
    }

    /// The dtype of the variant's quantized tensors (FP4: U8, two codes a byte).
    pub fn dtype(self) -> DType {
        match self {
            Variant::Bf16 => DType::BF16,
            Variant::F16 => DType::F16,
            Variant::Fp8E4m3 => DType::F8E4M3,
            Variant::Fp8E5m2 => DType::F8E5M2,
            Variant::Mxfp4 | Variant::Nvfp4 => DType::U8,
        }
    }

    /// How the cast rounds, for the file's metadata.
    pub fn method(self) -> &'static str {
        match self {
            Variant::Bf16 => "bf16: round to nearest even from f32 (torch .to(torch.bfloat16))",
            Variant::F16 => "f16: IEEE round to nearest even from f32",
            Variant::Fp8E4m3 => {
                "fp8-e4m3: e4m3fn(x / scale), saturating, round to nearest even; per-tensor scale = absmax/448 stored as F32 '<name>.scale'"
            }
            Variant::Fp8E5m2 => {
                "fp8-e5m2: e5m2(x / scale), saturating, round to nearest even; per-tensor scale = absmax/57344 stored as F32 '<name>.scale'"
            }
            Variant::Mxfp4 => {
                "mxfp4 (OCP MX v1.0): 2-D linear weights (last dim % 32 == 0, not embeddings/lm_head) in blocks of 32 along the last dim, E8M0 scale 2^(floor(log2(absmax)) - 2), E2M1 round to nearest even saturating at 6; gpt-oss layout '<name>_blocks' U8 [rows, K/32, 16] (low nibble first) and '<name>_scales' U8 [rows, K/32] (biased 127); other floats bf16"
            }
            Variant::Nvfp4 => {
                "nvfp4 (NVIDIA ModelOpt): 2-D linear weights (last dim % 16 == 0, not embeddings/lm_head), '<name>_scale_2' F32 = absmax/(6*448), per 16 along the last dim '<name>_scale' F8_E4M3 = e4m3(absmax_block/(6*scale_2)), E2M1 of x/(scale*scale_2) round to nearest even saturating at 6, '<name>' U8 [rows, K/2] (low nibble first); other floats bf16"
            }
        }
    }

    fn fp4_block(self) -> Option<usize> {
        match self {
            Variant::Mxfp4 => Some(lowprec::MX_BLOCK),
            Variant::Nvfp4 => Some(lowprec::NV_BLOCK),
            _ => None,
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Widen a float tensor's bytes to F32 values (F32, F16, BF16, F64 sources);
/// `None` for dtypes that are not cast.
fn to_f32(dtype: DType, data: &[u8]) -> Option<Vec<f32>> {
    lowprec::float_values(dtype, data)
}

/// An element-wise cast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Bf16,
    F16,
    E4m3,
    E5m2,
}

/// Convert F32 values to `enc`'s bytes, appending to `out` (FP8 uses `scale`).
fn encode_values(values: &[f32], enc: Enc, scale: f32, out: &mut Vec<u8>) {
    match enc {
        Enc::Bf16 => out.extend(values.iter().flat_map(|v| f32_to_bf16(*v).to_le_bytes())),
        Enc::F16 => out.extend(values.iter().flat_map(|v| f32_to_f16(*v).to_le_bytes())),
        Enc::E4m3 => quantize_e4m3(values, scale, out),
        Enc::E5m2 => out.extend(values.iter().map(|&x| lowprec::f32_to_e5m2_sat(x / scale))),
    }
}

/// Elements per conversion step: bounds the memory of a cast to a few MB (a
/// multiple of both FP4 blocks, so that steps cut between blocks).
const STEP: usize = 1 << 18;

/// The finite absmax of a tensor, computed without materializing it as F32.
fn tensor_absmax(dtype: DType, data: &[u8]) -> f32 {
    let size = dtype.size().unwrap_or(1);
    let mut absmax = 0.0f32;
    for chunk in data.chunks(STEP * size) {
        let vals = to_f32(dtype, chunk).unwrap_or_default();
        absmax = absmax.max(lowprec::absmax(&vals));
    }
    absmax
}

fn is_float(dtype: DType) -> bool {
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
}

/// Which part of an FP4 tensor a [`Src::Fp4`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fp4Part {
    Codes,
    Scales,
}

/// Where a tensor of the derived file gets its bytes.
enum Src<'a> {
    Copy(&'a [u8]),
    Cast {
        from: DType,
        data: &'a [u8],
        enc: Enc,
        scale: f32,
    },
    Scale(f32),
    /// FP4 codes or block scales; `g` is NVFP4's per-tensor scale (`None`: MXFP4).
    Fp4 {
        from: DType,
        data: &'a [u8],
        g: Option<f32>,
        part: Fp4Part,
    },
}

/// One tensor of the derived file.
struct Part<'a> {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    len: u64,
    src: Src<'a>,
}

/// The tensors one source tensor becomes in `variant` (itself, cast or
/// copied, and its scale or block tensors).
fn plan_tensor<'a>(name: &str, dtype: DType, shape: &[u64], data: &'a [u8], variant: Variant) -> Vec<Part<'a>> {
    let n = data.len() / dtype.size().unwrap_or(1).max(1);
    let part = |name: String, dtype: DType, shape: Vec<u64>, len: usize, src: Src<'a>| Part {
        name,
        dtype,
        shape,
        len: len as u64,
        src,
    };
    if !is_float(dtype) {
        return vec![part(name.into(), dtype, shape.to_vec(), data.len(), Src::Copy(data))];
    }
    if let Some(block) = variant.fp4_block() {
        if !lowprec::fp4_eligible(name, dtype, shape, block) {
            if dtype == DType::BF16 {
                return vec![part(name.into(), dtype, shape.to_vec(), data.len(), Src::Copy(data))];
            }
            let src = Src::Cast { from: dtype, data, enc: Enc::Bf16, scale: 1.0 };
            return vec![part(name.into(), DType::BF16, shape.to_vec(), n * 2, src)];
        }
        let (rows, k) = (shape[0], shape[1]);
        let codes = |g| Src::Fp4 { from: dtype, data, g, part: Fp4Part::Codes };
        let scales = |g| Src::Fp4 { from: dtype, data, g, part: Fp4Part::Scales };
        let nb = n / block;
        if variant == Variant::Mxfp4 {
            let kb = k / block as u64;
            return vec![
                part(format!("{name}_blocks"), DType::U8, vec![rows, kb, block as u64 / 2], n / 2, codes(None)),
                part(format!("{name}_scales"), DType::U8, vec![rows, kb], nb, scales(None)),
            ];
        }
        let g = lowprec::nvfp4_global_scale(tensor_absmax(dtype, data));
        return vec![
            part(name.into(), DType::U8, vec![rows, k / 2], n / 2, codes(Some(g))),
            part(format!("{name}_scale"), DType::F8E4M3, vec![rows, k / block as u64], nb, scales(Some(g))),
            part(format!("{name}_scale_2"), DType::F32, vec![], 4, Src::Scale(g)),
        ];
    }
    if dtype == variant.dtype() {
        return vec![part(name.into(), dtype, shape.to_vec(), data.len(), Src::Copy(data))];
    }
    let (enc, scale) = match variant {
        Variant::Bf16 => (Enc::Bf16, 1.0),
        Variant::F16 => (Enc::F16, 1.0),
        Variant::Fp8E4m3 => (Enc::E4m3, lowprec::e4m3_scale_of_absmax(tensor_absmax(dtype, data))),
        _ => (Enc::E5m2, lowprec::e5m2_scale_of_absmax(tensor_absmax(dtype, data))),
    };
    let size = variant.dtype().size().unwrap_or(1);
    let mut out =
        vec![part(name.into(), variant.dtype(), shape.to_vec(), n * size, Src::Cast { from: dtype, data, enc, scale })];
    if matches!(enc, Enc::E4m3 | Enc::E5m2) {
        out.push(part(format!("{name}.scale"), DType::F32, vec![], 4, Src::Scale(scale)));
    }
    out
}

/// Write the bytes of one planned tensor, a step at a time.
fn write_src(src: &Src, buf: &mut Vec<u8>, w: &mut dyn FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
    match src {
        Src::Copy(d) => w(d),
        Src::Scale(s) => w(&s.to_le_bytes()),
        Src::Cast { from, data, enc, scale } => {
            for chunk in data.chunks(STEP * from.size().unwrap_or(1)) {
                buf.clear();
                encode_values(&to_f32(*from, chunk).unwrap_or_default(), *enc, *scale, buf);
                w(buf)?;
            }
            Ok(())
        }
        Src::Fp4 { from, data, g, part } => {
            let mut other = Vec::new();
            for chunk in data.chunks(STEP * from.size().unwrap_or(1)) {
                buf.clear();
                other.clear();
                let x = to_f32(*from, chunk).unwrap_or_default();
                let (codes, scales) = match part {
                    Fp4Part::Codes => (&mut *buf, &mut other),
                    Fp4Part::Scales => (&mut other, &mut *buf),
                };
                match g {
                    None => lowprec::mxfp4_quantize(&x, codes, scales),
                    Some(g) => lowprec::nvfp4_quantize(&x, *g, codes, scales),
                }
                w(buf)?;
            }
            Ok(())
        }
    }
}

/// Cast one tensor to `variant`: the tensors it becomes (the cast tensor
/// and, for FP8, its scale; for FP4, its codes and block scales). Tensors
/// that are not floats (or already of the target dtype) are copied.
pub fn cast_tensor(name: &str, dtype: DType, shape: &[u64], data: &[u8], variant: Variant) -> Vec<OwnedTensor> {
    plan_tensor(name, dtype, shape, data, variant)
        .into_iter()
        .map(|p| {
            let mut bytes = Vec::with_capacity(p.len as usize);
            let mut buf = Vec::new();
            write_src(&p.src, &mut buf, &mut |b| {
                bytes.extend_from_slice(b);
                Ok(())
            })
            .expect("writing to memory");
            OwnedTensor::new(p.name, p.dtype, p.shape, bytes)
        })
        .collect()
}

/// Write the `variant` of the safetensors file `bytes` to `out` (atomically),
/// streaming: one step of one tensor is held in memory at a time, so a
/// multi-GB shard needs a few MB beyond its memory map. The original
/// `__metadata__` is kept; `weightlab.derived` and friends say what was done
/// and from which file. The layout is exactly what
/// [`crate::tensor::safetensors::write_file`] writes.
pub fn derive_file(bytes: &[u8], source_sha256: &str, dataset: &str, variant: Variant, out: &Path) -> Result<()> {
    let st = SafeTensors::parse(bytes)?;
    let names: std::collections::HashSet<&str> = st.tensors.iter().map(|t| t.name.as_str()).collect();
    let mut plan: Vec<Part<'_>> = Vec::with_capacity(st.tensors.len() * 2);
    let (mut cast, mut quantized) = (0usize, 0usize);
    for v in st.views() {
        let parts = plan_tensor(v.name, v.dtype, v.shape, v.data, variant);
        for p in &parts[..] {
            if p.name != v.name && names.contains(p.name.as_str()) {
                return Err(Error::invalid(format!(
                    "cannot derive {variant}: the tensor name '{}' is already taken in the source",
                    p.name
                )));
            }
        }
        cast += parts.iter().any(|p| !matches!(p.src, Src::Copy(_))) as usize;
        quantized += parts.iter().any(|p| matches!(p.src, Src::Fp4 { .. })) as usize;
        plan.extend(parts);
    }
    let mut meta: BTreeMap<String, String> = st.metadata.clone().unwrap_or_default();
    meta.insert("weightlab.derived".into(), "true".into());
    meta.insert("weightlab.variant".into(), variant.name().into());
    meta.insert("weightlab.dataset".into(), dataset.into());
    meta.insert("weightlab.source_sha256".into(), source_sha256.into());
    meta.insert("weightlab.method".into(), variant.method().into());
    meta.insert("weightlab.cast_tensors".into(), cast.to_string());
    if variant.fp4_block().is_some() {
        meta.insert("weightlab.fp4_tensors".into(), quantized.to_string());
    }
    // the header, as the safetensors writer makes it: sorted keys, offsets in
    // tensor order, padded with spaces to a multiple of 8
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), serde_json::to_value(&meta).expect("string map"));
    let mut pos = 0u64;
    for p in &plan {
        map.insert(
            p.name.clone(),
            serde_json::json!({"dtype": p.dtype.name(), "shape": p.shape, "data_offsets": [pos, pos + p.len]}),
        );
        pos += p.len;
    }
    let mut header = serde_json::to_string(&serde_json::Value::Object(map)).expect("json");
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    crate::io::write_atomic(out, |w| {
        use std::io::Write;
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(header.as_bytes())?;
        let mut buf = Vec::new();
        for p in &plan {
            write_src(&p.src, &mut buf, &mut |b| w.write_all(b))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(bits: u32) -> f32 {
        f32::from_bits(bits)
    }

    #[test]
    fn bf16_known_values() {
        let cases: &[(u32, u16)] = &[
            (0x3f80_0000, 0x3f80), // 1.0
            (0x8000_0000, 0x8000), // -0.0
            (0x0000_0000, 0x0000), // +0.0
            (0x3f80_8000, 0x3f80), // tie, even below: stays
            (0x3f81_8000, 0x3f82), // tie, odd below: rounds up
            (0x3f80_8001, 0x3f81), // above the tie
            (0x3f80_7fff, 0x3f80), // below the tie
            (0x7f80_0000, 0x7f80), // +inf
            (0xff80_0000, 0xff80), // -inf
            (0x7f7f_ffff, 0x7f80), // f32::MAX overflows to inf
            (0x7f7f_8000, 0x7f80), // tie at the top, odd: to inf
            (0x7f7e_8000, 0x7f7e), // tie at the top, even: stays
            (0x0000_0001, 0x0000), // smallest subnormal flushes by rounding
            (0x0000_8000, 0x0000), // subnormal tie, even: down
            (0x0001_8000, 0x0002), // subnormal tie, odd: up
            (0x0000_c000, 0x0001), // subnormal above tie
            (0x007f_ffff, 0x0080), // largest subnormal rounds to min normal
            (0xc049_0fdb, 0xc049), // -pi
            (0x7fc0_0000, 0x7fc0), // quiet NaN
            (0x7f80_0001, 0x7fc0), // signalling NaN, low payload: quieted, not inf
            (0xff81_2345, 0xffc1), // negative NaN keeps sign and top payload
        ];
        for &(x, want) in cases {
            let got = f32_to_bf16(f(x));
            assert_eq!(got, want, "f32 {x:#010x}: got {got:#06x}, want {want:#06x}");
        }
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn bf16_matches_half_crate_on_random_bits() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let x = f(s as u32);
            let a = f32_to_bf16(x);
            let b = half::bf16::from_f32(x).to_bits();
            assert_eq!(a, b, "{:#010x}", x.to_bits());
        }
    }

    #[test]
    fn f16_known_values() {
        let cases: &[(f32, u16)] = &[
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (65519.99, 0x7bff), // below the overflow tie
            (65520.0, 0x7c00),  // the tie: rounds to even = inf
            (1e6, 0x7c00),      // overflow
            (f32::INFINITY, 0x7c00),
            (f32::NEG_INFINITY, 0xfc00),
            (5.960_464_5e-8, 0x0001), // 2^-24: the smallest subnormal
            (2.980_232_2e-8, 0x0000), // 2^-25: tie to even (zero)
            (8.940_697e-8, 0x0002),   // 1.5 * 2^-24: tie to even (2)
            (-0.0, 0x8000),
            (1.0 + 1.0 / 1024.0, 0x3c01), // 1 + 2^-10
            (1.0 + 1.0 / 2048.0, 0x3c00), // 1 + 2^-11: tie, even: down
            (1.0 + 3.0 / 2048.0, 0x3c02), // 1 + 3*2^-11: tie, odd: up
        ];
        for &(x, want) in cases {
            let got = f32_to_f16(x);
            assert_eq!(got, want, "f32 {x:e}: got {got:#06x}, want {want:#06x}");
        }
        let n = f32_to_f16(f32::NAN);
        assert_eq!(n & 0x7c00, 0x7c00);
        assert_ne!(n & 0x03ff, 0, "NaN must stay NaN");
    }

    #[test]
    fn e4m3_known_values_torch_semantics() {
        let cases: &[(f32, u8)] = &[
            (0.0, 0x00),
            (-0.0, 0x80),
            (1.0, 0x38),
            (-1.0, 0xb8),
            (448.0, 0x7e),
            (-448.0, 0xfe),
            (460.0, 0x7e), // rounds down to 448
            (464.0, 0x7e), // the tie between 448 (even) and 480 (NaN pattern): even
            (465.0, 0x7f), // rounds to the NaN pattern, as torch does
            (480.0, 0x7f),
            (1e9, 0x7f),
            (f32::INFINITY, 0x7f),
            (f32::NEG_INFINITY, 0xff),
            (f32::NAN, 0x7f),
            (0.015625, 0x08),     // 2^-6: smallest normal
            (0.001953125, 0x01),  // 2^-9: smallest subnormal
            (0.0009765625, 0x00), // 2^-10: tie to even: zero
            (0.0029296875, 0x02), // 1.5 * 2^-9: tie to even: 2
            (0.0048828125, 0x02), // 2.5 * 2^-9: tie to even: 2
            (0.013671875, 0x07),  // 7 * 2^-9: largest subnormal
            (0.0146484375, 0x08), // 7.5 * 2^-9: tie, odd: up to the smallest normal
            (1.0625, 0x38),       // 1 + 1/16: tie, even: down
            (1.1875, 0x3a),       // 1 + 3/16: tie, odd: up
            (1.1, 0x39),
            (-3.5, 0xc6),
            (240.0, 0x77),
            (0.0001, 0x00),
        ];
        for &(x, want) in cases {
            let got = f32_to_e4m3fn(x);
            assert_eq!(got, want, "f32 {x:e}: got {got:#04x}, want {want:#04x}");
        }
    }

    #[test]
    fn e4m3_saturating_and_decode() {
        assert_eq!(f32_to_e4m3fn_sat(465.0), 0x7e);
        assert_eq!(f32_to_e4m3fn_sat(1e30), 0x7e);
        assert_eq!(f32_to_e4m3fn_sat(-1e30), 0xfe);
        assert_eq!(f32_to_e4m3fn_sat(f32::INFINITY), 0x7e);
        assert_eq!(f32_to_e4m3fn_sat(f32::NEG_INFINITY), 0xfe);
        assert_eq!(f32_to_e4m3fn_sat(f32::NAN), 0x7f);
        assert_eq!(f32_to_e4m3fn_sat(-f32::NAN), 0xff);
        assert_eq!(f32_to_e4m3fn_sat(1.0), 0x38);
        // every non-NaN code decodes and re-encodes to itself
        for b in 0..=255u8 {
            let v = e4m3fn_to_f32(b);
            if b & 0x7f == 0x7f {
                assert!(v.is_nan(), "{b:#04x}");
                continue;
            }
            assert_eq!(f32_to_e4m3fn(v), b, "{b:#04x} -> {v}");
        }
        assert_eq!(e4m3fn_to_f32(0x7e), 448.0);
        assert_eq!(e4m3fn_to_f32(0x01), 0.001953125);
    }

    #[test]
    fn fp8_scaled_quantization() {
        let vals = [0.5f32, -2.0, 1.0, 0.0, -0.001];
        let scale = e4m3_scale(&vals);
        assert_eq!(scale.to_bits(), (2.0f32 / 448.0).to_bits());
        let mut q = Vec::new();
        quantize_e4m3(&vals, scale, &mut q);
        assert_eq!(q[1], 0xfe, "absmax maps to -448");
        assert_eq!(q[3], 0x00);
        for (x, b) in vals.iter().zip(&q) {
            let back = e4m3fn_to_f32(*b) * scale;
            assert!((back - x).abs() <= x.abs() / 16.0 + scale * 0.001953125, "{x} -> {back}");
        }
        assert_eq!(e4m3_scale(&[0.0, -0.0]), 1.0);
        assert_eq!(e4m3_scale(&[f32::INFINITY, 4.48]).to_bits(), (4.48f32 / 448.0).to_bits());
    }

    #[test]
    fn streamed_derivation_equals_the_safetensors_writer_on_cast_tensors() {
        let mut x = 0x9e37_79b9u32;
        let mut vals = |n: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 3.0).to_le_bytes()
                })
                .collect()
        };
        // one tensor bigger than a conversion step, a BF16 one, an integer one
        let big = OwnedTensor::new("z.big", DType::F32, vec![STEP as u64 + 3], vals(STEP + 3));
        let h: Vec<u8> = vals(10)
            .chunks(4)
            .flat_map(|c| f32_to_bf16(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes())
            .collect();
        let b = OwnedTensor::new("a.bf", DType::BF16, vec![2, 5], h);
        let i = OwnedTensor::new("m.ids", DType::I32, vec![3], vec![1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
        let src = crate::tensor::safetensors::serialize([big.view(), b.view(), i.view()], None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let st = SafeTensors::parse(&src).unwrap();
        for v in Variant::ALL {
            let streamed = dir.path().join(format!("s-{v}"));
            derive_file(&src, "0", "toy", v, &streamed).unwrap();
            let mut owned = Vec::new();
            for t in st.views() {
                owned.extend(cast_tensor(t.name, t.dtype, t.shape, t.data, v));
            }
            let got = std::fs::read(&streamed).unwrap();
            let meta = SafeTensors::parse(&got).unwrap().metadata.unwrap();
            let reference = dir.path().join(format!("r-{v}"));
            crate::tensor::safetensors::write_file(&reference, owned.iter().map(|t| t.view()), Some(&meta)).unwrap();
            assert_eq!(got, std::fs::read(&reference).unwrap(), "{v}");
        }
    }

    #[test]
    fn derive_file_casts_floats_and_copies_the_rest() {
        let w: Vec<u8> = [1.0f32, -2.5, 3.0e-3, 1.0 + 1.0 / 256.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let ids: Vec<u8> = [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = OwnedTensor::new("w", DType::F32, vec![2, 2], w);
        let b = OwnedTensor::new("ids", DType::I64, vec![2], ids.clone());
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let src = crate::tensor::safetensors::serialize([a.view(), b.view()], Some(&meta)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for v in Variant::ALL {
            let out = dir.path().join(format!("{v}.safetensors"));
            derive_file(&src, "abc", "toy", v, &out).unwrap();
            let bytes = std::fs::read(&out).unwrap();
            let st = SafeTensors::parse(&bytes).unwrap();
            let m = st.metadata.as_ref().unwrap();
            assert_eq!(m["weightlab.derived"], "true");
            assert_eq!(m["weightlab.variant"], v.name());
            assert_eq!(m["format"], "pt");
            let t = st.get("w").unwrap();
            // a 2x2 matrix has no whole FP4 block: the FP4 variants keep it BF16
            let want = if v.fp4_block().is_some() { DType::BF16 } else { v.dtype() };
            assert_eq!(t.dtype, want, "{v}");
            assert_eq!(st.get("ids").unwrap().data, &ids[..]);
            assert_eq!(st.get("ids").unwrap().dtype, DType::I64);
            match v {
                Variant::Bf16 => assert_eq!(t.data, &[0x80, 0x3f, 0x20, 0xc0, 0x45, 0x3b, 0x80, 0x3f]),
                Variant::F16 => assert_eq!(&t.data[..4], &[0x00, 0x3c, 0x00, 0xc1]),
                Variant::Fp8E4m3 => {
                    let s = st.get("w.scale").unwrap();
                    assert_eq!(s.dtype, DType::F32);
                    assert_eq!(s.data, &(2.5f32 / 448.0).to_le_bytes());
                    assert_eq!(t.data[1], 0xfe);
                    assert_eq!(st.tensors.len(), 3);
                }
                Variant::Fp8E5m2 => {
                    let s = st.get("w.scale").unwrap();
                    assert_eq!(s.dtype, DType::F32);
                    assert_eq!(s.shape, &[] as &[u64]);
                    assert_eq!(s.data, &(2.5f32 / 57344.0).to_le_bytes());
                    assert_eq!(t.data[1], 0xfb, "absmax maps to -57344");
                    assert_eq!(st.tensors.len(), 3);
                }
                Variant::Mxfp4 | Variant::Nvfp4 => {
                    assert_eq!(t.data, &[0x80, 0x3f, 0x20, 0xc0, 0x45, 0x3b, 0x80, 0x3f]);
                    assert_eq!(st.tensors.len(), 2);
                    assert_eq!(m["weightlab.fp4_tensors"], "0");
                }
            }
        }
    }
}
