//! Order-0 entropy of weight tensors: byte planes, float fields (sign,
//! exponent, mantissa), sign+exponent, the conditional entropy of the mantissa
//! given the exponent, and the order-0 floor that a float-aware lossless codec
//! can reach with one model per tensor.
//!
//! Conventions: plane 0 is the least significant byte of each element as it is
//! stored (little-endian), so for BF16 plane 1 holds sign + 7 exponent bits and
//! plane 0 holds the last exponent bit + 7 mantissa bits.

use crate::tensor::{DType, FloatLayout};

/// Shannon entropy in bits per symbol of a histogram.
pub fn entropy(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let t = total as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / t;
            -p * p.log2()
        })
        .sum()
}

/// Histogram of byte values.
pub fn byte_histogram(data: &[u8]) -> [u64; 256] {
    // Four interleaved tables avoid store-to-load stalls on runs of equal bytes.
    let mut h = [[0u64; 256]; 4];
    let mut it = data.chunks_exact(4);
    for c in &mut it {
        h[0][c[0] as usize] += 1;
        h[1][c[1] as usize] += 1;
        h[2][c[2] as usize] += 1;
        h[3][c[3] as usize] += 1;
    }
    for &b in it.remainder() {
        h[0][b as usize] += 1;
    }
    let mut out = [0u64; 256];
    for (i, o) in out.iter_mut().enumerate() {
        *o = h[0][i] + h[1][i] + h[2][i] + h[3][i];
    }
    out
}

/// Byte histogram of each plane of `width`-byte elements.
pub fn plane_histograms(data: &[u8], width: usize) -> Vec<[u64; 256]> {
    let mut out = vec![[0u64; 256]; width];
    for e in data.chunks_exact(width) {
        for (k, &b) in e.iter().enumerate() {
            out[k][b as usize] += 1;
        }
    }
    out
}

/// Read element `i` of a float tensor as its raw bit pattern (≤ 64 bits).
/// Sub-byte types are not handled here (see [`float_bits`]).
#[inline]
pub fn element_bits(data: &[u8], width: usize, i: usize) -> u64 {
    let e = &data[i * width..(i + 1) * width];
    let mut b = [0u8; 8];
    b[..width].copy_from_slice(e);
    u64::from_le_bytes(b)
}

/// Iterate over the raw bit patterns of a float tensor's elements, including
/// the packed sub-byte formats (F4: two per byte, low nibble first; F6: four
/// per three bytes, little-endian bit order).
pub fn float_bits(dtype: DType, data: &[u8]) -> Box<dyn Iterator<Item = u64> + '_> {
    match dtype {
        DType::F4 => Box::new(data.iter().flat_map(|&b| [(b & 0x0f) as u64, (b >> 4) as u64])),
        DType::F6E2M3 | DType::F6E3M2 => Box::new(data.chunks_exact(3).flat_map(|c| {
            let v = c[0] as u64 | (c[1] as u64) << 8 | (c[2] as u64) << 16;
            [v & 63, (v >> 6) & 63, (v >> 12) & 63, (v >> 18) & 63]
        })),
        d => {
            let w = d.size().unwrap_or(1);
            Box::new(data.chunks_exact(w).map(move |e| {
                let mut b = [0u8; 8];
                b[..w].copy_from_slice(e);
                u64::from_le_bytes(b)
            }))
        }
    }
}

/// Entropies of the float fields of one tensor, in bits per element.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct FieldEntropy {
    pub elements: u64,
    pub bits_per_element: u32,
    pub sign: f64,
    pub exponent: f64,
    pub mantissa: f64,
    /// H(sign, exponent) jointly.
    pub sign_exponent: f64,
    /// H(mantissa | exponent): the mantissa's byte-sized parts (see
    /// [`FieldCounts::new`]), each modelled per exponent value.
    pub mantissa_given_exponent: f64,
    /// H(sign, mantissa | exponent): what a codec that models sign and mantissa
    /// per exponent can reach after coding the exponent.
    pub sign_mantissa_given_exponent: f64,
    /// The order-0 floor in bits per element: H(sign,exponent) + H(mantissa | exponent).
    pub floor_bits: f64,
    /// Number of distinct exponent values present.
    pub distinct_exponents: u32,
}

impl FieldEntropy {
    /// The floor as a fraction of the original size.
    pub fn floor_ratio(&self) -> f64 {
        if self.bits_per_element == 0 { 0.0 } else { self.floor_bits / self.bits_per_element as f64 }
    }
}

