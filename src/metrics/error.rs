//! Error statistics of a lossy round trip, computed on the float values.
//!
//! Definitions (every quantity in f64, over the elements of one buffer):
//! - `max_abs`: max |x - x'| over elements where x is finite.
//! - relative error: pointwise |x - x'| / |x|, over finite **nonzero** x only
//!   (`max_rel`, `mean_rel`). Zeros are left out of the relative statistics;
//!   the pointwise-relative *bound* still requires x' = 0 where x = 0.
//! - `value_range`: max - min of the finite x (SZ3's "range").
//! - `rmse`: sqrt(mean (x - x')²) over finite x; `nrmse` = rmse / range;
//!   `rmse_rel_std` = rmse / the standard deviation of the finite x, and
//!   `max_abs_rel_absmax` = max_abs / max |x|: errors on the scale of the
//!   tensor's own values, comparable across tensors and models (a pointwise
//!   relative error is not: it grows without limit near zero);
//!   `psnr` = 20 log10(range) - 10 log10(mse), as SZ3
//!   `utils/Statistic.hpp::verify` computes it (infinite when mse = 0).
//! - Non-finite values must come back exactly: NaN as a NaN (any payload),
//!   ±inf as the same infinity, and a finite x must not decode to a
//!   non-finite x'. Each mismatch is counted in `n_nonfinite_mismatch` and
//!   breaks any declared bound.
//!
//! [`ErrorBound::ValueRangeRel`] is checked against the range of the buffer
//! given here: a codec that bounds each chunk by the chunk's own range keeps a
//! bound that is at least as strict as the tensor-range one (a chunk's range
//! is at most the tensor's), so checking chunk by chunk and checking the whole
//! tensor both hold.
//!
//! Integer and other non-float dtypes are compared as numbers where they
//! have a plain numeric meaning (ints, bool); sub-byte and 8-bit float
//! formats are accepted only when the bytes are identical.

use crate::codec::ErrorBound;
use crate::error::{Error, Result};
use crate::tensor::DType;

/// Error statistics of one lossy round trip.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ErrorStats {
    /// Number of elements compared.
    pub n: u64,
    pub max_abs: f64,
    pub max_rel: f64,
    pub mean_rel: f64,
    pub rmse: f64,
    pub psnr: f64,
    pub nrmse: f64,
    /// rmse / standard deviation of the finite originals (0 when both are 0).
    pub rmse_rel_std: f64,
    /// max_abs / max |x| of the finite originals (0 when both are 0).
    pub max_abs_rel_absmax: f64,
    pub value_range: f64,
    pub n_nonfinite_mismatch: u64,
    /// Elements that break the declared bound (non-finite mismatches included).
    pub n_violations: u64,
    /// `Some(held)` when a bound was given.
    pub bound_held: Option<bool>,
}

/// Streaming accumulator: add buffers (chunks of one tensor, or many tensors)
/// one after another, then [`ErrorAccumulator::finish`]. Memory is O(1).
#[derive(Debug, Clone)]
pub struct ErrorAccumulator {
    bound: Option<ErrorBound>,
    n: u64,
    n_finite: u64,
    n_nonzero: u64,
    max_abs: f64,
    max_rel: f64,
    sum_rel: f64,
    sum_sq: f64,
    /// Sums of the finite originals and their squares (the standard deviation).
    sum_x: f64,
    sum_x2: f64,
    min: f64,
    max: f64,
    nonfinite_mismatch: u64,
    /// Violations of an `Abs` or `PointwiseRel` bound, counted as we go.
    violations: u64,
}

impl ErrorAccumulator {
    pub fn new(bound: Option<ErrorBound>) -> Self {
        ErrorAccumulator {
            bound,
            n: 0,
            n_finite: 0,
            n_nonzero: 0,
            max_abs: 0.0,
            max_rel: 0.0,
            sum_rel: 0.0,
            sum_sq: 0.0,
            sum_x: 0.0,
            sum_x2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            nonfinite_mismatch: 0,
            violations: 0,
        }
    }

    #[inline(always)]
    fn push(&mut self, x: f64, y: f64) {
        self.n += 1;
        if !x.is_finite() {
            let ok = if x.is_nan() { y.is_nan() } else { y == x };
            if !ok {
                self.nonfinite_mismatch += 1;
            }
            return;
        }
        if !y.is_finite() {
            self.nonfinite_mismatch += 1;
            return;
        }
        self.n_finite += 1;
        self.sum_x += x;
        self.sum_x2 += x * x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        let err = (x - y).abs();
        self.max_abs = self.max_abs.max(err);
        self.sum_sq += err * err;
        if x != 0.0 {
            let rel = err / x.abs();
            self.max_rel = self.max_rel.max(rel);
            self.sum_rel += rel;
            self.n_nonzero += 1;
        }
        match self.bound {
            Some(ErrorBound::Abs(e)) if err > e => self.violations += 1,
            Some(ErrorBound::PointwiseRel(e)) if err > e * x.abs() => self.violations += 1,
            _ => {}
        }
    }

