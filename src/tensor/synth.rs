//! Seeded synthetic tensors for tests and benches: trained-weight-like values
//! (Gaussian, heavy tails) in every dtype, with the special values (NaN, ±0,
//! ±inf, subnormals) a codec must carry bit for bit.

use super::{DType, OwnedTensor};

/// SplitMix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    /// A generator whose state is `state` as it is (no seed mixing): the
    /// tests that tuned thresholds on a given stream keep that stream.
    pub const fn from_state(state: u64) -> Rng {
        Rng(state)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// Weight-like values: N(0, std²) with a few heavy-tailed outliers.
pub fn weights(n: usize, std: f64, seed: u64) -> Vec<f64> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| {
            let x = r.normal() * std;
            if r.below(200) == 0 { x * 20.0 } else { x }
        })
        .collect()
}

/// Encode f64 values in a float dtype (round to nearest even where the crate
/// provides it; truncation is fine for the sub-byte and fp8 test patterns).
pub fn encode_floats(dtype: DType, vals: &[f64]) -> Vec<u8> {
    match dtype {
        DType::F32 => vals.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect(),
        DType::F64 => vals.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        DType::F16 => vals.iter().flat_map(|&v| half::f16::from_f64(v).to_le_bytes()).collect(),
        DType::BF16 => vals.iter().flat_map(|&v| half::bf16::from_f64(v).to_le_bytes()).collect(),
        _ => panic!("encode_floats: {dtype} is not a 16/32/64-bit float"),
    }
}

/// Bit patterns every float codec must preserve: NaN (quiet, signalling, with
/// payload, negative), ±0, ±inf, the smallest and largest subnormals, max.
pub fn special_values(dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F32 => [
            0x7fc0_0000u32,
            0x7f80_0001,
            0xffc0_1234,
            0x0000_0000,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x0000_0001,
            0x007f_ffff,
            0x8000_0001,
            0x7f7f_ffff,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect(),
        DType::F64 => [
            0x7ff8_0000_0000_0000u64,
            0x7ff0_0000_0000_0001,
            0x0,
            0x8000_0000_0000_0000,
            0x7ff0_0000_0000_0000,
            0xfff0_0000_0000_0000,
            0x1,
            0x800f_ffff_ffff_ffff,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect(),
        DType::F16 => [0x7e00u16, 0x7c01, 0xfe00, 0x0000, 0x8000, 0x7c00, 0xfc00, 0x0001, 0x03ff, 0x8001, 0x7bff]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::BF16 => [0x7fc0u16, 0x7f81, 0xffc0, 0x0000, 0x8000, 0x7f80, 0xff80, 0x0001, 0x007f, 0x8001, 0x7f7f]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        DType::F8E4M3 => vec![0x7f, 0xff, 0x00, 0x80, 0x01, 0x07, 0x7e, 0xfe],
        DType::F8E5M2 => vec![0x7c, 0xfc, 0x7d, 0xff, 0x00, 0x80, 0x01, 0x03, 0x7b],
        _ => Vec::new(),
    }
}

/// `n` elements of `dtype`, seeded: weight-like for floats (with special values
/// mixed in), small-range integers for ints, random bits for packed types.
pub fn tensor_bytes(dtype: DType, n: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::new(seed);
    let len = dtype.byte_len(n as u64).expect("whole bytes") as usize;
    let mut out = match dtype {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => encode_floats(dtype, &weights(n, 0.02, seed)),
        DType::F8E4M3 | DType::F8E5M2 | DType::F8E8M0 | DType::F4 | DType::F6E2M3 | DType::F6E3M2 => {
            // small-magnitude codes are the common ones in quantized weights
            (0..len).map(|_| (r.normal() * 24.0) as i64 as u8).collect()
        }
        DType::Bool => (0..len).map(|_| (r.below(4) == 0) as u8).collect(),
        _ => {
            let w = dtype.size().expect("byte-sized");
            (0..n)
                .flat_map(|_| {
                    let v = (r.normal() * 300.0) as i64;
                    v.to_le_bytes()[..w].to_vec()
                })
                .collect()
        }
    };
    // sprinkle the special values at seeded positions
    let special = special_values(dtype);
    if let Some(w) = dtype.size()
        && !special.is_empty()
        && out.len() >= special.len() * 4
    {
        for s in special.chunks_exact(w) {
            let at = r.below((out.len() / w) as u64) as usize * w;
            out[at..at + w].copy_from_slice(s);
        }
    }
    out.truncate(len);
    out
}

/// A tensor of the given dtype and shape with seeded contents.
pub fn tensor(name: &str, dtype: DType, shape: &[u64], seed: u64) -> OwnedTensor {
    let n = super::numel(shape).expect("small shape") as usize;
    OwnedTensor::new(name, dtype, shape.to_vec(), tensor_bytes(dtype, n, seed))
}

/// A small model-like set of tensors covering every dtype, an empty tensor, a
/// zero-dimensional one, an odd-length one and a tied (duplicate) pair.
pub fn model(seed: u64) -> Vec<OwnedTensor> {
    let mut ts = Vec::new();
    for (i, &d) in DType::ALL.iter().enumerate() {
        let shape: Vec<u64> = match d {
            DType::F4 => vec![16, 34],
            DType::F6E2M3 | DType::F6E3M2 => vec![12, 32],
            _ => vec![24, 33],
        };
        ts.push(tensor(&format!("layer.{i}.{}", d.name().to_lowercase()), d, &shape, seed + i as u64));
    }
    ts.push(tensor("embed.weight", DType::BF16, &[300, 64], seed + 100));
    let tied = ts.last().expect("pushed").data.clone();
    ts.push(OwnedTensor::new("lm_head.weight", DType::BF16, vec![300, 64], tied));
    ts.push(OwnedTensor::new("empty", DType::F32, vec![0, 5], vec![]));
    ts.push(tensor("scalar", DType::F32, &[], seed + 101));
    ts.push(tensor("odd", DType::F16, &[7], seed + 102));
    ts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_sized() {
        for d in DType::ALL {
            let a = tensor_bytes(d, 64, 7);
            assert_eq!(a.len() as u64, d.byte_len(64).unwrap(), "{d}");
            assert_eq!(a, tensor_bytes(d, 64, 7));
        }
        assert_ne!(tensor_bytes(DType::F32, 64, 1), tensor_bytes(DType::F32, 64, 2));
    }
}