/// Conditional entropy H(Y | X) from a joint histogram indexed `[x][y]`.
pub fn conditional_entropy(joint: &[Vec<u64>]) -> f64 {
    let total: u64 = joint.iter().flatten().sum();
    if total == 0 {
        return 0.0;
    }
    joint
        .iter()
        .map(|row| {
            let n: u64 = row.iter().sum();
            n as f64 / total as f64 * entropy(row)
        })
        .sum()
}

/// Field entropies of a float tensor. Mantissas wider than 16 bits (F32, F64)
/// are modelled by their top 16 bits with the rest counted at their own
/// (per-exponent) byte entropies, which is how a byte-oriented codec sees them;
/// the floor is then a slight underestimate of the full joint model for the low
/// bits and exact for BF16, F16 and the 8-bit and smaller formats.
pub fn field_entropy(dtype: DType, data: &[u8]) -> Option<FieldEntropy> {
    let mut c = FieldCounts::new(dtype)?;
    c.add(data);
    Some(c.finish())
}

/// The histograms behind [`field_entropy`], accumulated over any number of
/// buffers of one dtype (several tensors, or chunks of one): the whole-file
/// entropies of `analyze` come from one of these per dtype.
#[derive(Debug, Clone)]
pub struct FieldCounts {
    layout: FloatLayout,
    dtype: DType,
    n: u64,
    sign: [u64; 2],
    exp: Vec<u64>,
    sexp: Vec<u64>,
    /// Per-exponent mantissa histograms; a row is allocated when its exponent
    /// first occurs (F32 has 256 exponents of 2^16-entry rows, of which trained
    /// weights use a few dozen).
    mant_hi: Vec<Vec<u64>>,
    smant_hi: Vec<Vec<u64>>,
    mant_lo: Vec<Vec<Vec<u64>>>,
    mant_marg: Vec<u64>,
}

/// Bits of the mantissa's high part (the rest is whole bytes).
fn mant_hi_bits(mant_bits: u32) -> u32 {
    if mant_bits == 0 { 0 } else { (mant_bits - 1) % 8 + 1 }
}

