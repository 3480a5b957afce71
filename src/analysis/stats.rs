//! Value statistics of float tensors: decoding raw bit patterns to `f64`,
//! sign and zero shares, magnitude bands, min and max.

use super::entropy::float_bits;
use crate::tensor::DType;
use serde::{Deserialize, Serialize};

/// Decode one element's raw bit pattern (as [`float_bits`] yields it) to `f64`.
///
/// Exact for every format listed: F16 and BF16 through `half`, F32 and F64 by
/// bit cast, and the small formats by their OCP definitions: F8_E4M3 is the
/// "fn" variant (bias 7, no infinities, S.1111.111 is NaN, max 448), F8_E5M2 is
/// IEEE-like (bias 15, infinities and NaNs), F8_E8M0 is a pure power of two
/// (0xff is NaN), F6_E2M3 / F6_E3M2 / F4 (E2M1) have no infinities or NaNs.
/// `None` for non-float dtypes.
pub fn to_f64(dtype: DType, bits: u64) -> Option<f64> {
    Some(match dtype {
        DType::F16 => half::f16::from_bits(bits as u16).to_f64(),
        DType::BF16 => half::bf16::from_bits(bits as u16).to_f64(),
        DType::F32 => f32::from_bits(bits as u32) as f64,
        DType::F64 => f64::from_bits(bits),
        DType::F8E4M3 => {
            if bits & 0x7f == 0x7f {
                f64::NAN
            } else {
                small_float(bits, 4, 3)
            }
        }
        DType::F8E5M2 => {
            let e = (bits >> 2) & 0x1f;
            if e == 0x1f {
                let neg = bits & 0x80 != 0;
                if bits & 3 == 0 { if neg { f64::NEG_INFINITY } else { f64::INFINITY } } else { f64::NAN }
            } else {
                small_float(bits, 5, 2)
            }
        }
        DType::F8E8M0 => {
            if bits & 0xff == 0xff {
                f64::NAN
            } else {
                2f64.powi((bits & 0xff) as i32 - 127)
            }
        }
        DType::F6E2M3 => small_float(bits, 2, 3),
        DType::F6E3M2 => small_float(bits, 3, 2),
        DType::F4 => small_float(bits, 2, 1),
        _ => return None,
    })
}

/// A finite binary float with one sign bit, `e` exponent bits (bias
/// 2^(e-1) - 1), `m` mantissa bits and subnormals, no special values.
fn small_float(bits: u64, e: u32, m: u32) -> f64 {
    let bias = (1i32 << (e - 1)) - 1;
    let mant = (bits & ((1 << m) - 1)) as f64;
    let exp = ((bits >> m) & ((1 << e) - 1)) as i32;
    let sign = if (bits >> (e + m)) & 1 == 1 { -1.0 } else { 1.0 };
    let scale = (1u64 << m) as f64;
    if exp == 0 {
        sign * mant / scale * 2f64.powi(1 - bias)
    } else {
        sign * (1.0 + mant / scale) * 2f64.powi(exp - bias)
    }
}

/// Upper bounds of the magnitude bands (|x| < bound); the last band is open.
pub const BAND_BOUNDS: [f64; 5] = [1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// Labels of the magnitude bands, one more than [`BAND_BOUNDS`].
pub const BAND_LABELS: [&str; 6] =
    ["|x| < 1e-3", "1e-3 ≤ |x| < 1e-2", "1e-2 ≤ |x| < 0.1", "0.1 ≤ |x| < 1", "1 ≤ |x| < 10", "|x| ≥ 10"];

/// Value statistics of a float tensor. Shares are fractions of `count`.
/// Zeros (either sign) count as zero, not as positive or negative; the
/// magnitude bands cover every finite value including zeros, so they sum to
/// `count - nan - inf`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ValueStats {
    pub count: u64,
    pub zero: u64,
    pub positive: u64,
    pub negative: u64,
    pub nan: u64,
    pub inf: u64,
    /// Smallest and largest finite value (None when there is none).
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Smallest non-zero magnitude.
    pub min_abs_nonzero: Option<f64>,
    /// Mean and standard deviation of the finite values.
    pub mean: Option<f64>,
    pub std: Option<f64>,
    /// Counts per magnitude band (see [`BAND_LABELS`]).
    pub bands: Vec<u64>,
    #[serde(skip)]
    sum: f64,
    #[serde(skip)]
    sum_sq: f64,
}

