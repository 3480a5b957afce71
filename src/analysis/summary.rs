//! What `weightlab analyze` computes: per tensor and per dtype over the whole
//! file, the byte frequencies (top bytes with share and cumulative share),
//! the entropy of each byte plane and of the float fields, the order-0 floor
//! and value statistics.

use super::entropy::{FieldCounts, FieldEntropy, entropy, plane_histograms};
use super::stats::{ValueStats, value_stats};
use crate::error::{Error, Result};
use crate::tensor::{DType, FloatLayout, SafeTensors, TensorView};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How many top bytes are kept per histogram.
pub const TOP_BYTES: usize = 10;

/// One byte value's share of a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ByteShare {
    pub value: u8,
    pub count: u64,
    pub share: f64,
    /// Share of this byte and every more frequent one.
    pub cumulative: f64,
}

/// The `k` most frequent bytes, most frequent first (ties: smaller value first).
pub fn top_bytes(hist: &[u64], k: usize) -> Vec<ByteShare> {
    let total: u64 = hist.iter().sum();
    let mut idx: Vec<usize> = (0..hist.len()).filter(|&i| hist[i] > 0).collect();
    idx.sort_by(|&a, &b| hist[b].cmp(&hist[a]).then(a.cmp(&b)));
    let mut cum = 0u64;
    idx.into_iter()
        .take(k)
        .map(|i| {
            cum += hist[i];
            ByteShare {
                value: i as u8,
                count: hist[i],
                share: hist[i] as f64 / total as f64,
                cumulative: cum as f64 / total as f64,
            }
        })
        .collect()
}

/// One byte plane (plane 0 = the least significant byte as stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlaneAnalysis {
    pub plane: usize,
    /// Which float fields the plane's bits belong to ("sign + 7 exponent bits").
    pub holds: String,
    pub entropy: f64,
    pub top: Vec<ByteShare>,
    pub histogram: Vec<u64>,
}

/// The analysis of one tensor, or of every tensor of one dtype together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorAnalysis {
    /// Tensor name, or "*" for the whole-file total of one dtype.
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// Tensors counted (1 for a tensor).
    pub tensors: u64,
    pub numel: u64,
    pub bytes: u64,
    /// Order-0 entropy of all bytes together, bits per byte.
    pub byte_entropy: f64,
    pub top_bytes: Vec<ByteShare>,
    pub planes: Vec<PlaneAnalysis>,
    /// Float field entropies (None for integer dtypes).
    pub fields: Option<FieldEntropy>,
    /// Order-0 floor: bits per element and as a fraction of the size (float
    /// floor for floats, sum of byte-plane entropies otherwise).
    pub floor_bits_per_element: f64,
    pub floor_ratio: f64,
    /// Histogram of the raw exponent field (empty for integer dtypes).
    pub exponent_histogram: Vec<u64>,
    /// The exponent bias (value = 2^(raw - bias) × 1.m).
    pub exponent_bias: i32,
    pub stats: Option<ValueStats>,
}

/// The analysis of a safetensors file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileAnalysis {
    pub file: String,
    /// Size of the tensor data in bytes (the header excluded).
    pub data_bytes: u64,
    pub tensors: Vec<TensorAnalysis>,
    /// One total per dtype, largest first: every tensor of that dtype as one stream.
    pub totals: Vec<TensorAnalysis>,
    /// Sum of the per-tensor floors in bytes (one model per tensor) and as a
    /// fraction of the data size.
    pub floor_bytes_per_tensor: f64,
    pub floor_ratio_per_tensor: f64,
}

impl FileAnalysis {
    /// The total of the dtype with the most bytes (the one the paper tables describe).
    pub fn main_total(&self) -> Option<&TensorAnalysis> {
        self.totals.first()
    }
}