impl FieldCounts {
    /// Empty counts for a float dtype; `None` for non-float dtypes.
    pub fn new(dtype: DType) -> Option<FieldCounts> {
        let layout = dtype.float_layout()?;
        let FloatLayout { sign_bits, exp_bits, mant_bits } = layout;
        let exp_card = 1usize << exp_bits;
        // Mantissa modelled in byte-sized parts, each conditioned on the
        // exponent: a high part of 1 to 8 bits, then whole bytes (F32: 7 + 8
        // + 8, F16: 2 + 8, BF16: 7). Not one joint histogram of the top 16
        // bits: its plug-in entropy is biased low by about (K - 1) / (2 N
        // ln 2) bits for K symbols seen N times, which on MiniLM-F32 (up to
        // 65536 mantissa values per exponent, ~10^4-10^5 weights each) put
        // the "floor" ~0.47 bits per weight below anything a coder that pays
        // for its model can reach: a sampling artifact, not structure.
        let hi_bits = mant_hi_bits(mant_bits);
        let lo_bits = mant_bits - hi_bits;
        let lo_bytes = lo_bits.div_ceil(8) as usize;
        Some(FieldCounts {
            layout,
            dtype,
            n: 0,
            sign: [0; 2],
            exp: vec![0; exp_card],
            sexp: vec![0; exp_card << sign_bits],
            mant_hi: vec![Vec::new(); exp_card],
            smant_hi: vec![Vec::new(); exp_card],
            mant_lo: vec![vec![vec![0; 256]; exp_card]; lo_bytes],
            mant_marg: vec![0; 1 << hi_bits],
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Count the elements of `data` (whole elements of this dtype).
    pub fn add(&mut self, data: &[u8]) {
        let FloatLayout { sign_bits, exp_bits, mant_bits } = self.layout;
        let bits = self.layout.bits();
        let hi_bits = mant_hi_bits(mant_bits);
        let lo_bits = mant_bits - hi_bits;
        for v in float_bits(self.dtype, data) {
            self.n += 1;
            let m = v & ((1u64 << mant_bits) - 1);
            let e = ((v >> mant_bits) & ((1u64 << exp_bits) - 1)) as usize;
            let s = if sign_bits == 1 { ((v >> (bits - 1)) & 1) as usize } else { 0 };
            let mh = (m >> lo_bits) as usize;
            self.sign[s] += 1;
            self.exp[e] += 1;
            self.sexp[(s << exp_bits) | e] += 1;
            if self.mant_hi[e].is_empty() {
                self.mant_hi[e] = vec![0; 1 << hi_bits];
                self.smant_hi[e] = vec![0; 1 << (hi_bits + sign_bits)];
            }
            self.mant_hi[e][mh] += 1;
            self.smant_hi[e][(s << hi_bits) | mh] += 1;
            self.mant_marg[mh] += 1;
            // the low remainder only: bits below the high part
            let lo = m & ((1u64 << lo_bits) - 1);
            for (k, t) in self.mant_lo.iter_mut().enumerate() {
                t[e][((lo >> (8 * k)) & 0xff) as usize] += 1;
            }
        }
    }

    /// Add another set of counts of the same dtype.
    pub fn merge(&mut self, other: &FieldCounts) {
        assert_eq!(self.dtype, other.dtype, "merging field counts of different dtypes");
        fn add(a: &mut [u64], b: &[u64]) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.n += other.n;
        add(&mut self.sign, &other.sign);
        add(&mut self.exp, &other.exp);
        add(&mut self.sexp, &other.sexp);
        add(&mut self.mant_marg, &other.mant_marg);
        for (a, b) in
            self.mant_hi.iter_mut().chain(self.smant_hi.iter_mut()).zip(other.mant_hi.iter().chain(&other.smant_hi))
        {
            if a.is_empty() {
                a.clone_from(b);
            } else {
                add(a, b);
            }
        }
        for (ta, tb) in self.mant_lo.iter_mut().zip(&other.mant_lo) {
            for (a, b) in ta.iter_mut().zip(tb) {
                add(a, b);
            }
        }
    }

    /// Histogram of the (biased) exponent field, indexed by its raw value.
    pub fn exponent_histogram(&self) -> &[u64] {
        &self.exp
    }

    /// Histogram of the sign bit: `[positive, negative]` (zero-sign formats: all positive).
    pub fn sign_histogram(&self) -> [u64; 2] {
        self.sign
    }

    /// The entropies of everything counted so far.
    pub fn finish(&self) -> FieldEntropy {
        let lo_cond: f64 = self.mant_lo.iter().map(|t| conditional_entropy(t)).sum();
        let lo_marg: f64 = self
            .mant_lo
            .iter()
            .map(|t| {
                let mut h = [0u64; 256];
                for row in t {
                    for (i, c) in row.iter().enumerate() {
                        h[i] += c;
                    }
                }
                entropy(&h)
            })
            .sum();
        let mgx = conditional_entropy(&self.mant_hi) + lo_cond;
        let smgx = conditional_entropy(&self.smant_hi) + lo_cond;
        let se = entropy(&self.sexp);
        FieldEntropy {
            elements: self.n,
            bits_per_element: self.layout.bits(),
            sign: entropy(&self.sign),
            exponent: entropy(&self.exp),
            mantissa: entropy(&self.mant_marg) + lo_marg,
            sign_exponent: se,
            mantissa_given_exponent: mgx,
            sign_mantissa_given_exponent: smgx,
            floor_bits: se + mgx,
            distinct_exponents: self.exp.iter().filter(|&&c| c > 0).count() as u32,
        }
    }
}

/// The order-0 floor of a tensor in bytes, with one model per tensor: the float
/// floor for float dtypes, the byte-plane entropy for everything else.
pub fn floor_bytes(dtype: DType, data: &[u8]) -> f64 {
    if let Some(f) = field_entropy(dtype, data) {
        return f.floor_bits * f.elements as f64 / 8.0;
    }
    let w = dtype.size().unwrap_or(1);
    plane_histograms(data, w).iter().map(|h| entropy(h) * h.iter().sum::<u64>() as f64 / 8.0).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_known_distributions() {
        assert_eq!(entropy(&[]), 0.0);
        assert_eq!(entropy(&[5]), 0.0);
        assert!((entropy(&[1, 1]) - 1.0).abs() < 1e-12);
        assert!((entropy(&[1, 1, 1, 1]) - 2.0).abs() < 1e-12);
        // p = (1/2, 1/4, 1/4): 1.5 bits
        assert!((entropy(&[2, 1, 1]) - 1.5).abs() < 1e-12);
        assert!((entropy(&[0, 3, 0, 1]) - (-(0.75f64).log2() * 0.75 - 0.25 * 0.25f64.log2())).abs() < 1e-12);
    }

    #[test]
    fn conditional_entropy_hand_computed() {
        // x=0: y uniform over 2 (1 bit), x=1: y constant (0 bits); P(x=0)=1/2
        let j = vec![vec![3, 3], vec![6, 0]];
        assert!((conditional_entropy(&j) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn bf16_fields_hand_computed() {
        // Four BF16 values: 1.0 (0x3f80), -1.0 (0xbf80), 2.0 (0x4000), 1.5 (0x3fc0)
        let vals: [u16; 4] = [0x3f80, 0xbf80, 0x4000, 0x3fc0];
        let data: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f = field_entropy(DType::BF16, &data).unwrap();
        assert_eq!(f.elements, 4);
        assert!((f.sign - entropy(&[3, 1])).abs() < 1e-12);
        // exponents: 127,127,128,127
        assert!((f.exponent - entropy(&[3, 1])).abs() < 1e-12);
        assert_eq!(f.distinct_exponents, 2);
        // (s,e): (0,127)x2, (1,127), (0,128)
        assert!((f.sign_exponent - entropy(&[2, 1, 1])).abs() < 1e-12);
        // mantissa | exp: exp 127 has mantissas {0,0,0x40} (3/4 weight), exp 128 {0}
        let h127 = entropy(&[2, 1]);
        assert!((f.mantissa_given_exponent - 0.75 * h127).abs() < 1e-12);
        assert!((f.floor_bits - (f.sign_exponent + f.mantissa_given_exponent)).abs() < 1e-12);
    }

    #[test]
    fn sub_byte_fields() {
        // F4 E2M1: 0x1 and 0xF in one byte
        let f = field_entropy(DType::F4, &[0xf1]).unwrap();
        assert_eq!(f.elements, 2);
        assert!((f.sign - 1.0).abs() < 1e-12);
        assert!(field_entropy(DType::I32, &[0; 4]).is_none());
    }

    #[test]
    fn field_counts_merge_equals_concatenation() {
        let a: Vec<u8> = [0x3f80u16, 0xbf80, 0x4000].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [0x3fc0u16, 0x0001, 0x3f80].iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut ca = FieldCounts::new(DType::BF16).unwrap();
        ca.add(&a);
        let mut cb = FieldCounts::new(DType::BF16).unwrap();
        cb.add(&b);
        ca.merge(&cb);
        let cat: Vec<u8> = a.iter().chain(&b).copied().collect();
        assert_eq!(ca.finish(), field_entropy(DType::BF16, &cat).unwrap());
        assert_eq!(ca.exponent_histogram()[127], 4);
        assert_eq!(ca.sign_histogram(), [5, 1]);
        assert!(FieldCounts::new(DType::U8).is_none());
    }

    #[test]
    fn f32_floor_counts_each_mantissa_bit_once() {
        // Uniformly random mantissas under one exponent: 23 bits of mantissa
        // entropy at most (the sample bounds it by log2(n) per part), never more.
        let mut x = 0x1234_5678_9abc_def0u64;
        let data: Vec<u8> = (0..1 << 16)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (0x3f80_0000u32 | (x as u32 & 0x007f_ffff)).to_le_bytes()
            })
            .collect();
        let f = field_entropy(DType::F32, &data).unwrap();
        assert_eq!(f.sign_exponent, 0.0);
        // 7 + 8 + 8 bits, each part nearly uniform over 65536 samples.
        assert!(f.mantissa_given_exponent <= 23.0 + 1e-9, "{}", f.mantissa_given_exponent);
        assert!(f.mantissa_given_exponent > 22.98, "{}", f.mantissa_given_exponent);
    }

    /// Random F32 bits under four exponents cannot be compressed below
    /// 2 + 1 + 23 = 26 bits per element, and the floor must say so: a
    /// joint histogram of the top 16 mantissa bits (65536 values, 65536
    /// samples per exponent) measured 25.17 bits, a "floor" below what the
    /// data holds.
    #[test]
    fn floor_of_random_mantissas_is_not_biased_low() {
        let mut x = 0x0bad_5eed_1234_5678u64;
        let data: Vec<u8> = (0..1 << 18)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let e = 120 + (x >> 40) as u32 % 4;
                let bits = ((x >> 63) as u32) << 31 | e << 23 | (x as u32 & 0x007f_ffff);
                bits.to_le_bytes()
            })
            .collect();
        let f = field_entropy(DType::F32, &data).unwrap();
        assert!((f.floor_bits - 26.0).abs() < 0.02, "floor {} bits, 26 in the data", f.floor_bits);
    }

    #[test]
    fn floor_of_constant_is_zero() {
        assert_eq!(floor_bytes(DType::F32, &[0u8; 64]), 0.0);
        assert_eq!(floor_bytes(DType::I64, &[7u8; 64]), 0.0);
    }
}