impl ValueStats {
    pub fn new() -> ValueStats {
        ValueStats { bands: vec![0; BAND_LABELS.len()], ..Default::default() }
    }

    pub fn push(&mut self, x: f64) {
        self.count += 1;
        if x.is_nan() {
            self.nan += 1;
            return;
        }
        if x.is_infinite() {
            self.inf += 1;
            if x > 0.0 {
                self.positive += 1;
            } else {
                self.negative += 1;
            }
            return;
        }
        if x == 0.0 {
            self.zero += 1;
        } else if x > 0.0 {
            self.positive += 1;
        } else {
            self.negative += 1;
        }
        let a = x.abs();
        let band = BAND_BOUNDS.iter().position(|&b| a < b).unwrap_or(BAND_BOUNDS.len());
        self.bands[band] += 1;
        self.min = Some(self.min.map_or(x, |m| m.min(x)));
        self.max = Some(self.max.map_or(x, |m| m.max(x)));
        if a > 0.0 {
            self.min_abs_nonzero = Some(self.min_abs_nonzero.map_or(a, |m| m.min(a)));
        }
        self.sum += x;
        self.sum_sq += x * x;
        self.update_moments();
    }

    fn finite(&self) -> u64 {
        self.count - self.nan - self.inf
    }

    fn update_moments(&mut self) {
        let n = self.finite();
        if n == 0 {
            self.mean = None;
            self.std = None;
            return;
        }
        let mean = self.sum / n as f64;
        self.mean = Some(mean);
        self.std = Some((self.sum_sq / n as f64 - mean * mean).max(0.0).sqrt());
    }

    pub fn merge(&mut self, o: &ValueStats) {
        self.count += o.count;
        self.zero += o.zero;
        self.positive += o.positive;
        self.negative += o.negative;
        self.nan += o.nan;
        self.inf += o.inf;
        let pick = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
            (Some(a), Some(b)) => Some(f(a, b)),
            (a, b) => a.or(b),
        };
        self.min = pick(self.min, o.min, f64::min);
        self.max = pick(self.max, o.max, f64::max);
        self.min_abs_nonzero = pick(self.min_abs_nonzero, o.min_abs_nonzero, f64::min);
        if self.bands.len() < o.bands.len() {
            self.bands.resize(o.bands.len(), 0);
        }
        for (a, b) in self.bands.iter_mut().zip(&o.bands) {
            *a += b;
        }
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
        self.update_moments();
    }

    fn share(&self, n: u64) -> f64 {
        if self.count == 0 { 0.0 } else { n as f64 / self.count as f64 }
    }
    pub fn zero_share(&self) -> f64 {
        self.share(self.zero)
    }
    pub fn positive_share(&self) -> f64 {
        self.share(self.positive)
    }
    pub fn negative_share(&self) -> f64 {
        self.share(self.negative)
    }
    /// Shares of the magnitude bands.
    pub fn band_shares(&self) -> Vec<f64> {
        self.bands.iter().map(|&b| self.share(b)).collect()
    }
}