    /// Add one buffer pair of `dtype` elements.
    pub fn add(&mut self, dtype: DType, original: &[u8], decoded: &[u8]) -> Result<()> {
        if original.len() != decoded.len() {
            return Err(Error::invalid(format!(
                "error stats: original has {} bytes, decoded {}",
                original.len(),
                decoded.len()
            )));
        }
        macro_rules! each {
            ($w:expr, $conv:expr) => {{
                #[allow(clippy::modulo_one)]
                let partial = original.len() % $w != 0;
                if partial {
                    return Err(Error::invalid(format!(
                        "error stats: {} bytes is not a whole number of {dtype} elements",
                        original.len()
                    )));
                }
                let conv = $conv;
                for (a, b) in original.chunks_exact($w).zip(decoded.chunks_exact($w)) {
                    self.push(conv(a), conv(b));
                }
            }};
        }
        match dtype {
            DType::F32 => each!(4, |b: &[u8]| f32::from_le_bytes(b.try_into().unwrap()) as f64),
            DType::F64 => each!(8, |b: &[u8]| f64::from_le_bytes(b.try_into().unwrap())),
            DType::F16 => each!(2, |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f64()),
            DType::BF16 => each!(2, |b: &[u8]| half::bf16::from_le_bytes([b[0], b[1]]).to_f64()),
            DType::U8 | DType::Bool => each!(1, |b: &[u8]| b[0] as f64),
            DType::I8 => each!(1, |b: &[u8]| b[0] as i8 as f64),
            DType::I16 => each!(2, |b: &[u8]| i16::from_le_bytes([b[0], b[1]]) as f64),
            DType::U16 => each!(2, |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) as f64),
            DType::I32 => each!(4, |b: &[u8]| i32::from_le_bytes(b.try_into().unwrap()) as f64),
            DType::U32 => each!(4, |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap()) as f64),
            DType::I64 => each!(8, |b: &[u8]| i64::from_le_bytes(b.try_into().unwrap()) as f64),
            DType::U64 => each!(8, |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap()) as f64),
            // `round` rounds FP8 too: the container checks its bound here
            DType::F8E4M3 => each!(1, |b: &[u8]| fp8(b[0], 4, 3, false)),
            DType::F8E5M2 => each!(1, |b: &[u8]| fp8(b[0], 5, 2, true)),
            _ => {
                if original != decoded {
                    return Err(Error::unsupported(format!(
                        "error stats of a lossy round trip are not implemented for {dtype}"
                    )));
                }
                // identical bytes: count the elements, all exact
                let bits = dtype.bits() as u64;
                self.n += original.len() as u64 * 8 / bits.max(1);
            }
        }
        Ok(())
    }

    pub fn finish(&self) -> ErrorStats {
        let range = if self.n_finite > 0 { self.max - self.min } else { 0.0 };
        let mse = if self.n_finite > 0 { self.sum_sq / self.n_finite as f64 } else { 0.0 };
        let rmse = mse.sqrt();
        let psnr = if mse == 0.0 { f64::INFINITY } else { 20.0 * range.log10() - 10.0 * mse.log10() };
        let nrmse = if range > 0.0 {
            rmse / range
        } else if rmse == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        let nf = self.n_finite.max(1) as f64;
        let std = (self.sum_x2 / nf - (self.sum_x / nf).powi(2)).max(0.0).sqrt();
        let absmax = self.max.abs().max(self.min.abs());
        let scaled = |err: f64, scale: f64| {
            if err == 0.0 {
                0.0
            } else if scale > 0.0 && scale.is_finite() {
                err / scale
            } else {
                f64::INFINITY
            }
        };
        let mut violations = self.violations;
        if let Some(ErrorBound::ValueRangeRel(e)) = self.bound
            && self.max_abs > e * range
        {
            // a uniform bound: it holds iff the largest error is within it;
            // count the one we know of (the exact count needs a second pass)
            violations = violations.max(1);
        }
        violations += self.nonfinite_mismatch;
        ErrorStats {
            n: self.n,
            max_abs: self.max_abs,
            max_rel: self.max_rel,
            mean_rel: if self.n_nonzero > 0 { self.sum_rel / self.n_nonzero as f64 } else { 0.0 },
            rmse,
            psnr,
            nrmse,
            rmse_rel_std: scaled(rmse, std),
            max_abs_rel_absmax: scaled(self.max_abs, absmax),
            value_range: range,
            n_nonfinite_mismatch: self.nonfinite_mismatch,
            n_violations: violations,
            bound_held: self.bound.map(|_| violations == 0),
        }
    }
}

