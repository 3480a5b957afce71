//! Low-precision formats as real checkpoints store them: FP8 E5M2 with a
//! per-tensor scale, and FP4 E2M1 with block scales in the two layouts in
//! use (MXFP4 as gpt-oss ships it, NVFP4 as NVIDIA ModelOpt exports it):
//! the element casts, the block quantizers, their dequantizers, which
//! tensors get quantized, and [`dequantize_file`], which turns a derived
//! (or real) low-precision safetensors file back into BF16/F32 tensors.
//!
//! - FP8 E5M2 (`float8_e5m2`: bias 15, max 57344, infinities 0x7C/0xFC, NaN
//!   0x7D..0x7F): [`f32_to_e5m2`] is PyTorch's cast bit for bit (round to
//!   nearest even; from 61440 up, infinity); [`f32_to_e5m2_sat`] clamps to
//!   ±57344 first. The derived tensor is `e5m2(x / scale)` with `scale =
//!   absmax / 57344`, stored exactly as the E4M3 variant stores its scale
//!   (an F32 scalar `<name>.scale`, `x ≈ q * scale`).
//! - FP4 E2M1 (values 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives; code =
//!   sign << 3 | magnitude index): [`f32_to_e2m1`] rounds to nearest even
//!   and saturates at ±6, as ModelOpt's `_cast_fp4` does (a value below zero
//!   gets the sign bit, so -0.1 is code 0x8 and -0.0 is 0x0; NaN is 0x0).
//!   Two codes per byte, element 2j in the low nibble, 2j+1 in the high one
//!   (gpt-oss and ModelOpt both).
//! - MXFP4 (OCP Microscaling spec v1.0): blocks of 32 along the last dim,
//!   shared scale E8M0 `X = floor(log2(absmax)) - 2` (2 = emax of E2M1),
//!   clamped to [-127, 127], stored biased (`X + 127`, 0xFF = NaN) as U8;
//!   elements `e2m1(x / 2^X)` (values in (6, 8) saturate). An all-zero block
//!   gets X = -127 (code 0), as the OCP reference library (microxcaling)
//!   does. ModelOpt's own MXFP4 export uses `ceil(log2(absmax / 6))` and
//!   rounds ties down; we follow the OCP spec.
//!   Layout: gpt-oss's Hugging Face checkpoints (`model.layers.N.mlp.experts.
//!   gate_up_proj_blocks` U8 `[.., rows, K/32, 16]` beside `.._scales` U8
//!   `[.., rows, K/32]`), so a tensor `NAME` of shape `[R, K]` becomes
//!   `NAME_blocks` U8 `[R, K/32, 16]` and `NAME_scales` U8 `[R, K/32]`.
//! - NVFP4 (ModelOpt `NVFP4QTensor`): a per-tensor F32 `weight_scale_2 = g =
//!   absmax / (6 * 448)`, per 16 elements along the last dim an E4M3 scale
//!   `s = e4m3(absmax_block / (6 * g))` (torch's cast; a zero block gets
//!   1.0), elements `e2m1(x / (s * g))`, all in F32 as ModelOpt computes
//!   them; dequantized `e2m1 * (s * g)`. Layout as ModelOpt exports a
//!   Linear: `NAME` (`...weight`) U8 `[R, K/2]`, `NAME_scale` (`weight_scale`)
//!   F8_E4M3 `[R, K/16]`, `NAME_scale_2` (`weight_scale_2`) F32 `[]`. An
//!   all-zero tensor gets g = 1 (ModelOpt would divide 0 by 0).
//!
//! Which tensors are FP4 ([`fp4_eligible`]): 2-D float weights (`*.weight`)
//! whose last dim divides by the block, except embeddings (`embed`, `wte`,
//! `wpe`) and `lm_head`: ModelOpt quantizes the weights of every `nn.Linear`
//! but `lm_head` (its default config disables `*lm_head*`; embeddings and
//! norms are not Linear layers); gpt-oss quantizes only its MoE experts'
//! linears, a choice our dense models have no counterpart for. Everything
//! else stays BF16, as both ship it.

use crate::error::{Error, Result};
use crate::tensor::{DType, OwnedTensor, SafeTensors};
use std::collections::HashMap;

use super::derive::{E4M3_MAX, bf16_to_f32, e4m3fn_to_f32, f16_to_f32, f32_to_bf16, f32_to_e4m3fn_sat};

/// The largest finite E5M2 value.
pub const E5M2_MAX: f32 = 57344.0;
/// The largest E2M1 value.
pub const E2M1_MAX: f32 = 6.0;
/// MXFP4 block (OCP MX: 32 elements share one E8M0 scale).
pub const MX_BLOCK: usize = 32;
/// NVFP4 block (16 elements share one E4M3 scale).
pub const NV_BLOCK: usize = 16;
/// The E2M1 values of the 16 codes.
pub const E2M1_VALUES: [f32; 16] =
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

// ---------------------------------------------------------------------------
// FP8 E5M2

/// F32 to FP8 E5M2 (`float8_e5m2`) bits exactly as PyTorch casts: round to
/// nearest even; magnitudes from 61440 (the tie above 57344) and infinities
/// become infinity, NaN stays NaN (0x7F with the sign).
#[inline]
pub fn f32_to_e5m2(x: f32) -> u8 {
    // A port of c10::detail::fp8e5m2_from_fp32_value.
    const FP32_INF: u32 = 255 << 23;
    const FP8_MAX: u32 = 143 << 23; // 65536: the first value at infinity after rounding
    const DENORM_MASK: u32 = 134 << 23; // 2^7
    let mut f = x.to_bits();
    let sign = f & 0x8000_0000;
    f ^= sign;
    let r: u8 = if f >= FP8_MAX {
        if f > FP32_INF { 0x7f } else { 0x7c }
    } else if f < (113 << 23) {
        // below 2^-14, the smallest normal: let the FPU round at the 2^-16 quantum
        let g = (f32::from_bits(f) + f32::from_bits(DENORM_MASK)).to_bits();
        g.wrapping_sub(DENORM_MASK) as u8
    } else {
        let mant_odd = (f >> 21) & 1;
        let g = f.wrapping_add((((15i32 - 127) as u32) << 23).wrapping_add(0xfffff)).wrapping_add(mant_odd);
        (g >> 21) as u8
    };
    r | (sign >> 24) as u8
}

