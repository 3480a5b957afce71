//! Seeded synthetic tensors for the float codec tests.

use crate::tensor::DType;
use crate::tensor::synth::Rng;

/// Encode an f64 in a float dtype (round to nearest even via `half` for 16
/// bits; FP8/FP4 by truncating the top bits of an f16/f32, which is enough
/// for test data since only the bit patterns matter).
pub fn encode(dtype: DType, x: f64, out: &mut Vec<u8>) {
    match dtype {
        DType::BF16 => out.extend_from_slice(&half::bf16::from_f64(x).to_bits().to_le_bytes()),
        DType::F16 => out.extend_from_slice(&half::f16::from_f64(x).to_bits().to_le_bytes()),
        DType::F32 => out.extend_from_slice(&(x as f32).to_bits().to_le_bytes()),
        DType::F64 => out.extend_from_slice(&x.to_bits().to_le_bytes()),
        DType::F8E5M2 => out.push((half::f16::from_f64(x).to_bits() >> 8) as u8),
        DType::F8E4M3 | DType::F8E8M0 | DType::F4 | DType::F6E2M3 | DType::F6E3M2 => {
            // The top byte of an f32 with the exponent rebiased into 4 bits: a plausible shape.
            let b = (x as f32).to_bits();
            let e = (((b >> 23) & 0xff) as i32 - 127 + 7).clamp(0, 15) as u32;
            out.push((((b >> 31) << 7) | (e << 3) | ((b >> 20) & 7)) as u8)
        }
        d => panic!("no float encoding for {d}"),
    }
}

pub fn gaussian(dtype: DType, n: usize, sigma: f64, seed: u64) -> Vec<u8> {
    let mut r = Rng::from_state(seed);
    let mut out = Vec::new();
    for _ in 0..n {
        encode(dtype, r.normal() * sigma, &mut out);
    }
    out
}

pub struct Case {
    pub name: String,
    pub dtype: DType,
    pub data: Vec<u8>,
}

pub const FLOATS: [DType; 9] = [
    DType::BF16,
    DType::F16,
    DType::F32,
    DType::F64,
    DType::F8E4M3,
    DType::F8E5M2,
    DType::F8E8M0,
    DType::F4,
    DType::F6E2M3,
];

/// Every float dtype × {gaussian, heavy tails, zeros, specials, tiny, odd
/// length, single exponent}.
pub fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for dtype in FLOATS {
        let unit = dtype.split_unit();
        let mut push = |name: &str, mut data: Vec<u8>| {
            data.truncate(data.len() / unit * unit);
            v.push(Case { name: name.to_string(), dtype, data });
        };
        push("gaussian", gaussian(dtype, 20_000, 0.02, 1));
        let mut r = Rng::from_state(2);
        let mut heavy = Vec::new();
        for _ in 0..5000 {
            // Student-t-ish: a gaussian over a small gaussian.
            let x = r.normal() / (r.normal().abs() + 0.05);
            encode(dtype, x, &mut heavy);
        }
        push("heavy tails", heavy);
        push("zeros", vec![0u8; 4096]);
        let mut special = Vec::new();
        for (i, x) in
            [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, 0.0, 1e-40, -1e-45, 5e-324, 1e-8, 65504.0, 1e300]
                .iter()
                .cycle()
                .take(999)
                .enumerate()
        {
            encode(dtype, *x * if i % 2 == 0 { 1.0 } else { -1.0 }, &mut special);
        }
        // Signalling NaN payloads in the raw bits too.
        special.extend(std::iter::repeat_n(0xff, 24));
        push("nan inf subnormal -0", special);
        push("empty", Vec::new());
        push("tiny", gaussian(dtype, 3, 1.0, 3));
        push("odd length", gaussian(dtype, 1001, 0.1, 4));
        let mut one_exp = Vec::new();
        for i in 0..3000 {
            encode(dtype, 1.0 + (i % 97) as f64 / 97.0, &mut one_exp);
        }
        push("single exponent", one_exp);
        let mut r = Rng::from_state(9);
        let bytes: Vec<u8> = (0..10_001).map(|_| r.next_u64() as u8).collect();
        push("random bits", bytes);
    }
    v
}