/// Error statistics of `decoded` against `original`, both little-endian
/// `dtype` elements, checking `bound` on every element when given.
pub fn error_stats(dtype: DType, original: &[u8], decoded: &[u8], bound: Option<ErrorBound>) -> Result<ErrorStats> {
    let mut acc = ErrorAccumulator::new(bound);
    acc.add(dtype, original, decoded)?;
    Ok(acc.finish())
}

/// An FP8 value with `e` exponent and `m` mantissa bits (bias 2^(e-1) - 1):
/// with `ieee` the top exponent is inf/NaN (E5M2), else only S.1111.111 is
/// NaN and there is no infinity (E4M3FN).
fn fp8(b: u8, e: u32, m: u32, ieee: bool) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (ex, mant) = (((b as u32) >> m) & ((1 << e) - 1), (b as u32) & ((1 << m) - 1));
    let top = (1 << e) - 1;
    if ex == top && (if ieee { mant != 0 } else { mant == (1 << m) - 1 }) {
        return f64::NAN;
    }
    if ex == top && ieee {
        return sign * f64::INFINITY;
    }
    let bias = (1i32 << (e - 1)) - 1;
    let frac = mant as f64 / (1u32 << m) as f64;
    if ex == 0 { sign * frac * 2f64.powi(1 - bias) } else { sign * (1.0 + frac) * 2f64.powi(ex as i32 - bias) }
}