/// F32 to FP8 E5M2 bits, saturating: beyond ±57344 (infinities included)
/// gives ±57344 (0x7B/0xFB); NaN stays NaN.
#[inline]
pub fn f32_to_e5m2_sat(x: f32) -> u8 {
    if x.is_nan() {
        return if x.is_sign_negative() { 0xff } else { 0x7f };
    }
    f32_to_e5m2(x.clamp(-E5M2_MAX, E5M2_MAX))
}

/// FP8 E5M2 bits to F32 (exact: E5M2 is the top byte of an IEEE binary16).
#[inline]
pub fn e5m2_to_f32(b: u8) -> f32 {
    f16_to_f32((b as u16) << 8)
}

/// The per-tensor E5M2 scale `absmax / 57344` of a tensor's finite absmax
/// (1.0 for zero), as [`super::derive::e4m3_scale`] does for E4M3.
pub fn e5m2_scale_of_absmax(absmax: f32) -> f32 {
    if absmax == 0.0 || !absmax.is_finite() {
        return 1.0;
    }
    let s = absmax / E5M2_MAX;
    if s.is_normal() { s } else { f32::MIN_POSITIVE }
}

/// The per-tensor E4M3 scale `absmax / 448` of an absmax (1.0 for zero).
pub fn e4m3_scale_of_absmax(absmax: f32) -> f32 {
    super::derive::e4m3_scale(&[absmax])
}

// ---------------------------------------------------------------------------
// FP4 E2M1 and the block scales

/// F32 to an E2M1 code: round to nearest even, saturating at ±6 (ModelOpt's
/// `_cast_fp4`: the bounds 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5 with the ties
/// at 0.75, 1.75, 3.5 rounding up to the even code); sign bit when x < 0.
#[inline]
pub fn f32_to_e2m1(x: f32) -> u8 {
    let a = x.abs();
    // ties at 0.25, 1.25, 2.5 and 5 go down (to 0, 1.0, 2.0, 4.0: even codes),
    // at 0.75, 1.75 and 3.5 up (to 1.0, 2.0, 4.0)
    let m = (a > 0.25) as u8
        + (a >= 0.75) as u8
        + (a > 1.25) as u8
        + (a >= 1.75) as u8
        + (a > 2.5) as u8
        + (a >= 3.5) as u8
        + (a > 5.0) as u8;
    ((x < 0.0) as u8) << 3 | m
}

/// An E2M1 code's value (the low 4 bits are used).
#[inline]
pub fn e2m1_to_f32(code: u8) -> f32 {
    E2M1_VALUES[(code & 0x0f) as usize]
}

/// floor(log2(a)) of a positive finite F32 (subnormals included).
fn floor_log2(a: f32) -> i32 {
    let b = a.to_bits() & 0x7fff_ffff;
    let e = (b >> 23) as i32;
    if e == 0 { (31 - (b & 0x007f_ffff).leading_zeros() as i32) - 149 } else { e - 127 }
}

/// 2^x as F32 for x in [-149, 127] (exact, subnormals included).
pub fn pow2(x: i32) -> f32 {
    if x >= -126 { f32::from_bits(((x + 127) as u32) << 23) } else { f32::from_bits(1u32 << (x + 149)) }
}

/// The MX shared scale exponent of a block's absmax: floor(log2(absmax)) - 2,
/// clamped to the E8M0 range [-127, 127]; -127 for an all-zero block.
pub fn mx_scale_exponent(absmax: f32) -> i32 {
    if absmax <= 0.0 || !absmax.is_finite() {
        return -127;
    }
    (floor_log2(absmax) - 2).clamp(-127, 127)
}

/// An E8M0 scale byte's value 2^(b - 127); 0xFF is NaN.
#[inline]
pub fn e8m0_to_f32(b: u8) -> f32 {
    if b == 0xff { f32::NAN } else { pow2(b as i32 - 127) }
}