/// Value statistics of a float tensor's raw bytes; `None` for non-float dtypes.
pub fn value_stats(dtype: DType, data: &[u8]) -> Option<ValueStats> {
    to_f64(dtype, 0)?;
    let mut s = ValueStats::new();
    for b in float_bits(dtype, data) {
        // to_f64 is Some for every float dtype (checked above).
        s.push(to_f64(dtype, b).unwrap_or(f64::NAN));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn decodes_every_format() {
        assert!(same(to_f64(DType::BF16, 0x3f80).unwrap(), 1.0));
        assert!(same(to_f64(DType::BF16, 0xbfc0).unwrap(), -1.5));
        assert!(same(to_f64(DType::F16, 0x3c00).unwrap(), 1.0));
        assert!(same(to_f64(DType::F16, 0x0001).unwrap(), 2f64.powi(-24)));
        assert!(same(to_f64(DType::F32, 0.1f32.to_bits() as u64).unwrap(), 0.1f32 as f64));
        assert!(same(to_f64(DType::F64, (-2.5f64).to_bits()).unwrap(), -2.5));
        // E4M3 (fn): 0x7e = 448, 0x7f NaN, 0x01 = 2^-9, 0x38 = 1.0, 0xb8 = -1.0
        assert!(same(to_f64(DType::F8E4M3, 0x7e).unwrap(), 448.0));
        assert!(to_f64(DType::F8E4M3, 0x7f).unwrap().is_nan());
        assert!(to_f64(DType::F8E4M3, 0xff).unwrap().is_nan());
        assert!(same(to_f64(DType::F8E4M3, 0x01).unwrap(), 2f64.powi(-9)));
        assert!(same(to_f64(DType::F8E4M3, 0x38).unwrap(), 1.0));
        assert!(same(to_f64(DType::F8E4M3, 0xb8).unwrap(), -1.0));
        // E5M2: 0x3c = 1.0, 0x7b = 57344, 0x7c inf, 0xfc -inf, 0x7d NaN, 0x01 = 2^-16
        assert!(same(to_f64(DType::F8E5M2, 0x3c).unwrap(), 1.0));
        assert!(same(to_f64(DType::F8E5M2, 0x7b).unwrap(), 57344.0));
        assert_eq!(to_f64(DType::F8E5M2, 0x7c).unwrap(), f64::INFINITY);
        assert_eq!(to_f64(DType::F8E5M2, 0xfc).unwrap(), f64::NEG_INFINITY);
        assert!(to_f64(DType::F8E5M2, 0x7d).unwrap().is_nan());
        assert!(same(to_f64(DType::F8E5M2, 0x01).unwrap(), 2f64.powi(-16)));
        // F4 E2M1: the eight magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6
        let f4: Vec<f64> = (0..8).map(|b| to_f64(DType::F4, b).unwrap()).collect();
        assert_eq!(f4, [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]);
        assert!(same(to_f64(DType::F4, 0xf).unwrap(), -6.0));
        assert!(same(to_f64(DType::F8E8M0, 127).unwrap(), 1.0));
        assert!(same(to_f64(DType::F6E2M3, 0x1f).unwrap(), 7.5));
        assert!(same(to_f64(DType::F6E3M2, 0x1f).unwrap(), 28.0));
        assert!(to_f64(DType::I32, 0).is_none());
    }

    #[test]
    fn stats_hand_computed() {
        // BF16: 0, -0, 1, -2, 0.5e-3 (~), 20, NaN
        let vals = [0.0f32, -0.0, 1.0, -2.0, 0.0005, 20.0, f32::NAN];
        let data: Vec<u8> = vals.iter().flat_map(|v| half::bf16::from_f32(*v).to_bits().to_le_bytes()).collect();
        let s = value_stats(DType::BF16, &data).unwrap();
        assert_eq!(s.count, 7);
        assert_eq!(s.zero, 2);
        assert_eq!(s.positive, 3);
        assert_eq!(s.negative, 1);
        assert_eq!(s.nan, 1);
        assert_eq!(s.bands, vec![3, 0, 0, 0, 2, 1]);
        assert_eq!(s.min, Some(-2.0));
        assert_eq!(s.max, Some(20.0));
        assert!((s.zero_share() - 2.0 / 7.0).abs() < 1e-12);
        let mut a = value_stats(DType::BF16, &data[..6]).unwrap();
        let b = value_stats(DType::BF16, &data[6..]).unwrap();
        a.merge(&b);
        assert_eq!((a.count, a.zero, a.positive, a.negative, a.nan), (7, 2, 3, 1, 1));
        assert_eq!((a.bands.clone(), a.min, a.max), (s.bands.clone(), s.min, s.max));
        assert!((a.mean.unwrap() - s.mean.unwrap()).abs() < 1e-12);
        assert!(value_stats(DType::U8, &[1]).is_none());
    }
}