/// max - min of the finite values (0 when there are none). The same
/// computation the `sz:rel` codec uses, so its bound and this check agree.
pub fn value_range(values: impl IntoIterator<Item = f64>) -> f64 {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if hi >= lo { hi - lo } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn errors_on_the_scale_of_the_values() {
        // std 1, absmax 1; one error of 0.1: rmse 0.05
        let x = f32s(&[1.0, -1.0, 1.0, -1.0]);
        let y = f32s(&[1.1, -1.0, 1.0, -1.0]);
        let s = error_stats(DType::F32, &x, &y, None).unwrap();
        assert!((s.rmse_rel_std - 0.05).abs() < 1e-6, "{s:?}");
        assert!((s.max_abs_rel_absmax - 0.1).abs() < 1e-6, "{s:?}");
        // the same errors on values a thousand times smaller are a thousand times worse
        let x = f32s(&[1e-3, -1e-3, 1e-3, -1e-3]);
        let y = f32s(&[1.1e-3, -1e-3, 1e-3, -1e-3]);
        let t = error_stats(DType::F32, &x, &y, None).unwrap();
        assert!((t.rmse_rel_std - 0.05).abs() < 1e-4 && (t.max_abs_rel_absmax - 0.1).abs() < 1e-4, "{t:?}");
        // exact: zero; a constant tensor with an error: infinite
        let e = error_stats(DType::F32, &x, &x, None).unwrap();
        assert_eq!((e.rmse_rel_std, e.max_abs_rel_absmax), (0.0, 0.0));
        let c = error_stats(DType::F32, &f32s(&[2.0; 4]), &f32s(&[2.0, 2.0, 2.0, 2.5]), None).unwrap();
        assert_eq!(c.rmse_rel_std, f64::INFINITY);
        assert!((c.max_abs_rel_absmax - 0.25).abs() < 1e-12);
    }

    #[test]
    fn hand_computed_stats() {
        let x = f32s(&[1.0, -2.0, 0.0, 4.0]);
        let y = f32s(&[1.5, -2.0, 0.25, 3.0]);
        let s = error_stats(DType::F32, &x, &y, Some(ErrorBound::Abs(1.0))).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.max_abs, 1.0);
        assert_eq!(s.value_range, 6.0);
        // rel over nonzero x: 0.5, 0, 0.25 -> max 0.5, mean 0.25
        assert_eq!(s.max_rel, 0.5);
        assert_eq!(s.mean_rel, 0.25);
        let mse = (0.25 + 0.0 + 0.0625 + 1.0) / 4.0;
        assert!((s.rmse - f64::sqrt(mse)).abs() < 1e-15);
        assert!((s.psnr - (20.0 * 6f64.log10() - 10.0 * mse.log10())).abs() < 1e-12);
        assert!((s.nrmse - mse.sqrt() / 6.0).abs() < 1e-15);
        assert_eq!(s.bound_held, Some(true));
        let s = error_stats(DType::F32, &x, &y, Some(ErrorBound::Abs(0.9))).unwrap();
        assert_eq!((s.bound_held, s.n_violations), (Some(false), 1));
        // pointwise relative: x = 0 decoded as 0.25 breaks any relative bound
        let s = error_stats(DType::F32, &x, &y, Some(ErrorBound::PointwiseRel(0.6))).unwrap();
        assert_eq!((s.bound_held, s.n_violations), (Some(false), 1));
        // range relative: 1.0 <= e * 6
        let s = error_stats(DType::F32, &x, &y, Some(ErrorBound::ValueRangeRel(1.0 / 6.0))).unwrap();
        assert_eq!(s.bound_held, Some(true));
        let s = error_stats(DType::F32, &x, &y, Some(ErrorBound::ValueRangeRel(0.16))).unwrap();
        assert_eq!(s.bound_held, Some(false));
    }

    #[test]
    fn nonfinite_must_match_exactly() {
        let x = f32s(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0]);
        let ok = f32s(&[f32::from_bits(0x7fc0_0001), f32::INFINITY, f32::NEG_INFINITY, 1.0]);
        let s = error_stats(DType::F32, &x, &ok, Some(ErrorBound::Abs(0.0))).unwrap();
        assert_eq!((s.n_nonfinite_mismatch, s.bound_held), (0, Some(true)));
        assert_eq!(s.value_range, 0.0);
        for bad in [
            [0.0, f32::INFINITY, f32::NEG_INFINITY, 1.0],
            [f32::NAN, f32::NEG_INFINITY, f32::NEG_INFINITY, 1.0],
            [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN],
            [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::INFINITY],
        ] {
            let s = error_stats(DType::F32, &x, &f32s(&bad), Some(ErrorBound::Abs(1e30))).unwrap();
            assert_eq!((s.n_nonfinite_mismatch, s.bound_held), (1, Some(false)), "{bad:?}");
        }
    }

    #[test]
    fn half_types_and_ints() {
        let x: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        let y: Vec<u8> = [1.0f32, 2.5].iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        let s = error_stats(DType::BF16, &x, &y, None).unwrap();
        assert_eq!((s.max_abs, s.max_rel, s.bound_held), (0.5, 0.25, None));
        let x: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        let s = error_stats(DType::F16, &x, &y, None);
        assert!(s.is_ok()); // same length, different values: fine, just numbers
        let s = error_stats(DType::I64, &7i64.to_le_bytes(), &5i64.to_le_bytes(), None).unwrap();
        assert_eq!(s.max_abs, 2.0);
        assert!(error_stats(DType::F32, &[0; 4], &[0; 8], None).is_err());
        assert!(error_stats(DType::F32, &[0; 6], &[0; 6], None).is_err());
        assert!(error_stats(DType::F8E8M0, &[1, 2], &[1, 3], None).is_err());
        // FP8: E4M3 0x38 = 1.0, 0x39 = 1.125, 0x7e = 448 (its max), 0x7f NaN;
        // E5M2 0x3c = 1.0, 0x3d = 1.25, 0x7c = inf, 0x01 = 2^-16
        let s = error_stats(DType::F8E4M3, &[0x38, 0x7e, 0x7f, 0xb8], &[0x39, 0x7e, 0x7f, 0xb8], None).unwrap();
        assert_eq!((s.max_abs, s.n_nonfinite_mismatch, s.value_range), (0.125, 0, 449.0));
        let s = error_stats(DType::F8E5M2, &[0x3c, 0x7c, 0x01], &[0x3d, 0x7c, 0x01], None).unwrap();
        assert_eq!((s.max_abs, s.n_nonfinite_mismatch), (0.25, 0));
        assert_eq!(error_stats(DType::F8E5M2, &[0x01], &[0x00], None).unwrap().max_abs, 2f64.powi(-16));
        assert_eq!(error_stats(DType::F4, &[1, 2], &[1, 2], None).unwrap().n, 4);
    }

    #[test]
    fn accumulator_equals_one_shot() {
        let x: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        let y: Vec<f32> = x.iter().map(|v| v + 1e-3 * (v * 7.0).cos()).collect();
        let (bx, by) = (f32s(&x), f32s(&y));
        let bound = Some(ErrorBound::ValueRangeRel(1e-3));
        let whole = error_stats(DType::F32, &bx, &by, bound).unwrap();
        let mut acc = ErrorAccumulator::new(bound);
        for (a, b) in bx.chunks(400).zip(by.chunks(400)) {
            acc.add(DType::F32, a, b).unwrap();
        }
        let parts = acc.finish();
        assert_eq!(whole.max_abs, parts.max_abs);
        assert_eq!(whole.value_range, parts.value_range);
        assert!((whole.rmse - parts.rmse).abs() < 1e-15);
        assert_eq!(whole.bound_held, parts.bound_held);
    }
}