/// Which float fields the bits of plane `k` of a `layout` element belong to.
pub fn plane_holds(layout: FloatLayout, k: usize) -> String {
    let (lo, hi) = (8 * k as u32, 8 * k as u32 + 8);
    let m = layout.mant_bits;
    let e = layout.exp_bits;
    let count = |a: u32, b: u32| b.min(hi).saturating_sub(a.max(lo));
    let (nm, ne, ns) = (count(0, m), count(m, m + e), count(m + e, m + e + layout.sign_bits));
    let mut parts = Vec::new();
    if ns > 0 {
        parts.push("sign".to_string());
    }
    let bits = |n: u32, what: &str| format!("{n} {what} bit{}", if n == 1 { "" } else { "s" });
    if ne > 0 {
        parts.push(bits(ne, "exponent"));
    }
    if nm > 0 {
        parts.push(bits(nm, "mantissa"));
    }
    parts.join(" + ")
}

fn planes_of(dtype: DType, hists: &[[u64; 256]]) -> Vec<PlaneAnalysis> {
    hists
        .iter()
        .enumerate()
        .map(|(k, h)| PlaneAnalysis {
            plane: k,
            holds: match (dtype.float_layout(), dtype.size()) {
                (Some(l), Some(_)) => plane_holds(l, k),
                (Some(_), None) => "packed sub-byte elements".into(),
                _ => format!("byte {k} (integer)"),
            },
            entropy: nz(entropy(h)),
            top: top_bytes(h, TOP_BYTES),
            histogram: h.to_vec(),
        })
        .collect()
}

/// Entropies of constant histograms come out as -0.0; show them as 0.
fn nz(x: f64) -> f64 {
    x + 0.0
}

fn plane_width(dtype: DType) -> usize {
    dtype.size().unwrap_or(1)
}

fn exponent_bias(dtype: DType) -> i32 {
    dtype.float_layout().map_or(0, |l| if l.exp_bits == 0 { 0 } else { (1i32 << (l.exp_bits - 1)) - 1 })
}

/// Assemble an analysis from its parts.
fn build(
    name: &str,
    dtype: DType,
    shape: Vec<u64>,
    tensors: u64,
    hists: Vec<[u64; 256]>,
    counts: Option<&FieldCounts>,
    stats: Option<ValueStats>,
) -> TensorAnalysis {
    let mut all = [0u64; 256];
    for h in &hists {
        for (a, b) in all.iter_mut().zip(h) {
            *a += b;
        }
    }
    let bytes: u64 = all.iter().sum();
    let fields = counts.map(|c| {
        let mut f = c.finish();
        for x in [
            &mut f.sign,
            &mut f.exponent,
            &mut f.mantissa,
            &mut f.sign_exponent,
            &mut f.mantissa_given_exponent,
            &mut f.sign_mantissa_given_exponent,
            &mut f.floor_bits,
        ] {
            *x = nz(*x);
        }
        f
    });
    let numel = match &fields {
        Some(f) => f.elements,
        None => bytes / plane_width(dtype) as u64,
    };
    let (floor_bits, floor_ratio) = match &fields {
        Some(f) => (f.floor_bits, f.floor_ratio()),
        None => {
            let b: f64 = nz(hists.iter().map(|h| entropy(h)).sum());
            (b, b / (8.0 * plane_width(dtype) as f64))
        }
    };
    TensorAnalysis {
        name: name.to_string(),
        dtype: dtype.name().to_string(),
        shape,
        tensors,
        numel,
        bytes,
        byte_entropy: nz(entropy(&all)),
        top_bytes: top_bytes(&all, TOP_BYTES),
        planes: planes_of(dtype, &hists),
        fields,
        floor_bits_per_element: floor_bits,
        floor_ratio,
        exponent_histogram: counts.map(|c| c.exponent_histogram().to_vec()).unwrap_or_default(),
        exponent_bias: exponent_bias(dtype),
        stats,
    }
}

/// Analyze one tensor.
pub fn analyze_tensor(t: &TensorView) -> TensorAnalysis {
    let hists = plane_histograms(t.data, plane_width(t.dtype));
    let counts = FieldCounts::new(t.dtype).map(|mut c| {
        c.add(t.data);
        c
    });
    let stats = value_stats(t.dtype, t.data);
    build(t.name, t.dtype, t.shape.to_vec(), 1, hists, counts.as_ref(), stats)
}