/// The finite absmax of some values.
pub fn absmax(x: &[f32]) -> f32 {
    x.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Pack E2M1 codes two per byte, element 2j in the low nibble; an odd count
/// leaves the last high nibble 0.
fn pack_pair(codes: &[u8], out: &mut Vec<u8>) {
    out.extend(codes.chunks(2).map(|p| p[0] | p.get(1).map_or(0, |&h| h << 4)));
}

/// MXFP4-quantize `x` (blocks of [`MX_BLOCK`] from its start; a shorter last
/// block gets its own scale): packed codes to `codes`, E8M0 bytes to `scales`.
pub fn mxfp4_quantize(x: &[f32], codes: &mut Vec<u8>, scales: &mut Vec<u8>) {
    let mut q = [0u8; MX_BLOCK];
    for b in x.chunks(MX_BLOCK) {
        let e = mx_scale_exponent(absmax(b));
        scales.push((e + 127) as u8);
        let s = pow2(e);
        for (c, &v) in q.iter_mut().zip(b) {
            *c = f32_to_e2m1(v / s);
        }
        pack_pair(&q[..b.len()], codes);
    }
}

/// The NVFP4 per-tensor scale (`weight_scale_2`): absmax / (6 * 448), in F32
/// as ModelOpt computes it; 1.0 for an all-zero tensor.
pub fn nvfp4_global_scale(absmax: f32) -> f32 {
    if absmax == 0.0 || !absmax.is_finite() {
        return 1.0;
    }
    let g = absmax / (E2M1_MAX * E4M3_MAX);
    if g.is_normal() { g } else { f32::MIN_POSITIVE }
}

/// NVFP4-quantize `x` with the per-tensor scale `g` (blocks of [`NV_BLOCK`]
/// from its start, a shorter last block scaled on its own): packed codes to
/// `codes`, E4M3 block scales to `scales`. A block whose scale rounds to 0
/// (its absmax below 2^-10 × 6g) codes every element as ±0.
pub fn nvfp4_quantize(x: &[f32], g: f32, codes: &mut Vec<u8>, scales: &mut Vec<u8>) {
    let mut q = [0u8; NV_BLOCK];
    let six_g = E2M1_MAX * g;
    for b in x.chunks(NV_BLOCK) {
        let mut s = absmax(b) / six_g;
        if s == 0.0 {
            s = 1.0;
        }
        // saturating: with g from this tensor's absmax, s <= 448 (up to F32
        // rounding, which torch's cast also rounds to 448), so this is
        // ModelOpt's cast; a g given from elsewhere (the codec's gscale) may
        // be too small, and an E4M3 NaN scale would decode to NaN
        let sb = f32_to_e4m3fn_sat(s);
        scales.push(sb);
        let d = e4m3fn_to_f32(sb) * g;
        for (c, &v) in q.iter_mut().zip(b) {
            *c = if d == 0.0 || d.is_nan() { ((v < 0.0) as u8) << 3 } else { f32_to_e2m1(v / d) };
        }
        pack_pair(&q[..b.len()], codes);
    }
}

/// Codes and block scales of `n` elements: checks the lengths (untrusted
/// input: never panics, never allocates beyond `n`).
fn check_fp4(what: &str, n: usize, block: usize, codes: &[u8], scales: &[u8]) -> Result<()> {
    if codes.len() != n.div_ceil(2) || scales.len() != n.div_ceil(block) {
        return Err(Error::corrupt(format!(
            "{what}: {} code bytes and {} scales for {n} elements (want {} and {})",
            codes.len(),
            scales.len(),
            n.div_ceil(2),
            n.div_ceil(block)
        )));
    }
    Ok(())
}

/// The `n` dequantized values of FP4 codes, each block's scale from `scale`.
fn dequantize_fp4(codes: &[u8], n: usize, block: usize, scale: impl Fn(usize) -> f32, out: &mut Vec<f32>) {
    out.reserve(n);
    for i in 0..n {
        let b = codes[i / 2];
        let c = if i % 2 == 0 { b & 0x0f } else { b >> 4 };
        out.push(e2m1_to_f32(c) * scale(i / block));
    }
}

/// Dequantize `n` MXFP4 elements: `e2m1 * 2^(scale - 127)` in F32.
pub fn mxfp4_dequantize(codes: &[u8], scales: &[u8], n: usize, out: &mut Vec<f32>) -> Result<()> {
    check_fp4("mxfp4", n, MX_BLOCK, codes, scales)?;
    dequantize_fp4(codes, n, MX_BLOCK, |b| e8m0_to_f32(scales[b]), out);
    Ok(())
}

/// Dequantize `n` NVFP4 elements: `e2m1 * (e4m3(scale) * g)` in F32, the
/// product first, as ModelOpt's `dequantize`.
pub fn nvfp4_dequantize(codes: &[u8], scales: &[u8], g: f32, n: usize, out: &mut Vec<f32>) -> Result<()> {
    check_fp4("nvfp4", n, NV_BLOCK, codes, scales)?;
    dequantize_fp4(codes, n, NV_BLOCK, |b| e4m3fn_to_f32(scales[b]) * g, out);
    Ok(())
}

/// Whether a tensor is quantized to FP4 with blocks of `block` (see the
/// module doc): a 2-D float `*.weight` whose last dim divides by the block,
/// not an embedding or `lm_head`.
pub fn fp4_eligible(name: &str, dtype: DType, shape: &[u64], block: usize) -> bool {
    let lower = name.to_ascii_lowercase();
    matches!(dtype, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
        && shape.len() == 2
        && shape[1] > 0
        && shape[0] > 0
        && shape[1].is_multiple_of(block as u64)
        && (lower == "weight" || lower.ends_with(".weight"))
        && !["embed", "wte", "wpe", "lm_head"].iter().any(|p| lower.contains(p))
}

// ---------------------------------------------------------------------------
// Dequantizing a file

/// Float bytes to F32 values (F32, F16, BF16, F64).
pub(crate) fn float_values(dtype: DType, data: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        DType::F32 => Some(data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
        DType::F16 => Some(data.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()),
        DType::BF16 => Some(data.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()),
        DType::F64 => Some(data.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()),
        _ => None,
    }
}

/// How a tensor of a low-precision file is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Not quantized (BF16 or anything else): kept as is.
    Plain,
    /// FP8 `name` with the F32 scalar `name.scale`.
    Fp8 { scale: String },
    /// MXFP4: `name_blocks` and `name_scales`.
    Mxfp4 { blocks: String, scales: String },
    /// NVFP4: packed `name`, `name_scale` (E4M3) and `name_scale_2` (F32).
    Nvfp4 { scale: String, scale_2: String },
    /// A scale or block tensor of another tensor (not a weight of its own).
    Part,
}

/// The logical tensors of a low-precision safetensors file (as derived here,
/// or as gpt-oss / ModelOpt / FP8 checkpoints store them), recognised by the
/// names, dtypes and shapes of their parts: `(logical name, how)`, in the
/// order of the file. MXFP4 tensors are named after their `_blocks` part.
pub fn layout(st: &SafeTensors) -> Vec<(String, Stored)> {
    let by: HashMap<&str, (DType, &[u64])> =
        st.tensors.iter().map(|t| (t.name.as_str(), (t.dtype, t.shape.as_slice()))).collect();
    let is = |n: &str, d: DType| by.get(n).is_some_and(|(t, _)| *t == d);
    let scalar_f32 = |n: &str| by.get(n).is_some_and(|(t, s)| *t == DType::F32 && s.iter().product::<u64>() == 1);
    let mut part = std::collections::HashSet::new();
    let mut out = Vec::new();
    for t in &st.tensors {
        let n = t.name.as_str();
        let how = if let Some(base) = n.strip_suffix("_blocks").filter(|_| t.dtype == DType::U8) {
            let scales = format!("{base}_scales");
            if is(&scales, DType::U8) && t.shape.len() >= 2 {
                part.insert(scales.clone());
                Some((base.to_string(), Stored::Mxfp4 { blocks: n.to_string(), scales }))
            } else {
                None
            }
        } else if t.dtype == DType::U8
            && is(&format!("{n}_scale"), DType::F8E4M3)
            && scalar_f32(&format!("{n}_scale_2"))
        {
            let (scale, scale_2) = (format!("{n}_scale"), format!("{n}_scale_2"));
            part.insert(scale.clone());
            part.insert(scale_2.clone());
            Some((n.to_string(), Stored::Nvfp4 { scale, scale_2 }))
        } else if matches!(t.dtype, DType::F8E4M3 | DType::F8E5M2) && scalar_f32(&format!("{n}.scale")) {
            let scale = format!("{n}.scale");
            part.insert(scale.clone());
            Some((n.to_string(), Stored::Fp8 { scale }))
        } else {
            None
        };
        out.push(how.unwrap_or_else(|| (n.to_string(), Stored::Plain)));
    }
    for (n, how) in out.iter_mut() {
        if *how == Stored::Plain && part.contains(n.as_str()) {
            *how = Stored::Part;
        }
    }
    out
}

fn f32_scalar(st: &SafeTensors, name: &str) -> Result<f32> {
    let t = st.get(name).ok_or_else(|| Error::invalid(format!("missing scale tensor '{name}'")))?;
    let b: [u8; 4] = t.data.try_into().map_err(|_| Error::invalid(format!("'{name}' is not one F32")))?;
    Ok(f32::from_le_bytes(b))
}

/// The F32 values and the logical shape of one quantized tensor.
fn dequantize_one(st: &SafeTensors, name: &str, how: &Stored) -> Result<Option<(Vec<f32>, Vec<u64>)>> {
    let get = |n: &str| st.get(n).ok_or_else(|| Error::invalid(format!("missing tensor '{n}'")));
    let bad = |why: String| Error::invalid(format!("tensor '{name}': {why}"));
    match how {
        Stored::Plain | Stored::Part => Ok(None),
        Stored::Fp8 { scale } => {
            let t = get(name)?;
            let s = f32_scalar(st, scale)?;
            let v: Vec<f32> = if t.dtype == DType::F8E4M3 {
                t.data.iter().map(|&b| e4m3fn_to_f32(b) * s).collect()
            } else {
                t.data.iter().map(|&b| e5m2_to_f32(b) * s).collect()
            };
            Ok(Some((v, t.shape.to_vec())))
        }
        Stored::Mxfp4 { blocks, scales } => {
            let (b, s) = (get(blocks)?, get(scales)?);
            // [.., K/32, 16] -> [.., K]
            let sh = b.shape;
            if sh.len() < 2 || sh[sh.len() - 1] * 2 != MX_BLOCK as u64 || s.shape != &sh[..sh.len() - 1] {
                return Err(bad(format!("MXFP4 blocks {:?} and scales {:?} do not match", sh, s.shape)));
            }
            let mut shape = sh[..sh.len() - 2].to_vec();
            shape.push(sh[sh.len() - 2] * MX_BLOCK as u64);
            let n = b.data.len() * 2;
            let mut v = Vec::new();
            mxfp4_dequantize(b.data, s.data, n, &mut v).map_err(|e| bad(e.message().to_string()))?;
            Ok(Some((v, shape)))
        }
        Stored::Nvfp4 { scale, scale_2 } => {
            let (t, s) = (get(name)?, get(scale)?);
            let g = f32_scalar(st, scale_2)?;
            let sh = t.shape;
            let k = sh.last().copied().unwrap_or(0) * 2;
            if sh.is_empty() || s.shape.len() != sh.len() || s.shape[..sh.len() - 1] != sh[..sh.len() - 1] {
                return Err(bad(format!("NVFP4 weight {sh:?} and scale {:?} do not match", s.shape)));
            }
            if s.shape[sh.len() - 1] * NV_BLOCK as u64 != k {
                return Err(bad(format!("NVFP4 scale {:?} is not one per 16 of {k} columns", s.shape)));
            }
            let mut shape = sh.to_vec();
            *shape.last_mut().expect("non-empty") = k;
            let n = t.data.len() * 2;
            let mut v = Vec::new();
            nvfp4_dequantize(t.data, s.data, g, n, &mut v).map_err(|e| bad(e.message().to_string()))?;
            Ok(Some((v, shape)))
        }
    }
}

/// Dequantize a low-precision safetensors file ([`layout`]) into one with
/// every quantized tensor back under its own name and shape in `dtype`
/// (BF16: round to nearest even from the F32 product; or F32), the scale
/// and block tensors dropped, every other tensor copied. The metadata is
/// kept, with `weightlab.dequantized` set. This is the variant seen as a
/// lossy codec of the model it was derived from.
pub fn dequantize_file(bytes: &[u8], dtype: DType) -> Result<Vec<u8>> {
    if !matches!(dtype, DType::BF16 | DType::F32) {
        return Err(Error::invalid(format!("dequantize to {dtype}: BF16 or F32 only")));
    }
    let st = SafeTensors::parse(bytes)?;
    let mut out = Vec::new();
    for (name, how) in layout(&st) {
        match dequantize_one(&st, &name, &how)? {
            Some((v, shape)) => {
                let data: Vec<u8> = if dtype == DType::BF16 {
                    v.iter().flat_map(|x| f32_to_bf16(*x).to_le_bytes()).collect()
                } else {
                    v.iter().flat_map(|x| x.to_le_bytes()).collect()
                };
                out.push(OwnedTensor::new(name, dtype, shape, data));
            }
            None if how == Stored::Part => {}
            None => {
                let t = st.get(&name).expect("a tensor of the file");
                out.push(OwnedTensor::new(name, t.dtype, t.shape.to_vec(), t.data.to_vec()));
            }
        }
    }
    let mut meta = st.metadata.clone().unwrap_or_default();
    meta.insert("weightlab.dequantized".into(), dtype.name().into());
    crate::tensor::safetensors::serialize(out.iter().map(|t| t.view()), Some(&meta))
}

/// The order-0 floor of one stored tensor of a low-precision file, in bytes:
/// packed FP4 codes (MXFP4 `_blocks`, NVFP4 U8 weights) as 4-bit E2M1
/// symbols (H(sign, exponent) + H(mantissa | exponent) over the 16 nibble
/// values, which is the entropy of the nibbles), everything else as
/// [`crate::analysis::entropy::floor_bytes`] sees its dtype (U8 E8M0 scales:
/// byte entropy). Returns `(floor, is_fp4_codes)`.
pub fn stored_floor_bytes(dtype: DType, data: &[u8], fp4_codes: bool) -> f64 {
    use crate::analysis::entropy::floor_bytes;
    if fp4_codes { floor_bytes(DType::F4, data) } else { floor_bytes(dtype, data) }
}

/// The names of a file's packed FP4 code tensors.
pub fn fp4_code_tensors(st: &SafeTensors) -> std::collections::HashSet<String> {
    layout(st)
        .into_iter()
        .filter_map(|(n, how)| match how {
            Stored::Mxfp4 { blocks, .. } => Some(blocks),
            Stored::Nvfp4 { .. } => Some(n),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::safetensors;

    fn rng_values(n: usize, seed: u64, s: f32) -> Vec<f32> {
        let mut r = crate::tensor::synth::Rng::from_state(seed);
        (0..n).map(|_| ((r.uniform() + r.uniform() + r.uniform() - 1.5) as f32) * s).collect()
    }

    /// The nearest of `codes` (finite values, ties to the even code), by brute force.
    fn nearest_even(x: f64, codes: &[(u8, f64)]) -> u8 {
        let mut best = codes[0];
        for &(c, v) in codes {
            let (d, db) = ((x - v).abs(), (x - best.1).abs());
            if d < db || (d == db && c & 1 == 0 && best.0 & 1 == 1) {
                best = (c, v);
            }
        }
        best.0
    }

    #[test]
    fn e2m1_known_encodings() {
        let cases: &[(f32, u8)] = &[
            (0.0, 0x0),
            (-0.0, 0x0), // ModelOpt: the sign bit only below zero
            (6.0, 0x7),
            (-6.0, 0xf),
            (-0.5, 0x9),
            (0.25, 0x0), // the tie between 0 and the subnormal 0.5: even, 0
            (0.26, 0x1), // the subnormal 0.5
            (-0.1, 0x8), // rounds to -0
            (0.75, 0x2), // tie, up to 1.0 (even)
            (1.25, 0x2), // tie, down to 1.0
            (1.75, 0x4),
            (2.5, 0x4),
            (3.5, 0x6),
            (5.0, 0x6),
            (5.01, 0x7),
            (7.9, 0x7), // saturates
            (1e30, 0x7),
            (f32::INFINITY, 0x7),
            (f32::NEG_INFINITY, 0xf),
            (f32::NAN, 0x0),
            (-3.0, 0xd),
            (1.5, 0x3),
        ];
        for &(x, want) in cases {
            assert_eq!(f32_to_e2m1(x), want, "{x}");
        }
        for c in 0..16u8 {
            let v = e2m1_to_f32(c);
            let back = f32_to_e2m1(v);
            assert_eq!(back, if c == 8 { 0 } else { c }, "code {c:#x}");
        }
        // brute force against the nearest value, ties to the even code
        let pos: Vec<(u8, f64)> = (0..8u8).map(|c| (c, e2m1_to_f32(c) as f64)).collect();
        for i in 0..=2800 {
            let x = i as f32 / 400.0; // 0 .. 7 in steps of 1/400: every bound and tie
            let want = if x > 6.0 { 7 } else { nearest_even(x as f64, &pos) };
            assert_eq!(f32_to_e2m1(x), want, "{x}");
            assert_eq!(f32_to_e2m1(-x), if x > 0.0 { want | 8 } else { 0 }, "-{x}");
        }
    }

    #[test]
    fn e5m2_known_values_torch_semantics() {
        let cases: &[(f32, u8)] = &[
            (0.0, 0x00),
            (-0.0, 0x80),
            (1.0, 0x3c),
            (-2.0, 0xc0),
            (57344.0, 0x7b),
            (61439.0, 0x7b),
            (61440.0, 0x7c), // the tie above the max: even is infinity
            (1e9, 0x7c),
            (f32::INFINITY, 0x7c),
            (f32::NEG_INFINITY, 0xfc),
            (f32::NAN, 0x7f),
            (6.103_515_6e-5, 0x04), // 2^-14: smallest normal
            (1.525_878_9e-5, 0x01), // 2^-16: smallest subnormal
            (7.629_394_5e-6, 0x00), // 2^-17: tie, even: zero
            (2.288_818_4e-5, 0x02), // 1.5 * 2^-16: tie, even: 2
            (1.125, 0x3c),          // 1 + 1/8: tie, even: down
            (1.375, 0x3e),          // 1 + 3/8: tie, odd: up
            (1.1, 0x3c),
            (-3.5, 0xc3),
        ];
        for &(x, want) in cases {
            assert_eq!(f32_to_e5m2(x), want, "{x:e}");
        }
        assert_eq!(f32_to_e5m2_sat(1e9), 0x7b);
        assert_eq!(f32_to_e5m2_sat(f32::NEG_INFINITY), 0xfb);
        assert_eq!(f32_to_e5m2_sat(-f32::NAN), 0xff);
        assert_eq!(f32_to_e5m2_sat(61440.0), 0x7b);
        for b in 0..=255u8 {
            let v = e5m2_to_f32(b);
            if b & 0x7f > 0x7c {
                assert!(v.is_nan(), "{b:#04x}");
                continue;
            }
            assert_eq!(f32_to_e5m2(v), b, "{b:#04x} -> {v}");
        }
        assert_eq!(e5m2_to_f32(0x7b), 57344.0);
        // random finite values: the nearest E5M2, ties to even (the saturating cast)
        let finite: Vec<(u8, f64)> = (0..0x7cu8).map(|c| (c, e5m2_to_f32(c) as f64)).collect();
        let mut r = crate::tensor::synth::Rng::from_state(7);
        for _ in 0..20_000 {
            let x = ((r.uniform() * 2.0 - 1.0) * 2f64.powf(r.uniform() * 36.0 - 20.0)) as f32;
            let want = if x.abs() >= E5M2_MAX { 0x7b } else { nearest_even(x.abs() as f64, &finite) };
            let want = want | if x < 0.0 { 0x80 } else { 0 };
            assert_eq!(f32_to_e5m2_sat(x), want, "{x:e}");
        }
        assert_eq!(e5m2_scale_of_absmax(0.0), 1.0);
        assert_eq!(e5m2_scale_of_absmax(57344.0), 1.0);
    }

    #[test]
    fn mx_scales_and_blocks() {
        assert_eq!(mx_scale_exponent(6.0), 0);
        assert_eq!(mx_scale_exponent(4.0), 0);
        assert_eq!(mx_scale_exponent(3.99), -1);
        assert_eq!(mx_scale_exponent(1.0), -2);
        assert_eq!(mx_scale_exponent(0.0), -127);
        assert_eq!(mx_scale_exponent(f32::from_bits(1)), -127); // 2^-149: clamped
        assert_eq!(mx_scale_exponent(1e38), 124);
        assert_eq!(floor_log2(f32::from_bits(0x0040_0000)), -127);
        assert_eq!(pow2(-127).to_bits(), 0x0040_0000);
        assert_eq!(e8m0_to_f32(127), 1.0);
        assert!(e8m0_to_f32(255).is_nan());
        // one block: absmax 6 -> X = 0 (code 127), elements as they are
        let mut x = vec![0.0f32; 32];
        x[0] = 6.0;
        x[1] = -0.5;
        x[2] = 0.25;
        x[3] = 0.3;
        // a second block, absmax 7 -> X = 0: 7 saturates to 6; a third all zero
        x.extend([7.0f32, -1.0].iter().chain([0.0f32; 30].iter()));
        x.extend([0.0f32; 32]);
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        mxfp4_quantize(&x, &mut codes, &mut scales);
        assert_eq!(scales, [127, 127, 0]);
        assert_eq!(codes.len(), 48);
        assert_eq!(codes[0], 0x7 | 0x9 << 4, "6.0 low nibble, -0.5 high");
        assert_eq!(codes[1], 0x1 << 4, "0.25 ties to 0 (low nibble), 0.3 to 0.5");
        assert_eq!(codes[16], 0x7 | 0xa << 4, "7 saturates to 6; -1");
        assert!(codes[32..].iter().all(|&b| b == 0));
        let mut back = Vec::new();
        mxfp4_dequantize(&codes, &scales, x.len(), &mut back).unwrap();
        assert_eq!(&back[..5], &[6.0, -0.5, 0.0, 0.5, 0.0]);
        assert_eq!(back[32], 6.0);
        // a block of small values: absmax 0.01 -> X = floor(log2 0.01) - 2 = -9
        let small: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.000_625).collect();
        let (mut c2, mut s2) = (Vec::new(), Vec::new());
        mxfp4_quantize(&small, &mut c2, &mut s2);
        assert_eq!(s2, [(127 - 9) as u8]);
        assert!(mxfp4_dequantize(&c2, &s2, 33, &mut back).is_err());
        assert!(mxfp4_dequantize(&c2[1..], &s2, 32, &mut back).is_err());
    }

    #[test]
    fn nv_scales_and_blocks() {
        assert_eq!(nvfp4_global_scale(2688.0), 1.0);
        assert_eq!(nvfp4_global_scale(0.0), 1.0);
        // g = 1: a block of absmax 6 has scale 1.0 (0x38), absmax 3 -> 0.5 (0x30)
        let mut x = vec![0.0f32; 48];
        x[0] = 6.0;
        x[1] = -0.5;
        x[16] = 3.0;
        x[17] = 0.25; // 0.25 / 0.5 = 0.5: code 1
        let (mut codes, mut scales) = (Vec::new(), Vec::new());
        nvfp4_quantize(&x, 1.0, &mut codes, &mut scales);
        assert_eq!(scales, [0x38, 0x30, 0x38], "zero block: scale 1.0");
        assert_eq!(codes[0], 0x7 | 0x9 << 4);
        assert_eq!(codes[8], 0x7 | 0x1 << 4);
        let mut back = Vec::new();
        nvfp4_dequantize(&codes, &scales, 1.0, 48, &mut back).unwrap();
        assert_eq!(&back[..2], &[6.0, -0.5]);
        assert_eq!(&back[16..18], &[3.0, 0.25]);
        // the tensor's absmax maps to 6 * 448
        let v = rng_values(4096, 3, 0.2);
        let g = nvfp4_global_scale(absmax(&v));
        let (mut c, mut s) = (Vec::new(), Vec::new());
        nvfp4_quantize(&v, g, &mut c, &mut s);
        assert!(s.contains(&0x7e), "the block holding the absmax has scale 448");
        assert!(s.iter().all(|&b| b & 0x7f != 0x7f), "no NaN scale");
    }

    /// Half the E2M1 spacing around a scaled magnitude (the rounding error
    /// bound), or the clipping error above 6.
    fn e2m1_bound(a: f32) -> f32 {
        if a > 6.0 {
            a - 6.0
        } else if a >= 4.0 {
            1.0
        } else if a >= 2.0 {
            0.5
        } else {
            0.25
        }
    }

    #[test]
    fn dequantized_errors_are_within_the_format_bounds() {
        for seed in 0..4 {
            let mut x = rng_values(64 * 96, seed, 0.05);
            x[17] = 0.9; // an outlier: its block saturates under MX
            let (mut c, mut s) = (Vec::new(), Vec::new());
            mxfp4_quantize(&x, &mut c, &mut s);
            let mut y = Vec::new();
            mxfp4_dequantize(&c, &s, x.len(), &mut y).unwrap();
            for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                let sc = e8m0_to_f32(s[i / MX_BLOCK]);
                let bound = e2m1_bound(a.abs() / sc) * sc;
                assert!((a - b).abs() <= bound, "mx {i}: {a} -> {b}, bound {bound}");
            }
            let g = nvfp4_global_scale(absmax(&x));
            let (mut c, mut s) = (Vec::new(), Vec::new());
            nvfp4_quantize(&x, g, &mut c, &mut s);
            let mut y = Vec::new();
            nvfp4_dequantize(&c, &s, g, x.len(), &mut y).unwrap();
            for (i, (a, b)) in x.iter().zip(&y).enumerate() {
                let d = e4m3fn_to_f32(s[i / NV_BLOCK]) * g;
                // the E4M3 scale rounds up to 1/16: 6 * (1 + 1/16) keeps every element <= 6.4
                let bound = e2m1_bound(a.abs() / d) * d + a.abs() * 1e-6;
                assert!((a - b).abs() <= bound, "nv {i}: {a} -> {b}, bound {bound}");
                assert!(a.abs() / d <= 6.4);
            }
            let sc = e5m2_scale_of_absmax(absmax(&x));
            for a in &x {
                let b = e5m2_to_f32(f32_to_e5m2_sat(a / sc)) * sc;
                // 2 mantissa bits: half an ulp is 1/8 of the value's binade; the subnormal quantum below
                assert!((a - b).abs() <= a.abs() / 8.0 + sc * 2f32.powi(-17), "e5m2 {a} -> {b}");
            }
        }
    }

    #[test]
    fn eligibility_follows_modelopt() {
        let e = |n: &str, s: &[u64]| fp4_eligible(n, DType::BF16, s, MX_BLOCK);
        assert!(e("model.layers.0.self_attn.q_proj.weight", &[576, 576]));
        assert!(e("encoder.layer.0.intermediate.dense.weight", &[1536, 384]));
        assert!(!e("model.layers.0.self_attn.q_proj.weight", &[576, 570]), "last dim not whole blocks");
        assert!(!e("model.embed_tokens.weight", &[49152, 576]));
        assert!(!e("embeddings.word_embeddings.weight", &[30522, 384]));
        assert!(!e("lm_head.weight", &[49152, 576]));
        assert!(!e("model.norm.weight", &[576]));
        assert!(!e("q_proj.bias", &[576, 64]));
        assert!(!e("conv.weight", &[8, 4, 32]));
        assert!(!fp4_eligible("x.weight", DType::I32, &[4, 32], MX_BLOCK));
    }

    /// Derive through a safetensors file and back: the layouts, the kept
    /// tensors, the dequantized file against quantize-then-dequantize.
    #[test]
    fn derive_file_round_trip_of_every_low_precision_variant() {
        use super::super::derive::{Variant, derive_file};
        let w = rng_values(16 * 64, 11, 0.1);
        let w_bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let emb = rng_values(10 * 64, 12, 1.0);
        let norm = rng_values(64, 13, 1.0);
        let f32b = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let ts = [
            OwnedTensor::new("embed_tokens.weight", DType::F32, vec![10, 64], f32b(&emb)),
            OwnedTensor::new("layers.0.q_proj.weight", DType::F32, vec![16, 64], w_bytes.clone()),
            OwnedTensor::new("layers.0.norm.weight", DType::F32, vec![64], f32b(&norm)),
            OwnedTensor::new("ids", DType::I64, vec![2], [5i64, 6].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ];
        let src = safetensors::serialize(ts.iter().map(|t| t.view()), None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for v in [Variant::Mxfp4, Variant::Nvfp4, Variant::Fp8E5m2] {
            let p = dir.path().join(format!("{v}.safetensors"));
            derive_file(&src, "abc", "toy", v, &p).unwrap();
            let bytes = std::fs::read(&p).unwrap();
            let st = SafeTensors::parse(&bytes).unwrap();
            let meta = st.metadata.as_ref().unwrap();
            assert_eq!(meta["weightlab.derived"], "true");
            assert_eq!(meta["weightlab.variant"], v.name());
            let names: Vec<&str> = st.tensors.iter().map(|t| t.name.as_str()).collect();
            let dims = |n: &str| st.get(n).map(|t| (t.dtype, t.shape.to_vec())).unwrap();
            let mut want = Vec::new();
            match v {
                Variant::Mxfp4 => {
                    assert_eq!(
                        names,
                        [
                            "embed_tokens.weight",
                            "layers.0.q_proj.weight_blocks",
                            "layers.0.q_proj.weight_scales",
                            "layers.0.norm.weight",
                            "ids"
                        ]
                    );
                    assert_eq!(dims("layers.0.q_proj.weight_blocks"), (DType::U8, vec![16, 2, 16]));
                    assert_eq!(dims("layers.0.q_proj.weight_scales"), (DType::U8, vec![16, 2]));
                    let (mut c, mut s) = (Vec::new(), Vec::new());
                    mxfp4_quantize(&w, &mut c, &mut s);
                    assert_eq!(st.get("layers.0.q_proj.weight_blocks").unwrap().data, &c[..]);
                    assert_eq!(st.get("layers.0.q_proj.weight_scales").unwrap().data, &s[..]);
                    mxfp4_dequantize(&c, &s, w.len(), &mut want).unwrap();
                    assert_eq!(meta["weightlab.fp4_tensors"], "1");
                }
                Variant::Nvfp4 => {
                    assert_eq!(
                        names,
                        [
                            "embed_tokens.weight",
                            "layers.0.q_proj.weight",
                            "layers.0.q_proj.weight_scale",
                            "layers.0.q_proj.weight_scale_2",
                            "layers.0.norm.weight",
                            "ids"
                        ]
                    );
                    assert_eq!(dims("layers.0.q_proj.weight"), (DType::U8, vec![16, 32]));
                    assert_eq!(dims("layers.0.q_proj.weight_scale"), (DType::F8E4M3, vec![16, 4]));
                    assert_eq!(dims("layers.0.q_proj.weight_scale_2"), (DType::F32, vec![]));
                    let g = nvfp4_global_scale(absmax(&w));
                    assert_eq!(st.get("layers.0.q_proj.weight_scale_2").unwrap().data, &g.to_le_bytes());
                    let (mut c, mut s) = (Vec::new(), Vec::new());
                    nvfp4_quantize(&w, g, &mut c, &mut s);
                    assert_eq!(st.get("layers.0.q_proj.weight").unwrap().data, &c[..]);
                    nvfp4_dequantize(&c, &s, g, w.len(), &mut want).unwrap();
                }
                _ => {
                    assert_eq!(dims("layers.0.q_proj.weight"), (DType::F8E5M2, vec![16, 64]));
                    assert_eq!(dims("layers.0.norm.weight.scale"), (DType::F32, vec![]));
                    let sc = e5m2_scale_of_absmax(absmax(&w));
                    want = w.iter().map(|x| e5m2_to_f32(f32_to_e5m2_sat(x / sc)) * sc).collect();
                }
            }
            if v != Variant::Fp8E5m2 {
                // kept in BF16, as real FP4 checkpoints keep them
                assert_eq!(dims("embed_tokens.weight"), (DType::BF16, vec![10, 64]));
                assert_eq!(dims("layers.0.norm.weight"), (DType::BF16, vec![64]));
            }
            assert_eq!(dims("ids"), (DType::I64, vec![2]));
            // the dequantized file: the source's names and shapes, BF16, the values above
            for dt in [DType::BF16, DType::F32] {
                let deq = dequantize_file(&bytes, dt).unwrap();
                let d = SafeTensors::parse(&deq).unwrap();
                let dn: Vec<&str> = d.tensors.iter().map(|t| t.name.as_str()).collect();
                assert_eq!(dn, ["embed_tokens.weight", "layers.0.q_proj.weight", "layers.0.norm.weight", "ids"], "{v}");
                let q = d.get("layers.0.q_proj.weight").unwrap();
                assert_eq!((q.dtype, q.shape), (dt, &[16u64, 64][..]));
                let got = float_values(dt, q.data).unwrap();
                for (a, b) in got.iter().zip(&want) {
                    let b = if dt == DType::BF16 { bf16_to_f32(f32_to_bf16(*b)) } else { *b };
                    assert_eq!(a.to_bits(), b.to_bits(), "{v} {dt}");
                }
                assert_eq!(d.get("ids").unwrap().data, ts[3].data.as_slice());
                assert_eq!(d.metadata.as_ref().unwrap()["weightlab.dequantized"], dt.name());
            }
            assert!(dequantize_file(&bytes, DType::F16).is_err());
        }
        // a source that already has a name the variant needs is refused
        let clash = [
            OwnedTensor::new("q.weight", DType::F32, vec![1, 32], vec![0; 128]),
            OwnedTensor::new("q.weight_scales", DType::F32, vec![1], vec![0; 4]),
        ];
        let src = safetensors::serialize(clash.iter().map(|t| t.view()), None).unwrap();
        let e = derive_file(&src, "0", "toy", Variant::Mxfp4, &dir.path().join("c")).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn nibble_floor_of_packed_codes() {
        // codes 0x1 x3 and 0x7 x1 in two bytes: H = 0.811 bits per nibble;
        // a byte-wise model sees two distinct bytes (1 bit per byte) instead
        let data = [0x11u8, 0x71];
        let h = crate::analysis::entropy::entropy(&[3, 1]);
        assert!((stored_floor_bytes(DType::U8, &data, true) - h * 4.0 / 8.0).abs() < 1e-12);
        assert!((stored_floor_bytes(DType::U8, &data, false) - 2.0 / 8.0).abs() < 1e-12);
    }
}