/// Analyze a safetensors file already in memory: every tensor (or only those
/// named in `only`), and one total per dtype.
pub fn analyze_safetensors(file: &str, bytes: &[u8], only: &[String]) -> Result<FileAnalysis> {
    let st = SafeTensors::parse(bytes)?;
    let views: Vec<TensorView> = st.views().filter(|v| only.is_empty() || only.iter().any(|n| n == v.name)).collect();
    if views.is_empty() && !only.is_empty() {
        return Err(Error::invalid(format!("{file}: no tensor named {}", only.join(", "))));
    }
    Ok(analyze_views(file, &views))
}

/// Analyze a set of tensors as one file.
pub fn analyze_views(file: &str, views: &[TensorView]) -> FileAnalysis {
    let tensors: Vec<TensorAnalysis> = views.par_iter().map(analyze_tensor).collect();
    let mut dtypes: Vec<DType> = views.iter().map(|v| v.dtype).collect();
    dtypes.sort();
    dtypes.dedup();
    let mut totals: Vec<TensorAnalysis> = dtypes
        .par_iter()
        .map(|&d| {
            let mut hists = vec![[0u64; 256]; plane_width(d)];
            let mut counts = FieldCounts::new(d);
            let mut stats: Option<ValueStats> = None;
            let mut n = 0;
            for (v, a) in views.iter().zip(&tensors).filter(|(v, _)| v.dtype == d) {
                n += 1;
                for (h, p) in hists.iter_mut().zip(&a.planes) {
                    for (x, y) in h.iter_mut().zip(&p.histogram) {
                        *x += y;
                    }
                }
                if let Some(c) = counts.as_mut() {
                    c.add(v.data);
                }
                if let Some(s) = &a.stats {
                    stats.get_or_insert_with(ValueStats::new).merge(s);
                }
            }
            build("*", d, Vec::new(), n, hists, counts.as_ref(), stats)
        })
        .collect();
    totals.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.dtype.cmp(&b.dtype)));
    let data_bytes: u64 = tensors.iter().map(|t| t.bytes).sum();
    let floor_bytes_per_tensor: f64 = tensors.iter().map(|t| t.floor_ratio * t.bytes as f64).sum();
    FileAnalysis {
        file: file.to_string(),
        data_bytes,
        tensors,
        totals,
        floor_bytes_per_tensor,
        floor_ratio_per_tensor: if data_bytes == 0 { 0.0 } else { floor_bytes_per_tensor / data_bytes as f64 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf16_bytes(vals: &[u16]) -> Vec<u8> {
        vals.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn top_bytes_hand_computed() {
        let mut h = [0u64; 256];
        h[0x3c] = 5;
        h[0xbc] = 3;
        h[0x01] = 1;
        h[0x02] = 1;
        let t = top_bytes(&h, 3);
        assert_eq!(t.len(), 3);
        assert_eq!((t[0].value, t[0].count), (0x3c, 5));
        assert_eq!((t[1].value, t[1].count), (0xbc, 3));
        // tie between 0x01 and 0x02: the smaller value first
        assert_eq!(t[2].value, 0x01);
        assert_eq!(t[0].share, 0.5);
        assert_eq!(t[1].cumulative, 0.8);
        assert!((t[2].cumulative - 0.9).abs() < 1e-15);
    }

    #[test]
    fn plane_roles() {
        let bf16 = DType::BF16.float_layout().unwrap();
        assert_eq!(plane_holds(bf16, 1), "sign + 7 exponent bits");
        assert_eq!(plane_holds(bf16, 0), "1 exponent bit + 7 mantissa bits");
        let f32l = DType::F32.float_layout().unwrap();
        assert_eq!(plane_holds(f32l, 0), "8 mantissa bits");
        assert_eq!(plane_holds(f32l, 2), "1 exponent bit + 7 mantissa bits");
        let e4m3 = DType::F8E4M3.float_layout().unwrap();
        assert_eq!(plane_holds(e4m3, 0), "sign + 4 exponent bits + 3 mantissa bits");
    }

    #[test]
    fn tiny_bf16_tensor_hand_computed() {
        // 8 BF16 values: 0x3c10 ×3, 0xbc10 ×2, 0x3c20, 0x3f80 (1.0), 0x0000
        // high bytes (plane 1): 3c ×4, bc ×2, 3f, 00; low bytes (plane 0): 10 ×5, 20, 80, 00
        let vals = [0x3c10, 0x3c10, 0x3c10, 0xbc10, 0xbc10, 0x3c20, 0x3f80, 0x0000];
        let data = bf16_bytes(&vals);
        let shape = [8u64];
        let v = TensorView { name: "w", dtype: DType::BF16, shape: &shape, data: &data };
        let a = analyze_tensor(&v);
        assert_eq!((a.numel, a.bytes, a.tensors), (8, 16, 1));
        // all 16 bytes: 0x10 ×5, 0x3c ×4, 0xbc ×2, then 0x00 ×2, 0x20, 0x3f, 0x80
        let top: Vec<(u8, u64)> = a.top_bytes.iter().map(|b| (b.value, b.count)).collect();
        assert_eq!(top, [(0x10, 5), (0x3c, 4), (0x00, 2), (0xbc, 2), (0x20, 1), (0x3f, 1), (0x80, 1)]);
        assert_eq!(a.top_bytes[0].share, 5.0 / 16.0);
        assert_eq!(a.top_bytes[1].cumulative, 9.0 / 16.0);
        assert_eq!(a.top_bytes[6].cumulative, 1.0);
        let hi = &a.planes[1];
        assert_eq!(hi.holds, "sign + 7 exponent bits");
        let top_hi: Vec<(u8, u64)> = hi.top.iter().map(|b| (b.value, b.count)).collect();
        assert_eq!(top_hi, [(0x3c, 4), (0xbc, 2), (0x00, 1), (0x3f, 1)]);
        assert_eq!(hi.top[0].share, 0.5);
        assert_eq!(hi.top[1].cumulative, 0.75);
        // H(plane 1) = H(4,2,1,1)/8 = 1.75 bits, H(plane 0) = H(5,1,1,1)
        assert!((hi.entropy - 1.75).abs() < 1e-12);
        assert!((a.planes[0].entropy - entropy(&[5, 1, 1, 1])).abs() < 1e-12);
        let s = a.stats.as_ref().unwrap();
        assert_eq!((s.zero, s.positive, s.negative), (1, 5, 2));
        assert_eq!(s.max, Some(1.0));
        // exponents: 0x78 ×6 (3c10, bc10, 3c20), 0x7f, 0
        assert_eq!(a.exponent_histogram[0x78], 5 + 1);
        assert_eq!(a.exponent_histogram[0x7f], 1);
        assert_eq!(a.fields.unwrap().distinct_exponents, 3);
        assert_eq!(a.exponent_bias, 127);
    }

    #[test]
    fn totals_equal_the_concatenation() {
        let d1 = bf16_bytes(&[0x3c10, 0xbc10, 0x3f80]);
        let d2 = bf16_bytes(&[0x3c20, 0x0000, 0x3c10, 0x4000]);
        let d3 = [1u8, 2, 3, 4];
        let (s1, s2, s3) = ([3u64], [4u64], [1u64]);
        let views = [
            TensorView { name: "a", dtype: DType::BF16, shape: &s1, data: &d1 },
            TensorView { name: "b", dtype: DType::BF16, shape: &s2, data: &d2 },
            TensorView { name: "c", dtype: DType::I32, shape: &s3, data: &d3 },
        ];
        let f = analyze_views("x", &views);
        assert_eq!(f.tensors.len(), 3);
        assert_eq!(f.totals.len(), 2);
        let t = f.main_total().unwrap();
        assert_eq!((t.dtype.as_str(), t.tensors, t.numel), ("BF16", 2, 7));
        let cat: Vec<u8> = d1.iter().chain(&d2).copied().collect();
        let shape = [7u64];
        let whole = analyze_tensor(&TensorView { name: "*", dtype: DType::BF16, shape: &shape, data: &cat });
        assert_eq!(t.top_bytes, whole.top_bytes);
        assert_eq!(t.fields, whole.fields);
        assert_eq!(t.planes, whole.planes);
        assert_eq!(f.data_bytes, 18);
        assert!(f.totals[1].fields.is_none());
    }
}
